#!/usr/bin/env python3
"""RSS of lidar_ovseg_node under a stream of malformed clouds (issue 9.6), over real DDS.

The node (tiny profile) and a publisher run in this process on an isolated DDS domain, so the
node's resident memory is this process's. Malformed clouds of random layouts and sizes (truncated
data, missing or duplicated fields, bogus datatypes and point steps, random bytes, absurd widths,
all-NaN points) go through the real subscription, PointCloud2 decode and the node's rejection
path; every `--every` clouds one valid nuScenes scan is labeled, and RSS is printed. Passes repeat
the same stream: RSS should stay flat after the first.

    python scripts/bench_hostile_rss.py --clouds 10000 --passes 2
    python scripts/bench_hostile_rss.py --no-allocator-tuning   # the figure without the fix
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
import threading
import time

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def malformed(rng: np.random.Generator, i: int):
    """One hostile PointCloud2 of kind i % 8 with random sizes. Kinds 0-6 are malformed and
    rejected; kind 7 has a valid x, y, z, intensity layout filled with random bytes (NaN, inf,
    1e38, denormals...), so it is decoded and labeled."""
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2()
    msg.header.frame_id = "lidar"
    msg.header.stamp.sec = 1000 + i
    n = int(rng.integers(1, 30_000))
    names = ["x", "y", "z", "intensity"]
    kind = i % 8
    step = 16
    if kind == 3:  # random field names and datatypes
        names = [f"f{rng.integers(0, 1 << 30)}" for _ in range(int(rng.integers(1, 6)))]
    msg.fields = [
        PointField(
            name=name,
            offset=4 * j,
            datatype=int(rng.integers(1, 9)) if kind == 3 else PointField.FLOAT32,
            count=1,
        )
        for j, name in enumerate(names)
    ]
    if kind == 1:  # no x, y, z
        msg.fields = msg.fields[3:]
    if kind == 2:  # point step smaller than the fields
        step = int(rng.integers(1, 12))
    if kind == 4:  # duplicate field
        msg.fields = [*msg.fields, msg.fields[0]]
    msg.height, msg.width = 1, n
    msg.point_step = step
    msg.row_step = step * n
    size = step * n
    if kind == 0:  # truncated
        size -= int(rng.integers(1, step * 4 + 1))
    if kind == 5:  # absurd width, little data
        msg.width = int(rng.integers(1 << 20, 1 << 30))
        msg.row_step = step * msg.width
    if kind == 6:  # row_step inconsistent
        msg.row_step = step * n + int(rng.integers(1, 100))
    msg.data = rng.integers(0, 256, max(0, size), dtype=np.uint8).tobytes()
    return msg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clouds", type=int, default=10_000, help="malformed clouds per pass")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--every", type=int, default=1000, help="report (and label a scan) every")
    ap.add_argument(
        "--no-allocator-tuning",
        action="store_true",
        help="disable the node's allocator settings and trims (LIDAR_OVSEG_MALLOC_TUNING=0)",
    )
    args = ap.parse_args()

    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="bench_rss_log_"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.no_allocator_tuning:
        os.environ["LIDAR_OVSEG_MALLOC_TUNING"] = "0"

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from lidar_ovseg_ros.frames import load_nuscenes_frame
    from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarOvsegNode
    from lidar_ovseg_ros.pointcloud import arrays_to_msg

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    executor = MultiThreadedExecutor(num_threads=4, context=ctx)
    cache = tempfile.mkdtemp(prefix="bench_rss_cache_")
    node = LidarOvsegNode(
        context=ctx,
        cli_args=["--ros-args", "-r", "~/input/points:=/bench/points"],
        parameter_overrides=[
            Parameter("profile", value="tiny"),
            Parameter("cache_dir", value=cache),
            Parameter("images_per_class", value=1),
            Parameter("vocabulary_file", value="nuscenes"),
            Parameter("input_reliability", value="reliable"),
            Parameter("publish_markers", value=False),
        ],
    )
    probe = Node("bench_probe", context=ctx)
    outputs = []
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    probe.create_subscription(
        PointCloud2, "/lidar_ovseg_node/output/points", lambda m: outputs.append(m.width), reliable
    )
    pub = probe.create_publisher(PointCloud2, "/bench/points", reliable)
    executor.add_node(node)
    executor.add_node(probe)

    def spin() -> None:
        with contextlib.suppress(ExternalShutdownException, KeyboardInterrupt):
            executor.spin()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()

    def wait(pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.01)
        return False

    wait(lambda: node.switcher.status().active is not None, 600)
    wait(lambda: pub.get_subscription_count() > 0, 10)
    pts = load_nuscenes_frame().points
    valid = arrays_to_msg(None, {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "i": pts[:, 3]})
    pub.publish(valid)
    wait(lambda: len(outputs) >= 1, 60)
    start_rss = _rss_mb()
    print(
        f"# allocator tuning {'off' if args.no_allocator_tuning else 'on'}; RSS after start-up "
        f"and one labeled scan: {start_rss:.0f} MB",
        flush=True,
    )
    print(f"{'pass':>4} {'clouds':>7} {'RSS MB':>8} {'malformed':>10} {'labeled':>8}", flush=True)
    total = 0
    for p in range(args.passes):
        rng = np.random.default_rng(0)  # the same stream every pass
        for i in range(args.clouds):
            pub.publish(malformed(rng, i))
            total += 1
            # Every cloud through the decode path: wait until the node has taken it.
            wait(lambda t=total: node.counters["received"] >= t, 5)
            node.worker.wait_idle(5)
            if (i + 1) % args.every == 0:
                before = len(outputs)
                pub.publish(valid)
                wait(lambda b=before: len(outputs) > b, 60)
                c = node.counters
                print(
                    f"{p + 1:4d} {i + 1:7d} {_rss_mb():8.0f} {c['rejected_malformed']:10d} "
                    f"{c['processed']:8d}",
                    flush=True,
                )
    end_rss = _rss_mb()
    print(
        f"# RSS {start_rss:.0f} -> {end_rss:.0f} MB ({100 * (end_rss / start_rss - 1):+.0f}%) "
        f"over {total} malformed clouds; received {node.counters['received']}, "
        f"worker errors {node.worker.failed}",
        flush=True,
    )
    node.shutdown()
    executor.shutdown(timeout_sec=2.0)
    rclpy.shutdown(context=ctx)
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
