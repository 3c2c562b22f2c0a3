"""Camera labels on LiDAR points and the two scoring rules, on the real nuScenes frame with the
tiny POP-3D network (random weights) and a tiny CLIP text tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lidar_ovseg_ros.models.pop3d import Pop3DConfig, Pop3DNetwork
from lidar_ovseg_ros.occupancy.pipeline import OccupancyInputError, OccupancyPredictor
from lidar_ovseg_ros.occupancy.text_queries import (
    TextQueryEncoder,
    build_tiny_text_model,
    byte_level_clip_tokenizer,
    load_official_text_embeddings,
    nuscenes16_vocabulary,
    official_sub_name_table,
)
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = Pop3DConfig.tiny()


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(1)
    net = Pop3DNetwork(CFG)
    with torch.no_grad():  # both occupancy outcomes occur with random weights
        w = torch.randn(CFG.out_dims)
        net.tpv_aggregator.classifier.weight.copy_(torch.stack([w, -w]))
        net.tpv_aggregator.classifier.bias.zero_()
    return net


@pytest.fixture(scope="module")
def text_encoder():
    tok = byte_level_clip_tokenizer()
    model = build_tiny_text_model(tok, CFG.feature_dim, seed=0)
    return TextQueryEncoder(model, tok, model_id="tiny", templates=("a photo of a {}.", "{}"))


@pytest.fixture(scope="module")
def inputs(nuscenes_frame):
    images = {n: c.load_image() for n, c in nuscenes_frame.cameras.items()}
    return images, dict(nuscenes_frame.cameras)


@pytest.fixture(scope="module")
def results(network, text_encoder, inputs, nuscenes_frame):
    """One prediction per score rule; the cloud plus every occupied voxel's centre."""
    out = {}
    vocab = nuscenes16_vocabulary()
    for score in ("dot", "cosine"):
        pred = OccupancyPredictor(network, text_encoder, vocabulary=vocab, score=score)
        first = pred.predict(*inputs)
        points = np.concatenate([nuscenes_frame.points[:, :3], first.centers])
        out[score] = (pred.predict(*inputs, points=points), points)
    return out


def test_every_lidar_point_gets_a_camera_label(results, nuscenes_frame):
    res, points = results["dot"]
    n = len(points)
    assert res.point_labels.shape == (n,) and res.point_labels.dtype == np.uint16
    assert res.point_scores.shape == (n,) and res.point_scores.dtype == np.float32
    assert (res.point_labels < len(res.class_names)).all()  # no threshold: all labelled
    assert len(np.unique(res.point_labels[: len(nuscenes_frame.points)])) > 1


def test_a_point_at_a_voxel_centre_is_labelled_like_the_voxel(results, nuscenes_frame):
    for score in ("dot", "cosine"):
        res, _ = results[score]
        k = len(nuscenes_frame.points)
        np.testing.assert_array_equal(res.point_labels[k:], res.labels)
        np.testing.assert_allclose(res.point_scores[k:], res.scores, rtol=1e-4, atol=1e-5)


def test_dot_and_cosine_give_the_same_labels_but_other_scores(results):
    dot, _ = results["dot"]
    cos, _ = results["cosine"]
    np.testing.assert_array_equal(dot.labels, cos.labels)
    np.testing.assert_array_equal(dot.point_labels, cos.point_labels)
    norms = dot.feature_norms.numpy()
    np.testing.assert_allclose(dot.scores, cos.scores * norms, rtol=1e-4, atol=1e-5)
    assert np.abs(cos.scores).max() <= 1.0 + 1e-6
    assert not np.allclose(dot.scores, cos.scores)


def test_min_score_is_in_the_units_of_the_score(network, text_encoder, inputs, results):
    dot, _ = results["dot"]
    cut = float(np.median(dot.scores))
    pred = OccupancyPredictor(
        network, text_encoder, nuscenes16_vocabulary(), score="dot", min_score=cut
    )
    res = pred.predict(*inputs)
    assert ((res.labels == NO_CLASS_ID) == (res.scores < cut)).all()
    assert 0 < (res.labels == NO_CLASS_ID).sum() < len(res.labels)


def test_official_text_embeddings_need_no_text_model(network, inputs, tmp_path):
    table = official_sub_name_table()
    g = torch.Generator().manual_seed(2)
    w = F.normalize(torch.randn(len(table), CFG.feature_dim, generator=g), dim=-1)
    torch.save((w.T.half(), [raw for _, raw in table]), tmp_path / "zeroshot_weights.pth")
    official = load_official_text_embeddings(tmp_path / "zeroshot_weights.pth", CFG.feature_dim)
    pred = OccupancyPredictor(network, None, vocabulary=official, score="dot")
    res = pred.predict(*inputs)
    # official assignment: the class of the best-scoring sub-name (raw dot product)
    assert res.class_names == official.class_names and res.query_encoder is None
    logits = (res.features * res.feature_norms[:, None]) @ official.embeddings.T
    expected = official.class_index[logits.argmax(-1)].numpy()
    np.testing.assert_array_equal(res.labels, expected)
    with pytest.raises(ValueError, match="no text encoder"):
        pred.set_vocabulary(nuscenes16_vocabulary())


def test_bad_points_are_refused(network, text_encoder, inputs):
    pred = OccupancyPredictor(network, text_encoder)
    with pytest.raises(OccupancyInputError, match="points must be finite"):
        pred.predict(*inputs, points=np.zeros((4, 2)))
    with pytest.raises(OccupancyInputError, match="points must be finite"):
        pred.predict(*inputs, points=np.array([[0.0, np.nan, 0.0]]))
