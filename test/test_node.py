"""In-process tests of sam3d_node: each test has its own rclpy Context and namespace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseArray
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_helpers import (
    Harness,
    accounting_problems,
    assert_inputs_accounted,
    diagnostic_values,
    frame_msgs,
    image_msg,
    info_msg,
    namespaced_node,
    publish_frame,
    unique_ns,
    wait_for,
)
from sam3d_ros.msg import ObjectReconstructionArray
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.backend import Backend
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.types import SkipReason
from sam3d_ros.ros.node import Sam3dNode
from sam3d_ros.sim.scenes import random_scene

pytestmark = pytest.mark.ros

T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def rendered() -> Any:
    return random_scene(seed=3, n_objects=3, width=320, height=240).render()


class NodeUnderTest:
    def __init__(self, harness: Harness, ns: str, node: Sam3dNode) -> None:
        self.h, self.ns, self.node = harness, ns, node
        self.pubs = harness.publishers(ns)
        self.objects = harness.subscribe(ObjectReconstructionArray, f"{ns}/sam3d_node/objects")
        self.markers = harness.subscribe(MarkerArray, f"{ns}/sam3d_node/markers")
        self.poses = harness.subscribe(PoseArray, f"{ns}/sam3d_node/poses")
        self.diag = harness.subscribe(DiagnosticArray, "/diagnostics", key=f"diag{ns}")

    def wait_connected(self) -> None:
        assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in self.pubs.values()), 10.0)
        assert wait_for(
            lambda: (
                self.objects is not None and self.node.count_subscribers(f"{self.ns}/sam3d_node/objects") > 0
            ),
            10.0,
        )

    def send_info(self, rendered: Any) -> None:
        msg = info_msg(rendered.camera.intrinsics, T0)
        assert wait_for(
            lambda: (
                self.pubs["info"].publish(msg),
                self.node.stream is not None and self.node.stream.latest_camera_info is not None,
            )[1],
            10.0,
            0.05,
        )

    def assert_accounted(self) -> dict[str, str]:
        """/diagnostics accounts for every message the node received."""
        return assert_inputs_accounted(self.diag, self.node)

    def skipped(self, reason: SkipReason) -> int:
        return self.node.stats.snapshot().frames_skipped.get(reason.value, 0)

    def processed(self) -> int:
        return self.node.stats.snapshot().frames_out


def start_node(harness: Harness, ns: str, backend_factory: Any = None, **params: Any) -> Sam3dNode:
    node: Sam3dNode = namespaced_node(
        harness, ns, {"diagnostics_period": 0.2, **params}, backend_factory=backend_factory
    )
    return node


@pytest.fixture
def live(rendered: Any) -> Iterator[NodeUnderTest]:
    harness = Harness()
    ns = unique_ns()
    node = start_node(harness, ns)
    harness.start()
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    nut = NodeUnderTest(harness, ns, node)
    nut.wait_connected()
    nut.send_info(rendered)
    yield nut
    try:
        nut.assert_accounted()
    finally:
        harness.close()


def test_reconstructs_objects_and_keeps_header(live: NodeUnderTest, rendered: Any) -> None:
    stamp = T0 + 123_456_789
    publish_frame(live.pubs, frame_msgs(rendered, stamp))
    assert wait_for(lambda: len(live.objects) >= 1 and len(live.markers) >= 1 and len(live.poses) >= 1)
    out = live.objects[0]
    assert out.header.stamp.sec == stamp // 10**9 and out.header.stamp.nanosec == stamp % 10**9
    assert out.header.frame_id == "camera_color_optical_frame"
    visible = {o.label for o in rendered.objects if o.visible_pixels >= 50}
    assert {o.instance_id for o in out.objects} == visible
    for obj in out.objects:
        assert len(obj.mesh.vertices) > 0 and len(obj.mesh.triangles) > 0
        assert len(obj.convex_parts) >= 1
        assert 0.0 <= obj.visible_fraction <= 1.0 and 0.0 <= obj.confidence <= 1.0
        assert obj.extents.x > 0 and obj.extents.y > 0 and obj.extents.z > 0
        q = obj.pose.orientation
        assert abs(q.x**2 + q.y**2 + q.z**2 + q.w**2 - 1.0) < 1e-6
    poses = live.poses[0]
    assert len(poses.poses) == len(out.objects) and poses.header == out.header
    kinds = {(m.ns, m.type) for m in live.markers[0].markers}
    assert ("sam3d_mesh", Marker.TRIANGLE_LIST) in kinds and ("sam3d_label", Marker.TEXT_VIEW_FACING) in kinds


def test_markers_deleted_when_object_disappears(live: NodeUnderTest, rendered: Any) -> None:
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 1))
    assert wait_for(lambda: len(live.markers) >= 1)
    first_ids = {m.id for m in live.markers[0].markers if m.action == Marker.ADD}
    gone = min(first_ids)
    labels = rendered.labels.copy()
    labels[labels == gone] = 0
    rgb, depth, _, _ = frame_msgs(rendered, T0 + 2)
    mask = image_msg(labels.astype(np.uint16), "16UC1", T0 + 2)
    publish_frame(live.pubs, (rgb, depth, info_msg(rendered.camera.intrinsics, T0 + 2), mask))
    assert wait_for(lambda: len(live.markers) >= 2)
    deletes = {(m.ns, m.id) for m in live.markers[1].markers if m.action == Marker.DELETE}
    assert deletes == {("sam3d_mesh", gone), ("sam3d_label", gone)}


def _bad_frames(rendered: Any, stamp: int) -> list[tuple[SkipReason, tuple[Any, ...]]]:
    rgb, depth, info, mask = frame_msgs(rendered, stamp)
    h, w = rendered.depth.shape
    cases: list[tuple[SkipReason, tuple[Any, ...]]] = []
    small = image_msg(rendered.rgb[: h // 2, : w // 2], "rgb8", stamp)
    cases.append((SkipReason.SIZE_MISMATCH, (small, depth, info, mask)))
    yuv = image_msg(rendered.rgb, "rgb8", stamp)
    yuv.encoding = "yuv422"
    cases.append((SkipReason.UNSUPPORTED_ENCODING, (yuv, depth, info, mask)))
    short = image_msg(rendered.rgb, "rgb8", stamp)
    short.data = bytes(short.data)[:-7]
    cases.append((SkipReason.BAD_DATA_LENGTH, (short, depth, info, mask)))
    zero = image_msg(np.zeros((h, w), np.uint16), "16UC1", stamp)
    cases.append((SkipReason.NO_VALID_DEPTH, (rgb, zero, info, mask)))
    nan_depth = image_msg(np.full((h, w), np.nan, np.float32), "32FC1", stamp)
    cases.append((SkipReason.NO_VALID_DEPTH, (rgb, nan_depth, info, mask)))
    return cases


def test_bad_frames_are_skipped_counted_and_node_keeps_serving(live: NodeUnderTest, rendered: Any) -> None:
    stamp = T0 + 10_000_000
    for case in range(len(_bad_frames(rendered, 0))):
        reason, msgs = _bad_frames(rendered, stamp)[case]
        before = live.skipped(reason)
        n_out = len(live.objects)
        publish_frame(live.pubs, msgs, info=False)
        assert wait_for(lambda r=reason, b=before: live.skipped(r) == b + 1), reason
        stamp += 10_000_000
        publish_frame(live.pubs, frame_msgs(rendered, stamp))  # the next good frame is processed
        assert wait_for(lambda n=n_out: len(live.objects) == n + 1), reason
        stamp += 10_000_000
    assert wait_for(
        lambda: any(
            kv.key == "frames_skipped/bad_data_length"
            for d in live.h.received[f"diag{live.ns}"]
            for s in d.status
            if s.hardware_id == "sam3d_node"
            for kv in s.values
        )
    )


def test_empty_frame_id_is_skipped_counted_and_not_published(live: NodeUnderTest, rendered: Any) -> None:
    rgb, depth, info, mask = frame_msgs(rendered, T0 + 50)
    rgb.header.frame_id = ""
    publish_frame(live.pubs, (rgb, depth, info, mask), info=False)
    assert wait_for(lambda: live.skipped(SkipReason.EMPTY_FRAME_ID) == 1)
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 60), info=False)
    assert wait_for(lambda: live.processed() == 1 and len(live.objects) == 1)
    assert live.objects[0].header.frame_id == "camera_color_optical_frame"


def test_invalid_camera_info_is_skipped(live: NodeUnderTest, rendered: Any) -> None:
    bad = info_msg(rendered.camera.intrinsics, T0)
    bad.k = [0.0] * 9
    assert wait_for(
        lambda: (
            live.pubs["info"].publish(bad),
            live.node.stream.latest_camera_info is bad
            or list(live.node.stream.latest_camera_info.k) == [0.0] * 9,
        )[1]
    )
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 5), info=False)
    assert wait_for(lambda: live.skipped(SkipReason.INVALID_CAMERA_INFO) == 1)
    bad.k = [float("nan")] * 9
    live.pubs["info"].publish(bad)
    assert wait_for(lambda: np.isnan(live.node.stream.latest_camera_info.k[0]))
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 6), info=False)
    assert wait_for(lambda: live.skipped(SkipReason.INVALID_CAMERA_INFO) == 2)


def test_duplicate_and_out_of_order_stamps(live: NodeUnderTest, rendered: Any) -> None:
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 1_000_000_000))
    assert wait_for(lambda: live.processed() == 1)
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 1_000_000_000))
    assert wait_for(lambda: live.skipped(SkipReason.DUPLICATE_STAMP) == 1)
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 900_000_000))
    assert wait_for(lambda: live.skipped(SkipReason.STALE_STAMP) == 1)
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 1_100_000_000))
    assert wait_for(lambda: live.processed() == 2)


def test_stamps_far_from_the_stream_are_skipped_and_do_not_move_the_gate(
    live: NodeUnderTest, rendered: Any
) -> None:
    def deleteall() -> int:
        return sum(m.action == Marker.DELETEALL for a in live.markers for m in a.markers)

    base = T0 + 1_000_000_000
    publish_frame(live.pubs, frame_msgs(rendered, base))
    assert wait_for(lambda: live.processed() == 1)
    publish_frame(live.pubs, frame_msgs(rendered, base + 4_000_000_000))  # one frame 4 s ahead
    assert wait_for(lambda: live.skipped(SkipReason.STAMP_JUMP) == 1)
    publish_frame(live.pubs, frame_msgs(rendered, base + 33_000_000))  # the stream goes on
    assert wait_for(lambda: live.processed() == 2)
    publish_frame(live.pubs, frame_msgs(rendered, 0))  # an unset stamp: not a restart
    assert wait_for(lambda: live.skipped(SkipReason.INVALID_STAMP) == 1)
    ahead = time.time_ns() + 4_000_000_000  # ahead of the node's clock
    publish_frame(live.pubs, frame_msgs(rendered, ahead))
    assert wait_for(lambda: live.skipped(SkipReason.FUTURE_STAMP) == 1)
    publish_frame(live.pubs, frame_msgs(rendered, base + 66_000_000))
    assert wait_for(lambda: live.processed() == 3)
    assert deleteall() == 0  # nothing above reset the tracks
    assert all(m.header.stamp.sec != 0 for m in live.objects)
    # a real restart (time back by 60 s) is recognised by its second frame
    publish_frame(live.pubs, frame_msgs(rendered, base - 60_000_000_000))
    assert wait_for(lambda: live.skipped(SkipReason.STAMP_JUMP) == 2)
    publish_frame(live.pubs, frame_msgs(rendered, base - 60_000_000_000 + 33_000_000))
    assert wait_for(lambda: live.processed() == 4)
    assert wait_for(lambda: deleteall() == 1)
    assert live.skipped(SkipReason.STALE_STAMP) == 0


def test_unmatched_messages_are_counted_by_topic_in_diagnostics(live: NodeUnderTest, rendered: Any) -> None:
    rgb_topic = f"{live.ns}/camera/color/image_raw"
    base = T0 + 3_000_000_000

    def latest() -> dict[str, str]:
        return diagnostic_values(live.diag[-1]) if live.diag else {}

    # colour images without depth or mask: the queue (10) overflows. One at a time, each
    # waited for, so a loaded machine cannot drop any from the subscriber's best-effort history.
    for i in range(12):
        live.pubs["rgb"].publish(frame_msgs(rendered, base + i * 33_000_000)[0])
        assert wait_for(lambda i=i: int(latest().get(f"messages_received/{rgb_topic}", 0)) == i + 1, 10.0), (
            latest()
        )
    values = live.assert_accounted()
    assert int(values[f"messages_received/{rgb_topic}"]) == 12
    assert int(values[f"queued/{rgb_topic}"]) == 10
    assert int(values[f"unmatched/{rgb_topic}"]) == 2
    status = next(st for st in live.diag[-1].status if st.hardware_id == "sam3d_node")
    assert status.level == DiagnosticStatus.WARN and "unmatched" in status.message
    # a complete set is still processed; what is queued becomes unmatched at deactivation
    publish_frame(live.pubs, frame_msgs(rendered, base + 20 * 33_000_000), info=False)
    assert wait_for(lambda: live.processed() == 1)
    assert live.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    values = diagnostic_values(live.node.diagnostics_message())  # (published ones may predate it)
    assert not accounting_problems(values), values
    assert int(values[f"queued/{rgb_topic}"]) == 0
    assert int(values[f"unmatched/{rgb_topic}"]) == int(values[f"messages_received/{rgb_topic}"]) - 1


def test_empty_mask_and_tiny_objects(live: NodeUnderTest, rendered: Any) -> None:
    rgb, depth, info, _ = frame_msgs(rendered, T0 + 7)
    empty = image_msg(np.zeros(rendered.labels.shape, np.uint16), "16UC1", T0 + 7)
    publish_frame(live.pubs, (rgb, depth, info, empty), info=False)
    assert wait_for(lambda: len(live.objects) == 1)
    assert live.objects[0].objects == []
    labels = np.zeros(rendered.labels.shape, np.uint16)
    labels[10:14, 10:14] = 9  # 16 pixels < min_mask_pixels
    rgb, depth, info, _ = frame_msgs(rendered, T0 + 8)
    publish_frame(live.pubs, (rgb, depth, info, image_msg(labels, "16UC1", T0 + 8)), info=False)
    assert wait_for(lambda: live.node.stats.snapshot().objects_skipped.get("too_few_mask_pixels", 0) >= 1)


def test_reset_service(live: NodeUnderTest, rendered: Any) -> None:
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 2_000_000_000))
    assert wait_for(lambda: live.processed() == 1)
    client = live.h.peer.create_client(Trigger, f"{live.ns}/sam3d_node/reset")
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(Trigger.Request())
    assert wait_for(future.done)
    assert future.result().success
    assert wait_for(lambda: any(m.action == Marker.DELETEALL for a in live.markers for m in a.markers))
    # after reset an older stamp is accepted again (stamps forgotten)
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 1_000_000_000))
    assert wait_for(lambda: live.processed() == 2)


#: Seconds SlowBackend sleeps per frame (on top of the geometric reconstruction).
SLOW_BACKEND_DELAY_S = 1.0


class SlowBackend(Backend):
    name = "slow"

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__(config)
        self.inner = create_backend(config, "geometric")

    def reconstruct(self, scene: Any, observations: Any) -> Any:
        time.sleep(SLOW_BACKEND_DELAY_S)
        return self.inner.reconstruct(scene, observations)


def test_latest_frame_wins_when_processing_is_slow(rendered: Any) -> None:
    harness = Harness()
    ns = unique_ns()
    node = start_node(harness, ns, backend_factory=SlowBackend)
    harness.start()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        nut = NodeUnderTest(harness, ns, node)
        nut.wait_connected()
        nut.send_info(rendered)
        t_publish = time.monotonic()
        for i in range(8):
            publish_frame(nut.pubs, frame_msgs(rendered, T0 + i * 33_000_000), info=False)
            assert wait_for(lambda i=i: node.stats.snapshot().frames_in == i + 1, 5.0)
        accept_time = time.monotonic() - t_publish
        # every frame was accepted while reconstructions were still running: an executor
        # that blocked on reconstruction would need at least 7 backend delays for this
        assert accept_time < 7 * SLOW_BACKEND_DELAY_S, accept_time
        assert node.wait_idle(20.0)
        snap = node.stats.snapshot()
        superseded = snap.frames_skipped.get("superseded", 0)
        assert superseded >= 3
        assert snap.frames_out + superseded == 8
        assert wait_for(lambda: len(nut.objects) == snap.frames_out)
        last = nut.objects[-1].header.stamp
        assert last.sec * 10**9 + last.nanosec == T0 + 7 * 33_000_000  # the latest frame was processed
        nut.assert_accounted()
    finally:
        harness.close()


def test_frame_pending_at_deactivation_is_counted_not_active(rendered: Any) -> None:
    harness = Harness()
    ns = unique_ns()
    node = start_node(harness, ns, backend_factory=SlowBackend)
    harness.start()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        nut = NodeUnderTest(harness, ns, node)
        nut.wait_connected()
        nut.send_info(rendered)
        publish_frame(nut.pubs, frame_msgs(rendered, T0 + 1), info=False)
        assert wait_for(lambda: node.stats.snapshot().frames_in == 1, 5.0)
        assert wait_for(lambda: not node._worker.idle() and node._worker._pending is None, 5.0)
        publish_frame(nut.pubs, frame_msgs(rendered, T0 + 2), info=False)  # pending behind it
        assert wait_for(lambda: node.stats.snapshot().frames_in == 2, 5.0)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        snap = node.stats.snapshot()
        assert snap.frames_skipped.get("superseded", 0) == 0, snap.frames_skipped
        assert snap.frames_skipped.get("not_active", 0) == 1, snap.frames_skipped
        assert snap.frames_out == 1  # the frame in flight was finished
        nut.assert_accounted()
    finally:
        harness.close()


def test_configure_fails_cleanly_on_unknown_backend() -> None:
    harness = Harness()
    try:
        node = start_node(harness, unique_ns(), backend="does_not_exist")
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    finally:
        harness.close()


def test_parameters_declared_with_ranges_and_validated(live: NodeUnderTest) -> None:
    node = live.node
    desc = node.describe_parameter("sync_slop")
    assert desc.floating_point_range and desc.floating_point_range[0].to_value == 5.0
    assert node.describe_parameter("backend").read_only
    result = node.set_parameters([Parameter("mesh_resolution", value=2)])[0]
    assert not result.successful
    result = node.set_parameters([Parameter("mesh_resolution", value=32)])[0]
    assert result.successful and node._config is not None and node._config.pipeline.mesh_resolution == 32
    assert node._pipeline is not None and node._pipeline.config is node._config.pipeline


def test_runtime_parameters_take_effect_and_frame_path_ones_are_read_only(
    live: NodeUnderTest, rendered: Any
) -> None:
    """What the frame path, the counters and the MoveIt stream read once is read-only;
    every other parameter takes effect on the next frame."""
    node = live.node
    for name, value in (
        ("sync_slop", 0.2),
        ("sync_queue_size", 3),
        ("stats_window", 5),
        ("moveit_enabled", False),
        ("moveit_mode", "planning_scene"),
        ("moveit_id_prefix", "x_"),
    ):
        assert node.describe_parameter(name).read_only, name
        assert not node.set_parameters([Parameter(name, value=value)])[0].successful, name
    assert node.set_parameters([Parameter("diagnostics_period", value=0.5)])[0].successful
    assert node._diag_timer is not None and node._diag_timer.timer_period_ns == 500_000_000
    assert node.set_parameters([Parameter("marker_alpha", value=0.25)])[0].successful
    publish_frame(live.pubs, frame_msgs(rendered, T0 + 400), info=False)
    assert wait_for(lambda: len(live.markers) >= 1)
    meshes = [m for m in live.markers[-1].markers if m.ns == "sam3d_mesh" and m.action == Marker.ADD]
    assert meshes and all(abs(m.color.a - 0.25) < 1e-6 for m in meshes)


def test_padded_and_big_endian_images_give_the_same_result(live: NodeUnderTest, rendered: Any) -> None:
    rgb, depth, info, mask = frame_msgs(rendered, T0 + 100)
    publish_frame(live.pubs, (rgb, depth, info, mask), info=False)
    assert wait_for(lambda: len(live.objects) == 1)
    # the same frame again, to new tracks (with one track, fusion would merge the two)
    assert live.node._stream is not None
    live.node._stream.request_pipeline_reset()
    depth_mm = np.nan_to_num(rendered.depth * 1000.0, nan=0.0).round().astype(np.uint16)
    stamp = T0 + 200
    odd = (
        image_msg(rendered.rgb, "rgb8", stamp, pad=13),
        image_msg(depth_mm, "16UC1", stamp, bigendian=True, pad=6),
        info,
        image_msg(rendered.labels.astype(np.int32), "32SC1", stamp, bigendian=True, pad=4),
    )
    publish_frame(live.pubs, odd, info=False)
    assert wait_for(lambda: len(live.objects) == 2)
    a, b = live.objects
    assert [o.instance_id for o in a.objects] == [o.instance_id for o in b.objects]
    for oa, ob in zip(a.objects, b.objects, strict=True):
        assert oa.pose == ob.pose and oa.extents == ob.extents


def test_too_few_valid_depth_points(live: NodeUnderTest, rendered: Any) -> None:
    depth = np.nan_to_num(rendered.depth * 1000.0, nan=0.0).round().astype(np.uint16)
    target = rendered.objects[0].label
    depth[rendered.labels == target] = 0  # the object has a mask but no valid depth
    stamp = T0 + 300
    rgb, _, info, mask = frame_msgs(rendered, stamp)
    publish_frame(live.pubs, (rgb, image_msg(depth, "16UC1", stamp), info, mask), info=False)
    assert wait_for(lambda: len(live.objects) == 1)
    assert target not in {o.instance_id for o in live.objects[0].objects}
    assert live.node.stats.snapshot().objects_skipped.get("too_few_depth_points", 0) == 1


def test_missing_camera_info(rendered: Any) -> None:
    harness = Harness()
    ns = unique_ns()
    node = start_node(harness, ns)
    harness.start()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        nut = NodeUnderTest(harness, ns, node)
        nut.wait_connected()
        publish_frame(nut.pubs, frame_msgs(rendered, T0 + 1), info=False)
        assert wait_for(lambda: nut.skipped(SkipReason.MISSING_CAMERA_INFO) == 1)
        nut.send_info(rendered)
        publish_frame(nut.pubs, frame_msgs(rendered, T0 + 2), info=False)
        assert wait_for(lambda: nut.processed() == 1)
        nut.assert_accounted()
    finally:
        harness.close()
