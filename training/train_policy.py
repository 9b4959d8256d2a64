"""`conla train policy --config config/policy_train.yaml [--resume]`: finetune the VLA's action head.

The config is one YAML file (conla_training.vla_trainer.PolicyRunConfig): `init_from` (a pretrained
VLA checkpoint from `conla train vla`, or null to train from scratch), `use_proprio`, `model:`
(conla_training.models.vla.VLAConfig with `head: chunk` (default: H actions, L1 on [−1, 1]-normalised
actions) or `head: bins` (256 quantile bins, cross-entropy)), `data:`
(conla_training.datasets.episodes.EpisodeDataConfig: a folder of rosbag2 episodes) and `train:`
(conla_training.engine.config.TrainConfig). Unknown keys are errors naming the closest valid key;
`--set KEY=VALUE` overrides single fields (`--set model.head=bins --set init_from=runs/vla/x`).

Then `conla export --checkpoint RUN_DIR --out models/NAME`. Distributed runs as for `conla train lam`
(`accelerate launch -m conla_training.train_policy --config ...`). Exit codes: 0 finished, 130
interrupted (checkpoint written; `--resume` continues), 2 bad config, data or run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "load_run_config", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="run config YAML (e.g. config/policy_train.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in train.run_dir from its newest checkpoint")
    parser.add_argument("--run-dir", type=Path, default=None, help="override train.run_dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. --set train.steps=500 (repeatable)")


def load_run_config(args: argparse.Namespace):
    """The PolicyRunConfig of the command line (file + --set + --run-dir)."""
    from conla_ros.core.config import apply_overrides, load_config
    from conla_training.vla_trainer import PolicyRunConfig

    config = load_config(PolicyRunConfig, args.config)
    overrides = list(args.overrides)
    if args.run_dir is not None:
        overrides.append(f"train.run_dir={args.run_dir}")
    return apply_overrides(config, overrides) if overrides else config


def run(args: argparse.Namespace) -> int:
    import logging

    from conla_ros.core.config import ConfigError
    from conla_training.engine.trainer import TrainerError
    from conla_training.vla_trainer import PolicyTrainer

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:  # start-up problems (config, data, instruction encoder): exit 2
        trainer = PolicyTrainer(load_run_config(args), resume=args.resume)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"conla train policy: {error}", file=sys.stderr)
        return 2
    try:
        return trainer.fit()
    except TrainerError as error:  # e.g. a run folder with checkpoints and no --resume
        print(f"conla train policy: {error}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m conla_training.train_policy` (used by accelerate launch / torchrun)."""
    parser = argparse.ArgumentParser(prog="conla train policy", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
