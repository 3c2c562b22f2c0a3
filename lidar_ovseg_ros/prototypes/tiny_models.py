"""Tiny, untrained, seed-deterministic stand-ins for DINOv2 and a text-to-image pipeline.

They are real `transformers`/`diffusers` models built from small configs, with no hub access, so
tests and the node's offline "tiny" profile run the exact production code paths in seconds on a
CPU. Their features and images carry no meaning; only their determinism does (same seed, same
weights, same images).
"""

from __future__ import annotations

from typing import Any

import torch

from .image_features import DinoV2FeatureExtractor, ImageFeatureConfig

TINY_DINOV2_NATIVE_SIZE = 70
"""Native (position-embedding) image size of the tiny DINOv2: 5x5 patches of 14 px."""
TINY_FEATURE_IMAGE_SIZE = 56
"""Input size the tiny profile runs at: 4x4 patches, so the timm-style position-embedding
resampling (here 5x5 -> 4x4, for the real model 37x37 -> 32x32) is exercised too."""
TINY_IMAGE_SIDE = 64
"""Side of the images the tiny pipeline generates (latents 32x32, VAE scale factor 2)."""


def build_tiny_dinov2(
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    image_size: int = TINY_DINOV2_NATIVE_SIZE,
    registers: int = 0,
) -> torch.nn.Module:
    """A randomly initialised DINOv2 (patch 14) with weights drawn from `seed` (the global torch
    RNG is left untouched). `registers > 0` builds a `Dinov2WithRegistersModel`."""
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    common: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        mlp_ratio=2,
        image_size=image_size,
        patch_size=14,
    )
    if registers:
        config = Dinov2WithRegistersConfig(num_register_tokens=registers, **common)
        from transformers import Dinov2WithRegistersModel as model_cls
    else:
        config = Dinov2Config(**common)
        from transformers import Dinov2Model as model_cls
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


def build_tiny_feature_extractor(
    seed: int = 0,
    hidden: int = 32,
    image_size: int = TINY_FEATURE_IMAGE_SIZE,
    device: str = "cpu",
    batch_size: int = 8,
) -> DinoV2FeatureExtractor:
    """`DinoV2FeatureExtractor` around `build_tiny_dinov2(seed, hidden)`, IGLOSS steps unchanged."""
    config = ImageFeatureConfig(
        model_id=f"tiny-dinov2-h{hidden}-s{seed}",
        image_size=image_size,
        device=device,
        batch_size=batch_size,
    )
    return DinoV2FeatureExtractor(build_tiny_dinov2(seed, hidden), config)


def _byte_level_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the 256 byte values (GPT-2/CLIP)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def build_tiny_clip_tokenizer(max_length: int = 77) -> Any:
    """A character-level CLIP tokenizer (byte alphabet, no merges): every prompt tokenises, and
    different prompts give different ids, with no vocabulary download."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    alphabet = _byte_level_alphabet()
    for suffix in ("", "</w>"):
        for ch in alphabet:
            vocab[ch + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def build_tiny_text_to_image_pipeline(seed: int = 0, hidden: int = 32) -> Any:
    """A `StableDiffusionPipeline` with a tiny CLIP text encoder, UNet and VAE (weights from
    `seed`) and sd-turbo's scheduler kind (Euler, trailing timesteps). Generates 64x64 images."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer.get_vocab()),
                hidden_size=hidden,
                intermediate_size=2 * hidden,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=tokenizer.model_max_length,
                projection_dim=hidden,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=TINY_IMAGE_SIDE // 2,
            in_channels=4,
            out_channels=4,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=hidden,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(16, 32),
            latent_channels=4,
            norm_num_groups=8,
            layers_per_block=1,
            sample_size=TINY_IMAGE_SIDE,
        )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
