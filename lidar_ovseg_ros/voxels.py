"""Labeled points -> labeled voxels (majority vote), capped for display.

RViz slows to a crawl past roughly 20k cubes, so the grid keeps at most `max_voxels` voxels,
preferring the ones holding the most points, and says when it cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lidar_ovseg_ros.vocabulary import NO_CLASS_ID


@dataclass(frozen=True)
class VoxelGrid:
    """Occupied voxels: centres [M, 3] float32, majority labels [M] uint16, point counts [M]."""

    centers: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    voxel_size: float
    total_voxels: int  # before the cap

    @property
    def truncated(self) -> bool:
        return self.total_voxels > len(self.labels)


MAX_VOXEL_INDEX = 2**52
"""Points farther than this many voxels from the origin are left out (int64-safe coordinates)."""


def voxelize_labels(
    xyz: np.ndarray,
    labels: np.ndarray,
    voxel_size: float,
    max_voxels: int | None = None,
    ignore_label: int = NO_CLASS_ID,
) -> VoxelGrid:
    """Majority label per voxel of size `voxel_size`; points with `ignore_label` do not vote."""
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    xyz = np.asarray(xyz, dtype=np.float64)[:, :3]
    labels = np.asarray(labels).astype(np.int64)
    keep = (labels != ignore_label) & np.isfinite(xyz).all(axis=1)
    # Voxel coordinates must fit int64 (a garbage return at 1e38 m would wrap to a bogus cube).
    keep &= (np.abs(xyz) < MAX_VOXEL_INDEX * voxel_size).all(axis=1)
    xyz, labels = xyz[keep], labels[keep]
    empty = VoxelGrid(
        centers=np.zeros((0, 3), np.float32),
        labels=np.zeros(0, np.uint16),
        counts=np.zeros(0, np.int64),
        voxel_size=float(voxel_size),
        total_voxels=0,
    )
    if len(labels) == 0:
        return empty
    coords = np.floor(xyz / voxel_size).astype(np.int64)
    # (voxel, label) pairs -> counts; then each voxel takes its most frequent label.
    pairs = np.concatenate([coords, labels[:, None]], axis=1)
    uniq_pairs, pair_counts = np.unique(pairs, axis=0, return_counts=True)
    vox, vox_counts_idx = np.unique(uniq_pairs[:, :3], axis=0, return_inverse=True)
    vox_counts_idx = vox_counts_idx.reshape(-1)
    # Sort pairs by voxel then by descending count: the first pair per voxel is its majority.
    order = np.lexsort((-pair_counts, vox_counts_idx))
    first_in_voxel = np.ones(len(order), bool)
    first_in_voxel[1:] = vox_counts_idx[order][1:] != vox_counts_idx[order][:-1]
    best = order[first_in_voxel]
    majority = uniq_pairs[best, 3]
    totals = np.bincount(vox_counts_idx, weights=pair_counts).astype(np.int64)
    total_voxels = len(vox)
    sel = np.arange(total_voxels)
    if max_voxels is not None and total_voxels > max_voxels:
        sel = np.argsort(-totals, kind="stable")[: max(0, int(max_voxels))]
        sel.sort()
    centers = ((vox[sel] + 0.5) * voxel_size).astype(np.float32)
    return VoxelGrid(
        centers=centers,
        labels=majority[sel].astype(np.uint16),
        counts=totals[sel],
        voxel_size=float(voxel_size),
        total_voxels=total_voxels,
    )
