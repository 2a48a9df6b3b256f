"""Thread-safe runtime statistics: rates, per-stage latency, skipped frames and objects.

Feeds the node's /diagnostics and the replay summary. Nothing is dropped silently: every
skipped frame or object is counted here by reason.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class StatsSnapshot:
    """A consistent copy of the counters.

    Attributes:
        input_rate_hz, output_rate_hz: synchronized frames in / results out per second,
            over the last ``window`` events.
        latency_ms: median wall time per pipeline stage (and "total") over the window.
        frames_in, frames_out: totals since start (or reset).
        frames_skipped: skipped frames by reason.
        objects_out: objects published in total.
        objects_skipped: skipped objects by reason.
        last_skip: (reason, detail) of the most recent skip, or None.
    """

    input_rate_hz: float
    output_rate_hz: float
    latency_ms: dict[str, float]
    frames_in: int
    frames_out: int
    frames_skipped: dict[str, int]
    objects_out: int
    objects_skipped: dict[str, int]
    last_skip: tuple[str, str] | None


def _rate(times: deque[float]) -> float:
    if len(times) < 2:
        return 0.0
    span = times[-1] - times[0]
    return (len(times) - 1) / span if span > 0 else 0.0


class RuntimeStats:
    """Counters and sliding windows; all methods are thread-safe."""

    def __init__(self, window: int = 50) -> None:
        self._window = max(1, int(window))
        self._lock = threading.Lock()
        self._now = time.monotonic
        self.reset()

    def reset(self) -> None:
        """Zero every counter and window."""
        with getattr(self, "_lock", threading.Lock()):
            self._in_times: deque[float] = deque(maxlen=self._window)
            self._out_times: deque[float] = deque(maxlen=self._window)
            self._latency: dict[str, deque[float]] = {}
            self._frames_in = 0
            self._frames_out = 0
            self._frames_skipped: Counter[str] = Counter()
            self._objects_out = 0
            self._objects_skipped: Counter[str] = Counter()
            self._last_skip: tuple[str, str] | None = None

    def frame_in(self) -> None:
        """A synchronized frame arrived."""
        with self._lock:
            self._frames_in += 1
            self._in_times.append(self._now())

    def frame_out(self, timings_ms: dict[str, float], n_objects: int, skipped_objects: list[str]) -> None:
        """A frame was processed: its stage timings, objects published and objects skipped."""
        with self._lock:
            self._frames_out += 1
            self._out_times.append(self._now())
            for stage, ms in timings_ms.items():
                self._latency.setdefault(stage, deque(maxlen=self._window)).append(ms)
            self._objects_out += n_objects
            self._objects_skipped.update(skipped_objects)

    def frame_skipped(self, reason: str, detail: str = "") -> None:
        """A whole frame was skipped."""
        with self._lock:
            self._frames_skipped[reason] += 1
            self._last_skip = (reason, detail)

    def snapshot(self) -> StatsSnapshot:
        """Consistent copy of all counters."""
        with self._lock:
            return StatsSnapshot(
                input_rate_hz=_rate(self._in_times),
                output_rate_hz=_rate(self._out_times),
                latency_ms={k: statistics.median(v) for k, v in self._latency.items() if v},
                frames_in=self._frames_in,
                frames_out=self._frames_out,
                frames_skipped=dict(self._frames_skipped),
                objects_out=self._objects_out,
                objects_skipped=dict(self._objects_skipped),
                last_skip=self._last_skip,
            )
