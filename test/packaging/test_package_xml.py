"""package.xml follows the ROS package format 3 conventions for an ament_python package."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


def test_package_xml_declares_ament_python_and_runtime_dependencies(repo_root: Path) -> None:
    root = ET.parse(repo_root / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "conla_ros"
    assert root.findtext("export/build_type") == "ament_python"
    exec_depends = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "trajectory_msgs",
            "diagnostic_msgs", "std_srvs"} <= exec_depends
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}


def test_setup_py_version_matches_package_xml(repo_root: Path) -> None:
    xml_version = ET.parse(repo_root / "package.xml").getroot().findtext("version")
    assert f'version="{xml_version}"' in (repo_root / "setup.py").read_text()
    assert (repo_root / "resource/conla_ros").is_file()
