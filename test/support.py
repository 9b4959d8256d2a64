"""Helpers shared by tests in several folders (importable as `support`; see pytest.ini)."""

from __future__ import annotations

import subprocess


def run_checked(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result
