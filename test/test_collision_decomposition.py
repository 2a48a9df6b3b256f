"""Convex decomposition: conservative, capped parts; runs off the frame path (hull first,
parts later), honours its time budget, and degrades to the hull without a library."""

from __future__ import annotations

import importlib.util
import logging
import time

import numpy as np
import pytest
import trimesh
from scene_helpers import box, config, frame
from test_collision_shapes import tm

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.collision import convex_hull, points_outside_convex
from sam3d_ros.core.decomposition import (
    DecompositionRequest,
    DecompositionService,
    DecompositionUnavailableError,
    decompose,
    finalize_parts,
)
from sam3d_ros.core.meshing import is_watertight, mesh_volume
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.types import TriangleMesh

#: Seconds the deliberately slow decomposer sleeps.
SLOW_S = 3.0


def slow_decomposer(req: DecompositionRequest) -> tuple[TriangleMesh, ...]:
    """Picklable test decomposer: sleeps, then splits the mesh in two halves along x."""
    time.sleep(SLOW_S)
    v = np.asarray(req.vertices)
    mid = float(np.median(v[:, 0]))
    return finalize_parts([v[v[:, 0] <= mid], v[v[:, 0] >= mid]], v, req.max_parts, req.max_part_vertices)


def hanging_decomposer(req: DecompositionRequest) -> tuple[TriangleMesh, ...]:
    """Never finishes in time."""
    time.sleep(120.0)
    return ()


def unavailable_decomposer(req: DecompositionRequest) -> tuple[TriangleMesh, ...]:
    raise DecompositionUnavailableError("neither coacd nor vhacdx is installed")


def assert_parts_ok(
    parts: tuple[TriangleMesh, ...], mesh: TriangleMesh, max_parts: int, max_verts: int
) -> None:
    assert 1 <= len(parts) <= max_parts
    for p in parts:
        assert len(p.vertices) <= max_verts and is_watertight(p) and mesh_volume(p) > 0
    outside = np.stack([points_outside_convex(mesh.vertices, p) for p in parts], axis=1).min(axis=1)
    assert outside.max() < 1e-6  # every mesh vertex inside some part


@pytest.mark.parametrize("method", ["coacd", "vhacd"])
def test_decomposition_contains_mesh_and_is_tighter_than_hull(method: str) -> None:
    if importlib.util.find_spec({"coacd": "coacd", "vhacd": "vhacdx"}[method]) is None:
        pytest.skip(f"{method} not installed")
    ring = tm(trimesh.creation.annulus(r_min=0.03, r_max=0.05, height=0.04, sections=48))
    req = DecompositionRequest(ring.vertices, ring.faces, method=method, max_parts=6, max_part_vertices=32)
    parts = decompose(req)
    assert_parts_ok(parts, ring, 6, 32)
    total = sum(mesh_volume(p) for p in parts)
    assert mesh_volume(ring) <= total < 0.95 * mesh_volume(convex_hull(ring))


def test_finalize_parts_fixes_containment_and_merges() -> None:
    m = tm(trimesh.creation.box((0.2, 0.05, 0.05)))
    v = m.vertices
    # four parts that miss the +x end; capped to two parts
    raw = [v[v[:, 0] < 0] * 0.9, v[v[:, 0] < 0] * 0.5, v[v[:, 0] < 0] * 0.3 + 0.01, v[v[:, 0] < 0] * 0.2]
    parts = finalize_parts(raw, v, max_parts=2, max_part_vertices=8)
    assert_parts_ok(parts, m, 2, 8)


def test_slow_decomposition_never_blocks_frames_and_upgrades_hull_to_parts() -> None:
    # identical noise-free frames give identical single-frame meshes, so the parts must
    # hold the current mesh exactly (a fused shape keeps converging within
    # shape_change_threshold of the version the parts were made from)
    cfg = config(collision_shapes="hull,decomposition", decomposition_max_parts=4, fusion_enabled=False)
    pipe = FramePipeline(cfg, create_backend(cfg), decomposer=slow_decomposer)
    objects = [box(1, 0.0, 0.0, (0.14, 0.05, 0.08))]
    try:
        first = pipe.process_scene(frame(objects, 0))
        assert len(first.result.objects[0].collision.convex_parts) == 1  # the hull, at once
        times, i = [], 1
        t_end = time.monotonic() + 60.0
        upgraded = None
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            upd = pipe.process_scene(frame(objects, i))
            times.append(time.perf_counter() - t0)
            i += 1
            if upd.objects[0].collision.parts:
                upgraded = upd
                break
        assert upgraded is not None, "parts never arrived"
        # frames kept flowing while the decomposer slept: none waited for it
        assert len(times) >= 3 and max(times) < SLOW_S, times
        obj = upgraded.objects[0]
        assert obj.geometry_changed and not obj.appeared
        assert len(obj.result.collision.convex_parts) == 1 + len(obj.collision.parts)
        assert_parts_ok(obj.collision.parts, obj.result.mesh, 4, cfg.decomposition_max_part_vertices)
        # cached: the next frame of the same object reuses the parts without a new job
        nxt = pipe.process_scene(frame(objects, i))
        assert nxt.objects[0].collision.parts and not nxt.objects[0].geometry_changed
        assert not pipe.decompositions_busy()
    finally:
        pipe.close()


def test_time_budget_stops_the_worker_and_keeps_the_hull(caplog: pytest.LogCaptureFixture) -> None:
    svc = DecompositionService(0.5, hanging_decomposer)
    m = tm(trimesh.creation.box((0.1, 0.1, 0.1)))
    try:
        svc.submit(7, 1, DecompositionRequest(m.vertices, m.faces))
        deadline = time.monotonic() + 30.0
        results = []
        with caplog.at_level(logging.WARNING):
            while not results and time.monotonic() < deadline:
                results = svc.take_results()
                time.sleep(0.05)
        assert results and results[0].key == 7 and results[0].parts == () and "timeout" in results[0].error
        assert "budget" in caplog.text
        assert not svc.busy()
    finally:
        svc.close()


def test_missing_libraries_degrade_to_hull(caplog: pytest.LogCaptureFixture) -> None:
    svc = DecompositionService(30.0, unavailable_decomposer, use_processes=False)
    m = tm(trimesh.creation.box((0.1, 0.1, 0.1)))
    with caplog.at_level(logging.WARNING):
        for key in (1, 2):
            svc.submit(key, 1, DecompositionRequest(m.vertices, m.faces))
        deadline = time.monotonic() + 10.0
        while svc.busy() and time.monotonic() < deadline:
            time.sleep(0.01)
    res = svc.take_results()
    assert sorted(r.key for r in res) == [1, 2] and all(r.parts == () for r in res)
    assert caplog.text.count("convex decomposition unavailable") == 1
    svc.close()
