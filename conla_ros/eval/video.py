"""All rollouts of an evaluation in one mp4, shared by `conla eval sim` and `conla eval ros`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conla_ros.sim.seeds import TRAIN_SEED_LIMIT

__all__ = ["RolloutVideo", "episode_caption"]

_VIDEO_MIN_SIDE = 256  # rollout videos are upscaled (nearest) to at least this many pixels


class RolloutVideo:
    """All rollouts in one mp4: frames upscaled, a caption, and a green/red border at the end.

    Shared by `conla eval sim` and `conla eval ros`, so both write the same kind of video.
    """

    def __init__(self, path: Path, image_size: int, fps: float) -> None:
        import cv2

        self._cv2 = cv2
        self.scale = max(1, -(-_VIDEO_MIN_SIDE // image_size))
        side = image_size * self.scale
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (side, side))
        if not self._writer.isOpened():
            raise OSError(f"could not open {path} for writing an mp4 (OpenCV 'mp4v')")
        self.path = path

    def frame(self, image: np.ndarray, caption: str, border: tuple[int, int, int] | None = None) -> np.ndarray:
        """Write one RGB frame, upscaled and captioned (framed in `border`, BGR, if given); returns it as written."""
        cv2 = self._cv2
        big = cv2.resize(image, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_NEAREST)
        big = cv2.cvtColor(big, cv2.COLOR_RGB2BGR)
        cv2.putText(big, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        if border is not None:
            cv2.rectangle(big, (0, 0), (big.shape[1] - 1, big.shape[0] - 1), border, 6)
        self._writer.write(big)
        return big

    def finish(self, image: np.ndarray, caption: str, success: bool) -> None:
        """End an episode: hold its last frame a quarter second, framed green (success) or red (failure)."""
        colour = (0, 200, 0) if success else (0, 0, 220)  # BGR
        for _ in range(20):
            self.frame(image, caption + (" success" if success else " fail"), border=colour)

    def close(self) -> None:
        """Finish the file."""
        self._writer.release()


def episode_caption(task: str, seed: int) -> str:
    """The video caption of an evaluation episode: task and held-out scene number."""
    return f"{task} #{seed - TRAIN_SEED_LIMIT}"
