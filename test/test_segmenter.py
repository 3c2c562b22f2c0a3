"""LidarSegmenter (tiny profile) on the real nuScenes and KITTI frames: labels, vocabulary switches
without reloading the backbone, and one vocabulary per frame under concurrent switches."""

import logging
import threading

import numpy as np
import pytest
import torch

from lidar_ovseg_ros.models.checkpoints import CheckpointNotFoundError
from lidar_ovseg_ros.segmentation.classifier import ClassifierError
from lidar_ovseg_ros.segmentation.segmenter import (
    STAGES,
    ActiveVocabulary,
    LidarSegmenter,
    SegmenterConfig,
    SegmenterConfigError,
    SegmenterError,
)
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, Vocabulary, load_preset

SMALL = Vocabulary.from_dict(
    {
        "name": "small",
        "classes": [
            {"name": "car", "prompts": ["a car"]},
            {"name": "road", "prompts": ["an asphalt road"]},
            {"name": "tree", "prompts": ["a tree"]},
        ],
    }
)


def _outside_crop(points: np.ndarray) -> np.ndarray:
    """ScaLR's crop (x, y in (-64, 64), z in (-8, 8), 1e-4 margin), computed independently."""
    xyz = points[:, :3].astype(np.float64)
    inside = (np.abs(xyz[:, :2]) < 64 - 1e-4).all(axis=1) & (np.abs(xyz[:, 2]) < 8 - 1e-4)
    return ~(inside & np.isfinite(points[:, :4]).all(axis=1))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("prototypes")


@pytest.fixture(scope="module")
def seg(cache_dir):
    cfg = SegmenterConfig(
        profile="tiny", cache_dir=str(cache_dir), images_per_class=1, device="cpu"
    )
    return LidarSegmenter.from_config(cfg)


@pytest.fixture(scope="module")
def nuscenes_vocab(seg):
    return seg.prepare_vocabulary(load_preset("nuscenes"))


@pytest.fixture(scope="module")
def small_vocab(seg):
    return seg.prepare_vocabulary(SMALL)


def test_tiny_profile_says_it_is_untrained(cache_dir, caplog):
    cfg = SegmenterConfig(
        profile="tiny", cache_dir=str(cache_dir), images_per_class=1, device="cpu"
    )
    with caplog.at_level(logging.WARNING):
        seg = LidarSegmenter.from_config(cfg)
    assert seg.untrained
    assert any("UNTRAINED" in r.getMessage() for r in caplog.records)
    with pytest.raises(SegmenterError, match="no vocabulary"):
        seg.segment(np.zeros((10, 4), np.float32))


def test_one_label_per_nuscenes_point(seg, nuscenes_vocab, nuscenes_frame):
    seg.activate(nuscenes_vocab)
    points = nuscenes_frame.points
    result = seg.segment(points, return_features=True)
    labels = result.labels
    assert labels.dtype == np.uint16 and labels.shape == (len(points),)
    assert result.scores.dtype == np.float32 and result.scores.shape == (len(points),)
    assert result.vocabulary is nuscenes_vocab
    assert set(result.timings) == set(STAGES) and result.timings["total"] > 0
    outside = _outside_crop(points)
    assert 0 < outside.sum() < 0.05 * len(points)
    np.testing.assert_array_equal(result.valid, ~outside)
    # Default out_of_crop "nearest" (IGLOSS / ScaLR): every finite point is labelled.
    assert (labels < 16).all()
    assert ((result.scores > 0) & (result.scores <= 1)).all()
    # The labels are the active classifier's predictions on the returned point features (those
    # of each point's nearest kept point).
    assert result.features.shape == (len(points), seg.feature_dim)
    pred, score = nuscenes_vocab.classifier.predict(torch.from_numpy(result.features))
    np.testing.assert_array_equal(labels, pred.numpy())
    np.testing.assert_allclose(result.scores, score.numpy(), rtol=1e-6)
    # Same input, same output.
    np.testing.assert_array_equal(seg.segment(points).labels, labels)
    # "no_class": points outside the crop get NO_CLASS_ID, the others keep their labels.
    strict = seg.segment(points, label_outside_crop=False)
    np.testing.assert_array_equal(strict.labels == NO_CLASS_ID, outside)
    assert (strict.scores[outside] == 0).all()
    np.testing.assert_array_equal(strict.labels[~outside], labels[~outside])
    np.testing.assert_array_equal(strict.scores[~outside], result.scores[~outside])


def test_kitti_frame_and_odd_points(cache_dir, kitti_frame):
    cfg = SegmenterConfig(
        profile="tiny",
        sensor="semantickitti",
        cache_dir=str(cache_dir),
        images_per_class=1,
        device="cpu",
        out_of_crop="no_class",
    )
    seg = LidarSegmenter.from_config(cfg)
    assert seg.out_of_crop == "no_class"
    seg.set_vocabulary(SMALL)
    points = kitti_frame.points.copy()
    far = np.array([[100.0, 0.0, 0.0, 0.3], [3.0, 2.0, 20.0, 0.1]], np.float32)
    bad = np.array([[np.nan, 1.0, 0.0, 0.2], [1.0, np.inf, 0.0, 0.2]], np.float32)
    cloud = np.concatenate([points, far, bad])
    result = seg.segment(cloud)
    n = len(points)
    outside = _outside_crop(cloud)
    assert outside[:n].sum() > 0 and outside[n:].all()  # KITTI sees beyond 64 m
    np.testing.assert_array_equal(result.labels == NO_CLASS_ID, outside)
    assert (result.labels[~outside] < len(SMALL)).all()
    assert (result.scores[outside] == 0).all()
    # The official evaluation protocol labels finite points outside the crop by their nearest
    # kept point; non-finite points still get no class.
    full = seg.segment(cloud, label_outside_crop=True)
    np.testing.assert_array_equal(full.labels[~outside], result.labels[~outside])
    assert (full.labels[: n + 2] < len(SMALL)).all()
    assert (full.labels[n + 2 :] == NO_CLASS_ID).all()
    empty = seg.segment(np.zeros((0, 4), np.float32))
    assert empty.labels.shape == (0,) and empty.vocabulary.name == "small"
    with pytest.raises(ValueError, match=r"\[N, >=4\]"):
        seg.segment(np.zeros((5, 3), np.float32))


def test_one_far_away_point_does_not_relabel_the_scan(seg, nuscenes_vocab, nuscenes_frame):
    """Issue 9.2: the real scan plus one point at (-1e10, -1e10, -1e10) used to give every
    in-range point the same label. The other points keep their labels; the far point (finite)
    is labelled by its nearest kept point, a NaN point gets no class."""
    seg.activate(nuscenes_vocab)
    points = nuscenes_frame.points
    reference = seg.segment(points)
    assert len(np.unique(reference.labels)) > 1
    far = np.array([[-1e10, -1e10, -1e10, 5.0, 0.0], [np.nan, 0.0, 0.0, 5.0, 0.0]], np.float32)
    result = seg.segment(np.concatenate([far[:1], points, far[1:]]))
    np.testing.assert_array_equal(result.labels[1:-1], reference.labels)
    np.testing.assert_array_equal(result.scores[1:-1], reference.scores)
    assert result.labels[0] < len(nuscenes_vocab) and result.labels[-1] == NO_CLASS_ID


def test_switching_vocabulary_keeps_the_backbone(seg, nuscenes_vocab, small_vocab, nuscenes_frame):
    extractor, model = seg.extractor, seg.extractor.model
    weight = next(model.parameters())
    ptr, before = weight.data_ptr(), weight.detach().clone()
    seg.activate(nuscenes_vocab)
    first = seg.segment(nuscenes_frame.points)

    prepared = seg.prepare_vocabulary(SMALL)  # pure: the active vocabulary is unchanged
    assert seg.active is nuscenes_vocab
    assert seg.segment(nuscenes_frame.points).vocabulary is nuscenes_vocab
    seg.activate(prepared)
    second = seg.segment(nuscenes_frame.points)
    assert second.vocabulary is prepared and second.vocabulary.name == "small"
    assert (second.labels[second.labels != NO_CLASS_ID] < 3).all()
    np.testing.assert_array_equal(second.labels == NO_CLASS_ID, first.labels == NO_CLASS_ID)
    seg.set_vocabulary(load_preset("nuscenes"))  # prototypes come from the cache
    assert seg.prototype_bank.last_stats.cached == seg.prototype_bank.last_stats.total
    np.testing.assert_array_equal(seg.segment(nuscenes_frame.points).labels, first.labels)

    assert seg.extractor is extractor and seg.extractor.model is model
    assert seg.backbone_loads == 1
    assert weight.data_ptr() == ptr and torch.equal(weight, before)


def test_a_frame_is_labelled_by_exactly_one_vocabulary(
    seg, nuscenes_vocab, small_vocab, nuscenes_frame
):
    """One thread segments while another keeps swapping two vocabularies: every frame's labels
    are exactly what the vocabulary it reports predicts for its features."""
    rng = np.random.default_rng(0)
    points = nuscenes_frame.points[rng.choice(len(nuscenes_frame.points), 4000, replace=False)]
    stop = threading.Event()
    swaps = 0

    def swapper():
        nonlocal swaps
        while not stop.is_set():
            seg.activate(small_vocab if swaps % 2 else nuscenes_vocab)
            swaps += 1
            stop.wait(0.001)

    thread = threading.Thread(target=swapper)
    thread.start()
    seen = set()
    try:
        for _ in range(12):
            result = seg.segment(points, return_features=True)
            active = result.vocabulary
            seen.add(active.name)
            ok = result.labels != NO_CLASS_ID
            expect, _ = active.classifier.predict(torch.from_numpy(result.features[ok]))
            np.testing.assert_array_equal(result.labels[ok], expect.numpy())
            assert (result.labels[ok] < len(active)).all()
    finally:
        stop.set()
        thread.join()
    assert swaps > 12
    assert seen == {"nuscenes", "small"}


def test_prepare_from_prototypes_checks_inputs(seg):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, seg.feature_dim)).astype(np.float32)
    active = seg.prepare_from_prototypes(SMALL, feats, np.array([0, 0, 1, 1, 2, 2]))
    assert isinstance(active, ActiveVocabulary) and len(active) == 3
    with pytest.raises(ClassifierError, match="'tree'"):
        seg.prepare_from_prototypes(SMALL, feats, np.array([0, 0, 1, 1, 1, 1]))
    with pytest.raises(SegmenterError, match="7"):
        seg.prepare_from_prototypes(SMALL, feats[:, :7], np.array([0, 0, 1, 1, 2, 2]))
    with pytest.raises(TypeError):
        seg.activate(SMALL)


def test_config_validation_and_missing_checkpoint(tmp_path):
    for bad in (
        {"profile": "huge"},
        {"sensor": "waymo"},
        {"backbone": "resnet"},
        {"classifier": "svm"},
        {"amp": "int8"},
        {"device": "tpu"},
        {"images_per_class": 0},
        {"min_score": 2.0},
        {"out_of_crop": "drop"},
    ):
        key = next(iter(bad))
        with pytest.raises(SegmenterConfigError, match=key):
            SegmenterConfig(**bad)
    with pytest.raises(CheckpointNotFoundError, match="checkpoint"):
        LidarSegmenter.from_config(SegmenterConfig(profile="full", device="cpu"))
    missing = tmp_path / "ckpt_last.pth"
    with pytest.raises(CheckpointNotFoundError, match=str(missing)):
        LidarSegmenter.from_config(
            SegmenterConfig(profile="full", checkpoint=str(missing), device="cpu")
        )


def test_checkpoint_loads_through_the_official_wrapper(tmp_path, cache_dir):
    """A backbone checkpoint in the ScaLR layout ({'model_point': {'module.' + key: tensor}})
    loads through the same code path profile 'full' uses."""
    from lidar_ovseg_ros.models.waffleiron import WaffleIron, WaffleIronConfig

    torch.manual_seed(5)
    source = WaffleIron(WaffleIronConfig.tiny())
    ckpt = tmp_path / "ckpt_last.pth"
    torch.save({"model_point": {f"module.{k}": v for k, v in source.state_dict().items()}}, ckpt)
    cfg = SegmenterConfig(
        profile="tiny",
        checkpoint=str(ckpt),
        cache_dir=str(cache_dir),
        images_per_class=1,
        device="cpu",
    )
    seg = LidarSegmenter.from_config(cfg)
    loaded = seg.extractor.model.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_memory_model_bounds_the_measured_peak(repo_root):
    """The cost model behind the node's memory_budget_mb is an upper bound of the measured peak
    of the node's per-cloud path (tiny network, a cloud where every point is kept, fresh
    process; scripts/bench_memory.py)."""
    import json
    import subprocess
    import sys

    from lidar_ovseg_ros.models.waffleiron import WaffleIronConfig
    from lidar_ovseg_ros.segmentation.segmenter import MemoryModel

    n = 60_000
    cmd = [sys.executable, str(repo_root / "scripts" / "bench_memory.py")]
    cmd += ["--child", "tiny", str(n), "--path", "node", "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["kept"] > 0.99 * n
    measured = row["peak_delta_mb"] * 2**20
    model = MemoryModel.for_waffleiron(WaffleIronConfig.tiny())
    assert 0 < measured <= model.peak_bytes(n)
    assert model.max_points(model.peak_bytes(n)) == n
