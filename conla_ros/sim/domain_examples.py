"""A picture of the two visual domains: robot-domain frames above human-domain frames of the same scenes.

Apart from `domains` because it needs the world, which itself builds on `domains`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from conla_ros.sim.world import SimWorld, WorldConfig

__all__ = ["save_domain_examples"]


def save_domain_examples(path: Path, tasks: Sequence[str], seed: int, image_size: int = 64, scale: int = 3,
                         steps: int = 20) -> Path:
    """Render a grid PNG: a robot-domain row above a human-domain row, one column per task.

    Column i uses world seed `seed + i` in both rows (the same scene, so the pair shows only the
    domain gap; different columns show different human-domain looks).

    Frames are taken after `steps` scripted-expert steps (so the hand is at work), upscaled `scale`
    times with nearest-neighbour interpolation so single pixels stay visible.
    """
    import cv2

    rows = []
    for domain in ("robot", "human"):
        frames = []
        with SimWorld(WorldConfig(image_size=image_size, domain=domain)) as world:
            for column, task in enumerate(tasks):
                obs = world.reset(task, seed + column)
                for _ in range(steps):
                    obs = world.step(world.expert_action())
                frames.append(obs.image)
        rows.append(np.concatenate(frames, axis=1))
    grid = np.concatenate(rows, axis=0)
    grid = cv2.resize(grid, (grid.shape[1] * scale, grid.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
