"""Cell corruption (rate, marginal draws, determinism, no side effects) and bootstrap intervals."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.ehrprompt import corrupt as corrupt_module
from clinfuse.methods.ehrprompt.corrupt import bootstrap_ci, corrupt_cells
from clinfuse.metrics.classification import roc_auc

STRUCTURED = ["age", "sex", "race", "hr", "count"]


def make_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(60.0, 15.0, n),
            "sex": rng.choice(["male", "female"], n),
            "race": pd.Categorical(rng.choice(["white", "black", "asian"], n, p=[0.6, 0.3, 0.1])),
            "hr": rng.exponential(80.0, n),
            "count": rng.integers(0, 10, n),
            "note": [f"note {i}" for i in range(n)],
        }
    )
    frame.loc[rng.random(n) < 0.1, "hr"] = np.nan  # already-missing cells
    return frame


@pytest.mark.parametrize("mode", ["mask", "marginal"])
@pytest.mark.parametrize("rate", [0.05, 0.3, 0.8])
def test_empirical_rate_matches(mode: str, rate: float) -> None:
    frame = make_frame(2000, seed=1)
    _, hit = corrupt_cells(frame, rate, mode, STRUCTURED, np.random.default_rng(7), frame)
    assert hit.shape == (2000, len(STRUCTURED)) and hit.dtype == bool
    # two-sided exact binomial test overall and per column (Bonferroni over 6 tests)
    assert stats.binomtest(int(hit.sum()), hit.size, rate).pvalue > 1e-3 / 6
    for j in range(hit.shape[1]):
        assert stats.binomtest(int(hit[:, j].sum()), hit.shape[0], rate).pvalue > 1e-3 / 6


def test_mask_mode_blanks_exactly_the_selected_cells() -> None:
    frame = make_frame(500, seed=2)
    before = frame.copy(deep=True)
    out, hit = corrupt_cells(frame, 0.4, "mask", STRUCTURED, np.random.default_rng(0))
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    for j, name in enumerate(STRUCTURED):
        was_missing = before[name].isna().to_numpy()
        np.testing.assert_array_equal(out[name].isna().to_numpy(), hit[:, j] | was_missing)
        keep = ~hit[:, j]
        assert out[name][keep].astype(object).equals(before[name][keep].astype(object))
    pd.testing.assert_series_equal(out["note"], before["note"])  # notes untouched
    assert isinstance(out["race"].dtype, pd.CategoricalDtype)


def test_notes_corrupted_only_when_listed() -> None:
    frame = make_frame(300, seed=3)
    out, hit = corrupt_cells(frame, 0.5, "mask", ["note"], np.random.default_rng(0))
    np.testing.assert_array_equal(out["note"].isna().to_numpy(), hit[:, 0])
    pd.testing.assert_frame_equal(out[STRUCTURED], frame[STRUCTURED])


def test_marginal_draws_follow_the_reference() -> None:
    reference = make_frame(3000, seed=4)
    # test rows with values the reference never holds, so every replaced cell is recognisable
    frame = pd.DataFrame(
        {
            "race": pd.Categorical(["other"] * 4000),
            "hr": np.full(4000, -1.0),
            "count": np.full(4000, 99),
        }
    )
    out, hit = corrupt_cells(
        frame, 0.6, "marginal", ["race", "hr", "count"], np.random.default_rng(11), reference
    )
    # the unselected cells keep their value, the selected ones never do
    for j, name in enumerate(["race", "hr", "count"]):
        changed = (out[name].astype(object) != frame[name].astype(object)).to_numpy()
        np.testing.assert_array_equal(changed, hit[:, j])
    # categorical: chi-square against the reference frequencies
    drawn = out["race"][hit[:, 0]].astype(str)
    ref_freq = reference["race"].astype(str).value_counts(normalize=True)
    observed = drawn.value_counts().reindex(ref_freq.index, fill_value=0)
    assert set(drawn) <= set(ref_freq.index)
    assert stats.chisquare(observed, ref_freq * observed.sum()).pvalue > 1e-3
    # numeric with missing cells: KS against the recorded reference values; NaN never drawn
    hr = out["hr"][hit[:, 1]].to_numpy()
    assert np.isfinite(hr).all()
    assert stats.ks_2samp(hr, reference["hr"].dropna()).pvalue > 1e-3
    assert np.isin(hr, reference["hr"].to_numpy()).all()  # resampled, not smoothed
    # integer column stays integer
    assert out["count"].dtype == np.int64
    counts = np.bincount(out["count"][hit[:, 2]], minlength=10)
    expected = np.bincount(reference["count"], minlength=10) / 3000 * hit[:, 2].sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_marginal_default_reference_is_the_frame_itself() -> None:
    frame = make_frame(400, seed=5)
    out, hit = corrupt_cells(frame, 1.0, "marginal", ["sex"], np.random.default_rng(0))
    assert hit.all()
    assert set(out["sex"]) <= set(frame["sex"])
    assert not out["sex"].equals(frame["sex"])  # shuffled from the marginal, not copied


def test_determinism_rate_zero_and_one() -> None:
    frame = make_frame(200, seed=6)
    a = corrupt_cells(frame, 0.3, "marginal", STRUCTURED, np.random.default_rng(3), frame)
    b = corrupt_cells(frame, 0.3, "marginal", STRUCTURED, np.random.default_rng(3), frame)
    c = corrupt_cells(frame, 0.3, "marginal", STRUCTURED, np.random.default_rng(4), frame)
    pd.testing.assert_frame_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    for mode in ("mask", "marginal"):
        out, hit = corrupt_cells(frame, 0.0, mode, STRUCTURED, np.random.default_rng(0), frame)
        pd.testing.assert_frame_equal(out, frame)
        assert out is not frame and not hit.any()
    out, hit = corrupt_cells(frame, 1, "mask", STRUCTURED, np.random.default_rng(0))
    assert hit.all() and out[STRUCTURED].isna().all().all()


def test_errors() -> None:
    frame = make_frame(20, seed=7)
    rng = np.random.default_rng(0)
    for rate in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ConfigError, match="rate must be a probability"):
            corrupt_cells(frame, rate, "mask", ["age"], rng)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="unknown column") as err:
        corrupt_cells(frame, 0.1, "mask", ["age", "weight"], rng)
    assert "weight" in str(err.value)
    with pytest.raises(DataError, match="unknown column.*reference"):
        corrupt_cells(frame, 0.1, "marginal", ["age"], rng, frame[["sex"]])
    with pytest.raises(DataError, match="listed twice"):
        corrupt_cells(frame, 0.1, "mask", ["age", "age"], rng)
    with pytest.raises(ConfigError, match="unknown corruption mode"):
        corrupt_cells(frame, 0.1, "swap", ["age"], rng)  # type: ignore[arg-type]
    empty = frame.assign(age=np.nan)
    with pytest.raises(DataError, match="no recorded value in the reference"):
        corrupt_cells(frame, 0.5, "marginal", ["age"], rng, empty)


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


def test_doctests() -> None:
    result = doctest.testmod(corrupt_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
