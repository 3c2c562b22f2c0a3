"""VLScene's closed set (SemanticKITTI 19 classes + empty) served in the user's vocabulary.

VLScene predicts one of its fixed classes per voxel; it has no text-aligned voxel features at
inference. Each VLScene class is mapped to the active class whose CLIP text embedding is the
most similar (cosine of template-ensembled, L2-normalised embeddings, maximum over the prompts
of both sides). When that similarity is below `threshold` the VLScene class maps to no class
(NO_CLASS_ID): its voxels are still occupied, but unlabelled. A voxel's score is VLScene's
softmax probability of its class. Index 0 ("unlabeled") is empty space and never a class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lidar_ovseg_ros.vocabulary import NO_CLASS_ID

__all__ = ["DEFAULT_MATCH_THRESHOLD", "VLSCENE_PROMPTS", "ClassMatch", "match_classes"]

# Default minimum cosine between a VLScene class and an active class (CLIP ViT-B/16 text
# embeddings, template-ensembled). Text-text cosines of CLIP are high for any two object words
# (often 0.7-0.8); 0.85 is meant to keep synonyms and near-synonyms and drop merely related
# words. It is a judgement, NOT measured here (no CLIP weights offline): check the match table
# the node logs and reports on /diagnostics, and tune `match_threshold` (runtime).
DEFAULT_MATCH_THRESHOLD = 0.85

# Natural-language prompts of VLScene's classes 1..19 (SemanticKITTI names, hyphens spelt out).
VLSCENE_PROMPTS: dict[str, tuple[str, ...]] = {
    "car": ("car",),
    "bicycle": ("bicycle",),
    "motorcycle": ("motorcycle",),
    "truck": ("truck",),
    "other-vehicle": ("other vehicle", "bus", "trailer"),
    "person": ("person", "pedestrian"),
    "bicyclist": ("bicyclist",),
    "motorcyclist": ("motorcyclist",),
    "road": ("road",),
    "parking": ("parking lot",),
    "sidewalk": ("sidewalk",),
    "other-ground": ("other ground",),
    "building": ("building",),
    "fence": ("fence",),
    "vegetation": ("vegetation",),
    "trunk": ("tree trunk",),
    "terrain": ("terrain", "grass"),
    "pole": ("pole",),
    "traffic-sign": ("traffic sign",),
}


@dataclass(frozen=True)
class ClassMatch:
    """similarity [C_vlscene, K_active] (row 0, empty, is -inf); best active class per row."""

    vlscene_classes: tuple[str, ...]
    active_classes: tuple[str, ...]
    similarity: np.ndarray

    def lookup(self, threshold: float) -> np.ndarray:
        """uint16 [C_vlscene]: active class id, or NO_CLASS_ID (below threshold, or empty)."""
        out = np.full(len(self.vlscene_classes), NO_CLASS_ID, np.uint16)
        if self.similarity.shape[1] == 0:
            return out
        best = self.similarity.argmax(1)
        val = self.similarity[np.arange(len(best)), best]
        ok = np.isfinite(val) & (val >= threshold)
        out[ok] = best[ok]
        return out

    def table(self, threshold: float) -> dict[str, str | None]:
        """VLScene class -> active class name (None: no class), for logs and diagnostics."""
        lut = self.lookup(threshold)
        return {
            name: (None if lut[i] == NO_CLASS_ID else self.active_classes[int(lut[i])])
            for i, name in enumerate(self.vlscene_classes)
            if i > 0
        }


def match_classes(
    vlscene_classes: tuple[str, ...],
    vlscene_embeddings: torch.Tensor,
    vlscene_index: torch.Tensor,
    active_classes: tuple[str, ...],
    active_embeddings: torch.Tensor,
    active_index: torch.Tensor,
) -> ClassMatch:
    """Class-to-class cosine: the maximum over every (VLScene prompt, active prompt) pair.

    `*_embeddings` are L2-normalised prompt embeddings [S, D]; `*_index` gives each prompt's
    class. VLScene prompts belong to classes 1..C-1 (index 0 is empty and gets -inf)."""
    sim = (vlscene_embeddings.float() @ active_embeddings.float().T).cpu().numpy()
    out = np.full((len(vlscene_classes), len(active_classes)), -np.inf, np.float64)
    vi = vlscene_index.cpu().numpy()
    ai = active_index.cpu().numpy()
    for r in range(sim.shape[0]):
        np.maximum.at(out[vi[r]], ai, sim[r])
    out[0] = -np.inf
    return ClassMatch(tuple(vlscene_classes), tuple(active_classes), out)
