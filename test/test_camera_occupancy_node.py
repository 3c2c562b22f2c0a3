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
    def __init__(
        self, harness: RosHarness, frame, node_path: str = NODE, prefix: str = "/cameras"
    ) -> None:
        self.node = harness.make_node(f"camera_probe{node_path.replace('/', '_')}")
        self.frame = frame
        self.node_path = node_path
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
        n.create_subscription(
            PointCloud2, f"{node_path}/output/voxel_points", self.points.append, rel
        )
        n.create_subscription(
            PointCloud2, f"{node_path}/output/grounding", self.grounding.append, rel
        )
        n.create_subscription(MarkerArray, f"{node_path}/output/voxels", self.markers.append, rel)
        n.create_subscription(
            String,
            f"{node_path}/output/vocabulary",
            lambda m: self.vocab.append(json.loads(m.data)),
            latched,
        )
        n.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, 10)
        self.image_pubs = {}
        self.info_pubs = {}
        for name in frame.cameras:
            self.image_pubs[name] = n.create_publisher(
                CompressedImage, f"{prefix}/{name}/image_raw/compressed", rel
            )
            self.info_pubs[name] = n.create_publisher(
                CameraInfo, f"{prefix}/{name}/camera_info", rel
            )
        self.jpegs = {name: cam.image_path.read_bytes() for name, cam in frame.cameras.items()}
        self.set_params = n.create_client(SetParameters, f"{node_path}/set_parameters")

    def publish_info(self, name: str, sec: int, size=None, k=None) -> None:
        cam = self.frame.cameras[name]
        info = CameraInfo()
        info.header.frame_id = name
        info.header.stamp.sec = sec
        info.width, info.height = size or (cam.width, cam.height)
        info.k = list(k) if k is not None else cam.K.reshape(-1).tolist()
        self.info_pubs[name].publish(info)

    def publish_image(self, name: str, sec: int, data: bytes, nanosec: int = 0) -> None:
        msg = CompressedImage()
        msg.header.frame_id = name
        msg.header.stamp.sec = sec
        msg.header.stamp.nanosec = nanosec
        msg.format = "jpeg"
        msg.data = data
        self.image_pubs[name].publish(msg)

    def publish_set(
        self, sec: int, skip: tuple[str, ...] = (), images: dict | None = None, infos: bool = True
    ) -> None:
        if infos:
            for name in self.frame.cameras:
                self.publish_info(name, sec)
        for i, name in enumerate(self.frame.cameras):
            if name in skip:
                continue
            data = (images or {}).get(name, self.jpegs[name])
            self.publish_image(name, sec, data, 10_000_000 * i)  # real rigs fire ms apart

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
                if st.hardware_id == self.node_path:
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
    before_bad = node.sync.counters.get("CAM_BACK_LEFT", "undecodable")
    before = len(probe.points)
    probe.publish_set(1003, images={"CAM_BACK_LEFT": b"\xff\xd8 not really a jpeg"})
    assert wait_for(lambda: len(probe.points) > before, 120)
    assert node.sync.counters.get("CAM_BACK_LEFT", "undecodable") == before_bad + 1
    assert wait_for(lambda: "cannot decode" in probe.diag_values().get("last_problem", ""), 10)
    assert_accounted(node)


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


# -- camera inputs: time, accounting, calibration (issue 8.1, issue 9 items 8-11) ----------------


def assert_accounted(node) -> None:
    """Every image received is in exactly one counter (node idle)."""
    from lidar_ovseg_ros.occupancy.camera_sync import IMAGE_FATES

    assert node.worker.wait_idle(60)
    pending = node.sync.pending()
    for name, c in node.sync.counters.snapshot().items():
        assert c["received"] == sum(c[k] for k in IMAGE_FATES) + pending[name], (name, c)


def wait_for_map(probe, before: int) -> bool:
    return wait_for(lambda: len(probe.points) > before, 120)


def test_stamps_jumping_back_do_not_stop_mapping(running):
    """A bag replayed, looped, or a simulation reset: before, no set was ever mapped again."""
    node, probe = running
    jumps = node.sync.time_jumps
    before = len(probe.points)
    probe.publish_set(3000)
    assert wait_for_map(probe, before)
    before = len(probe.points)
    probe.publish_set(2000)  # back in time
    assert wait_for_map(probe, before)
    assert probe.points[-1].header.stamp.sec == 2000
    before = len(probe.points)
    probe.publish_set(2000)  # the same stamps again (a looped one-frame bag)
    assert wait_for_map(probe, before)
    assert node.sync.time_jumps == jumps + 2
    assert wait_for(lambda: int(probe.diag_values().get("time_jumps", 0)) == jumps + 2, 10)
    assert_accounted(node)


def test_one_image_stamped_in_the_future_does_not_stop_the_node(running):
    node, probe = running
    future_sec = int(node.get_clock().now().nanoseconds * 1e-9) + 3600
    probe.publish_image("CAM_FRONT", future_sec, probe.jpegs["CAM_FRONT"])
    assert wait_for(lambda: node.sync.counters.get("CAM_FRONT", "future") >= 1, 10)
    before = len(probe.points)
    probe.publish_set(2001)
    assert wait_for_map(probe, before)
    assert probe.points[-1].header.stamp.sec == 2001
    assert wait_for(lambda: int(probe.diag_values().get("future_CAM_FRONT", 0)) >= 1, 10)
    assert int(probe.diag_values()["future_stamps"]) >= 1
    assert_accounted(node)


def test_random_byte_images_are_all_counted_and_never_mapped(running):
    node, probe = running
    rng = np.random.default_rng(9)
    names = list(probe.frame.cameras)
    before = {n: node.sync.counters.snapshot()[n] for n in names}
    total = lambda key: sum(node.sync.counters.get(n, key) for n in names)  # noqa: E731
    received0, points0 = total("received"), len(probe.points)
    for i in range(1000):
        data = rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes()
        probe.publish_image(names[i % 6], 2002, data)
        if i % 6 == 5 or i == 999:  # the node keeps one message per topic: pace per round
            done = lambda i=i: total("received") == received0 + i + 1  # noqa: E731
            assert wait_for(done, 10, period=0.002)
    for n in names:
        c = node.sync.counters.snapshot()[n]
        sent = 1000 // 6 + (names.index(n) < 1000 % 6)
        assert c["received"] - before[n]["received"] == sent
        assert c["undecodable"] - before[n]["undecodable"] == sent
    assert len(probe.points) == points0
    assert wait_for(lambda: int(probe.diag_values().get("undecodable_CAM_BACK", 0)) >= 166, 10)
    before_map = len(probe.points)
    probe.publish_set(2003)  # still mapping
    assert wait_for_map(probe, before_map)
    assert_accounted(node)


def test_a_set_in_which_no_image_decodes_gives_no_map(running, nuscenes_frame):
    node, probe = running
    # Valid JPEG headers (they pass the arrival check), truncated pixel data.
    truncated = {n: data[:3000] for n, data in probe.jpegs.items()}
    empty0 = node.counters["empty_sets"]
    undecodable0 = node.sync.counters.get("CAM_FRONT", "undecodable")
    before = len(probe.points)
    probe.publish_set(2004, images=truncated)
    assert wait_for(lambda: node.counters["empty_sets"] == empty0 + 1, 60)
    assert node.sync.counters.get("CAM_FRONT", "undecodable") == undecodable0 + 1
    assert node.worker.wait_idle(10) and len(probe.points) == before
    assert_accounted(node)


def _jpeg(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_image_size_is_checked_against_camera_info(running, nuscenes_frame):
    node, probe = running
    cam = nuscenes_frame.cameras["CAM_FRONT"]
    half = _jpeg(cam.load_image()[::2, ::2])  # 800 x 450
    maps = []
    for sec, info_size, k in (
        (2005, (cam.width // 2, cam.height // 2), (np.diag([0.5, 0.5, 1.0]) @ cam.K).reshape(-1)),
        (2006, None, None),  # the full-size CameraInfo: K is scaled to the half-size image
    ):
        probe.publish_info("CAM_FRONT", sec, info_size, k)
        want = info_size[0] if info_size else cam.width
        assert wait_for(lambda w=want: node._infos["CAM_FRONT"].width == w, 10)
        before = len(probe.points)
        probe.publish_set(sec, images={"CAM_FRONT": half}, infos=False)
        assert wait_for_map(probe, before)
        maps.append(decode_fields(probe.points[-1]))
    assert len(maps[0]["x"]) == len(maps[1]["x"])
    for key in ("x", "y", "z", "label", "score"):
        np.testing.assert_array_equal(maps[0][key], maps[1][key])
    # Another aspect ratio cannot be scaled: that view is refused, counted, the set mapped.
    bad0 = node.sync.counters.get("CAM_FRONT", "bad_calibration")
    before = len(probe.points)
    probe.publish_set(2007, images={"CAM_FRONT": _jpeg(cam.load_image()[:, :900])}, infos=False)
    assert wait_for_map(probe, before)
    assert node.sync.counters.get("CAM_FRONT", "bad_calibration") == bad0 + 1
    assert "another aspect ratio" in node.last_problem
    assert_accounted(node)


@pytest.fixture(scope="module")
def partly_calibrated(nuscenes_frame, tmp_path_factory):
    """A second node: calibration_file without CAM_BACK; images under /calib_cams."""
    from lidar_ovseg_ros.nodes.camera_occupancy_node import CameraOccupancyNode

    calib = {
        "cameras": {
            n: {"lidar2cam": c.lidar2cam.tolist()}
            for n, c in nuscenes_frame.cameras.items()
            if n != "CAM_BACK"
        }
    }
    path = tmp_path_factory.mktemp("calib") / "calib.json"
    path.write_text(json.dumps(calib))
    harness = RosHarness()
    node = CameraOccupancyNode(
        context=harness.context,
        namespace="partly",
        parameter_overrides=[
            Parameter("profile", value="tiny"),
            Parameter("use_tf", value=False),
            Parameter("calibration_file", value=str(path)),
            Parameter("topic_prefix", value="/calib_cams"),
            Parameter("input_reliability", value="reliable"),
            Parameter("diagnostics_period", value=0.2),
            Parameter("wait", value=1.0),
        ],
    )
    harness.add_node(node)
    probe = CameraProbe(harness, nuscenes_frame, "/partly/camera_occupancy_node", "/calib_cams")
    assert wait_for(lambda: bool(probe.vocab) and probe.vocab[-1]["state"] == "active", 120)
    assert wait_for(lambda: all(p.get_subscription_count() for p in probe.image_pubs.values()), 10)
    yield node, probe
    node.shutdown()
    harness.shutdown()


def test_bad_calibration_blanks_one_camera_not_the_set(partly_calibrated):
    node, probe = partly_calibrated
    # CAM_FRONT only ever sends unusable CameraInfo: K all zeros, K NaN, 0x0.
    bad = (((1600, 900), [0.0] * 9), ((1600, 900), [float("nan")] * 9), ((0, 0), None))
    for i, (size, k) in enumerate(bad):  # one at a time: the subscription keeps only the last
        probe.publish_info("CAM_FRONT", 1, size, k)
        refused = lambda i=i: node.sync.counters.get("CAM_FRONT", "bad_camera_info") == i + 1  # noqa: E731
        assert wait_for(refused, 10)
    for name in probe.frame.cameras:
        if name != "CAM_FRONT":
            probe.publish_info(name, 1)
    assert wait_for(lambda: len(node._infos) == 5, 10)
    probe.publish_set(1, infos=False)  # CAM_BACK has no pose, CAM_FRONT no valid CameraInfo
    assert wait_for_map(probe, 0)
    counts = node.sync.counters.snapshot()
    assert (
        counts["CAM_FRONT"]["bad_calibration"] == 1 and counts["CAM_BACK"]["bad_calibration"] == 1
    )
    assert counts["CAM_FRONT_LEFT"]["used"] == 1 and counts["CAM_FRONT"]["used"] == 0
    assert wait_for(lambda: probe.diag_values().get("bad_camera_info_CAM_FRONT") == "3", 10)
    assert wait_for(lambda: probe.diag_values().get("bad_calibration_CAM_BACK") == "1", 10)
    assert_accounted(node)


def test_hostile_vocabulary_sources_are_refused_and_the_node_answers(running, tmp_path):
    """Issue 9 item 1 on the camera node: refusals with reasons, old vocabulary active."""
    _node, probe = running
    before = probe.vocab[-1]["active"]["fingerprint"]
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("classes: [caf\xe9]\n".encode("latin-1"))
    deep = tmp_path / "deep.yaml"
    deep.write_text("classes: " + "[" * 20_000 + "]" * 20_000)
    for param, needle in (
        (Parameter("vocabulary_file", value=str(latin1)), "not UTF-8"),
        (Parameter("vocabulary_file", value=str(deep)), "nested too deep"),
        (Parameter("vocabulary_file", value=str(tmp_path)), "is a directory"),
        (Parameter("vocabulary", value=[True, False]), "STRING_ARRAY"),
    ):
        result = probe.set(param)[0]
        assert not result.successful and needle in result.reason, result
    assert probe.set(Parameter("max_markers", value=20000))[0].successful  # still answering
    assert probe.vocab[-1]["active"]["fingerprint"] == before
