"""`conla train vla --config config/vla.yaml [--resume]`: latent pretraining of the VLA (docs/method.md stage 2).

The config is one YAML file (conla_training.trainers.vla.VLARunConfig): `model:`
(conla_training.models.vla.VLAConfig, `head: latent`: the 4 latent codes predicted in parallel,
cross-entropy over 8 classes each), `data:` (conla_training.datasets.latent_labels.LatentDataConfig:
`labels:` a `conla label` JSON Lines file; its clips are read from the paths it records) and `train:`
(conla_training.engine.config.TrainConfig). Unknown keys are errors naming the closest valid key;
`--set KEY=VALUE` overrides single fields.

Then finetune with `conla train policy` (`init_from: RUN_DIR`). Distributed runs as for `conla train
lam` (`accelerate launch -m conla_training.commands.train_vla --config ...`). Exit codes: 0 finished, 130
interrupted (checkpoint written; `--resume` continues), 2 bad config, data or run folder.
"""

from __future__ import annotations

from conla_training.engine.command import TrainCommand

__all__ = ["add_arguments", "main", "run"]


def _classes() -> tuple[type, type]:
    from conla_training.trainers.vla import VLARunConfig, VLATrainer

    return VLARunConfig, VLATrainer


_COMMAND = TrainCommand("conla train vla", "config/vla.yaml", _classes, __doc__)
add_arguments, run, main = _COMMAND.add_arguments, _COMMAND.run, _COMMAND.main

if __name__ == "__main__":
    raise SystemExit(main())
