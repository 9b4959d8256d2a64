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

from conla_training.engine.command import add_run_arguments, command_main, run_training

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `conla train policy`."""
    add_run_arguments(parser, "config/policy_train.yaml")


def run(args: argparse.Namespace) -> int:
    """Train (or with --resume, continue) the run the command line describes."""
    from conla_training.vla_trainer import PolicyRunConfig, PolicyTrainer

    return run_training("conla train policy", PolicyRunConfig, PolicyTrainer, args)


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m conla_training.train_policy` (used by accelerate launch / torchrun)."""
    return command_main("conla train policy", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
