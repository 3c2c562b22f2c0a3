"""ClipCap decoder: official key layout of coco_weights.pt, greedy decoding equal to the official
top-p-then-argmax loop, stop token and length limit, batching over sectors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lidar_ovseg_ros.autovocab.clipcap import (
    ClipCapConfig,
    ClipCapWeightsError,
    build_clipcap,
    stop_token_id,
)
from lidar_ovseg_ros.autovocab.tiny_models import build_tiny_clipcap, tiny_gpt2_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_clipcap(seed=0)


def official_generate2(decoder, tokenizer, prefix: torch.Tensor) -> list[int]:
    """The official per-sector loop: full recompute each step, top-p 0.8 filter, then argmax."""
    stop = tokenizer.encode(".")[0]
    generated = decoder.clip_project(prefix[None]).reshape(1, decoder.config.prefix_length, -1)
    tokens = None
    for _ in range(67):
        logits = decoder.gpt(inputs_embeds=generated).logits[:, -1, :]
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cum > 0.8
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = 0
        logits[:, sorted_indices[remove]] = -float("inf")
        nxt = torch.argmax(logits, -1).unsqueeze(0)
        tokens = nxt if tokens is None else torch.cat((tokens, nxt), dim=1)
        generated = torch.cat((generated, decoder.gpt.transformer.wte(nxt)), dim=1)
        if stop == nxt.item():
            break
    return tokens[0].tolist()


def test_batched_cached_greedy_equals_the_official_loop(tiny):
    decoder, tokenizer = tiny
    prefixes = torch.randn(12, 512, generator=torch.Generator().manual_seed(0)) * 3
    stop = stop_token_id(tokenizer)
    with torch.no_grad():
        got = decoder.generate_tokens(prefixes, stop)
        for row in range(12):
            assert got[row] == official_generate2(decoder, tokenizer, prefixes[row])
    texts = decoder.caption(prefixes, tokenizer)
    assert len(texts) == 12
    assert texts[0] == tokenizer.decode(got[0]).strip()


def _constant_final_state(decoder, favourite: int, avoid: int) -> None:
    """ln_f outputs a constant vector h, so every step's logits are h . wte[v]: `favourite` wins."""
    gpt = decoder.gpt
    h = torch.zeros(gpt.config.n_embd)
    h[0] = 1.0
    with torch.no_grad():
        gpt.transformer.ln_f.weight.zero_()
        gpt.transformer.ln_f.bias.copy_(h)
        gpt.transformer.wte.weight[:, 0] = 0.0
        gpt.transformer.wte.weight[favourite, 0] = 10.0
        gpt.transformer.wte.weight[avoid, 0] = -10.0


def test_stops_at_the_first_period_and_caps_at_67_tokens():
    decoder, tokenizer = build_tiny_clipcap(seed=1)
    stop = stop_token_id(tokenizer)
    word = tokenizer.encode(" car")[0]
    _constant_final_state(decoder, favourite=stop, avoid=word)
    assert decoder.caption(torch.zeros(2, 512), tokenizer) == ["", ""]
    _constant_final_state(decoder, favourite=word, avoid=stop)
    toks = decoder.generate_tokens(torch.zeros(1, 512), stop)[0]
    assert toks == [word] * 67
    assert decoder.caption(torch.zeros(1, 512), tokenizer)[0] == " ".join(["car"] * 67)


def test_prefix_mlp_sizes_and_official_keys():
    decoder, _ = build_tiny_clipcap()
    keys = set(decoder.state_dict())
    assert {"clip_project.model.0.weight", "clip_project.model.2.bias"} <= keys
    assert "gpt.transformer.wte.weight" in keys and "gpt.lm_head.weight" in keys
    e = decoder.embedding_size
    assert decoder.clip_project.model[0].weight.shape == (e * 10 // 2, 512)
    assert decoder.clip_project.model[2].weight.shape == (e * 10, e * 5)
    assert isinstance(decoder.clip_project.model[1], torch.nn.Tanh)
    with pytest.raises(ValueError, match="prefixes must be"):
        decoder.generate_tokens(torch.zeros(2, 300), 0)


def test_coco_weights_file_loads_with_keys_checked(tmp_path, tiny):
    source, tokenizer = tiny
    state = {k: v.clone() for k, v in source.state_dict().items()}
    # the COCO file (old transformers) also holds per-layer attention buffers
    for i in range(2):
        state[f"gpt.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 8, 8))
        state[f"gpt.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    path = tmp_path / "coco_weights.pt"
    torch.save(state, path)
    cfg = tiny_gpt2_config(len(tokenizer))
    decoder = build_clipcap(path, gpt_config=cfg, seed=5)
    prefixes = torch.randn(3, 512, generator=torch.Generator().manual_seed(2))
    assert decoder.caption(prefixes, tokenizer) == source.caption(prefixes, tokenizer)

    bad = dict(state)
    bad.pop("clip_project.model.2.weight")
    torch.save(bad, path)
    with pytest.raises(ClipCapWeightsError, match=r"missing \['clip_project\.model\.2\.weight'\]"):
        build_clipcap(path, gpt_config=cfg)
    wrong = dict(state)
    wrong["clip_project.model.0.weight"] = torch.zeros(10, 512)
    torch.save(wrong, path)
    with pytest.raises(ClipCapWeightsError, match="has shape"):
        build_clipcap(path, gpt_config=cfg)
    with pytest.raises(ClipCapWeightsError, match="expected a state dict"):
        torch.save([1, 2], path)
        build_clipcap(path, gpt_config=cfg)


def test_full_size_layout_is_gpt2_small_with_a_3840_7680_mlp():
    """The production decoder: GPT2Config() is GPT-2 small; prefix MLP 512 -> 3840 -> 7680."""
    decoder = build_clipcap(config=ClipCapConfig())
    mlp = decoder.clip_project.model
    assert (mlp[0].in_features, mlp[0].out_features, mlp[2].out_features) == (512, 3840, 7680)
    gpt = decoder.gpt.config
    assert (gpt.n_layer, gpt.n_embd, gpt.n_head, gpt.vocab_size) == (12, 768, 12, 50257)


def test_random_decoder_weights_depend_only_on_the_seed():
    """The prefix MLP too (it was drawn from the global RNG: captions changed run to run)."""
    torch.manual_seed(123)
    a, _ = build_tiny_clipcap(seed=4)
    torch.manual_seed(456)
    b, _ = build_tiny_clipcap(seed=4)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
