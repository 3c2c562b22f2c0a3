"""OpenScene segmenter (tiny profile, real spconv forwards on the bundled scans) and its CLIP
text encoder: cosine scores, argmax labels, text cache, grounding, TTA, the shared interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lidar_ovseg_ros.models.checkpoints import CheckpointNotFoundError
from lidar_ovseg_ros.segmentation.base import Segmenter, supports_grounding
from lidar_ovseg_ros.segmentation.openscene import (
    TINY_FEATURE_DIM,
    OpenSceneConfig,
    OpenSceneSegmenter,
    OpenSceneVocabulary,
)
from lidar_ovseg_ros.segmentation.text_encoder import ClipTextEncoder, apply_template
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, Vocabulary, load_vocabulary
from lidar_ovseg_ros.vocabulary_switch import VocabularySwitcher

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def segmenter() -> OpenSceneSegmenter:
    seg = OpenSceneSegmenter.from_config(OpenSceneConfig(profile="tiny", device="cpu"))
    seg.set_vocabulary(Vocabulary.from_names(["car", "road", "tree", "building"]))
    return seg


@pytest.fixture(scope="module")
def nuscenes_result(segmenter, nuscenes_frame):
    return segmenter.segment(nuscenes_frame.points, return_features=True)


# -- text encoder ------------------------------------------------------------------------------


def test_template_and_articles():
    assert apply_template("a {} in a scene", "car") == "a car in a scene"
    assert apply_template("a {} in a scene", "a  parked car") == "a parked car in a scene"
    assert apply_template("a {} in a scene", "an excavator") == "a excavator in a scene"
    assert apply_template("{}", "a car") == "a car"


def test_text_cache_per_model_template_and_text():
    enc = ClipTextEncoder.tiny(16)
    a = enc.encode(["car", "tree"])
    assert a.shape == (2, 16)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))
    assert enc.stats["encoded"] == 2
    b = enc.encode(["tree", "car", "bus"])
    assert enc.stats["encoded"] == 3  # only "bus" was new
    torch.testing.assert_close(b[:2], a.flip(0))
    enc.encode(["car"], template="a photo of a {}.")
    assert enc.stats["encoded"] == 4  # another template is another text
    assert enc.cache_hit_ratio() == pytest.approx(2 / 6)
    # The cached embedding is the text tower's output for the templated sentence.
    direct = enc._embed(["a bus in a scene"])[0]
    torch.testing.assert_close(b[2], direct)


def test_disk_cache_survives_a_restart_and_ignores_torn_files(tmp_path):
    first = ClipTextEncoder.tiny(16, cache_dir=tmp_path)
    a = first.encode(["car", "tree"])
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not list(tmp_path.glob("*.tmp"))
    again = ClipTextEncoder.tiny(16, cache_dir=tmp_path)  # a new process, same folder
    b = again.encode(["car", "tree"])
    assert again.stats["encoded"] == 0 and again.stats["disk_hits"] == 2
    torch.testing.assert_close(a, b)
    assert again.cache_hit_ratio() == 1.0
    for path in tmp_path.glob("*.npy"):
        path.write_bytes(b"torn")
    third = ClipTextEncoder.tiny(16, cache_dir=tmp_path)
    torch.testing.assert_close(third.encode(["car", "tree"]), a)
    assert third.stats["encoded"] == 2  # re-encoded and rewritten
    other_model = ClipTextEncoder.tiny(16, seed=1, cache_dir=tmp_path)
    other_model.encode(["car"])
    assert other_model.stats["encoded"] == 1  # the model id is part of the key


def test_class_embedding_is_the_normalised_mean_of_its_prompts():
    enc = ClipTextEncoder.tiny(16)
    cls = enc.encode_classes([["a car", "a sedan"], ["tree"]])
    parts = enc.encode(["a car", "a sedan"])
    torch.testing.assert_close(cls[0], F.normalize(parts.mean(0), dim=0))
    torch.testing.assert_close(cls[1], enc.encode(["tree"])[0])
    with pytest.raises(ValueError):
        enc.encode([" "])


# -- segmenter -------------------------------------------------------------------------------------


def test_labels_are_the_argmax_of_cosine_and_of_the_official_dot_product(
    segmenter, nuscenes_result, nuscenes_frame
):
    r = nuscenes_result
    n = len(nuscenes_frame.points)
    assert r.labels.shape == r.scores.shape == (n,) and r.valid.all()
    text = segmenter.active.text_embeddings
    feats = torch.from_numpy(r.features)
    cos = F.normalize(feats, dim=-1) @ text.t()
    np.testing.assert_array_equal(r.labels, cos.argmax(1).numpy())
    np.testing.assert_allclose(r.scores, cos.max(1).values.numpy(), atol=1e-5)
    official = (feats.half() @ text.half().t()).float().argmax(1).numpy()  # evaluate.py
    assert (official == r.labels).mean() > 0.99  # fp16 rounding may flip near-ties
    assert len(np.unique(r.labels)) > 1
    assert set(r.timings) >= {"preprocess", "backbone", "classifier", "total"}
    again = segmenter.segment(nuscenes_frame.points)
    np.testing.assert_array_equal(again.labels, r.labels)  # deterministic without TTA


def test_every_point_of_a_voxel_gets_the_voxel_feature(nuscenes_result, nuscenes_frame):
    from lidar_ovseg_ros.segmentation.voxelizer import voxelize

    vox = voxelize(nuscenes_frame.xyz)
    feats = nuscenes_result.features
    np.testing.assert_array_equal(feats, feats[vox.kept][vox.inverse])


def test_grounding_is_the_cosine_with_the_query(segmenter, nuscenes_result):
    heat = segmenter.grounding("a parked car", nuscenes_result)
    q = segmenter.text_encoder.encode(["a parked car"])[0]
    want = F.normalize(torch.from_numpy(nuscenes_result.features), dim=-1) @ q
    np.testing.assert_allclose(heat, want.numpy(), atol=1e-5)
    with pytest.raises(ValueError):
        segmenter.grounding("  ", nuscenes_result)


def test_non_finite_points_min_score_and_kitti(segmenter, kitti_frame):
    pts = kitti_frame.points.copy()
    pts[:10, 0] = np.nan
    r = segmenter.segment(pts)
    assert (r.labels[:10] == NO_CLASS_ID).all() and not r.valid[:10].any()
    assert (r.labels[10:] < 4).all()
    strict = OpenSceneSegmenter(
        segmenter.model,
        segmenter.text_encoder,
        OpenSceneConfig(profile="tiny", min_score=float(np.median(r.scores[10:]))),
    )
    strict.activate(segmenter.active)
    s = strict.segment(pts)
    dropped = s.labels[10:] == NO_CLASS_ID
    assert 0.3 < dropped.mean() < 0.7
    np.testing.assert_array_equal(s.labels[10:][~dropped], r.labels[10:][~dropped])
    # A garbage return far away neither fails the frame nor shifts the others' voxels.
    with_far = np.vstack([pts[10:], [[-1e9, 5.0, 0.0, 0.0]]]).astype(np.float32)
    f = segmenter.segment(with_far)
    assert f.labels[-1] == NO_CLASS_ID and not f.valid[-1]
    np.testing.assert_array_equal(f.labels[:-1], r.labels[10:])
    empty = segmenter.segment(np.zeros((0, 4), np.float32))
    assert empty.labels.shape == (0,)


def test_tta_sums_repeats_and_is_reproducible(segmenter, kitti_frame):
    cfg = OpenSceneConfig(profile="tiny", tta_repeats=2, seed=3)
    tta = OpenSceneSegmenter(segmenter.model, segmenter.text_encoder, cfg)
    tta.activate(segmenter.active)
    a, b = tta.segment(kitti_frame.points), tta.segment(kitti_frame.points)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert len(a.passes) == 2
    plain = segmenter.segment(kitti_frame.points)
    assert (a.labels != plain.labels).any()  # the rotations/scales changed the voxels


def test_vocabulary_swap_encodes_new_names_only(segmenter):
    enc = segmenter.text_encoder
    before = enc.stats["encoded"]
    first = segmenter.prepare_vocabulary(Vocabulary.from_names(["car", "road", "bus", "person"]))
    assert first.encoded_texts == 2 and enc.stats["encoded"] == before + 2
    second = segmenter.prepare_vocabulary(Vocabulary.from_names(["bus", "car"]))
    assert second.encoded_texts == 0
    assert isinstance(second, OpenSceneVocabulary) and len(second) == 2
    preset = segmenter.prepare_vocabulary(load_vocabulary("nuscenes"))
    assert preset.text_embeddings.shape == (16, TINY_FEATURE_DIM)


def test_switcher_drives_the_openscene_segmenter(nuscenes_frame):
    seg = OpenSceneSegmenter.from_config(OpenSceneConfig(profile="tiny", device="cpu"))
    switcher = VocabularySwitcher(seg)
    switcher.request(Vocabulary.from_names(["car", "tree"], name="one"), "test")
    assert switcher.wait(30) and seg.active.name == "one"
    switcher.request(Vocabulary.from_names(["sky", "road", "wall"], name="two"), "test")
    assert switcher.wait(30) and switcher.status().active.name == "two"
    r = seg.segment(nuscenes_frame.points[:2000])
    assert r.vocabulary.name == "two" and r.labels.max() < 3
    assert isinstance(seg, Segmenter) and supports_grounding(seg)


def test_igloss_segmenter_has_no_grounding():
    from lidar_ovseg_ros.segmentation.segmenter import LidarSegmenter

    assert not supports_grounding(LidarSegmenter)


def test_config_validation_and_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        OpenSceneConfig(arch="MinkUNet99")
    with pytest.raises(ValueError, match="template"):
        OpenSceneConfig(template="no placeholder")
    with pytest.raises(ValueError, match="feature_type"):
        OpenSceneConfig(feature_type="clip")
    with pytest.raises(CheckpointNotFoundError, match="nuscenes_openseg"):
        OpenSceneSegmenter.from_config(OpenSceneConfig(profile="full", device="cpu"))
    with pytest.raises(ValueError, match="bf16"):
        OpenSceneSegmenter.from_config(OpenSceneConfig(profile="tiny", device="cpu", amp="bf16"))
    assert OpenSceneConfig(feature_type="lseg").network_config().out_channels == 512
    assert OpenSceneConfig().resolved_text_model == "openai/clip-vit-large-patch14-336"
    # A tiny checkpoint in the official format goes through the same loader.
    from lidar_ovseg_ros.models.minkunet import MinkUNet, MinkUNetConfig
    from lidar_ovseg_ros.models.openscene_checkpoint import (
        official_state_dict_shapes,
        spconv_weight_to_me,
    )

    torch.manual_seed(7)
    src = MinkUNet(MinkUNetConfig.tiny(TINY_FEATURE_DIM))
    shapes = official_state_dict_shapes(src)
    sd = src.state_dict()
    state = {}
    for official, (_, key) in shapes.items():
        v = sd[key]
        state[official] = spconv_weight_to_me(v) if official.endswith(".kernel") else v
    path = tmp_path / "tiny_openseg.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    seg = OpenSceneSegmenter.from_config(
        OpenSceneConfig(profile="tiny", device="cpu", checkpoint=str(path))
    )
    for key, value in src.state_dict().items():
        assert torch.equal(seg.model.state_dict()[key], value), key


def test_fp16_backbone_on_cpu(segmenter, kitti_frame):
    half = OpenSceneSegmenter.from_config(OpenSceneConfig(profile="tiny", device="cpu", amp="fp16"))
    assert half.model.final.weight.dtype == torch.float16
    half.activate(segmenter.active)
    r16 = half.segment(kitti_frame.points)
    r32 = segmenter.segment(kitti_frame.points)
    assert (r16.labels == r32.labels).mean() > 0.9
