"""Tests of the evaluation: scorer sanity (ground-truth row), baselines, replay results, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import trimesh

from sam3d_ros.cli import main as cli_main
from sam3d_ros.core.baselines import BaselineError, convex_hull_mesh, extruded_hull_mesh, score_point_set
from sam3d_ros.core.config import default_config, default_node_config
from sam3d_ros.core.metrics import sample_surface
from sam3d_ros.core.types import SupportPlane
from sam3d_ros.sim.dataset import export_bag, generate_dataset, load_dataset
from sam3d_ros.sim.generator import GeneratorConfig
from sam3d_ros.tools.eval import BASELINES, BackendMethod, ResultsMethod, evaluate, format_table

pytest.importorskip("pybullet")

FAST = {"n_samples": 1500, "iou_resolution": 40}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval") / "ds"
    generate_dataset(
        root,
        2,
        seed=1,
        split="val",
        config=GeneratorConfig(width=320, height=240, min_objects=2, max_objects=4),
    )
    return root


@pytest.fixture(scope="module")
def reports(tiny: Path) -> dict:
    methods = [BASELINES[k]() for k in BASELINES] + [BackendMethod("geometric")]
    return evaluate(load_dataset(tiny), methods, **FAST)


def test_ground_truth_row_proves_scorer(reports: dict) -> None:
    gt = reports["ground_truth"].buckets()["all"]
    assert gt.count >= 2
    assert gt.mean["fscore_5mm"] == 1.0 and gt.mean["fscore_10mm"] == 1.0
    assert gt.mean["chamfer_l1_mm"] < 0.05
    assert gt.mean["centre_error_mm"] < 0.01
    assert gt.mean["add_s_success"] == 1.0
    assert reports["ground_truth"].coverage == 1.0


def test_baseline_ordering(reports: dict, ycb: None) -> None:
    mean = {k: r.buckets()["all"].mean for k, r in reports.items()}
    assert mean["visible_points"]["volume_iou"] == 0.0  # a point set has no volume
    # extruding to the table recovers volume a bare hull of the visible surface lacks
    assert mean["extruded_hull"]["volume_iou"] > mean["convex_hull"]["volume_iou"]
    assert mean["extruded_hull"]["centre_error_mm"] < mean["convex_hull"]["centre_error_mm"]
    # completion beats the visible points alone, nothing beats the truth
    assert mean["geometric"]["fscore_10mm"] > mean["visible_points"]["fscore_10mm"]
    for name, m in mean.items():
        if name != "ground_truth":
            assert m["fscore_5mm"] < 1.0 and m["chamfer_l1_mm"] > 0.5, name
    table = format_table(reports)
    assert table.count("\n| geometric |") >= 1 and "| ground_truth | " in table


def test_hull_and_point_set_helpers() -> None:
    box = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
    pts = sample_surface(box, 3000, seed=2)
    hull = convex_hull_mesh(pts)
    hm = trimesh.Trimesh(hull.vertices, hull.faces)
    assert hm.is_watertight and hm.volume > 0  # outward orientation
    assert abs(hm.volume - box.volume) / box.volume < 0.05
    top = pts[pts[:, 2] > 0.019]  # the top face only, 2 cm above a plane at z = -0.02
    plane = SupportPlane(normal=np.array([0.0, 0.0, 1.0]), offset=0.02)
    ext = trimesh.Trimesh(*(lambda m: (m.vertices, m.faces))(extruded_hull_mesh(top, plane)))
    assert abs(ext.volume - box.volume) / box.volume < 0.05
    with pytest.raises(BaselineError):
        convex_hull_mesh(top[:3])
    with pytest.raises(BaselineError):
        convex_hull_mesh(np.column_stack([top[:, :2], np.zeros(len(top))]))
    m = score_point_set(sample_surface(box, 20000, seed=5), box, n_samples=2000)
    assert m.fscore_5mm > 0.99 and m.chamfer_l1_mm < 0.5 and m.volume_iou == 0.0
    half = pts[pts[:, 0] > 0.0]
    m2 = score_point_set(half, box, n_samples=2000)
    assert 0.4 < m2.fscore_5mm < 0.8 and m2.centre_error_mm > 10.0


def test_eval_of_replay_results(tiny: Path, tmp_path: Path) -> None:
    from sam3d_ros.tools.replay import replay_bag

    bag = export_bag(load_dataset(tiny), tmp_path / "bag", "mcap")
    out = tmp_path / "replay"
    replay_bag(bag, out, default_node_config().replace(backend="geometric"), progress=False)
    ds = load_dataset(bag)
    results = ResultsMethod(out / "results.jsonl")
    direct = evaluate(ds, [results, BackendMethod("geometric")], **FAST)
    rep = direct[results.name]
    # clutter: some objects are skipped (too few depth points), by both paths alike
    assert rep.coverage == direct["geometric"].coverage and rep.coverage > 0.6
    a = rep.buckets()["all"].mean
    b = direct["geometric"].buckets()["all"].mean
    # the replay runs the same pipeline on the same messages as the backend row
    assert math.isclose(a["chamfer_l1_mm"], b["chamfer_l1_mm"], rel_tol=0.02)
    assert a["fscore_10mm"] > 0.5


def test_cli_generate_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    bag = tmp_path / "bag"
    rc = cli_main(
        [
            "generate",
            str(ds),
            "--frames",
            "1",
            "--seed",
            "3",
            "--split",
            "test",
            "--width",
            "160",
            "--height",
            "120",
            "--bag",
            str(bag),
            "--storage",
            "sqlite3",
        ]
    )
    assert rc == 0 and (ds / "dataset.json").is_file() and (bag / "mesh_ground_truth.json").is_file()
    out_json = tmp_path / "eval.json"
    rc = cli_main(
        [
            "eval",
            str(ds),
            "--split",
            "test",
            "--baselines",
            "ground_truth,extruded_hull",
            "--backend",
            "geometric",
            "--json",
            str(out_json),
            "--samples",
            "1000",
            "--iou-resolution",
            "32",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| ground_truth |" in printed and "| geometric |" in printed and "| extruded_hull |" in printed
    doc = json.loads(out_json.read_text())
    assert set(doc["methods"]) == {"ground_truth", "extruded_hull", "geometric"}
    assert doc["methods"]["ground_truth"]["buckets"]["all"]["mean"]["fscore_5mm"] == 1.0
    assert cli_main(["eval", str(ds), "--baselines", "bogus"]) == 2
    assert cli_main(["eval", str(tmp_path / "missing")]) == 2


def test_parallel_evaluation_scores_the_same_objects(tiny: Path, reports: dict) -> None:
    from sam3d_ros.tools.eval import evaluate_parallel

    par = evaluate_parallel(tiny, ["extruded_hull", "backend:geometric"], default_config(), 2, **FAST)
    for name in ("extruded_hull", "geometric"):
        serial = sorted((m.instance_id, m.chamfer_l1_mm) for m in reports[name].objects)
        merged = sorted((m.instance_id, m.chamfer_l1_mm) for m in par[name].objects)
        assert [i for i, _ in merged] == [i for i, _ in serial]
        # two frames, one per worker: each object scored exactly as in the serial run
        np.testing.assert_allclose([c for _, c in merged], [c for _, c in serial], rtol=1e-9, atol=1e-9)
        assert par[name].predicted == reports[name].predicted


def test_cli_gate_stores_validation_in_the_manifest(tiny: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from sam3d_ros.backends.learned import load_manifest, model_dir

    models = tmp_path / "models"
    shutil.copytree(model_dir(), models)
    before = load_manifest(models)
    report = tmp_path / "gate.json"
    args = ["gate", str(tiny), "--model-dir", str(models), "--max-frames", "1", "--write-manifest"]
    rc = cli_main([*args, "--compare", str(models / "v3"), "--json", str(report)])
    after = load_manifest(models)
    validation = after["validation"]
    assert rc == (0 if validation["quality_gate"]["met"] else 1)
    assert validation["frames"] == 1 and validation["split"] == "val"
    assert set(validation["metrics"]) == {"extruded_hull", "geometric", "onnxruntime", "onnxruntime@v3"}
    assert (
        "stacked" in validation["metrics"]["onnxruntime"]
        or "on_table" in validation["metrics"]["onnxruntime"]
    )
    objects = json.loads(report.read_text())["methods"]["onnxruntime@v3"]["per_object"]
    assert objects and all("tags" in o for o in objects)
    assert validation["metrics"]["onnxruntime"]["all"]["count"] > 0
    # only the validation changed; the file is strict JSON
    assert {k: v for k, v in after.items() if k != "validation"} == {
        k: v for k, v in before.items() if k != "validation"
    }
    json.loads((models / "manifest.json").read_text(), parse_constant=lambda c: pytest.fail(c))


def test_buckets_by_visibility_support_border_and_sensor(reports: dict, tiny: Path) -> None:
    from sam3d_ros.tools.eval import MethodReport, ObjectTags, format_bucket_table

    base = reports["ground_truth"].objects[0]
    rep = MethodReport("m")
    tags = [
        ObjectTags(0.9, True, False, "kinect_v1", "pile"),
        ObjectTags(0.5, False, False, "kinect_v1", "pile"),
        ObjectTags(0.2, True, True, "azure_kinect", "bin"),
        ObjectTags(0.6, True, False, "azure_kinect", "bin"),
    ]
    for i, t in enumerate(tags):
        rep.objects.append(
            dataclasses.replace(base, chamfer_l1_mm=float(i + 1), visible_fraction=t.visible_fraction)
        )
        rep.tags.append(t)
    b = rep.buckets()
    counts = {k: v.count for k, v in b.items()}
    assert counts == {
        "all": 4,
        "visible>=0.6": 2,
        "visible 0.35-0.6": 1,
        "visible<0.35": 1,
        "visible<0.6": 2,
        "on_table": 3,
        "stacked": 1,
        "cut_by_border": 1,
        "sensor:azure_kinect": 2,
        "sensor:kinect_v1": 2,
        "scene:bin": 2,
        "scene:pile": 2,
    }
    assert b["stacked"].mean["chamfer_l1_mm"] == 2.0 and b["visible>=0.6"].mean["chamfer_l1_mm"] == 2.5
    table = format_bucket_table({"m": rep})
    assert "| stacked | 1 | 2.00 / " in table
    # every scored object of a generated dataset carries its tags, its frame among them
    assert len(reports["geometric"].tags) == len(reports["geometric"].objects) > 0
    ds = load_dataset(tiny)
    scored = [
        (f.index, o.label)
        for f in ds.frames
        for o in f.objects
        if o.visible_pixels >= default_config().min_mask_pixels
    ]
    got = [
        (t.frame, m.instance_id)
        for t, m in zip(reports["geometric"].tags, reports["geometric"].objects, strict=True)
    ]
    assert got == scored
