"""Analytic scenes for the geometry tests: boxes, cylinders and spheres resting on a table
(the world plane z = 0, world z up), a pinhole camera looking down at them, an exact ray
caster (depth along the optical axis, instance labels) and exact surface distances.

World frame: x/y on the table, z up, metres. Camera frame: REP 103 optical frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import invert_transform, transform_points
from sam3d_ros.core.types import RGBDFrame

_INF = np.inf


def default_camera(width: int = 640, height: int = 480) -> CameraIntrinsics:
    """A 640x480 camera with a ~58 degree horizontal field of view."""
    f = 570.0 * width / 640.0
    return CameraIntrinsics(
        width=width, height=height, fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0
    )


def look_at(
    target: NDArray[np.floating], distance: float, elevation_deg: float, azimuth_deg: float = 0.0
) -> NDArray[np.float64]:
    """world_T_camera of an optical frame at ``distance`` from ``target``, looking at it from
    ``elevation_deg`` above the table and from the azimuth (0 = camera on the -y side)."""
    el, az = np.radians(elevation_deg), np.radians(azimuth_deg)
    tgt = np.asarray(target, dtype=np.float64)
    back = np.array([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)])
    pos = tgt + distance * back
    z = (tgt - pos) / np.linalg.norm(tgt - pos)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    t = np.eye(4)
    t[:3, 0], t[:3, 1], t[:3, 2], t[:3, 3] = x, y, z, pos
    return t


@dataclass(frozen=True)
class Box:
    """A box resting on the table: centre (x, y) on the table, full size (sx, sy, sz), yaw."""

    xy: tuple[float, float]
    size: tuple[float, float, float]
    yaw_deg: float = 0.0

    @property
    def centre(self) -> NDArray[np.float64]:
        return np.array([self.xy[0], self.xy[1], self.size[2] / 2.0])

    @property
    def volume(self) -> float:
        return float(np.prod(self.size))

    def _rot(self) -> NDArray[np.float64]:
        c, s = np.cos(np.radians(self.yaw_deg)), np.sin(np.radians(self.yaw_deg))
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def intersect(self, o: NDArray[np.float64], d: NDArray[np.float64]) -> NDArray[np.float64]:
        r = self._rot()
        ol = (o - self.centre) @ r
        dl = d @ r
        h = np.asarray(self.size) / 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-h - ol) / dl
            t2 = (h - ol) / dl
        tmin = np.nanmax(np.minimum(t1, t2), axis=-1)
        tmax = np.nanmin(np.maximum(t1, t2), axis=-1)
        hit = (tmax >= tmin) & (tmin > 0)
        return np.where(hit, tmin, _INF)

    def sdf(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        q = np.abs((p - self.centre) @ self._rot()) - np.asarray(self.size) / 2.0
        return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)

    def sample_surface(self, n: int, rng: np.random.Generator) -> NDArray[np.float64]:
        sx, sy, sz = self.size
        areas = np.array([sy * sz, sy * sz, sx * sz, sx * sz, sx * sy, sx * sy])
        face = rng.choice(6, size=n, p=areas / areas.sum())
        p = rng.uniform(-0.5, 0.5, size=(n, 3)) * np.asarray(self.size)
        axis = face // 2
        sign = np.where(face % 2 == 0, -0.5, 0.5)
        p[np.arange(n), axis] = sign * np.asarray(self.size)[axis]
        return p @ self._rot().T + self.centre


@dataclass(frozen=True)
class Cylinder:
    """An upright cylinder standing on the table at (x, y)."""

    xy: tuple[float, float]
    radius: float
    height: float

    @property
    def centre(self) -> NDArray[np.float64]:
        return np.array([self.xy[0], self.xy[1], self.height / 2.0])

    @property
    def volume(self) -> float:
        return float(np.pi * self.radius**2 * self.height)

    def intersect(self, o: NDArray[np.float64], d: NDArray[np.float64]) -> NDArray[np.float64]:
        ox, oy = o[0] - self.xy[0], o[1] - self.xy[1]
        dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
        a = dx * dx + dy * dy
        b = 2.0 * (ox * dx + oy * dy)
        c = ox * ox + oy * oy - self.radius**2
        disc = b * b - 4 * a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            ts = (-b - np.sqrt(disc)) / (2 * a)
            zs = o[2] + ts * dz
            side = np.where((disc >= 0) & (ts > 0) & (zs >= 0) & (zs <= self.height), ts, _INF)
            tc = (self.height - o[2]) / dz
            rx, ry = ox + tc * dx, oy + tc * dy
            cap = np.where((tc > 0) & (rx * rx + ry * ry <= self.radius**2), tc, _INF)
        return np.minimum(side, cap)

    def sdf(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        rel = p - self.centre
        q = np.stack(
            [np.linalg.norm(rel[:, :2], axis=1) - self.radius, np.abs(rel[:, 2]) - self.height / 2], 1
        )
        return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)

    def sample_surface(self, n: int, rng: np.random.Generator) -> NDArray[np.float64]:
        r, h = self.radius, self.height
        areas = np.array([2 * np.pi * r * h, np.pi * r * r, np.pi * r * r])
        part = rng.choice(3, size=n, p=areas / areas.sum())
        ang = rng.uniform(0, 2 * np.pi, n)
        rad = np.where(part == 0, r, r * np.sqrt(rng.uniform(0, 1, n)))
        z = np.where(part == 0, rng.uniform(0, h, n), np.where(part == 1, h, 0.0))
        return np.stack([self.xy[0] + rad * np.cos(ang), self.xy[1] + rad * np.sin(ang), z], 1)


@dataclass(frozen=True)
class Sphere:
    """A ball resting on the table at (x, y)."""

    xy: tuple[float, float]
    radius: float

    @property
    def centre(self) -> NDArray[np.float64]:
        return np.array([self.xy[0], self.xy[1], self.radius])

    @property
    def volume(self) -> float:
        return float(4.0 / 3.0 * np.pi * self.radius**3)

    def intersect(self, o: NDArray[np.float64], d: NDArray[np.float64]) -> NDArray[np.float64]:
        oc = o - self.centre
        a = np.einsum("ij,ij->i", d, d)
        b = 2.0 * d @ oc
        c = oc @ oc - self.radius**2
        disc = b * b - 4 * a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / (2 * a)
        return np.where((disc >= 0) & (t > 0), t, _INF)

    def sdf(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.linalg.norm(p - self.centre, axis=1) - self.radius

    def sample_surface(self, n: int, rng: np.random.Generator) -> NDArray[np.float64]:
        v = rng.normal(size=(n, 3))
        return self.centre + self.radius * v / np.linalg.norm(v, axis=1, keepdims=True)


Shape = Box | Cylinder | Sphere


@dataclass
class Scene:
    """Shapes on a table seen by one camera. Label of ``shapes[i]`` is ``i + 1``."""

    shapes: list[Shape]
    world_T_camera: NDArray[np.float64]
    camera: CameraIntrinsics = field(default_factory=default_camera)
    table: bool = True

    @property
    def camera_T_world(self) -> NDArray[np.float64]:
        return invert_transform(self.world_T_camera)

    def plane_in_camera(self) -> tuple[NDArray[np.float64], float]:
        """(normal, offset) of the table in the camera frame, normal towards the camera."""
        n = self.camera_T_world[:3, :3] @ np.array([0.0, 0.0, 1.0])
        return n, float(self.world_T_camera[2, 3])

    def render(self, noise_std: float = 0.0, seed: int = 0) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
        """(depth (H, W) float32 metres with NaN where nothing is hit, labels (H, W) int32)."""
        cam = self.camera
        vv, uu = np.mgrid[0 : cam.height, 0 : cam.width]
        d_cam = np.stack(
            [(uu.ravel() - cam.cx) / cam.fx, (vv.ravel() - cam.cy) / cam.fy, np.ones(uu.size)], axis=1
        )
        r = self.world_T_camera[:3, :3]
        o = self.world_T_camera[:3, 3]
        d = d_cam @ r.T
        best = np.full(len(d), _INF)
        lab = np.zeros(len(d), dtype=np.int32)
        if self.table:
            with np.errstate(divide="ignore"):
                tt = -o[2] / d[:, 2]
            best = np.where(tt > 0, tt, _INF)
        for i, s in enumerate(self.shapes):
            t = s.intersect(o, d)
            closer = t < best
            best = np.where(closer, t, best)
            lab[closer] = i + 1
        depth = np.where(np.isfinite(best), best, np.nan)  # t is the optical depth (d_cam z = 1)
        if noise_std > 0:
            depth = depth + np.random.default_rng(seed).normal(0.0, noise_std, size=depth.shape)
        return depth.reshape(cam.height, cam.width).astype(np.float32), lab.reshape(cam.height, cam.width)

    def frame(self, noise_std: float = 0.0, seed: int = 0, stamp_ns: int = 1) -> RGBDFrame:
        depth, labels = self.render(noise_std, seed)
        rgb = np.zeros((*depth.shape, 3), dtype=np.uint8)
        return RGBDFrame(
            stamp_ns=stamp_ns,
            frame_id="camera_color_optical_frame",
            rgb=rgb,
            depth=depth,
            labels=labels,
            camera=self.camera,
        )

    def to_world(self, points_camera: NDArray[np.floating]) -> NDArray[np.float64]:
        return transform_points(self.world_T_camera, points_camera)

    def to_camera(self, points_world: NDArray[np.floating]) -> NDArray[np.float64]:
        return transform_points(self.camera_T_world, points_world)


def surface_distance_mm(
    scene: Scene, shape: Shape, vertices_camera: NDArray[np.float64], faces: NDArray[np.int64], n: int = 20000
) -> tuple[float, float]:
    """(mean |distance| of the reconstructed surface to the true surface,
    mean distance of the true surface to the reconstructed surface), millimetres.

    The first uses area-weighted samples of the mesh and the exact SDF; the second uses
    samples of the true surface and nearest dense mesh samples (accurate to ~0.2 mm)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)
    v = scene.to_world(vertices_camera)
    f = np.asarray(faces, dtype=np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    face = rng.choice(len(f), size=n * 4, p=area / area.sum())
    r1, r2 = rng.uniform(size=(2, n * 4))
    s = np.sqrt(r1)
    samples = (1 - s)[:, None] * a[face] + (s * (1 - r2))[:, None] * b[face] + (s * r2)[:, None] * c[face]
    recon_to_true = float(np.abs(shape.sdf(samples)).mean()) * 1000.0
    truth = shape.sample_surface(n, rng)
    dist, _ = cKDTree(samples).query(truth)
    return recon_to_true, float(dist.mean()) * 1000.0
