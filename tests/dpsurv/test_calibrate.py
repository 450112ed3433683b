"""Band calibration: the families' invariants, coverage reached on fresh draws of a planted
cohort whose true survival is known, and the learner's calibrated band end to end."""

from __future__ import annotations

import numpy as np
import pytest

import clinfuse
from clinfuse.core.errors import ConfigError
from clinfuse.methods.dpsurv import plots
from clinfuse.methods.dpsurv.calibrate import (
    BandCalibration,
    fit_calibration,
    km_noise_band,
    km_noise_z,
    recentre,
    scale_band,
    tercile_groups,
)
from clinfuse.metrics.survival import band_interval, interval_coverage, ipcw_interval_coverage

GRID = np.linspace(0.05, 2.0, 60)


def _cohort(n: int, seed: int):
    """Exponential times with rate exp(x), independent exponential censoring (~30%)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    rate = np.exp(x)
    t = rng.exponential(1 / rate)
    c = rng.exponential(2.5, size=n)
    return x, np.minimum(t, c), (t <= c).astype(int), np.exp(-np.outer(rate, GRID))


def _biased_model(x):
    """A model whose curve is too optimistic for high risk and too pessimistic for low risk,
    with a raw band far too narrow (the failure the calibration must fix)."""
    s = np.exp(-np.outer(np.exp(0.6 * x), GRID))
    return x, s, np.clip(s - 0.005, 0, 1), np.clip(s + 0.005, 0, 1)


def _band_fn(s, lo, up):
    return lambda kappa, rows: scale_band(s[rows], lo[rows], up[rows], kappa)


def test_scale_band_invariants():
    _, s, lo, up = _biased_model(np.linspace(-2, 2, 7))
    prev = None
    for k in (0.0, 0.5, 1.0, 4.0, 50.0):
        s2, lo2, up2 = scale_band(s, lo, up, k)
        assert np.array_equal(s2, s)
        assert np.all((0 <= lo2) & (lo2 <= s) & (s <= up2) & (up2 <= 1))
        if prev is not None:  # nested: wider as kappa grows
            assert np.all(lo2 <= prev[0] + 1e-12) and np.all(up2 >= prev[1] - 1e-12)
        prev = (lo2, up2)
    np.testing.assert_allclose(scale_band(s, lo, up, 1.0)[1], lo, atol=1e-9)
    np.testing.assert_allclose(scale_band(s, lo, up, 0.0)[2], s, atol=1e-9)


def test_calibration_reaches_the_nominal_level_on_fresh_cases():
    x, t, e, _ = _cohort(3000, seed=0)
    risk, s, lo, up = _biased_model(x)
    cal = fit_calibration("scale", _band_fn(s, lo, up), risk, t, e, GRID, 0.9)
    _, clo0, cup0, _ = cal.apply(_band_fn(s, lo, up), risk)
    for g in range(3):  # the raw band was too narrow in every tercile
        i = tercile_groups(risk, cal.cuts) == g
        assert np.mean(cup0[i] - clo0[i]) > 2 * np.mean(up[i] - lo[i])
    # recentring: the model's hazard is too high for low risk and too low for high risk
    assert cal.centre[0] < 1.0 < cal.centre[2]
    raw_cov, cal_cov, case_cov, raw_case = [], [], [], []
    for seed in range(1, 7):  # fresh cases from the same population
        x2, t2, e2, _ = _cohort(3000, seed=seed)
        risk2, s2, lo2, up2 = _biased_model(x2)
        _, clo, cup, alpha = cal.apply(_band_fn(s2, lo2, up2), risk2)
        groups = tercile_groups(risk2, cal.cuts)
        for g in range(3):
            i = groups == g
            raw_cov.append(interval_coverage(t2[i], e2[i], lo2[i], up2[i], GRID))
            cal_cov.append(interval_coverage(t2[i], e2[i], clo[i], cup[i], GRID))
        case_cov.append(ipcw_interval_coverage(t2, e2, *band_interval(clo, cup, GRID, alpha)))
        raw_case.append(ipcw_interval_coverage(t2, e2, *band_interval(lo2, up2, GRID, 0.1)))
    # one group's Kaplan-Meier coverage varies a lot between samples; its mean does not
    assert np.mean(raw_cov) < 0.5
    assert 0.8 <= np.mean(cal_cov) <= 0.98, cal_cov
    assert abs(np.mean(case_cov) - 0.9) < 0.02, case_cov
    assert abs(np.mean(raw_case) - 0.9) > 0.03, raw_case  # the raw credal interval misses


@pytest.mark.parametrize(
    ("nominal", "options"),
    [(0.9, {}), (0.75, {}), (0.9, {"km_noise": True, "recentre_slope": True})],
)
def test_typical_fresh_group_is_covered_at_the_nominal_share(nominal, options):
    """The group claim: a fresh group of the calibration terciles' size has its Kaplan-Meier
    inside its mean band at a median share of the grid equal to the nominal level (the share of
    one group scatters widely, so the median over many calibrations and fresh groups is
    checked), and the claim follows the nominal level."""
    shares, raw = [], []
    for cal_seed in range(8):
        x, t, e, _ = _cohort(600, seed=100 + cal_seed)
        risk, s, lo, up = _biased_model(x)
        cal = fit_calibration("scale", _band_fn(s, lo, up), risk, t, e, GRID, nominal,
                              seed=cal_seed, **options)  # fmt: skip
        for j in range(6):
            x2, t2, e2, _ = _cohort(600, seed=1000 * (cal_seed + 1) + j)
            risk2, s2, lo2, up2 = _biased_model(x2)
            _, clo, cup, _ = cal.apply(_band_fn(s2, lo2, up2), risk2)
            groups = tercile_groups(risk2, cal.cuts)
            for g in range(3):
                i = groups == g
                shares.append(interval_coverage(t2[i], e2[i], clo[i], cup[i], GRID))
                raw.append(interval_coverage(t2[i], e2[i], lo2[i], up2[i], GRID))
    assert abs(np.median(shares) - nominal) <= 0.06, np.median(shares)
    assert np.median(raw) < 0.5


def _late_events(seed: int = 3):
    """No event before 0.5; a model close to the truth after 0.5 and below 1 from the start."""
    x, t, e, _ = _cohort(900, seed=seed)
    late = np.linspace(0.55, 2.5, 60)
    early = np.concatenate([np.linspace(0.05, 0.45, 20), late])

    def model(grid):
        s = np.exp(-np.outer(np.exp(x), 0.04 * np.minimum(grid, 0.5) + np.maximum(grid - 0.5, 0)))
        return s, np.clip(s - 0.05, 0, 1), np.clip(s + 0.05, 0, 1)

    return x, t + 0.5, e, late, early, model


def test_width_is_not_chosen_on_times_before_a_groups_first_event():
    """Before a group's first event its Kaplan-Meier is exactly 1, outside any band whose upper
    edge is below 1: without the Kaplan-Meier noise term (the default) those grid times must not
    drive the width (they would push it to the largest candidate). Prepending such times to the
    grid leaves every kappa unchanged."""
    x, t, e, late, early, model = _late_events()
    kappas = []
    for grid in (late, early):
        s, lo, up = model(grid)
        cal = fit_calibration("scale", _band_fn(s, lo, up), x, t, e, grid, 0.9,
                              recentre_groups=False)  # fmt: skip
        kappas.append(cal.kappa)
        _, _, cup, _ = cal.apply(_band_fn(s, lo, up), x)
    assert kappas[0] == kappas[1]
    assert max(kappas[1]) < 10.0
    # the early times are misses for this band whatever its width: its upper edge is below 1
    assert np.all(cup[:, :20].mean(0) < 1.0)


def test_noise_term_covers_a_groups_stretch_without_events():
    """With the Kaplan-Meier noise term of a group of the tercile's size, the upper edge is
    exactly 1 where the model gives such a group a survival close to 1, so the Kaplan-Meier of 1
    before the first event is inside the band there; the low and mid terciles are covered at
    the nominal share of the whole grid without an absurd width."""
    x, t, e, _, early, model = _late_events()
    s, lo, up = model(early)
    cal = fit_calibration("scale", _band_fn(s, lo, up), x, t, e, early, 0.9,
                          recentre_groups=False, km_noise=True)  # fmt: skip
    assert cal.z == pytest.approx(1.6449, abs=1e-4) and cal.group_size == (300.0,) * 3
    _, clo, cup, _ = cal.apply(_band_fn(s, lo, up), x)
    groups = tercile_groups(x, cal.cuts)
    for g in (0, 1):
        i = groups == g
        assert np.all(cup[i][:, :20].mean(0) == 1.0)
        assert interval_coverage(t[i], e[i], clo[i], cup[i], early) >= 0.9
        assert cal.kappa[g] < 10.0


def test_noise_term_and_recentring_slope():
    s = np.array([[0.99, 0.9, 0.5, 0.1]])
    lo, up = s - 0.005, s + 0.005
    lo2, up2 = km_noise_band(s, lo, up, 1.645, 50)
    sd = np.sqrt(s * (1 - s) / 50)
    np.testing.assert_allclose(up2, np.minimum(up + 1.645 * sd, 1.0))
    np.testing.assert_allclose(lo2, lo - 1.645 * sd)
    assert up2[0, 0] == 1.0  # clipped: a group of 50 at S = 0.99 may well have no event
    assert km_noise_band(s, lo, up, 0.0, 50)[1] is up
    assert km_noise_z(0.9) == pytest.approx(1.6449, abs=1e-4)
    # a slope keeps each curve monotone and the band ordered; slope 1 is the power S^c
    for c, p in ((0.5, 0.6), (2.0, 1.7)):
        rs, rlo, rup = recentre(s, lo, up, c, p)
        assert np.all(np.diff(rs) < 0) and np.all((rlo <= rs) & (rs <= rup))
    np.testing.assert_allclose(recentre(s, lo, up, 2.0, 1.0)[0], s**2.0)


def test_identity_and_round_trip():
    cal = BandCalibration.identity(0.8)
    assert cal.family == "none" and cal.alpha == pytest.approx((0.2, 0.2, 0.2))
    kappa, alpha, centre = cal.per_case(np.array([-5.0, 0.0, 5.0]))
    assert np.all(kappa == 1.0) and np.allclose(alpha, 0.2) and np.all(centre == 1.0)
    fitted = BandCalibration(
        "scale", 0.9, (0.1, 0.2), (1.0, 2.0, 3.0), (0.1, 0.2, 0.3), 0.4, (0.5, 1.0, 2.0),
        (0.8, 1.0, 1.3), (40.0, 41.0, 40.0), 1.645,
    )  # fmt: skip
    assert BandCalibration.from_dict(fitted.to_dict()) == fitted
    older = {k: v for k, v in fitted.to_dict().items() if k not in ("slope", "group_size", "z")}
    assert BandCalibration.from_dict(older).z == 0.0  # saved before the noise term: none
    with pytest.raises(ConfigError, match="nominal"):
        fit_calibration("scale", lambda k: None, np.zeros(3), np.ones(3), np.ones(3), GRID, 1.0)


SMALL = ["progress=false", "n_cases=120", "n_components=6", "n_prototypes=1", "epochs=10",
         "baselines=", "calibration_folds=2"]  # fmt: skip


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("dpsurv_cal") / "run"
    learner, rd = clinfuse.run("dpsurv", overrides=SMALL, out=out)
    return learner, rd, learner.load_data()


def test_learner_reports_and_saves_its_calibration(small):
    learner, rd, data = small
    m = rd.read_metrics()
    assert m["calibration"] in ("scale", "evidential")
    assert learner.calibration is not None and learner.calibration.family == m["calibration"]
    for key in ("test_coverage_case", "test_raw_coverage_case", "test_band_width"):
        assert 0.0 <= m[key] <= 1.0
    again = clinfuse.load(rd.path)
    assert again.calibration == learner.calibration
    np.testing.assert_allclose(again.cov_grid, learner.cov_grid)
    p = learner.predict(data, "test")
    assert {"interval_low", "interval_up", "interval_level"} <= set(p.columns)
    assert np.all(p["interval_low"] <= p["interval_up"])


def test_show_draws_the_calibrated_band(small, tmp_path, monkeypatch):
    learner, _, data = small
    drawn = []
    real = plots.survival_band_png

    def spy(grid, s, s_low, s_up, path, **kw):
        drawn.append((s_low, s_up, kw))
        return real(grid, s, s_low, s_up, path, **kw)

    monkeypatch.setattr(plots, "survival_band_png", spy)
    learner.write_prediction_report(data, "test", tmp_path, n_cases=2)
    assert len(drawn) == 2 and all(p.suffix == ".png" for p in tmp_path.iterdir())
    idx = data.split(0, "test")[:2]
    grid = learner._grid(data.time[data.split(0, "test")])
    cb = learner.calibrated_band(learner.reps(data, idx), grid)
    raw = learner.band(learner.reps(data, idx), grid)
    np.testing.assert_allclose(drawn[0][0], cb.s_low[0])
    np.testing.assert_allclose(drawn[0][1], cb.s_up[0])
    assert not np.allclose(cb.s_up - cb.s_low, (raw.s_up - raw.s_low).numpy())
    assert "calibrated" in drawn[0][2]["label"]
    # the dotted event-time interval is the one written to predictions.parquet
    p = learner.predict(data, "test")
    for j in range(2):
        lower, upper, level = drawn[j][2]["interval"]
        assert lower == pytest.approx(p["interval_low"].iloc[j])
        assert upper == pytest.approx(p["interval_up"].iloc[j])
        assert level == pytest.approx(p["interval_level"].iloc[j])
        assert level == pytest.approx(1.0 - learner.calibration.per_case(cb.risk)[1][j])
        assert "calibrated to 90%" in drawn[j][2]["interval_label"]


def test_cli_predict_show_draws_the_saved_calibrated_band(small, monkeypatch):
    from clinfuse.cli import main

    learner, rd, data = small
    drawn = []
    real = plots.survival_band_png

    def spy(grid, s, s_low, s_up, path, **kw):
        drawn.append((np.asarray(s_low), np.asarray(s_up), kw))
        return real(grid, s, s_low, s_up, path, **kw)

    monkeypatch.setattr(plots, "survival_band_png", spy)
    assert main(["-q", "predict", "dpsurv", "--run", str(rd.path), "--show", "1"]) == 0
    assert len(drawn) == 1 and "calibrated" in drawn[0][2]["label"]
    idx = data.split(0, "test")[:1]
    grid = learner._grid(data.time[data.split(0, "test")])
    cb = learner.calibrated_band(learner.reps(data, idx), grid)
    np.testing.assert_allclose(drawn[0][0], cb.s_low[0], atol=1e-10)
    np.testing.assert_allclose(drawn[0][1], cb.s_up[0], atol=1e-10)
    assert list((rd.path / "predictions-test").glob("*_survival.png"))


def test_max_cases_keeps_a_stratified_subsample():
    from clinfuse.methods.dpsurv.config import DPsurvConfig
    from clinfuse.methods.dpsurv.method import DPsurv
    from clinfuse.methods.dpsurv.tabular import load_tabular

    full = load_tabular("flchain")
    sub = DPsurv(DPsurvConfig(data="flchain", max_cases=1000, progress=False)).load_data()
    assert abs(len(sub.time) - 1000) <= 1 and len(set(sub.case_ids)) == len(sub.case_ids)
    assert abs(sub.event.mean() - full.event.mean()) < 0.002
    rows = np.array([int(c.split("-")[1]) for c in sub.case_ids])
    np.testing.assert_array_equal(sub.X, full.X[rows])
    assert sum(len(te) for _, te in sub.folds) == len(sub.time)
    with pytest.raises(ConfigError, match="max_cases"):
        DPsurvConfig(max_cases=10)


def test_inner_calibration_models_take_as_many_steps_as_the_outer_fit(small, monkeypatch):
    """The calibration is fitted on inner models and applied to the outer one, so the inner
    models must be trained like it: with the outer epoch count, a model on half the training
    fold took half the optimiser steps, and its curves and risk scale did not transfer."""
    import math

    learner, _, data = small
    tr = data.split(0, "train")
    reps, time, event = learner.reps(data, tr), data.time[tr], data.event[tr]
    calls = []
    real = learner._fit_net

    def spy(reps_a, time_a, event_a, k, val, epochs=None):
        calls.append((len(time_a), epochs))
        return real(reps_a, time_a, event_a, k, val, epochs=epochs)

    monkeypatch.setattr(learner, "_fit_net", spy)
    outer_epochs, bs = 3, learner.config.batch_size
    oof = learner._oof_grfn(reps, time, event, 1, outer_epochs)
    outer_steps = math.ceil(len(time) / bs) * outer_epochs
    assert len(calls) == learner.config.calibration_folds
    for n_a, epochs in calls:
        per_epoch = math.ceil(n_a / bs)
        assert n_a < len(time) and per_epoch < math.ceil(len(time) / bs)
        assert epochs > outer_epochs  # fewer minibatches per epoch, more epochs
        assert abs(epochs * per_epoch - outer_steps) <= per_epoch / 2
    assert np.all(np.isfinite(oof["risk"])) and oof["mu"].shape[0] == len(time)
