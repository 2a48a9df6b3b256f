"""launch/sam3d.launch.py: a params file sets every parameter; launch arguments override it
only when given, so ``ros2 launch`` and ``python -m sam3d_ros.ros.node`` give the node the
same parameters from the same file.

The plain-Python check evaluates the launch file with the stand-in of test/launch_stub.py and
always runs; the same check with the real ``launch``/``launch_ros`` runs where they are
importable. In both, the parameters are those rcl gives a real Sam3dNode for the ordered
``--params-file`` arguments.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import rclpy
from launch_stub import launched_nodes, load_launch_file, parameter_files
from rclpy.context import Context

from sam3d_ros.ros.node import Sam3dNode

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "sam3d.launch.py"

MY_PARAMS = """\
sam3d_node:
  ros__parameters:
    use_sim_time: true
    depth_topic: /from_params/depth
    rgb_topic: /from_params/rgb
    sync_slop: 0.02
"""


def node_parameters(ros_args: list[str]) -> dict[str, Any]:
    """The parameters a Sam3dNode gets from these ROS arguments (as ``main`` passes them)."""
    context = Context()
    rclpy.init(args=["sam3d_node", "--ros-args", *ros_args], context=context)
    try:
        node = Sam3dNode(context=context)
        try:
            values = node.current_parameters()
            values["use_sim_time"] = node.get_parameter("use_sim_time").value
            return values
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def stub_launch_parameters(cli: dict[str, str], tmp_path: Path) -> tuple[dict[str, Any], list[Any]]:
    nodes, context = launched_nodes(load_launch_file(LAUNCH_FILE), cli, ROOT)
    assert len(nodes) == 1, "exactly one node per autostart value"
    files = parameter_files(nodes[0], context, tmp_path)
    return node_parameters([a for f in files for a in ("--params-file", f)]), nodes


@pytest.fixture
def my_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "my.yaml"
    path.write_text(MY_PARAMS)
    return path


def test_params_file_sets_the_topics_as_with_python_m(my_yaml: Path, tmp_path: Path) -> None:
    launched, _ = stub_launch_parameters({"params_file": str(my_yaml)}, tmp_path)
    direct = node_parameters(["--params-file", str(my_yaml)])
    assert direct["depth_topic"] == "/from_params/depth" and direct["use_sim_time"] is True
    assert launched == direct


def test_given_arguments_override_the_params_file(my_yaml: Path, tmp_path: Path) -> None:
    cli = {"params_file": str(my_yaml), "rgb_topic": "/cam/color/image_raw", "use_sim_time": "false"}
    launched, _ = stub_launch_parameters(cli, tmp_path)
    direct = node_parameters(
        ["--params-file", str(my_yaml), "-p", "rgb_topic:=/cam/color/image_raw", "-p", "use_sim_time:=false"]
    )
    assert launched["rgb_topic"] == "/cam/color/image_raw" and launched["depth_topic"] == "/from_params/depth"
    assert launched["use_sim_time"] is False
    assert launched == direct


def test_defaults_and_autostart(tmp_path: Path) -> None:
    launched, nodes = stub_launch_parameters({}, tmp_path)
    assert launched == node_parameters(["--params-file", str(ROOT / "config" / "default.yaml")])
    assert "--autostart" in nodes[0].kwargs["arguments"]
    _, nodes = stub_launch_parameters({"autostart": "false"}, tmp_path)
    assert "--no-autostart" in nodes[0].kwargs["arguments"]


def test_dds_profile_argument(tmp_path: Path) -> None:
    _, nodes = stub_launch_parameters({}, tmp_path)
    assert not nodes[0].kwargs.get("additional_env")
    _, nodes = stub_launch_parameters({"dds_profile": "shm"}, tmp_path)
    env = nodes[0].kwargs["additional_env"]
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(ROOT / "config" / "fastdds_shm.xml")
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).is_file()


def _real_launch_available() -> bool:
    if importlib.util.find_spec("launch_ros") is None:
        return False
    import launch

    return hasattr(launch, "LaunchDescription")  # not the repository's launch/ directory


@pytest.mark.skipif(not _real_launch_available(), reason="launch and launch_ros are not importable here")
def test_real_launch_passes_the_params_file_first(my_yaml: Path) -> None:
    import runpy

    from launch_ros.actions import Node as LaunchNode

    from launch import LaunchContext

    ld = runpy.run_path(str(LAUNCH_FILE))["generate_launch_description"]()
    context = LaunchContext()
    context.launch_configurations["params_file"] = str(my_yaml)
    pending, nodes = list(ld.entities), []
    while pending:
        entity = pending.pop(0)
        if isinstance(entity, LaunchNode):
            if entity.condition is None or entity.condition.evaluate(context):
                nodes.append(entity)
            continue
        pending[:0] = entity.visit(context) or []
    assert len(nodes) == 1
    nodes[0]._perform_substitutions(context)
    expanded = nodes[0]._Node__expanded_parameter_arguments
    ros_args = [
        a for path, is_file in expanded for a in (("--params-file", path) if is_file else ("-p", path))
    ]
    assert node_parameters(ros_args) == node_parameters(["--params-file", str(my_yaml)])
