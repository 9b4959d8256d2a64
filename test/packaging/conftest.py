"""Fixtures for the install-layout tests: a clean copy of the package sources."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# What a build must never see: environments, build outputs, caches, generated data.
_IGNORED = shutil.ignore_patterns(".venv", ".git", "build", "install", "log", "__pycache__",
                                  "*.egg-info", ".pytest_cache", ".ruff_cache", ".hypothesis",
                                  "data", "runs", "outputs")


@pytest.fixture
def package_source(tmp_path: Path, repo_root: Path) -> Path:
    """A copy of the package as a fresh clone would have it, at <tmp>/src/conla_ros."""
    target = tmp_path / "src" / "conla_ros"
    shutil.copytree(repo_root, target, ignore=_IGNORED, symlinks=True)
    return target

