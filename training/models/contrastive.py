"""ConLA's contrastive losses: supervised contrastive (SupCon) and InfoNCE (NT-Xent).

Both take embeddings that the caller has already L2-normalised (ConLA does not say whether it
normalises; we do, as is standard with τ = 0.07) and a temperature τ, and compute in fp32 at
least (also under bf16 autocast: exp(1/τ) needs the range).

SupCon (Khosla et al. 2020, the "L_out" form): for every anchor i that has at least one
positive (another item with the same label),
    L_i = −1/|P(i)| Σ_{p∈P(i)} log( exp(s_ip/τ) / Σ_{a≠i} exp(s_ia/τ) ),   s = cosine similarity,
and the loss is the mean of L_i over those anchors. Items with label < 0 (unlabelled) take no
part at all: not anchors, not positives, not negatives (an unknown label might be a positive).
With no anchor that has a positive, the loss is 0 (still differentiable, so DDP sees the graph).

InfoNCE over 2N (SimCLR's NT-Xent): z = [a; b], the positive of a_i is b_i and vice versa, every
other of the 2N − 2 embeddings is a negative; the loss is the mean cross-entropy over all 2N rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce_loss", "supcon_loss"]


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp32 for half/bf16 inputs (the exp of 1/τ = 14 needs it), float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """(N, D) L2-normalised embeddings, (N,) int labels (< 0: unlabelled) → scalar loss."""
    keep = labels >= 0  # (N,)
    z = _at_least_fp32(embeddings[keep])  # (M, D)
    y = labels[keep]  # (M,)
    m = z.shape[0]
    if m < 2:
        return embeddings.sum() * 0.0
    logits = z @ z.t() / temperature  # (M, M)
    self_mask = torch.eye(m, dtype=torch.bool, device=z.device)  # (M, M)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (M, M), row i: log p(a | i), a ≠ i
    positives = (y[:, None] == y[None, :]) & ~self_mask  # (M, M)
    n_pos = positives.sum(1)  # (M,)
    anchors = n_pos > 0  # (M,)
    if not bool(anchors.any()):
        return embeddings.sum() * 0.0
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)  # (M,)
    per_anchor = -pos_log_prob[anchors] / n_pos[anchors]  # (A,)
    return per_anchor.mean()


def info_nce_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """(N, D), (N, D) L2-normalised, a_i ↔ b_i positive → scalar loss over the 2N embeddings."""
    n = a.shape[0]
    z = _at_least_fp32(torch.cat([a, b], dim=0))  # (2N, D)
    logits = z @ z.t() / temperature  # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2N,)
    return F.cross_entropy(logits, target)
