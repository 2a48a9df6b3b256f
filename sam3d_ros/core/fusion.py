"""Multi-view fusion of one tracked object's shape in a fixed frame.

A :class:`TrackVolume` is a dense voxel grid fixed in the fixed frame ``F`` (the planning
frame; the camera frame for a static camera), axis-aligned in an anchor frame ``A``: the
first shape's own grid, as it lay in ``F`` (so the first frame's shape is taken over
voxel for voxel, without resampling, and a static camera's later shapes, with nearly the
same orientation, lose little), that accumulates per voxel

* observation evidence from the depth image (projective truncated signed distance): a
  voxel the camera saw through (the min-filtered depth of
  :func:`~sam3d_ros.core.refine.free_space_depth`, as the single-frame carving uses, beyond
  it by more than half the truncation band ``tau`` and by more than the carving margin,
  at any pixel) is observed *free* (occupancy 0, weight 1); a voxel within the band on the
  object's trusted pixels (the observation's eroded, filtered surface pixels; not mask
  bleed onto the table) is observed *surface* with occupancy ``0.5 + (z_voxel -
  z_measured) / tau`` (so the 0.5 iso-surface lies on the measured surface), at full
  weight in front of the measured surface and at a weight falling to 0 at the band's end
  behind it; anything else (behind the surface, occluded, no depth, outside the image) is
  unobserved;
* the backend's completed occupancy (the "guess"), resampled every frame inside the
  shape's own grid (0 outside it: the backend put the whole object in its grid).

The fused occupancy of a voxel is ``(obs_sum + w * guess_mean) / (obs_weight + w)`` with
``w = FUSION_GUESS_WEIGHT``: the mean guess alone where nothing was observed; where a
voxel was observed the measurements win (one free observation already takes it below
the iso-level) and the guess's share ``w / (n + w)`` shrinks with every observation ``n``.
The guess mean weighs each frame's guess by the object's trusted pixels in that frame (a
frame that saw more of it guessed from more evidence). Until the viewing directions onto
the object span ``FUSION_MIN_VIEW_SPREAD_DEG`` (a static camera, or a wrist camera that
has not moved yet) the published occupancy (:meth:`TrackVolume.occupancy`) is the guess
mean alone: more views from one viewpoint measure the same surface again, and the
single-frame shapes were already carved and are snapped to each frame's depth; the
observations are integrated all the same (the motion test reads the fused evidence,
:meth:`TrackVolume.fused_occupancy`).
The grid grows (integer voxel shifts) to cover new shapes; its voxel size is the first
shape's. Growth is bounded (``FUSION_MAX_GROWTH``): a shape whose grid box would need more
is integrated inside the grid grown only to cover the frame's measured surface (the
guess's part outside the grid is dropped: a low-visibility object's guessed layout can
jump from frame to frame while the object stands still), and only a measured surface that
needs more restarts the volume (:class:`FusionGrowthError`).

Cost: every step is separable or a flat gather: the voxel centres of an axis-aligned grid
under a rigid transform are sums of three 1-D arrays per coordinate, so a frame costs a
few vectorised passes over the grid (about 2-4 ms for 10^5 voxels on one core) instead of
materialising and transforming an (N, 3) array of centres.

All lengths metres; ``fixed_T_camera`` maps camera-frame points into ``F``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sam3d_ros.core import constants as C
from sam3d_ros.core.frames import invert_transform, make_transform, transform_points
from sam3d_ros.core.refine import free_space_depth, free_space_depth_at
from sam3d_ros.core.types import RGBDFrame, VoxelShape

logger = logging.getLogger(__name__)

_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
#: The 27 offsets of a voxel's 3x3x3 neighbourhood.
_NEIGHBOURS = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.intp)


class FusionError(ValueError):
    """Raised when a shape cannot be fused (grid too large, non-finite transform)."""


class FusionGrowthError(FusionError):
    """Raised when covering a frame's measured surface would grow a track's grid beyond
    ``FUSION_MAX_GROWTH`` times its first size: the object moved, or the camera pose
    drifted, and the volume should restart rather than smear (and memory stays bounded)."""


def shape_points(shape: VoxelShape, level: float) -> NDArray[np.float64]:
    """Centres (N, 3) of the voxels of ``shape`` with occupancy above ``level``, in the camera
    frame (metres); empty (0, 3) when none."""
    occ = np.asarray(shape.occupancy)
    idx = np.argwhere(occ > level)
    if len(idx) == 0:
        return np.zeros((0, 3))
    g = np.asarray(shape.origin, dtype=np.float64) + (idx + 0.5) * float(shape.voxel_size)
    return transform_points(np.asarray(shape.camera_T_grid, dtype=np.float64), g)


def _shape_box(shape: VoxelShape, target_T_camera: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    """AABB (lo, hi) of a shape's whole grid box in the frame ``target_T_camera`` maps
    camera points into."""
    dims = np.asarray(shape.occupancy.shape, dtype=np.float64)
    o = np.asarray(shape.origin, dtype=np.float64)
    corners = o + _CORNERS * dims * shape.voxel_size
    pts = transform_points(target_T_camera @ np.asarray(shape.camera_T_grid, dtype=np.float64), corners)
    return pts.min(axis=0), pts.max(axis=0)


def _separable(
    m: NDArray[np.float64],
    origin: NDArray[np.float64],
    voxel_size: float,
    lo: NDArray[np.intp],
    hi: NDArray[np.intp],
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """The three coordinates, each (hi - lo) shaped float32, of ``m`` applied to the centres
    of voxels ``lo <= (i, j, k) < hi`` of an axis-aligned grid (corner ``origin``, edge
    ``voxel_size``): ``m @ (origin + (idx + 0.5) * voxel_size)`` evaluated as a sum of three
    broadcast 1-D arrays per coordinate."""
    r, t = m[:3, :3], m[:3, 3]
    steps = [
        (np.arange(int(lo[a]), int(hi[a]), dtype=np.float64) + 0.5) * voxel_size + origin[a] for a in range(3)
    ]
    out = []
    for c in range(3):
        ax = (r[c, 0] * steps[0] + t[c]).astype(np.float32)[:, None, None]
        ay = (r[c, 1] * steps[1]).astype(np.float32)[None, :, None]
        az = (r[c, 2] * steps[2]).astype(np.float32)[None, None, :]
        out.append(ax + ay + az)
    return out[0], out[1], out[2]


def _pixels_in_image(pixels: NDArray[np.integer], w: int, h: int) -> NDArray[np.intp]:
    """The (u, v) rows of ``pixels`` ((N, 2) integer) that lie in a ``w`` x ``h`` image."""
    px = np.asarray(pixels, dtype=np.intp).reshape(-1, 2)
    return px[(px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)]


class TrackVolume:
    """Fused evidence of one object (see the module docstring). Not thread-safe.

    Attributes:
        voxel_size: voxel edge (m). origin: (3,) corner of voxel (0, 0, 0) in ``F``.
        obs_sum, obs_weight: (NX, NY, NZ) float32 weighted sum and total weight of the
            observations.
        surface_weight: (NX, NY, NZ) float32 count of surface (band) observations.
        guess_sum: (NX, NY, NZ) float32 weighted sum of resampled guesses; ``guess_weight``
            the sum of their weights; ``frames`` integrated.
        view_spread_deg: largest angle (degrees) between the first frame's viewing
            direction onto the volume's first box centre and any later frame's.
        confidence: running maximum of the shapes' confidences.
        motion_suspect: the last :meth:`moved` reading was above
            ``FUSION_MOVED_FREE_FRACTION`` without telling a motion (a new volume: False).
    """

    def __init__(
        self,
        voxel_size: float,
        lo: NDArray[np.float64],
        hi: NDArray[np.float64],
        fixed_T_anchor: NDArray[np.float64] | None = None,
    ) -> None:
        """A volume covering [lo, hi] (anchor frame, m); ``fixed_T_anchor``: the anchor
        frame ``A`` in ``F`` (None: ``F`` itself)."""
        vs = float(voxel_size)
        if not (np.isfinite(vs) and C.MIN_VOXEL_SIZE <= vs <= C.MAX_VOXEL_SIZE):
            raise FusionError(f"voxel size {vs} outside [{C.MIN_VOXEL_SIZE}, {C.MAX_VOXEL_SIZE}] m")
        self.voxel_size = vs
        a = np.eye(4) if fixed_T_anchor is None else np.asarray(fixed_T_anchor, dtype=np.float64)
        if a.shape != (4, 4) or not np.all(np.isfinite(a)):
            raise FusionError(f"fixed_T_anchor must be a finite 4x4 matrix, got {a!r}")
        self.fixed_T_anchor = a
        self._anchor_T_fixed = invert_transform(a)
        self.origin = np.zeros(3)
        empty: NDArray[np.float32] = np.zeros((0, 0, 0), dtype=np.float32)
        self.obs_sum = empty
        self.obs_weight = empty.copy()
        self.surface_weight = empty.copy()
        self.guess_sum = empty.copy()
        self.guess_weight = 0.0
        self.frames = 0
        self.view_spread_deg = 0.0
        self._first_view: NDArray[np.float64] | None = None
        self.confidence = 0.0
        self.motion_suspect = False
        self._occupancy: NDArray[np.float32] | None = None
        self._cover(lo, hi)
        self._first_voxels = int(np.prod(self.dims))
        #: the point (in ``F``) the viewing directions are measured to: the first box's centre
        self._target = transform_points(a, (0.5 * (np.asarray(lo) + np.asarray(hi))).reshape(1, 3))[0]

    @classmethod
    def for_shape(cls, shape: VoxelShape, fixed_T_camera: NDArray[np.float64]) -> TrackVolume:
        """An empty volume covering ``shape`` with its voxel size, anchored on its grid
        (voxel (i, j, k) of the shape is voxel (i, j, k) plus the margin of the volume)."""
        f_T_c = np.asarray(fixed_T_camera, dtype=np.float64)
        anchor = f_T_c @ np.asarray(shape.camera_T_grid, dtype=np.float64)
        anchor = anchor @ make_transform(np.eye(3), np.asarray(shape.origin, dtype=np.float64))
        lo, hi = _shape_box(shape, invert_transform(anchor) @ f_T_c)
        return cls(shape.voxel_size, lo, hi, anchor)

    @property
    def dims(self) -> tuple[int, int, int]:
        """Grid size (NX, NY, NZ)."""
        s = self.obs_sum.shape
        return int(s[0]), int(s[1]), int(s[2])

    # ------------------------------------------------------------------ grid
    def _cover(self, lo: NDArray[np.float64], hi: NDArray[np.float64]) -> None:
        """Grow the grid (integer voxel shifts) so that it covers [lo, hi] plus a margin."""
        vs = self.voxel_size
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise FusionError(f"non-finite bounds {lo} .. {hi}")
        m = C.FUSION_GRID_MARGIN_VOXELS
        want_lo = np.floor(np.asarray(lo) / vs).astype(np.int64) - m
        want_hi = np.ceil(np.asarray(hi) / vs).astype(np.int64) + m
        if self.frames == 0 and self.obs_sum.size == 0:
            new_lo, new_hi = want_lo, want_hi
        else:
            cur_lo = np.rint(self.origin / vs).astype(np.int64)
            cur_hi = cur_lo + np.asarray(self.dims)
            if np.all(want_lo >= cur_lo) and np.all(want_hi <= cur_hi):
                return
            new_lo, new_hi = np.minimum(cur_lo, want_lo), np.maximum(cur_hi, want_hi)
        dims = new_hi - new_lo
        if int(dims.max()) > C.MAX_GRID_DIM:
            raise FusionError(f"fused grid {dims.tolist()} exceeds MAX_GRID_DIM={C.MAX_GRID_DIM}")
        if self.obs_sum.size and int(np.prod(dims)) > C.FUSION_MAX_GROWTH * self._first_voxels:
            raise FusionGrowthError(
                f"fused grid would grow to {dims.tolist()}, more than {C.FUSION_MAX_GROWTH}x its "
                f"first {self._first_voxels} voxels"
            )
        arrays = []
        for old in (self.obs_sum, self.obs_weight, self.surface_weight, self.guess_sum):
            new = np.zeros(tuple(int(d) for d in dims), dtype=np.float32)
            if old.size:
                off = np.rint(self.origin / vs).astype(np.int64) - new_lo
                sl = tuple(slice(int(o), int(o) + n) for o, n in zip(off, old.shape, strict=True))
                new[sl] = old
            arrays.append(new)
        self.obs_sum, self.obs_weight, self.surface_weight, self.guess_sum = arrays
        self.origin = new_lo.astype(np.float64) * vs
        self._occupancy = None

    def _index_box(self, lo: NDArray[np.float64], hi: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
        """Voxel index range [lo, hi) of this grid that holds the box [lo, hi] (anchor
        frame, m)."""
        vs = self.voxel_size
        ilo = np.floor((lo - self.origin) / vs).astype(np.intp)
        ihi = np.ceil((hi - self.origin) / vs).astype(np.intp)
        dims = np.asarray(self.dims, dtype=np.intp)
        return np.clip(ilo, 0, dims), np.clip(ihi, 0, dims)

    # ------------------------------------------------------------------ fusion
    def integrate(
        self,
        shape: VoxelShape,
        frame: RGBDFrame,
        label: int,
        fixed_T_camera: NDArray[np.float64],
        noise_z2: float = 0.0,
        surface_pixels: NDArray[np.integer] | None = None,
        near: NDArray[np.float32] | None = None,
    ) -> None:
        """Add one frame: the backend's shape (guess) and the frame's depth (observations).

        Args:
            shape: the single-frame amodal shape of the object.
            frame: the frame (depth (H, W) metres, labels (H, W), intrinsics).
            label: the object's instance label in ``frame.labels``.
            fixed_T_camera: 4x4 camera pose in ``F``.
            noise_z2: the frame's depth noise, sigma per squared metre of depth (m / m^2,
                :attr:`SupportPlane.noise_z2`; 0: unknown): the truncation band at a
                measured depth ``z`` is ``max(FUSION_MIN_TRUNCATION,
                FUSION_TRUNCATION_VOXELS voxels, FUSION_TRUNCATION_SIGMAS * noise_z2 *
                z^2)``, at most ``FUSION_MAX_TRUNCATION``.
            surface_pixels: (N, 2) integer (u, v) pixels whose depth is the object's
                surface (:attr:`ObjectObservation.pixels`: the eroded, filtered mask); only
                they give surface evidence, so mask bleed onto the table or the background
                adds no surface there. None: every pixel labelled ``label``.

        Raises:
            FusionGrowthError: covering the frame's measured surface would grow the grid
                beyond ``FUSION_MAX_GROWTH`` times its first size (nothing was
                integrated; a guess alone that needs more is kept to the grid).
            FusionError: the grid would exceed ``MAX_GRID_DIM`` or the transform is bad.
        """
        f_T_c = np.asarray(fixed_T_camera, dtype=np.float64)
        if f_T_c.shape != (4, 4) or not np.all(np.isfinite(f_T_c)):
            raise FusionError(f"fixed_T_camera must be a finite 4x4 matrix, got {f_T_c!r}")
        a_T_c = self._anchor_T_fixed @ f_T_c
        lo, hi = _shape_box(shape, a_T_c)
        try:
            self._cover(lo, hi)
        except FusionGrowthError:
            # the measured surface decides: a guess placed far off (a low-visibility object's
            # layout jumps from frame to frame) is kept to the grid, and only a measured
            # surface that needs the growth restarts the volume
            pts = self._measured_points(frame, label, a_T_c, surface_pixels)
            if len(pts) == 0:
                raise
            self._cover(pts.min(axis=0), pts.max(axis=0))
            logger.debug("guess box %s .. %s beyond the grid's growth: guess kept to the grid", lo, hi)
        c_T_a = invert_transform(a_T_c)
        depth = np.asarray(frame.depth, dtype=np.float32)
        if near is None:
            near = free_space_depth(depth)
        elif near.shape != depth.shape:
            raise FusionError(f"free-space depth {near.shape} does not match the depth {depth.shape}")
        self._observe(frame, label, c_T_a, max(float(noise_z2), 0.0), surface_pixels, near)
        # a frame's guess weighs by the object's trusted pixels in it
        weight = float(max(len(surface_pixels), 1)) if surface_pixels is not None else 1.0
        self._add_guess(shape, c_T_a, self._index_box(lo, hi), weight)
        self._add_view(f_T_c)
        self.frames += 1
        self.confidence = max(self.confidence, float(shape.confidence))
        self._occupancy = None

    @staticmethod
    def _measured_points(
        frame: RGBDFrame,
        label: int,
        a_T_c: NDArray[np.float64],
        surface_pixels: NDArray[np.integer] | None,
    ) -> NDArray[np.float64]:
        """(N, 3) the object's measured surface points in the anchor frame: the trusted
        pixels' (all pixels labelled ``label`` when None) valid depths."""
        depth = np.asarray(frame.depth, dtype=np.float32)
        h, w = depth.shape
        if surface_pixels is None:
            v, u = np.nonzero(np.asarray(frame.labels) == label)
        else:
            px = _pixels_in_image(surface_pixels, w, h)
            u, v = px[:, 0], px[:, 1]
        z = depth[v, u]
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(z) & (z > 0)
        return transform_points(a_T_c, frame.camera.backproject(u[ok], v[ok], z[ok].astype(np.float64)))

    def _observe(
        self,
        frame: RGBDFrame,
        label: int,
        c_T_a: NDArray[np.float64],
        noise_z2: float,
        surface_pixels: NDArray[np.integer] | None,
        near: NDArray[np.float32],
    ) -> None:
        """Projective truncated signed distance of every voxel against the frame's depth
        (``near``: its free-space depth)."""
        dims = np.asarray(self.dims, dtype=np.intp)
        x, y, z = _separable(c_T_a, self.origin, self.voxel_size, np.zeros(3, np.intp), dims)
        k = frame.camera
        depth = np.asarray(frame.depth, dtype=np.float32)
        h, w = depth.shape
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_z = np.divide(np.float32(1.0), z)
            u = np.multiply(x, inv_z, out=x)  # x and y are not needed after this
            u *= np.float32(k.fx)
            u += np.float32(k.cx + 0.5)
            np.floor(u, out=u)
            v = np.multiply(y, inv_z, out=y)
            v *= np.float32(k.fy)
            v += np.float32(k.cy + 0.5)
            np.floor(v, out=v)
            inside = z > 0
            inside &= u >= 0
            inside &= u < w
            inside &= v >= 0
            inside &= v < h
        if not inside.any():
            return
        ui = np.where(inside, u, np.float32(0.0)).astype(np.intp)
        vi = np.where(inside, v, np.float32(0.0)).astype(np.intp)
        flat = vi * w + ui
        meas = depth.reshape(-1)[flat]
        with np.errstate(invalid="ignore"):
            known = inside & (meas > 0)  # NaN compares False
        # free space from the min-filtered depth (as the single-frame carving): a mixed or
        # misregistered silhouette pixel that reads the background behind the object
        # carves nothing
        near_meas = free_space_depth_at(near, ui, vi, inside)
        seen = near_meas > 0
        tau_min = max(C.FUSION_MIN_TRUNCATION, C.FUSION_TRUNCATION_VOXELS * self.voxel_size)
        tau: NDArray[np.float32] | np.float32
        if noise_z2 > 0.0:
            scale = np.float32(C.FUSION_TRUNCATION_SIGMAS * noise_z2)
            tau = np.clip(
                scale * np.square(np.nan_to_num(meas)), tau_min, max(C.FUSION_MAX_TRUNCATION, tau_min)
            )
        else:
            tau = np.float32(tau_min)
        half = np.float32(0.5) * tau
        carve = np.float32(max(C.REFINE_CARVE_MARGIN_VOXELS * self.voxel_size, C.REFINE_CARVE_MIN_MARGIN_M))
        free = z - near_meas < -np.maximum(half, carve)
        free &= seen
        sd = np.subtract(z, meas, out=z)
        sd[~known] = 0.0
        if surface_pixels is None:
            band = np.asarray(frame.labels).reshape(-1)[flat] == label
        else:
            trusted = np.zeros(h * w, dtype=np.bool_)
            px = _pixels_in_image(surface_pixels, w, h)
            trusted[px[:, 1] * w + px[:, 0]] = True
            band = trusted[flat]
        band &= known
        band &= np.abs(sd) <= half
        sd /= tau  # now in [-0.5, 0.5] on the band
        # behind the measured surface an observation only says "inside, near the surface":
        # its weight falls from 1 at the surface to 0 at the band's end, so deeper voxels
        # keep the guess (a thin object does not thicken to half the band)
        weight = np.clip(np.float32(1.0) - np.float32(2.0) * sd, 0.0, 1.0)
        sd += np.float32(0.5)
        weight[~band] = 0.0
        sd *= weight
        sd[free] = 0.0  # a free observation: occupancy 0 at full weight
        weight[free] = 1.0
        self.obs_sum += sd
        self.obs_weight += weight
        self.surface_weight += band

    def _add_view(self, f_T_c: NDArray[np.float64]) -> None:
        """Record the viewing direction from the camera centre to the volume's first box
        centre (a fixed point of ``F``: a static camera's spread stays 0 however the
        shapes jitter) and update :attr:`view_spread_deg`."""
        ray = self._target - f_T_c[:3, 3]
        norm = float(np.linalg.norm(ray))
        if norm <= 0.0:
            return
        ray = ray / norm
        if self._first_view is None:
            self._first_view = ray
            return
        cos = float(np.clip(ray @ self._first_view, -1.0, 1.0))
        self.view_spread_deg = max(self.view_spread_deg, float(np.degrees(np.arccos(cos))))

    def _add_guess(
        self,
        shape: VoxelShape,
        c_T_a: NDArray[np.float64],
        box: tuple[NDArray[np.intp], NDArray[np.intp]],
        weight: float = 1.0,
    ) -> None:
        """Trilinear resampling of the shape's occupancy into the voxels its grid box covers
        (the rest of the grid gets 0, which needs no work), added with ``weight``."""
        self.guess_weight += weight
        ilo, ihi = box
        if np.any(ihi <= ilo):
            return
        g_T_a = invert_transform(np.asarray(shape.camera_T_grid, dtype=np.float64)) @ c_T_a
        shifted = g_T_a.copy()  # continuous voxel coordinates of the shape grid
        vs_g = float(shape.voxel_size)
        shifted[:3, :] /= vs_g
        shifted[:3, 3] -= np.asarray(shape.origin, dtype=np.float64) / vs_g + 0.5
        gx, gy, gz = _separable(shifted, self.origin, self.voxel_size, ilo, ihi)
        guess = ndimage.map_coordinates(
            np.asarray(shape.occupancy, dtype=np.float32),
            np.stack([gx.reshape(-1), gy.reshape(-1), gz.reshape(-1)]),
            order=1,
            mode="constant",
            cval=0.0,
        )
        sl = tuple(slice(int(a), int(b)) for a, b in zip(ilo, ihi, strict=True))
        self.guess_sum[sl] += np.float32(weight) * guess.reshape(gx.shape)

    def guess_mean(self, sel: Any = ...) -> NDArray[np.float32]:
        """Float32 weighted mean of the resampled guesses: (NX, NY, NZ), or of the voxels an
        index expression ``sel`` selects."""
        return self.guess_sum[sel] / np.float32(self.guess_weight if self.guess_weight > 0 else 1.0)

    def _fused(self, sel: Any = ...) -> NDArray[np.float32]:
        """Float32 fused occupancy in [0, 1] of the voxels ``sel`` selects (all by default;
        see the module docstring)."""
        wg = np.float32(C.FUSION_GUESS_WEIGHT)
        occ = (self.obs_sum[sel] + wg * self.guess_mean(sel)) / (self.obs_weight[sel] + wg)
        return np.clip(occ, 0.0, 1.0).astype(np.float32, copy=False)

    def fused_occupancy(self) -> NDArray[np.float32]:
        """Occupancy (NX, NY, NZ) float32 in [0, 1] of the observations and the guess mean
        (see the module docstring; computed once per frame)."""
        if self._occupancy is None:
            self._occupancy = self._fused()
        return self._occupancy

    @property
    def views_spread(self) -> bool:
        """The viewing directions span ``FUSION_MIN_VIEW_SPREAD_DEG``: the observations
        enter the published occupancy."""
        return self.view_spread_deg >= C.FUSION_MIN_VIEW_SPREAD_DEG

    def occupancy(self) -> NDArray[np.float32]:
        """The published occupancy (NX, NY, NZ) float32 in [0, 1]: :meth:`fused_occupancy`
        once the views spread (:attr:`views_spread`), the guess mean before."""
        if self.views_spread:
            return self.fused_occupancy()
        return np.clip(self.guess_mean(), 0.0, 1.0)

    def voxel_shape(self, camera_T_fixed: NDArray[np.float64], level: float) -> VoxelShape:
        """The fused occupancy as a :class:`VoxelShape` (grid frame ``A``), cropped to the
        voxels above ``level`` plus one voxel on every side: the ``level`` iso-surface is
        the same as the whole grid's (the cut-off voxels are all at or below it)."""
        occ = self.occupancy()
        lo = np.zeros(3, dtype=np.intp)
        hi = np.asarray(self.dims, dtype=np.intp)
        above = occ > level
        if above.any():
            for a in range(3):
                other = tuple(b for b in range(3) if b != a)
                hit = np.flatnonzero(above.any(axis=other))
                lo[a] = max(int(hit[0]) - 1, 0)
                hi[a] = min(int(hit[-1]) + 2, self.dims[a])
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        return VoxelShape(
            occupancy=np.ascontiguousarray(occ[sl]),
            voxel_size=self.voxel_size,
            origin=self.origin + lo * self.voxel_size,
            camera_T_grid=np.asarray(camera_T_fixed, dtype=np.float64) @ self.fixed_T_anchor,
            confidence=self.confidence,
        )

    # ------------------------------------------------------------------ queries
    def _to_anchor(self, points_fixed: NDArray[np.floating]) -> NDArray[np.float64]:
        return transform_points(
            self._anchor_T_fixed, np.asarray(points_fixed, dtype=np.float64).reshape(-1, 3)
        )

    def _index(self, points_fixed: NDArray[np.floating]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        p = self._to_anchor(points_fixed)
        idx = np.floor((p - self.origin) / self.voxel_size).astype(np.intp)
        ok = np.all((idx >= 0) & (idx < np.asarray(self.dims)), axis=1)
        return np.where(ok[:, None], idx, 0), ok

    def moved_fraction(
        self, points_fixed: NDArray[np.floating], camera_fixed: NDArray[np.floating], noise_z2: float = 0.0
    ) -> float:
        """Fraction of (N, 3) observed surface points (in ``F``) that land deep in space
        earlier frames saw as free: the point's voxel and the voxel a tolerance further
        along its viewing ray are both seen free (fused occupancy below
        ``FUSION_FREE_LEVEL``) or outside the grid. The tolerance,
        ``max(FUSION_MOVED_TOL_M, FUSION_MOVED_TOL_VOXELS voxels, FUSION_MOVED_TOL_SIGMAS *
        noise_z2 * range^2)``, keeps depth noise (a measured point lies in front of the
        surface as often as behind it, in the seen-free band) from reading as motion; an
        object that moved by more than it leaves its new surface in free space on both
        sides. ``camera_fixed``: (3,) the camera centre in ``F``; ``noise_z2`` as in
        :meth:`integrate`. 0 for no points."""
        p = np.asarray(points_fixed, dtype=np.float64).reshape(-1, 3)
        if self.frames == 0 or len(p) == 0:
            return 0.0
        ray = p - np.asarray(camera_fixed, dtype=np.float64).reshape(1, 3)
        rng = np.linalg.norm(ray, axis=1, keepdims=True)
        tol = np.maximum(
            max(C.FUSION_MOVED_TOL_M, C.FUSION_MOVED_TOL_VOXELS * self.voxel_size),
            C.FUSION_MOVED_TOL_SIGMAS * max(float(noise_z2), 0.0) * rng * rng,
        )
        deeper = p + ray / np.maximum(rng, 1e-9) * tol
        bad = self._seen_free(p) & self._seen_free(deeper)
        return float(bad.mean())

    def moved(
        self, points_fixed: NDArray[np.floating], camera_fixed: NDArray[np.floating], noise_z2: float = 0.0
    ) -> tuple[bool, float]:
        """Whether the object moved since the earlier frames (its evidence must restart),
        and this frame's :meth:`moved_fraction` (arguments as there): the reading decides
        with the previous one and, for a suspect frame, with :meth:`off_surface_fraction`
        (:func:`motion_decision`); kept in :attr:`motion_suspect`."""
        frac = self.moved_fraction(points_fixed, camera_fixed, noise_z2)
        off = self.off_surface_fraction(points_fixed) if frac > C.FUSION_MOVED_FREE_FRACTION else 0.0
        moved, self.motion_suspect = motion_decision(frac, self.motion_suspect, off)
        return moved, frac

    def off_surface_fraction(self, points_fixed: NDArray[np.floating]) -> float:
        """Fraction of (N, 3) observed surface points (in ``F``) with no surface observation
        in their voxel or its 26 neighbours (:meth:`observed_points`): where the new surface
        lies off the surface earlier frames measured. 0 for no points or an empty volume."""
        p = np.asarray(points_fixed, dtype=np.float64).reshape(-1, 3)
        if self.frames == 0 or len(p) == 0:
            return 0.0
        return 1.0 - float(self.observed_points(p).mean())

    def _seen_free(self, points_fixed: NDArray[np.float64]) -> NDArray[np.bool_]:
        """(N,) bool: the point's voxel was observed and its fused occupancy is below
        ``FUSION_FREE_LEVEL``, or the point lies outside the grid."""
        idx, ok = self._index(points_fixed)
        i, j, k = idx[:, 0], idx[:, 1], idx[:, 2]
        seen = self.obs_weight[i, j, k] > 0
        # only the points' voxels: a track seen from one viewpoint never needs the whole grid
        occ = self._occupancy[i, j, k] if self._occupancy is not None else self._fused((i, j, k))
        return ~ok | (seen & (occ < C.FUSION_FREE_LEVEL))

    def observed_points(self, points_fixed: NDArray[np.floating]) -> NDArray[np.bool_]:
        """(N,) bool: a surface observation exists in the voxel of a point or one of its 26
        neighbours (the point's surface was seen, not completed)."""
        p = np.asarray(points_fixed, dtype=np.float64).reshape(-1, 3)
        out = np.zeros(len(p), dtype=bool)
        if self.frames == 0 or len(p) == 0:
            return out
        base = np.floor((self._to_anchor(p) - self.origin) / self.voxel_size).astype(np.intp)
        dims = np.asarray(self.dims, dtype=np.intp)
        for off in _NEIGHBOURS:
            idx = base + off
            ok = np.all((idx >= 0) & (idx < dims), axis=1)
            if not ok.any():
                continue
            hit = self.surface_weight[idx[ok, 0], idx[ok, 1], idx[ok, 2]] > 0
            out[np.flatnonzero(ok)[hit]] = True
        return out


def motion_decision(
    moved_fraction: float, suspect_before: bool, off_surface: float = 0.0
) -> tuple[bool, bool]:
    """Whether a track's object moved, from this frame's :meth:`TrackVolume.moved_fraction`,
    whether the previous frame was suspect and this frame's
    :meth:`TrackVolume.off_surface_fraction`; returns ``(moved, suspect_now)``.

    Moved when the fraction exceeds ``FUSION_MOVED_SURE_FRACTION`` (most of the surface lies
    in seen-free space), or exceeds ``FUSION_MOVED_FREE_FRACTION`` in this frame and either
    the previous frame was suspect too (a push keeps the surface where it went; depth noise
    on an object with few points does not) or more than
    ``FUSION_MOVED_OFF_SURFACE_FRACTION`` of the points lie off the measured surface (a
    small object pushed towards the camera: little of its new surface is in seen-free
    space, none of it where the old surface was). A frame above
    ``FUSION_MOVED_FREE_FRACTION`` that does not restart is suspect; the restart after a
    confirmed motion clears it."""
    suspect = moved_fraction > C.FUSION_MOVED_FREE_FRACTION
    moved = moved_fraction > C.FUSION_MOVED_SURE_FRACTION or (
        suspect and (suspect_before or off_surface > C.FUSION_MOVED_OFF_SURFACE_FRACTION)
    )
    return moved, suspect and not moved


class StaticCameraCheck:
    """Whether a camera that has no pose source (no tf: the static
    ``camera_to_planning_transform``) has moved since the reference frame, from its
    background depth.

    The reference is the background (label 0) depth of the first frame after a (re)start.
    On a pixel lattice of stride ``FUSION_STATIC_STRIDE_PX``, a pixel that is background
    with a valid depth in both frames has changed when its depth differs by more than
    ``max(FUSION_STATIC_TOL_M, FUSION_MOVED_TOL_SIGMAS * sigma(z))`` (``sigma`` from the
    support plane's measured noise) from the reference depth at every pixel within
    ``FUSION_STATIC_SHIFT_PX`` (so depth edges that shift by a pixel or two, as a jittering
    depth registration does, are no motion). The camera moved when more than
    ``FUSION_STATIC_MOVED_FRACTION`` of those pixels changed; the frame then becomes the
    new reference. Comparing with the reference, not the previous frame, also catches a
    slow drift. Objects that appear, leave or move change no pixel that is background in
    both frames. A move parallel to a bare planar background (sliding along the table)
    leaves its depth unchanged and is not seen here; the tracks' own motion test
    (:meth:`TrackVolume.moved_fraction`) sees the objects shift then. Not thread-safe.
    """

    def __init__(self) -> None:
        self._ref: NDArray[np.float32] | None = None

    def reset(self) -> None:
        """Forget the reference (the next frame becomes it)."""
        self._ref = None

    def moved(self, frame: RGBDFrame, noise_z2: float = 0.0) -> bool:
        """True when ``frame`` was seen from elsewhere than the reference (see the class)."""
        depth = np.asarray(frame.depth, dtype=np.float32)
        labels = np.asarray(frame.labels)
        ref = self._ref
        if ref is None or ref.shape != depth.shape:
            self._ref = _background_depth(depth, labels)
            return False
        s, r = C.FUSION_STATIC_STRIDE_PX, C.FUSION_STATIC_SHIFT_PX
        h, w = depth.shape
        ys, xs = np.mgrid[r : h - r : s, r : w - r : s]
        z = depth[ys, xs]  # only the lattice of this frame is read
        with np.errstate(invalid="ignore"):
            valid = (labels[ys, xs] == C.BACKGROUND_LABEL) & (z > 0) & np.isfinite(ref[ys, xs])
        n = int(valid.sum())
        if n < C.FUSION_STATIC_MIN_PIXELS:
            return False  # too little background seen twice to tell
        ys, xs, z = ys[valid], xs[valid], z[valid]
        tol = np.maximum(C.FUSION_STATIC_TOL_M, C.FUSION_MOVED_TOL_SIGMAS * max(noise_z2, 0.0) * z * z)
        best = np.full(z.shape, np.inf, dtype=np.float32)
        for dy in (-r, 0, r):
            for dx in (-r, 0, r):
                diff = np.abs(z - ref[ys + dy, xs + dx])
                np.fmin(best, diff, out=best)  # NaN (no reference depth there) is ignored
        frac = float((best > tol).mean())
        if frac > C.FUSION_STATIC_MOVED_FRACTION:
            logger.info(
                "the camera moved (%.0f%% of %d background pixels changed depth) but has no pose "
                "source (planning_frame / tf): fused shapes restart from this frame",
                100 * frac,
                n,
            )
            self._ref = _background_depth(depth, labels)
            return True
        return False


def _background_depth(depth: NDArray[np.float32], labels: NDArray[np.integer]) -> NDArray[np.float32]:
    """(H, W) float32 depth of the background (label 0) pixels with a valid depth, NaN
    elsewhere (the reference of :class:`StaticCameraCheck`)."""
    with np.errstate(invalid="ignore"):
        keep = (labels == C.BACKGROUND_LABEL) & (depth > 0)
    return np.where(keep, depth, np.float32(np.nan)).astype(np.float32, copy=False)
