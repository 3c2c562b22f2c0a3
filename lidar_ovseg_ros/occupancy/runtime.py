"""Building an `OccupancyPredictor` for a node, and swapping its vocabulary atomically.

`build_predictor` is the one place that turns a profile into networks: "full" loads the official
`pop3d_weights.pth` and CLIP ViT-B/16 through `from_pretrained`; "tiny" is the explicit small
built-in profile (untrained tiny networks, deterministic from a seed) used where no weights or
model hub are available. `SwitchableOccupancy` gives the predictor the prepare/activate interface
of `VocabularySwitcher`: text embeddings are encoded off to the side and swapped in with one
assignment, and each prediction reads the active vocabulary once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lidar_ovseg_ros.models.checkpoints import CheckpointNotFoundError
from lidar_ovseg_ros.models.pop3d import Pop3DConfig, Pop3DNetwork
from lidar_ovseg_ros.occupancy.pipeline import OccupancyPredictor, OccupancyResult
from lidar_ovseg_ros.occupancy.text_queries import (
    CLIP_MODEL_ID,
    EncodedVocabulary,
    TextQueryEncoder,
    build_tiny_text_model,
    byte_level_clip_tokenizer,
    nuscenes16_vocabulary,
)
from lidar_ovseg_ros.vocabulary import Vocabulary

PROFILES = ("tiny", "full")


def _tiny_text_encoder(feature_dim: int, seed: int, device: str) -> TextQueryEncoder:
    tok = byte_level_clip_tokenizer()
    model = build_tiny_text_model(tok, feature_dim, seed)
    return TextQueryEncoder(
        model,
        tok,
        model_id=f"tiny-clip-{seed}",
        templates=("a photo of a {}.", "{}"),
        device=device,
    )


def build_predictor(
    profile: str,
    weights: str | None = None,
    clip_model: str = CLIP_MODEL_ID,
    device: str = "cpu",
    seed: int = 0,
    min_score: float | None = None,
    score: str = "cosine",
) -> OccupancyPredictor:
    """A predictor for `profile`; "full" needs `weights` (missing file -> error naming it).
    `score` is "dot" (official evaluation) or "cosine"; `min_score` is in its units."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    if profile == "full":
        from lidar_ovseg_ros.weights import (
            ModelNotAvailableError,
            require_hub_model,
            resolve_model_file,
        )

        try:  # no weights, or a catalog name: the model from the cache (`lidar-ovseg weights`)
            path = resolve_model_file(weights, "pop3d")
        except ModelNotAvailableError as exc:
            raise CheckpointNotFoundError(
                f"profile 'full' needs the POP-3D weights (pop3d_weights.pth): set weights, or "
                f"{exc}"
            ) from None
        if not path.is_file():  # before loading CLIP: fail fast, name it
            raise CheckpointNotFoundError(f"POP-3D weights not found: {path}")
        weights = str(path)
        require_hub_model(clip_model)
        text = TextQueryEncoder.from_pretrained(clip_model, device=device)
        return OccupancyPredictor.from_config(
            Pop3DConfig.full(),
            text,
            weights=weights,
            device=device,
            min_score=min_score,
            score=score,
        )
    cfg = Pop3DConfig.tiny()
    torch.manual_seed(seed)
    net = Pop3DNetwork(cfg)
    with torch.no_grad():
        # Untrained occupancy logits would be ~constant; a signed random projection makes both
        # "free" and "occupied" occur, so the whole pipeline is exercised.
        w = torch.randn(cfg.out_dims, generator=torch.Generator().manual_seed(seed))
        net.tpv_aggregator.classifier.weight.copy_(torch.stack([w, -w]))
        net.tpv_aggregator.classifier.bias.zero_()
    text = _tiny_text_encoder(cfg.feature_dim, seed, device)
    return OccupancyPredictor(net, text, device=device, min_score=min_score, score=score)


def class_queries(vocabulary: Vocabulary) -> list[tuple[str, list[str]]]:
    """(class, sub-names) to encode: POP-3D's official sub-names for the nuScenes classes it
    defines, so the preset reproduces its zero-shot queries; the class prompts otherwise."""
    official = dict(nuscenes16_vocabulary())
    return [(c.name, list(official.get(c.name, c.prompts))) for c in vocabulary.classes]


@dataclass(frozen=True)
class PreparedVocabulary:
    vocabulary: Vocabulary
    encoded: EncodedVocabulary


class SwitchableOccupancy:
    """prepare/activate around an `OccupancyPredictor`, for `VocabularySwitcher`."""

    def __init__(self, predictor: OccupancyPredictor) -> None:
        self.predictor = predictor
        self.device = predictor.device
        self._active: PreparedVocabulary | None = None
        self._lock = threading.Lock()  # one network call at a time (predict vs. grounding)

    @property
    def active(self) -> PreparedVocabulary | None:
        return self._active

    def prepare_vocabulary(
        self,
        vocabulary: Vocabulary,
        progress: Callable[[int, int, str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> PreparedVocabulary:
        if progress:
            progress(0, 1, "encoding class texts")
        specs = class_queries(vocabulary)
        encoded = self.predictor.text_encoder.encode_vocabulary(specs).to(self.device)
        if progress:
            progress(1, 1, "done")
        return PreparedVocabulary(vocabulary, encoded)

    def activate(self, prepared: PreparedVocabulary) -> None:
        self._active = prepared  # one reference assignment: atomic

    def predict(
        self, images: Any, calibrations: Any, points: np.ndarray | None = None
    ) -> tuple[OccupancyResult, PreparedVocabulary | None]:
        """One prediction, entirely under the vocabulary active when it started; with `points`
        (LiDAR xyz) the result also labels each point."""
        active = self._active
        with self._lock:
            self.predictor.vocabulary = active.encoded if active is not None else None
            result = self.predictor.predict(images, calibrations, points=points)
        return result, active

    def grounding(self, query: str, result: OccupancyResult) -> np.ndarray:
        with self._lock:
            return result.grounding(query)
