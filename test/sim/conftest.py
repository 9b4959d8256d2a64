"""Fixtures for the simulation tests: real Meta-World worlds, rendered offscreen."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def world():
    """A robot-domain SimWorld at 64×64, shared by a module's tests (it reopens envs as needed)."""
    from conla_ros.sim.world import SimWorld

    with SimWorld() as sim:
        yield sim
