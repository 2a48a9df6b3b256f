"""On-disk datasets of generated frames: writer (parallel), loader and rosbag2 export.

Layout (documented in docs/dataset.md; version :data:`DATASET_VERSION`)::

    DATASET/
      dataset.json                 format, version, split, seed, generator config, frames
      meshes/<family>_<index>.ply  procedural meshes (object frame, metres)
      frames/000000/
        rgb.png                    RGB 8 bit
        depth.png                  uint16 depth in millimetres (0 = invalid), noisy
        labels.png                 uint16 visible instance labels (0 = table/background)
        amodal_<label>.png         8 bit amodal mask per object (255 inside)
        frame.json                 stamp, intrinsics, camera pose, objects (see FrameTruth)

A bag exported with :func:`export_bag` holds the same per-frame records in
``mesh_ground_truth.json`` (plus the procedural meshes it uses in ``meshes/``), so
:func:`load_dataset` opens either a dataset directory or such a bag directory.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from numpy.typing import NDArray
from PIL import Image

from sam3d_ros._progress import progress_bar
from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import transform_points
from sam3d_ros.core.types import RGBDFrame
from sam3d_ros.sim import mesh_sources as ms
from sam3d_ros.sim.bag import Storage, depth_to_mm, mm_to_depth, read_frames, write_rgbd_frames
from sam3d_ros.sim.generator import (
    TARGET_SHARES,
    GeneratedFrame,
    GeneratorConfig,
    generate_frame,
    reset_worker_state,
)
from sam3d_ros.sim.raycast import SIM_FRAME_ID
from sam3d_ros.sim.splits import check_split

logger = logging.getLogger(__name__)

DATASET_FORMAT = "sam3d_ros/dataset"
DATASET_VERSION = 2
#: Versions :func:`load_dataset` reads (1: before the clutter fields of ObjectTruth).
SUPPORTED_VERSIONS = (1, 2)
DATASET_FILE = "dataset.json"
FRAME_FILE = "frame.json"
MESHES_DIR = "meshes"
FRAMES_DIR = "frames"
#: Ground truth of an exported bag (next to its metadata.yaml).
BAG_GROUND_TRUTH_FILE = "mesh_ground_truth.json"
BAG_GROUND_TRUTH_FORMAT = "sam3d_ros/mesh_ground_truth"
#: Depth PNG unit (m per count).
DEPTH_SCALE_M = 0.001


class DatasetError(RuntimeError):
    """Raised for a missing, malformed or unsupported dataset."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ObjectTruth:
    """Ground truth of one object in one frame.

    Attributes:
        label: instance label in the label image.
        mesh_ref: mesh reference (``ycb:<name>``, ``pybullet:<path>``, ``procedural:<file>``).
        scale: uniform scale of the canonical mesh.
        camera_T_object: 4x4 float64 object -> camera optical frame.
        world_T_object: 4x4 float64 object -> world (table top z = 0, z up).
        visible_pixels, amodal_pixels: modal / amodal pixel counts in the image.
        amodal_mask: file name of the amodal mask inside the frame directory ("" if none).
        amodal_pixels_full: amodal pixels on an unbounded image plane (>= amodal_pixels;
            0 when not recorded, as in datasets of format version 1).
        cut_by_border: part of the object's silhouette lies outside the image.
        on_table: the object touches the table (else it rests only on other objects).
        supported_by: labels of the objects it rests on.
    """

    label: int
    mesh_ref: str
    scale: float
    camera_T_object: NDArray[np.float64]
    world_T_object: NDArray[np.float64]
    visible_pixels: int
    amodal_pixels: int
    amodal_mask: str = ""
    amodal_pixels_full: int = 0
    cut_by_border: bool = False
    on_table: bool = True
    supported_by: tuple[int, ...] = ()

    @property
    def visible_fraction(self) -> float:
        """``visible_pixels / amodal_pixels_full``: the part outside the image counts as
        unseen (0 when the object is outside the image)."""
        full = max(self.amodal_pixels_full, self.amodal_pixels)
        return self.visible_pixels / full if full else 0.0

    @property
    def object_id(self) -> str:
        """The split-assignment id of the mesh."""
        return ms.object_id(self.mesh_ref)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": int(self.label),
            "mesh": self.mesh_ref,
            "object_id": self.object_id,
            "scale": float(self.scale),
            "camera_T_object": np.round(self.camera_T_object, 9).tolist(),
            "world_T_object": np.round(self.world_T_object, 9).tolist(),
            "visible_pixels": int(self.visible_pixels),
            "amodal_pixels": int(self.amodal_pixels),
            "visible_fraction": round(self.visible_fraction, 6),
            "amodal_mask": self.amodal_mask,
            "amodal_pixels_full": int(self.amodal_pixels_full),
            "cut_by_border": bool(self.cut_by_border),
            "on_table": bool(self.on_table),
            "supported_by": [int(v) for v in self.supported_by],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ObjectTruth:
        return cls(
            label=int(d["label"]),
            mesh_ref=str(d["mesh"]),
            scale=float(d["scale"]),
            camera_T_object=np.asarray(d["camera_T_object"], dtype=np.float64).reshape(4, 4),
            world_T_object=np.asarray(d["world_T_object"], dtype=np.float64).reshape(4, 4),
            visible_pixels=int(d["visible_pixels"]),
            amodal_pixels=int(d["amodal_pixels"]),
            amodal_mask=str(d.get("amodal_mask", "")),
            amodal_pixels_full=int(d.get("amodal_pixels_full", 0)),
            cut_by_border=bool(d.get("cut_by_border", False)),
            on_table=bool(d.get("on_table", True)),
            supported_by=tuple(int(v) for v in d.get("supported_by", ())),
        )


@dataclass(frozen=True)
class FrameTruth:
    """Ground truth and metadata of one frame (the contents of ``frame.json``).

    Attributes:
        index: frame index within its run. stamp_ns: header stamp (ns).
        camera: intrinsics. world_T_camera: 4x4 camera optical frame -> world.
        objects: per-object truth. directory: frame directory relative to the dataset root.
        extra: other JSON fields (seed, split, lighting, camera model).
    """

    index: int
    stamp_ns: int
    camera: CameraIntrinsics
    world_T_camera: NDArray[np.float64]
    objects: tuple[ObjectTruth, ...]
    directory: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        k = self.camera
        return {
            "index": int(self.index),
            "stamp_ns": int(self.stamp_ns),
            "frame_id": SIM_FRAME_ID,
            "directory": self.directory,
            "camera": {"width": k.width, "height": k.height, "fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy},
            "depth_scale_m": DEPTH_SCALE_M,
            "world_T_camera": np.round(self.world_T_camera, 9).tolist(),
            "objects": [o.to_json() for o in self.objects],
            **self.extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FrameTruth:
        known = {
            "index",
            "stamp_ns",
            "frame_id",
            "directory",
            "camera",
            "depth_scale_m",
            "world_T_camera",
            "objects",
        }
        c = d["camera"]
        return cls(
            index=int(d["index"]),
            stamp_ns=int(d["stamp_ns"]),
            camera=CameraIntrinsics(
                width=int(c["width"]),
                height=int(c["height"]),
                fx=float(c["fx"]),
                fy=float(c["fy"]),
                cx=float(c["cx"]),
                cy=float(c["cy"]),
            ),
            world_T_camera=np.asarray(d["world_T_camera"], dtype=np.float64).reshape(4, 4),
            objects=tuple(ObjectTruth.from_json(o) for o in d["objects"]),
            directory=str(d.get("directory", "")),
            extra={k: v for k, v in d.items() if k not in known},
        )


# --------------------------------------------------------------------------- writing


def _write_png(path: Path, arr: NDArray[Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(arr).save(tmp, format="PNG")
    tmp.replace(path)


def _frame_dir_name(index: int) -> str:
    return f"{FRAMES_DIR}/{int(index):06d}"


def write_frame(root: Path, frame: GeneratedFrame) -> FrameTruth:
    """Write one generated frame (images, masks, frame.json, new procedural meshes) under
    ``root``; returns its :class:`FrameTruth`. Safe to call from several processes."""
    rel = _frame_dir_name(frame.index)
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    (root / MESHES_DIR).mkdir(exist_ok=True)
    _write_png(d / "rgb.png", frame.rgb)
    _write_png(d / "depth.png", depth_to_mm(frame.depth))
    _write_png(d / "labels.png", frame.labels.astype(np.uint16))
    objects = []
    for o in frame.objects:
        mask_name = f"amodal_{o.label:03d}.png"
        _write_png(d / mask_name, (o.amodal_mask.astype(np.uint8) * 255))
        source, rest = ms.split_ref(o.mesh_ref)
        if source == "procedural" and not (root / MESHES_DIR / rest).is_file():
            target = root / MESHES_DIR / rest
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            ms.resolve_mesh(o.mesh_ref).export(str(tmp), file_type="ply")
            tmp.replace(target)
        objects.append(
            ObjectTruth(
                label=o.label,
                mesh_ref=o.mesh_ref,
                scale=o.scale,
                camera_T_object=o.camera_T_object,
                world_T_object=o.world_T_object,
                visible_pixels=o.visible_pixels,
                amodal_pixels=o.amodal_pixels,
                amodal_mask=mask_name,
                amodal_pixels_full=o.amodal_pixels_full,
                cut_by_border=o.cut_by_border,
                on_table=o.on_table,
                supported_by=o.supported_by,
            )
        )
    truth = FrameTruth(
        index=frame.index,
        stamp_ns=frame.stamp_ns,
        camera=frame.intrinsics,
        world_T_camera=frame.world_T_camera,
        objects=tuple(objects),
        directory=rel,
        extra={
            "seed": frame.seed,
            "split": frame.split,
            "lighting": frame.lighting,
            "scene": frame.scene_kind,
            "sensor": frame.sensor,
        },
    )
    (d / FRAME_FILE).write_text(json.dumps(truth.to_json(), indent=1))
    return truth


def _finished_frame(root: Path, index: int, seed: int, split: str) -> dict[str, Any] | None:
    """The record of a frame a previous (interrupted) run completed, or None. ``frame.json``
    is written last, so its presence means the frame's files are complete."""
    path = root / _frame_dir_name(index) / FRAME_FILE
    try:
        rec: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("index") != index or rec.get("split") != split or rec.get("seed") != seed:
        return None
    return rec


def _worker(args: tuple[str, int, int, str, GeneratorConfig, bool]) -> dict[str, Any]:
    root, seed, index, split, cfg, resume = args
    t0 = time.perf_counter()
    if resume:
        rec = _finished_frame(Path(root), index, seed, split)
        if rec is not None:
            return {"truth": rec, "seconds": math.nan}
    truth = write_frame(Path(root), generate_frame(seed, index, split, cfg))
    return {"truth": truth.to_json(), "seconds": time.perf_counter() - t0}


def generate_dataset(
    out: str | Path,
    n_frames: int,
    seed: int,
    split: str = "val",
    *,
    workers: int = 1,
    config: GeneratorConfig | None = None,
    progress: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Generate ``n_frames`` frames into the new dataset directory ``out``.

    Frame ``i`` only depends on ``(seed, i, split, config)`` (not on ``workers``). With
    ``resume``, frames an interrupted run of the same command already finished are kept
    (the caller guarantees the same seed and config; the split and index are checked).
    With ``progress`` a progress bar is drawn on stderr when it is a terminal.

    Returns:
        A summary: frames, objects, wall seconds, frames per second, workers.
    """
    root = Path(out)
    cfg = config or GeneratorConfig()
    check_split(split)
    if n_frames < 1:
        raise DatasetError(f"n_frames must be >= 1, got {n_frames!r}")
    if workers < 1:
        raise DatasetError(f"workers must be >= 1, got {workers!r}")
    if (root / DATASET_FILE).exists():
        raise DatasetError(f"{root} already holds a dataset")
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), int(seed), i, split, cfg, resume) for i in range(n_frames)]
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    if workers == 1 and n_frames <= WORKER_MAX_FRAMES:
        it: Iterable[dict[str, Any]] = map(_worker, jobs)
        records = _collect(it, n_frames, progress)
    else:
        # fork: no re-import of __main__ (works from scripts, stdin and tests); every worker
        # drops an inherited physics client and connects its own
        # workers are replaced every WORKER_MAX_FRAMES frames: pybullet keeps memory of every
        # scene it rendered (about 16 MB a cluttered frame, measured), which resetSimulation
        # does not return
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers, initializer=reset_worker_state, maxtasksperchild=WORKER_MAX_FRAMES) as pool:
            records = _collect(pool.imap(_worker, jobs), n_frames, progress)
    wall = time.perf_counter() - t0
    frames = [r["truth"] for r in records]
    secs = np.array([r["seconds"] for r in records], dtype=np.float64)
    doc = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "split": split,
        "seed": int(seed),
        "generator": cfg.to_json(),
        "ycb_available": bool(ms.ycb_names()),
        "num_frames": len(frames),
        "num_objects": sum(len(f["objects"]) for f in frames),
        "statistics": split_statistics(frames),
        "frames": frames,
    }
    (root / DATASET_FILE).write_text(json.dumps(doc, indent=1))
    summary = {
        "frames": len(frames),
        "objects": doc["num_objects"],
        "wall_s": round(wall, 3),
        "fps": round(len(frames) / wall, 3) if wall > 0 else 0.0,
        "workers": workers,
        "per_frame_s_median": round(float(np.nanmedian(secs)), 3) if np.isfinite(secs).any() else None,
        "reused_frames": int(np.isnan(secs).sum()),
        "statistics": doc["statistics"],
    }
    logger.info("generated %s", summary)
    return summary


#: Frames a generator worker process renders before it is replaced (bounds its memory).
WORKER_MAX_FRAMES = 40
#: Objects with fewer visible pixels are not scored (the node's default min_mask_pixels).
SCORED_MIN_VISIBLE_PIXELS = 50


def split_statistics(
    frames: Sequence[dict[str, Any]], min_visible_pixels: int = SCORED_MIN_VISIBLE_PIXELS
) -> dict[str, Any]:
    """Clutter statistics of a split from its ``frame.json`` records: of the objects with at
    least ``min_visible_pixels`` visible pixels (those evaluation scores), the shares under
    0.6 and 0.35 visible, not touching the table and cut by the border, each compared with
    :data:`~sam3d_ros.sim.generator.TARGET_SHARES`; counts per scene layout and sensor."""
    scored = []
    for f in frames:
        for o in f["objects"]:
            if int(o["visible_pixels"]) >= min_visible_pixels:
                scored.append((f, ObjectTruth.from_json(o)))
    n = len(scored)

    def share(pred: Any) -> float:
        return round(sum(1 for f, o in scored if pred(f, o)) / n, 4) if n else 0.0

    shares = {
        "visible<0.6": share(lambda f, o: o.visible_fraction < 0.6),
        "visible<0.35": share(lambda f, o: o.visible_fraction < 0.35),
        "not_on_table": share(lambda f, o: not o.on_table),
        "cut_by_border": share(lambda f, o: o.cut_by_border),
    }
    by: dict[str, dict[str, int]] = {"scene": {}, "sensor": {}}
    for f, _ in scored:
        for key in by:
            name = str(f.get(key, "")) or "legacy"
            by[key][name] = by[key].get(name, 0) + 1
    return {
        "objects": sum(len(f["objects"]) for f in frames),
        "scored_objects": n,
        "min_visible_pixels": int(min_visible_pixels),
        "shares": shares,
        "targets": dict(TARGET_SHARES),
        "targets_met": all(shares[k] >= v for k, v in TARGET_SHARES.items()),
        "scored_by_scene": dict(sorted(by["scene"].items())),
        "scored_by_sensor": dict(sorted(by["sensor"].items())),
    }


def _collect(it: Iterable[dict[str, Any]], total: int, progress: bool) -> list[dict[str, Any]]:
    """The worker records, with a progress bar (see :func:`~sam3d_ros._progress.progress_bar`)."""
    out = []
    with progress_bar(enabled=progress, total=total, desc="generate", unit="frame") as bar:
        for rec in it:
            out.append(rec)
            bar.update()
    return out


# --------------------------------------------------------------------------- loading


class Dataset:
    """A generated dataset (directory with ``dataset.json``) or an exported bag (directory
    with ``mesh_ground_truth.json``), opened by :func:`load_dataset`.

    Attributes:
        root: the directory. split, seed: as generated (split may be "").
        frames: ground truth per frame, in stamp order.
        meshes_dir: where ``procedural:`` meshes live.
        is_bag: True for an exported bag (images come from the bag's messages).
    """

    def __init__(self, root: Path, doc: dict[str, Any], is_bag: bool) -> None:
        self.root = root
        self.doc = doc
        self.is_bag = is_bag
        self.split = str(doc.get("split", ""))
        self.seed = int(doc.get("seed", -1))
        try:
            self.frames: list[FrameTruth] = sorted(
                (FrameTruth.from_json(f) for f in doc["frames"]), key=lambda f: f.stamp_ns
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"{root}: malformed frame record: {err!r}") from err
        self.meshes_dir = root / MESHES_DIR
        self._bag_frames: dict[int, RGBDFrame] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[FrameTruth]:
        return iter(self.frames)

    def by_stamp(self) -> dict[int, FrameTruth]:
        """Frames keyed by ``stamp_ns``."""
        return {f.stamp_ns: f for f in self.frames}

    def rgbd(self, frame: FrameTruth) -> RGBDFrame:
        """The input frame: RGB (H, W, 3) uint8, depth float32 m (NaN invalid), labels int32."""
        if self.is_bag:
            if self._bag_frames is None:
                self._bag_frames = {f.stamp_ns: f for f in read_frames(self.root)}
            try:
                return self._bag_frames[frame.stamp_ns]
            except KeyError as err:
                raise DatasetError(f"{self.root}: no messages for stamp {frame.stamp_ns}") from err
        d = self.root / frame.directory
        try:
            rgb = np.asarray(Image.open(d / "rgb.png").convert("RGB"), dtype=np.uint8)
            depth = mm_to_depth(np.asarray(Image.open(d / "depth.png"), dtype=np.uint16))
            labels = np.asarray(Image.open(d / "labels.png"), dtype=np.int32)
        except (OSError, ValueError) as err:
            raise DatasetError(f"cannot read images of {d}: {err}") from err
        return RGBDFrame(
            stamp_ns=frame.stamp_ns,
            frame_id=SIM_FRAME_ID,
            rgb=rgb,
            depth=depth,
            labels=labels,
            camera=frame.camera,
            scores={o.label: 1.0 for o in frame.objects},
        )

    def amodal_mask(self, frame: FrameTruth, obj: ObjectTruth) -> NDArray[np.bool_]:
        """(H, W) bool amodal mask of ``obj`` (dataset directories only)."""
        if self.is_bag or not obj.amodal_mask:
            raise DatasetError(f"{self.root}: no amodal masks stored for label {obj.label}")
        path = self.root / frame.directory / obj.amodal_mask
        try:
            return np.asarray(Image.open(path), dtype=np.uint8) > 127
        except OSError as err:
            raise DatasetError(f"cannot read {path}: {err}") from err

    def object_mesh(self, obj: ObjectTruth, frame: str = "object") -> trimesh.Trimesh:
        """The object's mesh in its object frame (``frame="object"``) or posed in the
        camera optical frame (``frame="camera"``), metres."""
        mesh = ms.resolve_mesh(obj.mesh_ref, obj.scale, self.meshes_dir)
        if frame == "camera":
            mesh.vertices = transform_points(obj.camera_T_object, np.asarray(mesh.vertices))
        elif frame != "object":
            raise DatasetError(f"unknown frame {frame!r}; expected 'object' or 'camera'")
        return mesh


def load_dataset(path: str | Path) -> Dataset:
    """Open a dataset directory (``dataset.json``) or an exported bag
    (``mesh_ground_truth.json``)."""
    root = Path(path)
    for name, fmt, is_bag in (
        (DATASET_FILE, DATASET_FORMAT, False),
        (BAG_GROUND_TRUTH_FILE, BAG_GROUND_TRUTH_FORMAT, True),
    ):
        f = root / name
        if f.is_file():
            try:
                doc = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise DatasetError(f"cannot read {f}: {err}") from err
            if doc.get("format") != fmt:
                raise DatasetError(f"{f}: format {doc.get('format')!r} is not {fmt!r}")
            if int(doc.get("version", -1)) not in SUPPORTED_VERSIONS:
                raise DatasetError(f"{f}: unsupported version {doc.get('version')!r}")
            return Dataset(root, doc, is_bag)
    raise DatasetError(f"{root} holds neither {DATASET_FILE} nor {BAG_GROUND_TRUTH_FILE}")


def resolve_mesh(ref: str, scale: float = 1.0, dataset: Dataset | Path | None = None) -> trimesh.Trimesh:
    """The object-frame mesh of a mesh reference (see :mod:`sam3d_ros.sim.mesh_sources`);
    ``dataset`` (a :class:`Dataset` or its root) locates ``procedural:`` files."""
    meshes = None
    if isinstance(dataset, Dataset):
        meshes = dataset.meshes_dir
    elif dataset is not None:
        meshes = Path(dataset) / MESHES_DIR
    return ms.resolve_mesh(ref, scale, meshes)


# --------------------------------------------------------------------------- bag export


def export_bag(
    dataset: Dataset,
    bag: str | Path,
    storage: Storage = "mcap",
    *,
    frames: Sequence[FrameTruth] | None = None,
) -> Path:
    """Write ``frames`` (default: all) of a dataset to a new rosbag2 directory on the
    default topics (see :mod:`sam3d_ros.sim.bag`), with ``mesh_ground_truth.json`` and the
    procedural meshes it references in ``meshes/``.

    Returns:
        The bag directory.
    """
    out = Path(bag)
    chosen = list(dataset.frames if frames is None else frames)
    if not chosen:
        raise DatasetError("no frames to export")
    count = write_rgbd_frames(out, (dataset.rgbd(f) for f in chosen), storage)
    (out / MESHES_DIR).mkdir(exist_ok=True)
    for f in chosen:
        for o in f.objects:
            source, rest = ms.split_ref(o.mesh_ref)
            src = dataset.meshes_dir / rest
            if source == "procedural" and src.is_file() and not (out / MESHES_DIR / rest).exists():
                shutil.copyfile(src, out / MESHES_DIR / rest)
    doc = {
        "format": BAG_GROUND_TRUTH_FORMAT,
        "version": DATASET_VERSION,
        "split": dataset.split,
        "seed": dataset.seed,
        "source_dataset": str(dataset.root),
        "frames": [f.to_json() for f in chosen],
    }
    (out / BAG_GROUND_TRUTH_FILE).write_text(json.dumps(doc, indent=1))
    logger.info("exported %d frames of %s to %s (%s)", count, dataset.root, out, storage)
    return out
