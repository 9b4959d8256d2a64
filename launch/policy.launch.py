"""Start the conla_ros policy node on a robot.

    ros2 launch conla_ros policy.launch.py model_dir:=/path/to/models/NAME output:=ee_twist

Topics are parameters of the node (config/policy.yaml) and can also be remapped the usual way
(README, "Topics").
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription


def _policy_node(context: LaunchContext) -> list[Node]:
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {
        "use_sim_time": value("use_sim_time").lower() in ("true", "1"),
        "output": value("output"),
    }
    if value("model_dir"):  # given on the command line: wins over the params file
        overrides["model_dir"] = value("model_dir")
    return [Node(package="conla_ros", executable="policy_node", name="policy_node",
                 namespace=value("namespace"), output="screen",
                 parameters=[value("params_file"), overrides])]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments: model_dir, params_file, namespace, use_sim_time, output."""
    default_params = PathJoinSubstitution([FindPackageShare("conla_ros"), "config", "policy.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("model_dir", default_value="",
                              description="exported model directory (policy.onnx + model.yaml); "
                              "empty keeps the params file's model_dir"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="node parameters in /**: ros__parameters: form"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock"),
        DeclareLaunchArgument("output", default_value="ee_twist",
                              description="joint_commands | joint_trajectory | ee_twist"),
        OpaqueFunction(function=_policy_node),
    ])
