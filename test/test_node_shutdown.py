"""Clean shutdown of both node processes under load (issue 8 item 2).

Each node runs as `python -m ...` (as `ros2 run` starts it) while a probe publishes frames
continuously; then two signals (a terminal and launch both send one): SIGINT twice to the LiDAR
node, SIGTERM then SIGINT to the camera node (the handler is the same function for both nodes).
Required: exit code 0 within 2 s, no traceback, no "publisher's context is invalid", no
KeyboardInterrupt in a thread join, no "terminate called".
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
from conftest import wait_for
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

pytestmark = pytest.mark.ros

FORBIDDEN = (
    "Traceback",
    "context is invalid",
    "KeyboardInterrupt",
    "terminate called",
    "start-up failed",
)
EXIT_SECONDS = 2.0


def _signal_and_time(proc, signals: tuple[int, ...]) -> float:
    start = time.monotonic()
    for i, sig in enumerate(signals):
        if i:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(sig)
    proc.wait(timeout=20)
    return time.monotonic() - start


def _check_log(proc, tmp_path) -> str:
    logs = sorted(tmp_path.glob("proc*.log"))
    text = logs[-1].read_text()
    for needle in FORBIDDEN:
        assert needle not in text, f"{needle!r} in the node's output:\n{text[-3000:]}"
    return text


@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGINT)], ids=["sigint-twice"])
def test_lidar_node_exits_cleanly_with_clouds_in_flight(
    node_process, ros, nuscenes_frame, tmp_path, signals
):
    from test_lidar_ovseg_node import cloud_msg

    proc = node_process(
        [
            "-m",
            "lidar_ovseg_ros.nodes.lidar_ovseg_node",
            "--ros-args",
            "-r",
            "~/input/points:=/h1_shutdown/points",
            "-p",
            "input_reliability:=reliable",
            "-p",
            f"cache_dir:={tmp_path}",
            "-p",
            "images_per_class:=1",
            "-p",
            "vocabulary:=car, road",  # a comma-separated override becomes the string array
        ]
    )
    probe = ros.make_node("h1_shutdown_probe")
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    outputs: list[PointCloud2] = []
    probe.create_subscription(
        PointCloud2, "/lidar_ovseg_node/output/points", outputs.append, reliable
    )
    pub = probe.create_publisher(PointCloud2, "/h1_shutdown/points", reliable)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 180), "the node never subscribed"
    msg = cloud_msg(nuscenes_frame.points[:20000].astype(np.float32))
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            pub.publish(msg)
            time.sleep(0.02)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        assert wait_for(lambda: len(outputs) >= 2, 180), "no labeled clouds came back"
        elapsed = _signal_and_time(proc, signals)
    finally:
        stop.set()
        feeder.join(5)
    print(f"\n{proc.args[2]}: exit {proc.returncode} {elapsed:.2f} s after {len(signals)} signals")
    assert proc.returncode == 0, _check_log(proc, tmp_path)[-3000:]
    assert elapsed < EXIT_SECONDS, f"exit took {elapsed:.2f} s"
    _check_log(proc, tmp_path)


@pytest.mark.parametrize("signals", [(signal.SIGTERM, signal.SIGINT)], ids=["sigterm-then-sigint"])
def test_camera_node_exits_cleanly_with_images_in_flight(
    node_process, ros, nuscenes_frame, tmp_path, signals
):
    from test_camera_occupancy_node import CameraProbe

    proc = node_process(
        [
            "-m",
            "lidar_ovseg_ros.nodes.camera_occupancy_node",
            "--ros-args",
            "-p",
            "calibration_file:=nuscenes",
            "-p",
            "input_reliability:=reliable",
        ]
    )
    probe = CameraProbe(ros, nuscenes_frame)
    assert wait_for(lambda: all(p.get_subscription_count() for p in probe.image_pubs.values()), 180)
    stop = threading.Event()

    def feed() -> None:
        sec = 2000
        while not stop.is_set():
            probe.publish_set(sec)
            sec += 1
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        assert wait_for(lambda: len(probe.points) >= 1, 180), "no voxel map came back"
        elapsed = _signal_and_time(proc, signals)
    finally:
        stop.set()
        feeder.join(5)
    print(f"\n{proc.args[2]}: exit {proc.returncode} {elapsed:.2f} s after {len(signals)} signals")
    assert proc.returncode == 0, _check_log(proc, tmp_path)[-3000:]
    assert elapsed < EXIT_SECONDS, f"exit took {elapsed:.2f} s"
    _check_log(proc, tmp_path)
