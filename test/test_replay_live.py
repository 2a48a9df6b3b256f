"""Replay extras: single .mcap files, flat memory on long bags, and the live path (the node
fed the same bag publishes the same results as the offline replay)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_helpers import Harness, assert_inputs_accounted, unique_ns
from test_replay import accounting_problems

from sam3d_ros.core.config import default_node_config
from sam3d_ros.ros.node import Sam3dNode
from sam3d_ros.sim.bag import write_bag
from sam3d_ros.sim.scenes import sequence
from sam3d_ros.tools.bagio import InputTopics
from sam3d_ros.tools.live_check import compare, play_lockstep
from sam3d_ros.tools.replay import replay_bag

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "tabletop_sample"


def _records(path: Path) -> list[dict[str, Any]]:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for r in recs:
        r.pop("timings_ms")
    return recs


def _bag(tmp_path: Path, n_frames: int, name: str, arc_deg: float = 20.0) -> Path:
    views = sequence(seed=5, n_frames=n_frames, n_objects=2, width=160, height=120, arc_deg=arc_deg)
    frames = [v.render().with_stamp(1_000_000_000 + i * 50_000_000) for i, v in enumerate(views)]
    return write_bag(tmp_path / name, frames, storage="mcap")


def test_single_mcap_file_equals_bag_directory(tmp_path: Path) -> None:
    cfg = default_node_config()
    for summary in (
        replay_bag(SAMPLE, tmp_path / "dir", cfg, progress=False),
        replay_bag(SAMPLE / "tabletop_sample.mcap", tmp_path / "file", cfg, progress=False),
    ):
        assert not accounting_problems(summary), accounting_problems(summary)
    assert _records(tmp_path / "dir" / "results.jsonl") == _records(tmp_path / "file" / "results.jsonl")


@pytest.mark.slow
def test_memory_stays_flat_on_a_ten_times_longer_bag(tmp_path: Path) -> None:
    # a static camera (a bag has no tf here): the tracks' fused volumes keep their size, so
    # what could grow with the bag's length is only what the replay itself keeps
    short, long = _bag(tmp_path, 6, "short", arc_deg=0.0), _bag(tmp_path, 60, "long", arc_deg=0.0)
    cfg = default_node_config()
    peaks = []
    for bag in (short, long):
        tracemalloc.start()
        summary = replay_bag(bag, tmp_path / f"out_{bag.name}", cfg, progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert summary["frames_skipped"] == {}
        assert not accounting_problems(summary), accounting_problems(summary)
    assert summary["frames_processed"] == 60
    print(f"tracemalloc peak: 6 frames {peaks[0] / 1e6:.1f} MB, 60 frames {peaks[1] / 1e6:.1f} MB")
    # a streaming replay's peak does not grow with the bag's length
    assert peaks[1] < peaks[0] * 1.3 + 2_000_000, peaks


@pytest.mark.ros
def test_live_node_gives_the_same_results_as_the_offline_replay(tmp_path: Path) -> None:
    summary = replay_bag(SAMPLE, tmp_path / "offline", default_node_config(), progress=False)
    assert not accounting_problems(summary), accounting_problems(summary)
    offline = [json.loads(line) for line in (tmp_path / "offline" / "results.jsonl").read_text().splitlines()]

    live = _play_into_node(SAMPLE)
    assert len(live) == len(offline) == 6
    assert compare(live, offline) == []


def _timed_bag(tmp_path: Path, camera_info: str, n_frames: int = 3) -> Path:
    views = sequence(seed=7, n_frames=n_frames, n_objects=3, width=160, height=120)
    frames = [v.render().with_stamp(1_000_000_000 + i * 100_000_000) for i, v in enumerate(views)]
    return write_bag(tmp_path / camera_info, frames, storage="mcap", camera_info=camera_info)  # type: ignore[arg-type]


@pytest.mark.parametrize("camera_info", ["after_images", "once"])
def test_replay_processes_every_frame_whatever_the_camera_info_timing(
    tmp_path: Path, camera_info: str
) -> None:
    """A CameraInfo logged a few ms after its images (many recorded bags), or only once at
    the start (a latched driver): every frame is processed, with the same results as a bag
    whose CameraInfo comes first."""
    cfg = default_node_config()
    ref = replay_bag(_timed_bag(tmp_path, "before_images"), tmp_path / "ref", cfg, progress=False)
    out = replay_bag(_timed_bag(tmp_path, camera_info), tmp_path / "out", cfg, progress=False)
    for summary in (ref, out):
        assert summary["frames_processed"] == 3 and summary["frames_skipped"] == {}, summary["frames_skipped"]
        assert not accounting_problems(summary), accounting_problems(summary)
    assert out["objects"] == ref["objects"] > 0
    assert _records(tmp_path / "out" / "results.jsonl") == _records(tmp_path / "ref" / "results.jsonl")


@pytest.mark.ros
@pytest.mark.parametrize("camera_info", ["after_images", "once"])
def test_live_node_processes_every_frame_and_matches_the_replay(tmp_path: Path, camera_info: str) -> None:
    """The node and the replay run the one frame path: on a bag whose CameraInfo comes after
    the images (or once), both process every frame and publish identical results."""
    bag = _timed_bag(tmp_path, camera_info)
    summary = replay_bag(bag, tmp_path / "offline", default_node_config(), progress=False)
    assert summary["frames_processed"] == 3 and summary["frames_skipped"] == {}
    offline = [json.loads(line) for line in (tmp_path / "offline" / "results.jsonl").read_text().splitlines()]
    live = _play_into_node(bag)
    assert len(live) == len(offline) == 3
    assert compare(live, offline) == []


def _play_into_node(bag: Path) -> list[dict[str, Any]]:
    harness = Harness()
    ns = unique_ns()
    topics = InputTopics()
    node = Sam3dNode(
        context=harness.context,
        parameter_overrides=[
            Parameter("rgb_topic", value=ns + topics.rgb),
            Parameter("depth_topic", value=ns + topics.depth),
            Parameter("info_topic", value=ns + topics.info),
            Parameter("mask_topic", value=ns + topics.mask),
        ],
        cli_args=["--ros-args", "-r", f"__ns:={ns}"],
    )
    harness.add_node(node)
    diagnostics = harness.subscribe(DiagnosticArray, "/diagnostics")
    harness.start()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        live = play_lockstep(harness.peer, bag, topics, f"{ns}/sam3d_node", timeout=60.0, prefix=ns)
        assert_inputs_accounted(diagnostics, node)
        assert node.stats.snapshot().frames_skipped.get("missing_camera_info", 0) == 0
    finally:
        harness.close()
    return live
