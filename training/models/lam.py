"""Latent action model (LAM): LAPA's latent action quantizer with ConLA's contrastive disentanglement.

One frame pair (o_t, o_{t+k}), RGB in [0, 1] as (B, 3, S, S), becomes 4 integers in {0..7}: the
latent action. See docs/method.md, stage 1. Shapes below: B batch, N = (S/p)² patches per frame,
W width, G = latent_grid (2), T = G² latent tokens (4), Dq code dim (32), Dv visual dim.

Encoder (LAPA): per-frame patch embedding (LayerNorm → Linear → LayerNorm, as LAPA) + learned
spatial and temporal position embeddings, then `encoder_layers` blocks, each a spatial attention
sublayer (within a frame, over N patches) and a temporal one (across the 2 frames at each patch
position), each followed by an MLP; pre-norm residuals.

Temporal attention over 2 frames is computed in closed form, not by a general attention kernel:
with two keys, softmax attention for query q_i is v_1 + σ(q_i·(k_0 − k_1)/√d_h)·(v_0 − v_1). That
is exact (tested against `F.scaled_dot_product_attention`), costs a few elementwise ops, and
avoids launching B·N attention problems of length 2 (cuDNN's backward failed on those at large
batch). LAPA's temporal transformer is not causal in time; `temporal_causal` makes o_t's
encoding blind to o_{t+k} if wanted.

Latent (LAPA): every frame's N output tokens are projected to Dq = 32 per patch, then the patch
grid is shrunk to G × G = 2 × 2 (`grid_pool`: "conv", a learned strided convolution like LAPA's
CNN, or "avg"), giving T = 4 tokens per frame; d = e(o_{t+k}) − e(o_t) (B, 4, 32) is quantized by
NSVQ (codebook 8 × 32, see nsvq.py). No commitment or codebook loss.

Decoder (LAPA): queries = stop-gradient patch embeddings of o_t + a learned position embedding;
`decoder_layers` blocks of self-attention, cross-attention to the 4 quantized tokens (projected
Dq → W, plus a learned token position embedding) and an MLP; a linear layer maps each query to
its patch's pixels of o_{t+k}. Loss: pixel MSE (no output activation, as LAPA). `decoder_residual`
(ours, off by default) adds o_t to that output, so the decoder predicts the change.

ConLA (on when `contrast.action_contrast` or `contrast.visual_contrast`). Decision on the point
the papers leave open — **split per token, channel-wise, before the grid shrink**: the encoder's
output channels are split in two halves, Z_a′ = h[..., :W/2] and Z_v′ = h[..., W/2:]; a 2-layer
MLP (Linear → GELU → Linear) per patch maps Z_a′ → Dq and Z_v′ → Dv; each is pooled to the 2 × 2
grid. So every one of the 4 latent tokens has an action half and a visual half, and the LAPA path
is unchanged except that its single linear projection becomes MLP_action on half the channels.
  - Action half: d = Z_a(o_{t+k}) − Z_a(o_t) (B, 4, Dq) is quantized and decoded (only it).
    SupCon embedding: d before quantization, flattened to 4·Dq and L2-normalised; positives are
    pairs with the same action-category label (label < 0: unlabelled, left out).
  - Visual half: the pair's visual embedding is the mean over the two frames of Z_v (B, 4, Dv),
    flattened and L2-normalised. With `time_reversal`, the positive of each pair is the same pair
    encoded in reverse order (o_{t+k}, o_t) — the encoder sees frame order (temporal position
    embeddings), so this teaches the visual half to ignore order. Without time reversal, the
    positive is a *second frame pair of the same clip* (the data set supplies it, `o_t2`/`o_tk2`):
    the visual half then learns what stays constant within a clip (scene, embodiment).
  - Loss = MSE + action_weight·SupCon + visual_weight·InfoNCE; the trainer passes
    `contrast=False` during the `contrast.warmup_steps` MSE-only warm-up (and the extra encoder
    pass for the visual positive is skipped then).

Building blocks: plain torch (`F.scaled_dot_product_attention`), not `transformers` layers. The
model needs per-frame spatial attention, a closed-form two-frame temporal attention and
cross-attention to 4 tokens; `transformers` has no block with that structure, and wrapping e.g.
`ViTLayer` for the spatial half only would add indirection without removing code. The VLA, which
is a standard ViT + fusion transformer, is where `transformers` fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from conla_ros.core.preprocessing import ImagePreprocessing
from conla_training.models.contrastive import info_nce_loss, supcon_loss
from conla_training.models.nsvq import NSVQ

__all__ = ["ContrastConfig", "LAMConfig", "LAMOutput", "LatentActionModel", "QuantizerConfig"]


@dataclass(frozen=True)
class QuantizerConfig:
    """NSVQ codebook and dead-code replacement (LAPA: 8 × 32, replacement in the first 5k steps)."""

    num_codes: int = 8
    dim: int = 32
    dead_code_every: int = 100  # check every N optimiser steps ...
    dead_code_until: int = 5000  # ... while step < this (0: never)
    dead_code_threshold: float = 0.01  # dead: chosen for < this share of assignments since the last check
    dead_code_source: Literal["inputs", "used_codes"] = "inputs"
    dead_code_noise: float = 0.01
    # Extension (the LAM diagnosis in BENCHMARKS.md: NSVQ's noise is as large as the spread of d, so the decoder
    # ignores the latent): the substituted noise is noise_scale · ‖d − z‖. 1.0 = NSVQ (LAPA).
    noise_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise_scale <= 1.0:
            raise ValueError(f"noise_scale must be in [0, 1], got {self.noise_scale}")
        if self.num_codes < 2 or self.dim < 1:
            raise ValueError(f"num_codes must be >= 2 and dim >= 1, got {self.num_codes}, {self.dim}")
        if self.dead_code_every < 1 or self.dead_code_until < 0:
            raise ValueError(f"dead_code_every must be >= 1 and dead_code_until >= 0, got "
                             f"{self.dead_code_every}, {self.dead_code_until}")
        if not 0.0 <= self.dead_code_threshold < 1.0:
            raise ValueError(f"dead_code_threshold must be in [0, 1), got {self.dead_code_threshold}")


@dataclass(frozen=True)
class ContrastConfig:
    """ConLA's switches. All three off = LAPA. Paper rows: LAPA; +action (action_contrast);
    +visual without reversal (visual_contrast, time_reversal off); full ConLA (all on)."""

    action_contrast: bool = True
    visual_contrast: bool = True
    time_reversal: bool = True  # only used with visual_contrast
    temperature: float = 0.07
    action_weight: float = 1.0
    visual_weight: float = 1.0
    warmup_steps: int = 5000  # MSE only before this optimiser step
    visual_dim: int = 32
    mlp_hidden: int = 0  # hidden width of MLP_action / MLP_visual; 0: width / 2

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.action_weight < 0 or self.visual_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got {self.action_weight}, {self.visual_weight}")
        if self.warmup_steps < 0 or self.visual_dim < 1 or self.mlp_hidden < 0:
            raise ValueError(f"warmup_steps, mlp_hidden must be >= 0 and visual_dim >= 1, got "
                             f"{self.warmup_steps}, {self.mlp_hidden}, {self.visual_dim}")

    @property
    def enabled(self) -> bool:
        """Whether the latent is split into action and visual halves."""
        return self.action_contrast or self.visual_contrast

    @property
    def needs_second_pair(self) -> bool:
        """Visual contrast without time reversal: the data set must supply a second pair per clip."""
        return self.visual_contrast and not self.time_reversal


@dataclass(frozen=True)
class LAMConfig:
    """Sizes of the latent action model. Defaults: the 64×64 simulation benchmark."""

    image_size: int = 64
    crop_fraction: float = 1.0  # centred square crop before resizing (see conla_ros.core.preprocessing)
    patch_size: int = 8
    channels: int = 3
    width: int = 192
    heads: int = 6
    encoder_layers: int = 4  # each: one spatial + one temporal attention sublayer (LAPA: 8 + 8)
    decoder_layers: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    temporal_causal: bool = False
    latent_grid: int = 2  # G: the patch grid is shrunk to G × G latent tokens (LAPA: 2 → 4 tokens)
    grid_pool: Literal["conv", "avg"] = "conv"
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    # Extension beyond LAPA/ConLA (LAOM, CLAM): a linear head from the continuous latent d to the
    # robot action, trained on the few labelled robot pairs (`supervision:` of the run config).
    # 0: off (LAPA and ConLA); otherwise the action's dimension (4: ee dx, dy, dz, gripper).
    action_head_dim: int = 0
    action_head_weight: float = 1.0
    # Our choice where LAPA's decoder cannot copy (the LAM diagnosis in BENCHMARKS.md): the decoder's output is
    # added to o_t, so it predicts the change o_{t+k} − o_t and the latent only has to explain what
    # moved. Off (LAPA): it predicts the pixels of o_{t+k} from the patch embeddings of o_t, whose
    # first LayerNorm removes every patch's mean colour and contrast.
    decoder_residual: bool = False

    def __post_init__(self) -> None:
        if self.action_head_dim < 0 or self.action_head_weight < 0:
            raise ValueError(f"action_head_dim and action_head_weight must be >= 0, got "
                             f"{self.action_head_dim}, {self.action_head_weight}")
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}")
        if self.contrast.enabled and self.width % 2:
            raise ValueError(f"width {self.width} must be even to split it into action and visual halves")
        if self.latent_grid < 1 or self.grid % self.latent_grid:
            raise ValueError(f"the patch grid {self.grid} × {self.grid} must be a multiple of "
                             f"latent_grid {self.latent_grid}")
        if self.encoder_layers < 1 or self.decoder_layers < 1:
            raise ValueError(f"encoder_layers and decoder_layers must be >= 1, got "
                             f"{self.encoder_layers}, {self.decoder_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Latent tokens (codes) per frame pair: 4."""
        return self.latent_grid**2

    def preprocessing(self) -> ImagePreprocessing:
        """How frames become inputs: RGB in [0, 1] (mean 0, std 1), `image_size` square."""
        return ImagePreprocessing(size=self.image_size, crop_fraction=self.crop_fraction,
                                  mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@dataclass
class LAMOutput:
    """What `LatentActionModel.forward` returns besides the total loss."""

    recon: torch.Tensor  # (B, C, S, S) predicted o_{t+k}
    codes: torch.Tensor  # (B, T) int64
    latent: torch.Tensor  # (B, T, Dq) d before quantization
    losses: dict[str, torch.Tensor]  # "mse", and "action" / "visual" when computed (detached)


# --- Building blocks -----------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(F.gelu(self.fc1(x))))


class Attention(nn.Module):
    """Multi-head attention: self-attention, or cross-attention when `context` is given."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, cross: bool = False) -> None:
        super().__init__()
        self.heads, self.dropout, self.cross = heads, dropout, cross
        if cross:
            self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, w = x.shape  # (B, N, W)
        h = self.heads
        if self.cross:
            assert context is not None
            q = self.q(x).view(b, n, h, w // h).transpose(1, 2)  # (B, H, N, Dh)
            k, v = self.kv(context).view(b, context.shape[1], 2, h, w // h).permute(2, 0, 3, 1, 4)  # (B, H, M, Dh)
        else:
            q, k, v = self.qkv(x).view(b, n, 3, h, w // h).permute(2, 0, 3, 1, 4)  # (B, H, N, Dh) each
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, n, w))  # (B, N, W)


class TwoFrameAttention(nn.Module):
    """Attention across the 2 frames at each patch position, in closed form (see module docstring)."""

    def __init__(self, dim: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, w = x.shape  # (B, 2, N, W)
        assert t == 2, "two-frame attention takes exactly 2 frames"
        h = self.heads
        q, k, v = self.qkv(x).view(b, 2, n, 3, h, w // h).unbind(3)  # (B, 2, N, H, Dh) each
        dk = k[:, 0] - k[:, 1]  # (B, N, H, Dh)
        dv = v[:, 0] - v[:, 1]  # (B, N, H, Dh)
        weight = torch.sigmoid((q * dk[:, None]).sum(-1, keepdim=True) / math.sqrt(w // h))  # (B, 2, N, H, 1)
        y = v[:, 1:2] + weight * dv[:, None]  # (B, 2, N, H, Dh)
        if self.causal:  # frame 0 sees only itself: its softmax over one key is 1
            y = torch.cat([v[:, :1], y[:, 1:]], dim=1)  # (B, 2, N, H, Dh)
        return self.proj(y.reshape(b, 2, n, w))  # (B, 2, N, W)


class EncoderBlock(nn.Module):
    """Spatial attention + MLP, then temporal (two-frame) attention + MLP; pre-norm residuals."""

    def __init__(self, config: LAMConfig) -> None:
        super().__init__()
        w, hidden = config.width, int(config.width * config.mlp_ratio)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(w) for _ in range(4))
        self.spatial = Attention(w, config.heads, config.dropout)
        self.mlp1 = MLP(w, hidden, w, config.dropout)
        self.temporal = TwoFrameAttention(w, config.heads, config.temporal_causal)
        self.mlp2 = MLP(w, hidden, w, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, w = x.shape  # (B, 2, N, W)
        x = x + self.spatial(self.norm1(x).view(b * t, n, w)).view(b, t, n, w)
        x = x + self.mlp1(self.norm2(x))
        x = x + self.temporal(self.norm3(x))
        return x + self.mlp2(self.norm4(x))  # (B, 2, N, W)


class DecoderBlock(nn.Module):
    """Self-attention over the queries, cross-attention to the latent tokens, MLP; pre-norm."""

    def __init__(self, config: LAMConfig) -> None:
        super().__init__()
        w = config.width
        self.norm1, self.norm2, self.norm_ctx, self.norm3 = (nn.LayerNorm(w) for _ in range(4))
        self.attn = Attention(w, config.heads, config.dropout)
        self.cross = Attention(w, config.heads, config.dropout, cross=True)
        self.mlp = MLP(w, int(w * config.mlp_ratio), w, config.dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, N, W)
        x = x + self.cross(self.norm2(x), self.norm_ctx(context))  # context (B, T, W)
        return x + self.mlp(self.norm3(x))  # (B, N, W)


class GridPool(nn.Module):
    """(B, N, C) tokens on a g × g grid → (B, G², C) tokens on the G × G latent grid."""

    def __init__(self, channels: int, grid: int, latent_grid: int, mode: str) -> None:
        super().__init__()
        self.grid, self.latent_grid, self.mode = grid, latent_grid, mode
        stride = grid // latent_grid
        self.conv = nn.Conv2d(channels, channels, kernel_size=stride, stride=stride) if mode == "conv" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape  # (B, N, C)
        x = x.transpose(1, 2).reshape(b, c, self.grid, self.grid)  # (B, C, g, g)
        x = self.conv(x) if self.conv is not None else F.adaptive_avg_pool2d(x, self.latent_grid)  # (B, C, G, G)
        return x.flatten(2).transpose(1, 2)  # (B, G², C)


# --- The model -----------------------------------------------------------------------------------


class LatentActionModel(nn.Module):
    """Frame pair → 4 latent action codes; decoder predicts o_{t+k} from o_t and the codes."""

    def __init__(self, config: LAMConfig) -> None:
        super().__init__()
        self.config = config
        c, p, w, n = config.channels, config.patch_size, config.width, config.grid**2
        qc, cc = config.quantizer, config.contrast
        self.patch_embed = nn.Sequential(nn.LayerNorm(c * p * p), nn.Linear(c * p * p, w), nn.LayerNorm(w))
        self.enc_pos = nn.Parameter(torch.zeros(1, 1, n, w))  # (1, 1, N, W)
        self.enc_time = nn.Parameter(torch.zeros(1, 2, 1, w))  # (1, 2, 1, W)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.encoder_layers))
        self.enc_norm = nn.LayerNorm(w)
        if cc.enabled:
            hidden = cc.mlp_hidden or w // 2
            self.action_proj: nn.Module = MLP(w // 2, hidden, qc.dim)
            self.visual_proj: nn.Module | None = MLP(w // 2, hidden, cc.visual_dim)
            self.visual_pool: nn.Module | None = GridPool(cc.visual_dim, config.grid, config.latent_grid,
                                                          config.grid_pool)
        else:
            self.action_proj = nn.Linear(w, qc.dim)
            self.visual_proj = self.visual_pool = None
        self.action_pool = GridPool(qc.dim, config.grid, config.latent_grid, config.grid_pool)
        self.quantizer = NSVQ(qc.num_codes, qc.dim, qc.dead_code_threshold, qc.dead_code_source,
                              qc.dead_code_noise, qc.noise_scale)
        self.code_proj = nn.Linear(qc.dim, w)
        self.code_pos = nn.Parameter(torch.zeros(1, config.num_tokens, w))  # (1, T, W)
        self.dec_pos = nn.Parameter(torch.zeros(1, n, w))  # (1, N, W)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_layers))
        self.dec_norm = nn.LayerNorm(w)
        self.to_pixels = nn.Linear(w, c * p * p)
        self.action_head = (nn.Linear(config.num_tokens * qc.dim, config.action_head_dim)
                            if config.action_head_dim else None)
        self.apply(self._init_weights)
        for pos in (self.enc_pos, self.enc_time, self.code_pos, self.dec_pos):
            nn.init.normal_(pos, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- pieces ---

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) → (B, N, C·p·p), patches in row-major order."""
        b, c = x.shape[:2]
        p, g = self.config.patch_size, self.config.grid
        x = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)  # (B, g, g, C, p, p)
        return x.reshape(b, g * g, c * p * p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C·p·p) → (B, C, S, S)."""
        b = x.shape[0]
        c, p, g = self.config.channels, self.config.patch_size, self.config.grid
        x = x.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)  # (B, C, g, p, g, p)
        return x.reshape(b, c, g * p, g * p)

    def encode(self, o_t: torch.Tensor, o_tk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (B, C, S, S) ×2 → (encoder tokens (B, 2, N, W), patch embeddings of o_t (B, N, W))."""
        emb = self.patch_embed(torch.stack([self.patchify(o_t), self.patchify(o_tk)], dim=1))  # (B, 2, N, W)
        x = emb + self.enc_pos + self.enc_time  # (B, 2, N, W)
        for block in self.encoder:
            x = block(x)
        return self.enc_norm(x), emb[:, 0]

    def _pool_frames(self, proj: nn.Module, pool: nn.Module, h: torch.Tensor) -> torch.Tensor:
        b = h.shape[0]
        z = proj(h)  # (B, 2, N, C)
        return pool(z.flatten(0, 1)).unflatten(0, (b, 2))  # (B, 2, T, C)

    def action_latent(self, h: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, 2, N, W) → d = e(o_{t+k}) − e(o_t) (B, T, Dq)."""
        if self.config.contrast.enabled:
            h = h[..., : self.config.width // 2]  # (B, 2, N, W/2) Z_a′
        z = self._pool_frames(self.action_proj, self.action_pool, h)  # (B, 2, T, Dq)
        return z[:, 1] - z[:, 0]  # (B, T, Dq)

    def visual_embedding(self, h: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, 2, N, W) → L2-normalised visual embedding (B, T·Dv) (ConLA only)."""
        assert self.visual_proj is not None and self.visual_pool is not None, "visual half needs contrast on"
        z = self._pool_frames(self.visual_proj, self.visual_pool, h[..., self.config.width // 2 :])  # (B, 2, T, Dv)
        return F.normalize(z.mean(dim=1).flatten(1).float(), dim=-1)  # (B, T·Dv)

    def decode(self, queries: torch.Tensor, quantized: torch.Tensor, o_t: torch.Tensor | None = None) -> torch.Tensor:
        """Queries (B, N, W) + quantized latent (B, T, Dq) → predicted o_{t+k} (B, C, S, S).

        With `decoder_residual` the prediction is o_t (B, C, S, S, then required) + the output."""
        context = self.code_proj(quantized) + self.code_pos  # (B, T, W)
        x = queries + self.dec_pos  # (B, N, W)
        for block in self.decoder:
            x = block(x, context)
        out = self.unpatchify(self.to_pixels(self.dec_norm(x)))  # (B, C, S, S)
        if self.config.decoder_residual:
            if o_t is None:
                raise ValueError("decoder_residual: decode needs o_t")
            out = o_t + out
        return out

    # --- public API ---

    def forward(
        self,
        o_t: torch.Tensor,
        o_tk: torch.Tensor,
        labels: torch.Tensor | None = None,
        o_t2: torch.Tensor | None = None,
        o_tk2: torch.Tensor | None = None,
        contrast: bool = True,
        supervised: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[LAMOutput, torch.Tensor]:
        """(B, C, S, S) o_t, o_{t+k} in [0, 1] → (LAMOutput, total loss).

        labels (B,) int64 action categories (< 0: unlabelled) for SupCon; o_t2/o_tk2 a second
        pair of the same clips, needed for visual contrast without time reversal; contrast=False
        during the MSE-only warm-up. `supervised` = (o_t (M, C, S, S), o_tk, action (M, A)): labelled
        robot pairs for the action head (extension, `action_head_dim` > 0): their d goes through
        the head, MSE to the action, weighted by `action_head_weight` (loss "supervised").
        """
        cc = self.config.contrast
        b = o_t.shape[0]
        h_pos = None
        if contrast and cc.visual_contrast:
            if cc.time_reversal:  # the reversed pair (o_{t+k}, o_t)
                first, second = o_tk, o_t
            else:  # another pair of the same clip
                if o_t2 is None or o_tk2 is None:
                    raise ValueError("visual contrast without time reversal needs a second pair (o_t2, o_tk2)")
                first, second = o_t2, o_tk2
            # One encoder call over both pairs: same maths, twice the batch per kernel.
            h_all, emb_all = self.encode(torch.cat([o_t, first]), torch.cat([o_tk, second]))  # (2B, 2, N, W)
            h, h_pos, emb_t = h_all[:b], h_all[b:], emb_all[:b]
        else:
            h, emb_t = self.encode(o_t, o_tk)  # (B, 2, N, W), (B, N, W)
        d = self.action_latent(h)  # (B, T, Dq)
        quantized, codes = self.quantizer(d)  # (B, T, Dq), (B, T)
        recon = self.decode(emb_t.detach(), quantized, o_t)  # (B, C, S, S)
        mse = F.mse_loss(recon.float(), o_tk.float())
        loss, losses = mse, {"mse": mse.detach()}
        if contrast and cc.action_contrast and labels is not None:
            action = supcon_loss(F.normalize(d.flatten(1).float(), dim=-1), labels, cc.temperature)
            loss = loss + cc.action_weight * action
            losses["action"] = action.detach()
        if h_pos is not None:
            visual = info_nce_loss(self.visual_embedding(h), self.visual_embedding(h_pos), cc.temperature)
            loss = loss + cc.visual_weight * visual
            losses["visual"] = visual.detach()
        if supervised is not None:
            if self.action_head is None:
                raise ValueError("labelled pairs given but the model has no action head (action_head_dim: 0)")
            s_t, s_tk, action = supervised
            d_sup = self.action_latent(self.encode(s_t, s_tk)[0])  # (M, T, Dq)
            sup = F.mse_loss(self.action_head(self._noise_substituted(d_sup).flatten(1)).float(), action.float())
            loss = loss + self.config.action_head_weight * sup
            losses["supervised"] = sup.detach()
        return LAMOutput(recon=recon, codes=codes, latent=d, losses=losses), loss

    def _noise_substituted(self, d: torch.Tensor) -> torch.Tensor:
        """NSVQ's output for d (training: the nearest code's error replaced by noise of its size; eval:
        the nearest code), without touching the quantizer's usage counts, so labelled pairs never
        steer dead-code replacement. The action head reads this, so what it learns to decode is what
        survives quantization."""
        return self.quantizer(d, track_usage=False)[0]  # (M, T, Dq)

    @torch.no_grad()
    def encode_codes(self, o_t: torch.Tensor, o_tk: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) ×2 in [0, 1] → (B, T) int64 latent action codes (nearest code, no noise)."""
        h, _ = self.encode(o_t, o_tk)
        return self.quantizer.nearest(self.action_latent(h))  # (B, T)

    @torch.no_grad()
    def reconstruct(self, o_t: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """o_t (B, C, S, S) + codes (B, T) → predicted o_{t+k} (B, C, S, S): what a latent action does."""
        emb_t = self.patch_embed(self.patchify(o_t))  # (B, N, W)
        return self.decode(emb_t, self.quantizer.lookup(codes), o_t)
