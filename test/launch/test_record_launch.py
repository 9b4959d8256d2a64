"""record.launch.py checked without launch_ros (not on PyPI).

The launch file is executed against small stand-ins for the launch API that record what it builds,
so the test sees the exact `ros2 bag record` command line it would run.
"""

from __future__ import annotations

import types

import pytest
from fixtures.launch_stubs import Recorded, load_launch_file

from conla_ros.episodes import topics as T


def _actions(monkeypatch: pytest.MonkeyPatch, rosbag2: bool, **overrides: str) -> list[Recorded]:
    module = load_launch_file(monkeypatch, "record.launch.py")
    monkeypatch.setattr(module, "rosbag2_available", lambda: rosbag2)
    [entries] = module.generate_launch_description().args
    defaults = {a.args[0]: a.kwargs["default_value"] for a in entries if type(a).__name__ == "DeclareLaunchArgument"}
    assert set(defaults) == {"backend", "output_dir", "storage", "name_prefix", "params_file", "namespace"}
    [opaque] = [a for a in entries if type(a).__name__ == "OpaqueFunction"]
    context = types.SimpleNamespace(values={**{k: str(v) for k, v in defaults.items()}, **overrides})
    return [a for a in opaque.kwargs["function"](context) if type(a).__name__ in ("ExecuteProcess", "Node")]


def test_record_launch_records_the_episode_topics_relative_to_its_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_launch_file(monkeypatch, "record.launch.py")
    assert ["/" + topic for topic in module.EPISODE_TOPICS] == [spec.name for spec in T.EPISODE_TOPICS]
    [action] = _actions(monkeypatch, True, output_dir="/data/episodes", storage="mcap", namespace="arm1")
    command = action.kwargs["cmd"]
    assert command[:3] == ["ros2", "bag", "record"]
    assert command[command.index("--storage") + 1] == "mcap"
    assert command[command.index("--output") + 1].startswith("/data/episodes/teleop_")
    assert command[-len(T.EPISODE_TOPICS):] == ["/arm1" + spec.name for spec in T.EPISODE_TOPICS]


def test_record_launch_falls_back_to_recorder_node_without_rosbag2(monkeypatch: pytest.MonkeyPatch) -> None:
    [action] = _actions(monkeypatch, False, output_dir="/data/episodes")
    assert (action.kwargs["package"], action.kwargs["executable"]) == ("conla_ros", "recorder_node")
    assert action.kwargs["parameters"][1] == {"output_dir": "/data/episodes"}  # unset arguments: the file's
    [action] = _actions(monkeypatch, True, backend="recorder_node")
    assert len(action.kwargs["parameters"]) == 1
    with pytest.raises(RuntimeError, match="backend:=rosbag2 needs rosbag2"):
        _actions(monkeypatch, False, backend="rosbag2")
    with pytest.raises(ValueError, match="backend"):
        _actions(monkeypatch, True, backend="rosbag1")
