"""Tiny, untrained, seed-deterministic stand-ins for the auto-vocabulary models.

Real `tokenizers`/`transformers` objects built from small configs with no hub access, so tests,
benchmarks and the node's offline "tiny" profile run the production code paths in seconds. Their
captions are gibberish; only the code path and determinism matter.

- GPT-2 tokenizer: a byte-level BPE (the GPT-2 scheme) trained here, in memory, on a few caption
  sentences (`TINY_CORPUS`), wrapped as a `PreTrainedTokenizerFast`; `.` is one token, as in GPT-2.
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


def build_tiny_gpt2_tokenizer(vocab_size: int = 320) -> Any:
    """A byte-level BPE tokenizer trained on `TINY_CORPUS` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator(list(TINY_CORPUS) * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
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
