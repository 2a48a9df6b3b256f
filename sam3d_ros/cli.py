"""``sam3d-ros``: command-line tools (offline replay, the node, dataset tools)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import cast

from sam3d_ros._paths import default_params_file
from sam3d_ros.core import constants as C

logger = logging.getLogger("sam3d_ros.cli")


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a rosbag2 through the pipeline: meshes, poses, results.jsonl, report.html",
        description="Replay a rosbag2 (directory with sqlite3 or mcap storage, or a single .mcap file) "
        "through the same pipeline as the live node. No ROS graph is needed.",
    )
    p.add_argument("bag", type=Path, help="rosbag2 directory or .mcap file")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--params", type=Path, default=None, help="ROS params YAML (default: config/default.yaml)")
    p.add_argument("--backend", default=None, help="override the backend parameter")
    p.add_argument("--rgb-topic", default=C.DEFAULT_RGB_TOPIC)
    p.add_argument("--depth-topic", default=C.DEFAULT_DEPTH_TOPIC)
    p.add_argument("--info-topic", default=C.DEFAULT_INFO_TOPIC)
    p.add_argument("--mask-topic", default=C.DEFAULT_MASK_TOPIC)
    p.add_argument("--out-bag", type=Path, default=None, help="also write a bag with inputs + node outputs")
    p.add_argument("--out-bag-storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--report-frames", type=int, default=12, help="frames shown in the report (evenly spaced)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    from sam3d_ros.core.backend import BackendError
    from sam3d_ros.core.config import ConfigError, config_from_params_file
    from sam3d_ros.tools.bagio import BagError, InputTopics
    from sam3d_ros.tools.replay import FrameObserver, replay_bag

    try:
        config = config_from_params_file(args.params or default_params_file(), backend=args.backend)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    observers: list[FrameObserver] = []
    if not args.no_report:
        from sam3d_ros.tools.report import HtmlReport

        observers.append(HtmlReport(args.out, max_frames=args.report_frames))
    topics = InputTopics(args.rgb_topic, args.depth_topic, args.info_topic, args.mask_topic)
    try:
        summary = replay_bag(
            args.bag,
            args.out,
            config,
            topics=topics,
            out_bag=args.out_bag,
            out_bag_storage=args.out_bag_storage,
            observers=observers,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except (BagError, BackendError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print_replay_summary(args.out)
    skipped = sum(summary["frames_skipped"].values())
    print(
        f"\n{summary['frames_processed']} frames processed, {skipped} skipped "
        f"({summary['frames_skipped'] or 'none'}), {summary['objects']} objects, "
        f"{summary['throughput_fps']} frames/s; results in {args.out}/"
    )
    if not args.no_report:
        print(f"report: {args.out / 'report.html'}")
    return 0


def _print_replay_summary(out: Path) -> None:
    """Per-object table: id, pose, extents, vertices, latency (an unreadable mesh file of the
    replay just written raises trimesh's ValueError)."""
    import trimesh

    print(
        f"{'stamp_ns':>20} {'id':>3} {'position xyz (m)':>26} {'extents xyz (m)':>23} {'verts':>6} {'conf':>5} {'ms':>7}"
    )
    with (out / "results.jsonl").open() as f:
        for line in f:
            rec = json.loads(line)
            total = rec["timings_ms"].get("total", 0.0)
            for obj in rec["objects"]:
                pos = " ".join(f"{v:+.3f}" for v in obj["pose"]["position"])
                ext = " ".join(f"{v:.3f}" for v in obj["extents"])
                mesh = cast("trimesh.Trimesh", trimesh.load(out / obj["mesh"], force="mesh", process=False))
                n_verts = len(mesh.vertices)
                print(
                    f"{rec['stamp_ns']:>20} {obj['track_id']:>3} {pos:>26} {ext:>23} {n_verts:>6} "
                    f"{obj['confidence']:>5.2f} {total:>7.1f}"
                )


def _add_node(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="run sam3d_node (same as python -m sam3d_ros.ros.node)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="--ros-args ... and --no-autostart")
    p.set_defaults(
        func=lambda a: __import__("sam3d_ros.ros.node", fromlist=["main"]).main(["sam3d_node", *a.rest])
    )


def _add_train(sub: argparse._SubParsersAction) -> None:
    """``sam3d-ros train``: the geometry and layout network (needs torch; see sam3d_ros.tools.train)."""
    from sam3d_ros.tools import train

    p = sub.add_parser("train", help="train the geometry/layout network; export ONNX + manifest")
    train.add_arguments(p)
    p.set_defaults(func=train.run)


def _add_gate(sub: argparse._SubParsersAction) -> None:
    """``sam3d-ros gate``: the network's quality gate on a generated dataset (see sam3d_ros.tools.gate)."""
    from sam3d_ros.tools import gate

    p = sub.add_parser("gate", help="measure the network's quality gate on a generated dataset")
    gate.add_arguments(p)
    p.set_defaults(func=gate.run)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    """``sam3d-ros generate``: synthetic RGB-D dataset (see sam3d_ros.tools.generate)."""
    from sam3d_ros.tools import generate

    p = sub.add_parser("generate", help="generate a synthetic tabletop RGB-D dataset (optionally a bag)")
    generate.add_arguments(p)
    p.set_defaults(func=generate.run)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    """``sam3d-ros eval``: score baselines, backends or replay results (see sam3d_ros.tools.eval)."""
    from sam3d_ros.tools import eval as evaluation

    p = sub.add_parser("eval", help="score reconstructions on a generated dataset: one row per method")
    evaluation.add_arguments(p)
    p.set_defaults(func=evaluation.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam3d-ros", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_replay(sub)
    _add_node(sub)
    _add_train(sub)
    _add_gate(sub)
    _add_generate(sub)
    _add_eval(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="[%(levelname)s] %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
