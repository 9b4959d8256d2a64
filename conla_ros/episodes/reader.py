"""Read robot episodes (rosbag2 directories): metadata without decoding, and whole episodes as numpy.

Works on episodes from EpisodeWriter (simulation and the recorder node) and on plain
`ros2 bag record` bags of the same topics (their metadata is then derived from metadata.yaml).
A directory ending in `.partial`, or one that fails to open, is never returned as an episode:
`scan_episodes` counts and names them, `list_episodes` logs them, and `load_episode` raises an
error that names the file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from conla_ros.episodes import topics as T

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.yaml"
PAIRING_TOLERANCE_NS = 2_000_000  # a gripper command up to 2 ms after a twist belongs to it (control period: 12.5 ms)


class EpisodeReadError(RuntimeError):
    """An episode that cannot be read; the text names the path and what is wrong."""


def _bag_info(path: Path) -> dict[str, Any]:
    """The `rosbag2_bagfile_information` mapping of a bag's metadata.yaml."""
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise EpisodeReadError(f"{path}: no {METADATA_FILE} (not a finished rosbag2 bag)")
    try:
        info = yaml.safe_load(meta_file.read_text())["rosbag2_bagfile_information"]
    except Exception as error:  # any YAML or layout error means the same thing here
        raise EpisodeReadError(f"{meta_file}: not a rosbag2 metadata file ({error})") from None
    if not isinstance(info, dict):
        raise EpisodeReadError(f"{meta_file}: rosbag2_bagfile_information is not a mapping")
    return info


def read_episode_metadata(path: Path | str) -> dict[str, Any]:
    """The episode's metadata (task, seed, instruction, success, length, ...) without decoding messages.

    For bags written by EpisodeWriter this is the JSON object in metadata.yaml's custom_data. For
    other bags of the episode topics it is derived from metadata.yaml: message counts and length
    (the number of end-effector commands), with `source` = "rosbag2". Raises EpisodeReadError.
    """
    path = Path(path)
    info = _bag_info(path)
    counts = {
        entry["topic_metadata"]["name"]: int(entry["message_count"])
        for entry in info.get("topics_with_message_count") or []
    }
    custom = info.get("custom_data") or {}
    text = custom.get(T.CUSTOM_DATA_KEY) if isinstance(custom, dict) else None
    if text is None:
        length = counts.get(T.EE_TWIST.name, 0)
        return {T.META_SOURCE: "rosbag2", T.META_LENGTH: length, T.META_COUNTS: counts}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise EpisodeReadError(f"{path / METADATA_FILE}: custom_data {T.CUSTOM_DATA_KEY} is not JSON "
                               f"({error})") from None
    if not isinstance(meta, dict):
        raise EpisodeReadError(f"{path / METADATA_FILE}: custom_data {T.CUSTOM_DATA_KEY} is not an object")
    return meta


def _problem(path: Path) -> str | None:
    """Why `path` is not a complete episode, or None if it is one."""
    if path.name.endswith(T.PARTIAL_SUFFIX):
        return "partial (its writer did not finish)"
    if not path.is_dir():
        return "not a directory"
    try:
        info = _bag_info(path)
        read_episode_metadata(path)
    except EpisodeReadError as error:
        return str(error)
    for name in info.get("relative_file_paths") or []:
        storage_file = path / name
        if not storage_file.is_file() or storage_file.stat().st_size == 0:
            return f"storage file {storage_file} is missing or empty"
    topics = {entry["topic_metadata"]["name"] for entry in info.get("topics_with_message_count") or []}
    if T.CAMERA.name not in topics:
        return f"no {T.CAMERA.name} topic"
    try:
        from rosbags.rosbag2 import Reader

        with Reader(path):
            pass  # opening reads the storage's index/schema: catches truncated or foreign files
    except Exception as error:
        return f"storage cannot be opened ({type(error).__name__}: {error})"
    return None


def is_complete_episode(path: Path | str) -> bool:
    """True for a finished episode: final name, readable metadata, storage present and openable."""
    return _problem(Path(path)) is None


@dataclass
class EpisodeScan:
    """What `scan_episodes` found under a root: complete episodes and the rest, with reasons."""

    complete: list[Path] = field(default_factory=list)
    partial: list[Path] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line: how many complete, partial and corrupt episodes."""
        return (f"{len(self.complete)} complete, {len(self.partial)} partial, "
                f"{len(self.corrupt)} unreadable episode(s)")


def _candidates(root: Path) -> list[Path]:
    """Directories under root that are (or were meant to be) bags: metadata.yaml or a storage file inside."""
    if _looks_like_bag(root):
        return [root]
    found = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and (child.name.endswith(T.PARTIAL_SUFFIX) or _looks_like_bag(child)):
            found.append(child)
        elif child.is_dir():
            found.extend(_candidates(child))
    return found


def _looks_like_bag(path: Path) -> bool:
    return (path / METADATA_FILE).exists() or any(path.glob("*.db3")) or any(path.glob("*.mcap"))


def scan_episodes(root: Path | str) -> EpisodeScan:
    """Sort every bag directory under `root` (recursively) into complete, partial and corrupt."""
    root = Path(root)
    if not root.is_dir():
        raise EpisodeReadError(f"{root}: no such episode directory")
    scan = EpisodeScan()
    for path in _candidates(root):
        problem = _problem(path)
        if problem is None:
            scan.complete.append(path)
        elif path.name.endswith(T.PARTIAL_SUFFIX):
            scan.partial.append(path)
        else:
            scan.corrupt.append((path, problem))
    return scan


def list_episodes(root: Path | str) -> list[Path]:
    """The complete episodes under `root`, sorted; partial and unreadable ones are logged, never returned."""
    scan = scan_episodes(root)
    for path in scan.partial:
        log.warning("skipping %s: partial episode (its writer did not finish)", path)
    for path, problem in scan.corrupt:
        log.warning("skipping %s: %s", path, problem)
    if scan.partial or scan.corrupt:
        log.warning("%s: %s", root, scan.summary())
    return scan.complete


@dataclass
class EpisodeData:
    """One episode as numpy arrays; stamps are int64 nanoseconds (header stamps).

    commands[:, :3] is the end-effector twist's linear part (the arm's delta, see
    conla_ros.episodes.topics), commands[:, 3] the gripper command in force at that time.
    """

    path: Path
    metadata: dict[str, Any]
    images: np.ndarray  # (T, H, W, 3) uint8 RGB
    image_stamps: np.ndarray  # (T,) int64
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray  # (J, N) float64
    joint_stamps: np.ndarray  # (J,) int64
    commands: np.ndarray  # (C, 4) float64: ee dx, dy, dz, gripper
    command_stamps: np.ndarray  # (C,) int64
    instruction: str  # the first instruction
    instructions: list[tuple[int, str]]  # every instruction message: (stamp, text)

    def __len__(self) -> int:
        return len(self.commands)

    def next_command_index(self) -> np.ndarray:
        """(T,) for each image, the index of the first command stamped at or after it (C if none).

        This is the image <-> next-commands alignment training uses: the commands that followed
        what the camera saw.
        """
        return np.searchsorted(self.command_stamps, self.image_stamps, side="left")

    def instruction_at(self, stamp_ns: int) -> str:
        """The instruction in force at `stamp_ns` (the first one before any was sent)."""
        text = self.instruction
        for stamp, value in self.instructions:
            if stamp <= stamp_ns:
                text = value
        return text


def _stamp(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def load_episode(path: Path | str) -> EpisodeData:
    """Decode a whole episode (camera, joint states, instruction, commands) into numpy arrays.

    Raises EpisodeReadError naming the bag for a partial, missing or corrupt episode.
    """
    path = Path(path)
    problem = _problem(path)
    if problem is not None:
        raise EpisodeReadError(f"{path}: not a complete episode: {problem}")
    try:
        return _decode(path)
    except EpisodeReadError:
        raise
    except Exception as error:
        raise EpisodeReadError(f"{path}: cannot decode episode ({type(error).__name__}: {error})") from error


def _decode(path: Path) -> EpisodeData:
    from rosbags.highlevel import AnyReader

    from conla_ros.episodes.writer import typestore
    from conla_ros.ros.image_conversions import image_to_rgb

    wanted = {spec.name for spec in T.EPISODE_TOPICS}
    images, image_stamps = [], []
    joints, joint_stamps, joint_names = [], [], ()
    twists, twist_stamps, twist_received = [], [], []
    grippers, gripper_stamps = [], []
    instructions: list[tuple[int, str]] = []
    with AnyReader([path], default_typestore=typestore()) as reader:
        connections = [c for c in reader.connections if c.topic in wanted]
        for connection, timestamp, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            topic = connection.topic
            if topic == T.CAMERA.name:
                images.append(image_to_rgb(msg))
                image_stamps.append(_stamp(msg))
            elif topic == T.JOINT_STATES.name:
                joint_names = joint_names or tuple(msg.name)
                joints.append(np.asarray(msg.position, dtype=np.float64))
                joint_stamps.append(_stamp(msg))
            elif topic == T.EE_TWIST.name:
                linear = msg.twist.linear
                twists.append((linear.x, linear.y, linear.z))
                twist_stamps.append(_stamp(msg))
                twist_received.append(timestamp)
            elif topic == T.GRIPPER.name:
                grippers.append(float(msg.data[0]) if len(msg.data) else np.nan)
                gripper_stamps.append(timestamp)  # Float64MultiArray has no header
            elif topic == T.INSTRUCTION.name:
                instructions.append((timestamp, str(msg.data)))
    if not images:
        raise EpisodeReadError(f"{path}: no messages on {T.CAMERA.name}")
    if len({image.shape for image in images}) != 1:
        raise EpisodeReadError(f"{path}: camera images change size within the episode")
    metadata = read_episode_metadata(path)
    command_stamps = np.asarray(twist_stamps, dtype=np.int64)
    commands = np.zeros((len(twists), T.ACTION_DIM), dtype=np.float64)
    if twists:
        commands[:, :3] = np.asarray(twists, dtype=np.float64)
        # Pair on the bag's (receive) times: a Float64MultiArray has no header, and a twist's header stamp
        # precedes the receipt of the gripper command sent with it. The tolerance covers a pair received
        # in either order; it is far below a control period, so a generated episode (bag time = header
        # stamp, gripper and twist at the same instant) pairs exactly as before.
        commands[:, 3] = _hold_last(np.asarray(gripper_stamps, dtype=np.int64),
                                    np.asarray(grippers, dtype=np.float64),
                                    np.asarray(twist_received, dtype=np.int64) + PAIRING_TOLERANCE_NS)
    instruction = instructions[0][1] if instructions else str(metadata.get(T.META_INSTRUCTION, ""))
    return EpisodeData(
        path=path,
        metadata=metadata,
        images=np.stack(images),
        image_stamps=np.asarray(image_stamps, dtype=np.int64),
        joint_names=joint_names,
        joint_positions=np.stack(joints) if joints else np.zeros((0, 0)),
        joint_stamps=np.asarray(joint_stamps, dtype=np.int64),
        commands=commands,
        command_stamps=command_stamps,
        instruction=instruction,
        instructions=instructions,
    )


def _hold_last(stamps: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The last value sent at or before each time in `at` (the first value before any was sent; 0 if none)."""
    if values.size == 0:
        return np.zeros(at.shape, dtype=np.float64)
    index = np.searchsorted(stamps, at, side="right") - 1
    return values[np.clip(index, 0, None)]
