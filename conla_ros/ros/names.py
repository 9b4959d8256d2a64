"""ROS names of the interface: relative topic defaults, and the one absolute name (/diagnostics).

Every topic a conla_ros node uses is relative by default (`camera/image_raw`, not
`/camera/image_raw`), so the node's namespace applies to it: `namespace:=arm1` gives
`/arm1/camera/image_raw`, and two arms run side by side. In the root namespace the names resolve
to the ones of conla_ros.episodes.topics, which bags store. `/diagnostics` stays absolute, as the
diagnostic aggregator expects; a node puts its fully qualified name in each status name instead.
"""

from __future__ import annotations

__all__ = ["DIAGNOSTICS_TOPIC", "relative"]

DIAGNOSTICS_TOPIC = "/diagnostics"


def relative(name: str) -> str:
    """`name` without its leading slash: `/camera/image_raw` -> `camera/image_raw`."""
    return name.lstrip("/")
