"""Per-object observations: masked, filtered, back-projected depth points.

Everything here works on each mask's bounding-box crop (plus a small margin), never on the
whole image per object, so the cost grows with the objects' pixel area, not with their
number times the image size.

Frames and units: points are in the camera optical frame (x right, y down, z forward),
metres; pixels are (u, v) = (column, row) indices of pixel centres.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sam3d_ros.core import constants as C
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.types import ObjectObservation, RGBDFrame, SkippedObject, SkipReason

logger = logging.getLogger(__name__)

#: Largest label value for which labels are enumerated with bincount / find_objects
#: directly (larger ids are first re-numbered compactly).
_DIRECT_LABEL_LIMIT = 1 << 16

#: 1.4826 * MAD estimates the standard deviation of a normal distribution.
_MAD_TO_STD = 1.4826


class ObservationError(ValueError):
    """Raised when the frame's arrays cannot be interpreted (wrong shapes or dtypes)."""


@dataclass(frozen=True)
class _Candidate:
    instance_id: int
    pixel_count: int
    rows: slice
    cols: slice
    compact_label: int


def extract_observations(
    frame: RGBDFrame, config: PipelineConfig
) -> tuple[list[ObjectObservation], list[SkippedObject]]:
    """Turn the instance masks of a frame into filtered 3D observations.

    Steps per label > 0: mask-size check (``min_mask_pixels``), ``max_objects`` cap (largest
    masks kept), erosion by ``mask_erosion_px`` (falls back to the raw mask when erosion
    leaves too few pixels), depth validity (finite, within [depth_min, depth_max]),
    flying-pixel removal (relative depth jump to a 4-neighbour above
    ``constants.FLYING_PIXEL_REL_JUMP``), back-projection, regular decimation to at most
    ``constants.MAX_OBSERVATION_POINTS``, robust depth-band filter around the median depth
    (MAD) and statistical outlier removal on the mean distance to the 8 pixel-grid
    neighbours (``outlier_std_ratio``; isolated pixels are removed).

    Args:
        frame: the input frame; depth (H, W) float metres (NaN invalid), labels (H, W) int.
        config: pipeline parameters.

    Returns:
        (observations ordered by instance id, skipped objects). Observation points are
        (N, 3) float64 in the camera optical frame, metres; masks are full-size (H, W) bool.

    Raises:
        ObservationError: when depth and labels are not (H, W) arrays of the same shape.
    """
    depth = np.asarray(frame.depth)
    labels = np.asarray(frame.labels)
    if depth.ndim != 2 or labels.shape != depth.shape:
        raise ObservationError(
            f"depth {depth.shape} and labels {labels.shape} must be 2-D arrays of the same shape"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ObservationError(f"labels must be an integer image, got dtype {labels.dtype}")

    candidates = _enumerate_labels(labels)
    skipped: list[SkippedObject] = []
    kept: list[_Candidate] = []
    for cand in candidates:
        if cand.pixel_count < config.min_mask_pixels:
            skipped.append(
                SkippedObject(
                    cand.instance_id,
                    SkipReason.TOO_FEW_MASK_PIXELS,
                    f"mask has {cand.pixel_count} pixels < min_mask_pixels={config.min_mask_pixels}",
                )
            )
        else:
            kept.append(cand)
    # largest masks first; ties broken by instance id for determinism
    kept.sort(key=lambda c: (-c.pixel_count, c.instance_id))
    for rank, cand in enumerate(kept[config.max_objects :], start=config.max_objects + 1):
        skipped.append(
            SkippedObject(
                cand.instance_id,
                SkipReason.MAX_OBJECTS_EXCEEDED,
                f"mask of {cand.pixel_count} pixels is number {rank} by size; "
                f"max_objects={config.max_objects}",
            )
        )
    kept = kept[: config.max_objects]

    observations: list[ObjectObservation] = []
    for cand in sorted(kept, key=lambda c: c.instance_id):
        obs, reason = _observe_one(frame, depth, labels, cand, config)
        if obs is None:
            skipped.append(SkippedObject(cand.instance_id, SkipReason.TOO_FEW_DEPTH_POINTS, reason))
        else:
            observations.append(obs)
    skipped.sort(key=lambda s: s.instance_id)
    return observations, skipped


def _enumerate_labels(labels: NDArray[np.integer]) -> list[_Candidate]:
    """Labels > 0 with their pixel counts and bounding boxes (row and column slices)."""
    positive = labels > 0
    if not positive.any():
        return []
    max_label = int(labels.max())
    if max_label < _DIRECT_LABEL_LIMIT:
        compact = np.where(positive, labels, 0).astype(np.int32, copy=False)
        counts = np.bincount(compact.ravel(), minlength=max_label + 1)
        ids = np.nonzero(counts[1:])[0] + 1
        id_to_compact = {int(i): int(i) for i in ids}
        boxes = ndimage.find_objects(compact, max_label=max_label)
    else:
        uniq, inverse = np.unique(np.where(positive, labels, 0), return_inverse=True)
        compact = inverse.reshape(labels.shape).astype(np.int32)
        if uniq[0] != 0:  # no background pixel at all: shift so compact ids start at 1
            compact += 1
            uniq = np.concatenate([[0], uniq])
        counts = np.bincount(compact.ravel(), minlength=len(uniq))
        ids = uniq[1:]
        id_to_compact = {int(i): k + 1 for k, i in enumerate(ids)}
        boxes = ndimage.find_objects(compact, max_label=len(uniq) - 1)
    out = []
    for inst in ids:
        k = id_to_compact[int(inst)]
        box = boxes[k - 1]
        if box is None:
            continue
        out.append(_Candidate(int(inst), int(counts[k]), box[0], box[1], k))
    return out


def _flying_pixels(depth: NDArray[np.floating]) -> NDArray[np.bool_]:
    """(h, w) bool: pixels whose relative depth jump to a valid 4-neighbour exceeds
    ``FLYING_PIXEL_REL_JUMP``. NaN pixels and NaN neighbours never flag."""
    d = depth.astype(np.float64, copy=False)
    flying = np.zeros(d.shape, dtype=bool)
    thr = C.FLYING_PIXEL_REL_JUMP
    with np.errstate(invalid="ignore", divide="ignore"):
        dv = np.abs(d[1:, :] - d[:-1, :])
        jump_v = dv > thr * np.minimum(d[1:, :], d[:-1, :])
        flying[1:, :] |= jump_v
        flying[:-1, :] |= jump_v
        dh = np.abs(d[:, 1:] - d[:, :-1])
        jump_h = dh > thr * np.minimum(d[:, 1:], d[:, :-1])
        flying[:, 1:] |= jump_h
        flying[:, :-1] |= jump_h
    return flying


def _grid_neighbour_inliers(
    points: NDArray[np.float64],
    v: NDArray[np.integer],
    u: NDArray[np.integer],
    stride: int,
    std_ratio: float,
) -> NDArray[np.bool_]:
    """Statistical outlier removal on the organised point cloud.

    Each point's statistic is its mean 3-D distance to the kept points among its 8
    neighbours on the (decimated) pixel grid; a point is an outlier when that mean exceeds
    the mean over all points by more than ``std_ratio`` standard deviations, or when none
    of its 8 grid neighbours was kept (an isolated pixel). This is the image-space form of
    the k-nearest-neighbour filter (k = 8): linear in the number of points, no search tree.

    Args:
        points: (N, 3) camera-frame points, metres.
        v, u: (N,) pixel rows and columns of the points, all multiples of ``stride``.
        stride: pixel spacing of the decimated grid.
        std_ratio: threshold in standard deviations.

    Returns:
        (N,) bool, True for inliers.
    """
    n = len(points)
    if n < 2:
        return np.ones(n, dtype=bool)
    gi = (v - v.min()) // stride
    gj = (u - u.min()) // stride
    gh, gw = int(gi.max()) + 3, int(gj.max()) + 3
    grid = np.full((gh, gw, 3), np.nan)  # one empty ring around the points
    grid[gi + 1, gj + 1] = points
    centre = grid[1:-1, 1:-1]
    total = np.zeros(centre.shape[:2])
    count = np.zeros(centre.shape[:2], dtype=np.int32)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di == 0 and dj == 0:
                continue
            nb = grid[1 + di : gh - 1 + di, 1 + dj : gw - 1 + dj]
            d = np.sqrt(((nb - centre) ** 2).sum(axis=2))
            ok = np.isfinite(d)
            total += np.where(ok, d, 0.0)
            count += ok
    cnt = count[gi, gj]
    mean_d = np.where(cnt > 0, total[gi, gj] / np.maximum(cnt, 1), np.inf)
    connected = cnt > 0
    if not connected.any():
        return connected
    stats = mean_d[connected]
    thr = float(stats.mean() + std_ratio * stats.std())
    return mean_d <= thr


def _observe_one(
    frame: RGBDFrame,
    depth_full: NDArray[np.floating],
    labels_full: NDArray[np.integer],
    cand: _Candidate,
    config: PipelineConfig,
) -> tuple[ObjectObservation | None, str]:
    """Filter one object's pixels; returns (observation or None, reason when None)."""
    h, w = labels_full.shape
    margin = max(config.mask_erosion_px, C.OCCLUDER_DILATION_PX) + 1
    r0 = max(cand.rows.start - margin, 0)
    r1 = min(cand.rows.stop + margin, h)
    c0 = max(cand.cols.start - margin, 0)
    c1 = min(cand.cols.stop + margin, w)
    lab = labels_full[r0:r1, c0:c1]
    dep = depth_full[r0:r1, c0:c1].astype(np.float64)
    mask = lab == cand.instance_id
    n_mask = int(mask.sum())

    # erosion; border_value=1 so that the image border does not erode the mask
    work = mask
    if config.mask_erosion_px > 0:
        eroded = ndimage.binary_erosion(mask, iterations=config.mask_erosion_px, border_value=1)
        n_eroded = int(eroded.sum())
        if n_eroded >= max(config.min_depth_points, C.EROSION_MIN_KEEP_FRACTION * n_mask):
            work = eroded
        else:
            logger.debug(
                "object %d: erosion by %d px leaves %d of %d pixels; using the raw mask",
                cand.instance_id,
                config.mask_erosion_px,
                n_eroded,
                n_mask,
            )

    with np.errstate(invalid="ignore"):
        valid = np.isfinite(dep) & (dep >= config.depth_min) & (dep <= config.depth_max)
    dep_valid = np.where(valid, dep, np.nan)
    flying = _flying_pixels(dep_valid)
    sel = work & valid & ~flying
    n_valid_depth = int((work & valid).sum())
    vv, uu = np.nonzero(sel)
    n_sel = len(vv)
    stride = 1
    if n_sel > C.MAX_OBSERVATION_POINTS:
        stride = math.ceil(math.sqrt(n_sel / C.MAX_OBSERVATION_POINTS))
        keep = ((vv + r0) % stride == 0) & ((uu + c0) % stride == 0)
        vv, uu = vv[keep], uu[keep]
    z = dep[vv, uu]

    def _too_few(stage: str, count: int) -> tuple[None, str]:
        return None, (
            f"{count} depth points after {stage} < min_depth_points={config.min_depth_points} "
            f"(mask {n_mask} px, {n_valid_depth} with valid depth in "
            f"[{config.depth_min}, {config.depth_max}] m, {n_sel} after flying-pixel removal)"
        )

    if len(z) < config.min_depth_points:
        return _too_few("depth validity and flying-pixel filters", len(z))

    # robust depth band around the median depth
    med = float(np.median(z))
    mad = float(np.median(np.abs(z - med)))
    band = max(C.OUTLIER_MAD_K * _MAD_TO_STD * mad, C.OUTLIER_MIN_DEPTH_BAND)
    inband = np.abs(z - med) <= band
    vv, uu, z = vv[inband], uu[inband], z[inband]
    if len(z) < config.min_depth_points:
        return _too_few("the median-depth band filter", len(z))

    u_img = uu + c0
    v_img = vv + r0
    points = frame.camera.backproject(u_img, v_img, z)

    # statistical outlier removal on the mean distance to the pixel-grid neighbours
    inlier = _grid_neighbour_inliers(points, v_img, u_img, stride, config.outlier_std_ratio)
    points, u_img, v_img, z = points[inlier], u_img[inlier], v_img[inlier], z[inlier]
    if len(z) < config.min_depth_points:
        return _too_few("statistical outlier removal", len(z))

    # occluders: other objects' pixels near (or inside holes of) the mask that are in front
    med_z = float(np.median(z))
    near = ndimage.binary_dilation(mask, iterations=C.OCCLUDER_DILATION_PX) | ndimage.binary_fill_holes(mask)
    with np.errstate(invalid="ignore"):
        occ_crop = near & (lab > 0) & ~mask & valid & (dep < med_z - C.OCCLUDER_DEPTH_MARGIN)

    full_mask = np.zeros((h, w), dtype=bool)
    full_mask[r0:r1, c0:c1] = mask
    full_occ = np.zeros((h, w), dtype=bool)
    full_occ[r0:r1, c0:c1] = occ_crop
    pixels = np.stack([u_img, v_img], axis=1).astype(np.int32)
    score = float(frame.scores.get(cand.instance_id, 1.0))
    return (
        ObjectObservation(
            instance_id=cand.instance_id,
            mask=full_mask,
            points=points.astype(np.float64, copy=False),
            pixels=pixels,
            occluder_mask=full_occ,
            score=score,
        ),
        "",
    )
