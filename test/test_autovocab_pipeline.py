"""One auto-vocabulary round on the bundled nuScenes frame (tiny models): captions from the 12
LiDAR sectors and the 6 cameras, tags, a proposed vocabulary over a base vocabulary."""

from __future__ import annotations

import json

import pytest

from lidar_ovseg_ros.autovocab.pipeline import AutoVocabConfig, AutoVocabulary, clip_embedder
from lidar_ovseg_ros.vocabulary import Vocabulary

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_round_with_lidar_and_cameras(nuscenes_frame):
    from lidar_ovseg_ros.segmentation.text_encoder import ClipTextEncoder

    base = Vocabulary.from_names(["car", "road"], name="base")
    encoder = ClipTextEncoder.tiny(32)
    auto = AutoVocabulary.from_config(
        AutoVocabConfig(profile="tiny"), base=base, embedder=clip_embedder(encoder)
    )
    images = {n: c.load_image() for n, c in nuscenes_frame.cameras.items()}
    r = auto.run_round(nuscenes_frame.xyz, images)
    assert {f"lidar/sector_{i}" for i in range(12)} <= set(r.captions)
    assert {f"camera/{n}" for n in images} <= set(r.captions)
    vocab = r.proposal.vocabulary
    assert vocab.names[:2] == ["car", "road"] and len(vocab) > 2
    assert r.proposal.changed
    tag_names = {t.name for t in r.tags}
    assert set(vocab.names[2:]) <= tag_names
    for name in vocab.names[2:]:
        assert r.proposal.provenance[name]["sources"]
    doc = json.loads(json.dumps(r.captions_dict()))
    assert len(doc["lidar_sectors"]) == 12 and doc["round"] == 1
    assert json.loads(json.dumps(r.proposal.to_dict()))["vocabulary"] == vocab.names
    assert encoder.stats["encoded"] >= 1  # tag names went through the CLIP text encoder
    # the same scan again: same tags, nothing changes
    r2 = auto.run_round(nuscenes_frame.xyz, images)
    assert r2.proposal.vocabulary.names == vocab.names and not r2.proposal.changed


def test_lidar_only_round(nuscenes_frame):
    auto = AutoVocabulary.from_config(AutoVocabConfig(profile="tiny", image_captioner=""))
    assert auto.image_captioner is None
    r = auto.run_round(nuscenes_frame.xyz, None)
    assert set(r.captions) <= {f"lidar/sector_{i}" for i in range(12)}
    assert "image_captions" not in r.timings


def test_config_validation():
    with pytest.raises(ValueError, match="smap_checkpoint is required"):
        AutoVocabConfig(profile="full")
    with pytest.raises(ValueError, match="no captioner"):
        AutoVocabConfig(profile="tiny", use_point_captioner=False, image_captioner="")
    with pytest.raises(ValueError, match="merge_threshold"):
        AutoVocabConfig(profile="tiny", merge_threshold=2.0)
    with pytest.raises(ValueError, match="enter_rounds"):
        AutoVocabConfig(profile="tiny", window=1, enter_rounds=2)
