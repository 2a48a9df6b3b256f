"""Offline replay: a rosbag2 in; meshes, poses, a JSONL of results, a summary and an HTML
report out. Same synchronisation, conversions, stamp checks and pipeline as the live node.

Output contract (documented in docs/replay.md; keep it stable):

- ``DIR/results.jsonl``: one JSON object per processed frame (see :func:`frame_record`).
- ``DIR/meshes/``: ``<stamp_ns>_<track_id>.ply`` (object frame, metres) and
  ``<stamp_ns>_<track_id>_hull.ply`` (convex hull, object frame).
- ``DIR/summary.json``: frames read, processed and skipped by reason, objects, per-stage
  timings, throughput, and the input accounting: per synchronised topic the messages read
  (``messages_received``), never part of a set (``unmatched``) and not decodable
  (``messages_undecodable``), so that ``messages_received = frames_synchronized + unmatched
  + messages_undecodable`` per topic and ``frames_synchronized = frames_processed + the
  frames skipped for every reason``.
- ``DIR/report.html``: self-contained visual report.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.backend import Backend
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.types import FrameResult, InputError, ObjectResult, RGBDFrame, SkipReason
from sam3d_ros.stream.conversions import frame_from_messages, header_stamp_ns
from sam3d_ros.stream.sync import ApproximateTimeSync, StampGate
from sam3d_ros.tools.bagio import BagReader, BagWriter, InputTopics
from sam3d_ros.tools.plyio import write_ply

logger = logging.getLogger(__name__)

#: The node's output topics, also used for ``--out-bag``.
OUT_OBJECTS = "/sam3d_node/objects"
OUT_MARKERS = "/sam3d_node/markers"
OUT_POSES = "/sam3d_node/poses"


class FrameObserver(Protocol):
    """Receives every processed frame (the HTML report implements it)."""

    def on_frame(self, index: int, frame: RGBDFrame, result: FrameResult, record: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...


def _pose_json(pose: Any) -> dict[str, list[float]]:
    return {
        "position": [round(float(v), 6) for v in pose.position],
        "orientation_xyzw": [round(float(v), 7) for v in pose.orientation_xyzw],
    }


def object_record(obj: ObjectResult, mesh_rel: str, hull_rel: str) -> dict[str, Any]:
    """JSON object of one reconstructed object (output contract)."""
    from sam3d_ros.core.frames import Pose

    return {
        "instance_id": int(obj.instance_id),
        "track_id": int(obj.track_id),
        "label": obj.label,
        "score": round(float(obj.score), 6),
        "pose": _pose_json(obj.pose),
        "extents": [round(float(v), 6) for v in obj.extents],
        "mesh": mesh_rel,
        "collision": {
            "convex_hull": hull_rel,
            "convex_parts": len(obj.collision.convex_parts),
            "primitives": [
                {
                    "type": p.kind.name.lower(),
                    "dimensions": [round(float(d), 6) for d in p.dimensions],
                    "pose_in_object": _pose_json(Pose.from_matrix(p.object_T_primitive)),
                    "fit_error": round(float(p.fit_error), 6),
                }
                for p in obj.collision.primitives
            ],
        },
        "visible_fraction": round(float(obj.visible_fraction), 4),
        "confidence": round(float(obj.confidence), 4),
        "cut_by_border": bool(obj.cut_by_border),
    }


def frame_record(result: FrameResult, out_dir: Path) -> dict[str, Any]:
    """Write the meshes of ``result`` under ``out_dir/meshes`` and return its JSONL object."""
    mesh_dir = out_dir / "meshes"
    mesh_dir.mkdir(parents=True, exist_ok=True)
    objects = []
    for obj in result.objects:
        base = f"{result.stamp_ns}_{obj.track_id}"
        write_ply(mesh_dir / f"{base}.ply", obj.mesh)
        write_ply(mesh_dir / f"{base}_hull.ply", obj.collision.convex_parts[0])
        objects.append(object_record(obj, f"meshes/{base}.ply", f"meshes/{base}_hull.ply"))
    return {
        "stamp_ns": int(result.stamp_ns),
        "frame_id": result.frame_id,
        "objects": objects,
        "skipped": [
            {"instance_id": int(s.instance_id), "reason": s.reason.value, "detail": s.detail}
            for s in result.skipped
        ],
        "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()},
    }


@dataclass
class _Progress:
    total: int
    enabled: bool
    start: float = field(default_factory=time.monotonic)
    last: float = 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.5):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 and self.total >= done else 0.0
        width = 30
        filled = int(width * min(done / self.total, 1.0)) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r[replay] [{bar}] {done}/{self.total} frames  {rate:5.2f} fps  ETA {eta:5.0f} s")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def replay_bag(
    bag: Path,
    out_dir: Path,
    config: PipelineConfig,
    *,
    topics: InputTopics | None = None,
    backend: Backend | None = None,
    out_bag: Path | None = None,
    out_bag_storage: str = "mcap",
    observers: list[FrameObserver] | None = None,
    progress: bool = True,
    on_result: Callable[[FrameResult], None] | None = None,
) -> dict[str, Any]:
    """Replay ``bag`` through the pipeline; returns the summary (also written to disk).

    Raises:
        BagError: the bag is missing, unreadable, or lacks the input topics (the message
            lists the bag's topics and types). Individual bad frames never raise.
    """
    topics = topics or InputTopics()
    out_dir.mkdir(parents=True, exist_ok=True)
    backend = backend or create_backend(config)
    # offline: decompositions run inline so every frame carries its parts deterministically
    pipeline = FramePipeline(config, backend, synchronous_decomposition=True)
    observers = list(observers or [])
    skipped_frames: Counter[str] = Counter()
    skipped_objects: Counter[str] = Counter()
    skip_examples: list[dict[str, Any]] = []
    timings: dict[str, list[float]] = {}
    counters = {"messages": 0, "synced": 0, "processed": 0, "objects": 0}
    gate = StampGate(config.stamp_jump_threshold, config.max_stamp_ahead)
    camera_info: list[Any] = [None]
    writer = BagWriter(out_bag, out_bag_storage) if out_bag is not None else None
    results_path = out_dir / "results.jsonl"
    t_start = time.monotonic()

    with BagReader(bag, topics) as reader:
        counts = reader.message_counts()
        expected_frames = min(counts.get(t, 0) for t in (topics.rgb, topics.depth, topics.mask))
        bar = _Progress(expected_frames, progress)

        def skip(reason: SkipReason, detail: str, stamp_ns: int) -> None:
            skipped_frames[reason.value] += 1
            if len(skip_examples) < 1000:
                skip_examples.append({"stamp_ns": stamp_ns, "reason": reason.value, "detail": detail})
            logger.warning("frame %d skipped (%s): %s", stamp_ns, reason.value, detail)

        with results_path.open("w") as results_file:

            def on_synced(rgb: Any, depth: Any, mask: Any) -> None:
                counters["synced"] += 1
                stamp = header_stamp_ns(rgb)
                verdict = gate.check(stamp)  # offline: no clock to compare with
                if verdict.reason is not None:
                    skip(verdict.reason, verdict.detail, stamp)
                    return
                if verdict.restarted:  # as the node: a restarted source starts new tracks
                    logger.warning("frame %d: %s", stamp, verdict.detail)
                    pipeline.reset()
                try:
                    frame = frame_from_messages(rgb, depth, camera_info[0], mask, config)
                    result = pipeline.process(frame)
                except InputError as err:
                    skip(err.reason, err.detail, stamp)
                    return
                except Exception as err:
                    logger.exception("internal error on frame %d", stamp)
                    skip(SkipReason.INTERNAL_ERROR, f"{type(err).__name__}: {err}", stamp)
                    return
                record = frame_record(result, out_dir)
                results_file.write(json.dumps(record, separators=(",", ":")) + "\n")
                counters["processed"] += 1
                counters["objects"] += len(result.objects)
                skipped_objects.update(s.reason.value for s in result.skipped)
                for k, v in result.timings_ms.items():
                    timings.setdefault(k, []).append(v)
                if writer is not None:
                    _write_outputs(writer, result, previous_ids, config.marker_alpha)
                    previous_ids.clear()
                    previous_ids.update(o.track_id for o in result.objects)
                for obs in observers:
                    obs.on_frame(counters["processed"] - 1, frame, result, record)
                if on_result is not None:
                    on_result(result)
                bar.update(counters["processed"])

            previous_ids: set[int] = set()
            received: Counter[str] = Counter({t: 0 for t in (topics.rgb, topics.depth, topics.mask)})
            undecodable: Counter[str] = Counter()
            sync = ApproximateTimeSync(3, config.sync_queue_size, config.sync_slop, on_synced)
            index = {topics.rgb: 0, topics.depth: 1, topics.mask: 2}
            for conn, log_ns, raw in reader.raw_messages():
                counters["messages"] += 1
                if writer is not None:
                    writer.write(conn.topic, conn.msgtype, log_ns, raw)
                if conn.topic in index:
                    received[conn.topic] += 1
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as err:  # noqa: BLE001 - a corrupt message is skipped, counted
                    undecodable[conn.topic] += 1
                    if len(skip_examples) < 1000:
                        skip_examples.append(
                            {"stamp_ns": log_ns, "reason": "undecodable", "detail": f"{conn.topic}: {err}"}
                        )
                    logger.warning("message on %s at %d cannot be deserialized: %s", conn.topic, log_ns, err)
                    continue
                if conn.topic == topics.info:
                    camera_info[0] = msg
                else:
                    sync.add(msg, index[conn.topic])
        bar.update(counters["processed"], final=True)
    if writer is not None:
        writer.close()

    # at the end of the bag, what is still queued will never be part of a set either
    unmatched_by_topic = {
        t: sync.dropped_unmatched[i] + sync.pending()[i] for t, i in sorted(index.items(), key=lambda x: x[1])
    }
    unmatched = sum(unmatched_by_topic.values())
    wall = time.monotonic() - t_start
    summary = {
        "bag": str(bag),
        "backend": backend.describe(),
        "topics": {"rgb": topics.rgb, "depth": topics.depth, "info": topics.info, "mask": topics.mask},
        "messages_read": counters["messages"],
        "frames_synchronized": counters["synced"],
        "frames_processed": counters["processed"],
        "frames_skipped": dict(skipped_frames),
        "unmatched_messages": unmatched,
        "messages_received": dict(received),
        "unmatched": unmatched_by_topic,
        "messages_undecodable": dict(undecodable),
        "objects": counters["objects"],
        "objects_skipped": dict(skipped_objects),
        "timings_ms": {
            k: {
                "median": round(statistics.median(v), 2),
                "mean": round(statistics.fmean(v), 2),
                "max": round(max(v), 2),
            }
            for k, v in sorted(timings.items())
        },
        "wall_s": round(wall, 3),
        "throughput_fps": round(counters["processed"] / wall, 3) if wall > 0 else 0.0,
        "skip_examples": skip_examples,
        "outputs": {
            "results": "results.jsonl",
            "meshes": "meshes/",
            "report": "report.html",
            "out_bag": str(out_bag) if out_bag else None,
        },
    }
    for obs in observers:
        obs.finish(summary)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write_outputs(writer: BagWriter, result: FrameResult, previous_ids: set[int], alpha: float) -> None:
    """Serialise the node's outputs for this frame into the output bag (needs rclpy)."""
    from rclpy.serialization import serialize_message

    from sam3d_ros.ros import builders

    t = result.stamp_ns
    out = builders.frame_output_msgs(result, previous_ids, alpha)
    writer.write(OUT_OBJECTS, "sam3d_ros/msg/ObjectReconstructionArray", t, serialize_message(out.objects))
    writer.write(OUT_MARKERS, "visualization_msgs/msg/MarkerArray", t, serialize_message(out.markers))
    writer.write(OUT_POSES, "geometry_msgs/msg/PoseArray", t, serialize_message(out.poses))
