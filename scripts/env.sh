# Source me: activates the venv and the colcon install, and keeps ROS 2 discovery on this host.
_SAM3D_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="${SAM3D_VENV:-$_SAM3D_ROOT/.venv}"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# shellcheck disable=SC1091
if [ -f "$_SAM3D_ROOT/install/setup.bash" ]; then
  # colcon's setup scripts are not `set -u` safe
  case $- in *u*) _sam3d_u=1; set +u ;; *) _sam3d_u=0 ;; esac
  . "$_SAM3D_ROOT/install/setup.bash"
  [ "$_sam3d_u" = 1 ] && set -u
  unset _sam3d_u
fi
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-57}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$_SAM3D_ROOT/build/ros_log}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
