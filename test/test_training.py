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

    from sam3d_ros.learning.model import build_model
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
