"""Rigid transforms, rotations and quaternions (xyzw order, as in geometry_msgs).

Conventions: ``a_T_b`` is a 4x4 homogeneous transform that maps points expressed in frame
``b`` to frame ``a`` (``p_a = a_T_b @ p_b``). A pose of frame ``b`` "in frame ``a``" is
``a_T_b``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core.constants import ROTATION_ORTHONORMAL_TOL


class FrameError(ValueError):
    """Raised for invalid rotations, quaternions or transforms."""


@dataclass(frozen=True)
class Pose:
    """A 6-DoF pose: position (3,) in metres and unit quaternion (x, y, z, w)."""

    position: tuple[float, float, float]
    orientation_xyzw: tuple[float, float, float, float]

    @classmethod
    def from_matrix(cls, t: NDArray[np.floating]) -> Pose:
        """From a 4x4 homogeneous transform."""
        m = np.asarray(t, dtype=np.float64)
        if m.shape != (4, 4):
            raise FrameError(f"expected a 4x4 transform, got shape {m.shape}")
        q = quaternion_from_matrix(m[:3, :3])
        p = m[:3, 3]
        return cls(
            position=(float(p[0]), float(p[1]), float(p[2])),
            orientation_xyzw=(float(q[0]), float(q[1]), float(q[2]), float(q[3])),
        )

    def matrix(self) -> NDArray[np.float64]:
        """4x4 homogeneous transform."""
        t = np.eye(4)
        t[:3, :3] = matrix_from_quaternion(np.asarray(self.orientation_xyzw, dtype=np.float64))
        t[:3, 3] = self.position
        return t


def check_rotation(r: NDArray[np.floating], tol: float = ROTATION_ORTHONORMAL_TOL) -> None:
    """Raise FrameError unless ``r`` is a proper 3x3 rotation (orthonormal, det +1)."""
    m = np.asarray(r, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise FrameError(f"not a finite 3x3 matrix: shape {m.shape}")
    err = float(np.abs(m.T @ m - np.eye(3)).max())
    if err > tol * 100 or abs(float(np.linalg.det(m)) - 1.0) > tol * 100:
        raise FrameError(f"not a rotation: orthonormality error {err:.3g}, det {np.linalg.det(m):.6f}")


def quaternion_from_matrix(r: NDArray[np.floating]) -> NDArray[np.float64]:
    """Unit quaternion (x, y, z, w), w >= 0, of a 3x3 rotation matrix."""
    m = np.asarray(r, dtype=np.float64)
    check_rotation(m, tol=1e-4)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0.0:
        s = np.sqrt(tr + 1.0) * 2.0
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
        q = np.array([0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s])
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
        q = np.array([(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s])
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
        q = np.array([(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return q


def matrix_from_quaternion(q: NDArray[np.floating]) -> NDArray[np.float64]:
    """3x3 rotation matrix of a quaternion (x, y, z, w); the quaternion is normalised."""
    qq = np.asarray(q, dtype=np.float64).reshape(4)
    n = float(np.linalg.norm(qq))
    if not np.isfinite(n) or n < 1e-12:
        raise FrameError(f"quaternion has zero or non-finite norm: {qq.tolist()}")
    x, y, z, w = qq / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def make_transform(r: NDArray[np.floating], t: NDArray[np.floating]) -> NDArray[np.float64]:
    """4x4 transform from a 3x3 rotation and a translation (3,)."""
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return m


def invert_transform(t: NDArray[np.floating]) -> NDArray[np.float64]:
    """Inverse of a rigid 4x4 transform."""
    m = np.asarray(t, dtype=np.float64)
    r = m[:3, :3]
    out = np.eye(4)
    out[:3, :3] = r.T
    out[:3, 3] = -r.T @ m[:3, 3]
    return out


def transform_points(t: NDArray[np.floating], points: NDArray[np.floating]) -> NDArray[np.float64]:
    """Apply a 4x4 transform to (N, 3) points; returns (N, 3) float64."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    m = np.asarray(t, dtype=np.float64)
    return p @ m[:3, :3].T + m[:3, 3]


def rotation_from_z_and_x(z_axis: NDArray[np.floating], x_hint: NDArray[np.floating]) -> NDArray[np.float64]:
    """Right-handed rotation whose z column is ``z_axis`` and x column is ``x_hint``
    made orthogonal to z. Falls back to any perpendicular x when the hint is parallel to z."""
    z = np.asarray(z_axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.asarray(x_hint, dtype=np.float64)
    x = x - z * float(np.dot(x, z))
    if np.linalg.norm(x) < 1e-9:
        helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        x = helper - z * float(np.dot(helper, z))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)
