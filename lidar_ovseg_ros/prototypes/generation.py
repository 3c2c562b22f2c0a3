"""Prototype images from text: one diffusers text-to-image pipeline, deterministic per image.

IGLOSS labels LiDAR points by matching them with DINOv2 features of *generated* images of every
class: cropped objects on a white background (its repo ships 95 nuScenes / 70 SemanticKITTI such
images, 1-26 per class; the generation prompts are not published). Here the images come from a
diffusers pipeline (default `stabilityai/sd-turbo`, one step, no guidance) with prompt templates
asking for exactly that kind of picture. Each image has its own seed, derived from the base seed,
the full prompt text and its index, so an image never depends on what else is generated with it
(batching, other classes, vocabulary order) and a cache of images stays valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image

from ..vocabulary import VocabClass
from .image_features import resolve_device, weights_digest

DEFAULT_TEMPLATES = ("a photo of {prompt}, isolated object on a white background",)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class GenerationConfigError(ValueError):
    """An invalid generation setting; the message names the field."""


@dataclass(frozen=True)
class GenerationConfig:
    """What to generate for each class, and how (defaults: sd-turbo, 1 step, no guidance)."""

    model_id: str = "stabilityai/sd-turbo"
    """Hugging Face id or local folder of a diffusers text-to-image pipeline."""
    revision: str | None = None
    images_per_class: int = 8
    """Images per class, spread round-robin over its prompts x templates (at least one each)."""
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    """Each holds `{prompt}`, replaced by a class prompt from the vocabulary."""
    negative_prompt: str | None = None
    """Ignored by pipelines without classifier-free guidance (guidance_scale <= 1)."""
    seed: int = 0
    num_inference_steps: int = 1
    guidance_scale: float = 0.0
    height: int = 512
    width: int = 512
    batch_size: int = 4
    device: str = "auto"
    dtype: str = "auto"
    """auto (float16 on CUDA, float32 on CPU) | float32 | float16 | bfloat16."""

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id.strip():
            raise GenerationConfigError("model_id: must be a non-empty model id or folder")
        for name in ("images_per_class", "num_inference_steps", "height", "width", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GenerationConfigError(f"{name}: must be a positive integer, got {value!r}")
        for name in ("height", "width"):
            if getattr(self, name) % 8:
                raise GenerationConfigError(f"{name}: {getattr(self, name)} is not a multiple of 8")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise GenerationConfigError(f"seed: must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.templates, str) or not self.templates:
            raise GenerationConfigError("templates: must be a non-empty list of strings")
        object.__setattr__(self, "templates", tuple(self.templates))
        for i, t in enumerate(self.templates):
            if not isinstance(t, str):
                raise GenerationConfigError(f"templates[{i}]: {t!r} is not a string")
            fields = [f for _, f, _, _ in string.Formatter().parse(t) if f is not None]
            if fields != ["prompt"]:
                raise GenerationConfigError(
                    f"templates[{i}]: '{t}' must contain '{{prompt}}' exactly once and no other "
                    "'{...}' field"
                )
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise GenerationConfigError(
                f"dtype: '{self.dtype}' is not 'auto' or one of {sorted(_DTYPES)}"
            )
        try:
            resolve_device(self.device)
        except ValueError as exc:
            raise GenerationConfigError(str(exc)) from exc

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return _DTYPES[self.dtype]

    def render_settings(self) -> dict[str, Any]:
        """The fields that change a given image (besides model, prompt and seed)."""
        d = asdict(self)
        keep = ("negative_prompt", "num_inference_steps", "guidance_scale", "height", "width")
        return {k: d[k] for k in keep}


@dataclass(frozen=True)
class ImageRequest:
    """One image to generate: `text` = template with the prompt filled in, and its own seed."""

    class_name: str
    prompt: str
    template: str
    index: int
    """Index of this image among those of the same text."""
    seed: int

    @property
    def text(self) -> str:
        return self.template.format(prompt=self.prompt)


def image_seed(base_seed: int, text: str, index: int) -> int:
    """Seed of image `index` of prompt `text`: stable across runs, platforms and batchings."""
    digest = hashlib.sha256(json.dumps([base_seed, text, index]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def plan_images(vocab_class: VocabClass, config: GenerationConfig) -> list[ImageRequest]:
    """The images of one class: round-robin over (prompt, template) pairs, so every prompt gets
    an image and raising `images_per_class` only appends images (the first ones keep their keys)."""
    combos = [(p, t) for p in vocab_class.prompts for t in config.templates]
    total = max(config.images_per_class, len(combos))
    requests = []
    for j in range(total):
        prompt, template = combos[j % len(combos)]
        index = j // len(combos)
        text = template.format(prompt=prompt)
        requests.append(
            ImageRequest(
                class_name=vocab_class.name,
                prompt=prompt,
                template=template,
                index=index,
                seed=image_seed(config.seed, text, index),
            )
        )
    return requests


def pipeline_digest(pipe: Any) -> str:
    """Identifies an in-memory pipeline: its weights, tokenizer vocabulary and scheduler."""
    h = hashlib.sha256()
    for name in ("text_encoder", "unet", "vae", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            h.update(name.encode())
            h.update(weights_digest(module).encode())
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is not None:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is not None:
        h.update(type(scheduler).__name__.encode())
        h.update(json.dumps(dict(scheduler.config), sort_keys=True, default=str).encode())
    return h.hexdigest()


_NOTICES_SHOWN: set[str] = set()


def _require_generator(model_id: str) -> None:
    """Before loading a catalog generator: it must be fetched (opt-in; one line naming the
    command otherwise), and its licence is shown once per process (sd-turbo: non-commercial)."""
    from lidar_ovseg_ros.weights import ModelNotAvailableError, get_entry, require_hub_model
    from lidar_ovseg_ros.weights.catalog import HF_IDS

    try:
        require_hub_model(model_id)
    except ModelNotAvailableError as exc:
        raise ModelNotAvailableError(
            f"a class without exemplar images needs the text-to-image generator, but {exc} "
            "(the nuscenes and semantickitti presets need none after `lidar-ovseg weights fetch "
            "igloss-prototype-images`)"
        ) from None
    name = HF_IDS.get(model_id)
    notice = get_entry(name).notice if name else None
    if notice and name not in _NOTICES_SHOWN:
        _NOTICES_SHOWN.add(name)
        logging.getLogger(__name__).warning("%s: %s", name, notice)


class TextToImageGenerator:
    """Generates prototype images in batches with per-image `torch.Generator` seeds.

    Built with `from_pretrained`, the pipeline loads on the first `generate` call, so a fully
    cached vocabulary never loads the (multi-GB) diffusion model. Not thread-safe.
    """

    def __init__(
        self,
        pipe: Any | None,
        config: GenerationConfig,
        model_key: str,
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.model_key = model_key
        """Names the pipeline in cache keys: the model id, or a weights digest."""
        self._pipe = self._place(pipe) if pipe is not None else None
        self.calls = 0
        """Number of pipeline calls made (one per batch)."""
        self.images_generated = 0

    @classmethod
    def from_pretrained(
        cls, config: GenerationConfig | None = None, lazy: bool = True
    ) -> TextToImageGenerator:
        """`AutoPipelineForText2Image.from_pretrained(config.model_id)` (safetensors only, never
        remote code), deferred to the first `generate` call when `lazy`."""
        config = config or GenerationConfig()
        key = config.model_id if config.revision is None else f"{config.model_id}@{config.revision}"
        gen = cls(None, config, key)
        if not lazy:
            gen.pipe  # noqa: B018 - load now
        return gen

    @classmethod
    def from_pipeline(
        cls, pipe: Any, config: GenerationConfig | None = None, key: str | None = None
    ) -> TextToImageGenerator:
        """Wrap an existing pipeline; `key` names it in cache keys (default: its hub id if it
        was loaded from one, else a digest of its weights, tokenizer and scheduler)."""
        config = config or GenerationConfig()
        if key is None:
            name = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path")
            key = str(name) if name else f"pipeline:{pipeline_digest(pipe)[:32]}"
        return cls(pipe, config, key)

    def _place(self, pipe: Any) -> Any:
        dtype = self.config.torch_dtype(self.device)
        if pipe.dtype != dtype:
            pipe = pipe.to(dtype=dtype)
        if pipe.device != self.device:
            pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            from diffusers import AutoPipelineForText2Image

            _require_generator(self.config.model_id)
            pipe = AutoPipelineForText2Image.from_pretrained(
                self.config.model_id,
                revision=self.config.revision,
                dtype=self.config.torch_dtype(self.device),
                use_safetensors=True,
            )
            self._pipe = self._place(pipe)
        return self._pipe

    def image_key(self, request: ImageRequest, config: GenerationConfig | None = None) -> str:
        """Cache key of one generated image: model, prompt, template, seed, resolution, steps."""
        config = config or self.config
        payload = {
            "generator": self.model_key,
            "dtype": str(self.config.torch_dtype(self.device)),
            "prompt": request.prompt,
            "template": request.template,
            "index": request.index,
            "seed": request.seed,
            **config.render_settings(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    @torch.no_grad()
    def generate(
        self, requests: Sequence[ImageRequest], config: GenerationConfig | None = None
    ) -> list[Image.Image]:
        """RGB images for `requests`, `config.batch_size` per pipeline call; image i depends
        only on request i (its own CPU generator), not on the batch it is in."""
        config = config or self.config
        images: list[Image.Image] = []
        for lo in range(0, len(requests), config.batch_size):
            batch = list(requests[lo : lo + config.batch_size])
            kwargs: dict[str, Any] = {}
            if config.negative_prompt is not None:
                kwargs["negative_prompt"] = [config.negative_prompt] * len(batch)
            out = self.pipe(
                prompt=[r.text for r in batch],
                num_inference_steps=config.num_inference_steps,
                guidance_scale=config.guidance_scale,
                height=config.height,
                width=config.width,
                generator=[torch.Generator("cpu").manual_seed(r.seed) for r in batch],
                output_type="pil",
                **kwargs,
            )
            self.calls += 1
            self.images_generated += len(batch)
            images.extend(im.convert("RGB") for im in out.images)
        return images
