"""`lidar-ovseg replay`: publish a rosbag2 bag over DDS with rclpy (for hosts without rosbag2).

Only the argument parser lives here (no rclpy import, so `lidar-ovseg --help` stays fast); the
work is `lidar_ovseg_ros.bags.rclpy_tools.run_replay`. With a full ROS 2 install prefer
`ros2 bag play BAG --clock`, which also plays types this venv lacks (tf2_msgs).
"""

from __future__ import annotations

import argparse

RELIABILITY_CHOICES = ("best_effort", "reliable")


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the replay options (named like `ros2 bag play`'s) and the handler to `parser`."""
    parser.add_argument("bag", help="rosbag2 bag directory, or a .mcap / .db3 file")
    parser.add_argument("--rate", "-r", type=float, default=1.0, help="time scale (default 1.0)")
    parser.add_argument("--loop", "-l", action="store_true", help="replay until interrupted")
    parser.add_argument("--clock", action="store_true", help="publish /clock with the bag time")
    parser.add_argument("--clock-hz", type=float, default=40.0, help="/clock rate between messages")
    parser.add_argument("--start-offset", type=float, default=0.0, help="skip the first S seconds")
    parser.add_argument("--topics", nargs="+", default=None, help="only these topics")
    parser.add_argument(
        "--remap", "-m", nargs="+", default=[], metavar="OLD:=NEW", help="rename topics"
    )
    parser.add_argument("--qos-reliability", choices=RELIABILITY_CHOICES, default="reliable")
    parser.add_argument(
        "--wait-for-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="start once the played topics have N subscriptions in total",
    )
    parser.add_argument("--wait-timeout", type=float, default=30.0, help="give up waiting after S")
    parser.add_argument("--delay", "-d", type=float, default=0.0, help="pause S before playing")
    parser.set_defaults(handler=run)
    return parser


def register(subparsers) -> argparse.ArgumentParser:
    return configure(
        subparsers.add_parser(
            "replay",
            help="publish a rosbag2 bag with its timing (no ros2 bag needed)",
            description="Publish every message of a rosbag2 bag (MCAP or sqlite3) with its "
            "recorded timing, like `ros2 bag play`. SIGINT/SIGTERM end it cleanly.",
        )
    )


def run(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.bags.rclpy_tools import run_replay

    return run_replay(args)
