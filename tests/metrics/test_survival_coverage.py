"""Per-case interval coverage under censoring, against independent computations.

Oracles: lifelines' Kaplan-Meier on real WHAS500 and veteran labels (for one shared interval the
IPCW hit rate must equal S_KM(L-) - S_KM(U) exactly) and the uncensored truth of a simulation
(per-patient intervals, censoring independent of the event time).
"""

from __future__ import annotations

import numpy as np
import pytest

from clinfuse.core.errors import DataError
from clinfuse.metrics.survival import band_interval, ipcw_interval_coverage


def _labels(name: str) -> tuple[np.ndarray, np.ndarray]:
    from clinfuse.methods.dpsurv.tabular import load_tabular

    tab = load_tabular(name)
    return tab.time, tab.event


@pytest.mark.parametrize("name", ["whas500", "veteran"])
def test_shared_interval_equals_lifelines_km(name):
    lifelines = pytest.importorskip("lifelines")
    time, event = _labels(name)
    km = lifelines.KaplanMeierFitter().fit(time, event)
    rng = np.random.default_rng(0)
    for _ in range(10):
        lo, up = np.sort(rng.uniform(0, time.max(), size=2))
        lo = float(rng.choice(time)) if rng.random() < 0.5 else lo  # ties at observed times too
        lo, up = min(lo, up), max(lo, up)
        s_left = float(km.predict(lo - 1e-9)) if lo > 0 else 1.0
        expected = s_left - float(km.predict(up))
        got = ipcw_interval_coverage(time, event, np.full(len(time), lo), np.full(len(time), up))
        assert got == pytest.approx(expected, abs=1e-12)


def test_open_upper_end_counts_no_late_miss():
    time, event = _labels("veteran")
    km_lower = ipcw_interval_coverage(
        time, event, np.full(len(time), 30.0), np.full(len(time), np.inf)
    )
    up_to_max = ipcw_interval_coverage(
        time, event, np.full(len(time), 30.0), np.full(len(time), time.max())
    )
    assert km_lower == pytest.approx(up_to_max, abs=1e-12)


def test_simulated_per_case_intervals_match_uncensored_truth():
    rng = np.random.default_rng(1)
    n = 40_000
    x = rng.normal(size=n)
    t = rng.weibull(1.5, size=n) * np.exp(-0.7 * x)  # event times depend on x
    c = rng.exponential(1.5, size=n)  # independent censoring, about 40%
    y, d = np.minimum(t, c), (t <= c).astype(int)
    # per-case intervals from a deliberately miscalibrated model, so coverage is not trivial
    scale = np.exp(-0.5 * x)
    lower, upper = 0.2 * scale, 1.1 * scale
    truth = float(np.mean((t >= lower) & (t <= upper)))
    got = ipcw_interval_coverage(y, d, lower, upper)
    naive_events_only = float(np.mean(((y >= lower) & (y <= upper))[d == 1]))
    assert 0.3 < truth < 0.9
    assert abs(got - truth) < 0.01
    assert abs(naive_events_only - truth) > 0.03  # the censoring is not harmless here
    terms = ipcw_interval_coverage(y, d, lower, upper, per_case=True)
    assert terms.shape == (n,) and terms.mean() == pytest.approx(got)


def test_band_interval_credal_bounds_and_open_ends():
    grid = np.linspace(1.0, 10.0, 10)
    s = np.exp(-0.2 * grid)[None, :].repeat(2, 0)
    lower0, upper0 = band_interval(s, s, grid, 0.5)  # zero width: the central 50% interval
    assert np.all(s[0][grid == lower0[0]] <= 0.75) and np.all(s[0][grid < lower0[0]] > 0.75)
    assert np.all(s[0][grid == upper0[0]] <= 0.25) and np.all(s[0][grid < upper0[0]] > 0.25)
    wide_lo, wide_up = band_interval(np.clip(s - 0.1, 0, 1), np.clip(s + 0.1, 0, 1), grid, 0.5)
    assert np.all(wide_lo <= lower0) and np.all(wide_up >= upper0)
    vac_lo, vac_up = band_interval(np.zeros_like(s), np.ones_like(s), grid, 0.1)
    assert np.all(vac_lo == 0.0) and np.all(np.isinf(vac_up))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(DataError, match="lower > upper"):
        ipcw_interval_coverage([1, 2], [1, 0], [2.0, 0.0], [1.0, 3.0])
    with pytest.raises(DataError, match="one interval per patient"):
        ipcw_interval_coverage([1, 2], [1, 0], [0.0], [1.0, 3.0])
    with pytest.raises(DataError, match="alpha"):
        band_interval([[0.5, 0.4]], [[0.6, 0.5]], [1.0, 2.0], 0.0)
