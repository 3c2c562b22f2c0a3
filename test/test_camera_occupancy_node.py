"""camera_occupancy_node over real rclpy and DDS with the real 6-camera nuScenes frame."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from conftest import RosHarness, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from lidar_ovseg_ros.pointcloud import decode_fields
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID

pytestmark = pytest.mark.ros
NODE = "/camera_occupancy_node"


class CameraProbe:
    def __init__(self, harness: RosHarness, frame) -> None:
        self.node = harness.make_node("camera_probe")
        self.frame = frame
        rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.lock = threading.Lock()
        self.points: list[PointCloud2] = []
        self.grounding: list[PointCloud2] = []
        self.markers: list[MarkerArray] = []
        self.vocab: list[dict] = []
        self.diags: list[DiagnosticArray] = []
        n = self.node
        n.create_subscription(PointCloud2, f"{NODE}/output/voxel_points", self.points.append, rel)
        n.create_subscription(PointCloud2, f"{NODE}/output/grounding", self.grounding.append, rel)
        n.create_subscription(MarkerArray, f"{NODE}/output/voxels", self.markers.append, rel)
        n.create_subscription(
            String,
            f"{NODE}/output/vocabulary",
            lambda m: self.vocab.append(json.loads(m.data)),
            latched,
        )
        n.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, 10)
        self.image_pubs = {}
        self.info_pubs = {}
        for name in frame.cameras:
            self.image_pubs[name] = n.create_publisher(
                CompressedImage, f"/cameras/{name}/image_raw/compressed", rel
            )
            self.info_pubs[name] = n.create_publisher(
                CameraInfo, f"/cameras/{name}/camera_info", rel
            )
        self.jpegs = {name: cam.image_path.read_bytes() for name, cam in frame.cameras.items()}
        self.set_params = n.create_client(SetParameters, f"{NODE}/set_parameters")

    def publish_set(self, sec: int, skip: tuple[str, ...] = ()) -> None:
        for name, cam in self.frame.cameras.items():
            info = CameraInfo()
            info.header.frame_id = name
            info.header.stamp.sec = sec
            info.width, info.height = cam.width, cam.height
            info.k = cam.K.reshape(-1).tolist()
            self.info_pubs[name].publish(info)
        for i, name in enumerate(self.frame.cameras):
            if name in skip:
                continue
            msg = CompressedImage()
            msg.header.frame_id = name
            msg.header.stamp.sec = sec
            msg.header.stamp.nanosec = 10_000_000 * i  # real rigs fire a few ms apart
            msg.format = "jpeg"
            msg.data = self.jpegs[name]
            self.image_pubs[name].publish(msg)

    def set(self, *params):
        assert self.set_params.wait_for_service(10)
        fut = self.set_params.call_async(
            SetParameters.Request(parameters=[p.to_parameter_msg() for p in params])
        )
        assert wait_for(fut.done, 20)
        return fut.result().results

    def diag_values(self) -> dict[str, str]:
        for arr in reversed(self.diags):
            for st in arr.status:
                if "camera_occupancy_node" in st.name:
                    return {kv.key: kv.value for kv in st.values}
        return {}


@pytest.fixture(scope="module")
def running(nuscenes_frame):
    from lidar_ovseg_ros.nodes.camera_occupancy_node import CameraOccupancyNode

    harness = RosHarness()
    node = CameraOccupancyNode(
        context=harness.context,
        parameter_overrides=[
            Parameter("profile", value="tiny"),
            Parameter("calibration_file", value="nuscenes"),
            Parameter("input_reliability", value="reliable"),
            Parameter("query", value="a parked car"),
            Parameter("diagnostics_period", value=0.2),
            Parameter("wait", value=1.0),
        ],
    )
    harness.add_node(node)
    probe = CameraProbe(harness, nuscenes_frame)
    assert wait_for(lambda: bool(probe.vocab) and probe.vocab[-1]["state"] == "active", 120)
    assert wait_for(lambda: all(p.get_subscription_count() for p in probe.image_pubs.values()), 10)
    yield node, probe
    node.shutdown()
    harness.shutdown()


def test_real_frame_gives_labeled_voxels_markers_and_grounding(running):
    _node, probe = running
    probe.publish_set(1000)
    assert wait_for(lambda: bool(probe.points) and bool(probe.grounding), 120)
    cloud = probe.points[-1]
    assert cloud.header.frame_id == "LIDAR_TOP" and cloud.header.stamp.sec == 1000
    arrays = decode_fields(cloud)
    n = cloud.width * cloud.height
    assert n > 0
    labels = arrays["label"]
    assert set(np.unique(labels)) <= set(range(16)) | {NO_CLASS_ID}
    # Voxel centres lie inside POP-3D's volume [-51.2, 51.2]^2 x [-5, 3].
    assert np.abs(arrays["x"]).max() < 51.2 and np.abs(arrays["y"]).max() < 51.2
    assert arrays["z"].min() > -5 and arrays["z"].max() < 3
    heat = decode_fields(probe.grounding[-1])
    assert len(heat["score"]) == n and np.isfinite(heat["score"]).all()
    assert np.abs(heat["score"]).max() <= 1.0 + 1e-5
    assert wait_for(lambda: bool(probe.markers), 10)
    assert probe.markers[-1].markers[0].action == Marker.DELETEALL


def test_vocabulary_change_and_refusal(running):
    _node, probe = running
    bad = probe.set(Parameter("vocabulary", value=["tree", "TREE"]))[0]
    assert not bad.successful and "duplicate" in bad.reason
    ok = probe.set(Parameter("vocabulary", value=["car", "road", "building"]))[0]
    assert ok.successful
    assert wait_for(lambda: probe.vocab[-1]["active"]["classes"][1]["name"] == "road", 60)
    before = len(probe.points)
    probe.publish_set(1001)
    assert wait_for(lambda: len(probe.points) > before, 120)
    labels = decode_fields(probe.points[-1])["label"]
    assert set(np.unique(labels)) <= {0, 1, 2, NO_CLASS_ID}


def test_late_camera_is_dropped_and_reported(running):
    node, probe = running
    before = len(probe.points)
    probe.publish_set(1002, skip=("CAM_BACK",))
    assert wait_for(lambda: len(probe.points) > before, 120)
    assert node.sync.late_counts["CAM_BACK"] >= 1
    assert wait_for(lambda: int(probe.diag_values().get("late_CAM_BACK", 0)) >= 1, 10)


def test_node_process_sigint_and_missing_weights(node_process, tmp_path):
    import subprocess
    import sys

    proc = node_process(
        [
            "-m",
            "lidar_ovseg_ros.nodes.camera_occupancy_node",
            "--ros-args",
            "-p",
            "calibration_file:=nuscenes",
        ]
    )
    assert proc.poll() is None
    missing = tmp_path / "pop3d_weights.pth"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "lidar_ovseg_ros.nodes.camera_occupancy_node",
            "--ros-args",
            "-p",
            "profile:=full",
            "-p",
            f"weights:={missing}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert str(missing) in res.stderr and "Traceback" not in res.stderr
    no_poses = subprocess.run(
        [
            sys.executable,
            "-m",
            "lidar_ovseg_ros.nodes.camera_occupancy_node",
            "--ros-args",
            "-p",
            "use_tf:=false",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_poses.returncode == 1 and "no camera poses" in no_poses.stderr


def test_corrupt_image_is_counted_and_the_set_still_mapped(running):
    node, probe = running
    before_bad = node.counters["bad_images"]
    before = len(probe.points)
    good = probe.jpegs["CAM_BACK_LEFT"]
    probe.jpegs["CAM_BACK_LEFT"] = b"\xff\xd8 not really a jpeg"
    try:
        probe.publish_set(1003)
    finally:
        probe.jpegs["CAM_BACK_LEFT"] = good
    assert wait_for(lambda: len(probe.points) > before, 120)
    assert node.counters["bad_images"] == before_bad + 1
    assert wait_for(lambda: "cannot decode" in probe.diag_values().get("last_problem", ""), 10)


def test_decode_raw_images():
    from sensor_msgs.msg import Image

    from lidar_ovseg_ros.nodes.camera_occupancy_node import decode_image

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = Image(height=2, width=3, encoding="bgr8", step=12)  # 3 bytes of row padding
    rows = np.zeros((2, 12), np.uint8)
    rows[:, :9] = rgb[..., ::-1].reshape(2, 9)
    msg.data = rows.tobytes()
    np.testing.assert_array_equal(decode_image(msg), rgb)
    mono = Image(height=1, width=2, encoding="mono8", step=2, data=bytes([7, 9]))
    assert decode_image(mono).tolist() == [[[7, 7, 7], [9, 9, 9]]]
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        decode_image(Image(height=1, width=1, encoding="yuv422", step=2, data=bytes(2)))
    with pytest.raises(ValueError, match="does not fit"):
        decode_image(Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(6)))
