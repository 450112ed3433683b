"""Regression metrics and AUROC against scikit-learn, with ties, shapes and bad input."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score, roc_auc_score

from clinfuse.core.errors import DataError
from clinfuse.metrics import classification, regression
from clinfuse.metrics.classification import roc_auc
from clinfuse.metrics.regression import mae, r2, rmse


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    true = rng.lognormal(2.0, 1.0, n)  # skewed like length of stay
    pred = true + rng.normal(0.0, 5.0, n)
    assert rmse(pred, true) == pytest.approx(np.sqrt(mean_squared_error(true, pred)), rel=1e-12)
    assert mae(pred, true) == pytest.approx(mean_absolute_error(true, pred), rel=1e-12)
    assert r2(pred, true) == pytest.approx(r2_score(true, pred), rel=1e-10, abs=1e-12)


def test_r2_landmarks_and_constant_target() -> None:
    true = np.array([1.0, 5.0, 2.0, 8.0])
    assert r2(true, true) == 1.0
    assert r2(np.full(4, true.mean()), true) == pytest.approx(0.0, abs=1e-15)
    assert r2(-true, true) < 0.0  # worse than the mean predictor
    # constant target: sklearn's force_finite convention
    const = np.full(3, 2.0)
    assert r2(const, const) == r2_score(const, const) == 1.0
    assert r2([1.0, 2.0, 3.0], const) == r2_score(const, [1.0, 2.0, 3.0]) == 0.0


def test_regression_metrics_flatten_and_use_prediction_order() -> None:
    pred, true = np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 2.0, 3.0])
    assert rmse(pred, true) == pytest.approx(np.sqrt(1.0 / 3.0))
    # r2 is not symmetric: the denominator comes from `true`
    assert r2(pred, true) != pytest.approx(r2(true, pred))
    assert r2(pred, true) == pytest.approx(r2_score(true, pred.ravel()))


@pytest.mark.parametrize("fn", [rmse, mae, r2])
def test_regression_metrics_reject_bad_input(fn) -> None:
    with pytest.raises(DataError, match="differ in size"):
        fn([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="empty"):
        fn([], [])
    with pytest.raises(DataError, match="true holds 1 non-finite"):
        fn([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(DataError, match="pred holds 1 non-finite"):
        fn([np.inf, 2.0], [1.0, 2.0])
    with pytest.raises(DataError, match="not numeric"):
        fn(["a", "b"], [1.0, 2.0])


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    true = rng.random(n) < 0.3
    true[:2] = [True, False]
    # coarse scores: many ties inside and across classes
    scores = np.round(rng.normal(0.0, 1.0, n) + 0.8 * true, 1)
    assert np.unique(scores).size < n
    assert roc_auc(scores, true) == pytest.approx(roc_auc_score(true, scores), abs=1e-12)
    assert roc_auc(scores, true.astype(int)) == pytest.approx(roc_auc_score(true, scores))
    # the larger label is the positive class, also for {-1, 1}
    pm = np.where(true, 1, -1)
    assert roc_auc(scores, pm) == pytest.approx(roc_auc_score(pm, scores))


def test_roc_auc_closed_forms() -> None:
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc(np.zeros(6), [0, 1, 0, 1, 1, 0]) == 0.5  # all tied
    # invariant to any strictly increasing transform of the scores
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=50), rng.random(50) < 0.5
    assert roc_auc(s, y) == pytest.approx(roc_auc(1.0 / (1.0 + np.exp(-3.0 * s)), y))


def test_roc_auc_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="exactly two classes") as err:
        roc_auc([0.1, 0.2, 0.3], [1, 1, 1])
    assert "1 distinct label" in str(err.value)
    with pytest.warns(UndefinedMetricWarning):  # sklearn: undefined, returns NaN with a warning
        assert np.isnan(roc_auc_score([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(DataError, match="exactly two classes"):
        roc_auc([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(DataError, match="NaN or inf"):
        roc_auc([0.1, np.nan], [0, 1])
    with pytest.raises(DataError, match="NaN label"):
        roc_auc([0.1, 0.2, 0.3], [0.0, 1.0, np.nan])
    with pytest.raises(DataError, match="differ in size"):
        roc_auc([0.1, 0.2], [0, 1, 1])


def test_doctests() -> None:
    for module in (regression, classification):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0
