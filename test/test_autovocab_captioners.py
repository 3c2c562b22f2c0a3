"""Captioners on the bundled nuScenes frame: the point captioner (tiny trunk + SMAP + GPT-2) on
the LiDAR scan, the image captioner (tiny BLIP) on the six cameras; official file formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lidar_ovseg_ros.autovocab.image_captioner import (
    ImageCaptioner,
    ImageCaptionerConfig,
    build_tiny_image_captioner,
)
from lidar_ovseg_ros.autovocab.point_captioner import PointCaptioner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def camera_images(nuscenes_frame):
    return {name: cam.load_image() for name, cam in sorted(nuscenes_frame.cameras.items())}


def test_image_captioner_batches_the_six_cameras(camera_images, tmp_path):
    captioner = build_tiny_image_captioner(seed=0)
    images = list(camera_images.values())
    assert len(images) == 6
    batch = captioner.caption(images)
    assert len(batch) == 6 and all(isinstance(c, str) and c for c in batch)
    # batching changes nothing: each image alone gives the same caption
    assert [captioner.caption([img])[0] for img in images[:1]] == batch[:1]
    assert captioner.caption([]) == []
    with pytest.raises(ValueError, match=r"image 1 must be \[H, W, 3\]"):
        captioner.caption([images[0], images[1][..., 0]])
    # the production loader (from_pretrained of a folder) gives the same model
    captioner.model.save_pretrained(tmp_path / "blip")
    captioner.processor.save_pretrained(tmp_path / "blip")
    loaded = ImageCaptioner.from_pretrained(
        ImageCaptionerConfig(model=str(tmp_path / "blip"), max_new_tokens=12, device="cpu")
    )
    assert loaded.caption(images[:2]) == batch[:2]


def test_image_captioner_config_is_validated():
    with pytest.raises(ValueError, match="max_new_tokens"):
        ImageCaptionerConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="device"):
        ImageCaptionerConfig(device="tpu")


def test_point_captioner_on_the_bundled_scan(nuscenes_frame):
    captioner = PointCaptioner.tiny(seed=0)
    xyz = nuscenes_frame.xyz
    out = captioner.caption(xyz)
    assert len(out.sectors) == 12
    assert all(s.voxels > 0 and s.caption for s in out.sectors)
    assert sum(s.voxels for s in out.sectors) > 0.5 * len(xyz)
    assert set(out.as_sources()) == {f"lidar/sector_{i}" for i in range(12)}
    assert out.sectors[6].azimuth_deg == (0.0, 30.0)
    assert out.timings["total"] >= out.timings["trunk"]
    again = captioner.caption(xyz)
    assert [s.caption for s in again.sectors] == [s.caption for s in out.sectors]


def test_point_captioner_front_half_only_leaves_rear_sectors_empty(nuscenes_frame):
    captioner = PointCaptioner.tiny(seed=0)
    xyz = nuscenes_frame.xyz
    front = xyz[xyz[:, 0] > 0.5]
    out = captioner.caption(front)
    empty = [s.index for s in out.sectors if s.voxels == 0]
    assert empty == [0, 1, 2, 9, 10, 11]
    assert all(out.sectors[i].caption == "" for i in empty)
    assert set(out.as_sources()) == {f"lidar/sector_{i}" for i in range(3, 9)}
    nothing = captioner.caption(np.zeros((0, 4), np.float32))
    assert nothing.as_sources() == {}


def test_point_captioner_from_official_files(tmp_path, nuscenes_frame):
    """smap_model_epoch_20.pth.tar (net3d + attn_layer) and coco_weights.pt, full layout,
    random weights; the trunk is shared only when the OpenScene weights are the same."""
    from lidar_ovseg_ros.autovocab.clipcap import build_clipcap
    from lidar_ovseg_ros.autovocab.smap import SmapConfig, build_smap_head
    from lidar_ovseg_ros.models.minkunet import MinkUNet, MinkUNetConfig
    from lidar_ovseg_ros.models.openscene_checkpoint import spconv_weight_to_me

    torch.manual_seed(0)
    trunk = MinkUNet(MinkUNetConfig.from_arch("MinkUNet18A", out_channels=768))
    state = {}
    for k, v in trunk.state_dict().items():
        if k.endswith(".weight") and v.ndim in (2, 5):
            state["net3d." + k[: -len(".weight")] + ".kernel"] = spconv_weight_to_me(v)
        else:
            state["net3d." + k] = v
    head = build_smap_head(config=SmapConfig(), seed=1)
    e = 512
    hs = head.state_dict()
    state["attn_layer.in_proj.kernel"] = hs["in_proj.weight"].t().contiguous()
    state["attn_layer.in_proj.bias"] = hs["in_proj.bias"][None]
    state["attn_layer.cpe.kernel"] = spconv_weight_to_me(hs["cpe.weight"])
    state["attn_layer.cpe.bias"] = hs["cpe_bias"][None]
    for k in ("linear", "norm", "q_proj", "k_proj", "v_proj", "c_proj"):
        for p in ("weight", "bias"):
            state[f"attn_layer.{k}.{p}"] = hs[f"{k}.{p}"]
    assert state["attn_layer.cpe.kernel"].shape == (27, e, e)
    smap_path = tmp_path / "smap_model_epoch_20.pth.tar"
    torch.save({"epoch": 20, "state_dict": {"module." + k: v for k, v in state.items()}}, smap_path)

    from lidar_ovseg_ros.autovocab.tiny_models import build_tiny_gpt2_tokenizer, tiny_gpt2_config

    tok = build_tiny_gpt2_tokenizer()
    tok.save_pretrained(tmp_path / "gpt2")
    tiny_coco = build_clipcap(gpt_config=tiny_gpt2_config(len(tok)))
    coco_path = tmp_path / "coco_weights.pt"
    torch.save(tiny_coco.state_dict(), coco_path)
    tiny_cfg = tiny_gpt2_config(len(tok))
    shared = PointCaptioner.from_files(
        smap_path, coco_path, str(tmp_path / "gpt2"), shared_trunk=trunk, gpt_config=tiny_cfg
    )
    assert shared.trunk is trunk
    other = MinkUNet(MinkUNetConfig.from_arch("MinkUNet18A", out_channels=768))
    separate = PointCaptioner.from_files(
        smap_path, coco_path, str(tmp_path / "gpt2"), shared_trunk=other, gpt_config=tiny_cfg
    )
    assert separate.trunk is not other
    for k, v in trunk.state_dict().items():
        assert torch.equal(separate.trunk.state_dict()[k], v), k
    assert torch.equal(shared.head.cpe.weight, head.cpe.weight)
    assert shared.decoder.caption(torch.zeros(1, 512), tok) == tiny_coco.caption(
        torch.zeros(1, 512), tok
    )
    # a real forward of the full-size SMAP head + trunk on a slice of the bundled scan
    xyz = nuscenes_frame.xyz
    near = xyz[np.linalg.norm(xyz[:, :2], axis=1) < 6.0]
    out = shared.caption(near)
    assert len(out.sectors) == 12 and any(s.caption for s in out.sectors)
