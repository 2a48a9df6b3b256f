"""``sam3d_node``: the lifecycle node.

configure: parameters -> frozen config, backend, publishers, ~/reset, diagnostics, the
camera -> planning-frame transform source (tf2 when importable, see :mod:`sam3d_ros.ros.tf`).
activate: subscriptions (sensor-data QoS) and the synchroniser; frames go to a background
worker where the latest frame wins. deactivate/cleanup undo those steps.

The frame path itself (synchronisation, CameraInfo pairing by stamp, stamp checks, decode,
camera pose, pipeline, counters) is :class:`~sam3d_ros.stream.frames.FrameStream`, the same
routine the offline replay runs; callbacks here convert ROS time, delegate and publish.

Run here with ``python -m sam3d_ros.ros.node --ros-args --params-file config/default.yaml``
(autostarts to active; ``--no-autostart`` leaves it unconfigured for a lifecycle manager).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core.backend import Backend, BackendError
from sam3d_ros.core.config import PARAMETERS_BY_NAME, ConfigError, NodeConfig, PipelineConfig, validate_value
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.stats import RuntimeStats
from sam3d_ros.core.types import SkipReason
from sam3d_ros.core.worker import LatestWinsWorker
from sam3d_ros.msg import ObjectReconstructionArray
from sam3d_ros.ros import builders
from sam3d_ros.ros.moveit import PlanningSceneSync
from sam3d_ros.ros.params import declare_parameters, load_config, parameter_values
from sam3d_ros.ros.tf import PlanningFrameSource
from sam3d_ros.stream.frames import CAMERA_INFO_WAIT_S, FrameSet, FrameStream, ProcessedFrame
from sam3d_ros.stream.sync import message_filters_source

logger = logging.getLogger(__name__)

#: Minimum seconds between two log lines for the same skip reason.
SKIP_LOG_PERIOD_S = 5.0


def input_qos(cfg: NodeConfig) -> QoSProfile:
    """QoS of the input subscriptions: ``input_reliability``, volatile, the last
    ``sync_queue_size`` messages (at least 5, as sensor-data QoS)."""
    reliability = (
        ReliabilityPolicy.RELIABLE if cfg.input_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    )
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(5, cfg.sync_queue_size),
        reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )


#: Seconds between two checks for frames whose CameraInfo wait ran out.
CAMERA_INFO_EXPIRY_PERIOD_S = CAMERA_INFO_WAIT_S / 5.0


def _monotonic_ns() -> int:
    return time.monotonic_ns()


class Sam3dNode(LifecycleNode):
    """RGB-D + instance masks -> per-object meshes, poses and collision shapes."""

    def __init__(
        self,
        node_name: str = "sam3d_node",
        *,
        context: Context | None = None,
        parameter_overrides: Sequence[Parameter] | None = None,
        backend_factory: Callable[[PipelineConfig], Backend] | None = None,
        cli_args: list[str] | None = None,
    ) -> None:
        super().__init__(
            node_name,
            context=context,
            parameter_overrides=list(parameter_overrides or []),
            cli_args=cli_args,
        )
        declare_parameters(self)
        self._backend_factory = backend_factory or create_backend
        self._config: NodeConfig | None = None
        self._backend: Backend | None = None
        self._pipeline: FramePipeline | None = None
        self._stream: FrameStream | None = None
        self._worker: LatestWinsWorker[FrameSet] | None = None
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._reset_srv: Any = None
        self._diag_timer: Any = None
        self._expiry_timer: Any = None
        self._state_lock = threading.Lock()
        self._active = False
        self._published_ids: set[int] = set()
        self._moveit: PlanningSceneSync | None = None
        self._planning_frames: PlanningFrameSource | None = None
        self._last_frame_id = ""
        self._skip_log_times: dict[str, float] = {}
        self._start_time = time.monotonic()
        self._idle_stats = RuntimeStats()  # before the first configure
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def stats(self) -> RuntimeStats:
        """The frame counters of the current configuration (see :class:`FrameStream`)."""
        stream = self._stream
        return stream.stats if stream is not None else self._idle_stats

    @property
    def stream(self) -> FrameStream | None:
        """The frame path (None while unconfigured)."""
        return self._stream

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            config = load_config(self)
        except ConfigError as err:
            self.get_logger().error(f"configure failed: invalid parameters: {err}")
            return TransitionCallbackReturn.FAILURE
        try:
            backend = self._backend_factory(config.pipeline)
        except BackendError as err:
            self.get_logger().error(f"configure failed: backend {config.pipeline.backend!r}: {err}")
            return TransitionCallbackReturn.FAILURE
        self._config = config
        self._backend = backend
        self._pipeline = FramePipeline(config.pipeline, backend)
        self._planning_frames = PlanningFrameSource(self, config)
        self._stream = FrameStream(
            config,
            self._pipeline,
            (config.rgb_topic, config.depth_topic, config.mask_topic),
            self._deliver,
            pose_lookup=self._planning_frames.fixed_T_camera,
            on_skip=self._log_skip,
            on_restart=self._on_source_restart,
            clock_ns=lambda: self.get_clock().now().nanoseconds,
            receive_clock_ns=_monotonic_ns,
        )
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            "objects": self.create_publisher(ObjectReconstructionArray, "~/objects", reliable),
            "markers": self.create_publisher(MarkerArray, "~/markers", reliable),
            "poses": self.create_publisher(PoseArray, "~/poses", reliable),
            "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", reliable),
        }
        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset)
        if config.moveit_enabled:
            self._moveit = PlanningSceneSync(self, config)
        self._diag_timer = self.create_timer(config.diagnostics_period, self.publish_diagnostics)
        self.get_logger().info(f"configured: backend {backend.describe()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg, stream = self._require_config(), self._require_stream()
        self._worker = LatestWinsWorker(
            self._process_frame,
            self._on_frame_dropped,
            name="sam3d-reconstruct",
            on_cancelled=self._on_frame_cancelled,
        )
        self._subscribe_images(cfg, stream)
        self._subs.append(
            self.create_subscription(
                CameraInfo,
                cfg.info_topic,
                lambda msg: stream.add_camera_info(msg, _monotonic_ns()),
                input_qos(cfg),
            )
        )
        self._expiry_timer = self.create_timer(
            CAMERA_INFO_EXPIRY_PERIOD_S, lambda: stream.expire(_monotonic_ns())
        )
        self._active = True
        self.get_logger().info(
            f"active: {cfg.rgb_topic}, {cfg.depth_topic}, {cfg.mask_topic} (slop {cfg.sync_slop} s), "
            f"camera info {cfg.info_topic} (paired by stamp), {cfg.input_reliability}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._expiry_timer is not None:
            self.destroy_timer(self._expiry_timer)
            self._expiry_timer = None
        stream = self._stream
        if stream is not None:  # what the synchroniser still queues is unmatched now
            stream.detach_sync()
            stream.drop_waiting(SkipReason.NOT_ACTIVE, "waiting for its CameraInfo at deactivation")
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.on_deactivate(state)
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}; cleaning up")
        self.on_deactivate(state)
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stop the reconstruction worker (after its running frame) before the node's
        handles go away, so it never publishes through a destroyed publisher."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        super().destroy_node()

    def _teardown(self) -> None:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._reset_srv is not None:
            self.destroy_service(self._reset_srv)
            self._reset_srv = None
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._pubs = {}
        if self._moveit is not None:
            self._moveit.close()
            self._moveit = None
        if self._planning_frames is not None:
            self._planning_frames.close()
            self._planning_frames = None
        if self._pipeline is not None:
            self._pipeline.close()
        if self._backend is not None:
            self._backend.close()
        if self._stream is not None:  # the counters of the last configuration stay readable
            self._idle_stats = self._stream.stats
        self._stream = None
        self._backend = None
        self._pipeline = None
        self._config = None

    # ------------------------------------------------------------------ inputs (executor thread)
    def _subscribe_images(self, cfg: NodeConfig, stream: FrameStream) -> None:
        """message_filters when importable, else the stream's own synchroniser with the same
        semantics; either way the stream counts every message (received, unmatched)."""
        topics = (cfg.rgb_topic, cfg.depth_topic, cfg.mask_topic)
        qos = input_qos(cfg)
        try:
            import message_filters  # type: ignore[import-not-found]
        except ImportError:
            stream.use_own_sync()
            for i, topic in enumerate(topics):
                self._subs.append(
                    self.create_subscription(
                        Image, topic, lambda msg, i=i: stream.add_image(msg, i, _monotonic_ns()), qos
                    )
                )
            return
        mf_subs = [message_filters.Subscriber(self, Image, t, qos_profile=qos) for t in topics]
        for i, mf_sub in enumerate(mf_subs):  # counted before the synchroniser sees it
            mf_sub.registerCallback(lambda _msg, i=i: stream.image_received(i))
        mf_sync = message_filters.ApproximateTimeSynchronizer(mf_subs, cfg.sync_queue_size, cfg.sync_slop)
        mf_sync.registerCallback(lambda rgb, depth, mask: stream.on_synced(rgb, depth, mask, _monotonic_ns()))
        stream.use_external_sync(message_filters_source(mf_sync))
        self._subs.extend(s.sub for s in mf_subs)
        self.get_logger().info("synchronising with message_filters.ApproximateTimeSynchronizer")

    def _deliver(self, frame_set: FrameSet) -> None:
        """An admitted set (stamp checked, CameraInfo paired): to the worker, never blocks."""
        worker = self._worker
        if not self._active or worker is None:  # a set completed while deactivating
            self._require_stream().skip(
                SkipReason.NOT_ACTIVE,
                f"frame {frame_set.stamp_ns} arrived while not active",
                frame_set.stamp_ns,
            )
            return
        worker.submit(frame_set)

    def _on_source_restart(self) -> None:
        """The input's time went back (a bag loop, a driver restart): the stream resets the
        tracks; markers, planning-scene objects and buffered transforms go too."""
        self._clear_published()
        if self._planning_frames is not None:
            self._planning_frames.clear()

    def _on_frame_dropped(self, frame_set: FrameSet) -> None:
        self._require_stream().skip(
            SkipReason.SUPERSEDED,
            f"frame {frame_set.stamp_ns} replaced by a newer one before processing",
            frame_set.stamp_ns,
        )

    def _on_frame_cancelled(self, frame_set: FrameSet) -> None:
        stream = self._stream
        detail = f"frame {frame_set.stamp_ns} was pending when the node was deactivated"
        if stream is not None:
            stream.skip(SkipReason.NOT_ACTIVE, detail, frame_set.stamp_ns)
        else:
            self._idle_stats.frame_skipped(SkipReason.NOT_ACTIVE.value, detail)

    def _log_skip(self, reason: SkipReason, detail: str, stamp_ns: int) -> None:
        """A skipped frame (already counted): a warning, at most one per reason per period."""
        now = time.monotonic()
        last = self._skip_log_times.get(reason.value)
        if reason is not SkipReason.SUPERSEDED and (last is None or now - last >= SKIP_LOG_PERIOD_S):
            self._skip_log_times[reason.value] = now
            self.get_logger().warning(f"frame skipped ({reason.value}): {detail}")

    # ------------------------------------------------------------------ worker thread
    def _process_frame(self, frame_set: FrameSet) -> None:
        """Worker thread: the stream processes the frame (decode, camera pose in the planning
        frame, which may wait up to ``tf_timeout``, pipeline, counters); then publish."""
        stream = self._stream
        if stream is None or not self._active:
            target = stream.stats if stream is not None else self._idle_stats
            target.frame_skipped(
                SkipReason.NOT_ACTIVE.value, f"frame {frame_set.stamp_ns} dequeued while not active"
            )
            return
        out = stream.process(frame_set, publishable=self.context.ok)
        if out is None:
            return
        for skipped in out.update.result.skipped:
            self.get_logger().debug(
                f"object {skipped.instance_id} skipped ({skipped.reason.value}): {skipped.detail}"
            )
        self._publish(out)
        moveit = self._moveit
        if moveit is not None:
            try:
                moveit.update(out.update, out.config.pipeline.collision_kinds())
            except Exception as err:  # the frame's outputs are out; the error is reported
                logger.exception("planning-scene update failed")
                self.get_logger().error(f"planning-scene update failed: {type(err).__name__}: {err}")

    def _publish(self, out: ProcessedFrame) -> None:
        result, cfg = out.update.result, out.config
        with self._state_lock:
            pubs = dict(self._pubs)
            previous = set(self._published_ids)
            self._published_ids = {o.track_id for o in result.objects}
            self._last_frame_id = result.frame_id
        if not pubs:
            return
        msgs = builders.frame_output_msgs(result, previous, cfg.marker_alpha, markers=cfg.publish_markers)
        pubs["objects"].publish(msgs.objects)
        pubs["poses"].publish(msgs.poses)
        if msgs.markers is not None:
            pubs["markers"].publish(msgs.markers)

    # ------------------------------------------------------------------ services, diagnostics
    def reset_state(self) -> None:
        """Forget tracks, stamps and queued inputs; RViz markers and planning-scene objects
        are deleted."""
        if self._stream is not None:
            self._stream.reset()
        self._clear_published()

    def _clear_published(self) -> None:
        if self._moveit is not None:
            self._moveit.remove_all(self.get_clock().now().nanoseconds)
        with self._state_lock:
            self._published_ids = set()
            frame_id = self._last_frame_id
        pub = self._pubs.get("markers")
        if pub is not None:
            pub.publish(builders.delete_all_markers(self.get_clock().now().nanoseconds, frame_id))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.reset_state()
        response.success = True
        response.message = "tracks, stamps and markers reset"
        self.get_logger().info("reset requested: " + response.message)
        return response

    def publish_diagnostics(self) -> None:
        pub = self._pubs.get("diagnostics")
        if pub is None:
            return
        pub.publish(self.diagnostics_message())

    def diagnostics_message(self) -> DiagnosticArray:
        """The /diagnostics message of the current state (published periodically)."""
        state = "active" if self._active else "inactive"
        backend = self._backend.describe() if self._backend is not None else "none"
        stream = self._stream
        return builders.diagnostics_msg(
            self.get_clock().now().nanoseconds,
            self.get_name(),
            backend,
            self.stats.snapshot(),
            state,
            time.monotonic() - self._start_time,
            inputs=stream.inputs.snapshot() if stream is not None else {},
            frames_synced=stream.inputs.frames_synced if stream is not None else 0,
            frames_waiting=stream.waiting if stream is not None else 0,
        )

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate changes against the specs; applied values take effect on the next frame
        (read-only parameters are refused by rclpy before this). ``NodeConfig.replace``
        routes each change to the node's part or the pipeline's; the stream (and through it
        the pipeline) gets the new config."""
        try:
            changes = {}
            for p in params:
                spec = PARAMETERS_BY_NAME.get(p.name)
                if spec is not None:
                    changes[p.name] = validate_value(spec, p.value)
            if self._config is not None and changes:
                new_config = self._config.replace(**changes)
                if self._stream is not None:
                    self._stream.apply_config(new_config)
                if "diagnostics_period" in changes and self._diag_timer is not None:
                    self.destroy_timer(self._diag_timer)
                    self._diag_timer = self.create_timer(
                        new_config.diagnostics_period, self.publish_diagnostics
                    )
                self._config = new_config
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _require_config(self) -> NodeConfig:
        if self._config is None:
            raise RuntimeError("node is not configured")
        return self._config

    def _require_stream(self) -> FrameStream:
        if self._stream is None:
            raise RuntimeError("node is not configured")
        return self._stream

    # ------------------------------------------------------------------ helpers for tests/tools
    def wait_idle(self, timeout: float) -> bool:
        """Wait until no frame waits for its CameraInfo and the worker has nothing pending
        or running (tests and tools)."""
        deadline = time.monotonic() + timeout
        stream = self._stream
        while stream is not None and stream.waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        worker = self._worker
        left = max(0.0, deadline - time.monotonic())
        idle = worker.wait_idle(left) if worker is not None else True
        return idle and (stream is None or stream.waiting == 0)

    def current_parameters(self) -> dict[str, Any]:
        return parameter_values(self)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m sam3d_ros.ros.node`` and ``ros2 run sam3d_ros sam3d_node``."""
    args = list(sys.argv if argv is None else argv)
    ros_args = rclpy.utilities.remove_ros_args(args)
    parser = argparse.ArgumentParser(prog="sam3d_node", description=__doc__)
    parser.add_argument(
        "--autostart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="configure and activate at start (default: yes)",
    )
    opts = parser.parse_args(ros_args[1:])
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    # rclpy's own SIGINT handler would invalidate the context at once, while the worker may
    # still publish the frame in flight: handle SIGINT/SIGTERM here and shut down in order
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = Sam3dNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if opts.autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed")
                return 1
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        node.get_logger().info("shutting down: stopping intake, finishing the frame in flight")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C no longer interrupts this
            signal.signal(sig, signal.SIG_IGN)
        executor.shutdown(timeout_sec=5.0)
        # 1. no new input; the frame in flight is finished and published (a pending one is
        #    counted as not_active); 2. the node's handles; 3. the context
        node.on_deactivate(LifecycleState(state_id=0, label="shutdown"))
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM: leave ``executor.spin()`` in the main thread (see :func:`main`)."""
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
