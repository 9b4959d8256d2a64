"""sim_arm_node in-process: parameters, commands, reset, the step limit and the control rate, over its topics.

Through its public interface only: a peer node (test/fixtures/ros_peer.py) publishes twist and
gripper commands, calls `~/reset`, and reads the camera, joint states and episode status the arm
publishes; `status()` and `set_parameters` are the node's own public methods. The arm runs on its
own wall timer, as in production, so every wait is on a condition (test/integration runs it as a
process).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from fixtures.ros_nodes import node_factory  # noqa: E402
from fixtures.ros_peer import Peer, peers  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.client import Client  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.publisher import Publisher  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from conla_ros.nodes.sim_arm_node import SimArmNode  # noqa: E402
from conla_ros.ros.episode_status import EpisodeStatus  # noqa: E402
from conla_ros.ros.parameters import ParameterError  # noqa: E402
from conla_ros.ros.qos import COMMAND_QOS  # noqa: E402
from conla_ros.sim.instructions import instructions  # noqa: E402
from conla_ros.sim.world import SimWorld  # noqa: E402

# Deep readers, so the peer keeps every message the arm sends at its control rate.
_RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
_LATCHED = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
_BEST_EFFORT = QoSProfile(depth=200, reliability=ReliabilityPolicy.BEST_EFFORT)


def twist(x: float, frame: str = "base_link") -> TwistStamped:
    """A twist command along x in `frame`."""
    msg = TwistStamped()
    msg.header.frame_id = frame
    msg.twist.linear.x = x
    return msg


@dataclass
class Arm:
    """The arm under test, and the peer's side of its interface."""

    node: SimArmNode
    peer: Peer
    twist_pub: Publisher
    gripper_pub: Publisher
    reset_client: Client
    frames: list[Image]
    joints: list[JointState]
    status_msgs: list[String]

    def send_twist(self, x: float, frame: str = "base_link") -> None:
        """A twist command, returned from once the arm has taken (or refused) it."""
        self.peer.send(self.twist_pub, twist(x, frame))

    def send_gripper(self, values: list[float]) -> None:
        """A gripper command, returned from once the arm has taken (or refused) it."""
        self.peer.send(self.gripper_pub, Float64MultiArray(data=values))

    def reset(self) -> Trigger.Response:
        """Call `~/reset`."""
        return self.peer.call(self.reset_client, Trigger.Request())

    def spin_until(self, done: Callable[[], bool], what: str) -> None:
        """Let the arm run until `done()` holds."""
        self.peer.spin_until(done, what=what)

    def run_ticks(self, n: int) -> None:
        """Let the arm run at least `n` more control ticks (each publishes one JointState)."""
        target = len(self.joints) + n
        self.spin_until(lambda: len(self.joints) >= target, f"{n} more control ticks")

    @property
    def statuses(self) -> list[EpisodeStatus]:
        """Every episode status received so far."""
        return [EpisodeStatus.from_json(msg.data) for msg in self.status_msgs]


@pytest.fixture
def make_arm() -> Iterator:
    """make_arm(**params) -> SimArmNode (not yet spun); `make_arm.connect(node)` -> Arm, which spins it."""
    with node_factory(SimArmNode) as make, peers() as peer_for:

        def connect(node: SimArmNode) -> Arm:
            peer = peer_for(node)
            return Arm(node=node, peer=peer,
                       twist_pub=peer.publisher(TwistStamped, peer.topic("ee_twist_topic"), COMMAND_QOS),
                       gripper_pub=peer.publisher(Float64MultiArray, peer.topic("gripper_topic"), COMMAND_QOS),
                       reset_client=peer.client(Trigger, "~/reset"),
                       frames=peer.subscription(Image, peer.topic("camera_topic"), _BEST_EFFORT),
                       joints=peer.subscription(JointState, peer.topic("joint_states_topic"), _RELIABLE),
                       status_msgs=peer.subscription(String, peer.topic("status_topic"), _LATCHED))

        make.connect = connect
        yield make


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
    # A long command timeout: one twist drives every tick of a wait, however late the ticks come.
    node = make_arm(task="reach", seed=3, command_timeout_s=30.0)
    status = node.status()
    assert (status.task, status.seed, status.step, status.holding) == ("reach", 3, 0, True)
    assert status.instruction in instructions("reach", "train")  # a training seed: training paraphrases
    arm = make_arm.connect(node)

    arm.send_twist(float("nan"))
    arm.send_twist(0.5, frame="world")
    arm.send_gripper([])
    assert node.status().counters["rejected"] == 3
    arm.spin_until(lambda: node.status().step >= 10, "10 steps without a command")
    settled = node.status()
    assert settled.holding and settled.counters["twists"] == 0  # nothing refused moved the arm

    arm.send_twist(1.0)
    arm.send_gripper([1.0])
    arm.spin_until(lambda: node.status().ee_position[0] - settled.ee_position[0] > 0.01, "the arm to move along x")
    moving = node.status()
    assert not moving.holding and moving.step > settled.step
    assert (moving.counters["twists"], moving.counters["grippers"], moving.counters["rejected"]) == (1, 1, 3)

    # A refused parameter leaves the reset parameters as they were.
    assert not node.set_parameters([Parameter("task", value="fly")])[0].successful
    assert node.set_parameters([Parameter("task", value="push"), Parameter("seed", value=1_000_004),
                                Parameter("max_steps", value=4)])[0].successful
    reply = arm.reset()
    assert reply.success
    reset = json.loads(reply.message)
    assert (reset["task"], reset["seed"], reset["step"], reset["max_steps"]) == ("push", 1_000_004, 0, 4)
    assert reset["instruction"] in instructions("push", "heldout")
    assert reset["counters"]["twists"] == 0 and reset["holding"]  # commands of the last episode are forgotten

    arm.send_twist(1.0)
    arm.spin_until(lambda: node.status().done, "the step limit")
    done = node.status()
    assert done.step == 4 and done.done and not done.success
    arm.run_ticks(4)
    assert node.status().step == 4  # the arm stopped at the limit


@pytest.mark.parametrize(("control_hz", "camera_hz", "steps_per_tick", "ticks_per_frame"), [
    (40.0, 20.0, 2, 2),  # real time kept: a tick of 25 ms is 2 world steps of 12.5 ms
    (80.0, 40.0, 1, 2),
])
def test_a_lower_control_rate_applies_each_command_for_several_world_steps(
        make_arm, control_hz: float, camera_hz: float, steps_per_tick: int, ticks_per_frame: int) -> None:
    node = make_arm(control_rate_hz=control_hz, camera_rate_hz=camera_hz, status_rate_hz=control_hz)
    arm = make_arm.connect(node)

    def frame_ticks() -> list[int]:
        """The ticks that sent a frame, counted in joint states (a tick's frame and joint states share a stamp)."""
        tick_of = {(j.header.stamp.sec, j.header.stamp.nanosec): k for k, j in enumerate(arm.joints)}
        stamps = [(f.header.stamp.sec, f.header.stamp.nanosec) for f in arm.frames]
        return [tick_of[s] for s in stamps if s in tick_of]  # frames sent before joint states were read: left out

    arm.spin_until(lambda: len(frame_ticks()) >= 5 and len(arm.status_msgs) >= 10, "5 frames and 10 statuses")

    # One status per tick: the step grows by the same whole number of world steps at every tick. (A
    # reliable depth-1 topic may skip a status; any two consecutive ones still show the step per tick.)
    steps = np.array([s.step for s in arm.statuses])
    increases = np.diff(steps)
    assert np.all(steps % steps_per_tick == 0) and increases[increases > 0].min() == steps_per_tick, steps

    gaps = np.diff(frame_ticks())
    assert np.all(gaps % ticks_per_frame == 0) and gaps.min() == ticks_per_frame, frame_ticks()
    assert arm.frames[0].header.frame_id == "camera_color_optical_frame"


def test_a_simulation_error_stops_the_arm_not_the_node_until_a_reset(make_arm, monkeypatch) -> None:
    node = make_arm()
    attempts: list[np.ndarray] = []

    def broken(world: SimWorld, action: np.ndarray) -> None:
        attempts.append(action)
        raise RuntimeError("mujoco exploded")

    monkeypatch.setattr(SimWorld, "step", broken)  # the arm's world, and no other in this test
    arm = make_arm.connect(node)
    arm.spin_until(lambda: any(s.fault for s in arm.statuses), "a status reporting the fault")
    arm.run_ticks(3)  # further ticks: no second attempt, and no exception out of the timer
    status = node.status()
    assert "mujoco exploded" in status.fault and status.done and status.step == 0
    assert len(attempts) == 1
    monkeypatch.undo()
    assert arm.reset().success
    arm.spin_until(lambda: node.status().step >= 1, "a step after the reset")
    assert node.status().fault == ""
