"""`lidar-ovseg demo-bag`: a replayable rosbag2 bag made from the bundled real frames."""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo-bag",
        help="write a rosbag2 bag from the bundled nuScenes/KITTI frames",
        description="LiDAR sweep on /lidar/points, the cameras as CompressedImage + CameraInfo "
        "under /cameras/<NAME>/, and /tf_static, repeated at --rate-hz. Replay it with "
        "`ros2 bag play BAG --clock` or `lidar-ovseg replay BAG --clock`.",
    )
    p.add_argument("output", help="bag directory to create ('demo.mcap' writes demo/)")
    p.add_argument(
        "--frames", nargs="+", default=["nuscenes"], choices=["nuscenes", "kitti"], metavar="NAME"
    )
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--repeats", type=int, default=50, help="copies of the frame sequence")
    p.add_argument("--rate-hz", type=float, default=10.0, help="sweeps per second")
    p.add_argument("--no-cameras", action="store_true", help="only the LiDAR and /tf_static")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.bags import bag_output_path, write_demo_bag

    out = bag_output_path(args.output)
    info = write_demo_bag(
        out,
        args.frames,
        storage=args.storage,
        repeats=args.repeats,
        rate_hz=args.rate_hz,
        cameras=not args.no_cameras,
    )
    print(
        f"wrote {out}: {info.message_count} messages on {len(info.topics)} topics, "
        f"{info.duration_ns / 1e9:.2f} s"
    )
    return 0
