"""Tests of the synthetic-data side: ray caster, noise model, scenes and rosbag2 I/O."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.constants import (
    DEFAULT_DEPTH_TOPIC,
    DEFAULT_INFO_TOPIC,
    DEFAULT_MASK_TOPIC,
    DEFAULT_RGB_TOPIC,
)
from sam3d_ros.core.frames import make_transform, transform_points
from sam3d_ros.sim.bag import BagError, depth_to_mm, read_frames, read_ground_truth, write_bag
from sam3d_ros.sim.noise import DepthNoiseConfig, NoiseModelError, apply_depth_noise, axial_sigma
from sam3d_ros.sim.raycast import (
    SIM_FRAME_ID,
    Box,
    Camera,
    Cylinder,
    RaycastError,
    Scene,
    SceneObject,
    Sphere,
    Table,
    look_at,
    render,
    true_mesh,
)
from sam3d_ros.sim.scenes import (
    SceneGenerationError,
    d435_intrinsics,
    random_scene,
    render_sequence,
    sequence,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_BAG = ROOT / "data" / "sample" / "tabletop_sample"

# integer principal point: pixel (cx, cy) looks exactly along the optical axis
K_INT = CameraIntrinsics(width=160, height=120, fx=150.0, fy=150.0, cx=80.0, cy=60.0)


def _at(x: float, y: float, z: float) -> np.ndarray:
    return make_transform(np.eye(3), np.array([x, y, z]))


def _down_camera(height: float, k: CameraIntrinsics = K_INT) -> Camera:
    """Camera at (0, 0, height) looking straight down (image x = world x)."""
    return look_at((0.0, 0.0, height), (0.0, 0.0, 0.0), k, up=(0.0, 1.0, 0.0))


def _ray_dirs(k: CameraIntrinsics) -> np.ndarray:
    vv, uu = np.mgrid[0 : k.height, 0 : k.width]
    return np.stack([(uu - k.cx) / k.fx, (vv - k.cy) / k.fy, np.ones(uu.shape)], axis=-1)


# --------------------------------------------------------------------------- ray caster


def test_plane_depth_matches_analytic_value() -> None:
    cam = _down_camera(0.8)
    f = render(Scene(objects=(), table=Table(half_extents_xy=None)), cam)
    assert np.all(np.isfinite(f.depth))
    np.testing.assert_allclose(f.depth, 0.8, atol=1e-6)
    assert np.all(f.labels == 0)
    np.testing.assert_allclose(f.normals[..., 2], -1.0, atol=1e-6)  # facing the camera

    # tilted camera: depth of each pixel from the ray/plane intersection in closed form
    cam2 = look_at((0.5, -0.2, 0.6), (0.0, 0.1, 0.0), K_INT)
    f2 = render(Scene(objects=(), table=Table(half_extents_xy=None)), cam2)
    d_world = _ray_dirs(K_INT) @ cam2.world_T_camera[:3, :3].T
    expected = -0.6 / d_world[..., 2]
    expected[d_world[..., 2] >= 0] = np.nan
    np.testing.assert_allclose(f2.depth, expected, atol=1e-6)


def test_bounded_table_misses_are_nan() -> None:
    cam = look_at((1.0, 0.0, 0.3), (0.0, 0.0, 0.1), K_INT)
    f = render(Scene(objects=(), table=Table(half_extents_xy=(0.3, 0.3))), cam)
    miss = np.isnan(f.depth)
    assert miss.any() and (~miss).any()
    assert np.all(f.labels[miss] == 0)
    assert np.all(f.rgb[miss] == f.rgb[miss][0])  # plain background colour
    f_none = render(Scene(objects=(), table=None), cam)
    assert np.all(np.isnan(f_none.depth))


def test_box_top_depth_is_exact() -> None:
    size = (0.1, 0.08, 0.06)
    box = Box(size, _at(0.0, 0.0, 0.03))
    f = render(Scene((SceneObject(1, box),)), _down_camera(0.9))
    mask = f.labels == 1
    assert mask.sum() > 100
    np.testing.assert_allclose(f.depth[mask], 0.9 - 0.06, atol=1e-6)
    assert f.labels[60, 80] == 1
    # footprint of the top face in pixels: |x| <= 0.05 at depth 0.84 -> |u - cx| <= fx * 0.05 / 0.84
    half_u = 150.0 * 0.05 / 0.84
    cols = np.nonzero(mask[60])[0]
    assert cols.min() == math.ceil(80 - half_u) and cols.max() == math.floor(80 + half_u)
    # the rest is table at 0.9
    np.testing.assert_allclose(f.depth[~mask], 0.9, atol=1e-6)


def test_sphere_depth_matches_closed_form() -> None:
    r, dist = 0.05, 0.7
    sphere = Sphere(r, _at(0.0, 0.0, 0.2))
    cam = look_at((dist, 0.0, 0.2), (0.0, 0.0, 0.2), K_INT)
    f = render(Scene((SceneObject(3, sphere),), table=None), cam)
    assert f.depth[60, 80] == pytest.approx(dist - r, abs=1e-6)
    d = _ray_dirs(K_INT)
    c = np.array([0.0, 0.0, dist])  # sphere centre in the camera frame
    dc = d @ c
    dd = (d * d).sum(-1)
    disc = dc**2 - dd * (c @ c - r * r)
    hit = disc >= 0
    expected = np.where(hit, (dc - np.sqrt(np.where(hit, disc, 0))) / dd, np.nan)
    np.testing.assert_array_equal(f.labels == 3, hit)
    np.testing.assert_allclose(f.depth, expected, atol=1e-6)
    # ground truth pose: centre straight ahead
    np.testing.assert_allclose(f.objects[0].camera_T_object[:3, 3], c, atol=1e-12)


def test_cylinder_side_and_cap_depth() -> None:
    cyl = Cylinder(0.04, 0.1, _at(0.0, 0.0, 0.05))
    # from above: the cap at z = 0.1
    f = render(Scene((SceneObject(2, cyl),)), _down_camera(0.6))
    np.testing.assert_allclose(f.depth[f.labels == 2], 0.5, atol=1e-6)
    # from the side at the cylinder's mid-height: centre pixel hits the side at dist - r
    cam = look_at((0.5, 0.0, 0.05), (0.0, 0.0, 0.05), K_INT)
    f2 = render(Scene((SceneObject(2, cyl),)), cam)
    assert f2.depth[60, 80] == pytest.approx(0.5 - 0.04, abs=1e-6)
    assert f2.labels[60, 80] == 2


def test_occlusion_labels_and_amodal_masks() -> None:
    cam = look_at((0.8, 0.0, 0.05), (0.0, 0.0, 0.05), K_INT)
    front = SceneObject(1, Sphere(0.03, _at(0.3, 0.0, 0.05)), color=(255, 0, 0))
    back = SceneObject(2, Box((0.1, 0.2, 0.1), _at(0.0, 0.0, 0.05)), color=(0, 0, 255))
    f = render(Scene((front, back)), cam)
    assert f.labels[60, 80] == 1
    assert f.depth[60, 80] == pytest.approx(0.8 - 0.3 - 0.03, abs=1e-6)
    gt = {o.label: o for o in f.objects}
    assert f.amodal_masks[2][60, 80]  # the box is behind the sphere there
    assert gt[2].visible_pixels == int((f.labels == 2).sum()) < gt[2].amodal_pixels
    assert gt[1].visible_pixels == gt[1].amodal_pixels == int(f.amodal_masks[1].sum())
    assert np.all(f.amodal_masks[2][f.labels == 2])
    assert 0.0 < gt[2].visible_fraction < 1.0
    # the box face x = +0.05 is at depth 0.75 where visible
    np.testing.assert_allclose(f.depth[f.labels == 2], 0.75, atol=1e-6)
    # colours follow the labels (shaded red sphere, blue box)
    assert np.all(f.rgb[f.labels == 1][:, 0] > f.rgb[f.labels == 1][:, 2])
    assert np.all(f.rgb[f.labels == 2][:, 2] > f.rgb[f.labels == 2][:, 0])


def test_true_mesh_matches_render_and_frames() -> None:
    ts = random_scene(4, 3, width=320, height=240)
    f = ts.render()
    for obj, gt in zip(ts.scene.objects, f.objects, strict=True):
        m_world = true_mesh(obj)
        m_cam = true_mesh(obj, "camera", ts.camera)
        m_gt = true_mesh(gt, "camera")
        assert m_world.is_watertight
        np.testing.assert_allclose(m_cam.vertices, m_gt.vertices, atol=1e-9)
        np.testing.assert_allclose(
            transform_points(ts.camera.camera_T_world, m_world.vertices), m_cam.vertices, atol=1e-9
        )
        assert m_world.bounds[0, 2] == pytest.approx(0.0, abs=1e-9)  # resting on the table
    with pytest.raises(RaycastError):
        true_mesh(ts.scene.objects[0], "camera")


def test_invalid_shapes_and_cameras_raise() -> None:
    with pytest.raises(RaycastError, match="radius"):
        Sphere(-1.0)
    with pytest.raises(RaycastError, match="size"):
        Box((0.1, 0.0, 0.1))
    with pytest.raises(RaycastError, match="rotation"):
        Box((0.1, 0.1, 0.1), np.diag([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(RaycastError):
        look_at((0, 0, 1), (0, 0, 0))  # parallel to up
    with pytest.raises(RaycastError, match="unique"):
        Scene((SceneObject(1, Sphere(0.1)), SceneObject(1, Sphere(0.1))))


def test_render_640x480_is_fast() -> None:
    ts = random_scene(1, 8)
    ts.render()
    t0 = time.perf_counter()
    f = ts.render()
    assert time.perf_counter() - t0 < 1.0
    assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
    assert f.labels.dtype == np.int32 and f.rgb.dtype == np.uint8 and f.rgb.shape == (480, 640, 3)


# --------------------------------------------------------------------------- scenes


def test_random_scene_is_deterministic() -> None:
    a = random_scene(123, width=320, height=240).render()
    b = random_scene(123, width=320, height=240).render()
    c = random_scene(124, width=320, height=240).render()
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(np.nan_to_num(a.depth), np.nan_to_num(c.depth))


@pytest.mark.parametrize("seed", range(8))
def test_random_scene_constraints(seed: int) -> None:
    ts = random_scene(seed)
    objs = ts.scene.objects
    assert 1 <= len(objs) <= 8
    footprints = []
    for o in objs:
        m = true_mesh(o)
        assert m.bounds[0, 2] == pytest.approx(0.0, abs=1e-9)
        ext = m.bounds[1] - m.bounds[0]
        assert ext[2] >= 0.03 - 1e-9 and ext[2] <= 0.20 + 1e-9
        centre = o.shape.world_T_object[:3, 3]
        footprints.append((centre[:2], np.linalg.norm(m.vertices[:, :2] - centre[:2], axis=1).max()))
    for i in range(len(footprints)):
        for j in range(i):
            (ci, ri), (cj, rj) = footprints[i], footprints[j]
            assert np.linalg.norm(ci - cj) > ri + rj
    eye = ts.camera.world_T_camera[:3, 3]
    view = eye - np.array(ts.target)
    assert np.linalg.norm(view) >= 0.5
    elev = math.degrees(math.asin(view[2] / np.linalg.norm(view)))
    assert 25.0 - 1e-9 <= elev <= 70.0 + 1e-9
    # the camera looks at the target: it projects to the image centre
    u, v, _ = ts.camera.intrinsics.project(transform_points(ts.camera.camera_T_world, np.array(ts.target)))
    assert u[0] == pytest.approx(ts.camera.intrinsics.cx) and v[0] == pytest.approx(ts.camera.intrinsics.cy)


def test_scene_argument_checks_and_intrinsics() -> None:
    with pytest.raises(SceneGenerationError):
        random_scene(0, 9)
    with pytest.raises(SceneGenerationError):
        random_scene(0, 2, shape_types=("cone",))
    k = d435_intrinsics()
    assert (k.width, k.height) == (640, 480) and k.fx == pytest.approx(615.0)
    k2 = d435_intrinsics(320, 240)
    assert k2.fx == pytest.approx(307.5) and k2.cx == pytest.approx((321.1 + 0.5) / 2 - 0.5)
    k3 = d435_intrinsics(424, 240)
    assert k3.fx == pytest.approx(307.5) and k3.cx == pytest.approx(212.0, abs=1.0)


def test_sequence_moves_camera_only() -> None:
    views = sequence(7, 5, 3, width=160, height=120, arc_deg=20.0)
    assert len(views) == 5
    assert all(v.scene is views[0].scene for v in views)
    eyes = np.array([v.camera.world_T_camera[:3, 3] for v in views])
    steps = np.linalg.norm(np.diff(eyes, axis=0), axis=1)
    assert np.all(steps > 1e-3) and np.all(steps < 0.1)
    dists = np.linalg.norm(eyes - np.array(views[0].target), axis=1)
    np.testing.assert_allclose(dists, dists[0])
    frames = render_sequence(views, noise=DepthNoiseConfig(), start_stamp_ns=1000, period_ns=50)
    assert [f.stamp_ns for f in frames] == [1000, 1050, 1100, 1150, 1200]


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize("z", [0.6, 1.0, 2.0])
def test_axial_noise_matches_sigma(z: float) -> None:
    depth = np.full((300, 400), z, dtype=np.float32)
    noisy = apply_depth_noise(depth, np.random.default_rng(5), DepthNoiseConfig.gaussian_only())
    err = noisy.astype(np.float64) - z
    sigma = float(axial_sigma(z))
    assert sigma == pytest.approx(0.0012 + 0.0019 * (z - 0.4) ** 2)
    assert abs(err.mean()) < 0.05 * sigma
    assert err.std() == pytest.approx(sigma, rel=0.03)


def test_full_noise_quantises_and_drops() -> None:
    depth = np.full((200, 300), 1.0, dtype=np.float32)
    cfg = DepthNoiseConfig(dropout_prob=0.05, hole_rate=0.0)
    noisy = apply_depth_noise(depth, 1, cfg)
    valid = np.isfinite(noisy)
    assert 0.04 < 1.0 - valid.mean() < 0.06
    mm = noisy[valid].astype(np.float64) * 1000.0
    np.testing.assert_allclose(mm, np.round(mm), atol=1e-3)
    sig = float(axial_sigma(1.0))
    assert noisy[valid].std() == pytest.approx(math.sqrt(sig**2 + 1e-6 / 12), rel=0.05)
    # determinism and disabling
    np.testing.assert_array_equal(noisy, apply_depth_noise(depth, 1, cfg))
    assert not np.array_equal(noisy, apply_depth_noise(depth, 2, cfg))
    np.testing.assert_array_equal(apply_depth_noise(depth, 1, DepthNoiseConfig.disabled()), depth)


def test_flying_pixels_and_holes() -> None:
    depth = np.full((50, 60), 1.0, dtype=np.float32)
    depth[:, 30:] = 0.5
    cfg = DepthNoiseConfig(
        sigma_base_m=0.0,
        sigma_quad_per_m=0.0,
        quantization_m=0.0,
        dropout_prob=0.0,
        hole_rate=0.0,
        flying_pixel_prob=1.0,
    )
    noisy = apply_depth_noise(depth, 0, cfg)
    edge_cols = noisy[:, 29:31]
    assert np.all((edge_cols >= 0.5) & (edge_cols <= 1.0))
    assert np.mean((edge_cols > 0.5 + 1e-6) & (edge_cols < 1.0 - 1e-6)) > 0.9  # mixed depths
    np.testing.assert_array_equal(noisy[:, :29], depth[:, :29])
    np.testing.assert_array_equal(noisy[:, 31:], depth[:, 31:])
    holes = apply_depth_noise(
        depth,
        3,
        DepthNoiseConfig(hole_rate=20.0, dropout_prob=0.0, flying_pixel_prob=0.0, hole_radius_px=(2, 3)),
    )
    assert np.isnan(holes).sum() >= 9  # at least one disc of radius >= 2 px
    with pytest.raises(NoiseModelError):
        DepthNoiseConfig(dropout_prob=1.5)


# --------------------------------------------------------------------------- bags


@pytest.fixture(scope="module")
def bag_frames() -> list:
    views = sequence(21, 3, 3, width=96, height=72, distance_range=(0.4, 0.5))
    return render_sequence(
        views, noise=DepthNoiseConfig(), noise_seed=3, start_stamp_ns=1_600_000_000_123_456_789
    )


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip(tmp_path: Path, bag_frames: list, storage: str) -> None:
    path = write_bag(tmp_path / f"bag_{storage}", bag_frames, storage=storage)  # type: ignore[arg-type]
    # raw check with rosbags: topics, types, encodings, stamps = bag timestamps
    ts = get_typestore(Stores.ROS2_KILTED)
    suffix = {"mcap": ".mcap", "sqlite3": ".db3"}[storage]
    assert [p.suffix for p in path.iterdir() if p.suffix in (".mcap", ".db3")] == [suffix]
    with Reader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {
            DEFAULT_RGB_TOPIC: "sensor_msgs/msg/Image",
            DEFAULT_DEPTH_TOPIC: "sensor_msgs/msg/Image",
            DEFAULT_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
            DEFAULT_MASK_TOPIC: "sensor_msgs/msg/Image",
        }
        seen: dict[str, list[int]] = {}
        for conn, t, raw in reader.messages():
            msg: Any = ts.deserialize_cdr(raw, conn.msgtype)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert stamp == t
            assert msg.header.frame_id == SIM_FRAME_ID
            seen.setdefault(conn.topic, []).append(t)
            if conn.topic == DEFAULT_DEPTH_TOPIC or conn.topic == DEFAULT_MASK_TOPIC:
                assert msg.encoding == "16UC1" and msg.step == 2 * msg.width
            elif conn.topic == DEFAULT_RGB_TOPIC:
                assert msg.encoding == "rgb8" and msg.step == 3 * msg.width
            else:
                assert msg.distortion_model == "plumb_bob" and np.all(msg.d == 0)
                assert msg.p[0] == msg.k[0] and msg.p[6] == msg.k[5] and msg.k[8] == 1.0
    stamps = [f.stamp_ns for f in bag_frames]
    assert all(sorted(v) == stamps for v in seen.values()) and len(seen) == 4

    back = read_frames(path)
    assert [f.stamp_ns for f in back] == stamps
    for orig, got in zip(bag_frames, back, strict=True):
        np.testing.assert_array_equal(got.rgb, orig.rgb)
        np.testing.assert_array_equal(got.labels, orig.labels)
        np.testing.assert_array_equal(depth_to_mm(got.depth), depth_to_mm(orig.depth))
        np.testing.assert_array_equal(np.isnan(got.depth), np.isnan(orig.depth))
        np.testing.assert_allclose(got.depth, orig.depth, atol=5e-4 + 1e-6)
        assert got.camera == orig.camera.intrinsics
        assert got.frame_id == SIM_FRAME_ID

    gt = read_ground_truth(path)
    assert gt.camera == bag_frames[0].camera.intrinsics and gt.frame_id == SIM_FRAME_ID
    assert [f.stamp_ns for f in gt.frames] == stamps
    for fgt, orig in zip(gt.frames, bag_frames, strict=True):
        np.testing.assert_allclose(fgt.world_T_camera, orig.camera.world_T_camera)
        for a, b in zip(fgt.objects, orig.objects, strict=True):
            assert (a.label, a.shape_type, a.params) == (b.label, b.shape_type, b.params)
            np.testing.assert_allclose(a.camera_T_object, b.camera_T_object, atol=1e-15)
            assert a.visible_pixels == b.visible_pixels and a.amodal_pixels == b.amodal_pixels
    assert len(read_ground_truth(path / "ground_truth.json").frames) == len(stamps)  # the file path works too


def test_bag_rejects_bad_input(tmp_path: Path, bag_frames: list) -> None:
    with pytest.raises(BagError, match="increasing"):
        write_bag(tmp_path / "a", bag_frames, stamps_ns=[3, 2, 1])
    with pytest.raises(BagError, match="storage"):
        write_bag(tmp_path / "b", bag_frames, storage="rosbag1")  # type: ignore[arg-type]
    write_bag(tmp_path / "c", bag_frames[:1])
    with pytest.raises(BagError, match="exists"):
        write_bag(tmp_path / "c", bag_frames[:1])
    with pytest.raises(BagError):
        read_ground_truth(tmp_path / "missing")


def test_bundled_sample_bag() -> None:
    assert SAMPLE_BAG.is_dir()
    size = sum(p.stat().st_size for p in SAMPLE_BAG.rglob("*") if p.is_file())
    assert size < 5_000_000
    frames = read_frames(SAMPLE_BAG)
    gt = read_ground_truth(SAMPLE_BAG)
    assert len(frames) == len(gt.frames) >= 4
    assert [f.stamp_ns for f in frames] == [g.stamp_ns for g in gt.frames]
    for f, g in zip(frames, gt.frames, strict=True):
        assert 3 <= len(g.objects) <= 4
        labels_present = set(np.unique(f.labels).tolist()) - {0}
        assert labels_present == {o.label for o in g.objects if o.visible_pixels > 0}
        for o in g.objects:
            assert int((f.labels == o.label).sum()) == o.visible_pixels
