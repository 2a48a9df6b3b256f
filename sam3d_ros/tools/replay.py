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
from typing import Any, Protocol, TextIO

import trimesh
from tqdm import tqdm

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.backend import Backend
from sam3d_ros.core.config import NodeConfig
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.types import FrameResult, ObjectResult, RGBDFrame, SkipReason
from sam3d_ros.stream.frames import FrameSet, FrameStream
from sam3d_ros.tools.bagio import BagError, BagReader, BagWriter, InputTopics

logger = logging.getLogger(__name__)

#: The node's output topics, also used for ``--out-bag``.
OUT_OBJECTS = "/sam3d_node/objects"
OUT_MARKERS = "/sam3d_node/markers"
OUT_POSES = "/sam3d_node/poses"
#: Skipped frames and undecodable messages listed with their detail in the summary.
MAX_SKIP_EXAMPLES = 1000


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
        "support_instance_id": int(obj.support_id),
    }


def frame_record(result: FrameResult, out_dir: Path) -> dict[str, Any]:
    """Write the meshes of ``result`` under ``out_dir/meshes`` and return its JSONL object."""
    mesh_dir = out_dir / "meshes"
    mesh_dir.mkdir(parents=True, exist_ok=True)
    objects = []
    for obj in result.objects:
        base = f"{result.stamp_ns}_{obj.track_id}"
        for mesh, path in ((obj.mesh, f"{base}.ply"), (obj.collision.convex_parts[0], f"{base}_hull.ply")):
            trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(mesh_dir / path)
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


def replay_bag(
    bag: Path,
    out_dir: Path,
    config: NodeConfig,
    *,
    topics: InputTopics | None = None,
    backend: Backend | None = None,
    out_bag: Path | None = None,
    out_bag_storage: str = "mcap",
    observers: list[FrameObserver] | None = None,
    progress: bool = True,
    on_result: Callable[[FrameResult], None] | None = None,
) -> dict[str, Any]:
    """Replay ``bag`` through the node's frame path (:class:`FrameStream`: the same
    synchronisation, CameraInfo pairing by stamp, stamp checks, conversions and pipeline);
    returns the summary (also written to disk). Receive time is the bag's log time.
    ``config``: the node's parameters (the stream's; the pipeline and a backend made here
    get ``config.pipeline``).

    Raises:
        BagError: the bag is missing, unreadable, or lacks the input topics (the message
            lists the bag's topics and types). Individual bad frames never raise.
    """
    topics = topics or InputTopics()
    out_dir.mkdir(parents=True, exist_ok=True)
    backend = backend or create_backend(config.pipeline)
    # offline: decompositions run inline so every frame carries its parts deterministically
    pipeline = FramePipeline(config.pipeline, backend, synchronous_decomposition=True)
    writer = BagWriter(out_bag, out_bag_storage) if out_bag is not None else None
    t_start = time.monotonic()
    image_topics = (topics.rgb, topics.depth, topics.mask)
    index = {t: i for i, t in enumerate(image_topics)}
    with BagReader(bag, topics) as reader, (out_dir / "results.jsonl").open("w") as results_file:
        expected_frames = min(reader.message_counts().get(t, 0) for t in image_topics)
        bar = tqdm(total=expected_frames, desc="replay", unit="frame", disable=not progress, file=sys.stderr)
        run = _ReplayRun(out_dir, results_file, writer, config, list(observers or []), on_result, bar)
        stream = FrameStream(config, pipeline, image_topics, run.on_frame_set, on_skip=run.on_skip)
        run.stream = stream
        stream.use_own_sync()
        for conn, log_ns, raw in reader.raw_messages():
            run.messages += 1
            if writer is not None:
                writer.write(conn.topic, conn.msgtype, log_ns, raw)
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except BagError as err:  # a corrupt message is skipped, counted
                run.undecodable[conn.topic] += 1
                run.example(log_ns, "undecodable", f"{conn.topic}: {err}")
                logger.warning("message on %s at %d cannot be deserialized: %s", conn.topic, log_ns, err)
                continue
            if conn.topic == topics.info:
                stream.add_camera_info(msg, log_ns)
            else:
                stream.add_image(msg, index[conn.topic], log_ns)
        stream.flush()  # the end of the bag: frames still waiting for a CameraInfo go now
        bar.close()
    if writer is not None:
        writer.close()
    pipeline.close()
    summary = run.summary(bag, backend, topics, time.monotonic() - t_start, out_bag)
    for obs in run.observers:
        obs.finish(summary)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class _ReplayRun:
    """What one replay writes and counts; :meth:`on_frame_set` is the stream's ``deliver``."""

    out_dir: Path
    results_file: TextIO
    writer: BagWriter | None
    config: NodeConfig
    observers: list[FrameObserver]
    on_result: Callable[[FrameResult], None] | None
    bar: Any
    stream: FrameStream | None = None
    messages: int = 0
    objects: int = 0
    undecodable: Counter[str] = field(default_factory=Counter)
    skipped_objects: Counter[str] = field(default_factory=Counter)
    skip_examples: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)
    previous_ids: set[int] = field(default_factory=set)

    def example(self, stamp_ns: int, reason: str, detail: str) -> None:
        if len(self.skip_examples) < MAX_SKIP_EXAMPLES:
            self.skip_examples.append({"stamp_ns": stamp_ns, "reason": reason, "detail": detail})

    def on_skip(self, reason: SkipReason, detail: str, stamp_ns: int) -> None:
        self.example(stamp_ns, reason.value, detail)
        logger.warning("frame %d skipped (%s): %s", stamp_ns, reason.value, detail)
        self.bar.update(1)

    def on_frame_set(self, frame_set: FrameSet) -> None:
        """Process an admitted set at once (offline: no worker, nothing superseded)."""
        assert self.stream is not None
        out = self.stream.process(frame_set)
        self.bar.update(1)
        if out is None:
            return
        result = out.update.result
        record = frame_record(result, self.out_dir)
        self.results_file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.objects += len(result.objects)
        self.skipped_objects.update(s.reason.value for s in result.skipped)
        for k, v in result.timings_ms.items():
            self.timings.setdefault(k, []).append(v)
        if self.writer is not None:
            _write_outputs(self.writer, result, self.previous_ids, out.config.marker_alpha)
            self.previous_ids = {o.track_id for o in result.objects}
        processed = self.stream.stats.snapshot().frames_out
        for obs in self.observers:
            obs.on_frame(processed - 1, out.frame, result, record)
        if self.on_result is not None:
            self.on_result(result)

    def summary(
        self, bag: Path, backend: Backend, topics: InputTopics, wall: float, out_bag: Path | None
    ) -> dict[str, Any]:
        """The replay summary (output contract, see the module docstring)."""
        assert self.stream is not None
        stream = self.stream
        stream.detach_sync()  # at the end of the bag, what is still queued is unmatched
        counts = stream.inputs.snapshot()
        snap = stream.stats.snapshot()
        return {
            "bag": str(bag),
            "backend": backend.describe(),
            "topics": {"rgb": topics.rgb, "depth": topics.depth, "info": topics.info, "mask": topics.mask},
            "messages_read": self.messages,
            "frames_synchronized": stream.inputs.frames_synced,
            "frames_processed": snap.frames_out,
            "frames_skipped": dict(snap.frames_skipped),
            "unmatched_messages": sum(c.unmatched for c in counts.values()),
            "messages_received": {t: c.received + self.undecodable.get(t, 0) for t, c in counts.items()},
            "unmatched": {t: c.unmatched for t, c in counts.items()},
            "messages_undecodable": dict(self.undecodable),
            "objects": self.objects,
            "objects_skipped": dict(self.skipped_objects),
            "timings_ms": {
                k: {
                    "median": round(statistics.median(v), 2),
                    "mean": round(statistics.fmean(v), 2),
                    "max": round(max(v), 2),
                }
                for k, v in sorted(self.timings.items())
            },
            "wall_s": round(wall, 3),
            "throughput_fps": round(snap.frames_out / wall, 3) if wall > 0 else 0.0,
            "skip_examples": self.skip_examples,
            "outputs": {
                "results": "results.jsonl",
                "meshes": "meshes/",
                "report": "report.html",
                "out_bag": str(out_bag) if out_bag else None,
            },
        }


def _write_outputs(writer: BagWriter, result: FrameResult, previous_ids: set[int], alpha: float) -> None:
    """Serialise the node's outputs for this frame into the output bag (needs rclpy)."""
    from rclpy.serialization import serialize_message

    from sam3d_ros.ros import builders

    t = result.stamp_ns
    out = builders.frame_output_msgs(result, previous_ids, alpha)
    writer.write(OUT_OBJECTS, "sam3d_ros/msg/ObjectReconstructionArray", t, serialize_message(out.objects))
    writer.write(OUT_MARKERS, "visualization_msgs/msg/MarkerArray", t, serialize_message(out.markers))
    writer.write(OUT_POSES, "geometry_msgs/msg/PoseArray", t, serialize_message(out.poses))
