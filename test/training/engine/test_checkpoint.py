"""Checkpoint files: atomic placement, discovery, pruning, RNG round trip, safe loading."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from conla_training.engine.checkpoint import (
    checkpoint_dirs,
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    load_rng_state,
    resolve_checkpoint,
    set_rng_state,
    write_checkpoint,
)


def _write(root, step, keep=0):
    return write_checkpoint(root, step, {"step": step, "model": {"w": torch.full((2,), float(step))}},
                            get_rng_state(), rank=0, barrier=lambda: None, config_text="a: 1\n", keep=keep)


def test_write_discover_prune(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    for step in (5, 10, 15):
        _write(root, step, keep=2)
    assert [p.name for p in checkpoint_dirs(root)] == ["step_00000010", "step_00000015"]
    assert latest_checkpoint(tmp_path / "run").name == "step_00000015"
    assert sorted(p.name for p in (root / "step_00000015").iterdir()) == ["checkpoint.pt", "config.yaml",
                                                                         "rng_rank0.pt"]
    payload = load_checkpoint(tmp_path / "run")
    assert payload["step"] == 15 and payload["format"] == 1
    assert resolve_checkpoint(root / "step_00000010").parent.name == "step_00000010"


def test_unfinished_checkpoints_are_ignored_and_cleaned(tmp_path):
    root = tmp_path / "checkpoints"
    _write(root, 1)
    (root / ".tmp_step_00000002").mkdir()  # a writer that died mid-way
    (root / "step_00000003").mkdir()  # no checkpoint.pt: not complete
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    _write(root, 4)
    assert not (root / ".tmp_step_00000002").exists()
    assert latest_checkpoint(tmp_path).name == "step_00000004"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)


def test_rng_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = get_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    torch.save(state, tmp_path / "rng.pt")
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_rng_state_of_an_absent_rank_is_none(tmp_path):
    folder = _write(tmp_path / "checkpoints", 1)
    assert load_rng_state(folder, 0) is not None and load_rng_state(folder, 1) is None
