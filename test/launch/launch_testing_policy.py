"""policy.launch.py under launch_testing (run by test_launch_files.py with `launch_test`, not collected by pytest).

Starts the launch file with a tiny model directory and autostart, checks that the node comes up and
reports itself on /diagnostics (fully qualified status name), then that it exits 0 after the
launch's own shutdown (SIGINT).
"""

from __future__ import annotations

import tempfile
import time
import unittest
from pathlib import Path

import launch_testing.actions
import launch_testing.asserts
from fixtures.tiny_model import make_tiny_model
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

import launch

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "policy.launch.py"


def generate_test_description():
    model = make_tiny_model(Path(tempfile.mkdtemp(prefix="conla_launch_")) / "tiny")
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"model_dir": str(model), "autostart": "true"}.items())
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
            while not any(s.name == "/policy_node: policy" for m in seen for s in m.status):
                self.assertLess(time.monotonic(), deadline, "no /diagnostics from /policy_node within 30 s")
                rclpy.spin_once(node, timeout_sec=0.1)
            status = next(s for m in seen for s in m.status if s.name == "/policy_node: policy")
            self.assertEqual(status.hardware_id, "tiny")
        finally:
            node.destroy_node()
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0])
