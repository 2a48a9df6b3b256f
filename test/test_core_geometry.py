"""Geometric invariants and millimetre accuracy of the non-learned reconstruction core.

Scenes are rendered exactly by the analytic ray caster in ``geometry_helpers`` (boxes,
cylinders and spheres on a table, 640x480 camera 0.6-1.0 m away, looking down 25-65 deg).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from geometry_helpers import Box, Cylinder, Scene, Sphere, look_at, surface_distance_mm

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core import constants as C
from sam3d_ros.core.collision import compute_collision_shapes, convex_hull, fit_primitives
from sam3d_ros.core.completion import CompletionError, complete_shape
from sam3d_ros.core.config import default_config
from sam3d_ros.core.frames import invert_transform, transform_points
from sam3d_ros.core.layout import LayoutError, estimate_object_frame, observed_in_frame, visible_fraction
from sam3d_ros.core.meshing import MeshingError, is_watertight, mesh_from_voxels, mesh_volume
from sam3d_ros.core.observation import _grid_neighbour_inliers, extract_observations
from sam3d_ros.core.support_plane import estimate_support_plane
from sam3d_ros.core.types import (
    ObjectObservation,
    PrimitiveType,
    RGBDFrame,
    SceneContext,
    SkipReason,
    TriangleMesh,
    VoxelShape,
)

CFG = default_config()
BOX = Box((0.0, 0.0), (0.12, 0.08, 0.10), yaw_deg=25.0)
CYL = Cylinder((0.0, 0.0), 0.04, 0.14)
SPH = Sphere((0.0, 0.0), 0.05)
SHAPES = {"box": BOX, "cylinder": CYL, "sphere": SPH}


def _single(shape, elevation: float = 45.0, distance: float = 0.8, azimuth: float = 10.0) -> Scene:
    return Scene([shape], look_at(np.array([0.0, 0.0, 0.04]), distance, elevation, azimuth))


def _reconstruct(scene: Scene, frame: RGBDFrame, cfg=CFG):
    plane = estimate_support_plane(frame, cfg)
    obs, skipped = extract_observations(frame, cfg)
    ctx = SceneContext(frame, plane)
    out = []
    for o in obs:
        shape = complete_shape(ctx, o, cfg)
        assert shape is not None
        mesh = mesh_from_voxels(shape, cfg.occupancy_threshold)
        t, ext = estimate_object_frame(mesh.vertices, plane)
        out.append((o, shape, mesh, t, ext))
    return plane, out, skipped


def _true_extents(shape) -> np.ndarray:
    if isinstance(shape, Box):
        return np.sort(np.asarray(shape.size[:2]))[::-1]
    if isinstance(shape, Cylinder):
        return np.array([2 * shape.radius, 2 * shape.radius])
    return np.array([2 * shape.radius, 2 * shape.radius])


def _true_height(shape) -> float:
    if isinstance(shape, Box):
        return shape.size[2]
    if isinstance(shape, Cylinder):
        return shape.height
    return 2 * shape.radius


@pytest.fixture(scope="module")
def multi_scene():
    scene = Scene(
        [
            Box((0.0, 0.0), (0.12, 0.08, 0.10), yaw_deg=25.0),
            Cylinder((0.18, 0.05), 0.04, 0.14),
            Sphere((-0.17, 0.04), 0.05),
        ],
        look_at(np.array([0.0, 0.02, 0.05]), 0.8, 45.0, 10.0),
    )
    frame = scene.frame(noise_std=0.001, seed=3)
    return scene, frame, _reconstruct(scene, frame)


# ---------------------------------------------------------------------------------- plane


@pytest.mark.parametrize("elevation", [30.0, 60.0])
def test_support_plane_recovered_within_1deg_5mm(elevation: float) -> None:
    scene = Scene([BOX, Cylinder((0.15, 0.05), 0.04, 0.12)], look_at(np.zeros(3), 0.9, elevation, 20.0))
    frame = scene.frame(noise_std=0.002, seed=1)
    plane = estimate_support_plane(frame, CFG)
    assert plane is not None
    n_true, off_true = scene.plane_in_camera()
    angle = np.degrees(np.arccos(np.clip(plane.normal @ n_true, -1, 1)))
    assert angle < 1.0
    assert abs(plane.offset - off_true) < 0.005
    assert abs(np.linalg.norm(plane.normal) - 1.0) < 1e-9
    assert plane.offset > 0  # camera origin on the positive (upper) side
    assert plane.signed_distance(np.zeros((1, 3)))[0] > 0
    assert plane.inlier_count >= C.MIN_PLANE_POINTS
    # deterministic for a seed
    again = estimate_support_plane(frame, CFG, seed=0)
    assert again is not None
    np.testing.assert_array_equal(again.normal, plane.normal)
    assert again.offset == plane.offset


def test_support_plane_none_without_enough_background() -> None:
    scene = _single(BOX)
    frame = scene.frame()
    all_object = RGBDFrame(1, "cam", frame.rgb, frame.depth, np.ones_like(frame.labels), frame.camera)
    assert estimate_support_plane(all_object, CFG) is None
    no_depth = RGBDFrame(1, "cam", frame.rgb, np.full_like(frame.depth, np.nan), frame.labels, frame.camera)
    assert estimate_support_plane(no_depth, CFG) is None


def test_support_plane_none_for_unstructured_depth() -> None:
    rng = np.random.default_rng(0)
    frame = _single(BOX).frame()
    depth = rng.uniform(0.5, 4.0, size=frame.depth.shape).astype(np.float32)
    noisy = RGBDFrame(1, "cam", frame.rgb, depth, np.zeros_like(frame.labels), frame.camera)
    assert estimate_support_plane(noisy, CFG) is None


# ---------------------------------------------------------------------------- observations


def test_observation_points_on_true_surface_units_and_frame() -> None:
    scene = _single(CYL)
    frame = scene.frame()
    obs, skipped = extract_observations(frame, CFG)
    assert skipped == []
    assert len(obs) == 1
    o = obs[0]
    assert o.points.dtype == np.float64 and o.points.shape[1] == 3
    assert o.pixels.dtype == np.int32 and o.pixels.shape == (len(o.points), 2)
    assert o.mask.shape == frame.depth.shape and o.mask.dtype == bool
    # metres, optical frame: in front of the camera at ~0.8 m
    assert 0.6 < float(np.median(o.points[:, 2])) < 1.0
    # points back-project their own pixels and lie on the true surface
    u, v, _ = frame.camera.project(o.points)
    np.testing.assert_allclose(u, o.pixels[:, 0], atol=1e-6)
    np.testing.assert_allclose(v, o.pixels[:, 1], atol=1e-6)
    assert np.abs(CYL.sdf(scene.to_world(o.points))).max() < 1e-4
    assert o.mask[o.pixels[:, 1], o.pixels[:, 0]].all()


def test_flying_pixels_and_outliers_are_removed() -> None:
    scene = _single(BOX)
    frame = scene.frame()
    depth = frame.depth.copy()
    labels = frame.labels.copy()
    rng = np.random.default_rng(5)
    # flying pixels: dilate the mask by 3 px into the background where it lies > 10 cm behind
    # the object, with depths between the object and the background
    from scipy import ndimage

    mask = labels == 1
    near = ndimage.grey_erosion(np.where(mask, depth, np.inf), size=9)
    ring = ndimage.binary_dilation(mask, iterations=3) & ~mask & (depth > near + 0.10)
    assert ring.sum() > 100
    depth[ring] = 0.5 * (depth[ring] + near[ring])
    labels[ring] = 1
    # isolated spikes inside the mask, 5-30 cm off
    inside = np.argwhere(mask)
    spikes = inside[rng.choice(len(inside), size=60, replace=False)]
    depth[spikes[:, 0], spikes[:, 1]] += rng.uniform(0.05, 0.3, size=60).astype(np.float32)
    # a few NaN / inf / negative pixels
    bad = inside[rng.choice(len(inside), size=30, replace=False)]
    depth[bad[:10, 0], bad[:10, 1]] = np.nan
    depth[bad[10:20, 0], bad[10:20, 1]] = np.inf
    depth[bad[20:, 0], bad[20:, 1]] = -1.0
    dirty = RGBDFrame(1, "cam", frame.rgb, depth, labels, frame.camera)
    obs, _ = extract_observations(dirty, CFG)
    assert len(obs) == 1
    err = np.abs(BOX.sdf(scene.to_world(obs[0].points)))
    assert err.max() < 0.003, f"worst point {1000 * err.max():.1f} mm off the surface"
    assert len(obs[0].points) > 1000


@pytest.mark.parametrize("stride", [1, 3])
def test_grid_neighbour_outlier_removal(stride: int) -> None:
    """Points pushed 2 cm off a plane (too little for the flying-pixel filter) and isolated
    pixels are removed; the plane is kept."""
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[0:80, 0:90]
    v, u = (rows.ravel() * stride + 40), (cols.ravel() * stride + 17)
    z = np.full(v.shape, 0.8)
    fx = 600.0
    pts = np.stack([(u - 320) * z / fx, (v - 240) * z / fx, z], axis=1)
    off = rng.choice(len(pts), size=25, replace=False)
    pts[off, 2] += 0.02
    # isolated pixels: beyond the grid, no kept 8-neighbour
    iso_v = np.array([80, 90, 100]) * stride + 40 + 2 * stride
    iso_u = np.array([10, 40, 70]) * stride + 17
    iso = np.stack([(iso_u - 320) * 0.8 / fx, (iso_v - 240) * 0.8 / fx, np.full(3, 0.8)], axis=1)
    keep = _grid_neighbour_inliers(
        np.concatenate([pts, iso]), np.concatenate([v, iso_v]), np.concatenate([u, iso_u]), stride, 2.5
    )
    assert not keep[off].any()
    assert not keep[len(pts) :].any()
    clean = np.ones(len(pts), dtype=bool)
    clean[off] = False
    # only the 8-neighbours of displaced points may go with them
    assert keep[: len(pts)][clean].mean() > 0.97


def test_erosion_falls_back_for_thin_masks() -> None:
    scene = _single(Box((0.0, 0.0), (0.3, 0.006, 0.006)), elevation=80.0, distance=0.7)
    frame = scene.frame()
    cfg = CFG.replace(mask_erosion_px=5, min_mask_pixels=20, min_depth_points=20)
    obs, skipped = extract_observations(frame, cfg)
    assert [o.instance_id for o in obs] == [1], skipped


def test_skips_with_reasons_and_numbers() -> None:
    scene = Scene(
        [
            Box((0.0, 0.0), (0.1, 0.1, 0.1)),
            Box((0.2, 0.0), (0.08, 0.08, 0.08)),
            Box((-0.2, 0.0), (0.06, 0.06, 0.06)),
        ],
        look_at(np.zeros(3), 0.9, 45.0),
    )
    frame = scene.frame()
    labels = frame.labels.copy()
    depth = frame.depth.copy()
    labels[10:14, 10:14] = 7  # 16-pixel mask
    depth[labels == 2] = np.nan  # no valid depth for object 2
    frame = RGBDFrame(1, "cam", frame.rgb, depth, labels, frame.camera)
    cfg = CFG.replace(max_objects=1)
    obs, skipped = extract_observations(frame, cfg)
    reasons = {s.instance_id: s for s in skipped}
    assert reasons[7].reason is SkipReason.TOO_FEW_MASK_PIXELS and "16" in reasons[7].detail
    # largest mask (the near 10 cm box) kept; the others exceed max_objects
    assert [o.instance_id for o in obs] == [1]
    assert reasons[2].reason is SkipReason.MAX_OBJECTS_EXCEEDED
    assert reasons[3].reason is SkipReason.MAX_OBJECTS_EXCEEDED and "max_objects=1" in reasons[3].detail
    obs, skipped = extract_observations(frame, CFG)
    reasons = {s.instance_id: s for s in skipped}
    assert reasons[2].reason is SkipReason.TOO_FEW_DEPTH_POINTS
    assert "min_depth_points=30" in reasons[2].detail
    assert sorted(o.instance_id for o in obs) == [1, 3]


def test_odd_label_images() -> None:
    frame = _single(BOX).frame()
    empty = RGBDFrame(1, "cam", frame.rgb, frame.depth, np.zeros_like(frame.labels), frame.camera)
    assert extract_observations(empty, CFG) == ([], [])
    # huge and negative ids: negative is ignored, huge ids work
    labels = np.where(frame.labels == 1, 2_000_000_000, -5).astype(np.int32)
    odd = RGBDFrame(1, "cam", frame.rgb, frame.depth, labels, frame.camera)
    obs, skipped = extract_observations(odd, CFG)
    assert [o.instance_id for o in obs] == [2_000_000_000] and skipped == []
    # every pixel labelled
    full = RGBDFrame(1, "cam", frame.rgb, frame.depth, np.full_like(frame.labels, 3), frame.camera)
    obs, _ = extract_observations(full, CFG)
    assert [o.instance_id for o in obs] == [3]
    # all-NaN depth
    nan = RGBDFrame(1, "cam", frame.rgb, np.full_like(frame.depth, np.nan), frame.labels, frame.camera)
    obs, skipped = extract_observations(nan, CFG)
    assert obs == [] and skipped[0].reason is SkipReason.TOO_FEW_DEPTH_POINTS


def test_occluder_mask_marks_closer_neighbour() -> None:
    box = Box((0.0, 0.05), (0.12, 0.08, 0.12))
    cyl = Cylinder((0.01, -0.06), 0.03, 0.08)  # in front of the box
    scene = Scene([box, cyl], look_at(np.array([0.0, 0.0, 0.05]), 0.8, 30.0))
    frame = scene.frame()
    obs, _ = extract_observations(frame, CFG)
    by_id = {o.instance_id: o for o in obs}
    occ_box = by_id[1].occluder_mask
    assert occ_box.sum() > 50
    assert (frame.labels[occ_box] == 2).all()
    assert not by_id[2].occluder_mask.any()
    # the occluded box is still reconstructed sensibly (hidden part not carved)
    _, results, _ = _reconstruct(scene, frame)
    _, _, mesh, t, ext = next(r for r in results if r[0].instance_id == 1)
    assert is_watertight(mesh)
    assert abs(ext[2] - 0.12) < 0.015
    assert np.linalg.norm(scene.to_world(t[:3, 3][None])[0] - box.centre) < 0.02


# -------------------------------------------------------------------- completion and pose


@pytest.mark.parametrize("name", ["box", "cylinder", "sphere"])
@pytest.mark.parametrize(("elevation", "distance"), [(30.0, 0.7), (55.0, 1.0)])
def test_completed_shape_volume_pose_extents(name: str, elevation: float, distance: float) -> None:
    shape = SHAPES[name]
    scene = _single(shape, elevation=elevation, distance=distance)
    frame = scene.frame(noise_std=0.001, seed=2)
    _, results, _ = _reconstruct(scene, frame)
    assert len(results) == 1
    _, vs, mesh, cam_T_obj, ext = results[0]
    assert vs.occupancy.dtype == np.float32
    assert vs.occupancy.min() >= 0.0 and vs.occupancy.max() <= 1.0
    assert 0.0 <= vs.confidence <= 1.0
    pad = C.GRID_PAD_VOXELS
    assert not (vs.occupancy[:pad] >= 0.5).any() and not (vs.occupancy[-pad:] >= 0.5).any()
    assert is_watertight(mesh)
    vol = mesh_volume(mesh)
    assert abs(vol / shape.volume - 1.0) < 0.25, f"volume ratio {vol / shape.volume:.3f}"
    # pose: z along the true table normal, centre at the true centre, right-handed
    r = cam_T_obj[:3, :3]
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-9)
    assert np.linalg.det(r) > 0.999
    n_true, _ = scene.plane_in_camera()
    assert np.degrees(np.arccos(np.clip(r[:, 2] @ n_true, -1, 1))) < 3.0
    centre_world = scene.to_world(cam_T_obj[:3, 3][None])[0]
    assert np.linalg.norm(centre_world - shape.centre) < 0.01
    assert ext[0] >= ext[1]
    np.testing.assert_allclose(ext[:2], _true_extents(shape), atol=0.015)
    assert abs(ext[2] - _true_height(shape)) < 0.01
    # the box's x axis is along one of its sides
    if isinstance(shape, Box):
        x_world = scene.world_T_camera[:3, :3] @ r[:, 0]
        yaw = np.degrees(np.arctan2(x_world[1], x_world[0]))
        assert min(abs((yaw - shape.yaw_deg + 45) % 90 - 45), 90) < 3.0


def test_mean_surface_distance_mm(capsys: pytest.CaptureFixture[str]) -> None:
    """Reports the accuracy numbers (run with -s to see them) and bounds them."""
    lines = []
    for name, shape in SHAPES.items():
        for elevation in (30.0, 45.0, 60.0):
            scene = _single(shape, elevation=elevation)
            frame = scene.frame(noise_std=0.001, seed=4)
            _, results, _ = _reconstruct(scene, frame)
            mesh = results[0][2]
            r2t, t2r = surface_distance_mm(scene, shape, mesh.vertices, mesh.faces)
            lines.append(
                f"{name:8s} el={elevation:4.0f} recon->true {r2t:5.2f} mm  true->recon {t2r:5.2f} mm"
            )
            assert r2t < 4.0 and t2r < 4.0, lines[-1]
    with capsys.disabled():
        print("\nmean surface distance (1 mm depth noise, 0.8 m):\n" + "\n".join(lines))


def test_multi_object_scene(multi_scene) -> None:
    scene, frame, (_, results, skipped) = multi_scene
    assert skipped == []
    assert len(results) == 3
    for obs, _, mesh, t, ext in results:
        shape = scene.shapes[obs.instance_id - 1]
        assert is_watertight(mesh)
        assert np.linalg.norm(scene.to_world(t[:3, 3][None])[0] - shape.centre) < 0.01
        np.testing.assert_allclose(ext[:2], _true_extents(shape), atol=0.015)
        vis = visible_fraction(mesh, observed_in_frame(mesh.vertices, frame, obs.mask))
        assert 0.25 < vis < 0.75  # about half of a convex object is seen


def test_no_symmetry_and_no_plane_still_watertight() -> None:
    scene = _single(SPH, elevation=30.0)
    frame = scene.frame()
    obs, _ = extract_observations(frame, CFG)
    ctx = SceneContext(frame, estimate_support_plane(frame, CFG))
    volumes = {}
    for sym in (False, True):
        vs = complete_shape(ctx, obs[0], CFG.replace(use_symmetry=sym))
        assert vs is not None
        mesh = mesh_from_voxels(vs, 0.5)
        assert is_watertight(mesh)
        volumes[sym] = mesh_volume(mesh) / SPH.volume
    # without symmetry the hidden back half is missing
    assert volumes[False] < 0.9 < volumes[True], volumes
    scene = _single(CYL, elevation=30.0)
    # no table: plane None, z = camera up; still a closed mesh around the cylinder
    no_table = Scene([CYL], scene.world_T_camera, table=False)
    frame = no_table.frame()
    assert estimate_support_plane(frame, CFG) is None
    obs, _ = extract_observations(frame, CFG)
    vs = complete_shape(SceneContext(frame, None), obs[0], CFG)
    assert vs is not None
    mesh = mesh_from_voxels(vs, 0.5)
    assert is_watertight(mesh)
    t, _ = estimate_object_frame(mesh.vertices, None)
    np.testing.assert_allclose(t[:3, 2], [0.0, -1.0, 0.0])
    # degraded without a plane (unknown 'down': no extrusion), but near the true surface
    assert np.abs(CYL.sdf(scene.to_world(mesh.vertices))).mean() < 0.008


def test_max_completion_depth_limits_the_back() -> None:
    scene = _single(CYL, elevation=15.0)
    frame = scene.frame()
    obs, _ = extract_observations(frame, CFG)
    plane = estimate_support_plane(frame, CFG)
    ctx = SceneContext(frame, plane)
    depth_of = {}
    for mcd in (0.3, 0.02):
        vs = complete_shape(ctx, obs[0], CFG.replace(max_completion_depth=mcd))
        assert vs is not None
        mesh = mesh_from_voxels(vs, 0.5)
        # horizontal depth of the shape along the viewing direction vs the observed points
        n, _ = scene.plane_in_camera()
        view = obs[0].points.mean(axis=0)
        view = view - n * (view @ n)
        view /= np.linalg.norm(view)
        depth_of[mcd] = float((mesh.vertices @ view).max() - (obs[0].points @ view).min())
        # vertices seen through the mask are never far behind the measured depth
        u, v, z = frame.camera.project(mesh.vertices)
        ui, vi = np.round(u).astype(int), np.round(v).astype(int)
        inside = (ui >= 0) & (ui < frame.depth.shape[1]) & (vi >= 0) & (vi < frame.depth.shape[0])
        sel = inside & obs[0].mask[np.clip(vi, 0, 479), np.clip(ui, 0, 639)]
        behind = z[sel] - frame.depth[vi[sel], ui[sel]]
        assert behind.max() < mcd + 3 * vs.voxel_size
    assert depth_of[0.3] == pytest.approx(0.08, abs=0.006)
    assert depth_of[0.02] < 0.02 + 0.006 + 0.01


def test_determinism(multi_scene) -> None:
    scene, frame, (plane, results, _) = multi_scene
    plane2, results2, _ = _reconstruct(scene, frame)
    assert plane2 is not None and plane is not None
    np.testing.assert_array_equal(plane.normal, plane2.normal)
    for a, b in zip(results, results2, strict=True):
        np.testing.assert_array_equal(a[1].occupancy, b[1].occupancy)
        np.testing.assert_array_equal(a[2].vertices, b[2].vertices)
        np.testing.assert_array_equal(a[3], b[3])


def test_complete_shape_odd_input_raises_completion_error() -> None:
    frame = _single(BOX).frame()
    few = ObjectObservation(
        1,
        frame.labels == 1,
        np.full((5, 3), 0.8),
        np.zeros((5, 2), np.int32),
        np.zeros_like(frame.labels, bool),
    )
    with pytest.raises(CompletionError, match=f"5 finite points of 5, need >= {C.MIN_OBJECT_POINTS}"):
        complete_shape(SceneContext(frame, None), few, CFG)
    nan = ObjectObservation(
        1, frame.labels == 1, np.full((100, 3), np.nan), np.zeros((100, 2), np.int32), frame.labels < 0
    )
    with pytest.raises(CompletionError, match=r"0 finite points of 100"):
        complete_shape(SceneContext(frame, None), nan, CFG)


# ------------------------------------------------------------------------------- meshing


def test_meshing_cube_volume_frame_and_errors() -> None:
    occ = np.zeros((10, 10, 10), np.float32)
    occ[2:8, 2:8, 2:8] = 1.0  # 6 voxels of 1 cm: a 6 cm cube centred at origin + 5 cm
    t = np.eye(4)
    t[:3, 3] = [0.1, -0.2, 0.9]
    vs = VoxelShape(occ, 0.01, np.zeros(3), t, 1.0)
    mesh = mesh_from_voxels(vs, 0.5)
    assert is_watertight(mesh)
    assert mesh.faces.dtype == np.int32
    assert abs(mesh_volume(mesh) - 0.06**3) / 0.06**3 < 0.05  # marching cubes chamfers edges
    np.testing.assert_allclose(mesh.vertices.mean(axis=0), [0.15, -0.15, 0.95], atol=1e-6)
    # outward: normals point away from the centre
    v, f = mesh.vertices, mesh.faces
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (np.einsum("ij,ij->i", n, v[f].mean(axis=1) - [0.15, -0.15, 0.95]) > 0).all()
    # occupancy touching the border still closes; two blobs -> the larger is kept
    occ2 = np.zeros((12, 6, 6), np.float32)
    occ2[0:5, 0:6, 0:6] = 1.0
    occ2[8:10, 2:4, 2:4] = 1.0
    mesh2 = mesh_from_voxels(VoxelShape(occ2, 0.01, np.zeros(3), np.eye(4), 1.0), 0.5)
    assert is_watertight(mesh2)
    assert mesh2.vertices[:, 0].max() < 0.06
    # a hollow cube: one surface kept, the outer one (the cavity is filled)
    occ3 = np.zeros((12, 12, 12), np.float32)
    occ3[1:11, 1:11, 1:11] = 1.0
    occ3[4:8, 4:8, 4:8] = 0.0
    mesh3 = mesh_from_voxels(VoxelShape(occ3, 0.01, np.zeros(3), np.eye(4), 1.0), 0.5)
    assert is_watertight(mesh3)
    assert abs(mesh_volume(mesh3) - 0.1**3) / 0.1**3 < 0.05
    with pytest.raises(MeshingError, match="empty"):
        mesh_from_voxels(VoxelShape(np.zeros((4, 4, 4), np.float32), 0.01, np.zeros(3), np.eye(4), 1.0), 0.5)
    with pytest.raises(MeshingError, match="non-finite"):
        bad = occ.copy()
        bad[0, 0, 0] = np.nan
        mesh_from_voxels(VoxelShape(bad, 0.01, np.zeros(3), np.eye(4), 1.0), 0.5)
    with pytest.raises(MeshingError, match="voxel size"):
        mesh_from_voxels(VoxelShape(occ, 1.0, np.zeros(3), np.eye(4), 1.0), 0.5)


def test_meshing_keeps_the_components_the_observed_surface_supports() -> None:
    # two blobs in a camera-posed grid: a 5 cm slab (x < 5 cm) and a 2 cm cube (x 8-10 cm)
    occ = np.zeros((12, 6, 6), np.float32)
    occ[0:5, 0:6, 0:6] = 1.0
    occ[8:10, 2:4, 2:4] = 1.0
    t = np.eye(4)
    t[:3, 3] = [0.1, -0.2, 0.9]
    vs = VoxelShape(occ, 0.01, np.zeros(3), t, 1.0)
    rng = np.random.default_rng(0)

    def on_face(x: float, lo: float, hi: float, n: int) -> np.ndarray:
        # points on the face x = const of a blob, camera frame
        p = np.column_stack([np.full(n, x), rng.uniform(lo, hi, n), rng.uniform(lo, hi, n)])
        return p + t[:3, 3]

    small = on_face(0.10, 0.025, 0.035, 40)  # the small cube's +x face
    big = on_face(0.05, 0.01, 0.05, 200)  # the slab's +x face
    xs = lambda m: m.vertices[:, 0] - t[0, 3]  # noqa: E731
    # no observation, or one that supports nothing: the larger component, as before
    for pts in (None, np.zeros((0, 3)), on_face(-0.5, 0.0, 0.06, 50)):
        mesh = mesh_from_voxels(vs, 0.5, pts)
        assert is_watertight(mesh)
        assert xs(mesh).max() < 0.06
    # measured surface only on the small cube: the slab is a guess no measurement supports
    mesh = mesh_from_voxels(vs, 0.5, small)
    assert is_watertight(mesh)
    assert xs(mesh).min() > 0.07 and abs(mesh_volume(mesh) - 0.02**3) / 0.02**3 < 0.3
    # both measured, each with a tenth of the points or more: both pieces kept, each closed
    mesh = mesh_from_voxels(vs, 0.5, np.vstack([small, big]))
    assert is_watertight(mesh)
    assert xs(mesh).min() < 0.01 and xs(mesh).max() > 0.09
    assert mesh_volume(mesh) == pytest.approx(0.05 * 0.06 * 0.06 + 0.02**3, rel=0.1)
    # ... but a stray 4 % of the points on the small cube does not keep it
    mesh = mesh_from_voxels(vs, 0.5, np.vstack([small[:8], big]))
    assert xs(mesh).max() < 0.06
    # hysteresis: a piece the track kept last frame stays while the measured surface still
    # touches it (4 % here), a piece it did not keep needs its tenth again
    both = mesh_from_voxels(vs, 0.5, np.vstack([small, big]))
    slab_only = mesh_from_voxels(vs, 0.5, big)
    few = np.vstack([small[:8], big])
    assert xs(mesh_from_voxels(vs, 0.5, few, both.vertices)).max() > 0.09
    assert xs(mesh_from_voxels(vs, 0.5, few, slab_only.vertices)).max() < 0.06
    # ... and not once no measurement touches it any more
    assert xs(mesh_from_voxels(vs, 0.5, big, both.vertices)).max() < 0.06
    # ... nor does the previous surface keep what no measurement supports at all
    assert xs(mesh_from_voxels(vs, 0.5, small, both.vertices)).min() > 0.07
    # a cavity is never kept as a surface of its own, even when points lie on it
    occ3 = np.zeros((12, 12, 12), np.float32)
    occ3[1:11, 1:11, 1:11] = 1.0
    occ3[4:8, 4:8, 4:8] = 0.0
    vs3 = VoxelShape(occ3, 0.01, np.zeros(3), np.eye(4), 1.0)
    inner = np.column_stack([np.full(30, 0.045), rng.uniform(0.045, 0.075, (30, 2))])
    mesh3 = mesh_from_voxels(vs3, 0.5, inner)
    assert is_watertight(mesh3)
    assert abs(mesh_volume(mesh3) - 0.1**3) / 0.1**3 < 0.05


def test_is_watertight_detects_holes_and_flips() -> None:
    import trimesh

    box = trimesh.creation.box((0.1, 0.2, 0.3))
    mesh = TriangleMesh(np.asarray(box.vertices), np.asarray(box.faces, dtype=np.int32))
    assert is_watertight(mesh)
    assert not is_watertight(TriangleMesh(mesh.vertices, mesh.faces[1:]))
    flipped = mesh.faces.copy()
    flipped[0] = flipped[0][::-1]
    assert not is_watertight(TriangleMesh(mesh.vertices, flipped))
    assert abs(mesh_volume(mesh) - 0.006) < 1e-9


# ------------------------------------------------------------------------------- collision


def _trimesh(m) -> TriangleMesh:
    return TriangleMesh(np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int32))


def test_collision_hull_contains_mesh(multi_scene) -> None:
    _, _, (_, results, _) = multi_scene
    for _, _, mesh, t, _ in results:
        mesh_obj = TriangleMesh(transform_points(invert_transform(t), mesh.vertices), mesh.faces)
        shapes = compute_collision_shapes(mesh_obj)
        hull = shapes.convex_parts[0]
        assert is_watertight(hull)
        assert mesh_volume(hull) >= mesh_volume(mesh_obj) - 1e-9
        # every mesh vertex is inside or on every hull face plane
        v, f = hull.vertices, hull.faces
        n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        d = np.einsum("fj,vfj->vf", n, mesh_obj.vertices[:, None, :] - v[f[:, 0]][None])
        assert d.max() < 1e-9
        assert [p.fit_error for p in shapes.primitives] == sorted(p.fit_error for p in shapes.primitives)
        _assert_primitives_contain(shapes.primitives, mesh_obj.vertices)


def _assert_primitives_contain(primitives, vertices: np.ndarray) -> None:
    for p in primitives:
        local = transform_points(invert_transform(p.object_T_primitive), vertices)
        if p.kind is PrimitiveType.BOX:
            assert (np.abs(local) <= np.asarray(p.dimensions) / 2 + 1e-9).all()
        elif p.kind is PrimitiveType.CYLINDER:
            h, r = p.dimensions
            assert (np.linalg.norm(local[:, :2], axis=1) <= r + 1e-9).all()
            assert (np.abs(local[:, 2]) <= h / 2 + 1e-9).all()
        else:
            assert (np.linalg.norm(local, axis=1) <= p.dimensions[0] + 1e-9).all()


def test_primitive_fits_on_analytic_shapes() -> None:
    import trimesh

    box = _trimesh(trimesh.creation.box((0.2, 0.1, 0.05)))
    prims = fit_primitives(box)
    assert prims[0].kind is PrimitiveType.BOX
    np.testing.assert_allclose(prims[0].dimensions, (0.2, 0.1, 0.05), atol=1e-9)
    assert prims[0].fit_error < 1e-9
    cyl = _trimesh(trimesh.creation.cylinder(radius=0.04, height=0.12, sections=128))
    prims = fit_primitives(cyl)
    assert prims[0].kind is PrimitiveType.CYLINDER
    np.testing.assert_allclose(prims[0].dimensions, (0.12, 0.04), atol=1e-4)
    assert prims[0].fit_error < 1e-4
    sph = _trimesh(trimesh.creation.icosphere(subdivisions=4, radius=0.05))
    shifted = TriangleMesh(sph.vertices + np.array([0.01, -0.02, 0.03]), sph.faces)
    prims = fit_primitives(shifted)
    assert prims[0].kind is PrimitiveType.SPHERE
    assert abs(prims[0].dimensions[0] - 0.05) < 5e-4
    np.testing.assert_allclose(prims[0].object_T_primitive[:3, 3], [0.01, -0.02, 0.03], atol=5e-4)
    for m in (box, cyl, shifted):
        _assert_primitives_contain(fit_primitives(m), m.vertices)
        hull = convex_hull(m)
        assert is_watertight(hull)
        assert abs(mesh_volume(hull) - mesh_volume(m)) < 1e-9 + 1e-6 * abs(mesh_volume(m))


# --------------------------------------------------------------------------------- layout


def test_object_frame_of_analytic_box_sign_and_handedness() -> None:
    import trimesh

    mesh = trimesh.creation.box((0.2, 0.1, 0.05))
    # put the box 0.8 m in front of a camera looking down 40 degrees, yawed by 30 degrees
    scene = _single(Box((0.0, 0.0), (0.2, 0.1, 0.05), yaw_deg=30.0), elevation=40.0)
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    world_T_box = np.eye(4)
    world_T_box[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    world_T_box[:3, 3] = [0.0, 0.0, 0.025]
    v_cam = transform_points(scene.camera_T_world @ world_T_box, np.asarray(mesh.vertices))
    n, off = scene.plane_in_camera()
    from sam3d_ros.core.types import SupportPlane

    t, ext = estimate_object_frame(v_cam, SupportPlane(n, off))
    np.testing.assert_allclose(ext, (0.2, 0.1, 0.05), atol=1e-9)
    np.testing.assert_allclose(t[:3, 2], n, atol=1e-9)
    assert t[0, 0] > 0  # x has a positive camera-x component
    assert abs(abs(t[:3, 0] @ (scene.camera_T_world[:3, :3] @ world_T_box[:3, 0])) - 1) < 1e-9
    np.testing.assert_allclose(np.cross(t[:3, 0], t[:3, 1]), t[:3, 2], atol=1e-12)
    np.testing.assert_allclose(t[:3, 3], scene.to_camera(np.array([[0, 0, 0.025]]))[0], atol=1e-9)


def _turned(t: np.ndarray, deg: float) -> np.ndarray:
    """The frame ``t`` turned by ``deg`` about its own z axis."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    out = t.copy()
    out[:3, :3] = t[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return out


@pytest.mark.parametrize(
    ("size", "previous_turn", "expected_turn"),
    [
        ((0.2, 0.1, 0.05), 180.0, 180.0),  # the sign of x: always the previous one
        ((0.2, 0.1, 0.05), 170.0, 180.0),
        ((0.2, 0.1, 0.05), 100.0, 180.0),  # a long side stays x, the closer sign wins
        ((0.2, 0.1, 0.05), 20.0, 0.0),
        ((0.1, 0.095, 0.05), 80.0, 90.0),  # near-square: the previous x, a quarter turn away
        ((0.1, 0.095, 0.05), -95.0, -90.0),
        ((0.1, 0.085, 0.05), 80.0, 0.0),  # 15 % apart: not square, the long side stays x
    ],
)
def test_a_tracked_frame_keeps_the_previous_axes(
    size: tuple[float, float, float], previous_turn: float, expected_turn: float
) -> None:
    """``keep_previous_axes`` turns the conventional frame by the quarter turn closest to
    the previous x (half turns always, quarter turns only for a near-square footprint): the
    same box (origin, z, extents along the new axes), a proper rotation."""
    import trimesh

    mesh = trimesh.creation.box(size)
    scene = _single(Box((0.0, 0.0), size, yaw_deg=30.0), elevation=40.0)
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    world_T_box = np.eye(4)
    world_T_box[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    world_T_box[:3, 3] = [0.0, 0.0, size[2] / 2]
    v_cam = transform_points(scene.camera_T_world @ world_T_box, np.asarray(mesh.vertices))
    n, off = scene.plane_in_camera()
    from sam3d_ros.core.layout import keep_previous_axes
    from sam3d_ros.core.types import SupportPlane

    t, ext = estimate_object_frame(v_cam, SupportPlane(n, off))
    kept, kept_ext = keep_previous_axes(t, ext, _turned(t, previous_turn)[:3, :3])
    np.testing.assert_allclose(kept, _turned(t, expected_turn), atol=1e-9)
    assert np.linalg.det(kept[:3, :3]) == pytest.approx(1.0)
    local = transform_points(np.linalg.inv(kept), v_cam)
    np.testing.assert_allclose(local.max(axis=0) - local.min(axis=0), kept_ext, atol=1e-9)
    np.testing.assert_allclose((local.max(axis=0) + local.min(axis=0)) / 2, 0.0, atol=1e-9)


# -------------------------------------------------------------------------------- backend


def test_geometric_backend_via_registry(multi_scene) -> None:
    _, frame, (plane, results, _) = multi_scene
    backend = create_backend(CFG, "geometric")
    assert backend.name == "geometric"
    assert "non-learned" in backend.describe()
    obs = [r[0] for r in results]
    broken = ObjectObservation(
        99, obs[0].mask, np.full((50, 3), np.nan), obs[0].pixels[:50], obs[0].occluder_mask
    )
    wrong_shape = ObjectObservation(
        98, obs[0].mask, np.zeros((50, 2)), obs[0].pixels[:50], obs[0].occluder_mask
    )
    shapes = backend.reconstruct(SceneContext(frame, plane), [*obs, broken, wrong_shape])
    assert len(shapes) == 5
    assert all(isinstance(s, VoxelShape) for s in shapes[:3])
    assert shapes[3] is None and shapes[4] is None


def test_timing_per_object(multi_scene, capsys: pytest.CaptureFixture[str]) -> None:
    """Per-object wall time of observation + completion + meshing + layout + collision at
    default settings on 640x480 (prints the numbers; the bound is loose for shared CI)."""
    _, frame, _ = multi_scene
    plane = estimate_support_plane(frame, CFG)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        obs, _ = extract_observations(frame, CFG)
        for o in obs:
            vs = complete_shape(SceneContext(frame, plane), o, CFG)
            assert vs is not None
            mesh = mesh_from_voxels(vs, CFG.occupancy_threshold)
            t, _ = estimate_object_frame(mesh.vertices, plane)
            visible_fraction(mesh, observed_in_frame(mesh.vertices, frame, o.mask))
            compute_collision_shapes(
                TriangleMesh(transform_points(invert_transform(t), mesh.vertices), mesh.faces)
            )
        best = min(best, (time.perf_counter() - t0) / len(obs))
    t0 = time.perf_counter()
    estimate_support_plane(frame, CFG)
    plane_ms = (time.perf_counter() - t0) * 1000
    with capsys.disabled():
        print(f"\nper object: {best * 1000:.1f} ms; support plane per frame: {plane_ms:.1f} ms")
    assert best < 0.25


@pytest.mark.parametrize("seed", range(6))
def test_fuzz_odd_frames_never_crash(seed: int) -> None:
    """Random depth (with NaN/inf/negative/huge values) and random label blobs: the chain
    either produces closed meshes or skips with a ValueError subclass (what the pipeline
    turns into a skip reason), never anything else."""
    rng = np.random.default_rng(seed)
    frame = _single(BOX).frame(noise_std=0.002, seed=seed)
    h, w = frame.depth.shape
    depth = frame.depth.copy()
    junk = rng.random((h, w))
    depth[junk < 0.05] = np.nan
    depth[(junk >= 0.05) & (junk < 0.07)] = np.inf
    depth[(junk >= 0.07) & (junk < 0.08)] = -1.0
    depth[(junk >= 0.08) & (junk < 0.09)] = 1e6
    labels = frame.labels.copy()
    for k in range(2, 8):
        r, c = rng.integers(0, h), rng.integers(0, w)
        rr, cc = rng.integers(1, 80, size=2)
        labels[r : r + rr, c : c + cc] = k
    if seed % 2:
        depth[: h // 2] = rng.uniform(0.05, 6.0, size=(h // 2, w)).astype(np.float32)
    odd = RGBDFrame(1, "cam", frame.rgb, depth, labels.astype(np.int32), frame.camera)
    plane = estimate_support_plane(odd, CFG)
    obs, skipped = extract_observations(odd, CFG)
    assert {o.instance_id for o in obs}.isdisjoint({s.instance_id for s in skipped})
    for o in obs:
        assert np.isfinite(o.points).all()
        try:
            vs = complete_shape(SceneContext(odd, plane), o, CFG)
        except CompletionError:
            continue
        try:
            mesh = mesh_from_voxels(vs, CFG.occupancy_threshold)
            t, _ = estimate_object_frame(mesh.vertices, plane)
            compute_collision_shapes(
                TriangleMesh(transform_points(invert_transform(t), mesh.vertices), mesh.faces)
            )
        except ValueError:
            continue
        assert is_watertight(mesh)
        assert 0.0 <= visible_fraction(mesh, observed_in_frame(mesh.vertices, odd, o.mask)) <= 1.0


def test_visible_fraction_weights_faces_by_their_observed_vertices() -> None:
    """Two equal triangles, one with all three vertices observed and one with one of
    three: (1 + 1/3) / 2 of the surface was seen."""
    v = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [5, 0, 1], [6, 0, 1], [5, 1, 1]], dtype=float)
    mesh = TriangleMesh(v, np.array([[0, 1, 2], [3, 4, 5]]))
    seen = np.array([True, True, True, True, False, False])
    assert visible_fraction(mesh, seen) == pytest.approx((1 + 1 / 3) / 2)
    assert visible_fraction(mesh, np.zeros(6, dtype=bool)) == 0.0
    with pytest.raises(LayoutError, match="seen flags"):
        visible_fraction(mesh, np.ones(5, dtype=bool))
