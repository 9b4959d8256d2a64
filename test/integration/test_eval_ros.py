"""`conla eval ros` (issue 7, points 4 and 6): sim_arm_node + policy_node as processes, against `conla eval sim`.

`conla eval ros` runs as a process of its own, as a user runs it; each test then checks that no
node process it started is left (the nodes inherit a marker variable from it, found in /proc).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fixtures.tiny_model import make_tiny_model

pytestmark = pytest.mark.ros

# The tiny model's actions lie in this band: the hand drifts towards +y (where Meta-World puts the
# reach goals) with a little x/z wander that depends on the image and instruction. A straight drift
# passes within reach's 5 cm of the goal for some scenes and not others: measured with eval sim, 5
# of the first 16 held-out seeds succeed (all by step 64), so the agreement below is not the
# trivial 0 % = 0 %.
DRIFT_RANGE = ((-0.15, 0.3, -0.1, -1.0), (0.15, 0.8, 0.1, 1.0))
TASK, EPISODES, MAX_STEPS = "reach", 16, 100  # 100 steps keep every measured success (the latest at 64)


def _conla_eval(runner: str, argv: list[str], marker: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    """`conla eval RUNNER --no-progress ARGV` in a process of its own (a fresh MuJoCo and rclpy each)."""
    env = dict(os.environ, CONLA_EVAL_ROS_TEST_MARKER=marker)
    return subprocess.run([sys.executable, "-m", "conla_ros.cli", "eval", runner, "--no-progress", *argv],
                          capture_output=True, text=True, timeout=timeout_s, env=env)


def _eval_ros(argv: list[str], marker: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    return _conla_eval("ros", argv, marker, timeout_s)


def _processes_with(marker: str) -> list[str]:
    """Command lines of live processes whose environment holds `marker` (the nodes inherit it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return found


@pytest.mark.slow
def test_eval_ros_agrees_with_eval_sim_on_a_tiny_model(tmp_path: Path) -> None:
    """Per-task success through ROS 2 and in Python agree within sampling noise.

    The bound: |p_ros - p_sim| <= 2.5 * sqrt(p (1 - p) / n) + 1 / n, with p the pooled success
    rate of both runs and n the episodes per task (2.5 standard errors of one binomial proportion,
    plus one episode for the discreteness). Both runs use the same seeds and instructions, so their
    outcomes are paired and usually agree seed by seed; the bound is generous for that, and is meant
    to catch systematic differences (a lost instruction, a wrong seed, commands not applied, an
    off-by-one step limit), not the chaos of two slightly different control loops (policy_node
    replans every half chunk; eval sim plays each chunk out).
    """
    pytest.importorskip("conla_ros.sim.world", reason="needs the 'sim' extra")
    model = make_tiny_model(tmp_path / "tiny_drift", seed=0, size=16, chunk_length=4, action_range=DRIFT_RANGE)
    marker = uuid.uuid4().hex
    common = ["--model", str(model), "--tasks", TASK, "--episodes", str(EPISODES), "--max-steps", str(MAX_STEPS)]
    done = _eval_ros([*common, "--json", str(tmp_path / "ros.json"), "--video", str(tmp_path / "ros.mp4")], marker)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not _processes_with(marker), "node processes outlived conla eval ros"
    assert "success" in done.stdout and "image -> command p50 / p99" in done.stdout
    done = _conla_eval("sim", [*common, "--json", str(tmp_path / "sim.json")], marker)
    assert done.returncode == 0, done.stdout + done.stderr
    ros, sim = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("ros", "sim"))

    # The same scenes and instructions, episode by episode.
    assert [(e["seed"], e["instruction"]) for e in ros["episodes"]] == \
        [(e["seed"], e["instruction"]) for e in sim["episodes"]]
    assert all(e["length"] <= MAX_STEPS for e in ros["episodes"])
    p_sim, p_ros = sim["success_rate"][TASK], ros["success_rate"][TASK]
    assert 0 < p_sim < 1, f"eval sim succeeded on {p_sim:.0%}: the comparison would be trivial"
    pooled = (p_sim + p_ros) / 2
    bound = 2.5 * math.sqrt(pooled * (1 - pooled) / EPISODES) + 1 / EPISODES
    assert abs(p_ros - p_sim) <= bound, (
        f"eval ros {p_ros:.0%} vs eval sim {p_sim:.0%} on {EPISODES} {TASK} episodes (bound {bound:.2f})\n"
        f"ros:  {[(e['seed'], e['success'], e['length']) for e in ros['episodes']]}\n"
        f"sim:  {[(e['seed'], e['success'], e['length']) for e in sim['episodes']]}")
    # The video holds the camera topic's frames of every episode (one per step; best effort may drop a few)
    # and a quarter second of its last frame.
    import cv2

    video = cv2.VideoCapture(str(tmp_path / "ros.mp4"))
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    video.release()
    steps = sum(e["length"] for e in ros["episodes"])
    assert 0.9 * steps + 20 * EPISODES <= frames <= steps + 40 * EPISODES, (frames, steps)
    latency = ros["latency"]
    assert latency["inference_p50_ms"] is not None and latency["image_to_command_p50_ms"] is not None
    assert latency["control_rate_hz"] > 0.5 * latency["control_rate_target_hz"]


def test_missing_model_dir_fails_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    marker = uuid.uuid4().hex
    done = _eval_ros(["--model", str(missing), "--tasks", TASK, "--episodes", "1"], marker, timeout_s=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert str(missing) in done.stderr and "not found" in done.stderr
    assert not _processes_with(marker)


def test_task_names_are_checked_before_any_node_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Meta-World's `reach-v3` is `reach` (the run goes on to the model check); an unknown name is a usage error."""
    import argparse

    from conla_ros.eval.ros import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    missing = tmp_path / "no_such_model"
    assert run(parser.parse_args(["--model", str(missing), "--tasks", "reach-v3", "--no-progress"])) == 1
    assert str(missing) in capsys.readouterr().err
    assert run(parser.parse_args(["--model", str(missing), "--tasks", "reach-v4", "--no-progress"])) == 2
    err = capsys.readouterr().err
    assert "unknown task 'reach-v4'" in err and "valid tasks: reach," in err


def test_a_node_that_dies_is_reported_with_its_output_and_the_other_is_stopped(tmp_path: Path) -> None:
    """policy_node exits at start (its policy.onnx is gone): eval ros names it, shows why, leaves nothing behind."""
    pytest.importorskip("conla_ros.sim.world", reason="needs the 'sim' extra")
    model = make_tiny_model(tmp_path / "broken")
    (model / "policy.onnx").unlink()
    marker = uuid.uuid4().hex
    done = _eval_ros(["--model", str(model), "--tasks", TASK, "--episodes", "1"], marker, timeout_s=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "policy_node exited with code 1" in done.stderr
    assert "policy.onnx: file not found" in done.stderr  # the node's own message, from its output
    assert not _processes_with(marker), "sim_arm_node outlived conla eval ros"


@pytest.mark.slow
def test_proprioception_flows_from_the_sim_arms_joint_states_through_the_node(tmp_path: Path) -> None:
    """A model that takes the 9 joint positions by the names sim_arm_node publishes on joint_states.

    policy_node sends no command until it has valid joint states for every name the model wants
    (stale or missing joint states stop it), and sim_arm_node steps an episode only on commands, so
    an episode that runs its steps proves the joint positions went camera/joint_states → node →
    ONNX input. The same episode in eval sim, which feeds the world's joint positions directly, ends
    with the same outcome.
    """
    pytest.importorskip("conla_ros.sim.world", reason="needs the 'sim' extra")
    from dataclasses import replace

    from fixtures.tiny_model import tiny_spec

    from conla_ros.core.model_spec import ProprioSpec
    from conla_ros.sim.world import JOINT_NAMES

    spec = tiny_spec(size=16, chunk_length=4, proprio_dim=len(JOINT_NAMES), action_range=DRIFT_RANGE)
    spec = replace(spec, proprio=ProprioSpec(names=JOINT_NAMES, dim=len(JOINT_NAMES)))
    model = make_tiny_model(tmp_path / "proprio", size=16, chunk_length=4, proprio_dim=len(JOINT_NAMES),
                            action_range=DRIFT_RANGE, spec=spec)
    common = ["--model", str(model), "--tasks", TASK, "--episodes", "2", "--max-steps", "30"]
    marker = uuid.uuid4().hex
    done = _eval_ros([*common, "--json", str(tmp_path / "ros.json")], marker)
    assert done.returncode == 0, done.stdout + done.stderr
    done = _conla_eval("sim", [*common, "--json", str(tmp_path / "sim.json")], marker)
    assert done.returncode == 0, done.stdout + done.stderr
    ros, sim = (json.loads((tmp_path / f"{name}.json").read_text())["episodes"] for name in ("ros", "sim"))
    assert [e["length"] for e in ros] == [e["length"] for e in sim]  # every step ran, in both
    assert [e["success"] for e in ros] == [e["success"] for e in sim]
