"""Deterministic random tabletop scenes and camera sequences.

A scene holds 1-8 boxes, cylinders and spheres (every dimension 3-20 cm by default)
resting on the table plane ``z = 0`` with non-overlapping circular footprints; boxes get a
random yaw. The camera looks at the scene centre from 0.5-1.2 m at 25-70 degrees
elevation, with RealSense-D435-like intrinsics (optionally downscaled).

Everything is derived from ``numpy.random.default_rng(seed)``: the same arguments give
the same scene on every machine.
"""

from __future__ import annotations

import colorsys
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import make_transform
from sam3d_ros.sim.noise import DepthNoiseConfig, apply_depth_noise
from sam3d_ros.sim.raycast import (
    Box,
    Camera,
    Cylinder,
    RenderedFrame,
    Scene,
    SceneObject,
    Shape,
    Sphere,
    Table,
    look_at,
    render,
)

logger = logging.getLogger(__name__)

SHAPE_TYPES: tuple[str, ...] = ("box", "cylinder", "sphere")
MAX_OBJECTS = 8

#: RealSense D435 colour camera at 640x480 (typical factory calibration values).
_D435_FX, _D435_FY, _D435_CX, _D435_CY = 615.0, 615.3, 321.1, 239.3


class SceneGenerationError(ValueError):
    """Raised for invalid scene-generation arguments or when objects cannot be placed."""


def d435_intrinsics(width: int = 640, height: int = 480) -> CameraIntrinsics:
    """RealSense-D435-like colour intrinsics for a ``width`` x ``height`` image.

    The focal length scales with the image height (fx ~ 615 at 480 rows); widths other
    than 4:3 (e.g. 424x240, 848x480) widen the field of view as the real camera does.
    """
    if width <= 0 or height <= 0:
        raise SceneGenerationError(f"image size must be > 0, got {width}x{height}")
    s = height / 480.0
    width_480 = width / s
    base = CameraIntrinsics(
        width=round(width_480),
        height=480,
        fx=_D435_FX,
        fy=_D435_FY,
        cx=_D435_CX + (width_480 - 640.0) / 2.0,
        cy=_D435_CY,
    )
    k = base.scaled(s, s)
    return CameraIntrinsics(width=width, height=height, fx=k.fx, fy=k.fy, cx=k.cx, cy=k.cy)


@dataclass(frozen=True)
class TabletopScene:
    """A generated scene with its camera.

    Attributes:
        scene: objects and table (world frame, z up, table at z = 0).
        camera: intrinsics and ``world_T_camera`` (optical frame).
        target: (x, y, z) world point the camera looks at (m).
        seed: the seed it was generated from.
    """

    scene: Scene
    camera: Camera
    target: tuple[float, float, float]
    seed: int

    def render(self) -> RenderedFrame:
        """Noise-free render of this scene (see :func:`sam3d_ros.sim.raycast.render`)."""
        return render(self.scene, self.camera)


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 0.9), rng.uniform(0.6, 0.95))
    return round(r * 255), round(g * 255), round(b * 255)


def _yaw_pose(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return make_transform(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.array([x, y, z]))


def _random_shape(
    rng: np.random.Generator, kind: str, lo: float, hi: float, x: float, y: float
) -> tuple[Shape, float]:
    """A shape resting on the table at (x, y) and its footprint radius (m)."""
    if kind == "box":
        sx, sy, sz = (float(v) for v in rng.uniform(lo, hi, 3))
        yaw = float(rng.uniform(-math.pi, math.pi))
        return Box((sx, sy, sz), _yaw_pose(x, y, sz / 2, yaw)), 0.5 * math.hypot(sx, sy)
    if kind == "cylinder":
        diameter, height = (float(v) for v in rng.uniform(lo, hi, 2))
        return Cylinder(diameter / 2, height, _yaw_pose(x, y, height / 2, 0.0)), diameter / 2
    if kind == "sphere":
        r = float(rng.uniform(lo, hi)) / 2
        return Sphere(r, _yaw_pose(x, y, r, 0.0)), r
    raise SceneGenerationError(f"unknown shape type {kind!r}; expected one of {SHAPE_TYPES}")


def _place_objects(
    rng: np.random.Generator,
    n: int,
    shape_types: Sequence[str],
    size_range: tuple[float, float],
    area_half_xy: tuple[float, float],
    gap: float,
) -> list[SceneObject]:
    lo, hi = size_range
    for scale_try in range(20):
        scale = 0.9**scale_try
        placed: list[tuple[float, float, float]] = []
        objects: list[SceneObject] = []
        for i in range(n):
            kind = str(rng.choice(list(shape_types)))
            for _ in range(200):
                x = float(rng.uniform(-area_half_xy[0], area_half_xy[0]))
                y = float(rng.uniform(-area_half_xy[1], area_half_xy[1]))
                shape, fr = _random_shape(rng, kind, lo, max(lo, hi * scale), x, y)
                if all(math.hypot(x - px, y - py) > fr + pr + gap for px, py, pr in placed):
                    placed.append((x, y, fr))
                    objects.append(SceneObject(label=i + 1, shape=shape, color=_random_color(rng)))
                    break
            else:
                break
        if len(objects) == n:
            if scale_try:
                logger.debug("placed %d objects after shrinking sizes by %.3f", n, scale)
            return objects
    raise SceneGenerationError(f"could not place {n} objects with sizes {size_range} in {area_half_xy}")


def _camera_at(
    target: np.ndarray, distance: float, azimuth: float, elevation: float, intrinsics: CameraIntrinsics
) -> Camera:
    direction = np.array(
        [
            math.cos(elevation) * math.cos(azimuth),
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
        ]
    )
    return look_at(target + distance * direction, target, intrinsics)


def _check_ranges(
    n_objects: int | None, size_range: tuple[float, float], distance_range: tuple[float, float]
) -> None:
    if n_objects is not None and not 1 <= n_objects <= MAX_OBJECTS:
        raise SceneGenerationError(f"n_objects must be in 1..{MAX_OBJECTS}, got {n_objects!r}")
    if not 0.0 < size_range[0] <= size_range[1]:
        raise SceneGenerationError(f"bad size_range {size_range!r}")
    if not 0.0 < distance_range[0] <= distance_range[1]:
        raise SceneGenerationError(f"bad distance_range {distance_range!r}")


def _generate(
    seed: int,
    n_objects: int | None,
    width: int,
    height: int,
    size_range: tuple[float, float],
    distance_range: tuple[float, float],
    elevation_deg_range: tuple[float, float],
    shape_types: Sequence[str],
) -> tuple[Scene, np.ndarray, float, float, float, CameraIntrinsics, np.random.Generator]:
    _check_ranges(n_objects, size_range, distance_range)
    for kind in shape_types:
        if kind not in SHAPE_TYPES:
            raise SceneGenerationError(f"unknown shape type {kind!r}; expected one of {SHAPE_TYPES}")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, MAX_OBJECTS + 1)) if n_objects is None else int(n_objects)
    spread = 0.06 + 0.03 * n
    objects = _place_objects(rng, n, shape_types, size_range, (spread, spread * 0.8), gap=0.01)
    centres = np.array([o.shape.world_T_object[:3, 3] for o in objects])
    target = np.array([centres[:, 0].mean(), centres[:, 1].mean(), float(centres[:, 2].mean())])
    table = Table(center_xy=(float(target[0]), float(target[1])), half_extents_xy=(0.75, 0.55))
    scene = Scene(objects=tuple(objects), table=table)
    k = d435_intrinsics(width, height)
    # keep the whole scene in view: the bounding sphere of all objects must fit the
    # narrower field of view (the distance may then exceed distance_range)
    radius = max(
        float(np.linalg.norm(c - target)) + o.shape.bounding_radius
        for c, o in zip(centres, objects, strict=True)
    )
    half_fov = min(math.atan2(k.width / 2, k.fx), math.atan2(k.height / 2, k.fy))
    distance = max(float(rng.uniform(*distance_range)), 1.1 * radius / math.sin(half_fov))
    azimuth = float(rng.uniform(-math.pi, math.pi))
    elevation = math.radians(float(rng.uniform(*elevation_deg_range)))
    return scene, target, distance, azimuth, elevation, k, rng


def random_scene(
    seed: int,
    n_objects: int | None = None,
    *,
    width: int = 640,
    height: int = 480,
    size_range: tuple[float, float] = (0.03, 0.20),
    distance_range: tuple[float, float] = (0.5, 1.2),
    elevation_deg_range: tuple[float, float] = (25.0, 70.0),
    shape_types: Sequence[str] = SHAPE_TYPES,
) -> TabletopScene:
    """A deterministic random tabletop scene.

    Args:
        seed: RNG seed; the same arguments always give the same scene.
        n_objects: 1..8 objects, or None for a random count in 1..8.
        width, height: image size; intrinsics from :func:`d435_intrinsics` (e.g. 320x240).
        size_range: every object dimension (box edges, cylinder diameter and height,
            sphere diameter) is uniform in this range, metres.
        distance_range: camera distance from the scene centre, metres; increased when
            needed so that the bounding sphere of all objects fits in the image.
        elevation_deg_range: camera elevation above the table, degrees.
        shape_types: the kinds to draw from ("box", "cylinder", "sphere").
    """
    scene, target, dist, az, el, k, _ = _generate(
        seed, n_objects, width, height, size_range, distance_range, elevation_deg_range, shape_types
    )
    cam = _camera_at(target, dist, az, el, k)
    return TabletopScene(
        scene=scene, camera=cam, target=(float(target[0]), float(target[1]), float(target[2])), seed=seed
    )


def sequence(
    seed: int,
    n_frames: int,
    n_objects: int | None = None,
    *,
    arc_deg: float = 20.0,
    elevation_swing_deg: float = 4.0,
    width: int = 640,
    height: int = 480,
    size_range: tuple[float, float] = (0.03, 0.20),
    distance_range: tuple[float, float] = (0.5, 1.2),
    elevation_deg_range: tuple[float, float] = (25.0, 70.0),
    shape_types: Sequence[str] = SHAPE_TYPES,
) -> list[TabletopScene]:
    """``n_frames`` views of one random scene, the camera moving along an arc.

    The first view's camera matches :func:`random_scene` with the same arguments except
    that the azimuth sweeps ``arc_deg`` degrees in total (centred on the random azimuth)
    and the elevation swings by up to ``elevation_swing_deg`` degrees (a half sine).
    """
    if n_frames < 1:
        raise SceneGenerationError(f"n_frames must be >= 1, got {n_frames!r}")
    scene, target, dist, az, el, k, _ = _generate(
        seed, n_objects, width, height, size_range, distance_range, elevation_deg_range, shape_types
    )
    out = []
    tgt = (float(target[0]), float(target[1]), float(target[2]))
    for i in range(n_frames):
        s = i / (n_frames - 1) if n_frames > 1 else 0.5
        a = az + math.radians(arc_deg) * (s - 0.5)
        e = el + math.radians(elevation_swing_deg) * math.sin(math.pi * s)
        e = min(e, math.radians(85.0))
        out.append(
            TabletopScene(scene=scene, camera=_camera_at(target, dist, a, e, k), target=tgt, seed=seed)
        )
    return out


def render_sequence(
    views: Sequence[TabletopScene],
    *,
    noise: DepthNoiseConfig | None = None,
    noise_seed: int = 0,
    start_stamp_ns: int = 1_700_000_000_000_000_000,
    period_ns: int = 100_000_000,
) -> list[RenderedFrame]:
    """Render views and stamp them ``start_stamp_ns + i * period_ns``.

    ``noise`` (None: noise-free) is applied to the depth with one Generator seeded by
    ``noise_seed``; the ground truth (poses, pixel counts) refers to the clean render.
    """
    if period_ns <= 0:
        raise SceneGenerationError(f"period_ns must be > 0, got {period_ns!r}")
    rng = np.random.default_rng(noise_seed)
    frames = []
    for i, view in enumerate(views):
        f = view.render().with_stamp(start_stamp_ns + i * period_ns)
        if noise is not None and noise.enabled:
            f = f.with_depth(apply_depth_noise(f.depth, rng, noise))
        frames.append(f)
    return frames
