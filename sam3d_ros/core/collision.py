"""Collision geometry of an object mesh: convex hull, conservative primitives, a simplified
mesh, conservative vertex caps for convex parts, and padding.

All inputs and outputs are in the object frame (z up along the support normal), metres.
Every primitive encloses all mesh vertices, hence the whole mesh (planners may rely on it).
Padding inflates shapes by a per-vertex margin (larger where the surface was completed
than where it was observed); padded convex shapes stay convex and enclose the unpadded ones
(with about the margin of clearance, slightly less at chamfered edges).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import ConvexHull, HalfspaceIntersection, QhullError, cKDTree

from sam3d_ros.core.frames import make_transform, transform_points
from sam3d_ros.core.logs import warn_once
from sam3d_ros.core.meshing import (
    drop_back_to_back_faces,
    face_areas_and_centroids,
    is_watertight,
    mesh_volume,
    split_pinched_edges,
)
from sam3d_ros.core.types import CollisionPrimitive, CollisionShapes, PrimitiveType, TriangleMesh

logger = logging.getLogger(__name__)

#: A simplified mesh keeping less than this fraction of the volume is replaced by the
#: capped convex hull (coarse vertex clustering collapses thin parts).
_MIN_SIMPLIFIED_VOLUME_RATIO = 0.6

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
    pts = np.ascontiguousarray(points[:: max(1, len(points) // _BALL_MAX_POINTS)], dtype=np.float64)
    c = (pts.min(axis=0) + pts.max(axis=0)) / 2.0
    # farthest point from c: argmax |p - c|^2 = argmax (|p|^2 - 2 p.c)
    sq = np.einsum("ij,ij->i", pts, pts)
    two_pts = 2.0 * pts
    for i in range(1, _BALL_ITERATIONS + 1):
        far = pts[int(np.argmax(sq - two_pts @ c))]
        c = c + (far - c) / (i + 1.0)
    return c


# --------------------------------------------------------------------------- collision sets


@dataclass(frozen=True)
class CollisionSet:
    """Everything a planner may use for one object, in the object frame (metres).

    Attributes:
        hull: convex hull of the mesh (padded when padding is configured).
        parts: convex decomposition parts (padded), empty until a decomposition is ready.
        primitives: fitted primitives whose fit error is under the configured limit, best
            first (padded by the completed-surface margin).
        simplified: mesh under the triangle budget (padded), or None when not configured.
        geometry_version: increases when the collision geometry changed notably.
        parts_version: the geometry version the parts were computed for (None: no parts).
    """

    hull: TriangleMesh
    parts: tuple[TriangleMesh, ...] = ()
    primitives: tuple[CollisionPrimitive, ...] = ()
    simplified: TriangleMesh | None = None
    geometry_version: int = 0
    parts_version: int | None = None

    def shapes(self) -> CollisionShapes:
        """As :class:`CollisionShapes`: convex parts = (hull, *parts), the primitives."""
        return CollisionShapes(convex_parts=(self.hull, *self.parts), primitives=self.primitives)


def shape_changed(
    old_volume: float,
    old_area: float,
    volume: float,
    relative_threshold: float,
    min_distance: float,
) -> bool:
    """Whether a convex hull of ``volume`` (m^3) is another geometry version than the last
    one (``old_volume`` m^3, surface ``old_area`` m^2): its volume changed by more than
    ``relative_threshold`` of the old volume and by more than ``min_distance`` (m) times the
    old area. The second test is size-aware: to first order a hull whose surface moves
    outwards by ``d`` everywhere changes its volume by ``d * area``, so it asks that the
    surface moved by more than ``min_distance`` on average (a 10 % volume change is 1 mm of
    surface on a 3 cm object, 3 mm on a 10 cm one)."""
    change = abs(volume - old_volume)
    return change > relative_threshold * max(old_volume, 1e-12) and change > min_distance * old_area


def held_geometry_fits(held: TriangleMesh, current: TriangleMesh, tolerance: float) -> bool:
    """Whether the closed convex hulls ``held`` and ``current``, expressed in one frame, lie
    within ``tolerance`` (m) of each other: every vertex of each within ``tolerance`` of the
    other's surface (the distance to the nearest face plane: exact inside, a lower bound
    outside)."""
    d_held = points_outside_convex(held.vertices, current)
    d_current = points_outside_convex(current.vertices, held)
    return bool(max(np.abs(d_held).max(), np.abs(d_current).max()) <= tolerance)


#: Outcomes of :func:`held_placement`.
Placement = Literal["kept", "moved", "turned"]


def held_placement(
    held: TriangleMesh,
    held_T: NDArray[np.float64],
    hull: TriangleMesh,
    fixed_T_object: NDArray[np.float64],
    tolerance: float,
) -> Placement:
    """How the hull a planning scene holds stands to an object's current hull, both convex
    and unpadded, each in its object frame (``held_T`` and ``fixed_T_object``: 4x4 object
    frames in the fixed frame ``F``):

    * ``"kept"``: the object frame's origin moved by at most ``tolerance`` (m), or the held
      hull at its pose still lies within ``tolerance`` of the current one (a static object
      whose frame convention wobbles): nothing to send;
    * ``"moved"``: it no longer does, and the held hull at the new pose does (a MOVE);
    * ``"turned"``: neither: the object frame's axes follow a convention (the footprint's
      long side, signed towards the camera) that a push can turn against the object, so a
      MOVE would show the held shapes turned; they must be sent again (an ADD).
    """
    if float(np.linalg.norm(fixed_T_object[:3, 3] - held_T[:3, 3])) <= tolerance:
        return "kept"
    held_then = TriangleMesh(transform_points(held_T, held.vertices), held.faces)
    now = TriangleMesh(transform_points(fixed_T_object, hull.vertices), hull.faces)
    if held_geometry_fits(held_then, now, tolerance):  # both in F
        return "kept"
    return "moved" if held_geometry_fits(held, hull, tolerance) else "turned"


def accepted_primitives(
    primitives: tuple[CollisionPrimitive, ...], max_fit_error: float
) -> tuple[CollisionPrimitive, ...]:
    """The primitives with ``fit_error <= max_fit_error`` (m), order kept (best first)."""
    return tuple(p for p in primitives if p.fit_error <= max_fit_error)


def points_outside_convex(points: NDArray[np.floating], part: TriangleMesh) -> NDArray[np.float64]:
    """Largest signed distance (m) of each of (N, 3) points outside the face planes of a
    closed, outward-oriented convex mesh (<= 0: inside or on it). Returns (N,) float64."""
    v = np.asarray(part.vertices, dtype=np.float64)
    f = np.asarray(part.faces, dtype=np.int64)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-18
    n = n[ok] / norm[ok, None]
    off = np.einsum("ij,ij->i", n, v[f[ok, 0]])
    if len(n) == 0:
        return np.full(len(p), np.inf)
    return np.asarray((p @ n.T - off).max(axis=1), dtype=np.float64)


def cap_convex_vertices(points: NDArray[np.floating], max_vertices: int) -> TriangleMesh:
    """Convex hull of (N, 3) points with at most ``max_vertices`` vertices, conservatively.

    When the hull has too many vertices it is replaced by the intersection of
    ``max_vertices // 2 + 2`` supporting half-spaces (directions: the six axes and the
    normals of the largest hull faces), each touching the points: the result still encloses
    every point and, as a simple polytope of K facets, has at most 2K - 4 vertices.

    Raises:
        CollisionError: for degenerate input (see :func:`convex_hull`).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    hull = convex_hull(TriangleMesh(vertices=pts, faces=np.zeros((0, 3), dtype=np.int32)))
    if len(hull.vertices) <= max_vertices:
        return hull
    k = max(4, max_vertices // 2 + 2)
    hv, hf = hull.vertices, hull.faces.astype(np.int64)
    cr = np.cross(hv[hf[:, 1]] - hv[hf[:, 0]], hv[hf[:, 2]] - hv[hf[:, 0]])
    area = np.linalg.norm(cr, axis=1)
    normals = cr / np.maximum(area, 1e-18)[:, None]
    dirs: list[NDArray[np.float64]] = [d for d in np.vstack([np.eye(3), -np.eye(3)])]
    for i in np.argsort(-area):
        if len(dirs) >= k:
            break
        if area[i] <= 0:
            break
        if max(float(normals[i] @ d) for d in dirs) < 0.98:  # skip near-duplicates
            dirs.append(normals[i])
    d = np.asarray(dirs[:k])
    h = (hv @ d.T).max(axis=0)
    interior = hv.mean(axis=0)
    try:
        hs = HalfspaceIntersection(np.hstack([d, -h[:, None]]), interior)
    except (QhullError, ValueError) as err:
        logger.debug("vertex cap failed (%s); keeping the full hull", err)
        return hull
    capped = convex_hull(TriangleMesh(vertices=hs.intersections, faces=np.zeros((0, 3), dtype=np.int32)))
    return capped if len(capped.vertices) <= max_vertices else hull


def vertex_normals(mesh: TriangleMesh) -> NDArray[np.float64]:
    """Area-weighted unit vertex normals (V, 3) of an outward-oriented mesh."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    cr = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    vn = np.zeros_like(v)
    for c in range(3):
        np.add.at(vn, f[:, c], cr)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return np.asarray(np.where(norm > 1e-18, vn / np.maximum(norm, 1e-18), 0.0), dtype=np.float64)


def pad_convex(part: TriangleMesh, margins: NDArray[np.floating]) -> TriangleMesh:
    """Inflate a closed convex mesh by per-vertex margins (m), staying convex.

    Every vertex is pushed out along each adjacent face normal and its vertex normal by its
    margin and the hull is taken again: the result encloses ``part``, each original face
    moved out by its vertices' margins; edges and corners are chamfered, so the clearance
    there is at least ``margin * cos(half the turn between adjacent faces)`` (>= 0.8 * margin
    at a cube's corners).

    Args:
        part: convex, outward-oriented mesh.
        margins: (V,) non-negative margins, one per vertex of ``part``.
    """
    m = np.maximum(np.asarray(margins, dtype=np.float64).reshape(-1), 0.0)
    if len(m) != len(part.vertices):
        raise CollisionError(f"{len(m)} margins for {len(part.vertices)} vertices")
    if not np.any(m > 0):
        return part
    v = np.asarray(part.vertices, dtype=np.float64)
    f = np.asarray(part.faces, dtype=np.int64)
    cr = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    fn = cr / np.maximum(np.linalg.norm(cr, axis=1), 1e-18)[:, None]
    pts = [v + m[:, None] * vertex_normals(part)]
    for c in range(3):
        pts.append(v[f[:, c]] + m[f[:, c], None] * fn)
    return convex_hull(TriangleMesh(vertices=np.vstack(pts), faces=np.zeros((0, 3), dtype=np.int32)))


def pad_mesh(mesh: TriangleMesh, margins: NDArray[np.floating]) -> TriangleMesh:
    """Offset every vertex of a (non-convex) mesh along its vertex normal by its margin (m);
    an approximation of an offset surface (exact for flat regions)."""
    m = np.maximum(np.asarray(margins, dtype=np.float64).reshape(-1), 0.0)
    if len(m) != len(mesh.vertices):
        raise CollisionError(f"{len(m)} margins for {len(mesh.vertices)} vertices")
    if not np.any(m > 0):
        return mesh
    return TriangleMesh(vertices=mesh.vertices + m[:, None] * vertex_normals(mesh), faces=mesh.faces)


def pad_primitive(prim: CollisionPrimitive, margin: float) -> CollisionPrimitive:
    """A primitive grown by ``margin`` (m) on every side (same pose and fit error)."""
    if margin <= 0.0:
        return prim
    d = prim.dimensions
    if prim.kind is PrimitiveType.BOX:
        dims: tuple[float, ...] = tuple(float(x) + 2.0 * margin for x in d)
    elif prim.kind is PrimitiveType.CYLINDER:
        dims = (float(d[0]) + 2.0 * margin, float(d[1]) + margin)
    else:
        dims = (float(d[0]) + margin,)
    return CollisionPrimitive(prim.kind, dims, prim.object_T_primitive, prim.fit_error)


def margins_from_reference(
    points: NDArray[np.floating],
    ref_points: NDArray[np.floating],
    ref_observed: NDArray[np.bool_],
    margin_observed: float,
    margin_completed: float,
) -> NDArray[np.float64]:
    """Per-point margins (N,) (m): the observed or completed margin of the nearest reference
    point (e.g. the nearest mesh vertex with its observed flag)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    obs = np.asarray(ref_observed, dtype=bool).reshape(-1)
    if len(obs) == 0 or margin_observed == margin_completed:
        return np.full(len(p), max(margin_observed, margin_completed) if len(obs) == 0 else margin_observed)
    _, idx = cKDTree(np.asarray(ref_points, dtype=np.float64)).query(p)
    return np.where(obs[idx], margin_observed, margin_completed).astype(np.float64)


def simplify_mesh(mesh: TriangleMesh, max_triangles: int) -> TriangleMesh:
    """A mesh with at most ``max_triangles`` faces approximating ``mesh`` (same frame).

    Uses quadric decimation (``fast_simplification``) when installed, else vertex
    clustering on a grid whose cell grows until the budget is met (also when decimation
    fails with ValueError/RuntimeError; each fallback is logged once per process). Meshes
    already under budget are returned unchanged. Decimating a closed mesh can leave
    back-to-back face pairs and sheets pinched into one edge; both are repaired
    (:func:`~sam3d_ros.core.meshing.drop_back_to_back_faces`,
    :func:`~sam3d_ros.core.meshing.split_pinched_edges`), which closes most results; the
    rest are kept as they are (a few open edges). When no reduction meets the budget the
    convex hull is returned (capped to ``max_triangles // 2 + 2`` vertices).
    """
    n_faces = len(mesh.faces)
    if n_faces <= max_triangles:
        return mesh
    try:
        import fast_simplification  # type: ignore[import-untyped]
    except ImportError:
        warn_once(
            logger, "fast_simplification", "fast_simplification not installed: vertex clustering is used"
        )
        out = _cluster_simplify(mesh, max_triangles)
    else:
        # aim a little below the budget: decimation may stop a few faces short of it
        reduction = float(np.clip(1.0 - 0.95 * max_triangles / n_faces, 0.0, 0.999))
        try:
            pts, tri = fast_simplification.simplify(
                np.asarray(mesh.vertices, dtype=np.float32),
                np.asarray(mesh.faces, dtype=np.int32),
                target_reduction=reduction,
            )
            out = TriangleMesh(np.asarray(pts, dtype=np.float64), np.asarray(tri, dtype=np.int32))
        except (ValueError, RuntimeError) as err:  # its argument checks; C++ errors
            warn_once(
                logger,
                "fast_simplification_failed",
                "fast_simplification failed on a %d-face mesh (target reduction %.4f, budget %d): %s: %s; "
                "vertex clustering is used (reported once)",
                n_faces,
                reduction,
                max_triangles,
                type(err).__name__,
                err,
            )
            out = _cluster_simplify(mesh, max_triangles)
    if not is_watertight(out) and is_watertight(mesh):
        out = split_pinched_edges(drop_back_to_back_faces(out))
    hull_cap = max(4, max_triangles // 2 + 2)
    if len(out.faces) > max_triangles or len(out.faces) < 4:
        return cap_convex_vertices(mesh.vertices, hull_cap)
    if abs(mesh_volume(out)) < _MIN_SIMPLIFIED_VOLUME_RATIO * abs(mesh_volume(mesh)):
        # a coarse clustering can collapse thin parts: the capped hull keeps the volume
        hull = cap_convex_vertices(mesh.vertices, hull_cap)
        if len(hull.faces) <= max_triangles:
            logger.debug("simplified mesh lost too much volume; capped convex hull instead")
            return hull
    return out


def _cluster_simplify(mesh: TriangleMesh, max_triangles: int) -> TriangleMesh:
    """Vertex clustering: merge vertices per grid cell (cell doubled until under budget)."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    extent = float((v.max(axis=0) - v.min(axis=0)).max())
    cell = extent / 64.0 if extent > 0 else 1.0
    for _ in range(12):
        keys = np.floor((v - v.min(axis=0)) / cell).astype(np.int64)
        _, inv = np.unique(keys, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        nf = inv[f]
        keep = (nf[:, 0] != nf[:, 1]) & (nf[:, 1] != nf[:, 2]) & (nf[:, 0] != nf[:, 2])
        nf = np.unique(nf[keep], axis=0)
        if len(nf) <= max_triangles:
            counts = np.bincount(inv)
            cv = np.zeros((int(inv.max()) + 1, 3))
            np.add.at(cv, inv, v)
            cv /= np.maximum(counts, 1)[:, None]
            used = np.unique(nf)
            remap = np.full(len(cv), -1, dtype=np.int64)
            remap[used] = np.arange(len(used))
            return TriangleMesh(cv[used], remap[nf].astype(np.int32))
        cell *= 1.5
    return TriangleMesh(v[:0], f[:0].astype(np.int32))
