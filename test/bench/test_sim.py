"""`conla bench sim` runs and prints its figures (no timing assertions: machines differ)."""

from __future__ import annotations

import json

import pytest

from conla_ros import cli

SMALL = ["bench", "sim", "--frames", "30", "--episodes", "1", "--size-tasks", "reach"]


def test_bench_sim_prints_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(SMALL) == 0
    printed = capsys.readouterr().out
    assert "frames/s" in printed and "kB/episode" in printed
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if line.strip()}
    for name in ("robot", "human"):
        assert float(rows[name][1]) > 0
    for name in ("sqlite3", "mcap"):
        assert float(rows[name][1]) > 0


def test_bench_sim_refuses_an_unknown_task_before_it_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "sim", "--task", "pick-place-v1"]) == 2
    assert "unknown task 'pick-place-v1'" in capsys.readouterr().err
    assert cli.main(["bench", "sim", "--size-tasks", "reech"]) == 2
    assert "did you mean 'reach'" in capsys.readouterr().err


def test_bench_sim_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*SMALL, "--json", "--domains", "robot", "--storages", "mcap"]) == 0
    result = json.loads(capsys.readouterr().out)
    [fps] = result["fps"]
    [size] = result["size"]
    assert fps["domain"] == "robot" and fps["frames"] == 30 and fps["fps"] > 0
    assert size["storage"] == "mcap" and size["bytes_per_episode"] > 0 and size["mean_length"] > 0
