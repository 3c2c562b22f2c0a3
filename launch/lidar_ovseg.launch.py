"""Start lidar_ovseg_node (and optionally RViz) with the standard ROS 2 launch system."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("lidar_ovseg_ros")
    args = [
        DeclareLaunchArgument("input_topic", default_value="/lidar/points"),
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([share, "config", "lidar_ovseg.yaml"])
        ),
        DeclareLaunchArgument("profile", default_value="tiny", description="tiny | full"),
        DeclareLaunchArgument("checkpoint", default_value="", description="ScaLR+ ckpt_last.pth"),
        DeclareLaunchArgument("vocabulary_file", default_value="nuscenes"),
        DeclareLaunchArgument("device", default_value="auto"),
        DeclareLaunchArgument("input_reliability", default_value="best_effort"),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        DeclareLaunchArgument("rviz", default_value="false"),
        DeclareLaunchArgument(
            "rviz_config", default_value=PathJoinSubstitution([share, "rviz", "lidar_ovseg.rviz"])
        ),
    ]
    node = Node(
        package="lidar_ovseg_ros",
        executable="lidar_ovseg_node",
        name="lidar_ovseg_node",
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "profile": LaunchConfiguration("profile"),
                "checkpoint": LaunchConfiguration("checkpoint"),
                "vocabulary_file": LaunchConfiguration("vocabulary_file"),
                "device": LaunchConfiguration("device"),
                "input_reliability": LaunchConfiguration("input_reliability"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        remappings=[("~/input/points", LaunchConfiguration("input_topic"))],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", LaunchConfiguration("rviz_config")],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="log",
    )
    return LaunchDescription([*args, node, rviz])
