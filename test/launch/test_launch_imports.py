"""The launch files import only launch, launch_ros and the standard library, so a ROS 2's own
`ros2 launch` (whose Python may lack this package and its dependencies) runs them."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ALLOWED = {"launch", "launch_ros", "ament_index_python", "yaml"}  # pyyaml: a dependency of launch itself


@pytest.mark.parametrize("name", ["policy.launch.py", "record.launch.py", "sim_demo.launch.py"])
def test_launch_files_import_only_launch_and_the_standard_library(name: str, repo_root: Path) -> None:
    tree = ast.parse((repo_root / "launch" / name).read_text(), name)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    roots = {module.split(".")[0] for module in imported}
    foreign = sorted(roots - ALLOWED - set(sys.stdlib_module_names) - {"__future__"})
    assert roots and not foreign, f"{name} imports {foreign}"
