"""Helpers for tests that run nodes as separate processes and talk to them over DDS on loopback.

Import as `integration.ros_harness` (pytest.ini puts test/ on the path).

Every wait is "spin until a condition holds or a deadline passes" — on matched publishers and
subscriptions, on a service being available, on a message having arrived — never a bare sleep.
Child processes are killed at teardown whatever happened, and their logs are attached to the
failure message of a test that asserts on them (`ProcessPool.logs()`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DISCOVERY_TIMEOUT_S = 30.0  # DDS discovery on loopback sometimes takes ~3 s; a busy machine more


class ProcessPool:
    """Node processes started by a test, each logging to a file; all killed at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, module: str, params: dict[str, Any] | None = None,
              params_file: Path | None = None) -> subprocess.Popen:
        """Start `python -m module --ros-args [--params-file F] -p k:=v ...`."""
        command = [sys.executable, "-m", module, "--ros-args"]
        if params_file is not None:
            command += ["--params-file", str(params_file)]
        for key, value in (params or {}).items():
            # Values are YAML: quote strings ('{task}' would be a mapping), lower-case bools.
            text = json.dumps(value) if isinstance(value, (bool, str)) else str(value)
            command += ["-p", f"{key}:={text}"]
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        log.close()  # the child holds its own copy
        self.processes[name] = process
        return process

    def logs(self) -> str:
        """Every process's log, for a failure message."""
        return "\n".join(f"--- {name} (exit {p.poll()}) ---\n{(self.log_dir / f'{name}.log').read_text()[-3000:]}"
                         for name, p in self.processes.items())

    def check_alive(self) -> None:
        """Fail at once, with the logs, if a node process has exited."""
        dead = [name for name, p in self.processes.items() if p.poll() is not None]
        assert not dead, f"node process(es) {dead} exited:\n{self.logs()}"

    def stop_all(self) -> None:
        """SIGINT each process (a clean shutdown), then SIGKILL what is still running after a few seconds."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 5.0
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


class RosClient:
    """A node in a context of its own in the test process, with spin-until helpers."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, condition: Callable[[], bool], timeout_s: float = DISCOVERY_TIMEOUT_S,
                   what: str = "condition", pool: ProcessPool | None = None) -> None:
        """Spin until `condition()` is true; fail naming `what` (with the node logs) at the deadline."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                logs = pool.logs() if pool is not None else ""
                pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")
            if pool is not None:
                pool.check_alive()
            self.executor.spin_once(timeout_sec=0.02)

    def spin_for(self, seconds: float) -> None:
        """Spin (processing callbacks) for `seconds`: for observing that something does NOT change."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def call(self, srv_type: Any, name: str, request: Any, pool: ProcessPool | None = None,
             timeout_s: float = DISCOVERY_TIMEOUT_S) -> Any:
        """Call a service once it is available; return the response."""
        client = self.node.create_client(srv_type, name)
        try:
            self.spin_until(client.service_is_ready, timeout_s, f"service {name}", pool)
            future = client.call_async(request)
            self.spin_until(future.done, timeout_s, f"the reply of {name}", pool)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
