"""Camera occupancy pipeline: surround images + calibration -> labelled voxels and grounding.

Preprocessing follows POP-3D's official loader: images in BGR order, caffe mean subtracted
(std 1), resized to the network's image size if needed (the projection matrices scaled the same
way), zero-padded at the bottom/right to a multiple of 32, and `lidar2img = [K 0; 0 1] @
lidar2cam` per camera; reference points are normalised by the padded size. Occupied voxels are
those whose occupancy argmax is 1; each is labelled with the vocabulary class of highest score
(maximum over the class's sub-names). `score` picks how a feature meets a text embedding:
"dot" (the official evaluation: raw dot product of the unnormalised feature) or "cosine" (both
normalised, in [-1, 1]); `min_score` thresholds that score, so its units follow `score`.

Camera labels on LiDAR points: given a LiDAR cloud (its frame = the calibrations' LiDAR frame),
`predict(..., points=xyz)` samples the three TPV planes at every point (the official points
branch, `TPVAggregator.point_features`, points voxelized as the official `Voxelize`: outside
points are clipped onto the volume's border, as the official evaluation does), runs the language
head on them and labels each point like a voxel; the official point mIoU is measured on these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models.pop3d import Pop3DConfig, Pop3DNetwork, load_pop3d_weights
from ..vocabulary import NO_CLASS_ID, Vocabulary
from .text_queries import ClassSpec, EncodedVocabulary, TextQueryEncoder, check_score

STAGES = ("preprocess", "backbone", "neck", "encoder", "heads", "text", "labels", "total")


class OccupancyInputError(ValueError):
    """Images or calibrations do not fit the network; the message names the camera/entry."""


@dataclass(frozen=True)
class CameraCalibration:
    """Pinhole intrinsics K [3, 3] and the LiDAR -> camera-optical transform [4, 4]."""

    K: np.ndarray
    lidar2cam: np.ndarray

    @classmethod
    def from_cam2ego(
        cls, K: np.ndarray, cam2ego: np.ndarray, lidar2ego: np.ndarray
    ) -> CameraCalibration:
        """From the camera and LiDAR mounting poses in the ego frame."""
        lidar2cam = np.linalg.inv(np.asarray(cam2ego, np.float64)) @ np.asarray(lidar2ego)
        return cls(np.asarray(K, np.float64), lidar2cam)

    def lidar2img(self) -> np.ndarray:
        viewpad = np.eye(4)
        viewpad[:3, :3] = self.K
        return viewpad @ self.lidar2cam


def as_calibration(
    calib: Any, where: str, lidar2ego: np.ndarray | None = None
) -> CameraCalibration:
    """Accept a CameraCalibration, anything with `.K` and `.lidar2cam` (e.g. frames.CameraView),
    or a mapping with `K` and `lidar2cam` (or `cam2ego` plus a `lidar2ego`)."""
    if isinstance(calib, CameraCalibration):
        out = calib
    elif hasattr(calib, "K") and hasattr(calib, "lidar2cam"):
        out = CameraCalibration(np.asarray(calib.K, np.float64), np.asarray(calib.lidar2cam))
    elif isinstance(calib, Mapping) and "K" in calib and "lidar2cam" in calib:
        out = CameraCalibration(np.asarray(calib["K"], np.float64), np.asarray(calib["lidar2cam"]))
    elif isinstance(calib, Mapping) and "K" in calib and "cam2ego" in calib:
        l2e = calib.get("lidar2ego", lidar2ego)
        if l2e is None:
            raise OccupancyInputError(f"{where}: 'cam2ego' given but no 'lidar2ego' to chain it")
        out = CameraCalibration.from_cam2ego(calib["K"], calib["cam2ego"], l2e)
    else:
        raise OccupancyInputError(
            f"{where}: calibration needs K and lidar2cam (or K, cam2ego and lidar2ego)"
        )
    K = np.asarray(out.K, np.float64)
    T = np.asarray(out.lidar2cam, np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise OccupancyInputError(f"{where}: K must be a finite 3x3 matrix, got shape {K.shape}")
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise OccupancyInputError(f"{where}: lidar2cam must be a finite 4x4 matrix")
    return CameraCalibration(K, T)


def _vocabulary_spec(vocabulary: Vocabulary | Sequence[ClassSpec]) -> list[ClassSpec]:
    if isinstance(vocabulary, Vocabulary):
        return [(c.name, list(c.prompts)) for c in vocabulary.classes]
    return list(vocabulary)


@dataclass
class OccupancyResult:
    """Occupied voxels of one frame (LiDAR frame coordinates) with labels and scores."""

    occupied: np.ndarray  # [X, Y, Z] bool
    indices: np.ndarray  # [M, 3] int64 voxel indices (x, y, z)
    centers: np.ndarray  # [M, 3] float32 voxel centres in metres
    labels: np.ndarray  # [M] uint16 class ids, NO_CLASS_ID below min_score / no vocabulary
    scores: np.ndarray  # [M] float32 best class score ("dot" or "cosine", see `score`)
    class_names: tuple[str, ...]
    voxel_size: tuple[float, float, float]
    pc_range: tuple[float, ...]
    features: torch.Tensor = field(repr=False)  # [M, D] L2-normalised language features
    query_encoder: Callable[[str], torch.Tensor] | None = field(default=None, repr=False)
    score: str = "cosine"
    feature_norms: torch.Tensor | None = field(default=None, repr=False)  # [M] before normalising
    point_labels: np.ndarray | None = None  # [N] uint16 per LiDAR point, when points were given
    point_scores: np.ndarray | None = None  # [N] float32

    @property
    def num_occupied(self) -> int:
        return int(self.indices.shape[0])

    def grounding(self, query: str) -> np.ndarray:
        """Similarity [M] of each occupied voxel to one free-text query (the query embedding
        normalised): cosine, or under score "dot" the raw feature's dot product."""
        if self.query_encoder is None:
            raise RuntimeError("this result has no text encoder attached for grounding")
        q = self.query_encoder(query).to(self.features.device, self.features.dtype)
        heat = self.features @ F.normalize(q, dim=-1)
        if self.score == "dot" and self.feature_norms is not None:
            heat = heat * self.feature_norms.to(heat)
        return heat.float().cpu().numpy()

    def label_grid(self, free_label: int = -1) -> np.ndarray:
        """Dense int32 [X, Y, Z] grid: class id (or NO_CLASS_ID) where occupied, else free_label."""
        grid = np.full(self.occupied.shape, free_label, dtype=np.int32)
        grid[tuple(self.indices.T)] = self.labels.astype(np.int32)
        return grid


def preprocess(
    images: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    calibrations: Sequence[Any] | Mapping[str, Any],
    config: Pop3DConfig,
    device: str | torch.device = "cpu",
    lidar2ego: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Images (HxWx3 uint8 RGB) + calibrations, in `config.camera_names` order or keyed by
    camera name -> images [1, Ncam, 3, Hp, Wp] (normalised, padded), lidar2img [1, Ncam, 4, 4]
    for the resized images, and the padded size (Hp, Wp)."""
    device = torch.device(device)
    names = config.camera_names
    if isinstance(images, Mapping) or isinstance(calibrations, Mapping):
        if not (isinstance(images, Mapping) and isinstance(calibrations, Mapping)):
            raise OccupancyInputError("give images and calibrations both as lists or both as dicts")
        missing = [n for n in names if n not in images or n not in calibrations]
        if missing:
            raise OccupancyInputError(f"missing cameras {missing}; the network expects {names}")
        images = [images[n] for n in names]
        calibrations = [calibrations[n] for n in names]
    if len(images) != len(names) or len(calibrations) != len(names):
        raise OccupancyInputError(
            f"{len(images)} images and {len(calibrations)} calibrations for the "
            f"{len(names)} cameras {names}"
        )
    h, w = config.image_size
    hp, wp = config.padded_image_size
    mean = torch.tensor(config.img_mean, device=device).view(3, 1, 1)
    std = torch.tensor(config.img_std, device=device).view(3, 1, 1)
    batch = torch.zeros(len(names), 3, hp, wp, device=device)
    lidar2img = np.zeros((len(names), 4, 4))
    for i, (name, img, cal) in enumerate(zip(names, images, calibrations, strict=True)):
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise OccupancyInputError(
                f"camera {name}: image must be HxWx3 uint8 RGB, got {arr.shape} {arr.dtype}"
            )
        calib = as_calibration(cal, f"camera {name}", lidar2ego)
        if not (arr.flags.writeable and arr.flags.c_contiguous):
            arr = np.array(arr)  # torch.from_numpy needs a writable, contiguous buffer
        x = torch.from_numpy(arr).to(device).permute(2, 0, 1).float()
        if not config.to_rgb:
            x = x.flip(0)  # RGB -> BGR, the channel order of the official (cv2-loaded) images
        ih, iw = arr.shape[:2]
        if (ih, iw) != (h, w):
            x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        batch[i, :, :h, :w] = (x - mean) / std
        scale = np.diag([w / iw, h / ih, 1.0, 1.0])
        lidar2img[i] = scale @ calib.lidar2img()
    l2i = torch.as_tensor(lidar2img, dtype=torch.float32, device=device)
    return batch[None], l2i[None], (hp, wp)


class OccupancyPredictor:
    """POP-3D inference on one set of surround images; the vocabulary can change at runtime.

    `timings` holds the seconds per stage of the last `predict` (`STAGES`: preprocess, backbone,
    neck, encoder, heads, labels, total) plus `text`, the time the last `set_vocabulary` took
    (about 0 on a cache hit), and `grounding` after a grounding query.
    """

    def __init__(
        self,
        network: Pop3DNetwork,
        text_encoder: TextQueryEncoder | None,
        vocabulary: Vocabulary | Sequence[ClassSpec] | EncodedVocabulary | None = None,
        device: str | torch.device = "cpu",
        min_score: float | None = None,
        score: str = "cosine",
    ) -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.config: Pop3DConfig = network.config
        self.text_encoder = text_encoder
        self.score = check_score(score)
        if text_encoder is not None and text_encoder.embed_dim != self.config.feature_dim:
            raise ValueError(
                f"text embeddings have {text_encoder.embed_dim} dims but the network predicts "
                f"{self.config.feature_dim}-dim features"
            )
        self.min_score = min_score
        self.timings: dict[str, float] = {}
        self.vocabulary: EncodedVocabulary | None = None
        self.last_result: OccupancyResult | None = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    @classmethod
    def from_config(
        cls,
        config: Pop3DConfig,
        text_encoder: TextQueryEncoder,
        weights: str | Path | None = None,
        **kwargs,
    ) -> OccupancyPredictor:
        """Build the network from `config`; load an official checkpoint when `weights` is given."""
        network = Pop3DNetwork(config)
        if weights is not None:
            load_pop3d_weights(network, weights)
        return cls(network, text_encoder, **kwargs)

    def set_vocabulary(
        self, vocabulary: Vocabulary | Sequence[ClassSpec] | EncodedVocabulary
    ) -> EncodedVocabulary:
        """Encode (or fetch from cache) the class texts; the network is untouched. An
        `EncodedVocabulary` (e.g. the official `zeroshot_weights.pth`) is used as it is."""
        t0 = time.perf_counter()
        if isinstance(vocabulary, EncodedVocabulary):
            if vocabulary.embeddings.shape[1] != self.config.feature_dim:
                raise ValueError(
                    f"text embeddings have {vocabulary.embeddings.shape[1]} dims but the network "
                    f"predicts {self.config.feature_dim}-dim features"
                )
            self.vocabulary = vocabulary.to(self.device)
            self.timings["text"] = time.perf_counter() - t0
            return self.vocabulary
        if self.text_encoder is None:
            raise ValueError("no text encoder: give an already encoded vocabulary")
        self.vocabulary = self.text_encoder.encode_vocabulary(_vocabulary_spec(vocabulary)).to(
            self.device
        )
        self.timings["text"] = time.perf_counter() - t0
        return self.vocabulary

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def preprocess(
        self,
        images: Sequence[np.ndarray] | Mapping[str, np.ndarray],
        calibrations: Sequence[Any] | Mapping[str, Any],
        lidar2ego: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """See `preprocess`, with this predictor's config and device."""
        return preprocess(images, calibrations, self.config, self.device, lidar2ego)

    @torch.no_grad()
    def predict(
        self,
        images: Sequence[np.ndarray] | Mapping[str, np.ndarray],
        calibrations: Sequence[Any] | Mapping[str, Any],
        lidar2ego: np.ndarray | None = None,
        points: np.ndarray | None = None,
    ) -> OccupancyResult:
        """Images (HxWx3 uint8 RGB, in `config.camera_names` order or keyed by camera name) and
        their calibrations -> occupied voxels with labels, scores and features; with `points`
        ([N, 3+] LiDAR-frame xyz) also one label and score per point."""
        grid_pts = None
        if points is not None:
            pts = np.asarray(points)
            if pts.ndim != 2 or pts.shape[1] < 3 or not np.isfinite(pts[:, :3]).all():
                raise OccupancyInputError(
                    f"points must be finite [N, 3+] LiDAR xyz, got shape {pts.shape}"
                )
            grid_pts = self.config.voxelize_points(pts)  # float64, like the official Voxelize
        text_time = self.timings.get("text", 0.0)
        vocab = self.vocabulary  # one snapshot: set_vocabulary may run in another thread
        timings: dict[str, float] = {}
        t_start = t = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal t
            self._sync()
            now = time.perf_counter()
            timings[stage] = now - t
            t = now

        net = self.network
        imgs, lidar2img, hw = self.preprocess(images, calibrations, lidar2ego)
        lap("preprocess")
        feats = net.backbone(imgs)
        lap("backbone")
        mlvl = net.neck(feats, 1)
        lap("neck")
        planes = net.encode(mlvl, lidar2img, hw)
        lap("encoder")
        agg = net.tpv_aggregator
        voxel_feats = agg.voxel_features(planes)[0]  # [X, Y, Z, C]
        occupied = agg.occupancy(voxel_feats).argmax(-1) == 1
        idx = occupied.nonzero()  # [M, 3]
        lang = agg.language(voxel_feats[occupied]).float()  # only where needed: same per voxel
        features = F.normalize(lang, dim=-1)
        point_lang = None
        if grid_pts is not None:
            loc = torch.as_tensor(grid_pts, dtype=torch.float32, device=self.device)[None]
            point_lang = agg.language(agg.point_features(planes, loc)[0]).float()
        lap("heads")
        labels, scores = self._label(vocab, lang)
        point_labels = point_scores = None
        if point_lang is not None:
            point_labels, point_scores = self._label(vocab, point_lang)
        class_names: tuple[str, ...] = vocab.class_names if vocab is not None else ()
        lap("labels")
        cfg = self.config
        indices = idx.cpu().numpy().astype(np.int64)
        vs = np.asarray(cfg.voxel_size)
        centers = (np.asarray(cfg.pc_range[:3]) + (indices + 0.5) * vs).astype(np.float32)
        result = OccupancyResult(
            occupied=occupied.cpu().numpy(),
            indices=indices,
            centers=centers,
            labels=labels,
            scores=scores,
            class_names=class_names,
            voxel_size=tuple(float(v) for v in vs),
            pc_range=tuple(cfg.pc_range),
            features=features,
            query_encoder=self.text_encoder.encode_query if self.text_encoder else None,
            score=self.score,
            feature_norms=lang.norm(dim=-1),
            point_labels=point_labels,
            point_scores=point_scores,
        )
        timings["text"] = text_time
        timings["total"] = time.perf_counter() - t_start
        self.timings = timings
        self.last_result = result
        return result

    def _label(
        self, vocab: EncodedVocabulary | None, lang: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw language features [N, D] -> class ids (uint16) and best scores (float32)."""
        n = lang.shape[0]
        labels = np.full(n, NO_CLASS_ID, dtype=np.uint16)
        scores = np.zeros(n, dtype=np.float32)
        if vocab is None or n == 0:
            return labels, scores
        best, arg = vocab.scores(lang, self.score).max(-1)
        labels = arg.cpu().numpy().astype(np.uint16)
        scores = best.float().cpu().numpy()
        if self.min_score is not None:
            labels[scores < self.min_score] = NO_CLASS_ID
        return labels, scores

    def grounding(self, query: str, result: OccupancyResult | None = None) -> np.ndarray:
        """Heat map [M] of one free-text query over the occupied voxels of `result` (default:
        the last prediction)."""
        result = result or self.last_result
        if result is None:
            raise RuntimeError("no prediction yet: call predict() first")
        t0 = time.perf_counter()
        heat = result.grounding(query)
        self.timings["grounding"] = time.perf_counter() - t0
        return heat
