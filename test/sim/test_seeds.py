"""Training and held-out seeds, and the one rule that gives an episode its instruction."""

from __future__ import annotations

import numpy as np

from conla_ros.sim.instructions import MT10_TASKS, instructions, sample_instruction
from conla_ros.sim.seeds import HELDOUT_SEEDS, TRAIN_SEED_LIMIT, episode_instruction


def test_heldout_seeds_are_never_training_seeds() -> None:
    assert set(HELDOUT_SEEDS) == set(MT10_TASKS)
    assert all(seed >= TRAIN_SEED_LIMIT for seeds in HELDOUT_SEEDS.values() for seed in seeds)


def test_instructions_follow_the_split_rule() -> None:
    for seed in (1_000_000, 1_000_007):  # evaluation seeds: held-out paraphrases, drawn from the seed
        assert episode_instruction("drawer-open", seed) == \
            sample_instruction("drawer-open", np.random.default_rng([seed, 1]), split="heldout")
    assert episode_instruction("drawer-open", 5) in instructions("drawer-open", "train")
    assert episode_instruction("drawer-open", 5, "heldout") in instructions("drawer-open", "heldout")
