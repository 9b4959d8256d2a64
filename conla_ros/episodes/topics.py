"""Topic names, message types, frame ids and dict keys of a robot episode, defined once.

These are the defaults of the ROS interface (docs/architecture.md). The episode writer, the reader, the simulated
arm, the recorder and the policy node all take their names from here, so a bag recorded on the
robot and one made by the simulator cannot differ in a name. Plain constants only: importing this
module needs neither ROS nor rosbags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

QosKind = Literal["sensor_data", "transient_local", "command", "default"]


@dataclass(frozen=True)
class TopicSpec:
    """One topic of an episode: its default name, ROS 2 message type and the QoS it is published with."""

    name: str
    msgtype: str  # rosbags / ROS 2 spelling, e.g. "sensor_msgs/msg/Image"
    qos: QosKind


CAMERA = TopicSpec("/camera/image_raw", "sensor_msgs/msg/Image", "sensor_data")
JOINT_STATES = TopicSpec("/joint_states", "sensor_msgs/msg/JointState", "sensor_data")
INSTRUCTION = TopicSpec("/instruction", "std_msgs/msg/String", "transient_local")
EE_TWIST = TopicSpec("/servo_node/delta_twist_cmds", "geometry_msgs/msg/TwistStamped", "command")
GRIPPER = TopicSpec("/gripper_controller/commands", "std_msgs/msg/Float64MultiArray", "command")
# Joint-space commands: one position per joint (ros2_control's forward_command_controller, configured
# as a position controller). Float64MultiArray carries no names: the episode's metadata names the
# joints (META_ACTION), in the order of the values.
JOINT_COMMANDS = TopicSpec("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray", "command")

# Every topic an end-effector episode holds, in a stable order (the order connections are added to a bag).
EPISODE_TOPICS: tuple[TopicSpec, ...] = (CAMERA, JOINT_STATES, INSTRUCTION, EE_TWIST, GRIPPER)
# The topics of a joint-space episode (GRIPPER only when its action has a gripper dimension).
JOINT_EPISODE_TOPICS: tuple[TopicSpec, ...] = (CAMERA, JOINT_STATES, INSTRUCTION, JOINT_COMMANDS, GRIPPER)
# The command topic of each action kind. Which of them a bag holds says what kind of episode it is.
COMMAND_TOPICS: dict[str, TopicSpec] = {"ee_delta": EE_TWIST, "joint_position": JOINT_COMMANDS}

# Frame ids. The camera frame follows REP 103's optical-frame naming; end-effector twists are
# expressed in the arm's base frame, as MoveIt Servo's `robot_link_command_frame` usually is.
CAMERA_FRAME_ID = "camera_color_optical_frame"
BASE_FRAME_ID = "base_link"
JOINT_STATES_FRAME_ID = ""  # joint_state_publisher leaves it empty; so does every arm driver we know
IMAGE_ENCODING = "rgb8"

# The action of the arm, as recorded: an end-effector delta (linear x, y, z) and a gripper command.
# Twist.linear carries the delta in MoveIt Servo's "unitless" convention: each component in
# [-1, 1], scaled by the servo (or, in simulation, by Meta-World's action_scale of 1 cm per control
# step) into a motion. Twist.angular is zero: the Meta-World arm does not rotate its hand.
# The gripper command is one value in [-1, 1]: -1 opens, +1 closes (Meta-World's convention).
ACTION_DIM = 4
ACTION_NAMES: tuple[str, ...] = ("ee_dx", "ee_dy", "ee_dz", "gripper")
ACTION_UNITS: tuple[str, ...] = ("cm/step", "cm/step", "cm/step", "1")  # 1 unitless = 1 cm per step in sim
GRIPPER_NAME = "gripper"  # the gripper dimension's name, in either action kind

# Metadata keys of an episode (rosbag2 `custom_data`, see conla_ros.episodes.writer).
CUSTOM_DATA_KEY = "conla_ros.episode"  # the one custom_data entry; its value is a JSON object
META_FORMAT = "format"  # version of this metadata layout
META_TASK = "task"
META_SEED = "seed"
META_INSTRUCTION = "instruction"
META_SUCCESS = "success"
META_LENGTH = "length"  # number of commands (control steps) in the episode
META_CONTROL_RATE_HZ = "control_rate_hz"
META_DOMAIN = "domain"
META_SOURCE = "source"  # "sim" (generated) or "teleop" (recorded on a robot or the sim arm node)
META_IMAGE_SIZE = "image_size"  # [height, width]
META_COUNTS = "message_counts"  # topic name -> message count, as the bag's metadata.yaml has them
META_GENERATOR = "generator"  # settings that made the episode (generation only), for resume checks
META_ACTION = "action"  # the action contract (conla_ros.episodes.contract.ActionContract.to_dict)
METADATA_FORMAT_VERSION = 1

# Suffix of an episode directory that is being written (or whose writer died). Never a dataset entry.
PARTIAL_SUFFIX = ".partial"
