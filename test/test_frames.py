"""The rclpy-free frame path (:class:`FrameStream`) with fake messages: CameraInfo pairing
by stamp, the bounded wait, the fallback to the latest CameraInfo, order, accounting."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.config import default_node_config
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.types import SkipReason
from sam3d_ros.stream.frames import CAMERA_INFO_WAIT_S, FrameSet, FrameStream, StreamError

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
WAIT_NS = round(CAMERA_INFO_WAIT_S * 1e9)


def _msg(stamp_ns: int, kind: str) -> Any:
    stamp = SimpleNamespace(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp, frame_id="cam"), kind=kind)


class Recorder:
    """A stream whose admitted sets are collected instead of processed."""

    def __init__(self, **overrides: Any) -> None:
        cfg = default_node_config().replace(backend="geometric", **overrides)
        self.delivered: list[FrameSet] = []
        self.skipped: list[tuple[SkipReason, int]] = []
        self.restarts = 0
        self.stream = FrameStream(
            cfg,
            FramePipeline(cfg.pipeline, create_backend(cfg.pipeline)),
            ("rgb", "depth", "mask"),
            self.delivered.append,
            on_skip=lambda reason, detail, stamp: self.skipped.append((reason, stamp)),
            on_restart=self._restart,
        )
        self.stream.use_own_sync()

    def _restart(self) -> None:
        self.restarts += 1

    def images(self, stamp_ns: int, now_ns: int) -> None:
        for i, kind in enumerate(("rgb", "depth", "mask")):
            self.stream.add_image(_msg(stamp_ns, kind), i, now_ns)

    def info(self, stamp_ns: int, now_ns: int) -> Any:
        msg = _msg(stamp_ns, "info")
        self.stream.add_camera_info(msg, now_ns)
        return msg

    def stamps(self) -> list[int]:
        return [f.stamp_ns for f in self.delivered]

    def accounted(self) -> bool:
        """Every synchronised set is delivered, skipped or waiting."""
        s = self.stream
        return s.inputs.frames_synced == len(self.delivered) + len(self.skipped) + s.waiting


def test_camera_info_before_the_images_pairs_at_once() -> None:
    r = Recorder()
    info = r.info(T0, T0)
    r.images(T0, T0)
    assert r.stamps() == [T0] and r.delivered[0].info is info and r.delivered[0].info_by_stamp
    assert r.accounted()


def test_camera_info_after_the_images_is_waited_for_and_paired_by_stamp() -> None:
    r = Recorder()
    r.images(T0, T0)
    assert r.delivered == [] and r.stream.waiting == 1 and r.accounted()
    info = r.info(T0, T0 + 3 * MS)
    assert r.stamps() == [T0] and r.delivered[0].info is info and r.delivered[0].info_by_stamp
    r.images(T0 + 100 * MS, T0 + 100 * MS)
    info2 = r.info(T0 + 100 * MS, T0 + 103 * MS)
    assert r.delivered[1].info is info2  # its own, not the previous frame's
    assert r.stream.waiting == 0 and r.accounted()


def test_pairing_takes_the_closest_stamp_within_the_slop() -> None:
    r = Recorder(sync_slop=0.02)
    r.info(T0 - 15 * MS, T0)
    near = r.info(T0 + 4 * MS, T0)
    r.images(T0, T0)
    assert r.delivered[0].info is near
    r.info(T0 + 60 * MS, T0)  # farther than the slop from the next set
    r.images(T0 + 100 * MS, T0 + 100 * MS)
    assert len(r.delivered) == 1  # waits: its own may still come


def test_camera_info_only_at_the_start_costs_one_bounded_wait() -> None:
    r = Recorder()
    first = r.info(T0, T0)
    r.images(T0, T0)
    r.images(T0 + 100 * MS, T0 + 100 * MS)
    assert r.stamps() == [T0] and r.stream.waiting == 1
    r.stream.expire(T0 + 100 * MS + WAIT_NS - 1)
    assert r.stream.waiting == 1
    r.stream.expire(T0 + 100 * MS + WAIT_NS)
    assert r.stamps() == [T0, T0 + 100 * MS]
    assert r.delivered[1].info is first and not r.delivered[1].info_by_stamp
    r.images(T0 + 200 * MS, T0 + 700 * MS)  # from now on the latest one at once
    assert r.stamps()[-1] == T0 + 200 * MS and r.delivered[-1].info is first
    # a CameraInfo carrying an image stamp again: pairing by stamp resumes
    r.info(T0 + 200 * MS, T0 + 701 * MS)
    r.images(T0 + 300 * MS, T0 + 800 * MS)
    assert r.stream.waiting == 1
    own = r.info(T0 + 300 * MS, T0 + 801 * MS)
    assert r.delivered[-1].info is own and r.delivered[-1].info_by_stamp
    assert r.skipped == [] and r.accounted()


def test_without_any_camera_info_a_set_is_skipped_after_the_wait() -> None:
    r = Recorder()
    r.images(T0, T0)
    r.stream.expire(T0 + WAIT_NS - 1)
    assert r.skipped == [] and r.stream.waiting == 1 and r.accounted()
    r.stream.expire(T0 + WAIT_NS)
    assert r.skipped == [(SkipReason.MISSING_CAMERA_INFO, T0)] and r.stream.waiting == 0
    snap = r.stream.stats.snapshot()
    assert snap.frames_skipped == {"missing_camera_info": 1}
    assert r.accounted()
    # the stamp was not consumed by the gate: a later CameraInfo for it still pairs
    r.info(T0 + 100 * MS, T0 + WAIT_NS)
    r.images(T0 + 100 * MS, T0 + WAIT_NS)
    assert r.stamps() == [T0 + 100 * MS]


def test_an_info_stream_past_the_set_falls_back_to_the_latest_at_once() -> None:
    r = Recorder()
    r.images(T0, T0)
    later = r.info(T0 + 100 * MS, T0 + 1 * MS)  # its own CameraInfo was lost
    assert r.stamps() == [T0] and r.delivered[0].info is later and not r.delivered[0].info_by_stamp


def test_waiting_sets_leave_in_order() -> None:
    r = Recorder()
    r.images(T0, T0)
    r.images(T0 + 100 * MS, T0 + 100 * MS)
    r.info(T0 + 100 * MS, T0 + 101 * MS)  # the second's info first: the first takes it
    assert r.stamps() == [T0, T0 + 100 * MS]
    assert not r.delivered[0].info_by_stamp and r.delivered[1].info_by_stamp
    assert r.skipped == []  # the gate saw them in order: nothing stale


def test_the_wait_is_bounded_by_the_queue_size() -> None:
    r = Recorder(sync_queue_size=3)
    for k in range(4):
        r.images(T0 + k * 100 * MS, T0 + k * 100 * MS)
    assert r.stream.waiting == 3
    assert r.skipped == [(SkipReason.MISSING_CAMERA_INFO, T0)] and r.accounted()


def test_flush_releases_every_waiting_set() -> None:
    r = Recorder()
    r.info(T0, T0)
    r.images(T0, T0)
    r.images(T0 + 100 * MS, T0 + 100 * MS)
    r.images(T0 + 200 * MS, T0 + 200 * MS)
    r.stream.flush()
    assert r.stamps() == [T0, T0 + 100 * MS, T0 + 200 * MS] and r.stream.waiting == 0


def test_drop_waiting_counts_every_set() -> None:
    r = Recorder()
    r.images(T0, T0)
    r.images(T0 + 100 * MS, T0 + 100 * MS)
    r.stream.drop_waiting(SkipReason.NOT_ACTIVE, "deactivated")
    assert [s for s, _ in r.skipped] == [SkipReason.NOT_ACTIVE] * 2 and r.accounted()


def test_stamp_gate_and_restart_run_after_pairing() -> None:
    r = Recorder()
    r.info(T0, T0)
    r.images(T0, T0)
    r.info(T0, T0)
    r.images(T0, T0 + 1)  # the same stamp again
    assert (SkipReason.DUPLICATE_STAMP, T0) in r.skipped
    back = T0 - 60 * 10**9  # a bag that loops: confirmed by a second frame
    for k in range(2):
        r.info(back + k * 100 * MS, T0 + k)
        r.images(back + k * 100 * MS, T0 + k)
    assert r.restarts == 1 and r.stamps()[-1] == back + 100 * MS and r.accounted()


def test_stream_parameters_are_read_only() -> None:
    r = Recorder()
    cfg = r.stream.config
    new = cfg.replace(marker_alpha=0.5, mesh_resolution=24)
    r.stream.apply_config(new)
    assert r.stream.config is new and r.stream.config.marker_alpha == 0.5
    assert r.stream.pipeline.config is new.pipeline and r.stream.pipeline.config.mesh_resolution == 24
    with pytest.raises(StreamError, match="sync_slop"):
        r.stream.apply_config(cfg.replace(sync_slop=0.2))
    assert r.stream.config is new
    with pytest.raises(StreamError, match="input index"):
        r.stream.image_received(3)


def test_messages_from_frame_round_trip_and_process() -> None:
    """The message stand-ins decode to the frame they came from, and the stream processes
    them (decode timed as its own stage)."""
    import numpy as np

    from sam3d_ros.sim.scenes import random_scene
    from sam3d_ros.stream.conversions import frame_from_messages, messages_from_frame

    frame = random_scene(seed=3, n_objects=3, width=160, height=120).render().to_rgbd_frame()
    rgb, depth, info, mask = messages_from_frame(frame)
    cfg = default_node_config()
    back = frame_from_messages(rgb, depth, info, mask, cfg.pipeline, max_image_pixels=cfg.max_image_pixels)
    assert np.array_equal(back.rgb, frame.rgb) and np.array_equal(back.labels, frame.labels)
    assert np.array_equal(np.isnan(back.depth), np.isnan(frame.depth))
    assert np.allclose(back.depth, frame.depth, equal_nan=True)
    assert back.camera == frame.camera and back.stamp_ns == frame.stamp_ns

    r = Recorder()
    out = r.stream.process(FrameSet(rgb, depth, mask, info, frame.stamp_ns, 0, True))
    assert out is not None and len(out.update.result.objects) >= 1
    assert out.config is r.stream.config
    snap = r.stream.stats.snapshot()
    assert snap.frames_out == 1 and "decode" in snap.latency_ms
    bad = FrameSet(
        rgb, depth, mask, SimpleNamespace(**{**vars(info), "k": [0.0] * 9}), frame.stamp_ns + 1, 0, True
    )
    assert r.stream.process(bad) is None
    assert r.stream.stats.snapshot().frames_skipped == {"invalid_camera_info": 1}
