"""POP-3D's voxel evaluation: ground truth from a labelled LiDAR sweep, then per-class IoU.

Ground truth (official `prepare_gt_occupancy_also`): points strictly inside the volume are kept;
each is joined to the sensor origin by a ray sampled at `num_ray_samples` evenly spaced points
(100 in the official code), and every voxel a sample falls in is marked FREE; then every voxel
holding points takes the majority label of its points. As in the official code, points with an
ignored label are first mapped to 255 and the vote is `argmax` of the label counts, so ties go to
the smallest label: a real label beats an ignored one on a tie, and a voxel becomes IGNORE only
when ignored points outnumber every real label. All other voxels are IGNORE (unobserved). Voxel
indices clip coordinates to [min, max - 1e-3] like the official `Voxelize`.

Metric: over non-IGNORE voxels, IoU per class (prediction = class id where occupied, FREE
where empty), mIoU over the classes, mIoU with the 'free' class included (the official
`val_miou_vox_clip_all` averages the 16 classes and 'empty'), and the binary occupancy IoU.

A class absent from the ground truth (`absent=`):
- "official" (default, `utils/metric_util.py` `MeanIoU._after_epoch`): IoU 1, even when it is
  predicted somewhere, and it counts in the mean;
- "strict": IoU 0 when it is predicted (every prediction is a false positive), NaN (left out of
  the mean) when it is neither in the ground truth nor predicted.

`PointIoU` is the same metric over LiDAR points (POP-3D's point mIoU: labels of the points from
the features sampled at each point, ignored points left out).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

FREE_LABEL = -1
"""Ground-truth / prediction value of an empty (free) voxel."""

IGNORE_LABEL = -2
"""Ground-truth value of an unobserved or ignored voxel."""

ABSENT_RULES = ("official", "strict")
"""IoU of a class absent from the ground truth: 1 ("official") or 0 / NaN ("strict")."""

_IGNORED_VOTE = np.iinfo(np.int64).max  # sorts after every real label, like 255 in the official


def voxel_coords(
    xyz: np.ndarray, pc_range: Sequence[float], grid_size: Sequence[int]
) -> np.ndarray:
    """Integer voxel indices [N, 3] (clipped into the grid like the official `Voxelize`)."""
    lo = np.asarray(pc_range[:3], np.float64)
    hi = np.asarray(pc_range[3:], np.float64)
    interval = (hi - lo) / np.asarray(grid_size, np.float64)
    f = (np.clip(np.asarray(xyz, np.float64), lo, hi - 1e-3) - lo) / interval
    return np.floor(f).astype(np.int64)


def lidar_ground_truth(
    xyz: np.ndarray,
    labels: np.ndarray,
    pc_range: Sequence[float],
    grid_size: Sequence[int],
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    num_ray_samples: int = 100,
    ignore_labels: Iterable[int] = (),
) -> np.ndarray:
    """int32 grid [X, Y, Z]: the majority label where points fall, FREE_LABEL along the rays
    from `origin` to the points, IGNORE_LABEL elsewhere."""
    xyz = np.asarray(xyz, np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if xyz.ndim != 2 or xyz.shape[1] < 3 or len(xyz) != len(labels):
        raise ValueError(f"xyz must be [N, 3+] with one label per point; got {xyz.shape}")
    if num_ray_samples < 2:
        raise ValueError(f"num_ray_samples must be >= 2, got {num_ray_samples}")
    if (labels < 0).any():
        raise ValueError("labels must be non-negative class ids")
    xyz = xyz[:, :3]
    lo = np.asarray(pc_range[:3])
    hi = np.asarray(pc_range[3:])
    inside = np.all((xyz > lo) & (xyz < hi), axis=1)
    xyz, labels = xyz[inside], labels[inside].copy()
    ignored = np.isin(labels, np.asarray(list(ignore_labels), np.int64))
    labels[ignored] = _IGNORED_VOTE  # official: 255, after every real label -> loses ties

    grid = np.full(tuple(int(g) for g in grid_size), IGNORE_LABEL, dtype=np.int32)
    if len(xyz) == 0:
        return grid
    o = np.asarray(origin, np.float64)
    t = np.linspace(0.0, 1.0, num_ray_samples)[:, None, None]
    samples = (o + t * (xyz - o)[None]).reshape(-1, 3)
    free = voxel_coords(samples, pc_range, grid_size)
    grid[free[:, 0], free[:, 1], free[:, 2]] = FREE_LABEL

    occ = voxel_coords(xyz, pc_range, grid_size)
    _, ny, nz = grid.shape
    flat = (occ[:, 0] * ny + occ[:, 1]) * nz + occ[:, 2]
    # Majority vote: count (voxel, label) pairs, sort by voxel, count desc, label asc.
    pairs, counts = np.unique(np.stack([flat, labels], 1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.ones(len(pairs), bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    winners = pairs[first]
    vox = np.unravel_index(winners[:, 0], grid.shape)
    grid[vox] = np.where(winners[:, 1] == _IGNORED_VOTE, IGNORE_LABEL, winners[:, 1]).astype(
        np.int32
    )
    return grid


@dataclass(frozen=True)
class VoxelIoUResult:
    iou: np.ndarray  # [K] per-class IoU (absent classes: see `absent`)
    free_iou: float
    miou: float  # mean over classes (NaN-skipping)
    miou_with_free: float  # mean over classes + free (the official 'vox_clip_all' averaging)
    occupancy_iou: float  # IoU of 'occupied' vs 'free' over observed voxels
    class_names: tuple[str, ...]
    absent: str = "official"

    def as_dict(self) -> dict[str, float]:
        out = {f"iou/{n}": float(v) for n, v in zip(self.class_names, self.iou, strict=True)}
        out.update(
            {
                "iou/free": self.free_iou,
                "miou": self.miou,
                "miou_with_free": self.miou_with_free,
                "occupancy_iou": self.occupancy_iou,
            }
        )
        return out


def _check_absent(absent: str) -> str:
    if absent not in ABSENT_RULES:
        raise ValueError(f"absent must be one of {list(ABSENT_RULES)}, got {absent!r}")
    return absent


def _iou(tp: int, fp: int, fn: int, absent: str) -> float:
    """IoU of one class; `tp + fn` is how often it is in the ground truth."""
    if tp + fn == 0 and absent == "official":
        return 1.0  # official MeanIoU: total_seen == 0 -> 1, whatever was predicted
    den = tp + fp + fn
    return float(tp / den) if den > 0 else float("nan")


def _nanmean(values: Iterable[float]) -> float:
    arr = np.asarray(list(values), np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


class VoxelIoU:
    """Accumulates intersections/unions over frames (like the official `MeanIoU`); `absent`
    ("official" or "strict") is the rule for classes absent from the ground truth."""

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        absent: str = "official",
    ) -> None:
        self.absent = _check_absent(absent)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = tuple(class_names or (str(i) for i in range(num_classes)))
        # rows: classes 0..K-1, then free, then occupied
        self.tp = np.zeros(num_classes + 2, np.int64)
        self.fp = np.zeros(num_classes + 2, np.int64)
        self.fn = np.zeros(num_classes + 2, np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """pred: grid of class ids where occupied (any other id, e.g. NO_CLASS_ID, counts as
        occupied without a class) and FREE_LABEL where empty; target: class ids, FREE_LABEL,
        IGNORE_LABEL. Both [X, Y, Z] (or any matching shape)."""
        pred = np.asarray(pred).astype(np.int64)
        target = np.asarray(target).astype(np.int64)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
        keep = target != IGNORE_LABEL
        p, g = pred[keep], target[keep]
        k = self.num_classes
        for c in range(k):
            pc, gc = p == c, g == c
            self.tp[c] += int(np.sum(pc & gc))
            self.fp[c] += int(np.sum(pc & ~gc))
            self.fn[c] += int(np.sum(gc & ~pc))
        for row, (pc, gc) in (
            (k, (p == FREE_LABEL, g == FREE_LABEL)),
            (k + 1, (p != FREE_LABEL, g != FREE_LABEL)),
        ):
            self.tp[row] += int(np.sum(pc & gc))
            self.fp[row] += int(np.sum(pc & ~gc))
            self.fn[row] += int(np.sum(gc & ~pc))

    def compute(self) -> VoxelIoUResult:
        ious = np.array(
            [
                _iou(int(self.tp[i]), int(self.fp[i]), int(self.fn[i]), self.absent)
                for i in range(len(self.tp))
            ]
        )
        k = self.num_classes
        return VoxelIoUResult(
            iou=ious[:k],
            free_iou=float(ious[k]),
            miou=_nanmean(ious[:k]),
            miou_with_free=_nanmean(ious[: k + 1]),
            occupancy_iou=float(ious[k + 1]),
            class_names=self.class_names,
            absent=self.absent,
        )


def evaluate_voxels(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    absent: str = "official",
) -> VoxelIoUResult:
    """One-frame IoUs; see `VoxelIoU.update` for the label conventions."""
    metric = VoxelIoU(num_classes, class_names, absent)
    metric.update(pred, target)
    return metric.compute()


@dataclass(frozen=True)
class PointIoUResult:
    iou: np.ndarray  # [K] per-class IoU
    miou: float  # mean over classes (NaN-skipping; NaN only under "strict")
    class_names: tuple[str, ...]
    absent: str = "official"

    def as_dict(self) -> dict[str, float]:
        out = {f"iou/{n}": float(v) for n, v in zip(self.class_names, self.iou, strict=True)}
        out["miou"] = self.miou
        return out


class PointIoU:
    """POP-3D's point mIoU, accumulated over frames: per-point predicted class ids (anything
    outside 0..K-1, e.g. NO_CLASS_ID, is a miss) against per-point ground truth, points whose
    ground truth is `ignore_index` left out (the official `MeanIoU` with its ignore label)."""

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        absent: str = "official",
        ignore_index: int = IGNORE_LABEL,
    ) -> None:
        self.absent = _check_absent(absent)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = tuple(class_names or (str(i) for i in range(num_classes)))
        self.ignore_index = int(ignore_index)
        self.tp = np.zeros(num_classes, np.int64)
        self.fp = np.zeros(num_classes, np.int64)
        self.fn = np.zeros(num_classes, np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        pred = np.asarray(pred).astype(np.int64).reshape(-1)
        target = np.asarray(target).astype(np.int64).reshape(-1)
        if pred.shape != target.shape:
            raise ValueError(f"{pred.size} predictions for {target.size} ground-truth points")
        keep = target != self.ignore_index
        p, g = pred[keep], target[keep]
        k = self.num_classes
        p = np.where((p >= 0) & (p < k), p, k)  # k = "no class": a miss for every class
        g = np.where((g >= 0) & (g < k), g, k + 1)  # outside the classes: counts for none
        cm = np.bincount(g * (k + 2) + p, minlength=(k + 2) ** 2).reshape(k + 2, k + 2)
        tp = np.diag(cm)[:k]
        self.tp += tp
        self.fp += cm[:, :k].sum(0) - tp
        self.fn += cm[:k, :].sum(1) - tp

    def compute(self) -> PointIoUResult:
        ious = np.array(
            [
                _iou(int(t), int(f), int(n), self.absent)
                for t, f, n in zip(self.tp, self.fp, self.fn, strict=True)
            ]
        )
        return PointIoUResult(ious, _nanmean(ious), self.class_names, self.absent)
