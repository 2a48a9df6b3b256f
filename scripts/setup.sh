#!/usr/bin/env bash
# Idempotent set-up: system packages (when root), a venv with ROS 2 Kilted wheels and the
# Python dependencies, the colcon build of the messages. A second run reinstalls nothing.
#
# Usage: source-free; run as `bash scripts/setup.sh`. Prints nothing when already set up
# except one line per step.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${SAM3D_VENV:-$ROOT/.venv}"
# The ROS 2 Kilted wheels on PyPI are built for CPython 3.11.
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif command -v python3.11 >/dev/null 2>&1; then PY=python3.11
else PY=python3
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
  echo "[setup] Python 3.11 is required (ROS 2 Kilted wheels); found: $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
STAMP_DIR="$VENV/.sam3d_stamps"

log() { printf '[setup] %s\n' "$*"; }

# --- 1. system packages (only when root and only what is missing) -------------------
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then need_apt+=(python3-venv); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    log "missing system packages: ${need_apt[*]} (run as root or install them)"; exit 1
  fi
fi

# --- 2. venv + Python packages -------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
mkdir -p "$STAMP_DIR"
REQ_HASH="$(cat requirements/*.txt | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP_DIR/pip-$REQ_HASH" ]; then
  log "pip install (requirements/*.txt)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements/ros.txt -r requirements/runtime.txt -r requirements/dev.txt
  rm -f "$STAMP_DIR"/pip-*
  touch "$STAMP_DIR/pip-$REQ_HASH"
else
  log "python packages up to date"
fi

# --- 3. fix the ROS wheels' hard-coded manylinux include paths -----------------------
PYINC="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NPINC="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
if grep -rlq --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null; then
  log "patching ROS cmake include paths"
  grep -rl '/opt/python/cp311-cp311' "$VENV/share" --include='*.cmake' | while read -r f; do
    sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
           -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" "$f"
  done
fi

# --- 4. colcon build of the messages + install of the Python modules -----------------
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV"
SRC_HASH="$(cat package.xml CMakeLists.txt msg/*.msg | sha256sum | cut -c1-16)"
if [ ! -f "install/sam3d_ros/share/sam3d_ros/package.xml" ] || [ ! -f "build/.sam3d-$SRC_HASH" ] \
   || [ -n "$(find sam3d_ros launch config models scripts -newer "build/.sam3d-$SRC_HASH" \( -type f -o -type d \) \
              -not -path '*/__pycache__*' 2>/dev/null | head -1)" ]; then
  log "colcon build"
  mkdir -p build log
  # CMake refuses include paths inside the source directory, and the venv lives in the
  # repository: build from a staging directory of symlinks to the package's files.
  STAGE="$ROOT/build/src/sam3d_ros"
  rm -rf "$STAGE"; mkdir -p "$STAGE"
  for item in package.xml CMakeLists.txt msg sam3d_ros launch config models scripts; do
    ln -s "$ROOT/$item" "$STAGE/$item"
  done
  COLCON_LOG_PATH="$ROOT/log" "$VENV/bin/colcon" build --symlink-install \
    --paths "$STAGE" --build-base "$ROOT/build" --install-base "$ROOT/install" \
    --event-handlers console_direct- --cmake-args -DBUILD_TESTING=OFF \
    -DPython3_EXECUTABLE="$VENV/bin/python" >"$ROOT/log/colcon-build.txt" 2>&1 \
    || { tail -40 "$ROOT/log/colcon-build.txt"; log "colcon build failed (log/colcon-build.txt)"; exit 1; }
  rm -f build/.sam3d-*
  touch "build/.sam3d-$SRC_HASH"
else
  log "colcon build up to date"
fi
# editable install of the pure-Python package (console script `sam3d-ros`)
if [ ! -x "$VENV/bin/sam3d-ros" ]; then
  log "pip install -e . (sam3d-ros command)"
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
fi
log "ready: source scripts/env.sh to use it in a shell"
