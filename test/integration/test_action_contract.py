"""The typed action contract round-trips: episodes → dataset → checkpoint → model.yaml → policy_node.

For each action kind a tiny policy is trained for two steps on three tiny episodes, exported, and
run by policy_node as a separate process: joint-position episodes give a joint_position model.yaml
(the episodes' joint names and units) that drives `output: joint_commands` with one
Float64MultiArray value per joint; end-effector episodes give an ee_delta model.yaml that drives
`output: ee_twist`. Nothing on the way is told the kind: it travels with the data.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fixtures.tiny_episodes import INSTRUCTION, JOINT_STATE_NAMES, write_tiny_episode
from fixtures.tiny_model import write_tiny_text_encoder
from integration.ros_harness import REPO, ProcessPool, RosClient

from conla_ros.core.model_spec import load_model_spec
from conla_ros.episodes import topics as T
from conla_ros.episodes.contract import EE_DELTA, ActionContract, joint_position_contract

pytestmark = pytest.mark.ros

RATE_HZ = 20.0  # the episodes' rate: model.yaml must say it, and the node runs at it


def _train_and_export(root: Path, action: ActionContract) -> tuple[Path, dict]:
    """Three tiny episodes of `action` → a 2-step tiny policy → an exported model directory."""
    pytest.importorskip("torch")
    from conla_training.commands.train_policy import main as policy_main
    from conla_training.exports.policy import export_policy
    from conla_training.trainers.vla import load_vla

    episodes = root / "episodes"
    for i in range(3):
        write_tiny_episode(episodes / f"ep_{i}", action, seed=i, control_rate_hz=RATE_HZ)
    encoder = write_tiny_text_encoder(root / "encoder")
    run = root / "run"
    assert policy_main(["--config", str(REPO / "config" / "policy_train_tiny.yaml"), "--run-dir", str(run),
                        "--set", f"data.root={episodes}", "--set", f"data.text_encoder={encoder}",
                        "--set", "train.steps=2", "--set", "use_proprio=true"]) == 0
    _, payload = load_vla(run)
    model = root / "model"
    export_policy(run, model, parity_samples=1)
    return model, payload["extra"]["contract"]


def _run_node(processes: ProcessPool, ros: RosClient, model: Path, output: str, cmd_type, cmd_topic: str,
              count: int = 8, **params) -> tuple[list, list]:
    """Start policy_node on `model`, feed camera, instruction and joint states; the first `count` commands."""
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String

    from conla_ros.ros.image_conversions import numpy_to_image
    from conla_ros.ros.qos import CAMERA_QOS, COMMAND_QOS, INSTRUCTION_QOS

    node = ros.node
    camera = node.create_publisher(Image, T.CAMERA.name, CAMERA_QOS)
    instruction = node.create_publisher(String, T.INSTRUCTION.name, INSTRUCTION_QOS)
    joints = node.create_publisher(JointState, T.JOINT_STATES.name, 10)
    commands, grippers = [], []
    node.create_subscription(cmd_type, cmd_topic, commands.append, COMMAND_QOS)
    node.create_subscription(Float64MultiArray, T.GRIPPER.name, grippers.append, COMMAND_QOS)
    instruction.publish(String(data=INSTRUCTION))  # transient-local: the node gets it when it starts
    processes.start("policy", "conla_ros.nodes.policy_node",
                    {"model_dir": str(model), "output": output, "autostart": True, **params})
    state = JointState(name=list(JOINT_STATE_NAMES), position=[0.1, 0.2, 0.3])
    deadline = time.monotonic() + 60.0
    k = 0
    while len(commands) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"no {count} {output} commands within 60 s (got {len(commands)})\n{processes.logs()}")
        processes.check_alive()
        state.header.stamp = node.get_clock().now().to_msg()
        joints.publish(state)
        image = np.full((24, 24, 3), (40 * k) % 256, np.uint8)
        camera.publish(numpy_to_image(image, "rgb8", stamp=node.get_clock().now().to_msg()))
        ros.spin_for(0.033)
        k += 1
    return commands, grippers


def test_joint_space_episodes_export_a_joint_model_that_drives_joint_commands(processes, ros, tmp_path):
    from std_msgs.msg import Float64MultiArray

    action = joint_position_contract(JOINT_STATE_NAMES, gripper=True)  # the arm's own joints, + the gripper
    model, contract = _train_and_export(tmp_path, action)
    spec = load_model_spec(model)
    space = spec.action_space
    assert space.kind == "joint_position" == contract["action"]["kind"]
    assert space.names == ("shoulder", "elbow", "wrist", "gripper") and space.gripper == "gripper"
    assert space.units == ("rad", "rad", "rad", "1")
    assert spec.control_rate_hz == RATE_HZ and spec.proprio.names == JOINT_STATE_NAMES

    topic = "/forward_position_controller/commands"
    commands, grippers = _run_node(processes, ros, model, "joint_commands", Float64MultiArray, topic,
                                   joint_commands_topic=topic)
    values = np.array([m.data for m in commands])
    assert values.shape[1] == 3 and np.isfinite(values).all()  # one value per joint, the gripper apart
    assert grippers and all(len(m.data) == 1 for m in grippers)


def test_ee_episodes_export_an_ee_model_that_drives_ee_twist(processes, ros, tmp_path):
    from geometry_msgs.msg import TwistStamped

    model, contract = _train_and_export(tmp_path, EE_DELTA)
    spec = load_model_spec(model)
    space = spec.action_space
    assert space.kind == "ee_delta" == contract["action"]["kind"]
    assert space.names == T.ACTION_NAMES and space.units == T.ACTION_UNITS and space.gripper == "gripper"
    assert spec.control_rate_hz == RATE_HZ and spec.proprio.names == JOINT_STATE_NAMES

    commands, grippers = _run_node(processes, ros, model, "ee_twist", TwistStamped, T.EE_TWIST.name)
    twists = np.array([[m.twist.linear.x, m.twist.linear.y, m.twist.linear.z] for m in commands])
    assert np.isfinite(twists).all() and grippers
