"""Names of recorded episodes: the format string's fields, its checks, and never reusing a name."""

from __future__ import annotations

import datetime as dt

import pytest

from conla_ros.episodes import topics as T
from conla_ros.episodes.naming import check_name_format, episode_name, free_episode_path

WHEN = dt.datetime(2026, 11, 23, 15, 51, 4, tzinfo=dt.timezone.utc)


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
