"""conla_ros: the robot-side package (ROS 2 nodes, ONNX runtime policy, simulation world).

Nothing under this package imports torch: the policy node runs with numpy, OpenCV, onnxruntime,
PyYAML, tokenizers and rclpy alone. Training lives in `conla_training` (folder `training/`).
"""

__version__ = "0.1.0"
