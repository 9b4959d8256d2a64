"""`conla sim episodes` end to end on a tiny scale: real rendering, real rosbag2 files, resume, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from conla_ros import cli
from conla_ros.episodes import topics as T
from conla_ros.episodes.reader import list_episodes, load_episode, read_episode_metadata
from conla_ros.sim.generate_episodes import (
    COMMAND_LATENCY_NS,
    generate_episodes,
    resolve_tasks,
)
from conla_ros.sim.instructions import MT10_TASKS, instructions
from conla_ros.sim.parallel import ItemResult, run_items
from conla_ros.sim.seeds import TRAIN_SEED_LIMIT
from conla_ros.sim.world import CONTROL_RATE_HZ, JOINT_NAMES

MAX_STEPS = 25  # short episodes: the reach expert needs ~50 steps, so these end at the cap
TINY = {"max_steps": MAX_STEPS, "progress": False}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("episodes")
    return out, generate_episodes(["reach"], 2, out, seed=0, workers=1, **TINY)


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_generation_writes_one_complete_bag_per_episode(first_run) -> None:
    out, summary = first_run
    assert (summary.written, summary.skipped, summary.failed) == (2, 0, 0), summary.format()
    assert [p.name for p in list_episodes(out)] == ["reach_000000", "reach_000001"]
    assert summary.total_bytes > 0 and "2 written" in summary.format()
    meta = read_episode_metadata(out / "reach_000001")
    assert meta["task"] == "reach" and meta["seed"] == 1 and meta["source"] == "sim"
    assert meta["instruction"] in instructions("reach", "train")
    assert meta["length"] == MAX_STEPS and meta["control_rate_hz"] == CONTROL_RATE_HZ
    assert meta["domain"] == "robot" and meta["image_size"] == [64, 64]
    assert meta["generator"]["action_noise"] == 0.1


def test_episode_contents(first_run) -> None:
    out, _ = first_run
    data = load_episode(out / "reach_000000")
    assert data.images.shape == (MAX_STEPS + 1, 64, 64, 3)
    assert data.images.mean() > 20 and data.images.std() > 10  # rendered, not black
    assert not np.array_equal(data.images[0], data.images[-1])  # the arm moved
    assert data.commands.shape == (MAX_STEPS, 4) and np.all(np.abs(data.commands) <= 1)
    assert data.joint_names == JOINT_NAMES and data.joint_positions.shape == (MAX_STEPS + 1, len(JOINT_NAMES))
    period = round(1e9 / CONTROL_RATE_HZ)
    assert np.all(np.diff(data.image_stamps) == period)
    assert np.array_equal(data.command_stamps, data.image_stamps[:-1] + COMMAND_LATENCY_NS)
    assert data.next_command_index().tolist() == list(range(MAX_STEPS + 1))
    # The noise makes consecutive commands differ even where the expert's would not.
    assert np.all(np.abs(np.diff(data.commands[:, :3], axis=0)).sum(axis=1) > 0)
    other = load_episode(out / "reach_000001")
    assert not np.array_equal(data.images, other.images)
    with AnyReader([out / "reach_000000"]) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {s.name: s.msgtype for s in T.EPISODE_TOPICS}


def test_same_seed_same_bytes_whatever_the_worker_count(first_run, tmp_path: Path) -> None:
    out, _ = first_run
    summary = generate_episodes(["reach"], 2, tmp_path, seed=0, workers=2, **TINY)
    assert summary.written == 2 and summary.workers == 2, summary.format()
    for name in ("reach_000000", "reach_000001"):
        a, b = load_episode(out / name), load_episode(tmp_path / name)
        assert a.images.tobytes() == b.images.tobytes()
        assert np.array_equal(a.commands, b.commands) and np.array_equal(a.joint_positions, b.joint_positions)
        assert a.instruction == b.instruction


def test_rerun_skips_finished_and_redoes_partial(first_run) -> None:
    out, _ = first_run
    before = _mtimes(out)
    stale = out / "reach_000002.partial"
    stale.mkdir()
    (stale / "junk.db3").write_bytes(b"half an episode")
    summary = generate_episodes(["reach"], 3, out, seed=0, **TINY)
    assert (summary.written, summary.skipped, summary.failed) == (1, 2, 0), summary.format()
    assert not stale.exists() and (out / "reach_000002").is_dir()
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing finished was rewritten
    assert summary.successes == 0 and len(summary.episodes) == 3  # 25 steps are too few to reach


def test_rerun_with_other_settings_fails_clearly_and_keeps_the_data(first_run) -> None:
    out, _ = first_run
    before = _mtimes(out / "reach_000000")
    summary = generate_episodes(["reach"], 1, out, seed=0, action_noise=0.3, **TINY)
    assert summary.failed == 1 and "other settings" in summary.failures[0][1]
    assert _mtimes(out / "reach_000000") == before


def test_mcap_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["sim", "episodes", "--tasks", "push", "--episodes", "1", "--out", str(tmp_path),
                     "--storage", "mcap", "--max-steps", "5", "--seed", "7", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "1 written" in printed and "kB per episode" in printed
    bag = tmp_path / "push_000007"
    assert list(bag.glob("*.mcap")) and load_episode(bag).commands.shape == (5, 4)


def test_resolve_tasks() -> None:
    assert resolve_tasks(["all"]) == list(MT10_TASKS) == resolve_tasks(["mt10", "reach"])
    assert resolve_tasks(["push", "reach", "push"]) == ["push", "reach"]
    with pytest.raises(ValueError, match="did you mean 'reach'"):
        resolve_tasks(["reech"])
    assert resolve_tasks(["reach-v3", "push-v2", "reach"]) == ["reach", "push"]


def test_cli_takes_meta_world_task_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--tasks reach-v3` is `--tasks reach`: the episode and its metadata carry the short name."""
    assert cli.main(["sim", "episodes", "--tasks", "reach-v3", "--episodes", "1", "--out", str(tmp_path),
                     "--max-steps", "3", "--no-progress"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["reach_000000"]
    assert read_episode_metadata(tmp_path / "reach_000000")[T.META_TASK] == "reach"
    assert cli.main(["sim", "episodes", "--tasks", "reach-v9", "--episodes", "1", "--out", str(tmp_path),
                     "--no-progress"]) == 2
    assert "unknown task 'reach-v9'" in capsys.readouterr().err


def test_held_out_seeds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="held out for evaluation"):
        generate_episodes(["reach"], 2, tmp_path, seed=TRAIN_SEED_LIMIT - 1, **TINY)
    assert cli.main(["sim", "episodes", "--tasks", "reach", "--episodes", "1", "--out", str(tmp_path),
                     "--seed", str(TRAIN_SEED_LIMIT), "--no-progress"]) == 2


def _flaky_work(context: str, item: ItemResult) -> dict:
    if item.name == "b":
        raise ValueError("bad item")
    return {"context": context}


def test_one_failing_item_is_reported_and_the_rest_go_on(capsys: pytest.CaptureFixture[str]) -> None:
    items = [ItemResult(name, "written") for name in ("a", "b", "c")]  # anything with a name will do
    report = run_items(items, _flaky_work, setup=str.upper, setup_arg="ctx", is_done=lambda i: i.name == "c",
                       progress=False)
    assert [r.status for r in report.results] == ["written", "failed", "skipped"]
    assert report.results[0].info == {"context": "CTX"}
    assert "ValueError: bad item" in report.failures[0].error


_CRASHING_MODULE = '''
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    name: str


def setup(arg):
    return arg


def work(context, item):
    if item.name == "segfault":
        os._exit(11)  # dies like a native crash: no exception, no clean-up
    return {"pid": os.getpid()}
'''


def test_a_dying_worker_costs_only_its_own_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned workers import the work function by module name: put a module where they find it.
    (tmp_path / "conla_crash_probe.py").write_text(_CRASHING_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import conla_crash_probe as probe

    names = ["a", "b", "segfault", "c", "d", "e"]
    report = run_items([probe.Item(n) for n in names], probe.work, setup=probe.setup, workers=2, progress=False)
    assert {r.name: r.status for r in report.results} == {n: "failed" if n == "segfault" else "written"
                                                          for n in names}
    assert "died" in report.failures[0].error
