"""Surface refinement (core/refine.py): geometric invariants on analytic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from sam3d_ros.core import constants as C
from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import make_transform
from sam3d_ros.core.refine import (
    RefinementError,
    carve_seen_free,
    fill_observed,
    free_space_depth,
    snap_to_depth,
    vertex_normals,
)
from sam3d_ros.core.types import ObjectObservation, RGBDFrame, SupportPlane, TriangleMesh, VoxelShape

CAM = CameraIntrinsics(width=320, height=240, fx=300.0, fy=300.0, cx=159.5, cy=119.5)
CENTRE = np.array([0.01, -0.005, 0.5])
RADIUS = 0.05


def _sphere_depth() -> np.ndarray:
    """Depth (H, W) of the sphere at CENTRE (NaN where the ray misses it)."""
    vv, uu = np.mgrid[0 : CAM.height, 0 : CAM.width]
    d = np.stack([(uu - CAM.cx) / CAM.fx, (vv - CAM.cy) / CAM.fy, np.ones_like(uu, float)], -1)
    # |t d - c|^2 = r^2: t^2 |d|^2 - 2 t d.c + |c|^2 - r^2 = 0 (nearest root)
    a = (d * d).sum(-1)
    b = -2.0 * (d @ CENTRE)
    c = CENTRE @ CENTRE - RADIUS**2
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    return np.where(disc > 0, t, np.nan).astype(np.float32)  # z = t (d has z = 1)


def _frame(depth: np.ndarray, labels: np.ndarray) -> RGBDFrame:
    h, w = depth.shape
    return RGBDFrame(
        stamp_ns=1,
        frame_id="cam",
        rgb=np.zeros((h, w, 3), np.uint8),
        depth=depth,
        labels=labels,
        camera=CAM,
    )


def _observation(depth: np.ndarray, erode: int = 2) -> ObjectObservation:
    from scipy import ndimage

    mask = np.isfinite(depth)
    trusted = ndimage.binary_erosion(mask, iterations=erode)
    vi, ui = np.nonzero(trusted)
    pts = CAM.backproject(ui, vi, depth[vi, ui])
    return ObjectObservation(
        instance_id=1,
        mask=mask,
        points=pts,
        pixels=np.stack([ui, vi], axis=1).astype(np.int32),
        occluder_mask=np.zeros_like(mask),
    )


def _sphere_mesh(radius: float) -> TriangleMesh:
    m = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return TriangleMesh(vertices=np.asarray(m.vertices) + CENTRE, faces=np.asarray(m.faces, dtype=np.int32))


def _radial_error(v: np.ndarray) -> np.ndarray:
    return np.abs(np.linalg.norm(v - CENTRE, axis=1) - RADIUS)


@pytest.mark.parametrize("noise_m", [0.0, 0.0015])
def test_snap_puts_the_seen_surface_on_the_depth_and_leaves_the_back(noise_m: float) -> None:
    depth = _sphere_depth()
    rng = np.random.default_rng(0)
    noisy = depth + rng.normal(0.0, noise_m, depth.shape).astype(np.float32) if noise_m else depth
    frame = _frame(noisy, np.where(np.isfinite(depth), 1, 0).astype(np.int32))
    obs = _observation(noisy)
    mesh = _sphere_mesh(RADIUS + 0.004)  # a prediction 4 mm too large everywhere
    res = snap_to_depth(mesh, frame, obs, band_m=0.006)
    before, after = _radial_error(mesh.vertices), _radial_error(res.mesh.vertices)
    moved = np.linalg.norm(res.mesh.vertices - mesh.vertices, axis=1) > 0
    assert res.snapped == int(moved.sum()) > 100
    # only vertices facing the camera move, along their camera ray
    facing = np.einsum("ij,ij->i", vertex_normals(mesh), mesh.vertices) < 0
    assert not np.any(moved & ~facing)
    v0, v1 = mesh.vertices[moved], res.mesh.vertices[moved]
    cos = np.einsum("ij,ij->i", v0, v1) / (np.linalg.norm(v0, axis=1) * np.linalg.norm(v1, axis=1))
    assert np.all(cos > 1 - 1e-12)
    # the back keeps the prediction exactly
    np.testing.assert_array_equal(res.mesh.vertices[~moved], mesh.vertices[~moved])
    # fully snapped vertices (trusted interior) lie on the measured sphere: well under the
    # 4 mm error, and under the depth noise thanks to the local averaging
    inner = moved & (before > 0.0039)
    full = np.abs(res.mesh.vertices[:, 2] - mesh.vertices[:, 2]) > 0.9 * 0.004
    sel = inner & full
    assert sel.sum() > 50
    assert float(np.mean(after[sel])) < (0.0006 if noise_m == 0 else 0.8 * noise_m)
    assert res.mean_shift_m > 0.002
    np.testing.assert_array_equal(res.mesh.faces, mesh.faces)


def test_snap_ignores_surfaces_far_from_the_depth_and_pixels_of_no_trusted_point() -> None:
    depth = _sphere_depth()
    frame = _frame(depth, np.where(np.isfinite(depth), 1, 0).astype(np.int32))
    obs = _observation(depth)
    far = _sphere_mesh(RADIUS + 0.03)  # 3 cm off: beyond twice the band
    res = snap_to_depth(far, frame, obs, band_m=0.006)
    assert res.snapped == 0 and res.mesh is far
    empty_obs = ObjectObservation(
        instance_id=1,
        mask=obs.mask,
        points=np.zeros((0, 3)),
        pixels=np.zeros((0, 2), np.int32),
        occluder_mask=obs.occluder_mask,
    )
    assert snap_to_depth(_sphere_mesh(RADIUS), frame, empty_obs, band_m=0.006).snapped == 0
    with pytest.raises(RefinementError):
        snap_to_depth(
            TriangleMesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), np.int32)), frame, obs, 0.006
        )


def _block_shape(voxel: float = 0.005, n: int = 20) -> VoxelShape:
    """A full n^3 block centred on the optical axis, z from 0.45 to 0.45 + n * voxel."""
    origin = np.array([-n * voxel / 2, -n * voxel / 2, 0.45])
    return VoxelShape(
        occupancy=np.ones((n, n, n), np.float32),
        voxel_size=voxel,
        origin=origin,
        camera_T_grid=make_transform(np.eye(3), np.zeros(3)),
        confidence=1.0,
    )


def test_carving_empties_exactly_the_space_in_front_of_the_measured_depth() -> None:
    wall = 0.5
    depth = np.full((CAM.height, CAM.width), wall, np.float32)
    depth[:, : CAM.width // 2 - 30] = np.nan  # no depth on the left: no evidence, no carving
    frame = _frame(depth, np.zeros(depth.shape, np.int32))
    shape = _block_shape()
    margin = 0.005
    carved, removed = carve_seen_free(shape, frame, margin)
    n = shape.occupancy.shape[0]
    idx = np.indices(shape.occupancy.shape).reshape(3, -1).T
    centres = shape.origin + (idx + 0.5) * shape.voxel_size
    ui, vi, inside = CAM.pixel_indices(centres[:, 0], centres[:, 1], centres[:, 2])
    has_depth = np.isfinite(depth[vi, ui])
    # voxels whose pixel neighbourhood has no depth are kept whatever their depth (min filter)
    near = free_space_depth(depth)[vi, ui] > 0
    expect_free = inside & near & (centres[:, 2] < wall - margin)
    got_free = carved.occupancy.reshape(-1) == 0
    np.testing.assert_array_equal(got_free, expect_free)
    assert removed == int(expect_free.sum()) > 0
    # behind the wall (the hidden part) nothing is carved; where no depth, nothing
    assert not np.any(got_free & (centres[:, 2] > wall - margin))
    assert not np.any(got_free & ~has_depth)
    assert carved.occupancy.shape == (n, n, n) and shape.occupancy.min() == 1.0  # input untouched


def test_carving_keeps_voxels_at_a_silhouette_and_checks_sizes() -> None:
    # a near occluder covering the left half of the image at 0.3 m, far background at 1 m
    depth = np.full((CAM.height, CAM.width), 1.0, np.float32)
    depth[:, : CAM.width // 2] = 0.3
    frame = _frame(depth, np.zeros(depth.shape, np.int32))
    near = free_space_depth(depth)
    # pixels next to the occluder's edge take the occluder's depth: nothing there is free
    assert np.all(near[:, CAM.width // 2 - 1 : CAM.width // 2 + C.FREE_SPACE_FILTER_PX] == np.float32(0.3))
    shape = _block_shape()  # x from -5 to 5 cm at z 0.45-0.55: straddles the edge (u = 159.5)
    carved, removed = carve_seen_free(shape, frame, 0.005)
    # behind the occluder (left) nothing is free; right of the edge the background at 1 m
    # frees the whole block, except the column whose window reaches the occluder
    idx = np.indices(shape.occupancy.shape).reshape(3, -1).T
    centres = shape.origin + (idx + 0.5) * shape.voxel_size
    ui, _, _ = CAM.pixel_indices(centres[:, 0], centres[:, 1], centres[:, 2])
    kept = carved.occupancy.reshape(-1) > 0
    assert np.all(kept[ui < CAM.width // 2 - 1])
    assert not np.any(kept[ui > CAM.width // 2 + C.FREE_SPACE_FILTER_PX])
    assert removed == int((~kept).sum()) > 0
    bad = _frame(depth[:-1], np.zeros(depth[:-1].shape, np.int32))
    with pytest.raises(RefinementError):
        carve_seen_free(_block_shape(), bad, 0.005)


@pytest.mark.parametrize("radius", [1, 2])
def test_free_space_depth_is_the_min_filter_with_the_edge_repeated(
    radius: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The separable slice passes equal scipy's square minimum filter (nearest edge mode),
    with NaN, zero and infinite depths as "no depth" (0.0)."""
    monkeypatch.setattr(C, "FREE_SPACE_FILTER_PX", radius)
    rng = np.random.default_rng(7)
    for shape in [(48, 64), (5, 7), (1, 4), (3, 1)]:
        d = rng.uniform(0.3, 2.0, shape).astype(np.float32)
        d[rng.random(shape) < 0.1] = np.nan
        d[rng.random(shape) < 0.1] = 0.0
        d[rng.random(shape) < 0.05] = np.inf
        clean = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
        want = ndimage.minimum_filter(clean, size=2 * radius + 1, mode="nearest")
        np.testing.assert_array_equal(free_space_depth(d), want)


def _points_observation(points: np.ndarray) -> ObjectObservation:
    mask = np.zeros((CAM.height, CAM.width), dtype=bool)
    return ObjectObservation(
        instance_id=1,
        mask=mask,
        points=points,
        pixels=np.zeros((len(points), 2), np.int32),
        occluder_mask=mask,
    )


def test_fill_observed_keeps_the_measured_surface_that_continues_the_shape() -> None:
    # a thin plate 1 voxel thick at grid height k = 3, 16 x 16 voxels; the "network" predicted
    # only its left half, and saw the whole top
    voxel, n = 0.01, 20
    occ = np.zeros((n, n, n), np.float32)
    occ[2:10, 2:18, 3] = 0.9
    shape = VoxelShape(occ, voxel, np.zeros(3), make_transform(np.eye(3), np.zeros(3)), 0.8)
    ii, jj = np.meshgrid(np.arange(2, 18), np.arange(2, 18), indexing="ij")
    top = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, 3)], 1) * voxel + 0.5 * voxel
    # a stray patch of depth points two voxels above the plate's right end, not touching it
    stray = np.array([[16.5, 16.5, 6.5], [17.5, 16.5, 6.5]]) * voxel
    # points of the support plane z = 0.5 voxel (contact tolerance): never filled
    plane = SupportPlane(normal=np.array([0.0, 0.0, 1.0]), offset=-0.5 * voxel)
    floor = np.array([[5.5, 5.5, 0.5], [6.5, 5.5, 0.5]]) * voxel
    obs = _points_observation(np.concatenate([top, stray, floor]))
    filled, added = fill_observed(shape, obs, plane, 0.5)
    want = np.zeros_like(occ, dtype=bool)
    want[10:18, 2:18, 3] = True  # the unpredicted half of the plate
    got = (filled.occupancy >= 0.5) & (occ < 0.5)
    np.testing.assert_array_equal(got, want)
    assert added == int(want.sum())
    assert filled.occupancy[12, 5, 3] == np.float32(C.OBSERVED_FILL_OCCUPANCY)
    assert filled.occupancy[16, 16, 6] == 0.0 and filled.occupancy[5, 5, 0] == 0.0
    np.testing.assert_array_equal(filled.occupancy[occ >= 0.5], occ[occ >= 0.5])  # prediction kept
    assert occ.max() == np.float32(0.9) and filled.confidence == shape.confidence  # input untouched
    # the stray patch joins once it touches the shape (26-connected through a corner)
    touching = _points_observation(np.concatenate([top, np.array([[18.5, 18.5, 4.5]]) * voxel]))
    _, n_touch = fill_observed(shape, touching, None, 0.5)
    assert n_touch == int(want.sum()) + 1
    # a sensor whose depth noise (measured on the plane) exceeds half a voxel places nothing
    z = float(top[:, 2].max())
    limit = C.OBSERVED_FILL_MAX_SIGMA_VOXELS * voxel  # axial sigma = noise_z2 * z^2
    noisy = SupportPlane(plane.normal, plane.offset, noise_z2=1.5 * limit / z**2)
    precise = SupportPlane(plane.normal, plane.offset, noise_z2=0.9 * limit / z**2)
    assert fill_observed(shape, obs, noisy, 0.5)[1] == 0
    assert fill_observed(shape, obs, precise, 0.5)[1] == int(want.sum())
    # nothing predicted: nothing to join, nothing filled
    empty = VoxelShape(np.zeros_like(occ), voxel, np.zeros(3), shape.camera_T_grid, 0.1)
    assert fill_observed(empty, obs, plane, 0.5) == (empty, 0)
