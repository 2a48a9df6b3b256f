"""Tests of sam3d_ros.core.metrics against cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import make_transform
from sam3d_ros.core.metrics import (
    MetricsError,
    ObjectMetrics,
    add_s,
    add_s_surface,
    aggregate,
    aggregate_by_visibility,
    centre_error_mm,
    chamfer_l1_mm,
    diameter,
    evaluate_object,
    fscore,
    point_to_mesh_distance,
    render_mesh_depth,
    reprojection_consistency,
    sample_surface,
    surface_distances,
    volume_centroid,
    volume_iou,
)
from sam3d_ros.core.types import TriangleMesh
from sam3d_ros.sim.raycast import Box, Cylinder, Scene, SceneObject, look_at, render, true_mesh

N = 5000


def _shifted(mesh: trimesh.Trimesh, t: tuple[float, float, float]) -> trimesh.Trimesh:
    m = mesh.copy()
    m.apply_translation(t)
    return m


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _cube_shift_chamfer(a: float, d: float) -> float:
    """Exact Chamfer-L1 (same units as a) of two cubes of edge a shifted by d < a/2 along x.

    Per direction, over the 6 faces of area a^2: the outer face is at distance d; the
    inner face's points are at min(d, distance to the face border); each of the four side
    faces has a strip of width d whose mean distance gives d^2 / 2 per unit length.
    """
    s = d / a
    inner = (1.0 - (1.0 - 2.0 * s) ** 3) / 6.0
    return a * (s + inner + 4.0 * s * s / 2.0) / 6.0


# --------------------------------------------------------------------------- identities


def test_identical_meshes_are_perfect() -> None:
    box = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
    box.apply_transform(make_transform(_rot_z(0.3), np.array([0.05, -0.02, 0.7])))
    m = evaluate_object(box, box.copy(), n_samples=N)
    assert m.chamfer_l1_mm == pytest.approx(0.0, abs=1e-9)
    assert m.fscore_5mm == 1.0 and m.fscore_10mm == 1.0
    assert m.volume_iou == 1.0
    assert m.centre_error_mm == pytest.approx(0.0, abs=1e-9)
    assert m.add_s_m == pytest.approx(0.0, abs=1e-12) and m.add_s_success
    assert m.diameter_m == pytest.approx(math.sqrt(0.1**2 + 0.06**2 + 0.04**2))


def test_mesh_like_inputs_are_equivalent() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    tm = TriangleMesh(vertices=np.asarray(sphere.vertices), faces=np.asarray(sphere.faces, dtype=np.int32))
    pair = (np.asarray(sphere.vertices), np.asarray(sphere.faces))
    other = _shifted(sphere, (0.004, 0.0, 0.0))
    ref = chamfer_l1_mm(other, sphere, n=N)
    assert chamfer_l1_mm(other, tm, n=N) == pytest.approx(ref)
    assert chamfer_l1_mm(other, pair, n=N) == pytest.approx(ref)
    with pytest.raises(MetricsError):
        chamfer_l1_mm(other, (np.zeros((0, 3)), np.zeros((0, 3), dtype=int)))
    with pytest.raises(MetricsError, match="out of range"):
        chamfer_l1_mm(other, (np.zeros((3, 3)), np.array([[0, 1, 5]])))


def test_point_to_mesh_distance_is_exact_for_a_box() -> None:
    half = np.array([0.05, 0.03, 0.02])
    box = trimesh.creation.box(extents=2 * half)
    pts = np.random.default_rng(0).uniform(-0.1, 0.1, size=(3000, 3))
    q = np.abs(pts) - half
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
    inside = -np.minimum(q.max(axis=1), 0.0)
    np.testing.assert_allclose(point_to_mesh_distance(pts, box), outside + inside, atol=1e-12)


def test_surface_samples_are_seeded_and_on_surface() -> None:
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    a = sample_surface(box, 1000, seed=3)
    np.testing.assert_array_equal(a, sample_surface(box, 1000, seed=3))
    assert not np.array_equal(a, sample_surface(box, 1000, seed=4))
    on_face = np.isclose(np.abs(a), [0.5, 1.0, 1.5]).any(axis=1)
    assert on_face.all()
    # area weighting: the two 1x2 faces (z = +-1.5) hold 2 / 22 of the area
    many = sample_surface(box, 40000, seed=0)
    assert np.isclose(np.abs(many[:, 2]), 1.5).mean() == pytest.approx(4.0 / 22.0, abs=0.01)


# --------------------------------------------------------------------------- shifted cube


@pytest.mark.parametrize("d", [0.1, 0.25])
def test_unit_cube_shift(d: float) -> None:
    cube = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    moved = _shifted(cube, (d, 0.0, 0.0))
    assert volume_iou(cube, moved) == pytest.approx((1 - d) / (1 + d), abs=0.01)
    # in metres -> the mm value is 1000 x the analytic one
    assert chamfer_l1_mm(moved, cube, n=20000) == pytest.approx(
        1000.0 * _cube_shift_chamfer(1.0, d), rel=0.02
    )
    assert centre_error_mm(moved, cube) == pytest.approx(1000.0 * d, abs=1e-9)


def test_small_cube_shift_fscore_and_centre() -> None:
    cube = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    moved = _shifted(cube, (0.0, 0.0, 0.02))
    m = evaluate_object(moved, cube, n_samples=N)
    assert m.chamfer_l1_mm == pytest.approx(1000.0 * _cube_shift_chamfer(0.1, 0.02), rel=0.03)
    assert m.volume_iou == pytest.approx(0.08 / 0.12, abs=0.01)
    assert m.centre_error_mm == pytest.approx(20.0, abs=1e-9)
    # the faces x, y = +-0.05 coincide over 80 % of their area; the rest is >= 5 mm away
    # except thin strips, so precision/recall sit between 0.5 and 0.8
    assert 0.4 < m.fscore_5mm < m.fscore_10mm < 1.0


# --------------------------------------------------------------------------- spheres


def test_concentric_spheres() -> None:
    r1, r2 = 0.05, 0.057
    s1 = trimesh.creation.icosphere(subdivisions=4, radius=r1)
    s2 = trimesh.creation.icosphere(subdivisions=4, radius=r2)
    d = surface_distances(s1, s2, n=N)
    # tessellation: an icosphere of subdivision 4 deviates by < 0.1 mm at these radii
    assert d.chamfer_l1_mm == pytest.approx(1000.0 * (r2 - r1), abs=0.1)
    assert d.fscore(0.005) == 0.0
    assert d.fscore(0.010) == 1.0
    assert fscore(s1, s2, 0.010, n=N) == 1.0
    assert volume_iou(s1, s2) == pytest.approx((r1 / r2) ** 3, abs=0.01)
    assert centre_error_mm(s1, s2) == pytest.approx(0.0, abs=1e-6)
    assert diameter(s2) == pytest.approx(2 * r2)


def test_volume_iou_of_disjoint_and_nested() -> None:
    a = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    assert volume_iou(a, _shifted(a, (0.2, 0.0, 0.0))) == 0.0
    inner = trimesh.creation.box(extents=(0.05, 0.1, 0.1))
    assert volume_iou(a, inner) == pytest.approx(0.5, abs=0.01)


# --------------------------------------------------------------------------- centre, ADD-S


def test_centre_is_volume_centroid() -> None:
    # a box with a much finer tessellation on one side: the vertex mean moves, the volume
    # centroid does not
    box = trimesh.creation.box(extents=(0.2, 0.1, 0.1))
    fine = box.subdivide().subdivide()
    fine.vertices[fine.vertices[:, 0] > 0] += 0.0  # same geometry
    np.testing.assert_allclose(volume_centroid(fine), 0.0, atol=1e-12)
    t = np.array([0.01, -0.02, 0.5])
    assert centre_error_mm(_shifted(fine, tuple(t)), box) == pytest.approx(1000 * np.linalg.norm(t), abs=1e-9)


def test_add_s_zero_for_symmetry_rotation() -> None:
    sections = 64
    cyl = trimesh.creation.cylinder(radius=0.04, height=0.12, sections=sections)
    gt_pose = make_transform(np.eye(3), np.array([0.1, 0.0, 0.8]))
    for k in (1, 5, 17):
        est = gt_pose @ make_transform(_rot_z(2 * math.pi * k / sections), np.zeros(3))
        assert add_s(cyl, est, gt_pose, n=N) == pytest.approx(0.0, abs=1e-9)
    # a box is symmetric under a 180 degree turn about z as well
    box = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
    assert add_s(box, gt_pose @ make_transform(_rot_z(math.pi), np.zeros(3)), gt_pose, n=N) < 1e-9
    # but not under a 90 degree turn, nor for a tilt of the cylinder's axis
    assert add_s(box, gt_pose @ make_transform(_rot_z(math.pi / 2), np.zeros(3)), gt_pose, n=N) > 1e-3
    tilt = make_transform(np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]), np.zeros(3))
    assert add_s(cyl, gt_pose @ tilt, gt_pose, n=N) > 5e-3
    # translation only: ADD-S is at most the shift
    shift = make_transform(np.eye(3), np.array([0.0, 0.0, 0.8 + 0.003])) @ make_transform(
        np.eye(3), np.array([0.1, 0.0, 0.0])
    )
    assert 0.0 < add_s(cyl, shift, gt_pose, n=N) <= 0.003 + 1e-12


def test_evaluate_object_with_poses_uses_pose_add_s() -> None:
    cyl = trimesh.creation.cylinder(radius=0.04, height=0.12, sections=64)
    gt_pose = make_transform(_rot_z(0.2), np.array([0.0, 0.05, 0.6]))
    est_pose = gt_pose @ make_transform(_rot_z(2 * math.pi * 3 / 64), np.zeros(3))
    gt_mesh = cyl.copy()
    gt_mesh.apply_transform(gt_pose)
    pred_mesh = cyl.copy()
    pred_mesh.apply_transform(est_pose)
    m = evaluate_object(
        pred_mesh, gt_mesh, pred_pose=est_pose, gt_pose=gt_pose, n_samples=N, visible_fraction=0.7
    )
    assert m.add_s_from_pose and m.add_s_m == pytest.approx(0.0, abs=1e-9) and m.add_s_success
    # a wrong pose far away: normalised by the diameter, fails
    far = make_transform(np.eye(3), np.array([0.0, 0.05, 0.65])) @ make_transform(_rot_z(0.2), np.zeros(3))
    m2 = evaluate_object(pred_mesh, gt_mesh, pred_pose=far, gt_pose=gt_pose, n_samples=N)
    assert m2.add_s_norm == pytest.approx(m2.add_s_m / diameter(gt_mesh)) and not m2.add_s_success
    # without poses: surface ADD-S (truth samples to predicted surface)
    shifted = _shifted(gt_mesh, (0.0, 0.0, 0.004))
    m3 = evaluate_object(shifted, gt_mesh, n_samples=N)
    assert not m3.add_s_from_pose
    assert m3.add_s_m == pytest.approx(add_s_surface(shifted, gt_mesh, n=N))
    assert 0.0 < m3.add_s_m <= 0.004 + 1e-12


# --------------------------------------------------------------------------- reprojection


def _box_scene():  # type: ignore[no-untyped-def]
    k = CameraIntrinsics(width=200, height=150, fx=180.0, fy=180.0, cx=99.5, cy=74.5)
    pose = make_transform(_rot_z(0.5), np.array([0.0, 0.0, 0.04]))
    box = Box((0.12, 0.08, 0.08), pose)
    cyl = Cylinder(0.03, 0.1, make_transform(np.eye(3), np.array([0.1, 0.12, 0.05])))
    cam = look_at((0.45, 0.25, 0.35), (0.0, 0.0, 0.04), k)
    scene = Scene((SceneObject(1, box), SceneObject(2, cyl)))
    return render(scene, cam), k


def test_silhouette_iou_of_true_mesh() -> None:
    frame, k = _box_scene()
    gt = frame.objects[0]
    mesh = true_mesh(gt, "camera")
    own = np.isfinite(render_mesh_depth(mesh, k))
    r_own = reprojection_consistency(mesh, own, render_mesh_depth(mesh, k), k)
    assert r_own.silhouette_iou == 1.0 and r_own.depth_residual_median_m == 0.0
    # against the ray caster: the exact box mesh reproduces the amodal mask and the depth
    r = reprojection_consistency(mesh, frame.amodal_masks[1], frame.depth, k)
    assert r.silhouette_iou > 0.995
    assert r.depth_residual_median_m < 1e-5
    assert r.depth_pixels > 100 and r.mask_pixels == gt.amodal_pixels
    # a shifted mesh is inconsistent
    bad = reprojection_consistency(_shifted(mesh, (0.02, 0.0, 0.0)), frame.amodal_masks[1], frame.depth, k)
    assert bad.silhouette_iou < 0.9
    # and a mesh pushed back in depth has a positive signed residual
    back = reprojection_consistency(_shifted(mesh, (0.0, 0.0, 0.01)), frame.labels == 1, frame.depth, k)
    assert back.depth_residual_signed_median_m > 0.005


def test_reprojection_ignores_occluders_and_checks_shapes() -> None:
    frame, k = _box_scene()
    cyl = true_mesh(frame.objects[1], "camera")
    modal = frame.labels == 2
    r_plain = reprojection_consistency(cyl, modal, frame.depth, k)
    r_ign = reprojection_consistency(cyl, modal, frame.depth, k, ignore=(frame.labels > 0) & ~modal)
    assert r_ign.silhouette_iou >= r_plain.silhouette_iou
    assert r_ign.silhouette_iou > 0.99
    assert r_ign.depth_residual_median_m < 1e-4  # tessellated cylinder vs analytic one
    with pytest.raises(MetricsError):
        reprojection_consistency(cyl, modal[:-1], frame.depth, k)


def test_render_mesh_depth_of_a_plane_square() -> None:
    k = CameraIntrinsics(width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0)
    e = 0.101  # edges 0.1 px outside the pixel centres 22 and 42
    v = np.array([[-e, -e, 0.5], [e, -e, 0.5], [e, e, 0.5], [-e, e, 0.5]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    d = render_mesh_depth((v, f), k)
    hit = np.isfinite(d)
    np.testing.assert_allclose(d[hit], 0.5, atol=1e-7)
    # |x| <= 0.101 at z = 0.5 -> |u - 32| <= 10.1 px: columns 22..42 and rows 14..34
    assert hit.sum() == 21 * 21
    assert hit[24, 22] and hit[24, 42] and not hit[24, 21] and not hit[24, 43]


# --------------------------------------------------------------------------- aggregation


def _m(cd: float, vis: float, success: bool = True) -> ObjectMetrics:
    return ObjectMetrics(
        instance_id=1,
        chamfer_l1_mm=cd,
        fscore_5mm=0.5,
        fscore_10mm=0.8,
        volume_iou=0.6,
        add_s_m=0.001,
        add_s_norm=0.01,
        add_s_success=success,
        add_s_from_pose=False,
        centre_error_mm=2.0,
        diameter_m=0.1,
        visible_fraction=vis,
    )


def test_aggregate_by_visibility() -> None:
    ms = [_m(1.0, 0.2), _m(3.0, 0.5, success=False), _m(10.0, 0.6), _m(20.0, 0.9), _m(30.0, math.nan)]
    agg = aggregate_by_visibility(ms)
    assert set(agg) == {"all", "visible<0.6", "visible>=0.6"}
    assert agg["all"].count == 5
    assert agg["all"].mean["chamfer_l1_mm"] == pytest.approx(64.0 / 5)
    assert agg["all"].median["chamfer_l1_mm"] == pytest.approx(10.0)
    assert agg["all"].mean["add_s_success"] == pytest.approx(0.8)
    low, high = agg["visible<0.6"], agg["visible>=0.6"]
    assert low.count == 2 and low.mean["chamfer_l1_mm"] == pytest.approx(2.0)
    assert high.count == 2 and high.median["chamfer_l1_mm"] == pytest.approx(15.0)
    assert math.isnan(high.mean["silhouette_iou"])  # never computed
    empty = aggregate([])
    assert empty.count == 0 and math.isnan(empty.mean["volume_iou"])
