"""Ctrl-C while a frame is being reconstructed: ``python -m sam3d_ros.ros.node`` stops its
intake, finishes (publishes) the frame in flight, then shuts the context down; nothing is
logged as an unhandled error and the frame's result reaches the subscriber."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from ros_helpers import frame_msgs, input_topics, wait_for
from sam3d_ros.msg import ObjectReconstructionArray
from sensor_msgs.msg import CameraInfo, Image

from sam3d_ros.ros.player import sensor_qos
from sam3d_ros.sim.scenes import random_scene

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
STAMP = 1_700_000_000_123_000_000

#: The node's entry point with a backend that marks the start of a reconstruction and then
#: takes 3 s, so that SIGINT lands while a frame is in flight.
SLOW_NODE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import sam3d_ros.ros.node as node_mod
    from sam3d_ros.core.backend import Backend
    from sam3d_ros.backends.registry import create_backend

    MARK = Path(sys.argv[1])

    class Slow(Backend):
        name = "slow"

        def __init__(self, config):
            super().__init__(config)
            self.inner = create_backend(config, "geometric")

        def reconstruct(self, scene, observations):
            MARK.write_text("started")
            time.sleep(3.0)
            return self.inner.reconstruct(scene, observations)

    node_mod.create_backend = lambda config: Slow(config)
    sys.exit(node_mod.main(["sam3d_node", *sys.argv[2:]]))
    """
)


def test_sigint_finishes_the_frame_in_flight(tmp_path: Path) -> None:
    script = tmp_path / "slow_node.py"
    script.write_text(SLOW_NODE)
    mark = tmp_path / "started"
    rgb, depth, info, mask = frame_msgs(
        random_scene(seed=3, n_objects=2, width=160, height=120).render(), STAMP
    )

    context = Context()
    rclpy.init(context=context)
    peer = Node("shutdown_peer", context=context)
    received: list[ObjectReconstructionArray] = []
    peer.create_subscription(ObjectReconstructionArray, "/sam3d_node/objects", received.append, 10)
    topics = input_topics("")
    qos = sensor_qos("reliable")
    pubs = {
        k: peer.create_publisher(CameraInfo if k == "info" else Image, topics[k], qos)
        for k in ("info", "depth", "mask", "rgb")
    }
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(mark),
            "--ros-args",
            "--params-file",
            str(ROOT / "config" / "default.yaml"),
        ],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = ""
    try:
        assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 60.0), "no node"
        assert wait_for(lambda: peer.count_publishers("/sam3d_node/objects") > 0, 30.0)

        def send() -> bool:  # again until the reconstruction started (duplicates are skipped)
            for k, msg in (("info", info), ("depth", depth), ("mask", mask), ("rgb", rgb)):
                pubs[k].publish(msg)
            return wait_for(mark.exists, 2.0)

        assert wait_for(send, 30.0, 0.0), "the node never started reconstructing"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert wait_for(lambda: any(m.header.stamp.nanosec == STAMP % 10**9 for m in received), 10.0), out
    finally:
        if proc.poll() is None:
            proc.kill()
            out += proc.communicate(timeout=30)[0]
        executor.shutdown()
        peer.destroy_node()
        rclpy.shutdown(context=context)
    assert proc.returncode == 0, out
    for bad in ("context is invalid", "unhandled error", "Traceback"):
        assert bad not in out, out
