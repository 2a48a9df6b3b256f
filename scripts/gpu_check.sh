#!/usr/bin/env bash
# The GPU check (issue #14): on a fresh Linux machine with an NVIDIA GPU and driver (no CUDA
# toolkit needed), set up the GPU venv and prove the TensorRT path in one run of under 8 minutes:
# engines through the engine cache (reuse, sidecar rules), TensorRT fp32/fp16 parity with ONNX
# Runtime on the CPU, speed of every runtime, pytest -m gpu. Writes gpu_check.json and
# gpu_check.md into $OUT (or build/gpu_check); exits non-zero when any check failed.
#
# Usage: bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--cuda-version X.Y] [--steps a,b]
#        [any other option of: python -m sam3d_ros.tools.gpu_check --help]
#
# --dry-run installs nothing and needs no GPU: it uses the project venv (.venv) or the GPU venv
# when present, prints the plan, runs the CPU-side parts and writes the report with every GPU
# step "skipped: dry run".
#
# The GPU venv is build/venv-gpu (SAM3D_GPU_VENV), not the ROS venv .venv: onnxruntime-gpu and
# the CPU onnxruntime of .venv install the same module and shadow each other, and the GPU steps
# need neither the ROS wheels nor the colcon build (minutes of set-up). Its requirements come
# from `python3 -m sam3d_ros.tools.gpu_setup requirements` (runtime packages + the TensorRT,
# cuda-python and onnxruntime-gpu wheels for the driver's CUDA version); a stamp of them makes
# a second run install nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${SAM3D_GPU_VENV:-$ROOT/build/venv-gpu}"
SYS_PY="${PYTHON:-python3}"
# The whole run stays under 8 minutes: set-up at most SETUP_TIMEOUT_S, the steps what is left
# of TOTAL_S (at most the driver's default budget), the driver process a little more.
TOTAL_S="${SAM3D_GPU_CHECK_TOTAL_S:-465}"
SETUP_TIMEOUT_S="${SAM3D_GPU_SETUP_TIMEOUT_S:-200}"
STEP_BUDGET_MAX_S=280
DRIVER_SLACK_S=25
START_S=$SECONDS

log() { printf '[gpu_check] %s\n' "$*" >&2; }

DRY_RUN=0
CUDA_GIVEN=""
BUDGET_GIVEN=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --dry-run) DRY_RUN=1 ;;
    --cuda-version) CUDA_GIVEN="${args[i + 1]:-}" ;;
    --cuda-version=*) CUDA_GIVEN="${args[i]#--cuda-version=}" ;;
    --budget-s | --budget-s=*) BUDGET_GIVEN=1 ;;
    -h | --help)
      sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
  esac
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
  for p in "$ROOT/.venv/bin/python" "$VENV/bin/python"; do
    if [ -x "$p" ] && "$p" -c 'import numpy, onnxruntime' >/dev/null 2>&1; then echo "$p"; return; fi
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

# --- set-up: the GPU venv -----------------------------------------------------------------
setup_failed=""
if [ -z "$CUDA_VERSION" ]; then
  setup_failed="no NVIDIA driver (nvidia-smi missing or without a CUDA version)"
elif ! "$SYS_PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  setup_failed="Python >= 3.10 is needed; found $("$SYS_PY" --version 2>&1). Set PYTHON=/path/to/python3"
elif ! REQS="$("$SYS_PY" -m sam3d_ros.tools.gpu_setup requirements --cuda-version "$CUDA_VERSION" \
                  --runtime requirements/runtime.txt)"; then
  setup_failed="no GPU wheels for CUDA $CUDA_VERSION (see above)"
fi
if [ -z "$setup_failed" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$SYS_PY" -c 'import venv, ensurepip' >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
       && command -v apt-get >/dev/null 2>&1; then
      log "apt-get install python3-venv"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    log "creating venv $VENV"
    "$SYS_PY" -m venv "$VENV" || setup_failed="cannot create the venv $VENV"
  fi
fi
if [ -z "$setup_failed" ]; then
  STAMP="$VENV/.sam3d_gpu-$(printf '%s\n' "$REQS" | sha256sum | cut -c1-16)"
  if [ -f "$STAMP" ]; then
    log "GPU venv up to date ($VENV)"
  else
    mapfile -t req_list <<<"$REQS"
    log "pip install (at most ${SETUP_TIMEOUT_S} s): ${req_list[*]}"
    if timeout "$SETUP_TIMEOUT_S" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
         --prefer-binary "${req_list[@]}"; then
      rm -f "$VENV"/.sam3d_gpu-*
      touch "$STAMP"
    else
      setup_failed="pip install of the GPU wheels failed or took more than ${SETUP_TIMEOUT_S} s"
    fi
  fi
fi
log "set-up took $((SECONDS - START_S)) s"

if [ -n "$setup_failed" ]; then
  # still write the report: every step then fails with the reason it cannot run
  log "SET-UP FAILED: $setup_failed"
  py="$VENV/bin/python"
  [ -x "$py" ] && "$py" -c 'import numpy, onnxruntime' >/dev/null 2>&1 || py="$(fallback_python)"
  run_driver "$py" "${args[@]}" "${extra[@]}" --setup-failed "$setup_failed" \
    --setup-seconds "$((SECONDS - START_S))" || true
  exit 1
fi
run_driver "$VENV/bin/python" "${args[@]}" "${extra[@]}" --setup-seconds "$((SECONDS - START_S))"
