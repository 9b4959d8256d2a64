"""`conla train lam --config config/lam.yaml [--resume]`: train the latent action model.

The config is one YAML file with `model:` (conla_training.models.lam.LAMConfig), `data:`
(conla_training.datasets.video_pairs.DataConfig) and `train:` (conla_training.engine.config.TrainConfig);
unknown keys are errors that name the closest valid key. `--set KEY=VALUE` overrides single fields
(`--set train.steps=2000 --set model.contrast.action_contrast=false`).

Distributed: the same command under `accelerate launch` (or `torchrun`) runs data-parallel on
several GPUs or nodes; `train.batch_size` is global. Example, 8 GPUs:
    accelerate launch --multi_gpu --num_processes 8 -m conla_training.train_lam --config config/lam.yaml
Several CPU processes (gloo; what the tests use — `accelerate launch --cpu` starts only one):
    python -m torch.distributed.run --standalone --nproc_per_node 2 -m conla_training.train_lam --config ...

Outputs: see conla_training.engine.trainer (run folder layout). Exit codes: 0 finished, 130
interrupted (a checkpoint was written; `--resume` continues), 2 bad config or run folder.

torch is imported inside `run` only, so `conla --help` stays light.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="run config YAML (e.g. config/lam.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in train.run_dir from its newest checkpoint")
    parser.add_argument("--run-dir", type=Path, default=None, help="override train.run_dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. --set train.steps=500 (repeatable)")


def load_run_config(args: argparse.Namespace):
    """The LAMRunConfig of the command line (file + --set + --run-dir)."""
    from conla_ros.core.config import apply_overrides, load_config
    from conla_training.lam_trainer import LAMRunConfig

    config = load_config(LAMRunConfig, args.config)
    overrides = list(args.overrides)
    if args.run_dir is not None:
        overrides.append(f"train.run_dir={args.run_dir}")
    return apply_overrides(config, overrides) if overrides else config


def run(args: argparse.Namespace) -> int:
    import logging

    from conla_ros.core.config import ConfigError
    from conla_training.engine.trainer import TrainerError
    from conla_training.lam_trainer import train_lam

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_run_config(args)
        return train_lam(config, resume=args.resume)
    except (ConfigError, TrainerError, FileNotFoundError) as error:
        print(f"conla train lam: {error}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m conla_training.train_lam` (used by accelerate launch / torchrun)."""
    parser = argparse.ArgumentParser(prog="conla train lam", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
