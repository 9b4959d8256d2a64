"""Fixtures for tests that run nodes as separate processes (helpers: integration/ros_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.ros_harness import ProcessPool, RosClient


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessPool]:
    """Node processes for one test."""
    pool = ProcessPool(tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def ros() -> Iterator[RosClient]:
    """The test's own ROS node."""
    pytest.importorskip("rclpy")
    client = RosClient("conla_integration_test")
    try:
        yield client
    finally:
        client.close()
