"""VLScene's view transformer (`ViewTransformerLiftSplatShootVoxel`, inference path): BEVDepth's
camera-aware DepthNet, a GwcNet stereo volume warped from disparity to depth, the stereo/LSS
volume interaction, and the LSS lift + splat (sum-pooling) onto the 128x128x16 grid.

Module names follow the official ones so `img_view_transformer.*` checkpoint keys load as they
are. The training-only image-segmentation / CLIP-distillation parts (`clip_fusion`,
`img_clip_fusion`, `img_seg_head`) are not built. mmcv's DCN (`DeformConv2dPack`) is
re-stated in plain PyTorch (bilinear sampling with zeros outside, offsets (dy, dx) per tap).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VLSceneConfig

__all__ = ["DeformConv2dPack", "ViewTransformerLSSVoxel", "build_gwc_volume", "warp_to_depth"]


def _gn(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels)


class DeformConv2dPack(nn.Module):
    """mmcv `DeformConv2dPack` (bias-free deformable conv with its own offset conv)."""

    def __init__(self, cin: int, cout: int, k: int = 3, padding: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.k, self.padding, self.groups = k, padding, groups
        self.weight = nn.Parameter(torch.empty(cout, cin // groups, k, k))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.conv_offset = nn.Conv2d(cin, 2 * k * k, k, 1, padding, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.conv_offset(x)
        b, c, h, w = x.shape
        k, p, g = self.k, self.padding, self.groups
        ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1) - p
        xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) - p
        cols = []
        for i in range(k):
            for j in range(k):
                t = i * k + j
                py = ys + i + offset[:, 2 * t]
                px = xs + j + offset[:, 2 * t + 1]
                grid = torch.stack((2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1), -1)
                cols.append(
                    F.grid_sample(
                        x, grid, mode="bilinear", padding_mode="zeros", align_corners=True
                    )
                )
        col = torch.stack(cols, 2).view(b, g, c // g, k * k, h, w)
        wgt = self.weight.view(g, -1, c // g, k * k)
        out = torch.einsum("bgckhw,gock->bgohw", col, wgt)
        return out.reshape(b, -1, h, w)


class BasicBlock(nn.Module):
    """mmdet ResNet BasicBlock (conv-BN-ReLU-conv-BN + identity, ReLU)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class _ASPPModule(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, padding: int, dilation: int) -> None:
        super().__init__()
        self.atrous_conv = nn.Conv2d(cin, cout, k, 1, padding, dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    def __init__(self, cin: int, mid: int, gn_groups: int) -> None:
        super().__init__()
        self.aspp1 = _ASPPModule(cin, mid, 1, 0, 1)
        self.aspp2 = _ASPPModule(cin, mid, 3, 6, 6)
        self.aspp3 = _ASPPModule(cin, mid, 3, 12, 12)
        self.aspp4 = _ASPPModule(cin, mid, 3, 18, 18)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(cin, mid, 1, stride=1, bias=False),
            _gn(gn_groups, mid),
            nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(mid * 5, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x)
        x5 = self.global_avg_pool(x)
        x5 = F.interpolate(x5, size=x4.shape[2:], mode="bilinear", align_corners=True)
        x = torch.cat((x1, x2, x3, x4, x5), 1)
        return F.relu(self.bn1(self.conv1(x)))  # dropout: identity at inference


class Mlp(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cin, hidden)
        self.fc2 = nn.Linear(hidden, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class SELayer(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, c, 1, bias=True)
        self.conv_expand = nn.Conv2d(c, c, 1, bias=True)

    def forward(self, x: torch.Tensor, x_se: torch.Tensor) -> torch.Tensor:
        return x * self.conv_expand(F.relu(self.conv_reduce(x_se))).sigmoid()


class DepthNet(nn.Module):
    """BEVDepth's DepthNet: depth logits (D) then context features (numC_Trans)."""

    def __init__(
        self, cin: int, mid: int, context: int, depth: int, cam: int, cfg: VLSceneConfig
    ) -> None:
        super().__init__()
        g = cfg.view_gn_groups
        self.reduce_conv = nn.Sequential(
            nn.Conv2d(cin, mid, 3, 1, 1), _gn(g, mid), nn.ReLU(inplace=True)
        )
        self.context_conv = nn.Conv2d(mid, context, 1)
        self.bn = _gn(g, cam)
        self.depth_mlp = Mlp(cam, mid, mid)
        self.depth_se = SELayer(mid)
        self.context_mlp = Mlp(cam, mid, mid)
        self.context_se = SELayer(mid)
        self.depth_conv = nn.Sequential(
            BasicBlock(mid),
            BasicBlock(mid),
            BasicBlock(mid),
            ASPP(mid, cfg.aspp_mid_channels or mid, g),
            DeformConv2dPack(mid, mid, 3, 1, groups=cfg.dcn_groups),
            nn.Conv2d(mid, depth, 1),
        )

    def forward(self, x: torch.Tensor, mlp_input: torch.Tensor) -> torch.Tensor:
        mlp_input = self.bn(mlp_input.reshape(-1, mlp_input.shape[-1]))
        x = self.reduce_conv(x)
        context = self.context_conv(
            self.context_se(x, self.context_mlp(mlp_input)[..., None, None])
        )
        depth = self.depth_conv(self.depth_se(x, self.depth_mlp(mlp_input)[..., None, None]))
        return torch.cat([depth, context], 1)


class StereoFeatureNet(nn.Module):
    """Official `stereofeature_net`: camera-aware features for the cost volume (no mlp norm)."""

    def __init__(self, cin: int, mid: int, out: int, cam: int, gn_groups: int) -> None:
        super().__init__()
        self.reduce_conv = nn.Sequential(
            nn.Conv2d(cin, mid, 3, 1, 1), _gn(gn_groups, mid), nn.ReLU()
        )
        self.depth_mlp = Mlp(cam, mid, mid)
        self.depth_se = SELayer(mid)
        self.depth_conv = nn.Sequential(nn.Conv2d(mid, out, 1))

    def forward(self, x: torch.Tensor, mlp_input: torch.Tensor) -> torch.Tensor:
        mlp_input = mlp_input.reshape(-1, mlp_input.shape[-1])
        x = self.reduce_conv(x)
        return self.depth_conv(self.depth_se(x, self.depth_mlp(mlp_input)[..., None, None]))


def convbn_3d(cin: int, cout: int, k: int, stride: int, pad: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, k, stride, pad, bias=False), _gn(groups, cout))


class Hourglass(nn.Module):
    def __init__(self, c: int, g: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(convbn_3d(c, c * 2, 3, 2, 1, g), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(convbn_3d(c * 2, c * 2, 3, 1, 1, g), nn.ReLU(inplace=True))
        self.conv3 = nn.Sequential(convbn_3d(c * 2, c * 4, 3, 2, 1, g), nn.ReLU(inplace=True))
        self.conv4 = nn.Sequential(convbn_3d(c * 4, c * 4, 3, 1, 1, g), nn.ReLU(inplace=True))
        self.conv5 = nn.Sequential(
            nn.ConvTranspose3d(c * 4, c * 2, 3, padding=1, output_padding=1, stride=2, bias=False),
            nn.BatchNorm3d(c * 2),
        )
        self.conv6 = nn.Sequential(
            nn.ConvTranspose3d(c * 2, c, 3, padding=1, output_padding=1, stride=2, bias=False),
            nn.BatchNorm3d(c),
        )
        self.redir1 = convbn_3d(c, c, 1, 1, 0, g)
        self.redir2 = convbn_3d(c * 2, c * 2, 1, 1, 0, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv2 = self.conv2(self.conv1(x))
        conv4 = self.conv4(self.conv3(conv2))
        conv5 = F.relu(self.conv5(conv4) + self.redir2(conv2))
        return F.relu(self.conv6(conv5) + self.redir1(x))


def build_gwc_volume(
    ref: torch.Tensor, tgt: torch.Tensor, maxdisp: int, groups: int
) -> torch.Tensor:
    """GwcNet group-wise correlation volume (B, groups, maxdisp, H, W); zero where the right
    view has no pixel at that disparity."""
    b, c, h, w = ref.shape
    if c % groups:
        raise ValueError(f"{c} channels are not divisible into {groups} groups")
    vol = ref.new_zeros((b, groups, maxdisp, h, w))
    for i in range(maxdisp):
        if i >= w:
            break
        a = ref[:, :, :, i:]
        t = tgt[:, :, :, : w - i]
        vol[:, :, i, :, i:] = (a * t).view(b, groups, c // groups, h, w - i).mean(2)
    return vol


def warp_to_depth(volume: torch.Tensor, calib: torch.Tensor, scale: float) -> torch.Tensor:
    """The official `warp`: resample a disparity volume (B, C, D, H, W) at depth bins
    d = 1..D, i.e. at disparity calib / (scale * d) feature pixels (calib = fx * baseline,
    scale = downsample * depth step; 8 * 0.5 = 4 officially), linear along disparity, zero
    outside (grid_sample, align_corners=True)."""
    x = volume.transpose(1, 3).transpose(2, 4)  # B, H, W, C, D
    b, h, w, c, d = x.shape
    x = x.reshape(b, -1, c, d)
    steps = torch.arange(1, 1 + d, device=x.device, dtype=x.dtype)
    xx = (calib.to(x.dtype) / scale)[:, None] / steps[None, :]  # B, D
    xx = xx.view(b, 1, d, 1).expand(b, c, d, 1)
    yy = torch.arange(c, device=x.device, dtype=x.dtype).view(1, c, 1, 1).expand(b, c, d, 1)
    grid = torch.cat((2.0 * xx / max(d - 1, 1) - 1.0, 2.0 * yy / max(c - 1, 1) - 1.0), -1)
    out = F.grid_sample(x, grid, align_corners=True)
    return out.view(b, h, w, c, d).transpose(1, 3).transpose(2, 4).contiguous()


class GwcNetVolumeEncoder(nn.Module):
    def __init__(self, cfg: VLSceneConfig, maxdisp: int) -> None:
        super().__init__()
        c, g = cfg.stereo_channels, cfg.view_gn_groups
        self.maxdisp = maxdisp
        self.num_groups = cfg.stereo_groups
        self.warp_scale = cfg.downsample * cfg.dbound[2]
        self.feature_withcam = StereoFeatureNet(
            cfg.fpn_out_channels, cfg.fpn_out_channels, cfg.stereo_feature_channels,
            cfg.cam_channels, g,
        )  # fmt: skip
        self.dres0 = nn.Sequential(
            convbn_3d(cfg.stereo_groups, c, 3, 1, 1, g),
            nn.ReLU(inplace=True),
            convbn_3d(c, c, 3, 1, 1, g),
            nn.ReLU(inplace=True),
        )
        self.dres1 = nn.Sequential(
            convbn_3d(c, c, 3, 1, 1, g), nn.ReLU(inplace=True), convbn_3d(c, c, 3, 1, 1, g)
        )
        self.dres2 = Hourglass(c, g)
        self.dres3 = Hourglass(c, g)
        self.dres4 = Hourglass(c, g)
        self.classif3_1 = nn.Sequential(convbn_3d(c, c, 3, 1, 1, g), nn.ReLU(inplace=True))
        self.classif3_2 = nn.Sequential(nn.Conv3d(c, 1, 3, padding=1, stride=1, bias=False))

    def forward(
        self,
        left: torch.Tensor,
        right: torch.Tensor,
        mlp_left: torch.Tensor,
        mlp_right: torch.Tensor,
        calib: torch.Tensor,
    ) -> torch.Tensor:
        b = left.shape[0]
        fea = self.feature_withcam(torch.cat([left, right], 0), torch.cat([mlp_left, mlp_right], 0))
        gwc = build_gwc_volume(fea[:b], fea[b:], self.maxdisp, self.num_groups)
        volume = warp_to_depth(gwc, calib, self.warp_scale)
        cost0 = self.dres0(volume)
        cost0 = self.dres1(cost0) + cost0
        out3 = self.dres4(self.dres3(self.dres2(cost0)))
        cost3 = self.classif3_2(self.classif3_1(out3)).squeeze(1)
        return F.softmax(cost3, dim=1)


class VolumeAttention(nn.Module):
    """Official `attention(in_dim=1)`: attention over pixels between two (B,1,D,H,W) volumes,
    weighted by the query volume's per-pixel confidence."""

    def __init__(self, in_dim: int = 1) -> None:
        super().__init__()
        self.query_conv = nn.Conv3d(in_dim, in_dim, 1)
        self.key_conv = nn.Conv3d(in_dim, in_dim, 1)
        self.value_conv = nn.Conv3d(in_dim, in_dim, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = kv.shape
        confidence = F.softmax(q, dim=2).max(dim=2)[0].view(b, -1, w * h)
        proj_query = self.query_conv(q).view(b, -1, w * h).permute(0, 2, 1)
        proj_key = self.key_conv(kv).view(b, -1, w * h)
        attn = torch.softmax(torch.bmm(proj_query, proj_key), dim=-1)
        attn = confidence * attn
        proj_value = self.value_conv(kv).view(b, -1, w * h)
        out = torch.bmm(proj_value, attn.permute(0, 2, 1)).view(b, c, d, h, w)
        return self.gamma * out + kv


class CA3D(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv3d(c, c, 3, 1, 1), nn.GELU(), nn.GroupNorm(1, c))
        self.conv2 = nn.Sequential(
            nn.Conv3d(c, c // 8, 1), nn.GELU(), nn.Conv3d(c // 8, c, 1), nn.GELU()
        )
        self.conv = nn.Sequential(nn.Conv3d(c, c, 3, 1, 1), nn.GELU(), nn.GroupNorm(1, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = self.conv1(x)
        weight = self.conv2(F.adaptive_avg_pool3d(data, 1)).sigmoid()
        return self.conv(weight * data)


class ScaledResidual(nn.Module):
    """Official `Residual`: alpha * fn(x) + x with a learnt scalar alpha."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.fn(x) + x


class VolumeInteraction(nn.Module):
    def __init__(self, c: int, g: int) -> None:
        super().__init__()
        self.redir1 = nn.Conv3d(2, c, 3, 1, 1)
        self.dres1 = Hourglass(c, g)
        self.redir2 = nn.Conv3d(c, 1, 3, 1, 1)
        self.lss2stereo = VolumeAttention(1)
        self.stereo2lss = VolumeAttention(1)
        self.CA3D = ScaledResidual(CA3D(c))

    def forward(self, stereo: torch.Tensor, lss: torch.Tensor) -> torch.Tensor:
        stereo, lss = stereo.unsqueeze(1), lss.unsqueeze(1)
        a = self.lss2stereo(stereo, lss)
        s = self.stereo2lss(lss, stereo)
        data = self.CA3D(self.dres1(F.relu(self.redir1(torch.cat((a, s), 1)))))
        return F.softmax(F.relu(self.redir2(data)).squeeze(1), dim=1)


class ViewTransformerLSSVoxel(nn.Module):
    """Lift the left image's features with the stereo-refined depth distribution and
    sum-pool them into the LSS voxel grid -> (B, numC_Trans, X, Y, Z)."""

    def __init__(self, cfg: VLSceneConfig) -> None:
        super().__init__()
        gc = cfg.grid_config
        rows = [gc["xbound"], gc["ybound"], gc["zbound"]]
        self.register_buffer("dx", torch.Tensor([r[2] for r in rows]))
        self.register_buffer("bx", torch.Tensor([r[0] + r[2] / 2.0 for r in rows]))
        self.register_buffer("nx", torch.Tensor([(r[1] - r[0]) / r[2] for r in rows]))
        self.downsample = cfg.downsample
        self.input_size = cfg.input_size
        self.register_buffer("frustum", self._create_frustum(gc["dbound"]))
        self.D = self.frustum.shape[0]
        self.numC_input = cfg.fpn_out_channels
        self.numC_Trans = cfg.num_trans
        self.depth_net = DepthNet(
            self.numC_input, self.numC_input, self.numC_Trans, self.D, cfg.cam_channels, cfg
        )
        self.stereo_volume_net = GwcNetVolumeEncoder(cfg, self.D)
        self.volume_interaction = VolumeInteraction(cfg.stereo_channels, cfg.view_gn_groups)

    def _create_frustum(self, dbound: list[float]) -> torch.Tensor:
        oh, ow = self.input_size
        fh, fw = oh // self.downsample, ow // self.downsample
        ds = torch.arange(*dbound, dtype=torch.float).view(-1, 1, 1).expand(-1, fh, fw)
        d = ds.shape[0]
        xs = (
            torch.linspace(0, ow - 1, fw, dtype=torch.float, device=ds.device)
            .view(1, 1, fw)
            .expand(d, fh, fw)
        )
        ys = (
            torch.linspace(0, oh - 1, fh, dtype=torch.float, device=ds.device)
            .view(1, fh, 1)
            .expand(d, fh, fw)
        )
        return torch.stack((xs, ys, ds), -1)

    @staticmethod
    def get_mlp_input(
        rot: torch.Tensor,
        tran: torch.Tensor,
        intrin: torch.Tensor,
        post_rot: torch.Tensor,
        post_tran: torch.Tensor,
        bda: torch.Tensor,
    ) -> torch.Tensor:
        """KITTI (3x4 intrinsics) camera vector: 18 values + the 3x4 sensor-to-ego matrix."""
        b, n = rot.shape[:2]
        bda = bda.view(b, 1, *bda.shape[-2:]).repeat(1, n, 1, 1)
        if intrin.shape[-1] != 4:
            raise ValueError("VLScene's SemanticKITTI model takes 3x4 projection matrices")
        mlp = torch.stack(
            [
                intrin[:, :, 0, 0], intrin[:, :, 1, 1], intrin[:, :, 0, 2], intrin[:, :, 1, 2],
                intrin[:, :, 0, 3], intrin[:, :, 1, 3], intrin[:, :, 2, 3],
                post_rot[:, :, 0, 0], post_rot[:, :, 0, 1], post_tran[:, :, 0],
                post_rot[:, :, 1, 0], post_rot[:, :, 1, 1], post_tran[:, :, 1],
                bda[:, :, 0, 0], bda[:, :, 0, 1], bda[:, :, 1, 0], bda[:, :, 1, 1],
                bda[:, :, 2, 2],
            ],
            dim=-1,
        )  # fmt: skip
        if bda.shape[-1] == 4:
            mlp = torch.cat((mlp, bda[:, :, :3, -1]), dim=2)
        sensor2ego = torch.cat([rot, tran.reshape(b, n, 3, 1)], dim=-1).reshape(b, n, -1)
        return torch.cat([mlp, sensor2ego], dim=-1)

    def get_geometry(
        self,
        rots: torch.Tensor,
        trans: torch.Tensor,
        intrins: torch.Tensor,
        post_rots: torch.Tensor,
        post_trans: torch.Tensor,
        bda: torch.Tensor,
    ) -> torch.Tensor:
        b, n, _ = trans.shape
        pts = self.frustum - post_trans.view(b, n, 1, 1, 1, 3)
        pts = torch.inverse(post_rots).view(b, n, 1, 1, 1, 3, 3).matmul(pts.unsqueeze(-1))
        pts = torch.cat((pts[..., :2, :] * pts[..., 2:3, :], pts[..., 2:3, :]), 5)
        if intrins.shape[3] == 4:  # KITTI: the projection's 4th column is removed first
            pts = pts - intrins[:, :, :3, 3].view(b, n, 1, 1, 1, 3, 1)
            intrins = intrins[:, :, :3, :3]
        combine = rots.matmul(torch.inverse(intrins))
        pts = combine.view(b, n, 1, 1, 1, 3, 3).matmul(pts).squeeze(-1)
        pts = pts + trans.view(b, n, 1, 1, 1, 3)
        return bda.view(b, 1, 1, 1, 1, 3, 3).matmul(pts.unsqueeze(-1)).squeeze(-1)

    def voxel_pooling(self, geom: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Sum the lifted features per voxel (bev_pool); indices truncate toward zero like
        the official `.long()`. Returns (B, C, X, Y, Z)."""
        b, n, d, h, w, c = x.shape
        npr = b * n * d * h * w
        nx = self.nx.to(torch.long)
        x = x.reshape(npr, c)
        idx = ((geom - (self.bx - self.dx / 2.0)) / self.dx).long().view(npr, 3)
        batch = torch.arange(b, device=x.device).repeat_interleave(npr // b)
        kept = (
            (idx[:, 0] >= 0) & (idx[:, 0] < self.nx[0])
            & (idx[:, 1] >= 0) & (idx[:, 1] < self.nx[1])
            & (idx[:, 2] >= 0) & (idx[:, 2] < self.nx[2])
        )  # fmt: skip
        x, idx, batch = x[kept], idx[kept], batch[kept]
        nxx, nxy, nxz = (int(v) for v in nx)
        flat = ((batch * nxx + idx[:, 0]) * nxy + idx[:, 1]) * nxz + idx[:, 2]
        out = x.new_zeros((b * nxx * nxy * nxz, c))
        out.index_add_(0, flat, x)
        return out.view(b, nxx, nxy, nxz, c).permute(0, 4, 1, 2, 3).contiguous()

    def forward(
        self,
        feat_left: torch.Tensor,
        feat_right: torch.Tensor,
        geo_left: list[torch.Tensor],
        mlp_right: torch.Tensor,
        calib: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feat_*: (B, C, H, W); geo_left: rots, trans, intrins, post_rots, post_trans, bda,
        mlp_input of the left camera (N = 1). Returns voxel features and the depth."""
        rots, trans, intrins, post_rots, post_trans, bda, mlp_left = geo_left
        stereo = self.stereo_volume_net(feat_left, feat_right, mlp_left, mlp_right, calib)
        b, _, h, w = feat_left.shape
        x = self.depth_net(feat_left, mlp_left)
        depth_prob = x[:, : self.D].softmax(dim=1)
        img_feat = x[:, self.D : self.D + self.numC_Trans]
        depth_prob = self.volume_interaction(stereo, depth_prob)
        volume = depth_prob.unsqueeze(1) * img_feat.unsqueeze(2)
        volume = volume.view(b, 1, -1, self.D, h, w).permute(0, 1, 3, 4, 5, 2)
        geom = self.get_geometry(rots, trans, intrins, post_rots, post_trans, bda)
        return self.voxel_pooling(geom, volume), depth_prob
