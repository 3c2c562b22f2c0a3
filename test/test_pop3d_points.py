"""POP-3D's points branch: the three TPV planes sampled at each LiDAR point.

The reference is written independently of the code under test: explicit bilinear interpolation
by hand in numpy (float64) over the token lists as the official aggregator lays them out, with
`F.grid_sample`'s align_corners=False pixel convention (pixel i covers [i, i + 1) in voxel
units, so a voxel-index coordinate c samples at pixel position c - 0.5) and zero padding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lidar_ovseg_ros.models.pop3d import Pop3DConfig
from lidar_ovseg_ros.models.pop3d.heads import TPVAggregator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W, Z, C = 5, 6, 3, 4


def _bilinear(plane: np.ndarray, u: float, v: float) -> np.ndarray:
    """plane [C, rows, cols]; u along cols, v along rows (pixel positions); zeros outside."""
    _, rows, cols = plane.shape
    u0, v0 = int(np.floor(u)), int(np.floor(v))
    out = np.zeros(plane.shape[0])
    for dv, wv in ((0, 1 - (v - v0)), (1, v - v0)):
        for du, wu in ((0, 1 - (u - u0)), (1, u - u0)):
            r, c = v0 + dv, u0 + du
            if 0 <= r < rows and 0 <= c < cols:
                out += wv * wu * plane[:, r, c]
    return out


def _reference(hw_tok, zh_tok, wz_tok, pts: np.ndarray) -> np.ndarray:
    """Official layouts: hw tokens are (h, w) row-major, zh (z, h), wz (w, z)."""
    hw = hw_tok.T.reshape(C, H, W)  # rows h (y), cols w (x)
    zh = zh_tok.T.reshape(C, Z, H)  # rows z, cols h (y)
    wz = wz_tok.T.reshape(C, W, Z)  # rows w (x), cols z
    out = []
    for x, y, z in pts:
        out.append(
            _bilinear(hw, x - 0.5, y - 0.5)
            + _bilinear(zh, y - 0.5, z - 0.5)
            + _bilinear(wz, z - 0.5, x - 0.5)
        )
    return np.stack(out)


@pytest.fixture(scope="module")
def planes():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, H * W, C, generator=g), torch.randn(1, Z * H, C, generator=g),
            torch.randn(1, W * Z, C, generator=g)]  # fmt: skip


@pytest.fixture(scope="module")
def agg():
    torch.manual_seed(0)
    return TPVAggregator(H, W, Z, in_dims=C, hidden_dims=6, out_dims=C, feature_dim=7,
                         hidden_dims_ft=6, out_dims_ft=6).eval()  # fmt: skip


def test_point_features_equal_hand_written_bilinear_sampling(agg, planes):
    rng = np.random.default_rng(1)
    pts = np.concatenate(
        [
            rng.uniform([0, 0, 0], [W, H, Z], (40, 3)),  # anywhere in the volume
            [[0.0, 0.0, 0.0], [W - 1e-3, H - 1e-3, Z - 1e-3], [0.2, 4.9, 2.7]],  # border cells
            [[2.5, 3.5, 1.5]],  # a voxel centre: no interpolation
        ]
    )
    got = agg.point_features(planes, torch.tensor(pts[None], dtype=torch.float32))
    assert got.shape == (1, len(pts), C)
    ref = _reference(*(p[0].double().numpy() for p in planes), pts.astype(np.float32))
    np.testing.assert_allclose(got[0].double().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_a_point_at_a_voxel_centre_has_that_voxels_feature(agg, planes):
    vox = agg.voxel_features(planes)[0]  # [X, Y, Z, C]
    idx = torch.tensor([[0, 0, 0], [5, 4, 2], [3, 1, 2], [2, 3, 0]])
    got = agg.point_features(planes, (idx.float() + 0.5)[None])[0]
    torch.testing.assert_close(got, vox[idx[:, 0], idx[:, 1], idx[:, 2]], rtol=1e-5, atol=1e-5)
    # the language head reads point features like voxel features (official: one decoder pass)
    torch.testing.assert_close(
        agg.language(got), agg.language(vox[idx[:, 0], idx[:, 1], idx[:, 2]])
    )


def test_points_are_voxelized_like_the_official_voxelize():
    cfg = Pop3DConfig.full()  # [-51.2, 51.2]^2 x [-5, 3] on 100 x 100 x 8: 1.024 x 1.024 x 1 m
    xyz = np.array([[0.0, 0.0, 0.0], [-51.2, 51.2, 3.0], [60.0, -70.0, -9.0], [1.024, 2.56, -1.0]])
    got = cfg.voxelize_points(xyz)
    expected = np.array(
        [
            [50.0, 50.0, 5.0],
            [0.0, (102.4 - 1e-3) / 1.024, 8 - 1e-3],  # clipped to max - 1e-3 (z voxels: 1 m)
            [(102.4 - 1e-3) / 1.024, 0.0, 0.0],
            [51.0, 52.5, 4.0],
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match=r"points must be \[1, N, 3\]"):
        TPVAggregator(H, W, Z, in_dims=C).point_features(
            [torch.zeros(1, H * W, C), torch.zeros(1, Z * H, C), torch.zeros(1, W * Z, C)],
            torch.zeros(1, 5, 2),
        )
