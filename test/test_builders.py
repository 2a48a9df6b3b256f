"""Output messages built from core results: content, frames and the shared vertex messages."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from geometry_msgs.msg import Point
from rclpy.serialization import deserialize_message, serialize_message
from sam3d_ros.msg import ObjectReconstructionArray
from shape_msgs.msg import Mesh, MeshTriangle
from visualization_msgs.msg import Marker, MarkerArray

from sam3d_ros.core.frames import Pose
from sam3d_ros.core.types import CollisionShapes, FrameResult, ObjectResult, TriangleMesh
from sam3d_ros.ros import builders

pytestmark = pytest.mark.ros


def _object(track_id: int, size: tuple[float, float, float], cut: bool = False) -> ObjectResult:
    box = trimesh.creation.box(extents=size)
    mesh = TriangleMesh(vertices=np.asarray(box.vertices, float), faces=np.asarray(box.faces, np.int32))
    return ObjectResult(
        instance_id=track_id + 10,
        track_id=track_id,
        label=f"instance_{track_id + 10}",
        score=1.0,
        pose=Pose((0.1 * track_id, 0.0, 0.8), (0.0, 0.0, 0.0, 1.0)),
        extents=size,
        mesh=mesh,
        collision=CollisionShapes(convex_parts=(mesh,)),
        visible_fraction=0.5,
        confidence=0.9,
        num_points=100,
        cut_by_border=cut,
        support_id=0 if cut else track_id + 20,
    )


def _result() -> FrameResult:
    return FrameResult(
        stamp_ns=1_234_000_000_567,
        frame_id="camera_color_optical_frame",
        objects=(_object(1, (0.1, 0.05, 0.2)), _object(2, (0.03, 0.03, 0.03), cut=True)),
        skipped=(),
        timings_ms={},
        backend="test",
    )


def test_frame_outputs_carry_meshes_and_triangle_lists_of_the_same_vertices() -> None:
    result = _result()
    out = builders.frame_output_msgs(result, previous_ids={1, 7}, alpha=0.5)
    # serialise and read back: what subscribers get
    objects = deserialize_message(serialize_message(out.objects), ObjectReconstructionArray)
    assert out.markers is not None
    markers = deserialize_message(serialize_message(out.markers), MarkerArray)
    assert objects.header.stamp.sec == 1234 and objects.header.stamp.nanosec == 567
    assert objects.header.frame_id == result.frame_id
    assert out.poses.header == objects.header and len(out.poses.poses) == 2
    by_id = {m.id: m for m in markers.markers if m.ns == builders.MESH_NS and m.action == Marker.ADD}
    for obj, msg in zip(result.objects, objects.objects, strict=True):
        verts = np.array([[p.x, p.y, p.z] for p in msg.mesh.vertices])
        faces = np.array([t.vertex_indices for t in msg.mesh.triangles])
        np.testing.assert_array_equal(verts, obj.mesh.vertices)
        np.testing.assert_array_equal(faces, obj.mesh.faces)
        marker = by_id[obj.track_id]
        assert marker.type == Marker.TRIANGLE_LIST and marker.header == objects.header
        tri = np.array([[p.x, p.y, p.z] for p in marker.points])
        np.testing.assert_array_equal(tri, obj.mesh.vertices[obj.mesh.faces.reshape(-1)])
        assert marker.pose == msg.pose
        assert msg.cut_by_border is obj.cut_by_border
        assert msg.support_instance_id == obj.support_id
        assert abs(marker.color.a - 0.5) < 1e-6
    assert [m.cut_by_border for m in objects.objects] == [False, True]
    # track 7 was shown before and is gone: both of its markers are deleted
    deleted = {(m.ns, m.id) for m in markers.markers if m.action == Marker.DELETE}
    assert deleted == {(builders.MESH_NS, 7), (builders.LABEL_NS, 7)}


def test_frame_outputs_without_markers_match_the_single_builders() -> None:
    result = _result()
    out = builders.frame_output_msgs(result, previous_ids=(), alpha=0.8, markers=False)
    assert out.markers is None
    assert out.objects == builders.reconstruction_array_msg(result)
    assert out.poses == builders.pose_array_msg(result)
    assert builders.frame_output_msgs(result, (), 0.8).markers == builders.marker_array_msg(result, (), 0.8)


@pytest.mark.parametrize("fast", [True, False])
def test_bulk_point_and_triangle_messages_equal_the_generated_constructors(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builders, "_FAST_POINT", fast)
    monkeypatch.setattr(builders, "_FAST_TRIANGLE", fast)
    rng = np.random.default_rng(0)
    verts = rng.normal(size=(50, 3))
    faces = rng.integers(0, 50, size=(80, 3)).astype(np.int32)
    msg = builders.mesh_msg(TriangleMesh(verts, faces))
    ref = Mesh(
        vertices=[Point(x=float(x), y=float(y), z=float(z)) for x, y, z in verts],
        triangles=[MeshTriangle(vertex_indices=[int(i) for i in f]) for f in faces],
    )
    assert msg == ref
    assert serialize_message(msg) == serialize_message(ref)
    # the messages own their index arrays: changing the input afterwards changes nothing
    faces[:] = 0
    assert msg == ref
