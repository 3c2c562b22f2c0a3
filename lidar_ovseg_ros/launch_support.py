"""What the launch files decide, kept out of them so it runs and is tested without `launch`.

The launch files (launch/*.launch.py) stay thin: they declare arguments and turn these plain
values into launch actions. Nothing here imports `launch`, `launch_ros` or rclpy.

- `dds_environment`: the middleware profiles for large clouds (config/dds/) the launch files put
  in the environment of every process they start, unless the user already set the variable.
- `missing_tools`: a clear error for an optional tool a launch argument asks for (RViz, ros2 bag)
  that is not installed, so the launch stops before starting anything instead of failing halfway.
- `player_command`: the bag player of replay.launch.py (`ros2 bag play` or this package's
  `lidar-ovseg replay`, which colcon installs in lib/lidar_ovseg_ros, not on PATH).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "lidar_ovseg_ros"

#: Environment variable -> profile shipped under the package's share folder.
DDS_PROFILES: dict[str, str] = {
    "FASTRTPS_DEFAULT_PROFILES_FILE": "config/dds/fastdds_large_clouds.xml",
    "CYCLONEDDS_URI": "config/dds/cyclonedds_large_clouds.xml",
}
DDS_PROFILE_CHOICES = ("auto", "none")

#: Optional tools: ament package -> what needs it and how to get it.
TOOLS: dict[str, str] = {
    "rviz2": (
        "rviz:=true needs RViz, which is not installed: `sudo apt install ros-$ROS_DISTRO-rviz2` "
        "(or `LIDAR_OVSEG_DESKTOP=1 rosdep install --from-paths src --ignore-src`), or launch "
        "with rviz:=false"
    ),
    "ros2bag": (
        "player:=rosbag2 needs `ros2 bag`, which is not installed: `sudo apt install "
        "ros-$ROS_DISTRO-ros2bag ros-$ROS_DISTRO-rosbag2-storage-mcap` (or "
        "`LIDAR_OVSEG_DESKTOP=1 rosdep install ...`), or use player:=lidar_ovseg"
    ),
}

PLAYERS = ("rosbag2", "lidar_ovseg")
BAG_LIDAR_TOPIC = "/lidar/points"
TRUE_WORDS = ("true", "1", "yes", "on")


def is_true(text: str) -> bool:
    """A launch argument's boolean value ('true', '1', 'yes', 'on'; any case)."""
    return text.strip().lower() in TRUE_WORDS


def dds_environment(
    share: str | os.PathLike[str],
    choice: str = "auto",
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The DDS profile variables to set: with 'auto', each variable the user has not set points
    at the shipped profile (Fast DDS reads FASTRTPS_DEFAULT_PROFILES_FILE, Cyclone DDS
    CYCLONEDDS_URI; each middleware ignores the other's); 'none' sets nothing."""
    if choice not in DDS_PROFILE_CHOICES:
        raise ValueError(f"dds_profile:={choice} is not one of {', '.join(DDS_PROFILE_CHOICES)}")
    if choice == "none":
        return {}
    env = os.environ if environ is None else environ
    out = {}
    for var, rel in DDS_PROFILES.items():
        if env.get(var):
            continue  # the user's own profile wins
        path = Path(share) / rel
        out[var] = path.as_uri() if var == "CYCLONEDDS_URI" else str(path)
    return out


def package_installed(package: str) -> bool:
    """Whether the ament index knows `package` (false without a ROS install)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return False
    try:
        get_package_prefix(package)
    except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset (no ROS sourced)
        return False
    return True


def missing_tools(
    packages: Iterable[str], installed: Callable[[str], bool] = package_installed
) -> list[str]:
    """One error message per requested tool package that is not installed."""
    return [TOOLS[p] for p in packages if not installed(p)]


@dataclass(frozen=True)
class PlayerCommand:
    """Either a `launch_ros` Node (package/executable/arguments: found in lib/<package> like
    `ros2 run` does) or a plain command line (`cmd`) for ExecuteProcess."""

    package: str = ""
    executable: str = ""
    arguments: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def player_command(
    player: str,
    bag: str,
    *,
    rate: str = "1.0",
    delay: str = "0.0",
    loop: bool = False,
    topic: str = BAG_LIDAR_TOPIC,
) -> PlayerCommand:
    """The bag player with `ros2 bag play`'s options (the bag's /clock drives use_sim_time)."""
    if player not in PLAYERS:
        raise ValueError(f"player:={player} is not one of {', '.join(PLAYERS)}")
    if not bag:
        raise ValueError("bag:= is required (a rosbag2 directory or .mcap / .db3 file)")
    options = [bag, "--clock", "--rate", rate, "--delay", delay]
    if loop:
        options.append("--loop")
    if topic != BAG_LIDAR_TOPIC:
        options += ["--remap", f"{BAG_LIDAR_TOPIC}:={topic}"]
    if player == "rosbag2":
        return PlayerCommand(cmd=["ros2", "bag", "play", *options])
    return PlayerCommand(package=PACKAGE, executable="lidar-ovseg", arguments=["replay", *options])
