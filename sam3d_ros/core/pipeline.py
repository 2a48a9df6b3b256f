"""The per-frame pipeline: validate -> support plane -> observations -> backend -> mesh,
pose, collision shapes. Pure numpy; the ROS node and the offline replay both call it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from sam3d_ros.backends.base import Backend, BackendError
from sam3d_ros.core.collision import compute_collision_shapes
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.frames import Pose, invert_transform, transform_points
from sam3d_ros.core.layout import estimate_object_frame, visible_fraction
from sam3d_ros.core.meshing import mesh_from_voxels
from sam3d_ros.core.observation import extract_observations
from sam3d_ros.core.support_plane import estimate_support_plane
from sam3d_ros.core.types import (
    FrameResult,
    ObjectObservation,
    ObjectResult,
    RGBDFrame,
    SceneContext,
    SkippedObject,
    SkipReason,
    TriangleMesh,
    VoxelShape,
)

logger = logging.getLogger(__name__)

#: Pipeline stages, in order (keys of FrameResult.timings_ms, plus "total").
STAGES = ("plane", "observations", "backend", "meshing", "collision")


class FramePipeline:
    """Reconstructs every masked object of a frame.

    Not thread-safe: use one instance per worker thread.
    """

    def __init__(self, config: PipelineConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend

    def process(self, frame: RGBDFrame) -> FrameResult:
        """Reconstruct all objects of ``frame``.

        Objects that cannot be reconstructed are listed in ``FrameResult.skipped`` with
        their reason; this method only raises for programming errors.
        """
        cfg = self.config
        timings: dict[str, float] = {}
        t_start = time.perf_counter()

        with _timed(timings, "plane"):
            plane = estimate_support_plane(frame, cfg)
        scene = SceneContext(frame=frame, plane=plane)

        with _timed(timings, "observations"):
            observations, skipped_list = extract_observations(frame, cfg)
        skipped: list[SkippedObject] = list(skipped_list)

        shapes: list[VoxelShape | None] = []
        with _timed(timings, "backend"):
            if observations:
                try:
                    shapes = list(self.backend.reconstruct(scene, observations))
                except BackendError as err:
                    logger.warning(
                        "backend %s failed on frame %d: %s", self.backend.name, frame.stamp_ns, err
                    )
                    skipped.extend(
                        SkippedObject(o.instance_id, SkipReason.BACKEND_ERROR, str(err)) for o in observations
                    )
                    observations, shapes = [], []
        if len(shapes) != len(observations):
            raise BackendError(
                f"backend {self.backend.name!r} returned {len(shapes)} shapes for {len(observations)} objects"
            )

        results: list[ObjectResult] = []
        timings["meshing"] = 0.0
        timings["collision"] = 0.0
        for obs, shape in zip(observations, shapes, strict=True):
            if shape is None:
                skipped.append(
                    SkippedObject(obs.instance_id, SkipReason.EMPTY_SHAPE, "backend returned no shape")
                )
                continue
            try:
                result = self._finish_object(frame, scene, obs, shape, timings)
            except ValueError as err:
                logger.debug("object %d of frame %d: %s", obs.instance_id, frame.stamp_ns, err)
                skipped.append(SkippedObject(obs.instance_id, SkipReason.EMPTY_SHAPE, str(err)))
                continue
            results.append(result)

        timings["total"] = (time.perf_counter() - t_start) * 1000.0
        return FrameResult(
            stamp_ns=frame.stamp_ns,
            frame_id=frame.frame_id,
            objects=tuple(sorted(results, key=lambda r: r.instance_id)),
            skipped=tuple(sorted(skipped, key=lambda s: s.instance_id)),
            timings_ms=timings,
            backend=self.backend.name,
            plane=plane,
        )

    def _finish_object(
        self,
        frame: RGBDFrame,
        scene: SceneContext,
        obs: ObjectObservation,
        shape: VoxelShape,
        timings: dict[str, float],
    ) -> ObjectResult:
        t0 = time.perf_counter()
        mesh_cam = mesh_from_voxels(shape, self.config.occupancy_threshold)
        camera_T_object, extents = estimate_object_frame(mesh_cam.vertices, scene.plane)
        object_T_camera = invert_transform(camera_T_object)
        mesh_obj = TriangleMesh(
            vertices=transform_points(object_T_camera, mesh_cam.vertices), faces=mesh_cam.faces
        )
        vis = visible_fraction(mesh_cam, frame, obs.mask)
        t1 = time.perf_counter()
        collision = compute_collision_shapes(mesh_obj)
        t2 = time.perf_counter()
        timings["meshing"] += (t1 - t0) * 1000.0
        timings["collision"] += (t2 - t1) * 1000.0
        return ObjectResult(
            instance_id=obs.instance_id,
            track_id=obs.instance_id,
            label=f"instance_{obs.instance_id}",
            score=obs.score,
            pose=Pose.from_matrix(camera_T_object),
            extents=(float(extents[0]), float(extents[1]), float(extents[2])),
            mesh=mesh_obj,
            collision=collision,
            visible_fraction=float(np.clip(vis, 0.0, 1.0)),
            confidence=float(np.clip(shape.confidence, 0.0, 1.0)),
            num_points=int(obs.points.shape[0]),
        )


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + (time.perf_counter() - t0) * 1000.0


def result_summary(result: FrameResult) -> dict[str, Any]:
    """A small JSON-friendly summary of a frame result (for logs and the demo)."""
    return {
        "stamp_ns": result.stamp_ns,
        "objects": [
            {
                "instance_id": o.instance_id,
                "position": [round(v, 4) for v in o.pose.position],
                "extents": [round(v, 4) for v in o.extents],
                "vertices": int(o.mesh.vertices.shape[0]),
            }
            for o in result.objects
        ],
        "skipped": [{"instance_id": s.instance_id, "reason": s.reason.value} for s in result.skipped],
        "total_ms": round(result.timings_ms.get("total", 0.0), 1),
    }
