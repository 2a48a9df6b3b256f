"""Support-plane (table) estimation from the background pixels of a frame.

RANSAC on a deterministic random subsample of the valid background points (hypotheses
scored on an evenly spread subset of it), followed by two least-squares refits on the
inliers among the whole subsample. The plane is expressed in the camera optical
frame, metres, with the normal pointing towards the camera.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core import constants as C
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.types import RGBDFrame, SupportPlane

logger = logging.getLogger(__name__)

#: RANSAC hypotheses are scored in chunks of this many to bound memory.
_RANSAC_CHUNK = 64


class SupportPlaneError(ValueError):
    """Raised when the frame's depth and labels cannot be used (wrong shapes)."""


def estimate_support_plane(
    frame: RGBDFrame, config: PipelineConfig, seed: int = 0, *, measure_noise: bool = False
) -> SupportPlane | None:
    """Estimate the dominant plane of the background (label 0) pixels.

    Args:
        frame: input frame; depth (H, W) metres (NaN invalid), labels (H, W) int.
        config: uses ``depth_min``, ``depth_max``, ``plane_distance_threshold`` (m) and
            ``plane_ransac_iterations``.
        seed: seed of the subsampling and of RANSAC; equal seeds give equal planes.
        measure_noise: also measure the depth noise on the plane (``noise_z2``; about
            1 ms at 640x480; fusion and refine.fill_observed read it); False leaves it 0 (unknown).

    Returns:
        The plane ``normal . p + offset = 0`` in the camera frame with a unit normal oriented
        so that the camera origin has positive signed distance (``offset > 0``), and
        ``inlier_count`` = number of inliers among the (at most
        ``constants.PLANE_MAX_SAMPLE_POINTS``) points used. None when fewer than
        ``constants.MIN_PLANE_POINTS`` valid background points exist or when the inlier
        fraction is below ``constants.MIN_PLANE_INLIER_FRACTION``.

    Raises:
        SupportPlaneError: when depth and labels do not have the same 2-D shape.
    """
    depth = np.asarray(frame.depth)
    labels = np.asarray(frame.labels)
    if depth.ndim != 2 or labels.shape != depth.shape:
        raise SupportPlaneError(f"depth {depth.shape} and labels {labels.shape} must be equal 2-D shapes")
    with np.errstate(invalid="ignore"):
        ok = (
            (labels == C.BACKGROUND_LABEL)
            & np.isfinite(depth)
            & (depth >= config.depth_min)
            & (depth <= config.depth_max)
        )
    flat = np.flatnonzero(ok)
    if flat.size < C.MIN_PLANE_POINTS:
        logger.debug("support plane: only %d valid background points", flat.size)
        return None
    rng = np.random.default_rng(seed)
    if flat.size > C.PLANE_MAX_SAMPLE_POINTS:
        flat = np.sort(rng.choice(flat, size=C.PLANE_MAX_SAMPLE_POINTS, replace=False))
    w = depth.shape[1]
    v, u = np.divmod(flat, w)
    pts = frame.camera.backproject(u, v, depth.ravel()[flat].astype(np.float64))

    thr = config.plane_distance_threshold
    step = -(-len(pts) // C.PLANE_RANSAC_SCORE_POINTS)  # ceil: at most that many scored
    best = _ransac(pts[::step], thr, config.plane_ransac_iterations, rng)
    if best is None:
        return None
    normal, offset = best
    for _ in range(2):
        inl = np.abs(pts @ normal + offset) <= thr
        if inl.sum() < 3:
            break
        refit = _fit_plane(pts[inl])
        if refit is None:
            break
        normal, offset = refit
    inliers = int((np.abs(pts @ normal + offset) <= thr).sum())
    frac = inliers / len(pts)
    if inliers < C.MIN_PLANE_POINTS or frac < C.MIN_PLANE_INLIER_FRACTION:
        logger.debug(
            "support plane rejected: %d inliers of %d points (fraction %.3f < %.3f)",
            inliers,
            len(pts),
            frac,
            C.MIN_PLANE_INLIER_FRACTION,
        )
        return None
    normal, offset = _orient(normal, offset)
    noise = _noise_z2(pts, normal, offset) if measure_noise else 0.0
    return SupportPlane(normal=normal, offset=float(offset), inlier_count=inliers, noise_z2=noise)


def _noise_z2(pts: NDArray[np.float64], normal: NDArray[np.float64], offset: float) -> float:
    """Depth noise of the plane's points per squared metre of depth (see
    :class:`SupportPlane`): the robust spread (1.4826 MAD) of their residuals divided by
    their squared depth, over the points within ``PLANE_NOISE_WINDOW_M`` of the plane; the
    axial noise is the residual over the cosine between the ray and the normal. 0 with
    too few points."""
    r = pts @ normal + offset
    near = np.abs(r) <= C.PLANE_NOISE_WINDOW_M
    if int(near.sum()) < C.MIN_PLANE_POINTS:
        return 0.0
    p, r = pts[near], r[near]
    z = p[:, 2]
    cos = np.abs(p @ normal) / np.maximum(np.linalg.norm(p, axis=1), 1e-9)
    axial = r / np.maximum(cos, C.PLANE_NOISE_MIN_COS) / np.maximum(z * z, 1e-6)
    return float(1.4826 * np.median(np.abs(axial - np.median(axial))))


def _orient(normal: NDArray[np.float64], offset: float) -> tuple[NDArray[np.float64], float]:
    """Flip the plane so the camera origin is on the positive side (image-up when the plane
    passes through the origin)."""
    if offset < 0.0 or (abs(offset) < 1e-12 and normal[1] > 0.0):
        return -normal, -offset
    return normal, offset


def _fit_plane(points: NDArray[np.float64]) -> tuple[NDArray[np.float64], float] | None:
    """Least-squares plane of (N, 3) points (smallest singular vector); None if degenerate."""
    centroid = points.mean(axis=0)
    try:
        _, s, vt = np.linalg.svd(points - centroid, full_matrices=False)
    except np.linalg.LinAlgError:
        return None
    if s.size < 3 or s[1] <= 1e-12:
        return None
    normal = vt[2]
    return normal, float(-normal @ centroid)


def _ransac(
    pts: NDArray[np.float64], thr: float, iterations: int, rng: np.random.Generator
) -> tuple[NDArray[np.float64], float] | None:
    """Vectorised RANSAC: best (normal, offset) by inlier count, or None when every
    sampled triple is degenerate."""
    n = len(pts)
    idx = rng.integers(0, n, size=(iterations, 3))
    a, b, c = pts[idx[:, 0]], pts[idx[:, 1]], pts[idx[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    good = norms > 1e-12
    if not good.any():
        return None
    normals = normals[good] / norms[good, None]
    offsets = -np.einsum("ij,ij->i", normals, a[good])
    pts32 = pts.astype(np.float32)
    best_count = -1
    best_i = 0
    for start in range(0, len(normals), _RANSAC_CHUNK):
        nn = normals[start : start + _RANSAC_CHUNK].astype(np.float32)
        oo = offsets[start : start + _RANSAC_CHUNK].astype(np.float32)
        counts = (np.abs(pts32 @ nn.T + oo) <= thr).sum(axis=0)
        i = int(np.argmax(counts))
        if counts[i] > best_count:
            best_count = int(counts[i])
            best_i = start + i
    return normals[best_i], float(offsets[best_i])
