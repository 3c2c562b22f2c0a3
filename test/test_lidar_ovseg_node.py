"""lidar_ovseg_node over real rclpy and DDS: labels, runtime vocabulary, bad input, markers."""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pytest
from conftest import RosHarness, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Float32, String
from visualization_msgs.msg import Marker, MarkerArray

from lidar_ovseg_ros.pointcloud import decode_fields, unpack_rgb
from lidar_ovseg_ros.vocabulary import NO_CLASS_COLOR, NO_CLASS_ID, load_preset

pytestmark = pytest.mark.ros

NODE = "/lidar_ovseg_node"
SUBPROCESS_NODE = "/lidar_ovseg_subprocess"


def cloud_msg(points: np.ndarray, stamp_sec: int = 100, frame_id: str = "LIDAR_TOP"):
    """A Velodyne-like PointCloud2 (x, y, z, intensity, ring) from [N, 5] float32 points."""
    msg = PointCloud2()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = stamp_sec
    msg.height, msg.width = 1, len(points)
    names = ["x", "y", "z", "intensity", "ring"][: points.shape[1]]
    msg.fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate(names)
    ]
    msg.point_step = 4 * len(names)
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = bool(np.isfinite(points).all())
    msg.data = np.ascontiguousarray(points, np.float32).tobytes()
    return msg


class Probe:
    """A test-side node: publishes input clouds, records every output of the node under test."""

    def __init__(self, harness: RosHarness) -> None:
        self.node = harness.make_node("probe")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.lock = threading.Lock()
        self.clouds: list[PointCloud2] = []
        self.markers: list[MarkerArray] = []
        self.vocab: list[dict] = []
        self.legends: list[Image] = []
        self.diags: list[DiagnosticArray] = []
        self.proc_ms: list[float] = []
        n = self.node
        n.create_subscription(
            PointCloud2, f"{NODE}/output/points", self._add(self.clouds), reliable
        )
        n.create_subscription(
            MarkerArray, f"{NODE}/output/voxels", self._add(self.markers), reliable
        )
        n.create_subscription(
            String,
            f"{NODE}/output/vocabulary",
            lambda m: self._append(self.vocab, json.loads(m.data)),
            latched,
        )
        n.create_subscription(Image, f"{NODE}/output/legend", self._add(self.legends), latched)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._add(self.diags), 10)
        n.create_subscription(
            Float32,
            f"{NODE}/debug/processing_time_ms",
            lambda m: self._append(self.proc_ms, m.data),
            10,
        )
        self.pub = n.create_publisher(PointCloud2, "/lidar/points", reliable)
        self.set_params = n.create_client(SetParameters, f"{NODE}/set_parameters")

    def _append(self, store: list, item) -> None:
        with self.lock:
            store.append(item)

    def _add(self, store: list):
        return lambda msg: self._append(store, msg)

    def publish_and_wait(self, msg: PointCloud2, timeout: float = 60.0) -> PointCloud2:
        before = len(self.clouds)
        self.pub.publish(msg)
        assert wait_for(lambda: len(self.clouds) > before, timeout), "no labeled cloud came back"
        return self.clouds[-1]

    def publish_and_wait_stamped(self, msg: PointCloud2, timeout: float = 60.0) -> PointCloud2:
        """Publish `msg` and return the labeled cloud carrying its (unique) stamp: outputs of
        earlier inputs still in flight are skipped."""
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)

        def mine() -> PointCloud2 | None:
            with self.lock:
                for out in reversed(self.clouds):
                    if (out.header.stamp.sec, out.header.stamp.nanosec) == stamp:
                        return out
            return None

        self.pub.publish(msg)
        assert wait_for(lambda: mine() is not None, timeout), "no labeled cloud came back"
        return mine()

    def set(self, *params: Parameter):
        assert self.set_params.wait_for_service(10)
        req = SetParameters.Request(parameters=[p.to_parameter_msg() for p in params])
        future = self.set_params.call_async(req)
        assert wait_for(future.done, 20)
        return future.result().results

    def vocabulary_state(self) -> dict:
        with self.lock:
            return self.vocab[-1] if self.vocab else {}

    def latest_diag_values(self) -> dict[str, str]:
        with self.lock:
            for arr in reversed(self.diags):
                for st in arr.status:
                    if "lidar_ovseg_node" in st.name:
                        return {kv.key: kv.value for kv in st.values}
        return {}


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """The node under test (tiny profile) and a probe, on one isolated DDS domain."""
    from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarOvsegNode

    harness = RosHarness()
    cache = tmp_path_factory.mktemp("prototype_cache")
    node = LidarOvsegNode(
        context=harness.context,
        cli_args=["--ros-args", "-r", "~/input/points:=/lidar/points"],
        parameter_overrides=[
            Parameter("profile", value="tiny"),
            Parameter("cache_dir", value=str(cache)),
            Parameter("images_per_class", value=1),
            Parameter("vocabulary_file", value="nuscenes"),
            Parameter("diagnostics_period", value=0.2),
            Parameter("input_reliability", value="reliable"),
        ],
    )
    harness.add_node(node)
    probe = Probe(harness)
    assert wait_for(lambda: probe.vocabulary_state().get("state") == "active", 300)
    assert wait_for(lambda: probe.pub.get_subscription_count() > 0, 10)
    yield node, probe
    node.shutdown()
    harness.shutdown()


def palette(vocabulary_json: dict) -> set[tuple[int, int, int]]:
    return {tuple(c["color"]) for c in vocabulary_json["classes"]} | {NO_CLASS_COLOR}


def test_labels_every_input_point_and_keeps_the_header(running, nuscenes_frame):
    _node, probe = running
    out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points, stamp_sec=1532402927))
    assert out.header.frame_id == "LIDAR_TOP" and out.header.stamp.sec == 1532402927
    assert out.width * out.height == len(nuscenes_frame.points)
    names = [f.name for f in out.fields]
    assert names[:3] == ["x", "y", "z"] and {"intensity", "label", "score", "rgb"} <= set(names)
    assert {f.name: f.datatype for f in out.fields}["label"] == PointField.UINT16
    arrays = decode_fields(out)
    np.testing.assert_array_equal(arrays["x"], nuscenes_frame.points[:, 0])
    labels = arrays["label"]
    nus = load_preset("nuscenes")
    assert set(np.unique(labels)) <= set(range(len(nus))) | {NO_CLASS_ID}
    # Every finite point is labeled, those outside the backbone's crop (|x|,|y| >= 64 m) too:
    # they take their nearest kept point's label, as IGLOSS and ScaLR do (out_of_crop nearest).
    assert (labels != NO_CLASS_ID).all()
    colours = unpack_rgb(arrays["rgb"])
    np.testing.assert_array_equal(colours, nus.colors_for(labels))
    assert wait_for(lambda: bool(probe.markers), 10)
    assert probe.legends and probe.legends[-1].encoding == "rgb8"
    assert wait_for(lambda: "processing_time_ms_median" in probe.latest_diag_values(), 10)
    assert probe.proc_ms


def test_runtime_vocabulary_swaps_atomically(running, nuscenes_frame):
    _node, probe = running
    old = probe.vocabulary_state()
    results = probe.set(Parameter("vocabulary", value=["car", "road", "tree", "person"]))
    assert results[0].successful, results[0].reason
    # Keep feeding frames while the new vocabulary builds: each frame is all-old or all-new,
    # and a frame published after the swap was announced is labeled by the new vocabulary.
    seen_new = False
    for i in range(60):
        state_before = probe.vocabulary_state()
        swapped = state_before["active"]["fingerprint"] != old["active"]["fingerprint"]
        out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points, stamp_sec=200 + i))
        colours = {tuple(c) for c in unpack_rgb(decode_fields(out)["rgb"]).tolist()}
        in_old = colours <= palette(old["active"])
        in_new = swapped and colours <= palette(state_before["active"])
        assert in_old or in_new or colours <= palette(probe.vocabulary_state()["active"]), (
            "a frame was labeled with a mix of vocabularies"
        )
        if swapped:
            assert in_new, "a frame published after the swap used the old vocabulary"
            labels = decode_fields(out)["label"]
            assert set(np.unique(labels)) <= {0, 1, 2, 3, NO_CLASS_ID}
            seen_new = True
            break
    assert seen_new, "the new vocabulary never became active"
    assert probe.vocabulary_state()["active"]["classes"][1]["name"] == "road"
    assert probe.vocabulary_state()["active_source"] == "parameter 'vocabulary'"


@pytest.mark.parametrize(
    ("param", "needle"),
    [
        (Parameter("vocabulary", value=["car", "Car"]), "duplicate"),
        (Parameter("vocabulary_file", value=""), "empty"),
        (Parameter("vocabulary", value=[True, False]), "STRING_ARRAY"),
        (Parameter("vocabulary_file", value="/nonexistent/vocab.yaml"), "not found"),
        (Parameter("vocabulary_file", value="cityscapes"), "no vocabulary preset"),
    ],
)
def test_invalid_vocabulary_is_refused_and_old_one_keeps_labeling(
    running, nuscenes_frame, param, needle
):
    _node, probe = running
    before = probe.vocabulary_state()
    result = probe.set(param)[0]
    assert not result.successful and needle in result.reason
    out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points, stamp_sec=300))
    colours = {tuple(c) for c in unpack_rgb(decode_fields(out)["rgb"]).tolist()}
    assert colours <= palette(before["active"])
    assert probe.vocabulary_state()["active"]["fingerprint"] == before["active"]["fingerprint"]


def test_malformed_clouds_are_rejected_and_counted_while_valid_ones_flow(running, nuscenes_frame):
    node, probe = running
    before = node.counters["rejected_malformed"]
    bad = cloud_msg(nuscenes_frame.points[:100])
    bad.data = bad.data[:-7]  # length no longer matches width * point_step
    probe.pub.publish(bad)
    no_xyz = cloud_msg(nuscenes_frame.points[:100])
    no_xyz.fields = no_xyz.fields[3:]
    probe.pub.publish(no_xyz)
    assert wait_for(lambda: node.counters["rejected_malformed"] >= before + 1, 10)
    out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points[:5000], stamp_sec=400))
    assert out.width == 5000
    assert wait_for(
        lambda: int(probe.latest_diag_values().get("rejected_malformed", 0)) >= before + 1, 10
    )
    assert "malformed" in probe.latest_diag_values()["last_rejection"]


def test_cloud_without_intensity_is_labeled(running, nuscenes_frame):
    _node, probe = running
    out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points[:, :3].copy(), stamp_sec=450))
    arrays = decode_fields(out)
    assert len(arrays["label"]) == len(nuscenes_frame.points)
    assert (arrays["intensity"] == 0).all()


def test_empty_all_nan_and_oversized_clouds(running, nuscenes_frame):
    node, probe = running
    empty = probe.publish_and_wait(cloud_msg(np.zeros((0, 5), np.float32), stamp_sec=500))
    assert empty.width * empty.height == 0
    nan = np.full((50, 5), np.nan, np.float32)
    out = probe.publish_and_wait(cloud_msg(nan, stamp_sec=501))
    assert (decode_fields(out)["label"] == NO_CLASS_ID).all()
    assert probe.set(Parameter("max_points", value=1000))[0].successful
    before = node.counters["rejected_oversized"]
    probe.pub.publish(cloud_msg(nuscenes_frame.points[:2000], stamp_sec=502))
    assert wait_for(lambda: node.counters["rejected_oversized"] == before + 1, 10)
    assert not probe.set(Parameter("max_points", value=0))[0].successful
    assert probe.set(Parameter("max_points", value=500000))[0].successful


def test_out_of_crop_parameter(running, nuscenes_frame):
    """Issue 8: out-of-crop points are labeled like the official method by default; the
    parameter out_of_crop:=no_class gives them 65535 instead (and nothing else changes)."""
    _node, probe = running
    pts = nuscenes_frame.points
    xyz = pts[:, :3].astype(np.float64)
    outside = ~((np.abs(xyz[:, :2]) < 64 - 1e-4).all(axis=1) & (np.abs(xyz[:, 2]) < 8 - 1e-4))
    assert 0 < outside.sum() < len(pts)
    nearest = decode_fields(probe.publish_and_wait(cloud_msg(pts, stamp_sec=1532402960)))
    assert (nearest["label"] < 16).all()
    assert probe.set(Parameter("out_of_crop", value="no_class"))[0].successful
    try:
        strict = decode_fields(probe.publish_and_wait(cloud_msg(pts, stamp_sec=1532402961)))
    finally:
        assert probe.set(Parameter("out_of_crop", value="nearest"))[0].successful
    np.testing.assert_array_equal(strict["label"] == NO_CLASS_ID, outside)
    np.testing.assert_array_equal(strict["label"][~outside], nearest["label"][~outside])
    assert (strict["score"][outside] == 0).all()
    assert not probe.set(Parameter("out_of_crop", value="drop"))[0].successful


def test_memory_budget_rejects_clouds_that_would_not_fit(running, nuscenes_frame):
    """Issue 9.5: a cloud whose estimated peak memory exceeds memory_budget_mb is rejected and
    counted before it is labeled, whatever max_points allows."""
    node, probe = running
    model = node.segmenter.memory_model()
    budget_mb = model.peak_bytes(3000) / 2**20  # room for 3,000 points
    assert node.params.max_points > 3000
    assert probe.set(Parameter("memory_budget_mb", value=budget_mb))[0].successful
    try:
        before = node.counters["rejected_memory_budget"]
        probe.pub.publish(cloud_msg(nuscenes_frame.points[:5000], stamp_sec=1532402970))
        assert wait_for(lambda: node.counters["rejected_memory_budget"] == before + 1, 10)
        out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points[:2000], stamp_sec=1532402971))
        assert out.width * out.height == 2000
        assert wait_for(
            lambda: int(probe.latest_diag_values().get("rejected_memory_budget", 0)) > before, 10
        )
        values = probe.latest_diag_values()
        assert 2990 <= int(values["max_points_effective"]) <= 3000
        assert "memory_budget_mb" in values["last_rejection"]
    finally:
        assert probe.set(Parameter("memory_budget_mb", value=4096.0))[0].successful
    assert not probe.set(Parameter("memory_budget_mb", value=-1.0))[0].successful


def test_markers_respect_the_cap(running, nuscenes_frame):
    _node, probe = running
    assert probe.set(Parameter("max_markers", value=300))[0].successful
    before = len(probe.markers)
    probe.publish_and_wait(cloud_msg(nuscenes_frame.points, stamp_sec=600))
    assert wait_for(lambda: len(probe.markers) > before, 10)
    arr = probe.markers[-1]
    assert arr.markers[0].action == Marker.DELETEALL
    cubes = list(arr.markers[1:])
    assert cubes and all(m.type == Marker.CUBE_LIST for m in cubes)
    assert sum(len(m.points) for m in cubes) <= 300
    names = {c["name"] for c in probe.vocabulary_state()["active"]["classes"]}
    assert {m.ns for m in cubes} <= names
    assert probe.set(Parameter("max_markers", value=20000))[0].successful


def test_node_process_sigint_and_missing_checkpoint(node_process, tmp_path):
    import subprocess

    proc = node_process(
        [
            "-m",
            "lidar_ovseg_ros.nodes.lidar_ovseg_node",
            "--ros-args",
            # Its own name: the in-process node of the `running` fixture shares this DDS domain,
            # and two /lidar_ovseg_node's would share the vocabulary topic and parameter service.
            "-r",
            f"__node:={SUBPROCESS_NODE[1:]}",
            "-p",
            f"cache_dir:={tmp_path}",
            "-p",
            "images_per_class:=1",
        ]
    )
    assert proc.poll() is None
    # A runtime refusal is answered; the process neither dies nor claims a start-up failure.
    harness = RosHarness()
    try:
        client = harness.make_node("h1_client").create_client(
            SetParameters, f"{SUBPROCESS_NODE}/set_parameters"
        )
        assert client.wait_for_service(120), "the node process never offered its parameters"
        deep = tmp_path / "deep.yaml"
        deep.write_text("classes: " + "[" * 20_000 + "]" * 20_000 + "\n")
        req = SetParameters.Request(
            parameters=[Parameter("vocabulary_file", value=str(deep)).to_parameter_msg()]
        )
        future = client.call_async(req)
        assert wait_for(future.done, 60), "the set-parameters call got no answer"
        result = future.result().results[0]
        assert not result.successful and "nested too deep" in result.reason
    finally:
        harness.shutdown()
    assert proc.poll() is None, "the node died on a refused vocabulary file"
    # A missing checkpoint stops start-up with an error naming the path, and no traceback.
    missing = tmp_path / "no_such_ckpt.pth"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "lidar_ovseg_ros.nodes.lidar_ovseg_node",
            "--ros-args",
            "-p",
            "profile:=full",
            "-p",
            f"checkpoint:={missing}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert str(missing) in res.stderr and "Traceback" not in res.stderr


# -- hostile vocabulary sources and callbacks (issue 9 items 1 and 3) ------------------------------


def hostile_vocabulary_source(kind: str, tmp_path) -> str:
    """A vocabulary_file value that is broken in one way; each must be refused with its reason."""
    import os

    path = tmp_path / f"{kind}.yaml"
    if kind == "latin1":
        path.write_bytes("classes:\n  - caf\xe9\n  - road\n".encode("latin-1"))
    elif kind == "binary":
        path.write_bytes(bytes(range(128, 256)) * 4)
    elif kind == "deep":
        path.write_text("classes: " + "[" * 20_000 + "]" * 20_000 + "\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "huge":
        path.write_text("# padding\n" * (110_000) + "classes: [car]\n")  # 1.1 MB
    elif kind == "bools":
        path.write_text("classes: [true, false]\n")
    elif kind == "numbers":
        path.write_text("classes:\n  - name: 12\n")
    elif kind == "io_error":
        return "/proc/self/mem"  # a regular file whose read fails with EIO
    elif kind == "permission":
        path.write_text("classes: [car]\n")
        path.chmod(0)
        try:
            path.read_bytes()
        except PermissionError:
            return str(path)
        if os.getpid() != 1 and os.path.exists("/proc/1/mem"):
            return "/proc/1/mem"  # as root: another process's memory is refused
        pytest.skip("cannot make a file unreadable here")
    return str(path)


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("latin1", "not UTF-8"),
        ("binary", "not UTF-8"),
        ("deep", "nested too deep"),
        ("directory", "is a directory"),
        ("huge", "limit"),
        ("bools", "got True"),
        ("numbers", "names must be strings"),
        ("io_error", "Input/output error"),
        ("permission", "ermission denied"),
    ],
)
def test_hostile_vocabulary_file_is_refused_with_its_reason(
    running, nuscenes_frame, tmp_path, kind, needle
):
    node, probe = running
    before = probe.vocabulary_state()
    source = hostile_vocabulary_source(kind, tmp_path)
    result = probe.set(Parameter("vocabulary_file", value=source))
    assert result and not result[0].successful and needle in result[0].reason, result
    # The node answers, the old vocabulary stays active and keeps labeling.
    out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points[:5000], stamp_sec=700))
    colours = {tuple(c) for c in unpack_rgb(decode_fields(out)["rgb"]).tolist()}
    assert colours <= palette(before["active"])
    assert probe.vocabulary_state()["active"]["fingerprint"] == before["active"]["fingerprint"]
    assert node.get_parameter("vocabulary_file").value != source


@pytest.mark.parametrize("value", [[True, False], [1, 2], [1.5]])
def test_non_string_vocabulary_values_are_refused(running, value):
    _node, probe = running
    before = probe.vocabulary_state()
    result = probe.set(Parameter("vocabulary", value=value))[0]
    assert not result.successful and "STRING_ARRAY" in result.reason
    assert probe.vocabulary_state()["active"]["fingerprint"] == before["active"]["fingerprint"]


def test_an_exception_in_any_callback_never_takes_the_node_down(running, nuscenes_frame):
    """A raising parameter callback and a raising subscription callback are logged and
    counted; the set-parameters call still gets an answer and clouds are still labeled."""
    from rcl_interfaces.msg import SetParametersResult

    node, probe = running
    errors = node.callback_errors

    def explode(params):
        if any(p.name == "max_markers" for p in params):
            raise RuntimeError("boom in a parameter callback")
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(explode)
    try:
        result = probe.set(Parameter("max_markers", value=123))[0]
    finally:
        node.remove_on_set_parameters_callback(explode)
    assert not result.successful and "boom" in result.reason
    assert node.callback_errors == errors + 1

    def explode_msg(msg):
        raise ValueError("boom in a subscription callback")

    sub = node.create_subscription(String, "/h1_boom", explode_msg, 10)
    pub = probe.node.create_publisher(String, "/h1_boom", 10)
    try:
        assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
        pub.publish(String(data="x"))
        assert wait_for(lambda: node.callback_errors == errors + 2, 10)
    finally:
        node.destroy_subscription(sub)
        probe.node.destroy_publisher(pub)
    out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points[:5000], stamp_sec=710))
    assert out.width == 5000
    assert probe.set(Parameter("max_markers", value=20000))[0].successful
    assert wait_for(lambda: int(probe.latest_diag_values().get("callback_errors", 0)) >= 2, 10)


# -- described, ranged, consistent parameters (issue 8 item 9, issue 9 item 4) --------------------


def test_describe_over_dds_shows_types_descriptions_ranges(running):
    from rcl_interfaces.srv import DescribeParameters, ListParameters

    _node, probe = running
    lister = probe.node.create_client(ListParameters, f"{NODE}/list_parameters")
    describer = probe.node.create_client(DescribeParameters, f"{NODE}/describe_parameters")
    assert lister.wait_for_service(10) and describer.wait_for_service(10)
    fut = lister.call_async(ListParameters.Request())
    assert wait_for(fut.done, 10)
    names = [
        n
        for n in fut.result().result.names
        if n not in ("use_sim_time", "start_type_description_service")
    ]
    fut = describer.call_async(DescribeParameters.Request(names=names))
    assert wait_for(fut.done, 10)
    described = {d.name: d for d in fut.result().descriptors}
    assert set(described) == set(names)
    for name, d in described.items():
        assert d.description, f"{name} has no description"
    from rcl_interfaces.msg import ParameterType

    assert described["vocabulary"].type == ParameterType.PARAMETER_STRING_ARRAY
    assert described["voxel_size"].floating_point_range[0].from_value > 0
    assert described["max_points"].integer_range and not described["max_points"].read_only
    assert described["profile"].read_only and "tiny" in described["profile"].additional_constraints
    probe.node.destroy_client(lister)
    probe.node.destroy_client(describer)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300, -0.4])
def test_voxel_size_must_be_finite_and_in_range(running, value):
    node, probe = running
    before = node.params.voxel_size
    result = probe.set(Parameter("voxel_size", value=value))[0]
    assert not result.successful and "voxel_size" in result.reason
    assert node.params.voxel_size == before
    assert node.get_parameter("voxel_size").value == before


def test_refusals_are_logged(running, capfd):
    _node, probe = running
    capfd.readouterr()
    assert not probe.set(Parameter("profile", value="full"))[0].successful  # read-only
    assert not probe.set(Parameter("max_points", value=0))[0].successful
    err = capfd.readouterr().err
    assert "refused parameter(s) profile" in err and "read-only" in err
    assert "refused parameter(s) max_points" in err


def test_vocabulary_parameters_stay_consistent_with_what_is_active(running, nuscenes_frame):
    from lidar_ovseg_ros.vocabulary import load_preset

    node, probe = running
    kitti = load_preset("semantickitti")
    assert probe.set(Parameter("vocabulary_file", value="semantickitti"))[0].successful
    # `vocabulary` shows the file's classes at once (a dump restarts with them) and no second
    # build was started by writing it back.
    assert node.get_parameter("vocabulary").value == kitti.names
    assert wait_for(
        lambda: probe.vocabulary_state().get("active", {}).get("name") == kitti.name, 120
    )
    assert probe.vocabulary_state()["active_source"] == "vocabulary_file 'semantickitti'"
    # A restart with the dumped values uses the file (same names), not a bare list.
    from lidar_ovseg_ros.nodes.common import VocabularyParameters

    assert VocabularyParameters.initial(node.vocab_params)[1] == "vocabulary_file 'semantickitti'"
    # A comma-separated string is accepted and stored as the string array.
    assert probe.set(Parameter("vocabulary", value="car, road"))[0].successful
    assert node.get_parameter("vocabulary").value == ["car", "road"]
    assert wait_for(
        lambda: (
            [c["name"] for c in probe.vocabulary_state()["active"]["classes"]] == ["car", "road"]
        ),
        120,
    )
    # The list can be cleared: empty means the classes of vocabulary_file again.
    assert probe.set(Parameter("vocabulary", value=[]))[0].successful
    assert node.get_parameter("vocabulary").value == []
    assert wait_for(lambda: probe.vocabulary_state()["active"]["name"] == kitti.name, 120)
    assert probe.set(Parameter("vocabulary_file", value="nuscenes"))[0].successful
    assert wait_for(lambda: probe.vocabulary_state()["active"]["name"] == "nuscenes", 120)


# -- time: node clock, max_age, backwards jumps (issue 8 "Time" and item 1 for the LiDAR node) ----


def test_backwards_stamp_jump_is_counted_and_labeling_goes_on(running, nuscenes_frame):
    node, probe = running
    before = node.counters["time_jumps"]
    probe.publish_and_wait(cloud_msg(nuscenes_frame.points[:3000], stamp_sec=50_000))
    out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points[:3000], stamp_sec=800))
    assert out.header.stamp.sec == 800  # a looped bag keeps being labeled
    assert node.counters["time_jumps"] == before + 1
    out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points[:3000], stamp_sec=801))
    assert node.counters["time_jumps"] == before + 1  # forward again: no new jump
    assert wait_for(lambda: int(probe.latest_diag_values().get("time_jumps", 0)) >= before + 1, 10)


def test_max_age_and_sim_time_clock_jumps(running, nuscenes_frame):
    """Staleness is measured on the node clock: with use_sim_time the /clock topic decides;
    a cloud older than max_age is dropped and counted; /clock going back is a time jump."""
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    node, probe = running
    clock_pub = probe.node.create_publisher(Clock, "/clock", 10)
    assert probe.set(Parameter("max_age", value=5.0))[0].successful
    assert probe.set(Parameter("use_sim_time", value=True))[0].successful
    try:
        clock_pub.publish(Clock(clock=Time(sec=10_000)))
        assert wait_for(lambda: node.get_clock().now().nanoseconds // 10**9 == 10_000, 10)
        dropped = node.counters["dropped_old"]
        probe.pub.publish(cloud_msg(nuscenes_frame.points[:3000], stamp_sec=9_990))  # 10 s old
        assert wait_for(lambda: node.counters["dropped_old"] == dropped + 1, 10)
        out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points[:3000], stamp_sec=9_998))
        assert out.header.stamp.sec == 9_998  # 2 s old on the simulated clock: labeled
        jumps = node.counters["time_jumps"]
        clock_pub.publish(Clock(clock=Time(sec=200)))  # the simulation was reset
        assert wait_for(lambda: node.counters["time_jumps"] > jumps, 10)
        out = probe.publish_and_wait(cloud_msg(nuscenes_frame.points[:3000], stamp_sec=199))
        assert out.header.stamp.sec == 199  # labeling goes on after the jump
    finally:
        assert probe.set(Parameter("use_sim_time", value=False))[0].successful
        assert probe.set(Parameter("max_age", value=0.0))[0].successful
        probe.node.destroy_publisher(clock_pub)
    assert wait_for(lambda: int(probe.latest_diag_values().get("dropped_old", 0)) >= 1, 10)


def _hostile_cloud(rng: np.random.Generator, i: int, stamp_sec: int) -> PointCloud2:
    """Cloud i of a seeded fuzz stream: kinds 0-6 are malformed in one way each (the node must
    reject and count them), kind 7 is a valid layout filled with random bytes (NaN, inf, 1e38,
    denormals: decoded and labeled)."""
    n = int(rng.integers(1, 400))
    pts = rng.normal(0, 20, (n, 4)).astype(np.float32)
    msg = cloud_msg(pts, stamp_sec=stamp_sec)
    kind = i % 8
    if kind == 0:  # data shorter than width * point_step
        msg.data = msg.data[: int(rng.integers(0, len(msg.data)))]
    elif kind == 1:  # no x/y/z
        msg.fields = msg.fields[3:]
    elif kind == 2:  # unknown datatype
        msg.fields[int(rng.integers(0, 4))].datatype = int(rng.integers(9, 256))
    elif kind == 3:  # fields past point_step
        msg.point_step = int(rng.integers(1, 16))
        msg.row_step = msg.point_step * msg.width
    elif kind == 4:  # absurd width for the bytes that came
        msg.width = int(rng.integers(n + 1, 2**31))
    elif kind == 5:  # a field offset far past the point
        msg.fields[0].offset = int(rng.integers(16, 2**31))
    elif kind == 6:  # height * width disagreeing with the data (organized claim)
        msg.height = int(rng.integers(2, 1000))
    else:
        msg.data = rng.integers(0, 256, len(msg.data), dtype=np.uint8).tobytes()
    return msg


def test_fuzz_thousands_of_hostile_clouds_node_alive_counting_and_labels_unchanged(
    running, nuscenes_frame
):
    """Issue 9 (done-when): a few thousand generated hostile clouds at the running node; it stays
    alive, every cloud that reached it is accounted for by exactly one outcome, and a valid scan
    is labeled exactly as before the attack."""
    node, probe = running
    reference = decode_fields(probe.publish_and_wait(cloud_msg(nuscenes_frame.points, 7000)))
    assert node.worker.wait_idle(60)
    c0 = dict(node.counters)
    dropped0, failed0 = node.worker.dropped, node.worker.failed
    rng = np.random.default_rng(2026)
    sent = 3000
    for i in range(sent):  # paced: the node keeps one message per topic (KEEP_LAST 1)
        probe.pub.publish(_hostile_cloud(rng, i, 7001 + i))
        wait_for(lambda i=i: node.counters["received"] - c0["received"] > i, 2, period=0.001)
    assert node.counters["received"] - c0["received"] >= sent * 0.9
    settled = lambda: node.worker.wait_idle(1) and node.worker.wait_idle(1)  # noqa: E731
    assert wait_for(settled, 120)
    delta = {k: node.counters[k] - c0[k] for k in c0}
    outcomes = (
        delta["processed"]
        + delta["rejected_malformed"]
        + delta["rejected_oversized"]
        + delta["rejected_memory_budget"]
        + delta["dropped_old"]
        + delta["skipped_no_vocabulary"]
        + (node.worker.dropped - dropped0)
        + (node.worker.failed - failed0)
    )
    assert 0 < delta["received"] <= sent
    assert outcomes == delta["received"], delta
    assert delta["rejected_malformed"] > 0 and node.worker.failed == failed0
    after = probe.publish_and_wait_stamped(cloud_msg(nuscenes_frame.points, 7001 + sent))
    after = decode_fields(after)
    np.testing.assert_array_equal(after["label"], reference["label"])
    np.testing.assert_allclose(after["score"], reference["score"], rtol=0, atol=1e-6)
    values = probe.latest_diag_values()
    assert wait_for(
        lambda: (
            int(probe.latest_diag_values().get("rejected_malformed", 0))
            >= c0["rejected_malformed"] + delta["rejected_malformed"]
        ),
        10,
    ), values
