"""Approximate-time synchronisation of several message streams by header stamp.

Same semantics as ``message_filters.ApproximateTimeSynchronizer`` (Python version): each
input keeps up to ``queue_size`` messages keyed by stamp; when a message arrives, the
candidate sets are all combinations of queued messages of the other inputs within ``slop``
of it, closest first; the first set whose stamp spread is below ``slop`` is emitted and its
messages removed from the queues. A message with a stamp already queued on the same input
replaces the queued one (counted as a duplicate).

In addition to message_filters, messages that fall out of a full queue or are replaced by a
duplicate without ever being part of a set are counted (``dropped_unmatched``) so nothing is
lost silently; :class:`InputAccounting` does the same per topic for either synchroniser (for
``message_filters`` from what it received, emitted and still queues). No rclpy import: the
live node and the offline replay share these classes.
"""

from __future__ import annotations

import itertools
import statistics
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sam3d_ros.core import constants as C
from sam3d_ros.core.types import SkipReason
from sam3d_ros.stream.conversions import header_stamp_ns


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
        if stamp in queue:  # the queued one is replaced: it never becomes part of a set
            self.duplicates[index] += 1
            self.dropped_unmatched[index] += 1
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


@dataclass(frozen=True)
class TopicCounts:
    """Accounting of one synchronised input topic.

    Every message received is, at any time, in exactly one of: a set emitted by the
    synchroniser (``frames_synced``, one message per topic), ``unmatched`` (aged out of the
    queue, replaced by a duplicate stamp, or still queued when the synchroniser was
    dropped) or ``queued``: ``received == frames_synced + unmatched + queued``.
    """

    received: int
    unmatched: int
    queued: int


#: ``(unmatched, queued)`` per input of a synchroniser, given the messages passed to it per
#: input and the sets it emitted since it was attached.
SyncSource = Callable[[Sequence[int], int], tuple[Sequence[int], Sequence[int]]]


class InputAccounting:
    """Per-topic message accounting of the synchronised inputs, for whichever synchroniser
    the node uses; thread-safe.

    Call :meth:`received` for every message before it goes to the synchroniser,
    :meth:`synced` for every emitted set, and :meth:`attach` with the :data:`SyncSource` of a
    new synchroniser (:func:`own_sync_source`, :func:`message_filters_source`); :meth:`detach`
    when it is dropped (what it still queues then becomes unmatched).
    """

    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = tuple(topics)
        n = len(self.topics)
        self._lock = threading.Lock()
        self._received = [0] * n
        self._synced = 0
        self._unmatched_before = [0] * n  # of synchronisers already detached
        self._received_now = [0] * n  # since the current synchroniser was attached
        self._synced_now = 0
        self._source: SyncSource | None = None

    def attach(self, source: SyncSource) -> None:
        with self._lock:
            self._source = source
            self._received_now = [0] * len(self.topics)
            self._synced_now = 0

    def detach(self) -> None:
        with self._lock:
            unmatched, queued = self._current_locked()
            for i in range(len(self.topics)):
                self._unmatched_before[i] += unmatched[i] + queued[i]
            self._source = None

    def received(self, index: int) -> None:
        with self._lock:
            self._received[index] += 1
            self._received_now[index] += 1

    def synced(self) -> None:
        with self._lock:
            self._synced += 1
            self._synced_now += 1

    @property
    def frames_synced(self) -> int:
        with self._lock:
            return self._synced

    def snapshot(self) -> dict[str, TopicCounts]:
        """topic -> counts (see :class:`TopicCounts`)."""
        with self._lock:
            unmatched, queued = self._current_locked()
            return {
                t: TopicCounts(self._received[i], self._unmatched_before[i] + unmatched[i], queued[i])
                for i, t in enumerate(self.topics)
            }

    def _current_locked(self) -> tuple[Sequence[int], Sequence[int]]:
        n = len(self.topics)
        if self._source is None:
            return [0] * n, [0] * n
        return self._source(list(self._received_now), self._synced_now)


def own_sync_source(sync: ApproximateTimeSync) -> SyncSource:
    """The :data:`SyncSource` of our synchroniser (it counts its unmatched messages)."""
    return lambda received, emitted: (list(sync.dropped_unmatched), sync.pending())


def message_filters_source(sync: Any) -> SyncSource:
    """The :data:`SyncSource` of a ``message_filters.ApproximateTimeSynchronizer``, which
    counts nothing itself: a message passed to it is in an emitted set, still in its
    ``queues`` (one stamp-keyed dict per input) or gone unmatched."""

    def source(received: Sequence[int], emitted: int) -> tuple[list[int], list[int]]:
        queued = [len(q) for q in getattr(sync, "queues", None) or [{} for _ in received]]
        return [max(0, r - emitted - q) for r, q in zip(received, queued, strict=True)], queued

    return source


@dataclass(frozen=True)
class StampVerdict:
    """What :meth:`StampGate.check` decided about one frame's stamp.

    Attributes:
        reason: why the frame is skipped, or None when it is accepted.
        detail: a human-readable explanation (empty for an ordinary accepted frame).
        restarted: the frame is accepted as the first of a restarted source (time went
            back, confirmed by a second frame): tracks and buffered state should be reset.
    """

    reason: SkipReason | None
    detail: str = ""
    restarted: bool = False


class StampGate:
    """Accepts synchronized frames only with stamps that continue the stream (node and
    replay alike). Skipped frames never move the gate.

    * stamp 0 (or negative): ``invalid_stamp`` (an unset header, never a restart);
    * more than ``max_ahead_s`` ahead of the clock (when a clock is given and running):
      ``future_stamp``;
    * equal to / older than the last accepted one (within ``jump_threshold_s``):
      ``duplicate_stamp`` / ``stale_stamp``;
    * farther than the jump threshold from the last accepted one, either way:
      ``stamp_jump``. The threshold is ``jump_threshold_s`` or, for a slow stream (a camera
      triggered every few seconds), :data:`~sam3d_ros.core.constants.STREAM_PERIOD_FACTOR` times the median interval
      of the last accepted frames, whichever is larger. Such a frame is held as a
      candidate: a jump back is confirmed by a next frame shortly after it (within the
      threshold) and reported as a restart (a bag looping, a driver restarting); a jump
      ahead (a pause, or the first interval of a slow stream) is confirmed by a next frame
      after it that is no farther from it than it was from the last accepted one. A frame
      that continues the old stream drops the candidate, so a single outlier never moves
      or blocks the stream.
    """

    def __init__(
        self,
        jump_threshold_s: float = C.STAMP_JUMP_THRESHOLD_S,
        max_ahead_s: float = C.STAMP_MAX_AHEAD_OF_CLOCK_S,
    ) -> None:
        self._jump_ns = round(jump_threshold_s * 1e9)
        self._ahead_ns = round(max_ahead_s * 1e9)
        self.last_ns: int | None = None
        self._candidate_ns: int | None = None
        self._intervals: deque[int] = deque(maxlen=C.STREAM_PERIOD_WINDOW)
        self.resets = 0

    def _threshold_ns(self) -> int:
        """The jump threshold: ``jump_threshold_s`` or a multiple of the stream's period."""
        if not self._intervals:
            return self._jump_ns
        return max(self._jump_ns, round(C.STREAM_PERIOD_FACTOR * statistics.median(self._intervals)))

    def check(self, stamp_ns: int, now_ns: int | None = None) -> StampVerdict:
        """Decide about one stamp; an accepted one is remembered.

        Args:
            stamp_ns: the frame's header stamp.
            now_ns: the receiver's clock (None or 0: no clock, e.g. offline or sim time
                before the first /clock).
        """
        if stamp_ns <= 0:
            return StampVerdict(SkipReason.INVALID_STAMP, f"stamp {stamp_ns} ns is not set (header stamp 0)")
        if now_ns and self._ahead_ns > 0 and stamp_ns > now_ns + self._ahead_ns:
            return StampVerdict(
                SkipReason.FUTURE_STAMP,
                f"stamp {stamp_ns} ns is {(stamp_ns - now_ns) / 1e9:.3f} s ahead of the clock "
                f"({now_ns} ns; at most {self._ahead_ns / 1e9:g} s allowed)",
            )
        last = self.last_ns
        if last is None:
            return self._accept(stamp_ns, "")
        jump_ns = self._threshold_ns()
        if abs(stamp_ns - last) <= jump_ns:
            if stamp_ns == last:
                return StampVerdict(SkipReason.DUPLICATE_STAMP, f"stamp {stamp_ns} ns == last accepted stamp")
            if stamp_ns < last:
                return StampVerdict(
                    SkipReason.STALE_STAMP, f"stamp {stamp_ns} ns < last accepted stamp {last} ns"
                )
            return self._accept(stamp_ns, "")
        cand = self._candidate_ns
        ahead_confirmed = (
            cand is not None and cand > last and 0 < stamp_ns - cand <= max(jump_ns, cand - last)
        )
        back_confirmed = cand is not None and cand < last and 0 < stamp_ns - cand <= jump_ns
        if cand is not None and (ahead_confirmed or back_confirmed):
            jump_s = (stamp_ns - last) / 1e9
            self._intervals.clear()
            self._intervals.append(stamp_ns - cand)
            if stamp_ns < last:
                self.resets += 1
                return self._accept(
                    stamp_ns,
                    f"time jumped back {-jump_s:.1f} s (confirmed by 2 frames): source restarted, state reset",
                    restarted=True,
                )
            return self._accept(stamp_ns, f"time jumped ahead {jump_s:.1f} s (confirmed by 2 frames)")
        self._candidate_ns = stamp_ns
        return StampVerdict(
            SkipReason.STAMP_JUMP,
            f"stamp {stamp_ns} ns is {(stamp_ns - last) / 1e9:+.3f} s from the last accepted stamp "
            f"{last} ns (more than {jump_ns / 1e9:g} s): skipped until a second frame confirms it",
        )

    def _accept(self, stamp_ns: int, detail: str, restarted: bool = False) -> StampVerdict:
        if self.last_ns is not None and not detail and stamp_ns > self.last_ns:
            self._intervals.append(stamp_ns - self.last_ns)
        self.last_ns = stamp_ns
        self._candidate_ns = None
        return StampVerdict(None, detail, restarted)

    def reset(self) -> None:
        """Forget the last stamp (and a pending jump candidate and the stream's period)."""
        self.last_ns = None
        self._candidate_ns = None
        self._intervals.clear()
