"""Clips (videos or robot episodes) and their frames, without torch.

Torch-free so that labelling from the exported ONNX quantizer runs where torch is not installed;
the torch data set over frame pairs is conla_training.datasets.video_pairs. See that module for the
three source formats ("videos", "ssv2", "episodes") that `DataConfig.format` selects.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

__all__ = [
    "VIDEO_SUFFIXES",
    "Clip",
    "ClipReadError",
    "DataConfig",
    "list_clips",
    "read_frames",
    "read_video",
    "ssv2_category",
]

VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv")


@dataclass(frozen=True)
class DataConfig:
    """Where frame pairs come from and how they are drawn."""

    format: Literal["videos", "ssv2", "episodes"] = "videos"
    root: Path = Path("data/videos")
    labels: Path | None = None  # videos: default ROOT/labels.jsonl; ssv2: required (train.json)
    frame_gap: int = 4  # k, in frames
    samples_per_clip: int = 1  # frame pairs per clip per epoch
    max_clips: int = 0  # use only the first N clips (0: all)
    cache_mb: int = 512  # decoded-frame cache per loader worker
    num_workers: int = 2
    brightness_jitter: float = 0.0  # augmentation, off by default

    def __post_init__(self) -> None:
        if self.frame_gap < 1:
            raise ValueError(f"frame_gap must be >= 1, got {self.frame_gap}")
        if self.samples_per_clip < 1 or self.max_clips < 0 or self.cache_mb < 0 or self.num_workers < 0:
            raise ValueError("samples_per_clip must be >= 1 and max_clips, cache_mb, num_workers >= 0")
        if not 0.0 <= self.brightness_jitter < 1.0:
            raise ValueError(f"brightness_jitter must be in [0, 1), got {self.brightness_jitter}")
        if self.format == "ssv2" and self.labels is None:
            raise ValueError("format 'ssv2' needs `labels`: Something-Something v2's label JSON (e.g. train.json)")


class ClipReadError(RuntimeError):
    """A clip that cannot be decoded; the message says why."""


@dataclass(frozen=True)
class Clip:
    """One source of frames."""

    name: str  # id, reported when the clip is skipped
    path: Path
    label: str | None
    kind: Literal["video", "episode"] = "video"
    instruction: str | None = None  # videos: labels.jsonl's; ssv2: its filled-in `label`; episodes: the task's


def ssv2_category(template: str) -> str:
    """'Pushing [something] from left to right' → 'Pushing something from left to right'."""
    return re.sub(r"\s+", " ", template.replace("[", "").replace("]", "")).strip()


def _find_video(folder: Path, clip_id: str) -> Path | None:
    for suffix in VIDEO_SUFFIXES:
        path = folder / f"{clip_id}{suffix}"
        if path.is_file():
            return path
    return None


def list_clips(config: DataConfig) -> tuple[list[Clip], list[tuple[str, str]]]:
    """(usable clips, [(name, reason)] for listed clips whose file is missing)."""
    root = Path(config.root)
    clips: list[Clip] = []
    missing: list[tuple[str, str]] = []
    if config.format == "videos":
        folder = root / "videos"
        labels_path = Path(config.labels) if config.labels is not None else root / "labels.jsonl"
        if labels_path.is_file():
            for number, line in enumerate(labels_path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    clip_id = str(entry["id"])
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise ValueError(f"{labels_path}:{number}: not a label line with an 'id' ({error})") from None
                path = _find_video(folder, clip_id)
                if path is None:
                    missing.append((clip_id, f"no video file {folder}/{clip_id}.mp4"))
                    continue
                label = entry.get("label")
                instruction = entry.get("instruction")
                clips.append(Clip(clip_id, path, str(label) if label else None,
                                  instruction=str(instruction) if instruction else None))
        elif config.labels is not None:
            raise FileNotFoundError(f"labels file {labels_path} not found")
        else:
            clips = [Clip(p.stem, p, None) for p in sorted(folder.glob("*.mp4"))]
    elif config.format == "ssv2":
        assert config.labels is not None
        entries = json.loads(Path(config.labels).read_text(encoding="utf-8"))
        for entry in entries:
            clip_id = str(entry["id"])
            path = _find_video(root, clip_id)
            if path is None:
                missing.append((clip_id, f"no video file {root}/{clip_id}.webm"))
                continue
            template, text = entry.get("template"), entry.get("label")
            clips.append(Clip(clip_id, path, ssv2_category(template) if template else None,
                              instruction=str(text) if text else None))
    else:
        from conla_ros.episodes import topics as T
        from conla_ros.episodes.reader import list_episodes, read_episode_metadata

        for path in list_episodes(root):
            meta = read_episode_metadata(path)
            task, text = meta.get(T.META_TASK), meta.get(T.META_INSTRUCTION)
            clips.append(Clip(path.name, path, str(task) if task else None, kind="episode",
                              instruction=str(text) if text else None))
    if config.max_clips:
        clips = clips[: config.max_clips]
    if not clips:
        raise FileNotFoundError(f"no usable clips under {root} (format {config.format!r})")
    return clips, missing


def read_video(path: Path) -> np.ndarray:
    """All frames of a video file as (T, H, W, 3) uint8 RGB; ClipReadError if unreadable."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ClipReadError("cannot open video")
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise ClipReadError("no frame could be decoded")
    if len({f.shape for f in frames}) != 1:
        raise ClipReadError("frame size changes within the video")
    return np.stack(frames)


def read_frames(clip: Clip) -> np.ndarray:
    """All frames of a clip as (T, H, W, 3) uint8 RGB; ClipReadError if it cannot be read."""
    if clip.kind == "episode":
        from conla_ros.episodes.reader import load_episode

        try:
            return load_episode(clip.path).images
        except Exception as error:  # EpisodeReadError or a rosbags error: either way unusable
            raise ClipReadError(str(error)) from None
    if not clip.path.is_file():
        raise ClipReadError("file missing")
    return read_video(clip.path)
