"""`conla train lam --config config/lam.yaml [--resume]`: train the latent action model.

The config is one YAML file with `model:` (conla_training.models.lam.LAMConfig), `data:`
(conla_training.datasets.video_pairs.DataConfig) and `train:` (conla_training.engine.config.TrainConfig);
unknown keys are errors that name the closest valid key. `--set KEY=VALUE` overrides single fields
(`--set train.steps=2000 --set model.contrast.action_contrast=false`).

Distributed: the same command under `accelerate launch` (or `torchrun`) runs data-parallel on
several GPUs or nodes; `train.batch_size` is global. Example, 8 GPUs:
    accelerate launch --multi_gpu --num_processes 8 -m conla_training.commands.train_lam --config config/lam.yaml
Several CPU processes (gloo; what the tests use — `accelerate launch --cpu` starts only one):
    python -m torch.distributed.run --standalone --nproc_per_node 2 -m conla_training.commands.train_lam --config ...

Outputs: see conla_training.engine.trainer (run folder layout). Exit codes: 0 finished, 130
interrupted (a checkpoint was written; `--resume` continues), 2 bad config or run folder.

torch is imported inside `run` only, so `conla --help` stays light.
"""

from __future__ import annotations

from conla_training.engine.command import TrainCommand

__all__ = ["add_arguments", "main", "run"]


def _classes() -> tuple[type, type]:
    from conla_training.trainers.lam import LAMRunConfig, LAMTrainer

    return LAMRunConfig, LAMTrainer


_COMMAND = TrainCommand("conla train lam", "config/lam.yaml", _classes, __doc__)
add_arguments, run, main = _COMMAND.add_arguments, _COMMAND.run, _COMMAND.main

if __name__ == "__main__":
    raise SystemExit(main())
