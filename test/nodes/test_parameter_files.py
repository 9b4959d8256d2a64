"""The nodes' YAML parameter files (config/*.yaml) name exactly the parameters each node declares,
with the node's defaults (policy.yaml is checked in test_policy_node.py)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml


@pytest.mark.parametrize(("config", "module"), [
    ("sim_arm.yaml", "conla_ros.nodes.sim_arm_node"),
    ("recorder.yaml", "conla_ros.nodes.recorder_node"),
])
def test_node_yaml_names_exactly_the_declared_parameters_with_valid_values(config: str, module: str,
                                                                            repo_root: Path) -> None:
    specs = importlib.import_module(module).PARAMETERS
    params = yaml.safe_load((repo_root / "config" / config).read_text())["/**"]["ros__parameters"]
    assert set(params) == {spec.name for spec in specs}
    for spec in specs:
        assert spec.validate(params[spec.name]) == spec.default, f"{config}: {spec.name} differs from the default"
