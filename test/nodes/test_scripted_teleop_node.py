"""scripted_teleop_node in-process: when it commands, what it sends, and what it ignores.

Through its topics and its `~/enable` service only: a peer node (test/fixtures/ros_peer.py)
publishes the privileged state and the episode status as sim_arm_node would and reads the twist
and gripper commands the node publishes. The node reports nothing when it ignores a state, so each
message is sent with `Peer.send`, which returns once the node has taken it; `commands_sent` then
says whether it commanded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from fixtures.ros_nodes import node_factory  # noqa: E402
from fixtures.ros_peer import Peer, peers  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.client import Client  # noqa: E402
from rclpy.publisher import Publisher  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from conla_ros.episodes import topics as T  # noqa: E402
from conla_ros.nodes.scripted_teleop_node import ScriptedTeleopNode  # noqa: E402
from conla_ros.ros.episode_status import EPISODE_STATUS_QOS, EpisodeStatus  # noqa: E402
from conla_ros.ros.qos import COMMAND_QOS  # noqa: E402

# The node publishes with depth 1: a deep reader keeps every command it got.
_INBOX_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class Teleop:
    """The node under test, and the peer's side of its interface."""

    node: ScriptedTeleopNode
    peer: Peer
    state: Publisher
    status: Publisher
    enabler: Client
    twists: list[TwistStamped]
    grippers: list[Float64MultiArray]

    def send_state(self, world_state: np.ndarray) -> None:
        """One privileged-state message (a control tick of the arm), returned from once the node took it."""
        self.peer.send(self.state, Float64MultiArray(data=world_state.tolist()))

    def send_status(self, **fields) -> None:
        """An episode status (task reach, step 3, no success unless given), returned from once the node took it."""
        self.peer.send(self.status, String(data=EpisodeStatus(**{"task": "reach", "step": 3, "success": False}
                                                              | fields).to_json()))

    def enable(self, on: bool) -> SetBool.Response:
        """Call `~/enable`."""
        return self.peer.call(self.enabler, SetBool.Request(data=on))

    def wait_for_commands(self, n: int) -> None:
        """Spin until `n` twist and `n` gripper commands have arrived."""
        self.peer.spin_until(lambda: len(self.twists) >= n and len(self.grippers) >= n, what=f"{n} commands")


@pytest.fixture
def teleop() -> Iterator:
    """teleop(**params) -> Teleop, torn down at the end of the test."""
    with node_factory(ScriptedTeleopNode) as make, peers() as peer_for:

        def make_teleop(**params) -> Teleop:
            node = make(**params)
            peer = peer_for(node)
            return Teleop(node=node, peer=peer,
                          state=peer.publisher(Float64MultiArray, peer.topic("state_topic"), COMMAND_QOS),
                          status=peer.publisher(String, peer.topic("status_topic"), EPISODE_STATUS_QOS),
                          enabler=peer.client(SetBool, "~/enable"),
                          twists=peer.subscription(TwistStamped, peer.topic("ee_twist_topic"), _INBOX_QOS),
                          grippers=peer.subscription(Float64MultiArray, peer.topic("gripper_topic"), _INBOX_QOS))

        yield make_teleop


def test_commands_the_experts_action_until_success_and_only_when_enabled(teleop) -> None:
    from conla_ros.sim.world import SimWorld

    with SimWorld() as world:
        raw_state = world.reset("reach", 4).state
        expert = world.expert_action()
    t = teleop(action_noise=0.0, autostart=False)
    t.send_state(raw_state)
    assert t.node.commands_sent == 0 and t.twists == []  # no status yet, and not enabled
    t.send_status()
    t.send_state(raw_state)
    assert t.node.commands_sent == 0 and t.twists == []  # still disabled
    assert t.enable(True).success
    t.send_state(raw_state)
    t.wait_for_commands(1)
    [twist], [gripper] = t.twists, t.grippers
    linear = twist.twist.linear
    np.testing.assert_allclose([linear.x, linear.y, linear.z, gripper.data[0]], np.clip(expert, -1, 1))
    assert twist.header.frame_id == T.BASE_FRAME_ID
    t.send_state(raw_state[:10])  # not a Meta-World state: ignored
    t.send_state(np.full(39, np.nan))
    assert t.node.commands_sent == 1
    t.send_status(success=True)
    t.send_state(raw_state)
    assert t.node.commands_sent == 1  # succeeded: the operator lets go
    t.send_status(step=10, max_steps=10)
    t.send_state(raw_state)
    assert t.node.commands_sent == 1  # time is up
    assert len(t.twists) == 1 and len(t.grippers) == 1


def test_noise_is_added_and_clipped(teleop) -> None:
    t = teleop(action_noise=1.0, noise_seed=1)
    t.send_status()
    for k in range(20):
        t.send_state(np.zeros(39))
        t.wait_for_commands(k + 1)  # one at a time: the node's depth-1 publisher keeps only the newest
    assert t.node.commands_sent == 20
    values = np.array([[tw.twist.linear.x, tw.twist.linear.y, tw.twist.linear.z, g.data[0]]
                       for tw, g in zip(t.twists, t.grippers, strict=True)])
    assert values.std() > 0.1 and np.all(np.abs(values) <= 1.0)
