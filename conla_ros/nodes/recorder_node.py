"""recorder_node: teleoperation recorded as rosbag2 episodes, one per episode, with `rosbags` (no rosbag2 install).

    ros2 run conla_ros recorder_node --ros-args --params-file config/recorder.yaml -p output_dir:=~/episodes
    ros2 service call /recorder_node/start std_srvs/srv/Trigger
    ros2 service call /recorder_node/stop std_srvs/srv/Trigger

Records the episode topics (docs/architecture.md) — camera Image, joint states, instruction, end-effector
twist and gripper commands — as the raw CDR bytes it receives (decoded only to check them, never
re-encoded: a bag holds exactly what was on the wire), each stamped with its receive time, as
`ros2 bag record` does. Bags store the topics under their default names whatever topics the
node subscribed to (the metadata lists those), so training reads robot and simulated episodes
alike (conla_ros.episodes.reader).

QoS, matched to the publishers: camera and joint states best effort (matches sensor-data and
reliable publishers), commands reliable, instruction reliable + transient-local (so the
instruction in force when recording starts is the episode's first message even if it was sent
long before); history deep enough that no message is dropped while a frame is written.

Episodes: services `~/start`, `~/stop`, `~/abort` (std_srvs/Trigger; the reply names the episode)
and `~/set_success` (std_srvs/SetBool: the operator's verdict, which wins over the status topic).
Optionally a new episode starts whenever the instruction changes (`record_on_instruction_change`),
and an episode stops when the episode status reports a new success (`stop_on_success`).
`~/state` (std_msgs/String JSON, transient-local) says whether it records, which episode and how
many messages so far: on every start/stop/abort and twice a second while recording.

Metadata (rosbag2 custom_data, conla_ros.episodes.writer): source "teleop", instruction (the
first one), length (commands), success, task, seed, control rate and domain from `/episode_status`
when something publishes it (success is null — unknown — otherwise, unless set by the operator),
image size, message counts, measured message rates (`rates_hz`: a teleop device or a busy machine
may command slower than the arm's control rate), and the recorder's topics and reason for stopping.

Atomicity: an episode is written as `NAME.partial/` and renamed to `NAME` only when `~/stop`
closes it. A recorder that is killed (SIGKILL, power loss) leaves only `NAME.partial/`, which no
reader lists as an episode. On SIGINT/SIGTERM the open episode is aborted the same way (kept as
`.partial` with an ABORTED.txt saying why) unless `close_on_shutdown` is true. An episode
without a single camera frame is aborted instead of closed: training could not use it. Every
message is decoded with the typestore training reads with before it is written; one that does not
decode is dropped and counted (`undecodable_dropped`), so a closed episode always loads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger

from conla_ros.episodes import topics as T
from conla_ros.episodes.naming import DEFAULT_NAME_FORMAT, check_name_format, free_episode_path
from conla_ros.ros.episode_status import EPISODE_STATUS_QOS, EPISODE_STATUS_TOPIC, EpisodeStatus, EpisodeStatusError
from conla_ros.ros.names import relative
from conla_ros.ros.parameters import ParamSpec, declare_parameters, run_node
from conla_ros.ros.qos import INSTRUCTION_QOS

try:
    from conla_ros.episodes.writer import STORAGES, EpisodeWriter, typestore
except ImportError as error:  # rosbags missing: say which extra brings it
    raise ImportError(f"recorder_node needs the 'record' extra (pip install 'conla_ros[record]'): {error}") from error

NODE_NAME = "recorder_node"
_TYPESTORE = typestore()  # the one training reads episodes with
_MSGTYPES = {spec.name: spec.msgtype for spec in T.EPISODE_TOPICS}
_LOG_THROTTLE_S = 2.0

__all__ = ["NODE_NAME", "PARAMETERS", "RecorderNode", "main"]


def _json_object(text: str) -> str | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not JSON ({error})"
    return None if isinstance(value, dict) else "must be a JSON object"


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("output_dir", "episodes", "directory the episodes are written to (created if missing; ~ expanded)"),
    ParamSpec("name_prefix", "teleop", "{prefix} of name_format"),
    ParamSpec("name_format", DEFAULT_NAME_FORMAT, "episode directory name; fields {prefix} {index} {time} {task} "
              "{seed}", check=check_name_format),
    ParamSpec("storage", "sqlite3", "rosbag2 storage plugin", choices=STORAGES),
    ParamSpec("camera_topic", relative(T.CAMERA.name), "sensor_msgs/Image to record (stored as " + T.CAMERA.name + ")"),
    ParamSpec("joint_states_topic", relative(T.JOINT_STATES.name), "sensor_msgs/JointState to record"),
    ParamSpec("instruction_topic", relative(T.INSTRUCTION.name), "std_msgs/String instruction to record"),
    ParamSpec("ee_twist_topic", relative(T.EE_TWIST.name), "geometry_msgs/TwistStamped commands to record"),
    ParamSpec("gripper_topic", relative(T.GRIPPER.name), "std_msgs/Float64MultiArray gripper commands to record"),
    ParamSpec("status_topic", EPISODE_STATUS_TOPIC, "std_msgs/String JSON episode status (task, seed, success)"),
    ParamSpec("autostart", False, "start an episode as soon as the node is up"),
    ParamSpec("record_on_instruction_change", False, "a new instruction stops the current episode and starts "
              "a new one (the first instruction seen starts one too)"),
    ParamSpec("stop_on_success", False, "stop the episode when the episode status reports a new success"),
    ParamSpec("close_on_shutdown", False, "on SIGINT/SIGTERM keep the open episode as complete (default: "
              "abort it, leaving NAME.partial)"),
    ParamSpec("control_rate_hz", 0.0, "control rate stored in the metadata; 0: the episode status's", low=0.0),
    ParamSpec("extra_metadata", "{}", "JSON object merged into every episode's metadata (operator, robot, ...)",
              check=_json_object),
)

# Subscription QoS: compatible with every publisher of the topic, and deep enough for bursts.
_BEST_EFFORT = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
_RELIABLE = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


class RecorderNode(Node):
    """Records the episode topics into one atomically written rosbag2 episode per start/stop."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self._params = p
        self._out_dir = Path(p["output_dir"]).expanduser()
        self._extra = json.loads(p["extra_metadata"])
        self._writer: EpisodeWriter | None = None
        self._index = 0
        self._started_wall = 0.0
        self._start_status: EpisodeStatus | None = None
        self._status: EpisodeStatus | None = None
        self._success_override: bool | None = None
        self._spans: dict[str, tuple[int, int]] = {}  # topic -> first and last receive stamp, this episode
        self._undecodable: dict[str, int] = {}  # topic -> messages dropped this episode
        self._instruction: tuple[bytes, str] | None = None  # latest (raw CDR, text), written first on start
        self.episodes: list[Path] = []  # closed by this node, in order

        self._topics = {T.CAMERA.name: p["camera_topic"], T.JOINT_STATES.name: p["joint_states_topic"],
                        T.INSTRUCTION.name: p["instruction_topic"], T.EE_TWIST.name: p["ee_twist_topic"],
                        T.GRIPPER.name: p["gripper_topic"]}
        self._subscribe(Image, T.CAMERA.name, _BEST_EFFORT, self._record(T.CAMERA.name))
        self._subscribe(JointState, T.JOINT_STATES.name, _BEST_EFFORT, self._record(T.JOINT_STATES.name))
        self._subscribe(TwistStamped, T.EE_TWIST.name, _RELIABLE, self._record(T.EE_TWIST.name))
        self._subscribe(Float64MultiArray, T.GRIPPER.name, _RELIABLE, self._record(T.GRIPPER.name))
        self._subscribe(String, T.INSTRUCTION.name, INSTRUCTION_QOS, self._on_instruction)
        self.create_subscription(String, p["status_topic"], self._on_status, EPISODE_STATUS_QOS)
        self.create_service(Trigger, "~/start", self._service(lambda: self.start_episode("service")))
        self.create_service(Trigger, "~/stop", self._service(lambda: self.stop_episode("service")))
        self.create_service(Trigger, "~/abort", self._service(lambda: self.abort_episode("aborted by service")))
        self.create_service(SetBool, "~/set_success", self._on_set_success)
        self._state_pub = self.create_publisher(String, "~/state", EPISODE_STATUS_QOS)
        self.create_timer(0.5, lambda: self._writer is not None and self._publish_state())
        self.get_logger().info(f"recording to {self._out_dir} ({p['storage']}); topics: "
                               + ", ".join(f"{name} <- {src}" if name != src else name
                                           for name, src in self._topics.items()))
        self._publish_state()
        if p["autostart"]:
            self.start_episode("autostart")

    # --- subscriptions ------------------------------------------------------------------------

    def _subscribe(self, msg_type: type, name: str, qos: QoSProfile, callback: Callable[[bytes], None]) -> None:
        self.create_subscription(msg_type, self._topics[name], callback, qos, raw=True)

    def _record(self, name: str) -> Callable[[bytes], None]:
        def callback(data: bytes) -> None:
            self._write(name, data)
        return callback

    def _write(self, name: str, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        # Decode it as training will (rosbags): a message that would make the episode unreadable is dropped
        # and counted, never written.
        try:
            msg = _TYPESTORE.deserialize_cdr(data, _MSGTYPES[name])
        except Exception as error:
            self._undecodable[name] = self._undecodable.get(name, 0) + 1
            self.get_logger().warning(f"dropped a {name} message rosbags cannot decode ({error}); "
                                      f"{self._undecodable[name]} so far", throttle_duration_sec=_LOG_THROTTLE_S)
            return
        if name == T.CAMERA.name and T.META_IMAGE_SIZE not in writer.metadata:
            writer.metadata[T.META_IMAGE_SIZE] = [int(msg.height), int(msg.width)]
        stamp = self.get_clock().now().nanoseconds
        try:
            writer.add_serialized(name, stamp, data)
            first, _ = self._spans.get(name, (stamp, stamp))
            self._spans[name] = (first, stamp)
        except Exception as error:  # a full disk or a broken bag: stop this episode, keep the node
            self.get_logger().error(f"writing {name} failed: {error}")
            self.abort_episode(f"write failed on {name}: {error}")

    def _on_instruction(self, data: bytes) -> None:
        try:
            text = str(deserialize_message(data, String).data)
        except Exception as error:
            self.get_logger().warning(f"ignoring an undecodable instruction: {error}", throttle_duration_sec=2.0)
            return
        changed = self._instruction is None or self._instruction[1] != text
        self._instruction = (bytes(data), text)
        if changed and self._params["record_on_instruction_change"]:
            if self._writer is not None:
                self.stop_episode("instruction change")
            self.start_episode("instruction change")  # writes the new instruction first
            return
        self._write(T.INSTRUCTION.name, data)

    def _on_status(self, msg: String) -> None:
        try:
            status = EpisodeStatus.from_json(msg.data)
        except EpisodeStatusError as error:
            self.get_logger().warning(f"ignoring episode status: {error}", throttle_duration_sec=_LOG_THROTTLE_S)
            return
        new_episode = self._status is None or (status.task, status.seed, status.episode) != (
            self._status.task, self._status.seed, self._status.episode)
        self._status = status
        if new_episode:  # ~/state tells an operator (or a test) which arm episode a ~/start would record
            self._publish_state()
        if self._writer is not None and self._params["stop_on_success"] and status.success:
            start = self._start_status
            # Only a success that happened during this recording (not one already there at start).
            if start is None or status.episode != start.episode or not start.success:
                self.stop_episode("success")

    # --- episodes -----------------------------------------------------------------------------

    @property
    def recording(self) -> Path | None:
        """The episode being recorded (its final name), or None."""
        return self._writer.path if self._writer is not None else None

    def _publish_state(self) -> None:
        writer = self._writer
        status = self._status
        state = {"recording": writer is not None, "episode": str(writer.path) if writer else None,
                 "counts": writer.message_counts if writer else {}, "closed": [str(p) for p in self.episodes],
                 "arm": {"task": status.task, "seed": status.seed, "episode": status.episode} if status else None}
        with contextlib.suppress(Exception):  # at shutdown the context may be gone already
            self._state_pub.publish(String(data=json.dumps(state, sort_keys=True)))

    def _publisher_counts(self) -> str:
        return ", ".join(f"{name}: {self.count_publishers(src)}" for name, src in self._topics.items())

    def start_episode(self, reason: str) -> tuple[bool, str]:
        """Open a new episode; (ok, message naming it or saying why not)."""
        if self._writer is not None:
            return False, f"already recording {self._writer.path}; stop or abort it first"
        status = self._status
        now = dt.datetime.now(dt.timezone.utc)
        try:
            self._out_dir.mkdir(parents=True, exist_ok=True)
            path, self._index = free_episode_path(
                self._out_dir, self._params["name_format"], prefix=self._params["name_prefix"], index=self._index,
                when=now, task=status.task if status else "unknown",
                seed=status.seed if status and status.seed is not None else -1)
            metadata = {**self._extra, T.META_SOURCE: "teleop", "started_at": now.isoformat(),
                        "recorder": {"node": self.get_fully_qualified_name(), "topics": self._topics,
                                     "started_by": reason}}
            writer = EpisodeWriter(path, storage=self._params["storage"], metadata=metadata, replace_partial=False)
            writer.open()
        except Exception as error:
            self.get_logger().error(f"cannot start an episode: {error}")
            return False, f"cannot start an episode: {error}"
        self._index += 1
        self._writer, self._start_status, self._success_override = writer, status, None
        self._spans, self._undecodable = {}, {}
        self._started_wall = time.monotonic()
        if self._instruction is not None:  # the instruction in force is the episode's first message
            self._write(T.INSTRUCTION.name, self._instruction[0])
        counts = self._publisher_counts()
        if self.count_publishers(self._topics[T.CAMERA.name]) == 0:
            self.get_logger().warning(f"recording {path.name} but nothing publishes {self._topics[T.CAMERA.name]}")
        self.get_logger().info(f"recording {path} ({reason}); publishers: {counts}")
        self._publish_state()
        return True, f"recording {path}; publishers: {counts}"

    def stop_episode(self, reason: str) -> tuple[bool, str]:
        """Close the episode under its final name with its metadata; (ok, message naming it)."""
        writer = self._writer
        if writer is None:
            return False, "not recording"
        counts = writer.message_counts
        if counts[T.CAMERA.name] == 0:
            self.abort_episode(f"stopped ({reason}) without a single camera frame")
            return False, f"{writer.path.name} had no camera frame ({self._topics[T.CAMERA.name]}): aborted, " \
                          f"left as {writer.partial_path.name}"
        metadata: dict[str, Any] = {T.META_SUCCESS: None}
        status = self._status
        if status is not None:
            metadata.update(status.episode_metadata())
            start = self._start_status
            if start is not None and start.episode != status.episode:
                metadata["status_episode_changed"] = True  # the arm was reset during the recording
        if self._success_override is not None:
            metadata[T.META_SUCCESS] = self._success_override
        if self._params["control_rate_hz"] > 0:
            metadata[T.META_CONTROL_RATE_HZ] = self._params["control_rate_hz"]
        if self._undecodable:
            metadata["undecodable_dropped"] = dict(self._undecodable)
        metadata["duration_s"] = round(time.monotonic() - self._started_wall, 3)
        # Measured message rates: a teleop device or a busy machine may command slower than the control rate.
        metadata["rates_hz"] = {name: round((counts[name] - 1) * 1e9 / (last - first), 2)
                                for name, (first, last) in self._spans.items() if last > first}
        metadata["stopped_by"] = reason
        self._writer = None
        try:
            path = writer.close(**metadata)
        except Exception as error:
            self.get_logger().error(f"closing {writer.path} failed, left as {writer.partial_path}: {error}")
            return False, f"closing {writer.path} failed: {error}"
        self.episodes.append(path)
        self._publish_state()
        self.get_logger().info(f"episode {path} closed ({reason}): {counts[T.EE_TWIST.name]} commands, "
                               f"{counts[T.CAMERA.name]} frames, success {metadata[T.META_SUCCESS]}")
        return True, str(path)

    def abort_episode(self, reason: str) -> tuple[bool, str]:
        """Give up the open episode: only `NAME.partial/` with an ABORTED.txt remains."""
        writer, self._writer = self._writer, None
        if writer is None:
            return False, "not recording"
        try:
            writer.abort(reason)
        except Exception as error:  # the partial stays whatever happens: it is never a dataset entry
            self.get_logger().error(f"aborting {writer.partial_path}: {error}")
        self.get_logger().warning(f"episode {writer.path.name} aborted ({reason}); left as {writer.partial_path}")
        self._publish_state()
        return True, f"aborted; left as {writer.partial_path}"

    def destroy_node(self) -> None:
        """Close or abort an open episode (never leave it half-written), then destroy the node."""
        self.shutdown_recording()
        super().destroy_node()

    def shutdown_recording(self) -> None:
        """What happens to an open episode when the node is asked to exit (see `close_on_shutdown`)."""
        if getattr(self, "_writer", None) is None:  # absent when start-up failed on a parameter
            return
        if self._params["close_on_shutdown"]:
            self.stop_episode("shutdown")
        else:
            self.abort_episode("recorder shut down mid-episode")

    # --- services -----------------------------------------------------------------------------

    @staticmethod
    def _service(action: Callable[[], tuple[bool, str]]) -> Callable[[Any, Any], Any]:
        def handle(request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
            response.success, response.message = action()
            return response
        return handle

    def _on_set_success(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if self._writer is None:
            response.success, response.message = False, "not recording"
            return response
        self._success_override = bool(request.data)
        response.success, response.message = True, f"{self._writer.path.name}: success = {bool(request.data)}"
        return response


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ros2 run conla_ros recorder_node`."""
    return run_node(RecorderNode, NODE_NAME, argv)

if __name__ == "__main__":
    sys.exit(main())
