"""Off-policy evaluation checked against exact tabular values, definitional loops and planted
behaviour policies."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.rl.data import Trajectories
from clinfuse.rl.envs.tabular import (
    TabularMDP,
    greedy_policy,
    mix_policies,
    random_mdp,
    softmax_policy,
    uniform_policy,
)
from clinfuse.rl.ope import (
    BehaviourConfig,
    FQEConfig,
    bootstrap_ci,
    cwpdis,
    describe,
    detect_horizon,
    dr,
    ess,
    evaluate_policy,
    fit_behaviour,
    format_estimate,
    fqe,
    is_,
    pdis,
    wdr,
    wis,
)

IS_FAMILY = (is_, wis, pdis, cwpdis)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny networks: one thread is as fast, and immune to other jobs sharing the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _policies(mdp: TabularMDP, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A soft behaviour policy and a different soft target (0.7 optimal + 0.3 uniform)."""
    S, A = mdp.n_states, mdp.n_actions
    pi_b = softmax_policy(np.random.default_rng(seed).normal(size=(S, A)))
    pi_e = mix_policies(greedy_policy(mdp.value_iteration()[0]), uniform_policy(S, A), 0.3)
    return pi_b, pi_e


def _at_logged(traj: Trajectories, *pis: np.ndarray) -> list[np.ndarray]:
    return [pi[traj.meta["state"]] for pi in pis]


# -- definitional references: plain per-episode loops ----------------------------------------
def _episodes(traj, pi_e, pi_b, q=None, v=None):
    for s, e in zip(traj.starts, traj.ends, strict=True):
        rows = np.arange(s, e)
        a = traj.action[rows]
        rho = pi_e[rows, a] / pi_b[rows, a]
        qa = None if q is None else q[rows, a]
        vs = None if v is None else v[rows]
        yield traj.reward[rows].astype(float), rho, qa, vs


def _cwpdis_loop(traj, pi_e, pi_b, gamma):
    eps = list(_episodes(traj, pi_e, pi_b))
    T = max(len(r) for r, *_ in eps)
    total = 0.0
    for t in range(T):
        num = den = 0.0
        for r, rho, *_ in eps:
            w = np.prod(rho[: t + 1])  # frozen after the end: the product of all ratios
            num += w * (r[t] if t < len(r) else 0.0)
            den += w
        total += gamma**t * num / den
    return total


def _dr_loop(traj, pi_e, pi_b, gamma, q, v):
    vals = []
    for r, rho, qa, vs in _episodes(traj, pi_e, pi_b, q, v):
        acc = 0.0  # backward recursion of Jiang & Li
        for t in reversed(range(len(r))):
            acc = vs[t] + rho[t] * (r[t] + gamma * acc - qa[t])
        vals.append(acc)
    return float(np.mean(vals))


def _wdr_loop(traj, pi_e, pi_b, gamma, q, v):
    eps = list(_episodes(traj, pi_e, pi_b, q, v))
    n, T = len(eps), max(len(r) for r, *_ in eps)

    def w(rho, t):
        return 1.0 if t < 0 else float(np.prod(rho[: t + 1]))

    total = 0.0
    for t in range(T):
        den = sum(w(rho, t) for _, rho, *_ in eps)
        den_prev = n if t == 0 else sum(w(rho, t - 1) for _, rho, *_ in eps)
        for r, rho, qa, vs in eps:
            if t < len(r):
                total += gamma**t * (w(rho, t) / den * (r[t] - qa[t]))
                total += gamma**t * (w(rho, t - 1) / den_prev * vs[t])
    return total


@pytest.fixture(scope="module")
def logged() -> tuple[TabularMDP, Trajectories, np.ndarray, np.ndarray]:
    mdp = random_mdp(6, 3, 11, gamma=0.9, p_terminate=0.25)
    pi_b, pi_e = _policies(mdp)
    return mdp, mdp.sample(pi_b, 60, seed=1), pi_b, pi_e


# -- tests -----------------------------------------------------------------------------------
def test_ess_equal_weights_and_single_weight() -> None:
    assert ess(np.ones(7)) == pytest.approx(7.0)
    assert ess(np.full(7, 0.3)) == pytest.approx(7.0)
    assert ess(np.array([0.0, 0.0, 4.2, 0.0])) == pytest.approx(1.0)
    assert ess(np.zeros(3)) == 0.0
    assert 1.0 < ess(np.array([1.0, 2.0, 3.0])) < 3.0


def test_is_family_equals_on_policy_mean_when_target_is_behaviour(logged) -> None:
    mdp, traj, pi_b, _ = logged
    (p,) = _at_logged(traj, pi_b)
    assert len(set((traj.ends - traj.starts).tolist())) > 2  # ragged episodes
    mean_return = traj.returns(mdp.gamma).mean()
    for est in IS_FAMILY:
        res = est(traj, p, p, mdp.gamma)
        assert res.value == pytest.approx(mean_return, abs=1e-10), res.name
        assert res.ess == pytest.approx(traj.n_episodes)
        assert res.per_episode.mean() == pytest.approx(res.value, abs=1e-10)


def test_estimators_match_definitional_loops(logged) -> None:
    mdp, traj, pi_b, pi_e = logged
    pe, pb = _at_logged(traj, pi_e, pi_b)
    rng = np.random.default_rng(0)
    q = rng.normal(size=(len(traj), mdp.n_actions))
    v = rng.normal(size=len(traj))
    g = mdp.gamma
    assert cwpdis(traj, pe, pb, g).value == pytest.approx(_cwpdis_loop(traj, pe, pb, g), 1e-10)
    assert dr(traj, pe, pb, g, q, v).value == pytest.approx(_dr_loop(traj, pe, pb, g, q, v), 1e-10)
    assert wdr(traj, pe, pb, g, q, v).value == pytest.approx(
        _wdr_loop(traj, pe, pb, g, q, v), 1e-10
    )
    # v_hat defaults to sum_a pi_e q_hat
    v_e = (pe * q).sum(1)
    assert dr(traj, pe, pb, g, q).value == pytest.approx(_dr_loop(traj, pe, pb, g, q, v_e), 1e-10)
    # with a zero model DR is PDIS and WDR is CWPDIS
    zero = np.zeros_like(q)
    assert dr(traj, pe, pb, g, zero).value == pytest.approx(pdis(traj, pe, pb, g).value, 1e-12)
    assert wdr(traj, pe, pb, g, zero).value == pytest.approx(cwpdis(traj, pe, pb, g).value, 1e-12)
    # trajectory IS by hand
    w = np.array([np.prod(rho) for _, rho, *_ in _episodes(traj, pe, pb)])
    G = traj.returns(g)
    assert is_(traj, pe, pb, g).value == pytest.approx(np.mean(w * G), 1e-10)
    assert wis(traj, pe, pb, g).value == pytest.approx(np.sum(w * G) / np.sum(w), 1e-10)
    assert is_(traj, pe, pb, g).ess == pytest.approx(w.sum() ** 2 / (w**2).sum(), 1e-10)


def _bandit() -> tuple[TabularMDP, np.ndarray, np.ndarray]:
    """Contextual bandit: 3 contexts, 3 actions, a random outcome (2 terminal states) with
    transition rewards in [2, 4], so rewards are noisy and far from 0 (hard for plain IS)."""
    base = random_mdp(5, 3, 2, n_terminal=2, p_terminate=1.0, gamma=1.0, transition_rewards=True)
    R3 = base.R3 + 3.0 * (~base.terminal)[:, None, None]
    mdp = TabularMDP.from_transition_rewards(base.P, R3, base.d0, base.terminal, gamma=1.0)
    pi_b = softmax_policy(np.random.default_rng(3).normal(size=(5, 3)))
    pi_e = softmax_policy(np.random.default_rng(4).normal(size=(5, 3)) * 2)
    return mdp, pi_b, pi_e


def test_dr_unbiased_on_bandit_even_with_wrong_model_and_better_than_is_with_good_model() -> None:
    mdp, pi_b, pi_e = _bandit()
    truth = mdp.policy_value(pi_e)
    q_true = mdp.policy_q(pi_e)
    q_wrong = q_true + np.random.default_rng(5).normal(0.0, 1.5, size=q_true.shape) + 1.0
    ests: dict[str, list[float]] = {"dr_wrong": [], "dr_good": [], "is": []}
    for seed in range(300):
        traj = mdp.sample(pi_b, 50, seed=seed)
        assert np.all(traj.done)  # one step per episode
        pe, pb, qw, qg = _at_logged(traj, pi_e, pi_b, q_wrong, q_true)
        ests["dr_wrong"].append(dr(traj, pe, pb, 1.0, qw).value)
        ests["dr_good"].append(dr(traj, pe, pb, 1.0, qg).value)
        ests["is"].append(is_(traj, pe, pb, 1.0).value)
    for name, vals in ests.items():
        vals = np.asarray(vals)
        se = vals.std(ddof=1) / np.sqrt(len(vals))
        assert abs(vals.mean() - truth) < 4 * se, name
    assert np.var(ests["dr_good"]) < 0.5 * np.var(ests["is"])


def test_is_and_pdis_unbiased_for_a_different_target_on_small_mdp() -> None:
    mdp = random_mdp(4, 2, 8, gamma=0.9, p_terminate=0.4)
    pi_b = mix_policies(uniform_policy(4, 2), softmax_policy(np.eye(4, 2) * 2), 0.5)
    pi_e = mix_policies(greedy_policy(mdp.value_iteration()[0]), uniform_policy(4, 2), 0.2)
    truth = mdp.policy_value(pi_e)
    assert abs(truth - mdp.policy_value(pi_b)) > 0.1  # a genuinely different policy
    vals = {"is": [], "pdis": []}
    for seed in range(300):
        traj = mdp.sample(pi_b, 40, seed=seed)
        pe, pb = _at_logged(traj, pi_e, pi_b)
        vals["is"].append(is_(traj, pe, pb, mdp.gamma).value)
        vals["pdis"].append(pdis(traj, pe, pb, mdp.gamma).value)
    for name, v in vals.items():
        v = np.asarray(v)
        assert abs(v.mean() - truth) < 4 * v.std(ddof=1) / np.sqrt(len(v)), name


def test_fqe_tabular_is_exact_on_the_empirical_mdp_and_converges_to_the_truth() -> None:
    mdp = random_mdp(5, 2, 3, gamma=0.8, p_terminate=0.2)
    S, A = 5, 2
    pi_b = uniform_policy(S, A)  # full coverage
    pi_e = mix_policies(greedy_policy(mdp.value_iteration()[0]), pi_b, 0.2)
    traj = mdp.sample(pi_b, 3000, seed=0)
    s, s2 = traj.meta["state"], traj.meta["next_state"]
    wide = (-100.0, 100.0)  # no clipping: the in-sample fit is the empirical MDP's evaluation
    res = fqe(traj, pi_e[s], mdp.gamma, iterations=500, cross_fit=1, value_range=wide)
    # oracle: exact policy evaluation of the maximum-likelihood MDP built from the same data
    counts = np.zeros((S, A, S))
    np.add.at(counts, (s, traj.action, s2), 1.0)
    rew = np.zeros((S, A))
    np.add.at(rew, (s, traj.action), traj.reward.astype(float))
    n_sa = counts.sum(-1)
    live = ~mdp.terminal
    assert np.all(n_sa[live] > 0)
    P_hat = mdp.P.copy()
    P_hat[live] = counts[live] / n_sa[live][..., None]
    R_hat = np.where(n_sa > 0, rew / np.maximum(n_sa, 1), 0.0)
    d0_hat = np.bincount(s[traj.starts], minlength=S) / traj.n_episodes
    emp = TabularMDP(P_hat, R_hat, d0_hat, mdp.terminal, mdp.gamma)
    assert res.value == pytest.approx(emp.policy_value(pi_e), abs=1e-6)
    states = np.eye(S, dtype=np.float32)[live]
    np.testing.assert_allclose(res.q_fn(states), emp.policy_q(pi_e)[live], atol=1e-6)
    # and near the true value with enough data
    assert res.value == pytest.approx(mdp.policy_value(pi_e), abs=0.05)
    # a target policy given as a function of the observation gives the same answer
    as_fn = fqe(
        traj, lambda obs: pi_e[obs.argmax(1)], mdp.gamma, iterations=500, cross_fit=1,
        value_range=wide,
    )  # fmt: skip
    assert as_fn.value == pytest.approx(res.value, abs=1e-12)
    # an unseen state gets the count-weighted mean of the logged cells
    q_live = emp.policy_q(pi_e)[live]
    mean = (n_sa[live] * q_live).sum() / n_sa[live].sum()
    np.testing.assert_allclose(res.q_fn(np.full((1, S), 7.0, np.float32)), mean, atol=1e-6)
    zero = fqe(traj, pi_e[s], mdp.gamma, "tabular", 500, FQEConfig(unseen="zero"), 1, wide)
    assert np.all(zero.q_fn(np.full((1, S), 7.0, np.float32)) == 0.0)


def test_unseen_actions_take_the_deviation_advantage_learnt_across_states() -> None:
    """Clinicians' usual action pays +1 and their rare deviations -1: with a few visits per state
    most deviations are never logged in a state. Filling them with the state's logged value
    (``state_mean``) is optimistic; the pooled deviation advantage (``advantage``, the default)
    learns from the deviations that were logged elsewhere that they cost about 2."""
    err: dict[str, list[float]] = {"advantage": [], "state_mean": []}
    for seed in range(6):
        base = random_mdp(60, 4, seed, gamma=0.9, p_terminate=0.2)
        R = np.where(np.arange(4)[None, :] == 0, 1.0, -1.0) * (~base.terminal)[:, None]
        mdp = TabularMDP(base.P, R, base.d0, base.terminal, base.gamma)
        pi = np.tile([0.94, 0.02, 0.02, 0.02], (60, 1))
        traj = mdp.sample(pi, 150, seed=seed)
        truth = mdp.policy_value(pi)
        for rule in err:
            res = fqe(
                traj, pi[traj.meta["state"]], mdp.gamma, config=FQEConfig(unseen=rule),
                value_range=(-10.0, 10.0), seed=seed,
            )  # fmt: skip
            err[rule].append(res.value - truth)
    assert np.mean(err["state_mean"]) > 0.2  # optimistic
    assert np.mean(np.abs(err["advantage"])) < 0.5 * np.mean(np.abs(err["state_mean"]))
    assert abs(np.mean(err["advantage"])) < 0.1
    with pytest.raises(ConfigError, match="unseen rule"):
        fqe(traj, pi[traj.meta["state"]], mdp.gamma, config=FQEConfig(unseen="mean"))  # type: ignore[arg-type]


def test_fqe_mlp_close_to_exact_value() -> None:
    mdp = random_mdp(5, 2, 1, gamma=0.8, p_terminate=0.2)
    pi_b = uniform_policy(5, 2)
    pi_e = mix_policies(greedy_policy(mdp.value_iteration()[0]), pi_b, 0.2)
    traj = mdp.sample(pi_b, 1000, seed=1)
    cfg = FQEConfig(hidden=32, steps_per_iteration=20, lr=3e-3, seed=0)
    res = fqe(
        traj, pi_e[traj.meta["state"]], mdp.gamma, kind="mlp", iterations=30, config=cfg,
        cross_fit=1,
    )  # fmt: skip
    truth = mdp.policy_value(pi_e)
    assert abs(res.value - truth) < 0.1
    assert abs(res.value - truth) < 0.5 * abs(truth - mdp.policy_value(pi_b))


def test_bootstrap_ci_covers_truth_and_shrinks_with_n() -> None:
    mdp = random_mdp(6, 3, 5, gamma=0.9, p_terminate=0.25)
    pi_b, _ = _policies(mdp)
    truth = mdp.policy_value(pi_b)
    widths = {}
    covered = 0
    for rep in range(5):
        for n in (100, 400):
            traj = mdp.sample(pi_b, n, seed=100 + rep)
            (p,) = _at_logged(traj, pi_b)

            def est(t, rows, p=p):
                return wis(t, p[rows], p[rows], mdp.gamma)

            low, high = bootstrap_ci(traj, est, n_boot=100, seed=rep)
            widths.setdefault(n, []).append(high - low)
            covered += int(n == 100 and low <= truth <= high)
    assert covered >= 4
    ratio = np.mean(widths[400]) / np.mean(widths[100])
    assert 0.35 < ratio < 0.65  # ~ 1/sqrt(4)


def test_bootstrap_resamples_whole_patients_with_their_rows() -> None:
    mdp = random_mdp(6, 3, 5, gamma=0.9, p_terminate=0.25)
    traj = mdp.sample(uniform_policy(6, 3), 30, seed=0)
    seen = []

    def check(t: Trajectories, rows: np.ndarray) -> float:
        assert t.n_episodes == 30
        np.testing.assert_array_equal(t.obs, traj.obs[rows])
        np.testing.assert_array_equal(t.meta["state"], traj.meta["state"][rows])
        seen.append(len(np.unique(traj.patient[rows])))
        return float(t.returns(0.9).mean())

    low, high = bootstrap_ci(traj, check, n_boot=20, seed=0)
    assert low <= high
    assert max(seen) < 30  # sampled with replacement


def test_evaluate_policy_table(logged) -> None:
    mdp, traj, pi_b, pi_e = logged
    pe, pb = _at_logged(traj, pi_e, pi_b)
    q = fqe(traj, pe, mdp.gamma).q_fn(traj.obs)
    table = evaluate_policy(traj, pe, pb, mdp.gamma, q_hat=q, n_boot=30)
    assert list(table["estimator"]) == ["is", "wis", "pdis", "cwpdis", "dr", "wdr"]
    assert list(table.columns) == [
        "estimator", "value", "ess", "ci_low", "ci_high", "value_raw", "flags",
    ]  # fmt: skip
    row = table.set_index("estimator").loc["wdr"]
    assert row["value"] == pytest.approx(wdr(traj, pe, pb, mdp.gamma, q).value)
    assert np.all(table["ci_low"] <= table["ci_high"])
    only = evaluate_policy(traj, pe, pb, mdp.gamma, n_boot=0, q_model=None)
    assert list(only["estimator"]) == ["is", "wis", "pdis", "cwpdis"]
    assert only["ci_low"].isna().all()
    with pytest.raises(ConfigError, match="needs a model"):
        evaluate_policy(traj, pe, pb, mdp.gamma, estimators=["dr"], n_boot=0, q_model=None)
    with pytest.raises(ConfigError, match="unknown"):
        evaluate_policy(traj, pe, pb, mdp.gamma, estimators=["wsi"], n_boot=0)


def test_estimator_input_errors(logged) -> None:
    mdp, traj, pi_b, pi_e = logged
    pe, pb = _at_logged(traj, pi_e, pi_b)
    bad = pb.copy()
    bad[3, traj.action[3]] = 0.0
    with pytest.raises(DataError, match="probability 0"):
        cwpdis(traj, pe, bad, 0.9)
    with pytest.raises(DataError, match="logged step"):
        wis(traj, pe[:-1], pb, 0.9)
    with pytest.raises(ConfigError):
        pdis(traj, pe, pb, 1.2)
    with pytest.raises(ConfigError):
        fqe(traj, pe, 0.9, kind="kernel")  # type: ignore[arg-type]


def _planted_softmax_data(
    n_patients: int, seed: int
) -> tuple[Trajectories, np.ndarray, np.ndarray]:
    """Episodes of 5 steps, 3 Gaussian features, 4 actions from a masked softmax policy."""
    rng = np.random.default_rng(seed)
    W = np.array([[2.0, -1.0, 0.0, 0.5], [0.0, 1.5, -1.5, 0.0], [-1.0, 0.0, 1.0, 1.0]])
    N = 5 * n_patients
    x = rng.normal(size=(N, 3))
    mask = np.ones((N, 4), dtype=bool)
    mask[np.arange(N), rng.integers(0, 4, N)] = rng.random(N) < 0.5  # forbid one action, half
    p = softmax_policy(np.where(mask, x @ W, -np.inf))
    a = (p.cumsum(1) < rng.random(N)[:, None]).sum(1)
    step = np.tile(np.arange(5), n_patients)
    traj = Trajectories(
        obs=x,
        action=a,
        reward=np.zeros(N),
        done=np.zeros(N, bool),
        timeout=step == 4,
        patient=np.repeat(np.arange(n_patients), 5),
        time=step * 4.0,
        n_actions=4,
        mask=mask,
    )
    return traj, p, mask


@pytest.mark.parametrize(("kind", "tol"), [("logistic", 0.04), ("mlp", 0.08)])
def test_fit_behaviour_recovers_planted_softmax_and_respects_masks(kind: str, tol: float) -> None:
    traj, p_true, mask = _planted_softmax_data(800, seed=0)
    model = fit_behaviour(traj, kind=kind, seed=0)
    test, p_test, mask_test = _planted_softmax_data(200, seed=1)
    p = model.proba(test.obs, mask_test)
    tv = 0.5 * np.abs(p - p_test).sum(1).mean()
    assert tv < tol
    assert np.all(p[~mask_test] == 0.0)
    assert np.all(p[mask_test] >= 1e-3 - 1e-12)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert model.report["n_calib"] > 0 and model.report["nll"] <= model.report["nll_raw"] + 1e-9


def test_fit_behaviour_temperature_fixes_an_underconfident_model() -> None:
    traj, _, _ = _planted_softmax_data(800, seed=2)
    model = fit_behaviour(traj, kind="logistic", config=BehaviourConfig(l2=0.3))
    assert model.temperature < 0.9  # shrunk logits get sharpened
    assert model.report["nll"] < model.report["nll_raw"]
    assert model.report["ece"] < model.report["ece_raw"]
    uncal = fit_behaviour(traj, kind="logistic", calibrate=False)
    assert uncal.temperature == 1.0 and uncal.report["n_calib"] == 0


def test_fit_behaviour_tabular_recovers_tabular_policy() -> None:
    mdp = random_mdp(6, 3, 0, gamma=0.9, p_terminate=0.2)
    pi_b = softmax_policy(np.random.default_rng(1).normal(size=(6, 3)))
    traj = mdp.sample(pi_b, 4000, seed=2)
    model = fit_behaviour(traj, kind="tabular")
    live = np.eye(6, dtype=np.float32)[~mdp.terminal]
    tv = 0.5 * np.abs(model.proba(live) - pi_b[~mdp.terminal]).sum(1)
    assert tv.max() < 0.05
    with pytest.raises(ConfigError):
        fit_behaviour(traj, kind="knn")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pipeline_with_estimated_behaviour_near_exact_value(seed: int) -> None:
    """The notes' measured check on our own MDPs: estimated pi_b, a target between behaviour and
    optimal (ESS ~ 40 % of n), FQE + WDR close to the exact value and ranking it correctly."""
    mdp = random_mdp(8, 3, seed, gamma=0.9, p_terminate=0.15)
    soft = softmax_policy(np.random.default_rng(seed).normal(size=(8, 3)))
    pi_b = mix_policies(soft, uniform_policy(8, 3), 0.3)
    pi_e = mix_policies(pi_b, greedy_policy(mdp.value_iteration()[0]), 0.3)
    truth, base = mdp.policy_value(pi_e), mdp.policy_value(pi_b)
    traj = mdp.sample(pi_b, 1500, seed=seed)
    pb_hat = fit_behaviour(traj, kind="tabular").proba(traj.obs)
    (pe,) = _at_logged(traj, pi_e)
    model = fqe(traj, pe, mdp.gamma)
    table = evaluate_policy(
        traj, pe, pb_hat, mdp.gamma, q_hat=model.q_fn(traj.obs),
        estimators=["wis", "cwpdis", "wdr"], n_boot=50,
    ).set_index("estimator")  # fmt: skip
    assert abs(model.value - truth) < 0.03
    assert abs(table.loc["wdr", "value"] - truth) < 0.03
    assert table.loc["wdr", "ci_low"] <= truth <= table.loc["wdr", "ci_high"]
    assert abs(table.loc["cwpdis", "value"] - truth) < 0.1
    assert np.all(table["value"] > base + 0.5 * (truth - base))  # the improvement is seen
    assert 0.2 * traj.n_episodes < table.loc["wis", "ess"] < 0.8 * traj.n_episodes


def test_fitting_is_seeded_and_leaves_the_global_rng_alone() -> None:
    traj, _, _ = _planted_softmax_data(100, seed=3)
    cfg = BehaviourConfig(epochs=3)
    state = torch.get_rng_state()
    a = fit_behaviour(traj, kind="mlp", seed=4, config=cfg).proba(traj.obs, traj.mask)
    b = fit_behaviour(traj, kind="mlp", seed=4, config=cfg).proba(traj.obs, traj.mask)
    c = fit_behaviour(traj, kind="mlp", seed=5, config=cfg).proba(traj.obs, traj.mask)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_cross_fitted_q_of_a_patient_ignores_that_patients_own_data() -> None:
    """Cross-fitting: each row's q_hat comes from a model fitted on the other folds, so changing
    one patient's rewards leaves that patient's q_hat unchanged (and changes it in sample)."""
    mdp = random_mdp(6, 3, 5, gamma=0.9, p_terminate=0.2)
    traj = mdp.sample(uniform_policy(6, 3), 300, seed=5)
    pe = np.full((len(traj), 3), 1 / 3)
    rows = traj.patient == traj.patients[0]
    reward = traj.reward.copy()
    reward[rows] += 5.0
    changed = Trajectories(**{**traj.__dict__, "reward": reward})
    for k, same in ((5, True), (1, False)):
        a = fqe(traj, pe, 0.9, cross_fit=k, value_range=(-50, 50)).q_hat
        b = fqe(changed, pe, 0.9, cross_fit=k, value_range=(-50, 50)).q_hat
        assert np.allclose(a[rows], b[rows]) == same, k


def test_estimates_are_clipped_to_the_return_range_and_flagged() -> None:
    """A target far from the data: IS reads outside the return range; the table clips it, keeps
    the raw value, flags it, and format_estimate never prints it bare."""
    mdp = random_mdp(6, 3, 2, gamma=0.9, p_terminate=0.2)
    pi_b = mix_policies(greedy_policy(np.eye(6, 3)), uniform_policy(6, 3), 0.1)
    pi_e = mix_policies(greedy_policy(-np.eye(6, 3)), uniform_policy(6, 3), 0.01)
    traj = mdp.sample(pi_b, 200, seed=3)
    pe, pb = _at_logged(traj, pi_e, pi_b)
    table = evaluate_policy(
        traj, pe, pb, mdp.gamma, n_boot=20, value_range=(-1.0, 1.0), support_threshold=0.05
    )
    lo, hi = table.attrs["value_range"]
    assert table["value"].between(lo, hi).all() and table["ci_high"].le(hi).all()
    out = table[~table["value_raw"].between(lo, hi)]
    assert len(out) > 0 and out["flags"].str.contains("out_of_range").all()
    assert all("outside the return range" in format_estimate(r) for _, r in out.iterrows())
    assert table.set_index("estimator").loc["is", "flags"].count("low_ess") == 1
    assert table.attrs["positivity"]["low_support_mass"] > 0.2
    assert "positivity" in describe(table)


def test_tabular_behaviour_is_never_sharpened_and_keeps_the_ess() -> None:
    """Counts are not sharpened by the held-out temperature, and the fitted clinician policy
    evaluated against the true one keeps most of its effective sample size."""
    mdp = random_mdp(30, 4, 7, gamma=0.95, p_terminate=0.1)
    pi_b = softmax_policy(2.0 * np.random.default_rng(7).normal(size=(30, 4)))
    traj = mdp.sample(pi_b, 500, seed=7)
    model = fit_behaviour(traj, kind="tabular")
    assert model.temperature >= 1.0
    assert model.report["prior_strength"] in BehaviourConfig().prior_strengths
    (pb,) = _at_logged(traj, pi_b)
    table = evaluate_policy(traj, pb, model.proba(traj.obs), mdp.gamma, n_boot=0)
    assert table["ess"].iloc[0] > 0.5 * traj.n_episodes


def test_finite_horizon_fqe_is_backward_induction_on_the_empirical_mdp() -> None:
    """Under a step cap the value depends on the steps left: the per-step tabular FQE equals
    backward induction on the maximum-likelihood MDP of the same data (the rows cut by the cap
    inform only the last step) and recovers the exact capped value; a single stationary table
    (the cut rows taken as terminal) gives other action values."""
    H, S, A = 6, 4, 2
    mdp = random_mdp(S, A, 5, gamma=1.0, horizon=H, p_terminate=0.1)
    pi_b = uniform_policy(S, A)
    pi_e = mix_policies(greedy_policy(mdp.value_iteration()[0]), pi_b, 0.3)
    traj = mdp.sample(pi_b, 4000, seed=1)
    assert detect_horizon(traj) == H
    s, s2, t = traj.meta["state"], traj.meta["next_state"], traj.step_index
    wide = (-100.0, 100.0)
    res = fqe(traj, pi_e[s], 1.0, "tabular", cross_fit=1, value_range=wide, horizon="auto")
    assert res.horizon == H
    last = np.zeros(len(traj), bool)
    last[traj.ends - 1] = True
    usable = ~last | traj.done

    def empirical(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = np.zeros((S, A, S))
        np.add.at(n, (s[rows], traj.action[rows], s2[rows]), 1.0)
        r = np.zeros((S, A))
        np.add.at(r, (s[rows], traj.action[rows]), traj.reward[rows].astype(float))
        n_sa = n.sum(-1)
        assert np.all(n_sa[~mdp.terminal] > 0)
        return n / np.maximum(n_sa, 1)[..., None], r / np.maximum(n_sa, 1)

    P_use, R_use = empirical(usable)
    _, R_all = empirical(np.ones(len(traj), bool))
    Q = [None] * H
    Q[H - 1] = R_all
    for k in range(H - 2, -1, -1):
        V = (pi_e * Q[k + 1]).sum(1)
        V[mdp.terminal] = 0.0
        Q[k] = R_use + P_use @ V
    q_rows = np.stack([Q[k][i] for k, i in zip(t, s, strict=True)])
    np.testing.assert_allclose(res.q_hat, q_rows, atol=1e-9)
    d0 = np.bincount(s[traj.starts], minlength=S) / traj.n_episodes
    assert res.value == pytest.approx(float(d0 @ (pi_e * Q[0]).sum(1)), abs=1e-9)
    truth = mdp.policy_value(pi_e)
    assert res.value == pytest.approx(truth, abs=0.04)
    stationary = fqe(traj, pi_e[s], 1.0, "tabular", cross_fit=1, value_range=wide, horizon=None)
    assert stationary.horizon is None
    # a single table cannot tell the last step (mean reward) from the first (H steps to go)
    assert np.abs(stationary.q_hat - q_rows).max() > 0.3
    # the full-data model reads the table of the step asked for
    obs0 = traj.obs[traj.starts[:3]]
    np.testing.assert_allclose(res.q_fn(obs0, 0), Q[0][s[traj.starts[:3]]], atol=1e-9)
    np.testing.assert_allclose(res.q_fn(obs0, H - 1), R_all[s[traj.starts[:3]]], atol=1e-9)


def test_detect_horizon_needs_every_cut_episode_at_the_longest_length() -> None:
    mdp = random_mdp(4, 2, 0, gamma=0.9, p_terminate=0.3)
    free = mdp.sample(uniform_policy(4, 2), 30, seed=0)
    assert detect_horizon(free) is None or detect_horizon(free) == (free.ends - free.starts).max()
    capped = random_mdp(4, 2, 0, gamma=0.9, horizon=3, p_terminate=0.05)
    traj = capped.sample(uniform_policy(4, 2), 50, seed=0)
    assert detect_horizon(traj) == 3
    odd = traj.subset(np.ones(len(traj), bool))
    timeout = odd.timeout.copy()
    lengths = odd.ends - odd.starts
    short = int(np.flatnonzero((lengths < 3) & odd.done[odd.ends - 1])[0])
    timeout[odd.ends[short] - 1] = True
    done = odd.done.copy()
    done[odd.ends[short] - 1] = False
    from dataclasses import replace

    mixed = replace(odd, timeout=timeout, done=done)
    assert detect_horizon(mixed) is None  # a cut at two different lengths: no single cap


def test_evaluate_policy_table_equals_the_estimators_on_the_full_arrays() -> None:
    """The table reads only the logged actions' columns; values and bootstrap intervals equal
    those of the estimators called on the full (N, A) arrays."""
    mdp = random_mdp(6, 3, 2, gamma=0.9, p_terminate=0.15)
    pi_b = softmax_policy(np.random.default_rng(0).normal(size=(6, 3)))
    traj = mdp.sample(pi_b, 120, seed=4)
    s = traj.meta["state"]
    pe, pb = mix_policies(pi_b, uniform_policy(6, 3), 0.5)[s], pi_b[s]
    q = np.random.default_rng(1).normal(size=(len(traj), 3))
    table = evaluate_policy(traj, pe, pb, 0.9, q_hat=q, n_boot=30, seed=7).set_index("estimator")
    for name, fn in (("wis", wis), ("cwpdis", cwpdis), ("is", is_), ("pdis", pdis)):
        assert table.loc[name, "value_raw"] == pytest.approx(fn(traj, pe, pb, 0.9).value, abs=1e-12)
    for name, fn in (("dr", dr), ("wdr", wdr)):
        full = fn(traj, pe, pb, 0.9, q_hat=q).value
        assert table.loc[name, "value_raw"] == pytest.approx(full, abs=1e-12)
        lo, hi = bootstrap_ci(
            traj, lambda t, rows, fn=fn: fn(t, pe[rows], pb[rows], 0.9, q_hat=q[rows]), 30, seed=7
        )  # fmt: skip
        assert (table.loc[name, "ci_low"], table.loc[name, "ci_high"]) == pytest.approx((lo, hi))


def test_bootstrap_refit_carries_the_model_variance_into_the_fqe_interval() -> None:
    """Planted truth over independent data sets: with the FQE held fixed, the bootstrap of its
    estimate resamples only the initial states and its interval is far narrower than the
    estimate's spread; refitted on every resample it matches the spread."""
    mdp = random_mdp(4, 2, 3, gamma=0.8, p_terminate=0.2)
    pi_b = softmax_policy(np.random.default_rng(0).normal(size=(4, 2)))
    pi_e = mix_policies(pi_b, uniform_policy(4, 2), 0.5)
    est: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for seed in range(30):
        traj = mdp.sample(pi_b, 40, seed=200 + seed)
        s = traj.meta["state"]
        for refit in (False, True):
            t = evaluate_policy(
                traj, pi_e[s], pi_b[s], 0.8, estimators=["fqe"], n_boot=40, seed=seed,
                value_range=(-10.0, 10.0), bootstrap_refit=refit,
            ).iloc[0]  # fmt: skip
            est[refit].append((t["value"], (t["ci_high"] - t["ci_low"]) / (2 * 1.96)))
    ratio = {}
    for refit, rows in est.items():
        v = np.array(rows)
        ratio[refit] = v[:, 0].std(ddof=1) / v[:, 1].mean()
    assert np.array(est[False])[:, 0] == pytest.approx(np.array(est[True])[:, 0])  # same point
    assert ratio[False] > 1.8
    assert 0.6 < ratio[True] < 1.5
    # a model given by the user (q_hat) has nothing to refit: the option changes nothing
    traj = mdp.sample(pi_b, 40, seed=0)
    s = traj.meta["state"]
    q = np.zeros((len(traj), 2))
    a, b = (
        evaluate_policy(traj, pi_e[s], pi_b[s], 0.8, q_hat=q, estimators=["dr"], n_boot=20,
                        bootstrap_refit=r).iloc[0]
        for r in (False, True)
    )  # fmt: skip
    assert (a["ci_low"], a["ci_high"]) == (b["ci_low"], b["ci_high"])


@pytest.mark.parametrize("horizon", [None, 5])
def test_tabular_bootstrap_refit_by_episode_weights_equals_the_refit_on_copies(horizon) -> None:
    """The tabular refit counts each episode's copies as row weights; the same fit on the
    materialised resample (the copies as separate patients, each in its episode's fold) gives
    the same action values."""
    from clinfuse.rl.ope import _bootstrap_refit, _refit_q, _resample, patient_folds

    mdp = random_mdp(6, 3, 3, gamma=0.9, p_terminate=0.1, horizon=horizon)
    pi_b = softmax_policy(2 * np.random.default_rng(0).normal(size=(6, 3)))
    traj = mdp.sample(pi_b, 50, seed=1)
    pe = mix_policies(pi_b, uniform_policy(6, 3), 0.5)[traj.meta["state"]]
    model = fqe(traj, pe, 0.9, "tabular", 200, None, 5, (-10.0, 10.0), 3)
    assert model.horizon == horizon
    fast = _bootstrap_refit(traj, pe, model, "tabular", 200, None, 0.9, 3)
    ep_fold = patient_folds(traj, 5, 3)[traj.starts]
    lengths = traj.ends - traj.starts
    rng = np.random.default_rng(0)
    draws: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for _ in range(5):
        eps = rng.integers(0, traj.n_episodes, traj.n_episodes)
        boot, rows = _resample(traj, eps)
        folds = np.repeat(ep_fold[eps], lengths[eps])
        q = _refit_q(boot, pe[rows], folds, model, "tabular", 200, FQEConfig(), 0.9)
        q1, v1 = fast(eps, rows)
        np.testing.assert_allclose(q1[:, 0], q[np.arange(len(boot)), boot.action], atol=1e-12)
        np.testing.assert_allclose(v1, (pe[rows] * q).sum(1), atol=1e-12)
        draws.append((eps, rows, q1[:, 0], v1))
    # the batched refit (every resample at once, as the bootstrap runs it) gives the same values
    qb, vb = fast.batch([d[0] for d in draws])  # type: ignore[attr-defined]
    for k, (_, rows, q1, v1) in enumerate(draws):
        np.testing.assert_allclose(qb[k, rows], q1, atol=1e-12)
        np.testing.assert_allclose(vb[k, rows], v1, atol=1e-12)
