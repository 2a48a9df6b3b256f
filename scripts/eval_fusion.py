"""Multi-view fusion benchmark: fused vs single-frame shapes on replayed camera arcs.

For each seed, :func:`sam3d_ros.sim.scenes.sequence` renders a camera arc around one
random tabletop scene (RealSense-like depth noise). Two pipelines process the same frames:
``single`` (``fusion_enabled=false``) and ``fused`` (``fusion_enabled=true`` with the
ground-truth camera pose per frame as ``fixed_T_camera``, i.e. fusion in the world frame).
Every object of every frame is scored against its true mesh in the camera frame
(:mod:`sam3d_ros.core.metrics`); the table lists means over objects at each frame index.

Usage: python scripts/eval_fusion.py [--seeds 1 2 3] [--frames 6] [--arc 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.config import default_config
from sam3d_ros.core.metrics import evaluate_object
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.sim.noise import DepthNoiseConfig
from sam3d_ros.sim.raycast import true_mesh
from sam3d_ros.sim.scenes import render_sequence, sequence

METRICS = ("chamfer_l1_mm", "fscore_5mm", "volume_iou")


def run(seeds: list[int], n_frames: int, arc: float, n_objects: int, size: tuple[int, int]) -> dict[str, Any]:
    """Per-mode, per-frame-index mean metrics (and the overall means over frames >= 1)."""
    per: dict[str, list[list[dict[str, float]]]] = {"single": [[] for _ in range(n_frames)]}
    per["fused"] = [[] for _ in range(n_frames)]
    timing: dict[str, list[float]] = {"single": [], "fused": []}
    for seed in seeds:
        views = sequence(seed, n_frames, n_objects, arc_deg=arc, width=size[0], height=size[1])
        frames = render_sequence(views, noise=DepthNoiseConfig(), noise_seed=seed)
        for mode in ("single", "fused"):
            cfg = default_config().replace(fusion_enabled=(mode == "fused"))
            pipe = FramePipeline(cfg, create_backend(cfg))
            for i, rf in enumerate(frames):
                t0 = time.perf_counter()
                upd = pipe.process_scene(rf.to_rgbd_frame(), rf.camera.world_T_camera)
                timing[mode].append((time.perf_counter() - t0) * 1000.0)
                gts = {o.label: o for o in rf.objects}
                for obj in upd.result.objects:
                    gt = gts.get(obj.instance_id)
                    if gt is None:
                        continue
                    t = obj.pose.matrix()
                    pred = (obj.mesh.vertices @ t[:3, :3].T + t[:3, 3], obj.mesh.faces)
                    m = evaluate_object(pred, true_mesh(gt, "camera"), n_samples=4000, iou_resolution=48)
                    per[mode][i].append({k: float(getattr(m, k)) for k in METRICS})
            pipe.close()
    out: dict[str, Any] = {"frames": n_frames, "seeds": seeds, "arc_deg": arc, "modes": {}}
    for mode, rows in per.items():
        by_frame = [
            {k: float(np.mean([r[k] for r in row])) if row else math.nan for k in METRICS} for row in rows
        ]
        later = [r for row in rows[1:] for r in row]
        out["modes"][mode] = {
            "by_frame": by_frame,
            "after_first": {k: float(np.mean([r[k] for r in later])) for k in METRICS},
            "last": by_frame[-1],
            "objects_scored": sum(len(row) for row in rows),
            "median_frame_ms": float(np.median(timing[mode])),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--arc", type=float, default=120.0, help="camera arc, degrees")
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    ap.add_argument("--json", type=str, default="")
    args = ap.parse_args()
    res = run(args.seeds, args.frames, args.arc, args.objects, tuple(args.size))
    print(f"{'frame':>5} " + " ".join(f"{m + '/' + k:>24}" for m in ("single", "fused") for k in METRICS))
    for i in range(args.frames):
        cells = [res["modes"][m]["by_frame"][i][k] for m in ("single", "fused") for k in METRICS]
        print(f"{i:>5} " + " ".join(f"{c:>24.3f}" for c in cells))
    for m in ("single", "fused"):
        a = res["modes"][m]["after_first"]
        print(f"{m:>6} frames>=1: " + ", ".join(f"{k}={a[k]:.3f}" for k in METRICS))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
