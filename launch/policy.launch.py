"""Start the conla_ros policy node on a robot.

    ros2 launch conla_ros policy.launch.py model_dir:=/path/to/models/NAME output:=ee_twist
    ros2 launch conla_ros policy.launch.py model_dir:=... params_file:=my_robot.yaml namespace:=arm1

Parameters come from `params_file` (default: the installed config/policy.yaml, which documents
every one); `model_dir`, `output`, `autostart` and `use_sim_time` given here win over it. Topics
are parameters of the node and can also be remapped the usual way (README, "Topics and
remapping"). The node process gets FASTDDS_DEFAULT_PROFILES_FILE pointing at the shipped
large-image profile (config/fastdds_large_images.xml) unless the environment sets one: with Fast
DDS's defaults most 640x480 frames are lost.
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def _dds_environment() -> dict[str, str]:
    """The large-image Fast DDS profile for the node, unless the user chose a profile (or another RMW)."""
    if os.environ.get(PROFILE_ENV) or os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        return {}
    from conla_ros.ros.dds import large_image_profile

    profile = large_image_profile()
    return {PROFILE_ENV: str(profile)} if profile is not None else {}


def _policy_node(context: LaunchContext) -> list[Node]:
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides: dict[str, object] = {
        "use_sim_time": value("use_sim_time").lower() in ("true", "1"),
        "output": value("output"),
    }
    if value("model_dir"):  # given on the command line: wins over the params file
        overrides["model_dir"] = value("model_dir")
    if value("autostart"):
        overrides["autostart"] = value("autostart").lower() in ("true", "1")
    return [Node(package="conla_ros", executable="policy_node", name="policy_node",
                 namespace=value("namespace"), output="screen", emulate_tty=True,
                 parameters=[value("params_file"), overrides], additional_env=_dds_environment())]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments: model_dir, params_file, namespace, use_sim_time, output, autostart."""
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
        DeclareLaunchArgument("autostart", default_value="",
                              description="true: command at once; false: wait for ~/enable; "
                              "empty keeps the params file's autostart (false by default)"),
        OpaqueFunction(function=_policy_node),
    ])
