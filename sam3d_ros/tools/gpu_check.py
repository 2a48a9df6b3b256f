"""The GPU check: TensorRT engines, parity and speed of the network on an NVIDIA GPU.

``scripts/gpu_check.sh`` sets up the GPU venv (see :mod:`sam3d_ros.tools.gpu_setup`) and
runs this module; ``--dry-run`` runs here without a GPU. Each step runs in a subprocess of
its own with its own timeout (a hung CUDA call or a crash in TensorRT fails that step, not
the check), and the whole run keeps to ``--budget-s``: a step that no longer fits is failed
as "not run". A step that cannot run (no GPU, a wheel missing, the CUDA provider absent) is
FAILED with the reason, never passed.

Steps (``--steps`` selects some):

``wheel_selection``
    The GPU wheels for the driver's CUDA version (``--cuda-version``; runs in dry runs).
``environment``
    nvidia-smi (GPU, driver, CUDA version), TensorRT, cuda-bindings (device count, driver and
    runtime versions, compute capability), ONNX Runtime and its CUDA provider.
``engines``
    For every shipped model directory (``models/`` and each ``models/*/`` with a manifest),
    fp16 and fp32 engines built through the backend's own engine cache in a temporary
    directory: the first start builds, a second start loads the cached engine (no build).
    Then the sidecar rules with the real builder: an engine whose sidecar names another
    precision, TensorRT version or ONNX file is rebuilt, never loaded (the changed ONNX is a
    real, parsable copy with another ``doc_string``).
``parity``
    TensorRT fp32 and fp16 against ONNX Runtime on the CPU on encodings of synthetic frames
    (:data:`PARITY_FRAMES` ray-cast frames, :data:`PARITY_OBJECTS` objects each): max/mean
    absolute difference of the occupancy logits, voxel IoU of the occupied sets, and per
    object the Chamfer-L1 (mm) and volume IoU of the meshed shapes, against
    :data:`PARITY_THRESHOLDS`.
``pytest_gpu``
    ``pytest -m gpu`` on the test files that have GPU tests; passes only when at least one
    GPU test ran and none failed (all skipped is a failure here).
``speed_tensorrt_fp16``, ``speed_tensorrt_fp32``, ``speed_onnxruntime_cuda``, ``speed_onnxruntime_cpu``
    Per runtime (each in its own process: one CUDA runtime per process): network ms per
    object at batch :data:`SPEED_BATCHES`, and the node's frame with
    :data:`FRAME_OBJECT_COUNTS` objects (median and p90 ms, per-stage medians, the encoding
    share of the backend stage, and the largest CPU-side stage, which bounds the frame rate
    once the network is fast).
``cpu_reference``
    Dry runs only: ONNX Runtime on the CPU on a tiny workload (one frame), so that a dry
    run exercises the real encoding, runtime and pipeline code.

Writes ``gpu_check.json`` (everything) and ``gpu_check.md`` (tables) into ``--out``
(default ``$OUT`` when set, else ``build/gpu_check``), with one log per step in ``logs/``.
Exit status 0 when every step that was meant to run passed, 1 otherwise, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.metadata
import json
import logging
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from sam3d_ros.backends.base import BackendError
from sam3d_ros.backends.engine_cache import EngineCache, EngineCacheError, EngineKey
from sam3d_ros.backends.learned import MANIFEST_NAME, NetworkOutputs, decode_outputs, sha256_file
from sam3d_ros.core.config import PipelineConfig, default_config
from sam3d_ros.core.encoding import GridFrame
from sam3d_ros.core.meshing import MeshingError, mesh_from_voxels
from sam3d_ros.core.metrics import MetricsError, chamfer_l1_mm, volume_iou
from sam3d_ros.core.types import RGBDFrame
from sam3d_ros.tools.gpu_setup import GpuCheckError, parse_nvidia_smi, select_wheels
from sam3d_ros.tools.netbench import (
    BenchError,
    PipelineTiming,
    batch_of,
    encode_frames,
    ros_message_builder,
    synthetic_frames,
    time_network,
    time_pipeline,
)

logger = logging.getLogger(__name__)

ROOT: Final[Path] = Path(__file__).resolve().parents[2]
JSON_NAME: Final[str] = "gpu_check.json"
MD_NAME: Final[str] = "gpu_check.md"
REPORT_VERSION: Final[int] = 1
#: Output directory when neither --out nor $OUT is given (relative to the repository).
DEFAULT_OUT: Final[Path] = Path("build") / "gpu_check"
#: Default time budget of all steps together (s); the set-up before it is bounded by the
#: shell script, so set-up + steps stay under 8 minutes.
DEFAULT_BUDGET_S: Final[float] = 420.0
#: A step is not started with less than this left of the budget (s).
MIN_STEP_S: Final[float] = 10.0

PASSED: Final[str] = "passed"
FAILED: Final[str] = "failed"
SKIPPED: Final[str] = "skipped"
DRY_RUN_REASON: Final[str] = "skipped: dry run"

PRECISIONS: Final[tuple[str, ...]] = ("fp16", "fp32")
#: Parity workload: frames x objects per frame, and its seeds (validation-like, disjoint
#: from the speed frames).
PARITY_FRAMES: Final[int] = 4
PARITY_OBJECTS: Final[int] = 5
PARITY_SEED: Final[int] = 4_500_000
#: Surface samples per mesh for the parity Chamfer, and the volume-IoU grid resolution.
PARITY_MESH_SAMPLES: Final[int] = 3000
PARITY_IOU_RESOLUTION: Final[int] = 64
#: Speed workload.
SPEED_BATCHES: Final[tuple[int, ...]] = (1, 8, 32)
FRAME_OBJECT_COUNTS: Final[tuple[int, ...]] = (5, 10, 20)
DEFAULT_FRAMES: Final[int] = 3
DEFAULT_REPEATS: Final[int] = 20
DEFAULT_PASSES: Final[int] = 2
#: The CPU runtime gets this fraction of the repeats (it is 10-100x slower per call).
CPU_REPEAT_FRACTION: Final[float] = 0.25
#: Pipeline stages that run on the CPU whatever the backend (the backend stage itself
#: also holds the CPU encoding, reported separately).
CPU_STAGES: Final[tuple[str, ...]] = ("plane", "observations", "tracking", "meshing", "collision", "messages")
#: Frame period of a 30 Hz camera (ms).
CAMERA_PERIOD_MS: Final[float] = 1000.0 / 30.0
#: Exit status of a step process whose check failed (its result file says why).
STEP_FAILED_EXIT: Final[int] = 3


class StepUnavailableError(GpuCheckError):
    """An optional step's runtime is not installed or sees no GPU."""


@dataclass(frozen=True)
class ParityThresholds:
    """Largest allowed differences of one TensorRT precision from ONNX Runtime on the CPU.

    Attributes:
        max_abs_logit: largest |logit difference| over all voxels of all objects.
        mean_abs_logit: mean |logit difference|.
        min_voxel_iou: smallest IoU of the occupied voxel sets (logit > 0) of one object.
        max_chamfer_mm: largest Chamfer-L1 (mm) between the two meshes of one object.
        min_mesh_iou: smallest volume IoU between the two meshes of one object.
        max_abs_layout: largest |difference| of the layout outputs (normalised box units).
    """

    max_abs_logit: float
    mean_abs_logit: float
    min_voxel_iou: float
    max_chamfer_mm: float
    min_mesh_iou: float
    max_abs_layout: float


#: fp32 (TF32 off, see ``tensorrt_backend.build_engine``) differs from the CPU only by the
#: order of summation: ~1e-4 on logits of magnitude ~10; fp16 keeps 10 mantissa bits
#: (relative ~1e-3, accumulated over the U-Net's layers), which moves the 0.5 iso-surface by
#: a small fraction of a voxel (a voxel is ~2-10 mm on the shipped cube sizes).
PARITY_THRESHOLDS: Final[dict[str, ParityThresholds]] = {
    "fp32": ParityThresholds(
        max_abs_logit=1e-2,
        mean_abs_logit=1e-3,
        min_voxel_iou=0.995,
        max_chamfer_mm=0.5,
        min_mesh_iou=0.99,
        max_abs_layout=1e-3,
    ),
    "fp16": ParityThresholds(
        max_abs_logit=0.5,
        mean_abs_logit=0.05,
        min_voxel_iou=0.97,
        max_chamfer_mm=1.5,
        min_mesh_iou=0.95,
        max_abs_layout=0.05,
    ),
}


@dataclass(frozen=True)
class StepSpec:
    """One step of the check.

    Attributes:
        name: step name (``--steps``, report keys).
        timeout_s: wall-clock limit of its process (s).
        summary: one line for the plan.
        dry_run: whether it runs in dry runs (else it is skipped there).
        real_run: whether it runs in real runs.
        isolated: whether it runs in a process of its own (False: in the check's process,
            for pure-Python steps that touch no GPU library).
        optional: a step whose runtime need not be there: when it is not
            (:class:`StepUnavailableError`), the step is skipped with the reason, not failed.
    """

    name: str
    timeout_s: float
    summary: str
    dry_run: bool = False
    real_run: bool = True
    isolated: bool = True
    optional: bool = False


@dataclass(frozen=True)
class StepOutcome:
    """What a step function returns: whether its checks passed, why not, its numbers."""

    passed: bool
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepResult:
    """One step in the report.

    Attributes:
        name: the step.
        status: :data:`PASSED`, :data:`FAILED` or :data:`SKIPPED`.
        reason: why it failed or was skipped ("" when passed).
        seconds: wall-clock time of its process (s); 0 when not run.
        data: its measurements.
    """

    name: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CheckContext:
    """Inputs every step process gets (written as JSON by the parent).

    Attributes:
        work: temporary directory of this run (engine cache, frame cache); removed after.
        out: the output directory (results and logs of the steps).
        model_dirs: model directories to check (each with a manifest).
        cuda_version: the driver's CUDA version ("" when unknown).
        frames: frames per object count of the speed workload.
        repeats: timed network calls per batch size.
        passes: passes over the frames for the node timing.
        parity_frames: frames of the parity workload.
    """

    work: str
    out: str
    model_dirs: tuple[str, ...]
    cuda_version: str = ""
    frames: int = DEFAULT_FRAMES
    repeats: int = DEFAULT_REPEATS
    passes: int = DEFAULT_PASSES
    parity_frames: int = PARITY_FRAMES

    @property
    def engine_dir(self) -> Path:
        """The engine cache of this run (a fresh directory)."""
        return Path(self.work) / "engines"

    def to_json(self) -> str:
        """Serialised for the step processes."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CheckContext:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        d["model_dirs"] = tuple(d["model_dirs"])
        return cls(**d)


def _median(values: Sequence[float]) -> float:
    return round(float(statistics.median(values)), 3)


# ----------------------------------------------------------------------------- helpers


def default_model_dirs(root: Path = ROOT) -> tuple[Path, ...]:
    """``models/`` and every ``models/*/`` that holds a manifest, sorted."""
    base = root / "models"
    subdirs = sorted(p for p in base.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file())
    return (base, *subdirs) if (base / MANIFEST_NAME).is_file() else tuple(subdirs)


def nvidia_smi_info() -> dict[str, str]:
    """GPU name, memory, driver and CUDA version from ``nvidia-smi``.

    Raises:
        GpuCheckError: nvidia-smi is missing or fails (no NVIDIA driver).
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise GpuCheckError("nvidia-smi not found: no NVIDIA driver on this machine")
    try:
        header = subprocess.run([exe], capture_output=True, text=True, timeout=20, check=True).stdout
        query = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise GpuCheckError(f"nvidia-smi failed: {err}") from err
    info = parse_nvidia_smi(header)
    first = [p.strip() for p in query.splitlines()[0].split(",")] if query.strip() else []
    return {
        "gpu": first[0] if first else "",
        "memory": first[1] if len(first) > 1 else "",
        "driver_version": info.driver_version or (first[2] if len(first) > 2 else ""),
        "cuda_version": info.cuda_version,
        "gpus": str(len([line for line in query.splitlines() if line.strip()])),
    }


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def preload_cuda_libraries() -> str:
    """Load the CUDA/cuDNN libraries of the NVIDIA wheels for ONNX Runtime's CUDA provider
    (``onnxruntime.preload_dlls``, ONNX Runtime >= 1.21); returns what was done.

    Raises:
        GpuCheckError: onnxruntime is missing or the libraries do not load.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise GpuCheckError(f"onnxruntime is not installed: {err}") from err
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return f"onnxruntime {ort.__version__} has no preload_dlls (system CUDA libraries used)"
    try:
        preload()
    except OSError as err:
        raise GpuCheckError(f"onnxruntime.preload_dlls() failed: {err}") from err
    return "preloaded the NVIDIA wheels' CUDA and cuDNN libraries"


def _label(model_dir: Path) -> str:
    return str(model_dir.relative_to(ROOT)) if model_dir.is_relative_to(ROOT) else str(model_dir)


def unique_model_dirs(model_dirs: Sequence[str]) -> tuple[list[Path], dict[str, str]]:
    """The model directories whose ONNX differs from every earlier one (engines and parity
    run once per ONNX file), and label -> label of the earlier directory with the same ONNX.

    Raises:
        ModelFileError: a directory whose manifest or ONNX does not verify.
    """
    from sam3d_ros.backends.learned import ONNX_KEY, load_manifest, verified_file

    seen: dict[str, str] = {}
    unique: list[Path] = []
    same: dict[str, str] = {}
    for d in map(Path, model_dirs):
        sha = sha256_file(verified_file(d, load_manifest(d), ONNX_KEY))
        if sha in seen:
            same[_label(d)] = seen[sha]
            continue
        seen[sha] = _label(d)
        unique.append(d)
    return unique, same


def _config(max_objects: int | None = None) -> PipelineConfig:
    cfg = default_config()
    if max_objects is not None and cfg.max_objects < max_objects:
        cfg = dataclasses.replace(cfg, max_objects=max_objects)
    return cfg


def _frames(
    ctx: CheckContext, n_objects: int, n_frames: int, seed_base: int | None = None
) -> list[RGBDFrame]:
    """Synthetic frames, rendered once per run and cached in the work directory (the
    pickle is written and read by this run only)."""
    tag = "speed" if seed_base is None else f"seed{seed_base}"
    path = Path(ctx.work) / f"frames_{tag}_{n_objects}x{n_frames}.pkl"
    if path.is_file():
        with path.open("rb") as f:
            frames: list[RGBDFrame] = pickle.load(f)
        return frames
    frames = (
        synthetic_frames(n_frames, n_objects)
        if seed_base is None
        else synthetic_frames(n_frames, n_objects, seed_base=seed_base)
    )
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        pickle.dump(frames, f)
    tmp.replace(path)
    return frames


# ----------------------------------------------------------------------------- steps


def step_wheel_selection(ctx: CheckContext) -> StepOutcome:
    """The GPU wheels for ``ctx.cuda_version`` (examples for 12.x and 13.x when unknown)."""
    if not ctx.cuda_version:
        examples = {v: list(select_wheels(v).requirements) for v in ("12.4", "13.0")}
        return StepOutcome(
            True, "", {"cuda_version": None, "note": "no driver CUDA version given", "examples": examples}
        )
    plan = select_wheels(ctx.cuda_version)
    return StepOutcome(True, "", {"cuda_version": plan.cuda_version, "requirements": list(plan.requirements)})


def step_environment(ctx: CheckContext) -> StepOutcome:
    """Versions of the driver, TensorRT, cuda-python and ONNX Runtime; CUDA provider."""
    data: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    problems: list[str] = []
    try:
        data["nvidia_smi"] = nvidia_smi_info()
    except GpuCheckError as err:
        problems.append(str(err))
    try:
        import tensorrt as trt

        data["tensorrt"] = str(trt.__version__)
    except ImportError as err:
        problems.append(f"tensorrt is not importable: {err}")
    try:
        from sam3d_ros.backends.tensorrt_backend import _cuda_check, _import_cudart

        cudart = _import_cudart()
        data["cuda_python"] = _package_version("cuda-bindings") or _package_version("cuda-python")
        data["cuda_devices"] = int(_cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount"))
        data["cuda_driver_api"] = int(_cuda_check(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
        data["cuda_runtime_api"] = int(_cuda_check(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
        props = _cuda_check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        data["compute_capability"] = f"{props.major}.{props.minor}"
    except ImportError as err:
        problems.append(f"cuda-python is not importable: {err}")
    except BackendError as err:
        problems.append(f"CUDA runtime: {err}")
    try:
        data["onnxruntime_preload"] = preload_cuda_libraries()
        import onnxruntime as ort

        data["onnxruntime"] = str(ort.__version__)
        data["onnxruntime_providers"] = list(ort.get_available_providers())
        if "CUDAExecutionProvider" not in data["onnxruntime_providers"]:
            problems.append(f"ONNX Runtime has no CUDA provider: {data['onnxruntime_providers']}")
    except GpuCheckError as err:
        problems.append(str(err))
    return StepOutcome(not problems, "; ".join(problems), data)


def _changed_onnx(src: Path, dst: Path) -> Path:
    """A copy of ``src`` with another ``doc_string``: appended protobuf field 6 of
    ModelProto (the last value of a singular field wins), so the graph is unchanged and the
    file still parses, but its sha256 differs."""
    tag = f"sam3d gpu_check {time.time_ns()}".encode()
    dst.write_bytes(src.read_bytes() + bytes([0x32, len(tag)]) + tag)
    return dst


def _stale_copy(cache: EngineCache, valid: EngineKey, target: EngineKey) -> None:
    """Put the engine and sidecar of ``valid`` where ``target``'s would be (an engine whose
    sidecar does not match the requested key)."""
    (src_e, src_s), (dst_e, dst_s) = cache.paths(valid), cache.paths(target)
    shutil.copyfile(src_e, dst_e)
    shutil.copyfile(src_s, dst_s)


def sidecar_rule_checks(
    cache: EngineCache, onnx: Path, key: EngineKey, work: Path, deserializes: Callable[[bytes], bool]
) -> dict[str, Any]:
    """Change one field of ``key`` at a time (precision, TensorRT version, ONNX file), put
    the valid engine of ``key`` where the changed key's engine belongs (a stale engine with
    a mismatching sidecar) and load through ``cache``: the stale engine must be refused
    (the reason names the field), rebuilt, loadable (``deserializes``) and valid after.

    Raises:
        GpuCheckError: the engine of ``key`` is not valid in ``cache`` to begin with.
    """
    first = cache.check(key)
    if first is not None:
        raise GpuCheckError(f"the engine the sidecar rules start from is not valid: {first}")
    changed = _changed_onnx(onnx, work / "changed.onnx")
    other_precision = "fp16" if key.precision == "fp32" else "fp32"
    cases = {
        "precision": (onnx, dataclasses.replace(key, precision=other_precision)),
        "tensorrt_version": (
            onnx,
            dataclasses.replace(key, tensorrt_version=f"{key.tensorrt_version}+other"),
        ),
        "onnx_sha256": (changed, dataclasses.replace(key, onnx_sha256=sha256_file(changed))),
    }
    out: dict[str, Any] = {}
    for field_name, (path, new_key) in cases.items():
        _stale_copy(cache, key, new_key)
        reason = cache.check(new_key)
        builds = cache.builds
        t0 = time.perf_counter()
        data = cache.load_or_build(path, new_key)
        out[field_name] = {
            "refused": reason is not None and field_name in reason,
            "reason": reason,
            "rebuilt": cache.builds == builds + 1,
            "rebuilt_engine_deserializes": bool(deserializes(data)),
            "valid_after": cache.check(new_key) is None,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    out["original_still_valid"] = cache.check(key) is None
    return out


def sidecar_problems(rules: dict[str, Any]) -> list[str]:
    """The sidecar rules of :func:`sidecar_rule_checks` that did not hold."""
    problems = []
    for name, r in rules.items():
        if name == "original_still_valid":
            if not r:
                problems.append("rebuilding for changed keys invalidated the original engine")
        elif not (r["refused"] and r["rebuilt"] and r["rebuilt_engine_deserializes"] and r["valid_after"]):
            problems.append(f"sidecar rule {name} did not hold: {r}")
    return problems


def _sidecar_rules(model_dir: Path, key: EngineKey, ctx: CheckContext) -> dict[str, Any]:
    """:func:`sidecar_rule_checks` with the real TensorRT builder and runtime."""
    import tensorrt as trt

    from sam3d_ros.backends.learned import ONNX_KEY, load_manifest, verified_file
    from sam3d_ros.backends.tensorrt_backend import build_engine

    onnx = verified_file(model_dir, load_manifest(model_dir), ONNX_KEY)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    return sidecar_rule_checks(
        EngineCache(ctx.engine_dir, build_engine),
        onnx,
        key,
        Path(ctx.work),
        lambda data: runtime.deserialize_cuda_engine(data) is not None,
    )


def step_engines(ctx: CheckContext) -> StepOutcome:
    """fp16/fp32 engines of every model through the backend's cache; reuse; sidecar rules."""
    from sam3d_ros.backends.tensorrt_backend import TensorRTBackend

    cfg = _config(max(SPEED_BATCHES))
    models, same = unique_model_dirs(ctx.model_dirs)
    data: dict[str, Any] = {"engine_dir": "temporary", "models": {}, "same_onnx_as": same}
    problems: list[str] = []
    fp32_key: tuple[Path, EngineKey] | None = None
    for model_dir in models:
        per_model: dict[str, Any] = {}
        for precision in PRECISIONS:
            t0 = time.perf_counter()
            first = TensorRTBackend(cfg, directory=model_dir, precision=precision, engine_dir=ctx.engine_dir)
            t1 = time.perf_counter()
            first_builds, key = first.cache.builds, first.key
            engine_path = first.cache.paths(key)[0]
            first.close()
            t2 = time.perf_counter()
            second = TensorRTBackend(cfg, directory=model_dir, precision=precision, engine_dir=ctx.engine_dir)
            t3 = time.perf_counter()
            second_builds = second.cache.builds
            second.close()
            per_model[precision] = {
                "first_start_builds": first_builds,
                "first_start_s": round(t1 - t0, 2),
                "second_start_builds": second_builds,
                "second_start_s": round(t3 - t2, 2),
                "engine_bytes": engine_path.stat().st_size,
                "gpu": key.gpu_name,
                "tensorrt": key.tensorrt_version,
                "max_batch": key.input_profile["observation"]["max"][0],
            }
            if first_builds != 1:
                problems.append(
                    f"{_label(model_dir)}/{precision}: first start in an empty cache built {first_builds}"
                )
            if second_builds != 0:
                problems.append(f"{_label(model_dir)}/{precision}: second start rebuilt instead of loading")
            if precision == "fp32" and fp32_key is None:
                fp32_key = (model_dir, key)
        data["models"][_label(model_dir)] = per_model
    if fp32_key is None:
        raise GpuCheckError("no model directory to build engines for")
    rules = _sidecar_rules(fp32_key[0], fp32_key[1], ctx)
    data["sidecar_rules"] = rules
    problems.extend(sidecar_problems(rules))
    return StepOutcome(not problems, "; ".join(problems), data)


def compare_outputs(
    ref: NetworkOutputs,
    out: NetworkOutputs,
    grids: Sequence[GridFrame],
    config: PipelineConfig,
    limits: ParityThresholds,
) -> tuple[dict[str, Any], list[str]]:
    """Differences of ``out`` from ``ref`` (logits, layout, voxel sets, meshes) and the
    thresholds they exceed (empty: parity holds).

    Returns:
        (statistics, violations): Chamfer in mm, IoUs in [0, 1].
    """
    d = np.abs(ref.occupancy_logits.astype(np.float64) - out.occupancy_logits.astype(np.float64))
    a, b = ref.occupancy_logits > 0, out.occupancy_logits > 0
    axes = tuple(range(1, a.ndim))
    union = np.maximum((a | b).sum(axis=axes), 1)
    voxel_iou = (a & b).sum(axis=axes) / union
    stats: dict[str, Any] = {
        "objects": len(grids),
        "max_abs_logit": float(d.max()) if d.size else 0.0,
        "mean_abs_logit": float(d.mean()) if d.size else 0.0,
        "max_abs_layout": float(np.abs(ref.layout - out.layout).max()) if ref.layout.size else 0.0,
        "max_abs_confidence": float(np.abs(ref.confidence - out.confidence).max())
        if ref.confidence.size
        else 0.0,
        "min_voxel_iou": float(voxel_iou.min()) if voxel_iou.size else 1.0,
    }
    chamfers: list[float] = []
    ious: list[float] = []
    mismatched = 0
    for sa, sb in zip(decode_outputs(ref, grids), decode_outputs(out, grids), strict=True):
        if sa is None or sb is None:
            mismatched += int((sa is None) != (sb is None))
            continue
        try:
            ma = mesh_from_voxels(sa, config.occupancy_threshold)
            mb = mesh_from_voxels(sb, config.occupancy_threshold)
            chamfers.append(chamfer_l1_mm(mb, ma, n=PARITY_MESH_SAMPLES, seed=0))
            ious.append(volume_iou(ma, mb, resolution=PARITY_IOU_RESOLUTION))
        except (MeshingError, MetricsError) as err:
            logger.warning("parity: one object could not be meshed by both runtimes: %s", err)
            mismatched += 1
    stats.update(
        meshed=len(chamfers),
        mesh_mismatches=mismatched,
        max_chamfer_mm=max(chamfers, default=0.0),
        median_chamfer_mm=float(np.median(chamfers)) if chamfers else 0.0,
        min_mesh_iou=min(ious, default=1.0),
        median_mesh_iou=float(np.median(ious)) if ious else 1.0,
    )
    bad = []
    for name in ("max_abs_logit", "mean_abs_logit", "max_chamfer_mm", "max_abs_layout"):
        if stats[name] > getattr(limits, name):
            bad.append(f"{name} {stats[name]:.4g} > {getattr(limits, name):.4g}")
    for name in ("min_voxel_iou", "min_mesh_iou"):
        if stats[name] < getattr(limits, name):
            bad.append(f"{name} {stats[name]:.4g} < {getattr(limits, name):.4g}")
    if mismatched:
        bad.append(f"{mismatched} objects meshed by one runtime only")
    if not chamfers:
        bad.append("no object was meshed: parity of the shapes was not measured")
    return stats, bad


def step_parity(ctx: CheckContext) -> StepOutcome:
    """TensorRT fp32/fp16 against ONNX Runtime CPU on encodings of synthetic frames."""
    from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sam3d_ros.backends.tensorrt_backend import TensorRTBackend

    cfg = _config(max(SPEED_BATCHES))
    frames = _frames(ctx, PARITY_OBJECTS, ctx.parity_frames, seed_base=PARITY_SEED)
    inputs, grids, _ = encode_frames(frames, cfg)
    if len(inputs) == 0:
        raise GpuCheckError("the parity frames gave no encodable object")
    data: dict[str, Any] = {"thresholds": {k: dataclasses.asdict(v) for k, v in PARITY_THRESHOLDS.items()}}
    problems: list[str] = []
    models, same = unique_model_dirs(ctx.model_dirs)
    data["same_onnx_as"] = same
    for model_dir in models:
        ref = OnnxRuntimeBackend(cfg, directory=model_dir, use_cuda=False).infer(inputs)
        per_model: dict[str, Any] = {}
        for precision in ("fp32", "fp16"):
            trt_backend = TensorRTBackend(
                cfg, directory=model_dir, precision=precision, engine_dir=ctx.engine_dir
            )
            try:
                out = trt_backend.infer(inputs)
            finally:
                trt_backend.close()
            stats, bad = compare_outputs(ref, out, grids, cfg, PARITY_THRESHOLDS[precision])
            stats["passed"] = not bad
            per_model[precision] = stats
            problems.extend(f"{_label(model_dir)}/{precision}: {b}" for b in bad)
        data[_label(model_dir)] = per_model
    return StepOutcome(not problems, "; ".join(problems), data)


def _junit_counts(path: Path) -> dict[str, Any]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    skips = sorted({str(e.get("message", "")) for e in root.iter("skipped")})
    return {**counts, "skip_reasons": skips}


def gpu_test_files(root: Path = ROOT) -> list[Path]:
    """Test files that hold tests marked ``gpu``."""
    return sorted(p for p in (root / "test").glob("test_*.py") if "pytest.mark.gpu" in p.read_text())


def step_pytest_gpu(ctx: CheckContext, timeout_s: float) -> StepOutcome:
    """``pytest -m gpu`` on the GPU test files; at least one test must run, none fail."""
    files = gpu_test_files()
    if not files:
        raise GpuCheckError("no test file has tests marked gpu")
    xml = Path(ctx.work) / "pytest_gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    cmd += [str(f.relative_to(ROOT)) for f in files]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        raise GpuCheckError(f"pytest -m gpu did not finish in {timeout_s:.0f} s") from err
    tail = (proc.stdout + proc.stderr)[-3000:]
    if not xml.is_file():
        return StepOutcome(False, f"pytest exited {proc.returncode} without a report", {"output_tail": tail})
    counts = _junit_counts(xml)
    ran = counts["tests"] - counts["skipped"]
    data = {"command": " ".join(cmd[1:]), "exit": proc.returncode, **counts, "ran": ran, "output_tail": tail}
    if proc.returncode != 0 or counts["failures"] or counts["errors"]:
        return StepOutcome(False, f"pytest -m gpu exited {proc.returncode}: {counts}", data)
    if ran < 1:
        return StepOutcome(
            False, f"all {counts['tests']} GPU tests were skipped: {counts['skip_reasons']}", data
        )
    return StepOutcome(True, "", data)


def _speed_backend(runtime: str, cfg: PipelineConfig, ctx: CheckContext) -> Any:
    if runtime == "torch_cuda":
        try:
            import torch
        except ImportError as err:
            raise StepUnavailableError(f"torch is not installed: {err}") from err
        if not torch.cuda.is_available():
            raise StepUnavailableError(f"torch {torch.__version__} sees no CUDA device")
        from sam3d_ros.backends.torch_backend import TorchBackend

        return TorchBackend(cfg, directory=Path(ctx.model_dirs[0]), device="cuda")
    if runtime.startswith("tensorrt_"):
        from sam3d_ros.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(
            cfg, directory=Path(ctx.model_dirs[0]), precision=runtime.split("_")[1], engine_dir=ctx.engine_dir
        )
    from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    use_cuda = runtime == "onnxruntime_cuda"
    if use_cuda:
        preload_cuda_libraries()
    backend = OnnxRuntimeBackend(cfg, directory=Path(ctx.model_dirs[0]), use_cuda=use_cuda)
    if use_cuda and "CUDAExecutionProvider" not in backend.providers:
        raise GpuCheckError(
            f"ONNX Runtime did not start its CUDA provider (session providers {backend.providers})"
        )
    return backend


def summarise_frames(timing: PipelineTiming, enc_ms_per_object: float) -> dict[str, Any]:
    """Median/p90 frame time, per-stage medians, the encoding share of the backend stage
    and the largest CPU-side stage (ms per frame)."""
    stages = timing.stage_medians()
    objects = float(statistics.median(timing.objects)) if timing.objects else 0.0
    encoding = round(enc_ms_per_object * objects, 1)
    cpu = {k: v for k, v in stages.items() if k in CPU_STAGES}
    cpu["encoding"] = encoding
    bound = max(cpu, key=lambda k: cpu[k]) if cpu else ""
    frame = float(statistics.median(timing.frame_ms))
    return {
        "frame_ms_median": round(frame, 1),
        "frame_ms_p90": round(float(np.percentile(timing.frame_ms, 90)), 1),
        "objects_median": objects,
        "stages_ms_median": stages,
        "encoding_ms_estimate": encoding,
        "backend_minus_encoding_ms": round(stages.get("backend", 0.0) - encoding, 1),
        "cpu_stages_ms": round(sum(cpu.values()), 1),
        "largest_cpu_stage": bound,
        "fps": round(1000.0 / frame, 1) if frame > 0 else None,
        "fits_30hz": frame <= CAMERA_PERIOD_MS,
    }


def step_speed(ctx: CheckContext, runtime: str) -> StepOutcome:
    """Network per object at :data:`SPEED_BATCHES` and the node's frame at
    :data:`FRAME_OBJECT_COUNTS` objects for one runtime."""
    cfg = _config(max(max(SPEED_BATCHES), max(FRAME_OBJECT_COUNTS)))
    backend = _speed_backend(runtime, cfg, ctx)  # first: a runtime that cannot start fails at once
    repeats = ctx.repeats if runtime != "onnxruntime_cpu" else max(3, int(ctx.repeats * CPU_REPEAT_FRACTION))
    build = ros_message_builder(cfg.marker_alpha)
    data: dict[str, Any] = {
        "runtime": runtime,
        "describe": backend.describe(),
        "repeats": repeats,
        "passes": ctx.passes,
        "frames_per_count": ctx.frames,
        "messages_measured": build is not None,
        "network_ms_per_object_median": {},
        "frame": {},
    }
    try:
        frames = {n: _frames(ctx, n, ctx.frames) for n in FRAME_OBJECT_COUNTS}
        inputs, _, _ = encode_frames(frames[max(FRAME_OBJECT_COUNTS)], cfg)
        for b in SPEED_BATCHES:
            data["network_ms_per_object_median"][str(b)] = _median(
                time_network(backend, batch_of(inputs, b), repeats)
            )
        for n, frs in frames.items():
            _, _, enc = encode_frames(frs, cfg)
            timing = time_pipeline(cfg, backend, frs, ctx.passes, build)
            data["frame"][str(n)] = summarise_frames(timing, float(statistics.median(enc)))
    finally:
        backend.close()
    return StepOutcome(True, "", data)


def step_cpu_reference(ctx: CheckContext) -> StepOutcome:
    """ONNX Runtime CPU on one frame: network ms per object at batch 1 and the frame's
    batch, and the node's frame (the CPU-side code of the speed steps, runnable anywhere)."""
    from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    cfg = _config()
    frames = _frames(ctx, FRAME_OBJECT_COUNTS[0], 1)
    inputs, _, enc = encode_frames(frames, cfg)
    backend = OnnxRuntimeBackend(cfg, directory=Path(ctx.model_dirs[0]), use_cuda=False)
    try:
        net = {str(b): _median(time_network(backend, batch_of(inputs, b), 3)) for b in (1, len(inputs))}
        timing = time_pipeline(cfg, backend, frames, 1, ros_message_builder(cfg.marker_alpha))
    finally:
        backend.close()
    data = {
        "describe": backend.describe(),
        "network_ms_per_object_median": net,
        "frame": {str(FRAME_OBJECT_COUNTS[0]): summarise_frames(timing, float(statistics.median(enc)))},
    }
    ok = len(inputs) > 0 and all(v > 0 for v in net.values())
    return StepOutcome(ok, "" if ok else "no timing measured", data)


# ----------------------------------------------------------------------------- plan

_StepFn = Callable[[CheckContext, float], StepOutcome]

STEPS: Final[tuple[StepSpec, ...]] = (
    StepSpec("wheel_selection", 20, "GPU wheels for the driver's CUDA version", dry_run=True, isolated=False),
    StepSpec("environment", 40, "nvidia-smi, TensorRT, cuda-python, ONNX Runtime CUDA provider"),
    StepSpec("engines", 200, "fp16/fp32 engines per model via the engine cache; reuse; sidecar rules"),
    StepSpec("parity", 60, "TensorRT fp32/fp16 vs ONNX Runtime CPU: logits, voxel IoU, mesh Chamfer/IoU"),
    StepSpec("speed_tensorrt_fp16", 60, "TensorRT fp16: batch 1/8/32 per object, frames of 5/10/20 objects"),
    StepSpec("speed_tensorrt_fp32", 50, "TensorRT fp32: batch 1/8/32 per object, frames of 5/10/20 objects"),
    StepSpec("speed_onnxruntime_cuda", 50, "ONNX Runtime CUDA: batch 1/8/32, frames of 5/10/20 objects"),
    StepSpec("speed_onnxruntime_cpu", 70, "ONNX Runtime CPU: batch 1/8/32, frames of 5/10/20 objects"),
    StepSpec(
        "speed_torch_cuda",
        50,
        "optional, PyTorch on the GPU (the reference backend): batch 1/8/32, frames of 5/10/20 objects",
        optional=True,
    ),
    StepSpec("pytest_gpu", 150, "pytest -m gpu (at least one GPU test must run)"),
    StepSpec(
        "cpu_reference", 60, "ONNX Runtime CPU on one frame (dry run only)", dry_run=True, real_run=False
    ),
)
STEP_NAMES: Final[tuple[str, ...]] = tuple(s.name for s in STEPS)

_STEP_FUNCTIONS: Final[dict[str, _StepFn]] = {
    "wheel_selection": lambda ctx, _t: step_wheel_selection(ctx),
    "environment": lambda ctx, _t: step_environment(ctx),
    "engines": lambda ctx, _t: step_engines(ctx),
    "parity": lambda ctx, _t: step_parity(ctx),
    "pytest_gpu": lambda ctx, t: step_pytest_gpu(ctx, max(t - 5.0, 5.0)),
    "speed_tensorrt_fp16": lambda ctx, _t: step_speed(ctx, "tensorrt_fp16"),
    "speed_tensorrt_fp32": lambda ctx, _t: step_speed(ctx, "tensorrt_fp32"),
    "speed_onnxruntime_cuda": lambda ctx, _t: step_speed(ctx, "onnxruntime_cuda"),
    "speed_onnxruntime_cpu": lambda ctx, _t: step_speed(ctx, "onnxruntime_cpu"),
    "speed_torch_cuda": lambda ctx, _t: step_speed(ctx, "torch_cuda"),
    "cpu_reference": lambda ctx, _t: step_cpu_reference(ctx),
}


def plan_steps(dry_run: bool, selected: Sequence[str] | None = None) -> list[tuple[StepSpec, bool]]:
    """Every step with whether it runs: in a dry run only the ``dry_run`` steps, in a real
    run the ``real_run`` steps; ``selected`` (names) narrows either.

    Raises:
        GpuCheckError: an unknown step name (listing the valid ones).
    """
    chosen = set(selected) if selected else None
    if chosen is not None and not chosen <= set(STEP_NAMES):
        raise GpuCheckError(
            f"unknown steps {sorted(chosen - set(STEP_NAMES))}; valid steps: {list(STEP_NAMES)}"
        )
    out = []
    for spec in STEPS:
        if not (spec.dry_run if dry_run else spec.real_run):
            if dry_run:
                out.append((spec, False))
            continue
        out.append((spec, chosen is None or spec.name in chosen))
    return out


# ----------------------------------------------------------------------------- running


def run_step_in_process(name: str, ctx: CheckContext, timeout_s: float) -> StepOutcome:
    """Run one step here (the body of a step process); runtime errors become failures."""
    fn = _STEP_FUNCTIONS[name]
    try:
        return fn(ctx, timeout_s)
    except StepUnavailableError as err:
        return StepOutcome(False, f"not available here: {err}", {"unavailable": True})
    except (GpuCheckError, BackendError, EngineCacheError, BenchError) as err:
        return StepOutcome(False, f"{type(err).__name__}: {err}")
    except ImportError as err:
        return StepOutcome(False, f"a package is missing: {err}")


def _result_path(ctx: CheckContext, name: str) -> Path:
    return Path(ctx.out) / "steps" / f"{name}.json"


def run_step_subprocess(spec: StepSpec, ctx: CheckContext, ctx_file: Path, timeout_s: float) -> StepResult:
    """Run ``spec`` in a child process with ``timeout_s``; its log goes to ``logs/``."""
    result_file = _result_path(ctx, spec.name)
    result_file.unlink(missing_ok=True)
    log = Path(ctx.out) / "logs" / f"{spec.name}.log"
    cmd = [
        sys.executable,
        "-m",
        "sam3d_ros.tools.gpu_check",
        "--run-step",
        spec.name,
        "--context",
        str(ctx_file),
    ]
    cmd += ["--step-timeout", f"{timeout_s:.1f}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            proc = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s, env=env, cwd=ROOT
            )
        except subprocess.TimeoutExpired:
            return StepResult(
                spec.name, FAILED, f"timed out after {timeout_s:.0f} s", time.perf_counter() - t0
            )
    seconds = round(time.perf_counter() - t0, 2)
    if not result_file.is_file():
        tail = log.read_text()[-1500:]
        return StepResult(
            spec.name, FAILED, f"step process exited {proc.returncode} without a result: {tail}", seconds
        )
    return step_result(spec, StepOutcome(**json.loads(result_file.read_text())), seconds)


def step_result(spec: StepSpec, outcome: StepOutcome, seconds: float) -> StepResult:
    """The report entry of a step's outcome: an optional step whose runtime is missing is
    skipped with the reason; any other outcome that did not pass is failed."""
    if outcome.passed:
        return StepResult(spec.name, PASSED, outcome.reason, seconds, outcome.data)
    if spec.optional and outcome.data.get("unavailable"):
        return StepResult(
            spec.name, SKIPPED, f"skipped (optional step): {outcome.reason}", seconds, outcome.data
        )
    return StepResult(spec.name, FAILED, outcome.reason, seconds, outcome.data)


def run_check(
    ctx: CheckContext, dry_run: bool, selected: Sequence[str] | None, budget_s: float
) -> list[StepResult]:
    """All steps of the plan, each in its own process, within ``budget_s`` seconds."""
    out = Path(ctx.out)
    (out / "steps").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    ctx_file = Path(ctx.work) / "context.json"
    ctx_file.write_text(ctx.to_json())
    deadline = time.monotonic() + budget_s
    plan = plan_steps(dry_run, selected)
    for spec, runs in plan:
        logger.info(
            "plan: %-24s %s (timeout %.0f s): %s",
            spec.name,
            "runs" if runs else "skipped",
            spec.timeout_s,
            spec.summary,
        )
    results = []
    for spec, runs in plan:
        if not runs:
            reason = DRY_RUN_REASON if dry_run else "skipped: not selected (--steps)"
            results.append(StepResult(spec.name, SKIPPED, reason))
            continue
        left = deadline - time.monotonic()
        if left < MIN_STEP_S:
            results.append(
                StepResult(spec.name, FAILED, f"not run: the check's {budget_s:.0f} s budget was spent")
            )
            continue
        logger.info("step %s (at most %.0f s)", spec.name, min(spec.timeout_s, left))
        if spec.isolated:
            res = run_step_subprocess(spec, ctx, ctx_file, min(spec.timeout_s, left))
        else:
            t0 = time.perf_counter()
            o = run_step_in_process(spec.name, ctx, min(spec.timeout_s, left))
            res = step_result(spec, o, round(time.perf_counter() - t0, 2))
        logger.info("step %s: %s in %.1f s %s", spec.name, res.status, res.seconds, res.reason[:300])
        results.append(res)
    return results


def setup_results(seconds: float | None, failed: str) -> list[StepResult]:
    """The set-up of ``gpu_check.sh`` as a step of the report (none when not given)."""
    if failed:
        return [StepResult("setup", FAILED, f"set-up failed: {failed}", round(seconds or 0.0, 1))]
    if seconds is not None:
        return [StepResult("setup", PASSED, "", round(seconds, 1))]
    return []


def check_ok(results: Sequence[StepResult], dry_run: bool = False) -> bool:
    """True when no step failed and (in a real run) at least one step passed."""
    return not any(r.status == FAILED for r in results) and (
        dry_run or any(r.status == PASSED for r in results)
    )


# ----------------------------------------------------------------------------- report


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value).replace("|", "/").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    """The markdown tables of a report (see :func:`build_report`)."""
    steps = {s["name"]: s for s in report["steps"]}
    env = steps.get("environment", {}).get("data", {})
    smi = env.get("nvidia_smi", {})
    lines = [
        "# GPU check",
        "",
        f"**{report['message']}**",
        "",
        f"- date: {report['finished']}",
        f"- GPU: {smi.get('gpu') or 'n/a'} (compute capability {env.get('compute_capability', 'n/a')})",
        f"- driver: {smi.get('driver_version') or 'n/a'}, CUDA {smi.get('cuda_version') or report.get('cuda_version') or 'n/a'}",
        f"- TensorRT: {env.get('tensorrt', 'n/a')}; cuda-python: {env.get('cuda_python', 'n/a')}; "
        f"ONNX Runtime: {env.get('onnxruntime', 'n/a')}",
        f"- command: `{report['command']}`",
        "",
        "## Steps",
        "",
        *_table(
            ["step", "status", "s", "detail"],
            [[s["name"], s["status"].upper(), s["seconds"], s["reason"][:300]] for s in report["steps"]],
        ),
    ]
    parity = steps.get("parity", {}).get("data", {})
    rows = [
        [model, p, st["max_abs_logit"], st["mean_abs_logit"], st["min_voxel_iou"], st["max_chamfer_mm"],
         st["min_mesh_iou"], "yes" if st["passed"] else "NO"]
        for model, per in parity.items() if isinstance(per, dict) and model not in ("thresholds", "same_onnx_as")
        for p, st in per.items() if isinstance(st, dict)
    ]  # fmt: skip
    engines = steps.get("engines", {}).get("data", {})
    if engines.get("models"):
        lines += ["", "## Engines (through the engine cache, empty temporary directory)", ""]
        lines += _table(
            ["model", "precision", "first start s", "builds", "second start s", "builds", "engine bytes"],
            [
                [m, p, e["first_start_s"], e["first_start_builds"], e["second_start_s"], e["second_start_builds"],
                 e["engine_bytes"]]
                for m, per in engines["models"].items()
                for p, e in per.items()
            ],
        )  # fmt: skip
        rules = engines.get("sidecar_rules", {})
        lines += ["", "Sidecar rules (stale engine under the changed key's name):", ""]
        lines += _table(
            ["changed", "refused", "rebuilt", "rebuilt loads", "valid after", "s"],
            [
                [
                    k,
                    r["refused"],
                    r["rebuilt"],
                    r["rebuilt_engine_deserializes"],
                    r["valid_after"],
                    r["seconds"],
                ]
                for k, r in rules.items()
                if isinstance(r, dict)
            ],
        )
        for label, first in engines.get("same_onnx_as", {}).items():
            lines.append(f"\n{label}: same ONNX as {first} (not built again)")
    if rows:
        lines += ["", "## Parity (TensorRT vs ONNX Runtime CPU)", ""]
        lines += _table(
            ["model", "precision", "max abs logit", "mean abs logit", "min voxel IoU", "max Chamfer mm",
             "min mesh IoU", "within thresholds"],
            rows,
        )  # fmt: skip
    speed = [
        (n[len("speed_") :], s["data"])
        for n, s in steps.items()
        if n.startswith("speed_") and s.get("data", {}).get("frame")
    ]
    if speed:
        lines += ["", "## Speed (ms; network per object, node per frame)", ""]
        header = [
            "runtime",
            *[f"net b{b}" for b in SPEED_BATCHES],
            *[f"frame {n} obj" for n in FRAME_OBJECT_COUNTS],
        ]
        lines += _table(
            header,
            [
                [rt, *[d["network_ms_per_object_median"].get(str(b)) for b in SPEED_BATCHES],
                 *[d["frame"].get(str(n), {}).get("frame_ms_median") for n in FRAME_OBJECT_COUNTS]]
                for rt, d in speed
            ],
        )  # fmt: skip
        lines += ["", "Per-stage medians (ms per frame; encoding is part of backend):", ""]
        stage_names = [
            "plane",
            "observations",
            "encoding",
            "backend",
            "tracking",
            "meshing",
            "collision",
            "messages",
        ]
        rows = []
        for rt, d in speed:
            for n, fr in d["frame"].items():
                st = dict(fr["stages_ms_median"], encoding=fr["encoding_ms_estimate"])
                rows.append([rt, n, *[st.get(k) for k in stage_names], fr["largest_cpu_stage"], fr["fps"]])
        lines += _table(["runtime", "objects", *stage_names, "largest CPU stage", "fps"], rows)
    ref = steps.get("cpu_reference", {}).get("data", {})
    if ref:
        lines += ["", "## CPU reference (ONNX Runtime CPU, one frame)", ""]
        lines += ["```json", json.dumps(ref, indent=1), "```"]
    wheels = steps.get("wheel_selection", {}).get("data", {})
    if wheels:
        lines += ["", "## Wheels", "", "```json", json.dumps(wheels, indent=1), "```"]
    return "\n".join(lines) + "\n"


def build_report(
    results: Sequence[StepResult], dry_run: bool, ctx: CheckContext, command: str, started: str
) -> dict[str, Any]:
    """The JSON report: machine, plan, every step's result, thresholds, overall status."""
    ok = check_ok(results, dry_run)
    failed = [r.name for r in results if r.status == FAILED]
    if dry_run:
        message = "DRY RUN: no GPU step was run (each is marked 'skipped: dry run'); " + (
            "the CPU-side parts passed" if ok else f"CPU-side parts FAILED: {', '.join(failed)}"
        )
    else:
        message = "GPU check PASSED" if ok else f"GPU check FAILED: {', '.join(failed) or 'no step passed'}"
    return {
        "tool": "sam3d_ros gpu_check",
        "report_version": REPORT_VERSION,
        "dry_run": dry_run,
        "ok": ok,
        "message": message,
        "started": started,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "cuda_version": ctx.cuda_version,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "models": [
            str(Path(m).relative_to(ROOT)) if Path(m).is_relative_to(ROOT) else m for m in ctx.model_dirs
        ],
        "plan": [
            {"name": s.name, "timeout_s": s.timeout_s, "summary": s.summary, "runs": runs}
            for s, runs in plan_steps(dry_run)
        ],
        "thresholds": {k: dataclasses.asdict(v) for k, v in PARITY_THRESHOLDS.items()},
        "steps": [r.to_dict() for r in results],
    }


def write_report(out: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``gpu_check.json`` and ``gpu_check.md`` into ``out``; returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / JSON_NAME, out / MD_NAME
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    md_path.write_text(markdown_report(report))
    return json_path, md_path


# ----------------------------------------------------------------------------- CLI


def default_out_dir() -> Path:
    """``$OUT`` when set, else ``build/gpu_check`` in the repository."""
    env = os.environ.get("OUT")
    return Path(env) if env else ROOT / DEFAULT_OUT


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see ``--help``)."""
    ap = argparse.ArgumentParser(
        prog="python -m sam3d_ros.tools.gpu_check",
        description="TensorRT engines, parity and speed of the network on an NVIDIA GPU (see the module docstring).",
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="run only the CPU-side parts; every GPU step is skipped"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="report directory (default: $OUT, else build/gpu_check)"
    )
    ap.add_argument(
        "--cuda-version", default="", help="the driver's CUDA version for the wheel selection, e.g. 12.4"
    )
    ap.add_argument("--steps", default="", help=f"comma-separated subset of: {', '.join(STEP_NAMES)}")
    ap.add_argument(
        "--models", type=Path, nargs="+", default=None, help="model directories (default: shipped ones)"
    )
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="time budget of all steps (s)")
    ap.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="speed frames per object count")
    ap.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed network calls per batch size")
    ap.add_argument(
        "--passes", type=int, default=DEFAULT_PASSES, help="passes over the frames for the node timing"
    )
    ap.add_argument(
        "--keep-work", action="store_true", help="keep the temporary work directory (engines, frames)"
    )
    ap.add_argument(
        "--setup-seconds", type=float, default=None, help="set-up time to report (from gpu_check.sh)"
    )
    ap.add_argument("--setup-failed", default="", help="why the set-up failed (from gpu_check.sh)")
    ap.add_argument("--run-step", default="", help=argparse.SUPPRESS)
    ap.add_argument("--context", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--step-timeout", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.budget_s <= 0 or args.frames < 1 or args.repeats < 1 or args.passes < 1:
        ap.error("--budget-s, --frames, --repeats and --passes must be positive")
    if args.run_step and (args.run_step not in STEP_NAMES or args.context is None):
        ap.error(f"--run-step needs a step of {list(STEP_NAMES)} and --context")
    return args


def _step_main(args: argparse.Namespace) -> int:
    ctx = CheckContext.from_json(Path(args.context).read_text())
    outcome = run_step_in_process(args.run_step, ctx, args.step_timeout or 60.0)
    path = _result_path(ctx, args.run_step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(outcome), indent=1, default=str))
    return 0 if outcome.passed else STEP_FAILED_EXIT


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check (or, with the hidden ``--run-step``, one step); see the module docstring."""
    logging.basicConfig(level=logging.INFO, format="[gpu_check] %(message)s")
    args = parse_args(argv)
    if args.run_step:
        return _step_main(args)
    selected = [s.strip() for s in args.steps.split(",") if s.strip()] or None
    try:
        plan_steps(args.dry_run, selected)
    except GpuCheckError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2
    out = (args.out or default_out_dir()).resolve()
    models = tuple(str(Path(m).resolve()) for m in (args.models or default_model_dirs()))
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    work = tempfile.mkdtemp(prefix="sam3d_gpu_check_")
    ctx = CheckContext(
        work=work,
        out=str(out),
        model_dirs=models,
        cuda_version=args.cuda_version,
        frames=args.frames,
        repeats=args.repeats,
        passes=args.passes,
    )
    try:
        results = setup_results(args.setup_seconds, args.setup_failed)
        results += run_check(ctx, args.dry_run, selected, args.budget_s)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    command = "python -m sam3d_ros.tools.gpu_check " + " ".join(sys.argv[1:] if argv is None else argv)
    report = build_report(results, args.dry_run, ctx, command.strip(), started)
    json_path, md_path = write_report(out, report)
    print(report["message"])
    for r in results:
        print(f"  {r.status.upper():7s} {r.name:24s} {r.seconds:7.1f} s  {r.reason[:200]}")
    print(f"report: {json_path} and {md_path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
