"""`conla sim videos`: action-free clips (mp4) plus labels.jsonl, like a human-video dataset.

Each clip is a scripted-expert rollout (with the same small action noise as the robot episodes,
so clips of a task differ) rendered in the chosen domain — "human" by default, the domain with the
embodiment and appearance gap — and saved as `videos/<id>.mp4` (MPEG-4 part 2, 'mp4v': the codec
opencv-python-headless can both write and read back; it has no H.264 encoder) at the control rate,
one frame per control step, first observation included. The actions are never written anywhere.
The codec is lossy: at 64×64 a decoded frame is off by ~5/255 on average, mostly from 4:2:0
chroma subsampling (luma alone ~2/255); OpenCV offers no quality setting for it.

Layout of OUT:
    videos/<id>.mp4      the clips; <id> = <task>_<domain>_<seed:06d>
    labels.jsonl         one line per clip: {"id", "label" (the task's action category), "instruction"}
                         — the shape of Something-Something v2's labels, so real datasets drop in
    records/<id>.json    per-clip record (id, label, instruction, task, domain, seed, frames, fps,
                         size, success, settings): what labels.jsonl is assembled from, and the
                         resume marker (a clip made with other settings is not overwritten)
    .tmp/                clips being encoded

A clip is finished when its record exists: the mp4 is encoded under .tmp/, read back and checked,
renamed into videos/, and only then is the record written (atomically). labels.jsonl is rebuilt
from all records at the end of every run and replaced atomically, so it is never half-written and
always lists exactly the finished clips. Seeding as for episodes: clip i of a task with base seed s
uses world seed s + i, and its noise and instruction come from (s + i, task, domain).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conla_ros.sim.generate_episodes import (
    DEFAULT_NOISE,
    WorkerWorld,
    WorldSettings,
    check_seed_range,
    make_world,
    noisy_expert_action,
    resolve_tasks,
)
from conla_ros.sim.parallel import RunReport, add_generation_arguments, atomic_write_text, item_seed, run_items

FOURCC = "mp4v"
VIDEOS_DIR = "videos"
RECORDS_DIR = "records"
TMP_DIR = ".tmp"
LABELS_FILE = "labels.jsonl"
LABEL_KEYS = ("id", "label", "instruction")  # exactly what labels.jsonl lines hold


def clip_id(task: str, domain: str, seed: int) -> str:
    """The id (and file stem) of the clip of `task` in `domain` with world seed `seed`."""
    return f"{task}_{domain}_{seed:06d}"


@dataclass(frozen=True)
class ClipJob:
    """One clip to render (picklable)."""

    task: str
    domain: str  # must be the worker world's domain (one per run)
    seed: int
    index: int
    out_dir: str
    action_noise: float

    @property
    def name(self) -> str:
        return self.id

    @property
    def id(self) -> str:
        return clip_id(self.task, self.domain, self.seed)


def clip_settings(settings: WorldSettings, job: ClipJob) -> dict[str, Any]:
    """The settings a clip was made with: kept in its record and compared on resume."""
    return {"image_size": settings.image_size, "max_steps": settings.max_steps, "noise": job.action_noise}


@dataclass
class VideoSummary:
    """What a `generate_videos` run did."""

    out_dir: Path
    requested: int
    written: int
    skipped: int
    failed: int
    failures: list[tuple[str, str]]
    clips: int  # lines in labels.jsonl (all finished clips in out_dir, this run's and earlier ones)
    frames_written: int
    total_bytes: int  # size of videos/ on disk
    seconds: float
    workers: int

    def format(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"clips: {self.written} written, {self.skipped} skipped (already finished), {self.failed} failed, "
            f"of {self.requested} requested; labels.jsonl lists {self.clips} clip(s) -> {self.out_dir}",
            f"size: {self.total_bytes / 1e6:.1f} MB   time: {self.seconds:.1f} s with {self.workers} worker(s)"
            + (f", {self.frames_written / self.seconds:.0f} frames/s" if self.frames_written and self.seconds
               else ""),
        ]
        lines += [f"FAILED {name}: {error}" for name, error in self.failures]
        return "\n".join(lines)


# -- worker side -----------------------------------------------------------------------------------


def write_mp4(path: Path, frames: Sequence[np.ndarray], fps: float) -> None:
    """Encode RGB frames (H, W, 3) uint8 as an 'mp4v' mp4 and check it reads back with every frame."""
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot open a '{FOURCC}' writer for {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    count = count_frames(path)
    if count != len(frames):
        raise RuntimeError(f"{path} reads back {count} frames, {len(frames)} were written")


def count_frames(path: Path) -> int:
    """How many frames OpenCV decodes from a video file (decoding all of them, not trusting the header)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def render_clip(context: WorkerWorld, job: ClipJob) -> dict[str, Any]:
    """Roll out the noisy expert, encode the frames, then publish mp4 and record; returns the record."""
    from conla_ros.sim.instructions import ACTION_CATEGORY, sample_instruction
    from conla_ros.sim.world import CONTROL_RATE_HZ

    domain = job.domain
    if domain != context.settings.domain:
        raise ValueError(f"clip {job.id} is in domain {domain!r}, the worker renders {context.settings.domain!r}")
    out = Path(job.out_dir)
    cid = job.id
    settings = clip_settings(context.settings, job)
    record_path = out / RECORDS_DIR / f"{cid}.json"
    if record_path.is_file() and (out / VIDEOS_DIR / f"{cid}.mp4").is_file():
        existing = json.loads(record_path.read_text())
        if existing.get("settings") == settings:  # finished meanwhile (e.g. redone after a worker crash)
            return existing
        found = existing.get("settings")
        raise RuntimeError(f"clip {cid} exists with other settings ({found} instead of {settings}); "
                           "write to another --out or remove it")
    rng = np.random.default_rng(item_seed(job.seed, "clip", job.task, domain))
    instruction = sample_instruction(job.task, rng, split="train")
    world = context.world
    obs = world.reset(job.task, job.seed)
    frames, success = [obs.image.copy()], bool(obs.success)
    while not world.done:
        obs = world.step(noisy_expert_action(world, rng, job.action_noise))
        frames.append(obs.image.copy())
        success = success or bool(obs.success)
    tmp = out / TMP_DIR / f"{cid}.mp4"  # keeps the .mp4 suffix: OpenCV picks the container by it
    tmp.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(tmp, frames, CONTROL_RATE_HZ)
    final = out / VIDEOS_DIR / f"{cid}.mp4"
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    record = {"id": cid, "label": ACTION_CATEGORY[job.task], "instruction": instruction, "task": job.task,
              "domain": domain, "seed": job.seed, "frames": len(frames), "fps": CONTROL_RATE_HZ,
              "size": [int(frames[0].shape[0]), int(frames[0].shape[1])], "success": success,
              "settings": settings}
    atomic_write_text(record_path, json.dumps(record, sort_keys=True) + "\n")
    return record


# -- parent side -----------------------------------------------------------------------------------


def read_records(out_dir: Path) -> list[dict[str, Any]]:
    """The records of every finished clip in `out_dir` (record present and its mp4 in videos/), by id."""
    records = []
    for path in sorted((out_dir / RECORDS_DIR).glob("*.json")):
        record = json.loads(path.read_text())
        if (out_dir / VIDEOS_DIR / f"{record['id']}.mp4").is_file():
            records.append(record)
    return records


def write_labels(out_dir: Path) -> int:
    """Rebuild labels.jsonl from the finished clips' records, atomically; returns the line count."""
    records = read_records(out_dir)
    lines = [json.dumps({key: record[key] for key in LABEL_KEYS}) + "\n" for record in records]
    atomic_write_text(out_dir / LABELS_FILE, "".join(lines))
    return len(lines)


def generate_videos(
    tasks: Sequence[str],
    clips_per_task: int,
    out_dir: Path | str,
    domain: str = "human",
    workers: int = 1,
    seed: int = 0,
    image_size: int = 64,
    action_noise: float = DEFAULT_NOISE,
    progress: bool = True,
    max_steps: int | None = None,
) -> VideoSummary:
    """Render `clips_per_task` action-free clips per task into `out_dir` and rebuild labels.jsonl.

    Finished clips are skipped, unfinished ones redone; a failing clip is reported and counted.
    """
    if clips_per_task < 0:
        raise ValueError(f"clips_per_task={clips_per_task} must be >= 0")
    if domain not in ("human", "robot"):
        raise ValueError(f"domain={domain!r} is not 'human' or 'robot'")
    check_seed_range(seed, clips_per_task)
    tasks = resolve_tasks(tasks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [ClipJob(task, domain, seed + i, i, str(out), float(action_noise))
            for task in tasks for i in range(clips_per_task)]

    settings = WorldSettings(image_size=int(image_size), domain=domain, max_steps=max_steps)
    settings.world_config()  # bad settings fail here, once, not in every worker

    def done(job: ClipJob) -> bool:
        record, video = out / RECORDS_DIR / f"{job.id}.json", out / VIDEOS_DIR / f"{job.id}.mp4"
        if not (record.is_file() and video.is_file()):
            return False
        # Other settings: not done; the worker then refuses to overwrite it, with a clear error.
        return json.loads(record.read_text()).get("settings") == clip_settings(settings, job)

    report: RunReport = run_items(jobs, render_clip, setup=make_world, setup_arg=settings, is_done=done,
                                  workers=workers, progress=progress, desc=f"clips ({domain})")
    clips = write_labels(out)
    tmp = out / TMP_DIR
    if tmp.is_dir() and not any(tmp.iterdir()):
        tmp.rmdir()  # leftovers (from a killed run) stay: the next run overwrites them
    videos = out / VIDEOS_DIR
    return VideoSummary(
        out_dir=out, requested=len(jobs), written=report.count("written"), skipped=report.count("skipped"),
        failed=report.count("failed"), failures=[(r.name, r.error or "") for r in report.failures], clips=clips,
        frames_written=sum(r.info.get("frames", 0) for r in report.results if r.status == "written"),
        total_bytes=sum(p.stat().st_size for p in videos.glob("*.mp4")) if videos.is_dir() else 0,
        seconds=report.seconds, workers=report.workers,
    )


# -- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `conla sim videos`."""
    add_generation_arguments(parser, "clip", DEFAULT_NOISE)
    parser.add_argument("--clips", type=int, default=10, help="clips per task (default: 10)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (videos/ + labels.jsonl)")
    parser.add_argument("--domain", choices=("human", "robot"), default="human",
                        help="visual domain (default: human)")


def run(args: argparse.Namespace) -> int:
    """Run `conla sim videos`; exit code 0 when every clip is finished, 1 if any failed."""
    try:
        summary = generate_videos(
            args.tasks, args.clips, args.out, domain=args.domain, workers=args.workers, seed=args.seed,
            image_size=args.image_size, action_noise=args.noise, progress=not args.no_progress,
            max_steps=args.max_steps)
    except ValueError as error:
        print(f"conla sim videos: {error}", file=sys.stderr)
        return 2
    print(summary.format())
    return 1 if summary.failed else 0
