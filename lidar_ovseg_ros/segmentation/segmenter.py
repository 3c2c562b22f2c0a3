"""IGLOSS LiDAR open-vocabulary segmentation: points -> 3D features -> prototype classifier.

`LidarSegmenter` owns the expensive, vocabulary-independent part (the 3D backbone, loaded once)
and one *active vocabulary*: an immutable `ActiveVocabulary` (the vocabulary, its prototypes and
the classifier fitted on them, tensors already on the device). Changing the vocabulary is
`prepare_vocabulary` (slow: generate images, DINOv2 features, fit; touches nothing `segment` uses)
then `activate` (one reference assignment). `segment` reads that reference once per frame, so a
frame is always labelled by exactly one vocabulary, even while another thread switches it.

Profiles:
- "full": the ScaLR+ checkpoint (required) + DINOv2-large + sd-turbo via `from_pretrained`
  (hub ids or local folders) -- the IGLOSS method.
- "tiny": small models built from configs with fixed seeds (tiny WaffleIron with random weights
  unless a checkpoint is given, tiny DINOv2, tiny text-to-image pipeline). Runs anywhere without
  downloads; its labels carry no meaning, and it says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lidar_ovseg_ros.segmentation.classifier import (
    CLASSIFIER_KINDS,
    ClassifierConfig,
    FittedClassifier,
    fit_classifier,
)
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, Vocabulary

__all__ = [
    "BACKBONE_PRESETS",
    "DEFAULT_CACHE_DIR",
    "OUT_OF_CROP",
    "PROFILES",
    "SENSORS",
    "STAGES",
    "ActiveVocabulary",
    "LidarSegmenter",
    "MemoryModel",
    "SegmentationResult",
    "SegmenterConfig",
    "SegmenterConfigError",
    "SegmenterError",
    "build_prototype_bank",
]

_LOG = logging.getLogger(__name__)

PROFILES = ("full", "tiny")
SENSORS = ("nuscenes", "semantickitti")
BACKBONE_PRESETS = ("scalr_plus", "scalr_v1", "tiny")
DEVICES = ("auto", "cpu", "cuda")
OUT_OF_CROP = ("nearest", "no_class")
PREPROCESS_BACKENDS = ("numpy", "torch", "auto")
AMP_MODES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_CACHE_DIR = "~/.cache/lidar_ovseg_ros/prototypes"
STAGES = ("preprocess", "knn", "backbone", "upsample", "classifier", "total")
TINY_SEED = 0
UNTRAINED_WARNING = (
    "profile 'tiny': labels come from small UNTRAINED built-in models (random tiny WaffleIron, "
    "tiny DINOv2, tiny image generator); they are NOT meaningful. Use profile 'full' with a "
    "ScaLR+ checkpoint for real labels."
)

ProgressFn = Callable[[int, int, str], None]


class SegmenterConfigError(ValueError):
    """A `SegmenterConfig` entry is invalid; the message names it."""


class SegmenterError(RuntimeError):
    """The segmenter cannot run (e.g. no vocabulary active yet)."""


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything `LidarSegmenter.from_config` needs; validated on construction.

    profile: "full" (ScaLR+ + DINOv2-large + sd-turbo) or "tiny" (small untrained built-ins).
    backbone: WaffleIron preset for profile "full" (ScaLR+ is "scalr_plus"); "tiny" always uses
        `WaffleIronConfig.tiny()`.
    checkpoint: backbone weights; required for "full", optional for "tiny" (random weights from
        `seed` otherwise).
    sensor: intensity normalisation preset, "nuscenes" (0-255) or "semantickitti" (0-1).
    feature_model / generator_model: Hugging Face ids or local folders (profile "full").
    images_per_class: generated prototype images per class; seed: generation and tiny weights.
    cache_dir: prototype cache (None: `DEFAULT_CACHE_DIR`).
    classifier / min_score: see `ClassifierConfig`.
    device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; amp: "none", "fp16", "bf16"
        (autocast for the backbone).
    out_of_crop: label of finite points outside the backbone's crop (beyond 64 m for ScaLR+):
        "nearest" (default, as IGLOSS and ScaLR do: the label of the nearest kept point) or
        "no_class" (`NO_CLASS_ID`). Non-finite points always get `NO_CLASS_ID`.
    preprocess_backend: "numpy" (official numpy/cKDTree preprocessing on the host), "torch"
        (device-resident: `torch_preprocess`, labels gathered on the device, one copy back) or
        "auto" (default: torch on CUDA, numpy on CPU). Same labels either way.
    """

    profile: str = "full"
    backbone: str = "scalr_plus"
    checkpoint: str | None = None
    sensor: str = "nuscenes"
    feature_model: str = "facebook/dinov2-large"
    generator_model: str = "stabilityai/sd-turbo"
    images_per_class: int = 4
    seed: int = 0
    cache_dir: str | None = None
    classifier: str = "logreg"
    min_score: float | None = None
    device: str = "auto"
    amp: str = "none"
    out_of_crop: str = "nearest"
    preprocess_backend: str = "auto"

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> SegmenterConfigError:
            return SegmenterConfigError(
                f"SegmenterConfig.{name} must be {expected}, got {getattr(self, name)!r}"
            )

        if self.profile not in PROFILES:
            raise bad("profile", f"one of {list(PROFILES)}")
        if self.backbone not in BACKBONE_PRESETS:
            raise bad("backbone", f"one of {list(BACKBONE_PRESETS)}")
        if self.sensor not in SENSORS:
            raise bad("sensor", f"one of {list(SENSORS)}")
        if self.classifier not in CLASSIFIER_KINDS:
            raise bad("classifier", f"one of {list(CLASSIFIER_KINDS)}")
        if self.amp not in AMP_MODES:
            raise bad("amp", f"one of {list(AMP_MODES)}")
        if self.out_of_crop not in OUT_OF_CROP:
            raise bad("out_of_crop", f"one of {list(OUT_OF_CROP)}")
        if self.preprocess_backend not in PREPROCESS_BACKENDS:
            raise bad("preprocess_backend", f"one of {list(PREPROCESS_BACKENDS)}")
        if not (self.device in DEVICES or str(self.device).startswith("cuda:")):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if isinstance(self.images_per_class, bool) or not isinstance(self.images_per_class, int):
            raise bad("images_per_class", "an int >= 1")
        if self.images_per_class < 1:
            raise bad("images_per_class", "an int >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "an int >= 0")
        for name in ("feature_model", "generator_model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise bad(name, "a model id or a local folder")
        if self.checkpoint is not None and not str(self.checkpoint).strip():
            object.__setattr__(self, "checkpoint", None)
        self.classifier_config()  # validates min_score for the chosen kind

    def classifier_config(self) -> ClassifierConfig:
        try:
            return ClassifierConfig(kind=self.classifier, min_score=self.min_score)
        except ValueError as exc:
            raise SegmenterConfigError(str(exc)) from exc

    @property
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir or DEFAULT_CACHE_DIR).expanduser()

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise SegmenterConfigError(
                f"SegmenterConfig.device is {self.device!r} but CUDA is not available here"
            )
        return torch.device(self.device)


BASE_BYTES_PER_POINT = 1024
"""Per input point, outside the network: PointCloud2 decode, preprocessing (voxel keys, crop,
kNN lists and queries), labels and scores, the labeled PointCloud2 and the voxel markers.
Measured with scripts/bench_memory.py (tiny network): ~0.9 KB on a 2-core CPU."""


@dataclass(frozen=True)
class MemoryModel:
    """Peak memory one cloud adds (the node's whole per-cloud path): fixed + per point x N.

    A conservative cost model of the measured peaks (scripts/bench_memory.py, README "Memory"):
    per point `BASE_BYTES_PER_POINT` plus the network's widest pair of per-point fp32 tensors
    (`4 * max(2 C, C + D)`: the residual stream and one temporary, or the stream and the head
    output); fixed: the 2D grid of one projection plane and its temporaries (`4 * C * H * W`
    fp32) plus the chunk buffers.
    """

    fixed_bytes: int
    bytes_per_point: int

    def peak_bytes(self, num_points: int) -> int:
        return self.fixed_bytes + self.bytes_per_point * max(0, int(num_points))

    def max_points(self, budget_bytes: float) -> int:
        """The most points whose estimated peak fits in `budget_bytes` (0 if none fits)."""
        room = float(budget_bytes) - self.fixed_bytes
        return max(0, int(room // self.bytes_per_point))

    @classmethod
    def for_waffleiron(cls, config: Any) -> MemoryModel:
        """The model of a `WaffleIronConfig` network behind `LidarSegmenter.segment`."""
        from lidar_ovseg_ros.models.waffleiron import CHUNK_ELEMENTS

        c, d = config.nb_channels, config.out_channels
        cells = max(h * w for h, w in config.grids_shape)
        per_point = BASE_BYTES_PER_POINT + 4 * max(2 * c, c + d)
        return cls(
            fixed_bytes=4 * 4 * c * cells + 4 * 4 * CHUNK_ELEMENTS, bytes_per_point=per_point
        )


@dataclass(frozen=True, eq=False)
class ActiveVocabulary:
    """A vocabulary ready to label points: its prototypes and fitted classifier (immutable)."""

    vocabulary: Vocabulary
    classifier: FittedClassifier
    prototypes: Any = None  # the PrototypeSet it was fitted on (None when built from arrays)
    build_seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.vocabulary.name

    def __len__(self) -> int:
        return len(self.vocabulary)


@dataclass
class SegmentationResult:
    """Per-point output of one frame.

    labels: uint16 [N] class ids of `vocabulary`; `NO_CLASS_ID` for non-finite points, below
        `min_score`, and outside the crop with `out_of_crop="no_class"`; scores: float32 [N]
        (softmax probability for logreg, cosine for nearest; 0 where no label was computed);
        vocabulary: the `ActiveVocabulary` that labelled the frame; features: float32 [N, D]
        numpy (only when asked for); valid: bool [N], finite and inside the crop; timings:
        seconds per stage (`STAGES`).
    """

    labels: np.ndarray
    scores: np.ndarray
    vocabulary: ActiveVocabulary
    features: np.ndarray | None = None
    valid: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


class LidarSegmenter:
    """3D backbone + swappable prototype classifier (see the module docstring)."""

    def __init__(
        self,
        extractor: Any,
        prototype_bank: Any = None,
        classifier_config: ClassifierConfig | None = None,
        profile: str = "custom",
        out_of_crop: str = "nearest",
    ) -> None:
        """`extractor`: a `PointFeatureExtractor`; `prototype_bank`: a `PrototypeBank` (needed by
        `prepare_vocabulary`, not by `prepare_from_prototypes`); `out_of_crop`: see
        `SegmenterConfig`."""
        if out_of_crop not in OUT_OF_CROP:
            raise SegmenterConfigError(
                f"out_of_crop must be one of {list(OUT_OF_CROP)}, got {out_of_crop!r}"
            )
        self.out_of_crop = out_of_crop
        self.extractor = extractor
        self.prototype_bank = prototype_bank
        self.classifier_config = classifier_config or ClassifierConfig()
        self.profile = profile
        device = torch.device(extractor.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.backbone_loads = 1  # the extractor (and its network) is built once per segmenter
        self._active: ActiveVocabulary | None = None
        self._activate_lock = threading.Lock()
        self._prepare_lock = threading.Lock()  # one prototype build at a time (shared models)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: SegmenterConfig) -> LidarSegmenter:
        """Build the backbone and the prototype bank of `cfg.profile` (no vocabulary yet)."""
        device = cfg.resolved_device()
        amp = AMP_MODES[cfg.amp]
        if cfg.profile == "tiny":
            extractor = _tiny_extractor(cfg, device, amp)
        else:
            extractor = _full_extractor(cfg, device, amp)
        bank = build_prototype_bank(cfg, device)
        if bank.extractor.dim != extractor.out_channels:
            raise SegmenterConfigError(
                f"the image feature model '{cfg.feature_model}' gives {bank.extractor.dim}-d "
                f"prototypes but the backbone '{extractor.model.config.name}' gives "
                f"{extractor.out_channels}-d point features; they must match"
            )
        return cls(
            extractor,
            bank,
            cfg.classifier_config(),
            profile=cfg.profile,
            out_of_crop=cfg.out_of_crop,
        )

    @property
    def untrained(self) -> bool:
        """True for the tiny profile: the labels do not mean anything."""
        return self.profile == "tiny"

    def memory_model(self) -> MemoryModel:
        """Estimated peak memory of one cloud as fixed + per-point bytes (see `MemoryModel`)."""
        return MemoryModel.for_waffleiron(self.extractor.model.config)

    @property
    def feature_dim(self) -> int:
        return int(self.extractor.out_channels)

    @property
    def active(self) -> ActiveVocabulary | None:
        return self._active

    # -- vocabulary ---------------------------------------------------------------------------

    def prepare_vocabulary(
        self,
        vocabulary: Vocabulary,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> ActiveVocabulary:
        """Build prototypes (cached on disk) and fit the classifier; does not activate."""
        if self.prototype_bank is None:
            raise SegmenterError(
                "this segmenter has no prototype bank; use prepare_from_prototypes"
            )
        start = time.perf_counter()
        with self._prepare_lock:
            prototypes = self.prototype_bank.build(vocabulary, progress=progress, cancel=cancel)
        return self.prepare_from_prototypes(
            vocabulary,
            prototypes.features,
            prototypes.labels,
            prototypes=prototypes,
            started=start,
        )

    def prepare_from_prototypes(
        self,
        vocabulary: Vocabulary,
        features: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        prototypes: Any = None,
        started: float | None = None,
    ) -> ActiveVocabulary:
        """Fit the classifier on given prototype features [P, D] / class ids [P]."""
        start = time.perf_counter() if started is None else started
        d = features.shape[1] if getattr(features, "ndim", 0) == 2 else None
        if d != self.feature_dim:
            raise SegmenterError(
                f"prototype features are {tuple(features.shape)} but the backbone gives "
                f"{self.feature_dim}-d point features"
            )
        classifier = fit_classifier(
            features,
            labels,
            num_classes=len(vocabulary),
            config=self.classifier_config,
            device=self.device,
            class_names=vocabulary.names,
        )
        return ActiveVocabulary(
            vocabulary=vocabulary,
            classifier=classifier,
            prototypes=prototypes,
            build_seconds=time.perf_counter() - start,
        )

    def activate(self, active: ActiveVocabulary) -> None:
        """Make `active` label the next frames (one atomic reference swap)."""
        if not isinstance(active, ActiveVocabulary):
            raise TypeError(f"activate() needs an ActiveVocabulary, got {type(active).__name__}")
        if active.classifier.feature_dim != self.feature_dim:
            raise SegmenterError(
                f"vocabulary '{active.name}' was fitted on {active.classifier.feature_dim}-d "
                f"features; this backbone gives {self.feature_dim}-d"
            )
        if active.classifier.device != self.device:
            active = ActiveVocabulary(
                active.vocabulary,
                active.classifier.to(self.device),
                active.prototypes,
                active.build_seconds,
            )
        with self._activate_lock:
            self._active = active

    def set_vocabulary(
        self,
        vocabulary: Vocabulary,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> ActiveVocabulary:
        """`prepare_vocabulary` then `activate`; returns the new active vocabulary."""
        active = self.prepare_vocabulary(vocabulary, progress=progress, cancel=cancel)
        self.activate(active)
        return active

    # -- inference ----------------------------------------------------------------------------

    def segment(
        self,
        points: np.ndarray,
        return_features: bool = False,
        label_outside_crop: bool | None = None,
    ) -> SegmentationResult:
        """Label every point of a [N, >=4] (x, y, z, intensity, ...) scan.

        `label_outside_crop`: True gives finite points outside the backbone's crop the label of
        their nearest kept point (the official evaluations), False `NO_CLASS_ID`; None (default)
        follows `out_of_crop`.

        Memory: the classifier runs on the M kept points' features and every input point takes
        the label and score of its nearest kept point (the same numbers as classifying upsampled
        [N, D] features, which are only built for `return_features`).
        """
        active = self._active  # one snapshot: the whole frame uses this vocabulary
        if active is None:
            raise SegmenterError("no vocabulary is active: call set_vocabulary() first")
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 4:
            raise ValueError(
                f"points must be [N, >=4] (x, y, z, intensity, ...), got {points.shape}"
            )
        if label_outside_crop is None:
            label_outside_crop = self.out_of_crop == "nearest"
        t_start = time.perf_counter()
        n = len(points)
        timings = dict.fromkeys(STAGES, 0.0)
        labels = np.full(n, NO_CLASS_ID, dtype=np.uint16)
        scores = np.zeros(n, dtype=np.float32)
        features_out = None
        if n == 0:
            valid = np.zeros(0, dtype=bool)
            if return_features:
                features_out = np.zeros((0, self.feature_dim), dtype=np.float32)
        elif getattr(self.extractor, "device_resident", False):
            labels, scores, valid, features_out = self._segment_on_device(
                points, active, label_outside_crop, return_features, timings
            )
        else:
            kept, scan = self.extractor.extract_kept(points)
            for key in ("preprocess", "knn", "backbone"):
                timings[key] = float(self.extractor.timings.get(key, 0.0))
            valid = scan.valid
            # upsample_index >= 0: finite, with a kept point (none at all when M == 0).
            use = scan.upsample_index >= 0 if label_outside_crop else valid
            t0 = time.perf_counter()
            if use.any():
                cls, conf = active.classifier.predict(kept)
                rows = scan.upsample_index[use]
                labels[use] = cls.cpu().numpy()[rows]
                scores[use] = conf.cpu().numpy()[rows]
                del cls, conf, rows
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t1 = time.perf_counter()
            timings["classifier"] = t1 - t0
            if return_features:
                features_out = np.zeros((n, self.feature_dim), dtype=np.float32)
                has = scan.upsample_index >= 0
                kept_np = kept.float().cpu().numpy()
                features_out[has] = kept_np[scan.upsample_index[has]]
            timings["upsample"] = time.perf_counter() - t1
            del kept, scan
        timings["total"] = time.perf_counter() - t_start
        return SegmentationResult(
            labels=labels,
            scores=scores,
            vocabulary=active,
            features=features_out,
            valid=valid,
            timings=timings,
        )

    def _segment_on_device(
        self,
        points: np.ndarray,
        active: ActiveVocabulary,
        label_outside_crop: bool,
        return_features: bool,
        timings: dict[str, float],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """`segment` with the torch preprocessing backend: everything stays on the device until
        one copy of labels, scores and validity (features only when asked for). The
        host-to-device copy is counted in "preprocess"."""
        from lidar_ovseg_ros.segmentation.torch_preprocess import labels_to_host

        kept, scan = self.extractor.extract_kept(points)
        ext = self.extractor.timings
        timings["preprocess"] = float(ext.get("h2d", 0.0) + ext.get("preprocess", 0.0))
        timings["knn"] = float(ext.get("knn", 0.0))
        timings["backbone"] = float(ext.get("backbone", 0.0))
        t0 = time.perf_counter()
        if scan.num_points:
            cls, conf = active.classifier.predict(kept)
        else:
            cls = conf = kept.new_zeros(0)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        labels, scores, valid = labels_to_host(scan, cls, conf, label_outside_crop, NO_CLASS_ID)
        features_out = None
        if return_features:
            features_out = np.zeros((scan.num_input, self.feature_dim), dtype=np.float32)
            has = scan.upsample_index >= 0
            if scan.num_points and bool(has.any()):
                rows = kept[scan.upsample_index.clamp(min=0)]
                rows[~has] = 0
                features_out = rows.float().cpu().numpy()
        timings["classifier"] = t1 - t0
        timings["upsample"] = time.perf_counter() - t1
        return labels, scores, valid, features_out


# -- builders ------------------------------------------------------------------------------


def _preprocess_config(sensor: str, backbone_cfg: Any) -> Any:
    from lidar_ovseg_ros.segmentation.preprocess import PreprocessConfig

    base = PreprocessConfig.nuscenes() if sensor == "nuscenes" else PreprocessConfig.semantickitti()
    return base.for_backbone(backbone_cfg)


def _tiny_extractor(cfg: SegmenterConfig, device: torch.device, amp: torch.dtype | None) -> Any:
    from lidar_ovseg_ros.models.waffleiron import WaffleIron, WaffleIronConfig
    from lidar_ovseg_ros.segmentation.features import PointFeatureExtractor

    wi_cfg = WaffleIronConfig.tiny()
    pre = _preprocess_config(cfg.sensor, wi_cfg)
    if cfg.checkpoint is not None:
        return PointFeatureExtractor.from_checkpoint(
            cfg.checkpoint,
            wi_cfg,
            pre,
            device=device,
            amp_dtype=amp,
            preprocess_backend=cfg.preprocess_backend,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = WaffleIron(wi_cfg)
    return PointFeatureExtractor(
        model, pre, device=device, amp_dtype=amp, preprocess_backend=cfg.preprocess_backend
    )


def _full_extractor(cfg: SegmenterConfig, device: torch.device, amp: torch.dtype | None) -> Any:
    from lidar_ovseg_ros.models.checkpoints import CheckpointNotFoundError
    from lidar_ovseg_ros.models.waffleiron import WaffleIronConfig
    from lidar_ovseg_ros.segmentation.features import PointFeatureExtractor
    from lidar_ovseg_ros.weights import ModelNotAvailableError, resolve_model_file

    try:  # no checkpoint, or a catalog name: the model from the cache (`lidar-ovseg weights`)
        path = resolve_model_file(cfg.checkpoint, "igloss-scalr-plus")
    except ModelNotAvailableError as exc:
        raise CheckpointNotFoundError(
            f"profile 'full' needs the ScaLR+ checkpoint (ckpt_last.pth): set checkpoint, or {exc}"
        ) from None
    if not path.is_file():  # before building the 63M-parameter network
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    wi_cfg = getattr(WaffleIronConfig, cfg.backbone)()
    pre = _preprocess_config(cfg.sensor, wi_cfg)
    return PointFeatureExtractor.from_checkpoint(
        path, wi_cfg, pre, device=device, amp_dtype=amp, preprocess_backend=cfg.preprocess_backend
    )


def build_prototype_bank(cfg: SegmenterConfig, device: torch.device | None = None) -> Any:
    """The `PrototypeBank` of `cfg.profile` (image generator + DINOv2 + disk cache), no backbone.

    Profile "tiny": tiny DINOv2 (hidden size = the tiny backbone's feature size) and tiny
    text-to-image pipeline, weights from a fixed seed, 64x64 images. Profile "full":
    `cfg.feature_model` / `cfg.generator_model` via `from_pretrained` (the diffusion pipeline
    loads lazily, on the first image that is not cached).
    """
    from lidar_ovseg_ros.prototypes.bank import PrototypeBank
    from lidar_ovseg_ros.prototypes.generation import GenerationConfig, TextToImageGenerator
    from lidar_ovseg_ros.prototypes.image_features import (
        DinoV2FeatureExtractor,
        ImageFeatureConfig,
    )

    device = device or cfg.resolved_device()
    dev = str(device)
    if cfg.profile == "tiny":
        _LOG.warning(UNTRAINED_WARNING)
        from lidar_ovseg_ros.models.waffleiron import WaffleIronConfig
        from lidar_ovseg_ros.prototypes.tiny_models import (
            TINY_IMAGE_SIDE,
            build_tiny_feature_extractor,
            build_tiny_text_to_image_pipeline,
        )

        hidden = WaffleIronConfig.tiny().out_channels
        features = build_tiny_feature_extractor(seed=TINY_SEED, hidden=hidden, device=dev)
        generation = GenerationConfig(
            model_id="tiny-text-to-image",
            images_per_class=cfg.images_per_class,
            seed=cfg.seed,
            height=TINY_IMAGE_SIDE,
            width=TINY_IMAGE_SIDE,
            device=dev,
        )
        pipe = build_tiny_text_to_image_pipeline(seed=TINY_SEED)
        generator = TextToImageGenerator.from_pipeline(pipe, generation)
    else:
        from lidar_ovseg_ros.weights import require_hub_model

        require_hub_model(cfg.feature_model)  # one line naming `lidar-ovseg weights fetch ...`
        features = DinoV2FeatureExtractor.from_pretrained(
            ImageFeatureConfig(model_id=cfg.feature_model, device=dev, amp=cfg.amp)
        )
        generation = GenerationConfig(
            model_id=cfg.generator_model,
            images_per_class=cfg.images_per_class,
            seed=cfg.seed,
            device=dev,
        )
        generator = TextToImageGenerator.from_pretrained(generation)
    return PrototypeBank(
        cfg.resolved_cache_dir,
        features,
        generator=generator,
        generation_config=generation,
        show_progress=False,
    )
