"""Videos + latent-action pseudo-labels (`conla label` output) → (image, instruction, 4 codes) samples.

The labels file is `conla label`'s JSON Lines (conla_training.commands.label): one line per clip with
"id", "label", "instruction", "path", "frames", "frame_gap", "stride" and "codes" (codes[i] is the
LAM's code for the pair (o_{i·s}, o_{i·s+k})). A sample is the frame o_{i·s} (the VLA sees the
present and predicts the latent action that follows, LAPA) with codes[i].

Instruction: the clip's "instruction"; when it is empty or missing, its action category "label"
(Something-Something style data has only the template); a clip with neither is skipped. Frames are
read with `conla_training.datasets.clips.read_video` (the path from the labels line, relative paths
resolved against the labels file's folder, then `videos_root`), kept as uint8 and preprocessed per
sample with `conla_ros.core.preprocessing.preprocess_image`, the robot node's function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from conla_ros.core.preprocessing import ImagePreprocessing, preprocess_image

__all__ = ["LatentDataConfig", "LatentLabelDataset"]


@dataclass(frozen=True)
class LatentDataConfig:
    """`data:` of a VLA pretraining run config."""

    labels: Path = Path("data/labels/human.jsonl")  # `conla label` output
    videos_root: Path | None = None  # where relative clip paths live when not next to the labels file
    max_clips: int = 0  # 0: all
    text_encoder: str | None = None  # folder with text_encoder.onnx + tokenizer.json; null: the shared cache
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.max_clips < 0 or self.num_workers < 0:
            raise ValueError(f"max_clips and num_workers must be >= 0, got {self.max_clips}, {self.num_workers}")


class LatentLabelDataset(Dataset):
    """All labelled frames in memory; items keyed (epoch, index) as PairBatchSampler yields them."""

    def __init__(self, config: LatentDataConfig, spec: ImagePreprocessing) -> None:
        from conla_training.datasets.clips import ClipReadError, read_video

        self.config, self.spec = config, spec
        path = Path(config.labels)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: labels file not found (make it with `conla label`)")
        self.skipped: list[tuple[str, str]] = []
        self.frames: list[np.ndarray] = []  # per clip (T, H, W, 3) uint8
        self.texts: list[str] = []  # per clip
        self.index: list[tuple[int, int, int]] = []  # (clip, frame, label row)
        self.codes: list[np.ndarray] = []  # per clip (P, 4) int64
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if config.max_clips:
            lines = lines[: config.max_clips]
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                name, codes = str(row["id"]), np.asarray(row["codes"], dtype=np.int64)
                stride = int(row.get("stride", 1))
            except (ValueError, KeyError, TypeError) as error:
                self.skipped.append((f"{path}:{number}", f"bad labels line ({error})"))
                continue
            text = (row.get("instruction") or row.get("label") or "").strip()
            if not text:
                self.skipped.append((name, "no instruction and no label"))
                continue
            if codes.ndim != 2 or not len(codes):
                self.skipped.append((name, "no codes"))
                continue
            video = self._find(Path(str(row.get("path", ""))), path.parent)
            if video is None:
                self.skipped.append((name, f"video {row.get('path')!r} not found"))
                continue
            try:
                frames = read_video(video)
            except ClipReadError as error:
                self.skipped.append((name, str(error)))
                continue
            c = len(self.frames)
            self.frames.append(frames)
            self.texts.append(text)
            self.codes.append(codes)
            for i in range(len(codes)):
                if i * stride < len(frames):
                    self.index.append((c, i * stride, i))
        if not self.index:
            raise ValueError(f"{path}: no usable labelled frames ({len(self.skipped)} clips skipped)")
        self.num_codes = int(self.codes[0].shape[1])
        self.instructions = sorted(set(self.texts))
        self.embeddings: dict[str, np.ndarray] = {}

    def _find(self, video: Path, labels_dir: Path) -> Path | None:
        candidates = [video] if video.is_absolute() else [labels_dir / video, Path.cwd() / video]
        if self.config.videos_root is not None:
            candidates.append(Path(self.config.videos_root) / video)
            candidates.append(Path(self.config.videos_root) / video.name)
        return next((c for c in candidates if c.is_file()), None)

    @property
    def epoch_length(self) -> int:
        return len(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def set_embeddings(self, embeddings: dict[str, np.ndarray]) -> None:
        missing = [t for t in self.instructions if t not in embeddings]
        if missing:
            raise ValueError(f"no embedding for instructions {missing}")
        self.embeddings = {t: np.asarray(embeddings[t], np.float32) for t in self.instructions}

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        c, t, i = self.index[key[1] if isinstance(key, tuple) else key]
        return {"image": torch.from_numpy(preprocess_image(self.frames[c][t], self.spec)),  # (3, S, S)
                "instruction": torch.from_numpy(self.embeddings[self.texts[c]]),  # (D,)
                "latents": torch.from_numpy(self.codes[c][i])}  # (4,)
