"""Evaluation of reconstruction methods on generated data: one row per method.

A *method* turns one frame into per-instance predictions (:class:`Prediction`: a mesh
posed in the camera optical frame, or a mesh-less point set). Methods are pluggable: the
baselines of :data:`BASELINES`, every pipeline backend (:class:`BackendMethod`, e.g.
``geometric`` or ``onnxruntime``, run through :class:`~sam3d_ros.core.pipeline.FramePipeline`)
and the saved output of a replay (:class:`ResultsMethod`, ``DIR/results.jsonl``).

Scoring (:func:`evaluate`): for every true object with at least ``min_visible_pixels``
visible pixels, :func:`sam3d_ros.core.metrics.evaluate_object` compares the posed
prediction with the true posed mesh (ADD-S without poses, i.e. ``add_s_surface``, since
methods choose their own object frames). Point sets use
:func:`sam3d_ros.core.baselines.score_point_set`. An object a method does not return is
scored by :func:`~sam3d_ros.core.baselines.missing_metrics` (F = IoU = 0, failure; distances
left out) and counted in ``coverage``. Aggregates: mean and median overall and per bucket
(:meth:`MethodReport.buckets`): visible fraction (>= 0.6, 0.35-0.6, < 0.35), stacked on
another object vs on the table, cut by the image border, sensor profile and scene layout.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from sam3d_ros._progress import progress_bar
from sam3d_ros.core.baselines import (
    BaselineError,
    convex_hull_mesh,
    extruded_hull_mesh,
    missing_metrics,
    score_point_set,
)
from sam3d_ros.core.config import PipelineConfig, default_config
from sam3d_ros.core.frames import Pose, transform_points
from sam3d_ros.core.metrics import (
    AggregateMetrics,
    MetricsError,
    ObjectMetrics,
    aggregate,
    aggregate_by_visibility,
    evaluate_object,
)
from sam3d_ros.core.observation import extract_observations
from sam3d_ros.core.support_plane import estimate_support_plane
from sam3d_ros.core.types import ObjectObservation, RGBDFrame, SupportPlane, TriangleMesh
from sam3d_ros.sim.dataset import Dataset, FrameTruth

logger = logging.getLogger(__name__)

#: Defaults of the scorer for evaluation runs (fewer samples than the metric defaults).
EVAL_SAMPLES = 4000
EVAL_IOU_RESOLUTION = 64


class EvalError(RuntimeError):
    """Raised for unusable evaluation inputs (unknown method, unreadable results)."""


@dataclass(frozen=True)
class Prediction:
    """A method's output for one instance: ``mesh`` (camera frame) or ``points`` (N, 3)."""

    instance_id: int
    mesh: TriangleMesh | None = None
    points: NDArray[np.float64] | None = None


class FrameInputs:
    """One frame with lazily computed, shared intermediate results (observations, plane)."""

    def __init__(self, frame: RGBDFrame, truth: FrameTruth, dataset: Dataset, config: PipelineConfig) -> None:
        self.frame = frame
        self.truth = truth
        self.dataset = dataset
        self.config = config
        self._obs: list[ObjectObservation] | None = None
        self._plane: tuple[SupportPlane | None] | None = None

    @property
    def observations(self) -> list[ObjectObservation]:
        """The pipeline's filtered observations (same input as every backend)."""
        if self._obs is None:
            self._obs, _ = extract_observations(self.frame, self.config)
        return self._obs

    @property
    def plane(self) -> SupportPlane | None:
        """The estimated support plane (None when none was found)."""
        if self._plane is None:
            self._plane = (estimate_support_plane(self.frame, self.config),)
        return self._plane[0]


class Method(Protocol):
    """A row of the evaluation table."""

    name: str

    def predict(self, inputs: FrameInputs) -> dict[int, Prediction]: ...


class GroundTruthMethod:
    """The true meshes themselves: proves the scorer (F-score 1, Chamfer ~0)."""

    name = "ground_truth"

    def predict(self, inputs: FrameInputs) -> dict[int, Prediction]:
        out = {}
        for o in inputs.truth.objects:
            m = inputs.dataset.object_mesh(o, "camera")
            out[o.label] = Prediction(o.label, mesh=TriangleMesh(np.asarray(m.vertices), np.asarray(m.faces)))
        return out


class VisiblePointsMethod:
    """The filtered visible points, scored as a point set."""

    name = "visible_points"

    def predict(self, inputs: FrameInputs) -> dict[int, Prediction]:
        return {o.instance_id: Prediction(o.instance_id, points=o.points) for o in inputs.observations}


class _HullMethod:
    name = ""

    def _mesh(self, obs: ObjectObservation, inputs: FrameInputs) -> TriangleMesh:
        raise NotImplementedError

    def predict(self, inputs: FrameInputs) -> dict[int, Prediction]:
        out = {}
        for o in inputs.observations:
            try:
                out[o.instance_id] = Prediction(o.instance_id, mesh=self._mesh(o, inputs))
            except BaselineError as err:
                logger.debug("%s: instance %d: %s", self.name, o.instance_id, err)
        return out


class ConvexHullMethod(_HullMethod):
    """Convex hull of the visible points."""

    name = "convex_hull"

    def _mesh(self, obs: ObjectObservation, inputs: FrameInputs) -> TriangleMesh:
        return convex_hull_mesh(obs.points)


class ExtrudedHullMethod(_HullMethod):
    """Visible points extruded to the estimated support plane, then hulled."""

    name = "extruded_hull"

    def _mesh(self, obs: ObjectObservation, inputs: FrameInputs) -> TriangleMesh:
        return extruded_hull_mesh(obs.points, inputs.plane)


class BackendMethod:
    """A reconstruction backend run through the full :class:`FramePipeline`, one frame at a
    time: the pipeline forgets its tracks before each frame (frames are independent scenes)."""

    def __init__(
        self, backend: str, config: PipelineConfig | None = None, model_dir: str | None = None
    ) -> None:
        from dataclasses import replace

        from sam3d_ros.backends.registry import create_backend
        from sam3d_ros.core.pipeline import FramePipeline

        cfg = replace(config or default_config(), backend=backend)
        self.name = backend
        if model_dir is not None:  # another set of weights, e.g. the previous model
            cfg = replace(cfg, model_dir=str(model_dir))
            self.name = f"{backend}@{Path(model_dir).name}"
        self.pipeline = FramePipeline(cfg, create_backend(cfg))

    def predict(self, inputs: FrameInputs) -> dict[int, Prediction]:
        # generated frames are independent scenes: no track state may carry over from the
        # previous frame (e.g. the surface a track kept, which steers the meshing)
        self.pipeline.reset()
        result = self.pipeline.process(inputs.frame)
        out = {}
        for o in result.objects:
            verts = transform_points(o.pose.matrix(), o.mesh.vertices)
            out[o.instance_id] = Prediction(o.instance_id, mesh=TriangleMesh(verts, o.mesh.faces))
        return out


def read_mesh(path: Path) -> TriangleMesh:
    """The triangle mesh in ``path`` (PLY of any encoding and vertex properties, or any other
    format trimesh reads), unprocessed: the file's vertex order, float64 vertices in the
    file's units, int32 faces.

    Raises:
        EvalError: the file is missing, unreadable, or holds no triangles / faces that index
            past the vertices.
    """
    import trimesh

    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except (ValueError, KeyError, IndexError, OSError) as err:  # trimesh's parse errors
        raise EvalError(f"cannot read mesh {path}: {type(err).__name__}: {err}") from err
    if not isinstance(loaded, trimesh.Trimesh):
        raise EvalError(f"mesh {path} loaded as a {type(loaded).__name__}, not a triangle mesh")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    faces = np.asarray(loaded.faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise EvalError(f"mesh {path} has no triangles (faces {faces.shape}, vertices {vertices.shape})")
    if int(faces.min()) < 0 or int(faces.max()) >= len(vertices):
        raise EvalError(
            f"mesh {path}: face indices {int(faces.min())}..{int(faces.max())} outside "
            f"its {len(vertices)} vertices"
        )
    return TriangleMesh(vertices=vertices, faces=faces.astype(np.int32))


class ResultsMethod:
    """Predictions read from a replay's ``results.jsonl`` (meshes relative to its dir),
    matched to frames by ``stamp_ns``."""

    def __init__(self, results: Path, name: str | None = None) -> None:
        self.name = name or f"results:{results.parent.name}"
        self.by_stamp: dict[int, dict[int, Prediction]] = {}
        try:
            lines = results.read_text().splitlines()
        except OSError as err:
            raise EvalError(f"cannot read results {results}: {err}") from err
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                preds = {}
                for o in rec["objects"]:
                    pose = Pose(
                        position=tuple(float(v) for v in o["pose"]["position"]),  # type: ignore[arg-type]
                        orientation_xyzw=tuple(float(v) for v in o["pose"]["orientation_xyzw"]),  # type: ignore[arg-type]
                    )
                    mesh = read_mesh(results.parent / o["mesh"])
                    verts = transform_points(pose.matrix(), mesh.vertices)
                    preds[int(o["instance_id"])] = Prediction(
                        int(o["instance_id"]), TriangleMesh(verts, mesh.faces)
                    )
                self.by_stamp[int(rec["stamp_ns"])] = preds
            except (KeyError, TypeError, ValueError, OSError, EvalError, json.JSONDecodeError) as err:
                raise EvalError(f"{results}:{n}: bad record: {err!r}") from err

    def predict(self, inputs: FrameInputs) -> dict[int, Prediction]:
        return self.by_stamp.get(inputs.truth.stamp_ns, {})


#: Baselines by name (constructors without arguments).
BASELINES: dict[str, Callable[[], Method]] = {
    "ground_truth": GroundTruthMethod,
    "visible_points": VisiblePointsMethod,
    "convex_hull": ConvexHullMethod,
    "extruded_hull": ExtrudedHullMethod,
}


@dataclass(frozen=True)
class ObjectTags:
    """What a scored object's bucket depends on (from the dataset's ground truth).

    Attributes:
        visible_fraction: visible / amodal pixels on an unbounded image plane.
        on_table: it touches the table (False: it rests only on other objects).
        cut_by_border: part of its silhouette lies outside the image.
        sensor: the frame's sensor profile ("" when unknown).
        scene: the frame's scene layout ("" when unknown).
        frame: the dataset frame's index (-1 when unknown), so a report's objects can be
            matched to the dataset's whatever order the shards scored them in.
    """

    visible_fraction: float
    on_table: bool = True
    cut_by_border: bool = False
    sensor: str = ""
    scene: str = ""
    frame: int = -1


#: Visible-fraction bucket edges: >= 0.6, 0.35-0.6, < 0.35.
VISIBLE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("visible>=0.6", 0.6, math.inf),
    ("visible 0.35-0.6", 0.35, 0.6),
    ("visible<0.35", -math.inf, 0.35),
)


def bucket_names(tags: ObjectTags) -> list[str]:
    """The buckets an object counts in besides "all" (see :meth:`MethodReport.buckets`)."""
    out = [n for n, lo, hi in VISIBLE_BUCKETS if lo <= tags.visible_fraction < hi]
    if tags.visible_fraction < 0.6:
        out.append("visible<0.6")
    out.append("on_table" if tags.on_table else "stacked")
    if tags.cut_by_border:
        out.append("cut_by_border")
    if tags.sensor:
        out.append(f"sensor:{tags.sensor}")
    if tags.scene:
        out.append(f"scene:{tags.scene}")
    return out


@dataclass
class MethodReport:
    """Scores of one method: per-object metrics (with their bucket tags), coverage and timing."""

    name: str
    objects: list[ObjectMetrics] = field(default_factory=list)
    predicted: int = 0
    predict_s: float = 0.0
    score_s: float = 0.0
    tags: list[ObjectTags] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Fraction of evaluated objects the method returned a prediction for."""
        return self.predicted / len(self.objects) if self.objects else math.nan

    def buckets(self) -> dict[str, AggregateMetrics]:
        """Aggregates over "all" objects and each bucket: visible fraction (>= 0.6,
        0.35-0.6, < 0.35, and < 0.6), on the table vs stacked on other objects, cut by the
        image border, per sensor profile and per scene layout (buckets without objects are
        left out). Without tags (reports built by hand) only the visible-fraction split of
        :func:`~sam3d_ros.core.metrics.aggregate_by_visibility` is given."""
        if len(self.tags) != len(self.objects):
            return aggregate_by_visibility(self.objects)
        members: dict[str, list[ObjectMetrics]] = {"all": list(self.objects)}
        for name, _, _ in VISIBLE_BUCKETS:
            members[name] = []
        members["visible<0.6"] = []
        for name in ("on_table", "stacked", "cut_by_border"):
            members[name] = []
        for m, t in zip(self.objects, self.tags, strict=True):
            for name in bucket_names(t):
                members.setdefault(name, []).append(m)
        return {k: aggregate(v) for k, v in sorted(members.items(), key=lambda kv: _bucket_order(kv[0])) if v}


def _bucket_order(name: str) -> tuple[int, str]:
    fixed = ["all", "visible>=0.6", "visible 0.35-0.6", "visible<0.35", "visible<0.6", "on_table", "stacked"]
    fixed.append("cut_by_border")
    if name in fixed:
        return (fixed.index(name), "")
    return (len(fixed) + (0 if name.startswith("sensor:") else 1), name)


def evaluate(
    dataset: Dataset,
    methods: Sequence[Method],
    *,
    split: str | None = None,
    max_frames: int | None = None,
    config: PipelineConfig | None = None,
    n_samples: int = EVAL_SAMPLES,
    iou_resolution: int = EVAL_IOU_RESOLUTION,
    min_visible_pixels: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> dict[str, MethodReport]:
    """Score every method on the dataset's frames (optionally only frames of ``split``,
    at most ``max_frames``; with ``shard = (k, n)`` only every n-th of those, from the k-th).
    ``min_visible_pixels`` defaults to ``config.min_mask_pixels``. With ``progress`` a bar
    over the frames is drawn on stderr when it is a terminal."""
    cfg = config or default_config()
    min_px = cfg.min_mask_pixels if min_visible_pixels is None else int(min_visible_pixels)
    frames = [f for f in dataset.frames if not split or f.extra.get("split", split) == split]
    if max_frames is not None:
        frames = frames[: max(int(max_frames), 0)]
    if shard is not None:
        k, n = shard
        frames = frames[k::n]
    if not frames:
        raise EvalError(f"no frames to evaluate in {dataset.root} (split {split!r})")
    reports = {m.name: MethodReport(m.name) for m in methods}
    desc = "eval" if shard is None or shard[1] <= 1 else f"eval (shard {shard[0] + 1} of {shard[1]})"
    with progress_bar(enabled=progress, total=len(frames), desc=desc, unit="frame") as bar:
        for truth in frames:
            _evaluate_frame(dataset, truth, methods, reports, cfg, min_px, n_samples, iou_resolution)
            bar.update()
    return reports


def _evaluate_frame(
    dataset: Dataset,
    truth: FrameTruth,
    methods: Sequence[Method],
    reports: dict[str, MethodReport],
    cfg: PipelineConfig,
    min_px: int,
    n_samples: int,
    iou_resolution: int,
) -> None:
    """Score every method on one frame, appending to ``reports``."""
    inputs = FrameInputs(dataset.rgbd(truth), truth, dataset, cfg)
    targets = [o for o in truth.objects if o.visible_pixels >= min_px]
    gt_meshes = {o.label: dataset.object_mesh(o, "camera") for o in targets}
    for m in methods:
        rep = reports[m.name]
        t0 = time.perf_counter()
        preds = m.predict(inputs)
        t1 = time.perf_counter()
        for o in targets:
            gt = gt_meshes[o.label]
            p = preds.get(o.label)
            metrics = None
            try:
                if p is not None and p.mesh is not None:
                    metrics = evaluate_object(
                        p.mesh,
                        gt,
                        instance_id=o.label,
                        visible_fraction=o.visible_fraction,
                        n_samples=n_samples,
                        iou_resolution=iou_resolution,
                    )
                elif p is not None and p.points is not None:
                    metrics = score_point_set(
                        p.points,
                        gt,
                        instance_id=o.label,
                        visible_fraction=o.visible_fraction,
                        n_samples=n_samples,
                    )
            except (MetricsError, BaselineError) as err:
                logger.warning("%s: frame %d object %d not scored: %s", m.name, truth.index, o.label, err)
            if metrics is None:
                metrics = missing_metrics(o.label, gt, o.visible_fraction)
            else:
                rep.predicted += 1
            rep.objects.append(metrics)
            rep.tags.append(
                ObjectTags(
                    visible_fraction=o.visible_fraction,
                    on_table=o.on_table,
                    cut_by_border=o.cut_by_border,
                    sensor=str(truth.extra.get("sensor", "")),
                    scene=str(truth.extra.get("scene", "")),
                    frame=int(truth.index),
                )
            )
        rep.predict_s += t1 - t0
        rep.score_s += time.perf_counter() - t1


def check_specs(specs: Sequence[str]) -> None:
    """Raise :class:`EvalError` for an unknown baseline or ``backend:<name>`` (creates nothing)."""
    from sam3d_ros.backends.registry import available_backends

    for spec in specs:
        is_backend = spec.startswith("backend:")
        name = spec.split(":", 1)[1].split("@", 1)[0] if is_backend else spec
        valid = available_backends() if is_backend else sorted(BASELINES)
        if name not in valid:
            raise EvalError(f"unknown {'backend' if is_backend else 'baseline'} {name!r}; valid: {valid}")


def make_methods(specs: Sequence[str], config: PipelineConfig) -> list[Method]:
    """Methods from names: a baseline of :data:`BASELINES`, ``backend:<name>`` or
    ``backend:<name>@<model_dir>`` (a learned backend with other weights, named
    ``<name>@<basename of model_dir>``).

    Raises:
        EvalError: an unknown name (see :func:`check_specs`).
    """
    check_specs(specs)
    out: list[Method] = []
    for spec in specs:
        if spec.startswith("backend:"):
            name, _, model_dir = spec.split(":", 1)[1].partition("@")
            out.append(BackendMethod(name, config, model_dir or None))
        else:
            out.append(BASELINES[spec]())
    return out


def _evaluate_shard(
    job: tuple[Path, tuple[str, ...], PipelineConfig, dict[str, Any], int, int],
) -> dict[str, MethodReport]:
    from sam3d_ros.sim.dataset import load_dataset

    root, specs, config, kwargs, k, n = job
    # one bar: the first shard's (each shard scores about 1/n of the frames)
    kwargs = {**kwargs, "progress": bool(kwargs.get("progress", True)) and k == 0}
    return evaluate(load_dataset(root), make_methods(specs, config), config=config, shard=(k, n), **kwargs)


def evaluate_parallel(
    root: Path, specs: Sequence[str], config: PipelineConfig, workers: int, **kwargs: Any
) -> dict[str, MethodReport]:
    """:func:`evaluate` of the methods ``specs`` (see :func:`make_methods`) on the dataset at
    ``root`` in ``workers`` processes, each building its own methods and scoring every
    ``workers``-th frame; the merged reports hold the same objects as a serial run (in
    another order, so means and medians are equal)."""
    import multiprocessing

    jobs = [(Path(root), tuple(specs), config, kwargs, k, workers) for k in range(workers)]
    if workers <= 1:
        parts = [_evaluate_shard(jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_evaluate_shard, jobs)
    return merge_reports(parts)


def merge_reports(parts: Sequence[dict[str, MethodReport]]) -> dict[str, MethodReport]:
    """The reports of frame shards merged per method (objects, tags, counts and times)."""
    merged: dict[str, MethodReport] = {}
    for part in parts:
        for name, rep in part.items():
            m = merged.setdefault(name, MethodReport(name))
            m.objects.extend(rep.objects)
            m.tags.extend(rep.tags)
            m.predicted += rep.predicted
            m.predict_s += rep.predict_s
            m.score_s += rep.score_s
    return merged


# --------------------------------------------------------------------------- output

#: Table columns: (header, metric field, format, scale).
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("CD-L1 mm", "chamfer_l1_mm", "{:.1f}"),
    ("F@5mm", "fscore_5mm", "{:.3f}"),
    ("F@10mm", "fscore_10mm", "{:.3f}"),
    ("IoU", "volume_iou", "{:.3f}"),
    ("centre mm", "centre_error_mm", "{:.1f}"),
    ("acc mm", "accuracy_mm", "{:.1f}"),
    ("compl mm", "completeness_mm", "{:.1f}"),
)


def _fmt(v: float, f: str) -> str:
    return "nan" if not math.isfinite(v) else f.format(v)


def format_table(reports: dict[str, MethodReport]) -> str:
    """A Markdown table: one row per method and visible-fraction bucket, each cell
    ``mean / median``; ADD-S success is a rate (its mean)."""
    head = (
        ["method", "objects", "bucket", "coverage"] + [c[0] + " (mean/med)" for c in _COLUMNS] + ["ADD-S<0.1"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rep in reports.values():
        for bucket, agg in rep.buckets().items():
            if agg.count == 0:
                continue
            cells = [rep.name, str(agg.count), bucket.replace("visible", "vis"), _fmt(rep.coverage, "{:.2f}")]
            if bucket != "all":
                cells[3] = ""
            for _, key, f in _COLUMNS:
                cells.append(f"{_fmt(agg.mean[key], f)} / {_fmt(agg.median[key], f)}")
            cells.append(_fmt(agg.mean["add_s_success"], "{:.3f}"))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_bucket_table(reports: dict[str, MethodReport], key: str = "chamfer_l1_mm") -> str:
    """A compact Markdown table: one row per bucket, one column per method, each cell the
    mean of ``key`` and the mean F-score@10 mm (``objects`` is the bucket's object count)."""
    names = list(reports)
    per = {n: reports[n].buckets() for n in names}
    buckets: list[str] = []
    for n in names:
        buckets += [b for b in per[n] if b not in buckets]
    head = ["bucket", "objects"] + [f"{n} CD-L1 / F@10" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in buckets:
        count = next((per[n][b].count for n in names if b in per[n]), 0)
        cells = [b, str(count)]
        for n in names:
            agg = per[n].get(b)
            cells.append(
                ""
                if agg is None
                else f"{_fmt(agg.mean[key], '{:.2f}')} / {_fmt(agg.mean['fscore_10mm'], '{:.3f}')}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def reports_json(reports: dict[str, MethodReport], meta: dict[str, Any]) -> dict[str, Any]:
    """JSON document of the reports (NaN written as null)."""
    methods = {}
    for rep in reports.values():
        methods[rep.name] = {
            "objects": len(rep.objects),
            "predicted": rep.predicted,
            "coverage": rep.coverage,
            "predict_s": round(rep.predict_s, 3),
            "score_s": round(rep.score_s, 3),
            "buckets": {k: asdict(a) for k, a in rep.buckets().items()},
            "per_object": [
                {**asdict(m), "tags": asdict(t)} for m, t in zip(rep.objects, rep.tags, strict=True)
            ]
            if len(rep.tags) == len(rep.objects)
            else [asdict(m) for m in rep.objects],
        }
    return _clean({"format": "sam3d_ros/eval", "version": 1, **meta, "methods": methods})


# --------------------------------------------------------------------------- command line


def add_arguments(p: Any) -> None:
    """Arguments of the ``eval`` subcommand (``p`` is an argparse parser)."""
    p.add_argument("dataset", type=Path, help="dataset directory or a bag exported from one")
    p.add_argument(
        "--backend",
        action="append",
        default=None,
        help="pipeline backend to evaluate (repeatable; NAME@MODEL_DIR for other weights, e.g. "
        "onnxruntime@models/v3; default: geometric, none with --results)",
    )
    p.add_argument(
        "--baselines",
        default=None,
        help=f"comma-separated baselines or 'none' (default: all of {','.join(BASELINES)}; none with --results)",
    )
    p.add_argument("--results", type=Path, default=None, help="score a replay's results.jsonl")
    p.add_argument("--split", default=None, help="only frames of this split (default: all)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the full report (per object) here")
    p.add_argument("--params", type=Path, default=None, help="ROS params YAML for the pipeline")
    p.add_argument("--samples", type=int, default=EVAL_SAMPLES, help="surface samples per mesh")
    p.add_argument("--iou-resolution", type=int, default=EVAL_IOU_RESOLUTION, help="IoU voxels per side")
    p.add_argument(
        "--workers", type=int, default=1, help="processes, each scoring every N-th frame (not with --results)"
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none either when stderr is not a terminal)",
    )


def run(args: Any) -> int:
    """Run ``sam3d-ros eval``: print the table, optionally write JSON; 0 on success."""
    import sys

    from sam3d_ros._paths import default_params_file
    from sam3d_ros.core.backend import BackendError
    from sam3d_ros.core.config import ConfigError, config_from_params_file
    from sam3d_ros.sim.dataset import DatasetError, load_dataset

    if not args.verbose:  # non-watertight scans are expected; the table says what matters
        logging.getLogger("sam3d_ros.core.metrics").setLevel(logging.ERROR)
    try:
        config = config_from_params_file(args.params or default_params_file()).pipeline
        dataset = load_dataset(args.dataset)
        default_baselines = "none" if args.results else ",".join(BASELINES)
        specs = [
            n.strip()
            for n in (args.baselines or default_baselines).split(",")
            if n.strip() not in ("", "none")
        ]
        specs += [f"backend:{b}" for b in args.backend or ([] if args.results else ["geometric"])]
        if not specs and args.results is None:
            raise EvalError("nothing to evaluate (no baseline, backend or --results)")
        if args.workers < 1:
            raise EvalError(f"--workers must be >= 1, got {args.workers}")
        options: dict[str, Any] = {
            "split": args.split,
            "max_frames": args.max_frames,
            "n_samples": args.samples,
            "iou_resolution": args.iou_resolution,
            "progress": not args.no_progress,
        }
        t0 = time.perf_counter()
        if args.workers > 1 and args.results is None:
            check_specs(specs)  # fail early; backends are only created in the workers
            reports = evaluate_parallel(args.dataset, specs, config, args.workers, **options)
        else:
            methods = make_methods(specs, config)
            if args.results is not None:
                methods.append(ResultsMethod(args.results))
            reports = evaluate(dataset, methods, config=config, **options)
        wall = time.perf_counter() - t0
    except (EvalError, DatasetError, BackendError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(reports))
    print()
    print(format_bucket_table(reports))
    print(f"\n{len(next(iter(reports.values())).objects)} objects per method, {wall:.1f} s")
    if args.json is not None:
        meta = {
            "dataset": str(args.dataset),
            "split": args.split,
            "max_frames": args.max_frames,
            "samples": args.samples,
            "iou_resolution": args.iou_resolution,
            "wall_s": round(wall, 3),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports_json(reports, meta), indent=1) + "\n")
    return 0
