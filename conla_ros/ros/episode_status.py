"""The episode-status topic: what the arm knows about the current episode (task, step, success).

One `std_msgs/String` holding a JSON object, on `/episode_status`, reliable and transient-local
(a node started late gets the latest status at once). JSON in a String rather than a custom
message because this package generates no message types (it builds without rosidl), and rather
than `diagnostic_msgs/KeyValue[]` because JSON keeps types (bools, numbers, lists) and
`ros2 topic echo` still shows it readably.

`sim_arm_node` publishes it at `status_rate_hz` (20 Hz) and at once on a reset, on the first success and
when the step limit is reached. `recorder_node` takes an episode's task, seed and success from it.
On a real robot any node that knows the outcome (an operator's button, a success detector) may
publish it; only `task`, `step` and `success` are required.

Keys (`EpisodeStatus` fields): task, seed, episode (a counter of resets), step (control steps
since the reset), success (reached at any step since the reset, as `conla eval sim` counts it),
first_success_step, max_steps (0: no limit), done (success or the step limit reached, as
`SimWorld.done`), instruction, control_rate_hz, domain, ee_position ([x, y, z] m, world frame),
holding (no fresh command: the arm holds still), stamp_ns, fault (why the arm stopped, if it
did), and `counters` (this episode's commands
applied, rejected, clipped, timed out, late control ticks, ...).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["EPISODE_STATUS_QOS", "EPISODE_STATUS_TOPIC", "EpisodeStatus", "EpisodeStatusError"]

EPISODE_STATUS_TOPIC = "episode_status"  # relative: the node's namespace applies

# Reliable and transient-local: a recorder or evaluator started late still gets the latest status.
EPISODE_STATUS_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


class EpisodeStatusError(ValueError):
    """A status message that is not a JSON object with the required keys; the text says what is wrong."""


@dataclass(frozen=True)
class EpisodeStatus:
    """One episode-status message (see the module docstring for each key)."""

    task: str
    step: int
    success: bool
    seed: int | None = None
    episode: int = 0
    first_success_step: int | None = None
    max_steps: int = 0
    done: bool = False
    instruction: str = ""
    control_rate_hz: float | None = None
    domain: str | None = None
    ee_position: list[float] | None = None
    holding: bool = True
    stamp_ns: int = 0
    fault: str = ""  # why the arm stopped stepping (a simulation error), until the next reset
    counters: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """The message text: a compact JSON object with sorted keys."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> EpisodeStatus:
        """Parse a status message; unknown keys are ignored (newer publishers), missing required ones are not."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise EpisodeStatusError(f"episode status is not JSON ({error}): {text[:80]!r}") from None
        if not isinstance(data, dict):
            raise EpisodeStatusError(f"episode status must be a JSON object, got {type(data).__name__}")
        missing = [key for key in ("task", "step", "success") if key not in data]
        if missing:
            raise EpisodeStatusError(f"episode status lacks {', '.join(missing)}: {text[:80]!r}")
        if not isinstance(data["success"], bool) or not isinstance(data["step"], int):
            raise EpisodeStatusError(f"episode status needs an int step and a bool success: {text[:80]!r}")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def episode_metadata(self) -> dict[str, Any]:
        """The facts an episode recording takes from this status (conla_ros.episodes.topics META_* keys)."""
        from conla_ros.episodes import topics as T

        meta: dict[str, Any] = {T.META_TASK: self.task, T.META_SUCCESS: self.success}
        if self.seed is not None:
            meta[T.META_SEED] = self.seed
        if self.control_rate_hz is not None:
            meta[T.META_CONTROL_RATE_HZ] = self.control_rate_hz
        if self.domain is not None:
            meta[T.META_DOMAIN] = self.domain
        if self.first_success_step is not None:
            meta["first_success_step"] = self.first_success_step
        return meta
