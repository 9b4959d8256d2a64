"""policy_node: camera + instruction in, safe arm commands out (the on-robot node).

    ros2 launch conla_ros policy.launch.py model_dir:=/path/to/models/NAME output:=ee_twist
    ros2 run conla_ros policy_node --ros-args --params-file config/policy.yaml -p model_dir:=... -p autostart:=true

Loads an exported model directory (`conla_ros.core.runtime.load_policy`; a bad directory ends
start-up with a message naming the file, exit 1) and runs it at `control_rate_hz`:

- in: the camera (`sensor_msgs/Image`, or `CompressedImage` with `image_transport: compressed`;
  sensor-data QoS), the instruction (`std_msgs/String`, transient-local) and, when the model takes
  proprioception, `/joint_states` (reordered to the model's `proprio.names`);
- out: one output mode (`output`): `joint_commands` (Float64MultiArray), `joint_trajectory`
  (JointTrajectory) or `ee_twist` (TwistStamped, MoveIt Servo) plus the gripper command
  (Float64MultiArray) when the action has a gripper dimension (`conla_ros.ros.policy_io`);
- `/diagnostics` (DiagnosticArray) at 1 Hz, and at once when the instruction changes; services
  `~/enable` (SetBool) and `~/stop` (Trigger);
  topic `~/estop` (Bool: true latches the e-stop until `~/enable` true).

The real-time loop. Camera callbacks only check a frame's header (O(1)) and keep the newest one;
nothing queues. The control loop runs in a thread of its own on a steady clock (absolute
deadlines, late ticks counted; the executor only serves callbacks, so no callback queue stands in
front of a tick). It asks the inference thread for a chunk when the `ChunkExecutor` needs one and
a frame newer than the last one used exists; that thread converts the frame, runs the model and
hands the chunk back with the tick its observation was taken at, while the ticks keep playing the
current chunk. So a tick never waits for the model (only, briefly, for the lock that orders
commands against the e-stop). Nor does a fresh chunk wait for a tick: the control loop wakes when
one arrives and runs the next scheduled tick at once, then keeps to its schedule (the rate stays
`control_rate_hz`; only the slot of that one tick moves earlier).

Safety, on every tick: a command is published only when the node is enabled, not e-stopped, has
an instruction, a camera frame younger than `stale_image_timeout`, joint states (when used) and a
good last inference; it is finite, clipped to the action limits and moves at most
`max_delta_per_tick` from the previous command (`conla_ros.core.safety`). When any of that stops
holding, the node stops commanding at once and sends its mode's stop message once (ee_twist: one
zero twist; see policy_io), forgets its chunks and resumes from a fresh inference when inputs are
healthy again. Every refused input is counted by reason in /diagnostics and logged (throttled).
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

# `ros2 run` on a machine without the node's dependencies: one clear line instead of a traceback.
try:
    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import SubscriptionEventCallbacks  # type: ignore[no-redef]
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Bool, String
    from std_srvs.srv import SetBool, Trigger

    from conla_ros.core.chunking import ChunkExecutor, ChunkingConfig
    from conla_ros.core.runtime import (
        InferenceError,
        ModelLoadError,
        ObservationError,
        load_policy,
        resolve_providers,
    )
    from conla_ros.core.safety import (
        InputRejected,
        LatencyWindow,
        RateMeter,
        SafetyFilter,
        check_instruction,
        resolve_limits,
        select_joints,
    )
    from conla_ros.episodes import topics as T
    from conla_ros.ros.image_conversions import ImageConversionError, compressed_to_rgb, image_to_rgb
    from conla_ros.ros.parameters import (
        ParameterError,
        ParamSpec,
        check_parameter_update,
        declare_parameters,
        spin_until_shutdown,
    )
    from conla_ros.ros.policy_io import OUTPUT_MODES, CommandOutput, check_compressed, check_image, plan_output
    from conla_ros.ros.qos import CAMERA_QOS, COMMAND_QOS, INSTRUCTION_QOS
except ModuleNotFoundError as _missing:
    if __name__ != "__main__":
        raise
    print(f"policy_node: cannot start: the Python package {_missing.name!r} is not installed; install the "
          "'robot' and 'ros' extras (pip install 'conla_ros[robot,ros]') or source a ROS 2 install", file=sys.stderr)
    sys.exit(4)

NODE_NAME = "policy_node"
DIAGNOSTICS_TOPIC = "/diagnostics"
_LOG_THROTTLE_S = 2.0
# A frame that arrived less than this many ticks ago is fresh enough to start an inference at a tick;
# an older one is passed over for the next frame while that can still come in time (_next_frame_in_time).
_FRESH_FRAME_TICKS = 0.25
EXIT_MODEL_ERROR = 1
EXIT_PARAMETER_ERROR = 2
EXIT_MISSING_DEPENDENCY = 4

__all__ = ["ARRAY_PARAMETERS", "PARAMETERS", "STATES", "PolicyNode", "main"]

STATES = ("disabled", "waiting", "running", "stale", "fault")
_ANY_PUBLISHER_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                                durability=DurabilityPolicy.VOLATILE)
_LEVELS = {"disabled": DiagnosticStatus.OK, "running": DiagnosticStatus.OK, "waiting": DiagnosticStatus.WARN,
           "stale": DiagnosticStatus.WARN, "fault": DiagnosticStatus.ERROR}

PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model_dir", "", "exported model directory (policy.onnx + model.yaml + instruction encoder)",
              check=lambda v: None if v.strip() else "must name the exported model directory"),
    ParamSpec("output", "ee_twist", "output mode: joint_commands (Float64MultiArray, forward_command_controller), "
              "joint_trajectory (JointTrajectory, joint_trajectory_controller) or ee_twist (TwistStamped, MoveIt "
              "Servo); must fit the model's action kind", choices=OUTPUT_MODES),
    ParamSpec("image_transport", "raw", "raw: sensor_msgs/Image on camera_topic; compressed: "
              "sensor_msgs/CompressedImage on compressed_camera_topic", choices=("raw", "compressed")),
    ParamSpec("camera_topic", T.CAMERA.name, "sensor_msgs/Image input (sensor-data QoS)"),
    ParamSpec("compressed_camera_topic", T.CAMERA.name + "/compressed", "sensor_msgs/CompressedImage input "
              "(jpeg or png) when image_transport is compressed"),
    ParamSpec("instruction_topic", T.INSTRUCTION.name, "std_msgs/String instruction input (transient-local)"),
    ParamSpec("joint_states_topic", T.JOINT_STATES.name, "sensor_msgs/JointState input (proprioception)"),
    ParamSpec("joint_commands_topic", "/forward_command_controller/commands", "std_msgs/Float64MultiArray "
              "output in joint_commands mode"),
    ParamSpec("joint_trajectory_topic", "/joint_trajectory_controller/joint_trajectory", "trajectory_msgs/"
              "JointTrajectory output in joint_trajectory mode"),
    ParamSpec("ee_twist_topic", T.EE_TWIST.name, "geometry_msgs/TwistStamped output in ee_twist mode"),
    ParamSpec("gripper_topic", T.GRIPPER.name, "std_msgs/Float64MultiArray gripper output (one value), when the "
              "action has a gripper dimension"),
    ParamSpec("twist_frame_id", T.BASE_FRAME_ID, "header.frame_id of the TwistStamped commands (MoveIt Servo's "
              "command frame)"),
    ParamSpec("control_rate_hz", 0.0, "control tick rate; 0: the model's control_rate_hz (a different rate is "
              "allowed, with a warning: the model was trained at its own rate)", low=0.0, high=1000.0),
    ParamSpec("replan_every", 0, "ticks between inferences (1 .. chunk length); 0: half the chunk length",
              low=0, high=10000),
    ParamSpec("temporal_ensembling", False, "average every chunk covering a tick (ACT) instead of the newest"),
    ParamSpec("ensemble_decay", 0.01, "ACT ensemble weight exp(-m i), i = 0 for the oldest chunk",
              low=-10.0, high=10.0),
    ParamSpec("blend_ticks", 3, "ticks over which a new chunk's offset from the old plan is blended out "
              "(0: switch at once)", low=0, high=1000),
    ParamSpec("stale_image_timeout", 0.5, "seconds without a valid camera frame after which commands stop",
              low=0.001, high=60.0, read_only=False),
    ParamSpec("joint_states_timeout", 0.5, "seconds without valid joint states after which commands stop "
              "(when the model uses proprioception)", low=0.001, high=60.0, read_only=False),
    ParamSpec("use_proprio", True, "feed /joint_states to a model that takes proprioception (false refuses such "
              "a model at start); ignored for a model without it"),
    ParamSpec("providers", "auto", "onnxruntime execution providers: auto (TensorRT, CUDA, CPU: the first that "
              "works) or a comma-separated list, e.g. cuda,cpu",
              check=lambda v: None if v.strip() else "must be auto or a list of providers"),
    ParamSpec("threads", 0, "onnxruntime intra-op threads; 0: onnxruntime's default", low=0, high=256),
    ParamSpec("autostart", False, "start enabled; false: commands start only after ~/enable true"),
    ParamSpec("max_image_pixels", 4096 * 4096, "camera frames with more pixels are refused", low=1,
              high=2**31 - 1),
    ParamSpec("max_instruction_length", 1000, "instructions with more characters are refused", low=1,
              high=1_000_000),
    ParamSpec("instruction_ascii_only", True, "refuse non-ASCII instructions (the shipped instruction encoder "
              "is English)"),
)


@dataclass(frozen=True)
class ArrayParam:
    """A list-valued parameter (empty: the documented default); declared by type, values checked by the node."""

    name: str
    type: Parameter.Type
    description: str
    read_only: bool = True


ARRAY_PARAMETERS: tuple[ArrayParam, ...] = (
    ArrayParam("action_min", Parameter.Type.DOUBLE_ARRAY, "lower command limit per action dimension (model order); "
               "empty: model.yaml action_space.low", read_only=False),
    ArrayParam("action_max", Parameter.Type.DOUBLE_ARRAY, "upper command limit per action dimension; empty: "
               "model.yaml action_space.high", read_only=False),
    ArrayParam("max_delta_per_tick", Parameter.Type.DOUBLE_ARRAY, "largest change of a command per control tick: "
               "one value for every dimension or one per dimension; empty: no rate limit", read_only=False),
    ArrayParam("joint_names", Parameter.Type.STRING_ARRAY, "joint names of the joint output modes, in action "
               "order; empty: model.yaml action_space.names without the gripper"),
)
_SCALAR_NAMES = {spec.name for spec in PARAMETERS}
_ARRAY_BY_NAME = {spec.name: spec for spec in ARRAY_PARAMETERS}


def _declare_arrays(node: Node) -> dict[str, list]:
    values: dict[str, list] = {}
    for spec in ARRAY_PARAMETERS:
        descriptor = ParameterDescriptor(name=spec.name, description=spec.description, read_only=spec.read_only,
                                         type=spec.type.value)
        try:
            node.declare_parameter(spec.name, spec.type, descriptor)
        except Exception as error:  # e.g. [1, 2] (integers) given for a list of doubles
            hint = " (write numbers with a decimal point: [1.0, 2.0])" if spec.type == Parameter.Type.DOUBLE_ARRAY \
                else ""
            raise ParameterError(f"parameter {spec.name}: {error}{hint}") from None
        values[spec.name] = _array_value(node, spec.name)
    return values


def _array_value(node: Node, name: str) -> list:
    try:
        value = node.get_parameter(name).value
    except rclpy.exceptions.ParameterUninitializedException:
        return []  # an empty list in YAML or on the command line leaves the parameter unset
    return list(value) if value is not None else []


class PolicyNode(Node):
    """Camera + instruction (+ joint states) in, safe commands out; see the module docstring."""

    def __init__(self, *, start_control_loop: bool = True, **kwargs: Any) -> None:
        """`start_control_loop=False` leaves the ticks to the caller (tests call `_tick()` themselves)."""
        super().__init__(NODE_NAME, **kwargs)
        p = declare_parameters(self, PARAMETERS)
        arrays = _declare_arrays(self)
        self._params = p
        log = self.get_logger()

        try:
            resolve_providers(p["providers"])
        except ValueError as error:  # an unknown provider name: a parameter error, not the model's
            raise ParameterError(f"parameter providers={p['providers']!r}: {error}") from None
        self.policy = load_policy(p["model_dir"], providers=p["providers"], threads=p["threads"] or None)
        spec = self.policy.spec
        space = spec.action_space
        self.spec = spec
        try:
            self.layout = plan_output(p["output"], space.kind, space.names, space.gripper, arrays["joint_names"])
            limits = resolve_limits(space.low, space.high, space.names, arrays["action_min"], arrays["action_max"],
                                    arrays["max_delta_per_tick"])
        except ValueError as error:
            raise ParameterError(f"{error} (model {spec.name}, action {list(space.names)}, kind {space.kind})") \
                from None
        self._proprio_names: tuple[str, ...] = ()
        if spec.proprio is not None:
            if not p["use_proprio"]:
                raise ParameterError(f"parameter use_proprio=False: model {spec.name} needs proprioception "
                                     f"{list(spec.proprio.names)} from {p['joint_states_topic']}")
            self._proprio_names = spec.proprio.names
        rate = p["control_rate_hz"] or spec.control_rate_hz
        if p["control_rate_hz"] and abs(rate - spec.control_rate_hz) > 1e-6:
            log.warning(f"control_rate_hz={rate:g} differs from the model's {spec.control_rate_hz:g} Hz: actions "
                        "were trained for the model's rate")
        self.rate_hz = rate
        self.period_s = 1.0 / rate
        replan = p["replan_every"] or max(1, spec.chunk_length // 2)
        if replan > spec.chunk_length:
            raise ParameterError(f"parameter replan_every={replan} must be <= the model's chunk length "
                                 f"{spec.chunk_length}")
        starvation = "none" if self.layout.velocity_like else "hold"
        self.executor_config = ChunkingConfig(replan_every=replan, temporal_ensembling=p["temporal_ensembling"],
                                              ensemble_decay=p["ensemble_decay"], blend_ticks=p["blend_ticks"],
                                              on_starvation=starvation)
        self.chunks = ChunkExecutor(self.executor_config, spec.chunk_length, spec.action_dim)
        self.safety = SafetyFilter(limits)
        if self.layout.velocity_like:
            self.safety.reset(np.zeros(spec.action_dim))  # the first command ramps up from rest
        # Joint-position modes start the rate limit from the arm's measured position (/joint_states).
        self._position_joints = self.layout.joint_names if space.kind == "joint_position" else ()
        self._measured: np.ndarray | None = None

        # --- state shared between callbacks, the control tick and the inference thread -------------
        self._lock = threading.RLock()  # guards the state below and every command publication
        self._enabled = bool(p["autostart"])
        self._estop = False
        self._instruction: str | None = None
        self._image_msg: Any = None  # the newest header-checked frame, not converted yet
        self._image_seq = 0
        self._image_time: float | None = None  # monotonic receive time of the newest valid frame
        self._used_seq = 0  # frame sequence number of the last inference started
        self._joints: np.ndarray | None = None
        self._joints_time: float | None = None
        self._joints_reason = "no joint states yet"
        self._fault: str | None = None  # the last inference's failure, until one succeeds
        self._epoch = 0  # bumped whenever chunks are forgotten: results of older inferences are dropped
        self._latest_chunk: tuple[int, int, np.ndarray] | None = None  # (epoch, obs_tick, actions)
        self._commanding = False  # a motion command went out since the last stop
        self._state, self._reason = "disabled", "starting"
        self._request: tuple[int, int, Any, int, str, np.ndarray | None] | None = None  # see _infer
        self._busy = False
        self._recent_inference_s = 0.0
        self.rejected: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.inference_ms = LatencyWindow(5000)
        self.image_to_command_ms = LatencyWindow(5000)  # camera stamp -> first command of its chunk
        self.frame_delay_ms = LatencyWindow(5000)  # camera stamp -> the camera callback (transport)
        self._image_stamp_ns = 0
        self._fresh_chunk_stamp_ns: int | None = None
        self.camera_rate = RateMeter(2.0)
        self.tick_rate = RateMeter(2.0)
        self._last_tick: float | None = None
        self._wake = threading.Condition(self._lock)
        self._closing = False

        # --- ROS interface ---------------------------------------------------------------------------
        inputs = ReentrantCallbackGroup()
        self.output = CommandOutput(self, self.layout, topic=self._output_topic(), gripper_topic=p["gripper_topic"],
                                    qos=COMMAND_QOS, frame_id=p["twist_frame_id"], period_s=self.period_s)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        if p["image_transport"] == "compressed":
            self.create_subscription(CompressedImage, p["compressed_camera_topic"], self._on_compressed, CAMERA_QOS,
                                     callback_group=inputs)
        else:
            self.create_subscription(Image, p["camera_topic"], self._on_image, CAMERA_QOS, callback_group=inputs)
        # A publisher whose QoS cannot match (a volatile instruction publisher) connects to nothing:
        # say so loudly and count it instead of waiting for an instruction in silence.
        incompatible = SubscriptionEventCallbacks(incompatible_qos=lambda info: self._reject(
            "instruction_incompatible_qos", f"a publisher on {p['instruction_topic']} offers QoS this node cannot "
            f"receive (policy {info.last_policy_kind}); publish reliable + transient_local, e.g. `ros2 topic pub "
            f"--once --qos-durability transient_local --qos-reliability reliable {p['instruction_topic']} "
            f"std_msgs/msg/String \"data: open the drawer\"`"))
        self.create_subscription(String, p["instruction_topic"], self._on_instruction, INSTRUCTION_QOS,
                                 callback_group=inputs, event_callbacks=incompatible)
        if self._proprio_names or self._position_joints:
            self.create_subscription(JointState, p["joint_states_topic"], self._on_joint_states, CAMERA_QOS,
                                     callback_group=inputs)
        # The e-stop is subscribed twice, reliable and best-effort, so that any publisher reaches it
        # (a best-effort one would match no reliable subscription); the callback is idempotent.
        for qos in (COMMAND_QOS, _ANY_PUBLISHER_QOS):
            self.create_subscription(Bool, "~/estop", self._on_estop, qos, callback_group=inputs)
        self.create_service(SetBool, "~/enable", self._on_enable, callback_group=inputs)
        self.create_service(Trigger, "~/stop", self._on_stop, callback_group=inputs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._chunk_arrived = threading.Event()  # set by the inference thread: wakes the control loop early
        self._thread = threading.Thread(target=self._inference_loop, name="policy_inference", daemon=True)
        self._thread.start()
        self._stop_loop = threading.Event()
        self._loop = threading.Thread(target=self._control_loop, name="policy_control", daemon=True)
        self._diag_timer = self.create_timer(1.0, self.publish_diagnostics, callback_group=inputs)
        log.info(f"model {spec.name} on {self.policy.provider} ({p['model_dir']}); output {self.layout.mode} on "
                 f"{self._output_topic()} (stop: {self.layout.stop_sends}); control {rate:g} Hz, chunk "
                 f"{spec.chunk_length}, replan every {replan}; "
                 f"{'enabled (autostart)' if self._enabled else 'disabled until ~/enable'}")
        if start_control_loop:
            self._loop.start()

    def _output_topic(self) -> str:
        return self._params[f"{self.layout.mode}_topic"]

    # --- inputs ----------------------------------------------------------------------------------------

    def _reject(self, reason: str, message: str) -> None:
        with self._lock:
            self.rejected[reason] += 1
            count = self.rejected[reason]
        self.get_logger().warning(f"refused ({reason}, {count} so far): {message}",
                                  throttle_duration_sec=_LOG_THROTTLE_S)

    def _store_frame(self, msg: Any) -> None:
        now = time.monotonic()
        now_ns = self.get_clock().now().nanoseconds
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        # The camera's stamp (includes transport) when it is plausible, else the receive time.
        stamp_ns = stamp if 0 <= now_ns - stamp < 10**10 else now_ns
        self.frame_delay_ms.add((now_ns - stamp_ns) / 1e6)
        with self._lock:
            if self._image_msg is not None and self._image_seq > self._used_seq:
                self.counters["dropped_frames"] += 1  # replaced before an inference took it
            self._image_msg = msg
            self._image_seq += 1
            self._image_time = now
            self._image_stamp_ns = stamp_ns
            # A chunk is due: start the inference on this frame now rather than at the next tick.
            if self._health(now)[0] == "running" and (self._fault is not None or self.chunks.needs_chunk()):
                self._request_inference()
        self.camera_rate.mark(now)

    def _on_image(self, msg: Image) -> None:
        try:
            check_image(msg, self._params["max_image_pixels"])
        except InputRejected as error:
            self._reject(error.reason, str(error))
            return
        self._store_frame(msg)

    def _on_compressed(self, msg: CompressedImage) -> None:
        try:
            check_compressed(msg, max_bytes=self._params["max_image_pixels"] * 3)
        except InputRejected as error:
            self._reject(error.reason, str(error))
            return
        self._store_frame(msg)

    def _on_instruction(self, msg: String) -> None:
        try:
            text = check_instruction(msg.data, max_length=self._params["max_instruction_length"],
                                     ascii_only=self._params["instruction_ascii_only"])
        except InputRejected as error:
            # The operator asked for something we cannot follow: stop rather than go on with the old task.
            with self._lock:
                changed = self._instruction is not None
                self._instruction = None
                self._forget_chunks()
            self._reject(error.reason, f"{error}" + ("; commands stop until a valid instruction" if changed else ""))
            return
        with self._lock:
            if text == self._instruction:
                return
            self._instruction = text
            self._forget_chunks()  # chunks of another task must not play on
        self.get_logger().info(f"instruction: {text!r}")
        self.publish_diagnostics()  # at once, not at the next 1 Hz report: a supervisor waits on it

    def _on_joint_states(self, msg: JointState) -> None:
        if self._proprio_names:
            try:
                values = select_joints(msg.name, msg.position, self._proprio_names)
            except (InputRejected, TypeError, ValueError) as error:
                reason = getattr(error, "reason", "joint_states_malformed")
                with self._lock:
                    self._joints_reason = str(error)
                self._reject(reason, str(error))
                return
            with self._lock:
                self._joints, self._joints_time = values, time.monotonic()
        if self._position_joints:
            try:
                arm = select_joints(msg.name, msg.position, self._position_joints)
            except (InputRejected, TypeError, ValueError) as error:
                if not self._proprio_names:
                    self._reject(getattr(error, "reason", "joint_states_malformed"), str(error))
                return
            measured = np.full(self.spec.action_dim, np.nan)
            measured[list(self.layout.arm)] = arm
            with self._lock:
                self._measured = measured

    # --- enable / e-stop ---------------------------------------------------------------------------------

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            self.estop("e-stop topic")

    def estop(self, source: str) -> None:
        """Latch the e-stop and stop at once (the stop message goes out now, not at the next tick)."""
        with self._lock:
            already = self._estop
            self._estop = True
            self._enabled = False
            self._halt("e-stop")
            self._set_state("disabled", f"e-stop ({source}); ~/enable true to resume")
        if not already:
            self.get_logger().warning(f"E-STOP from {source}: commands stopped until ~/enable true")

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.estop("~/stop service")
        response.success, response.message = True, "stopped; latched until ~/enable true"
        return response

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._lock:
            if request.data:
                was_estop = self._estop
                self._estop, self._enabled = False, True
                response.message = "enabled" + (" (e-stop released)" if was_estop else "")
            else:
                self._enabled = False
                self._halt("disabled")
                self._set_state("disabled", "disabled by ~/enable false")
                response.message = "disabled"
        response.success = True
        self.get_logger().info(f"~/enable {request.data}: {response.message}")
        return response

    # --- parameters at run time ------------------------------------------------------------------------

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        result = check_parameter_update(PARAMETERS, parameters)
        if not result.successful:
            return result
        arrays = {p.name: list(p.value) if p.value is not None else [] for p in parameters if p.name in _ARRAY_BY_NAME}
        if not arrays:
            for parameter in parameters:
                if parameter.name in ("stale_image_timeout", "joint_states_timeout"):
                    with self._lock:
                        self._params[parameter.name] = float(parameter.value)
            return result
        if "joint_names" in arrays:
            return SetParametersResult(successful=False, reason="joint_names is read-only")
        current = {name: _array_value(self, name) for name in ("action_min", "action_max", "max_delta_per_tick")}
        current.update(arrays)
        space = self.spec.action_space
        try:
            limits = resolve_limits(space.low, space.high, space.names, current["action_min"], current["action_max"],
                                    current["max_delta_per_tick"])
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        with self._lock:
            self.safety.set_limits(limits)
            for parameter in parameters:
                if parameter.name in ("stale_image_timeout", "joint_states_timeout"):
                    self._params[parameter.name] = float(parameter.value)
        self.get_logger().info(f"limits now min {limits.low.tolist()} max {limits.high.tolist()} "
                               f"max change/tick {limits.max_delta.tolist()}")
        return SetParametersResult(successful=True)

    # --- the control tick --------------------------------------------------------------------------------

    def _health(self, now: float) -> tuple[str, str]:
        """(state, reason) of the inputs, ignoring inference: disabled, waiting, stale or running."""
        if self._estop:
            return "disabled", "e-stop latched; ~/enable true to resume"
        if not self._enabled:
            return "disabled", "disabled; ~/enable true to start"
        if self._instruction is None:
            return "waiting", f"no valid instruction on {self._params['instruction_topic']}"
        if self._image_time is None:
            return "waiting", "no camera frame yet"
        age = now - self._image_time
        if age > self._params["stale_image_timeout"]:
            return "stale", f"camera stale: last valid frame {age:.2f} s ago (timeout " \
                            f"{self._params['stale_image_timeout']:g} s)"
        if self._proprio_names:
            if self._joints_time is None:
                return "waiting", f"no usable joint states: {self._joints_reason}"
            age = now - self._joints_time
            if age > self._params["joint_states_timeout"]:
                return "stale", f"joint states stale: last valid {age:.2f} s ago ({self._joints_reason})"
        if self._position_joints and self.safety.previous is None and self._measured is None and \
                np.isfinite(self.safety.limits.max_delta).any():
            return "waiting", f"no joint states for {list(self._position_joints)} on " \
                              f"{self._params['joint_states_topic']}: the rate limit needs the arm's position to start"
        return "running", ""

    def _control_loop(self) -> None:
        """The control ticks, on a steady clock, in a thread of their own (no executor queue in front of them).

        Deadlines are absolute (no drift); a tick that comes more than half a period late counts as
        missed, and the schedule restarts from now instead of bursting to catch up. A fresh chunk
        does not wait for its slot: its first command goes out when it arrives, in place of the next
        scheduled tick, and the schedule goes on from that slot (so the rate stays `control_rate_hz`
        and image -> command latency loses the wait for the tick, up to one period).
        """
        deadline = time.monotonic()
        while not self._stop_loop.is_set():
            deadline += self.period_s
            delay = deadline - time.monotonic()
            if delay > 0:
                if self._wait_for_slot_or_fresh_chunk(deadline):
                    return
            elif -delay > 0.5 * self.period_s:
                self.counters["missed_ticks"] += 1 + int(-delay / self.period_s)
                deadline = time.monotonic()
            try:
                self._tick()
            except Exception as error:  # a bug must not leave the arm moving: stop, report, go on
                self.counters["tick_errors"] += 1
                with self._lock:
                    self._fault = f"control tick failed: {type(error).__name__}: {error}"
                    with contextlib.suppress(Exception):
                        self._halt(self._fault)
                self.get_logger().error(self._fault, throttle_duration_sec=_LOG_THROTTLE_S)

    def _wait_for_slot_or_fresh_chunk(self, deadline: float) -> bool:
        """Sleep until `deadline` or until a chunk no command has used yet arrives; True when stopping."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._stop_loop.is_set()
            if self._chunk_arrived.wait(remaining):
                self._chunk_arrived.clear()
                if self._stop_loop.is_set():
                    return True
                with self._lock:  # a chunk that arrived during the last tick was used by it: keep waiting
                    if self._fresh_chunk_stamp_ns is not None:
                        self.counters["early_ticks"] += 1
                        return False

    def _tick(self) -> None:
        now = time.monotonic()
        self._last_tick = now
        self.tick_rate.mark(now)
        with self._lock:
            state, reason = self._health(now)
            if state != "running":
                self._halt(reason)
                self._set_state(state, reason)
                return
            if self._fault is not None or self.chunks.needs_chunk():
                # Prefer the next frame: the camera callback starts the inference when it arrives, which
                # keeps image -> command short. Take a frame that has waited only when it is a fraction
                # of a tick old, or when the next one would come too late to keep the chunks going.
                fresh = self._image_time is not None and now - self._image_time < _FRESH_FRAME_TICKS * self.period_s
                if fresh or self._fault is not None or not self._next_frame_in_time(now):
                    self._request_inference()
            if self._fault is not None:
                self._halt(self._fault)
                self._set_state("fault", self._fault)
                return
            step = self.chunks.step()
            if step.action is None:
                self._halt("starved" if step.starved else "", quiet=True)
                self.counters["starved_ticks"] += int(step.starved)
                self._set_state("waiting", "waiting for the model's next chunk" if step.starved
                                else "waiting for the first chunk")
                return
            if self.safety.previous is None and self._measured is not None:
                self.safety.reset(self._measured)  # joint positions: the first command ramps from where the arm is
            command = self.safety.apply(step.action)
            if command is None:  # a non-finite action: the model's fault, never published
                self._fault = "non-finite action from the chunk executor"
                self._halt(self._fault)
                self._set_state("fault", self._fault)
                return
            plan = None
            if self.layout.mode == "joint_trajectory":
                plan = self.safety.plan(command, self._rest_of_chunk(step.tick))
            self.output.publish(command, plan)
            if self._fresh_chunk_stamp_ns is not None:
                self.image_to_command_ms.add((self.get_clock().now().nanoseconds - self._fresh_chunk_stamp_ns) / 1e6)
                self._fresh_chunk_stamp_ns = None
            self._commanding = True
            self._set_state("running", "")

    def _next_frame_in_time(self, now: float) -> bool:
        """Whether the camera's next frame, at its measured rate, can still be turned into a chunk (with
        the recent worst inference time and a tick to spare) before the current chunk runs out."""
        rate = self.camera_rate.rate(now)
        if self._image_time is None or rate <= 0.0:
            return False
        next_frame_in = self._image_time + 1.0 / rate - now
        needed = max(next_frame_in, 0.0) + self._recent_inference_s + self.period_s
        return needed < self.chunks.ticks_left() * self.period_s

    def _rest_of_chunk(self, tick: int) -> np.ndarray:
        chunk = self._latest_chunk
        if chunk is None or chunk[0] != self._epoch:
            return np.zeros((0, self.spec.action_dim))
        _, obs_tick, actions = chunk
        return actions[max(0, tick - obs_tick + 1):]

    def _forget_chunks(self) -> None:
        """Drop every chunk (caller holds the lock): the next command comes from a fresh inference."""
        self._epoch += 1
        self.chunks.reset()
        self._latest_chunk = None
        self._used_seq = self._image_seq  # never act on a frame from before this point
        self._fresh_chunk_stamp_ns = None
        self.safety.reset(self._restart_point())

    def _restart_point(self) -> np.ndarray | None:
        """Where the rate limit starts after a stop: rest for velocity-like commands; for positions the
        measured joint positions, else the last command (what the controller still holds)."""
        if self.layout.velocity_like:
            return np.zeros(self.spec.action_dim)
        if self._measured is not None:
            return self._measured.copy()
        return self.safety.previous

    def _halt(self, reason: str, quiet: bool = False) -> None:
        """Stop commanding (caller holds the lock): the mode's stop message once, chunks forgotten."""
        if not self._commanding and self._latest_chunk is None and self.chunks.tick == 0:
            return
        if self._commanding:
            if self.output.publish_stop():
                self.counters["stop_messages"] += 1
            if not quiet:
                self.counters["stops"] += 1
        self._commanding = False
        if quiet:  # starved: keep the chunks (the next one is on its way), restart the rate limit from rest
            if self.layout.velocity_like:
                self.safety.reset(np.zeros(self.spec.action_dim))
            return
        self._epoch += 1
        self.chunks.reset()
        self._latest_chunk = None
        self.safety.reset(self._restart_point())
        self._fresh_chunk_stamp_ns = None

    def _set_state(self, state: str, reason: str) -> None:
        if state != self._state:
            log = self.get_logger()
            text = f"state {self._state} -> {state}" + (f": {reason}" if reason else "")
            if state in ("running", "disabled"):
                log.info(text)
            else:
                log.warning(text)
        self._state, self._reason = state, reason

    # --- inference ---------------------------------------------------------------------------------------

    def _request_inference(self) -> None:
        """Hand the newest unused frame to the inference thread (caller holds the lock); never waits.

        The chunk is aligned to when the frame arrived (action 0 belongs to the tick of the frame, as
        in the training data): a frame that waited k ticks gets obs_tick = tick - k, and the executor
        skips the actions already past.
        """
        if self._busy or self._image_seq <= self._used_seq or self._instruction is None:
            return
        proprio = self._joints.copy() if self._proprio_names and self._joints is not None else None
        age_ticks = int(max(0.0, time.monotonic() - (self._image_time or 0.0)) / self.period_s)
        obs_tick = self.chunks.tick - min(age_ticks, self.spec.chunk_length)
        self._request = (self._epoch, obs_tick, self._image_msg, self._image_stamp_ns, self._instruction, proprio)
        self._used_seq = self._image_seq
        self._busy = True
        self._wake.notify()

    def _inference_loop(self) -> None:
        while True:
            with self._lock:
                while self._request is None and not self._closing:
                    self._wake.wait(timeout=0.5)
                if self._closing:
                    return
                request, self._request = self._request, None
            try:
                self._infer(*request)
            except Exception as error:  # never let the thread die: a fault the node reports
                self._inference_failed("inference_error", f"{type(error).__name__}: {error}", request[0])
            finally:
                with self._lock:
                    self._busy = False

    def _infer(self, epoch: int, obs_tick: int, msg: Any, stamp_ns: int, instruction: str,
               proprio: np.ndarray | None) -> None:
        start = time.perf_counter()
        try:
            image = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ImageConversionError as error:
            self._inference_failed("image_conversion", str(error), epoch, input_error=True)
            return
        obs: dict[str, Any] = {"image": image, "instruction": instruction}
        if proprio is not None:
            obs["proprio"] = proprio
        try:
            result = self.policy.infer(obs)
        except ObservationError as error:
            self._inference_failed("observation", str(error), epoch, input_error=True)
            return
        except InferenceError as error:
            reason = "inference_non_finite" if "non-finite" in str(error) else "inference_output"
            self._inference_failed(reason, str(error), epoch)
            return
        actions = np.asarray(result["actions"], dtype=np.float64)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        with self._lock:
            self.inference_ms.add(elapsed_ms)
            # A slowly forgotten maximum: how long the next inference may take, for _next_frame_in_time.
            self._recent_inference_s = max(elapsed_ms / 1e3, 0.95 * self._recent_inference_s)
            self.counters["inferences"] += 1
            if epoch != self._epoch:
                self.counters["chunks_discarded"] += 1  # the node stopped or the task changed meanwhile
                return
            try:
                accepted = self.chunks.add_chunk(actions, obs_tick)
            except ValueError as error:
                self._fault = f"chunk refused: {error}"
                return
            if accepted:
                self._latest_chunk = (epoch, obs_tick, actions)
                self._fresh_chunk_stamp_ns = stamp_ns
                self._chunk_arrived.set()  # the control loop acts on it now rather than at the next slot
            else:
                self.counters["chunks_late"] += 1
            self._fault = None

    def _inference_failed(self, reason: str, message: str, epoch: int, input_error: bool = False) -> None:
        """Count it; a failed inference stops commands (fault) until one succeeds."""
        with self._lock:
            self.rejected[reason] += 1
            count = self.rejected[reason]
            if epoch == self._epoch:
                self._fault = f"inference failed ({reason}): {message}"
        what = "frame refused" if input_error else "inference failed"
        self.get_logger().error(f"{what} ({reason}, {count} so far): {message}", throttle_duration_sec=_LOG_THROTTLE_S)

    # --- diagnostics -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The node's figures, as /diagnostics reports them."""
        with self._lock:
            latency = self.inference_ms.summary()
            values: dict[str, Any] = {
                "state": self._state,
                "reason": self._reason,
                "model": self.spec.name,
                "provider": self.policy.provider,
                "output": self.layout.mode,
                "enabled": self._enabled,
                "estop": self._estop,
                "instruction": self._instruction or "",
                "inference_p50_ms": latency["p50"],
                "inference_p99_ms": latency["p99"],
                "image_to_command_p50_ms": self.image_to_command_ms.percentile(50),
                "image_to_command_p99_ms": self.image_to_command_ms.percentile(99),
                "frame_delay_p50_ms": self.frame_delay_ms.percentile(50),
                "frame_delay_p99_ms": self.frame_delay_ms.percentile(99),
                "inferences": self.counters["inferences"],
                "camera_rate_hz": round(self.camera_rate.rate(), 2),
                "control_rate_hz": round(self.tick_rate.rate(), 2),
                "control_rate_target_hz": self.rate_hz,
                "frames_received": self.camera_rate.count,
                "dropped_frames": self.counters["dropped_frames"],
                "missed_ticks": self.counters["missed_ticks"],
                "starved_ticks": self.counters["starved_ticks"],
                "early_ticks": self.counters["early_ticks"],
                "chunks_late": self.counters["chunks_late"],
                "chunks_discarded": self.counters["chunks_discarded"],
                "executor_dropped_stale": self.chunks.dropped_stale,
                "commands": self.output.published,
                "stops": self.counters["stops"],
                "stop_messages": self.counters["stop_messages"],
                "clipped": self.safety.counters["clipped"],
                "rate_limited": self.safety.counters["rate_limited"],
                "rejected_total": sum(self.rejected.values()),
            }
            values.update({f"rejected.{reason}": count for reason, count in sorted(self.rejected.items())})
        return values

    def publish_diagnostics(self) -> None:
        values = self.status()
        status = DiagnosticStatus(level=_LEVELS[values["state"]], name=f"{self.get_name()}: policy",
                                  message=values["state"] + (f": {values['reason']}" if values["reason"] else ""),
                                  hardware_id=values["model"])
        status.values = [KeyValue(key=key, value=_text(value)) for key, value in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def destroy_node(self) -> None:
        """Stop the control loop and the inference thread; if a motion command was out, send the stop message."""
        lock = getattr(self, "_lock", None)
        if lock is not None and hasattr(self, "_loop"):
            self._stop_loop.set()
            self._chunk_arrived.set()
            if self._loop.is_alive():
                self._loop.join(timeout=2.0)
            with lock:
                self._closing = True
                with contextlib.suppress(Exception):  # the context may be gone already
                    self._halt("shutting down")
                self._wake.notify_all()
            self._thread.join(timeout=2.0)
        super().destroy_node()


def _text(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "n/a"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ros2 run conla_ros policy_node` (ParameterError: exit 2; ModelLoadError: exit 1)."""
    from rclpy.executors import SingleThreadedExecutor

    from conla_ros.ros.dds import use_large_image_profile

    use_large_image_profile()  # before rclpy.init: 640x480 frames need the larger shared-memory segment
    rclpy.init(args=argv if argv is not None else sys.argv)
    node: PolicyNode | None = None
    code = 0
    try:
        node = PolicyNode()
        executor = SingleThreadedExecutor()  # callbacks only: the control loop has its own thread
        executor.add_node(node)
        spin_until_shutdown(executor)
    except KeyboardInterrupt:  # Ctrl-C while the model was loading
        pass
    except ParameterError as error:
        print(f"{NODE_NAME}: {error}", file=sys.stderr)
        code = EXIT_PARAMETER_ERROR
    except ModelLoadError as error:
        print(f"{NODE_NAME}: cannot load the model: {error}", file=sys.stderr)
        code = EXIT_MODEL_ERROR
    except ModuleNotFoundError as error:  # onnxruntime is imported when the model loads
        print(f"{NODE_NAME}: cannot start: the Python package {error.name!r} is not installed (pip install "
              "'conla_ros[robot]' or 'conla_ros[robot-gpu]')", file=sys.stderr)
        code = EXIT_MISSING_DEPENDENCY
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
