"""Fusion internals: the separable projection equals the per-voxel one, noise measured on
the table, motion tests that tell noise from motion, bounded grids, and a static camera
that moves without a pose."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scene_helpers import box, cylinder, frame

from sam3d_ros.core import constants as C
from sam3d_ros.core.config import default_config
from sam3d_ros.core.frames import invert_transform, make_transform, transform_points
from sam3d_ros.core.fusion import FusionGrowthError, StaticCameraCheck, TrackVolume, motion_decision
from sam3d_ros.core.refine import free_space_depth
from sam3d_ros.core.support_plane import estimate_support_plane
from sam3d_ros.core.types import RGBDFrame, VoxelShape
from sam3d_ros.sim.raycast import look_at
from sam3d_ros.sim.scenes import d435_intrinsics


def cube_shape(centre_cam: np.ndarray, side: float = 0.1, n: int = 24) -> VoxelShape:
    """A solid cube of ``side`` (m) centred at ``centre_cam`` in a grid of n^3 voxels
    twice its size, rotated 30 degrees about the camera's y axis."""
    vs = 2 * side / n
    occ = np.zeros((n, n, n), dtype=np.float32)
    q = n // 4
    occ[q : n - q, q : n - q, q : n - q] = 1.0
    a = np.radians(30.0)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    t = make_transform(rot, centre_cam - rot @ np.full(3, side))
    return VoxelShape(occupancy=occ, voxel_size=vs, origin=np.zeros(3), camera_T_grid=t, confidence=0.9)


def mask_points(f: RGBDFrame, label: int = 1) -> np.ndarray:
    """(N, 3) camera-frame points of the pixels labelled ``label``."""
    v, u = np.nonzero(f.labels == label)
    return f.camera.backproject(u, v, f.depth[v, u].astype(np.float64))


def noisy(f: RGBDFrame, sigma: float, seed: int) -> RGBDFrame:
    rng = np.random.default_rng(seed)
    d = f.depth + rng.normal(0.0, sigma, f.depth.shape).astype(np.float32) * f.depth**2
    return replace(f, depth=d.astype(np.float32))


def test_separable_observations_equal_the_per_voxel_projection() -> None:
    f = frame([box(1, 0.0, 0.0)], 0)
    obs_pts = mask_points(f)
    shape = cube_shape(obs_pts.mean(axis=0))
    f_T_c = make_transform(np.eye(3), np.array([0.3, -0.2, 0.1]))
    vol = TrackVolume.for_shape(shape, f_T_c)
    vol.integrate(shape, f, 1, f_T_c)
    # the same evidence computed voxel by voxel from (N, 3) centres
    axes = [vol.origin[a] + (np.arange(n) + 0.5) * vol.voxel_size for a, n in enumerate(vol.dims)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    cam = transform_points(invert_transform(f_T_c) @ vol.fixed_T_anchor, centres)
    k = f.camera
    u = np.floor(k.fx * cam[:, 0] / cam[:, 2] + k.cx + 0.5).astype(int)
    v = np.floor(k.fy * cam[:, 1] / cam[:, 2] + k.cy + 0.5).astype(int)
    inside = (cam[:, 2] > 0) & (u >= 0) & (u < k.width) & (v >= 0) & (v < k.height)
    meas = np.where(inside, f.depth[np.clip(v, 0, k.height - 1), np.clip(u, 0, k.width - 1)], np.nan)
    tau = max(0.006, 2.0 * vol.voxel_size)
    sd = cam[:, 2] - meas
    # free space against the min-filtered depth, as the single-frame carving
    near = free_space_depth(f.depth)[np.clip(v, 0, k.height - 1), np.clip(u, 0, k.width - 1)]
    free = inside & (near > 0) & (cam[:, 2] - near < -max(tau / 2, vol.voxel_size, 0.004))
    own = inside & (f.labels[np.clip(v, 0, k.height - 1), np.clip(u, 0, k.width - 1)] == 1)
    band = own & (np.abs(sd) <= tau / 2)
    got_free = (vol.obs_weight.reshape(-1) > 0) & (vol.surface_weight.reshape(-1) == 0)
    got_band = vol.surface_weight.reshape(-1) > 0
    # float32 against float64: at most a handful of voxels on a boundary differ
    assert band.sum() > 100 and free.sum() > 1000
    assert np.count_nonzero(got_band != band) <= 3
    assert np.count_nonzero(got_free != free) <= 3
    # the guess inside the shape's grid: voxels deep inside the cube are 1, far away 0
    occ = vol.occupancy()
    assert occ.max() == pytest.approx(1.0)
    assert occ[0, 0, 0] == 0.0


def test_each_observation_is_an_occupancy_in_0_1_so_free_space_never_outvotes_surface() -> None:
    """obs_sum / obs_weight is a weighted mean of per-observation occupancies in [0, 1]: a
    voxel seen free once (however far in front of the depth) and on the surface several
    times afterwards ends near the surface's occupancy, not pinned at 0."""
    f = noisy(frame([box(1, 0.0, 0.0)], 0), 0.004, 3)
    shape = cube_shape(mask_points(f).mean(axis=0))
    vol = TrackVolume.for_shape(shape, np.eye(4))
    for i in range(3):
        vol.integrate(shape, noisy(frame([box(1, 0.0, 0.0)], i), 0.004, 20 + i), 1, np.eye(4))
    seen = vol.obs_weight > 0
    assert seen.sum() > 1000
    assert np.all(vol.obs_sum >= 0.0)
    assert np.all(vol.obs_sum <= vol.obs_weight + 1e-5)
    # one free observation of a surface voxel, then three surface ones: the surface wins
    surf = np.argwhere(vol.surface_weight >= 3)[0]
    i, j, k = surf
    before = vol.obs_sum[i, j, k] / vol.obs_weight[i, j, k]
    vol.obs_weight[i, j, k] += 1.0  # as a free observation adds: weight 1, occupancy 0
    assert vol.obs_sum[i, j, k] / vol.obs_weight[i, j, k] == pytest.approx(before * 0.75, rel=0.05)


def test_surface_evidence_comes_only_from_the_trusted_pixels() -> None:
    """A mask that bleeds onto the table (the labels reach 3 px past the object) adds
    surface at the table's depth on the bleed pixels; given the observation's trusted
    pixels (the eroded mask) none of them gives surface evidence."""
    from scipy import ndimage

    f = frame([box(1, 0.0, 0.0)], 0)
    own = f.labels == 1
    bled = ndimage.binary_dilation(own, iterations=3)
    labels = np.where(bled, 1, f.labels).astype(f.labels.dtype)
    fb = replace(f, labels=labels)
    trusted = ndimage.binary_erosion(own, iterations=2)
    v, u = np.nonzero(trusted)
    pixels = np.stack([u, v], axis=1).astype(np.int32)
    shape = cube_shape(mask_points(f).mean(axis=0))
    loose = TrackVolume.for_shape(shape, np.eye(4))
    loose.integrate(shape, fb, 1, np.eye(4))
    tight = TrackVolume.for_shape(shape, np.eye(4))
    tight.integrate(shape, fb, 1, np.eye(4), surface_pixels=pixels)
    # project every voxel centre: which pixel it falls on
    axes = [tight.origin[a] + (np.arange(n) + 0.5) * tight.voxel_size for a, n in enumerate(tight.dims)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    cam = transform_points(tight.fixed_T_anchor, centres)
    k = f.camera
    pu = np.clip(np.floor(k.fx * cam[:, 0] / cam[:, 2] + k.cx + 0.5).astype(int), 0, k.width - 1)
    pv = np.clip(np.floor(k.fy * cam[:, 1] / cam[:, 2] + k.cy + 0.5).astype(int), 0, k.height - 1)
    on_bleed = (bled & ~own)[pv, pu]
    assert (loose.surface_weight.reshape(-1)[on_bleed] > 0).sum() > 20
    assert (tight.surface_weight.reshape(-1)[on_bleed] > 0).sum() == 0
    assert (tight.surface_weight.reshape(-1)[trusted[pv, pu]] > 0).sum() > 100


def test_depth_noise_is_measured_on_the_table() -> None:
    f = frame([box(1, 0.0, 0.0)], 0)
    cfg = default_config()
    clean = estimate_support_plane(f, cfg, measure_noise=True)
    assert clean is not None and clean.noise_z2 < 0.0005
    for sigma in (0.002, 0.008):  # sigma(z) = sigma * z^2, as a stereo camera's
        plane = estimate_support_plane(noisy(f, sigma, 1), cfg, measure_noise=True)
        assert plane is not None
        assert plane.noise_z2 == pytest.approx(sigma, rel=0.25)
        assert float(plane.axial_sigma(1.5)) == pytest.approx(plane.noise_z2 * 2.25)


def test_motion_test_tells_depth_noise_from_a_push() -> None:
    objects = [box(1, 0.0, 0.0)]
    f0 = noisy(frame(objects, 0), 0.006, 1)
    cfg = default_config()
    noise = estimate_support_plane(f0, cfg, measure_noise=True).noise_z2  # type: ignore[union-attr]
    pts = mask_points(f0)
    shape = cube_shape(pts.mean(axis=0))
    eye = np.eye(4)
    vol = TrackVolume.for_shape(shape, eye)
    for i in range(3):
        vol.integrate(shape, noisy(frame(objects, i), 0.006, 10 + i), 1, eye, noise)
    again = noisy(frame(objects, 5), 0.006, 99)
    same = mask_points(again)
    assert vol.moved_fraction(same, np.zeros(3), noise) < 0.1
    pushed = frame([box(1, 0.0, -0.12)], 6)  # pushed 12 cm away from the camera's side
    moved = mask_points(pushed)
    assert vol.moved_fraction(moved, np.zeros(3), noise) > 0.5
    restart, frac = vol.moved(moved, np.zeros(3), noise)  # most of it moved: no second frame needed
    assert restart and frac > 0.5 and not vol.motion_suspect


def run_motion(fractions: list[float], off_surface: list[float] | None = None) -> list[int]:
    """Frame indices at which the volume restarts for a sequence of motion-test readings
    (and off-surface fractions, 0 when None)."""
    suspect, out = False, []
    offs = off_surface if off_surface is not None else [0.0] * len(fractions)
    for i, (frac, off) in enumerate(zip(fractions, offs, strict=True)):
        moved, suspect = motion_decision(frac, suspect, off)
        if moved:
            out.append(i)
    return out


def test_a_motion_reading_must_persist_unless_most_of_the_surface_moved() -> None:
    # a 45-point kinect_v1 object of the churn scenes: single frames at about 0.3 are noise
    noise = [0.0, 0.021, 0.295, 0.0, 0.036, 0.094, 0.311, 0.0, 0.041, 0.122, 0.179, 0.212, 0.314, 0.0]
    assert run_motion(noise) == []
    assert max(noise) > C.FUSION_MOVED_FREE_FRACTION  # the single-frame rule restarted it
    # a push seen as most of the surface in seen-free space restarts at once
    assert run_motion([0.0, 0.01, 0.86, 0.0]) == [2]
    # a push seen only partly (an occluded object) restarts on the second reading in a row
    assert run_motion([0.0, 0.3, 0.4, 0.0, 0.3, 0.0]) == [2]
    # after a restart the next reading is judged alone again
    assert run_motion([0.3, 0.3, 0.3, 0.3]) == [1, 3]


def test_a_small_push_towards_the_camera_leaves_the_measured_surface() -> None:
    # moved seed 54 of the fusion sequences: a 70-point object pushed 6 cm, partly towards
    # the camera, read 0.397 then 0.213 in seen-free space (one suspect frame, no restart),
    # while every one of its points lay off the surface measured before
    assert run_motion([0.16, 0.24, 0.397, 0.213], off_surface=[0.0, 0.0, 1.0, 1.0]) == [2]
    # depth noise and a misregistered edge band move only part of the points off the
    # measured surface (the churn scenes' padlock: 0.636 after three frames, then 0)
    noise = [0.0, 0.021, 0.295, 0.0, 0.311, 0.036, 0.327, 0.0, 0.343, 0.0, 0.407, 0.0]
    off = [0.0, 0.0, 0.636, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.148, 0.0]
    assert run_motion(noise, off_surface=off) == []
    assert max(off) > 0.5  # "the majority" would have restarted it
    # off the surface alone is not motion: a moving camera sees new surface all the time
    assert run_motion([0.0, 0.1, 0.2], off_surface=[1.0, 1.0, 1.0]) == []


def test_points_off_the_measured_surface_are_counted() -> None:
    objects = [box(1, 0.0, 0.0)]
    f0 = noisy(frame(objects, 0), 0.006, 1)
    noise = estimate_support_plane(f0, default_config(), measure_noise=True).noise_z2  # type: ignore[union-attr]
    shape = cube_shape(mask_points(f0).mean(axis=0))
    eye = np.eye(4)
    vol = TrackVolume.for_shape(shape, eye)
    assert vol.off_surface_fraction(mask_points(f0)) == 0.0  # nothing measured yet
    for i in range(3):
        vol.integrate(shape, noisy(frame(objects, i), 0.006, 10 + i), 1, eye, noise)
    same = mask_points(noisy(frame(objects, 5), 0.006, 99))
    assert vol.off_surface_fraction(same) < 0.05
    rng = np.linalg.norm(same, axis=1, keepdims=True)
    nearer = same * (1.0 - 0.06 / rng)  # the same surface 6 cm nearer the camera
    assert vol.off_surface_fraction(nearer) > 0.95
    assert vol.off_surface_fraction(np.zeros((0, 3))) == 0.0


def test_a_grid_grows_at_most_a_few_times_before_it_restarts() -> None:
    f = frame([box(1, 0.0, 0.0)], 0)
    pts = mask_points(f)
    shape = cube_shape(pts.mean(axis=0))
    vol = TrackVolume.for_shape(shape, np.eye(4))
    vol.integrate(shape, f, 1, np.eye(4))
    near = replace(shape, camera_T_grid=shape.camera_T_grid @ make_transform(np.eye(3), np.full(3, 0.02)))
    vol.integrate(near, f, 1, np.eye(4))  # a little off: the grid grows to cover it
    far = replace(shape, camera_T_grid=shape.camera_T_grid @ make_transform(np.eye(3), np.full(3, 0.5)))
    # a guess half a metre off while the measured surface stays: the guess is kept to the
    # grid (it adds nothing there), the evidence is kept
    dims = vol.dims
    before = vol.guess_sum.copy()
    vol.integrate(far, f, 1, np.eye(4))
    assert vol.frames == 3 and vol.dims == dims
    np.testing.assert_array_equal(vol.guess_sum, before)
    # the measured surface itself half a metre off (the object moved): the volume restarts
    gone = frame([box(1, 0.3, 0.3)], 1)
    assert len(mask_points(gone)) > 100
    with pytest.raises(FusionGrowthError, match="grow"):
        vol.integrate(far, gone, 1, np.eye(4))
    assert vol.frames == 3


def test_a_static_camera_that_moves_is_noticed_but_objects_coming_and_going_are_not() -> None:
    objects = [box(1, -0.1, 0.0), cylinder(2, 0.1, 0.02)]
    check = StaticCameraCheck()
    assert not check.moved(noisy(frame(objects, 0), 0.004, 1), 0.004)
    for i in range(3):  # noise, an object leaving, an object coming back
        assert not check.moved(noisy(frame(objects[: 1 + i % 2], i + 1), 0.004, 2 + i), 0.004)
    # 5 cm up and towards the table (a move parallel to a bare table would leave its depth
    # the same: then only the tracks' own motion test sees it)
    nudged = look_at((0.0, -0.47, 0.55), (0.0, 0.0, 0.04), intrinsics=d435_intrinsics(320, 240))
    assert check.moved(noisy(frame(objects, 5, nudged), 0.004, 9), 0.004)
    # the moved view is the new reference
    assert not check.moved(noisy(frame(objects, 6, nudged), 0.004, 10), 0.004)


def test_from_one_viewpoint_the_shape_is_the_pixel_weighted_guess_mean_until_the_views_spread() -> None:
    """A static camera (or a wrist camera that has not moved): the published occupancy is
    the mean of the frames' guesses, each weighted by its trusted pixels, while the
    observations are still integrated; once the camera has swung 10 degrees around the
    object the observations enter it."""
    f = frame([box(1, 0.0, 0.0)], 0)
    centre = mask_points(f).mean(axis=0)
    small = cube_shape(centre, side=0.08)
    occ_l = np.zeros_like(np.asarray(small.occupancy))
    occ_l[4:20, 4:20, 4:20] = 1.0
    large = replace(small, occupancy=occ_l)  # the same grid, a larger cube guessed
    v, u = np.nonzero(f.labels == 1)
    px = np.stack([u, v], axis=1).astype(np.int32)
    vol = TrackVolume.for_shape(small, np.eye(4))
    vol.integrate(small, f, 1, np.eye(4), surface_pixels=px[:300])
    vol.integrate(large, f, 1, np.eye(4), surface_pixels=px[:100])
    assert vol.view_spread_deg == 0.0 and not vol.views_spread
    assert vol.guess_weight == pytest.approx(400.0)
    # voxel by voxel: (300 * small + 100 * large) / 400 (both resampled without offset)
    o = -np.rint(vol.origin / vol.voxel_size).astype(int)  # the shape's voxel 0 in the volume
    assert np.all(o >= C.FUSION_GRID_MARGIN_VOXELS)
    inner = vol.occupancy()[o[0] + 1 : o[0] + 23, o[1] + 1 : o[1] + 23, o[2] + 1 : o[2] + 23]
    want = (300 * np.asarray(small.occupancy) + 100 * occ_l)[1:23, 1:23, 1:23] / 400
    np.testing.assert_allclose(inner, want, atol=1e-4)
    assert vol.obs_weight.sum() > 1000  # observed all the same
    assert not np.allclose(vol.occupancy(), vol.fused_occupancy())
    # the camera swings 10 degrees about the object: the evidence now counts
    a = np.radians(10.0)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    swing = (
        make_transform(np.eye(3), centre)
        @ make_transform(rot, np.zeros(3))
        @ make_transform(np.eye(3), -centre)
    )
    vol.integrate(small, f, 1, swing, surface_pixels=px[:100])
    assert vol.view_spread_deg == pytest.approx(10.0, abs=1.0) and vol.views_spread
    np.testing.assert_array_equal(vol.occupancy(), vol.fused_occupancy())
