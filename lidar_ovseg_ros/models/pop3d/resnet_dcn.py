"""ResNet with modulated deformable convolutions (DCNv2), in plain PyTorch.

POP-3D's image backbone is mmdet's caffe-style ResNet-101 with DCNv2 in stages 3-4. Module and
parameter names follow mmdet/mmcv (`conv1`, `bn1`, `layerN.M.conv2.conv_offset`, `downsample.0`)
so the released checkpoint loads with `strict=True`. The deformable convolution samples the input
by gathering the four neighbours of every sample instead of mmcv's compiled kernel: same
bilinear rule (neighbours outside the image count as zero), same offset layout (per deform group
and kernel tap: dy, dx).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def modulated_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    deform_groups: int = 1,
) -> torch.Tensor:
    """Modulated deformable 2D convolution (DCNv2).

    x: [B, C, H, W]; offset: [B, 2 * deform_groups * kh * kw, Ho, Wo] laid out per deform group
    and kernel tap as (dy, dx); mask: [B, deform_groups * kh * kw, Ho, Wo] (already sigmoided);
    weight: [Cout, C / groups, kh, kw]. Returns [B, Cout, Ho, Wo].
    """
    b, c, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    if c != cin_g * groups:
        raise ValueError(f"input has {c} channels, weight expects {cin_g} x {groups} groups")
    if c % deform_groups:
        raise ValueError(f"{c} channels do not split into {deform_groups} deform groups")
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    k = kh * kw
    if offset.shape != (b, 2 * deform_groups * k, ho, wo):
        raise ValueError(
            f"offset shape {tuple(offset.shape)} != {(b, 2 * deform_groups * k, ho, wo)}"
        )
    if mask.shape != (b, deform_groups * k, ho, wo):
        raise ValueError(f"mask shape {tuple(mask.shape)} != {(b, deform_groups * k, ho, wo)}")

    dtype, device = x.dtype, x.device
    g, cg = deform_groups, c // deform_groups
    npos = ho * wo
    # Sampling positions of every tap before the learned offsets, in input pixel coordinates,
    # laid out [Ho*Wo, K] (output position major, tap minor).
    tap_y = (torch.arange(kh, device=device, dtype=dtype) * dh).repeat_interleave(kw)  # [K]
    tap_x = (torch.arange(kw, device=device, dtype=dtype) * dw).repeat(kh)  # [K]
    out_y = (torch.arange(ho, device=device, dtype=dtype) * sh - ph).repeat_interleave(wo)
    out_x = (torch.arange(wo, device=device, dtype=dtype) * sw - pw).repeat(ho)
    off = offset.view(b, g, k, 2, npos).transpose(2, 4)  # [B, G, L, 2, K]
    py = out_y[:, None] + tap_y[None, :] + off[:, :, :, 0]  # [B, G, L, K]
    px = out_x[:, None] + tap_x[None, :] + off[:, :, :, 1]
    m = mask.view(b, g, k, npos).transpose(2, 3)  # [B, G, L, K]

    # Bilinear sampling by gathering the four neighbours of every sample from a channel-last
    # copy of the input; a neighbour outside the image contributes zero (mmcv's rule).
    rows = x.view(b, g, cg, h, w).permute(0, 1, 3, 4, 2).reshape(b * g * h * w, cg)
    base = (torch.arange(b * g, device=device) * (h * w)).view(b, g, 1, 1)
    y0f, x0f = torch.floor(py), torch.floor(px)
    ly, lx = py - y0f, px - x0f
    y0, x0 = y0f.long(), x0f.long()
    sampled = None
    for dy, dx, wgt in (
        (0, 0, (1 - ly) * (1 - lx)),
        (0, 1, (1 - ly) * lx),
        (1, 0, ly * (1 - lx)),
        (1, 1, ly * lx),
    ):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        idx = base + yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)
        wgt = (wgt * m * inside).reshape(-1, 1)
        val = rows.index_select(0, idx.reshape(-1))
        sampled = val.mul_(wgt) if sampled is None else sampled.addcmul_(val, wgt)
    # [B, G, L, K, Cg] -> columns [B, L, K, C] (channel c = group * Cg + j)
    cols = sampled.view(b, g, npos, k, cg).permute(0, 2, 3, 1, 4).reshape(b, npos, k, c)
    # weight [Cout, C/groups, kh, kw] -> [groups, K * C/groups, Cout/groups], tap major
    wmat = weight.view(groups, cout // groups, cin_g, k).permute(0, 3, 2, 1)
    wmat = wmat.reshape(groups, k * cin_g, cout // groups)
    if groups == 1:
        out = cols.reshape(b, npos, k * c) @ wmat[0]  # [B, L, Cout]
    else:
        cols = cols.view(b, npos, k, groups, cin_g).permute(0, 3, 1, 2, 4)
        out = (cols.reshape(b, groups, npos, k * cin_g) @ wmat).permute(0, 2, 1, 3)
        out = out.reshape(b, npos, cout)
    out = out.transpose(1, 2).reshape(b, cout, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class ModulatedDeformConv2dPack(nn.Module):
    """DCNv2 layer that predicts its own offsets and mask (mmcv's `ModulatedDeformConv2dPack`).

    `conv_offset` outputs 3 * deform_groups * kh * kw channels: the first two thirds are the
    offsets, the last third the mask logits.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        self.conv_offset = nn.Conv2d(
            in_channels,
            deform_groups * 3 * kh * kw,
            kernel_size=(kh, kw),
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=True,
        )
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        # Zero offsets and mask logits at start: a plain convolution scaled by sigmoid(0) = 0.5.
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset(x)
        o1, o2, mask_logits = torch.chunk(out, 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        return modulated_deform_conv2d(
            x,
            offset,
            torch.sigmoid(mask_logits),
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.deform_groups,
        )


class Bottleneck(nn.Module):
    """mmdet's ResNet bottleneck; 'caffe' style puts the stride on the first 1x1 convolution."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        style: str = "caffe",
        with_dcn: bool = False,
        deform_groups: int = 1,
    ) -> None:
        super().__init__()
        if style not in ("caffe", "pytorch"):
            raise ValueError(f"style must be 'caffe' or 'pytorch', got {style!r}")
        s1, s2 = (stride, 1) if style == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        if with_dcn:
            self.conv2 = ModulatedDeformConv2dPack(
                planes, planes, 3, stride=s2, padding=1, deform_groups=deform_groups, bias=False
            )
        else:
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=s2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetDCN(nn.Module):
    """ResNet trunk returning the stage outputs listed in `out_indices` (mmdet naming).

    ResNet-101 is `stage_blocks=(3, 4, 23, 3)`, `base_channels=64`; POP-3D uses DCNv2 in stages
    3 and 4 and returns stages 2-4 (512, 1024, 2048 channels at strides 8, 16, 32).
    """

    def __init__(
        self,
        stage_blocks: Sequence[int] = (3, 4, 23, 3),
        base_channels: int = 64,
        in_channels: int = 3,
        out_indices: Sequence[int] = (1, 2, 3),
        stage_with_dcn: Sequence[bool] = (False, False, True, True),
        strides: Sequence[int] = (1, 2, 2, 2),
        style: str = "caffe",
        deform_groups: int = 1,
    ) -> None:
        super().__init__()
        if not (len(stage_blocks) == len(stage_with_dcn) == len(strides)):
            raise ValueError("stage_blocks, stage_with_dcn and strides need one entry per stage")
        if any(i < 0 or i >= len(stage_blocks) for i in out_indices):
            raise ValueError(f"out_indices {tuple(out_indices)} outside 0..{len(stage_blocks) - 1}")
        self.out_indices = tuple(out_indices)
        self.conv1 = nn.Conv2d(in_channels, base_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.out_channels: list[int] = []
        inplanes = base_channels
        self.res_layers: list[str] = []
        for i, (blocks, stride, dcn) in enumerate(
            zip(stage_blocks, strides, stage_with_dcn, strict=True)
        ):
            planes = base_channels * 2**i
            layers = []
            for j in range(blocks):
                downsample = None
                if j == 0 and (stride != 1 or inplanes != planes * Bottleneck.expansion):
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride, bias=False),
                        nn.BatchNorm2d(planes * Bottleneck.expansion),
                    )
                layers.append(
                    Bottleneck(
                        inplanes,
                        planes,
                        stride if j == 0 else 1,
                        downsample,
                        style=style,
                        with_dcn=bool(dcn),
                        deform_groups=deform_groups,
                    )
                )
                inplanes = planes * Bottleneck.expansion
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*layers))
            self.res_layers.append(name)
            self.out_channels.append(inplanes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
