"""The three launch files under the real `ros2 launch`, as a user runs them (test/launch/conftest.py picks the tooling).

Per launch file: the nodes come up with their (relative) topics; the params file is honoured (its
values stand where no argument is given); a namespace isolates the nodes; Ctrl-C (SIGINT to the
process group, as a terminal sends it) shuts down cleanly, with the stop command; a bad model_dir
gives a clear error and a non-zero exit. Each launch is synchronised on matched publishers and
subscriptions, never on a first message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fixtures.tiny_model import make_tiny_model
from launch.conftest import REPO, Ros2, find_ros2

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")


class Launch:
    """One `ros2 launch` in a process group of its own; its output goes to a file."""

    def __init__(self, ros2: Ros2, args: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(ros2.run_args("launch", "conla_ros", *args), env=ros2.env, cwd=REPO,
                                     stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"ros2 launch exited early with {self.proc.returncode}:\n{self.output()[-4000:]}")

    def interrupt(self, timeout_s: float = 30.0) -> int:
        """Ctrl-C in a terminal: SIGINT to the whole process group; the exit code."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"ros2 launch did not end within {timeout_s:.0f} s:\n{self.output()[-4000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._out.close()


@contextmanager
def launched(ros2: Ros2, tmp_path: Path, *args: str) -> Iterator[Launch]:
    launch = Launch(ros2, list(args), tmp_path / f"launch_{time.monotonic_ns()}.log")
    try:
        yield launch
    finally:
        launch.close()


@pytest.fixture
def client() -> Iterator:
    from integration.ros_harness import RosClient

    ros = RosClient("conla_launch_test")
    try:
        yield ros
    finally:
        ros.close()


def spin_until(client, launch: Launch, condition, what: str, timeout_s: float = 45.0, feed=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{launch.output()[-4000:]}")
        launch.check_alive()
        if feed is not None:
            feed()
        client.spin_for(0.03)


def _twist(msg) -> list[float]:
    return [msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z]


def test_policy_launch_params_file_namespace_and_ctrl_c_stop(ros2: Ros2, client, tmp_path: Path) -> None:
    """policy.launch.py with only params_file and namespace given: the file's model_dir, autostart and
    frame stand; every topic is under /arm1; Ctrl-C sends one zero twist and everything exits 0."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from conla_ros.ros.image_conversions import numpy_to_image
    from conla_ros.ros.qos import CAMERA_QOS, COMMAND_QOS, INSTRUCTION_QOS

    model = make_tiny_model(tmp_path / "tiny")
    params = tmp_path / "robot.yaml"
    params.write_text(json.dumps({"/**": {"ros__parameters": {
        "model_dir": str(model), "autostart": True, "control_rate_hz": 20.0, "twist_frame_id": "tool0",
        "stale_image_timeout": 5.0}}}))
    node = client.node
    camera = node.create_publisher(Image, "/arm1/camera/image_raw", CAMERA_QOS)
    instruction = node.create_publisher(String, "/arm1/instruction", INSTRUCTION_QOS)
    root_camera = node.create_publisher(Image, "/camera/image_raw", CAMERA_QOS)
    twists: list = []
    root_twists: list = []
    node.create_subscription(TwistStamped, "/arm1/servo_node/delta_twist_cmds", twists.append, COMMAND_QOS)
    node.create_subscription(TwistStamped, "/servo_node/delta_twist_cmds", root_twists.append, COMMAND_QOS)
    names: set[str] = set()
    node.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda m: names.update(s.name for s in m.status), 10)
    frame = numpy_to_image(np.full((24, 24, 3), 120, np.uint8))

    with launched(ros2, tmp_path, "policy.launch.py", f"params_file:={params}", "namespace:=arm1") as launch:
        spin_until(client, launch, lambda: camera.get_subscription_count() >= 1
                   and instruction.get_subscription_count() >= 1
                   and node.count_publishers("/arm1/servo_node/delta_twist_cmds") >= 1,
                   "policy_node's subscriptions and publisher under /arm1")
        assert root_camera.get_subscription_count() == 0, "the namespaced node listens on the root camera topic"
        instruction.publish(String(data="open the drawer"))
        spin_until(client, launch, lambda: len(twists) >= 10, "twists from the params file's autostart",
                   feed=lambda: camera.publish(frame))
        assert {m.header.frame_id for m in twists} == {"tool0"}  # the params file's twist_frame_id
        assert "/arm1/policy_node: policy" in names or client.spin_until(
            lambda: "/arm1/policy_node: policy" in names, what="the namespaced diagnostics status name") is None
        assert root_twists == []
        for _ in range(5):  # frames keep coming until the interrupt: commands are flowing when it lands
            camera.publish(frame)
            client.spin_for(0.03)
        code = launch.interrupt()
        client.spin_for(0.5)
        output = launch.output()
    assert code == 0, output[-4000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-4000:]
    assert "process has finished cleanly" in output, output[-4000:]
    moving = [i for i, m in enumerate(twists) if any(_twist(m))]
    assert moving, "no moving twist before the interrupt"
    after = [_twist(m) for m in twists[moving[-1] + 1:]]
    assert after == [[0.0, 0.0, 0.0]], f"after the last moving twist: {after} (expected one zero twist)"


def test_policy_launch_arguments_override_only_when_given(ros2: Ros2, client, tmp_path: Path) -> None:
    """output and autostart given on the command line win over the params file; a bad output names it."""
    model = make_tiny_model(tmp_path / "tiny")
    params = tmp_path / "robot.yaml"
    params.write_text(json.dumps({"/**": {"ros__parameters": {"model_dir": str(model), "output": "ee_twist"}}}))
    with launched(ros2, tmp_path, "policy.launch.py", f"params_file:={params}", "output:=joint_commands") as launch:
        code = launch.wait(60)
        output = launch.output()
    assert code != 0, output
    assert "output=joint_commands needs a joint-space model" in output, output[-3000:]
    assert "policy_node exited with code 2" in output


@pytest.mark.parametrize("launch_file", ["policy.launch.py", "sim_demo.launch.py"])
def test_bad_model_dir_gives_a_clear_error_and_a_non_zero_exit(ros2: Ros2, tmp_path: Path, launch_file: str) -> None:
    if launch_file == "sim_demo.launch.py":
        pytest.importorskip("conla_ros.sim.world", reason="sim_demo.launch.py needs the 'sim' extra")
    missing = tmp_path / "no_such_model"
    with launched(ros2, tmp_path, launch_file, f"model_dir:={missing}") as launch:
        code = launch.wait(90)
        output = launch.output()
    assert code != 0, output[-3000:]
    assert f"{missing}" in output and "model directory not found" in output, output[-3000:]
    assert "policy_node exited with code 1" in output and "Traceback" not in output


def test_sim_demo_namespace_no_race_and_ctrl_c(ros2: Ros2, client, tmp_path: Path) -> None:
    """sim_demo.launch.py in a namespace: both nodes under /sim1, the episode's first step after the
    policy's first command, and Ctrl-C ends both with exit 0."""
    pytest.importorskip("conla_ros.sim.world", reason="sim_demo.launch.py needs the 'sim' extra")
    from std_msgs.msg import String

    from conla_ros.ros.episode_status import EPISODE_STATUS_QOS

    statuses: list[dict] = []
    client.node.create_subscription(String, "/sim1/episode_status", lambda m: statuses.append(json.loads(m.data)),
                                    EPISODE_STATUS_QOS)
    model = make_tiny_model(tmp_path / "tiny")
    with launched(ros2, tmp_path, "sim_demo.launch.py", f"model_dir:={model}", "namespace:=sim1",
                  "max_steps:=60") as launch:
        spin_until(client, launch, lambda: bool(statuses) and statuses[-1]["step"] >= 20,
                   "the arm stepping under /sim1", timeout_s=90)
        status = statuses[-1]
        assert status["counters"]["twists"] >= 1
        # No race: the steps began with the first command, so nearly every step had one.
        assert status["counters"]["twists"] >= 0.5 * status["step"], status
        assert client.node.count_publishers("/sim1/servo_node/delta_twist_cmds") == 1
        assert client.node.count_publishers("/servo_node/delta_twist_cmds") == 0
        code = launch.interrupt()
        output = launch.output()
    assert code == 0, output[-4000:]
    assert "Traceback" not in output and output.count("process has finished cleanly") == 2, output[-4000:]


def test_record_launch_falls_back_to_recorder_node_and_rosbag2_alone_fails(ros2: Ros2, client, tmp_path) -> None:
    from std_srvs.srv import Trigger

    if subprocess.run(ros2.run_args("bag", "--help"), env=ros2.env, capture_output=True).returncode == 0:
        pytest.skip("rosbag2 is installed: the fallback is not exercised")
    with launched(ros2, tmp_path, "record.launch.py", "backend:=rosbag2") as launch:
        code = launch.wait(60)
        output = launch.output()
    assert code != 0 and "backend:=rosbag2 needs rosbag2" in output, output[-3000:]

    out_dir = tmp_path / "episodes"
    with launched(ros2, tmp_path, "record.launch.py", f"output_dir:={out_dir}", "namespace:=rec1") as launch:
        reply = _call(client, launch, Trigger, "/rec1/recorder_node/start")
        assert reply.success, reply.message
        assert client.node.count_publishers("/rec1/recorder_node/state") == 1
        code = launch.interrupt()
        output = launch.output()
    assert "recording with recorder_node" in output
    assert code == 0 and "Traceback" not in output, output[-3000:]


def _call(client, launch: Launch, srv_type, name: str):
    service = client.node.create_client(srv_type, name)
    spin_until(client, launch, service.service_is_ready, f"service {name}")
    future = service.call_async(srv_type.Request())
    spin_until(client, launch, future.done, f"the reply of {name}")
    return future.result()


def test_launch_testing_runs_policy_launch_for_real(tmp_path: Path) -> None:
    """test/launch/launch_testing_policy.py under launch_testing's own runner (`launch_test`)."""
    found = find_ros2()
    if isinstance(found, str):
        pytest.skip(found)
    env = dict(found.env)
    if "ROS2_PYTHON" not in env:  # a sourced ROS 2: its launch_testing is importable already
        env.setdefault("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "test"), env.get("PYTHONPATH", "")) if p)
    result = subprocess.run([sys.executable, "-c", "import sys; from launch_testing.launch_test import main; "
                             "sys.argv[0] = 'launch_test'; sys.exit(main())",
                             str(REPO / "test/launch/launch_testing_policy.py")],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "FAILED" not in output and "OK" in output, output[-4000:]
