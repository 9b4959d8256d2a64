"""EpisodeDataset yields the episodes' contract and skips, by name and reason, episodes of another one."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.tiny_episodes import JOINT_STATE_NAMES, write_tiny_episode

from conla_ros.core.preprocessing import ImagePreprocessing
from conla_ros.episodes.contract import EE_DELTA, joint_position_contract
from conla_training.datasets.episodes import EpisodeDataConfig, EpisodeDataset

ARM = ("j1", "j2", "j3")
SPEC = ImagePreprocessing(size=16)


def _dataset(root, use_proprio: bool = True) -> EpisodeDataset:
    return EpisodeDataset(EpisodeDataConfig(root=root), SPEC, chunk_length=4, use_proprio=use_proprio)


def test_joint_episodes_yield_a_joint_contract_and_others_are_skipped(tmp_path):
    action = joint_position_contract(ARM, gripper=True)  # no declared limits: the observed range
    for i in range(2):
        write_tiny_episode(tmp_path / f"a_joints_{i}", action, seed=i)
    write_tiny_episode(tmp_path / "b_twist", EE_DELTA)
    write_tiny_episode(tmp_path / "c_other_joints", joint_position_contract(("j1", "j2", "j4"), gripper=True))
    write_tiny_episode(tmp_path / "d_slower", action, control_rate_hz=10.0)
    data = _dataset(tmp_path)
    contract = data.contract
    assert contract.action.kind == "joint_position" and contract.action.names == (*ARM, "gripper")
    assert contract.action.units == ("rad", "rad", "rad", "1") and contract.action.gripper == "gripper"
    assert contract.control_rate_hz == 20.0 and contract.proprio_names == JOINT_STATE_NAMES
    commands = np.concatenate([e.commands for e in data.episodes])
    np.testing.assert_allclose(contract.action.low, commands.min(0))
    np.testing.assert_allclose(contract.action.high, commands.max(0))
    assert data.action_dim == 4 and data.proprio_dim == 3 and len(data.episodes) == 2
    skipped = dict((path.rsplit("/", 1)[-1], reason) for path, reason in data.skipped)
    assert sorted(skipped) == ["b_twist", "c_other_joints", "d_slower"]
    assert "kind 'ee_delta' instead of 'joint_position'" in skipped["b_twist"]
    assert "names ('j1', 'j2', 'j4', 'gripper') instead of ('j1', 'j2', 'j3', 'gripper')" in skipped["c_other_joints"]
    assert "control rate 10 Hz differs from 20 Hz" in skipped["d_slower"]


def test_ee_episodes_yield_the_declared_ee_contract_without_proprio(tmp_path):
    write_tiny_episode(tmp_path / "ee_0", EE_DELTA)
    data = _dataset(tmp_path, use_proprio=False)
    assert data.contract.action == EE_DELTA and data.contract.proprio_names == () and data.proprio_dim == 0
    assert data.contract.control_rate_hz == 20.0


def test_a_missing_control_rate_is_an_error_naming_the_episode(tmp_path):
    write_tiny_episode(tmp_path / "ee_norate", EE_DELTA, control_rate_hz=None)
    with pytest.raises(ValueError, match=r"ee_norate: its metadata has no valid control_rate_hz"):
        _dataset(tmp_path)
