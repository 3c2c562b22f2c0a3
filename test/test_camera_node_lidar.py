"""camera_occupancy_node with `lidar_topic`: the bundled nuScenes scan labelled from the six
cameras alone (POP-3D's points branch), over real rclpy and DDS."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import RosHarness, wait_for
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
from std_msgs.msg import Header

from lidar_ovseg_ros.pointcloud import arrays_to_msg, decode_fields

pytestmark = pytest.mark.ros
NODE = "/camera_occupancy_node"
LIDAR_TOPIC = "/lidar_top/points"


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
            Parameter("lidar_topic", value=LIDAR_TOPIC),
            Parameter("wait", value=1.0),
        ],
    )
    harness.add_node(node)
    probe = harness.make_node("lidar_probe")
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    lock = threading.Lock()
    received: list[PointCloud2] = []

    def keep(msg: PointCloud2) -> None:
        with lock:
            received.append(msg)

    probe.create_subscription(PointCloud2, f"{NODE}/output/points", keep, rel)
    pubs = {
        "cloud": probe.create_publisher(PointCloud2, LIDAR_TOPIC, qos_profile_sensor_data),
        **{
            name: probe.create_publisher(
                CompressedImage, f"/cameras/{name}/image_raw/compressed", rel
            )
            for name in nuscenes_frame.cameras
        },
        **{
            f"{name}/info": probe.create_publisher(CameraInfo, f"/cameras/{name}/camera_info", rel)
            for name in nuscenes_frame.cameras
        },
    }
    assert wait_for(lambda: node.model.active is not None, 120)
    assert wait_for(lambda: all(p.get_subscription_count() for p in pubs.values()), 10)
    yield node, pubs, received
    node.shutdown()
    harness.shutdown()


def _publish(pubs, frame, sec: int, cloud_sec: int, node, frame_id: str = "LIDAR_TOP") -> None:
    pts = frame.points
    header = Header(frame_id=frame_id)
    header.stamp.sec = cloud_sec
    cloud = arrays_to_msg(
        header,
        {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "intensity": pts[:, 3]},
    )
    before = node.lidar_counters["clouds_received"]
    pubs["cloud"].publish(cloud)
    assert wait_for(lambda: node.lidar_counters["clouds_received"] > before, 20)
    for name, cam in frame.cameras.items():
        info = CameraInfo()
        info.header.frame_id = name
        info.header.stamp.sec = sec
        info.width, info.height = cam.width, cam.height
        info.k = cam.K.reshape(-1).tolist()
        pubs[f"{name}/info"].publish(info)
    for name, cam in frame.cameras.items():
        msg = CompressedImage()
        msg.header.frame_id = name
        msg.header.stamp.sec = sec
        msg.format = "jpeg"
        msg.data = cam.image_path.read_bytes()
        pubs[name].publish(msg)


def test_the_bundled_scan_is_labelled_from_the_cameras(running, nuscenes_frame):
    node, pubs, received = running
    _publish(pubs, nuscenes_frame, 1000, 1000, node)
    assert wait_for(lambda: bool(received), 120)
    out = received[-1]
    assert out.header.frame_id == "LIDAR_TOP" and out.header.stamp.sec == 1000  # cloud's header
    pts = nuscenes_frame.points
    assert out.width * out.height == len(pts) == 34_688
    arrays = decode_fields(out)
    np.testing.assert_array_equal(arrays["x"], pts[:, 0])
    np.testing.assert_array_equal(arrays["intensity"], pts[:, 3])
    assert np.isfinite(arrays["score"]).all()

    # The same labels as the core pipeline gives for this scan, these images and calibrations.
    from lidar_ovseg_ros.occupancy.runtime import SwitchableOccupancy, build_predictor

    offline = SwitchableOccupancy(build_predictor("tiny", seed=0))
    offline.activate(offline.prepare_vocabulary(node.model.active.vocabulary))
    images = {n: c.load_image() for n, c in nuscenes_frame.cameras.items()}
    result, _ = offline.predict(images, dict(nuscenes_frame.cameras), points=pts[:, :3])
    agree = np.mean(arrays["label"] == result.point_labels)
    assert agree > 0.999, agree
    assert len(np.unique(arrays["label"])) > 1
    assert node.lidar_counters["clouds_labeled"] >= 1


def test_a_cloud_of_another_time_or_frame_is_counted_not_labelled(running, nuscenes_frame):
    node, pubs, received = running
    count = len(received)
    processed = node.counters["processed"]
    stale = node.lidar_counters["clouds_stale"]
    _publish(pubs, nuscenes_frame, 1002, 990, node)  # 12 s older than the camera set
    assert wait_for(lambda: node.lidar_counters["clouds_stale"] > stale, 120)
    rejected = node.lidar_counters["clouds_rejected"]
    _publish(pubs, nuscenes_frame, 1004, 1004, node, frame_id="base_link")
    assert wait_for(lambda: node.lidar_counters["clouds_rejected"] > rejected, 120)
    assert wait_for(lambda: node.counters["processed"] >= processed + 2, 120)
    assert len(received) == count  # the voxel map went on, no point output for those clouds
    assert "base_link" in node.last_problem


def test_a_prompt_over_77_tokens_fails_the_vocabulary_switch_with_its_name(running, tmp_path):
    node, _pubs, _received = running
    before = node.model.active
    # The tiny profile's tokenizer is byte-level: this prompt alone is over 77 tokens.
    long = "an extremely long description of a vehicle parked next to the curb of the main road"
    path = tmp_path / "long.yaml"
    path.write_text(
        "name: long\nclasses:\n  - name: car\n    prompts: [a car]\n"
        f"  - name: van\n    prompts: ['{long}']\n"
    )
    results = node.set_parameters([Parameter("vocabulary_file", value=str(path))])
    assert results[0].successful, results[0].reason
    assert wait_for(lambda: "too long" in node.switcher.status().last_error, 60)
    assert "an extremely long description" in node.switcher.status().last_error
    assert node.model.active is before  # the old vocabulary stays active
