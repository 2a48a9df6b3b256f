"""Camera sequences of the cluttered world (sam3d_ros.sim.sequences): deterministic, one
appearance and one set of labels per sequence, and the camera paths and scene changes each
kind promises."""

from __future__ import annotations

import numpy as np
import pytest

from sam3d_ros.sim.generator import GeneratorConfig
from sam3d_ros.sim.sequences import SequenceError, generate_sequence

SMALL = GeneratorConfig(width=160, height=120)


def test_orbit_is_deterministic_with_one_appearance_and_stable_labels() -> None:
    a = generate_sequence(3, 0, "orbit", 4, config=SMALL)
    b = generate_sequence(3, 0, "orbit", 4, config=SMALL)
    for fa, fb in zip(a.frames, b.frames, strict=True):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.labels, fb.labels)
        assert np.array_equal(np.nan_to_num(fa.depth), np.nan_to_num(fb.depth))
    labels = [tuple(o.label for o in f.objects) for f in a.frames]
    assert len(set(labels)) == 1 and len(labels[0]) >= 2
    assert len({f.sensor for f in a.frames}) == 1 and len({f.intrinsics for f in a.frames}) == 1
    assert len({str(f.lighting) for f in a.frames}) == 1  # same table, colours and light
    # the objects stay where they are; the camera circles them at one distance
    for o in a.frames[0].objects:
        for f in a.frames[1:]:
            same = next(p for p in f.objects if p.label == o.label)
            np.testing.assert_allclose(same.world_T_object, o.world_T_object)
    centre = np.mean([o.world_T_object[:3, 3] for o in a.frames[0].objects], axis=0)
    dist = [float(np.linalg.norm(f.world_T_camera[:3, 3] - centre)) for f in a.frames]
    assert max(dist) - min(dist) < 1e-6
    dirs = [f.world_T_camera[:2, 3] - centre[:2] for f in a.frames]
    turn = np.degrees(
        np.arccos(np.dot(dirs[0], dirs[-1]) / np.linalg.norm(dirs[0]) / np.linalg.norm(dirs[-1]))
    )
    assert 80.0 < turn < 160.0
    assert sum(o.visible_pixels > 0 for f in a.frames for o in f.objects) >= len(a.frames)


def test_approach_moves_in_on_one_object() -> None:
    s = generate_sequence(4, 0, "approach", 4, config=SMALL)
    centres = [o.world_T_object[:3, 3] for o in s.frames[0].objects]

    # the target is the object the optical axis points at in every view
    def aim(f: object, c: np.ndarray) -> float:
        t = f.world_T_camera  # type: ignore[attr-defined]
        d = (c - t[:3, 3]) / np.linalg.norm(c - t[:3, 3])
        return float(d @ t[:3, 2])

    target = max(range(len(centres)), key=lambda i: aim(s.frames[0], centres[i]))
    dist = [float(np.linalg.norm(f.world_T_camera[:3, 3] - centres[target])) for f in s.frames]
    assert all(aim(f, centres[target]) > 0.9999 for f in s.frames)
    assert dist == sorted(dist, reverse=True) and dist[-1] < 0.75 * dist[0]


def test_static_camera_with_an_object_added_and_one_removed() -> None:
    s = generate_sequence(2, 0, "static_add_remove", 6, config=SMALL)
    assert all(np.array_equal(f.world_T_camera, s.frames[0].world_T_camera) for f in s.frames)
    first, last = set(s.present[0]), set(s.present[-1])
    everyone = set().union(*map(set, s.present))
    added, removed = everyone - first, everyone - last
    assert len(added) == 1 and len(removed) == 1 and added != removed
    for v, f in enumerate(s.frames):
        assert {o.label for o in f.objects} == set(s.present[v])
        assert not set(np.unique(f.labels).tolist()) - {0} - set(s.present[v])  # absent: not rendered
    (a,) = added
    assert [a in p for p in s.present] == [v >= 2 for v in range(6)]


def test_moved_object_is_pushed_once_at_the_stated_view() -> None:
    s = generate_sequence(1, 0, "moved", 6, config=SMALL)
    assert s.moved_label > 0 and s.moved_at == 3
    poses = {o.label: [] for o in s.frames[0].objects}
    for f in s.frames:
        for o in f.objects:
            poses[o.label].append(o.world_T_object)
    for label, ts in poses.items():
        for v in range(1, len(ts)):
            same = np.allclose(ts[v], ts[v - 1])
            assert same == (label != s.moved_label or v != s.moved_at), (label, v)
    shift = np.linalg.norm(poses[s.moved_label][3][:2, 3] - poses[s.moved_label][2][:2, 3])
    assert 0.05 - 1e-9 <= shift <= 0.15 + 1e-9
    assert abs(poses[s.moved_label][3][2, 3] - poses[s.moved_label][2][2, 3]) < 1e-9  # still on the table


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SequenceError, match="kind"):
        generate_sequence(1, 0, "spin", 4, config=SMALL)
    with pytest.raises(SequenceError, match="3 views"):
        generate_sequence(1, 0, "orbit", 2, config=SMALL)
