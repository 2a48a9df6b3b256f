"""MoveIt planning-scene output of sam3d_node, checked field by field against a
moveit_msgs-compatible stand-in built here (test/moveit_msgs_stub/, see moveit_stub.py)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import Harness, frame_msgs, namespaced_node, publish_frame, unique_ns, wait_for
from scene_helpers import DT, T0, box, camera, cylinder, rendered
from std_srvs.srv import Trigger

from sam3d_ros.core.frames import Pose as CorePose
from sam3d_ros.ros import moveit as moveit_mod
from sam3d_ros.ros.node import Sam3dNode

pytestmark = pytest.mark.ros


def pose7(t: np.ndarray) -> str:
    p = CorePose.from_matrix(t)
    return " ".join(f"{v:.9f}" for v in (*p.position, *p.orientation_xyzw))


def start(harness: Harness, ns: str, topic: str, **params: Any) -> Sam3dNode:
    base = {
        "planning_frame": "world",
        "camera_to_planning_transform": pose7(camera().world_T_camera),
        "mesh_resolution": 32,
    }
    remaps = (topic, "/monitored_planning_scene", "/get_planning_scene")
    node: Sam3dNode = namespaced_node(harness, ns, {**base, **params}, remap_topics=remaps)
    node.trigger_configure()
    node.trigger_activate()
    return node


def send(harness_pubs: dict[str, Any], node: Sam3dNode, objects: list[Any], index: int) -> None:
    """Publish one frame and wait until the node processed it (resent while lost: the
    inputs use best-effort QoS; a duplicate of a received frame is skipped by stamp)."""
    done = node.stats.snapshot().frames_out
    msgs = frame_msgs(rendered(objects), T0 + index * DT)
    for _ in range(30):
        publish_frame(harness_pubs, msgs)
        if wait_for(lambda: node.stats.snapshot().frames_out > done, 2.0):
            return
    raise AssertionError(f"frame {index} was never processed")


def check_add(mm: Any, co: Any, oid: str, world_xy: tuple[float, float]) -> None:
    assert co.operation == mm.CollisionObject.ADD and co.id == oid
    assert co.header.frame_id == "world" and co.header.stamp.sec > 0
    p = co.pose.position
    assert abs(p.x - world_xy[0]) < 0.02 and abs(p.y - world_xy[1]) < 0.02 and 0.0 < p.z < 0.15
    q = co.pose.orientation
    assert abs(q.x**2 + q.y**2 + q.z**2 + q.w**2 - 1.0) < 1e-6
    assert co.type.key == "" and co.type.db == ""
    assert len(co.meshes) >= 1 and len(co.mesh_poses) == len(co.meshes)
    for mesh, mp in zip(co.meshes, co.mesh_poses, strict=True):
        assert len(mesh.vertices) >= 4 and len(mesh.triangles) >= 4
        assert mp.orientation.w == 1.0 and mp.position.x == 0.0
        v = np.array([[pt.x, pt.y, pt.z] for pt in mesh.vertices])
        assert np.abs(v).max() < 0.2  # object frame, not world
    assert len(co.primitives) == len(co.primitive_poses) <= 1
    for prim in co.primitives:
        assert prim.type in (1, 2, 3) and all(d > 0 for d in prim.dimensions)
    assert list(co.planes) == [] and list(co.plane_poses) == []
    assert list(co.subframe_names) == [] and list(co.subframe_poses) == []


def test_collision_object_stream_add_move_remove(mm: Any, harness: Harness) -> None:
    ns = unique_ns()
    # shape_change_threshold: single-frame completions of the moved box differ by ~13 % in volume
    node = start(
        harness,
        ns,
        "/collision_object",
        track_max_missed=2,
        shape_change_threshold=0.5,
    )
    got = harness.subscribe(
        mm.CollisionObject,
        f"{ns}/collision_object",
        qos=QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
    )
    pubs = harness.publishers(ns)
    assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 10.0)
    assert wait_for(lambda: node.count_subscribers(f"{ns}/collision_object") > 0, 10.0)
    a, b = box(1, -0.1, 0.0), cylinder(2, 0.1, 0.02)
    send(pubs, node, [a, b], 0)
    assert wait_for(lambda: len(got) >= 2, 10.0)
    check_add(mm, got[0], "sam3d_1", (-0.1, 0.0))
    check_add(mm, got[1], "sam3d_2", (0.1, 0.02))
    send(pubs, node, [a, b], 1)  # nothing changed: nothing sent
    moved = box(1, -0.1, 0.07)
    send(pubs, node, [moved, b], 2)
    assert wait_for(lambda: len(got) >= 3, 10.0)
    mv = got[2]
    assert len(got) == 3, [(c.id, c.operation) for c in got]
    assert mv.operation == mm.CollisionObject.MOVE and mv.id == "sam3d_1" and mv.header.frame_id == "world"
    assert abs(mv.pose.position.y - 0.07) < 0.02 and len(mv.meshes) == 0 and len(mv.primitives) == 0
    send(pubs, node, [moved], 3)
    send(pubs, node, [moved], 4)  # cylinder unseen for track_max_missed frames
    assert wait_for(lambda: len(got) >= 4, 10.0)
    rm = got[3]
    assert rm.operation == mm.CollisionObject.REMOVE and rm.id == "sam3d_2" and len(rm.meshes) == 0
    ops = [c.operation for c in got]
    add, move, remove = mm.CollisionObject.ADD, mm.CollisionObject.MOVE, mm.CollisionObject.REMOVE
    assert ops == [add, add, move, remove], [(c.id, c.operation) for c in got]
    assert node._moveit is not None and node._moveit.current_ids() == ["sam3d_1"]


def test_planning_scene_diffs_late_joiner_upgrade_and_reset(mm: Any, harness: Harness) -> None:
    ns = unique_ns()
    node = start(
        harness,
        ns,
        "/planning_scene",
        moveit_mode="planning_scene",
        moveit_id_prefix="cam_",
        collision_shapes="hull,decomposition,primitive,simplified",
    )
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    got = harness.subscribe(mm.PlanningScene, f"{ns}/planning_scene", qos=qos)
    pubs = harness.publishers(ns)
    assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 10.0)
    assert wait_for(lambda: node.count_subscribers(f"{ns}/planning_scene") > 0, 10.0)
    obj = box(1, 0.0, 0.0, (0.12, 0.05, 0.08))
    send(pubs, node, [obj], 0)
    assert wait_for(lambda: len(got) >= 1, 10.0)
    ps = got[0]
    assert ps.is_diff and ps.robot_state.is_diff and ps.name == ""
    (co,) = ps.world.collision_objects
    check_add(mm, co, "cam_1", (0.0, 0.0))
    n_first = len(co.meshes)  # hull (+ simplified) before the parts are ready
    # frames keep flowing while the decomposition runs; the upgrade is an ADD with parts
    i = 1
    deadline_frames = 200
    while i < deadline_frames and not any(
        len(p.world.collision_objects[0].meshes) > n_first for p in got[1:] if p.world.collision_objects
    ):
        send(pubs, node, [obj], i)
        i += 1
    upgrades = [
        p for p in got[1:] if p.world.collision_objects and len(p.world.collision_objects[0].meshes) > n_first
    ]
    assert upgrades, "no upgrade to convex parts"
    check_add(mm, upgrades[0].world.collision_objects[0], "cam_1", (0.0, 0.0))
    # a late joiner gets the current set at once
    late = harness.subscribe(mm.PlanningScene, f"{ns}/planning_scene", key="late", qos=qos)
    assert wait_for(lambda: len(late) >= 1, 10.0)
    assert [c.id for c in late[-1].world.collision_objects] == ["cam_1"]
    # ~/reset removes everything
    cli = harness.peer.create_client(Trigger, f"{ns}/sam3d_node/reset")
    assert cli.wait_for_service(10.0)
    fut = cli.call_async(Trigger.Request())
    assert wait_for(fut.done, 10.0) and fut.result().success
    assert wait_for(
        lambda: any(
            c.operation == mm.CollisionObject.REMOVE and c.id == "cam_1"
            for p in got
            for c in p.world.collision_objects
        ),
        10.0,
    )


def _attached_scene(mm: Any, ids: dict[str, int], *, diff: bool) -> Any:
    """A PlanningScene as move_group publishes it: ``ids`` maps object id -> operation of its
    AttachedCollisionObject (ADD: attached; REMOVE: detached, in a diff)."""
    ps = mm.PlanningScene(is_diff=diff)
    ps.robot_state.is_diff = diff
    for oid, op in ids.items():
        aco = mm.AttachedCollisionObject(link_name="gripper_link")
        aco.object.id = oid
        aco.object.operation = op
        ps.robot_state.attached_collision_objects.append(aco)
    return ps


def test_attached_objects_are_left_to_moveit_and_resent_on_request(mm: Any, harness: Harness) -> None:
    from moveit_msgs.srv import GetPlanningScene

    ns = unique_ns()
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    attached_in_service = ["sam3d_9"]  # what the stand-in move_group answers

    def get_scene(request: Any, response: Any) -> Any:
        assert request.components.components & mm.PlanningSceneComponents.ROBOT_STATE_ATTACHED_OBJECTS
        response.scene = _attached_scene(
            mm, dict.fromkeys(attached_in_service, mm.CollisionObject.ADD), diff=False
        )
        return response

    harness.peer.create_service(GetPlanningScene, f"{ns}/get_planning_scene", get_scene)
    scene_pub = harness.peer.create_publisher(mm.PlanningScene, f"{ns}/monitored_planning_scene", reliable)
    node = start(harness, ns, "/collision_object", shape_change_threshold=0.5)
    got = harness.subscribe(mm.CollisionObject, f"{ns}/collision_object", qos=reliable)
    pubs = harness.publishers(ns)
    assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 10.0)
    assert wait_for(lambda: scene_pub.get_subscription_count() > 0, 10.0)
    assert wait_for(lambda: node.count_subscribers(f"{ns}/collision_object") > 0, 10.0)
    moveit = node._moveit
    assert moveit is not None
    assert wait_for(lambda: moveit.attached_ids() == {"sam3d_9"}, 10.0)  # from /get_planning_scene

    a = box(1, -0.1, 0.0)
    send(pubs, node, [a], 0)
    assert wait_for(lambda: [c.id for c in got] == ["sam3d_1"], 10.0)
    # a grasp pipeline attaches sam3d_1 to the gripper
    attached_in_service.append("sam3d_1")
    scene_pub.publish(_attached_scene(mm, {"sam3d_1": mm.CollisionObject.ADD}, diff=True))
    assert wait_for(lambda: moveit.attached_ids() == {"sam3d_9", "sam3d_1"}, 10.0)
    # the object moves with the gripper, geometry and pose change: nothing is sent for it
    send(pubs, node, [box(1, -0.1, 0.08, (0.1, 0.06, 0.12))], 1)
    send(pubs, node, [box(1, -0.1, 0.09, (0.1, 0.06, 0.12))], 2)
    cli = harness.peer.create_client(Trigger, f"{ns}/sam3d_node/resend_planning_scene")
    assert cli.wait_for_service(10.0)
    fut = cli.call_async(Trigger.Request())
    assert wait_for(fut.done, 10.0) and fut.result().success
    assert not wait_for(lambda: len(got) > 1, 1.0), [(c.id, c.operation) for c in got]
    # released (detached): the world's object again; a resend on request includes it
    attached_in_service.remove("sam3d_1")
    scene_pub.publish(_attached_scene(mm, {"sam3d_1": mm.CollisionObject.REMOVE}, diff=True))
    assert wait_for(lambda: moveit.attached_ids() == {"sam3d_9"}, 10.0)
    fut = cli.call_async(Trigger.Request())
    assert wait_for(fut.done, 10.0) and fut.result().success
    assert wait_for(lambda: len(got) == 2, 10.0)
    assert got[1].id == "sam3d_1" and got[1].operation == mm.CollisionObject.ADD
    # a full scene replaces the set
    scene_pub.publish(_attached_scene(mm, {}, diff=False))
    assert wait_for(lambda: moveit.attached_ids() == set(), 10.0)


def test_no_periodic_resend(mm: Any, harness: Harness) -> None:
    ns = unique_ns()
    node = start(harness, ns, "/collision_object")
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    got = harness.subscribe(mm.CollisionObject, f"{ns}/collision_object", qos=reliable)
    pubs = harness.publishers(ns)
    assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 10.0)
    assert wait_for(lambda: node.count_subscribers(f"{ns}/collision_object") > 0, 10.0)
    send(pubs, node, [box(1, -0.1, 0.0)], 0)
    assert wait_for(lambda: len(got) == 1, 10.0)
    # the old default re-sent every 5 s; now only new subscribers and requests get the set
    assert not wait_for(lambda: len(got) > 1, 6.0), [(c.id, c.operation) for c in got]


def test_missing_moveit_msgs_is_logged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "moveit_msgs", None)
    monkeypatch.setitem(sys.modules, "moveit_msgs.msg", None)
    monkeypatch.setattr(moveit_mod, "_missing_logged", False)
    assert moveit_mod.load_moveit_msgs() is None
    assert moveit_mod._missing_logged
    assert moveit_mod.load_moveit_msgs() is None


class _Recorder:
    """Stands in for the planning-scene publisher: keeps what is published (one subscriber
    matched, so the first update sends the current set to it, which is empty)."""

    topic_name = "/collision_object"

    def __init__(self) -> None:
        self.msgs: list[Any] = []

    def publish(self, msg: Any) -> None:
        self.msgs.append(msg)

    def get_subscription_count(self) -> int:
        return 1


#: Static cluttered scenes of the validation split (generator seed, frame index) and the
#: frames a static camera sends of each.
STATIC_SCENES = ((7, 2), (7, 4))
STATIC_FRAMES = 30


def test_a_static_camera_adds_each_fused_object_at_most_three_times(
    mm: Any, harness: Harness, ycb: None
) -> None:
    """30 frames of a cluttered scene (a pile, a cluster) from a static camera, the
    sensor's depth noise drawn anew for every frame, through the pipeline with the shipped
    defaults and fusion on into the planning-scene stream: the fused shapes converge, so each
    object is ADDed at most 3 times (the first ADD included) and never MOVEd or REMOVEd."""
    from sam3d_ros.backends.registry import create_backend
    from sam3d_ros.core.config import default_node_config
    from sam3d_ros.core.pipeline import FramePipeline
    from sam3d_ros.sim.generator import GeneratorConfig, generate_frame
    from sam3d_ros.sim.sequences import static_camera_frames

    gen_cfg = GeneratorConfig(
        width=320,
        height=240,
        hd_fraction=0.0,
        border_fraction=0.0,
        scene_weights={"pile": 1.0, "cluster": 1.0, "stack": 1.0, "bin": 1.0},
    )
    cfg = default_node_config().replace(
        moveit_enabled=True, moveit_mode="collision_object", fusion_enabled=True
    )
    for seed, index in STATIC_SCENES:
        g = generate_frame(seed, index, "val", gen_cfg)
        sync = moveit_mod.PlanningSceneSync(harness.peer, cfg)
        recorder = _Recorder()
        real_pub, sync._pub = sync._pub, recorder
        pipe = FramePipeline(cfg.pipeline, create_backend(cfg.pipeline))
        rng = np.random.default_rng(index)
        try:
            for frame in static_camera_frames(g, STATIC_FRAMES, rng, T0, "camera"):
                sync.update(pipe.process_scene(frame), cfg.pipeline.collision_kinds())
        finally:
            pipe.close()
            sync._pub = real_pub
            sync.close()
        ops: dict[str, list[int]] = {}
        for msg in recorder.msgs:
            ops.setdefault(msg.id, []).append(msg.operation)
        assert ops, f"scene {seed}/{index}: nothing reached the planning scene"
        for oid, seq in ops.items():
            assert set(seq) == {mm.CollisionObject.ADD}, (seed, index, oid, seq)
            assert len(seq) <= 3, (seed, index, oid, len(seq))
