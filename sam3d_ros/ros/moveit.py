"""Keep MoveIt's planning scene in step with the tracked objects.

When ``moveit_msgs`` is importable, :class:`PlanningSceneSync` publishes
``moveit_msgs/CollisionObject`` on ``/collision_object`` (``moveit_mode:
collision_object``) or ``moveit_msgs/PlanningScene`` diffs on ``/planning_scene``
(``planning_scene``), reliable QoS, ids ``<moveit_id_prefix><track_id>``:

* ADD when a track appears and whenever its collision geometry changes (a new geometry
  version or decomposition parts; MoveIt replaces an object added again under its id);
* MOVE (pose only) when it moved by more than ``track_move_threshold``;
* REMOVE when it vanished (or on ``~/reset``).

Geometry, as selected by ``collision_shapes``: the best accepted primitive
(``primitive``), the convex parts when ready else the hull (``decomposition`` / ``hull``)
and the simplified mesh (``simplified``); never nothing (the hull is the fallback). Poses
are in ``planning_frame`` (the camera frame when empty), shapes relative to the object
pose.

No blind re-sends: late joiners (move_group started after us) get the whole current set as
soon as a new subscriber is matched, and anyone can ask for it again with the
``~/resend_planning_scene`` service (``std_srvs/Trigger``).

Objects held by the robot: a grasp pipeline attaches an object to the robot under our id
(``AttachedCollisionObject``), and MoveIt moves it from the world to the robot. An ADD under
that id would put a second copy back into the world where the gripper holds it, so ids the
planning scene reports as attached are never ADDed, MOVEd or REMOVEd by us (nor re-sent)
until they are detached. The attached ids come from ``/monitored_planning_scene`` (full
scenes and diffs, as move_group publishes them) and, when ``moveit_msgs/srv/GetPlanningScene``
is importable, from ``/get_planning_scene`` (queried whenever the service appears and when
a new planning-scene subscriber is matched).

Without ``moveit_msgs`` it logs once and does nothing.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from sam3d_ros.core import constants as C
from sam3d_ros.core.config import NodeConfig
from sam3d_ros.core.frames import Pose as CorePose
from sam3d_ros.core.tracking import SceneUpdate, TrackedObject
from sam3d_ros.core.types import TriangleMesh
from sam3d_ros.ros.builders import make_header, mesh_msg, pose_msg

logger = logging.getLogger(__name__)

#: Planning-scene topics and services (remappable).
COLLISION_OBJECT_TOPIC = "/collision_object"
PLANNING_SCENE_TOPIC = "/planning_scene"
MONITORED_PLANNING_SCENE_TOPIC = "/monitored_planning_scene"
GET_PLANNING_SCENE_SERVICE = "/get_planning_scene"

_missing_logged = False


def load_moveit_msgs() -> Any | None:
    """The ``moveit_msgs.msg`` module, or None (logged once) when not importable."""
    global _missing_logged
    try:
        return importlib.import_module("moveit_msgs.msg")
    except ImportError as err:
        if not _missing_logged:
            _missing_logged = True
            logger.warning("moveit_msgs is not importable (%s): no planning-scene updates", err)
        return None


def collision_object_msg(
    mm: Any,
    obj: TrackedObject,
    kinds: frozenset[str],
    object_id: str,
    stamp_ns: int,
    frame_id: str,
    operation: int,
) -> Any:
    """A ``moveit_msgs/CollisionObject`` for one tracked object.

    ADD carries the geometry (see the module docstring) with shape poses relative to the
    object pose; MOVE only the pose; REMOVE only the id.
    """
    co = mm.CollisionObject()
    co.header = make_header(stamp_ns, frame_id)
    co.id = object_id
    co.operation = operation
    if operation == mm.CollisionObject.REMOVE:
        return co
    co.pose = pose_msg(CorePose.from_matrix(obj.fixed_T_object))
    if operation != mm.CollisionObject.ADD:
        return co
    from shape_msgs.msg import SolidPrimitive

    col = obj.collision
    identity = pose_msg(CorePose.from_matrix(np.eye(4)))
    if "primitive" in kinds and col.primitives:
        best = col.primitives[0]
        co.primitives = [
            SolidPrimitive(type=int(best.kind.value), dimensions=[float(d) for d in best.dimensions])
        ]
        co.primitive_poses = [pose_msg(CorePose.from_matrix(best.object_T_primitive))]
    meshes: list[TriangleMesh] = []
    if "decomposition" in kinds and col.parts:
        meshes.extend(col.parts)
    elif "hull" in kinds or "decomposition" in kinds:
        meshes.append(col.hull)
    if "simplified" in kinds and col.simplified is not None:
        meshes.append(col.simplified)
    if not meshes and not co.primitives:
        meshes.append(col.hull)
    co.meshes = [mesh_msg(m) for m in meshes]
    co.mesh_poses = [identity for _ in meshes]
    return co


class PlanningSceneSync:
    """Publishes planning-scene updates for a node (see the module docstring). Thread-safe:
    :meth:`update` runs on the reconstruction worker, the timers on the executor.

    Attributes:
        available: False when ``moveit_msgs`` is missing (every call is then a no-op).

    ``moveit_mode`` and ``moveit_id_prefix`` are read here once (read-only parameters); the
    collision shapes come with each :meth:`update`, from the parameters the frame was
    processed with, so the planning scene always matches the published messages.
    """

    def __init__(self, node: Node, config: NodeConfig) -> None:
        self._node = node
        self._config = config
        self._lock = threading.Lock()
        self._current: dict[int, Any] = {}  # track id -> latest ADD message
        self._attached: set[str] = set()  # object ids the planning scene reports as attached
        self._last_subs = 0
        self._timers: list[Any] = []
        self._mm = load_moveit_msgs()
        self.available = self._mm is not None
        self._pub: Any = None
        self._scene_sub: Any = None
        self._resend_srv: Any = None
        self._get_scene: Any = None  # GetPlanningScene client, when the srv type is importable
        self._get_scene_srv_type: Any = None
        self._service_was_ready = False
        if self._mm is None:
            return
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        if config.moveit_mode == "planning_scene":
            self._pub = node.create_publisher(self._mm.PlanningScene, PLANNING_SCENE_TOPIC, qos)
        else:
            self._pub = node.create_publisher(self._mm.CollisionObject, COLLISION_OBJECT_TOPIC, qos)
        self._scene_sub = node.create_subscription(
            self._mm.PlanningScene, MONITORED_PLANNING_SCENE_TOPIC, self._on_monitored_scene, qos
        )
        try:
            self._get_scene_srv_type = importlib.import_module("moveit_msgs.srv").GetPlanningScene
        except (ImportError, AttributeError) as err:
            logger.info(
                "moveit_msgs.srv.GetPlanningScene is not importable (%s): attached objects only from %s",
                err,
                MONITORED_PLANNING_SCENE_TOPIC,
            )
        else:
            self._get_scene = node.create_client(self._get_scene_srv_type, GET_PLANNING_SCENE_SERVICE)
        from std_srvs.srv import Trigger

        self._resend_srv = node.create_service(Trigger, "~/resend_planning_scene", self._on_resend)
        self._timers.append(node.create_timer(C.MOVEIT_SUBSCRIBER_CHECK_PERIOD_S, self._check_subscribers))
        node.get_logger().info(
            f"MoveIt planning-scene updates on {self._pub.topic_name} ({config.moveit_mode}), "
            f"ids '{config.moveit_id_prefix}<track_id>'"
        )

    def object_id(self, track_id: int) -> str:
        """``<moveit_id_prefix><track_id>``."""
        return f"{self._config.moveit_id_prefix}{int(track_id)}"

    def update(self, scene: SceneUpdate, kinds: frozenset[str]) -> None:
        """Publish ADD / MOVE / REMOVE for one frame's tracking update.

        Args:
            scene: the frame's tracking update.
            kinds: the collision representations to send (``collision_kinds()`` of the
                parameters the frame was processed with, as in its published messages).
        """
        mm = self._mm
        if mm is None or self._pub is None:
            return
        stamp, frame = scene.result.stamp_ns, scene.fixed_frame
        out = []
        with self._lock:
            # a subscriber matched since the last check gets the current set first, so the
            # diff below never reaches a late joiner without the objects it refers to (and
            # the timer does not resend it again)
            out.extend(self._late_joiner_msgs_locked())
            # removals first: after ~/reset a new track may reuse a vanished id
            for tid in scene.vanished:
                if self._current.pop(tid, None) is not None and self.object_id(tid) not in self._attached:
                    out.append(self._remove_msg(tid, stamp, frame))
            for obj in scene.objects:
                tid = obj.result.track_id
                oid = self.object_id(tid)
                if oid in self._attached:  # held by the robot: MoveIt owns it until detached
                    self._current[tid] = collision_object_msg(
                        mm, obj, kinds, oid, stamp, frame, mm.CollisionObject.ADD
                    )
                    continue
                if obj.appeared or obj.geometry_changed or tid not in self._current:
                    msg = collision_object_msg(mm, obj, kinds, oid, stamp, frame, mm.CollisionObject.ADD)
                    self._current[tid] = msg
                    out.append(msg)
                elif obj.moved:
                    msg = collision_object_msg(mm, obj, kinds, oid, stamp, frame, mm.CollisionObject.MOVE)
                    self._current[tid].pose = msg.pose
                    self._current[tid].header = msg.header
                    out.append(msg)
            self._publish_locked(out)

    def remove_all(self, stamp_ns: int) -> None:
        """REMOVE every object published so far (``~/reset``)."""
        if self._mm is None:
            return
        with self._lock:
            out = [
                self._remove_msg(tid, stamp_ns, msg.header.frame_id)
                for tid, msg in sorted(self._current.items())
                if self.object_id(tid) not in self._attached
            ]
            self._current.clear()
            self._publish_locked(out)

    def resend_all(self) -> int:
        """Publish the current set again as ADD (late joiners, ``~/resend_planning_scene``),
        except objects attached to the robot; returns how many were sent."""
        with self._lock:
            msgs = self._world_set_locked()
            self._publish_locked(msgs)
            return len(msgs)

    def attached_ids(self) -> set[str]:
        """Ids the planning scene reports as attached to the robot."""
        with self._lock:
            return set(self._attached)

    def current_ids(self) -> list[str]:
        """Ids of the objects currently in the scene (as published)."""
        with self._lock:
            return [self.object_id(t) for t in sorted(self._current)]

    def close(self) -> None:
        """Destroy the timers, the publisher, the subscription, the service and the client."""
        for t in self._timers:
            self._node.destroy_timer(t)
        self._timers = []
        if self._pub is not None:
            self._node.destroy_publisher(self._pub)
            self._pub = None
        if self._scene_sub is not None:
            self._node.destroy_subscription(self._scene_sub)
            self._scene_sub = None
        if self._resend_srv is not None:
            self._node.destroy_service(self._resend_srv)
            self._resend_srv = None
        if self._get_scene is not None:
            self._node.destroy_client(self._get_scene)
            self._get_scene = None

    # ------------------------------------------------------------------ attached objects
    def _on_monitored_scene(self, msg: Any) -> None:
        """``/monitored_planning_scene``: a full scene lists every attached object, a diff
        the ones attached (any operation but REMOVE) or detached (REMOVE) since the last."""
        assert self._mm is not None
        acos = list(msg.robot_state.attached_collision_objects)
        with self._lock:
            if not msg.is_diff or not msg.robot_state.is_diff:
                self._set_attached_locked({a.object.id for a in acos})
                return
            attached = set(self._attached)
            for a in acos:
                if a.object.operation == self._mm.CollisionObject.REMOVE:
                    attached.discard(a.object.id)
                else:
                    attached.add(a.object.id)
            self._set_attached_locked(attached)

    def _query_attached(self) -> None:
        """Ask ``/get_planning_scene`` for the attached objects (answer handled async)."""
        if self._get_scene is None or self._get_scene_srv_type is None or self._mm is None:
            return
        request = self._get_scene_srv_type.Request()
        request.components.components = self._mm.PlanningSceneComponents.ROBOT_STATE_ATTACHED_OBJECTS
        future = self._get_scene.call_async(request)
        future.add_done_callback(self._on_scene_response)

    def _on_scene_response(self, future: Any) -> None:
        response = future.result()
        if response is None:
            return
        with self._lock:
            self._set_attached_locked(
                {a.object.id for a in response.scene.robot_state.attached_collision_objects}
            )

    def _set_attached_locked(self, attached: set[str]) -> None:
        if attached != self._attached:
            logger.info("objects attached to the robot: %s", sorted(attached) or "none")
        self._attached = attached

    # ------------------------------------------------------------------ internals
    def _remove_msg(self, track_id: int, stamp_ns: int, frame_id: str) -> Any:
        assert self._mm is not None
        co = self._mm.CollisionObject()
        co.header = make_header(stamp_ns, frame_id)
        co.id = self.object_id(track_id)
        co.operation = self._mm.CollisionObject.REMOVE
        return co

    def _publish_locked(self, msgs: list[Any]) -> None:
        if not msgs or self._pub is None or self._mm is None:
            return
        if self._config.moveit_mode == "planning_scene":
            ps = self._mm.PlanningScene(is_diff=True)
            ps.world.collision_objects = list(msgs)
            ps.robot_state.is_diff = True
            self._pub.publish(ps)
        else:
            for m in msgs:
                self._pub.publish(m)

    def _late_joiner_msgs_locked(self) -> list[Any]:
        """The current set as ADDs when the subscriber count grew since the last check
        (called with the lock held), else nothing."""
        if self._pub is None:
            return []
        n = self._pub.get_subscription_count()
        grew = n > self._last_subs
        self._last_subs = n
        if grew:  # a move_group that just started may already hold objects
            self._query_attached()
        if not grew or not self._current:
            return []
        logger.debug("new planning-scene subscriber (%d): resending %d objects", n, len(self._current))
        return self._world_set_locked()

    def _world_set_locked(self) -> list[Any]:
        """The current set as ADDs, without the objects attached to the robot."""
        return [m for t, m in sorted(self._current.items()) if self.object_id(t) not in self._attached]

    def _check_subscribers(self) -> None:
        ready = self._get_scene is not None and self._get_scene.service_is_ready()
        if ready and not self._service_was_ready:
            self._query_attached()
        self._service_was_ready = ready
        with self._lock:
            self._publish_locked(self._late_joiner_msgs_locked())

    def _on_resend(self, request: Any, response: Any) -> Any:
        n = self.resend_all()
        response.success = True
        response.message = f"sent {n} objects (objects attached to the robot are left to MoveIt)"
        return response
