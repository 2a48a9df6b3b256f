"""Launch sam3d_node (lifecycle) with the params file and topic remappings.

    ros2 launch sam3d_ros sam3d.launch.py
    ros2 launch sam3d_ros sam3d.launch.py params_file:=/path/params.yaml \
        rgb_topic:=/cam/color/image_raw depth_topic:=/cam/depth/image_rect mask_topic:=/seg/labels \
        info_topic:=/cam/color/camera_info use_sim_time:=true autostart:=true

With autostart:=true (default) the node configures and activates itself; with false it
stays unconfigured for a lifecycle manager (nav2_lifecycle_manager, `ros2 lifecycle set`).
"""

from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare("sam3d_ros"), "config", "default.yaml"])
    args = [
        DeclareLaunchArgument("params_file", default_value=default_params, description="ROS params YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("autostart", default_value="true", description="configure+activate at start"),
        DeclareLaunchArgument("log_level", default_value="info"),
        DeclareLaunchArgument("rgb_topic", default_value="/camera/color/image_raw"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/aligned_depth_to_color/image_raw"),
        DeclareLaunchArgument("info_topic", default_value="/camera/color/camera_info"),
        DeclareLaunchArgument("mask_topic", default_value="/camera/instance_masks"),
    ]
    params = [
        LaunchConfiguration("params_file"),
        {
            "use_sim_time": LaunchConfiguration("use_sim_time"),
            "rgb_topic": LaunchConfiguration("rgb_topic"),
            "depth_topic": LaunchConfiguration("depth_topic"),
            "info_topic": LaunchConfiguration("info_topic"),
            "mask_topic": LaunchConfiguration("mask_topic"),
        },
    ]
    common = {
        "package": "sam3d_ros",
        "executable": "sam3d_node",
        "name": "sam3d_node",
        "namespace": LaunchConfiguration("namespace"),
        "output": "screen",
        "parameters": params,
    }
    ros_args = ["--log-level", LaunchConfiguration("log_level")]
    return LaunchDescription(
        [
            *args,
            LifecycleNode(
                **common,
                arguments=["--autostart", "--ros-args", *ros_args],
                condition=IfCondition(LaunchConfiguration("autostart")),
            ),
            LifecycleNode(
                **common,
                arguments=["--no-autostart", "--ros-args", *ros_args],
                condition=UnlessCondition(LaunchConfiguration("autostart")),
            ),
        ]
    )
