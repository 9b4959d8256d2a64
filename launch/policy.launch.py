"""Start the conla_ros policy node on a robot.

    ros2 launch conla_ros policy.launch.py model_dir:=/path/to/models/NAME
    ros2 launch conla_ros policy.launch.py model_dir:=... params_file:=my_robot.yaml namespace:=arm1

Parameters come from `params_file` (default: the installed config/policy.yaml, which documents
every one). The arguments `model_dir`, `output`, `autostart` and `use_sim_time` override it only
when given: left unset (empty), the params file's values stand. `namespace` puts the node and
all its topics under that namespace (the node's topics are relative: `arm1` gives
`/arm1/camera/image_raw`, `/arm1/servo_node/delta_twist_cmds`, ...; /diagnostics stays global).

The node process gets FASTDDS_DEFAULT_PROFILES_FILE pointing at the shipped large-image profile
(config/fastdds_large_images.xml) unless the environment sets one: with Fast DDS's defaults most
640x480 frames are lost. When the node exits with an error at start (a bad model directory: exit
1, an invalid parameter: exit 2), the launch shuts down with that reason, and `ros2 launch` exits
non-zero.

The file imports only launch and launch_ros, so the `ros2` of a ROS 2 install can run it with its
own Python whichever environment the node itself runs in.
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_NAME = "fastdds_large_images.xml"
# Launch arguments that override the params file when given, with how their text becomes a value.
OVERRIDES = {"model_dir": str, "output": str,
             "autostart": lambda text: text.lower() in ("true", "1", "yes"),
             "use_sim_time": lambda text: text.lower() in ("true", "1", "yes")}


def dds_environment(share: str) -> dict[str, str]:
    """The large-image Fast DDS profile for the node, unless the user chose a profile (or another RMW)."""
    if os.environ.get(PROFILE_ENV) or os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        return {}
    profile = os.path.join(share, "config", PROFILE_NAME)
    return {PROFILE_ENV: profile} if os.path.isfile(profile) else {}


def given_overrides(context: LaunchContext) -> dict[str, object]:
    """The override arguments that were given (non-empty), as parameter values."""
    values = {}
    for name, convert in OVERRIDES.items():
        text = LaunchConfiguration(name).perform(context).strip()
        if text:
            values[name] = convert(text)
    return values


def exit_reason(event, _context) -> list:
    """Shut the launch down when the node fails; `ros2 launch` then exits non-zero."""
    if event.returncode in (0, None):
        return []
    reason = f"policy_node exited with code {event.returncode}"
    if event.returncode == 1:
        reason += " (the model directory could not be loaded: see the message above)"
    elif event.returncode == 2:
        reason += " (an invalid parameter: see the message above)"
    # An exception is how a launch ends with a non-zero exit: launch logs it, shuts down, returns 1.
    raise RuntimeError(reason)


def _policy_node(context: LaunchContext) -> list:
    share = FindPackageShare("conla_ros").perform(context)
    params_file = LaunchConfiguration("params_file").perform(context).strip() or \
        os.path.join(share, "config", "policy.yaml")
    parameters: list = [params_file]
    overrides = given_overrides(context)
    if overrides:
        parameters.append(overrides)
    node = Node(package="conla_ros", executable="policy_node", name="policy_node",
                namespace=LaunchConfiguration("namespace").perform(context), output="screen", emulate_tty=True,
                parameters=parameters, additional_env=dds_environment(share),
                # policy_node sends its stop message on SIGINT/SIGTERM and exits 0 within ~1 s.
                sigterm_timeout="5", sigkill_timeout="5")
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=exit_reason))]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments: model_dir, params_file, namespace, use_sim_time, output, autostart."""
    unset = "empty: the params file's value"
    return LaunchDescription([
        DeclareLaunchArgument("model_dir", default_value="",
                              description=f"exported model directory (policy.onnx + model.yaml); {unset}"),
        DeclareLaunchArgument("params_file", default_value="",
                              description="node parameters in /**: ros__parameters: form; empty: the installed "
                              "config/policy.yaml"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and its (relative) topics"),
        DeclareLaunchArgument("use_sim_time", default_value="", description=f"true: follow /clock; {unset}"),
        DeclareLaunchArgument("output", default_value="",
                              description=f"joint_commands | joint_trajectory | ee_twist; {unset}"),
        DeclareLaunchArgument("autostart", default_value="",
                              description=f"true: command at once; false: wait for ~/enable; {unset}"),
        OpaqueFunction(function=_policy_node),
    ])
