"""Device-resident ScaLR+/WaffleIron preprocessing in torch: the numpy path's results on any device.

`preprocess_torch` computes what `preprocess.preprocess` computes (same kept points in the same
order, same features and cell indices, same neighbour sets up to exact-distance ties, same nearest
kept point up to ties), after one host-to-device copy of the scan (from pinned memory on CUDA),
so that on a GPU the whole frame stays on the device until the labels come back. The numpy /
cKDTree path stays the default on CPU-only machines (it is faster there: see
docs/benchmarks.md "Device-resident pipeline").

How each step matches the official (numpy) arithmetic:
- voxel subsampling: the same float32 `(x - min) / voxel` per axis (the divisor is a full tensor:
  torch turns a division by a scalar into a multiplication by its reciprocal, which rounds
  differently), the same int64 key, and the first row of each key in sorted key order from a
  *stable* sort (= `np.unique(..., return_index=True)`);
- crop and intensity: float32 like numpy 2 with Python-float operands; cell indices in float64 like
  the numpy code; radius as `sqrt(x*x + y*y + z*z)` with the float32 sum of numpy and a
  correctly rounded square root (taken in float64: torch's vectorised float32 sqrt on CPU is off
  by one ulp on ~1 point in 6);
- kNN (k + 1, first column dropped, as the official cKDTree query) and nearest-kept-point
  upsampling: exact float64 squared distances, by one of two methods (see `knn`):
  * "brute": all pairs, a chunk of query rows at a time (squared differences summed, not
    `torch.cdist`, whose matmul form cancels digits and reorders near neighbours, and whose sqrt
    merges distinct distances), then `topk`. O(M^2): the choice for small scans and on GPUs,
    where it is a handful of large kernels;
  * "grid": a uniform hash grid of cell size h; each query looks at the 27 cells around its own;
    its k-th candidate distance below h proves the answer exact (any point outside the 27 cells is
    at least h away). Unresolved queries (sparse regions) try the next, coarser h; the few left
    after the last level go to "brute". Candidates are handled as one ragged list (no padding to
    the densest cell), sorted by (query, distance) with two stable sorts. O(M * candidates).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .preprocess import LUT_AXIS_PLANE, PreparedScan, PreprocessConfig

__all__ = [
    "GRID_LEVELS",
    "KNN_METHODS",
    "DevicePreparedScan",
    "cell_indices_torch",
    "crop_mask_torch",
    "input_features_torch",
    "knn",
    "knn_brute",
    "knn_grid",
    "labels_to_host",
    "preprocess_torch",
    "to_device",
    "voxel_subsample_torch",
]

KNN_METHODS = ("auto", "brute", "grid")
GRID_LEVELS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""Cell sizes (m) tried in turn by `knn_grid`. Measured on the bundled nuScenes scan (0.1 m
voxels): the nearest kept point of 99% of the input points is resolved at 0.1 m already (the
rest lie outside the crop, far from any kept point); the 17 neighbours of 3% of the kept points at
0.25 m, 37% at 0.5 m, 74% at 1 m, 90% at 2 m, 97% at 4 m, 99.5% at 8 m (32 beams: sparse far
rings). On the 260k scan the nearest-kept query costs 0.8 s at 0.1 m vs 5.5 s at 0.25 m (one CPU
thread) for the same 99%. So k = 1 starts at 0.1 m, k <= 4 at 0.25 m, larger k at 0.5 m. The
16 and 32 m levels catch points far outside the crop (nearest kept point tens of metres away):
without them the 260k scan's nearest-kept query took 9.2 s (brute-force fallback), with them
1.6 s. The rest: brute force."""
BRUTE_PAIRS_CPU = 2_000_000
BRUTE_PAIRS_CUDA = 400_000_000
"""`knn(method="auto")` uses brute force up to this many query x reference pairs (measured with
scripts/bench_pipeline.py --knn: on the 2-core CPU the grid wins from ~1e6 pairs; on a GPU brute
force is a few large kernels and wins up to a few 1e8 pairs -- not measured here, no GPU)."""
CHUNK_ELEMENTS = 1 << 24
"""Largest temporary (distance matrix or ragged candidate list) in elements, 128 MB in float64."""


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """One host-to-device copy; from pinned (page-locked) memory when the device is CUDA."""
    host = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def voxel_subsample_torch(xyz: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """Rows of the first point of every voxel, in sorted voxel-coordinate order (int64).

    Same as `preprocess.voxel_subsample` (the official `np.unique(..., return_index=True)`).
    """
    n = xyz.shape[0]
    if voxel_size <= 0 or n == 0:
        return torch.arange(n, dtype=torch.int64, device=xyz.device)
    low = xyz.min(0).values
    divisor = torch.full((n,), voxel_size, dtype=xyz.dtype, device=xyz.device)
    coords = [((xyz[:, a] - low[a]) / divisor).to(torch.int64) for a in range(3)]
    span = [int(c.max()) + 1 for c in coords]
    if float(span[0]) * span[1] * span[2] >= 2.0**62:
        raise ValueError(f"voxel grid {span} too large for an int64 key (voxel_size too small)")
    key = (coords[0] * span[1] + coords[1]) * span[2] + coords[2]
    del coords
    sorted_key, order = torch.sort(key, stable=True)
    first = torch.ones(n, dtype=torch.bool, device=xyz.device)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    return order[first]


def crop_mask_torch(xyz: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """Official crop: strictly inside (fov_min + eps, fov_max - eps) on x, y and z."""
    mask = torch.ones(xyz.shape[0], dtype=torch.bool, device=xyz.device)
    for axis in range(3):
        lo = cfg.fov_min[axis] + cfg.crop_eps
        hi = cfg.fov_max[axis] - cfg.crop_eps
        mask &= (xyz[:, axis] > lo) & (xyz[:, axis] < hi)
    return mask


def cell_indices_torch(xyz: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """[M, 3] cropped points -> [n_planes, M] int64 `q0 * W + q1` (float64 like the numpy code)."""
    dev = xyz.device
    out = torch.empty((cfg.n_planes, xyz.shape[0]), dtype=torch.int64, device=dev)
    fov_min = np.asarray(cfg.fov_min, dtype=np.float64)
    fov_max = np.asarray(cfg.fov_max, dtype=np.float64)
    for plane, (dim, grid) in enumerate(zip(cfg.dim_proj, cfg.grids_shape)):
        dims = list(LUT_AXIS_PLANE[dim])
        res = (fov_max[dims] - fov_min[dims]) / np.asarray(grid, dtype=np.int64)
        sub = xyz[:, dims].double() - torch.as_tensor(fov_min[dims], device=dev)
        quant = (sub / torch.as_tensor(res, device=dev).expand_as(sub).contiguous()).to(torch.int64)
        if quant.numel() and (
            bool((quant < 0).any()) or bool((quant >= torch.as_tensor(grid, device=dev)).any())
        ):
            raise ValueError(f"points outside the {grid} grid of plane {plane}: crop them first")
        out[plane] = quant[:, 0] * grid[1] + quant[:, 1]
    return out


def input_features_torch(points: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """[M, 4] float32 -> [5, M] float32 `[(i - mean) / std, x, y, z, radius]`."""
    xyz = points[:, :3]
    std = torch.full_like(points[:, 3], cfg.intensity_std)
    intensity = (points[:, 3] - cfg.intensity_mean) / std
    sq = xyz * xyz
    # float64 sqrt then float32: correctly rounded like numpy (torch's CPU float32 sqrt is not)
    radius = ((sq[:, 0] + sq[:, 1]) + sq[:, 2]).double().sqrt().float()
    return torch.stack([intensity, xyz[:, 0], xyz[:, 1], xyz[:, 2], radius])


# -- exact kNN ---------------------------------------------------------------------------------


def knn_brute(
    ref: torch.Tensor, query: torch.Tensor, k: int, chunk_elements: int = CHUNK_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest `ref` rows of every `query` row: (index [Q, k] int64, squared distance
    [Q, k] float64), nearest first. All pairs, exact float64, `chunk_elements` at a time."""
    ref64, q64 = ref.double(), query.double()
    q = query.shape[0]
    k = min(k, ref.shape[0])
    index = torch.empty((q, k), dtype=torch.int64, device=ref.device)
    dist = torch.empty((q, k), dtype=torch.float64, device=ref.device)
    step = max(1, chunk_elements // max(1, 3 * ref.shape[0]))
    for start in range(0, q, step):
        stop = min(q, start + step)
        d = (q64[start:stop, None, :] - ref64[None]).square_().sum(2)  # as the grid, cKDTree
        top, ind = torch.topk(d, k, dim=1, largest=False, sorted=True)
        index[start:stop], dist[start:stop] = ind, top
        del d
    return index, dist


def _ragged_candidates(
    cell_q: torch.Tensor, sorted_keys: torch.Tensor, spans: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For query cells [Q, 3] (already +1 shifted): the 27 neighbour cells as 9 runs of 3
    consecutive keys (z - 1 .. z + 1 of each (x, y) column) -> first row and count of each run in
    `sorted_keys` (starts [Q, 9], counts [Q, 9]) and the candidates per query [Q]."""
    dev = cell_q.device
    offsets = torch.tensor([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)], device=dev)
    column = (cell_q[:, None, 0] + offsets[None, :, 0]) * spans[1] + (
        cell_q[:, None, 1] + offsets[None, :, 1]
    )  # [Q, 9]
    low = column * spans[2] + (cell_q[:, None, 2] - 1)
    starts = torch.searchsorted(sorted_keys, low, right=False)
    counts = torch.searchsorted(sorted_keys, low + 2, right=True) - starts
    return starts, counts, counts.sum(1)


def _grid_level(
    ref: torch.Tensor,
    query: torch.Tensor,
    k: int,
    h: float,
    origin: torch.Tensor,
    chunk_elements: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One grid level: (index [Q, k], sq. distance [Q, k], resolved [Q] bool).

    A query is resolved when its k-th distance is below the distance from it to the outside of
    its 27 cells (h plus its distance to the nearest face of its own cell).
    """
    dev = ref.device
    cell_r = torch.floor((ref - origin) / h).to(torch.int64) + 1
    scaled_q = (query - origin) / h
    cell_q = torch.floor(scaled_q).to(torch.int64) + 1
    frac = scaled_q - (cell_q - 1).to(scaled_q.dtype)
    reach = (1.0 + torch.minimum(frac, 1.0 - frac).amin(1).clamp_(0.0, 1.0)) * h * (1 - 1e-9)
    spans = torch.maximum(cell_r.max(0).values, cell_q.max(0).values) + 2
    key_r = (cell_r[:, 0] * spans[1] + cell_r[:, 1]) * spans[2] + cell_r[:, 2]
    sorted_keys, perm = torch.sort(key_r, stable=True)
    ref_sorted = ref[perm]
    nq = query.shape[0]
    index = torch.zeros((nq, k), dtype=torch.int64, device=dev)
    dist = torch.full((nq, k), float("inf"), dtype=torch.float64, device=dev)
    if nq == 0:
        return index, dist, torch.zeros(nq, dtype=torch.bool, device=dev)
    starts, counts, per_query = _ragged_candidates(cell_q, sorted_keys, spans)
    # queries by candidate count, in chunks whose padded [rows, widest] matrix stays under
    # chunk_elements: a dense cell does not widen the matrix of the sparse queries
    order = torch.argsort(per_query)
    counts_sorted = per_query[order].cpu().numpy()
    lo = 0
    while lo < nq:
        fits = (np.arange(lo + 1, nq + 1) - lo) * counts_sorted[lo:] <= chunk_elements
        hi = lo + max(1, int(np.argmin(fits)) if not fits.all() else nq - lo)
        chunk, lo_q = order[lo:hi], lo
        lo = hi
        st, ct = starts[chunk].reshape(-1), counts[chunk].reshape(-1)
        pq = per_query[chunk]
        width = int(counts_sorted[hi - 1])
        if width == 0:
            continue
        # ragged expansion, query-major: candidate j of (query, cell) pair p is row st[p] + j
        total = int(pq.sum())
        pair = torch.repeat_interleave(torch.arange(st.numel(), device=dev), ct, output_size=total)
        pos = torch.arange(total, device=dev)
        rows = st[pair] + (pos - (torch.cumsum(ct, 0) - ct)[pair])
        qid = torch.div(pair, 9, rounding_mode="floor")
        col = pos - (torch.cumsum(pq, 0) - pq)[qid]
        del pair, pos
        diff = (ref_sorted[rows] - query[chunk][qid]).square_()
        d = (diff[:, 0] + diff[:, 1]) + diff[:, 2]  # faster than .sum(1) over 3 columns
        del diff
        dense = torch.full((hi - lo_q, width), float("inf"), dtype=torch.float64, device=dev)
        dense[qid, col] = d
        which = torch.zeros((hi - lo_q, width), dtype=torch.int64, device=dev)
        which[qid, col] = rows
        del rows, qid, col, d
        kk = min(k, width)
        top, arg = torch.topk(dense, kk, dim=1, largest=False, sorted=True)
        dist[chunk, :kk] = top
        index[chunk, :kk] = perm[which.gather(1, arg)]
        del dense, which, top, arg
    resolved = dist[:, k - 1] < reach.square()
    return index, dist, resolved


def knn_grid(
    ref: torch.Tensor,
    query: torch.Tensor,
    k: int,
    levels: tuple[float, ...] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours through a hash grid (see the module docstring); same outputs as
    `knn_brute` (up to the order of exact-distance ties). `levels`: cell sizes tried in turn
    (default `GRID_LEVELS` from 0.1 m for k = 1, 0.25 m for k <= 4, 0.5 m beyond)."""
    if levels is None:
        levels = GRID_LEVELS[0 if k == 1 else 1 if k <= 4 else 2 :]
    ref64, q64 = ref.double(), query.double()
    k = min(k, ref.shape[0])
    nq = query.shape[0]
    index = torch.zeros((nq, k), dtype=torch.int64, device=ref.device)
    dist = torch.zeros((nq, k), dtype=torch.float64, device=ref.device)
    if nq == 0 or k == 0:
        return index, dist
    origin = torch.minimum(ref64.min(0).values, q64.min(0).values)
    todo = torch.arange(nq, device=ref.device)
    for h in levels:
        ind, d, ok = _grid_level(ref64, q64[todo], k, float(h), origin, chunk_elements)
        done = todo[ok]
        index[done], dist[done] = ind[ok], d[ok]
        todo = todo[~ok]
        if todo.numel() == 0:
            return index, dist
    ind, d = knn_brute(ref64, q64[todo], k, chunk_elements)
    index[todo], dist[todo] = ind, d
    return index, dist


def knn(
    ref: torch.Tensor, query: torch.Tensor, k: int, method: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN by `method` ("auto": brute force up to `BRUTE_PAIRS_*` pairs, else the grid)."""
    if method not in KNN_METHODS:
        raise ValueError(f"knn method must be one of {list(KNN_METHODS)}, got {method!r}")
    if method == "auto":
        limit = BRUTE_PAIRS_CUDA if ref.device.type == "cuda" else BRUTE_PAIRS_CPU
        method = "brute" if ref.shape[0] * query.shape[0] <= limit else "grid"
    if method == "brute":
        return knn_brute(ref, query, k)
    return knn_grid(ref, query, k)


# -- the whole scan ----------------------------------------------------------------------------


@dataclass
class DevicePreparedScan:
    """`PreparedScan` with every array a tensor on the device (see `PreparedScan`)."""

    feats: torch.Tensor  # [5, M] float32
    cell_ind: torch.Tensor  # [n_planes, M] int64
    neighbors: torch.Tensor  # [M, K] int64
    kept_index: torch.Tensor  # [M] int64
    upsample_index: torch.Tensor  # [N] int64, -1 where none
    valid: torch.Tensor  # [N] bool
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(self.kept_index.shape[0])

    @property
    def num_input(self) -> int:
        return int(self.valid.shape[0])

    def to_numpy(self) -> PreparedScan:
        """The same scan as a numpy `PreparedScan` (for tests and the batched numpy path)."""
        return PreparedScan(
            feats=self.feats.cpu().numpy(),
            cell_ind=self.cell_ind.cpu().numpy(),
            neighbors=self.neighbors.cpu().numpy(),
            kept_index=self.kept_index.cpu().numpy(),
            upsample_index=self.upsample_index.cpu().numpy(),
            valid=self.valid.cpu().numpy(),
            timings=dict(self.timings),
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def preprocess_torch(
    points: np.ndarray | torch.Tensor,
    cfg: PreprocessConfig,
    device: str | torch.device = "cpu",
    knn_method: str = "auto",
) -> DevicePreparedScan:
    """[N, >=4] (x, y, z, intensity, ...) points -> `DevicePreparedScan` on `device`.

    The numpy input is copied to the device once (pinned on CUDA); everything else runs there.
    `timings`: "h2d", "preprocess" (voxels, crop, features, cells) and "knn" (neighbours and the
    nearest kept point of every input point), synchronised on CUDA.
    """
    device = torch.device(device)
    t0 = time.perf_counter()
    if isinstance(points, torch.Tensor):
        if points.ndim != 2 or points.shape[1] < 4:
            raise ValueError(
                f"points must be [N, >=4] (x, y, z, intensity, ...), got {points.shape}"
            )
        pts = points[:, :4].to(device=device, dtype=torch.float32)
    else:
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 4:
            raise ValueError(
                f"points must be [N, >=4] (x, y, z, intensity, ...), got {points.shape}"
            )
        pts = to_device(np.asarray(points[:, :4], dtype=np.float32), device)
    _sync(device)
    t1 = time.perf_counter()
    n = pts.shape[0]
    finite = torch.isfinite(pts).all(1)
    all_finite = bool(finite.all())
    finite_index = None if all_finite else torch.nonzero(finite).squeeze(1)
    pts_f = pts if finite_index is None else pts[finite_index]
    ok = (pts_f[:, :3].abs() < cfg.max_coordinate).all(1)
    on_grid = None if bool(ok.all()) else torch.nonzero(ok).squeeze(1)
    grid_pts = pts_f if on_grid is None else pts_f[on_grid]
    vox = voxel_subsample_torch(grid_pts[:, :3], cfg.voxel_size)
    vox = vox[crop_mask_torch(grid_pts[vox, :3], cfg)]
    kept_local = vox if on_grid is None else on_grid[vox]
    kept_pts = pts_f[kept_local]
    xyz_kept = kept_pts[:, :3]
    feats = input_features_torch(kept_pts, cfg)
    cell_ind = cell_indices_torch(xyz_kept, cfg)
    kept_index = kept_local if finite_index is None else finite_index[kept_local]
    valid_f = crop_mask_torch(pts_f[:, :3], cfg)
    if finite_index is None:
        valid = valid_f
    else:
        valid = torch.zeros(n, dtype=torch.bool, device=device)
        valid[finite_index] = valid_f
    _sync(device)
    t2 = time.perf_counter()

    m, k = xyz_kept.shape[0], cfg.num_neighbors
    if m <= 1:
        neighbors = torch.zeros((m, k), dtype=torch.int64, device=device)
    else:
        found = min(k + 1, m) - 1
        ind, _ = knn(xyz_kept, xyz_kept, found + 1, knn_method)
        neighbors = torch.empty((m, k), dtype=torch.int64, device=device)
        neighbors[:, :found] = ind[:, 1:]
        if found < k:
            neighbors[:, found:] = ind[:, found : found + 1]
    if m == 0:
        upsample = torch.full((pts_f.shape[0],), -1, dtype=torch.int64, device=device)
        valid = torch.zeros_like(valid)
    elif m == 1:
        upsample = torch.zeros(pts_f.shape[0], dtype=torch.int64, device=device)
    else:
        upsample = knn(xyz_kept, pts_f[:, :3], 1, knn_method)[0][:, 0]
    if finite_index is None:
        upsample_index = upsample
    else:
        upsample_index = torch.full((n,), -1, dtype=torch.int64, device=device)
        upsample_index[finite_index] = upsample
    _sync(device)
    t3 = time.perf_counter()
    return DevicePreparedScan(
        feats=feats,
        cell_ind=cell_ind,
        neighbors=neighbors,
        kept_index=kept_index,
        upsample_index=upsample_index,
        valid=valid,
        timings={"h2d": t1 - t0, "preprocess": t2 - t1, "knn": t3 - t2},
    )


def labels_to_host(
    scan: DevicePreparedScan,
    labels: torch.Tensor,
    scores: torch.Tensor,
    label_outside_crop: bool,
    no_class: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-kept-point upsampling of the M kept points' labels / scores to the N input points
    on the device, then one device-to-host copy of (labels, scores, valid) packed as int32.

    Same result as the numpy path: points with a kept point (all finite ones when
    `label_outside_crop`, else the valid ones) take their nearest kept point's label and score;
    the others `no_class` and 0. Returns (uint16 labels [N], float32 scores [N], bool valid [N]).
    """
    n = scan.num_input
    use = scan.upsample_index >= 0 if label_outside_crop else scan.valid
    packed = torch.zeros((3, n), dtype=torch.int32, device=scan.valid.device)
    packed[0] = no_class
    if scan.num_points > 0 and n > 0:
        rows = scan.upsample_index.clamp(min=0)
        packed[0] = torch.where(use, labels.to(torch.int32)[rows], packed[0])
        score = torch.where(use, scores.float()[rows], torch.zeros((), device=rows.device))
        packed[1] = score.view(torch.int32)
    packed[2] = scan.valid.to(torch.int32)
    host = packed.cpu().numpy()
    return host[0].astype(np.uint16), host[1].view(np.float32).copy(), host[2].astype(bool)
