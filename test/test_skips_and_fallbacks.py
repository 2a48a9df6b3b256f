"""Errors are neither swallowed nor mislabelled: an object the geometric backend cannot
complete for a legitimate reason ends as a skipped object carrying that reason, a bug
propagates, and every library fallback is logged (once per kind per process)."""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest
import trimesh
from scene_helpers import box, config, frame

from sam3d_ros.backends import geometric
from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core import constants as C
from sam3d_ros.core import decomposition, logs
from sam3d_ros.core.collision import simplify_mesh
from sam3d_ros.core.decomposition import DecompositionError, DecompositionRequest, decompose
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.types import SkipReason, TriangleMesh


@pytest.fixture(autouse=True)
def fresh_once_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts as a fresh process would: no fallback reported yet."""
    monkeypatch.setattr(logs, "_warned", set())


def _sphere(subdivisions: int = 3) -> TriangleMesh:
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.05)
    return TriangleMesh(np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int32))


def _warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


# ----------------------------------------------------------------------------- completion


def test_legitimate_completion_failure_is_a_skipped_object_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An object too large for the completion grid: no shape, and the skipped object says why
    (not just "backend returned no shape"); the skip is logged at INFO with the reason."""
    monkeypatch.setattr(C, "MAX_GRID_DIM", 10)
    cfg = config()
    pipe = FramePipeline(cfg, create_backend(cfg, "geometric"))
    try:
        with caplog.at_level(logging.INFO, logger="sam3d_ros.core.pipeline"):
            result = pipe.process(frame([box(1, 0.0, 0.0)], 0))
    finally:
        pipe.close()
    assert result.objects == ()
    (skip,) = result.skipped
    assert skip.instance_id == 1 and skip.reason is SkipReason.EMPTY_SHAPE
    assert skip.detail.startswith("CompletionError: object 1: grid ")
    assert "exceeds MAX_GRID_DIM=10" in skip.detail
    logged = [r for r in caplog.records if r.name == "sam3d_ros.core.pipeline" and r.levelno >= logging.INFO]
    assert any("object 1" in r.getMessage() and "empty_shape" in r.getMessage() for r in logged)
    assert any("exceeds MAX_GRID_DIM=10" in r.getMessage() for r in logged)


def test_backend_reports_failures_of_its_last_call_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config()
    backend = create_backend(cfg, "geometric")
    f = frame([box(1, 0.0, 0.0)], 0)
    pipe = FramePipeline(cfg, backend)
    max_dim = C.MAX_GRID_DIM
    try:
        monkeypatch.setattr(C, "MAX_GRID_DIM", 10)
        assert not pipe.process(f).objects
        assert list(backend.failure_details()) == [1]
        monkeypatch.setattr(C, "MAX_GRID_DIM", max_dim)
        assert pipe.process(f).objects  # completed now: nothing recorded any more
        assert backend.failure_details() == {}
    finally:
        pipe.close()


@pytest.mark.parametrize("bug", [ZeroDivisionError, RuntimeError, ValueError, IndexError])
def test_a_bug_in_completion_propagates(monkeypatch: pytest.MonkeyPatch, bug: type[Exception]) -> None:
    """Anything but a CompletionError is a bug: it is not turned into "no shape"."""

    def broken(*_args: object) -> None:
        raise bug("a bug, not bad input")

    monkeypatch.setattr(geometric, "complete_shape", broken)
    cfg = config()
    pipe = FramePipeline(cfg, create_backend(cfg, "geometric"))
    try:
        with pytest.raises(bug, match="a bug, not bad input"):
            pipe.process(frame([box(1, 0.0, 0.0)], 0))
    finally:
        pipe.close()


# ----------------------------------------------------------------------------- decomposition


def _fake_vhacd(req: DecompositionRequest, mesh: TriangleMesh) -> list[np.ndarray]:
    return [np.asarray(mesh.vertices, dtype=np.float64)]


def _missing(req: DecompositionRequest, mesh: TriangleMesh) -> list[np.ndarray]:
    raise ImportError("No module named 'coacd'")


def test_missing_decomposition_library_falls_back_and_logs_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(decomposition._METHODS, "coacd", _missing)
    monkeypatch.setitem(decomposition._METHODS, "vhacd", _fake_vhacd)
    s = _sphere(1)
    req = DecompositionRequest(s.vertices, s.faces, method="coacd")
    with caplog.at_level(logging.WARNING, logger="sam3d_ros.core.decomposition"):
        for _ in range(3):
            assert len(decompose(req)) == 1  # the fallback's parts
    (rec,) = _warnings(caplog, "sam3d_ros.core.decomposition")
    assert "'coacd' is not installed" in rec.getMessage() and "No module named 'coacd'" in rec.getMessage()


def test_decomposition_library_failure_is_a_decomposition_error_and_a_bug_propagates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = _sphere(1)
    req = DecompositionRequest(s.vertices, s.faces, method="vhacd")

    def library_failure(req: DecompositionRequest, mesh: TriangleMesh) -> list[np.ndarray]:
        raise RuntimeError("qhull exploded")

    monkeypatch.setitem(decomposition._METHODS, "vhacd", library_failure)
    with pytest.raises(
        DecompositionError, match="vhacd failed on a 80-face mesh: RuntimeError: qhull exploded"
    ):
        decompose(req)

    def bug(req: DecompositionRequest, mesh: TriangleMesh) -> list[np.ndarray]:
        raise TypeError("a bug in the call")

    monkeypatch.setitem(decomposition._METHODS, "vhacd", bug)
    with pytest.raises(TypeError, match="a bug in the call"):
        decompose(req)


# ----------------------------------------------------------------------------- simplification


def _fake_simplification(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    def simplify(*_args: object, **_kwargs: object) -> None:
        raise exc

    monkeypatch.setitem(sys.modules, "fast_simplification", types.SimpleNamespace(simplify=simplify))


def test_failing_decimation_falls_back_to_clustering_and_logs_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_simplification(monkeypatch, ValueError("``target_count`` must be greater than 0"))
    mesh = _sphere(3)
    with caplog.at_level(logging.WARNING, logger="sam3d_ros.core.collision"):
        for _ in range(3):
            out = simplify_mesh(mesh, 100)
            assert 4 <= len(out.faces) <= 100
    (rec,) = _warnings(caplog, "sam3d_ros.core.collision")
    msg = rec.getMessage()
    assert "fast_simplification failed on a 1280-face mesh" in msg and "budget 100" in msg
    assert "ValueError: ``target_count`` must be greater than 0" in msg


def test_a_bug_in_decimation_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_simplification(monkeypatch, TypeError("unexpected keyword"))
    with pytest.raises(TypeError, match="unexpected keyword"):
        simplify_mesh(_sphere(3), 100)


def test_missing_decimation_library_logs_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "fast_simplification", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="sam3d_ros.core.collision"):
        for _ in range(3):
            simplify_mesh(_sphere(3), 100)
    (rec,) = _warnings(caplog, "sam3d_ros.core.collision")
    assert "not installed" in rec.getMessage()


def test_warn_once_is_per_logger_and_kind(caplog: pytest.LogCaptureFixture) -> None:
    a, b = logging.getLogger("sam3d_ros.test.a"), logging.getLogger("sam3d_ros.test.b")
    with caplog.at_level(logging.WARNING):
        assert logs.warn_once(a, "k", "a %s", 1)
        assert not logs.warn_once(a, "k", "a %s", 2)
        assert logs.warn_once(a, "other", "a other")
        assert logs.warn_once(b, "k", "b %s", 1)
    assert [r.getMessage() for r in caplog.records] == ["a 1", "a other", "b 1"]
