"""EpisodeWriter and the episode reader on synthetic frames: real rosbag2 files, read back with plain rosbags."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader

from conla_ros.episodes import topics as T
from conla_ros.episodes.reader import (
    EpisodeReadError,
    is_complete_episode,
    list_episodes,
    load_episode,
    read_episode_metadata,
    scan_episodes,
)
from conla_ros.episodes.writer import ABORT_NOTE, EpisodeWriter, EpisodeWriterError, typestore

RATE_HZ = 80.0
PERIOD_NS = round(1e9 / RATE_HZ)
T0 = 1_700_000_000 * 1_000_000_000
LATENCY_NS = 1_000_000
STEPS = 12
JOINTS = ("j0", "j1", "j2")
REPO = Path(__file__).resolve().parents[2]


def frame(k: int, size: int = 16) -> np.ndarray:
    """A distinct, recognisable RGB frame per step (channels differ, so a BGR swap would show)."""
    image = np.zeros((size, size + 4, 3), dtype=np.uint8)  # not square: catches height/width swaps
    image[..., 0] = k
    image[..., 1] = np.arange(size + 4, dtype=np.uint8)[None, :]
    image[..., 2] = 200
    return image


def action(k: int) -> np.ndarray:
    return np.array([0.1 * k, -0.05 * k, 0.01, 1.0 if k % 2 else -1.0])


def write_episode(path: Path, storage: str, steps: int = STEPS, **metadata) -> Path:
    """STEPS control steps: image + joints at t_k, command at t_k + 1 ms, and a final image + joints."""
    with EpisodeWriter(path, storage=storage, metadata={"task": "reach", "seed": 3, **metadata}) as writer:
        writer.add_instruction(T0, "reach the red goal")
        for k in range(steps + 1):
            stamp = T0 + k * PERIOD_NS
            writer.add_image(stamp, frame(k))
            writer.add_joint_state(stamp, JOINTS, [k, 2.0 * k, -k])
            if k < steps:
                writer.add_action(stamp + LATENCY_NS, action(k))
        return writer.close(success=True, control_rate_hz=RATE_HZ)


@pytest.fixture(params=["sqlite3", "mcap"])
def storage(request) -> str:
    return request.param


@pytest.fixture
def episode(tmp_path: Path, storage: str) -> Path:
    return write_episode(tmp_path / "reach_000003", storage)


def test_bag_reads_back_with_plain_rosbags(episode: Path, storage: str) -> None:
    assert episode.name == "reach_000003" and not episode.with_name("reach_000003.partial").exists()
    extension = {"sqlite3": "db3", "mcap": "mcap"}[storage]
    assert sorted(p.name for p in episode.iterdir()) == ["metadata.yaml", f"reach_000003.{extension}"]
    with AnyReader([episode], default_typestore=typestore()) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        counts = {c.topic: c.msgcount for c in reader.connections}
        messages: dict[str, list] = {}
        for connection, stamp, raw in reader.messages():
            messages.setdefault(connection.topic, []).append((stamp, reader.deserialize(raw, connection.msgtype)))
    assert types == {spec.name: spec.msgtype for spec in T.EPISODE_TOPICS}
    assert counts == {T.CAMERA.name: STEPS + 1, T.JOINT_STATES.name: STEPS + 1, T.INSTRUCTION.name: 1,
                      T.EE_TWIST.name: STEPS, T.GRIPPER.name: STEPS}

    images = messages[T.CAMERA.name]
    for k, (stamp, msg) in enumerate(images):
        header_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        assert stamp == header_ns == T0 + k * PERIOD_NS  # control rate, header == bag time
        assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 16, 20, 60)
        assert msg.header.frame_id == T.CAMERA_FRAME_ID
        assert np.array_equal(np.asarray(msg.data).reshape(16, 20, 3), frame(k))
    stamps = np.array([s for s, _ in images])
    assert np.all(np.diff(stamps) == PERIOD_NS)

    twists = messages[T.EE_TWIST.name]
    for k, (stamp, msg) in enumerate(twists):
        assert stamp == T0 + k * PERIOD_NS + LATENCY_NS
        assert msg.header.frame_id == T.BASE_FRAME_ID
        linear = msg.twist.linear
        assert np.allclose([linear.x, linear.y, linear.z], action(k)[:3])
        assert (msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z) == (0.0, 0.0, 0.0)
    grippers = [msg.data.tolist() for _, msg in messages[T.GRIPPER.name]]
    assert grippers == [[action(k)[3]] for k in range(STEPS)]
    joint_msg = messages[T.JOINT_STATES.name][2][1]
    assert list(joint_msg.name) == list(JOINTS) and np.allclose(joint_msg.position, [2, 4, -2])
    assert messages[T.INSTRUCTION.name][0][1].data == "reach the red goal"


def test_load_episode_arrays_and_alignment(episode: Path) -> None:
    data = load_episode(episode)
    assert data.images.shape == (STEPS + 1, 16, 20, 3) and data.images.dtype == np.uint8
    assert np.array_equal(data.images[5], frame(5))
    assert data.image_stamps.dtype == np.int64 and np.all(np.diff(data.image_stamps) == PERIOD_NS)
    assert data.joint_names == JOINTS and data.joint_positions.shape == (STEPS + 1, 3)
    assert data.commands.shape == (STEPS, 4)
    assert np.allclose(data.commands, np.stack([action(k) for k in range(STEPS)]))
    assert len(data) == STEPS
    # image k is followed by command k; the last image has no command after it
    assert data.next_command_index().tolist() == [*range(STEPS), STEPS]
    assert data.instruction == "reach the red goal"
    assert data.metadata["task"] == "reach"


def test_metadata_is_read_without_decoding(episode: Path) -> None:
    info = yaml.safe_load((episode / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    meta = json.loads(info["custom_data"][T.CUSTOM_DATA_KEY])
    assert meta["task"] == "reach" and meta["seed"] == 3 and meta["success"] is True
    assert meta["length"] == STEPS and meta["instruction"] == "reach the red goal"
    assert meta["control_rate_hz"] == RATE_HZ and meta["image_size"] == [16, 20]
    assert meta["message_counts"][T.CAMERA.name] == STEPS + 1
    # The storage file is not touched: the metadata reads even with it destroyed.
    for storage_file in info["relative_file_paths"]:
        (episode / storage_file).write_bytes(b"garbage")
    assert read_episode_metadata(episode) == meta
    assert not is_complete_episode(episode)


def test_exception_inside_writer_leaves_only_a_partial(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "push_000001"
    with pytest.raises(RuntimeError, match="teleop dropped"), EpisodeWriter(path, storage=storage) as writer:
        writer.add_image(T0, frame(0))
        raise RuntimeError("teleop dropped")
    assert not path.exists()
    partial = tmp_path / "push_000001.partial"
    assert partial.is_dir() and "teleop dropped" in (partial / ABORT_NOTE).read_text()
    assert not is_complete_episode(partial)
    assert list_episodes(tmp_path) == []
    # A new writer of the same name replaces the stale partial and finishes normally.
    assert write_episode(path, storage).name == "push_000001" and not partial.exists()


def test_writer_killed_mid_episode_leaves_no_dataset_entry(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from conla_ros.episodes.writer import EpisodeWriter
        writer = EpisodeWriter({str(tmp_path / "ep")!r}).open()
        for k in range(5):
            writer.add_image(k, np.zeros((8, 8, 3), np.uint8))
        print("written", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert process.stdout.readline().strip() == "written"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert not (tmp_path / "ep").exists() and (tmp_path / "ep.partial").is_dir()
    scan = scan_episodes(tmp_path)
    assert scan.complete == [] and scan.partial == [tmp_path / "ep.partial"]


def test_list_episodes_skips_and_counts_partial_and_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = [write_episode(tmp_path / f"ep_{i}", storage) for i, storage in enumerate(("sqlite3", "mcap"))]
    (tmp_path / "ep_9.partial").mkdir()
    (tmp_path / "ep_9.partial" / "ep_9.partial_0.db3").write_bytes(b"")
    corrupt = write_episode(tmp_path / "ep_5", "sqlite3")
    db3 = next(corrupt.glob("*.db3"))
    db3.write_bytes(db3.read_bytes()[:200])  # truncated storage
    bad_meta = write_episode(tmp_path / "ep_6", "mcap")
    (bad_meta / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, mapping")
    (tmp_path / "notes").mkdir()  # an unrelated folder is not an episode at all
    with caplog.at_level(logging.WARNING):
        found = list_episodes(tmp_path)
    assert found == good
    scan = scan_episodes(tmp_path)
    assert len(scan.partial) == 1 and sorted(p.name for p, _ in scan.corrupt) == ["ep_5", "ep_6"]
    assert "2 complete, 1 partial, 2 unreadable" in caplog.text
    assert "ep_5" in caplog.text and "ep_9.partial" in caplog.text
    with pytest.raises(EpisodeReadError, match="ep_5"):
        load_episode(corrupt)
    with pytest.raises(EpisodeReadError, match=r"ep_9\.partial"):
        load_episode(tmp_path / "ep_9.partial")


def test_instruction_written_once_and_on_change(tmp_path: Path) -> None:
    with EpisodeWriter(tmp_path / "ep") as writer:
        assert writer.add_instruction(T0, "open the drawer")
        assert not writer.add_instruction(T0 + 1, "open the drawer")
        writer.add_image(T0, frame(0))
        assert writer.add_instruction(T0 + PERIOD_NS, "close the drawer")
        writer.add_image(T0 + PERIOD_NS, frame(1))
    data = load_episode(tmp_path / "ep")
    assert [text for _, text in data.instructions] == ["open the drawer", "close the drawer"]
    assert data.metadata["instruction"] == "open the drawer"
    assert data.instruction_at(T0 + PERIOD_NS) == "close the drawer"
    assert data.instruction_at(T0) == "open the drawer"


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    existing = write_episode(tmp_path / "ep", "sqlite3")
    with pytest.raises(EpisodeWriterError, match="exists already"):
        EpisodeWriter(existing).open()
    with pytest.raises(EpisodeWriterError, match="storage"):
        EpisodeWriter(tmp_path / "x", storage="rosbag1")
    with pytest.raises(EpisodeWriterError, match=r"\(H, W, 3\) uint8"), EpisodeWriter(tmp_path / "y") as writer:
        writer.add_image(T0, np.zeros((8, 8), np.float32))
    with pytest.raises(EpisodeWriterError, match="4 values"), EpisodeWriter(tmp_path / "z") as writer:
        writer.add_action(T0, [0.0, 0.0, 0.0])
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_messages_deserialise_with_rclpy(episode: Path) -> None:
    """The CDR bytes in the bag are what real ROS 2 publishes: rclpy reads them unchanged."""
    try:
        from geometry_msgs.msg import TwistStamped
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image
    except ImportError as error:  # pragma: no cover - only where ROS 2 is absent
        pytest.skip(f"rclpy not available: {error}")
    rclpy_types = {T.CAMERA.name: Image, T.EE_TWIST.name: TwistStamped}
    decoded = {}
    with AnyReader([episode]) as reader:
        connections = [c for c in reader.connections if c.topic in rclpy_types]
        for connection, _, raw in reader.messages(connections=connections):
            decoded.setdefault(connection.topic, deserialize_message(bytes(raw), rclpy_types[connection.topic]))
    image = decoded[T.CAMERA.name]
    assert (image.encoding, image.height, image.width, image.header.frame_id) == ("rgb8", 16, 20, T.CAMERA_FRAME_ID)
    assert bytes(image.data) == frame(0).tobytes()
    assert decoded[T.EE_TWIST.name].header.frame_id == T.BASE_FRAME_ID



def test_reads_a_plain_rosbag2_recording_with_bgr_images(tmp_path: Path) -> None:
    """A bag written by other tools (no conla metadata, a bgr8 camera) is still an episode."""
    from rosbags.rosbag2 import Writer

    store = typestore()
    types = store.types
    path = tmp_path / "teleop_2026"
    image = frame(3)
    with Writer(path, version=9) as writer:
        camera = writer.add_connection(T.CAMERA.name, T.CAMERA.msgtype, typestore=store)
        twist = writer.add_connection(T.EE_TWIST.name, T.EE_TWIST.msgtype, typestore=store)
        header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=5, nanosec=0),
                                              frame_id="cam")
        msg = types[T.CAMERA.msgtype](header=header, height=16, width=20, encoding="bgr8", is_bigendian=0,
                                      step=60, data=np.ascontiguousarray(image[..., ::-1]).reshape(-1))
        writer.write(camera, 5_000_000_000, store.serialize_cdr(msg, T.CAMERA.msgtype))
        vector = types["geometry_msgs/msg/Vector3"]
        command = types[T.EE_TWIST.msgtype](header=header, twist=types["geometry_msgs/msg/Twist"](
            linear=vector(x=0.5, y=0.0, z=0.0), angular=vector(x=0.0, y=0.0, z=0.0)))
        writer.write(twist, 5_000_000_000, store.serialize_cdr(command, T.EE_TWIST.msgtype))
    assert list_episodes(tmp_path) == [path]
    assert read_episode_metadata(path)["source"] == "rosbag2" and read_episode_metadata(path)["length"] == 1
    data = load_episode(path)
    assert np.array_equal(data.images[0], image)  # bgr8 converted to RGB
    assert data.commands.tolist() == [[0.5, 0.0, 0.0, 0.0]]  # no gripper topic: 0


def test_add_serialized_passes_raw_cdr_through(tmp_path: Path) -> None:
    """The recorder node can hand over a raw subscription's bytes unchanged."""
    store = typestore()
    raw = store.serialize_cdr(store.types[T.INSTRUCTION.msgtype](data="press the button"), T.INSTRUCTION.msgtype)
    with EpisodeWriter(tmp_path / "ep") as writer:
        writer.add_serialized(T.INSTRUCTION.name, T0, raw)
        writer.add_serialized(T.INSTRUCTION.name, T0 + 1, raw)  # unchanged: not written again
        writer.add_image(T0, frame(0))
        with pytest.raises(EpisodeWriterError, match="not an episode topic"):
            writer.add_serialized("/tf", T0, raw)
    data = load_episode(tmp_path / "ep")
    assert data.instruction == data.metadata["instruction"] == "press the button"
    assert len(data.instructions) == 1
