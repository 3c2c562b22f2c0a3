"""lidar_ovseg_node with method openscene (tiny profile) over real rclpy and DDS: labels the real
nuScenes scan, swaps its vocabulary by text without a restart, answers `query` with a heat map."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from conftest import RosHarness, wait_for
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import String

from lidar_ovseg_ros.pointcloud import decode_fields, unpack_rgb
from lidar_ovseg_ros.viz import heat_colors
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures("one_torch_thread")]

NODE = "/lidar_ovseg_node"


def cloud_msg(points: np.ndarray, stamp_sec: int) -> PointCloud2:
    msg = PointCloud2()
    msg.header.frame_id = "LIDAR_TOP"
    msg.header.stamp.sec = stamp_sec
    msg.height, msg.width = 1, len(points)
    names = ["x", "y", "z", "intensity", "ring"][: points.shape[1]]
    msg.fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate(names)
    ]
    msg.point_step = 4 * len(names)
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = True
    msg.data = np.ascontiguousarray(points, np.float32).tobytes()
    return msg


class Probe:
    def __init__(self, harness: RosHarness) -> None:
        self.node = harness.make_node("openscene_probe")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.lock = threading.Lock()
        self.clouds: list[PointCloud2] = []
        self.grounding: list[PointCloud2] = []
        self.vocab: list[dict] = []
        n = self.node
        n.create_subscription(
            PointCloud2, f"{NODE}/output/points", self._add(self.clouds), reliable
        )
        n.create_subscription(
            PointCloud2, f"{NODE}/output/grounding", self._add(self.grounding), reliable
        )
        n.create_subscription(
            String,
            f"{NODE}/output/vocabulary",
            lambda m: self._add(self.vocab)(json.loads(m.data)),
            latched,
        )
        self.pub = n.create_publisher(PointCloud2, "/lidar/points", reliable)
        self.set_params = n.create_client(SetParameters, f"{NODE}/set_parameters")

    def _add(self, store: list):
        def add(item) -> None:
            with self.lock:
                store.append(item)

        return add

    def publish_and_wait(self, msg: PointCloud2, timeout: float = 60.0) -> PointCloud2:
        before = len(self.clouds)
        self.pub.publish(msg)
        assert wait_for(lambda: len(self.clouds) > before, timeout), "no labeled cloud came back"
        return self.clouds[-1]

    def set(self, *params: Parameter):
        assert self.set_params.wait_for_service(10)
        req = SetParameters.Request(parameters=[p.to_parameter_msg() for p in params])
        future = self.set_params.call_async(req)
        assert wait_for(future.done, 20)
        return future.result().results

    def vocabulary_state(self) -> dict:
        with self.lock:
            return self.vocab[-1] if self.vocab else {}


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarOvsegNode

    cache = tmp_path_factory.mktemp("openscene_cache")
    harness = RosHarness()
    node = LidarOvsegNode(
        context=harness.context,
        cli_args=["--ros-args", "-r", "~/input/points:=/lidar/points"],
        parameter_overrides=[
            Parameter("method", value="openscene"),
            Parameter("profile", value="tiny"),
            Parameter("device", value="cpu"),
            Parameter("vocabulary_file", value="nuscenes"),
            Parameter("input_reliability", value="reliable"),
            Parameter("publish_markers", value=False),
            Parameter("cache_dir", value=str(cache)),
        ],
    )
    harness.add_node(node)
    probe = Probe(harness)
    assert wait_for(lambda: probe.vocabulary_state().get("state") == "active", 120)
    # The preset's prompts are on disk: the next start encodes nothing.
    assert len(list((cache / "openscene_text").glob("*.npy"))) >= 16
    assert wait_for(lambda: probe.pub.get_subscription_count() > 0, 10)
    yield node, probe
    node.shutdown()
    harness.shutdown()


def test_labels_the_real_scan_swaps_by_text_and_answers_query(running, nuscenes_frame):
    node, probe = running
    pts = nuscenes_frame.points
    out = probe.publish_and_wait(cloud_msg(pts, 1532402927))
    arrays = decode_fields(out)
    assert out.width * out.height == len(pts)
    labels = arrays["label"]
    assert set(np.unique(labels)) <= set(range(16))  # every finite point gets a class
    assert not probe.grounding  # no query yet

    # Vocabulary by text: a text-encoder pass, no restart; the next frame uses it.
    results = probe.set(Parameter("vocabulary", value=["car", "road", "building"]))
    assert results[0].successful, results[0].reason
    assert wait_for(lambda: probe.vocabulary_state()["active"]["name"] == "parameter", 30)
    out = probe.publish_and_wait(cloud_msg(pts, 1532402928))
    labels = decode_fields(out)["label"]
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert node.segmenter.backbone_loads == 1

    # A free-text query: heat map over the points, the segmenter's cosine for each point.
    assert probe.set(Parameter("query", value="a parked truck"))[0].successful
    before = len(probe.grounding)
    probe.publish_and_wait(cloud_msg(pts, 1532402929))
    assert wait_for(lambda: len(probe.grounding) > before, 20)
    heat_msg = probe.grounding[-1]
    assert heat_msg.header.stamp.sec == 1532402929
    heat = decode_fields(heat_msg)
    np.testing.assert_array_equal(heat["x"], pts[:, 0])
    result = node.segmenter.segment(pts)
    want = node.segmenter.grounding("a parked truck", result)
    np.testing.assert_allclose(heat["score"], want, atol=1e-5)
    np.testing.assert_array_equal(unpack_rgb(heat["rgb"]), heat_colors(want))
    assert probe.set(Parameter("query", value=""))[0].successful

    # Non-finite points get no class, the rest are still labeled.
    bad = pts.copy()
    bad[:5, :3] = np.nan
    labels = decode_fields(probe.publish_and_wait(cloud_msg(bad, 1532402930)))["label"]
    assert (labels[:5] == NO_CLASS_ID).all() and (labels[5:] < 3).all()


def test_query_is_refused_by_a_method_without_text_features(tmp_path):
    """IGLOSS features are not text-aligned: setting `query` there is refused with a reason."""
    from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarOvsegNode

    harness = RosHarness()
    node = LidarOvsegNode(
        context=harness.context,
        parameter_overrides=[
            Parameter("profile", value="tiny"),
            Parameter("cache_dir", value=str(tmp_path)),
            Parameter("images_per_class", value=1),
            Parameter("vocabulary", value=["car", "road"]),
        ],
    )
    try:
        harness.add_node(node)
        result = node.set_parameters([Parameter("query", value="a car")])[0]
        assert not result.successful and "text-aligned" in result.reason
        assert node.set_parameters([Parameter("query", value="")])[0].successful
    finally:
        node.shutdown()
        harness.shutdown()
