"""The typed action and observation contract of robot episodes, from the bag to model.yaml.

An episode says what its commands are (`ActionContract`: kind, dimension names, units, the gripper
dimension, optional declared limits); a dataset of episodes adds the control rate and the
proprioception names (`EpisodeContract`). The trainer stores `EpisodeContract.to_dict()` in the
checkpoint and the export copies it into model.yaml's `action_space`, `control_rate_hz` and
`proprio`, so no step infers a kind or a name from a dimension count.

Two action kinds are recorded:

- `ee_delta`: an end-effector delta on the twist topic (MoveIt Servo's unitless twist, 1 = 1 cm
  per control step in the simulated arm) plus a gripper command: `EE_DELTA`.
- `joint_position`: one position per joint on the joint command topic (ros2_control's
  forward_command_controller), radians, optionally plus a gripper command:
  `joint_position_contract(names)`.

Declared limits (`low`/`high`) are what the command interface accepts (the servo's [-1, 1]); None
when the recording does not declare any. The dataset then reports the observed range instead.
Plain values only: importing this module needs neither ROS, rosbags nor torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from conla_ros.episodes import topics as T

__all__ = ["ACTION_KINDS", "EE_DELTA", "ActionContract", "ActionKind", "EpisodeContract", "joint_position_contract"]

ActionKind = Literal["ee_delta", "joint_position"]
ACTION_KINDS: tuple[str, ...] = ("ee_delta", "joint_position")
_ACTION_KEYS = ("kind", "names", "units", "gripper", "low", "high")
_EPISODE_KEYS = ("action", "control_rate_hz", "proprio_names")


def _names(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{what} must be a non-empty list of names, got {value!r}")
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{what} must hold non-empty strings, got {list(value)!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{what} must be unique, got duplicates {sorted({v for v in value if value.count(v) > 1})}")
    return tuple(value)


def _limits(value: object, n: int, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise ValueError(f"{what} must be null or {n} numbers (one per dimension), got {value!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"{what} must be finite numbers, got {list(value)!r}")
    return tuple(float(v) for v in value)


def _only_keys(value: object, keys: Sequence[str], what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping, got {value!r}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise ValueError(f"{what} has unknown keys {unknown} (known: {list(keys)})")
    return value


@dataclass(frozen=True)
class ActionContract:
    """What one command vector of an episode is: one entry per dimension, in the order of `names`.

    Attributes:
        kind: 'ee_delta' or 'joint_position' (see the module docstring).
        names: dimension names: the end-effector axes, or the joint names (+ the gripper).
        units: one unit per dimension ('cm/step', 'rad', '1').
        gripper: the name of the gripper dimension (-1 open .. +1 closed), or None.
        low, high: declared per-dimension limits, or None when the recording declares none.
    """

    kind: ActionKind
    names: tuple[str, ...]
    units: tuple[str, ...]
    gripper: str | None = None
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"action kind must be one of {list(ACTION_KINDS)}, got {self.kind!r}")
        names = _names(self.names, "action names")
        object.__setattr__(self, "names", names)
        n = len(names)
        if not isinstance(self.units, (tuple, list)) or len(self.units) != n or not all(
                isinstance(u, str) and u for u in self.units):
            raise ValueError(f"action units must be {n} non-empty strings (one per name in {list(names)}), "
                             f"got {self.units!r}")
        object.__setattr__(self, "units", tuple(self.units))
        if self.gripper is not None and self.gripper not in names:
            raise ValueError(f"gripper must be one of the action names {list(names)} or null, got {self.gripper!r}")
        if self.kind == "ee_delta" and len(self.arm_names) not in (3, 6):
            raise ValueError(f"an ee_delta action has 3 (linear) or 6 (linear + angular) non-gripper dimensions, "
                             f"got {len(self.arm_names)}: {list(self.arm_names)}")
        low, high = _limits(self.low, n, "action low"), _limits(self.high, n, "action high")
        if (low is None) != (high is None):
            raise ValueError(f"action low and high must both be given or both be null, got low={self.low!r}, "
                             f"high={self.high!r}")
        for name, lo, hi in zip(names, low, high, strict=True) if low is not None and high is not None else ():
            if hi < lo:
                raise ValueError(f"action high must be >= low in every dimension, got {name!r}: low {lo} > high {hi}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def dim(self) -> int:
        """Values per command vector."""
        return len(self.names)

    @property
    def gripper_index(self) -> int | None:
        """Index of the gripper dimension, or None."""
        return None if self.gripper is None else self.names.index(self.gripper)

    @property
    def arm_names(self) -> tuple[str, ...]:
        """The names of the non-gripper dimensions (the twist axes or the joints), in order."""
        return tuple(n for n in self.names if n != self.gripper)

    @property
    def command_topic(self) -> T.TopicSpec:
        """The topic the arm part of the command travels on."""
        return T.COMMAND_TOPICS[self.kind]

    @property
    def topics(self) -> tuple[T.TopicSpec, ...]:
        """The topics an episode of this action holds, in the order their connections are added to a bag."""
        if self.kind == "ee_delta":
            return T.EPISODE_TOPICS
        return tuple(t for t in T.JOINT_EPISODE_TOPICS if t is not T.GRIPPER or self.gripper is not None)

    def with_limits(self, low: Sequence[float], high: Sequence[float]) -> ActionContract:
        """The same contract with these limits."""
        return replace(self, low=tuple(float(v) for v in low), high=tuple(float(v) for v in high))

    def describe(self) -> str:
        """One line: kind and names with units, e.g. `joint_position [j0 (rad), j1 (rad)]`."""
        return f"{self.kind} [{', '.join(f'{n} ({u})' for n, u in zip(self.names, self.units, strict=True))}]"

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-ready mapping (the episode metadata's and the checkpoint's form)."""
        return {"kind": self.kind, "names": list(self.names), "units": list(self.units), "gripper": self.gripper,
                "low": None if self.low is None else list(self.low),
                "high": None if self.high is None else list(self.high)}

    @classmethod
    def from_dict(cls, value: object, source: str = "action") -> ActionContract:
        """Parse `to_dict`'s form; ValueError naming `source` and the bad key or value."""
        try:
            value = _only_keys(value, _ACTION_KEYS, source)
            missing = [k for k in ("kind", "names", "units") if k not in value]
            if missing:
                raise ValueError(f"{source} lacks {missing}")
            return cls(kind=value["kind"], names=value["names"], units=value["units"], gripper=value.get("gripper"),
                       low=value.get("low"), high=value.get("high"))
        except ValueError as error:
            message = str(error)
            raise ValueError(message if message.startswith(source) else f"{source}: {message}") from None


# The end-effector episodes of the simulator and the recorder: MoveIt Servo's unitless twist in [-1, 1]
# (1 = 1 cm per control step in the simulated arm) and the gripper command in [-1, 1].
EE_DELTA = ActionContract(kind="ee_delta", names=T.ACTION_NAMES, units=T.ACTION_UNITS, gripper=T.GRIPPER_NAME,
                          low=(-1.0,) * T.ACTION_DIM, high=(1.0,) * T.ACTION_DIM)


def joint_position_contract(joint_names: Sequence[str], *, gripper: bool = False, unit: str = "rad",
                            low: Sequence[float] | None = None,
                            high: Sequence[float] | None = None) -> ActionContract:
    """A joint-position action: one value per joint in `joint_names` order [+ the gripper command last].

    `low`/`high` are the declared limits of every dimension (joint limits, and the gripper's), or None.
    """
    names = tuple(joint_names) + ((T.GRIPPER_NAME,) if gripper else ())
    units = (unit,) * len(tuple(joint_names)) + (("1",) if gripper else ())
    return ActionContract(kind="joint_position", names=names, units=units,
                          gripper=T.GRIPPER_NAME if gripper else None,
                          low=None if low is None else tuple(low), high=None if high is None else tuple(high))


@dataclass(frozen=True)
class EpisodeContract:
    """What a policy trained on a set of episodes takes and gives: the action, the control rate, the proprio names.

    `action.low`/`high` are the declared limits when the episodes declare them, else the observed range.
    `proprio_names` are the /joint_states names fed as proprioception, in input order; () for none.
    """

    action: ActionContract
    control_rate_hz: float
    proprio_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.action, ActionContract):
            raise ValueError(f"action must be an ActionContract, got {self.action!r}")
        rate = self.control_rate_hz
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"control_rate_hz must be a positive number, got {rate!r}")
        object.__setattr__(self, "control_rate_hz", float(rate))
        names = tuple(self.proprio_names) if isinstance(self.proprio_names, (tuple, list)) else self.proprio_names
        object.__setattr__(self, "proprio_names", _names(names, "proprio names") if names else ())

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-ready mapping (what the checkpoint stores under extra.contract)."""
        return {"action": self.action.to_dict(), "control_rate_hz": self.control_rate_hz,
                "proprio_names": list(self.proprio_names)}

    @classmethod
    def from_dict(cls, value: object, source: str = "contract") -> EpisodeContract:
        """Parse `to_dict`'s form; ValueError naming `source` and the bad key or value."""
        value = _only_keys(value, _EPISODE_KEYS, source)
        missing = [k for k in ("action", "control_rate_hz") if k not in value]
        if missing:
            raise ValueError(f"{source} lacks {missing}")
        action = ActionContract.from_dict(value["action"], f"{source}.action")
        try:
            return cls(action=action, control_rate_hz=value["control_rate_hz"],
                       proprio_names=value.get("proprio_names") or ())
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
