"""Training-time augmentation (conla_training.datasets.augment): deterministic per (seed, step), shapes kept."""

from __future__ import annotations

import pytest
import torch

from conla_training.datasets.augment import AugmentConfig, augment_batch, augment_instructions, random_shift


def batch(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(n, 384, generator=g)
    return {"image": torch.rand(n, 3, 16, 16, generator=g), "instruction": emb / emb.norm(dim=1, keepdim=True),
            "actions": torch.zeros(n, 4, 4)}


def test_same_seed_and_step_same_batch_other_step_other_batch():
    config = AugmentConfig(random_shift=3, instruction_noise=0.05, instruction_dropout=0.3)
    a, b, c = (augment_batch(batch(), config, seed=1, step=s) for s in (7, 7, 8))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["instruction"], b["instruction"])
    assert not torch.equal(a["image"], c["image"])
    assert torch.equal(augment_batch(batch(), config, seed=2, step=7)["actions"], a["actions"])


def test_off_by_default_returns_the_batch_unchanged():
    original = batch()
    out = augment_batch(original, AugmentConfig(), seed=0, step=0)
    assert torch.equal(out["image"], original["image"]) and torch.equal(out["instruction"], original["instruction"])


def test_random_shift_translates_by_at_most_pad_pixels():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 4] = 1.0  # one bright pixel in the middle
    for step in range(20):
        out = random_shift(image, 2, torch.Generator().manual_seed(step))
        y, x = divmod(int(out[0, 0].argmax()), 9)
        assert out.shape == image.shape and out.sum() == 1.0 and abs(y - 4) <= 2 and abs(x - 4) <= 2


def test_instruction_noise_keeps_unit_norm_and_moves_it_about_a_paraphrase_away():
    clean = batch(256)["instruction"]
    noisy = augment_instructions(clean, AugmentConfig(instruction_noise=0.05), seed=0, step=0)
    assert torch.allclose(noisy.norm(dim=1), torch.ones(256), atol=1e-5)
    assert 0.6 < float((noisy * clean).sum(1).mean()) < 0.8


def test_instruction_dropout_zeroes_whole_embeddings():
    out = augment_instructions(batch(400)["instruction"], AugmentConfig(instruction_dropout=0.5), seed=0, step=0)
    dropped = (out.abs().sum(1) == 0).float().mean()
    assert 0.4 < float(dropped) < 0.6


@pytest.mark.parametrize(("field", "value"), [("random_shift", -1), ("random_shift", 1.5),
                                              ("instruction_noise", -0.1), ("instruction_dropout", 1.0)])
def test_bad_values_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        AugmentConfig(**{field: value})
