"""The command line every `conla train ...` shares: arguments, config loading, exit codes.

    conla train lam|vla|policy --config FILE [--resume] [--run-dir DIR] [--set KEY=VALUE ...]

A run config is one YAML file → one frozen dataclass (conla_ros.core.config), `--set` overrides
single fields and `--run-dir` is `--set train.run_dir=DIR`. Exit codes: 0 finished, 130
interrupted (a checkpoint was written; `--resume` continues), 2 bad config, data or run folder.
torch is imported only when a run starts, so `conla --help` stays light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_run_arguments(parser: argparse.ArgumentParser, example_config: str) -> None:
    """The arguments of a `conla train ...` command."""
    parser.add_argument("--config", type=Path, required=True, help=f"run config YAML (e.g. {example_config})")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in train.run_dir from its newest checkpoint")
    parser.add_argument("--run-dir", type=Path, default=None, help="override train.run_dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. --set train.steps=500 (repeatable)")


def load_run_config(config_class: type, args: argparse.Namespace) -> Any:
    """The run config of the command line: the file, then `--set` and `--run-dir`."""
    from conla_ros.core.config import apply_overrides, load_config

    config = load_config(config_class, args.config)
    overrides = list(args.overrides)
    if args.run_dir is not None:
        overrides.append(f"train.run_dir={args.run_dir}")
    return apply_overrides(config, overrides) if overrides else config


def run_training(command: str, config_class: type, trainer_class: Callable[..., Any],
                 args: argparse.Namespace) -> int:
    """Build `trainer_class(config, resume=...)` and fit it; start-up problems print and exit 2."""
    import logging

    from conla_ros.core.config import ConfigError
    from conla_training.engine.trainer import TrainerError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        trainer = trainer_class(load_run_config(config_class, args), resume=args.resume)
        return trainer.fit()
    except (ConfigError, TrainerError, FileNotFoundError, ValueError) as error:
        # TrainerError: e.g. a run folder with checkpoints and no --resume
        print(f"{command}: {error}", file=sys.stderr)
        return 2


def command_main(command: str, description: str, add_arguments: Callable, run: Callable,
                 argv: list[str] | None) -> int:
    """`python -m conla_training.commands.<module>` (what accelerate launch / torchrun start)."""
    parser = argparse.ArgumentParser(prog=command, description=description)
    add_arguments(parser)
    return run(parser.parse_args(argv))


class TrainCommand:
    """One `conla train ...` command: its `add_arguments`, `run` and `main` (for `python -m`).

    `classes` returns (run config class, trainer class); it is called only when a run starts, so
    torch is imported then and not by `conla --help`.
    """

    def __init__(self, command: str, example_config: str, classes: Callable[[], tuple[type, Callable[..., Any]]],
                 doc: str) -> None:
        self.command, self.example_config, self.classes = command, example_config, classes
        self.description = doc.splitlines()[0]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The arguments of the command."""
        add_run_arguments(parser, self.example_config)

    def run(self, args: argparse.Namespace) -> int:
        """Train (or with --resume, continue) the run the command line describes."""
        config_class, trainer_class = self.classes()
        return run_training(self.command, config_class, trainer_class, args)

    def main(self, argv: list[str] | None = None) -> int:
        """Entry point for `python -m` (used by accelerate launch / torchrun)."""
        return command_main(self.command, self.description, self.add_arguments, self.run, argv)
