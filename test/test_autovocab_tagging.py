"""Caption2Tag (deterministic, no LLM): hand-written caption fixtures in the style of the real
captioners (ClipCap COCO, BLIP) with the tags expected from each."""

from __future__ import annotations

import numpy as np
import pytest

from lidar_ovseg_ros.autovocab.tagging import (
    CaptionTagger,
    Tag,
    TaggerConfig,
    merge_similar,
    noun_phrases,
    singularize,
)

CAPTIONS = [
    ("a car parked on the side of a street.", ["car", "street"]),
    (
        "a man riding a bike down a city street next to a bus.",
        ["man", "bike", "city street", "bus"],
    ),
    (
        "there is a white truck driving down the road with trees in the background.",
        ["truck", "road", "tree"],
    ),
    (
        "a traffic light and a stop sign at an intersection.",
        ["traffic light", "stop sign", "intersection"],
    ),
    (
        "people walking on a sidewalk in front of a tall building.",
        ["person", "sidewalk", "building"],
    ),
    (
        "a construction site with orange barriers and traffic cones on the road.",
        ["construction site", "barrier", "traffic cone", "road"],
    ),
    ("a parking lot filled with lots of parked cars.", ["parking lot", "car"]),
    ("a view of a busy street with buses and taxis.", ["street", "bus", "taxi"]),
    ("an image of a bus stop with a bench.", ["bus stop", "bench"]),
    ("arafed view of a city street with a lot of cars", ["city street", "car"]),
    ("a group of motorcycles parked next to each other", ["motorcycle"]),
    ("A street with a red and white sign and a moving car.", ["street", "sign", "car"]),
    ("a black and white photo of a woman's umbrella on a rainy day", ["woman", "umbrella"]),
    ("cars are parked along the curb near palm trees.", ["car", "curb", "palm tree"]),
    ("two police officers standing next to a fire hydrant.", ["police officer", "fire hydrant"]),
    ("there is a white truck that is parked on the side of the road", ["truck", "road"]),
    ("an empty parking lot with a few cars", ["parking lot", "car"]),
    ("a blurry photo of a street at night", ["street"]),
    ("a city bus stopped at a bus stop", ["city bus", "bus stop"]),
    ("a street sign on a pole next to a tree", ["street sign", "pole", "tree"]),
    (
        "a construction worker in an orange vest standing in the street",
        ["construction worker", "vest", "street"],
    ),
    (
        "a dark street with street lights and a traffic light",
        ["street", "street light", "traffic light"],
    ),
    ("the back of a bus on a city street", ["bus", "city street"]),
    ("a person riding a motorcycle on a wet road", ["person", "motorcycle", "road"]),
    ("a picture of a scene in the background", []),
    ("alalalalalalalalalalalalal and a car", ["car"]),
    ("aaaaaa sign sign sign sign sign", ["sign"]),
    ("", []),
]


@pytest.mark.parametrize(("caption", "expected"), CAPTIONS)
def test_noun_phrases_of_real_style_captions(caption, expected):
    assert noun_phrases(caption) == expected


def test_singularize_rules():
    pairs = {
        "cars": "car",
        "buses": "bus",
        "bus": "bus",
        "people": "person",
        "benches": "bench",
        "boxes": "box",
        "bodies": "body",
        "leaves": "leaf",
        "grass": "grass",
        "glasses": "glasses",
        "trees": "tree",
        "houses": "house",
        "taxis": "taxi",
        "cyclists": "cyclist",
    }
    assert {w: singularize(w) for w in pairs} == pairs


def test_tagger_merges_duplicates_and_keeps_sources():
    captions = {
        "camera/CAM_FRONT": "a white truck driving down the road with trees in the background.",
        "camera/CAM_BACK": "a car parked on the side of a street.",
        "lidar/sector_3": "a parking lot filled with lots of parked cars.",
        "lidar/sector_4": "",
        "lidar/sector_5": "a picture of a scene in the background",
    }
    tags = CaptionTagger().tags(captions)
    assert [t.name for t in tags] == ["truck", "road", "tree", "car", "street", "parking lot"]
    car = tags[3]
    assert car.sources == ["camera/CAM_BACK", "lidar/sector_3"]
    assert car.captions == [captions["camera/CAM_BACK"], captions["lidar/sector_3"]]
    assert car.count == 2
    assert car.to_dict()["sources"] == car.sources
    extra = CaptionTagger(TaggerConfig(extra_stop_words=("tree", "street"))).tags(captions)
    assert [t.name for t in extra] == ["truck", "road", "car", "parking lot"]


def test_merge_similar_keeps_the_most_frequent_name_and_all_provenance():
    tags = [
        Tag("automobile", ["s0"], ["an automobile."]),
        Tag("car", ["s1", "s2"], ["a car.", "two cars."]),
        Tag("tree", ["s3"], ["a tree."]),
        Tag("vehicle", ["s4"], ["a vehicle."]),
    ]
    emb = np.array(
        [[1.0, 0.1, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.7, 0.7, 0.0]], dtype=np.float32
    )
    merged = merge_similar(tags, emb, threshold=0.95)
    assert [t.name for t in merged] == ["car", "tree", "vehicle"]
    assert merged[0].aliases == ["automobile"]
    assert merged[0].sources == ["s1", "s2", "s0"]
    assert merged[0].count == 3
    # a lower threshold also folds "vehicle" into "car"
    assert [t.name for t in merge_similar(tags, emb, threshold=0.7)] == ["car", "tree"]
    with pytest.raises(ValueError, match="embeddings"):
        merge_similar(tags, emb[:2], 0.9)


def test_tagger_calls_the_embedder_with_the_tag_names():
    seen = []

    def table_embedder(names):
        seen.append(list(names))
        vec = {"car": [1, 0], "automobile": [1, 0.05], "road": [0, 1]}
        return np.array([vec[n] for n in names], dtype=np.float32)

    tagger = CaptionTagger(TaggerConfig(merge_threshold=0.99), embedder=table_embedder)
    tags = tagger.tags([("a", "a car on the road."), ("b", "an automobile.")])
    assert seen == [["car", "road", "automobile"]]
    assert [(t.name, t.aliases) for t in tags] == [("car", ["automobile"]), ("road", [])]
    with pytest.raises(ValueError, match="merge_threshold"):
        TaggerConfig(merge_threshold=1.5)
