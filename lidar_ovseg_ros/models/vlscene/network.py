"""VLScene inference network (official `BEVDepthOccupancy.simple_test`): both images through
RepViT + FPN, the stereo/LSS view transformer on the left camera, GSSA, OccHead.

Top-level module names are the official ones (`img_backbone`, `img_neck`,
`img_view_transformer`, `sparse_unet`, `pts_bbox_head`), so the mmcv checkpoint loads by name.
The final `F.interpolate(..., size=gt_occ.shape)` of `simple_test` is a same-size trilinear
resampling (the head already outputs 256x256x32) and is the identity; it is not repeated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backbone import FPN, RepViT
from .config import VLSceneConfig
from .gssa import GeometricSemanticSparseAwareness
from .head import OccHead
from .view_transformer import ViewTransformerLSSVoxel

__all__ = ["StereoInputs", "VLSceneNet"]


@dataclass
class StereoInputs:
    """One batch of stereo pairs, in the official `img_inputs` conventions.

    images: (B, 2, 3, H, W) normalised RGB, view 0 left, view 1 right.
    rots, trans: (B, 2, 3, 3), (B, 2, 3) camera -> LiDAR/ego rotation and translation.
    intrins: (B, 2, 3, 4) projection matrices (KITTI P2 / P3 style, 4th column kept).
    post_rots, post_trans: (B, 2, 3, 3), (B, 2, 3) image resize/crop as a 2D affine.
    bda: (B, 3, 3) BEV augmentation (identity at inference).
    calib: (B,) fx * baseline of the pair (metres * pixels, original resolution).
    """

    images: torch.Tensor
    rots: torch.Tensor
    trans: torch.Tensor
    intrins: torch.Tensor
    post_rots: torch.Tensor
    post_trans: torch.Tensor
    bda: torch.Tensor
    calib: torch.Tensor

    def to(self, device: torch.device | str) -> StereoInputs:
        return StereoInputs(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})

    def view(self, i: int) -> list[torch.Tensor]:
        """rots, trans, intrins, post_rots, post_trans of view i, each with N = 1."""
        return [
            t[:, i : i + 1]
            for t in (self.rots, self.trans, self.intrins, self.post_rots, self.post_trans)
        ]


class VLSceneNet(nn.Module):
    def __init__(self, cfg: VLSceneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.img_backbone = RepViT(cfg.repvit_cfgs, cfg.repvit_out_indices)
        self.img_neck = FPN(
            self.img_backbone.out_channels,
            cfg.fpn_out_channels,
            cfg.fpn_start_level,
            cfg.fpn_num_outs,
        )
        self.img_view_transformer = ViewTransformerLSSVoxel(cfg)
        self.sparse_unet = GeometricSemanticSparseAwareness(
            cfg.lss_grid, cfg.num_trans, cfg.sparse_init_size
        )
        self.pts_bbox_head = OccHead(
            self.sparse_unet.out_channels,
            cfg.num_classes,
            cfg.head_mid_channels,
            cfg.head_gn_groups,
            cfg.sdb_depth,
        )

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 2, 3, H, W) -> (2B, C, H/8, W/8): left views first, then right views."""
        b = images.shape[0]
        x = torch.cat([images[:, 0], images[:, 1]], 0)
        if tuple(x.shape[-2:]) != tuple(self.cfg.input_size):
            raise ValueError(
                f"images are {tuple(x.shape[-2:])}, the network takes {self.cfg.input_size}"
            )
        feats = self.img_neck(self.img_backbone(x), first_only=True)[0]
        assert feats.shape[0] == 2 * b
        return feats

    def forward(self, inputs: StereoInputs) -> torch.Tensor:
        """Semantic scene completion logits (B, classes, X, Y, Z) on the output grid."""
        b = inputs.images.shape[0]
        feats = self.image_features(inputs.images)
        vt = self.img_view_transformer
        left, right = inputs.view(0), inputs.view(1)
        mlp_left = vt.get_mlp_input(*left, inputs.bda)
        mlp_right = vt.get_mlp_input(*right, inputs.bda)
        voxels, _depth = vt(
            feats[:b], feats[b:], [*left, inputs.bda, mlp_left], mlp_right, inputs.calib
        )
        return self.pts_bbox_head(self.sparse_unet(voxels))
