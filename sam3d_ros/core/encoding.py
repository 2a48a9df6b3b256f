"""Observation encoding for the learned geometry and layout network (pure numpy).

Every object is encoded on a cubic ``GRID_SIZE``^3 voxel grid in an object-centric,
scale-normalised frame ``G`` built like the grid frame of the geometric completion
(:mod:`sam3d_ros.core.completion`):

* z along the support-plane normal (camera "up" without a plane), x/y along the principal
  axes of the observed footprint; the origin of ``G`` is the observed centroid projected
  onto the support plane (``camera_T_grid`` maps ``G`` to the camera optical frame);
* the cube's side is ``side = clip(EXTENT_FACTOR * observed extent, MIN_SIDE, MAX_SIDE)``
  metres (the extent is the largest of the footprint's robust x/y ranges and the height of
  the top above the floor), so every object fills a similar part of the grid;
* horizontally the cube is centred on the observed footprint, shifted away from the camera
  by ``BACK_SHIFT * side`` along the horizontal viewing direction (the hidden back lies
  there); vertically it starts ``FLOOR_VOXELS`` voxels below the support plane.

A two-stage model's stage 2 encodes the object again on the cube its stage-1 amodal box
places (:func:`stage2_cube`). With local support (a model trained so says
``stage2_local_support`` in its manifest's encoding) an object resting on another object
has its *ground* at that object's contact height minus ``SUPPORT_CUT_TOL``:
the cube starts ``FLOOR_VOXELS`` voxels below the ground instead of the table, and the
``below_plane`` channel marks everything below the ground (the supporting object's top).

Channels (``CHANNELS``; float32, (C, N, N, N) indexed [c, i, j, k] along x, y, z of ``G``):

0 ``observed``: 1 where an observed surface point of the object falls in the voxel;
1 ``free``: the voxel centre projects onto a pixel with valid depth that lies beyond the
  centre (the camera saw through the voxel): definitely empty;
2 ``unknown``: neither free nor observed (behind a surface or an occluder, no valid depth,
  outside the image);
3 ``below_plane``: the voxel centre is below the ground: the support plane, or (stage 2 with
  local support) the top of the object it rests on (0 everywhere without a plane);
4 ``mask``: the centre projects into the object's own mask (pixel-aligned, CUPID-style);
5 ``occluder``: the centre projects into the occluder mask (other objects in front);
6-8 ``red``, ``green``, ``blue``: colour at the projected pixel in [0, 1];
9 ``tsdf``: projective truncated signed distance ``clip((depth - z) / (TSDF_TRUNC_VOXELS *
  voxel), -1, 1)`` along the ray (positive in front of the measured surface); 0 without
  a valid measurement.

Everything is vectorised over the grid (a few milliseconds per object).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core import constants as C
from sam3d_ros.core.frames import make_transform
from sam3d_ros.core.object_frame import support_axes
from sam3d_ros.core.types import ObjectObservation, SceneContext, SupportPlane

logger = logging.getLogger(__name__)

#: Voxels along each axis of the network's cube.
GRID_SIZE: Final[int] = 32
#: Names of the input channels, in order.
CHANNELS: Final[tuple[str, ...]] = (
    "observed",
    "free",
    "unknown",
    "below_plane",
    "mask",
    "occluder",
    "red",
    "green",
    "blue",
    "tsdf",
)
NUM_CHANNELS: Final[int] = len(CHANNELS)
#: Cube side = EXTENT_FACTOR * observed extent (m), clipped to [MIN_SIDE, MAX_SIDE].
EXTENT_FACTOR: Final[float] = 1.6
MIN_SIDE: Final[float] = 0.06
MAX_SIDE: Final[float] = 1.2
#: The cube centre is moved away from the camera by this fraction of the side.
BACK_SHIFT: Final[float] = 0.12
#: The support plane lies this many voxels above the bottom of the cube.
FLOOR_VOXELS: Final[int] = 2
#: Stage 2 (amodal-box cube): side = AMODAL_EXTENT_FACTOR * extent of the union of the
#: observed box and the amodal box grown by AMODAL_BOX_PAD (relative) + AMODAL_BOX_PAD_M.
AMODAL_EXTENT_FACTOR: Final[float] = 1.25
AMODAL_BOX_PAD: Final[float] = 0.15
AMODAL_BOX_PAD_M: Final[float] = 0.01
#: ... a stage-1 box is at most this many stage-1 cube sides long along each axis (a
#: saturated size output of a barely seen object would otherwise give a metre-wide cube;
#: 1.2 % of the validation objects are longer than this relative to their stage-1 cube).
AMODAL_MAX_BOX_SIDES: Final[float] = 2.5
#: Truncation of the projective TSDF channel, in voxels.
TSDF_TRUNC_VOXELS: Final[float] = 3.0


class EncodingError(ValueError):
    """Raised for observations that cannot be encoded (too few or non-finite points)."""


@dataclass(frozen=True)
class GridFrame:
    """Where an object's cube lies.

    Attributes:
        camera_T_grid: (4, 4) float64, grid frame ``G`` -> camera optical frame.
        origin: (3,) float64 corner of voxel (0, 0, 0) in ``G``, metres.
        voxel_size: voxel edge, metres (``side / GRID_SIZE``).
        side: cube side, metres (the scale normalisation: normalised = metres / side).
        plane_used: whether z is the support-plane normal (else the camera's up).
        ground: height in ``G`` (metres above the plane) of the surface the object rests
            on: 0 for the plane, higher for an object on another object (stage 2 with
            local support); below it the ``below_plane`` channel is 1.
    """

    camera_T_grid: NDArray[np.float64]
    origin: NDArray[np.float64]
    voxel_size: float
    side: float
    plane_used: bool
    ground: float = 0.0

    @property
    def centre(self) -> NDArray[np.float64]:
        """(3,) centre of the cube in ``G``, metres."""
        return self.origin + 0.5 * self.side

    def voxel_centres(self, n: int = GRID_SIZE, supersample: int = 1) -> NDArray[np.float64]:
        """Centres in ``G`` (metres) of an ``n``^3 grid over the cube, each voxel split into
        ``supersample``^3 sub-voxels: (n * s, n * s, n * s, 3) float64, [i, j, k] order."""
        m = n * supersample
        c = self.origin[None, :] + (np.arange(m)[:, None] + 0.5) * (self.side / m)
        gx, gy, gz = np.meshgrid(c[:, 0], c[:, 1], c[:, 2], indexing="ij")
        return np.stack([gx, gy, gz], axis=-1)


@dataclass(frozen=True)
class _ObservedExtent:
    """The axes of ``G`` and the observed points' robust box in it (metres)."""

    R: NDArray[np.float64]
    base: NDArray[np.float64]
    lo: NDArray[np.float64]
    hi: NDArray[np.float64]
    floor: float
    plane_used: bool
    P: NDArray[np.float64]


def _observed_extent(points: NDArray[np.floating], plane: SupportPlane | None) -> _ObservedExtent:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) < C.MIN_OBJECT_POINTS:
        raise EncodingError(f"{len(pts)} finite points < MIN_OBJECT_POINTS={C.MIN_OBJECT_POINTS}")
    axes = support_axes(pts, plane)
    R, base, pts, plane_used = axes.R, axes.base, axes.points, axes.plane_used
    P = (pts - base) @ R
    lo = np.percentile(P, C.ENCODING_EXTENT_PERCENTILES[0], axis=0)
    hi = np.percentile(P, C.ENCODING_EXTENT_PERCENTILES[1], axis=0)
    floor = 0.0 if plane_used else float(lo[2])
    return _ObservedExtent(R=R, base=base, lo=lo, hi=hi, floor=floor, plane_used=plane_used, P=P)


def _cube(
    ob: _ObservedExtent, centre_xy: NDArray[np.float64], side: float, floor: float, ground: float = 0.0
) -> GridFrame:
    """The cube of side ``side`` in ``ob``'s axes, centred on ``centre_xy`` horizontally,
    its bottom ``FLOOR_VOXELS`` voxels below the height ``floor``; ``ground``: see
    :class:`GridFrame`."""
    voxel = side / GRID_SIZE
    origin = np.array([centre_xy[0] - side / 2, centre_xy[1] - side / 2, floor - FLOOR_VOXELS * voxel])
    return GridFrame(
        camera_T_grid=make_transform(ob.R, ob.base),
        origin=origin,
        voxel_size=voxel,
        side=side,
        plane_used=ob.plane_used,
        ground=ground,
    )


def grid_frame(points: NDArray[np.floating], plane: SupportPlane | None) -> GridFrame:
    """The object-centric cube of one object from its observed extent (stage 1; see the
    module docstring).

    Args:
        points: (N, 3) observed surface points in the camera frame, metres.
        plane: the support plane, or None.

    Raises:
        EncodingError: fewer than ``MIN_OBJECT_POINTS`` finite points.
    """
    ob = _observed_extent(points, plane)
    lo, hi, floor = ob.lo, ob.hi, ob.floor
    extent = max(float(hi[0] - lo[0]), float(hi[1] - lo[1]), float(hi[2]) - floor)
    side = float(np.clip(EXTENT_FACTOR * extent, MIN_SIDE, MAX_SIDE))
    # horizontal viewing direction in G (camera centre is the camera-frame origin)
    cam_G = (-ob.base) @ ob.R
    centre_xy = 0.5 * (lo[:2] + hi[:2])
    horiz = centre_xy - cam_G[:2]
    dist = float(np.linalg.norm(ob.P.mean(axis=0) - cam_G))
    if float(np.linalg.norm(horiz)) >= C.TOP_DOWN_RATIO * max(dist, 1e-9):
        centre_xy = centre_xy + BACK_SHIFT * side * horiz / float(np.linalg.norm(horiz))
    return _cube(ob, centre_xy, side, floor)


def decode_layout(
    layout: NDArray[np.floating], gf: GridFrame
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The amodal box of one layout row (the network's ``layout`` output on the cube ``gf``):
    (camera_T_box (4, 4) float64, size (3,) full extents in metres), x along the longer
    horizontal side, z along the cube's z (support normal)."""
    lay = np.asarray(layout, dtype=np.float64).reshape(-1)
    centre_g = gf.centre + lay[:3] * gf.side
    size = np.exp(np.clip(lay[3:6], -6.0, 2.0)) * gf.side
    yaw = 0.5 * float(np.arctan2(lay[6], lay[7]))
    c, s = np.cos(yaw), np.sin(yaw)
    grid_T_box = make_transform(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), centre_g)
    return gf.camera_T_grid @ grid_T_box, size


def stage2_cube(
    scene: SceneContext,
    obs: ObjectObservation,
    stage1: GridFrame,
    layout: NDArray[np.floating],
    *,
    local_support: bool,
) -> GridFrame:
    """The stage-2 cube of ``obs``: :func:`stage2_grid_frame` on its points and the scene's
    plane, grounded (``local_support``: the model was trained so) on the contact height
    ``scene.support_heights`` holds for it. The one rule of inference (the learned
    backends) and training (the stage-2 datasets).

    Raises:
        EncodingError: see :func:`amodal_grid_frame`.
    """
    ground = scene.support_heights.get(obs.instance_id) if local_support else None
    return stage2_grid_frame(obs.points, scene.plane, stage1, layout, ground)


def stage2_grid_frame(
    points: NDArray[np.floating],
    plane: SupportPlane | None,
    stage1: GridFrame,
    layout: NDArray[np.floating],
    support_height: float | None = None,
) -> GridFrame:
    """The stage-2 cube of one object from stage 1's layout row on its cube ``stage1``: the
    decoded box (:func:`decode_layout`), each size at most ``AMODAL_MAX_BOX_SIDES`` stage-1
    sides, through :func:`amodal_grid_frame` (``support_height``: the contact height above
    the plane of the object it rests on, or None).

    Raises:
        EncodingError: see :func:`amodal_grid_frame`.
    """
    camera_T_box, size = decode_layout(layout, stage1)
    return amodal_grid_frame(
        points,
        plane,
        camera_T_box,
        np.minimum(size, AMODAL_MAX_BOX_SIDES * stage1.side),
        support_height=support_height,
    )


def amodal_grid_frame(
    points: NDArray[np.floating],
    plane: SupportPlane | None,
    camera_T_box: NDArray[np.floating],
    box_size: NDArray[np.floating],
    support_height: float | None = None,
) -> GridFrame:
    """The stage-2 cube of one object, placed and sized by its amodal box (stage 1's layout).

    Same axes as :func:`grid_frame`. In ``G`` the cube covers the union of the observed
    points' robust box and the amodal box grown by ``AMODAL_BOX_PAD`` (relative) plus
    ``AMODAL_BOX_PAD_M``; its side is ``AMODAL_EXTENT_FACTOR`` times the union's largest
    extent (clipped to [MIN_SIDE, MAX_SIDE]), centred on the union horizontally. Vertically
    the cube starts ``FLOOR_VOXELS`` voxels below the union's bottom, never below the support
    plane's floor: an object the box puts on top of another one is not completed down to the
    table. So the hidden part the box predicts lies inside the cube, and an object that is
    fully seen gets a tighter cube (finer voxels) than stage 1's. With ``support_height``
    (local support found the object on another object; the plane is used) the ground is
    that height minus ``SUPPORT_CUT_TOL``: the cube's floor is never below it, however low
    the box reaches, and the cube's ``ground`` says so.

    Args:
        points: (N, 3) observed surface points, camera frame, metres.
        plane: the support plane, or None.
        camera_T_box: (4, 4) pose of the amodal box (centre and axes) in the camera frame.
        box_size: (3,) full box extents along its axes, metres.
        support_height: contact height (metres above the plane) of the object this one
            rests on, or None (on the plane, or not known).

    Raises:
        EncodingError: too few points, or a non-finite box.
    """
    ob = _observed_extent(points, plane)
    box = np.asarray(camera_T_box, dtype=np.float64)
    size = np.asarray(box_size, dtype=np.float64).reshape(-1)
    if (
        box.shape != (4, 4)
        or size.shape != (3,)
        or not (np.all(np.isfinite(box)) and np.all(np.isfinite(size)))
    ):
        raise EncodingError(f"amodal box is not a finite 4x4 pose and 3 sizes: {box!r}, {size!r}")
    half = 0.5 * np.abs(size) * (1.0 + AMODAL_BOX_PAD) + AMODAL_BOX_PAD_M
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    cam = corners @ box[:3, :3].T + box[:3, 3]
    in_g = (cam - ob.base) @ ob.R
    lo = np.minimum(ob.lo, in_g.min(axis=0))
    hi = np.maximum(ob.hi, in_g.max(axis=0))
    ground = 0.0
    if ob.plane_used and support_height is not None and np.isfinite(support_height):
        # never above the observed bottom: a wrong contact must not cut off what was seen
        ground = max(0.0, min(float(support_height) - C.SUPPORT_CUT_TOL, float(ob.lo[2])))
    floor = max(float(lo[2]), ob.floor, ground) if ob.plane_used else float(lo[2])
    extent = max(float(hi[0] - lo[0]), float(hi[1] - lo[1]), float(hi[2]) - floor)
    side = float(np.clip(AMODAL_EXTENT_FACTOR * extent, MIN_SIDE, MAX_SIDE))
    centre_xy = 0.5 * (lo[:2] + hi[:2])
    return _cube(ob, centre_xy, side, floor, ground)


def encode_object(
    scene: SceneContext, obs: ObjectObservation, frame: GridFrame | None = None
) -> tuple[NDArray[np.float32], GridFrame]:
    """Encode one observation.

    Args:
        scene: the frame (rgb (H, W, 3) uint8, depth (H, W) float metres, NaN invalid) and
            the support plane.
        obs: the object's points (N, 3) camera frame, mask and occluder mask (H, W) bool.
        frame: the cube to use (default: :func:`grid_frame` of the observation).

    Returns:
        (features (NUM_CHANNELS, GRID_SIZE, GRID_SIZE, GRID_SIZE) float32, the grid frame).

    Raises:
        EncodingError: unusable observation (see :func:`grid_frame`) or image arrays whose
            shapes do not match the depth image.
    """
    gf = frame if frame is not None else grid_frame(obs.points, scene.plane)
    n = GRID_SIZE
    img = scene.frame
    depth = np.asarray(img.depth)
    if depth.ndim != 2:
        raise EncodingError(f"depth must be (H, W), got shape {depth.shape}")
    h, w = depth.shape
    own = np.asarray(obs.mask, dtype=bool)
    occl = np.asarray(obs.occluder_mask, dtype=bool)
    rgb = np.asarray(img.rgb)
    for name, arr in (("mask", own), ("occluder_mask", occl), ("rgb", rgb)):
        if arr.shape[:2] != (h, w):
            raise EncodingError(f"{name} shape {arr.shape} does not match depth {depth.shape}")

    R = gf.camera_T_grid[:3, :3]
    t = gf.camera_T_grid[:3, 3]
    vs = gf.voxel_size
    c = gf.origin[None, :] + (np.arange(n)[:, None] + 0.5) * vs  # (n, 3) centres per axis
    # camera coordinates of every centre, separable: cam = t + R[:,0] x + R[:,1] y + R[:,2] z
    cam = [
        t[a] + R[a, 0] * c[:, 0, None, None] + R[a, 1] * c[None, :, 1, None] + R[a, 2] * c[None, None, :, 2]
        for a in range(3)
    ]
    xc, yc, zc = cam
    k = img.camera
    ui, vi, inside = k.pixel_indices(xc, yc, zc)
    # one flat pixel index, then 1-D gathers (cheaper than 2-D fancy indexing)
    lin = vi * w + ui
    meas = np.take(depth.reshape(-1), lin).astype(np.float64, copy=False)
    with np.errstate(invalid="ignore"):
        valid = inside & np.isfinite(meas) & (meas > 0)
    margin = max(C.CARVE_MIN_MARGIN, 0.5 * vs)
    with np.errstate(invalid="ignore"):
        free = valid & (meas > zc + margin)
        tsdf = np.where(valid, np.clip((meas - zc) / (TSDF_TRUNC_VOXELS * vs), -1.0, 1.0), 0.0)

    feats = np.zeros((NUM_CHANNELS, n, n, n), dtype=np.float32)
    P = (np.asarray(obs.points, dtype=np.float64).reshape(-1, 3) - t) @ R
    idx = np.floor((P - gf.origin) / vs).astype(np.int64)
    ok = np.all((idx >= 0) & (idx < n), axis=1)
    observed = np.zeros((n, n, n), dtype=bool)
    observed[idx[ok, 0], idx[ok, 1], idx[ok, 2]] = True
    feats[0] = observed
    feats[1] = free & ~observed
    feats[2] = ~free & ~observed
    if gf.plane_used:
        feats[3] = (c[:, 2] < gf.ground)[None, None, :]
    feats[4] = inside & np.take(own.reshape(-1), lin)
    feats[5] = inside & np.take(occl.reshape(-1), lin)
    if rgb.ndim == 3 and rgb.shape[2] >= 3:
        cols = np.take(rgb.reshape(h * w, rgb.shape[2]), lin.reshape(-1), axis=0)  # (n^3, C) uint8
        scale = np.float32(1.0 / 255.0)
        for ch in range(3):
            col = cols[:, ch].astype(np.float32).reshape(n, n, n) * scale
            feats[6 + ch] = np.where(inside, col, np.float32(0.0))
    feats[9] = tsdf
    return feats, gf


def encode_objects(
    scene: SceneContext, observations: Sequence[ObjectObservation]
) -> tuple[NDArray[np.float32], list[GridFrame | None]]:
    """Encode all objects of a frame into one batch.

    Returns:
        (inputs (B, NUM_CHANNELS, N, N, N) float32 for the B encodable objects, one grid frame
        per observation in order, None where the observation could not be encoded; the
        batch rows follow the non-None entries in order).
    """
    feats: list[NDArray[np.float32]] = []
    frames: list[GridFrame | None] = []
    for obs in observations:
        try:
            f, gf = encode_object(scene, obs)
        except EncodingError as err:
            logger.debug("object %d not encoded: %s", obs.instance_id, err)
            frames.append(None)
            continue
        feats.append(f)
        frames.append(gf)
    if not feats:
        return np.zeros((0, NUM_CHANNELS, GRID_SIZE, GRID_SIZE, GRID_SIZE), dtype=np.float32), frames
    return np.stack(feats), frames
