"""The action contract of episodes: joint-space episodes round-trip, ee episodes read as before, bad bags are named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from fixtures.tiny_episodes import JOINT_STATE_NAMES, T0, tiny_actions, write_tiny_episode
from rosbags.highlevel import AnyReader

from conla_ros.episodes import topics as T
from conla_ros.episodes.contract import EE_DELTA, ActionContract, EpisodeContract, joint_position_contract
from conla_ros.episodes.reader import EpisodeReadError, load_episode, read_action_contract, read_episode_metadata
from conla_ros.episodes.writer import EpisodeWriter, EpisodeWriterError, typestore

ARM = ("shoulder_pan", "shoulder_lift", "elbow")


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("gripper", [False, True])
def test_joint_space_episode_round_trips(tmp_path, storage, gripper):
    action = joint_position_contract(ARM, gripper=gripper, low=[-3.0] * (3 + gripper), high=[3.0] * (3 + gripper))
    path = write_tiny_episode(tmp_path / "joints", action, steps=6, storage=storage)
    with AnyReader([path]) as reader:  # the bag holds the joint command topic, not the twist
        topics = {c.topic: c.msgtype for c in reader.connections}
    assert topics[T.JOINT_COMMANDS.name] == "std_msgs/msg/Float64MultiArray" and T.EE_TWIST.name not in topics
    assert (T.GRIPPER.name in topics) == gripper
    meta = read_episode_metadata(path)
    assert meta[T.META_ACTION] == action.to_dict() and meta[T.META_LENGTH] == 6
    episode = load_episode(path)
    assert episode.action == action == read_action_contract(path)
    np.testing.assert_allclose(episode.commands, tiny_actions(action, 6))  # joints [+ gripper], in order
    assert episode.commands.shape == (6, action.dim) and episode.joint_names == JOINT_STATE_NAMES
    assert (episode.next_command_index() == np.arange(7)).all()  # command k follows image k


def _edit_metadata(path, edit) -> None:
    """Apply `edit` to the episode's metadata JSON as metadata.yaml holds it."""
    meta_file = path / "metadata.yaml"
    info = yaml.safe_load(meta_file.read_text())
    custom = info["rosbag2_bagfile_information"]["custom_data"]
    meta = json.loads(custom[T.CUSTOM_DATA_KEY])
    edit(meta)
    custom[T.CUSTOM_DATA_KEY] = json.dumps(meta)
    meta_file.write_text(yaml.safe_dump(info))


def test_ee_episodes_read_exactly_as_before(tmp_path):
    path = write_tiny_episode(tmp_path / "ee", EE_DELTA, steps=5)
    assert read_action_contract(path) == EE_DELTA == load_episode(path).action
    want = load_episode(path).commands
    # Metadata written before the contract existed has no `action` entry: the twist topic says ee_delta.
    _edit_metadata(path, lambda meta: meta.pop(T.META_ACTION))
    old = load_episode(path)
    assert T.META_ACTION not in old.metadata and old.action == EE_DELTA
    np.testing.assert_array_equal(old.commands, want)
    assert old.commands.shape == (5, 4) and old.action.names == T.ACTION_NAMES


def _bag(path, *topics: str, messages: bool = True):
    """A plain rosbag2 bag with one camera frame and (optionally) one message on each command topic."""
    from rosbags.rosbag2 import Writer

    store = typestore()
    types = store.types
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=5, nanosec=0), frame_id="")
    image = types[T.CAMERA.msgtype](header=header, height=2, width=2, encoding="rgb8", is_bigendian=0, step=6,
                                    data=np.zeros(12, np.uint8))
    vector = types["geometry_msgs/msg/Vector3"]
    msgs = {T.EE_TWIST.name: types[T.EE_TWIST.msgtype](header=header, twist=types["geometry_msgs/msg/Twist"](
                linear=vector(x=0.1, y=0.0, z=0.0), angular=vector(x=0.0, y=0.0, z=0.0))),
            T.JOINT_COMMANDS.name: types[T.JOINT_COMMANDS.msgtype](
                layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.zeros(3))}
    specs = {s.name: s for s in (T.EE_TWIST, T.JOINT_COMMANDS)}
    with Writer(path, version=9) as writer:
        camera = writer.add_connection(T.CAMERA.name, T.CAMERA.msgtype, typestore=store)
        writer.write(camera, 5_000_000_000, store.serialize_cdr(image, T.CAMERA.msgtype))
        for topic in topics:
            connection = writer.add_connection(topic, specs[topic].msgtype, typestore=store)
            if messages:
                writer.write(connection, 5_000_000_000, store.serialize_cdr(msgs[topic], specs[topic].msgtype))
    return path


def test_bags_with_both_kinds_neither_or_unnamed_joints_are_errors_naming_the_bag(tmp_path):
    both = _bag(tmp_path / "both_kinds", T.EE_TWIST.name, T.JOINT_COMMANDS.name)
    with pytest.raises(EpisodeReadError, match=r"both_kinds: holds both of the command topics"):
        load_episode(both)
    with pytest.raises(EpisodeReadError, match=r"no_commands: holds neither"):
        load_episode(_bag(tmp_path / "no_commands"))
    with pytest.raises(EpisodeReadError, match=r"unnamed: joint commands on .* no 'action' entry"):
        load_episode(_bag(tmp_path / "unnamed", T.JOINT_COMMANDS.name))
    # A recorded but silent topic counts only when no command topic has messages.
    assert read_action_contract(_bag(tmp_path / "silent_twist", T.EE_TWIST.name, messages=False)) == EE_DELTA


def test_metadata_kind_must_match_the_topic(tmp_path):
    path = write_tiny_episode(tmp_path / "liar", EE_DELTA, steps=2)
    _edit_metadata(path, lambda meta: meta.update({T.META_ACTION: joint_position_contract(ARM).to_dict()}))
    with pytest.raises(EpisodeReadError, match=r"liar.*joint_position"):
        load_episode(path)


def test_writer_refuses_commands_of_the_other_kind(tmp_path):
    action = joint_position_contract(ARM)
    with pytest.raises(EpisodeWriterError, match=r"add_twist needs an ee_delta episode"), \
            EpisodeWriter(tmp_path / "a", action=action) as writer:
        writer.add_twist(T0, [0.0, 0.0, 0.0])
    with pytest.raises(EpisodeWriterError, match=r"3 values \(for \['shoulder_pan'"), \
            EpisodeWriter(tmp_path / "b", action=action) as writer:
        writer.add_joint_command(T0, [0.0, 0.0])
    with pytest.raises(EpisodeWriterError, match="no gripper dimension"), \
            EpisodeWriter(tmp_path / "c", action=action) as writer:
        writer.add_gripper(T0, 1.0)
    with pytest.raises(EpisodeWriterError, match="add_joint_command needs a"), EpisodeWriter(tmp_path / "d") as writer:
        writer.add_joint_command(T0, [0.0, 0.0, 0.0])
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_contract_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="'cartesian'"):
        ActionContract(kind="cartesian", names=("x",), units=("m",))
    with pytest.raises(ValueError, match="units must be 2"):
        ActionContract(kind="joint_position", names=("a", "b"), units=("rad",))
    with pytest.raises(ValueError, match="gripper must be one of"):
        ActionContract(kind="joint_position", names=("a",), units=("rad",), gripper="hand")
    with pytest.raises(ValueError, match=r"'a': low 1\.0 > high 0\.0"):
        ActionContract(kind="joint_position", names=("a",), units=("rad",), low=(1.0,), high=(0.0,))
    with pytest.raises(ValueError, match=r"ee_delta action has 3 .* got 2"):
        ActionContract(kind="ee_delta", names=("dx", "dy"), units=("1", "1"))
    with pytest.raises(ValueError, match=r"metadata has unknown keys \['limits'\]"):
        ActionContract.from_dict({**EE_DELTA.to_dict(), "limits": 1}, "metadata")
    with pytest.raises(ValueError, match="control_rate_hz must be a positive number, got 0"):
        EpisodeContract(action=EE_DELTA, control_rate_hz=0)
    contract = EpisodeContract(action=joint_position_contract(ARM, gripper=True), control_rate_hz=20,
                               proprio_names=ARM)
    assert EpisodeContract.from_dict(json.loads(json.dumps(contract.to_dict()))) == contract
