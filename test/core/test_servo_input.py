"""conla_ros.core.servo_input: the command semantics of a servo-driven arm, without ROS."""

from __future__ import annotations

import types

import numpy as np
import pytest

from conla_ros.core.servo_input import CommandError, ServoInput, check_gripper, check_twist


def twist(x=0.0, y=0.0, z=0.0, angular=(0.0, 0.0, 0.0), frame="base_link"):
    vec = types.SimpleNamespace
    return vec(header=vec(frame_id=frame), twist=vec(linear=vec(x=x, y=y, z=z),
                                                     angular=vec(x=angular[0], y=angular[1], z=angular[2])))


def test_a_fresh_twist_moves_and_a_stale_one_holds_still_while_the_gripper_target_stays() -> None:
    servo = ServoInput(timeout_s=0.1, initial_gripper=-1.0)
    np.testing.assert_array_equal(servo.action(0.0), [0, 0, 0, -1])  # nothing received: hold, gripper open
    assert servo.holding
    servo.set_twist(np.array([0.5, -0.2, 0.1]), now_s=1.0)
    servo.set_gripper(0.8, now_s=1.0)
    np.testing.assert_allclose(servo.action(1.05), [0.5, -0.2, 0.1, 0.8])
    assert not servo.holding
    np.testing.assert_allclose(servo.action(1.2), [0.0, 0.0, 0.0, 0.8])  # twist timed out; gripper held
    assert servo.holding and servo.counters["timeouts"] == 1
    servo.action(1.3)
    assert servo.counters["timeouts"] == 1  # one stop, counted once
    servo.reset()
    np.testing.assert_array_equal(servo.action(1.31), [0, 0, 0, -1])


def test_out_of_range_commands_are_clipped_and_counted() -> None:
    servo = ServoInput()
    servo.set_twist(np.array([3.0, 0.0, -2.0]), now_s=0.0)
    servo.set_gripper(5.0, now_s=0.0)
    np.testing.assert_array_equal(servo.action(0.0), [1.0, 0.0, -1.0, 1.0])
    assert servo.counters["clipped"] == 2


@pytest.mark.parametrize(("msg", "words"), [
    (twist(x=float("nan")), "finite"),
    (twist(angular=(float("inf"), 0.0, 0.0)), "finite"),
    (twist(x=0.1, frame="tool0"), "frame 'tool0'"),
    (object(), "not a TwistStamped"),
])
def test_malformed_twists_are_refused_with_the_reason(msg, words: str) -> None:
    with pytest.raises(CommandError, match=words):
        check_twist(msg, ("base_link", ""))


def test_a_valid_twist_and_a_dropped_angular_part() -> None:
    linear, dropped = check_twist(twist(0.1, 0.2, 0.3), ("base_link", ""))
    np.testing.assert_allclose(linear, [0.1, 0.2, 0.3])
    assert not dropped
    assert check_twist(twist(angular=(0.0, 0.0, 0.5), frame=""), ("base_link", ""))[1]


@pytest.mark.parametrize(("data", "words"), [([], "exactly 1"), ([0.1, 0.2], "exactly 1"), ([float("nan")], "finite")])
def test_malformed_gripper_commands_are_refused(data, words: str) -> None:
    with pytest.raises(CommandError, match=words):
        check_gripper(types.SimpleNamespace(data=data))
    assert check_gripper(types.SimpleNamespace(data=[0.25])) == 0.25


@pytest.mark.parametrize("kwargs", [{"timeout_s": 0.0}, {"timeout_s": float("inf")}, {"initial_gripper": 2.0}])
def test_bad_settings_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        ServoInput(**kwargs)
