"""The compact latent VLA (docs/method.md, stages 2 and 3): one config, one model, three heads.

    image (B, 3, S, S) ─ vision encoder (transformers SigLIP, ViT or ResNet; random init or from_pretrained)
                         → N tokens (patches, or the ResNet's last feature map cells) → Linear → (B, N, W)
    instruction embedding (B, 384) (frozen all-MiniLM-L6-v2, computed outside) → Linear → 1 token
    proprio (B, P) (optional; standardised with dataset statistics held in buffers) → Linear → 1 token
    Q learned query tokens
    [patch, instruction, proprio, queries] + learned position embeddings
        → fusion transformer (transformers `SiglipEncoder`, pre-LN) → final LayerNorm → the Q query outputs
    head on the flattened queries (B, Q·W):
      latent: 4 codes × 8 classes, predicted in parallel, cross-entropy (pretraining, LAPA's head)
      chunk:  H × A actions normalised to [−1, 1] by the 1st/99th percentiles, L1 (OpenVLA-OFT style)
      bins:   H × A × 256 quantile bins per dimension, cross-entropy (LAPA-style); decoded as the
              expected bin centre (`bins_decode: expected`) or the most likely one (`argmax`)

Choices the papers leave open (ours):
  - Fusion: the same transformers block as the vision tower (`SiglipEncoder`, built from a
    `SiglipVisionConfig`), not torch's `nn.TransformerEncoder`: its eval-mode "fast path"
    (`_transformer_encoder_layer_fwd`, nested tensors) changes numerics between train and eval and is
    not exportable by the ONNX exporter, and one attention implementation for both towers keeps the
    export and its parity check simple. No attention mask (every input is always present).
  - Heads read the flattened query tokens (a linear layer per head), so the query count and the
    output size (4 codes, H·A actions) are independent.
  - Normalisation statistics (action low/high, bin edges/centres, proprio mean/std) are buffers of
    the model: they are saved in every checkpoint with the weights, and the exported graph
    de-normalises to robot units with exactly the numbers used in training.
  - Padded chunk steps (an image near the end of an episode) are masked out of both losses.
  - `vision: resnet` (transformers `ResNetModel`, basic blocks, sizes from `conv_channels` /
    `conv_depths`): each cell of the last feature map is one token, so the fusion transformer
    still sees where things are. With `conv_stem_pool: false` the stem's max-pool is dropped (one
    stride-2 step less: an 8×8 map from 64×64 instead of 4×4), because few-demo manipulation
    needs the position of small objects more than a large receptive field. `conv_norm: group`
    swaps the BatchNorms for GroupNorm (Diffusion Policy's choice: no batch statistics, so
    training and evaluation compute the same function and an EMA of the weights is consistent).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from conla_ros.core.preprocessing import ImagePreprocessing

__all__ = ["BACKBONE_FIELDS", "VLA", "VLAConfig", "VLAOutput"]

#: Fields that define the pretrained weights (must agree when a policy starts from a pretrained VLA).
BACKBONE_FIELDS = ("preprocessing", "vision", "vision_pretrained", "patch_size", "vision_width", "vision_layers",
                   "vision_heads", "conv_channels", "conv_depths", "conv_stem_pool", "conv_norm", "width",
                   "fusion_layers", "fusion_heads", "mlp_ratio", "instruction_dim", "num_queries")


@dataclass(frozen=True)
class VLAConfig:
    """Sizes and head of the VLA. Presets: config/vla_tiny.yaml (tests), vla.yaml (small, CPU real time),
    vla_large.yaml (GPU)."""

    preprocessing: ImagePreprocessing = field(default_factory=ImagePreprocessing)  # size = image side S
    vision: Literal["siglip", "vit", "resnet"] = "siglip"
    vision_pretrained: str | None = None  # a transformers model folder/name: from_pretrained instead of random init
    patch_size: int = 8
    vision_width: int = 192
    vision_layers: int = 4
    vision_heads: int = 3
    conv_channels: tuple[int, ...] = (32, 64, 128)  # resnet: channels per stage (stem = the first)
    conv_depths: tuple[int, ...] = (1, 1, 1)  # resnet: basic blocks per stage
    conv_stem_pool: bool = True  # resnet: keep the stem's stride-2 max-pool
    conv_norm: Literal["batch", "group"] = "batch"  # resnet: BatchNorm as built, or GroupNorm
    width: int = 192  # fusion width W
    fusion_layers: int = 2
    fusion_heads: int = 3
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    instruction_dim: int = 384
    proprio_dim: int = 0  # P; 0: no proprioception input
    num_queries: int = 4  # Q
    head: Literal["latent", "chunk", "bins"] = "latent"
    latent_codes: int = 4
    latent_classes: int = 8
    chunk_length: int = 8  # H
    action_dim: int = 4  # A
    num_bins: int = 256
    bins_decode: Literal["expected", "argmax"] = "expected"

    def __post_init__(self) -> None:
        size = self.preprocessing.size
        if self.vision not in ("siglip", "vit", "resnet"):
            raise ValueError(f"vision must be 'siglip', 'vit' or 'resnet', got {self.vision!r}")
        if self.vision == "resnet":
            if not self.conv_channels or len(self.conv_channels) != len(self.conv_depths) or \
                    min(self.conv_channels) < 1 or min(self.conv_depths) < 1:
                raise ValueError(f"conv_channels and conv_depths must be equally long lists of ints >= 1, got "
                                 f"{list(self.conv_channels)} and {list(self.conv_depths)}")
            if self.conv_norm == "group" and any(c % 8 for c in self.conv_channels):
                raise ValueError(f"conv_norm: group needs conv_channels divisible by 8, got {list(self.conv_channels)}")
            if size % self.feature_stride:
                raise ValueError(f"preprocessing.size {size} must be a multiple of the resnet's stride "
                                 f"{self.feature_stride}")
        if self.conv_norm not in ("batch", "group"):
            raise ValueError(f"conv_norm must be 'batch' or 'group', got {self.conv_norm!r}")
        if self.head not in ("latent", "chunk", "bins"):
            raise ValueError(f"head must be 'latent', 'chunk' or 'bins', got {self.head!r}")
        if self.bins_decode not in ("expected", "argmax"):
            raise ValueError(f"bins_decode must be 'expected' or 'argmax', got {self.bins_decode!r}")
        if self.vision != "resnet" and (self.patch_size < 1 or size % self.patch_size):
            raise ValueError(f"patch_size must divide preprocessing.size {size}, got {self.patch_size}")
        for name, heads_name in (("vision_width", "vision_heads"), ("width", "fusion_heads")):
            if getattr(self, name) % getattr(self, heads_name):
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of {heads_name} "
                                 f"({getattr(self, heads_name)})")
        for name in ("vision_width", "vision_layers", "vision_heads", "width", "fusion_layers", "fusion_heads",
                     "instruction_dim", "num_queries", "latent_codes", "latent_classes", "chunk_length",
                     "action_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.proprio_dim < 0:
            raise ValueError(f"proprio_dim must be >= 0, got {self.proprio_dim}")
        if self.num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {self.num_bins}")
        if self.mlp_ratio <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"mlp_ratio must be > 0 and dropout in [0, 1), got {self.mlp_ratio}, {self.dropout}")

    @property
    def feature_stride(self) -> int:
        """resnet: input pixels per feature-map cell (stem conv 2, pool 2, then 2 per stage after the first)."""
        return 2 * (2 if self.conv_stem_pool else 1) * 2 ** (len(self.conv_channels) - 1)

    @property
    def num_patches(self) -> int:
        """Image tokens: ViT/SigLIP patches, or resnet feature-map cells."""
        stride = self.feature_stride if self.vision == "resnet" else self.patch_size
        return (self.preprocessing.size // stride) ** 2

    def backbone(self) -> dict:
        """The fields that must agree between a pretrained VLA and a policy started from it."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in BACKBONE_FIELDS}


@dataclass
class VLAOutput:
    """`VLA.forward`'s output: the head's raw output, and decoded predictions."""

    logits: torch.Tensor | None = None  # latent (B, 4, 8) | bins (B, H, A, NB)
    normalized: torch.Tensor | None = None  # chunk: (B, H, A) in normalised units
    actions: torch.Tensor | None = None  # chunk / bins: (B, H, A) robot units
    codes: torch.Tensor | None = None  # latent: (B, 4) argmax
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


def _resnet_encoder(c: VLAConfig) -> nn.Module:
    import transformers

    if c.vision_pretrained:
        model = transformers.ResNetModel.from_pretrained(c.vision_pretrained)
    else:
        model = transformers.ResNetModel(transformers.ResNetConfig(
            num_channels=3, embedding_size=c.conv_channels[0], hidden_sizes=list(c.conv_channels),
            depths=list(c.conv_depths), layer_type="basic", downsample_in_first_stage=False))
    if not c.conv_stem_pool:
        model.embedder.pooler = nn.Identity()
    model.pooler = nn.Identity()  # the tokens are the feature map's cells, not a pooled vector
    if c.conv_norm == "group":
        _batch_to_group_norm(model)
    return model


def _batch_to_group_norm(module: nn.Module) -> None:
    """Replace every BatchNorm2d below `module` by a GroupNorm of 8 groups (fresh affine weights)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(8, child.num_features))
        else:
            _batch_to_group_norm(child)


def _vision_encoder(c: VLAConfig) -> nn.Module:
    import transformers

    if c.vision == "resnet":
        return _resnet_encoder(c)
    common = dict(hidden_size=c.vision_width, intermediate_size=int(c.vision_width * c.mlp_ratio),
                  num_hidden_layers=c.vision_layers, num_attention_heads=c.vision_heads, num_channels=3,
                  image_size=c.preprocessing.size, patch_size=c.patch_size, attention_dropout=c.dropout)
    if c.vision == "siglip":
        cls, config = transformers.SiglipVisionModel, transformers.SiglipVisionConfig(vision_use_head=False, **common)
    else:
        cls, config = transformers.ViTModel, transformers.ViTConfig(hidden_dropout_prob=c.dropout,
                                                                    attention_probs_dropout_prob=c.dropout,
                                                                    **{k: v for k, v in common.items()
                                                                       if k != "attention_dropout"})
    if c.vision_pretrained:
        kwargs = {"add_pooling_layer": False} if c.vision == "vit" else {}
        return cls.from_pretrained(c.vision_pretrained, attn_implementation="eager", **kwargs)
    config._attn_implementation = "eager"  # eager attention: exact and exportable, same in train and export
    return cls(config, add_pooling_layer=False) if c.vision == "vit" else cls(config)


def _fusion_encoder(c: VLAConfig) -> nn.Module:
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.modeling_siglip import SiglipEncoder

    config = SiglipVisionConfig(hidden_size=c.width, intermediate_size=int(c.width * c.mlp_ratio),
                                num_hidden_layers=c.fusion_layers, num_attention_heads=c.fusion_heads,
                                attention_dropout=c.dropout)
    config._attn_implementation = "eager"
    return SiglipEncoder(config)


class VLA(nn.Module):
    """The compact VLA. `forward` returns `(VLAOutput, loss or None)`; `predict_actions` is the exported graph."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = c = config
        self.vision = _vision_encoder(c)
        vision_out = c.conv_channels[-1] if c.vision == "resnet" else self.vision.config.hidden_size
        self.vision_proj = nn.Linear(vision_out, c.width)
        self.instruction_proj = nn.Linear(c.instruction_dim, c.width)
        self.proprio_proj = nn.Linear(c.proprio_dim, c.width) if c.proprio_dim else None
        vision_tokens = c.num_patches + (1 if c.vision == "vit" else 0)  # ViT keeps its CLS token
        self.num_tokens = vision_tokens + 1 + (1 if c.proprio_dim else 0) + c.num_queries
        self.queries = nn.Parameter(torch.randn(c.num_queries, c.width) * 0.02)  # (Q, W)
        self.position = nn.Parameter(torch.randn(self.num_tokens, c.width) * 0.02)  # (T, W)
        self.fusion = _fusion_encoder(c)
        self.norm = nn.LayerNorm(c.width)
        flat = c.num_queries * c.width
        if c.head == "latent":
            self.head = nn.Linear(flat, c.latent_codes * c.latent_classes)
        elif c.head == "chunk":
            self.head = nn.Linear(flat, c.chunk_length * c.action_dim)
        else:
            self.head = nn.Linear(flat, c.chunk_length * c.action_dim * c.num_bins)
        # Statistics (set by the trainer from the data; saved with the weights).
        a, p = c.action_dim, max(c.proprio_dim, 1)
        self.register_buffer("action_low", -torch.ones(a))  # (A,) 1st percentile
        self.register_buffer("action_high", torch.ones(a))  # (A,) 99th percentile
        self.register_buffer("bin_edges", torch.linspace(-1, 1, c.num_bins + 1)[1:-1].repeat(a, 1))  # (A, NB-1)
        self.register_buffer("bin_centres", torch.linspace(-1, 1, c.num_bins).repeat(a, 1))  # (A, NB)
        self.register_buffer("proprio_mean", torch.zeros(p))  # (P,)
        self.register_buffer("proprio_std", torch.ones(p))  # (P,)

    # --- statistics -------------------------------------------------------------------------------

    def set_statistics(self, stats: dict[str, np.ndarray]) -> None:
        """Copy dataset statistics (keys as the buffers: action_low, …) into the buffers."""
        for name, value in stats.items():
            buffer = getattr(self, name)
            value = torch.as_tensor(np.asarray(value), dtype=buffer.dtype)
            if value.shape != buffer.shape:
                raise ValueError(f"statistics {name!r} has shape {tuple(value.shape)}, expected {tuple(buffer.shape)}")
            buffer.copy_(value)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Robot units → [−1, 1] at the percentiles (ActionSpace.normalize)."""
        span = (self.action_high - self.action_low).clamp(min=1e-8)
        return 2.0 * (actions - self.action_low) / span - 1.0

    def denormalize_actions(self, normalized: torch.Tensor) -> torch.Tensor:
        span = (self.action_high - self.action_low).clamp(min=1e-8)
        return (normalized + 1.0) / 2.0 * span + self.action_low

    def action_bins(self, actions: torch.Tensor) -> torch.Tensor:
        """(…, A) robot units → (…, A) int64 bin indices (quantile edges per dimension)."""
        out = torch.empty(actions.shape, dtype=torch.long, device=actions.device)
        for d in range(self.config.action_dim):
            out[..., d] = torch.bucketize(actions[..., d].contiguous(), self.bin_edges[d], right=True)
        return out

    # --- the network ------------------------------------------------------------------------------

    def features(self, image: torch.Tensor, instruction: torch.Tensor,
                 proprio: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, S, S), (B, D), (B, P) → query outputs (B, Q, W)."""
        c = self.config
        b = image.shape[0]
        patches = self.vision(pixel_values=image).last_hidden_state  # (B, N, Wv) | resnet (B, C, h, w)
        if c.vision == "resnet":
            patches = patches.flatten(2).transpose(1, 2)  # (B, h·w, C)
        tokens = [self.vision_proj(patches), self.instruction_proj(instruction).unsqueeze(1)]  # (B, N, W), (B, 1, W)
        if self.proprio_proj is not None:
            if proprio is None:
                raise ValueError("this model takes proprio (proprio_dim > 0), got None")
            standardized = (proprio - self.proprio_mean) / self.proprio_std.clamp(min=1e-6)  # (B, P)
            tokens.append(self.proprio_proj(standardized).unsqueeze(1))  # (B, 1, W)
        tokens.append(self.queries.unsqueeze(0).expand(b, -1, -1))  # (B, Q, W)
        x = torch.cat(tokens, dim=1) + self.position  # (B, T, W)
        x = self.fusion(inputs_embeds=x).last_hidden_state  # (B, T, W)
        return self.norm(x[:, -c.num_queries:])  # (B, Q, W)

    def forward(self, image: torch.Tensor, instruction: torch.Tensor, proprio: torch.Tensor | None = None, *,
                latents: torch.Tensor | None = None, actions: torch.Tensor | None = None,
                action_mask: torch.Tensor | None = None) -> tuple[VLAOutput, torch.Tensor | None]:
        """Targets: `latents` (B, 4) int64 for the latent head; `actions` (B, H, A) robot units (+ optional
        `action_mask` (B, H) bool, False = padding) for the chunk and bins heads. Loss is None without targets."""
        c = self.config
        flat = self.features(image, instruction, proprio).flatten(1)  # (B, Q·W)
        out, loss = VLAOutput(), None
        if c.head == "latent":
            out.logits = self.head(flat).view(-1, c.latent_codes, c.latent_classes)  # (B, 4, 8)
            out.codes = out.logits.argmax(-1)  # (B, 4)
            if latents is not None:
                loss = F.cross_entropy(out.logits.reshape(-1, c.latent_classes), latents.reshape(-1))
                out.losses["ce"] = loss.detach()
                out.losses["accuracy"] = (out.codes == latents).float().mean()
            return out, loss
        mask = None
        if actions is not None:
            mask = torch.ones(actions.shape[:2], device=actions.device) if action_mask is None \
                else action_mask.to(actions.dtype)  # (B, H)
        if c.head == "chunk":
            out.normalized = self.head(flat).view(-1, c.chunk_length, c.action_dim)  # (B, H, A)
            out.actions = self.denormalize_actions(out.normalized)  # (B, H, A)
            if actions is not None:
                error = (out.normalized - self.normalize_actions(actions)).abs().mean(-1)  # (B, H)
                loss = (error * mask).sum() / mask.sum().clamp(min=1)
                out.losses["l1"] = loss.detach()
        else:
            out.logits = self.head(flat).view(-1, c.chunk_length, c.action_dim, c.num_bins)  # (B, H, A, NB)
            out.actions = self.decode_bins(out.logits)  # (B, H, A)
            if actions is not None:
                target = self.action_bins(actions)  # (B, H, A)
                ce = F.cross_entropy(out.logits.permute(0, 3, 1, 2), target, reduction="none").mean(-1)  # (B, H)
                loss = (ce * mask).sum() / mask.sum().clamp(min=1)
                out.losses["ce"] = loss.detach()
        if actions is not None:
            # Robot-unit L1 of the decoded actions, comparable between heads (a metric, no gradient used).
            l1 = (out.actions.detach() - actions).abs().mean(-1)  # (B, H)
            out.losses["l1_robot"] = (l1 * mask).sum() / mask.sum().clamp(min=1)
        return out, loss

    def decode_bins(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, H, A, NB) → (B, H, A) robot units: expected bin centre, or the most likely bin's centre."""
        if self.config.bins_decode == "expected":
            return (logits.softmax(-1) * self.bin_centres).sum(-1)  # (B, H, A)
        one_hot = F.one_hot(logits.argmax(-1), self.config.num_bins).to(logits.dtype)  # (B, H, A, NB)
        return (one_hot * self.bin_centres).sum(-1)  # (B, H, A)

    def predict_actions(self, image: torch.Tensor, instruction: torch.Tensor,
                        proprio: torch.Tensor | None = None) -> torch.Tensor:
        """The exported computation: (B, 3, S, S), (B, D)[, (B, P)] → actions (B, H, A) in robot units."""
        if self.config.head == "latent":
            raise ValueError("a latent-head VLA predicts latent codes, not actions: finetune it first")
        out, _ = self(image, instruction, proprio)
        return out.actions

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
