"""`conla train lam` end to end on the tiny config: outputs, bad files, exact resume, stop signals, CLI, DDP."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conla_ros.core.config import apply_overrides, load_config
from conla_training.commands.train_lam import add_arguments, run
from conla_training.engine.checkpoint import checkpoint_dirs, load_checkpoint
from conla_training.trainers.lam import LAMRunConfig, LAMTrainer, load_lam, train_lam

REPO = Path(__file__).resolve().parents[3]


def _config(tiny_config_path: Path, root: Path, run_dir: Path, *overrides: str) -> LAMRunConfig:
    config = load_config(LAMRunConfig, tiny_config_path)
    return apply_overrides(config, [f"data.root={root}", f"train.run_dir={run_dir}", *overrides])


def _state(run_dir: Path, step: int) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / f"step_{step:08d}")


def _assert_same_training_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-6), key
    for (ka, va), (kb, vb) in zip(sorted(a["optimizer"]["state"].items()), sorted(b["optimizer"]["state"].items()),
                                  strict=True):
        assert ka == kb
        for name in va:
            assert torch.allclose(torch.as_tensor(va[name]).float(), torch.as_tensor(vb[name]).float(), atol=1e-6)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def test_tiny_run_writes_checkpoints_samples_tensorboard_summary(tiny_config_path, video_root, tmp_path):
    config = _config(tiny_config_path, video_root, tmp_path / "run")
    assert train_lam(config) == 0
    run_dir = tmp_path / "run"
    assert [p.name for p in checkpoint_dirs(run_dir / "checkpoints")] == ["step_00000003", "step_00000006"]
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == ["step_00000003.png", "step_00000006.png"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "config.yaml").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 6
    # The garbage .mp4 is reported by name, skipped and counted; training went on.
    assert summary["skipped_count"] == 1 and list(summary["skipped_files"]) == [str(video_root / "videos" /
                                                                                     "garbage_000.mp4")]
    for key in ("loss/mse", "loss/action", "loss/visual", "codebook/perplexity", "codebook/usage"):
        assert key in summary["last_scalars"]
    assert summary["pairs_per_s"] > 0
    payload = _state(run_dir, 6)
    assert payload["extra"]["label_names"] == ["move down", "move left", "move right", "move up"]
    model, _ = load_lam(run_dir)  # a run folder resolves to its newest checkpoint
    o = torch.rand(2, 3, 32, 32)
    assert model.encode_codes(o, o.flip(-1)).shape == (2, 4)


def test_resume_equals_straight_run(tiny_config_path, clean_video_root, tmp_path):
    """6 steps straight == 3 steps, stop, resume to 6 (across the warm-up and dead-code replacements)."""
    common = ("train.checkpoint_every=0", "train.sample_every=0", "data.num_workers=2")
    straight = _config(tiny_config_path, clean_video_root, tmp_path / "a", *common)
    assert train_lam(straight) == 0
    first_half = _config(tiny_config_path, clean_video_root, tmp_path / "b", *common, "train.steps=3")
    assert train_lam(first_half) == 0
    assert train_lam(apply_overrides(first_half, ["train.steps=6"]), resume=True) == 0
    _assert_same_training_state(_state(tmp_path / "a", 6), _state(tmp_path / "b", 6))
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["start_step"] == 3 and summary["step"] == 6


class _SignalAt(LAMTrainer):
    """Sends itself a signal after optimiser step `at`, like a Ctrl-C or a cluster's SIGTERM would."""

    def __init__(self, config, at: int, signum: int, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.at, self.signum = at, signum

    def after_step(self, model, step):
        extra = super().after_step(model, step)
        if step == self.at:
            os.kill(os.getpid(), self.signum)
        return extra


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_saves_a_checkpoint_and_resume_is_exact(tiny_config_path, clean_video_root, tmp_path, signum):
    common = ("train.checkpoint_every=0", "train.sample_every=0")
    straight = _config(tiny_config_path, clean_video_root, tmp_path / "a", *common)
    assert train_lam(straight) == 0
    stopped = _config(tiny_config_path, clean_video_root, tmp_path / "b", *common)
    assert _SignalAt(stopped, at=4, signum=signum).fit() == 130
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] == 4
    assert [p.name for p in checkpoint_dirs(tmp_path / "b" / "checkpoints")] == ["step_00000004"]
    assert train_lam(stopped, resume=True) == 0
    _assert_same_training_state(_state(tmp_path / "a", 6), _state(tmp_path / "b", 6))


def test_cli_refuses_to_overwrite_a_run_and_resumes(tiny_config_path, clean_video_root, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--config", str(tiny_config_path), "--run-dir", str(tmp_path / "run"), "--set",
            f"data.root={clean_video_root}", "--set", "train.steps=2", "--set", "train.sample_every=0"]
    assert run(parser.parse_args(argv)) == 0
    assert run(parser.parse_args(argv)) == 2
    assert "--resume" in capsys.readouterr().err
    argv[argv.index("train.steps=2")] = "train.steps=4"
    assert run(parser.parse_args([*argv, "--resume"])) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["step"] == 4
    assert run(parser.parse_args([*argv[:-2], "--set", "model.width=64", "--resume"])) == 2  # other model
    assert run(parser.parse_args([*argv, "--set", "train.stepz=1"])) == 2
    assert "did you mean 'steps'" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["commands.train_lam", "commands.label", "commands.export", "commands.eval_lam",
                                    "commands.bench_lam"])
def test_cli_modules_do_not_import_torch(module):
    """`conla --help` must stay light: command modules import torch inside `run` only."""
    code = (f"import sys, argparse, conla_training.{module} as m; m.add_arguments(argparse.ArgumentParser()); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_two_process_ddp_gloo_run_finishes_and_ranks_agree(tiny_config_path, video_root, tmp_path):
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "conla_training.commands.train_lam", "--config", str(tiny_config_path), "--run-dir", str(run_dir),
               "--set", f"data.root={video_root}", "--set", "model.quantizer.dead_code_every=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2 and summary["step"] == 6
    assert len(summary["weights_sha256_per_rank"]) == 2 and summary["ranks_agree"] is True
    assert summary["skipped_count"] == 1  # reported over both ranks, once
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000003", "step_00000006"]
    assert sorted(p.name for p in (run_dir / "checkpoints" / "step_00000006").iterdir()) == [
        "checkpoint.pt", "config.yaml", "rng_rank0.pt", "rng_rank1.pt"]


def test_tiny_run_with_the_action_head_and_labelled_episodes(tiny_config_path, clean_video_root, tmp_path):
    from fixtures.tiny_episodes import write_tiny_episode

    from conla_ros.episodes.contract import EE_DELTA

    demos = tmp_path / "demos"
    for seed in range(2):
        write_tiny_episode(demos / f"reach_{seed}", EE_DELTA, steps=8, seed=seed, size=32)
    config = _config(tiny_config_path, clean_video_root, tmp_path / "run", "model.action_head_dim=4",
                     "model.decoder_residual=true", f"supervision.episodes={demos}", "supervision.batch_size=4")
    assert train_lam(config) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["labelled_pairs"] > 0
    assert summary["last_scalars"]["loss/supervised"] > 0
    model, _ = load_lam(tmp_path / "run")
    assert model.action_head is not None and model.config.decoder_residual
