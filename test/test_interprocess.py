"""Interprocess test: a publisher process plays a synthetic scene (analytic shapes rendered
by the ray caster), sam3d_node runs in another process from config/default.yaml, and this
process subscribes and checks the objects and the distance of each mesh to the true surface.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from ros_helpers import frame_msgs, input_publishers, publish_frame, wait_for
from sam3d_ros.msg import ObjectReconstructionArray
from scipy.spatial import cKDTree

from sam3d_ros.core.frames import Pose, transform_points
from sam3d_ros.sim.bag import read_ground_truth, write_bag
from sam3d_ros.sim.raycast import true_mesh
from sam3d_ros.sim.scenes import sequence

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
#: Mean distance of reconstructed mesh vertices to the true surface, metres.
MEAN_SURFACE_DIST_TOL = 0.010
#: 90th percentile of that distance, metres (the completed back is a guess).
P90_SURFACE_DIST_TOL = 0.025
#: Seconds to wait for the last frame's result before sending that frame again.
RESEND_PERIOD_S = 10.0


def _stamp_ns(msg: ObjectReconstructionArray) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def test_node_in_another_process(tmp_path: Path) -> None:
    scenes = sequence(seed=11, n_frames=3, n_objects=3, width=320, height=240)
    frames = [s.render().with_stamp(1_000_000_000 + i * 100_000_000) for i, s in enumerate(scenes)]
    bag = write_bag(tmp_path / "scene_bag", frames, storage="sqlite3")
    truth = read_ground_truth(bag)

    context = Context()
    rclpy.init(context=context)
    listener = Node("ipc_listener", context=context)
    received: list[ObjectReconstructionArray] = []
    listener.create_subscription(ObjectReconstructionArray, "/sam3d_node/objects", received.append, 10)
    pubs = input_publishers(listener, "")
    resent = 0
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()

    env = dict(os.environ)
    node_proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sam3d_ros.ros.node",
            "--ros-args",
            "--params-file",
            str(ROOT / "config" / "default.yaml"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    player: subprocess.Popen[str] | None = None
    try:
        assert wait_for(lambda: listener.count_publishers("/sam3d_node/objects") > 0, 60.0), (
            "node did not start"
        )
        assert wait_for(lambda: listener.count_subscribers("/camera/instance_masks") > 0, 30.0)
        player = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sam3d_ros.ros.player",
                str(bag),
                "--rate",
                "1.0",
                "--wait-subscribers",
                "1",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert player.wait(60) == 0, player.stdout.read() if player.stdout else ""
        # Latest frame wins: frames that arrive while one is processed may be superseded
        # (more of them on a loaded machine), but the last frame the node gets is always
        # processed. The inputs are best effort, and the player exits right after its last
        # publish (as `ros2 bag play` does), so that set can be lost in transport: if no
        # result comes, send it again from here. A set the node did get comes back as a
        # duplicate stamp and is ignored, so a frame the node dropped still fails the test.
        last = frames[-1].stamp_ns
        last_msgs = frame_msgs(frames[-1], last)
        deadline = time.monotonic() + 90.0
        while not any(_stamp_ns(m) == last for m in received) and time.monotonic() < deadline:
            if not wait_for(lambda: any(_stamp_ns(m) == last for m in received), RESEND_PERIOD_S):
                resent += 1
                publish_frame(pubs, last_msgs)
        if not any(_stamp_ns(m) == last for m in received):
            node_proc.terminate()
            out, _ = node_proc.communicate(timeout=30)
            pytest.fail(
                f"received {[_stamp_ns(m) for m in received]}, never the last frame {last} "
                f"(sent again {resent} times)\n{out}"
            )
    finally:
        node_proc.terminate()
        out, _ = node_proc.communicate(timeout=30)
        executor.shutdown()
        listener.destroy_node()
        rclpy.shutdown(context=context)
    assert "active" in out, out

    gt_by_stamp = {f.stamp_ns: f for f in truth.frames}
    for msg in received:
        stamp = _stamp_ns(msg)
        gt = gt_by_stamp[stamp]
        visible = {o.label: o for o in gt.objects if o.visible_pixels >= 50}
        assert {o.instance_id for o in msg.objects} == set(visible), stamp
        for obj in msg.objects:
            verts = np.array([[p.x, p.y, p.z] for p in obj.mesh.vertices])
            pose = obj.pose
            camera_T_object = Pose(
                (pose.position.x, pose.position.y, pose.position.z),
                (pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w),
            ).matrix()
            verts_cam = transform_points(camera_T_object, verts)
            surface = true_mesh(visible[obj.instance_id], frame="camera")
            samples = surface.sample(20000)
            dist, _ = cKDTree(np.asarray(samples)).query(verts_cam)
            assert dist.mean() < MEAN_SURFACE_DIST_TOL, (obj.instance_id, dist.mean())
            assert np.percentile(dist, 90) < P90_SURFACE_DIST_TOL, (obj.instance_id, np.percentile(dist, 90))
