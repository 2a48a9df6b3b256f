"""End-to-end tests of the offline replay (``sam3d_ros.tools.replay`` and ``sam3d-ros replay``).

Bags are written into ``tmp_path``: simulated tabletop frames through
:func:`sam3d_ros.sim.bag.write_bag` (both storages), and, for malformed inputs, bags written
here directly with ``rosbags`` (same topics and encodings: rgb8 Image, 16UC1 mm depth,
CameraInfo, 16UC1 labels, one header stamp per frame).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from sam3d_ros.cli import main as cli_main
from sam3d_ros.core import constants as C
from sam3d_ros.core.config import default_node_config
from sam3d_ros.core.frames import Pose, transform_points
from sam3d_ros.core.metrics import point_to_mesh_distance
from sam3d_ros.core.types import RGBDFrame
from sam3d_ros.sim.bag import depth_to_mm, read_frames, read_ground_truth, write_bag
from sam3d_ros.sim.noise import DepthNoiseConfig
from sam3d_ros.sim.raycast import RenderedFrame
from sam3d_ros.sim.scenes import render_sequence, sequence
from sam3d_ros.tools.bagio import BagError, kilted_typestore
from sam3d_ros.tools.replay import OUT_MARKERS, OUT_OBJECTS, OUT_POSES, replay_bag
from sam3d_ros.tools.report import HtmlReport

N_FRAMES = 3
INPUT_TOPICS = (C.DEFAULT_RGB_TOPIC, C.DEFAULT_DEPTH_TOPIC, C.DEFAULT_INFO_TOPIC, C.DEFAULT_MASK_TOPIC)
RECORD_KEYS = {"stamp_ns", "frame_id", "objects", "skipped", "timings_ms"}
OBJECT_KEYS = {
    "instance_id",
    "track_id",
    "label",
    "score",
    "pose",
    "extents",
    "mesh",
    "collision",
    "visible_fraction",
    "confidence",
    "cut_by_border",
    "support_instance_id",
}
SUMMARY_KEYS = {
    "bag",
    "backend",
    "topics",
    "messages_read",
    "frames_synchronized",
    "frames_processed",
    "frames_skipped",
    "unmatched_messages",
    "messages_received",
    "unmatched",
    "messages_undecodable",
    "objects",
    "objects_skipped",
    "timings_ms",
    "wall_s",
    "throughput_fps",
    "skip_examples",
    "outputs",
}


def load_mesh(path: Path) -> trimesh.Trimesh:
    """A mesh file the replay wrote, as written (no merging or reordering)."""
    return trimesh.load(path, force="mesh", process=False)


@pytest.fixture(scope="module")
def rendered() -> list[RenderedFrame]:
    """Three noisy 320x240 views of one two-object tabletop scene."""
    views = sequence(11, N_FRAMES, 2, width=320, height=240)
    return render_sequence(views, noise=DepthNoiseConfig(), noise_seed=3)


@pytest.fixture
def make_bag(tmp_path: Path, rendered: list[RenderedFrame]) -> Callable[[str], Path]:
    def make(storage: str) -> Path:
        return write_bag(tmp_path / f"bag_{storage}", rendered, storage=storage)  # type: ignore[arg-type]

    return make


def accounting_problems(summary: dict[str, Any]) -> list[str]:
    """Where the summary does not account for every message read (empty when it does)."""
    synced = summary["frames_synchronized"]
    problems = []
    skipped = sum(summary["frames_skipped"].values())
    if synced != summary["frames_processed"] + skipped:
        problems.append(
            f"synchronised {synced} != processed {summary['frames_processed']} + skipped {skipped}"
        )
    for topic, n in summary["messages_received"].items():
        unmatched, bad = summary["unmatched"][topic], summary["messages_undecodable"].get(topic, 0)
        if n != synced + unmatched + bad:
            problems.append(
                f"{topic}: read {n} != synchronised {synced} + unmatched {unmatched} + undecodable {bad}"
            )
    if set(summary["messages_received"]) != set(summary["unmatched"]) or len(summary["unmatched"]) != 3:
        problems.append(f"topics {summary['messages_received']} / {summary['unmatched']}")
    if summary["unmatched_messages"] != sum(summary["unmatched"].values()):
        problems.append("unmatched_messages is not the sum of unmatched")
    return problems


def run_replay(bag: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    """Replay with the default config; the summary must account for every message read."""
    summary = replay_bag(bag, out, default_node_config(), progress=False, **kwargs)
    assert not accounting_problems(summary), accounting_problems(summary)
    return summary


def read_records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- custom bags


def write_custom_bag(
    path: Path,
    frames: list[RGBDFrame],
    storage: str = "mcap",
    *,
    topics: tuple[str, ...] = INPUT_TOPICS,
    mutate: Callable[[int, str, Any], Any] | None = None,
    extra_topic: bool = False,
) -> Path:
    """A rosbag2 of ``frames`` on ``topics`` (a subset of the default topics), written with
    rosbags; ``mutate(frame_index, topic, msg)`` may replace a message (None: drop it) before writing."""
    ts = get_typestore(Stores.ROS2_KILTED)
    header_t, time_t = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    image_t, info_t = ts.types["sensor_msgs/msg/Image"], ts.types["sensor_msgs/msg/CameraInfo"]
    roi_t = ts.types["sensor_msgs/msg/RegionOfInterest"]
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]

    def image(header: Any, arr: np.ndarray, encoding: str) -> Any:
        data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        step = arr.shape[1] * arr.dtype.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)
        h, w = arr.shape[:2]
        return image_t(
            header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=step, data=data
        )

    with Writer(path, version=9, storage_plugin=plugin) as writer:
        types = {
            C.DEFAULT_RGB_TOPIC: "sensor_msgs/msg/Image",
            C.DEFAULT_DEPTH_TOPIC: "sensor_msgs/msg/Image",
            C.DEFAULT_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
            C.DEFAULT_MASK_TOPIC: "sensor_msgs/msg/Image",
        }
        conns = {t: writer.add_connection(t, types[t], typestore=ts) for t in topics}
        if extra_topic:
            conns["/chatter"] = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        for i, f in enumerate(frames):
            s = f.stamp_ns
            header = header_t(
                stamp=time_t(sec=s // 1_000_000_000, nanosec=s % 1_000_000_000), frame_id=f.frame_id
            )
            k = f.camera
            msgs = {
                C.DEFAULT_INFO_TOPIC: info_t(
                    header=header,
                    height=k.height,
                    width=k.width,
                    distortion_model="plumb_bob",
                    d=np.zeros(5),
                    k=np.array([k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1], dtype=np.float64),
                    r=np.eye(3).reshape(-1),
                    p=np.array([k.fx, 0, k.cx, 0, 0, k.fy, k.cy, 0, 0, 0, 1, 0], dtype=np.float64),
                    binning_x=0,
                    binning_y=0,
                    roi=roi_t(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
                ),
                C.DEFAULT_RGB_TOPIC: image(header, f.rgb, "rgb8"),
                C.DEFAULT_DEPTH_TOPIC: image(header, depth_to_mm(f.depth).astype("<u2"), "16UC1"),
                C.DEFAULT_MASK_TOPIC: image(header, f.labels.astype("<u2"), "16UC1"),
            }
            for topic in topics:
                msg = msgs[topic] if mutate is None else mutate(i, topic, msgs[topic])
                if msg is None:  # mutate dropped it
                    continue
                writer.write(conns[topic], s, ts.serialize_cdr(msg, types[topic]))
            if extra_topic:
                string_t = ts.types["std_msgs/msg/String"]
                writer.write(
                    conns["/chatter"], s, ts.serialize_cdr(string_t(data="hi"), "std_msgs/msg/String")
                )
    return path


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_replay_outputs_follow_the_contract(
    tmp_path: Path, make_bag: Callable[[str], Path], storage: str
) -> None:
    bag = make_bag(storage)
    out = tmp_path / "out"
    report = HtmlReport(out, max_frames=2)
    summary = run_replay(bag, out, observers=[report])

    # summary.json
    assert set(summary) == SUMMARY_KEYS
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["messages_read"] == 4 * N_FRAMES
    assert summary["frames_synchronized"] == N_FRAMES
    assert summary["frames_processed"] == N_FRAMES
    assert summary["frames_skipped"] == {} and summary["unmatched_messages"] == 0
    assert summary["skip_examples"] == []
    assert summary["throughput_fps"] > 0 and summary["wall_s"] > 0
    assert "total" in summary["timings_ms"]
    assert set(summary["timings_ms"]["total"]) == {"median", "mean", "max"}
    assert summary["outputs"]["results"] == "results.jsonl" and summary["outputs"]["out_bag"] is None

    # results.jsonl
    records = read_records(out)
    bag_frames = {f.stamp_ns: f for f in read_frames(bag)}
    truth = read_ground_truth(bag).by_stamp()
    assert [r["stamp_ns"] for r in records] == sorted(bag_frames)
    assert summary["objects"] == sum(len(r["objects"]) for r in records) > 0
    for rec in records:
        assert set(rec) == RECORD_KEYS
        assert isinstance(rec["stamp_ns"], int) and rec["frame_id"] == "camera_color_optical_frame"
        assert isinstance(rec["skipped"], list)
        assert all(isinstance(v, float) for v in rec["timings_ms"].values()) and "total" in rec["timings_ms"]
        frame = bag_frames[rec["stamp_ns"]]
        instance_ids = set(np.unique(frame.labels).tolist()) - {0}
        assert {o["instance_id"] for o in rec["objects"]} | {
            s["instance_id"] for s in rec["skipped"]
        } == instance_ids
        visible = {o.label: o.visible_fraction for o in truth[rec["stamp_ns"]].objects}
        for obj in rec["objects"]:
            check_object_record(obj, out, frame, visible[obj["instance_id"]])
    # the report observer saw every frame
    assert report.frames_seen == N_FRAMES and (out / "report.html").is_file()


def check_object_record(obj: dict[str, Any], out: Path, frame: RGBDFrame, true_visible: float) -> None:
    """Keys, types and files of one object record; its posed mesh must lie on the observed
    depth points of its instance (most of them when the object is at least half visible: a
    heavily occluded object's completion may legitimately miss an isolated sliver)."""
    assert set(obj) == OBJECT_KEYS
    assert isinstance(obj["instance_id"], int) and isinstance(obj["track_id"], int) and obj["instance_id"] > 0
    assert isinstance(obj["label"], str) and isinstance(obj["score"], float)
    pos, quat = obj["pose"]["position"], obj["pose"]["orientation_xyzw"]
    assert len(pos) == 3 and len(quat) == 4 and math.isclose(float(np.linalg.norm(quat)), 1.0, abs_tol=1e-5)
    assert len(obj["extents"]) == 3 and all(0.0 < e < 1.0 for e in obj["extents"])
    assert 0.0 <= obj["visible_fraction"] <= 1.0 and 0.0 <= obj["confidence"] <= 1.0
    col = obj["collision"]
    assert set(col) == {"convex_hull", "convex_parts", "primitives"} and col["convex_parts"] >= 1
    for prim in col["primitives"]:
        assert set(prim) == {"type", "dimensions", "pose_in_object", "fit_error"}
        assert prim["type"] in {"box", "sphere", "cylinder"}
        assert len(prim["dimensions"]) == {"box": 3, "sphere": 1, "cylinder": 2}[prim["type"]]
    assert obj["mesh"] == f"meshes/{frame.stamp_ns}_{obj['track_id']}.ply"
    assert col["convex_hull"] == f"meshes/{frame.stamp_ns}_{obj['track_id']}_hull.ply"
    mesh = load_mesh(out / obj["mesh"])
    hull = load_mesh(out / col["convex_hull"])
    assert len(mesh.vertices) > 100 and len(mesh.faces) > 100 and len(hull.faces) >= 4
    assert int(mesh.faces.max()) < len(mesh.vertices)
    # extents are the mesh's size in the object frame
    size = mesh.vertices.max(axis=0) - mesh.vertices.min(axis=0)
    np.testing.assert_allclose(size, obj["extents"], atol=2e-3)
    # the pose puts the mesh onto the observed depth points of its instance
    pose = Pose(tuple(pos), tuple(quat))  # type: ignore[arg-type]
    verts_cam = transform_points(pose.matrix(), mesh.vertices)
    vv, uu = np.nonzero((frame.labels == obj["instance_id"]) & np.isfinite(frame.depth))
    points = frame.camera.backproject(uu, vv, frame.depth[vv, uu])
    dist = point_to_mesh_distance(points, (verts_cam, mesh.faces))
    assert np.median(dist) < 0.004, f"median distance {np.median(dist):.4f} m"
    if true_visible >= 0.5:
        assert np.percentile(dist, 90) < 0.01, f"p90 distance {np.percentile(dist, 90):.4f} m"


def test_replay_is_deterministic(tmp_path: Path, make_bag: Callable[[str], Path]) -> None:
    bag = make_bag("mcap")
    run_replay(bag, tmp_path / "a")
    run_replay(bag, tmp_path / "b")
    a, b = read_records(tmp_path / "a"), read_records(tmp_path / "b")
    # timings_ms are wall-clock measurements: everything else must match exactly
    for rec in a + b:
        rec.pop("timings_ms")
    assert a == b
    meshes_a = sorted(p.name for p in (tmp_path / "a" / "meshes").iterdir())
    assert meshes_a == sorted(p.name for p in (tmp_path / "b" / "meshes").iterdir()) and meshes_a
    for name in meshes_a:
        assert (tmp_path / "a" / "meshes" / name).read_bytes() == (
            tmp_path / "b" / "meshes" / name
        ).read_bytes()


# --------------------------------------------------------------------------- bad input


def test_missing_topics_fail_at_once_listing_the_bag_topics(
    tmp_path: Path, rendered: list[RenderedFrame]
) -> None:
    frames = [f.to_rgbd_frame() for f in rendered]
    bag = write_custom_bag(
        tmp_path / "partial", frames, topics=(C.DEFAULT_RGB_TOPIC, C.DEFAULT_INFO_TOPIC), extra_topic=True
    )
    out = tmp_path / "out"
    t0 = time.monotonic()
    with pytest.raises(BagError) as info:
        run_replay(bag, out)
    assert time.monotonic() - t0 < 10.0
    msg = str(info.value)
    assert f"missing {C.DEFAULT_DEPTH_TOPIC} (sensor_msgs/msg/Image)" in msg
    assert f"missing {C.DEFAULT_MASK_TOPIC} (sensor_msgs/msg/Image)" in msg
    for topic, msgtype in (
        (C.DEFAULT_RGB_TOPIC, "sensor_msgs/msg/Image"),
        (C.DEFAULT_INFO_TOPIC, "sensor_msgs/msg/CameraInfo"),
        ("/chatter", "std_msgs/msg/String"),
    ):
        assert f"{topic}: {msgtype}" in msg
    assert not (out / "results.jsonl").exists()


def test_missing_bag_is_a_bag_error(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="does not exist"):
        run_replay(tmp_path / "nope", tmp_path / "out")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bad_image_frame_is_skipped_and_counted(
    tmp_path: Path, rendered: list[RenderedFrame], storage: str
) -> None:
    frames = [f.to_rgbd_frame() for f in rendered]
    bad_stamp = frames[1].stamp_ns

    def truncate(i: int, topic: str, msg: Any) -> Any:
        if i == 1 and topic == C.DEFAULT_RGB_TOPIC:
            msg.data = msg.data[:-7]  # wrong data length
        return msg

    bag = write_custom_bag(tmp_path / "bad", frames, storage, mutate=truncate)
    out = tmp_path / "out"
    summary = run_replay(bag, out)
    assert summary["frames_processed"] == N_FRAMES - 1
    assert summary["frames_skipped"] == {"bad_data_length": 1}
    assert summary["skip_examples"][0]["stamp_ns"] == bad_stamp
    assert "data length" in summary["skip_examples"][0]["detail"]
    stamps = [r["stamp_ns"] for r in read_records(out)]
    assert stamps == [f.stamp_ns for f in frames if f.stamp_ns != bad_stamp]
    assert all(r["objects"] for r in read_records(out))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_unmatched_messages_are_counted_by_topic(
    tmp_path: Path, rendered: list[RenderedFrame], storage: str
) -> None:
    frames = [f.to_rgbd_frame() for f in rendered]

    def drop_mask(i: int, topic: str, msg: Any) -> Any:
        return None if i == 1 and topic == C.DEFAULT_MASK_TOPIC else msg

    summary = run_replay(
        write_custom_bag(tmp_path / "no_mask", frames, storage, mutate=drop_mask), tmp_path / "o"
    )
    assert summary["frames_processed"] == N_FRAMES - 1 and summary["frames_skipped"] == {}
    assert summary["unmatched"] == {C.DEFAULT_RGB_TOPIC: 1, C.DEFAULT_DEPTH_TOPIC: 1, C.DEFAULT_MASK_TOPIC: 0}
    assert summary["messages_received"][C.DEFAULT_MASK_TOPIC] == N_FRAMES - 1
    assert summary["unmatched_messages"] == 2


# --------------------------------------------------------------------------- output bag


def _have_messages() -> str | None:
    for mod in ("rclpy", "sam3d_ros.msg"):
        try:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} is not importable (build the package and source install/setup.bash)"
        except (ImportError, ValueError) as err:
            return f"{mod} is not importable: {err}"
    return None


@pytest.mark.ros
@pytest.mark.skipif(_have_messages() is not None, reason=str(_have_messages()))
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_out_bag_holds_inputs_and_outputs(
    tmp_path: Path, make_bag: Callable[[str], Path], storage: str
) -> None:
    bag = make_bag("mcap")
    out_bag = tmp_path / "out_bag"
    summary = run_replay(bag, tmp_path / "out", out_bag=out_bag, out_bag_storage=storage)
    assert summary["outputs"]["out_bag"] == str(out_bag)
    records = read_records(tmp_path / "out")
    with AnyReader([out_bag], default_typestore=kilted_typestore()) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        counts: dict[str, int] = {}
        for c in reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
        assert types[OUT_OBJECTS] == "sam3d_ros/msg/ObjectReconstructionArray"
        assert types[OUT_MARKERS] == "visualization_msgs/msg/MarkerArray"
        assert types[OUT_POSES] == "geometry_msgs/msg/PoseArray"
        for topic in INPUT_TOPICS:
            assert counts[topic] == N_FRAMES
        assert counts[OUT_OBJECTS] == counts[OUT_POSES] == N_FRAMES
        conns = [c for c in reader.connections if c.topic == OUT_OBJECTS]
        for (_c, t, raw), rec in zip(reader.messages(connections=conns), records, strict=True):
            msg = reader.deserialize(raw, "sam3d_ros/msg/ObjectReconstructionArray")
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert stamp == t == rec["stamp_ns"]
            assert [o.track_id for o in msg.objects] == [o["track_id"] for o in rec["objects"]]
            for o, r in zip(msg.objects, rec["objects"], strict=True):
                assert [o.pose.position.x, o.pose.position.y, o.pose.position.z] == pytest.approx(
                    r["pose"]["position"], abs=1e-5
                )
                assert len(o.mesh.vertices) == len(load_mesh(tmp_path / "out" / r["mesh"]).vertices)


# --------------------------------------------------------------------------- CLI


def test_cli_replay_writes_results_and_report(
    tmp_path: Path, make_bag: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bag = make_bag("sqlite3")
    out = tmp_path / "cli_out"
    rc = cli_main(["replay", str(bag), "--out", str(out), "--no-progress", "--report-frames", "2"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert f"{N_FRAMES} frames processed, 0 skipped" in stdout and "report.html" in stdout
    text = (out / "report.html").read_text()
    assert "http://" not in text and "https://" not in text
    assert len(re.findall(r"<section class='frame'", text)) == 2
    assert "data:image/png;base64," in text
    for name in ("results.jsonl", "summary.json"):
        assert (out / name).is_file()


def test_cli_replay_bad_bag_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(["replay", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
