"""Physically plausible synthetic tabletop RGB-D frames from mesh sources (CPU only).

One frame = one independent scene:

1. draw 1-8 objects of the requested split from the mesh sources
   (:mod:`sam3d_ros.sim.mesh_sources`: YCB scans, pybullet_data meshes, procedural shapes)
   and a scene layout (:data:`SCENE_KINDS`): ``scatter`` (objects far apart on the table),
   ``cluster`` (dropped a few cm apart), ``pile`` (poured onto each other), ``bin`` (dropped
   into a tray or bin whose walls occlude) or ``stack`` (a wide object lying flat with
   others dropped onto its top);
2. drop them with pybullet (DIRECT mode, convex-hull collision shapes, 240 Hz) onto the
   table plane ``z = 0`` of the world until they rest (objects that roll off the table are
   removed); record for each object whether it touches the table and which objects it
   rests on (contact points whose normal supports it from below);
3. draw a depth sensor (:mod:`sam3d_ros.sim.sensors`: active stereo, time of flight,
   structured light) and its colour intrinsics at 640x480 or 1280x720, and place the camera
   0.35-1.5 m from the objects' centre at 10-88 deg elevation (low cameras see piles from
   the side, high ones look into bins); with ``border_fraction`` the camera is turned so
   that one object lies across the image border;
4. render RGB (random light direction, colour, ambient/diffuse/specular, shadows, textures),
   the z-buffer and the segmentation with pybullet's TinyRenderer (pure CPU), convert the
   z-buffer to metric depth, rasterise each posed mesh alone for the amodal masks
   (:func:`sam3d_ros.core.metrics.render_mesh_depth`; objects whose mask reaches the border
   are rasterised again on a canvas padded beyond the image to count the pixels outside
   it), then apply the sensor's depth and colour models.

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
from sam3d_ros.core.images import touches_border
from sam3d_ros.core.metrics import render_mesh_depth
from sam3d_ros.sim import mesh_sources as ms
from sam3d_ros.sim import procedural, sensors
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
#: Scene layouts (see the module docstring) and their default frequencies.
SCENE_KINDS: tuple[str, ...] = ("scatter", "cluster", "pile", "bin", "stack")
DEFAULT_SCENE_WEIGHTS: Final[dict[str, float]] = {
    "scatter": 0.05,
    "cluster": 0.25,
    "pile": 0.25,
    "bin": 0.3,
    "stack": 0.15,
}
#: An object whose lowest point is within this of the table touches it (m).
TABLE_TOUCH_M = 0.004
#: A contact supports an object from below when its normal (from the other body to the
#: object) has at least this z component; contacts farther apart than CONTACT_M are ignored.
SUPPORT_NORMAL_Z = 0.3
CONTACT_M = 0.003
#: Bin / tray: inner half extents (m), wall height (m) and wall thickness (m).
BIN_HALF_X_RANGE = (0.09, 0.2)
BIN_HALF_Y_RANGE = (0.07, 0.15)
BIN_WALL_HEIGHT_RANGE = (0.04, 0.14)
BIN_WALL_THICKNESS = 0.008
#: Pile: inner half extent (m) and height (m) of the funnel the objects are poured into.
PILE_FUNNEL_HALF_RANGE = (0.05, 0.1)
#: Rolling / spinning friction of the objects of a clutter layout (scatter: 0.0005): real
#: piles hold together (the default lets round objects roll apart).
CLUTTER_ROLLING_FRICTION = 0.01
PILE_FUNNEL_HEIGHT = 0.3
#: Share of frames with a low camera (elevation in LOW_ELEVATION_DEG), else uniform in
#: ``elevation_deg_range``; camera distance = fit distance times a factor in DISTANCE_FACTOR.
LOW_CAMERA_FRACTION = 0.75
LOW_ELEVATION_DEG = (10.0, 35.0)
DISTANCE_FACTOR = (1.0, 1.6)
#: Fewest objects per scene of each layout (capped by ``max_objects``).
MIN_CLUTTER_OBJECTS: Final[dict[str, int]] = {"cluster": 5, "pile": 5, "bin": 5, "stack": 4}
#: Most objects per scene.
MAX_OBJECTS = 12
#: Clutter layouts: in this share of frames the camera is the one of CLUTTER_VIEW_CANDIDATES
#: random views under which the objects hide each other most (:func:`_occlusion_score`),
#: as a robot looks at a pile or bin from where it is, not from where it sees everything.
CLUTTER_VIEW_FRACTION = 0.85
CLUTTER_VIEW_CANDIDATES = 8
#: Coverage of one object by nearer ones counts up to this share in the score (views that
#: hide objects completely gain nothing: those objects are not scored).
OCCLUSION_SCORE_CAP = 0.6
#: Clutter layouts: share of frames with a robot-link-like occluder between the camera and
#: the objects, where along the ray it sits (fraction of the distance to the object) and its
#: half length and half width (m).
OCCLUDER_FRACTION = 0.35
OCCLUDER_DEPTH_FRACTION = (0.3, 0.8)
OCCLUDER_HALF_LENGTH_M = 0.25
OCCLUDER_HALF_WIDTH_M = (0.02, 0.05)
#: The camera is at least this multiple of its sensor's minimum range from the objects.
SENSOR_RANGE_MARGIN = 1.6
#: Objects dropped onto a stack's base: at most this many, within this fraction of the base's
#: half footprint from its centre.
STACK_MAX_ON_TOP = 3
STACK_FOOTPRINT_FRACTION = 0.35
#: Border cut: the chosen object's centre is put this many of its projected radii from
#: the image edge (negative: outside).
BORDER_OFFSET_RADII = (-0.35, 0.5)
#: Canvas padding (fraction of the image size on each side) and downscale used to count the
#: amodal pixels of an object that reaches the image border.
BORDER_PAD_FRACTION = 0.75
BORDER_CANVAS_SCALE = 0.5
#: Pixels within this of the image edge make an amodal mask "reach the border".
BORDER_MARGIN_PX = 1
#: An object is cut by the border when at least this fraction of its amodal silhouette lies
#: outside the image.
BORDER_CUT_FRACTION = 0.02
#: Chance that a frame uses 1280x720 instead of the configured size (when the sensor
#: offers it).
HD_SIZE = (1280, 720)
#: Shares every generated split is built to reach (of objects with >= min_mask_pixels
#: visible pixels); :func:`split_statistics` reports them.
TARGET_SHARES: Final[dict[str, float]] = {
    "visible<0.6": 0.30,
    "visible<0.35": 0.10,
    "not_on_table": 0.15,
    "cut_by_border": 0.05,
}


class GeneratorError(RuntimeError):
    """Raised when a scene cannot be generated or the configuration is invalid."""


@dataclass(frozen=True)
class GeneratorConfig:
    """Parameters of the scene generator.

    Attributes:
        width, height: image size in pixels (intrinsics presets are scaled to it).
        min_objects, max_objects: objects per scene (uniform; clutter layouts draw at least
            :data:`MIN_CLUTTER_OBJECTS`), at most :data:`MAX_OBJECTS`.
        source_weights: relative frequency of each mesh source (YCB is dropped, and the
            rest renormalised, when the YCB directory is missing).
        named_pybullet_fraction: chance that a pybullet object is a named mesh (duck,
            teddy, ...) instead of one of random_urdfs.
        distance_range: camera distance from the objects' centre (m).
        elevation_deg_range: camera elevation above the table (deg).
        upright_fraction: chance that an object is dropped in its canonical orientation
            (random yaw) instead of a uniformly random one.
        noise: the legacy depth noise model, used when ``sensors`` is empty
            (``DepthNoiseConfig.disabled()`` for clean depth).
        scene_weights: relative frequency of each layout of :data:`SCENE_KINDS`.
        sensors: sensor profiles (:data:`sam3d_ros.sim.sensors.SENSOR_PROFILES`) drawn
            uniformly per frame for intrinsics, depth and colour models; empty: the legacy
            presets and ``noise``.
        hd_fraction: chance that a frame is 1280x720 instead of ``width`` x ``height``
            (when the drawn sensor offers that size).
        border_fraction: chance that the camera is turned so one object lies across the
            image border.
        thin_fraction: chance that a procedural object is drawn from the thin families
            (:data:`sam3d_ros.sim.procedural.THIN_FAMILIES`: plates, tool handles, flat
            blades) instead of :data:`~sam3d_ros.sim.procedural.FAMILIES`; 0 draws nothing
            more, so splits generated before the thin families existed are reproduced.
    """

    width: int = 640
    height: int = 480
    min_objects: int = 1
    max_objects: int = 10
    source_weights: dict[str, float] = field(
        default_factory=lambda: {"ycb": 0.4, "pybullet": 0.25, "procedural": 0.35}
    )
    named_pybullet_fraction: float = 0.3
    distance_range: tuple[float, float] = (0.35, 1.5)
    elevation_deg_range: tuple[float, float] = (10.0, 88.0)
    upright_fraction: float = 0.6
    noise: DepthNoiseConfig = field(default_factory=DepthNoiseConfig)
    scene_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SCENE_WEIGHTS))
    sensors: tuple[str, ...] = sensors.SENSOR_PROFILES
    hd_fraction: float = 0.2
    border_fraction: float = 0.2
    thin_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise GeneratorError(f"image size must be >= 16x16, got {self.width}x{self.height}")
        if not 1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise GeneratorError(
                f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got {self.min_objects}, {self.max_objects}"
            )
        unknown = set(self.source_weights) - set(ms.SOURCES)
        if unknown or not any(w > 0 for w in self.source_weights.values()):
            raise GeneratorError(f"bad source_weights {self.source_weights!r}; sources are {ms.SOURCES}")
        if not 0.0 < self.distance_range[0] <= self.distance_range[1]:
            raise GeneratorError(f"bad distance_range {self.distance_range!r}")
        bad_kinds = set(self.scene_weights) - set(SCENE_KINDS)
        if bad_kinds or not any(w > 0 for w in self.scene_weights.values()):
            raise GeneratorError(f"bad scene_weights {self.scene_weights!r}; layouts are {SCENE_KINDS}")
        for name in self.sensors:
            try:
                sensors.sensor_profile(name)
            except sensors.SensorError as err:
                raise GeneratorError(f"bad sensors {self.sensors!r}: {err}") from err
        for name in ("hd_fraction", "border_fraction", "thin_fraction"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise GeneratorError(f"{name} must be in [0, 1], got {v!r}")

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
            "scene_weights": dict(self.scene_weights),
            "sensors": list(self.sensors),
            "hd_fraction": self.hd_fraction,
            "border_fraction": self.border_fraction,
            "thin_fraction": self.thin_fraction,
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
        amodal_pixels: pixels of the image the object covers when rendered alone (>= visible).
        amodal_mask: (H, W) bool amodal mask.
        color: base RGB colour (0..255) used for rendering.
        amodal_pixels_full: pixels the object would cover on an unbounded image plane
            (>= ``amodal_pixels``; larger when the image border cuts it).
        cut_by_border: at least :data:`BORDER_CUT_FRACTION` of the silhouette lies outside
            the image.
        on_table: the object's lowest point is within :data:`TABLE_TOUCH_M` of the table.
        supported_by: labels of the objects it rests on (contacts from below).
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
    amodal_pixels_full: int = 0
    cut_by_border: bool = False
    on_table: bool = True
    supported_by: tuple[int, ...] = ()

    @property
    def visible_fraction(self) -> float:
        """``visible_pixels / amodal_pixels_full`` (the part outside the image counts as
        unseen; 0 when outside the image)."""
        full = max(self.amodal_pixels_full, self.amodal_pixels)
        return self.visible_pixels / full if full else 0.0


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
        scene_kind: the layout (one of :data:`SCENE_KINDS`).
        sensor: the sensor profile name ("" for the legacy noise model).
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
    scene_kind: str = "scatter"
    sensor: str = ""


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
    families = procedural.FAMILIES
    if cfg.thin_fraction > 0.0 and rng.random() < cfg.thin_fraction:
        families = procedural.THIN_FAMILIES
    for _ in range(1000):
        family = str(rng.choice(list(families)))
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
        # a new file name for every texture: pybullet caches loaded images by file name, so
        # reusing names made a frame's colours depend on what the process rendered before
        self._tex_count += 1
        path = self.tmp / f"tex_{self._tex_count}.png"
        Image.fromarray(image).save(path)
        tex = int(self.p.loadTexture(str(path), physicsClientId=self.client))
        path.unlink()
        return tex

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


@dataclass(frozen=True)
class _Wall:
    """A static box of the scene (bin or tray wall, or a robot-link occluder): half
    extents, centre (world, m) and orientation (x, y, z, w)."""

    half_extents: tuple[float, float, float]
    centre: tuple[float, float, float]
    orientation_xyzw: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class _Resting:
    """An object at rest: its pick, world_T_object, colour and support."""

    pick: _Pick
    world_T_object: NDArray[np.float64]
    color: NDArray[np.float64]
    on_table: bool
    supported_by: tuple[int, ...]  # indices into the resting list


def _draw_scene_kind(rng: np.random.Generator, cfg: GeneratorConfig) -> str:
    kinds = [k for k in SCENE_KINDS if cfg.scene_weights.get(k, 0.0) > 0.0]
    w = np.array([cfg.scene_weights[k] for k in kinds], dtype=np.float64)
    return str(rng.choice(kinds, p=w / w.sum()))


def _settle(sim: _Simulator, bodies: list[_Body]) -> None:
    """Step the physics until every body rests (or :data:`MAX_SETTLE_STEPS`)."""
    p, cid = sim.p, sim.client
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


def _bin_walls(
    rng: np.random.Generator,
    half_range: tuple[float, float] | None = None,
    height: float | None = None,
) -> tuple[list[_Wall], tuple[float, float]]:
    """Four walls of an axis-aligned bin around the origin and its inner half extents
    (both drawn from ``half_range`` when given, else the bin ranges)."""
    hx = float(rng.uniform(*(half_range or BIN_HALF_X_RANGE)))
    hy = float(rng.uniform(*(half_range or BIN_HALF_Y_RANGE)))
    h = float(height) if height is not None else float(rng.uniform(*BIN_WALL_HEIGHT_RANGE))
    t = BIN_WALL_THICKNESS / 2.0
    walls = [
        _Wall((hx + 2 * t, t, h / 2), (0.0, hy + t, h / 2)),
        _Wall((hx + 2 * t, t, h / 2), (0.0, -hy - t, h / 2)),
        _Wall((t, hy, h / 2), (hx + t, 0.0, h / 2)),
        _Wall((t, hy, h / 2), (-hx - t, 0.0, h / 2)),
    ]
    return walls, (hx, hy)


def _lying_flat(rng: np.random.Generator, v: NDArray[np.float64]) -> NDArray[np.float64]:
    """A rotation that puts the mesh's thinnest principal axis along z, with a random yaw."""
    c = v - v.mean(axis=0)
    _, vec = np.linalg.eigh(c.T @ c)
    r = np.stack([vec[:, 2], vec[:, 1], vec[:, 0]], axis=0)  # largest axis -> x, thinnest -> z
    if np.linalg.det(r) < 0:
        r[1] *= -1.0
    yaw = float(rng.uniform(-math.pi, math.pi))
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]]) @ r


def _initial_xy(
    rng: np.random.Generator,
    kind: str,
    index: int,
    n: int,
    radius: float,
    bin_inner: tuple[float, float] | None,
    base: tuple[NDArray[np.float64], float] | None,
) -> NDArray[np.float64]:
    """Drop position (x, y) of object ``index`` of ``n`` for the layout ``kind``."""
    if kind in ("bin", "pile") and bin_inner is not None:
        mx = max(bin_inner[0] - 0.6 * radius, 0.005)
        my = max(bin_inner[1] - 0.6 * radius, 0.005)
        return np.array([rng.uniform(-mx, mx), rng.uniform(-my, my)])
    if kind == "stack" and base is not None and 1 <= index <= STACK_MAX_ON_TOP:
        centre, half = base
        return centre[:2] + rng.uniform(-1.0, 1.0, 2) * STACK_FOOTPRINT_FRACTION * half
    spread = {
        "scatter": 0.05 + 0.03 * n,
        "cluster": 0.01 + 0.008 * n,
        "pile": 0.01 + 0.006 * n,
        "bin": 0.05 + 0.03 * n,
        "stack": 0.06 + 0.02 * n,
    }[kind]
    return rng.uniform(-spread, spread, 2)


def _drop(
    sim: _Simulator, rng: np.random.Generator, picks: list[_Pick], cfg: GeneratorConfig, kind: str
) -> tuple[list[_Resting], list[_Wall]]:
    """Drop the objects in the layout ``kind``; returns those left on the table (with their
    support) and the scene's static walls."""
    p, cid = sim.p, sim.client
    sim.reset()
    plane = p.createCollisionShape(p.GEOM_PLANE, physicsClientId=cid)
    plane_body = p.createMultiBody(0.0, plane, -1, [0.0, 0.0, 0.0], physicsClientId=cid)
    walls: list[_Wall] = []
    bin_inner: tuple[float, float] | None = None
    funnel: list[int] = []
    if kind in ("bin", "pile"):
        if kind == "bin":
            walls, bin_inner = _bin_walls(rng)
            static = walls
        else:  # objects are poured through a narrow funnel that is lifted after they settle
            widest = max(
                float(np.linalg.norm(ms.load_source(pk.ref).mesh.extents)) * pk.scale / 2 for pk in picks
            )
            lo_half = max(PILE_FUNNEL_HALF_RANGE[0], 1.1 * widest)
            static, bin_inner = _bin_walls(
                rng, (lo_half, max(lo_half, PILE_FUNNEL_HALF_RANGE[1])), PILE_FUNNEL_HEIGHT
            )
        for wall in static:
            shape = p.createCollisionShape(
                p.GEOM_BOX, halfExtents=list(wall.half_extents), physicsClientId=cid
            )
            wall_body = p.createMultiBody(0.0, shape, -1, list(wall.centre), physicsClientId=cid)
            if kind == "pile":
                funnel.append(wall_body)
    n = len(picks)
    upright_p = cfg.upright_fraction * (0.5 if kind == "pile" else 1.0)
    placed: list[tuple[NDArray[np.float64], float]] = []
    bodies: list[_Body] = []
    base: tuple[NDArray[np.float64], float] | None = None
    for i, pick in enumerate(picks):
        mesh = ms.load_source(pick.ref).mesh
        v = np.asarray(mesh.vertices) * pick.scale
        hull = _hull_vertices(v)
        if kind == "stack" and i == 0:
            rot = _lying_flat(rng, hull)
        elif kind == "stack" and i <= STACK_MAX_ON_TOP:
            rot = _random_rotation(rng, True)
        else:
            rot = _random_rotation(rng, bool(rng.random() < upright_p))
        rv = hull @ rot.T
        radius = float(np.linalg.norm(rv, axis=1).max())
        lo_z = float(-rv[:, 2].min())
        xy = _initial_xy(rng, kind, i, n, radius, bin_inner, base)
        z = lo_z + 0.002
        for cx, r in placed:  # stack above anything overlapping in the bounding-sphere sense
            if np.linalg.norm(cx[:2] - xy) < r + radius and abs(cx[2] - z) < r + radius:
                z = max(z, float(cx[2]) + r + radius + 0.005)
        pos = np.array([xy[0], xy[1], z])
        if kind == "stack" and i == 0:
            half = 0.5 * float(min(np.ptp(rv[:, 0]), np.ptp(rv[:, 1])))
            base = (pos, half)
        placed.append((pos, radius))
        col = p.createCollisionShape(p.GEOM_MESH, vertices=hull.tolist(), physicsClientId=cid)
        volume = float(abs(mesh.volume)) * pick.scale**3 if mesh.is_volume else (radius**3)
        mass = float(np.clip(DENSITY * volume, *MASS_RANGE))
        body = p.createMultiBody(mass, col, -1, pos.tolist(), _quat_xyzw(rot), physicsClientId=cid)
        rolling = CLUTTER_ROLLING_FRICTION if kind != "scatter" else 0.0005
        p.changeDynamics(
            body,
            -1,
            lateralFriction=0.8,
            rollingFriction=rolling,
            spinningFriction=rolling,
            linearDamping=0.2,
            angularDamping=0.2,
            physicsClientId=cid,
        )
        bodies.append(_Body(pick, body, _random_color(rng)))
    _settle(sim, bodies)
    if funnel:  # a poured pile: lift the funnel and let the pile slump
        for wall_body in funnel:
            p.removeBody(wall_body, physicsClientId=cid)
        _settle(sim, bodies)
    kept: list[tuple[_Body, NDArray[np.float64], bool]] = []
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
        kept.append((b, t, low < TABLE_TOUCH_M))
    index_of = {b.body: i for i, (b, _, _) in enumerate(kept)}
    out: list[_Resting] = []
    for b, t, on_table in kept:
        support: set[int] = set()
        for c in p.getContactPoints(bodyA=b.body, physicsClientId=cid):
            other, normal_on_b, distance = int(c[2]), c[7], float(c[8])
            if other == plane_body or other not in index_of or distance > CONTACT_M:
                continue
            if float(normal_on_b[2]) >= SUPPORT_NORMAL_Z:  # B pushes A upwards: B supports A
                support.add(index_of[other])
        out.append(_Resting(b.pick, t, b.color, on_table, tuple(sorted(support))))
    return out, walls


# --------------------------------------------------------------------------- rendering


def _render(
    sim: _Simulator,
    rng: np.random.Generator,
    objects: list[_Resting],
    walls: list[_Wall],
    k: CameraIntrinsics,
    world_T_camera: NDArray[np.float64],
) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.int32], dict[str, Any]]:
    """Render the resting objects (and the static walls) with TinyRenderer in a fresh world
    holding only visuals.

    Returns rgb (H, W, 3) uint8, clean depth (H, W) float32 m, labels (H, W) int32 (0 for
    table/walls/background, i + 1 for ``objects[i]``) and the lighting parameters.
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
    wall_rgb = _random_color(rng)
    wall_tex = sim.texture_id(_texture(rng, wall_rgb)) if walls else -1
    for wall in walls:
        wvis = p.createVisualShape(
            p.GEOM_BOX,
            halfExtents=list(wall.half_extents),
            rgbaColor=[1.0, 1.0, 1.0, 1.0],
            physicsClientId=cid,
        )
        wbody = p.createMultiBody(
            0.0, -1, wvis, list(wall.centre), list(wall.orientation_xyzw), physicsClientId=cid
        )
        p.changeVisualShape(wbody, -1, textureUniqueId=wall_tex, physicsClientId=cid)
    body_label: dict[int, int] = {}
    for i, rest in enumerate(objects):
        pick, t, color = rest.pick, rest.world_T_object, rest.color
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
    depth = zbuffer_to_depth(np.asarray(zbuf, dtype=np.float64).reshape(k.height, k.width))
    seg_arr = np.asarray(seg, dtype=np.int64).reshape(k.height, k.width)
    labels = np.zeros(seg_arr.shape, dtype=np.int32)
    for body, label in body_label.items():
        labels[seg_arr == body] = label
    return rgb, depth, labels, light


def _footprint(pick: _Pick) -> float:
    """Area of the two largest bounding-box extents (m^2): how well an object serves as a base."""
    e = np.sort(np.asarray(ms.load_source(pick.ref).mesh.extents) * pick.scale)
    return float(e[1] * e[2])


def _frame_camera(
    rng: np.random.Generator, cfg: GeneratorConfig
) -> tuple[str, CameraIntrinsics, sensors.SensorProfile | None]:
    """The frame's sensor profile (None: legacy presets) and its colour intrinsics."""
    if not cfg.sensors:
        name, k = random_intrinsics(rng, cfg.width, cfg.height)
        return name, k, None
    profile = sensors.sensor_profile(str(rng.choice(list(cfg.sensors))))
    size = (cfg.width, cfg.height)
    if HD_SIZE in profile.resolutions and rng.random() < cfg.hd_fraction:
        size = HD_SIZE
    return profile.name, sensors.draw_intrinsics(profile, rng, size[0], size[1]), profile


def _turn_to_border(
    rng: np.random.Generator,
    world_T_camera: NDArray[np.float64],
    k: CameraIntrinsics,
    centre_world: NDArray[np.float64],
    radius_m: float,
) -> NDArray[np.float64]:
    """Rotate the camera about its centre so that ``centre_world`` projects next to a random
    image edge, :data:`BORDER_OFFSET_RADII` of its projected radius inside or outside."""
    eye = world_T_camera[:3, 3]
    d = centre_world - eye
    dist = float(np.linalg.norm(d))
    r_px = k.fx * radius_m / max(dist, 1e-6)
    off = float(rng.uniform(*BORDER_OFFSET_RADII)) * r_px
    edge = int(rng.integers(0, 4))
    u = float(rng.uniform(0.2, 0.8)) * k.width
    v = float(rng.uniform(0.2, 0.8)) * k.height
    if edge == 0:
        u = off
    elif edge == 1:
        u = k.width - 1 - off
    elif edge == 2:
        v = off
    else:
        v = k.height - 1 - off
    want = np.array([(u - k.cx) / k.fx, (v - k.cy) / k.fy, 1.0])
    want /= np.linalg.norm(want)
    # camera whose optical axis points at the object, then Q maps its axis onto ``want``
    r0 = look_at_transform(eye, centre_world)[:3, :3]
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, want)
    s, c = float(np.linalg.norm(axis)), float(want @ z)
    if s < 1e-9:
        return look_at_transform(eye, centre_world)
    axis /= s
    kx = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    q = np.eye(3) + s * kx + (1.0 - c) * (kx @ kx)
    return make_transform(r0 @ q.T, eye)


def _amodal(
    v_cam: NDArray[np.float64], faces: NDArray[np.int64], k: CameraIntrinsics, visible: NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], int]:
    """The amodal mask in the image and the amodal pixel count on an unbounded image plane
    (estimated on a padded, downscaled canvas when the mask reaches the border)."""
    amodal = np.isfinite(render_mesh_depth((v_cam, faces), k)) | visible
    inside = int(np.count_nonzero(amodal))
    if not touches_border(amodal, BORDER_MARGIN_PX):
        return amodal, inside
    s = BORDER_CANVAS_SCALE
    px, py = BORDER_PAD_FRACTION * k.width, BORDER_PAD_FRACTION * k.height
    big = CameraIntrinsics(
        width=round((k.width + 2 * px) * s),
        height=round((k.height + 2 * py) * s),
        fx=k.fx * s,
        fy=k.fy * s,
        cx=(k.cx + px + 0.5) * s - 0.5,
        cy=(k.cy + py + 0.5) * s - 0.5,
    )
    canvas = np.isfinite(render_mesh_depth((v_cam, faces), big))
    x0, y0 = round(px * s), round(py * s)
    in_image = int(np.count_nonzero(canvas[y0 : y0 + round(k.height * s), x0 : x0 + round(k.width * s)]))
    total = int(np.count_nonzero(canvas))
    if in_image == 0:
        return amodal, inside
    return amodal, max(inside, round(inside * total / in_image))


def _link_occluder(
    rng: np.random.Generator, world_T_camera: NDArray[np.float64], centres: NDArray[np.float64]
) -> _Wall:
    """A box the size of a robot arm link or gripper between the camera and one object,
    crossing the view at a random angle (rendered only; it occludes but is no object)."""
    eye = world_T_camera[:3, 3]
    c = centres[int(rng.integers(0, len(centres)))]
    at = eye + float(rng.uniform(*OCCLUDER_DEPTH_FRACTION)) * (c - eye)
    half_w = float(rng.uniform(*OCCLUDER_HALF_WIDTH_M))
    roll = float(rng.uniform(-math.pi, math.pi))
    axis = world_T_camera[:3, 0] * math.cos(roll) + world_T_camera[:3, 1] * math.sin(roll)
    side = np.cross(world_T_camera[:3, 2], axis)
    rot = np.stack([axis, side, world_T_camera[:3, 2]], axis=1)
    shift = float(rng.uniform(-1.0, 1.0)) * half_w * side  # off the object's centre, so it is cut
    q = _quat_xyzw(rot)
    centre = at + shift
    return _Wall(
        (OCCLUDER_HALF_LENGTH_M, half_w, half_w),
        (float(centre[0]), float(centre[1]), float(centre[2])),
        (q[0], q[1], q[2], q[3]),
    )


def _occlusion_score(
    world_T_camera: NDArray[np.float64], centres: NDArray[np.float64], radii: list[float]
) -> float:
    """How much the objects hide each other seen from ``world_T_camera``: the summed share
    of each object's bounding disc (in normalised image coordinates) covered by the disc of
    a nearer object (discs approximate silhouettes; cheap, no rendering)."""
    c = transform_points(invert_transform(world_T_camera), centres)
    z = np.maximum(c[:, 2], 1e-3)
    uv = c[:, :2] / z[:, None]
    r = np.asarray(radii) / z
    score = 0.0
    for i in range(len(c)):
        for j in range(len(c)):
            if z[j] >= z[i]:
                continue
            d = float(np.linalg.norm(uv[i] - uv[j]))
            ri, rj = float(r[i]), float(r[j])
            if d >= ri + rj:
                continue
            if d <= abs(ri - rj):
                inter = math.pi * min(ri, rj) ** 2
            else:
                a1 = ri * ri * math.acos(np.clip((d * d + ri * ri - rj * rj) / (2 * d * ri), -1, 1))
                a2 = rj * rj * math.acos(np.clip((d * d + rj * rj - ri * ri) / (2 * d * rj), -1, 1))
                tri = 0.5 * math.sqrt(
                    max((-d + ri + rj) * (d + ri - rj) * (d - ri + rj) * (d + ri + rj), 0.0)
                )
                inter = a1 + a2 - tri
            score += min(inter / (math.pi * ri * ri), OCCLUSION_SCORE_CAP)
    return score


def _object_truth(
    rest: _Resting,
    label: int,
    labels: NDArray[np.int32],
    k: CameraIntrinsics,
    camera_T_world: NDArray[np.float64],
) -> GeneratedObject:
    """Ground truth of one rendered object (``label`` in the label image ``labels``)."""
    camera_T_object = camera_T_world @ rest.world_T_object
    mesh = ms.load_source(rest.pick.ref).mesh
    v_cam = transform_points(camera_T_object, np.asarray(mesh.vertices) * rest.pick.scale)
    visible = labels == label
    amodal, full = _amodal(v_cam, np.asarray(mesh.faces), k, visible)
    inside = int(np.count_nonzero(amodal))
    color = rest.color
    return GeneratedObject(
        label=label,
        mesh_ref=rest.pick.ref,
        scale=float(rest.pick.scale),
        camera_T_object=camera_T_object,
        world_T_object=rest.world_T_object,
        visible_pixels=int(np.count_nonzero(visible)),
        amodal_pixels=inside,
        amodal_mask=amodal,
        color=(round(float(color[0])), round(float(color[1])), round(float(color[2]))),
        amodal_pixels_full=full,
        cut_by_border=full > 0 and (full - inside) >= BORDER_CUT_FRACTION * full,
        on_table=rest.on_table,
        supported_by=tuple(s + 1 for s in rest.supported_by),
    )


def _sensor_images(
    depth_clean: NDArray[np.float32],
    rgb: NDArray[np.uint8],
    k: CameraIntrinsics,
    rng: np.random.Generator,
    profile: sensors.SensorProfile,
    misregistration: tuple[int, int] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """What ``profile``'s depth and colour cameras report of a clean render (depth first,
    then colour, from ``rng``; ``misregistration`` as in :func:`sensors.simulate_depth`)."""
    depth = sensors.simulate_depth(depth_clean, rgb, k, rng, profile, misregistration)
    return depth, sensors.simulate_color(rgb, rng, profile)


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
    resting: list[_Resting] = []
    walls: list[_Wall] = []
    kind = _draw_scene_kind(rng, cfg)
    for attempt in range(SCENE_ATTEMPTS):
        lo_n = max(cfg.min_objects, min(MIN_CLUTTER_OBJECTS.get(kind, 1), cfg.max_objects))
        n = int(rng.integers(lo_n, cfg.max_objects + 1))
        picks = [_pick_object(rng, split, cfg) for _ in range(n)]
        if kind == "stack":
            picks.sort(key=_footprint, reverse=True)
        resting, walls = _drop(sim, rng, picks, cfg, kind)
        if resting:
            break
        logger.debug("frame %d attempt %d: every object left the table", index, attempt)
    if not resting:
        raise GeneratorError(f"frame {index} of seed {seed}: no object stayed on the table")

    # camera
    cam_name, k, profile = _frame_camera(rng, cfg)
    centres = np.array([r.world_T_object[:3, 3] for r in resting])
    radii = [
        float(np.linalg.norm(ms.load_source(r.pick.ref).mesh.extents)) * r.pick.scale / 2 for r in resting
    ]
    target = centres.mean(axis=0) + np.append(rng.normal(0.0, 0.01, 2), 0.0)
    radius = max(float(np.linalg.norm(c - target)) + rr for c, rr in zip(centres, radii, strict=True))
    half_fov = min(math.atan2(k.width / 2, k.fx), math.atan2(k.height / 2, k.fy))
    fit = 1.05 * radius / math.sin(half_fov)
    lo, hi = cfg.distance_range
    if profile is not None:  # a camera is mounted where its sensor sees the objects
        lo = min(max(lo, SENSOR_RANGE_MARGIN * profile.min_range_m), hi)
    candidates = []
    n_views = CLUTTER_VIEW_CANDIDATES if kind != "scatter" and rng.random() < CLUTTER_VIEW_FRACTION else 1
    for _ in range(n_views):
        distance = float(np.clip(fit * rng.uniform(*DISTANCE_FACTOR), lo, hi))
        az = float(rng.uniform(-math.pi, math.pi))
        el_range = LOW_ELEVATION_DEG if rng.random() < LOW_CAMERA_FRACTION else cfg.elevation_deg_range
        el = math.radians(float(rng.uniform(*el_range)))
        eye = target + distance * np.array(
            [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
        )
        candidates.append(look_at_transform(eye, target))
    world_T_camera = max(candidates, key=lambda c: _occlusion_score(c, centres, radii))
    if rng.random() < cfg.border_fraction:
        j = int(rng.integers(0, len(resting)))
        world_T_camera = _turn_to_border(rng, world_T_camera, k, centres[j], radii[j])
    camera_T_world = invert_transform(world_T_camera)
    visuals = list(walls)
    if kind != "scatter" and rng.random() < OCCLUDER_FRACTION:
        visuals.append(_link_occluder(rng, world_T_camera, centres))

    rgb, depth_clean, labels, light = _render(sim, rng, resting, visuals, k, world_T_camera)
    light["camera_model"] = cam_name
    objects = [_object_truth(rest, i + 1, labels, k, camera_T_world) for i, rest in enumerate(resting)]
    if profile is not None:
        depth, rgb = _sensor_images(depth_clean, rgb, k, rng, profile)
    else:
        depth = (
            apply_depth_noise(depth_clean, rng, cfg.noise)
            if cfg.noise.enabled
            else depth_clean.astype(np.float32)
        )
        gain = float(rng.uniform(0.85, 1.15))
        light["gain"] = gain
        rgb = np.clip(rgb.astype(np.float64) * gain + rng.normal(0.0, 2.0, rgb.shape), 0, 255).astype(
            np.uint8
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
        scene_kind=kind,
        sensor=profile.name if profile is not None else "",
    )
