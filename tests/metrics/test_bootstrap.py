"""Patient-level percentile bootstrap intervals: coverage, grouping, undefined resamples."""

from __future__ import annotations

import numpy as np
import pytest

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.metrics.bootstrap import bootstrap_ci
from clinfuse.metrics.classification import roc_auc


def test_bootstrap_ci_covers_a_known_mean() -> None:
    rng = np.random.default_rng(0)
    mean_metric = lambda p, t: float(np.mean(p))  # noqa: E731
    covered, widths = 0, []
    for rep in range(150):
        y = rng.normal(3.0, 2.0, 60)
        low, high = bootstrap_ci(mean_metric, y, y, n_boot=300, seed=rep)
        covered += low <= 3.0 <= high
        widths.append(high - low)
    assert 0.88 <= covered / 150 <= 0.99  # nominal 0.95; percentile bootstrap is a bit short
    # width close to the normal-theory 2 * 1.96 * sigma / sqrt(n)
    assert np.mean(widths) == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(60), rel=0.1)


def test_bootstrap_ci_resamples_patients_not_rows() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(0.0, 1.0, 80)
    metric = lambda p, t: float(np.mean(p))  # noqa: E731
    one = bootstrap_ci(metric, y, y, n_boot=400, seed=0)
    rows = np.repeat(y, 5)  # five identical rows per patient
    naive = bootstrap_ci(metric, rows, rows, n_boot=400, seed=0)
    grouped = bootstrap_ci(
        metric, rows, rows, n_boot=400, seed=0, groups=np.repeat(np.arange(80), 5)
    )
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(grouped) == pytest.approx(width(one), rel=0.15)
    assert width(naive) < 0.7 * width(grouped)  # row resampling pretends 5x the patients


def test_bootstrap_ci_skips_undefined_resamples_and_fails_when_most_are() -> None:
    rng = np.random.default_rng(2)
    y = np.zeros(40, dtype=int)
    y[:2] = 1  # 2 positives in 40: (38/40)^40 = 13% of resamples hold no positive
    scores = rng.random(40) + y
    low, high = bootstrap_ci(roc_auc, y, scores, n_boot=200, seed=0)
    assert 0.0 <= low <= high <= 1.0
    draws = np.random.default_rng(0).integers(0, 40, size=(200, 40))
    valid = [roc_auc(scores[d], y[d]) for d in draws if y[d].any()]
    assert 150 < len(valid) < 200
    assert (low, high) == pytest.approx(tuple(np.quantile(valid, [0.025, 0.975])))
    with pytest.raises(DataError, match="undefined on most resamples"):
        bootstrap_ci(roc_auc, np.zeros(40, dtype=int), scores, n_boot=200, seed=0)


def test_bootstrap_ci_errors() -> None:
    with pytest.raises(DataError, match="same, non-zero number of rows"):
        bootstrap_ci(roc_auc, np.zeros(5), np.zeros(4), n_boot=10)
    with pytest.raises(DataError, match="one patient id per row"):
        bootstrap_ci(roc_auc, np.zeros(5), np.zeros(5), n_boot=10, groups=np.arange(4))
    with pytest.raises(ConfigError, match="bad resampling settings"):
        bootstrap_ci(roc_auc, np.zeros(5), np.zeros(5), n_boot=0)
