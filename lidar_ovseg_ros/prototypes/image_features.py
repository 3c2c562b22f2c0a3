"""One DINOv2 feature vector per prototype image, computed exactly as IGLOSS does.

IGLOSS (valeoai/IGLOSS, `extract_image_features.py` + `models/image_teacher.py`) describes every
prototype image by a single vector:

1. RGB in [0, 1], resized to 448x448 (aspect ratio not kept; torchvision `resize` on a tensor, i.e.
   bilinear, `align_corners=False`, antialiased), then ImageNet mean/std;
2. DINOv2 ViT-L/14 (timm `vit_large_patch14_dinov2.lvd142m` built at 448x448, whose position
   embeddings timm resamples once from 37x37 to 32x32 with antialiased bicubic interpolation);
3. the output of the last block *before* the final norm (`feat: x_pre_norm`), prefix tokens (CLS,
   registers) dropped -> [D, 32, 32] patch grid;
4. bilinear upsampling x14 with `align_corners=True` -> [D, 448, 448];
5. L2 normalisation of every pixel, then the mean over all pixels -> one D-vector.

Here the ViT is the Hugging Face port (`facebook/dinov2-large`, same weights), so step 2 resamples
the position embeddings the timm way at load time: the HF model would otherwise interpolate them on
every call without antialiasing and give slightly different features.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_AMP = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class ImageFeatureConfigError(ValueError):
    """An invalid image-feature setting; the message names the field."""


@dataclass(frozen=True)
class ImageFeatureConfig:
    """How prototype images become feature vectors (defaults: IGLOSS with DINOv2 ViT-L/14)."""

    model_id: str = "facebook/dinov2-large"
    """Hugging Face model id or local folder (DINOv2, with or without registers)."""
    revision: str | None = None
    image_size: int = 448
    """Square input side; IGLOSS resizes every prototype to 448x448 -> 32x32 patches."""
    patch_size: int = 14
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    antialias: bool = True
    """Antialiased resize, as torchvision >= 0.17 `resize` does on tensors by default."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N ("auto": CUDA when available)."""
    dtype: str = "float32"
    """Weights of the ViT: float32 | float16 | bfloat16."""
    amp: str = "none"
    """none | fp16 | bf16: autocast the ViT on CUDA (IGLOSS ran its extraction with --fp16)."""
    batch_size: int = 8
    upsample_budget_mb: int = 256
    """Peak memory of the x14 upsampled grid; larger grids are processed in channel chunks."""

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id.strip():
            raise ImageFeatureConfigError("model_id: must be a non-empty model id or folder")
        for name in ("image_size", "patch_size", "batch_size", "upsample_budget_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ImageFeatureConfigError(f"{name}: must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise ImageFeatureConfigError(
                f"image_size: {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(math.isfinite(float(v)) for v in value):
                raise ImageFeatureConfigError(f"{name}: must be 3 finite numbers, got {value!r}")
        if any(float(s) <= 0 for s in self.std):
            raise ImageFeatureConfigError(f"std: must be positive, got {self.std!r}")
        if self.dtype not in _DTYPES:
            raise ImageFeatureConfigError(f"dtype: '{self.dtype}' is not one of {sorted(_DTYPES)}")
        if self.amp not in _AMP:
            raise ImageFeatureConfigError(f"amp: '{self.amp}' is not one of {sorted(_AMP)}")
        resolve_device(self.device)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    def numerics(self) -> dict[str, Any]:
        """The fields that change the features (all but device, batch size, memory budget)."""
        d = asdict(self)
        for k in ("device", "batch_size", "upsample_budget_mb", "model_id", "revision"):
            d.pop(k)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else must name a usable torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ImageFeatureConfigError(f"device: '{device}' is not a torch device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ImageFeatureConfigError(f"device: '{device}' requested but CUDA is not available")
    return dev


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB. Transparent pixels are composited onto white (prototype images are
    objects on a white background); grey images are replicated to three channels."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        return np.array(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an [H, W, 3] RGB image, got shape {arr.shape}")
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        rgb = arr[:, :, :3].astype(np.float32)
        arr = np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            raise ValueError("float images are ambiguous: give uint8 RGB (0-255)")
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def _model_class(model_type: str) -> type:
    from transformers import Dinov2Model, Dinov2WithRegistersModel

    classes = {"dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel}
    if model_type not in classes:
        raise ImageFeatureConfigError(
            f"model_id: model type '{model_type}' is not a DINOv2 model ({sorted(classes)})"
        )
    return classes[model_type]


def resample_position_embeddings(model: torch.nn.Module, grid: int) -> None:
    """Resample the patch position embeddings to `grid` x `grid` once, as timm does when a DINOv2
    is created at another image size (bicubic, antialiased, in float32); CLS position kept."""
    emb = model.embeddings
    pos = emb.position_embeddings.data
    n_old = pos.shape[1] - 1
    old = math.isqrt(n_old)
    if old * old != n_old:
        raise ImageFeatureConfigError(f"position embeddings of {n_old} patches are not square")
    if old == grid:
        return
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    dim = pos.shape[-1]
    grid_old = patch_pos.float().reshape(1, old, old, dim).permute(0, 3, 1, 2)
    grid_new = F.interpolate(grid_old, size=(grid, grid), mode="bicubic", antialias=True)
    patch_pos = grid_new.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos.dtype)
    emb.position_embeddings = torch.nn.Parameter(
        torch.cat([cls_pos, patch_pos], dim=1), requires_grad=False
    )
    patch_size = model.config.patch_size
    model.config.image_size = grid * patch_size
    pe = emb.patch_embeddings
    pe.image_size = (grid * patch_size, grid * patch_size)
    pe.num_patches = grid * grid


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (names, shapes, bytes): identifies untrained models
    built from a config, whose weights come from a seed rather than a model id."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class DinoV2FeatureExtractor:
    """Batched IGLOSS prototype features: `extract(images) -> [B, D] float32`.

    Not thread-safe: one extractor serves one thread at a time (the bank's build thread).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: ImageFeatureConfig | None = None,
        key: str | None = None,
    ) -> None:
        """`model` is a Hugging Face DINOv2 (`Dinov2Model` or `Dinov2WithRegistersModel`);
        `key` names its weights in cache keys (default: the model id, or a weights digest)."""
        config = config or ImageFeatureConfig()
        if not hasattr(model, "layernorm") or not hasattr(model, "embeddings"):
            raise ImageFeatureConfigError(f"{type(model).__name__} is not a DINOv2 model")
        if int(model.config.patch_size) != config.patch_size:
            raise ImageFeatureConfigError(
                f"patch_size: config says {config.patch_size}, model has {model.config.patch_size}"
            )
        self.config = config
        self.device = resolve_device(config.device)
        self._prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        self.dim = int(model.config.hidden_size)
        if key is None:
            key = f"weights:{weights_digest(model)[:32]}"
        resample_position_embeddings(model, config.grid_size)
        model.requires_grad_(False)
        self.model = model.to(device=self.device, dtype=_DTYPES[config.dtype]).eval()
        self._pre_norm: torch.Tensor | None = None
        self.model.layernorm.register_forward_pre_hook(self._capture_pre_norm)
        payload = {"model": key, **config.numerics()}
        self.key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
        """Identifies the features this extractor computes (cache key component)."""
        self.calls = 0
        """Number of `extract` calls that did work (the bank's tests count them)."""

    def _capture_pre_norm(self, _module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self._pre_norm = args[0]

    @classmethod
    def from_pretrained(cls, config: ImageFeatureConfig | None = None) -> DinoV2FeatureExtractor:
        """Load `config.model_id` (hub id or local folder) with `transformers`, no remote code."""
        from transformers import AutoConfig

        config = config or ImageFeatureConfig()
        hf_config = AutoConfig.from_pretrained(config.model_id, revision=config.revision)
        model_cls = _model_class(hf_config.model_type)
        model = model_cls.from_pretrained(config.model_id, revision=config.revision)
        key = config.model_id if config.revision is None else f"{config.model_id}@{config.revision}"
        return cls(model, config, key=key)

    @classmethod
    def from_config(
        cls, hf_config: Any, config: ImageFeatureConfig | None = None, seed: int = 0
    ) -> DinoV2FeatureExtractor:
        """An untrained DINOv2 built from a `Dinov2Config` with weights drawn from `seed`."""
        model_cls = _model_class(hf_config.model_type)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_cls(hf_config)
        return cls(model, config)

    # --- the IGLOSS steps ------------------------------------------------------------------------

    def preprocess(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """[B, 3, S, S] float32 on CPU: RGB/255, resized to S x S (aspect not kept), mean/std."""
        size = self.config.image_size
        mean = torch.tensor(self.config.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.config.std, dtype=torch.float32).view(3, 1, 1)
        out = []
        for image in images:
            rgb = torch.from_numpy(np.array(to_rgb_array(image), copy=True))
            x = (rgb.permute(2, 0, 1).to(torch.float64) / 255.0).to(torch.float32)[None]
            x = F.interpolate(
                x,
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=self.config.antialias,
            )
            out.append((x[0] - mean) / std)
        return torch.stack(out)

    @torch.no_grad()
    def patch_grid(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, D, G, G] float32: last block output before the final norm, prefix tokens dropped."""
        pixels = pixels.to(self.device, dtype=_DTYPES[self.config.dtype])
        amp = _AMP[self.config.amp]
        use_amp = amp is not None and self.device.type == "cuda"
        self._pre_norm = None
        with torch.autocast(self.device.type, dtype=amp or torch.float16, enabled=use_amp):
            self.model(pixel_values=pixels)
        tokens = self._pre_norm
        self._pre_norm = None
        if tokens is None:
            raise RuntimeError("the DINOv2 forward did not reach its final layernorm")
        g = self.config.grid_size
        patches = tokens[:, self._prefix :].float()
        if patches.shape[1] != g * g:
            raise RuntimeError(f"expected {g * g} patch tokens, got {patches.shape[1]}")
        return patches.reshape(len(pixels), g, g, -1).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def pool(self, grid: torch.Tensor) -> torch.Tensor:
        """[B, D]: mean over pixels of the L2-normalised x`patch_size` bilinear upsampling
        (`align_corners=True`) of the patch grid. The upsampled grid is built in channel chunks
        (upsampling is per channel, so the chunks are exact): pass 1 sums squares for the per-pixel
        norms, pass 2 sums the normalised values."""
        b, d, g, _ = grid.shape
        side = g * self.config.patch_size
        per_channel = b * side * side * 4
        chunk = max(1, min(d, (self.config.upsample_budget_mb << 20) // per_channel))

        def up(lo: int) -> torch.Tensor:
            part = grid[:, lo : lo + chunk]
            return F.interpolate(
                part, scale_factor=self.config.patch_size, mode="bilinear", align_corners=True
            )

        if chunk >= d:
            full = up(0)
            return F.normalize(full, p=2, dim=1).mean(dim=(2, 3))
        sq = torch.zeros(b, side, side, dtype=torch.float32, device=grid.device)
        for lo in range(0, d, chunk):
            sq += up(lo).square().sum(dim=1)
        inv = 1.0 / sq.sqrt().clamp_min(1e-12)
        out = torch.empty(b, d, dtype=torch.float32, device=grid.device)
        for lo in range(0, d, chunk):
            u = up(lo)
            out[:, lo : lo + u.shape[1]] = (u * inv[:, None]).mean(dim=(2, 3))
        return out

    def extract(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """[B, D] float32, one IGLOSS prototype feature per image (mean of unit vectors, so its
        norm is at most 1; it is not normalised again here, as in IGLOSS)."""
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), np.float32)
        self.calls += 1
        out = []
        for lo in range(0, len(images), self.config.batch_size):
            pixels = self.preprocess(images[lo : lo + self.config.batch_size])
            out.append(self.pool(self.patch_grid(pixels)).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)
