"""LiDAR scan -> WaffleIron/ScaLR inputs, numerically equal to the official data pipeline.

Steps and their official order (valeoai/ScaLR `datasets/pc_dataset.py`, eval phase):
1. features on the full scan, float32: `[(i - mean) / std, x, y, z, |xyz|]`;
2. voxel subsampling: the first point of every `voxel_size` voxel (voxel coords counted from the
   scan's min corner), in the sorted order of the voxel coordinates (`np.unique` order);
3. crop to the open box `fov_min + eps < p < fov_max - eps` (eps 1e-4);
4. cell of each kept point on every projection plane: `q = int((p - fov_min) / res)`,
   `res = (fov_max - fov_min) / grid`, index `q0 * W + q1`;
5. kNN (k + 1 with cKDTree, first column = the point itself dropped);
6. nearest kept point of every input point (nearest-neighbour upsampling).

Beyond the official code:
- non-finite points are dropped first (and marked invalid);
- points with a coordinate of magnitude >= `max_coordinate` (1 km by default, beyond the range of
  any automotive LiDAR and far outside any crop) take no part in the voxel grid. The official grid
  starts at the scan's float32 minimum, so one finite outlier at -1e10 m shifts every real point
  by 1e10 m, where float32 cannot tell them apart: they all fell into one voxel and the whole scan
  got one label. Such points could never be kept (they are outside the crop); they are still
  labelled by their nearest kept point. On scans without them (every real scan) the computation
  is the official one, bit for bit;
- clouds with <= k points after the crop still work (neighbour lists padded by repeating the
  farthest available neighbour, which leaves the max-pooled embedding unchanged; a lone point
  uses itself);
- memory: features are computed for the kept points only (they are per point, so the values are
  the same), and the kNN / upsampling queries run in chunks of rows (same results, bounded
  float64 temporaries).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

__all__ = [
    "LUT_AXIS_PLANE",
    "PreparedScan",
    "PreprocessConfig",
    "PreprocessConfigError",
    "cell_indices",
    "collate",
    "crop_mask",
    "input_features",
    "knn_neighbors",
    "nearest_index",
    "preprocess",
    "voxel_subsample",
]

LUT_AXIS_PLANE = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
"""Projection along axis d keeps the coordinates of these two axes (official lut_axis_plane)."""

NUSCENES_INTENSITY = (18.742355, 22.04632)
SEMANTICKITTI_INTENSITY = (0.28613698, 0.14090556)
_SCALR_GRIDS = ((256, 256), (256, 32), (256, 32))
QUERY_CHUNK = 65_536
"""Rows per cKDTree query: bounds its float64 distance / index temporaries."""


class PreprocessConfigError(ValueError):
    """A `PreprocessConfig` entry is out of range or inconsistent with the backbone."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing of one sensor for one backbone; defaults are ScaLR+ on nuScenes."""

    voxel_size: float = 0.1
    fov_min: tuple[float, float, float] = (-64.0, -64.0, -8.0)
    fov_max: tuple[float, float, float] = (64.0, 64.0, 8.0)
    crop_eps: float = 1e-4
    max_coordinate: float = 1000.0
    intensity_mean: float = NUSCENES_INTENSITY[0]
    intensity_std: float = NUSCENES_INTENSITY[1]
    num_neighbors: int = 16
    dim_proj: tuple[int, ...] = (2, 1, 0)
    grids_shape: tuple[tuple[int, int], ...] = _SCALR_GRIDS
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fov_min", tuple(float(v) for v in self.fov_min))
        object.__setattr__(self, "fov_max", tuple(float(v) for v in self.fov_max))
        object.__setattr__(self, "dim_proj", tuple(int(d) for d in self.dim_proj))
        object.__setattr__(
            self, "grids_shape", tuple(tuple(int(v) for v in g) for g in self.grids_shape)
        )
        if not self.voxel_size >= 0:
            raise PreprocessConfigError(
                f"PreprocessConfig.voxel_size must be >= 0 (0 disables), got {self.voxel_size!r}"
            )
        if len(self.fov_min) != 3 or len(self.fov_max) != 3:
            raise PreprocessConfigError("PreprocessConfig.fov_min/fov_max must be (x, y, z)")
        for axis, (lo, hi) in enumerate(zip(self.fov_min, self.fov_max)):
            if not lo + self.crop_eps < hi - self.crop_eps:
                raise PreprocessConfigError(
                    f"PreprocessConfig.fov on axis {'xyz'[axis]}: min {lo} must be < max {hi}"
                )
        reach = max(abs(v) for v in (*self.fov_min, *self.fov_max))
        if not (np.isfinite(self.max_coordinate) and self.max_coordinate > reach):
            raise PreprocessConfigError(
                "PreprocessConfig.max_coordinate must be finite and larger than the crop "
                f"({reach} m), got {self.max_coordinate!r}"
            )
        if not self.crop_eps >= 0:
            raise PreprocessConfigError(
                f"PreprocessConfig.crop_eps must be >= 0, got {self.crop_eps}"
            )
        if not (np.isfinite(self.intensity_std) and self.intensity_std > 0):
            raise PreprocessConfigError(
                f"PreprocessConfig.intensity_std must be > 0, got {self.intensity_std!r}"
            )
        if not np.isfinite(self.intensity_mean):
            raise PreprocessConfigError(
                f"PreprocessConfig.intensity_mean must be finite, got {self.intensity_mean!r}"
            )
        if not isinstance(self.num_neighbors, int) or self.num_neighbors < 1:
            raise PreprocessConfigError(
                f"PreprocessConfig.num_neighbors must be an int >= 1, got {self.num_neighbors!r}"
            )
        if len(self.dim_proj) != len(self.grids_shape) or not self.dim_proj:
            raise PreprocessConfigError(
                f"PreprocessConfig.dim_proj {self.dim_proj} and grids_shape {self.grids_shape} "
                "must be non-empty and of the same length"
            )
        if any(d not in LUT_AXIS_PLANE for d in self.dim_proj):
            raise PreprocessConfigError(
                f"PreprocessConfig.dim_proj entries must be 0, 1 or 2, got {self.dim_proj}"
            )
        if any(len(g) != 2 or min(g) < 1 for g in self.grids_shape):
            raise PreprocessConfigError(
                f"PreprocessConfig.grids_shape entries must be (H, W) >= 1, got {self.grids_shape}"
            )

    @property
    def n_planes(self) -> int:
        return len(self.grids_shape)

    @property
    def cell_sizes(self) -> tuple[tuple[float, float], ...]:
        """Metres per cell on each plane: (fov extent of the plane's two axes) / grid."""
        extent = np.asarray(self.fov_max) - np.asarray(self.fov_min)
        return tuple(
            tuple(float(v) for v in extent[list(LUT_AXIS_PLANE[d])] / np.asarray(g))
            for d, g in zip(self.dim_proj, self.grids_shape)
        )

    def replace(self, **changes) -> PreprocessConfig:
        return dataclasses.replace(self, **changes)

    def for_backbone(self, backbone) -> PreprocessConfig:
        """Copy with the projection planes and neighbour count of a `WaffleIronConfig`."""
        return self.replace(
            dim_proj=backbone.dim_proj,
            grids_shape=backbone.grids_shape,
            num_neighbors=backbone.num_neighbors,
        )

    def check_backbone(self, backbone) -> None:
        """Raise if a `WaffleIronConfig` expects different planes, grids or neighbours."""
        for key in ("dim_proj", "grids_shape", "num_neighbors"):
            mine, theirs = getattr(self, key), getattr(backbone, key)
            if mine != theirs:
                raise PreprocessConfigError(
                    f"PreprocessConfig.{key}={mine} does not match the backbone's {key}={theirs}"
                )
        if backbone.input_channels != 5:
            raise PreprocessConfigError(
                "preprocess() makes 5 input features [intensity, x, y, z, radius]; the backbone "
                f"expects input_channels={backbone.input_channels}"
            )

    # -- presets ---------------------------------------------------------------------------------
    @classmethod
    def nuscenes(cls, **overrides) -> PreprocessConfig:
        """ScaLR / ScaLR+ on nuScenes (intensity 0-255)."""
        base = {"name": "nuscenes"}
        return cls(**{**base, **overrides})

    @classmethod
    def semantickitti(cls, **overrides) -> PreprocessConfig:
        """ScaLR / ScaLR+ on SemanticKITTI / KITTI (reflectance 0-1)."""
        mean, std = SEMANTICKITTI_INTENSITY
        base = {"name": "semantickitti", "intensity_mean": mean, "intensity_std": std}
        return cls(**{**base, **overrides})

    @classmethod
    def waffleiron_nuscenes(cls, **overrides) -> PreprocessConfig:
        """Original WaffleIron-48-384 on nuScenes: raw intensity, fov +-50 m x +-5 m."""
        base = {
            "name": "waffleiron_nuscenes",
            "fov_min": (-50.0, -50.0, -5.0),
            "fov_max": (50.0, 50.0, 5.0),
            "intensity_mean": 0.0,
            "intensity_std": 1.0,
            "grids_shape": ((166, 166), (166, 16), (166, 16)),
        }
        return cls(**{**base, **overrides})

    @classmethod
    def waffleiron_semantickitti(cls, **overrides) -> PreprocessConfig:
        """Original WaffleIron-48-256 on SemanticKITTI: raw reflectance, fov +-50 m, z -3..2 m."""
        base = {
            "name": "waffleiron_semantickitti",
            "fov_min": (-50.0, -50.0, -3.0),
            "fov_max": (50.0, 50.0, 2.0),
            "intensity_mean": 0.0,
            "intensity_std": 1.0,
            "grids_shape": ((250, 250), (250, 12), (250, 12)),
        }
        return cls(**{**base, **overrides})


@dataclass
class PreparedScan:
    """Backbone inputs for the M kept points, and the way back to the N input points."""

    feats: np.ndarray  # [5, M] float32: intensity_norm, x, y, z, radius
    cell_ind: np.ndarray  # [n_planes, M] int64
    neighbors: np.ndarray  # [M, K] int64, the point itself excluded
    kept_index: np.ndarray  # [M] int64, rows of the input
    upsample_index: np.ndarray  # [N] int64, nearest kept point; -1 where none (non-finite, M=0)
    valid: np.ndarray  # [N] bool: finite and inside the crop
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        """M, the number of kept points fed to the backbone."""
        return int(self.kept_index.shape[0])

    @property
    def num_input(self) -> int:
        """N, the number of input points."""
        return int(self.valid.shape[0])


def input_features(points: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """[N, >=4] float32 points -> [N, 5] float32 `[(i - mean) / std, x, y, z, radius]`."""
    xyz = points[:, :3]
    intensity = (points[:, 3:4] - cfg.intensity_mean) / cfg.intensity_std
    radius = np.linalg.norm(xyz, axis=1, keepdims=True)
    return np.concatenate([intensity, xyz, radius], axis=1)


def voxel_subsample(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """Row indices of the first point of every voxel, in sorted voxel-coordinate order.

    Same result as the official `np.unique(((xyz - xyz.min(0)) / v).astype(int), axis=0,
    return_index=True)` (same float32 operations per coordinate), computed on one int64 key per
    point (lexicographic order = key order for non-negative coordinates), axis by axis, which is
    several times faster and needs no [N, 3] int64 array.
    """
    n = xyz.shape[0]
    if voxel_size <= 0 or n == 0:
        return np.arange(n, dtype=np.int64)
    low = xyz.min(0)
    coords = [((xyz[:, axis] - low[axis]) / voxel_size).astype(np.int64) for axis in range(3)]
    span = [float(c.max()) + 1.0 for c in coords]
    if span[0] * span[1] * span[2] < 2.0**62:
        key = coords[0]
        key *= int(span[1])
        key += coords[1]
        key *= int(span[2])
        key += coords[2]
        del coords
        _, index = np.unique(key, return_index=True)
    else:  # absurd extents (a tiny voxel_size): fall back to the official row-wise unique
        _, index = np.unique(np.stack(coords, axis=1), return_index=True, axis=0)
    return index.astype(np.int64)


def crop_mask(xyz: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Official crop: strictly inside (fov_min + eps, fov_max - eps) on x, y and z."""
    mask = np.ones(xyz.shape[0], dtype=bool)
    for axis in range(3):
        lo = cfg.fov_min[axis] + cfg.crop_eps
        hi = cfg.fov_max[axis] - cfg.crop_eps
        mask &= (xyz[:, axis] > lo) & (xyz[:, axis] < hi)
    return mask


def cell_indices(xyz: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """[M, 3] cropped points -> [n_planes, M] int64 cell index `q0 * W + q1` on every plane."""
    fov_min = np.asarray(cfg.fov_min, dtype=np.float64)
    fov_max = np.asarray(cfg.fov_max, dtype=np.float64)
    out = np.empty((cfg.n_planes, xyz.shape[0]), dtype=np.int64)
    for plane, (dim, grid) in enumerate(zip(cfg.dim_proj, cfg.grids_shape)):
        dims = list(LUT_AXIS_PLANE[dim])
        grid_arr = np.asarray(grid, dtype=np.int64)
        res = (fov_max[dims] - fov_min[dims]) / grid_arr
        quant = ((xyz[:, dims] - fov_min[dims]) / res).astype(np.int64)
        if quant.size and (quant.min() < 0 or (quant >= grid_arr).any()):
            raise ValueError(
                f"points outside the {grid} grid of plane {plane}: crop them with crop_mask first"
            )
        out[plane] = quant[:, 0] * grid[1] + quant[:, 1]
    return out


def knn_neighbors(tree: cKDTree | None, xyz: np.ndarray, k: int, workers: int = -1) -> np.ndarray:
    """[M, k] indices of the k nearest other points (official: query k + 1, drop column 0).

    With fewer than k + 1 points the list is padded by repeating the farthest neighbour found
    (max pooling over neighbours ignores repeats); a single point is its own neighbour. The query
    runs `QUERY_CHUNK` rows at a time (each row's answer does not depend on the others).
    """
    m = xyz.shape[0]
    if m <= 1:
        return np.zeros((m, k), dtype=np.int64)
    tree = cKDTree(xyz) if tree is None else tree
    found = min(k + 1, m) - 1
    out = np.empty((m, k), dtype=np.int64)
    for start in range(0, m, QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, m)
        _, ind = tree.query(xyz[start:stop], k=found + 1, workers=workers)
        out[start:stop, :found] = ind[:, 1:]
    if found < k:
        out[:, found:] = out[:, found - 1 : found]
    return out


def nearest_index(tree: cKDTree, xyz: np.ndarray, workers: int = -1) -> np.ndarray:
    """[N] int64 row of the nearest tree point of every row of `xyz`, `QUERY_CHUNK` at a time."""
    out = np.empty(xyz.shape[0], dtype=np.int64)
    for start in range(0, xyz.shape[0], QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, xyz.shape[0])
        _, out[start:stop] = tree.query(xyz[start:stop], k=1, workers=workers)
    return out


def _rows_on_grid(xyz: np.ndarray, limit: float) -> np.ndarray | None:
    """Rows whose coordinates are all below `limit` in magnitude; None when all of them are."""
    ok = np.abs(xyz[:, 0]) < limit
    ok &= np.abs(xyz[:, 1]) < limit
    ok &= np.abs(xyz[:, 2]) < limit
    return None if ok.all() else np.flatnonzero(ok)


def preprocess(points: np.ndarray, cfg: PreprocessConfig, workers: int = -1) -> PreparedScan:
    """[N, >=4] (x, y, z, intensity, ...) points -> `PreparedScan` (see the module docstring).

    Points are processed in float32, the official input dtype. `workers` is passed to cKDTree
    (-1: all cores; results do not depend on it).
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 4:
        raise ValueError(f"points must be [N, >=4] (x, y, z, intensity, ...), got {points.shape}")
    t0 = time.perf_counter()
    pts = np.ascontiguousarray(points[:, :4], dtype=np.float32)
    n = pts.shape[0]
    finite = np.isfinite(pts).all(axis=1)
    finite_index = None if finite.all() else np.flatnonzero(finite)
    pts_f = pts if finite_index is None else pts[finite_index]
    del finite

    # Voxels on the points with sane coordinates (all of them on real scans), then the crop.
    on_grid = _rows_on_grid(pts_f, cfg.max_coordinate)
    grid_pts = pts_f if on_grid is None else pts_f[on_grid]
    vox = voxel_subsample(grid_pts[:, :3], cfg.voxel_size)
    vox = vox[crop_mask(grid_pts[vox, :3], cfg)]
    kept_local = vox if on_grid is None else on_grid[vox]  # rows of pts_f
    del grid_pts, on_grid, vox
    kept_pts = pts_f[kept_local]
    xyz_kept = kept_pts[:, :3]
    feats = np.ascontiguousarray(input_features(kept_pts, cfg).T)
    cell_ind = cell_indices(xyz_kept, cfg)
    kept_index = kept_local if finite_index is None else finite_index[kept_local]
    del kept_local
    valid = crop_mask(pts_f[:, :3], cfg)
    if finite_index is not None:
        valid_all = np.zeros(n, dtype=bool)
        valid_all[finite_index] = valid
        valid = valid_all
    t1 = time.perf_counter()

    m = xyz_kept.shape[0]
    tree = cKDTree(xyz_kept) if m > 1 else None
    neighbors = knn_neighbors(tree, xyz_kept, cfg.num_neighbors, workers)
    if m == 0:
        upsample = np.full(pts_f.shape[0], -1, dtype=np.int64)
        valid[:] = False  # nothing kept: no point can get a feature
    elif m == 1:
        upsample = np.zeros(pts_f.shape[0], dtype=np.int64)
    else:
        upsample = nearest_index(tree, pts_f[:, :3], workers)
    del tree
    if finite_index is None:
        upsample_index = upsample
    else:
        upsample_index = np.full(n, -1, dtype=np.int64)
        upsample_index[finite_index] = upsample
    t2 = time.perf_counter()

    return PreparedScan(
        feats=feats,
        cell_ind=cell_ind,
        neighbors=neighbors,
        kept_index=kept_index.astype(np.int64, copy=False),
        upsample_index=upsample_index,
        valid=valid,
        timings={"preprocess": t1 - t0, "knn": t2 - t1},
    )


def collate(
    scans: list[PreparedScan],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pad scans to one N: feats [B, 5, N], cell_ind [B, P, N], neighbors [B, N, K], mask [B, N].

    Padded points have zero features, cell 0 (the backbone reroutes them through `mask`) and
    themselves as neighbours, so they never touch real points.
    """
    if not scans:
        raise ValueError("collate needs at least one scan")
    b = len(scans)
    n_max = max(max(s.num_points for s in scans), 1)
    c = scans[0].feats.shape[0]
    p = scans[0].cell_ind.shape[0]
    k = scans[0].neighbors.shape[1]
    feats = np.zeros((b, c, n_max), dtype=np.float32)
    cell_ind = np.zeros((b, p, n_max), dtype=np.int64)
    neighbors = np.broadcast_to(np.arange(n_max, dtype=np.int64)[:, None], (n_max, k))
    neighbors = np.repeat(neighbors[None], b, axis=0)
    mask = np.zeros((b, n_max), dtype=bool)
    for i, s in enumerate(scans):
        m = s.num_points
        feats[i, :, :m] = s.feats
        cell_ind[i, :, :m] = s.cell_ind
        neighbors[i, :m] = s.neighbors
        mask[i, :m] = True
    return feats, cell_ind, neighbors, mask
