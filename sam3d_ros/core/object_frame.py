"""The one definition of an object's support axes, shared by the network encoding
(:mod:`sam3d_ros.core.encoding`), the geometric completion
(:mod:`sam3d_ros.core.completion`) and the published object frame
(:mod:`sam3d_ros.core.layout`).

z is the support plane's unit normal (pointing away from the table, towards the camera)
when a usable plane is given and enough of the object's points lie above it, else the
camera's up direction :data:`~sam3d_ros.core.constants.CAMERA_UP`. The encoding and the
completion place their grid with :func:`support_axes` (x along the footprint's major
principal axis, origin at the points' centroid dropped onto the plane); the published
frame (:func:`~sam3d_ros.core.layout.estimate_object_frame`) takes the same z from
:func:`support_normal` and its x from the final mesh's minimum-area footprint rectangle.
All in the camera optical frame, metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core import constants as C
from sam3d_ros.core.frames import rotation_from_z_and_x
from sam3d_ros.core.types import SupportPlane


def camera_up() -> NDArray[np.float64]:
    """(3,) the camera's up direction in the optical frame (-y)."""
    return np.array(C.CAMERA_UP, dtype=np.float64)


def support_normal(plane: SupportPlane | None) -> tuple[NDArray[np.float64], float] | None:
    """The plane's unit normal (3,) and offset scaled to it (metres), or None for no plane
    or a degenerate one (zero or non-finite normal, non-finite offset)."""
    if plane is None:
        return None
    n = np.asarray(plane.normal, dtype=np.float64)
    n_norm = float(np.linalg.norm(n))
    if not (math.isfinite(n_norm) and n_norm > 1e-9 and math.isfinite(plane.offset)):
        return None
    return n / n_norm, float(plane.offset) / n_norm


def footprint_major_axis(rel: NDArray[np.float64], z_axis: NDArray[np.float64]) -> NDArray[np.float64]:
    """Major principal axis (3,) of the points ``rel`` (N, 3) projected on the plane normal
    to ``z_axis``, signed to have a non-negative camera-x component (then camera-z)."""
    flat = rel - np.outer(rel @ z_axis, z_axis)
    cov = flat.T @ flat / max(len(flat), 1)
    w, v = np.linalg.eigh(cov)
    axis = v[:, int(np.argmax(w))]
    axis = axis - z_axis * float(axis @ z_axis)
    if float(np.linalg.norm(axis)) < 1e-9:
        axis = np.array([1.0, 0.0, 0.0]) - z_axis * float(z_axis[0])
    ref = axis[0] if abs(axis[0]) > 1e-6 else axis[2]
    return -axis if ref < 0 else axis


@dataclass(frozen=True)
class SupportAxes:
    """An object's support axes (frame ``G``) from its observed points.

    Attributes:
        R: (3, 3) float64, columns x, y, z of ``G`` in the camera frame.
        base: (3,) float64, origin of ``G`` in the camera frame: the centroid of ``points``
            dropped onto the plane (the centroid itself without a plane).
        points: (M, 3) float64, the points the axes come from (those above the plane when
            it is used, else all).
        heights: (M,) float64 heights of ``points`` above the plane (metres), or None when
            the plane is not used.
        above_plane: how many of the input points lie above the plane (0 without a plane).
    """

    R: NDArray[np.float64]
    base: NDArray[np.float64]
    points: NDArray[np.float64]
    heights: NDArray[np.float64] | None
    above_plane: int

    @property
    def plane_used(self) -> bool:
        """z is the plane's normal (else the camera's up)."""
        return self.heights is not None


def support_axes(points: NDArray[np.floating], plane: SupportPlane | None) -> SupportAxes:
    """The support axes of an object (see the module docstring).

    Args:
        points: (N, 3) finite observed surface points in the camera frame, metres (the
            callers check that there are at least ``MIN_OBJECT_POINTS``).
        plane: the support plane, or None. It is used when at least ``MIN_OBJECT_POINTS``
            points lie ``PLANE_CONTACT_TOL`` or more above it.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    z_axis = camera_up()
    base = pts.mean(axis=0)
    heights: NDArray[np.float64] | None = None
    above_count = 0
    support = support_normal(plane)
    if support is not None:
        n, off = support
        h = pts @ n + off
        above = h >= C.PLANE_CONTACT_TOL
        above_count = int(above.sum())
        if above_count >= C.MIN_OBJECT_POINTS:
            pts, heights = pts[above], h[above]
            z_axis = n
            centroid = pts.mean(axis=0)
            base = centroid - (centroid @ n + off) * n
    R = rotation_from_z_and_x(z_axis, footprint_major_axis(pts - base, z_axis))
    return SupportAxes(R=R, base=base, points=pts, heights=heights, above_plane=above_count)
