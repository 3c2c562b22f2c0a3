"""Majority-vote voxelisation with a display cap."""

import warnings

import numpy as np
import pytest

from lidar_ovseg_ros.vocabulary import NO_CLASS_ID
from lidar_ovseg_ros.voxels import voxelize_labels


def test_majority_label_per_voxel_and_centres():
    xyz = np.array(
        [[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [0.3, 0.1, 0.4], [1.2, 0.1, 0.1], [1.3, 0.2, 0.1]],
        np.float32,
    )
    labels = np.array([2, 2, 5, 7, NO_CLASS_ID], np.uint16)
    grid = voxelize_labels(xyz, labels, voxel_size=0.5)
    assert grid.total_voxels == 2 and not grid.truncated
    order = np.argsort(grid.centers[:, 0])
    np.testing.assert_allclose(grid.centers[order], [[0.25, 0.25, 0.25], [1.25, 0.25, 0.25]])
    assert grid.labels[order].tolist() == [2, 7]
    assert grid.counts[order].tolist() == [3, 1]  # the NO_CLASS point does not vote


def test_cap_keeps_the_fullest_voxels(nuscenes_frame):
    xyz = nuscenes_frame.xyz
    labels = (np.arange(len(xyz)) % 3).astype(np.uint16)
    full = voxelize_labels(xyz, labels, 0.4)
    capped = voxelize_labels(xyz, labels, 0.4, max_voxels=1000)
    assert full.total_voxels > 1000
    assert len(capped.labels) == 1000 and capped.truncated
    assert capped.counts.min() >= np.sort(full.counts)[-1000]


def test_empty_and_invalid():
    grid = voxelize_labels(np.zeros((0, 3)), np.zeros(0, np.uint16), 0.5)
    assert grid.centers.shape == (0, 3) and grid.total_voxels == 0
    nan = voxelize_labels(np.full((4, 3), np.nan), np.zeros(4, np.uint16), 0.5)
    assert nan.total_voxels == 0
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize_labels(np.zeros((1, 3)), np.zeros(1), 0.0)


def test_garbage_coordinates_make_no_bogus_cube():
    """A labeled point at 3e38 m (out-of-crop points are labeled by default) used to wrap its
    int64 voxel coordinate to a cube near -3.7e18 m, with a RuntimeWarning."""
    xyz = np.array([[1, 2, 3], [3e38, 0, 0], [1e10, 1e10, 1e10]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grid = voxelize_labels(xyz, np.array([1, 2, 3], np.uint16), 0.4)
    assert list(grid.labels) == [1, 3]
    assert np.abs(grid.centers).max() < 1.1e10
