#!/usr/bin/env python3
"""How much the learned backend relies on colour: the same frames scored with their RGB and
with RGB replaced by one flat grey (depth, masks and everything else unchanged).

If the network's accuracy barely moves without colour, the realism of the rendered colour
(TinyRenderer shading, textures, the sensors' colour model) cannot be what limits transfer
to real images; if it moves a lot, colour realism matters. Prints mean / median Chamfer-L1
and F@10 per visible-fraction bucket for both runs.

    source scripts/env.sh
    python scripts/eval_color_ablation.py ~/.cache/sam3d_ros/gen_clutter/val --frames 60 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np

from sam3d_ros.core.config import default_config
from sam3d_ros.sim.dataset import Dataset, load_dataset
from sam3d_ros.tools.eval import EVAL_SAMPLES, MethodReport, evaluate, make_methods, merge_reports

#: The flat grey that replaces every RGB pixel.
GREY = 128


class _GreyDataset:
    """A :class:`Dataset` whose frames have flat grey RGB."""

    def __init__(self, ds: Dataset) -> None:
        self._ds = ds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ds, name)

    def rgbd(self, frame: Any) -> Any:
        f = self._ds.rgbd(frame)
        return dataclasses.replace(f, rgb=np.full_like(f.rgb, GREY))


def _run(job: tuple[str, str, bool, int, int, int]) -> dict[str, MethodReport]:
    root, backend, grey, frames, k, n = job
    ds: Any = load_dataset(root)
    if grey:
        ds = _GreyDataset(ds)
    methods = make_methods([f"backend:{backend}"], default_config())
    return evaluate(ds, methods, max_frames=frames, shard=(k, n), n_samples=EVAL_SAMPLES)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    logging.getLogger("sam3d_ros.core.metrics").setLevel(logging.ERROR)
    out: dict[str, Any] = {}
    for grey in (False, True):
        jobs = [
            (str(args.dataset), args.backend, grey, args.frames, k, args.workers) for k in range(args.workers)
        ]
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            parts = pool.map(_run, jobs)
        rep = merge_reports(parts)[args.backend]
        label = "grey" if grey else "rgb"
        out[label] = {
            b: {
                "count": a.count,
                "chamfer_l1_mm": a.mean["chamfer_l1_mm"],
                "fscore_10mm": a.mean["fscore_10mm"],
            }
            for b, a in rep.buckets().items()
            if b.startswith("visible") or b == "all"
        }
    print("| bucket | objects | CD-L1 mm rgb | grey | F@10 rgb | grey |\n|---|---|---|---|---|---|")
    for b, r in out["rgb"].items():
        g = out["grey"].get(b, {})
        print(
            f"| {b} | {r['count']} | {r['chamfer_l1_mm']:.2f} | {g.get('chamfer_l1_mm', float('nan')):.2f} | "
            f"{r['fscore_10mm']:.3f} | {g.get('fscore_10mm', float('nan')):.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
