"""Record teleoperation episodes on a robot.

    ros2 launch conla_ros record.launch.py                       # ros2 bag record, one bag per launch
    ros2 launch conla_ros record.launch.py backend:=recorder_node output_dir:=~/episodes

backend:=rosbag2 (default) runs `ros2 bag record` on the episode topics of DESIGN.md (the
constants of conla_ros.episodes.topics), one bag per launch named `<prefix>_<UTC time>` under
`output_dir`; rosbag2 picks each subscription's QoS from the publishers (sensor-data camera,
transient-local instruction). Such bags carry no episode metadata; the reader derives length and
counts from metadata.yaml. Stop with Ctrl-C.

backend:=recorder_node runs conla_ros's recorder_node (config/recorder.yaml): no rosbag2 needed,
episodes started and stopped by service (`/recorder_node/start`, `/recorder_node/stop`), written
atomically with their metadata (instruction, success, length).
"""

import datetime

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from conla_ros.episodes import topics as T
from launch import LaunchContext, LaunchDescription

EPISODE_TOPICS = [spec.name for spec in T.EPISODE_TOPICS]


def ros2_bag_record_command(output: str, storage: str, topics: list[str]) -> list[str]:
    """The `ros2 bag record` command line that records `topics` into the bag directory `output`."""
    return ["ros2", "bag", "record", "--storage", storage, "--output", output, *topics]


def _recorder(context: LaunchContext) -> list:
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    backend, output_dir = value("backend"), value("output_dir")
    if backend == "rosbag2":
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        output = f"{output_dir.rstrip('/')}/{value('name_prefix')}_{stamp}"
        return [ExecuteProcess(cmd=ros2_bag_record_command(output, value("storage"), EPISODE_TOPICS),
                               output="screen")]
    if backend == "recorder_node":
        return [Node(package="conla_ros", executable="recorder_node", name="recorder_node",
                     namespace=value("namespace"), output="screen",
                     parameters=[value("params_file"), {"output_dir": output_dir, "storage": value("storage"),
                                                        "name_prefix": value("name_prefix")}])]
    raise ValueError(f"backend:={backend!r} must be rosbag2 or recorder_node")


def generate_launch_description() -> LaunchDescription:
    """Launch arguments: backend, output_dir, storage, name_prefix, params_file, namespace."""
    default_params = PathJoinSubstitution([FindPackageShare("conla_ros"), "config", "recorder.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("backend", default_value="rosbag2",
                              description="rosbag2 (ros2 bag record) | recorder_node (no rosbag2 needed)"),
        DeclareLaunchArgument("output_dir", default_value="episodes", description="where episodes are written"),
        DeclareLaunchArgument("storage", default_value="sqlite3", description="sqlite3 | mcap"),
        DeclareLaunchArgument("name_prefix", default_value="teleop", description="episode name prefix"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="recorder_node parameters in /**: ros__parameters: form"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of recorder_node"),
        OpaqueFunction(function=_recorder),
    ])
