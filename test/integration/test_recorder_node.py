"""recorder_node as a separate process: episodes over DDS, and what a killed recorder leaves (issue 7, point 6).

The test process plays the robot and the operator (camera frames, joint states, commands); the
recorder's `~/state` topic says how far it got, so the kill happens mid-episode by construction,
not after a guessed sleep.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def _publishers(node):
    from geometry_msgs.msg import TwistStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String

    from conla_ros.episodes import topics as T
    from conla_ros.ros.qos import CAMERA_QOS, COMMAND_QOS, INSTRUCTION_QOS

    joints_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # as joint_state_broadcaster
    return {"camera": node.create_publisher(Image, T.CAMERA.name, CAMERA_QOS),
            "joints": node.create_publisher(JointState, T.JOINT_STATES.name, joints_qos),
            "twist": node.create_publisher(TwistStamped, T.EE_TWIST.name, COMMAND_QOS),
            "gripper": node.create_publisher(Float64MultiArray, T.GRIPPER.name, COMMAND_QOS),
            "instruction": node.create_publisher(String, T.INSTRUCTION.name, INSTRUCTION_QOS)}


def _step(node, pubs, k: int) -> None:
    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from conla_ros.episodes import topics as T
    from conla_ros.ros.image_conversions import numpy_to_image

    stamp = node.get_clock().now().to_msg()
    pubs["camera"].publish(numpy_to_image(np.full((16, 16, 3), k % 256, np.uint8), "rgb8", stamp=stamp,
                                          frame_id=T.CAMERA_FRAME_ID))
    joints = JointState(name=["j0", "j1"], position=[0.01 * k, 0.0])  # velocity/effort empty, as the sim arm's
    joints.header.stamp = stamp
    pubs["joints"].publish(joints)
    pubs["gripper"].publish(Float64MultiArray(data=[-1.0]))
    twist = TwistStamped()
    twist.header.stamp, twist.header.frame_id = stamp, T.BASE_FRAME_ID
    twist.twist.linear.x = 0.5
    pubs["twist"].publish(twist)


def test_sigkill_mid_episode_leaves_no_episode_training_would_read_as_complete(processes, ros, tmp_path) -> None:
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from conla_ros.episodes import topics as T
    from conla_ros.episodes.reader import (
        EpisodeReadError,
        is_complete_episode,
        list_episodes,
        load_episode,
        scan_episodes,
    )
    from conla_ros.ros.episode_status import EPISODE_STATUS_QOS

    out = tmp_path / "episodes"
    recorder = processes.start("recorder", "conla_ros.nodes.recorder_node",
                               {"output_dir": str(out), "name_format": "{prefix}_{index}"})
    node = ros.node
    pubs = _publishers(node)
    states: list[dict] = []
    node.create_subscription(String, "/recorder_node/state", lambda m: states.append(json.loads(m.data)),
                             EPISODE_STATUS_QOS)
    ros.spin_until(lambda: all(p.get_subscription_count() >= 1 for p in pubs.values()) and states,
                   what="the recorder's subscriptions", pool=processes)
    pubs["instruction"].publish(String(data="push the puck to the goal"))

    def record(k0: int, until) -> None:
        k = k0
        def step_and_check() -> bool:
            nonlocal k
            _step(node, pubs, k)
            k += 1
            ros.spin_for(0.0125)
            return until()
        ros.spin_until(step_and_check, what="the recorder's counts", pool=processes)

    def counts() -> dict:
        return states[-1]["counts"] if states and states[-1]["recording"] else {}

    # Episode 0: recorded and stopped: complete.
    assert ros.call(Trigger, "/recorder_node/start", Trigger.Request(), processes).success
    record(0, lambda: counts().get(T.CAMERA.name, 0) >= 5 and counts().get(T.EE_TWIST.name, 0) >= 5)
    stopped = ros.call(Trigger, "/recorder_node/stop", Trigger.Request(), processes)
    assert stopped.success, stopped.message
    # Episode 1: killed while frames and commands are being written.
    assert ros.call(Trigger, "/recorder_node/start", Trigger.Request(), processes).success
    record(100, lambda: counts().get(T.CAMERA.name, 0) >= 5 and counts().get(T.EE_TWIST.name, 0) >= 5)
    recorder.send_signal(signal.SIGKILL)
    recorder.wait(timeout=10)
    assert recorder.returncode == -signal.SIGKILL

    assert [p.name for p in list_episodes(out)] == ["teleop_0"]  # what training would read
    first = load_episode(out / "teleop_0")
    assert first.instruction == "push the puck to the goal" and len(first) >= 5
    assert len(first.joint_positions) >= 5  # JointStates with empty velocity/effort, exact from the wire
    scan = scan_episodes(out)
    assert [p.name for p in scan.partial] == ["teleop_1.partial"] and not scan.corrupt
    assert not (out / "teleop_1").exists()
    assert not is_complete_episode(scan.partial[0])
    with pytest.raises(EpisodeReadError, match="partial"):
        load_episode(scan.partial[0])


def test_sigterm_mid_episode_aborts_it_with_a_note(processes, ros, tmp_path) -> None:
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from conla_ros.episodes import topics as T
    from conla_ros.episodes.reader import list_episodes, scan_episodes
    from conla_ros.episodes.writer import ABORT_NOTE
    from conla_ros.ros.episode_status import EPISODE_STATUS_QOS

    out = tmp_path / "episodes"
    recorder = processes.start("recorder", "conla_ros.nodes.recorder_node", {"output_dir": str(out)})
    node = ros.node
    pubs = _publishers(node)
    states: list[dict] = []
    node.create_subscription(String, "/recorder_node/state", lambda m: states.append(json.loads(m.data)),
                             EPISODE_STATUS_QOS)
    ros.spin_until(lambda: pubs["camera"].get_subscription_count() >= 1 and states, what="the recorder",
                   pool=processes)
    assert ros.call(Trigger, "/recorder_node/start", Trigger.Request(), processes).success
    k = 0

    def written() -> bool:
        nonlocal k
        _step(node, pubs, k)
        k += 1
        ros.spin_for(0.0125)
        return bool(states) and states[-1]["counts"].get(T.CAMERA.name, 0) >= 3

    ros.spin_until(written, what="frames being recorded", pool=processes)
    recorder.send_signal(signal.SIGTERM)
    assert recorder.wait(timeout=15) == 0, processes.logs()
    assert list_episodes(out) == []
    [partial] = scan_episodes(out).partial
    assert "shut down mid-episode" in (partial / ABORT_NOTE).read_text()
