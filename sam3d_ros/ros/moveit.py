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
pose. Late joiners (move_group started after us) get the whole current set again: every
``moveit_resend_period`` seconds and as soon as a new subscriber is matched.

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
from sam3d_ros.core.config import PipelineConfig
from sam3d_ros.core.frames import Pose as CorePose
from sam3d_ros.core.tracking import SceneUpdate, TrackedObject
from sam3d_ros.core.types import TriangleMesh
from sam3d_ros.ros.builders import make_header, mesh_msg, pose_msg

logger = logging.getLogger(__name__)

#: Planning-scene topics (remappable).
COLLISION_OBJECT_TOPIC = "/collision_object"
PLANNING_SCENE_TOPIC = "/planning_scene"

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
        sent: every message published, in order (bounded; for tests and diagnostics).
    """

    def __init__(self, node: Node, config: PipelineConfig) -> None:
        self._node = node
        self._config = config
        self._lock = threading.Lock()
        self._current: dict[int, Any] = {}  # track id -> latest ADD message
        self._last_subs = 0
        self._timers: list[Any] = []
        self.sent: list[Any] = []
        self._mm = load_moveit_msgs()
        self.available = self._mm is not None
        self._pub: Any = None
        if self._mm is None:
            return
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        if config.moveit_mode == "planning_scene":
            self._pub = node.create_publisher(self._mm.PlanningScene, PLANNING_SCENE_TOPIC, qos)
        else:
            self._pub = node.create_publisher(self._mm.CollisionObject, COLLISION_OBJECT_TOPIC, qos)
        self._timers.append(node.create_timer(C.MOVEIT_SUBSCRIBER_CHECK_PERIOD_S, self._check_subscribers))
        if config.moveit_resend_period > 0:
            self._timers.append(node.create_timer(config.moveit_resend_period, self.resend_all))
        node.get_logger().info(
            f"MoveIt planning-scene updates on {self._pub.topic_name} ({config.moveit_mode}), "
            f"ids '{config.moveit_id_prefix}<track_id>'"
        )

    def object_id(self, track_id: int) -> str:
        """``<moveit_id_prefix><track_id>``."""
        return f"{self._config.moveit_id_prefix}{int(track_id)}"

    def update(self, scene: SceneUpdate) -> None:
        """Publish ADD / MOVE / REMOVE for one frame's tracking update."""
        mm = self._mm
        if mm is None or self._pub is None:
            return
        kinds = self._config.collision_kinds()
        stamp, frame = scene.result.stamp_ns, scene.fixed_frame
        out = []
        with self._lock:
            # a subscriber matched since the last check gets the current set first, so the
            # diff below never reaches a late joiner without the objects it refers to (and
            # the timer does not resend it again)
            out.extend(self._late_joiner_msgs_locked())
            # removals first: after ~/reset a new track may reuse a vanished id
            for tid in scene.vanished:
                if self._current.pop(tid, None) is not None:
                    out.append(self._remove_msg(tid, stamp, frame))
            for obj in scene.objects:
                tid = obj.result.track_id
                oid = self.object_id(tid)
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
            ]
            self._current.clear()
            self._publish_locked(out)

    def resend_all(self) -> None:
        """Publish the current set again as ADD (late joiners)."""
        with self._lock:
            self._publish_locked([self._current[t] for t in sorted(self._current)])

    def current_ids(self) -> list[str]:
        """Ids of the objects currently in the scene (as published)."""
        with self._lock:
            return [self.object_id(t) for t in sorted(self._current)]

    def close(self) -> None:
        """Destroy the timers and the publisher."""
        for t in self._timers:
            self._node.destroy_timer(t)
        self._timers = []
        if self._pub is not None:
            self._node.destroy_publisher(self._pub)
            self._pub = None

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
            self.sent.append(ps)
        else:
            for m in msgs:
                self._pub.publish(m)
                self.sent.append(m)
        del self.sent[: max(0, len(self.sent) - 10_000)]

    def _late_joiner_msgs_locked(self) -> list[Any]:
        """The current set as ADDs when the subscriber count grew since the last check
        (called with the lock held), else nothing."""
        if self._pub is None:
            return []
        n = self._pub.get_subscription_count()
        grew = n > self._last_subs
        self._last_subs = n
        if not grew or not self._current:
            return []
        logger.debug("new planning-scene subscriber (%d): resending %d objects", n, len(self._current))
        return [self._current[t] for t in sorted(self._current)]

    def _check_subscribers(self) -> None:
        with self._lock:
            self._publish_locked(self._late_joiner_msgs_locked())
