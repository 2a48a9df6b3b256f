"""The GPU check's CPU-side parts: wheel selection, argument handling, the plan, report
writing, the parity comparison, the sidecar rules with a fake builder, failures reported as
failures, and the dry run end to end through scripts/gpu_check.sh (no GPU needed)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sam3d_ros.backends.engine_cache import EngineCache, EngineKey
from sam3d_ros.backends.learned import MANIFEST_NAME, NetworkOutputs, sha256_file
from sam3d_ros.core.config import default_config
from sam3d_ros.core.encoding import GRID_SIZE, GridFrame
from sam3d_ros.tools import gpu_check as gc
from sam3d_ros.tools import gpu_setup as gs
from sam3d_ros.tools import gpu_steps as gst

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
MODELS = ROOT / "models"
GPU_STEPS = [s.name for s in gc.STEPS if not s.dry_run]

SMI_HEADER = """\
Tue Dec  1 10:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("OUT", None)
    return env


# --------------------------------------------------------------------------- wheel selection


@pytest.mark.parametrize(
    ("version", "major", "trt", "cuda_python", "ort"),
    [
        (
            "12.4",
            12,
            "tensorrt-cu12>=10.3,<11",
            "cuda-bindings>=12.6,<13",
            "onnxruntime-gpu[cuda,cudnn]>=1.21,<1.27",
        ),
        (
            "12.0",
            12,
            "tensorrt-cu12>=10.3,<11",
            "cuda-bindings>=12.6,<13",
            "onnxruntime-gpu[cuda,cudnn]>=1.21,<1.27",
        ),
        (
            "13.0",
            13,
            "tensorrt-cu13>=10.13,<11",
            "cuda-bindings>=13.0,<14",
            "onnxruntime-gpu[cuda,cudnn]>=1.27",
        ),
        (
            "13.1.1",
            13,
            "tensorrt-cu13>=10.13,<11",
            "cuda-bindings>=13.0,<14",
            "onnxruntime-gpu[cuda,cudnn]>=1.27",
        ),
    ],
)
def test_select_wheels_matches_the_driver_cuda_major(version, major, trt, cuda_python, ort) -> None:
    plan = gs.select_wheels(version)
    assert plan.cuda_major == major
    assert plan.requirements == (trt, cuda_python, ort)
    # one CUDA major for everything: no cu12 wheel on a 13.x plan and vice versa
    other = "cu13" if major == 12 else "cu12"
    assert not any(other in r for r in plan.requirements)


@pytest.mark.parametrize("version", ["11.8", "10.2", "14.0"])
def test_select_wheels_refuses_unsupported_cuda(version) -> None:
    with pytest.raises(gs.GpuCheckError, match=r"not supported.*12, 13"):
        gs.select_wheels(version)


@pytest.mark.parametrize("version", ["", "12", "twelve", "12.x", "CUDA 12.4"])
def test_select_wheels_refuses_unparsable_versions(version) -> None:
    with pytest.raises(gs.GpuCheckError, match="cannot read a CUDA version"):
        gs.select_wheels(version)


def test_parse_nvidia_smi() -> None:
    info = gs.parse_nvidia_smi(SMI_HEADER)
    assert info == gs.DriverInfo(driver_version="550.54.15", cuda_version="12.4")
    with pytest.raises(gs.GpuCheckError, match="no 'CUDA Version"):
        gs.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")


def test_venv_requirements_leave_out_the_cpu_runtime() -> None:
    reqs = gs.venv_requirements("12.4", ROOT / "requirements" / "runtime.txt")
    names = [gs.requirement_name(r) for r in reqs]
    assert "onnxruntime" not in names  # would shadow onnxruntime-gpu's module
    assert not {"pybullet", "coacd", "vhacdx"} & set(names)
    assert {"numpy", "scipy", "scikit-image", "trimesh", "onnxruntime-gpu", "tensorrt-cu12", "pytest"} <= set(
        names
    )
    assert all("#" not in r and r.strip() == r for r in reqs)
    with pytest.raises(gs.GpuCheckError, match="cannot read"):
        gs.runtime_requirements(ROOT / "requirements" / "nope.txt")


def test_gpu_setup_cli_needs_only_the_standard_library() -> None:
    """gpu_check.sh runs it with the system python3 before any package is installed: -S
    (no site-packages) proves it imports nothing else."""
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}
    cmd = [sys.executable, "-S", "-m", "sam3d_ros.tools.gpu_setup"]
    out = subprocess.run(
        [*cmd, "cuda-version"], input=SMI_HEADER, capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "12.4"
    req = subprocess.run(
        [*cmd, "requirements", "--cuda-version", "13.0", "--runtime", "requirements/runtime.txt"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert req.returncode == 0, req.stderr
    assert "tensorrt-cu13>=10.13,<11" in req.stdout.splitlines()
    bad = subprocess.run(
        [*cmd, "requirements", "--cuda-version", "11.8"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert bad.returncode == 2 and "not supported" in bad.stderr


# --------------------------------------------------------------------------- arguments, plan


def test_plan_of_dry_and_real_runs() -> None:
    dry = {s.name: runs for s, runs in gc.plan_steps(dry_run=True)}
    assert [n for n, r in dry.items() if r] == ["wheel_selection", "cpu_reference"]
    assert set(GPU_STEPS) <= set(dry)  # listed, not run
    real = {s.name: runs for s, runs in gc.plan_steps(dry_run=False)}
    assert "cpu_reference" not in real and all(real.values())
    assert {
        "environment",
        "engines",
        "parity",
        "pytest_gpu",
        "speed_tensorrt_fp16",
        "speed_onnxruntime_cpu",
    } <= set(real)
    some = {s.name: runs for s, runs in gc.plan_steps(dry_run=False, selected=["parity"])}
    assert [n for n, r in some.items() if r] == ["parity"]
    with pytest.raises(gs.GpuCheckError, match="valid steps"):
        gc.plan_steps(dry_run=False, selected=["parity", "nope"])


def test_step_timeouts_fit_the_budget() -> None:
    """Each step's timeout fits the default budget, and set-up + budget + the driver's slack
    stay under 8 minutes in gpu_check.sh."""
    real = [s for s, _ in gc.plan_steps(dry_run=False)]
    assert all(0 < s.timeout_s <= gc.DEFAULT_BUDGET_S for s in real)
    text = SCRIPT.read_text()

    def number(name: str) -> int:
        return int(text.split(f"{name}=")[1].split()[0].strip('"').split(":-")[-1].rstrip("}"))

    assert number("STEP_BUDGET_MAX_S") == int(gc.DEFAULT_BUDGET_S)
    # the steps get what set-up left of TOTAL_S; timeout --kill-after adds 10 s at most
    assert number("TOTAL_S") + 10 <= 8 * 60
    assert number("SETUP_TIMEOUT_S") + 60 <= number("TOTAL_S") - number("DRIVER_SLACK_S")


def test_bad_arguments_exit_2(tmp_path: Path, capsys) -> None:
    assert gc.main(["--dry-run", "--steps", "engines,warp_drive", "--out", str(tmp_path)]) == 2
    assert "warp_drive" in capsys.readouterr().err
    assert not (tmp_path / gc.JSON_NAME).exists()
    for bad in (["--budget-s", "0"], ["--repeats", "0"], ["--run-step", "engines"], ["--run-step", "nope"]):
        with pytest.raises(SystemExit) as exc:
            gc.parse_args(bad)
        assert exc.value.code == 2


def test_the_check_process_imports_no_third_party_package() -> None:
    """The report is written even where numpy or the backends do not import: only the step
    processes import them (and fail with the missing package)."""
    code = (
        "import sys, sam3d_ros.tools.gpu_check as g; "
        "print(sorted(m for m in ('numpy', 'trimesh', 'onnxruntime', 'sam3d_ros.core.config') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert gc.MANIFEST_NAME == MANIFEST_NAME


def test_default_out_dir(monkeypatch) -> None:
    monkeypatch.setenv("OUT", "/some/where")
    assert gc.default_out_dir() == Path("/some/where")
    monkeypatch.delenv("OUT")
    assert gc.default_out_dir() == ROOT / "build" / "gpu_check"


def test_default_model_dirs_include_subdirectories_with_a_manifest() -> None:
    dirs = gc.default_model_dirs()
    assert dirs[0] == MODELS
    expected = sorted(p for p in MODELS.iterdir() if (p / "manifest.json").is_file())
    assert list(dirs[1:]) == expected


# --------------------------------------------------------------------------- report


def _speed_data() -> dict:
    frame = {
        "frame_ms_median": 40.0,
        "frame_ms_p90": 45.0,
        "objects_median": 5.0,
        "stages_ms_median": {"plane": 3.0, "observations": 8.0, "backend": 12.0, "meshing": 11.0},
        "encoding_ms_estimate": 9.0,
        "largest_cpu_stage": "meshing",
        "fps": 25.0,
    }
    return {"network_ms_per_object_median": {"1": 1.5, "8": 0.25, "32": 0.125}, "frame": {"5": frame}}


def test_report_json_and_markdown(tmp_path: Path) -> None:
    results = [
        gc.StepResult("setup", gc.PASSED, "", 90.0),
        gc.StepResult(
            "environment", gc.PASSED, "", 2.0, {"tensorrt": "10.9.0", "nvidia_smi": {"gpu": "H200"}}
        ),
        gc.StepResult("engines", gc.FAILED, "fp16: second start rebuilt instead of loading", 30.0),
        gc.StepResult(
            "parity",
            gc.PASSED,
            "",
            5.0,
            {
                "models": {
                    "fp32": {
                        "max_abs_logit": 1e-4,
                        "mean_abs_logit": 1e-5,
                        "min_voxel_iou": 1.0,
                        "max_chamfer_mm": 0.0,
                        "min_mesh_iou": 1.0,
                        "passed": True,
                    }
                },
                "thresholds": {},
            },
        ),
        gc.StepResult("speed_tensorrt_fp16", gc.PASSED, "", 9.0, _speed_data()),
        gc.StepResult("speed_onnxruntime_cpu", gc.SKIPPED, "skipped: not selected (--steps)"),
    ]
    ctx = gc.CheckContext(
        work=str(tmp_path), out=str(tmp_path), model_dirs=(str(MODELS),), cuda_version="12.4"
    )
    report = gc.build_report(results, False, ctx, "gpu_check", "2026-12-03T00:00:00+00:00")
    assert report["ok"] is False and "FAILED: engines" in report["message"]
    json_path, md_path = gc.write_report(tmp_path / "out", report)
    back = json.loads(json_path.read_text())
    assert [s["status"] for s in back["steps"]] == [
        "passed",
        "passed",
        "failed",
        "passed",
        "passed",
        "skipped",
    ]
    assert back["thresholds"]["fp16"]["max_chamfer_mm"] == gc.PARITY_THRESHOLDS["fp16"].max_chamfer_mm
    md = md_path.read_text()
    assert "GPU: H200" in md and "TensorRT: 10.9.0" in md
    assert "| engines | FAILED |" in md and "second start rebuilt" in md
    assert "## Parity" in md and "| models | fp32 |" in md
    assert "## Speed" in md and "| tensorrt_fp16 | 1.5 | 0.25 | 0.125 | 40.0 |" in md
    assert "meshing" in md.split("Per-stage medians")[1]


def test_check_ok_never_passes_without_a_passed_step() -> None:
    skipped = [gc.StepResult("engines", gc.SKIPPED, "x")]
    assert not gc.check_ok(skipped)  # a real run that ran nothing did not pass
    assert gc.check_ok(skipped, dry_run=True)
    assert not gc.check_ok(
        [gc.StepResult("a", gc.PASSED), gc.StepResult("b", gc.FAILED, "why")], dry_run=True
    )
    assert gc.setup_results(12.0, "pip failed")[0].status == gc.FAILED
    assert gc.setup_results(None, "") == []


# --------------------------------------------------------------------------- parity, sidecars


def _blob_outputs(n: int, shift: float = 0.0) -> tuple[NetworkOutputs, list[GridFrame]]:
    g = np.indices((GRID_SIZE,) * 3).astype(np.float32)
    logits = np.empty((n, *(GRID_SIZE,) * 3), np.float32)
    for i in range(n):
        r = np.sqrt(((g - 16.0 - i) ** 2).sum(axis=0))
        logits[i] = 8.0 - r + shift
    frames = [GridFrame(np.eye(4), np.zeros(3), 0.005, 0.16, True) for _ in range(n)]
    return NetworkOutputs(logits, np.zeros((n, 8), np.float32), np.full(n, 0.8, np.float32)), frames


def test_compare_outputs_thresholds() -> None:
    cfg = default_config()
    ref, frames = _blob_outputs(2)
    same, bad = gst.compare_outputs(ref, ref, frames, cfg, gc.PARITY_THRESHOLDS["fp32"])
    assert bad == [] and same["max_abs_logit"] == 0.0 and same["max_chamfer_mm"] < 1e-9
    assert same["meshed"] == 2 and same["min_mesh_iou"] == pytest.approx(1.0)
    # a small fp16-like perturbation passes fp16 but not fp32
    rng = np.random.default_rng(0)
    noisy = NetworkOutputs(
        ref.occupancy_logits + rng.normal(0, 0.02, ref.occupancy_logits.shape).astype(np.float32),
        ref.layout,
        ref.confidence,
    )
    stats16, bad16 = gst.compare_outputs(ref, noisy, frames, cfg, gc.PARITY_THRESHOLDS["fp16"])
    assert bad16 == [], stats16
    _, bad32 = gst.compare_outputs(ref, noisy, frames, cfg, gc.PARITY_THRESHOLDS["fp32"])
    assert any("max_abs_logit" in b for b in bad32)
    # a shape that grew by two voxels fails both, on logits and on the meshes
    grown, _ = _blob_outputs(2, shift=2.0)
    stats, bad = gst.compare_outputs(ref, grown, frames, cfg, gc.PARITY_THRESHOLDS["fp16"])
    assert stats["max_chamfer_mm"] > gc.PARITY_THRESHOLDS["fp16"].max_chamfer_mm
    assert any("max_chamfer_mm" in b for b in bad) and any("min_mesh_iou" in b for b in bad)
    # an object meshed by one runtime only is a failure
    empty = NetworkOutputs(np.full_like(ref.occupancy_logits, -9.0), ref.layout, ref.confidence)
    stats, bad = gst.compare_outputs(ref, empty, frames, cfg, gc.PARITY_THRESHOLDS["fp16"])
    assert stats["mesh_mismatches"] == 2 and any("one runtime only" in b for b in bad)


def test_changed_onnx_is_a_parsable_other_file(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    src = MODELS / "geometry_layout.onnx"
    changed = gst._changed_onnx(src, tmp_path / "changed.onnx")
    assert sha256_file(changed) != sha256_file(src)
    x = np.random.default_rng(0).random((1, 10, GRID_SIZE, GRID_SIZE, GRID_SIZE), dtype=np.float32)
    outs = []
    for path in (src, changed):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    np.testing.assert_array_equal(outs[0], outs[1])


class _FakeBuilder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, onnx: Path, key: EngineKey, timing: Path) -> bytes:
        self.calls += 1
        return f"engine:{key.digest()}:{onnx.name}:{self.calls}".encode()


def _key(onnx: Path) -> EngineKey:
    shape = [10, GRID_SIZE, GRID_SIZE, GRID_SIZE]
    profile = {"observation": {"min": [1, *shape], "opt": [8, *shape], "max": [32, *shape]}}
    return EngineKey(sha256_file(onnx), "10.9.0", "FakeGPU sm_90", "fp32", profile)


def test_sidecar_rules_with_a_fake_builder(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    shutil.copyfile(MODELS / "geometry_layout.onnx", onnx)
    fb = _FakeBuilder()
    cache = EngineCache(tmp_path / "engines", fb)
    key = _key(onnx)
    with pytest.raises(gs.GpuCheckError, match="not valid"):
        gst.sidecar_rule_checks(cache, onnx, key, tmp_path, lambda b: True)
    cache.load_or_build(onnx, key)
    rules = gst.sidecar_rule_checks(cache, onnx, key, tmp_path, lambda b: b.startswith(b"engine:"))
    assert gst.sidecar_problems(rules) == []
    assert fb.calls == 4  # the original and one rebuild per changed field
    for name in ("precision", "tensorrt_version", "onnx_sha256"):
        assert rules[name]["refused"] and name in rules[name]["reason"]
    assert (
        b"changed.onnx"
        in cache.paths(EngineKey(**{**key.to_dict(), "onnx_sha256": sha256_file(tmp_path / "changed.onnx")}))[
            0
        ].read_bytes()
    )
    # a cache that loads stale engines (a broken check) is caught
    broken = EngineCache(tmp_path / "engines", fb)
    broken.check = lambda k: None  # type: ignore[method-assign]
    rules = gst.sidecar_rule_checks(broken, onnx, key, tmp_path, lambda b: True)
    problems = gst.sidecar_problems(rules)
    assert len(problems) == 3 and all("did not hold" in p for p in problems)


# --------------------------------------------------------------------------- end to end


def test_steps_that_cannot_run_fail_with_the_reason(tmp_path: Path) -> None:
    """No GPU here: the environment step fails (never passes) and says why; a step that
    no longer fits the budget is failed as not run."""
    if shutil.which("nvidia-smi"):
        pytest.skip("an NVIDIA driver is present: this test is about machines without one")
    ctx = gc.CheckContext(work=str(tmp_path / "w"), out=str(tmp_path / "o"), model_dirs=(str(MODELS),))
    Path(ctx.work).mkdir()
    seen: list[list[str]] = []
    results = gc.run_check(
        ctx,
        dry_run=False,
        selected=["environment"],
        budget_s=120,
        on_step=lambda r: seen.append([x.name for x in r]),
    )
    assert seen == [[s.name for s, _ in gc.plan_steps(dry_run=False)][: len(seen[0])]]  # once, after the step
    assert seen[0][-1] == "environment"
    env = next(r for r in results if r.name == "environment")
    assert env.status == gc.FAILED and "nvidia-smi" in env.reason
    assert "===== step environment: failed" in (tmp_path / "o" / gc.LOG_NAME).read_text()
    assert all(r.status == gc.SKIPPED for r in results if r.name != "environment")
    late = gc.run_check(ctx, dry_run=False, selected=["engines"], budget_s=1)
    assert next(r for r in late if r.name == "engines").reason.startswith("not run")
    assert not gc.check_ok(results) and not gc.check_ok(late)


def test_dry_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DRY RUN" in proc.stdout
    report = json.loads((out / gc.JSON_NAME).read_text())
    assert report["dry_run"] is True and report["ok"] is True
    steps = {s["name"]: s for s in report["steps"]}
    for name in GPU_STEPS:
        assert steps[name]["status"] == "skipped" and steps[name]["reason"] == gc.DRY_RUN_REASON
    assert steps["wheel_selection"]["status"] == "passed"
    ref = steps["cpu_reference"]
    assert ref["status"] == "passed", ref
    assert ref["data"]["network_ms_per_object_median"]["1"] > 0
    frame = ref["data"]["frame"]["5"]
    assert frame["frame_ms_median"] > 0 and frame["largest_cpu_stage"] in (*gc.CPU_STAGES, "encoding")
    md = (out / gc.MD_NAME).read_text()
    assert "DRY RUN" in md and md.count("| SKIPPED | 0 | skipped: dry run |") == len(GPU_STEPS)
    assert "INCOMPLETE" not in md  # the interim reports are replaced by the final one
    assert sorted(p.name for p in out.iterdir()) == [gc.JSON_NAME, gc.LOG_NAME, gc.MD_NAME]


def test_dry_run_with_an_unsupported_driver_fails(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "--dry-run",
            "--out",
            str(tmp_path),
            "--cuda-version",
            "11.8",
            "--steps",
            "wheel_selection",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = {s["name"]: s for s in json.loads((tmp_path / gc.JSON_NAME).read_text())["steps"]}
    assert steps["wheel_selection"]["status"] == "failed" and "11.8" in steps["wheel_selection"]["reason"]


def test_real_run_without_a_driver_installs_nothing_and_fails(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("an NVIDIA driver is present: a real run would install the GPU wheels")
    env = _env()
    env["SAM3D_GPU_VENV"] = str(tmp_path / "venv")
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path / "out"), "--steps", "environment"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert not (tmp_path / "venv").exists()
    report = json.loads((tmp_path / "out" / gc.JSON_NAME).read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["setup"]["status"] == "failed" and "no NVIDIA driver" in steps["setup"]["reason"]
    assert steps["environment"]["status"] == "failed"
    assert report["ok"] is False and "FAILED" in report["message"]


# --------------------------------------------------------------------------- GPU steps, faked

#: A stand-in for TensorRT 10 written into the test's directory: an "engine" is a header
#: (precision flags) plus the ONNX bytes, executed by ONNX Runtime on host memory; fp16
#: rounds inputs and outputs to float16, and TF32 left on rounds the inputs the same way
#: (so an fp32 engine built without clearing TF32 fails the fp32 parity thresholds).
FAKE_TENSORRT = """
import ctypes
import enum
import json

import numpy as np
import onnxruntime as ort

__version__ = "10.99.0"


class Logger:
    WARNING = 2

    def __init__(self, level=2):
        pass


class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0


class MemoryPoolType:
    WORKSPACE = 0


class BuilderFlag:
    FP16 = "fp16"
    TF32 = "tf32"


class _Network:
    onnx = b""


class OnnxParser:
    def __init__(self, network, logger):
        self.network, self.num_errors = network, 0

    def parse(self, data):
        self.network.onnx = bytes(data)
        return True

    def get_error(self, i):
        return ""


class _TimingCache:
    def serialize(self):
        return b"timing"


class _Profile:
    def set_shape(self, name, lo, opt, hi):
        self.shapes = (lo, opt, hi)


class _Config:
    def __init__(self):
        self.flags, self.cache = {"tf32"}, None

    def set_memory_pool_limit(self, pool, size):
        pass

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def create_timing_cache(self, blob):
        return _TimingCache()

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache

    def add_optimization_profile(self, profile):
        self.profile = profile


class Builder:
    def __init__(self, logger):
        pass

    def create_network(self, flags=0):
        return _Network()

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        head = json.dumps({"round": bool(config.flags & {"fp16", "tf32"})}).encode()
        return b"FAKEENGINE" + len(head).to_bytes(4, "little") + head + network.onnx


def _view(ptr, shape):
    n = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * n).from_address(ptr)).reshape(shape)


class _Context:
    def __init__(self, engine):
        self.engine, self.shapes, self.addr = engine, {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)

    def get_tensor_shape(self, name):
        b, n = self.shapes["observation"][0], self.shapes["observation"][2]
        return {"occupancy_logits": (b, n, n, n), "layout": (b, 8), "confidence": (b,)}[name]

    def set_tensor_address(self, name, ptr):
        self.addr[name] = int(ptr)

    def execute_async_v3(self, stream):
        x = _view(self.addr["observation"], self.shapes["observation"]).copy()
        rnd = self.engine.meta["round"]
        if rnd:
            x = x.astype(np.float16).astype(np.float32)
        names = [o.name for o in self.engine.session.get_outputs()]
        for name, val in zip(names, self.engine.session.run(None, {"observation": x})):
            val = np.asarray(val, np.float32)
            if rnd:
                val = val.astype(np.float16).astype(np.float32)
            dst = _view(self.addr[name], self.get_tensor_shape(name))
            dst[...] = val.reshape(dst.shape)
        return True


class TensorIOMode(enum.IntEnum):
    INPUT = 1
    OUTPUT = 2


class _Engine:
    def __init__(self, onnx, meta):
        self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        self.meta = meta
        self._io = [i.name for i in self.session.get_inputs()] + [o.name for o in self.session.get_outputs()]
        self.num_io_tensors = len(self._io)

    def get_tensor_name(self, i):
        return self._io[i]

    def get_tensor_mode(self, name):
        inputs = {i.name for i in self.session.get_inputs()}
        return TensorIOMode.INPUT if name in inputs else TensorIOMode.OUTPUT

    def create_execution_context(self):
        return _Context(self)


class Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        data = bytes(data)
        if not data.startswith(b"FAKEENGINE"):
            return None
        n = int.from_bytes(data[10:14], "little")
        return _Engine(data[14 + n :], json.loads(data[14 : 14 + n]))
"""

FAKE_CUDART = """
import ctypes
import enum

import numpy as np


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class _Props:
    name = b"FakeGPU 80GB" + bytes(8)
    major, minor = 9, 0


OK = cudaError_t.cudaSuccess
_buffers = {}


def cudaGetDeviceProperties(i):
    return OK, _Props()


def cudaGetDeviceCount():
    return OK, 1


def cudaDriverGetVersion():
    return OK, 12040


def cudaRuntimeGetVersion():
    return OK, 12040


def cudaStreamCreate():
    return OK, 7


def cudaStreamSynchronize(stream):
    return (OK,)


def cudaStreamDestroy(stream):
    return (OK,)


def cudaMalloc(nbytes):
    buf = np.zeros(int(nbytes), np.uint8)
    _buffers[buf.ctypes.data] = buf
    return OK, buf.ctypes.data


def cudaFree(ptr):
    _buffers.pop(int(ptr), None)
    return (OK,)


def cudaMemcpyAsync(dst, src, nbytes, kind, stream):
    ctypes.memmove(int(dst), int(src), int(nbytes))
    return (OK,)
"""


def _fake_gpu_packages(root: Path) -> Path:
    (root / "tensorrt").mkdir(parents=True)
    (root / "tensorrt" / "__init__.py").write_text(FAKE_TENSORRT)
    (root / "cuda" / "bindings").mkdir(parents=True)
    (root / "cuda" / "__init__.py").write_text("")
    (root / "cuda" / "bindings" / "__init__.py").write_text("")
    (root / "cuda" / "bindings" / "runtime.py").write_text(FAKE_CUDART)
    return root


def test_engine_and_parity_steps_on_a_fake_tensorrt(tmp_path: Path, monkeypatch) -> None:
    """The engines and parity steps end to end in their processes, through the real
    TensorRT backend and engine cache, on a TensorRT/cuda-python stand-in."""
    pytest.importorskip("onnxruntime")
    fake = _fake_gpu_packages(tmp_path / "fake")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(fake), str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    ctx = gc.CheckContext(
        work=str(tmp_path / "w"),
        out=str(tmp_path / "o"),
        model_dirs=tuple(map(str, gc.default_model_dirs())),
        parity_frames=1,
    )
    Path(ctx.work).mkdir()
    results = {
        r.name: r for r in gc.run_check(ctx, dry_run=False, selected=["engines", "parity"], budget_s=150)
    }
    engines, parity = results["engines"], results["parity"]
    assert engines.status == gc.PASSED, (
        engines.reason,
        (tmp_path / "o" / gc.LOG_NAME).read_text()[-3000:],
    )
    per = engines.data["models"]["models"]
    # the shipped two-stage model: one engine per graph (layout, shape) on the first start,
    # none on the second
    assert {p: (e["graphs"], e["first_start_builds"], e["second_start_builds"]) for p, e in per.items()} == {
        "fp16": (2, 2, 0),
        "fp32": (2, 2, 0),
    }
    assert per["fp32"]["gpu"] == "FakeGPU 80GB sm_90" and per["fp32"]["tensorrt"] == "10.99.0"
    assert all(
        engines.data["sidecar_rules"][k]["refused"] for k in ("precision", "tensorrt_version", "onnx_sha256")
    )
    for label in engines.data["same_onnx_as"]:  # a directory with the shipped ONNX again is not rebuilt
        assert label not in engines.data["models"]
    assert parity.status == gc.PASSED, (
        parity.reason,
        (tmp_path / "o" / gc.LOG_NAME).read_text()[-3000:],
    )
    fp32, fp16 = parity.data["models"]["fp32"], parity.data["models"]["fp16"]
    assert fp32["max_abs_logit"] == 0.0  # TF32 cleared: the fake then computes in plain fp32
    assert 0.0 < fp16["max_abs_logit"] <= gc.PARITY_THRESHOLDS["fp16"].max_abs_logit
    assert fp16["meshed"] >= 3 and fp16["mesh_mismatches"] == 0
    # the layout-only stage-1 graph is compared too (layout and confidence; no occupancy)
    assert parity.data["models"]["fp32/layout"]["passed"] and parity.data["models"]["fp16/layout"]["passed"]


def test_real_run_with_a_driver_and_a_ready_venv(tmp_path: Path) -> None:
    """The real (non-dry) path of gpu_check.sh without downloading anything: a stand-in
    nvidia-smi (CUDA 12.4) and a GPU venv whose requirements stamp is already there (its
    python runs this test's interpreter). The script selects the cu12 wheels, installs
    nothing, and the checks fail for the missing TensorRT instead of passing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'case "$1" in --query-gpu*) echo "FakeGPU 80GB, 81559 MiB, 550.54.15" ;; '
        f"*) cat <<'END'\n{SMI_HEADER}END\n;; esac\n"
    )
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for f in (smi, py):
        f.chmod(0o755)
    reqs = "\n".join(gs.venv_requirements("12.4", ROOT / "requirements" / "runtime.txt")) + "\n"
    (venv / f".sam3d_gpu-{hashlib.sha256(reqs.encode()).hexdigest()[:16]}").touch()
    env = _env()
    env.update(SAM3D_GPU_VENV=str(venv), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path / "out"), "--steps", "wheel_selection,environment"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "GPU environment up to date" in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = {s["name"]: s for s in json.loads((tmp_path / "out" / gc.JSON_NAME).read_text())["steps"]}
    assert steps["setup"]["status"] == "passed"
    assert steps["wheel_selection"]["data"]["requirements"][0] == "tensorrt-cu12>=10.3,<11"
    env_step = steps["environment"]
    assert env_step["status"] == "failed" and "tensorrt" in env_step["reason"]
    assert env_step["data"]["nvidia_smi"] == {
        "gpu": "FakeGPU 80GB",
        "memory": "81559 MiB",
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "gpus": "1",
    }


def test_optional_step_without_its_runtime_is_skipped_not_passed(tmp_path: Path, monkeypatch) -> None:
    """speed_torch_cuda needs torch with CUDA: without it (a torch that sees no GPU here)
    the step is skipped with the reason, while a required step that cannot run fails."""

    class _NoCuda:
        __version__ = "0.0+cpu"

        class cuda:  # noqa: N801 - mimics torch.cuda
            @staticmethod
            def is_available() -> bool:
                return False

    monkeypatch.setitem(sys.modules, "torch", _NoCuda)
    ctx = gc.CheckContext(work=str(tmp_path), out=str(tmp_path), model_dirs=(str(MODELS),))
    outcome = gc.run_step_in_process("speed_torch_cuda", ctx, 10.0)
    assert not outcome.passed and outcome.data == {"unavailable": True} and "no CUDA device" in outcome.reason
    spec = {s.name: s for s in gc.STEPS}
    step = gc.step_result(spec["speed_torch_cuda"], outcome, 0.1)
    assert step.status == gc.SKIPPED and "optional" in step.reason
    required = gc.step_result(spec["speed_tensorrt_fp16"], outcome, 0.1)
    assert required.status == gc.FAILED
    assert not gc.check_ok([step])
