"""The episode status JSON the sim arm publishes and the recorder and evaluators read."""

from __future__ import annotations

import json

import pytest

from conla_ros.episodes import topics as T
from conla_ros.ros.episode_status import EpisodeStatus, EpisodeStatusError


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
