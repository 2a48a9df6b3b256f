"""Tracking and fusion: stable ids over replayed sequences, appear / move / vanish, and
fused shapes that beat single-frame ones."""

from __future__ import annotations

import numpy as np
import pytest
from scene_helpers import box, config, cylinder, frame, relabel

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.metrics import chamfer_l1_mm
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.tracking import Detection, ObjectTracker, TrackingError
from sam3d_ros.sim.raycast import true_mesh
from sam3d_ros.sim.scenes import render_sequence, sequence


def det(label: int, x: float, y: float = 0.0) -> Detection:
    return Detection.from_points(label, np.array([[x - 0.02, y - 0.02, 0.0], [x + 0.02, y + 0.02, 0.1]]))


def test_tracker_prefers_labels_then_distance_and_vanishes_after_n_misses() -> None:
    tr = ObjectTracker(max_distance=0.1, max_missed=2)
    out, gone = tr.step([det(3, 0.0), det(7, 0.3)])
    assert [(t.track_id, new) for t, new in out] == [(3, True), (7, True)] and not gone
    # labels swapped by the segmenter but the objects barely moved: distance wins
    out, _ = tr.step([det(7, 0.005), det(3, 0.305)])
    assert [t.track_id for t, _ in out] == [3, 7] and not any(new for _, new in out)
    # object 7 unseen for two frames -> vanished; a new object gets a fresh id (label 3 is taken)
    out, gone = tr.step([det(3, 0.0)])
    assert not gone
    out, gone = tr.step([det(3, 0.0), det(3, 0.6)])
    assert [t.track_id for t in gone] == [7]
    assert out[0][0].track_id == 3 and out[1][0].track_id == 8 and out[1][1]
    # far beyond the gate: never associated
    out, _ = tr.step([det(3, 2.0)])
    assert out[0][1] and out[0][0].track_id not in (3, 8)
    gone_all = tr.reset()
    assert tr.tracks == {} and gone_all
    with pytest.raises(TrackingError, match="finite"):
        Detection.from_points(1, np.full((2, 3), np.nan))


def test_an_object_pushed_beyond_the_gate_starts_a_track_instead_of_taking_its_neighbours() -> None:
    tr = ObjectTracker(max_distance=0.1, max_missed=2)
    tr.step([det(1, 0.0), det(3, 0.08)])
    # object 1 pushed 15 cm, past object 3 (8 cm from 3's track, beyond the gate from its own)
    out, gone = tr.step([det(1, 0.15), det(3, 0.08)])
    assert not gone
    (t1, new1), (t3, new3) = out
    assert t3.track_id == 3 and not new3, "the unmoved object keeps its track"
    assert new1 and t1.track_id not in (1, 3), "the pushed object starts a new track"
    assert tr.tracks[1].missed == 1
    # the cost of staying unmatched never keeps a lone detection from a track in reach
    out, _ = tr.step([det(9, 0.13)])
    assert out[0][0].track_id == t1.track_id and not out[0][1]


def test_track_ids_stable_over_replayed_sequence_with_renumbering_segmenter() -> None:
    views = sequence(5, 5, 3, arc_deg=40.0, width=320, height=240)
    frames = render_sequence(views)
    cfg = config()
    pipe = FramePipeline(cfg, create_backend(cfg))
    rng = np.random.default_rng(0)
    ids_by_object: dict[int, set[int]] = {}
    for rf in frames:
        labels = sorted(o.label for o in rf.objects)
        perm = dict(zip(labels, rng.permutation(labels).tolist(), strict=True))
        inv = {v: k for k, v in perm.items()}
        upd = pipe.process_scene(relabel(rf.to_rgbd_frame(), perm), rf.camera.world_T_camera)
        assert not upd.vanished
        for obj in upd.result.objects:
            ids_by_object.setdefault(inv[obj.instance_id], set()).add(obj.track_id)
    assert len(ids_by_object) == 3
    assert all(len(ids) == 1 for ids in ids_by_object.values()), ids_by_object
    assert len({next(iter(ids)) for ids in ids_by_object.values()}) == 3


def test_appear_move_vanish_flags_and_reset() -> None:
    cfg = config(track_max_missed=2, track_move_threshold=0.02)
    pipe = FramePipeline(cfg, create_backend(cfg))
    a, b = box(1, -0.1, 0.0), cylinder(2, 0.1, 0.02)
    u0 = pipe.process_scene(frame([a, b], 0))
    assert [(o.result.track_id, o.appeared) for o in u0.objects] == [(1, True), (2, True)]
    u1 = pipe.process_scene(frame([a, b], 1))
    assert not any(o.appeared or o.moved or o.geometry_changed for o in u1.objects)
    # object 1 slides by 6 cm: same id, moved
    u2 = pipe.process_scene(frame([box(1, -0.1, 0.06), b], 2))
    by_id = {o.result.track_id: o for o in u2.objects}
    assert by_id[1].moved and not by_id[1].appeared and not by_id[2].moved
    # object 2 gone: vanishes after track_max_missed frames
    u3 = pipe.process_scene(frame([box(1, -0.1, 0.06)], 3))
    assert u3.vanished == ()
    u4 = pipe.process_scene(frame([box(1, -0.1, 0.06)], 4))
    assert u4.vanished == (2,)
    pipe.reset()
    u5 = pipe.process_scene(frame([box(1, -0.1, 0.06)], 5))
    assert u5.vanished == (1,) and u5.objects[0].appeared


@pytest.mark.parametrize(("obj", "turn"), [(box(1, 0.0, 0.0), 180.0), (cylinder(1, 0.0, 0.0), 90.0)])
def test_a_static_objects_published_frame_keeps_the_tracks_axes(obj, turn: float) -> None:
    """The pose published for a tracked object keeps the axes of its previous frame where
    the footprint convention leaves a choice (x's sign; x/y of a round footprint): with the
    track's last frame turned about z, the next frame's pose follows it and its mesh,
    posed, is the same object; no MOVE or ADD for it."""
    from sam3d_ros.core.frames import transform_points

    cfg = config()
    pipe = FramePipeline(cfg, create_backend(cfg))
    (first,) = pipe.process_scene(frame([obj], 0)).objects
    c, s_ = np.cos(np.radians(turn)), np.sin(np.radians(turn))
    turned = first.fixed_T_object.copy()
    turned[:3, :3] = turned[:3, :3] @ np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])
    (track,) = pipe.tracker.tracks.values()
    track.fixed_T_object = turned
    (second,) = pipe.process_scene(frame([obj], 1)).objects
    np.testing.assert_allclose(second.fixed_T_object[:3, :3], turned[:3, :3], atol=1e-6)
    np.testing.assert_allclose(second.fixed_T_object[:3, 3], first.fixed_T_object[:3, 3], atol=1e-6)
    posed = [transform_points(o.fixed_T_object, o.result.mesh.vertices) for o in (first, second)]
    np.testing.assert_allclose(posed[1], posed[0], atol=1e-6)
    assert not (second.moved or second.geometry_changed)


def test_fused_shapes_beat_single_frame_shapes() -> None:
    views = sequence(1, 4, 3, arc_deg=120.0, width=320, height=240)
    frames = render_sequence(views)
    errors = {}
    for fused in (False, True):
        cfg = config(fusion_enabled=fused, mesh_resolution=48)
        pipe = FramePipeline(cfg, create_backend(cfg))
        per_frame = []
        for rf in frames:
            upd = pipe.process_scene(rf.to_rgbd_frame(), rf.camera.world_T_camera)
            gts = {o.label: o for o in rf.objects}
            errs = []
            for obj in upd.result.objects:
                t = obj.pose.matrix()
                pred = (obj.mesh.vertices @ t[:3, :3].T + t[:3, 3], obj.mesh.faces)
                errs.append(chamfer_l1_mm(pred, true_mesh(gts[obj.instance_id], "camera"), n=3000))
            per_frame.append(float(np.mean(errs)))
        if fused:
            assert upd.objects[0].fused_frames == len(frames)
        errors[fused] = per_frame
    assert errors[True][0] < 1.15 * errors[False][0]  # one view: no worse
    assert np.mean(errors[True][1:]) < np.mean(errors[False][1:])
    assert errors[True][-1] < errors[False][-1]


def test_the_surface_a_track_kept_reaches_the_next_frames_meshing_in_its_camera_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The meshing hysteresis gets, for a tracked object, the vertices meshed for it in the
    previous frame, moved into the current camera frame through the fixed frame (the camera
    moved 1 cm between the frames); a new track, or a pipeline after a reset, gets none."""
    import sam3d_ros.core.pipeline as pipeline_mod
    from sam3d_ros.core.frames import make_transform, transform_points

    calls: list[tuple[np.ndarray | None, np.ndarray]] = []
    real = pipeline_mod.mesh_from_voxels

    def recording(shape, level, observed=None, kept=None):  # type: ignore[no-untyped-def]
        mesh = real(shape, level, observed, kept)
        calls.append((None if kept is None else np.array(kept), mesh.vertices.copy()))
        return mesh

    monkeypatch.setattr(pipeline_mod, "mesh_from_voxels", recording)
    cfg = config()
    pipe = FramePipeline(cfg, create_backend(cfg))
    f = frame([box(1, 0.0, 0.0)], 0)
    t1 = np.eye(4)
    t2 = make_transform(np.eye(3), np.array([0.01, 0.0, 0.0]))
    try:
        pipe.process_scene(f, t1)
        assert len(calls) == 1 and calls[0][0] is None
        pipe.process_scene(f, t2)  # the same image from a camera 1 cm further along x
        kept, _ = calls[1]
        assert kept is not None
        np.testing.assert_allclose(kept, transform_points(np.linalg.inv(t2) @ t1, calls[0][1]), atol=1e-9)
        pipe.reset()
        pipe.process_scene(f, t2)
        assert calls[2][0] is None
    finally:
        pipe.close()
