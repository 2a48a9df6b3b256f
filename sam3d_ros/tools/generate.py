"""``sam3d-ros generate``: write a synthetic dataset (and optionally a rosbag2 of it)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of the ``generate`` subcommand."""
    from sam3d_ros.sim.splits import SPLITS

    p.add_argument("out", type=Path, help="new dataset directory")
    p.add_argument("--frames", type=int, required=True, help="number of frames (one scene each)")
    p.add_argument("--seed", type=int, default=0, help="run seed (frame i depends on (seed, i) only)")
    p.add_argument("--split", choices=SPLITS, default="val", help="objects of this split only")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument(
        "--resume", action="store_true", help="keep the frames an interrupted run of this command finished"
    )
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument(
        "--no-noise", action="store_true", help="clean depth and colour (no sensor model, legacy intrinsics)"
    )
    p.add_argument(
        "--sensors",
        default=None,
        help="comma-separated sensor profiles drawn per frame (default: all of sam3d_ros.sim.sensors)",
    )
    p.add_argument("--hd-fraction", type=float, default=None, help="share of 1280x720 frames (default 0.2)")
    p.add_argument(
        "--border-fraction", type=float, default=None, help="share of frames with an object cut by the border"
    )
    p.add_argument(
        "--thin-fraction",
        type=float,
        default=None,
        help="share of procedural objects drawn from the thin families (plates, tools; default 0)",
    )
    p.add_argument("--bag", type=Path, default=None, help="also export the dataset to this rosbag2 directory")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="storage of --bag")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (none either when stderr is not a terminal)",
    )


def format_statistics(stats: dict[str, Any]) -> str:
    """Human-readable clutter statistics of a generated split (see ``split_statistics``)."""
    lines = [
        f"scored objects (>= {stats['min_visible_pixels']} visible px): {stats['scored_objects']} "
        f"of {stats['objects']}"
    ]
    for key, target in stats["targets"].items():
        got = stats["shares"][key]
        lines.append(
            f"  {key:<14} {100 * got:5.1f} %  (target >= {100 * target:.0f} %: {'met' if got >= target else 'NOT met'})"
        )
    lines.append("  by scene:  " + ", ".join(f"{k} {v}" for k, v in stats["scored_by_scene"].items()))
    lines.append("  by sensor: " + ", ".join(f"{k} {v}" for k, v in stats["scored_by_sensor"].items()))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Generate; prints a summary line (frames, objects, frames/s) and writes nothing else."""
    from sam3d_ros.sim.bag import BagError
    from sam3d_ros.sim.dataset import DatasetError, export_bag, generate_dataset, load_dataset
    from sam3d_ros.sim.generator import GeneratorConfig, GeneratorError
    from sam3d_ros.sim.noise import DepthNoiseConfig

    try:
        options: dict[str, Any] = {}
        if args.no_noise:
            options.update(noise=DepthNoiseConfig.disabled(), sensors=())
        elif args.sensors is not None:
            options["sensors"] = tuple(n.strip() for n in args.sensors.split(",") if n.strip())
        if args.hd_fraction is not None:
            options["hd_fraction"] = args.hd_fraction
        if args.border_fraction is not None:
            options["border_fraction"] = args.border_fraction
        if args.thin_fraction is not None:
            options["thin_fraction"] = args.thin_fraction
        cfg = GeneratorConfig(width=args.width, height=args.height, **options)
        summary = generate_dataset(
            args.out,
            args.frames,
            args.seed,
            args.split,
            workers=args.workers,
            config=cfg,
            progress=not args.no_progress,
            resume=args.resume,
        )
        stats = summary.pop("statistics")
        print(json.dumps(summary))
        print(format_statistics(stats))
        if args.bag is not None:
            export_bag(load_dataset(args.out), args.bag, args.storage)
            print(f"bag: {args.bag} ({args.storage})")
    except (DatasetError, GeneratorError, BagError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
