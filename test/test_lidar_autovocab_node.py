"""lidar_ovseg_node in `vocabulary_mode: auto` (3D-AVS, tiny models) over real rclpy and DDS: the
vocabulary changes by itself from the captions of the bundled scan, the base classes stay, every
labeled frame is labeled with one vocabulary, captions/proposal/TPSS are published."""

from __future__ import annotations

import json
import math
import threading

import pytest
from conftest import RosHarness, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String
from test_lidar_openscene_node import cloud_msg

from lidar_ovseg_ros.pointcloud import decode_fields, unpack_rgb
from lidar_ovseg_ros.vocabulary import NO_CLASS_COLOR, load_preset

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures("one_torch_thread")]

NODE = "/lidar_ovseg_node"


class Probe:
    def __init__(self, harness: RosHarness) -> None:
        n = self.node = harness.make_node("autovocab_probe")
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.lock = threading.Lock()
        self.clouds: list[PointCloud2] = []
        self.vocab: list[dict] = []
        self.captions: list[dict] = []
        self.proposals: list[dict] = []
        self.diags: list[dict[str, str]] = []
        n.create_subscription(
            PointCloud2, f"{NODE}/output/points", self._add(self.clouds), reliable
        )
        for topic, store in (
            ("vocabulary", self.vocab),
            ("captions", self.captions),
            ("vocabulary_proposal", self.proposals),
        ):
            n.create_subscription(
                String,
                f"{NODE}/output/{topic}",
                lambda m, s=store: self._add(s)(json.loads(m.data)),
                QoSProfile(
                    depth=10,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL,
                )
                if topic == "vocabulary"
                else latched,
            )
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.pub = n.create_publisher(PointCloud2, "/lidar/points", reliable)

    def _add(self, store: list):
        def add(item) -> None:
            with self.lock:
                store.append(item)

        return add

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "lidar" in status.name:
                with self.lock:
                    self.diags.append({kv.key: kv.value for kv in status.values})

    def active(self) -> dict:
        with self.lock:
            states = [v for v in self.vocab if v.get("active")]
            return states[-1] if states else {}


def test_auto_mode_proposes_and_adopts_a_vocabulary_by_itself(nuscenes_frame):
    from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarOvsegNode

    harness = RosHarness()
    node = LidarOvsegNode(
        context=harness.context,
        cli_args=["--ros-args", "-r", "~/input/points:=/lidar/points"],
        parameter_overrides=[
            Parameter("method", value="openscene"),
            Parameter("profile", value="tiny"),
            Parameter("device", value="cpu"),
            Parameter("vocabulary_file", value="nuscenes"),
            Parameter("vocabulary_mode", value="auto"),
            Parameter("auto_period", value=0.5),
            Parameter("input_reliability", value="reliable"),
            Parameter("publish_markers", value=False),
            Parameter("diagnostics_period", value=0.2),
            Parameter("auto_tagger", value="rules"),
            Parameter(
                "auto_image_topics",
                value="/cameras/CAM_FRONT/image_raw/compressed, /cameras/CAM_BACK/image_raw",
            ),
        ],
    )
    try:
        harness.add_node(node)
        probe = Probe(harness)
        # camera images (optional): a CompressedImage (the JPEG as is) and a raw Image
        from sensor_msgs.msg import CompressedImage, Image

        jpeg = CompressedImage(format="jpeg")
        jpeg.data = nuscenes_frame.cameras["CAM_FRONT"].image_path.read_bytes()
        back = nuscenes_frame.cameras["CAM_BACK"].load_image()[::4, ::4].copy()
        raw = Image(height=back.shape[0], width=back.shape[1], encoding="rgb8")
        raw.step, raw.data = back.shape[1] * 3, back.tobytes()
        reliable = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        front_pub = probe.node.create_publisher(
            CompressedImage, "/cameras/CAM_FRONT/image_raw/compressed", reliable
        )
        back_pub = probe.node.create_publisher(Image, "/cameras/CAM_BACK/image_raw", reliable)
        assert wait_for(
            lambda: front_pub.get_subscription_count() and back_pub.get_subscription_count(), 10
        )
        front_pub.publish(jpeg)
        back_pub.publish(raw)
        base = load_preset("nuscenes").names
        assert wait_for(lambda: probe.active().get("state") == "active", 120)
        assert wait_for(lambda: probe.pub.get_subscription_count() > 0, 10)
        pts = nuscenes_frame.points

        def adopted() -> bool:
            a = probe.active()
            return a.get("active_source", "").startswith("auto-vocabulary")

        stamp = 1532402927
        while not adopted() and stamp < 1532402927 + 40:
            before = len(probe.clouds)
            probe.pub.publish(cloud_msg(pts, stamp))
            assert wait_for(lambda b=before: len(probe.clouds) > b, 60), "no labeled cloud"
            stamp += 1
        assert adopted(), probe.vocab[-1:]
        names = [c["name"] for c in probe.active()["active"]["classes"]]
        assert names[: len(base)] == base and len(names) > len(base)

        # one more frame with the adopted vocabulary
        before = len(probe.clouds)
        probe.pub.publish(cloud_msg(pts, stamp))
        assert wait_for(lambda: len(probe.clouds) > before, 60)

        # captions and the proposal with its provenance came out
        assert wait_for(lambda: probe.captions and probe.proposals, 10)
        caps = probe.captions[-1]
        assert len(caps["lidar_sectors"]) == 12 and caps["captions"]
        assert {"camera/CAM_FRONT", "camera/CAM_BACK"} <= set(caps["captions"])
        prop = probe.proposals[-1]
        new = [n for n in prop["vocabulary"] if n not in base]
        assert new and all(prop["classes"][n]["origin"] == "caption" for n in new)
        assert all(
            prop["classes"][n]["sources"][0].startswith(("lidar/sector_", "camera/")) for n in new
        )
        assert all(prop["classes"][n]["origin"] == "base" for n in base)

        # every labeled frame is labeled by exactly one of the vocabularies that were active
        palettes = []
        for v in probe.vocab:
            if v.get("active"):
                lut = {c["id"]: tuple(c["color"]) for c in v["active"]["classes"]}
                palettes.append(lut)
        for cloud in probe.clouds:
            f = decode_fields(cloud)
            labels, rgb = f["label"], unpack_rgb(f["rgb"])
            pairs = {(int(lab), tuple(int(x) for x in c)) for lab, c in zip(labels, rgb)}
            assert any(
                all(lut.get(lab, NO_CLASS_COLOR) == col for lab, col in pairs) for lut in palettes
            ), "a frame mixes vocabularies"

        # TPSS of the labeled frames and the round counters on /diagnostics
        assert wait_for(lambda: any("tpss" in d for d in probe.diags), 10)
        d = [d for d in probe.diags if "tpss" in d][-1]
        assert math.isfinite(float(d["tpss"])) and -1 <= float(d["tpss"]) <= 1
        assert int(d["auto_rounds"]) >= 1 and int(d["auto_errors"]) == 0
        assert int(d["auto_images_received"]) == 2 and int(d["auto_image_errors"]) == 0
        assert d["vocabulary_mode"] == "auto"

        # shutting down stops the rounds and releases the auto-vocabulary topics
        mode = node.autovocab
        assert mode.runner.running
        node.shutdown()
        topic = f"{NODE}/output/captions"
        assert wait_for(lambda: probe.node.count_publishers(topic) == 0, 10)
        assert not mode.runner.running
    finally:
        node.shutdown()
        harness.shutdown()


def test_auto_mode_needs_openscene():
    from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarOvsegNode

    harness = RosHarness()
    try:
        with pytest.raises(ValueError, match="needs method 'openscene'"):
            LidarOvsegNode(
                context=harness.context,
                parameter_overrides=[
                    Parameter("profile", value="tiny"),
                    Parameter("vocabulary", value=["car", "road"]),
                    Parameter("images_per_class", value=1),
                    Parameter("vocabulary_mode", value="auto"),
                ],
            )
    finally:
        harness.shutdown()
