"""IGLOSS prototype features against a slow, explicit per-image reference implementation.

The reference below spells out every step of IGLOSS's `extract_image_features.py` with the timm
ViT it uses (pre-norm blocks, position embeddings resampled once with antialiased bicubic, last
block output before the final norm), computed in float64 from the raw weights, one image at a time.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lidar_ovseg_ros.frames import FRAMES_DIR
from lidar_ovseg_ros.prototypes.image_features import (
    DinoV2FeatureExtractor,
    ImageFeatureConfig,
    ImageFeatureConfigError,
)
from lidar_ovseg_ros.prototypes.tiny_models import (
    TINY_FEATURE_IMAGE_SIZE,
    build_tiny_dinov2,
    build_tiny_feature_extractor,
)

SIZE = TINY_FEATURE_IMAGE_SIZE  # 56 -> 4x4 patches (the tiny model's native grid is 5x5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _perturbed_state(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Randomise every parameter (layer norms, layer scales, CLS, ...) so that no step can hide
    behind an identity initialisation; returns the new state dict."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _real_images() -> list[Image.Image]:
    """Crops of the bundled nuScenes and KITTI camera images, of different sizes and aspects."""
    front = Image.open(FRAMES_DIR / "nuscenes_frame" / "CAM_FRONT.jpg").convert("RGB")
    kitti = Image.open(FRAMES_DIR / "kitti_frame" / "image_2.png").convert("RGB")
    return [
        front.crop((600, 380, 1000, 620)),
        kitti.crop((200, 100, 330, 370)),
        front,
        kitti.crop((0, 0, 97, 61)),
        front.crop((100, 500, 300, 700)),
    ]


def _reference_feature(
    image: Image.Image,
    state: dict[str, torch.Tensor],
    num_layers: int,
    heads: int,
    prefix: int,
    eps: float = 1e-6,
) -> np.ndarray:
    """IGLOSS on one image, every step explicit, float64."""
    s = {k: v.double() for k, v in state.items()}
    # Preprocess: [0, 1], resize to SIZE x SIZE (torchvision tensor resize), ImageNet mean/std.
    x = torch.tensor(np.asarray(image) / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = ((x - mean) / std).double()
    # Patch embedding + CLS (+ registers) + position embeddings resampled as timm does.
    tokens = F.conv2d(
        x,
        s["embeddings.patch_embeddings.projection.weight"],
        s["embeddings.patch_embeddings.projection.bias"],
        stride=14,
    )
    dim, g = tokens.shape[1], tokens.shape[2]
    tokens = tokens.flatten(2).transpose(1, 2)[0]  # [g*g, D]
    pos = state["embeddings.position_embeddings"][0].float()
    old = math.isqrt(pos.shape[0] - 1)
    grid = pos[1:].reshape(1, old, old, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False, antialias=True)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(g * g, dim).double()
    cls = s["embeddings.cls_token"][0] + pos[:1].double()
    h = torch.cat([cls, tokens + patch_pos])
    if prefix > 1:
        h = torch.cat([h[:1], s["embeddings.register_tokens"][0], h[1:]])

    def ln(v, name):
        return F.layer_norm(v, (dim,), s[f"{name}.weight"], s[f"{name}.bias"], eps)

    def lin(v, name):
        return v @ s[f"{name}.weight"].T + s[f"{name}.bias"]

    # Pre-norm transformer blocks with layer scale (timm `Block` with `ls1`/`ls2`).
    dh = dim // heads
    for i in range(num_layers):
        p = f"encoder.layer.{i}"
        y = ln(h, f"{p}.norm1")
        q, k, v = (lin(y, f"{p}.attention.{n}_proj").view(-1, heads, dh) for n in "qkv")
        att = torch.softmax(torch.einsum("nhd,mhd->hnm", q, k) / math.sqrt(dh), dim=-1)
        o = torch.einsum("hnm,mhd->nhd", att, v).reshape(-1, dim)
        h = h + s[f"{p}.layer_scale1.lambda1"] * lin(o, f"{p}.attention.o_proj")
        y = ln(h, f"{p}.norm2")
        y = lin(F.gelu(lin(y, f"{p}.mlp.fc1")), f"{p}.mlp.fc2")
        h = h + s[f"{p}.layer_scale2.lambda1"] * y
    # Last block output *before* the final norm, prefix tokens dropped -> [D, g, g].
    feat = h[prefix:].T.reshape(1, dim, g, g)
    up = F.interpolate(feat, scale_factor=14, mode="bilinear", align_corners=True)[0]
    assert up.shape == (dim, SIZE, SIZE)
    up = up / up.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return up.mean(dim=(1, 2)).numpy()


@pytest.mark.parametrize("registers", [0, 4])
def test_matches_slow_reference(registers):
    model = build_tiny_dinov2(seed=3, hidden=32, layers=2, heads=2, registers=registers)
    state = _perturbed_state(model, seed=11)
    config = ImageFeatureConfig(model_id="tiny", image_size=SIZE, device="cpu", batch_size=2)
    extractor = DinoV2FeatureExtractor(model, config)
    images = _real_images()

    got = extractor.extract(images)  # batches of 2, 2, 1

    assert got.shape == (len(images), 32) and got.dtype == np.float32
    ref = np.stack([_reference_feature(im, state, 2, 2, prefix=1 + registers) for im in images])
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)
    # Means of unit vectors: norm below 1, and the images must not all look alike.
    assert np.all(np.linalg.norm(got, axis=1) <= 1 + 1e-6)
    assert np.abs(got[0] - got[1]).max() > 1e-3


def test_prenorm_tokens_are_hf_last_hidden_state_before_layernorm():
    extractor = build_tiny_feature_extractor(seed=0)
    pixels = extractor.preprocess(_real_images()[:2])
    with torch.no_grad():
        out = extractor.model(pixel_values=pixels, output_hidden_states=True)
    grid = extractor.patch_grid(pixels)
    # transformers: hidden_states = (embeddings, block 1, ..., block L); the last is pre-norm.
    assert len(out.hidden_states) == extractor.model.config.num_hidden_layers + 1
    last = out.hidden_states[-1]
    torch.testing.assert_close(extractor.model.layernorm(last), out.last_hidden_state)
    g = SIZE // 14
    expect = last[:, 1:].reshape(2, g, g, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(grid, expect, rtol=0, atol=0)


def test_channel_chunked_upsampling_equals_full():
    images = _real_images()[:3]
    full = build_tiny_feature_extractor(seed=1, hidden=48)
    # 1 MB budget < 48 channels x 3 images x 56 x 56 x 4 bytes: forces several channel chunks.
    small = DinoV2FeatureExtractor(
        build_tiny_dinov2(seed=1, hidden=48), replace(full.config, upsample_budget_mb=1)
    )
    assert small.key == full.key  # memory budget does not change the numbers
    np.testing.assert_allclose(small.extract(images), full.extract(images), rtol=0, atol=1e-6)


def test_from_pretrained_local_folder_equals_in_memory_model(tmp_path):
    model = build_tiny_dinov2(seed=5)
    model.save_pretrained(tmp_path / "dino")
    in_memory = DinoV2FeatureExtractor(
        build_tiny_dinov2(seed=5), ImageFeatureConfig(image_size=SIZE, device="cpu")
    )
    loaded = DinoV2FeatureExtractor.from_pretrained(
        ImageFeatureConfig(model_id=str(tmp_path / "dino"), image_size=SIZE, device="cpu")
    )
    images = _real_images()[:2]
    np.testing.assert_array_equal(loaded.extract(images), in_memory.extract(images))
    assert loaded.dim == 32


def test_batching_and_input_types_do_not_change_features():
    extractor = build_tiny_feature_extractor(seed=2)
    images = _real_images()
    together = extractor.extract(images)
    one_by_one = np.concatenate([extractor.extract([im]) for im in images])
    np.testing.assert_allclose(together, one_by_one, rtol=0, atol=1e-6)
    as_arrays = extractor.extract([np.asarray(im) for im in images])
    np.testing.assert_array_equal(as_arrays, together)
    assert extractor.extract([]).shape == (0, extractor.dim)


def test_transparent_pixels_become_white():
    extractor = build_tiny_feature_extractor(seed=2)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (200, 30, 30, 255)  # an opaque red square on a transparent background
    white = np.full((40, 40, 3), 255, np.uint8)
    white[10:30, 10:30] = (200, 30, 30)
    got = extractor.extract([Image.fromarray(rgba, "RGBA"), rgba])
    np.testing.assert_array_equal(got, np.repeat(extractor.extract([white]), 2, axis=0))


def test_seed_determinism_and_keys():
    a, b = build_tiny_feature_extractor(seed=7), build_tiny_feature_extractor(seed=7)
    c = build_tiny_feature_extractor(seed=8)
    images = _real_images()[:2]
    assert a.key == b.key != c.key
    np.testing.assert_array_equal(a.extract(images), b.extract(images))
    assert np.abs(a.extract(images) - c.extract(images)).max() > 1e-3
    # Settings that change the numbers change the key; device and batch size do not.
    d = DinoV2FeatureExtractor(build_tiny_dinov2(7), replace(a.config, image_size=42))
    e = DinoV2FeatureExtractor(build_tiny_dinov2(7), replace(a.config, batch_size=1))
    assert d.key != a.key and e.key == a.key


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"image_size": 50}, "image_size"),
        ({"patch_size": 0}, "patch_size"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
        ({"dtype": "float64"}, "dtype"),
        ({"amp": "int8"}, "amp"),
        ({"device": "tpu:x"}, "device"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ImageFeatureConfigError, match=field):
        ImageFeatureConfig(**kwargs)


def test_patch_size_mismatch_is_reported():
    with pytest.raises(ImageFeatureConfigError, match="patch_size"):
        DinoV2FeatureExtractor(
            build_tiny_dinov2(0), ImageFeatureConfig(image_size=64, patch_size=16)
        )
