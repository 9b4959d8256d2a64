"""Read robot episodes (rosbag2 directories): metadata without decoding, and whole episodes as numpy.

Works on episodes from EpisodeWriter (simulation and the recorder node) and on plain
`ros2 bag record` bags of the same topics (their metadata is then derived from metadata.yaml).

The action kind (`read_action_contract`) comes from the bag's command topic: the end-effector
twist (ee_delta) or the joint command topic (joint_position); a bag with both or neither is an
error naming it. The metadata's `action` entry (written by EpisodeWriter) supplies the names,
units and declared limits, and must agree with the topic; bags written before that entry existed,
and plain recordings, are end-effector episodes when they hold the twist topic (`contract.EE_DELTA`),
exactly as they were always read. A joint-command bag needs the entry: Float64MultiArray has no names.
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
from conla_ros.episodes.contract import EE_DELTA, ActionContract

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
    (the number of arm commands), with `source` = "rosbag2". Raises EpisodeReadError.
    """
    path = Path(path)
    info = _bag_info(path)
    counts = _message_counts(info)
    custom = info.get("custom_data") or {}
    text = custom.get(T.CUSTOM_DATA_KEY) if isinstance(custom, dict) else None
    if text is None:
        length = sum(counts.get(spec.name, 0) for spec in T.COMMAND_TOPICS.values())
        return {T.META_SOURCE: "rosbag2", T.META_LENGTH: length, T.META_COUNTS: counts}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise EpisodeReadError(f"{path / METADATA_FILE}: custom_data {T.CUSTOM_DATA_KEY} is not JSON "
                               f"({error})") from None
    if not isinstance(meta, dict):
        raise EpisodeReadError(f"{path / METADATA_FILE}: custom_data {T.CUSTOM_DATA_KEY} is not an object")
    return meta


def _message_counts(info: dict[str, Any]) -> dict[str, int]:
    """Topic name -> message count, as metadata.yaml lists them (a recorded topic may have 0)."""
    return {entry["topic_metadata"]["name"]: int(entry["message_count"])
            for entry in info.get("topics_with_message_count") or []}


def _command_kinds(counts: dict[str, int]) -> list[str]:
    """The action kinds whose command topic the bag holds: those with messages, else those merely recorded."""
    with_messages = [kind for kind, spec in T.COMMAND_TOPICS.items() if counts.get(spec.name, 0) > 0]
    return with_messages or [kind for kind, spec in T.COMMAND_TOPICS.items() if spec.name in counts]


def read_action_contract(path: Path | str) -> ActionContract:
    """What the episode's commands are, from its command topic and metadata (module docstring); EpisodeReadError."""
    path = Path(path)
    kinds = _command_kinds(_message_counts(_bag_info(path)))
    topics = ", ".join(f"{spec.name} ({kind})" for kind, spec in T.COMMAND_TOPICS.items())
    if len(kinds) != 1:
        what = "both" if kinds else "neither"
        raise EpisodeReadError(f"{path}: holds {what} of the command topics {topics}; an episode commands exactly "
                               f"one action kind")
    kind = kinds[0]
    declared = read_episode_metadata(path).get(T.META_ACTION)
    if declared is None:
        if kind == "ee_delta":
            return EE_DELTA  # every bag from before the metadata entry, and plain twist recordings
        raise EpisodeReadError(f"{path}: joint commands on {T.JOINT_COMMANDS.name} but no '{T.META_ACTION}' entry "
                               f"in its metadata naming the joints (a Float64MultiArray carries no names)")
    try:
        contract = ActionContract.from_dict(declared, f"metadata '{T.META_ACTION}'")
    except ValueError as error:
        raise EpisodeReadError(f"{path / METADATA_FILE}: {error}") from None
    if contract.kind != kind:
        raise EpisodeReadError(f"{path}: its metadata says action kind {contract.kind!r}, but its commands are on "
                               f"{T.COMMAND_TOPICS[kind].name} ({kind})")
    return contract


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

    commands (C, A) follow `action` (its names, in order). For an ee_delta episode (`EE_DELTA`)
    commands[:, :3] is the end-effector twist's linear part (the arm's delta, see
    conla_ros.episodes.topics) and commands[:, 3] the gripper command in force at that time; for a
    joint_position episode they are the joint command's positions [and the gripper command], stamped
    with the bag's receive times (a Float64MultiArray has no header).
    """

    path: Path
    metadata: dict[str, Any]
    images: np.ndarray  # (T, H, W, 3) uint8 RGB
    image_stamps: np.ndarray  # (T,) int64
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray  # (J, N) float64
    joint_stamps: np.ndarray  # (J,) int64
    commands: np.ndarray  # (C, A) float64 in `action.names` order, e.g. ee dx, dy, dz, gripper
    command_stamps: np.ndarray  # (C,) int64
    instruction: str  # the first instruction
    instructions: list[tuple[int, str]]  # every instruction message: (stamp, text)
    action: ActionContract = EE_DELTA  # what the commands are

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

    Raises EpisodeReadError naming the bag for a partial, missing or corrupt episode, and for one
    whose action kind cannot be told (`read_action_contract`).
    """
    path = Path(path)
    problem = _problem(path)
    if problem is not None:
        raise EpisodeReadError(f"{path}: not a complete episode: {problem}")
    contract = read_action_contract(path)
    try:
        return _decode(path, contract)
    except EpisodeReadError:
        raise
    except Exception as error:
        raise EpisodeReadError(f"{path}: cannot decode episode ({type(error).__name__}: {error})") from error


def _decode(path: Path, contract: ActionContract) -> EpisodeData:
    from rosbags.highlevel import AnyReader

    from conla_ros.episodes.writer import typestore
    from conla_ros.ros.image_conversions import image_to_rgb

    command_topic = contract.command_topic.name
    wanted = {spec.name for spec in (T.CAMERA, T.JOINT_STATES, T.INSTRUCTION, contract.command_topic)}
    if contract.gripper is not None:
        wanted.add(T.GRIPPER.name)
    arm_dim = len(contract.arm_names)
    images, image_stamps = [], []
    joints, joint_stamps, joint_names = [], [], ()
    arm, arm_stamps, arm_received = [], [], []
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
            elif topic == command_topic and contract.kind == "ee_delta":
                linear, angular = msg.twist.linear, msg.twist.angular
                arm.append((linear.x, linear.y, linear.z, angular.x, angular.y, angular.z)[:arm_dim])
                arm_stamps.append(_stamp(msg))
                arm_received.append(timestamp)
            elif topic == command_topic:  # joint positions: Float64MultiArray, no header
                values = np.asarray(msg.data, dtype=np.float64)
                if values.shape != (arm_dim,):
                    raise EpisodeReadError(f"{path}: joint command {len(arm)} on {command_topic} has {values.size} "
                                           f"values, the action names {arm_dim} joints {list(contract.arm_names)}")
                arm.append(values)
                arm_stamps.append(timestamp)
                arm_received.append(timestamp)
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
    command_stamps = np.asarray(arm_stamps, dtype=np.int64)
    commands = np.zeros((len(arm), contract.dim), dtype=np.float64)
    if arm:
        columns = [i for i in range(contract.dim) if i != contract.gripper_index]
        commands[:, columns] = np.asarray(arm, dtype=np.float64)
        if contract.gripper_index is not None:
            # Pair on the bag's (receive) times: a Float64MultiArray has no header, and a twist's header stamp
            # precedes the receipt of the gripper command sent with it. The tolerance covers a pair received
            # in either order; it is far below a control period, so a generated episode (bag time = header
            # stamp, gripper and twist at the same instant) pairs exactly as before.
            commands[:, contract.gripper_index] = _hold_last(
                np.asarray(gripper_stamps, dtype=np.int64), np.asarray(grippers, dtype=np.float64),
                np.asarray(arm_received, dtype=np.int64) + PAIRING_TOLERANCE_NS)
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
        action=contract,
    )


def _hold_last(stamps: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The last value sent at or before each time in `at` (the first value before any was sent; 0 if none)."""
    if values.size == 0:
        return np.zeros(at.shape, dtype=np.float64)
    index = np.searchsorted(stamps, at, side="right") - 1
    return values[np.clip(index, 0, None)]
