"""`camera_occupancy_node`: surround cameras -> open-vocabulary voxel map (POP-3D).

Thin adapter: Image/CompressedImage + CameraInfo -> numpy -> OccupancyPredictor -> voxel
MarkerArray, voxel-centre PointCloud2 (label, score, rgb) and a grounding heat map for the `query`
parameter. Callbacks keep the newest image per camera; a worker fuses complete camera sets.
Camera poses (LiDAR -> camera) come from tf2 when it is installed, else from `calibration_file`.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from lidar_ovseg_ros.latest_worker import LatestWorker
from lidar_ovseg_ros.models.pop3d import NUSCENES_CAMERAS
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
    BLANK_CALIBRATION,
    BLANK_IMAGE,
    COMPRESSED_FORMATS,
    CameraInputError,
    check_intrinsics,
    intrinsics_for_image,
    probe_compressed,
    probe_raw,
)
from lidar_ovseg_ros.occupancy.camera_sync import CameraImage, CameraSet, CameraSetSynchronizer
from lidar_ovseg_ros.occupancy.pipeline import CameraCalibration
from lidar_ovseg_ros.pointcloud import (
    PointCloudFormatError,
    arrays_to_msg,
    finite_mask,
    labeled_cloud_to_msg,
    pack_rgb,
    read_points,
)
from lidar_ovseg_ros.viz import heat_colors
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID
from lidar_ovseg_ros.vocabulary_switch import SwitchStatus, VocabularySwitcher
from lidar_ovseg_ros.voxels import VoxelGrid


@dataclass
class CameraNodeParams:
    """Every parameter of the node, declared once: `ros2 param describe` shows these
    descriptions and ranges; `config/camera_occupancy.yaml` mirrors them. Read-only ones are read
    at start-up; `runtime=True` ones can be set while the node runs."""

    profile: str = node_param(
        "tiny",
        "full: pop3d_weights.pth + CLIP ViT-B/16; tiny: built-in untrained networks, output NOT "
        "meaningful.",
        choices=("tiny", "full"),
    )
    weights: str = node_param(
        "",
        "The released pop3d_weights.pth (profile full); empty: the cached pop3d "
        "(lidar-ovseg weights fetch pop3d).",
    )
    clip_model: str = node_param(
        "openai/clip-vit-base-patch16", "CLIP model for text queries (Hugging Face id or folder)."
    )
    device: str = node_param("cpu", "Torch device: cpu, cuda or cuda:N.")
    seed: int = node_param(0, "Random seed of the tiny networks.", range=(0, 2**31 - 1))
    min_score: float = node_param(
        -1.0,
        "Voxels scoring below get label 65535 (no class). cosine scores are in [-1, 1] (-1: "
        "keep all); dot scores are unbounded (keep min_score below any observed score).",
        range=(-1.0e6, 1.0e6),
    )
    score: str = node_param(
        "cosine",
        "cosine: both sides normalised, scores in [-1, 1]; dot: the official evaluation's raw "
        "dot product of the unnormalised voxel feature.",
        choices=("cosine", "dot"),
    )
    lidar_topic: str = node_param(
        "",
        "A LiDAR PointCloud2 topic (points in frame_id) labelled from the cameras alone (POP-3D "
        "points branch) on ~/output/points; empty: off.",
    )
    camera_names: tuple[str, ...] = node_param(
        NUSCENES_CAMERAS, "Cameras of a set, in the network's order."
    )
    topic_prefix: str = node_param(
        "/cameras",
        "Images on <prefix>/<camera>/image_raw[/compressed], CameraInfo on "
        "<prefix>/<camera>/camera_info.",
    )
    compressed: bool = node_param(True, "Subscribe to CompressedImage (else Image).")
    frame_id: str = node_param(
        "LIDAR_TOP", "Output frame (the network predicts in the LiDAR frame)."
    )
    use_tf: bool = node_param(True, "LiDAR->camera poses from tf2 when it is available.")
    calibration_file: str = node_param(
        "", "calib.json with cameras.<name>.lidar2cam ('nuscenes': the bundled frame)."
    )
    max_delay: float = node_param(
        0.2,
        "Seconds between the first and last image stamp of one set.",
        range=(0.0, 60.0),
        runtime=True,
    )
    wait: float = node_param(
        2.0,
        "Seconds (arrival time) a set waits for a late camera before it is mapped without it; a "
        "camera missing from the previous set is not waited for again. Longer: fewer blanked "
        "views when the CPU is loaded (six images sent back to back reached the node up to 2 s "
        "apart on a loaded 2-core machine), but a set missing a camera that delivered the "
        "previous set is mapped that much later. Images lost in transport are not helped.",
        range=(0.0, 60.0),
    )
    image_queue_depth: int = node_param(
        4,
        "Images queued per camera topic while the node is busy (older ones are then replaced and "
        "counted, replaced_<CAM>); with 1 the middleware silently overwrites images that wait.",
        range=(1, 100),
    )
    future_tolerance: float = node_param(
        1.0,
        "Images stamped more than this many seconds after the node clock are dropped and counted "
        "(future_<CAM>); 0 disables. Skipped while a simulated clock reads 0.",
        range=(0.0, 3600.0),
    )
    query: str = node_param(
        "",
        "Free-text grounding query; a heat map on ~/output/grounding (empty: off).",
        runtime=True,
    )
    max_markers: int = node_param(
        20_000, "Most cubes in ~/output/voxels; 0: none.", range=(0, 10_000_000), runtime=True
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
        "transitions (configure loads the models, activate subscribes, deactivate pauses).",
    )


def load_lidar2cam(spec: str, camera_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """LiDAR -> camera transforms from a calib.json (bundled frame name or path). A camera the
    file does not list is left out (its view is blanked and counted at run time); an entry that
    is not a finite 4x4 matrix is an error."""
    if spec in ("nuscenes", "kitti"):
        from lidar_ovseg_ros.frames import load_frame

        return {n: c.lidar2cam for n, c in load_frame(spec).cameras.items()}
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(2, "calibration file not found", str(path))
    data = json.loads(path.read_text())
    cams = data.get("cameras", data)
    out = {}
    for name in camera_names:
        if name not in cams or "lidar2cam" not in cams[name]:
            continue
        try:
            T = np.asarray(cams[name]["lidar2cam"], np.float64)
        except (TypeError, ValueError):
            T = np.zeros(0)
        if T.shape != (4, 4) or not np.isfinite(T).all():
            raise ValueError(f"{path}: 'lidar2cam' of camera '{name}' is not a finite 4x4 matrix")
        out[name] = T
    if not out:
        raise ValueError(f"{path}: no 'lidar2cam' for any of the cameras {list(camera_names)}")
    return out


def decode_image(msg: Any) -> np.ndarray:
    """CompressedImage (jpeg/png) or Image (rgb8/bgr8/mono8) -> [H, W, 3] uint8 RGB."""
    if isinstance(msg, CompressedImage):
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(bytes(msg.data)), formats=COMPRESSED_FORMATS) as img:
            return np.asarray(img.convert("RGB"))
    enc = msg.encoding.lower()
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}.get(enc)
    if channels is None:
        raise ValueError(f"unsupported image encoding '{msg.encoding}'")
    if msg.step < msg.width * channels or len(msg.data) < msg.step * msg.height:
        raise ValueError(
            f"image data of {len(msg.data)} bytes does not fit {msg.height}x{msg.width} {enc}"
        )
    rows = np.frombuffer(msg.data, np.uint8)[: msg.step * msg.height].reshape(msg.height, -1)
    px = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    if enc == "mono8":
        return np.repeat(px, 3, axis=2)
    if enc.startswith("bgr"):
        px = px[..., 2::-1]
    return np.ascontiguousarray(px[..., :3])


def probe_image(msg: Any) -> tuple[int, int]:
    """(width, height) from the header only (cheap enough for a callback), else
    CameraInputError: random bytes are refused at arrival and never evict a good image."""
    if isinstance(msg, CompressedImage):
        return probe_compressed(bytes(msg.data))
    return probe_raw(msg.height, msg.width, msg.encoding, msg.step, len(msg.data))


class CameraOccupancyNode(GuardedNode):
    """The camera-based open-vocabulary occupancy node."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("camera_occupancy_node", **node_kwargs)
        p = declare_node_params(self, CameraNodeParams)

        self._lock = threading.Lock()
        # Per-camera image counters live in self.sync.counters (see occupancy/camera_sync.py).
        self.counters = {"sets": 0, "processed": 0, "empty_sets": 0}
        self.last_problem = ""
        self.processing_ms = RollingStats()
        self.arrival_spread_ms = RollingStats()  # first to last image of each complete set
        self._infos: dict[str, CameraInfo] = {}  # the last valid CameraInfo per camera
        self._pending_set: CameraSet | None = None  # handed to the worker, not yet taken
        self.sync = CameraSetSynchronizer(
            p.camera_names,
            p.max_delay,
            p.wait,
            future_tolerance=p.future_tolerance,
            on_time_jump=self._on_time_jump,
        )
        self.vocab_params = VocabularyParameters(self)  # parameters exist in every state
        self.diagnostics = DiagnosticsPublisher(
            self, "camera occupancy", self._diagnostics, period=p.diagnostics_period
        )
        self.start()  # autostart: configure + activate now

    def load(self) -> None:
        """configure: the networks, camera poses, outputs, vocabulary build, worker, inputs."""
        p = self.params

        from lidar_ovseg_ros.occupancy.runtime import SwitchableOccupancy, build_predictor

        predictor = build_predictor(
            p.profile,
            weights=p.weights or None,
            clip_model=p.clip_model,
            device=p.device,
            seed=p.seed,
            min_score=p.min_score if p.min_score >= -1.0 else None,
            score=p.score,
        )
        self.model = SwitchableOccupancy(predictor)
        if p.profile == "tiny":
            self.get_logger().warning(
                "profile 'tiny': the built-in small untrained networks are running; voxels and "
                "labels are NOT meaningful. Set profile:=full with pop3d_weights.pth."
            )
        self._tf = self._make_tf_buffer() if p.use_tf else None
        self._static_lidar2cam = (
            load_lidar2cam(p.calibration_file, p.camera_names) if p.calibration_file else {}
        )
        if self._tf is None and not self._static_lidar2cam:
            raise ValueError(
                "no camera poses: tf2_ros is not available (or use_tf is false) and "
                "calibration_file is empty"
            )
        no_pose = [n for n in p.camera_names if n not in self._static_lidar2cam]
        if self._tf is None and no_pose:
            self.get_logger().warning(
                f"calibration_file has no pose for cameras {no_pose}: their views are blanked "
                "(counted as bad_calibration_<CAM> on /diagnostics)"
            )

        self.marker_pub = self.create_publisher(MarkerArray, "~/output/voxels", output_qos())
        self.points_pub = self.create_publisher(PointCloud2, "~/output/voxel_points", output_qos())
        self.grounding_pub = self.create_publisher(PointCloud2, "~/output/grounding", output_qos())
        self.vocab_pub = VocabularyPublisher(self)
        self.switcher = VocabularySwitcher(self.model, on_change=self._on_vocabulary_status)
        self.vocab_params.attach(self.switcher)
        vocabulary, source = self.vocab_params.initial()
        self.switcher.request(vocabulary, source)

        self.worker: LatestWorker = LatestWorker(self._process, name="camera-occupancy-worker")
        qos = input_qos(p.input_reliability)
        image_qos = input_qos(p.input_reliability)
        image_qos.depth = p.image_queue_depth
        image_type = CompressedImage if p.compressed else Image
        suffix = "image_raw/compressed" if p.compressed else "image_raw"
        prefix = p.topic_prefix.rstrip("/")
        self._subs = []
        # Camera inputs in their own reentrant group (their handlers are thread-safe): neither the
        # poll timer nor each other keep them waiting, so on a busy executor every image already
        # received is taken in the same round as a poll that finds its set overdue.
        inputs = ReentrantCallbackGroup()
        for name in p.camera_names:
            self._subs.append(
                self.create_subscription(
                    image_type,
                    f"{prefix}/{name}/{suffix}",
                    lambda msg, info, n=name: self._on_image(n, msg, info),
                    image_qos,
                    callback_group=inputs,
                )
            )
            self._subs.append(
                self.create_subscription(
                    CameraInfo,
                    f"{prefix}/{name}/camera_info",
                    lambda msg, n=name: self._on_camera_info(n, msg),
                    qos,
                    callback_group=inputs,
                )
            )
        self._poll_timer = self.create_timer(0.05, self._poll)
        self._setup_lidar(p.lidar_topic)
        self.get_logger().info(
            f"{len(p.camera_names)} cameras under {prefix}/<camera>/{suffix}; "
            f"poses from {'tf2' if self._tf else 'calibration_file'}; profile {p.profile}"
        )

    # -- inputs --------------------------------------------------------------------------------

    def _make_tf_buffer(self) -> Any:
        try:
            from tf2_ros import Buffer, TransformListener
        except ImportError:
            self.get_logger().info("tf2_ros is not installed: camera poses from calibration_file")
            return None
        buffer = Buffer()
        self._tf_listener = TransformListener(buffer, self)
        return buffer

    def _on_image(self, name: str, msg: Any, info: Any = None) -> None:
        arrival = time.monotonic()
        received_ns = (info or {}).get("received_timestamp") or 0
        if received_ns > 0:  # when the middleware got it, not when a busy executor took it
            age = (time.time_ns() - received_ns) * 1e-9
            if 0.0 <= age < 60.0:
                arrival -= age
        try:
            probe_image(msg)
        except CameraInputError as exc:
            self.sync.reject(name, "undecodable")
            self._problem(None, f"camera '{name}': cannot decode image: {exc}")
            return
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        clock = self.get_clock().now().nanoseconds * 1e-9
        future = self.sync.counters.get(name, "future")
        ready = self.sync.add(name, CameraImage(stamp, arrival, msg), clock)
        if self.sync.counters.get(name, "future") != future:
            self._problem(
                None,
                f"camera '{name}': image stamped {stamp - clock:.3f} s after the node clock "
                f"(future_tolerance {self.params.future_tolerance} s): dropped",
            )
        if ready is not None:
            self._submit(ready)

    def _on_camera_info(self, name: str, msg: CameraInfo) -> None:
        try:
            check_intrinsics(msg.k, msg.width, msg.height)
        except CameraInputError as exc:
            self.sync.counters.add(name, "bad_camera_info")
            self._problem(None, f"camera '{name}': CameraInfo refused: {exc}")
            return
        self._infos[name] = msg

    def _poll(self) -> None:
        ready = self.sync.poll(time.monotonic())
        if ready is not None:
            self._submit(ready)

    def _submit(self, ready: CameraSet) -> None:
        if not ready.missing:
            self.arrival_spread_ms.add(ready.arrival_spread * 1e3)
        with self._lock:  # one hand-over at a time: the worker's slot and ours must agree
            replaced, self._pending_set = self._pending_set, ready
            self.worker.submit(ready)
        if replaced is not None:  # the worker was busy: the older set is never mapped
            for name in replaced.images:
                self.sync.counters.add(name, "replaced")

    def _on_time_jump(self, old: float, new: float) -> None:
        self.get_logger().warning(
            f"camera stamps jumped back in time (last set {old:.3f} s, now {new:.3f} s: a bag "
            "replayed or looped, or a simulation reset): camera sets cleared, mapping goes on"
        )

    def params_changed(self, names: set[str]) -> None:
        if "max_delay" in names:
            self.sync.max_delay = float(self.params.max_delay)

    def _on_vocabulary_status(self, status: SwitchStatus) -> None:
        self.vocab_pub.publish(status, self.params.frame_id)

    def _lidar2cam(self, name: str, info: CameraInfo | None, stamp: Any) -> np.ndarray | None:
        if self._tf is not None and info is not None and info.header.frame_id:
            try:
                t = self._tf.lookup_transform(info.header.frame_id, self.params.frame_id, stamp)
                return _transform_to_matrix(t.transform)
            except Exception as exc:  # tf2 raises several lookup exception types
                self.get_logger().warning(
                    f"tf2 lookup {self.params.frame_id}->{info.header.frame_id} failed: {exc}",
                    throttle_duration_sec=5.0,
                )
        return self._static_lidar2cam.get(name)

    # -- the worker ----------------------------------------------------------------------------

    def _problem(self, counter: str | None, text: str) -> None:
        with self._lock:
            if counter is not None:
                self.counters[counter] += 1
            self.last_problem = text
        self.get_logger().warning(text, throttle_duration_sec=5.0)

    def _views(
        self, cams: CameraSet
    ) -> tuple[dict[str, np.ndarray], dict[str, CameraCalibration], list[str]]:
        """Decoded image + calibration per camera; a camera that is late, undecodable or without
        a usable calibration gets the blank view (it contributes nothing) and is counted."""
        images = dict.fromkeys(self.params.camera_names, BLANK_IMAGE)
        calibs = dict.fromkeys(self.params.camera_names, BLANK_CALIBRATION)
        used: list[str] = []
        count = self.sync.counters.add
        for name in self.params.camera_names:
            item = cams.images.get(name)
            if item is None:  # late: counted by the synchronizer
                continue
            info = self._infos.get(name)
            lidar2cam = (
                None if info is None else self._lidar2cam(name, info, item.image.header.stamp)
            )
            if info is None or lidar2cam is None:
                count(name, "bad_calibration")
                what = "no valid CameraInfo" if info is None else "no LiDAR->camera pose"
                self._problem(None, f"camera '{name}': {what}; its view is blanked")
                continue
            try:
                rgb = decode_image(item.image)
            except Exception as exc:  # one broken view must not cost the other cameras' map
                count(name, "undecodable")
                self._problem(None, f"camera '{name}': cannot decode image: {exc}")
                continue
            try:
                K = np.asarray(info.k, np.float64).reshape(3, 3)
                K = intrinsics_for_image(K, info.width, info.height, rgb.shape[1], rgb.shape[0])
            except CameraInputError as exc:
                count(name, "bad_calibration")
                self._problem(None, f"camera '{name}': {exc}; its view is blanked")
                continue
            images[name] = rgb
            calibs[name] = CameraCalibration(K=K, lidar2cam=lidar2cam)
            used.append(name)
        return images, calibs, used

    def _process(self, cams: CameraSet) -> None:
        start = time.perf_counter()
        with self._lock:
            if self._pending_set is not cams:
                return  # a newer set replaced it before the worker took it (counted)
            self._pending_set = None
            self.counters["sets"] += 1
        if self.model.active is None:
            for name in cams.images:
                self.sync.counters.add(name, "dropped")
            return
        images, calibs, used = self._views(cams)
        if not used:  # never a map from blank views only
            self._problem("empty_sets", "no image of the camera set could be used: no map")
            return
        try:
            result, active = self.model.predict(images, calibs, points=self._lidar_points(cams))
        except Exception:
            for name in used:
                self.sync.counters.add(name, "dropped")
            raise
        for name in used:
            self.sync.counters.add(name, "used")
        newest = max(cams.images.values(), key=lambda im: im.stamp)
        header = Header(frame_id=self.params.frame_id, stamp=newest.image.header.stamp)
        vocabulary = active.vocabulary
        rgb = vocabulary.colors_for(result.labels)
        self.points_pub.publish(
            labeled_cloud_to_msg(header, result.centers, None, result.labels, result.scores, rgb)
        )
        order = np.argsort(-result.scores, kind="stable")[: int(self._runtime["max_markers"])]
        grid = VoxelGrid(
            centers=result.centers[order],
            labels=result.labels[order],
            counts=np.ones(len(order), np.int64),
            voxel_size=float(min(result.voxel_size)),
            total_voxels=result.num_occupied,
        )
        self.marker_pub.publish(voxel_markers(grid, vocabulary, header))
        self._publish_lidar_labels(result, vocabulary)
        query = str(self._runtime["query"]).strip()
        if query:
            heat = self.model.grounding(query, result).astype(np.float32)
            self.grounding_pub.publish(
                arrays_to_msg(
                    header,
                    {
                        "x": result.centers[:, 0],
                        "y": result.centers[:, 1],
                        "z": result.centers[:, 2],
                        "score": heat,
                        "rgb": pack_rgb(heat_colors(heat)),
                    },
                )
            )
        self.processing_ms.add((time.perf_counter() - start) * 1e3)
        with self._lock:
            self.counters["processed"] += 1

    # -- LiDAR points labelled from the cameras (lidar_topic) -----------------------------------

    def _setup_lidar(self, topic: str) -> None:
        self.lidar_counters = {
            "clouds_received": 0,
            "clouds_labeled": 0,
            "clouds_rejected": 0,
            "clouds_stale": 0,
        }
        self._cloud: PointCloud2 | None = None  # the newest cloud
        self._cloud_out: tuple[PointCloud2, Any, np.ndarray] | None = None  # for the last set
        self.lidar_points_pub = self.create_publisher(PointCloud2, "~/output/points", output_qos())
        if topic:
            self._subs.append(
                self.create_subscription(
                    PointCloud2, topic, self._on_lidar, qos_profile_sensor_data
                )
            )

    def _on_lidar(self, msg: PointCloud2) -> None:
        with self._lock:
            self.lidar_counters["clouds_received"] += 1
            self._cloud = msg

    def _lidar_points(self, cams: CameraSet) -> np.ndarray | None:
        """Finite xyz of the newest cloud when it belongs to this camera set (stamps within
        max_delay, frame frame_id); the cloud is kept for `_publish_lidar_labels`."""
        with self._lock:
            msg, self._cloud, self._cloud_out = self._cloud, None, None
        if msg is None:
            return None
        frame = self.params.frame_id
        if msg.header.frame_id and msg.header.frame_id != frame:
            return self._reject_cloud(
                "clouds_rejected", f"LiDAR cloud in frame '{msg.header.frame_id}', not '{frame}'"
            )
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        newest = max(im.stamp for im in cams.images.values())
        if abs(stamp - newest) > float(self._runtime["max_delay"]):
            return self._reject_cloud(
                "clouds_stale",
                f"LiDAR cloud {stamp - newest:+.3f} s from the camera set (max_delay): unlabeled",
            )
        try:
            scan = read_points(msg)
        except PointCloudFormatError as exc:
            return self._reject_cloud("clouds_rejected", f"malformed LiDAR cloud: {exc}")
        finite = finite_mask(scan.xyz)
        self._cloud_out = (msg, scan, finite)
        return np.asarray(scan.xyz[finite], np.float32)

    def _reject_cloud(self, counter: str, text: str) -> None:
        with self._lock:
            self.lidar_counters[counter] += 1
            self.last_problem = text
        self.get_logger().warning(text, throttle_duration_sec=5.0)

    def _publish_lidar_labels(self, result: Any, vocabulary: Any) -> None:
        """~/output/points: the cloud's points (same header and count; non-finite points get
        NO_CLASS_ID) with the label and score of the camera features sampled at each."""
        out, self._cloud_out = self._cloud_out, None
        if out is None or result.point_labels is None:
            return
        msg, scan, finite = out
        labels = np.full(len(finite), NO_CLASS_ID, np.uint16)
        scores = np.zeros(len(finite), np.float32)
        labels[finite] = result.point_labels
        scores[finite] = result.point_scores
        n = len(finite)
        height = scan.shape[0] if scan.shape[0] * scan.shape[1] == n and n else 1
        self.lidar_points_pub.publish(
            labeled_cloud_to_msg(
                msg.header,
                scan.xyz,
                scan.intensity,
                labels,
                scores,
                vocabulary.colors_for(labels),
                height=height,
            )
        )
        with self._lock:
            self.lidar_counters["clouds_labeled"] += 1

    # -- diagnostics ---------------------------------------------------------------------------

    def _diagnostics(self) -> tuple[bytes, str, dict[str, Any]]:
        status = self.switcher.status()
        with self._lock:
            values: dict[str, Any] = dict(self.counters)
            last_problem = self.last_problem
        values.update(
            dropped_stale=self.worker.dropped,
            worker_errors=self.worker.failed,
            callback_errors=self.callback_errors,
            device=str(self.model.device),
            profile=self.params.profile,
            last_problem=last_problem,
            query=self._runtime["query"],
            **self.lidar_counters,
        )
        # Per camera: received = used + replaced + undecodable + bad_calibration + dropped +
        # out_of_order + future + stale + pending (late: sets mapped without the camera).
        for name, counts in self.sync.counters.snapshot().items():
            for key, n in counts.items():
                values[f"{key}_{name}"] = n
        values.update(
            time_jumps=self.sync.time_jumps,
            future_stamps=self.sync.future_stamps,
            out_of_order_stamps=self.sync.out_of_order_stamps,
        )
        for k, v in self.processing_ms.summary().items():
            values[f"processing_time_ms_{k}"] = v
        for k, v in self.arrival_spread_ms.summary().items():
            values[f"arrival_spread_ms_{k}"] = v
        late_by = np.asarray(self.sync.late_by_seconds(), np.float64) * 1e3  # late images: how late
        if late_by.size:
            values.update(
                late_by_ms_median=float(np.median(late_by)),
                late_by_ms_p90=float(np.percentile(late_by, 90)),
                late_by_ms_max=float(late_by.max()),
            )
        vocab_values, vocab_state = vocabulary_diagnostics(status)
        values.update(vocab_values)
        late = [n for n, c in self.sync.late_counts.items() if c]
        if vocab_state is not None:
            level, message = vocab_state
        elif last_problem or self.worker.failed:
            level, message = DiagnosticStatus.WARN, last_problem or str(self.worker.last_error)
        elif late:
            level, message = DiagnosticStatus.WARN, f"late cameras dropped from sets: {late}"
        else:
            level, message = DiagnosticStatus.OK, "mapping"
        return level, message, values

    def unload(self, timeout: float = 5.0) -> None:
        """cleanup: stop the worker (the frame in progress is dropped) and any vocabulary
        build, drop the model."""
        if getattr(self, "worker", None) is not None:
            self.worker.stop(timeout * 0.6)
        if getattr(self, "switcher", None) is not None:
            self.switcher.shutdown(timeout * 0.4)
        self.vocab_params.attach(None)
        self.worker = self.switcher = self.model = None  # type: ignore[assignment]


def _transform_to_matrix(t: Any) -> np.ndarray:
    x, y, z, w = t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w
    m = np.eye(4)
    m[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    m[:3, 3] = [t.translation.x, t.translation.y, t.translation.z]
    return m


def main(args: list[str] | None = None) -> int:
    return run_node(CameraOccupancyNode, "camera_occupancy_node", args)


if __name__ == "__main__":
    sys.exit(main())
