"""VLScene's Geometric-Semantic Sparse Awareness module (official `image2bev/GSSA.py`) on
spconv: a dense 1x1x1 + 7x7x7/3x3x3 residual "pre_conv", the non-zero voxels to a sparse
tensor, a Cylinder3D-style asymmetric sparse U-Net (two stride-2 levels), the reconstruction
block, and back to a dense (B, 4*init, X, Y, Z) volume.

Two official details are kept on purpose: `ReconBlock` applies its second and third batch norms
and sigmoids to the first branch again (the other two branches are added raw), and the indice
keys are the official ones (layers sharing a key share the neighbour maps).

spconv 2.3.8 on CPU gives wrong results with more than one torch thread; the network runs the
sparse part under `spconv_cpu_guard` (one thread on CPU). No 1x1x1 sparse kernel is used.
"""

from __future__ import annotations

import spconv.pytorch as spconv
import torch
from torch import nn

from ..minkunet import spconv_cpu_guard

__all__ = ["GeometricSemanticSparseAwareness"]


def _subm(cin: int, cout: int, k: tuple[int, int, int], key: str) -> spconv.SubMConv3d:
    pad = tuple(v // 2 for v in k)
    return spconv.SubMConv3d(
        cin, cout, kernel_size=k, stride=1, padding=pad, bias=False, indice_key=key
    )


K133, K313, K333 = (1, 3, 3), (3, 1, 3), (3, 3, 3)
K311, K131, K113 = (3, 1, 1), (1, 3, 1), (1, 1, 3)


def _act_bn(t: spconv.SparseConvTensor, act: nn.Module, bn: nn.Module) -> spconv.SparseConvTensor:
    return t.replace_feature(bn(act(t.features)))


class ResContextBlock(nn.Module):
    def __init__(self, cin: int, cout: int, key: str) -> None:
        super().__init__()
        self.conv1 = _subm(cin, cout, K133, key + "bef")
        self.bn0 = nn.BatchNorm1d(cout)
        self.act1 = nn.LeakyReLU()
        self.conv1_2 = _subm(cout, cout, K133, key + "bef")
        self.bn0_2 = nn.BatchNorm1d(cout)
        self.act1_2 = nn.LeakyReLU()
        self.conv2 = _subm(cin, cout, K313, key + "bef")
        self.act2 = nn.LeakyReLU()
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv3 = _subm(cout, cout, K313, key + "bef")
        self.act3 = nn.LeakyReLU()
        self.bn2 = nn.BatchNorm1d(cout)

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        sc = _act_bn(self.conv1(x), self.act1, self.bn0)
        sc = _act_bn(self.conv1_2(sc), self.act1_2, self.bn0_2)
        ra = _act_bn(self.conv2(x), self.act2, self.bn1)
        ra = _act_bn(self.conv3(ra), self.act3, self.bn2)
        return ra.replace_feature(ra.features + sc.features)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, key: str) -> None:
        super().__init__()
        self.conv1 = _subm(cin, cout, K313, key + "bef")
        self.act1 = nn.LeakyReLU()
        self.bn0 = nn.BatchNorm1d(cout)
        self.conv1_2 = _subm(cout, cout, K313, key + "bef")
        self.act1_2 = nn.LeakyReLU()
        self.bn0_2 = nn.BatchNorm1d(cout)
        self.conv2 = _subm(cin, cout, K133, key + "bef")
        self.act2 = nn.LeakyReLU()
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv3 = _subm(cout, cout, K133, key + "bef")
        self.act3 = nn.LeakyReLU()
        self.bn2 = nn.BatchNorm1d(cout)
        # height_pooling=True in both official uses: stride 2 along every axis
        self.pool = spconv.SparseConv3d(
            cout, cout, kernel_size=3, stride=2, padding=1, indice_key=key, bias=False
        )

    def forward(
        self, x: spconv.SparseConvTensor
    ) -> tuple[spconv.SparseConvTensor, spconv.SparseConvTensor]:
        sc = _act_bn(self.conv1(x), self.act1, self.bn0)
        sc = _act_bn(self.conv1_2(sc), self.act1_2, self.bn0_2)
        ra = _act_bn(self.conv2(x), self.act2, self.bn1)
        ra = _act_bn(self.conv3(ra), self.act3, self.bn2)
        ra = ra.replace_feature(ra.features + sc.features)
        return self.pool(ra), ra


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, key: str, up_key: str) -> None:
        super().__init__()
        self.trans_dilao = _subm(cin, cout, K333, key + "new_up")
        self.trans_act = nn.LeakyReLU()
        self.trans_bn = nn.BatchNorm1d(cout)
        self.conv1 = _subm(cout, cout, K133, key)
        self.act1 = nn.LeakyReLU()
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = _subm(cout, cout, K133, key)
        self.act2 = nn.LeakyReLU()
        self.bn2 = nn.BatchNorm1d(cout)
        self.conv3 = _subm(cout, cout, K133, key)
        self.act3 = nn.LeakyReLU()
        self.bn3 = nn.BatchNorm1d(cout)
        self.up_subm = spconv.SparseInverseConv3d(
            cout, cout, kernel_size=3, indice_key=up_key, bias=False
        )

    def forward(
        self, x: spconv.SparseConvTensor, skip: spconv.SparseConvTensor
    ) -> spconv.SparseConvTensor:
        up = _act_bn(self.trans_dilao(x), self.trans_act, self.trans_bn)
        up = self.up_subm(up)
        up = up.replace_feature(up.features + skip.features)
        up = _act_bn(self.conv1(up), self.act1, self.bn1)
        up = _act_bn(self.conv2(up), self.act2, self.bn2)
        return _act_bn(self.conv3(up), self.act3, self.bn3)


class ReconBlock(nn.Module):
    def __init__(self, cin: int, cout: int, key: str) -> None:
        super().__init__()
        self.conv1 = _subm(cin, cout, K311, key + "bef")
        self.bn0 = nn.BatchNorm1d(cout)
        self.act1 = nn.Sigmoid()
        self.conv1_2 = _subm(cin, cout, K131, key + "bef")
        self.bn0_2 = nn.BatchNorm1d(cout)
        self.act1_2 = nn.Sigmoid()
        self.conv1_3 = _subm(cin, cout, K113, key + "bef")
        self.bn0_3 = nn.BatchNorm1d(cout)
        self.act1_3 = nn.Sigmoid()

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        sc = self.conv1(x)
        f = self.act1(self.bn0(sc.features))
        f2 = self.conv1_2(x).features
        f = self.act1_2(self.bn0_2(f))  # official: applied to the first branch again
        f3 = self.conv1_3(x).features
        f = self.act1_3(self.bn0_3(f))
        return sc.replace_feature((f + f2 + f3) * x.features)


class BasicBlock7x7(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(c, c, 7, 1, 3, bias=False)
        self.conv3 = nn.Conv3d(c, c, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(torch.relu(self.conv1(x)))
        return torch.relu(out + x)


def dense_to_sparse(x: torch.Tensor, shape: list[int]) -> spconv.SparseConvTensor:
    """The official `extract_nonzero_features`: voxels whose features are not all zero, in
    (batch, x, y, z) row-major order (the official `torch.unique` also leaves the indices
    contiguous)."""
    mask = x.abs().sum(1) != 0
    # nonzero() returns a column-major (N, 4) tensor; spconv reads the indices' memory as
    # row-major, so they must be made contiguous (else the neighbour maps are wrong)
    coords = mask.nonzero().to(torch.int32).contiguous()
    feats = x.permute(0, 2, 3, 4, 1)[mask]
    return spconv.SparseConvTensor(feats, coords, shape, x.shape[0])


class GeometricSemanticSparseAwareness(nn.Module):
    def __init__(
        self, output_shape: tuple[int, int, int], num_input_features: int, init_size: int
    ) -> None:
        super().__init__()
        self.sparse_shape = list(output_shape)
        self.pre_conv = nn.Sequential(
            nn.Conv3d(num_input_features, init_size, 1, 1, bias=False),
            nn.ReLU(inplace=True),
            BasicBlock7x7(init_size),
        )
        self.downCntx = ResContextBlock(init_size, init_size, "pre")
        self.resBlock2 = ResBlock(init_size, 2 * init_size, "down2")
        self.resBlock3 = ResBlock(2 * init_size, 4 * init_size, "down3")
        self.upBlock2 = UpBlock(4 * init_size, 4 * init_size, "up2", "down3")
        self.upBlock3 = UpBlock(4 * init_size, 2 * init_size, "up3", "down2")
        self.ReconNet = ReconBlock(2 * init_size, 2 * init_size, "recon")
        self.out_channels = 4 * init_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_conv(x)
        with spconv_cpu_guard(x.device):
            s = dense_to_sparse(x, self.sparse_shape)
            if s.features.shape[0] == 0:  # nothing lifted into the grid
                return x.new_zeros((x.shape[0], self.out_channels, *self.sparse_shape))
            s = self.downCntx(s)
            down1c, down1b = self.resBlock2(s)
            down2c, down2b = self.resBlock3(down1c)
            up2e = self.upBlock2(down2c, down2b)
            up1e = self.upBlock3(up2e, down1b)
            up0e = self.ReconNet(up1e)
            up0e = up0e.replace_feature(torch.cat((up0e.features, up1e.features), 1))
            return up0e.dense()
