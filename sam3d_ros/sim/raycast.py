"""Analytic ray caster for synthetic tabletop scenes (pure numpy, no ROS).

World frame: z up, the table is the plane ``z = 0`` (optionally bounded). Shapes are
boxes, z-axis cylinders and spheres, each with a 4x4 ``world_T_object`` whose origin is the
shape centre. The camera frame is the OPTICAL frame (x right, y down, z forward) and
``Camera.world_T_camera`` maps camera points to the world (``a_T_b`` convention of
:mod:`sam3d_ros.core.frames`).

Every pixel casts one ray through its centre (integer pixel ``(u, v)`` is the centre, as in
:meth:`CameraIntrinsics.backproject`). Ray directions are scaled so that their camera z
component is 1, so the ray parameter of a hit *is* the depth along the optical axis.

Typical use::

    cam = look_at(eye=(0.6, 0.0, 0.5), target=(0, 0, 0.05), intrinsics=d435)
    scene = Scene(objects=(SceneObject(1, Box((0.1, 0.05, 0.08), pose)),))
    frame = render(scene, cam)            # RenderedFrame: depth, labels, rgb, amodal, GT
    mesh = true_mesh(frame.objects[0])    # trimesh in the camera frame
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import trimesh
from numpy.typing import NDArray

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import invert_transform, make_transform, transform_points
from sam3d_ros.core.types import RGBDFrame

logger = logging.getLogger(__name__)

#: frame_id of the simulated colour/depth/mask images.
SIM_FRAME_ID = "camera_color_optical_frame"

#: Smallest accepted ray parameter (m): hits closer than this are ignored.
_T_EPS = 1e-9

#: Direction of the (directional) light in the world frame, pointing towards the light.
_LIGHT_DIR_WORLD = np.array([0.35, 0.25, 1.0]) / np.linalg.norm([0.35, 0.25, 1.0])
_AMBIENT = 0.35
_BACKGROUND_RGB = (58, 62, 74)
_TABLE_RGB_A = np.array([176.0, 140.0, 102.0])
_TABLE_RGB_B = np.array([150.0, 116.0, 82.0])
_TABLE_CHECKER_M = 0.05

ShapeType = Literal["box", "cylinder", "sphere"]


class RaycastError(ValueError):
    """Raised for invalid shapes, scenes or cameras."""


def _check_pose(world_T_object: NDArray[np.floating] | Any, what: str) -> NDArray[np.float64]:
    try:
        m = np.asarray(world_T_object, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise RaycastError(f"{what}: pose is not numeric: {world_T_object!r}") from err
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise RaycastError(f"{what}: expected a finite 4x4 transform, got shape {m.shape}")
    r = m[:3, :3]
    if float(np.abs(r.T @ r - np.eye(3)).max()) > 1e-6 or float(np.linalg.det(r)) < 0.0:
        raise RaycastError(f"{what}: rotation part is not a proper rotation: {r.tolist()}")
    return m


def _positive(value: float, what: str) -> float:
    v = float(value)
    if not np.isfinite(v) or v <= 0.0:
        raise RaycastError(f"{what} must be finite and > 0, got {value!r}")
    return v


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in its object frame, centred at the origin.

    Attributes:
        size: full edge lengths (x, y, z) in metres.
        world_T_object: 4x4 float64 pose of the box centre in the world.
    """

    size: tuple[float, float, float]
    world_T_object: NDArray[np.float64] = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        if len(self.size) != 3:
            raise RaycastError(f"box size needs 3 values, got {self.size!r}")
        object.__setattr__(self, "size", tuple(_positive(s, "box size") for s in self.size))
        object.__setattr__(self, "world_T_object", _check_pose(self.world_T_object, "box"))

    @property
    def shape_type(self) -> ShapeType:
        return "box"

    @property
    def params(self) -> dict[str, Any]:
        """JSON-friendly shape parameters: ``{"size": [x, y, z]}`` (m)."""
        return {"size": [float(s) for s in self.size]}

    @property
    def bounding_radius(self) -> float:
        """Radius (m) of a sphere about the centre that contains the shape."""
        return 0.5 * float(np.linalg.norm(self.size))


@dataclass(frozen=True)
class Cylinder:
    """A solid cylinder whose axis is the object z axis, centred at the origin.

    Attributes:
        radius: metres. height: full height along z, metres.
        world_T_object: 4x4 float64 pose of the cylinder centre in the world.
    """

    radius: float
    height: float
    world_T_object: NDArray[np.float64] = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        object.__setattr__(self, "radius", _positive(self.radius, "cylinder radius"))
        object.__setattr__(self, "height", _positive(self.height, "cylinder height"))
        object.__setattr__(self, "world_T_object", _check_pose(self.world_T_object, "cylinder"))

    @property
    def shape_type(self) -> ShapeType:
        return "cylinder"

    @property
    def params(self) -> dict[str, Any]:
        """JSON-friendly shape parameters: ``{"radius": r, "height": h}`` (m)."""
        return {"radius": float(self.radius), "height": float(self.height)}

    @property
    def bounding_radius(self) -> float:
        return float(np.hypot(self.radius, 0.5 * self.height))


@dataclass(frozen=True)
class Sphere:
    """A sphere centred at the object origin.

    Attributes:
        radius: metres.
        world_T_object: 4x4 float64 pose of the centre in the world.
    """

    radius: float
    world_T_object: NDArray[np.float64] = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        object.__setattr__(self, "radius", _positive(self.radius, "sphere radius"))
        object.__setattr__(self, "world_T_object", _check_pose(self.world_T_object, "sphere"))

    @property
    def shape_type(self) -> ShapeType:
        return "sphere"

    @property
    def params(self) -> dict[str, Any]:
        """JSON-friendly shape parameters: ``{"radius": r}`` (m)."""
        return {"radius": float(self.radius)}

    @property
    def bounding_radius(self) -> float:
        return float(self.radius)


Shape = Box | Cylinder | Sphere


def shape_from_params(
    shape_type: str, params: dict[str, Any], world_T_object: NDArray[np.floating] | None = None
) -> Shape:
    """Rebuild a shape from ``shape_type`` ("box", "cylinder", "sphere") and its ``params``
    (as in :attr:`Box.params` etc.); ``world_T_object`` defaults to identity."""
    pose = np.eye(4) if world_T_object is None else np.asarray(world_T_object, dtype=np.float64)
    try:
        if shape_type == "box":
            sx, sy, sz = (float(v) for v in params["size"])
            return Box((sx, sy, sz), pose)
        if shape_type == "cylinder":
            return Cylinder(float(params["radius"]), float(params["height"]), pose)
        if shape_type == "sphere":
            return Sphere(float(params["radius"]), pose)
    except (KeyError, TypeError, ValueError) as err:
        raise RaycastError(f"bad params for {shape_type!r}: {params!r}") from err
    raise RaycastError(f"unknown shape type {shape_type!r}")


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene.

    Attributes:
        label: instance label (> 0) written into the label image.
        shape: the posed shape.
        color: base RGB colour (0..255).
    """

    label: int
    shape: Shape
    color: tuple[int, int, int] = (200, 60, 60)

    def __post_init__(self) -> None:
        if int(self.label) <= 0 or int(self.label) > 65535:
            raise RaycastError(f"object label must be in 1..65535, got {self.label!r}")


@dataclass(frozen=True)
class Table:
    """The support plane ``z = 0`` of the world, bounded to a rectangle.

    Attributes:
        center_xy: (x, y) centre of the table top in the world (m).
        half_extents_xy: half sizes (m); ``None`` for an infinite plane.
    """

    center_xy: tuple[float, float] = (0.0, 0.0)
    half_extents_xy: tuple[float, float] | None = (0.6, 0.45)


@dataclass(frozen=True)
class Scene:
    """Objects on a table. Labels must be unique."""

    objects: tuple[SceneObject, ...]
    table: Table | None = field(default_factory=Table)

    def __post_init__(self) -> None:
        labels = [o.label for o in self.objects]
        if len(set(labels)) != len(labels):
            raise RaycastError(f"object labels must be unique, got {labels}")


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: intrinsics and ``world_T_camera`` (4x4, optical frame)."""

    intrinsics: CameraIntrinsics
    world_T_camera: NDArray[np.float64]

    def __post_init__(self) -> None:
        object.__setattr__(self, "world_T_camera", _check_pose(self.world_T_camera, "camera"))

    @property
    def camera_T_world(self) -> NDArray[np.float64]:
        return invert_transform(self.world_T_camera)


def look_at_transform(
    eye: NDArray[np.floating] | tuple[float, float, float],
    target: NDArray[np.floating] | tuple[float, float, float],
    up: NDArray[np.floating] | tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> NDArray[np.float64]:
    """``world_T_camera`` (4x4) of an optical frame at ``eye`` looking at ``target``.

    The optical z axis points from eye to target, x is right and y is down in the image,
    with ``up`` (world) appearing upwards. Raises RaycastError when eye == target or the
    view direction is parallel to ``up``.
    """
    e = np.asarray(eye, dtype=np.float64).reshape(3)
    f = np.asarray(target, dtype=np.float64).reshape(3) - e
    n = float(np.linalg.norm(f))
    if not np.isfinite(n) or n < 1e-9:
        raise RaycastError(f"look_at: eye {e.tolist()} and target coincide")
    z = f / n
    upv = np.asarray(up, dtype=np.float64).reshape(3)
    x = np.cross(z, upv)
    if float(np.linalg.norm(x)) < 1e-9:
        raise RaycastError(f"look_at: view direction {z.tolist()} is parallel to up {upv.tolist()}")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_transform(np.stack([x, y, z], axis=1), e)


def look_at(
    eye: NDArray[np.floating] | tuple[float, float, float],
    target: NDArray[np.floating] | tuple[float, float, float],
    intrinsics: CameraIntrinsics | None = None,
    up: NDArray[np.floating] | tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> Camera:
    """A :class:`Camera` at ``eye`` looking at ``target`` (world coordinates, metres).

    ``intrinsics`` defaults to a RealSense-D435-like colour camera at 640x480.
    """
    if intrinsics is None:
        intrinsics = CameraIntrinsics(width=640, height=480, fx=615.0, fy=615.0, cx=319.5, cy=239.5)
    return Camera(intrinsics=intrinsics, world_T_camera=look_at_transform(eye, target, up))


@dataclass(frozen=True)
class ObjectGroundTruth:
    """Ground truth of one object in one rendered frame.

    Attributes:
        label: instance label in the label image.
        shape_type: "box", "cylinder" or "sphere".
        params: shape parameters in metres (see :attr:`Box.params` etc.).
        camera_T_object: 4x4 float64 pose of the shape centre in the camera optical frame.
        world_T_object: 4x4 float64 pose in the world.
        visible_pixels: pixels carrying this label in the label image (modal).
        amodal_pixels: pixels the object covers when rendered alone (amodal).
        color: base RGB colour.
    """

    label: int
    shape_type: str
    params: dict[str, Any]
    camera_T_object: NDArray[np.float64]
    world_T_object: NDArray[np.float64]
    visible_pixels: int
    amodal_pixels: int
    color: tuple[int, int, int] = (200, 60, 60)

    @property
    def visible_fraction(self) -> float:
        """``visible_pixels / amodal_pixels`` (0 when the object is outside the image)."""
        return self.visible_pixels / self.amodal_pixels if self.amodal_pixels > 0 else 0.0

    def shape(self, frame: Literal["world", "camera", "object"] = "camera") -> Shape:
        """The shape posed in ``frame``."""
        pose = {"world": self.world_T_object, "camera": self.camera_T_object, "object": np.eye(4)}
        if frame not in pose:
            raise RaycastError(f"unknown frame {frame!r}")
        return shape_from_params(self.shape_type, self.params, pose[frame])

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (matrices as nested lists)."""
        return {
            "label": int(self.label),
            "shape": self.shape_type,
            "params": self.params,
            "camera_T_object": np.asarray(self.camera_T_object, dtype=np.float64).tolist(),
            "world_T_object": np.asarray(self.world_T_object, dtype=np.float64).tolist(),
            "visible_pixels": int(self.visible_pixels),
            "amodal_pixels": int(self.amodal_pixels),
            "visible_fraction": float(self.visible_fraction),
            "color": [int(c) for c in self.color],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ObjectGroundTruth:
        """Inverse of :meth:`to_json`."""
        try:
            return cls(
                label=int(d["label"]),
                shape_type=str(d["shape"]),
                params=dict(d["params"]),
                camera_T_object=np.asarray(d["camera_T_object"], dtype=np.float64).reshape(4, 4),
                world_T_object=np.asarray(d.get("world_T_object", np.eye(4)), dtype=np.float64).reshape(4, 4),
                visible_pixels=int(d.get("visible_pixels", 0)),
                amodal_pixels=int(d.get("amodal_pixels", 0)),
                color=tuple(int(c) for c in d.get("color", (200, 60, 60)))[:3],  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as err:
            raise RaycastError(f"bad ground-truth object entry: {d!r}") from err


@dataclass(frozen=True)
class RenderedFrame:
    """The output of :func:`render`.

    Attributes:
        depth: (H, W) float32 depth along the optical axis in metres; NaN where no ray hit.
        labels: (H, W) int32 instance labels; 0 is table or background.
        rgb: (H, W, 3) uint8 shaded colour image.
        amodal_masks: label -> (H, W) bool mask of the object rendered alone.
        normals: (H, W, 3) float32 unit surface normals in the camera frame (0 where no hit).
        camera: the camera that rendered the frame.
        objects: ground truth per object, in scene order.
        stamp_ns: a stamp (nanoseconds) assigned by sequence helpers; 0 by default.
    """

    depth: NDArray[np.float32]
    labels: NDArray[np.int32]
    rgb: NDArray[np.uint8]
    amodal_masks: dict[int, NDArray[np.bool_]]
    normals: NDArray[np.float32]
    camera: Camera
    objects: tuple[ObjectGroundTruth, ...]
    stamp_ns: int = 0

    def with_depth(self, depth: NDArray[np.floating]) -> RenderedFrame:
        """A copy with the depth image replaced (e.g. by a noisy one); shape must match."""
        d = np.asarray(depth, dtype=np.float32)
        if d.shape != self.depth.shape:
            raise RaycastError(f"depth shape {d.shape} != {self.depth.shape}")
        return replace(self, depth=d)

    def with_stamp(self, stamp_ns: int) -> RenderedFrame:
        """A copy with ``stamp_ns`` set."""
        return replace(self, stamp_ns=int(stamp_ns))

    def to_rgbd_frame(self, frame_id: str = SIM_FRAME_ID) -> RGBDFrame:
        """The frame as the pipeline's :class:`RGBDFrame` (arrays shared, not copied)."""
        return RGBDFrame(
            stamp_ns=int(self.stamp_ns),
            frame_id=frame_id,
            rgb=self.rgb,
            depth=self.depth,
            labels=self.labels,
            camera=self.camera.intrinsics,
            scores={o.label: 1.0 for o in self.objects},
        )


# --------------------------------------------------------------------------- intersection


def _intersect_box(
    size: tuple[float, float, float], o: NDArray[np.float64], d: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    h = 0.5 * np.asarray(size, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-h - o) * inv
        t2 = (h - o) * inv
    tmin = np.fmin(t1, t2)
    tmax = np.fmax(t1, t2)
    tnear = tmin.max(axis=1)
    tfar = tmax.min(axis=1)
    hit = (tnear <= tfar) & (tnear > _T_EPS) & np.isfinite(tnear)
    t = np.where(hit, tnear, np.inf)
    axis = tmin.argmax(axis=1)
    n = np.zeros_like(d)
    rows = np.arange(d.shape[0])
    n[rows, axis] = -np.sign(d[rows, axis])
    return t, n


def _intersect_cylinder(
    radius: float, height: float, o: NDArray[np.float64], d: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    hh = 0.5 * height
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = dx * dx + dy * dy
    b = 2.0 * (o[0] * dx + o[1] * dy)
    c = o[0] ** 2 + o[1] ** 2 - radius**2
    disc = b * b - 4.0 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = (-b - np.sqrt(disc)) / (2.0 * a)
    zs = o[2] + ts * dz
    ok_side = (a > 0) & (disc >= 0) & (ts > _T_EPS) & (np.abs(zs) <= hh)
    t = np.where(ok_side, ts, np.inf)
    n = np.zeros_like(d)
    side_pts = o + ts[:, None] * d
    n[:, 0] = side_pts[:, 0] / radius
    n[:, 1] = side_pts[:, 1] / radius
    for z0, nz in ((hh, 1.0), (-hh, -1.0)):
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (z0 - o[2]) / dz
            xc = o[0] + tc * dx
            yc = o[1] + tc * dy
        ok_cap = np.isfinite(tc) & (tc > _T_EPS) & (xc * xc + yc * yc <= radius**2) & (tc < t)
        t = np.where(ok_cap, tc, t)
        n[ok_cap] = (0.0, 0.0, nz)
    return t, n


def _intersect_sphere(
    radius: float, o: NDArray[np.float64], d: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a = np.einsum("ij,ij->i", d, d)
    b = 2.0 * (d @ o)
    c = float(o @ o) - radius**2
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2.0 * a)
    hit = (disc >= 0) & (t > _T_EPS)
    t = np.where(hit, t, np.inf)
    with np.errstate(invalid="ignore"):
        n = (o + np.where(hit, t, 0.0)[:, None] * d) / radius
    return t, n


def intersect_shape(
    shape: Shape, origin_world: NDArray[np.floating], dirs_world: NDArray[np.floating]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """First intersection of rays with one shape.

    Args:
        shape: the posed shape.
        origin_world: (3,) common ray origin in the world (m).
        dirs_world: (N, 3) ray directions in the world (need not be unit).

    Returns:
        ``(t, normals)``: (N,) float64 ray parameters of the first hit (``inf`` for misses;
        the hit point is ``origin + t * dir``) and (N, 3) float64 outward unit normals in
        the world frame (meaningless for misses).
    """
    pose = shape.world_T_object
    r = pose[:3, :3]
    o = r.T @ (np.asarray(origin_world, dtype=np.float64) - pose[:3, 3])
    d = np.asarray(dirs_world, dtype=np.float64) @ r
    if isinstance(shape, Box):
        t, n = _intersect_box(shape.size, o, d)
    elif isinstance(shape, Cylinder):
        t, n = _intersect_cylinder(shape.radius, shape.height, o, d)
    elif isinstance(shape, Sphere):
        t, n = _intersect_sphere(shape.radius, o, d)
    else:  # pragma: no cover - guarded by typing
        raise RaycastError(f"unsupported shape {shape!r}")
    return t, n @ r.T


def _pixel_rect(shape: Shape, camera: Camera) -> tuple[int, int, int, int] | None:
    """Conservative pixel rectangle (u0, u1, v0, v1), end-exclusive, covering the shape;
    None when it is entirely behind the camera or outside the image."""
    k = camera.intrinsics
    c = transform_points(camera.camera_T_world, shape.world_T_object[:3, 3])[0]
    rad = shape.bounding_radius * 1.001 + 1e-6
    if c[2] + rad <= 0.0:
        return None
    if c[2] - rad <= 1e-6:
        return 0, k.width, 0, k.height
    corners = c + rad * np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    u = k.fx * corners[:, 0] / corners[:, 2] + k.cx
    v = k.fy * corners[:, 1] / corners[:, 2] + k.cy
    u0 = max(0, int(np.floor(u.min())))
    u1 = min(k.width, int(np.ceil(u.max())) + 1)
    v0 = max(0, int(np.floor(v.min())))
    v1 = min(k.height, int(np.ceil(v.max())) + 1)
    if u0 >= u1 or v0 >= v1:
        return None
    return u0, u1, v0, v1


def camera_rays(camera: Camera) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """World-frame rays through all pixel centres.

    Returns:
        ``(origin, dirs)``: (3,) camera centre in the world and (H, W, 3) float64 directions
        in the world, scaled so that their optical-frame z component is 1 (the ray
        parameter equals depth).
    """
    k = camera.intrinsics
    vv, uu = np.mgrid[0 : k.height, 0 : k.width]
    dc = np.stack([(uu - k.cx) / k.fx, (vv - k.cy) / k.fy, np.ones((k.height, k.width))], axis=-1).astype(
        np.float64
    )
    r = camera.world_T_camera[:3, :3]
    return camera.world_T_camera[:3, 3].copy(), dc @ r.T


def _table_albedo(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, 3) table colour at world (x, y): a checkerboard with a faint wood grain."""
    checker = (np.floor(x / _TABLE_CHECKER_M) + np.floor(y / _TABLE_CHECKER_M)) % 2
    base = np.where(checker[:, None] > 0.5, _TABLE_RGB_A, _TABLE_RGB_B)
    grain = 1.0 + 0.06 * np.sin(x * 180.0 + 3.0 * np.sin(y * 35.0))
    return base * grain[:, None]


def render(scene: Scene, camera: Camera, *, with_rgb: bool = True) -> RenderedFrame:
    """Ray-cast ``scene`` from ``camera``.

    Returns:
        A :class:`RenderedFrame` with exact depth (float32 m, NaN for rays that hit
        nothing), labels (0 = table/background), Lambertian-shaded RGB (black when
        ``with_rgb`` is False), amodal masks (each object alone) and per-object ground truth.
    """
    k = camera.intrinsics
    h, w = k.height, k.width
    origin, dirs_img = camera_rays(camera)
    dirs = dirs_img.reshape(-1, 3)
    npx = h * w
    best_t = np.full(npx, np.inf)
    labels = np.zeros(npx, dtype=np.int32)
    normals_w = np.zeros((npx, 3))
    table_hit = np.zeros(npx, dtype=bool)

    if scene.table is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            tt = -origin[2] / dirs[:, 2]
        ok = np.isfinite(tt) & (tt > _T_EPS)
        tt = np.where(ok, tt, 0.0)
        if scene.table.half_extents_xy is not None:
            px = origin[0] + tt * dirs[:, 0] - scene.table.center_xy[0]
            py = origin[1] + tt * dirs[:, 1] - scene.table.center_xy[1]
            ok &= (np.abs(px) <= scene.table.half_extents_xy[0]) & (
                np.abs(py) <= scene.table.half_extents_xy[1]
            )
        best_t[ok] = tt[ok]
        normals_w[ok] = (0.0, 0.0, 1.0 if origin[2] >= 0 else -1.0)
        table_hit = ok

    amodal: dict[int, NDArray[np.bool_]] = {}
    for obj in scene.objects:
        mask = np.zeros((h, w), dtype=bool)
        amodal[obj.label] = mask
        rect = _pixel_rect(obj.shape, camera)
        if rect is None:
            continue
        u0, u1, v0, v1 = rect
        idx = (np.arange(v0, v1)[:, None] * w + np.arange(u0, u1)[None, :]).reshape(-1)
        t, n = intersect_shape(obj.shape, origin, dirs[idx])
        hit = np.isfinite(t)
        mask.reshape(-1)[idx[hit]] = True
        closer = hit & (t < best_t[idx])
        sel = idx[closer]
        best_t[sel] = t[closer]
        labels[sel] = obj.label
        normals_w[sel] = n[closer]
        table_hit[sel] = False

    valid = np.isfinite(best_t)
    depth = np.where(valid, best_t, np.nan).astype(np.float32).reshape(h, w)
    r_cw = camera.world_T_camera[:3, :3]
    normals_c = (normals_w @ r_cw).astype(np.float32).reshape(h, w, 3)

    rgb = np.zeros((npx, 3), dtype=np.uint8)
    if with_rgb:
        albedo = np.tile(np.asarray(_BACKGROUND_RGB, dtype=np.float64), (npx, 1))
        colors = {o.label: np.asarray(o.color, dtype=np.float64) for o in scene.objects}
        for lab, col in colors.items():
            albedo[labels == lab] = col
        if table_hit.any():
            pts = origin + best_t[table_hit, None] * dirs[table_hit]
            albedo[table_hit] = _table_albedo(pts[:, 0], pts[:, 1])
        lam = np.clip(normals_w @ _LIGHT_DIR_WORLD, 0.0, 1.0)
        shade = np.where(valid, _AMBIENT + (1.0 - _AMBIENT) * lam, 1.0)
        rgb = np.clip(albedo * shade[:, None], 0.0, 255.0).round().astype(np.uint8)

    labels_img = labels.reshape(h, w)
    cam_T_world = camera.camera_T_world
    gts = []
    for obj in scene.objects:
        gts.append(
            ObjectGroundTruth(
                label=obj.label,
                shape_type=obj.shape.shape_type,
                params=obj.shape.params,
                camera_T_object=cam_T_world @ obj.shape.world_T_object,
                world_T_object=obj.shape.world_T_object.copy(),
                visible_pixels=int(np.count_nonzero(labels_img == obj.label)),
                amodal_pixels=int(np.count_nonzero(amodal[obj.label])),
                color=obj.color,
            )
        )
    logger.debug("rendered %dx%d with %d objects", w, h, len(scene.objects))
    return RenderedFrame(
        depth=depth,
        labels=labels_img,
        rgb=rgb.reshape(h, w, 3),
        amodal_masks=amodal,
        normals=normals_c,
        camera=camera,
        objects=tuple(gts),
    )


# --------------------------------------------------------------------------- true meshes

#: Tessellation of true meshes: cylinder sections and icosphere subdivisions.
CYLINDER_SECTIONS = 96
SPHERE_SUBDIVISIONS = 4


def true_mesh(
    item: Shape | SceneObject | ObjectGroundTruth,
    frame: Literal["world", "camera", "object"] = "world",
    camera: Camera | None = None,
) -> trimesh.Trimesh:
    """A watertight triangle mesh of a shape, posed in ``frame``.

    Args:
        item: a shape, a scene object, or an :class:`ObjectGroundTruth` (whose default
            frame is then taken literally: pass ``frame="camera"`` to use its
            ``camera_T_object`` without a camera).
        frame: "world", "camera" (needs ``camera`` unless ``item`` is ground truth) or
            "object".
        camera: the camera for ``frame="camera"``.

    Returns:
        trimesh.Trimesh in metres. Boxes are exact; cylinders use
        :data:`CYLINDER_SECTIONS` sections and spheres an icosphere with
        :data:`SPHERE_SUBDIVISIONS` subdivisions (vertices on the true surface).
    """
    if isinstance(item, ObjectGroundTruth):
        shape = item.shape("object")
        poses = {"world": item.world_T_object, "camera": item.camera_T_object, "object": np.eye(4)}
        if frame not in poses:
            raise RaycastError(f"unknown frame {frame!r}")
        pose = poses[frame]
    else:
        shape = item.shape if isinstance(item, SceneObject) else item
        if frame == "world":
            pose = shape.world_T_object
        elif frame == "object":
            pose = np.eye(4)
        elif frame == "camera":
            if camera is None:
                raise RaycastError("true_mesh(frame='camera') needs a camera")
            pose = camera.camera_T_world @ shape.world_T_object
        else:
            raise RaycastError(f"unknown frame {frame!r}")
    if isinstance(shape, Box):
        mesh = trimesh.creation.box(extents=shape.size)
    elif isinstance(shape, Cylinder):
        mesh = trimesh.creation.cylinder(radius=shape.radius, height=shape.height, sections=CYLINDER_SECTIONS)
    else:
        mesh = trimesh.creation.icosphere(subdivisions=SPHERE_SUBDIVISIONS, radius=shape.radius)
    mesh.apply_transform(np.asarray(pose, dtype=np.float64))
    return mesh
