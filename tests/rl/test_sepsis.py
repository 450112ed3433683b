"""Oberst-Sontag sepsis simulator: exact dynamics, hand-derived transitions, an independent
step-by-step reference of the original code's ``MDP.transition``, policy values and simulation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.rl.envs.sepsis import (
    ACTION_NAMES,
    N_ACTIONS,
    N_FULL_STATES,
    N_OBS_STATES,
    SepsisConfig,
    SepsisMDP,
    build_sepsis_mdp,
    decode,
    decode_action,
    encode,
    encode_action,
    observed_state,
)

VARS = ("hr", "sbp", "o2", "glucose", "abx", "vaso", "vent", "diabetic")
NORMAL = {"hr": 1, "sbp": 1, "o2": 1, "glucose": 2}


@pytest.fixture(scope="module")
def env() -> SepsisMDP:
    return build_sepsis_mdp()


@pytest.fixture(scope="module")
def physician_data(env: SepsisMDP):
    return env.simulate("physician", 10_000, seed=1)


def state(diabetic: int = 0, abx: int = 0, vaso: int = 0, vent: int = 0, **vitals: int) -> int:
    """A full state id; vitals default to normal."""
    v = {**NORMAL, **vitals}
    return int(encode(v["hr"], v["sbp"], v["o2"], v["glucose"], abx, vaso, vent, diabetic))


def action(abx: int = 0, vaso: int = 0, vent: int = 0) -> int:
    return int(encode_action(abx=abx, vaso=vaso, vent=vent))


def marginals(env: SepsisMDP, s: int, a: int) -> dict[str, np.ndarray]:
    """Distribution of each variable of the next state."""
    p = env.mdp.P[s, a]
    codes = decode(np.arange(N_FULL_STATES))
    return {k: np.bincount(codes[k], weights=p) for k in VARS}


# -- an independent reference: the original's sequential transition, enumerated exactly ----------
def reference_step(s: dict[str, int], act: dict[str, int], pick) -> dict[str, int]:
    """``MDP.transition`` of the original code, written as it runs: antibiotics, ventilation,
    vasopressors, fluctuation, each ``np.random.uniform() < p`` replaced by ``pick(probs)``."""
    s = dict(s)

    def coin(p: float) -> bool:
        return pick((1.0 - p, p)) == 1

    def fluct(v: str, top: int, p: float) -> None:
        s[v] = min(top, max(0, s[v] + (-1, 1, 0)[pick((p, p, 1.0 - 2.0 * p))]))

    hr_f = sbp_f = o2_f = glu_f = True
    if act["abx"]:
        s["abx"] = 1
        if s["hr"] == 2 and coin(0.5):
            s["hr"] = 1
        if s["sbp"] == 2 and coin(0.5):
            s["sbp"] = 1
        hr_f = sbp_f = False
    elif s["abx"]:
        if s["hr"] == 1 and coin(0.1):
            s["hr"] = 2
        if s["sbp"] == 1 and coin(0.1):
            s["sbp"] = 2
        s["abx"] = 0
        hr_f = sbp_f = False
    if act["vent"]:
        s["vent"] = 1
        if s["o2"] == 0 and coin(0.7):
            s["o2"] = 1
        o2_f = False
    elif s["vent"]:
        if s["o2"] == 1 and coin(0.1):
            s["o2"] = 0
        s["vent"] = 0
        o2_f = False
    if act["vaso"]:
        s["vaso"] = 1
        if not s["diabetic"]:
            if coin(0.7) and s["sbp"] < 2:
                s["sbp"] += 1
        else:
            if s["sbp"] == 1 and coin(0.9):
                s["sbp"] = 2
            elif s["sbp"] == 0:
                s["sbp"] = pick((0.1, 0.5, 0.4))
            if coin(0.5):
                s["glucose"] = min(4, s["glucose"] + 1)
        sbp_f = glu_f = False
    elif s["vaso"]:
        if coin(0.05 if s["diabetic"] else 0.1):
            s["sbp"] = max(0, s["sbp"] - 1)
        s["vaso"] = 0
        sbp_f = False
    for v, on, top in (("hr", hr_f, 2), ("sbp", sbp_f, 2), ("o2", o2_f, 1)):
        if on:
            fluct(v, top, 0.1)
    if glu_f:
        fluct("glucose", 4, 0.3 if s["diabetic"] else 0.1)
    return s


class _Branch(Exception):
    pass


def enumerate_step(s: dict[str, int], act: dict[str, int]) -> dict[int, float]:
    """Exact next-state distribution of :func:`reference_step` by walking its tree of draws."""
    out: dict[int, float] = {}
    stack: list[tuple[int, ...]] = [()]
    while stack:
        prefix = stack.pop()
        trace: list[float] = []

        def pick(probs, prefix=prefix, trace=trace):
            if len(trace) == len(prefix):
                raise _Branch(probs)
            i = prefix[len(trace)]
            trace.append(probs[i])
            return i

        try:
            nxt = reference_step(s, act, pick)
        except _Branch as b:
            stack.extend(prefix + (i,) for i, p in enumerate(b.args[0]) if p > 0)
            continue
        sid = int(encode(*(nxt[k] for k in VARS)))
        out[sid] = out.get(sid, 0.0) + float(np.prod(trace))
    return out


# -- structure -------------------------------------------------------------------------------
def test_codes_round_trip_and_layout() -> None:
    ids = np.arange(N_FULL_STATES)
    codes = decode(ids)
    np.testing.assert_array_equal(encode(*(codes[k] for k in VARS)), ids)
    assert int(encode(hr=2, sbp=1, o2=1, glucose=2, abx=0, vaso=0, vent=0, diabetic=1)) == 1336
    assert int(encode(0, 0, 0, 0, 0, 0, 1, 0)) == 1  # ventilation is the last digit
    np.testing.assert_array_equal(observed_state(ids), ids % N_OBS_STATES)
    acts = decode_action(np.arange(N_ACTIONS))
    np.testing.assert_array_equal(encode_action(acts["abx"], acts["vaso"], acts["vent"]), range(8))
    assert action(abx=1, vaso=1) == 5 and ACTION_NAMES[5] == "abx+vaso"
    assert action(vent=1) == 2 and ACTION_NAMES[0] == "none"


def test_bad_codes_and_configs_raise() -> None:
    with pytest.raises(DataError, match="outside its levels"):
        encode(hr=3, sbp=1, o2=1, glucose=2, abx=0, vaso=0, vent=0)
    with pytest.raises(DataError, match="out of range"):
        decode([0, N_FULL_STATES])
    with pytest.raises(ConfigError, match="p_diabetes"):
        SepsisConfig(p_diabetes=1.5)
    with pytest.raises(ConfigError, match="init_o2"):
        SepsisConfig(init_o2=(0.5, 0.6))
    with pytest.raises(ConfigError, match="exceeds 1"):
        SepsisConfig(glucose_fluctuation_diabetic=0.6)


def test_transition_rows_are_distributions_with_fixed_flags(env: SepsisMDP) -> None:
    P = env.mdp.P
    np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-12)
    assert P.min() >= 0.0
    codes = decode(np.arange(N_FULL_STATES))
    live = np.nonzero(~env.mdp.terminal)[0]
    acts = decode_action(np.arange(N_ACTIONS))
    for a in range(N_ACTIONS):
        # next-state treatment flags are the action's bits; diabetes never changes
        same = (
            codes["diabetic"][live, None] == codes["diabetic"][None, :]
        ) & np.logical_and.reduce(
            [codes[k][None, :] == acts[k][a] for k in ("abx", "vaso", "vent")]
        )
        assert np.all(P[live, a][~same] == 0.0)


def test_death_and_discharge_absorb_with_the_right_rewards(env: SepsisMDP) -> None:
    m, codes = env.mdp, decode(np.arange(N_FULL_STATES))
    abnormal = sum((codes[k] != n).astype(int) for k, n in NORMAL.items())
    off = (codes["abx"] + codes["vaso"] + codes["vent"]) == 0
    np.testing.assert_array_equal(env.death, abnormal >= 3)
    np.testing.assert_array_equal(env.discharge, (abnormal == 0) & off)
    assert env.death.sum() == 832 and env.discharge.sum() == 2 and (~m.terminal).sum() == 606
    term = np.nonzero(m.terminal)[0]
    np.testing.assert_array_equal(m.P[term, :, term], 1.0)  # self-loops
    assert np.all(m.R[term] == 0.0) and np.all(m.d0[term] == 0.0)
    live = ~m.terminal
    np.testing.assert_array_equal(m.R3[live][:, :, env.death], -1.0)
    np.testing.assert_array_equal(m.R3[live][:, :, env.discharge], 1.0)
    np.testing.assert_array_equal(m.R3[live][:, :, ~m.terminal], 0.0)


# -- hand-derived transitions ------------------------------------------------------------------
def test_antibiotics_on_high_heart_rate(env: SepsisMDP) -> None:
    s, a = state(hr=2), action(abx=1)
    m = marginals(env, s, a)
    np.testing.assert_allclose(m["hr"], [0.0, 0.5, 0.5], atol=1e-12)  # high -> normal w.p. .5
    np.testing.assert_allclose(m["sbp"], [0.0, 1.0, 0.0], atol=1e-12)  # treated: no fluctuation
    np.testing.assert_allclose(m["o2"], [0.1, 0.9], atol=1e-12)  # untreated o2 fluctuates
    np.testing.assert_allclose(m["glucose"], [0, 0.1, 0.8, 0.1, 0], atol=1e-12)
    np.testing.assert_allclose(m["abx"][1], 1.0)
    assert env.mdp.P[s, a, state(abx=1)] == pytest.approx(0.5 * 0.9 * 0.8)
    # death needs high hr, low o2 and abnormal glucose together
    assert env.mdp.R[s, a] == pytest.approx(-0.5 * 0.1 * 0.2)


def test_stopping_antibiotics_discharge_probability(env: SepsisMDP) -> None:
    s, a = state(abx=1), action()
    # hr, sbp normal -> high w.p. .1 each (no fluctuation), o2 and glucose fluctuate
    p_bad = {"hr": 0.1, "sbp": 0.1, "o2": 0.1, "glucose": 0.2}
    p_discharge = np.prod([1 - p for p in p_bad.values()])
    p_death = sum(
        np.prod([p if bad else 1 - p for p, bad in zip(p_bad.values(), flags, strict=True)])
        for flags in itertools.product((0, 1), repeat=4)
        if sum(flags) >= 3
    )
    assert env.mdp.P[s, a, state()] == pytest.approx(p_discharge)
    assert env.mdp.R[s, a] == pytest.approx(p_discharge - p_death)


def test_vasopressors_depend_on_hidden_diabetes(env: SepsisMDP) -> None:
    a = action(vaso=1)
    m0 = marginals(env, state(sbp=0, diabetic=0), a)
    m1 = marginals(env, state(sbp=0, diabetic=1), a)
    np.testing.assert_allclose(m0["sbp"], [0.3, 0.7, 0.0], atol=1e-12)
    np.testing.assert_allclose(m1["sbp"], [0.1, 0.5, 0.4], atol=1e-12)
    np.testing.assert_allclose(m0["glucose"], [0, 0, 1, 0, 0], atol=1e-12)  # frozen
    np.testing.assert_allclose(m1["glucose"], [0, 0, 0.5, 0.5, 0], atol=1e-12)
    np.testing.assert_allclose(m0["hr"], [0.1, 0.8, 0.1], atol=1e-12)
    # stopping vasopressors from high sbp: falls one level w.p. .1 (.05 if diabetic)
    stop0 = marginals(env, state(sbp=2, vaso=1, diabetic=0), action())
    stop1 = marginals(env, state(sbp=2, vaso=1, diabetic=1), action())
    np.testing.assert_allclose(stop0["sbp"], [0.0, 0.1, 0.9], atol=1e-12)
    np.testing.assert_allclose(stop1["sbp"], [0.0, 0.05, 0.95], atol=1e-12)
    np.testing.assert_allclose(stop1["glucose"], [0, 0.3, 0.4, 0.3, 0], atol=1e-12)


def test_ventilation(env: SepsisMDP) -> None:
    np.testing.assert_allclose(marginals(env, state(o2=0), action(vent=1))["o2"], [0.3, 0.7])
    np.testing.assert_allclose(marginals(env, state(vent=1), action())["o2"], [0.1, 0.9])


def test_transitions_match_a_sequential_reference(env: SepsisMDP) -> None:
    """Every action from 80 random live states (both diabetes values) against the exact
    enumeration of the original's step-by-step code."""
    rng = np.random.default_rng(0)
    live = np.nonzero(~env.mdp.terminal)[0]
    codes = decode(live)
    for s in rng.choice(live, size=80, replace=False):
        start = {k: int(v) for k, v in decode(s).items()}
        for a in range(N_ACTIONS):
            act = {k: int(v) for k, v in decode_action(a).items()}
            ref = enumerate_step(start, act)
            row = np.zeros(N_FULL_STATES)
            row[list(ref)] = list(ref.values())
            np.testing.assert_allclose(env.mdp.P[s, a], row, atol=1e-12, err_msg=f"s={s} a={a}")
    assert codes["diabetic"].any()


# -- policies and values -----------------------------------------------------------------------
def test_optimal_policy_satisfies_bellman_optimality(env: SepsisMDP) -> None:
    q, pi, m = env.optimal_q(), env.optimal_policy(), env.mdp
    live = ~m.terminal
    v = np.where(live, q.max(1), 0.0)
    target = m.R + env.config.policy_gamma * m.P @ v
    np.testing.assert_allclose(q[live], target[live], atol=1e-9)
    np.testing.assert_allclose((pi * q).sum(1)[live], q.max(1)[live], atol=1e-12)


def test_values_are_ordered(env: SepsisMDP) -> None:
    opt, phys, rand = env.value("optimal"), env.value("physician"), env.value("random")
    # measured (defaults): optimal 0.5614, physician 0.4638, random -0.7164, 20-step optimum 0.5808
    assert opt > phys + 0.08
    assert phys > rand + 1.0
    assert env.optimal_value() >= opt - 1e-12
    assert env.optimal_value() - opt < 0.03  # the stationary 0.99-discounted policy is near-optimal
    assert -1.0 <= rand and opt <= 1.0


def test_observed_state_policies_apply_to_both_diabetes_values(env: SepsisMDP) -> None:
    full = env.optimal_policy()
    blind = full[:N_OBS_STATES]  # the non-diabetic optimum, ignoring diabetes
    assert env.value(blind) == pytest.approx(env.value(np.tile(blind, (2, 1))))
    assert env.value(blind) < env.value(full) - 1e-3  # knowing diabetes is worth something
    with pytest.raises(DataError, match="action probabilities per state"):
        env.value(np.ones((10, N_ACTIONS)) / N_ACTIONS)
    with pytest.raises(ConfigError, match="unknown policy"):
        env.value("clinician")  # type: ignore[arg-type]


def test_confounding_optimal_action_depends_on_hidden_diabetes(env: SepsisMDP) -> None:
    a = env.optimal_policy().argmax(1)
    live = ~env.mdp.terminal
    both = live[:N_OBS_STATES] & live[N_OBS_STATES:]
    assert np.sum((a[:N_OBS_STATES] != a[N_OBS_STATES:]) & both) >= 20  # measured: 50 of 303
    f0 = env.features(np.arange(N_OBS_STATES))
    f1 = env.features(np.arange(N_OBS_STATES) + N_OBS_STATES)
    np.testing.assert_array_equal(f0, f1)  # diabetes is invisible in observed features
    full = env.features([5, 725], observed=False)
    assert env.feature_names(observed=False)[-1] == "diabetic"
    np.testing.assert_array_equal(full[:, -1], [0, 1])
    onehot = env.features([5, 725], kind="onehot")
    assert onehot.shape == (2, N_OBS_STATES) and np.all(onehot.argmax(1) == 5)


# -- simulation ----------------------------------------------------------------------------------
def _assert_mc_agrees(env: SepsisMDP, data, policy: str) -> None:
    g = data.returns(env.config.gamma)
    se = g.std(ddof=1) / np.sqrt(len(g))
    assert abs(g.mean() - env.value(policy)) < 4 * se, (g.mean(), env.value(policy), se)


def test_monte_carlo_agrees_with_exact_value_physician(env: SepsisMDP, physician_data) -> None:
    _assert_mc_agrees(env, physician_data, "physician")
    d = physician_data
    assert np.all(np.isin(d.reward[d.done], [-1.0, 1.0]))  # ends pay exactly -1 / +1
    assert np.all(d.reward[~d.done] == 0.0)
    assert (d.ends - d.starts).max() == env.config.horizon
    np.testing.assert_array_equal(d.timeout, (d.step_index == env.config.horizon - 1) & ~d.done)
    assert d.feature_names == ("hr", "sbp", "o2", "glucose", "abx", "vaso", "vent")
    np.testing.assert_array_equal(d.meta["observed_state"], d.meta["state"] % N_OBS_STATES)
    assert not env.mdp.terminal[d.meta["state"]].any()


def test_monte_carlo_agrees_with_exact_value_random(env: SepsisMDP) -> None:
    _assert_mc_agrees(env, env.simulate("random", 10_000, seed=2), "random")


def test_diabetic_fraction(env: SepsisMDP, physician_data) -> None:
    frac = physician_data.meta["diabetic"][physician_data.starts].mean()
    exact = env.diabetic_fraction()
    assert abs(frac - exact) < 4 * np.sqrt(exact * (1 - exact) / physician_data.n_episodes)
    assert abs(exact - env.config.p_diabetes) < 0.02  # measured 0.1897: rejection shifts it
    no_redraw = build_sepsis_mdp(SepsisConfig(resample_diabetes_on_reject=False))
    assert no_redraw.diabetic_fraction() == pytest.approx(0.2, abs=1e-12)


def test_seeded_simulation_is_deterministic(env: SepsisMDP) -> None:
    a = env.simulate("physician", 300, seed=7)
    b = env.simulate("physician", 300, seed=7)
    c = env.simulate("physician", 300, seed=8)
    for name in ("obs", "action", "reward", "done", "timeout", "patient"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert len(a) != len(c) or not np.array_equal(a.action, c.action)
    full = env.simulate("physician", 300, seed=7, observed=False)
    np.testing.assert_array_equal(full.obs[:, :7], a.obs)  # same draws, diabetes column added
    np.testing.assert_array_equal(full.obs[:, 7], a.meta["diabetic"])
