"""Test set-up: ROS 2 discovery stays on this machine, logs stay in the build tree.

These variables are set before anything imports rclpy, for every test (and inherited by
subprocesses the tests start).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)
# A domain of our own per test session (ids 150..199 are unused by the demo and scripts).
os.environ["ROS_DOMAIN_ID"] = os.environ.get("SAM3D_TEST_DOMAIN_ID", str(150 + os.getpid() % 50))
os.environ.setdefault("ROS_LOG_DIR", str(ROOT / "build" / "ros_log" / "tests"))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
Path(os.environ["ROS_LOG_DIR"]).mkdir(parents=True, exist_ok=True)
# The shipped DDS profile for large images on one host (config/fastdds_shm.xml), in every
# participant of the tests and of the processes they start (Fast DDS 3, as in Kilted).
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_shm.xml"))


@pytest.fixture
def harness() -> Iterator[Any]:
    """A started :class:`ros_helpers.Harness` (own rclpy Context and executor), closed after
    the test (rclpy is imported only by tests that use it)."""
    from ros_helpers import Harness

    h = Harness()
    h.start()
    yield h
    h.close()


@pytest.fixture(scope="session")
def mm() -> Any:
    """The ``moveit_msgs.msg`` stand-in built from test/moveit_msgs_stub (once per source
    change); tests that need it are skipped when it cannot be built."""
    from moveit_stub import StubUnavailableError, activate_stub, build_stub

    try:
        install = build_stub()
    except StubUnavailableError as err:
        pytest.skip(f"cannot build the moveit_msgs stand-in: {err}")
    activate_stub(install)
    import moveit_msgs.msg

    return moveit_msgs.msg


@pytest.fixture
def ycb() -> None:
    """Skips a test that needs the YCB meshes: to read them, or because its expected numbers
    hold for the generated scenes drawn with them (the generator draws other objects without)."""
    from sam3d_ros.sim.mesh_sources import ycb_dir

    if ycb_dir() is None:
        pytest.skip("YCB meshes not found (../shared/data/ycb_dev or $SAM3D_YCB_DIR)")
