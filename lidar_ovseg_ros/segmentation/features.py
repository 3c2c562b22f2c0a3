"""Per-point 3D features for raw LiDAR scans: preprocess -> WaffleIron/ScaLR+ -> NN upsampling.

This is the official IGLOSS feature extraction (`extract_scalrplus_features.py`: the network
output, 1024-d for ScaLR+, taken at the nearest kept point of every input point) behind one
call, so the classifier on top only sees `[N, D]` features and a validity mask.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch

from ..models.checkpoints import DEFAULT_STATE_DICT_KEYS, load_weights
from ..models.waffleiron import WaffleIron, WaffleIronConfig
from .preprocess import PreparedScan, PreprocessConfig, collate, preprocess

__all__ = ["PREPROCESS_BACKENDS", "STAGES", "PointFeatureExtractor", "resolve_backend"]

STAGES = ("preprocess", "knn", "backbone", "upsample")
_AMP_DTYPES = (torch.float16, torch.bfloat16)
PREPROCESS_BACKENDS = ("numpy", "torch", "auto")


def resolve_backend(backend: str, device: torch.device) -> str:
    """ "auto" -> "torch" on CUDA (device-resident preprocessing), "numpy" elsewhere (numpy and
    cKDTree are faster than torch on a CPU: docs/benchmarks.md "Device-resident pipeline")."""
    if backend not in PREPROCESS_BACKENDS:
        raise ValueError(
            f"preprocess_backend must be one of {list(PREPROCESS_BACKENDS)}, got {backend!r}"
        )
    if backend == "auto":
        return "torch" if device.type == "cuda" else "numpy"
    return backend


class PointFeatureExtractor:
    """Run a WaffleIron model on numpy scans and return features for every input point.

    `timings` holds the seconds of each stage (`STAGES`, plus `total`) of the last call (summed
    over the scans of a batch); on CUDA the stages are synchronised so the split is real.
    `last_num_kept` holds the number of points each scan fed to the backbone.
    """

    def __init__(
        self,
        model: WaffleIron,
        preprocess_cfg: PreprocessConfig,
        device: str | torch.device = "cpu",
        amp_dtype: torch.dtype | None = None,
        knn_workers: int = -1,
        preprocess_backend: str = "numpy",
    ) -> None:
        """`preprocess_backend`: "numpy" (official numpy/cKDTree preprocessing on the host),
        "torch" (`torch_preprocess.preprocess_torch` on `device`: one host-to-device copy, kept
        features never leave the device) or "auto" (torch on CUDA, numpy on CPU)."""
        preprocess_cfg.check_backbone(model.config)
        if amp_dtype is not None and amp_dtype not in _AMP_DTYPES:
            raise ValueError(
                f"amp_dtype must be None, torch.float16 or torch.bfloat16, got {amp_dtype}"
            )
        self.device = torch.device(device)
        self.preprocess_backend = resolve_backend(preprocess_backend, self.device)
        self.model = model.to(self.device).eval()
        self.preprocess_cfg = preprocess_cfg
        self.amp_dtype = amp_dtype
        self.knn_workers = knn_workers
        self.timings: dict[str, float] = dict.fromkeys((*STAGES, "total"), 0.0)
        self.last_num_kept: list[int] = []  # M per scan of the last call (points fed to the model)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        config: WaffleIronConfig,
        preprocess_cfg: PreprocessConfig,
        device: str | torch.device = "cpu",
        amp_dtype: torch.dtype | None = None,
        keys: tuple[str, ...] = DEFAULT_STATE_DICT_KEYS,
        preprocess_backend: str = "numpy",
    ) -> PointFeatureExtractor:
        """Build the model from `config` and load an official checkpoint strictly."""
        model = load_weights(WaffleIron(config), path, keys=keys)
        return cls(
            model,
            preprocess_cfg,
            device=device,
            amp_dtype=amp_dtype,
            preprocess_backend=preprocess_backend,
        )

    @property
    def device_resident(self) -> bool:
        """True when preprocessing runs in torch on the device (`extract_kept` then returns a
        `DevicePreparedScan`)."""
        return self.preprocess_backend == "torch"

    @property
    def out_channels(self) -> int:
        """D, the feature size (1024 for ScaLR+)."""
        return self.model.out_channels

    def extract(self, points: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """[N, >=4] points (x, y, z, intensity, ...) -> (features [N, D] float32 on the device,
        valid [N] bool). Invalid points (outside the crop, non-finite) still get the features of
        their nearest kept point when they have one, zeros otherwise."""
        return self.extract_batch([points])[0]

    def extract_kept(self, points: np.ndarray) -> tuple[torch.Tensor, PreparedScan]:
        """Features of the kept points only: ([M, D] float32 on the device, the `PreparedScan`
        whose `upsample_index` maps every input point to its kept point). Per-point consumers
        (a classifier) can work on the M rows and gather their results, instead of an [N, D]
        upsampled copy (4 KB per input point at D = 1024). `timings` has no 'upsample'.

        With the torch backend the scan is a `DevicePreparedScan` (tensors on the device) and
        `timings` also has "h2d" (the one host-to-device copy of the points)."""
        t_start = time.perf_counter()
        if self.device_resident:
            from .torch_preprocess import preprocess_torch

            dscan = preprocess_torch(points, self.preprocess_cfg, self.device)
            t0 = time.perf_counter()
            kept = self._forward_device(dscan)
            self._sync()
            t1 = time.perf_counter()
            self.last_num_kept = [dscan.num_points]
            self.timings = {**dscan.timings, "backbone": t1 - t0, "upsample": 0.0}
            self.timings["total"] = t1 - t_start
            return kept, dscan  # type: ignore[return-value]
        scan = preprocess(points, self.preprocess_cfg, workers=self.knn_workers)
        t0 = time.perf_counter()
        kept = self.forward_prepared([scan])[0]
        self._sync()
        t1 = time.perf_counter()
        self.last_num_kept = [scan.num_points]
        self.timings = {
            "preprocess": scan.timings["preprocess"],
            "knn": scan.timings["knn"],
            "backbone": t1 - t0,
            "upsample": 0.0,
            "total": t1 - t_start,
        }
        return kept, scan

    def extract_batch(self, scans: list[np.ndarray]) -> list[tuple[torch.Tensor, np.ndarray]]:
        """Several scans in one padded forward pass; same results as `extract` on each."""
        t_start = time.perf_counter()
        prepared = [preprocess(p, self.preprocess_cfg, workers=self.knn_workers) for p in scans]
        t_pre = sum(s.timings["preprocess"] for s in prepared)
        t_knn = sum(s.timings["knn"] for s in prepared)

        t0 = time.perf_counter()
        kept_feats = self.forward_prepared(prepared)
        self._sync()
        t1 = time.perf_counter()
        out = [self._upsample(s, f) for s, f in zip(prepared, kept_feats)]
        self._sync()
        t2 = time.perf_counter()
        self.last_num_kept = [s.num_points for s in prepared]
        self.timings = {
            "preprocess": t_pre,
            "knn": t_knn,
            "backbone": t1 - t0,
            "upsample": t2 - t1,
            "total": t2 - t_start,
        }
        return out

    @torch.no_grad()
    def forward_prepared(self, prepared: list[PreparedScan]) -> list[torch.Tensor]:
        """Backbone on prepared scans -> per scan [M_i, D] float32 features of the kept points."""
        d = self.out_channels
        results: list[torch.Tensor | None] = [None] * len(prepared)
        active = [i for i, s in enumerate(prepared) if s.num_points > 0]
        for i, s in enumerate(prepared):
            if s.num_points == 0:
                results[i] = torch.zeros((0, d), dtype=torch.float32, device=self.device)
        if active:
            batch = [prepared[i] for i in active]
            if len(batch) == 1:  # exact official single-scan path, no padding
                s = batch[0]
                feats, cells, neigh = s.feats[None], s.cell_ind[None], s.neighbors[None]
                mask = None
            else:
                feats, cells, neigh, mask_np = collate(batch)
                mask = self._to(mask_np)
            with self._autocast():
                out = self.model(self._to(feats), self._to(cells), self._to(neigh), mask)
            out = out.float()
            for j, i in enumerate(active):
                results[i] = out[j, :, : prepared[i].num_points].T
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _forward_device(self, scan) -> torch.Tensor:
        """Backbone on a `DevicePreparedScan` -> [M, D] float32 kept features (on the device)."""
        if scan.num_points == 0:
            return torch.zeros((0, self.out_channels), dtype=torch.float32, device=self.device)
        with self._autocast():
            out = self.model(scan.feats[None], scan.cell_ind[None], scan.neighbors[None], None)
        return out.float()[0].T

    def _upsample(self, scan: PreparedScan, kept: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        n, d = scan.num_input, kept.shape[1]
        has = scan.upsample_index >= 0
        if has.all() and n:
            feats = kept.index_select(0, self._to(scan.upsample_index))
        else:
            feats = torch.zeros((n, d), dtype=torch.float32, device=self.device)
            if has.any():
                rows = self._to(np.flatnonzero(has))
                feats[rows] = kept.index_select(0, self._to(scan.upsample_index[has]))
        return feats, scan.valid

    def _to(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
