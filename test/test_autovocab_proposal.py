"""Proposed vocabulary: hysteresis over rounds, cap, base classes, provenance, the switch; TPSS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lidar_ovseg_ros.autovocab.proposal import ProposalConfig, VocabularyProposer, tag_color
from lidar_ovseg_ros.autovocab.tagging import CaptionTagger, Tag
from lidar_ovseg_ros.autovocab.tpss import tpss
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, Vocabulary
from lidar_ovseg_ros.vocabulary_switch import VocabularySwitcher


def tags(*names: str, source: str = "lidar/sector_0") -> list[Tag]:
    return [Tag(n, [source], [f"a {n}."]) for n in names]


def test_tags_enter_and_leave_with_hysteresis():
    p = VocabularyProposer(ProposalConfig(window=3, enter_rounds=2))
    r1 = p.update(tags("car", "tree"))
    assert r1.vocabulary is None and not r1.changed  # nothing seen twice yet
    r2 = p.update(tags("car"))
    assert r2.vocabulary.names == ["car"] and r2.changed and r2.added == ["car"]
    r3 = p.update(tags("tree"))  # tree: 2 of the last 3 rounds
    assert r3.vocabulary.names == ["car", "tree"] and r3.added == ["tree"]
    r4 = p.update([])  # car seen in round 2 (still in the window): stays
    assert r4.vocabulary.names == ["car", "tree"] and not r4.changed
    r5 = p.update([])  # window = rounds 3-5: car gone, tree stays
    assert r5.vocabulary.names == ["tree"] and r5.removed == ["car"] and r5.changed
    r6 = p.update(tags("car"))  # tree unseen for 3 rounds: out; car once: below enter_rounds
    assert r6.vocabulary is None and r6.removed == ["tree"] and not r6.changed
    r7 = p.update(tags("car"))
    assert r7.vocabulary.names == ["car"] and r7.changed


def test_cap_prefers_frequent_then_already_active_and_keeps_class_order():
    p = VocabularyProposer(ProposalConfig(window=4, max_auto_classes=2))
    p.update(tags("car", "bus"))
    r = p.update(tags("car", "bus", "tree"))
    assert r.vocabulary.names == ["car", "bus"]
    r = p.update(tags("tree", "bus", "truck"))  # tree 2, bus 3, car 2 (active), truck 1
    assert r.vocabulary.names == ["car", "bus"] and not r.changed
    r = p.update(tags("tree", "bus"))  # tree 3 > car 2
    assert r.vocabulary.names == ["bus", "tree"] and r.removed == ["car"] and r.added == ["tree"]


def test_base_classes_always_present_first_and_tags_fold_into_them():
    base = Vocabulary.from_dict(
        {"name": "mine", "classes": [{"name": "car", "color": [1, 2, 3]}, "road"]}
    )
    p = VocabularyProposer(ProposalConfig(window=2), base=base)
    r = p.update([Tag("Car", ["camera/CAM_FRONT"], ["a Car."]), *tags("bench")])
    assert r.vocabulary.names == ["car", "road", "bench"]
    assert r.vocabulary.classes[0].color == (1, 2, 3)
    assert r.vocabulary.classes[2].color == tag_color("bench")
    assert r.provenance["car"]["origin"] == "base"
    assert r.provenance["car"]["sources"] == ["camera/CAM_FRONT"]
    assert r.provenance["bench"]["origin"] == "caption"
    assert r.provenance["bench"]["captions"] == ["a bench."]
    r = p.update([])
    r = p.update([])
    assert r.vocabulary.names == ["car", "road"]  # tags gone, base stays
    d = r.to_dict()
    assert d["vocabulary"] == ["car", "road"] and d["fingerprint"] == r.vocabulary.fingerprint()


def test_captions_to_vocabulary_swapped_in_through_the_switcher():
    class Recorder:
        def __init__(self):
            self.active = None

        def prepare_vocabulary(self, vocabulary, progress=None, cancel=None):
            return tuple(vocabulary.names)

        def activate(self, prepared):
            self.active = prepared

    model = Recorder()
    switcher = VocabularySwitcher(model)
    base = Vocabulary.from_names(["road"])
    switcher.activate_now(base, "start")
    proposer = VocabularyProposer(base=base)
    captions = {"lidar/sector_0": "a car parked on the side of a street."}
    proposal = proposer.update(CaptionTagger().tags(captions))
    assert proposal.changed
    switcher.request(proposal.vocabulary, "auto round 1")
    assert switcher.wait(5.0)
    assert model.active == ("road", "car", "street")
    assert switcher.status().active.name == "auto"


def test_config_validation():
    with pytest.raises(ValueError, match="window"):
        ProposalConfig(window=0)
    with pytest.raises(ValueError, match="enter_rounds"):
        ProposalConfig(window=2, enter_rounds=3)
    with pytest.raises(ValueError, match="max_auto_classes"):
        ProposalConfig(max_auto_classes=-1)


def test_tpss_is_the_mean_cosine_to_the_label_text():
    text = np.array([[1.0, 0.0], [0.0, 2.0]])
    feats = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [5.0, 5.0], [np.nan, 1.0]])
    labels = np.array([0, 0, 1, NO_CLASS_ID, 1])
    expected = (1.0 + math.sqrt(0.5) + 1.0) / 3
    assert tpss(feats, labels, text) == pytest.approx(expected)
    assert math.isnan(tpss(feats[:1], np.array([NO_CLASS_ID]), text))
    with pytest.raises(ValueError, match="labels"):
        tpss(feats, labels[:2], text)


def test_tpss_of_an_openscene_result_equals_the_per_point_definition(nuscenes_frame):
    """From the voxel features + rows (no per-point copy) == the per-point formula."""
    from lidar_ovseg_ros.autovocab.tpss import tpss_of_result
    from lidar_ovseg_ros.segmentation.openscene import OpenSceneConfig, OpenSceneSegmenter

    seg = OpenSceneSegmenter.from_config(OpenSceneConfig(profile="tiny", device="cpu"))
    active = seg.set_vocabulary(Vocabulary.from_names(["car", "road", "tree"]))
    xyz = nuscenes_frame.xyz[::4]
    res = seg.segment(xyz, return_features=True)
    got = tpss_of_result(res, active.text_embeddings)
    expected = tpss(res.features[res.valid], res.labels[res.valid], active.text_embeddings)
    assert got == pytest.approx(expected, abs=1e-5)
    assert -1 <= got <= 1
