"""`conla export --lam CKPT --out DIR`: the LAM's encoder + quantizer as ONNX (frame pair → 4 codes).

DIR gets:
    lam_encoder.onnx   inputs "o_t", "o_tk": (batch, 3, S, S) float32 RGB in [0, 1];
                       output "codes": (batch, 4) int64 in {0..K−1}; batch is dynamic
    lam.yaml           what a consumer needs without torch: the preprocessing spec (the one
                       conla_ros.core.preprocessing function, with these settings), frame_gap the
                       LAM was trained with, codebook size, tensor names, the parity result and
                       provenance (checkpoint, step, model config, git commit, versions)

Parity check: the ONNX model (onnxruntime, CPU) and the torch model must give identical codes on
sample pairs — `--parity-pairs` synthetic pairs (smooth random images and a shifted copy) and,
with `--videos DIR`, real pairs from those clips. Any difference fails the export (exit 1) and
leaves no half-written DIR behind (it is written to DIR.tmp and published with `publish_directory`).

torch is imported inside `run` only.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conla_ros.core.atomic_dir import publish_directory
from conla_training.exports.provenance import git_commit

__all__ = ["LAM_META", "LAM_ONNX", "export_lam"]

LAM_ONNX = "lam_encoder.onnx"
LAM_META = "lam.yaml"
META_FORMAT = "conla_lam_encoder/1"


def _synthetic_pairs(n: int, size: int, seed: int = 0):
    """(n, 3, S, S) ×2 float32: smooth random images and the same shifted by a few pixels."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g)
    o_t = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    shifts = np.random.default_rng(seed).integers(-4, 5, size=(n, 2))
    o_tk = torch.stack([torch.roll(o_t[i], shifts=(int(dy), int(dx)), dims=(1, 2)) for i, (dy, dx) in
                        enumerate(shifts)])
    return o_t.contiguous(), o_tk.contiguous()



@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the dynamo exporter's known noise, which says nothing about this model: that torchvision
    (not a dependency) is missing, a torch-internal deprecation, and the note that our two inputs share
    one batch axis. Other warnings still show."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*The axis name: batch will not be used", category=UserWarning)
            yield
    finally:
        registration.setLevel(level)

def export_lam(checkpoint: Path, out: Path, videos: Path | None = None, parity_pairs: int = 64,
               opset: int = 18) -> dict[str, Any]:
    """Export; returns the metadata written to lam.yaml. Raises RuntimeError when parity fails."""
    import onnxruntime as ort
    import torch
    import yaml
    from torch import nn

    from conla_ros.core.config import config_to_dict
    from conla_training.trainers.lam import load_lam

    model, payload = load_lam(checkpoint)
    config = model.config
    frame_gap = int(payload["run_config"]["data"]["frame_gap"])

    class CodeEncoder(nn.Module):
        def __init__(self, lam) -> None:
            super().__init__()
            self.lam = lam

        def forward(self, o_t: torch.Tensor, o_tk: torch.Tensor) -> torch.Tensor:
            h, _ = self.lam.encode(o_t, o_tk)  # (B, 2, N, W)
            return self.lam.quantizer.nearest(self.lam.action_latent(h))  # (B, T) int64

    encoder = CodeEncoder(model).eval()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        sample = _synthetic_pairs(2, config.image_size)
        batch = torch.export.Dim("batch", min=1)
        with _quiet_exporter():
            torch.onnx.export(
                encoder, sample, str(tmp / LAM_ONNX), input_names=["o_t", "o_tk"], output_names=["codes"],
                dynamic_shapes={"o_t": {0: batch}, "o_tk": {0: batch}}, opset_version=opset, dynamo=True,
                external_data=False, verbose=False,
            )
        session = ort.InferenceSession(str(tmp / LAM_ONNX), providers=["CPUExecutionProvider"])
        pairs = [_synthetic_pairs(parity_pairs, config.image_size, seed=1)] if parity_pairs else []
        if videos is not None:
            pairs.append(_video_pairs(videos, config.preprocessing(), frame_gap))
        checked, identical = 0, 0
        for o_t, o_tk in pairs:
            with torch.no_grad():
                expected = encoder(o_t, o_tk).numpy()
            got = session.run(["codes"], {"o_t": o_t.numpy(), "o_tk": o_tk.numpy()})[0]
            checked += len(expected)
            identical += int((got == expected).all(axis=1).sum())
        if identical != checked:
            raise RuntimeError(f"parity check failed: ONNX and torch codes differ on {checked - identical} of "
                               f"{checked} sample pairs")
        spec = config.preprocessing()
        meta = {
            "format": META_FORMAT,
            "onnx": LAM_ONNX,
            "inputs": {"o_t": ["batch", 3, config.image_size, config.image_size],
                       "o_tk": ["batch", 3, config.image_size, config.image_size]},
            "input_range": "RGB float32 in [0, 1], preprocessed as `preprocessing` says",
            "output": {"codes": ["batch", config.num_tokens]},
            "num_codes": config.quantizer.num_codes,
            "num_tokens": config.num_tokens,
            "frame_gap": frame_gap,
            "preprocessing": {"size": spec.size, "crop_fraction": spec.crop_fraction, "mean": list(spec.mean),
                              "std": list(spec.std), "interpolation": spec.interpolation},
            "parity": {"pairs": checked, "identical": identical},
            "provenance": {
                "checkpoint": str(Path(checkpoint).resolve()),
                "step": int(payload["step"]),
                "model_config": config_to_dict(config),
                "data": payload["run_config"].get("data"),
                "commit": git_commit(),
                "torch": str(torch.__version__),
                "onnxruntime": str(ort.__version__),
                "opset": opset,
            },
        }
        (tmp / LAM_META).write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        publish_directory(tmp, out)  # readable by all, and `out` is never missing for more than a rename
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _video_pairs(videos: Path, spec, frame_gap: int, limit: int = 64):
    """Up to `limit` real pairs (first and middle of each clip) from a videos folder."""
    import numpy as np
    import torch

    from conla_ros.core.preprocessing import preprocess_images
    from conla_training.datasets.clips import ClipReadError, DataConfig, list_clips, read_frames

    clips, _ = list_clips(DataConfig(root=videos, frame_gap=frame_gap))
    o_t, o_tk = [], []
    for clip in clips:
        try:
            frames = preprocess_images(read_frames(clip), spec)
        except ClipReadError:
            continue
        for t in {0, max(0, (len(frames) - frame_gap) // 2)}:
            if t + frame_gap < len(frames):
                o_t.append(frames[t])
                o_tk.append(frames[t + frame_gap])
        if len(o_t) >= limit:
            break
    if not o_t:
        raise RuntimeError(f"{videos}: no readable clip for the parity check")
    return torch.from_numpy(np.stack(o_t)), torch.from_numpy(np.stack(o_tk))
