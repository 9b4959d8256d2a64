"""sim_arm_node: the simulated Meta-World arm behind the topics of a real arm with MoveIt Servo.

    ros2 run conla_ros sim_arm_node --ros-args --params-file config/sim_arm.yaml -p task:=push -p seed:=3

Publishes (relative names, so the node's namespace applies; every topic is a parameter):
- `camera/image_raw` sensor_msgs/Image rgb8, sensor-data QoS, at `camera_rate_hz`, frame
  `camera_color_optical_frame`, stamped with the node clock when the frame is taken;
- `joint_states` sensor_msgs/JointState (7 arm joints + 2 finger slides, `JOINT_NAMES`), every
  control tick, reliable (matches best-effort and reliable subscribers alike);
- `instruction` std_msgs/String, transient-local, on every reset (unless `publish_instruction` is
  false): the `instruction` parameter, or a paraphrase of the task drawn from the seed — held-out
  paraphrases for evaluation seeds (>= 1,000,000), training ones otherwise, as `conla eval sim` and
  `conla sim episodes` draw them;
- `episode_status` std_msgs/String JSON (conla_ros.ros.episode_status): task, seed, step,
  success, ... at `status_rate_hz` and at once on reset, first success and the step limit;
- `~/debug/privileged_state` std_msgs/Float64MultiArray, Meta-World's 39-D state, every control
  tick, only with `publish_privileged_state: true`: for the scripted teleoperator, never for a
  policy (a real arm has no such topic).

Subscribes: `servo_node/delta_twist_cmds` geometry_msgs/TwistStamped (linear = ee delta in
MoveIt Servo's unitless convention) and `gripper_controller/commands` std_msgs/Float64MultiArray
(one value, -1 open .. +1 closed), reliable. Commands are applied at `control_rate_hz`; when no
twist arrives for `command_timeout_s` the arm holds still (zero motion, gripper target kept), as
MoveIt Servo does. Malformed commands (non-finite values, a frame other than `command_frame_id`,
a gripper array not of length 1) are refused, counted in the status and logged at most every 2 s;
they never stop the node. See conla_ros.core.servo_input.

Service `~/reset` (std_srvs/Trigger): start a new episode at the `task` and `seed` parameters
(set them first: `ros2 param set /sim_arm_node task push`, or `set_parameters_atomically`;
conla_ros.ros.sim_arm_client does both). The reply's message is the new status JSON.

Time: the world runs in real time on a wall timer (one Meta-World step is 12.5 ms of simulated
time; at `control_rate_hz` below 80 each command is applied for several steps so the world keeps
real time). With `wait_for_first_command`, an episode's steps start at its first twist (until
then the arm holds still and publishes frames and joint states): a policy that takes seconds to
load loses no step of the episode. Stamps come from the node clock; the node publishes no /clock, because simulated
time and wall time advance together (the status reports the real-time factor and late ticks when
the machine cannot keep up). The episode goes on after success (a real arm does not freeze); with
`max_steps` > 0 the arm stops stepping at that many steps and reports `done`.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

if __name__ == "__main__":  # Ctrl-C or SIGTERM while the imports below still run: end quietly (run_node takes over)
    import signal

    for _sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_sig, lambda *_: sys.exit(0))

from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String
from std_srvs.srv import Trigger

from conla_ros.core.servo_input import CommandError, ServoInput, check_gripper, check_twist
from conla_ros.episodes import topics as T
from conla_ros.ros.episode_status import EPISODE_STATUS_QOS, EPISODE_STATUS_TOPIC, EpisodeStatus
from conla_ros.ros.image_conversions import numpy_to_image
from conla_ros.ros.names import relative
from conla_ros.ros.parameters import ParameterError, ParamSpec, check_parameter_update, declare_parameters, run_node
from conla_ros.ros.qos import CAMERA_QOS, COMMAND_QOS, INSTRUCTION_QOS

try:
    from conla_ros.sim.instructions import MT10_TASKS
    from conla_ros.sim.seeds import episode_instruction
    from conla_ros.sim.world import CONTROL_RATE_HZ, JOINT_NAMES, Observation, SimWorld, WorldConfig
except ImportError as error:  # metaworld / mujoco missing: say which extra brings them
    raise ImportError(f"sim_arm_node needs the 'sim' extra (pip install 'conla_ros[sim]'): {error}") from error

NODE_NAME = "sim_arm_node"
PRIVILEGED_STATE_TOPIC = "~/debug/privileged_state"
_UNLIMITED_STEPS = 10**9  # the world's own limit when max_steps is 0; the node enforces max_steps itself
_LOG_THROTTLE_S = 2.0

__all__ = ["PARAMETERS", "SimArmNode", "main"]


def _divides(rate: float, into: float) -> str | None:
    """Why `rate` Hz is not `into` / n for a whole n >= 1, or None if it is."""
    if not rate > 0 or not math.isfinite(rate):
        return "must be a positive rate"
    ratio = into / rate
    if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
        return f"must be {into:g} Hz divided by a whole number (e.g. {into:g}, {into / 2:g}, {into / 4:g})"
    return None


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("task", "reach", "MT10 task of the next reset", choices=MT10_TASKS, read_only=False),
    ParamSpec("seed", 0, "world seed of the next reset (>= 1000000: held-out evaluation scenes)", low=0,
              read_only=False),
    ParamSpec("domain", "robot", "look of the next episode: robot, or human (the domain-gap rendering)",
              choices=("robot", "human"), read_only=False),
    ParamSpec("max_steps", 0, "control steps after which the arm stops and the episode is done (0: no limit); "
              "applies from the next reset", low=0, read_only=False),
    ParamSpec("instruction", "", "instruction published on reset; empty: a paraphrase of the task drawn from "
              "the seed", read_only=False),
    ParamSpec("instruction_split", "auto", "paraphrases to draw from when instruction is empty: auto (heldout "
              "for seeds >= 1000000, else train), train or heldout", choices=("auto", "train", "heldout"),
              read_only=False),
    ParamSpec("publish_instruction", True, "publish the instruction (transient-local) on every reset"),
    ParamSpec("image_size", 64, "camera image height and width, pixels", low=8, high=2048),
    ParamSpec("control_rate_hz", CONTROL_RATE_HZ, "rate commands are applied at (80 Hz / n: each command then "
              "drives n 12.5 ms world steps, so the world keeps real time)",
              check=lambda v: _divides(v, CONTROL_RATE_HZ)),
    ParamSpec("camera_rate_hz", CONTROL_RATE_HZ, "camera frame rate (control_rate_hz / n); the default gives one "
              "frame per control step, as in the simulated training episodes",
              check=lambda v: _divides(v, CONTROL_RATE_HZ)),
    ParamSpec("status_rate_hz", 20.0, "episode status rate (control_rate_hz / n); a reset, the first success "
              "and the step limit are published at once besides", check=lambda v: _divides(v, CONTROL_RATE_HZ)),
    ParamSpec("command_timeout_s", 0.1, "hold still when no twist arrived for this long (MoveIt Servo's "
              "incoming_command_timeout)", low=0.001, high=60.0),
    ParamSpec("initial_gripper", -1.0, "gripper target after a reset (-1 open .. +1 closed)", low=-1.0, high=1.0),
    ParamSpec("command_frame_id", T.BASE_FRAME_ID, "frame twist commands must be expressed in (an empty frame id "
              "is taken to mean this one)"),
    ParamSpec("camera_frame_id", T.CAMERA_FRAME_ID, "frame id of the camera images"),
    ParamSpec("camera_topic", relative(T.CAMERA.name), "sensor_msgs/Image output"),
    ParamSpec("joint_states_topic", relative(T.JOINT_STATES.name), "sensor_msgs/JointState output"),
    ParamSpec("instruction_topic", relative(T.INSTRUCTION.name),
              "std_msgs/String instruction output (transient-local)"),
    ParamSpec("status_topic", EPISODE_STATUS_TOPIC, "std_msgs/String JSON episode status output"),
    ParamSpec("ee_twist_topic", relative(T.EE_TWIST.name), "geometry_msgs/TwistStamped end-effector command input"),
    ParamSpec("gripper_topic", relative(T.GRIPPER.name), "std_msgs/Float64MultiArray gripper command input"),
    ParamSpec("wait_for_first_command", False, "each episode's steps start at its first twist command: until then "
              "the arm holds still and counts no step, while publishing camera frames and joint states (so a "
              "policy that is still starting cannot lose steps of the episode)"),
    ParamSpec("publish_privileged_state", False, "publish Meta-World's 39-D state on privileged_state_topic "
              "(for the scripted teleoperator only)"),
    ParamSpec("privileged_state_topic", PRIVILEGED_STATE_TOPIC, "std_msgs/Float64MultiArray debug output"),
)
_RESET_PARAMETERS = ("task", "seed", "domain", "max_steps", "instruction", "instruction_split")


class SimArmNode(Node):
    """The simulated arm: camera, joint states and episode status out; twist and gripper commands in."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self._params = p
        self.add_on_set_parameters_callback(lambda params: check_parameter_update(PARAMETERS, params))
        self._substeps = round(CONTROL_RATE_HZ / p["control_rate_hz"])
        self._camera_every = self._ticks_per("camera_rate_hz")
        self._status_every = self._ticks_per("status_rate_hz")
        self._frames = (p["command_frame_id"], "")
        self._servo = ServoInput(timeout_s=p["command_timeout_s"], initial_gripper=p["initial_gripper"])
        self._world = SimWorld(WorldConfig(image_size=p["image_size"], max_steps=_UNLIMITED_STEPS))
        self._reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

        self._camera_pub = self.create_publisher(Image, p["camera_topic"], CAMERA_QOS)
        self._joints_pub = self.create_publisher(JointState, p["joint_states_topic"], self._reliable)
        self._instruction_pub = self.create_publisher(String, p["instruction_topic"], INSTRUCTION_QOS)
        self._status_pub = self.create_publisher(String, p["status_topic"], EPISODE_STATUS_QOS)
        self._state_pub = (self.create_publisher(Float64MultiArray, p["privileged_state_topic"], COMMAND_QOS)
                           if p["publish_privileged_state"] else None)
        self.create_subscription(TwistStamped, p["ee_twist_topic"], self._on_twist, COMMAND_QOS)
        self.create_subscription(Float64MultiArray, p["gripper_topic"], self._on_gripper, COMMAND_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset)

        self._obs: Observation | None = None
        self._episode = 0
        self._max_steps = 0
        self._instruction = ""
        self._domain = "robot"
        self._first_success: int | None = None
        self._fault = ""
        self._ticks = 0
        self._late_ticks = 0
        self._last_tick: float | None = None
        self._reset_wall = time.monotonic()
        self._waiting = False  # wait_for_first_command: no step until this episode's first twist
        self._reset_episode()  # a failure here (no GL, bad task) ends start-up with the reason
        self._timer = self.create_timer(self._substeps / CONTROL_RATE_HZ, self._tick)
        self.get_logger().info(
            f"simulated arm ready: {self._world.task} seed {self._world.seed}, control "
            f"{p['control_rate_hz']:g} Hz, camera {p['camera_rate_hz']:g} Hz, {p['image_size']} px")

    def _ticks_per(self, name: str) -> int:
        """Control ticks per event of the rate parameter `name`, which must divide control_rate_hz."""
        control, rate = self._params["control_rate_hz"], self._params[name]
        ticks = round(control / rate)
        if ticks < 1 or abs(control / rate - ticks) > 1e-6:
            raise ParameterError(f"{name}={rate:g} must be control_rate_hz={control:g} divided by a whole number")
        return ticks

    # --- episode ------------------------------------------------------------------------------

    def _reset_episode(self) -> EpisodeStatus:
        """Reset the world to the current reset parameters and announce the new episode."""
        values = {name: self.get_parameter(name).value for name in _RESET_PARAMETERS}
        task, seed = values["task"], int(values["seed"])
        self._obs = self._world.reset(task, seed, domain=values["domain"])
        self._servo.reset()
        self._episode += 1
        self._max_steps = int(values["max_steps"])
        self._domain = values["domain"]
        self._instruction = values["instruction"] or episode_instruction(task, seed, values["instruction_split"])
        self._first_success = 0 if self._obs.success else None
        self._fault = ""
        self._ticks, self._late_ticks, self._last_tick = 0, 0, None
        self._reset_wall = time.monotonic()
        self._waiting = bool(self._params["wait_for_first_command"])
        if self._params["publish_instruction"]:
            self._instruction_pub.publish(String(data=self._instruction))
        stamp = self.get_clock().now().to_msg()
        self._publish_camera(stamp)
        self._publish_joints(stamp)
        status = self._publish_status()
        self.get_logger().info(f"episode {self._episode}: {task} seed {seed}: {self._instruction!r}")
        return status

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            status = self._reset_episode()
        except Exception as error:  # a bad task/seed must not take the arm down: say why
            self.get_logger().error(f"reset failed: {error}")
            response.success, response.message = False, f"reset failed: {error}"
            return response
        response.success, response.message = True, status.to_json()
        return response

    def _limit_reached(self) -> bool:
        return self._max_steps > 0 and self._world.step_count >= self._max_steps

    # --- control loop -------------------------------------------------------------------------

    def _tick(self) -> None:
        """One control tick: apply the current command for `substeps` world steps, then publish."""
        now = time.monotonic()
        period = self._substeps / CONTROL_RATE_HZ
        if self._last_tick is not None and now - self._last_tick > 1.5 * period:
            self._late_ticks += 1  # the machine cannot keep real time: reported, not hidden
        self._last_tick = now
        if self._waiting:  # no command yet this episode: hold still, count nothing, keep the inputs coming
            self._ticks += 1
            stamp = self.get_clock().now().to_msg()
            self._publish_joints(stamp)
            if self._ticks % self._camera_every == 0:
                self._publish_camera(stamp)
            if self._ticks % self._status_every == 0:
                self._publish_status()
            return
        action = self._servo.action(now)
        succeeded_before = self._world.succeeded
        limit_before = self._limit_reached()
        for _ in range(self._substeps):
            if self._limit_reached() or self._fault:
                break
            try:
                self._obs = self._world.step(action)
            except Exception as error:  # a simulation error stops the arm, never the node: reset to go on
                self._fault = f"{type(error).__name__}: {error}"
                self.get_logger().error(f"simulation step failed, the arm stops until ~/reset: {self._fault}")
                self._publish_status()
                break
            if self._obs.success and self._first_success is None:
                self._first_success = self._obs.step
        self._ticks += 1
        stamp = self.get_clock().now().to_msg()
        self._publish_joints(stamp)
        if self._state_pub is not None and self._obs is not None:
            state = Float64MultiArray(data=self._obs.state.tolist())
            state.layout.dim = [MultiArrayDimension(label="metaworld_state", size=len(state.data), stride=1)]
            self._state_pub.publish(state)
        if self._ticks % self._camera_every == 0:
            self._publish_camera(stamp)
        news = (self._world.succeeded and not succeeded_before) or (self._limit_reached() and not limit_before)
        if news or self._ticks % self._status_every == 0:
            self._publish_status()

    def _publish_camera(self, stamp: Any) -> None:
        assert self._obs is not None
        self._camera_pub.publish(numpy_to_image(self._obs.image, T.IMAGE_ENCODING, stamp=stamp,
                                                frame_id=self._params["camera_frame_id"]))

    def _publish_joints(self, stamp: Any) -> None:
        assert self._obs is not None
        msg = JointState(name=list(JOINT_NAMES), position=self._obs.joint_positions.tolist())
        msg.header.stamp, msg.header.frame_id = stamp, T.JOINT_STATES_FRAME_ID
        self._joints_pub.publish(msg)

    def status(self) -> EpisodeStatus:
        """The current episode's status."""
        assert self._obs is not None
        steps = self._world.step_count
        wall = max(time.monotonic() - self._reset_wall, 1e-9)
        counters = dict(self._servo.counters, late_ticks=self._late_ticks)
        return EpisodeStatus(
            task=str(self._world.task), seed=self._world.seed, episode=self._episode, step=steps,
            success=self._world.succeeded, first_success_step=self._first_success, max_steps=self._max_steps,
            done=self._world.succeeded or self._limit_reached() or bool(self._fault), instruction=self._instruction,
            control_rate_hz=CONTROL_RATE_HZ, domain=self._domain,
            ee_position=[round(float(v), 6) for v in self._obs.ee_position], holding=self._servo.holding,
            stamp_ns=self.get_clock().now().nanoseconds, fault=self._fault,
            counters={**counters, "realtime_permille": round(1000 * steps / CONTROL_RATE_HZ / wall)})

    def _publish_status(self) -> EpisodeStatus:
        status = self.status()
        self._status_pub.publish(String(data=status.to_json()))
        return status

    # --- commands -----------------------------------------------------------------------------

    def _on_twist(self, msg: TwistStamped) -> None:
        try:
            linear, angular_dropped = check_twist(msg, self._frames)
        except CommandError as error:
            self._servo.reject()
            self.get_logger().warning(f"twist command refused ({self._servo.counters['rejected']} so far): {error}",
                                   throttle_duration_sec=_LOG_THROTTLE_S)
            return
        if angular_dropped:
            self._servo.counters["angular_ignored"] += 1
            self.get_logger().warning("twist.angular ignored: the simulated hand cannot rotate",
                                   throttle_duration_sec=_LOG_THROTTLE_S)
        if self._limit_reached():
            return  # the episode is over: the arm no longer moves
        if self._waiting:  # the episode starts now: its steps and real-time factor count from here
            self._waiting = False
            self._ticks, self._late_ticks, self._last_tick = 0, 0, None
            self._reset_wall = time.monotonic()
            self.get_logger().info(f"episode {self._episode}: first command, the episode starts")
        self._servo.set_twist(linear, time.monotonic())

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        try:
            value = check_gripper(msg)
        except CommandError as error:
            self._servo.reject()
            self.get_logger().warning(f"gripper command refused ({self._servo.counters['rejected']} so far): {error}",
                                   throttle_duration_sec=_LOG_THROTTLE_S)
            return
        self._servo.set_gripper(value, time.monotonic())

    def destroy_node(self) -> None:
        """Close the simulation (its GL context) with the node."""
        world = getattr(self, "_world", None)  # absent when start-up failed on a parameter
        if world is not None:
            world.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ros2 run conla_ros sim_arm_node`."""
    return run_node(SimArmNode, NODE_NAME, argv)

if __name__ == "__main__":
    sys.exit(main())

