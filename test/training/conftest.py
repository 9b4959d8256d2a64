"""Fixtures for the training tests: tiny synthetic videos (moving squares labelled by direction)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

DIRECTIONS = {"move left": (-1, 0), "move right": (1, 0), "move up": (0, -1), "move down": (0, 1)}
COLOURS = [(230, 40, 40), (40, 200, 60), (50, 80, 230), (220, 200, 40)]


def square_frames(direction: tuple[int, int], colour: tuple[int, int, int], frames: int = 10, size: int = 48,
                  side: int = 12, speed: int = 2, start: tuple[int, int] | None = None) -> np.ndarray:
    """(T, size, size, 3) uint8 RGB: a coloured square moving `speed` px per frame on a grey background."""
    x0, y0 = start if start is not None else ((size - side) // 2, (size - side) // 2)
    out = np.full((frames, size, size, 3), 90, dtype=np.uint8)
    for t in range(frames):
        x = int(np.clip(x0 + direction[0] * speed * t, 0, size - side))
        y = int(np.clip(y0 + direction[1] * speed * t, 0, size - side))
        out[t, y : y + side, x : x + side] = colour
    return out


def write_mp4(path: Path, frames: np.ndarray, fps: float = 10.0) -> None:
    """Write RGB frames with OpenCV's 'mp4v' codec (the one opencv-python-headless reads back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def make_video_dataset(root: Path, clips_per_direction: int = 2, frames: int = 10, garbage: int = 0) -> Path:
    """ROOT/videos/<id>.mp4 + ROOT/labels.jsonl (docs/architecture.md); `garbage` corrupt .mp4 files added."""
    rng = np.random.default_rng(0)
    lines = []
    for label, direction in DIRECTIONS.items():
        for i in range(clips_per_direction):
            clip_id = f"{label.replace(' ', '_')}_{i:03d}"
            colour = COLOURS[int(rng.integers(len(COLOURS)))]
            start = (int(rng.integers(10, 26)), int(rng.integers(10, 26)))
            write_mp4(root / "videos" / f"{clip_id}.mp4", square_frames(direction, colour, frames, start=start))
            lines.append({"id": clip_id, "label": label, "instruction": f"{label} the square"})
    for g in range(garbage):
        clip_id = f"garbage_{g:03d}"
        (root / "videos").mkdir(parents=True, exist_ok=True)
        (root / "videos" / f"{clip_id}.mp4").write_bytes(b"\x00\x01 this is not a video " * 50)
        lines.append({"id": clip_id, "label": "move left", "instruction": ""})
    (root / "labels.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


@pytest.fixture(scope="session")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 clips (2 per direction), 10 frames of 48 × 48, plus one garbage .mp4 listed in labels.jsonl."""
    return make_video_dataset(tmp_path_factory.mktemp("videos"), garbage=1)


@pytest.fixture(scope="session")
def clean_video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 clips (2 per direction), no broken file."""
    return make_video_dataset(tmp_path_factory.mktemp("clean_videos"))


@pytest.fixture(scope="session")
def make_videos():
    """The `make_video_dataset(root, clips_per_direction, frames, garbage)` helper, for a set of one's own."""
    return make_video_dataset


@pytest.fixture(scope="session")
def mp4_writer():
    """The `write_mp4(path, frames, fps)` helper."""
    return write_mp4


@pytest.fixture(scope="session")
def moving_square():
    """The `square_frames(direction, colour, frames, size, side, speed, start)` helper."""
    return square_frames


@pytest.fixture(scope="session")
def tiny_config_path(repo_root: Path) -> Path:
    return repo_root / "config" / "lam_tiny.yaml"
