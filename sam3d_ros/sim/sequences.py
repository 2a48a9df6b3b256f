"""Camera sequences of one settled cluttered scene (CPU only), for evaluating fusion.

One sequence = one scene of the cluttered world (:mod:`sam3d_ros.sim.generator`: objects
of the requested split dropped with pybullet as a pile, bin, cluster or stack) seen in
``n_views`` views by one sensor (profile and intrinsics drawn once), with the same
table, colours, textures and light in every view; only the sensor's depth and colour
noise is drawn anew per view. Kinds (:data:`SEQUENCE_KINDS`):

* ``orbit``: the camera circles the objects' centre over 90-150 degrees of azimuth at a
  gently swinging elevation, so objects hide each other differently per view;
* ``approach``: a wrist camera moves in on one object, from 1.0-1.3 m away and high to
  0.4-0.55 m (never nearer than the sensor's range allows), on a slight lateral curve,
  always looking at that object;
* ``static_add_remove``: a fixed camera; one object that supports none appears a third of
  the way in (it was absent before) and another leaves at two thirds;
* ``moved``: a fixed camera; at view ``n_views // 2`` one object resting on the table
  alone (supporting none, supported by none) is pushed 5-15 cm to a free spot and turned
  by up to 60 degrees about the vertical, and stays there.

Objects keep their instance label (index + 1 in the scene) in every view they are in. An
absent object is moved far outside the view, so every view renders the same object list
with the same appearance. Frames follow :mod:`sam3d_ros.sim.generator`'s conventions
(world z up, table top z = 0, optical camera frame); stamps advance by ``PERIOD_NS``.

Determinism: sequence ``index`` of ``seed`` and ``kind`` uses
``numpy.random.default_rng((seed, index, kind number))`` only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core.frames import invert_transform, make_transform
from sam3d_ros.sim import generator as gen
from sam3d_ros.sim import mesh_sources as ms
from sam3d_ros.sim import sensors
from sam3d_ros.sim.noise import apply_depth_noise
from sam3d_ros.sim.raycast import look_at_transform
from sam3d_ros.sim.splits import check_split

logger = logging.getLogger(__name__)

SEQUENCE_KINDS: Final[tuple[str, ...]] = ("orbit", "approach", "static_add_remove", "moved")
#: Layouts a sequence's scene is drawn from (clutter: objects hide each other).
CLUTTER_LAYOUTS: Final[tuple[str, ...]] = ("pile", "bin", "cluster", "stack")
#: Objects per sequence scene (fewer than a dataset frame: a sequence renders many views).
MIN_OBJECTS, MAX_OBJECTS = 3, 6
#: Orbit: azimuth span (deg), elevation (deg) and its swing (deg), distance factor of the fit.
ORBIT_SPAN_DEG: Final[tuple[float, float]] = (90.0, 150.0)
ORBIT_ELEVATION_DEG: Final[tuple[float, float]] = (25.0, 60.0)
ORBIT_SWING_DEG: Final[float] = 8.0
ORBIT_DISTANCE_FACTOR: Final[tuple[float, float]] = (1.0, 1.3)
#: Approach: start and end distance to the target (m), start / end elevation (deg), lateral
#: curve (deg of azimuth over the path).
APPROACH_START_M: Final[tuple[float, float]] = (1.0, 1.3)
APPROACH_END_M: Final[tuple[float, float]] = (0.4, 0.55)
APPROACH_ELEVATION_DEG: Final[tuple[tuple[float, float], tuple[float, float]]] = ((55.0, 75.0), (35.0, 50.0))
APPROACH_CURVE_DEG: Final[float] = 25.0
#: Fixed cameras: elevation (deg) and distance factor of the fit.
FIXED_ELEVATION_DEG: Final[tuple[float, float]] = (30.0, 65.0)
FIXED_DISTANCE_FACTOR: Final[tuple[float, float]] = (1.0, 1.25)
#: Moved object: push distance (m), largest turn (deg), clearance to the others (m), tries.
PUSH_M: Final[tuple[float, float]] = (0.05, 0.15)
PUSH_TURN_DEG: Final[float] = 60.0
PUSH_CLEARANCE_M: Final[float] = 0.01
PUSH_TRIES: Final[int] = 50
#: Scenes drawn for a ``moved`` sequence until one has an object that can be pushed.
PUSH_SCENES: Final[int] = 6
#: Where an absent object is put (far outside every view).
AWAY: Final[NDArray[np.float64]] = np.array([50.0, 50.0, -50.0])
#: Scene attempts before giving up (every object may roll off the table).
SCENE_ATTEMPTS: Final[int] = 4


class SequenceError(ValueError):
    """Raised for bad arguments or a scene that cannot hold the sequence's kind."""


@dataclass(frozen=True)
class GeneratedSequence:
    """One camera sequence with its ground truth.

    Attributes:
        seed, index, kind, split: identify the sequence.
        frames: one :class:`~sam3d_ros.sim.generator.GeneratedFrame` per view, each with
            its ``world_T_camera`` and the ground truth of the objects present.
        present: per view, the labels of the objects in the scene.
        moved_label: ``moved``: the pushed object's label (0 otherwise).
        moved_at: ``moved``: the first view after the push (-1 otherwise).
    """

    seed: int
    index: int
    kind: str
    split: str
    frames: tuple[gen.GeneratedFrame, ...]
    present: tuple[tuple[int, ...], ...]
    moved_label: int = 0
    moved_at: int = -1


def _radius(rest: gen._Resting) -> float:
    """Half the bounding-box diagonal of a resting object (m)."""
    return float(np.linalg.norm(ms.load_source(rest.pick.ref).mesh.extents)) * rest.pick.scale / 2


def _footprint_radius(rest: gen._Resting) -> float:
    """Radius of the object's footprint on the table (m): half the diagonal of its
    world-frame bounding box's xy extent."""
    v = np.asarray(ms.load_source(rest.pick.ref).mesh.vertices) * rest.pick.scale
    w = v @ rest.world_T_object[:3, :3].T
    ext = w.max(axis=0) - w.min(axis=0)
    return float(np.hypot(ext[0], ext[1])) / 2


def _free_standing(resting: list[gen._Resting]) -> list[int]:
    """Indices of objects that support no other object."""
    supporting = {s for r in resting for s in r.supported_by}
    return [i for i in range(len(resting)) if i not in supporting]


def _scene(
    rng: np.random.Generator, split: str, cfg: gen.GeneratorConfig
) -> tuple[str, list[gen._Resting], list[gen._Wall]]:
    sim = gen._simulator()
    kind = str(rng.choice(list(CLUTTER_LAYOUTS)))
    for attempt in range(SCENE_ATTEMPTS):
        n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
        picks = [gen._pick_object(rng, split, cfg) for _ in range(n)]
        if kind == "stack":
            picks.sort(key=gen._footprint, reverse=True)
        resting, walls = gen._drop(sim, rng, picks, cfg, kind)
        if len(resting) >= 2:
            return kind, resting, walls
        logger.debug("sequence scene attempt %d: %d objects stayed", attempt, len(resting))
    raise SequenceError(f"no scene with at least 2 objects after {SCENE_ATTEMPTS} attempts")


def _eye(target: NDArray[np.float64], distance: float, az: float, el: float) -> NDArray[np.float64]:
    return target + distance * np.array(
        [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    )


def _push(rng: np.random.Generator, resting: list[gen._Resting], i: int) -> NDArray[np.float64] | None:
    """A new world_T_object for object ``i``: pushed on the table to a spot whose
    footprint clears every other object's, and turned about the vertical; None if no such
    spot was found."""
    rest = resting[i]
    r_i = _footprint_radius(rest)
    others = [(r.world_T_object[:2, 3], _footprint_radius(r)) for j, r in enumerate(resting) if j != i]
    tx, ty = gen.TABLE_HALF_EXTENTS
    for _ in range(PUSH_TRIES):
        d = float(rng.uniform(*PUSH_M))
        ang = float(rng.uniform(-math.pi, math.pi))
        xy = rest.world_T_object[:2, 3] + d * np.array([math.cos(ang), math.sin(ang)])
        if abs(xy[0]) > tx - r_i or abs(xy[1]) > ty - r_i:
            continue
        if all(np.linalg.norm(xy - c) > r_i + r + PUSH_CLEARANCE_M for c, r in others):
            yaw = math.radians(float(rng.uniform(-PUSH_TURN_DEG, PUSH_TURN_DEG)))
            c, s = math.cos(yaw), math.sin(yaw)
            rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            t = rest.world_T_object.copy()
            t[:3, :3] = rz @ t[:3, :3]
            t[:2, 3] = xy
            return t
    return None


def _pushable(
    rng: np.random.Generator, resting: list[gen._Resting]
) -> tuple[int, NDArray[np.float64]] | None:
    """An object on the table alone (supporting none, supported by none) and its pushed
    pose (:func:`_push`), or None when no such object can be pushed."""
    supporting = {s for r in resting for s in r.supported_by}
    alone = [i for i, r in enumerate(resting) if i not in supporting and r.on_table and not r.supported_by]
    for i in rng.permutation(alone):
        t = _push(rng, resting, int(i))
        if t is not None:
            return int(i), t
    return None


def _away(rest: gen._Resting) -> gen._Resting:
    return replace(rest, world_T_object=make_transform(np.eye(3), AWAY))


def generate_sequence(
    seed: int,
    index: int,
    kind: str,
    n_views: int = 8,
    split: str = "val",
    config: gen.GeneratorConfig | None = None,
) -> GeneratedSequence:
    """Sequence ``index`` of ``seed`` of the given kind (see the module docstring).

    ``config``: image size, sensors and mesh sources of the generator (its scene weights,
    border and HD fractions are not used: a sequence keeps its size and framing).

    Raises:
        SequenceError: unknown kind, fewer than 3 views, or a scene that cannot hold the
            kind (too few free-standing objects, no free spot to push one to).
    """
    if kind not in SEQUENCE_KINDS:
        raise SequenceError(f"unknown sequence kind {kind!r}; kinds are {SEQUENCE_KINDS}")
    if n_views < 3:
        raise SequenceError(f"a sequence needs at least 3 views, got {n_views}")
    check_split(split)
    cfg = config or gen.GeneratorConfig()
    rng = np.random.default_rng([int(seed), int(index), SEQUENCE_KINDS.index(kind)])
    layout, resting, walls = _scene(rng, split, cfg)
    pushed: tuple[int, NDArray[np.float64]] | None = None
    if kind == "moved":  # a scene with an object on the table alone that can be pushed
        for _ in range(PUSH_SCENES):
            pushed = _pushable(rng, resting)
            if pushed is not None:
                break
            layout, resting, walls = _scene(rng, split, cfg)
        if pushed is None:
            raise SequenceError(f"sequence {seed}/{index}: no object could be pushed in {PUSH_SCENES} scenes")
    names = list(cfg.sensors)
    if kind == "approach":  # a wrist camera that can see its target from near
        names = [
            nm
            for nm in names
            if gen.SENSOR_RANGE_MARGIN * sensors.sensor_profile(nm).min_range_m <= APPROACH_END_M[1]
        ] or names
    if names:
        profile: sensors.SensorProfile | None = sensors.sensor_profile(str(rng.choice(names)))
        assert profile is not None
        k = sensors.draw_intrinsics(profile, rng, cfg.width, cfg.height)
        sensor = profile.name
    else:
        profile = None
        sensor, k = gen.random_intrinsics(rng, cfg.width, cfg.height)
    centres = np.array([r.world_T_object[:3, 3] for r in resting])
    radii = [_radius(r) for r in resting]
    target = centres.mean(axis=0)
    radius = max(float(np.linalg.norm(c - target)) + rr for c, rr in zip(centres, radii, strict=True))
    half_fov = min(math.atan2(k.width / 2, k.fx), math.atan2(k.height / 2, k.fy))
    fit = 1.05 * radius / math.sin(half_fov)
    lo, hi = cfg.distance_range
    if profile is not None:
        lo = min(max(lo, gen.SENSOR_RANGE_MARGIN * profile.min_range_m), hi)

    n = len(resting)
    scenes: list[list[gen._Resting]] = []
    cams: list[NDArray[np.float64]] = []
    present: list[tuple[int, ...]] = []
    moved_label, moved_at = 0, -1
    az0 = float(rng.uniform(-math.pi, math.pi))
    if kind == "orbit":
        span = math.radians(float(rng.uniform(*ORBIT_SPAN_DEG)))
        el0 = math.radians(float(rng.uniform(*ORBIT_ELEVATION_DEG)))
        dist = float(np.clip(fit * rng.uniform(*ORBIT_DISTANCE_FACTOR), lo, hi))
        for v in range(n_views):
            s = v / (n_views - 1)
            el = el0 + math.radians(ORBIT_SWING_DEG) * math.sin(2 * math.pi * s)
            cams.append(look_at_transform(_eye(target, dist, az0 + span * (s - 0.5), el), target))
            scenes.append(resting)
    elif kind == "approach":
        j = int(rng.integers(0, n))
        goal = centres[j]
        d0 = float(np.clip(rng.uniform(*APPROACH_START_M), lo, hi))
        d1 = float(np.clip(rng.uniform(*APPROACH_END_M), lo, d0))
        e0, e1 = (math.radians(float(rng.uniform(*r))) for r in APPROACH_ELEVATION_DEG)
        curve = math.radians(APPROACH_CURVE_DEG) * float(rng.choice([-1.0, 1.0]))
        for v in range(n_views):
            s = v / (n_views - 1)
            eye = _eye(goal, d0 + (d1 - d0) * s, az0 + curve * s, e0 + (e1 - e0) * s)
            cams.append(look_at_transform(eye, goal))
            scenes.append(resting)
    else:
        el = math.radians(float(rng.uniform(*FIXED_ELEVATION_DEG)))
        dist = float(np.clip(fit * rng.uniform(*FIXED_DISTANCE_FACTOR), lo, hi))
        cam = look_at_transform(_eye(target, dist, az0, el), target)
        free = _free_standing(resting)
        if kind == "static_add_remove":
            if len(free) < 2:
                raise SequenceError(f"sequence {seed}/{index}: {len(free)} free-standing objects, need 2")
            added, removed = (int(x) for x in rng.choice(free, size=2, replace=False))
            for v in range(n_views):
                gone = set()
                if v < n_views // 3:
                    gone.add(added)
                if v >= (2 * n_views) // 3:
                    gone.add(removed)
                scenes.append([_away(r) if i in gone else r for i, r in enumerate(resting)])
                cams.append(cam)
        else:  # moved
            assert pushed is not None
            i, t = pushed
            moved_label, moved_at = i + 1, n_views // 2
            after = [replace(r, world_T_object=t) if q == i else r for q, r in enumerate(resting)]
            for v in range(n_views):
                scenes.append(after if v >= moved_at else resting)
                cams.append(cam)
    for v in range(n_views):
        present.append(tuple(i + 1 for i, r in enumerate(scenes[v]) if r.world_T_object[2, 3] > AWAY[2] / 2))

    look_seed = int(rng.integers(0, 2**31))
    shift = sensors.draw_misregistration(rng, profile) if profile is not None else None
    frames = []
    sim = gen._simulator()
    for v in range(n_views):
        # the same appearance rng for every view: same table, colours, textures and light
        rgb, depth_clean, labels, light = gen._render(
            sim, np.random.default_rng(look_seed), scenes[v], list(walls), k, cams[v]
        )
        light["camera_model"] = sensor
        camera_T_world = invert_transform(cams[v])
        objects = tuple(
            gen._object_truth(scenes[v][lab - 1], lab, labels, k, camera_T_world) for lab in present[v]
        )
        view_rng = np.random.default_rng([int(seed), int(index), SEQUENCE_KINDS.index(kind), v])
        if profile is not None:
            depth, rgb = gen._sensor_images(depth_clean, rgb, k, view_rng, profile, shift)
        else:
            depth = apply_depth_noise(depth_clean, view_rng, cfg.noise).astype(np.float32)
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
                sensor=sensor if profile is not None else "",
            )
        )
    return GeneratedSequence(
        seed=int(seed),
        index=int(index),
        kind=kind,
        split=split,
        frames=tuple(frames),
        present=tuple(present),
        moved_label=moved_label,
        moved_at=moved_at,
    )
