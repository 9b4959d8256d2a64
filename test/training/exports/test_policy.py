"""`conla export --checkpoint`: policy.onnx + model.yaml + instruction encoder, parity, and the torch-free runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.tiny_model import write_tiny_text_encoder

import conla_training.exports.policy as export_module
from conla_ros.core.instruction_encoder import InstructionEncoder
from conla_ros.core.model_spec import load_model_spec
from conla_ros.core.preprocessing import preprocess_image
from conla_ros.core.runtime import load_policy
from conla_training.commands.export import main as export_main
from conla_training.commands.train_policy import main as policy_main
from conla_training.exports.policy import ExportError, export_policy
from conla_training.trainers.vla import load_vla

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    from conla_ros.sim.generate_episodes import generate_episodes

    episodes = tmp_path_factory.mktemp("episodes")
    generate_episodes(["reach"], 2, episodes, max_steps=10, progress=False)
    return episodes, write_tiny_text_encoder(tmp_path_factory.mktemp("encoder"))


def _train(data, run: Path, *extra: str) -> Path:
    episodes, encoder = data
    assert policy_main(["--config", str(REPO / "config" / "policy_train_tiny.yaml"), "--run-dir", str(run),
                        "--set", f"data.root={episodes}", "--set", f"data.text_encoder={encoder}",
                        "--set", "train.steps=2", *extra]) == 0
    return run


@pytest.fixture(scope="module")
def chunk_run(data, tmp_path_factory) -> Path:
    return _train(data, tmp_path_factory.mktemp("chunk"))


def _obs(size: int = 64, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "instruction": "reach to the goal",
            "proprio": rng.normal(0, 0.3, 9)}


def test_export_runs_in_the_runtime_like_torch(chunk_run, data, tmp_path):
    out = tmp_path / "models" / "tiny_chunk"
    result = export_policy(chunk_run, out, episodes=data[0], parity_samples=4)
    assert result["parity_max_abs_diff"] <= 1e-4 and result["samples"] > 4  # synthetic + real
    assert sorted(p.name for p in out.iterdir()) == ["model.yaml", "policy.onnx", "text_encoder.onnx",
                                                     "tokenizer.json"]
    spec = load_model_spec(out)
    model, payload = load_vla(chunk_run)
    assert spec.chunk_length == 4 and spec.action_dim == 4 and spec.proprio.dim == 9
    # The action space is the episodes' contract, saved in the checkpoint (here: the sim's ee twist + gripper).
    contract = payload["extra"]["contract"]
    assert spec.action_space.kind == contract["action"]["kind"] == "ee_delta"
    assert spec.action_space.names == tuple(contract["action"]["names"]) == ("ee_dx", "ee_dy", "ee_dz", "gripper")
    assert spec.action_space.units == ("cm/step",) * 3 + ("1",) and spec.action_space.gripper == "gripper"
    assert spec.control_rate_hz == contract["control_rate_hz"]
    assert spec.proprio.names == tuple(payload["extra"]["joint_names"])
    np.testing.assert_allclose(spec.action_space.low, model.action_low.numpy(), rtol=1e-6)
    assert spec.preprocessing == model.config.preprocessing and spec.control_rate_hz == 80.0
    assert spec.provenance.parity_max_abs_diff == result["parity_max_abs_diff"]
    assert spec.provenance.config["run"]["model"]["head"] == "chunk" and spec.instruction_encoder.directory == "."

    # The torch-free runtime on a raw camera image: the same actions as torch on the same inputs.
    policy = load_policy(out, providers="cpu")
    for seed in range(3):
        obs = _obs(seed=seed)
        got = policy.infer(obs)["actions"]
        embedding = InstructionEncoder(data[1]).encode(obs["instruction"])
        with torch.no_grad():
            want = model.predict_actions(torch.from_numpy(preprocess_image(obs["image"], spec.preprocessing))[None],
                                         torch.from_numpy(np.array(embedding))[None],
                                         torch.tensor(obs["proprio"], dtype=torch.float32)[None])[0].numpy()
        assert got.shape == (4, 4)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_bins_head_exports(data, tmp_path):
    run = _train(data, tmp_path / "bins", "--set", "model.head=bins", "--set", "use_proprio=false")
    out = tmp_path / "bins_model"
    assert export_main(["--checkpoint", str(run), "--out", str(out), "--parity-samples", "2"]) == 0
    actions = load_policy(out, providers="cpu").infer(_obs())["actions"]
    model, _ = load_vla(run)
    centres = model.bin_centres.numpy()  # the expected bin centre lies within the centres' range
    assert ((actions >= centres.min(1) - 1e-5) & (actions <= centres.max(1) + 1e-5)).all()


def test_reference_mode_points_at_the_training_encoder(chunk_run, data, tmp_path):
    out = tmp_path / "ref"
    export_policy(chunk_run, out, text_encoder_mode="reference", parity_samples=1)
    assert not (out / "text_encoder.onnx").exists()
    assert load_model_spec(out).instruction_encoder.directory == str(data[1].resolve())
    assert load_policy(out, providers="cpu").infer(_obs())["actions"].shape == (4, 4)


def test_failures_are_loud_and_leave_nothing(chunk_run, data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m"
    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", -1.0)  # any difference, even 0, fails
    with pytest.raises(ExportError, match="parity check failed"):
        export_policy(chunk_run, out, parity_samples=1)
    assert not out.exists() and not list(tmp_path.glob(".m.*"))
    monkeypatch.undo()
    out.mkdir()
    assert export_main(["--checkpoint", str(chunk_run), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_a_latent_checkpoint_is_refused(tmp_path):
    from conla_ros.core.config import config_to_dict
    from conla_training.models.vla import VLA, VLAConfig

    run = tmp_path / "latent"
    (run / "checkpoints" / "step_00000001").mkdir(parents=True)
    model = VLA(VLAConfig(**{"patch_size": 8, "vision_width": 16, "vision_layers": 1, "vision_heads": 2,
                             "width": 16, "fusion_layers": 1, "fusion_heads": 2}))
    torch.save({"format": 1, "step": 1, "model": model.state_dict(), "model_config": config_to_dict(model.config),
                "model_class": "conla_training.models.vla.VLA", "extra": {}},
               run / "checkpoints" / "step_00000001" / "checkpoint.pt")
    with pytest.raises(ExportError, match="finetune it with `conla train policy`"):
        export_policy(run, tmp_path / "out")


def test_a_checkpoint_without_the_contract_is_refused(chunk_run, tmp_path):
    """Nothing is guessed from the model's sizes: a checkpoint from before the contract must be retrained."""
    from conla_training.engine.checkpoint import load_checkpoint

    payload = load_checkpoint(chunk_run)
    del payload["extra"]["contract"]
    old = tmp_path / "old_run" / "checkpoints" / "step_00000002"
    old.mkdir(parents=True)
    torch.save(payload, old / "checkpoint.pt")
    with pytest.raises(ExportError, match=r"no extra.contract .* retrain it with `conla train policy`"):
        export_policy(tmp_path / "old_run", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_replan_every_is_written_to_model_yaml_and_checked(chunk_run, tmp_path):
    export_policy(chunk_run, tmp_path / "m", replan_every=1)
    execution = load_model_spec(tmp_path / "m").execution
    assert execution is not None and execution.replan_every == 1 and not execution.temporal_ensembling
    with pytest.raises(ExportError, match="--replan-every 99"):
        export_policy(chunk_run, tmp_path / "too_far", replan_every=99)
    assert not (tmp_path / "too_far").exists()
