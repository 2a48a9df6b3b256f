"""Learned backends: shipped model + manifest, torch/ONNX Runtime parity, end-to-end run,
dynamic batch, the ``auto`` choice and the TensorRT engine cache (with a fake builder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sam3d_ros.backends.engine_cache import EngineCache, EngineCacheError, EngineKey
from sam3d_ros.backends.learned import (
    MANIFEST_NAME,
    ONNX_KEY,
    ModelFileError,
    NetworkOutputs,
    decode_outputs,
    load_manifest,
    verified_file,
)
from sam3d_ros.backends.registry import _BACKENDS, available_backends, create_backend
from sam3d_ros.core.backend import Backend, BackendError
from sam3d_ros.core.config import default_config
from sam3d_ros.core.encoding import GRID_SIZE, NUM_CHANNELS, GridFrame, decode_layout
from sam3d_ros.core.meshing import is_watertight
from sam3d_ros.core.pipeline import FramePipeline

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SHAPE = (NUM_CHANNELS, GRID_SIZE, GRID_SIZE, GRID_SIZE)


def _random_inputs(b: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((b, *SHAPE), dtype=np.float32)


@pytest.fixture(scope="module")
def ort_backend():
    from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(default_config(), directory=MODELS, intra_op_threads=2, use_cuda=False)


# --------------------------------------------------------------------------- shipped model


def test_shipped_manifest_and_sha256() -> None:
    manifest = load_manifest(MODELS)
    path = verified_file(MODELS, manifest, ONNX_KEY)
    assert path.stat().st_size < 8_000_000
    names = [o["name"] for o in manifest["outputs"]]
    assert names == ["occupancy_logits", "layout", "confidence"]
    assert manifest["inputs"][0]["shape"][1:] == list(SHAPE)
    for key in ("command", "config", "train_s"):
        assert key in manifest["training"]


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    for f in MODELS.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    onnx = tmp_path / manifest["files"][ONNX_KEY]["name"]
    data = bytearray(onnx.read_bytes())
    data[-10] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        OnnxRuntimeBackend(default_config(), directory=tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ModelFileError, match="manifest"):
        OnnxRuntimeBackend(default_config(), directory=tmp_path)


def test_dynamic_batch_rows_are_independent(ort_backend) -> None:
    x = _random_inputs(8, seed=1)
    ref = ort_backend.infer(x)
    assert ref.occupancy_logits.shape == (8, GRID_SIZE, GRID_SIZE, GRID_SIZE)
    assert ref.layout.shape == (8, 8) and ref.confidence.shape == (8,)
    for b in range(1, 9):
        out = ort_backend.infer(x[:b])
        assert out.occupancy_logits.shape[0] == b
        np.testing.assert_allclose(out.occupancy_logits, ref.occupancy_logits[:b], atol=1e-4)
        np.testing.assert_allclose(out.layout, ref.layout[:b], atol=1e-4)
    assert np.all((ref.confidence >= 0) & (ref.confidence <= 1))


def test_torch_and_onnxruntime_parity(ort_backend) -> None:
    pytest.importorskip("torch", reason="torch is not installed (requirements/dev.txt)")
    from sam3d_ros.backends.torch_backend import TorchBackend

    tb = TorchBackend(default_config(), directory=MODELS, device="cpu")
    x = _random_inputs(4, seed=2)
    a, b = ort_backend.infer(x), tb.infer(x)
    np.testing.assert_allclose(a.occupancy_logits, b.occupancy_logits, atol=1e-4)
    np.testing.assert_allclose(a.layout, b.layout, atol=1e-4)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)


def test_onnxruntime_pipeline_end_to_end(ort_backend) -> None:
    from sam3d_ros.sim.scenes import random_scene

    rendered = random_scene(3_000_123, n_objects=4).render()
    result = FramePipeline(default_config(), ort_backend).process(rendered.to_rgbd_frame())
    assert result.backend == "onnxruntime"
    assert len(result.objects) >= 3, result.skipped
    for obj in result.objects:
        assert is_watertight(obj.mesh)
        assert 0.0 <= obj.confidence <= 1.0
        assert all(e > 0.005 for e in obj.extents)
    assert len(ort_backend.last_layouts) == len(result.objects) + sum(
        1 for s in result.skipped if s.reason.value == "empty_shape"
    )


# --------------------------------------------------------------------------- decoding


def test_decode_outputs_maps_rows_to_observations() -> None:
    gf = GridFrame(np.eye(4), np.zeros(3), 0.01, 0.32, True)
    logits = np.full((2, GRID_SIZE, GRID_SIZE, GRID_SIZE), -10.0, dtype=np.float32)
    logits[1, 10:20, 10:20, 2:12] = 10.0
    out = NetworkOutputs(logits, np.zeros((2, 8), np.float32), np.array([0.3, 0.9], np.float32))
    shapes = decode_outputs(out, [gf, None, gf])
    assert shapes[0] is None and shapes[1] is None  # empty row, unencodable object
    assert shapes[2] is not None and shapes[2].confidence == pytest.approx(0.9)
    assert shapes[2].occupancy.shape == (GRID_SIZE,) * 3
    with pytest.raises(BackendError, match="rows"):
        decode_outputs(out, [gf])
    t, size = decode_layout(np.array([0, 0, 0, np.log(0.5), np.log(0.25), np.log(0.25), 0, 1]), gf)
    np.testing.assert_allclose(size, [0.16, 0.08, 0.08])
    np.testing.assert_allclose(t[:3, 3], gf.centre)


# --------------------------------------------------------------------------- registry / auto


class _FakeBackend(Backend):
    name = "fake"

    def reconstruct(self, scene, observations):  # type: ignore[no-untyped-def]
        return [None for _ in observations]


class _FakeTensorRT(_FakeBackend):
    name = "tensorrt"


class _FakeOrt(_FakeBackend):
    name = "onnxruntime"


class _Broken(_FakeBackend):
    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        raise BackendError("not here")


def test_registry_lists_and_rejects_unknown() -> None:
    assert {"geometric", "onnxruntime", "torch", "tensorrt", "auto"} <= set(available_backends())
    with pytest.raises(BackendError, match="valid backends"):
        create_backend(default_config(), "nope")


@pytest.mark.parametrize(
    ("gpu", "trt", "broken", "expected"),
    [
        (True, True, (), "tensorrt"),
        (True, False, (), "onnxruntime"),
        (False, True, (), "onnxruntime"),
        (True, True, ("tensorrt",), "onnxruntime"),
        (False, False, ("onnxruntime",), "geometric"),
    ],
)
def test_auto_choice(monkeypatch, caplog, gpu, trt, broken, expected) -> None:
    from sam3d_ros.backends import auto

    mod = __name__
    monkeypatch.setitem(
        _BACKENDS, "tensorrt", f"{mod}:{'_Broken' if 'tensorrt' in broken else '_FakeTensorRT'}"
    )
    monkeypatch.setitem(
        _BACKENDS, "onnxruntime", f"{mod}:{'_Broken' if 'onnxruntime' in broken else '_FakeOrt'}"
    )
    with caplog.at_level("INFO", logger="sam3d_ros.backends.auto"):
        backend = auto.create_auto_backend(
            default_config(), probe_gpu=lambda: gpu, probe_tensorrt=lambda: trt
        )
    assert backend.name == expected
    assert f"auto backend chose {expected}" in caplog.text


def test_auto_via_registry_without_gpu(monkeypatch) -> None:
    from sam3d_ros.backends import auto

    monkeypatch.setattr(auto, "gpu_available", lambda: False)
    backend = create_backend(default_config(), "auto")
    assert backend.name in ("onnxruntime", "geometric")


# --------------------------------------------------------------------------- engine cache


def _key(**kw) -> EngineKey:  # type: ignore[no-untyped-def]
    base = {
        "onnx_sha256": "a" * 64,
        "tensorrt_version": "10.3.0",
        "gpu_name": "FakeGPU sm_89",
        "precision": "fp16",
        "input_profile": {
            "observation": {
                "min": [1, 10, 32, 32, 32],
                "opt": [8, 10, 32, 32, 32],
                "max": [32, 10, 32, 32, 32],
            }
        },
    }
    base.update(kw)
    return EngineKey(**base)


class _FakeBuilder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, onnx: Path, key: EngineKey, timing: Path) -> bytes:
        self.calls += 1
        timing.write_bytes(b"timing")
        return f"engine:{key.digest()}:{self.calls}".encode()


def test_engine_cache_build_hit_and_key_changes(tmp_path: Path) -> None:
    fb = _FakeBuilder()
    cache = EngineCache(tmp_path, fb)
    k = _key()
    first = cache.load_or_build(tmp_path / "m.onnx", k)
    assert fb.calls == 1 and cache.timing_cache.is_file()
    assert cache.load_or_build(tmp_path / "m.onnx", k) == first and fb.calls == 1  # hit
    for changed in (
        _key(precision="fp32"),
        _key(onnx_sha256="b" * 64),
        _key(tensorrt_version="10.4.0"),
        _key(gpu_name="OtherGPU"),
    ):
        assert cache.check(changed) is not None
        cache.load_or_build(tmp_path / "m.onnx", changed)
    assert fb.calls == 5
    with pytest.raises(EngineCacheError, match="precision"):
        _key(precision="int4")


def test_engine_cache_sidecar_mismatch_and_corruption(tmp_path: Path) -> None:
    fb = _FakeBuilder()
    cache = EngineCache(tmp_path, fb)
    k = _key()
    cache.load_or_build(tmp_path / "m.onnx", k)
    engine, sidecar = cache.paths(k)
    # a sidecar that vouches for another ONNX: the engine is never loaded, it is rebuilt
    meta = json.loads(sidecar.read_text())
    meta["key"]["onnx_sha256"] = "c" * 64
    sidecar.write_text(json.dumps(meta))
    assert "onnx_sha256" in str(cache.check(k))
    data = cache.load_or_build(tmp_path / "m.onnx", k)
    assert fb.calls == 2 and data.endswith(b":2")
    # corrupted engine bytes -> rebuild
    engine.write_bytes(engine.read_bytes()[:-3] + b"xyz")
    assert "corrupted" in str(cache.check(k))
    assert cache.load_or_build(tmp_path / "m.onnx", k).endswith(b":3")
    # truncated/unreadable sidecar -> rebuild
    sidecar.write_text("{")
    assert cache.load_or_build(tmp_path / "m.onnx", k).endswith(b":4")


def test_engine_cache_never_loads_a_foreign_engine(tmp_path: Path) -> None:
    fb = _FakeBuilder()
    cache = EngineCache(tmp_path, fb)
    k = _key()
    engine, sidecar = cache.paths(k)
    engine.write_bytes(b"FOREIGN ENGINE")
    assert "no sidecar" in str(cache.check(k))
    data = cache.load_or_build(tmp_path / "m.onnx", k)
    assert data != b"FOREIGN ENGINE" and fb.calls == 1
    assert sidecar.is_file()


def test_engine_cache_failed_build_leaves_no_sidecar(tmp_path: Path) -> None:
    def bad(onnx: Path, key: EngineKey, timing: Path) -> bytes:
        raise RuntimeError("parser error")

    ok = EngineCache(tmp_path, _FakeBuilder())
    k = _key()
    ok.load_or_build(tmp_path / "m.onnx", k)
    cache = EngineCache(tmp_path, bad)
    with pytest.raises(EngineCacheError, match="parser error"):
        cache.rebuild(tmp_path / "m.onnx", k)
    assert not cache.paths(k)[1].exists()
    assert cache.check(k) is not None


# --------------------------------------------------------------------------- GPU


def _gpu_ready() -> bool:
    from sam3d_ros.backends.auto import gpu_available, tensorrt_available

    return gpu_available() and tensorrt_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_ready(), reason="needs an NVIDIA GPU with tensorrt and cuda-python")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_matches_onnxruntime(tmp_path: Path, ort_backend, precision: str) -> None:
    from sam3d_ros.backends.tensorrt_backend import TensorRTBackend

    trt = TensorRTBackend(default_config(), directory=MODELS, precision=precision, engine_dir=tmp_path)
    x = _random_inputs(5, seed=3)
    a, b = ort_backend.infer(x), trt.infer(x)
    atol = 1e-3 if precision == "fp32" else 0.1
    np.testing.assert_allclose(a.occupancy_logits, b.occupancy_logits, atol=atol)
    trt.close()
    # second start: cache hit, no rebuild
    trt2 = TensorRTBackend(default_config(), directory=MODELS, precision=precision, engine_dir=tmp_path)
    assert trt2.cache.builds == 0
    trt2.close()


def test_manifest_text_has_no_machine_paths(tmp_path: Path) -> None:
    from sam3d_ros.backends.learned import portable_text, write_manifest

    home = str(Path.home())
    cmd = (
        f"{tmp_path}/venv/bin/sam3d-ros train --cache-dir {home}/.cache/x --export-dir {tmp_path}/repo/models"
    )
    assert (
        portable_text(cmd, repo_root=tmp_path / "repo")
        == "sam3d-ros train --cache-dir ~/.cache/x --export-dir models"
    )
    write_manifest(tmp_path, {"training": {"command": cmd, "n": [1.5, float("nan")]}})
    text = (tmp_path / "manifest.json").read_text()
    assert home + "/" not in text and "/bin/sam3d-ros" not in text
    assert json.loads(text)["training"]["n"] == [1.5, None]


#: Substrings that give away one machine's layout; the shipped manifests name the cache only
#: as ``~/.cache/...`` (the documented default), repository files relative to the root.
MACHINE_PATH_MARKERS = ("/home/", "/work/", "/tmp/", "/root/", "/Users/", "venv", "site-packages", ".cache")


@pytest.mark.parametrize(
    "manifest",
    sorted(MODELS.glob("**/manifest.json")),
    ids=lambda p: str(p.relative_to(MODELS)),
)
def test_shipped_manifests_have_no_machine_paths(manifest: Path) -> None:
    text = manifest.read_text().replace("~/.cache/", "~/<cache>/")
    found = [m for m in MACHINE_PATH_MARKERS if m in text]
    assert not found, f"{manifest.relative_to(ROOT)} names machine paths: {found}"


def test_every_shipped_manifest_is_checked_for_machine_paths() -> None:
    names = {str(p.relative_to(MODELS)) for p in MODELS.glob("**/manifest.json")}
    assert {"manifest.json", "v3/manifest.json", "v4/manifest.json"} <= names


# --------------------------------------------------------------------------- two stages


def _two_stage_dir(tmp_path: Path, local_support: bool | None = None) -> Path:
    """A two-stage model: the shipped network as stage 2, models/v4's as stage 1 (files
    copied and listed in the manifest, as ``export_model(..., stage1=...)`` writes them);
    ``local_support``: the manifest's ``stage2_local_support`` (None: as shipped)."""
    from sam3d_ros.backends.learned import STAGE1_ONNX_KEY, STAGE1_WEIGHTS_KEY, WEIGHTS_KEY, sha256_file

    manifest = load_manifest(MODELS)
    for key in (ONNX_KEY, WEIGHTS_KEY):
        shutil.copy(MODELS / manifest["files"][key]["name"], tmp_path)
    v4 = load_manifest(MODELS / "v4")
    for key, src_key, name in (
        (STAGE1_ONNX_KEY, ONNX_KEY, "stage1.onnx"),
        (STAGE1_WEIGHTS_KEY, WEIGHTS_KEY, "stage1.pt"),
    ):
        shutil.copy(MODELS / "v4" / v4["files"][src_key]["name"], tmp_path / name)
        manifest["files"][key] = {"name": name, "sha256": sha256_file(tmp_path / name)}
    if local_support is not None:
        manifest["encoding"]["stage2_local_support"] = local_support
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    return tmp_path


@pytest.mark.parametrize("local_support", [True, False])
def test_stage_two_rests_on_the_supporting_object_when_the_model_was_trained_so(
    tmp_path: Path, local_support: bool
) -> None:
    """A model whose manifest says ``stage2_local_support`` grounds a stacked object's
    stage-2 cube on the top of what it rests on (``SceneContext.support_heights``); an
    older model ignores the heights (its cubes were floored at the table in training)."""
    from dataclasses import replace

    from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sam3d_ros.core.constants import SUPPORT_CUT_TOL
    from sam3d_ros.core.encoding import FLOOR_VOXELS
    from sam3d_ros.core.frames import make_transform
    from sam3d_ros.core.observation import extract_observations
    from sam3d_ros.core.support_plane import estimate_support_plane
    from sam3d_ros.core.types import SceneContext
    from sam3d_ros.sim.raycast import Box, Scene, SceneObject, look_at, render

    d = _two_stage_dir(tmp_path, local_support)
    two = OnnxRuntimeBackend(default_config(), directory=d, intra_op_threads=1, use_cuda=False)
    assert two.stage2_local_support is local_support
    # a 6 cm box on a 5 cm high slab
    slab = Box((0.16, 0.14, 0.05), make_transform(np.eye(3), np.array([0.0, 0.0, 0.025])))
    top = Box((0.06, 0.05, 0.06), make_transform(np.eye(3), np.array([0.0, 0.0, 0.08])))
    cam = look_at(eye=(0.05, -0.5, 0.4), target=(0.0, 0.0, 0.05))
    frame = render(Scene(objects=(SceneObject(1, slab), SceneObject(2, top))), cam).to_rgbd_frame()
    cfg = default_config()
    scene = SceneContext(frame=frame, plane=estimate_support_plane(frame, cfg))
    assert scene.plane is not None
    observations, _ = extract_observations(frame, cfg)
    assert [o.instance_id for o in observations] == [1, 2]
    plain = two.reconstruct(scene, observations)
    grounded = two.reconstruct(replace(scene, support_heights={2: 0.05}), observations)
    assert all(s is not None for s in (*plain, *grounded))
    np.testing.assert_array_equal(plain[0].origin, grounded[0].origin)  # the slab: untouched
    np.testing.assert_array_equal(plain[0].occupancy, grounded[0].occupancy)
    if not local_support:
        np.testing.assert_array_equal(plain[1].origin, grounded[1].origin)
        np.testing.assert_array_equal(plain[1].occupancy, grounded[1].occupancy)
        return
    # the top box's cube starts FLOOR_VOXELS voxels under the slab's top, not at the table
    ground = 0.05 - SUPPORT_CUT_TOL
    shape = grounded[1]
    assert shape.origin[2] == pytest.approx(ground - FLOOR_VOXELS * shape.voxel_size, abs=1e-6)
    assert shape.origin[2] > plain[1].origin[2] + 0.01


def test_two_stage_model_runs_stage_two_on_the_stage_one_box(tmp_path: Path) -> None:
    from sam3d_ros.backends.learned import stage1_files
    from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sam3d_ros.core.encoding import encode_objects
    from sam3d_ros.core.types import SceneContext
    from sam3d_ros.sim.scenes import random_scene

    d = _two_stage_dir(tmp_path)
    two = OnnxRuntimeBackend(default_config(), directory=d, intra_op_threads=1, use_cuda=False)
    assert two.stages == ("layout", "shape")
    assert stage1_files(d)[0].name == "stage1.onnx"
    v4 = OnnxRuntimeBackend(default_config(), directory=MODELS / "v4", intra_op_threads=1, use_cuda=False)
    x = _random_inputs(3, seed=4)
    # the layout stage is v4's graph, the shape stage the shipped one
    np.testing.assert_allclose(two.infer(x, "layout").layout, v4.infer(x).layout, atol=1e-5)
    frame = random_scene(3_000_321, n_objects=3).render().to_rgbd_frame()
    pipe = FramePipeline(default_config(), two)
    result = pipe.process(frame)
    assert len(result.objects) >= 2, result.skipped
    # stage 1's boxes are those v4 predicts on the observed-extent cubes
    from sam3d_ros.core.observation import extract_observations
    from sam3d_ros.core.support_plane import estimate_support_plane

    cfg = default_config()
    scene = SceneContext(frame=frame, plane=estimate_support_plane(frame, cfg))
    observations, _ = extract_observations(frame, cfg)
    shapes = two.reconstruct(scene, observations)
    inputs, frames = encode_objects(scene, observations)
    lay = v4.infer(inputs).layout
    boxes = [b for b in two.last_layouts if b is not None]
    assert len(boxes) == len(inputs)
    for (t, size), row, gf, shape in zip(
        boxes, lay, [f for f in frames if f is not None], shapes, strict=True
    ):
        t_ref, size_ref = decode_layout(row, gf)
        np.testing.assert_allclose(t, t_ref, atol=1e-5)
        np.testing.assert_allclose(size, size_ref, atol=1e-5)
        # ... and each shape lives on its stage-2 cube, not on the stage-1 one
        assert shape is not None
        assert not np.allclose(shape.origin, gf.origin) or shape.voxel_size != pytest.approx(gf.voxel_size)


def test_two_stage_torch_matches_onnxruntime_with_the_exported_layout_only_stage_one(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="torch is not installed (requirements/dev.txt)")
    from sam3d_ros.backends.learned import STAGE1_ONNX_KEY, STAGE1_WEIGHTS_KEY
    from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sam3d_ros.backends.torch_backend import TorchBackend
    from sam3d_ros.learning.export import export_stage1

    d = _two_stage_dir(tmp_path)
    manifest = json.loads((d / MANIFEST_NAME).read_text())
    onnx_entry, weights_entry, parity = export_stage1(MODELS / "v4", d)
    assert parity < 1e-4
    manifest["files"][STAGE1_ONNX_KEY], manifest["files"][STAGE1_WEIGHTS_KEY] = onnx_entry, weights_entry
    (d / MANIFEST_NAME).write_text(json.dumps(manifest))
    ob = OnnxRuntimeBackend(default_config(), directory=d, intra_op_threads=1, use_cuda=False)
    tb = TorchBackend(default_config(), directory=d, device="cpu")
    v4 = OnnxRuntimeBackend(default_config(), directory=MODELS / "v4", intra_op_threads=1, use_cuda=False)
    assert tb.stages == ob.stages == ("layout", "shape")
    x = _random_inputs(2, seed=5)
    ref = v4.infer(x)
    for stage in ob.stages:
        a, b = ob.infer(x, stage), tb.infer(x, stage)
        np.testing.assert_allclose(a.occupancy_logits, b.occupancy_logits, atol=1e-4)
        np.testing.assert_allclose(a.layout, b.layout, atol=1e-4)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    # the layout-only graph: v4's layout and confidence, no occupancy
    lay = ob.infer(x, "layout")
    assert lay.occupancy_logits.shape == (2, 0, 0, 0)
    np.testing.assert_allclose(lay.layout, ref.layout, atol=1e-4)
    np.testing.assert_allclose(lay.confidence, ref.confidence, atol=1e-4)
