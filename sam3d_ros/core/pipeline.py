"""The per-frame pipeline: validate -> support plane -> observations -> local support ->
backend -> support cut -> tracking (+ fusion) -> mesh, pose, collision shapes. Pure
numpy; the ROS node and the offline replay both call it, so both give the same track ids.

Tracking, fusion and collision caching keep state between frames (one pipeline per input
stream). Convex decompositions run in a background process (see
:mod:`sam3d_ros.core.decomposition`): a frame never waits for one; the hull is published
first and the parts from the first frame after they are ready.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core import constants as C
from sam3d_ros.core.backend import Backend, BackendError
from sam3d_ros.core.collision import (
    CollisionError,
    CollisionSet,
    accepted_primitives,
    convex_hull,
    fit_primitives,
    held_placement,
    margins_from_reference,
    pad_convex,
    pad_mesh,
    pad_primitive,
    shape_changed,
    simplify_mesh,
)
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.decomposition import (
    Decomposer,
    DecompositionError,
    DecompositionRequest,
    DecompositionResult,
    DecompositionService,
    decompose,
)
from sam3d_ros.core.frames import Pose, invert_transform, matrix_from_quaternion, transform_points
from sam3d_ros.core.fusion import FusionError, FusionGrowthError, StaticCameraCheck, TrackVolume, shape_points
from sam3d_ros.core.images import touches_border
from sam3d_ros.core.layout import (
    LayoutError,
    estimate_object_frame,
    keep_previous_axes,
    observed_in_frame,
    visible_fraction,
)
from sam3d_ros.core.meshing import MeshingError, face_areas_and_centroids, mesh_from_voxels, mesh_volume
from sam3d_ros.core.observation import extract_observations
from sam3d_ros.core.refine import (
    RefinementError,
    carve_seen_free,
    fill_observed,
    free_space_depth,
    snap_to_depth,
)
from sam3d_ros.core.support import NO_SUPPORT, Support, contact_heights, cut_below, find_supports
from sam3d_ros.core.support_plane import estimate_support_plane
from sam3d_ros.core.threads import limit_blas_threads
from sam3d_ros.core.tracking import (
    Detection,
    ObjectTracker,
    SceneUpdate,
    Track,
    TrackedObject,
    TrackingError,
)
from sam3d_ros.core.types import (
    CollisionPrimitive,
    FrameResult,
    InputError,
    ObjectObservation,
    ObjectResult,
    RGBDFrame,
    SceneContext,
    SkippedObject,
    SkipReason,
    SupportPlane,
    TriangleMesh,
    VoxelShape,
)

logger = logging.getLogger(__name__)

#: Pipeline stages, in order (keys of FrameResult.timings_ms, plus "total").
STAGES = ("plane", "observations", "backend", "tracking", "meshing", "collision")


class FramePipeline:
    """Reconstructs and tracks every masked object of a stream of frames.

    Not thread-safe: use one instance per worker thread (and per input stream).

    Args:
        config: parameters (``pipeline.config`` may be replaced between frames).
        backend: the reconstruction backend.
        decomposer: picklable ``DecompositionRequest -> parts`` (default: CoACD/V-HACD).
        synchronous_decomposition: run decompositions inline, deterministically (offline
            evaluation); the default runs them in a background process.
    """

    def __init__(
        self,
        config: PipelineConfig,
        backend: Backend,
        *,
        decomposer: Decomposer | None = None,
        synchronous_decomposition: bool = False,
    ) -> None:
        self.config = config
        self.backend = backend
        limit_blas_threads(config.blas_threads)  # process-wide; see core/threads.py
        self.tracker = ObjectTracker(
            config.track_max_distance, config.track_max_missed, config.track_use_labels
        )
        self._decomposer: Decomposer = decomposer or decompose
        self._sync_decomp = synchronous_decomposition
        self._decomp: DecompositionService | None = None
        self._reset_vanished: list[int] = []
        self._static_camera = StaticCameraCheck()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget tracks, fused shapes and cached collision shapes (``~/reset``); the next
        frame's update lists the forgotten track ids as vanished."""
        self._reset_vanished.extend(t.track_id for t in self.tracker.reset())
        self._static_camera.reset()
        if self._decomp is not None:
            self._decomp.reset()

    def close(self) -> None:
        """Stop the decomposition worker."""
        if self._decomp is not None:
            self._decomp.close()
            self._decomp = None

    def decompositions_busy(self) -> bool:
        """True while a decomposition is queued or running (tests and tools)."""
        return self._decomp is not None and self._decomp.busy()

    def default_fixed_T_camera(self) -> NDArray[np.float64]:
        """The camera pose in the planning frame from ``camera_to_planning_transform``."""
        x, y, z, qx, qy, qz, qw = self.config.camera_to_planning()
        t = np.eye(4)
        t[:3, :3] = matrix_from_quaternion(np.array([qx, qy, qz, qw]))
        t[:3, 3] = (x, y, z)
        return t

    # ------------------------------------------------------------------ frames
    def process(self, frame: RGBDFrame) -> FrameResult:
        """Reconstruct all objects of ``frame`` (see :meth:`process_scene`)."""
        return self.process_scene(frame).result

    def process_scene(
        self, frame: RGBDFrame, fixed_T_camera: NDArray[np.floating] | None = None
    ) -> SceneUpdate:
        """Reconstruct and track all objects of ``frame``.

        Objects that cannot be reconstructed are listed in ``FrameResult.skipped`` with
        their reason.

        Args:
            frame: the input frame.
            fixed_T_camera: 4x4 pose of the camera in the fixed (planning) frame for this
                frame (e.g. from tf or ground truth); default: the static
                ``camera_to_planning_transform``.

        Raises:
            InputError: ``fixed_T_camera`` is not a finite 4x4 matrix (reason
                ``tf_unavailable``; the frame is skipped, nothing falls back silently).
        """
        cfg = self.config
        self.tracker.max_distance = cfg.track_max_distance
        self.tracker.max_missed = cfg.track_max_missed
        self.tracker.use_labels = cfg.track_use_labels
        f_T_c = self.default_fixed_T_camera() if fixed_T_camera is None else np.asarray(fixed_T_camera, float)
        if f_T_c.shape != (4, 4) or not np.all(np.isfinite(f_T_c)):
            # never fall back to another transform: a wrong pose in the planning scene is
            # worse than a skipped frame
            raise InputError(
                SkipReason.TF_UNAVAILABLE, f"fixed_T_camera is not a finite 4x4 matrix: {f_T_c!r}"
            )
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        with _timed(timings, "plane"):
            plane = estimate_support_plane(
                frame, cfg, measure_noise=cfg.fusion_enabled or cfg.surface_refinement
            )
        if cfg.fusion_enabled and fixed_T_camera is None:
            self._restart_fusion_if_camera_moved(frame, plane)
        with _timed(timings, "observations"):
            observations, skipped_list = extract_observations(frame, cfg)
        skipped: list[SkippedObject] = list(skipped_list)
        with _timed(timings, "support"):  # before the backend: a stage-2 cube rests on it
            supports = find_supports(frame, plane, observations) if cfg.local_support else {}
        scene = SceneContext(frame=frame, plane=plane, support_heights=contact_heights(supports))
        with _timed(timings, "backend"):
            shaped = self._reconstruct(scene, observations, skipped)
        with _timed(timings, "support"):
            shaped = [(o, _rest_on(plane, s, supports.get(o.instance_id))) for o, s in shaped]
        with _timed(timings, "tracking"):
            pairs, matches, vanished = self._track(frame, shaped, f_T_c, skipped)
        results = self._finish_objects(frame, scene, pairs, matches, supports, f_T_c, skipped, timings)
        timings["total"] = (time.perf_counter() - t_start) * 1000.0
        result = FrameResult(
            stamp_ns=frame.stamp_ns,
            frame_id=frame.frame_id,
            objects=tuple(r.result for r in results),
            skipped=tuple(sorted(skipped, key=lambda s: s.instance_id)),
            timings_ms=timings,
            backend=self.backend.name,
            plane=plane,
        )
        gone = tuple(self._reset_vanished) + tuple(t.track_id for t in vanished)
        self._reset_vanished = []
        return SceneUpdate(
            result=result,
            objects=tuple(results),
            vanished=gone,
            fixed_frame=cfg.planning_frame or frame.frame_id,
            fixed_T_camera=f_T_c,
        )

    def _restart_fusion_if_camera_moved(self, frame: RGBDFrame, plane: SupportPlane | None) -> None:
        """Without a camera pose the fixed frame is the camera's: if the camera moved
        anyway (a hand-held or arm camera without ``planning_frame``), every track's fused
        volume restarts instead of smearing views taken from elsewhere into one."""
        if self._static_camera.moved(frame, plane.noise_z2 if plane is not None else 0.0):
            for track in self.tracker.tracks.values():
                track.volume = None

    # ------------------------------------------------------------------ frame stages
    def _reconstruct(
        self, scene: SceneContext, observations: list[ObjectObservation], skipped: list[SkippedObject]
    ) -> list[tuple[ObjectObservation, VoxelShape]]:
        """The backend's shapes for all observations of a frame, in one batch: the pairs
        with a shape; the others are appended to ``skipped`` with the backend's reason."""
        if not observations:
            return []
        frame = scene.frame
        try:
            shapes = list(self.backend.reconstruct(scene, observations))
        except BackendError as err:
            logger.warning("backend %s failed on frame %d: %s", self.backend.name, frame.stamp_ns, err)
            skipped.extend(
                SkippedObject(o.instance_id, SkipReason.BACKEND_ERROR, str(err)) for o in observations
            )
            return []
        if len(shapes) != len(observations):
            raise BackendError(
                f"backend {self.backend.name!r} returned {len(shapes)} shapes for {len(observations)} objects"
            )
        failures = dict(self.backend.failure_details())
        shaped: list[tuple[ObjectObservation, VoxelShape]] = []
        for obs, shape in zip(observations, shapes, strict=True):
            if shape is None:
                detail = failures.get(obs.instance_id, "backend returned no shape")
                skipped.append(_skip(frame, obs.instance_id, SkipReason.EMPTY_SHAPE, detail))
            else:
                shaped.append((obs, shape))
        return shaped

    def _track(
        self,
        frame: RGBDFrame,
        shaped: list[tuple[ObjectObservation, VoxelShape]],
        f_T_c: NDArray[np.float64],
        skipped: list[SkippedObject],
    ) -> tuple[list[tuple[ObjectObservation, VoxelShape]], list[tuple[Track, bool]], list[Track]]:
        """Match the single-frame shapes (boxes in the fixed frame) to the tracks: the
        tracked pairs, their ``(track, is_new)`` in the same order, and the vanished tracks."""
        self._collect_decompositions()
        pairs: list[tuple[ObjectObservation, VoxelShape]] = []
        detections: list[Detection] = []
        for obs, shape in shaped:
            try:
                pts = transform_points(f_T_c, shape_points(shape, self.config.occupancy_threshold))
                detections.append(Detection.from_points(obs.instance_id, pts))
            except TrackingError as err:
                detail = f"{type(err).__name__}: {err}"
                skipped.append(_skip(frame, obs.instance_id, SkipReason.EMPTY_SHAPE, detail))
                continue
            pairs.append((obs, shape))
        matches, vanished = self.tracker.step(detections)
        for t in vanished:
            if self._decomp is not None:
                self._decomp.cancel(t.track_id)
        return pairs, matches, vanished

    def _finish_objects(
        self,
        frame: RGBDFrame,
        scene: SceneContext,
        pairs: list[tuple[ObjectObservation, VoxelShape]],
        matches: list[tuple[Track, bool]],
        supports: dict[int, Support],
        f_T_c: NDArray[np.float64],
        skipped: list[SkippedObject],
        timings: dict[str, float],
    ) -> list[TrackedObject]:
        """Mesh, pose and collision shapes of every tracked object, by instance id."""
        results: list[TrackedObject] = []
        timings["meshing"] = 0.0
        timings["refinement"] = 0.0
        timings["collision"] = 0.0
        if self.config.fusion_enabled:
            timings["fusion"] = 0.0
        near = None
        if pairs and (self.config.surface_refinement or self.config.fusion_enabled):
            # the free-space depth, once per frame for every object's carving and fusion
            with _timed(timings, "free_space"):
                near = free_space_depth(frame.depth)
        for (obs, shape), (track, is_new) in zip(pairs, matches, strict=True):
            try:
                support = supports.get(obs.instance_id, NO_SUPPORT)
                tracked = self._finish_object(
                    frame, scene, obs, shape, support, track, is_new, f_T_c, near, timings
                )
            except (MeshingError, LayoutError, CollisionError, RefinementError) as err:
                # a shape that gives no usable mesh, frame or collision geometry: the object
                # is skipped with the reason, never published half-made
                detail = f"{type(err).__name__}: {err}"
                skipped.append(_skip(frame, obs.instance_id, SkipReason.EMPTY_SHAPE, detail))
                continue
            results.append(tracked)
        results.sort(key=lambda r: r.result.instance_id)
        return results

    # ------------------------------------------------------------------ per object
    def _fuse(
        self,
        frame: RGBDFrame,
        obs: ObjectObservation,
        shape: VoxelShape,
        track: Track,
        f_T_c: NDArray[np.float64],
        plane: SupportPlane | None,
        near: NDArray[np.float32] | None,
    ) -> VoxelShape | None:
        """Integrate the frame into the track's volume; the fused shape or None (fusion off
        or failed: the single-frame shape is used). The depth noise measured on the
        support plane sets the truncation band and the motion test's tolerance; ``near``:
        the frame's free-space depth."""
        if not self.config.fusion_enabled:
            track.volume = None
            return None
        noise = plane.noise_z2 if plane is not None else 0.0
        vol = track.volume
        try:
            if vol is not None:
                # a suspect frame integrates as usual: if the motion is confirmed next frame,
                # the restart drops what it added (so the confirming reading is taken against
                # evidence that includes the suspect frame; holding it out instead was
                # measured and not kept, docs/benchmarks.md)
                moved, frac = vol.moved(transform_points(f_T_c, obs.points), f_T_c[:3, 3], noise)
                if moved:
                    logger.debug(
                        "track %d: %.0f%% of its surface in seen-free space: moved",
                        track.track_id,
                        100 * frac,
                    )
                    vol = None
                    self._drop_parts(track)
            if vol is not None:
                try:
                    vol.integrate(shape, frame, obs.instance_id, f_T_c, noise, obs.pixels, near)
                except FusionGrowthError as err:
                    logger.debug("track %d: fusion restarts: %s", track.track_id, err)
                    vol = None
            if vol is None:  # a new volume covers the shape: it cannot need to grow
                vol = TrackVolume.for_shape(shape, f_T_c)
                vol.integrate(shape, frame, obs.instance_id, f_T_c, noise, obs.pixels, near)
            track.volume = vol
            return vol.voxel_shape(invert_transform(f_T_c), self.config.occupancy_threshold)
        except FusionError as err:
            logger.debug("track %d: fusion reset: %s", track.track_id, err)
            track.volume = None
            return None

    def _finish_object(
        self,
        frame: RGBDFrame,
        scene: SceneContext,
        obs: ObjectObservation,
        shape: VoxelShape,
        support: Support,
        track: Track,
        is_new: bool,
        f_T_c: NDArray[np.float64],
        near: NDArray[np.float32] | None,
        timings: dict[str, float],
    ) -> TrackedObject:
        """Mesh, refine, pose, collision shapes and track state of one object (``near``:
        the frame's free-space depth, None when neither refinement nor fusion needs it).

        With ``surface_refinement`` seen-free voxels are emptied and voxels holding measured
        surface that joins the shape are filled before meshing, and the seen surface is
        snapped onto the measured depth after it (:mod:`sam3d_ros.core.refine`)."""
        cfg = self.config
        refine = cfg.surface_refinement
        t0 = time.perf_counter()
        if refine:
            margin = max(C.REFINE_CARVE_MARGIN_VOXELS * shape.voxel_size, C.REFINE_CARVE_MIN_MARGIN_M)
            shape, _ = carve_seen_free(shape, frame, margin, near)
            shape, _ = fill_observed(shape, obs, scene.plane, cfg.occupancy_threshold)
        t_carved = time.perf_counter()
        fused = self._fuse(frame, obs, shape, track, f_T_c, scene.plane, near)
        fuse_s = time.perf_counter() - t_carved
        mesh_cam = None
        c_T_f = invert_transform(f_T_c)
        kept = None
        if track.kept_surface is not None:
            kept = transform_points(c_T_f, track.kept_surface)
        if fused is not None:
            try:
                mesh_cam = mesh_from_voxels(fused, cfg.occupancy_threshold, obs.points, kept)
                shape = fused
            except MeshingError as err:
                logger.info("track %d: fused shape unusable (%s); single-frame shape", track.track_id, err)
                track.volume = None
        if mesh_cam is None:
            mesh_cam = mesh_from_voxels(shape, cfg.occupancy_threshold, obs.points, kept)
        track.kept_surface = transform_points(f_T_c, mesh_cam.vertices)
        t_ref = time.perf_counter()
        if refine:
            mesh_cam = snap_to_depth(mesh_cam, frame, obs, C.SNAP_BAND_VOXELS * shape.voxel_size).mesh
        refine_s = time.perf_counter() - t_ref + (t_carved - t0)
        if 0 < cfg.output_mesh_max_triangles < len(mesh_cam.faces):
            # quadric decimation: message building, hulls and fits scale with the faces
            mesh_cam = simplify_mesh(mesh_cam, cfg.output_mesh_max_triangles)
        camera_T_object, extents = estimate_object_frame(mesh_cam.vertices, scene.plane)
        if track.fixed_T_object is not None:  # a static object's pose must not turn
            previous = c_T_f @ track.fixed_T_object
            camera_T_object, extents = keep_previous_axes(camera_T_object, extents, previous[:3, :3])
        object_T_camera = invert_transform(camera_T_object)
        mesh_obj = TriangleMesh(
            vertices=transform_points(object_T_camera, mesh_cam.vertices), faces=mesh_cam.faces
        )
        seen = observed_in_frame(mesh_cam.vertices, frame, obs.mask)  # the one projection
        vis = visible_fraction(mesh_cam, seen)
        cut = touches_border(frame.labels, value=obs.instance_id)  # the mask before erosion
        t1 = time.perf_counter()
        fixed_T_object = f_T_c @ camera_T_object
        track.fixed_T_object = fixed_T_object
        collision, geometry_changed, moved = self._collision(
            mesh_obj, seen, track, fixed_T_object, cut_by_border=cut
        )
        t2 = time.perf_counter()
        timings["meshing"] += (t1 - t0 - refine_s - fuse_s) * 1000.0
        if "fusion" in timings:
            timings["fusion"] += fuse_s * 1000.0
        timings["refinement"] += refine_s * 1000.0
        timings["collision"] += (t2 - t1) * 1000.0
        if moved:
            self._drop_parts(track)
            self._submit_decomposition(track, mesh_obj, fixed_T_object)
        result = ObjectResult(
            instance_id=obs.instance_id,
            track_id=track.track_id,
            label=f"instance_{obs.instance_id}",
            score=obs.score,
            pose=Pose.from_matrix(camera_T_object),
            extents=(float(extents[0]), float(extents[1]), float(extents[2])),
            mesh=mesh_obj,
            collision=collision.shapes(),
            visible_fraction=float(np.clip(vis, 0.0, 1.0)),
            confidence=float(np.clip(shape.confidence, 0.0, 1.0)),
            num_points=int(obs.points.shape[0]),
            cut_by_border=cut,
            support_id=support.instance_id,
        )
        return TrackedObject(
            result=result,
            collision=collision,
            fixed_T_object=fixed_T_object,
            appeared=is_new,
            moved=moved,
            geometry_changed=geometry_changed and not is_new,
            fused_frames=track.volume.frames if track.volume is not None else 1,
        )

    def _collision(
        self,
        mesh_obj: TriangleMesh,
        seen: NDArray[np.bool_],
        track: Track,
        fixed_T_object: NDArray[np.float64],
        *,
        cut_by_border: bool = False,
    ) -> tuple[CollisionSet, bool, bool]:
        """Collision shapes of one object (object frame), whether its geometry changed (an
        ADD) and whether it moved (a MOVE).

        The geometry changed with new decomposition parts, or with a new hull version: its
        volume changed by more than ``shape_change_threshold`` of the last version's and by
        more than ``shape_change_min_distance`` times the last version's hull area (the
        hull's surface moved by more than that distance on average). Otherwise the object
        moved when its object frame's origin moved by more than ``track_move_threshold``
        from the last reported pose and the geometry the planning scene holds (the last
        version's hull at that pose) no longer lies within that distance of the current
        hull everywhere (a static object whose frame convention wobbles is not re-posed);
        then a MOVE when the held hull at the new pose fits, else the shapes are sent again
        (the frame turned against the object).
        ``seen`` flags the vertices of ``mesh_obj`` observed in this frame (padded less).
        An object cut by the image border is padded as completed surface all over."""
        cfg = self.config
        kinds = cfg.collision_kinds()
        hull = convex_hull(mesh_obj)
        prims: tuple[CollisionPrimitive, ...] = ()
        if "primitive" in kinds:
            prims = accepted_primitives(fit_primitives(mesh_obj, hull.vertices), cfg.primitive_max_fit_error)
        simplified = simplify_mesh(mesh_obj, cfg.simplified_max_triangles) if "simplified" in kinds else None
        # geometry versions
        volume = mesh_volume(hull)
        changed = track.geometry_volume is None or shape_changed(
            track.geometry_volume,
            track.geometry_area,
            volume,
            cfg.shape_change_threshold,
            cfg.shape_change_min_distance,
        )
        move = False
        if not changed and track.geometry_hull is not None and track.reported_fixed_T_object is not None:
            placement = held_placement(
                track.geometry_hull,
                track.reported_fixed_T_object,
                hull,
                fixed_T_object,
                cfg.track_move_threshold,
            )
            move, changed = placement == "moved", placement == "turned"
            if changed:
                logger.debug("track %d: moved and its object frame turned: shapes sent again", track.track_id)
        if changed:
            track.geometry_version += 1
            track.geometry_volume = volume
            track.geometry_area = float(face_areas_and_centroids(hull)[0].sum())
            if track.geometry_version > 1:
                logger.debug("track %d: geometry version %d", track.track_id, track.geometry_version)
            self._submit_decomposition(track, mesh_obj, fixed_T_object)
        upgraded = track.parts_version is not None and (
            track.collision is None or track.collision.parts_version != track.parts_version
        )
        parts: tuple[TriangleMesh, ...] = ()
        if "decomposition" in kinds and track.parts and track.parts_fixed_T_object is not None:
            o_T_p = invert_transform(fixed_T_object) @ track.parts_fixed_T_object
            parts = tuple(TriangleMesh(transform_points(o_T_p, p.vertices), p.faces) for p in track.parts)
        unpadded = hull
        # padding: more where the surface was completed than where it was observed
        m_obs, m_comp = cfg.collision_padding_observed, cfg.collision_padding_completed
        if m_obs > 0.0 or m_comp > 0.0:
            if cut_by_border:  # the shape beyond the border is a guess: none of it counts as seen
                seen = np.zeros(len(mesh_obj.vertices), dtype=bool)
            elif track.volume is not None:
                seen = track.volume.observed_points(transform_points(fixed_T_object, mesh_obj.vertices))

            def margins(points: NDArray[np.float64]) -> NDArray[np.float64]:
                return margins_from_reference(points, mesh_obj.vertices, seen, m_obs, m_comp)

            hull = pad_convex(hull, margins(hull.vertices))
            parts = tuple(pad_convex(p, margins(p.vertices)) for p in parts)
            if simplified is not None:
                simplified = pad_mesh(simplified, margins(simplified.vertices))
            prims = tuple(pad_primitive(p, max(m_obs, m_comp)) for p in prims)
        collision = CollisionSet(
            hull=hull,
            parts=parts,
            primitives=prims,
            simplified=simplified,
            geometry_version=track.geometry_version,
            parts_version=track.parts_version if parts else None,
        )
        upgraded = upgraded and bool(parts)
        track.collision = collision
        move = move and not upgraded  # an ADD carries the pose
        if changed or upgraded:  # an ADD: the planning scene holds this hull ...
            track.geometry_hull = unpadded
        if changed or upgraded or move:  # ... at this pose
            track.reported_fixed_T_object = fixed_T_object.copy()
        return collision, changed or upgraded, move

    # ------------------------------------------------------------------ decomposition cache
    def _submit_decomposition(
        self, track: Track, mesh_obj: TriangleMesh, fixed_T_object: NDArray[np.float64]
    ) -> None:
        cfg = self.config
        if "decomposition" not in cfg.collision_kinds():
            return
        req = DecompositionRequest(
            vertices=np.asarray(mesh_obj.vertices, dtype=np.float64),
            faces=np.asarray(mesh_obj.faces, dtype=np.int32),
            method=cfg.decomposition_method,
            max_parts=cfg.decomposition_max_parts,
            max_part_vertices=cfg.decomposition_max_part_vertices,
            threshold=cfg.decomposition_threshold,
        )
        track.pending = {track.geometry_version: fixed_T_object.copy()}
        if self._sync_decomp:
            try:
                parts = self._decomposer(req)
                res = DecompositionResult(track.track_id, track.geometry_version, tuple(parts))
            except DecompositionError as err:
                res = DecompositionResult(track.track_id, track.geometry_version, (), str(err))
            self._apply_decomposition(res)
            return
        if self._decomp is None:
            self._decomp = DecompositionService(cfg.decomposition_time_budget, self._decomposer)
        self._decomp.time_budget_s = cfg.decomposition_time_budget
        self._decomp.submit(track.track_id, track.geometry_version, req)

    def _collect_decompositions(self) -> None:
        if self._decomp is None:
            return
        for res in self._decomp.take_results():
            self._apply_decomposition(res)

    def _apply_decomposition(self, res: DecompositionResult) -> None:
        track = self.tracker.tracks.get(res.key)
        if track is None or res.version not in track.pending:
            return
        frame_T = track.pending.pop(res.version)
        if not res.parts:
            logger.debug("track %d: no decomposition (%s); hull only", res.key, res.error)
            return
        track.parts = res.parts
        track.parts_version = res.version
        track.parts_fixed_T_object = frame_T
        logger.debug("track %d: %d convex parts ready after %.2f s", res.key, len(res.parts), res.seconds)

    @staticmethod
    def _drop_parts(track: Track) -> None:
        track.parts = ()
        track.parts_version = None
        track.parts_fixed_T_object = None


def _rest_on(plane: SupportPlane | None, shape: VoxelShape, support: Support | None) -> VoxelShape:
    """``shape`` cut below the top of the object it rests on (unchanged on the plane, with
    an unknown support, or when the cut would leave nothing)."""
    if plane is None or support is None or not support.on_object:
        return shape
    cut = cut_below(shape, plane, support.height - C.SUPPORT_CUT_TOL)
    if cut is None:
        logger.debug("support cut at %.3f m would empty the shape; not applied", support.height)
        return shape
    return cut


def _skip(frame: RGBDFrame, instance_id: int, reason: SkipReason, detail: str) -> SkippedObject:
    """The skipped object, logged at INFO with its reason and detail."""
    logger.info("object %d of frame %d skipped (%s): %s", instance_id, frame.stamp_ns, reason.value, detail)
    return SkippedObject(instance_id, reason, detail)


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + (time.perf_counter() - t0) * 1000.0
