"""Training data for the geometry and layout network: pluggable sources, targets, the cached
``.npz`` dataset and its in-memory loader.

Sources
    A :class:`SampleSource` yields :class:`LabelledFrame` objects: an input frame plus, per
    instance label, an :class:`ObjectTarget` (a point-in-shape test in the camera frame,
    the amodal box and the visible fraction). ``"raycast"`` (:class:`RaycastSource`) draws
    random tabletop scenes from :mod:`sam3d_ros.sim.scenes` with the depth noise model; the
    richer generator (pybullet + YCB + procedural shapes, ``sam3d_ros.sim.generator``) is
    read through ``"dataset:<root>"`` (:class:`GeneratedDatasetSource`, targets from the
    true meshes); further sources register in :data:`SOURCES`.

Examples
    Each frame goes through the same support-plane estimate and observation extraction as
    the node, every observation is encoded (:mod:`sam3d_ros.core.encoding`) and its target
    computed on the same cube: ``TARGET_SUPERSAMPLE``^3 point-in-shape tests per voxel give
    the amodal occupancy fraction.

Cached dataset (a directory; ``shard_CCCC_KKKK.npz`` files, at most ``SHARD_SIZE`` objects
each, from frame chunk ``CCCC`` of ``CHUNK_FRAMES`` frames, plus ``dataset.json`` with the
recipe and a summary; shards load in name order). Arrays per shard, N objects:

* ``inputs``: (N, C, 32, 32, 32) uint8, the encoding quantised per channel
  (``value = lo + q / 255 * (hi - lo)`` with ``CHANNEL_RANGES``);
* ``target_occupancy``: (N, 32, 32, 32) uint8, amodal occupancy fraction * 255;
* ``teacher_occupancy`` (optional): (N, 32, 32, 32) uint8, a teacher's occupancy
  probability * 255 on the same cube (e.g. a large model run offline on a GPU), with
  ``has_teacher`` (N,) bool saying which rows carry one;
* ``layout``: (N, 8) float32 amodal box in the normalised cube frame: centre offset from
  the cube centre / side (3), log(size / side) (3), sin(2 yaw), cos(2 yaw) (yaw of the box's
  x axis about the cube's z axis; boxes are canonicalised to size_x >= size_y so the yaw is
  defined modulo pi); ``layout_mask`` (N, 2) float32: [box valid, yaw valid (boxes only)];
* ``visible_fraction`` (N,) float32, ``shape_code`` (N,) int8 (index into ``SHAPE_CODES``),
  ``scene_seed`` (N,) int64, ``instance_id`` (N,) int32, ``camera_T_grid`` (N, 4, 4),
  ``origin`` (N, 3), ``side`` (N,) float64.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core.config import PipelineConfig, default_config
from sam3d_ros.core.encoding import (
    GRID_SIZE,
    NUM_CHANNELS,
    EncodingError,
    GridFrame,
    encode_object,
    stage2_cube,
)
from sam3d_ros.core.frames import invert_transform
from sam3d_ros.core.observation import extract_observations
from sam3d_ros.core.support import contact_heights, find_supports
from sam3d_ros.core.support_plane import estimate_support_plane
from sam3d_ros.core.types import RGBDFrame, SceneContext

logger = logging.getLogger(__name__)

#: (lo, hi) of each encoded channel, for the uint8 quantisation of the cache.
CHANNEL_RANGES: Final[tuple[tuple[float, float], ...]] = ((0.0, 1.0),) * (NUM_CHANNELS - 1) + ((-1.0, 1.0),)
#: Point-in-shape tests per voxel axis for the amodal target.
TARGET_SUPERSAMPLE: Final[int] = 2
#: Objects per shard file.
SHARD_SIZE: Final[int] = 256
#: Shape kinds, indexed by ``shape_code``.
SHAPE_CODES: Final[tuple[str, ...]] = ("box", "cylinder", "sphere", "mesh", "unknown")
#: Base scene seeds per split (disjoint ranges: validation scenes are never trained on).
SPLIT_SEED_BASE: Final[dict[str, int]] = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000}
#: Layout vector length.
LAYOUT_DIM: Final[int] = 8


class DataError(ValueError):
    """Raised for unknown sources/splits and malformed datasets."""


@dataclass(frozen=True)
class ObjectTarget:
    """Ground truth of one object for training.

    Attributes:
        inside: maps (M, 3) camera-frame points (m) to (M,) bool "inside the object".
        camera_T_box: (4, 4) pose of the amodal box (centre, axes) in the camera frame.
        box_size: (3,) full box size along its axes (m).
        yaw_defined: False for shapes symmetric about their vertical axis.
        visible_fraction: visible / amodal pixels in [0, 1].
        shape: one of ``SHAPE_CODES``.
        true_mesh: returns the watertight true mesh posed in the camera frame (for
            evaluation), or None when the source has none.
        occupancy: optional direct computation of the amodal occupancy fraction on a cube
            (used instead of ``inside`` when given, e.g. for meshes).
    """

    inside: Callable[[NDArray[np.float64]], NDArray[np.bool_]]
    camera_T_box: NDArray[np.float64]
    box_size: NDArray[np.float64]
    yaw_defined: bool
    visible_fraction: float
    shape: str = "unknown"
    true_mesh: Callable[[], Any] | None = None
    occupancy: Callable[[GridFrame], NDArray[np.float32]] | None = None


@dataclass(frozen=True)
class LabelledFrame:
    """An input frame with per-label targets; ``seed`` identifies the scene."""

    frame: RGBDFrame
    targets: dict[int, ObjectTarget]
    seed: int


class SampleSource(Protocol):
    """Yields labelled frames of one split, deterministically from ``seed``."""

    name: str

    def frames(self, split: str, count: int, seed: int = 0, start: int = 0) -> Iterator[LabelledFrame]:
        """Frames ``start .. count - 1`` of ``split`` ("train", "val", "test"); frame ``i``
        does not depend on ``start`` (so ranges can be built in parallel)."""
        ...


def _analytic_target(gt: Any) -> ObjectTarget:
    """Target of a :class:`sam3d_ros.sim.raycast.ObjectGroundTruth` (box/cylinder/sphere)."""
    cam_T_obj = np.asarray(gt.camera_T_object, dtype=np.float64)
    obj_T_cam = invert_transform(cam_T_obj)
    p = gt.params
    kind = gt.shape_type
    if kind == "box":
        half = 0.5 * np.asarray(p["size"], dtype=np.float64)
        size = 2.0 * half

        def inside(x: NDArray[np.float64]) -> NDArray[np.bool_]:
            q = x @ obj_T_cam[:3, :3].T + obj_T_cam[:3, 3]
            return np.asarray(np.all(np.abs(q) <= half, axis=-1))

    elif kind == "cylinder":
        r, hh = float(p["radius"]), 0.5 * float(p["height"])
        size = np.array([2 * r, 2 * r, 2 * hh])

        def inside(x: NDArray[np.float64]) -> NDArray[np.bool_]:
            q = x @ obj_T_cam[:3, :3].T + obj_T_cam[:3, 3]
            return np.asarray((q[..., 0] ** 2 + q[..., 1] ** 2 <= r * r) & (np.abs(q[..., 2]) <= hh))

    elif kind == "sphere":
        r = float(p["radius"])
        size = np.full(3, 2 * r)

        def inside(x: NDArray[np.float64]) -> NDArray[np.bool_]:
            q = x @ obj_T_cam[:3, :3].T + obj_T_cam[:3, 3]
            return np.asarray(np.sum(q * q, axis=-1) <= r * r)

    else:
        raise DataError(f"unknown analytic shape type {kind!r}")
    return ObjectTarget(
        inside=inside,
        camera_T_box=cam_T_obj,
        box_size=size,
        yaw_defined=kind == "box",
        visible_fraction=float(gt.visible_fraction),
        shape=kind,
        true_mesh=lambda: _sim_true_mesh(gt),
    )


def _sim_true_mesh(gt: Any) -> Any:
    from sam3d_ros.sim.raycast import true_mesh

    return true_mesh(gt, frame="camera")


@dataclass
class RaycastSource:
    """Random tabletop scenes from the analytic ray caster with the depth noise model.

    Attributes:
        width, height: image size (D435-like intrinsics).
        noise: apply :class:`sam3d_ros.sim.noise.DepthNoiseConfig` defaults.
    """

    width: int = 640
    height: int = 480
    noise: bool = True
    name: str = "raycast"

    def frames(self, split: str, count: int, seed: int = 0, start: int = 0) -> Iterator[LabelledFrame]:
        """Scenes ``SPLIT_SEED_BASE[split] + seed * 100_000 + i`` for ``start <= i < count``."""
        from sam3d_ros.sim.noise import DepthNoiseConfig, apply_depth_noise
        from sam3d_ros.sim.scenes import random_scene

        if split not in SPLIT_SEED_BASE:
            raise DataError(f"unknown split {split!r}; valid: {sorted(SPLIT_SEED_BASE)}")
        base = SPLIT_SEED_BASE[split] + seed * 100_000
        for i in range(start, count):
            s = base + i
            rendered = random_scene(s, width=self.width, height=self.height).render()
            if self.noise:
                rng = np.random.default_rng(s)
                rendered = rendered.with_depth(apply_depth_noise(rendered.depth, rng, DepthNoiseConfig()))
            targets = {int(o.label): _analytic_target(o) for o in rendered.objects}
            yield LabelledFrame(frame=rendered.to_rgbd_frame(), targets=targets, seed=s)


def _mesh_occupancy(mesh_camera: Any) -> Callable[[GridFrame], NDArray[np.float32]]:
    """Occupancy fraction of a watertight camera-frame mesh on a cube (ray parity per
    column, ``TARGET_SUPERSAMPLE``^3 samples per voxel)."""
    from sam3d_ros.core.metrics import _inside_columns

    def occ(gf: GridFrame) -> NDArray[np.float32]:
        s = TARGET_SUPERSAMPLE
        m = GRID_SIZE * s
        v = (np.asarray(mesh_camera.vertices) - gf.camera_T_grid[:3, 3]) @ gf.camera_T_grid[:3, :3]
        c = gf.origin[None, :] + (np.arange(m)[:, None] + 0.5) * (gf.side / m)
        ins = _inside_columns((v, np.asarray(mesh_camera.faces)), c[:, 0], c[:, 1], c[:, 2])
        return np.asarray(
            ins.reshape(GRID_SIZE, s, GRID_SIZE, s, GRID_SIZE, s).mean(axis=(1, 3, 5)), np.float32
        )

    return occ


def _mesh_inside(mesh_camera: Any) -> Callable[[NDArray[np.float64]], NDArray[np.bool_]]:
    def inside(x: NDArray[np.float64]) -> NDArray[np.bool_]:
        return np.asarray(mesh_camera.contains(np.asarray(x).reshape(-1, 3)), dtype=bool)

    return inside


def _constant(value: Any) -> Callable[[], Any]:
    def get() -> Any:
        return value

    return get


@functools.lru_cache(maxsize=2)
def _load_generated(path: Path, stamp: int) -> Any:
    """A generated dataset's index, parsed once per process and version (``stamp``: the
    index file's mtime in ns; dataset builds read it once per frame chunk)."""
    from sam3d_ros.sim.dataset import load_dataset

    return load_dataset(path)


@dataclass
class GeneratedDatasetSource:
    """Frames of datasets written by :mod:`sam3d_ros.sim.dataset` (pybullet + YCB +
    procedural meshes; format in docs/dataset.md): ``root/<split>`` (or ``root`` itself when
    its split matches). Targets come from the true meshes; the amodal box is the mesh's
    bounding box in its object frame. Registered as ``"dataset:<root>"``."""

    root: Path
    name: str = "dataset"

    def frames(self, split: str, count: int, seed: int = 0, start: int = 0) -> Iterator[LabelledFrame]:
        """Frames ``start .. count - 1`` of the split's dataset (``seed`` is fixed at generation)."""
        path = self.root / split if (self.root / split).is_dir() else self.root
        from sam3d_ros.sim.dataset import DATASET_FILE

        index = path / DATASET_FILE
        ds = _load_generated(path.resolve(), index.stat().st_mtime_ns if index.is_file() else 0)
        if ds.split and ds.split != split:
            raise DataError(f"{path} holds split {ds.split!r}, not {split!r}")
        for ft in ds.frames[start:count]:
            targets: dict[int, ObjectTarget] = {}
            for o in ft.objects:
                mesh_obj = ds.object_mesh(o, "object")
                mesh_cam = ds.object_mesh(o, "camera")
                lo, hi = np.asarray(mesh_obj.bounds[0]), np.asarray(mesh_obj.bounds[1])
                box = o.camera_T_object.copy()
                box[:3, 3] = o.camera_T_object[:3, :3] @ (0.5 * (lo + hi)) + o.camera_T_object[:3, 3]
                targets[o.label] = ObjectTarget(
                    inside=_mesh_inside(mesh_cam),
                    camera_T_box=box,
                    box_size=hi - lo,
                    yaw_defined=True,
                    visible_fraction=o.visible_fraction,
                    shape="mesh",
                    true_mesh=_constant(mesh_cam),
                    occupancy=_mesh_occupancy(mesh_cam),
                )
            yield LabelledFrame(frame=ds.rgbd(ft), targets=targets, seed=int(ft.extra.get("seed", ft.index)))


#: Registered sources: name -> factory ("dataset:<root>" is handled by create_source).
SOURCES: dict[str, Callable[[], SampleSource]] = {"raycast": RaycastSource}


def create_source(name: str) -> SampleSource:
    """The source registered as ``name``, or ``"dataset:<root>"`` for generated datasets."""
    if name.startswith("dataset:"):
        return GeneratedDatasetSource(Path(name.split(":", 1)[1]).expanduser())
    try:
        return SOURCES[name]()
    except KeyError as err:
        raise DataError(
            f"unknown data source {name!r}; valid: {sorted(SOURCES)} or 'dataset:<root>'"
        ) from err


def quantise(x: NDArray[np.floating]) -> NDArray[np.uint8]:
    """(..., C, N, N, N) float encoding -> uint8 with ``CHANNEL_RANGES``."""
    lo = np.array([r[0] for r in CHANNEL_RANGES], dtype=np.float32).reshape(-1, 1, 1, 1)
    hi = np.array([r[1] for r in CHANNEL_RANGES], dtype=np.float32).reshape(-1, 1, 1, 1)
    q = np.rint((np.asarray(x, dtype=np.float32) - lo) / (hi - lo) * 255.0)
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantise(q: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Inverse of :func:`quantise` (float32)."""
    lo = np.array([r[0] for r in CHANNEL_RANGES], dtype=np.float32).reshape(-1, 1, 1, 1)
    hi = np.array([r[1] for r in CHANNEL_RANGES], dtype=np.float32).reshape(-1, 1, 1, 1)
    return np.asarray(lo + q.astype(np.float32) * ((hi - lo) / 255.0), dtype=np.float32)


def target_occupancy(target: ObjectTarget, gf: GridFrame) -> NDArray[np.float32]:
    """Amodal occupancy fraction (GRID_SIZE,)*3 float32 in [0, 1] on the cube ``gf``."""
    if target.occupancy is not None:
        return target.occupancy(gf)
    s = TARGET_SUPERSAMPLE
    pts_g = gf.voxel_centres(GRID_SIZE, s)
    cam = pts_g.reshape(-1, 3) @ gf.camera_T_grid[:3, :3].T + gf.camera_T_grid[:3, 3]
    ins = target.inside(cam).reshape(GRID_SIZE, s, GRID_SIZE, s, GRID_SIZE, s)
    return np.asarray(ins.mean(axis=(1, 3, 5)), dtype=np.float32)


def layout_target(target: ObjectTarget, gf: GridFrame) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(layout (8,), mask (2,)) of the amodal box in the normalised cube frame (see the module
    docstring)."""
    grid_T_box = invert_transform(gf.camera_T_grid) @ target.camera_T_box
    centre = (grid_T_box[:3, 3] - gf.centre) / gf.side
    rot = grid_T_box[:3, :3]
    size = np.asarray(target.box_size, dtype=np.float64)
    # box axis most aligned with the cube's z is the "height" axis
    zi = int(np.argmax(np.abs(rot[2, :])))
    hor = [i for i in range(3) if i != zi]
    sx, sy, sz = size[hor[0]], size[hor[1]], size[zi]
    ax = rot[:, hor[0]]
    yaw = math.atan2(ax[1], ax[0])
    if sx < sy:
        sx, sy = sy, sx
        yaw += math.pi / 2
    logsize = np.log(np.array([sx, sy, sz]) / gf.side)
    out = np.concatenate([centre, logsize, [math.sin(2 * yaw), math.cos(2 * yaw)]]).astype(np.float32)
    mask = np.array([1.0, 1.0 if target.yaw_defined else 0.0], dtype=np.float32)
    return out, mask


@dataclass
class _ShardWriter:
    out_dir: Path
    prefix: str
    buffers: dict[str, list[Any]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, **arrays: Any) -> None:
        for k, v in arrays.items():
            self.buffers.setdefault(k, []).append(v)
        self.count += 1
        if len(self.buffers["inputs"]) >= SHARD_SIZE:
            self.flush()

    def flush(self) -> None:
        if not self.buffers.get("inputs"):
            return
        name = f"{self.prefix}_{len(self.files):04d}.npz"
        arrays = {k: np.stack(v) for k, v in self.buffers.items()}
        tmp = self.out_dir / (name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(self.out_dir / name)
        self.files.append(name)
        self.buffers = {}


#: Frames per build chunk: each chunk writes its own shards, so a dataset is identical
#: whatever the number of workers.
CHUNK_FRAMES: Final[int] = 40


@dataclass(frozen=True)
class _ChunkJob:
    """Frames ``start .. stop - 1`` of one dataset build (see :func:`_build_chunk`)."""

    out_dir: Path
    source: str
    split: str
    seed: int
    start: int
    stop: int
    config: PipelineConfig
    stage1: str = ""
    local_support: bool = False


@dataclass(frozen=True)
class _ChunkResult:
    files: list[str]
    count: int
    shapes: dict[str, int]
    visible: list[float]


class _Stage1:
    """The stage-1 (layout) graph of a two-stage model on ONNX Runtime, one thread: maps a
    frame's stage-1 encodings (B, C, n, n, n) to their layout rows (B, 8)."""

    def __init__(self, onnx_path: str) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def layouts(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        out = self.session.run(["layout"], {self.input: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32)


def _build_chunk(job: _ChunkJob) -> _ChunkResult:
    """Encode frames ``job.start .. job.stop - 1`` into ``shard_CCCC_KK.npz`` (C = chunk
    index). With ``job.stage1`` (the stage-1 ONNX of a two-stage model) every object is
    encoded on the stage-2 cube that stage 1's layout gives, as at inference
    (``job.local_support``: grounded on the object it rests on,
    :func:`~sam3d_ros.core.encoding.stage2_cube`)."""
    src = create_source(job.source)
    writer = _ShardWriter(job.out_dir, f"shard_{job.start // CHUNK_FRAMES:04d}")
    shapes: dict[str, int] = {}
    vis: list[float] = []
    layout_net = _Stage1(job.stage1) if job.stage1 else None
    for lf in src.frames(job.split, job.stop, job.seed, start=job.start):
        plane = estimate_support_plane(lf.frame, job.config)
        observations, _ = extract_observations(lf.frame, job.config)
        # as the pipeline: what each object rests on, found before the backend runs
        heights = contact_heights(find_supports(lf.frame, plane, observations)) if job.local_support else {}
        scene = SceneContext(frame=lf.frame, plane=plane, support_heights=heights)
        encoded: list[tuple[Any, ObjectTarget, NDArray[np.float32], GridFrame]] = []
        for obs in observations:
            tgt = lf.targets.get(obs.instance_id)
            if tgt is None:
                continue
            try:
                feats, gf = encode_object(scene, obs)
            except EncodingError as err:
                logger.debug("scene %d object %d skipped: %s", lf.seed, obs.instance_id, err)
                continue
            encoded.append((obs, tgt, feats, gf))
        if layout_net is not None and encoded:
            lays = layout_net.layouts(np.stack([e[2] for e in encoded]))
            staged = []
            for (obs, tgt, _, gf1), lay in zip(encoded, lays, strict=True):
                try:
                    gf2 = stage2_cube(scene, obs, gf1, lay, local_support=job.local_support)
                    feats2, _ = encode_object(scene, obs, gf2)
                except EncodingError as err:
                    logger.debug("scene %d object %d: no stage-2 cube: %s", lf.seed, obs.instance_id, err)
                    continue
                staged.append((obs, tgt, feats2, gf2))
            encoded = staged
        for obs, tgt, feats, gf in encoded:
            lay, lay_mask = layout_target(tgt, gf)
            occ = target_occupancy(tgt, gf)
            writer.add(
                inputs=quantise(feats),
                target_occupancy=np.rint(occ * 255).astype(np.uint8),
                layout=lay,
                layout_mask=lay_mask,
                visible_fraction=np.float32(tgt.visible_fraction),
                shape_code=np.int8(SHAPE_CODES.index(tgt.shape) if tgt.shape in SHAPE_CODES else 4),
                scene_seed=np.int64(lf.seed),
                instance_id=np.int32(obs.instance_id),
                camera_T_grid=gf.camera_T_grid,
                origin=gf.origin,
                side=np.float64(gf.side),
            )
            shapes[tgt.shape] = shapes.get(tgt.shape, 0) + 1
            vis.append(tgt.visible_fraction)
    writer.flush()
    return _ChunkResult(files=writer.files, count=writer.count, shapes=shapes, visible=vis)


def build_dataset(
    out_dir: Path,
    split: str,
    n_frames: int,
    *,
    source: str = "raycast",
    seed: int = 0,
    config: PipelineConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
    stage1: Path | None = None,
) -> dict[str, Any]:
    """Generate ``n_frames`` frames of ``split`` from ``source`` into ``out_dir``.

    With ``stage1`` (the stage-1 ONNX graph of a two-stage model) the objects are encoded
    on stage 2's amodal-box cubes (see :func:`_build_chunk`); its sha256 is in the recipe.

    Frames are encoded in chunks of ``CHUNK_FRAMES`` (in ``workers`` processes when > 1);
    the result does not depend on ``workers``. Idempotent: when ``out_dir/dataset.json``
    records the same recipe, nothing is redone.

    Returns:
        The ``dataset.json`` summary (recipe, counts per shape, visible-fraction buckets,
        generation time).

    Raises:
        DataError: unknown source or split, or ``workers`` < 1.
    """
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    cfg = config or default_config()
    out_dir = Path(out_dir)
    local_support = stage1 is not None and cfg.local_support  # stage-2 cubes rest on supports
    recipe: dict[str, Any] = {
        "source": source,
        "split": split,
        "n_frames": n_frames,
        "seed": seed,
        "grid": GRID_SIZE,
    }
    if stage1 is not None:
        from sam3d_ros.backends.learned import sha256_file

        recipe["stage1_sha256"] = sha256_file(stage1)
        if local_support:  # (absent otherwise: the recipes of older datasets stay equal)
            recipe["stage2_local_support"] = True
    meta_path = out_dir / "dataset.json"
    if meta_path.is_file():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("recipe") == recipe:
            logger.info("dataset %s is up to date (%d objects)", out_dir, meta["objects"])
            return meta
    create_source(source)  # fail early on an unknown source
    if split not in SPLIT_SEED_BASE:
        raise DataError(f"unknown split {split!r}; valid: {sorted(SPLIT_SEED_BASE)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("shard_*.npz"):
        old.unlink()
    t0 = time.time()
    jobs = [
        _ChunkJob(
            out_dir,
            source,
            split,
            seed,
            a,
            min(a + CHUNK_FRAMES, n_frames),
            cfg,
            str(stage1 or ""),
            local_support,
        )
        for a in range(0, n_frames, CHUNK_FRAMES)
    ]
    results: list[_ChunkResult] = []
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(_build_chunk(job))
            if progress is not None:
                progress(job.stop, n_frames)
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            for job, res in zip(jobs, pool.imap(_build_chunk, jobs), strict=True):
                results.append(res)
                if progress is not None:
                    progress(job.stop, n_frames)
    shapes: dict[str, int] = {}
    for r in results:
        for k, v in r.shapes.items():
            shapes[k] = shapes.get(k, 0) + v
    va = np.asarray([v for r in results for v in r.visible])
    meta = {
        "recipe": recipe,
        "objects": sum(r.count for r in results),
        "frames": n_frames,
        "shards": [f for r in results for f in r.files],
        "shapes": shapes,
        "visible_fraction": {
            "lt_0.6": int((va < 0.6).sum()),
            "ge_0.6": int((va >= 0.6).sum()),
        },
        "generation_s": round(time.time() - t0, 1),
        "workers": workers,
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    logger.info("dataset %s: %d objects from %d frames", out_dir, meta["objects"], n_frames)
    return meta


@dataclass
class ArrayDataset:
    """A cached dataset held in memory (uint8), dequantised per batch.

    Attributes:
        inputs: (N, C, n, n, n) uint8. target: (N, n, n, n) uint8. layout: (N, 8) float32.
        layout_mask: (N, 2) float32. teacher: (N, n, n, n) uint8 or None; has_teacher (N,) bool.
        visible_fraction: (N,) float32.
    """

    inputs: NDArray[np.uint8]
    target: NDArray[np.uint8]
    layout: NDArray[np.float32]
    layout_mask: NDArray[np.float32]
    visible_fraction: NDArray[np.float32]
    teacher: NDArray[np.uint8] | None = None
    has_teacher: NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batch(self, idx: Sequence[int] | NDArray[np.integer]) -> dict[str, NDArray[Any]]:
        """Float32 arrays of the rows ``idx``: inputs (B, C, n, n, n), target (B, n, n, n) in
        [0, 1], layout (B, 8), layout_mask (B, 2); plus teacher (B, n, n, n) in [0, 1] and
        teacher_weight (B,) when the dataset has teacher outputs."""
        ii = np.asarray(idx)
        out: dict[str, NDArray[Any]] = {
            "inputs": dequantise(self.inputs[ii]),
            "target": self.target[ii].astype(np.float32) / 255.0,
            "layout": self.layout[ii],
            "layout_mask": self.layout_mask[ii],
        }
        if self.teacher is not None and self.has_teacher is not None:
            out["teacher"] = self.teacher[ii].astype(np.float32) / 255.0
            out["teacher_weight"] = self.has_teacher[ii].astype(np.float32)
        return out


def load_dataset(path: Path, limit: int | None = None) -> ArrayDataset:
    """Load every shard of a cached dataset directory into memory.

    A shard may carry ``teacher_occupancy`` (+ ``has_teacher``); rows of shards without it
    get ``has_teacher = False``.

    Raises:
        DataError: no shards, or shards with inconsistent grid sizes.
    """
    files = sorted(Path(path).glob("shard_*.npz"))
    if not files:
        raise DataError(f"no shard_*.npz in {path}")
    cols: dict[str, list[NDArray[Any]]] = {
        k: [] for k in ("inputs", "target", "layout", "layout_mask", "vis", "teacher", "has_teacher")
    }
    any_teacher = False
    total = 0
    for f in files:
        with np.load(f) as z:
            n = int(z["inputs"].shape[0])
            if z["inputs"].shape[1:] != (NUM_CHANNELS, GRID_SIZE, GRID_SIZE, GRID_SIZE):
                raise DataError(f"{f}: inputs shape {z['inputs'].shape} does not match the encoding")
            cols["inputs"].append(z["inputs"])
            cols["target"].append(z["target_occupancy"])
            cols["layout"].append(z["layout"])
            cols["layout_mask"].append(z["layout_mask"])
            cols["vis"].append(z["visible_fraction"])
            if "teacher_occupancy" in z.files:
                any_teacher = True
                cols["teacher"].append(z["teacher_occupancy"])
                has = z["has_teacher"] if "has_teacher" in z.files else np.ones(n, dtype=bool)
                cols["has_teacher"].append(has.astype(bool))
            else:
                cols["teacher"].append(np.zeros((n, GRID_SIZE, GRID_SIZE, GRID_SIZE), dtype=np.uint8))
                cols["has_teacher"].append(np.zeros(n, dtype=bool))
        total += n
        if limit is not None and total >= limit:
            break
    cat = {k: np.concatenate(v)[:limit] if v else None for k, v in cols.items()}
    return ArrayDataset(
        inputs=cat["inputs"],  # type: ignore[arg-type]
        target=cat["target"],  # type: ignore[arg-type]
        layout=cat["layout"],  # type: ignore[arg-type]
        layout_mask=cat["layout_mask"],  # type: ignore[arg-type]
        visible_fraction=cat["vis"],  # type: ignore[arg-type]
        teacher=cat["teacher"] if any_teacher else None,
        has_teacher=cat["has_teacher"] if any_teacher else None,
    )


def add_teacher_outputs(
    path: Path, predict: Callable[[NDArray[np.float32]], NDArray[np.float32]], batch_size: int = 16
) -> int:
    """Store a teacher's occupancy in every shard of a cached dataset (distillation).

    ``predict`` maps dequantised inputs (B, C, n, n, n) to occupancy probabilities
    (B, n, n, n) in [0, 1] on the same cubes. Teachers that need the raw frames (e.g. a
    large image model) write ``teacher_occupancy``/``has_teacher`` into the shards
    themselves using ``camera_T_grid``, ``origin`` and ``side`` of each row.

    Returns:
        Number of rows labelled.
    """
    n_total = 0
    for f in sorted(Path(path).glob("shard_*.npz")):
        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files}
        x = arrays["inputs"]
        probs = [predict(dequantise(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        arrays["teacher_occupancy"] = np.rint(np.clip(np.concatenate(probs), 0, 1) * 255).astype(np.uint8)
        arrays["has_teacher"] = np.ones(len(x), dtype=bool)
        tmp = f.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(f)
        n_total += len(x)
    return n_total
