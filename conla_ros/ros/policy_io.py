"""The policy node's message edges: cheap checks of incoming camera frames, and the command messages out.

Incoming: `check_image` / `check_compressed` look only at a message's header fields and data length
(O(1): no pixel is touched), so the camera callback can refuse a malformed frame at once and count
it by reason; the pixels are converted (`conla_ros.ros.image_conversions`) only when an inference
takes the frame.

Outgoing: `plan_output` decides, at start-up, how an action vector maps onto the chosen output mode
(or refuses the combination with a reason); `CommandOutput` publishes commands and the stop message
of that mode:

- ee_twist (action kind ee_delta, 3 or 6 non-gripper dims): TwistStamped, linear [+ angular];
  stop: one zero twist.
- joint_commands + joint_position: Float64MultiArray in joint_names order; stop: one command
  holding the current position (measured, else the last command).
- joint_commands + joint_velocity: Float64MultiArray; stop: one all-zero command (a forward
  controller keeps applying the last velocity).
- joint_trajectory (joint_position or joint_velocity): JointTrajectory, this tick's command then
  the rest of the chunk, one point per control period (each point clipped and rate-limited after
  the one before); stop: for positions one point holding the current position (which replaces the
  queued points; an empty JointTrajectory, on which joint_trajectory_controller holds, when no
  position is known), one all-zero velocity point for velocities (some
  controller versions keep applying the last velocity after an empty trajectory: ros2_controllers
  issue 683).

plus, when the action has a gripper dimension, Float64MultiArray [value] on the gripper topic every
commanded tick (never on stop: a gripper that opened when the policy paused would drop what it holds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from conla_ros.core.safety import InputRejected
from conla_ros.ros.image_conversions import SUPPORTED_COMPRESSIONS, SUPPORTED_ENCODINGS

__all__ = ["OUTPUT_MODES", "CommandOutput", "OutputLayout", "check_compressed", "check_image", "plan_output"]

OUTPUT_MODES = ("joint_commands", "joint_trajectory", "ee_twist")
_CHANNEL_BYTES = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2}


def _int_field(msg: Any, name: str) -> int:
    value = getattr(msg, name, None)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputRejected("image_field", f"Image.{name}={value!r} is not an integer")
    return int(value)


def check_image(msg: Any, max_pixels: int) -> None:
    """Refuse a sensor_msgs/Image whose header fields or data length cannot make a frame (InputRejected)."""
    encoding = getattr(msg, "encoding", None)
    if encoding not in SUPPORTED_ENCODINGS:
        raise InputRejected("image_encoding", f"Image.encoding={encoding!r} is not supported "
                            f"(supported: {', '.join(sorted(SUPPORTED_ENCODINGS))})")
    height, width, step = (_int_field(msg, name) for name in ("height", "width", "step"))
    if height <= 0 or width <= 0:
        raise InputRejected("image_empty", f"Image is {width}x{height}: no pixels")
    if height * width > max_pixels:
        raise InputRejected("image_too_large", f"Image is {width}x{height} = {width * height} pixels, more than "
                            f"max_image_pixels={max_pixels}")
    row = width * _CHANNEL_BYTES[encoding]
    if step < row:
        raise InputRejected("image_step", f"Image.step={step} is smaller than one row ({width} x "
                            f"{_CHANNEL_BYTES[encoding]} bytes = {row})")
    size = len(getattr(msg, "data", b""))
    if size < step * height:
        raise InputRejected("image_truncated", f"Image.data has {size} bytes, expected step x height = "
                            f"{step * height}")


def check_compressed(msg: Any, max_bytes: int) -> None:
    """Refuse a sensor_msgs/CompressedImage with an unsupported format, no data or too much data."""
    fmt = getattr(msg, "format", None)
    words = fmt.split(";")[-1].split() if isinstance(fmt, str) else []
    if not words or words[0].lower() not in SUPPORTED_COMPRESSIONS:
        raise InputRejected("image_format", f"CompressedImage.format={fmt!r} is not supported (jpeg, png)")
    size = len(getattr(msg, "data", b""))
    if size == 0:
        raise InputRejected("image_empty", "CompressedImage.data is empty")
    if size > max_bytes:
        raise InputRejected("image_too_large", f"CompressedImage.data has {size} bytes, more than {max_bytes}")


@dataclass(frozen=True)
class OutputLayout:
    """How the A action values map onto an output mode's messages (decided once, at start-up)."""

    mode: str
    kind: str  # the model's action kind
    arm: tuple[int, ...]  # action indices of the arm command (joint_names order, or twist components)
    gripper: int | None  # action index of the gripper command, or None
    joint_names: tuple[str, ...]  # the joint modes' names ((), in ee_twist mode)
    velocity_like: bool  # stopping needs an explicit zero command

    @property
    def stop_sends(self) -> str:
        if self.mode == "joint_trajectory":
            return "one zero-velocity point" if self.velocity_like else "one point holding the current position"
        if self.mode == "ee_twist":
            return "one zero twist"
        return "one zero command" if self.velocity_like else "one command holding the current position"


def plan_output(mode: str, kind: str, names: Sequence[str], gripper: str | None,
                joint_names: Sequence[str] = ()) -> OutputLayout:
    """The layout for `mode` and a model's action space; ValueError saying why the two do not fit."""
    if mode not in OUTPUT_MODES:
        raise ValueError(f"output={mode!r} must be one of: {', '.join(OUTPUT_MODES)}")
    names = list(names)
    gripper_index = names.index(gripper) if gripper is not None else None
    arm = tuple(i for i in range(len(names)) if i != gripper_index)
    if mode == "ee_twist":
        if kind != "ee_delta":
            raise ValueError(f"output=ee_twist needs a model whose action_space.kind is ee_delta; this model's is "
                             f"{kind!r} (use output joint_commands or joint_trajectory)")
        if len(arm) not in (3, 6):
            raise ValueError(f"output=ee_twist needs 3 (linear) or 6 (linear + angular) non-gripper action "
                             f"dimensions; the model has {len(arm)}: {[names[i] for i in arm]}")
        if joint_names:
            raise ValueError("joint_names applies to the joint output modes only; leave it empty with ee_twist")
        return OutputLayout(mode, kind, arm, gripper_index, (), velocity_like=True)
    if kind not in ("joint_position", "joint_velocity"):
        raise ValueError(f"output={mode} needs a joint-space model (action_space.kind joint_position or "
                         f"joint_velocity); this model's is {kind!r} (use output ee_twist)")
    chosen = tuple(joint_names) if len(joint_names) else tuple(names[i] for i in arm)
    if len(chosen) != len(arm):
        raise ValueError(f"joint_names has {len(chosen)} names {list(chosen)}, but the action has {len(arm)} joint "
                         f"dimensions {[names[i] for i in arm]}")
    if len(set(chosen)) != len(chosen) or not all(isinstance(n, str) and n.strip() for n in chosen):
        raise ValueError(f"joint_names must be distinct non-empty names, got {list(chosen)}")
    return OutputLayout(mode, kind, arm, gripper_index, chosen, velocity_like=kind == "joint_velocity")


class CommandOutput:
    """The publishers of one output mode (+ gripper); `publish(command, plan)` and `publish_stop()`."""

    def __init__(self, node: Any, layout: OutputLayout, *, topic: str, gripper_topic: str, qos: Any,
                 frame_id: str, period_s: float, callback_group: Any = None) -> None:
        from geometry_msgs.msg import TwistStamped
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        self.layout = layout
        self._node = node
        self._frame_id = frame_id
        self._period_ns = round(period_s * 1e9)
        msg_type = {"ee_twist": TwistStamped, "joint_commands": Float64MultiArray,
                    "joint_trajectory": JointTrajectory}[layout.mode]
        self.publisher = node.create_publisher(msg_type, topic, qos, callback_group=callback_group)
        self.gripper_publisher = (node.create_publisher(Float64MultiArray, gripper_topic, qos,
                                                        callback_group=callback_group)
                                  if layout.gripper is not None else None)
        self.published = 0
        self.stops = 0

    def subscribers(self) -> int:
        """Subscriptions matched to the arm command publisher."""
        return self.publisher.get_subscription_count()

    def publish(self, command: np.ndarray, plan: np.ndarray | None = None) -> None:
        """Publish this tick's safe command (A,); in joint_trajectory mode `plan` (K, A) are the points."""
        layout = self.layout
        arm = [float(v) for v in command[list(layout.arm)]]
        if layout.mode == "ee_twist":
            self.publisher.publish(self._twist(arm))
        elif layout.mode == "joint_commands":
            from std_msgs.msg import Float64MultiArray

            self.publisher.publish(Float64MultiArray(data=arm))
        else:
            points = plan if plan is not None else command[None]
            self.publisher.publish(self._trajectory(points))
        if self.gripper_publisher is not None and layout.gripper is not None:
            from std_msgs.msg import Float64MultiArray

            self.gripper_publisher.publish(Float64MultiArray(data=[float(command[layout.gripper])]))
        self.published += 1

    def publish_stop(self, hold: np.ndarray | None = None) -> bool:
        """Publish the mode's stop message once (module table); False when none could be sent.

        `hold` (A,) is where a position command should stay (the measured position, else the last
        command); position modes send it as one command / one trajectory point, so the arm holds
        the current position whatever the controller does with a missing command.
        """
        from std_msgs.msg import Float64MultiArray

        layout = self.layout
        dims = len(layout.arm) + (layout.gripper is not None)
        usable = hold is not None and np.isfinite(np.asarray(hold, dtype=np.float64)[list(layout.arm)]).all()
        if layout.mode == "ee_twist":
            self.publisher.publish(self._twist([0.0] * len(layout.arm)))
        elif layout.mode == "joint_trajectory":
            if layout.velocity_like:  # one explicit zero point: some controllers keep the last velocity on an empty one
                points = np.zeros((1, dims))
            elif usable:
                points = np.asarray(hold, dtype=np.float64)[None]
            else:  # no known position: an empty trajectory makes joint_trajectory_controller hold where it is
                points = np.zeros((0, dims))
            self.publisher.publish(self._trajectory(points))
        elif layout.velocity_like:
            self.publisher.publish(Float64MultiArray(data=[0.0] * len(layout.arm)))
        elif usable:
            self.publisher.publish(Float64MultiArray(data=[float(v) for v in np.asarray(hold)[list(layout.arm)]]))
        else:
            return False  # never commanded and nothing measured: the controller holds its own position
        self.stops += 1
        return True

    def _twist(self, arm: list[float]) -> Any:
        from geometry_msgs.msg import TwistStamped

        msg = TwistStamped()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.header.frame_id = self._frame_id
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = arm[:3]
        if len(arm) == 6:
            msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = arm[3:]
        return msg

    def _trajectory(self, points: np.ndarray) -> Any:
        from builtin_interfaces.msg import Duration
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        msg = JointTrajectory(joint_names=list(self.layout.joint_names))  # stamp 0: start on receipt
        arm = list(self.layout.arm)
        for k, action in enumerate(points):
            values = [float(v) for v in np.asarray(action)[arm]]
            point = JointTrajectoryPoint()
            if self.layout.kind == "joint_velocity":
                point.velocities = values
            else:
                point.positions = values
            ns = (k + 1) * self._period_ns
            point.time_from_start = Duration(sec=ns // 10**9, nanosec=ns % 10**9)
            msg.points.append(point)
        return msg
