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
``speed_tensorrt_fp16``, ``speed_tensorrt_fp32``, ``speed_onnxruntime_cuda``, ``speed_onnxruntime_cpu``
    Per runtime (each in its own process: one CUDA runtime per process): network ms per
    object at batch :data:`SPEED_BATCHES`, and the node's frame with
    :data:`FRAME_OBJECT_COUNTS` objects (median and p90 ms, per-stage medians, the encoding
    share of the backend stage, and the largest CPU-side stage, which bounds the frame rate
    once the network is fast).
``speed_torch_cuda``
    Optional: the same with the PyTorch reference backend on the GPU; skipped (not failed)
    where torch has no CUDA device.
``pytest_gpu``
    ``pytest -m gpu`` on the test files that have GPU tests; passes only when at least one
    GPU test ran and none failed (all skipped is a failure here).
``cpu_reference``
    Dry runs only: ONNX Runtime on the CPU on a tiny workload (one frame), so that a dry
    run exercises the real encoding, runtime and pipeline code.

The steps themselves live in :mod:`sam3d_ros.tools.gpu_steps`; this module (plan, step
processes, report) imports no third-party package, so a report is always written.

Writes ``gpu_check.json`` (everything) and ``gpu_check.md`` (tables) into ``--out``
(default ``$OUT`` when set, else ``build/gpu_check``), and the steps' output into
``gpu_check.log``: three files, nothing else.
Exit status 0 when every step that was meant to run passed, 1 otherwise, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sam3d_ros.tools.gpu_setup import GpuCheckError, select_wheels

logger = logging.getLogger(__name__)

ROOT: Final[Path] = Path(__file__).resolve().parents[2]
JSON_NAME: Final[str] = "gpu_check.json"
MD_NAME: Final[str] = "gpu_check.md"
#: The steps' output, one file (a device machine returns few files from $OUT).
LOG_NAME: Final[str] = "gpu_check.log"
REPORT_VERSION: Final[int] = 1
#: Output directory when neither --out nor $OUT is given (relative to the repository).
DEFAULT_OUT: Final[Path] = Path("build") / "gpu_check"
#: The models' manifest (as ``sam3d_ros.backends.learned.MANIFEST_NAME``, not imported here).
MANIFEST_NAME: Final[str] = "manifest.json"
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
            (``gpu_steps.StepUnavailableError``), the step is skipped with the reason, not failed.
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
        out: the output directory (report and log).
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


# ----------------------------------------------------------------------------- helpers


def default_model_dirs(root: Path = ROOT) -> tuple[Path, ...]:
    """``models/`` and every ``models/*/`` that holds a manifest, sorted."""
    base = root / "models"
    subdirs = sorted(p for p in base.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file())
    return (base, *subdirs) if (base / MANIFEST_NAME).is_file() else tuple(subdirs)


def model_label(model_dir: Path) -> str:
    """A model directory as reported: relative to the repository when inside it."""
    return str(model_dir.relative_to(ROOT)) if model_dir.is_relative_to(ROOT) else str(model_dir)


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


# ----------------------------------------------------------------------------- plan

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
    """Run one step in this process: ``wheel_selection`` here, the others through
    :mod:`sam3d_ros.tools.gpu_steps` (a package it needs that does not import fails the
    step with the reason)."""
    if name == "wheel_selection":
        try:
            return step_wheel_selection(ctx)
        except GpuCheckError as err:
            return StepOutcome(False, f"{type(err).__name__}: {err}")
    try:
        from sam3d_ros.tools import gpu_steps
    except ImportError as err:
        return StepOutcome(False, f"a package is missing: {err}")
    return gpu_steps.run_step_in_process(name, ctx, timeout_s)


def _result_path(ctx: CheckContext, name: str) -> Path:
    return Path(ctx.work) / "steps" / f"{name}.json"


def _append_log(ctx: CheckContext, name: str, status: str, text: str) -> None:
    """Append one step's output to the run's single log file ``LOG_NAME`` in ``out``."""
    with (Path(ctx.out) / LOG_NAME).open("a") as f:
        f.write(f"===== step {name}: {status} =====\n{text.rstrip()}\n\n")


def run_step_subprocess(spec: StepSpec, ctx: CheckContext, ctx_file: Path, timeout_s: float) -> StepResult:
    """Run ``spec`` in a child process with ``timeout_s``; its output is appended to
    ``LOG_NAME``."""
    result_file = _result_path(ctx, spec.name)
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    log = Path(ctx.work) / f"{spec.name}.log"
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
            proc = None
    seconds = round(time.perf_counter() - t0, 2)
    output = log.read_text(errors="replace")
    if proc is None:
        res = StepResult(spec.name, FAILED, f"timed out after {timeout_s:.0f} s", seconds)
    elif not result_file.is_file():
        reason = f"step process exited {proc.returncode} without a result: {output[-1500:]}"
        res = StepResult(spec.name, FAILED, reason, seconds)
    else:
        res = step_result(spec, StepOutcome(**json.loads(result_file.read_text())), seconds)
    _append_log(ctx, spec.name, res.status, output)
    return res


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
    ctx: CheckContext,
    dry_run: bool,
    selected: Sequence[str] | None,
    budget_s: float,
    on_step: Callable[[list[StepResult]], None] | None = None,
) -> list[StepResult]:
    """All steps of the plan, each in its own process, within ``budget_s`` seconds;
    ``on_step`` gets the results so far after each step that ran (interim reports)."""
    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / LOG_NAME).write_text("")
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
        if on_step is not None:
            on_step(results)
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
        f"- TensorRT: {env.get('tensorrt') or 'n/a'}; cuda-bindings: {env.get('cuda_python') or 'n/a'}; "
        f"ONNX Runtime: {env.get('onnxruntime') or 'n/a'}",
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
        "models": [model_label(Path(m)) for m in ctx.model_dirs],
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
    command = "python -m sam3d_ros.tools.gpu_check " + " ".join(sys.argv[1:] if argv is None else argv)
    setup = setup_results(args.setup_seconds, args.setup_failed)

    def interim(done: list[StepResult]) -> None:
        # a run killed from outside still leaves the steps it finished behind
        report = build_report([*setup, *done], args.dry_run, ctx, command.strip(), started)
        report["message"] = f"INCOMPLETE (still running after {done[-1].name}): {report['message']}"
        write_report(out, report)

    try:
        results = [*setup, *run_check(ctx, args.dry_run, selected, args.budget_s, interim)]
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    report = build_report(results, args.dry_run, ctx, command.strip(), started)
    json_path, md_path = write_report(out, report)
    print(report["message"])
    for r in results:
        print(f"  {r.status.upper():7s} {r.name:24s} {r.seconds:7.1f} s  {r.reason[:200]}")
    print(f"report: {json_path} and {md_path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
