"""`conla export --checkpoint CKPT --out models/NAME`: a finetuned policy → the robot's model directory.

OUT (docs/architecture.md "Model directory", `conla_ros.core.model_spec`) gets:
    policy.onnx        image (1, 3, S, S) float32 preprocessed, instruction_embedding (1, 384) float32
                       [, proprio (1, P) float32, robot units in model.yaml proprio.names order]
                       → actions (1, H, A) float32 in ROBOT units: the graph de-normalises (chunk head)
                       or decodes the bins (expected or argmax bin centre) with the training statistics
    model.yaml         `ModelSpec`: preprocessing (the model's, used in training), action space (kind,
                       names, units, gripper: the checkpoint's `extra.contract`, from the episodes) with
                       the 1st/99th percentile statistics, chunk length, control rate of the episodes,
                       tensor names, the instruction encoder (+ its probe fingerprint) and provenance
                       (checkpoint, step, data, the run config verbatim, git commit, parity, versions)
    text_encoder.onnx + tokenizer.json
                       the instruction encoder the policy was trained with (`text_encoder="copy"`, the
                       default), or nothing and a reference (`"reference"`: null = the shared cache when
                       training used it, else its absolute folder)

Export: `torch.onnx.export` with the TorchScript-based exporter (`dynamo=False`, opset 17, as
export_text_encoder): the transformers SigLIP/ViT modules are built with eager attention and
export to plain MatMul/Softmax graphs. Parity: onnxruntime (CPU) against torch on `parity_samples`
synthetic observations (random images in the preprocessed range, random unit embeddings, proprio
around the training mean) and, with `episodes`, real samples; max abs difference in robot units
must be ≤ `PARITY_TOLERANCE` (1e-4) or the export fails (`ExportError`, exit 1) and leaves nothing.
Finally the directory is loaded with the torch-free runtime (`conla_ros.core.runtime.load_policy`)
and run once. Everything is written to a hidden sibling folder renamed into place at the end.

torch is imported inside the functions.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from conla_ros.core.atomic_dir import publish_directory
from conla_training.exports.lineage import lineage
from conla_training.exports.provenance import git_commit

__all__ = ["PARITY_TOLERANCE", "RECIPE_HELP", "REPLAN_HELP", "ExportError", "export_policy", "read_recipe"]

PARITY_TOLERANCE = 1e-4
OPSET = 17
IMAGE, INSTRUCTION, PROPRIO, ACTIONS = "image", "instruction_embedding", "proprio", "actions"


class ExportError(RuntimeError):
    """The export cannot be made or failed its checks."""


REPLAN_HELP = ("model.yaml execution.replan_every: ticks between inferences on the robot and in eval sim (default: "
               "the training config's execution, else half the chunk)")
RECIPE_HELP = ("a text file of the commands that made the data and the model, one per line; kept in model.yaml "
               "(provenance.recipe) beside the lineage read from the run folders")


def read_recipe(path: Path | None) -> tuple[str, ...]:
    """The non-empty lines of a recipe file (commands and # comments), or () for None."""
    if path is None:
        return ()
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ExportError(f"--recipe {path}: cannot read it: {error.strerror or error}") from None
    return tuple(line.rstrip() for line in text.splitlines() if line.strip())


def _graph(model):
    import torch

    class PolicyGraph(torch.nn.Module):
        """The exported computation: preprocessed image, embedding[, proprio] → actions in robot units."""

        def __init__(self, vla) -> None:
            super().__init__()
            self.vla = vla

        def forward(self, image, instruction_embedding, proprio=None):
            return self.vla.predict_actions(image, instruction_embedding, proprio)  # (B, H, A)

    return PolicyGraph(model).eval()


def _inputs(model, n: int, seed: int, episodes: Path | None, payload: dict) -> list[tuple[np.ndarray, ...]]:
    """Parity inputs: synthetic, plus real episode samples when `episodes` is given."""
    c = model.config
    rng = np.random.default_rng(seed)
    size, mean = c.preprocessing.size, model.proprio_mean.numpy()
    samples = []
    for _ in range(n):
        image = rng.uniform(-1.0, 1.0, (1, 3, size, size)).astype(np.float32)
        emb = rng.normal(size=(1, c.instruction_dim)).astype(np.float32)
        emb /= np.linalg.norm(emb)
        sample = (image, emb)
        if c.proprio_dim:
            sample += ((mean + rng.normal(0, 0.5, c.proprio_dim)).astype(np.float32)[None],)
        samples.append(sample)
    if episodes is not None:
        from conla_training.datasets.episodes import EpisodeDataConfig, EpisodeDataset
        from conla_training.trainers.vla import instruction_embeddings

        data = EpisodeDataset(EpisodeDataConfig(root=episodes, max_episodes=2), c.preprocessing, c.chunk_length,
                              c.proprio_dim > 0)
        data.set_embeddings(instruction_embeddings(data.instructions, payload["extra"].get("text_encoder"))[0])
        for i in rng.choice(len(data), size=min(n, len(data)), replace=False):
            s = data.sample(int(i))
            sample = (s["image"][None], s["instruction"][None])
            if c.proprio_dim:
                sample += (s["proprio"][None],)
            samples.append(sample)
    return samples


def _contract(payload: dict, checkpoint: Path, config: Any):
    """The checkpoint's `extra.contract` (`EpisodeContract`), checked against the model's sizes; ExportError.

    It is the only source of the action space, control rate and proprio names: nothing is guessed.
    """
    from conla_ros.episodes.contract import EpisodeContract

    where = f"{checkpoint} (step {payload.get('step')})"
    value = payload.get("extra", {}).get("contract")
    if value is None:
        raise ExportError(f"{where}: no extra.contract (the episodes' action space, control rate and proprio names); "
                          f"it was trained before checkpoints carried it: retrain it with `conla train policy`")
    try:
        contract = EpisodeContract.from_dict(value, "extra.contract")
    except ValueError as error:
        raise ExportError(f"{where}: {error}") from None
    if contract.action.dim != config.action_dim:
        raise ExportError(f"{where}: extra.contract.action has {contract.action.dim} dimensions "
                          f"{list(contract.action.names)}, the model outputs {config.action_dim}")
    if len(contract.proprio_names) != config.proprio_dim:
        raise ExportError(f"{where}: extra.contract.proprio_names has {len(contract.proprio_names)} names "
                          f"{list(contract.proprio_names)}, the model takes {config.proprio_dim} proprio values")
    return contract


def _spec(model, payload: dict, name: str, encoder: Any, parity: float, checkpoint: Path,
          recipe: tuple[str, ...] = ()):
    import onnxruntime
    import torch

    from conla_ros.core.chunking import ChunkingConfig
    from conla_ros.core.config import config_from_dict
    from conla_ros.core.model_spec import (
        ActionSpace,
        ModelIO,
        ModelSpec,
        ProprioSpec,
        Provenance,
        TensorSpec,
    )

    c, extra = model.config, payload.get("extra", {})
    execution = None if extra.get("execution") is None else \
        config_from_dict(ChunkingConfig, extra["execution"], source=f"{checkpoint} (extra.execution)")
    contract = _contract(payload, checkpoint, c)  # kind, names, units, gripper, rate, proprio: from the episodes
    action = contract.action
    proprio = io_proprio = None
    if c.proprio_dim:
        proprio = ProprioSpec(names=contract.proprio_names, dim=c.proprio_dim)
        io_proprio = TensorSpec(PROPRIO, (1, c.proprio_dim))
    size = c.preprocessing.size
    return ModelSpec(
        name=name,
        preprocessing=c.preprocessing,
        # low/high: the model's normalisation, the 1st/99th percentiles of the training actions.
        action_space=ActionSpace(kind=action.kind, names=action.names, units=action.units,
                                 low=model.action_low.tolist(), high=model.action_high.tolist(),
                                 gripper=action.gripper),
        chunk_length=c.chunk_length,
        control_rate_hz=contract.control_rate_hz,
        execution=execution,
        proprio=proprio,
        io=ModelIO(image=TensorSpec(IMAGE, (1, 3, size, size)),
                   instruction=TensorSpec(INSTRUCTION, (1, c.instruction_dim)),
                   actions=TensorSpec(ACTIONS, (1, c.chunk_length, c.action_dim)), proprio=io_proprio),
        instruction_encoder=encoder,
        provenance=Provenance(
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"), git_commit=git_commit(),
            data=tuple(extra.get("data") or ()),
            config={"run": payload.get("run_config", {}), "model": payload.get("model_config", {})},
            checkpoint=f"{checkpoint} (step {payload.get('step')})", parity_max_abs_diff=float(parity),
            versions={"torch": str(torch.__version__), "onnxruntime": str(onnxruntime.__version__)},
            lineage=tuple(lineage(checkpoint)), recipe=recipe),
    )


def export_policy(checkpoint: Path | str, out: Path | str, *, name: str | None = None,
                  text_encoder_mode: str = "copy", episodes: Path | None = None, parity_samples: int = 16,
                  opset: int = OPSET, force: bool = False, recipe: tuple[str, ...] = (),
                  replan_every: int | None = None) -> dict[str, Any]:
    """Export; returns {"out", "parity_max_abs_diff", "samples", "policy_bytes"}. Raises ExportError."""
    import warnings

    import onnx
    import onnxruntime as ort
    import torch

    from conla_ros.core.instruction_encoder import ENCODER_ONNX, ENCODER_TOKENIZER, InstructionEncoder, text_encoder_dir
    from conla_ros.core.model_spec import InstructionEncoderSpec, save_model_spec
    from conla_ros.core.runtime import load_policy
    from conla_training.exports.text_encoder import PROBE_TEXT, PROBE_VALUES
    from conla_training.trainers.vla import load_vla

    checkpoint, out = Path(checkpoint), Path(out)
    if text_encoder_mode not in ("copy", "reference"):
        raise ExportError(f"text_encoder_mode must be 'copy' or 'reference', got {text_encoder_mode!r}")
    if out.exists() and not force:
        raise ExportError(f"{out} already exists (pass --force to replace it)")
    try:
        model, payload = load_vla(checkpoint)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as error:
        raise ExportError(f"{checkpoint}: cannot load a VLA checkpoint: {error}") from error
    c = model.config
    if c.head == "latent":
        raise ExportError(f"{checkpoint}: a latent-pretrained VLA (head: latent) outputs latent codes, not robot "
                          f"actions; finetune it with `conla train policy` (init_from) and export that")
    _contract(payload, checkpoint, c)  # refuse a checkpoint without the episodes' contract before any work
    encoder_dir = Path(payload.get("extra", {}).get("text_encoder") or text_encoder_dir())
    try:
        encoder = InstructionEncoder(encoder_dir, dim=c.instruction_dim)
    except Exception as error:
        raise ExportError(f"the instruction encoder the policy was trained with is unusable: {error}") from error
    probe = tuple(round(float(v), 6) for v in encoder.encode_batch([PROBE_TEXT])[0, :PROBE_VALUES])
    if text_encoder_mode == "copy":
        directory = "."
    else:
        directory = None if encoder_dir.resolve() == text_encoder_dir().resolve() else str(encoder_dir.resolve())
    encoder_spec = InstructionEncoderSpec(dim=c.instruction_dim, directory=directory, probe_text=PROBE_TEXT,
                                          probe_embedding=probe)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        graph = _graph(model)
        samples = _inputs(model, max(parity_samples, 1), 0, episodes, payload)
        names = [IMAGE, INSTRUCTION] + ([PROPRIO] if c.proprio_dim else [])
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, tuple(torch.from_numpy(x) for x in samples[0]), str(tmp / "policy.onnx"),
                              input_names=names, output_names=[ACTIONS], opset_version=opset, dynamo=False)
        onnx.checker.check_model(str(tmp / "policy.onnx"))
        session = ort.InferenceSession(str(tmp / "policy.onnx"), providers=["CPUExecutionProvider"])
        worst = 0.0
        with torch.no_grad():
            for sample in samples:
                got = session.run([ACTIONS], dict(zip(names, sample, strict=True)))[0]
                want = graph(*(torch.from_numpy(x) for x in sample)).numpy()
                if got.shape != want.shape:
                    raise ExportError(f"policy.onnx returns shape {got.shape}, torch {want.shape}")
                worst = max(worst, float(np.abs(got - want).max()))
        if not worst <= PARITY_TOLERANCE:
            raise ExportError(f"parity check failed: onnxruntime and torch differ by {worst:.3g} (> "
                              f"{PARITY_TOLERANCE:g}) on {len(samples)} samples; nothing was written to {out}")
        if text_encoder_mode == "copy":
            for file in (ENCODER_ONNX, ENCODER_TOKENIZER):
                shutil.copy2(encoder_dir / file, tmp / file)
        spec = _spec(model, payload, name or out.name, encoder_spec, worst, checkpoint, recipe)
        if replan_every is not None:  # how the robot should run the chunks: chosen after training
            from dataclasses import replace

            from conla_ros.core.chunking import default_chunking

            try:
                execution = replace(default_chunking(c.chunk_length, spec.execution), replan_every=replan_every)
                spec = replace(spec, execution=default_chunking(c.chunk_length, execution))
            except ValueError as error:
                raise ExportError(f"--replan-every {replan_every}: {error}") from None
        save_model_spec(spec, tmp)
        # The directory must load and run with the robot's torch-free runtime (with the encoder it names).
        policy = load_policy(tmp, providers="cpu", threads=1)
        size = c.preprocessing.size
        obs = {"image": np.zeros((size, size, 3), np.uint8), "instruction": "pick up the red block"}
        if c.proprio_dim:
            obs["proprio"] = model.proprio_mean.numpy().astype(np.float64)
        result = policy.infer(obs)
        if result["actions"].shape != (c.chunk_length, c.action_dim):
            raise ExportError(f"runtime returned actions of shape {result['actions'].shape}")
        publish_directory(tmp, out)  # readable by all, and `out` is never missing for more than a rename
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "parity_max_abs_diff": worst, "samples": len(samples),
            "policy_bytes": (out / "policy.onnx").stat().st_size}
