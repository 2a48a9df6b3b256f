"""``sam3d-ros gate``: the network's quality gate on a generated dataset (no torch needed).

Scores the exported model with ``sam3d-ros eval``'s code (:mod:`sam3d_ros.tools.eval`) against
the extruded-hull baseline and the geometric backend, per bucket; ``sam3d-ros train
--export-dir`` runs it too (:func:`sam3d_ros.tools.train.export_and_evaluate`).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``sam3d-ros gate``."""
    p.add_argument("dataset", type=Path, help="generated dataset (docs/dataset.md), e.g. the val split")
    p.add_argument("--model-dir", type=Path, default=None, help="model directory (default: the shipped one)")
    p.add_argument("--max-frames", type=int, default=0, help="first N frames (0: all)")
    p.add_argument("--workers", type=int, default=1, help="processes, each scoring every N-th frame")
    p.add_argument(
        "--write-manifest", action="store_true", help="store the result as the manifest's 'validation'"
    )
    p.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        help="also score the weights in this model directory (repeatable), e.g. models/v3",
    )
    p.add_argument("--json", type=Path, default=None, help="write the full per-object report here")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``sam3d-ros gate``: the quality gate of an exported model, measured with
    the current pipeline (re-run it when the pipeline's pre- or post-processing changes);
    exit status 0 when the gate is met."""
    from sam3d_ros.backends.learned import load_manifest, model_dir, write_manifest

    directory = args.model_dir or model_dir()
    result = gate_on_dataset(
        directory, args.dataset, args.max_frames or None, args.workers, args.compare, args.json
    )
    print(
        json.dumps({k: result[k] for k in ("frames", "wall_s", "quality_gate", "versus_geometric")}, indent=1)
    )
    if args.write_manifest:
        manifest = load_manifest(directory)
        manifest["validation"] = result
        write_manifest(directory, manifest)
        print(f"validation stored in {directory}/manifest.json")
    return 0 if result["quality_gate"]["met"] else 1


#: Metrics stored per method and bucket in the manifest.
GATE_METRICS = ("chamfer_l1_mm", "fscore_5mm", "fscore_10mm", "volume_iou", "centre_error_mm")


def gate_on_dataset(
    model_dir: Path,
    dataset_dir: Path,
    max_frames: int | None,
    workers: int = 1,
    compare: Sequence[Path] = (),
    json_path: Path | None = None,
) -> dict:
    """Score the exported model (onnxruntime), the geometric backend, the extruded-hull
    baseline and the models in ``compare`` (``onnxruntime@<dir name>``) on a generated
    dataset with ``sam3d-ros eval``'s code, per bucket (:meth:`MethodReport.buckets`); the
    quality gate: better than the extruded hull in mean Chamfer and F@10 in every bucket;
    ``versus_geometric`` the same test against the geometric backend. Prints the bucket
    table; ``json_path`` receives the full per-object report."""
    import time

    from sam3d_ros.core.config import default_config
    from sam3d_ros.learning.evaluate import quality_gate
    from sam3d_ros.sim.dataset import load_dataset
    from sam3d_ros.tools.eval import evaluate_parallel, format_bucket_table, reports_json

    logging.getLogger("sam3d_ros.core.metrics").setLevel(logging.ERROR)
    cfg = default_config().replace(model_dir=str(model_dir))
    ds = load_dataset(dataset_dir)
    specs = ["extruded_hull", "backend:geometric", "backend:onnxruntime"]
    specs += [f"backend:onnxruntime@{d}" for d in compare]
    t0 = time.perf_counter()
    reports = evaluate_parallel(dataset_dir, specs, cfg, workers, max_frames=max_frames)
    print(format_bucket_table(reports))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps(reports_json(reports, {"dataset": dataset_dir.name}), indent=1) + "\n"
        )
    frames = len(ds.frames) if max_frames is None else min(max_frames, len(ds.frames))
    metrics = {
        name: {
            bucket: {"count": agg.count, **{k: agg.mean[k] for k in GATE_METRICS}}
            for bucket, agg in rep.buckets().items()
        }
        for name, rep in reports.items()
    }
    result: dict = {
        "command": f"sam3d-ros gate <{dataset_dir.name}> --max-frames {frames} --workers {workers}"
        + "".join(f" --compare {d}" for d in compare),
        "dataset": dataset_dir.name,
        "dataset_statistics": ds.doc.get("statistics", {}),
        "split": ds.split,
        "frames": frames,
        "coverage": {name: rep.coverage for name, rep in reports.items()},
        "predict_s": {name: round(rep.predict_s, 1) for name, rep in reports.items()},
        "wall_s": round(time.perf_counter() - t0, 1),
        "metrics": metrics,
    }
    result["quality_gate"] = quality_gate(result, "onnxruntime", ["extruded_hull"])
    result["versus_geometric"] = quality_gate(result, "onnxruntime", ["geometric"])
    return result
