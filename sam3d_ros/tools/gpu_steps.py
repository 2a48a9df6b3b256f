"""The steps of the GPU check (:mod:`sam3d_ros.tools.gpu_check`), run in step processes.

Each ``step_*`` function takes the run's :class:`~sam3d_ros.tools.gpu_check.CheckContext`
and returns a :class:`~sam3d_ros.tools.gpu_check.StepOutcome`; :func:`run_step_in_process`
turns the errors of an unusable runtime into a failed outcome with the reason (an optional
step's missing runtime into an "unavailable" one). This module imports numpy, the package's
core and the backends; the check's own process does not, so a report is written even
where they do not import (the steps then fail with the missing package).

TensorRT, cuda-bindings, ONNX Runtime and torch are imported inside the steps that use them.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from sam3d_ros.backends.engine_cache import EngineCache, EngineCacheError, EngineKey
from sam3d_ros.backends.learned import NetworkOutputs, decode_outputs, sha256_file
from sam3d_ros.core.backend import BackendError
from sam3d_ros.core.config import NodeConfig, PipelineConfig, default_config, default_node_config
from sam3d_ros.core.encoding import GridFrame
from sam3d_ros.core.meshing import MeshingError, mesh_from_voxels
from sam3d_ros.core.metrics import MetricsError, chamfer_l1_mm, volume_iou
from sam3d_ros.core.types import RGBDFrame
from sam3d_ros.tools.gpu_check import (
    CAMERA_PERIOD_MS,
    CPU_REPEAT_FRACTION,
    CPU_STAGES,
    FRAME_OBJECT_COUNTS,
    PARITY_IOU_RESOLUTION,
    PARITY_MESH_SAMPLES,
    PARITY_OBJECTS,
    PARITY_SEED,
    PARITY_THRESHOLDS,
    PRECISIONS,
    ROOT,
    SPEED_BATCHES,
    CheckContext,
    ParityThresholds,
    StepOutcome,
    model_label,
)
from sam3d_ros.tools.gpu_setup import GpuCheckError, parse_nvidia_smi
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


class StepUnavailableError(GpuCheckError):
    """An optional step's runtime is not installed or sees no GPU."""


def _median(values: Sequence[float]) -> float:
    return round(float(statistics.median(values)), 3)


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
            same[model_label(d)] = seen[sha]
            continue
        seen[sha] = model_label(d)
        unique.append(d)
    return unique, same


def _config(max_objects: int | None = None) -> PipelineConfig:
    cfg = default_config()
    if max_objects is not None and cfg.max_objects < max_objects:
        cfg = dataclasses.replace(cfg, max_objects=max_objects)
    return cfg


def _node_config(max_objects: int | None = None) -> NodeConfig:
    """The node's defaults around :func:`_config` (for the frame timing)."""
    return dataclasses.replace(default_node_config(), pipeline=_config(max_objects))


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
            n_graphs = len(getattr(first, "stages", ("shape",)))
            per_model[precision]["graphs"] = n_graphs
            if first_builds != n_graphs:
                problems.append(
                    f"{model_label(model_dir)}/{precision}: first start in an empty cache built {first_builds} "
                    f"engines for {n_graphs} graphs"
                )
            if second_builds != 0:
                problems.append(
                    f"{model_label(model_dir)}/{precision}: second start rebuilt instead of loading"
                )
            if precision == "fp32" and fp32_key is None:
                fp32_key = (model_dir, key)
        data["models"][model_label(model_dir)] = per_model
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
    """Differences of ``out`` from ``ref`` (logits, layout, voxel sets, meshes; a
    layout-only graph: layout and confidence) and the thresholds they exceed (empty: parity
    holds).

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
        "min_voxel_iou": float(voxel_iou.min()) if voxel_iou.size and a[0].size else 1.0,
    }
    chamfers: list[float] = []
    ious: list[float] = []
    mismatched = 0
    # a layout-only graph (a two-stage model's stage 1) has no occupancy to mesh
    has_shapes = ref.occupancy_logits.ndim == 4 and ref.occupancy_logits.shape[1] > 0
    pairs = (
        zip(decode_outputs(ref, grids), decode_outputs(out, grids), strict=True) if has_shapes else iter(())
    )
    for sa, sb in pairs:
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
    if has_shapes and not chamfers:
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
        ort_backend = OnnxRuntimeBackend(cfg, directory=model_dir, use_cuda=False)
        stages = tuple(getattr(ort_backend, "stages", ("shape",)))
        refs = {stage: ort_backend.infer(inputs, stage) for stage in stages}
        per_model: dict[str, Any] = {}
        for precision in ("fp32", "fp16"):
            trt_backend = TensorRTBackend(
                cfg, directory=model_dir, precision=precision, engine_dir=ctx.engine_dir
            )
            try:
                outs = {stage: trt_backend.infer(inputs, stage) for stage in stages}
            finally:
                trt_backend.close()
            # every stage graph on the same encodings (stage 2 sees stage-1 cubes here: a
            # parity check of the graph, not of the two-stage pipeline)
            for stage in stages:
                stats, bad = compare_outputs(
                    refs[stage], outs[stage], grids, cfg, PARITY_THRESHOLDS[precision]
                )
                stats["passed"] = not bad
                label = precision if stage == "shape" else f"{precision}/{stage}"
                per_model[label] = stats
                problems.extend(f"{model_label(model_dir)}/{label}: {b}" for b in bad)
        data[model_label(model_dir)] = per_model
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
    node_cfg = _node_config(max(max(SPEED_BATCHES), max(FRAME_OBJECT_COUNTS)))
    cfg = node_cfg.pipeline
    backend = _speed_backend(runtime, cfg, ctx)  # first: a runtime that cannot start fails at once
    repeats = ctx.repeats if runtime != "onnxruntime_cpu" else max(3, int(ctx.repeats * CPU_REPEAT_FRACTION))
    build = ros_message_builder(node_cfg.marker_alpha)
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
            timing = time_pipeline(node_cfg, backend, frs, ctx.passes, build)
            data["frame"][str(n)] = summarise_frames(timing, float(statistics.median(enc)))
    finally:
        backend.close()
    return StepOutcome(True, "", data)


def step_cpu_reference(ctx: CheckContext) -> StepOutcome:
    """ONNX Runtime CPU on one frame: network ms per object at batch 1 and the frame's
    batch, and the node's frame (the CPU-side code of the speed steps, runnable anywhere)."""
    from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    node_cfg = _node_config()
    cfg = node_cfg.pipeline
    frames = _frames(ctx, FRAME_OBJECT_COUNTS[0], 1)
    inputs, _, enc = encode_frames(frames, cfg)
    backend = OnnxRuntimeBackend(cfg, directory=Path(ctx.model_dirs[0]), use_cuda=False)
    try:
        net = {str(b): _median(time_network(backend, batch_of(inputs, b), 3)) for b in (1, len(inputs))}
        timing = time_pipeline(node_cfg, backend, frames, 1, ros_message_builder(node_cfg.marker_alpha))
    finally:
        backend.close()
    data = {
        "describe": backend.describe(),
        "network_ms_per_object_median": net,
        "frame": {str(FRAME_OBJECT_COUNTS[0]): summarise_frames(timing, float(statistics.median(enc)))},
    }
    ok = len(inputs) > 0 and all(v > 0 for v in net.values())
    return StepOutcome(ok, "" if ok else "no timing measured", data)


_StepFn = Callable[[CheckContext, float], StepOutcome]

#: The steps that run in step processes (``wheel_selection`` runs in the check's process).
STEP_FUNCTIONS: Final[dict[str, _StepFn]] = {
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


def run_step_in_process(name: str, ctx: CheckContext, timeout_s: float) -> StepOutcome:
    """Run one step here (the body of a step process); runtime errors become failures."""
    fn = STEP_FUNCTIONS[name]
    try:
        return fn(ctx, timeout_s)
    except StepUnavailableError as err:
        return StepOutcome(False, f"not available here: {err}", {"unavailable": True})
    except (GpuCheckError, BackendError, EngineCacheError, BenchError) as err:
        return StepOutcome(False, f"{type(err).__name__}: {err}")
    except ImportError as err:
        return StepOutcome(False, f"a package is missing: {err}")
