"""conla_ros.core.safety: limits, rate limits, instruction and joint-state checks, run-time figures."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conla_ros.core.safety import (
    CommandLimits,
    InputRejected,
    LatencyWindow,
    RateMeter,
    SafetyFilter,
    check_instruction,
    resolve_limits,
    select_joints,
)

NAMES = ("dx", "dy", "dz", "gripper")


def test_limits_default_to_the_model_and_take_parameters() -> None:
    limits = resolve_limits([-1, -1, -1, -1], [1, 1, 1, 1], NAMES)
    assert limits.low.tolist() == [-1] * 4 and np.isinf(limits.max_delta).all()
    limits = resolve_limits([-1] * 4, [1] * 4, NAMES, action_min=[-0.1] * 4, max_delta=[0.5])
    assert limits.low.tolist() == [-0.1] * 4 and limits.high.tolist() == [1] * 4
    assert limits.max_delta.tolist() == [0.5] * 4
    for kwargs, words in (({"action_min": [0.0]}, "action_min must have 4 values"),
                          ({"action_max": [-2.0] * 4}, "action_max < action_min for dimension 'dx'"),
                          ({"max_delta": [0.1, 0.0, 0.1, 0.1]}, "> 0"),
                          ({"action_min": [float("nan")] * 4}, "finite")):
        with pytest.raises(ValueError, match=words):
            resolve_limits([-1] * 4, [1] * 4, NAMES, **kwargs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=3, max_size=3),
                min_size=1, max_size=20))
def test_every_command_is_finite_inside_the_limits_and_rate_limited(actions) -> None:
    limits = CommandLimits(low=np.array([-1.0, 0.0, -0.5]), high=np.array([1.0, 2.0, 0.5]),
                           max_delta=np.array([0.1, 0.2, np.inf]))
    safety = SafetyFilter(limits)
    safety.reset(np.zeros(3))
    previous = np.zeros(3)
    for action in actions:
        out = safety.apply(action)
        if not np.isfinite(action).all():
            assert out is None  # NaN/inf carry no direction: refused, never clipped into range
            continue
        assert out is not None and np.isfinite(out).all()
        assert (out >= limits.low).all() and (out <= limits.high).all()
        assert (np.abs(out - previous)[:2] <= limits.max_delta[:2] + 1e-12).all()
        previous = out


def test_nan_start_dimensions_are_not_rate_limited_and_plans_are() -> None:
    safety = SafetyFilter(CommandLimits(low=-np.ones(2), high=np.ones(2), max_delta=np.full(2, 0.1)))
    safety.reset(np.array([0.0, np.nan]))  # the gripper's position is unknown
    assert safety.apply([0.5, 0.9]).tolist() == [0.1, 0.9]
    plan = safety.plan(np.array([0.1, 0.9]), np.array([[1.0, -1.0], [1.0, -1.0], [np.nan, 0.0]]))
    assert plan.shape == (3, 2)  # the non-finite third point ends the plan
    assert np.allclose(plan[:, 0], [0.1, 0.2, 0.3]) and np.allclose(plan[:, 1], [0.9, 0.8, 0.7])
    safety.set_limits(CommandLimits(low=-np.ones(2) * 0.05, high=np.ones(2) * 0.05, max_delta=np.full(2, 0.1)))
    assert np.abs(safety.apply([1.0, 1.0])).max() <= 0.05  # tightened limits hold even against the previous


@pytest.mark.parametrize(("text", "reason"), [
    ("", "instruction_empty"), ("  \t", "instruction_empty"), ("x" * 1001, "instruction_too_long"),
    ("open\x1b[2J", "instruction_control_chars"), ("open\nthe drawer", "instruction_control_chars"),
    ("ouvre le tiroir à gauche", "instruction_non_ascii"), (b"open", "instruction_type"),
])
def test_bad_instructions_say_why(text, reason: str) -> None:
    with pytest.raises(InputRejected) as info:
        check_instruction(text, max_length=1000, ascii_only=True)
    assert info.value.reason == reason


def test_good_instructions_are_stripped() -> None:
    assert check_instruction("  open the drawer ", max_length=100, ascii_only=True) == "open the drawer"
    assert check_instruction("ouvre le tiroir", max_length=100, ascii_only=False) == "ouvre le tiroir"


def test_select_joints_reorders_and_refuses_with_reasons() -> None:
    assert select_joints(["b", "x", "a"], [2.0, 9.0, 1.0], ["a", "b"]).tolist() == [1.0, 2.0]
    cases = [((["a", "b"], [1.0]), "joint_states_length"), ((["a", "a"], [1.0, 2.0]), "joint_states_duplicate"),
             ((["a"], [1.0]), "joint_states_missing"), ((["a", "b"], [1.0, float("inf")]), "joint_states_non_finite")]
    for (names, positions), reason in cases:
        with pytest.raises(InputRejected) as info:
            select_joints(names, positions, ["a", "b"])
        assert info.value.reason == reason


def test_latency_window_and_rate_meter() -> None:
    window = LatencyWindow(100)
    assert window.summary() == {"p50": None, "p99": None, "max": None}
    for value in range(1, 101):
        window.add(float(value))
    window.add(float("nan"))
    assert window.summary()["p50"] == pytest.approx(50.5) and window.summary()["max"] == 100.0
    meter = RateMeter(window_s=2.0, clock=lambda: 0.0)
    for k in range(21):
        meter.mark(k * 0.05)
    assert meter.rate(1.0) == pytest.approx(20.0)
    assert meter.rate(10.0) == 0.0
