"""TPV aggregation and POP-3D's voxel heads (official `tpv_aggregator`).

Voxel feature = hw-plane feature + zh-plane feature + wz-plane feature, broadcast over the axis
each plane lacks (after an optional bilinear upsampling of the planes by `scale_*`). Two MLP
heads read it: occupancy (`decoder` + `classifier`: 256->512, Softplus, 512->256, then ->2) and
language (`decoder_ft` + `classifier_ft`: 256->1024, Softplus, 1024->1024, then ->512 CLIP dims).
The voxel grid is indexed [x, y, z] = [w, h, z] as in the official code.

Points branch (official `features`/`points_input` branches of `TPVAggregator.forward`): a point
given as continuous voxel-index coordinates (x, y, z) (the official `Voxelize`: clipped into the
volume, minus the minimum corner, divided by the voxel size, not floored) is normalised to
[-1, 1] by the plane sizes and each plane is sampled there with `F.grid_sample` (bilinear, zero
padding, align_corners=False: the official defaults): hw at (x, y), zh at (y, z), wz at (z, x).
The point's feature is the sum of the three samples; the same heads read it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def build_decoder(num_layers: int, in_dims: int, hidden_dims: int, out_dims: int) -> nn.Sequential:
    """Linear, then (Softplus, Linear) blocks: indices 0, 2, 4 ... hold the weights."""
    if num_layers < 1:
        raise ValueError(f"a decoder needs at least one layer, got {num_layers}")
    if num_layers == 1:
        return nn.Sequential(nn.Linear(in_dims, out_dims))
    layers: list[nn.Module] = [nn.Linear(in_dims, hidden_dims)]
    for _ in range(num_layers - 2):
        layers += [nn.Softplus(), nn.Linear(hidden_dims, hidden_dims)]
    layers += [nn.Softplus(), nn.Linear(hidden_dims, out_dims)]
    return nn.Sequential(*layers)


class TPVAggregator(nn.Module):
    def __init__(
        self,
        tpv_h: int,
        tpv_w: int,
        tpv_z: int,
        nbr_classes: int = 2,
        in_dims: int = 256,
        hidden_dims: int = 512,
        out_dims: int = 256,
        scale_h: int = 1,
        scale_w: int = 1,
        scale_z: int = 1,
        feature_dim: int = 512,
        hidden_dims_ft: int = 1024,
        out_dims_ft: int = 1024,
        dec_layers_occupancy: int = 2,
        dec_layers_features: int = 2,
    ) -> None:
        super().__init__()
        self.tpv_h, self.tpv_w, self.tpv_z = tpv_h, tpv_w, tpv_z
        self.scale_h, self.scale_w, self.scale_z = scale_h, scale_w, scale_z
        self.classes, self.feature_dim = nbr_classes, feature_dim
        self.decoder = build_decoder(dec_layers_occupancy, in_dims, hidden_dims, out_dims)
        self.classifier = nn.Linear(out_dims, nbr_classes)
        self.decoder_ft = build_decoder(dec_layers_features, in_dims, hidden_dims_ft, out_dims_ft)
        self.classifier_ft = nn.Linear(out_dims_ft, feature_dim)

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """(X, Y, Z) voxels."""
        return (
            self.tpv_w * self.scale_w,
            self.tpv_h * self.scale_h,
            self.tpv_z * self.scale_z,
        )

    def planes(self, tpv_list: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Token lists -> maps hw [B, C, H, W], zh [B, C, Z, H], wz [B, C, W, Z], upsampled."""
        hw, zh, wz = tpv_list
        bs, _, c = hw.shape
        hw = hw.permute(0, 2, 1).reshape(bs, c, self.tpv_h, self.tpv_w)
        zh = zh.permute(0, 2, 1).reshape(bs, c, self.tpv_z, self.tpv_h)
        wz = wz.permute(0, 2, 1).reshape(bs, c, self.tpv_w, self.tpv_z)
        sh, sw, sz = self.scale_h, self.scale_w, self.scale_z
        if sh != 1 or sw != 1:
            hw = F.interpolate(hw, size=(self.tpv_h * sh, self.tpv_w * sw), mode="bilinear")
        if sz != 1 or sh != 1:
            zh = F.interpolate(zh, size=(self.tpv_z * sz, self.tpv_h * sh), mode="bilinear")
        if sw != 1 or sz != 1:
            wz = F.interpolate(wz, size=(self.tpv_w * sw, self.tpv_z * sz), mode="bilinear")
        return hw, zh, wz

    def voxel_features(self, tpv_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """Summed plane features per voxel, [B, X, Y, Z, C]."""
        hw, zh, wz = self.planes(tpv_list)
        # hw [B,C,H,W] -> [B,C,W,H,1]; zh [B,C,Z,H] -> [B,C,1,H,Z]; wz [B,C,W,Z] -> [B,C,W,1,Z]
        fused = (
            hw.permute(0, 1, 3, 2).unsqueeze(-1)
            + zh.permute(0, 1, 3, 2).unsqueeze(2)
            + wz.unsqueeze(3)
        )
        return fused.permute(0, 2, 3, 4, 1)

    def point_features(
        self, tpv_list: Sequence[torch.Tensor], points: torch.Tensor
    ) -> torch.Tensor:
        """Summed plane features at points [B, N, 3] (continuous voxel-index coordinates x, y,
        z as the official `Voxelize` gives them) -> [B, N, C]."""
        hw, zh, wz = self.planes(tpv_list)
        bs = hw.shape[0]
        if points.dim() != 3 or points.shape[0] != bs or points.shape[2] != 3:
            raise ValueError(f"points must be [{bs}, N, 3], got {tuple(points.shape)}")
        n = points.shape[1]
        pts = points.detach().clone().reshape(bs, 1, n, 3).float()
        pts[..., 0] = pts[..., 0] / (self.tpv_w * self.scale_w) * 2 - 1
        pts[..., 1] = pts[..., 1] / (self.tpv_h * self.scale_h) * 2 - 1
        pts[..., 2] = pts[..., 2] / (self.tpv_z * self.scale_z) * 2 - 1
        hw_pts = F.grid_sample(hw, pts[:, :, :, [0, 1]], align_corners=False).squeeze(2)
        zh_pts = F.grid_sample(zh, pts[:, :, :, [1, 2]], align_corners=False).squeeze(2)
        wz_pts = F.grid_sample(wz, pts[:, :, :, [2, 0]], align_corners=False).squeeze(2)
        return (hw_pts + zh_pts + wz_pts).permute(0, 2, 1)

    def occupancy(self, voxel_feats: torch.Tensor) -> torch.Tensor:
        """[..., C] -> occupancy logits [..., nbr_classes] (index 1 = occupied)."""
        return self.classifier(self.decoder(voxel_feats))

    def language(self, voxel_feats: torch.Tensor) -> torch.Tensor:
        """[..., C] -> features in the CLIP embedding space [..., feature_dim] (not normalised)."""
        return self.classifier_ft(self.decoder_ft(voxel_feats))

    def forward(self, tpv_list: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.voxel_features(tpv_list)
        return self.occupancy(fused), self.language(fused)
