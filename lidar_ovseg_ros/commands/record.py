"""`lidar-ovseg record`: record topics into an MCAP (or sqlite3) rosbag2 bag with rclpy.

Only the argument parser lives here (no rclpy import); the work is
`lidar_ovseg_ros.bags.rclpy_tools.run_record`. With a full ROS 2 install `ros2 bag record` does the
same.
"""

from __future__ import annotations

import argparse

STORAGE_CHOICES = ("mcap", "sqlite3")


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the record options and the handler to `parser`."""
    parser.add_argument("output", help="bag to create ('run.mcap' writes the directory run/)")
    parser.add_argument("--topics", nargs="+", required=True, help="topics to record")
    parser.add_argument(
        "--type",
        nargs="+",
        default=[],
        metavar="TOPIC:=TYPE",
        dest="types",
        help="message type of a topic, e.g. /a:=sensor_msgs/msg/PointCloud2 (else from the graph)",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    parser.add_argument("--storage", choices=STORAGE_CHOICES, default="mcap")
    parser.set_defaults(handler=run)
    return parser


def register(subparsers) -> argparse.ArgumentParser:
    return configure(
        subparsers.add_parser(
            "record",
            help="record topics into a rosbag2 bag (no ros2 bag needed)",
            description="Subscribe to the topics (types from the ROS graph unless given) and "
            "write every message with its receive time. Stops after --duration or on "
            "SIGINT/SIGTERM, always closing the bag so it is readable.",
        )
    )


def run(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.bags.rclpy_tools import run_record

    return run_record(args)
