"""What stands between a model's action and the arm: limits, rate limits, input checks, run-time figures.

ROS-free (numpy only), so every rule here is tested without DDS; `conla_ros.nodes.policy_node`
applies them on each control tick.

- `CommandLimits` + `SafetyFilter`: a command is finite, inside [low, high] per dimension and moves
  at most `max_delta` per dimension per control tick from the previous command. A non-finite
  action is refused outright (never "clipped" into range: NaN carries no direction).
- `check_instruction`: the instruction text the policy may act on (non-empty, bounded length, no
  control characters, ASCII only unless allowed).
- `select_joints`: a JointState's positions in the order the model wants, or the reason it cannot.
- `LatencyWindow`, `RateMeter`: p50/p99 over a sliding window and event rates, for diagnostics.
"""

from __future__ import annotations

import math
import time
import unicodedata
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CommandLimits",
    "InputRejected",
    "LatencyWindow",
    "RateMeter",
    "SafetyFilter",
    "check_instruction",
    "resolve_limits",
    "select_joints",
]


class InputRejected(ValueError):
    """An input the node refuses; `reason` is a short key for counting, the text says what was wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CommandLimits:
    """Per-dimension limits of a command: low ≤ value ≤ high, |value − previous| ≤ max_delta per tick."""

    low: np.ndarray  # (A,)
    high: np.ndarray  # (A,)
    max_delta: np.ndarray  # (A,), inf where a dimension is not rate-limited

    def __post_init__(self) -> None:
        low, high, delta = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (self.low, self.high, self.max_delta))
        if not (low.shape == high.shape == delta.shape) or low.size == 0:
            raise ValueError(f"low, high and max_delta must have one value per dimension, got sizes "
                             f"{low.size}, {high.size}, {delta.size}")
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(f"limits must be finite, got low {low.tolist()} high {high.tolist()}")
        if (high < low).any():
            bad = int(np.argmax(high < low))
            raise ValueError(f"limit of dimension {bad}: max {high[bad]} < min {low[bad]}")
        if np.isnan(delta).any() or (delta <= 0).any():
            raise ValueError(f"max change per tick must be > 0 (or unlimited), got {delta.tolist()}")
        for name, value in (("low", low), ("high", high), ("max_delta", delta)):
            value.flags.writeable = False
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return int(self.low.size)


def _per_dimension(values: Sequence[float], dim: int, what: str, names: Sequence[str]) -> np.ndarray:
    array = np.asarray(list(values), dtype=np.float64)
    if array.size != dim:
        raise ValueError(f"{what} must have {dim} values, one per action dimension {list(names)}, got {array.size}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} must be finite numbers, got {array.tolist()}")
    return array


def resolve_limits(model_low: Sequence[float], model_high: Sequence[float], names: Sequence[str],
                   action_min: Sequence[float] = (), action_max: Sequence[float] = (),
                   max_delta: Sequence[float] = ()) -> CommandLimits:
    """The limits a node applies: the parameters where given, else the model's low/high; unlimited rate if empty.

    `max_delta` may hold one value (every dimension) or one per dimension. Raises ValueError naming
    the parameter and the dimension names when a length or value is wrong.
    """
    dim = len(names)
    low = _per_dimension(action_min, dim, "action_min", names) if len(action_min) else np.asarray(model_low, float)
    high = _per_dimension(action_max, dim, "action_max", names) if len(action_max) else np.asarray(model_high, float)
    if len(max_delta) == 0:
        delta = np.full(dim, np.inf)
    elif len(max_delta) == 1:
        delta = np.full(dim, float(max_delta[0]))
    else:
        delta = _per_dimension(max_delta, dim, "max_delta_per_tick", names)
    if np.isnan(delta).any() or (delta <= 0).any():
        raise ValueError(f"max_delta_per_tick must be > 0 in every dimension, got {delta.tolist()}")
    bad = np.flatnonzero(high < low)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"action_max < action_min for dimension {names[i]!r}: {high[i]} < {low[i]}")
    return CommandLimits(low=low, high=high, max_delta=delta)


class SafetyFilter:
    """Turns executor actions into commands that obey `CommandLimits`; remembers the previous command.

    `apply(action)` returns the command, or None for a non-finite action (refused, counted). The
    first command after `reset()` is clipped but not rate-limited unless `reset(previous=...)` gave
    the value to start from (the measured joint positions, or zero for velocity-like commands).
    """

    def __init__(self, limits: CommandLimits) -> None:
        self.limits = limits
        self._previous: np.ndarray | None = None
        self.counters = {"clipped": 0, "rate_limited": 0, "non_finite": 0, "commands": 0}

    def set_limits(self, limits: CommandLimits) -> None:
        if limits.dim != self.limits.dim:
            raise ValueError(f"limits must keep {self.limits.dim} dimensions, got {limits.dim}")
        self.limits = limits

    def reset(self, previous: np.ndarray | None = None) -> None:
        """Forget the previous command, or start from `previous` (the arm's measured position, zero motion);
        NaN entries of `previous` are dimensions with no known start."""
        if previous is not None:
            previous = np.asarray(previous, dtype=np.float64).reshape(-1)
            # NaN marks a dimension with no known starting value: not rate-limited on the first command.
            previous = np.where(np.isfinite(previous), previous, np.nan) if previous.size == self.limits.dim else None
        self._previous = None if previous is None else previous.copy()

    @property
    def previous(self) -> np.ndarray | None:
        return None if self._previous is None else self._previous.copy()

    def limit(self, action: Any, previous: np.ndarray | None) -> tuple[np.ndarray | None, bool, bool]:
        """(command or None, clipped, rate_limited) for `action` after `previous`; changes no state."""
        values = np.asarray(action, dtype=np.float64).reshape(-1)
        if values.size != self.limits.dim or not np.isfinite(values).all():
            return None, False, False
        lims = self.limits
        clipped_values = np.clip(values, lims.low, lims.high)
        clipped = bool((clipped_values != values).any())
        out = clipped_values
        rate_limited = False
        if previous is not None:
            step = np.clip(out - previous, -lims.max_delta, lims.max_delta)
            limited = np.where(np.isnan(previous), out, previous + step)
            rate_limited = bool((limited != out).any())
            # previous may lie outside new (tightened) limits: the result still must not.
            out = np.clip(limited, lims.low, lims.high)
        if not np.isfinite(out).all():  # cannot happen with finite inputs; never let it through
            return None, clipped, rate_limited
        return out, clipped, rate_limited

    def apply(self, action: Any) -> np.ndarray | None:
        """The safe command for this tick (and remember it), or None when the action is unusable."""
        out, clipped, rate_limited = self.limit(action, self._previous)
        if out is None:
            self.counters["non_finite"] += 1
            return None
        self.counters["clipped"] += int(clipped)
        self.counters["rate_limited"] += int(rate_limited)
        self.counters["commands"] += 1
        self._previous = out
        return out.copy()

    def plan(self, first: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """(1 + K, A) commands: `first` (already safe) then each of `rest` limited after the one before it."""
        points = [np.asarray(first, dtype=np.float64)]
        for action in np.asarray(rest, dtype=np.float64).reshape(-1, self.limits.dim):
            out, _, _ = self.limit(action, points[-1])
            if out is None:
                break  # a non-finite later point ends the plan; the safe prefix stands
            points.append(out)
        return np.stack(points)


def check_instruction(text: Any, *, max_length: int, ascii_only: bool) -> str:
    """The instruction to act on (surrounding whitespace removed), or InputRejected with the reason.

    Refused: not a str, empty or blank, longer than `max_length` characters, control characters
    (newlines inside are refused too: an instruction is one sentence), and non-ASCII text when
    `ascii_only` (the shipped instruction encoder is English; unknown words become [UNK] tokens and
    an embedding the policy never saw).
    """
    if not isinstance(text, str):
        raise InputRejected("instruction_type", f"instruction must be a str, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise InputRejected("instruction_empty", "instruction is empty")
    if len(stripped) > max_length:
        raise InputRejected("instruction_too_long", f"instruction has {len(stripped)} characters, more than "
                            f"max_instruction_length={max_length}")
    bad = next((c for c in stripped if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    if bad is not None:
        raise InputRejected("instruction_control_chars", f"instruction contains the control character {bad!r}")
    if ascii_only and not stripped.isascii():
        first = next(c for c in stripped if not c.isascii())
        raise InputRejected("instruction_non_ascii", f"instruction contains the non-ASCII character {first!r} "
                            "(instruction_ascii_only: true; the instruction encoder is English)")
    return stripped


def select_joints(names: Sequence[str], positions: Sequence[float], wanted: Sequence[str]) -> np.ndarray:
    """`positions` reordered to `wanted` (JointState semantics), or InputRejected with the reason.

    Refused: names and positions of different lengths, duplicate names, wanted joints missing,
    non-finite positions of wanted joints. Extra joints are ignored (a JointState may carry more).
    """
    names = list(names)
    values = np.asarray(positions, dtype=np.float64).reshape(-1) if len(positions) else np.zeros(0)
    if len(names) != values.size:
        raise InputRejected("joint_states_length", f"JointState has {len(names)} names but {values.size} positions")
    index = {}
    for i, name in enumerate(names):
        if name in index:
            raise InputRejected("joint_states_duplicate", f"JointState names {name!r} twice")
        index[name] = i
    missing = [name for name in wanted if name not in index]
    if missing:
        raise InputRejected("joint_states_missing", f"JointState lacks joints {missing} (has {names})")
    selected = values[[index[name] for name in wanted]]
    if not np.isfinite(selected).all():
        bad = [name for name, v in zip(wanted, selected, strict=True) if not math.isfinite(v)]
        raise InputRejected("joint_states_non_finite", f"JointState positions of {bad} are not finite")
    return selected


class LatencyWindow:
    """The last `size` durations (ms): count, p50, p99, max."""

    def __init__(self, size: int = 1000) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, value_ms: float) -> None:
        if math.isfinite(value_ms):
            self._values.append(float(value_ms))
            self.count += 1

    def percentile(self, q: float) -> float | None:
        if not self._values:
            return None
        return float(np.percentile(np.fromiter(self._values, dtype=np.float64), q))

    def summary(self) -> dict[str, float | None]:
        return {"p50": self.percentile(50), "p99": self.percentile(99),
                "max": max(self._values) if self._values else None}


class RateMeter:
    """Events per second over the last `window_s` seconds (monotonic clock)."""

    def __init__(self, window_s: float = 2.0, clock: Any = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()
        self.count = 0

    def mark(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        self._times.append(now)
        self.count += 1
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / span if span > 0 else 0.0
