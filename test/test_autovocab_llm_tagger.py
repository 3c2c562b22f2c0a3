"""Optional Caption2Tag by a small instruction model: the answer parser on hand-written answers,
the prompt/generate path on a tiny GPT-2, the from_pretrained path from a local folder."""

from __future__ import annotations

import pytest

from lidar_ovseg_ros.autovocab.llm_tagger import (
    PROMPT,
    LlmCaptionTagger,
    LlmTaggerConfig,
    build_tiny_llm_tagger,
    parse_answer,
)
from lidar_ovseg_ros.autovocab.pipeline import AutoVocabConfig, AutoVocabulary

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            " car, truck, traffic cones, buildings, the road, a tree, background",
            ["car", "truck", "traffic cone", "building", "road", "tree"],
        ),
        (
            "\n1. pedestrian\n2. bus stop\n3. Pedestrians\n- bench.",
            ["pedestrian", "bus stop", "bench"],
        ),
        ("cars; a very large red truck; aaaaa; view", ["car"]),
        ("", []),
    ],
)
def test_parse_answer(answer, expected):
    assert parse_answer(answer) == expected


def test_tiny_model_prompt_generate_and_provenance(tmp_path):
    tagger = build_tiny_llm_tagger()
    captions = {
        "camera/CAM_FRONT": "a car parked on the side of a street.",
        "lidar/sector_3": "a bus driving down a road next to a building.",
    }
    prompt = tagger.prompt(list(captions.values()))
    assert prompt.startswith(PROMPT.split("{")[0]) and "- a car parked" in prompt
    tagger.tags(captions)
    assert isinstance(tagger.last_answer, str) and tagger.last_answer
    assert tagger.tags({}) == []
    # provenance: each name keeps the captions that mention it; invented names are dropped
    items = list(captions.items())
    tags = tagger.tags_from_answer("cars, buildings, giraffe, road", items)
    assert [(t.name, t.sources) for t in tags] == [
        ("car", ["camera/CAM_FRONT"]),
        ("building", ["lidar/sector_3"]),
        ("road", ["lidar/sector_3"]),
    ]
    # the production loader reads a local folder
    tagger.model.save_pretrained(tmp_path / "llm")
    tagger.tokenizer.save_pretrained(tmp_path / "llm")
    cfg = LlmTaggerConfig(model=str(tmp_path / "llm"), max_new_tokens=24)
    loaded = LlmCaptionTagger.from_pretrained(cfg)
    assert loaded.answer(list(captions.values())) == tagger.answer(list(captions.values()))


def test_auto_vocabulary_with_the_llm_tagger(nuscenes_frame):
    auto = AutoVocabulary.from_config(
        AutoVocabConfig(profile="tiny", image_captioner="", tagger="llm")
    )
    assert isinstance(auto.tagger, LlmCaptionTagger)
    r = auto.run_round(nuscenes_frame.xyz[::8])
    assert set(r.captions) <= {f"lidar/sector_{i}" for i in range(12)}
    with pytest.raises(ValueError, match="tagger"):
        AutoVocabConfig(profile="tiny", tagger="gpt4")
    with pytest.raises(ValueError, match="max_new_tokens"):
        LlmTaggerConfig(max_new_tokens=0)
