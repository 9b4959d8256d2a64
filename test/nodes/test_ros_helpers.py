"""The small helpers the nodes share: episode status JSON, episode names, parameter tables."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from conla_ros.episodes import topics as T
from conla_ros.ros.episode_naming import check_name_format, episode_name, free_episode_path
from conla_ros.ros.episode_status import EpisodeStatus, EpisodeStatusError
from conla_ros.ros.parameters import ParameterError, ParamSpec, check_parameter_update

WHEN = dt.datetime(2026, 11, 23, 15, 51, 4, tzinfo=dt.timezone.utc)


def test_episode_status_round_trips_and_gives_episode_metadata() -> None:
    status = EpisodeStatus(task="push", step=12, success=True, seed=3, first_success_step=10, control_rate_hz=80.0,
                           domain="robot", counters={"rejected": 1})
    again = EpisodeStatus.from_json(status.to_json())
    assert again == status
    assert status.episode_metadata() == {T.META_TASK: "push", T.META_SUCCESS: True, T.META_SEED: 3,
                                         T.META_CONTROL_RATE_HZ: 80.0, T.META_DOMAIN: "robot",
                                         "first_success_step": 10}
    newer = json.loads(status.to_json()) | {"a_future_key": 1}
    assert EpisodeStatus.from_json(json.dumps(newer)) == status  # unknown keys are ignored


@pytest.mark.parametrize(("text", "words"), [
    ("not json", "not JSON"), ("[1]", "JSON object"), ('{"task": "x"}', "lacks step, success"),
    ('{"task": "x", "step": "1", "success": true}', "int step"),
])
def test_bad_episode_status_is_refused_with_the_reason(text: str, words: str) -> None:
    with pytest.raises(EpisodeStatusError, match=words):
        EpisodeStatus.from_json(text)


def test_episode_names_and_their_checks(tmp_path) -> None:
    assert episode_name("{prefix}_{time}_{index:03d}", prefix="teleop", index=7, when=WHEN) == \
        "teleop_20261123T155104Z_007"
    assert episode_name("{task}_{seed:06d}", prefix="p", index=0, when=WHEN, task="push", seed=42) == "push_000042"
    assert check_name_format("{prefix}_{index}") is None
    assert "cannot be filled" in check_name_format("{operator}")
    assert "not a directory name" in check_name_format("{prefix}/{index}")
    assert T.PARTIAL_SUFFIX in check_name_format("{prefix}.partial")
    (tmp_path / "t_0").mkdir()
    (tmp_path / "t_1.partial").mkdir()
    assert free_episode_path(tmp_path, "t_{index}", prefix="", index=0, when=WHEN) == (tmp_path / "t_2", 2)
    with pytest.raises(FileExistsError, match="index"):
        free_episode_path(tmp_path, "t_0", prefix="", index=0, when=WHEN)


def test_param_spec_validates_types_ranges_choices_and_rules() -> None:
    rate = ParamSpec("rate", 20.0, "a rate", low=1.0, check=lambda v: None if v != 13.0 else "unlucky")
    assert rate.validate(30) == 30.0  # an integer given for a float parameter is fine
    for value, words in ((0.5, ">= 1.0"), ("fast", "must be a float"), (13.0, "unlucky")):
        with pytest.raises(ParameterError, match=words):
            rate.validate(value)
    mode = ParamSpec("mode", "a", "a mode", choices=("a", "b"))
    with pytest.raises(ParameterError, match="one of: a, b"):
        mode.validate("c")
    assert mode.descriptor().additional_constraints == "one of: a, b"
    assert rate.descriptor().floating_point_range[0].from_value == 1.0
    flag = ParamSpec("flag", True, "a flag")
    with pytest.raises(ParameterError, match="bool"):
        flag.validate(1)


def test_parameter_updates_are_refused_with_the_reason() -> None:
    from rclpy.parameter import Parameter

    specs = (ParamSpec("task", "reach", "a task", choices=("reach", "push"), read_only=False),)
    assert check_parameter_update(specs, [Parameter("task", value="push")]).successful
    refused = check_parameter_update(specs, [Parameter("task", value="jump")])
    assert not refused.successful and "one of: reach, push" in refused.reason
    assert check_parameter_update(specs, [Parameter("use_sim_time", value=True)]).successful
