"""Collision geometry of an object mesh: convex hull and conservative primitives.

All inputs and outputs are in the object frame (z up along the support normal), metres.
Every primitive encloses all mesh vertices, hence the whole mesh (planners may rely on it).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import ConvexHull, QhullError

from sam3d_ros.core.frames import make_transform
from sam3d_ros.core.meshing import face_areas_and_centroids
from sam3d_ros.core.types import CollisionPrimitive, CollisionShapes, PrimitiveType, TriangleMesh

logger = logging.getLogger(__name__)

#: Iterations of the Badoiu-Clarkson minimum-enclosing-ball approximation.
_BALL_ITERATIONS = 100

#: The enclosing-ball iterations use a regular subsample of at most this many hull points.
_BALL_MAX_POINTS = 512


class CollisionError(ValueError):
    """Raised for meshes without usable vertices (empty, non-finite, flat)."""


def _check_vertices(mesh: TriangleMesh) -> NDArray[np.float64]:
    v = np.asarray(mesh.vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 4:
        raise CollisionError(f"need at least 4 vertices of shape (V, 3), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise CollisionError(f"{int((~np.isfinite(v)).any(axis=1).sum())} vertices are not finite")
    return v


def convex_hull(mesh: TriangleMesh) -> TriangleMesh:
    """Convex hull of the mesh vertices as a closed mesh with outward faces.

    Returns:
        Mesh with only the hull vertices (V', 3) float64 and faces (F', 3) int32,
        counter-clockwise seen from outside.

    Raises:
        CollisionError: fewer than 4 vertices, non-finite or coplanar vertices.
    """
    v = _check_vertices(mesh)
    try:
        hull = ConvexHull(v)
    except QhullError as err:
        raise CollisionError(f"convex hull of {len(v)} vertices failed (flat or degenerate): {err}") from err
    used = np.unique(hull.simplices)
    remap = np.full(len(v), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    verts = v[used]
    faces = remap[hull.simplices]
    # orient outwards: hull.equations holds outward normals for each simplex
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    normals = np.cross(b - a, c - a)
    flip = np.einsum("ij,ij->i", normals, hull.equations[:, :3]) < 0
    faces[flip] = faces[flip][:, ::-1]
    return TriangleMesh(vertices=verts, faces=faces.astype(np.int32))


def fit_primitives(
    mesh: TriangleMesh, hull_points: NDArray[np.float64] | None = None
) -> tuple[CollisionPrimitive, ...]:
    """Box, z-cylinder and sphere enclosing the mesh, best fit first.

    * box: the axis-aligned bounding box in the object frame;
    * cylinder: axis along z, height = z extent, radius and axis position of the
      minimum enclosing circle of the vertices' xy;
    * sphere: (near-)minimum enclosing ball, radius = exact maximum vertex distance.

    ``fit_error`` is the area-weighted mean absolute distance (m) of the mesh faces'
    centroids to the primitive's surface; primitives are sorted by it (ascending).

    Args:
        mesh: object-frame mesh, metres.
        hull_points: optional (K, 3) convex-hull vertices of ``mesh`` (saves recomputing).

    Raises:
        CollisionError: for fewer than 4 or non-finite vertices.
    """
    v = _check_vertices(mesh)
    hp = _hull_points(v) if hull_points is None else np.asarray(hull_points, dtype=np.float64)
    areas, cents = face_areas_and_centroids(mesh)
    if len(areas) == 0 or float(areas.sum()) <= 0.0:
        weights = np.ones(len(v)) / len(v)
        samples = v
    else:
        weights = areas / areas.sum()
        samples = cents

    lo, hi = v.min(axis=0), v.max(axis=0)
    # box
    box_c = (lo + hi) / 2.0
    half = (hi - lo) / 2.0
    q = np.abs(samples - box_c) - half
    box_sdf = np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)
    box = CollisionPrimitive(
        kind=PrimitiveType.BOX,
        dimensions=tuple(float(x) for x in 2.0 * half),
        object_T_primitive=make_transform(np.eye(3), box_c),
        fit_error=float(np.abs(box_sdf) @ weights),
    )
    # cylinder about z
    cxy, r = _min_enclosing_circle(hp[:, :2])
    r = max(r, float(np.linalg.norm(v[:, :2] - cxy, axis=1).max()))
    cyl_c = np.array([cxy[0], cxy[1], box_c[2]])
    rel = samples - cyl_c
    qc = np.stack([np.linalg.norm(rel[:, :2], axis=1) - r, np.abs(rel[:, 2]) - half[2]], axis=1)
    cyl_sdf = np.linalg.norm(np.maximum(qc, 0.0), axis=1) + np.minimum(qc.max(axis=1), 0.0)
    cyl = CollisionPrimitive(
        kind=PrimitiveType.CYLINDER,
        dimensions=(float(2.0 * half[2]), float(r)),
        object_T_primitive=make_transform(np.eye(3), cyl_c),
        fit_error=float(np.abs(cyl_sdf) @ weights),
    )
    # sphere
    sc = _enclosing_ball_centre(hp)
    sr = float(np.linalg.norm(v - sc, axis=1).max())
    sph_sdf = np.linalg.norm(samples - sc, axis=1) - sr
    sph = CollisionPrimitive(
        kind=PrimitiveType.SPHERE,
        dimensions=(sr,),
        object_T_primitive=make_transform(np.eye(3), sc),
        fit_error=float(np.abs(sph_sdf) @ weights),
    )
    order = {PrimitiveType.BOX: 0, PrimitiveType.CYLINDER: 1, PrimitiveType.SPHERE: 2}
    return tuple(sorted((box, cyl, sph), key=lambda p: (p.fit_error, order[p.kind])))


def compute_collision_shapes(mesh_object: TriangleMesh) -> CollisionShapes:
    """Collision shapes of an object-frame mesh: (convex hull,) and fitted primitives.

    Raises:
        CollisionError: for degenerate meshes (see :func:`convex_hull`).
    """
    hull = convex_hull(mesh_object)
    return CollisionShapes(convex_parts=(hull,), primitives=fit_primitives(mesh_object, hull.vertices))


def _hull_points(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """The convex-hull vertices of (N, d) points (all points when qhull fails)."""
    try:
        return points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return points


def _min_enclosing_circle(xy: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
    """Minimum enclosing circle (centre (2,), radius) of (N, 2) points: incremental Welzl
    over their convex-hull vertices in a fixed pseudo-random order (deterministic,
    expected linear time)."""
    hull = _hull_points(xy)
    order = np.random.default_rng(0).permutation(len(hull))
    pts = [(float(x), float(y)) for x, y in hull[order]]
    cx, cy = pts[0]
    r = 0.0
    eps = 1e-12
    for i in range(1, len(pts)):
        px, py = pts[i]
        if math.hypot(px - cx, py - cy) <= r + eps:
            continue
        cx, cy, r = px, py, 0.0
        for j in range(i):
            qx, qy = pts[j]
            if math.hypot(qx - cx, qy - cy) <= r + eps:
                continue
            cx, cy = (px + qx) / 2.0, (py + qy) / 2.0
            r = math.hypot(px - cx, py - cy)
            for k in range(j):
                sx, sy = pts[k]
                if math.hypot(sx - cx, sy - cy) <= r + eps:
                    continue
                cc = _circumcircle(pts[i], pts[j], pts[k])
                if cc is not None:
                    cx, cy, r = cc
    return np.array([cx, cy]), float(r)


def _circumcircle(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]
) -> tuple[float, float, float] | None:
    """Centre (x, y) and radius of the circle through three points; None if collinear."""
    d = 2.0 * (a[0] * (b[1] - c[1]) + b[0] * (c[1] - a[1]) + c[0] * (a[1] - b[1]))
    if abs(d) < 1e-18:
        return None
    a2 = a[0] * a[0] + a[1] * a[1]
    b2 = b[0] * b[0] + b[1] * b[1]
    c2 = c[0] * c[0] + c[1] * c[1]
    ux = (a2 * (b[1] - c[1]) + b2 * (c[1] - a[1]) + c2 * (a[1] - b[1])) / d
    uy = (a2 * (c[0] - b[0]) + b2 * (a[0] - c[0]) + c2 * (b[0] - a[0])) / d
    return ux, uy, math.hypot(a[0] - ux, a[1] - uy)


def _enclosing_ball_centre(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Centre of an approximate minimum enclosing ball of (N, 3) points (Badoiu-Clarkson
    iterations on at most ``_BALL_MAX_POINTS`` of them, started at the bounding-box centre);
    the caller takes the exact maximum distance to all points as the radius."""
    pts = points[:: max(1, len(points) // _BALL_MAX_POINTS)]
    c = (pts.min(axis=0) + pts.max(axis=0)) / 2.0
    for i in range(1, _BALL_ITERATIONS + 1):
        far = pts[int(np.argmax(np.linalg.norm(pts - c, axis=1)))]
        c = c + (far - c) / (i + 1.0)
    return c
