"""`conla sim episodes`: scripted-expert robot episodes, one rosbag2 per episode.

Each episode is the Meta-World scripted expert acting on the simulated Sawyer, recorded exactly
as a teleop session on the robot would be (conla_ros.episodes.topics): per control step the
camera image and joint states, then the command applied — the end-effector delta as a
TwistStamped (linear = action[:3], MoveIt Servo's unitless convention, one unit = Meta-World's
action_scale of 1 cm per control step; angular = 0) and the gripper as a Float64MultiArray
(action[3], -1 open .. +1 close). The instruction is one of the task's training paraphrases.

Noise. The expert's action gets Gaussian noise of std `action_noise` (default 0.1, i.e. 10% of the
action range [-1, 1]) on all four dimensions, then is clipped to [-1, 1]; the recorded command is
the noisy, clipped action that was actually applied. Without it every demo of a task is nearly the
same line and a policy never sees how to recover from a deviation.

Time. Observation k is stamped t0 + k/rate; the command computed from it is stamped
COMMAND_LATENCY_NS later (as on a robot, a command follows what the camera saw), so for image k
the "next command" (first stamp >= the image's) is command k. t0 is a fixed instant, so a bag's
bytes depend only on what is simulated. The episode ends when the world says it is done; the last
observation is recorded too, so an episode of length L holds L commands and L + 1 images.

Seeds. Episode i of a task with base seed s uses the world seed s + i and is named
`<task>_<s+i:06d>`; world seeds stay below the evaluator's held-out ones (TRAIN_SEED_LIMIT). The
episode's noise and instruction come from a generator seeded by (s + i, task). So a name fixes the
content, whatever the worker count or the order of work, and runs with overlapping seed ranges
agree on the episodes they share.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conla_ros.episodes import topics as T
from conla_ros.sim.parallel import RunReport, add_generation_arguments, item_seed, run_items

DEFAULT_NOISE = 0.1
SIM_START_NS = 1_700_000_000 * 1_000_000_000  # fixed t0 (2023-11-14): deterministic, plausible stamps
COMMAND_LATENCY_NS = 1_000_000  # 1 ms after the observation: well under one control period


def resolve_tasks(names: Sequence[str]) -> list[str]:
    """Task names from the command line: MT10 names, or `all` / `mt10` for the whole set (order kept)."""
    from conla_ros.sim.instructions import MT10_TASKS, check_task

    tasks: list[str] = []
    for name in names:
        for task in MT10_TASKS if name.lower() in ("all", "mt10") else (check_task(name),):
            if task not in tasks:
                tasks.append(task)
    if not tasks:
        raise ValueError("no tasks given")
    return tasks


def check_seed_range(seed: int, count: int) -> None:
    """Refuse world seeds the evaluator holds out (>= TRAIN_SEED_LIMIT) or negative ones."""
    from conla_ros.sim.seeds import TRAIN_SEED_LIMIT

    if seed < 0 or seed + count > TRAIN_SEED_LIMIT:
        raise ValueError(f"world seeds {seed}..{seed + count - 1} must lie in [0, {TRAIN_SEED_LIMIT}): "
                         "seeds from there on are held out for evaluation")


def episode_name(task: str, seed: int) -> str:
    """The directory name of the episode of `task` with world seed `seed`."""
    return f"{task}_{seed:06d}"


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to generate (picklable: it travels to a worker process)."""

    task: str
    seed: int  # world seed (base seed + episode index)
    index: int  # episode index within its task
    path: str  # final bag directory
    storage: str
    action_noise: float

    @property
    def name(self) -> str:
        return episode_name(self.task, self.seed)


@dataclass(frozen=True)
class WorldSettings:
    """What every worker's SimWorld is built with (one world per process, reused across episodes)."""

    image_size: int = 64
    domain: str = "robot"
    max_steps: int | None = None  # None: the world's default

    def world_config(self):
        """The WorldConfig these settings make (it validates them: ValueError naming a bad value)."""
        from conla_ros.sim.world import WorldConfig

        kwargs: dict[str, Any] = {"image_size": self.image_size, "domain": self.domain}
        if self.max_steps is not None:
            kwargs["max_steps"] = self.max_steps
        return WorldConfig(**kwargs)

    def generator_record(self, job: EpisodeJob) -> dict[str, Any]:
        """The settings an episode was made with, stored in its metadata and checked on resume."""
        return {"image_size": self.image_size, "domain": self.domain, "max_steps": self.max_steps,
                "action_noise": job.action_noise, "storage": job.storage}


@dataclass
class GenerationSummary:
    """What a `generate_episodes` run did."""

    out_dir: Path
    requested: int
    written: int
    skipped: int
    failed: int
    failures: list[tuple[str, str]]  # (episode name, error)
    episodes: list[Path]  # every complete requested episode (written now or earlier)
    successes: int  # among `episodes`
    total_bytes: int  # size of `episodes` on disk
    seconds: float
    workers: int
    steps_written: int = 0  # control steps in the episodes written now
    per_task: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def success_share(self) -> float:
        """Share of the complete requested episodes in which the task succeeded."""
        return self.successes / len(self.episodes) if self.episodes else 0.0

    def format(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"episodes: {self.written} written, {self.skipped} skipped (already complete), "
            f"{self.failed} failed, of {self.requested} requested -> {self.out_dir}",
            f"success: {self.successes}/{len(self.episodes)} ({100 * self.success_share:.0f}%)   "
            f"size: {self.total_bytes / 1e6:.1f} MB "
            f"({self.total_bytes / max(len(self.episodes), 1) / 1e3:.0f} kB per episode)   "
            f"time: {self.seconds:.1f} s with {self.workers} worker(s)"
            + (f", {self.steps_written / self.seconds:.0f} steps/s" if self.steps_written and self.seconds else ""),
        ]
        lines += [f"FAILED {name}: {error}" for name, error in self.failures]
        return "\n".join(lines)


# -- worker side -----------------------------------------------------------------------------------


@dataclass
class WorkerWorld:
    """A worker's context: its one SimWorld, reused for every item, and the settings it was built with."""

    world: Any
    settings: WorldSettings

    def close(self) -> None:
        self.world.close()


def make_world(settings: WorldSettings) -> WorkerWorld:
    """The worker's SimWorld (called once per worker process)."""
    from conla_ros.sim.world import SimWorld

    return WorkerWorld(SimWorld(settings.world_config()), settings)


def noisy_expert_action(world: Any, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The scripted expert's action plus N(0, noise²) on every dimension, clipped to [-1, 1]."""
    action = np.asarray(world.expert_action(), dtype=np.float64)
    if noise > 0:
        action = action + rng.normal(0.0, noise, size=action.shape)
    return np.clip(action, -1.0, 1.0)


def record_episode(context: WorkerWorld, job: EpisodeJob) -> dict[str, Any]:
    """Roll out the noisy expert for one episode and write its bag atomically; returns its summary."""
    from conla_ros.episodes.reader import is_complete_episode, read_episode_metadata
    from conla_ros.episodes.writer import EpisodeWriter
    from conla_ros.sim.instructions import sample_instruction
    from conla_ros.sim.world import CONTROL_RATE_HZ

    path = Path(job.path)
    settings = context.settings
    generator = context.settings.generator_record(job)
    if path.exists():
        if is_complete_episode(path):
            meta = read_episode_metadata(path)
            found = meta.get(T.META_GENERATOR)
            if found == generator:  # finished meanwhile (e.g. redone after a worker crash)
                return {"task": job.task, "success": meta.get(T.META_SUCCESS), "length": meta.get(T.META_LENGTH)}
            raise RuntimeError(f"{path} exists with other settings ({found} instead of {generator}); "
                               "write to another --out or remove it")
        shutil.rmtree(path)  # a final-named directory that is not a complete bag: ours to redo

    world = context.world
    rng = np.random.default_rng(item_seed(job.seed, "episode", job.task))
    instruction = sample_instruction(job.task, rng, split="train")
    period_ns = round(1e9 / CONTROL_RATE_HZ)
    metadata = {
        T.META_TASK: job.task, T.META_SEED: job.seed, T.META_INSTRUCTION: instruction,
        T.META_CONTROL_RATE_HZ: CONTROL_RATE_HZ, T.META_DOMAIN: settings.domain, T.META_SOURCE: "sim",
        T.META_GENERATOR: generator, "episode_index": job.index,
        "action_convention": "ee twist linear = Meta-World action[:3] (unitless, 1 = 1 cm per step); "
                             "gripper = action[3] (-1 open, +1 close)",
    }
    obs = world.reset(job.task, job.seed)
    success, first_success = bool(obs.success), (0 if obs.success else None)
    with EpisodeWriter(path, storage=job.storage, metadata=metadata) as writer:
        writer.add_instruction(SIM_START_NS, instruction)
        step = 0
        while True:
            stamp = SIM_START_NS + step * period_ns
            writer.add_image(stamp, obs.image)
            writer.add_joint_state(stamp, obs.joint_names, obs.joint_positions)
            if world.done:
                break
            action = noisy_expert_action(world, rng, job.action_noise)
            writer.add_action(stamp + COMMAND_LATENCY_NS, action)
            obs = world.step(action)
            step += 1
            if obs.success and first_success is None:
                first_success = step
            success = success or bool(obs.success)
        writer.close(success=success, length=step, first_success_step=first_success)
    return {"task": job.task, "success": success, "length": step}


# -- parent side -----------------------------------------------------------------------------------


def _episode_done(settings: WorldSettings):
    def done(job: EpisodeJob) -> bool:
        from conla_ros.episodes.reader import is_complete_episode, read_episode_metadata

        path = Path(job.path)
        if not is_complete_episode(path):
            return False
        # Settings differ: not done; the worker then refuses to overwrite it, with a clear error.
        return read_episode_metadata(path).get(T.META_GENERATOR) == settings.generator_record(job)

    return done


def plan_episodes(
    tasks: Sequence[str], episodes_per_task: int, out_dir: Path, *, seed: int, storage: str, action_noise: float
) -> list[EpisodeJob]:
    """The jobs of a run, task by task, episode index by index."""
    return [
        EpisodeJob(task, seed + index, index, str(out_dir / episode_name(task, seed + index)), storage,
                   float(action_noise))
        for task in tasks
        for index in range(episodes_per_task)
    ]


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def generate_episodes(
    tasks: Sequence[str],
    episodes_per_task: int,
    out_dir: Path | str,
    storage: str = "sqlite3",
    workers: int = 1,
    seed: int = 0,
    image_size: int = 64,
    action_noise: float = DEFAULT_NOISE,
    domain: str = "robot",
    progress: bool = True,
    max_steps: int | None = None,
) -> GenerationSummary:
    """Generate `episodes_per_task` scripted-expert episodes per task into `out_dir`, one bag each.

    Finished episodes (complete bags made with the same settings) are skipped; partial ones are
    redone. One failing episode is reported and counted, the others go on. See the module
    docstring for the recorded convention, the noise and the seeding.
    """
    from conla_ros.episodes.reader import read_episode_metadata
    from conla_ros.episodes.writer import STORAGES

    if storage not in STORAGES:
        raise ValueError(f"storage={storage!r} is not one of {STORAGES}")
    if episodes_per_task < 0:
        raise ValueError(f"episodes_per_task={episodes_per_task} must be >= 0")
    if action_noise < 0:
        raise ValueError(f"action_noise={action_noise} must be >= 0")
    check_seed_range(seed, episodes_per_task)
    tasks = resolve_tasks(tasks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = WorldSettings(image_size=int(image_size), domain=domain, max_steps=max_steps)
    settings.world_config()  # bad settings fail here, once, not in every worker
    jobs = plan_episodes(tasks, episodes_per_task, out_dir, seed=seed, storage=storage, action_noise=action_noise)
    report: RunReport = run_items(jobs, record_episode, setup=make_world, setup_arg=settings,
                                  is_done=_episode_done(settings), workers=workers, progress=progress,
                                  desc="episodes")
    episodes, successes, per_task = [], 0, {task: {"episodes": 0, "successes": 0} for task in tasks}
    for job, result in zip(jobs, report.results, strict=True):
        if result.status == "failed":
            continue
        path = Path(job.path)
        episodes.append(path)
        ok = bool(read_episode_metadata(path).get(T.META_SUCCESS))
        successes += ok
        per_task[job.task]["episodes"] += 1
        per_task[job.task]["successes"] += ok
    return GenerationSummary(
        out_dir=out_dir, requested=len(jobs), written=report.count("written"), skipped=report.count("skipped"),
        failed=report.count("failed"), failures=[(r.name, r.error or "") for r in report.failures],
        episodes=episodes, successes=successes, total_bytes=sum(_dir_bytes(p) for p in episodes),
        seconds=report.seconds, workers=report.workers,
        steps_written=sum(r.info.get("length", 0) for r in report.results if r.status == "written"),
        per_task=per_task,
    )


# -- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `conla sim episodes`."""
    add_generation_arguments(parser, "episode", DEFAULT_NOISE)
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task (default: 10)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (one bag per episode)")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3",
                        help="rosbag2 storage plugin (default: sqlite3)")


def run(args: argparse.Namespace) -> int:
    """Run `conla sim episodes`; exit code 0 when every episode is complete, 1 if any failed."""
    try:
        summary = generate_episodes(
            args.tasks, args.episodes, args.out, storage=args.storage, workers=args.workers, seed=args.seed,
            image_size=args.image_size, action_noise=args.noise, progress=not args.no_progress,
            max_steps=args.max_steps)
    except ValueError as error:
        print(f"conla sim episodes: {error}", file=sys.stderr)
        return 2
    print(summary.format())
    return 1 if summary.failed else 0

