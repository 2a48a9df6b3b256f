"""``sam3d-ros train``: build the cached datasets, train (resumable), export, evaluate.

Example (the recipe of the shipped model is recorded in ``models/manifest.json``)::

    sam3d-ros train --run-dir ~/.cache/sam3d_ros/runs/first --export-dir models --eval-frames 40
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``sam3d-ros train`` (defaults from :class:`TrainConfig`)."""
    p.add_argument(
        "--run-dir", type=Path, default=None, help="checkpoints/curves (default: CACHE/runs/default)"
    )
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="datasets and runs (default: ~/.cache/sam3d_ros)"
    )
    p.add_argument(
        "--source", default="raycast", help="training data source (sam3d_ros.learning.data.SOURCES)"
    )
    p.add_argument("--train-frames", type=int, default=1200)
    p.add_argument("--val-frames", type=int, default=80)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-minutes", type=float, default=25.0, help="stop after this wall time (resume later)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint.pt")
    p.add_argument("--export-dir", type=Path, default=None, help="write the ONNX, weights and manifest here")
    p.add_argument(
        "--eval-frames", type=int, default=40, help="held-out test frames for the manifest metrics"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``sam3d-ros train``; returns the exit status."""
    try:
        from sam3d_ros.learning.train import TrainConfig, TrainError, default_cache_dir, train
    except ImportError as err:
        print(f"error: training needs torch (pip install -r requirements/dev.txt): {err}", file=sys.stderr)
        return 2
    logging.getLogger("sam3d_ros").setLevel(logging.INFO)
    cache = args.cache_dir or default_cache_dir()
    run_dir = args.run_dir or cache / "runs" / "default"
    cfg = TrainConfig(
        source=args.source,
        train_frames=args.train_frames,
        val_frames=args.val_frames,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_minutes=args.max_minutes,
        threads=args.threads,
    )
    try:
        record = train(cfg, run_dir, cache, resume=not args.no_resume)
    except TrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: record[k] for k in ("epochs_done", "complete", "train_s", "final_val")}, indent=1))
    if args.export_dir is not None:
        return export_and_evaluate(run_dir, args.export_dir, record, args.eval_frames, args.seed)
    return 0


def export_and_evaluate(run_dir: Path, export_dir: Path, record: dict, eval_frames: int, seed: int) -> int:
    """Export ``run_dir/final.pt`` into ``export_dir``, then evaluate it against the geometric
    backend on held-out frames and store the metrics and the quality gate in the manifest."""
    from sam3d_ros.backends.registry import create_backend
    from sam3d_ros.core.config import default_config
    from sam3d_ros.learning.evaluate import evaluate_backends, quality_gate
    from sam3d_ros.learning.export import export_model, write_manifest
    from sam3d_ros.learning.train import load_weights

    model = load_weights(
        run_dir / "final.pt"
    )  # end of the one-cycle schedule (or where the budget stopped it)
    manifest = export_model(model, export_dir, record)
    if eval_frames > 0:
        from sam3d_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        cfg = default_config()
        backends = {
            "geometric": create_backend(cfg, "geometric"),
            "onnxruntime": OnnxRuntimeBackend(cfg, directory=export_dir),
        }
        result = evaluate_backends(backends, eval_frames, split="test", seed=seed)
        result["quality_gate"] = quality_gate(result, "onnxruntime", ["geometric"])
        manifest["validation"] = result
        write_manifest(export_dir, manifest)
        print(json.dumps(result, indent=1))
    return 0
