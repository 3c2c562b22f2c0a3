"""Arrival spread of six back-to-back camera images over real DDS, and how many rounds a `wait`
blanks a camera as late, on this machine with and without extra CPU load.

The camera node runs as its own process (as `ros2 run` starts it, tiny profile: its worker keeps
the CPU busy as a real one does); this script publishes the six real nuScenes JPEGs (130-165 KB
each) plus CameraInfo back to back, `--hz` rounds per second, and reads the node's /diagnostics:
`arrival_spread_ms_*` (first to last image of a complete set, rolling window), `late_by_ms_*`
(how long after the first image a camera left out of a set came), `late_<CAM>`,
`received_<CAM>`. `--burners N` adds N busy-looping processes (a loaded machine).

    .venv/bin/python scripts/bench_camera_arrival.py [--waits 0.5,1,2] [--burners 0,4]
        [--rounds 40] [--hz 2] [--reliability best_effort,reliable] [--depths 1,4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time


def _burn() -> None:
    while True:
        pass


def run_case(
    frame, wait: float, burners: int, rounds: int, hz: float, reliability: str, depth: int
) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage

    cmd = [
        sys.executable,
        "-m",
        "lidar_ovseg_ros.nodes.camera_occupancy_node",
        "--ros-args",
        "-p",
        "profile:=tiny",
        "-p",
        "calibration_file:=nuscenes",
        "-p",
        f"wait:={wait}",
        "-p",
        f"input_reliability:={reliability}",
        "-p",
        f"image_queue_depth:={depth}",
        "-p",
        "diagnostics_period:=0.5",
        "--log-level",
        "error",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node("bench_camera_arrival")
    qos = QoSProfile(
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE
        if reliability == "reliable"
        else ReliabilityPolicy.BEST_EFFORT,
    )
    diags: list = []
    lock = threading.Lock()

    def on_diag(msg) -> None:
        for st in msg.status:
            if st.hardware_id == "/camera_occupancy_node":
                with lock:
                    diags.append({kv.key: kv.value for kv in st.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    img_pubs = {
        n: node.create_publisher(CompressedImage, f"/cameras/{n}/image_raw/compressed", qos)
        for n in frame.cameras
    }
    info_pubs = {
        n: node.create_publisher(CameraInfo, f"/cameras/{n}/camera_info", qos)
        for n in frame.cameras
    }
    jpegs = {n: c.image_path.read_bytes() for n, c in frame.cameras.items()}
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    burn = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(burners)]
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # node up, vocabulary built, subscribed
            with lock:
                ready = bool(diags) and diags[-1].get("vocabulary_state", "") == "active"
            if ready and all(p.get_subscription_count() for p in img_pubs.values()):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"camera node did not start: {diags[-1:]} {proc.poll()}")
        for p in burn:
            p.start()
        t0 = time.monotonic()
        for r in range(rounds):
            sec = 1000 + r
            for n, cam in frame.cameras.items():
                info = CameraInfo(width=cam.width, height=cam.height)
                info.header.frame_id = n
                info.header.stamp.sec = sec
                info.k = cam.K.reshape(-1).tolist()
                info_pubs[n].publish(info)
            for i, n in enumerate(frame.cameras):  # back to back, stamps 10 ms apart
                msg = CompressedImage(format="jpeg", data=jpegs[n])
                msg.header.frame_id = n
                msg.header.stamp.sec = sec
                msg.header.stamp.nanosec = 10_000_000 * i
                img_pubs[n].publish(msg)
            time.sleep(max(0.0, t0 + (r + 1) / hz - time.monotonic()))
        time.sleep(wait + 3.0)  # the last set, then two diagnostics periods
        with lock:
            last = dict(diags[-1])
    finally:
        for p in burn:
            p.kill()  # SIGKILL: rclpy handles SIGTERM in the forked child too
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    names = list(frame.cameras)
    late = sum(int(last.get(f"late_{n}", 0)) for n in names)
    received = sum(int(last.get(f"received_{n}", 0)) for n in names)
    return {
        "wait": wait,
        "burners": burners,
        "reliability": reliability,
        "depth": depth,
        "rounds": rounds,
        "images_lost": rounds * len(names) - received,
        "late_camera_slots": late,
        "late_per_round": late / rounds,
        "spread_ms_median": float(last.get("arrival_spread_ms_median", "nan")),
        "spread_ms_p90": float(last.get("arrival_spread_ms_p90", "nan")),
        "late_by_ms_median": float(last.get("late_by_ms_median", "nan")),
        "late_by_ms_max": float(last.get("late_by_ms_max", "nan")),
        "sets_processed": int(last.get("processed", 0)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--waits", default="0.5,1.0,2.0")
    ap.add_argument("--burners", default="0")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--hz", type=float, default=2.0)
    ap.add_argument("--reliability", default="best_effort")
    ap.add_argument("--depths", default="4", help="image_queue_depth values")
    args = ap.parse_args()
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="bench_cam_log_"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lidar_ovseg_ros.frames import load_frame

    frame = load_frame("nuscenes")
    print(f"machine: {os.cpu_count()} CPUs; {args.rounds} rounds of 6 JPEGs at {args.hz} Hz")
    for rel in args.reliability.split(","):
        for burners in (int(b) for b in args.burners.split(",")):
            for depth, wait in (
                (int(d), float(w)) for d in args.depths.split(",") for w in args.waits.split(",")
            ):
                res = run_case(frame, wait, burners, args.rounds, args.hz, rel, depth)
                print(
                    f"{rel:11s} depth={depth} burners={burners} wait={wait:4.2f}s: spread median "
                    f"{res['spread_ms_median']:7.1f} ms p90 {res['spread_ms_p90']:7.1f} ms; "
                    f"late camera slots {res['late_camera_slots']:3d} "
                    f"({res['late_per_round']:.2f}/round), late by median "
                    f"{res['late_by_ms_median']:.0f} ms max {res['late_by_ms_max']:.0f} ms; "
                    f"lost {res['images_lost']}; "
                    f"sets mapped {res['sets_processed']}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
