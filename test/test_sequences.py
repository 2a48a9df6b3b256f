"""Camera sequences of the cluttered world (sam3d_ros.sim.sequences): deterministic, one
appearance and one set of labels per sequence, and the camera paths and scene changes each
kind promises. Small images (160x120) and few views keep the file under a minute."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sam3d_ros.core.metrics import render_mesh_depth
from sam3d_ros.sim import sensors
from sam3d_ros.sim.generator import SENSOR_RANGE_MARGIN, GeneratedFrame, GeneratorConfig
from sam3d_ros.sim.sequences import (
    APPROACH_END_M,
    APPROACH_START_M,
    MIN_OBJECTS,
    MOVE_CLEARANCE_M,
    MOVE_M,
    SequenceError,
    footprint,
    footprint_gap,
    generate_sequence,
    object_mesh,
    to_rgbd_frame,
)

SMALL = GeneratorConfig(width=160, height=120)
#: The legacy colour model (no sensor profile, no depth noise): colour noise 2 levels per
#: view, so two views of one static scene differ by little more than that.
LEGACY = GeneratorConfig(width=160, height=120, sensors=())


def _pose(f: GeneratedFrame, label: int) -> np.ndarray:
    return next(o.world_T_object for o in f.objects if o.label == label)


def _aim(f: GeneratedFrame, point: np.ndarray) -> float:
    """Cosine between the optical axis and the ray to ``point`` (world)."""
    d = point - f.world_T_camera[:3, 3]
    return float(d @ f.world_T_camera[:3, 2] / np.linalg.norm(d))


def test_orbit_is_deterministic_with_one_sensor_one_appearance_and_stable_labels() -> None:
    a = generate_sequence(3, "orbit", 4, config=SMALL)
    generate_sequence(3, "approach", 3, config=SMALL)  # what the process did before does not matter
    b = generate_sequence(3, "orbit", 4, config=SMALL)
    assert a.kind == "orbit" and a.layout in ("cluster", "pile", "bin", "stack")
    for fa, fb in zip(a.frames, b.frames, strict=True):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.labels, fb.labels)
        assert np.array_equal(fa.depth, fb.depth, equal_nan=True)
        assert np.array_equal(fa.world_T_camera, fb.world_T_camera)
    assert [f.index for f in a.frames] == [0, 1, 2, 3]
    assert np.all(np.diff([f.stamp_ns for f in a.frames]) == 100_000_000)
    labels = [tuple(o.label for o in f.objects) for f in a.frames]
    assert len(set(labels)) == 1 and len(labels[0]) >= MIN_OBJECTS
    assert set(a.present) == {labels[0]}
    assert len({f.sensor for f in a.frames}) == 1 and len({f.intrinsics for f in a.frames}) == 1
    assert all(f.lighting == a.frames[0].lighting for f in a.frames)  # one light
    assert len({(o.label, o.mesh_ref, o.color) for f in a.frames for o in f.objects}) == len(labels[0])
    # the objects stay where they settled; the camera circles their centre at one distance
    for f in a.frames[1:]:
        for o in a.frames[0].objects:
            np.testing.assert_array_equal(_pose(f, o.label), o.world_T_object)
    centre = np.mean([o.world_T_object[:3, 3] for o in a.frames[0].objects], axis=0)
    dist = [float(np.linalg.norm(f.world_T_camera[:3, 3] - centre)) for f in a.frames]
    assert max(dist) - min(dist) < 1e-9
    assert all(_aim(f, centre) > 0.9999 for f in a.frames)
    d0, d1 = (a.frames[i].world_T_camera[:2, 3] - centre[:2] for i in (0, -1))
    turn = math.degrees(math.acos(float(d0 @ d1 / np.linalg.norm(d0) / np.linalg.norm(d1))))
    assert 89.0 < turn < 151.0
    seen = [o.visible_pixels > 0 for f in a.frames for o in f.objects]
    assert sum(seen) >= 0.5 * len(seen)


def test_a_static_camera_sees_one_appearance_in_every_view() -> None:
    s = generate_sequence(2, "moved", 4, config=LEGACY)
    before = s.frames[: s.moved_at]
    assert len(before) >= 2
    for f in before[1:]:
        assert np.array_equal(f.depth_clean, before[0].depth_clean, equal_nan=True)
        assert np.array_equal(f.labels, before[0].labels)
        diff = np.abs(f.rgb.astype(np.int16) - before[0].rgb.astype(np.int16))
        assert float(diff.mean()) < 3.0  # the per-view colour noise only
        assert not np.array_equal(f.rgb, before[0].rgb)  # ... which is drawn per view


def test_approach_moves_in_on_its_target_within_the_sensor_range() -> None:
    s = generate_sequence(4, "approach", 5, config=SMALL)
    assert s.target_label in s.present[0]
    goal = _pose(s.frames[0], s.target_label)[:3, 3]
    dist = [float(np.linalg.norm(f.world_T_camera[:3, 3] - goal)) for f in s.frames]
    assert all(_aim(f, goal) > 0.9999 for f in s.frames)
    assert all(b < a for a, b in itertools.pairwise(dist))
    nearest = SENSOR_RANGE_MARGIN * sensors.sensor_profile(s.sensor).min_range_m
    assert APPROACH_START_M[0] - 1e-9 <= dist[0] <= APPROACH_START_M[1] + 1e-9
    assert max(APPROACH_END_M[0], nearest) - 1e-9 <= dist[-1] <= max(APPROACH_END_M[1], nearest) + 1e-9
    heights = [f.world_T_camera[2, 3] for f in s.frames]
    assert heights[-1] < heights[0]  # from high, lower in
    target_px = [next(o.visible_pixels for o in f.objects if o.label == s.target_label) for f in s.frames]
    assert target_px[-1] > target_px[0] > 0  # it grows in the image


def test_static_camera_with_one_object_added_and_one_removed() -> None:
    s = generate_sequence(2, "static_add_remove", 6, config=SMALL)
    assert all(np.array_equal(f.world_T_camera, s.frames[0].world_T_camera) for f in s.frames)
    assert s.added_label and s.removed_label and s.added_label != s.removed_label
    assert (s.added_at, s.removed_at) == (2, 4)
    everyone = set().union(*map(set, s.present))
    for v, f in enumerate(s.frames):
        expect = everyone - ({s.added_label} if v < s.added_at else set())
        expect -= {s.removed_label} if v >= s.removed_at else set()
        assert set(s.present[v]) == expect, v
        assert {o.label for o in f.objects} == set(s.present[v])
        assert set(np.unique(f.labels).tolist()) - {0} <= set(s.present[v])  # absent: not rendered
    assert [s.added_label in p for p in s.present] == [v >= 2 for v in range(6)]
    assert [s.removed_label in p for p in s.present] == [v < 4 for v in range(6)]
    # nothing rests on an object that comes or goes
    for f in s.frames:
        for o in f.objects:
            assert s.added_label not in o.supported_by and s.removed_label not in o.supported_by
    # the others stay put; the scene without the two is the same render in every view
    keep = set(s.present[0]) & set(s.present[-1])
    for f in s.frames[1:]:
        for label in keep:
            np.testing.assert_array_equal(_pose(f, label), _pose(s.frames[0], label))
    assert np.array_equal(s.frames[2].depth_clean, s.frames[3].depth_clean, equal_nan=True)
    assert not np.array_equal(s.frames[1].depth_clean, s.frames[2].depth_clean, equal_nan=True)


def test_moved_object_moves_once_at_the_stated_view_to_a_free_spot() -> None:
    s = generate_sequence(1, "moved", 6, config=SMALL)
    assert s.moved_label in s.present[0] and s.moved_at == 3
    assert all(p == s.present[0] for p in s.present)
    for label in s.present[0]:
        for v in range(1, 6):
            same = np.array_equal(_pose(s.frames[v], label), _pose(s.frames[v - 1], label))
            assert same == (label != s.moved_label or v != s.moved_at), (label, v)
    a, b = _pose(s.frames[2], s.moved_label), _pose(s.frames[3], s.moved_label)
    assert MOVE_M[0] - 1e-9 <= float(np.linalg.norm(b[:2, 3] - a[:2, 3])) <= MOVE_M[1] + 1e-9
    assert abs(b[2, 3] - a[2, 3]) < 1e-12  # still on the table
    turn = b[:3, :3] @ a[:3, :3].T  # a turn about the vertical only
    np.testing.assert_allclose(turn[2], [0.0, 0.0, 1.0], atol=1e-9)
    moved = next(o for o in s.frames[3].objects if o.label == s.moved_label)
    assert moved.on_table and not moved.supported_by
    assert all(s.moved_label not in o.supported_by for o in s.frames[0].objects)
    new = footprint(moved.mesh_ref, moved.scale, b)
    for o in s.frames[3].objects:
        if o.label != s.moved_label:
            assert footprint_gap(new, footprint(o.mesh_ref, o.scale, o.world_T_object)) >= MOVE_CLEARANCE_M
    assert not np.array_equal(s.frames[2].depth_clean, s.frames[3].depth_clean, equal_nan=True)


def test_footprint_gap_of_squares() -> None:
    sq = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert footprint_gap(sq, sq + np.array([1.5, 0.0])) == pytest.approx(0.5)
    assert footprint_gap(sq, sq + np.array([0.5, 0.5])) < 0.0
    diag = footprint_gap(sq, sq + np.array([2.0, 2.0]))  # true distance sqrt(2): the gap bounds it
    assert 0.0 < diag <= math.sqrt(2.0)


def test_frames_feed_the_pipeline_and_truth_meshes_match_the_masks() -> None:
    s = generate_sequence(4, "orbit", 3, config=SMALL)
    f = s.frames[1]
    rgbd = to_rgbd_frame(f)
    assert rgbd.labels.dtype == np.int32 and rgbd.depth.dtype == np.float32
    assert rgbd.stamp_ns == f.stamp_ns and set(rgbd.scores) == {o.label for o in f.objects}
    for o in f.objects:
        mesh = object_mesh(o)
        silhouette = np.isfinite(
            render_mesh_depth((np.asarray(mesh.vertices), np.asarray(mesh.faces)), f.intrinsics)
        )
        assert np.array_equal(silhouette | (f.labels == o.label), o.amodal_mask)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SequenceError, match="spin"):
        generate_sequence(1, "spin", 4, config=SMALL)
    with pytest.raises(SequenceError, match="3 views"):
        generate_sequence(1, "orbit", 2, config=SMALL)
    with pytest.raises(SequenceError, match="nearer"):
        generate_sequence(
            1, "approach", 4, config=GeneratorConfig(width=160, height=120, sensors=("kinect_v1",))
        )
    with pytest.raises(ValueError, match="holdout"):
        generate_sequence(1, "orbit", 4, split="holdout", config=SMALL)
