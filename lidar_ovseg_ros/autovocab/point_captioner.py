"""The 3D-AVS point captioner: a LiDAR scan -> 12 sector captions, no camera needed.

scan -> OpenScene voxelizer (5 cm, first point per voxel) -> MinkUNet18A trunk (`ones(N, 3)` in,
768-d out) -> SMAP head (sector embeddings, `smap.py`) -> ClipCap (`clipcap.py`). The SMAP
checkpoint carries its own `net3d` trunk; when it equals OpenScene's the segmenter's network can
be passed in and shared (`compare_trunks`), otherwise the captioner builds its own.

The official inference (3D-AVS `FusedFeatureLoaderSMAP`) voxelizes with OpenScene's test-time
random rotation and scale (its `Voxelizer(use_augmentation=True)`) while the sectors use the
unrotated points, and pools only the key frame's voxels of a 10-sweep input; this runs one
deterministic, unrotated pass on the given scan (`pooled` selects the pooled points).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lidar_ovseg_ros.models.minkunet import MinkUNet, MinkUNetConfig
from lidar_ovseg_ros.models.openscene_checkpoint import NET3D_PREFIX, load_openscene_checkpoint
from lidar_ovseg_ros.segmentation.voxelizer import OPENSCENE_VOXEL_SIZE, voxelize

from .clipcap import ClipCapConfig, ClipCapDecoder, build_clipcap, load_gpt2_tokenizer
from .smap import (
    SmapConfig,
    SmapHead,
    build_smap_head,
    compare_trunks,
    load_smap_checkpoint,
)

_LOG = logging.getLogger(__name__)


@dataclass
class SectorCaption:
    """Sector i covers azimuths [-180 + 30 i, -150 + 30 i) degrees of the LiDAR frame."""

    index: int
    caption: str
    voxels: int

    @property
    def source(self) -> str:
        return f"lidar/sector_{self.index}"

    @property
    def azimuth_deg(self) -> tuple[float, float]:
        step = 360.0 / 12
        return (-180.0 + self.index * step, -180.0 + (self.index + 1) * step)


@dataclass
class PointCaptions:
    sectors: list[SectorCaption]
    timings: dict[str, float] = field(default_factory=dict)

    def as_sources(self) -> dict[str, str]:
        """{"lidar/sector_i": caption} for the sectors that have a caption."""
        return {s.source: s.caption for s in self.sectors if s.caption}


class PointCaptioner:
    """Trunk + SMAP head + ClipCap decoder + GPT-2 tokenizer."""

    def __init__(
        self,
        trunk: MinkUNet,
        head: SmapHead,
        decoder: ClipCapDecoder,
        tokenizer: Any,
        voxel_size: float = OPENSCENE_VOXEL_SIZE,
        untrained: bool = False,
    ) -> None:
        if trunk.out_channels != head.config.input_dim:
            raise ValueError(
                f"the trunk gives {trunk.out_channels}-d features, SMAP takes "
                f"{head.config.input_dim}-d"
            )
        if head.config.output_dim != decoder.config.prefix_size:
            raise ValueError(
                f"SMAP gives {head.config.output_dim}-d sector embeddings, ClipCap takes "
                f"{decoder.config.prefix_size}-d prefixes"
            )
        self.device = torch.device(next(trunk.parameters()).device)
        self.trunk = trunk.eval()
        self.head = head.to(self.device).eval()
        self.decoder = decoder.to(self.device).eval()
        self.tokenizer = tokenizer
        self.voxel_size = float(voxel_size)
        self.untrained = untrained

    @classmethod
    def from_files(
        cls,
        smap_checkpoint: str | Path,
        clipcap_weights: str | Path,
        tokenizer: str = "gpt2",
        shared_trunk: MinkUNet | None = None,
        device: str | torch.device = "cpu",
        gpt_config: Any | None = None,
    ) -> PointCaptioner:
        """The official files: `smap_model_epoch_20.pth.tar` (trunk + SMAP head) and ClipCap's
        `coco_weights.pt`; `shared_trunk` (the OpenScene segmenter's network) is used instead of
        a second trunk only when its weights equal the SMAP checkpoint's `net3d`. `gpt_config`:
        GPT-2 small (the COCO model's) unless given (tests)."""
        ckpt = load_smap_checkpoint(smap_checkpoint)
        trunk = None
        if shared_trunk is not None:
            from lidar_ovseg_ros.models.openscene_checkpoint import spconv_weight_to_me

            own = {}
            for k, v in shared_trunk.state_dict().items():
                if k.endswith(".weight") and v.ndim in (2, 5):
                    own[k[: -len(".weight")] + ".kernel"] = spconv_weight_to_me(v.cpu())
                else:
                    own[k] = v.cpu()
            comparison = compare_trunks(ckpt.trunk, own)
            _LOG.info("%s", comparison.summary())
            if comparison.identical:
                trunk = shared_trunk
        if trunk is None:
            trunk = MinkUNet(MinkUNetConfig.from_arch("MinkUNet18A", out_channels=768))
            load_openscene_checkpoint(
                trunk, {"state_dict": {NET3D_PREFIX + k: v for k, v in ckpt.trunk.items()}}
            )
        head = build_smap_head(ckpt)
        decoder = build_clipcap(clipcap_weights, gpt_config=gpt_config)
        return cls(trunk.to(device), head, decoder, load_gpt2_tokenizer(tokenizer))

    @classmethod
    def tiny(cls, seed: int = 0) -> PointCaptioner:
        """Small untrained trunk/SMAP/GPT-2 (tests, the offline tiny profile): gibberish
        captions, real code path."""
        from .tiny_models import build_tiny_gpt2_tokenizer, tiny_gpt2_config

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            trunk = MinkUNet(MinkUNetConfig.tiny(out_channels=32))
        smap_cfg = SmapConfig(input_dim=32, embed_dim=32, output_dim=64, num_heads=4)
        head = build_smap_head(config=smap_cfg, seed=seed)
        tok = build_tiny_gpt2_tokenizer()
        decoder = build_clipcap(
            gpt_config=tiny_gpt2_config(len(tok)),
            config=ClipCapConfig(prefix_size=smap_cfg.output_dim, max_tokens=20),
            seed=seed,
        )
        return cls(trunk, head, decoder, tok, untrained=True)

    @torch.no_grad()
    def caption(self, points: np.ndarray, pooled: np.ndarray | None = None) -> PointCaptions:
        """12 sector captions of a [N, >=3] scan (x, y, z in the LiDAR frame); `pooled`
        optional [N] bool of the points whose voxels are pooled (the key frame of a multi-sweep
        input). Empty sectors get '' and `voxels` 0."""
        t0 = time.perf_counter()
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"points must be [N, >=3], got {points.shape}")
        vox = voxelize(points, self.voxel_size)
        reps = points[vox.kept, :3].astype(np.float32)
        pooled_vox = None
        if pooled is not None:
            pooled = np.asarray(pooled, dtype=bool)
            if pooled.shape != (len(points),):
                raise ValueError(f"pooled must be [{len(points)}] bool, got {pooled.shape}")
            pooled_vox = pooled[vox.kept]
        t1 = time.perf_counter()
        coords = torch.from_numpy(vox.coords).to(self.device)
        if len(vox):
            ones = torch.ones((len(vox), self.trunk.config.in_channels), device=self.device)
            feats = self.trunk(ones, coords).float()
        else:
            feats = torch.zeros((0, self.head.config.input_dim), device=self.device)
        t2 = time.perf_counter()
        out = self.head(feats, coords, reps, pooled=pooled_vox)
        t3 = time.perf_counter()
        captions = [""] * len(out.valid)
        keep = np.flatnonzero(out.valid)
        if len(keep):
            texts = self.decoder.caption(out.embeddings[torch.from_numpy(keep)], self.tokenizer)
            for i, t in zip(keep, texts, strict=True):
                captions[int(i)] = t
        t4 = time.perf_counter()
        sectors = [
            SectorCaption(index=i, caption=captions[i], voxels=int(out.counts[i]))
            for i in range(len(captions))
        ]
        timings = {
            "voxelize": t1 - t0,
            "trunk": t2 - t1,
            "smap": t3 - t2,
            "decode": t4 - t3,
            "total": t4 - t0,
        }
        return PointCaptions(sectors, timings)
