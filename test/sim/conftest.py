"""Fixtures for the simulation tests: real Meta-World worlds, rendered offscreen."""

from __future__ import annotations

import os

# Before anything in these tests imports mujoco or metaworld (importorskip included): the GL
# backend is chosen on the first import, and only EGL (or OSMesa) renders without a display.
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest


@pytest.fixture(scope="module")
def world():
    """A robot-domain SimWorld at 64×64, shared by a module's tests (it reopens envs as needed)."""
    from conla_ros.sim.world import SimWorld

    with SimWorld() as sim:
        yield sim
