"""scripted_teleop_node in-process: when it commands, what it sends, and what it ignores."""

from __future__ import annotations

import types
from collections.abc import Iterator

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from conla_ros.episodes import topics as T  # noqa: E402
from conla_ros.nodes.scripted_teleop_node import ScriptedTeleopNode  # noqa: E402
from conla_ros.ros.episode_status import EpisodeStatus  # noqa: E402


@pytest.fixture
def teleop() -> Iterator:
    context = rclpy.Context()
    rclpy.init(context=context)
    made = []

    def make(**params) -> tuple[ScriptedTeleopNode, list, list]:
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        node = ScriptedTeleopNode(context=context, parameter_overrides=overrides)
        twists, grippers = [], []
        node._twist_pub = types.SimpleNamespace(publish=twists.append)
        node._gripper_pub = types.SimpleNamespace(publish=grippers.append)
        made.append(node)
        return node, twists, grippers

    yield make
    for node in made:
        node.destroy_node()
    rclpy.try_shutdown(context=context)


def _state(world_state: np.ndarray) -> Float64MultiArray:
    return Float64MultiArray(data=world_state.tolist())


def _status(**kwargs) -> String:
    fields = {"task": "reach", "step": 3, "success": False} | kwargs
    return String(data=EpisodeStatus(**fields).to_json())


def test_commands_the_experts_action_until_success_and_only_when_enabled(teleop) -> None:
    from conla_ros.sim.world import SimWorld

    with SimWorld() as world:
        raw_state = world.reset("reach", 4).state
        expert = world.expert_action()
    node, twists, grippers = teleop(action_noise=0.0, autostart=False)
    node._on_state(_state(raw_state))
    assert twists == []  # no status yet, and not enabled
    node._on_status(_status())
    node._on_state(_state(raw_state))
    assert twists == []  # still disabled
    assert node._on_enable(SetBool.Request(data=True), SetBool.Response()).success
    node._on_state(_state(raw_state))
    [twist], [gripper] = twists, grippers
    linear = twist.twist.linear
    np.testing.assert_allclose([linear.x, linear.y, linear.z, gripper.data[0]], np.clip(expert, -1, 1))
    assert twist.header.frame_id == T.BASE_FRAME_ID
    node._on_state(_state(raw_state[:10]))  # not a Meta-World state: ignored
    node._on_state(_state(np.full(39, np.nan)))
    assert len(twists) == 1
    node._on_status(_status(success=True))
    node._on_state(_state(raw_state))
    assert len(twists) == 1  # succeeded: the operator lets go
    node._on_status(_status(step=10, max_steps=10))
    node._on_state(_state(raw_state))
    assert len(twists) == 1  # time is up


def test_noise_is_added_and_clipped(teleop) -> None:
    node, twists, grippers = teleop(action_noise=1.0, noise_seed=1)
    node._on_status(_status())
    for _ in range(20):
        node._on_state(_state(np.zeros(39)))
    values = np.array([[t.twist.linear.x, t.twist.linear.y, t.twist.linear.z, g.data[0]]
                       for t, g in zip(twists, grippers, strict=True)])
    assert values.std() > 0.1 and np.all(np.abs(values) <= 1.0)
