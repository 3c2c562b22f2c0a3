"""Image captioner for the camera side of 3D-AVS: one caption per camera image, one batch.

The official 3D-AVS runs BLIP-3 (xGen-MM, phi3-mini based, ~4.6B parameters) outside
`transformers`: it needs `trust_remote_code` (not allowed here), a GPU, and its released weights
are under a non-commercial licence. This module uses BLIP (`BlipForConditionalGeneration`,
Salesforce, BSD-3-Clause) from `transformers` instead: `Salesforce/blip-image-captioning-base`
(~250M parameters, runs on a CPU) by default; any BLIP captioning checkpoint id or local folder
works (e.g. `Salesforce/blip-image-captioning-large`). Decoding is greedy (deterministic),
`max_new_tokens` 30; an optional text prompt conditions the caption (BLIP's "a picture of" style).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

DEFAULT_IMAGE_CAPTIONER = "Salesforce/blip-image-captioning-base"


@dataclass(frozen=True)
class ImageCaptionerConfig:
    """`model`: a BLIP captioning hub id or local folder; `max_new_tokens`; `prompt`: optional
    conditional text (kept out of the returned caption); `device`: 'cpu', 'cuda', 'auto'."""

    model: str = DEFAULT_IMAGE_CAPTIONER
    max_new_tokens: int = 30
    prompt: str = ""
    device: str = "auto"

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise ValueError("ImageCaptionerConfig.model must name a BLIP checkpoint")
        if not 1 <= int(self.max_new_tokens) <= 256:
            raise ValueError("ImageCaptionerConfig.max_new_tokens must be in [1, 256]")
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ValueError(f"ImageCaptionerConfig.device {self.device!r} is not valid")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


class ImageCaptioner:
    """A BLIP model + processor; `caption(images)` -> one caption per image."""

    def __init__(
        self, model: Any, processor: Any, config: ImageCaptionerConfig | None = None
    ) -> None:
        self.config = config or ImageCaptionerConfig()
        self.device = torch.device(next(model.parameters()).device)
        self.model = model.eval()
        self.processor = processor
        self.last_seconds = 0.0

    @classmethod
    def from_pretrained(cls, config: ImageCaptionerConfig | None = None) -> ImageCaptioner:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        config = config or ImageCaptionerConfig()
        model = BlipForConditionalGeneration.from_pretrained(config.model)
        processor = BlipProcessor.from_pretrained(config.model)
        return cls(model.to(config.resolved_device()), processor, config)

    @torch.no_grad()
    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        """[H, W, 3] uint8 RGB images (sizes may differ) -> captions, in order."""
        if len(images) == 0:
            return []
        for i, img in enumerate(images):
            arr = np.asarray(img)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
                raise ValueError(f"image {i} must be [H, W, 3] RGB, got {arr.shape}")
        start = time.perf_counter()
        kwargs: dict[str, Any] = {"images": [np.asarray(i) for i in images], "return_tensors": "pt"}
        if self.config.prompt:
            kwargs["text"] = [self.config.prompt] * len(images)
        inputs = self.processor(**kwargs)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(next(self.model.parameters()).dtype)
        out = self.model.generate(
            **inputs,
            max_new_tokens=self.config.max_new_tokens,
            do_sample=False,
            num_beams=1,
        )
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        self.last_seconds = time.perf_counter() - start
        return [" ".join(t.split()) for t in texts]


def build_tiny_image_captioner(seed: int = 0, image_size: int = 32) -> ImageCaptioner:
    """A tiny random BLIP (2-layer towers of width 32, 32x32 input) with a tiny WordPiece
    tokenizer: the production code path, offline, in well under a second per batch."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    from .tiny_models import build_tiny_bert_tokenizer

    tok = build_tiny_bert_tokenizer()
    width = 32
    config = BlipConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": width,
            "encoder_hidden_size": width,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 2 * width,
            "max_position_embeddings": 64,
            "bos_token_id": tok.cls_token_id,
            "pad_token_id": tok.pad_token_id,
            "sep_token_id": tok.sep_token_id,
            "eos_token_id": tok.sep_token_id,
        },
        vision_config={
            "hidden_size": width,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 2 * width,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=width,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForConditionalGeneration(config)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tok,
    )
    return ImageCaptioner(
        model.eval(), processor, ImageCaptionerConfig(model="tiny-blip", max_new_tokens=12)
    )
