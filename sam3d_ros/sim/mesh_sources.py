"""Mesh sources of the scene generator and the mesh-reference strings that name them.

A *mesh reference* says where an object's shape comes from; with the object's ``scale`` it
fully defines the object-frame mesh (metres):

* ``ycb:<name>``: ``<YCB dir>/<name>.glb`` (scanned YCB objects, metres). The YCB dir is
  ``$SAM3D_YCB_DIR`` or ``<repo root>/../shared/data/ycb_dev``; files are read at run time,
  never copied. Canonical frame: the scan's axes (z up on the turntable), origin at the
  centre of the bounding box.
* ``pybullet:<path relative to pybullet_data>``: an OBJ shipped with the ``pybullet_data``
  package, e.g. ``pybullet:random_urdfs/042/042.obj`` or ``pybullet:duck.obj``. Canonical
  frame: the file's axes and units, origin at the bounding-box centre; ``scale`` holds
  the whole size factor (e.g. the URDF's 0.015 times a random jitter).
* ``procedural:<file>``: a PLY in the dataset's ``meshes/`` directory, written by the
  generator (see :mod:`sam3d_ros.sim.procedural`); file stems are ``<family>_<index>`` so
  the mesh can also be rebuilt without the file.

The *object id* used for the split assignment is the reference without a file extension
for procedural objects (``procedural:torus_00042``) and the reference itself otherwise.

Vertices are merged on load (texture seams do not split the surface), so meshes that are
closed in the source are watertight here; :func:`resolve_mesh` returns them posed in the
object frame.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from numpy.typing import NDArray

from sam3d_ros.sim import procedural

logger = logging.getLogger(__name__)

#: Mesh sources, in the order the generator mixes them.
SOURCES: tuple[str, ...] = ("ycb", "pybullet", "procedural")
#: Environment variable overriding the YCB directory.
YCB_ENV = "SAM3D_YCB_DIR"
#: Number of procedural objects under pybullet_data/random_urdfs.
PYBULLET_RANDOM_COUNT = 1000
#: URDF scale of the random_urdfs objects (all 1000 use it).
PYBULLET_RANDOM_SCALE = 0.015
#: Named pybullet_data meshes and the range of their longest extent (m) in scenes.
PYBULLET_NAMED: dict[str, tuple[float, float]] = {
    "duck.obj": (0.06, 0.14),
    "teddy2_VHACD_CHs.obj": (0.08, 0.22),
    "objects/mug.obj": (0.08, 0.14),
    "soccerball.obj": (0.06, 0.22),
    "bunny.obj": (0.06, 0.20),
    "lego/lego.obj": (0.03, 0.08),
    "jenga/jenga.obj": (0.05, 0.16),
    "domino/domino.obj": (0.04, 0.07),
    "sphere_smooth.obj": (0.04, 0.12),
    "cube.obj": (0.03, 0.10),
}

_REPO_ROOT = Path(__file__).resolve().parents[2]
_PROC_RE = re.compile(r"^([a-z]+)_(\d+)$")


class MeshSourceError(ValueError):
    """Raised for a malformed mesh reference or a mesh that cannot be found or loaded."""


@dataclass(frozen=True)
class SourceMesh:
    """A canonical source mesh (scale 1) and what the renderer needs for its appearance.

    Attributes:
        mesh: watertight-if-possible mesh in the object frame (merged vertices), metres
            times the source's unit.
        render_vertices: (V, 3) float64 vertices of the render mesh (texture seams kept),
            same frame as ``mesh``.
        render_faces: (F, 3) int64 faces of the render mesh.
        uv: (V, 2) float64 texture coordinates, or None.
        texture: (H, W, 3) uint8 texture image, or None.
    """

    mesh: trimesh.Trimesh
    render_vertices: NDArray[np.float64]
    render_faces: NDArray[np.int64]
    uv: NDArray[np.float64] | None
    texture: NDArray[np.uint8] | None


def ycb_dir() -> Path | None:
    """The YCB mesh directory (``$SAM3D_YCB_DIR`` or ``<repo>/../shared/data/ycb_dev``),
    or None when it does not exist."""
    env = os.environ.get(YCB_ENV)
    d = Path(env) if env else _REPO_ROOT.parent / "shared" / "data" / "ycb_dev"
    return d if d.is_dir() else None


def ycb_names() -> list[str]:
    """Sorted names of the available YCB objects (empty when the directory is missing)."""
    d = ycb_dir()
    return sorted(p.stem for p in d.glob("*.glb")) if d is not None else []


def pybullet_data_dir() -> Path:
    """The ``pybullet_data`` package directory."""
    try:
        import pybullet_data
    except ImportError as err:  # pragma: no cover - pybullet is a runtime requirement
        raise MeshSourceError("pybullet_data is not installed (pip install pybullet)") from err
    return Path(pybullet_data.getDataPath())


def pybullet_random_ref(index: int) -> str:
    """Reference of random_urdfs object ``index`` (0..999)."""
    if not 0 <= int(index) < PYBULLET_RANDOM_COUNT:
        raise MeshSourceError(f"random_urdfs index must be in 0..{PYBULLET_RANDOM_COUNT - 1}, got {index!r}")
    return f"pybullet:random_urdfs/{int(index):03d}/{int(index):03d}.obj"


def procedural_ref(family: str, index: int) -> str:
    """Reference of procedural object ``(family, index)`` (a PLY in the dataset's meshes/)."""
    return f"procedural:{procedural.object_name(family, index)}.ply"


def object_id(ref: str) -> str:
    """The split-assignment id of a mesh reference (procedural: without the extension)."""
    source, rest = split_ref(ref)
    return f"procedural:{Path(rest).stem}" if source == "procedural" else ref


def split_ref(ref: str) -> tuple[str, str]:
    """``"ycb:apple"`` -> ``("ycb", "apple")``; raises MeshSourceError when malformed."""
    source, sep, rest = str(ref).partition(":")
    if not sep or source not in SOURCES or not rest or ".." in Path(rest).parts or rest.startswith("/"):
        raise MeshSourceError(f"malformed mesh reference {ref!r}; expected one of {SOURCES} + ':<name>'")
    return source, rest


def _to_uint8_image(img: Any) -> NDArray[np.uint8] | None:
    if img is None:
        return None
    try:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (AttributeError, OSError, ValueError):
        return None
    return arr if arr.ndim == 3 and arr.shape[2] == 3 else None


def _from_trimesh(loaded: Any, what: str) -> SourceMesh:
    geoms = list(loaded.geometry.values()) if isinstance(loaded, trimesh.Scene) else [loaded]
    geoms = [g for g in geoms if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if not geoms:
        raise MeshSourceError(f"{what}: no triangles")
    render: Any = geoms[0] if len(geoms) == 1 else trimesh.util.concatenate(geoms)
    rv = np.asarray(render.vertices, dtype=np.float64)
    rf = np.asarray(render.faces, dtype=np.int64)
    uv = texture = None
    visual: Any = getattr(render, "visual", None)
    if len(geoms) == 1 and getattr(visual, "uv", None) is not None and len(visual.uv) == len(rv):
        mat = getattr(visual, "material", None)
        texture = _to_uint8_image(getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None))
        if texture is not None:
            uv = np.asarray(visual.uv, dtype=np.float64)
    mesh = trimesh.Trimesh(vertices=rv, faces=rf, process=True)
    mesh.merge_vertices()
    centre = mesh.bounds.mean(axis=0)
    mesh.apply_translation(-centre)
    return SourceMesh(mesh=mesh, render_vertices=rv - centre, render_faces=rf, uv=uv, texture=texture)


def _procedural_source(mesh: trimesh.Trimesh) -> SourceMesh:
    return SourceMesh(
        mesh=mesh,
        render_vertices=np.asarray(mesh.vertices, dtype=np.float64),
        render_faces=np.asarray(mesh.faces, dtype=np.int64),
        uv=None,
        texture=None,
    )


@functools.lru_cache(maxsize=256)
def _load_cached(ref: str) -> SourceMesh:
    source, rest = split_ref(ref)
    if source == "ycb":
        d = ycb_dir()
        if d is None:
            raise MeshSourceError(f"{ref}: YCB directory not found (set ${YCB_ENV})")
        path = d / f"{rest}.glb"
    elif source == "pybullet":
        path = pybullet_data_dir() / rest
    else:  # procedural without a dataset directory: rebuild from the name
        m = _PROC_RE.match(Path(rest).stem)
        if m is None:
            raise MeshSourceError(f"{ref}: procedural file stem must be <family>_<index>")
        try:
            return _procedural_source(procedural.make_procedural(m.group(1), int(m.group(2))))
        except procedural.ProceduralError as err:
            raise MeshSourceError(f"{ref}: {err}") from err
    if not path.is_file():
        raise MeshSourceError(f"{ref}: no such file {path}")
    try:
        loaded = trimesh.load(str(path), force=None)
    except Exception as err:  # trimesh raises many unrelated types
        raise MeshSourceError(f"{ref}: cannot load {path}: {err}") from err
    return _from_trimesh(loaded, ref)


def load_source(ref: str, meshes_dir: Path | None = None) -> SourceMesh:
    """The canonical :class:`SourceMesh` of ``ref`` (cached per process).

    ``meshes_dir`` is where ``procedural:`` files live (a dataset's ``meshes/``); without
    it, or when the file is missing there, a procedural mesh is rebuilt from its name.
    """
    source, rest = split_ref(ref)
    if source == "procedural" and meshes_dir is not None and (meshes_dir / rest).is_file():
        return _load_procedural_file(str(meshes_dir / rest))
    return _load_cached(ref)


@functools.lru_cache(maxsize=256)
def _load_procedural_file(path: str) -> SourceMesh:
    try:
        mesh: Any = trimesh.load(path, force="mesh", process=True)
    except Exception as err:  # trimesh raises many unrelated types
        raise MeshSourceError(f"cannot load procedural mesh {path}: {err}") from err
    return _procedural_source(mesh)


def resolve_mesh(ref: str, scale: float = 1.0, meshes_dir: Path | None = None) -> trimesh.Trimesh:
    """The object-frame mesh (metres) of reference ``ref`` at ``scale`` (a new copy).

    Args:
        ref: mesh reference (see the module docstring).
        scale: uniform scale applied to the canonical mesh.
        meshes_dir: the dataset's ``meshes/`` directory for ``procedural:`` references.
    """
    if not np.isfinite(scale) or scale <= 0.0:
        raise MeshSourceError(f"scale must be finite and > 0, got {scale!r}")
    mesh = load_source(ref, meshes_dir).mesh.copy()
    mesh.apply_scale(float(scale))
    return mesh
