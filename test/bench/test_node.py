"""`conla bench node`: a short real run against policy_node, for a model that takes proprioception."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.tiny_model import make_tiny_model

pytestmark = pytest.mark.ros


def test_a_proprio_model_gets_joint_states_and_commands_flow(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "proprio", proprio_dim=3)
    done = subprocess.run([sys.executable, "-m", "conla_ros.cli", "bench", "node", "--model", str(model),
                           "--seconds", "3", "--size", "64x64", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert int(report["commands"]) > 0 and report["state"] == "running", report
