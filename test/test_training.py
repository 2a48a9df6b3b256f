"""Training infrastructure on a tiny cached dataset: teacher distillation path, resumable
checkpoints, curves, export with manifest (skipped without torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sam3d_ros.learning.data import (
    DataError,
    add_teacher_outputs,
    build_dataset,
    create_source,
    dequantise,
    load_dataset,
    quantise,
)

torch = pytest.importorskip("torch", reason="torch is not installed (requirements/dev.txt)")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    from sam3d_ros.learning.train import dataset_dir

    for split in ("train", "val"):
        build_dataset(dataset_dir(cache, "raycast", split, 2, 0), split, 2)
    return cache


def test_dataset_roundtrip_and_targets(tiny_cache: Path) -> None:
    from sam3d_ros.learning.train import dataset_dir

    d = dataset_dir(tiny_cache, "raycast", "train", 2, 0)
    meta = json.loads((d / "dataset.json").read_text())
    assert meta["objects"] > 0 and meta["recipe"]["split"] == "train"
    ds = load_dataset(d)
    b = ds.batch([0])
    assert b["inputs"].shape == (1, 10, 32, 32, 32) and b["inputs"].dtype == np.float32
    assert 0.0 < b["target"].mean() < 0.5  # an object, not the whole cube
    assert ds.teacher is None
    x = np.random.default_rng(0).random((2, 10, 4, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(dequantise(quantise(x))[:, :9], x[:, :9], atol=0.5 / 255 + 1e-6)
    with pytest.raises(DataError, match="valid"):
        create_source("nope")


def test_teacher_outputs_enable_distillation(tiny_cache: Path, tmp_path: Path) -> None:
    import shutil

    from sam3d_ros.backends.torch_model import build_model
    from sam3d_ros.learning.train import TrainConfig, compute_losses, dataset_dir

    d = tmp_path / "ds"
    shutil.copytree(dataset_dir(tiny_cache, "raycast", "train", 2, 0), d)
    n = add_teacher_outputs(d, lambda x: np.full((len(x), 32, 32, 32), 0.25, np.float32))
    ds = load_dataset(d)
    assert n == len(ds) and ds.has_teacher is not None and ds.has_teacher.all()
    b = {k: torch.from_numpy(v) for k, v in ds.batch([0, 1]).items()}
    assert torch.allclose(b["teacher"], torch.tensor(64 / 255.0), atol=1e-6)
    losses = compute_losses(build_model()(b["inputs"]), b, TrainConfig())
    assert "distill" in losses and float(losses["distill"]) > 0


def test_training_resumes_and_exports(tiny_cache: Path, tmp_path: Path) -> None:
    from sam3d_ros.backends.learned import load_manifest, verified_file
    from sam3d_ros.learning.export import export_model
    from sam3d_ros.learning.train import TrainConfig, load_weights, train

    run = tmp_path / "run"
    small = {"c16": 4, "c8": 4, "c4": 4, "c32": 2}
    cfg = TrainConfig(train_frames=2, val_frames=2, epochs=2, batch_size=8, max_minutes=0.0, model=small)
    rec = train(cfg, run, tiny_cache)
    assert rec["stopped_by_time_budget"] and rec["epochs_done"] == 0
    cfg.max_minutes = 5.0
    rec = train(cfg, run, tiny_cache)
    assert rec["complete"] and rec["epochs_done"] == 2
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((run / "history.json").read_text())) == 2
    out = tmp_path / "models"
    export_model(load_weights(run / "final.pt"), out, rec)
    manifest = load_manifest(out)
    assert verified_file(out, manifest, "onnx").is_file()
    assert manifest["export"]["parity_max_abs_diff"] < 1e-4


def test_stage_two_dataset_is_encoded_on_the_stage_one_boxes(tiny_cache: Path, tmp_path: Path) -> None:
    """``build_dataset(stage1=...)`` encodes every object on the cube its stage-1 layout
    places (the inference rule), records the stage-1 sha256 in the recipe and the cache name."""
    from sam3d_ros.backends.learned import sha256_file, stage1_files
    from sam3d_ros.core.config import default_config
    from sam3d_ros.core.encoding import encode_object, encode_objects, stage2_cube
    from sam3d_ros.core.observation import extract_observations
    from sam3d_ros.core.support_plane import estimate_support_plane
    from sam3d_ros.core.types import SceneContext
    from sam3d_ros.learning.data import _Stage1
    from sam3d_ros.learning.train import dataset_dir

    root = Path(__file__).resolve().parents[1]
    onnx = stage1_files(root / "models" / "v4")[0]
    sha = sha256_file(onnx)
    d = dataset_dir(tmp_path, "raycast", "val", 1, 0, sha)
    assert d.name.endswith(f"_st2-{sha[:8]}") and d != dataset_dir(tmp_path, "raycast", "val", 1, 0)
    meta = build_dataset(d, "val", 1, stage1=onnx)
    assert meta["recipe"]["stage1_sha256"] == sha
    ds = load_dataset(d)
    # the same frame encoded by hand: stage-1 cubes -> stage-1 layouts -> stage-2 cubes
    cfg = default_config()
    lf = next(iter(create_source("raycast").frames("val", 1, 0)))
    scene = SceneContext(frame=lf.frame, plane=estimate_support_plane(lf.frame, cfg))
    observations, _ = extract_observations(lf.frame, cfg)
    observations = [o for o in observations if o.instance_id in lf.targets]
    x1, frames1 = encode_objects(scene, observations)
    layouts = _Stage1(str(onnx)).layouts(x1)
    encoded = [o for o, f in zip(observations, frames1, strict=True) if f is not None]
    gfs = [f for f in frames1 if f is not None]
    x2 = np.stack(
        [
            encode_object(scene, o, stage2_cube(scene, o, g, lay, local_support=cfg.local_support))[0]
            for o, g, lay in zip(encoded, gfs, layouts, strict=True)
        ]
    )
    assert len(ds) == len(x2)
    got = np.stack([ds.batch([i])["inputs"][0] for i in range(len(ds))])
    # channels 0-5 are binary (exact after quantisation); the stage-1 cube differs
    np.testing.assert_array_equal(got[:, :6], x2[:, :6])
    assert not np.array_equal(got[:, :6], x1[:, :6])


def test_a_layout_only_run_trains_the_stage_one_graph_and_exports_a_stage_one_directory(
    tiny_cache: Path, tmp_path: Path
) -> None:
    """``layout_only``: the encoder and the global heads learn from the layout loss alone,
    the decoder keeps its initial weights; the export is a stage-1 model directory that a
    two-stage export ships as its stage 1 (recording that stage 2 was trained on another
    stage 1's cubes) and that no backend runs by itself."""
    from sam3d_ros.backends.learned import ModelFileError, load_manifest, sha256_file, stage1_files
    from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sam3d_ros.backends.torch_model import build_model
    from sam3d_ros.core.config import default_config
    from sam3d_ros.learning.export import export_layout_model, export_model
    from sam3d_ros.learning.train import TrainConfig, load_weights, train

    small = {"c16": 4, "c8": 4, "c4": 4, "c32": 2}
    init = tmp_path / "init.pt"
    torch.manual_seed(1)
    net0 = build_model(small)
    torch.save({"model": net0.state_dict(), "model_config": small}, init)
    cfg = TrainConfig(
        train_frames=2,
        val_frames=2,
        epochs=2,
        batch_size=8,
        max_minutes=5.0,
        model=small,
        init_weights=str(init),
        layout_only=True,
    )
    rec = train(cfg, tmp_path / "run", tiny_cache)
    assert rec["complete"]
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert "val_centre_err" in hist[-1] and "val_iou" not in hist[-1] and "train_bce" not in hist[-1]
    net = load_weights(tmp_path / "run" / "final.pt")
    before, after = net0.state_dict(), net.state_dict()
    decoder = ("up8", "dec8", "up16", "dec16", "up32", "fuse32", "head32")
    for name in before:
        same = torch.equal(before[name], after[name])
        if name.startswith(decoder):
            assert same, name
        elif name.startswith(("stem.0.0.weight", "down4.0.0.weight", "global_head.0.weight")):
            assert not same, name
    st1 = tmp_path / "stage1"
    export_layout_model(net, st1, rec)
    onnx, weights = stage1_files(st1)
    assert onnx.name == "geometry_layout_stage1.onnx" and weights.is_file()
    with pytest.raises(ModelFileError, match="no shape graph"):
        OnnxRuntimeBackend(default_config(), directory=st1)
    # a two-stage export that ships it, and one that ships the stage 1 stage 2 was trained on
    for shipped, trained_on, expect in ((st1, "0" * 64, False), (st1, sha256_file(onnx), True)):
        out = tmp_path / f"two_stage_{expect}"
        m = export_model(net, out, {"config": {"stage1_sha256": trained_on}}, stage1=shipped)
        assert m["stages"]["layout"]["shape_trained_on_this_layout"] is expect
        assert load_manifest(out)["files"]["onnx_stage1"]["sha256"]
        OnnxRuntimeBackend(default_config(), directory=out)  # a complete model


def test_a_checkpoint_from_before_a_recipe_field_existed_resumes(tiny_cache: Path, tmp_path: Path) -> None:
    """A field added to :class:`TrainConfig` later (here ``layout_only``) reads as its
    default in an older checkpoint, so the run resumes; another value is refused."""
    from sam3d_ros.learning.train import TrainConfig, TrainError, train

    small = {"c16": 4, "c8": 4, "c4": 4, "c32": 2}
    run = tmp_path / "run"
    cfg = TrainConfig(train_frames=2, val_frames=2, epochs=1, batch_size=8, max_minutes=0.0, model=small)
    train(cfg, run, tiny_cache)
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    del ck["config"]["layout_only"]
    torch.save(ck, run / "checkpoint.pt")
    with pytest.raises(TrainError, match="another recipe"):
        train(TrainConfig(**{**cfg.__dict__, "layout_only": True, "max_minutes": 5.0}), run, tiny_cache)
    cfg.max_minutes = 5.0
    assert train(cfg, run, tiny_cache)["complete"]
