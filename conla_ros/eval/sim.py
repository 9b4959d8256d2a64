"""`conla eval sim`: closed-loop success in simulation, per task over fixed held-out seeds.

A policy is a `conla_ros.core.policy.Policy` that returns one action per call: `infer(obs)` →
{'actions': (4,)}, and `reset()` before every episode. An exported model is the ONNX runtime
with the chunk executor stacked on it (`model_policy`: exactly what policy_node runs, minus ROS
and its clock); a policy that returns chunks is wrapped in `ChunkedPolicy` the same way. The obs
dict:

    "image"        (S, S, 3) uint8 RGB, upright
    "instruction"  str, a held-out paraphrase (never seen in training data)
    "proprio"      (9,) float32: joint positions in `JOINT_NAMES` order (7 arm joints, 2 fingers),
                   exactly what /joint_states carries on a robot and in the recorded episodes, so
                   a policy trained on bags sees the same proprioception here
    "task"         str, the MT10 task name
    "state"        (39,) float64, Meta-World's privileged state: for the scripted expert only

Seeds and instructions: `conla_ros.sim.seeds` (held-out seeds 1_000_000 + i, never in training
data). An episode succeeds if Meta-World reports success at any step within `max_steps` (it ends
there).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from conla_ros.core.policy import OUT_ACTIONS, Policy, RandomPolicy
from conla_ros.eval.report import EpisodeResult, EvalReport, write_report_files
from conla_ros.eval.video import RolloutVideo, episode_caption
from conla_ros.sim.instructions import MT10_TASKS, check_task
from conla_ros.sim.seeds import HELDOUT_PER_TASK, HELDOUT_SEEDS, episode_instruction

if TYPE_CHECKING:  # the world imports MuJoCo: only when an evaluation runs
    from conla_ros.core.chunking import ChunkedPolicy, ChunkingConfig
    from conla_ros.sim.world import Observation, SimWorld, WorldConfig

__all__ = ["add_arguments", "evaluate", "make_obs", "model_policy", "run"]


def model_policy(model_dir: Path, providers: str = "auto", chunking: ChunkingConfig | None = None) -> ChunkedPolicy:
    """An exported model directory (models/NAME) as policy_node runs it: the torch-free ONNX runtime
    (preprocessing, instruction encoder, chunk in robot units) with the chunk executor stacked on
    it, set as `conla_ros.core.chunking.default_chunking` says (the model's `execution`, else
    re-planning every half chunk; `chunking` overrides). Inference is synchronous here, so a chunk
    is never late. Raises `ModelLoadError` for a bad directory."""
    from conla_ros.core.chunking import ChunkedPolicy, default_chunking
    from conla_ros.core.runtime import load_policy

    runtime = load_policy(model_dir, providers=providers)
    spec = runtime.spec
    return ChunkedPolicy(runtime, default_chunking(spec.chunk_length, chunking or spec.execution),
                         spec.chunk_length, spec.action_dim, name=f"model {spec.name} ({runtime.provider})")


def make_obs(obs: Observation, task: str, instruction: str) -> dict[str, Any]:
    """The policy's obs dict from a world `Observation` (see the module docstring for the keys)."""
    return {
        "image": obs.image,
        "instruction": instruction,
        "proprio": obs.joint_positions.astype(np.float32),
        "task": task,
        "state": obs.state,
    }


def _action(result: dict[str, Any]) -> np.ndarray:
    """A policy's result as one (4,) float64 action; anything else is the policy's bug: say so."""
    action = np.asarray(result[OUT_ACTIONS], dtype=np.float64)
    if action.shape != (4,):
        raise ValueError(f"policy.infer must return {{'actions': one action (4,)}} (wrap a chunk policy in "
                         f"conla_ros.core.chunking.ChunkedPolicy), got shape {action.shape}")
    return action


def evaluate(
    policy: Policy,
    tasks: Sequence[str] = MT10_TASKS,
    episodes_per_task: int = 10,
    config: WorldConfig | None = None,
    video_path: Path | None = None,
    progress: bool = True,
    instructions: Literal["heldout", "train"] = "heldout",
) -> EvalReport:
    """Run `policy` closed-loop on the first `episodes_per_task` held-out seeds of each task.

    `config` is a `WorldConfig` (default: `WorldConfig()`, robot domain, 64×64). Instructions are
    held-out paraphrases, drawn per episode from its seed; `instructions="train"` draws them from
    the training paraphrases instead (a diagnosis: how much of a failure is the wording). With
    `video_path`, every rollout is written to one mp4.
    """
    from tqdm import tqdm

    from conla_ros.sim.world import CONTROL_RATE_HZ, SimWorld, WorldConfig

    if not (callable(getattr(policy, "infer", None)) and callable(getattr(policy, "reset", None))):
        raise TypeError(f"a policy needs infer(obs) and reset() methods; {type(policy).__name__} lacks one")
    config = WorldConfig() if config is None else config
    tasks = [check_task(t) for t in tasks]
    if not 1 <= episodes_per_task <= HELDOUT_PER_TASK:
        raise ValueError(f"episodes_per_task must be in [1, {HELDOUT_PER_TASK}], got {episodes_per_task}")
    if instructions not in ("heldout", "train"):
        raise ValueError(f"instructions must be 'heldout' or 'train', got {instructions!r}")
    policy_name = getattr(policy, "name", type(policy).__name__)
    video = RolloutVideo(Path(video_path), config.image_size, CONTROL_RATE_HZ) if video_path else None
    results: list[EpisodeResult] = []
    bar = tqdm(total=len(tasks) * episodes_per_task, desc="eval sim", unit="ep", disable=not progress)
    try:
        with SimWorld(config) as world:
            for task in tasks:
                for seed in HELDOUT_SEEDS[task][:episodes_per_task]:
                    results.append(_run_episode(policy, world, task, seed, video, instructions))
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


def _run_episode(policy: Policy, world: SimWorld, task: str, seed: int, video: RolloutVideo | None,
                 instructions: Literal["heldout", "train"]) -> EpisodeResult:
    instruction = episode_instruction(task, seed, instructions)
    policy.reset()
    obs = world.reset(task, seed)
    caption = episode_caption(task, seed)
    while not world.done:
        if video is not None:
            video.frame(obs.image, caption)
        obs = world.step(_action(policy.infer(make_obs(obs, task, instruction))))
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
    parser.add_argument("--instructions", choices=("heldout", "train"), default="heldout",
                        help="paraphrases the episodes get: held-out ones (default: the benchmark) or the "
                        "training ones (a diagnosis of how much the wording costs)")
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
            policy: Policy = model_policy(args.model, chunking=_chunking_override(args))
        except (ModelLoadError, ValueError) as error:
            print(f"conla eval sim --model: {error}", file=sys.stderr)
            return 1
    elif args.policy == "random":
        policy = RandomPolicy()
    else:
        from conla_ros.sim.expert import ScriptedExpertPolicy

        policy = ScriptedExpertPolicy()
    report = evaluate(policy, tasks, args.episodes, config, video_path=args.video, progress=not args.no_progress,
                      instructions=args.instructions)
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
        return 64  # model_policy reports the broken model below, with its own message


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
