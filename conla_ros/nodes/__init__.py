"""Thin rclpy nodes, one per module, each with a `main()` entry point."""

from __future__ import annotations

import sys

EXIT_NOT_AVAILABLE = 3


def not_available_yet(node: str, planned_in: str) -> int:
    """Say plainly that a node is not built yet, and return a non-zero exit code."""
    print(f"{node}: not available yet (planned in {planned_in}).", file=sys.stderr)
    return EXIT_NOT_AVAILABLE
