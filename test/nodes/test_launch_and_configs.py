"""record.launch.py and the nodes' YAML files, checked without launch_ros (not on PyPI).

The launch file is executed against small stand-ins for the launch API that record what it builds,
so the test sees the exact `ros2 bag record` command line it would run. The YAML files must name
exactly the parameters each node declares, with values the node accepts.
"""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import pytest
import yaml
from fixtures.launch_stubs import Recorded, load_launch_file

from conla_ros.episodes import topics as T

REPO = Path(__file__).resolve().parents[2]


def _actions(monkeypatch: pytest.MonkeyPatch, **overrides: str) -> list[Recorded]:
    module = load_launch_file(monkeypatch, "record.launch.py")
    description = module.generate_launch_description()
    [entries] = description.args
    defaults = {a.args[0]: a.kwargs["default_value"] for a in entries if type(a).__name__ == "DeclareLaunchArgument"}
    assert set(defaults) == {"backend", "output_dir", "storage", "name_prefix", "params_file", "namespace"}
    [opaque] = [a for a in entries if type(a).__name__ == "OpaqueFunction"]
    context = types.SimpleNamespace(values={**{k: str(v) for k, v in defaults.items()}, **overrides})
    return opaque.kwargs["function"](context)


@pytest.mark.parametrize("name", ["record.launch.py", "sim_demo.launch.py"])
def test_launch_files_compile(name: str) -> None:
    compile((REPO / "launch" / name).read_text(), name, "exec")


def test_sim_demo_starts_the_sim_arm_and_includes_the_policy_launch_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_launch_file(monkeypatch, "sim_demo.launch.py")
    [entries] = module.generate_launch_description().args
    kinds = [type(a).__name__ for a in entries]
    assert kinds.count("Node") == 1 and kinds.count("IncludeLaunchDescription") == 1
    [node] = [a for a in entries if type(a).__name__ == "Node"]
    assert node.kwargs["executable"] == "sim_arm_node"
    assert set(node.kwargs["parameters"][1]) == {"task", "seed", "max_steps"}
    [include] = [a for a in entries if type(a).__name__ == "IncludeLaunchDescription"]
    [source] = include.args
    assert source.args[0].args[0][-2:] == ["launch", "policy.launch.py"]
    assert dict(include.kwargs["launch_arguments"])["output"] == "ee_twist"
    assert (REPO / "launch" / "policy.launch.py").is_file()


def test_record_launch_runs_ros2_bag_record_on_the_episode_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    [action] = _actions(monkeypatch, output_dir="/data/episodes", storage="mcap")
    assert type(action).__name__ == "ExecuteProcess"
    command = action.kwargs["cmd"]
    assert command[:3] == ["ros2", "bag", "record"]
    assert command[command.index("--storage") + 1] == "mcap"
    assert command[command.index("--output") + 1].startswith("/data/episodes/teleop_")
    assert command[-len(T.EPISODE_TOPICS):] == [spec.name for spec in T.EPISODE_TOPICS]


def test_record_launch_can_run_recorder_node_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    [action] = _actions(monkeypatch, backend="recorder_node", output_dir="/data/episodes")
    assert type(action).__name__ == "Node"
    assert (action.kwargs["package"], action.kwargs["executable"]) == ("conla_ros", "recorder_node")
    assert action.kwargs["parameters"][1]["output_dir"] == "/data/episodes"
    with pytest.raises(ValueError, match="backend"):
        _actions(monkeypatch, backend="rosbag1")


@pytest.mark.parametrize(("config", "module"), [
    ("sim_arm.yaml", "conla_ros.nodes.sim_arm_node"),
    ("recorder.yaml", "conla_ros.nodes.recorder_node"),
])
def test_node_yaml_names_exactly_the_declared_parameters_with_valid_values(config: str, module: str) -> None:
    specs = importlib.import_module(module).PARAMETERS
    params = yaml.safe_load((REPO / "config" / config).read_text())["/**"]["ros__parameters"]
    assert set(params) == {spec.name for spec in specs}
    for spec in specs:
        assert spec.validate(params[spec.name]) == spec.default, f"{config}: {spec.name} differs from the default"
