"""Exact tabular MDPs: closed forms, value iteration, Monte Carlo agreement, roll-out structure."""

from __future__ import annotations

import numpy as np
import pytest

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.rl.envs.tabular import (
    TabularMDP,
    greedy_policy,
    mix_policies,
    random_mdp,
    softmax_policy,
    uniform_policy,
)


def _chain(p_stay: float, gamma: float, horizon: int | None = None) -> TabularMDP:
    """State 0 pays 1 per step, stays with ``p_stay`` else enters terminal state 1."""
    P = np.zeros((2, 1, 2))
    P[0, 0] = [p_stay, 1 - p_stay]
    P[1, 0, 1] = 1.0
    return TabularMDP(P, [[1.0], [0.0]], [1.0, 0.0], [False, True], gamma, horizon)


@pytest.mark.parametrize(("p", "gamma"), [(0.5, 0.9), (0.8, 1.0), (0.0, 0.3)])
def test_policy_value_closed_form_geometric_chain(p: float, gamma: float) -> None:
    # V = sum_t (gamma p)^t = 1 / (1 - gamma p); with horizon H: (1 - (gamma p)^H) / (1 - gamma p)
    pi = np.ones((2, 1))
    assert _chain(p, gamma).policy_value(pi) == pytest.approx(1 / (1 - gamma * p), rel=1e-12)
    H = 4
    exact_h = (1 - (gamma * p) ** H) / (1 - gamma * p)
    assert _chain(p, gamma, H).policy_value(pi) == pytest.approx(exact_h, rel=1e-12)
    assert _chain(p, gamma).policy_v(pi)[1] == 0.0  # terminal state


def test_value_iteration_agrees_with_policy_value_of_its_greedy_policy() -> None:
    for seed in range(3):
        mdp = random_mdp(8, 3, seed, n_terminal=2, gamma=0.9)
        Q, pi = mdp.value_iteration(tol=1e-12)
        # optimal value of the greedy policy equals max_a Q*, and Q^{pi*} = Q*
        assert mdp.policy_value(pi) == pytest.approx(float(mdp.d0 @ Q.max(1)), abs=1e-9)
        np.testing.assert_allclose(mdp.policy_q(pi), Q, atol=1e-9)
        # Bellman optimality with terminal states worth 0
        live = (~mdp.terminal)[None, None, :]
        np.testing.assert_allclose(Q, mdp.R + mdp.gamma * (mdp.P * live) @ Q.max(1), atol=1e-9)
        # no stochastic policy does better
        rng = np.random.default_rng(seed)
        for _ in range(20):
            other = rng.dirichlet(np.ones(3), size=8)
            assert mdp.policy_value(other) <= mdp.policy_value(pi) + 1e-9


def test_finite_horizon_limits() -> None:
    mdp = random_mdp(6, 3, 4, gamma=0.9)
    pi = softmax_policy(np.random.default_rng(0).normal(size=(6, 3)))
    one = TabularMDP(mdp.P, mdp.R, mdp.d0, mdp.terminal, mdp.gamma, horizon=1)
    assert one.policy_value(pi) == pytest.approx(float(mdp.d0 @ (pi * mdp.R).sum(1)), abs=1e-12)
    long = TabularMDP(mdp.P, mdp.R, mdp.d0, mdp.terminal, mdp.gamma, horizon=600)
    assert long.policy_value(pi) == pytest.approx(mdp.policy_value(pi), abs=1e-12)
    Q_long, _ = long.value_iteration()
    Q_inf, _ = mdp.value_iteration()
    np.testing.assert_allclose(Q_long, Q_inf, atol=1e-9)
    # the first-step optimal value bounds every stationary policy with the same horizon
    h3 = TabularMDP(mdp.P, mdp.R, mdp.d0, mdp.terminal, mdp.gamma, horizon=3)
    best = float(h3.d0 @ h3.value_iteration()[0].max(1))
    rng = np.random.default_rng(1)
    assert max(h3.policy_value(rng.dirichlet(np.ones(3), size=6)) for _ in range(20)) <= best


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gamma": 0.9},
        {"gamma": 1.0, "horizon": 5},
        {"gamma": 0.95, "transition_rewards": True},
        {"gamma": 1.0, "p_terminate": 0.3},
    ],
)
def test_policy_value_agrees_with_monte_carlo(kwargs: dict) -> None:
    mdp = random_mdp(6, 3, 7, **kwargs)
    pi = np.random.default_rng(2).dirichlet(np.ones(3), size=6)
    traj = mdp.sample(pi, 20_000, seed=3)
    G = traj.returns(mdp.gamma)
    se = G.std(ddof=1) / np.sqrt(len(G))
    assert abs(G.mean() - mdp.policy_value(pi)) < 4 * se


def test_sampled_transitions_match_P() -> None:
    mdp = random_mdp(4, 2, 5, gamma=0.9, concentration=2.0)
    pi = uniform_policy(4, 2)
    traj = mdp.sample(pi, 20_000, seed=0)
    s, s2, a = traj.meta["state"], traj.meta["next_state"], traj.action
    counts = np.zeros((4, 2, 4))
    np.add.at(counts, (s, a, s2), 1.0)
    n_sa = counts.sum(-1, keepdims=True)
    live = ~mdp.terminal
    freq = counts[live] / n_sa[live]
    assert np.abs(freq - mdp.P[live]).max() < 4 * np.sqrt(0.25 / n_sa[live].min())
    assert n_sa[mdp.terminal].sum() == 0  # never act in a terminal state


def test_sample_structure_and_rewards() -> None:
    mdp = random_mdp(6, 3, 1, gamma=1.0, horizon=4, transition_rewards=True, p_terminate=0.3)
    pi = softmax_policy(np.random.default_rng(0).normal(size=(6, 3)))
    traj = mdp.sample(pi, 300, seed=9)
    s, s2 = traj.meta["state"], traj.meta["next_state"]
    assert traj.n_episodes == 300
    np.testing.assert_array_equal(traj.patients, np.arange(300))
    np.testing.assert_array_equal(traj.time, traj.step_index.astype(float))
    np.testing.assert_array_equal(traj.obs.argmax(1), s)  # one-hot of the true state
    np.testing.assert_array_equal(traj.done, mdp.terminal[s2])
    lengths = traj.ends - traj.starts
    assert lengths.max() <= 4
    # a timeout only where the horizon cut an episode that did not terminate
    np.testing.assert_array_equal(traj.timeout[traj.ends - 1], ~traj.done[traj.ends - 1])
    assert np.all(lengths[traj.timeout[traj.ends - 1]] == 4)
    assert traj.timeout.any() and traj.done.any()
    np.testing.assert_allclose(traj.reward, mdp.R3[s, traj.action, s2], rtol=1e-6)
    # next_state of a step is the state of the following step inside an episode
    inner = np.setdiff1d(np.arange(len(traj)), traj.ends - 1)
    np.testing.assert_array_equal(s2[inner], s[inner + 1])
    assert traj.mask is None
    np.testing.assert_allclose(traj.meta["behaviour_proba"], pi[s, traj.action])


def test_sample_observation_kinds_and_seeding() -> None:
    mdp = random_mdp(5, 2, 0)
    pi = uniform_policy(5, 2)
    a = mdp.sample(pi, 50, seed=4, obs="index")
    b = mdp.sample(pi, 50, seed=4, obs=lambda ids: np.stack([ids, ids**2], 1))
    c = mdp.sample(pi, 50, seed=5, obs="index")
    np.testing.assert_array_equal(a.obs[:, 0], a.meta["state"])
    np.testing.assert_array_equal(b.obs[:, 1], b.meta["state"] ** 2)
    np.testing.assert_array_equal(a.action, b.action)  # same seed, same episodes
    assert len(a) != len(c) or not np.array_equal(a.action, c.action)
    with pytest.raises(ConfigError):
        mdp.sample(pi, 5, obs="pixels")  # type: ignore[arg-type]


def test_policy_helpers() -> None:
    q = np.array([[1.0, 3.0, 3.0], [0.0, -1.0, 2.0]])
    np.testing.assert_array_equal(greedy_policy(q), [[0, 1, 0], [0, 0, 1]])
    sm = softmax_policy(q, temperature=0.5)
    np.testing.assert_allclose(sm[0], np.exp(2 * q[0]) / np.exp(2 * q[0]).sum())
    mixed = mix_policies(greedy_policy(q), uniform_policy(2, 3), 0.3)
    np.testing.assert_allclose(mixed[1], [0.1, 0.1, 0.8])


def test_validation_errors() -> None:
    mdp = random_mdp(4, 2, 0)
    with pytest.raises(DataError, match="does not sum to 1"):
        TabularMDP(mdp.P * 0.9, mdp.R, mdp.d0, mdp.terminal)
    with pytest.raises(DataError, match="R does not match"):
        TabularMDP(mdp.P, mdp.R[:, :1], mdp.d0, mdp.terminal)
    with pytest.raises(DataError, match="terminal state"):
        TabularMDP(mdp.P, mdp.R, np.eye(4)[3], mdp.terminal)
    R = mdp.R.copy()
    R[3] = 1.0
    with pytest.raises(DataError, match="rewards must be zero"):
        TabularMDP(mdp.P, R, mdp.d0, mdp.terminal)
    with pytest.raises(ConfigError):
        TabularMDP(mdp.P, mdp.R, mdp.d0, mdp.terminal, gamma=1.5)
    with pytest.raises(DataError, match="sum to 1"):
        mdp.policy_value(np.full((4, 2), 0.7))
    with pytest.raises(DataError, match=r"\(S, A\)"):
        mdp.policy_value(np.full((4, 3), 1 / 3))
    # gamma = 1, no horizon, a policy that never terminates: no finite value
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = 1.0  # action 0 loops forever
    P[0, 1, 1] = 1.0
    P[1, :, 1] = 1.0
    loop = TabularMDP(P, [[1.0, 0.0], [0.0, 0.0]], [1.0, 0.0], [False, True], gamma=1.0)
    with pytest.raises(DataError, match="not finite"):
        loop.policy_value(np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert loop.policy_value(np.array([[0.5, 0.5], [1.0, 0.0]])) == pytest.approx(1.0)


def test_from_arrays_repairs_terminal_rows_and_keeps_values(caplog) -> None:
    """A published MDP with rewards in terminal rows, an empty terminal row of P and an empty
    terminal policy row loads with the two repairs logged and the same values as the clean one."""
    from clinfuse.rl.envs.tabular import TabularMDP

    clean = random_mdp(6, 3, 4, n_terminal=2, gamma=0.9, p_terminate=0.2)
    P, R = clean.P.copy(), clean.R.copy()
    R[clean.terminal] = 7.0  # e.g. the survival reward stored on the terminal state
    P[np.nonzero(clean.terminal)[0][0]] = 0.0  # an empty terminal row
    with pytest.raises(DataError, match="fix_terminal=True"):
        TabularMDP(P, R, clean.d0, clean.terminal, 0.9)
    with caplog.at_level("WARNING"):
        mdp = TabularMDP.from_arrays(P, R, clean.d0, clean.terminal, 0.9)
    assert "zeroed the rewards of 2 terminal states" in caplog.text
    assert "1 terminal rows of P absorbing" in caplog.text
    pi = np.random.default_rng(0).dirichlet(np.ones(3), size=6)
    pi[clean.terminal] = 0.0
    with pytest.raises(DataError, match="fix_policy"):
        mdp.policy_value(pi)
    fixed = mdp.fix_policy(pi)
    assert mdp.policy_value(fixed) == pytest.approx(clean.policy_value(fixed), abs=1e-12)
    with pytest.raises(DataError):
        TabularMDP.from_arrays(P, R, clean.d0, clean.terminal, 0.9, fix_terminal=False)
