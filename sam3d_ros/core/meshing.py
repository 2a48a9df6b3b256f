"""Iso-surface extraction from voxel occupancy, and mesh checks.

Marching cubes (scikit-image, Lewiner) runs on the occupancy padded with one layer of
zeros, so the surface is always closed; faces are oriented outwards (counter-clockwise seen
from outside, positive volume). When the surface falls apart into several components, the
ones the object's measured surface supports are kept (each holding at least
``MESH_COMPONENT_MIN_SUPPORT`` of the observed points within ``MESH_COMPONENT_SUPPORT_VOXELS``
voxels of its vertices: a thin object the network fragments keeps all its observed
pieces, a blob away from every measurement is dropped); without observed points, or when no
component is supported, only the largest one (by enclosed volume). A component that lies on
the surface the object's track kept in the previous frame stays kept while it holds at least
``MESH_COMPONENT_KEEP_SUPPORT`` of the points (hysteresis: a piece whose support hovers
around the threshold from one noisy frame to the next, such as a bowl's far rim, neither
flickers in and out of the mesh nor re-sends the planning scene's geometry every frame).
Cavity surfaces (inner components) are always dropped, so enclosed voids are filled.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage import measure

from sam3d_ros.core import constants as C
from sam3d_ros.core.frames import invert_transform, transform_points
from sam3d_ros.core.types import TriangleMesh, VoxelShape

logger = logging.getLogger(__name__)


class MeshingError(ValueError):
    """Raised when no surface can be extracted (empty or invalid occupancy)."""


def mesh_from_voxels(
    shape: VoxelShape,
    level: float,
    observed_points: NDArray[np.floating] | None = None,
    kept_points: NDArray[np.floating] | None = None,
) -> TriangleMesh:
    """Watertight triangle mesh of the ``level`` iso-surface of a voxel shape.

    Args:
        shape: occupancy (NX, NY, NZ) in [0, 1] in grid frame ``G``; voxel (i, j, k) has its
            centre at ``origin + (i, j, k) + 0.5`` voxels.
        level: iso-level in (0, 1), e.g. ``config.occupancy_threshold``.
        observed_points: (N, 3) the object's measured surface points, CAMERA frame, metres,
            or None; they choose which components of a fragmented surface are kept.
        kept_points: (M, 3) vertices of the surface kept for this object in the previous
            frame, CAMERA frame, metres, or None (hysteresis, module docstring).

    Returns:
        Mesh with vertices (V, 3) float64 in the CAMERA frame (via ``camera_T_grid``), metres,
        and faces (F, 3) int32, outward oriented; the components the observed points
        support, else the largest one (module docstring); each component is closed.

    Raises:
        MeshingError: for an empty/non-finite occupancy, a voxel size outside
            [MIN_VOXEL_SIZE, MAX_VOXEL_SIZE] or a level outside (0, 1).
    """
    occ = np.asarray(shape.occupancy, dtype=np.float32)
    if occ.ndim != 3 or min(occ.shape) < 1:
        raise MeshingError(f"occupancy must be a non-empty 3-D array, got shape {occ.shape}")
    if not 0.0 < level < 1.0:
        raise MeshingError(f"iso-level must be in (0, 1), got {level}")
    vs = float(shape.voxel_size)
    if not (np.isfinite(vs) and C.MIN_VOXEL_SIZE <= vs <= C.MAX_VOXEL_SIZE):
        raise MeshingError(f"voxel size {vs} m outside [{C.MIN_VOXEL_SIZE}, {C.MAX_VOXEL_SIZE}] m")
    if not np.all(np.isfinite(occ)):
        raise MeshingError(f"occupancy has {int((~np.isfinite(occ)).sum())} non-finite values")
    if not (occ > level).any():
        raise MeshingError(f"occupancy is empty at level {level} (max {float(occ.max()):.3f})")
    padded = np.pad(occ, 1, mode="constant", constant_values=0.0)
    try:
        verts, faces, _, _ = measure.marching_cubes(padded, level=level, spacing=(vs, vs, vs))
    except (ValueError, RuntimeError) as err:
        raise MeshingError(f"marching cubes failed at level {level}: {err}") from err
    if len(faces) == 0:
        raise MeshingError(f"marching cubes produced no faces at level {level}")
    origin = np.asarray(shape.origin, dtype=np.float64).reshape(3)
    # padded index p = i + 1; voxel i has its centre at origin + (i + 0.5) * vs
    verts_g = verts.astype(np.float64) + origin + (0.5 - 1.0) * vs
    faces64 = faces.astype(np.int64)
    if not _single_surface(padded, level):
        support = kept = None
        grid_T_camera = invert_transform(np.asarray(shape.camera_T_grid, dtype=np.float64))
        if observed_points is not None and len(observed_points):
            support = transform_points(grid_T_camera, np.asarray(observed_points, dtype=np.float64))
        if kept_points is not None and len(kept_points):
            kept = transform_points(grid_T_camera, np.asarray(kept_points, dtype=np.float64))
        verts_g, faces64 = _kept_components(
            verts_g, faces64, support, C.MESH_COMPONENT_SUPPORT_VOXELS * vs, kept
        )
    if _signed_volume(verts_g, faces64) < 0.0:
        faces64 = faces64[:, ::-1]
    verts_cam = transform_points(np.asarray(shape.camera_T_grid, dtype=np.float64), verts_g)
    return TriangleMesh(
        vertices=np.ascontiguousarray(verts_cam, dtype=np.float64),
        faces=np.ascontiguousarray(faces64, dtype=np.int32),
    )


def _single_surface(padded: NDArray[np.float32], level: float) -> bool:
    """Whether the iso-surface of ``padded`` (zero border) is certainly one connected
    surface, checked on the voxels: the voxels above ``level`` form one 6-connected set and
    so do those at or below it. Within a cell the trilinear interpolant's super- and
    sub-level sets each reach a voxel centre of their side, and 6-neighbours on one side
    are joined by a segment on that side; so both continuous sets are connected, and the
    boundary between a connected solid and its connected complement is a single surface.
    False means "maybe several" (the mesh's components are then computed)."""
    inside = padded > level
    _, n_in = ndimage.label(inside)
    if n_in != 1:
        return False
    _, n_out = ndimage.label(~inside)
    return bool(n_out == 1)


def _signed_volume(v: NDArray[np.float64], f: NDArray[np.int64]) -> float:
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _kept_components(
    v: NDArray[np.float64],
    f: NDArray[np.int64],
    support: NDArray[np.float64] | None,
    support_dist: float,
    kept: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Keep the outer components that ``support`` (observed points, same frame as ``v``)
    supports, else the one with the largest absolute enclosed volume (see the module
    docstring); a component with at least ``MESH_COMPONENT_KEEP_OVERLAP`` of its vertices
    within ``support_dist`` of ``kept`` (the previous frame's kept vertices, same frame)
    needs only ``MESH_COMPONENT_KEEP_SUPPORT``. Unused vertices are dropped and faces
    re-indexed."""
    n = len(v)
    rows = np.concatenate([f[:, 0], f[:, 1]])
    cols = np.concatenate([f[:, 1], f[:, 2]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    n_comp, comp = connected_components(graph, directed=False)
    face_comp = comp[f[:, 0]]
    if n_comp > 1:
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        vol = np.bincount(face_comp, weights=np.einsum("ij,ij->i", a, np.cross(b, c)), minlength=n_comp)
        area = np.bincount(
            face_comp, weights=np.linalg.norm(np.cross(b - a, c - a), axis=1), minlength=n_comp
        )
        best = int(np.lexsort((area, np.abs(vol)))[-1])
        keep = np.zeros(n_comp, dtype=bool)
        if support is not None and len(support):
            # outer surfaces share the largest one's orientation; cavities have the other
            outer = np.sign(vol) == np.sign(vol[best])
            dist, nearest = cKDTree(v).query(support, distance_upper_bound=support_dist)
            hit = np.isfinite(dist)
            counts = np.bincount(comp[nearest[hit]], minlength=n_comp)
            need = np.full(n_comp, C.MESH_COMPONENT_MIN_SUPPORT)
            if kept is not None and len(kept):
                on_kept = np.isfinite(cKDTree(kept).query(v, distance_upper_bound=support_dist)[0])
                overlap = np.bincount(comp, weights=on_kept, minlength=n_comp) / np.bincount(
                    comp, minlength=n_comp
                )
                need[overlap >= C.MESH_COMPONENT_KEEP_OVERLAP] = C.MESH_COMPONENT_KEEP_SUPPORT
            keep = outer & (counts >= np.maximum(1.0, need * len(support)))
        if not keep.any():
            keep[best] = True
        logger.debug(
            "mesh had %d components; kept %d (%d of %d faces)",
            n_comp,
            int(keep.sum()),
            int(keep[face_comp].sum()),
            len(f),
        )
        f = f[keep[face_comp]]
    used = np.unique(f)
    if len(used) != n:
        remap = np.full(n, -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        v, f = v[used], remap[f]
    return v, f


def mesh_volume(mesh: TriangleMesh) -> float:
    """Signed enclosed volume (m^3); positive for a closed, outward-oriented mesh."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    if len(f) == 0:
        return 0.0
    return _signed_volume(v, f)


def is_watertight(mesh: TriangleMesh) -> bool:
    """True when every edge is shared by exactly two faces with opposite directions
    (closed, manifold and consistently oriented)."""
    f = np.asarray(mesh.faces, dtype=np.int64)
    if len(f) == 0:
        return False
    a = f.reshape(-1)
    b = f[:, [1, 2, 0]].reshape(-1)  # directed edges a -> b, three per face
    if np.any(a == b):
        return False
    # each directed edge exactly once and its reverse exactly once: the sorted directed
    # keys have no repeats and equal the sorted reversed keys
    n = int(f.max()) + 1
    directed = np.sort(a * n + b)
    if np.any(directed[1:] == directed[:-1]):
        return False
    return bool(np.array_equal(directed, np.sort(b * n + a)))


def drop_back_to_back_faces(mesh: TriangleMesh) -> TriangleMesh:
    """Remove pairs of faces on the same three vertices with opposite orientations (a flap
    of zero volume, as decimation can leave) and repeats of a face with the same
    orientation (one is kept). Vertices are kept as they are."""
    f = np.asarray(mesh.faces, dtype=np.int64)
    if len(f) < 2:
        return mesh
    # rotate each face so its smallest index comes first: the cyclic order (orientation) stays
    first = np.argmin(f, axis=1)
    rows = np.arange(len(f))[:, None]
    rolled = f[rows, (first[:, None] + np.arange(3)) % 3]
    _, inv, counts = np.unique(np.sort(f, axis=1), axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    if counts.max() == 1:
        return mesh
    keep = np.ones(len(f), dtype=bool)
    for group in np.nonzero(counts > 1)[0].tolist():
        members = np.nonzero(inv == group)[0]
        forward = members[rolled[members, 1] < rolled[members, 2]]
        backward = members[rolled[members, 1] > rolled[members, 2]]
        pairs = min(len(forward), len(backward))
        keep[forward[:pairs]] = False  # opposite pairs cancel
        keep[backward[:pairs]] = False
        rest = np.concatenate([forward[pairs:], backward[pairs:]])
        keep[rest[1:]] = False  # same-orientation repeats: one stays
    return TriangleMesh(vertices=mesh.vertices, faces=np.ascontiguousarray(f[keep], dtype=np.int32))


def split_pinched_edges(mesh: TriangleMesh) -> TriangleMesh:
    """Separate sheets that touch along an edge (an edge shared by 4, 6, ... faces, as
    decimation can leave on thin parts of a closed mesh).

    The faces around each vertex of such an edge are grouped into fans connected through
    ordinary (two-face) edges; every fan beyond the first gets its own copy of the vertex.
    The surface and its faces are unchanged; a closed mesh whose only defects are such
    pinches becomes watertight. Meshes without pinched edges are returned as they are.
    """
    f = np.asarray(mesh.faces, dtype=np.int64)
    if len(f) == 0:
        return mesh
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    n = int(f.max()) + 1
    keys = edges[:, 0] * n + edges[:, 1]
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    pinched = counts > 2
    if not pinched.any():
        return mesh
    edge_faces = np.tile(np.arange(len(f)), 3)
    manifold_edge = counts[inverse] == 2
    # face adjacency through two-face edges: pairs of faces sharing such an edge
    order = np.argsort(inverse[manifold_edge], kind="stable")
    paired = edge_faces[manifold_edge][order].reshape(-1, 2)
    neighbours: dict[int, list[int]] = {}
    for a, b in paired.tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    bad_vertices = np.unique(np.stack([uniq[pinched] // n, uniq[pinched] % n]))
    vertices = [np.asarray(mesh.vertices, dtype=np.float64)]
    faces = f.copy()
    next_index = len(mesh.vertices)
    for vtx in bad_vertices.tolist():
        incident = set(np.nonzero((f == vtx).any(axis=1))[0].tolist())
        fans: list[list[int]] = []
        while incident:
            stack = [incident.pop()]
            fan = []
            while stack:
                face = stack.pop()
                fan.append(face)
                for nb in neighbours.get(face, ()):
                    if nb in incident:
                        incident.remove(nb)
                        stack.append(nb)
            fans.append(fan)
        for fan in fans[1:]:
            rows = np.asarray(fan)
            faces[rows] = np.where(f[rows] == vtx, next_index, faces[rows])
            vertices.append(vertices[0][vtx][None, :])
            next_index += 1
    return TriangleMesh(vertices=np.concatenate(vertices), faces=np.ascontiguousarray(faces, dtype=np.int32))


def face_areas_and_centroids(mesh: TriangleMesh) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-face area (F,) in m^2 and centroid (F, 3) in the mesh's frame."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return areas, (a + b + c) / 3.0
