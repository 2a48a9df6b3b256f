#!/usr/bin/env bash
# Set everything up (idempotent) and run the demo on the bundled sample bag:
#  1. offline replay: meshes, poses, results.jsonl, summary.json, report.html, an output bag;
#  2. live path: sam3d_node started from config/default.yaml, the bag played into it on the
#     default topics, its published results compared with the offline replay.
# Usage: bash scripts/demo.sh [OUT_DIR]   (default: demo_out)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# shellcheck disable=SC1091
. scripts/env.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID_DEMO:-$((100 + $$ % 40))}"
export ROS_LOG_DIR="$ROOT/build/ros_log/demo"
# the shipped DDS profile for large images on one host (README "Losing no frames")
export FASTDDS_DEFAULT_PROFILES_FILE="$ROOT/config/fastdds_shm.xml"
OUT="${1:-demo_out}"
BAG="data/sample/tabletop_sample"
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1/2 offline replay of $BAG (sam3d-ros replay) =="
sam3d-ros replay "$BAG" --out "$OUT" --params config/default.yaml --out-bag "$OUT/output_bag"

echo
echo "== 2/2 live node: python -m sam3d_ros.ros.node --ros-args --params-file config/default.yaml -p input_reliability:=reliable =="
python -m sam3d_ros.ros.node --ros-args --params-file config/default.yaml -p input_reliability:=reliable >"$OUT/node.log" 2>&1 &
NODE_PID=$!
trap 'kill $NODE_PID 2>/dev/null || true; wait $NODE_PID 2>/dev/null || true' EXIT
python -m sam3d_ros.tools.live_check "$BAG" --replay-results "$OUT/results.jsonl" --out "$OUT/live_results.jsonl"
kill -INT $NODE_PID 2>/dev/null || true
wait $NODE_PID 2>/dev/null || true
trap - EXIT

echo
echo "Outputs in $OUT/: results.jsonl, meshes/ (PLY, object frame), summary.json, output_bag/, live_results.jsonl"
echo "Open the report: $OUT/report.html"
