"""Geometric (non-learned) amodal shape completion of one observed object.

The visible surface of an object is voxelised in a grid frame ``G`` whose z axis is the
support-plane normal (or the camera's "up" when there is no plane) and whose x/y axes are
the principal axes of the observed footprint. The hidden part is then guessed with three
simple priors and one hard constraint, in the order (a), (b), (d), (c), (e):

(a) the observed surface points mark their voxels occupied, grown horizontally by the
    silhouette loss of the mask erosion (``mask_erosion_px + 1`` pixels at the object's depth);
(b) extrusion: objects rest on the support plane, so every occupied column is filled down
    to the plane, never more than ``config.max_completion_depth`` below the lowest observed
    point; an object found resting on another object (``scene.support_heights``) is filled
    down to that object's top only (its contact height less ``SUPPORT_CUT_TOL``, never above
    the lowest observed point). Without a plane "down" is unknown and nothing is extruded;
(d) free-space carving: a voxel whose centre projects onto a pixel whose measured depth is
    beyond the voxel (the camera saw through it) is empty, except on occluder pixels and
    pixels without valid depth (unknown); voxels projecting into the object's own mask more
    than ``max_completion_depth`` behind the measured depth are empty; voxels below the
    support plane are empty (the grid starts at the plane);
(c) symmetry (``config.use_symmetry``): the carved occupancy is point-reflected about a
    vertical axis (a 180-degree turn: a symmetry of boxes at any yaw, cylinders, spheres,
    bottles). The axis lies on the lateral centre of the footprint; along the horizontal
    viewing direction it is searched between the middle of the observed depth range and
    "front + lateral width / 2" (the hidden depth extent is assumed to be about the visible
    lateral extent, capped at ``max_completion_depth / 2``): the deepest candidate whose
    reflected *observed surface* lands in observed free space (nearly) as rarely as the
    best one. Reflected columns that reach into free space are dropped whole, the union is
    closed by filling grid rows between their first and last occupied voxel, and the
    reflected free space carves the unobserved remainder (e.g. the space under a ball's far
    side); finally (d) is applied again;
(e) a light Gaussian smoothing gives a clean iso-surface.

All lengths are metres; ``camera_T_grid`` maps ``G`` to the camera optical frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sam3d_ros.core import constants as C
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.frames import make_transform
from sam3d_ros.core.object_frame import support_axes
from sam3d_ros.core.types import ObjectObservation, SceneContext, VoxelShape

logger = logging.getLogger(__name__)


class CompletionError(ValueError):
    """Raised for observations that give no shape (points not (N, 3), too few finite points,
    an object too large for a grid, everything carved away); the message names the values.
    The geometric backend turns it into a skipped object with this message as the detail."""


def complete_shape(scene: SceneContext, obs: ObjectObservation, config: PipelineConfig) -> VoxelShape:
    """Amodal occupancy of one object from its observation (see the module docstring).

    Args:
        scene: the frame (depth used for free-space carving), the support plane and the
            contact heights of objects resting on other objects.
        obs: the object's filtered points (N, 3) in the camera frame (m), its mask and
            occluder mask (H, W) bool.
        config: uses ``mesh_resolution``, ``min_voxel_size``, ``use_symmetry``,
            ``max_completion_depth``.

    Returns:
        A :class:`VoxelShape` (float32 occupancy in [0, 1], ``GRID_PAD_VOXELS`` empty voxels
        on every side).

        ``confidence = min(1, N / CONFIDENCE_FULL_POINTS) * (1 - 0.5 * completed)`` where
        N is the number of observed points and ``completed`` the fraction of the final
        voxels that were added by symmetry (not observed or extruded).

    Raises:
        CompletionError: ``obs.points`` is not an (N, 3) array, fewer than
            ``MIN_OBJECT_POINTS`` of them are finite, the grid would exceed ``MAX_GRID_DIM``
            voxels along an axis, or every voxel was carved away.
    """
    pts = np.asarray(obs.points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise CompletionError(f"points must have shape (N, 3), got {pts.shape}")
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) < C.MIN_OBJECT_POINTS:
        raise CompletionError(
            f"object {obs.instance_id}: {len(pts)} finite points of {len(obs.points)}, "
            f"need >= {C.MIN_OBJECT_POINTS}"
        )
    mcd = config.max_completion_depth

    # ---- grid frame G ------------------------------------------------------------------
    axes = support_axes(pts, scene.plane)  # the same axes as the network's encoding
    if scene.plane is not None and not axes.plane_used:
        logger.debug(
            "object %d: only %d of %d points above the support plane; ignoring the plane",
            obs.instance_id,
            axes.above_plane,
            len(pts),
        )
    R, base_point, pts = axes.R, axes.base, axes.points
    camera_T_grid = make_transform(R, base_point)
    floor_h: float | None = None
    if axes.heights is not None:
        bottom = float(axes.heights.min())
        floor_h = max(0.0, bottom - mcd)
        ground = scene.support_heights.get(obs.instance_id)
        if ground is not None:  # resting on another object: the grid starts on its top
            floor_h = max(floor_h, min(ground - C.SUPPORT_CUT_TOL, bottom))
    P = (pts - base_point) @ R  # (N, 3) in G
    plane_used = floor_h is not None
    if floor_h is None:
        floor_h = float(P[:, 2].min())

    # silhouette loss: the mask erosion plus one boundary pixel (flying-pixel removal, grazing
    # depth), in metres at the object's median depth
    grow_m = (config.mask_erosion_px + 1) * float(np.median(pts[:, 2])) / scene.frame.camera.fx

    # ---- symmetry centre candidates (in G's xy plane) ------------------------------------
    line = _symmetry_line(P, (-base_point) @ R, grow_m, mcd)

    # ---- grid bounds and voxel size ---------------------------------------------------------
    xy = P[:, :2]
    if config.use_symmetry:
        xy = np.vstack([xy, 2.0 * line.centre_xy(line.t_far) - xy])
    lo = np.array([xy[:, 0].min() - grow_m, xy[:, 1].min() - grow_m, floor_h])
    hi = np.array([xy[:, 0].max() + grow_m, xy[:, 1].max() + grow_m, max(float(P[:, 2].max()), floor_h)])
    longest = float((hi - lo).max())
    voxel = min(max(longest / config.mesh_resolution, config.min_voxel_size), C.MAX_VOXEL_SIZE)
    pad = C.GRID_PAD_VOXELS
    # checked in floating point: a huge extent must not wrap around in the integer cast
    dims_f = np.floor((hi - lo) / voxel) + 1 + 2 * pad
    if not float(dims_f.max()) <= C.MAX_GRID_DIM:
        raise CompletionError(
            f"object {obs.instance_id}: grid {dims_f.tolist()} exceeds MAX_GRID_DIM={C.MAX_GRID_DIM} "
            f"(extent {longest:.3f} m, voxel {voxel:.4f} m)"
        )
    dims = dims_f.astype(np.int64)
    origin = lo - pad * voxel
    nx, ny, nz = (int(v) for v in dims)

    # (a) observed surface voxels, grown horizontally by the silhouette loss (carving trims
    # the excess wherever the camera sees past it)
    idx = np.floor((P - origin) / voxel).astype(np.int64)
    idx = np.clip(idx, 0, dims - 1)
    occ0 = np.zeros((nx, ny, nz), dtype=bool)
    occ0[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    occ0_seen = occ0
    grow_vox = round(grow_m / voxel)
    if grow_vox > 0:
        occ0 = ndimage.binary_dilation(occ0, structure=_disk_xy(grow_vox))

    # (b) extrusion down to the floor
    k = np.arange(nz)
    has: NDArray[np.bool_] = np.asarray(occ0.any(axis=2))
    top = nz - 1 - np.argmax(occ0[:, :, ::-1], axis=2)
    occ1 = has[:, :, None] & (k[None, None, :] >= pad) & (k[None, None, :] <= top[:, :, None])
    if not plane_used:  # "down" is only a guess without a support plane: no extrusion
        occ1 = occ0

    # (d, precomputed) visibility classification of every voxel centre
    free, too_deep = _classify_voxels(scene, obs, R, base_point, origin, voxel, (nx, ny, nz), mcd)

    # (d) free-space carving of the observed + extruded occupancy
    occ1 = occ1 & ~free & ~too_deep

    # (c) symmetry about the vertical axis through centre_xy(t_far): reflected columns that
    # reach into observed free space are dropped whole; the reflected free space carves the
    # unobserved (extruded) part, e.g. the space under a ball's far side
    occ2 = (
        _apply_symmetry(obs.instance_id, occ0_seen, occ1, free, line, origin, voxel, R, base_point)
        if config.use_symmetry
        else occ1
    )
    occ3 = occ2 & ~free & ~too_deep
    n_final = int(occ3.sum())
    if n_final == 0:
        raise CompletionError(
            f"object {obs.instance_id}: every voxel of the {nx}x{ny}x{nz} grid was carved away "
            f"({int(occ0_seen.sum())} voxels observed, voxel {voxel:.4f} m)"
        )

    # (e) smoothing
    occf = ndimage.gaussian_filter(occ3.astype(np.float32), sigma=C.SMOOTH_SIGMA_VOXELS, mode="constant")
    occf[:1], occf[-1:], occf[:, :1], occf[:, -1:], occf[:, :, :1], occf[:, :, -1:] = 0, 0, 0, 0, 0, 0
    np.clip(occf, 0.0, 1.0, out=occf)

    completed = float((occ3 & ~occ1).sum()) / n_final
    confidence = min(1.0, len(pts) / C.CONFIDENCE_FULL_POINTS) * (1.0 - 0.5 * completed)
    return VoxelShape(
        occupancy=occf,
        voxel_size=float(voxel),
        origin=origin.astype(np.float64),
        camera_T_grid=camera_T_grid,
        confidence=float(np.clip(confidence, 0.0, 1.0)),
    )


@dataclass(frozen=True)
class _SymmetryLine:
    """Where the vertical symmetry axis may stand, in ``G``'s xy plane (metres): on the line
    ``centre_xy(t)`` along the horizontal viewing direction ``d`` through the middle of the
    observed width, between the observed middle ``t_mid`` and the farthest plausible
    ``t_far`` (equal for a top-down view)."""

    d: NDArray[np.float64]
    lat: NDArray[np.float64]
    lat_mid: float
    t_mid: float
    t_far: float

    def centre_xy(self, t: float) -> NDArray[np.float64]:
        """(2,) the axis position at ``t`` along ``d``."""
        return self.lat_mid * self.lat + t * self.d


def _symmetry_line(
    P: NDArray[np.float64], cam_G: NDArray[np.float64], grow_m: float, max_depth: float
) -> _SymmetryLine:
    """The symmetry-axis candidates of points ``P`` (N, 3) in ``G`` seen from ``cam_G``
    (3,): the axis lies behind the observed front, at most half the object's width (and
    half ``max_depth``) behind it."""
    centre_G = P.mean(axis=0)
    horiz = centre_G[:2] - cam_G[:2]
    dist = float(np.linalg.norm(centre_G - cam_G))
    top_down = float(np.linalg.norm(horiz)) < C.TOP_DOWN_RATIO * max(dist, 1e-9)
    d = np.array([1.0, 0.0]) if top_down else horiz / np.linalg.norm(horiz)
    lat = np.array([-d[1], d[0]])
    lo_l, hi_l = np.percentile(P[:, :2] @ lat, C.COMPLETION_EXTENT_PERCENTILES)
    front, back = np.percentile(P[:, :2] @ d, C.COMPLETION_EXTENT_PERCENTILES)
    width = float(hi_l - lo_l) + 2.0 * grow_m
    t_mid = float(front + back) / 2.0
    t_far = t_mid if top_down else max(t_mid, float(front) + min(width / 2.0, max_depth / 2.0))
    return _SymmetryLine(d=d, lat=lat, lat_mid=float(lo_l + hi_l) / 2.0, t_mid=t_mid, t_far=t_far)


def _apply_symmetry(
    instance_id: int,
    seen: NDArray[np.bool_],
    occ: NDArray[np.bool_],
    free: NDArray[np.bool_],
    line: _SymmetryLine,
    origin: NDArray[np.float64],
    voxel: float,
    R: NDArray[np.float64],
    base_point: NDArray[np.float64],
) -> NDArray[np.bool_]:
    """Step (c): mirror ``occ`` about the vertical axis on ``line`` that best agrees with the
    observed free space. Reflected columns that reach into free space are dropped whole;
    the reflected free space carves the unobserved (extruded) part, e.g. the space under a
    ball's far side. ``seen`` are the observed surface voxels."""
    t_far, t_mid = line.t_far, line.t_mid
    shell = np.argwhere(seen & occ)
    n_cand = int(min(C.MIRROR_CANDIDATES, max(1, np.ceil((t_far - t_mid) / (0.5 * voxel)) + 1)))
    ts = np.linspace(t_far, t_mid, n_cand)
    fracs = np.array(
        [_reflected_free_fraction(shell, free, line.centre_xy(float(t)), origin, voxel) for t in ts]
    )
    # the deepest candidate whose reflected surface is (nearly) as consistent as the best
    t_best = float(ts[int(np.argmax(fracs <= fracs.min() + C.MIRROR_FREE_FRACTION_SLACK))])
    logger.debug(
        "object %d: symmetry candidates t=%s, reflected surface in free space %s",
        instance_id,
        np.round(ts, 4).tolist(),
        np.round(fracs, 3).tolist(),
    )
    c_xy = line.centre_xy(t_best)
    new = _point_reflect(occ, c_xy, origin, voxel) & ~occ
    bad_cols: NDArray[np.bool_] = np.asarray((new & free).any(axis=2))
    new_cols = new.any(axis=2)
    out = _fill_rows(occ | (new & ~bad_cols[:, :, None]))
    protect = ndimage.binary_dilation(seen)
    out &= ~(_point_reflect(free, c_xy, origin, voxel) & ~protect)
    logger.debug(
        "object %d: symmetry axis at t=%.4f m (range %.4f..%.4f) through camera-frame point %s; "
        "%d of %d reflected columns contradicted",
        instance_id,
        t_best,
        t_mid,
        t_far,
        np.round(base_point + R[:, :2] @ c_xy, 4).tolist(),
        int(bad_cols.sum()),
        int(new_cols.sum()),
    )
    return out


def _disk_xy(radius: int) -> NDArray[np.bool_]:
    """(2r+1, 2r+1, 1) structuring element: a horizontal disk of ``radius`` voxels."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2 <= radius * radius + radius)[:, :, None]


def _classify_voxels(
    scene: SceneContext,
    obs: ObjectObservation,
    R: NDArray[np.float64],
    base_point: NDArray[np.float64],
    origin: NDArray[np.float64],
    voxel: float,
    dims: tuple[int, int, int],
    max_depth: float,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Project every voxel centre into the depth image.

    Returns:
        free: (NX, NY, NZ) bool, the camera saw a surface beyond the voxel (definitely empty).
        too_deep: (NX, NY, NZ) bool, the voxel projects into the object's own mask more than
            ``max_depth`` behind the observed depth.
    """
    nx, ny, nz = dims
    gx = origin[0] + (np.arange(nx) + 0.5) * voxel
    gy = origin[1] + (np.arange(ny) + 0.5) * voxel
    gz = origin[2] + (np.arange(nz) + 0.5) * voxel
    cam = [
        base_point[a]
        + R[a, 0] * gx[:, None, None]
        + R[a, 1] * gy[None, :, None]
        + R[a, 2] * gz[None, None, :]
        for a in range(3)
    ]
    xc, yc, zc = cam
    frame = scene.frame
    camera = frame.camera
    depth = np.asarray(frame.depth)
    ui, vi, inside = camera.pixel_indices(xc, yc, zc)
    meas = depth[vi, ui].astype(np.float64)
    with np.errstate(invalid="ignore"):
        known = inside & np.isfinite(meas) & (meas > 0)
    occluder = np.asarray(obs.occluder_mask, dtype=bool)
    own = np.asarray(obs.mask, dtype=bool)
    if occluder.shape == depth.shape:
        known &= ~occluder[vi, ui]
    margin = max(C.CARVE_MIN_MARGIN, C.CARVE_MARGIN_VOXELS * voxel)
    with np.errstate(invalid="ignore"):
        free = known & (meas > zc + margin)
        if own.shape == depth.shape:
            too_deep = known & own[vi, ui] & (zc - meas > max_depth)
        else:
            too_deep = np.zeros(dims, dtype=bool)
    return free, too_deep


def _point_reflect(
    occ: NDArray[np.bool_], centre_xy: NDArray[np.float64], origin: NDArray[np.float64], voxel: float
) -> NDArray[np.bool_]:
    """Occupancy turned by 180 degrees about the vertical axis through ``centre_xy`` (G),
    snapped to the grid (a flip plus an integer shift; cells leaving the grid are dropped)."""
    out = np.zeros_like(occ)
    flipped = occ[::-1, ::-1, :]
    shifts = []
    for a in range(2):
        n = occ.shape[a]
        # voxel i (centre origin + (i + .5) v) maps to index K - i with K = 2 (c - o) / v - 1
        big_k = int(np.rint(2.0 * (centre_xy[a] - origin[a]) / voxel - 1.0))
        shifts.append(big_k - (n - 1))
    src = []
    dst = []
    for a, s in enumerate(shifts):
        n = occ.shape[a]
        if abs(s) >= n:
            return out
        src.append(slice(max(-s, 0), n - max(s, 0)))
        dst.append(slice(max(s, 0), n - max(-s, 0)))
    out[dst[0], dst[1], :] = flipped[src[0], src[1], :]
    return out


def _reflected_free_fraction(
    cells: NDArray[np.int64],
    free: NDArray[np.bool_],
    centre_xy: NDArray[np.float64],
    origin: NDArray[np.float64],
    voxel: float,
) -> float:
    """Fraction of the (M, 3) voxel indices ``cells`` whose point reflection about the
    vertical axis through ``centre_xy`` lands in ``free`` (cells leaving the grid count as
    not free); 0.0 for no cells."""
    if len(cells) == 0:
        return 0.0
    kx = int(np.rint(2.0 * (centre_xy[0] - origin[0]) / voxel - 1.0))
    ky = int(np.rint(2.0 * (centre_xy[1] - origin[1]) / voxel - 1.0))
    i = kx - cells[:, 0]
    j = ky - cells[:, 1]
    ok = (i >= 0) & (i < free.shape[0]) & (j >= 0) & (j < free.shape[1])
    return float(free[i[ok], j[ok], cells[ok, 2]].sum()) / len(cells)


def _fill_rows(occ: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Fill every grid row along x and along y between its first and last occupied voxel
    (union of both), closing a front shell and its reflected back shell."""
    out = occ.copy()
    for axis in (0, 1):
        n = occ.shape[axis]
        has = occ.any(axis=axis)
        first = np.argmax(occ, axis=axis)
        last = n - 1 - np.argmax(np.flip(occ, axis=axis), axis=axis)
        shape = [1, 1, 1]
        shape[axis] = n
        i = np.arange(n).reshape(shape)
        out |= (
            np.expand_dims(has, axis) & (i >= np.expand_dims(first, axis)) & (i <= np.expand_dims(last, axis))
        )
    return out
