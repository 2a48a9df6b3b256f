"""Observation encoding (sam3d_ros.core.encoding) on an exact ray-cast box."""

from __future__ import annotations

import numpy as np
import pytest

from sam3d_ros.core.config import default_config
from sam3d_ros.core.encoding import (
    CHANNELS,
    FLOOR_VOXELS,
    GRID_SIZE,
    NUM_CHANNELS,
    EncodingError,
    amodal_grid_frame,
    encode_object,
    encode_objects,
    grid_frame,
)
from sam3d_ros.core.frames import invert_transform, make_transform
from sam3d_ros.core.observation import extract_observations
from sam3d_ros.core.support_plane import estimate_support_plane
from sam3d_ros.core.types import SceneContext
from sam3d_ros.sim.raycast import Box, Scene, SceneObject, look_at, render

BOX_SIZE = (0.10, 0.06, 0.08)


@pytest.fixture(scope="module")
def box_scene():
    box = Box(BOX_SIZE, make_transform(np.eye(3), np.array([0.0, 0.0, BOX_SIZE[2] / 2])))
    cam = look_at(eye=(0.05, -0.55, 0.35), target=(0.0, 0.0, 0.04))
    rendered = render(Scene(objects=(SceneObject(1, box),)), cam)
    frame = rendered.to_rgbd_frame()
    cfg = default_config()
    scene = SceneContext(frame=frame, plane=estimate_support_plane(frame, cfg))
    obs, _ = extract_observations(frame, cfg)
    assert len(obs) == 1 and scene.plane is not None
    feats, gf = encode_object(scene, obs[0])
    # voxel centres in the box frame (the box frame is the world frame shifted to the centre)
    centres_g = gf.voxel_centres()
    cam_T_world = cam.camera_T_world
    world_T_grid = invert_transform(cam_T_world) @ gf.camera_T_grid
    pw = centres_g.reshape(-1, 3) @ world_T_grid[:3, :3].T + world_T_grid[:3, 3]
    pb = (pw - box.world_T_object[:3, 3]).reshape(GRID_SIZE, GRID_SIZE, GRID_SIZE, 3)
    return feats, gf, pb, pw.reshape(pb.shape), cam


def _box_sdf(pb: np.ndarray) -> np.ndarray:
    q = np.abs(pb) - 0.5 * np.asarray(BOX_SIZE)
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    inside = np.minimum(q.max(axis=-1), 0.0)
    return outside + inside


def test_shapes_and_exclusive_visibility_channels(box_scene) -> None:
    feats, gf, _, _, _ = box_scene
    assert feats.shape == (NUM_CHANNELS, GRID_SIZE, GRID_SIZE, GRID_SIZE)
    assert feats.dtype == np.float32
    obs, free, unknown = feats[0], feats[1], feats[2]
    np.testing.assert_array_equal(obs + free + unknown, 1.0)
    assert gf.plane_used
    assert np.isclose(gf.voxel_size * GRID_SIZE, gf.side)


def test_observed_voxels_lie_on_the_visible_surface(box_scene) -> None:
    feats, gf, pb, _, _ = box_scene
    sdf = _box_sdf(pb)
    observed = feats[0] > 0.5
    assert observed.sum() > 20
    # a voxel holding a surface point has its centre within half a diagonal of the surface
    assert np.abs(sdf[observed]).max() <= 0.87 * gf.voxel_size + 1e-3


def test_free_space_in_front_and_unknown_behind(box_scene) -> None:
    feats, gf, pb, pw, cam = box_scene
    sdf = _box_sdf(pb)
    free, unknown = feats[1] > 0.5, feats[2] > 0.5
    # nothing inside the box is free
    assert not (free & (sdf < -gf.voxel_size)).any()
    # the deep inside of the box is unknown (behind the visible surface)
    assert unknown[sdf < -gf.voxel_size].all()
    # along the ray from the camera through the box centre: free in front, unknown behind
    eye = cam.world_T_camera[:3, 3]
    centre = np.array([0.0, 0.0, BOX_SIZE[2] / 2])
    d = (centre - eye) / np.linalg.norm(centre - eye)
    rel = pw - eye
    along = rel @ d
    off_ray = np.linalg.norm(rel - along[..., None] * d, axis=-1) < gf.voxel_size
    above_table = pw[..., 2] > 0.005
    front = off_ray & above_table & (sdf > 2 * gf.voxel_size) & (along < np.linalg.norm(centre - eye))
    behind = off_ray & above_table & (sdf > 2 * gf.voxel_size) & (along > np.linalg.norm(centre - eye))
    assert front.any() and behind.any()
    assert free[front].all()
    assert unknown[behind].all()


def test_plane_mask_and_colour_channels(box_scene) -> None:
    feats, _, pb, _, _ = box_scene
    below = feats[CHANNELS.index("below_plane")]
    np.testing.assert_array_equal(below[:, :, :FLOOR_VOXELS], 1.0)
    np.testing.assert_array_equal(below[:, :, FLOOR_VOXELS:], 0.0)
    mask = feats[CHANNELS.index("mask")] > 0.5
    inside = _box_sdf(pb) < -0.005
    assert mask[inside].mean() > 0.95  # every box voxel projects into the box's mask
    assert feats[CHANNELS.index("occluder")].max() == 0.0  # nothing in front of the only object
    rgb = feats[6:9]
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    tsdf = feats[CHANNELS.index("tsdf")]
    assert tsdf.min() >= -1.0 and tsdf.max() <= 1.0
    assert (tsdf[feats[1] > 0.5] > 0).all()  # free space lies in front of the measured depth


def test_batch_encoding_and_errors(box_scene) -> None:
    with pytest.raises(EncodingError, match="finite points"):
        grid_frame(np.full((5, 3), np.nan), None)
    box = Box(BOX_SIZE, make_transform(np.eye(3), np.array([0.0, 0.0, BOX_SIZE[2] / 2])))
    cam = look_at(eye=(0.05, -0.55, 0.35), target=(0.0, 0.0, 0.04))
    frame = render(Scene(objects=(SceneObject(1, box),)), cam).to_rgbd_frame()
    cfg = default_config()
    obs, _ = extract_observations(frame, cfg)
    scene = SceneContext(frame=frame, plane=None)
    x, frames = encode_objects(scene, obs)
    assert x.shape == (1, NUM_CHANNELS, GRID_SIZE, GRID_SIZE, GRID_SIZE)
    assert frames[0] is not None and not frames[0].plane_used
    assert feats_no_plane_ok(x[0])


def feats_no_plane_ok(feats: np.ndarray) -> bool:
    """Without a plane, nothing is marked below it."""
    return bool(feats[CHANNELS.index("below_plane")].max() == 0.0)


def _in_cube(gf, pts_cam: np.ndarray) -> np.ndarray:
    g = (pts_cam - gf.camera_T_grid[:3, 3]) @ gf.camera_T_grid[:3, :3]
    return np.all((g >= gf.origin - 1e-9) & (g <= gf.origin + gf.side + 1e-9), axis=1)


def test_amodal_cube_holds_the_box_and_the_observation_and_respects_the_support(box_scene) -> None:
    _, gf1, _, _, cam = box_scene
    world = Box(BOX_SIZE, make_transform(np.eye(3), np.array([0.0, 0.0, BOX_SIZE[2] / 2])))
    frame_pts = None
    # observed points of the box (the fixture's observation)
    rendered = render(Scene(objects=(SceneObject(1, world),)), cam)
    frame = rendered.to_rgbd_frame()
    cfg = default_config()
    plane = estimate_support_plane(frame, cfg)
    obs, _ = extract_observations(frame, cfg)
    frame_pts = obs[0].points
    cam_T_box = cam.camera_T_world @ world.world_T_object
    # a box twice as deep as the real one (a hidden part behind): the cube must hold it all
    size = np.array([BOX_SIZE[0], 2 * BOX_SIZE[1], BOX_SIZE[2]])
    shifted = cam_T_box @ make_transform(np.eye(3), np.array([0.0, BOX_SIZE[1] / 2, 0.0]))
    gf = amodal_grid_frame(frame_pts, plane, shifted, size)
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * size / 2
    corners_cam = corners @ shifted[:3, :3].T + shifted[:3, 3]
    assert np.all(_in_cube(gf, corners_cam))
    assert _in_cube(gf, frame_pts).mean() > 0.99
    # same axes as stage 1; the support plane lies FLOOR_VOXELS above the cube's bottom
    np.testing.assert_allclose(gf.camera_T_grid, gf1.camera_T_grid, atol=1e-9)
    assert gf.origin[2] == pytest.approx(-FLOOR_VOXELS * gf.voxel_size, abs=1e-9)
    # a box the layout puts on top of something (bottom 5 cm above the table, the
    # observation lifted with it): the cube starts under the box, not at the table
    lift = make_transform(np.eye(3), 0.05 * plane.normal)
    lifted_pts = frame_pts @ lift[:3, :3].T + lift[:3, 3]
    gf_up = amodal_grid_frame(lifted_pts, plane, lift @ cam_T_box, np.asarray(BOX_SIZE))
    from sam3d_ros.core.encoding import AMODAL_BOX_PAD, AMODAL_BOX_PAD_M

    bottom = 0.05 - (BOX_SIZE[2] / 2) * AMODAL_BOX_PAD - AMODAL_BOX_PAD_M  # padded box bottom
    assert gf_up.origin[2] == pytest.approx(bottom - FLOOR_VOXELS * gf_up.voxel_size, abs=2e-3)
    assert gf_up.origin[2] > 0.015
    with pytest.raises(EncodingError):
        amodal_grid_frame(frame_pts, plane, np.full((4, 4), np.nan), size)


def test_stage2_cube_rests_on_the_supporting_object(box_scene) -> None:
    """An object found resting on another one (contact 5 cm above the table): the cube's
    floor and the below-ground channel sit at that object's top, however low the box
    reaches; a contact above the observed bottom never cuts off what was seen."""
    from sam3d_ros.core.constants import SUPPORT_CUT_TOL

    _, _, _, _, cam = box_scene
    world = Box(BOX_SIZE, make_transform(np.eye(3), np.array([0.0, 0.0, 0.05 + BOX_SIZE[2] / 2])))
    frame = render(Scene(objects=(SceneObject(1, world),)), cam).to_rgbd_frame()
    cfg = default_config()
    plane = estimate_support_plane(frame, cfg)
    obs, _ = extract_observations(frame, cfg)
    assert plane is not None and len(obs) == 1
    pts = obs[0].points
    # a layout box that reaches down to the table (the stage-1 guess of a stacked object)
    cam_T_box = cam.camera_T_world @ make_transform(np.eye(3), np.array([0.0, 0.0, (0.05 + BOX_SIZE[2]) / 2]))
    size = np.array([BOX_SIZE[0], BOX_SIZE[1], 0.05 + BOX_SIZE[2]])
    on_table = amodal_grid_frame(pts, plane, cam_T_box, size)
    stacked = amodal_grid_frame(pts, plane, cam_T_box, size, support_height=0.05)
    assert on_table.ground == 0.0 and on_table.origin[2] < 0.0
    ground = 0.05 - SUPPORT_CUT_TOL
    assert stacked.ground == pytest.approx(ground, abs=1e-9)
    assert stacked.origin[2] == pytest.approx(ground - FLOOR_VOXELS * stacked.voxel_size, abs=1e-9)
    assert stacked.side < on_table.side  # the part under the contact is not encoded: finer voxels
    assert _in_cube(stacked, pts).mean() > 0.99
    scene = SceneContext(frame=frame, plane=plane)
    feats, _ = encode_object(scene, obs[0], stacked)
    z = stacked.origin[2] + (np.arange(GRID_SIZE) + 0.5) * stacked.voxel_size
    below = feats[CHANNELS.index("below_plane")]
    np.testing.assert_array_equal(below.any(axis=(0, 1)), z < ground)
    assert below[:, :, z < ground].all()
    # a contact above the observed bottom (a wrong support) is clamped to the bottom seen
    high = amodal_grid_frame(pts, plane, cam_T_box, size, support_height=0.10)
    assert 0.04 < high.ground < 0.06  # the robust (2nd percentile) bottom of the seen points
    assert _in_cube(high, pts).mean() > 0.97
    # without a plane the support is not used
    no_plane = amodal_grid_frame(pts, None, cam_T_box, size, support_height=0.05)
    assert no_plane.ground == 0.0
