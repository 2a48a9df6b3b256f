"""Collision shapes: containment, bounded volume ratios, exact primitive fits, vertex caps,
simplification under a triangle budget, padding (more where completed)."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import trimesh
from scene_helpers import box, config, cylinder, frame, relabel

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core import constants as C
from sam3d_ros.core.collision import (
    accepted_primitives,
    cap_convex_vertices,
    convex_hull,
    fit_primitives,
    held_geometry_fits,
    held_placement,
    pad_convex,
    pad_primitive,
    points_outside_convex,
    shape_changed,
    simplify_mesh,
)
from sam3d_ros.core.frames import make_transform
from sam3d_ros.core.images import touches_border
from sam3d_ros.core.meshing import (
    drop_back_to_back_faces,
    face_areas_and_centroids,
    is_watertight,
    mesh_volume,
    split_pinched_edges,
)
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.types import PrimitiveType, RGBDFrame, TriangleMesh
from sam3d_ros.sim.raycast import Box, SceneObject


def tm(m: trimesh.Trimesh) -> TriangleMesh:
    return TriangleMesh(np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int32))


@pytest.fixture(scope="module")
def reconstructed() -> list[TriangleMesh]:
    cfg = config()
    pipe = FramePipeline(cfg, create_backend(cfg))
    res = pipe.process(frame([box(1, -0.1, 0.0), cylinder(2, 0.1, 0.02)], 0))
    assert len(res.objects) == 2
    return [o.mesh for o in res.objects]


def test_hull_contains_mesh_and_volume_ratio_is_bounded(reconstructed: list[TriangleMesh]) -> None:
    for mesh in reconstructed:
        hull = convex_hull(mesh)
        assert is_watertight(hull)
        assert points_outside_convex(mesh.vertices, hull).max() < 1e-9
        ratio = mesh_volume(hull) / mesh_volume(mesh)
        assert 1.0 - 1e-9 <= ratio < 1.3, ratio


def test_primitive_fits_exact_on_analytic_shapes_and_acceptance() -> None:
    b = fit_primitives(tm(trimesh.creation.box((0.2, 0.1, 0.05))))
    assert b[0].kind is PrimitiveType.BOX and b[0].fit_error < 1e-9
    np.testing.assert_allclose(b[0].dimensions, (0.2, 0.1, 0.05), atol=1e-9)
    assert [p.kind for p in accepted_primitives(b, 1e-6)] == [PrimitiveType.BOX]
    assert accepted_primitives(b, -1.0) == ()
    c = fit_primitives(tm(trimesh.creation.cylinder(radius=0.03, height=0.1, sections=256)))
    assert c[0].kind is PrimitiveType.CYLINDER and c[0].fit_error < 1e-4
    np.testing.assert_allclose(c[0].dimensions, (0.1, 0.03), atol=1e-4)
    padded = pad_primitive(c[0], 0.01)
    np.testing.assert_allclose(padded.dimensions, (0.12, 0.04), atol=1e-4)
    s = fit_primitives(tm(trimesh.creation.icosphere(subdivisions=4, radius=0.05)))
    assert s[0].kind is PrimitiveType.SPHERE and abs(s[0].dimensions[0] - 0.05) < 5e-4
    assert pad_primitive(s[0], 0.002).dimensions[0] == pytest.approx(s[0].dimensions[0] + 0.002)


def test_vertex_cap_is_conservative() -> None:
    pts = np.asarray(trimesh.creation.icosphere(subdivisions=3, radius=0.05).vertices)
    for cap in (12, 32, 64):
        capped = cap_convex_vertices(pts, cap)
        assert len(capped.vertices) <= cap and is_watertight(capped)
        assert points_outside_convex(pts, capped).max() < 1e-9
        assert mesh_volume(capped) < 3.0 * (4 / 3 * np.pi * 0.05**3)


@pytest.mark.parametrize("library", [True, False])
def test_simplified_mesh_under_budget(
    reconstructed: list[TriangleMesh], library: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not library:
        monkeypatch.setitem(sys.modules, "fast_simplification", None)  # import fails: clustering
    for mesh in reconstructed:
        for budget in (100, 500):
            s = simplify_mesh(mesh, budget)
            assert 4 <= len(s.faces) <= budget
            assert 0.6 < abs(mesh_volume(s)) / mesh_volume(mesh) < 1.3


def test_pinched_edge_is_split_into_a_watertight_mesh() -> None:
    """Two tetrahedra sharing one edge (4 faces on it): split, watertight, same volume."""
    a = tm(trimesh.convex.convex_hull(np.array([[0, 0, 0], [0, 0, 1], [1, 0, 0.5], [0.5, 1, 0.5]], float)))
    b = tm(trimesh.convex.convex_hull(np.array([[0, 0, 0], [0, 0, 1], [-1, 0, 0.5], [-0.5, -1, 0.5]], float)))
    # merge: b's copies of (0,0,0) and (0,0,1) become a's vertices
    idx_a = {tuple(v): i for i, v in enumerate(a.vertices.tolist())}
    remap = [idx_a.get(tuple(v), -1) for v in b.vertices.tolist()]
    extra = [i for i, r in enumerate(remap) if r < 0]
    for k, i in enumerate(extra):
        remap[i] = len(a.vertices) + k
    joined = TriangleMesh(
        np.concatenate([a.vertices, b.vertices[extra]]),
        np.concatenate([a.faces, np.asarray(remap)[b.faces]]).astype(np.int32),
    )
    assert not is_watertight(joined)
    fixed = split_pinched_edges(joined)
    assert is_watertight(fixed)
    assert len(fixed.vertices) == len(joined.vertices) + 2
    np.testing.assert_array_equal(fixed.vertices[fixed.faces], joined.vertices[joined.faces])
    assert mesh_volume(fixed) == pytest.approx(mesh_volume(a) + mesh_volume(b))
    assert split_pinched_edges(a) is a


def test_back_to_back_faces_are_dropped() -> None:
    """A zero-volume flap (one triangle twice, opposite orientations) and a repeated face."""
    cube = tm(trimesh.creation.box((0.1, 0.1, 0.1)))
    flap = np.array([[0, 1, 2], [0, 2, 1]])
    faces = np.concatenate([cube.faces, flap, cube.faces[:1]]).astype(np.int32)
    dirty = TriangleMesh(cube.vertices, faces)
    assert not is_watertight(dirty)
    clean = drop_back_to_back_faces(dirty)
    assert is_watertight(clean) and len(clean.faces) == len(cube.faces)
    assert mesh_volume(clean) == pytest.approx(mesh_volume(cube))
    assert drop_back_to_back_faces(cube) is cube


def test_padding_grows_more_where_completed() -> None:
    hull = convex_hull(tm(trimesh.creation.box((0.1, 0.1, 0.1))))
    top = hull.vertices[:, 2] > 0  # pretend the top was observed, the bottom completed
    margins = np.where(top, 0.002, 0.01)
    padded = pad_convex(hull, margins)
    assert is_watertight(padded)
    # everything inside by about the smallest margin (corners are chamfered: >= m cos 35 deg);
    # the completed side grew more
    assert points_outside_convex(hull.vertices, padded).max() <= -0.75 * 0.002
    assert padded.vertices[:, 2].max() == pytest.approx(0.05 + 0.002, abs=1e-9)
    assert padded.vertices[:, 2].min() == pytest.approx(-0.05 - 0.01, abs=1e-9)


def test_pipeline_collision_selection_and_padding() -> None:
    cfg = config(
        collision_shapes="hull,primitive,simplified",
        simplified_max_triangles=200,
        collision_padding_observed=0.002,
        collision_padding_completed=0.01,
        primitive_max_fit_error=0.05,
    )
    pipe = FramePipeline(cfg, create_backend(cfg))
    upd = pipe.process_scene(frame([box(1, 0.0, 0.0)], 0))
    (obj,) = upd.objects
    col = obj.collision
    assert col.simplified is not None and len(col.simplified.faces) <= 200
    assert col.primitives and all(p.fit_error <= 0.05 for p in col.primitives)
    mesh = obj.result.mesh
    assert points_outside_convex(mesh.vertices, col.hull).max() <= -0.75 * 0.002
    assert obj.result.collision.convex_parts[0] is col.hull
    with pytest.raises(Exception, match="collision_shapes"):
        config(collision_shapes="hull,blob")


def test_output_mesh_decimated_to_budget() -> None:
    full_cfg = config(output_mesh_max_triangles=0)
    full = FramePipeline(full_cfg, create_backend(full_cfg)).process_scene(frame([box(1, 0.0, 0.0)], 0))
    (f_obj,) = full.objects
    budget = len(f_obj.result.mesh.faces) // 4
    assert budget >= 100
    cfg = config(output_mesh_max_triangles=budget)
    small = FramePipeline(cfg, create_backend(cfg)).process_scene(frame([box(1, 0.0, 0.0)], 0))
    (s_obj,) = small.objects
    mesh = s_obj.result.mesh
    assert 0 < len(mesh.faces) <= budget
    assert is_watertight(mesh)
    # the decimated surface stays on the full one (quadric decimation of a smooth iso-surface)
    lo_f, hi_f = f_obj.result.mesh.vertices.min(axis=0), f_obj.result.mesh.vertices.max(axis=0)
    lo_s, hi_s = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    assert np.abs(lo_f - lo_s).max() < 0.003 and np.abs(hi_f - hi_s).max() < 0.003
    assert abs(mesh_volume(mesh) / mesh_volume(f_obj.result.mesh) - 1.0) < 0.03


def _cut_at_left_border(f: RGBDFrame, label: int) -> RGBDFrame:
    """``f`` cropped so that the left image border runs through the middle of object ``label``."""
    cols = np.nonzero((f.labels == label).any(axis=0))[0]
    u0 = int((cols.min() + cols.max()) // 2)
    cam = dataclasses.replace(f.camera, width=f.camera.width - u0, cx=f.camera.cx - u0)
    return dataclasses.replace(
        f,
        rgb=np.ascontiguousarray(f.rgb[:, u0:]),
        depth=np.ascontiguousarray(f.depth[:, u0:]),
        labels=np.ascontiguousarray(f.labels[:, u0:]),
        camera=cam,
    )


def test_object_cut_by_the_border_is_flagged_and_padded_as_completed() -> None:
    m_comp = 0.01
    cfg = config(collision_padding_observed=0.0, collision_padding_completed=m_comp)
    whole = frame([box(1, 0.0, 0.0)], 0)
    (inside,) = FramePipeline(cfg, create_backend(cfg)).process_scene(whole).objects
    (cut,) = FramePipeline(cfg, create_backend(cfg)).process_scene(_cut_at_left_border(whole, 1)).objects
    assert not inside.result.cut_by_border and cut.result.cut_by_border
    # the whole object frame is padded by the completed margin (chamfered corners: >= m cos 35 deg);
    # the object inside the image is not padded where it was observed
    assert points_outside_convex(cut.result.mesh.vertices, cut.collision.hull).max() <= -0.75 * m_comp
    assert points_outside_convex(inside.result.mesh.vertices, inside.collision.hull).max() > -0.75 * m_comp


def test_border_margin_decides_cut() -> None:
    labels = np.zeros((20, 30), np.int32)
    labels[5:10, C.BORDER_CUT_MARGIN_PX : C.BORDER_CUT_MARGIN_PX + 5] = 3
    assert not touches_border(labels == 3)
    labels[5:10, C.BORDER_CUT_MARGIN_PX - 1] = 3
    assert touches_border(labels == 3)
    assert touches_border(labels, value=3) and not touches_border(labels, value=4)
    bottom = np.zeros((20, 30), bool)
    bottom[-1, 10] = True
    assert touches_border(bottom)


def _cube(side: float) -> tuple[float, float]:
    """Hull volume (m^3) and area (m^2) of a cube of ``side`` m."""
    hull = convex_hull(tm(trimesh.creation.box((side, side, side))))
    return mesh_volume(hull), float(face_areas_and_centroids(hull)[0].sum())


@pytest.mark.parametrize(
    ("side", "grow", "min_distance", "expected"),
    [
        (0.03, 0.002, 0.003, False),  # +45 % volume, but the surface moved 2.3 mm on average
        (0.03, 0.002, 0.0015, True),
        (0.03, 0.002, 0.0, True),  # the volume test alone (the old rule)
        (0.10, 0.004, 0.003, True),  # +25 %, 4.2 mm
        (0.30, 0.002, 0.0, False),  # 4 % of a large object: under the relative threshold
        (0.30, 0.002, 0.001, False),
    ],
)
def test_shape_change_needs_the_relative_and_the_mean_surface_change(
    side: float, grow: float, min_distance: float, expected: bool
) -> None:
    """A cube whose faces all move outwards by ``grow``: its hull volume changes by about
    ``grow`` times its area (first order), so the size-aware test compares the mean surface
    displacement with ``min_distance``; both tests must fire, and shrinking is symmetric."""
    v0, a0 = _cube(side)
    v1, a1 = _cube(side + 2 * grow)
    assert (v1 - v0) / a0 == pytest.approx(grow, rel=0.2)  # the first-order relation
    assert shape_changed(v0, a0, v1, 0.1, min_distance) is expected
    assert shape_changed(v1, a1, v0, 0.1, min_distance) is expected
    assert not shape_changed(v0, a0, v0, 0.0, 0.0)  # no change is never a change


def test_a_grown_object_is_a_new_geometry_version_and_noise_is_not() -> None:
    """Through the pipeline (geometric backend, fixed camera, default thresholds): the same
    box again keeps its geometry version; the box grown by 2 cm in every direction (a real
    new shape, e.g. a second object put on it) is re-ADDed; 1 mm more is not."""
    cfg = config(fusion_enabled=False)
    pipe = FramePipeline(cfg, create_backend(cfg))
    try:
        sizes = [(0.08, 0.06, 0.10), (0.08, 0.06, 0.10), (0.12, 0.10, 0.14), (0.121, 0.101, 0.141)]
        flags = []
        for i, size in enumerate(sizes):
            (obj,) = pipe.process_scene(frame([box(1, 0.0, 0.0, size)], i)).objects
            flags.append((obj.appeared, obj.geometry_changed))
        assert flags == [(True, False), (False, False), (False, True), (False, False)], flags
    finally:
        pipe.close()


@pytest.mark.parametrize(("min_distance", "changed"), [(C.SHAPE_CHANGE_MIN_DISTANCE, False), (0.0, True)])
def test_a_small_object_is_not_re_added_for_a_millimetre(min_distance: float, changed: bool) -> None:
    """A 4 cm box whose faces move out by 1.5 mm: +31 % hull volume (beyond the relative
    threshold), but only ~1.5 mm of surface: no new version under the default distance, a
    new one with the volume test alone."""
    cfg = config(fusion_enabled=False, shape_change_min_distance=min_distance)
    pipe = FramePipeline(cfg, create_backend(cfg))
    try:
        pipe.process_scene(frame([box(1, 0.0, 0.0, (0.04, 0.04, 0.04))], 0))
        (obj,) = pipe.process_scene(frame([box(1, 0.0, 0.0, (0.043, 0.043, 0.043))], 1)).objects
        assert not obj.appeared and obj.geometry_changed is changed
    finally:
        pipe.close()


def test_a_move_keeps_the_held_shapes_only_where_they_still_fit() -> None:
    """A mug-like hull (body and a 3 cm handle on +x) in its object frame: the same hull
    a few millimetres off fits (a MOVE places it right); the hull turned by 180 degrees
    about z (the frame convention flipped against the object) puts the handle on the
    other side, 3 cm away: it does not fit, the shapes must be sent again. A symmetric box
    turned by 180 degrees fits."""
    body = trimesh.creation.box((0.08, 0.08, 0.10))
    handle = trimesh.creation.box((0.03, 0.01, 0.05))
    handle.apply_translation((0.055, 0.0, 0.0))
    mug = convex_hull(tm(trimesh.util.concatenate([body, handle])))
    turn = np.diag([-1.0, -1.0, 1.0])
    turned = convex_hull(TriangleMesh(mug.vertices @ turn.T, mug.faces))
    shifted = convex_hull(TriangleMesh(mug.vertices + np.array([0.004, -0.003, 0.002]), mug.faces))
    assert held_geometry_fits(mug, mug, 1e-9)
    assert held_geometry_fits(mug, shifted, 0.02) and not held_geometry_fits(mug, shifted, 0.002)
    assert not held_geometry_fits(mug, turned, 0.02) and not held_geometry_fits(turned, mug, 0.02)
    cube = convex_hull(tm(body))
    assert held_geometry_fits(cube, convex_hull(TriangleMesh(cube.vertices @ turn.T, cube.faces)), 1e-6)


def _mug(label: int, x: float, y: float, turned: bool) -> list[SceneObject]:
    """A 6 cm body with a 4 cm 'handle' on +x (on -x when ``turned``); rendered as two
    labels, merged into one mask by :func:`_mug_frame`."""
    side = -1.0 if turned else 1.0
    body = Box((0.06, 0.06, 0.10), make_transform(np.eye(3), (x, y, 0.05)))
    handle = Box((0.04, 0.02, 0.04), make_transform(np.eye(3), (x + side * 0.05, y, 0.02)))
    return [SceneObject(label, body, (200, 60, 60)), SceneObject(label + 1, handle, (200, 60, 60))]


def _mug_frame(y: float, turned: bool, index: int) -> RGBDFrame:
    return relabel(frame(_mug(1, 0.0, y, turned), index), {2: 1})


@pytest.mark.parametrize(("turned", "expected"), [(False, "moved"), (True, "geometry_changed")])
def test_a_pushed_object_is_moved_unless_its_frame_turned_against_it(turned: bool, expected: str) -> None:
    """Pushed 6 cm (beyond track_move_threshold): a MOVE when the object kept its
    orientation; turned by 180 degrees as well, the object frame (footprint's long side,
    signed towards the camera) does not turn with it, so a MOVE would leave the handle on
    the wrong side in the planning scene: the shapes are sent again (a new version)."""
    cfg = config(fusion_enabled=False)
    pipe = FramePipeline(cfg, create_backend(cfg))
    try:
        pipe.process_scene(_mug_frame(0.0, False, 0))
        (obj,) = pipe.process_scene(_mug_frame(0.06, turned, 1)).objects
        assert not obj.appeared
        assert (obj.moved, obj.geometry_changed) == (expected == "moved", expected == "geometry_changed")
    finally:
        pipe.close()


def test_held_placement_kept_moved_turned() -> None:
    """The held mug hull at its pose against the current one: the frame origin barely moved,
    or moved while the hull stayed (a wobbling frame): kept; the object pushed 6 cm with its
    frame: moved; pushed and its frame turned against it: turned (shapes sent again)."""
    body = trimesh.creation.box((0.08, 0.08, 0.10))
    handle = trimesh.creation.box((0.03, 0.01, 0.05))
    handle.apply_translation((0.055, 0.0, 0.0))
    mug = convex_hull(tm(trimesh.util.concatenate([body, handle])))
    at = make_transform(np.eye(3), (0.3, 0.0, 0.05))
    turn = np.diag([-1.0, -1.0, 1.0])
    tol = 0.02
    assert held_placement(mug, at, mug, make_transform(np.eye(3), (0.31, 0.0, 0.05)), tol) == "kept"
    # the same hull in F, described in a frame whose origin sits 3 cm further along x
    shifted = convex_hull(TriangleMesh(mug.vertices - np.array([0.03, 0.0, 0.0]), mug.faces))
    assert held_placement(mug, at, shifted, make_transform(np.eye(3), (0.33, 0.0, 0.05)), tol) == "kept"
    pushed = make_transform(np.eye(3), (0.3, 0.06, 0.05))
    assert held_placement(mug, at, mug, pushed, tol) == "moved"
    turned = convex_hull(TriangleMesh(mug.vertices @ turn.T, mug.faces))
    assert held_placement(mug, at, turned, pushed, tol) == "turned"
