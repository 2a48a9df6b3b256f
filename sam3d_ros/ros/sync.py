"""Approximate-time synchronisation of several message streams by header stamp.

Same semantics as ``message_filters.ApproximateTimeSynchronizer`` (Python version): each
input keeps up to ``queue_size`` messages keyed by stamp; when a message arrives, the
candidate sets are all combinations of queued messages of the other inputs within ``slop``
of it, closest first; the first set whose stamp spread is below ``slop`` is emitted and its
messages removed from the queues. A message with a stamp already queued on the same input
replaces the queued one (counted as a duplicate).

In addition to message_filters, messages that fall out of a full queue without ever being
part of a set are counted (``dropped_unmatched``) so nothing is lost silently. No rclpy
import: the live node and the offline replay share this class.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sam3d_ros.core.types import SkipReason
from sam3d_ros.ros.conversions import header_stamp_ns


class SyncError(ValueError):
    """Raised for invalid synchroniser arguments."""


class ApproximateTimeSync:
    """Synchronise ``num_inputs`` streams.

    Args:
        num_inputs: number of input streams (>= 1).
        queue_size: messages kept per input.
        slop: maximum stamp spread of a set, seconds.
        callback: called with one message per input, in input order.
        stamp_of: returns a message's stamp in nanoseconds (default: ``msg.header.stamp``).
    """

    def __init__(
        self,
        num_inputs: int,
        queue_size: int,
        slop: float,
        callback: Callable[..., None],
        stamp_of: Callable[[Any], int] = header_stamp_ns,
    ) -> None:
        if num_inputs < 1:
            raise SyncError(f"num_inputs must be >= 1, got {num_inputs}")
        if queue_size < 1:
            raise SyncError(f"queue_size must be >= 1, got {queue_size}")
        if not slop >= 0.0:
            raise SyncError(f"slop must be >= 0 s, got {slop}")
        self._queues: list[dict[int, Any]] = [{} for _ in range(num_inputs)]
        self._queue_size = queue_size
        self._slop_ns = round(slop * 1e9)
        self._callback = callback
        self._stamp_of = stamp_of
        self._lock = threading.Lock()
        self.emitted = 0
        self.dropped_unmatched = [0] * num_inputs
        self.duplicates = [0] * num_inputs

    def add(self, msg: Any, index: int) -> None:
        """Add a message of input ``index``; may call the callback (outside the lock)."""
        stamp = self._stamp_of(msg)
        with self._lock:
            matched = self._add_locked(msg, stamp, index)
        if matched is not None:
            self._callback(*matched)

    def _add_locked(self, msg: Any, stamp: int, index: int) -> Sequence[Any] | None:
        queue = self._queues[index]
        if stamp in queue:
            self.duplicates[index] += 1
        queue[stamp] = msg
        while len(queue) > self._queue_size:
            del queue[min(queue)]
            self.dropped_unmatched[index] += 1
        candidates: list[list[int]] = []
        for j, other in enumerate(self._queues):
            if j == index:
                continue
            near = sorted((abs(s - stamp), s) for s in other if abs(s - stamp) <= self._slop_ns)
            if not near:
                return None
            candidates.append([s for _, s in near])
        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(index, stamp)
            if max(stamps) - min(stamps) <= self._slop_ns:
                msgs = [self._queues[j].pop(s) for j, s in enumerate(stamps)]
                self.emitted += 1
                return msgs
        return None

    def pending(self) -> list[int]:
        """Number of queued messages per input."""
        with self._lock:
            return [len(q) for q in self._queues]

    def clear(self) -> None:
        """Drop all queued messages (counted as unmatched)."""
        with self._lock:
            for i, q in enumerate(self._queues):
                self.dropped_unmatched[i] += len(q)
                q.clear()


class StampGate:
    """Accepts synchronized frames only with increasing stamps (node and replay alike).

    A stamp equal to the last accepted one is a duplicate, an older one is stale; both are
    rejected. A stamp more than ``jump_reset_s`` behind the last one means the source
    restarted (a bag looping, a camera driver restarting): the gate resets and accepts it.
    """

    def __init__(self, jump_reset_s: float = 5.0) -> None:
        self._jump_ns = round(jump_reset_s * 1e9)
        self.last_ns: int | None = None
        self.resets = 0

    def check(self, stamp_ns: int) -> tuple[SkipReason | None, str]:
        """Returns (None, "") to accept (and remembers the stamp), else (reason, detail).
        A detail without a reason reports a reset."""
        last = self.last_ns
        if last is not None and stamp_ns <= last:
            if last - stamp_ns > self._jump_ns:
                self.last_ns = stamp_ns
                self.resets += 1
                return (
                    None,
                    f"time jumped back {(last - stamp_ns) / 1e9:.1f} s: source restarted, state reset",
                )
            reason = SkipReason.DUPLICATE_STAMP if stamp_ns == last else SkipReason.STALE_STAMP
            return reason, f"stamp {stamp_ns} ns <= last accepted stamp {last} ns"
        self.last_ns = stamp_ns
        return None, ""

    def reset(self) -> None:
        """Forget the last stamp."""
        self.last_ns = None
