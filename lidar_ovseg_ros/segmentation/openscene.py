"""OpenScene LiDAR open-vocabulary segmentation: voxelize -> 3D-distilled MinkUNet -> CLIP text.

OpenScene (Peng et al., CVPR 2023) distils 2D open-vocabulary features (OpenSeg: CLIP
ViT-L/14@336px space, 768-d) into a sparse-conv MinkUNet18A that sees geometry only (input
features `ones(N, 3)`, 5 cm voxels). A class is any text: its CLIP embedding of
"a {label} in a scene". Changing the vocabulary is a text-encoder pass for the new names only
(embeddings are cached), no images, no fitting.

Per point: the feature of its voxel (the official voxelizer, `voxelizer.py`), the cosine with
each class embedding (the official evaluation takes the argmax of the unnormalised dot product,
which is the same class), label = argmax, optional `min_score` on the cosine. Opt-in test-time
augmentation as the official evaluation: `tta_repeats` passes with a random rotation and scale,
dot products summed before the argmax.

Profiles: "full" (the official checkpoint, required, + the CLIP text tower via `from_pretrained`)
and "tiny" (a small MinkUNet and a tiny CLIP text tower from configs, random weights from a fixed
seed: it runs anywhere, its labels mean nothing).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lidar_ovseg_ros.models.minkunet import FEATURE_DIMS, MinkUNet, MinkUNetConfig
from lidar_ovseg_ros.segmentation.base import ProgressFn
from lidar_ovseg_ros.segmentation.segmenter import STAGES, SegmentationResult
from lidar_ovseg_ros.segmentation.text_encoder import (
    CLIP_MODELS,
    OPENSCENE_TEMPLATE,
    ClipTextEncoder,
)
from lidar_ovseg_ros.segmentation.voxelizer import (
    OPENSCENE_VOXEL_SIZE,
    VoxelizedScan,
    random_augmentation,
    voxelize,
)
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, Vocabulary

__all__ = [
    "PRECISIONS",
    "TINY_FEATURE_DIM",
    "OpenSceneConfig",
    "OpenSceneResult",
    "OpenSceneSegmenter",
    "OpenSceneVocabulary",
]

_LOG = logging.getLogger(__name__)

PROFILES = ("full", "tiny")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = {"none": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TINY_FEATURE_DIM = 32
TINY_SEED = 0
UNTRAINED_WARNING = (
    "OpenScene profile 'tiny': a small UNTRAINED MinkUNet and a tiny untrained CLIP text model; "
    "labels are NOT meaningful. Use profile 'full' with nuscenes_openseg.pth.tar for real labels."
)


@dataclass(frozen=True)
class OpenSceneConfig:
    """Everything `OpenSceneSegmenter.from_config` needs; validated on construction.

    profile: "full" (official checkpoint + CLIP text tower) or "tiny" (small untrained models).
    arch: the MinkUNet variant of the checkpoint (OpenScene's nuScenes model: MinkUNet18A).
    checkpoint: the official file (`nuscenes_openseg.pth.tar`), required for "full"; optional
        for "tiny" (then it must fit the tiny network).
    feature_type: "openseg" (768-d, CLIP ViT-L/14@336px) or "lseg" (512-d, CLIP ViT-B/32).
    text_model: CLIP hub id or local folder (default: the one matching `feature_type`).
    template: prompt template with "{}" (official: "a {} in a scene").
    voxel_size: metres (official 0.05). tta_repeats: 0 = one deterministic pass (default);
        N >= 1 = N passes with the official random rotation/scale, scores summed.
    seed: TTA random generator seed and tiny weights. min_score: cosine below which a point
        gets NO_CLASS_ID (None: off). device: "auto", "cpu", "cuda", "cuda:N". amp: backbone
        precision "none" (fp32), "fp16", "bf16" (bf16 needs CUDA: spconv's CPU kernels lack it).
    text_cache_dir: folder for the text embeddings on disk (None: memory only).
    max_range: points with a coordinate beyond it (metres) get NO_CLASS_ID and are left out of
        the voxels (garbage returns would otherwise shift the minimum or overflow the grid).
    """

    profile: str = "full"
    arch: str = "MinkUNet18A"
    checkpoint: str | None = None
    feature_type: str = "openseg"
    text_model: str | None = None
    template: str = OPENSCENE_TEMPLATE
    voxel_size: float = OPENSCENE_VOXEL_SIZE
    tta_repeats: int = 0
    seed: int = 0
    min_score: float | None = None
    device: str = "auto"
    amp: str = "none"
    text_cache_dir: str | None = None
    max_range: float = 1000.0

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(
                f"OpenSceneConfig.{name} must be {expected}, got {getattr(self, name)!r}"
            )

        if self.profile not in PROFILES:
            raise bad("profile", f"one of {list(PROFILES)}")
        try:
            MinkUNetConfig.from_arch(self.arch)
        except ValueError as exc:
            raise ValueError(f"OpenSceneConfig.arch: {exc}") from exc
        if self.feature_type not in FEATURE_DIMS:
            raise bad("feature_type", f"one of {list(FEATURE_DIMS)}")
        if self.text_model is not None and not str(self.text_model).strip():
            object.__setattr__(self, "text_model", None)
        if self.checkpoint is not None and not str(self.checkpoint).strip():
            object.__setattr__(self, "checkpoint", None)
        if self.text_cache_dir is not None and not str(self.text_cache_dir).strip():
            object.__setattr__(self, "text_cache_dir", None)
        if not isinstance(self.template, str) or "{}" not in self.template:
            raise bad("template", "a string containing '{}'")
        if not isinstance(self.voxel_size, int | float) or not self.voxel_size > 0:
            raise bad("voxel_size", "a positive number of metres")
        if not isinstance(self.max_range, int | float) or not self.max_range > 0:
            raise bad("max_range", "a positive number of metres")
        for name in ("tta_repeats", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, "an int >= 0")
        if self.min_score is not None and not (-1.0 <= float(self.min_score) <= 1.0):
            raise bad("min_score", "None or a cosine in [-1, 1]")
        if self.amp not in PRECISIONS:
            raise bad("amp", f"one of {list(PRECISIONS)}")
        if not (self.device in DEVICES or str(self.device).startswith("cuda:")):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")

    @property
    def resolved_text_model(self) -> str:
        return self.text_model or CLIP_MODELS[self.feature_type]

    def network_config(self) -> MinkUNetConfig:
        if self.profile == "tiny":
            return MinkUNetConfig.tiny(out_channels=TINY_FEATURE_DIM)
        return MinkUNetConfig.from_arch(self.arch, out_channels=FEATURE_DIMS[self.feature_type])

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"OpenSceneConfig.device is {self.device!r} but CUDA is not available")
        return torch.device(self.device)


@dataclass(frozen=True, eq=False)
class OpenSceneVocabulary:
    """A vocabulary ready to label points: one L2-normalised text embedding per class."""

    vocabulary: Vocabulary
    text_embeddings: torch.Tensor  # [K, D] float32 on the segmenter's device
    build_seconds: float = 0.0
    encoded_texts: int = 0  # texts that needed a text-tower pass (the rest came from the cache)

    @property
    def name(self) -> str:
        return self.vocabulary.name

    def __len__(self) -> int:
        return len(self.vocabulary)


@dataclass
class OpenSceneResult(SegmentationResult):
    """`SegmentationResult` plus what free-text grounding needs: per pass, the L2-normalised
    voxel features [M, D] (on the device) and the voxel row of every point (-1: none)."""

    passes: list[tuple[torch.Tensor, np.ndarray]] = field(default_factory=list)


class OpenSceneSegmenter:
    """MinkUNet (loaded once) + CLIP text tower + swappable text-embedding vocabulary."""

    def __init__(
        self,
        model: MinkUNet,
        text_encoder: ClipTextEncoder,
        config: OpenSceneConfig | None = None,
    ) -> None:
        self.config = config or OpenSceneConfig(profile="tiny")
        device = torch.device(next(model.parameters()).device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.dtype = PRECISIONS[self.config.amp]
        if self.dtype == torch.bfloat16 and device.type == "cpu":
            raise ValueError("amp 'bf16' needs CUDA: spconv's CPU kernels support fp32 and fp16")
        self.model = model.eval().to(self.dtype)
        self.text_encoder = text_encoder
        if text_encoder.embed_dim != model.out_channels:
            raise ValueError(
                f"the text model '{text_encoder.model_id}' gives {text_encoder.embed_dim}-d "
                f"embeddings but {model.config.name} gives {model.out_channels}-d point features"
            )
        self.profile = self.config.profile
        self.backbone_loads = 1
        self._active: OpenSceneVocabulary | None = None
        self._activate_lock = threading.Lock()

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: OpenSceneConfig) -> OpenSceneSegmenter:
        from lidar_ovseg_ros.models.checkpoints import CheckpointNotFoundError
        from lidar_ovseg_ros.models.openscene_checkpoint import load_openscene_checkpoint

        device = cfg.resolved_device()
        net_cfg = cfg.network_config()
        checkpoint = cfg.checkpoint
        if cfg.profile == "full":
            from lidar_ovseg_ros.weights import (
                ModelNotAvailableError,
                require_hub_model,
                resolve_model_file,
            )

            try:  # no checkpoint, or a catalog name: the model from the cache
                path = resolve_model_file(checkpoint, "openscene-nuscenes-openseg")
            except ModelNotAvailableError as exc:
                raise CheckpointNotFoundError(
                    "OpenScene profile 'full' needs the official checkpoint "
                    f"(nuscenes_openseg.pth.tar): set checkpoint, or {exc}"
                ) from None
            if not path.is_file():
                raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
            checkpoint = str(path)
            require_hub_model(cfg.resolved_text_model)
        else:
            _LOG.warning(UNTRAINED_WARNING)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED if cfg.profile == "tiny" else cfg.seed)
            model = MinkUNet(net_cfg)
        if checkpoint is not None:
            load_openscene_checkpoint(model, checkpoint)
        model = model.to(device)
        if cfg.profile == "tiny":
            text = ClipTextEncoder.tiny(
                TINY_FEATURE_DIM, seed=TINY_SEED, device=device, cache_dir=cfg.text_cache_dir
            )
        else:
            text = ClipTextEncoder.from_pretrained(
                cfg.resolved_text_model, device=device, cache_dir=cfg.text_cache_dir
            )
        return cls(model, text, cfg)

    @property
    def untrained(self) -> bool:
        return self.profile == "tiny"

    @property
    def feature_dim(self) -> int:
        return int(self.model.out_channels)

    @property
    def active(self) -> OpenSceneVocabulary | None:
        return self._active

    # -- vocabulary ---------------------------------------------------------------------------

    def prepare_vocabulary(
        self,
        vocabulary: Vocabulary,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> OpenSceneVocabulary:
        """Text embeddings of every class (the mean of its prompts', cached); not activated."""
        start = time.perf_counter()
        if not isinstance(vocabulary, Vocabulary):
            raise TypeError(f"need a Vocabulary, got {type(vocabulary).__name__}")
        if progress is not None:
            progress(0, 1, "encoding class texts")
        before = self.text_encoder.stats["encoded"]
        prompts = [list(c.prompts) for c in vocabulary.classes]
        emb = self.text_encoder.encode_classes(prompts, self.config.template)
        if progress is not None:
            progress(1, 1, "done")
        return OpenSceneVocabulary(
            vocabulary=vocabulary,
            text_embeddings=emb.to(self.device, torch.float32),
            build_seconds=time.perf_counter() - start,
            encoded_texts=self.text_encoder.stats["encoded"] - before,
        )

    def activate(self, active: OpenSceneVocabulary) -> None:
        if not isinstance(active, OpenSceneVocabulary):
            raise TypeError(f"activate() needs an OpenSceneVocabulary, got {type(active).__name__}")
        if active.text_embeddings.shape[1] != self.feature_dim:
            raise ValueError(
                f"vocabulary '{active.name}' has {active.text_embeddings.shape[1]}-d text "
                f"embeddings; this backbone gives {self.feature_dim}-d features"
            )
        with self._activate_lock:
            self._active = active

    def set_vocabulary(
        self,
        vocabulary: Vocabulary,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> OpenSceneVocabulary:
        active = self.prepare_vocabulary(vocabulary, progress=progress, cancel=cancel)
        self.activate(active)
        return active

    # -- inference ----------------------------------------------------------------------------

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def voxel_features(self, vox: VoxelizedScan) -> torch.Tensor:
        """Backbone output [M, D] (float32, on the device) for a voxelized scan."""
        coords = torch.from_numpy(vox.coords).to(self.device)
        feats = torch.ones((len(vox), self.model.config.in_channels), device=self.device)
        return self.model(feats.to(self.dtype), coords).float()

    @torch.no_grad()
    def segment(
        self,
        points: np.ndarray,
        return_features: bool = False,
        label_outside_crop: bool = False,
    ) -> OpenSceneResult:
        """Label every point of a [N, >=3] scan (x, y, z first; other columns are ignored, as
        OpenScene feeds no intensity). Non-finite points get NO_CLASS_ID. `label_outside_crop`
        is accepted for interface parity (this method has no crop)."""
        active = self._active
        if active is None:
            raise RuntimeError("no vocabulary is active: call set_vocabulary() first")
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"points must be [N, >=3] (x, y, z, ...), got {points.shape}")
        t_start = time.perf_counter()
        n = len(points)
        timings = dict.fromkeys(STAGES, 0.0)
        text = active.text_embeddings
        k = text.shape[0]
        labels = np.full(n, NO_CLASS_ID, dtype=np.uint16)
        scores = np.zeros(n, dtype=np.float32)
        valid = np.zeros(n, dtype=bool)
        passes: list[tuple[torch.Tensor, np.ndarray]] = []
        features_out = None
        repeats = max(1, self.config.tta_repeats)
        rng = np.random.default_rng(self.config.seed)
        with np.errstate(invalid="ignore"):
            far = (np.abs(points[:, :3]) > self.config.max_range).any(axis=1)
        if far.any():  # left out like non-finite points
            points = points[:, :3].astype(np.float32, copy=True)
            points[far] = np.nan
        logits_sum = None
        cos_sum = None
        feat_sum = None
        for _ in range(repeats):
            t0 = time.perf_counter()
            transform = random_augmentation(rng) if self.config.tta_repeats > 0 else None
            vox = voxelize(points, self.config.voxel_size, transform)
            timings["preprocess"] += time.perf_counter() - t0
            if len(vox) == 0:
                break
            t0 = time.perf_counter()
            feats = self.voxel_features(vox)
            self._sync()
            timings["backbone"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            rows = vox.inverse
            valid = rows >= 0
            inv = torch.from_numpy(rows[valid]).to(self.device)
            normed = F.normalize(feats, dim=-1)
            cos_vox = normed @ text.t()  # [M, K]
            if repeats == 1:
                best, cls = cos_vox.max(1)
                labels[valid] = cls[inv].cpu().numpy().astype(np.uint16)
                scores[valid] = best[inv].cpu().numpy()
            else:  # official TTA: unnormalised dot products summed over the repeats
                logit = (feats @ text.t())[inv]
                logits_sum = logit if logits_sum is None else logits_sum + logit
                cos = cos_vox[inv]
                cos_sum = cos if cos_sum is None else cos_sum + cos
            if return_features:
                f = feats[inv]
                feat_sum = f if feat_sum is None else feat_sum + f
            passes.append((normed, rows))
            self._sync()
            timings["classifier"] += time.perf_counter() - t0
        if logits_sum is not None and k:
            t0 = time.perf_counter()
            cls = logits_sum.argmax(1)
            labels[valid] = cls.cpu().numpy().astype(np.uint16)
            scores[valid] = (cos_sum.gather(1, cls[:, None])[:, 0] / repeats).cpu().numpy()
            timings["classifier"] += time.perf_counter() - t0
        if self.config.min_score is not None:
            labels[valid & (scores < self.config.min_score)] = NO_CLASS_ID
        if return_features:
            features_out = np.zeros((n, self.feature_dim), dtype=np.float32)
            if feat_sum is not None:
                features_out[valid] = (feat_sum / repeats).cpu().numpy()
        timings["total"] = time.perf_counter() - t_start
        return OpenSceneResult(
            labels=labels,
            scores=scores,
            vocabulary=active,  # type: ignore[arg-type]  # the OpenScene prepared vocabulary
            features=features_out,
            valid=valid,
            timings=timings,
            passes=passes,
        )

    @torch.no_grad()
    def grounding(self, query: str, result: OpenSceneResult) -> np.ndarray:
        """Cosine [N] of every point's feature with the embedding of `query` (the template
        applied, as for class names), averaged over TTA passes; 0 for points without one."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"a query must be a non-empty string, got {query!r}")
        if not isinstance(result, OpenSceneResult):
            raise TypeError("grounding needs the result of this segmenter's segment()")
        q = self.text_encoder.encode([query.strip()], self.config.template)[0]
        heat = np.zeros(len(result.labels), dtype=np.float32)
        if not result.passes:
            return heat
        total = None
        for normed, rows in result.passes:
            ok = rows >= 0
            cos = (normed @ q.to(normed.device)).cpu().numpy()[rows[ok]]
            total = cos if total is None else total + cos
        heat[result.passes[0][1] >= 0] = total / len(result.passes)
        return heat


# -- OpenScene's nuScenes evaluation protocol (dataset/label_constants.py) ----------------------

# The 43 detailed names the official nuScenes evaluation embeds ("a {} in a scene"), and the
# 16-class id (nuScenes-lidarseg order) each maps to.
NUSCENES_LABELS_DETAILS = (
    "barrier", "barricade", "bicycle", "bus", "car", "bulldozer", "excavator", "concrete mixer",
    "crane", "dump truck", "motorcycle", "person", "pedestrian", "traffic cone", "trailer",
    "semi trailer", "cargo container", "shipping container", "freight container", "truck",
    "road", "curb", "traffic island", "traffic median", "sidewalk", "grass", "grassland",
    "lawn", "meadow", "turf", "sod", "building", "wall", "pole", "awning", "tree", "trunk",
    "tree trunk", "bush", "shrub", "plant", "flower", "woods",
)  # fmt: skip
MAPPING_NUSCENES_DETAILS = (
    0, 0, 1, 2, 3, 4, 4, 4, 4, 4, 5, 6, 6, 7, 8, 8, 8, 8, 8, 9, 10, 11, 11, 11, 12, 13, 13, 13,
    13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15,
)  # fmt: skip
NUSCENES_LABELS_16 = (
    "barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle", "person",
    "traffic cone", "trailer", "truck", "drivable surface", "other flat", "sidewalk", "terrain",
    "manmade", "vegetation",
)  # fmt: skip


def nuscenes_details_vocabulary() -> Vocabulary:
    """The 43 detailed nuScenes names as a vocabulary (one prompt each: the name itself)."""
    return Vocabulary.from_names(list(NUSCENES_LABELS_DETAILS), name="openscene_nuscenes_details")


def map_nuscenes_details(labels: np.ndarray) -> np.ndarray:
    """Detailed-name ids (0..42) -> 16-class ids; NO_CLASS_ID stays NO_CLASS_ID."""
    labels = np.asarray(labels)
    table = np.full(NO_CLASS_ID + 1, NO_CLASS_ID, dtype=np.uint16)
    table[: len(MAPPING_NUSCENES_DETAILS)] = MAPPING_NUSCENES_DETAILS
    return table[labels.astype(np.int64)]
