"""Launch sam3d_node (lifecycle) with the params file and topic remappings.

    ros2 launch sam3d_ros sam3d.launch.py
    ros2 launch sam3d_ros sam3d.launch.py params_file:=/path/params.yaml \
        rgb_topic:=/cam/color/image_raw depth_topic:=/cam/depth/image_rect mask_topic:=/seg/labels \
        info_topic:=/cam/color/camera_info use_sim_time:=true autostart:=true \
        input_reliability:=reliable dds_profile:=shm

The params file is applied first; an override argument (the topics, use_sim_time,
input_reliability) replaces the file's value only when it is given on the command line, so
a params file can set every parameter. With autostart:=true (default) the node configures
and activates itself; with false it stays unconfigured for a lifecycle manager
(nav2_lifecycle_manager, `ros2 lifecycle set`). dds_profile:=shm starts the node with the
shipped Fast DDS profile for large images on one host (config/fastdds_shm.xml; give the
publishers the same profile), dds_profile:=/path/profile.xml with another one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

#: Arguments that override the params file only when given ("" = not given).
OVERRIDE_ARGS: dict[str, str] = {
    "rgb_topic": "colour image topic (default: the params file's rgb_topic)",
    "depth_topic": "aligned depth topic (default: the params file's depth_topic)",
    "info_topic": "CameraInfo topic (default: the params file's info_topic)",
    "mask_topic": "instance mask topic (default: the params file's mask_topic)",
    "use_sim_time": "true: use /clock (bag replay) (default: the params file's, else false)",
    "input_reliability": "best_effort or reliable (default: the params file's input_reliability)",
}
#: The shipped Fast DDS profile (dds_profile:=shm), relative to the package share.
SHM_PROFILE = ("config", "fastdds_shm.xml")
#: Environment variables Fast DDS 2.x / 3.x read the default XML profile from.
DDS_PROFILE_ENV = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def node_parameters(params_file: str, given: dict[str, str]) -> list[Any]:
    """The ``parameters`` of the node: the params file, then only the overrides given.

    Args:
        params_file: path of the ROS params YAML.
        given: override argument -> its value ("" = not given on the command line).
    """
    overrides = {name: value for name, value in given.items() if value != ""}
    return [params_file, overrides] if overrides else [params_file]


def dds_environment(profile: str, share_dir: str) -> dict[str, str]:
    """The node's extra environment for ``dds_profile`` ("" none, "shm" the shipped one,
    else a path to a Fast DDS XML profile)."""
    if profile == "":
        return {}
    path = str(Path(share_dir, *SHM_PROFILE)) if profile == "shm" else profile
    return dict.fromkeys(DDS_PROFILE_ENV, path)


def _launch_setup(context: Any) -> list[Any]:
    def arg(name: str) -> str:
        return str(LaunchConfiguration(name).perform(context))

    share = str(FindPackageShare("sam3d_ros").perform(context))
    params_file = arg("params_file") or str(Path(share, "config", "default.yaml"))
    autostart = arg("autostart").strip().lower() in ("true", "1", "yes", "on")
    return [
        LifecycleNode(
            package="sam3d_ros",
            executable="sam3d_node",
            name="sam3d_node",
            namespace=arg("namespace"),
            output="screen",
            parameters=node_parameters(params_file, {name: arg(name) for name in OVERRIDE_ARGS}),
            arguments=[
                "--autostart" if autostart else "--no-autostart",
                "--ros-args",
                "--log-level",
                arg("log_level"),
            ],
            additional_env=dds_environment(arg("dds_profile"), share),
        )
    ]


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument(
            "params_file", default_value="", description="ROS params YAML (default: config/default.yaml)"
        ),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("autostart", default_value="true", description="configure+activate at start"),
        DeclareLaunchArgument("log_level", default_value="info"),
        DeclareLaunchArgument(
            "dds_profile",
            default_value="",
            description="Fast DDS XML profile of the node: '' none, 'shm' config/fastdds_shm.xml, or a path",
        ),
        *(
            DeclareLaunchArgument(name, default_value="", description=desc)
            for name, desc in OVERRIDE_ARGS.items()
        ),
    ]
    return LaunchDescription([*args, OpaqueFunction(function=_launch_setup)])
