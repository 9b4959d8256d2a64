"""`conla bench sim`: simulation frames per second per worker, and bytes on disk per episode.

Speed: one worker = one process with one SimWorld, pinned to one CPU core (as a generation worker
on a machine with as many workers as cores), running the scripted expert; a frame = one control
step, i.e. physics (5 MuJoCo steps) + rendering the camera + the expert's action. Env creation and
the first reset are excluded (once per worker and task, not per frame). Each domain is measured in
a fresh process, because a process holds one env at a time.

Size: a few scripted-expert episodes written with `generate_episodes` into a temporary directory,
once per storage plugin; the figure is the directory size per episode, with the mean episode
length beside it so that per-step cost can be compared.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FPS_GOAL = 100.0  # per worker on one core, at 64×64 (issue 3)


@dataclass
class FpsResult:
    """Frames per second of one worker in one domain."""

    domain: str
    image_size: int
    frames: int
    seconds: float
    pinned_cpu: int | None  # the core the worker was pinned to (None: not pinned)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SizeResult:
    """Bytes on disk per episode for one storage plugin."""

    storage: str
    episodes: int
    mean_length: float  # control steps per episode
    bytes_per_episode: float
    image_size: int

    @property
    def bytes_per_step(self) -> float:
        return self.bytes_per_episode / self.mean_length if self.mean_length else 0.0


def _fps_worker(domain: str, image_size: int, frames: int, task: str, cpu: int | None) -> FpsResult:
    """Runs in a fresh process: pin to `cpu`, build a world, time `frames` expert steps."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    from conla_ros.sim.world import SimWorld, WorldConfig

    with SimWorld(WorldConfig(image_size=image_size, domain=domain)) as world:
        seed = 0
        world.reset(task, seed)  # env creation and GL context: not counted
        start = time.perf_counter()
        for _ in range(frames):
            if world.done:
                seed += 1
                world.reset(task, seed)
            world.step(world.expert_action())
        seconds = time.perf_counter() - start
    return FpsResult(domain, image_size, frames, seconds, cpu)


def measure_fps(
    domain: str, image_size: int = 64, frames: int = 1000, task: str = "pick-place", pin: bool = True
) -> FpsResult:
    """Frames per second of one SimWorld worker in `domain` (measured in a fresh spawned process)."""
    cpu = None
    if pin and hasattr(os, "sched_getaffinity"):
        cpu = min(os.sched_getaffinity(0))
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_fps_worker, domain, image_size, frames, task, cpu).result()


def measure_size(
    storage: str, tasks: tuple[str, ...] = ("reach", "push"), episodes: int = 2, image_size: int = 64
) -> SizeResult:
    """Mean bytes on disk per scripted-expert episode written with `storage`."""
    from conla_ros.episodes.reader import read_episode_metadata
    from conla_ros.sim.generate_episodes import generate_episodes

    with tempfile.TemporaryDirectory(prefix="conla-bench-") as tmp:
        summary = generate_episodes(tasks, episodes, Path(tmp), storage=storage, image_size=image_size,
                                    progress=False)
        if summary.failed:
            raise RuntimeError(f"episode generation failed: {summary.failures}")
        lengths = [read_episode_metadata(path)["length"] for path in summary.episodes]
        count = len(summary.episodes)
        return SizeResult(storage, count, sum(lengths) / count, summary.total_bytes / count, image_size)


def format_table(fps: list[FpsResult], sizes: list[SizeResult]) -> str:
    """The results as two small text tables."""
    lines = []
    if fps:
        where = f"pinned to core {fps[0].pinned_cpu}" if fps[0].pinned_cpu is not None else "not pinned"
        lines += [f"simulation speed: one worker ({where}), step + render + expert, {fps[0].image_size}×"
                  f"{fps[0].image_size}",
                  f"{'domain':<8} {'frames/s':>9} {'frames':>7}  goal",
                  *(f"{r.domain:<8} {r.fps:>9.0f} {r.frames:>7}  {'>=' if r.fps >= FPS_GOAL else '<'} "
                    f"{FPS_GOAL:.0f}" for r in fps)]
    if sizes:
        lines += ["" if fps else None,
                  f"size on disk per episode (scripted expert, {sizes[0].image_size}×{sizes[0].image_size})",
                  f"{'storage':<8} {'kB/episode':>11} {'steps/episode':>14} {'kB/step':>8} {'episodes':>9}",
                  *(f"{r.storage:<8} {r.bytes_per_episode / 1e3:>11.1f} {r.mean_length:>14.1f} "
                    f"{r.bytes_per_step / 1e3:>8.2f} {r.episodes:>9}" for r in sizes)]
    return "\n".join(line for line in lines if line is not None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `conla bench sim`."""
    parser.add_argument("--frames", type=int, default=1000, help="frames timed per domain (default: 1000)")
    parser.add_argument("--image-size", type=int, default=64, help="camera image side (default: 64)")
    parser.add_argument("--domains", nargs="+", choices=("robot", "human"), default=["robot", "human"],
                        help="domains to time (default: both)")
    parser.add_argument("--task", default="pick-place",
                        help="task stepped for the speed figure (Meta-World's pick-place-v3 works too)")
    parser.add_argument("--episodes", type=int, default=2,
                        help="episodes per task written per storage for the size figure (0: skip)")
    parser.add_argument("--size-tasks", nargs="+", default=["reach", "push"], metavar="TASK",
                        help="tasks of the size figure (default: reach push)")
    parser.add_argument("--storages", nargs="+", choices=("sqlite3", "mcap"), default=["sqlite3", "mcap"])
    parser.add_argument("--no-pin", action="store_true", help="do not pin the timed worker to one core")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    """Run `conla bench sim`; exit code 2 for an unknown task name."""
    from conla_ros.sim.generate_episodes import resolve_tasks
    from conla_ros.sim.instructions import check_task

    try:  # here, not in a worker process: a bad name is a usage error, not a traceback
        task, size_tasks = check_task(args.task), tuple(resolve_tasks(args.size_tasks))
    except ValueError as error:
        print(f"conla bench sim: {error}", file=sys.stderr)
        return 2
    fps = [measure_fps(domain, args.image_size, args.frames, task, pin=not args.no_pin)
           for domain in args.domains] if args.frames > 0 else []
    sizes = [measure_size(storage, size_tasks, args.episodes, args.image_size)
             for storage in args.storages] if args.episodes > 0 else []
    if args.json:
        print(json.dumps({
            "fps": [{**asdict(r), "fps": r.fps} for r in fps],
            "size": [{**asdict(r), "bytes_per_step": r.bytes_per_step} for r in sizes],
            "fps_goal": FPS_GOAL,
        }, indent=2))
    else:
        print(format_table(fps, sizes))
    sys.stdout.flush()
    return 0
