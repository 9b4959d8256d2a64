"""The picture of the two visual domains."""

from __future__ import annotations

import pytest

pytest.importorskip("metaworld", reason="the simulation needs the 'sim' extra (metaworld, mujoco)")

from conla_ros.sim.domain_examples import save_domain_examples


def test_save_domain_examples(tmp_path):
    import cv2

    path = save_domain_examples(tmp_path / "domains.png", ["reach", "push"], seed=0, image_size=32, steps=2)
    grid = cv2.imread(str(path))
    assert grid.shape == (2 * 32 * 3, 2 * 32 * 3, 3)
