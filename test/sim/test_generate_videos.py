"""`conla sim videos` on a tiny scale: real mp4 clips read back with OpenCV, labels without actions, resume."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conla_ros import cli
from conla_ros.sim.generate_videos import LABEL_KEYS, generate_videos
from conla_ros.sim.instructions import ACTION_CATEGORY, instructions

MAX_STEPS = 20
TASKS = ["reach", "door-open"]
TINY = {"max_steps": MAX_STEPS, "progress": False}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("videos")
    return out, generate_videos(TASKS, 2, out, domain="human", seed=0, workers=1, **TINY)


def _frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def _labels(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]


def test_clips_are_readable_mp4s_of_the_right_size(clips) -> None:
    out, summary = clips
    assert (summary.written, summary.failed, summary.clips) == (4, 0, 4), summary.format()
    videos = sorted((out / "videos").glob("*.mp4"))
    assert [v.stem for v in videos] == [f"{t}_human_{s:06d}" for t in sorted(TASKS) for s in (0, 1)]
    for video in videos:
        capture = cv2.VideoCapture(str(video))
        assert capture.isOpened()
        assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 64)
        capture.release()
        frames = _frames(video)
        record = json.loads((out / "records" / f"{video.stem}.json").read_text())
        assert len(frames) == record["frames"] == MAX_STEPS + 1  # 20 steps: neither task succeeds that fast
        assert frames[0].shape == (64, 64, 3) and np.mean(frames) > 20  # not black
        assert not np.array_equal(frames[0], frames[-1])
    assert not (out / ".tmp").exists()


def test_labels_are_action_categories_and_hold_no_actions(clips) -> None:
    out, _ = clips
    labels = _labels(out)
    assert [line["id"] for line in labels] == sorted(v.stem for v in (out / "videos").glob("*.mp4"))
    for line in labels:
        assert tuple(line) == LABEL_KEYS
        task = line["id"].split("_human_")[0]
        assert line["label"] == ACTION_CATEGORY[task]
        assert line["instruction"] in instructions(task, "train")
    for path in [out / "labels.jsonl", *(out / "records").glob("*.json")]:
        assert "action" not in path.read_text().replace("action category", "")


def test_rerun_skips_finished_clips_and_rebuilds_labels(clips) -> None:
    out, _ = clips
    before = {p.name: p.stat().st_mtime_ns for p in (out / "videos").glob("*.mp4")}
    labels_before = (out / "labels.jsonl").read_text()
    # A clip whose record is missing (its run died after encoding) is redone.
    (out / "records" / "reach_human_000001.json").unlink()
    summary = generate_videos(TASKS, 2, out, domain="human", seed=0, **TINY)
    assert (summary.written, summary.skipped, summary.failed) == (1, 3, 0), summary.format()
    after = {p.name: p.stat().st_mtime_ns for p in (out / "videos").glob("*.mp4")}
    assert {k: v for k, v in after.items() if k != "reach_human_000001.mp4"} == \
        {k: v for k, v in before.items() if k != "reach_human_000001.mp4"}
    assert (out / "labels.jsonl").read_text() == labels_before


def test_rerun_with_other_settings_fails_clearly_and_keeps_the_clip(clips) -> None:
    out, _ = clips
    video = out / "videos" / "reach_human_000000.mp4"
    before = video.stat().st_mtime_ns
    summary = generate_videos(["reach"], 1, out, domain="human", seed=0, image_size=32, **TINY)
    assert summary.failed == 1 and "other settings" in summary.failures[0][1]
    assert video.stat().st_mtime_ns == before


def test_same_seed_same_frames(clips, tmp_path: Path) -> None:
    out, _ = clips
    generate_videos(["reach"], 1, tmp_path, domain="human", seed=0, workers=1, **TINY)
    a = _frames(out / "videos" / "reach_human_000000.mp4")
    b = _frames(tmp_path / "videos" / "reach_human_000000.mp4")
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert _labels(tmp_path)[0] == next(line for line in _labels(out) if line["id"] == "reach_human_000000")
    assert (out / "videos" / "reach_human_000000.mp4").read_bytes() == \
        (tmp_path / "videos" / "reach_human_000000.mp4").read_bytes()


def test_cli_robot_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["sim", "videos", "--tasks", "push", "--clips", "1", "--out", str(tmp_path),
                     "--domain", "robot", "--max-steps", "5", "--no-progress"])
    assert code == 0 and "1 written" in capsys.readouterr().out
    assert len(_frames(tmp_path / "videos" / "push_robot_000000.mp4")) == 6
    assert _labels(tmp_path) == [{"id": "push_robot_000000", "label": ACTION_CATEGORY["push"],
                                  "instruction": _labels(tmp_path)[0]["instruction"]}]


def test_cli_takes_meta_world_task_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--tasks push-v3` makes the clips of `push`, under its short name and label."""
    code = cli.main(["sim", "videos", "--tasks", "push-v3", "--clips", "1", "--out", str(tmp_path),
                     "--domain", "robot", "--max-steps", "2", "--no-progress"])
    assert code == 0 and "1 written" in capsys.readouterr().out
    assert [(line["id"], line["label"]) for line in _labels(tmp_path)] == [("push_robot_000000",
                                                                             ACTION_CATEGORY["push"])]
