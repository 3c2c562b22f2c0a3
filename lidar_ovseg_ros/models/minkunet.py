"""MinkUNet (the MinkowskiEngine U-Net family OpenScene distils into) on spconv.

The layer list, names and arithmetic follow OpenScene's `models/mink_unet.py` (MinkUNetBase with
MinkowskiEngine's BasicBlock): `conv0p1s1` (kernel 5) + `bn0`, four stride-2 kernel-2 convs
(`conv1p1s2` .. `conv4p8s2`) each followed by BN, ReLU and a stage of BasicBlocks (`block1` ..
`block4`), four stride-2 kernel-2 transposed convs (`convtr4p16s2` .. `convtr7p2s2`) each
followed by BN, ReLU, concatenation `[decoder, skip]` and a stage (`block5` .. `block8`), then
`final`, a 1x1 conv without bias. Module names mirror the official ones so an official state
dict maps key by key (`models/openscene_checkpoint.py` converts the kernels).

spconv mapping: MinkowskiEngine stride-1 convs keep the input coordinates, i.e. submanifold
convs (`SubMConv3d`); the stride-2 kernel-2 convs are `SparseConv3d` and the transposed ones
`SparseInverseConv3d` on the same `indice_key`, so they restore exactly the finer voxel set in
its row order. 1x1 stride-1 convs (block downsamples, `final`) are a matrix product on the
features (`Pointwise`): spconv 2.3.8's CPU 1x1 shortcut reads the weight memory in another
layout, and a 1x1 submanifold conv is a linear map anyway.

spconv 2.3.8's CPU convolutions give wrong, run-to-run different results with more than one
intra-op thread; `forward` therefore runs them with one thread on CPU (`spconv_cpu_guard`),
which is also faster than several threads for these gather/scatter kernels.

ARCHITECTURES holds the official variants (`mink_unet()` of OpenScene: 14A-D, 18A/B/D, 34A-C);
`MinkUNetConfig.tiny()` is a small one for tests.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "FEATURE_DIMS",
    "MinkUNet",
    "MinkUNetConfig",
    "spconv_cpu_guard",
]

_A = (32, 64, 128, 256, 128, 128, 96, 96)
_B = (32, 64, 128, 256, 128, 128, 128, 128)
_C = (32, 64, 128, 256, 192, 192, 128, 128)
_D = (32, 64, 128, 256, 384, 384, 384, 384)
_L14 = (1, 1, 1, 1, 1, 1, 1, 1)
_L18 = (2, 2, 2, 2, 2, 2, 2, 2)
_L34 = (2, 3, 4, 6, 2, 2, 2, 2)

# name -> (LAYERS, PLANES), exactly the classes OpenScene's `mink_unet()` accepts.
ARCHITECTURES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "MinkUNet14A": (_L14, _A),
    "MinkUNet14B": (_L14, _B),
    "MinkUNet14C": (_L14, _C),
    "MinkUNet14D": (_L14, _D),
    "MinkUNet18A": (_L18, _A),
    "MinkUNet18B": (_L18, _B),
    "MinkUNet18D": (_L18, _D),
    "MinkUNet34A": (_L34, (32, 64, 128, 256, 256, 128, 64, 64)),
    "MinkUNet34B": (_L34, (32, 64, 128, 256, 256, 128, 64, 32)),
    "MinkUNet34C": (_L34, (32, 64, 128, 256, 256, 128, 96, 96)),
}

# Output size of OpenScene's distilled 3D network per 2D feature extractor (`models/disnet.py`).
FEATURE_DIMS = {"openseg": 768, "lseg": 512}

_DOWNSAMPLINGS = 4  # four stride-2 levels: coordinates are padded to multiples of 16


@dataclass(frozen=True)
class MinkUNetConfig:
    """A MinkUNet: per-stage BasicBlock counts (`layers`) and widths (`planes`), 8 stages each.

    OpenScene's nuScenes model is `from_arch("MinkUNet18A", 768)`: input features `ones(N, 3)`.
    """

    name: str = "MinkUNet18A"
    layers: tuple[int, ...] = _L18
    planes: tuple[int, ...] = _A
    init_dim: int = 32
    in_channels: int = 3
    out_channels: int = 768
    conv0_kernel: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "planes", tuple(self.planes))
        for field_name, n in (("layers", 8), ("planes", 8)):
            value = getattr(self, field_name)
            if len(value) != n or not all(isinstance(v, int) and v >= 1 for v in value):
                raise ValueError(
                    f"MinkUNetConfig.{field_name} must be {n} positive ints, got {value!r}"
                )
        for field_name in ("init_dim", "in_channels", "out_channels", "conv0_kernel"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MinkUNetConfig.{field_name} must be an int >= 1, got {value!r}")

    @classmethod
    def from_arch(
        cls, arch: str = "MinkUNet18A", out_channels: int = 768, in_channels: int = 3
    ) -> MinkUNetConfig:
        """One of the official variants (`ARCHITECTURES`)."""
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"unknown MinkUNet architecture {arch!r}; one of {list(ARCHITECTURES)}"
            )
        layers, planes = ARCHITECTURES[arch]
        return cls(
            name=arch,
            layers=layers,
            planes=planes,
            in_channels=in_channels,
            out_channels=out_channels,
        )

    @classmethod
    def tiny(cls, out_channels: int = 32) -> MinkUNetConfig:
        """A small MinkUNet14-like network (tests, the tiny profile); same structure."""
        return cls(
            name="MinkUNetTiny",
            layers=_L14,
            planes=(8, 16, 16, 16, 16, 16, 8, 8),
            init_dim=8,
            out_channels=out_channels,
        )


@contextlib.contextmanager
def spconv_cpu_guard(device: torch.device | str) -> Iterator[None]:
    """Run the body with one intra-op thread when `device` is the CPU (spconv 2.3.8's CPU
    kernels race with more threads). The setting is per calling thread; restored on exit."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before > 1:
            torch.set_num_threads(before)


class BatchNorm(nn.Module):
    """MinkowskiBatchNorm: `BatchNorm1d` on the features, stored under `.bn` as in ME."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(channels, eps=1e-5, momentum=0.1)

    def forward(self, x):  # SparseConvTensor -> SparseConvTensor
        return x.replace_feature(self.bn(x.features))


class Pointwise(nn.Module):
    """A 1x1x1 stride-1 convolution without bias: `features @ weight.T`, weight (out, in)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return x.replace_feature(F.linear(x.features, self.weight))


def _relu(x):
    return x.replace_feature(F.relu(x.features))


def _subm(in_c: int, out_c: int, kernel: int, key: str) -> nn.Module:
    import spconv.pytorch as spconv

    return spconv.SubMConv3d(in_c, out_c, kernel, stride=1, bias=False, indice_key=key)


class BasicBlock(nn.Module):
    """MinkowskiEngine's BasicBlock: conv3-BN-ReLU-conv3-BN + (downsampled) input, ReLU."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, indice_key: str, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _subm(inplanes, planes, 3, indice_key)
        self.norm1 = BatchNorm(planes)
        self.conv2 = _subm(planes, planes, 3, indice_key)
        self.norm2 = BatchNorm(planes)
        self.downsample = downsample

    def forward(self, x):
        out = _relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return out.replace_feature(F.relu(out.features + residual.features))


class MinkUNet(nn.Module):
    """The network of `MinkUNetConfig`; `forward(features [M, C], coords [M, 3])` -> [M, D]."""

    def __init__(self, config: MinkUNetConfig) -> None:
        super().__init__()
        import spconv.pytorch as spconv

        self.config = config
        planes, layers = config.planes, config.layers
        self.inplanes = config.init_dim
        self.conv0p1s1 = _subm(config.in_channels, self.inplanes, config.conv0_kernel, "subm1k")
        self.bn0 = BatchNorm(self.inplanes)

        def down(level: int) -> nn.Module:
            return spconv.SparseConv3d(
                self.inplanes, self.inplanes, 2, stride=2, bias=False, indice_key=f"down{level}"
            )

        def up(out_c: int, level: int) -> nn.Module:
            return spconv.SparseInverseConv3d(
                self.inplanes, out_c, 2, bias=False, indice_key=f"down{level}"
            )

        self.conv1p1s2 = down(1)
        self.bn1 = BatchNorm(self.inplanes)
        self.block1 = self._make_layer(planes[0], layers[0], "subm2")
        self.conv2p2s2 = down(2)
        self.bn2 = BatchNorm(self.inplanes)
        self.block2 = self._make_layer(planes[1], layers[1], "subm4")
        self.conv3p4s2 = down(4)
        self.bn3 = BatchNorm(self.inplanes)
        self.block3 = self._make_layer(planes[2], layers[2], "subm8")
        self.conv4p8s2 = down(8)
        self.bn4 = BatchNorm(self.inplanes)
        self.block4 = self._make_layer(planes[3], layers[3], "subm16")

        self.convtr4p16s2 = up(planes[4], 8)
        self.bntr4 = BatchNorm(planes[4])
        self.inplanes = planes[4] + planes[2] * BasicBlock.expansion
        self.block5 = self._make_layer(planes[4], layers[4], "subm8")
        self.convtr5p8s2 = up(planes[5], 4)
        self.bntr5 = BatchNorm(planes[5])
        self.inplanes = planes[5] + planes[1] * BasicBlock.expansion
        self.block6 = self._make_layer(planes[5], layers[5], "subm4")
        self.convtr6p4s2 = up(planes[6], 2)
        self.bntr6 = BatchNorm(planes[6])
        self.inplanes = planes[6] + planes[0] * BasicBlock.expansion
        self.block7 = self._make_layer(planes[6], layers[6], "subm2")
        self.convtr7p2s2 = up(planes[7], 1)
        self.bntr7 = BatchNorm(planes[7])
        self.inplanes = planes[7] + config.init_dim
        self.block8 = self._make_layer(planes[7], layers[7], "subm1")
        self.final = Pointwise(planes[7], config.out_channels)

    def _make_layer(self, planes: int, blocks: int, indice_key: str) -> nn.Sequential:
        downsample = None
        if self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                Pointwise(self.inplanes, planes * BasicBlock.expansion),
                BatchNorm(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, indice_key, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes, indice_key) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    def forward(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """`features` [M, in_channels]; `coords` [M, 3] non-negative integer voxel coordinates
        (distinct; the voxelizer's output) -> per-voxel features [M, out_channels], same rows."""
        import spconv.pytorch as spconv

        if coords.ndim != 2 or coords.shape[1] != 3 or features.shape[0] != coords.shape[0]:
            raise ValueError(
                f"need features [M, C] and coords [M, 3], got {tuple(features.shape)} and "
                f"{tuple(coords.shape)}"
            )
        if features.shape[1] != self.config.in_channels:
            raise ValueError(
                f"{self.config.name} takes {self.config.in_channels} input channels, got "
                f"{features.shape[1]}"
            )
        m = coords.shape[0]
        if m == 0:
            return features.new_zeros((0, self.config.out_channels))
        coords = coords.to(device=features.device, dtype=torch.int32)
        if int(coords.min()) < 0:
            raise ValueError("voxel coordinates must be >= 0 (subtract the minimum first)")
        step = 2**_DOWNSAMPLINGS
        extent = coords.max(0).values.tolist()
        shape = [int(math.ceil((e + 1) / step) * step) for e in extent]
        indices = torch.cat([coords.new_zeros((m, 1)), coords], 1).contiguous()
        with spconv_cpu_guard(features.device):
            x = spconv.SparseConvTensor(features, indices, shape, batch_size=1)
            return self._forward(x)

    def _forward(self, x) -> torch.Tensor:
        out_p1 = _relu(self.bn0(self.conv0p1s1(x)))
        out = _relu(self.bn1(self.conv1p1s2(out_p1)))
        out_b1p2 = self.block1(out)
        out = _relu(self.bn2(self.conv2p2s2(out_b1p2)))
        out_b2p4 = self.block2(out)
        out = _relu(self.bn3(self.conv3p4s2(out_b2p4)))
        out_b3p8 = self.block3(out)
        out = _relu(self.bn4(self.conv4p8s2(out_b3p8)))
        out = self.block4(out)

        out = _relu(self.bntr4(self.convtr4p16s2(out)))
        out = self.block5(_cat(out, out_b3p8))
        out = _relu(self.bntr5(self.convtr5p8s2(out)))
        out = self.block6(_cat(out, out_b2p4))
        out = _relu(self.bntr6(self.convtr6p4s2(out)))
        out = self.block7(_cat(out, out_b1p2))
        out = _relu(self.bntr7(self.convtr7p2s2(out)))
        out = self.block8(_cat(out, out_p1))
        return self.final(out).features


def _cat(decoder, skip):
    """`ME.cat(decoder, skip)`: channels concatenated; the inverse conv returned the skip's rows
    in the skip's order, which is checked (a mismatch would silently mix voxels)."""
    if decoder.indices.shape != skip.indices.shape:
        raise RuntimeError("decoder and skip voxel sets differ; the indice keys are mismatched")
    return decoder.replace_feature(torch.cat([decoder.features, skip.features], 1))
