#!/usr/bin/env python3
"""Speed of the geometry/layout network (a benchmark, not a test).

1. Network: median milliseconds per object of one ONNX Runtime call on a batch of 8 encoded
   objects (``--threads`` intra-op threads, CPU provider), plus the encoding per object.
2. Node end to end: median milliseconds per frame of the node's work on ray-cast 640x480
   frames with 5 objects: the pipeline (plane, observations, encoding + network, meshing,
   output-mesh decimation, pose, the frame-path collision shapes of config/default.yaml)
   plus building the output messages (objects, poses, markers; needs the venv's rclpy
   messages, skipped when not importable). Convex decomposition is excluded: the node runs
   it asynchronously. The geometric backend for comparison.

Prints medians (and the 90th percentile per frame) as JSON, with the per-stage medians.

Usage: python scripts/bench_network.py [--threads 2] [--frames 10] [--repeats 30] [--passes 3]
       [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.config import default_config
from sam3d_ros.core.encoding import encode_objects
from sam3d_ros.core.observation import extract_observations
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.support_plane import estimate_support_plane
from sam3d_ros.core.types import SceneContext
from sam3d_ros.sim.noise import DepthNoiseConfig, apply_depth_noise
from sam3d_ros.sim.scenes import random_scene


def _build_messages(result: object, alpha: float) -> None:
    """The node's output messages for one frame (no-op without the ROS message packages)."""
    try:
        from sam3d_ros.ros import builders
    except ImportError:
        return
    builders.frame_output_msgs(result, set(), alpha)  # type: ignore[arg-type]


BATCH = 8
OBJECTS_PER_FRAME = 5
SEED_BASE = 4_000_000


def _frames(n: int, n_objects: int) -> list:
    out = []
    for i in range(n):
        r = random_scene(SEED_BASE + i, n_objects=n_objects).render()
        r = r.with_depth(apply_depth_noise(r.depth, np.random.default_rng(i), DepthNoiseConfig()))
        out.append(r.to_rgbd_frame())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--passes", type=int, default=3, help="passes over the frames for the node timing")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg = default_config()
    ort_backend = OnnxRuntimeBackend(cfg, intra_op_threads=args.threads, use_cuda=False)

    # --- network: a batch of 8 real encodings
    frames = _frames(max(args.frames, 2), OBJECTS_PER_FRAME)
    feats = []
    enc_ms = []
    for fr in frames:
        scene = SceneContext(frame=fr, plane=estimate_support_plane(fr, cfg))
        obs, _ = extract_observations(fr, cfg)
        t0 = time.perf_counter()
        x, _ = encode_objects(scene, obs)
        enc_ms.append((time.perf_counter() - t0) * 1000.0 / max(len(obs), 1))
        feats.append(x)
    batch = np.concatenate(feats)[:BATCH]
    for _ in range(3):
        ort_backend.infer(batch)
    net = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ort_backend.infer(batch)
        net.append((time.perf_counter() - t0) * 1000.0 / BATCH)

    # --- end to end per frame, collision excluded
    e2e: dict[str, list[float]] = {}
    stages: dict[str, dict[str, list[float]]] = {}
    for name, backend in (("onnxruntime", ort_backend), ("geometric", create_backend(cfg, "geometric"))):
        pipe = FramePipeline(cfg, backend)
        pipe.process(frames[0])
        vals = []
        per_stage: dict[str, list[float]] = {}
        for _ in range(args.passes):
            for fr in frames:
                t0 = time.perf_counter()
                r = pipe.process(fr)
                t1 = time.perf_counter()
                _build_messages(r, cfg.marker_alpha)
                t2 = time.perf_counter()
                vals.append((t2 - t0) * 1000.0)
                for k, v in r.timings_ms.items():
                    if k != "total":
                        per_stage.setdefault(k, []).append(v)
                per_stage.setdefault("messages", []).append((t2 - t1) * 1000.0)
        e2e[name] = vals
        stages[name] = per_stage
        pipe.close()
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0],
        },
        "threads": args.threads,
        "providers": ort_backend.providers,
        "network_ms_per_object_batch8_median": round(statistics.median(net), 2),
        "encoding_ms_per_object_median": round(statistics.median(enc_ms), 2),
        "node_ms_per_frame_5_objects_median": {k: round(statistics.median(v), 1) for k, v in e2e.items()},
        "node_ms_per_frame_5_objects_p90": {k: round(float(np.percentile(v, 90)), 1) for k, v in e2e.items()},
        "stage_ms_per_frame_median": {
            name: {k: round(statistics.median(v), 1) for k, v in st.items()} for name, st in stages.items()
        },
        "blas_threads": cfg.blas_threads,
        "output_mesh_max_triangles": cfg.output_mesh_max_triangles,
        "frames": len(frames),
        "passes": args.passes,
        "repeats": args.repeats,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
