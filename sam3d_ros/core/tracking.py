"""Object tracking across frames: stable track ids, appear / move / vanish.

Each frame's objects are matched to the live tracks by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) on a cost of centroid distance and 3D
bounding-box overlap in the fixed frame, with a bonus when the upstream segmenter kept the
mask label. Pairs further apart than ``track_max_distance`` are never matched, and leaving
an object unmatched has a cost of its own (``TRACK_NEW_COST``), so an object that jumped
beyond the gate starts a new track instead of taking a neighbour's. Unmatched
objects start new tracks (id = their mask label when that id was never used, else the next
unused id); a track unseen for ``track_max_missed`` frames vanishes.

The per-track state (fusion volume, collision cache) lives on :class:`Track`; the
pipeline fills it. All positions are in the fixed frame ``F``, metres.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from sam3d_ros.core import constants as C
from sam3d_ros.core.collision import CollisionSet
from sam3d_ros.core.fusion import TrackVolume
from sam3d_ros.core.types import FrameResult, ObjectResult, TriangleMesh

logger = logging.getLogger(__name__)

#: Cost of a forbidden pairing in the assignment matrix.
_FORBIDDEN = 1e6


class TrackingError(ValueError):
    """Raised for invalid detections (non-finite centroids or boxes)."""


@dataclass(frozen=True)
class Detection:
    """One object of the current frame, as the tracker sees it.

    Attributes:
        label: the mask label (instance id).
        centroid: (3,) float64 centre of the object's bounding box in ``F`` (m).
        lo, hi: (3,) float64 axis-aligned bounding box in ``F`` (m).
    """

    label: int
    centroid: NDArray[np.float64]
    lo: NDArray[np.float64]
    hi: NDArray[np.float64]

    @classmethod
    def from_points(cls, label: int, points_fixed: NDArray[np.floating]) -> Detection:
        """From (N > 0, 3) points of the object in ``F``.

        Raises:
            TrackingError: for no points or non-finite points.
        """
        p = np.asarray(points_fixed, dtype=np.float64).reshape(-1, 3)
        if len(p) == 0 or not np.all(np.isfinite(p)):
            raise TrackingError(f"object {label}: need finite points, got {len(p)} points")
        lo, hi = p.min(axis=0), p.max(axis=0)
        return cls(int(label), (lo + hi) / 2.0, lo, hi)


@dataclass(eq=False)
class Track:
    """A tracked object and its cached state (mutable; owned by the pipeline's thread).

    Attributes:
        track_id: stable id (> 0). label: mask label of the last match.
        centroid, lo, hi: last position and box in ``F``.
        missed: consecutive frames without a match. hits: frames matched.
        volume: fused evidence (when fusion is enabled).
        geometry_volume: hull volume (m^3) of the current geometry version.
        geometry_area: hull surface area (m^2) of the current geometry version.
        geometry_hull: the convex hull (object frame, unpadded) last sent whole (ADD).
        fixed_T_object: 4x4 object frame in ``F`` published for the last frame that saw the
            object (the next frame keeps its axes where the convention allows).
        reported_fixed_T_object: 4x4 object frame in ``F`` of the last ADD or MOVE: where
            the planning scene holds ``geometry_hull``.
        geometry_version: increases when the collision geometry changed notably.
        parts: convex parts in the object frame of ``parts_fixed_T_object``.
        parts_version: the geometry version the parts belong to.
        parts_fixed_T_object: 4x4 object frame (in ``F``) the parts are expressed in.
        pending: geometry version -> object frame in ``F`` of submitted decompositions.
        collision: the last collision set published.
        kept_surface: (M, 3) float64 vertices in ``F`` (metres) of the last frame's mesh as
            meshed (before snapping and decimation): which surface components it kept
            (:func:`sam3d_ros.core.meshing.mesh_from_voxels`, hysteresis).
    """

    track_id: int
    label: int
    centroid: NDArray[np.float64]
    lo: NDArray[np.float64]
    hi: NDArray[np.float64]
    missed: int = 0
    hits: int = 0
    volume: TrackVolume | None = None
    geometry_volume: float | None = None
    geometry_area: float = 0.0
    geometry_hull: TriangleMesh | None = None
    fixed_T_object: NDArray[np.float64] | None = None
    reported_fixed_T_object: NDArray[np.float64] | None = None
    geometry_version: int = 0
    parts: tuple[TriangleMesh, ...] = ()
    parts_version: int | None = None
    parts_fixed_T_object: NDArray[np.float64] | None = None
    pending: dict[int, NDArray[np.float64]] = field(default_factory=dict)
    collision: CollisionSet | None = None
    kept_surface: NDArray[np.float64] | None = None


def box_iou(lo_a: NDArray, hi_a: NDArray, lo_b: NDArray, hi_b: NDArray) -> float:
    """Intersection over union of two axis-aligned boxes (0 when disjoint or empty)."""
    inter = np.prod(np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0.0, None))
    va = np.prod(np.clip(hi_a - lo_a, 0.0, None))
    vb = np.prod(np.clip(hi_b - lo_b, 0.0, None))
    union = va + vb - inter
    return float(inter / union) if union > 0 else 0.0


class ObjectTracker:
    """Associates detections with tracks (see the module docstring). Not thread-safe.

    Args:
        max_distance: largest centroid distance (m) of a match.
        max_missed: a track vanishes after this many consecutive unmatched frames.
        use_labels: prefer matches that keep the mask label.
    """

    def __init__(self, max_distance: float, max_missed: int, use_labels: bool = True) -> None:
        self.max_distance = float(max_distance)
        self.max_missed = int(max_missed)
        self.use_labels = bool(use_labels)
        self.tracks: dict[int, Track] = {}
        self._used_ids: set[int] = set()

    def reset(self) -> list[Track]:
        """Forget all tracks (ids may be reused afterwards); returns the tracks forgotten."""
        gone = list(self.tracks.values())
        self.tracks.clear()
        self._used_ids.clear()
        return gone

    def _new_id(self, label: int) -> int:
        if self.use_labels and label > 0 and label not in self._used_ids:
            tid = label
        else:
            tid = max(self._used_ids, default=0) + 1
        self._used_ids.add(tid)
        return tid

    def cost_matrix(self, detections: list[Detection], tracks: list[Track]) -> NDArray[np.float64]:
        """(D, T) association costs; ``_FORBIDDEN`` for pairs beyond ``max_distance``."""
        cost = np.full((len(detections), len(tracks)), _FORBIDDEN)
        for i, d in enumerate(detections):
            for j, t in enumerate(tracks):
                dist = float(np.linalg.norm(d.centroid - t.centroid))
                if dist > self.max_distance:
                    continue
                c = dist / self.max_distance + C.TRACK_IOU_WEIGHT * (1.0 - box_iou(d.lo, d.hi, t.lo, t.hi))
                if self.use_labels and d.label == t.label:
                    c -= C.TRACK_LABEL_BONUS
                cost[i, j] = c
        return cost

    def step(self, detections: list[Detection]) -> tuple[list[tuple[Track, bool]], list[Track]]:
        """Match one frame's detections.

        Returns:
            (per detection, in order: (its track, True when the track is new), the tracks that
            vanished in this frame). Matched tracks get the detection's label, centroid and box.
        """
        tracks = list(self.tracks.values())
        assigned: dict[int, Track] = {}
        if detections and tracks:
            cost = self.cost_matrix(detections, tracks)
            # one "new track" column per detection: the assignment may leave a detection
            # unmatched instead of forcing it onto a track it can reach and pushing that
            # track's own detection onto another (an identity swap). Each detection's own
            # column is cheaper than a forbidden pair, so no forbidden pair is ever chosen.
            unmatched = np.full((len(detections), len(detections)), _FORBIDDEN)
            np.fill_diagonal(unmatched, C.TRACK_NEW_COST)
            rows, cols = linear_sum_assignment(np.hstack([cost, unmatched]))
            for r, c in zip(rows, cols, strict=True):
                if c < len(tracks):
                    assigned[int(r)] = tracks[int(c)]
        out: list[tuple[Track, bool]] = []
        matched: set[int] = set()
        # labels of new tracks must not steal an id of a detection matched in this frame
        for i, d in enumerate(detections):
            t = assigned.get(i)
            if t is not None:
                t.label, t.centroid, t.lo, t.hi = d.label, d.centroid, d.lo, d.hi
                t.missed = 0
                t.hits += 1
                matched.add(t.track_id)
                out.append((t, False))
            else:
                t = Track(self._new_id(d.label), d.label, d.centroid, d.lo, d.hi, hits=1)
                self.tracks[t.track_id] = t
                matched.add(t.track_id)
                out.append((t, True))
                logger.debug(
                    "track %d appeared (label %d) at %s", t.track_id, d.label, np.round(d.centroid, 3)
                )
        vanished: list[Track] = []
        for t in tracks:
            if t.track_id in matched:
                continue
            t.missed += 1
            if t.missed >= self.max_missed:
                vanished.append(self.tracks.pop(t.track_id))
                logger.debug("track %d vanished after %d missed frames", t.track_id, t.missed)
        return out, vanished


@dataclass(frozen=True)
class TrackedObject:
    """One object of a frame with its track state.

    Attributes:
        result: the object's reconstruction (``result.track_id`` is the track id; its
            collision holds the hull and, when ready, the decomposition parts).
        collision: all collision shapes (object frame), see :class:`CollisionSet`.
        fixed_T_object: 4x4 object pose in the fixed frame.
        appeared: first frame of the track.
        moved: the position moved by more than ``track_move_threshold`` since the last report.
        geometry_changed: a new collision geometry version (or decomposition parts) is ready.
        fused_frames: frames fused into the shape (1 without fusion).
    """

    result: ObjectResult
    collision: CollisionSet
    fixed_T_object: NDArray[np.float64]
    appeared: bool
    moved: bool
    geometry_changed: bool
    fused_frames: int = 1


@dataclass(frozen=True)
class SceneUpdate:
    """The result of one frame plus the tracking view of it.

    Attributes:
        result: the frame result (as :meth:`FramePipeline.process` returns it).
        objects: one entry per ``result.objects`` entry, same order.
        vanished: track ids that vanished in this frame (or were reset).
        fixed_frame: name of the fixed (planning) frame.
        fixed_T_camera: 4x4 camera pose in the fixed frame used for this frame.
    """

    result: FrameResult
    objects: tuple[TrackedObject, ...]
    vanished: tuple[int, ...]
    fixed_frame: str
    fixed_T_camera: NDArray[np.float64]
