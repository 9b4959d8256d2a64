"""conla_ros.ros.policy_io: frame checks by reason, output layouts, and the messages of each mode."""

from __future__ import annotations

import types

import numpy as np
import pytest

from conla_ros.core.safety import InputRejected
from conla_ros.ros.policy_io import OutputLayout, check_compressed, check_image, plan_output


def _image(**fields):
    base = {"height": 4, "width": 4, "encoding": "rgb8", "step": 12, "data": bytes(48)}
    return types.SimpleNamespace(**{**base, **fields})


@pytest.mark.parametrize(("fields", "reason"), [
    ({}, None), ({"step": 16, "data": bytes(64)}, None), ({"encoding": "bayer_rggb8"}, "image_encoding"),
    ({"height": 0}, "image_empty"), ({"width": -1}, "image_empty"), ({"height": 4.5}, "image_field"),
    ({"step": 8}, "image_step"), ({"data": bytes(47)}, "image_truncated"), ({"height": 5000, "width": 5000},
                                                                           "image_too_large"),
])
def test_check_image_by_reason(fields, reason) -> None:
    if reason is None:
        check_image(_image(**fields), max_pixels=10**6)
        return
    with pytest.raises(InputRejected) as info:
        check_image(_image(**fields), max_pixels=10**6)
    assert info.value.reason == reason


def test_check_compressed_by_reason() -> None:
    check_compressed(types.SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=b"x"), max_bytes=10)
    for msg, reason in ((types.SimpleNamespace(format="h264", data=b"x"), "image_format"),
                        (types.SimpleNamespace(format="png", data=b""), "image_empty"),
                        (types.SimpleNamespace(format="png", data=bytes(11)), "image_too_large")):
        with pytest.raises(InputRejected) as info:
            check_compressed(msg, max_bytes=10)
        assert info.value.reason == reason


def test_output_layouts_and_refusals() -> None:
    layout = plan_output("ee_twist", "ee_delta", ("dx", "dy", "dz", "gripper"), "gripper")
    assert layout == OutputLayout("ee_twist", "ee_delta", (0, 1, 2), 3, (), velocity_like=True)
    layout = plan_output("joint_commands", "joint_velocity", ("a", "g", "b"), "g", ["j1", "j2"])
    assert layout.arm == (0, 2) and layout.gripper == 1 and layout.velocity_like and layout.joint_names == ("j1", "j2")
    assert plan_output("joint_trajectory", "joint_position", ("a", "b"), None).joint_names == ("a", "b")
    for args, words in ((("ee_twist", "joint_position", ("a",), None), "ee_delta"),
                        (("ee_twist", "ee_delta", ("dx", "dy"), None), "3 \\(linear\\) or 6"),
                        (("joint_commands", "ee_delta", ("a",), None), "joint-space"),
                        (("joint_commands", "joint_position", ("a", "b"), None, ["x"]), "1 names"),
                        (("joint_commands", "joint_position", ("a", "b"), None, ["x", "x"]), "distinct"),
                        (("cartesian", "ee_delta", ("a",), None), "must be one of")):
        with pytest.raises(ValueError, match=words):
            plan_output(*args)


def test_messages_of_each_mode() -> None:
    rclpy = pytest.importorskip("rclpy")
    from conla_ros.ros.policy_io import CommandOutput

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("policy_io_test", context=context)
    try:
        sent: list = []
        twist = CommandOutput(node, plan_output("ee_twist", "ee_delta", ("dx", "dy", "dz", "g"), "g"),
                              topic="/t", gripper_topic="/g", qos=1, frame_id="tool0", period_s=0.05)
        twist.publisher.publish = sent.append
        twist.gripper_publisher.publish = sent.append
        twist.publish(np.array([0.1, 0.2, 0.3, -1.0]))
        assert sent[0].header.frame_id == "tool0" and sent[0].twist.linear.z == 0.3 and list(sent[1].data) == [-1.0]
        assert twist.publish_stop() and sent[2].twist.linear.x == 0.0 and len(sent) == 3  # no gripper on stop
        layout = plan_output("joint_trajectory", "joint_position", ("a", "b", "g"), "g", ["j1", "j2"])
        traj = CommandOutput(node, layout, topic="/jt", gripper_topic="/g2", qos=1, frame_id="", period_s=0.05)
        traj.publisher.publish = sent.append
        traj.gripper_publisher.publish = sent.append
        traj.publish(np.array([0.1, 0.2, 1.0]), np.array([[0.1, 0.2, 1.0], [0.15, 0.25, 1.0]]))
        msg = sent[3]
        assert msg.joint_names == ["j1", "j2"] and len(msg.points) == 2
        assert list(msg.points[1].positions) == [0.15, 0.25] and msg.points[1].time_from_start.nanosec == 100_000_000
        assert traj.publish_stop() and sent[-1].points == []  # no position known: the controller holds
        assert traj.publish_stop(np.array([0.3, -0.1, np.nan]))  # the current position, held
        assert len(sent[-1].points) == 1 and list(sent[-1].points[0].positions) == [0.3, -0.1]
        velocity = CommandOutput(node, plan_output("joint_trajectory", "joint_velocity", ("a", "b"), None),
                                 topic="/jv", gripper_topic="/g4", qos=1, frame_id="", period_s=0.05)
        velocity.publisher.publish = sent.append
        assert velocity.publish_stop() and list(sent[-1].points[0].velocities) == [0.0, 0.0]
        position = CommandOutput(node, plan_output("joint_commands", "joint_position", ("a",), None),
                                 topic="/c", gripper_topic="/g3", qos=1, frame_id="", period_s=0.05)
        assert position.gripper_publisher is None and not position.publish_stop()  # nothing known to hold
        position.publisher.publish = sent.append
        assert position.publish_stop(np.array([0.7])) and list(sent[-1].data) == [0.7]  # hold where it is
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
