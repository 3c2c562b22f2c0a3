"""The IGLOSS prototype classifier against scikit-learn, and the nearest-prototype option."""

import numpy as np
import pytest
import torch
from scipy.special import expit, softmax
from sklearn.linear_model import LogisticRegression

from lidar_ovseg_ros.segmentation.classifier import (
    ClassifierConfig,
    ClassifierError,
    FittedClassifier,
    fit_classifier,
)
from lidar_ovseg_ros.vocabulary import NO_CLASS_ID


def _clusters(num_classes: int, counts, dim: int = 48, noise: float = 0.9, seed: int = 0):
    """Prototypes scattered around one random centre per class (unequal counts per class), and
    query points drawn around the same centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    labels = np.repeat(np.arange(num_classes), counts)
    protos = centres[labels] + noise * rng.normal(size=(len(labels), dim))
    protos *= rng.uniform(0.2, 5.0, size=(len(labels), 1))  # scale must not matter
    q_labels = rng.integers(0, num_classes, size=3000)
    queries = centres[q_labels] + 1.5 * noise * rng.normal(size=(len(q_labels), dim))
    return protos.astype(np.float32), labels, queries.astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sklearn_model(coef: np.ndarray, intercept: np.ndarray, num_classes: int):
    """A scikit-learn LogisticRegression carrying the given one-vs-rest weights."""
    clf = LogisticRegression(solver="liblinear")
    clf.classes_ = np.arange(num_classes)
    clf.coef_ = np.asarray(coef, dtype=np.float64)
    clf.intercept_ = np.asarray(intercept, dtype=np.float64)
    return clf


def test_multiclass_matches_igloss_liblinear_ovr():
    """K=5: the weights are those of scikit-learn's liblinear one-vs-rest with balanced class
    weights (what IGLOSS's `LogisticRegression(solver='liblinear', class_weight='balanced')`
    ran); labels equal scikit-learn's predictions and its OvR predict_proba argmax; scores are
    the softmax IGLOSS applies."""
    protos, labels, queries = _clusters(5, [3, 7, 1, 12, 4])
    fitted = fit_classifier(protos, labels, 5)
    W = fitted.weight.double().numpy()
    b = fitted.bias.double().numpy()

    from sklearn.svm._base import _fit_liblinear

    # The library call LogisticRegression(solver="liblinear") made for multiclass y before
    # scikit-learn 1.8 (liblinear's own one-vs-rest).
    coef, intercept, _ = _fit_liblinear(
        _unit(protos), labels, 1.0, True, 1, "balanced", "l2", False, 0, 100, 1e-4, 0
    )
    np.testing.assert_allclose(W, coef, atol=1e-6)
    np.testing.assert_allclose(b, intercept, atol=1e-6)

    pred, score = fitted.predict(torch.from_numpy(queries))
    sk = _sklearn_model(coef, intercept, 5)
    xq = _unit(queries)
    decision = sk.decision_function(xq)
    np.testing.assert_array_equal(pred.numpy(), sk.predict(xq))
    ovr_proba = sk._predict_proba_lr(xq)  # scikit-learn's OvR probabilities (normalised sigmoids)
    np.testing.assert_array_equal(pred.numpy(), ovr_proba.argmax(1))
    np.testing.assert_allclose(ovr_proba, expit(decision) / expit(decision).sum(1, keepdims=True))
    np.testing.assert_allclose(score.numpy(), softmax(decision, axis=1).max(1), rtol=1e-5)
    np.testing.assert_allclose(
        fitted.probabilities(torch.from_numpy(queries)).numpy(),
        softmax(decision, axis=1),
        atol=1e-5,
    )
    # The classes are well separated: the classifier recovers most of them.
    assert len(np.unique(pred.numpy())) == 5


def test_multiclass_equals_per_class_binary_problems():
    """Each row k is the binary liblinear problem 'k vs rest' with the positives weighted by the
    balanced weight of k and the negatives by 1 (liblinear's Cp / Cn)."""
    protos, labels, _ = _clusters(4, [2, 5, 9, 3], seed=3)
    fitted = fit_classifier(protos, labels, 4)
    weights = len(labels) / (4 * np.bincount(labels))
    for k in range(4):
        y = labels == k
        ref = LogisticRegression(solver="liblinear", C=1.0, random_state=0).fit(
            _unit(protos), y, sample_weight=np.where(y, weights[k], 1.0)
        )
        np.testing.assert_allclose(fitted.weight[k].double().numpy(), ref.coef_[0], atol=1e-6)
        np.testing.assert_allclose(float(fitted.bias[k]), ref.intercept_[0], atol=1e-6)


def test_two_classes_equal_sklearn_predict_proba():
    protos, labels, queries = _clusters(2, [4, 9], seed=1)
    fitted = fit_classifier(protos, labels, 2)
    ref = LogisticRegression(solver="liblinear", class_weight="balanced", C=1, random_state=0).fit(
        _unit(protos), labels
    )
    xq = _unit(queries)
    probs = fitted.probabilities(torch.from_numpy(queries)).double().numpy()
    np.testing.assert_allclose(probs, ref.predict_proba(xq), atol=1e-5)
    pred, score = fitted.predict(torch.from_numpy(queries))
    np.testing.assert_array_equal(pred.numpy(), ref.predict(xq))
    np.testing.assert_allclose(score.numpy(), ref.predict_proba(xq).max(1), atol=1e-5)
    assert set(np.unique(pred.numpy())) == {0, 1}


def test_single_class_labels_everything_with_probability_one():
    protos, labels, queries = _clusters(1, [3], seed=2)
    fitted = fit_classifier(protos, labels, 1)
    pred, score = fitted.predict(torch.from_numpy(queries))
    assert (pred.numpy() == 0).all()
    np.testing.assert_allclose(score.numpy(), 1.0)


def test_nearest_prototype():
    protos, labels, queries = _clusters(6, [1, 2, 3, 4, 5, 6], seed=4)
    fitted = fit_classifier(protos, labels, 6, ClassifierConfig(kind="nearest"))
    pred, score = fitted.predict(torch.from_numpy(queries))
    cos = _unit(queries) @ _unit(protos).T
    np.testing.assert_array_equal(pred.numpy(), labels[cos.argmax(1)])
    np.testing.assert_allclose(score.numpy(), cos.max(1), atol=1e-5)
    per_class = fitted.logits(torch.from_numpy(queries)).numpy()
    for k in range(6):
        np.testing.assert_allclose(per_class[:, k], cos[:, labels == k].max(1), atol=1e-5)


@pytest.mark.parametrize("kind", ["logreg", "nearest"])
def test_min_score_gives_no_class(kind):
    protos, labels, queries = _clusters(5, [3, 3, 3, 3, 3], seed=5)
    plain = fit_classifier(protos, labels, 5, ClassifierConfig(kind=kind))
    pred, score = plain.predict(torch.from_numpy(queries))
    threshold = float(np.median(score.numpy()))
    gated = fit_classifier(protos, labels, 5, ClassifierConfig(kind=kind, min_score=threshold))
    gpred, gscore = gated.predict(torch.from_numpy(queries))
    low = score.numpy() < threshold
    assert 0 < low.sum() < len(low)
    assert (gpred.numpy()[low] == NO_CLASS_ID).all()
    np.testing.assert_array_equal(gpred.numpy()[~low], pred.numpy()[~low])
    np.testing.assert_array_equal(gscore.numpy(), score.numpy())


def test_class_without_prototype_is_a_clear_error():
    protos, labels, _ = _clusters(3, [2, 2, 2])
    labels = np.where(labels == 1, 2, labels)
    with pytest.raises(ClassifierError, match=r"1 \('bicycle'\)"):
        fit_classifier(protos, labels, 3, class_names=["car", "bicycle", "road"])
    with pytest.raises(ClassifierError, match=r"outside 0\.\.2"):
        fit_classifier(protos, np.array([0, 1, 2, 3, 0, 1]), 3)
    bad = protos.copy()
    bad[2] = 0
    with pytest.raises(ClassifierError, match="prototype #2"):
        fit_classifier(bad, np.array([0, 0, 1, 1, 2, 2]), 3)


def test_config_validation():
    with pytest.raises(ClassifierError, match="kind"):
        ClassifierConfig(kind="svm")
    with pytest.raises(ClassifierError, match="min_score"):
        ClassifierConfig(kind="logreg", min_score=1.5)
    with pytest.raises(ClassifierError, match="min_score"):
        ClassifierConfig(kind="logreg", min_score=-0.2)
    assert ClassifierConfig(kind="nearest", min_score=-0.2).min_score == -0.2
    with pytest.raises(ClassifierError, match="C"):
        ClassifierConfig(C=0)


def test_fitted_classifier_is_immutable_and_checks_dims():
    protos, labels, queries = _clusters(3, [2, 2, 2])
    fitted = fit_classifier(protos, labels, 3)
    assert isinstance(fitted, FittedClassifier)
    with pytest.raises(AttributeError):
        fitted.weight = None
    with pytest.raises(ClassifierError, match=r"\[N, 48\]"):
        fitted.predict(torch.zeros(4, 7))
    moved = fitted.to("cpu")
    np.testing.assert_array_equal(
        moved.predict(torch.from_numpy(queries))[0].numpy(),
        fitted.predict(torch.from_numpy(queries))[0].numpy(),
    )
    empty_labels, empty_scores = fitted.predict(torch.zeros(0, 48))
    assert empty_labels.shape == (0,) and empty_scores.shape == (0,)
