"""Camera -> planning-frame transform from tf2 (sam3d_ros/ros/tf.py and the node).

``tf2_ros`` is not installed here: a fake module in ``sys.modules`` stands in for it (a
Buffer whose lookups the test controls, a TransformListener, the exception classes), with
real ``geometry_msgs/TransformStamped`` messages.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import Harness, frame_msgs, namespaced_node, publish_frame, unique_ns, wait_for
from scene_helpers import DT, T0, box, camera, cylinder, rendered

from sam3d_ros.core.config import default_node_config
from sam3d_ros.core.frames import Pose as CorePose
from sam3d_ros.core.frames import transform_points
from sam3d_ros.core.types import SkipReason
from sam3d_ros.ros import tf as tf_mod
from sam3d_ros.ros.node import Sam3dNode

pytestmark = pytest.mark.ros

CAMERA_FRAME = "camera_color_optical_frame"  # the frame_id of ros_helpers' headers


def transform_msg(t: np.ndarray, target: str = "world", source: str = CAMERA_FRAME) -> TransformStamped:
    """``target_T_source`` as a TransformStamped (header.frame_id = target)."""
    p = CorePose.from_matrix(t)
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = target, source
    tr, q = msg.transform.translation, msg.transform.rotation
    tr.x, tr.y, tr.z = p.position
    q.x, q.y, q.z, q.w = p.orientation_xyzw
    return msg


class FakeTf:
    """State shared by the fake ``tf2_ros`` classes: what lookups return, what was asked."""

    def __init__(self) -> None:
        self.transforms: dict[tuple[str, str], TransformStamped] = {}
        self.fail = False
        self.lookups: list[tuple[str, str, int, int, str]] = []  # target, source, ns, timeout ns, thread
        self.listeners: list[Any] = []
        self.cleared = 0
        self.lock = threading.Lock()

    def module(self) -> types.ModuleType:
        state = self
        mod = types.ModuleType("tf2_ros")

        class TransformException(Exception):  # noqa: N818 (the tf2_ros name)
            pass

        class LookupException(TransformException):
            pass

        class Buffer:
            def lookup_transform(self, target: str, source: str, time: Any, timeout: Any) -> TransformStamped:
                with state.lock:
                    state.lookups.append(
                        (
                            target,
                            source,
                            time.nanoseconds,
                            timeout.nanoseconds,
                            threading.current_thread().name,
                        )
                    )
                    msg = state.transforms.get((target, source))
                    if state.fail or msg is None:
                        raise LookupException(f'"{target}" passed to lookupTransform argument target_frame')
                    return msg

            def clear(self) -> None:
                state.cleared += 1

        class TransformListener:
            def __init__(self, buffer: Any, node: Any) -> None:
                self.buffer, self.node, self.unregistered = buffer, node, False
                state.listeners.append(self)

            def unregister(self) -> None:
                self.unregistered = True

        mod.TransformException = TransformException  # type: ignore[attr-defined]
        mod.LookupException = LookupException  # type: ignore[attr-defined]
        mod.Buffer = Buffer  # type: ignore[attr-defined]
        mod.TransformListener = TransformListener  # type: ignore[attr-defined]
        return mod


@pytest.fixture
def fake_tf(monkeypatch: pytest.MonkeyPatch) -> FakeTf:
    state = FakeTf()
    monkeypatch.setitem(sys.modules, "tf2_ros", state.module())
    return state


@pytest.fixture
def no_tf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tf2_ros", None)  # import raises ImportError


class LogRecorder:
    def __init__(self) -> None:
        self.infos: list[str] = []

    def info(self, msg: str) -> None:
        self.infos.append(msg)


class StubNode:
    """Just enough of a node for PlanningFrameSource (its logger)."""

    def __init__(self) -> None:
        self.log = LogRecorder()

    def get_logger(self) -> LogRecorder:
        return self.log


def rot_z90_t123() -> np.ndarray:
    """90 degrees about z, then translation (1, 2, 3) m."""
    t = np.eye(4)
    t[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    t[:3, 3] = (1.0, 2.0, 3.0)
    return t


# ---------------------------------------------------------------------- unit tests
def test_transform_to_matrix_maps_points() -> None:
    msg = TransformStamped()
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = 1.0, 2.0, 3.0
    s = float(np.sqrt(0.5))
    msg.transform.rotation.x, msg.transform.rotation.y = 0.0, 0.0
    msg.transform.rotation.z, msg.transform.rotation.w = s, s  # 90 degrees about z
    m = tf_mod.transform_to_matrix(msg)
    np.testing.assert_allclose(m, rot_z90_t123(), atol=1e-12)
    # camera x axis -> planning y axis, plus the translation
    np.testing.assert_allclose(
        transform_points(m, np.array([[1.0, 0.0, 0.0]])), [[1.0, 3.0, 3.0]], atol=1e-12
    )
    np.testing.assert_allclose(
        transform_points(m, np.array([[0.0, 0.5, 2.0]])), [[0.5, 2.0, 5.0]], atol=1e-12
    )
    # a non-normalised quaternion is normalised; a zero one is rejected
    msg.transform.rotation.z, msg.transform.rotation.w = 2.0 * s, 2.0 * s
    np.testing.assert_allclose(tf_mod.transform_to_matrix(msg), rot_z90_t123(), atol=1e-12)
    msg.transform.rotation.z, msg.transform.rotation.w = 0.0, 0.0
    with pytest.raises(ValueError, match="quaternion"):
        tf_mod.transform_to_matrix(msg)


def test_source_looks_up_at_the_stamp_with_the_timeout(fake_tf: FakeTf) -> None:
    cfg = default_node_config().replace(planning_frame="world", tf_timeout=0.25)
    node = StubNode()
    src = tf_mod.PlanningFrameSource(node, cfg)  # type: ignore[arg-type]
    assert src.uses_tf and len(fake_tf.listeners) == 1 and fake_tf.listeners[0].node is node
    fake_tf.transforms[("world", CAMERA_FRAME)] = transform_msg(rot_z90_t123())
    m = src.fixed_T_camera(cfg, CAMERA_FRAME, T0 + 7)
    assert m is not None
    np.testing.assert_allclose(m, rot_z90_t123(), atol=1e-9)
    assert fake_tf.lookups[-1][:4] == ("world", CAMERA_FRAME, T0 + 7, 250_000_000)
    # planning frame = camera frame: identity, no lookup; empty: the static transform
    n = len(fake_tf.lookups)
    np.testing.assert_array_equal(
        src.fixed_T_camera(cfg.replace(planning_frame=CAMERA_FRAME), CAMERA_FRAME, T0), np.eye(4)
    )
    assert src.fixed_T_camera(cfg.replace(planning_frame=""), CAMERA_FRAME, T0) is None
    assert len(fake_tf.lookups) == n
    # failures: no fallback to the static transform
    fake_tf.fail = True
    with pytest.raises(tf_mod.TfUnavailableError, match="LookupException") as info:
        src.fixed_T_camera(cfg, CAMERA_FRAME, T0 + 8)
    assert info.value.reason is SkipReason.TF_UNAVAILABLE
    fake_tf.fail = False
    fake_tf.transforms[("world", CAMERA_FRAME)].transform.rotation.w = float("nan")
    with pytest.raises(tf_mod.TfUnavailableError, match="non-finite"):
        src.fixed_T_camera(cfg, CAMERA_FRAME, T0 + 9)
    src.clear()
    assert fake_tf.cleared == 1
    src.close()
    assert fake_tf.listeners[0].unregistered and not src.uses_tf
    assert src.fixed_T_camera(cfg, CAMERA_FRAME, T0 + 10) is None


def test_source_without_tf2_uses_the_static_transform_and_logs_once(no_tf: None) -> None:
    cfg = default_node_config().replace(planning_frame="world", camera_to_planning_transform="1 2 3 0 0 0 1")
    node = StubNode()
    src = tf_mod.PlanningFrameSource(node, cfg)  # type: ignore[arg-type]
    assert not src.uses_tf
    for i in range(3):
        assert src.fixed_T_camera(cfg, CAMERA_FRAME, T0 + i) is None
    assert len(node.log.infos) == 1
    assert "tf2_ros is not importable" in node.log.infos[0] and "1 2 3 0 0 0 1" in node.log.infos[0]


def test_use_tf_false_never_creates_a_listener(fake_tf: FakeTf) -> None:
    cfg = default_node_config().replace(planning_frame="world", use_tf=False)
    node = StubNode()
    src = tf_mod.PlanningFrameSource(node, cfg)  # type: ignore[arg-type]
    assert not src.uses_tf and fake_tf.listeners == []
    assert src.fixed_T_camera(cfg, CAMERA_FRAME, T0) is None
    assert len(node.log.infos) == 1 and "use_tf is false" in node.log.infos[0]


# ---------------------------------------------------------------------- the node
class SceneSpy:
    """Records what the node's pipeline was given and returned per frame."""

    def __init__(self, node: Sam3dNode) -> None:
        pipeline = node._pipeline
        assert pipeline is not None
        self.calls: list[tuple[np.ndarray | None, np.ndarray]] = []
        original = pipeline.process_scene

        def spy(frame: Any, fixed_T_camera: Any = None) -> Any:
            update = original(frame, fixed_T_camera)
            self.calls.append((fixed_T_camera, update.fixed_T_camera))
            return update

        pipeline.process_scene = spy  # type: ignore[method-assign]


def start(harness: Harness, ns: str, **params: Any) -> tuple[Sam3dNode, SceneSpy]:
    base = {
        "planning_frame": "world",
        "mesh_resolution": 32,
        "collision_shapes": "hull",
    }
    node: Sam3dNode = namespaced_node(harness, ns, {**base, **params}, remap_topics=("/collision_object",))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    spy = SceneSpy(node)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    return node, spy


def connect(harness: Harness, ns: str) -> dict[str, Any]:
    pubs = harness.publishers(ns)
    assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 10.0)
    return pubs


def send(pubs: dict[str, Any], node: Sam3dNode, objects: list[Any], index: int) -> None:
    """Publish frame ``index`` until the node processed or skipped it (best-effort inputs:
    a resent copy of a received frame is skipped as a duplicate stamp)."""
    snap = node.stats.snapshot()
    before = snap.frames_out + snap.frames_skipped.get(SkipReason.TF_UNAVAILABLE.value, 0)
    msgs = frame_msgs(rendered(objects), T0 + index * DT)

    def handled() -> bool:
        s = node.stats.snapshot()
        return s.frames_out + s.frames_skipped.get(SkipReason.TF_UNAVAILABLE.value, 0) > before

    for _ in range(30):
        publish_frame(pubs, msgs)
        if wait_for(handled, 2.0):
            assert node.wait_idle(10.0)  # published too (stats count first)
            return
    raise AssertionError(f"frame {index} was never handled")


def test_node_poses_collision_objects_with_the_looked_up_transform(
    mm: Any, fake_tf: FakeTf, harness: Harness
) -> None:
    """The static transform is left at identity: only tf gives the right world poses."""
    world_T_camera = camera().world_T_camera
    fake_tf.transforms[("world", CAMERA_FRAME)] = transform_msg(world_T_camera)
    ns = unique_ns()
    node, spy = start(harness, ns, tf_timeout=0.2)
    assert len(fake_tf.listeners) == 1 and fake_tf.listeners[0].node is node
    got = harness.subscribe(
        mm.CollisionObject,
        f"{ns}/collision_object",
        qos=QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
    )
    pubs = connect(harness, ns)
    assert wait_for(lambda: node.count_subscribers(f"{ns}/collision_object") > 0, 10.0)
    send(pubs, node, [box(1, -0.1, 0.0), cylinder(2, 0.1, 0.02)], 0)
    assert node.stats.snapshot().frames_out == 1
    # looked up on the worker thread, at the image stamp, with tf_timeout
    target, source, stamp, timeout_ns, thread = fake_tf.lookups[0]
    assert (target, source, stamp, timeout_ns) == ("world", CAMERA_FRAME, T0, 200_000_000)
    assert thread.startswith("sam3d-reconstruct")
    given, used = spy.calls[0]
    assert given is not None
    np.testing.assert_allclose(given, world_T_camera, atol=1e-6)
    np.testing.assert_allclose(used, world_T_camera, atol=1e-6)
    assert wait_for(lambda: len(got) >= 2, 10.0)
    for co, (x, y) in zip(got[:2], [(-0.1, 0.0), (0.1, 0.02)], strict=True):
        assert co.operation == mm.CollisionObject.ADD and co.header.frame_id == "world"
        p = co.pose.position
        assert abs(p.x - x) < 0.02 and abs(p.y - y) < 0.02 and 0.0 < p.z < 0.15, (co.id, p)
    # cleanup destroys the listener
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert fake_tf.listeners[0].unregistered


def test_failed_lookup_skips_the_frame_and_the_next_one_is_processed(
    fake_tf: FakeTf, harness: Harness
) -> None:
    ns = unique_ns()
    node, spy = start(harness, ns, moveit_enabled=False, camera_to_planning_transform="1 2 3 0 0 0 1")
    pubs = connect(harness, ns)
    objects = [box(1, 0.0, 0.0)]
    fake_tf.fail = True
    send(pubs, node, objects, 0)
    snap = node.stats.snapshot()
    assert snap.frames_skipped.get("tf_unavailable", 0) == 1 and snap.frames_out == 0
    assert spy.calls == []  # not reconstructed with the static transform instead
    assert fake_tf.lookups and fake_tf.lookups[0][2] == T0
    # tf comes back: the next frame is processed with it
    fake_tf.fail = False
    fake_tf.transforms[("world", CAMERA_FRAME)] = transform_msg(rot_z90_t123())
    send(pubs, node, objects, 1)
    snap = node.stats.snapshot()
    assert snap.frames_out == 1 and snap.frames_skipped.get("tf_unavailable", 0) == 1
    given, used = spy.calls[0]
    assert given is not None
    np.testing.assert_allclose(used, rot_z90_t123(), atol=1e-9)
    assert {s for _, _, s, _, _ in fake_tf.lookups} == {T0, T0 + DT}


def test_node_without_tf2_uses_the_static_transform(no_tf: None, harness: Harness) -> None:
    static = "0.5 -0.25 1 0 0 0.7071067811865476 0.7071067811865476"
    ns = unique_ns()
    node, spy = start(harness, ns, moveit_enabled=False, camera_to_planning_transform=static)
    assert node._planning_frames is not None and not node._planning_frames.uses_tf
    pubs = connect(harness, ns)
    send(pubs, node, [box(1, 0.0, 0.0)], 0)
    given, used = spy.calls[0]
    assert given is None
    expected = np.eye(4)
    expected[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    expected[:3, 3] = (0.5, -0.25, 1.0)
    np.testing.assert_allclose(used, expected, atol=1e-9)
