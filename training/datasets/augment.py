"""Training-time augmentation of batches: DrQ's random shift of the image, and instruction noise.

Random shift (Kostrikov et al., DrQ, 2020; Yarats et al., DrQ-v2): pad each image by `pad` pixels
(replicating the border) and crop it back at a random offset in [0, 2·pad], i.e. translate it by up
to ±pad pixels. For few-demo behaviour cloning from pixels it is the one augmentation that
consistently helps: the policy cannot memorise exact pixel positions of the 10 training scenes and
must read relative positions (gripper against object) instead.

Instruction noise: the instruction embedding (unit norm, all-MiniLM-L6-v2) gets isotropic Gaussian
noise of std `instruction_noise` per dimension and is renormalised; with probability
`instruction_dropout` it is replaced by the zero vector. Why: the evaluation speaks paraphrases the
policy never heard, and some sit closer to another task's training phrases than to their own
("push the open drawer all the way in" is nearest to drawer-open's). A policy that trusts the
embedding exactly follows the wrong phrase; one trained on blurred embeddings reads the task from
the scene as well (an open drawer is there to be closed). σ = 0.05 moves a unit embedding to
cosine ≈ 0.7 with itself, about the distance between two paraphrases of one task.

Determinism: the offsets of a batch come from a generator seeded by (run seed, step), so a run
and its resumed continuation see the same augmented batches, and two runs with one seed agree.
The exported graph never contains it: the robot and `conla eval sim` see unshifted images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment_batch", "augment_images", "augment_instructions", "random_shift"]


@dataclass(frozen=True)
class AugmentConfig:
    """`augment:` of a policy or VLA run config."""

    random_shift: int = 0  # pad in pixels at the model's input size (DrQ uses 4 at 84×84); 0: off
    instruction_noise: float = 0.0  # std of Gaussian noise per embedding dimension, then renormalised; 0: off
    instruction_dropout: float = 0.0  # probability of replacing the embedding by zeros

    def __post_init__(self) -> None:
        if isinstance(self.random_shift, bool) or not isinstance(self.random_shift, int) or self.random_shift < 0:
            raise ValueError(f"augment.random_shift must be an int >= 0, got {self.random_shift!r}")
        if not self.instruction_noise >= 0.0:
            raise ValueError(f"augment.instruction_noise must be >= 0, got {self.instruction_noise!r}")
        if not 0.0 <= self.instruction_dropout < 1.0:
            raise ValueError(f"augment.instruction_dropout must be in [0, 1), got {self.instruction_dropout!r}")


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """(B, C, S, S) → (B, C, S, S), each image translated by an integer offset in [−pad, pad]²."""
    if pad == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")  # (B, C, S+2p, S+2p)
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


def _generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4 + stream)


def augment_images(images: torch.Tensor, config: AugmentConfig, seed: int, step: int) -> torch.Tensor:
    """The configured image augmentation of one training batch; the same (seed, step) gives the same result."""
    if not config.random_shift:
        return images
    return random_shift(images, config.random_shift, _generator(seed, step, 0))


def augment_instructions(embeddings: torch.Tensor, config: AugmentConfig, seed: int, step: int) -> torch.Tensor:
    """(B, D) → (B, D): noise and renormalise, then drop; deterministic in (seed, step)."""
    if not config.instruction_noise and not config.instruction_dropout:
        return embeddings
    generator = _generator(seed, step, 1)
    b, d = embeddings.shape
    out = embeddings
    if config.instruction_noise:
        noise = torch.randn((b, d), generator=generator).to(embeddings) * config.instruction_noise
        out = out + noise
        out = out / out.norm(dim=1, keepdim=True).clamp(min=1e-6)
    if config.instruction_dropout:
        keep = (torch.rand((b, 1), generator=generator) >= config.instruction_dropout).to(embeddings)
        out = out * keep
    return out


def augment_batch(batch: dict[str, torch.Tensor], config: AugmentConfig, seed: int, step: int) -> dict:
    """A training batch with its "image" and "instruction" augmented (other keys as they are)."""
    out = dict(batch)
    out["image"] = augment_images(batch["image"], config, seed, step).to(batch["image"].device)
    out["instruction"] = augment_instructions(batch["instruction"], config, seed, step)
    return out
