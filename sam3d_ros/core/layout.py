"""Object frame (6-DoF pose and extents) of a completed shape, and its visible fraction.

The object frame has z along the support-plane normal (the camera's "up" without a
plane), x along the major side of the footprint's minimum-area bounding rectangle and its
origin at the centre of the shape's bounding box in that frame. A tracked object keeps its
previous frame's axes where the convention leaves a choice (:func:`keep_previous_axes`: the
sign of x, and x/y of a near-square footprint), so a static object's pose does not turn.
All in the camera optical frame, metres.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import ConvexHull, QhullError

from sam3d_ros.core import constants as C
from sam3d_ros.core.frames import make_transform, rotation_from_z_and_x
from sam3d_ros.core.meshing import face_areas_and_centroids
from sam3d_ros.core.object_frame import camera_up, support_normal
from sam3d_ros.core.types import RGBDFrame, SupportPlane, TriangleMesh

logger = logging.getLogger(__name__)


class LayoutError(ValueError):
    """Raised for unusable vertices (empty, wrong shape or non-finite)."""


def estimate_object_frame(
    vertices_camera: NDArray[np.floating], plane: SupportPlane | None
) -> tuple[NDArray[np.float64], tuple[float, float, float]]:
    """Object frame of a shape given by its vertices.

    Args:
        vertices_camera: (V, 3) vertices in the camera optical frame, metres.
        plane: the support plane; its normal becomes the object z axis. Without a plane z is
            the camera's up direction (-y of the optical frame).

    Returns:
        (camera_T_object 4x4 float64, (ex, ey, ez) full extents in metres along the object
        axes). x is the longer side of the footprint's minimum-area rectangle (ex >= ey),
        signed to have a positive camera-x component (or, when x is perpendicular to it, a
        positive camera-z component); y = z cross x (right-handed).

    Raises:
        LayoutError: for no vertices, a wrong shape or non-finite values.
    """
    v = np.asarray(vertices_camera, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise LayoutError(f"vertices must have shape (V>0, 3), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise LayoutError(f"{int((~np.isfinite(v)).any(axis=1).sum())} vertices are not finite")
    support = support_normal(plane)  # the same z as the encoding and the completion
    z = camera_up() if support is None else support[0]
    helper = rotation_from_z_and_x(z, np.array([1.0, 0.0, 0.0]))
    e1, e2 = helper[:, 0], helper[:, 1]
    xy = np.stack([v @ e1, v @ e2], axis=1)
    angle, _ = _min_area_rectangle(xy)
    x = np.cos(angle) * e1 + np.sin(angle) * e2
    ref = x[0] if abs(x[0]) > 1e-6 else x[2]
    if ref < 0:
        x = -x
    R = rotation_from_z_and_x(z, x)
    local = v @ R
    lo, hi = local.min(axis=0), local.max(axis=0)
    ext = hi - lo
    if ext[1] > ext[0] + 1e-12:  # make x the major axis (turn by 90 degrees about z)
        R = np.stack([R[:, 1], -R[:, 0], R[:, 2]], axis=1)
        if (R[0, 0] if abs(R[0, 0]) > 1e-6 else R[2, 0]) < 0:
            R = np.stack([-R[:, 0], -R[:, 1], R[:, 2]], axis=1)
        local = v @ R
        lo, hi = local.min(axis=0), local.max(axis=0)
        ext = hi - lo
    centre = R @ ((lo + hi) / 2.0)
    return make_transform(R, centre), (float(ext[0]), float(ext[1]), float(ext[2]))


def keep_previous_axes(
    camera_T_object: NDArray[np.float64],
    extents: tuple[float, float, float],
    previous_R: NDArray[np.float64],
    square_tol: float = C.OBJECT_FRAME_SQUARE_TOL,
) -> tuple[NDArray[np.float64], tuple[float, float, float]]:
    """The frame of :func:`estimate_object_frame` turned about its z axis to the quarter
    turn whose x is closest to a tracked object's previous x.

    The convention fixes x only up to its sign (and the sign rule flips where x is nearly
    perpendicular to the camera's x); a footprint whose sides differ by at most
    ``square_tol`` of the longer one has no meaningful long side either. So: x may turn by
    180 degrees always, and by +-90 degrees (x and y extents swapped) when the footprint is
    that close to square. The origin and z are kept; the box is the same box.

    Args:
        camera_T_object: 4x4 float64, the new frame in the camera optical frame.
        extents: its (ex, ey, ez) full extents, metres.
        previous_R: 3x3 rotation of the previous frame in the same camera frame (columns:
            its axes).
        square_tol: relative tolerance of a near-square footprint.

    Returns:
        (camera_T_object, extents) of the chosen quarter turn.
    """
    R = np.asarray(camera_T_object, dtype=np.float64)[:3, :3]
    ex, ey, ez = extents
    turns = [0, 2]
    if ex - ey <= square_tol * max(ex, 1e-12):
        turns += [1, 3]
    prev_x = np.asarray(previous_R, dtype=np.float64)[:, 0]
    best, best_dot = 0, -np.inf
    for k in turns:
        c, s_ = np.cos(k * np.pi / 2.0), np.sin(k * np.pi / 2.0)
        x_k = c * R[:, 0] + s_ * R[:, 1]
        dot = float(x_k @ prev_x)
        if dot > best_dot + 1e-9:
            best, best_dot = k, dot
    if best == 0:
        return np.asarray(camera_T_object, dtype=np.float64), extents
    c, s_ = round(np.cos(best * np.pi / 2.0)), round(np.sin(best * np.pi / 2.0))
    x = c * R[:, 0] + s_ * R[:, 1]
    y = -s_ * R[:, 0] + c * R[:, 1]
    T = np.array(camera_T_object, dtype=np.float64)
    T[:3, :3] = np.stack([x, y, R[:, 2]], axis=1)
    return T, ((ey, ex, ez) if best % 2 else (ex, ey, ez))


def _min_area_rectangle(xy: NDArray[np.float64]) -> tuple[float, float]:
    """Angle (rad) of one side of the minimum-area rectangle enclosing (N, 2) points, and
    its area. Degenerate inputs (fewer than 3 distinct points, collinear) use PCA."""
    try:
        hull = ConvexHull(xy)
        pts = xy[hull.vertices]
    except (QhullError, ValueError):
        centred = xy - xy.mean(axis=0)
        w, vec = np.linalg.eigh(centred.T @ centred)
        major = vec[:, int(np.argmax(w))]
        return float(np.arctan2(major[1], major[0])), 0.0
    edges = np.roll(pts, -1, axis=0) - pts
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2.0))
    c, s = np.cos(angles), np.sin(angles)
    # project the hull on each candidate orientation: (A, N)
    px = np.outer(c, pts[:, 0]) + np.outer(s, pts[:, 1])
    py = np.outer(-s, pts[:, 0]) + np.outer(c, pts[:, 1])
    areas = (px.max(axis=1) - px.min(axis=1)) * (py.max(axis=1) - py.min(axis=1))
    best = int(np.argmin(areas))
    return float(angles[best]), float(areas[best])


def visible_fraction(mesh_camera: TriangleMesh, seen_vertices: NDArray[np.bool_]) -> float:
    """Area-weighted fraction of the mesh surface that the camera observed.

    A face counts by the fraction of its vertices that were observed
    (``seen_vertices``, from :func:`observed_in_frame`: the one image projection of the
    object's mesh, shared with the collision padding).

    Args:
        mesh_camera: mesh in the camera optical frame, metres.
        seen_vertices: (V,) bool per vertex of ``mesh_camera``.

    Returns:
        Fraction in [0, 1]; 0.0 for an empty mesh.

    Raises:
        LayoutError: ``seen_vertices`` does not have one flag per vertex.
    """
    seen = np.asarray(seen_vertices, dtype=bool)
    if seen.shape != (len(mesh_camera.vertices),):
        raise LayoutError(f"{seen.shape} seen flags for {len(mesh_camera.vertices)} vertices")
    if len(mesh_camera.faces) == 0:
        return 0.0
    areas, _ = face_areas_and_centroids(mesh_camera)
    total = float(areas.sum())
    if not np.isfinite(total) or total <= 0.0:
        return 0.0
    face_seen = seen[np.asarray(mesh_camera.faces)].mean(axis=1)
    return float(np.clip((areas * face_seen).sum() / total, 0.0, 1.0))


def observed_in_frame(
    vertices_camera: NDArray[np.floating], frame: RGBDFrame, mask: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """(V,) bool: a camera-frame vertex projects into ``mask`` and agrees with the measured
    depth there within ``VISIBILITY_DEPTH_TOL`` (single-frame "observed"); all False when
    the mask, depth and camera sizes differ."""
    v = np.asarray(vertices_camera, dtype=np.float64).reshape(-1, 3)
    depth = np.asarray(frame.depth)
    m = np.asarray(mask, dtype=bool)
    cam = frame.camera
    if m.shape != depth.shape or depth.shape != (cam.height, cam.width) or len(v) == 0:
        return np.zeros(len(v), dtype=bool)
    ui, vi, inside = cam.pixel_indices(v[:, 0], v[:, 1], v[:, 2])
    d = depth[vi, ui].astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(inside & m[vi, ui] & (np.abs(d - v[:, 2]) <= C.VISIBILITY_DEPTH_TOL), dtype=bool)
