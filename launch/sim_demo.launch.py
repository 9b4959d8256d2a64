"""The closed loop in simulation: the simulated arm and the policy node, over real ROS 2 topics.

    ros2 launch conla_ros sim_demo.launch.py model_dir:=models/NAME task:=drawer-open seed:=1000000
    ros2 launch conla_ros sim_demo.launch.py model_dir:=models/NAME namespace:=arm1   # /arm1/... for both nodes

Starts sim_arm_node (config/sim_arm.yaml, or `sim_params_file`) with the task and seed given, its
camera at the model's input size (model.yaml's preprocessing.size; `image_size` overrides), and
includes policy.launch.py unchanged (`params_file`, `output`, `use_sim_time` passed on; unset
arguments keep the params files' values), so the policy node runs exactly as on a robot: nothing
in it knows the arm is simulated. The policy starts enabled (`autostart:=true`: the simulated arm
is safe to drive at once; on a real arm it starts disabled).

No race between the two: the arm starts with `wait_for_first_command: true`, so each episode's
steps start counting at the first twist command, however long the policy takes to load; until
then it publishes camera frames and joint states and holds still. `namespace` applies to both nodes
and all their topics. Reset to another scene with `ros2 param set /sim_arm_node task ...` and
`ros2 service call /sim_arm_node/reset std_srvs/srv/Trigger`; `episode_status` reports step and
success. When either node fails at start the launch shuts down and `ros2 launch` exits non-zero.

`conla eval ros --model models/NAME` starts the same two nodes as processes (no launch_ros needed)
and measures success over the held-out seeds of `conla eval sim`.
"""

import os

import yaml
from launch.actions import (
    DeclareLaunchArgument,
    IncludeLaunchDescription,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

# Arguments passed on to policy.launch.py as given (empty: the policy params file's value).
POLICY_ARGUMENTS = ("model_dir", "params_file", "output", "use_sim_time", "namespace")


def exit_reason(event, _context) -> list:
    if event.returncode in (0, None, -2, -15):  # a normal end, or stopped by the launch's own shutdown
        return []
    reason = f"sim_arm_node exited with code {event.returncode}"
    # An exception is how a launch ends with a non-zero exit: launch logs it, shuts down, returns 1.
    raise RuntimeError(reason)


def model_image_size(model_dir: str) -> int | None:
    """The camera side the model takes (model.yaml preprocessing.size), or None when it cannot be read.

    Read here with PyYAML rather than through the package's model_spec module, so a sourced ROS 2's own `ros2 launch`
    runs this file without the package on its path; policy_node reports a broken model itself."""
    try:
        with open(os.path.join(model_dir, "model.yaml"), encoding="utf-8") as file:
            size = yaml.safe_load(file)["preprocessing"]["size"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _nodes(context: LaunchContext) -> list:
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    share = FindPackageShare("conla_ros").perform(context)
    sim_params = value("sim_params_file") or os.path.join(share, "config", "sim_arm.yaml")
    overrides: dict[str, object] = {"wait_for_first_command": True}
    if value("task"):
        overrides["task"] = value("task")
    for name in ("seed", "max_steps", "image_size"):
        if value(name):
            try:
                overrides[name] = int(value(name))
            except ValueError:
                raise ValueError(f"{name}:={value(name)!r} must be a whole number") from None
    # The camera renders what the model takes (as conla eval sim/ros do), unless image_size is given.
    if "image_size" not in overrides and value("model_dir"):
        size = model_image_size(value("model_dir"))
        if size is not None:
            overrides["image_size"] = size
    sim_arm = Node(package="conla_ros", executable="sim_arm_node", name="sim_arm_node", namespace=value("namespace"),
                   output="screen", parameters=[sim_params, overrides], sigterm_timeout="5")
    policy = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "policy.launch.py")),
        launch_arguments={**{name: value(name) for name in POLICY_ARGUMENTS}, "autostart": "true"}.items())
    return [sim_arm, RegisterEventHandler(OnProcessExit(target_action=sim_arm, on_exit=exit_reason)), policy]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments: model_dir, task, seed, max_steps, namespace, params_file, output, use_sim_time,
    sim_params_file."""
    unset = "empty: the params file's value"
    return LaunchDescription([
        DeclareLaunchArgument("model_dir", default_value="", description=f"exported model directory; {unset}"),
        DeclareLaunchArgument("task", default_value="reach", description="MT10 task of the first episode"),
        DeclareLaunchArgument("seed", default_value="1000000",
                              description="world seed of the first episode (>= 1000000: held-out scenes)"),
        DeclareLaunchArgument("max_steps", default_value="200",
                              description="steps per episode, as `conla eval sim` (0: no limit)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of both nodes and their topics"),
        DeclareLaunchArgument("params_file", default_value="",
                              description="policy_node parameters; empty: the installed config/policy.yaml"),
        DeclareLaunchArgument("output", default_value="",
                              description=f"policy_node output mode (the simulated arm takes ee_twist); {unset}"),
        DeclareLaunchArgument("use_sim_time", default_value="", description=f"policy_node follows /clock; {unset}"),
        DeclareLaunchArgument("image_size", default_value="",
                              description="camera side in pixels; empty: the model's input size (model.yaml), "
                              "else the sim params file's"),
        DeclareLaunchArgument("sim_params_file", default_value="",
                              description="sim_arm_node parameters; empty: the installed config/sim_arm.yaml"),
        OpaqueFunction(function=_nodes),
    ])
