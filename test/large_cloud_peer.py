"""A separate process that publishes a 260k-point (8.3 MB) cloud best-effort, as a 128-beam
driver would. Run by test_large_clouds.py with or without the DDS profile in its environment
(Fast DDS reads the profile once per process, so the test cannot switch it in its own process).

    python test/large_cloud_peer.py TOPIC COUNT [--until-labeled NODE_OUTPUT_TOPIC]

With --until-labeled it publishes one cloud at a time (up to COUNT), waiting up to 60 s for the
node's labeled output after each (so no second cloud is in flight), prints
`labeled <width> <fields>` and exits 0; else exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField

POINTS = 260_000
POINT_STEP = 32  # x y z intensity (float32), ring (uint16), pad, time (float64): 8.3 MB


def large_cloud(n: int = POINTS) -> PointCloud2:
    rng = np.random.default_rng(7)
    dtype = np.dtype(
        {
            "names": ["x", "y", "z", "intensity", "ring", "time"],
            "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f8"],
            "offsets": [0, 4, 8, 12, 16, 24],
            "itemsize": POINT_STEP,
        }
    )
    pts = np.zeros(n, dtype)
    radius = rng.uniform(2.0, 60.0, n)
    angle = rng.uniform(-np.pi, np.pi, n)
    pts["x"], pts["y"] = radius * np.cos(angle), radius * np.sin(angle)
    pts["z"] = rng.uniform(-2.0, 3.0, n)
    pts["intensity"] = rng.uniform(0, 255, n)
    pts["ring"] = rng.integers(0, 128, n)
    pts["time"] = np.linspace(0.0, 0.1, n)
    msg = PointCloud2()
    msg.header.frame_id = "lidar"
    msg.height, msg.width = 1, n
    kinds = [PointField.FLOAT32] * 4 + [PointField.UINT16, PointField.FLOAT64]
    msg.fields = [
        PointField(name=name, offset=dtype.fields[name][1], datatype=kind, count=1)
        for name, kind in zip(dtype.names, kinds, strict=True)
    ]
    msg.point_step, msg.row_step, msg.is_dense = POINT_STEP, POINT_STEP * n, True
    msg.data = pts.tobytes()
    return msg


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("topic")
    parser.add_argument("count", type=int)
    parser.add_argument("--until-labeled", default="")
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("large_cloud_peer")
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(PointCloud2, args.topic, best_effort)
    labeled: list[PointCloud2] = []
    if args.until_labeled:
        reliable = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(PointCloud2, args.until_labeled, labeled.append, reliable)
    msg = large_cloud()
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    code = 0 if not args.until_labeled else 1
    for i in range(args.count):
        msg.header.stamp.sec = 1000 + i
        pub.publish(msg)
        end = time.monotonic() + (60.0 if args.until_labeled else 1.0)
        while time.monotonic() < end and not labeled:
            rclpy.spin_once(node, timeout_sec=0.05)
        if labeled:
            out = labeled[0]
            print("labeled", out.width * out.height, ",".join(f.name for f in out.fields))
            code = 0
            break
    print(f"published {i + 1} clouds of {len(msg.data) / 1e6:.1f} MB", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
