"""Helpers for the ROS tests: messages from rendered frames, a node harness with its own
rclpy Context and executor thread, and waiting on deadlines (never fixed sleeps)."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from sam3d_ros.core.camera import CameraIntrinsics
from sam3d_ros.core.images import encode_image

_ns_counter = itertools.count()


def unique_ns() -> str:
    """A namespace unique within this test process (tests share a ROS domain)."""
    return f"/t{threading.get_ident() % 10000}_{next(_ns_counter)}"


def input_topics(ns: str) -> dict[str, str]:
    """The node's input topics under namespace ``ns`` (keys rgb, depth, info, mask)."""
    return {
        "rgb": f"{ns}/camera/color/image_raw",
        "depth": f"{ns}/camera/aligned_depth_to_color/image_raw",
        "info": f"{ns}/camera/color/camera_info",
        "mask": f"{ns}/camera/instance_masks",
    }


def input_topic_params(ns: str) -> list[Parameter]:
    """Parameter overrides pointing the node's inputs at :func:`input_topics` of ``ns``."""
    return [Parameter(f"{k}_topic", value=v) for k, v in input_topics(ns).items()]


def input_publishers(node: Node, ns: str) -> dict[str, Any]:
    """Sensor-data QoS publishers on the node inputs of ``ns`` (keys rgb, depth, info, mask)."""
    types = {"rgb": Image, "depth": Image, "info": CameraInfo, "mask": Image}
    return {
        k: node.create_publisher(types[k], name, qos_profile_sensor_data)
        for k, name in input_topics(ns).items()
    }


def namespaced_node(
    harness: Harness,
    ns: str,
    params: dict[str, Any],
    *,
    remap_topics: tuple[str, ...] = (),
    backend_factory: Any = None,
) -> Any:
    """A ``Sam3dNode`` (unconfigured) in namespace ``ns``, reading :func:`input_topics` of
    ``ns``, with parameter overrides ``params`` and the absolute ``remap_topics`` moved under
    ``ns``; added to the harness's executor."""
    from sam3d_ros.ros.node import Sam3dNode

    remaps = [arg for topic in remap_topics for arg in ("-r", f"{topic}:={ns}{topic}")]
    node = Sam3dNode(
        context=harness.context,
        parameter_overrides=input_topic_params(ns) + [Parameter(k, value=v) for k, v in params.items()],
        backend_factory=backend_factory,
        cli_args=["--ros-args", "-r", f"__ns:={ns}", *remaps],
    )
    harness.add_node(node)
    return node


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, period: float = 0.01) -> bool:
    """Poll ``predicate`` until true or the deadline passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


def diagnostic_values(msg: Any, hardware_id: str = "sam3d_node") -> dict[str, str]:
    """The key/values of the node's status in one DiagnosticArray (empty if not there)."""
    return {kv.key: kv.value for st in msg.status if st.hardware_id == hardware_id for kv in st.values}


def accounting_problems(values: dict[str, str]) -> list[str]:
    """Where the node's /diagnostics does not account for every message it received (empty
    when it does): per synchronised topic, messages_received = frames_synced + unmatched +
    queued, and frames_synced = frames_out + the frames skipped for every reason."""
    if "frames_synced" not in values:
        return ["no frames_synced in /diagnostics"]
    synced = int(values["frames_synced"])
    skipped = sum(int(v) for k, v in values.items() if k.startswith("frames_skipped/"))
    waiting = int(values.get("frames_waiting_camera_info", "0"))
    problems = []
    if synced != int(values["frames_out"]) + skipped + waiting:
        problems.append(
            f"frames_synced {synced} != frames_out {values['frames_out']} + skipped {skipped}"
            f" + waiting for CameraInfo {waiting}"
        )
    topics = [k.split("/", 1)[1] for k in values if k.startswith("messages_received/")]
    if len(topics) != 3:
        problems.append(f"expected 3 synchronised topics, got {topics}")
    for t in topics:
        received = int(values[f"messages_received/{t}"])
        unmatched, queued = int(values[f"unmatched/{t}"]), int(values[f"queued/{t}"])
        if received != synced + unmatched + queued:
            problems.append(
                f"{t}: received {received} != synced {synced} + unmatched {unmatched} + queued {queued}"
            )
    return problems


def assert_inputs_accounted(
    diagnostics: list[Any], node: Any = None, timeout: float = 10.0
) -> dict[str, str]:
    """Wait (worker idle, then a fresh /diagnostics message) until the node's diagnostics
    account for every message received (:func:`accounting_problems`); returns the values."""
    if node is not None:
        assert node.wait_idle(timeout)
    start = len(diagnostics)  # only messages published from now on
    last: dict[str, str] = {}

    def accounted() -> bool:
        nonlocal last
        fresh = [v for v in (diagnostic_values(m) for m in diagnostics[start:]) if v]
        last = fresh[-1] if fresh else {}
        return bool(last) and not accounting_problems(last)

    assert wait_for(accounted, timeout), accounting_problems(last) or last
    return last


def header(stamp_ns: int, frame_id: str = "camera_color_optical_frame") -> Header:
    return Header(
        stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id
    )


def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, **kwargs: Any) -> Image:
    fields = encode_image(array, encoding, **kwargs)
    msg = Image(header=header(stamp_ns))
    msg.height, msg.width = fields["height"], fields["width"]
    msg.encoding, msg.is_bigendian, msg.step = fields["encoding"], fields["is_bigendian"], fields["step"]
    msg.data = fields["data"]
    return msg


def info_msg(cam: CameraIntrinsics, stamp_ns: int) -> CameraInfo:
    msg = CameraInfo(header=header(stamp_ns), width=cam.width, height=cam.height)
    msg.k = [cam.fx, 0.0, cam.cx, 0.0, cam.fy, cam.cy, 0.0, 0.0, 1.0]
    msg.p = [cam.fx, 0.0, cam.cx, 0.0, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    return msg


def frame_msgs(rendered: Any, stamp_ns: int) -> tuple[Image, Image, CameraInfo, Image]:
    """(rgb8, 16UC1 depth in mm, CameraInfo, 16UC1 labels) of a sim RenderedFrame."""
    depth_mm = np.nan_to_num(rendered.depth * 1000.0, nan=0.0).round().astype(np.uint16)
    return (
        image_msg(rendered.rgb, "rgb8", stamp_ns),
        image_msg(depth_mm, "16UC1", stamp_ns),
        info_msg(rendered.camera.intrinsics, stamp_ns),
        image_msg(rendered.labels.astype(np.uint16), "16UC1", stamp_ns),
    )


class Harness:
    """A node under test plus a peer node (publishers/subscribers) in one private Context,
    spun by a background executor thread."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.peer = Node("test_peer", context=self.context)
        self.executor.add_node(self.peer)
        self._thread: threading.Thread | None = None
        self.received: dict[str, list[Any]] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(Exception):  # the executor was shut down
            self.executor.spin()

    def add_node(self, node: Node) -> None:
        self.executor.add_node(node)

    def publishers(self, ns: str) -> dict[str, Any]:
        return input_publishers(self.peer, ns)

    def subscribe(self, msg_type: Any, topic: str, key: str | None = None, qos: Any = 10) -> list[Any]:
        store = self.received.setdefault(key or topic, [])
        self.peer.create_subscription(msg_type, topic, store.append, qos)
        return store

    def close(self) -> None:
        """Shut down; first every sam3d node in the executor must account, in its
        /diagnostics message, for every message it received (:func:`accounting_problems`)."""
        problems = self._accounting_problems()
        self.executor.shutdown(timeout_sec=5.0)
        for node in list(self.executor.get_nodes()):
            node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.context)
        if self._thread is not None:
            self._thread.join(5.0)
        assert not problems, problems

    def _accounting_problems(self, timeout: float = 10.0) -> list[str]:
        problems: list[str] = []
        for node in self.executor.get_nodes():
            if not hasattr(node, "diagnostics_message"):
                continue
            node.wait_idle(timeout)
            values: dict[str, str] = {}

            def accounted(node: Any = node) -> bool:
                nonlocal values
                values = diagnostic_values(node.diagnostics_message(), node.get_name())
                # a node never configured has no synchronised topics to account for
                unconfigured = not any(k.startswith("messages_received/") for k in values)
                return unconfigured or not accounting_problems(values)

            if not wait_for(accounted, timeout):
                problems += [f"{node.get_namespace()}: {p}" for p in accounting_problems(values)]
        return problems


def publish_frame(
    pubs: dict[str, Any], msgs: tuple[Image, Image, CameraInfo, Image], *, info: bool = True
) -> None:
    rgb, depth, cam_info, mask = msgs
    if info:
        pubs["info"].publish(cam_info)
    pubs["depth"].publish(depth)
    pubs["mask"].publish(mask)
    pubs["rgb"].publish(rgb)
