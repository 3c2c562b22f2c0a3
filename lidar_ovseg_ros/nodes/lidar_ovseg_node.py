"""`lidar_ovseg_node`: labels every incoming LiDAR point with the active open vocabulary.

Thin adapter: PointCloud2 -> numpy (pointcloud.py) -> LidarSegmenter -> labeled PointCloud2,
voxel MarkerArray, vocabulary/legend topics and /diagnostics. The subscription callback only
stores the newest cloud; one worker thread runs the model and drops stale clouds (counted).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.clock import ClockChange, JumpThreshold
from rclpy.duration import Duration
from rclpy.event_handler import (
    QoSMessageLostInfo,
    SubscriptionEventCallbacks,
    UnsupportedEventTypeError,
)
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float32
from visualization_msgs.msg import MarkerArray

from lidar_ovseg_ros import allocator
from lidar_ovseg_ros.latest_worker import LatestWorker
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
    stamp_to_seconds,
    vocabulary_diagnostics,
    voxel_markers,
)
from lidar_ovseg_ros.pointcloud import (
    PointCloudFormatError,
    arrays_to_msg,
    labeled_cloud_to_msg,
    pack_rgb,
    read_points,
)
from lidar_ovseg_ros.viz import heat_colors
from lidar_ovseg_ros.vocabulary_switch import SwitchStatus, VocabularySwitcher
from lidar_ovseg_ros.voxels import voxelize_labels


@dataclass
class LidarNodeParams:
    """Every parameter of the node, declared once: `ros2 param describe` shows these
    descriptions and ranges; `config/lidar_ovseg.yaml` mirrors them. Read-only ones are read at
    start-up; `runtime=True` ones can be set while the node runs."""

    # Model (read at start-up).
    method: str = node_param(
        "igloss",
        "Segmentation method: igloss (ScaLR+ features + image prototypes) or openscene "
        "(CLIP-text MinkUNet).",
    )
    profile: str = node_param(
        "tiny",
        "full: real models (ScaLR+ checkpoint, DINOv2-large, sd-turbo or cached weights); tiny: "
        "built-in small untrained models, labels NOT meaningful.",
        choices=("tiny", "full"),
    )
    checkpoint: str = node_param(
        "",
        "ScaLR+ ckpt_last.pth (profile full, method igloss); empty: the cached "
        "igloss-scalr-plus (lidar-ovseg weights fetch).",
    )
    backbone: str = node_param("scalr_plus", "LiDAR backbone preset (e.g. scalr_plus).")
    sensor: str = node_param(
        "nuscenes", "Intensity normalisation of the sensor.", choices=("nuscenes", "semantickitti")
    )
    feature_model: str = node_param(
        "facebook/dinov2-large", "Image feature model for prototypes (Hugging Face id or folder)."
    )
    generator_model: str = node_param(
        "stabilityai/sd-turbo", "Text-to-image model generating prototype images (id or folder)."
    )
    images_per_class: int = node_param(4, "Prototype images generated per class.", range=(1, 1000))
    seed: int = node_param(
        0, "Random seed of image generation and tiny models.", range=(0, 2**31 - 1)
    )
    cache_dir: str = node_param(
        "", "Prototype cache folder; empty: ~/.cache/lidar_ovseg_ros/prototypes."
    )
    classifier: str = node_param(
        "logreg", "Prototype classifier: logreg (IGLOSS) or nearest.", choices=("logreg", "nearest")
    )
    min_score: float = node_param(
        0.0,
        "Points scoring below get label 65535 (no class); 0 disables the threshold.",
        range=(0.0, 1.0),
    )
    device: str = node_param("auto", "Torch device: auto, cpu, cuda or cuda:N.")
    amp: str = node_param(
        "none", "Autocast on CUDA: none, fp16 or bf16.", choices=("none", "fp16", "bf16")
    )
    # OpenScene (method openscene; read at start-up).
    openscene_checkpoint: str = node_param(
        "",
        "OpenScene nuscenes_openseg.pth.tar (method openscene, profile full); empty: the cached "
        "openscene-nuscenes-openseg.",
    )
    openscene_arch: str = node_param("MinkUNet18A", "OpenScene 3D network architecture.")
    openscene_features: str = node_param(
        "openseg",
        "OpenScene feature space: openseg (768-d, CLIP ViT-L/14@336) or lseg (512-d).",
        choices=("openseg", "lseg"),
    )
    text_model: str = node_param(
        "", "CLIP text tower for OpenScene; empty: the one matching openscene_features."
    )
    prompt_template: str = node_param(
        "a {} in a scene", "Prompt template for class names ({} is the name; OpenScene)."
    )
    tta_repeats: int = node_param(
        0,
        "0: one pass; N: the official random rotation/scale test-time augmentation, N passes.",
        range=(0, 100),
    )
    # Auto vocabulary (3D-AVS; method openscene; read at start-up).
    vocabulary_mode: str = node_param(
        "manual",
        "manual: the vocabulary parameters decide; auto: the node captions the newest scan every "
        "auto_period s (SMAP + ClipCap), turns the captions into classes and swaps them in.",
        choices=("manual", "auto"),
    )
    auto_period: float = node_param(
        10.0, "Seconds between auto-vocabulary rounds (vocabulary_mode auto).", range=(0.1, 86400.0)
    )
    auto_keep_base: bool = node_param(
        True, "Auto mode: the start-up vocabulary's classes always stay (base classes)."
    )
    auto_window: int = node_param(
        5, "Auto mode: a class leaves after this many rounds without its tag.", range=(1, 1000)
    )
    auto_max_classes: int = node_param(
        24, "Auto mode: most caption classes (base classes come on top).", range=(0, 256)
    )
    auto_merge_threshold: float = node_param(
        0.9, "Auto mode: CLIP-text cosine at which two tags are one class.", range=(0.0, 1.0)
    )
    smap_checkpoint: str = node_param(
        "", "3D-AVS point captioner smap_model_epoch_20.pth.tar (auto mode, profile full)."
    )
    clipcap_weights: str = node_param(
        "", "ClipCap COCO decoder coco_weights.pt (auto mode, profile full)."
    )
    gpt2_tokenizer: str = node_param(
        "gpt2", "GPT-2 tokenizer of ClipCap (hub id or folder; auto mode, profile full)."
    )
    auto_image_topics: str = node_param(
        "",
        "Auto mode: comma-separated camera image topics (Image, or CompressedImage when the "
        "topic ends in 'compressed') whose newest images are captioned too; empty: LiDAR only.",
    )
    image_captioner: str = node_param(
        "Salesforce/blip-image-captioning-base",
        "Auto mode: BLIP captioning model (hub id or folder) for auto_image_topics.",
    )
    auto_tagger: str = node_param(
        "rules",
        "Auto mode: Caption2Tag by rules (deterministic, no model) or llm (a small instruction "
        "model with a fixed prompt).",
        choices=("rules", "llm"),
    )
    auto_tagger_model: str = node_param(
        "", "Auto mode, auto_tagger llm: causal LM id or folder; empty: Qwen2.5-0.5B-Instruct."
    )
    # Free-text heat map on ~/output/grounding (methods with text features; runtime).
    query: str = node_param(
        "", "Free-text query; a heat map on ~/output/grounding (empty: off).", runtime=True
    )
    # I/O (read per frame, settable at runtime).
    input_reliability: str = node_param(
        "best_effort",
        "QoS reliability of the cloud subscription (bags and many drivers are reliable).",
        choices=("best_effort", "reliable"),
    )
    max_points: int = node_param(
        500_000, "Larger clouds are rejected and counted.", range=(1, 50_000_000), runtime=True
    )
    memory_budget_mb: float = node_param(
        4096.0,
        "Most memory (MB) one cloud may take, estimated from the model's measured per-point cost "
        "(README, Memory); a cloud that would not fit is rejected and counted "
        "(rejected_memory_budget) before any big allocation, whatever max_points says; 0: no "
        "budget.",
        range=(0.0, 10_000_000.0),
        runtime=True,
    )
    out_of_crop: str = node_param(
        "nearest",
        "Label of finite points outside the backbone's crop (64 m for ScaLR+): nearest (the "
        "label of the nearest kept point, as IGLOSS and ScaLR do) or no_class (65535).",
        choices=("nearest", "no_class"),
        runtime=True,
    )
    voxel_size: float = node_param(
        0.4, "Cube size (m) of ~/output/voxels.", range=(0.01, 100.0), runtime=True
    )
    max_markers: int = node_param(
        20_000,
        "Most cubes in ~/output/voxels (RViz slows beyond ~20k); 0: none.",
        range=(0, 10_000_000),
        runtime=True,
    )
    publish_markers: bool = node_param(True, "Publish ~/output/voxels.", runtime=True)
    max_age: float = node_param(
        0.0,
        "Clouds older than this many seconds (node clock minus stamp; use_sim_time-aware) are "
        "dropped and counted as dropped_old, not labeled; 0 disables.",
        range=(0.0, 3600.0),
        runtime=True,
    )
    diagnostics_period: float = node_param(
        1.0, "Seconds between /diagnostics messages.", range=(0.05, 3600.0)
    )
    autostart: bool = node_param(
        True,
        "Configure and activate at start-up; false: a managed node that waits for lifecycle "
        "transitions (configure loads the models, activate subscribes, deactivate pauses).",
    )


TIME_JUMP_SECONDS = 1.0
"""A cloud stamped this much before the previous one (or the node clock jumping back this much)
is a time jump (bag looped or replayed again, simulation reset), not network reordering."""


class LidarOvsegNode(GuardedNode):
    """The LiDAR open-vocabulary segmentation node."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("lidar_ovseg_node", **node_kwargs)
        p = declare_node_params(self, LidarNodeParams)
        allocator.configure()  # RSS stays bounded under clouds of varying sizes (issue 9.6)
        self._trimmer = allocator.Trimmer(min_interval=1.0)

        self._lock = threading.Lock()
        self.counters = {
            "received": 0,
            "processed": 0,
            "rejected_malformed": 0,
            "rejected_oversized": 0,
            "rejected_memory_budget": 0,  # would not fit in memory_budget_mb
            "empty": 0,
            "skipped_no_vocabulary": 0,
            "grounding_errors": 0,
            "messages_lost": 0,  # reported by the middleware (e.g. a cloud too large for DDS)
            "dropped_old": 0,  # older than max_age on the node clock
            "time_jumps": 0,  # stamps or the node clock went backwards (bag loop, sim reset)
        }
        self.last_rejection = ""
        self.processing_ms = RollingStats()
        self.latency_ms = RollingStats()
        # per stage of the last frames (ms): decode, the segmenter's STAGES, encode, markers
        self.stage_ms: dict[str, RollingStats] = {}
        self._last_stamp: float | None = None
        self._clock_jump = self.get_clock().create_jump_callback(
            JumpThreshold(
                min_forward=None,
                min_backward=Duration(seconds=-TIME_JUMP_SECONDS),
                on_clock_change=True,
            ),
            post_callback=self._on_clock_jump,
        )
        self._frame_id = ""
        self.vocab_params = VocabularyParameters(self)  # parameters exist in every state
        self.diagnostics = DiagnosticsPublisher(
            self, "lidar segmentation", self._diagnostics, period=p.diagnostics_period
        )
        self.start()  # autostart: configure + activate now

    def load(self) -> None:
        """configure: the model, outputs, vocabulary build, worker and the cloud input."""
        p = self.params

        from lidar_ovseg_ros.segmentation.base import METHODS, supports_grounding
        from lidar_ovseg_ros.segmentation.segmenter import LidarSegmenter

        if p.method not in METHODS:
            raise ValueError(f"parameter 'method' must be one of {list(METHODS)}, got {p.method!r}")
        if p.vocabulary_mode == "auto" and p.method != "openscene":  # before any model loads
            raise ValueError("vocabulary_mode 'auto' needs method 'openscene' (classes by text)")
        if p.method == "openscene":
            self.segmenter = _openscene_segmenter(p)
        else:
            self.segmenter = LidarSegmenter.from_config(_igloss_config(p))
        self.grounding = supports_grounding(self.segmenter)
        if str(p.query).strip() and not self.grounding:
            raise ValueError(f"'query' needs text-aligned features; method {p.method} has none")
        if p.profile == "tiny":
            self.get_logger().warning(
                f"profile 'tiny' (method {p.method}): the built-in small untrained models are "
                "running; labels are NOT meaningful. Set profile:=full with the method's "
                "checkpoint for real labels."
            )

        self.cloud_pub = self.create_publisher(PointCloud2, "~/output/points", output_qos())
        self.grounding_pub = self.create_publisher(PointCloud2, "~/output/grounding", output_qos())
        self.marker_pub = self.create_publisher(MarkerArray, "~/output/voxels", output_qos())
        self.proc_pub = self.create_publisher(Float32, "~/debug/processing_time_ms", 10)
        self.latency_pub = self.create_publisher(Float32, "~/debug/pipeline_latency_ms", 10)
        self.vocab_pub = VocabularyPublisher(self)

        self.switcher = VocabularySwitcher(self.segmenter, on_change=self._on_vocabulary_status)
        self.vocab_params.attach(self.switcher)
        vocabulary, source = self.vocab_params.initial()
        self.switcher.request(vocabulary, source)
        self.autovocab = None
        if p.vocabulary_mode == "auto":
            from lidar_ovseg_ros.nodes.autovocab_mode import AutoVocabMode

            base = vocabulary if p.auto_keep_base else None
            self.autovocab = AutoVocabMode(self, p, self.segmenter, self.switcher, base)

        if self._max_points_effective() < int(p.max_points):
            self.get_logger().warning(
                f"max_points={p.max_points} does not fit in memory_budget_mb="
                f"{p.memory_budget_mb}: clouds above {self._max_points_effective()} points will "
                "be rejected (rejected_memory_budget)"
            )
        self.worker: LatestWorker = LatestWorker(self._process, name="lidar-ovseg-worker")
        self.subscription = self._create_input(input_qos(p.input_reliability))
        self.get_logger().info(
            f"listening on {self.subscription.topic_name} ({p.input_reliability}); "
            f"device {self.segmenter.device}; profile {p.profile}"
        )

    # -- callbacks -----------------------------------------------------------------------------

    def _on_cloud(self, msg: PointCloud2) -> None:
        with self._lock:
            self.counters["received"] += 1
        self.worker.submit(msg)

    def _create_input(self, qos: Any) -> Any:
        """The cloud subscription; it counts the messages the middleware reports lost (a
        best-effort cloud too large for the DDS transport never reaches the callback)."""
        events = SubscriptionEventCallbacks(message_lost=self._on_message_lost)
        try:
            return self.create_subscription(
                PointCloud2, "~/input/points", self._on_cloud, qos, event_callbacks=events
            )
        except UnsupportedEventTypeError:
            self.get_logger().warning("this middleware does not report lost messages")
            return self.create_subscription(PointCloud2, "~/input/points", self._on_cloud, qos)

    def _on_message_lost(self, info: QoSMessageLostInfo) -> None:
        with self._lock:
            self.counters["messages_lost"] += int(info.total_count_change)
            total = self.counters["messages_lost"]
        self.get_logger().warning(
            f"the middleware lost {total} input clouds so far: large best-effort clouds need "
            "the DDS profile of config/dds/ (see README, 'Large clouds')",
            throttle_duration_sec=10.0,
        )

    def check_param(self, name: str, value: Any) -> str | None:
        if name == "query" and str(value).strip() and self.configured and not self.grounding:
            return f"method {self.params.method} has no text-aligned features for 'query'"
        return None

    def _max_points_effective(self) -> int:
        """max_points, lowered to what fits in memory_budget_mb."""
        budget_points = self._budget_points()
        max_points = int(self._runtime["max_points"])
        return max_points if budget_points is None else min(max_points, budget_points)

    def _budget_points(self) -> int | None:
        """The most points one cloud may have under `memory_budget_mb` (None: no budget, or a
        method without a memory model)."""
        budget = float(self._runtime["memory_budget_mb"])
        model = getattr(self.segmenter, "memory_model", None)
        if budget <= 0 or model is None:
            return None
        return model().max_points(budget * 2**20)

    def _on_vocabulary_status(self, status: SwitchStatus) -> None:
        self.vocab_pub.publish(status, self._frame_id)

    # -- the worker ----------------------------------------------------------------------------

    def _reject(self, counter: str, reason: str) -> None:
        with self._lock:
            self.counters[counter] += 1
            self.last_rejection = reason
        self.get_logger().warning(f"rejected a cloud: {reason}", throttle_duration_sec=5.0)

    def _time_jumped(self, why: str) -> None:
        """Stamps or the clock went backwards: clear time-based state, log once, count, go on."""
        with self._lock:
            self.counters["time_jumps"] += 1
            self._last_stamp = None
        self.latency_ms = RollingStats()  # latencies across the jump mean nothing
        self.get_logger().warning(f"time jumped backwards ({why}): state cleared, going on")

    def _on_clock_jump(self, jump: Any) -> None:
        if jump.clock_change in (ClockChange.ROS_TIME_ACTIVATED, ClockChange.ROS_TIME_DEACTIVATED):
            return  # use_sim_time switched on or off: not a jump of the stamps
        self._time_jumped(f"the node clock jumped {jump.delta.nanoseconds * 1e-9:.1f} s")

    def _too_old(self, msg: PointCloud2) -> bool:
        """Detect a backwards jump of the stamps; drop (and count) a cloud older than max_age."""
        stamp = stamp_to_seconds(msg.header.stamp)
        with self._lock:
            last, self._last_stamp = self._last_stamp, stamp
        if last is not None and stamp < last - TIME_JUMP_SECONDS:
            self._time_jumped(f"a cloud stamped {last - stamp:.1f} s before the previous one")
        max_age = float(self.params.max_age)
        now = self.get_clock().now().nanoseconds * 1e-9
        if max_age > 0 and now > 0 and now - stamp > max_age:  # now 0: no /clock yet
            self._reject("dropped_old", f"cloud is {now - stamp:.2f} s old (max_age {max_age} s)")
            return True
        return False

    def _process(self, msg: PointCloud2) -> None:
        self._trimmer.maybe_trim()  # free heap pages of the previous clouds, at most 1/s
        start = time.perf_counter()
        if self._too_old(msg):
            return
        try:
            scan = read_points(msg)
        except PointCloudFormatError as exc:
            self._reject("rejected_malformed", f"malformed PointCloud2: {exc}")
            return
        n = len(scan)
        max_points = int(self._runtime["max_points"])
        if n > max_points:
            self._reject("rejected_oversized", f"{n} points exceeds max_points={max_points}")
            return
        budget_points = self._budget_points()
        if budget_points is not None and n > budget_points:
            self._reject(
                "rejected_memory_budget",
                f"{n} points would exceed memory_budget_mb={self._runtime['memory_budget_mb']} "
                f"(fits {budget_points} points)",
            )
            return
        if self.switcher.status().active is None:
            with self._lock:
                self.counters["skipped_no_vocabulary"] += 1
            return
        self._frame_id = msg.header.frame_id
        points = np.zeros((n, 4), np.float32)
        points[:, :3] = scan.xyz
        if scan.intensity is not None:
            points[:, 3] = scan.intensity
        elif n:
            self.get_logger().warning(
                "the cloud has no intensity field (looked for "
                "intensity/reflectivity/signal/reflectance/i): using 0",
                once=True,
            )
        if n == 0:
            with self._lock:
                self.counters["empty"] += 1
        nearest = self._runtime["out_of_crop"] == "nearest"
        t_decoded = time.perf_counter()
        result = self.segmenter.segment(points, label_outside_crop=nearest)
        t_segmented = time.perf_counter()
        vocabulary = result.vocabulary.vocabulary
        rgb = vocabulary.colors_for(result.labels)
        height = scan.shape[0] if scan.shape[0] * scan.shape[1] == n and n else 1
        out = labeled_cloud_to_msg(
            msg.header, scan.xyz, points[:, 3], result.labels, result.scores, rgb, height=height
        )
        self.cloud_pub.publish(out)
        t_encoded = time.perf_counter()
        if self.autovocab is not None:
            self.autovocab.on_frame(points, result)
        self._publish_grounding(msg, scan.xyz, result)
        if self._runtime["publish_markers"]:
            grid = voxelize_labels(
                scan.xyz,
                result.labels,
                float(self._runtime["voxel_size"]),
                max_voxels=int(self._runtime["max_markers"]),
            )
            self.marker_pub.publish(voxel_markers(grid, vocabulary, msg.header))
        t_markers = time.perf_counter()
        stages = {f"segment_{k}": v for k, v in result.timings.items()}
        stages.update(
            decode=t_decoded - start,
            encode=t_encoded - t_segmented,
            markers=t_markers - t_encoded,
        )
        for name, seconds in stages.items():
            self.stage_ms.setdefault(name, RollingStats()).add(seconds * 1e3)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        latency_ms = (
            self.get_clock().now().nanoseconds * 1e-9 - stamp_to_seconds(msg.header.stamp)
        ) * 1e3
        self.processing_ms.add(elapsed_ms)
        self.latency_ms.add(latency_ms)
        self.proc_pub.publish(Float32(data=float(elapsed_ms)))
        self.latency_pub.publish(Float32(data=float(latency_ms)))
        with self._lock:
            self.counters["processed"] += 1

    def _publish_grounding(self, msg: PointCloud2, xyz: np.ndarray, result: Any) -> None:
        """The heat map of the `query` parameter over the points (x, y, z, score, rgb)."""
        query = str(self._runtime["query"]).strip()
        if not query or not self.grounding:
            return
        try:
            heat = self.segmenter.grounding(query, result).astype(np.float32)
        except ValueError as exc:
            self._reject("grounding_errors", f"query {query!r}: {exc}")
            return
        fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "score": heat}
        fields["rgb"] = pack_rgb(heat_colors(heat))
        self.grounding_pub.publish(arrays_to_msg(msg.header, fields))

    # -- diagnostics ---------------------------------------------------------------------------

    def _diagnostics(self) -> tuple[bytes, str, dict[str, Any]]:
        status = self.switcher.status()
        with self._lock:
            counters = dict(self.counters)
            last_rejection = self.last_rejection
        values: dict[str, Any] = {
            **counters,
            "dropped_stale": self.worker.dropped,
            "worker_errors": self.worker.failed,
            "callback_errors": self.callback_errors,
            "device": str(self.segmenter.device),
            "profile": self.params.profile,
            "method": self.params.method,
            "query": str(self._runtime["query"]),
            "last_rejection": last_rejection,
            "max_points_effective": self._max_points_effective(),
        }
        vocab_values, vocab_state = vocabulary_diagnostics(status)
        values.update(vocab_values)
        if self.autovocab is not None:
            values.update(self.autovocab.diagnostics())
        extractor = getattr(self.segmenter, "extractor", None)
        values["preprocess_backend"] = getattr(extractor, "preprocess_backend", "n/a")
        for key, stats in (
            ("processing_time_ms", self.processing_ms),
            ("latency_ms", self.latency_ms),
            *((f"stage_{name}_ms", st) for name, st in sorted(self.stage_ms.items())),
        ):
            for k, v in stats.summary().items():
                values[f"{key}_{k}"] = v
        if vocab_state is not None:
            level, message = vocab_state
        elif (
            counters["rejected_malformed"]
            or counters["rejected_oversized"]
            or counters["rejected_memory_budget"]
            or self.worker.failed
        ):
            level, message = DiagnosticStatus.WARN, f"rejected input: {last_rejection}"
        else:
            level, message = DiagnosticStatus.OK, "labeling"
        return level, message, values

    def unload(self, timeout: float = 5.0) -> None:
        """cleanup: stop the worker (the frame in progress is dropped) and any vocabulary
        build, drop the segmenter."""
        if getattr(self, "autovocab", None) is not None:
            self.autovocab.stop(timeout * 0.2)
        if getattr(self, "worker", None) is not None:
            self.worker.stop(timeout * 0.6)
        if getattr(self, "switcher", None) is not None:
            self.switcher.shutdown(timeout * 0.4)
        self.vocab_params.attach(None)
        self.worker = self.switcher = self.segmenter = None  # type: ignore[assignment]


def _igloss_config(p: LidarNodeParams) -> Any:
    from lidar_ovseg_ros.segmentation.segmenter import SegmenterConfig

    return SegmenterConfig(
        profile=p.profile,
        checkpoint=p.checkpoint or None,
        backbone=p.backbone,
        sensor=p.sensor,
        feature_model=p.feature_model,
        generator_model=p.generator_model,
        images_per_class=p.images_per_class,
        seed=p.seed,
        cache_dir=p.cache_dir or None,
        classifier=p.classifier,
        min_score=p.min_score if p.min_score > 0 else None,  # 0 disables the threshold
        device=p.device,
        amp=p.amp,
    )


def _openscene_segmenter(p: LidarNodeParams) -> Any:
    from lidar_ovseg_ros.segmentation.openscene import OpenSceneConfig, OpenSceneSegmenter

    cfg = OpenSceneConfig(
        profile=p.profile,
        arch=p.openscene_arch,
        checkpoint=p.openscene_checkpoint or None,
        feature_type=p.openscene_features,
        text_model=p.text_model or None,
        template=p.prompt_template,
        tta_repeats=p.tta_repeats,
        seed=p.seed,
        min_score=p.min_score if p.min_score > 0 else None,  # 0 disables the threshold
        device=p.device,
        amp=p.amp,
        # Text embeddings persist next to the prototypes when a cache folder is given.
        text_cache_dir=(p.cache_dir.rstrip("/") + "/openscene_text") if p.cache_dir else None,
    )
    return OpenSceneSegmenter.from_config(cfg)


def main(args: list[str] | None = None) -> int:
    return run_node(LidarOvsegNode, "lidar_ovseg_node", args)


if __name__ == "__main__":
    sys.exit(main())
