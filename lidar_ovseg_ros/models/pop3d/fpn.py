"""Feature pyramid neck with mmdet's parameter names (`lateral_convs.i.conv`, `fpn_convs.i.conv`).

POP-3D's config: inputs of 512/1024/2048 channels, 256 out, 4 outputs, the extra level made by a
stride-2 3x3 convolution on the last pyramid output ('on_output'). No norms, no activations on
the convolutions; `relu_before_extra_convs` only affects extra levels after the first one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvModule(nn.Module):
    """A bare convolution wrapped so the parameter is named `<module>.conv.weight` like mmcv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FPN(nn.Module):
    def __init__(
        self,
        in_channels: Sequence[int] = (512, 1024, 2048),
        out_channels: int = 256,
        num_outs: int = 4,
        relu_before_extra_convs: bool = True,
    ) -> None:
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs={num_outs} is fewer than the {len(in_channels)} inputs")
        self.num_ins = len(in_channels)
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3) for _ in range(self.num_ins)
        )
        for _ in range(num_outs - self.num_ins):
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, stride=2))

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(inputs) != self.num_ins:
            raise ValueError(f"FPN expects {self.num_ins} feature maps, got {len(inputs)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs, strict=True)]
        for i in range(self.num_ins - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        outs = [self.fpn_convs[i](laterals[i]) for i in range(self.num_ins)]
        for i in range(self.num_ins, self.num_outs):
            src = outs[-1]
            if i > self.num_ins and self.relu_before_extra_convs:
                src = F.relu(src)
            outs.append(self.fpn_convs[i](src))
        return outs
