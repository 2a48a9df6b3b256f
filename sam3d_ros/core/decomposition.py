"""Convex decomposition of object meshes, off the frame path.

:func:`decompose` splits a closed mesh into convex parts with CoACD (``coacd``) or V-HACD
(``vhacdx``), whichever is asked for and installed (the other one is the fallback; when
neither is installed :class:`DecompositionUnavailableError` is raised and callers keep the
hull). The parts are then made planner-friendly and conservative:

* at most ``max_parts`` parts (the smallest are merged into their nearest neighbour by
  taking the hull of both);
* every mesh vertex lies inside some part (a vertex left outside is added to the part
  nearest to it, whose hull is retaken);
* at most ``max_part_vertices`` vertices per part (:func:`cap_convex_vertices`, which only
  ever grows a part).

:class:`DecompositionService` runs the jobs in one worker process (``spawn``, so it is safe
next to rclpy's threads), one job at a time, newest job per key wins; it never blocks the
caller. A job that exceeds its time budget is stopped by terminating the worker process.

All geometry in the frame of the input mesh (the caller's choice), metres.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core import constants as C
from sam3d_ros.core.collision import (
    CollisionError,
    cap_convex_vertices,
    convex_hull,
    points_outside_convex,
    simplify_mesh,
)
from sam3d_ros.core.logs import warn_once
from sam3d_ros.core.types import TriangleMesh

logger = logging.getLogger(__name__)

#: Faces the input mesh is decimated to before decomposing (speed; parts are then made to
#: contain the full mesh's vertices anyway).
_INPUT_FACES = 2000


class DecompositionError(RuntimeError):
    """A decomposition failed (bad mesh, library error, timeout)."""


class DecompositionUnavailableError(DecompositionError):
    """Neither CoACD nor V-HACD is installed."""


@dataclass(frozen=True)
class DecompositionRequest:
    """One job: a closed mesh and the limits (picklable, sent to the worker process).

    Attributes:
        vertices: (V, 3) float64, metres. faces: (F, 3) int32, outward oriented.
        method: "coacd" or "vhacd" (the other one is the fallback).
        max_parts: at most this many parts. max_part_vertices: per part.
        threshold: CoACD concavity threshold.
    """

    vertices: NDArray[np.float64]
    faces: NDArray[np.int32]
    method: str = "coacd"
    max_parts: int = 8
    max_part_vertices: int = 64
    threshold: float = 0.05


@dataclass(frozen=True)
class DecompositionResult:
    """A finished job.

    Attributes:
        key: the caller's key (e.g. a track id). version: the caller's geometry version.
        parts: convex parts (empty on failure). error: why it failed, "" on success.
        seconds: wall time of the job (from its start in the worker).
    """

    key: int
    version: int
    parts: tuple[TriangleMesh, ...]
    error: str = ""
    seconds: float = 0.0


Decomposer = Callable[[DecompositionRequest], tuple[TriangleMesh, ...]]


def _run_coacd(req: DecompositionRequest, mesh: TriangleMesh) -> list[NDArray[np.float64]]:
    import coacd  # type: ignore[import-untyped]

    coacd.set_log_level("error")
    parts = coacd.run_coacd(
        coacd.Mesh(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int32)),
        threshold=float(req.threshold),
        max_convex_hull=int(req.max_parts),
        preprocess_resolution=30,
        resolution=1000,
        mcts_iterations=60,
        mcts_nodes=15,
        mcts_max_depth=2,
        seed=0,
    )
    return [np.asarray(p[0], dtype=np.float64) for p in parts]


def _run_vhacd(req: DecompositionRequest, mesh: TriangleMesh) -> list[NDArray[np.float64]]:
    import vhacdx  # type: ignore[import-untyped]

    parts = vhacdx.compute_vhacd(
        np.asarray(mesh.vertices, dtype=np.float64),
        np.asarray(mesh.faces, dtype=np.uint32),
        maxConvexHulls=int(req.max_parts),
        resolution=50_000,
        maxNumVerticesPerCH=int(req.max_part_vertices),
        asyncACD=False,
    )
    return [np.asarray(p[0], dtype=np.float64) for p in parts]


_METHODS = {"coacd": _run_coacd, "vhacd": _run_vhacd}

#: What the libraries raise for a mesh they cannot decompose: vhacdx (pybind11) turns C++
#: exceptions into RuntimeError (std::runtime_error and unknown ones), ValueError
#: (std::invalid_argument, std::domain_error, std::length_error), IndexError
#: (std::out_of_range) and MemoryError (std::bad_alloc); coacd (ctypes) raises the same
#: from numpy on its outputs. Anything else (a bug in the call) propagates.
_LIBRARY_ERRORS = (RuntimeError, ValueError, IndexError, MemoryError)


def decompose(req: DecompositionRequest) -> tuple[TriangleMesh, ...]:
    """Convex parts of a closed mesh (see the module docstring). Runs for seconds.

    Raises:
        DecompositionUnavailableError: neither library is installed.
        DecompositionError: bad input or a library failure.
    """
    v = np.asarray(req.vertices, dtype=np.float64)
    f = np.asarray(req.faces, dtype=np.int32)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 4 or f.ndim != 2 or f.shape[1] != 3 or len(f) < 4:
        raise DecompositionError(f"need a closed mesh, got vertices {v.shape} and faces {f.shape}")
    if not np.all(np.isfinite(v)):
        raise DecompositionError("mesh has non-finite vertices")
    if len(f) > C.DECOMPOSITION_MAX_INPUT_FACES:
        raise DecompositionError(f"mesh has {len(f)} faces > {C.DECOMPOSITION_MAX_INPUT_FACES}")
    mesh = simplify_mesh(TriangleMesh(v, f), _INPUT_FACES)
    order = [req.method] + [m for m in _METHODS if m != req.method]
    raw: list[NDArray[np.float64]] | None = None
    for method in order:
        run = _METHODS.get(method)
        if run is None:
            raise DecompositionError(f"unknown decomposition method {method!r}; expected {list(_METHODS)}")
        try:
            raw = run(req, mesh)
        except ImportError as err:
            warn_once(
                logger,
                f"decomposition_{method}_missing",
                "convex decomposition method %r is not installed (%s); trying the next of %s",
                method,
                err,
                order,
            )
            continue
        except _LIBRARY_ERRORS as err:
            raise DecompositionError(
                f"{method} failed on a {len(f)}-face mesh: {type(err).__name__}: {err}"
            ) from err
        break
    if raw is None:
        raise DecompositionUnavailableError("neither coacd nor vhacdx is installed")
    return finalize_parts(raw, v, req.max_parts, req.max_part_vertices)


def finalize_parts(
    raw_parts: list[NDArray[np.float64]],
    mesh_vertices: NDArray[np.float64],
    max_parts: int,
    max_part_vertices: int,
) -> tuple[TriangleMesh, ...]:
    """Planner-friendly, conservative parts from raw part point sets (see module docstring).

    Args:
        raw_parts: (Ni, 3) point sets, one per part.
        mesh_vertices: (V, 3) vertices that the union of the parts must contain.
        max_parts, max_part_vertices: caps.
    """
    pts = [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in raw_parts]
    pts = [p for p in pts if len(p) >= 4 and np.all(np.isfinite(p))]
    if not pts:
        pts = [np.asarray(mesh_vertices, dtype=np.float64)]
    # merge the smallest parts into their nearest neighbour until under the cap
    while len(pts) > max(1, max_parts):
        sizes = [float(np.prod(np.ptp(p, axis=0) + 1e-9)) for p in pts]
        i = int(np.argmin(sizes))
        c = pts[i].mean(axis=0)
        others = [j for j in range(len(pts)) if j != i]
        j = min(others, key=lambda k: float(np.linalg.norm(pts[k].mean(axis=0) - c)))
        pts[j] = np.vstack([pts[j], pts[i]])
        del pts[i]
    hulls = [_safe_hull(p) for p in pts]
    # containment: every mesh vertex inside some part
    mv = np.asarray(mesh_vertices, dtype=np.float64)
    outside = np.stack([points_outside_convex(mv, h) for h in hulls], axis=1)  # (V, P)
    lost = outside.min(axis=1) > C.DECOMPOSITION_CONTAINMENT_TOL
    if lost.any():
        nearest = np.argmin(outside[lost], axis=1)
        for k in np.unique(nearest):
            extra = mv[lost][nearest == k]
            pts[k] = np.vstack([hulls[k].vertices, extra])
            hulls[k] = _safe_hull(pts[k])
    return tuple(cap_convex_vertices(h.vertices, max_part_vertices) for h in hulls)


def _safe_hull(points: NDArray[np.float64]) -> TriangleMesh:
    """Hull of points; flat sets get a tiny thickness so that they still form a solid."""
    try:
        return convex_hull(TriangleMesh(points, np.zeros((0, 3), dtype=np.int32)))
    except CollisionError:
        jitter = np.vstack([points + d for d in np.vstack([np.eye(3), -np.eye(3)]) * 1e-5])
        return convex_hull(TriangleMesh(jitter, np.zeros((0, 3), dtype=np.int32)))


def _timed_job(decomposer: Decomposer, req: DecompositionRequest) -> tuple[tuple[TriangleMesh, ...], float]:
    """Worker-side wrapper: the parts and the seconds they took."""
    t0 = time.perf_counter()
    parts = decomposer(req)
    return parts, time.perf_counter() - t0


@dataclass
class _Job:
    key: int
    version: int
    request: DecompositionRequest
    started: float = 0.0
    future: cf.Future[tuple[tuple[TriangleMesh, ...], float]] | None = None


class DecompositionService:
    """Runs decompositions in one background worker process; never blocks the caller.

    ``submit`` queues a job per key (a newer job for the same key replaces a queued one, and
    the result of a running older one is dropped); finished results are collected by
    :meth:`take_results`. Jobs run one at a time; a job running longer than
    ``time_budget_s`` is stopped by terminating the worker (a fresh one starts for the next
    job) and reported with an error. Thread-safe.

    Args:
        time_budget_s: seconds a job may run.
        decomposer: a picklable (module-level) function ``request -> parts``.
        use_processes: False runs jobs on a thread (no hard time limit: late results are
            dropped instead); for environments where processes cannot be started.
    """

    def __init__(
        self, time_budget_s: float, decomposer: Decomposer = decompose, *, use_processes: bool = True
    ) -> None:
        self.time_budget_s = float(time_budget_s)
        self._decomposer = decomposer
        self._use_processes = use_processes
        self._lock = threading.RLock()
        self._executor: cf.Executor | None = None
        self._queue: dict[int, _Job] = {}
        self._running: _Job | None = None
        self._results: dict[int, DecompositionResult] = {}
        self._closed = False
        self._unavailable_logged = False

    # ------------------------------------------------------------------ public API
    def submit(self, key: int, version: int, request: DecompositionRequest) -> None:
        """Queue a job (returns at once)."""
        with self._lock:
            if self._closed:
                return
            self._queue.pop(key, None)
            self._queue[key] = _Job(key, version, request)
            self._results.pop(key, None)
            self._schedule_locked()

    def cancel(self, key: int) -> None:
        """Forget queued jobs and results of ``key`` (a running job's result is dropped)."""
        with self._lock:
            self._queue.pop(key, None)
            self._results.pop(key, None)
            if self._running is not None and self._running.key == key:
                self._running.version = -1

    def reset(self) -> None:
        """Forget every job and result (the running job finishes unseen)."""
        with self._lock:
            self._queue.clear()
            self._results.clear()
            if self._running is not None:
                self._running.version = -1

    def take_results(self) -> list[DecompositionResult]:
        """Results finished since the last call (also enforces the time budget)."""
        self.check_deadline()
        with self._lock:
            out = list(self._results.values())
            self._results.clear()
            return out

    def busy(self) -> bool:
        """True while a job is queued or running."""
        with self._lock:
            return bool(self._queue) or self._running is not None

    def check_deadline(self) -> None:
        """Stop the running job when it exceeded the time budget."""
        with self._lock:
            job = self._running
            if job is None or job.future is None or job.future.done():
                return
            elapsed = time.monotonic() - job.started
            if elapsed <= self.time_budget_s:
                return
            logger.warning(
                "decomposition of %d (version %d) exceeded its %.1f s budget; stopped, the hull stays",
                job.key,
                job.version,
                self.time_budget_s,
            )
            self._running = None
            if job.version >= 0:
                self._results[job.key] = DecompositionResult(
                    job.key, job.version, (), f"timeout after {elapsed:.1f} s", elapsed
                )
            self._kill_executor_locked()
            self._schedule_locked()

    def close(self) -> None:
        """Stop the worker (a running job is terminated)."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._running = None
            self._kill_executor_locked()

    # ------------------------------------------------------------------ internals
    def _executor_locked(self) -> cf.Executor:
        if self._executor is None:
            if self._use_processes:
                self._executor = cf.ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn")
                )
            else:
                self._executor = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam3d-decompose")
        return self._executor

    def _kill_executor_locked(self) -> None:
        ex, self._executor = self._executor, None
        if ex is None:
            return
        procs = list(getattr(ex, "_processes", {}).values())  # private, but the only handle
        ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(C.DECOMPOSITION_SHUTDOWN_TIMEOUT_S)

    def _schedule_locked(self) -> None:
        if self._running is not None or not self._queue or self._closed:
            return
        key = next(iter(self._queue))
        job = self._queue.pop(key)
        try:
            fut = self._executor_locked().submit(_timed_job, self._decomposer, job.request)
        except (RuntimeError, cf.BrokenExecutor) as err:
            logger.warning("decomposition worker unavailable (%s); restarting it", err)
            self._kill_executor_locked()
            fut = self._executor_locked().submit(_timed_job, self._decomposer, job.request)
        job.future = fut
        job.started = time.monotonic()
        self._running = job
        fut.add_done_callback(functools.partial(self._on_done, job))

    def _on_done(self, job: _Job, fut: cf.Future[tuple[tuple[TriangleMesh, ...], float]]) -> None:
        with self._lock:
            if self._running is not job:  # timed out / closed: already handled
                return
            self._running = None
            if job.version >= 0 and not fut.cancelled():
                try:
                    parts, secs = fut.result()
                    self._results[job.key] = DecompositionResult(job.key, job.version, tuple(parts), "", secs)
                except DecompositionUnavailableError as err:
                    if not self._unavailable_logged:
                        self._unavailable_logged = True
                        logger.warning("convex decomposition unavailable (%s); publishing hulls only", err)
                    self._results[job.key] = DecompositionResult(job.key, job.version, (), str(err))
                except Exception as err:  # noqa: BLE001 - any worker failure is a failed job
                    logger.warning("decomposition of %d failed: %s: %s", job.key, type(err).__name__, err)
                    self._results[job.key] = DecompositionResult(
                        job.key, job.version, (), f"{type(err).__name__}: {err}"
                    )
            self._schedule_locked()
