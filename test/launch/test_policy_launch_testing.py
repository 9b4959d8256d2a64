"""policy.launch.py under real launch_testing, where launch_ros is installed (a sourced ROS 2, colcon test).

Skips cleanly here: launch, launch_ros and launch_testing are not on PyPI. Starts the launch file
with a tiny model directory and autostart, and checks that the node comes up and reports itself
on /diagnostics, then that it shuts down cleanly.
"""

from __future__ import annotations

import os
import tempfile
import time
import unittest
from pathlib import Path

import pytest

pytest.importorskip("launch_ros", reason="launch_ros is not installed (not on PyPI; source a ROS 2 install)")
pytest.importorskip("launch_testing", reason="launch_testing is not installed (not on PyPI)")
import launch_testing.actions
import launch_testing.asserts
from fixtures.tiny_model import make_tiny_model
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

import launch

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "policy.launch.py"


@pytest.mark.launch_test
def generate_test_description():
    model = make_tiny_model(Path(tempfile.mkdtemp(prefix="conla_launch_")) / "tiny")
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"model_dir": str(model), "output": "ee_twist", "autostart": "true"}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestPolicyNodeComesUp(unittest.TestCase):
    def test_reports_on_diagnostics(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        rclpy.init()
        node = rclpy.create_node("policy_launch_test")
        seen: list[DiagnosticArray] = []
        node.create_subscription(DiagnosticArray, "/diagnostics", seen.append, 10)
        try:
            deadline = time.monotonic() + 30.0
            while not any(s.name.startswith("policy_node") for m in seen for s in m.status):
                self.assertLess(time.monotonic(), deadline, "no /diagnostics from policy_node within 30 s")
                rclpy.spin_once(node, timeout_sec=0.1)
            status = next(s for m in seen for s in m.status if s.name.startswith("policy_node"))
            self.assertEqual(status.hardware_id, "tiny")
        finally:
            node.destroy_node()
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])


os.environ.setdefault("PYTHONUNBUFFERED", "1")
