"""A pip install gives ROS the same view of the package as a colcon build does."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from support import run_checked

NODES = ("policy_node", "recorder_node", "sim_arm_node", "scripted_teleop_node")


def test_pip_install_registers_package_in_ament_index(tmp_path: Path, package_source: Path) -> None:
    # A wheel as pip builds it, installed (no dependencies: the layout is the point) into a bare venv.
    wheels = tmp_path / "wheels"
    run_checked([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                 "--wheel-dir", str(wheels), str(package_source)])
    prefix = tmp_path / "venv"
    run_checked([sys.executable, "-m", "venv", "--without-pip", str(prefix)])
    run_checked([sys.executable, "-m", "pip", "--python", str(prefix / "bin" / "python"), "install",
                 "--quiet", "--no-deps", "--no-compile", *map(str, wheels.glob("*.whl"))])

    assert (prefix / "share/ament_index/resource_index/packages/conla_ros").is_file()
    share = prefix / "share/conla_ros"
    assert (share / "package.xml").is_file()
    assert (share / "launch/policy.launch.py").is_file()
    assert (share / "config/policy.yaml").is_file()
    assert (prefix / "bin/conla").is_file()
    for node in NODES:
        executable = prefix / "lib/conla_ros" / node
        assert executable.is_file() and os.access(executable, os.X_OK), executable

    # ament_index (what `ros2 run` and launch_ros use) finds the package through AMENT_PREFIX_PATH.
    finder = ("from ament_index_python.packages import get_package_prefix, get_package_share_directory;"
              "print(get_package_prefix('conla_ros')); print(get_package_share_directory('conla_ros'))")
    found = run_checked([sys.executable, "-c", finder], env={**os.environ, "AMENT_PREFIX_PATH": str(prefix)})
    assert found.stdout.split() == [str(prefix), str(share)]

    # The launcher runs the node module with the venv's own Python, wherever it is called from.
    ran = subprocess.run([str(prefix / "lib/conla_ros/policy_node")], capture_output=True, text=True,
                         cwd=tmp_path)
    assert "Traceback" not in ran.stderr and "No module named" not in ran.stderr, ran.stderr
    assert "policy_node" in ran.stdout + ran.stderr


def test_venv_python_runs_the_installed_conla_command() -> None:
    # The project venv itself (what `make demo` uses) has the console script next to its Python.
    scripts = Path(sysconfig.get_path("scripts"))
    result = run_checked([str(scripts / "conla"), "--help"])
    assert "sim" in result.stdout and "train" in result.stdout


def test_the_editable_venv_gets_an_ament_prefix_and_a_setup_script(tmp_path: Path, repo_root: Path) -> None:
    """scripts/ament_prefix.sh (run by make): an editable install has no data files, so it lays out the
    index marker, share links and node launchers in the venv, and `source VENV/setup.sh` finds them."""
    venv = tmp_path / "venv"
    run_checked([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    run_checked(["bash", str(repo_root / "scripts/ament_prefix.sh"), str(venv)])
    assert (venv / "share/ament_index/resource_index/packages/conla_ros").is_file()
    share = venv / "share/conla_ros"
    for name in ("package.xml", "launch/policy.launch.py", "launch/sim_demo.launch.py", "config/policy.yaml",
                 "config/fastdds_large_images.xml"):
        assert (share / name).resolve() == (repo_root / name).resolve(), name  # links: edits apply at once
    for node in NODES:
        assert os.access(venv / "lib/conla_ros" / node, os.X_OK), node
    finder = ("from ament_index_python.packages import get_package_share_directory;"
              "print(get_package_share_directory('conla_ros'))")
    script = f". {venv}/setup.sh && . {venv}/setup.sh && echo $AMENT_PREFIX_PATH && {sys.executable} -c \"{finder}\""
    env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    out = run_checked(["sh", "-c", script], env=env).stdout.split()
    assert out == [str(venv), str(share)]  # sourced twice: the prefix appears once
