"""WaffleIron / ScaLR+ backbone: official state-dict layout, official maths, batching, precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lidar_ovseg_ros.models.waffleiron import (
    WaffleIron,
    WaffleIronConfig,
    WaffleIronConfigError,
    scatter_mean,
)
from lidar_ovseg_ros.segmentation.preprocess import PreprocessConfig, collate, preprocess

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def expected_keys(depth: int, norm: str, head: str) -> list[str]:
    """The key list the official Segmenter produces, written out from the module tree."""
    norm_keys = BN_KEYS if norm == "batchnorm" else ("weight", "bias")
    keys = [f"embed.norm.{k}" for k in BN_KEYS]
    keys += ["embed.conv1.weight", "embed.conv1.bias"]
    keys += [f"embed.conv2.0.{k}" for k in BN_KEYS] + ["embed.conv2.1.weight"]
    keys += [f"embed.conv2.2.{k}" for k in BN_KEYS] + ["embed.conv2.4.weight"]
    keys += ["embed.final.weight", "embed.final.bias"]
    for i in range(depth):
        p = f"waffleiron.channel_mix.{i}"
        keys += [f"{p}.norm.{k}" for k in norm_keys]
        keys += [f"{p}.mlp.{j}.{w}" for j in (0, 2) for w in ("weight", "bias")]
        keys += [f"{p}.scale.weight"]
    for i in range(depth):
        p = f"waffleiron.spatial_mix.{i}"
        keys += [f"{p}.norm.{k}" for k in norm_keys]
        keys += [f"{p}.ffn.{j}.{w}" for j in (0, 2) for w in ("weight", "bias")]
        keys += [f"{p}.scale.weight"]
    if head == "mlp":
        keys += [f"classif.{j}.{w}" for j in (0, 2) for w in ("weight", "bias")]
    else:
        keys += ["classif.weight", "classif.bias"]
    return keys


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics / affine params so the tests exercise them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 2 + 0.5)
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d | torch.nn.LayerNorm):
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


def model_inputs(scan, device="cpu"):
    return tuple(
        torch.from_numpy(a[None]).to(device) for a in (scan.feats, scan.cell_ind, scan.neighbors)
    )


@pytest.fixture(scope="module")
def nusc_scan(nuscenes_frame):
    return preprocess(nuscenes_frame.points, PreprocessConfig.nuscenes())


@pytest.fixture(scope="module")
def kitti_scan(kitti_frame):
    return preprocess(kitti_frame.points, PreprocessConfig.semantickitti())


@pytest.fixture(scope="module")
def small_scan(nuscenes_frame):
    """A slice of the real sweep, for the slow CPU paths (training mode, half precision)."""
    return preprocess(nuscenes_frame.points[:3000], PreprocessConfig.nuscenes())


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return randomize_(WaffleIron.tiny())


def test_scalr_plus_matches_official_state_dict():
    model = WaffleIron.scalr_plus()
    sd = model.state_dict()
    keys = expected_keys(48, "layernorm", "mlp")
    assert len(sd) == 697 == len(keys)
    assert list(sd) == keys
    n_params = sum(p.numel() for p in model.parameters())
    assert round(n_params / 1e6, 1) == 63.1
    shapes = {
        "embed.norm.weight": (5,),
        "embed.conv1.weight": (768, 5, 1),
        "embed.conv2.1.weight": (768, 5, 1, 1),
        "embed.conv2.4.weight": (768, 768, 1, 1),
        "embed.final.weight": (768, 1536, 1),
        "waffleiron.channel_mix.47.mlp.0.weight": (768, 768, 1),
        "waffleiron.channel_mix.0.scale.weight": (768, 1, 1),
        "waffleiron.spatial_mix.5.ffn.2.weight": (768, 1, 3, 3),
        "waffleiron.spatial_mix.5.norm.weight": (768,),
        "classif.0.weight": (2048, 768, 1),
        "classif.2.weight": (1024, 2048, 1),
        "classif.2.bias": (1024,),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    grids = [(m.H, m.W) for m in model.waffleiron.spatial_mix]
    assert grids[:4] == [(256, 256), (256, 32), (256, 32), (256, 256)]
    assert isinstance(model.waffleiron.channel_mix[0].mlp[1], torch.nn.GELU)


@pytest.mark.parametrize(
    ("preset", "channels", "classes", "grid"),
    [
        ("scalr_v1", 768, 1024, (256, 32)),
        ("waffleiron_nuscenes", 384, 16, (166, 16)),
        ("waffleiron_semantickitti", 256, 19, (250, 12)),
    ],
)
def test_variant_presets_have_official_layouts(preset, channels, classes, grid):
    cfg = getattr(WaffleIronConfig, preset)(depth=3)  # depth only shortens the key list
    model = WaffleIron(cfg)
    sd = model.state_dict()
    assert list(sd) == expected_keys(3, cfg.norm, cfg.head)
    assert tuple(sd["classif.weight"].shape) == (classes, channels, 1)
    smix = model.waffleiron.spatial_mix[1]
    assert grid == (smix.H, smix.W)
    assert isinstance(model.waffleiron.channel_mix[0].mlp[1], torch.nn.ReLU)
    full = getattr(WaffleIronConfig, preset)()
    assert full.depth == 48 and full.nb_channels == channels and full.out_channels == classes


def official_reference(model: WaffleIron, feats, cell_ind, neighbors_with_self):
    """The official forward written op by op (per-neighbour loop, expanded scatter index)."""
    x = model.embed.norm(feats)
    point_emb = model.embed.conv1(x)
    gathered = []
    for j in range(1, neighbors_with_self.shape[1]):
        idx = neighbors_with_self[:, j : j + 1, :].expand(-1, x.shape[1], -1)
        gathered.append(torch.gather(x, 2, idx).unsqueeze(-1))
    neigh = torch.cat(gathered, -1) - x.unsqueeze(-1)
    neigh = model.embed.conv2(neigh).max(-1)[0]
    tokens = model.embed.final(torch.cat((point_emb, neigh), 1))
    b, c, _ = tokens.shape
    planes = [cell_ind[:, i : i + 1].expand(-1, c, -1) for i in range(cell_ind.shape[1])]
    for d, (smix, cmix) in enumerate(
        zip(model.waffleiron.spatial_mix, model.waffleiron.channel_mix)
    ):
        index = planes[d % len(planes)]
        res = torch.zeros((b, c, smix.H * smix.W), dtype=tokens.dtype)
        res.scatter_reduce_(2, index, smix.norm(tokens), "mean", include_self=False)
        res = smix.ffn(res.reshape(b, c, smix.H, smix.W)).reshape(b, c, -1)
        tokens = tokens + torch.gather(smix.scale(res), 2, index)
        tokens = tokens + cmix.scale(cmix.mlp(cmix.norm(tokens)))
    return model.classif(tokens)


@pytest.mark.parametrize("preset", ["tiny", "waffleiron_nuscenes"])
def test_forward_equals_official_formulation_on_real_scan(nuscenes_frame, preset):
    cfg = getattr(WaffleIronConfig, preset)(depth=3, nb_channels=32, out_channels=24)
    pre = getattr(PreprocessConfig, preset if preset != "tiny" else "nuscenes")()
    scan = preprocess(nuscenes_frame.points, pre)
    torch.manual_seed(1)
    model = randomize_(WaffleIron(cfg), seed=1)
    feats, cells, neigh = model_inputs(scan)
    with_self = torch.cat([torch.arange(scan.num_points)[None, None], neigh.transpose(1, 2)], 1)
    with torch.no_grad():
        out = model(feats, cells, neigh)
        ref = official_reference(model, feats, cells, with_self)
    assert out.shape == (1, 24, scan.num_points)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    assert out.std() > 0  # a real, non-degenerate output


def test_batch_equals_per_scan(tiny_model, nusc_scan, kitti_scan):
    scans = [nusc_scan, kitti_scan]
    feats, cells, neigh, mask = (torch.from_numpy(a) for a in collate(scans))
    assert feats.shape[-1] == nusc_scan.num_points > kitti_scan.num_points
    with torch.no_grad():
        batched = tiny_model(feats, cells, neigh, mask)
        for i, scan in enumerate(scans):
            single = tiny_model(*model_inputs(scan))
            torch.testing.assert_close(
                batched[i : i + 1, :, : scan.num_points], single, rtol=1e-5, atol=1e-5
            )


def test_padding_never_reaches_cell_zero(tiny_model, kitti_scan):
    """A real point in cell 0 keeps its value however much padding the batch adds."""
    corner = np.array([[-63.9, -63.9, -7.9, 0.3]], dtype=np.float32)
    pts = np.concatenate(
        [corner + np.array([[0.2 * i, 0.15 * (i % 3), 0.1, 0]], np.float32) for i in range(20)]
    )
    scan = preprocess(pts, PreprocessConfig.semantickitti())
    assert (scan.cell_ind == 0).any(axis=1).all()  # occupied corner cell on every plane
    feats, cells, neigh, mask = (torch.from_numpy(a) for a in collate([scan, kitti_scan]))
    with torch.no_grad():
        single = tiny_model(*model_inputs(scan))
        masked = tiny_model(feats, cells, neigh, mask)[:1, :, : scan.num_points]
        unmasked = tiny_model(feats, cells, neigh)[:1, :, : scan.num_points]
    torch.testing.assert_close(masked, single, rtol=1e-5, atol=1e-5)
    # Without the mask (the official collate), the zero-padded points pollute cell 0.
    assert (unmasked - single).abs().max() > 1e-3


def test_scatter_mean_is_exact_and_safe_in_half_precision():
    n = 6000
    feat = torch.full((1, 2, n), 60000.0, dtype=torch.float16)  # fp16 sum would be inf
    feat[0, 1] = torch.arange(n, dtype=torch.float16) % 7
    index = torch.zeros((1, 2, n), dtype=torch.long)
    index[..., n // 2 :] = 3
    out = scatter_mean(feat, index, 5)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert out[0, 0, 0].item() == 60000.0 and out[0, 0, 3].item() == 60000.0
    assert out[0, :, [1, 2, 4]].abs().sum().item() == 0.0  # empty cells stay 0
    expected = (torch.arange(n) % 7).float()
    assert out[0, 1, 0].item() == pytest.approx(expected[: n // 2].mean().item(), rel=1e-3)
    assert out[0, 1, 3].item() == pytest.approx(expected[n // 2 :].mean().item(), rel=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_autocast_close_to_fp32(tiny_model, small_scan, dtype):
    inputs = model_inputs(small_scan)
    with torch.no_grad():
        ref = tiny_model(*inputs)
        with torch.autocast("cpu", dtype=dtype):
            out = tiny_model(*inputs)
    assert torch.isfinite(out).all()
    cos = torch.nn.functional.cosine_similarity(out.float(), ref, dim=1)
    assert cos.min() > 0.98, cos.min()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(tiny_model, nusc_scan, dtype):
    with torch.no_grad():
        ref = tiny_model(*model_inputs(nusc_scan))
        model = randomize_(WaffleIron.tiny()).cuda()
        model.load_state_dict(tiny_model.state_dict())
        ctx = (
            torch.autocast("cuda", dtype=dtype) if dtype else torch.autocast("cuda", enabled=False)
        )
        with ctx:
            out = model(*model_inputs(nusc_scan, "cuda")).float().cpu()
    if dtype is None:
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    else:
        assert torch.nn.functional.cosine_similarity(out, ref, dim=1).min() > 0.98


def test_drop_path_only_in_training(small_scan):
    torch.manual_seed(0)
    model = WaffleIron.tiny(drop_path=0.5)
    inputs = model_inputs(small_scan)
    model.eval()
    with torch.no_grad():
        a, b = model(*inputs), model(*inputs)
    assert torch.equal(a, b)
    batch = [torch.cat([x, x]) for x in inputs]  # 2 samples: drop decisions are per sample
    model.train()
    torch.manual_seed(3)
    with torch.no_grad():
        outs = [model(*batch) for _ in range(4)]
    assert any(not torch.allclose(o[0], o[1]) for o in outs)


def test_config_validation_names_the_entry():
    with pytest.raises(WaffleIronConfigError, match="norm"):
        WaffleIronConfig(norm="groupnorm")
    with pytest.raises(WaffleIronConfigError, match="dim_proj"):
        WaffleIronConfig(dim_proj=(2, 1))
    with pytest.raises(WaffleIronConfigError, match="depth"):
        WaffleIronConfig.tiny(depth=0)
    with pytest.raises(WaffleIronConfigError, match="drop_path"):
        WaffleIronConfig(drop_path=1.5)
    cfg = WaffleIronConfig(grids_shape=[[10, 10], [10, 4], [10, 4]])  # YAML-style lists
    assert cfg.grids_shape == ((10, 10), (10, 4), (10, 4))


def test_forward_rejects_bad_shapes(tiny_model, kitti_scan):
    feats, cells, neigh = model_inputs(kitti_scan)
    with pytest.raises(ValueError, match="cell_ind"):
        tiny_model(feats, cells[:, :2], neigh)
    with pytest.raises(ValueError, match="feats"):
        tiny_model(feats[:, :4], cells, neigh)
    with pytest.raises(ValueError, match="neighbors"):
        tiny_model(feats, cells, neigh.transpose(1, 2))


def test_chunked_inference_equals_the_whole_tensor_formulation(nuscenes_frame, monkeypatch):
    """Inference runs the embedding, channel mixes and head over chunks of points with in-place
    residuals (memory); the result equals the autograd (training-time) formulation to float32
    rounding, and the training path is untouched."""
    import lidar_ovseg_ros.models.waffleiron as wi

    scan = preprocess(nuscenes_frame.points, PreprocessConfig.nuscenes())
    model = randomize_(WaffleIron(WaffleIronConfig.tiny()), seed=2).eval()
    inputs = model_inputs(scan)
    with torch.enable_grad():
        whole = model(*inputs).detach()
    monkeypatch.setattr(wi, "CHUNK_ELEMENTS", 1 << 14)  # ~30 points per embedding chunk
    feats_before = inputs[0].clone()
    with torch.no_grad():
        assert len(wi.point_chunks(scan.num_points, 32 * 16, model)) > 500
        chunked = model(*inputs)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    assert torch.equal(inputs[0], feats_before)  # the caller's tensors are not written
    model.train()
    with torch.no_grad():
        assert wi.point_chunks(scan.num_points, 1, model) is None  # batch-norm stats need all
