"""policy_node in-process: start-up checks, the control tick, safety and refused inputs, tick by tick.

Through its public interface only: a second node in the same process (`Driver`) publishes on the
node's input topics and calls its services, as any other node would, and waits until the node has
taken each message in (its `status()` counters say so); parameters are set with `set_parameters`.
The control loop's `tick(now)` is called by the test (`start_control_loop=False`) and the node's
command output records what it would publish, so each rule is checked deterministically
(test/integration runs the node as a process; test/core/test_control_loop.py the loop alone on a
fake clock). Inference runs on the node's own thread, as in production; `_settle` waits for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from fixtures.ros_nodes import node_factory  # noqa: E402
from fixtures.tiny_model import make_tiny_model, tiny_spec  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from conla_ros.core.model_spec import ModelLoadError  # noqa: E402
from conla_ros.nodes.policy_node import ARRAY_PARAMETERS, PARAMETERS, PolicyNode  # noqa: E402
from conla_ros.ros.image_conversions import numpy_to_compressed, numpy_to_image  # noqa: E402
from conla_ros.ros.parameters import ParameterError  # noqa: E402
from conla_ros.ros.qos import CAMERA_QOS, COMMAND_QOS, INSTRUCTION_QOS  # noqa: E402

LOW, HIGH = np.array([-0.5, -1.0, -0.25, -1.0]), np.array([0.5, 1.0, 0.75, 1.0])


class Recorder:
    """Stands in for CommandOutput.publish / publish_stop."""

    def __init__(self, output) -> None:
        self.commands: list[np.ndarray] = []
        self.plans: list[np.ndarray | None] = []
        self.stops = 0
        self._output = output
        output.publish = self.publish
        output.publish_stop = self.publish_stop

    def publish(self, command, plan=None) -> None:
        self.commands.append(np.array(command))
        self.plans.append(None if plan is None else np.array(plan))
        self._output.published += 1

    def publish_stop(self, hold=None) -> bool:
        self.stops += 1
        return True


class Driver:
    """Another node in the policy node's context: publishes its inputs, calls its services, and spins both."""

    def __init__(self, node: PolicyNode) -> None:
        self.node = node
        self.peer = rclpy.create_node("policy_node_test_driver", context=node.context)
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self.executor.add_node(self.peer)

        def topic(name: str) -> str:
            return node.resolve_topic_name(node.get_parameter(name).value)

        self._image = self.peer.create_publisher(Image, topic("camera_topic"), CAMERA_QOS)
        self._compressed = self.peer.create_publisher(CompressedImage, topic("compressed_camera_topic"), CAMERA_QOS)
        self._instruction = self.peer.create_publisher(String, topic("instruction_topic"), INSTRUCTION_QOS)
        self._joint_states = self.peer.create_publisher(JointState, topic("joint_states_topic"), CAMERA_QOS)
        self._estop = self.peer.create_publisher(Bool, node.resolve_topic_name("~/estop"), COMMAND_QOS)
        self._enable = self.peer.create_client(SetBool, node.resolve_topic_name("~/enable"))
        self._stop = self.peer.create_client(Trigger, node.resolve_topic_name("~/stop"))

    def close(self) -> None:
        self.executor.shutdown()
        self.peer.destroy_node()

    def spin_until(self, done, timeout: float = 5.0, what: str = "the node") -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.executor.spin_once(timeout_sec=0.005)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.005)

    def _publish(self, publisher, msg, taken) -> None:
        """Publish once the node subscribes (a best-effort message sent before is lost), then wait for `taken()`."""
        self.spin_until(lambda: publisher.get_subscription_count() > 0,
                        what=f"a subscription on {publisher.topic_name}")
        publisher.publish(msg)
        self.spin_until(taken, what=f"the node to take a message on {publisher.topic_name}")

    def _inputs(self) -> int:
        status = self.node.status()
        return status["frames_received"] + status["rejected_total"]

    def image(self, msg: Image | CompressedImage) -> None:
        """A camera frame (raw or compressed), taken in once it is counted as received or refused."""
        before = self._inputs()
        publisher = self._compressed if isinstance(msg, CompressedImage) else self._image
        self._publish(publisher, msg, lambda: self._inputs() > before)

    def instruction(self, text: str) -> None:
        """An instruction, taken in once the node holds it or has refused it."""
        before = self.node.status()["rejected_total"]
        self._publish(self._instruction, String(data=text), lambda: self.node.status()["rejected_total"] > before
                      or self.node.status()["instruction"] == text.strip())

    def joint_states(self, msg: JointState, taken=None) -> None:
        """Joint states, taken in once refused or once `taken()`; without `taken`, after a short spin."""
        before = self.node.status()["rejected_total"]
        if taken is None:
            self._publish(self._joint_states, msg, lambda: True)
            self.spin_for(0.2)
            return
        self._publish(self._joint_states, msg, lambda: self.node.status()["rejected_total"] > before or taken())

    def estop(self, on: bool) -> None:
        """The e-stop topic; `True` is taken once the node reports the latch, `False` after a short spin."""
        if on:
            self._publish(self._estop, Bool(data=True), lambda: self.node.status()["estop"])
        else:
            self._publish(self._estop, Bool(data=False), lambda: True)
            self.spin_for(0.2)

    def _call(self, client, request):
        self.spin_until(client.service_is_ready, what=f"the service {client.srv_name}")
        future = client.call_async(request)
        self.spin_until(future.done, what=f"the reply of {client.srv_name}")
        return future.result()

    def enable(self, on: bool = True) -> SetBool.Response:
        return self._call(self._enable, SetBool.Request(data=on))

    def stop(self) -> Trigger.Response:
        return self._call(self._stop, Trigger.Request())


@pytest.fixture
def make_node() -> Iterator:
    """make_node(model_dir, **params) -> (PolicyNode without its control thread, Recorder of its output);
    `drivers[node]` is the node's Driver."""
    drivers: dict[PolicyNode, Driver] = {}
    with node_factory(PolicyNode, start_control_loop=False) as make:

        def make_policy(model_dir: Path, **params) -> tuple[PolicyNode, Recorder]:
            node = make(**{"model_dir": str(model_dir), "control_rate_hz": 20.0, **params})
            drivers[node] = Driver(node)
            return node, Recorder(node.output)

        make_policy.driver = drivers.__getitem__
        try:
            yield make_policy
        finally:
            for driver in drivers.values():
                driver.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def joint_model(root: Path, kind: str = "joint_position", proprio_dim: int = 0, **kwargs) -> Path:
    """A tiny model whose 4 actions are 3 joints + a gripper of `kind`."""
    spec = tiny_spec(proprio_dim=proprio_dim)
    space = replace(spec.action_space, kind=kind, names=("j1", "j2", "j3", "gripper"))
    return make_tiny_model(root, proprio_dim=proprio_dim, spec=replace(spec, action_space=space), **kwargs)


def frame(value: int = 100, size: int = 24) -> Image:
    return numpy_to_image(np.full((size, size, 3), value, np.uint8))


def _settle(node: PolicyNode, timeout: float = 5.0) -> None:
    """Wait until the inference thread has taken and finished every request."""
    deadline = time.monotonic() + timeout
    while node.loop.busy:
        assert time.monotonic() < deadline, "inference thread did not finish"
        time.sleep(0.002)


def run_ticks(drive: Driver, n: int, image: Image | None = None, instruction: str | None = None) -> None:
    """n control ticks, each after a fresh camera frame (a camera faster than the control rate)."""
    if instruction is not None:
        drive.instruction(instruction)
    for _ in range(n):
        drive.image(image if image is not None else frame())
        drive.node.loop.tick(time.monotonic())
        _settle(drive.node)


# --- start-up ------------------------------------------------------------------------------------------


def test_every_parameter_has_a_description_and_the_yaml_documents_them(repo_root: Path) -> None:
    import yaml

    params = yaml.safe_load((repo_root / "config" / "policy.yaml").read_text())["/**"]["ros__parameters"]
    declared = {spec.name for spec in PARAMETERS} | {spec.name for spec in ARRAY_PARAMETERS}
    assert set(params) == declared
    for spec in PARAMETERS:
        assert len(spec.description) > 15, spec.name
        if spec.name != "model_dir":
            assert spec.validate(params[spec.name]) == spec.default, f"policy.yaml: {spec.name} differs from default"
    assert all(params[spec.name] == [] for spec in ARRAY_PARAMETERS)


@pytest.mark.parametrize(("params", "words"), [
    ({"output": "joint_commands"}, "needs a joint-space model"),
    ({"output": "joint_trajectory"}, "needs a joint-space model"),
    ({"output": "servo"}, "must be one of"),
    ({"image_transport": "theora"}, "must be one of"),
    ({"replan_every": 9}, "chunk length 4"),
    ({"action_min": [0.0, 0.0]}, "action_min must have 4 values"),
    ({"action_min": [1.0, 0.0, 0.0, 0.0], "action_max": [0.5, 1.0, 1.0, 1.0]}, "action_max < action_min"),
    ({"max_delta_per_tick": [0.0]}, "must be > 0"),
    ({"joint_names": ["a", "b", "c"]}, "joint output modes only"),
    ({"providers": "cuda-ish"}, "unknown execution provider"),
    ({"control_rate_hz": -1.0}, "control_rate_hz"),
])
def test_bad_parameters_stop_start_up_with_the_reason(make_node, tiny: Path, params: dict, words: str) -> None:
    with pytest.raises(ParameterError, match=words):
        make_node(tiny, **params)


def test_integer_limits_are_refused_with_a_hint(make_node, tiny: Path) -> None:
    with pytest.raises(ParameterError, match="decimal point"):
        make_node(tiny, action_min=[0, 0, 0, 0])


def test_missing_or_corrupt_model_directory_names_the_file(make_node, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="model_dir"):
        make_node("")
    with pytest.raises(ModelLoadError, match="model directory not found"):
        make_node(tmp_path / "nowhere")
    broken = make_tiny_model(tmp_path / "broken")
    (broken / "policy.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError, match=r"policy\.onnx"):
        make_node(broken)


def test_joint_modes_need_matching_joint_names_and_a_proprio_model_needs_proprio(make_node, tmp_path) -> None:
    model = joint_model(tmp_path / "joints")
    with pytest.raises(ParameterError, match=r"ee_twist needs a model whose action_space\.kind is ee_delta"):
        make_node(model, output="ee_twist")
    with pytest.raises(ParameterError, match="joint_names has 2 names"):
        make_node(model, output="joint_commands", joint_names=["a", "b"])
    node, _ = make_node(model, output="joint_trajectory", joint_names=["shoulder", "elbow", "wrist"])
    assert node.layout.joint_names == ("shoulder", "elbow", "wrist") and node.layout.gripper == 3
    with pytest.raises(ParameterError, match="needs proprioception"):
        make_node(make_tiny_model(tmp_path / "proprio", proprio_dim=2), use_proprio=False)


# --- the loop, limits and the stop rules ---------------------------------------------------------------


def test_disabled_until_enabled_then_commands_within_limits(make_node, tiny: Path) -> None:
    node, out = make_node(tiny, action_min=[-0.1, -0.1, -0.1, -1.0], action_max=[0.1, 0.1, 0.1, 1.0])
    drive = make_node.driver(node)
    run_ticks(drive, 5, instruction="open the drawer")
    assert out.commands == [] and node.status()["state"] == "disabled"
    drive.enable(True)
    run_ticks(drive, 10)
    assert len(out.commands) >= 8 and node.status()["state"] == "running"
    commands = np.stack(out.commands)
    assert np.isfinite(commands).all()
    assert (commands[:, :3] >= -0.1).all() and (commands[:, :3] <= 0.1).all()
    status = node.status()
    assert status["inferences"] >= 4 and status["inference_p50_ms"] is not None


def test_rate_limit_bounds_every_change_from_rest(make_node, tiny: Path) -> None:
    node, out = make_node(tiny, autostart=True, max_delta_per_tick=[0.01])
    drive = make_node.driver(node)
    run_ticks(drive, 12, instruction="push the block", image=frame(250))
    commands = np.stack([np.zeros(4), *out.commands])  # ee_twist starts from rest
    assert np.abs(np.diff(commands, axis=0)).max() <= 0.01 + 1e-12
    assert node.status()["rate_limited"] > 0


def test_limits_change_live_and_bad_values_are_refused(make_node, tiny: Path) -> None:
    node, out = make_node(tiny, autostart=True)
    drive = make_node.driver(node)
    result = node.set_parameters([Parameter("action_max", value=[0.0, 0.0, 0.0, 0.0])])
    assert result[0].successful
    run_ticks(drive, 6, instruction="push the block", image=frame(250))
    assert out.commands and max(c[:3].max() for c in out.commands) <= 0.0
    bad = node.set_parameters([Parameter("action_max", value=[1.0, 2.0])])
    assert not bad[0].successful and "4 values" in bad[0].reason
    bad = node.set_parameters([Parameter("stale_image_timeout", value=-1.0)])
    assert not bad[0].successful
    bad = node.set_parameters([Parameter("output", value="joint_commands")])
    assert not bad[0].successful  # read-only


def test_stale_camera_stops_with_one_stop_message_then_resumes(make_node, tiny: Path) -> None:
    node, out = make_node(tiny, autostart=True, stale_image_timeout=0.2)
    drive = make_node.driver(node)
    run_ticks(drive, 6, instruction="open the drawer")
    sent = len(out.commands)
    assert sent > 0
    for _ in range(5):
        node.loop.tick(time.monotonic() + 1.0)  # the last frame is 1 s old
    assert len(out.commands) == sent and out.stops == 1
    assert node.status()["state"] == "stale" and "camera stale" in node.status()["reason"]
    run_ticks(drive, 6)
    assert len(out.commands) > sent and node.status()["state"] == "running"


def test_estop_latches_until_enable_and_acts_before_the_next_tick(make_node, tiny: Path) -> None:
    node, out = make_node(tiny, autostart=True)
    drive = make_node.driver(node)
    run_ticks(drive, 5, instruction="open the drawer")
    sent = len(out.commands)
    drive.estop(True)
    assert out.stops == 1  # sent by the callback itself, not at the next tick
    run_ticks(drive, 5)
    assert len(out.commands) == sent and node.status()["estop"]
    drive.estop(False)  # false does not release it
    run_ticks(drive, 3)
    assert len(out.commands) == sent
    drive.enable(True)
    run_ticks(drive, 5)
    assert len(out.commands) > sent
    reply = drive.stop()
    assert reply.success and out.stops == 2
    sent = len(out.commands)
    run_ticks(drive, 3)
    assert len(out.commands) == sent


@pytest.mark.parametrize(("build", "reason"), [
    (lambda: numpy_to_image(np.zeros((8, 8), np.uint16), "mono16"), None),  # valid: control
    (lambda: Image(height=8, width=8, encoding="yuv422", step=16, data=bytes(128)), "image_encoding"),
    (lambda: Image(height=8, width=8, encoding="rgb8", step=24, data=bytes(100)), "image_truncated"),
    (lambda: Image(height=0, width=0, encoding="rgb8", step=0), "image_empty"),
    (lambda: Image(height=8, width=8, encoding="rgb8", step=10, data=bytes(80)), "image_step"),
    (lambda: numpy_to_image(np.zeros((8000, 8000), np.uint8), "mono8"), "image_too_large"),
])
def test_malformed_frames_are_counted_and_never_reach_the_model(make_node, tiny, build, reason) -> None:
    node, out = make_node(tiny, autostart=True)
    drive = make_node.driver(node)
    drive.instruction("open the drawer")
    drive.image(build())
    node.loop.tick(time.monotonic())
    _settle(node)
    if reason is None:
        assert node.loop.rejected == {} and node.status()["frames_received"] == 1
        return
    assert node.loop.rejected[reason] == 1 and node.status()["frames_received"] == 0
    assert out.commands == [] and node.status()["state"] == "waiting"


def test_undecodable_compressed_frames_fault_until_a_good_one(make_node, tiny: Path) -> None:
    node, out = make_node(tiny, autostart=True, image_transport="compressed")
    drive = make_node.driver(node)
    drive.instruction("open the drawer")
    drive.image(CompressedImage(format="jpeg", data=b"\xff\xd8 not really a jpeg"))
    node.loop.tick(time.monotonic())
    _settle(node)
    node.loop.tick(time.monotonic())
    assert node.loop.rejected["image_conversion"] == 1 and node.status()["state"] == "fault" and out.commands == []
    drive.image(CompressedImage(format="gif", data=b"GIF89a"))
    assert node.loop.rejected["image_format"] == 1
    good = numpy_to_compressed(np.full((24, 24, 3), 90, np.uint8), "png")
    for _ in range(4):
        drive.image(good)
        node.loop.tick(time.monotonic())
        _settle(node)
    assert out.commands and node.status()["state"] == "running"


@pytest.mark.parametrize(("text", "reason"), [
    ("", "instruction_empty"), ("   \n ", "instruction_empty"), ("open " * 20_000, "instruction_too_long"),
    ("öffne die Schublade", "instruction_non_ascii"),
    ("open\x07the drawer", "instruction_control_chars"),  # not a NUL: a ROS string cannot carry one
])
def test_bad_instructions_are_counted_and_stop_commands(make_node, tiny: Path, text: str, reason: str) -> None:
    node, out = make_node(tiny, autostart=True)
    drive = make_node.driver(node)
    run_ticks(drive, 4, instruction="open the drawer")
    sent = len(out.commands)
    assert sent > 0
    drive.instruction(text)
    run_ticks(drive, 4)
    assert node.loop.rejected[reason] == 1 and len(out.commands) == sent and out.stops == 1
    assert node.status()["state"] == "waiting"
    run_ticks(drive, 4, instruction="open the drawer")
    assert len(out.commands) > sent


def test_non_ascii_instructions_are_accepted_when_allowed(make_node, tiny: Path) -> None:
    node, out = make_node(tiny, autostart=True, instruction_ascii_only=False)
    drive = make_node.driver(node)
    run_ticks(drive, 4, instruction="öffne die Schublade")
    assert out.commands and not node.loop.rejected


def test_a_model_that_outputs_nan_never_commands(make_node, tmp_path: Path) -> None:
    node, out = make_node(make_tiny_model(tmp_path / "nan", nan_output=True), autostart=True)
    drive = make_node.driver(node)
    run_ticks(drive, 8, instruction="open the drawer")
    node.loop.tick(time.monotonic())
    assert out.commands == [] and node.loop.rejected["inference_non_finite"] >= 4
    assert node.status()["state"] == "fault"


def test_proprio_from_joint_states_reordered_and_checked(make_node, tmp_path: Path) -> None:
    node, out = make_node(make_tiny_model(tmp_path / "proprio", proprio_dim=2), autostart=True)
    drive = make_node.driver(node)
    run_ticks(drive, 3, instruction="open the drawer")
    assert out.commands == [] and "no usable joint states" in node.status()["reason"]
    bad = [JointState(name=["joint_0", "joint_1"], position=[0.1, float("nan")]),
           JointState(name=["joint_0", "joint_1"], position=[0.1]),
           JointState(name=["joint_0", "other"], position=[0.1, 0.2])]
    for msg in bad:
        before = node.status()["rejected_total"]
        drive.joint_states(msg, taken=lambda before=before: node.status()["rejected_total"] > before)
    assert node.loop.rejected == {"joint_states_non_finite": 1, "joint_states_length": 1, "joint_states_missing": 1}
    drive.joint_states(JointState(name=["extra", "joint_1", "joint_0"], position=[9.0, 0.2, 0.1]),
                       taken=lambda: node.loop.proprio is not None)
    assert node.loop.proprio.tolist() == [0.1, 0.2]
    run_ticks(drive, 4)
    assert out.commands
    drive.image(frame())
    node.loop.tick(time.monotonic() + 5.0)  # joint states 5 s old (the timeout is 0.5 s; the frame too)
    assert node.status()["state"] == "stale" and out.stops == 1


def test_joint_trajectory_points_and_joint_position_start_from_the_measured_position(make_node, tmp_path) -> None:
    node, out = make_node(joint_model(tmp_path / "joints"), autostart=True, output="joint_trajectory",
                          max_delta_per_tick=[0.05])
    drive = make_node.driver(node)
    run_ticks(drive, 3, instruction="open the drawer")
    assert out.commands == [] and "rate limit needs the arm" in node.status()["reason"]
    drive.joint_states(JointState(name=["j1", "j2", "j3"], position=[0.2, -0.2, 0.0]))
    run_ticks(drive, 6)
    assert out.commands
    first = out.commands[0]
    assert np.abs(first[:3] - [0.2, -0.2, 0.0]).max() <= 0.05 + 1e-12
    plan = out.plans[-1]
    assert plan.shape[1] == 4 and 1 <= len(plan) <= 4
    assert np.abs(np.diff(plan, axis=0)).max() <= 0.05 + 1e-12


def test_diagnostics_report_state_model_rates_and_rejections(make_node, tiny: Path) -> None:
    node, _ = make_node(tiny, autostart=True)
    drive = make_node.driver(node)
    run_ticks(drive, 4, instruction="open the drawer")
    drive.image(Image(height=8, width=8, encoding="yuv422", step=16, data=bytes(128)))
    captured = []
    node.diagnostics_pub.publish = captured.append
    node.publish_diagnostics()
    [array] = captured
    [status] = array.status
    values = {kv.key: kv.value for kv in status.values}
    assert values["state"] == "running" and values["model"] == "tiny" and status.hardware_id == "tiny"
    assert values["provider"] == "CPUExecutionProvider" and values["rejected.image_encoding"] == "1"
    for key in ("inference_p50_ms", "inference_p99_ms", "camera_rate_hz", "control_rate_hz", "dropped_frames",
                "missed_ticks"):
        assert key in values


def test_a_fresh_chunk_is_acted_on_when_it_arrives_and_the_rate_stays(tiny: Path) -> None:
    """With the real control thread at 2 Hz: the first command follows the first frame by the inference
    time, not by up to one 0.5 s period, and early ticks take a slot's place (no extra commands)."""
    with node_factory(PolicyNode) as make:
        node = make(model_dir=str(tiny), control_rate_hz=2.0, autostart=True, stale_image_timeout=1.0)
        sent: list[float] = []
        node.output.publish = lambda command, plan=None: sent.append(time.monotonic())
        drive = Driver(node)
        drive.instruction("open the drawer")
        drive.spin_for(0.05)  # just after a slot: the next one is ~0.45 s away
        first_frame = time.monotonic()
        while time.monotonic() - first_frame < 3.0:
            drive.image(frame())
            drive.spin_for(0.05)
        drive.close()
        assert sent, "no command in 3 s"
        assert sent[0] - first_frame < 0.25, f"first command {sent[0] - first_frame:.3f} s after the frame"
        assert node.status()["early_ticks"] >= 1
        assert 4 <= len(sent) <= 7, f"{len(sent)} commands in 3 s at 2 Hz"


def test_a_tick_waits_for_the_next_frame_only_while_it_can_still_arrive_in_time(make_node, tiny: Path) -> None:
    node, _ = make_node(tiny, control_rate_hz=80.0)  # ticks of 12.5 ms, a 30 Hz camera
    loop = node.loop
    now = time.monotonic()
    for k in range(10, -1, -1):
        loop.on_frame(frame(), now - 0.030 - k / 30)  # the last one 30 ms ago: the next is due in ~3 ms
    loop.recent_inference_s = 0.005
    loop.chunks.ticks_left = lambda: 4  # 50 ms of actions left
    assert loop.next_frame_in_time(now)
    loop.chunks.ticks_left = lambda: 1  # 12.5 ms left: the waiting frame is taken now
    assert not loop.next_frame_in_time(now)
    loop.chunks.ticks_left = lambda: 4
    loop.recent_inference_s = 0.050  # a slow model (or machine) cannot wait for the next frame
    assert not loop.next_frame_in_time(now)
