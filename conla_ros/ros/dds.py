"""DDS settings that camera images need (see config/fastdds_large_images.xml)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_NAME = "fastdds_large_images.xml"


def large_image_profile() -> Path | None:
    """The shipped Fast DDS profile for large images: installed copy first, then the source tree."""
    candidates = [
        Path(sys.prefix) / "share/conla_ros/config" / PROFILE_NAME,  # pip install
        Path(__file__).resolve().parents[2] / "config" / PROFILE_NAME,  # source tree / editable
    ]
    prefixes = os.environ.get("AMENT_PREFIX_PATH", "")
    candidates += [Path(p) / "share/conla_ros/config" / PROFILE_NAME for p in prefixes.split(os.pathsep) if p]
    return next((path for path in candidates if path.is_file()), None)


def use_large_image_profile() -> str:
    """Point Fast DDS at the large-image profile unless the user chose a profile; say what is used.

    Must run before rclpy is initialised in this process; processes started later inherit it.
    """
    if os.environ.get(PROFILE_ENV):
        return f"Fast DDS profile from {PROFILE_ENV}={os.environ[PROFILE_ENV]}"
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        return f"RMW {os.environ['RMW_IMPLEMENTATION']} (no Fast DDS profile needed)"
    profile = large_image_profile()
    if profile is None:
        return "Fast DDS defaults (large-image profile not found: 640x480 frames may be dropped)"
    os.environ[PROFILE_ENV] = str(profile)
    return f"Fast DDS large-image profile ({PROFILE_NAME}: 16 MiB shared-memory segment)"
