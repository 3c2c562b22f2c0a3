"""Tiny, untrained, seed-deterministic stand-ins for the auto-vocabulary models.

Real `tokenizers`/`transformers` objects built from small configs with no hub access, so tests,
benchmarks and the node's offline "tiny" profile run the production code paths in seconds. Their
captions are gibberish; only the code path and determinism matter.

- GPT-2 tokenizer: GPT-2's byte-level pre-tokenization with a word-level vocabulary of the few
  caption sentences of `TINY_CORPUS`, built here in memory as a `PreTrainedTokenizerFast`; `.` is
  one token, as in GPT-2.
- GPT-2: `GPT2Config` with 2 layers of width 32.
- BLIP captioner: `BlipConfig` with 2-layer vision/text towers of width 32, its image processor at
  32x32, and a tiny WordPiece (BERT-style) tokenizer built the same way.
"""

from __future__ import annotations

from typing import Any

TINY_CORPUS = (
    "a car parked on the side of a street.",
    "a man riding a bike down a city street next to a bus.",
    "a white truck driving down a road with trees in the background.",
    "a traffic light and a stop sign at an intersection.",
    "people walking on a sidewalk in front of a building.",
    "a construction site with barriers and cones on the road.",
    "a parking lot filled with lots of cars.",
)

TINY_GPT2_WIDTH = 32


def build_tiny_gpt2_tokenizer() -> Any:
    """A GPT-2-style tokenizer over the words of `TINY_CORPUS`: GPT-2's byte-level
    pre-tokenization (a leading space is part of the word, "Ġcar"), one token per word piece it
    yields (so "." is its own token, as in GPT-2), `<|endoftext|>` as the special token. Word
    tokens make an untrained decoder's output words rather than byte soup."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pieces = sorted({p for s in TINY_CORPUS for p, _ in pre.pre_tokenize_str(s)})
    special = "<|endoftext|>"
    vocab = {special: 0, **{p: i + 1 for i, p in enumerate(pieces)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=special))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=special, eos_token=special, unk_token=special
    )


def tiny_gpt2_config(vocab_size: int) -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=128,
        n_embd=TINY_GPT2_WIDTH,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )


def build_tiny_clipcap(prefix_size: int = 512, seed: int = 0) -> tuple[Any, Any]:
    """(ClipCapDecoder with a tiny GPT-2, its tokenizer); random, seed-deterministic weights."""
    from .clipcap import ClipCapConfig, build_clipcap

    tokenizer = build_tiny_gpt2_tokenizer()
    decoder = build_clipcap(
        gpt_config=tiny_gpt2_config(len(tokenizer)),
        config=ClipCapConfig(prefix_size=prefix_size),
        seed=seed,
    )
    return decoder, tokenizer


def build_tiny_bert_tokenizer() -> Any:
    """A WordPiece (BERT-style, lower-cased) tokenizer over the words of `TINY_CORPUS`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w.strip(".,") for s in TINY_CORPUS for w in s.split()} | {".", ","})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
