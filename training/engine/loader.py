"""The data loader every trainer builds: deterministic, sharded, resumable batches.

Batches come from `PairBatchSampler` (the batch at global index b is fixed by the seed), started
at the step a resumed run continues from, so a resumed run sees exactly the batches the
uninterrupted run would have. The DataLoader gets a `torch.Generator` of its own: without it,
worker seeding draws from the global RNG, which the checkpoint restores, and resuming would
shift every later random number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from conla_training.datasets.video_pairs import PairBatchSampler
from conla_training.engine.config import TrainConfig

__all__ = ["batch_loader"]


def batch_loader(dataset: Any, config: TrainConfig, workers: int, start_batch: int, rank: int, world_size: int,
                 collate: Callable[[list], Any] | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` (with `epoch_length`) for this rank, from global batch `start_batch` on."""
    sampler = PairBatchSampler(dataset.epoch_length, config.batch_size, seed=config.seed, rank=rank,
                               world_size=world_size, start=start_batch)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator(),  # keeps the loader off the global RNG (exact resume)
    )
