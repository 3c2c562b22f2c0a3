"""What every LiDAR segmentation method offers the node, the CLI and the vocabulary switch.

A method is a config plus a class with this interface (IGLOSS: `segmenter.LidarSegmenter`,
OpenScene: `openscene.OpenSceneSegmenter`). The vocabulary switch needs `prepare_vocabulary`
(slow, builds an immutable prepared vocabulary, touches nothing `segment` uses) and `activate`
(one reference swap); `segment` reads the active vocabulary once per frame, so a frame is always
labelled by exactly one vocabulary. Methods whose point features live in a text embedding space
also answer free-text queries (`TextGrounding`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from lidar_ovseg_ros.vocabulary import Vocabulary

__all__ = ["METHODS", "PreparedVocabulary", "Segmenter", "TextGrounding", "supports_grounding"]

METHODS = ("igloss", "openscene")

ProgressFn = Callable[[int, int, str], None]


@runtime_checkable
class PreparedVocabulary(Protocol):
    """A vocabulary ready to label points (immutable)."""

    vocabulary: Vocabulary
    build_seconds: float

    @property
    def name(self) -> str: ...

    def __len__(self) -> int: ...


@runtime_checkable
class Segmenter(Protocol):
    """One LiDAR method: backbone loaded once, a swappable vocabulary, per-frame labels."""

    device: torch.device

    @property
    def untrained(self) -> bool: ...

    @property
    def feature_dim(self) -> int: ...

    @property
    def active(self) -> Any: ...

    def prepare_vocabulary(
        self,
        vocabulary: Vocabulary,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> Any: ...

    def activate(self, active: Any) -> None: ...

    def set_vocabulary(self, vocabulary: Vocabulary) -> Any: ...

    def segment(
        self, points: np.ndarray, return_features: bool = False, label_outside_crop: bool = False
    ) -> Any: ...


@runtime_checkable
class TextGrounding(Protocol):
    """Methods with text-aligned point features: a heat map [N] of one free-text query over the
    points of a `segment` result."""

    def grounding(self, query: str, result: Any) -> np.ndarray: ...


def supports_grounding(segmenter: object) -> bool:
    return isinstance(segmenter, TextGrounding)
