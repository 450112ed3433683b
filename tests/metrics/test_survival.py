"""Survival metrics against scikit-survival, lifelines, torchsurv, pycox's definitions, and plants.

Real data: WHAS500, GBSG2 and veteran from the scikit-survival wheel, CoxPH (alpha=1e-4) on a
75/25 split (random_state=0), survival curves on a 50-point grid over the 10-80th percentiles of
the test event times.
"""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest

from clinfuse.core.errors import DataError
from clinfuse.metrics import survival
from clinfuse.metrics.survival import (
    Concordance,
    antolini_c,
    brier_score,
    censoring_km,
    d_calibration,
    harrell_c,
    integrated_brier_score,
    integrated_nbll,
    interval_coverage,
    kaplan_meier,
    km_at,
    nbll,
    surv_at,
    survival_metrics,
    tercile_coverage,
    uno_c,
)

DATASETS = ("whas500", "gbsg2", "veteran")

# reference numbers (measured with sksurv 0.28 and pycox 0.3.0 + simps shim)
REFERENCE = {
    # harrell, uno, antolini, adj_antolini, ibs sksurv (train KM), ibs pycox (test KM, Simpson)
    "whas500": (0.8071, 0.7814, 0.8071, 0.8065, 0.1287, 0.1293),
    "gbsg2": (0.6904, 0.6600, 0.6904, 0.6903, 0.1654, 0.1605),
    "veteran": (0.6368, 0.6253, 0.6368, 0.6355, 0.2250, 0.2125),
}


# ---------------------------------------------------------------------------------------------
# the real-data protocol


@pytest.fixture(scope="module")
def folds():
    """{name: dict(t_tr, e_tr, t_te, e_te, risk, surv, grid, y_tr, y_te)} for the three sets."""
    pytest.importorskip("sksurv")
    import pandas as pd
    from sklearn.model_selection import train_test_split
    from sksurv.datasets import load_gbsg2, load_veterans_lung_cancer, load_whas500
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    loaders = {
        "whas500": load_whas500,
        "gbsg2": load_gbsg2,
        "veteran": load_veterans_lung_cancer,
    }
    out = {}
    for name, loader in loaders.items():
        x, y = loader()
        x = pd.get_dummies(x, drop_first=True).astype(float)
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = CoxPHSurvivalAnalysis(alpha=1e-4).fit(x_tr, y_tr)
        ev, tm = y.dtype.names
        grid = np.linspace(*np.percentile(y_te[tm][y_te[ev]], [10, 80]), 50)
        out[name] = {
            "t_tr": np.ascontiguousarray(y_tr[tm], dtype=np.float64),
            "e_tr": np.ascontiguousarray(y_tr[ev]).astype(int),
            "t_te": np.ascontiguousarray(y_te[tm], dtype=np.float64),
            "e_te": np.ascontiguousarray(y_te[ev]).astype(int),
            "risk": model.predict(x_te),
            "surv": np.asarray([f(grid) for f in model.predict_survival_function(x_te)]),
            "grid": grid,
            "y_tr": y_tr,
            "y_te": y_te,
        }
    return out


def _train_test(d):
    return d["t_tr"], d["e_tr"], d["t_te"], d["e_te"]


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier


def test_kaplan_meier_matches_sksurv_and_lifelines():
    pytest.importorskip("sksurv")
    lifelines = pytest.importorskip("lifelines")
    from sksurv.datasets import load_whas500
    from sksurv.nonparametric import CensoringDistributionEstimator, kaplan_meier_estimator

    _, y = load_whas500()
    e, t = np.asarray(y["fstat"]), np.asarray(y["lenfol"], dtype=float)
    uniq, s = kaplan_meier(t, e)
    t_ref, s_ref = kaplan_meier_estimator(e, t)
    np.testing.assert_array_equal(uniq, t_ref)
    np.testing.assert_allclose(s, s_ref, rtol=0, atol=1e-12)
    kmf = lifelines.KaplanMeierFitter().fit(t, e)
    np.testing.assert_allclose(km_at(t, e, uniq), kmf.survival_function_at_times(uniq), atol=1e-12)

    # censoring KM, events before censorings at ties: sksurv's IPCW estimator, at and between knots
    knots, g = censoring_km(t, e, ties="events_first")
    cens = CensoringDistributionEstimator().fit(y)
    probe = np.concatenate((knots, (knots[:-1] + knots[1:]) / 2, [0.0]))
    ours = survival._step_at(knots, g, probe, "right")
    np.testing.assert_allclose(ours, cens.predict_proba(probe), atol=1e-12)
    # plain KM of the censorings: lifelines on (time, 1 - event)
    knots_s, g_s = censoring_km(t, e, ties="simultaneous")
    kmc = lifelines.KaplanMeierFitter().fit(t, 1 - e)
    np.testing.assert_allclose(g_s, kmc.survival_function_at_times(knots_s), atol=1e-12)
    # the tie rules differ on this data (integer days), so the choice matters
    assert np.abs(g - g_s).max() > 1e-4


def test_km_at_is_a_right_continuous_step_held_after_the_last_time():
    t, e = [1, 2, 2, 3, 4], [1, 1, 0, 1, 0]
    got = km_at(t, e, [0.0, 1.0, 1.999, 2.0, 3.5, 4.0, 100.0])
    np.testing.assert_allclose(got, [1.0, 0.8, 0.8, 0.6, 0.3, 0.3, 0.3])
    # S_KM * G_KM (events first) is the empirical P(observed time > t), with ties
    rng = np.random.default_rng(0)
    t = rng.integers(1, 15, 200).astype(float)
    e = rng.integers(0, 2, 200)
    grid = np.arange(0.0, 16.0)
    knots, g = censoring_km(t, e)
    product = km_at(t, e, grid) * survival._step_at(knots, g, grid, "right")
    np.testing.assert_allclose(product, [(t > x).mean() for x in grid], atol=1e-12)


# ---------------------------------------------------------------------------------------------
# concordance


@pytest.mark.parametrize("name", DATASETS)
def test_harrell_matches_sksurv_lifelines_torchsurv(folds, name):
    from sksurv.metrics import concordance_index_censored

    d = folds[name]
    got = harrell_c(d["t_te"], d["e_te"], d["risk"], return_counts=True)
    ref = concordance_index_censored(d["e_te"].astype(bool), d["t_te"], d["risk"])
    assert isinstance(got, Concordance)
    assert got.cindex == pytest.approx(ref[0], abs=1e-12)
    assert tuple(got[1:]) == tuple(int(v) for v in ref[1:])
    assert got.cindex == pytest.approx(REFERENCE[name][0], abs=5e-5)

    lifelines_utils = pytest.importorskip("lifelines.utils")
    lifelines_c = lifelines_utils.concordance_index(d["t_te"], -d["risk"], d["e_te"])
    assert got.cindex == pytest.approx(lifelines_c, abs=1e-4)

    torch = pytest.importorskip("torch")
    pytest.importorskip("torchsurv")
    from torchsurv.metrics.cindex import ConcordanceIndex

    torchsurv_c = ConcordanceIndex()(
        torch.tensor(d["risk"], dtype=torch.float64),
        torch.tensor(d["e_te"].astype(bool)),
        torch.tensor(d["t_te"], dtype=torch.float64),
    )
    assert got.cindex == pytest.approx(float(torchsurv_c), abs=1e-4)


def test_harrell_ties_in_time_and_risk_match_sksurv():
    pytest.importorskip("sksurv")
    from sksurv.metrics import concordance_index_censored

    try:
        from lifelines import utils as lifelines_utils
    except ImportError:  # pragma: no cover - optional oracle
        lifelines_utils = None
    rng = np.random.default_rng(3)
    for _ in range(5):
        t = rng.integers(1, 8, 80).astype(float)
        e = rng.random(80) < 0.6
        risk = rng.integers(0, 4, 80).astype(float)
        got = harrell_c(t, e, risk, return_counts=True)
        ref = concordance_index_censored(e, t, risk)
        assert got.cindex == pytest.approx(ref[0], abs=1e-12)
        assert tuple(got[1:]) == tuple(int(v) for v in ref[1:])
        assert got.tied_risk > 0 and got.tied_time > 0
        if lifelines_utils is not None:  # survival-like scores: pass -risk
            assert got.cindex == pytest.approx(
                lifelines_utils.concordance_index(t, -risk, e), abs=1e-12
            )


@pytest.mark.parametrize("name", DATASETS)
def test_uno_matches_sksurv_and_torchsurv_ipcw(folds, name):
    from sksurv.metrics import concordance_index_ipcw

    d = folds[name]
    got = uno_c(*_train_test(d), d["risk"], return_counts=True)
    ref = concordance_index_ipcw(d["y_tr"], d["y_te"], d["risk"])
    assert got.cindex == pytest.approx(ref[0], abs=1e-12)
    assert tuple(got[1:]) == tuple(int(v) for v in ref[1:])
    assert got.cindex == pytest.approx(REFERENCE[name][1], abs=5e-5)
    tau = float(d["grid"][-1])
    got_tau = uno_c(*_train_test(d), d["risk"], tau)
    ref_tau = concordance_index_ipcw(d["y_tr"], d["y_te"], d["risk"], tau=tau)[0]
    assert got_tau == pytest.approx(ref_tau, abs=1e-12)
    assert got_tau != pytest.approx(got.cindex, abs=1e-6)  # tau truncates something here

    torch = pytest.importorskip("torch")
    pytest.importorskip("torchsurv")
    from torchsurv.metrics.cindex import ConcordanceIndex
    from torchsurv.stats.ipcw import get_ipcw

    def f64(x):
        return torch.tensor(x, dtype=torch.float64)

    w = get_ipcw(torch.tensor(d["e_tr"].astype(bool)), f64(d["t_tr"]), f64(d["t_te"]))
    ts = ConcordanceIndex()(
        f64(d["risk"]), torch.tensor(d["e_te"].astype(bool)), f64(d["t_te"]), weight=w.double()
    )
    assert got.cindex == pytest.approx(float(ts), abs=1e-4)


def _brute_antolini(time, event, surv, grid, variant):
    """Double loop, straight from the definitions (pycox's concordance_td semantics)."""
    n = len(time)
    k = [min(max(np.searchsorted(grid, t, side="right") - 1, 0), len(grid) - 1) for t in time]
    num = den = 0.0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            si, sj = surv[i, k[i]], surv[j, k[i]]
            ti, tj, di, dj = time[i], time[j], event[i], event[j]
            if variant == "antolini":
                if di and (ti < tj or (ti == tj and not dj)):
                    den += 1
                    num += si < sj
                continue
            if ti < tj and di:
                den += 1
                num += (si < sj) + 0.5 * (si == sj)
            elif ti == tj and (di or dj):
                den += 1
                if di and dj:
                    num += 1.0 - 0.5 * (si != sj)
                elif di:
                    num += (si < sj) + 0.5 * (si == sj)
                else:
                    num += (si > sj) + 0.5 * (si == sj)
    return num / den


@pytest.mark.parametrize("variant", ["antolini", "adj_antolini"])
def test_antolini_matches_brute_force_on_crossing_curves_with_ties(variant):
    rng = np.random.default_rng(7)
    n = 45
    grid = np.linspace(0.5, 6.0, 12)
    shape = rng.uniform(0.4, 3.0, n)  # Weibull shapes far apart: the curves cross
    scale = rng.uniform(1.0, 5.0, n)
    surv = np.round(np.exp(-((grid[None, :] / scale[:, None]) ** shape[:, None])), 1)
    time = rng.integers(0, 8, n).astype(float)  # ties in time, some before the grid
    event = rng.random(n) < 0.7
    got = antolini_c(time, event, surv, grid, variant)
    assert got == pytest.approx(_brute_antolini(time, event, surv, grid, variant), abs=1e-12)
    # the crossing makes C^td differ from Harrell on any single-time risk score
    assert got != pytest.approx(harrell_c(time, event, -surv[:, 5]), abs=1e-3)


@pytest.mark.parametrize("name", DATASETS)
def test_antolini_on_cox_curves_equals_harrell_and_reference(folds, name):
    d = folds[name]
    ant = antolini_c(d["t_te"], d["e_te"], d["surv"], d["grid"])
    adj = antolini_c(d["t_te"], d["e_te"], d["surv"], d["grid"], "adj_antolini")
    # Cox curves never cross: the ordering at every time is the ordering of the risk
    assert ant == pytest.approx(harrell_c(d["t_te"], d["e_te"], d["risk"]), abs=1e-12)
    assert ant == pytest.approx(REFERENCE[name][2], abs=5e-5)
    assert adj == pytest.approx(REFERENCE[name][3], abs=5e-5)  # pycox 0.3.0 concordance_td()

    torch = pytest.importorskip("torch")
    pytest.importorskip("torchsurv")
    from torchsurv.metrics.cindex import ConcordanceIndex

    # torchsurv's time-dependent C: estimate[a, b] = risk of a at the time of b = -S_a(T_b)
    k = np.clip(np.searchsorted(d["grid"], d["t_te"], side="right") - 1, 0, len(d["grid"]) - 1)
    ts = ConcordanceIndex()(
        torch.tensor(-d["surv"][:, k], dtype=torch.float64),
        torch.tensor(d["e_te"].astype(bool)),
        torch.tensor(d["t_te"], dtype=torch.float64),
    )
    assert ant == pytest.approx(float(ts), abs=1e-4)


# ---------------------------------------------------------------------------------------------
# Brier score and NBLL


@pytest.mark.parametrize("name", DATASETS)
def test_brier_and_ibs_match_sksurv_and_torchsurv(folds, name):
    from sksurv.metrics import brier_score as sk_brier
    from sksurv.metrics import integrated_brier_score as sk_ibs

    d = folds[name]
    bs = brier_score(*_train_test(d), d["surv"], d["grid"])
    _, bs_ref = sk_brier(d["y_tr"], d["y_te"], d["surv"], d["grid"])
    np.testing.assert_allclose(bs, bs_ref, rtol=0, atol=1e-12)
    ibs = integrated_brier_score(*_train_test(d), d["surv"], d["grid"])
    assert ibs == pytest.approx(sk_ibs(d["y_tr"], d["y_te"], d["surv"], d["grid"]), abs=1e-12)
    assert ibs == pytest.approx(REFERENCE[name][4], abs=5e-5)

    torch = pytest.importorskip("torch")
    pytest.importorskip("torchsurv")
    from torchsurv.metrics.brier_score import BrierScore
    from torchsurv.stats.ipcw import get_ipcw

    def f64(x):
        return torch.tensor(x, dtype=torch.float64)

    e_tr = torch.tensor(d["e_tr"].astype(bool))
    metric = BrierScore()
    ts = metric(
        f64(d["surv"]),
        torch.tensor(d["e_te"].astype(bool)),
        f64(d["t_te"]),
        new_time=f64(d["grid"]),
        weight=get_ipcw(e_tr, f64(d["t_tr"]), f64(d["t_te"])).double(),
        weight_new_time=get_ipcw(e_tr, f64(d["t_tr"]), f64(d["grid"])).double(),
    )
    np.testing.assert_allclose(bs, ts.numpy(), rtol=0, atol=1e-4)
    assert ibs == pytest.approx(float(metric.integral()), abs=1e-4)


@pytest.mark.parametrize("name", DATASETS)
def test_test_km_simpson_reproduces_pycox_reference(folds, name):
    d = folds[name]
    ibs = integrated_brier_score(
        None, None, d["t_te"], d["e_te"], d["surv"], d["grid"], censoring="test", rule="simpson"
    )
    assert ibs == pytest.approx(REFERENCE[name][5], abs=5e-5)
    # DPsurv's setting differs from the sksurv one by more than the rounding (notes: up to 0.015)
    train = integrated_brier_score(*_train_test(d), d["surv"], d["grid"])
    assert abs(ibs - train) > 5e-4


def _pycox_loop(time, event, surv, grid, loss):
    """pycox ipcw.py semantics: plain KM of the censorings (lifelines), G(T_i-) for events,
    G(t) for controls, sum(w * loss) / sum(w)."""
    from lifelines import KaplanMeierFitter

    sf = KaplanMeierFitter().fit(time, 1 - event).survival_function_["KM_estimate"]
    knots, values = sf.index.to_numpy(), sf.to_numpy()

    def g(t, left):
        keep = knots < t if left else knots <= t
        return values[keep][-1] if keep.any() else 1.0

    out = []
    for k, t in enumerate(grid):
        num = den = 0.0
        for i in range(len(time)):
            s = min(max(surv[i, k], 1e-7), 1 - 1e-7) if loss == "nbll" else surv[i, k]
            if time[i] <= t and event[i]:
                w, val = 1 / g(time[i], True), (-np.log(1 - s) if loss == "nbll" else s**2)
            elif time[i] > t:
                w, val = 1 / g(t, False), (-np.log(s) if loss == "nbll" else (1 - s) ** 2)
            else:
                continue
            num, den = num + w * val, den + w
        out.append(num / den)
    return np.asarray(out)


def test_test_km_weights_match_a_pycox_loop_with_ties():
    pytest.importorskip("lifelines")
    from scipy.integrate import simpson

    rng = np.random.default_rng(11)
    n = 60
    time = rng.integers(1, 12, n).astype(float)  # many ties between events and censorings
    event = (rng.random(n) < 0.6).astype(int)
    grid = np.linspace(1.5, 9.5, 17)
    rate = rng.uniform(0.05, 0.4, n)
    surv = np.exp(-rate[:, None] * grid[None, :])
    surv[0] = 1.0  # exercises the 1e-7 clip of the log-likelihood
    for loss, fn in (("brier", brier_score), ("nbll", nbll)):
        got = fn(None, None, time, event, surv, grid, censoring="test")
        ref = _pycox_loop(time, event, surv, grid, loss)
        np.testing.assert_allclose(got, ref, rtol=1e-12)
        integral = {"brier": integrated_brier_score, "nbll": integrated_nbll}[loss](
            None, None, time, event, surv, grid, censoring="test", rule="simpson"
        )
        assert integral == pytest.approx(simpson(ref, x=grid) / (grid[-1] - grid[0]), rel=1e-12)


def test_nbll_train_is_graf_weighted_closed_form():
    # two patients, no censoring: G = 1, score = mean of the per-patient log-losses
    surv = np.array([[0.5, 0.2], [0.9, 0.6]])
    got = nbll([1.0, 5.0], [1, 1], [1.0, 3.0], [1, 1], surv, [1.0, 2.0])
    expected = [-(np.log(0.5) + np.log(0.9)) / 2, -(np.log(0.8) + np.log(0.6)) / 2]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    inbll = integrated_nbll([1.0, 5.0], [1, 1], [1.0, 3.0], [1, 1], surv, [1.0, 2.0])
    assert inbll == pytest.approx(np.mean(expected), rel=1e-12)


def test_survival_metrics_bundles_the_reference_numbers(folds):
    d = folds["whas500"]
    m = survival_metrics(*_train_test(d), d["surv"], d["grid"], d["risk"])
    assert set(m) == {"harrell_c", "uno_c", "antolini_c", "ibs", "inbll", "d_calibration_p"}
    h, u, a, _, ibs, _ = REFERENCE["whas500"]
    assert (m["harrell_c"], m["uno_c"], m["antolini_c"], m["ibs"]) == pytest.approx(
        (h, u, a, ibs), abs=5e-5
    )
    assert 0.0 < m["d_calibration_p"] <= 1.0 and m["inbll"] > 0


# ---------------------------------------------------------------------------------------------
# D-calibration


def _exponential_cohort(rng, n, rate_factor):
    """True exponential rates; curves predicted with rate * rate_factor on a fine grid."""
    rate = np.exp(rng.normal(0.0, 0.5, n))
    t_event = rng.exponential(1.0 / rate)
    t_cens = rng.uniform(0.0, 3.0, n)
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(int)
    grid = np.linspace(0.0, time.max(), 600)
    surv = np.exp(-(rate * rate_factor)[:, None] * grid[None, :])
    return time, event, surv, grid


def test_d_calibration_accepts_planted_calibration_and_rejects_miscalibration():
    rng = np.random.default_rng(2024)
    good = d_calibration(*_exponential_cohort(rng, 1500, 1.0))
    bad = d_calibration(*_exponential_cohort(rng, 1500, 2.0))
    assert good.p_value > 0.05
    assert bad.p_value < 0.01
    np.testing.assert_allclose(good.proportions.sum(), 1.0)
    np.testing.assert_allclose(good.proportions, 0.1, atol=0.03)
    # hazards too high: the predicted survival at the event time is too low, the low bins fill
    assert bad.proportions[:3].sum() > 0.4


def test_d_calibration_spreads_censored_mass_uniformly_below_p():
    # one censored patient at S(c) = 0.25, one event at S(t) = 0.95 (step reading: exact)
    res = d_calibration([1.0, 1.0], [0, 1], [[0.25], [0.95]], [1.0], interpolation="step")
    expected = np.array([0.4, 0.4, 0.2, 0, 0, 0, 0, 0, 0, 1.0]) / 2
    np.testing.assert_allclose(res.proportions, expected, atol=1e-12)
    counts = expected * 2
    assert res.statistic == pytest.approx(np.sum((counts - 0.2) ** 2 / 0.2), rel=1e-12)


def test_d_calibration_matches_survivaleval():
    survival_eval = pytest.importorskip("SurvivalEVAL")  # optional; never installed by us
    try:
        from SurvivalEVAL.Evaluations.DistributionCalibration import d_calibration as ref_fn
    except ImportError:  # older layout
        from SurvivalEVAL.Evaluations.D_Calibration import d_calibration as ref_fn
    del survival_eval
    time, event, surv, grid = _exponential_cohort(np.random.default_rng(5), 400, 1.3)
    p = surv_at(surv, grid, time)
    ours = d_calibration(time, event, surv, grid)
    ref = ref_fn(p, event, 10)
    hist = next(np.asarray(v) for v in ref if np.ndim(v) == 1)
    np.testing.assert_allclose(ours.proportions[::-1] * len(time), hist, atol=1e-9)


def test_surv_at_step_and_linear():
    surv = [[0.8, 0.4], [0.6, 0.2]]
    np.testing.assert_allclose(surv_at(surv, [1.0, 2.0], [0.5, 1.5]), [0.9, 0.4])
    np.testing.assert_allclose(
        surv_at(surv, [1.0, 2.0], [0.5, 1.5], interpolation="step"), [1.0, 0.6]
    )
    np.testing.assert_allclose(surv_at(surv, [1.0, 2.0], [9.0, 9.0]), [0.4, 0.2])


# ---------------------------------------------------------------------------------------------
# coverage


def _three_groups(rng, n_per=1000):
    rates = np.repeat([0.5, 1.0, 2.0], n_per)
    t_event = rng.exponential(1.0 / rates)
    t_cens = rng.uniform(0.0, 4.0, rates.shape[0])
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(int)
    grid = np.linspace(0.2, 1.0, 40)
    truth = np.exp(-rates[:, None] * grid[None, :])
    return rates, time, event, grid, truth


def test_interval_coverage_planted_band():
    rates, time, event, grid, truth = _three_groups(np.random.default_rng(0))
    group = rates == 1.0
    t, e, s = time[group], event[group], truth[group]
    assert interval_coverage(t, e, s - 0.08, np.clip(s + 0.08, 0, 1), grid) == 1.0
    assert interval_coverage(t, e, np.clip(s + 0.2, 0, 1), np.clip(s + 0.3, 0, 1), grid) == 0.0
    # a band too narrow to hold the sampling noise covers only part of the grid
    narrow = interval_coverage(t, e, s - 1e-3, s + 1e-3, grid)
    assert 0.0 <= narrow < 0.5


def test_tercile_coverage_planted_groups():
    rates, time, event, grid, truth = _three_groups(np.random.default_rng(1))
    lo, up = np.clip(truth - 0.08, 0, 1), np.clip(truth + 0.08, 0, 1)
    got = tercile_coverage(time, event, rates, lo, up, grid)
    assert got == {"low_risk": 1.0, "mid_risk": 1.0, "high_risk": 1.0}
    # bands swapped between the lowest and the highest tercile: those two miss everywhere
    swap = np.concatenate((np.arange(2000, 3000), np.arange(1000, 2000), np.arange(0, 1000)))
    got = tercile_coverage(time, event, rates, lo[swap], up[swap], grid)
    assert got["low_risk"] == 0.0 and got["high_risk"] == 0.0 and got["mid_risk"] == 1.0


# ---------------------------------------------------------------------------------------------
# bad input


def _message(exc_info) -> str:
    return str(exc_info.value)


@pytest.mark.parametrize(
    ("time", "event", "needle"),
    [
        ([1.0, np.nan, 3.0], [1, 0, 1], "row(s) are NaN, infinite or negative (first rows: 1)"),
        ([1.0, 2.0, -3.0], [1, 0, 1], "(first rows: 2)"),
        ([1.0, 2.0, 3.0], [1, 2, 1], "neither 0 nor 1"),
        ([1.0, 2.0, 3.0], [1, 0], "differ in length"),
    ],
)
def test_bad_labels_raise_data_error(time, event, needle):
    with pytest.raises(DataError) as exc_info:
        harrell_c(time, event, [0.1, 0.2, 0.3])
    assert needle in _message(exc_info)
    assert "fix:" in _message(exc_info)


def test_bad_shapes_and_grids_raise_data_error():
    t, e = np.array([1.0, 2.0, 3.0]), np.array([1, 0, 1])
    with pytest.raises(DataError, match="risk does not match"):
        harrell_c(t, e, [0.1, 0.2])
    with pytest.raises(DataError, match="surv does not match"):
        antolini_c(t, e, np.ones((3, 4)), [1.0, 2.0])
    with pytest.raises(DataError, match="strictly increasing"):
        antolini_c(t, e, np.ones((3, 2)), [2.0, 1.0])
    with pytest.raises(DataError, match="outside"):
        antolini_c(t, e, np.full((3, 2), 1.5), [1.0, 2.0])
    with pytest.raises(DataError, match="s_low > s_up"):
        interval_coverage(t, e, np.full((3, 2), 0.6), np.full((3, 2), 0.5), [1.0, 2.0])
    with pytest.raises(DataError, match="needs the training labels"):
        brier_score(None, None, t, e, np.ones((3, 2)), [1.0, 2.0])
    with pytest.raises(DataError, match="no comparable pairs"):
        harrell_c(t, [0, 0, 0], [0.1, 0.2, 0.3])


def test_grid_beyond_training_follow_up_raises_with_the_fix():
    t_tr, e_tr = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 0])  # G(4) = 0
    t_te, e_te = np.array([1.5, 2.5, 5.0]), np.array([1, 1, 0])
    surv = np.full((3, 3), 0.5)
    with pytest.raises(DataError) as exc_info:
        integrated_brier_score(t_tr, e_tr, t_te, e_te, surv, [1.0, 2.0, 4.0])
    assert "grid index 2" in _message(exc_info)
    assert "clip the grid to the training follow-up" in _message(exc_info)
    # inside the training follow-up the same call is fine
    assert np.isfinite(integrated_brier_score(t_tr, e_tr, t_te, e_te, surv, [1.0, 2.0, 3.5]))
    # last training time an event: G > 0 but not identified beyond it
    with pytest.raises(DataError, match="not identified"):
        brier_score(t_tr, [1, 0, 1, 1], t_te, e_te, surv, [1.0, 2.0, 4.5])
    # Uno: a test event after the training follow-up needs tau
    with pytest.raises(DataError, match=r"test row 1 (?s:.*)pass tau"):
        uno_c(t_tr, [1, 0, 1, 1], [1.5, 4.5, 5.0], [1, 1, 0], [3.0, 2.0, 1.0])
    assert uno_c(t_tr, [1, 0, 1, 1], [1.5, 4.5, 5.0], [1, 1, 0], [3.0, 2.0, 1.0], tau=4.0) == 1.0


def test_doctests():
    result = doctest.testmod(survival, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 10
