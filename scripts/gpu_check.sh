#!/usr/bin/env bash
# The GPU check (issue #14): on a fresh Linux machine with an NVIDIA GPU and driver (no CUDA
# toolkit needed), set up the GPU venv and prove the TensorRT path in one run of under 8 minutes:
# engines through the engine cache (reuse, sidecar rules), TensorRT fp32/fp16 parity with ONNX
# Runtime on the CPU, speed of every runtime, pytest -m gpu. Writes gpu_check.json and
# gpu_check.md into $OUT (or build/gpu_check); exits non-zero when any check failed.
#
# Usage: bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--cuda-version X.Y] [--steps a,b]
#        [--python PY] [--wheels DIR] [any option of: python -m sam3d_ros.tools.gpu_check --help]
#
#   --dry-run      installs nothing, needs no GPU: uses .venv (or the GPU venv) to print the plan,
#                  run the CPU-side parts and write the report, every GPU step "skipped: dry run"
#   --python PY    no venv: use this interpreter (e.g. a GPU image's python with numpy, scipy and
#                  the NVIDIA libraries already there); pip installs only what it lacks, into it
#   --wheels DIR   no index (a machine without network): install from the wheels in DIR only,
#                  one requirement at a time; one without a wheel there is reported, not installed
#
# The GPU venv is build/venv-gpu (SAM3D_GPU_VENV), not the ROS venv .venv: onnxruntime-gpu and
# the CPU onnxruntime of .venv install the same module and shadow each other, and the GPU steps
# need neither the ROS wheels nor the colcon build (minutes of set-up). Its requirements come
# from `python3 -m sam3d_ros.tools.gpu_setup requirements` (runtime packages + the TensorRT,
# cuda-bindings and onnxruntime-gpu wheels for the driver's CUDA version); a stamp of them makes
# a second run install nothing.
set -euo pipefail

CALLER_PWD="$PWD"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# a path argument as the caller meant it (the script runs in the repository root)
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$CALLER_PWD/$1" ;; esac; }
VENV="${SAM3D_GPU_VENV:-$ROOT/build/venv-gpu}"
SYS_PY="${PYTHON:-python3}"
# The whole run stays under 8 minutes: set-up at most SETUP_TIMEOUT_S, the steps what is left
# of TOTAL_S (at most the driver's default budget), the driver process DRIVER_SLACK_S more.
TOTAL_S="${SAM3D_GPU_CHECK_TOTAL_S:-465}"
SETUP_TIMEOUT_S="${SAM3D_GPU_SETUP_TIMEOUT_S:-200}"
STEP_BUDGET_MAX_S=420
DRIVER_SLACK_S=25
STAMPS="$ROOT/build/gpu_check_stamps"
START_S=$SECONDS

log() { printf '[gpu_check] %s\n' "$*" >&2; }

DRY_RUN=0
CUDA_GIVEN=""
BUDGET_GIVEN=0
USE_PY=""
WHEELS=""
args=()  # what the driver gets
while [ $# -gt 0 ]; do
  case "$1" in
    --python) USE_PY="${2:?--python needs an interpreter}"; shift 2; continue ;;
    --python=*) USE_PY="${1#--python=}"; shift; continue ;;
    --wheels) WHEELS="$(cd "$(abspath "${2:?--wheels needs a directory}")" && pwd)"; shift 2; continue ;;
    --wheels=*) WHEELS="$(cd "$(abspath "${1#--wheels=}")" && pwd)"; shift; continue ;;
    --out) args+=(--out "$(abspath "${2:?--out needs a directory}")"); shift 2; continue ;;
    --out=*) args+=(--out "$(abspath "${1#--out=}")"); shift; continue ;;
    --dry-run) DRY_RUN=1 ;;
    --cuda-version) CUDA_GIVEN="${2:-}" ;;
    --cuda-version=*) CUDA_GIVEN="${1#--cuda-version=}" ;;
    --budget-s | --budget-s=*) BUDGET_GIVEN=1 ;;
    -h | --help)
      sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
  esac
  args+=("$1")
  shift
done
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# --- the driver's CUDA version (nvidia-smi; no toolkit) -----------------------------------
CUDA_VERSION="$CUDA_GIVEN"
if [ -z "$CUDA_VERSION" ] && command -v nvidia-smi >/dev/null 2>&1; then
  if SMI_OUT="$(timeout 20 nvidia-smi 2>&1)"; then
    CUDA_VERSION="$(printf '%s\n' "$SMI_OUT" | "$SYS_PY" -m sam3d_ros.tools.gpu_setup cuda-version || true)"
  else
    log "nvidia-smi failed: $(printf '%s' "$SMI_OUT" | head -c 300)"
  fi
fi
extra=()
if [ -z "$CUDA_GIVEN" ] && [ -n "$CUDA_VERSION" ]; then extra+=(--cuda-version "$CUDA_VERSION"); fi
log "driver CUDA version: ${CUDA_VERSION:-none (no NVIDIA driver found)}"

# A Python that can run the driver without the GPU venv (reports only, or dry runs).
fallback_python() {
  local p
  for p in "$USE_PY" "$ROOT/.venv/bin/python" "$VENV/bin/python"; do
    if [ -n "$p" ] && "$p" -c 'import numpy, onnxruntime' >/dev/null 2>&1; then echo "$p"; return; fi
  done
  echo "$SYS_PY"
}

run_driver() {  # run_driver PYTHON [args...]
  local py="$1"; shift
  local budget=()
  if [ "$BUDGET_GIVEN" = 0 ]; then
    local left=$((TOTAL_S - (SECONDS - START_S) - DRIVER_SLACK_S))
    [ "$left" -gt "$STEP_BUDGET_MAX_S" ] && left=$STEP_BUDGET_MAX_S
    [ "$left" -lt 30 ] && left=30
    budget=(--budget-s "$left")
  fi
  local limit=$((${budget[1]:-$STEP_BUDGET_MAX_S} + DRIVER_SLACK_S))
  log "running the checks with $py (at most ${limit} s)"
  timeout --kill-after=10 "$limit" "$py" -m sam3d_ros.tools.gpu_check "$@" "${budget[@]}"
}

if [ "$DRY_RUN" = 1 ]; then
  run_driver "$(fallback_python)" "${args[@]}" "${extra[@]}"
  exit $?
fi

# pip_install PY REQ...: from PyPI in one go, or with --wheels from DIR only, one requirement at
# a time (prints the requirements it could not install; fails only when pip itself cannot run)
pip_install() {
  local py="$1"; shift
  local pip=("$py" -m pip install -q --disable-pip-version-check --prefer-binary)
  local r left=$((SETUP_TIMEOUT_S - (SECONDS - START_S)))  # all within SETUP_TIMEOUT_S of the start
  if [ -z "$WHEELS" ]; then
    if [ "$left" -le 0 ] || ! timeout "$left" "${pip[@]}" "$@" >&2; then echo "$*"; fi
    return 0
  fi
  for r in "$@"; do
    left=$((SETUP_TIMEOUT_S - (SECONDS - START_S)))
    if [ "$left" -le 0 ]; then echo "$r"; continue; fi
    timeout "$left" "${pip[@]}" --no-index --find-links "$WHEELS" "$r" >/dev/null 2>&1 || echo "$r"
  done
}

# --- set-up: the GPU venv (or --python) ---------------------------------------------------
setup_failed=""
if [ -z "$CUDA_VERSION" ]; then
  setup_failed="no NVIDIA driver (nvidia-smi missing or without a CUDA version)"
elif ! "$SYS_PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  setup_failed="Python >= 3.10 is needed; found $("$SYS_PY" --version 2>&1). Set PYTHON=/path/to/python3"
elif ! REQS="$("$SYS_PY" -m sam3d_ros.tools.gpu_setup requirements --cuda-version "$CUDA_VERSION" \
                  --runtime requirements/runtime.txt)"; then
  setup_failed="no GPU wheels for CUDA $CUDA_VERSION (see above)"
fi
PY="${USE_PY:-$VENV/bin/python}"
if [ -z "$setup_failed" ] && [ -z "$USE_PY" ] && [ ! -x "$VENV/bin/python" ]; then
  if ! "$SYS_PY" -c 'import venv, ensurepip' >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
     && command -v apt-get >/dev/null 2>&1 && [ -z "$WHEELS" ]; then
    log "apt-get install python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  log "creating venv $VENV"
  "$SYS_PY" -m venv "$VENV" || setup_failed="cannot create the venv $VENV"
fi
if [ -z "$setup_failed" ]; then
  key="$(printf '%s\n%s\n%s\n' "$PY" "$WHEELS" "$REQS" | sha256sum | cut -c1-16)"
  STAMP="$STAMPS/$key"
  [ -z "$USE_PY" ] && STAMP="$VENV/.sam3d_gpu-$(printf '%s\n' "$REQS" | sha256sum | cut -c1-16)"
  if [ -f "$STAMP" ]; then
    log "GPU environment up to date ($PY)"
  else
    mapfile -t req_list <<<"$REQS"
    log "pip install into $PY${WHEELS:+ from $WHEELS} (set-up at most ${SETUP_TIMEOUT_S} s): ${req_list[*]}"
    missing="$(pip_install "$PY" "${req_list[@]}")"
    if [ -z "$missing" ]; then
      mkdir -p "$(dirname "$STAMP")"
      rm -f "$VENV"/.sam3d_gpu-* 2>/dev/null || true
      touch "$STAMP"
    else
      setup_failed="not installed (pip failed, took more than ${SETUP_TIMEOUT_S} s or found no wheel): $(echo $missing)"
    fi
  fi
fi
log "set-up took $((SECONDS - START_S)) s"

if [ -n "$setup_failed" ]; then
  # still run and write the report: the steps fail with the reason they cannot run
  log "SET-UP FAILED: $setup_failed"
  [ -x "$PY" ] && "$PY" -c 'import numpy, onnxruntime, trimesh' >/dev/null 2>&1 || PY="$(fallback_python)"
  run_driver "$PY" "${args[@]}" "${extra[@]}" --setup-failed "$setup_failed" \
    --setup-seconds "$((SECONDS - START_S))" || true
  exit 1
fi
run_driver "$PY" "${args[@]}" "${extra[@]}" --setup-seconds "$((SECONDS - START_S))"
