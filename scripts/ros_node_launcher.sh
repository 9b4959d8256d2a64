#!/bin/sh
# What `ros2 run conla_ros <node>` and launch_ros execute from <prefix>/lib/conla_ros/.
# pip puts console scripts in <prefix>/bin, where ROS does not look, so setup.py installs this
# one file under each node's name; the node to run is the name it was called by.
node=$(basename "$0")
prefix=$(cd "$(dirname "$0")/../.." && pwd)
python="$prefix/bin/python3"
# A colcon install has no bin/python3 of its own: use the sourced ROS 2 Python.
[ -x "$python" ] || python=python3
exec "$python" -m "conla_ros.nodes.$node" "$@"
