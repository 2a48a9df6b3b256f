"""A small rosbag2 player built on rosbags + rclpy (``ros2 bag play`` is not on PyPI).

    python -m sam3d_ros.ros.player BAG [--rate 1.0] [--clock] [--wait-subscribers 1]
        [--reliability reliable|best_effort]

Publishes every message of the bag on its topic, with the bag's timing scaled by ``rate``
(``--rate 0`` = as fast as possible), optionally ``/clock`` (like ``ros2 bag play --clock``
for nodes with ``use_sim_time``).

Image and CameraInfo topics are published ``reliable`` by default, keeping every message
until each matched reader has it: a reliable publisher serves best-effort subscribers too
(best effort then), and with a node using ``input_reliability: reliable`` no frame is lost
at any rate. ``--reliability best_effort`` publishes like a camera driver (sensor-data QoS).
``--wait-subscribers N`` first waits until every image and CameraInfo topic of the bag has N
subscriptions (the node's four inputs) and fails if they do not appear; before it returns,
the player waits until reliable messages are acknowledged by their readers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock

from sam3d_ros.ros.builders import ns_to_time

logger = logging.getLogger(__name__)


#: Message types published with the sensor QoS chosen by ``reliability`` (and waited for).
SENSOR_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo")
#: Longest wait for the readers to acknowledge the reliable messages at the end (s).
ACK_TIMEOUT_S = 30.0


class PlayerError(RuntimeError):
    """A bag that cannot be played, or subscribers that did not appear."""


def sensor_qos(reliability: str) -> QoSProfile:
    """QoS of the image and CameraInfo publishers: ``reliable`` keeps every message until it
    is acknowledged (KEEP_ALL: a slow reader slows the player down instead of losing
    messages); ``best_effort`` is sensor-data QoS."""
    if reliability == "best_effort":
        return qos_profile_sensor_data
    if reliability != "reliable":
        raise PlayerError(f"reliability must be 'reliable' or 'best_effort', got {reliability!r}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def _msg_class(msgtype: str) -> Any:
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as err:
        raise PlayerError(f"message type {msgtype!r} is not importable here: {err}") from err


def play_bag(
    node: Node,
    bag: Path,
    *,
    rate: float = 1.0,
    clock: bool = False,
    topics: set[str] | None = None,
    wait_subscribers: int = 0,
    wait_timeout: float = 30.0,
    between: Callable[[str, int], None] | None = None,
    reliability: str = "reliable",
) -> int:
    """Publish the messages of ``bag`` from ``node``; returns the number published.

    Args:
        rate: time scale of the bag's log times (1.0 = real time, 0 = no waiting).
        clock: also publish /clock with the bag's log time.
        topics: only these topics (default: all).
        wait_subscribers: before publishing, wait (up to ``wait_timeout`` s) until every
            image and CameraInfo topic has at least this many subscriptions.
        between: called after each message with (topic, log time ns), e.g. for lock-step.
        reliability: QoS of the image and CameraInfo topics (see :func:`sensor_qos`).

    Raises:
        PlayerError: the bag has none of ``topics``, a type is not importable, or the
            subscriptions did not appear within ``wait_timeout``.
    """
    from rosbags.highlevel import AnyReader

    qos = sensor_qos(reliability)
    pubs: dict[str, Any] = {}
    count = 0
    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        if not conns:
            raise PlayerError(f"bag {bag} has none of the topics {sorted(topics or [])}")
        sensors = {c.topic for c in conns if c.msgtype in SENSOR_TYPES}
        for c in conns:
            cls = _msg_class(c.msgtype)
            pubs[c.topic] = (node.create_publisher(cls, c.topic, qos if c.topic in sensors else 10), cls)
        clock_pub = node.create_publisher(Clock, "/clock", 10) if clock else None
        if wait_subscribers > 0:
            _wait_for_subscriptions(node, {t: pubs[t][0] for t in sensors}, wait_subscribers, wait_timeout)
        t_wall0: float | None = None
        t_bag0 = 0
        infos_acked: set[str] = set()
        for conn, log_ns, raw in reader.messages(connections=conns):
            if t_wall0 is None:
                t_wall0, t_bag0 = time.monotonic(), log_ns
            if rate > 0:
                delay = t_wall0 + (log_ns - t_bag0) / 1e9 / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if clock_pub is not None:
                clock_pub.publish(Clock(clock=ns_to_time(log_ns)))
            pub, cls = pubs[conn.topic]
            pub.publish(deserialize_message(raw, cls))
            count += 1
            if (
                reliability == "reliable"
                and conn.msgtype == SENSOR_TYPES[1]
                and conn.topic not in infos_acked
            ):
                # a node skips image sets that arrive before any CameraInfo: let the first one
                # reach every reader before the images that follow it in the bag
                infos_acked.add(conn.topic)
                pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
            if between is not None:
                between(conn.topic, log_ns)
    if reliability == "reliable":
        for topic in sorted(sensors):
            if not pubs[topic][0].wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
                logger.warning(
                    "%s: not every reader acknowledged the messages within %g s", topic, ACK_TIMEOUT_S
                )
    return count


def _wait_for_subscriptions(node: Node, pubs: dict[str, Any], n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        missing = {t: p.get_subscription_count() for t, p in pubs.items() if p.get_subscription_count() < n}
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise PlayerError(
                f"after {timeout:g} s these topics have fewer than {n} subscriptions: "
                + ", ".join(f"{t} ({k})" for t, k in sorted(missing.items()))
            )
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(prog="sam3d_player", description=__doc__)
    parser.add_argument("bag", type=Path)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--clock", action="store_true")
    parser.add_argument("--loop", action="store_true")
    parser.add_argument(
        "--wait-subscribers",
        type=int,
        default=0,
        help="first wait until every image and CameraInfo topic has this many subscriptions",
    )
    parser.add_argument("--wait-timeout", type=float, default=30.0, help="seconds (then exit 1)")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument("--topics", nargs="*", default=None)
    opts = parser.parse_args(rclpy.utilities.remove_ros_args(args)[1:])
    context = Context()
    rclpy.init(args=args, context=context)
    node = Node("sam3d_player", context=context)
    try:
        while True:
            n = play_bag(
                node,
                opts.bag,
                rate=opts.rate,
                clock=opts.clock,
                topics=set(opts.topics) if opts.topics else None,
                wait_subscribers=opts.wait_subscribers,
                wait_timeout=opts.wait_timeout,
                reliability=opts.reliability,
            )
            node.get_logger().info(f"played {n} messages from {opts.bag}")
            if not opts.loop:
                break
    except PlayerError as err:
        node.get_logger().error(str(err))
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
