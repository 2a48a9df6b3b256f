"""Physically plausible synthetic tabletop RGB-D frames from mesh sources (CPU only).

One frame = one independent scene:

1. draw 1-8 objects of the requested split from the mesh sources
   (:mod:`sam3d_ros.sim.mesh_sources`: YCB scans, pybullet_data meshes, procedural shapes);
2. drop them with pybullet (DIRECT mode, convex-hull collision shapes, 240 Hz) onto the
   table plane ``z = 0`` of the world until they rest (objects that roll off the table are
   removed);
3. place a camera 0.4-1.5 m from the objects' centre at 20-80 deg elevation, with
   intrinsics drawn around a RealSense D435 / D455 or Azure Kinect colour camera;
4. render RGB (random light direction, colour, ambient/diffuse/specular, textures), the
   z-buffer and the segmentation with pybullet's TinyRenderer (pure CPU), convert the
   z-buffer to metric depth, rasterise each posed mesh alone for the amodal masks
   (:func:`sam3d_ros.core.metrics.render_mesh_depth`), then apply the depth-sensor noise
   model (:mod:`sam3d_ros.sim.noise`).

Frames: world z up, table top at z = 0; camera poses in the OPTICAL frame (x right, y down,
z forward); ``camera_T_object`` maps object-frame points (the mesh of
:func:`~sam3d_ros.sim.mesh_sources.resolve_mesh`) into the camera frame.

Determinism: frame ``i`` of a run with ``seed`` uses ``numpy.random.default_rng((seed,
i))`` only and a freshly reset physics world, so its output does not depend on the worker
that renders it or on the other frames. (It does depend on whether the YCB directory is
present, since YCB objects are one of the sources.)
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy.spatial import ConvexHull, QhullError

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import invert_transform, make_transform, matrix_from_quaternion, transform_points
from sam3d_ros.core.metrics import render_mesh_depth
from sam3d_ros.sim import mesh_sources as ms
from sam3d_ros.sim import procedural
from sam3d_ros.sim.noise import DepthNoiseConfig, apply_depth_noise
from sam3d_ros.sim.raycast import look_at_transform
from sam3d_ros.sim.splits import check_split, split_of

logger = logging.getLogger(__name__)

#: Stamp of frame 0 and the stamp period (ns) of generated frames.
START_STAMP_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000
#: Physics time step (s) and the most steps a drop may take.
SIM_DT = 1.0 / 240.0
MAX_SETTLE_STEPS = 960
#: An object rests when its speed is below these (m/s, rad/s).
REST_LINEAR = 0.01
REST_ANGULAR = 0.1
#: Half extents (m) of the table top around the world origin; objects beyond it are removed.
TABLE_HALF_EXTENTS = (0.6, 0.45)
#: Objects whose lowest point is less than this above the table are moved down onto it (m).
TABLE_SNAP_M = 0.003
#: Near and far clipping planes of the renderer (m); depth beyond ``far`` is background.
NEAR_M = 0.05
FAR_M = 4.0
#: TinyRenderer samples pixel (u, v) at (u + 0.5, v - 0.5) of the projection it is given
#: (measured): the projection's principal point is shifted by this to compensate.
TINY_RENDERER_PIXEL_OFFSET = (-0.5, 0.5)
#: Colour-camera presets at 640x480: name -> (fx, fy, cx, cy).
CAMERA_PRESETS: dict[str, tuple[float, float, float, float]] = {
    "realsense_d435": (615.0, 615.0, 320.0, 240.0),
    "realsense_d455": (385.0, 385.0, 320.0, 240.0),
    "azure_kinect": (305.0, 305.0, 320.0, 240.0),
}
#: Relative jitter of the focal length and of the principal point (fraction of the size).
FOCAL_JITTER = 0.05
PRINCIPAL_JITTER = 0.02
#: Mass density (kg/m^3) used for the drop, and the mass clamp (kg).
DENSITY = 500.0
MASS_RANGE = (0.01, 2.0)
#: Most convex-hull vertices handed to pybullet per collision shape.
MAX_HULL_VERTICES = 255
#: Attempts to build a scene with at least one object left on the table.
SCENE_ATTEMPTS = 5


class GeneratorError(RuntimeError):
    """Raised when a scene cannot be generated or the configuration is invalid."""


@dataclass(frozen=True)
class GeneratorConfig:
    """Parameters of the scene generator.

    Attributes:
        width, height: image size in pixels (intrinsics presets are scaled to it).
        min_objects, max_objects: objects per scene (uniform, 1..8).
        source_weights: relative frequency of each mesh source (YCB is dropped, and the
            rest renormalised, when the YCB directory is missing).
        named_pybullet_fraction: chance that a pybullet object is a named mesh (duck,
            teddy, ...) instead of one of random_urdfs.
        distance_range: camera distance from the objects' centre (m).
        elevation_deg_range: camera elevation above the table (deg).
        upright_fraction: chance that an object is dropped in its canonical orientation
            (random yaw) instead of a uniformly random one.
        noise: the depth noise model (``DepthNoiseConfig.disabled()`` for clean depth).
    """

    width: int = 640
    height: int = 480
    min_objects: int = 1
    max_objects: int = 8
    source_weights: dict[str, float] = field(
        default_factory=lambda: {"ycb": 0.4, "pybullet": 0.25, "procedural": 0.35}
    )
    named_pybullet_fraction: float = 0.3
    distance_range: tuple[float, float] = (0.4, 1.5)
    elevation_deg_range: tuple[float, float] = (20.0, 80.0)
    upright_fraction: float = 0.6
    noise: DepthNoiseConfig = field(default_factory=DepthNoiseConfig)

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise GeneratorError(f"image size must be >= 16x16, got {self.width}x{self.height}")
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise GeneratorError(
                f"need 1 <= min_objects <= max_objects <= 8, got {self.min_objects}, {self.max_objects}"
            )
        unknown = set(self.source_weights) - set(ms.SOURCES)
        if unknown or not any(w > 0 for w in self.source_weights.values()):
            raise GeneratorError(f"bad source_weights {self.source_weights!r}; sources are {ms.SOURCES}")
        if not 0.0 < self.distance_range[0] <= self.distance_range[1]:
            raise GeneratorError(f"bad distance_range {self.distance_range!r}")

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly description (stored in dataset.json)."""
        return {
            "width": self.width,
            "height": self.height,
            "min_objects": self.min_objects,
            "max_objects": self.max_objects,
            "source_weights": dict(self.source_weights),
            "named_pybullet_fraction": self.named_pybullet_fraction,
            "distance_range": list(self.distance_range),
            "elevation_deg_range": list(self.elevation_deg_range),
            "upright_fraction": self.upright_fraction,
            "noise_enabled": self.noise.enabled,
        }


@dataclass(frozen=True)
class GeneratedObject:
    """Ground truth of one object of a generated frame.

    Attributes:
        label: instance label (1..n) in the label image.
        mesh_ref: mesh reference (see :mod:`sam3d_ros.sim.mesh_sources`).
        scale: uniform scale applied to the canonical mesh.
        camera_T_object: 4x4 float64 object -> camera (optical) transform.
        world_T_object: 4x4 float64 object -> world transform (table top z = 0).
        visible_pixels: pixels carrying ``label`` in the label image.
        amodal_pixels: pixels the object covers when rendered alone (>= visible).
        amodal_mask: (H, W) bool amodal mask.
        color: base RGB colour (0..255) used for rendering.
    """

    label: int
    mesh_ref: str
    scale: float
    camera_T_object: NDArray[np.float64]
    world_T_object: NDArray[np.float64]
    visible_pixels: int
    amodal_pixels: int
    amodal_mask: NDArray[np.bool_]
    color: tuple[int, int, int]

    @property
    def visible_fraction(self) -> float:
        """``visible_pixels / amodal_pixels`` (0 when outside the image)."""
        return self.visible_pixels / self.amodal_pixels if self.amodal_pixels else 0.0


@dataclass(frozen=True)
class GeneratedFrame:
    """One generated frame.

    Attributes:
        index, seed, split: identify the frame (frame ``index`` of run ``seed``).
        stamp_ns: ``START_STAMP_NS + index * PERIOD_NS``.
        intrinsics: pinhole intrinsics of all images.
        world_T_camera: 4x4 camera (optical frame) -> world.
        rgb: (H, W, 3) uint8.
        depth: (H, W) float32 noisy depth in metres (NaN invalid).
        depth_clean: (H, W) float32 noise-free depth in metres (NaN = background).
        labels: (H, W) uint16 visible instance labels (0 = table/background).
        objects: ground truth per object, by label.
        lighting: the random lighting parameters (JSON-friendly).
    """

    index: int
    seed: int
    split: str
    stamp_ns: int
    intrinsics: CameraIntrinsics
    world_T_camera: NDArray[np.float64]
    rgb: NDArray[np.uint8]
    depth: NDArray[np.float32]
    depth_clean: NDArray[np.float32]
    labels: NDArray[np.uint16]
    objects: tuple[GeneratedObject, ...]
    lighting: dict[str, Any]


# --------------------------------------------------------------------------- object draw


@dataclass(frozen=True)
class _Pick:
    ref: str
    scale: float


def _split_pool(split: str) -> dict[str, list[str]]:
    """Mesh references of ``split`` per non-procedural pool (cached per process)."""
    key = split
    if key not in _POOL_CACHE:
        _POOL_CACHE[key] = {
            "ycb": [r for r in (f"ycb:{n}" for n in ms.ycb_names()) if split_of(ms.object_id(r)) == split],
            "pybullet_named": [
                r for r in (f"pybullet:{n}" for n in ms.PYBULLET_NAMED) if split_of(ms.object_id(r)) == split
            ],
            "pybullet_random": [
                r
                for r in (ms.pybullet_random_ref(i) for i in range(ms.PYBULLET_RANDOM_COUNT))
                if split_of(ms.object_id(r)) == split
            ],
        }
    return _POOL_CACHE[key]


_POOL_CACHE: dict[str, dict[str, list[str]]] = {}


#: Draws before giving up on finding a loadable mesh (a few pybullet_data assets are broken).
MAX_MESH_DRAWS: Final[int] = 100
_BROKEN_MESHES: set[str] = set()


def _usable_mesh(ref: str) -> bool:
    """False (logged once per asset) for a mesh that cannot be loaded, e.g.
    ``random_urdfs/168/168.obj`` whose vertices are all NaN; such objects are redrawn."""
    if ref in _BROKEN_MESHES:
        return False
    try:
        ms.load_source(ref)
    except ms.MeshSourceError as err:
        _BROKEN_MESHES.add(ref)
        logger.warning("skipping an unusable mesh (redrawn): %s", err)
        return False
    return True


def _pick_object(rng: np.random.Generator, split: str, cfg: GeneratorConfig) -> _Pick:
    pools = _split_pool(split)
    weights = {s: float(cfg.source_weights.get(s, 0.0)) for s in ms.SOURCES}
    if not pools["ycb"]:
        weights["ycb"] = 0.0
    if not pools["pybullet_named"] and not pools["pybullet_random"]:
        weights["pybullet"] = 0.0
    total = sum(weights.values())
    if total <= 0.0:
        raise GeneratorError(f"no mesh source available for split {split!r}")
    source = str(rng.choice(list(ms.SOURCES), p=[weights[s] / total for s in ms.SOURCES]))
    if source == "ycb":
        return _Pick(str(rng.choice(pools["ycb"])), 1.0)
    if source == "pybullet":
        named = pools["pybullet_named"]
        if named and (rng.random() < cfg.named_pybullet_fraction or not pools["pybullet_random"]):
            ref = str(rng.choice(named))
            lo, hi = ms.PYBULLET_NAMED[ms.split_ref(ref)[1]]
            size = float(rng.uniform(lo, hi))
            return _Pick(ref, size / float(ms.load_source(ref).mesh.extents.max()))
        for _ in range(MAX_MESH_DRAWS):
            ref = str(rng.choice(pools["pybullet_random"]))
            scale = ms.PYBULLET_RANDOM_SCALE * float(rng.uniform(0.7, 1.5))
            if _usable_mesh(ref):
                return _Pick(ref, scale)
        raise GeneratorError(f"no usable pybullet_data mesh in {MAX_MESH_DRAWS} draws for split {split!r}")
    for _ in range(1000):
        family = str(rng.choice(list(procedural.FAMILIES)))
        index = int(rng.integers(0, procedural.POOL_SIZE))
        ref = ms.procedural_ref(family, index)
        if split_of(ms.object_id(ref)) == split:
            return _Pick(ref, 1.0)
    raise GeneratorError(f"no procedural object found for split {split!r}")  # pragma: no cover


# --------------------------------------------------------------------------- camera


def random_intrinsics(rng: np.random.Generator, width: int, height: int) -> tuple[str, CameraIntrinsics]:
    """A preset (D435 / D455 / Azure Kinect colour camera at 640x480) scaled to ``width`` x
    ``height`` with jittered focal length and principal point."""
    name = str(rng.choice(sorted(CAMERA_PRESETS)))
    fx, fy, cx, cy = CAMERA_PRESETS[name]
    f = float(rng.uniform(1.0 - FOCAL_JITTER, 1.0 + FOCAL_JITTER))
    base = CameraIntrinsics(
        width=640,
        height=480,
        fx=fx * f,
        fy=fy * f * float(rng.uniform(0.995, 1.005)),
        cx=cx - 0.5 + float(rng.uniform(-PRINCIPAL_JITTER, PRINCIPAL_JITTER)) * 640,
        cy=cy - 0.5 + float(rng.uniform(-PRINCIPAL_JITTER, PRINCIPAL_JITTER)) * 480,
    )
    return name, base.scaled(width / 640.0, height / 480.0)


def gl_view_matrix(world_T_camera: NDArray[np.floating]) -> list[float]:
    """pybullet/OpenGL view matrix (column-major 16 floats) of an optical-frame camera pose."""
    optical_to_gl = np.diag([1.0, -1.0, -1.0, 1.0])
    gl_T_world = invert_transform(np.asarray(world_T_camera, dtype=np.float64) @ optical_to_gl)
    return [float(v) for v in gl_T_world.T.reshape(-1)]


def gl_projection_matrix(k: CameraIntrinsics, near: float = NEAR_M, far: float = FAR_M) -> list[float]:
    """OpenGL projection matrix (column-major 16 floats) for pinhole intrinsics ``k``, where
    integer pixel coordinates are pixel centres and row 0 is the top of the image.

    The principal point is shifted by ``TINY_RENDERER_PIXEL_OFFSET`` so that TinyRenderer's
    pixel sampling matches :meth:`CameraIntrinsics.project` exactly (tested against
    :func:`~sam3d_ros.core.metrics.render_mesh_depth`)."""
    w, h = float(k.width), float(k.height)
    cx = k.cx + TINY_RENDERER_PIXEL_OFFSET[0]
    cy = k.cy + TINY_RENDERER_PIXEL_OFFSET[1]
    p = np.zeros((4, 4))
    p[0, 0] = 2.0 * k.fx / w
    p[0, 2] = 1.0 - 2.0 * (cx + 0.5) / w
    p[1, 1] = 2.0 * k.fy / h
    p[1, 2] = 2.0 * (cy + 0.5) / h - 1.0
    p[2, 2] = -(far + near) / (far - near)
    p[2, 3] = -2.0 * far * near / (far - near)
    p[3, 2] = -1.0
    return [float(v) for v in p.T.reshape(-1)]


def zbuffer_to_depth(
    zbuf: NDArray[np.floating], near: float = NEAR_M, far: float = FAR_M
) -> NDArray[np.float32]:
    """OpenGL z-buffer values in [0, 1] -> (H, W) float32 metric depth (NaN at the far plane)."""
    z = np.asarray(zbuf, dtype=np.float64)
    depth = far * near / (far - (far - near) * z)
    return np.where(z < 1.0 - 1e-7, depth, np.nan).astype(np.float32)


# --------------------------------------------------------------------------- textures


def _texture(rng: np.random.Generator, base: NDArray[np.float64], size: int = 128) -> NDArray[np.uint8]:
    """A random (size, size, 3) uint8 texture around colour ``base``: stripes, checker or
    smooth noise."""
    kind = int(rng.integers(0, 3))
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == 0:
        f = float(rng.uniform(3, 12))
        pattern = 0.5 + 0.5 * np.sin(2 * math.pi * f * (xx + 0.15 * np.sin(2 * math.pi * 2 * yy)))
    elif kind == 1:
        n = int(rng.integers(2, 9))
        pattern = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float64)
    else:
        coarse = rng.random((8, 8))
        img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        pattern = np.asarray(img, dtype=np.float64) / 255.0
    other = np.clip(base * float(rng.uniform(0.5, 0.85)), 0, 255)
    tex = other[None, None, :] + (base - other)[None, None, :] * pattern[..., None]
    return np.clip(tex, 0, 255).astype(np.uint8)


def _spherical_uv(v: NDArray[np.float64]) -> NDArray[np.float64]:
    d = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    u = 0.5 + np.arctan2(d[:, 1], d[:, 0]) / (2 * math.pi)
    w = 0.5 + np.arcsin(np.clip(d[:, 2], -1, 1)) / math.pi
    return np.stack([u * 2.0, w], axis=1)


def _random_color(rng: np.random.Generator) -> NDArray[np.float64]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(
        float(rng.random()), float(rng.uniform(0.2, 0.9)), float(rng.uniform(0.35, 0.95))
    )
    return np.array([r, g, b]) * 255.0


# --------------------------------------------------------------------------- simulator


class _Simulator:
    """One pybullet DIRECT client per process (created lazily), reset for every scene."""

    def __init__(self) -> None:
        import pybullet

        self.p: Any = pybullet
        self.client = pybullet.connect(pybullet.DIRECT)
        self.tmp = Path(tempfile.mkdtemp(prefix="sam3d_gen_"))
        self._tex_count = 0

    def texture_id(self, image: NDArray[np.uint8]) -> int:
        """Load an RGB image as a pybullet texture (through a temporary PNG)."""
        self._tex_count += 1
        path = self.tmp / f"tex_{self._tex_count % 64}.png"
        Image.fromarray(image).save(path)
        return int(self.p.loadTexture(str(path), physicsClientId=self.client))

    def reset(self) -> None:
        p = self.p
        p.resetSimulation(physicsClientId=self.client)
        p.setGravity(0.0, 0.0, -9.81, physicsClientId=self.client)
        p.setPhysicsEngineParameter(
            fixedTimeStep=SIM_DT, deterministicOverlappingPairs=1, physicsClientId=self.client
        )


_SIM: _Simulator | None = None


def reset_worker_state() -> None:
    """Forget this process's physics client (call first in a forked worker process)."""
    global _SIM
    _SIM = None


def _simulator() -> _Simulator:
    global _SIM
    if _SIM is None:
        _SIM = _Simulator()
    return _SIM


def _hull_vertices(v: NDArray[np.float64]) -> NDArray[np.float64]:
    try:
        hv = v[ConvexHull(v).vertices]
    except QhullError as err:
        raise GeneratorError(f"degenerate mesh for the collision hull ({len(v)} vertices)") from err
    if len(hv) > MAX_HULL_VERTICES:
        idx = np.random.default_rng(0).choice(len(hv), MAX_HULL_VERTICES, replace=False)
        # keep the extreme points along the axes so the hull stays tight at the bottom
        ext = np.concatenate([hv.argmin(axis=0), hv.argmax(axis=0)])
        hv = hv[np.unique(np.concatenate([idx, ext]))]
    return hv


def _random_rotation(rng: np.random.Generator, upright: bool) -> NDArray[np.float64]:
    if upright:
        yaw = float(rng.uniform(-math.pi, math.pi))
        c, s = math.cos(yaw), math.sin(yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return matrix_from_quaternion(q)


def _quat_xyzw(r: NDArray[np.float64]) -> list[float]:
    from sam3d_ros.core.frames import quaternion_from_matrix

    return [float(v) for v in quaternion_from_matrix(r)]


@dataclass
class _Body:
    pick: _Pick
    body: int
    color: NDArray[np.float64]


def _drop(
    sim: _Simulator, rng: np.random.Generator, picks: list[_Pick], cfg: GeneratorConfig
) -> list[tuple[_Pick, NDArray[np.float64], NDArray[np.float64]]]:
    """Drop the objects; returns (pick, world_T_object, colour) of those left on the table."""
    p, cid = sim.p, sim.client
    sim.reset()
    plane = p.createCollisionShape(p.GEOM_PLANE, physicsClientId=cid)
    p.createMultiBody(0.0, plane, -1, [0.0, 0.0, 0.0], physicsClientId=cid)
    n = len(picks)
    spread = 0.05 + 0.03 * n
    placed: list[tuple[NDArray[np.float64], float]] = []
    bodies: list[_Body] = []
    for pick in picks:
        mesh = ms.load_source(pick.ref).mesh
        v = np.asarray(mesh.vertices) * pick.scale
        hull = _hull_vertices(v)
        rot = _random_rotation(rng, bool(rng.random() < cfg.upright_fraction))
        rv = hull @ rot.T
        radius = float(np.linalg.norm(rv, axis=1).max())
        lo_z = float(-rv[:, 2].min())
        xy = rng.uniform(-spread, spread, 2)
        z = lo_z + 0.002
        for cx, r in placed:  # stack above anything overlapping in the bounding-sphere sense
            if np.linalg.norm(cx[:2] - xy) < r + radius and abs(cx[2] - z) < r + radius:
                z = max(z, float(cx[2]) + r + radius + 0.005)
        pos = np.array([xy[0], xy[1], z])
        placed.append((pos, radius))
        col = p.createCollisionShape(p.GEOM_MESH, vertices=hull.tolist(), physicsClientId=cid)
        volume = float(abs(mesh.volume)) * pick.scale**3 if mesh.is_volume else (radius**3)
        mass = float(np.clip(DENSITY * volume, *MASS_RANGE))
        body = p.createMultiBody(mass, col, -1, pos.tolist(), _quat_xyzw(rot), physicsClientId=cid)
        p.changeDynamics(
            body,
            -1,
            lateralFriction=0.8,
            rollingFriction=0.0005,
            spinningFriction=0.0005,
            linearDamping=0.2,
            angularDamping=0.2,
            physicsClientId=cid,
        )
        bodies.append(_Body(pick, body, _random_color(rng)))
    for step in range(0, MAX_SETTLE_STEPS, 24):
        for _ in range(24):
            p.stepSimulation(physicsClientId=cid)
        if step < 96:
            continue
        rest = True
        for b in bodies:
            lin, ang = p.getBaseVelocity(b.body, physicsClientId=cid)
            if np.linalg.norm(lin) > REST_LINEAR or np.linalg.norm(ang) > REST_ANGULAR:
                rest = False
                break
        if rest:
            break
    out = []
    for b in bodies:
        pos, quat = p.getBasePositionAndOrientation(b.body, physicsClientId=cid)
        t = make_transform(np.asarray(p.getMatrixFromQuaternion(quat)).reshape(3, 3), np.asarray(pos))
        if abs(pos[0]) > TABLE_HALF_EXTENTS[0] or abs(pos[1]) > TABLE_HALF_EXTENTS[1] or pos[2] < 0.0:
            logger.debug("object %s left the table at %s; removed", b.pick.ref, pos)
            continue
        # pybullet keeps a ~1 mm contact margin: put objects that rest on the table onto it
        low = float(
            transform_points(t, np.asarray(ms.load_source(b.pick.ref).mesh.vertices) * b.pick.scale)[
                :, 2
            ].min()
        )
        if 0.0 < low < TABLE_SNAP_M:
            t[2, 3] -= low
        out.append((b.pick, t, b.color))
    return out


# --------------------------------------------------------------------------- rendering


def _render(
    sim: _Simulator,
    rng: np.random.Generator,
    objects: list[tuple[_Pick, NDArray[np.float64], NDArray[np.float64]]],
    k: CameraIntrinsics,
    world_T_camera: NDArray[np.float64],
) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.int32], dict[str, Any]]:
    """Render the resting objects with TinyRenderer in a fresh world holding only visuals.

    Returns rgb (H, W, 3) uint8, clean depth (H, W) float32 m, labels (H, W) int32 (0 for
    table/background, i + 1 for ``objects[i]``) and the lighting parameters.
    """
    p, cid = sim.p, sim.client
    sim.reset()
    table_rgb = np.array([rng.uniform(90, 220), rng.uniform(70, 190), rng.uniform(50, 170)])
    tx, ty = TABLE_HALF_EXTENTS
    table_vis = p.createVisualShape(
        p.GEOM_MESH,
        vertices=[[-tx, -ty, 0.0], [tx, -ty, 0.0], [tx, ty, 0.0], [-tx, ty, 0.0]],
        indices=[0, 1, 2, 0, 2, 3],
        uvs=[[0.0, 0.0], [4.0, 0.0], [4.0, 3.0], [0.0, 3.0]],
        normals=[[0.0, 0.0, 1.0]] * 4,
        rgbaColor=[1.0, 1.0, 1.0, 1.0],
        physicsClientId=cid,
    )
    table = p.createMultiBody(0.0, -1, table_vis, [0.0, 0.0, 0.0], physicsClientId=cid)
    p.changeVisualShape(
        table, -1, textureUniqueId=sim.texture_id(_texture(rng, table_rgb)), physicsClientId=cid
    )
    body_label: dict[int, int] = {}
    for i, (pick, t, color) in enumerate(objects):
        src = ms.load_source(pick.ref)
        verts = (src.render_vertices * pick.scale).tolist()
        textured = src.texture is not None and src.uv is not None
        use_random_tex = not textured and rng.random() < 0.5
        kwargs: dict[str, Any] = {}
        if textured and src.uv is not None:
            kwargs["uvs"] = src.uv.tolist()
        elif use_random_tex:
            kwargs["uvs"] = _spherical_uv(src.render_vertices).tolist()
        rgba = [1.0, 1.0, 1.0, 1.0] if (textured or use_random_tex) else [*(color / 255.0).tolist(), 1.0]
        vis = p.createVisualShape(
            p.GEOM_MESH,
            vertices=verts,
            indices=src.render_faces.reshape(-1).tolist(),
            rgbaColor=rgba,
            physicsClientId=cid,
            **kwargs,
        )
        quat = _quat_xyzw(t[:3, :3])
        body = p.createMultiBody(0.0, -1, vis, t[:3, 3].tolist(), quat, physicsClientId=cid)
        if textured and src.texture is not None:
            p.changeVisualShape(body, -1, textureUniqueId=sim.texture_id(src.texture), physicsClientId=cid)
        elif use_random_tex:
            p.changeVisualShape(
                body, -1, textureUniqueId=sim.texture_id(_texture(rng, color)), physicsClientId=cid
            )
        body_label[body] = i + 1
    az = float(rng.uniform(-math.pi, math.pi))
    el = float(rng.uniform(math.radians(25), math.radians(85)))
    light = {
        "direction": [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)],
        "color": [float(v) for v in rng.uniform(0.8, 1.0, 3)],
        "ambient": float(rng.uniform(0.3, 0.7)),
        "diffuse": float(rng.uniform(0.3, 0.8)),
        "specular": float(rng.uniform(0.0, 0.3)),
        "shadow": int(rng.random() < 0.5),
    }
    _, _, rgba_img, zbuf, seg = p.getCameraImage(
        k.width,
        k.height,
        viewMatrix=gl_view_matrix(world_T_camera),
        projectionMatrix=gl_projection_matrix(k),
        lightDirection=light["direction"],
        lightColor=light["color"],
        lightDistance=3.0,
        shadow=light["shadow"],
        lightAmbientCoeff=light["ambient"],
        lightDiffuseCoeff=light["diffuse"],
        lightSpecularCoeff=light["specular"],
        renderer=p.ER_TINY_RENDERER,
        physicsClientId=cid,
    )
    rgb = np.asarray(rgba_img, dtype=np.uint8).reshape(k.height, k.width, 4)[..., :3]
    gain = float(rng.uniform(0.85, 1.15))
    rgb = np.clip(rgb.astype(np.float64) * gain + rng.normal(0.0, 2.0, rgb.shape), 0, 255).astype(np.uint8)
    depth = zbuffer_to_depth(np.asarray(zbuf, dtype=np.float64).reshape(k.height, k.width))
    seg_arr = np.asarray(seg, dtype=np.int64).reshape(k.height, k.width)
    labels = np.zeros(seg_arr.shape, dtype=np.int32)
    for body, label in body_label.items():
        labels[seg_arr == body] = label
    light["gain"] = gain
    return rgb, depth, labels, light


def generate_frame(
    seed: int, index: int, split: str = "val", config: GeneratorConfig | None = None
) -> GeneratedFrame:
    """Generate frame ``index`` of run ``seed`` with objects of ``split`` (deterministic).

    Raises:
        GeneratorError: no scene with an object on the table after a few attempts.
    """
    cfg = config or GeneratorConfig()
    check_split(split)
    rng = np.random.default_rng([int(seed), int(index)])
    sim = _simulator()
    resting: list[tuple[_Pick, NDArray[np.float64], NDArray[np.float64]]] = []
    for attempt in range(SCENE_ATTEMPTS):
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        picks = [_pick_object(rng, split, cfg) for _ in range(n)]
        resting = _drop(sim, rng, picks, cfg)
        if resting:
            break
        logger.debug("frame %d attempt %d: every object left the table", index, attempt)
    if not resting:
        raise GeneratorError(f"frame {index} of seed {seed}: no object stayed on the table")

    # camera
    cam_name, k = random_intrinsics(rng, cfg.width, cfg.height)
    centres = np.array([t[:3, 3] for _, t, _ in resting])
    target = centres.mean(axis=0) + np.append(rng.normal(0.0, 0.01, 2), 0.0)
    radius = max(
        float(np.linalg.norm(c - target))
        + float(np.linalg.norm(ms.load_source(pk.ref).mesh.extents)) * pk.scale / 2
        for c, (pk, _, _) in zip(centres, resting, strict=True)
    )
    half_fov = min(math.atan2(k.width / 2, k.fx), math.atan2(k.height / 2, k.fy))
    fit = 1.05 * radius / math.sin(half_fov)
    lo, hi = cfg.distance_range
    distance = float(rng.uniform(min(max(lo, fit), hi), hi))
    az = float(rng.uniform(-math.pi, math.pi))
    el = math.radians(float(rng.uniform(*cfg.elevation_deg_range)))
    eye = target + distance * np.array(
        [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    )
    world_T_camera = look_at_transform(eye, target)
    camera_T_world = invert_transform(world_T_camera)

    rgb, depth_clean, labels, light = _render(sim, rng, resting, k, world_T_camera)
    light["camera_model"] = cam_name
    objects = []
    for i, (pick, world_T_object, color) in enumerate(resting):
        label = i + 1
        camera_T_object = camera_T_world @ world_T_object
        mesh = ms.load_source(pick.ref).mesh
        v_cam = transform_points(camera_T_object, np.asarray(mesh.vertices) * pick.scale)
        amodal = np.isfinite(render_mesh_depth((v_cam, np.asarray(mesh.faces)), k))
        visible = labels == label
        amodal |= visible
        objects.append(
            GeneratedObject(
                label=label,
                mesh_ref=pick.ref,
                scale=float(pick.scale),
                camera_T_object=camera_T_object,
                world_T_object=world_T_object,
                visible_pixels=int(np.count_nonzero(visible)),
                amodal_pixels=int(np.count_nonzero(amodal)),
                amodal_mask=amodal,
                color=(round(float(color[0])), round(float(color[1])), round(float(color[2]))),
            )
        )
    depth = (
        apply_depth_noise(depth_clean, rng, cfg.noise)
        if cfg.noise.enabled
        else depth_clean.astype(np.float32)
    )
    return GeneratedFrame(
        index=int(index),
        seed=int(seed),
        split=split,
        stamp_ns=START_STAMP_NS + int(index) * PERIOD_NS,
        intrinsics=k,
        world_T_camera=world_T_camera,
        rgb=rgb,
        depth=np.asarray(depth, dtype=np.float32),
        depth_clean=depth_clean,
        labels=labels.astype(np.uint16),
        objects=tuple(objects),
        lighting=light,
    )
