"""Training the latent action model: the run config (model + data + train) and the LAM trainer.

`conla train lam` (conla_training.commands.train_lam) is the command line over this module; tests and
notebooks call `train_lam(config)` directly. The loop itself is conla_training.engine.Trainer.

Per step: a batch of frame pairs → `LatentActionModel.forward` with `contrast = step >=
contrast.warmup_steps` (MSE only before) → Adam step → dead-code replacement every
`quantizer.dead_code_every` steps while step < `quantizer.dead_code_until`. Logged scalars:
loss/total, loss/mse, loss/action, loss/visual (0 while off), codebook/perplexity (of the batch's
codes), codebook/usage (share of the K codes used in the batch), codebook/replaced, train/lr,
train/grad_norm, speed/pairs_per_s, speed/loader_wait_fraction. Sample grids: rows o_t, o_{t+k},
the eval-mode reconstruction from the hard codes, with |o_{t+k} − o_t| as a fourth row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from conla_ros.core.config import config_from_dict, config_to_dict
from conla_training.datasets.video_pairs import DataConfig, FramePairDataset, LabelledPairs, collate_pairs
from conla_training.engine.checkpoint import load_checkpoint
from conla_training.engine.config import TrainConfig
from conla_training.engine.loader import batch_loader
from conla_training.engine.trainer import Trainer
from conla_training.models.lam import LAMConfig, LatentActionModel

__all__ = ["LAMRunConfig", "LAMTrainer", "SupervisionConfig", "load_lam", "train_lam"]

SAMPLE_ITEMS = 8


@dataclass(frozen=True)
class SupervisionConfig:
    """Extension beyond LAPA/ConLA (LAOM, CLAM): a few labelled robot episodes for the action head.

    Used exactly when `model.action_head_dim` > 0; every step adds `batch_size` labelled pairs
    (LabelledPairs) to the unlabelled batch. Keep these episodes apart from the probe's held-out ones.
    """

    episodes: Path | None = None  # rosbag2 robot episodes with commands (e.g. 2 demos per task)
    batch_size: int = 16
    max_episodes: int = 0  # only the first N (0: all)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_episodes < 0:
            raise ValueError(f"batch_size must be >= 1 and max_episodes >= 0, got {self.batch_size}, "
                             f"{self.max_episodes}")


@dataclass(frozen=True)
class LAMRunConfig:
    """One YAML file: `model:` (LAMConfig), `data:` (DataConfig), `train:` (TrainConfig), and
    `supervision:` (SupervisionConfig, only with an action head)."""

    model: LAMConfig = field(default_factory=LAMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)

    def __post_init__(self) -> None:
        if (self.model.action_head_dim > 0) != (self.supervision.episodes is not None):
            raise ValueError("model.action_head_dim > 0 and supervision.episodes go together: the action head "
                             f"needs labelled episodes and they need a head (got action_head_dim "
                             f"{self.model.action_head_dim}, supervision.episodes {self.supervision.episodes})")


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) float in [0, 1] → (B, S, S, 3) uint8."""
    return (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def sample_grid(o_t: torch.Tensor, o_tk: torch.Tensor, recon: torch.Tensor, pad: int = 2) -> np.ndarray:
    """Rows o_t / o_{t+k} / reconstruction / |o_{t+k} − o_t|, one column per item → (H, W, 3) uint8."""
    rows = [_to_uint8(o_t), _to_uint8(o_tk), _to_uint8(recon), _to_uint8((o_tk - o_t).abs())]
    n, s = rows[0].shape[:2]
    grid = np.full((4 * (s + pad) + pad, n * (s + pad) + pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c in range(n):
            y, x = pad + r * (s + pad), pad + c * (s + pad)
            grid[y : y + s, x : x + s] = row[c]
    return grid


class LAMTrainer(Trainer):
    unit = "pairs"

    def __init__(self, config: LAMRunConfig, resume: bool = False) -> None:
        run_config = config_to_dict(config)
        super().__init__(config.train, run_config, yaml.safe_dump(run_config, sort_keys=False), resume)
        self.config = config
        contrast = config.model.contrast
        # During the MSE-only warm-up (and with unlabelled batches) the ConLA heads get no gradient.
        self.find_unused_parameters = contrast.enabled
        self.dataset, missing = FramePairDataset.from_config(
            config.data, config.model.preprocessing(), seed=config.train.seed,
            second_pair=contrast.needs_second_pair)
        self.note_skipped((str(Path(config.data.root) / name), reason) for name, reason in missing)
        self.labelled: LabelledPairs | None = None
        sup = config.supervision
        if sup.episodes is not None:
            self.labelled = LabelledPairs.from_folder(sup.episodes, config.model.preprocessing(), config.data.frame_gap,
                                                      seed=config.train.seed, batch_size=sup.batch_size,
                                                      max_episodes=sup.max_episodes)
            if self.labelled.action_dim != config.model.action_head_dim:
                raise ValueError(f"supervision.episodes have {self.labelled.action_dim}-dimensional actions, "
                                 f"model.action_head_dim is {config.model.action_head_dim}")

    def build_model(self) -> LatentActionModel:
        model = LatentActionModel(self.config.model)
        self.num_parameters = model.num_parameters()
        return model

    def model_config(self) -> dict[str, Any]:
        return config_to_dict(self.config.model)

    def build_loader(self, start_batch: int, rank: int, world_size: int):
        return batch_loader(self.dataset, self.config.train, self.config.data.num_workers, start_batch, rank,
                            world_size, collate_pairs)

    def compute_loss(self, model, batch: dict, step: int):
        contrast = step >= self.config.model.contrast.warmup_steps
        supervised = None
        if self.labelled is not None:
            supervised = tuple(x.to(batch["o_t"].device) for x in self.labelled.batch(step))
        output, loss = model(batch["o_t"], batch["o_tk"], labels=batch["label"], o_t2=batch.get("o_t2"),
                             o_tk2=batch.get("o_tk2"), contrast=contrast, supervised=supervised)
        zero = loss.detach() * 0
        quantizer = getattr(model, "module", model).quantizer
        codes = output.codes
        scalars = {
            "loss/total": loss.detach(),
            "loss/mse": output.losses["mse"],
            "loss/action": output.losses.get("action", zero),
            "loss/visual": output.losses.get("visual", zero),
            "loss/supervised": output.losses.get("supervised", zero),
            "codebook/perplexity": quantizer.perplexity(codes),
            "codebook/usage": torch.unique(codes).numel() / torch.tensor(float(quantizer.num_codes)),
        }
        return loss, scalars, output

    def after_step(self, model: LatentActionModel, step: int) -> dict[str, float]:
        q = self.config.model.quantizer
        if step < q.dead_code_until and step % q.dead_code_every == 0:
            return {"codebook/replaced": float(model.quantizer.replace_dead_codes())}
        return {}

    def before_save(self, model: LatentActionModel) -> None:
        model.quantizer.consolidate_usage()

    def sample_grid(self, model: LatentActionModel, batch: dict, output) -> np.ndarray:
        o_t, o_tk = batch["o_t"][:SAMPLE_ITEMS], batch["o_tk"][:SAMPLE_ITEMS]
        recon = model.reconstruct(o_t, model.encode_codes(o_t, o_tk))
        return sample_grid(o_t, o_tk, recon)

    def extra_state(self) -> dict[str, Any]:
        return {"label_names": list(self.dataset.label_names)}

    def summary_extra(self) -> dict[str, Any]:
        return {"clips": len(self.dataset.clips), "label_names": list(self.dataset.label_names),
                "parameters": getattr(self, "num_parameters", None),
                "labelled_pairs": len(self.labelled) if self.labelled is not None else 0}


def train_lam(config: LAMRunConfig, resume: bool = False) -> int:
    """Train (or with `resume`, continue) the run of `config`; returns 0, or 130 when interrupted."""
    return LAMTrainer(config, resume=resume).fit()


def load_lam(path: Path | str, map_location: str | torch.device = "cpu") -> tuple[LatentActionModel, dict[str, Any]]:
    """(model in eval mode, checkpoint payload) from a checkpoint file, step folder or run folder."""
    payload = load_checkpoint(path, map_location=map_location)
    config = config_from_dict(LAMConfig, payload["model_config"], source=f"{path} (model_config)")
    model = LatentActionModel(config)
    model.load_state_dict(payload["model"])
    return model.eval(), payload
