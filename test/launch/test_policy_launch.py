"""policy.launch.py checked without launch_ros (not on PyPI): compiled, run against stand-ins of the launch API.

The stand-ins record what the launch file builds, so the test sees its declared arguments and the
exact Node action (package, executable, parameters, environment) it would start.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from fixtures.launch_stubs import LAUNCH_DIR, load_launch_file

LAUNCH_FILE = LAUNCH_DIR / "policy.launch.py"
ARGUMENTS = {"model_dir", "params_file", "namespace", "use_sim_time", "output", "autostart"}


def _node(monkeypatch: pytest.MonkeyPatch, **values: str):
    [entries] = load_launch_file(monkeypatch, "policy.launch.py").generate_launch_description().args
    declared = {a.args[0]: a for a in entries if type(a).__name__ == "DeclareLaunchArgument"}
    assert set(declared) == ARGUMENTS
    assert all(a.kwargs.get("description") for a in declared.values())
    defaults = {name: a.kwargs["default_value"] for name, a in declared.items()}
    [opaque] = [a for a in entries if type(a).__name__ == "OpaqueFunction"]
    context = types.SimpleNamespace(values={**{k: str(v) for k, v in defaults.items()}, **values})
    [node] = opaque.kwargs["function"](context)
    return defaults, node


def test_policy_launch_compiles() -> None:
    compile(LAUNCH_FILE.read_text(), LAUNCH_FILE.name, "exec")


def test_declared_arguments_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults, node = _node(monkeypatch, params_file="/robot/policy.yaml")
    assert defaults["output"] == "ee_twist" and defaults["use_sim_time"] == "false" and defaults["model_dir"] == ""
    assert type(defaults["params_file"]).__name__ == "PathJoinSubstitution"  # FindPackageShare/config/policy.yaml
    assert (node.kwargs["package"], node.kwargs["executable"], node.kwargs["name"]) == \
        ("conla_ros", "policy_node", "policy_node")
    params_file, overrides = node.kwargs["parameters"]
    assert params_file == "/robot/policy.yaml"
    assert overrides == {"use_sim_time": False, "output": "ee_twist"}  # model_dir/autostart: the file's own


def test_command_line_values_override_the_params_file(monkeypatch: pytest.MonkeyPatch) -> None:
    _, node = _node(monkeypatch, params_file="/p.yaml", model_dir="/models/x", output="joint_trajectory",
                    autostart="true", use_sim_time="true", namespace="arm1")
    assert node.kwargs["namespace"] == "arm1"
    assert node.kwargs["parameters"][1] == {"use_sim_time": True, "output": "joint_trajectory",
                                            "model_dir": "/models/x", "autostart": True}


def test_the_large_image_dds_profile_unless_the_user_chose_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("RMW_IMPLEMENTATION", raising=False)
    _, node = _node(monkeypatch, params_file="/p.yaml")
    profile = node.kwargs["additional_env"]["FASTDDS_DEFAULT_PROFILES_FILE"]
    assert profile.endswith("fastdds_large_images.xml") and Path(profile).is_file()
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/mine.xml")
    _, node = _node(monkeypatch, params_file="/p.yaml")
    assert node.kwargs["additional_env"] == {}  # the process inherits the user's choice
