"""The approximate-time synchroniser, with fake messages (no ROS needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from sam3d_ros.stream.sync import (
    ApproximateTimeSync,
    InputAccounting,
    StampGate,
    SyncError,
    TopicCounts,
    message_filters_source,
    own_sync_source,
)


@dataclass
class _Stamp:
    sec: int
    nanosec: int


@dataclass
class _Header:
    stamp: _Stamp
    frame_id: str = "cam"


@dataclass
class FakeMsg:
    header: _Header
    tag: str = field(default="")


def msg(t: float, tag: str = "") -> FakeMsg:
    ns = round(t * 1e9)
    return FakeMsg(_Header(_Stamp(ns // 1_000_000_000, ns % 1_000_000_000)), tag)


def make(
    n: int = 3, queue: int = 10, slop: float = 0.01
) -> tuple[ApproximateTimeSync, list[tuple[Any, ...]]]:
    out: list[tuple[Any, ...]] = []
    return ApproximateTimeSync(n, queue, slop, lambda *m: out.append(m)), out


def stamps(sets: list[tuple[Any, ...]]) -> list[list[float]]:
    return [[m.header.stamp.sec + m.header.stamp.nanosec / 1e9 for m in s] for s in sets]


def test_exact_stamps_emit_once_in_input_order() -> None:
    sync, out = make()
    sync.add(msg(1.0, "rgb"), 0)
    sync.add(msg(1.0, "depth"), 1)
    assert out == []
    sync.add(msg(1.0, "mask"), 2)
    assert len(out) == 1
    assert [m.tag for m in out[0]] == ["rgb", "depth", "mask"]
    assert sync.pending() == [0, 0, 0]


def test_within_slop_matches_and_outside_does_not() -> None:
    sync, out = make(slop=0.01)
    sync.add(msg(1.000), 0)
    sync.add(msg(1.004), 1)
    sync.add(msg(1.009), 2)
    assert len(out) == 1
    sync.add(msg(2.000), 0)
    sync.add(msg(2.020), 1)
    sync.add(msg(2.005), 2)
    assert len(out) == 1  # spread 20 ms > slop


def test_closest_candidate_is_chosen() -> None:
    sync, out = make(n=2, slop=0.05)
    sync.add(msg(1.00, "a"), 0)
    sync.add(msg(1.03, "b"), 0)
    sync.add(msg(1.029, "x"), 1)
    assert [m.tag for m in out[0]] == ["b", "x"]
    assert sync.pending() == [1, 0]


def test_interleaved_arrival_order() -> None:
    sync, out = make()
    for t in (1.0, 2.0, 3.0):
        sync.add(msg(t), 2)
    for t in (3.0, 1.0, 2.0):
        sync.add(msg(t), 0)
    for t in (2.0, 3.0, 1.0):
        sync.add(msg(t), 1)
    assert sorted(s[0] for s in stamps(out)) == [1.0, 2.0, 3.0]
    for s in stamps(out):
        assert len(set(s)) == 1


def test_queue_overflow_is_counted() -> None:
    sync, out = make(n=2, queue=3)
    for t in range(10):
        sync.add(msg(float(t)), 0)
    assert sync.pending() == [3, 0]
    assert sync.dropped_unmatched == [7, 0]
    sync.add(msg(9.0), 1)
    assert len(out) == 1


def test_duplicate_stamp_replaces_and_is_counted() -> None:
    sync, out = make(n=2)
    sync.add(msg(1.0, "first"), 0)
    sync.add(msg(1.0, "second"), 0)
    assert sync.duplicates == [1, 0]
    sync.add(msg(1.0), 1)
    assert out[0][0].tag == "second"


def test_clear_counts_pending() -> None:
    sync, _ = make(n=2)
    sync.add(msg(1.0), 0)
    sync.add(msg(5.0), 1)
    sync.clear()
    assert sync.pending() == [0, 0]
    assert sync.dropped_unmatched == [1, 1]


def test_zero_slop_needs_identical_stamps() -> None:
    sync, out = make(n=2, slop=0.0)
    sync.add(msg(1.0), 0)
    sync.add(msg(1.000000001), 1)
    assert out == []
    sync.add(msg(1.0), 1)
    assert len(out) == 1


@pytest.mark.parametrize(("n", "q", "s"), [(0, 1, 0.1), (2, 0, 0.1), (2, 1, -1.0), (2, 1, float("nan"))])
def test_invalid_arguments(n: int, q: int, s: float) -> None:
    with pytest.raises(SyncError):
        ApproximateTimeSync(n, q, s, lambda *m: None)


# --- stamp gate ----------------------------------------------------------------------------
S = 1_000_000_000  # ns per second
T = 1_700_000_000 * S


def _feed(gate: StampGate, stamps: list[int], now_ns: int | None = None) -> list[str]:
    """The verdict of each stamp: 'ok', 'restart' or the skip reason."""
    out = []
    for s in stamps:
        v = gate.check(s, now_ns)
        out.append(v.reason.value if v.reason is not None else ("restart" if v.restarted else "ok"))
    return out


def test_gate_one_frame_far_ahead_is_skipped_and_does_not_block_the_stream() -> None:
    gate = StampGate(jump_threshold_s=2.0)
    dt = 33_000_000
    verdicts = _feed(gate, [T, T + dt, T + 4 * S, T + 2 * dt, T + 3 * dt])
    assert verdicts == ["ok", "ok", "stamp_jump", "ok", "ok"]
    assert gate.last_ns == T + 3 * dt and gate.resets == 0


def test_gate_zero_stamp_is_skipped_not_a_restart() -> None:
    gate = StampGate()
    assert _feed(gate, [T, 0, 0, T + 1]) == ["ok", "invalid_stamp", "invalid_stamp", "ok"]
    assert gate.resets == 0 and gate.last_ns == T + 1


def test_gate_stamp_ahead_of_the_clock_is_skipped() -> None:
    gate = StampGate(max_ahead_s=1.0)
    now = T + 10 * S
    assert _feed(gate, [T, T + 12 * S, T + 1], now_ns=now) == ["ok", "future_stamp", "ok"]
    assert _feed(StampGate(max_ahead_s=1.0), [now + 4 * S], now_ns=now) == ["future_stamp"]
    # no clock yet (sim time before /clock): not checked; 0 disables the check
    assert _feed(StampGate(max_ahead_s=1.0), [now + 4 * S], now_ns=0) == ["ok"]
    assert _feed(StampGate(max_ahead_s=0.0), [now + 4 * S], now_ns=now) == ["ok"]


def test_gate_restart_is_recognised_by_a_second_frame() -> None:
    gate = StampGate(jump_threshold_s=2.0)
    verdicts = _feed(gate, [T + 60 * S, T + 60 * S + 1, T, T + 33_000_000, T + 66_000_000])
    assert verdicts == ["ok", "ok", "stamp_jump", "restart", "ok"]
    assert gate.resets == 1
    # a forward gap (the source paused) is confirmed the same way, without a restart
    gate = StampGate(jump_threshold_s=2.0)
    assert _feed(gate, [T, T + 10 * S, T + 10 * S + 1]) == ["ok", "stamp_jump", "ok"]
    assert gate.resets == 0


def test_gate_slow_triggered_stream_is_not_starved() -> None:
    # a camera triggered every 5 s (longer than the 2 s jump threshold): only the first
    # interval is unconfirmed; then the gate knows the stream's period
    gate = StampGate(jump_threshold_s=2.0)
    stamps = [T + 5 * S * i for i in range(8)]
    assert _feed(gate, stamps) == ["ok", "stamp_jump"] + ["ok"] * 6
    # an outlier far ahead of that slow stream is still skipped and does not move the gate
    assert _feed(gate, [T + 400 * S, T + 40 * S]) == ["stamp_jump", "ok"]
    assert gate.last_ns == T + 40 * S and gate.resets == 0


def test_gate_duplicate_and_stale() -> None:
    gate = StampGate()
    assert _feed(gate, [T, T, T - 1]) == ["ok", "duplicate_stamp", "stale_stamp"]
    gate.reset()
    assert _feed(gate, [T - 1]) == ["ok"]


# --- input accounting ------------------------------------------------------------------------
class _FakeMessageFilters:
    """What message_filters.ApproximateTimeSynchronizer exposes: one stamp-keyed dict per input."""

    def __init__(self) -> None:
        self.queues: list[dict[int, Any]] = [{}, {}, {}]


def test_accounting_of_our_synchroniser() -> None:
    acc = InputAccounting(("rgb", "depth", "mask"))
    sync = ApproximateTimeSync(3, 2, 0.01, lambda *m: acc.synced())
    acc.attach(own_sync_source(sync))
    for t in (1.0, 2.0, 3.0):  # rgb only, into a queue of 2
        acc.received(0)
        sync.add(msg(t), 0)
    for i in (0, 1, 2):
        acc.received(i)
        sync.add(msg(4.0), i)
    snap = acc.snapshot()
    assert acc.frames_synced == 1
    assert snap["rgb"] == TopicCounts(received=4, unmatched=2, queued=1)  # 1.0 and 2.0 aged out
    assert snap["mask"] == TopicCounts(received=1, unmatched=0, queued=0)
    acc.detach()  # the synchroniser is dropped: what it queued is unmatched
    assert acc.snapshot()["rgb"] == TopicCounts(received=4, unmatched=3, queued=0)


def test_accounting_of_message_filters() -> None:
    acc = InputAccounting(("rgb", "depth", "mask"))
    fake = _FakeMessageFilters()
    acc.attach(message_filters_source(fake))
    for i in (0, 0, 0, 1, 2):  # 3 rgb, 1 depth, 1 mask received ...
        acc.received(i)
    acc.synced()  # ... one set emitted, one rgb still queued, so one rgb went unmatched
    fake.queues[0][5] = object()
    snap = acc.snapshot()
    assert snap["rgb"] == TopicCounts(received=3, unmatched=1, queued=1)
    assert snap["depth"] == TopicCounts(received=1, unmatched=0, queued=0)
    for c in snap.values():
        assert c.received == acc.frames_synced + c.unmatched + c.queued
