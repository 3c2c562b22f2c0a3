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
    nuscenes16_vocabulary,
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
