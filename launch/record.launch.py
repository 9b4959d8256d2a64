"""Record teleoperation episodes on a robot.

    ros2 launch conla_ros record.launch.py                       # ros2 bag record where rosbag2 exists
    ros2 launch conla_ros record.launch.py backend:=recorder_node output_dir:=~/episodes

backend:=auto (default) runs `ros2 bag record` when rosbag2 is installed (the `ros2 bag` command
of the ROS 2 that runs this file), and conla_ros's recorder_node otherwise, saying which.

backend:=rosbag2 runs `ros2 bag record` on the episode topics (camera, joint states, instruction,
twist and gripper commands), one bag per launch named `<prefix>_<UTC time>` under `output_dir`;
rosbag2 picks each subscription's QoS from the publishers. Such bags carry no episode metadata;
the reader derives length and counts from metadata.yaml. Stop with Ctrl-C.

backend:=recorder_node runs recorder_node (config/recorder.yaml): no rosbag2 needed, episodes
started and stopped by service (`~/start`, `~/stop`), written atomically with their metadata
(instruction, success, length).

`namespace` applies to the topics recorded (they are relative: `arm1` records
`/arm1/camera/image_raw`, ...). A recorder that fails at start shuts the launch down, and
`ros2 launch` exits non-zero. Imports only launch and launch_ros.
"""

import datetime
import importlib.util
import os
import shutil

from launch.actions import (
    DeclareLaunchArgument,
        ExecuteProcess,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

# The episode topics, relative (conla_ros.episodes.topics holds the same names; a test checks).
EPISODE_TOPICS = ["camera/image_raw", "joint_states", "instruction", "servo_node/delta_twist_cmds",
                  "gripper_controller/commands"]
BACKENDS = ("auto", "rosbag2", "recorder_node")


def ros2_bag_record_command(output: str, storage: str, topics: list[str]) -> list[str]:
    """The `ros2 bag record` command line that records `topics` into the bag directory `output`."""
    return ["ros2", "bag", "record", "--storage", storage, "--output", output, *topics]


def rosbag2_available() -> bool:
    """Whether `ros2 bag` exists: the ros2 command on PATH and the rosbag2 verb package in this Python."""
    return shutil.which("ros2") is not None and importlib.util.find_spec("ros2bag") is not None


def absolute(topic: str, namespace: str) -> str:
    """`topic` resolved in `namespace` (ros2 bag record takes absolute names)."""
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{namespace}/{topic}"


def exit_reason(event, _context) -> list:
    if event.returncode in (0, None, -2, -15):  # a normal stop, Ctrl-C and SIGTERM included
        return []
    reason = f"the recorder exited with code {event.returncode}"
    # An exception is how a launch ends with a non-zero exit: launch logs it, shuts down, returns 1.
    raise RuntimeError(reason)


def _recorder(context: LaunchContext) -> list:
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    backend, output_dir, namespace = value("backend") or "auto", value("output_dir"), value("namespace")
    if backend not in BACKENDS:
        raise ValueError(f"backend:={backend!r} must be one of: {', '.join(BACKENDS)}")
    notes = []
    if backend == "auto":
        backend = "rosbag2" if rosbag2_available() else "recorder_node"
        if backend == "recorder_node":
            notes.append(LogInfo(msg="rosbag2 (ros2 bag) is not installed: recording with recorder_node; "
                                     "start and stop episodes with its ~/start and ~/stop services"))
    elif backend == "rosbag2" and not rosbag2_available():
        raise RuntimeError("backend:=rosbag2 needs rosbag2 (`ros2 bag`), which is not installed: install "
                           "ros-$ROS_DISTRO-rosbag2, or use backend:=recorder_node (or auto)")
    if backend == "rosbag2":
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        folder = os.path.expanduser(output_dir or "episodes").rstrip("/")
        output = f"{folder}/{value('name_prefix') or 'teleop'}_{stamp}"
        topics = [absolute(topic, namespace) for topic in EPISODE_TOPICS]
        process = ExecuteProcess(cmd=ros2_bag_record_command(output, value("storage") or "sqlite3", topics),
                                 output="screen")
    else:
        params_file = value("params_file") or os.path.join(FindPackageShare("conla_ros").perform(context), "config",
                                                           "recorder.yaml")
        overrides = {name: value(name) for name in ("output_dir", "storage", "name_prefix") if value(name)}
        process = Node(package="conla_ros", executable="recorder_node", name="recorder_node", namespace=namespace,
                       output="screen", parameters=[params_file, overrides] if overrides else [params_file])
    return [*notes, process, RegisterEventHandler(OnProcessExit(target_action=process, on_exit=exit_reason))]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments: backend, output_dir, storage, name_prefix, params_file, namespace."""
    unset = "empty: the params file's value (recorder_node) or the default"
    return LaunchDescription([
        DeclareLaunchArgument("backend", default_value="auto",
                              description="auto (rosbag2 where installed, else recorder_node) | rosbag2 "
                              "(ros2 bag record) | recorder_node (no rosbag2 needed)"),
        DeclareLaunchArgument("output_dir", default_value="", description=f"where episodes are written; {unset} "
                              "(episodes)"),
        DeclareLaunchArgument("storage", default_value="", description=f"sqlite3 | mcap; {unset} (sqlite3)"),
        DeclareLaunchArgument("name_prefix", default_value="", description=f"episode name prefix; {unset} "
                              "(teleop)"),
        DeclareLaunchArgument("params_file", default_value="",
                              description="recorder_node parameters in /**: ros__parameters: form; empty: the "
                              "installed config/recorder.yaml"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the recorder and of the topics it records"),
        OpaqueFunction(function=_recorder),
    ])
