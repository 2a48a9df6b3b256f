"""Tests of the scene generator, mesh sources, splits, the dataset format and bag export."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from scipy.spatial import ConvexHull

from sam3d_ros.core.constants import (
    DEFAULT_DEPTH_TOPIC,
    DEFAULT_INFO_TOPIC,
    DEFAULT_MASK_TOPIC,
    DEFAULT_RGB_TOPIC,
)
from sam3d_ros.core.frames import transform_points
from sam3d_ros.core.metrics import render_mesh_depth
from sam3d_ros.sim import mesh_sources as ms
from sam3d_ros.sim import procedural
from sam3d_ros.sim.dataset import DatasetError, export_bag, generate_dataset, load_dataset, split_statistics
from sam3d_ros.sim.generator import TARGET_SHARES, GeneratorConfig, GeneratorError, generate_frame
from sam3d_ros.sim.noise import DepthNoiseConfig
from sam3d_ros.sim.sensors import SENSOR_PROFILES
from sam3d_ros.sim.splits import SPLITS, SplitError, filter_split, split_of

pytest.importorskip("pybullet")

SMALL = GeneratorConfig(width=160, height=120, min_objects=3, max_objects=6, hd_fraction=0.0)
CLEAN = GeneratorConfig(
    width=160, height=120, min_objects=3, max_objects=6, noise=DepthNoiseConfig.disabled(), sensors=()
)
LEGACY = GeneratorConfig(width=160, height=120, min_objects=3, max_objects=6, sensors=())
#: Clutter tests render at 320x240 (sensor models need a few pixels per object).
CLUTTER = dict(width=320, height=240, hd_fraction=0.0)


@pytest.fixture(scope="module")
def frames() -> list:
    return [generate_frame(11, i, "train", CLEAN) for i in range(3)]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gen") / "ds"
    generate_dataset(root, 3, seed=4, split="test", workers=2, config=SMALL)
    return root


def test_frame_is_deterministic_per_seed() -> None:
    a = generate_frame(3, 1, "val", SMALL)
    b = generate_frame(3, 1, "val", SMALL)
    c = generate_frame(4, 1, "val", SMALL)
    assert np.array_equal(a.rgb, b.rgb)
    assert np.array_equal(a.depth, b.depth, equal_nan=True)
    assert np.array_equal(a.labels, b.labels)
    assert [o.mesh_ref for o in a.objects] == [o.mesh_ref for o in b.objects]
    for oa, ob in zip(a.objects, b.objects, strict=True):
        assert np.array_equal(oa.camera_T_object, ob.camera_T_object)
    assert not np.array_equal(a.rgb, c.rgb)


def test_frame_does_not_depend_on_what_the_process_rendered_before() -> None:
    first = generate_frame(3, 2, "val", SMALL)
    for i in range(12):  # well over 64 textures (the old file-name cycle)
        generate_frame(9, i, "val", SMALL)
    again = generate_frame(3, 2, "val", SMALL)
    assert np.array_equal(first.rgb, again.rgb)
    assert np.array_equal(first.depth, again.depth, equal_nan=True)


def test_objects_rest_on_table_without_interpenetration(frames: list) -> None:
    for f in frames:
        hulls = []
        for o in f.objects:
            v = transform_points(o.world_T_object, np.asarray(ms.resolve_mesh(o.mesh_ref, o.scale).vertices))
            low = float(v[:, 2].min())
            assert low > -0.003, f"{o.mesh_ref} sinks {low:.4f} m into the table"
            hulls.append((o.mesh_ref, v, ConvexHull(v)))
        # every object rests on the table or on another object: the lowest object of each
        # frame touches the table
        lows = [float(v[:, 2].min()) for _, v, _ in hulls]
        assert min(lows) < 0.003
        # no vertex of one hull lies deeper than 4 mm inside another hull
        for i, (ra, va, _) in enumerate(hulls):
            for j, (rb, _, hb) in enumerate(hulls):
                if i == j:
                    continue
                depth_inside = -(va @ hb.equations[:, :3].T + hb.equations[:, 3]).max(axis=1)
                assert depth_inside.max() < 0.004, f"{ra} penetrates {rb} by {depth_inside.max():.4f} m"


def test_depth_matches_posed_meshes_and_masks_are_consistent(frames: list) -> None:
    for f in frames:
        assert int(f.labels.max()) <= len(f.objects)
        for o in f.objects:
            mesh = ms.resolve_mesh(o.mesh_ref, o.scale)
            v = transform_points(o.camera_T_object, np.asarray(mesh.vertices))
            rendered = render_mesh_depth((v, np.asarray(mesh.faces)), f.intrinsics)
            vis = f.labels == o.label
            assert o.visible_pixels == int(vis.sum())
            assert o.visible_pixels <= o.amodal_pixels == int(o.amodal_mask.sum())
            assert not (vis & ~o.amodal_mask).any()
            if o.visible_pixels:
                # clean depth: the TinyRenderer z-buffer equals the exact mesh depth
                res = np.abs(f.depth_clean[vis] - rendered[vis])
                res = res[np.isfinite(res)]
                assert len(res) >= 0.95 * o.visible_pixels
                assert float(np.median(res)) < 5e-4, o.mesh_ref


def test_noise_model_applied() -> None:
    f = generate_frame(3, 0, "val", LEGACY)
    ok = np.isfinite(f.depth) & np.isfinite(f.depth_clean)
    diff = np.abs(f.depth[ok] - f.depth_clean[ok])
    assert 0.0005 < float(np.median(diff)) < 0.01
    # millimetre quantisation
    assert np.allclose(f.depth[ok] * 1000, np.round(f.depth[ok] * 1000), atol=1e-3)


def test_splits_disjoint_stable_and_used() -> None:
    ids = [ms.object_id(f"ycb:{n}") for n in ms.ycb_names()]
    ids += [ms.object_id(ms.pybullet_random_ref(i)) for i in range(ms.PYBULLET_RANDOM_COUNT)]
    ids += [ms.object_id(ms.procedural_ref(fam, i)) for fam in procedural.FAMILIES for i in range(50)]
    parts = {s: set(filter_split(ids, s)) for s in SPLITS}
    assert sum(len(p) for p in parts.values()) == len(set(ids))
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    assert len(parts["train"]) > len(parts["val"]) > len(parts["test"]) > 0
    # pinned assignments: changing the hash or the salt would reshuffle every split
    assert split_of("ycb:apple") == "test"
    assert split_of("ycb:dice") == "val"
    assert split_of("ycb:hammer") == "train"
    with pytest.raises(SplitError):
        filter_split(ids, "holdout")
    # a generated frame only holds objects of its split
    for o in generate_frame(5, 0, "val", SMALL).objects:
        assert split_of(ms.object_id(o.mesh_ref)) == "val"


def test_procedural_families_watertight_and_sized() -> None:
    for fam in procedural.FAMILIES + procedural.THIN_FAMILIES:
        m = procedural.make_procedural(fam, 7)
        assert m.is_watertight, fam
        lo = procedural.THIN_MIN_SIZE_M if fam in procedural.THIN_FAMILIES else procedural.MIN_SIZE_M
        assert lo * 0.999 <= float(m.extents.max()) <= procedural.MAX_SIZE_M * 1.001
        assert np.allclose(m.bounds.mean(axis=0), 0.0, atol=1e-9)
        assert np.array_equal(m.vertices, procedural.make_procedural(fam, 7).vertices)
    with pytest.raises(procedural.ProceduralError):
        procedural.make_procedural("teapot", 0)


def test_thin_families_are_thin() -> None:
    """Plates are flat, rods and blades long and thin: the smallest extent is at most a
    fifth of the longest for every one of 30 objects per family, and a rod's shaft and a
    plate's hollow leave most of the bounding box empty."""
    for fam in procedural.THIN_FAMILIES:
        for i in range(30):
            m = procedural.make_procedural(fam, i)
            e = np.sort(m.extents)
            assert e[0] <= 0.2 * e[2], (fam, i, e)
            if fam != "blade":  # a blade may be a plain flat bar
                assert m.volume < 0.8 * float(np.prod(e)), (fam, i)
    plate = procedural.make_procedural("plate", 3)
    assert plate.extents[2] < 0.2 * plate.extents[0]  # lies flat on z as designed


def test_thin_fraction_draws_thin_families_and_keeps_old_splits() -> None:
    # without thin families the draw is the one of the splits generated before they existed
    # (pinned: the same frame as stored in the cluttered world's datasets)
    refs = [o.mesh_ref for o in generate_frame(0, 0, "val", SMALL).objects]
    assert refs == [
        "ycb:b_lego_duplo",
        "ycb:adjustable_wrench",
        "procedural:bottle_09707.ply",
        "pybullet:random_urdfs/713/713.obj",
        "ycb:dice",
        "ycb:phillips_screwdriver",
    ]
    plain = replace(SMALL, source_weights={"procedural": 1.0})
    thin = replace(plain, thin_fraction=1.0)
    for cfg, families in ((thin, procedural.THIN_FAMILIES), (plain, procedural.FAMILIES)):
        frame = generate_frame(1, 5, "train", cfg)
        for o in frame.objects:
            family = ms.split_ref(o.mesh_ref)[1].rsplit("_", 1)[0]
            assert family in families, o.mesh_ref
            assert split_of(ms.object_id(o.mesh_ref)) == "train"
    assert thin.to_json()["thin_fraction"] == 1.0
    with pytest.raises(GeneratorError):
        GeneratorConfig(thin_fraction=1.5)


def test_mesh_refs() -> None:
    with pytest.raises(ms.MeshSourceError):
        ms.split_ref("nope:thing")
    with pytest.raises(ms.MeshSourceError):
        ms.split_ref("pybullet:../../etc/passwd")
    duck = ms.resolve_mesh("pybullet:duck.obj", 0.05)
    assert np.allclose(duck.bounds.mean(axis=0), 0.0, atol=1e-9)
    assert 0.03 < float(duck.extents.max()) < 0.12


def test_ycb_meshes_are_centred_in_metres(ycb: None) -> None:
    assert len(ms.ycb_names()) >= 50
    m = ms.resolve_mesh("ycb:apple")
    assert np.allclose(m.bounds.mean(axis=0), 0.0, atol=1e-9)
    assert 0.06 < float(m.extents.max()) < 0.09
    assert m.is_watertight


def test_dataset_round_trip(dataset_dir: Path) -> None:
    ds = load_dataset(dataset_dir)
    assert len(ds) == 3 and ds.split == "test"
    doc = json.loads((dataset_dir / "dataset.json").read_text())
    assert doc["format"] == "sam3d_ros/dataset" and doc["version"] == 2
    stats = doc["statistics"]
    assert stats["objects"] == doc["num_objects"] and set(stats["shares"]) == set(TARGET_SHARES)
    again = generate_frame(4, 1, "test", SMALL)  # frame 1, regenerated in this process
    truth = ds.frames[1]
    rgbd = ds.rgbd(truth)
    assert np.array_equal(rgbd.rgb, again.rgb)
    assert np.array_equal(rgbd.labels, again.labels.astype(np.int32))
    ok = np.isfinite(again.depth)
    assert np.array_equal(ok, np.isfinite(rgbd.depth))
    assert np.allclose(rgbd.depth[ok], again.depth[ok], atol=6e-4)
    for o, g in zip(truth.objects, again.objects, strict=True):
        assert o.mesh_ref == g.mesh_ref and o.visible_pixels == g.visible_pixels
        assert np.allclose(o.camera_T_object, g.camera_T_object, atol=1e-8)
        assert np.array_equal(ds.amodal_mask(truth, o), g.amodal_mask)
        mesh = ds.object_mesh(o, "camera")
        assert np.allclose(
            mesh.vertices,
            transform_points(g.camera_T_object, ms.resolve_mesh(g.mesh_ref, g.scale).vertices),
            atol=1e-6,
        )
        if o.mesh_ref.startswith("procedural:"):
            assert (dataset_dir / "meshes" / o.mesh_ref.split(":", 1)[1]).is_file()
    with pytest.raises(DatasetError):
        generate_dataset(dataset_dir, 1, seed=4, split="test", config=SMALL)
    with pytest.raises(DatasetError):
        load_dataset(dataset_dir / "frames")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_export_readable(dataset_dir: Path, tmp_path: Path, storage: str) -> None:
    ds = load_dataset(dataset_dir)
    bag = export_bag(ds, tmp_path / f"bag_{storage}", storage)  # type: ignore[arg-type]
    with Reader(bag) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {
            DEFAULT_RGB_TOPIC: "sensor_msgs/msg/Image",
            DEFAULT_DEPTH_TOPIC: "sensor_msgs/msg/Image",
            DEFAULT_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
            DEFAULT_MASK_TOPIC: "sensor_msgs/msg/Image",
        }
        assert reader.message_count == 4 * len(ds)
    from_bag = load_dataset(bag)
    assert from_bag.is_bag and [f.stamp_ns for f in from_bag] == [f.stamp_ns for f in ds]
    a, b = ds.rgbd(ds.frames[0]), from_bag.rgbd(from_bag.frames[0])
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.depth, b.depth, equal_nan=True)
    assert a.camera == b.camera
    o = from_bag.frames[0].objects[0]
    assert len(from_bag.object_mesh(o).vertices) > 0


def test_config_validation() -> None:
    with pytest.raises(GeneratorError):
        GeneratorConfig(min_objects=0)
    with pytest.raises(GeneratorError):
        GeneratorConfig(source_weights={"lego": 1.0})
    with pytest.raises(SplitError):
        generate_frame(0, 0, "holdout", SMALL)


def test_resume_keeps_finished_frames(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    generate_dataset(root, 2, seed=4, split="test", config=SMALL)
    full = json.loads((root / "dataset.json").read_text())
    # an interrupted run: no dataset.json, frame 1 unfinished (frame.json is written last)
    (root / "dataset.json").unlink()
    (root / "frames" / "000001" / "frame.json").unlink()
    marker = root / "frames" / "000000" / "frame.json"
    before = marker.stat().st_mtime_ns
    summary = generate_dataset(root, 2, seed=4, split="test", config=SMALL, resume=True)
    assert summary["reused_frames"] == 1 and marker.stat().st_mtime_ns == before
    assert json.loads((root / "dataset.json").read_text())["frames"] == full["frames"]


def test_unusable_pybullet_mesh_is_redrawn() -> None:
    from sam3d_ros.sim import generator

    broken = "pybullet:random_urdfs/168/168.obj"  # every vertex is NaN in pybullet_data
    with pytest.raises(ms.MeshSourceError, match="no triangles"):
        ms.load_source(broken)
    assert not generator._usable_mesh(broken)
    assert generator._usable_mesh("pybullet:random_urdfs/000/000.obj")


def _world_vertices(o) -> np.ndarray:  # type: ignore[no-untyped-def]
    return transform_points(o.world_T_object, np.asarray(ms.resolve_mesh(o.mesh_ref, o.scale).vertices))


def test_stacked_objects_rest_on_their_supporters() -> None:
    cfg = GeneratorConfig(scene_weights={"stack": 1.0}, border_fraction=0.0, **CLUTTER)  # type: ignore[arg-type]
    stacked = 0
    for i in range(4):
        f = generate_frame(5, i, "val", cfg)
        assert f.scene_kind == "stack" and f.sensor in SENSOR_PROFILES
        by_label = {o.label: o for o in f.objects}
        for o in f.objects:
            low = float(_world_vertices(o)[:, 2].min())
            assert o.on_table == (low < 0.004), (o.mesh_ref, low)
            if o.on_table:
                continue
            stacked += 1
            # it rests on something: the top of one of its supporters reaches its bottom
            assert o.supported_by, o.mesh_ref
            tops = [float(_world_vertices(by_label[s])[:, 2].max()) for s in o.supported_by]
            assert max(tops) > low - 0.01
    assert stacked >= 2


def test_border_cut_objects_count_their_hidden_silhouette() -> None:
    cfg = GeneratorConfig(border_fraction=1.0, **CLUTTER)  # type: ignore[arg-type]
    cut = 0
    for i in range(4):
        f = generate_frame(6, i, "val", cfg)
        for o in f.objects:
            assert o.amodal_pixels_full >= o.amodal_pixels == int(o.amodal_mask.sum())
            m = o.amodal_mask
            on_edge = bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
            if o.cut_by_border:
                cut += 1
                assert on_edge and o.amodal_pixels_full > o.amodal_pixels
                assert o.visible_fraction <= o.amodal_pixels / o.amodal_pixels_full + 1e-9
            elif not on_edge:
                assert o.amodal_pixels_full == o.amodal_pixels
    assert cut >= 2


def test_bin_walls_hold_the_objects() -> None:
    from sam3d_ros.sim.generator import BIN_HALF_X_RANGE, BIN_HALF_Y_RANGE

    cfg = GeneratorConfig(scene_weights={"bin": 1.0}, border_fraction=0.0, **CLUTTER)  # type: ignore[arg-type]
    inside, total = 0, 0
    for i in range(3):
        f = generate_frame(7, i, "val", cfg)
        assert f.scene_kind == "bin"
        for o in f.objects:
            c = o.world_T_object[:3, 3]
            total += 1
            inside += int(abs(c[0]) < BIN_HALF_X_RANGE[1] and abs(c[1]) < BIN_HALF_Y_RANGE[1])
    # a few fall over the walls from the top of the heap, as in a real bin
    assert inside >= 0.75 * total


def test_sensor_profiles_and_hd_frames() -> None:
    for name in ("realsense_d435", "azure_kinect"):
        cfg = GeneratorConfig(
            sensors=(name,), hd_fraction=1.0, min_objects=1, max_objects=2, border_fraction=0.0
        )
        f = generate_frame(8, 0, "val", cfg)
        assert f.sensor == name and (f.intrinsics.width, f.intrinsics.height) == (1280, 720)
        assert 500.0 < f.intrinsics.fx < 1100.0
        ok = np.isfinite(f.depth) & np.isfinite(f.depth_clean)
        assert ok.sum() > 0.3 * np.isfinite(f.depth_clean).sum()
    with pytest.raises(GeneratorError, match="sensors"):
        GeneratorConfig(sensors=("lidar",))
    with pytest.raises(GeneratorError, match="scene_weights"):
        GeneratorConfig(scene_weights={"shelf": 1.0})


def test_split_statistics_shares() -> None:
    def obj(label: int, vis: int, amodal: int, on_table: bool = True, cut: bool = False) -> dict:
        return {
            "label": label,
            "mesh": "procedural:box_00000.ply",
            "scale": 1.0,
            "camera_T_object": np.eye(4).tolist(),
            "world_T_object": np.eye(4).tolist(),
            "visible_pixels": vis,
            "amodal_pixels": amodal,
            "amodal_pixels_full": amodal,
            "cut_by_border": cut,
            "on_table": on_table,
        }

    frames = [
        {
            "scene": "pile",
            "sensor": "kinect_v1",
            "objects": [obj(1, 100, 100), obj(2, 50, 200, on_table=False)],
        },
        {"scene": "bin", "sensor": "azure_kinect", "objects": [obj(1, 80, 160, cut=True), obj(2, 10, 100)]},
    ]
    st = split_statistics(frames, min_visible_pixels=50)
    assert st["objects"] == 4 and st["scored_objects"] == 3
    assert st["shares"] == {
        "visible<0.6": round(2 / 3, 4),
        "visible<0.35": round(1 / 3, 4),
        "not_on_table": round(1 / 3, 4),
        "cut_by_border": round(1 / 3, 4),
    }
    assert st["targets_met"] and st["scored_by_scene"] == {"bin": 1, "pile": 2}
