"""Robot episodes as rosbag2: topic contract, atomic writer, reader (no ROS install needed).

The writer needs the `rosbags` package (extras `record`, `sim`, `training`); importing this package
alone does not, so the topic constants are usable everywhere.
"""

from __future__ import annotations

from conla_ros.episodes import topics

__all__ = ["topics"]
