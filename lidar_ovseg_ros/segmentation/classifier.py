"""Point classifiers fitted on image prototypes: IGLOSS's logistic regression, or nearest prototype.

IGLOSS (valeoai/IGLOSS, `open_voc_segmentation/igloss_w_sclarplus.py`) L2-normalises the prototype
features, fits `LogisticRegression(solver="liblinear", class_weight="balanced", C=1,
random_state=0)` with the class ids as labels, and labels a point with
`argmax softmax(normalize(x) @ W.T + b)`. We fit the same model on the CPU with scikit-learn and
keep only `W` and `b`, as torch tensors on the device, so classifying a frame is one matmul.

How the fit maps onto scikit-learn, which changed since IGLOSS was written:

- K >= 3: liblinear has no multinomial loss; older scikit-learn ran liblinear's internal
  one-vs-rest, where the sub-problem of class k weights its positives by the balanced weight of
  class k (`n_samples / (K * n_k)`) and its negatives by 1 (liblinear's `Cn = C`). scikit-learn
  1.8+ refuses multiclass liblinear, so we run those K binary liblinear problems ourselves with
  exactly those per-sample weights; `W` row k and `b[k]` are the ones the old library returned.
- K == 2: liblinear returns a single row `w` (the log-odds of the second class). We store
  `W = [0, w]`, `b = [0, b]`, so `softmax(x @ W.T + b) = [1 - sigmoid(z), sigmoid(z)]`, which is
  exactly scikit-learn's `predict_proba` (IGLOSS never ran with two classes; a softmax over the
  single row would always pick class 0).
- K == 1: there is nothing to separate; every point gets the class with probability 1 (`W = 0`).

Scores: IGLOSS applies a softmax over the one-vs-rest logits, while scikit-learn's one-vs-rest
`predict_proba` divides the K sigmoids by their sum. Both are increasing in every logit, so the
argmax (the label) is the same; only the score differs. We report the IGLOSS softmax; `logits()`
gives the raw decision values for anyone who needs the other normalisation.

`min_score` turns low-confidence points into `NO_CLASS_ID` (IGLOSS has no "unknown" class; the
threshold is our addition and is off by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lidar_ovseg_ros.vocabulary import NO_CLASS_ID

__all__ = [
    "CLASSIFIER_KINDS",
    "ClassifierConfig",
    "ClassifierError",
    "FittedClassifier",
    "fit_classifier",
    "fit_logistic_regression",
]

CLASSIFIER_KINDS = ("logreg", "nearest")

_CHUNK = 65536  # points per matmul chunk: bounds the [N, P] similarity matrix of 'nearest'


class ClassifierError(ValueError):
    """Bad classifier configuration or prototypes (e.g. a class without any prototype)."""


@dataclass(frozen=True)
class ClassifierConfig:
    """How points are matched to prototypes.

    kind: "logreg" (IGLOSS: logistic regression on the prototypes, score = softmax probability) or
        "nearest" (class of the most similar prototype, score = its cosine similarity).
    min_score: points whose score is below it get `NO_CLASS_ID`; None keeps every label.
    C: inverse L2 regularisation of the logistic regression (IGLOSS: 1).
    """

    kind: str = "logreg"
    min_score: float | None = None
    C: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in CLASSIFIER_KINDS:
            raise ClassifierError(
                f"ClassifierConfig.kind must be one of {list(CLASSIFIER_KINDS)}, got {self.kind!r}"
            )
        if self.min_score is not None:
            if isinstance(self.min_score, bool) or not isinstance(self.min_score, int | float):
                raise ClassifierError(
                    f"ClassifierConfig.min_score must be a number or None, got {self.min_score!r}"
                )
            lo = 0.0 if self.kind == "logreg" else -1.0
            if not (lo <= float(self.min_score) <= 1.0):
                raise ClassifierError(
                    f"ClassifierConfig.min_score must lie in [{lo}, 1] for kind '{self.kind}', "
                    f"got {self.min_score!r}"
                )
        if isinstance(self.C, bool) or not isinstance(self.C, int | float) or not self.C > 0:
            raise ClassifierError(f"ClassifierConfig.C must be a number > 0, got {self.C!r}")


def _check_prototypes(
    features: Any, labels: Any, num_classes: int, class_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    feats = np.asarray(features, dtype=np.float64)
    labs = np.asarray(labels)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ClassifierError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise ClassifierError(
            f"prototype features must be a non-empty [P, D] array, got {feats.shape}"
        )
    if labs.shape != (feats.shape[0],):
        raise ClassifierError(
            f"prototype labels must have shape ({feats.shape[0]},), got {labs.shape}"
        )
    if not np.issubdtype(labs.dtype, np.integer):
        raise ClassifierError(f"prototype labels must be integer class ids, got dtype {labs.dtype}")
    labs = labs.astype(np.int64)
    bad = (labs < 0) | (labs >= num_classes)
    if bad.any():
        raise ClassifierError(
            f"prototype #{int(np.flatnonzero(bad)[0])} has class id {int(labs[bad][0])}, "
            f"outside 0..{num_classes - 1}"
        )
    if not np.isfinite(feats).all():
        row = int(np.flatnonzero(~np.isfinite(feats).all(axis=1))[0])
        raise ClassifierError(f"prototype #{row} has non-finite features")
    norms = np.linalg.norm(feats, axis=1)
    if (norms == 0).any():
        raise ClassifierError(f"prototype #{int(np.flatnonzero(norms == 0)[0])} is all zeros")
    counts = np.bincount(labs, minlength=num_classes)
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        names = [
            f"{i} ('{class_names[i]}')" if class_names is not None else str(i) for i in missing
        ]
        raise ClassifierError(
            f"{len(missing)} class(es) have no prototype: {', '.join(names)}; every class of the "
            "vocabulary needs at least one prototype image"
        )
    return feats / norms[:, None], labs


def _balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """scikit-learn's class_weight='balanced': n_samples / (n_classes * count[class])."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return len(labels) / (num_classes * counts)


def fit_logistic_regression(
    features: np.ndarray, labels: np.ndarray, num_classes: int, C: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """IGLOSS's liblinear logistic regression on L2-normalised prototypes -> (W [K, D], b [K]).

    `features` must already be L2-normalised and every class 0..K-1 present (see module notes
    for how K = 1, 2 and >= 3 map onto scikit-learn).
    """
    from sklearn.linear_model import LogisticRegression

    dim = features.shape[1]
    if num_classes == 1:
        return np.zeros((1, dim)), np.zeros(1)
    if num_classes == 2:
        clf = LogisticRegression(
            solver="liblinear", class_weight="balanced", C=C, random_state=0
        ).fit(features, labels)
        W = np.zeros((2, dim))
        b = np.zeros(2)
        W[1], b[1] = clf.coef_[0], clf.intercept_[0]
        return W, b
    class_weight = _balanced_weights(labels, num_classes)
    W = np.empty((num_classes, dim))
    b = np.empty(num_classes)
    for k in range(num_classes):
        positive = labels == k
        sample_weight = np.where(positive, class_weight[k], 1.0)
        clf = LogisticRegression(solver="liblinear", C=C, random_state=0)
        clf.fit(features, positive, sample_weight=sample_weight)
        W[k], b[k] = clf.coef_[0], clf.intercept_[0]
    return W, b


class FittedClassifier:
    """An immutable fitted classifier with its tensors on one device.

    Immutable so that a node can build a new one in the background and swap a single reference:
    a frame is always labelled by exactly one classifier.
    """

    __slots__ = (
        "C",
        "bias",
        "class_names",
        "device",
        "feature_dim",
        "kind",
        "min_score",
        "num_classes",
        "prototype_labels",
        "prototypes",
        "weight",
    )

    def __init__(
        self,
        kind: str,
        num_classes: int,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        prototypes: torch.Tensor,
        prototype_labels: torch.Tensor,
        min_score: float | None = None,
        class_names: Sequence[str] | None = None,
        C: float = 1.0,
    ) -> None:
        values = {
            "kind": kind,
            "num_classes": int(num_classes),
            "weight": weight,
            "bias": bias,
            "prototypes": prototypes,
            "prototype_labels": prototype_labels,
            "min_score": None if min_score is None else float(min_score),
            "class_names": tuple(class_names) if class_names is not None else None,
            "feature_dim": int(prototypes.shape[1]),
            "device": prototypes.device,
            "C": float(C),
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"FittedClassifier is immutable (tried to set '{key}')")

    def __repr__(self) -> str:
        return (
            f"FittedClassifier(kind={self.kind!r}, num_classes={self.num_classes}, "
            f"feature_dim={self.feature_dim}, prototypes={len(self.prototypes)}, "
            f"min_score={self.min_score}, device={self.device})"
        )

    def to(self, device: str | torch.device) -> FittedClassifier:
        """A copy with its tensors on `device`."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return FittedClassifier(
            self.kind,
            self.num_classes,
            move(self.weight),
            move(self.bias),
            move(self.prototypes),
            move(self.prototype_labels),
            self.min_score,
            self.class_names,
            self.C,
        )

    def _check(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ClassifierError(
                f"point features must be [N, {self.feature_dim}], got {tuple(features.shape)}"
            )
        return features.to(device=self.device, dtype=torch.float32)

    def _scaled(self, x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """`normalize(x) @ matrix.T`, dividing the [n, K] product rather than the [n, D] input
        (same result as `F.normalize`, eps 1e-12, at a fraction of the memory traffic)."""
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(1e-12)
        return (x @ matrix.T).div_(norm)

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[N, K] decision values: `normalize(x) @ W.T + b` (logreg) or the best cosine per class
        (nearest)."""
        x = self._check(features)
        if self.kind == "logreg":
            return self._scaled(x, self.weight).add_(self.bias)
        out = torch.full((len(x), self.num_classes), -2.0, device=self.device)
        for start in range(0, len(x), _CHUNK):
            sims = self._scaled(x[start : start + _CHUNK], self.prototypes)
            index = self.prototype_labels.expand(len(sims), -1)
            out[start : start + _CHUNK].scatter_reduce_(1, index, sims, reduce="amax")
        return out

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """[N, K] IGLOSS class probabilities, softmax over the logits (logreg only)."""
        if self.kind != "logreg":
            raise ClassifierError("probabilities() exists only for kind 'logreg'")
        return torch.softmax(self.logits(features), dim=1)

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels (int64 [N], `NO_CLASS_ID` below `min_score`) and scores (float32 [N]) on the
        classifier's device.

        logreg: label = argmax of the logits (= argmax of the softmax), score = the largest
        softmax probability, computed as `1 / sum(exp(z - max z))` without the [N, K] softmax.
        """
        x = self._check(features)
        labels = torch.empty(len(x), dtype=torch.int64, device=self.device)
        scores = torch.empty(len(x), dtype=torch.float32, device=self.device)
        for start in range(0, len(x), _CHUNK):
            chunk = x[start : start + _CHUNK]
            if self.kind == "logreg":
                z = self._scaled(chunk, self.weight).add_(self.bias)
                top, cls = z.max(dim=1)
                best = z.sub_(top[:, None]).exp_().sum(dim=1).reciprocal_()
            else:
                best, proto = self._scaled(chunk, self.prototypes).max(dim=1)
                cls = self.prototype_labels[proto]
            labels[start : start + _CHUNK] = cls
            scores[start : start + _CHUNK] = best
        if self.min_score is not None:
            labels[scores < self.min_score] = NO_CLASS_ID
        return labels, scores


def fit_classifier(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_classes: int,
    config: ClassifierConfig | None = None,
    device: str | torch.device = "cpu",
    class_names: Sequence[str] | None = None,
) -> FittedClassifier:
    """Fit a classifier on prototypes `features` [P, D] with class ids `labels` [P] in 0..K-1.

    Raises `ClassifierError` naming the classes that have no prototype.
    """
    config = config or ClassifierConfig()
    if class_names is not None and len(class_names) != num_classes:
        raise ClassifierError(f"{len(class_names)} class names for {num_classes} classes")
    feats, labs = _check_prototypes(features, labels, num_classes, class_names)
    weight = bias = None
    if config.kind == "logreg":
        W, b = fit_logistic_regression(feats, labs, num_classes, C=config.C)
        weight = torch.as_tensor(W, dtype=torch.float32, device=device)
        bias = torch.as_tensor(b, dtype=torch.float32, device=device)
    return FittedClassifier(
        kind=config.kind,
        num_classes=num_classes,
        weight=weight,
        bias=bias,
        prototypes=torch.as_tensor(feats, dtype=torch.float32, device=device),
        prototype_labels=torch.as_tensor(labs, dtype=torch.int64, device=device),
        min_score=config.min_score,
        class_names=class_names,
        C=config.C,
    )
