"""A single background worker where the latest submitted item wins.

The ROS executor thread only submits; reconstruction runs here. When processing is slower
than the input, a pending item that was never started is replaced by the newer one and
reported through ``on_dropped`` (so it can be counted), never silently lost. Items that never
run because the worker stopped (pending at :meth:`LatestWinsWorker.stop`, or submitted
after it) are reported through ``on_cancelled`` instead: they were not replaced by a newer
item.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LatestWinsWorker(Generic[T]):
    """Runs ``process(item)`` on a daemon thread for the most recently submitted item.

    Args:
        process: called on the worker thread; exceptions are logged and swallowed so the
            worker keeps serving (callers should handle their own errors).
        on_dropped: called (on the submitting thread) with an item replaced by a newer one
            before it ran.
        name: thread name.
        on_cancelled: called (on the thread that calls :meth:`stop` or :meth:`submit`) with an
            item that never runs because the worker stopped; default ``on_dropped``.
    """

    def __init__(
        self,
        process: Callable[[T], None],
        on_dropped: Callable[[T], None],
        name: str = "sam3d-worker",
        *,
        on_cancelled: Callable[[T], None] | None = None,
    ) -> None:
        self._process = process
        self._on_dropped = on_dropped
        self._on_cancelled = on_cancelled or on_dropped
        self._cond = threading.Condition()
        self._pending: T | None = None
        self._busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> None:
        """Queue ``item``; a pending, not yet started item is dropped."""
        dropped: T | None = None
        with self._cond:
            stopped = self._stop
            if not stopped:
                dropped, self._pending = self._pending, item
                self._cond.notify()
        if stopped:
            self._on_cancelled(item)
        elif dropped is not None:
            self._on_dropped(dropped)

    def idle(self) -> bool:
        """True when nothing is pending or running."""
        with self._cond:
            return self._pending is None and not self._busy

    def wait_idle(self, timeout: float) -> bool:
        """Block until idle or ``timeout`` seconds passed; returns whether idle."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after the running item; a pending one never runs and is reported
        through ``on_cancelled``."""
        with self._cond:
            self._stop = True
            cancelled, self._pending = self._pending, None
            self._cond.notify_all()
        if cancelled is not None:
            self._on_cancelled(cancelled)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stop)
                if self._stop:
                    return
                item, self._pending = self._pending, None
                self._busy = True
            try:
                assert item is not None
                self._process(item)
            except Exception:
                logger.exception("worker %s: unhandled error while processing", self._thread.name)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
