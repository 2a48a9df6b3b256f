"""Non-learned reference reconstructions and the point-set scorer (pure numpy/scipy).

* :func:`convex_hull_mesh`: convex hull of the visible points.
* :func:`extruded_hull_mesh`: the visible points plus their orthogonal projections onto the
  support plane, hulled (a "prism down to the table").
* :func:`score_point_set`: scores a mesh-less point set (the "visible points only"
  baseline) against a true mesh with the same sampling as
  :func:`sam3d_ros.core.metrics.evaluate_object`: precision uses the exact distance of the
  points to the true surface, recall the distance of true-surface samples to the nearest
  point; a point set encloses no volume, so its volumetric IoU is 0; its centre is the
  points' centroid; ADD-S is the mean true-sample-to-nearest-point distance.

All points and meshes are in the camera optical frame, metres.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import ConvexHull, QhullError, cKDTree

from sam3d_ros.core.metrics import (
    ADD_S_SUCCESS_FRACTION,
    DEFAULT_SAMPLES,
    FSCORE_THRESHOLDS_M,
    MeshLike,
    ObjectMetrics,
    diameter,
    point_to_mesh_distance,
    sample_surface,
    volume_centroid,
)
from sam3d_ros.core.types import SupportPlane, TriangleMesh

logger = logging.getLogger(__name__)

#: Fewer points than this cannot span a volume.
MIN_HULL_POINTS = 4


class BaselineError(ValueError):
    """Raised for unusable inputs (too few or degenerate points)."""


def convex_hull_mesh(points: NDArray[np.floating]) -> TriangleMesh:
    """Convex hull of (N, 3) points as an outward-oriented triangle mesh.

    Raises:
        BaselineError: fewer than 4 points, or all points (nearly) coplanar.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(p) < MIN_HULL_POINTS:
        raise BaselineError(f"need >= {MIN_HULL_POINTS} points for a hull, got {len(p)}")
    try:
        hull = ConvexHull(p)
    except QhullError as err:
        raise BaselineError(f"degenerate point set ({len(p)} points): {err}") from err
    used = np.unique(hull.simplices)
    remap = np.full(len(p), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    faces = remap[hull.simplices]
    verts = p[used]
    # orient every face along its outward hull normal
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("ij,ij->i", n, hull.equations[:, :3]) < 0
    faces[flip] = faces[flip][:, ::-1]
    return TriangleMesh(vertices=verts, faces=faces.astype(np.int32))


def extruded_hull_mesh(points: NDArray[np.floating], plane: SupportPlane | None) -> TriangleMesh:
    """Hull of the points and their projections onto ``plane`` (just the hull without a
    plane). Points below the plane are projected too (their projection lies above them)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if plane is None:
        return convex_hull_mesh(p)
    n = np.asarray(plane.normal, dtype=np.float64)
    foot = p - plane.signed_distance(p)[:, None] * n[None, :]
    return convex_hull_mesh(np.concatenate([p, foot]))


def score_point_set(
    points: NDArray[np.floating],
    gt: MeshLike,
    *,
    instance_id: int = 0,
    visible_fraction: float = math.nan,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> ObjectMetrics:
    """:class:`ObjectMetrics` of a point set against the true posed mesh (see the module
    docstring for how each metric is defined for points)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(p) == 0:
        raise BaselineError("empty point set")
    if len(p) > n_samples:
        p_s = p[np.random.default_rng(seed).choice(len(p), n_samples, replace=False)]
    else:
        p_s = p
    pred_to_gt = point_to_mesh_distance(p_s, gt)
    gt_samples = sample_surface(gt, n_samples, seed=seed + 1)
    gt_to_pred, _ = cKDTree(p).query(gt_samples)
    gt_to_pred = np.asarray(gt_to_pred, dtype=np.float64)

    def f(th: float) -> float:
        pr = float((pred_to_gt <= th).mean())
        rc = float((gt_to_pred <= th).mean())
        return 0.0 if pr + rc == 0 else 2 * pr * rc / (pr + rc)

    dia = diameter(gt)
    adds = float(gt_to_pred.mean())
    norm = adds / dia if dia > 0 else math.inf
    return ObjectMetrics(
        instance_id=int(instance_id),
        chamfer_l1_mm=500.0 * (float(pred_to_gt.mean()) + adds),
        fscore_5mm=f(FSCORE_THRESHOLDS_M[0]),
        fscore_10mm=f(FSCORE_THRESHOLDS_M[1]),
        volume_iou=0.0,
        add_s_m=adds,
        add_s_norm=float(norm),
        add_s_success=bool(norm < ADD_S_SUCCESS_FRACTION),
        add_s_from_pose=False,
        centre_error_mm=1000.0 * float(np.linalg.norm(p.mean(axis=0) - volume_centroid(gt))),
        diameter_m=dia,
        visible_fraction=float(visible_fraction),
        accuracy_mm=1000.0 * float(pred_to_gt.mean()),
        completeness_mm=1000.0 * adds,
        recall_5mm=float((gt_to_pred <= FSCORE_THRESHOLDS_M[0]).mean()),
    )


def missing_metrics(instance_id: int, gt: MeshLike, visible_fraction: float) -> ObjectMetrics:
    """Metrics of an object a method did not reconstruct: F-scores, IoU and ADD-S success
    are 0 / False; distances (Chamfer, ADD-S, centre error) are NaN and left out of means."""
    return ObjectMetrics(
        instance_id=int(instance_id),
        chamfer_l1_mm=math.nan,
        fscore_5mm=0.0,
        fscore_10mm=0.0,
        volume_iou=0.0,
        add_s_m=math.nan,
        add_s_norm=math.nan,
        add_s_success=False,
        add_s_from_pose=False,
        centre_error_mm=math.nan,
        diameter_m=diameter(gt),
        visible_fraction=float(visible_fraction),
        recall_5mm=0.0,
    )
