"""Cell corruption of tables: rate, marginal draws, determinism, no side effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.robustness.tables import corrupt_cells

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
