#!/usr/bin/env python3
"""Observation quality against the truth: does the depth in each mask show the object?

Every backend starts from the same filtered observation (``extract_observations``: mask
erosion, flying pixels, median-depth band, outlier removal). This script scores that input
on a generated dataset with known meshes: for every scored object (at least
``min_mask_pixels`` visible pixels, as ``sam3d-ros eval`` scores) the exact distance of
each kept depth point to the true surface (``metrics._SurfaceDistance``), per object the
mean and median (mm) and the share of points more than ``FOREIGN_MM`` from the surface.
An object whose median point lies more than ``UNRESOLVED_MM`` from its surface is one the
depth does not show at all: its mask holds only the background behind it or an occluder
in front (structured-light edge snapping and depth-to-colour misregistration erase small
far objects), and no backend can place it from that depth.

Prints, per sensor profile and per visible-fraction bucket: objects, mean of the per-object
mean distance, median of the per-object median, mean foreign share, unresolved objects,
mean kept points. With ``--gate`` (the JSON of ``sam3d-ros gate``/``eval --json`` on the
same dataset) it also prints, per method, the share of the summed Chamfer-L1 carried by the
unresolved objects and the mean without them (objects matched by frame and instance id; a
report older than the ``frame`` tag is matched in the order ``evaluate_parallel`` with
``--gate-workers`` processes scores them, and refused when its objects do not line up).

Usage: python scripts/eval_observations.py DATASET [--max-frames N] [--gate JSON]
       [--gate-workers 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sam3d_ros.core.config import default_config
from sam3d_ros.core.metrics import _SurfaceDistance
from sam3d_ros.core.observation import extract_observations
from sam3d_ros.sim.dataset import load_dataset

#: A kept point further than this from the true surface (mm) is foreign to the object.
FOREIGN_MM = 10.0
#: An object whose median kept point is further than this (mm) is not resolved by the depth.
UNRESOLVED_MM = 20.0
#: Visible-fraction buckets (lower bounds, as ``sam3d-ros eval`` reports them).
VIS_BUCKETS = ((0.6, "visible>=0.6"), (0.35, "visible 0.35-0.6"), (0.0, "visible<0.35"))


def _bucket(vis: float) -> str:
    return next(name for lo, name in VIS_BUCKETS if vis >= lo)


def score_frames(root: Path, max_frames: int | None, shards: int) -> list[dict[str, Any]]:
    """One row per scored object, in the order ``evaluate_parallel`` with ``shards``
    processes lists them (shard k scores frames k, k + shards, ...)."""
    ds = load_dataset(root)
    cfg = default_config()
    frames = list(ds.frames)[:max_frames] if max_frames else list(ds.frames)
    order = [f for k in range(shards) for f in frames[k::shards]]
    rows: list[dict[str, Any]] = []
    for truth in tqdm(order, desc="frames", unit="frame"):
        obs, _ = extract_observations(ds.rgbd(truth), cfg)
        by_id = {o.instance_id: o for o in obs}
        for o in truth.objects:
            if o.visible_pixels < cfg.min_mask_pixels:
                continue
            row: dict[str, Any] = {
                "frame": truth.index,
                "instance_id": o.label,
                "visible_fraction": o.visible_fraction,
                "sensor": str(truth.extra.get("sensor", "")),
                "points": 0,
            }
            ob = by_id.get(o.label)
            if ob is not None:
                d = _SurfaceDistance(ds.object_mesh(o, "camera"))(ob.points) * 1000.0
                row.update(
                    points=len(d),
                    mean_mm=float(d.mean()),
                    median_mm=float(np.median(d)),
                    foreign=float((d > FOREIGN_MM).mean()),
                )
            rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate of the observed rows (objects, distances, foreign share, unresolved)."""
    ok = [r for r in rows if r["points"]]
    if not ok:
        return {"objects": 0}
    return {
        "objects": len(ok),
        "mean_mm": round(float(np.mean([r["mean_mm"] for r in ok])), 2),
        "median_mm": round(float(np.median([r["median_mm"] for r in ok])), 2),
        "foreign": round(float(np.mean([r["foreign"] for r in ok])), 4),
        "unresolved": sum(r["median_mm"] > UNRESOLVED_MM for r in ok),
        "points": round(float(np.mean([r["points"] for r in ok]))),
    }


def gate_shares(rows: list[dict[str, Any]], gate: dict[str, Any]) -> dict[str, Any]:
    """Per method of a gate JSON: Chamfer-L1 share and mean without the unresolved objects."""
    out: dict[str, Any] = {}
    by_key = {(r["frame"], r["instance_id"]): r for r in rows}
    for name, method in gate["methods"].items():
        per = method.get("per_object", [])
        if per and all(p.get("tags", {}).get("frame", -1) >= 0 for p in per):  # reports that name the frame
            try:
                matched = [by_key[(p["tags"]["frame"], p["instance_id"])] for p in per]
            except KeyError as err:
                raise SystemExit(f"{name}: object {err} of the gate is not in this dataset") from err
            rows_m = matched
        else:
            rows_m = rows
        if len(per) != len(rows_m) or any(
            p["instance_id"] != r["instance_id"] or abs(p["visible_fraction"] - r["visible_fraction"]) > 1e-6
            for p, r in zip(per, rows_m, strict=True)
        ):
            raise SystemExit(
                f"{name}: the gate's objects do not line up with this dataset's (--gate-workers?)"
            )
        pairs = [
            (p["chamfer_l1_mm"], r["points"] > 0 and r["median_mm"] > UNRESOLVED_MM)
            for p, r in zip(per, rows_m, strict=True)
            if p["chamfer_l1_mm"] is not None
        ]
        cd = np.array([c for c, _ in pairs])
        bad = np.array([b for _, b in pairs], dtype=bool)
        out[name] = {
            "scored": len(cd),
            "mean_mm": round(float(cd.mean()), 2),
            "unresolved_scored": int(bad.sum()),
            "unresolved_mean_mm": round(float(cd[bad].mean()), 1) if bad.any() else None,
            "unresolved_share_of_sum": round(float(cd[bad].sum() / cd.sum()), 3),
            "mean_without_unresolved_mm": round(float(cd[~bad].mean()), 2),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--gate", type=Path, default=None, help="gate/eval JSON on the same dataset")
    p.add_argument("--gate-workers", type=int, default=2, help="--workers of that gate run")
    p.add_argument("--json", type=Path, default=None, help="write the summary and the rows here")
    args = p.parse_args()
    rows = score_frames(args.dataset, args.max_frames, args.gate_workers if args.gate else 1)
    result: dict[str, Any] = {"all": summarise(rows), "by_sensor": {}, "by_visibility": {}}
    for key, field in (("by_sensor", "sensor"), ("by_visibility", "visible_fraction")):
        groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for r in rows:
            groups[_bucket(r[field]) if field == "visible_fraction" else r[field]].append(r)
        result[key] = {k: summarise(v) for k, v in sorted(groups.items())}
    result["unresolved_by_sensor"] = dict(
        collections.Counter(r["sensor"] for r in rows if r["points"] and r["median_mm"] > UNRESOLVED_MM)
    )
    if args.gate:
        result["gate"] = gate_shares(rows, json.loads(args.gate.read_text()))
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**result, "rows": rows}))


if __name__ == "__main__":
    main()
