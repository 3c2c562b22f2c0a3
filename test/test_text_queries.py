"""CLIP text queries: template ensemble, max over sub-names, caching, POP-3D's tables.

A tiny `CLIPTextModelWithProjection` (random weights) with a real `CLIPTokenizer` built offline
from the byte alphabet stands in for openai/clip-vit-base-patch16; the code path is the same.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lidar_ovseg_ros.occupancy.text_queries import (
    CLIP_MODEL_ID,
    NUSCENES16_CLASSES,
    NUSCENES_RAW_TO_16,
    NUSCENES_SUBCATEGORIES,
    PROMPT_TEMPLATES,
    TextQueryEncoder,
    TextQueryError,
    build_tiny_text_model,
    byte_level_clip_tokenizer,
    compare_embeddings,
    load_official_text_embeddings,
    nuscenes16_vocabulary,
    official_sub_name_table,
)

TEMPLATES = ("a photo of a {}.", "there is a {} in the scene.", "itap of the {}.")


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_clip_tokenizer()


@pytest.fixture(scope="module")
def text_model(tokenizer):
    return build_tiny_text_model(tokenizer, projection_dim=24, seed=0)


def _encoder(text_model, tokenizer, **kw):
    kw.setdefault("templates", TEMPLATES)
    return TextQueryEncoder(text_model, tokenizer, model_id="tiny", **kw)


def _one_sentence(text_model, tokenizer, sentence: str) -> torch.Tensor:
    """Independent path: a single unpadded sentence through the model."""
    tok = tokenizer([sentence], return_tensors="pt", truncation=True, max_length=77)
    with torch.no_grad():
        return text_model(**tok).text_embeds[0]


def test_tables_match_pop3d():
    assert len(PROMPT_TEMPLATES) == 85 and len(set(PROMPT_TEMPLATES)) == 85
    assert all(t.count("{}") == 1 for t in PROMPT_TEMPLATES)
    assert PROMPT_TEMPLATES[0] == "a bad photo of a {}."
    assert PROMPT_TEMPLATES[-1] == "this is one {} in the scene."
    assert len(NUSCENES_SUBCATEGORIES) == 32
    assert sum(len(v) for v in NUSCENES_SUBCATEGORIES.values()) == 102
    assert set(NUSCENES_RAW_TO_16) == set(NUSCENES_SUBCATEGORIES)
    vocab = nuscenes16_vocabulary()
    assert [name for name, _ in vocab] == list(NUSCENES16_CLASSES)
    assert sum(len(s) for _, s in vocab) == 74  # sub-names of ignored categories dropped
    subs = dict(vocab)
    assert subs["driveable_surface"] == [
        "Paved surface that a car can drive.",
        "Unpaved surface that a car can drive.",
    ]
    assert subs["pedestrian"] == ["Adult.", "Child.", "Construction worker", "Police officer."]
    assert subs["bus"] == ["Bendy bus", "Rigid bus"]
    assert len(subs["manmade"]) == 15 and "traffic light" in subs["manmade"]
    assert CLIP_MODEL_ID == "openai/clip-vit-base-patch16"


def test_name_embedding_is_the_normalised_mean_of_normalised_template_embeddings(
    text_model, tokenizer
):
    enc = _encoder(text_model, tokenizer)
    got = enc.encode_query("traffic cone")
    per_template = torch.stack(
        [F.normalize(_one_sentence(text_model, tokenizer, t.format("traffic cone")), dim=-1)
         for t in TEMPLATES]
    )  # fmt: skip
    expected = F.normalize(per_template.mean(0), dim=-1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.shape == (24,)
    # batching with padding to the longest sentence does not change an embedding
    batch = enc.embed_texts(["a car", "a much longer sentence about a construction vehicle"])
    single = F.normalize(_one_sentence(text_model, tokenizer, "a car"), dim=-1)
    torch.testing.assert_close(batch[0], single, rtol=1e-5, atol=1e-5)


def test_class_score_is_the_max_over_its_sub_names(text_model, tokenizer):
    enc = _encoder(text_model, tokenizer)
    classes = [("car", ["car", "sedan", "van"]), ("vegetation", ["tree", "bush"]), ("road", [])]
    vocab = enc.encode_vocabulary(classes)
    assert vocab.class_names == ("car", "vegetation", "road")
    assert vocab.sub_names == ("car", "sedan", "van", "tree", "bush", "road")
    assert vocab.class_index.tolist() == [0, 0, 0, 1, 1, 2]
    feats = torch.randn(50, 24, generator=torch.Generator().manual_seed(1))
    scores = vocab.scores(feats)
    assert scores.shape == (50, 3)
    subs = torch.stack([enc.encode_query(n) for n in vocab.sub_names])
    cos = F.normalize(feats, dim=-1) @ subs.T
    expected = torch.stack([cos[:, :3].max(1).values, cos[:, 3:5].max(1).values, cos[:, 5]], 1)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)


def test_embeddings_are_cached_per_name_and_per_vocabulary(text_model, tokenizer, tmp_path):
    enc = _encoder(text_model, tokenizer, cache_dir=tmp_path)
    a = enc.encode_vocabulary([("car", ["car", "van"]), ("tree", ["tree"])])
    assert enc.stats["encoded_names"] == 3
    assert enc.encode_vocabulary([("car", ["car", "van"]), ("tree", ["tree"])]) is a
    assert enc.stats["vocab_cache_hits"] == 1 and enc.stats["encoded_names"] == 3
    # a new vocabulary re-encodes only its new sub-names
    b = enc.encode_vocabulary([("tree", ["tree"]), ("bus", ["bus", "van"])])
    assert enc.stats["encoded_names"] == 4
    torch.testing.assert_close(b.embeddings[0], a.embeddings[2])
    # the disk cache serves a fresh encoder with the same model id and templates
    enc2 = _encoder(text_model, tokenizer, cache_dir=tmp_path)
    c = enc2.encode_vocabulary([("bus", ["bus", "van"])])
    assert enc2.stats["encoded_names"] == 0
    torch.testing.assert_close(c.embeddings, b.embeddings[1:])
    # other templates are another cache key
    enc3 = _encoder(text_model, tokenizer, cache_dir=tmp_path, templates=("{}",))
    d = enc3.encode_vocabulary([("bus", ["bus"])])
    assert enc3.stats["encoded_names"] == 1
    assert not torch.allclose(d.embeddings[0], c.embeddings[0])


def test_full_85_template_ensemble_on_the_nuscenes_vocabulary(text_model, tokenizer):
    enc = _encoder(text_model, tokenizer, templates=PROMPT_TEMPLATES)
    vocab = enc.encode_vocabulary(nuscenes16_vocabulary()[:4])
    assert vocab.embeddings.shape == (4 + 1 + 2 + 10, 24)
    torch.testing.assert_close(vocab.embeddings.norm(dim=-1), torch.ones(17))
    q = enc.encode_query("Bicycle")  # the sub-name of 'bicycle' -> same ensemble embedding
    torch.testing.assert_close(vocab.embeddings[4], q)


def test_invalid_vocabularies_are_rejected_with_the_entry_named(text_model, tokenizer):
    enc = _encoder(text_model, tokenizer)
    with pytest.raises(TextQueryError, match="empty"):
        enc.encode_vocabulary([])
    with pytest.raises(TextQueryError, match="'car' appears twice"):
        enc.encode_vocabulary([("car", ["car"]), ("car", ["sedan"])])
    with pytest.raises(TextQueryError, match="class 'tree' has an empty"):
        enc.encode_vocabulary([("tree", ["tree", " "])])
    with pytest.raises(TextQueryError, match="pair"):
        enc.encode_vocabulary(["car"])
    with pytest.raises(TextQueryError, match="non-empty"):
        enc.encode_query("  ")
    with pytest.raises(TextQueryError, match="template"):
        _encoder(text_model, tokenizer, templates=("a photo",))


def test_from_pretrained_loads_a_local_clip_directory(text_model, tokenizer, tmp_path):
    text_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    enc = TextQueryEncoder.from_pretrained(str(tmp_path), templates=TEMPLATES)
    ref = _encoder(text_model, tokenizer)
    assert enc.model_id == str(tmp_path) and enc.embed_dim == 24
    torch.testing.assert_close(enc.encode_query("a red car"), ref.encode_query("a red car"))


def test_dot_scores_use_the_raw_features_cosine_normalises_them(text_model, tokenizer):
    enc = _encoder(text_model, tokenizer)
    vocab = enc.encode_vocabulary([("car", ["car", "van"]), ("tree", ["tree"])])
    feats = 7.0 * torch.randn(20, 24, generator=torch.Generator().manual_seed(3))
    raw = feats @ vocab.embeddings.T  # official: F.conv1d(features, text) = plain dot product
    dot = vocab.scores(feats, score="dot")
    torch.testing.assert_close(dot, torch.stack([raw[:, :2].max(1).values, raw[:, 2]], 1))
    cos = vocab.scores(feats, score="cosine")
    assert cos.abs().max() <= 1.0 + 1e-6 and dot.abs().max() > 1.5  # different units
    torch.testing.assert_close(cos * feats.norm(dim=-1, keepdim=True), dot, rtol=1e-5, atol=1e-5)
    assert torch.equal(cos.argmax(-1), dot.argmax(-1))  # same labels, other score values
    with pytest.raises(TextQueryError, match="score must be one of"):
        vocab.scores(feats, score="l2")


def test_a_prompt_longer_than_the_context_is_refused_not_truncated(text_model, tokenizer):
    enc = _encoder(text_model, tokenizer)
    long = "an extremely long description of a parked vehicle next to the curb of the road"
    # the byte-level tokenizer gives one token per non-space character: > 77 with a template
    with pytest.raises(TextQueryError, match=r"prompt 'an extremely long description.*too long"):
        enc.encode_vocabulary([("car", ["car", long])])
    assert enc.stats["encoded_names"] == 0  # refused before anything was encoded
    with pytest.raises(TextQueryError, match="too long"):
        enc.encode_query(long)
    with pytest.raises(TextQueryError, match="longer than the text model's 77 tokens"):
        enc.embed_texts(["a car", long * 2])
    assert enc.encode_vocabulary([("car", ["car"])]).embeddings.shape == (1, 24)


def _official_file(path, dim: int, dtype=torch.float16, transpose: bool = False):
    """A file in the official format: (weights [D, 102], cls2idx), as prompt_engineering.py
    saves it (torch.stack(..., dim=1) of normalised fp16 CLIP embeddings, list of raw ids)."""
    table = official_sub_name_table()
    w = F.normalize(
        torch.randn(len(table), dim, generator=torch.Generator().manual_seed(5)), dim=-1
    )
    w = w.to(dtype)
    torch.save((w if transpose else w.T.contiguous(), [raw for _, raw in table]), path)
    return w


def test_official_zeroshot_weights_load_with_keys_and_shapes_checked(tmp_path):
    w = _official_file(tmp_path / "zeroshot_weights.pth", 24)
    vocab = load_official_text_embeddings(tmp_path / "zeroshot_weights.pth", feature_dim=24)
    assert vocab.class_names == NUSCENES16_CLASSES
    assert len(vocab.sub_names) == 74 and vocab.embeddings.dtype == torch.float32
    # the official loader drops the columns of ignored categories and keeps the rest in order
    expected = dict(nuscenes16_vocabulary())
    for c, name in enumerate(NUSCENES16_CLASSES):
        got = [s for s, i in zip(vocab.sub_names, vocab.class_index.tolist()) if i == c]
        assert sorted(got) == sorted(expected[name])
    table = official_sub_name_table()
    col = [n for n, _ in table].index("sedan")
    row = vocab.sub_names.index("sedan")
    assert vocab.class_names[int(vocab.class_index[row])] == "car"
    torch.testing.assert_close(vocab.embeddings[row], w[col].float())  # as stored
    # [S, D] layout is accepted too (the official loader transposes [D, S])
    _official_file(tmp_path / "t.pth", 24, transpose=True)
    t = load_official_text_embeddings(tmp_path / "t.pth", feature_dim=24)
    torch.testing.assert_close(t.embeddings, vocab.embeddings)


def test_malformed_official_embedding_files_are_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"weights": torch.zeros(512, 102)}, bad)
    with pytest.raises(TextQueryError, match=r"\(weights, cls2idx\) pair"):
        load_official_text_embeddings(bad)
    torch.save((torch.zeros(512, 102), list(range(101))), bad)
    with pytest.raises(TextQueryError, match="102 embeddings but 101"):
        load_official_text_embeddings(bad)
    torch.save((torch.zeros(300, 102), list(range(102))), bad)
    with pytest.raises(TextQueryError, match="no 512-dim axis"):
        load_official_text_embeddings(bad)
    torch.save((torch.zeros(512, 2), [3, 40]), bad)
    with pytest.raises(TextQueryError, match="raw nuScenes indices"):
        load_official_text_embeddings(bad)
    with pytest.raises(FileNotFoundError):
        load_official_text_embeddings(tmp_path / "missing.pth")


def test_official_and_project_embeddings_are_compared_per_sub_name(text_model, tokenizer, tmp_path):
    enc = _encoder(text_model, tokenizer)
    ours = enc.encode_vocabulary(nuscenes16_vocabulary())
    # an "official" file holding exactly the project's embeddings (in the official column order)
    table = official_sub_name_table()
    raw_names = list(NUSCENES_SUBCATEGORIES)
    cols = []
    for name, raw in table:
        label = NUSCENES_RAW_TO_16[raw_names[raw]]
        cols.append(enc.encode_query(name) if label else torch.zeros(24))
    torch.save((torch.stack(cols, 1), [raw for _, raw in table]), tmp_path / "z.pth")
    official = load_official_text_embeddings(tmp_path / "z.pth", feature_dim=24)
    same = compare_embeddings(official, ours)
    assert same.matched == 74 and same.min_cosine == pytest.approx(1.0, abs=1e-6)
    assert same.max_abs_diff < 1e-6
    _official_file(tmp_path / "r.pth", 24)
    other = compare_embeddings(load_official_text_embeddings(tmp_path / "r.pth", 24), ours)
    assert other.matched == 74 and other.mean_cosine < 0.9
    assert other.line().startswith("text embeddings, official file vs project ensemble: 74")
    assert "/" in other.worst
