"""spconv MinkUNet: official layout and keys, ME-kernel conversion against an independent
reference of MinkowskiEngine's sparse convolutions, strict checkpoint loading, the CPU
multi-thread guard, and OpenScene's voxelizer on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lidar_ovseg_ros.models.checkpoints import CheckpointMismatchError
from lidar_ovseg_ros.models.minkunet import (
    ARCHITECTURES,
    MinkUNet,
    MinkUNetConfig,
    spconv_cpu_guard,
)
from lidar_ovseg_ros.models.openscene_checkpoint import (
    load_openscene_checkpoint,
    me_kernel_to_spconv,
    official_state_dict_shapes,
    spconv_weight_to_me,
)
from lidar_ovseg_ros.segmentation.voxelizer import (
    _axis_rotation,
    fnv_hash,
    random_augmentation,
    voxelize,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------
# Official layout
# --------------------------------------------------------------------------------------------


def test_minkunet18a_has_the_official_keys_shapes_and_size():
    model = MinkUNet(MinkUNetConfig.from_arch("MinkUNet18A", 768))
    shapes = {k: s for k, (s, _) in official_state_dict_shapes(model).items()}
    assert len(shapes) == 289
    assert sum(p.numel() for p in model.parameters()) == 15_564_960
    # Examples read off the official network (ME kernels are (K^3, in, out); 1x1 are (in, out)).
    assert shapes["net3d.conv0p1s1.kernel"] == (125, 3, 32)
    assert shapes["net3d.block2.0.conv1.kernel"] == (27, 32, 64)
    assert shapes["net3d.block2.0.downsample.0.kernel"] == (32, 64)
    assert shapes["net3d.convtr4p16s2.kernel"] == (8, 256, 128)
    assert shapes["net3d.block6.0.conv1.kernel"] == (27, 192, 128)
    assert shapes["net3d.final.kernel"] == (96, 768)
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert f"net3d.bn0.bn.{name}" in shapes
    assert "net3d.block1.0.downsample.0.kernel" not in shapes  # 32 -> 32: no downsample


def test_every_official_architecture_builds():
    for arch in ARCHITECTURES:
        cfg = MinkUNetConfig.from_arch(arch, 512)
        assert cfg.name == arch and len(cfg.planes) == 8
    with pytest.raises(ValueError, match="unknown MinkUNet architecture"):
        MinkUNetConfig.from_arch("MinkUNet18C")
    with pytest.raises(ValueError, match="planes"):
        MinkUNetConfig(planes=(8, 8))


def test_no_1x1_spconv_convolution():
    """spconv 2.3.8's CPU 1x1 shortcut reads the (out, 1, 1, 1, in) weight memory as (in, out):
    every 1x1 conv of the network is a `Pointwise` matmul instead (checked against the ME
    reference below through the block downsamples and `final`)."""
    from spconv.pytorch.conv import SparseConvolution

    from lidar_ovseg_ros.models.minkunet import Pointwise

    model = MinkUNet(MinkUNetConfig.from_arch("MinkUNet34C", 512))
    convs = [m for m in model.modules() if isinstance(m, SparseConvolution)]
    assert convs and all(max(m.kernel_size) > 1 for m in convs)
    pointwise = [n for n, m in model.named_modules() if isinstance(m, Pointwise)]
    assert "final" in pointwise and "block5.0.downsample.0" in pointwise
    f = torch.randn(5, 96)
    x = type("T", (), {"features": f, "replace_feature": lambda self, v: v})()
    torch.testing.assert_close(model.final(x), f @ model.final.weight.t())


def test_kernel_layout_round_trip():
    w = torch.randn(8, 3, 3, 3, 5)
    me = spconv_weight_to_me(w)
    assert me.shape == (27, 5, 8)
    # Offset (a, b, c) is ME row a + 3b + 9c.
    assert torch.equal(me[1 + 3 * 2 + 9 * 0, :, :], w[:, 1, 2, 0, :].t())
    assert torch.equal(me_kernel_to_spconv(me, tuple(w.shape)), w)
    assert torch.equal(me_kernel_to_spconv(torch.ones(4, 6), (6, 4)), torch.ones(6, 4))
    with pytest.raises(ValueError):
        me_kernel_to_spconv(torch.ones(27, 5, 8), (8, 2, 2, 2, 5))


# --------------------------------------------------------------------------------------------
# Independent reference: MinkowskiEngine semantics on coordinate dictionaries, float64 numpy
# --------------------------------------------------------------------------------------------


class MEReference:
    """MinkUNet forward straight from an ME-layout state dict, one voxel at a time."""

    def __init__(self, state: dict[str, torch.Tensor], cfg: MinkUNetConfig) -> None:
        self.w = {k.removeprefix("net3d."): v.double().numpy() for k, v in state.items()}
        self.cfg = cfg

    @staticmethod
    def lut(coords: np.ndarray) -> dict[tuple[int, ...], int]:
        return {tuple(int(v) for v in c): i for i, c in enumerate(coords)}

    def subm(self, x, coords, stride, name, k):
        w, lut, r = self.w[name + ".kernel"], self.lut(coords), k // 2
        out = np.zeros((len(coords), w.shape[2]))
        for i, p in enumerate(coords):
            for c in range(k):
                for b in range(k):
                    for a in range(k):
                        q = (
                            p[0] + (a - r) * stride,
                            p[1] + (b - r) * stride,
                            p[2] + (c - r) * stride,
                        )
                        j = lut.get(q)
                        if j is not None:
                            out[i] += x[j] @ w[a + k * b + k * k * c]
        return out

    def down(self, x, coords, stride, name):
        w, lut = self.w[name + ".kernel"], self.lut(coords)
        parents = (coords // (2 * stride)) * (2 * stride)
        _, first = np.unique(parents, axis=0, return_index=True)
        coarse = parents[np.sort(first)]
        out = np.zeros((len(coarse), w.shape[2]))
        for i, p in enumerate(coarse):
            for c in range(2):
                for b in range(2):
                    for a in range(2):
                        j = lut.get((p[0] + a * stride, p[1] + b * stride, p[2] + c * stride))
                        if j is not None:
                            out[i] += x[j] @ w[a + 2 * b + 4 * c]
        return out, coarse

    def up(self, x, coarse, fine, stride, name):
        w, lut = self.w[name + ".kernel"], self.lut(coarse)
        out = np.zeros((len(fine), w.shape[2]))
        for i, q in enumerate(fine):
            parent = (q // (2 * stride)) * (2 * stride)
            a, b, c = ((q - parent) // stride).tolist()
            out[i] = x[lut[tuple(int(v) for v in parent)]] @ w[a + 2 * b + 4 * c]
        return out

    def bn(self, x, name):
        g = lambda s: self.w[f"{name}.bn.{s}"]  # noqa: E731
        return (x - g("running_mean")) / np.sqrt(g("running_var") + 1e-5) * g("weight") + g("bias")

    def stage(self, x, coords, stride, name, blocks):
        for i in range(blocks):
            pre = f"{name}.{i}"
            out = np.maximum(
                self.bn(self.subm(x, coords, stride, pre + ".conv1", 3), pre + ".norm1"), 0
            )
            out = self.bn(self.subm(out, coords, stride, pre + ".conv2", 3), pre + ".norm2")
            if pre + ".downsample.0.kernel" in self.w:
                x = self.bn(x @ self.w[pre + ".downsample.0.kernel"], pre + ".downsample.1")
            x = np.maximum(out + x, 0)
        return x

    def forward(self, feats: np.ndarray, coords: np.ndarray) -> np.ndarray:
        relu = lambda v: np.maximum(v, 0)  # noqa: E731
        layers = self.cfg.layers
        c1 = coords
        p1 = relu(self.bn(self.subm(feats, c1, 1, "conv0p1s1", self.cfg.conv0_kernel), "bn0"))
        x, c2 = self.down(p1, c1, 1, "conv1p1s2")
        b1 = self.stage(relu(self.bn(x, "bn1")), c2, 2, "block1", layers[0])
        x, c4 = self.down(b1, c2, 2, "conv2p2s2")
        b2 = self.stage(relu(self.bn(x, "bn2")), c4, 4, "block2", layers[1])
        x, c8 = self.down(b2, c4, 4, "conv3p4s2")
        b3 = self.stage(relu(self.bn(x, "bn3")), c8, 8, "block3", layers[2])
        x, c16 = self.down(b3, c8, 8, "conv4p8s2")
        x = self.stage(relu(self.bn(x, "bn4")), c16, 16, "block4", layers[3])
        x = relu(self.bn(self.up(x, c16, c8, 8, "convtr4p16s2"), "bntr4"))
        x = self.stage(np.concatenate([x, b3], 1), c8, 8, "block5", layers[4])
        x = relu(self.bn(self.up(x, c8, c4, 4, "convtr5p8s2"), "bntr5"))
        x = self.stage(np.concatenate([x, b2], 1), c4, 4, "block6", layers[5])
        x = relu(self.bn(self.up(x, c4, c2, 2, "convtr6p4s2"), "bntr6"))
        x = self.stage(np.concatenate([x, b1], 1), c2, 2, "block7", layers[6])
        x = relu(self.bn(self.up(x, c2, c1, 1, "convtr7p2s2"), "bntr7"))
        x = self.stage(np.concatenate([x, p1], 1), c1, 1, "block8", layers[7])
        return x @ self.w["final.kernel"]


def random_official_state(cfg: MinkUNetConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official file's layout and naming (ME kernels, `net3d.`)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = official_state_dict_shapes(MinkUNet(cfg))
    state = {}
    for key, (shape, _) in shapes.items():
        if key.endswith(".kernel"):
            fan_in = int(np.prod(shape[:-1]))
            state[key] = torch.randn(shape, generator=gen) * (1.5 / fan_in) ** 0.5
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var") or key.endswith(".weight"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return state


@pytest.fixture(scope="module")
def small_scan_voxels(nuscenes_frame) -> np.ndarray:
    """A few hundred real voxels: a 6 m x 6 m patch of the nuScenes scan at 20 cm."""
    xyz = nuscenes_frame.xyz
    patch = xyz[(np.abs(xyz[:, 0] - 4) < 3) & (np.abs(xyz[:, 1]) < 3)]
    vox = voxelize(patch, voxel_size=0.2)
    assert 150 <= len(vox) <= 600, len(vox)
    return vox.coords


def test_official_state_dict_matches_an_independent_me_reference(small_scan_voxels):
    # Two blocks in some stages exercise the blocks without downsample; odd kernel 3 for conv0
    # keeps the reference quick.
    cfg = MinkUNetConfig(
        name="ref",
        layers=(1, 2, 1, 1, 1, 1, 1, 2),
        planes=(8, 16, 16, 24, 16, 8, 8, 8),
        init_dim=8,
        out_channels=12,
        conv0_kernel=3,
    )
    state = random_official_state(cfg)
    model = load_openscene_checkpoint(MinkUNet(cfg), {"epoch": 3, "state_dict": state}).eval()
    coords = small_scan_voxels
    feats = np.random.default_rng(1).normal(size=(len(coords), 3))
    with torch.no_grad():
        got = model(torch.from_numpy(feats).float(), torch.from_numpy(coords)).double().numpy()
    want = MEReference(state, cfg).forward(feats, coords.astype(np.int64))
    assert got.shape == want.shape == (len(coords), 12)
    scale = np.abs(want).max()
    assert scale > 0.1
    np.testing.assert_allclose(got, want, atol=2e-5 * scale, rtol=0)


def test_kernel5_conv0_and_ones_input_match_the_reference(small_scan_voxels):
    cfg = MinkUNetConfig.tiny(out_channels=6)
    state = random_official_state(cfg, seed=3)
    model = load_openscene_checkpoint(MinkUNet(cfg), {"state_dict": state}).eval()
    coords = small_scan_voxels
    feats = np.ones((len(coords), 3))
    with torch.no_grad():
        got = model(torch.ones(len(coords), 3), torch.from_numpy(coords)).double().numpy()
    want = MEReference(state, cfg).forward(feats, coords.astype(np.int64))
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(), rtol=0)


# --------------------------------------------------------------------------------------------
# Checkpoint files
# --------------------------------------------------------------------------------------------


def test_official_file_loads_with_module_prefix(tmp_path):
    cfg = MinkUNetConfig.tiny()
    state = random_official_state(cfg, seed=5)
    path = tmp_path / "nuscenes_openseg.pth.tar"
    torch.save(
        {"epoch": 100, "state_dict": {"module." + k: v for k, v in state.items()}, "best_iou": 0.4},
        path,
    )
    a = load_openscene_checkpoint(MinkUNet(cfg), path).eval()
    b = load_openscene_checkpoint(MinkUNet(cfg), {"state_dict": state}).eval()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert torch.equal(a.final.weight, state["net3d.final.kernel"].t())


def test_partial_or_wrong_file_names_every_problem(tmp_path):
    cfg = MinkUNetConfig.tiny()
    state = random_official_state(cfg)
    partial = {k: v for k, v in state.items() if "block8" not in k}
    partial["net3d.extra.kernel"] = torch.zeros(3)
    partial["net3d.final.kernel"] = torch.zeros(8, 99)
    with pytest.raises(CheckpointMismatchError) as info:
        load_openscene_checkpoint(MinkUNet(cfg), {"state_dict": partial})
    text = str(info.value)
    assert "net3d.block8.0.conv1.kernel" in text and "missing" in text
    assert "net3d.extra.kernel" in text and "unexpected" in text
    assert "net3d.final.kernel checkpoint (8, 99) vs model (8, 32)" in text
    # A pickle with code is refused by weights_only=True.
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": state, "obj": _Unpicklable()}, evil)
    with pytest.raises(ValueError, match="weights_only"):
        load_openscene_checkpoint(MinkUNet(cfg), evil)


class _Unpicklable:
    pass


# --------------------------------------------------------------------------------------------
# CPU multi-thread guard
# --------------------------------------------------------------------------------------------


def test_spconv_runs_single_threaded_on_cpu_and_restores(nuscenes_frame):
    model = MinkUNet(MinkUNetConfig.tiny()).eval()
    seen = []
    model.block1.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    vox = voxelize(nuscenes_frame.xyz)
    coords = torch.from_numpy(vox.coords)
    ones = torch.ones(len(vox), 3)
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            outs = [model(ones, coords) for _ in range(3)]
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(1)
    with torch.no_grad():
        single = model(ones, coords)
    assert seen == [1, 1, 1, 1]
    for out in outs:  # spconv 2.3.8 gives different wrong numbers here with 2 threads
        assert torch.equal(out, single)
    with spconv_cpu_guard("cuda"):
        assert torch.get_num_threads() == 1  # no change for CUDA


def test_real_scans_forward(nuscenes_frame, kitti_frame):
    model = MinkUNet(MinkUNetConfig.tiny()).eval()
    for frame in (nuscenes_frame, kitti_frame):
        vox = voxelize(frame.xyz)
        with torch.no_grad():
            out = model(torch.ones(len(vox), 3), torch.from_numpy(vox.coords))
        assert out.shape == (len(vox), 32) and torch.isfinite(out).all()
        assert out.abs().sum(1).gt(0).float().mean() > 0.5
    with pytest.raises(ValueError, match=">= 0"):
        model(torch.ones(1, 3), torch.tensor([[-1, 0, 0]]))
    assert model(torch.ones(0, 3), torch.zeros(0, 3, dtype=torch.int32)).shape == (0, 32)


def test_fp16_forward_on_cpu_is_close(nuscenes_frame):
    model = MinkUNet(MinkUNetConfig.tiny()).eval()
    vox = voxelize(nuscenes_frame.xyz[:5000])
    coords = torch.from_numpy(vox.coords)
    with torch.no_grad():
        ref = model(torch.ones(len(vox), 3), coords)
        half = model.half()(torch.ones(len(vox), 3).half(), coords)
    assert half.dtype == torch.float16
    assert (half.float() - ref).abs().max() < 2e-2 * ref.abs().max()


# --------------------------------------------------------------------------------------------
# Voxelizer
# --------------------------------------------------------------------------------------------


def test_voxelizer_hand_computed():
    # 0.25 m voxels: every boundary below is exact in float32 and float64.
    pts = np.array(
        [
            [0.00, 0.00, 0.00],  # raw voxel (0, 0, 0)
            [0.24, 0.01, 0.02],  # same voxel, later: not kept
            [-0.25, 0.00, 0.00],  # exactly on a boundary: floor(-1.0) = -1
            [-0.26, -0.0001, 0.0],  # floor(-1.04) = -2, floor(-0.0004) = -1
            [0.25, 0.25, 0.25],  # boundaries: voxel (1, 1, 1)
            [np.nan, 0, 0],  # non-finite: left out
            [0.2499, 0.0, 0.0],  # ties with the first point's voxel
        ],
        np.float32,
    )
    vox = voxelize(pts, 0.25)
    # Minimum (-2, -1, 0) subtracted.
    assert sorted(vox.kept.tolist()) == [0, 2, 3, 4]  # first occurrence per voxel
    by_point = {int(p): vox.coords[i].tolist() for i, p in enumerate(vox.kept)}
    assert by_point == {0: [2, 1, 0], 2: [1, 1, 0], 3: [0, 0, 0], 4: [3, 2, 1]}
    assert vox.coords.dtype == np.int32 and (vox.coords.min(0) == 0).all()
    # Every point maps back to its voxel; the NaN point to -1.
    assert vox.inverse[5] == -1
    assert [int(vox.kept[vox.inverse[i]]) for i in (0, 1, 2, 3, 4, 6)] == [0, 0, 2, 3, 4, 0]
    # Rows are ordered by the FNV-64 hash, as np.unique orders the official keys.
    h = fnv_hash(vox.coords)
    assert np.all(h[:-1] < h[1:])


def test_voxelizer_keeps_float32_rounding_of_the_official_code():
    # float32 -0.05 is slightly below -0.05, so it lands in voxel -2 (as in OpenScene, which
    # multiplies the float32 points by 1/0.05 in float64); 0.05 lands in voxel 1.
    pts = np.array([[-0.05, 0.05, 0.0], [0.0, 0.0, 0.0]], np.float32)
    raw = np.floor(pts.astype(np.float64) @ (np.eye(3) / 0.05).T)
    assert raw[0].tolist() == [-2, 1, 0]
    vox = voxelize(pts, 0.05)
    assert (vox.coords[vox.inverse] == raw - raw.min(0)).all()


def test_voxelizer_minimum_shift_changes_the_stride2_pairing():
    # Two points 1 voxel apart: with the minimum subtracted they sit at 0 and 1 (one parent at
    # stride 2); without the shift (-1 and 0) they would have split across two parents.
    vox = voxelize(np.array([[-0.03, 0, 0], [0.01, 0, 0]]), 0.05)
    assert sorted(vox.coords[:, 0].tolist()) == [0, 1]
    assert len(np.unique(vox.coords // 2, axis=0)) == 1


def test_fnv_hash_is_the_64bit_fnv_over_columns():
    c = np.array([[0, 0, 0], [1, 2, 3]])
    h = np.uint64(14695981039346656037)
    want = []
    for row in c:
        v = int(h)
        for x in row:
            v = ((v * 1099511628211) % 2**64) ^ int(x)
        want.append(v)
    assert fnv_hash(c).tolist() == want


def test_augmentation_matrices():
    from scipy.linalg import expm

    for axis in range(3):
        e = np.zeros(3)
        e[axis] = 0.3
        np.testing.assert_allclose(
            _axis_rotation(axis, 0.3), expm(np.cross(np.eye(3), e)), atol=1e-12
        )
    m = random_augmentation(np.random.default_rng(0))
    s = np.cbrt(np.linalg.det(m))
    assert 0.9 <= s <= 1.1
    np.testing.assert_allclose(m @ m.T, s**2 * np.eye(3), atol=1e-12)
    pts = np.random.default_rng(0).normal(size=(200, 3)) * 5
    vox = voxelize(pts, 0.05, transform=m)
    want = np.floor(pts @ (m / 0.05).T)
    want = want - want.min(0)
    assert (vox.coords[vox.inverse] == want).all()
