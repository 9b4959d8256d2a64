"""QoS profiles of the ROS interface (docs/architecture.md), defined once for every node and test."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# Cameras: best effort, keep only the newest frames (what image drivers publish with).
CAMERA_QOS: QoSProfile = qos_profile_sensor_data

# Instructions: reliable and transient-local, so a node started late still gets the last one.
INSTRUCTION_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

# Commands to controllers: reliable, shallow (a stale command is worse than none).
COMMAND_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
