"""VLScene for a node: the predictor (stereo pair -> completed, labelled voxels) and the
prepare/activate vocabulary interface of `VocabularySwitcher`.

VLScene is closed-set: it predicts SemanticKITTI's 19 classes (+ empty). The active vocabulary
is served by matching each VLScene class to an active class with CLIP text similarity
(`class_matching`); matching happens off to the side when the vocabulary changes and is swapped
in with one assignment, so each prediction reads one vocabulary.

Profiles: "full" loads the official checkpoint and CLIP ViT-B/16's text tower; "tiny" is the
tiny config with random weights and a tiny random text model (deterministic from a seed): it
exercises every part, and its output is NOT meaningful.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lidar_ovseg_ros.models.checkpoints import CheckpointNotFoundError
from lidar_ovseg_ros.models.vlscene import VLSceneConfig, VLSceneNet, load_vlscene_checkpoint
from lidar_ovseg_ros.occupancy.text_queries import (
    CLIP_MODEL_ID,
    TextQueryEncoder,
    build_tiny_text_model,
    byte_level_clip_tokenizer,
)
from lidar_ovseg_ros.ssc.class_matching import VLSCENE_PROMPTS, ClassMatch, match_classes
from lidar_ovseg_ros.ssc.stereo_inputs import StereoCalibration, prepare_stereo_inputs
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, Vocabulary

__all__ = [
    "PROFILES",
    "PreparedSSCVocabulary",
    "SSCResult",
    "SwitchableVLScene",
    "VLScenePredictor",
    "build_vlscene_predictor",
]

PROFILES = ("tiny", "full")


@dataclass(frozen=True)
class SSCResult:
    """Occupied voxels of the completed scene (every non-empty VLScene prediction).

    centers [N, 3] float32 in the grid frame; labels [N] uint16 active class ids (NO_CLASS_ID:
    VLScene class without a match); scores [N] float32 VLScene's softmax probability of the
    predicted class; vlscene_labels [N] uint8 VLScene class indices (1..19)."""

    centers: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    vlscene_labels: np.ndarray
    voxel_size: tuple[float, float, float]

    @property
    def num_occupied(self) -> int:
        return len(self.labels)


class VLScenePredictor:
    def __init__(
        self, net: VLSceneNet, text_encoder: TextQueryEncoder, device: str | torch.device = "cpu"
    ) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.cfg = net.cfg
        self.text_encoder = text_encoder
        names = self.cfg.class_names
        missing = [n for n in names[1:] if n not in VLSCENE_PROMPTS]
        if missing:
            raise ValueError(f"no prompts for VLScene classes {missing}")
        self._vlscene_specs = [(n, list(VLSCENE_PROMPTS[n])) for n in names[1:]]

    @torch.no_grad()
    def complete(
        self, left: np.ndarray, right: np.ndarray, calibration: StereoCalibration
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class index [X, Y, Z] uint8 (0 = empty) and its probability float32, on the grid."""
        inputs = prepare_stereo_inputs(left, right, calibration, self.cfg).to(self.device)
        logits = self.net(inputs)[0]
        prob, cls = torch.softmax(logits, dim=0).max(dim=0)
        return cls.to(torch.uint8).cpu().numpy(), prob.float().cpu().numpy()

    def voxels(self, classes: np.ndarray, probs: np.ndarray, lut: np.ndarray) -> SSCResult:
        """Occupied voxels with their centres (the official voxel-centre convention)."""
        idx = np.argwhere(classes > 0)
        vs = np.asarray(self.cfg.voxel_size, np.float64)
        lo = np.asarray(self.cfg.point_cloud_range[:3], np.float64)
        centers = (lo + (idx + 0.5) * vs).astype(np.float32)
        src = classes[tuple(idx.T)]
        return SSCResult(
            centers=centers,
            labels=lut[src].astype(np.uint16),
            scores=probs[tuple(idx.T)].astype(np.float32),
            vlscene_labels=src.astype(np.uint8),
            voxel_size=tuple(float(v) for v in vs),
        )

    def match(self, vocabulary: Vocabulary) -> ClassMatch:
        """Similarity of every VLScene class to every class of `vocabulary` (CLIP text)."""
        ours = self.text_encoder.encode_vocabulary(self._vlscene_specs)
        theirs = self.text_encoder.encode_vocabulary(
            [(c.name, list(c.prompts) or [c.name]) for c in vocabulary.classes]
        )
        return match_classes(
            self.cfg.class_names,
            ours.embeddings,
            ours.class_index + 1,  # VLScene class 0 (empty) has no prompt
            tuple(vocabulary.names),
            theirs.embeddings,
            theirs.class_index,
        )


def build_vlscene_predictor(
    profile: str,
    weights: str | None = None,
    clip_model: str = CLIP_MODEL_ID,
    device: str = "cpu",
    seed: int = 0,
) -> VLScenePredictor:
    """ "full": the official checkpoint (path, or the catalog's cached `vlscene`) + CLIP;
    "tiny": the tiny config, random weights from `seed`, a tiny random text model."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    if profile == "full":
        from lidar_ovseg_ros.weights import (
            ModelNotAvailableError,
            require_hub_model,
            resolve_model_file,
        )

        try:
            path = resolve_model_file(weights, "vlscene")
        except ModelNotAvailableError as exc:
            raise CheckpointNotFoundError(
                f"profile 'full' needs the VLScene checkpoint: set weights, or {exc}"
            ) from None
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"VLScene checkpoint not found: {path} (see README: the official file is on a "
                "file-sharing page; `lidar-ovseg weights add vlscene <file>`)"
            )
        net, _skipped = load_vlscene_checkpoint(path, VLSceneConfig.official())
        require_hub_model(clip_model)
        text = TextQueryEncoder.from_pretrained(clip_model, device=device)
        return VLScenePredictor(net, text, device=device)
    torch.manual_seed(seed)
    net = VLSceneNet(VLSceneConfig.tiny())
    tok = byte_level_clip_tokenizer()
    text = TextQueryEncoder(
        build_tiny_text_model(tok, 32, seed),
        tok,
        model_id=f"tiny-clip-{seed}",
        templates=("a photo of a {}.", "{}"),
        device=device,
    )
    return VLScenePredictor(net, text, device=device)


@dataclass(frozen=True)
class PreparedSSCVocabulary:
    vocabulary: Vocabulary
    match: ClassMatch


class SwitchableVLScene:
    """prepare/activate around a `VLScenePredictor`, for `VocabularySwitcher`."""

    def __init__(self, predictor: VLScenePredictor) -> None:
        self.predictor = predictor
        self.device = predictor.device
        self._active: PreparedSSCVocabulary | None = None
        self._lock = threading.Lock()  # one network call at a time

    @property
    def active(self) -> PreparedSSCVocabulary | None:
        return self._active

    def prepare_vocabulary(
        self,
        vocabulary: Vocabulary,
        progress: Callable[[int, int, str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> PreparedSSCVocabulary:
        if progress:
            progress(0, 1, "matching VLScene's classes to the vocabulary (CLIP text)")
        match = self.predictor.match(vocabulary)  # text only: runs beside a frame
        if progress:
            progress(1, 1, "done")
        return PreparedSSCVocabulary(vocabulary, match)

    def activate(self, prepared: PreparedSSCVocabulary) -> None:
        self._active = prepared  # one reference assignment: atomic

    def predict(
        self,
        left: np.ndarray,
        right: np.ndarray,
        calibration: StereoCalibration,
        threshold: float,
    ) -> tuple[SSCResult, PreparedSSCVocabulary | None]:
        """One completed scene under the vocabulary active when it started."""
        active = self._active
        with self._lock:
            classes, probs = self.predictor.complete(left, right, calibration)
        if active is None:
            lut = np.full(self.predictor.cfg.num_classes, NO_CLASS_ID, np.uint16)
        else:
            lut = active.match.lookup(threshold)
        return self.predictor.voxels(classes, probs, lut), active
