"""Core results -> ROS messages (rclpy message classes).

Callbacks convert, delegate and publish; the building of messages lives here.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseArray, Quaternion, Vector3
from numpy.typing import NDArray
from shape_msgs.msg import Mesh, MeshTriangle, SolidPrimitive
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from sam3d_ros.core.frames import Pose as CorePose
from sam3d_ros.core.frames import transform_points
from sam3d_ros.core.stats import StatsSnapshot
from sam3d_ros.core.types import FrameResult, ObjectResult, TriangleMesh
from sam3d_ros.msg import ObjectReconstruction, ObjectReconstructionArray
from sam3d_ros.stream.sync import TopicCounts

MESH_NS = "sam3d_mesh"
LABEL_NS = "sam3d_label"


def ns_to_time(stamp_ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time."""
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def make_header(stamp_ns: int, frame_id: str) -> Header:
    """Header with the input frame's stamp and frame_id."""
    return Header(stamp=ns_to_time(stamp_ns), frame_id=frame_id)


def pose_msg(pose: CorePose) -> Pose:
    """Core pose -> geometry_msgs/Pose."""
    x, y, z = pose.position
    qx, qy, qz, qw = pose.orientation_xyzw
    return Pose(
        position=Point(x=float(x), y=float(y), z=float(z)),
        orientation=Quaternion(x=float(qx), y=float(qy), z=float(qz), w=float(qw)),
    )


def _has_slots(cls: type, fields: tuple[str, ...]) -> bool:
    slots = set(getattr(cls, "__slots__", ()))
    return "_check_fields" in slots and all(f"_{f}" in slots for f in fields)


#: Bulk builders fill the generated classes' slots directly (rosidl_generator_py stores
#: field ``f`` in slot ``_f``), skipping the per-field setters: meshes have thousands of
#: points and triangles per frame. Used only when the classes have those slots.
_FAST_POINT = _has_slots(Point, ("x", "y", "z"))
_FAST_TRIANGLE = _has_slots(MeshTriangle, ("vertex_indices",))


def point_msgs(points: NDArray[np.floating]) -> list[Point]:
    """(N, 3) array -> N geometry_msgs/Point (same frame and units)."""
    rows = np.asarray(points, dtype=np.float64).reshape(-1, 3).tolist()
    if not _FAST_POINT:
        return [Point(x=x, y=y, z=z) for x, y, z in rows]
    new = Point.__new__
    out = []
    for x, y, z in rows:
        p = new(Point)
        p._x, p._y, p._z, p._check_fields = x, y, z, False
        out.append(p)
    return out


def triangle_msgs(faces: NDArray[np.integer]) -> list[MeshTriangle]:
    """(F, 3) vertex indices -> F shape_msgs/MeshTriangle."""
    rows = np.array(faces, dtype=np.uint32).reshape(-1, 3)  # a copy: the messages keep row views
    if not _FAST_TRIANGLE:
        return [MeshTriangle(vertex_indices=r) for r in rows]
    new = MeshTriangle.__new__
    out = []
    for r in rows:
        t = new(MeshTriangle)
        t._vertex_indices, t._check_fields = r, False
        out.append(t)
    return out


def mesh_msg(mesh: TriangleMesh, vertices: list[Point] | None = None) -> Mesh:
    """Core mesh -> shape_msgs/Mesh (same frame, metres).

    Args:
        vertices: the mesh's vertices as messages, when already built (see
            :func:`point_msgs`); they are shared, not copied.
    """
    return Mesh(
        vertices=point_msgs(mesh.vertices) if vertices is None else vertices,
        triangles=triangle_msgs(mesh.faces),
    )


def triangle_list_points(mesh: TriangleMesh, vertices: list[Point] | None = None) -> list[Point]:
    """The points of a TRIANGLE_LIST marker for ``mesh`` (three per face, in face order).

    Vertex messages are built once per vertex and referenced by every face that uses
    them (serialisation reads each entry; nothing mutates them after building).
    """
    verts = point_msgs(mesh.vertices) if vertices is None else vertices
    return [verts[i] for i in mesh.faces.reshape(-1).tolist()]


def reconstruction_msg(obj: ObjectResult, vertices: list[Point] | None = None) -> ObjectReconstruction:
    """One object -> sam3d_ros/ObjectReconstruction (poses in the camera frame).

    Args:
        vertices: ``obj.mesh``'s vertices as messages, when already built.
    """
    msg = ObjectReconstruction()
    msg.track_id = int(obj.track_id)
    msg.instance_id = int(obj.instance_id)
    msg.label = obj.label
    msg.score = float(obj.score)
    msg.pose = pose_msg(obj.pose)
    msg.extents = Vector3(x=obj.extents[0], y=obj.extents[1], z=obj.extents[2])
    msg.mesh = mesh_msg(obj.mesh, vertices)
    camera_T_object = obj.pose.matrix()
    for prim in obj.collision.primitives:
        msg.collision_primitives.append(
            SolidPrimitive(type=int(prim.kind.value), dimensions=[float(d) for d in prim.dimensions])
        )
        msg.collision_primitive_poses.append(
            pose_msg(CorePose.from_matrix(camera_T_object @ prim.object_T_primitive))
        )
    msg.convex_parts = [mesh_msg(part) for part in obj.collision.convex_parts]
    msg.visible_fraction = float(obj.visible_fraction)
    msg.cut_by_border = bool(obj.cut_by_border)
    msg.support_instance_id = int(obj.support_id)
    msg.confidence = float(obj.confidence)
    return msg


def reconstruction_array_msg(
    result: FrameResult, vertices: Sequence[list[Point]] | None = None
) -> ObjectReconstructionArray:
    """Frame result -> ObjectReconstructionArray with the input header.

    Args:
        vertices: per object of ``result.objects``, its mesh vertices as messages.
    """
    verts = vertices if vertices is not None else [None] * len(result.objects)
    return ObjectReconstructionArray(
        header=make_header(result.stamp_ns, result.frame_id),
        objects=[reconstruction_msg(o, v) for o, v in zip(result.objects, verts, strict=True)],
    )


def pose_array_msg(result: FrameResult) -> PoseArray:
    """Object poses of a frame (camera frame)."""
    return PoseArray(
        header=make_header(result.stamp_ns, result.frame_id), poses=[pose_msg(o.pose) for o in result.objects]
    )


def track_color(track_id: int, alpha: float) -> ColorRGBA:
    """A stable, distinct colour per track id (golden-ratio hue walk)."""
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(alpha))


def marker_array_msg(
    result: FrameResult,
    previous_ids: Iterable[int],
    alpha: float,
    vertices: Sequence[list[Point]] | None = None,
) -> MarkerArray:
    """Mesh (TRIANGLE_LIST) and label (TEXT_VIEW_FACING) markers per object, and DELETE
    markers for track ids of ``previous_ids`` that are not in this frame.

    Args:
        vertices: per object of ``result.objects``, its mesh vertices as messages.
    """
    verts = vertices if vertices is not None else [None] * len(result.objects)
    header = make_header(result.stamp_ns, result.frame_id)
    markers: list[Marker] = []
    current = {o.track_id for o in result.objects}
    for tid in sorted(set(previous_ids) - current):
        for ns in (MESH_NS, LABEL_NS):
            markers.append(Marker(header=header, ns=ns, id=int(tid), action=Marker.DELETE))
    for obj, obj_verts in zip(result.objects, verts, strict=True):
        pose = pose_msg(obj.pose)
        markers.append(
            Marker(
                header=header,
                ns=MESH_NS,
                id=int(obj.track_id),
                type=Marker.TRIANGLE_LIST,
                action=Marker.ADD,
                pose=pose,
                scale=Vector3(x=1.0, y=1.0, z=1.0),
                color=track_color(obj.track_id, alpha),
                points=triangle_list_points(obj.mesh, obj_verts),
                lifetime=Duration(sec=0, nanosec=0),
                frame_locked=False,
            )
        )
        top = transform_points(obj.pose.matrix(), np.array([[0.0, 0.0, obj.extents[2] / 2 + 0.03]]))[0]
        markers.append(
            Marker(
                header=header,
                ns=LABEL_NS,
                id=int(obj.track_id),
                type=Marker.TEXT_VIEW_FACING,
                action=Marker.ADD,
                pose=Pose(position=Point(x=float(top[0]), y=float(top[1]), z=float(top[2]))),
                scale=Vector3(x=0.0, y=0.0, z=0.03),
                color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
                text=f"{obj.label} #{obj.track_id} ({obj.confidence:.2f})",
            )
        )
    return MarkerArray(markers=markers)


@dataclass(frozen=True)
class FrameOutputs:
    """The per-frame output messages of the node and the replay."""

    objects: ObjectReconstructionArray
    poses: PoseArray
    markers: MarkerArray | None


def frame_output_msgs(
    result: FrameResult, previous_ids: Iterable[int], alpha: float, *, markers: bool = True
) -> FrameOutputs:
    """Objects, poses and (when ``markers``) RViz markers of a frame. Each mesh vertex
    message is built once and shared by the object's mesh and its marker.

    Args:
        previous_ids: track ids with markers from the previous frame (DELETE markers for
            those that are gone).
        alpha: marker opacity.
    """
    vertices = [point_msgs(o.mesh.vertices) for o in result.objects]
    return FrameOutputs(
        objects=reconstruction_array_msg(result, vertices),
        poses=pose_array_msg(result),
        markers=marker_array_msg(result, previous_ids, alpha, vertices) if markers else None,
    )


def delete_all_markers(stamp_ns: int, frame_id: str) -> MarkerArray:
    """A DELETEALL marker (after ~/reset)."""
    return MarkerArray(markers=[Marker(header=make_header(stamp_ns, frame_id), action=Marker.DELETEALL)])


def diagnostics_msg(
    stamp_ns: int,
    node_name: str,
    backend: str,
    snap: StatsSnapshot,
    state: str,
    stale_s: float | None,
    *,
    inputs: Mapping[str, TopicCounts] | None = None,
    frames_synced: int | None = None,
    frames_waiting: int = 0,
) -> DiagnosticArray:
    """/diagnostics entry: rates, per-stage latency, skips by reason, backend, and the input
    accounting: per synchronised topic ``messages_received/<topic>``, ``unmatched/<topic>``
    and ``queued/<topic>``, and ``frames_synced``; every received message is accounted for:
    ``received = frames_synced + unmatched + queued`` per topic, and every synced set is
    processed (``frames_out``), skipped (``frames_skipped/<reason>``), waiting for its
    CameraInfo (``frames_waiting_camera_info``) or still in the worker."""
    inputs = inputs or {}
    level = DiagnosticStatus.OK
    message = "ok"
    unmatched = {t: c.unmatched for t, c in inputs.items() if c.unmatched}
    lost = f", {sum(unmatched.values())} input messages unmatched" if unmatched else ""
    if state != "active":
        level, message = DiagnosticStatus.WARN, f"node {state}"
    elif snap.frames_skipped or snap.objects_skipped or unmatched:
        level = DiagnosticStatus.WARN
        total_f = sum(snap.frames_skipped.values())
        total_o = sum(snap.objects_skipped.values())
        last = f"; last: {snap.last_skip[0]} ({snap.last_skip[1]})" if snap.last_skip else ""
        message = f"{total_f} frames and {total_o} objects skipped{lost}{last}"
    if stale_s is not None and state == "active" and snap.frames_in == 0:
        level, message = DiagnosticStatus.WARN, f"no synchronized input for {stale_s:.1f} s{lost}"
    values = [
        KeyValue(key="backend", value=backend),
        KeyValue(key="state", value=state),
        KeyValue(key="input_rate_hz", value=f"{snap.input_rate_hz:.2f}"),
        KeyValue(key="output_rate_hz", value=f"{snap.output_rate_hz:.2f}"),
        KeyValue(key="frames_in", value=str(snap.frames_in)),
        KeyValue(key="frames_out", value=str(snap.frames_out)),
        KeyValue(key="objects_out", value=str(snap.objects_out)),
    ]
    if frames_synced is not None:
        values.append(KeyValue(key="frames_synced", value=str(frames_synced)))
        values.append(KeyValue(key="frames_waiting_camera_info", value=str(frames_waiting)))
    for topic, counts in inputs.items():
        values += [
            KeyValue(key=f"messages_received/{topic}", value=str(counts.received)),
            KeyValue(key=f"unmatched/{topic}", value=str(counts.unmatched)),
            KeyValue(key=f"queued/{topic}", value=str(counts.queued)),
        ]
    values += [KeyValue(key=f"latency_ms/{k}", value=f"{v:.1f}") for k, v in sorted(snap.latency_ms.items())]
    values += [
        KeyValue(key=f"frames_skipped/{k}", value=str(v)) for k, v in sorted(snap.frames_skipped.items())
    ]
    values += [
        KeyValue(key=f"objects_skipped/{k}", value=str(v)) for k, v in sorted(snap.objects_skipped.items())
    ]
    if snap.last_skip:
        values.append(KeyValue(key="last_skip", value=f"{snap.last_skip[0]}: {snap.last_skip[1]}"[:500]))
    status = DiagnosticStatus(
        level=level,
        name=f"{node_name}: reconstruction",
        message=message,
        hardware_id=node_name,
        values=values,
    )
    return DiagnosticArray(header=make_header(stamp_ns, ""), status=[status])
