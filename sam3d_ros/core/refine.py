"""Surfaces that honour the measured depth: carve seen-free space, fill the seen surface,
snap it onto the depth.

A 32^3 prediction places its surface to about a voxel (5-9 mm); the depth camera measured
the seen part of the object to about a millimetre. Three steps give the measurement back:

* :func:`carve_seen_free` (on the :class:`VoxelShape`, before meshing): a voxel whose centre
  lies in front of the measured depth of the pixel it projects to, by more than a margin,
  was seen through by the camera and is emptied, whatever object that pixel belongs to. The
  depth is min-filtered over ``FREE_SPACE_FILTER_PX`` first, so a voxel is carved only when
  every pixel around its projection saw past it (mixed pixels at silhouettes carve nothing).
  Pixels without depth carve nothing.
* :func:`fill_observed` (on the :class:`VoxelShape`, after carving): voxels that hold the
  object's filtered depth points and join the predicted shape are occupied, so a part the
  network under-predicts (thin, or unlike anything it was trained on) keeps the surface the
  camera measured; only from points whose depth noise is well under a voxel.
* :func:`snap_to_depth` (on the camera-frame mesh, after meshing): a vertex that faces the
  camera, projects into the object's *trusted* pixels (those of its filtered observation
  points: the eroded mask without outliers) and lies within a band of the measured depth
  there is moved along its camera ray onto the locally averaged measured depth (weight 1
  inside ``band``, falling linearly to 0 at ``2 * band``, so the snapped patch joins the
  rest of the surface without a step).

Both work in the camera optical frame (metres); neither moves anything the camera did not
observe, so the completed back of the object stays the network's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sam3d_ros.core import constants as C
from sam3d_ros.core.frames import invert_transform, transform_points
from sam3d_ros.core.types import ObjectObservation, RGBDFrame, SupportPlane, TriangleMesh, VoxelShape

logger = logging.getLogger(__name__)


class RefinementError(ValueError):
    """Inputs the refinement cannot use (mismatched image sizes, malformed mesh or grid)."""


@dataclass(frozen=True)
class SnapResult:
    """Outcome of :func:`snap_to_depth`.

    Attributes:
        mesh: the refined mesh (camera frame, metres; same faces).
        snapped: number of vertices moved (weight > 0).
        mean_shift_m: mean |displacement| of the moved vertices, metres (0.0 when none).
    """

    mesh: TriangleMesh
    snapped: int
    mean_shift_m: float


def free_space_depth(depth: NDArray[np.floating]) -> NDArray[np.float32]:
    """(H, W) float32: per pixel the nearest measured depth within ``FREE_SPACE_FILTER_PX``
    (a min filter, the image edge repeated), 0.0 where any pixel of the window has no depth
    (no evidence of free space there).

    The square window is separable: one 3-pixel minimum along each axis per pixel of radius,
    on array slices (about 0.9 ms for 640x480 on one core; ``scipy.ndimage.minimum_filter``,
    identical output, 6 ms)."""
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise RefinementError(f"depth must be (H, W), got shape {d.shape}")
    with np.errstate(invalid="ignore"):
        out = np.where((d > 0) & (d < np.inf), d, np.float32(0.0))  # NaN compares False
    for axis in (0, 1):
        for _ in range(C.FREE_SPACE_FILTER_PX):
            src = out
            out = src.copy()
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            np.minimum(out[tuple(hi)], src[tuple(lo)], out=out[tuple(hi)])
            np.minimum(out[tuple(lo)], src[tuple(hi)], out=out[tuple(lo)])
    return out


def free_space_depth_at(
    near: NDArray[np.float32], ui: NDArray[np.integer], vi: NDArray[np.integer], inside: NDArray[np.bool_]
) -> NDArray[np.float32]:
    """(N,) float32 free-space depth (``near``: the frame's :func:`free_space_depth`, (H,
    W)) at the pixels (``ui``, ``vi``) (integer, any shape N) where ``inside``; 0.0 (no
    evidence of free space) at the others, whose indices may lie outside the image."""
    h, w = near.shape
    u = np.where(inside, ui, 0).astype(np.intp)
    v = np.where(inside, vi, 0).astype(np.intp)
    out = near.reshape(-1)[np.clip(v, 0, h - 1) * w + np.clip(u, 0, w - 1)]
    return np.where(inside, out, np.float32(0.0)).astype(np.float32, copy=False)


def carve_seen_free(
    shape: VoxelShape, frame: RGBDFrame, margin_m: float, near: NDArray[np.float32] | None = None
) -> tuple[VoxelShape, int]:
    """Empty the voxels of ``shape`` the camera saw through (see the module docstring).

    Args:
        shape: the predicted occupancy.
        frame: the frame (depth (H, W) metres and intrinsics of the same size).
        margin_m: a voxel centre is free when it lies more than this in front of the depth.
        near: the frame's :func:`free_space_depth` (H, W) when the caller has it (one per
            frame for all objects and the fusion); None: computed here.

    Returns:
        (carved shape, number of voxels emptied that had occupancy >= 0.5).

    Raises:
        RefinementError: the depth image (or ``near``) does not match the camera's image size.
    """
    cam = frame.camera
    depth = np.asarray(frame.depth)
    if depth.shape != (cam.height, cam.width):
        raise RefinementError(f"depth {depth.shape} does not match the camera {(cam.height, cam.width)}")
    if near is not None and near.shape != depth.shape:
        raise RefinementError(f"free-space depth {near.shape} does not match the depth {depth.shape}")
    occ = np.asarray(shape.occupancy, dtype=np.float32)
    idx = np.argwhere(occ > C.CARVE_MIN_OCCUPANCY)
    if len(idx) == 0:
        return shape, 0
    centres_g = shape.origin + (idx + 0.5) * shape.voxel_size
    p = transform_points(shape.camera_T_grid, centres_g)
    ui, vi, inside = cam.pixel_indices(p[:, 0], p[:, 1], p[:, 2])
    if not np.any(inside):
        return shape, 0
    d = free_space_depth_at(free_space_depth(depth) if near is None else near, ui, vi, inside)
    free = (d > 0) & (p[:, 2] < d - margin_m)
    if not np.any(free):
        return shape, 0
    out = occ.copy()
    fi = idx[free]
    removed = int((out[fi[:, 0], fi[:, 1], fi[:, 2]] >= 0.5).sum())
    out[fi[:, 0], fi[:, 1], fi[:, 2]] = 0.0
    carved = VoxelShape(
        occupancy=out,
        voxel_size=shape.voxel_size,
        origin=shape.origin,
        camera_T_grid=shape.camera_T_grid,
        confidence=shape.confidence,
    )
    return carved, removed


def fill_observed(
    shape: VoxelShape, obs: ObjectObservation, plane: SupportPlane | None, threshold: float
) -> tuple[VoxelShape, int]:
    """Occupy the voxels that hold the object's measured surface and join its shape.

    A network that under-predicts a part it never saw in training (a thin plate, a flat
    wrench: one or two voxels thick) leaves observed surface outside its iso-surface, and no
    later step can put it back. Here every voxel holding one of ``obs.points`` (the filtered
    observation, so the mask's outliers are already gone; points within
    ``PLANE_CONTACT_TOL`` of the support plane are the plane, not the object, and points whose
    depth noise measured on the plane, :meth:`SupportPlane.axial_sigma`, exceeds
    ``OBSERVED_FILL_MAX_SIGMA_VOXELS`` voxels are too noisy to place a surface) is set to
    ``OBSERVED_FILL_OCCUPANCY`` when it belongs to a 26-connected component of (observed or
    occupied) voxels that holds part of the predicted shape (occupancy >= ``threshold``):
    surface that continues the prediction is kept, while a stray cluster of depth points
    away from the predicted object (another surface seen through the mask) adds nothing.

    Args:
        shape: the predicted occupancy.
        obs: the object's observation (points in the camera frame, metres).
        plane: the support plane, or None.
        threshold: the meshing iso-level (``occupancy_threshold``).

    Returns:
        (filled shape, number of voxels raised to the fill value).
    """
    occ = np.asarray(shape.occupancy, dtype=np.float32)
    solid = occ >= threshold
    pts = np.asarray(obs.points, dtype=np.float64).reshape(-1, 3)
    if plane is not None and len(pts):
        keep = plane.signed_distance(pts) > C.PLANE_CONTACT_TOL
        # a point no more precise than the grid puts no surface of its own
        keep &= plane.axial_sigma(pts[:, 2]) <= C.OBSERVED_FILL_MAX_SIGMA_VOXELS * shape.voxel_size
        pts = pts[keep]
    if not solid.any() or len(pts) == 0:
        return shape, 0
    g = transform_points(invert_transform(shape.camera_T_grid), pts)
    idx = np.floor((g - shape.origin) / shape.voxel_size).astype(np.int64)
    idx = idx[np.all((idx >= 0) & (idx < np.array(occ.shape)), axis=1)]
    observed = np.zeros(occ.shape, dtype=bool)
    observed[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    add = observed & ~solid
    if not add.any():
        return shape, 0
    comp, _ = ndimage.label(observed | solid, structure=np.ones((3, 3, 3), dtype=bool))
    joined = np.zeros(int(comp.max()) + 1, dtype=bool)
    joined[np.unique(comp[solid])] = True
    add &= joined[comp]
    n_add = int(add.sum())
    if n_add == 0:
        return shape, 0
    out = occ.copy()
    out[add] = np.maximum(out[add], np.float32(C.OBSERVED_FILL_OCCUPANCY))
    filled = VoxelShape(
        occupancy=out,
        voxel_size=shape.voxel_size,
        origin=shape.origin,
        camera_T_grid=shape.camera_T_grid,
        confidence=shape.confidence,
    )
    return filled, n_add


def vertex_normals(mesh: TriangleMesh) -> NDArray[np.float64]:
    """(V, 3) unit area-weighted vertex normals (outward for counter-clockwise faces; zero
    for unreferenced vertices)."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return np.divide(vn, norm, out=np.zeros_like(vn), where=norm > 0)


@dataclass(frozen=True)
class TrustedDepth:
    """The object's measured depth averaged over ``SNAP_SMOOTHING_PX`` (only its trusted
    pixels: those of ``obs.points``), on the crop of the image that holds them.

    Attributes:
        mean: (h, w) float64 metres, the crop's averaged depth.
        valid: (h, w) bool, a trusted pixel with at least ``SNAP_MIN_NEIGHBOURS`` trusted
            pixels in its window.
        u0, v0: image column and row of the crop's pixel (0, 0).
    """

    mean: NDArray[np.float64]
    valid: NDArray[np.bool_]
    u0: int
    v0: int

    def lookup(
        self, ui: NDArray[np.intp], vi: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """(depth, valid) at image pixels (ui, vi); invalid outside the crop."""
        h, w = self.valid.shape
        lu, lv = ui - self.u0, vi - self.v0
        inside = (lu >= 0) & (lu < w) & (lv >= 0) & (lv < h)
        lu, lv = np.where(inside, lu, 0), np.where(inside, lv, 0)
        return self.mean[lv, lu], inside & self.valid[lv, lu]


def trusted_depth(obs: ObjectObservation, shape_hw: tuple[int, int]) -> TrustedDepth | None:
    """The :class:`TrustedDepth` of ``obs`` in an image of ``shape_hw`` (H, W); None when
    the observation has no point inside the image."""
    h, w = shape_hw
    pix = np.asarray(obs.pixels, dtype=np.int64).reshape(-1, 2)
    z = np.asarray(obs.points, dtype=np.float64).reshape(-1, 3)[:, 2]
    ok = (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h) & np.isfinite(z)
    if not np.any(ok):
        return None
    pix, z = pix[ok], z[ok]
    r = C.SNAP_SMOOTHING_PX
    u0, v0 = int(pix[:, 0].min()) - r, int(pix[:, 1].min()) - r
    cw, ch = int(pix[:, 0].max()) + r + 1 - u0, int(pix[:, 1].max()) + r + 1 - v0
    zimg = np.zeros((ch, cw), dtype=np.float64)
    cnt = np.zeros((ch, cw), dtype=np.float64)
    zimg[pix[:, 1] - v0, pix[:, 0] - u0] = z
    cnt[pix[:, 1] - v0, pix[:, 0] - u0] = 1.0
    size = 2 * r + 1
    # window means of depth*count and count: their ratio is the mean trusted depth
    zs = ndimage.uniform_filter(zimg, size=size, mode="constant")
    cs = ndimage.uniform_filter(cnt, size=size, mode="constant")
    valid = (cnt > 0) & (cs * size * size >= C.SNAP_MIN_NEIGHBOURS - 1e-6)
    mean = np.divide(zs, cs, out=np.zeros_like(zs), where=cs > 0)
    return TrustedDepth(mean=mean, valid=valid, u0=u0, v0=v0)


def snap_to_depth(mesh: TriangleMesh, frame: RGBDFrame, obs: ObjectObservation, band_m: float) -> SnapResult:
    """Move the seen part of ``mesh`` (camera frame) onto the measured depth (see the module
    docstring).

    Args:
        mesh: the object's mesh in the camera optical frame, metres.
        frame: the frame (intrinsics, image size).
        obs: the object's observation (its filtered points and their pixels).
        band_m: vertices within this of the measured depth snap fully; up to twice this,
            partly; farther ones (the back, or another surface along the ray) stay.

    Raises:
        RefinementError: a mesh without vertices or faces.
    """
    v = np.asarray(mesh.vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0 or len(mesh.faces) == 0:
        raise RefinementError(f"cannot snap a mesh with vertices {v.shape} and {len(mesh.faces)} faces")
    cam = frame.camera
    trusted = trusted_depth(obs, (cam.height, cam.width))
    if trusted is None:
        return SnapResult(mesh=mesh, snapped=0, mean_shift_m=0.0)
    ui, vi, inside = cam.pixel_indices(v[:, 0], v[:, 1], v[:, 2])
    zmean, valid = trusted.lookup(ui, vi)
    cand = inside & valid
    if not np.any(cand):
        return SnapResult(mesh=mesh, snapped=0, mean_shift_m=0.0)
    ray = v / np.linalg.norm(v, axis=1, keepdims=True)
    facing = np.einsum("ij,ij->i", vertex_normals(mesh), ray) < -C.SNAP_MIN_FACING_COS
    dz = zmean - v[:, 2]
    weight = np.clip(2.0 - np.abs(dz) / band_m, 0.0, 1.0)
    weight = np.where(cand & facing, weight, 0.0)
    moved = weight > 0
    if not np.any(moved):
        return SnapResult(mesh=mesh, snapped=0, mean_shift_m=0.0)
    # along the camera ray: scale the point so that its depth becomes z + weight * dz
    scale = 1.0 + weight * dz / v[:, 2]
    out = v * scale[:, None]
    shift = np.linalg.norm(out[moved] - v[moved], axis=1)
    return SnapResult(
        mesh=TriangleMesh(vertices=out, faces=mesh.faces),
        snapped=int(moved.sum()),
        mean_shift_m=float(shift.mean()),
    )
