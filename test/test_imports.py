"""The robot-side package never imports torch (the policy node must run without it)."""

from __future__ import annotations

import subprocess
import sys

IMPORT_ALL = """
import importlib, pkgutil, sys
import conla_ros
names = [m.name for m in pkgutil.walk_packages(conla_ros.__path__, "conla_ros.")]
for name in names:
    importlib.import_module(name)
print(len(names))
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_importing_every_conla_ros_module_leaves_torch_out() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    count, torch_modules = result.stdout.strip().splitlines()[-2:]
    assert int(count) >= 10
    assert torch_modules == "[]"
