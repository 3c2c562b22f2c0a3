"""Start camera_ssc_node (VLScene stereo scene completion; optionally RViz) with the standard ROS 2
launch system.

Every process started here gets the DDS profile of config/dds/ (dds_profile:=none, or your own
FASTRTPS_DEFAULT_PROFILES_FILE / CYCLONEDDS_URI, overrides it). When the node or RViz exits, the
whole launch shuts down; a missing RViz is named before anything starts.
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
            get_logger("camera_ssc.launch").error(problem)
        return [Shutdown(reason=problems[0])]
    share = FindPackageShare("lidar_ovseg_ros").perform(context)
    env = dds_environment(share, LaunchConfiguration("dds_profile").perform(context))
    actions = [SetEnvironmentVariable(name, value) for name, value in env.items()]
    actions.append(
        Node(
            package="lidar_ovseg_ros",
            executable="camera_ssc_node",
            name="camera_ssc_node",
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
                    "autostart": LaunchConfiguration("autostart"),
                },
            ],
            on_exit=Shutdown(reason="camera_ssc_node exited"),
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
        DeclareLaunchArgument(
            "topic_prefix",
            default_value="/stereo",
            description="<prefix>/{left,right}/image_raw[/compressed] and camera_info",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "camera_ssc.yaml"]),
        ),
        DeclareLaunchArgument("profile", default_value="tiny", description="tiny | full"),
        DeclareLaunchArgument(
            "weights", default_value="", description="the official VLScene checkpoint"
        ),
        DeclareLaunchArgument("vocabulary_file", default_value="semantickitti"),
        DeclareLaunchArgument("calibration_file", default_value=""),
        DeclareLaunchArgument("device", default_value="cpu"),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        DeclareLaunchArgument("rviz", default_value="false"),
        DeclareLaunchArgument(
            "rviz_config",
            default_value=PathJoinSubstitution([share, "rviz", "camera_ssc.rviz"]),
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
