"""`conla train policy --config config/policy_train.yaml [--resume]`: finetune the VLA's action head.

The config is one YAML file (conla_training.trainers.vla.PolicyRunConfig): `init_from` (a pretrained
VLA checkpoint from `conla train vla`, or null to train from scratch), `use_proprio`, `model:`
(conla_training.models.vla.VLAConfig with `head: chunk` (default: H actions, L1 on [−1, 1]-normalised
actions) or `head: bins` (256 quantile bins, cross-entropy)), `data:`
(conla_training.datasets.episodes.EpisodeDataConfig: a folder of rosbag2 episodes) and `train:`
(conla_training.engine.config.TrainConfig). Unknown keys are errors naming the closest valid key;
`--set KEY=VALUE` overrides single fields (`--set model.head=bins --set init_from=runs/vla/x`).

Then `conla export --checkpoint RUN_DIR --out models/NAME`. Distributed runs as for `conla train lam`
(`accelerate launch -m conla_training.commands.train_policy --config ...`). Exit codes: 0 finished, 130
interrupted (checkpoint written; `--resume` continues), 2 bad config, data or run folder.
"""

from __future__ import annotations

from conla_training.engine.command import TrainCommand

__all__ = ["add_arguments", "main", "run"]


def _classes() -> tuple[type, type]:
    from conla_training.trainers.vla import PolicyRunConfig, PolicyTrainer

    return PolicyRunConfig, PolicyTrainer


_COMMAND = TrainCommand("conla train policy", "config/policy_train.yaml", _classes, __doc__)
add_arguments, run, main = _COMMAND.add_arguments, _COMMAND.run, _COMMAND.main

if __name__ == "__main__":
    raise SystemExit(main())
