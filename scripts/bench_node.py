"""End-to-end latency and rate of lidar_ovseg_node over real DDS, on the bundled real frames.

The node runs as its own process (as `ros2 run` starts it). Two measurements:
- latency: publish one cloud, wait for its labeled cloud, repeat (publish -> receive, ms);
- rate: publish at `--hz` for `--seconds`; labeled clouds per second and how many were dropped.

    .venv/bin/python scripts/bench_node.py [--frame nuscenes|kitti] [--profile tiny|full]
        [--checkpoint ckpt_last.pth] [--device cuda] [--n 20] [--hz 10] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frame", default="nuscenes", choices=["nuscenes", "kitti"])
    ap.add_argument("--profile", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--checkpoint", default="")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=20, help="sequential frames for latency")
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="bench_node_log_"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    from lidar_ovseg_ros.frames import load_frame
    from lidar_ovseg_ros.pointcloud import arrays_to_msg

    frame = load_frame(args.frame)
    sensor = "nuscenes" if args.frame == "nuscenes" else "semantickitti"
    cmd = [
        sys.executable,
        "-m",
        "lidar_ovseg_ros.nodes.lidar_ovseg_node",
        "--ros-args",
        "-p",
        f"profile:={args.profile}",
        "-p",
        f"sensor:={sensor}",
        "-p",
        f"vocabulary_file:={sensor}",
        "-p",
        f"device:={args.device}",
        "-p",
        "input_reliability:=reliable",
        "-r",
        "~/input/points:=/bench/points",
    ]
    if args.checkpoint:
        cmd += ["-p", f"checkpoint:={args.checkpoint}"]
    node_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    rclpy.init()
    node = rclpy.create_node("bench_probe")
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    received: dict[tuple[int, int], float] = {}
    state: dict[str, str] = {}
    lock = threading.Lock()

    def on_out(msg: PointCloud2) -> None:
        with lock:
            received[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.perf_counter()

    node.create_subscription(PointCloud2, "/lidar_ovseg_node/output/points", on_out, rel)
    node.create_subscription(
        String, "/lidar_ovseg_node/output/vocabulary", lambda m: state.update(v=m.data), latched
    )
    pub = node.create_publisher(PointCloud2, "/bench/points", rel)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    fields = dict(zip(frame.fields, frame.points.T, strict=True))

    def cloud(sec: int, nsec: int) -> PointCloud2:
        msg = arrays_to_msg(None, fields)
        msg.header.frame_id = frame.frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nsec
        return msg

    try:
        deadline = time.time() + 900
        while '"state": "active"' not in state.get("v", "") and time.time() < deadline:
            if node_proc.poll() is not None:
                raise RuntimeError("the node exited during start-up")
            time.sleep(0.2)
        while pub.get_subscription_count() == 0:
            time.sleep(0.05)
        time.sleep(1.0)
        latencies = []
        for i in range(args.n + 2):  # two warm-up frames
            key = (10 + i, 0)
            t0 = time.perf_counter()
            pub.publish(cloud(*key))
            while key not in received:
                time.sleep(0.001)
            if i >= 2:
                latencies.append((received[key] - t0) * 1e3)
        lat = np.asarray(latencies)
        n_points = len(frame.points)
        print(
            f"frame {args.frame}: {n_points} points; profile {args.profile}; device {args.device}"
        )
        print(
            f"sequential latency publish->receive over {len(lat)} frames: median "
            f"{np.median(lat):.1f} ms, p90 {np.percentile(lat, 90):.1f} ms, max {lat.max():.1f} ms "
            f"-> {n_points / (np.median(lat) / 1e3):,.0f} points/s"
        )
        start_count = len(received)
        period = 1.0 / args.hz
        sent = 0
        t_start = time.perf_counter()
        while time.perf_counter() - t_start < args.seconds:
            pub.publish(cloud(1000 + sent, 0))
            sent += 1
            time.sleep(max(0.0, t_start + sent * period - time.perf_counter()))
        time.sleep(3.0)
        got = len(received) - start_count
        print(
            f"streaming at {args.hz:g} Hz for {args.seconds:g} s: {sent} sent, {got} labeled "
            f"({got / args.seconds:.2f} Hz out), {sent - got} dropped as stale"
        )
    finally:
        node_proc.send_signal(signal.SIGINT)
        node_proc.wait(timeout=30)
        executor.shutdown()
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
