#!/usr/bin/env bash
# The shipped model's recipe, end to end on a 2-core CPU (times in models/manifest.json and
# docs/benchmarks.md): generate the generator's train and val splits, train, export to
# models/, and measure the quality gate on the val split.
# Usage: bash scripts/train_recipe.sh [CACHE_DIR]   (default ~/.cache/sam3d_ros; resumable:
# run it again after an interruption and finished frames, datasets and epochs are kept)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${1:-$HOME/.cache/sam3d_ros}"
GEN="$CACHE/gen"
WORKERS="${SAM3D_WORKERS:-2}"
bash "$ROOT/scripts/setup.sh" >/dev/null
# shellcheck disable=SC1091
. "$ROOT/scripts/env.sh"
cd "$ROOT"
[ -f "$GEN/train/dataset.json" ] || sam3d-ros generate "$GEN/train" --frames 2400 --seed 0 --split train \
  --workers "$WORKERS" --resume
[ -f "$GEN/val/dataset.json" ] || sam3d-ros generate "$GEN/val" --frames 300 --seed 0 --split val \
  --workers "$WORKERS" --resume
# The shipped weights stop after 11 of the 14 scheduled epochs (--stop-after-epochs 11): on the
# shared 2-core machine epochs slowed from 5 to 12 minutes and the session's time ran out;
# run again without --stop-after-epochs to finish the schedule from the checkpoint.
sam3d-ros train --source "dataset:$GEN" --cache-dir "$CACHE" --run-dir "$CACHE/runs/geometry_layout_gen" \
  --train-frames 2400 --val-frames 300 --epochs 14 --stop-after-epochs 11 --max-minutes 150 --threads 2 --low-visibility-repeat 3 \
  --data-workers "$WORKERS" --seed 0 --export-dir models --eval-frames 0
