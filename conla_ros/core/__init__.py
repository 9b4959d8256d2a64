"""ROS-free building blocks shared by training and the robot: configs, preprocessing, runtime."""
