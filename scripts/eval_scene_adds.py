#!/usr/bin/env python3
"""Planning-scene churn of a static camera: ADDs per object over a static sequence.

For each generated cluttered scene of the validation split (``sam3d_ros.sim.generator``,
layouts pile / bin / cluster / stack, the frame's sensor profile), a static camera sends
``--frames`` frames whose depth noise is drawn anew each frame (the sensor model of
:mod:`sam3d_ros.sim.sensors` on the same clean render). The pipeline with the shipped
defaults runs once with fusion off and once on; an object is ADDed to MoveIt's planning
scene when its track appears and whenever its collision geometry changed (the rule of
:class:`sam3d_ros.ros.moveit.PlanningSceneSync`: ``appeared or geometry_changed``).

Prints, per mode, the distribution of ADDs per object (mean, median, 90th percentile,
max, share of objects with at most 3) over all objects and by the object's visible
fraction, the MOVEs per object (nothing moves: each is churn) and the pose turns per
object (frames whose published object x axis turned by more than ``TURN_DEG`` from the
object's previous frame: a grasp planner sees a static object turn), as JSON.

Usage: python scripts/eval_scene_adds.py [--scenes 10] [--frames 30] [--seed 7]
       [--width 640 --height 480] [--json OUT]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.config import default_config
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.sim.generator import GeneratorConfig, generate_frame
from sam3d_ros.sim.sequences import static_camera_frames

#: An object's ADDs count as "no flood" up to this many (issue #13).
MAX_ADDS = 3
#: A published pose "turned" when its x axis is this far (degrees) from the previous frame's.
TURN_DEG = 30.0
BUCKETS = (("visible>=0.6", 0.6, 1.01), ("visible 0.35-0.6", 0.35, 0.6), ("visible<0.35", 0.0, 0.35))


def adds_of_scene(seed: int, index: int, frames: int, size: tuple[int, int]) -> dict[str, Any]:
    """ADDs per instance label in each mode, and the labels' visible fractions."""
    gen = GeneratorConfig(
        width=size[0],
        height=size[1],
        hd_fraction=0.0,
        border_fraction=0.0,
        scene_weights={"pile": 1.0, "bin": 1.0, "cluster": 1.0, "stack": 1.0},
    )
    g = generate_frame(seed, index, "val", gen)
    out: dict[str, Any] = {
        "scene": [seed, index, g.scene_kind, g.sensor],
        "visible": {o.label: o.visible_fraction for o in g.objects},
    }
    for mode in ("single", "fused"):
        cfg = default_config().replace(fusion_enabled=mode == "fused")
        pipe = FramePipeline(cfg, create_backend(cfg))
        rng = np.random.default_rng([seed, index])
        adds: collections.Counter[int] = collections.Counter()
        moves: collections.Counter[int] = collections.Counter()
        turns: collections.Counter[int] = collections.Counter()
        last_x: dict[int, np.ndarray] = {}
        cos_turn = float(np.cos(np.radians(TURN_DEG)))
        try:
            for frame in static_camera_frames(g, frames, rng, g.stamp_ns, "camera"):
                for obj in pipe.process_scene(frame).objects:
                    label = obj.result.instance_id
                    if obj.appeared or obj.geometry_changed:
                        adds[label] += 1
                    elif obj.moved:
                        moves[label] += 1
                    x = obj.fixed_T_object[:3, 0]
                    if label in last_x and float(x @ last_x[label]) < cos_turn:
                        turns[label] += 1
                    last_x[label] = x
        finally:
            pipe.close()
        out[mode] = dict(adds)
        out[f"{mode}_moves"] = dict(moves)
        out[f"{mode}_turns"] = dict(turns)
    return out


def summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"objects": 0}
    return {
        "objects": len(values),
        "mean": round(statistics.mean(values), 2),
        "median": float(statistics.median(values)),
        "p90": float(np.percentile(values, 90)),
        "max": max(values),
        "share_at_most_3": round(sum(v <= MAX_ADDS for v in values) / len(values), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=10)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    scenes = [adds_of_scene(args.seed, i, args.frames, (args.width, args.height)) for i in range(args.scenes)]
    result: dict[str, Any] = {"frames": args.frames, "scenes": scenes, "summary": {}}
    for mode in ("single", "fused"):
        per: dict[str, list[int]] = {"all": []}
        moves: list[int] = []  # MOVEs (pose only) of the same objects: nothing moves here
        turns: list[int] = []  # frames whose published pose turned (nothing turns here)
        for sc in scenes:
            # objects both modes reconstructed at least once, so the counts are paired
            for label in set(sc["single"]) & set(sc["fused"]):
                n, vis = sc[mode][label], sc["visible"][label]
                per["all"].append(n)
                moves.append(sc[f"{mode}_moves"].get(label, 0))
                turns.append(sc[f"{mode}_turns"].get(label, 0))
                for name, lo, hi in BUCKETS:
                    if lo <= vis < hi:
                        per.setdefault(name, []).append(n)
        result["summary"][mode] = {k: summary(v) for k, v in per.items()}
        result["summary"][mode]["moves_per_object"] = round(sum(moves) / max(len(moves), 1), 3)
        result["summary"][mode]["turns_per_object"] = round(sum(turns) / max(len(turns), 1), 3)
        result["summary"][mode]["objects_that_turned"] = sum(t > 0 for t in turns)
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
