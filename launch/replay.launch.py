"""Replay a bag into the LiDAR open-vocabulary pipeline, on simulated time.

    ros2 launch lidar_ovseg_ros replay.launch.py bag:=/path/to/bag rate:=0.5 loop:=true

`ros2 bag play --clock` drives /clock and lidar_ovseg.launch.py runs with use_sim_time:=true, so
the nodes see the bag's time. On machines without rosbag2, player:=lidar_ovseg uses this package's
`lidar-ovseg replay` (same options, rclpy only). The bag's /lidar/points can be remapped with
input_topic:=... (the pipeline subscribes to the same name).
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

BAG_LIDAR_TOPIC = "/lidar/points"


def _player(context, *args, **kwargs):
    """The player command, assembled once the arguments are known (--loop is a flag)."""
    bag = LaunchConfiguration("bag").perform(context)
    rate = LaunchConfiguration("rate").perform(context)
    delay = LaunchConfiguration("delay").perform(context)
    loop = LaunchConfiguration("loop").perform(context).lower() in ("true", "1", "yes")
    topic = LaunchConfiguration("input_topic").perform(context)
    player = LaunchConfiguration("player").perform(context)
    if player == "rosbag2":
        cmd = ["ros2", "bag", "play", bag, "--clock", "--rate", rate, "--delay", delay]
    elif player == "lidar_ovseg":
        cmd = ["lidar-ovseg", "replay", bag, "--clock", "--rate", rate, "--delay", delay]
    else:
        raise RuntimeError(f"player:={player} is not one of 'rosbag2', 'lidar_ovseg'")
    if loop:
        cmd.append("--loop")
    if topic != BAG_LIDAR_TOPIC:
        cmd += ["--remap", f"{BAG_LIDAR_TOPIC}:={topic}"]
    return [ExecuteProcess(cmd=cmd, output="screen")]


def generate_launch_description():
    pipeline = PathJoinSubstitution(
        [FindPackageShare("lidar_ovseg_ros"), "launch", "lidar_ovseg.launch.py"]
    )
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
            OpaqueFunction(function=_player),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(pipeline),
                launch_arguments={
                    "use_sim_time": "true",
                    "input_topic": LaunchConfiguration("input_topic"),
                }.items(),
            ),
        ]
    )
