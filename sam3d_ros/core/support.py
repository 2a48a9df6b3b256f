"""What each object rests on: the support plane (the table) or the top of another object,
found from the depth where the object's mask meets its neighbours (local support).

For an object whose lowest observed points lie on the plane (within
:data:`~sam3d_ros.core.constants.SUPPORT_ON_PLANE_HEIGHT`) the support is the plane. For
one whose lowest observed points lie higher, the pixels in a ring of
:data:`~sam3d_ros.core.constants.SUPPORT_RING_PX` around its mask that belong to another
object are contact candidates: a candidate counts when its 3D point lies within
:data:`~sam3d_ros.core.constants.SUPPORT_CONTACT_DIST` of the object's nearest pixel's
point, that point lies in the object's bottom band (at most
:data:`~sam3d_ros.core.constants.SUPPORT_BOTTOM_BAND` above its lowest observed point)
and the neighbour is not above it. The neighbour with the most contacts (at least
:data:`~sam3d_ros.core.constants.SUPPORT_MIN_CONTACTS`) is the support; its contact
height is the median height of its contact points. A neighbour that merely occludes the
object's bottom lies in front of it, centimetres nearer to the camera, and makes no
contacts. Otherwise the support is unknown (an occluded bottom on the table looks the
same): nothing is changed for that object.

A stacked object cannot reach below the top of what it rests on: :func:`cut_below`
empties the voxels of its shape below the contact height (minus
:data:`~sam3d_ros.core.constants.SUPPORT_CUT_TOL`), so it is no longer completed down to
the table. All in the camera optical frame, metres; heights are above the support plane.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from sam3d_ros.core import constants as C
from sam3d_ros.core.frames import rotation_from_z_and_x
from sam3d_ros.core.object_frame import support_normal
from sam3d_ros.core.types import ObjectObservation, RGBDFrame, SupportPlane, VoxelShape

logger = logging.getLogger(__name__)

#: ``Support.instance_id`` of an object standing on the support plane.
ON_PLANE: Final[int] = 0
#: ``Support.instance_id`` when what the object rests on was not found.
UNKNOWN: Final[int] = -1


@dataclass(frozen=True)
class Support:
    """What one object rests on.

    Attributes:
        instance_id: :data:`ON_PLANE`, the instance label of the supporting object (> 0),
            or :data:`UNKNOWN`.
        height: the contact height above the support plane, metres (0 on the plane; NaN
            when unknown).
        contacts: contact pixels found with the supporting object (0 otherwise).
    """

    instance_id: int
    height: float
    contacts: int = 0

    @property
    def on_object(self) -> bool:
        """The object rests on another object."""
        return self.instance_id > 0


#: An unknown support: not found, or not looked for.
NO_SUPPORT: Final[Support] = Support(UNKNOWN, float("nan"))


def find_supports(
    frame: RGBDFrame, plane: SupportPlane | None, observations: Sequence[ObjectObservation]
) -> dict[int, Support]:
    """The support of every observed object, by instance id (see the module docstring);
    all unknown without a usable plane."""
    support = support_normal(plane)
    if support is None:
        return {o.instance_id: NO_SUPPORT for o in observations}
    n, off = support
    # plane coordinates of every object's observed points, for the footprint test
    e = rotation_from_z_and_x(n, np.array([1.0, 0.0, 0.0]))[:, :2]
    flat = {o.instance_id: np.asarray(o.points, dtype=np.float64) @ e for o in observations}
    return {o.instance_id: _support_of(frame, o, n, off, flat) for o in observations}


def contact_heights(supports: Mapping[int, Support]) -> dict[int, float]:
    """Instance id -> contact height above the plane (metres) of the objects resting on
    another object (``SceneContext.support_heights``; the stage-2 encoding's ground)."""
    return {i: s.height for i, s in supports.items() if s.on_object and np.isfinite(s.height)}


def _under(centre: NDArray[np.float64], footprint: NDArray[np.float64] | None) -> bool:
    """``centre`` (2,) lies within the convex footprint (N, 2) of a neighbour's observed
    points, grown by ``SUPPORT_FOOTPRINT_MARGIN``: the neighbour extends under it."""
    if footprint is None or len(footprint) < 3:
        return False
    try:
        hull = ConvexHull(footprint)
    except (QhullError, ValueError):
        return False
    # hull.equations: (F, 3) with unit normals, a . x + b <= 0 inside
    return bool(np.all(hull.equations[:, :2] @ centre + hull.equations[:, 2] <= C.SUPPORT_FOOTPRINT_MARGIN))


def _support_of(
    frame: RGBDFrame,
    obs: ObjectObservation,
    n: NDArray[np.float64],
    off: float,
    flat: dict[int, NDArray[np.float64]],
) -> Support:
    pts = np.asarray(obs.points, dtype=np.float64)
    if len(pts) == 0:
        return NO_SUPPORT
    h_low = float(np.percentile(pts @ n + off, C.SUPPORT_LOW_PERCENTILE))
    if h_low <= C.SUPPORT_ON_PLANE_HEIGHT:
        return Support(ON_PLANE, 0.0)
    labels = np.asarray(frame.labels)
    own = np.asarray(obs.mask, dtype=bool)  # the object's pixels in the label image
    rows, cols = np.nonzero(own)
    if len(rows) == 0:
        return NO_SUPPORT
    r = C.SUPPORT_RING_PX
    h_img, w_img = labels.shape
    r0, r1 = max(0, int(rows.min()) - r), min(h_img, int(rows.max()) + r + 1)
    c0, c1 = max(0, int(cols.min()) - r), min(w_img, int(cols.max()) + r + 1)
    own_c = own[r0:r1, c0:c1]
    lab_c = labels[r0:r1, c0:c1]
    depth_c = np.asarray(frame.depth, dtype=np.float64)[r0:r1, c0:c1]
    # for every pixel, the nearest pixel of the object's mask
    dist, (near_r, near_c) = ndimage.distance_transform_edt(~own_c, return_indices=True)
    ring = (dist > 0) & (dist <= r) & np.isfinite(depth_c)
    rr, cc = np.nonzero(ring)
    if len(rr) == 0:
        return NO_SUPPORT
    mr, mc = near_r[rr, cc], near_c[rr, cc]
    z_n, z_o = depth_c[rr, cc], depth_c[mr, mc]
    ok = np.isfinite(z_o) & (z_n > 0) & (z_o > 0)
    rr, cc, mr, mc, z_n, z_o = rr[ok], cc[ok], mr[ok], mc[ok], z_n[ok], z_o[ok]
    cam = frame.camera
    p_n = cam.backproject(cc + c0, rr + r0, z_n)
    p_o = cam.backproject(mc + c0, mr + r0, z_o)
    h_n, h_o = p_n @ n + off, p_o @ n + off
    contact = (
        (np.linalg.norm(p_n - p_o, axis=1) <= C.SUPPORT_CONTACT_DIST)
        & (h_o <= h_low + C.SUPPORT_BOTTOM_BAND)
        & (h_n <= h_o + C.SUPPORT_ABOVE_TOL)
    )
    if not contact.any():
        return NO_SUPPORT
    other = lab_c[rr[contact], cc[contact]]
    # its own bottom points on the plane, touching table pixels: on the plane (the lowest
    # percentile above may be off the plane for an object seen mostly from above)
    on_table = (other == 0) & (np.maximum(h_n, h_o)[contact] <= C.SUPPORT_ON_PLANE_HEIGHT)
    if int(on_table.sum()) >= C.SUPPORT_MIN_CONTACTS:
        return Support(ON_PLANE, 0.0)
    ids, counts = np.unique(other[other > 0], return_counts=True)
    centre = flat[obs.instance_id].mean(axis=0)
    for k in np.argsort(-counts, kind="stable"):
        if counts[k] < C.SUPPORT_MIN_CONTACTS:
            break
        # a neighbour in front of the object's bottom touches it too: a support lies under it
        if _under(centre, flat.get(int(ids[k]))):
            height = float(np.median(h_n[contact][other == ids[k]]))
            return Support(int(ids[k]), height, int(counts[k]))
    return NO_SUPPORT


def cut_below(shape: VoxelShape, plane: SupportPlane, height: float) -> VoxelShape | None:
    """``shape`` with the occupancy of every voxel whose centre lies below ``height`` above
    ``plane`` set to 0; None when nothing above the cut would stay occupied (the caller
    keeps the shape as it was)."""
    support = support_normal(plane)
    if support is None:
        return None
    n, off = support
    occ = np.asarray(shape.occupancy, dtype=np.float32)
    T = np.asarray(shape.camera_T_grid, dtype=np.float64)
    # height of voxel (i, j, k)'s centre = n . (R (origin + (ijk + 0.5) v) + t) + off: linear in i, j, k
    g = np.asarray(T[:3, :3].T @ n, dtype=np.float64)  # n in the grid frame
    v = float(shape.voxel_size)
    base = float(n @ T[:3, 3] + off + g @ (np.asarray(shape.origin, dtype=np.float64) + 0.5 * v))
    axes = [np.arange(d, dtype=np.float64) * v * g[a] for a, d in enumerate(occ.shape)]
    h = base + axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]
    below = h < height
    if not below.any():
        return shape
    cut = np.where(below, np.float32(0.0), occ)
    if not (cut > C.SUPPORT_KEEP_OCCUPANCY).any():
        return None
    return VoxelShape(
        occupancy=cut,
        voxel_size=shape.voxel_size,
        origin=shape.origin,
        camera_T_grid=shape.camera_T_grid,
        confidence=shape.confidence,
    )
