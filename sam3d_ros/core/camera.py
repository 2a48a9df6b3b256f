"""Pinhole camera model, back-projection and projection.

Frames follow REP 103 for optical frames: x right, y down, z forward (out of the lens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


class CameraModelError(ValueError):
    """Raised for an unusable camera model (zero, negative or non-finite intrinsics)."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of a rectified image.

    Attributes:
        width: image width in pixels.
        height: image height in pixels.
        fx, fy: focal lengths in pixels (> 0).
        cx, cy: principal point in pixels.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values):
            raise CameraModelError(f"non-finite intrinsics fx,fy,cx,cy={values}")
        if self.fx <= 0.0 or self.fy <= 0.0:
            raise CameraModelError(f"focal lengths must be > 0, got fx={self.fx}, fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise CameraModelError(f"image size must be > 0, got {self.width}x{self.height}")

    @classmethod
    def from_k(cls, width: int, height: int, k: Sequence[float]) -> CameraIntrinsics:
        """Build from a row-major 3x3 ``K`` (as in ``sensor_msgs/CameraInfo.k``)."""
        if len(k) != 9:
            raise CameraModelError(f"K must have 9 elements, got {len(k)}")
        kk = [float(v) for v in k]
        return cls(width=int(width), height=int(height), fx=kk[0], fy=kk[4], cx=kk[2], cy=kk[5])

    @property
    def matrix(self) -> NDArray[np.float64]:
        """3x3 intrinsic matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64)

    def backproject(
        self,
        u: NDArray[np.floating] | NDArray[np.integer],
        v: NDArray[np.floating] | NDArray[np.integer],
        z: NDArray[np.floating],
    ) -> NDArray[np.float64]:
        """Back-project pixels with depth to 3D points in the camera optical frame.

        Args:
            u, v: pixel coordinates, shape (N,). Integer pixel indices refer to pixel centres.
            z: depth along the optical axis in metres, shape (N,).

        Returns:
            (N, 3) float64 points in metres, camera optical frame.
        """
        z64 = np.asarray(z, dtype=np.float64)
        x = (np.asarray(u, dtype=np.float64) - self.cx) * z64 / self.fx
        y = (np.asarray(v, dtype=np.float64) - self.cy) * z64 / self.fy
        return np.stack([x, y, z64], axis=-1)

    def backproject_depth(self, depth: NDArray[np.floating]) -> NDArray[np.float64]:
        """Back-project a whole depth image into a pointmap.

        Args:
            depth: (H, W) depth in metres; invalid pixels NaN.

        Returns:
            (H, W, 3) float64 pointmap in the camera optical frame (NaN where depth is NaN).
        """
        h, w = depth.shape
        vv, uu = np.mgrid[0:h, 0:w]
        return self.backproject(uu, vv, depth).reshape(h, w, 3)

    def project(
        self, points: NDArray[np.floating]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Project camera-frame points (N, 3) to pixel coordinates.

        Returns:
            (u, v, z): float64 arrays of shape (N,); u, v in pixels, z in metres. Points with
            z <= 0 get u = v = NaN.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(z > 0, self.fx * p[:, 0] / z + self.cx, np.nan)
            v = np.where(z > 0, self.fy * p[:, 1] / z + self.cy, np.nan)
        return u, v, z

    def pixel_indices(
        self, xc: NDArray[np.floating], yc: NDArray[np.floating], zc: NDArray[np.floating]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.bool_]]:
        """Nearest pixel (u, v) of camera-frame coordinates, and whether it is in the image.

        Args:
            xc, yc, zc: coordinates in metres (same shape). Points with z <= 0 are outside.

        Returns:
            (ui, vi, inside): integer column/row indices (0 where outside) and the mask.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.floor(self.fx * xc / zc + self.cx + 0.5)
            v = np.floor(self.fy * yc / zc + self.cy + 0.5)
        inside = (zc > 0) & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        ui = np.where(inside, u, 0).astype(np.intp)
        vi = np.where(inside, v, 0).astype(np.intp)
        return ui, vi, inside

    def scaled(self, sx: float, sy: float) -> CameraIntrinsics:
        """Intrinsics of the same camera with the image resized by (sx, sy)."""
        return CameraIntrinsics(
            width=round(self.width * sx),
            height=round(self.height * sy),
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
        )
