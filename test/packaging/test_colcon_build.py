"""colcon builds the package the ament_python way, as on a robot with ROS 2 installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import run_checked

COLCON = Path(sys.executable).parent / "colcon"
NODES = ("policy_node", "recorder_node", "sim_arm_node", "scripted_teleop_node")


@pytest.mark.skipif(not COLCON.exists(), reason="colcon-common-extensions is not installed (dev extra)")
def test_colcon_build_installs_the_ament_layout(package_source: Path) -> None:
    workspace = package_source.parent.parent
    env = {**os.environ, "PATH": f"{COLCON.parent}{os.pathsep}{os.environ['PATH']}"}
    run_checked([str(COLCON), "--log-base", str(workspace / "log"), "build", "--base-paths", "src",
                 "--build-base", "build", "--install-base", "install", "--event-handlers", "console_direct-"],
                cwd=workspace, env=env)

    prefix = workspace / "install/conla_ros"
    assert (prefix / "share/ament_index/resource_index/packages/conla_ros").is_file()
    assert (prefix / "share/conla_ros/package.xml").is_file()
    assert (prefix / "share/conla_ros/launch/policy.launch.py").is_file()
    assert (prefix / "share/conla_ros/config/policy.yaml").is_file()
    site_packages = prefix / f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    assert (site_packages / "conla_ros/cli.py").is_file()
    assert (site_packages / "conla_training/__init__.py").is_file()
    for node in (*NODES, "conla"):
        executable = prefix / "lib/conla_ros" / node
        assert executable.is_file() and os.access(executable, os.X_OK), executable

    # What `source install/setup.bash && ros2 run conla_ros policy_node` amounts to.
    run_env = {**env, "PYTHONPATH": str(site_packages), "AMENT_PREFIX_PATH": str(prefix)}
    ran = subprocess.run([str(prefix / "lib/conla_ros/policy_node")], capture_output=True, text=True,
                         env=run_env)
    assert "Traceback" not in ran.stderr, ran.stderr
    assert "policy_node" in ran.stderr + ran.stdout
