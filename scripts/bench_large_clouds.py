"""Large best-effort PointCloud2 over DDS between two processes, with and without the profile.

    .venv/bin/python scripts/bench_large_clouds.py [--points 260000 1000000] [--count 8]

For each cloud size and each setting (middleware defaults, then config/dds/fastdds_large_clouds.xml
in both processes) a publisher process sends `count` best-effort clouds 0.3 s apart to a
subscriber process; printed: received / sent, messages the middleware reported lost, and the
transport latency (receive time - stamp) median / p95 of the received ones. Runs on a private
DDS domain, localhost only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "dds" / "fastdds_large_clouds.xml"
POINT_STEP = 32  # x y z intensity float32, ring uint16 + pad, time float64: a 128-beam layout


def _cloud(n: int):
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2()
    msg.header.frame_id = "lidar"
    msg.height, msg.width = 1, n
    msg.fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate(["x", "y", "z", "intensity"])
    ]
    msg.point_step, msg.row_step, msg.is_dense = POINT_STEP, POINT_STEP * n, True
    data = np.zeros((n, POINT_STEP), np.uint8)
    pts = np.random.default_rng(0).uniform(-50, 50, (n, 4)).astype(np.float32)
    data[:, :16] = pts.view(np.uint8).reshape(n, 16)
    msg.data = data.tobytes()
    return msg


def _publish(n: int, count: int) -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    rclpy.init()
    node = rclpy.create_node("bench_large_pub")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(type(_cloud(1)), "/bench/large", qos)
    msg = _cloud(n)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    for _ in range(count):
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        pub.publish(msg)
        time.sleep(0.3)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.try_shutdown()


def _subscribe(seconds: float) -> None:
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    rclpy.init()
    node = rclpy.create_node("bench_large_sub")
    latencies: list[float] = []
    lost = [0]

    def on_cloud(msg) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies.append((time.time_ns() - stamp) / 1e6)

    def on_lost(info) -> None:
        lost[0] += info.total_count_change

    events = SubscriptionEventCallbacks(message_lost=on_lost)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    node.create_subscription(type(_cloud(1)), "/bench/large", on_cloud, qos, event_callbacks=events)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps({"latencies_ms": latencies, "lost": lost[0]}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def _run(n: int, count: int, profile: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FASTRTPS_DEFAULT_PROFILES_FILE"}
    env.update(ROS_DOMAIN_ID=str(150 + os.getpid() % 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    if profile:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    me = [sys.executable, __file__]
    sub = subprocess.Popen(
        [*me, "--role", "sub", "--seconds", str(8 + 0.3 * count)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    subprocess.run([*me, "--role", "pub", "--points", str(n), "--count", str(count)], env=env)
    out, _ = sub.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["bench", "pub", "sub"], default="bench")
    parser.add_argument("--points", type=int, nargs="+", default=[260_000, 1_000_000])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.role == "pub":
        _publish(args.points[0], args.count)
        return 0
    if args.role == "sub":
        _subscribe(args.seconds)
        return 0
    print(
        f"{'points':>9} {'MB':>6} {'setting':>9} {'received':>9} {'lost':>5} {'median ms':>10} "
        f"{'p95 ms':>8}"
    )
    for n in args.points:
        for profile in (False, True):
            res = _run(n, args.count, profile)
            lat = np.asarray(res["latencies_ms"])
            med = f"{np.median(lat):.1f}" if lat.size else "-"
            p95 = f"{np.percentile(lat, 95):.1f}" if lat.size else "-"
            name = "profile" if profile else "defaults"
            print(
                f"{n:>9} {n * POINT_STEP / 1e6:>6.1f} {name:>9} {lat.size:>4}/{args.count:<4} "
                f"{res['lost']:>5} {med:>10} {p95:>8}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
