"""scripted_teleop_node: Meta-World's scripted expert as a teleoperator, commanding the arm over ROS 2 topics.

    ros2 run conla_ros scripted_teleop_node --ros-args -p action_noise:=0.1

It stands where a person with a SpaceMouse stands: it publishes the same end-effector
TwistStamped and gripper Float64MultiArray commands a teleop device driver would (the episode
topics, reliable QoS), so `recorder_node` records exactly what it would record from a person.
Unlike a person it cannot see the scene, so it reads the simulator's privileged state from
`sim_arm_node`'s debug topic (`/sim_arm_node/debug/privileged_state`, published only with
`publish_privileged_state: true`) and the task from `/episode_status`. For simulation only.

One command per state message (that is, per control tick of the arm): the expert's action plus
N(0, action_noise²) on every dimension, clipped to [-1, 1] — the same noise model as
`conla sim episodes`, so recorded and generated demonstrations are alike. It stops commanding
once the episode has succeeded (`stop_on_success`) or is done, so the arm then holds still; a
reset (a new episode in the status) resumes it. Service `~/enable` (std_srvs/SetBool) switches it
on and off; `autostart` says how it starts.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool

from conla_ros.episodes import topics as T
from conla_ros.ros.episode_status import EPISODE_STATUS_QOS, EPISODE_STATUS_TOPIC, EpisodeStatus, EpisodeStatusError
from conla_ros.ros.names import relative
from conla_ros.ros.parameters import ParamSpec, declare_parameters, run_node
from conla_ros.ros.qos import COMMAND_QOS
from conla_ros.sim.expert import ScriptedExpertPolicy

NODE_NAME = "scripted_teleop_node"
STATE_DIM = 39  # Meta-World's observation vector

__all__ = ["NODE_NAME", "PARAMETERS", "ScriptedTeleopNode", "main"]

PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("state_topic", "sim_arm_node/debug/privileged_state",
              "std_msgs/Float64MultiArray privileged state input (sim_arm_node's debug topic)"),
    ParamSpec("status_topic", EPISODE_STATUS_TOPIC, "std_msgs/String JSON episode status input (task, success)"),
    ParamSpec("ee_twist_topic", relative(T.EE_TWIST.name), "geometry_msgs/TwistStamped command output"),
    ParamSpec("gripper_topic", relative(T.GRIPPER.name), "std_msgs/Float64MultiArray gripper command output"),
    ParamSpec("command_frame_id", T.BASE_FRAME_ID, "frame id of the twist commands"),
    ParamSpec("action_noise", 0.1, "std of the Gaussian noise added to each action dimension (as in "
              "conla sim episodes)", low=0.0, high=1.0),
    ParamSpec("noise_seed", 0, "seed of the noise generator", low=0),
    ParamSpec("autostart", True, "command from the start (false: wait for ~/enable)"),
    ParamSpec("stop_on_success", True, "stop commanding once the episode succeeded (the arm then holds still)"),
)


class ScriptedTeleopNode(Node):
    """The scripted expert publishing twist and gripper commands, one per privileged-state message."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self._params = p
        self._expert = ScriptedExpertPolicy()
        self._rng = np.random.default_rng(p["noise_seed"])
        self._enabled = p["autostart"]
        self._status: EpisodeStatus | None = None
        self.commands_sent = 0
        self._twist_pub = self.create_publisher(TwistStamped, p["ee_twist_topic"], COMMAND_QOS)
        self._gripper_pub = self.create_publisher(Float64MultiArray, p["gripper_topic"], COMMAND_QOS)
        self.create_subscription(String, p["status_topic"], self._on_status, EPISODE_STATUS_QOS)
        self.create_subscription(Float64MultiArray, p["state_topic"], self._on_state, COMMAND_QOS)
        self.create_service(SetBool, "~/enable", self._on_enable)

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self._enabled = bool(request.data)
        response.success, response.message = True, "enabled" if self._enabled else "disabled"
        self.get_logger().info(f"teleop {response.message}")
        return response

    def _on_status(self, msg: String) -> None:
        try:
            self._status = EpisodeStatus.from_json(msg.data)
        except EpisodeStatusError as error:
            self.get_logger().warning(f"ignoring episode status: {error}", throttle_duration_sec=2.0)

    def _should_command(self) -> bool:
        status = self._status
        if not self._enabled or status is None:
            return False
        stop_for_success = self._params["stop_on_success"] and status.success
        time_up = status.max_steps > 0 and status.step >= status.max_steps
        return not (stop_for_success or time_up)

    def _on_state(self, msg: Float64MultiArray) -> None:
        if not self._should_command():
            return
        state = np.asarray(msg.data, dtype=np.float64)
        if state.shape != (STATE_DIM,) or not np.all(np.isfinite(state)):
            self.get_logger().warning(f"ignoring a privileged state of shape {state.shape}", throttle_duration_sec=2.0)
            return
        assert self._status is not None
        action = self._expert.infer({"task": self._status.task, "state": state})["actions"]
        noise = self._params["action_noise"]
        if noise > 0:
            action = action + self._rng.normal(0.0, noise, size=action.shape)
        action = np.clip(action, -1.0, 1.0)
        twist = TwistStamped()
        twist.header.stamp = self.get_clock().now().to_msg()
        twist.header.frame_id = self._params["command_frame_id"]
        twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = (float(v) for v in action[:3])
        # Gripper first: a recording then holds each pair's gripper before its twist (by receive time).
        self._gripper_pub.publish(Float64MultiArray(data=[float(action[3])]))
        self._twist_pub.publish(twist)
        self.commands_sent += 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ros2 run conla_ros scripted_teleop_node`."""
    return run_node(ScriptedTeleopNode, NODE_NAME, argv)

if __name__ == "__main__":
    sys.exit(main())
