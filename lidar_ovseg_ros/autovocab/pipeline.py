"""One auto-vocabulary round: scan (+ camera images) -> captions -> tags -> proposed vocabulary.

`AutoVocabulary.run_round` is what the LiDAR node calls in its background worker every
`auto_period` seconds and what `lidar-ovseg autovocab` calls once. Cameras are optional: with
none, the point captioner alone names the scene (LiDAR-only 3D-AVS).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lidar_ovseg_ros.vocabulary import Vocabulary

from .image_captioner import (
    DEFAULT_IMAGE_CAPTIONER,
    ImageCaptioner,
    ImageCaptionerConfig,
    build_tiny_image_captioner,
)
from .point_captioner import PointCaptioner, PointCaptions
from .proposal import Proposal, ProposalConfig, VocabularyProposer
from .tagging import CaptionTagger, Tag, TaggerConfig, TextEmbedder

PROFILES = ("full", "tiny")
TAGGERS = ("rules", "llm")


@dataclass(frozen=True)
class AutoVocabConfig:
    """Models and tag/vocabulary settings of the auto-vocabulary mode.

    profile: "full" (official SMAP + ClipCap files, GPT-2 tokenizer, a BLIP captioner) or
        "tiny" (small untrained models from configs: runs offline, captions are gibberish).
    smap_checkpoint / clipcap_weights: `smap_model_epoch_20.pth.tar` / `coco_weights.pt`
        (required for "full"). gpt2_tokenizer: hub id or folder of the GPT-2 tokenizer.
    image_captioner: BLIP hub id or folder; "" disables the camera captions.
    use_point_captioner: False leaves only the cameras (needs image_captioner).
    merge_threshold: CLIP-text cosine at which two tags merge. tagger: "rules" (default,
        deterministic, `tagging.py`) or "llm" (a small instruction model with a fixed prompt,
        `llm_tagger.py`; `tagger_model` its id or folder, default Qwen2.5-0.5B-Instruct; the tiny
        profile uses a tiny GPT-2). window / enter_rounds /
        max_auto_classes: the hysteresis and cap of `ProposalConfig`.
    """

    profile: str = "full"
    smap_checkpoint: str = ""
    clipcap_weights: str = ""
    gpt2_tokenizer: str = "gpt2"
    image_captioner: str = DEFAULT_IMAGE_CAPTIONER
    use_point_captioner: bool = True
    merge_threshold: float = 0.9
    tagger: str = "rules"
    tagger_model: str = ""
    window: int = 5
    enter_rounds: int = 1
    max_auto_classes: int = 24
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"AutoVocabConfig.profile must be one of {list(PROFILES)}")
        if self.profile == "full" and self.use_point_captioner:
            from lidar_ovseg_ros.weights import ModelNotAvailableError, resolve_model_file

            for name, model in (
                ("smap_checkpoint", "3d-avs-smap"),
                ("clipcap_weights", "clipcap-coco"),
            ):
                if not str(getattr(self, name)).strip():
                    try:  # unset: the file installed by `lidar-ovseg weights fetch ... --file`
                        object.__setattr__(self, name, str(resolve_model_file(None, model)))
                    except ModelNotAvailableError as exc:
                        raise ValueError(
                            f"AutoVocabConfig.{name} is required for profile 'full' (the official "
                            f"3D-AVS point captioner files): set it, or {exc}"
                        ) from None
        if not self.use_point_captioner and not self.image_captioner:
            raise ValueError("AutoVocabConfig: no captioner left (point captioner off, no images)")
        TaggerConfig(merge_threshold=self.merge_threshold)
        if self.tagger not in TAGGERS:
            raise ValueError(f"AutoVocabConfig.tagger must be one of {list(TAGGERS)}")
        self.proposal_config()

    def proposal_config(self) -> ProposalConfig:
        return ProposalConfig(
            window=self.window,
            enter_rounds=self.enter_rounds,
            max_auto_classes=self.max_auto_classes,
        )


@dataclass
class AutoVocabRound:
    """Everything one round produced, for the captions topic, the vocabulary topic and logs."""

    captions: dict[str, str]
    tags: list[Tag]
    proposal: Proposal
    timings: dict[str, float] = field(default_factory=dict)
    point_captions: PointCaptions | None = None

    def captions_dict(self) -> dict[str, Any]:
        """JSON form: per source (camera name, LiDAR sector) its caption, and the tags."""
        sectors = []
        if self.point_captions is not None:
            for s in self.point_captions.sectors:
                sectors.append(
                    {
                        "sector": s.index,
                        "azimuth_deg": list(s.azimuth_deg),
                        "voxels": s.voxels,
                        "caption": s.caption,
                    }
                )
        return {
            "round": self.proposal.round,
            "captions": dict(self.captions),
            "lidar_sectors": sectors,
            "tags": [t.to_dict() for t in self.tags],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


class AutoVocabulary:
    """Captioners + Caption2Tag (any object with `tags(captions)`) + proposer; `run_round` is
    safe to call from one worker."""

    def __init__(
        self,
        point_captioner: PointCaptioner | None,
        image_captioner: ImageCaptioner | None,
        tagger: Any,
        proposer: VocabularyProposer,
        untrained: bool = False,
    ) -> None:
        if point_captioner is None and image_captioner is None:
            raise ValueError("an auto vocabulary needs at least one captioner")
        self.point_captioner = point_captioner
        self.image_captioner = image_captioner
        self.tagger = tagger
        self.proposer = proposer
        self.untrained = untrained

    @classmethod
    def from_config(
        cls,
        config: AutoVocabConfig,
        base: Vocabulary | None = None,
        embedder: TextEmbedder | None = None,
        shared_trunk: Any | None = None,
    ) -> AutoVocabulary:
        """`embedder` (names -> embeddings, e.g. the segmenter's CLIP text encoder) enables
        near-synonym merging; `shared_trunk` the OpenScene network, used if identical."""
        point = image = None
        if config.profile == "tiny":
            if config.use_point_captioner:
                point = PointCaptioner.tiny()
            if config.image_captioner:
                image = build_tiny_image_captioner()
        else:
            if config.use_point_captioner:
                point = PointCaptioner.from_files(
                    config.smap_checkpoint,
                    config.clipcap_weights,
                    tokenizer=config.gpt2_tokenizer,
                    shared_trunk=shared_trunk,
                    device=config.device,
                )
            if config.image_captioner:
                image = ImageCaptioner.from_pretrained(
                    ImageCaptionerConfig(model=config.image_captioner, device=config.device)
                )
        merge = TaggerConfig(merge_threshold=config.merge_threshold)
        tagger: Any = CaptionTagger(merge, embedder)
        if config.tagger == "llm":
            from .llm_tagger import LlmCaptionTagger, LlmTaggerConfig, build_tiny_llm_tagger

            if config.profile == "tiny":
                tagger = build_tiny_llm_tagger(merge=merge, embedder=embedder)
            else:
                llm_cfg = LlmTaggerConfig(model=config.tagger_model or LlmTaggerConfig().model)
                tagger = LlmCaptionTagger.from_pretrained(
                    llm_cfg, device=config.device, merge=merge, embedder=embedder
                )
        proposer = VocabularyProposer(config.proposal_config(), base=base)
        return cls(point, image, tagger, proposer, untrained=config.profile == "tiny")

    def run_round(
        self,
        points: np.ndarray | None,
        images: Mapping[str, np.ndarray] | None = None,
    ) -> AutoVocabRound:
        """Caption the scan (sectors) and the images (cameras), tag, update the proposal."""
        t0 = time.perf_counter()
        captions: dict[str, str] = {}
        timings: dict[str, float] = {}
        point_caps = None
        if self.point_captioner is not None and points is not None:
            point_caps = self.point_captioner.caption(points)
            captions.update(point_caps.as_sources())
            for k, v in point_caps.timings.items():
                if k != "total":
                    timings[f"point_{k}"] = v
        if self.image_captioner is not None and images:
            t = time.perf_counter()
            names = sorted(images)
            texts = self.image_captioner.caption([images[n] for n in names])
            captions.update({f"camera/{n}": c for n, c in zip(names, texts, strict=True) if c})
            timings["image_captions"] = time.perf_counter() - t
        t = time.perf_counter()
        tags = self.tagger.tags(captions)
        timings["tagging"] = time.perf_counter() - t
        proposal = self.proposer.update(tags)
        timings["total"] = time.perf_counter() - t0
        return AutoVocabRound(captions, tags, proposal, timings, point_caps)


def clip_embedder(text_encoder: Any) -> TextEmbedder:
    """Tag names -> L2-normalised CLIP text embeddings (the raw name, no template), cached by
    the encoder."""

    def embed(names):
        return text_encoder.encode(list(names), template="{}").float().cpu().numpy()

    return embed
