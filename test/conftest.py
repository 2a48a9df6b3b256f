"""Test set-up: ROS 2 discovery stays on this machine, logs stay in the build tree.

These variables are set before anything imports rclpy, for every test (and inherited by
subprocesses the tests start).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)
# A domain of our own per test session (ids 150..199 are unused by the demo and scripts).
os.environ["ROS_DOMAIN_ID"] = os.environ.get("SAM3D_TEST_DOMAIN_ID", str(150 + os.getpid() % 50))
os.environ.setdefault("ROS_LOG_DIR", str(ROOT / "build" / "ros_log" / "tests"))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
Path(os.environ["ROS_LOG_DIR"]).mkdir(parents=True, exist_ok=True)
