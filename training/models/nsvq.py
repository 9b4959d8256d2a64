"""NSVQ: noise-substitution vector quantization (Vali & Bäckström, IEEE Access 2022), as LAPA uses it.

Each input vector d is assigned its nearest codebook entry z (Euclidean). In training the
quantizer outputs d + ‖d − z‖ / ‖v‖ · v with v ~ N(0, I): the quantization error is replaced by
noise of the same norm, so gradients reach both the encoder (through d, the identity path) and the
codebook (through ‖d − z‖), with no commitment or codebook loss. In eval mode it outputs z itself.

Dead-code replacement (LAPA: early in training only): the module counts how often each code was
chosen since the last check (`usage`, a persistent buffer, so it is checkpointed); the trainer
calls `replace_dead_codes()` every `every` steps while step < `until`. A code whose share of the
assignments counted since the last check is below `threshold` is dead and is replaced.

Decision (LAPA's code copies *used codes* plus 1e-12 noise; such a copy ties with its original
and argmin keeps picking the original, so it stays dead): the default source is `"inputs"` —
dead codes become randomly chosen input vectors of the latest training batch (the k-means
restart of Jukebox/SoundStream), which lands them where the data is. `"used_codes"` (LAPA-like,
with noise of relative size `noise`) is kept for comparison.

Distributed (DDP): counts are summed over ranks (all_reduce), rank 0 picks the replacements and
broadcasts the codebook, so every rank stays identical. The trainer wraps the model with
`broadcast_buffers=False`, otherwise DDP would overwrite each rank's counts with rank 0's.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["NSVQ"]

EPS = 1e-12


class NSVQ(nn.Module):
    """Nearest-neighbour quantizer with noise-substitution gradients and dead-code replacement.

    Args:
        num_codes: codebook size K (LAPA: 8).
        dim: code dimension D (LAPA: 32).
        threshold: a code chosen for less than this share of the assignments since the last
            check is dead.
        source: where replacements come from, "inputs" (recent input vectors) or "used_codes".
        noise: relative noise added to a replacement (× the RMS of the codebook).
        noise_scale: the substituted noise is this times ‖d − z‖ (1: NSVQ). Below 1 (ours, an
            extension) the decoder sees the latent more clearly than the quantizer will give it.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        threshold: float = 0.01,
        source: Literal["inputs", "used_codes"] = "inputs",
        noise: float = 0.01,
        noise_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_codes, self.dim, self.noise_scale = num_codes, dim, noise_scale
        self.threshold, self.source, self.noise = threshold, source, noise
        self.codebook = nn.Parameter(torch.randn(num_codes, dim))  # (K, D), LAPA: normal init
        self.register_buffer("usage", torch.zeros(num_codes, dtype=torch.long))  # (K,) since last check
        self._recent: torch.Tensor | None = None  # (M, D) last training inputs, for replacement

    def nearest(self, d: torch.Tensor) -> torch.Tensor:
        """(..., D) → (...,) int64 index of the nearest code."""
        flat = d.reshape(-1, self.dim).float()  # (M, D)
        codebook = self.codebook.float()  # (K, D)
        dist2 = (
            flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)[None, :]
        )  # (M, K)
        return dist2.argmin(dim=1).reshape(d.shape[:-1])

    def forward(self, d: torch.Tensor, track_usage: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., D) → (quantized (..., D), codes (...,) int64).

        Training: d + ‖d − z‖/‖v‖·v (noise substitution) and, with `track_usage`, the usage counts
        are updated (off for inputs that must not steer dead-code replacement). Eval: z, the nearest code.
        """
        codes = self.nearest(d)  # (...,)
        hard = self.codebook[codes].to(d.dtype)  # (..., D)
        if not self.training:
            return hard, codes
        if track_usage:
            with torch.no_grad():
                self.usage += torch.bincount(codes.reshape(-1), minlength=self.num_codes)
                self._recent = d.detach().reshape(-1, self.dim).float()
        v = torch.randn_like(d)  # (..., D)
        residual_norm = (d - hard).norm(dim=-1, keepdim=True)  # (..., 1)
        noise = self.noise_scale * residual_norm / (v.norm(dim=-1, keepdim=True) + EPS) * v  # (..., D)
        return d + noise, codes

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(...,) int64 codes → (..., D) code vectors."""
        return self.codebook[codes]

    @torch.no_grad()
    def replace_dead_codes(self) -> int:
        """Replace codes used below the threshold since the last call; reset counts. Returns how many.

        Collective under torch.distributed: every rank must call it at the same step.
        """
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        usage = self.usage.clone()
        if distributed:
            dist.all_reduce(usage)
        total = int(usage.sum())
        self.usage.zero_()
        if total == 0:
            return 0
        dead = torch.nonzero(usage.float() / total < self.threshold).flatten()  # (n_dead,)
        alive = torch.nonzero(usage.float() / total >= self.threshold).flatten()  # (n_alive,)
        n_dead = int(dead.numel())
        if n_dead == 0:
            return 0
        if not distributed or dist.get_rank() == 0:
            self._fill(dead, alive)
        if distributed:
            dist.broadcast(self.codebook.data, src=0)
        return n_dead

    @torch.no_grad()
    def consolidate_usage(self) -> None:
        """Move the counts of every rank onto rank 0 (sum kept), before a checkpoint saves rank 0's buffer.

        The total over ranks, which is all `replace_dead_codes` looks at, is unchanged, so a run
        resumed from that checkpoint makes the same replacement decisions. Collective.
        """
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.usage)
            if dist.get_rank() != 0:
                self.usage.zero_()

    def _fill(self, dead: torch.Tensor, alive: torch.Tensor) -> None:
        codebook = self.codebook.data  # (K, D)
        scale = self.noise * codebook.float().pow(2).mean().sqrt()
        if self.source == "inputs" and self._recent is not None and len(self._recent) > 0:
            recent = self._recent.to(codebook.device)
            pick = torch.randint(len(recent), (len(dead),), device=recent.device)
            new = recent[pick]  # (n_dead, D)
        else:  # used_codes (or no inputs seen yet): copies of live codes, or of all if none is alive
            pool = codebook[alive] if len(alive) else codebook
            pick = torch.randint(len(pool), (len(dead),), device=pool.device)
            new = pool[pick].float()  # (n_dead, D)
        new = new + scale * torch.randn_like(new)
        codebook[dead] = new.to(codebook.dtype)

    def perplexity(self, codes: torch.Tensor) -> torch.Tensor:
        """exp(entropy) of the code distribution in `codes` (1 = one code used, K = uniform)."""
        counts = torch.bincount(codes.reshape(-1), minlength=self.num_codes).float()  # (K,)
        probs = counts / counts.sum().clamp(min=1)
        return torch.exp(-(probs * torch.log(probs + EPS)).sum())

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, dim={self.dim}, threshold={self.threshold}, source={self.source!r}"
