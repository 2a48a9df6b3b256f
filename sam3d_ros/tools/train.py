"""``sam3d-ros train``: build the cached datasets, train (resumable), export, evaluate.

The training and the export are :mod:`sam3d_ros.learning`'s; the quality gate on a generated
dataset is ``sam3d-ros gate``'s (:func:`sam3d_ros.tools.gate.gate_on_dataset`).

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
    p.add_argument(
        "--stop-after-epochs",
        type=int,
        default=0,
        help="stop after N epochs of the --epochs schedule (0: all; rerun without it to continue)",
    )
    p.add_argument("--data-workers", type=int, default=1, help="processes that build the cached datasets")
    p.add_argument(
        "--low-visibility-repeat",
        type=int,
        default=1,
        help="objects less than 60%% visible appear this many times per epoch",
    )
    p.add_argument(
        "--init-weights",
        type=Path,
        default=None,
        help="fine-tune from these weights (a shipped .pt, e.g. models/v3/geometry_layout.pt) instead of random ones",
    )
    p.add_argument(
        "--stage1",
        type=Path,
        default=None,
        help="train the shape stage of a two-stage model: this model directory's network "
        "(e.g. models/v4) is stage 1, whose layout places each object's cube; exported with it",
    )
    p.add_argument(
        "--ship-stage1",
        type=Path,
        default=None,
        help="export with this model directory's layout network as stage 1 instead of --stage1's "
        "(stage 2 stays trained on --stage1's cubes; the manifest records it)",
    )
    p.add_argument(
        "--layout-only",
        action="store_true",
        help="train a two-stage model's stage 1: the layout loss alone, encoder and global heads "
        "only; --export-dir receives a stage-1 model directory (for --stage1/--ship-stage1)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint.pt")
    p.add_argument("--export-dir", type=Path, default=None, help="write the ONNX, weights and manifest here")
    p.add_argument(
        "--eval-frames",
        type=int,
        default=40,
        help="frames for the manifest metrics: ray-cast test frames, or the first N frames of "
        "--gate-dataset (0: all of them)",
    )
    p.add_argument(
        "--no-gate", action="store_true", help="export only; measure with 'sam3d-ros gate' afterwards"
    )
    p.add_argument(
        "--gate-dataset",
        type=Path,
        default=None,
        help="generated dataset (docs/dataset.md) on which the quality gate is measured "
        "(default for 'dataset:<root>' sources: <root>/val)",
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``sam3d-ros train``; returns the exit status."""
    from sam3d_ros.backends.learned import sha256_file

    if args.init_weights and not Path(args.init_weights).is_file():
        print(f"error: --init-weights {args.init_weights} is not a file", file=sys.stderr)
        return 2
    if args.layout_only and (args.stage1 is not None or args.ship_stage1 is not None):
        print("error: --layout-only trains a stage 1; it takes no --stage1/--ship-stage1", file=sys.stderr)
        return 2
    if args.ship_stage1 is not None and args.stage1 is None:
        print(
            "error: --ship-stage1 replaces the stage 1 of a two-stage model: give --stage1", file=sys.stderr
        )
        return 2
    stage1_onnx = ""
    if args.stage1 is not None:
        from sam3d_ros.backends.learned import ModelFileError, stage1_files

        try:
            stage1_onnx = str(stage1_files(Path(args.stage1))[0])
        except ModelFileError as err:
            print(f"error: --stage1: {err}", file=sys.stderr)
            return 2
    if args.ship_stage1 is not None:
        from sam3d_ros.backends.learned import ModelFileError, stage1_files

        try:
            stage1_files(Path(args.ship_stage1))
        except ModelFileError as err:
            print(f"error: --ship-stage1: {err}", file=sys.stderr)
            return 2
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
        data_workers=args.data_workers,
        low_visibility_repeat=args.low_visibility_repeat,
        stop_after_epochs=args.stop_after_epochs,
        init_weights=str(args.init_weights) if args.init_weights else "",
        init_weights_sha256=sha256_file(args.init_weights) if args.init_weights else "",
        stage1_onnx=stage1_onnx,
        stage1_sha256=sha256_file(Path(stage1_onnx)) if stage1_onnx else "",
        layout_only=args.layout_only,
    )
    try:
        record = train(cfg, run_dir, cache, resume=not args.no_resume)
    except TrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: record[k] for k in ("epochs_done", "complete", "train_s", "final_val")}, indent=1))
    if args.export_dir is not None and args.layout_only:
        from sam3d_ros.learning.export import export_layout_model
        from sam3d_ros.learning.train import load_weights

        export_layout_model(load_weights(run_dir / "final.pt"), args.export_dir, record)
        print(f"stage-1 model directory written to {args.export_dir} (no gate: it has no shape stage)")
        return 0
    if args.export_dir is not None:
        gate = None if args.no_gate else args.gate_dataset
        if gate is None and args.source.startswith("dataset:") and not args.no_gate:
            gate = Path(args.source.split(":", 1)[1]).expanduser() / "val"
        eval_frames = 0 if args.no_gate else args.eval_frames  # no gate: export only
        return export_and_evaluate(
            run_dir,
            args.export_dir,
            record,
            eval_frames,
            args.seed,
            gate,
            args.data_workers,
            args.ship_stage1 or args.stage1,
        )
    return 0


def export_and_evaluate(
    run_dir: Path,
    export_dir: Path,
    record: dict,
    eval_frames: int,
    seed: int,
    gate_dataset: Path | None = None,
    workers: int = 1,
    stage1: Path | None = None,
) -> int:
    """Export ``run_dir/final.pt`` (with ``stage1``'s layout network as stage 1 of a
    two-stage model, when given) into ``export_dir``, then evaluate it and store the metrics
    and the quality gate in the manifest: on ``gate_dataset`` (a generated dataset) against
    the extruded-hull baseline and the geometric backend when given, else against the
    geometric backend on ray-cast test frames."""
    from sam3d_ros.backends.registry import create_backend
    from sam3d_ros.core.config import default_config
    from sam3d_ros.learning.evaluate import evaluate_backends, quality_gate
    from sam3d_ros.learning.export import export_model, write_manifest
    from sam3d_ros.learning.train import load_weights
    from sam3d_ros.tools.gate import gate_on_dataset

    model = load_weights(
        run_dir / "final.pt"
    )  # end of the one-cycle schedule (or where the budget stopped it)
    manifest = export_model(model, export_dir, record, stage1=stage1)
    if gate_dataset is not None:
        result = gate_on_dataset(export_dir, gate_dataset, eval_frames or None, workers)
        manifest["validation"] = result
        write_manifest(export_dir, manifest)
        print(json.dumps({k: result[k] for k in ("quality_gate", "versus_geometric")}, indent=1))
        return 0
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
