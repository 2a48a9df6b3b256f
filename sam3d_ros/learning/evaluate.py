"""Held-out evaluation of backends on labelled frames with :mod:`sam3d_ros.core.metrics`.

Every frame runs through the full :class:`~sam3d_ros.core.pipeline.FramePipeline` of each
backend; each reconstructed object (mesh posed in the camera frame) is compared with its
true mesh. Objects are matched by instance label. Metrics are aggregated over the objects
that *every* backend reconstructed (a fair comparison), split by visible fraction
(``metrics.VISIBLE_FRACTION_SPLIT``); objects a backend did not reconstruct are counted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from sam3d_ros.core.backend import Backend
from sam3d_ros.core.config import PipelineConfig, default_config
from sam3d_ros.core.frames import transform_points
from sam3d_ros.core.metrics import ObjectMetrics, aggregate_by_visibility, evaluate_object
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.types import TriangleMesh
from sam3d_ros.learning.data import create_source

logger = logging.getLogger(__name__)

#: Metrics reported per bucket (means).
REPORTED: tuple[str, ...] = ("chamfer_l1_mm", "fscore_5mm", "fscore_10mm", "volume_iou", "centre_error_mm")


def evaluate_backends(
    backends: dict[str, Backend],
    n_frames: int,
    *,
    split: str = "test",
    seed: int = 0,
    source: str = "raycast",
    config: PipelineConfig | None = None,
    n_samples: int = 5000,
) -> dict[str, Any]:
    """Compare ``backends`` (name -> backend) on ``n_frames`` ray-cast frames of ``split``.

    Returns:
        {"split", "frames", "objects", "common_objects", "failures": {name: n},
        "backend_ms_per_frame": {name: median}, "metrics": {name: {bucket: {"count", metric:
        mean}}}}.
    """
    cfg = config or default_config()
    src = create_source(source)
    pipelines = {name: FramePipeline(cfg, b) for name, b in backends.items()}
    per: dict[str, list[ObjectMetrics]] = {name: [] for name in backends}
    failures = dict.fromkeys(backends, 0)
    times: dict[str, list[float]] = {name: [] for name in backends}
    n_objects = 0
    common = 0
    for lf in src.frames(split, n_frames, seed):
        results = {name: p.process(lf.frame) for name, p in pipelines.items()}
        for name, r in results.items():
            times[name].append(r.timings_ms.get("backend", math.nan))
        by_name = {name: {o.instance_id: o for o in r.objects} for name, r in results.items()}
        for label, tgt in lf.targets.items():
            if tgt.visible_fraction <= 0.0 or tgt.true_mesh is None:
                continue
            n_objects += 1
            have = {name: by_name[name].get(label) for name in backends}
            for name, obj in have.items():
                if obj is None:
                    failures[name] += 1
            if any(v is None for v in have.values()):
                continue
            common += 1
            gt_mesh = tgt.true_mesh()
            for name, obj in have.items():
                assert obj is not None
                pose = obj.pose.matrix()
                mesh = TriangleMesh(vertices=transform_points(pose, obj.mesh.vertices), faces=obj.mesh.faces)
                per[name].append(
                    evaluate_object(
                        mesh,
                        gt_mesh,
                        instance_id=label,
                        visible_fraction=tgt.visible_fraction,
                        n_samples=n_samples,
                        seed=0,
                        iou_resolution=64,
                    )
                )
    metrics: dict[str, Any] = {}
    for name, ms in per.items():
        buckets = aggregate_by_visibility(ms)
        metrics[name] = {
            b: {"count": agg.count, **{k: round(agg.mean[k], 4) for k in REPORTED}}
            for b, agg in buckets.items()
        }
    return {
        "split": split,
        "seed": seed,
        "frames": n_frames,
        "objects": n_objects,
        "common_objects": common,
        "failures": failures,
        "backend_ms_per_frame": {
            k: round(float(np.nanmedian(v)), 1) if v else math.nan for k, v in times.items()
        },
        "metrics": metrics,
    }


def quality_gate(result: dict[str, Any], candidate: str, baselines: Sequence[str]) -> dict[str, Any]:
    """Whether ``candidate`` beats every baseline in mean Chamfer (lower) and F@10 (higher) in
    both visible-fraction buckets. Empty buckets fail the gate. Returns {"met": bool,
    "checks": [...]}."""
    checks = []
    met = True
    mets = result["metrics"]
    for bucket in mets[candidate]:
        if bucket == "all":
            continue
        c = mets[candidate][bucket]
        for base in baselines:
            b = mets[base][bucket]
            ok = (
                c["count"] > 0
                and c["chamfer_l1_mm"] < b["chamfer_l1_mm"]
                and c["fscore_10mm"] > b["fscore_10mm"]
            )
            met &= bool(ok)
            checks.append(
                {
                    "bucket": bucket,
                    "baseline": base,
                    "count": c["count"],
                    "chamfer_l1_mm": [c["chamfer_l1_mm"], b["chamfer_l1_mm"]],
                    "fscore_10mm": [c["fscore_10mm"], b["fscore_10mm"]],
                    "better": bool(ok),
                }
            )
    return {"met": met, "checks": checks, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
