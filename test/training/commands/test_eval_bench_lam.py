"""`conla eval lam` (metric functions and the command) and `conla bench lam`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conla_ros.core.config import apply_overrides, load_config
from conla_training.commands.bench_lam import main as bench_main
from conla_training.commands.eval_lam import (
    category_accuracy,
    held_out,
    linear_probe_r2,
    one_hot,
    perplexity,
    token_agreement,
)
from conla_training.commands.eval_lam import main as eval_main
from conla_training.trainers.lam import LAMRunConfig, train_lam


def test_one_hot_and_perplexity():
    codes = np.array([[0, 7, 1, 1], [2, 2, 2, 2]])
    features = one_hot(codes, 8)
    assert features.shape == (2, 32) and features.sum(1).tolist() == [4, 4]
    assert features[0, 0] == 1 and features[0, 8 + 7] == 1 and features[1, 24 + 2] == 1
    assert perplexity(np.arange(8).reshape(2, 4), 8) == pytest.approx(8.0)
    assert perplexity(np.zeros((5, 4), dtype=int), 8) == pytest.approx(1.0)


def test_linear_probe_r2_perfect_and_uninformative():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, size=(400, 4))
    actions = np.stack([codes[:, 0] * 0.1, -codes[:, 1] * 0.2], axis=1)  # a linear function of the one-hot codes
    x = one_hot(codes, 8)
    r2, per_dim = linear_probe_r2(x[:300], actions[:300], x[300:], actions[300:])
    assert r2 == pytest.approx(1.0, abs=1e-4) and len(per_dim) == 2
    noise = rng.normal(size=(400, 2))
    r2_noise, _ = linear_probe_r2(x[:300], noise[:300], x[300:], noise[300:])
    assert r2_noise < 0.1


def test_category_accuracy_and_agreement():
    codes = np.array([[c, c, 0, 0] for c in [0, 1, 2, 3] * 20])
    labels = np.array([0, 1, 2, 3] * 20)
    acc, majority = category_accuracy(one_hot(codes[:40], 8), labels[:40], one_hot(codes[40:], 8), labels[40:], 4)
    assert acc == 1.0 and majority == pytest.approx(0.25)
    a = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    b = np.array([[0, 1, 2, 0], [4, 5, 6, 7]])
    result = token_agreement(a, b, 8)
    assert result["token_agreement"] == pytest.approx(7 / 8) and result["action_agreement"] == 0.5
    assert held_out("clip_1", 0.3) == held_out("clip_1", 0.3)
    assert 0.2 < np.mean([held_out(f"c{i}", 0.3) for i in range(1000)]) < 0.4


def _write_square_episodes(root: Path, count: int = 6) -> None:
    """Robot-like episodes: a square moved by the commanded (dx, dy); images before each command."""
    from conla_ros.episodes.writer import EpisodeWriter

    rng = np.random.default_rng(0)
    for e in range(count):
        x, y = 16.0, 16.0
        with EpisodeWriter(root / f"square_{e:03d}", metadata={"task": "push", "seed": e}) as writer:
            writer.add_instruction(0, "push the square")
            for k in range(9):
                image = np.full((40, 40, 3), 90, dtype=np.uint8)
                image[int(y) : int(y) + 8, int(x) : int(x) + 8] = (230, 40, 40)
                stamp = 1_000_000 * (k + 1)
                writer.add_image(stamp, image)
                if k < 8:
                    action = np.append(rng.uniform(-1, 1, size=3), 0.0)
                    writer.add_action(stamp + 1, action)
                    x, y = float(np.clip(x + 2 * action[0], 0, 31)), float(np.clip(y + 2 * action[1], 0, 31))


def test_eval_command_reports_all_offline_metrics(tiny_config_path, video_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = apply_overrides(load_config(LAMRunConfig, tiny_config_path),
                             [f"data.root={video_root}", f"train.run_dir={run_dir}", "train.steps=2",
                              "train.sample_every=0"])
    assert train_lam(config) == 0
    _write_square_episodes(tmp_path / "episodes")
    out = tmp_path / "eval.json"
    assert eval_main(["--lam", str(run_dir), "--videos", str(video_root), "--episodes", str(tmp_path / "episodes"),
                      "--held-out", "0.5", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert 1.0 <= results["perplexity"] <= 8.0
    assert results["pairs"] == 8 * 8 + 6 * 7  # clips: 10 frames, k = 2; episodes: 9 frames
    assert 0.0 <= results["category_accuracy"]["accuracy"] <= 1.0
    assert set(results["linear_probe"]["r2_per_dim"]) == {"ee_dx", "ee_dy", "ee_dz", "gripper"}
    assert results["skipped_count"] == 1
    table = capsys.readouterr().out
    assert "codebook perplexity" in table and "linear-probe R²" in table


def test_eval_reads_the_codebook_size_from_the_lam(tiny_config_path, video_root, tmp_path, capsys):
    run_dir = tmp_path / "run16"
    config = apply_overrides(load_config(LAMRunConfig, tiny_config_path),
                             [f"data.root={video_root}", f"train.run_dir={run_dir}", "train.steps=2",
                              "train.sample_every=0", "model.quantizer.num_codes=16"])
    assert train_lam(config) == 0
    out = tmp_path / "eval16.json"
    assert eval_main(["--lam", str(run_dir), "--videos", str(video_root), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["num_codes"] == 16 and 1.0 <= results["perplexity"] <= 16.0
    assert "codebook perplexity (of 16)" in capsys.readouterr().out


def test_bench_command_prints_the_table(tiny_config_path, video_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_main(["--config", str(tiny_config_path), "--set", f"data.root={video_root}", "--steps", "1",
                       "--warmup", "1", "--loader-batches", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pairs/s" in text and "loader" in text
    rows = json.loads(out.read_text())["rows"]
    assert all(value > 0 for value in rows.values()) and len(rows) == 3


def _write_sim_episode(root: Path, task: str, seed: int, steps: int = 12) -> None:
    from conla_ros.episodes.writer import EpisodeWriter
    from conla_ros.sim.world import SimWorld, WorldConfig

    rng = np.random.default_rng(seed)
    with SimWorld(WorldConfig(image_size=32, max_steps=steps)) as world:
        obs = world.reset(task, seed)
        with EpisodeWriter(root / f"{task}_{seed}", metadata={"task": task, "seed": seed}) as writer:
            k = 0
            while True:
                writer.add_image(1_000_000 * (k + 1), obs.image)
                if world.done:
                    break
                action = np.clip(world.expert_action() + rng.normal(0, 0.1, 4), -1, 1)
                writer.add_action(1_000_000 * (k + 1) + 1, action)
                obs = world.step(action)
                k += 1


def test_replay_reproduces_robot_episodes_and_cross_domain_agreement_runs(tiny_config_path, video_root, tmp_path):
    pytest.importorskip("conla_ros.sim.world")  # sets MUJOCO_GL before mujoco is imported
    from conla_ros.episodes.reader import load_episode
    from conla_training.commands.eval_lam import _replay_human

    _write_sim_episode(tmp_path / "episodes", "reach", 3)
    episode = load_episode(tmp_path / "episodes" / "reach_3")
    human = _replay_human(episode, 32)
    assert human.shape == episode.images.shape and not np.array_equal(human, episode.images)
    run_dir = tmp_path / "run"
    config = apply_overrides(load_config(LAMRunConfig, tiny_config_path),
                             [f"data.root={video_root}", f"train.run_dir={run_dir}", "train.steps=1",
                              "train.sample_every=0"])
    assert train_lam(config) == 0
    out = tmp_path / "eval.json"
    assert eval_main(["--lam", str(run_dir), "--episodes", str(tmp_path / "episodes"), "--held-out", "1.0",
                      "--cross-domain", "replay", "--out", str(out)]) == 0
    cross = json.loads(out.read_text())["cross_domain"]
    assert cross["pairs"] == 13 - 2 and 0.0 <= cross["token_agreement"] <= 1.0
