"""VLScene's image encoder: RepViT (official `occupancy/backbones/repvit.py` module names, so
the mmcv checkpoint's `img_backbone.*` keys load as they are) and mmdet's FPN (`img_neck.*`).

timm also implements RepViT, but under other names (`stem`/`stages`) with stage outputs only
(the official model taps single blocks: out_indices 6, 14, 50, 54) and it needs torchvision;
the blocks here follow the official layout, and the squeeze-excite module is timm's
`SEModule` re-stated (`fc1`/`fc2` with bias, ReLU, sigmoid, channels rounded to 8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FPN", "RepViT", "make_divisible"]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """The official `_make_divisible` (MobileNet rounding with the 0.9 guard)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _se_channels(channels: int, ratio: float = 0.25, divisor: int = 8) -> int:
    # timm make_divisible(channels * ratio, 8, round_limit=0.)
    v = channels * ratio
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """timm `SqueezeExcite(channels, 0.25)`: mean -> fc1 -> ReLU -> fc2 -> sigmoid gate."""

    def __init__(self, channels: int, ratio: float = 0.25) -> None:
        super().__init__()
        rd = _se_channels(channels, ratio)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * s.sigmoid()


class Conv2dBN(nn.Sequential):
    """Official `Conv2d_BN`: `c` (no bias) then `bn`."""

    def __init__(
        self, a: int, b: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, 1, groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))


class Residual(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class RepVGGDW(nn.Module):
    def __init__(self, ed: int) -> None:
        super().__init__()
        self.conv = Conv2dBN(ed, ed, 3, 1, 1, groups=ed)
        self.conv1 = nn.Conv2d(ed, ed, 1, 1, 0, groups=ed)
        self.bn = nn.BatchNorm2d(ed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn((self.conv(x) + self.conv1(x)) + x)


class RepViTBlock(nn.Module):
    def __init__(self, inp: int, hidden: int, oup: int, k: int, stride: int, use_se: bool) -> None:
        super().__init__()
        if hidden != 2 * inp:
            raise ValueError("RepViT blocks expand by 2")
        if stride == 2:
            self.token_mixer = nn.Sequential(
                Conv2dBN(inp, inp, k, stride, (k - 1) // 2, groups=inp),
                SqueezeExcite(inp) if use_se else nn.Identity(),
                Conv2dBN(inp, oup, 1, 1, 0),
            )
            mid = 2 * oup
        else:
            if inp != oup:
                raise ValueError("a stride-1 RepViT block keeps its channels")
            self.token_mixer = nn.Sequential(
                RepVGGDW(inp), SqueezeExcite(inp) if use_se else nn.Identity()
            )
            mid = hidden
        # the official code uses GELU for both values of the HS flag
        self.channel_mixer = Residual(
            nn.Sequential(Conv2dBN(oup, mid, 1, 1, 0), nn.GELU(), Conv2dBN(mid, oup, 1, 1, 0))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class RepViT(nn.Module):
    """`features[0]` = patch embedding (stride 4), then one block per config row; the outputs
    of the blocks whose `features` index is in `out_indices` are returned."""

    def __init__(
        self, cfgs: tuple[tuple[int, int, int, int, int, int], ...], out_indices: tuple[int, ...]
    ) -> None:
        super().__init__()
        c0 = cfgs[0][2]
        layers: list[nn.Module] = [
            nn.Sequential(Conv2dBN(3, c0 // 2, 3, 2, 1), nn.GELU(), Conv2dBN(c0 // 2, c0, 3, 2, 1))
        ]
        inp = c0
        self.out_channels: list[int] = []
        for k, t, c, se, _hs, s in cfgs:
            oup = make_divisible(c, 8)
            layers.append(RepViTBlock(inp, make_divisible(inp * t, 8), oup, k, s, bool(se)))
            inp = oup
        self.features = nn.ModuleList(layers)
        self.out_indices = tuple(out_indices)
        chans = [c0] + [make_divisible(r[2], 8) for r in cfgs]
        self.out_channels = [chans[i] for i in self.out_indices]
        self.last = max(self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, f in enumerate(self.features):
            if i > self.last:
                break
            x = f(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


class ConvModule(nn.Module):
    """mmcv ConvModule without norm/act: a conv with bias stored under `.conv`."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FPN(nn.Module):
    """mmdet 2.x FPN with `start_level`, `add_extra_convs='on_output'`,
    `relu_before_extra_convs=True`, nearest top-down upsampling to the lower level's size.
    VLScene uses only the first output; `forward(..., first_only=True)` skips the extra
    level's conv, which does not influence it."""

    def __init__(
        self, in_channels: list[int], out_channels: int, start_level: int, num_outs: int
    ) -> None:
        super().__init__()
        self.start_level = start_level
        self.num_outs = num_outs
        used = in_channels[start_level:]
        self.lateral_convs = nn.ModuleList([ConvModule(c, out_channels, 1) for c in used])
        fpn = [ConvModule(out_channels, out_channels, 3, 1, 1) for _ in used]
        for _ in range(num_outs - len(used)):
            fpn.append(ConvModule(out_channels, out_channels, 3, 2, 1))
        self.fpn_convs = nn.ModuleList(fpn)
        self.num_used = len(used)

    def forward(self, inputs: list[torch.Tensor], first_only: bool = False) -> list[torch.Tensor]:
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(self.num_used - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
            )
        if first_only:
            return [self.fpn_convs[0](laterals[0])]
        outs = [self.fpn_convs[i](laterals[i]) for i in range(self.num_used)]
        for i in range(self.num_used, self.num_outs):
            # mmdet: no ReLU before the first extra conv, ReLU before the following ones
            src = outs[-1] if i == self.num_used else F.relu(outs[-1])
            outs.append(self.fpn_convs[i](src))
        return outs
