#!/usr/bin/env python3
"""Speed of the geometry/layout network (a benchmark, not a test).

1. Network: median milliseconds per object of the ONNX Runtime calls on a batch of 8 encoded
   objects (``--threads`` intra-op threads, CPU provider): all stages of the model together
   and each stage alone (a two-stage model: layout, then shape), plus the encoding per
   object (a two-stage model encodes each object twice: the observed-extent cube, then the
   amodal-box cube; the node timing includes both).
2. Node end to end: median milliseconds per frame of the node's work on ray-cast 640x480
   frames with 5 objects: the pipeline (plane, observations, encoding + network, meshing,
   output-mesh decimation, pose, the frame-path collision shapes of config/default.yaml)
   plus building the output messages (objects, poses, markers; needs the venv's rclpy
   messages, skipped when not importable). Convex decomposition is excluded: the node runs
   it asynchronously. The geometric backend for comparison.
3. Fusion: the node's frame with 5 tracked objects on a camera moving along a 60-degree arc
   there and back (camera pose per frame as tf2 gives it), with ``fusion_enabled`` off and
   on, in alternating rounds on the same frames (one pipeline per round, so the tracks'
   volumes start empty and grow over the round), and the ratio of the medians.

Prints medians (and the 90th percentile per frame) as JSON, with the per-stage medians. The
frames and timing loops live in :mod:`sam3d_ros.tools.netbench` (shared with the GPU check,
``scripts/gpu_check.sh``).

Usage: python scripts/bench_network.py [--threads 2] [--frames 10] [--repeats 30] [--passes 3]
       [--fusion-rounds 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

import numpy as np

from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.config import default_node_config
from sam3d_ros.tools.netbench import (
    batch_of,
    camera_sequence,
    encode_frames,
    ros_message_builder,
    synthetic_frames,
    time_network,
    time_pipeline,
)

BATCH = 8
OBJECTS_PER_FRAME = 5
#: Views of the fusion benchmark's camera arc (there and back: 2 * n - 2 frames a round).
FUSION_VIEWS = 8
FUSION_ARC_DEG = 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--passes", type=int, default=3, help="passes over the frames for the node timing")
    ap.add_argument("--fusion-rounds", type=int, default=2, help="rounds per mode of the fusion timing")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    node_cfg = default_node_config()
    cfg = node_cfg.pipeline
    ort_backend = OnnxRuntimeBackend(cfg, intra_op_threads=args.threads, use_cuda=False)

    # --- network: a batch of 8 real encodings
    frames = synthetic_frames(max(args.frames, 2), OBJECTS_PER_FRAME)
    inputs, _, enc_ms = encode_frames(frames, cfg)
    batch = batch_of(inputs, BATCH)
    net = time_network(ort_backend, batch, args.repeats)
    net_stages = {st: time_network(ort_backend, batch, args.repeats, st) for st in ort_backend.stages}

    # --- end to end per frame, collision excluded
    build = ros_message_builder(node_cfg.marker_alpha)
    timings = {
        name: time_pipeline(node_cfg, backend, frames, args.passes, build)
        for name, backend in (("onnxruntime", ort_backend), ("geometric", create_backend(cfg, "geometric")))
    }
    # --- fusion off / on, alternating rounds over one camera sequence
    seq, poses = camera_sequence(FUSION_VIEWS, OBJECTS_PER_FRAME, FUSION_ARC_DEG)
    fusion: dict[str, list[float]] = {"off": [], "on": []}
    fusion_stages: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    for _ in range(max(args.fusion_rounds, 1)):
        for mode in ("off", "on"):
            mode_cfg = node_cfg.replace(fusion_enabled=mode == "on")
            t = time_pipeline(mode_cfg, ort_backend, seq, 1, build, poses=poses)
            fusion[mode].extend(t.frame_ms)
            for k, v in t.stages_ms.items():
                fusion_stages[mode].setdefault(k, []).extend(v)
    fusion_median = {k: statistics.median(v) for k, v in fusion.items()}
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
        "network_stages": list(ort_backend.stages),
        "network_ms_per_object_batch8_median_per_stage": {
            st: round(statistics.median(v), 2) for st, v in net_stages.items()
        },
        "encoding_ms_per_object_median": round(statistics.median(enc_ms), 2),
        "node_ms_per_frame_5_objects_median": {
            k: round(statistics.median(t.frame_ms), 1) for k, t in timings.items()
        },
        "node_ms_per_frame_5_objects_p90": {
            k: round(float(np.percentile(t.frame_ms, 90)), 1) for k, t in timings.items()
        },
        "stage_ms_per_frame_median": {name: t.stage_medians() for name, t in timings.items()},
        "fusion_node_ms_per_frame_5_tracked_objects_median": {
            k: round(v, 1) for k, v in fusion_median.items()
        },
        "fusion_on_over_off": round(fusion_median["on"] / fusion_median["off"], 3),
        "fusion_stage_ms_per_frame_median": {
            mode: {k: round(statistics.median(v), 1) for k, v in st.items()}
            for mode, st in fusion_stages.items()
        },
        "fusion_frames_per_mode": {k: len(v) for k, v in fusion.items()},
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
