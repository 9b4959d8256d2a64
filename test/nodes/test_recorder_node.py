"""recorder_node in-process: episodes, metadata and atomicity, with the episode topics sent over DDS.

Through its public interface only: a peer node (test/fixtures/ros_peer.py) publishes what the arm
and a teleop device publish (camera, joint states, instruction, gripper and twist commands, the
episode status), calls `~/start`, `~/stop` and `~/set_success`, and reads `~/state`; episodes are
also started and stopped with the node's public methods, and read back with the episode reader,
so the bytes rclpy delivers are checked to be what rosbags decodes. test/integration runs the
recorder as a process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from fixtures.ros_nodes import node_factory  # noqa: E402
from fixtures.ros_peer import Peer, peers  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.client import Client  # noqa: E402
from rclpy.publisher import Publisher  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from conla_ros.episodes import topics as T  # noqa: E402
from conla_ros.episodes.reader import list_episodes, load_episode, scan_episodes  # noqa: E402
from conla_ros.episodes.writer import ABORT_NOTE  # noqa: E402
from conla_ros.nodes.recorder_node import RecorderNode  # noqa: E402
from conla_ros.ros.episode_status import EPISODE_STATUS_QOS, EpisodeStatus  # noqa: E402
from conla_ros.ros.image_conversions import numpy_to_image  # noqa: E402
from conla_ros.ros.parameters import ParameterError  # noqa: E402
from conla_ros.ros.qos import CAMERA_QOS, COMMAND_QOS, INSTRUCTION_QOS  # noqa: E402

JOINTS = ("a", "b", "c")
CONTROL_PERIOD_S = 1 / 80  # the arm's: commands of consecutive steps arrive at least this far apart
_LATCHED = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def frame(k: int) -> np.ndarray:
    """Camera frame k: 8x10 RGB, distinct per k and per column."""
    return np.full((8, 10, 3), k, dtype=np.uint8) + np.arange(10, dtype=np.uint8)[None, :, None]


@dataclass
class Recorder:
    """The recorder under test, and the peer's side of its interface: the arm, the teleop device, the operator."""

    node: RecorderNode
    peer: Peer
    camera: Publisher
    joints: Publisher
    instruction: Publisher
    status: Publisher
    gripper: Publisher
    twist: Publisher
    start: Client
    stop: Client
    set_success: Client
    states: list[String]
    sent: dict[str, dict[str, int]] = field(default_factory=dict)  # episode -> topic -> messages sent to it
    next_step_at: float = 0.0

    def state(self) -> dict | None:
        """The newest `~/state` the recorder published, or None before the first."""
        return json.loads(self.states[-1].data) if self.states else None

    def send_instruction(self, text: str) -> None:
        """An instruction (transient-local, as the arm sends it), returned from once the recorder took it."""
        self.peer.send(self.instruction, String(data=text))

    def send_status(self, success: bool, episode: int = 1, step: int = 5) -> None:
        """An episode status of the arm, returned from once the recorder took it."""
        self.peer.send(self.status, String(data=EpisodeStatus(
            task="push", seed=7, episode=episode, step=step, success=success, control_rate_hz=80.0,
            domain="robot").to_json()))

    def call(self, client: Client, request: Trigger.Request | SetBool.Request) -> Trigger.Response:
        """Call one of the recorder's services."""
        return self.peer.call(client, request)

    def step(self, k: int, action: tuple[float, float, float, float]) -> None:
        """One control step of a recorded episode as the arm and a teleop device publish it: frame k, joint
        states, then the gripper and twist command; returned from once the recorder has written all four."""
        episode = self.node.recording
        assert episode is not None, "step() feeds an episode being recorded"
        self.peer.spin_until(lambda: time.monotonic() >= self.next_step_at, what="the next control period")
        stamp = self.node.get_clock().now().to_msg()
        self.peer.send(self.camera, numpy_to_image(frame(k), "rgb8", stamp=stamp, frame_id=T.CAMERA_FRAME_ID))
        # Velocities and efforts filled, as joint_state_broadcaster sends them.
        joints = JointState(name=list(JOINTS), position=[k * 0.1, 0.0, -k * 0.1], velocity=[0.0] * 3,
                            effort=[0.0] * 3)
        joints.header.stamp = stamp
        self.peer.send(self.joints, joints)
        # Gripper first, taken before the twist is sent: the recorder pairs them by receive time.
        self.peer.send(self.gripper, Float64MultiArray(data=[action[3]]))
        twist = TwistStamped()
        twist.header.stamp = stamp  # stamped by its sender before the recorder received either command
        twist.header.frame_id = T.BASE_FRAME_ID
        twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = action[:3]
        self.peer.send(self.twist, twist)
        self.next_step_at = time.monotonic() + CONTROL_PERIOD_S
        # Camera and joint states are best effort (nothing acknowledges them): wait for ~/state to count them.
        sent = self.sent.setdefault(str(episode), {T.CAMERA.name: 0, T.JOINT_STATES.name: 0})
        sent[T.CAMERA.name] += 1
        sent[T.JOINT_STATES.name] += 1

        def written() -> bool:
            state = self.state()
            return (state is not None and state["episode"] == str(episode)
                    and all(state["counts"].get(name, 0) >= n for name, n in sent.items()))

        self.peer.spin_until(written, what=f"~/state counting step {k} of {episode.name}")


@pytest.fixture
def make_recorder(tmp_path: Path) -> Iterator:
    """make_recorder(**params) -> Recorder writing under tmp_path/out unless told otherwise, torn down at the end."""
    with node_factory(RecorderNode) as make, peers() as peer_for:

        def make_with_peer(**params) -> Recorder:
            node = make(**{"output_dir": str(tmp_path / "out"), **params})
            peer = peer_for(node)
            return Recorder(
                node=node, peer=peer,
                camera=peer.publisher(Image, peer.topic("camera_topic"), CAMERA_QOS),
                joints=peer.publisher(JointState, peer.topic("joint_states_topic"), CAMERA_QOS),
                instruction=peer.publisher(String, peer.topic("instruction_topic"), INSTRUCTION_QOS),
                status=peer.publisher(String, peer.topic("status_topic"), EPISODE_STATUS_QOS),
                gripper=peer.publisher(Float64MultiArray, peer.topic("gripper_topic"), COMMAND_QOS),
                twist=peer.publisher(TwistStamped, peer.topic("ee_twist_topic"), COMMAND_QOS),
                start=peer.client(Trigger, "~/start"), stop=peer.client(Trigger, "~/stop"),
                set_success=peer.client(SetBool, "~/set_success"),
                states=peer.subscription(String, "~/state", _LATCHED))

        yield make_with_peer


def test_start_stop_writes_an_episode_the_reader_decodes_exactly(make_recorder, tmp_path: Path) -> None:
    rec = make_recorder(extra_metadata=json.dumps({"operator": "test"}))
    rec.send_instruction("push the puck")  # before start: held, and written first when the episode starts
    rec.send_status(False)
    reply = rec.call(rec.start, Trigger.Request())
    assert reply.success, reply.message
    assert rec.node.recording is not None and rec.node.recording.name.startswith("teleop_")
    assert str(rec.node.recording) in reply.message
    actions = [(0.1 * k, -0.2, 0.3, 1.0 if k % 2 else -1.0) for k in range(4)]
    for k, action in enumerate(actions):
        rec.step(k, action)
    rec.send_status(True, step=40)
    reply = rec.call(rec.stop, Trigger.Request())
    assert reply.success, reply.message
    path = reply.message
    assert list_episodes(tmp_path / "out") == [Path(path)]
    episode = load_episode(path)
    np.testing.assert_array_equal(episode.images, np.stack([frame(k) for k in range(4)]))
    assert episode.joint_names == JOINTS
    np.testing.assert_allclose(episode.joint_positions[:, 0], [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(episode.commands[:, :3], np.array(actions)[:, :3])
    assert episode.instruction == "push the puck"
    meta = episode.metadata
    assert meta[T.META_SOURCE] == "teleop" and meta["operator"] == "test"
    assert (meta[T.META_TASK], meta[T.META_SEED], meta[T.META_SUCCESS]) == ("push", 7, True)
    assert meta[T.META_LENGTH] == 4 and meta[T.META_IMAGE_SIZE] == [8, 10]
    assert meta[T.META_CONTROL_RATE_HZ] == 80.0 and meta["stopped_by"] == "service"
    assert set(meta["rates_hz"]) >= {T.CAMERA.name, T.EE_TWIST.name}
    assert meta[T.META_COUNTS][T.INSTRUCTION.name] == 1
    rec.peer.spin_until(lambda: rec.state()["closed"] == [path], what="~/state naming the closed episode")
    assert not rec.state()["recording"]


def test_each_twist_is_paired_with_the_gripper_command_sent_with_it(make_recorder) -> None:
    rec = make_recorder()
    rec.node.start_episode("test")
    actions = [(0.0, 0.0, 0.0, g) for g in (-1.0, 1.0, -0.5, 0.5)]
    for k, action in enumerate(actions):
        rec.step(k, action)  # one control period between pairs, as on the arm (the recorder stamps on receipt)
    _, path = rec.node.stop_episode("test")
    np.testing.assert_allclose(load_episode(path).commands[:, 3], [a[3] for a in actions])


def test_a_message_rosbags_cannot_decode_is_dropped_and_counted_not_written(make_recorder) -> None:
    # rclpy's serialize_message (rmw_serialize, this Kilted build) appends 4 stray bytes per trailing empty
    # float64 sequence; rosbags refuses more than 3 (it allows the RTPS padding). Messages published as
    # objects go out exact, but a node publishing such bytes raw would make a bag that fails to load.
    rec = make_recorder()
    rec.node.start_episode("test")
    rec.peer.send(rec.joints, serialize_message(JointState(name=["a"], position=[1.0])))  # raw bytes
    rec.peer.send(rec.joints, b"\x00\x01\x00\x00garbage")
    rec.step(0, (0.0, 0.0, 0.0, -1.0))  # its joint states follow both on the same topic: counted, both were taken
    _, path = rec.node.stop_episode("test")
    episode = load_episode(path)  # loads: nothing undecodable was written
    assert len(episode.joint_positions) == 1
    assert episode.metadata["undecodable_dropped"] == {T.JOINT_STATES.name: 2}


def test_an_episode_without_camera_frames_is_aborted_not_closed(make_recorder, tmp_path: Path) -> None:
    rec = make_recorder()
    assert rec.node.stop_episode("test") == (False, "not recording")
    rec.node.start_episode("test")
    assert rec.node.start_episode("again")[0] is False  # one episode at a time
    rec.peer.send(rec.gripper, Float64MultiArray(data=[1.0]))
    ok, message = rec.node.stop_episode("test")
    assert not ok and "no camera frame" in message
    scan = scan_episodes(tmp_path / "out")
    assert scan.complete == [] and len(scan.partial) == 1
    assert (scan.partial[0] / ABORT_NOTE).is_file()


def test_shutdown_mid_episode_aborts_by_default_and_closes_when_asked(make_recorder, tmp_path: Path) -> None:
    aborting = make_recorder(output_dir=str(tmp_path / "a"))
    aborting.node.start_episode("test")
    aborting.step(0, (0.0, 0.0, 0.0, -1.0))
    aborting.node.shutdown_recording()
    scan = scan_episodes(tmp_path / "a")
    assert scan.complete == [] and len(scan.partial) == 1
    assert "shut down" in (scan.partial[0] / ABORT_NOTE).read_text()

    closing = make_recorder(output_dir=str(tmp_path / "c"), close_on_shutdown=True)
    closing.node.start_episode("test")
    closing.step(0, (0.0, 0.0, 0.0, -1.0))
    closing.node.shutdown_recording()
    [path] = list_episodes(tmp_path / "c")
    meta = load_episode(path).metadata
    assert meta["stopped_by"] == "shutdown" and meta[T.META_SUCCESS] is None  # no status: unknown


def test_a_new_instruction_starts_a_new_episode_when_asked(make_recorder, tmp_path: Path) -> None:
    rec = make_recorder(record_on_instruction_change=True, name_format="{prefix}_{index}")
    for text in ("open the drawer", "open the drawer", "close the drawer"):
        rec.send_instruction(text)
        rec.step(0, (0.0, 0.0, 0.0, -1.0))
    rec.node.stop_episode("test")
    episodes = list_episodes(tmp_path / "out")
    assert [p.name for p in episodes] == ["teleop_0", "teleop_1"]
    assert [load_episode(p).instruction for p in episodes] == ["open the drawer", "close the drawer"]
    assert [len(load_episode(p).images) for p in episodes] == [2, 1]


def test_stop_on_success_and_the_operators_verdict(make_recorder, tmp_path: Path) -> None:
    rec = make_recorder(stop_on_success=True)
    rec.send_status(True, episode=1)  # an old success, already there at start: not this episode's
    rec.node.start_episode("test")
    rec.step(0, (0.0, 0.0, 0.0, -1.0))
    rec.send_status(True, episode=1)
    assert rec.node.recording is not None
    rec.send_status(False, episode=2)  # the arm was reset
    rec.step(1, (0.0, 0.0, 0.0, -1.0))
    rec.send_status(True, episode=2)  # ... and succeeded
    assert rec.node.recording is None
    [path] = list_episodes(tmp_path / "out")
    meta = load_episode(path).metadata
    assert meta["stopped_by"] == "success" and meta[T.META_SUCCESS] is True and meta["status_episode_changed"]

    verdict = make_recorder(output_dir=str(tmp_path / "v"))
    verdict.send_status(True)
    verdict.node.start_episode("test")
    verdict.step(0, (0.0, 0.0, 0.0, -1.0))
    reply = verdict.call(verdict.set_success, SetBool.Request(data=False))
    assert reply.success
    _, path = verdict.node.stop_episode("test")
    assert load_episode(path).metadata[T.META_SUCCESS] is False  # the operator wins over the status


def test_names_never_reuse_an_episode_or_a_partial(make_recorder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "teleop_0.partial").mkdir(parents=True)  # a killed recording's remains: evidence, kept
    (out / "teleop_1").mkdir()
    rec = make_recorder(name_format="{prefix}_{index}")
    rec.node.start_episode("test")
    assert rec.node.recording == out / "teleop_2"
    assert (out / "teleop_0.partial").is_dir()


@pytest.mark.parametrize(("name", "value", "words"), [
    ("name_format", "{nope}", "cannot be filled"),
    ("name_format", "a/b", "not a directory name"),
    ("storage", "tar", "one of"),
    ("extra_metadata", "[1]", "JSON object"),
    ("control_rate_hz", -1.0, "out of range"),
])
def test_bad_parameters_are_refused_with_the_reason(make_recorder, name: str, value, words: str) -> None:
    with pytest.raises(ParameterError, match=name) as error:
        make_recorder(**{name: value})
    assert words in str(error.value)
