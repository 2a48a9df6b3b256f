"""``sam3d_node``: the lifecycle node.

configure: parameters -> frozen config, backend, publishers, ~/reset, diagnostics, the
camera -> planning-frame transform source (tf2 when importable, see :mod:`sam3d_ros.ros.tf`).
activate: subscriptions (sensor-data QoS) and the synchroniser; frames go to a background
worker where the latest frame wins. deactivate/cleanup undo those steps.

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
from dataclasses import dataclass
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
from sam3d_ros.core.config import PARAMETERS_BY_NAME, ConfigError, PipelineConfig, validate_value
from sam3d_ros.core.pipeline import FramePipeline
from sam3d_ros.core.stats import RuntimeStats
from sam3d_ros.core.types import FrameResult, InputError, SkipReason
from sam3d_ros.core.worker import LatestWinsWorker
from sam3d_ros.msg import ObjectReconstructionArray
from sam3d_ros.ros import builders
from sam3d_ros.ros.moveit import PlanningSceneSync
from sam3d_ros.ros.params import declare_parameters, load_config, parameter_values
from sam3d_ros.ros.tf import PlanningFrameSource
from sam3d_ros.stream.conversions import frame_from_messages, header_stamp_ns
from sam3d_ros.stream.sync import (
    ApproximateTimeSync,
    InputAccounting,
    StampGate,
    message_filters_source,
    own_sync_source,
)

logger = logging.getLogger(__name__)

#: Minimum seconds between two log lines for the same skip reason.
SKIP_LOG_PERIOD_S = 5.0


def input_qos(cfg: PipelineConfig) -> QoSProfile:
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


@dataclass(frozen=True)
class _FrameJob:
    rgb: Any
    depth: Any
    mask: Any
    info: Any | None
    received: float


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
        self._config: PipelineConfig | None = None
        self._backend: Backend | None = None
        self._pipeline: FramePipeline | None = None
        self._worker: LatestWinsWorker[_FrameJob] | None = None
        self._sync: ApproximateTimeSync | None = None
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._reset_srv: Any = None
        self._diag_timer: Any = None
        self._state_lock = threading.Lock()
        self._active = False
        self._camera_info: Any | None = None
        self._gate = StampGate()
        self._inputs = InputAccounting(())
        self._published_ids: set[int] = set()
        self._moveit: PlanningSceneSync | None = None
        self._planning_frames: PlanningFrameSource | None = None
        self._reset_pending = threading.Event()
        self._last_frame_id = ""
        self._skip_log_times: dict[str, float] = {}
        self._start_time = time.monotonic()
        self.stats = RuntimeStats()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            config = load_config(self)
        except ConfigError as err:
            self.get_logger().error(f"configure failed: invalid parameters: {err}")
            return TransitionCallbackReturn.FAILURE
        try:
            backend = self._backend_factory(config)
        except BackendError as err:
            self.get_logger().error(f"configure failed: backend {config.backend!r}: {err}")
            return TransitionCallbackReturn.FAILURE
        self._config = config
        self._gate = StampGate(config.stamp_jump_threshold, config.max_stamp_ahead)
        self._inputs = InputAccounting((config.rgb_topic, config.depth_topic, config.mask_topic))
        self.stats = RuntimeStats(window=config.stats_window)
        self._backend = backend
        self._pipeline = FramePipeline(config, backend)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            "objects": self.create_publisher(ObjectReconstructionArray, "~/objects", reliable),
            "markers": self.create_publisher(MarkerArray, "~/markers", reliable),
            "poses": self.create_publisher(PoseArray, "~/poses", reliable),
            "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", reliable),
        }
        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset)
        self._planning_frames = PlanningFrameSource(self, config)
        if config.moveit_enabled:
            self._moveit = PlanningSceneSync(self, config)
        self._diag_timer = self.create_timer(config.diagnostics_period, self.publish_diagnostics)
        self.get_logger().info(f"configured: backend {backend.describe()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self._require_config()
        self._worker = LatestWinsWorker(
            self._process_job,
            self._on_job_dropped,
            name="sam3d-reconstruct",
            on_cancelled=self._on_job_cancelled,
        )
        self._sync = self._make_sync(cfg)
        self._subs.append(
            self.create_subscription(CameraInfo, cfg.info_topic, self._on_camera_info, input_qos(cfg))
        )
        self._active = True
        self.get_logger().info(
            f"active: {cfg.rgb_topic}, {cfg.depth_topic}, {cfg.mask_topic} (slop {cfg.sync_slop} s), "
            f"camera info {cfg.info_topic}, {cfg.input_reliability}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self._sync = None
        self._inputs.detach()  # what the synchroniser still queues is unmatched now
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
        self._backend = None
        self._pipeline = None
        self._config = None

    # ------------------------------------------------------------------ inputs
    def _make_sync(self, cfg: PipelineConfig) -> Any:
        """message_filters when importable, else our synchroniser with the same semantics;
        either way every message is counted in ``self._inputs`` (received, unmatched)."""
        topics = (cfg.rgb_topic, cfg.depth_topic, cfg.mask_topic)
        inputs, qos = self._inputs, input_qos(cfg)
        try:
            import message_filters  # type: ignore[import-not-found]
        except ImportError:
            sync = ApproximateTimeSync(3, cfg.sync_queue_size, cfg.sync_slop, self._on_synced)
            inputs.attach(own_sync_source(sync))

            def on_image(msg: Image, i: int) -> None:
                inputs.received(i)
                sync.add(msg, i)

            for i, topic in enumerate(topics):
                self._subs.append(
                    self.create_subscription(Image, topic, lambda msg, i=i: on_image(msg, i), qos)
                )
            return sync
        mf_subs = [message_filters.Subscriber(self, Image, t, qos_profile=qos) for t in topics]
        for i, mf_sub in enumerate(mf_subs):  # counted before the synchroniser sees it
            mf_sub.registerCallback(lambda _msg, i=i: inputs.received(i))
        mf_sync = message_filters.ApproximateTimeSynchronizer(mf_subs, cfg.sync_queue_size, cfg.sync_slop)
        mf_sync.registerCallback(self._on_synced)
        inputs.attach(message_filters_source(mf_sync))
        self._subs.extend(s.sub for s in mf_subs)
        self.get_logger().info("synchronising with message_filters.ApproximateTimeSynchronizer")
        return mf_sync

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_synced(self, rgb: Image, depth: Image, mask: Image) -> None:
        """Executor thread: stamp checks, then hand the set to the worker (never blocks)."""
        self._inputs.synced()
        if not self._active or self._worker is None:  # a set completed while deactivating
            self._skip_frame(SkipReason.NOT_ACTIVE, f"frame {header_stamp_ns(rgb)} arrived while not active")
            return
        if self._camera_info is None:  # checked before the gate: the stamp is not consumed
            self._skip_frame(
                SkipReason.MISSING_CAMERA_INFO,
                f"no CameraInfo received yet on {self._require_config().info_topic}",
            )
            return
        verdict = self._gate.check(header_stamp_ns(rgb), self.get_clock().now().nanoseconds)
        if verdict.reason is not None:
            self._skip_frame(verdict.reason, verdict.detail)
            return
        if verdict.detail:
            self.get_logger().warning(f"input {verdict.detail}")
        if verdict.restarted:  # the source restarted: forget tracks, markers and buffered transforms
            self._reset_tracks()
            if self._planning_frames is not None:
                self._planning_frames.clear()
        self.stats.frame_in()
        self._worker.submit(_FrameJob(rgb, depth, mask, self._camera_info, time.monotonic()))

    def _on_job_dropped(self, job: _FrameJob) -> None:
        self._skip_frame(
            SkipReason.SUPERSEDED,
            f"frame {header_stamp_ns(job.rgb)} replaced by a newer one before processing",
        )

    def _on_job_cancelled(self, job: _FrameJob) -> None:
        self._skip_frame(
            SkipReason.NOT_ACTIVE,
            f"frame {header_stamp_ns(job.rgb)} was pending when the node was deactivated",
        )

    def _skip_frame(self, reason: SkipReason, detail: str) -> None:
        self.stats.frame_skipped(reason.value, detail)
        now = time.monotonic()
        last = self._skip_log_times.get(reason.value)
        if reason is not SkipReason.SUPERSEDED and (last is None or now - last >= SKIP_LOG_PERIOD_S):
            self._skip_log_times[reason.value] = now
            self.get_logger().warning(f"frame skipped ({reason.value}): {detail}")

    # ------------------------------------------------------------------ worker thread
    def _process_job(self, job: _FrameJob) -> None:
        """Worker thread: decode, look up the camera pose in the planning frame (may wait up
        to ``tf_timeout``), reconstruct, publish."""
        pipeline, cfg, planning_frames = self._pipeline, self._config, self._planning_frames
        if pipeline is None or cfg is None or not self._active:
            self._skip_frame(
                SkipReason.NOT_ACTIVE, f"frame {header_stamp_ns(job.rgb)} dequeued while not active"
            )
            return
        if self._reset_pending.is_set():  # ~/reset: forget tracks on this thread
            self._reset_pending.clear()
            pipeline.reset()
        try:
            frame = frame_from_messages(job.rgb, job.depth, job.info, job.mask, cfg)
            # tf2 when in use (a failed lookup raises TfUnavailableError, an InputError: the
            # frame is skipped as tf_unavailable); None: the static camera_to_planning_transform
            fixed_T_camera = (
                planning_frames.fixed_T_camera(cfg, frame.frame_id, frame.stamp_ns)
                if planning_frames is not None
                else None
            )
            update = pipeline.process_scene(frame, fixed_T_camera)
            result = update.result
        except InputError as err:
            self._skip_frame(err.reason, err.detail)
            return
        except Exception as err:
            self.get_logger().error(f"frame skipped (internal_error): {type(err).__name__}: {err}")
            logger.exception("internal error while processing a frame")
            self._skip_frame(SkipReason.INTERNAL_ERROR, f"{type(err).__name__}: {err}")
            return
        for skipped in result.skipped:
            self.get_logger().debug(
                f"object {skipped.instance_id} skipped ({skipped.reason.value}): {skipped.detail}"
            )
        if not self.context.ok():  # shut down under us: the outputs cannot be published
            self._skip_frame(
                SkipReason.NOT_ACTIVE, f"frame {result.stamp_ns}: context shut down before publishing"
            )
            return
        # count before publishing, so anyone who sees the output also sees the counters
        self.stats.frame_out(
            {**result.timings_ms, "end_to_end": (time.monotonic() - job.received) * 1000.0},
            len(result.objects),
            [s.reason.value for s in result.skipped],
        )
        self._publish(result)
        moveit = self._moveit
        if moveit is not None:
            try:
                moveit.update(update)
            except Exception as err:
                logger.exception("planning-scene update failed")
                self.get_logger().error(f"planning-scene update failed: {type(err).__name__}: {err}")

    def _publish(self, result: FrameResult) -> None:
        cfg = self._require_config()
        with self._state_lock:
            pubs = dict(self._pubs)
            previous = set(self._published_ids)
            self._published_ids = {o.track_id for o in result.objects}
            self._last_frame_id = result.frame_id
        if not pubs:
            return
        out = builders.frame_output_msgs(result, previous, cfg.marker_alpha, markers=cfg.publish_markers)
        pubs["objects"].publish(out.objects)
        pubs["poses"].publish(out.poses)
        if out.markers is not None:
            pubs["markers"].publish(out.markers)

    # ------------------------------------------------------------------ services, diagnostics
    def reset_state(self) -> None:
        """Forget tracks, stamps and queued inputs; RViz markers are deleted."""
        self._gate.reset()
        if self._sync is not None and hasattr(self._sync, "clear"):
            self._sync.clear()
        self._reset_tracks()

    def _reset_tracks(self) -> None:
        self._reset_pending.set()
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
        return builders.diagnostics_msg(
            self.get_clock().now().nanoseconds,
            self.get_name(),
            backend,
            self.stats.snapshot(),
            state,
            time.monotonic() - self._start_time,
            inputs=self._inputs.snapshot(),
            frames_synced=self._inputs.frames_synced,
        )

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate changes against the specs; applied values take effect on the next frame."""
        try:
            changes = {}
            for p in params:
                spec = PARAMETERS_BY_NAME.get(p.name)
                if spec is not None:
                    changes[p.name] = validate_value(spec, p.value)
            if self._config is not None and changes:
                new_config = self._config.replace(**changes)
                self._config = new_config
                if self._pipeline is not None:
                    self._pipeline.config = new_config
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _require_config(self) -> PipelineConfig:
        if self._config is None:
            raise RuntimeError("node is not configured")
        return self._config

    # ------------------------------------------------------------------ helpers for tests/tools
    def wait_idle(self, timeout: float) -> bool:
        """Wait until the worker has nothing pending or running (tests and tools)."""
        worker = self._worker
        return worker.wait_idle(timeout) if worker is not None else True

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
