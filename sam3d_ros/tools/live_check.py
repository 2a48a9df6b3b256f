"""Live path check: play a bag into a running ``sam3d_node`` and compare its published
results with the offline replay of the same bag.

    python -m sam3d_ros.tools.live_check BAG --replay-results DIR/results.jsonl [--out live.jsonl]

Frames are played in lock step (each synchronized set is published, then its result is
awaited), so no frame is superseded and the node sees exactly the frames the offline replay
saw. Exit code 0 when every frame matches (same objects, poses within 1e-5 m / 1e-5).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image

from sam3d_ros.core.config import NodeConfig, default_node_config
from sam3d_ros.msg import ObjectReconstructionArray
from sam3d_ros.ros.player import sensor_qos
from sam3d_ros.stream.conversions import stamp_to_ns
from sam3d_ros.stream.frames import CAMERA_INFO_WAIT_S
from sam3d_ros.stream.sync import ApproximateTimeSync
from sam3d_ros.tools.bagio import BagReader, InputTopics

POSITION_TOL_M = 1e-5
QUAT_TOL = 1e-5
#: Seconds to wait for a frame's result before sending the frame again.
RESEND_PERIOD_S = 3.0


def _live_record(msg: ObjectReconstructionArray) -> dict[str, Any]:
    return {
        "stamp_ns": stamp_to_ns(msg.header.stamp),
        "frame_id": msg.header.frame_id,
        "objects": [
            {
                "instance_id": o.instance_id,
                "track_id": o.track_id,
                "position": [o.pose.position.x, o.pose.position.y, o.pose.position.z],
                "orientation_xyzw": [
                    o.pose.orientation.x,
                    o.pose.orientation.y,
                    o.pose.orientation.z,
                    o.pose.orientation.w,
                ],
                "extents": [o.extents.x, o.extents.y, o.extents.z],
                "vertices": len(o.mesh.vertices),
            }
            for o in msg.objects
        ],
    }


def compare(live: list[dict[str, Any]], offline: list[dict[str, Any]]) -> list[str]:
    """Differences between live and offline records (empty = identical within tolerance)."""
    problems = []
    off = {r["stamp_ns"]: r for r in offline}
    if [r["stamp_ns"] for r in live] != [r["stamp_ns"] for r in offline]:
        problems.append(f"frames differ: live {len(live)} frames, offline {len(offline)} frames")
    for rec in live:
        ref = off.get(rec["stamp_ns"])
        if ref is None:
            continue
        a = {o["instance_id"]: o for o in rec["objects"]}
        b = {o["instance_id"]: o for o in ref["objects"]}
        if set(a) != set(b):
            problems.append(f"{rec['stamp_ns']}: objects live {sorted(a)} offline {sorted(b)}")
            continue
        for iid, o in a.items():
            r = b[iid]
            dp = max(abs(x - y) for x, y in zip(o["position"], r["pose"]["position"], strict=True))
            dq = max(
                abs(x - y) for x, y in zip(o["orientation_xyzw"], r["pose"]["orientation_xyzw"], strict=True)
            )
            if dp > POSITION_TOL_M or dq > QUAT_TOL:
                problems.append(
                    f"{rec['stamp_ns']} object {iid}: position diff {dp:.2e} m, quaternion diff {dq:.2e}"
                )
    return problems


def play_lockstep(
    node: Node,
    bag: Path,
    topics: InputTopics,
    node_ns: str,
    timeout: float = 30.0,
    prefix: str = "",
    config: NodeConfig | None = None,
) -> list[dict[str, Any]]:
    """Publish the bag set by set (each synchronised set, then its result is awaited) and
    collect the node's outputs. The sets are formed as the node forms them (its
    synchroniser, in log order); before a set, every CameraInfo logged up to the end of the
    set's CameraInfo wait is published, as a node playing the bag in real time receives it.

    Args:
        topics: the input topics in the bag.
        node_ns: the node's private namespace (its outputs are ``<node_ns>/objects``).
        prefix: prepended to the bag's topics when publishing (e.g. a test namespace).
        config: the node's ``sync_slop`` and ``sync_queue_size`` (default: the defaults).
    """
    received: dict[int, dict[str, Any]] = {}
    cond = threading.Condition()

    def on_objects(msg: ObjectReconstructionArray) -> None:
        with cond:
            rec = _live_record(msg)
            received[rec["stamp_ns"]] = rec
            cond.notify_all()

    node.create_subscription(ObjectReconstructionArray, f"{node_ns}/objects", on_objects, 10)
    qos = sensor_qos("reliable")  # serves a best-effort node too, and a reliable one losslessly
    pubs = {
        topics.rgb: node.create_publisher(Image, prefix + topics.rgb, qos),
        topics.depth: node.create_publisher(Image, prefix + topics.depth, qos),
        topics.mask: node.create_publisher(Image, prefix + topics.mask, qos),
        topics.info: node.create_publisher(CameraInfo, prefix + topics.info, qos),
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (
        any(p.get_subscription_count() == 0 for p in pubs.values())
        or node.count_publishers(f"{node_ns}/objects") == 0
    ):
        time.sleep(0.02)
    if any(p.get_subscription_count() == 0 for p in pubs.values()):
        raise RuntimeError(
            f"sam3d_node is not subscribed to {sorted(pubs)} after {timeout} s: is it running?"
        )

    image_topics = (topics.rgb, topics.depth, topics.mask)
    types = {topics.rgb: Image, topics.depth: Image, topics.mask: Image, topics.info: CameraInfo}
    infos: list[tuple[int, CameraInfo]] = []  # (log time, message)
    sets: list[tuple[int, tuple[Any, ...]]] = []  # (log time of the set's last image, images)
    log_now = [0]
    # the node's synchroniser forms the sets, in the bag's log order
    cfg = config or default_node_config()
    sync = ApproximateTimeSync(
        3, cfg.sync_queue_size, cfg.sync_slop, lambda *msgs: sets.append((log_now[0], msgs))
    )
    with BagReader(bag, topics) as reader:
        for conn, log_ns, raw in reader.raw_messages():
            msg = deserialize_message(raw, types[conn.topic])
            if conn.topic == topics.info:
                infos.append((log_ns, msg))
            else:
                log_now[0] = log_ns
                sync.add(msg, image_topics.index(conn.topic))
    out = []
    sent_infos = 0
    wait_ns = round(CAMERA_INFO_WAIT_S * 1e9)
    for set_log_ns, images in sets:
        stamp = stamp_to_ns(images[0].header.stamp)

        def send_infos(until_ns: int) -> None:
            nonlocal sent_infos
            while sent_infos < len(infos) and infos[sent_infos][0] <= until_ns:
                pubs[topics.info].publish(infos[sent_infos][1])
                sent_infos += 1

        send_infos(set_log_ns)  # logged before the set's last image
        # A best-effort node (the default input_reliability) can still lose a set between
        # processes. Re-send until the result arrives (a set the node did get is then
        # counted there as a duplicate stamp and ignored).
        deadline = time.monotonic() + timeout
        got = False
        while not got and time.monotonic() < deadline:
            for t, msg in zip(image_topics, images, strict=True):
                pubs[t].publish(msg)
            # what a node playing the bag in real time receives while the set waits for its
            # CameraInfo: every CameraInfo logged up to the end of that wait
            send_infos(set_log_ns + wait_ns)
            with cond:
                got = cond.wait_for(partial(received.__contains__, stamp), timeout=RESEND_PERIOD_S)
        if got:
            out.append(received[stamp])
        else:
            print(f"[live_check] no result for frame {stamp} within {timeout} s", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="live_check", description=__doc__)
    parser.add_argument("bag", type=Path)
    parser.add_argument("--replay-results", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="write the live results as JSONL")
    parser.add_argument("--node-ns", default="/sam3d_node", help="the node's private namespace")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    context = Context()
    rclpy.init(context=context)
    node = Node("sam3d_live_check", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        live = play_lockstep(node, args.bag, InputTopics(), args.node_ns, args.timeout)
    finally:
        executor.shutdown()
        spin.join(timeout=10.0)  # the spin thread must be out of rclpy before its context goes
        node.destroy_node()
        rclpy.shutdown(context=context)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in live))
    offline = [json.loads(line) for line in args.replay_results.read_text().splitlines() if line.strip()]
    problems = compare(live, offline)
    n_obj = sum(len(r["objects"]) for r in live)
    if problems:
        print(f"[live_check] live node and offline replay DIFFER ({len(problems)} problems):")
        for p in problems[:20]:
            print("  " + p)
        return 1
    print(f"[live_check] live node matches the offline replay: {len(live)} frames, {n_obj} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
