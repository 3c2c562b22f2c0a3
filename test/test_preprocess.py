"""Preprocessing equals the official ScaLR/WaffleIron pipeline, step by step and end to end."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from lidar_ovseg_ros.models.waffleiron import WaffleIronConfig
from lidar_ovseg_ros.segmentation.preprocess import (
    PreprocessConfig,
    PreprocessConfigError,
    cell_indices,
    collate,
    crop_mask,
    input_features,
    preprocess,
    voxel_subsample,
)

NUSC = PreprocessConfig.nuscenes()
KITTI = PreprocessConfig.semantickitti()


@pytest.fixture(scope="module")
def nusc_scan(nuscenes_frame):
    return preprocess(nuscenes_frame.points, NUSC)


def test_official_counts_on_the_nuscenes_scan(nuscenes_frame, nusc_scan):
    pts = nuscenes_frame.points
    assert pts.shape[0] == 34_688
    assert voxel_subsample(pts[:, :3], 0.1).shape[0] == 17_856
    assert nusc_scan.num_points == 17_483
    assert nusc_scan.feats.shape == (5, 17_483) and nusc_scan.feats.dtype == np.float32
    assert nusc_scan.cell_ind.shape == (3, 17_483) and nusc_scan.cell_ind.dtype == np.int64
    assert nusc_scan.neighbors.shape == (17_483, 16)
    assert nusc_scan.upsample_index.shape == (34_688,)
    # Every finite input point inside the crop is valid; those outside are not.
    assert nusc_scan.valid.sum() == crop_mask(pts[:, :3], NUSC).sum()
    assert nusc_scan.valid.sum() < 34_688


def test_voxel_order_is_numpy_unique_order(nuscenes_frame, kitti_frame):
    for pts in (nuscenes_frame.points, kitti_frame.points):
        xyz = pts[:, :3]
        coords = ((xyz - xyz.min(0, keepdims=True)) / 0.1).astype(int)
        _, reference = np.unique(coords, return_index=True, axis=0)
        np.testing.assert_array_equal(voxel_subsample(xyz, 0.1), reference)


def test_voxel_subsampling_by_hand():
    xyz = np.array(
        [
            [1.05, 2.0, 0.0],  # voxel (0, 0, 0) relative to the min corner (1.0, 2.0, 0.0)
            [1.01, 2.0, 0.0],  # same voxel, later: dropped
            [1.25, 2.0, 0.0],  # voxel (2, 0, 0)
            [1.00, 2.15, 0.0],  # voxel (0, 1, 0)
            [1.21, 2.0, 0.05],  # voxel (2, 0, 0) again: dropped
            [1.00, 2.0, 0.35],  # voxel (0, 0, 3)
        ],
        dtype=np.float32,
    )
    # Sorted voxel coordinates: (0,0,0) (0,0,3) (0,1,0) (2,0,0) -> first rows 0, 5, 3, 2.
    np.testing.assert_array_equal(voxel_subsample(xyz, 0.1), [0, 5, 3, 2])
    np.testing.assert_array_equal(voxel_subsample(xyz, 0.0), np.arange(6))


def test_crop_is_strict_with_eps():
    xyz = np.array(
        [
            [63.9998, 0, 0],  # inside: < 64 - 1e-4
            [63.99995, 0, 0],  # within eps of the border: out
            [-64.0, 0, 0],
            [0, 0, 7.99],
            [0, 0, 8.5],
            [0, -63.99, -7.99],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(crop_mask(xyz, NUSC), [True, False, False, True, False, True])


def test_features_order_and_normalisation():
    pts = np.array(
        [[3.0, 4.0, 0.0, 18.742355 + 22.04632], [0.0, -2.0, 0.0, 18.742355]], dtype=np.float32
    )
    feats = input_features(pts, NUSC)
    assert feats.dtype == np.float32
    np.testing.assert_allclose(feats, [[1.0, 3, 4, 0, 5], [0.0, 0, -2, 0, 2]], atol=1e-6)
    kitti = input_features(np.array([[0, 0, 1, 0.28613698]], np.float32), KITTI)
    np.testing.assert_allclose(kitti, [[0.0, 0, 0, 1, 1]], atol=1e-6)
    far = np.tile(np.array([[10, 0, 0, 0]], np.float32), (20, 1))  # one voxel, 20 copies
    scan = preprocess(np.concatenate([pts, far]), NUSC)
    # feats rows: intensity_norm, x, y, z, radius -- in that order, for the kept points.
    kept = np.concatenate([pts, far[:1]])
    order = np.argsort(scan.kept_index)
    np.testing.assert_allclose(scan.feats[:, order].T, input_features(kept, NUSC), atol=1e-6)


def test_knn_excludes_self_and_matches_brute_force(nusc_scan):
    xyz = nusc_scan.feats[1:4].T.astype(np.float64)
    nb = nusc_scan.neighbors
    assert not (nb == np.arange(len(nb))[:, None]).any()
    rows = np.random.default_rng(0).choice(len(xyz), 50, replace=False)
    for r in rows:
        d = np.linalg.norm(xyz - xyz[r], axis=1)
        d[r] = np.inf
        brute = np.sort(d)[:16]
        np.testing.assert_allclose(np.linalg.norm(xyz[nb[r]] - xyz[r], axis=1), brute, rtol=1e-9)


def test_cell_indices_by_hand():
    xyz = np.array([[-63.9, -63.9, -7.9], [0.3, -0.3, 0.3], [63.9, 63.9, 7.9]], dtype=np.float32)
    # 0.5 m cells; plane 0 (x, y) 256x256, plane 1 (x, z) 256x32, plane 2 (y, z) 256x32.
    np.testing.assert_array_equal(
        cell_indices(xyz, NUSC),
        [[0, 128 * 256 + 127, 65535], [0, 128 * 32 + 16, 8191], [0, 127 * 32 + 16, 8191]],
    )
    wi = PreprocessConfig.waffleiron_nuscenes()
    # res = 100 / 166 m on x/y, 10 / 16 m on z: x=0.3 -> int(50.3 / 0.6024) = 83, z=0.3 -> 8.
    np.testing.assert_array_equal(
        cell_indices(xyz[1:2], wi)[:, 0], [83 * 166 + 82, 83 * 16 + 8, 82 * 16 + 8]
    )
    with pytest.raises(ValueError, match="outside"):
        cell_indices(np.array([[70.0, 0, 0]], np.float32), NUSC)


def test_cell_sizes():
    assert NUSC.cell_sizes == ((0.5, 0.5), (0.5, 0.5), (0.5, 0.5))
    wi = PreprocessConfig.waffleiron_semantickitti()
    assert wi.cell_sizes[0] == (0.4, 0.4)
    assert wi.cell_sizes[1] == pytest.approx((0.4, 5 / 12))


def test_upsampling_by_hand():
    pts = np.array(
        [
            [0.0, 0.0, 0.0, 1],
            [0.01, 0.0, 0.0, 1],  # same voxel as row 0 -> upsampled from row 0
            [1.0, 0.0, 0.0, 1],
            [2.0, 0.0, 0.0, 1],
            [100.0, 0.0, 0.0, 1],  # outside the crop: nearest kept point is row 3, invalid
            [np.nan, 0.0, 0.0, 1],  # non-finite: no neighbour, invalid
        ],
        dtype=np.float32,
    )
    scan = preprocess(pts, NUSC)
    np.testing.assert_array_equal(scan.kept_index, [0, 2, 3])
    np.testing.assert_array_equal(scan.upsample_index, [0, 0, 1, 2, 2, -1])
    np.testing.assert_array_equal(scan.valid, [True, True, True, True, False, False])
    # On the real scan every kept point upsamples to itself.
    real = preprocess(pts[:4], NUSC)
    np.testing.assert_array_equal(real.upsample_index[real.kept_index], np.arange(3))


def test_real_scan_upsampling_is_nearest_kept_point(nuscenes_frame, nusc_scan):
    pts = nuscenes_frame.points
    np.testing.assert_array_equal(
        nusc_scan.upsample_index[nusc_scan.kept_index], np.arange(nusc_scan.num_points)
    )
    kept_xyz = pts[nusc_scan.kept_index, :3].astype(np.float64)
    d_ref, _ = cKDTree(kept_xyz).query(pts[:, :3].astype(np.float64))
    d = np.linalg.norm(kept_xyz[nusc_scan.upsample_index] - pts[:, :3], axis=1)
    np.testing.assert_allclose(d, d_ref, atol=1e-5)


@pytest.mark.parametrize("n", [0, 1, 5, 16, 17, 18])
def test_small_clouds(n):
    rng = np.random.default_rng(n)
    pts = np.concatenate([rng.uniform(-5, 5, (n, 3)), rng.uniform(0, 50, (n, 1))], 1)
    scan = preprocess(pts.astype(np.float32), NUSC)
    assert scan.num_points == n  # spread-out points: no voxel merges them
    assert scan.neighbors.shape == (n, 16) and scan.cell_ind.shape == (3, n)
    assert scan.valid.all() and scan.valid.shape == (n,)
    if n >= 2:
        assert not (scan.neighbors == np.arange(n)[:, None]).any()
        # Available neighbours are all present, in order; padding repeats the farthest one.
        k_real = min(16, n - 1)
        kept = scan.feats[1:4].T  # kept points, in voxel order
        _, ref = cKDTree(kept).query(kept, k=n)
        np.testing.assert_array_equal(scan.neighbors[:, :k_real], ref[:, 1 : k_real + 1])
        assert (scan.neighbors[:, k_real:] == scan.neighbors[:, k_real - 1 : k_real]).all()
    elif n == 1:
        np.testing.assert_array_equal(scan.neighbors, np.zeros((1, 16)))
        np.testing.assert_array_equal(scan.upsample_index, [0])


def test_non_finite_points():
    all_nan = np.full((7, 4), np.nan, np.float32)
    scan = preprocess(all_nan, NUSC)
    assert scan.num_points == 0 and scan.feats.shape == (5, 0)
    assert not scan.valid.any() and (scan.upsample_index == -1).all()
    assert preprocess(np.zeros((0, 5), np.float32), NUSC).num_input == 0


def test_partial_non_finite_equals_the_finite_subset(kitti_frame):
    pts = kitti_frame.points.copy()
    bad = np.arange(0, len(pts), 97)
    pts[bad, 0] = np.nan
    pts[bad[::2], 3] = np.inf
    finite = np.setdiff1d(np.arange(len(pts)), bad)
    full = preprocess(pts, KITTI)
    sub = preprocess(pts[finite], KITTI)
    np.testing.assert_array_equal(full.kept_index, finite[sub.kept_index])
    np.testing.assert_array_equal(full.feats, sub.feats)
    np.testing.assert_array_equal(full.neighbors, sub.neighbors)
    np.testing.assert_array_equal(full.upsample_index[finite], sub.upsample_index)
    assert (full.upsample_index[bad] == -1).all() and not full.valid[bad].any()


def test_kitti_frame_and_presets(kitti_frame):
    scan = preprocess(kitti_frame.points, KITTI)
    assert 0 < scan.num_points < len(kitti_frame.points)
    # Reflectance normalised with the SemanticKITTI statistics.
    raw = kitti_frame.points[scan.kept_index, 3]
    np.testing.assert_allclose(scan.feats[0], (raw - 0.28613698) / 0.14090556, rtol=1e-6)
    wi = preprocess(kitti_frame.points, PreprocessConfig.waffleiron_semantickitti())
    np.testing.assert_array_equal(wi.feats[0], kitti_frame.points[wi.kept_index, 3])  # raw
    assert wi.cell_ind[0].max() < 250 * 250 and wi.cell_ind[1:].max() < 250 * 12
    assert (kitti_frame.points[wi.kept_index, 2] < 2.0).all()


def test_config_validation_and_backbone_check():
    with pytest.raises(PreprocessConfigError, match="voxel_size"):
        PreprocessConfig(voxel_size=-1)
    with pytest.raises(PreprocessConfigError, match="axis z"):
        PreprocessConfig(fov_min=(-1, -1, 5), fov_max=(1, 1, 5))
    with pytest.raises(PreprocessConfigError, match="intensity_std"):
        PreprocessConfig.nuscenes(intensity_std=0)
    with pytest.raises(PreprocessConfigError, match="dim_proj"):
        PreprocessConfig(dim_proj=(2, 1))
    wi = WaffleIronConfig.waffleiron_nuscenes()
    with pytest.raises(PreprocessConfigError, match="grids_shape"):
        NUSC.check_backbone(wi)
    PreprocessConfig.waffleiron_nuscenes().check_backbone(wi)
    NUSC.check_backbone(WaffleIronConfig.tiny())
    custom = NUSC.for_backbone(WaffleIronConfig.tiny(grids_shape=((64, 64), (64, 8), (64, 8))))
    assert custom.cell_sizes[0] == (2.0, 2.0)
    with pytest.raises(ValueError, match="points must be"):
        preprocess(np.zeros((4, 3), np.float32), NUSC)


def test_collate_pads_with_self_neighbours(nusc_scan):
    small = preprocess(np.random.default_rng(0).uniform(-3, 3, (30, 4)).astype(np.float32), NUSC)
    feats, cells, neigh, mask = collate([small, nusc_scan])
    n = nusc_scan.num_points
    assert feats.shape == (2, 5, n) and cells.shape == (2, 3, n) and neigh.shape == (2, n, 16)
    assert mask[0].sum() == small.num_points and mask[1].all()
    np.testing.assert_array_equal(feats[0, :, : small.num_points], small.feats)
    assert (feats[0, :, small.num_points :] == 0).all()
    pad = np.arange(small.num_points, n)
    assert (neigh[0, pad] == pad[:, None]).all()


def _official_preprocess(points: np.ndarray, cfg: PreprocessConfig, k: int = 16):
    """The official ScaLR eval-phase pipeline, written out step by step as the official code does
    it (features on the whole float32 scan, `np.unique(axis=0)` voxels, crop, cells, kNN k+1,
    upsampling query of every input point)."""
    pc_orig = np.asarray(points[:, :4], dtype=np.float32)
    intensity = (pc_orig[:, 3:] - cfg.intensity_mean) / cfg.intensity_std
    radius = np.linalg.norm(pc_orig[:, :3], axis=1, keepdims=True)
    pc_orig = np.concatenate([pc_orig[:, :3], intensity, pc_orig[:, :3], radius], 1)
    shift = pc_orig[:, :3] - pc_orig[:, :3].min(0, keepdims=True)
    _, vox = np.unique((shift / cfg.voxel_size).astype("int"), return_index=True, axis=0)
    pc = pc_orig[vox]
    where = np.ones(len(pc), dtype=bool)
    for i in range(3):
        where &= (pc[:, i] > cfg.fov_min[i] + cfg.crop_eps) & (
            pc[:, i] < cfg.fov_max[i] - cfg.crop_eps
        )
    kept, pc = vox[where], pc[where]
    tree = cKDTree(pc[:, :3])
    _, neighbors = tree.query(pc[:, :3], k=k + 1)
    _, upsample = tree.query(pc_orig[:, :3], k=1)
    return kept, pc[:, 3:].T, cell_indices(pc[:, :3], cfg), neighbors[:, 1:], upsample


@pytest.mark.parametrize("frame", ["nuscenes_frame", "kitti_frame"])
def test_identical_to_the_official_pipeline_on_real_scans(frame, request):
    """Kept indices, their order, features, cells, neighbours and upsampling: bit-identical."""
    points = request.getfixturevalue(frame).points
    cfg = NUSC if frame == "nuscenes_frame" else KITTI
    kept, feats, cells, neighbors, upsample = _official_preprocess(points, cfg)
    scan = preprocess(points, cfg)
    if frame == "nuscenes_frame":
        assert (len(points), scan.num_points) == (34_688, 17_483)
    np.testing.assert_array_equal(scan.kept_index, kept)
    assert scan.feats.dtype == feats.dtype == np.float32
    np.testing.assert_array_equal(scan.feats, feats)
    np.testing.assert_array_equal(scan.cell_ind, cells)
    np.testing.assert_array_equal(scan.neighbors, neighbors)
    np.testing.assert_array_equal(scan.upsample_index, upsample)


def test_one_absurd_point_changes_nothing_for_the_others(nuscenes_frame, nusc_scan):
    """Issue 9.2: one finite point at -1e10 m used to shift the float32 voxel grid so far that
    every real point fell into one voxel (one kept point, one label for the whole scan)."""
    points = nuscenes_frame.points
    for far in (-1e10, 1e10, 3e38, 1e6):
        outlier = np.array([[far, far, far, 10.0, 0.0]], np.float32)
        for at in (0, len(points)):
            cloud = np.insert(points, at, outlier, axis=0)
            scan = preprocess(cloud, NUSC)
            others = np.delete(np.arange(len(cloud)), at)
            np.testing.assert_array_equal(scan.kept_index, others[nusc_scan.kept_index])
            np.testing.assert_array_equal(scan.feats, nusc_scan.feats)
            np.testing.assert_array_equal(scan.cell_ind, nusc_scan.cell_ind)
            np.testing.assert_array_equal(scan.neighbors, nusc_scan.neighbors)
            np.testing.assert_array_equal(scan.upsample_index[others], nusc_scan.upsample_index)
            assert 0 <= scan.upsample_index[at] < scan.num_points  # labelled by its nearest
            assert not scan.valid[at]


def test_points_within_max_coordinate_keep_the_official_grid(kitti_frame):
    """A real but distant return (900 m) shifts the official grid; so it does here, bit for bit."""
    far = np.array([[-900.0, 850.0, -20.0, 0.5]], np.float32)
    points = np.concatenate([kitti_frame.points, far])
    kept, feats, _, neighbors, upsample = _official_preprocess(points, KITTI)
    scan = preprocess(points, KITTI)
    np.testing.assert_array_equal(scan.kept_index, kept)
    np.testing.assert_array_equal(scan.feats, feats)
    np.testing.assert_array_equal(scan.neighbors, neighbors)
    np.testing.assert_array_equal(scan.upsample_index, upsample)
    with pytest.raises(PreprocessConfigError, match="max_coordinate"):
        PreprocessConfig(max_coordinate=50.0)
    with pytest.raises(PreprocessConfigError, match="max_coordinate"):
        PreprocessConfig(max_coordinate=float("inf"))
