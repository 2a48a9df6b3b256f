#!/usr/bin/env bash
# Set everything up (idempotent) and run the checks and tests: ruff format, ruff lint, mypy, pytest.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# shellcheck disable=SC1091
. scripts/env.sh
# ROS 2 discovery stays on this machine; a domain of our own; logs in the build tree.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${SAM3D_TEST_DOMAIN_ID:-$((150 + $$ % 50))}"
export SAM3D_TEST_DOMAIN_ID="$ROS_DOMAIN_ID"
export ROS_LOG_DIR="$ROOT/build/ros_log/tests"
echo "[test] ruff format --check"
ruff format --check sam3d_ros test scripts launch
echo "[test] ruff check"
ruff check sam3d_ros test scripts launch
echo "[test] mypy"
mypy
echo "[test] pytest"
python -m pytest -q "$@"
