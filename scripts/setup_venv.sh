#!/usr/bin/env bash
# Create or refresh the project's .venv with every dependency group (see README, "Dependencies").
# ROS 2 comes from the PyPI wheels, unless a sourced ROS 2 (/opt/ros/...) is found: then the venv
# sees the system rclpy and message packages instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=robot,record,sim,training,dev

if [ -n "${ROS_DISTRO:-}" ] && [[ "${AMENT_PREFIX_PATH:-}" == */opt/ros/* ]] \
    && "$PYTHON" -c 'import rclpy' 2>/dev/null; then
  echo "setup: using the sourced ROS 2 $ROS_DISTRO (system rclpy)"
  VENV_FLAGS=--system-site-packages
else
  echo "setup: no sourced ROS 2 found; installing ROS 2 Kilted from the PyPI wheels"
  VENV_FLAGS=
  EXTRAS=$EXTRAS,ros
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv $VENV_FLAGS "$VENV"
fi
# This machine's pip config names local package folders that may be absent: hide that noise.
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2); }
quiet_pip install --quiet --disable-pip-version-check --upgrade pip
echo "setup: installing conla_ros[$EXTRAS] (editable; first run takes a few minutes)"
# torch is pinned in the training extra: this machine has the 2.13.0 CPU wheel on disk.
quiet_pip install --quiet --disable-pip-version-check -e ".[$EXTRAS]"
"$VENV/bin/python" -c 'import conla_ros, rclpy, onnxruntime, cv2, rosbags, metaworld, torch' \
  || { echo "setup: the environment is incomplete (see the pip output above)" >&2; exit 1; }
# An editable install has no ament prefix data files: lay them out so that `source .venv/setup.sh`
# makes `ros2 run conla_ros ...` and `ros2 launch conla_ros ...` work.
VENV="$VENV" bash scripts/ament_prefix.sh "$VENV"
echo "setup: $VENV is ready"
