"""Typed, frozen data carried between the pipeline stages.

All 3D quantities are in metres. "camera frame" means the optical frame of the input
images (REP 103: x right, y down, z forward). Arrays are not copied on construction:
treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import Pose


@dataclass(frozen=True)
class RGBDFrame:
    """One synchronized input frame.

    Attributes:
        stamp_ns: header stamp of the colour image, nanoseconds since the epoch.
        frame_id: the colour image's frame_id (the camera optical frame).
        rgb: (H, W, 3) uint8, RGB channel order.
        depth: (H, W) float32 depth in metres along the optical axis; invalid pixels NaN.
        labels: (H, W) int32 instance labels; 0 is background.
        camera: intrinsics of the (aligned) images.
        scores: optional upstream score per instance label.
    """

    stamp_ns: int
    frame_id: str
    rgb: NDArray[np.uint8]
    depth: NDArray[np.float32]
    labels: NDArray[np.int32]
    camera: CameraIntrinsics
    scores: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SupportPlane:
    """A plane ``normal . p + offset = 0`` in the camera frame.

    ``normal`` is a unit (3,) vector pointing from the plane towards the camera (up, out of
    the table), so points above the table have positive signed distance.

    ``noise_z2``: the depth noise measured on the plane, as the axial standard deviation
    per squared metre of depth (m / m^2): ``sigma(z) = noise_z2 * z^2`` (triangulating
    sensors' noise grows with the square of the range); 0 when unknown.
    """

    normal: NDArray[np.float64]
    offset: float
    inlier_count: int = 0
    noise_z2: float = 0.0

    def axial_sigma(self, depth: NDArray[np.floating] | float) -> NDArray[np.float64]:
        """Axial depth noise (m) at ``depth`` (m), from :attr:`noise_z2`; same shape."""
        z = np.asarray(depth, dtype=np.float64)
        return self.noise_z2 * z * z

    def signed_distance(self, points: NDArray[np.floating]) -> NDArray[np.float64]:
        """Signed distance (m) of (N, 3) points; positive above the plane."""
        return np.asarray(points, dtype=np.float64).reshape(-1, 3) @ self.normal + self.offset


@dataclass(frozen=True)
class ObjectObservation:
    """What the camera saw of one masked object, after filtering.

    Attributes:
        instance_id: the mask label (> 0).
        mask: (H, W) bool, the object's pixels in the label image.
        points: (N, 3) float64 filtered surface points in the camera frame.
        pixels: (N, 2) int32 (u, v) pixel of each point.
        occluder_mask: (H, W) bool, pixels of other objects that are in front of this one.
        score: upstream score (1.0 when none).
    """

    instance_id: int
    mask: NDArray[np.bool_]
    points: NDArray[np.float64]
    pixels: NDArray[np.int32]
    occluder_mask: NDArray[np.bool_]
    score: float = 1.0


@dataclass(frozen=True)
class SceneContext:
    """Frame-level information shared by all objects of a frame.

    Attributes:
        frame: the input frame.
        plane: the support plane, or None when none could be estimated.
        support_heights: instance id -> contact height (metres above ``plane``) of the object
            it rests on, for the objects local support found on another object
            (:mod:`sam3d_ros.core.support`); empty when not looked for.
    """

    frame: RGBDFrame
    plane: SupportPlane | None
    support_heights: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class VoxelShape:
    """Amodal occupancy of one object, the common output of every backend.

    The grid is axis-aligned in its own frame ``G``; voxel (i, j, k) has its centre at
    ``origin + (i + 0.5, j + 0.5, k + 0.5) * voxel_size`` in ``G``.

    Attributes:
        occupancy: (NX, NY, NZ) float32 occupancy probability in [0, 1].
        voxel_size: voxel edge in metres.
        origin: (3,) corner of voxel (0, 0, 0) in frame ``G``, metres.
        camera_T_grid: 4x4 transform from ``G`` to the camera frame.
        confidence: backend confidence in [0, 1].
    """

    occupancy: NDArray[np.float32]
    voxel_size: float
    origin: NDArray[np.float64]
    camera_T_grid: NDArray[np.float64]
    confidence: float


@dataclass(frozen=True)
class TriangleMesh:
    """A triangle mesh: vertices (V, 3) float64 metres and faces (F, 3) int32 indices
    (counter-clockwise seen from outside)."""

    vertices: NDArray[np.float64]
    faces: NDArray[np.int32]


class PrimitiveType(Enum):
    """Collision primitive kinds, numbered as in shape_msgs/SolidPrimitive."""

    BOX = 1
    SPHERE = 2
    CYLINDER = 3


@dataclass(frozen=True)
class CollisionPrimitive:
    """A fitted collision primitive.

    Attributes:
        kind: the primitive type.
        dimensions: as in shape_msgs/SolidPrimitive: BOX (x, y, z) full sizes; SPHERE
            (radius,); CYLINDER (height, radius), axis along the primitive frame's z.
        object_T_primitive: 4x4 pose of the primitive in the object frame.
        fit_error: mean absolute distance (m) of the mesh surface to the primitive surface.
    """

    kind: PrimitiveType
    dimensions: tuple[float, ...]
    object_T_primitive: NDArray[np.float64]
    fit_error: float


@dataclass(frozen=True)
class CollisionShapes:
    """Collision geometry in the object frame.

    Attributes:
        convex_parts: convex meshes; the first is the convex hull of the whole shape.
        primitives: fitted primitives, best (lowest fit error) first.
    """

    convex_parts: tuple[TriangleMesh, ...]
    primitives: tuple[CollisionPrimitive, ...] = ()


@dataclass(frozen=True)
class ObjectResult:
    """The reconstruction of one object.

    Attributes:
        instance_id: the mask label.
        track_id: stable id of the tracked object.
        label: human-readable label.
        score: upstream score.
        pose: the object frame in the camera frame (``camera_T_object``).
        extents: (3,) full size along the object frame's axes, metres.
        mesh: watertight mesh in the object frame.
        collision: collision shapes in the object frame.
        visible_fraction: fraction of the completed surface seen by the camera, [0, 1].
        confidence: [0, 1].
        num_points: number of filtered observed points used.
        cut_by_border: the object's mask touches the image border (within
            ``BORDER_CUT_MARGIN_PX``): part of it is outside the image, its shape there is a
            guess and its collision shapes are padded as completed surface.
        support_id: what it rests on (:mod:`sam3d_ros.core.support`): 0 the support plane
            (table), > 0 the instance label of the object under it, -1 not determined.
    """

    instance_id: int
    track_id: int
    label: str
    score: float
    pose: Pose
    extents: tuple[float, float, float]
    mesh: TriangleMesh
    collision: CollisionShapes
    visible_fraction: float
    confidence: float
    num_points: int
    cut_by_border: bool = False
    support_id: int = -1


class SkipReason(str, Enum):
    """Why a frame or an object was not reconstructed (used as diagnostics keys)."""

    # frame level
    SIZE_MISMATCH = "size_mismatch"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    BAD_DATA_LENGTH = "bad_data_length"
    IMAGE_TOO_LARGE = "image_too_large"
    INVALID_CAMERA_INFO = "invalid_camera_info"
    MISSING_CAMERA_INFO = "missing_camera_info"
    NO_VALID_DEPTH = "no_valid_depth"
    EMPTY_FRAME_ID = "empty_frame_id"
    STALE_STAMP = "stale_stamp"
    DUPLICATE_STAMP = "duplicate_stamp"
    INVALID_STAMP = "invalid_stamp"
    FUTURE_STAMP = "future_stamp"
    STAMP_JUMP = "stamp_jump"
    SUPERSEDED = "superseded"
    SYNC_UNMATCHED = "sync_unmatched"
    TF_UNAVAILABLE = "tf_unavailable"
    NOT_ACTIVE = "not_active"
    INTERNAL_ERROR = "internal_error"
    # object level
    TOO_FEW_MASK_PIXELS = "too_few_mask_pixels"
    TOO_FEW_DEPTH_POINTS = "too_few_depth_points"
    MAX_OBJECTS_EXCEEDED = "max_objects_exceeded"
    EMPTY_SHAPE = "empty_shape"
    BACKEND_ERROR = "backend_error"


@dataclass(frozen=True)
class SkippedObject:
    """An object that was not reconstructed, with the reason and a human-readable detail."""

    instance_id: int
    reason: SkipReason
    detail: str


@dataclass(frozen=True)
class FrameResult:
    """All results of one frame.

    Attributes:
        stamp_ns, frame_id: copied from the input frame.
        objects: reconstructed objects, ordered by instance id.
        skipped: objects not reconstructed.
        timings_ms: wall time per pipeline stage, milliseconds.
        backend: name of the backend that produced the shapes.
        plane: the support plane used, if any.
    """

    stamp_ns: int
    frame_id: str
    objects: tuple[ObjectResult, ...]
    skipped: tuple[SkippedObject, ...]
    timings_ms: dict[str, float]
    backend: str
    plane: SupportPlane | None = None


class InputError(ValueError):
    """Input that makes a whole frame unusable; ``reason`` is the diagnostics key and
    ``detail`` a human-readable explanation naming the offending values."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
