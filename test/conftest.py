"""Shared test set-up.

Every test run gets a ROS_DOMAIN_ID of its own, held by a lock file for as long as the run lasts,
so two runs on one machine (two developers, or CI beside a developer) never see each other's
topics. DDS discovery stays on the loopback interface.
"""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from pathlib import Path

import pytest

import conla_ros.sim  # noqa: F401 - picks MuJoCo's GL backend before any test imports mujoco or metaworld

# Domain IDs above 101 can push Fast DDS ports past the Linux ephemeral range; 0 is everyone's default.
_DOMAIN_IDS = range(1, 101)
_held_lock = None  # kept open (and so locked) until the interpreter exits


def _claim_domain_id() -> int:
    """Lock and return a ROS domain ID no other live test run on this machine holds."""
    global _held_lock
    lock_dir = Path(tempfile.gettempdir()) / "conla_ros_test_domains"
    lock_dir.mkdir(exist_ok=True)
    candidates = list(_DOMAIN_IDS)
    random.Random(os.getpid()).shuffle(candidates)
    for domain_id in candidates:
        handle = open(lock_dir / f"{domain_id}.lock", "w")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held_lock = handle
        return domain_id
    raise RuntimeError(f"every ROS domain ID in {_DOMAIN_IDS} is held by another test run")


def pytest_configure(config: pytest.Config) -> None:
    # Set before any test imports rclpy, and inherited by the processes tests start.
    if "CONLA_TEST_DOMAIN_ID" not in os.environ:
        os.environ["CONLA_TEST_DOMAIN_ID"] = str(_claim_domain_id())
    os.environ["ROS_DOMAIN_ID"] = os.environ["CONLA_TEST_DOMAIN_ID"]
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return Path(__file__).resolve().parent.parent
