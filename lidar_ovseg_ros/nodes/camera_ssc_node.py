"""`camera_ssc_node`: a stereo camera pair -> the completed 3D scene (VLScene), in the active
vocabulary.

VLScene (AAAI 2025) is a CLOSED-SET model: it predicts SemanticKITTI's 19 classes (+ empty) for
every voxel of a 51.2 x 51.2 x 6.4 m grid ahead of the left camera, including what no sensor
saw. The node serves the user's vocabulary by matching each VLScene class to the active class
whose CLIP text embedding is most similar (`match_threshold`; below it the VLScene class gets
no class, 65535). Changing `vocabulary` re-matches in the background and swaps atomically; the
network is not retrained and cannot see a class outside its 19.

Thin adapter: left/right Image or CompressedImage + CameraInfo (rectified `P` of both: the
right one's `P[0,3] = -fx * baseline` gives the baseline) -> numpy -> `SwitchableVLScene` ->
voxel MarkerArray (capped CUBE_LISTs), voxel-centre PointCloud2 (label, score, rgb),
vocabulary + legend, /diagnostics. The pair is synchronised by header stamp within `slop`; an
image whose partner does not come within `wait` is dropped and counted (late_<view>). The pose
of the grid frame (`frame_id`) relative to the left camera comes from tf2 when it is installed,
else from `calibration_file`, else the grid is placed at the left camera (x forward, y left,
z up).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from lidar_ovseg_ros.latest_worker import LatestWorker
from lidar_ovseg_ros.nodes.camera_occupancy_node import (
    _transform_to_matrix,
    decode_image,
    load_lidar2cam,
    probe_image,
)
from lidar_ovseg_ros.nodes.common import (
    DiagnosticsPublisher,
    GuardedNode,
    RollingStats,
    VocabularyParameters,
    VocabularyPublisher,
    declare_node_params,
    input_qos,
    node_param,
    output_qos,
    run_node,
    vocabulary_diagnostics,
    voxel_markers,
)
from lidar_ovseg_ros.occupancy.camera_inputs import (
    CameraInputError,
    check_intrinsics,
    intrinsics_for_image,
)
from lidar_ovseg_ros.occupancy.camera_sync import CameraImage, CameraSet, CameraSetSynchronizer
from lidar_ovseg_ros.pointcloud import labeled_cloud_to_msg
from lidar_ovseg_ros.ssc.class_matching import DEFAULT_MATCH_THRESHOLD
from lidar_ovseg_ros.ssc.stereo_inputs import (
    OPTICAL_FROM_BODY,
    StereoCalibration,
    StereoInputError,
    reference_lidar2cam,
)
from lidar_ovseg_ros.vocabulary_switch import SwitchStatus, VocabularySwitcher
from lidar_ovseg_ros.voxels import VoxelGrid

VIEWS = ("left", "right")


@dataclass
class CameraSSCNodeParams:
    """Every parameter of the node, declared once (see `CameraNodeParams` for the mechanism)."""

    profile: str = node_param(
        "tiny",
        "full: the official VLScene checkpoint + CLIP ViT-B/16 text; tiny: built-in untrained "
        "networks, output NOT meaningful.",
        choices=("tiny", "full"),
    )
    weights: str = node_param(
        "",
        "The official VLScene checkpoint (profile full); empty: the cached vlscene (lidar-ovseg "
        "weights fetch vlscene --file <downloaded file>).",
    )
    clip_model: str = node_param(
        "openai/clip-vit-base-patch16",
        "CLIP model whose text embeddings match VLScene's classes to the vocabulary.",
    )
    device: str = node_param("cpu", "Torch device: cpu, cuda or cuda:N.")
    seed: int = node_param(0, "Random seed of the tiny networks.", range=(0, 2**31 - 1))
    match_threshold: float = node_param(
        DEFAULT_MATCH_THRESHOLD,
        "Minimum CLIP text cosine between a VLScene class and its nearest active class; below "
        "it the VLScene class's voxels get no class (65535). -1: every VLScene class takes its "
        "nearest active class.",
        range=(-1.0, 1.0),
        runtime=True,
    )
    topic_prefix: str = node_param(
        "/stereo",
        "Images on <prefix>/{left,right}/image_raw[/compressed], CameraInfo on "
        "<prefix>/{left,right}/camera_info.",
    )
    compressed: bool = node_param(True, "Subscribe to CompressedImage (else Image).")
    frame_id: str = node_param(
        "stereo_ssc",
        "Output frame: the grid frame (x forward, y left, z up; VLScene's Velodyne frame).",
    )
    use_tf: bool = node_param(
        True, "Pose of frame_id relative to the left camera from tf2 when it is available."
    )
    calibration_file: str = node_param(
        "",
        "calib.json with cameras.left.lidar2cam (frame_id -> left camera optical frame); empty "
        "and no tf2: the grid is placed at the left camera.",
    )
    slop: float = node_param(
        0.02,
        "Seconds between the left and right header stamps of one pair.",
        range=(0.0, 10.0),
        runtime=True,
    )
    wait: float = node_param(
        1.0,
        "Seconds (arrival time) an image waits for its partner; then it is dropped and counted "
        "(late_<view>): a pair needs both views.",
        range=(0.0, 60.0),
    )
    future_tolerance: float = node_param(
        1.0,
        "Images stamped more than this many seconds after the node clock are dropped and "
        "counted (future_<view>); 0 disables.",
        range=(0.0, 3600.0),
    )
    max_markers: int = node_param(
        20_000,
        "Most cubes in ~/output/voxels (highest scores first); 0: none.",
        range=(0, 10_000_000),
        runtime=True,
    )
    image_queue_depth: int = node_param(
        2, "Images queued per view topic while the node is busy.", range=(1, 100)
    )
    input_reliability: str = node_param(
        "best_effort",
        "QoS reliability of the image and CameraInfo subscriptions.",
        choices=("best_effort", "reliable"),
    )
    diagnostics_period: float = node_param(
        1.0, "Seconds between /diagnostics messages.", range=(0.05, 3600.0)
    )
    autostart: bool = node_param(
        True,
        "Configure and activate at start-up; false: a managed node that waits for lifecycle "
        "transitions.",
    )


class CameraSSCNode(GuardedNode):
    """Stereo semantic scene completion (VLScene), labelled in the active vocabulary."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("camera_ssc_node", **node_kwargs)
        p = declare_node_params(self, CameraSSCNodeParams)
        self._lock = threading.Lock()
        self.counters = {
            "pairs": 0,
            "processed": 0,
            "incomplete_pairs": 0,
            "bad_pairs": 0,
        }
        self.last_problem = ""
        self.last_baseline_m = float("nan")
        self.last_occupied = 0
        self.processing_ms = RollingStats()
        self._infos: dict[str, CameraInfo] = {}
        self._pending: CameraSet | None = None
        self.sync = CameraSetSynchronizer(
            VIEWS, p.slop, p.wait, future_tolerance=p.future_tolerance
        )
        self.model = None
        self.vocab_params = VocabularyParameters(self)
        self.diagnostics = DiagnosticsPublisher(
            self, "stereo scene completion", self._diagnostics, period=p.diagnostics_period
        )
        self.start()

    def load(self) -> None:
        """configure: the network, poses, outputs, vocabulary build, worker, inputs."""
        p = self.params
        from lidar_ovseg_ros.ssc.runtime import SwitchableVLScene, build_vlscene_predictor

        predictor = build_vlscene_predictor(
            p.profile, weights=p.weights or None, clip_model=p.clip_model, device=p.device,
            seed=p.seed,
        )  # fmt: skip
        self.model = SwitchableVLScene(predictor)
        self.get_logger().warning(
            "VLScene is closed-set (SemanticKITTI's 19 classes): the active vocabulary is served "
            "by matching those classes to it with CLIP text similarity (match_threshold "
            f"{p.match_threshold}); a class it cannot predict never appears."
        )
        if p.profile == "tiny":
            self.get_logger().warning(
                "profile 'tiny': built-in small untrained networks; the scene and labels are NOT "
                "meaningful. Set profile:=full with the official VLScene checkpoint."
            )
        self._tf = self._make_tf_buffer() if p.use_tf else None
        self._static_pose = (
            load_lidar2cam(p.calibration_file, ("left",)).get("left")
            if p.calibration_file
            else None
        )
        self.marker_pub = self.create_publisher(MarkerArray, "~/output/voxels", output_qos())
        self.points_pub = self.create_publisher(PointCloud2, "~/output/voxel_points", output_qos())
        self.vocab_pub = VocabularyPublisher(self)
        self.switcher = VocabularySwitcher(self.model, on_change=self._on_vocabulary_status)
        self.vocab_params.attach(self.switcher)
        vocabulary, source = self.vocab_params.initial()
        self.switcher.request(vocabulary, source)
        self.worker: LatestWorker = LatestWorker(self._process, name="camera-ssc-worker")
        info_qos = input_qos(p.input_reliability)
        image_qos = input_qos(p.input_reliability)
        image_qos.depth = p.image_queue_depth
        image_type = CompressedImage if p.compressed else Image
        suffix = "image_raw/compressed" if p.compressed else "image_raw"
        prefix = p.topic_prefix.rstrip("/")
        for view in VIEWS:
            self.create_subscription(
                image_type,
                f"{prefix}/{view}/{suffix}",
                lambda msg, v=view: self._on_image(v, msg),
                image_qos,
            )
            self.create_subscription(
                CameraInfo,
                f"{prefix}/{view}/camera_info",
                lambda msg, v=view: self._on_camera_info(v, msg),
                info_qos,
            )
        self._poll_timer = self.create_timer(0.05, self._poll)
        pose = "tf2" if self._tf else ("calibration_file" if p.calibration_file else "default")
        self.get_logger().info(
            f"stereo pair under {prefix}/{{left,right}}/{suffix}; grid pose from {pose}; "
            f"profile {p.profile}"
        )

    def unload(self, timeout: float = 5.0) -> None:
        if getattr(self, "worker", None) is not None:
            self.worker.stop(timeout * 0.6)
        if getattr(self, "switcher", None) is not None:
            self.switcher.shutdown(timeout * 0.4)
        self.vocab_params.attach(None)
        self.worker = self.switcher = self.model = None  # type: ignore[assignment]

    # -- inputs --------------------------------------------------------------------------------

    def _make_tf_buffer(self) -> Any:
        try:
            from tf2_ros import Buffer, TransformListener
        except ImportError:
            self.get_logger().info("tf2_ros is not installed: grid pose from the parameters")
            return None
        buffer = Buffer()
        self._tf_listener = TransformListener(buffer, self)
        return buffer

    def _on_image(self, view: str, msg: Any) -> None:
        try:
            probe_image(msg)
        except CameraInputError as exc:
            self.sync.reject(view, "undecodable")
            self._problem(None, f"{view} image: cannot decode: {exc}")
            return
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        clock = self.get_clock().now().nanoseconds * 1e-9
        ready = self.sync.add(view, CameraImage(stamp, time.monotonic(), msg), clock)
        if ready is not None:
            self._submit(ready)

    def _on_camera_info(self, view: str, msg: CameraInfo) -> None:
        try:
            check_intrinsics(msg.k, msg.width, msg.height)
            P = np.asarray(msg.p, np.float64).reshape(3, 4)
            if not (np.isfinite(P).all() and P[0, 0] > 0 and P[1, 1] > 0):
                raise CameraInputError("P has no rectified projection (fx, fy must be > 0)")
        except (CameraInputError, ValueError) as exc:
            self.sync.counters.add(view, "bad_camera_info")
            self._problem(None, f"{view} CameraInfo refused: {exc}")
            return
        self._infos[view] = msg

    def _poll(self) -> None:
        ready = self.sync.poll(time.monotonic())
        if ready is not None:
            self._submit(ready)

    def _submit(self, ready: CameraSet) -> None:
        with self._lock:
            replaced, self._pending = self._pending, ready
        if replaced is not None:
            for view in replaced.images:
                self.sync.counters.add(view, "replaced")
        self.worker.submit(ready)

    def params_changed(self, names: set[str]) -> None:
        if "slop" in names:
            self.sync.max_delay = float(self.params.slop)

    def _on_vocabulary_status(self, status: SwitchStatus) -> None:
        self.vocab_pub.publish(status, self.params.frame_id)
        model = self.model
        active = model.active if model is not None else None
        if status.state == "active" and active is not None and active.vocabulary is status.active:
            table = active.match.table(float(self.params.match_threshold))
            self.get_logger().info(f"VLScene class -> vocabulary class: {table}")

    def _pose(self, info: CameraInfo, stamp: Any) -> np.ndarray:
        """frame_id -> left camera optical frame."""
        if self._tf is not None and info.header.frame_id:
            try:
                t = self._tf.lookup_transform(info.header.frame_id, self.params.frame_id, stamp)
                return _transform_to_matrix(t.transform)
            except Exception as exc:  # tf2 raises several lookup exception types
                self.get_logger().warning(
                    f"tf2 lookup {self.params.frame_id}->{info.header.frame_id} failed: {exc}",
                    throttle_duration_sec=5.0,
                )
        return self._static_pose if self._static_pose is not None else OPTICAL_FROM_BODY

    # -- the worker ----------------------------------------------------------------------------

    def _problem(self, counter: str | None, text: str) -> None:
        with self._lock:
            if counter is not None:
                self.counters[counter] += 1
            self.last_problem = text
        self.get_logger().warning(text, throttle_duration_sec=5.0)

    def _pair(self, pair: CameraSet) -> tuple[np.ndarray, np.ndarray, StereoCalibration]:
        """Decoded images and calibration; StereoInputError/CameraInputError say why not."""
        rgb, projections = {}, {}
        for view in VIEWS:
            info = self._infos.get(view)
            if info is None:
                self.sync.counters.add(view, "bad_calibration")
                raise StereoInputError(f"no valid CameraInfo for the {view} camera yet")
            try:
                rgb[view] = decode_image(pair.images[view].image)
            except Exception as exc:
                self.sync.counters.add(view, "undecodable")
                raise StereoInputError(f"{view} image cannot be decoded: {exc}") from exc
            h, w = rgb[view].shape[:2]
            try:
                scale = intrinsics_for_image(np.eye(3), info.width, info.height, w, h)
            except CameraInputError as exc:
                self.sync.counters.add(view, "bad_calibration")
                raise StereoInputError(f"{view}: {exc}") from exc
            projections[view] = scale @ np.asarray(info.p, np.float64).reshape(3, 4)
        left_info = self._infos["left"]
        pose = self._pose(left_info, pair.images["left"].image.header.stamp)
        calib = StereoCalibration(
            projections["left"],
            projections["right"],
            reference_lidar2cam(projections["left"], pose),
        )
        self.last_baseline_m = calib.baseline  # checks both projections and the baseline
        return rgb["left"], rgb["right"], calib

    def _process(self, pair: CameraSet) -> None:
        start = time.perf_counter()
        with self._lock:
            if self._pending is not pair:
                return  # a newer pair replaced it before the worker took it (counted)
            self._pending = None
            self.counters["pairs"] += 1
        model = self.model
        if model is None or model.active is None:
            for view in pair.images:
                self.sync.counters.add(view, "dropped")
            return
        if pair.missing:  # the partner came late (counted late_<view> by the synchronizer)
            for view in pair.images:
                self.sync.counters.add(view, "dropped")
            self._problem(
                "incomplete_pairs",
                f"no {'/'.join(pair.missing)} image within slop {self.params.slop} s of its "
                f"partner after waiting {self.params.wait} s: image dropped (stereo needs both)",
            )
            return
        try:
            left, right, calib = self._pair(pair)
        except (StereoInputError, CameraInputError) as exc:
            self._problem("bad_pairs", f"stereo pair refused: {exc}")
            return
        try:
            result, active = model.predict(left, right, calib, float(self.params.match_threshold))
        except Exception:
            for view in VIEWS:
                self.sync.counters.add(view, "dropped")
            raise
        for view in VIEWS:
            self.sync.counters.add(view, "used")
        header = Header(frame_id=self.params.frame_id, stamp=pair.images["left"].image.header.stamp)
        vocabulary = active.vocabulary
        self.points_pub.publish(
            labeled_cloud_to_msg(
                header,
                result.centers,
                None,
                result.labels,
                result.scores,
                vocabulary.colors_for(result.labels),
            )
        )
        order = np.argsort(-result.scores, kind="stable")[: int(self.params.max_markers)]
        grid = VoxelGrid(
            centers=result.centers[order],
            labels=result.labels[order],
            counts=np.ones(len(order), np.int64),
            voxel_size=float(min(result.voxel_size)),
            total_voxels=result.num_occupied,
        )
        self.marker_pub.publish(voxel_markers(grid, vocabulary, header))
        self.processing_ms.add((time.perf_counter() - start) * 1e3)
        with self._lock:
            self.counters["processed"] += 1
            self.last_occupied = result.num_occupied

    # -- diagnostics ---------------------------------------------------------------------------

    def _diagnostics(self) -> tuple[bytes, str, dict[str, Any]]:
        status = self.switcher.status()
        with self._lock:
            values: dict[str, Any] = dict(self.counters)
            last_problem = self.last_problem
            values["occupied_voxels"] = self.last_occupied
        model = self.model
        active = model.active if model is not None else None
        values.update(
            dropped_stale=self.worker.dropped,
            worker_errors=self.worker.failed,
            callback_errors=self.callback_errors,
            device=str(model.device) if model is not None else "",
            profile=self.params.profile,
            closed_set="VLScene: SemanticKITTI 19 classes matched to the vocabulary by CLIP text",
            match_threshold=self.params.match_threshold,
            baseline_m=self.last_baseline_m,
            last_problem=last_problem,
        )
        if active is not None:
            table = active.match.table(float(self.params.match_threshold))
            values["class_match"] = json.dumps(table, sort_keys=True)
            values["vlscene_classes_unmatched"] = sum(v is None for v in table.values())
        for view, counts in self.sync.counters.snapshot().items():
            for key, n in counts.items():
                values[f"{key}_{view}"] = n
        for k, v in self.processing_ms.summary().items():
            values[f"processing_time_ms_{k}"] = v
        vocab_values, vocab_state = vocabulary_diagnostics(status)
        values.update(vocab_values)
        if vocab_state is not None:
            level, message = vocab_state
        elif last_problem or self.worker.failed:
            level, message = DiagnosticStatus.WARN, last_problem or str(self.worker.last_error)
        else:
            level, message = DiagnosticStatus.OK, "completing scenes"
        return level, message, values


def main(args: list[str] | None = None) -> int:
    return run_node(CameraSSCNode, "camera_ssc_node", args)


if __name__ == "__main__":
    sys.exit(main())
