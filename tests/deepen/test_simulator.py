"""The DeepEN nutrition simulator: planted dynamics, exact behaviour probabilities, episode ends."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.deepen.simulator import (
    FEATURES,
    HOLD_ID,
    MEASURED,
    NutritionSimConfig,
    NutritionSimulator,
    clinician_policy,
    constant_policy,
    default_action_grid_spec,
    guideline_dose,
    guideline_policy,
    informed_policy,
    make_default_dataset,
    mortality,
    simulate,
    survival_reward,
    true_value,
)

CFG = NutritionSimConfig()
COL = {n: i for i, n in enumerate(FEATURES)}


@pytest.fixture(scope="module")
def default_data():
    return make_default_dataset(n_patients=600, seed=3)


def _schedule(kcal_by_day, prot=1.0, water=10.0):
    """Deterministic policy giving kcal_by_day[day] (kcal/kg/day), fixed protein and water."""
    kcal_by_day = np.asarray(kcal_by_day, dtype=float)
    enc = NutritionSimulator(CFG).grid.encode

    def policy(obs):
        day = np.minimum(obs[:, COL["days_since_admit"]].astype(int), len(kcal_by_day) - 1)
        doses = np.stack(
            [kcal_by_day[day], np.full(len(obs), prot), np.full(len(obs), water)], axis=1
        )
        out = np.zeros((len(obs), 51))
        out[np.arange(len(obs)), enc(doses / 6.0)] = 1.0
        return out

    return policy


# -- determinism and structure -----------------------------------------------------------------
def test_seeded_determinism():
    pol = functools.partial(clinician_policy, config=CFG)
    a, b = simulate(pol, 150, seed=11), simulate(pol, 150, seed=11)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    pd.testing.assert_frame_equal(a.patients, b.patients)
    c = simulate(pol, 150, seed=12)
    assert not np.allclose(a.patients["age"], c.patients["age"])


def test_common_random_numbers_same_patients_across_policies():
    a = simulate(constant_policy(0, 0, 0), 50, seed=5)
    b = simulate(constant_policy(24, 1.5, 10), 50, seed=5)
    cohort_cols = ["age", "bmi", "sofa", "phosphate", "recovery", "depletion"]
    pd.testing.assert_frame_equal(a.patients[cohort_cols], b.patients[cohort_cols])
    first = a.frame["step"] == 0  # the admission observation does not depend on the policy
    np.testing.assert_array_equal(a.obs[first.to_numpy()], b.obs[(b.frame["step"] == 0)])


def test_episodes_end_exactly_once(default_data):
    res = default_data
    f = res.frame
    ends = (f["done"] | f["timeout"]).groupby(f["patient"]).sum()
    assert (ends == 1).all()
    last = f.groupby("patient").tail(1)
    assert (last["done"] | last["timeout"]).all()
    assert not (f["done"] & f["timeout"]).any()
    # death only on the last row; survivors run the full horizon and end with `done`
    assert f.loc[f["died"], "patient"].is_unique
    assert f["died"].sum() == res.patients["died"].sum()
    assert (f.groupby("patient")["patient_died"].all() == res.patients["died"]).all()
    assert (f.groupby("patient")["patient_died"].any() == res.patients["died"]).all()
    surv = res.patients.loc[~res.patients["died"]]
    assert (surv["n_steps"] == CFG.horizon_steps).all()
    assert (last.loc[~last["died"], "done"]).all()
    dead = res.patients.loc[res.patients["died"]]
    assert (dead["n_steps"] == dead["death_step"] + 1).all()
    assert 0 < len(dead) < len(res.patients)
    # steps are contiguous from 0 within each episode
    assert (f.groupby("patient")["step"].diff().fillna(1) == 1).all()
    # Trajectories accepts the episodes, and the terminal reward is +-15 on the last step
    traj = res.to_trajectories()
    assert traj.n_episodes == len(res.patients)
    g = res.returns()
    assert set(np.unique(g)) == {-15.0, 15.0}
    np.testing.assert_array_equal(g < 0, res.patients["died"].to_numpy())


def test_horizon_end_timeout_option():
    cfg = dataclasses.replace(CFG, horizon_end="timeout", horizon_steps=6)
    res = simulate(functools.partial(clinician_policy, config=cfg), 200, seed=1, config=cfg)
    last = res.frame.groupby("patient").tail(1)
    assert (last["timeout"] == ~last["died"]).all()
    assert (last["done"] == last["died"]).all()
    assert (survival_reward(res.frame)[res.timeout] == 15.0).all()
    res.to_trajectories()  # validates: each episode ends once


def test_observation_bookkeeping(default_data):
    f = default_data.frame
    same = f["patient"].to_numpy()[1:] == f["patient"].to_numpy()[:-1]
    for name in ("sofa", "lactate", "glucose", "phosphate", "sodium"):
        np.testing.assert_array_equal(f[f"next_{name}"].to_numpy()[:-1][same], f[name][1:][same])
    np.testing.assert_allclose(
        f["next_cum_kcal_per_kg"].to_numpy()[:-1][same], f["cum_kcal_per_kg"][1:][same]
    )
    g = f.groupby("patient")
    # the last step's dose is observed at the next step; 24-h sums and 3-step trends
    np.testing.assert_allclose(
        g["kcal_per_kg"].shift(1).fillna(0.0), f["kcal_4h"], rtol=0, atol=1e-12
    )
    kcal_24h = g["kcal_per_kg"].transform(lambda x: x.shift(1).fillna(0).rolling(6, 1).sum())
    np.testing.assert_allclose(kcal_24h, f["kcal_24h"], atol=1e-9)
    for name in ("sofa", "glucose", "kcal_24h"):
        lag = g[name].shift(3)
        first = g[name].transform("first")
        expect = f[name] - lag.fillna(first)
        np.testing.assert_allclose(f[f"d3_{name}"], expect, atol=1e-9)
    assert np.all(f["sofa"] == np.rint(f["sofa"]))
    np.testing.assert_allclose(f["time"], 4.0 * f["step"])
    np.testing.assert_allclose(f["days_since_admit"], f["step"] / 6.0)


def test_deaths_follow_the_hazard(default_data):
    """Deaths are Bernoulli(hazard): their count matches the summed hazards (martingale)."""
    f = default_data.frame
    h = f["hazard"].to_numpy()
    z = (f["died"].sum() - h.sum()) / np.sqrt(np.sum(h * (1 - h)))
    assert abs(z) < 4.0


# -- action grid and policies ----------------------------------------------------------------------
def test_grid_spec_is_51_actions_with_hold_first():
    spec = default_action_grid_spec()
    assert spec["names"] == ["kcal_per_kg", "protein_g_per_kg", "water_ml_per_kg"]
    assert len(spec["cells"]) == 51 and spec["cells"][HOLD_ID] == [0, 0, 0]
    np.testing.assert_allclose(np.array(spec["centers"][0]) * 6, [0, 8, 16, 24, 32])
    np.testing.assert_allclose(np.array(spec["centers"][2]) * 6, [0, 10, 30])
    assert sum(c[2] == 0 for c in spec["cells"]) == 1  # only the hold gives no water
    plain = default_action_grid_spec(dataclasses.replace(CFG, grid_hold=False))
    assert plain["cells"] is None and len(plain["centers"][2]) == 2
    cfg = dataclasses.replace(CFG, grid_hold=False, horizon_steps=6)
    sim = NutritionSimulator(cfg)
    assert sim.n_actions == 50
    res = sim.simulate(functools.partial(clinician_policy, config=cfg), 100, seed=0)
    assert res.n_actions == 50 and res.action.max() < 50
    assert np.all(sim.action_doses[:, 2] > 0)  # without the hold every action gives water


def test_grid_spec_matches_action_grid():
    actions = pytest.importorskip("clinfuse.rl.actions")
    spec = default_action_grid_spec()
    grid = actions.ActionGrid.from_dict(spec)
    sim = NutritionSimulator()
    assert grid.n_actions == sim.n_actions
    np.testing.assert_allclose(grid.values(np.arange(51)), sim.action_doses)
    np.testing.assert_array_equal(grid.encode(sim.action_doses), np.arange(51))
    doses = guideline_dose(
        np.array([60.0, 120.0, 80.0]), np.array([0.0, 2.5, 6.0]), np.array([1.7, 1.6, 1.8])
    )
    np.testing.assert_array_equal(grid.encode(doses, nearest=True), sim.grid.encode(doses))


def test_clinician_probabilities_are_distributions_and_depend_on_acuity(default_data):
    obs = default_data.obs
    p = clinician_policy(obs)
    assert p.shape == (len(obs), 51)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    # the DataFrame form gives the same probabilities
    np.testing.assert_allclose(clinician_policy(default_data.frame), p)
    # the logged probability is the policy's probability of the logged action
    np.testing.assert_allclose(default_data.prob, p[np.arange(len(p)), default_data.action])
    # feeding ramps up over the days and is lower for sicker patients
    kcal = NutritionSimulator().action_doses[:, 0] * 6
    mean_kcal = p @ kcal
    day = obs[:, COL["days_since_admit"]]
    assert mean_kcal[day >= 4].mean() > mean_kcal[day < 1].mean() + 8
    late = day >= 4
    sick = late & (obs[:, COL["sofa"]] >= 12)
    well = late & (obs[:, COL["sofa"]] <= 6)
    assert mean_kcal[sick].mean() < mean_kcal[well].mean() - 2
    # holds happen, more on day 0; over-feeds (top kcal level) are rare but present
    assert p[day < 1, HOLD_ID].mean() > p[late, HOLD_ID].mean() + 0.1
    top = p[:, NutritionSimulator().action_doses[:, 0] * 6 == 32].sum(axis=1)
    assert np.all(top >= CFG.clin_overfeed * (1 - 1e-9))
    assert top[late].mean() < 0.15


def test_sampled_actions_follow_the_probabilities():
    """Pearson chi-square of action counts against the summed true probabilities."""
    res = simulate(functools.partial(clinician_policy, config=CFG), 400, seed=21, keep_probs=True)
    expected = res.probs.sum(axis=0)
    observed = np.bincount(res.action, minlength=51)
    assert observed.sum() == len(res.action)
    keep = expected >= 5
    other = np.array([observed[~keep].sum()]), np.array([expected[~keep].sum()])
    obs_c = np.concatenate([observed[keep], other[0]])
    exp_c = np.concatenate([expected[keep], other[1]])
    chi2 = np.sum((obs_c - exp_c) ** 2 / exp_c)
    assert stats.chi2.sf(chi2, df=len(obs_c) - 1) > 1e-3
    # a policy putting all mass off the fed grid never samples it (zero-probability actions)
    hold = simulate(constant_policy(0, 0, 0), 30, seed=2)
    assert np.all(hold.action == HOLD_ID)


def test_fixed_probabilities_are_sampled_at_their_frequencies():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(51, 0.3))

    def policy(obs):
        return np.tile(probs, (len(obs), 1))

    cfg = dataclasses.replace(CFG, horizon_steps=5)
    res = simulate(policy, 2000, seed=4, config=cfg)
    freq = np.bincount(res.action, minlength=51) / len(res.action)
    se = np.sqrt(probs * (1 - probs) / len(res.action))
    assert np.all(np.abs(freq - probs) < 5 * se + 1e-9)


def test_guideline_dose_closed_form():
    d = guideline_dose(np.array([70.0, 70.0, 70.0]), np.array([0.0, 1.9, 9.0])) * 6
    np.testing.assert_allclose(d[:, 0], [10.0, 15.0, 25.0])
    np.testing.assert_allclose(d[:, 1], [0.6, 0.9, 1.3])
    np.testing.assert_allclose(d[:, 2], 10.0)
    # obesity: BMI 40 at 1.7 m -> adjusted weight IBW + 0.25 (W - IBW)
    h, w = 1.7, 40.0 * 1.7**2
    ibw = 22.0 * h**2
    obese = guideline_dose(np.array([w]), np.array([5.0]), np.array([h])) * 6
    np.testing.assert_allclose(obese[0, 0], 25.0 * (ibw + 0.25 * (w - ibw)) / w)
    lean = guideline_dose(np.array([60.0]), np.array([5.0]), np.array([1.7])) * 6
    np.testing.assert_allclose(lean[0, :2], [25.0, 1.3])


def test_guideline_policy_is_deterministic_nearest_cell(default_data):
    p = guideline_policy(default_data.obs)
    assert np.all(p.max(axis=1) == 1.0) and np.all(p.sum(axis=1) == 1.0)
    doses = NutritionSimulator().action_doses[p.argmax(axis=1)] * 6
    day = default_data.obs[:, COL["days_since_admit"]]
    lean = default_data.obs[:, COL["bmi"]] < 30
    np.testing.assert_allclose(doses[(day >= 3) & lean, 0], 24.0)  # 25 -> nearest level
    np.testing.assert_allclose(doses[day < 1, 0], 8.0)  # 10 -> 8


# -- planted dynamics ----------------------------------------------------------------------------
def _one_step(doses_a, doses_b, n=400, seed=0, cfg=CFG):
    sim = NutritionSimulator(cfg)
    s0 = sim.reset(n, seed)
    return s0, sim.step(s0, np.tile(doses_a, (n, 1))), sim.step(s0, np.tile(doses_b, (n, 1)))


def test_glucose_rises_with_kcal_more_in_diabetics():
    s0, fed, unfed = _one_step([24 / 6, 1.0 / 6, 10 / 6], [0.0, 1.0 / 6, 10 / 6])
    alive = fed.alive & unfed.alive
    diff = fed.glucose - unfed.glucose  # same noise: the exact kcal effect of one step
    diab = s0.cohort.diabetes
    expect = CFG.glucose_rate * CFG.glucose_per_kcal * 24 * (1 + CFG.glucose_diabetes * diab)
    np.testing.assert_allclose(diff[alive], expect[alive], rtol=1e-9)
    # over a week of feeding vs none, diabetics' glucose rises more
    fed_res = simulate(_schedule([24.0]), 600, seed=8)
    zero_res = simulate(_schedule([0.0]), 600, seed=8)
    rise = {}
    for flag in (0.0, 1.0):
        a = fed_res.frame.loc[fed_res.frame["diabetes"] == flag, "glucose"].mean()
        b = zero_res.frame.loc[zero_res.frame["diabetes"] == flag, "glucose"].mean()
        rise[flag] = a - b
    assert rise[0.0] > 15 and rise[1.0] > 1.6 * rise[0.0]


def test_sodium_falls_with_free_water():
    s0, high, low = _one_step([16 / 6, 1.0 / 6, 30 / 6], [16 / 6, 1.0 / 6, 10 / 6])
    alive = high.alive & low.alive
    np.testing.assert_allclose(
        (high.sodium - low.sodium)[alive], -CFG.sodium_rate * CFG.sodium_per_water * 20.0
    )
    wet = simulate(_schedule([16.0], water=30.0), 500, seed=9)
    dry = simulate(_schedule([16.0], water=10.0), 500, seed=9)
    late_w = wet.frame.loc[wet.frame["day"] >= 3, "sodium"].mean()
    late_d = dry.frame.loc[dry.frame["day"] >= 3, "sodium"].mean()
    assert late_d - late_w > 0.7 * CFG.sodium_per_water * 20.0  # near the equilibrium shift 6


def test_refeeding_fast_ramp_lowers_phosphate_in_depleted_patients():
    fast = simulate(_schedule([24.0]), 1500, seed=13)
    slow = simulate(_schedule([8.0, 8.0, 8.0, 24.0]), 1500, seed=13)
    nadir = {}
    for name, res in (("fast", fast), ("slow", slow)):
        f = res.frame.loc[res.frame["day"] < 5]
        nadir[name] = f.groupby("patient")["next_phosphate"].min()
    low = fast.patients["phosphate"] < 2.5
    high = fast.patients["phosphate"] > 3.5
    gap_low = (nadir["slow"] - nadir["fast"])[low].mean()
    gap_high = (nadir["slow"] - nadir["fast"])[high].mean()
    assert low.sum() > 50
    assert gap_low > 0.3  # fast ramp -> lower phosphate nadir
    assert gap_low > 2.0 * gap_high  # and mostly in the depleted (refeeding-risk) patients
    assert (nadir["fast"][low] < 2.0).mean() > (nadir["slow"][low] < 2.0).mean() + 0.2


def test_weight_falls_under_underfeeding():
    zero = simulate(_schedule([0.0]), 300, seed=6)
    fed = simulate(_schedule([24.0]), 300, seed=6)

    def last_change(res):
        g = res.frame.groupby("patient")["weight"]
        return ((g.last() - g.first()) / g.first())[res.patients["n_steps"] >= 36]

    assert last_change(zero).mean() < last_change(fed).mean() - 0.02


# -- outcomes --------------------------------------------------------------------------------------
def test_mortality_responds_to_feeding_as_designed():
    n, seed = 2500, 17
    guide, se = mortality(functools.partial(guideline_policy, config=CFG), n, seed)
    starve, _ = mortality(constant_policy(0, 0, 0), n, seed)
    overfeed, _ = mortality(constant_policy(32, 2.0, 30), n, seed)
    clin, _ = mortality(functools.partial(clinician_policy, config=CFG), n, seed)
    smart, _ = mortality(functools.partial(informed_policy, config=CFG), n, seed)
    assert se < 0.01
    assert 0.15 <= clin <= 0.25  # the behaviour data's mortality
    assert starve > guide + 0.1
    assert overfeed > guide + 0.1
    # room for RL: state-aware feeding beats both the clinicians and the guideline
    assert smart < clin - 0.025
    assert smart < guide - 0.01


def test_guideline_beats_zero_feed_in_true_value():
    vg, sg = true_value(functools.partial(guideline_policy, config=CFG), 1500, seed=23)
    vz, sz = true_value(constant_policy(0, 0, 0), 1500, seed=23)
    assert vg - vz > 5.0  # i.e. > 1/6 of the +-15 survival reward range
    assert vg - vz > 5 * np.hypot(sg, sz)
    # the value is the survival reward's mean: 15 (1 - 2 mortality)
    res = simulate(constant_policy(0, 0, 0), 1500, seed=23)
    np.testing.assert_allclose(vz, 15.0 * (1.0 - 2.0 * res.mortality))


def test_returns_with_discount_closed_form(default_data):
    """With reward 1 per step, G = (1 - gamma^n) / (1 - gamma) for an episode of n steps."""
    n = default_data.patients["n_steps"].to_numpy()
    ones = default_data.returns(lambda f: np.ones(len(f)), gamma=0.9)
    np.testing.assert_allclose(ones, (1 - 0.9**n) / 0.1)
    v, se = true_value(
        lambda obs: clinician_policy(obs), 600, seed=3, reward_fn=lambda f: np.ones(len(f))
    )
    np.testing.assert_allclose(v, n.mean())
    np.testing.assert_allclose(se, n.std(ddof=1) / np.sqrt(len(n)))


# -- errors ----------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="grid_kcal_per_day"):
        NutritionSimConfig(grid_kcal_per_day=(5.0, 10.0))
    with pytest.raises(ConfigError, match="grid_water_per_day"):
        NutritionSimConfig(grid_water_per_day=(0.0, 30.0))
    with pytest.raises(DataError, match="one row of action probabilities"):
        simulate(lambda obs: np.ones((len(obs), 3)) / 3, 5, seed=0)
    with pytest.raises(DataError, match="sum to 1"):
        simulate(lambda obs: np.ones((len(obs), 51)), 5, seed=0)
    sim = NutritionSimulator()
    s0 = sim.reset(3, 0)
    with pytest.raises(DataError, match="non-negative"):
        sim.step(s0, -np.ones((3, 3)))
    with pytest.raises(DataError, match=r"\(N, len\(FEATURES\)\)"):
        clinician_policy(np.zeros((2, 5)))
    assert len(MEASURED) == 7 and len(FEATURES) == 32
