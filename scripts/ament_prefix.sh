#!/usr/bin/env bash
# Give a venv the ament prefix layout that `ros2 run`, `ros2 launch` and launch_ros look for, and a
# setup.sh that puts it on AMENT_PREFIX_PATH. Run by scripts/setup_venv.sh (and by make when a
# launch or config file is added); usage: scripts/ament_prefix.sh [VENV]  (default .venv).
#
# `pip install -e` (what `make` does) installs no data files, so the prefix is laid out here:
#   share/ament_index/resource_index/packages/conla_ros   the index marker
#   share/conla_ros/package.xml, launch/*.launch.py, config/*  symbolic links to the checkout's files
#                                                         (one per file: ros2 launch does not follow
#                                                         linked folders), so edits apply at once
#   lib/conla_ros/<node>                                  the launcher (scripts/ros_node_launcher.sh),
#                                                         which runs the node with the venv's Python
#   setup.sh                                              `source .venv/setup.sh`: AMENT_PREFIX_PATH
#                                                         and PATH, like colcon's install/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
venv=${1:-${VENV:-.venv}}
[ -x "$venv/bin/python" ] || { echo "ament_prefix: $venv/bin/python not found: run make venv first" >&2; exit 1; }
prefix=$(cd "$venv" && pwd)
package=conla_ros
nodes="policy_node recorder_node sim_arm_node scripted_teleop_node"

mkdir -p "$prefix/share/ament_index/resource_index/packages"
cp resource/$package "$prefix/share/ament_index/resource_index/packages/$package"

share="$prefix/share/$package"
rm -rf "$share/launch" "$share/config"  # links to files the checkout no longer has go too
mkdir -p "$share/launch" "$share/config" "$prefix/lib/$package"
ln -sfn "$repo/package.xml" "$share/package.xml"
for file in launch/*.launch.py config/*.yaml config/*.xml; do
  [ -e "$file" ] && ln -sfn "$repo/$file" "$share/$file"
done
for node in $nodes; do
  install -m 0755 scripts/ros_node_launcher.sh "$prefix/lib/$package/$node"
done

cat > "$prefix/setup.sh" <<EOF
# conla_ros in this venv as an ament prefix (written by scripts/ament_prefix.sh; POSIX sh, bash, zsh):
#   source $venv/setup.sh
# then \`ros2 run conla_ros policy_node\` and \`ros2 launch conla_ros policy.launch.py\` find the package
# (with the ros2 command of a sourced ROS 2 install). Sourcing it twice changes nothing.
_conla_prefix="$prefix"
case ":\${AMENT_PREFIX_PATH:-}:" in
  *":\$_conla_prefix:"*) ;;
  *) export AMENT_PREFIX_PATH="\$_conla_prefix\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}" ;;
esac
case ":\${PATH:-}:" in
  *":\$_conla_prefix/bin:"*) ;;
  *) export PATH="\$_conla_prefix/bin\${PATH:+:\$PATH}" ;;
esac
unset _conla_prefix
EOF
echo "setup: ament prefix in $venv (source $venv/setup.sh for ros2 run / ros2 launch)"
