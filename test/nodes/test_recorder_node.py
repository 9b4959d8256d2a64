"""recorder_node in-process: its callbacks fed with CDR bytes exactly as a raw rclpy subscription delivers them.

No DDS here (test/integration has the multi-process tests): each test builds the node in a context
of its own and calls the subscription callbacks directly, so what is checked is the recorder's own
logic — episodes, metadata, atomicity — and that rclpy's CDR bytes are what rosbags decodes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from fixtures.ros_nodes import node_factory  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402

from conla_ros.episodes import topics as T  # noqa: E402
from conla_ros.episodes.reader import list_episodes, load_episode, scan_episodes  # noqa: E402
from conla_ros.episodes.writer import ABORT_NOTE  # noqa: E402
from conla_ros.nodes.recorder_node import RecorderNode  # noqa: E402
from conla_ros.ros.episode_status import EpisodeStatus  # noqa: E402
from conla_ros.ros.image_conversions import numpy_to_image  # noqa: E402
from conla_ros.ros.parameters import ParameterError  # noqa: E402

JOINTS = ("a", "b", "c")


@pytest.fixture
def make_recorder(tmp_path: Path) -> Iterator:
    """make_recorder(**params) -> RecorderNode writing under tmp_path/out, destroyed at teardown."""
    with node_factory(RecorderNode) as make:
        yield lambda **params: make(**{"output_dir": str(tmp_path / "out"), **params})


def frame(k: int) -> np.ndarray:
    return np.full((8, 10, 3), k, dtype=np.uint8) + np.arange(10, dtype=np.uint8)[None, :, None]


def feed_step(node: RecorderNode, k: int, action: tuple[float, float, float, float]) -> None:
    """One control step as the arm and a teleop device publish it: frame, joints, gripper, twist."""
    stamp = node.get_clock().now().to_msg()
    image = numpy_to_image(frame(k), "rgb8", stamp=stamp, frame_id=T.CAMERA_FRAME_ID)
    node._record(T.CAMERA.name)(serialize_message(image))
    # Velocities and efforts filled, as joint_state_broadcaster sends them (see the undecodable test for why).
    joints = JointState(name=list(JOINTS), position=[k * 0.1, 0.0, -k * 0.1], velocity=[0.0] * 3, effort=[0.0] * 3)
    joints.header.stamp = stamp
    node._record(T.JOINT_STATES.name)(serialize_message(joints))
    node._record(T.GRIPPER.name)(serialize_message(Float64MultiArray(data=[action[3]])))
    twist = TwistStamped()
    twist.header.stamp = stamp  # stamped by its sender before the recorder received either command
    twist.header.frame_id = T.BASE_FRAME_ID
    twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = action[:3]
    node._record(T.EE_TWIST.name)(serialize_message(twist))


def status(success: bool, episode: int = 1, step: int = 5) -> String:
    return String(data=EpisodeStatus(task="push", seed=7, episode=episode, step=step, success=success,
                                     control_rate_hz=80.0, domain="robot").to_json())


def test_start_stop_writes_an_episode_the_reader_decodes_exactly(make_recorder, tmp_path: Path) -> None:
    node = make_recorder(extra_metadata=json.dumps({"operator": "test"}))
    node._on_instruction(serialize_message(String(data="push the puck")))  # before start: transient-local
    node._on_status(status(False))
    ok, message = node.start_episode("test")
    assert ok, message
    assert node.recording is not None and node.recording.name.startswith("teleop_")
    actions = [(0.1 * k, -0.2, 0.3, 1.0 if k % 2 else -1.0) for k in range(4)]
    for k, action in enumerate(actions):
        feed_step(node, k, action)
    node._on_status(status(True, step=40))
    ok, path = node.stop_episode("test")
    assert ok, path
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
    assert meta[T.META_CONTROL_RATE_HZ] == 80.0 and meta["stopped_by"] == "test"
    assert set(meta["rates_hz"]) >= {T.CAMERA.name, T.EE_TWIST.name}
    assert meta[T.META_COUNTS][T.INSTRUCTION.name] == 1


def test_each_twist_is_paired_with_the_gripper_command_sent_with_it(make_recorder) -> None:
    node = make_recorder()
    node.start_episode("test")
    actions = [(0.0, 0.0, 0.0, g) for g in (-1.0, 1.0, -0.5, 0.5)]
    for k, action in enumerate(actions):
        feed_step(node, k, action)
        time.sleep(1 / 80)  # one control period between pairs, as on the arm (the recorder stamps on receipt)
    _, path = node.stop_episode("test")
    np.testing.assert_allclose(load_episode(path).commands[:, 3], [a[3] for a in actions])


def test_a_message_rosbags_cannot_decode_is_dropped_and_counted_not_written(make_recorder) -> None:
    # rclpy's serialize_message (rmw_serialize, this Kilted build) appends 4 stray bytes per trailing empty
    # float64 sequence; rosbags refuses more than 3 (it allows the RTPS padding). Bytes from DDS are exact
    # (the round-trip test records such JointStates), but a bag holding one such message would fail to load.
    node = make_recorder()
    node.start_episode("test")
    feed_step(node, 0, (0.0, 0.0, 0.0, -1.0))
    node._record(T.JOINT_STATES.name)(serialize_message(JointState(name=["a"], position=[1.0])))
    node._record(T.JOINT_STATES.name)(b"\x00\x01\x00\x00garbage")
    _, path = node.stop_episode("test")
    episode = load_episode(path)  # loads: nothing undecodable was written
    assert len(episode.joint_positions) == 1
    assert episode.metadata["undecodable_dropped"] == {T.JOINT_STATES.name: 2}


def test_an_episode_without_camera_frames_is_aborted_not_closed(make_recorder, tmp_path: Path) -> None:
    node = make_recorder()
    assert node.stop_episode("test") == (False, "not recording")
    node.start_episode("test")
    assert node.start_episode("again")[0] is False  # one episode at a time
    node._record(T.GRIPPER.name)(serialize_message(Float64MultiArray(data=[1.0])))
    ok, message = node.stop_episode("test")
    assert not ok and "no camera frame" in message
    scan = scan_episodes(tmp_path / "out")
    assert scan.complete == [] and len(scan.partial) == 1
    assert (scan.partial[0] / ABORT_NOTE).is_file()


def test_shutdown_mid_episode_aborts_by_default_and_closes_when_asked(make_recorder, tmp_path: Path) -> None:
    aborting = make_recorder(output_dir=str(tmp_path / "a"))
    aborting.start_episode("test")
    feed_step(aborting, 0, (0.0, 0.0, 0.0, -1.0))
    aborting.shutdown_recording()
    scan = scan_episodes(tmp_path / "a")
    assert scan.complete == [] and len(scan.partial) == 1
    assert "shut down" in (scan.partial[0] / ABORT_NOTE).read_text()

    closing = make_recorder(output_dir=str(tmp_path / "c"), close_on_shutdown=True)
    closing.start_episode("test")
    feed_step(closing, 0, (0.0, 0.0, 0.0, -1.0))
    closing.shutdown_recording()
    [path] = list_episodes(tmp_path / "c")
    meta = load_episode(path).metadata
    assert meta["stopped_by"] == "shutdown" and meta[T.META_SUCCESS] is None  # no status: unknown


def test_a_new_instruction_starts_a_new_episode_when_asked(make_recorder, tmp_path: Path) -> None:
    node = make_recorder(record_on_instruction_change=True, name_format="{prefix}_{index}")
    for text in ("open the drawer", "open the drawer", "close the drawer"):
        node._on_instruction(serialize_message(String(data=text)))
        feed_step(node, 0, (0.0, 0.0, 0.0, -1.0))
    node.stop_episode("test")
    episodes = list_episodes(tmp_path / "out")
    assert [p.name for p in episodes] == ["teleop_0", "teleop_1"]
    assert [load_episode(p).instruction for p in episodes] == ["open the drawer", "close the drawer"]
    assert [len(load_episode(p).images) for p in episodes] == [2, 1]


def test_stop_on_success_and_the_operators_verdict(make_recorder, tmp_path: Path) -> None:
    node = make_recorder(stop_on_success=True)
    node._on_status(status(True, episode=1))  # an old success, already there at start: not this episode's
    node.start_episode("test")
    feed_step(node, 0, (0.0, 0.0, 0.0, -1.0))
    node._on_status(status(True, episode=1))
    assert node.recording is not None
    node._on_status(status(False, episode=2))  # the arm was reset
    feed_step(node, 1, (0.0, 0.0, 0.0, -1.0))
    node._on_status(status(True, episode=2))  # ... and succeeded
    assert node.recording is None
    [path] = list_episodes(tmp_path / "out")
    meta = load_episode(path).metadata
    assert meta["stopped_by"] == "success" and meta[T.META_SUCCESS] is True and meta["status_episode_changed"]

    verdict = make_recorder(output_dir=str(tmp_path / "v"))
    verdict._on_status(status(True))
    verdict.start_episode("test")
    feed_step(verdict, 0, (0.0, 0.0, 0.0, -1.0))
    from std_srvs.srv import SetBool

    reply = verdict._on_set_success(SetBool.Request(data=False), SetBool.Response())
    assert reply.success
    _, path = verdict.stop_episode("test")
    assert load_episode(path).metadata[T.META_SUCCESS] is False  # the operator wins over the status


def test_names_never_reuse_an_episode_or_a_partial(make_recorder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "teleop_0.partial").mkdir(parents=True)  # a killed recording's remains: evidence, kept
    (out / "teleop_1").mkdir()
    node = make_recorder(name_format="{prefix}_{index}")
    node.start_episode("test")
    assert node.recording == out / "teleop_2"
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
