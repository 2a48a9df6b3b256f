"""Camera sequences of one settled cluttered scene (CPU only), for evaluating fusion.

One sequence = one scene of the cluttered world (:mod:`sam3d_ros.sim.generator`: 3-6
objects of the requested split dropped with pybullet as a cluster, pile, bin or stack)
seen in ``n_views`` views by one sensor (profile, intrinsics and depth-to-colour
misregistration drawn once), with the same table, walls, object colours, textures and
light in every view; only the sensor's depth and colour noise is drawn anew per view.
Kinds (:data:`SEQUENCE_KINDS`):

* ``orbit``: the camera circles the objects' centre over 90-150 deg of azimuth at a gently
  swinging elevation, so objects hide each other differently per view;
* ``approach``: a wrist camera moves in on one object (``target_label``), from 1.0-1.3 m
  away and high (55-75 deg) to 0.35-0.5 m and lower (35-50 deg), on a lateral curve of
  10-25 deg of azimuth, always looking at it. The sensor is drawn among those that can see
  that near (:data:`APPROACH_NEAREST_M`), and the path ends no nearer than
  ``SENSOR_RANGE_MARGIN`` times its minimum range;
* ``static_add_remove``: a fixed camera; one object is absent in the first third of the
  views and appears at view ``n_views // 3`` (added), another leaves at view
  ``2 * n_views // 3`` (removed);
* ``moved``: a fixed camera; at view ``n_views // 2`` one object resting on the table is
  moved 5-15 cm on it and turned by up to 60 deg about the vertical, to a spot whose
  footprint (convex hull of the object's projection on the table) clears every other
  object, the bin walls and the table edge, and stays there.

Orbits and fixed cameras look into a bin from 45-70 deg elevation (lower, its walls hide
most of what is inside).

Only objects nothing depends on are added, removed or moved: they support no other object
(generator contacts) and no object off the table leans over their footprint (objects
touching from the side could rest on them); a moved one also rests on the table alone.
The rest of the scene therefore stays where pybullet settled it.

Objects keep their instance label (index + 1 in the settled scene) in every view they are
present in; ``GeneratedFrame.objects`` of a view holds only the present ones. An absent
object is rendered far behind the far plane, so every view draws the same object list from
the same appearance stream (:func:`sam3d_ros.sim.generator._render` draws textures per
object in list order) and absent objects never reach the label image. Frames follow the
generator's conventions (world z up, table top z = 0, optical camera frame, metres);
stamps advance by ``PERIOD_NS`` from ``START_STAMP_NS``. Images keep the configured size
(no HD draw, no border-cut framing, no robot-link occluder).

Determinism: the sequence ``(seed, kind)`` uses ``numpy.random.default_rng((SEQUENCE_STREAM,
seed, kind number))`` for the scene, camera path and appearance and ``(SEQUENCE_STREAM,
seed, kind number, v + 1)`` for the sensor noise of view ``v``, and a freshly reset physics
world, so its output does not depend on what the process generated before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import trimesh
from numpy.typing import NDArray
from scipy.spatial import ConvexHull, QhullError

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import invert_transform, make_transform, matrix_from_quaternion, transform_points
from sam3d_ros.core.types import RGBDFrame
from sam3d_ros.sim import generator as gen
from sam3d_ros.sim import mesh_sources as ms
from sam3d_ros.sim import sensors
from sam3d_ros.sim.noise import apply_depth_noise
from sam3d_ros.sim.raycast import SIM_FRAME_ID, look_at_transform
from sam3d_ros.sim.splits import check_split

logger = logging.getLogger(__name__)

#: Sequence kinds (see the module docstring); a kind's number is its index here.
SEQUENCE_KINDS: Final[tuple[str, ...]] = ("orbit", "approach", "static_add_remove", "moved")
#: First element of every sequence seed: keeps sequence draws apart from generate_frame's.
SEQUENCE_STREAM: Final[int] = 0x5E0
#: Layouts a sequence's scene is drawn from (objects hide each other), with the generator's
#: relative weights (``GeneratorConfig.scene_weights``, restricted to these).
CLUTTER_LAYOUTS: Final[tuple[str, ...]] = ("cluster", "pile", "bin", "stack")
#: Objects dropped per scene, and the fewest that must stay on the table.
MIN_OBJECTS: Final[int] = 3
MAX_OBJECTS: Final[int] = 6
#: Scenes drawn (new objects, new drop) until one holds the kind: enough objects stayed,
#: objects nothing depends on to add / remove, one that can be moved to a free spot.
SCENE_DRAWS: Final[int] = 10
#: Fewest views of a sequence.
MIN_VIEWS: Final[int] = 3
#: Camera fit: the objects' bounding sphere fills the narrower half field of view with
#: this margin (as the generator frames a scene).
FIT_MARGIN: Final[float] = 1.05
#: Orbit: azimuth span (deg), elevation at the middle of the swing (deg), amplitude of the
#: elevation swing (deg, one sine period over the path), camera distance / fit distance.
ORBIT_SPAN_DEG: Final[tuple[float, float]] = (90.0, 150.0)
ORBIT_ELEVATION_DEG: Final[tuple[float, float]] = (25.0, 60.0)
ORBIT_SWING_DEG: Final[float] = 8.0
ORBIT_DISTANCE_FACTOR: Final[tuple[float, float]] = (1.0, 1.3)
#: Approach: distance to the target (m) at the start and the end of the path, elevation (deg)
#: at the start and the end, azimuth swept over the path (deg, either direction).
APPROACH_START_M: Final[tuple[float, float]] = (1.0, 1.3)
APPROACH_END_M: Final[tuple[float, float]] = (0.35, 0.5)
APPROACH_START_ELEVATION_DEG: Final[tuple[float, float]] = (55.0, 75.0)
APPROACH_END_ELEVATION_DEG: Final[tuple[float, float]] = (35.0, 50.0)
APPROACH_CURVE_DEG: Final[tuple[float, float]] = (10.0, 25.0)
#: Approach: sensors whose nearest usable distance (``SENSOR_RANGE_MARGIN`` x min range) is
#: beyond this (m) are not drawn as the wrist camera (Kinect v1 / Xtion: 1.28 m).
APPROACH_NEAREST_M: Final[float] = 0.85
#: Fixed cameras: elevation (deg) and distance / fit distance.
FIXED_ELEVATION_DEG: Final[tuple[float, float]] = (30.0, 65.0)
#: Bin layouts, orbit and fixed cameras: elevation (deg) instead of the ranges above (a
#: camera looks into a bin from above; lower, the walls hide most of what is inside).
BIN_ELEVATION_DEG: Final[tuple[float, float]] = (45.0, 70.0)
FIXED_DISTANCE_FACTOR: Final[tuple[float, float]] = (1.0, 1.25)
#: Moved object: distance (m) on the table, largest turn about the vertical (deg), clearance
#: of its new footprint to every other footprint, wall and the table edge (m), spots tried
#: per object.
MOVE_M: Final[tuple[float, float]] = (0.05, 0.15)
MOVE_TURN_DEG: Final[float] = 60.0
MOVE_CLEARANCE_M: Final[float] = 0.01
MOVE_TRIES: Final[int] = 60
#: Footprints closer than this (m) touch: an object off the table that close to another's
#: footprint, and higher, may lean on it.
TOUCH_M: Final[float] = 0.005
#: Where an absent object is rendered (m, world): ~87 m away, far behind the far plane.
AWAY_M: Final[tuple[float, float, float]] = (50.0, 50.0, -50.0)
#: Legacy sensor model (``GeneratorConfig.sensors`` empty): colour gain (once per sequence)
#: and per-view colour noise sigma (0-255), as the generator's legacy frames.
LEGACY_GAIN: Final[tuple[float, float]] = (0.85, 1.15)
LEGACY_COLOR_SIGMA: Final[float] = 2.0


class SequenceError(ValueError):
    """Raised for bad arguments or when no scene holds the sequence's kind."""


@dataclass(frozen=True)
class GeneratedSequence:
    """One camera sequence with its ground truth.

    Attributes:
        seed, kind, split: identify the sequence (``kind`` of :data:`SEQUENCE_KINDS`).
        layout: the scene layout (one of :data:`CLUTTER_LAYOUTS`).
        sensor: the sensor profile name ("" for the legacy noise model).
        frames: one :class:`~sam3d_ros.sim.generator.GeneratedFrame` per view (``index``
            = view), each with its ``world_T_camera`` and the ground truth of the objects
            present in that view (labels as in the settled scene).
        present: per view, the sorted labels of the objects in the scene (visible or not).
        target_label: ``approach``: the object the camera moves in on (0 otherwise).
        added_label, added_at: ``static_add_remove``: the object that appears and the first
            view it is in (0 / -1 otherwise).
        removed_label, removed_at: ``static_add_remove``: the object that leaves and the
            first view it is gone from (0 / -1 otherwise).
        moved_label, moved_at: ``moved``: the object moved and the first view after the
            move (0 / -1 otherwise).
    """

    seed: int
    kind: str
    split: str
    layout: str
    sensor: str
    frames: tuple[gen.GeneratedFrame, ...]
    present: tuple[tuple[int, ...], ...]
    target_label: int = 0
    added_label: int = 0
    added_at: int = -1
    removed_label: int = 0
    removed_at: int = -1
    moved_label: int = 0
    moved_at: int = -1


@dataclass(frozen=True)
class _Plan:
    """What happens in the scene: per view the resting objects (absent ones moved away)."""

    scenes: tuple[tuple[gen._Resting, ...], ...]
    added: tuple[int, int] = (0, -1)  # (label, view)
    removed: tuple[int, int] = (0, -1)
    moved: tuple[int, int] = (0, -1)


# --------------------------------------------------------------------------- footprints


def _hull_2d(xy: NDArray[np.float64]) -> NDArray[np.float64]:
    """Counter-clockwise convex hull (K, 2) of points (N, 2)."""
    try:
        return xy[ConvexHull(xy).vertices]
    except QhullError as err:
        raise SequenceError(f"degenerate footprint of {len(xy)} points") from err


def footprint(mesh_ref: str, scale: float, world_T_object: NDArray[np.floating]) -> NDArray[np.float64]:
    """Footprint of a posed object on the table: the (K, 2) counter-clockwise convex hull
    of its mesh's vertices projected onto the world xy plane (m)."""
    v = np.asarray(ms.load_source(mesh_ref).mesh.vertices, dtype=np.float64) * float(scale)
    return _hull_2d(transform_points(np.asarray(world_T_object, dtype=np.float64), v)[:, :2])


def _rest_footprint(
    rest: gen._Resting, world_T_object: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    t = rest.world_T_object if world_T_object is None else world_T_object
    return footprint(rest.pick.ref, rest.pick.scale, t)


def _wall_footprint(wall: gen._Wall) -> NDArray[np.float64]:
    """Footprint (K, 2) of a static box of the scene."""
    h = np.asarray(wall.half_extents, dtype=np.float64)
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * h
    r = matrix_from_quaternion(np.asarray(wall.orientation_xyzw, dtype=np.float64))
    return _hull_2d((corners @ r.T + np.asarray(wall.centre))[:, :2])


def footprint_gap(a: NDArray[np.floating], b: NDArray[np.floating]) -> float:
    """Largest gap (m) between two convex polygons (K, 2) along the normals of their edges:
    negative when they overlap; when positive, a lower bound of their distance (projections
    onto a unit axis never lengthen a distance)."""
    pa, pb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    best = -math.inf
    for poly in (pa, pb):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        qa, qb = pa @ normals.T, pb @ normals.T
        gap = np.maximum(qb.min(axis=0) - qa.max(axis=0), qa.min(axis=0) - qb.max(axis=0))
        best = max(best, float(gap.max()))
    return best


def _lowest_z(rest: gen._Resting) -> float:
    v = np.asarray(ms.load_source(rest.pick.ref).mesh.vertices, dtype=np.float64) * rest.pick.scale
    return float(transform_points(rest.world_T_object, v)[:, 2].min())


def _independent(resting: list[gen._Resting], prints: list[NDArray[np.float64]]) -> list[int]:
    """Indices of the objects nothing depends on: they support no other object and no
    object off the table (other than their own supports) lies higher next to or over their
    footprint."""
    supporting = {s for r in resting for s in r.supported_by}
    low = [_lowest_z(r) for r in resting]
    out = []
    for i, rest in enumerate(resting):
        if i in supporting:
            continue
        leaning = any(
            j != i
            and not other.on_table
            and j not in rest.supported_by
            and low[j] > low[i]
            and footprint_gap(prints[i], prints[j]) < TOUCH_M
            for j, other in enumerate(resting)
        )
        if not leaning:
            out.append(i)
    return out


# --------------------------------------------------------------------------- scene plans


def _away(rest: gen._Resting) -> gen._Resting:
    return replace(rest, world_T_object=make_transform(np.eye(3), np.asarray(AWAY_M)))


def _moved_pose(
    rng: np.random.Generator,
    resting: list[gen._Resting],
    walls: list[gen._Wall],
    prints: list[NDArray[np.float64]],
    i: int,
) -> NDArray[np.float64] | None:
    """A new world_T_object for object ``i``: moved :data:`MOVE_M` on the table and turned
    about the vertical through its origin, to a spot whose footprint keeps
    :data:`MOVE_CLEARANCE_M` from every other object, every wall and the table edge; None
    when :data:`MOVE_TRIES` spots were all taken."""
    rest = resting[i]
    blockers = [p for j, p in enumerate(prints) if j != i] + [_wall_footprint(w) for w in walls]
    tx, ty = gen.TABLE_HALF_EXTENTS
    for _ in range(MOVE_TRIES):
        d = float(rng.uniform(*MOVE_M))
        ang = float(rng.uniform(-math.pi, math.pi))
        yaw = math.radians(float(rng.uniform(-MOVE_TURN_DEG, MOVE_TURN_DEG)))
        c, s = math.cos(yaw), math.sin(yaw)
        t = rest.world_T_object.copy()
        t[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ t[:3, :3]
        t[:2, 3] += d * np.array([math.cos(ang), math.sin(ang)])
        poly = _rest_footprint(rest, t)
        if np.any(np.abs(poly[:, 0]) > tx - MOVE_CLEARANCE_M) or np.any(
            np.abs(poly[:, 1]) > ty - MOVE_CLEARANCE_M
        ):
            continue
        if all(footprint_gap(poly, b) >= MOVE_CLEARANCE_M for b in blockers):
            return t
    return None


def _plan(
    rng: np.random.Generator,
    kind: str,
    n_views: int,
    resting: list[gen._Resting],
    walls: list[gen._Wall],
) -> _Plan | None:
    """The scene of every view for ``kind``, or None when this scene cannot hold it."""
    static = tuple(resting)
    if kind in ("orbit", "approach"):
        return _Plan(scenes=(static,) * n_views)
    prints = [_rest_footprint(r) for r in resting]
    free = _independent(resting, prints)
    if kind == "static_add_remove":
        if len(free) < 2:
            return None
        added, removed = (int(x) for x in rng.choice(free, size=2, replace=False))
        add_at, remove_at = n_views // 3, (2 * n_views) // 3
        scenes = []
        for v in range(n_views):
            gone = ({added} if v < add_at else set()) | ({removed} if v >= remove_at else set())
            scenes.append(tuple(_away(r) if q in gone else r for q, r in enumerate(resting)))
        return _Plan(scenes=tuple(scenes), added=(added + 1, add_at), removed=(removed + 1, remove_at))
    # moved: an object resting on the table alone
    alone = [i for i in free if resting[i].on_table and not resting[i].supported_by]
    for i in rng.permutation(np.asarray(alone, dtype=np.int64)):
        t = _moved_pose(rng, resting, walls, prints, int(i))
        if t is None:
            continue
        at = n_views // 2
        after = tuple(replace(r, world_T_object=t) if q == i else r for q, r in enumerate(resting))
        return _Plan(scenes=(static,) * at + (after,) * (n_views - at), moved=(int(i) + 1, at))
    return None


def _clutter_layout(rng: np.random.Generator, cfg: gen.GeneratorConfig) -> str:
    """A clutter layout drawn with the generator's weights (its defaults when the
    configuration weights none of :data:`CLUTTER_LAYOUTS`)."""
    weights = {k: float(cfg.scene_weights.get(k, 0.0)) for k in CLUTTER_LAYOUTS}
    if not any(w > 0.0 for w in weights.values()):
        weights = {k: gen.DEFAULT_SCENE_WEIGHTS[k] for k in CLUTTER_LAYOUTS}
    w = np.array([weights[k] for k in CLUTTER_LAYOUTS], dtype=np.float64)
    return str(rng.choice(list(CLUTTER_LAYOUTS), p=w / w.sum()))


def _scene(
    rng: np.random.Generator, kind: str, n_views: int, split: str, cfg: gen.GeneratorConfig, tag: str
) -> tuple[str, list[gen._Resting], list[gen._Wall], _Plan]:
    """Draw scenes until one holds ``kind``: its layout, resting objects, walls and plan."""
    sim = gen._simulator()
    for attempt in range(SCENE_DRAWS):
        layout = _clutter_layout(rng, cfg)
        n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
        picks = [gen._pick_object(rng, split, cfg) for _ in range(n)]
        if layout == "stack":
            picks.sort(key=gen._footprint, reverse=True)
        resting, walls = gen._drop(sim, rng, picks, cfg, layout)
        if len(resting) < MIN_OBJECTS:
            logger.debug("%s scene %d (%s): %d objects stayed", tag, attempt, layout, len(resting))
            continue
        plan = _plan(rng, kind, n_views, resting, walls)
        if plan is not None:
            return layout, resting, walls, plan
        logger.debug("%s scene %d (%s): cannot hold %r", tag, attempt, layout, kind)
    raise SequenceError(f"{tag}: no scene of {SCENE_DRAWS} drawn holds kind {kind!r}")


# --------------------------------------------------------------------------- cameras


def _sensor(
    rng: np.random.Generator, cfg: gen.GeneratorConfig, kind: str, tag: str
) -> tuple[str, CameraIntrinsics, sensors.SensorProfile | None]:
    """The sequence's sensor (None: the legacy presets) and its colour intrinsics at the
    configured size."""
    if not cfg.sensors:
        name, k = gen.random_intrinsics(rng, cfg.width, cfg.height)
        return name, k, None
    names = list(cfg.sensors)
    if kind == "approach":
        names = [
            nm
            for nm in names
            if gen.SENSOR_RANGE_MARGIN * sensors.sensor_profile(nm).min_range_m <= APPROACH_NEAREST_M
        ]
        if not names:
            raise SequenceError(
                f"{tag}: none of the sensors {cfg.sensors!r} sees nearer than {APPROACH_NEAREST_M} m"
            )
    profile = sensors.sensor_profile(str(rng.choice(names)))
    return profile.name, sensors.draw_intrinsics(profile, rng, cfg.width, cfg.height), profile


def _eye(target: NDArray[np.float64], distance: float, az: float, el: float) -> NDArray[np.float64]:
    """Camera centre ``distance`` from ``target`` at azimuth ``az`` and elevation ``el`` (rad)."""
    return target + distance * np.array(
        [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    )


def _cameras(
    rng: np.random.Generator,
    kind: str,
    layout: str,
    n_views: int,
    plan: _Plan,
    k: CameraIntrinsics,
    profile: sensors.SensorProfile | None,
    cfg: gen.GeneratorConfig,
) -> tuple[list[NDArray[np.float64]], int]:
    """world_T_camera of every view, and the approach's target label (0 otherwise)."""
    # every pose an object takes in the sequence (a moved object in both places)
    poses: dict[tuple[int, bytes], tuple[gen._Resting, NDArray[np.float64]]] = {}
    for scene in plan.scenes:
        for i, r in enumerate(scene):
            if r.world_T_object[2, 3] > AWAY_M[2] / 2:
                poses[(i, r.world_T_object.tobytes())] = (r, r.world_T_object[:3, 3])
    centres = np.array([c for _, c in poses.values()])
    radii = [
        float(np.linalg.norm(ms.load_source(r.pick.ref).mesh.extents)) * r.pick.scale / 2
        for r, _ in poses.values()
    ]
    target = centres.mean(axis=0)
    radius = max(float(np.linalg.norm(c - target)) + rr for c, rr in zip(centres, radii, strict=True))
    half_fov = min(math.atan2(k.width / 2, k.fx), math.atan2(k.height / 2, k.fy))
    fit = FIT_MARGIN * radius / math.sin(half_fov)
    lo, hi = cfg.distance_range
    if profile is not None:  # a camera is mounted where its sensor sees the objects
        lo = min(max(lo, gen.SENSOR_RANGE_MARGIN * profile.min_range_m), hi)
    az0 = float(rng.uniform(-math.pi, math.pi))
    steps = [v / (n_views - 1) for v in range(n_views)]
    if kind == "orbit":
        span = math.radians(float(rng.uniform(*ORBIT_SPAN_DEG)))
        el0 = math.radians(
            float(rng.uniform(*(BIN_ELEVATION_DEG if layout == "bin" else ORBIT_ELEVATION_DEG)))
        )
        phase = float(rng.uniform(0.0, 2.0 * math.pi))
        dist = float(np.clip(fit * rng.uniform(*ORBIT_DISTANCE_FACTOR), lo, hi))
        swing = math.radians(ORBIT_SWING_DEG)
        return [
            look_at_transform(
                _eye(target, dist, az0 + span * (s - 0.5), el0 + swing * math.sin(2 * math.pi * s + phase)),
                target,
            )
            for s in steps
        ], 0
    if kind == "approach":
        j = int(rng.integers(0, len(plan.scenes[0])))
        goal = plan.scenes[0][j].world_T_object[:3, 3]
        d0 = float(np.clip(rng.uniform(*APPROACH_START_M), lo, hi))
        d1 = float(np.clip(rng.uniform(*APPROACH_END_M), lo, d0))
        e0 = math.radians(float(rng.uniform(*APPROACH_START_ELEVATION_DEG)))
        e1 = math.radians(float(rng.uniform(*APPROACH_END_ELEVATION_DEG)))
        curve = math.radians(float(rng.uniform(*APPROACH_CURVE_DEG))) * float(rng.choice([-1.0, 1.0]))
        return [
            look_at_transform(_eye(goal, d0 + (d1 - d0) * s, az0 + curve * s, e0 + (e1 - e0) * s), goal)
            for s in steps
        ], j + 1
    el = math.radians(float(rng.uniform(*(BIN_ELEVATION_DEG if layout == "bin" else FIXED_ELEVATION_DEG))))
    dist = float(np.clip(fit * rng.uniform(*FIXED_DISTANCE_FACTOR), lo, hi))
    return [look_at_transform(_eye(target, dist, az0, el), target)] * n_views, 0


# --------------------------------------------------------------------------- sequences


def generate_sequence(
    seed: int,
    kind: str,
    n_views: int,
    split: str = "val",
    config: gen.GeneratorConfig | None = None,
) -> GeneratedSequence:
    """The ``kind`` sequence of ``seed`` with ``n_views`` views of objects of ``split``
    (deterministic in its arguments; see the module docstring).

    ``config``: image size, sensors, mesh sources, drop and noise settings of the generator
    (its object counts, HD and border fractions are not used: a sequence draws 3-6 objects
    and keeps its size and framing; of its layout weights only the clutter layouts').

    Raises:
        SequenceError: unknown kind, fewer than :data:`MIN_VIEWS` views, an approach without
            a near-range sensor, or no scene of :data:`SCENE_DRAWS` holds the kind.
        ValueError: unknown split (:func:`~sam3d_ros.sim.splits.check_split`).
    """
    if kind not in SEQUENCE_KINDS:
        raise SequenceError(f"unknown sequence kind {kind!r}; kinds are {SEQUENCE_KINDS}")
    if n_views < MIN_VIEWS:
        raise SequenceError(f"a sequence needs at least {MIN_VIEWS} views, got {n_views}")
    check_split(split)
    cfg = config or gen.GeneratorConfig()
    code = SEQUENCE_KINDS.index(kind)
    tag = f"sequence {kind} {seed}"
    rng = np.random.default_rng([SEQUENCE_STREAM, int(seed), code])
    layout, resting, walls, plan = _scene(rng, kind, n_views, split, cfg, tag)
    sensor, k, profile = _sensor(rng, cfg, kind, tag)
    cams, target_label = _cameras(rng, kind, layout, n_views, plan, k, profile, cfg)
    look_seed = int(rng.integers(0, 2**63 - 1))
    shift = sensors.draw_misregistration(rng, profile) if profile is not None else None
    gain = float(rng.uniform(*LEGACY_GAIN))
    present = tuple(
        tuple(i + 1 for i, r in enumerate(scene) if r.world_T_object[2, 3] > AWAY_M[2] / 2)
        for scene in plan.scenes
    )
    sim = gen._simulator()
    frames = []
    for v in range(n_views):
        scene = list(plan.scenes[v])
        # the same appearance stream in every view: the same table, walls, colours, textures, light
        rgb, depth_clean, labels, light = gen._render(
            sim, np.random.default_rng(look_seed), scene, walls, k, cams[v]
        )
        light["camera_model"] = sensor
        camera_T_world = invert_transform(cams[v])
        objects = tuple(
            gen._object_truth(scene[lab - 1], lab, labels, k, camera_T_world) for lab in present[v]
        )
        view_rng = np.random.default_rng([SEQUENCE_STREAM, int(seed), code, v + 1])
        if profile is not None:
            depth, rgb = gen._sensor_images(depth_clean, rgb, k, view_rng, profile, shift)
        else:
            depth = (
                apply_depth_noise(depth_clean, view_rng, cfg.noise)
                if cfg.noise.enabled
                else depth_clean.astype(np.float32)
            )
            light["gain"] = gain
            noisy = rgb.astype(np.float64) * gain + view_rng.normal(0.0, LEGACY_COLOR_SIGMA, rgb.shape)
            rgb = np.clip(noisy, 0, 255).astype(np.uint8)
        frames.append(
            gen.GeneratedFrame(
                index=v,
                seed=int(seed),
                split=split,
                stamp_ns=gen.START_STAMP_NS + v * gen.PERIOD_NS,
                intrinsics=k,
                world_T_camera=cams[v],
                rgb=rgb,
                depth=np.asarray(depth, dtype=np.float32),
                depth_clean=depth_clean,
                labels=labels.astype(np.uint16),
                objects=objects,
                lighting=light,
                scene_kind=layout,
                sensor=profile.name if profile is not None else "",
            )
        )
    logger.debug("%s: %s, %d objects, sensor %s", tag, layout, len(resting), sensor)
    return GeneratedSequence(
        seed=int(seed),
        kind=kind,
        split=split,
        layout=layout,
        sensor=profile.name if profile is not None else "",
        frames=tuple(frames),
        present=present,
        target_label=target_label,
        added_label=plan.added[0],
        added_at=plan.added[1],
        removed_label=plan.removed[0],
        removed_at=plan.removed[1],
        moved_label=plan.moved[0],
        moved_at=plan.moved[1],
    )


def to_rgbd_frame(frame: gen.GeneratedFrame, frame_id: str = SIM_FRAME_ID) -> RGBDFrame:
    """A generated frame as the pipeline's input, as :meth:`sam3d_ros.sim.dataset.Dataset.rgbd`
    reads it back from disk: rgb (H, W, 3) uint8, depth (H, W) float32 m (NaN invalid; on
    the sensor's 1 mm grid already), labels (H, W) int32, score 1 per object."""
    return RGBDFrame(
        stamp_ns=frame.stamp_ns,
        frame_id=frame_id,
        rgb=frame.rgb,
        depth=frame.depth,
        labels=frame.labels.astype(np.int32),
        camera=frame.intrinsics,
        scores={o.label: 1.0 for o in frame.objects},
    )


def static_camera_frames(
    frame: gen.GeneratedFrame,
    n_frames: int,
    rng: np.random.Generator,
    start_ns: int,
    frame_id: str = SIM_FRAME_ID,
) -> Iterator[RGBDFrame]:
    """``n_frames`` frames of a static camera on ``frame``'s scene (the pipeline's input, as
    :func:`to_rgbd_frame`): the frame's sensor draws its depth noise anew for every frame
    from ``rng``, with one depth-to-colour misregistration drawn first (one camera, one
    calibration error); the colour image is the frame's. Stamps ``start_ns + i *
    PERIOD_NS``.

    Raises:
        SequenceError: the frame has no sensor profile (the legacy noise model).
    """
    if not frame.sensor:
        raise SequenceError(f"frame {frame.seed}/{frame.index} has no sensor profile to draw noise from")
    profile = sensors.sensor_profile(frame.sensor)
    shift = sensors.draw_misregistration(rng, profile)
    base = to_rgbd_frame(frame, frame_id)
    for i in range(n_frames):
        depth = sensors.simulate_depth(frame.depth_clean, frame.rgb, frame.intrinsics, rng, profile, shift)
        yield replace(base, stamp_ns=start_ns + i * gen.PERIOD_NS, depth=depth)


def object_mesh(obj: gen.GeneratedObject) -> trimesh.Trimesh:
    """The object's true mesh posed in its frame's camera (optical) frame, metres (as
    :meth:`sam3d_ros.sim.dataset.Dataset.object_mesh` with ``frame="camera"``)."""
    mesh = ms.resolve_mesh(obj.mesh_ref, obj.scale)
    mesh.vertices = transform_points(obj.camera_T_object, np.asarray(mesh.vertices))
    return mesh
