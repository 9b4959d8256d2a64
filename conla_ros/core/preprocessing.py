"""The one image preprocessing shared by training and the robot node.

Training (on batches of video frames) and the policy node (on camera images) both call these
functions with the same `ImagePreprocessing` spec, saved with the model, so the two cannot drift.

Pipeline: (H, W, 3) uint8 RGB → centred square crop → resize to `size` × `size` with OpenCV →
x / 255 → (x - mean) / std → (3, size, size) float32. Colour order is left as given (RGB in,
RGB out); converting a BGR camera image is the caller's job.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

__all__ = ["ImagePreprocessing", "centre_crop_square", "preprocess_image", "preprocess_images"]


@dataclass(frozen=True)
class ImagePreprocessing:
    """How a camera image becomes a model input.

    Attributes:
        size: side of the square output in pixels.
        crop_fraction: side of the centred square crop as a fraction of the shorter image side
            (1.0 = the largest centred square).
        mean: per-channel (R, G, B) mean subtracted after scaling to [0, 1].
        std: per-channel (R, G, B) standard deviation divided by after subtracting the mean.
        interpolation: 'area' (cv2.INTER_AREA when shrinking, INTER_LINEAR when enlarging) or
            'linear' (always INTER_LINEAR).
    """

    size: int = 64
    crop_fraction: float = 1.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: Literal["area", "linear"] = "area"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 8:
            raise ValueError(f"size must be an int >= 8, got {self.size!r}")
        if not _is_number(self.crop_fraction) or not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if (
                not isinstance(values, (tuple, list))
                or len(values) != 3
                or not all(_is_number(v) and math.isfinite(v) for v in values)
            ):
                raise ValueError(f"{name} must be 3 finite numbers (R, G, B), got {values!r}")
            # Normalise lists/ints to a float tuple so the spec stays hashable and compares equal.
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if any(s <= 0.0 for s in self.std):
            raise ValueError(f"std must be > 0 in every channel, got {self.std!r}")
        if self.interpolation not in ("area", "linear"):
            raise ValueError(f"interpolation must be 'area' or 'linear', got {self.interpolation!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@functools.cache
def _lookup_table(mean: tuple[float, float, float], std: tuple[float, float, float]) -> np.ndarray:
    """(3, 256) float32: the normalised value of every uint8 level in each channel.

    Computed in float64 and rounded once, so e.g. 255 maps to float32((1 - mean) / std) exactly;
    a table lookup is also faster than converting and scaling every pixel.
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    table = (levels[None, :] - np.asarray(mean)[:, None]) / np.asarray(std)[:, None]
    table = table.astype(np.float32)
    table.flags.writeable = False  # shared by every call through the cache
    return table


def _check_image(image: np.ndarray, batched: bool) -> None:
    ndim, layout = (4, "(N, H, W, 3)") if batched else (3, "(H, W, 3)")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an {layout} uint8 RGB numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != ndim or image.shape[-1] != 3 or 0 in image.shape[-3:-1]:
        raise ValueError(
            f"expected an {layout} uint8 RGB image array, got shape {image.shape} dtype {image.dtype}"
        )


def _crop_box(height: int, width: int, crop_fraction: float) -> tuple[int, int, int]:
    """(top, left, side) of the centred square crop."""
    side = max(1, round(crop_fraction * min(height, width)))
    return (height - side) // 2, (width - side) // 2, side


def centre_crop_square(image: np.ndarray, crop_fraction: float = 1.0) -> np.ndarray:
    """The centred square crop of an (H, W, ...) image, as a view (no copy).

    Its side is `crop_fraction` × the shorter image side (rounded, at least 1 pixel); when the
    leftover is odd, the extra pixel is left on the bottom/right.
    """
    if not _is_number(crop_fraction) or not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}")
    if not isinstance(image, np.ndarray) or image.ndim < 2 or 0 in image.shape[:2]:
        raise ValueError(f"expected an (H, W, ...) image array, got shape {getattr(image, 'shape', None)}")
    top, left, side = _crop_box(image.shape[0], image.shape[1], crop_fraction)
    return image[top : top + side, left : left + side]


def _resize_into(square: np.ndarray, spec: ImagePreprocessing, out: np.ndarray) -> None:
    """Resize one uint8 (side, side, 3) square into `out` (size, size, 3)."""
    side = square.shape[0]
    if side == spec.size:
        out[...] = square
        return
    shrinking = side > spec.size
    flag = cv2.INTER_AREA if spec.interpolation == "area" and shrinking else cv2.INTER_LINEAR
    cv2.resize(square, (spec.size, spec.size), dst=out, interpolation=flag)


def preprocess_image(image: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (3, size, size) float32, C-contiguous, normalised by `spec`."""
    _check_image(image, batched=False)
    square = centre_crop_square(image, spec.crop_fraction)
    resized = np.empty((spec.size, spec.size, 3), dtype=np.uint8)
    _resize_into(square, spec, resized)
    table = _lookup_table(spec.mean, spec.std)
    out = np.empty((3, spec.size, spec.size), dtype=np.float32)
    for c in range(3):
        # 'clip' skips the bounds check (uint8 indices are always in range) and the output buffer.
        np.take(table[c], resized[:, :, c], out=out[c], mode="clip")
    return out


def preprocess_images(images: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB → (N, 3, size, size) float32; equal to `preprocess_image` per frame."""
    _check_image(images, batched=True)
    n, height, width = images.shape[:3]
    top, left, side = _crop_box(height, width, spec.crop_fraction)
    resized = np.empty((n, spec.size, spec.size, 3), dtype=np.uint8)
    for i in range(n):
        _resize_into(images[i, top : top + side, left : left + side], spec, resized[i])
    table = _lookup_table(spec.mean, spec.std)
    out = np.empty((n, 3, spec.size, spec.size), dtype=np.float32)
    for c in range(3):
        out[:, c] = np.take(table[c], resized[..., c], mode="clip")
    return out
