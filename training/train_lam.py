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

from conla_training.engine.command import add_run_arguments, command_main, run_training

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `conla train lam`."""
    add_run_arguments(parser, "config/lam.yaml")


def run(args: argparse.Namespace) -> int:
    """Train (or with --resume, continue) the run the command line describes."""
    from conla_training.lam_trainer import LAMRunConfig, LAMTrainer

    return run_training("conla train lam", LAMRunConfig, LAMTrainer, args)


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m conla_training.train_lam` (used by accelerate launch / torchrun)."""
    return command_main("conla train lam", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
