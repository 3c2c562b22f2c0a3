"""Confusion matrix, per-class IoU and mIoU on hand-computed cases."""

import numpy as np
import pytest

from lidar_ovseg_ros.segmentation.metrics import IGNORE_INDEX, ConfusionMatrix
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID

GT = np.array([0, 0, 0, 1, 1, 2, IGNORE_INDEX, 2, 1, 0])
PRED = np.array([0, 0, 1, 1, NO_CLASS_ID, 2, 0, 0, 1, 3])
# By hand (rows gt, columns pred, last column "no class"); the ignored point is dropped:
#   gt 0: pred 0 twice, pred 1 once, pred 3 once     -> [2, 1, 0, 1 | 0]
#   gt 1: pred 1 twice, no class once                -> [0, 2, 0, 0 | 1]
#   gt 2: pred 2 once, pred 0 once                   -> [1, 0, 1, 0 | 0]
#   gt 3: nothing                                    -> [0, 0, 0, 0 | 0]
EXPECTED = np.array([[2, 1, 0, 1, 0], [0, 2, 0, 0, 1], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0]])
# IoU = TP / (GT + Pred - TP): 2/(4+3-2), 2/(3+3-2), 1/(2+1-1), 0/(0+1-0)
EXPECTED_IOU = [2 / 5, 2 / 4, 1 / 2, 0.0]


def test_hand_computed_matrix_and_iou():
    cm = ConfusionMatrix(4, class_names=["a", "b", "c", "d"])
    cm.update(GT, PRED)
    np.testing.assert_array_equal(cm.matrix, EXPECTED)
    np.testing.assert_allclose(cm.iou(), EXPECTED_IOU)
    assert cm.miou() == pytest.approx(sum(EXPECTED_IOU) / 4)
    assert cm.accuracy() == pytest.approx(5 / 9)
    s = cm.scores()
    assert s.num_points == 9 and s.missed == 1
    d = s.as_dict()
    assert d["iou"]["a"] == pytest.approx(0.4) and d["miou"] == pytest.approx(0.35)
    table = cm.format_table()
    assert "mIoU" in table and "35.00" in table and "none" in table


def test_class_absent_everywhere_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(5)
    cm.update(GT, PRED)
    iou = cm.iou()
    assert np.isnan(iou[4])
    assert cm.miou() == pytest.approx(0.35)  # same mean as with 4 classes
    assert cm.scores().as_dict()["iou"]["4"] is None
    assert "n/a" in cm.format_table()


def test_empty_matrix_gives_nan():
    cm = ConfusionMatrix(3)
    assert np.isnan(cm.iou()).all()
    assert np.isnan(cm.miou()) and np.isnan(cm.accuracy())
    cm.update(np.array([IGNORE_INDEX, IGNORE_INDEX]), np.array([0, 1]))
    assert cm.matrix.sum() == 0


def test_accumulation_over_frames_equals_one_update():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, 5000)
    gt[rng.random(5000) < 0.1] = IGNORE_INDEX
    pred = rng.integers(0, 6, 5000)
    pred[rng.random(5000) < 0.05] = NO_CLASS_ID
    once = ConfusionMatrix(6)
    once.update(gt, pred)
    parts = ConfusionMatrix(6)
    for chunk in np.array_split(np.arange(5000), 7):
        parts.update(gt[chunk], pred[chunk])
    np.testing.assert_array_equal(once.matrix, parts.matrix)
    parts.reset()
    assert parts.matrix.sum() == 0


def test_agrees_with_the_official_formula_when_every_point_is_predicted():
    """IGLOSS / WaffleIron: hist = bincount(n * gt + pred), iou = diag / (sum1 + sum0 - diag)."""
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 8, 4000)
    pred = np.where(rng.random(4000) < 0.6, gt, rng.integers(0, 7, 4000))  # class 7 never predicted
    hist = np.bincount(8 * gt + pred, minlength=64).reshape(8, 8)
    with np.errstate(divide="ignore", invalid="ignore"):
        official = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    cm = ConfusionMatrix(8, ignore_index=None)
    cm.update(gt, pred)
    np.testing.assert_array_equal(cm.classes_matrix, hist)
    np.testing.assert_allclose(cm.iou(), official)
    assert cm.miou() == pytest.approx(np.nanmean(official))


def test_shape_and_config_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="labels"):
        cm.update(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)
    with pytest.raises(ValueError, match="class names"):
        ConfusionMatrix(2, class_names=["a"])
