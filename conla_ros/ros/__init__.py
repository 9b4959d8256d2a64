"""ROS 2 glue: message <-> numpy conversions, QoS profiles, parameter helpers."""
