"""The one frame path from input messages to a :class:`~sam3d_ros.core.pipeline.SceneUpdate`,
shared by the live node, the offline replay, the live check and the benchmark.

:class:`FrameStream` does, in order, for every message it is given:

1. **intake** (the node's executor thread): image messages are counted per topic
   (:class:`~sam3d_ros.stream.sync.InputAccounting`) and synchronised by approximate time
   (our :class:`~sam3d_ros.stream.sync.ApproximateTimeSync`, or an external synchroniser
   such as ``message_filters`` calling :meth:`FrameStream.on_synced`);
2. **CameraInfo pairing**: a synchronised set takes the CameraInfo whose stamp is closest to
   its own within ``sync_slop`` (drivers stamp CameraInfo like each image). A set whose
   CameraInfo has not arrived yet *waits* for it (in arrival order, at most
   :data:`CAMERA_INFO_WAIT_S` of receive time and ``sync_queue_size`` sets); it falls back
   to the latest CameraInfo only when the stream has no matching stamp: the info stream
   has moved past the set's stamp, or the wait ran out while a CameraInfo is known (a
   CameraInfo published once, at the start); from then on sets take the latest one at
   once until a CameraInfo carries an image stamp again. Without any CameraInfo when the
   wait runs out the set is skipped as ``missing_camera_info``;
3. **stamp gate** (:class:`~sam3d_ros.stream.sync.StampGate`): stale, duplicate, invalid,
   future and jumping stamps are skipped; a confirmed jump back is a source restart: the
   pipeline's tracks are reset before the next frame and the ``on_restart`` hook runs
   (the node deletes markers, MoveIt objects and buffered transforms);
4. the admitted :class:`FrameSet` goes to ``deliver`` (the node: its latest-wins worker;
   the replay: straight to :meth:`FrameStream.process`);
5. **processing** (:meth:`FrameStream.process`, the node's worker thread): decode
   (:func:`~sam3d_ros.stream.conversions.frame_from_messages`), the camera pose in the
   planning frame from the injected ``pose_lookup`` (tf2 in the node), the pipeline, and
   the counters (:class:`~sam3d_ros.core.stats.RuntimeStats`).

Every synchronised set ends as exactly one of: processed (``frames_out``), skipped under a
reason (``frames_skipped``) or, for a bounded time, waiting for its CameraInfo
(:attr:`FrameStream.waiting`). No rclpy import here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from sam3d_ros.core.config import NodeConfig
from sam3d_ros.core.pipeline import FramePipeline, SceneUpdate
from sam3d_ros.core.stats import RuntimeStats
from sam3d_ros.core.types import InputError, RGBDFrame, SkipReason
from sam3d_ros.stream.conversions import frame_from_messages, header_stamp_ns
from sam3d_ros.stream.sync import (
    ApproximateTimeSync,
    InputAccounting,
    StampGate,
    SyncSource,
    own_sync_source,
)

logger = logging.getLogger(__name__)

#: Longest a synchronised set waits for the CameraInfo of its stamp, seconds of receive
#: time (the node's monotonic clock, the replay's log time). Drivers publish CameraInfo
#: within milliseconds of the images; a stream without stamped CameraInfo pays this once.
CAMERA_INFO_WAIT_S: Final[float] = 0.5
#: Image stamps remembered to recognise a CameraInfo that carries an image's stamp.
RECENT_STAMPS: Final[int] = 64

#: The parameters the stream reads once (its synchroniser, stamp gate and counters; all of
#: :class:`~sam3d_ros.core.config.NodeConfig`).
STREAM_PARAMETERS: Final[tuple[str, ...]] = (
    "sync_slop",
    "sync_queue_size",
    "stamp_jump_threshold",
    "max_stamp_ahead",
    "stats_window",
)

#: ``(config, frame_id, stamp_ns) -> planning_T_camera`` (4x4, metres) or None for the
#: static ``camera_to_planning_transform``; raises :class:`InputError` (``tf_unavailable``).
#: ``config`` is the stream's current :class:`NodeConfig` (``tf_timeout``; ``planning_frame``
#: in its ``pipeline``).
PoseLookup = Callable[[NodeConfig, str, int], NDArray[np.float64] | None]
#: ``(reason, detail, stamp_ns)`` of a skipped frame (after it was counted).
SkipHook = Callable[[SkipReason, str, int], None]


class StreamError(ValueError):
    """Invalid use of a :class:`FrameStream` (an unknown input index)."""


@dataclass(frozen=True)
class FrameSet:
    """One synchronised set admitted by the stamp gate, with its CameraInfo.

    Attributes:
        rgb, depth, mask: the image messages (any object with the message fields).
        info: the paired ``sensor_msgs/CameraInfo``.
        stamp_ns: the colour image's header stamp (ns).
        received_ns: receive time of the set (the caller's clock, ns).
        info_by_stamp: True when ``info`` was paired by stamp, False for the latest one.
    """

    rgb: Any
    depth: Any
    mask: Any
    info: Any
    stamp_ns: int
    received_ns: int
    info_by_stamp: bool


@dataclass(frozen=True)
class ProcessedFrame:
    """The outcome of :meth:`FrameStream.process` for a processed frame.

    Attributes:
        frame: the decoded frame (camera optical frame, metres).
        update: the pipeline's update (result, tracks, vanished ids).
        config: the parameters the frame was processed with (publish with these, so that
            messages and planning scene agree even when a parameter changed meanwhile;
            the pipeline ran with ``config.pipeline``).
    """

    frame: RGBDFrame
    update: SceneUpdate
    config: NodeConfig


@dataclass
class _Waiting:
    rgb: Any
    depth: Any
    mask: Any
    stamp_ns: int
    received_ns: int


class FrameStream:
    """The rclpy-free frame path (see the module docstring); thread-safe between one intake
    thread and one processing thread.

    Args:
        config: the node's parameters (``sync_slop``, ``sync_queue_size``, stamp checks,
            ``max_image_pixels``, ...); replace with :meth:`apply_config`.
        pipeline: the pipeline frames go through (owned by the caller, built with
            ``config.pipeline``).
        topics: names of the rgb, depth and mask inputs, in that order (for the counters).
        deliver: receives every admitted :class:`FrameSet` (called on the intake thread).
        pose_lookup: the camera pose in the planning frame (None: the static transform).
        on_skip: called after a skipped frame is counted (logging, examples).
        on_restart: called on the intake thread when a source restart is confirmed.
        clock_ns: the receiver's clock for the future-stamp check (None: no check).
        receive_clock_ns: the clock the caller's ``now_ns`` receive times come from; when
            given, a processed frame's timings get ``end_to_end`` (receive to result, ms).
    """

    def __init__(
        self,
        config: NodeConfig,
        pipeline: FramePipeline,
        topics: Sequence[str],
        deliver: Callable[[FrameSet], None],
        *,
        pose_lookup: PoseLookup | None = None,
        on_skip: SkipHook | None = None,
        on_restart: Callable[[], None] | None = None,
        clock_ns: Callable[[], int | None] | None = None,
        receive_clock_ns: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.inputs = InputAccounting(topics)
        self.stats = RuntimeStats(window=config.stats_window)
        self.gate = StampGate(config.stamp_jump_threshold, config.max_stamp_ahead)
        self._deliver = deliver
        self._pose_lookup = pose_lookup
        self._on_skip = on_skip
        self._on_restart = on_restart
        self._clock_ns = clock_ns
        self._receive_clock_ns = receive_clock_ns
        self._lock = threading.RLock()
        self._sync: ApproximateTimeSync | None = None
        self._now_ns = 0
        self._infos: deque[tuple[int, Any]] = deque(maxlen=max(2, config.sync_queue_size))
        self._latest_info: Any | None = None
        self._recent_stamps: deque[int] = deque(maxlen=RECENT_STAMPS)
        self._info_by_stamp = True  # until the stream shows it has no matching stamps
        self._waiting: deque[_Waiting] = deque()
        self._reset_pending = threading.Event()

    # ------------------------------------------------------------------ configuration
    def apply_config(self, config: NodeConfig) -> None:
        """Use ``config`` from the next frame on (the pipeline gets ``config.pipeline``).
        What the stream itself reads (sync slop and queue size, stamp checks, stats window)
        is read-only at run time: a change there is refused by the node before it gets here.

        Raises:
            StreamError: ``config`` changes one of those read-only values.
        """
        with self._lock:
            frozen = [n for n in STREAM_PARAMETERS if getattr(config, n) != getattr(self.config, n)]
            if frozen:
                raise StreamError(f"{', '.join(frozen)} cannot change while the stream runs")
            self.config = config
            self.pipeline.config = config.pipeline

    def use_own_sync(self) -> None:
        """Synchronise with our :class:`ApproximateTimeSync` (:meth:`add_image` feeds it)."""
        cfg = self.config
        with self._lock:
            self._sync = ApproximateTimeSync(3, cfg.sync_queue_size, cfg.sync_slop, self._on_own_synced)
            self.inputs.attach(own_sync_source(self._sync))

    def use_external_sync(self, source: SyncSource) -> None:
        """An external synchroniser (``message_filters``) calls :meth:`on_synced`; the
        caller reports every message with :meth:`image_received`."""
        with self._lock:
            self._sync = None
            self.inputs.attach(source)

    def detach_sync(self) -> None:
        """Drop the synchroniser: what it still queues is unmatched from now on."""
        with self._lock:
            self.inputs.detach()
            self._sync = None

    # ------------------------------------------------------------------ intake
    def image_received(self, index: int) -> None:
        """Count an image message of input ``index`` (0 rgb, 1 depth, 2 mask)."""
        if not 0 <= index < len(self.inputs.topics):
            raise StreamError(f"input index {index} is not one of 0..{len(self.inputs.topics) - 1}")
        self.inputs.received(index)

    def add_image(self, msg: Any, index: int, now_ns: int) -> None:
        """An image message of input ``index`` for our synchroniser, received at ``now_ns``."""
        self.image_received(index)
        with self._lock:
            sync, self._now_ns = self._sync, now_ns
            if sync is None:
                raise StreamError("add_image needs use_own_sync() first")
            sync.add(msg, index)

    def _on_own_synced(self, rgb: Any, depth: Any, mask: Any) -> None:
        self.on_synced(rgb, depth, mask, self._now_ns)

    def on_synced(self, rgb: Any, depth: Any, mask: Any, now_ns: int) -> None:
        """A synchronised set, received at ``now_ns``: pair its CameraInfo (or wait for it),
        then the stamp gate and ``deliver``."""
        self.inputs.synced()
        stamp = header_stamp_ns(rgb)
        with self._lock:
            self._recent_stamps.append(stamp)
            self._waiting.append(_Waiting(rgb, depth, mask, stamp, now_ns))
            self._release(now_ns)

    def add_camera_info(self, msg: Any, now_ns: int) -> None:
        """A ``sensor_msgs/CameraInfo`` received at ``now_ns``."""
        stamp = header_stamp_ns(msg)
        with self._lock:
            self._infos.append((stamp, msg))
            self._latest_info = msg
            slop = self._slop_ns()
            if any(abs(s - stamp) <= slop for s in self._recent_stamps):
                self._info_by_stamp = True  # the info stream carries image stamps
            self._release(now_ns)

    def expire(self, now_ns: int) -> None:
        """Release the sets whose CameraInfo wait ran out by ``now_ns`` (the node calls
        this periodically; intake calls it too)."""
        with self._lock:
            self._release(now_ns)

    def flush(self) -> None:
        """End of the input (the end of a bag): release every waiting set now."""
        with self._lock:
            self._release(None)

    def drop_waiting(self, reason: SkipReason, detail: str) -> None:
        """Skip every set still waiting for its CameraInfo (deactivation)."""
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque()
        for w in waiting:
            self.skip(reason, f"frame {w.stamp_ns}: {detail}", w.stamp_ns)

    @property
    def latest_camera_info(self) -> Any | None:
        """The last CameraInfo received (None before the first)."""
        with self._lock:
            return self._latest_info

    @property
    def waiting(self) -> int:
        """Synchronised sets waiting for their CameraInfo."""
        with self._lock:
            return len(self._waiting)

    def _slop_ns(self) -> int:
        return round(self.config.sync_slop * 1e9)

    def _paired_info(self, stamp: int) -> Any | None:
        slop = self._slop_ns()
        # the closest stamp; of equal ones the latest received (a re-published CameraInfo)
        near = [(abs(s - stamp), -i) for i, (s, _) in enumerate(self._infos) if abs(s - stamp) <= slop]
        return self._infos[-min(near)[1]][1] if near else None

    def _release(self, now_ns: int | None) -> None:
        """Release waiting sets in arrival order (a later set never overtakes an earlier one,
        so the stamp gate sees them in order). ``now_ns`` None: the input ended."""
        wait_ns = round(CAMERA_INFO_WAIT_S * 1e9)
        slop = self._slop_ns()
        while self._waiting:
            w = self._waiting[0]
            info = self._paired_info(w.stamp_ns)
            by_stamp = info is not None
            timed_out = (
                now_ns is None
                or now_ns - w.received_ns >= wait_ns
                or len(self._waiting) > self.config.sync_queue_size
            )
            if info is None and self._latest_info is not None:
                passed = any(s > w.stamp_ns + slop for s, _ in self._infos)
                if passed or not self._info_by_stamp or timed_out:
                    info = self._latest_info
                    if timed_out and not passed:  # e.g. one CameraInfo at the start
                        self._info_by_stamp = False
            if info is None and not timed_out:
                return  # wait for its CameraInfo
            self._waiting.popleft()
            if info is None:
                self.skip(
                    SkipReason.MISSING_CAMERA_INFO,
                    f"frame {w.stamp_ns}: no CameraInfo received within {CAMERA_INFO_WAIT_S:g} s",
                    w.stamp_ns,
                )
                continue
            self._admit(w, info, by_stamp)

    def _admit(self, w: _Waiting, info: Any, by_stamp: bool) -> None:
        now = self._clock_ns() if self._clock_ns is not None else None
        verdict = self.gate.check(w.stamp_ns, now)
        if verdict.reason is not None:
            self.skip(verdict.reason, verdict.detail, w.stamp_ns)
            return
        if verdict.detail:
            logger.warning("input frame %d: %s", w.stamp_ns, verdict.detail)
        if verdict.restarted:  # the source restarted: new tracks before the next frame
            self.request_pipeline_reset()
            if self._on_restart is not None:
                self._on_restart()
        self.stats.frame_in()
        self._deliver(FrameSet(w.rgb, w.depth, w.mask, info, w.stamp_ns, w.received_ns, by_stamp))

    # ------------------------------------------------------------------ processing
    def process(
        self, frame_set: FrameSet, publishable: Callable[[], bool] | None = None
    ) -> ProcessedFrame | None:
        """Decode, camera pose, pipeline, counters (the node's worker thread).

        Returns None for a skipped frame (counted under its reason). ``publishable`` is asked
        after the pipeline: False counts the frame as ``not_active`` (the node shut down
        under it). A processed frame is counted before it is returned, so whoever sees its
        outputs also sees the counters.
        """
        cfg, pipeline = self.config, self.pipeline
        if self._reset_pending.is_set():
            self._reset_pending.clear()
            pipeline.reset()
        stamp = frame_set.stamp_ns
        try:
            t0 = time.perf_counter()
            frame = frame_from_messages(
                frame_set.rgb,
                frame_set.depth,
                frame_set.info,
                frame_set.mask,
                cfg.pipeline,
                max_image_pixels=cfg.max_image_pixels,
            )
            decode_ms = (time.perf_counter() - t0) * 1000.0
            fixed_T_camera = (
                self._pose_lookup(cfg, frame.frame_id, frame.stamp_ns) if self._pose_lookup else None
            )
            update = pipeline.process_scene(frame, fixed_T_camera)
        except InputError as err:
            self.skip(err.reason, err.detail, stamp)
            return None
        except Exception as err:
            logger.exception("internal error while processing frame %d", stamp)
            self.skip(SkipReason.INTERNAL_ERROR, f"{type(err).__name__}: {err}", stamp)
            return None
        result = update.result
        if publishable is not None and not publishable():
            self.skip(SkipReason.NOT_ACTIVE, f"frame {stamp}: shut down before publishing", stamp)
            return None
        timings = {"decode": decode_ms, **result.timings_ms}
        if self._receive_clock_ns is not None:
            timings["end_to_end"] = (self._receive_clock_ns() - frame_set.received_ns) / 1e6
        self.stats.frame_out(timings, len(result.objects), [s.reason.value for s in result.skipped])
        return ProcessedFrame(frame, update, cfg)

    def skip(self, reason: SkipReason, detail: str, stamp_ns: int) -> None:
        """Count a skipped frame under ``reason`` (and tell ``on_skip``)."""
        self.stats.frame_skipped(reason.value, detail)
        if self._on_skip is not None:
            self._on_skip(reason, detail, stamp_ns)

    # ------------------------------------------------------------------ state
    def request_pipeline_reset(self) -> None:
        """Forget the pipeline's tracks before the next frame is processed (thread-safe)."""
        self._reset_pending.set()

    def reset(self) -> None:
        """``~/reset``: forget stamps, queued images and the pipeline's tracks (waiting sets
        stay; they are released as usual)."""
        with self._lock:
            self.gate.reset()
            if self._sync is not None:
                self._sync.clear()
        self.request_pipeline_reset()
