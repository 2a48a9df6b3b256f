"""Latest-frame-wins worker and runtime statistics."""

from __future__ import annotations

import threading

from sam3d_ros.core.stats import RuntimeStats
from sam3d_ros.core.worker import LatestWinsWorker


def test_latest_wins_and_drops_are_reported() -> None:
    gate = threading.Event()
    started = threading.Event()
    processed: list[int] = []
    dropped: list[int] = []

    def process(item: int) -> None:
        started.set()
        gate.wait(5.0)
        processed.append(item)

    worker = LatestWinsWorker(process, dropped.append)
    worker.submit(0)
    assert started.wait(5.0)
    for i in range(1, 6):  # 0 is running; 1..4 get replaced, 5 wins
        worker.submit(i)
    gate.set()
    assert worker.wait_idle(5.0)
    worker.stop()
    assert processed == [0, 5]
    assert dropped == [1, 2, 3, 4]


def test_worker_survives_exceptions() -> None:
    done: list[int] = []

    def process(item: int) -> None:
        if item == 1:
            raise RuntimeError("boom")
        done.append(item)

    worker = LatestWinsWorker(process, lambda _: None)
    worker.submit(1)
    assert worker.wait_idle(5.0)
    worker.submit(2)
    assert worker.wait_idle(5.0)
    worker.stop()
    assert done == [2]


def test_submit_after_stop_is_reported_as_dropped() -> None:
    dropped: list[int] = []
    worker = LatestWinsWorker(lambda _: None, dropped.append)
    worker.stop()
    worker.submit(7)
    assert dropped == [7]


def test_items_cancelled_by_stop_are_not_reported_as_dropped() -> None:
    gate = threading.Event()
    started = threading.Event()
    dropped: list[int] = []
    cancelled: list[int] = []

    def process(item: int) -> None:
        started.set()
        gate.wait(5.0)

    worker = LatestWinsWorker(process, dropped.append, on_cancelled=cancelled.append)
    worker.submit(0)
    assert started.wait(5.0)
    worker.submit(1)  # pending while 0 runs: cancelled by stop, not replaced by a newer item
    threading.Timer(0.2, gate.set).start()
    worker.stop()
    worker.submit(2)  # after stop
    assert dropped == [] and cancelled == [1, 2]


def test_stats_counts_and_medians() -> None:
    stats = RuntimeStats(window=3)
    for i in range(4):
        stats.frame_in()
        stats.frame_out({"total": float(i)}, 2, ["too_few_mask_pixels"])
    stats.frame_skipped("bad_data_length", "data length 3 != 12")
    snap = stats.snapshot()
    assert snap.frames_in == 4 and snap.frames_out == 4 and snap.objects_out == 8
    assert snap.latency_ms["total"] == 2.0  # median of the last 3: 1, 2, 3
    assert snap.objects_skipped == {"too_few_mask_pixels": 4}
    assert snap.frames_skipped == {"bad_data_length": 1}
    assert snap.last_skip == ("bad_data_length", "data length 3 != 12")
    stats.reset()
    assert stats.snapshot().frames_in == 0
