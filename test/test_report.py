"""Unit tests of the replay HTML report and its rendering helpers (no ROS, no bag).

The scene is analytic: one box at a known pose in front of a pinhole camera, its "observed"
depth computed by exact ray/box intersection.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.frames import Pose, invert_transform, make_transform, transform_points
from sam3d_ros.core.types import (
    CollisionShapes,
    FrameResult,
    ObjectResult,
    RGBDFrame,
    SkippedObject,
    SkipReason,
    TriangleMesh,
)
from sam3d_ros.tools.report import (
    REPORT_FILE,
    HtmlReport,
    ReportError,
    object_views,
    overlay_image,
    posed_vertices,
    render_objects,
    residual_image,
    svg_line_plot,
    track_colour,
)

CAM = CameraIntrinsics(width=320, height=240, fx=300.0, fy=300.0, cx=159.5, cy=119.5)
BOX_SIZE = np.array([0.10, 0.08, 0.06])


def rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def box_mesh(size: np.ndarray = BOX_SIZE) -> TriangleMesh:
    m = trimesh.creation.box(extents=size)
    return TriangleMesh(
        vertices=np.asarray(m.vertices, dtype=np.float64), faces=np.asarray(m.faces, dtype=np.int32)
    )


def analytic_box_depth(camera_T_object: np.ndarray, size: np.ndarray, cam: CameraIntrinsics) -> np.ndarray:
    """(H, W) exact depth (z, metres) of the ray/box entry point per pixel centre; NaN: miss."""
    vv, uu = np.mgrid[0 : cam.height, 0 : cam.width]
    rays = np.stack([(uu - cam.cx) / cam.fx, (vv - cam.cy) / cam.fy, np.ones(uu.shape)], axis=-1).reshape(
        -1, 3
    )
    o_T_c = invert_transform(camera_T_object)
    origin = o_T_c[:3, 3]
    d = rays @ o_T_c[:3, :3].T
    half = size / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - origin) / d
        t2 = (half - origin) / d
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (tmax >= tmin) & (tmin > 0)
    return np.where(hit, tmin, np.nan).reshape(cam.height, cam.width)  # ray z component is 1


def box_object(camera_T_object: np.ndarray, track_id: int = 1, instance_id: int = 1) -> ObjectResult:
    mesh = box_mesh()
    return ObjectResult(
        instance_id=instance_id,
        track_id=track_id,
        label=f"instance_{instance_id}",
        score=0.9,
        pose=Pose.from_matrix(camera_T_object),
        extents=(0.10, 0.08, 0.06),
        mesh=mesh,
        collision=CollisionShapes(convex_parts=(mesh,)),
        visible_fraction=0.45,
        confidence=0.8,
        num_points=1000,
    )


POSE_TILTED = make_transform(rot_y(30.0) @ rot_x(-25.0), np.array([0.02, 0.01, 0.6]))


def synthetic_frame(
    camera_T_object: np.ndarray = POSE_TILTED, stamp_ns: int = 1_000, offset_m: float = 0.005
) -> tuple[RGBDFrame, FrameResult, np.ndarray]:
    """A frame whose observed depth is the exact box depth + ``offset_m`` (so the residual is
    -offset), grey RGB, label 1 on the box; the result holds the box at its true pose."""
    depth = analytic_box_depth(camera_T_object, BOX_SIZE, CAM)
    mask = np.isfinite(depth)
    observed = np.where(mask, depth + offset_m, 1.0).astype(np.float32)  # background: a wall at 1 m
    frame = RGBDFrame(
        stamp_ns=stamp_ns,
        frame_id="camera_color_optical_frame",
        rgb=np.full((CAM.height, CAM.width, 3), 100, dtype=np.uint8),
        depth=observed,
        labels=mask.astype(np.int32),
        camera=CAM,
    )
    result = FrameResult(
        stamp_ns=stamp_ns,
        frame_id=frame.frame_id,
        objects=(box_object(camera_T_object),),
        skipped=(SkippedObject(2, SkipReason.TOO_FEW_DEPTH_POINTS, "7 points < 20"),),
        timings_ms={"plane": 1.0, "observations": 2.0, "backend": 10.0, "meshing": 3.0, "total": 17.0},
        backend="geometric",
    )
    return frame, result, mask


def summary_dict(processed: int) -> dict:
    return {
        "bag": "/tmp/some_bag",
        "backend": "geometric",
        "topics": {"rgb": "/a", "depth": "/b", "info": "/c", "mask": "/d"},
        "messages_read": 4 * processed + 4,
        "frames_synchronized": processed + 1,
        "frames_processed": processed,
        "frames_skipped": {"bad_data_length": 1},
        "unmatched_messages": 0,
        "objects": processed,
        "objects_skipped": {"too_few_depth_points": processed},
        "timings_ms": {"total": {"median": 17.0, "mean": 17.0, "max": 17.0}},
        "wall_s": 1.5,
        "throughput_fps": 10.0,
        "skip_examples": [{"stamp_ns": 5, "reason": "bad_data_length", "detail": "data has 3 bytes <b>"}],
        "outputs": {"results": "results.jsonl", "out_bag": None},
    }


def embedded_pngs(text: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(m)))
        for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    ]


def assert_self_contained(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(//|[a-z]+:)(?!image/png;base64)""", text, re.I), (
        "external ref"
    )
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    for m in re.finditer(r"""\b(?:src|href)\s*=\s*['"]([^'"]*)['"]""", text):
        assert m.group(1).startswith(("data:image/png;base64,", "#")), m.group(1)[:80]


# --------------------------------------------------------------------------- rasterisation


def test_rendered_depth_of_a_frontal_face_is_the_face_distance() -> None:
    pose = make_transform(np.eye(3), np.array([0.0, 0.0, 0.6]))
    depth, index = render_objects([box_object(pose)], CAM)
    face = np.isfinite(depth)
    # the face z = -0.03 in the object frame is at camera z = 0.57; it spans
    # |x| <= 0.05, |y| <= 0.04 -> |u - cx| <= 300 * 0.05 / 0.57 = 26.3 px, |v - cy| <= 21.05 px
    vv, uu = np.mgrid[0 : CAM.height, 0 : CAM.width]
    inside = (np.abs(uu - CAM.cx) <= 26.0) & (np.abs(vv - CAM.cy) <= 20.8)
    assert face[inside].all()
    np.testing.assert_allclose(depth[inside], 0.57, atol=1e-6)
    outside = (np.abs(uu - CAM.cx) > 26.6) | (np.abs(vv - CAM.cy) > 21.3)
    assert not face[outside].any()
    assert (index[face] == 0).all() and (index[~face] == -1).all()


def test_rendered_depth_of_a_tilted_box_matches_ray_casting() -> None:
    depth, _ = render_objects([box_object(POSE_TILTED)], CAM)
    truth = analytic_box_depth(POSE_TILTED, BOX_SIZE, CAM)
    both = np.isfinite(depth) & np.isfinite(truth)
    assert both.sum() > 2000
    np.testing.assert_allclose(depth[both], truth[both], atol=1e-5)
    # silhouettes agree up to pixels whose centre lies on an edge
    xor = np.isfinite(depth) ^ np.isfinite(truth)
    assert xor.sum() <= 0.01 * both.sum()


def test_nearest_object_wins_the_z_buffer() -> None:
    near = box_object(make_transform(np.eye(3), np.array([0.0, 0.0, 0.5])), track_id=7, instance_id=1)
    far = box_object(make_transform(np.eye(3), np.array([0.12, 0.0, 0.8])), track_id=8, instance_id=2)
    depth, index = render_objects([far, near], CAM)
    assert index[int(CAM.cy), int(CAM.cx)] == 1
    assert depth[int(CAM.cy), int(CAM.cx)] == pytest.approx(0.47, abs=1e-6)
    assert set(np.unique(index)) == {-1, 0, 1}


def test_render_speed_for_a_dense_mesh() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.08)  # 20480 faces
    mesh = TriangleMesh(np.asarray(sphere.vertices), np.asarray(sphere.faces, dtype=np.int32))
    obj = ObjectResult(
        1, 1, "s", 1.0, Pose((0.0, 0.0, 0.45), (0.0, 0.0, 0.0, 1.0)), (0.16, 0.16, 0.16), mesh,
        CollisionShapes((mesh,)), 0.5, 0.5, 100,
    )  # fmt: skip
    cam = CameraIntrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)
    render_objects([obj], cam)  # warm-up
    t0 = time.perf_counter()
    depth, _ = render_objects([obj], cam)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.5, f"render took {elapsed:.2f} s"
    r = 600.0 * 0.08 / math.sqrt(0.45**2 - 0.08**2)
    assert abs(np.isfinite(depth).sum() - math.pi * r * r) < 0.03 * math.pi * r * r
    assert float(np.nanmin(depth)) == pytest.approx(0.37, abs=1e-3)


def test_behind_view_rotates_about_the_object_z_axis_through_its_centre() -> None:
    v = box_mesh().vertices + np.array([0.01, -0.02, 0.005])  # bbox centre off the origin
    obj = box_object(POSE_TILTED)
    obj = ObjectResult(**{**obj.__dict__, "mesh": TriangleMesh(v, obj.mesh.faces)})
    back = transform_points(invert_transform(POSE_TILTED), posed_vertices(obj, behind=True))
    c = np.array([0.01, -0.02, 0.005])
    np.testing.assert_allclose(back, (v - c) * [-1, -1, 1] + c, atol=1e-12)
    np.testing.assert_allclose(posed_vertices(obj), transform_points(POSE_TILTED, v), atol=1e-12)


def test_object_views_show_the_shaded_object() -> None:
    _frame, result, _ = synthetic_frame()
    views = object_views(result.objects[0], CAM, size=96)
    assert views is not None
    for img in views:
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        fg = (img != img[0, 0]).any(axis=2)
        assert 0.15 < fg.mean() < 0.9  # the object fills the crop, with a margin
        assert len(np.unique(img[fg].reshape(-1, 3), axis=0)) >= 2  # shaded: faces differ


# --------------------------------------------------------------------------- overlay, residual


def test_overlay_covers_exactly_the_box_pixels() -> None:
    frame, result, mask = synthetic_frame()
    _depth, index = render_objects(result.objects, CAM)
    covered = index == 0
    # the reprojection covers the box's pixels (up to edge pixels)
    assert (covered & mask).sum() >= 0.99 * mask.sum()
    assert (covered & ~mask).sum() <= 0.01 * mask.sum()
    colour = track_colour(1)
    over = overlay_image(frame.rgb, index, [colour])
    changed = (over != frame.rgb).any(axis=2)
    np.testing.assert_array_equal(changed, covered)
    interior = covered.copy()
    for axis in (0, 1):
        for shift in (-1, 1):
            interior &= np.roll(covered, shift, axis=axis)
    expected = np.rint(0.55 * 100 + 0.45 * np.asarray(colour, dtype=float))
    np.testing.assert_array_equal(over[interior], np.broadcast_to(expected, (int(interior.sum()), 3)))
    edge = covered & ~interior
    np.testing.assert_array_equal(over[edge], np.broadcast_to(colour, (int(edge.sum()), 3)))


def test_residual_is_rendered_minus_observed_in_mm() -> None:
    frame, result, mask = synthetic_frame(offset_m=0.005)
    depth, _ = render_objects(result.objects, CAM)
    img, res, stats = residual_image(frame.rgb, frame.depth, depth, mask, limit_mm=20.0)
    assert img.shape == (CAM.height, CAM.width, 3)
    assert stats.pixels >= 0.99 * mask.sum()
    assert stats.median_mm == pytest.approx(-5.0, abs=0.01)
    assert stats.median_abs_mm == pytest.approx(5.0, abs=0.01)
    assert np.isnan(res[~mask]).all()
    # no depth -> grey, no render -> magenta
    no_render = np.full_like(depth, np.nan)
    _, _, empty = residual_image(frame.rgb, frame.depth, no_render, mask, limit_mm=20.0)
    assert empty.pixels == 0 and empty.uncovered == int(mask.sum()) and math.isnan(empty.median_abs_mm)


# --------------------------------------------------------------------------- the report


def test_report_is_written_and_self_contained(tmp_path: Path) -> None:
    report = HtmlReport(tmp_path / "out", max_frames=4)
    frame, result, _ = synthetic_frame()
    for i in range(6):
        report.on_frame(i, frame, result, {})
    report.finish(summary_dict(6))
    path = tmp_path / "out" / REPORT_FILE
    assert path.is_file() and report.path == path
    text = path.read_text(encoding="utf-8")
    assert_self_contained(text)
    pngs = embedded_pngs(text)
    # per shown frame: overlay, residual and two object views
    assert len(report.shown_indices) <= 4
    assert len(pngs) == 4 * len(report.shown_indices)
    for img in pngs:
        img.load()
        assert img.format == "PNG"
    assert "Latency per frame" in text and "Objects per frame" in text and "<svg" in text
    assert "#1" in text and "instance_1" in text and "visible 45 %" in text and "confidence 0.80" in text
    assert "too_few_depth_points" in text and "bad_data_length" in text
    assert "&lt;b&gt;" in text  # user strings are escaped
    assert "signed median -5.0 mm" in text and "|residual| median 5.0 mm" in text


def test_report_keeps_at_most_max_frames_evenly_spaced(tmp_path: Path) -> None:
    report = HtmlReport(tmp_path, max_frames=12)
    frame, result, _ = synthetic_frame()
    for i in range(100):
        report.on_frame(i, frame, result, {})
    shown = report.shown_indices
    assert 6 <= len(shown) <= 12
    assert shown[0] == 0 and all(b - a == report.stride for a, b in itertools.pairwise(shown))
    assert report.frames_seen == 100
    report.finish(summary_dict(100))
    text = (tmp_path / REPORT_FILE).read_text()
    assert text.count("<section class='frame'") == len(shown)
    assert len(embedded_pngs(text)) == 4 * len(shown)


def test_frames_without_objects(tmp_path: Path) -> None:
    frame, result, _ = synthetic_frame()
    empty = FrameResult(result.stamp_ns, result.frame_id, (), (), {"total": 3.0}, "geometric")
    report = HtmlReport(tmp_path, max_frames=3)
    report.on_frame(0, frame, empty, {})
    report.on_frame(1, frame, result, {})
    report.finish(summary_dict(2))
    text = (tmp_path / REPORT_FILE).read_text()
    assert "No objects reconstructed in this frame" in text
    assert_self_contained(text)


def test_zero_processed_frames_still_writes_a_report(tmp_path: Path) -> None:
    report = HtmlReport(tmp_path / "new" / "dir")
    summary = summary_dict(0)
    summary["timings_ms"] = {}
    report.finish(summary)
    text = (tmp_path / "new" / "dir" / REPORT_FILE).read_text()
    assert "No frames were processed" in text and "bad_data_length" in text
    assert_self_contained(text)


def test_render_failure_is_shown_not_raised(tmp_path: Path) -> None:
    frame, result, _ = synthetic_frame()
    bad = RGBDFrame(frame.stamp_ns, frame.frame_id, frame.rgb[:10], frame.depth, frame.labels, frame.camera)
    report = HtmlReport(tmp_path)
    report.on_frame(0, bad, result, {})
    report.finish(summary_dict(1))
    assert "Could not render this frame" in (tmp_path / REPORT_FILE).read_text()


def test_invalid_settings_and_unwritable_output(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="max_frames"):
        HtmlReport(tmp_path, max_frames=-1)
    (tmp_path / "file").write_text("x")
    report = HtmlReport(tmp_path / "file" / "sub")
    with pytest.raises(ReportError, match="cannot write report"):
        report.finish(summary_dict(0))


def test_long_series_plot_is_decimated() -> None:
    n = 50_000
    xs = np.arange(n, dtype=np.float64)
    ys = np.full(n, 10.0)
    ys[12_345] = 500.0  # a spike survives the min/max envelope
    ys[100:200] = np.nan
    svg = svg_line_plot([("total", "#000", ys, 1.0)], xs, title="t", y_unit="ms", marks=[0, 100])
    assert len(svg) < 100_000
    assert "max 500 ms" in svg and "<polyline" in svg


def _run_frames(tmp_path: Path, n: int) -> tuple[int, int]:
    frame, result, _ = synthetic_frame()
    tracemalloc.start()
    try:
        report = HtmlReport(tmp_path, max_frames=8)
        for i in range(n):
            report.on_frame(i, frame, result, {})
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(report.shown_indices) <= 8
    return current, peak


def test_memory_does_not_grow_with_frame_count(tmp_path: Path) -> None:
    cur20, peak20 = _run_frames(tmp_path, 20)
    cur200, peak200 = _run_frames(tmp_path, 200)
    # 180 more frames cost only their per-frame numbers (a few tens of bytes each)
    assert cur200 < cur20 + 64_000, (cur20, cur200)
    assert peak200 < peak20 * 1.2 + 64_000, (peak20, peak200)
