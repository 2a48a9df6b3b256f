#!/usr/bin/env python3
"""Write the bundled sample bag: a short synthetic tabletop sequence as an mcap rosbag2.

Deterministic: the same arguments always produce the same images, depth, labels and
ground truth. Default output: ``data/sample/tabletop_sample`` (replaced with ``--force``).

Usage: python scripts/make_sample_bag.py [--out DIR] [--seed N] [--frames N] [--objects N]
       [--width W --height H] [--storage mcap|sqlite3] [--no-noise] [--force]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sam3d_ros.sim.bag import write_bag  # noqa: E402
from sam3d_ros.sim.noise import DepthNoiseConfig  # noqa: E402
from sam3d_ros.sim.scenes import render_sequence, sequence  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sample" / "tabletop_sample")
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--objects", type=int, default=4)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--distance", type=float, nargs=2, default=(0.55, 0.8), metavar=("MIN", "MAX"))
    ap.add_argument("--arc-deg", type=float, default=20.0)
    ap.add_argument("--period-ms", type=int, default=200)
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--no-noise", action="store_true", help="write noise-free depth")
    ap.add_argument("--force", action="store_true", help="replace an existing output directory")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    out: Path = args.out
    if out.exists():
        if not args.force:
            print(f"{out} exists; use --force to replace it", file=sys.stderr)
            return 1
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    views = sequence(
        args.seed,
        args.frames,
        args.objects,
        arc_deg=args.arc_deg,
        width=args.width,
        height=args.height,
        distance_range=tuple(args.distance),
        size_range=(0.04, 0.14),
    )
    frames = render_sequence(
        views,
        noise=None if args.no_noise else DepthNoiseConfig(),
        noise_seed=args.seed,
        period_ns=args.period_ms * 1_000_000,
    )
    write_bag(out, frames, storage=args.storage)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    for f in frames:
        vis = ", ".join(f"{o.label}:{o.shape_type} {o.visible_fraction:.2f}" for o in f.objects)
        print(f"  stamp {f.stamp_ns}: visible fractions {vis}")
    print(f"wrote {len(frames)} frames ({args.width}x{args.height}) to {out}: {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
