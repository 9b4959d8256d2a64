"""Every training config under config/ loads into its dataclass, and the recipe's two configs share a backbone."""

from __future__ import annotations

from pathlib import Path

import pytest

from conla_ros.core.config import load_config
from conla_training.trainers.lam import LAMRunConfig
from conla_training.trainers.vla import PolicyRunConfig, VLARunConfig

CONFIG = Path(__file__).resolve().parents[2] / "config"
KINDS = {"lam": LAMRunConfig, "vla": VLARunConfig, "policy_train": PolicyRunConfig}


@pytest.mark.parametrize("path", sorted(p for p in CONFIG.glob("*.yaml") if p.stem.startswith(tuple(KINDS))),
                         ids=lambda p: p.name)
def test_every_training_config_loads(path: Path) -> None:
    kind = next(k for k in sorted(KINDS, key=len, reverse=True) if path.stem.startswith(k))
    load_config(KINDS[kind], path)


def test_pretraining_and_finetuning_share_the_default_backbone() -> None:
    """A `conla train vla` run of config/vla.yaml is a drop-in init_from for config/policy_train.yaml."""
    policy = load_config(PolicyRunConfig, CONFIG / "policy_train.yaml")
    vla = load_config(VLARunConfig, CONFIG / "vla.yaml")
    assert vla.model.backbone() == policy.model.backbone()
    assert policy.use_proprio and policy.augment.random_shift > 0 and policy.train.ema_decay > 0
