"""VLScene network: the tiny config runs the whole inference path (RepViT + FPN on both views,
stereo cost volume, LSS lifting, GSSA on spconv, OccHead); official-format checkpoints load
strictly with the training-only keys skipped by name; the full config has the official shapes."""

from __future__ import annotations

import pytest
import torch

from lidar_ovseg_ros.models.checkpoints import CheckpointMismatchError
from lidar_ovseg_ros.models.vlscene import (
    TRAINING_ONLY_PREFIXES,
    StereoInputs,
    VLSceneConfig,
    VLSceneNet,
    load_vlscene_checkpoint,
)
from lidar_ovseg_ros.models.vlscene.checkpoint import GRID_CONSTANTS, GridMismatchError
from lidar_ovseg_ros.models.vlscene.view_transformer import (
    DeformConv2dPack,
    build_gwc_volume,
    warp_to_depth,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# camera optical axes -> LiDAR axes (x forward, y left, z up)
CAM2LIDAR_R = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _inputs(cfg: VLSceneConfig, fx: float = 70.0, baseline: float = 0.54, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.input_size
    p2 = torch.tensor([[fx, 0, w / 2, 0], [0, fx, h / 2, 0], [0, 0, 1, 0]])
    p3 = p2.clone()
    p3[0, 3] = -fx * baseline
    eye = torch.eye(3)
    return StereoInputs(
        images=torch.randn(1, 2, 3, h, w, generator=g),
        rots=CAM2LIDAR_R.expand(1, 2, 3, 3),
        trans=torch.zeros(1, 2, 3),
        intrins=torch.stack([p2, p3])[None],
        post_rots=eye.expand(1, 2, 3, 3),
        post_trans=torch.zeros(1, 2, 3),
        bda=eye[None],
        calib=torch.tensor([fx * baseline]),
    )


@pytest.fixture(scope="module")
def tiny() -> VLSceneNet:
    torch.manual_seed(0)
    return VLSceneNet(VLSceneConfig.tiny()).eval()


def test_tiny_forward_shape_and_determinism(tiny: VLSceneNet) -> None:
    cfg = tiny.cfg
    inp = _inputs(cfg)
    with torch.no_grad():
        a = tiny(inp)
        b = tiny(inp)
    assert a.shape == (1, cfg.num_classes, *cfg.occ_size)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)  # spconv runs single-threaded on CPU: repeatable
    # the network depends on the right view (stereo volume), not only the left one
    other = _inputs(cfg)
    other.images = other.images.clone()
    other.images[:, 1] = torch.randn_like(other.images[:, 1])
    with torch.no_grad():
        c = tiny(other)
    assert not torch.allclose(a, c)


def test_lifting_places_features_in_front_of_the_camera(tiny: VLSceneNet) -> None:
    cfg = tiny.cfg
    inp = _inputs(cfg)
    vt = tiny.img_view_transformer
    left = inp.view(0)
    geom = vt.get_geometry(*left, inp.bda)  # (1, 1, D, h, w, 3) in the LiDAR frame
    depths = vt.frustum[..., 2]
    # optical axis pixel -> straight ahead at the bin's depth
    assert torch.allclose(geom[0, 0, ..., 0], depths, atol=1e-4)
    # voxels are filled only where the frustum meets the grid, and sum-pooling keeps the total
    feats = torch.ones(1, 1, *geom.shape[2:5], 1)
    pooled = vt.voxel_pooling(geom, feats)
    assert pooled.shape == (1, 1, *cfg.lss_grid)
    idx = ((geom - (vt.bx - vt.dx / 2)) / vt.dx).long().view(-1, 3)
    inside = ((idx >= 0) & (idx < vt.nx.long())).all(1).sum()
    assert pooled.sum().item() == pytest.approx(float(inside))


def test_gwc_volume_and_warp_follow_disparity() -> None:
    torch.manual_seed(1)
    left = torch.randn(1, 4, 3, 12)
    right = torch.roll(left, shifts=-2, dims=3)  # the scene seen 2 pixels further left
    vol = build_gwc_volume(left, right, maxdisp=5, groups=2)
    best = vol[0, :, :, :, 4:10].mean((0, 2, 3)).argmax().item()
    assert best == 2
    # warp: depth bin d samples disparity calib / (scale * d); calib/scale = 4 -> bin 2 = disp 2
    warped = warp_to_depth(vol, torch.tensor([8.0]), scale=2.0)
    assert torch.allclose(warped[:, :, 1], vol[:, :, 2], atol=1e-6)
    assert torch.allclose(warped[:, :, 3], vol[:, :, 1], atol=1e-6)


def test_deformable_conv_with_zero_offsets_is_a_grouped_conv() -> None:
    torch.manual_seed(2)
    dcn = DeformConv2dPack(8, 8, 3, 1, groups=4)
    x = torch.randn(2, 8, 5, 7)
    ref = torch.nn.functional.conv2d(x, dcn.weight, padding=1, groups=4)
    assert torch.allclose(dcn(x), ref, atol=1e-5)
    # a whole-pixel offset samples the shifted input (zeros outside)
    with torch.no_grad():
        dcn.conv_offset.bias.zero_()
        dcn.conv_offset.bias[1::2] = 1.0  # dx = +1 for every tap
    # out[w] = sum_j W_j x[w + j] (taps j - 1, shifted by +1), zeros outside the image
    padded = torch.nn.functional.pad(x, (0, 2, 1, 1))
    ref = torch.nn.functional.conv2d(padded, dcn.weight, groups=4)
    assert torch.allclose(dcn(x), ref, atol=1e-5)


def _official_format(model: VLSceneNet) -> tuple[dict, dict[str, torch.Tensor]]:
    """An mmcv checkpoint as the official training writes it: meta, state_dict (random
    weights, official names, plus the training-only modules), optimizer state."""
    g = torch.Generator().manual_seed(3)
    state = {}
    for k, v in model.state_dict().items():
        if k.split(".")[-1] in GRID_CONSTANTS or not v.is_floating_point():
            state[k] = v.clone()  # the grid as saved by the official code (same config)
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:  # small: random weights through 60 blocks must stay finite
            state[k] = torch.randn(v.shape, generator=g) * (0.02 if v.dim() > 1 else 0.1)
    extra = {
        "clip_net.encoder.conv1.weight": torch.randn(64, 3, 7, 7, generator=g),
        "img_view_transformer.clip_fusion.0.weight": torch.randn(256, 661, 1, 1, generator=g),
        "img_view_transformer.img_clip_fusion.adapter_sem.weight": torch.randn(128, 128, 1, 1),
        "img_view_transformer.img_seg_head.2.weight": torch.randn(21, 128, 1, 1, generator=g),
        "pts_bbox_head.img_feat_reduce.weight": torch.randn(256, 128, generator=g),
        "pts_bbox_head.point_soft_weights.0.weight": torch.randn(128, 256, generator=g),
        "pts_bbox_head.point_occ_mlp.fc1.weight": torch.randn(256, 256, generator=g),
    }
    ckpt = {
        "meta": {"epoch": 30, "iter": 1000, "mmcv_version": "1.4.0", "CLASSES": ["car"]},
        "state_dict": {**state, **extra},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
    }
    return ckpt, state


def test_official_format_checkpoint_loads_strictly(tmp_path, tiny: VLSceneNet) -> None:
    ckpt, state = _official_format(tiny)
    path = tmp_path / "vlscene.pth"
    torch.save(ckpt, path)
    model, skipped = load_vlscene_checkpoint(path, tiny.cfg)
    assert len(skipped) == 7 and all(k.startswith(TRAINING_ONLY_PREFIXES) for k in skipped)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    with torch.no_grad():
        out = model(_inputs(tiny.cfg))
    assert torch.isfinite(out).all()


def test_checkpoint_of_another_grid_is_refused(tmp_path, tiny: VLSceneNet) -> None:
    ckpt, _ = _official_format(tiny)
    ckpt["state_dict"]["img_view_transformer.dx"] = torch.tensor([0.2, 0.2, 0.2])
    torch.save(ckpt, tmp_path / "grid.pth")
    with pytest.raises(GridMismatchError, match=r"img_view_transformer\.dx"):
        load_vlscene_checkpoint(tmp_path / "grid.pth", tiny.cfg)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_checkpoint_mismatch_names_the_keys(tmp_path, tiny: VLSceneNet, damage: str) -> None:
    ckpt, _ = _official_format(tiny)
    sd = ckpt["state_dict"]
    key = "sparse_unet.downCntx.conv1.weight"
    if damage == "missing":
        del sd[key]
    elif damage == "unexpected":
        sd["img_view_transformer.point_xyz_encoder.0.weight"] = torch.zeros(1)
    else:
        sd[key] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        load_vlscene_checkpoint(tmp_path / "bad.pth", tiny.cfg)
    name = key if damage != "unexpected" else "point_xyz_encoder"
    assert name in str(err.value)


def test_official_config_has_the_official_shapes() -> None:
    """Shapes read off the official modules for `vlscene.py` (no forward: built only)."""
    with torch.device("meta"):
        net = VLSceneNet(VLSceneConfig.official())
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = {
        "img_backbone.features.0.0.c.weight": (40, 3, 3, 3),
        "img_backbone.features.1.token_mixer.0.conv.c.weight": (80, 1, 3, 3),
        "img_backbone.features.1.token_mixer.1.fc1.weight": (24, 80, 1, 1),
        "img_backbone.features.8.token_mixer.2.c.weight": (160, 80, 1, 1),
        "img_backbone.features.54.channel_mixer.m.2.c.weight": (640, 1280, 1, 1),
        "img_neck.lateral_convs.0.conv.weight": (128, 160, 1, 1),
        "img_neck.fpn_convs.3.conv.weight": (128, 128, 3, 3),
        "img_view_transformer.frustum": (112, 48, 160, 3),
        "img_view_transformer.nx": (3,),
        "img_view_transformer.depth_net.bn.weight": (30,),
        "img_view_transformer.depth_net.depth_conv.4.weight": (128, 32, 3, 3),
        "img_view_transformer.depth_net.depth_conv.4.conv_offset.weight": (18, 128, 3, 3),
        "img_view_transformer.depth_net.depth_conv.5.weight": (112, 128, 1, 1),
        "img_view_transformer.depth_net.context_conv.weight": (128, 128, 1, 1),
        "img_view_transformer.stereo_volume_net.feature_withcam.depth_conv.0.weight": (
            64, 128, 1, 1,
        ),
        "img_view_transformer.stereo_volume_net.dres2.conv5.0.weight": (128, 64, 3, 3, 3),
        "img_view_transformer.volume_interaction.CA3D.alpha": (1,),
        "img_view_transformer.volume_interaction.lss2stereo.gamma": (1,),
        "sparse_unet.pre_conv.2.conv1.weight": (64, 64, 7, 7, 7),
        "sparse_unet.downCntx.conv1.weight": (64, 1, 3, 3, 64),
        "sparse_unet.resBlock3.pool.weight": (256, 3, 3, 3, 256),
        "sparse_unet.ReconNet.conv1_3.weight": (128, 1, 1, 3, 128),
        "pts_bbox_head.occ_convs.0.0.weight": (128, 256, 3, 3, 3),
        "pts_bbox_head.sdb.diffusion.1.conv_kx1x1.2.weight": (64, 64, 7, 1, 1),
        "pts_bbox_head.ssc_header.mlp_head.1.weight": (20, 64),
    }  # fmt: skip
    for k, shape in expected.items():
        assert shapes.get(k) == shape, k
    assert len(net.img_backbone.features) == 55
    assert not any(k.startswith(TRAINING_ONLY_PREFIXES) for k in shapes)


def test_sparse_input_indices_are_row_major_for_spconv() -> None:
    """Regression: `nonzero()` returns column-major (N, 4) indices and spconv reads their memory
    as row-major, which silently scrambled GSSA's neighbour maps. A submanifold conv on the
    sparse input must equal the dense conv at the active voxels."""
    import spconv.pytorch as spconv

    from lidar_ovseg_ros.models.minkunet import spconv_cpu_guard
    from lidar_ovseg_ros.models.vlscene.gssa import dense_to_sparse

    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 8, 16, 16, 4, generator=g)
    x = x * (torch.rand(1, 1, 16, 16, 4, generator=g) > 0.7)
    s = dense_to_sparse(x, [16, 16, 4])
    assert s.indices.is_contiguous()
    conv = spconv.SubMConv3d(8, 8, (1, 3, 3), padding=(0, 1, 1), bias=False)
    with torch.no_grad(), spconv_cpu_guard("cpu"):
        out = conv(s).features
        dense = torch.nn.functional.conv3d(x, conv.weight.permute(0, 4, 1, 2, 3), padding=(0, 1, 1))
    mask = x.abs().sum(1) != 0
    assert torch.allclose(out, dense.permute(0, 2, 3, 4, 1)[mask], atol=1e-5)
