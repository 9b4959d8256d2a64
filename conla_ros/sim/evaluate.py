"""Closed-loop evaluation in simulation: success rate per task over fixed held-out seeds.

A policy is any object with `infer(obs: dict) -> np.ndarray` returning one action (4,) or a chunk
(H, 4), and optionally `reset()` (called before every episode). A chunk is executed step by step
until it runs out; then `infer` is called again. The obs dict:

    "image"        (S, S, 3) uint8 RGB, upright
    "instruction"  str, a held-out paraphrase (never seen in training data)
    "proprio"      (9,) float32: joint positions in `JOINT_NAMES` order (7 arm joints, 2 fingers),
                   exactly what /joint_states carries on a robot and in the recorded episodes, so
                   a policy trained on bags sees the same proprioception here
    "task"         str, the MT10 task name
    "state"        (39,) float64, Meta-World's privileged state: for the scripted expert only

Seeds: training data uses world seeds below `TRAIN_SEED_LIMIT` (1_000_000); evaluation uses
`HELDOUT_SEEDS[task]` = 1_000_000 + i, so no evaluated scene was ever in the training data.
An episode succeeds if Meta-World reports success at any step within `max_steps` (it ends there).

`conla eval sim` is this module's `add_arguments` / `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from conla_ros.sim.instructions import MT10_TASKS, check_task, sample_instruction

if TYPE_CHECKING:  # the world imports MuJoCo: only when an evaluation runs
    from conla_ros.core.chunking import ChunkingConfig
    from conla_ros.sim.world import Observation, SimWorld, WorldConfig

__all__ = [
    "HELDOUT_PER_TASK",
    "HELDOUT_SEEDS",
    "TRAIN_SEED_LIMIT",
    "EpisodeResult",
    "EvalReport",
    "Policy",
    "RandomPolicy",
    "RolloutVideo",
    "ScriptedExpertPolicy",
    "add_arguments",
    "episode_caption",
    "evaluate",
    "heldout_instruction",
    "make_obs",
    "run",
    "write_report_files",
]

TRAIN_SEED_LIMIT = 1_000_000  # data generation must use world seeds below this
HELDOUT_PER_TASK = 100  # held-out seeds per task: --episodes is at most this
HELDOUT_SEEDS: dict[str, tuple[int, ...]] = {
    task: tuple(TRAIN_SEED_LIMIT + i for i in range(HELDOUT_PER_TASK)) for task in MT10_TASKS
}

_VIDEO_MIN_SIDE = 256  # rollout videos are upscaled (nearest) to at least this many pixels


@runtime_checkable
class Policy(Protocol):
    """What `evaluate` runs: one action (4,) or a chunk (H, 4) per call. `reset()` is optional."""

    def infer(self, obs: dict[str, Any]) -> np.ndarray: ...


class ScriptedExpertPolicy:
    """Meta-World's scripted expert for the task in `obs["task"]`, reading the privileged state.

    The reference row of every evaluation table.
    """

    name = "scripted expert"

    def __init__(self) -> None:
        self._policies: dict[str, Any] = {}

    def infer(self, obs: dict[str, Any]) -> np.ndarray:
        """The expert's action (4,) for `obs["state"]`."""
        import warnings

        from metaworld.policies import ENV_POLICY_MAP

        task = obs["task"]
        if task not in self._policies:
            self._policies[task] = ENV_POLICY_MAP[f"{check_task(task)}-v3"]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips anyway
            return np.asarray(self._policies[task].get_action(obs["state"]), dtype=np.float64)

    def reset(self) -> None:
        """Nothing to forget: the expert is a function of the state."""


class RuntimePolicy:
    """An exported model directory (models/NAME) through the robot's torch-free ONNX runtime.

    Exactly what policy_node runs, minus ROS and its clock: the same preprocessing, instruction
    encoder, action chunk in robot units (for Meta-World: dx, dy, dz, gripper in [-1, 1]), and the
    same chunk executor with the same settings (`conla_ros.core.chunking.default_chunking`: the
    model's `execution`, else re-planning every half chunk, blended splices). Inference is
    synchronous here, so a chunk is never late; one action per call.
    """

    def __init__(self, model_dir: Path, providers: str = "auto", chunking: ChunkingConfig | None = None) -> None:
        from conla_ros.core.chunking import ChunkedPolicy, default_chunking
        from conla_ros.core.runtime import load_policy

        self._policy = load_policy(model_dir, providers=providers)
        spec = self._policy.spec
        self._uses_proprio = spec.proprio is not None
        self.chunking = default_chunking(spec.chunk_length, chunking or spec.execution)
        self._chunked = ChunkedPolicy(self._policy, self.chunking, spec.chunk_length, spec.action_dim)
        self.name = f"model {spec.name} ({self._policy.provider})"

    def reset(self) -> None:
        """Forget the chunks and the runtime's per-episode state."""
        self._chunked.reset()

    def infer(self, obs: dict[str, Any]) -> np.ndarray:
        """The next action (4,) from the camera image, the instruction and the joint positions."""
        inputs = {"image": obs["image"], "instruction": obs["instruction"]}
        if self._uses_proprio:
            inputs["proprio"] = obs["proprio"]
        return self._chunked.infer(inputs)["actions"]


class RandomPolicy:
    """Uniform random actions in [-1, 1]: the floor any learned policy must clear."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._rng = np.random.default_rng(seed)

    def infer(self, obs: dict[str, Any]) -> np.ndarray:
        """One random action (4,)."""
        return self._rng.uniform(-1.0, 1.0, size=4)

    def reset(self) -> None:
        """Nothing to reset: the stream goes on, so episodes differ."""


@dataclass(frozen=True)
class EpisodeResult:
    """One evaluated episode."""

    task: str
    seed: int
    instruction: str
    success: bool
    length: int  # control steps taken: to the first success, or max_steps


@dataclass(frozen=True)
class EvalReport:
    """Everything an evaluation measured, per episode; per-task figures are derived from it."""

    policy: str
    episodes: tuple[EpisodeResult, ...]
    config: dict[str, Any] = field(default_factory=dict)  # the WorldConfig used, as plain values

    @property
    def tasks(self) -> tuple[str, ...]:
        """The evaluated tasks, in the order they were run."""
        return tuple(dict.fromkeys(e.task for e in self.episodes))

    def _of(self, task: str) -> list[EpisodeResult]:
        return [e for e in self.episodes if e.task == task]

    @property
    def success_rate(self) -> dict[str, float]:
        """Fraction of successful episodes per task."""
        return {t: float(np.mean([e.success for e in self._of(t)])) for t in self.tasks}

    @property
    def mean_success(self) -> float:
        """Mean of the per-task success rates (each task weighs the same)."""
        rates = list(self.success_rate.values())
        return float(np.mean(rates)) if rates else 0.0

    @property
    def episode_counts(self) -> dict[str, int]:
        """Episodes run per task."""
        return {t: len(self._of(t)) for t in self.tasks}

    @property
    def mean_length(self) -> dict[str, float]:
        """Mean episode length per task, in control steps (failures count max_steps)."""
        return {t: float(np.mean([e.length for e in self._of(t)])) for t in self.tasks}

    def table(self) -> str:
        """An aligned text table: one row per task and a mean row."""
        header = ("task", "success", "episodes", "mean length")
        rows = [
            (t, f"{100 * self.success_rate[t]:.0f}%", str(self.episode_counts[t]), f"{self.mean_length[t]:.1f}")
            for t in self.tasks
        ]
        lengths = [e.length for e in self.episodes]
        rows.append(("mean", f"{100 * self.mean_success:.1f}%", str(len(self.episodes)),
                     f"{np.mean(lengths):.1f}" if lengths else "-"))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            # Task names left-aligned, numbers right-aligned.
            padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
            return "  ".join(padded)

        rule = "  ".join("-" * w for w in widths)
        title = f"policy: {self.policy}"
        return "\n".join([title, line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values: summary figures, the config and every episode."""
        return {
            "policy": self.policy,
            "mean_success": self.mean_success,
            "success_rate": self.success_rate,
            "episodes_per_task": self.episode_counts,
            "mean_length": self.mean_length,
            "config": self.config,
            "episodes": [asdict(e) for e in self.episodes],
        }

    def to_json(self) -> str:
        """`to_dict()` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)


def make_obs(obs: Observation, task: str, instruction: str) -> dict[str, Any]:
    """The policy's obs dict from a world `Observation` (see the module docstring for the keys)."""
    return {
        "image": obs.image,
        "instruction": instruction,
        "proprio": obs.joint_positions.astype(np.float32),
        "task": task,
        "state": obs.state,
    }


def _as_chunk(actions: Any) -> np.ndarray:
    """A policy's output as an (H, 4) float64 chunk; anything else is the policy's bug: say so."""
    chunk = np.asarray(actions, dtype=np.float64)
    if chunk.shape == (4,):
        chunk = chunk[None]
    if chunk.ndim != 2 or chunk.shape[1] != 4 or chunk.shape[0] < 1:
        raise ValueError(f"policy.infer must return an action (4,) or a chunk (H, 4), got shape {chunk.shape}")
    return chunk


class RolloutVideo:
    """All rollouts in one mp4: frames upscaled, a caption, and a green/red border at the end.

    Shared by `conla eval sim` and `conla eval ros`, so both write the same kind of video.
    """

    def __init__(self, path: Path, image_size: int, fps: float) -> None:
        import cv2

        self._cv2 = cv2
        self.scale = max(1, -(-_VIDEO_MIN_SIDE // image_size))
        side = image_size * self.scale
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (side, side))
        if not self._writer.isOpened():
            raise OSError(f"could not open {path} for writing an mp4 (OpenCV 'mp4v')")
        self.path = path

    def frame(self, image: np.ndarray, caption: str, border: tuple[int, int, int] | None = None) -> np.ndarray:
        cv2 = self._cv2
        big = cv2.resize(image, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_NEAREST)
        big = cv2.cvtColor(big, cv2.COLOR_RGB2BGR)
        cv2.putText(big, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        if border is not None:
            cv2.rectangle(big, (0, 0), (big.shape[1] - 1, big.shape[0] - 1), border, 6)
        self._writer.write(big)
        return big

    def finish(self, image: np.ndarray, caption: str, success: bool) -> None:
        """End an episode: hold its last frame a quarter second, framed green (success) or red (failure)."""
        colour = (0, 200, 0) if success else (0, 0, 220)  # BGR
        for _ in range(20):
            self.frame(image, caption + (" success" if success else " fail"), border=colour)

    def close(self) -> None:
        """Finish the file."""
        self._writer.release()


def heldout_instruction(task: str, seed: int) -> str:
    """The held-out paraphrase an evaluation episode of (task, seed) gets (sim_arm_node draws the same)."""
    return sample_instruction(task, np.random.default_rng([seed, 1]), split="heldout")


def episode_caption(task: str, seed: int) -> str:
    """The video caption of an evaluation episode: task and held-out scene number."""
    return f"{task} #{seed - TRAIN_SEED_LIMIT}"


def evaluate(
    policy: Policy,
    tasks: Sequence[str] = MT10_TASKS,
    episodes_per_task: int = 10,
    config: WorldConfig | None = None,
    video_path: Path | None = None,
    progress: bool = True,
) -> EvalReport:
    """Run `policy` closed-loop on the first `episodes_per_task` held-out seeds of each task.

    `config` is a `WorldConfig` (default: `WorldConfig()`, robot domain, 64×64). Instructions are
    held-out paraphrases, drawn per episode from its seed. With `video_path`, every rollout is
    written to one mp4.
    """
    from tqdm import tqdm

    from conla_ros.sim.world import CONTROL_RATE_HZ, SimWorld, WorldConfig

    if not callable(getattr(policy, "infer", None)):
        raise TypeError(f"a policy needs an infer(obs) method; {type(policy).__name__} has none")
    config = WorldConfig() if config is None else config
    tasks = [check_task(t) for t in tasks]
    if not 1 <= episodes_per_task <= HELDOUT_PER_TASK:
        raise ValueError(f"episodes_per_task must be in [1, {HELDOUT_PER_TASK}], got {episodes_per_task}")
    policy_name = getattr(policy, "name", type(policy).__name__)
    video = RolloutVideo(Path(video_path), config.image_size, CONTROL_RATE_HZ) if video_path else None
    results: list[EpisodeResult] = []
    bar = tqdm(total=len(tasks) * episodes_per_task, desc="eval sim", unit="ep", disable=not progress)
    try:
        with SimWorld(config) as world:
            for task in tasks:
                for seed in HELDOUT_SEEDS[task][:episodes_per_task]:
                    results.append(_run_episode(policy, world, task, seed, video))
                    bar.update(1)
                    bar.set_postfix(success=f"{np.mean([r.success for r in results]):.0%}")
    finally:
        bar.close()
        if video is not None:
            video.close()
    config_values = {k: v for k, v in asdict(config).items() if k != "human"}
    if config.domain == "human":
        config_values["human"] = asdict(config.human)
    return EvalReport(policy=policy_name, episodes=tuple(results), config=config_values)


def _run_episode(policy: Policy, world: SimWorld, task: str, seed: int, video: RolloutVideo | None) -> EpisodeResult:
    instruction = heldout_instruction(task, seed)
    if hasattr(policy, "reset"):
        policy.reset()
    obs = world.reset(task, seed)
    caption = episode_caption(task, seed)
    chunk: list[np.ndarray] = []
    while not world.done:
        if video is not None:
            video.frame(obs.image, caption)
        if not chunk:
            chunk = list(_as_chunk(policy.infer(make_obs(obs, task, instruction))))
        obs = world.step(chunk.pop(0))
    success = world.succeeded
    if video is not None:
        video.finish(obs.image, caption, success)
    return EpisodeResult(task=task, seed=seed, instruction=instruction, success=success, length=obs.step)


# --- command line: `conla eval sim` -------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `conla eval sim`."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--policy", choices=("expert", "random"), default=None,
                        help="a built-in policy: the scripted expert (reference row) or random actions "
                        "(default: expert)")
    source.add_argument("--model", type=Path, metavar="DIR",
                        help="an exported model directory (models/NAME) run through the ONNX runtime")
    parser.add_argument("--tasks", nargs="+", default=list(MT10_TASKS), metavar="TASK",
                        help="MT10 task names (reach, or Meta-World's reach-v3; default: all ten)")
    parser.add_argument("--episodes", type=int, default=10, metavar="N",
                        help=f"held-out seeds per task (default 10, at most {HELDOUT_PER_TASK})")
    parser.add_argument("--image-size", type=int, default=None, metavar="S",
                        help="camera image side (default: the model's input size; 64 for built-in policies)")
    parser.add_argument("--domain", choices=("robot", "human"), default="robot",
                        help="visual domain to evaluate in (default robot)")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="episode limit in control steps (default: WorldConfig's)")
    parser.add_argument("--replan-every", type=int, default=None, metavar="N",
                        help="--model: ticks between inferences (default: the model's execution settings, "
                        "else half the chunk, as policy_node)")
    parser.add_argument("--temporal-ensembling", action="store_true",
                        help="--model: average every chunk covering a tick (ACT), as policy_node's parameter")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--video", type=Path, metavar="FILE", help="write all rollouts to one mp4")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Evaluate the chosen policy and print the table; 0 on success, non-zero on a usage error."""
    from conla_ros.sim.world import WorldConfig

    try:
        tasks = [check_task(t) for t in args.tasks]
        kwargs: dict[str, Any] = {"image_size": args.image_size or _model_image_size(args.model),
                                  "domain": args.domain}
        if args.max_steps is not None:
            kwargs["max_steps"] = args.max_steps
        config = WorldConfig(**kwargs)
        if not 1 <= args.episodes <= HELDOUT_PER_TASK:
            raise ValueError(f"--episodes must be in [1, {HELDOUT_PER_TASK}], got {args.episodes}")
    except ValueError as error:
        print(f"conla eval sim: {error}", file=sys.stderr)
        return 2
    if args.model is not None:
        from conla_ros.core.runtime import ModelLoadError

        try:
            policy: Policy = RuntimePolicy(args.model, chunking=_chunking_override(args))
        except (ModelLoadError, ValueError) as error:
            print(f"conla eval sim --model: {error}", file=sys.stderr)
            return 1
    else:
        policy = RandomPolicy() if args.policy == "random" else ScriptedExpertPolicy()
    report = evaluate(policy, tasks, args.episodes, config, video_path=args.video, progress=not args.no_progress)
    print(report.table())
    write_report_files(args.json, report.to_json(), args.video)
    return 0


def _model_image_size(model_dir: Path | None) -> int:
    """The camera side a model expects (its preprocessing size), 64 without a model or a readable model.yaml."""
    from conla_ros.core.model_spec import ModelLoadError, load_model_spec

    if model_dir is None:
        return 64
    try:
        return load_model_spec(model_dir).preprocessing.size
    except ModelLoadError:
        return 64  # RuntimePolicy reports the broken model below, with its own message


def _chunking_override(args: argparse.Namespace) -> ChunkingConfig | None:
    """The executor settings given on the command line, or None to use the model's."""
    from dataclasses import replace

    from conla_ros.core.chunking import default_chunking
    from conla_ros.core.model_spec import load_model_spec

    if args.replan_every is None and not args.temporal_ensembling:
        return None
    spec = load_model_spec(args.model)
    config = default_chunking(spec.chunk_length, spec.execution)
    if args.replan_every is not None:
        config = replace(config, replan_every=args.replan_every)
    if args.temporal_ensembling:
        config = replace(config, temporal_ensembling=True)
    return default_chunking(spec.chunk_length, config)


def write_report_files(json_path: Path | None, json_text: str, video_path: Path | None) -> None:
    """The closing lines of `conla eval sim|ros`: write the JSON report if asked, say where files went."""
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json_text + "\n")
        print(f"report written to {json_path}")
    if video_path is not None:
        print(f"rollouts written to {video_path}")
