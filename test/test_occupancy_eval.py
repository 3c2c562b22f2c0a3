"""POP-3D voxel evaluation on hand-built grids with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lidar_ovseg_ros.occupancy.evaluation import (
    FREE_LABEL,
    IGNORE_LABEL,
    PointIoU,
    VoxelIoU,
    evaluate_voxels,
    lidar_ground_truth,
    voxel_coords,
)
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID

F, I = FREE_LABEL, IGNORE_LABEL  # noqa: E741

# 4 x 4 x 2 voxels of 1 m over x, y in [-2, 2), z in [-1, 1); the sensor sits at the origin,
# on the corner shared by voxels (1..2, 1..2, 0..1).
PC_RANGE = (-2.0, -2.0, -1.0, 2.0, 2.0, 1.0)
GRID = (4, 4, 2)


def test_voxel_coords_clip_into_the_grid_like_the_official_voxelizer():
    xyz = np.array([[0.0, 0.0, 0.0], [-2.0, -2.0, -1.0], [1.9995, 5.0, 1.0], [-0.5, 1.5, -0.2]])
    assert voxel_coords(xyz, PC_RANGE, GRID).tolist() == [
        [2, 2, 1],
        [0, 0, 0],
        [3, 3, 1],
        [1, 3, 0],
    ]


def test_rays_mark_free_voxels_points_vote_and_the_rest_is_ignored():
    xyz = np.array(
        [
            [1.5, 0.5, 0.5],  # class 3 -> voxel (3, 2, 1)
            [-1.5, -1.5, 0.5],  # class 1 -> voxel (0, 0, 1)
            [-1.6, -1.4, 0.6],  # class 1 -> voxel (0, 0, 1)
            [-1.2, -1.7, 0.2],  # class 2 -> voxel (0, 0, 1): outvoted 2:1 by class 1
            [0.5, -0.5, -0.5],  # class 0 (ignored) -> voxel (2, 1, 0) becomes IGNORE
            [1.5, -1.4, -0.5],  # class 4 -> voxel (3, 0, 0)
            [1.6, -1.6, -0.6],  # class 2 -> voxel (3, 0, 0): 1:1 tie -> smaller label 2
            [3.0, 0.0, 0.0],  # outside the volume: dropped with its ray
        ]
    )
    labels = np.array([3, 1, 1, 2, 0, 4, 2, 1])
    grid = lidar_ground_truth(xyz, labels, PC_RANGE, GRID, ignore_labels=(0,))
    expected = np.full(GRID, I, dtype=np.int32)
    # Rays (100 samples from the origin): every ray starts in (2, 2, 1);
    #  -> (1.5, .5, .5) stays at y=2, z=1 and crosses x=0 -> x=1 at t=2/3;
    #  -> (-1.5, -1.5, .5) runs through (1, 1, 1) then (0, 0, 1) (x and y cross -1 together);
    #  -> (-1.6, -1.4, .6): x crosses -1 at t=.625, y at t=.714 -> (0, 1, 1) in between;
    #  -> (-1.2, -1.7, .2): y crosses -1 at t=.588, x at t=.833 -> (1, 0, 1) in between;
    #  -> the three points below z=0 pass (2, 1, 0), then (3, 0, 0); on the way to
    #     (1.5, -1.4, -.5), x crosses 1 at t=.667 and y crosses -1 at t=.714 -> (3, 1, 0).
    for v in [(2, 2, 1), (1, 1, 1), (0, 1, 1), (1, 0, 1), (3, 1, 0)]:
        expected[v] = F
    expected[3, 2, 1] = 3
    expected[0, 0, 1] = 1
    expected[3, 0, 0] = 2
    expected[2, 1, 0] = I  # free along rays, but its only point has an ignored label
    assert grid.dtype == np.int32
    np.testing.assert_array_equal(grid, expected)


def test_coarse_ray_sampling_skips_voxels():
    # A single far point: 100 samples mark every voxel on the way, 2 samples only both ends.
    xyz = np.array([[-1.9, 0.5, 0.5]])
    dense = lidar_ground_truth(xyz, np.array([5]), PC_RANGE, GRID)
    sparse = lidar_ground_truth(xyz, np.array([5]), PC_RANGE, GRID, num_ray_samples=2)
    assert dense[1, 2, 1] == F and dense[2, 2, 1] == F and dense[0, 2, 1] == 5
    assert sparse[1, 2, 1] == I and sparse[2, 2, 1] == F and sparse[0, 2, 1] == 5
    assert (dense != I).sum() == 3 and (sparse != I).sum() == 2


def test_iou_per_class_miou_and_occupancy_iou_by_hand():
    # six voxels (shape does not matter); the last one is ignored
    target = np.array([0, 0, 1, F, F, I])
    pred = np.array([0, 1, 1, F, 0, 1])
    r = evaluate_voxels(pred, target, 2, ("road", "car"))
    # class 0: tp {0}, fp {4}, fn {1} -> 1/3; class 1: tp {2}, fp {1} -> 1/2
    assert r.iou == pytest.approx([1 / 3, 1 / 2])
    assert r.free_iou == pytest.approx(1 / 2)  # tp {3}, fn {4}
    assert r.miou == pytest.approx(5 / 12)
    assert r.miou_with_free == pytest.approx(4 / 9)
    assert r.occupancy_iou == pytest.approx(3 / 4)  # pred occupied {0,1,2,4}, gt {0,1,2}
    assert r.as_dict()["iou/car"] == pytest.approx(0.5)


def test_unlabelled_occupied_voxels_count_for_occupancy_only_and_absent_classes_are_nan():
    target = np.array([[2, 2], [F, 0]])
    pred = np.array([[2, NO_CLASS_ID], [F, F]])
    r = evaluate_voxels(pred, target, 3, absent="strict")
    assert math.isnan(r.iou[1])  # class 1: neither in GT nor predicted
    assert r.iou[0] == 0.0  # missed (predicted free)
    assert r.iou[2] == pytest.approx(1 / 2)  # one hit, one occupied-but-unlabelled miss
    assert r.miou == pytest.approx(1 / 4)  # mean over classes 0 and 2 only
    assert r.occupancy_iou == pytest.approx(2 / 3)
    assert r.free_iou == pytest.approx(1 / 2)


def test_accumulating_frames_equals_evaluating_them_together():
    rng = np.random.default_rng(0)
    preds = [rng.integers(-1, 4, (5, 5, 2)) for _ in range(3)]
    targets = [rng.integers(-2, 4, (5, 5, 2)) for _ in range(3)]
    metric = VoxelIoU(4)
    for p, t in zip(preds, targets, strict=True):
        metric.update(p, t)
    together = evaluate_voxels(np.concatenate(preds), np.concatenate(targets), 4)
    acc = metric.compute()
    np.testing.assert_allclose(acc.iou, together.iou)
    assert acc.occupancy_iou == pytest.approx(together.occupancy_iou)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate_voxels(np.zeros(3), np.zeros(4), 2)
    with pytest.raises(ValueError, match="num_ray_samples"):
        lidar_ground_truth(np.zeros((1, 3)), np.zeros(1), PC_RANGE, GRID, num_ray_samples=1)
    with pytest.raises(ValueError, match="one label per point"):
        lidar_ground_truth(np.zeros((2, 3)), np.zeros(1), PC_RANGE, GRID)


def test_a_tie_between_an_ignored_and_a_real_label_goes_to_the_real_label():
    # Official GT: ignored points become 255 before the argmax over label counts, so on a tie the
    # real (smaller) label wins; only a majority of ignored points makes the voxel IGNORE.
    xyz = np.array(
        [
            [1.5, 0.5, 0.5],  # class 3 -> voxel (3, 2, 1)
            [1.6, 0.6, 0.6],  # ignored (0) -> voxel (3, 2, 1): 1:1 tie -> 3
            [-1.5, -1.5, 0.5],  # ignored -> voxel (0, 0, 1)
            [-1.6, -1.4, 0.6],  # ignored -> voxel (0, 0, 1)
            [-1.2, -1.7, 0.2],  # class 2 -> voxel (0, 0, 1): outvoted 2:1 by ignored points
        ]
    )
    grid = lidar_ground_truth(xyz, np.array([3, 0, 0, 0, 2]), PC_RANGE, GRID, ignore_labels=(0,))
    assert grid[3, 2, 1] == 3  # the old rule (ignored votes as -1, ties to the smaller) gave I
    assert grid[0, 0, 1] == I


# Hand-built grid where the two absent-class rules differ: class 1 is predicted once but is
# nowhere in the ground truth, class 2 is neither in the ground truth nor predicted.
ABSENT_TARGET = np.array([0, 0, F, F, I])
ABSENT_PRED = np.array([0, 1, F, 0, 2])


def test_official_rule_scores_a_class_absent_from_the_ground_truth_as_one():
    r = evaluate_voxels(ABSENT_PRED, ABSENT_TARGET, 3)  # "official" is the default
    assert r.absent == "official"
    # class 0: tp {0}, fp {3}, fn {1} -> 1/3; classes 1 and 2 absent from GT -> 1, predicted or not
    assert r.iou == pytest.approx([1 / 3, 1.0, 1.0])
    assert r.miou == pytest.approx((1 / 3 + 2) / 3)
    assert r.free_iou == pytest.approx(1 / 2)  # tp {2}, fn {3}
    assert r.miou_with_free == pytest.approx((1 / 3 + 2 + 1 / 2) / 4)


def test_strict_rule_scores_a_predicted_absent_class_zero_and_skips_an_unseen_one():
    r = evaluate_voxels(ABSENT_PRED, ABSENT_TARGET, 3, absent="strict")
    assert r.iou[:2] == pytest.approx([1 / 3, 0.0]) and math.isnan(r.iou[2])
    assert r.miou == pytest.approx(1 / 6)  # mean over classes 0 and 1
    assert r.miou_with_free == pytest.approx((1 / 3 + 0 + 1 / 2) / 3)
    with pytest.raises(ValueError, match="absent must be one of"):
        VoxelIoU(3, absent="lenient")


def test_point_iou_under_both_rules_by_hand():
    target = np.array([0, 0, 1, 9, 255, 255])  # 9: a label outside the classes, 255: ignored
    pred = np.array([0, 2, 1, 1, 2, NO_CLASS_ID])
    official = PointIoU(4, ignore_index=255)
    strict = PointIoU(4, ignore_index=255, absent="strict")
    for m in (official, strict):
        m.update(pred[:3], target[:3])  # accumulated over two "frames"
        m.update(pred[3:], target[3:])
    # class 0: tp 1, fn 1 -> 1/2; class 1: tp 1, fp 1 (on the label-9 point) -> 1/2;
    # class 2: predicted once (on a class-0 point), absent from GT; class 3: nowhere.
    o, s = official.compute(), strict.compute()
    assert o.iou == pytest.approx([1 / 2, 1 / 2, 1.0, 1.0])
    assert o.miou == pytest.approx(3 / 4)
    assert s.iou[:3] == pytest.approx([1 / 2, 1 / 2, 0.0]) and math.isnan(s.iou[3])
    assert s.miou == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="predictions for"):
        official.update(np.zeros(2), np.zeros(3))
