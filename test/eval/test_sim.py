"""`conla eval sim`: expert reference, reports, chunk policies through ChunkedPolicy, videos and the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

pytest.importorskip("metaworld", reason="the simulation needs the 'sim' extra (metaworld, mujoco)")

from conla_ros.core.chunking import ChunkedPolicy, ChunkingConfig
from conla_ros.core.policy import RandomPolicy
from conla_ros.eval.report import EpisodeResult, EvalReport
from conla_ros.eval.sim import add_arguments, evaluate, model_policy, run
from conla_ros.sim.expert import ScriptedExpertPolicy
from conla_ros.sim.instructions import MT10_TASKS, instructions
from conla_ros.sim.seeds import HELDOUT_SEEDS, TRAIN_SEED_LIMIT
from conla_ros.sim.world import WorldConfig


@pytest.fixture(scope="module")
def expert_report() -> EvalReport:
    return evaluate(ScriptedExpertPolicy(), ["reach", "push", "pick-place"], episodes_per_task=10, progress=False)


def test_scripted_expert_reaches_90_percent(expert_report):
    for task in ("reach", "push", "pick-place"):
        assert expert_report.success_rate[task] >= 0.9, expert_report.table()
    assert expert_report.episode_counts == {"reach": 10, "push": 10, "pick-place": 10}
    assert [e.seed for e in expert_report.episodes[:10]] == list(HELDOUT_SEEDS["reach"][:10])


def test_evaluation_uses_heldout_seeds_and_instructions(expert_report):
    assert all(seed >= TRAIN_SEED_LIMIT for seeds in HELDOUT_SEEDS.values() for seed in seeds)
    assert set(HELDOUT_SEEDS) == set(MT10_TASKS)
    for episode in expert_report.episodes:
        assert episode.instruction in instructions(episode.task, "heldout")


def test_training_instructions_on_request():
    """--instructions train: the same held-out scenes, spoken with the training paraphrases."""
    report = evaluate(RandomPolicy(), ["reach"], episodes_per_task=3, progress=False,
                      config=WorldConfig(max_steps=5), instructions="train")
    assert [e.seed for e in report.episodes] == list(HELDOUT_SEEDS["reach"][:3])
    assert all(e.instruction in instructions("reach", "train") for e in report.episodes)
    with pytest.raises(ValueError, match="'spoken'"):
        evaluate(RandomPolicy(), ["reach"], episodes_per_task=1, progress=False, instructions="spoken")


@pytest.mark.slow
def test_scripted_expert_reference_on_all_mt10_tasks():
    """The reference row over all of MT10 (measured: 97 % mean; door-open 90 %, peg-insert-side 80 %)."""
    report = evaluate(ScriptedExpertPolicy(), MT10_TASKS, episodes_per_task=10, progress=False)
    assert report.mean_success >= 0.9, report.table()
    assert min(report.success_rate.values()) >= 0.7, report.table()


def test_policy_without_infer_is_refused():
    with pytest.raises(TypeError, match="infer"):
        evaluate(object(), ["reach"], episodes_per_task=1, progress=False)  # type: ignore[arg-type]


def test_random_policy_is_worse_than_the_expert(expert_report):
    random = evaluate(RandomPolicy(seed=0), ["reach"], episodes_per_task=3, progress=False,
                      config=WorldConfig(max_steps=100))
    assert random.success_rate["reach"] < expert_report.success_rate["reach"]


def test_report_table_and_json():
    report = EvalReport(
        policy="test",
        episodes=(
            EpisodeResult("reach", 1_000_000, "go", True, 40),
            EpisodeResult("reach", 1_000_001, "go", False, 200),
            EpisodeResult("push", 1_000_000, "push it", True, 60),
        ),
        config={"image_size": 64},
    )
    assert report.success_rate == {"reach": 0.5, "push": 1.0}
    assert report.mean_success == 0.75
    assert report.mean_length == {"reach": 120.0, "push": 60.0}
    table = report.table()
    lines = table.splitlines()
    assert lines[0] == "policy: test"
    assert lines[1].split() == ["task", "success", "episodes", "mean", "length"]
    assert lines[3].split() == ["reach", "50%", "2", "120.0"]
    assert lines[-1].split() == ["mean", "75.0%", "3", "100.0"]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    data = json.loads(report.to_json())
    assert data["mean_success"] == 0.75 and data["success_rate"]["push"] == 1.0
    assert data["episodes_per_task"] == {"reach": 2, "push": 1} and len(data["episodes"]) == 3
    assert data["config"] == {"image_size": 64}


class _ChunkPolicy:
    """Returns chunks of H actions (the policy interface); records every call."""

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.calls: list[dict] = []
        self.resets = 0

    def infer(self, obs):
        self.calls.append(obs)
        return {"actions": np.tile([0.0, 0.0, 0.0, -1.0], (self.horizon, 1))}

    def reset(self):
        self.resets += 1


def _played_to_the_end(policy: _ChunkPolicy) -> ChunkedPolicy:
    """A chunk policy whose chunks are played to their end before the next inference."""
    config = ChunkingConfig(replan_every=policy.horizon, blend_ticks=0)
    return ChunkedPolicy(policy, config, chunk_length=policy.horizon, action_dim=4)


def test_chunks_run_step_by_step():
    policy = _ChunkPolicy(horizon=4)
    report = evaluate(_played_to_the_end(policy), ["reach"], episodes_per_task=2, config=WorldConfig(max_steps=10),
                      progress=False)
    assert policy.resets == 2
    assert len(policy.calls) == 2 * 3  # 10 steps in chunks of 4: calls at steps 0, 4 and 8
    assert [e.length for e in report.episodes] == [10, 10]
    obs = policy.calls[0]
    assert set(obs) == {"image", "instruction", "proprio", "task", "state"}
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["proprio"].shape == (9,) and obs["proprio"].dtype == np.float32  # as /joint_states
    assert obs["task"] == "reach" and obs["instruction"] in instructions("reach", "heldout")
    assert obs["state"].shape == (39,)


class _BadPolicy:
    def infer(self, obs):
        return {"actions": np.zeros((2, 3))}

    def reset(self):
        pass


def test_bad_policy_output_is_named():
    with pytest.raises(ValueError, match=r"one action \(4,\).*ChunkedPolicy.*\(2, 3\)"):
        evaluate(_BadPolicy(), ["reach"], episodes_per_task=1, progress=False)


def test_video_of_rollouts(tmp_path):
    import cv2

    path = tmp_path / "rollouts.mp4"
    evaluate(_played_to_the_end(_ChunkPolicy(1)), ["reach"], episodes_per_task=1, config=WorldConfig(max_steps=5),
             video_path=path, progress=False)
    capture = cv2.VideoCapture(str(path))
    frames = 0
    ok, frame = capture.read()
    while ok:
        frames += 1
        assert frame.shape == (256, 256, 3)  # 64 px upscaled ×4
        ok, frame = capture.read()
    capture.release()
    assert frames == 5 + 20  # every step, then the last frame held


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_run_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    code = run(_args("--tasks", "reach", "--episodes", "2", "--json", str(out), "--no-progress"))
    assert code == 0
    printed = capsys.readouterr().out
    assert "policy: scripted expert" in printed and "reach" in printed and "mean" in printed
    assert json.loads(out.read_text())["episodes_per_task"] == {"reach": 2}


def test_cli_model_that_is_not_a_model_directory_fails_naming_it(tmp_path, capsys):
    assert run(_args("--model", str(tmp_path / "no_such_model"))) == 1
    assert "no_such_model" in capsys.readouterr().err


def test_cli_rejects_unknown_task(capsys):
    assert run(_args("--tasks", "reech")) == 2
    assert "did you mean 'reach'" in capsys.readouterr().err


def test_cli_takes_meta_world_task_names(tmp_path):
    out = tmp_path / "report.json"
    assert run(_args("--tasks", "reach-v3", "--episodes", "1", "--max-steps", "5", "--json", str(out),
                     "--no-progress")) == 0
    assert json.loads(out.read_text())["episodes_per_task"] == {"reach": 1}


def test_cli_is_wired_into_conla(capsys):
    from conla_ros.cli import main

    assert main(["eval", "sim", "--tasks", "reach", "--episodes", "1", "--no-progress"]) == 0
    assert "reach" in capsys.readouterr().out


def test_an_exported_model_runs_through_the_robot_runtime(tmp_path):
    # A real model directory (ONNX policy with 9-d proprio = the joint positions, tiny encoder),
    # run by the same torch-free runtime as policy_node: chunks of 4 executed step by step.
    from fixtures.tiny_model import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny", proprio_dim=9, chunk_length=4)
    policy = model_policy(model)
    report = evaluate(policy, ["reach"], episodes_per_task=1, config=WorldConfig(max_steps=12), progress=False)
    assert report.policy.startswith("model tiny")
    assert [e.length for e in report.episodes] == [12] or report.episodes[0].success
    assert run(_args("--model", str(model), "--tasks", "reach", "--episodes", "1", "--max-steps", "5")) == 0


def test_a_model_is_executed_with_the_policy_nodes_chunk_settings(tmp_path):
    # eval sim and policy_node start from one rule (default_chunking): re-plan every half chunk unless
    # model.yaml's execution says otherwise; a command-line override replaces it.
    from fixtures.tiny_model import make_tiny_model

    from conla_ros.core.chunking import default_chunking

    model = make_tiny_model(tmp_path / "tiny", proprio_dim=9, chunk_length=4)
    policy = model_policy(model)
    assert policy.config == default_chunking(4) == ChunkingConfig(replan_every=2)
    calls = []
    inner = policy.policy  # the runtime under the chunk executor: count its inferences over 6 ticks
    original = inner.infer
    inner.infer = lambda obs: calls.append(1) or original(obs)
    obs = {"image": np.zeros((64, 64, 3), np.uint8), "instruction": "reach the goal",
           "proprio": np.zeros(9, np.float32)}
    actions = [policy.infer(obs) for _ in range(6)]
    assert len(calls) == 3 and all(a["actions"].shape == (4,) for a in actions)
    override = model_policy(model, chunking=ChunkingConfig(replan_every=4, temporal_ensembling=True))
    assert override.config.replan_every == 4 and override.config.temporal_ensembling
