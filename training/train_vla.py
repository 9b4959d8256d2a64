"""`conla train vla --config config/vla.yaml [--resume]`: latent pretraining of the VLA (docs/method.md stage 2).

The config is one YAML file (conla_training.vla_trainer.VLARunConfig): `model:`
(conla_training.models.vla.VLAConfig, `head: latent`: the 4 latent codes predicted in parallel,
cross-entropy over 8 classes each), `data:` (conla_training.datasets.latent_labels.LatentDataConfig:
`labels:` a `conla label` JSON Lines file; its clips are read from the paths it records) and `train:`
(conla_training.engine.config.TrainConfig). Unknown keys are errors naming the closest valid key;
`--set KEY=VALUE` overrides single fields.

Then finetune with `conla train policy` (`init_from: RUN_DIR`). Distributed runs as for `conla train
lam` (`accelerate launch -m conla_training.train_vla --config ...`). Exit codes: 0 finished, 130
interrupted (checkpoint written; `--resume` continues), 2 bad config, data or run folder.
"""

from __future__ import annotations

import argparse

from conla_training.engine.command import add_run_arguments, command_main, run_training

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `conla train vla`."""
    add_run_arguments(parser, "config/vla.yaml")


def run(args: argparse.Namespace) -> int:
    """Train (or with --resume, continue) the run the command line describes."""
    from conla_training.vla_trainer import VLARunConfig, VLATrainer

    return run_training("conla train vla", VLARunConfig, VLATrainer, args)


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m conla_training.train_vla` (used by accelerate launch / torchrun)."""
    return command_main("conla train vla", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
