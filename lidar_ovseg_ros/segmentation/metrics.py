"""Semantic segmentation metrics: a confusion matrix accumulated over frames, per-class IoU, mIoU.

Conventions follow the official evaluations (valeoai/IGLOSS `igloss_utils.py`, the nuScenes
devkit's lidarseg `ConfusionMatrix`, the SemanticKITTI API): rows are ground truth, columns are
predictions; `IoU_c = TP_c / (GT_c + Pred_c - TP_c)`; mIoU is the mean over classes whose IoU is
defined.

- Ground-truth points equal to `ignore_index` (or outside 0..K-1) are skipped entirely.
- A prediction that is not a class (`NO_CLASS_ID`: outside the crop, below `min_score`) on a
  labelled point is a miss: it counts in that class's ground truth, never as a true positive, and in
  no class's predictions. It sits in an extra last column, so `matrix` is [K, K + 1].
- A class absent from both the ground truth and the predictions has an undefined IoU (0 / 0):
  it is NaN and left out of the mean (`np.nanmean`, as the official code). A class predicted but
  absent from the ground truth has IoU 0 and does count. If no class is defined, mIoU is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["IGNORE_INDEX", "ConfusionMatrix", "SegmentationScores"]

IGNORE_INDEX = 255
"""Ground-truth label that is not evaluated (the value the official loaders use)."""


@dataclass
class SegmentationScores:
    """The figures derived from a confusion matrix (IoUs in [0, 1], NaN where undefined)."""

    class_names: list[str]
    iou: np.ndarray  # [K] float64
    miou: float
    accuracy: float  # overall point accuracy over evaluated points
    num_points: int  # evaluated (non-ignored) points
    missed: int  # evaluated points predicted NO_CLASS / out of range

    def as_dict(self) -> dict:
        def num(v: float) -> float | None:
            return None if np.isnan(v) else float(v)

        return {
            "miou": num(self.miou),
            "accuracy": num(self.accuracy),
            "num_points": self.num_points,
            "missed": self.missed,
            "iou": {n: num(v) for n, v in zip(self.class_names, self.iou)},
        }


@dataclass
class ConfusionMatrix:
    """Accumulates [K, K + 1] counts (last column: no class predicted) over any number of frames."""

    num_classes: int
    ignore_index: int | None = IGNORE_INDEX
    class_names: Sequence[str] | None = None
    matrix: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {self.num_classes!r}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        self.matrix = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame: `gt` and `pred` integer labels of the same points."""
        gt = np.asarray(gt).ravel().astype(np.int64)
        pred = np.asarray(pred).ravel().astype(np.int64)
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth has {gt.size} labels but prediction has {pred.size}")
        keep = (gt >= 0) & (gt < self.num_classes)
        if self.ignore_index is not None:
            keep &= gt != self.ignore_index
        gt, pred = gt[keep], pred[keep]
        k = self.num_classes
        pred = np.where((pred >= 0) & (pred < k), pred, k)  # not a class -> the miss column
        counts = np.bincount(gt * (k + 1) + pred, minlength=k * (k + 1))
        self.matrix += counts.reshape(k, k + 1)

    def reset(self) -> None:
        self.matrix[:] = 0

    @property
    def classes_matrix(self) -> np.ndarray:
        """[K, K] counts without the miss column (rows gt, columns predictions)."""
        return self.matrix[:, : self.num_classes]

    def iou(self) -> np.ndarray:
        """[K] per-class IoU; NaN for classes absent from both ground truth and predictions."""
        tp = np.diag(self.classes_matrix).astype(np.float64)
        gt = self.matrix.sum(axis=1)
        pred = self.classes_matrix.sum(axis=0)
        union = (gt + pred - tp).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.classes_matrix) / total) if total else float("nan")

    def scores(self) -> SegmentationScores:
        names = (
            list(self.class_names)
            if self.class_names is not None
            else [str(i) for i in range(self.num_classes)]
        )
        return SegmentationScores(
            class_names=names,
            iou=self.iou(),
            miou=self.miou(),
            accuracy=self.accuracy(),
            num_points=int(self.matrix.sum()),
            missed=int(self.matrix[:, -1].sum()),
        )

    def format_table(self) -> str:
        """Human-readable per-class IoU, mIoU and the confusion matrix."""
        s = self.scores()
        width = max(8, *(len(n) for n in s.class_names))
        lines = [f"{'class':<{width}}  IoU (%)"]
        for name, v in zip(s.class_names, s.iou):
            lines.append(f"{name:<{width}}  {'n/a' if np.isnan(v) else f'{100 * v:6.2f}'}")
        miou = "n/a" if np.isnan(s.miou) else f"{100 * s.miou:6.2f}"
        acc = "n/a" if np.isnan(s.accuracy) else f"{100 * s.accuracy:6.2f}"
        lines.append(f"{'mIoU':<{width}}  {miou}")
        lines.append(f"{'accuracy':<{width}}  {acc}  ({s.num_points} points, {s.missed} missed)")
        lines.append("")
        lines.append("confusion matrix (rows: ground truth, columns: prediction, last: none)")
        cell = max(6, len(str(int(self.matrix.max(initial=0)))) + 1)
        header = " " * width + "".join(f"{i:>{cell}}" for i in range(self.num_classes))
        lines.append(header + f"{'none':>{cell}}")
        for i, row in enumerate(self.matrix):
            label = f"{i} {s.class_names[i]}"[:width]
            lines.append(f"{label:<{width}}" + "".join(f"{int(v):>{cell}}" for v in row))
        return "\n".join(lines)
