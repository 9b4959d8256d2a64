"""The closed loop in simulation: the simulated arm and the policy node, over real ROS 2 topics.

    ros2 launch conla_ros sim_demo.launch.py model_dir:=models/NAME task:=drawer-open seed:=1000000

Starts sim_arm_node (config/sim_arm.yaml) with the task and seed given, and includes
policy.launch.py unchanged (output ee_twist), so the policy node runs exactly as on a robot:
nothing in it knows the arm is simulated. Reset to another scene with
`ros2 param set /sim_arm_node task ...` and `ros2 service call /sim_arm_node/reset std_srvs/srv/Trigger`;
`/episode_status` reports step and success.

This is the launch_ros way to start the pair by hand. `conla eval ros --model models/NAME` starts
the same two nodes as processes (no launch_ros needed) and measures success over the held-out
seeds of `conla eval sim`, with latency from the policy node's /diagnostics.
"""

from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    """Launch arguments: model_dir, task, seed, max_steps, sim_params_file, policy_params_file."""
    share = FindPackageShare("conla_ros")
    sim_arm = Node(
        package="conla_ros", executable="sim_arm_node", name="sim_arm_node", output="screen",
        parameters=[LaunchConfiguration("sim_params_file"), {
            "task": LaunchConfiguration("task"),
            "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int),
            "max_steps": ParameterValue(LaunchConfiguration("max_steps"), value_type=int),
        }])
    policy = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "policy.launch.py"])),
        # The simulated arm is safe to drive at once; on a real arm the policy starts disabled.
        launch_arguments={"model_dir": LaunchConfiguration("model_dir"), "output": "ee_twist", "autostart": "true",
                          "params_file": LaunchConfiguration("policy_params_file")}.items())
    return LaunchDescription([
        DeclareLaunchArgument("model_dir", default_value="", description="exported model directory"),
        DeclareLaunchArgument("task", default_value="reach", description="MT10 task of the first episode"),
        DeclareLaunchArgument("seed", default_value="1000000",
                              description="world seed of the first episode (>= 1000000: held-out scenes)"),
        DeclareLaunchArgument("max_steps", default_value="200",
                              description="steps per episode, as `conla eval sim` (0: no limit)"),
        DeclareLaunchArgument("sim_params_file", default_value=PathJoinSubstitution([share, "config", "sim_arm.yaml"]),
                              description="sim_arm_node parameters"),
        DeclareLaunchArgument("policy_params_file",
                              default_value=PathJoinSubstitution([share, "config", "policy.yaml"]),
                              description="policy_node parameters"),
        sim_arm,
        policy,
    ])
