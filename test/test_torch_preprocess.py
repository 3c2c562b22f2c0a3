"""The device-resident (torch) preprocessing equals the numpy/official one on the real scans.

Run on CPU torch here (no GPU on this machine): the CUDA path is the same code on another device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from lidar_ovseg_ros.models.waffleiron import WaffleIron, WaffleIronConfig
from lidar_ovseg_ros.segmentation.features import PointFeatureExtractor, resolve_backend
from lidar_ovseg_ros.segmentation.preprocess import PreprocessConfig, preprocess, voxel_subsample
from lidar_ovseg_ros.segmentation.segmenter import (
    LidarSegmenter,
    SegmenterConfig,
    SegmenterConfigError,
)
from lidar_ovseg_ros.segmentation.torch_preprocess import (
    DevicePreparedScan,
    knn,
    knn_brute,
    knn_grid,
    preprocess_torch,
)
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID, Vocabulary

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUSC = PreprocessConfig.nuscenes()
KITTI = PreprocessConfig.semantickitti()


def _tie_rows(xyz: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> int:
    """Rows whose neighbour sets differ; asserts that they differ only by exact-distance ties
    (same sorted distances, the differing points all at the largest distance)."""
    rows = np.flatnonzero((np.sort(ours, 1) != np.sort(theirs, 1)).any(1))
    for r in rows:
        d_ours = np.sort(((xyz[ours[r]] - xyz[r]) ** 2).sum(1))
        d_theirs = np.sort(((xyz[theirs[r]] - xyz[r]) ** 2).sum(1))
        np.testing.assert_array_equal(d_ours, d_theirs)
        diff = np.setxor1d(ours[r], theirs[r])
        np.testing.assert_array_equal(((xyz[diff] - xyz[r]) ** 2).sum(1), d_ours[-1])
    return len(rows)


@pytest.fixture(scope="module", params=["nuscenes", "kitti"])
def scan_pair(request, nuscenes_frame, kitti_frame):
    frame, cfg = (nuscenes_frame, NUSC) if request.param == "nuscenes" else (kitti_frame, KITTI)
    points = frame.points
    return points, cfg, preprocess(points, cfg), preprocess_torch(points, cfg, "cpu")


def test_same_kept_points_features_cells_neighbours_upsampling(scan_pair):
    points, _cfg, ref, dev = scan_pair
    assert isinstance(dev, DevicePreparedScan)
    assert dev.feats.device.type == "cpu" and dev.neighbors.dtype == torch.int64
    got = dev.to_numpy()
    np.testing.assert_array_equal(got.kept_index, ref.kept_index)  # same points, same order
    np.testing.assert_array_equal(got.feats, ref.feats)  # bit for bit
    np.testing.assert_array_equal(got.cell_ind, ref.cell_ind)
    np.testing.assert_array_equal(got.valid, ref.valid)
    xyz = points[ref.kept_index, :3].astype(np.float64)
    ties = _tie_rows(xyz, got.neighbors, ref.neighbors)
    assert ties <= 0.001 * ref.num_points, f"{ties} rows differ by exact-distance ties"
    # nearest kept point: equal, or at exactly the same distance (a tie)
    differ = np.flatnonzero(got.upsample_index != ref.upsample_index)
    all_xyz = points[:, :3].astype(np.float64)
    for i in differ:
        d = [
            ((xyz[j] - all_xyz[i]) ** 2).sum()
            for j in (got.upsample_index[i], ref.upsample_index[i])
        ]
        assert d[0] == d[1]
    assert len(differ) <= 0.001 * len(points)
    assert set(dev.timings) == {"h2d", "preprocess", "knn"}


def test_grid_and_brute_knn_equal_ckdtree_with_counted_ties(nuscenes_frame):
    rng = np.random.default_rng(0)
    real = nuscenes_frame.points[:6000, :3].astype(np.float32)
    real = real[voxel_subsample(real, 0.1)]  # as in the pipeline (raw returns repeat points)
    lattice = rng.integers(0, 6, size=(1500, 3)).astype(np.float32) * 0.5  # many exact ties
    lattice = np.unique(lattice, axis=0)
    for xyz in (real, lattice):
        t = torch.from_numpy(xyz)
        _, want = cKDTree(xyz.astype(np.float64)).query(xyz, k=17)
        x64 = xyz.astype(np.float64)
        ties = {}
        for name, fn in (("brute", knn_brute), ("grid", knn_grid)):
            ind, dist = fn(t, t, 17)
            ind = ind.numpy()
            want_d = ((x64[want] - x64[:, None]) ** 2).sum(2)
            np.testing.assert_array_equal(np.sort(dist.numpy(), 1), np.sort(want_d, 1))
            ties[name] = _tie_rows(x64, ind, want)
        if xyz is real:
            assert ties == {"brute": 0, "grid": 0}
        else:
            assert ties["grid"] > 0  # the lattice does have ties, and they were checked


def test_grid_levels_resolve_sparse_queries_exactly():
    rng = np.random.default_rng(1)
    ref = torch.from_numpy(rng.uniform(-50, 50, size=(400, 3)))  # sparse: mostly unresolved early
    query = torch.from_numpy(rng.uniform(-80, 80, size=(300, 3)))
    a, da = knn_grid(ref, query, 5, levels=(0.1, 1.0))  # most go to the brute-force fallback
    b, db = knn_brute(ref, query, 5)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(da.numpy(), db.numpy())
    with pytest.raises(ValueError, match="knn method"):
        knn(ref, query, 3, method="faiss")


def test_edge_cases_match_numpy():
    rng = np.random.default_rng(2)
    cloud = rng.uniform(-30, 30, size=(500, 4)).astype(np.float32)
    cloud[3] = [np.nan, 0, 0, 1]
    cloud[7] = [np.inf, 1, 1, 1]
    cloud[11] = [-1e10, 0, 0, 5]  # a garbage return beyond max_coordinate
    cloud[13] = [70.0, 0, 0, 5]  # outside the crop
    cases = [cloud, cloud[:1], cloud[20:25], cloud[:0], np.array([[100.0, 0, 0, 1]], np.float32)]
    for pts in cases:
        ref = preprocess(pts, NUSC)
        got = preprocess_torch(pts, NUSC).to_numpy()
        for name in ("kept_index", "feats", "cell_ind", "neighbors", "upsample_index", "valid"):
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    with pytest.raises(ValueError, match=r"\[N, >=4\]"):
        preprocess_torch(np.zeros((5, 3), np.float32), NUSC)


@pytest.mark.parametrize(
    ("wi_cfg", "box"),
    [
        (WaffleIronConfig.tiny(), None),
        # full width (768 channels, 1024-d head), 4 layers: on the real points within 5 m (the
        # dense part; the whole scans take minutes at this width on 2 CPU cores)
        (WaffleIronConfig.scalr_plus(depth=4, name="depth4"), 5.0),
    ],
    ids=["tiny", "depth4-768"],
)
def test_backbone_features_equal_on_real_scans(wi_cfg, box, nuscenes_frame, kitti_frame):
    torch.manual_seed(0)
    model = WaffleIron(wi_cfg).eval()
    for frame, base in ((nuscenes_frame, NUSC), (kitti_frame, KITTI)):
        points = frame.points
        if box is not None:
            points = points[(np.abs(points[:, :2]) < box).all(1)]
        cfg = base.for_backbone(wi_cfg)
        numpy_ext = PointFeatureExtractor(model, cfg, preprocess_backend="numpy")
        torch_ext = PointFeatureExtractor(model, cfg, preprocess_backend="torch")
        assert torch_ext.device_resident and not numpy_ext.device_resident
        a, scan_a = numpy_ext.extract_kept(points)
        b, scan_b = torch_ext.extract_kept(points)
        assert isinstance(scan_b, DevicePreparedScan)
        assert scan_a.num_points > 200
        np.testing.assert_array_equal(scan_b.kept_index.numpy(), scan_a.kept_index)
        assert b.shape == (scan_a.num_points, wi_cfg.out_channels)
        assert (a - b).abs().max().item() <= 1e-5
        assert {"h2d", "preprocess", "knn", "backbone", "total"} <= set(torch_ext.timings)


def _segmenters(backends=("numpy", "torch")):
    torch.manual_seed(0)
    model = WaffleIron(WaffleIronConfig.tiny()).eval()
    cfg = NUSC.for_backbone(model.config)
    vocab = Vocabulary.from_names(["car", "road", "building"])
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(12, model.out_channels)).astype(np.float32)
    labels = np.repeat(np.arange(3), 4)
    out = []
    for backend in backends:
        ext = PointFeatureExtractor(model, cfg, preprocess_backend=backend)
        seg = LidarSegmenter(ext)
        seg.activate(seg.prepare_from_prototypes(vocab, protos, labels))
        out.append(seg)
    return out


def test_segmenter_labels_scores_equal_between_backends(nuscenes_frame):
    numpy_seg, torch_seg = _segmenters()
    pts = nuscenes_frame.points.copy()
    pts[5] = np.nan
    pts[9, 0] = 1e9
    for outside in (True, False):
        a = numpy_seg.segment(pts, return_features=True, label_outside_crop=outside)
        b = torch_seg.segment(pts, return_features=True, label_outside_crop=outside)
        np.testing.assert_array_equal(b.labels, a.labels)
        np.testing.assert_array_equal(b.scores, a.scores)
        np.testing.assert_array_equal(b.valid, a.valid)
        np.testing.assert_allclose(b.features, a.features, atol=1e-5)
        assert b.labels.dtype == np.uint16 and b.scores.dtype == np.float32
        assert b.labels[5] == NO_CLASS_ID and b.scores[5] == 0.0
        if outside:  # the far point (finite) takes its nearest kept point's label
            assert b.labels[9] != NO_CLASS_ID and not b.valid[9]
        else:
            assert (b.labels[~b.valid] == NO_CLASS_ID).all()
        assert set(b.timings) >= {"preprocess", "knn", "backbone", "classifier", "upsample"}
    # a cloud with nothing inside the crop: every point gets no class on both paths
    far = np.array([[100.0, 0, 0, 1], [0, 200.0, 0, 1]], np.float32)
    a, b = numpy_seg.segment(far), torch_seg.segment(far)
    np.testing.assert_array_equal(b.labels, a.labels)
    assert (b.labels == NO_CLASS_ID).all()


def test_backend_switch_validated_and_auto_is_numpy_on_cpu():
    assert SegmenterConfig(profile="tiny").preprocess_backend == "auto"
    with pytest.raises(SegmenterConfigError, match="preprocess_backend"):
        SegmenterConfig(profile="tiny", preprocess_backend="cuda")
    assert resolve_backend("auto", torch.device("cpu")) == "numpy"
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="preprocess_backend"):
        resolve_backend("jax", torch.device("cpu"))
