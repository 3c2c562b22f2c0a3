"""Start camera_occupancy_node (and optionally RViz) with the standard ROS 2 launch system."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("lidar_ovseg_ros")
    args = [
        DeclareLaunchArgument("topic_prefix", default_value="/cameras"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "camera_occupancy.yaml"]),
        ),
        DeclareLaunchArgument("profile", default_value="tiny", description="tiny | full"),
        DeclareLaunchArgument("weights", default_value="", description="pop3d_weights.pth"),
        DeclareLaunchArgument("vocabulary_file", default_value="nuscenes"),
        DeclareLaunchArgument("calibration_file", default_value=""),
        DeclareLaunchArgument("device", default_value="cpu"),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        DeclareLaunchArgument("rviz", default_value="false"),
        DeclareLaunchArgument(
            "rviz_config",
            default_value=PathJoinSubstitution([share, "rviz", "camera_occupancy.rviz"]),
        ),
    ]
    node = Node(
        package="lidar_ovseg_ros",
        executable="camera_occupancy_node",
        name="camera_occupancy_node",
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "topic_prefix": LaunchConfiguration("topic_prefix"),
                "profile": LaunchConfiguration("profile"),
                "weights": LaunchConfiguration("weights"),
                "vocabulary_file": LaunchConfiguration("vocabulary_file"),
                "calibration_file": LaunchConfiguration("calibration_file"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
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
