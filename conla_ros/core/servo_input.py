"""End-effector twist and gripper commands in, one arm action out: what MoveIt Servo and a gripper controller do.

`check_twist` and `check_gripper` validate incoming messages (any object shaped like
geometry_msgs/TwistStamped or std_msgs/Float64MultiArray) and raise CommandError naming what is
wrong; `ServoInput` keeps the latest valid commands and turns them into the 4-D action of the
simulated arm (ee dx, dy, dz, gripper; conla_ros.episodes.topics) at each control tick.

Semantics, as on a real arm:
- The twist is a velocity-like command (MoveIt Servo's unitless convention, each component in
  [-1, 1]; larger values are clipped and counted). When no twist has arrived for `timeout_s`
  (MoveIt Servo's `incoming_command_timeout`, 0.1 s by default there too) the linear part is zero:
  the arm holds still.
- The gripper command is a position target (a forward_command_controller on a position-controlled
  gripper: -1 open, +1 closed). It is held until the next one, and never times out: a gripper that
  opened whenever the operator paused would drop what it holds.
- Angular velocities are ignored (the Meta-World hand cannot rotate) and counted.
Nothing here needs rclpy, so it is tested without ROS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CommandError", "ServoInput", "check_gripper", "check_twist"]


class CommandError(ValueError):
    """A command the arm refuses (non-finite values, wrong frame, wrong length); the text says which."""


def _finite(values: tuple[float, ...], what: str) -> tuple[float, ...]:
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise CommandError(f"{what} must be finite, got {values}")
    return values


def check_twist(msg: Any, frames: tuple[str, ...]) -> tuple[np.ndarray, bool]:
    """The linear part (3,) of a TwistStamped command, and whether a non-zero angular part was dropped.

    `frames` are the header frame ids accepted (MoveIt Servo expresses the command in one frame;
    a command in another frame would move the arm in a direction nobody meant). Raises CommandError.
    """
    try:
        frame_id = str(msg.header.frame_id)
        linear = (float(msg.twist.linear.x), float(msg.twist.linear.y), float(msg.twist.linear.z))
        angular = (float(msg.twist.angular.x), float(msg.twist.angular.y), float(msg.twist.angular.z))
    except (AttributeError, TypeError, ValueError) as error:
        raise CommandError(f"not a TwistStamped: {error}") from None
    if frame_id not in frames:
        raise CommandError(f"twist in frame {frame_id!r}; this arm takes commands in {list(frames)}")
    _finite(linear, "twist.linear")
    _finite(angular, "twist.angular")
    return np.asarray(linear, dtype=np.float64), any(v != 0.0 for v in angular)


def check_gripper(msg: Any) -> float:
    """The one gripper value of a Float64MultiArray command. Raises CommandError."""
    try:
        data = tuple(float(v) for v in msg.data)
    except (AttributeError, TypeError, ValueError) as error:
        raise CommandError(f"not a Float64MultiArray: {error}") from None
    if len(data) != 1:
        raise CommandError(f"gripper command must hold exactly 1 value (one gripper joint), got {len(data)}")
    return _finite(data, "gripper command")[0]


@dataclass
class ServoInput:
    """The latest valid commands and the action they make at a given time (see the module docstring)."""

    timeout_s: float = 0.1
    initial_gripper: float = -1.0  # open: how the arm starts after a reset
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("twists", "grippers", "rejected", "clipped", "angular_ignored", "timeouts"), 0))
    _linear: np.ndarray = field(default_factory=lambda: np.zeros(3))
    _twist_time: float | None = None
    _gripper: float = 0.0
    _holding: bool = True

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if not -1.0 <= self.initial_gripper <= 1.0:
            raise ValueError(f"initial_gripper must lie in [-1, 1], got {self.initial_gripper!r}")
        self._gripper = float(self.initial_gripper)

    def reset(self) -> None:
        """Forget every command and zero the counters (a new episode): hold still, gripper at its initial command."""
        self.counters.update(dict.fromkeys(self.counters, 0))
        self._linear = np.zeros(3)
        self._twist_time = None
        self._gripper = float(self.initial_gripper)
        self._holding = True

    def set_twist(self, linear: np.ndarray, now_s: float) -> None:
        """A valid twist's linear part, received at `now_s` (seconds, any monotonic clock)."""
        clipped = np.clip(linear, -1.0, 1.0)
        if not np.array_equal(clipped, linear):
            self.counters["clipped"] += 1
        self._linear = clipped.astype(np.float64)
        self._twist_time = float(now_s)
        self.counters["twists"] += 1

    def set_gripper(self, value: float, now_s: float) -> None:
        """A valid gripper command, received at `now_s`."""
        clipped = min(1.0, max(-1.0, float(value)))
        if clipped != value:
            self.counters["clipped"] += 1
        self._gripper = clipped
        self.counters["grippers"] += 1

    def reject(self) -> None:
        """Count a refused command."""
        self.counters["rejected"] += 1

    def fresh(self, now_s: float) -> bool:
        """Whether a twist arrived within the timeout before `now_s`."""
        return self._twist_time is not None and now_s - self._twist_time <= self.timeout_s

    def action(self, now_s: float) -> np.ndarray:
        """The arm's action (4,) at `now_s`: the latest twist unless it timed out (then zero), and the gripper."""
        fresh = self.fresh(now_s)
        if not fresh and not self._holding and self._twist_time is not None:
            self.counters["timeouts"] += 1  # commands stopped: count each stop once
        self._holding = not fresh
        linear = self._linear if fresh else np.zeros(3)
        return np.array([*linear, self._gripper], dtype=np.float64)

    @property
    def holding(self) -> bool:
        """True when the last `action()` held still (no fresh twist)."""
        return self._holding
