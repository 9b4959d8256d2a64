"""The launch files under the real `ros2 launch`: which tooling, and the ament prefix it finds the package in.

Where a ROS 2 is sourced (ROS_DISTRO set and `ros2` on PATH), its own `ros2` and launch packages
are used. Otherwise the upstream launch tooling kept beside the checkout (`../shared/ros2-launch`,
launch 3.7.1 / launch_ros 0.28.0 / ros2cli 0.36.1, run with this Python). With neither, the tests
skip and say so. The package is found through the venv's ament prefix (`make venv` lays it out:
scripts/ament_prefix.sh).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_TOOLS = REPO.parent / "shared" / "ros2-launch"


@dataclass(frozen=True)
class Ros2:
    """How to run `ros2 ...` here: the command, and the environment it needs."""

    command: list[str]
    env: dict[str, str]
    source: str  # which tooling, for messages

    def run_args(self, *args: str) -> list[str]:
        return [*self.command, *args]


def _prefix() -> Path | None:
    prefix = Path(sys.prefix)
    marker = prefix / "share/ament_index/resource_index/packages/conla_ros"
    return prefix if marker.is_file() and (prefix / "lib/conla_ros/policy_node").is_file() else None


def find_ros2() -> Ros2 | str:
    """The ros2 tooling to test with, or the reason there is none."""
    prefix = _prefix()
    if prefix is None:
        return f"{sys.prefix} is no ament prefix for conla_ros (run `make venv`: scripts/ament_prefix.sh lays it out)"
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    if env.get("ROS_DISTRO") and shutil.which("ros2"):
        return Ros2(["ros2"], env, f"the sourced ROS 2 {env['ROS_DISTRO']}")
    tool = SHARED_TOOLS / "bin" / "ros2"
    if tool.is_file():
        env["ROS2_PYTHON"] = sys.executable
        site = str(SHARED_TOOLS / "site")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
        return Ros2(["bash", str(tool)], env, f"the upstream launch tooling in {SHARED_TOOLS}")
    return ("neither a sourced ROS 2 (ROS_DISTRO and ros2 on PATH) nor ../shared/ros2-launch: no `ros2 launch` "
            "to test with")


@pytest.fixture(scope="session")
def ros2() -> Ros2:
    found = find_ros2()
    if isinstance(found, str):
        pytest.skip(found)
    return found
