"""CLIP text embeddings for text-aligned 3D features (OpenScene), cached per text.

OpenScene embeds each label as "a {label} in a scene" with the CLIP text tower that matches its
2D teacher (ViT-L/14@336px for OpenSeg features, 768-d; ViT-B/32 for LSeg, 512-d) and
L2-normalises it. Here the text tower is `transformers`' `CLIPTextModelWithProjection`
(`from_pretrained`: a hub id or a local folder), or a tiny one built from a config for tests
and the offline tiny profile.

Every embedding is cached under (model id, template, text), in memory and optionally on disk
(`cache_dir`, one .npy per text): a new vocabulary costs a text-tower pass for its new texts only,
also after a restart. A class with several prompts is the mean of their embeddings,
L2-normalised again. `stats` counts encoded texts and cache hits.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CLIP_MODELS",
    "OPENSCENE_TEMPLATE",
    "ClipTextEncoder",
    "apply_template",
]

OPENSCENE_TEMPLATE = "a {} in a scene"
# OpenScene's text tower per 2D feature extractor (util/util.py `extract_text_feature`).
CLIP_MODELS = {
    "openseg": "openai/clip-vit-large-patch14-336",
    "lseg": "openai/clip-vit-base-patch32",
}
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)
_ARTICLE_END = re.compile(r"(^|\s)(a|an|the)\s+$", re.IGNORECASE)


def apply_template(template: str, text: str) -> str:
    """`template` with `{}` replaced by `text`; a leading article of `text` is dropped when the
    template has its own before `{}` ("a car" -> "a car in a scene", not "a a car ...")."""
    text = " ".join(text.split())
    if _ARTICLE_END.search(template.split("{}", 1)[0]):
        text = _ARTICLE.sub("", text, count=1)
    return template.replace("{}", text, 1)


class ClipTextEncoder:
    """A CLIP text tower + tokenizer with an embedding cache (thread-safe)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        model_id: str = "custom",
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        max_cached: int = 65536,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = int(batch_size)
        self.max_length = int(getattr(model.config, "max_position_embeddings", 77))
        self._cache: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()
        self._max_cached = int(max_cached)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._lock = threading.Lock()
        self.stats = {"encoded": 0, "cache_hits": 0, "disk_hits": 0, "lookups": 0}

    @classmethod
    def from_pretrained(
        cls,
        model_id: str = CLIP_MODELS["openseg"],
        device: str | torch.device = "cpu",
        cache_dir: str | Path | None = None,
    ) -> ClipTextEncoder:
        """The text tower and tokenizer of a CLIP checkpoint (hub id or local folder)."""
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        model = CLIPTextModelWithProjection.from_pretrained(model_id)
        tokenizer = CLIPTokenizer.from_pretrained(model_id)
        return cls(model, tokenizer, model_id=model_id, device=device, cache_dir=cache_dir)

    @classmethod
    def tiny(
        cls,
        projection_dim: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        cache_dir: str | Path | None = None,
    ) -> ClipTextEncoder:
        """A small untrained text tower (the camera node's tiny CLIP builder) with a byte-level
        CLIP tokenizer: any text tokenises, nothing is downloaded."""
        from lidar_ovseg_ros.occupancy.text_queries import (
            build_tiny_text_model,
            byte_level_clip_tokenizer,
        )

        tokenizer = byte_level_clip_tokenizer()
        with torch.random.fork_rng(devices=[]):
            model = build_tiny_text_model(tokenizer, projection_dim, seed=seed)
        model_id = f"tiny-clip-text-{projection_dim}-{seed}"
        return cls(model, tokenizer, model_id=model_id, device=device, cache_dir=cache_dir)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def _embed(self, sentences: Sequence[str]) -> torch.Tensor:
        outs = []
        for i in range(0, len(sentences), self.batch_size):
            tok = self.tokenizer(
                list(sentences[i : i + self.batch_size]),
                padding="longest",  # causal attention: padding after the EOS changes nothing
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            tok = {k: v.to(self.device) for k, v in tok.items()}
            outs.append(F.normalize(self.model(**tok).text_embeds.float(), dim=-1))
        return torch.cat(outs, 0)

    def encode(self, texts: Sequence[str], template: str = OPENSCENE_TEMPLATE) -> torch.Tensor:
        """L2-normalised embeddings [len(texts), D] (float32, on the device) of
        `template.format(text)`; cached per (model, template, text)."""
        if "{}" not in template:
            raise ValueError(f"the prompt template must contain '{{}}', got {template!r}")
        texts = [str(t) for t in texts]
        if any(not t.strip() for t in texts):
            raise ValueError("texts must be non-empty strings")
        keys = [(self.model_id, template, " ".join(t.split())) for t in texts]
        with self._lock:
            self.stats["lookups"] += len(keys)
            todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
            self.stats["cache_hits"] += sum(1 for k in keys if k in self._cache)
            todo = [k for k in todo if not self._load_from_disk(k)]
            if todo:
                emb = self._embed([apply_template(template, k[2]) for k in todo])
                for k, e in zip(todo, emb, strict=True):
                    self._cache[k] = e
                    self._save_to_disk(k, e)
                self.stats["encoded"] += len(todo)
            for k in keys:
                self._cache.move_to_end(k)
            out = torch.stack([self._cache[k] for k in keys]) if keys else None
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        if out is None:
            return torch.zeros((0, self.embed_dim), device=self.device)
        return out

    def _disk_path(self, key: tuple[str, str, str]) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{hashlib.sha1(chr(10).join(key).encode()).hexdigest()}.npy"

    def _load_from_disk(self, key: tuple[str, str, str]) -> bool:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return False
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return False  # a torn or foreign file: encode again (and overwrite it)
        if value.shape != (self.embed_dim,):
            return False
        self._cache[key] = torch.from_numpy(value.astype(np.float32)).to(self.device)
        self.stats["disk_hits"] += 1
        return True

    def _save_to_disk(self, key: tuple[str, str, str], value: torch.Tensor) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, value.detach().float().cpu().numpy())
        tmp.replace(path)  # atomic: readers never see a partial file

    def encode_classes(
        self, prompts: Sequence[Sequence[str]], template: str = OPENSCENE_TEMPLATE
    ) -> torch.Tensor:
        """One embedding [K, D] per class: the mean of its prompts' embeddings, L2-normalised
        (a class with one prompt is exactly that prompt's embedding)."""
        flat = [p for ps in prompts for p in ps]
        if any(len(ps) == 0 for ps in prompts):
            raise ValueError("every class needs at least one prompt")
        emb = self.encode(flat, template)
        out, start = [], 0
        for ps in prompts:
            out.append(emb[start : start + len(ps)].mean(0))
            start += len(ps)
        if not out:
            return torch.zeros((0, self.embed_dim), device=self.device)
        return F.normalize(torch.stack(out), dim=-1)

    def cache_hit_ratio(self) -> float:
        with self._lock:
            lookups = self.stats["lookups"]
            hits = self.stats["cache_hits"] + self.stats["disk_hits"]
            return hits / lookups if lookups else 0.0

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
