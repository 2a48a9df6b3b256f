"""Multi-view fusion of one tracked object's shape in a fixed frame.

A :class:`TrackVolume` is a voxel grid, axis-aligned in the fixed frame ``F`` (the planning
frame; the camera frame for a static camera), that accumulates per voxel

* observation evidence from the depth image (projective truncated signed distance): a
  voxel the camera saw through (measured depth beyond it by more than half the truncation
  band ``tau``) is observed *free* (0); a voxel within the band on the object's own mask
  pixels is observed *surface* with occupancy ``0.5 + (z_voxel - z_measured) / tau`` (so the
  0.5 iso-surface lies on the measured surface); anything else (behind the surface,
  occluded, no depth, outside the image) is unobserved;
* the backend's completed occupancy (the "guess"), resampled every frame.

The fused occupancy is the mean observation where a voxel was ever observed, else the mean
guess: observed surface and observed free space replace completed guesses, and the shape
converges as the camera moves around the object. The grid grows (integer voxel shifts) to
cover new shapes; its voxel size is the first shape's.

All lengths metres; ``fixed_T_camera`` maps camera-frame points into ``F``.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sam3d_ros.core import constants as C
from sam3d_ros.core.frames import invert_transform, transform_points
from sam3d_ros.core.types import RGBDFrame, VoxelShape

logger = logging.getLogger(__name__)


class FusionError(ValueError):
    """Raised when a shape cannot be fused (grid too large, non-finite transform)."""


def shape_points(shape: VoxelShape, level: float) -> NDArray[np.float64]:
    """Centres (N, 3) of the voxels of ``shape`` with occupancy above ``level``, in the camera
    frame (metres); empty (0, 3) when none."""
    occ = np.asarray(shape.occupancy)
    idx = np.argwhere(occ > level)
    if len(idx) == 0:
        return np.zeros((0, 3))
    g = np.asarray(shape.origin, dtype=np.float64) + (idx + 0.5) * float(shape.voxel_size)
    return transform_points(np.asarray(shape.camera_T_grid, dtype=np.float64), g)


def _shape_box_fixed(shape: VoxelShape, fixed_T_camera: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    """AABB (lo, hi) in ``F`` of a shape's whole grid box."""
    dims = np.asarray(shape.occupancy.shape, dtype=np.float64)
    o = np.asarray(shape.origin, dtype=np.float64)
    corners = (
        o + np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * dims * shape.voxel_size
    )
    pts = transform_points(fixed_T_camera @ np.asarray(shape.camera_T_grid, dtype=np.float64), corners)
    return pts.min(axis=0), pts.max(axis=0)


class TrackVolume:
    """Fused evidence of one object (see the module docstring). Not thread-safe.

    Attributes:
        voxel_size: voxel edge (m). origin: (3,) corner of voxel (0, 0, 0) in ``F``.
        obs_sum, obs_weight: (NX, NY, NZ) float32 sum and count of observations.
        surface_weight: (NX, NY, NZ) float32 count of surface (band) observations.
        guess_sum: (NX, NY, NZ) float32 sum of resampled guesses; ``frames`` integrated.
        confidence: running maximum of the shapes' confidences.
    """

    def __init__(self, voxel_size: float, lo: NDArray[np.float64], hi: NDArray[np.float64]) -> None:
        vs = float(voxel_size)
        if not (np.isfinite(vs) and C.MIN_VOXEL_SIZE <= vs <= C.MAX_VOXEL_SIZE):
            raise FusionError(f"voxel size {vs} outside [{C.MIN_VOXEL_SIZE}, {C.MAX_VOXEL_SIZE}] m")
        self.voxel_size = vs
        self.origin = np.zeros(3)
        empty: NDArray[np.float32] = np.zeros((0, 0, 0), dtype=np.float32)
        self.obs_sum = empty
        self.obs_weight = empty.copy()
        self.surface_weight = empty.copy()
        self.guess_sum = empty.copy()
        self.frames = 0
        self.confidence = 0.0
        self._cover(lo, hi)

    @classmethod
    def for_shape(cls, shape: VoxelShape, fixed_T_camera: NDArray[np.float64]) -> TrackVolume:
        """An empty volume covering ``shape`` with its voxel size."""
        lo, hi = _shape_box_fixed(shape, np.asarray(fixed_T_camera, dtype=np.float64))
        return cls(shape.voxel_size, lo, hi)

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

    def _centres(self) -> NDArray[np.float64]:
        """Voxel centres (NX, NY, NZ, 3) in ``F``."""
        axes = [self.origin[a] + (np.arange(n) + 0.5) * self.voxel_size for a, n in enumerate(self.dims)]
        gx, gy, gz = np.meshgrid(*axes, indexing="ij")
        return np.stack([gx, gy, gz], axis=-1)

    # ------------------------------------------------------------------ fusion
    def integrate(
        self, shape: VoxelShape, frame: RGBDFrame, label: int, fixed_T_camera: NDArray[np.float64]
    ) -> None:
        """Add one frame: the backend's shape (guess) and the frame's depth (observations).

        Args:
            shape: the single-frame amodal shape of the object.
            frame: the frame (depth (H, W) metres, labels (H, W), intrinsics).
            label: the object's instance label in ``frame.labels``.
            fixed_T_camera: 4x4 camera pose in ``F``.

        Raises:
            FusionError: the grid would exceed ``MAX_GRID_DIM`` or the transform is bad.
        """
        f_T_c = np.asarray(fixed_T_camera, dtype=np.float64)
        if f_T_c.shape != (4, 4) or not np.all(np.isfinite(f_T_c)):
            raise FusionError(f"fixed_T_camera must be a finite 4x4 matrix, got {f_T_c!r}")
        lo, hi = _shape_box_fixed(shape, f_T_c)
        self._cover(lo, hi)
        c_T_f = invert_transform(f_T_c)
        centres = self._centres().reshape(-1, 3)
        cam = transform_points(c_T_f, centres)
        # guess: trilinear resampling of the shape's occupancy (0 outside its grid)
        g_T_c = invert_transform(np.asarray(shape.camera_T_grid, dtype=np.float64))
        pg = transform_points(g_T_c, cam)
        coords = ((pg - np.asarray(shape.origin, dtype=np.float64)) / shape.voxel_size - 0.5).T
        guess = ndimage.map_coordinates(
            np.asarray(shape.occupancy, dtype=np.float32), coords, order=1, mode="constant", cval=0.0
        )
        # observations: projective truncated signed distance
        k = frame.camera
        depth = np.asarray(frame.depth)
        h, w = depth.shape
        zc = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.floor(k.fx * cam[:, 0] / zc + k.cx + 0.5)
            v = np.floor(k.fy * cam[:, 1] / zc + k.cy + 0.5)
        inside = (zc > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        ui = np.where(inside, u, 0).astype(np.intp)
        vi = np.where(inside, v, 0).astype(np.intp)
        meas = depth[vi, ui].astype(np.float64)
        with np.errstate(invalid="ignore"):
            known = inside & np.isfinite(meas) & (meas > 0)
        tau = max(C.FUSION_MIN_TRUNCATION, C.FUSION_TRUNCATION_VOXELS * self.voxel_size)
        sd = np.where(known, zc - meas, 0.0)
        free = known & (sd < -tau / 2.0)
        own = np.asarray(frame.labels)[vi, ui] == label
        band = known & own & (np.abs(sd) <= tau / 2.0)
        observed = free | band
        value = np.where(band, 0.5 + sd / tau, 0.0)
        shape3 = self.dims
        self.obs_sum += np.where(observed, value, 0.0).astype(np.float32).reshape(shape3)
        self.obs_weight += observed.astype(np.float32).reshape(shape3)
        self.surface_weight += band.astype(np.float32).reshape(shape3)
        self.guess_sum += guess.astype(np.float32).reshape(shape3)
        self.frames += 1
        self.confidence = max(self.confidence, float(shape.confidence))

    def occupancy(self) -> NDArray[np.float32]:
        """Fused occupancy (NX, NY, NZ) float32 in [0, 1]."""
        with np.errstate(invalid="ignore", divide="ignore"):
            obs = self.obs_sum / np.maximum(self.obs_weight, 1e-6)
        guess = self.guess_sum / max(self.frames, 1)
        return np.asarray(np.clip(np.where(self.obs_weight > 0, obs, guess), 0.0, 1.0), dtype=np.float32)

    def voxel_shape(self, camera_T_fixed: NDArray[np.float64]) -> VoxelShape:
        """The fused occupancy as a :class:`VoxelShape` (grid frame ``F``)."""
        return VoxelShape(
            occupancy=self.occupancy(),
            voxel_size=self.voxel_size,
            origin=self.origin.copy(),
            camera_T_grid=np.asarray(camera_T_fixed, dtype=np.float64),
            confidence=self.confidence,
        )

    # ------------------------------------------------------------------ queries
    def _index(self, points_fixed: NDArray[np.floating]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        p = np.asarray(points_fixed, dtype=np.float64).reshape(-1, 3)
        idx = np.floor((p - self.origin) / self.voxel_size).astype(np.intp)
        ok = np.all((idx >= 0) & (idx < np.asarray(self.dims)), axis=1)
        return np.where(ok[:, None], idx, 0), ok

    def moved_fraction(self, points_fixed: NDArray[np.floating]) -> float:
        """Fraction of (N, 3) observed surface points (in ``F``) that land in space earlier
        frames saw as free (points outside the grid count as such); 0 for no points."""
        if self.frames == 0:
            return 0.0
        idx, ok = self._index(points_fixed)
        if len(ok) == 0:
            return 0.0
        occ = self.occupancy()[idx[:, 0], idx[:, 1], idx[:, 2]]
        seen = self.obs_weight[idx[:, 0], idx[:, 1], idx[:, 2]] > 0
        bad = ~ok | (seen & (occ < C.FUSION_FREE_LEVEL))
        return float(bad.mean())

    def observed_points(self, points_fixed: NDArray[np.floating]) -> NDArray[np.bool_]:
        """(N,) bool: a surface observation exists in the voxel of a point or one of its
        neighbours (the point's surface was seen, not completed)."""
        p = np.asarray(points_fixed, dtype=np.float64).reshape(-1, 3)
        out = np.zeros(len(p), dtype=bool)
        if self.frames == 0 or len(p) == 0:
            return out
        seen = ndimage.maximum_filter(self.surface_weight, size=3) > 0
        idx, ok = self._index(p)
        out[ok] = seen[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        return out
