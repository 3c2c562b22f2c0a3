"""CLIP text queries for POP-3D: prompt-ensembled, sub-name-expanded class embeddings.

POP-3D classifies voxels in the CLIP ViT-B/16 space (via MaskCLIP+ targets). A name is embedded
as the 85-template ensemble (each prompt embedding L2-normalised, averaged, renormalised); a
class is a list of sub-names, and its score is the maximum over its sub-names. Free-text
grounding queries use the same ensemble. Embeddings are cached per sub-name and per vocabulary,
keyed by model id + templates (+ names), so a vocabulary change re-encodes only new names.

Scores (`SCORES`):
- "dot" (the official evaluation, `eval.py` `assign_labels_clip` without `--normalized-cosine`):
  the raw dot product of the unnormalised voxel feature with each (unit-length) text embedding.
  Unbounded; it grows with the feature's norm, so a `min_score` threshold is in those units.
- "cosine": both sides L2-normalised, in [-1, 1]; a `min_score` is a cosine similarity.
The class is the same under both (the feature's norm does not change the argmax); the class
score is the maximum over its sub-names either way.

A prompt that tokenises to more than CLIP's 77 tokens (start and end tokens included) is refused
with a `TextQueryError` naming it, as the official `clip.tokenize` does; nothing is truncated.

`load_official_text_embeddings` reads POP-3D's precomputed `zeroshot_weights.pth`
(`MaskCLIP/tools/maskclip_utils/prompt_engineering.py --multiple-names`: a tuple
`(weights [512, 102], cls2idx)`, weights the 85-template ensembles of OpenAI CLIP ViT-B/16 for
the 102 sub-names, columns in `NUSCENES_SUBCATEGORIES` order, `cls2idx` the raw nuScenes lidarseg
index of each column), so the official figures need no text model.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MODEL_ID = "openai/clip-vit-base-patch16"

SCORES = ("dot", "cosine")
"""How a feature is scored against a text embedding (see the module docstring)."""

CLIP_CONTEXT_LENGTH = 77

# The 80 ImageNet prompt templates of CLIP plus the 5 scene templates used by MaskCLIP / POP-3D
# (MaskCLIP/tools/maskclip_utils/prompt_engineering.py), in the official order.
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.",
    "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.",
    "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.", "the plastic {}.",
    "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a painting of a {}.", "a pixelated photo of the {}.",
    "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.",
    "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.",
    "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.",
    "the plushie {}.", "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.",
    "a toy {}.", "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.",
    "a tattoo of the {}.", "there is a {} in the scene.", "there is the {} in the scene.",
    "this is a {} in the scene.", "this is the {} in the scene.", "this is one {} in the scene.",
)  # fmt: skip

# POP-3D's sub-names of the 32 raw nuScenes lidarseg categories (102 sub-names in all), from
# MaskCLIP/tools/maskclip_utils/prompt_engineering.py (`nuscenes_subcategories`).
NUSCENES_SUBCATEGORIES: dict[str, tuple[str, ...]] = {
    "noise": (
        "Any lidar return that does not correspond to a physical object, such as dust, vapor, "
        "noise, fog, raindrops, smoke and reflections.",
    ),
    "animal": ("animal", "cat", "dog", "rat", "deer", "bird"),
    "human.pedestrian.adult": ("Adult.",),
    "human.pedestrian.child": ("Child.",),
    "human.pedestrian.construction_worker": ("Construction worker",),
    "human.pedestrian.personal_mobility": ("skateboard", "segway"),
    "human.pedestrian.police_officer": ("Police officer.",),
    "human.pedestrian.stroller": ("Stroller",),
    "human.pedestrian.wheelchair": ("Wheelchair",),
    "movable_object.barrier": (
        "Temporary road barrier to redirect traffic.",
        "concrete barrier",
        "metal barrier",
        "water barrier",
    ),
    "movable_object.debris": (
        "Movable object that is left on the driveable surface.",
        "tree branch",
        "full trash bag",
    ),
    "movable_object.pushable_pullable": (
        "Object that a pedestrian may push or pull.",
        "dolley",
        "wheel barrow",
        "garbage-bin",
        "shopping cart",
    ),
    "movable_object.trafficcone": ("traffic cone.",),
    "static_object.bicycle_rack": (
        "Area or device intended to park or secure the bicycles in a row.",
    ),
    "vehicle.bicycle": ("Bicycle",),
    "vehicle.bus.bendy": ("Bendy bus",),
    "vehicle.bus.rigid": ("Rigid bus",),
    "vehicle.car": (
        "Vehicle designed primarily for personal use.",
        "car",
        "vehicle",
        "sedan",
        "hatch-back",
        "wagon",
        "van",
        "mini-van",
        "SUV",
        "jeep",
    ),
    "vehicle.construction": ("Vehicle designed for construction.", "crane"),
    "vehicle.emergency.ambulance": ("ambulance", "ambulance vehicle"),
    "vehicle.emergency.police": (
        "police vehicle",
        "police car",
        "police bicycle",
        "police motorcycle",
    ),
    "vehicle.motorcycle": ("motorcycle", "vespa", "scooter"),
    "vehicle.trailer": ("trailer", "truck trailer", "car trailer", "bike trailer"),
    "vehicle.truck": (
        "Vehicle primarily designed to haul cargo.",
        "pick-up",
        "lorry",
        "truck",
        "semi-tractor",
    ),
    "flat.driveable_surface": (
        "Paved surface that a car can drive.",
        "Unpaved surface that a car can drive.",
    ),
    "flat.other": ("traffic island", "delimiter", "rail track", "small stairs", "lake", "river"),
    "flat.sidewalk": ("sidewalk", "pedestrian walkway", "bike path"),
    "flat.terrain": ("grass", "rolling hill", "soil", "sand", "gravel"),
    "static.manmade": (
        "man-made structure",
        "building",
        "wall",
        "guard rail",
        "fence",
        "pole",
        "drainage",
        "hydrant",
        "flag",
        "banner",
        "street sign",
        "electric circuit box",
        "traffic light",
        "parking meter",
        "stairs",
    ),
    "static.other": (
        "Points in the background that are not distinguishable, or objects that do not match "
        "any of the above labels.",
    ),
    "static.vegetation": ("bushes", "bush", "plants", "plant", "potted plant", "tree", "trees"),
    "vehicle.ego": (
        "The vehicle on which the cameras, radar and lidar are mounted, that is sometimes "
        "visible at the bottom of the image.",
    ),
}

# The 16 nuScenes lidarseg evaluation classes (label 1..16; 0 = ignored 'noise').
NUSCENES16_CLASSES: tuple[str, ...] = (
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
    "manmade", "vegetation",
)  # fmt: skip

# Raw category -> 16-class label (the official `learning_map`; 0 = ignored).
NUSCENES_RAW_TO_16: dict[str, int] = {
    "noise": 0, "animal": 0, "human.pedestrian.adult": 7, "human.pedestrian.child": 7,
    "human.pedestrian.construction_worker": 7, "human.pedestrian.personal_mobility": 0,
    "human.pedestrian.police_officer": 7, "human.pedestrian.stroller": 0,
    "human.pedestrian.wheelchair": 0, "movable_object.barrier": 1, "movable_object.debris": 0,
    "movable_object.pushable_pullable": 0, "movable_object.trafficcone": 8,
    "static_object.bicycle_rack": 0, "vehicle.bicycle": 2, "vehicle.bus.bendy": 3,
    "vehicle.bus.rigid": 3, "vehicle.car": 4, "vehicle.construction": 5,
    "vehicle.emergency.ambulance": 0, "vehicle.emergency.police": 0, "vehicle.motorcycle": 6,
    "vehicle.trailer": 9, "vehicle.truck": 10, "flat.driveable_surface": 11, "flat.other": 12,
    "flat.sidewalk": 13, "flat.terrain": 14, "static.manmade": 15, "static.other": 0,
    "static.vegetation": 16, "vehicle.ego": 0,
}  # fmt: skip

ClassSpec = tuple[str, Sequence[str]]


def nuscenes16_vocabulary() -> list[tuple[str, list[str]]]:
    """The 16 nuScenes classes with POP-3D's sub-names (those of raw categories mapped to
    ignore are dropped, as in the official zero-shot evaluation: 74 of the 102 remain)."""
    subs: dict[int, list[str]] = {i: [] for i in range(1, len(NUSCENES16_CLASSES) + 1)}
    for raw, names in NUSCENES_SUBCATEGORIES.items():
        label = NUSCENES_RAW_TO_16[raw]
        if label:
            subs[label].extend(names)
    return [(NUSCENES16_CLASSES[i - 1], subs[i]) for i in sorted(subs)]


class TextQueryError(ValueError):
    """A class list or query is malformed; the message names the bad entry."""


def check_score(score: str) -> str:
    if score not in SCORES:
        raise TextQueryError(f"score must be one of {list(SCORES)}, got {score!r}")
    return score


def _validate_classes(classes: Sequence[ClassSpec]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not classes:
        raise TextQueryError("the vocabulary is empty: give at least one (name, sub-names) class")
    out = []
    seen: set[str] = set()
    for i, entry in enumerate(classes):
        if isinstance(entry, str) or len(entry) != 2:
            raise TextQueryError(f"class #{i} must be a (name, [sub-names]) pair, got {entry!r}")
        name, subs = entry
        if not isinstance(name, str) or not name.strip():
            raise TextQueryError(f"class #{i} has an empty or non-string name: {name!r}")
        if name in seen:
            raise TextQueryError(f"class name {name!r} appears twice")
        seen.add(name)
        if isinstance(subs, str):
            subs = [subs]
        subs = tuple(subs) if subs else (name,)
        for s in subs:
            if not isinstance(s, str) or not s.strip():
                raise TextQueryError(f"class {name!r} has an empty or non-string sub-name: {s!r}")
        out.append((name, subs))
    return tuple(out)


@dataclass(frozen=True)
class EncodedVocabulary:
    """Sub-name embeddings [S, D] (L2-normalised) and the class each belongs to."""

    class_names: tuple[str, ...]
    sub_names: tuple[str, ...]
    embeddings: torch.Tensor  # [S, D]
    class_index: torch.Tensor  # [S] long, in 0..K-1

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: str | torch.device) -> EncodedVocabulary:
        return EncodedVocabulary(
            self.class_names,
            self.sub_names,
            self.embeddings.to(device),
            self.class_index.to(device),
        )

    def sub_name_scores(self, features: torch.Tensor, score: str = "cosine") -> torch.Tensor:
        """Scores of features [N, D] against every sub-name, [N, S]: "cosine" (both sides
        normalised) or "dot" (the raw features against the embeddings as stored)."""
        emb = self.embeddings
        feats = features.to(emb.dtype)
        if check_score(score) == "cosine":
            feats = F.normalize(feats, dim=-1)
            emb = F.normalize(emb, dim=-1)
        return feats @ emb.to(feats.device).T

    def scores(self, features: torch.Tensor, score: str = "cosine") -> torch.Tensor:
        """Class scores [N, K]: the maximum over each class's sub-names (see `sub_name_scores`)."""
        sub = self.sub_name_scores(features, score)
        out = sub.new_full((sub.shape[0], self.num_classes), float("-inf"))
        index = self.class_index.to(sub.device).expand_as(sub)
        return out.scatter_reduce(1, index, sub, reduce="amax", include_self=True)


def official_sub_name_table() -> tuple[tuple[str, int], ...]:
    """(sub-name, raw nuScenes lidarseg index) of the 102 columns of `zeroshot_weights.pth`, in
    order: the official `cls2idx` is the raw index of each column."""
    return tuple(
        (name, raw) for raw, names in enumerate(NUSCENES_SUBCATEGORIES.values()) for name in names
    )


def load_official_text_embeddings(path: str | Path, feature_dim: int = 512) -> EncodedVocabulary:
    """POP-3D's `zeroshot_weights.pth` -> the 16 nuScenes classes with their sub-name embeddings.

    The file is `(weights, cls2idx)`: weights [D, S] (or [S, D]; the official loader transposes
    when the first dimension is the embedding size), cls2idx S raw nuScenes lidarseg indices.
    As in the official evaluation, each column takes the class `NUSCENES_RAW_TO_16` gives its
    raw index, and columns of ignored categories (16-class label 0) are dropped (74 of 102 stay).
    Embeddings are kept as stored (float32), not renormalised. Loaded with `weights_only=True`;
    a file of another layout raises `TextQueryError` saying what is wrong.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(2, "text embeddings file not found", str(path))
    data = torch.load(path, map_location="cpu", weights_only=True)
    where = f"{path}"
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TextQueryError(
            f"{where}: expected the official (weights, cls2idx) pair, got {type(data).__name__}"
        )
    weights, cls2idx = data
    if not isinstance(weights, torch.Tensor) or weights.dim() != 2:
        raise TextQueryError(f"{where}: weights must be a 2-D tensor")
    idx = torch.as_tensor(cls2idx).reshape(-1).tolist()
    if weights.shape[0] == feature_dim:
        weights = weights.T
    if weights.shape[1] != feature_dim:
        raise TextQueryError(
            f"{where}: weights {tuple(data[0].shape)} have no {feature_dim}-dim axis "
            f"(the network predicts {feature_dim}-dim features)"
        )
    if weights.shape[0] != len(idx):
        raise TextQueryError(
            f"{where}: {weights.shape[0]} embeddings but {len(idx)} class indices (cls2idx)"
        )
    raw_names = list(NUSCENES_SUBCATEGORIES)
    if any(not isinstance(i, int) or not 0 <= i < len(raw_names) for i in idx):
        raise TextQueryError(f"{where}: cls2idx must hold raw nuScenes indices 0..31")
    if not torch.isfinite(weights).all():
        raise TextQueryError(f"{where}: weights are not all finite")
    table = official_sub_name_table()
    official_order = [raw for _, raw in table] == idx
    keep, sub_names, class_index = [], [], []
    seen: dict[int, int] = {}
    for col, raw in enumerate(idx):
        label = NUSCENES_RAW_TO_16[raw_names[raw]]
        k = seen.get(raw, 0)
        seen[raw] = k + 1
        if not label:
            continue
        keep.append(col)
        subs = NUSCENES_SUBCATEGORIES[raw_names[raw]]
        named = official_order or k < len(subs)
        sub_names.append(subs[k] if named else f"{raw_names[raw]}#{k}")
        class_index.append(label - 1)
    if not keep:
        raise TextQueryError(f"{where}: no column maps to a nuScenes evaluation class")
    return EncodedVocabulary(
        class_names=NUSCENES16_CLASSES,
        sub_names=tuple(sub_names),
        embeddings=weights[keep].float().contiguous(),
        class_index=torch.tensor(class_index, dtype=torch.long),
    )


@dataclass(frozen=True)
class EmbeddingComparison:
    """Official vs. project text embeddings of the same (class, sub-name) pairs."""

    matched: int
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    worst: str  # "class/sub-name" of the lowest cosine

    def line(self) -> str:
        return (
            f"text embeddings, official file vs project ensemble: {self.matched} sub-names, "
            f"cosine mean {self.mean_cosine:.6f} min {self.min_cosine:.6f} ({self.worst}), "
            f"max |diff| {self.max_abs_diff:.2e}"
        )


def compare_embeddings(official: EncodedVocabulary, ours: EncodedVocabulary) -> EmbeddingComparison:
    """Match (class, sub-name) pairs of two encoded vocabularies and compare their vectors."""

    def keyed(v: EncodedVocabulary) -> dict[tuple[str, str], torch.Tensor]:
        out: dict[tuple[str, str], torch.Tensor] = {}
        for s, c, e in zip(v.sub_names, v.class_index.tolist(), v.embeddings, strict=True):
            out.setdefault((v.class_names[c], s), e)
        return out

    a, b = keyed(official), keyed(ours)
    common = [k for k in a if k in b]
    if not common:
        raise TextQueryError("the two vocabularies share no (class, sub-name) pair")
    if a[common[0]].shape != b[common[0]].shape:
        raise TextQueryError(
            f"embedding sizes differ: {tuple(a[common[0]].shape)} vs {tuple(b[common[0]].shape)}"
        )
    x = torch.stack([a[k].float().cpu() for k in common])
    y = torch.stack([b[k].float().cpu() for k in common])
    cos = F.cosine_similarity(x, y, dim=-1)
    worst = int(cos.argmin())
    return EmbeddingComparison(
        matched=len(common),
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        max_abs_diff=float((x - y).abs().max()),
        worst="/".join(common[worst]),
    )


class TextQueryEncoder:
    """CLIP text tower (`CLIPTextModelWithProjection`) + tokenizer, with ensemble caching."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        model_id: str = "custom",
        templates: Sequence[str] = PROMPT_TEMPLATES,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
        cache_dir: str | Path | None = None,
        max_cached_vocabularies: int = 8,
    ) -> None:
        if not templates or any("{}" not in t for t in templates):
            raise TextQueryError("every prompt template must contain '{}' for the name")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.templates = tuple(templates)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.max_length = int(getattr(model.config, "max_position_embeddings", 77))
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._templates_key = hashlib.sha1("\n".join(self.templates).encode()).hexdigest()[:16]
        self._name_cache: dict[str, torch.Tensor] = {}
        self._vocab_cache: OrderedDict[tuple, EncodedVocabulary] = OrderedDict()
        self._max_vocabs = max_cached_vocabularies
        self.stats = {"encoded_names": 0, "name_cache_hits": 0, "vocab_cache_hits": 0}

    @classmethod
    def from_pretrained(
        cls,
        model_id: str = CLIP_MODEL_ID,
        device: str | torch.device = "cpu",
        templates: Sequence[str] = PROMPT_TEMPLATES,
        **kwargs,
    ) -> TextQueryEncoder:
        """Load the text tower and tokenizer of a CLIP checkpoint (hub id or local directory)."""
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        model = CLIPTextModelWithProjection.from_pretrained(model_id)
        tokenizer = CLIPTokenizer.from_pretrained(model_id)
        return cls(
            model, tokenizer, model_id=model_id, templates=templates, device=device, **kwargs
        )

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def check_prompts(self, names: Sequence[str]) -> None:
        """Refuse any name whose templated prompt is longer than the text model's context
        (77 tokens for CLIP, start/end included), naming it: the official `clip.tokenize`
        refuses such prompts, and truncating them would silently change the class."""
        limit = self.max_length
        for name in dict.fromkeys(names):
            sentences = [t.format(name) for t in self.templates]
            lengths = [len(ids) for ids in self.tokenizer(sentences)["input_ids"]]
            worst = int(np.argmax(lengths))
            if lengths[worst] > limit:
                raise TextQueryError(
                    f"prompt {name!r} is too long: {sentences[worst]!r} is {lengths[worst]} "
                    f"tokens, the text model takes at most {limit}; shorten it"
                )

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised projected embeddings of raw sentences, [N, D] on `self.device`.
        A sentence longer than the context raises `TextQueryError` (never truncated)."""
        outs = []
        for i in range(0, len(texts), self.batch_size):
            batch = list(texts[i : i + self.batch_size])
            tok = self.tokenizer(
                batch,
                padding="longest",  # causal attention: padding after EOS changes nothing
                truncation=False,
                return_tensors="pt",
            )
            if tok["input_ids"].shape[1] > self.max_length:
                long = [t for t in batch if len(self.tokenizer(t)["input_ids"]) > self.max_length]
                raise TextQueryError(
                    f"prompt {long[0]!r} is longer than the text model's {self.max_length} tokens"
                )
            tok = {k: v.to(self.device) for k, v in tok.items()}
            emb = self.model(**tok).text_embeds
            outs.append(F.normalize(emb.float(), dim=-1))
        return torch.cat(outs, 0)

    def _disk_path(self, name: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha1(f"{self.model_id}\n{self._templates_key}\n{name}".encode()).hexdigest()
        return self.cache_dir / f"{key}.npy"

    def _encode_names(self, names: Sequence[str]) -> torch.Tensor:
        """Template-ensembled embeddings [len(names), D], through the caches."""
        todo = [n for n in dict.fromkeys(names) if n not in self._name_cache]
        self.stats["name_cache_hits"] += len(set(names)) - len(todo)
        self.check_prompts(todo)  # before anything is encoded or read from disk
        remaining = []
        for n in todo:
            path = self._disk_path(n)
            if path is not None and path.is_file():
                self._name_cache[n] = torch.from_numpy(np.load(path)).to(self.device)
            else:
                remaining.append(n)
        if remaining:
            sentences = [t.format(n) for n in remaining for t in self.templates]
            emb = self.embed_texts(sentences).view(len(remaining), len(self.templates), -1)
            ens = F.normalize(emb.mean(1), dim=-1)
            for n, e in zip(remaining, ens, strict=True):
                self._name_cache[n] = e
                path = self._disk_path(n)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, e.cpu().numpy())
            self.stats["encoded_names"] += len(remaining)
        return torch.stack([self._name_cache[n] for n in names])

    def encode_query(self, text: str) -> torch.Tensor:
        """Ensembled embedding [D] of one free-text query (as POP-3D's retrieval)."""
        if not isinstance(text, str) or not text.strip():
            raise TextQueryError(f"a query must be a non-empty string, got {text!r}")
        return self._encode_names([text.strip()])[0]

    def encode_vocabulary(self, classes: Sequence[ClassSpec]) -> EncodedVocabulary:
        """Embed a vocabulary given as [(class name, [sub-names ...]), ...].

        A class with no sub-names uses its own name. Scores of the result are the max over each
        class's sub-names.
        """
        spec = _validate_classes(classes)
        key = (self.model_id, self._templates_key, spec)
        if key in self._vocab_cache:
            self._vocab_cache.move_to_end(key)
            self.stats["vocab_cache_hits"] += 1
            return self._vocab_cache[key]
        sub_names = tuple(s for _, subs in spec for s in subs)
        class_index = torch.tensor(
            [i for i, (_, subs) in enumerate(spec) for _ in subs], dtype=torch.long
        )
        vocab = EncodedVocabulary(
            class_names=tuple(name for name, _ in spec),
            sub_names=sub_names,
            embeddings=self._encode_names(list(sub_names)),
            class_index=class_index.to(self.device),
        )
        self._vocab_cache[key] = vocab
        while len(self._vocab_cache) > self._max_vocabs:
            self._vocab_cache.popitem(last=False)
        return vocab

    def clear_cache(self) -> None:
        self._name_cache.clear()
        self._vocab_cache.clear()


def byte_level_clip_tokenizer(merges: Sequence[tuple[str, str]] = ()):
    """A real `CLIPTokenizer` built offline from the 256 byte symbols (no BPE merges by default).

    For tests and benchmarks that run without the hub: it tokenises any text (one token per
    character, end-of-word marked) with the same special tokens and padding as CLIP's tokenizer.
    """
    from transformers import CLIPTokenizer

    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    symbols, extra = [], 0
    for b in range(256):
        if b in printable:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    merge_list = [tuple(m) for m in merges]
    for a, b in merge_list:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merge_list)


def build_tiny_text_model(tokenizer, projection_dim: int, seed: int = 0):
    """A small untrained `CLIPTextModelWithProjection` (2 layers, 32 wide) for `tokenizer`: the
    text tower of the offline tiny profile and of the tests, deterministic given `seed`."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(cfg).eval()
