"""POP-3D network: plain-PyTorch DCNv2 and deformable attention against references, official
parameter names/shapes, checkpoint loading, and a tiny forward pass on the real nuScenes frame."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lidar_ovseg_ros.models.checkpoints import CheckpointMismatchError, CheckpointNotFoundError
from lidar_ovseg_ros.models.pop3d import (
    NUSCENES_CAMERAS,
    Pop3DConfig,
    Pop3DConfigError,
    Pop3DNetwork,
    load_pop3d_weights,
)
from lidar_ovseg_ros.models.pop3d.heads import TPVAggregator
from lidar_ovseg_ros.models.pop3d.resnet_dcn import (
    ModulatedDeformConv2dPack,
    modulated_deform_conv2d,
)
from lidar_ovseg_ros.models.pop3d.tpvformer import (
    TPVImageCrossAttention,
    TPVMSDeformableAttention3D,
    multi_scale_deformable_attn,
)

# ----------------------------------------------------------------------------------------------
# Slow references written from the published formulas (one sample at a time)


def _bilinear_zero_pad(img: np.ndarray, y: float, x: float) -> np.ndarray:
    """img [C, H, W] at continuous pixel (y, x); pixels outside the image count as zero."""
    c, h, w = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = np.zeros(c)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def _slow_dcn(x, offset, mask, weight, bias, stride, padding, dilation, deform_groups):
    b, c, h, w = x.shape
    cout, _, kh, kw = weight.shape
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    cpg = c // deform_groups
    out = np.zeros((b, cout, ho, wo))
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                col = np.zeros((c, kh, kw))
                for g in range(deform_groups):
                    for a in range(kh):
                        for bb in range(kw):
                            k = a * kw + bb
                            dy = offset[n, g * 2 * kh * kw + 2 * k, i, j]
                            dx = offset[n, g * 2 * kh * kw + 2 * k + 1, i, j]
                            m = mask[n, g * kh * kw + k, i, j]
                            py = i * stride - padding + a * dilation + dy
                            px = j * stride - padding + bb * dilation + dx
                            sl = slice(g * cpg, (g + 1) * cpg)
                            col[sl, a, bb] = m * _bilinear_zero_pad(x[n, sl], py, px)
                out[n, :, i, j] = np.tensordot(weight, col, axes=3) + bias
    return out


def _slow_msda(value, shapes, locations, weights):
    """value [B, L, heads, dh]; locations [B, Q, heads, levels, points, 2] in [0,1] (x, y)."""
    b, _, heads, dh = value.shape
    q, points = locations.shape[1], locations.shape[4]
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    out = np.zeros((b, q, heads * dh))
    for n in range(b):
        for qi in range(q):
            for hd in range(heads):
                acc = np.zeros(dh)
                for lv, (h, w) in enumerate(shapes):
                    img = value[n, starts[lv] : starts[lv + 1], hd].reshape(h, w, dh)
                    img = img.transpose(2, 0, 1)
                    for p in range(points):
                        lx, ly = locations[n, qi, hd, lv, p]
                        s = _bilinear_zero_pad(img, ly * h - 0.5, lx * w - 0.5)
                        acc += weights[n, qi, hd, lv, p] * s
                out[n, qi, hd * dh : (hd + 1) * dh] = acc
    return out


# ----------------------------------------------------------------------------------------------
# DCNv2


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups"), [(1, 1, 1, 1), (2, 1, 1, 1), (1, 2, 2, 2)]
)
def test_dcn_with_zero_offsets_and_unit_mask_is_a_convolution(stride, padding, dilation, groups):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 11, 9, generator=g)
    weight = torch.randn(4, 6 // groups, 3, 3, generator=g)
    bias = torch.randn(4, generator=g)
    ho = (11 + 2 * padding - dilation * 2 - 1) // stride + 1
    wo = (9 + 2 * padding - dilation * 2 - 1) // stride + 1
    offset = torch.zeros(2, 2 * 9, ho, wo)
    mask = torch.ones(2, 9, ho, wo)
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation, groups)
    ref = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_dcn_matches_slow_reference_with_fractional_offsets_masks_and_deform_groups():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 6, 7))
    weight = rng.standard_normal((3, 4, 3, 3))
    bias = rng.standard_normal(3)
    dg, stride, padding, dilation = 2, 1, 1, 1
    # Offsets up to +-3 px, some pushing samples well outside the image.
    offset = rng.uniform(-3, 3, (1, 2 * dg * 9, 6, 7))
    mask = rng.uniform(0, 1, (1, dg * 9, 6, 7))
    out = modulated_deform_conv2d(
        *(torch.from_numpy(a).float() for a in (x, offset, mask, weight, bias)),
        stride,
        padding,
        dilation,
        1,
        dg,
    )
    ref = _slow_dcn(x, offset, mask, weight, bias, stride, padding, dilation, dg)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_dcn_integer_offset_shifts_the_sampling_grid():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(1, 2, 8, 8)
    weight = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    offset = torch.zeros(1, 18, 8, 8)
    offset[:, 0::2] = 1.0  # every tap samples one row lower
    out = modulated_deform_conv2d(x, offset, torch.ones(1, 9, 8, 8), weight, None, 1, 1, 1)
    # output row i, tap row a reads input row i + a: a conv over x padded 0 rows above, 2 below
    ref = F.conv2d(F.pad(x, (1, 1, 0, 2)), weight)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-3)


def test_dcn_pack_at_init_is_half_a_convolution_and_has_27_offset_channels():
    layer = ModulatedDeformConv2dPack(8, 5, 3, stride=2, padding=1)
    assert layer.conv_offset.weight.shape == (27, 8, 3, 3)
    assert layer.bias is None
    x = torch.randn(1, 8, 9, 10)
    # zero-initialised offset branch: offsets 0, mask sigmoid(0) = 0.5
    torch.testing.assert_close(
        layer(x), 0.5 * F.conv2d(x, layer.weight, None, 2, 1), rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------------------------
# Deformable attention


def test_multi_scale_deformable_attention_matches_slow_reference():
    rng = np.random.default_rng(3)
    shapes = [(5, 7), (3, 4)]
    b, heads, dh, q, points = 2, 2, 3, 4, 3
    value = rng.standard_normal((b, sum(h * w for h, w in shapes), heads, dh))
    # includes locations outside [0, 1] and far outside (points behind a camera)
    locations = rng.uniform(-0.3, 1.3, (b, q, heads, len(shapes), points, 2))
    locations[0, 0, 0, 0, 0] = (1e6, -1e6)
    weights = rng.uniform(0, 1, (b, q, heads, len(shapes), points))
    out = multi_scale_deformable_attn(
        torch.from_numpy(value).float(),
        shapes,
        torch.from_numpy(locations).float(),
        torch.from_numpy(weights).float(),
    )
    ref = _slow_msda(value, shapes, locations, weights)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)


def _rebatched_cross_attention(module, query, value, ref_cams, masks, shapes):
    """The official TPVImageCrossAttention algorithm: per camera, gather the visible queries of
    each plane into a zero-padded batch, run the deformable attention on the padded batch, add
    the outputs back and divide by the number of cameras that see each query."""
    sizes = [module.tpv_h * module.tpv_w, module.tpv_z * module.tpv_h, module.tpv_w * module.tpv_z]
    queries = torch.split(query, sizes, dim=1)
    ncam, c = value.shape[1], query.shape[-1]
    indexes = [[m[cam, 0].sum(-1).nonzero().squeeze(-1) for cam in range(ncam)] for m in masks]
    reb_q, reb_r = [], []
    for p in range(3):
        max_len = max(len(i) for i in indexes[p])
        d = ref_cams[p].shape[3]
        qq = query.new_zeros(ncam, max_len, c)
        rr = query.new_zeros(ncam, max_len, d, 2)
        for cam in range(ncam):
            i = indexes[p][cam]
            qq[cam, : len(i)] = queries[p][0, i]
            rr[cam, : len(i)] = ref_cams[p][cam, 0, i]
        reb_q.append(qq)
        reb_r.append(rr)
    outs = module.deformable_attention(reb_q, value[0], reb_r, shapes)
    slots = [torch.zeros_like(q) for q in queries]
    for p in range(3):
        for cam in range(ncam):
            i = indexes[p][cam]
            slots[p][0, i] += outs[p][cam, : len(i)]
        count = (masks[p].sum(-1) > 0).permute(1, 2, 0).sum(-1).clamp(min=1)
        slots[p] = slots[p] / count[..., None]
    return module.output_proj(torch.cat(slots, 1)) + query


def test_image_cross_attention_equals_the_official_rebatching_algorithm():
    torch.manual_seed(4)
    h, w, z, c, ncam = 3, 4, 2, 16, 3
    shapes = [(4, 5), (2, 3)]
    da = TPVMSDeformableAttention3D(c, 4, len(shapes), (4, 8, 8), (2, 4, 4))
    for lin in [*da.sampling_offsets, *da.attention_weights]:
        torch.nn.init.normal_(lin.weight, std=0.3)  # non-trivial offsets and weights
    module = TPVImageCrossAttention(c, h, w, z, da).eval()
    nq = [h * w, z * h, w * z]
    query = torch.randn(1, sum(nq), c)
    value = torch.randn(1, ncam, sum(a * b for a, b in shapes), c)
    ref_cams = [torch.rand(ncam, 1, n, d, 2) for n, d in zip(nq, (2, 4, 4), strict=True)]
    masks = [torch.rand(ncam, 1, n, d) > 0.6 for n, d in zip(nq, (2, 4, 4), strict=True)]
    with torch.no_grad():
        out = module(query, value, ref_cams, masks, shapes)
        ref = _rebatched_cross_attention(module, query, value, ref_cams, masks, shapes)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Official names and shapes

# Derived from vobecant/POP3D config/pop3d_maskclip_12ep.py and tpvformer04/*: mmdet ResNet-101
# (caffe, DCNv2 in stages 3-4), mmdet FPN (3 inputs, 4 outputs), TPVFormerHead/Encoder with 3
# TPVFormerLayers, and TPVAggregator with 2-layer occupancy and feature decoders.
OFFICIAL_SHAPES = {
    "img_backbone.conv1.weight": (64, 3, 7, 7),
    "img_backbone.bn1.running_var": (64,),
    "img_backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "img_backbone.layer2.3.conv2.weight": (128, 128, 3, 3),
    "img_backbone.layer3.0.conv1.weight": (256, 512, 1, 1),
    "img_backbone.layer3.0.conv2.weight": (256, 256, 3, 3),
    "img_backbone.layer3.0.conv2.conv_offset.weight": (27, 256, 3, 3),
    "img_backbone.layer3.22.conv2.conv_offset.bias": (27,),
    "img_backbone.layer4.2.conv2.conv_offset.weight": (27, 512, 3, 3),
    "img_backbone.layer4.0.downsample.1.num_batches_tracked": (),
    "img_backbone.layer4.2.bn3.weight": (2048,),
    "img_neck.lateral_convs.0.conv.weight": (256, 512, 1, 1),
    "img_neck.lateral_convs.2.conv.bias": (256,),
    "img_neck.fpn_convs.3.conv.weight": (256, 256, 3, 3),
    "tpv_head.level_embeds": (4, 256),
    "tpv_head.cams_embeds": (6, 256),
    "tpv_head.tpv_mask_hw": (1, 100, 100),
    "tpv_head.positional_encoding.row_embed.weight": (100, 128),
    "tpv_head.positional_encoding.col_embed.weight": (100, 128),
    "tpv_head.tpv_embedding_hw.weight": (10000, 256),
    "tpv_head.tpv_embedding_zh.weight": (800, 256),
    "tpv_head.tpv_embedding_wz.weight": (800, 256),
    "tpv_head.encoder.ref_3d_hw": (1, 4, 10000, 3),
    "tpv_head.encoder.ref_3d_zh": (1, 32, 800, 3),
    "tpv_head.encoder.ref_3d_wz": (1, 32, 800, 3),
    "tpv_head.encoder.ref_2d_hw": (1, 10000, 1, 2),
    "tpv_head.encoder.ref_2d_zh": (1, 800, 1, 2),
    "tpv_head.encoder.ref_2d_wz": (1, 800, 1, 2),
    "tpv_head.encoder.layers.0.attentions.0.sampling_offsets.weight": (128, 512),
    "tpv_head.encoder.layers.0.attentions.0.attention_weights.weight": (64, 512),
    "tpv_head.encoder.layers.1.attentions.0.value_proj.weight": (256, 256),
    "tpv_head.encoder.layers.2.attentions.0.output_proj.bias": (256,),
    "tpv_head.encoder.layers.0.attentions.1.deformable_attention.sampling_offsets.0.weight": (
        512,
        256,
    ),
    "tpv_head.encoder.layers.2.attentions.1.deformable_attention.sampling_offsets.1.weight": (
        4096,
        256,
    ),
    "tpv_head.encoder.layers.1.attentions.1.deformable_attention.attention_weights.0.bias": (256,),
    "tpv_head.encoder.layers.1.attentions.1.deformable_attention.attention_weights.2.weight": (
        2048,
        256,
    ),
    "tpv_head.encoder.layers.0.attentions.1.deformable_attention.value_proj.weight": (256, 256),
    "tpv_head.encoder.layers.0.attentions.1.output_proj.weight": (256, 256),
    "tpv_head.encoder.layers.2.ffns.0.layers.0.0.weight": (512, 256),
    "tpv_head.encoder.layers.2.ffns.0.layers.1.weight": (256, 512),
    "tpv_head.encoder.layers.1.norms.2.bias": (256,),
    "tpv_aggregator.decoder.0.weight": (512, 256),
    "tpv_aggregator.decoder.2.weight": (256, 512),
    "tpv_aggregator.classifier.weight": (2, 256),
    "tpv_aggregator.decoder_ft.0.weight": (1024, 256),
    "tpv_aggregator.decoder_ft.2.weight": (1024, 1024),
    "tpv_aggregator.classifier_ft.weight": (512, 1024),
    "tpv_aggregator.classifier_ft.bias": (512,),
}


def _official_key_count() -> int:
    blocks, dcn_blocks = 3 + 4 + 23 + 3, 23 + 3
    backbone = 1 + 5 + blocks * (3 + 3 * 5) + dcn_blocks * 2 + 4 * (1 + 5)
    neck = 3 * 2 + 4 * 2
    per_layer = 4 * 2 + (2 + 3 * 2 + 3 * 2 + 2) + 2 * 2 + 3 * 2
    head = 2 + 1 + 1 + 1 + 3 + 6 + 3 * per_layer
    aggregator = 2 * 2 + 2 + 2 * 2 + 2
    return backbone + neck + head + aggregator  # 676 + 14 + 116 + 12 = 818


@pytest.fixture(scope="module")
def full_state_dict():
    return Pop3DNetwork(Pop3DConfig.full()).state_dict()


def test_full_network_has_the_official_key_names_and_shapes(full_state_dict):
    sd = full_state_dict
    for key, shape in OFFICIAL_SHAPES.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    assert len(sd) == _official_key_count() == 818
    prefixes = {k.split(".")[0] for k in sd}
    assert prefixes == {"img_backbone", "img_neck", "tpv_head", "tpv_aggregator"}
    # DCN only in stages 3 and 4, never a bias on the deformable conv
    dcn = {k.split(".")[1] for k in sd if "conv_offset" in k}
    assert dcn == {"layer3", "layer4"}
    assert not any(k.endswith("conv2.bias") for k in sd if k.startswith("img_backbone"))


def test_full_network_reference_points_are_the_official_pillars(full_state_dict):
    sd = full_state_dict
    hw = sd["tpv_head.encoder.ref_3d_hw"][0]  # [4, H*W, 3]
    # query h*W + w -> x = (w + .5) / W, y = (h + .5) / H; 4 heights (0.5 .. 7.5) / 8
    heights = torch.linspace(0.5, 7.5, 4) / 8
    torch.testing.assert_close(hw[:, 0, 2], heights)
    torch.testing.assert_close(hw[:, 0, :2], torch.full((4, 2), 0.005))
    torch.testing.assert_close(hw[:, 1 * 100 + 7, :2], torch.tensor([0.075, 0.015]).expand(4, 2))
    zh = sd["tpv_head.encoder.ref_3d_zh"][0]  # query z*H + h: y from h, z from z, pillar along x
    q = 3 * 100 + 42
    torch.testing.assert_close(zh[:, q, 1], torch.full((32,), 42.5 / 100))
    torch.testing.assert_close(zh[:, q, 2], torch.full((32,), 3.5 / 8))
    torch.testing.assert_close(zh[:, q, 0], torch.linspace(0.5, 101.9, 32) / 102.4)
    wz = sd["tpv_head.encoder.ref_3d_wz"][0]  # query w*Z + z: x from w, z from z, pillar along y
    q = 17 * 8 + 5
    torch.testing.assert_close(wz[:, q, 0], torch.full((32,), 17.5 / 100))
    torch.testing.assert_close(wz[:, q, 2], torch.full((32,), 5.5 / 8))
    torch.testing.assert_close(wz[:, q, 1], torch.linspace(0.5, 101.9, 32) / 102.4)


def test_config_validation_names_the_bad_field():
    with pytest.raises(Pop3DConfigError, match="num_points_in_pillar"):
        Pop3DNetwork(Pop3DConfig.tiny().replace(num_points_in_pillar=(2, 3, 4)))
    with pytest.raises(Pop3DConfigError, match="embed_dims"):
        Pop3DNetwork(Pop3DConfig.tiny().replace(embed_dims=30))
    full = Pop3DConfig.full()
    assert full.grid_size == (100, 100, 8)
    assert full.voxel_size == pytest.approx((1.024, 1.024, 1.0))
    assert full.padded_image_size == (928, 1600)
    assert full.camera_names == NUSCENES_CAMERAS


# ----------------------------------------------------------------------------------------------
# Aggregation


def test_voxel_feature_is_the_sum_of_the_three_plane_features():
    h, w, z, c = 3, 4, 2, 5
    agg = TPVAggregator(h, w, z, in_dims=c, hidden_dims=6, out_dims=c, feature_dim=7,
                        hidden_dims_ft=6, out_dims_ft=6)  # fmt: skip
    hw, zh, wz = torch.randn(1, h * w, c), torch.randn(1, z * h, c), torch.randn(1, w * z, c)
    vox = agg.voxel_features([hw, zh, wz])
    assert vox.shape == (1, w, h, z, c)  # [B, X, Y, Z, C]
    for x, y, k in [(0, 0, 0), (3, 2, 1), (1, 2, 0), (2, 0, 1)]:
        expected = hw[0, y * w + x] + zh[0, k * h + y] + wz[0, x * z + k]
        torch.testing.assert_close(vox[0, x, y, k], expected)
    occ, ft = agg([hw, zh, wz])
    assert occ.shape == (1, w, h, z, 2) and ft.shape == (1, w, h, z, 7)
    torch.testing.assert_close(ft, agg.language(vox))


# ----------------------------------------------------------------------------------------------
# Checkpoints


def test_official_format_checkpoint_loads_strictly(tmp_path):
    torch.manual_seed(5)
    src = Pop3DNetwork(Pop3DConfig.tiny())
    wrapped = {
        "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()},
        "epoch": 12,
        "global_iter": 1000,
    }
    path = tmp_path / "pop3d_weights.pth"
    torch.save(wrapped, path)
    torch.manual_seed(6)
    dst = Pop3DNetwork(Pop3DConfig.tiny())
    assert not torch.equal(dst.tpv_head.cams_embeds, src.tpv_head.cams_embeds)
    load_pop3d_weights(dst, path)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k

    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": src.state_dict()}, plain)
    load_pop3d_weights(Pop3DNetwork(Pop3DConfig.tiny()), plain)


def test_checkpoint_errors_name_the_path_and_the_keys(tmp_path):
    net = Pop3DNetwork(Pop3DConfig.tiny())
    missing = tmp_path / "nope" / "pop3d_weights.pth"
    with pytest.raises(CheckpointNotFoundError, match=r"nope/pop3d_weights\.pth"):
        load_pop3d_weights(net, missing)
    state = dict(net.state_dict())
    del state["tpv_aggregator.classifier_ft.weight"]
    state["tpv_aggregator.decoder_ft_dino.0.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_pop3d_weights(net, path)
    assert "tpv_aggregator.classifier_ft.weight" in str(err.value)
    assert "tpv_aggregator.decoder_ft_dino.0.weight" in str(err.value)


# ----------------------------------------------------------------------------------------------
# Real frame


def _frame_inputs(frame, cfg: Pop3DConfig):
    h, w = cfg.image_size
    hp, wp = cfg.padded_image_size
    imgs = torch.zeros(1, len(cfg.camera_names), 3, hp, wp)
    l2i = []
    for i, name in enumerate(cfg.camera_names):
        cam = frame.cameras[name]
        x = torch.tensor(cam.load_image()).permute(2, 0, 1).float().flip(0)[None]
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[0]
        imgs[0, i, :, :h, :w] = x - torch.tensor(cfg.img_mean).view(3, 1, 1)
        scale = np.diag([w / cam.width, h / cam.height, 1.0, 1.0])
        l2i.append(scale @ cam.lidar2img)
    return imgs, torch.tensor(np.stack(l2i), dtype=torch.float32)[None], (hp, wp)


def test_point_sampling_projects_like_the_frame_calibration(nuscenes_frame):
    cfg = Pop3DConfig.tiny()
    net = Pop3DNetwork(cfg)
    enc = net.tpv_head.encoder
    pts = nuscenes_frame.xyz[::50]
    lo, hi = np.array(cfg.pc_range[:3]), np.array(cfg.pc_range[3:])
    pts = pts[np.all((pts > lo) & (pts < hi), axis=1)]
    ref = torch.tensor((pts - lo) / (hi - lo), dtype=torch.float32)[None, None]  # [1, 1, n, 3]
    l2i = torch.tensor(
        np.stack([nuscenes_frame.cameras[n].lidar2img for n in cfg.camera_names]),
        dtype=torch.float32,
    )[None]
    uv, mask = enc.point_sampling(ref, l2i, (900, 1600))
    total = 0
    for i, name in enumerate(cfg.camera_names):
        cam = nuscenes_frame.cameras[name]
        pix, inside = cam.project(pts, min_depth=1e-5)
        m = mask[i, 0, :, 0].numpy()
        assert np.array_equal(m & inside, m)  # the network only sees points the calibration sees
        assert (inside & ~m).sum() <= 2  # border pixels: strict vs half-open bounds
        got = uv[i, 0, :, 0].numpy() * np.array([1600, 900])
        np.testing.assert_allclose(got[m], pix[m], rtol=1e-4, atol=0.05)
        total += int(m.sum())
    assert total > 100


def test_tiny_forward_on_the_real_nuscenes_images(nuscenes_frame):
    cfg = Pop3DConfig.tiny()
    torch.manual_seed(7)
    net = Pop3DNetwork(cfg)
    imgs, l2i, hw = _frame_inputs(nuscenes_frame, cfg)
    assert hw == (64, 128)
    with torch.no_grad():
        occ, feats = net(imgs, l2i, hw)
        planes = net.encode(net.neck(net.backbone(imgs), 1), l2i, hw)
    assert occ.shape == (1, 16, 16, 4, 2)
    assert feats.shape == (1, 16, 16, 4, cfg.feature_dim)
    assert torch.isfinite(occ).all() and torch.isfinite(feats).all()
    # The image features reach the planes: other images give other planes (ignoring the fixed
    # queries alone would not).
    with torch.no_grad():
        planes2 = net.encode(net.neck(net.backbone(imgs.flip(-1)), 1), l2i, hw)
    assert not torch.allclose(planes[0], planes2[0])
    # Projection matrices change the result too (the cross-attention uses them)
    with torch.no_grad():
        occ_shift, _ = net(imgs, torch.diag(torch.tensor([0.5, 1.0, 1.0, 1.0])) @ l2i, hw)
    assert not torch.allclose(occ, occ_shift)
