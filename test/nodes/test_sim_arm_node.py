"""sim_arm_node in-process: parameters, commands, reset and the step limit, driving its control tick by hand.

No DDS: callbacks and `_tick()` are called directly, so the arm's logic is checked step by step
(test/integration runs it as a process over ROS 2, in real time).
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator

import pytest

rclpy = pytest.importorskip("rclpy")

from fixtures.ros_nodes import node_factory  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from conla_ros.nodes.sim_arm_node import SimArmNode  # noqa: E402
from conla_ros.ros.parameters import ParameterError  # noqa: E402
from conla_ros.sim.instructions import instructions  # noqa: E402


@pytest.fixture
def make_arm() -> Iterator:
    """make_arm(**params) -> SimArmNode, destroyed at teardown."""
    with node_factory(SimArmNode) as make:
        yield make


def twist(x: float, frame: str = "base_link"):
    from geometry_msgs.msg import TwistStamped

    msg = TwistStamped()
    msg.header.frame_id = frame
    msg.twist.linear.x = x
    return msg


@pytest.mark.parametrize(("params", "words"), [
    ({"camera_rate_hz": 30.0}, "divided by a whole number"),
    ({"control_rate_hz": 40.0, "camera_rate_hz": 80.0}, "camera_rate_hz=80 must be control_rate_hz=40"),
    ({"status_rate_hz": 0.0}, "positive rate"),
    ({"task": "jump"}, "one of: reach"),
    ({"seed": -1}, "seed"),
    ({"image_size": 4}, "image_size"),
])
def test_bad_parameters_stop_start_up_with_the_reason(make_arm, params, words: str) -> None:
    with pytest.raises(ParameterError, match=words):
        make_arm(**params)


def test_commands_reset_and_the_step_limit(make_arm) -> None:
    arm = make_arm(task="reach", seed=3)
    status = arm.status()
    assert (status.task, status.seed, status.step, status.holding) == ("reach", 3, 0, True)
    assert status.instruction in instructions("reach", "train")  # a training seed: training paraphrases

    arm._on_twist(twist(float("nan")))
    arm._on_twist(twist(0.5, frame="world"))
    arm._on_gripper(Float64MultiArray(data=[]))
    assert arm.status().counters["rejected"] == 3
    for _ in range(10):
        arm._tick()
    settled = arm.status().ee_position

    arm._on_twist(twist(1.0))
    arm._on_gripper(Float64MultiArray(data=[1.0]))
    for _ in range(5):
        arm._tick()
    moving = arm.status()
    assert not moving.holding and moving.step == 15
    assert moving.ee_position[0] - settled[0] > 0.01

    # A refused parameter leaves the reset parameters as they were.
    assert not arm.set_parameters([Parameter("task", value="fly")])[0].successful
    assert arm.set_parameters([Parameter("task", value="push"), Parameter("seed", value=1_000_004),
                               Parameter("max_steps", value=4)])[0].successful
    reply = arm._on_reset(Trigger.Request(), Trigger.Response())
    assert reply.success
    reset = json.loads(reply.message)
    assert (reset["task"], reset["seed"], reset["step"], reset["max_steps"]) == ("push", 1_000_004, 0, 4)
    assert reset["instruction"] in instructions("push", "heldout")
    assert reset["counters"]["twists"] == 0 and reset["holding"]  # commands of the last episode are forgotten

    arm._on_twist(twist(1.0))
    for _ in range(8):
        arm._tick()
    done = arm.status()
    assert done.step == 4 and done.done and not done.success  # the arm stopped at the limit


def test_a_lower_control_rate_applies_each_command_for_several_world_steps(make_arm) -> None:
    arm = make_arm(control_rate_hz=40.0, camera_rate_hz=20.0, status_rate_hz=40.0)
    published = []
    arm._camera_pub = types.SimpleNamespace(publish=published.append)
    for _ in range(4):
        arm._tick()
    assert arm.status().step == 8  # real time kept: 4 ticks of 25 ms = 8 steps of 12.5 ms
    assert len(published) == 2  # 20 Hz camera: every other tick
    assert published[0].header.frame_id == "camera_color_optical_frame"


def test_a_simulation_error_stops_the_arm_not_the_node_until_a_reset(make_arm, monkeypatch) -> None:
    arm = make_arm()

    def broken(action):
        raise RuntimeError("mujoco exploded")

    monkeypatch.setattr(arm._world, "step", broken)
    arm._tick()
    arm._tick()  # no second attempt, no exception
    status = arm.status()
    assert "mujoco exploded" in status.fault and status.done and status.step == 0
    monkeypatch.undo()
    assert arm._on_reset(Trigger.Request(), Trigger.Response()).success
    arm._tick()
    assert arm.status().fault == "" and arm.status().step == 1
