"""`conla eval ros`: closed-loop success through ROS 2, with sim_arm_node and policy_node as processes.

    conla eval ros --model models/NAME [--tasks T..] [--episodes N] [--max-steps 200] [--timeout S]
                   [--json FILE] [--video FILE] [--no-progress]

The same held-out seeds, instructions and step limit as `conla eval sim`, and the same table; but
the model runs in policy_node exactly as on a robot (camera in over DDS, ee_twist + gripper
commands out) and the arm is sim_arm_node in real time (80 Hz: 200 steps are 2.5 s of wall time).
Both nodes are started as `python -m conla_ros.nodes.<node> --ros-args ...` and stopped on every
exit path. Per episode this process:

1. keeps the policy disabled between episodes (it starts so; `/policy_node/enable` false ends each);
2. sets the arm's task, seed and max_steps atomically and calls `/sim_arm_node/reset`; the arm
   publishes the episode's instruction (transient-local), the held-out paraphrase `conla eval sim`
   draws for that seed (checked against the reset's reply);
3. if the policy node did not hold that instruction yet, waits until its `/diagnostics` (sent at
   once on a new instruction) show it, then resets again, so that the episode starts with the
   policy ready (the arm runs in real time from the reset on);
4. enables the policy and follows `/episode_status` until the episode is done: success, or
   `max_steps` steps. Success is the arm's report of success within `max_steps`, as in eval sim.

Latency comes from the policy node's `/diagnostics` (conla_ros.ros.policy_diagnostics).
`evaluate_ros` is the function (the demo calls it); `add_arguments` / `run` are the command.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conla_ros.eval.report import EpisodeResult, EvalReport, write_report_files
from conla_ros.eval.video import RolloutVideo, episode_caption
from conla_ros.ros.policy_diagnostics import LatencySummary, aligned
from conla_ros.sim.instructions import MT10_TASKS, check_task
from conla_ros.sim.seeds import HELDOUT_PER_TASK, HELDOUT_SEEDS, episode_instruction

if TYPE_CHECKING:
    from conla_ros.eval.node_processes import NodeProcesses

__all__ = ["EvalRosError", "RosEvalResult", "add_arguments", "evaluate_ros", "run"]

DEFAULT_MAX_STEPS = 200  # WorldConfig's, as `conla eval sim`
DEFAULT_EPISODE_TIMEOUT_S = 30.0
IMAGE_SIZE = 64  # the camera side for a model without one (`conla eval sim` renders at the model's input size too)
CONTROL_RATE_HZ = 80.0  # Meta-World's 12.5 ms step
STARTUP_TIMEOUT_S = 90.0  # two node processes importing MuJoCo / onnxruntime and discovering each other
_INSTRUCTION_TIMEOUT_S = 10.0  # the policy node reports a new instruction at once; this covers a slow start
_SERVICE_TIMEOUT_S = 10.0
SIM_ARM_MODULE = "conla_ros.nodes.sim_arm_node"
POLICY_MODULE = "conla_ros.nodes.policy_node"
SIM_ARM_NODE = "/sim_arm_node"
POLICY_NODE = "/policy_node"


class EvalRosError(RuntimeError):
    """An evaluation that could not go on (a node died, a timeout, a refused reset); the text says why."""


@dataclass(frozen=True)
class RosEvalResult:
    """What `evaluate_ros` measured: the success report (eval sim's), latency, and wall times."""

    report: EvalReport
    latency: LatencySummary
    episode_wall_s: tuple[float, ...]  # from enabling the policy to the episode's end
    realtime_factor: float | None  # the arm's median simulated / wall time (1.0: kept real time)
    transport: str

    def latency_lines(self) -> list[str]:
        """The latency figures and episode wall times, aligned for a terminal."""
        rows = self.latency.rows()
        if self.episode_wall_s:
            mean, longest = statistics.fmean(self.episode_wall_s), max(self.episode_wall_s)
            rows.append(("episode wall time mean / max", f"{mean:.2f} / {longest:.2f} s"))
        if self.realtime_factor is not None:
            rows.append(("sim arm real-time factor (median)", f"{self.realtime_factor:.3f}"))
        return aligned(rows)

    def to_dict(self) -> dict[str, Any]:
        """The report's dict (as `conla eval sim --json`) plus latency, wall times and transport."""
        data = self.report.to_dict()
        data.update(latency=self.latency.to_dict(), episode_wall_s=list(self.episode_wall_s),
                    realtime_factor=self.realtime_factor, transport=self.transport)
        return data

    def to_json(self) -> str:
        """`to_dict()` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)


def _check_model(model_dir: Path) -> Any:
    """The model's spec; it must command end-effector deltas, which the simulated arm takes."""
    from conla_ros.core.model_spec import load_model_spec

    spec = load_model_spec(model_dir)  # ModelLoadError naming the missing directory or file
    if spec.action_space.kind != "ee_delta":
        raise EvalRosError(f"{model_dir}: action kind {spec.action_space.kind!r}; the simulated arm takes "
                           "end-effector deltas (ee_delta, output ee_twist)")
    return spec


class _Session:
    """This process's ROS side: a node in its own context, the clients and subscriptions, spin-until helpers."""

    def __init__(self, nodes: NodeProcesses, record_video: bool) -> None:
        import rclpy
        from rcl_interfaces.srv import SetParametersAtomically
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from std_srvs.srv import SetBool, Trigger

        from conla_ros.episodes import topics as T
        from conla_ros.ros.episode_status import EPISODE_STATUS_QOS, EPISODE_STATUS_TOPIC, EpisodeStatus
        from conla_ros.ros.policy_diagnostics import PolicyDiagnostics
        from conla_ros.ros.qos import CAMERA_QOS
        from conla_ros.ros.sim_arm_client import reset_service, set_parameters_service

        self._nodes = nodes
        self._status_type = EpisodeStatus
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("conla_eval_ros", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.diagnostics = PolicyDiagnostics(self.node)
        self.status: Any = None  # the newest EpisodeStatus
        self.node.create_subscription(String, EPISODE_STATUS_TOPIC, self._on_status, EPISODE_STATUS_QOS)
        self.frames: list[tuple[int, Any]] | None = [] if record_video else None  # (stamp ns, Image)
        if record_video:
            self.node.create_subscription(Image, T.CAMERA.name, self._on_image, CAMERA_QOS)
        self.set_parameters = self.node.create_client(SetParametersAtomically, set_parameters_service(SIM_ARM_NODE))
        self.reset_client = self.node.create_client(Trigger, reset_service(SIM_ARM_NODE))
        self.enable_client = self.node.create_client(SetBool, f"{POLICY_NODE}/enable")

    def _on_status(self, msg: Any) -> None:
        try:
            self.status = self._status_type.from_json(msg.data)
        except ValueError as error:  # a foreign publisher on the topic: say so, keep the last good one
            self.node.get_logger().warning(f"ignored an episode status: {error}", throttle_duration_sec=2.0)

    def _on_image(self, msg: Any) -> None:
        assert self.frames is not None
        self.frames.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, msg))

    def now_ns(self) -> int:
        """The node clock (the arm stamps its frames with the same system clock)."""
        return self.node.get_clock().now().nanoseconds

    def spin_until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Spin until `condition()`; NodeDied if a node exits meanwhile, EvalRosError at the deadline."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            self._nodes.check()
            if time.monotonic() > deadline:
                raise EvalRosError(f"timed out after {timeout_s:g} s waiting for {what}\n{self._nodes.logs()}")
            self.executor.spin_once(timeout_sec=0.01)

    def call(self, client: Any, request: Any, what: str) -> Any:
        """Call a service (already available) and return its reply."""
        future = client.call_async(request)
        self.spin_until(future.done, _SERVICE_TIMEOUT_S, f"the reply of {what}")
        return future.result()

    def enable(self, on: bool) -> None:
        """Enable or disable the policy node."""
        from std_srvs.srv import SetBool

        reply = self.call(self.enable_client, SetBool.Request(data=on), f"{POLICY_NODE}/enable {on}")
        if not reply.success:
            raise EvalRosError(f"{POLICY_NODE}/enable {on} refused: {reply.message}")

    def reset(self, task: str, seed: int, max_steps: int) -> Any:
        """Reset the arm to (task, seed); return the new episode's status (the reset's reply)."""
        from std_srvs.srv import Trigger

        from conla_ros.ros.sim_arm_client import set_parameters_request

        result = self.call(self.set_parameters, set_parameters_request(task=task, seed=seed, max_steps=max_steps),
                           f"{SIM_ARM_NODE} set_parameters_atomically")
        if not result.result.successful:
            raise EvalRosError(f"{SIM_ARM_NODE} refused task={task!r} seed={seed}: {result.result.reason}")
        reply = self.call(self.reset_client, Trigger.Request(), f"{SIM_ARM_NODE}/reset")
        if not reply.success:
            raise EvalRosError(f"{SIM_ARM_NODE}/reset ({task}, seed {seed}) failed: {reply.message}")
        return self._status_type.from_json(reply.message)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _start_nodes(nodes: NodeProcesses, model_dir: Path, task: str, seed: int, max_steps: int,
                 image_size: int = IMAGE_SIZE) -> None:
    nodes.start("sim_arm_node", SIM_ARM_MODULE, {"task": task, "seed": seed, "max_steps": max_steps,
                                                 "image_size": image_size})
    # ee_twist: the model commands end-effector deltas; disabled until each episode is set up.
    nodes.start("policy_node", POLICY_MODULE, {"model_dir": str(model_dir), "output": "ee_twist",
                                               "autostart": False})


def _wait_until_ready(session: _Session) -> None:
    """Both nodes up, their services available, and camera frames reaching the policy node."""
    from conla_ros.ros.policy_diagnostics import number

    clients = (session.set_parameters, session.reset_client, session.enable_client)

    def ready() -> bool:
        report = session.diagnostics.latest
        return (all(c.service_is_ready() for c in clients) and session.status is not None and report is not None
                and (number(report, "frames_received") or 0) > 0)

    session.spin_until(ready, STARTUP_TIMEOUT_S, "sim_arm_node and policy_node to start (services, episode "
                       "status, camera frames at the policy node)")
    _check_alone(session)


def _check_alone(session: _Session) -> None:
    """Refuse to go on beside another sim arm or policy node of the same name (it would mix into our topics).

    Checked at start-up and before every episode, from the local graph cache (no waiting).
    """
    names = session.node.get_node_names_and_namespaces()
    for full_name in (SIM_ARM_NODE, POLICY_NODE):
        count = sum(1 for name, namespace in names if f"{namespace.rstrip('/')}/{name}" == full_name)
        if count > 1:
            raise EvalRosError(f"{count} nodes named {full_name} on ROS_DOMAIN_ID="
                               f"{os.environ.get('ROS_DOMAIN_ID', '0')}: stop the other one or run conla eval ros "
                               "on a domain of its own (export ROS_DOMAIN_ID=...)")


def _policy_instruction(session: _Session) -> str | None:
    report = session.diagnostics.latest
    return None if report is None else report.get("instruction")


def _start_episode(session: _Session, task: str, seed: int, max_steps: int) -> tuple[Any, int]:
    """Reset the arm (the policy is disabled) and make sure the policy holds this episode's instruction.

    Returns the episode's status and the node-clock time just before its reset was asked for (every
    camera frame of the episode is stamped later).
    """
    _check_alone(session)
    expected = episode_instruction(task, seed)
    requested_ns = session.now_ns()
    status = session.reset(task, seed, max_steps)
    if status.instruction != expected:  # the two evaluators would not be comparable: stop
        raise EvalRosError(f"sim_arm_node gave {task} seed {seed} the instruction {status.instruction!r}; "
                           f"conla eval sim uses {expected!r}")
    if _policy_instruction(session) != expected:
        session.spin_until(lambda: _policy_instruction(session) == expected, _INSTRUCTION_TIMEOUT_S,
                           f"policy_node to report the instruction {expected!r} in /diagnostics")
        requested_ns = session.now_ns()
        status = session.reset(task, seed, max_steps)  # start over: the arm ran while we waited
    return status, requested_ns


def _run_episode(session: _Session, task: str, seed: int, max_steps: int, timeout_s: float,
                 video: RolloutVideo | None) -> tuple[EpisodeResult, float, Any]:
    """One episode through ROS; returns its result, wall time (enable to done) and final status.

    The policy node is disabled when it starts (it starts so, autostart false) and when it returns.
    """
    status, boundary_ns = _start_episode(session, task, seed, max_steps)
    episode = status.episode
    started = time.monotonic()
    session.enable(True)

    def finished() -> bool:
        current = session.status
        return current is not None and current.episode == episode and current.done

    session.spin_until(finished, timeout_s, f"episode {task} seed {seed} to finish ({max_steps} steps at "
                       f"{CONTROL_RATE_HZ:g} Hz; --timeout {timeout_s:g} s)")
    wall = time.monotonic() - started
    final = session.status
    session.enable(False)  # nothing moves the arm between episodes
    if final.fault:
        raise EvalRosError(f"sim_arm_node stopped in {task} seed {seed}: {final.fault}")
    success = bool(final.success and final.first_success_step is not None and final.first_success_step <= max_steps)
    length = final.first_success_step if success else final.step
    if video is not None and session.frames is not None:
        _write_episode(session, video, boundary_ns, final.stamp_ns, episode_caption(task, seed), success)
    return EpisodeResult(task=task, seed=seed, instruction=status.instruction, success=success,
                         length=int(length)), wall, final


def _write_episode(session: _Session, video: RolloutVideo, after_ns: int, until_ns: int, caption: str,
                   success: bool) -> None:
    """The episode's camera frames (stamped after the reset was asked for, up to `done`) into the mp4."""
    from conla_ros.ros.image_conversions import image_to_rgb

    assert session.frames is not None
    frames = [msg for stamp, msg in session.frames if after_ns <= stamp <= until_ns]
    session.frames.clear()
    image = None
    for msg in frames:
        image = image_to_rgb(msg)
        video.frame(image, caption)
    if image is not None:
        video.finish(image, caption, success)


def evaluate_ros(
    model_dir: str | Path,
    tasks: Sequence[str] = MT10_TASKS,
    episodes_per_task: int = 10,
    max_steps: int = DEFAULT_MAX_STEPS,
    episode_timeout_s: float = DEFAULT_EPISODE_TIMEOUT_S,
    video_path: str | Path | None = None,
    progress: bool = True,
) -> RosEvalResult:
    """Run the model in policy_node on sim_arm_node over the first `episodes_per_task` held-out seeds per task.

    Raises `ModelLoadError` for a bad model directory, `NodeDied` (with the node's output) when a
    node process exits, `EvalRosError` for a timeout or a refused request. The node processes are
    stopped whatever happens (Ctrl-C included).
    """
    from tqdm import tqdm

    from conla_ros.eval.node_processes import NodeProcesses
    from conla_ros.ros.dds import use_large_image_profile

    model_dir = Path(model_dir).expanduser().resolve()
    spec = _check_model(model_dir)
    tasks = [check_task(t) for t in tasks]
    if not 1 <= episodes_per_task <= HELDOUT_PER_TASK:
        raise ValueError(f"episodes_per_task must be in [1, {HELDOUT_PER_TASK}], got {episodes_per_task}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if not episode_timeout_s > 0:
        raise ValueError(f"episode_timeout_s must be > 0, got {episode_timeout_s}")
    # Keep the evaluation's DDS traffic on this machine (as the demo does), and let big frames through.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    transport = use_large_image_profile()  # this process and, inherited, both nodes

    plan = [(task, seed) for task in tasks for seed in HELDOUT_SEEDS[task][:episodes_per_task]]
    results: list[EpisodeResult] = []
    walls: list[float] = []
    realtime: list[float] = []
    image_size = spec.preprocessing.size  # the camera renders what the model takes, as in eval sim
    video = RolloutVideo(Path(video_path), image_size, CONTROL_RATE_HZ) if video_path else None
    bar = tqdm(total=len(plan), desc="eval ros", unit="ep", disable=not progress)
    try:
        with NodeProcesses() as nodes:
            _start_nodes(nodes, model_dir, plan[0][0], plan[0][1], max_steps, image_size)
            session = _Session(nodes, record_video=video is not None)
            try:
                _wait_until_ready(session)
                first_report = len(session.diagnostics.reports)
                for task, seed in plan:
                    result, wall, final = _run_episode(session, task, seed, max_steps, episode_timeout_s, video)
                    results.append(result)
                    walls.append(wall)
                    if "realtime_permille" in final.counters:
                        realtime.append(final.counters["realtime_permille"] / 1000)
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(r.success for r in results) / len(results):.0%}")
                # One more report, so the latency windows include the last episode.
                count = len(session.diagnostics.reports)
                session.spin_until(lambda: len(session.diagnostics.reports) > count, 3.0, "a last diagnostics report")
                reports = session.diagnostics.reports[first_report:] or session.diagnostics.reports
            finally:
                session.close()
    finally:
        bar.close()
        if video is not None:
            video.close()
    provider = reports[-1].get("provider", "?") if reports else "?"
    config = {"image_size": image_size, "max_steps": max_steps, "domain": "robot", "runner": "ros",
              "episode_timeout_s": episode_timeout_s}
    report = EvalReport(policy=f"model {spec.name} ({provider}) through ROS 2: policy_node -> sim_arm_node",
                        episodes=tuple(results), config=config)
    return RosEvalResult(report=report, latency=LatencySummary.from_reports(reports), episode_wall_s=tuple(walls),
                         realtime_factor=round(statistics.median(realtime), 3) if realtime else None,
                         transport=transport)


# --- command line: `conla eval ros` -------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `conla eval ros` (those of `conla eval sim` that apply, and --timeout)."""
    parser.add_argument("--model", type=Path, required=True, metavar="DIR",
                        help="exported model directory (models/NAME) run in policy_node")
    parser.add_argument("--tasks", nargs="+", default=list(MT10_TASKS), metavar="TASK",
                        help="MT10 task names (reach, or Meta-World's reach-v3; default: all ten)")
    parser.add_argument("--episodes", type=int, default=10, metavar="N",
                        help=f"held-out seeds per task (default 10, at most {HELDOUT_PER_TASK}): the same seeds "
                        "and instructions as `conla eval sim`")
    parser.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS, metavar="N",
                        help=f"episode limit in control steps (default {DEFAULT_MAX_STEPS}, as eval sim; "
                        f"{CONTROL_RATE_HZ:g} steps per second of wall time)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_EPISODE_TIMEOUT_S, metavar="S",
                        help=f"give up when an episode has not ended after S seconds (default "
                        f"{DEFAULT_EPISODE_TIMEOUT_S:g})")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--video", type=Path, metavar="FILE",
                        help="write all rollouts, as the camera topic carried them, to one mp4")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Terminated(Exception):
    """SIGTERM arrived: unwind through the `finally` blocks that stop the node processes."""


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated()


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table and latency; exit 0 done, 1 model / node / timeout failure, 2 usage error,
    130 Ctrl-C, 143 SIGTERM."""
    from conla_ros.core.model_spec import ModelLoadError
    from conla_ros.eval.node_processes import NodeDied

    try:
        tasks = [check_task(t) for t in args.tasks]
        if not 1 <= args.episodes <= HELDOUT_PER_TASK:
            raise ValueError(f"--episodes must be in [1, {HELDOUT_PER_TASK}], got {args.episodes}")
        if args.max_steps < 1:
            raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
        if not args.timeout > 0:
            raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout}")
    except ValueError as error:
        print(f"conla eval ros: {error}", file=sys.stderr)
        return 2
    # SIGTERM (a supervisor, `timeout`) must also unwind through the clean-up; only the main thread may set it.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    if main_thread:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        result = evaluate_ros(args.model, tasks, args.episodes, args.max_steps, args.timeout, video_path=args.video,
                              progress=not args.no_progress)
    except ModelLoadError as error:
        print(f"conla eval ros --model: {error}", file=sys.stderr)
        return 1
    except (NodeDied, EvalRosError) as error:
        print(f"conla eval ros: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("conla eval ros: interrupted; node processes stopped", file=sys.stderr)
        return 130
    except _Terminated:
        print("conla eval ros: terminated (SIGTERM); node processes stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    print(result.report.table())
    print(f"policy_node latency ({result.transport}):")
    for line in result.latency_lines():
        print(f"  {line}")
    write_report_files(args.json, result.to_json(), args.video)
    return 0
