"""recorder_node: the teleop episode recorder.

Not built yet (the closed-loop ROS issue builds it); the executable exists so that the installed layout,
`ros2 run conla_ros recorder_node` and the launch files can already be checked.
"""

from __future__ import annotations

import sys

from conla_ros.nodes import not_available_yet


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ros2 run conla_ros recorder_node`."""
    return not_available_yet("recorder_node", "the closed-loop ROS issue")


if __name__ == "__main__":
    sys.exit(main())
