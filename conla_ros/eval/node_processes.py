"""Node processes started by a `conla` command (eval ros): started, watched, and always stopped.

Each node runs as `python -m MODULE --ros-args -p name:=value ...`, exactly as `ros2 run` would
start it, with stdout and stderr in a log file (a pipe nobody reads would fill up and block the
node). `NodeProcesses` is a context manager: leaving it by any path (normal end, an exception,
Ctrl-C) sends SIGINT to every node still running, then SIGKILL to any that has not exited a few
seconds later. A node that dies early is reported with the tail of its log.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["NodeDied", "NodeProcess", "NodeProcesses", "ros_args"]

_STOP_GRACE_S = 5.0  # SIGINT, then SIGKILL after this long
_LOG_TAIL_CHARS = 3000


class NodeDied(RuntimeError):
    """A node process exited while it was needed; the message holds its exit code and log tail."""


def ros_args(params: dict[str, Any]) -> list[str]:
    """`--ros-args -p k:=v ...` with values written as YAML (strings quoted, booleans lower-case)."""
    words = ["--ros-args"]
    for key, value in params.items():
        # A bare string such as 'reach' would be fine, but '{a}' or 'true' would not: always quote.
        text = json.dumps(value) if isinstance(value, (bool, str)) else repr(value)
        words += ["-p", f"{key}:={text}"]
    return words


class NodeProcess:
    """One node process logging to `log_path`."""

    def __init__(self, name: str, module: str, params: dict[str, Any], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.command = [sys.executable, "-m", module, *ros_args(params)]
        with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.process.poll() is None

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The end of the node's output (stderr and stdout), for an error message."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-chars:].rstrip() or "(no output)"

    def check(self) -> None:
        """Raise NodeDied, with the exit code and the log tail, if the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise NodeDied(f"{self.name} exited with code {code}; the end of its output:\n"
                           + "\n".join("    " + line for line in self.log_tail().splitlines()))

    def interrupt(self) -> None:
        """Send SIGINT (a clean ROS shutdown) if the process is still running."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def wait_or_kill(self, grace_s: float = _STOP_GRACE_S) -> None:
        """Wait up to `grace_s` for the process to exit, then SIGKILL it."""
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=_STOP_GRACE_S)


class NodeProcesses:
    """The node processes of one command, logs in a temporary folder; all stopped on exit."""

    def __init__(self) -> None:
        self._logs = tempfile.TemporaryDirectory(prefix="conla_nodes_")
        self.nodes: list[NodeProcess] = []

    def start(self, name: str, module: str, params: dict[str, Any]) -> NodeProcess:
        """Start `python -m module --ros-args -p ...` as node `name` (a label for messages and the log file)."""
        node = NodeProcess(name, module, params, Path(self._logs.name) / f"{name}.log")
        self.nodes.append(node)
        return node

    def check(self) -> None:
        """Raise NodeDied for the first node that has exited."""
        for node in self.nodes:
            node.check()

    def logs(self) -> str:
        """Every node's log tail, for a failure that is not a node's death (a timeout)."""
        return "\n".join(f"--- {node.name} ({'running' if node.running() else f'exit {node.process.poll()}'}) ---\n"
                         f"{node.log_tail()}" for node in self.nodes)

    def stop_all(self) -> None:
        """SIGINT every running node at once, then wait (SIGKILL after the grace period)."""
        for node in self.nodes:
            node.interrupt()
        deadline = time.monotonic() + _STOP_GRACE_S
        for node in self.nodes:
            node.wait_or_kill(grace_s=max(0.1, deadline - time.monotonic()))

    def __enter__(self) -> NodeProcesses:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            self.stop_all()
        finally:
            self._logs.cleanup()
