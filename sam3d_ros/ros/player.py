"""A small rosbag2 player built on rosbags + rclpy (``ros2 bag play`` is not on PyPI).

    python -m sam3d_ros.ros.player BAG [--rate 1.0] [--clock] [--wait-subscribers 1]

Publishes every message of the bag on its topic, with the bag's timing scaled by ``rate``
(``--rate 0`` = as fast as possible), optionally ``/clock`` (like ``ros2 bag play --clock``
for nodes with ``use_sim_time``). Image topics use sensor-data QoS, like camera drivers.
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
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock

from sam3d_ros.ros.builders import ns_to_time

logger = logging.getLogger(__name__)


class PlayerError(RuntimeError):
    """A bag that cannot be played."""


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
    wait_timeout: float = 10.0,
    between: Callable[[str, int], None] | None = None,
) -> int:
    """Publish the messages of ``bag`` from ``node``; returns the number published.

    Args:
        rate: time scale of the bag's log times (1.0 = real time, 0 = no waiting).
        clock: also publish /clock with the bag's log time.
        topics: only these topics (default: all).
        wait_subscribers: before publishing, wait (up to ``wait_timeout`` s) until every
            topic has at least this many subscribers.
        between: called after each message with (topic, log time ns), e.g. for lock-step.
    """
    from rosbags.highlevel import AnyReader

    pubs: dict[str, Any] = {}
    count = 0
    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        if not conns:
            raise PlayerError(f"bag {bag} has none of the topics {sorted(topics or [])}")
        for c in conns:
            qos: QoSProfile | int = qos_profile_sensor_data if c.msgtype == "sensor_msgs/msg/Image" else 10
            if c.msgtype == "sensor_msgs/msg/CameraInfo":
                qos = qos_profile_sensor_data
            pubs[c.topic] = (
                node.create_publisher(_msg_class(c.msgtype), c.topic, qos),
                _msg_class(c.msgtype),
            )
        clock_pub = node.create_publisher(Clock, "/clock", 10) if clock else None
        if wait_subscribers > 0:
            deadline = time.monotonic() + wait_timeout
            while time.monotonic() < deadline and any(
                p.get_subscription_count() < wait_subscribers for p, _ in pubs.values()
            ):
                time.sleep(0.01)
        t_wall0: float | None = None
        t_bag0 = 0
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
            if between is not None:
                between(conn.topic, log_ns)
    return count


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(prog="sam3d_player", description=__doc__)
    parser.add_argument("bag", type=Path)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--clock", action="store_true")
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--wait-subscribers", type=int, default=0)
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
            )
            node.get_logger().info(f"played {n} messages from {opts.bag}")
            if not opts.loop:
                break
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
