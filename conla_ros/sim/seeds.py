"""Which world seeds train and which evaluate, and the instruction each episode gets.

Training data uses world seeds below `TRAIN_SEED_LIMIT`; evaluation uses `HELDOUT_SEEDS[task]`
= 1_000_000 + i, so no evaluated scene was ever in the training data. An episode's instruction is
drawn from its seed by `episode_instruction`, the one rule `conla eval sim`, `conla eval ros` and
sim_arm_node share, so the Python and the ROS evaluations give every episode the same paraphrase.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from conla_ros.sim.instructions import MT10_TASKS, sample_instruction

__all__ = ["HELDOUT_PER_TASK", "HELDOUT_SEEDS", "TRAIN_SEED_LIMIT", "episode_instruction"]

TRAIN_SEED_LIMIT = 1_000_000  # data generation must use world seeds below this
HELDOUT_PER_TASK = 100  # held-out seeds per task: --episodes is at most this
HELDOUT_SEEDS: dict[str, tuple[int, ...]] = {
    task: tuple(TRAIN_SEED_LIMIT + i for i in range(HELDOUT_PER_TASK)) for task in MT10_TASKS
}


def episode_instruction(task: str, seed: int, split: Literal["auto", "train", "heldout"] = "auto") -> str:
    """The paraphrase an episode of (task, seed) gets; `auto` takes the held-out paraphrases for an
    evaluation seed (>= TRAIN_SEED_LIMIT) and the training ones below it."""
    if split == "auto":
        split = "heldout" if seed >= TRAIN_SEED_LIMIT else "train"
    # [seed, 1]: a stream of its own, apart from Meta-World's use of the plain seed.
    return sample_instruction(task, np.random.default_rng([seed, 1]), split=split)
