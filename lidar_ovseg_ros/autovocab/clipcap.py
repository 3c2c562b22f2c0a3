"""ClipCap decoder of the 3D-AVS point captioner: a 512-d SMAP sector embedding -> a caption.

Matches `point_captioner/decode_features.py` of ozzyou/3D-AVS (itself ClipCap's COCO notebook):
`clip_project` is an MLP 512 -> 3840 -> 7680 with Tanh (`clip_project.model.{0,2}`), its output is
reshaped to a 10-token prefix of GPT-2 small input embeddings, and GPT-2 continues it. The official
`generate2` filters the logits by top-p 0.8 and then takes the argmax, which is plain greedy
decoding (the argmax token is never filtered); it stops after the first "." token or 67 tokens.

Differences, all numerical-only: the 12 sectors are decoded as one batch (all rows have the same
length at every step, so no padding or attention mask is involved) with GPT-2's key/value cache
instead of re-running the whole sequence at each step. A row whose first token is "." gives an
empty caption (the official code raises inside `generate2` and writes "Error").

Weights: the official COCO file `coco_weights.pt` is a plain state dict (`clip_project.model.*`,
`gpt.*`, GPT-2 small included); it is read with `weights_only=True` and its keys are checked. Only
the GPT-2 *tokenizer* comes from the hub (`gpt2`); the network is built from `GPT2Config()`
(GPT-2 small) and takes every weight from the COCO file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Buffers of older transformers' GPT2Attention that the COCO file carries; the official script
# deletes them before loading, as does this one when the model has no such buffers.
_LEGACY_BUFFERS = (".attn.bias", ".attn.masked_bias")


@dataclass(frozen=True)
class ClipCapConfig:
    """The official decoding settings (COCO ClipCap as used by 3D-AVS)."""

    prefix_length: int = 10
    prefix_size: int = 512
    max_tokens: int = 67  # `entry_length`
    stop_token: str = "."

    def __post_init__(self) -> None:
        if self.prefix_length <= 0 or self.prefix_size <= 0 or self.max_tokens <= 0:
            raise ValueError("ClipCapConfig sizes must be positive")
        if not self.stop_token:
            raise ValueError("ClipCapConfig.stop_token must not be empty")


class ClipCapMLP(nn.Module):
    """`MLP((512, E*P//2, E*P))` with Tanh between the layers; parameters under `model.{0,2}`."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ClipCapWeightsError(ValueError):
    """The ClipCap weights file does not fit the model; the message names the keys."""


class ClipCapDecoder(nn.Module):
    """`clip_project` + GPT-2 with the official parameter names (`clip_project.*`, `gpt.*`)."""

    def __init__(self, gpt: nn.Module, config: ClipCapConfig | None = None) -> None:
        super().__init__()
        self.config = config or ClipCapConfig()
        self.gpt = gpt
        e = int(gpt.transformer.wte.weight.shape[1])
        p = self.config.prefix_length
        self.embedding_size = e
        if p > 10:  # the official choice ("not enough memory")
            self.clip_project: nn.Module = nn.Linear(self.config.prefix_size, e * p)
        else:
            self.clip_project = ClipCapMLP((self.config.prefix_size, (e * p) // 2, e * p))

    def prefix_embeddings(self, prefixes: torch.Tensor) -> torch.Tensor:
        """[B, prefix_size] -> [B, prefix_length, E] GPT-2 input embeddings."""
        return self.clip_project(prefixes).view(-1, self.config.prefix_length, self.embedding_size)

    @torch.no_grad()
    def generate_tokens(self, prefixes: torch.Tensor, stop_id: int) -> list[list[int]]:
        """Greedy decoding of every row; each list ends with `stop_id` if the row stopped."""
        if prefixes.ndim != 2 or prefixes.shape[1] != self.config.prefix_size:
            raise ValueError(
                f"prefixes must be [B, {self.config.prefix_size}], got {tuple(prefixes.shape)}"
            )
        b = prefixes.shape[0]
        if b == 0:
            return []
        param = next(self.parameters())
        embeds = self.prefix_embeddings(prefixes.to(device=param.device, dtype=param.dtype))
        wte = self.gpt.get_input_embeddings()
        out = self.gpt(inputs_embeds=embeds, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1, :]
        tokens = torch.zeros((b, self.config.max_tokens), dtype=torch.long, device=param.device)
        lengths = torch.full((b,), self.config.max_tokens, dtype=torch.long, device=param.device)
        done = torch.zeros(b, dtype=torch.bool, device=param.device)
        for step in range(self.config.max_tokens):
            nxt = logits.argmax(dim=-1)
            tokens[:, step] = nxt
            stopped = (nxt == stop_id) & ~done
            lengths[stopped] = step + 1
            done |= stopped
            if bool(done.all()) or step + 1 == self.config.max_tokens:
                break
            out = self.gpt(inputs_embeds=wte(nxt)[:, None, :], past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :]
        return [tokens[i, : int(lengths[i])].tolist() for i in range(b)]

    def caption(self, prefixes: torch.Tensor, tokenizer: Any) -> list[str]:
        """Captions of [B, 512] prefixes (one batch); '' when the first token is the stop."""
        stop_id = stop_token_id(tokenizer, self.config.stop_token)
        texts = []
        for toks in self.generate_tokens(prefixes, stop_id):
            if toks == [stop_id]:
                texts.append("")
                continue
            texts.append(tokenizer.decode(toks).strip())
        return texts


def stop_token_id(tokenizer: Any, stop_token: str = ".") -> int:
    """`tokenizer.encode(stop_token)[0]`, as the official code takes it."""
    ids = tokenizer.encode(stop_token, add_special_tokens=False)
    if not ids:
        raise ValueError(f"the tokenizer encodes the stop token {stop_token!r} to nothing")
    return int(ids[0])


def load_clipcap_state_dict(decoder: ClipCapDecoder, state: Mapping[str, Any]) -> None:
    """Load an official ClipCap state dict into `decoder`, every key checked."""
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClipCapWeightsError("every entry of the ClipCap state dict must be a tensor")
    own = decoder.state_dict()
    state = {
        k: v
        for k, v in state.items()
        if not (k.startswith("gpt.") and k.endswith(_LEGACY_BUFFERS) and k not in own)
    }
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ClipCapWeightsError(
            f"ClipCap weights do not fit: missing {missing[:8]}{' ...' if len(missing) > 8 else ''}"
            f", unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ClipCapWeightsError(
                f"{key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
            )
    decoder.load_state_dict(state, strict=True)


def load_clipcap_weights(decoder: ClipCapDecoder, path: str | Path) -> None:
    """Read `coco_weights.pt` with `weights_only=True` and load it (keys checked)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ClipCap weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ClipCapWeightsError(f"{path}: not a readable torch state dict: {exc}") from exc
    if not isinstance(state, Mapping):
        raise ClipCapWeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    load_clipcap_state_dict(decoder, state)


def build_gpt2(config: Any | None = None, seed: int = 0) -> nn.Module:
    """GPT2LMHeadModel from a config (default: GPT-2 small), seed-deterministic initial weights
    (replaced by the COCO file in production)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config or GPT2Config())
    return model.eval()


def build_clipcap(
    weights: str | Path | None = None,
    gpt_config: Any | None = None,
    config: ClipCapConfig | None = None,
    seed: int = 0,
) -> ClipCapDecoder:
    """The decoder with the COCO weights file, or (tests) seed-deterministic random weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = ClipCapDecoder(build_gpt2(gpt_config, seed), config)
    if weights is not None:
        load_clipcap_weights(decoder, weights)
    return decoder.eval()


def load_gpt2_tokenizer(name_or_path: str = "gpt2") -> Any:
    """The GPT-2 tokenizer (hub id or local folder), from the local cache when offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)
