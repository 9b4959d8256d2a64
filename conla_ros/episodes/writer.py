"""EpisodeWriter: one robot episode -> one rosbag2 directory, written atomically with `rosbags`.

The same writer serves the simulator's episode generator and the robot's recorder node, so a
simulated episode and a teleop recording hold the same topics, types, frame ids and metadata.

Atomicity. The bag is written as `NAME.partial/NAME/` (so its storage file is `NAME.db3` or
`NAME.mcap`, named after the bag, as rosbags does); `close()` finishes it (rosbags writes
metadata.yaml last), flushes it to disk, and only then renames it to `NAME` and removes the empty
`NAME.partial/`. A writer that raises, is killed, or loses power leaves at most `NAME.partial/`,
which no reader treats as an episode. So a final-named directory is always a complete bag.

Action kind. An episode commands either the end effector (twist + gripper, the default
`contract.EE_DELTA`) or the joints (`contract.joint_position_contract(names)`: positions on the
joint command topic [+ gripper]); the writer registers only that kind's command topic, so the bag's
topics say its kind, and it stores the contract in the metadata (`action`) with the joint names a
Float64MultiArray cannot carry.

Metadata. The episode's own facts (task, seed, instruction, success, length, control rate,
domain, ...) go into rosbag2's `custom_data` (bag format >= 6) as one JSON object under the key
`conla_ros.episode`. Why there rather than in a sidecar file: it is the format's own place for
user metadata; rosbags writes it into metadata.yaml, so `read_episode_metadata` needs a YAML parse
and no message decoding; it is also stored inside the storage file itself (the sqlite3 `metadata`
table, an mcap metadata record), so it travels with the bag and cannot drift from it the way a
second file could. JSON keeps types (bools, numbers, lists) that custom_data's string values lose.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from conla_ros.episodes import topics as T
from conla_ros.episodes.contract import EE_DELTA, ActionContract

STORAGES: tuple[str, ...] = ("sqlite3", "mcap")
_PLUGINS = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
BAG_VERSION = 9  # rosbag2 format of Jazzy and later
ABORT_NOTE = "ABORTED.txt"  # written into a .partial directory whose writer failed, with the reason


def typestore() -> Typestore:
    """The message type store episodes are (de)serialised with: the newest ROS 2 distribution rosbags knows.

    Kilted's definitions of the five episode types are those of Jazzy (same RIHS01 hashes), so
    bags play back on either.
    """
    store = getattr(Stores, "ROS2_KILTED", None) or Stores.ROS2_JAZZY
    return get_typestore(store)


_TYPESTORE = typestore()


def _qos(kind: T.QosKind) -> list[Qos]:
    """The offered QoS a recorder would have seen for a topic (stored for `ros2 bag play`)."""
    infinite = QosTime(2147483647, 4294967295)  # rmw's "infinite" duration, as rosbag2 writes it
    reliability = QosReliability.BEST_EFFORT if kind == "sensor_data" else QosReliability.RELIABLE
    durability = QosDurability.TRANSIENT_LOCAL if kind == "transient_local" else QosDurability.VOLATILE
    depth = {"sensor_data": 5, "transient_local": 1, "command": 1}.get(kind, 10)
    return [Qos(QosHistory.KEEP_LAST, depth, reliability, durability, infinite, infinite,
                QosLiveliness.AUTOMATIC, infinite, False)]


def partial_path(path: Path | str) -> Path:
    """Where the episode that will be called `path` is written until it is complete."""
    path = Path(path)
    return path.with_name(path.name + T.PARTIAL_SUFFIX)


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """A builtin_interfaces/Time as integer nanoseconds."""
    return int(sec) * 1_000_000_000 + int(nanosec)


def _fsync_tree(root: Path) -> None:
    """Flush every file under `root` and `root` itself to disk (the rename must not overtake the data)."""
    for item in sorted(root.rglob("*")):
        if item.is_file():
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(root)


class EpisodeWriterError(RuntimeError):
    """The episode cannot be written (bad path, bad message, writer not open); the text says which."""


class EpisodeWriter:
    """Write one episode (camera, joint states, instruction, arm and gripper commands) as rosbag2.

    Use it as a context manager:

        with EpisodeWriter(out / "reach_000001", metadata={"task": "reach", "seed": 1}) as writer:
            writer.add_instruction(t0, "reach the red goal")
            for k, (image, joints, action) in enumerate(steps):
                t = t0 + k * period_ns
                writer.add_image(t, image)
                writer.add_joint_state(t, names, joints)
                writer.add_action(t + latency_ns, action)
            writer.close(success=True)

    A joint-space episode takes `action=joint_position_contract(joint_names)` and
    `add_joint_command(t, positions)` (or `add_action`, which takes the whole vector of any kind).

    Leaving the block without an exception closes the episode with the metadata set so far;
    leaving it with one aborts: only `NAME.partial/` remains, with an ABORTED.txt saying why.
    Stamps are integer nanoseconds; each message's header stamp and its bag timestamp are the same.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        storage: str = "sqlite3",
        metadata: Mapping[str, Any] | None = None,
        replace_partial: bool = True,
        action: ActionContract = EE_DELTA,
    ) -> None:
        """Prepare (not yet open) an episode at `path`.

        Args:
            path: the final episode directory; it must not exist yet.
            storage: "sqlite3" or "mcap".
            metadata: JSON-serialisable episode facts (see conla_ros.episodes.topics META_*),
                completed by `close(...)`.
            replace_partial: remove a `NAME.partial/` left by an earlier writer that died.
            action: what the commands are (`conla_ros.episodes.contract`); it decides the command
                topics and is stored in the metadata under `action`.
        """
        if storage not in _PLUGINS:
            raise EpisodeWriterError(f"storage={storage!r} is not one of {STORAGES}")
        if not isinstance(action, ActionContract):
            raise EpisodeWriterError(f"action must be an ActionContract, got {action!r}")
        self.action = action
        self._topics = action.topics
        self.path = Path(path)
        self.partial_path = partial_path(self.path)
        self._bag_path = self.partial_path / self.path.name  # the bag while it is being written
        self.storage = storage
        self.replace_partial = replace_partial
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._writer: Writer | None = None
        self._connections: dict[str, Connection] = {}
        self._counts: dict[str, int] = {}
        self._last_instruction: str | None = None
        self._image_size: tuple[int, int] | None = None
        self._closed = False
        # A recorder node may write from several executor threads: one message at a time.
        self._lock = threading.RLock()

    # -- life cycle ------------------------------------------------------------------------------

    def open(self) -> EpisodeWriter:
        """Create `NAME.partial/` and register the episode topics."""
        if self._writer is not None or self._closed:
            raise EpisodeWriterError(f"episode writer for {self.path} was already opened")
        if self.path.exists():
            raise EpisodeWriterError(f"{self.path} exists already; an episode is never overwritten")
        if self.partial_path.exists():
            if not self.replace_partial:
                raise EpisodeWriterError(f"{self.partial_path} exists (an unfinished earlier episode)")
            shutil.rmtree(self.partial_path)
        self.partial_path.mkdir(parents=True)
        writer = Writer(self._bag_path, version=BAG_VERSION, storage_plugin=_PLUGINS[self.storage])
        writer.open()
        self._writer = writer
        for spec in self._topics:
            self._connections[spec.name] = writer.add_connection(
                spec.name, spec.msgtype, typestore=_TYPESTORE, offered_qos_profiles=_qos(spec.qos))
            self._counts[spec.name] = 0
        return self

    def close(self, **metadata: Any) -> Path:
        """Finish the bag with `metadata` merged in, and give it its final name; returns that path."""
        with self._lock:
            return self._close(metadata)

    def _close(self, metadata: dict[str, Any]) -> Path:
        writer = self._require_open()
        self.metadata.update(metadata)
        writer.set_custom_data(T.CUSTOM_DATA_KEY, json.dumps(self._final_metadata(), sort_keys=True))
        self._writer = None
        self._closed = True
        try:
            writer.close()
            _fsync_tree(self._bag_path)
            os.rename(self._bag_path, self.path)  # atomic on one file system; fails if path exists
        except BaseException as error:
            self._mark_aborted(error)
            raise
        _fsync_dir(self.path.parent)
        with contextlib.suppress(OSError):  # the episode is complete; an empty leftover is harmless
            self.partial_path.rmdir()
        return self.path

    def abort(self, reason: str = "aborted") -> None:
        """Stop writing; leave `NAME.partial/` with a note saying why, and never a final-named episode."""
        with self._lock:
            writer, self._writer = self._writer, None
            self._closed = True
        if writer is not None:
            try:
                writer.abort()
            finally:
                self._mark_aborted(reason)

    def __enter__(self) -> EpisodeWriter:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.abort(f"{exc_type.__name__ if exc_type else 'error'}: {exc}")
        elif self._writer is not None:
            self.close()

    @property
    def is_open(self) -> bool:
        """Whether messages can be added."""
        return self._writer is not None

    @property
    def message_counts(self) -> dict[str, int]:
        """Messages written so far, per topic."""
        return dict(self._counts)

    # -- messages --------------------------------------------------------------------------------

    def add_image(self, stamp_ns: int, image: np.ndarray, frame_id: str = T.CAMERA_FRAME_ID) -> None:
        """An RGB image (H, W, 3) uint8 as sensor_msgs/Image rgb8."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise EpisodeWriterError(
                f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        height, width = image.shape[:2]
        if self._image_size is None:
            self._image_size = (height, width)
        msg = _TYPESTORE.types[T.CAMERA.msgtype](
            header=self._header(stamp_ns, frame_id), height=height, width=width,
            encoding=T.IMAGE_ENCODING, is_bigendian=0, step=width * 3,
            data=np.ascontiguousarray(image).reshape(-1))
        self._write(T.CAMERA, stamp_ns, msg)

    def add_joint_state(
        self,
        stamp_ns: int,
        names: Sequence[str],
        positions: Iterable[float],
        velocities: Iterable[float] = (),
        efforts: Iterable[float] = (),
    ) -> None:
        """A sensor_msgs/JointState (velocities and efforts may be left empty, as the message allows)."""
        position = np.asarray(list(positions), dtype=np.float64)
        velocity = np.asarray(list(velocities), dtype=np.float64)
        effort = np.asarray(list(efforts), dtype=np.float64)
        for field, values in (("position", position), ("velocity", velocity), ("effort", effort)):
            if values.size not in (0, len(names)) or (field == "position" and values.size != len(names)):
                raise EpisodeWriterError(
                    f"joint state {field} has {values.size} values for {len(names)} joint names")
        msg = _TYPESTORE.types[T.JOINT_STATES.msgtype](
            header=self._header(stamp_ns, T.JOINT_STATES_FRAME_ID), name=[str(n) for n in names],
            position=position, velocity=velocity, effort=effort)
        self._write(T.JOINT_STATES, stamp_ns, msg)

    def add_instruction(self, stamp_ns: int, text: str) -> bool:
        """A std_msgs/String instruction, written only when it differs from the last one; True if written."""
        if text == self._last_instruction:
            return False
        self._last_instruction = text
        self.metadata.setdefault(T.META_INSTRUCTION, text)  # the episode's instruction is its first one
        self._write(T.INSTRUCTION, stamp_ns, _TYPESTORE.types[T.INSTRUCTION.msgtype](data=str(text)))
        return True

    def add_twist(
        self,
        stamp_ns: int,
        linear: Sequence[float],
        angular: Sequence[float] = (0.0, 0.0, 0.0),
        frame_id: str = T.BASE_FRAME_ID,
    ) -> None:
        """A geometry_msgs/TwistStamped end-effector command (MoveIt Servo's delta_twist_cmds)."""
        self._require_kind("ee_delta", "add_twist")
        types = _TYPESTORE.types
        vector = types["geometry_msgs/msg/Vector3"]
        lx, ly, lz = (float(v) for v in linear)
        ax, ay, az = (float(v) for v in angular)
        twist = types["geometry_msgs/msg/Twist"](
            linear=vector(x=lx, y=ly, z=lz), angular=vector(x=ax, y=ay, z=az))
        msg = types[T.EE_TWIST.msgtype](header=self._header(stamp_ns, frame_id), twist=twist)
        self._write(T.EE_TWIST, stamp_ns, msg)

    def add_gripper(self, stamp_ns: int, command: float | Sequence[float]) -> None:
        """A std_msgs/Float64MultiArray gripper command (forward_command_controller style)."""
        if self.action.gripper is None:
            raise EpisodeWriterError(f"{self.path}: this episode's action {self.action.describe()} has no gripper "
                                     f"dimension")
        types = _TYPESTORE.types
        data = np.atleast_1d(np.asarray(command, dtype=np.float64)).reshape(-1)
        layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        self._write(T.GRIPPER, stamp_ns, types[T.GRIPPER.msgtype](layout=layout, data=data))

    def add_joint_command(self, stamp_ns: int, positions: Sequence[float]) -> None:
        """A std_msgs/Float64MultiArray joint command: one position per joint, in the action's joint order."""
        self._require_kind("joint_position", "add_joint_command")
        joints = self.action.arm_names
        values = np.asarray(positions, dtype=np.float64).reshape(-1)
        if values.shape != (len(joints),):
            raise EpisodeWriterError(f"joint command must have {len(joints)} values (for {list(joints)}), "
                                     f"got {values.shape[0]}")
        if not np.isfinite(values).all():
            raise EpisodeWriterError(f"joint command {values.tolist()} is not finite")
        types = _TYPESTORE.types
        layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        self._write(T.JOINT_COMMANDS, stamp_ns, types[T.JOINT_COMMANDS.msgtype](layout=layout, data=values))

    def add_action(self, stamp_ns: int, action: Sequence[float]) -> None:
        """One whole action vector in the contract's order: the arm command plus the gripper command (if any).

        ee_delta: (ee dx, dy, dz, gripper) as a twist plus a gripper command; joint_position: the
        joint positions as one joint command [plus a gripper command].
        """
        contract = self.action
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (contract.dim,):
            raise EpisodeWriterError(f"action must have {contract.dim} values ({list(contract.names)}), "
                                     f"got {action.shape[0]}")
        grip = contract.gripper_index
        arm = np.delete(action, grip) if grip is not None else action
        if contract.kind == "ee_delta":
            self.add_twist(stamp_ns, arm[:3], arm[3:6] if len(arm) == 6 else (0.0, 0.0, 0.0))
        else:
            self.add_joint_command(stamp_ns, arm)
        if grip is not None:
            self.add_gripper(stamp_ns, action[grip : grip + 1])

    def add_serialized(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> None:
        """An already CDR-serialised message (e.g. from a raw rclpy subscription) on an episode topic.

        Instructions are still written only when they change.
        """
        spec = next((s for s in self._topics if s.name == topic), None)
        if spec is None:
            names = [s.name for s in self._topics]
            raise EpisodeWriterError(f"{topic!r} is not an episode topic ({names})")
        if spec is T.INSTRUCTION:  # keep the instruction rules: once, again on change, into metadata
            text = str(_TYPESTORE.deserialize_cdr(bytes(data), spec.msgtype).data)
            if text == self._last_instruction:
                return
            self._last_instruction = text
            self.metadata.setdefault(T.META_INSTRUCTION, text)
        self._write_raw(spec, stamp_ns, data)

    # -- internals -------------------------------------------------------------------------------

    def _require_kind(self, kind: str, method: str) -> None:
        if self.action.kind != kind:
            other = "add_joint_command" if kind == "ee_delta" else "add_twist"
            raise EpisodeWriterError(f"{self.path}: {method} needs an {kind} episode; this one's action is "
                                     f"{self.action.describe()} (use {other} or add_action)")

    def _require_open(self) -> Writer:
        if self._writer is None:
            state = "closed" if self._closed else "not opened"
            raise EpisodeWriterError(f"episode writer for {self.path} is {state}")
        return self._writer

    @staticmethod
    def _header(stamp_ns: int, frame_id: str) -> Any:
        types = _TYPESTORE.types
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        stamp = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def _write(self, spec: T.TopicSpec, stamp_ns: int, msg: Any) -> None:
        self._write_raw(spec, stamp_ns, _TYPESTORE.serialize_cdr(msg, spec.msgtype))

    def _write_raw(self, spec: T.TopicSpec, stamp_ns: int, data: bytes | memoryview) -> None:
        if int(stamp_ns) < 0:
            raise EpisodeWriterError(f"stamp {stamp_ns} ns on {spec.name} is negative")
        with self._lock:
            writer = self._require_open()
            writer.write(self._connections[spec.name], int(stamp_ns), data)
            self._counts[spec.name] += 1

    def _final_metadata(self) -> dict[str, Any]:
        meta = dict(self.metadata)
        meta[T.META_FORMAT] = T.METADATA_FORMAT_VERSION
        meta[T.META_ACTION] = self.action.to_dict()
        meta.setdefault(T.META_LENGTH, self._counts[self.action.command_topic.name])
        meta[T.META_COUNTS] = dict(self._counts)
        if self._image_size is not None:
            meta.setdefault(T.META_IMAGE_SIZE, list(self._image_size))
        try:
            json.dumps(meta)
        except TypeError as error:
            raise EpisodeWriterError(
                f"episode metadata of {self.path} is not JSON-serialisable: {error}") from None
        return meta

    def _mark_aborted(self, reason: object) -> None:
        if self.partial_path.is_dir():
            (self.partial_path / ABORT_NOTE).write_text(f"episode writer aborted: {reason}\n")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
