"""Procedural object meshes with random proportions (pure numpy + trimesh, no ROS).

Every family builds a watertight triangle mesh in its OBJECT frame (metres), centred at the
centre of its axis-aligned bounding box, z being the "up" axis of the shape as designed
(bottles and bowls stand on z; the generator may still tumble them). The longest extent is
drawn log-uniformly in ``[MIN_SIZE_M, MAX_SIZE_M]`` (2-30 cm).

An object is identified by ``(family, index)``: :func:`make_procedural` derives its RNG
from that pair only, so the same identifier always gives the same mesh, whichever scene,
process or split asks for it (the split assignment lives in :mod:`sam3d_ros.sim.splits`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable

import numpy as np
import trimesh
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

#: Families of procedural shapes.
FAMILIES: tuple[str, ...] = (
    "box",
    "cylinder",
    "ellipsoid",
    "capsule",
    "cone",
    "torus",
    "superquadric",
    "bottle",
    "bowl",
    "mug",
    "vase",
    "extrusion",
)
#: Families of thin and flat shapes (plates and lids, tool handles with a thin shaft,
#: flat spanner- or spatula-like blades), drawn by the generator only when asked
#: (``GeneratorConfig.thin_fraction``), so the splits generated without them stay as they
#: were. Their longest extent is at least :data:`THIN_MIN_SIZE_M`.
THIN_FAMILIES: tuple[str, ...] = ("plate", "rod", "blade")
#: Number of distinct objects per family (indices 0..POOL_SIZE-1).
POOL_SIZE = 10_000
#: Range of the longest extent of a procedural object (m).
MIN_SIZE_M = 0.02
MAX_SIZE_M = 0.30
#: Smallest longest extent of a thin-family object (m): a 2 cm plate or screwdriver is no
#: thin object at the cameras' resolution.
THIN_MIN_SIZE_M = 0.08
#: Angular resolution of round shapes (segments around the axis).
_SECTIONS = 40


class ProceduralError(ValueError):
    """Raised for an unknown family or an index outside the pool."""


def object_seed(family: str, index: int) -> int:
    """The 64-bit RNG seed of procedural object ``(family, index)`` (stable across runs)."""
    digest = hashlib.sha256(f"sam3d-procedural-v1:{family}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def object_name(family: str, index: int) -> str:
    """File stem of a procedural object, e.g. ``torus_00042``."""
    return f"{family}_{int(index):05d}"


def _size(rng: np.random.Generator, lo: float = MIN_SIZE_M) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(MAX_SIZE_M))))


def _fit(mesh: trimesh.Trimesh, size: float) -> trimesh.Trimesh:
    """Scale uniformly so the longest extent is ``size`` and centre the bounding box."""
    m = mesh.copy()
    m.apply_translation(-m.bounds.mean(axis=0))
    m.apply_scale(size / float(m.extents.max()))
    return m


def _box(rng: np.random.Generator) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=rng.uniform(0.2, 1.0, 3))


def _cylinder(rng: np.random.Generator) -> trimesh.Trimesh:
    return trimesh.creation.cylinder(
        radius=float(rng.uniform(0.1, 0.5)), height=float(rng.uniform(0.2, 1.0)), sections=_SECTIONS
    )


def _ellipsoid(rng: np.random.Generator) -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=3)
    m.apply_scale(rng.uniform(0.5, 1.0, 3))
    return m


def _capsule(rng: np.random.Generator) -> trimesh.Trimesh:
    r = float(rng.uniform(0.1, 0.4))
    return trimesh.creation.capsule(height=float(rng.uniform(0.1, 1.0)), radius=r, count=[24, 24])


def _cone(rng: np.random.Generator) -> trimesh.Trimesh:
    return trimesh.creation.cone(
        radius=float(rng.uniform(0.2, 0.6)), height=float(rng.uniform(0.3, 1.0)), sections=_SECTIONS
    )


def _torus(rng: np.random.Generator) -> trimesh.Trimesh:
    major = 1.0
    minor = float(rng.uniform(0.12, 0.5))
    return trimesh.creation.torus(
        major_radius=major, minor_radius=minor, major_sections=40, minor_sections=20
    )


def _superquadric(rng: np.random.Generator) -> trimesh.Trimesh:
    """Radial projection of an icosphere onto ``(|x/a|^(2/e2) + |y/b|^(2/e2))^(e2/e1) +
    |z/c|^(2/e1) = 1`` (star-shaped, so the result stays watertight)."""
    e1, e2 = (float(v) for v in rng.uniform(0.25, 1.6, 2))
    a, b, c = (float(v) for v in rng.uniform(0.5, 1.0, 3))
    sphere = trimesh.creation.icosphere(subdivisions=4)
    d = np.asarray(sphere.vertices, dtype=np.float64)
    ax = np.abs(d[:, 0] / a) + 1e-12
    ay = np.abs(d[:, 1] / b) + 1e-12
    az = np.abs(d[:, 2] / c) + 1e-12
    f = (ax ** (2.0 / e2) + ay ** (2.0 / e2)) ** (e2 / e1) + az ** (2.0 / e1)
    r = f ** (-e1 / 2.0)
    return trimesh.Trimesh(vertices=d * r[:, None], faces=sphere.faces, process=True)


def _revolve(profile: NDArray[np.float64]) -> trimesh.Trimesh:
    """Lathe a (N, 2) (radius, z) profile that starts and ends on the axis (watertight)."""
    return trimesh.creation.revolve(profile, sections=_SECTIONS)


def _bottle(rng: np.random.Generator) -> trimesh.Trimesh:
    r = float(rng.uniform(0.15, 0.35))
    h = 1.0
    shoulder = float(rng.uniform(0.5, 0.75))
    neck_r = r * float(rng.uniform(0.25, 0.5))
    neck_z = shoulder + float(rng.uniform(0.1, 0.2))
    prof = [[0.0, 0.0], [r, 0.0], [r, shoulder], [neck_r, neck_z], [neck_r, h], [0.0, h]]
    return _revolve(np.array(prof))


def _vessel(
    r_foot: float,
    h: float,
    t: float,
    n: int,
    flare: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    power: float,
) -> trimesh.Trimesh:
    """Lathe a vessel with walls of thickness ``t``: the outer wall rises over ``n`` points
    from the foot (radius ``r_foot``, z = 0) to the rim (radius 1, z = ``h``), its radius
    ``r_foot + (1 - r_foot) * flare(s)`` and its height ``h * s**power`` for s in [0, 1];
    the inner wall runs ``t`` inside it back to the axis at height ``t`` (a closed bottom;
    watertight)."""
    s = np.linspace(0.0, 1.0, n)
    outer = np.stack([r_foot + (1.0 - r_foot) * flare(s), h * s**power], axis=1)
    inner = np.stack([np.maximum(outer[::-1, 0] - t, 0.0), np.maximum(outer[::-1, 1], t)], axis=1)
    return _revolve(np.vstack([[[0.0, 0.0]], outer, inner[:-1], [[0.0, t]]]))


def _bowl(rng: np.random.Generator) -> trimesh.Trimesh:
    """A thick-walled bowl: outer wall out to the rim, inner wall back to the axis."""
    r_foot = float(rng.uniform(0.3, 0.6))
    h = float(rng.uniform(0.3, 0.6))
    t = float(rng.uniform(0.04, 0.08))
    return _vessel(r_foot, h, t, 8, lambda s: np.sin(0.5 * math.pi * s), 1.5)


def _mug(rng: np.random.Generator) -> trimesh.Trimesh:
    """A cup (no handle): cylinder wall of thickness ``t`` with a closed bottom."""
    r = float(rng.uniform(0.3, 0.5))
    h = 1.0
    t = float(rng.uniform(0.03, 0.06))
    prof = [[0.0, 0.0], [r, 0.0], [r, h], [r - t, h], [r - t, t], [0.0, t]]
    return _revolve(np.array(prof))


def _vase(rng: np.random.Generator) -> trimesh.Trimesh:
    z = np.linspace(0.0, 1.0, 10)
    base = float(rng.uniform(0.15, 0.35))
    amp = float(rng.uniform(0.03, 0.15))
    freq = float(rng.uniform(0.5, 1.5))
    phase = float(rng.uniform(0.0, 2.0 * math.pi))
    radius = base + amp * np.sin(2.0 * math.pi * freq * z + phase)
    prof = np.vstack([[[0.0, 0.0]], np.stack([radius, z], axis=1), [[0.0, 1.0]]])
    return _revolve(prof)


def _prism(poly: NDArray[np.float64], h: float) -> trimesh.Trimesh:
    """A prism of height ``h`` over a polygon (N, 2), counter-clockwise and star-shaped
    about the origin (fan-triangulated caps; watertight)."""
    n = len(poly)
    bottom = np.column_stack([poly, np.zeros(n)])
    top = np.column_stack([poly, np.full(n, h)])
    verts = np.vstack([bottom, top, [[0.0, 0.0, 0.0]], [[0.0, 0.0, h]]])
    cb, ct = 2 * n, 2 * n + 1
    faces = []
    for i in range(n):
        j = (i + 1) % n
        faces += [[cb, j, i], [ct, n + i, n + j], [i, j, n + j], [i, n + j, n + i]]
    return trimesh.Trimesh(vertices=verts, faces=np.array(faces), process=True)


def _extrusion(rng: np.random.Generator) -> trimesh.Trimesh:
    """A prism over a random star-shaped polygon."""
    n = int(rng.integers(3, 10))
    sector = 2.0 * math.pi / n
    ang = np.arange(n) * sector + rng.uniform(-0.3, 0.3, n) * sector  # increasing
    rad = rng.uniform(0.5, 1.0, n)
    poly = np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)
    return _prism(poly, float(rng.uniform(0.1, 1.0)))


def _plate(rng: np.random.Generator) -> trimesh.Trimesh:
    """A plate, saucer or lid: a flat foot rising to a rim, thin walls; 3-15 % as high
    as it is wide."""
    r_foot = float(rng.uniform(0.35, 0.75))
    h = float(rng.uniform(0.06, 0.3))
    t = float(rng.uniform(0.025, 0.05))
    return _vessel(r_foot, h, t, 6, lambda s: s, float(rng.uniform(1.0, 2.5)))


def _rod(rng: np.random.Generator) -> trimesh.Trimesh:
    """A screwdriver, marker or brush: a handle and a much thinner shaft on one axis."""
    r_handle = float(rng.uniform(0.04, 0.1))
    l_handle = float(rng.uniform(0.25, 0.6))
    r_shaft = r_handle * float(rng.uniform(0.2, 0.6))
    taper = float(rng.uniform(0.02, 0.08))
    prof = [
        [0.0, 0.0],
        [r_handle * 0.8, 0.0],
        [r_handle, 0.03],
        [r_handle, l_handle],
        [r_shaft, l_handle + taper],
        [r_shaft, 1.0],
        [0.0, 1.0],
    ]
    return _revolve(np.array(prof))


def _blade(rng: np.random.Generator) -> trimesh.Trimesh:
    """A spanner, spatula or knife: a flat bar (3-8 % as thick as it is long) whose ends
    widen into heads; the outline is the farthest boundary of the bar and the two heads
    along each ray from the centre (star-shaped)."""
    half_w = float(rng.uniform(0.03, 0.08))
    heads = [float(rng.uniform(half_w, 0.16)) for _ in range(2)]
    ang = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
    d = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    with np.errstate(divide="ignore"):
        t_bar = np.minimum(0.5 / np.abs(d[:, 0]), half_w / np.abs(d[:, 1]))
    r = t_bar
    for cx, rh in zip((0.5 - heads[0], -0.5 + heads[1]), heads, strict=True):
        b = d[:, 0] * cx  # ray-circle (centre (cx, 0), radius rh): farthest crossing
        disc = b * b - cx * cx + rh * rh
        far = np.where(disc >= 0.0, b + np.sqrt(np.maximum(disc, 0.0)), 0.0)
        r = np.maximum(r, far)
    return _prism(d * r[:, None], float(rng.uniform(0.03, 0.08)))


_BUILDERS: dict[str, Callable[[np.random.Generator], trimesh.Trimesh]] = {
    "box": _box,
    "cylinder": _cylinder,
    "ellipsoid": _ellipsoid,
    "capsule": _capsule,
    "cone": _cone,
    "torus": _torus,
    "superquadric": _superquadric,
    "bottle": _bottle,
    "bowl": _bowl,
    "mug": _mug,
    "vase": _vase,
    "extrusion": _extrusion,
    "plate": _plate,
    "rod": _rod,
    "blade": _blade,
}


def make_procedural(family: str, index: int) -> trimesh.Trimesh:
    """The procedural object ``(family, index)``: a watertight mesh in its object frame.

    Args:
        family: one of :data:`FAMILIES` or :data:`THIN_FAMILIES`.
        index: 0 <= index < :data:`POOL_SIZE`.

    Returns:
        A ``trimesh.Trimesh`` (metres, bounding-box centre at the origin) whose longest
        extent lies in [MIN_SIZE_M, MAX_SIZE_M] ([THIN_MIN_SIZE_M, MAX_SIZE_M] for the
        thin families).
    """
    if family not in _BUILDERS:
        raise ProceduralError(
            f"unknown procedural family {family!r}; expected one of {FAMILIES + THIN_FAMILIES}"
        )
    if not 0 <= int(index) < POOL_SIZE:
        raise ProceduralError(f"procedural index must be in 0..{POOL_SIZE - 1}, got {index!r}")
    rng = np.random.default_rng(object_seed(family, index))
    size = _size(rng, THIN_MIN_SIZE_M if family in THIN_FAMILIES else MIN_SIZE_M)
    mesh = _fit(_BUILDERS[family](rng), size)
    mesh.fix_normals()
    if not mesh.is_watertight:  # pragma: no cover - all builders are watertight by design
        logger.warning("procedural %s is not watertight", object_name(family, index))
    return mesh
