"""The teleop round trip on a tiny scale (issue 7, points 3 and 6): three node processes over DDS.

sim_arm_node (the robot) <- scripted_teleop_node (the operator's commands) -> recorder_node
(rosbag2) -> conla_ros.episodes.reader.load_episode, which must give the same fields, types and
metadata as an episode `conla sim episodes` generates, so a finetuning reads both unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

TASK, SEED = "reach", 11


def test_scripted_teleop_recorded_over_ros_reads_like_a_generated_episode(processes, ros, tmp_path, repo_root) -> None:
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from conla_ros.episodes import topics as T
    from conla_ros.episodes.reader import list_episodes, load_episode, read_episode_metadata
    from conla_ros.ros.episode_status import EPISODE_STATUS_QOS, EPISODE_STATUS_TOPIC
    from conla_ros.ros.sim_arm_client import reset_service
    from conla_ros.sim.generate_episodes import generate_episodes
    from conla_ros.sim.world import CONTROL_RATE_HZ, JOINT_NAMES

    out = tmp_path / "teleop"
    config = repo_root / "config"
    processes.start("sim_arm", "conla_ros.nodes.sim_arm_node",
                    {"task": TASK, "seed": SEED, "publish_privileged_state": True}, config / "sim_arm.yaml")
    processes.start("recorder", "conla_ros.nodes.recorder_node",
                    {"output_dir": str(out), "stop_on_success": True, "name_format": "{task}_{seed:06d}_{index}"},
                    config / "recorder.yaml")
    processes.start("teleop", "conla_ros.nodes.scripted_teleop_node", {"autostart": False, "noise_seed": 3})

    statuses: list[dict] = []
    recorder_state: list[dict] = []
    node = ros.node
    node.create_subscription(String, EPISODE_STATUS_TOPIC, lambda m: statuses.append(json.loads(m.data)),
                             EPISODE_STATUS_QOS)
    node.create_subscription(String, "/recorder_node/state", lambda m: recorder_state.append(json.loads(m.data)),
                             EPISODE_STATUS_QOS)

    def wired() -> bool:  # the recorder and the arm hear the teleop; the teleop hears the arm
        return (node.count_publishers(T.EE_TWIST.name) >= 1 and node.count_subscribers(T.EE_TWIST.name) >= 2
                and node.count_subscribers(T.GRIPPER.name) >= 2 and node.count_subscribers(T.CAMERA.name) >= 1
                and node.count_subscribers("/sim_arm_node/debug/privileged_state") >= 1
                and node.count_subscribers(EPISODE_STATUS_TOPIC) >= 3 and bool(recorder_state))

    ros.spin_until(wired, what="the three nodes discovering each other", pool=processes)
    # The operator's routine: reset the scene, start recording, teleoperate; the recorder stops on success.
    reset = ros.call(Trigger, reset_service(), Trigger.Request(), processes)
    assert reset.success
    # Start only once the recorder has heard of the new episode (it names the bag after it).
    arm = {key: json.loads(reset.message)[key] for key in ("task", "seed", "episode")}
    ros.spin_until(lambda: recorder_state and recorder_state[-1]["arm"] == arm,
                   what="the recorder hearing the reset's episode status", pool=processes)
    started = ros.call(Trigger, "/recorder_node/start", Trigger.Request(), processes)
    assert started.success, started.message
    assert ros.call(SetBool, "/scripted_teleop_node/enable", SetBool.Request(data=True), processes).success
    ros.spin_until(lambda: recorder_state and recorder_state[-1]["closed"], timeout_s=60,
                   what="the recorder closing the episode on success", pool=processes)

    episodes = list_episodes(out)
    assert [p.name for p in episodes] == [f"{TASK}_{SEED:06d}_0"]
    episode = load_episode(episodes[0])
    meta = episode.metadata
    final = statuses[-1]
    assert final["success"] and meta[T.META_SUCCESS] is True
    assert (meta[T.META_TASK], meta[T.META_SEED], meta[T.META_SOURCE]) == (TASK, SEED, "teleop")
    assert meta[T.META_CONTROL_RATE_HZ] == CONTROL_RATE_HZ and meta[T.META_IMAGE_SIZE] == [64, 64]
    assert meta[T.META_INSTRUCTION] == episode.instruction == final["instruction"] != ""
    assert meta[T.META_LENGTH] == len(episode) >= 10

    # The same fields, dtypes and shapes as a generated episode.
    generate_episodes([TASK], 1, tmp_path / "sim", seed=SEED, progress=False, workers=1)
    reference = load_episode(read_sim := tmp_path / "sim" / f"{TASK}_{SEED:06d}")
    assert read_episode_metadata(read_sim)[T.META_SOURCE] == "sim"
    for name in ("images", "image_stamps", "joint_positions", "joint_stamps", "commands", "command_stamps"):
        ours, theirs = getattr(episode, name), getattr(reference, name)
        assert ours.dtype == theirs.dtype and ours.shape[1:] == theirs.shape[1:], name
    assert episode.joint_names == reference.joint_names == JOINT_NAMES
    assert set(reference.metadata) - set(meta) <= {T.META_GENERATOR, "episode_index", "action_convention"}

    # Commands are the expert's (bounded, moving toward the goal), images one per control step.
    assert np.all(np.abs(episode.commands) <= 1.0) and np.all(np.isfinite(episode.commands))
    assert np.all(np.diff(episode.command_stamps) > 0) and np.all(np.diff(episode.image_stamps) > 0)
    assert len(episode.images) >= len(episode) // 2  # 80 Hz camera: about one frame per command (best effort)
    following = episode.next_command_index()
    assert following[0] <= 1 and following[-1] <= len(episode)  # every frame has its following commands
    assert episode.images.std() > 5
    processes.check_alive()
    assert not any(Path(out).glob("*" + T.PARTIAL_SUFFIX))
