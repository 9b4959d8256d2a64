"""The training-loop settings shared by every trainer (LAM, VLA, policy): one frozen dataclass.

No torch import here, so CLI modules and config tooling can use it without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, precision, logging and checkpointing of one run.

    `batch_size` is global: split evenly over the processes of a distributed run, so one config
    means the same optimisation on 1 CPU, 1 GPU or 8 GPUs. Defaults follow LAPA (docs/method.md, "Stage 1"):
    Adam lr 1e-4, betas (0.9, 0.99), gradient clip 0.5, batch 64, 100k steps.
    """

    run_dir: Path = Path("runs/lam/default")
    steps: int = 100_000
    batch_size: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    grad_clip: float = 0.5  # max global gradient norm; 0: off
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_warmup_steps: int = 0  # linear warm-up from 0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, no on CPU
    seed: int = 0
    log_every: int = 10  # steps between scalar logs (TensorBoard, progress bar)
    sample_every: int = 1000  # steps between PNG sample grids (0: never)
    checkpoint_every: int = 1000  # steps between checkpoints (0: only at exit)
    keep_checkpoints: int = 3  # newest N kept (0: all)
    ema_decay: float = 0.0  # exponential moving average of the weights (0: off); checkpoints carry it
    compile: bool = False  # torch.compile the model
    progress: bool = True  # tqdm progress bar on the main process

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if self.lr <= 0 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"lr must be > 0 and betas in [0, 1), got {self.lr}, {self.betas}")
        for name in ("grad_clip", "weight_decay", "lr_warmup_steps", "sample_every", "checkpoint_every",
                     "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
