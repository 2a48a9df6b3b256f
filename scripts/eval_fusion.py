#!/usr/bin/env python3
"""Multi-view fusion on camera sequences of the cluttered world: fused vs single view.

For each seed and kind (:data:`sam3d_ros.sim.sequences.SEQUENCE_KINDS`: an orbit, a wrist
camera's approach, a static camera with objects added and removed, a static camera with
one object pushed mid-way), :func:`sam3d_ros.sim.sequences.generate_sequence` renders one
settled cluttered scene of the validation split (objects never used in training). Two
pipelines with the shipped defaults run over the same views: ``single``
(``fusion_enabled: false``) and ``fused`` (``true``), given each view's true camera pose
as ``fixed_T_camera`` (what tf2 gives the node). Every object both modes reconstructed in
a view is scored against its true mesh in that view's camera frame
(:func:`sam3d_ros.core.metrics.evaluate_object`); objects one mode missed are counted and
left out of both means.

Prints JSON summaries and markdown tables: per frame index (all kinds, and per kind), per
visibility bucket of the view (frames >= 1), the pushed object before and after the push,
and the median frame time per mode.

Usage: python scripts/eval_fusion.py [--seeds 1 2 3] [--kinds orbit approach ...]
       [--views 8] [--width 640 --height 480] [--json OUT] [--md OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.config import default_config
from sam3d_ros.core.frames import transform_points
from sam3d_ros.core.metrics import evaluate_object
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.sim.generator import GeneratorConfig
from sam3d_ros.sim.sequences import (
    SEQUENCE_KINDS,
    GeneratedSequence,
    generate_sequence,
    object_mesh,
    to_rgbd_frame,
)

METRICS = ("chamfer_l1_mm", "fscore_10mm", "accuracy_mm", "completeness_mm")
BUCKETS = (("visible>=0.6", 0.6, 1.01), ("visible 0.35-0.6", 0.35, 0.6), ("visible<0.35", 0.0, 0.35))
MODES = ("single", "fused")
#: The input images' frame_id (a RealSense driver's colour optical frame).
CAMERA_FRAME_ID = "camera_color_optical_frame"


def run_sequence(seq: GeneratedSequence) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Per (view, object) records with both modes' metrics, and frame times per mode."""
    scores: dict[str, dict[tuple[int, int], dict[str, float]]] = {m: {} for m in MODES}
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for mode in MODES:
        cfg = default_config().replace(fusion_enabled=mode == "fused")
        pipe = FramePipeline(cfg, create_backend(cfg), synchronous_decomposition=True)
        try:
            for v, f in enumerate(seq.frames):
                t0 = time.perf_counter()
                upd = pipe.process_scene(to_rgbd_frame(f, CAMERA_FRAME_ID), f.world_T_camera)
                times[mode].append((time.perf_counter() - t0) * 1000.0)
                truth = {o.label: o for o in f.objects}
                for obj in upd.result.objects:
                    gt = truth.get(obj.instance_id)
                    if gt is None:
                        continue
                    pred = (transform_points(obj.pose.matrix(), obj.mesh.vertices), obj.mesh.faces)
                    m = evaluate_object(pred, object_mesh(gt), n_samples=4000, iou_resolution=32)
                    scores[mode][(v, obj.instance_id)] = {k: float(getattr(m, k)) for k in METRICS}
        finally:
            pipe.close()
    records = []
    for v, f in enumerate(seq.frames):
        for o in f.objects:
            key = (v, o.label)
            rec: dict[str, Any] = {
                "seed": seq.seed,
                "kind": seq.kind,
                "view": v,
                "label": o.label,
                "visible": o.visible_fraction,
                "moved_object": o.label == seq.moved_label,
                "after_move": seq.moved_at >= 0 and v >= seq.moved_at,
            }
            for mode in MODES:
                rec[mode] = scores[mode].get(key)
            records.append(rec)
    return records, times


def _mean_pair(recs: list[dict[str, Any]], metric: str) -> tuple[float, float, int]:
    both = [r for r in recs if r["single"] and r["fused"]]
    if not both:
        return float("nan"), float("nan"), 0
    return (
        float(np.mean([r["single"][metric] for r in both])),
        float(np.mean([r["fused"][metric] for r in both])),
        len(both),
    )


def _row(name: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    cs, cf, n = _mean_pair(recs, "chamfer_l1_mm")
    fs, ff, _ = _mean_pair(recs, "fscore_10mm")
    as_, af, _ = _mean_pair(recs, "accuracy_mm")
    ps, pf, _ = _mean_pair(recs, "completeness_mm")
    missed = {m: sum(1 for r in recs if not r[m]) for m in MODES}
    return {
        "bucket": name,
        "objects": n,
        "chamfer_single": round(cs, 2),
        "chamfer_fused": round(cf, 2),
        "change_pct": round(100.0 * (cf - cs) / cs, 1) if n else float("nan"),
        "f10_single": round(fs, 3),
        "f10_fused": round(ff, 3),
        "acc_single": round(as_, 2),
        "acc_fused": round(af, 2),
        "compl_single": round(ps, 2),
        "compl_fused": round(pf, 2),
        "missed_single": missed["single"],
        "missed_fused": missed["fused"],
    }


def tables(records: list[dict[str, Any]], views: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    out["per_frame_all"] = [_row(str(v), [r for r in records if r["view"] == v]) for v in range(views)]
    for kind in sorted({r["kind"] for r in records}):
        rk = [r for r in records if r["kind"] == kind]
        out[f"per_frame_{kind}"] = [_row(str(v), [r for r in rk if r["view"] == v]) for v in range(views)]
    later = [r for r in records if r["view"] >= 1]
    out["buckets_frames_ge_1"] = [_row("all", later)] + [
        _row(name, [r for r in later if lo <= r["visible"] < hi]) for name, lo, hi in BUCKETS
    ]
    moved = [r for r in records if r["moved_object"]]
    out["moved_object"] = [
        _row("before the push", [r for r in moved if not r["after_move"]]),
        _row("after the push", [r for r in moved if r["after_move"]]),
    ]
    return out


def markdown(tabs: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for name, rows in tabs.items():
        lines.append(f"\n{name}\n")
        lines.append(
            "| bucket | objects | Chamfer single | fused | change | F@10 single | fused "
            "| acc single | fused | compl single | fused | missed s/f |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            lines.append(
                f"| {r['bucket']} | {r['objects']} | {r['chamfer_single']} | {r['chamfer_fused']} | "
                f"{r['change_pct']} % | {r['f10_single']} | {r['f10_fused']} | {r['acc_single']} | "
                f"{r['acc_fused']} | {r['compl_single']} | {r['compl_fused']} | "
                f"{r['missed_single']}/{r['missed_fused']} |"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--kinds", nargs="+", default=list(SEQUENCE_KINDS), choices=SEQUENCE_KINDS)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--split", default="val")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args()
    gen_cfg = GeneratorConfig(width=args.width, height=args.height)
    records: list[dict[str, Any]] = []
    times: dict[str, list[float]] = defaultdict(list)
    sequences = []
    for kind in args.kinds:
        for seed in args.seeds:
            seq = generate_sequence(seed, kind, args.views, args.split, gen_cfg)
            recs, t = run_sequence(seq)
            records.extend(recs)
            for m, v in t.items():
                times[m].extend(v)
            sequences.append(
                {
                    "seed": seed,
                    "kind": kind,
                    "layout": seq.layout,
                    "sensor": seq.sensor,
                    "objects": len(seq.frames[0].objects),
                }
            )
            print(f"{kind} seed {seed}: {sequences[-1]}", flush=True)
    tabs = tables(records, args.views)
    result = {
        "views": args.views,
        "size": [args.width, args.height],
        "sequences": sequences,
        "frame_ms_median": {m: round(statistics.median(v), 1) for m, v in times.items()},
        "tables": tabs,
        "records": records,
    }
    md = markdown(tabs) + f"\n\nmedian frame ms: {result['frame_ms_median']}\n"
    print(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.md:
        args.md.write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
