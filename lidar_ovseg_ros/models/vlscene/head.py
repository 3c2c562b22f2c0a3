"""VLScene's `OccHead` (voxel branch): 3x3x3 conv + GroupNorm + ReLU, the SDB (MPAC diffusion
blocks + 3D ASPP), and the `Header`: trilinear x2 upsampling (align_corners=True) of the
features, LayerNorm + Linear per voxel -> (B, classes, 2X, 2Y, 2Z) logits.

The point branch (`img_feat_reduce`, `point_soft_weights`, `point_occ_mlp`) only runs with
LiDAR points in training and is not built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OccHead"]


class ASPP3D(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        h = c // 2
        self.reduce = nn.Conv3d(c, h, 1)
        self.aspp_1 = nn.Conv3d(h, h, 3, padding=1, dilation=1)
        self.aspp_2 = nn.Conv3d(h, h, 3, padding=2, dilation=2)
        self.aspp_4 = nn.Conv3d(h, h, 3, padding=4, dilation=4)
        self.fusion = nn.Conv3d(h * 3, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        x = torch.cat([self.aspp_1(x), self.aspp_2(x), self.aspp_4(x)], 1)
        return F.relu(self.fusion(x))


class MPAC(nn.Module):
    """Multi-path axis convolutions (kernels 3, 5, 7) gated by a per-axis softmax."""

    def __init__(self, c: int, kernels: tuple[int, ...] = (3, 5, 7), residual: bool = True) -> None:
        super().__init__()
        self.channel, self.residual, self.n = c, residual, len(kernels)
        self.conv_mx = nn.Conv3d(c, 3 * self.n, 1, bias=False)
        self.conv_1x1xk = nn.ModuleList()
        self.conv_1xkx1 = nn.ModuleList()
        self.conv_kx1x1 = nn.ModuleList()
        for k in kernels:
            p = k // 2
            self.conv_1x1xk.append(nn.Conv3d(c, c, (1, 1, k), padding=(0, 0, p)))
            self.conv_1xkx1.append(nn.Conv3d(c, c, (1, k, 1), padding=(0, p, 0)))
            self.conv_kx1x1.append(nn.Conv3d(c, c, (k, 1, 1), padding=(p, 0, 0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mx = self.conv_mx(x)
        b, _, d, h, w = mx.shape
        mx = torch.softmax(mx.view(b, 3, self.n, d, h, w), dim=2)
        # weights per path i and axis: [:, 0] z, [:, 1] y, [:, 2] x (official split order)
        y = None
        for i in range(self.n):
            t = mx[:, 2, i : i + 1] * F.relu(self.conv_1x1xk[i](x))
            y = t if y is None else y + t
        yy = None
        for i in range(self.n):
            t = mx[:, 1, i : i + 1] * F.relu(self.conv_1xkx1[i](y))
            yy = t if yy is None else yy + t
        z = None
        for i in range(self.n):
            t = mx[:, 0, i : i + 1] * F.relu(self.conv_kx1x1[i](yy))
            z = t if z is None else z + t
        return F.relu(z + x) if self.residual else F.relu(z)


class SDB(nn.Module):
    def __init__(self, channel: int, out_channel: int, depth: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv3d(channel, out_channel, 3, padding=1)
        self.diffusion = nn.Sequential(*[MPAC(out_channel) for _ in range(depth)])
        self.aspp = ASPP3D(out_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.diffusion(self.conv_in(x)))


class Header(nn.Module):
    def __init__(self, class_num: int, feature: int) -> None:
        super().__init__()
        self.class_num = class_num
        self.mlp_head = nn.Sequential(nn.LayerNorm(feature), nn.Linear(feature, class_num))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)
        b, c, w, length, h = up.shape
        logits = self.mlp_head(up.permute(0, 2, 3, 4, 1).reshape(b, -1, c))
        return logits.reshape(b, w, length, h, self.class_num).permute(0, 4, 1, 2, 3)


class OccHead(nn.Module):
    def __init__(
        self, in_channels: int, num_classes: int, mid: int, gn_groups: int, sdb_depth: int
    ) -> None:
        super().__init__()
        self.occ_convs = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv3d(in_channels, mid, 3, 1, 1, bias=False),
                    nn.GroupNorm(gn_groups, mid),
                    nn.ReLU(inplace=True),
                )
            ]
        )
        self.sdb = SDB(mid, mid // 2, sdb_depth)
        self.ssc_header = Header(num_classes, mid // 2)

    def forward(self, voxel_feats: torch.Tensor) -> torch.Tensor:
        return self.ssc_header(self.sdb(self.occ_convs[0](voxel_feats)))
