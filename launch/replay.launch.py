"""Replay a bag into the LiDAR open-vocabulary pipeline, on simulated time.

    ros2 launch lidar_ovseg_ros replay.launch.py bag:=/path/to/bag rate:=0.5 loop:=true

`ros2 bag play --clock` drives /clock and lidar_ovseg.launch.py runs with use_sim_time:=true, so
the nodes see the bag's time. On machines without rosbag2, player:=lidar_ovseg uses this package's
`lidar-ovseg replay` (same options, rclpy only; colcon installs it in lib/lidar_ovseg_ros, where
launch_ros finds it like `ros2 run`). The bag's /lidar/points can be remapped with
input_topic:=... (the pipeline subscribes to the same name). When the player exits (the bag has
been played, without loop:=true), the whole launch ends.
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
    SetEnvironmentVariable,
    Shutdown,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from lidar_ovseg_ros.launch_support import (
    BAG_LIDAR_TOPIC,
    dds_environment,
    is_true,
    missing_tools,
    player_command,
)


def _launch(context, *args, **kwargs):
    """The player and the pipeline, once the arguments are known; nothing starts if the player
    is missing."""
    player = LaunchConfiguration("player").perform(context)
    problems = missing_tools(["ros2bag"] if player == "rosbag2" else [])
    if problems:
        get_logger("replay.launch").error(problems[0])
        return [Shutdown(reason=problems[0])]
    command = player_command(
        player,
        LaunchConfiguration("bag").perform(context),
        rate=LaunchConfiguration("rate").perform(context),
        delay=LaunchConfiguration("delay").perform(context),
        loop=is_true(LaunchConfiguration("loop").perform(context)),
        topic=LaunchConfiguration("input_topic").perform(context),
    )
    share = FindPackageShare("lidar_ovseg_ros").perform(context)
    env = dds_environment(share, LaunchConfiguration("dds_profile").perform(context))
    actions = [SetEnvironmentVariable(name, value) for name, value in env.items()]
    done = Shutdown(reason="the bag player exited")
    if command.cmd:
        actions.append(ExecuteProcess(cmd=command.cmd, output="screen", on_exit=done))
    else:
        actions.append(
            Node(
                package=command.package,
                executable=command.executable,
                arguments=command.arguments,
                output="screen",
                on_exit=done,
            )
        )
    pipeline = PathJoinSubstitution(
        [FindPackageShare("lidar_ovseg_ros"), "launch", "lidar_ovseg.launch.py"]
    )
    actions.append(
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(pipeline),
            launch_arguments={
                "use_sim_time": "true",
                "input_topic": LaunchConfiguration("input_topic"),
                "dds_profile": LaunchConfiguration("dds_profile"),
            }.items(),
        )
    )
    return actions


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="rosbag2 bag directory or .mcap file"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
            DeclareLaunchArgument("loop", default_value="false", description="replay forever"),
            DeclareLaunchArgument(
                "delay",
                default_value="2.0",
                description="seconds before playback, so the pipeline is subscribed",
            ),
            DeclareLaunchArgument(
                "input_topic",
                default_value=BAG_LIDAR_TOPIC,
                description="PointCloud2 topic the pipeline reads (the bag's is remapped to it)",
            ),
            DeclareLaunchArgument(
                "player",
                default_value="rosbag2",
                description="'rosbag2' (ros2 bag play) or 'lidar_ovseg' (lidar-ovseg replay)",
            ),
            DeclareLaunchArgument(
                "dds_profile",
                default_value="auto",
                description="auto: the large-cloud DDS profiles of config/dds/; none: as it is",
            ),
            OpaqueFunction(function=_launch),
        ]
    )
