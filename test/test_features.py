"""PointFeatureExtractor: per-input-point features on the real frames, batching, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lidar_ovseg_ros.models.checkpoints import CheckpointMismatchError
from lidar_ovseg_ros.models.waffleiron import WaffleIron, WaffleIronConfig
from lidar_ovseg_ros.segmentation.features import STAGES, PointFeatureExtractor
from lidar_ovseg_ros.segmentation.preprocess import (
    PreprocessConfig,
    PreprocessConfigError,
    preprocess,
)

NUSC = PreprocessConfig.nuscenes()
KITTI = PreprocessConfig.semantickitti()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WaffleIron.tiny().eval()


@pytest.fixture(scope="module")
def nusc(model, nuscenes_frame):
    ex = PointFeatureExtractor(model, NUSC)
    feats, valid = ex.extract(nuscenes_frame.points)
    return ex, feats, valid, preprocess(nuscenes_frame.points, NUSC)


def test_features_for_every_input_point(model, nuscenes_frame, nusc):
    ex, feats, valid, scan = nusc
    n = len(nuscenes_frame.points)
    assert feats.shape == (n, 32) and feats.dtype == torch.float32
    assert feats.device == torch.device("cpu") and torch.isfinite(feats).all()
    assert valid.shape == (n,) and valid.dtype == bool
    np.testing.assert_array_equal(valid, scan.valid)
    # Kept points carry exactly the network output; every other point copies its nearest one.
    with torch.no_grad():
        direct = model(
            *(torch.from_numpy(a[None]) for a in (scan.feats, scan.cell_ind, scan.neighbors))
        )
    kept = direct[0].T
    torch.testing.assert_close(feats[torch.from_numpy(scan.kept_index)], kept, rtol=0, atol=0)
    torch.testing.assert_close(feats, kept[torch.from_numpy(scan.upsample_index)], rtol=0, atol=0)
    dropped = np.setdiff1d(np.arange(n), scan.kept_index)
    assert len(dropped) > 10_000  # voxel duplicates and out-of-crop points still get features
    assert set(ex.timings) == {*STAGES, "total"}
    assert all(v >= 0 for v in ex.timings.values())


def test_kitti_frame(model, kitti_frame):
    ex = PointFeatureExtractor(model, KITTI)
    feats, valid = ex.extract(kitti_frame.points)
    assert feats.shape == (len(kitti_frame.points), 32) and torch.isfinite(feats).all()
    assert valid.mean() > 0.95
    # Features depend on the intensity statistics: the nuScenes ones give different features.
    part = kitti_frame.points[:2000]
    a, _ = ex.extract(part)
    b, _ = PointFeatureExtractor(model, NUSC).extract(part)
    assert not torch.allclose(a, b)


def test_extract_batch_equals_extract(model, nuscenes_frame, kitti_frame):
    ex = PointFeatureExtractor(model, NUSC)
    scans = [nuscenes_frame.points[:6000], kitti_frame.points[:2500], np.zeros((0, 4)), None]
    scans[3] = nuscenes_frame.points[6000:6040]
    singles = [ex.extract(p) for p in scans]
    results = ex.extract_batch(scans)
    assert [r[0].shape[0] for r in results] == [6000, 2500, 0, 40]
    for (feats, valid), (ref, ref_valid) in zip(results, singles):
        torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(valid, ref_valid)


@pytest.mark.parametrize("n", [0, 1, 5, 16, 17])
def test_small_and_empty_clouds(model, nuscenes_frame, n):
    pts = nuscenes_frame.points[::997][:n]
    feats, valid = PointFeatureExtractor(model, NUSC).extract(pts)
    assert feats.shape == (n, 32) and torch.isfinite(feats).all()
    assert valid.shape == (n,)
    assert valid.sum() == preprocess(pts, NUSC).valid.sum()


def test_non_finite_points_get_zero_features(model, kitti_frame):
    ex = PointFeatureExtractor(model, KITTI)
    feats, valid = ex.extract(np.full((9, 4), np.nan, np.float32))
    assert feats.shape == (9, 32) and not valid.any() and (feats == 0).all()
    pts = kitti_frame.points[:500].copy()
    pts[7] = np.nan
    feats, valid = ex.extract(pts)
    assert not valid[7] and (feats[7] == 0).all() and feats[8].abs().sum() > 0


def test_from_checkpoint_with_official_dict(tmp_path, model, nuscenes_frame):
    path = tmp_path / "ckpt_last.pth"
    torch.save({"model_point": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    ex = PointFeatureExtractor.from_checkpoint(path, WaffleIronConfig.tiny(), NUSC)
    part = nuscenes_frame.points[:3000]
    feats, _ = ex.extract(part)
    ref, _ = PointFeatureExtractor(model, NUSC).extract(part)
    torch.testing.assert_close(feats, ref, rtol=0, atol=0)
    with pytest.raises(CheckpointMismatchError):
        PointFeatureExtractor.from_checkpoint(path, WaffleIronConfig.tiny(depth=2), NUSC)


def test_mismatched_preprocessing_is_refused(model):
    with pytest.raises(PreprocessConfigError, match="grids_shape"):
        PointFeatureExtractor(model, PreprocessConfig.waffleiron_nuscenes())
    with pytest.raises(ValueError, match="amp_dtype"):
        PointFeatureExtractor(model, NUSC, amp_dtype=torch.float32)


def test_returned_features_are_ordinary_tensors(model, kitti_frame):
    feats, _ = PointFeatureExtractor(model, KITTI).extract(kitti_frame.points[:300])
    feats.div_(feats.norm(dim=1, keepdim=True).clamp_min(1e-12))  # in place works downstream
    assert torch.allclose(feats.norm(dim=1), torch.ones(300), atol=1e-5)


def test_bf16_autocast_close_to_fp32(model, nuscenes_frame):
    pts = nuscenes_frame.points[:3000]
    ref, _ = PointFeatureExtractor(model, NUSC).extract(pts)
    out, _ = PointFeatureExtractor(model, NUSC, amp_dtype=torch.bfloat16).extract(pts)
    assert out.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(out, ref, dim=1).min() > 0.98


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_extraction(model, nuscenes_frame, nusc):
    _, ref, _, _ = nusc
    cuda_model = WaffleIron.tiny()
    cuda_model.load_state_dict(model.state_dict())
    ex = PointFeatureExtractor(cuda_model, NUSC, device="cuda")
    feats, _ = ex.extract(nuscenes_frame.points)
    assert feats.device.type == "cuda"
    torch.testing.assert_close(feats.cpu(), ref, rtol=1e-4, atol=1e-4)
    half = PointFeatureExtractor(cuda_model, NUSC, device="cuda", amp_dtype=torch.float16)
    out, _ = half.extract(nuscenes_frame.points)
    assert torch.nn.functional.cosine_similarity(out.cpu(), ref, dim=1).min() > 0.98
