"""Start lidar_ovseg_node (and optionally RViz) with the standard ROS 2 launch system.

    ros2 launch lidar_ovseg_ros lidar_ovseg.launch.py input_topic:=/velodyne_points rviz:=true

Every process started here gets the large-cloud DDS profile of config/dds/ (dds_profile:=none,
or your own FASTRTPS_DEFAULT_PROFILES_FILE / CYCLONEDDS_URI, overrides it). When the node or RViz
exits, the whole launch shuts down; a missing RViz is named before anything starts.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from lidar_ovseg_ros.launch_support import dds_environment, is_true, missing_tools


def _launch(context, *args, **kwargs):
    """Checks first (nothing starts if a requested tool is missing), then the processes."""
    rviz = is_true(LaunchConfiguration("rviz").perform(context))
    problems = missing_tools(["rviz2"] if rviz else [])
    if problems:
        for problem in problems:
            get_logger("lidar_ovseg.launch").error(problem)
        return [Shutdown(reason=problems[0])]
    share = FindPackageShare("lidar_ovseg_ros").perform(context)
    env = dds_environment(share, LaunchConfiguration("dds_profile").perform(context))
    actions = [SetEnvironmentVariable(name, value) for name, value in env.items()]
    actions.append(
        Node(
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
                    "autostart": LaunchConfiguration("autostart"),
                },
            ],
            remappings=[("~/input/points", LaunchConfiguration("input_topic"))],
            on_exit=Shutdown(reason="lidar_ovseg_node exited"),
        )
    )
    if rviz:
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", LaunchConfiguration("rviz_config")],
                parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
                output="log",
                on_exit=Shutdown(reason="rviz2 exited"),
            )
        )
    return actions


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
        DeclareLaunchArgument(
            "autostart",
            default_value="true",
            description="false: the (lifecycle) node waits for `ros2 lifecycle set <node> "
            "configure` and `activate`",
        ),
        DeclareLaunchArgument(
            "dds_profile",
            default_value="auto",
            description="auto: the large-cloud DDS profiles of config/dds/ unless "
            "FASTRTPS_DEFAULT_PROFILES_FILE / CYCLONEDDS_URI are set; none: leave DDS as it is",
        ),
    ]
    return LaunchDescription([*args, OpaqueFunction(function=_launch)])
