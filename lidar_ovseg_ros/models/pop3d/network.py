"""POP-3D network: ResNet-DCN + FPN + TPVFormer encoder + voxel heads, built from a config.

`Pop3DConfig.full()` is the official `config/pop3d_maskclip_12ep.py`; `Pop3DConfig.tiny()` keeps
every structural feature (DCN stages, 4 FPN levels, 3 planes, pillar anchors, both heads) at toy
sizes for tests. Top-level module names (`img_backbone`, `img_neck`, `tpv_head`,
`tpv_aggregator`) match the official state dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .fpn import FPN
from .heads import TPVAggregator
from .resnet_dcn import ResNetDCN
from .tpvformer import TPVFormerEncoder, TPVFormerHead, TPVFormerLayer

# The official checkpoint keeps the weights under "state_dict" (DDP runs prefix them "module.").
POP3D_STATE_DICT_KEYS = ("state_dict", "model")

# nuScenes camera order of the official info files (the order of `cams_embeds`).
NUSCENES_CAMERAS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)


class Pop3DConfigError(ValueError):
    """A Pop3DConfig field has an invalid value; the message names the field."""


@dataclass(frozen=True)
class Pop3DConfig:
    # images
    image_size: tuple[int, int] = (900, 1600)  # (H, W) fed to the backbone before padding
    pad_size_divisor: int = 32
    camera_names: tuple[str, ...] = NUSCENES_CAMERAS
    # caffe-style normalisation of the official pipeline: BGR order, mean subtracted, std 1
    img_mean: tuple[float, float, float] = (103.530, 116.280, 123.675)
    img_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    to_rgb: bool = False
    # backbone (ResNet-101, DCNv2 in stages 3-4)
    stage_blocks: tuple[int, ...] = (3, 4, 23, 3)
    base_channels: int = 64
    stage_with_dcn: tuple[bool, ...] = (False, False, True, True)
    out_indices: tuple[int, ...] = (1, 2, 3)
    # neck / encoder
    embed_dims: int = 256
    num_levels: int = 4
    num_heads: int = 8
    num_layers: int = 3
    ffn_dims: int = 512
    tpv_h: int = 100
    tpv_w: int = 100
    tpv_z: int = 8
    pc_range: tuple[float, ...] = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)  # x0 y0 z0 x1 y1 z1
    num_points_in_pillar: tuple[int, int, int] = (4, 32, 32)
    num_points: tuple[int, int, int] = (8, 64, 64)
    self_attn_points: int = 4
    # heads
    scale_h: int = 1
    scale_w: int = 1
    scale_z: int = 1
    nbr_classes: int = 2
    hidden_dims: int = 512
    out_dims: int = 256
    feature_dim: int = 512
    hidden_dims_ft: int = 1024
    out_dims_ft: int = 1024
    dec_layers_occupancy: int = 2
    dec_layers_features: int = 2

    @classmethod
    def full(cls) -> Pop3DConfig:
        """The official POP-3D configuration (6 x 900x1600 images, 100x100x8 voxels of 1.024 m)."""
        return cls()

    @classmethod
    def tiny(cls) -> Pop3DConfig:
        """A toy network with the same structure, for tests (6 x 64x112 images, 16x16x4 voxels)."""
        return cls(
            image_size=(64, 112),
            stage_blocks=(1, 1, 2, 1),
            base_channels=8,
            embed_dims=32,
            num_heads=4,
            num_layers=2,
            ffn_dims=64,
            tpv_h=16,
            tpv_w=16,
            tpv_z=4,
            num_points_in_pillar=(2, 4, 4),
            num_points=(4, 8, 8),
            hidden_dims=32,
            out_dims=32,
            feature_dim=64,
            hidden_dims_ft=48,
            out_dims_ft=48,
        )

    def replace(self, **changes) -> Pop3DConfig:
        return dataclasses.replace(self, **changes)

    def voxelize_points(self, xyz: np.ndarray) -> np.ndarray:
        """Continuous voxel-index coordinates [N, 3] (float64) of LiDAR points, as the official
        `Voxelize`: clipped into [min, max - 1e-3], minus min, divided by the voxel interval.
        The official intervals divide the range by `grid_size = [tpv_h * scale_h, tpv_w *
        scale_w, tpv_z * scale_z]` in that order (the same as (X, Y, Z) whenever tpv_h == tpv_w,
        as in every official configuration)."""
        xyz = np.asarray(xyz, np.float64)
        if xyz.ndim != 2 or xyz.shape[1] < 3:
            raise ValueError(f"points must be [N, 3+], got {xyz.shape}")
        lo = np.asarray(self.pc_range[:3], np.float64)
        hi = np.asarray(self.pc_range[3:], np.float64)
        grid = np.asarray(
            [self.tpv_h * self.scale_h, self.tpv_w * self.scale_w, self.tpv_z * self.scale_z]
        )
        return (np.clip(xyz[:, :3], lo, hi - 1e-3) - lo) / ((hi - lo) / grid)

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """(X, Y, Z) voxels of the output volume."""
        return (
            self.tpv_w * self.scale_w,
            self.tpv_h * self.scale_h,
            self.tpv_z * self.scale_z,
        )

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        x0, y0, z0, x1, y1, z1 = self.pc_range
        nx, ny, nz = self.grid_size
        return ((x1 - x0) / nx, (y1 - y0) / ny, (z1 - z0) / nz)

    @property
    def padded_image_size(self) -> tuple[int, int]:
        d = self.pad_size_divisor
        h, w = self.image_size
        return (-(-h // d) * d, -(-w // d) * d)

    def validate(self) -> None:
        def bad(name: str, why: str) -> None:
            raise Pop3DConfigError(f"Pop3DConfig.{name}={getattr(self, name)!r}: {why}")

        if len(self.image_size) != 2 or min(self.image_size) < 1:
            bad("image_size", "needs two positive sizes (H, W)")
        if self.pad_size_divisor < 1:
            bad("pad_size_divisor", "must be >= 1")
        if len(self.camera_names) < 1:
            bad("camera_names", "needs at least one camera")
        if len(self.stage_blocks) != 4 or min(self.stage_blocks) < 1:
            bad("stage_blocks", "needs four positive block counts")
        if len(self.stage_with_dcn) != 4:
            bad("stage_with_dcn", "needs one flag per stage (4)")
        if not self.out_indices or any(i not in range(4) for i in self.out_indices):
            bad("out_indices", "must be stage indices in 0..3")
        if self.num_levels < len(self.out_indices):
            bad("num_levels", f"must be >= the {len(self.out_indices)} backbone outputs")
        if self.embed_dims % self.num_heads or self.embed_dims % 2:
            bad("embed_dims", f"must be even and divisible by num_heads={self.num_heads}")
        if min(self.tpv_h, self.tpv_w, self.tpv_z) < 1:
            bad("tpv_h", "plane sizes tpv_h, tpv_w, tpv_z must be positive")
        x0, y0, z0, x1, y1, z1 = self.pc_range
        if not (x1 > x0 and y1 > y0 and z1 > z0):
            bad("pc_range", "needs (xmin, ymin, zmin, xmax, ymax, zmax) with max > min")
        n0, n1, n2 = self.num_points_in_pillar
        if n1 != n2 or n1 % n0:
            bad("num_points_in_pillar", "zh and wz entries must be equal multiples of the first")
        mult = (1, n1 // n0, n2 // n0)
        per_sub = {p // m for p, m in zip(self.num_points, mult, strict=True)}
        if len(per_sub) != 1 or any(p % m for p, m in zip(self.num_points, mult, strict=True)):
            bad(
                "num_points",
                "must scale with num_points_in_pillar, e.g. (8, 64, 64) for (4, 32, 32)",
            )
        if per_sub.pop() % n0:
            bad("num_points", "points per sub-query must be a multiple of num_points_in_pillar[0]")
        if self.nbr_classes < 2:
            bad("nbr_classes", "the occupancy head needs >= 2 classes (index 1 = occupied)")
        if len(self.img_mean) != 3 or len(self.img_std) != 3 or min(self.img_std) <= 0:
            bad("img_std", "img_mean/img_std need 3 values, std > 0")


class Pop3DNetwork(nn.Module):
    """Surround images -> occupancy logits and CLIP-space features on the voxel grid."""

    def __init__(self, config: Pop3DConfig | None = None) -> None:
        super().__init__()
        cfg = config or Pop3DConfig.full()
        cfg.validate()
        self.config = cfg
        self.img_backbone = ResNetDCN(
            stage_blocks=cfg.stage_blocks,
            base_channels=cfg.base_channels,
            out_indices=cfg.out_indices,
            stage_with_dcn=cfg.stage_with_dcn,
            style="caffe",
        )
        in_channels = [self.img_backbone.out_channels[i] for i in cfg.out_indices]
        self.img_neck = FPN(in_channels, cfg.embed_dims, num_outs=cfg.num_levels)
        layers = [
            TPVFormerLayer(
                cfg.embed_dims,
                cfg.num_heads,
                cfg.ffn_dims,
                cfg.tpv_h,
                cfg.tpv_w,
                cfg.tpv_z,
                num_levels=cfg.num_levels,
                num_points=cfg.num_points,
                num_z_anchors=cfg.num_points_in_pillar,
                self_attn_points=cfg.self_attn_points,
            )
            for _ in range(cfg.num_layers)
        ]
        encoder = TPVFormerEncoder(
            cfg.tpv_h, cfg.tpv_w, cfg.tpv_z, cfg.pc_range, cfg.num_points_in_pillar, layers
        )
        self.tpv_head = TPVFormerHead(
            cfg.tpv_h,
            cfg.tpv_w,
            cfg.tpv_z,
            cfg.pc_range,
            cfg.num_levels,
            len(cfg.camera_names),
            cfg.embed_dims,
            encoder,
        )
        self.tpv_aggregator = TPVAggregator(
            cfg.tpv_h,
            cfg.tpv_w,
            cfg.tpv_z,
            nbr_classes=cfg.nbr_classes,
            in_dims=cfg.embed_dims,
            hidden_dims=cfg.hidden_dims,
            out_dims=cfg.out_dims,
            scale_h=cfg.scale_h,
            scale_w=cfg.scale_w,
            scale_z=cfg.scale_z,
            feature_dim=cfg.feature_dim,
            hidden_dims_ft=cfg.hidden_dims_ft,
            out_dims_ft=cfg.out_dims_ft,
            dec_layers_occupancy=cfg.dec_layers_occupancy,
            dec_layers_features=cfg.dec_layers_features,
        )
        self.eval()

    # The stages are public so a pipeline can time them separately.
    def backbone(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[B, Ncam, 3, H, W] -> backbone stage outputs, each [B*Ncam, C, h, w]."""
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [B, Ncam, 3, H, W], got {tuple(images.shape)}")
        return self.img_backbone(images.flatten(0, 1))

    def neck(self, feats: Sequence[torch.Tensor], batch: int) -> list[torch.Tensor]:
        """Backbone outputs -> FPN levels, each [B, Ncam, C, h, w]."""
        outs = self.img_neck(feats)
        return [o.view(batch, o.shape[0] // batch, *o.shape[1:]) for o in outs]

    def encode(
        self,
        mlvl_feats: Sequence[torch.Tensor],
        lidar2img: torch.Tensor,
        image_hw: tuple[int, int],
    ) -> list[torch.Tensor]:
        """FPN levels + projections -> TPV planes [hw, zh, wz], each [B, n, C]."""
        return self.tpv_head(mlvl_feats, lidar2img, image_hw)

    def forward(
        self,
        images: torch.Tensor,
        lidar2img: torch.Tensor,
        image_hw: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, Ncam, 3, H, W] (normalised, padded); lidar2img [B, Ncam, 4, 4] mapping LiDAR
        points to pixels of these images; image_hw the (padded) image size the projections are
        normalised by (default: the tensor's H, W).

        Returns occupancy logits [B, X, Y, Z, nbr_classes] and features [B, X, Y, Z, feature_dim].
        """
        if lidar2img.shape != (*images.shape[:2], 4, 4):
            raise ValueError(
                f"lidar2img must be [B, Ncam, 4, 4] matching images, got {tuple(lidar2img.shape)}"
            )
        hw = tuple(images.shape[-2:]) if image_hw is None else tuple(image_hw)
        feats = self.neck(self.backbone(images), images.shape[0])
        planes = self.encode(feats, lidar2img, hw)
        return self.tpv_aggregator(planes)


def load_pop3d_weights(model: Pop3DNetwork, path: str | Path) -> Pop3DNetwork:
    """Load an official POP-3D checkpoint (e.g. `pop3d_weights.pth`) with strict key checking.

    Raises `CheckpointNotFoundError` (missing file) or `CheckpointMismatchError` (listing the
    missing / unexpected / mis-shaped keys) from `lidar_ovseg_ros.models.checkpoints`.
    """
    from ..checkpoints import load_weights

    load_weights(model, path, keys=POP3D_STATE_DICT_KEYS)
    return model.eval()
