"""Optional Caption2Tag by a small instruction model (`transformers`), with a fixed prompt.

The official 3D-AVS step prompts an LLM (unreleased; Llama-3-70B by its file names) to turn the
captions into class names. This is the same idea at a size that runs next to the segmenter: any
causal LM from `transformers` (default `Qwen/Qwen2.5-0.5B-Instruct`, Apache-2.0), the fixed
`PROMPT` (through the model's chat template when it has one), greedy decoding, at most
`max_new_tokens`. The answer is read as a comma/newline-separated list; every item goes through
the rule-based normalisation of `tagging.py` (singular, stop list, degenerate words) and keeps as
sources the captions that mention it. The rule-based tagger stays the default (deterministic, no
download); this one is opt-in (`AutoVocabConfig.tagger = "llm"`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .tagging import GENERIC_WORDS, MAX_WORD_LENGTH, Tag, TaggerConfig, merge_similar, singularize

DEFAULT_TAGGER_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"

PROMPT = (
    "Here are descriptions of what a vehicle's cameras and LiDAR see:\n{captions}\n"
    "List the physical objects and surfaces they mention (things a driver could see), as "
    "singular nouns, comma-separated, without adjectives, numbers or explanations.\nObjects:"
)

_SPLIT = re.compile(r"[,\n;]+")
_ITEM = re.compile(r"^[a-z]+(?: [a-z]+)?$")
_TRIPLE = re.compile(r"(.)\1\1")


def parse_answer(answer: str) -> list[str]:
    """Class names from the model's answer: list items lower-cased, bullets/numbering removed,
    one or two words, the last singularised, generic words and degenerate items dropped,
    duplicates removed (first occurrence kept)."""
    out: list[str] = []
    for raw in _SPLIT.split(answer.lower()):
        item = re.sub(r"^[\s\-\*\u2022\d\.\)]+", "", raw).strip().strip(".").strip()
        item = re.sub(r"^(a|an|the)\s+", "", item)
        if not _ITEM.match(item):
            continue
        words = item.split()
        words[-1] = singularize(words[-1])
        if words[-1] in GENERIC_WORDS or len(words[-1]) < 2:
            continue
        if any(len(w) > MAX_WORD_LENGTH or _TRIPLE.search(w) for w in words):
            continue
        name = " ".join(words)
        if name not in out:
            out.append(name)
    return out


@dataclass(frozen=True)
class LlmTaggerConfig:
    model: str = DEFAULT_TAGGER_MODEL
    max_new_tokens: int = 64
    max_captions: int = 24  # the prompt lists at most this many distinct captions

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise ValueError("LlmTaggerConfig.model must name a causal language model")
        if not 1 <= self.max_new_tokens <= 512:
            raise ValueError("LlmTaggerConfig.max_new_tokens must be in [1, 512]")
        if self.max_captions < 1:
            raise ValueError("LlmTaggerConfig.max_captions must be >= 1")


class LlmCaptionTagger:
    """Same interface as `CaptionTagger`: `tags({source: caption})` -> merged `Tag`s."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: LlmTaggerConfig | None = None,
        merge: TaggerConfig | None = None,
        embedder: Any | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or LlmTaggerConfig()
        self.merge = merge or TaggerConfig()
        self.embedder = embedder
        self.last_answer = ""

    @classmethod
    def from_pretrained(
        cls, config: LlmTaggerConfig | None = None, device: str = "cpu", **kwargs: Any
    ) -> LlmCaptionTagger:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = config or LlmTaggerConfig()
        tok = AutoTokenizer.from_pretrained(config.model)
        model = AutoModelForCausalLM.from_pretrained(config.model).to(device)
        return cls(model, tok, config, **kwargs)

    def prompt(self, captions: Sequence[str]) -> str:
        lines = "\n".join(f"- {c}" for c in captions[: self.config.max_captions])
        text = PROMPT.format(captions=lines)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text

    @torch.no_grad()
    def answer(self, captions: Sequence[str]) -> str:
        ids = self.tokenizer(self.prompt(captions), return_tensors="pt")
        device = next(self.model.parameters()).device
        ids = {k: v.to(device) for k, v in ids.items()}
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        out = self.model.generate(
            **ids,
            max_new_tokens=self.config.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad,
        )
        new = out[0, ids["input_ids"].shape[1] :]
        self.last_answer = self.tokenizer.decode(new, skip_special_tokens=True)
        return self.last_answer

    def tags(self, captions: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[Tag]:
        items = [
            (s, c)
            for s, c in (captions.items() if isinstance(captions, Mapping) else captions)
            if c
        ]
        if not items:
            return []
        distinct = list(dict.fromkeys(c for _, c in items))
        return self.tags_from_answer(self.answer(distinct), items)

    def tags_from_answer(self, answer: str, items: Sequence[tuple[str, str]]) -> list[Tag]:
        """Tags of a model answer; each keeps the (source, caption) pairs that mention it, and
        a name no caption mentions is dropped (the model made it up)."""
        tags = []
        for name in parse_answer(answer):
            head = name.split()[-1]
            pattern = re.compile(rf"\b{re.escape(head)}(s|es)?\b", re.IGNORECASE)
            hits = [(s, c) for s, c in items if pattern.search(c)]
            if not hits:
                continue  # not in any caption: the model made it up
            tags.append(Tag(name, [s for s, _ in hits], [c for _, c in hits]))
        if self.embedder is not None and len(tags) > 1:
            import numpy as np

            emb = np.asarray(self.embedder([t.name for t in tags]))
            tags = merge_similar(tags, emb, self.merge.merge_threshold)
        return tags


def build_tiny_llm_tagger(seed: int = 0, **kwargs: Any) -> LlmCaptionTagger:
    """A tiny random GPT-2 with the word-level tiny tokenizer (tests, the tiny profile): the
    real prompt/generate/parse path; its answers are random caption words."""
    from .clipcap import build_gpt2
    from .tiny_models import build_tiny_gpt2_tokenizer, tiny_gpt2_config

    tok = build_tiny_gpt2_tokenizer()
    cfg = tiny_gpt2_config(len(tok))
    cfg.n_positions = 1024
    model = build_gpt2(cfg, seed)
    model.generation_config.eos_token_id = None  # an untrained model: answer to the token limit
    config = LlmTaggerConfig(model="tiny-gpt2", max_new_tokens=24)
    return LlmCaptionTagger(model, tok, config, **kwargs)
