"""The model-free measurements of conla_training.analysis.lam_diagnosis on synthetic replays."""

from __future__ import annotations

import numpy as np

from conla_training.analysis.lam_diagnosis import (
    RENDERINGS,
    Replay,
    data_diagnosis,
    pair_arrays,
    pixel_features,
    probe_best,
)


def _replay(name: str, held_out: bool, seed: int, steps: int = 30, size: int = 16) -> Replay:
    """A square that moves by the command (x, y) each step; the human rendering adds full-frame flicker."""
    rng = np.random.default_rng(seed)
    commands = np.concatenate([rng.uniform(-1, 1, (steps, 2)), np.zeros((steps, 2))], axis=1)
    pos = np.cumsum(np.vstack([[8.0, 8.0], commands[:, :2]]), axis=0)  # (T, 2) pixels
    frames = np.full((steps + 1, size, size, 3), 100, np.uint8)
    for t, (x, y) in enumerate(pos):
        xi, yi = int(np.clip(round(x), 0, size - 3)), int(np.clip(round(y), 0, size - 3))
        frames[t, yi : yi + 3, xi : xi + 3] = 250
    flicker = np.clip(frames.astype(int) + rng.integers(-60, 60, (steps + 1, 1, 1, 3)), 0, 255).astype(np.uint8)
    ee = np.concatenate([pos / 100.0, np.zeros((steps + 1, 1))], axis=1)
    return Replay(name=name, held_out=held_out, frames={"robot": frames, "human": flicker, "human_static": frames},
                  ee=ee, gripper=np.zeros(steps + 1), commands=commands)


def test_pair_arrays_targets_are_the_mean_command_over_the_gap():
    r = _replay("a", False, 0)
    starts, target = pair_arrays(r, 4)
    assert len(starts) == len(target) == len(r.ee) - 4
    np.testing.assert_allclose(target[3], r.commands[3:7].mean(0))


def test_pixel_features_shape_and_zero_for_static_frames():
    frames = np.full((5, 16, 16, 3), 7, np.uint8)
    x = pixel_features(frames, np.arange(3), 2, size=4)
    assert x.shape == (3, 4 * 4 * 3)
    assert np.all(x == 0)


def test_probe_best_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ rng.normal(size=(3, 2))
    best = probe_best(x[:150], y[:150], x[150:], y[150:])
    assert best["r2"] > 0.99 and best["ridge"] in (1e-3, 1e-1)


def test_data_diagnosis_sees_the_flicker_and_the_physical_ceiling():
    replays = [_replay(f"e{i}", i % 3 == 0, i) for i in range(9)]
    out = data_diagnosis(replays, (2, 4))
    row = out["gaps"]["4"]
    assert set(row["changed_pixel_share"]) == set(RENDERINGS)
    assert row["copy_mse_share_flicker_distractor"] > 0.5  # the flicker dominates the frame change
    assert row["probe_physical"]["r2"] > 0.3  # the displacement predicts the (x, y) commands
    assert out["gaps"]["4"]["ee_displacement_cm"]["median"] > out["gaps"]["2"]["ee_displacement_cm"]["median"]


def test_model_diagnosis_reports_probes_decoder_use_and_agreement(tmp_path):
    import torch

    from conla_ros.core.config import config_to_dict
    from conla_training.analysis.lam_diagnosis import model_diagnosis
    from conla_training.engine.checkpoint import FORMAT
    from conla_training.models.lam import ContrastConfig, LAMConfig, LatentActionModel

    config = LAMConfig(image_size=16, patch_size=4, width=16, heads=2, encoder_layers=1, decoder_layers=1,
                       mlp_ratio=1.0, contrast=ContrastConfig(visual_dim=4))
    torch.manual_seed(0)
    model = LatentActionModel(config)
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "model": model.state_dict(), "model_config": config_to_dict(config),
                "run_config": {"data": {"frame_gap": 3}}, "step": 7}, path)
    replays = [_replay(f"e{i}", i % 3 == 0, i) for i in range(6)]
    out = model_diagnosis(path, replays)
    assert out["frame_gap"] == 3 and out["step"] == 7
    for name in ("robot", "human", "human_static"):
        row = out[name]
        assert set(row["recon_mse"]) >= {"true_codes", "shuffled_codes", "continuous_latent", "copy_o_t",
                                         "true_codes_moving"}
        assert np.isfinite(row["probe_codes"]["r2"]) and np.isfinite(row["probe_latent"]["r2"])
        assert len(row["perplexity_per_token"]) == 4 and len(row["dead_codes_per_token"]) == 4
    # the robot and human_static renderings of the synthetic replay are the same frames
    assert out["robot_vs_static"]["token_agreement"] == 1.0
    assert 0.0 <= out["human_vs_static"]["token_agreement"] <= 1.0
