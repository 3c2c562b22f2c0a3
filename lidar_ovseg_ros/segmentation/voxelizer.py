"""OpenScene's voxelizer (`dataset/voxelizer.py` + `voxelization_utils.sparse_quantize`).

Exactly the official arithmetic: the points (float64) times the voxelization matrix
(`scale / voxel_size`, with a rotation under test-time augmentation), `floor`, the per-axis
minimum subtracted (this fixes which voxels pair up under the stride-2 convolutions), then one
voxel per distinct coordinate keeping the FIRST point that falls in it, rows ordered by the
FNV-64 hash of the coordinates as `np.unique` orders them, and every input point mapped back to
its voxel (`inds_reconstruct`).

Test-time augmentation (opt-in): the official evaluation's voxelizer always applies a random
rotation (x, y within +-pi/64, z within +-pi, the three axis rotations multiplied in random
order) and a random scale in [0.9, 1.1], and sums the scores of 5 repeats. By default this
package voxelizes without augmentation (deterministic); `random_augmentation` gives the
official transform for N-repeat TTA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "OPENSCENE_VOXEL_SIZE",
    "ROTATION_BOUNDS",
    "SCALE_BOUNDS",
    "VoxelizedScan",
    "fnv_hash",
    "random_augmentation",
    "voxelize",
]

OPENSCENE_VOXEL_SIZE = 0.05
# Point3DLoader.ROTATION_AUGMENTATION_BOUND / SCALE_AUGMENTATION_BOUND (used at test time too).
ROTATION_BOUNDS = ((-np.pi / 64, np.pi / 64), (-np.pi / 64, np.pi / 64), (-np.pi, np.pi))
SCALE_BOUNDS = (0.9, 1.1)

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


@dataclass(frozen=True)
class VoxelizedScan:
    """coords: int32 [M, 3] (>= 0, minimum 0 on each axis); kept: int64 [M] index (into the
    input points) of the point each voxel keeps; inverse: int64 [N] voxel row of every input
    point (-1 for non-finite points, which are left out)."""

    coords: np.ndarray
    kept: np.ndarray
    inverse: np.ndarray

    def __len__(self) -> int:
        return len(self.coords)


def fnv_hash(coords: np.ndarray) -> np.ndarray:
    """64-bit FNV hash of each row of non-negative integer coordinates (multiply, then xor
    each column, as the official `fnv_hash_vec`)."""
    arr = np.asarray(coords).astype(np.uint64)
    h = np.full(arr.shape[0], _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(arr.shape[1]):
            h = np.bitwise_xor(h * _FNV_PRIME, arr[:, j])
    return h


def _axis_rotation(axis: int, theta: float) -> np.ndarray:
    """Right-handed rotation by `theta` about coordinate axis `axis` (= expm of the cross-
    product matrix of theta * e_axis, the official `M(axis, theta)`)."""
    c, s = np.cos(theta), np.sin(theta)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    if axis == 1:  # keep the right-handed orientation for the y axis (z x x)
        r[i, j], r[j, i] = s, -s
    return r


def random_augmentation(rng: np.random.Generator) -> np.ndarray:
    """The official test-time transform: a 3x3 matrix (rotation times scale) to apply to the
    points before dividing by the voxel size."""
    mats = []
    for axis, (lo, hi) in enumerate(ROTATION_BOUNDS):
        mats.append(_axis_rotation(axis, rng.uniform(lo, hi)))
    order = rng.permutation(3)
    rot = mats[order[0]] @ mats[order[1]] @ mats[order[2]]
    return rot * rng.uniform(*SCALE_BOUNDS)


def voxelize(
    xyz: np.ndarray,
    voxel_size: float = OPENSCENE_VOXEL_SIZE,
    transform: np.ndarray | None = None,
) -> VoxelizedScan:
    """Voxelize [N, >=3] points (x, y, z first) as OpenScene does; `transform` is an optional
    3x3 matrix applied first (test-time augmentation, see `random_augmentation`)."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ValueError(f"points must be [N, >=3] (x, y, z, ...), got {xyz.shape}")
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive number, got {voxel_size!r}")
    n = len(xyz)
    finite = np.isfinite(xyz[:, :3]).all(axis=1)
    rows = np.flatnonzero(finite)
    inverse = np.full(n, -1, dtype=np.int64)
    if len(rows) == 0:
        return VoxelizedScan(np.zeros((0, 3), np.int32), np.zeros(0, np.int64), inverse)
    pts = xyz[rows, :3].astype(np.float64)
    matrix = np.eye(3) * (1.0 / voxel_size)
    if transform is not None:
        transform = np.asarray(transform, dtype=np.float64)
        if transform.shape != (3, 3):
            raise ValueError(f"transform must be 3x3, got {transform.shape}")
        matrix = transform @ matrix
    if transform is None:
        grid = np.floor(pts * (1.0 / voxel_size))  # = pts @ diag(1/v).T, exactly
    else:
        grid = np.floor(pts @ matrix.T)
    grid = np.floor(grid - grid.min(0))
    if grid.max() >= np.iinfo(np.int32).max:
        raise ValueError("the scan spans too many voxels for int32 coordinates")
    _, first, inv = np.unique(fnv_hash(grid), return_index=True, return_inverse=True)
    inverse[rows] = inv.reshape(-1)
    return VoxelizedScan(grid[first].astype(np.int32), rows[first].astype(np.int64), inverse)
