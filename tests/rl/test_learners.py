"""Learners of ``clinfuse.rl.learners`` on tiny tabular MDPs with exact solutions.

Each MDP has one-hot states, a known transition tensor ``P (S, A, S)``, deterministic rewards
``R (S, A)`` and a constant probability ``P_END`` that an episode ends (a terminal, no bootstrap)
after each step. Logged episodes come from a known behaviour policy. The exact optimum of the
true MDP comes from value iteration; Q-learning on uniformly sampled logged transitions converges
to the exact fixed point of the Bellman optimality operator on those transitions
(:func:`td_fixed_point`: the empirical MDP, with each row's next-step mask), which the learned Q
is compared against.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch

from clinfuse.core.errors import ConfigError, DataError, UnknownNameError
from clinfuse.rl.data import Trajectories
from clinfuse.rl.learners import (
    LEARNERS,
    BCLearner,
    BCQLearner,
    QLearner,
    QNetwork,
    cql_term,
    make_learner,
    masked_logsumexp,
    next_state_value,
)

S, A = 4, 3
GAMMA = 0.8
P_END = 0.1
FAST = {"hidden": (32, 32), "gamma": GAMMA, "progress": False, "huber": False, "lr": 1e-3}
"""Config of the tabular runs: small nets, no progress bar, and the squared TD error, whose
fixed point is the exact Bellman one (Huber's is not once |TD error| > 1: it learns a value
between the mean and the median of the stochastic targets)."""
TABULAR = {**FAST, "steps": 1000, "target_every": 50}
PRECISE = {**TABULAR, "steps": 2000, "lr": 5e-4, "batch_size": 512}
"""Lower SGD noise, for the tests that compare Q itself with the exact values."""
Q_TOL = 0.25
"""Max |Q - Q_exact| after PRECISE training (Q is 3-5 here; the errors measured were 0.05-0.1)."""


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny networks run fastest, and bit-reproducibly, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------
# Tabular helpers: an MDP, exact solutions, logged episodes
# ------------------------------------------------------------------------------------------
def make_mdp(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``P (S, A, S)`` random transition rows; ``R (S, A)`` rewards in [0, 0.5] plus 1 on one
    planted action per state (clear action gaps)."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(S, 0.5), size=(S, A))
    R = rng.uniform(0.0, 0.5, (S, A))
    R[np.arange(S), rng.integers(0, A, S)] += 1.0
    return P, R


def value_iteration(P: np.ndarray, R: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    r"""Exact optimal :math:`Q(s,a) = R(s,a) + \gamma \sum_{s'} P(s'|s,a) \max_{a'} Q(s',a')`.

    ``P`` may be sub-stochastic: its missing mass is the probability that the episode ends.
    """
    q = np.zeros((S, A))
    while True:
        new = R + GAMMA * P @ q.max(1)
        if np.abs(new - q).max() < tol:
            return new
        q = new


def rollout(
    P: np.ndarray,
    R: np.ndarray,
    behaviour: np.ndarray,
    n_episodes: int,
    seed: int,
    forbid: np.ndarray | None = None,
) -> Trajectories:
    """Episodes from the start states 0..S-1 (uniform) under ``behaviour (S, A)``, simulated
    in parallel; every episode ends in a terminal state (``P_END`` per step). With ``forbid
    (S, A)``, each visit draws a mask forbidding action a in state s with that probability, and
    the behaviour policy renormalises over the allowed actions."""
    rng = np.random.default_rng(seed)
    state = rng.integers(0, S, n_episodes)
    alive = np.ones(n_episodes, bool)
    keys = ("s", "a", "r", "done", "ep", "t", "mask")
    rows: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    t = 0
    while alive.any():
        ep = np.nonzero(alive)[0]
        s = state[ep]
        mask = np.ones((len(ep), A), bool)
        if forbid is not None:
            mask = rng.random((len(ep), A)) >= forbid[s]
        cum = (behaviour[s] * mask).cumsum(1)
        cum /= cum[:, -1:]  # exactly 1 at the end: no rounding past the last action
        a = (rng.random(len(ep))[:, None] > cum).sum(1)
        done = rng.random(len(ep)) < P_END
        nxt = (rng.random(len(ep))[:, None] > P[s, a].cumsum(1)).sum(1)
        for k, v in zip(keys, (s, a, R[s, a], done, ep, np.full(len(ep), t), mask), strict=True):
            rows[k].append(v)
        state[ep] = np.minimum(nxt, S - 1)
        alive[ep[done]] = False
        t += 1
    s, a, r, done, ep, t_, mask = (np.concatenate(rows[k]) for k in keys)
    return Trajectories.from_unsorted(
        obs=np.eye(S, dtype=np.float32)[s],
        action=a,
        reward=r,
        done=done,
        timeout=np.zeros(len(s), bool),
        patient=ep,
        time=t_.astype(np.float64),
        n_actions=A,
        mask=None if forbid is None else mask,
    )


def td_fixed_point(traj: Trajectories, allowed: np.ndarray | None = None) -> np.ndarray:
    r"""Exact fixed point of Q-learning on uniformly sampled logged transitions (one-hot states):

    .. math::
        Q(s, a) = \operatorname{mean}_{i:\,(s_i, a_i) = (s, a)}
        \big[r_i + \gamma\, b_i \max_{a' \in M_i'} Q(s_i', a')\big]

    with :math:`M_i'` the logged next-step mask (and ``allowed (S, A)``, e.g. BCQ's support).
    Pairs never logged keep Q = 0.
    """
    t = traj.transitions()
    s, a, s2 = t["obs"].argmax(1), t["action"], t["next_obs"].argmax(1)
    next_mask = t["next_mask"] if allowed is None else t["next_mask"] & allowed[s2]
    count = np.zeros((S, A))
    np.add.at(count, (s, a), 1)
    q = np.zeros((S, A))
    while True:
        v = np.where(next_mask, q[s2], -np.inf).max(1)
        y = t["reward"] + GAMMA * np.where(t["bootstrap"] > 0, v, 0.0)
        new = np.zeros((S, A))
        np.add.at(new, (s, a), y)
        new /= np.maximum(count, 1)
        if np.abs(new - q).max() < 1e-12:
            return new
        q = new


ONE_HOT = np.eye(S, dtype=np.float32)
UNIFORM = np.full((S, A), 1.0 / A)


# ------------------------------------------------------------------------------------------
# Pure pieces of the losses: hand computations
# ------------------------------------------------------------------------------------------
def test_masked_logsumexp_and_cql_term_match_hand_computation() -> None:
    q = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    mask = torch.tensor([[True, False, True], [False, True, True]])
    lse = masked_logsumexp(q, mask)
    hand = [np.log(np.exp(1.0) + np.exp(3.0)), np.log(np.exp(-1.0) + np.exp(4.0))]
    np.testing.assert_allclose(lse.numpy(), hand, rtol=1e-6)
    np.testing.assert_allclose(masked_logsumexp(q).numpy(), np.log(np.exp(q.numpy()).sum(1)))
    # CQL term: mean over rows of (lse over allowed - Q of the logged action)
    action = torch.tensor([0, 2])
    expected = np.mean([hand[0] - 1.0, hand[1] - 4.0])
    assert cql_term(q, action, mask).item() == pytest.approx(expected, rel=1e-6)


def test_next_state_value_double_and_max_respect_the_mask() -> None:
    q_targ = torch.tensor([[1.0, 5.0, 2.0], [4.0, 0.0, 3.0]])
    q_online = torch.tensor([[0.0, 1.0, 3.0], [9.0, 1.0, 2.0]])
    # double DQN: the online arg-max (2 and 0) valued by the target network
    assert next_state_value(q_targ, q_online).tolist() == [2.0, 4.0]
    # plain DQN: the target network's own max
    assert next_state_value(q_targ).tolist() == [5.0, 4.0]
    # masks forbid the online favourite (row 0: action 2, row 1: action 0)
    mask = torch.tensor([[True, True, False], [False, True, True]])
    assert next_state_value(q_targ, q_online, mask).tolist() == [5.0, 3.0]
    assert next_state_value(q_targ, None, mask).tolist() == [5.0, 3.0]


def test_dueling_head_advantages_have_zero_mean_over_actions() -> None:
    net = QNetwork(obs_dim=5, n_actions=4, hidden=(16,), dueling=True)
    x = torch.randn(32, 5)
    q = net(x)
    value, adv = net.streams(x)
    assert adv.mean(1).abs().max() > 1e-3  # the raw advantage stream is not centred
    torch.testing.assert_close((q - value).mean(1), torch.zeros(32), atol=1e-6, rtol=0)
    torch.testing.assert_close(q - value, adv - adv.mean(1, keepdim=True))


# ------------------------------------------------------------------------------------------
# Q-learning recovers the exact optimum with full coverage
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_coverage() -> tuple[np.ndarray, np.ndarray, Trajectories]:
    P, R = make_mdp(seed=3)
    return P, R, rollout(P, R, UNIFORM, n_episodes=800, seed=1)


@pytest.mark.parametrize(
    "overrides",
    [
        {"dueling": True, "double": True, "target_update": "hard", "target_every": 50},
        {"dueling": False, "double": False, "target_update": "polyak", "tau": 0.05},
    ],
    ids=["d3qn-hard", "dqn-polyak"],
)
def test_q_learning_recovers_the_optimal_q_and_policy(full_coverage, overrides) -> None:
    P, R, traj = full_coverage
    q_star = value_iteration(P * (1 - P_END), R)  # the true MDP
    q_hat = td_fixed_point(traj)  # the TD fixed point of this data set
    gaps = np.sort(q_star, 1)[:, -1] - np.sort(q_star, 1)[:, -2]
    assert gaps.min() > 2 * Q_TOL, "test MDP too close to ties"

    learner = make_learner("dqn", S, A, **{**PRECISE, **overrides})
    history = learner.fit(traj)
    q = learner.q_values(ONE_HOT)
    assert np.abs(q - q_hat).max() < Q_TOL, (q, q_hat)
    np.testing.assert_array_equal(learner.greedy(ONE_HOT), q_star.argmax(1))
    assert set(history[-1]) >= {"step", "loss", "td", "cql", "mean_q"}
    assert history[-1]["step"] == PRECISE["steps"] and history[-1]["cql"] == 0.0


# ------------------------------------------------------------------------------------------
# CQL: conservatism on actions never logged
# ------------------------------------------------------------------------------------------
def test_cql_pushes_unlogged_actions_below_logged_ones() -> None:
    P, R = make_mdp(seed=3)
    R = R.copy()
    R[[0, 1], 2] = 3.0  # the never-logged action is by far the best in truth
    behaviour = UNIFORM.copy()
    behaviour[[0, 1]] = [0.5, 0.5, 0.0]  # ... and never taken in states 0 and 1
    traj = rollout(P, R, behaviour, n_episodes=800, seed=2)
    assert not np.any(traj.obs[:, :2].any(1) & (traj.action == 2))
    assert value_iteration(P * (1 - P_END), R)[[0, 1]].argmax(1).tolist() == [2, 2]

    cql = make_learner("cql", S, A, cql_alpha=5.0, **TABULAR)
    cql.fit(traj)
    dqn = make_learner("dqn", S, A, **TABULAR)
    dqn.fit(traj)

    q_cql, q_dqn = cql.q_values(ONE_HOT), dqn.q_values(ONE_HOT)
    for s in (0, 1):
        assert q_cql[s, 2] < q_cql[s, :2].min() - 2.0, q_cql[s]  # measured: about 7 below
        assert cql.greedy(ONE_HOT)[s] != 2
        # contrast: without the CQL term nothing pushes the unseen action down
        gap_cql = q_cql[s, 2] - q_cql[s, :2].max()
        gap_dqn = q_dqn[s, 2] - q_dqn[s, :2].max()
        assert gap_dqn > gap_cql + 2.0, (gap_dqn, gap_cql)


# ------------------------------------------------------------------------------------------
# Masks: never choose a forbidden action; targets respect them
# ------------------------------------------------------------------------------------------
def test_masked_learning_matches_the_masked_fixed_point() -> None:
    P, R = make_mdp(seed=5)
    R = R.copy()
    R[1, 0] = R[3, 2] = 5.0  # the best actions where they are allowed ...
    forbid = np.zeros((S, A))
    forbid[1, 0] = 0.5  # ... but (1, 0) is forbidden at half the visits
    forbid[3, 2] = 1.0  # ... and (3, 2) always
    traj = rollout(P, R, UNIFORM, n_episodes=800, seed=4, forbid=forbid)
    q_hat = td_fixed_point(traj)  # targets take the max over each row's next-step mask
    q_free = td_fixed_point(replace(traj, mask=None))  # what ignoring the masks would learn
    assert np.abs(q_free - q_hat).max() > 4 * Q_TOL, "the test cannot fail: masks never bind"

    learner = make_learner("dqn", S, A, **PRECISE)
    learner.fit(traj)
    allowed = forbid < 1.0
    q = learner.q_values(ONE_HOT, allowed)
    assert np.isneginf(q[~allowed]).all() and np.isfinite(q[allowed]).all()
    assert np.abs(q[allowed] - q_hat[allowed]).max() < Q_TOL, (q, q_hat)
    np.testing.assert_array_equal(
        learner.greedy(ONE_HOT, allowed), np.where(allowed, q_hat, -np.inf).argmax(1)
    )
    at_1 = np.array([[False, True, True]])  # a visit to state 1 where action 0 is forbidden
    assert learner.greedy(ONE_HOT[1:2], at_1)[0] == np.where(at_1[0], q_hat[1], -np.inf).argmax()


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_greedy_and_policies_never_select_masked_actions(name: str) -> None:
    rng = np.random.default_rng(0)
    n, d, k = 400, 6, 5
    obs = rng.normal(size=(n, d)).astype(np.float32)
    mask = rng.random((n, k)) < 0.4
    mask[np.arange(n), rng.integers(0, k, n)] = True  # at least one allowed action per row
    learner = make_learner(name, d, k, hidden=(16,), progress=False)
    unmasked = learner.greedy(obs)
    assert not mask[np.arange(n), unmasked].all(), "the test cannot fail: masks never bind"

    greedy = learner.greedy(obs, mask)
    assert mask[np.arange(n), greedy].all()
    # the actions a policy may take: the mask (BCQ: the mask and its support)
    allowed = learner.support(obs, mask) if isinstance(learner, BCQLearner) else mask
    assert allowed[np.arange(n), greedy].all() and not (allowed & ~mask).any()
    policies = {"default": learner.policy(obs, mask)}
    if isinstance(learner, QLearner):
        policies["softmax T=0.1"] = learner.policy(obs, mask, kind="softmax", temperature=0.1)
        policies["epsilon"] = learner.policy(obs, mask, kind="epsilon", epsilon=0.3)
    for key, probs in policies.items():
        assert probs.shape == (n, k), key
        assert np.all(probs[~allowed] == 0.0), key
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5, err_msg=key)
    if isinstance(learner, QLearner):
        eps = policies["epsilon"]
        np.testing.assert_allclose(eps[np.arange(n), greedy], 0.7 + 0.3 / allowed.sum(1), rtol=1e-5)


# ------------------------------------------------------------------------------------------
# Behaviour cloning and BCQ
# ------------------------------------------------------------------------------------------
PLANTED = np.array([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.34, 0.33, 0.33], [0.05, 0.15, 0.8]])


def tv_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(p - q).sum(1)


def test_bc_recovers_a_planted_stochastic_policy_and_calibrates_temperature() -> None:
    P, R = make_mdp(seed=7)
    train = rollout(P, R, PLANTED, n_episodes=1200, seed=5)
    bc = make_learner("bc", S, A, hidden=(32,), lr=2e-3, steps=600, batch_size=2048, progress=False)
    bc.fit(train)
    probs = bc.policy(ONE_HOT)
    count = np.zeros((S, A))
    np.add.at(count, (train.obs.argmax(1), train.action), 1)
    assert tv_distance(probs, count / count.sum(1, keepdims=True)).max() < 0.03  # fit error
    assert tv_distance(probs, PLANTED).max() < 0.04, probs  # + sampling error (~2,500/state)
    # temperature: held-out actions from the planted policy flattened by T0 = 2
    t0 = 2.0
    flat = PLANTED ** (1 / t0)
    flat /= flat.sum(1, keepdims=True)
    valid = rollout(P, R, flat, n_episodes=1200, seed=6)
    temperature = bc.calibrate(valid)
    assert temperature == pytest.approx(t0, abs=0.3)
    assert tv_distance(bc.policy(ONE_HOT), flat).max() < 0.05


def test_bcq_never_picks_actions_below_the_threshold() -> None:
    P, R = make_mdp(seed=1)
    R = R.copy()
    R[:, 2] = 2.0  # the rarely logged action is the best everywhere
    behaviour = np.tile([0.6, 0.35, 0.05], (S, 1))  # G(2|s)/max G = 0.08 < 0.3
    traj = rollout(P, R, behaviour, n_episodes=800, seed=8)
    bcq = make_learner("bcq", S, A, threshold=0.3, **TABULAR)
    bcq.fit(traj)
    g = bcq.behaviour_probs(ONE_HOT)
    ratio = g / g.max(1, keepdims=True)
    np.testing.assert_array_equal(bcq.support(ONE_HOT), ratio > 0.3)
    greedy = bcq.greedy(ONE_HOT)
    assert (ratio[np.arange(S), greedy] > 0.3).all() and (greedy != 2).all()
    # BCQ = Q-learning restricted to the supported actions {0, 1}: exact on the empirical MDP
    support = np.tile([True, True, False], (S, 1))
    q_bcq = td_fixed_point(traj, allowed=support)
    np.testing.assert_array_equal(greedy, np.where(support, q_bcq, -np.inf).argmax(1))
    assert np.abs(bcq.q_values(ONE_HOT)[support] - q_bcq[support]).max() < Q_TOL
    # contrast: unconstrained Q-learning on the same data does take the rare action
    dqn = make_learner("dqn", S, A, **TABULAR)
    dqn.fit(traj)
    assert (dqn.greedy(ONE_HOT) == 2).all()


# ------------------------------------------------------------------------------------------
# Training mechanics: every parameter moves, checkpoints round-trip, history and errors
# ------------------------------------------------------------------------------------------
def random_traj(n: int = 256, d: int = 5, k: int = 4, seed: int = 0, mask: bool = False):
    rng = np.random.default_rng(seed)
    done = np.zeros(n, bool)
    done[7::8] = True
    allowed = None
    action = rng.integers(0, k, n)
    if mask:
        allowed = rng.random((n, k)) < 0.6
        allowed[np.arange(n), action] = True
    return Trajectories(
        obs=rng.normal(size=(n, d)).astype(np.float32),
        action=action,
        reward=rng.normal(size=n).astype(np.float32),
        done=done,
        timeout=np.zeros(n, bool),
        patient=np.arange(n) // 8,
        time=np.tile(np.arange(8.0), n // 8),
        n_actions=k,
        mask=allowed,
    )


def trainable(learner) -> dict[str, torch.Tensor]:
    return {
        f"{key}.{name}": p.detach().clone()
        for key, module in learner._modules().items()
        for name, p in module.named_parameters()
    }


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_every_parameter_changes_after_one_step(name: str) -> None:
    learner = make_learner(name, 5, 4, hidden=(16, 16), lr=1e-2, progress=False)
    traj = random_traj(mask=True)
    before = trainable(learner)
    learner.fit(traj, steps=1)
    after = trainable(learner)
    for key, value in before.items():
        if key.startswith("target."):  # hard copy every 1000 steps: untouched after one
            assert torch.equal(value, after[key]), key
        else:
            assert not torch.equal(value, after[key]), f"{key} did not change"


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_checkpoint_round_trip_is_exact(name: str, tmp_path) -> None:
    traj = random_traj(mask=True)
    learner = make_learner(name, 5, 4, hidden=(16,), progress=False, batch_size=32)
    learner.fit(traj, steps=15)
    if isinstance(learner, BCLearner):
        learner.temperature = 1.7
    path = learner.save(tmp_path / "ckpt.pt")
    assert torch.load(path, weights_only=True)["step"] == 15

    loaded = type(learner).load(path)
    assert loaded.config == learner.config and loaded.step == 15
    obs, mask = traj.obs[:50], traj.mask[:50]
    np.testing.assert_array_equal(loaded.policy(obs, mask), learner.policy(obs, mask))
    # the sampler RNG and optimizer state came back too: training continues identically
    learner.fit(traj, steps=10)
    loaded.fit(traj, steps=10)
    for key, value in trainable(learner).items():
        assert torch.equal(value, trainable(loaded)[key]), key


def test_history_rows_and_callback_cadence() -> None:
    traj = random_traj()
    learner = make_learner("cql", 5, 4, hidden=(8,), progress=False, log_every=4, eval_every=5)
    calls: list[int] = []

    def callback(lrn, step: int) -> dict[str, float]:
        calls.append(step)
        return {"probe": float(step)}

    history = learner.fit(traj, callback, steps=12)
    assert calls == [5, 10]
    assert [row["step"] for row in history] == [4, 5, 8, 10, 12]
    assert [row.get("probe") for row in history] == [None, 5.0, None, 10.0, None]
    assert all(row["cql"] > 0 for row in history)  # log(4 actions) - Q gap, positive


def test_q_clip_bounds_the_learned_values() -> None:
    P, R = make_mdp(seed=3)
    traj = rollout(P, np.ones_like(R), UNIFORM, n_episodes=300, seed=9)  # Q* = 1/(1-0.72)
    learner = make_learner("dqn", S, A, **{**TABULAR, "lr": 2e-3, "steps": 1000}, q_clip=1.0)
    learner.fit(traj)
    q = learner.q_values(ONE_HOT)
    assert q.max() <= 1.02 and q.min() >= 0.9, q  # unclipped, Q = 3.57 everywhere


def test_bad_input_raises_clear_errors(tmp_path) -> None:
    learner = make_learner("dqn", 5, 4, hidden=(8,), progress=False)
    with pytest.raises(DataError, match="not a BCLearner checkpoint"):
        BCLearner.load(learner.save(tmp_path / "dqn.pt"))
    with pytest.raises(DataError, match="dimensions"):
        learner.fit(random_traj(d=6))
    with pytest.raises(DataError, match="obs_dim"):
        learner.q_values(np.zeros((3, 6), np.float32))
    with pytest.raises(DataError, match="forbids every action"):
        learner.greedy(np.zeros((2, 5), np.float32), np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool))
    with pytest.raises(ConfigError, match="unknown policy kind"):
        learner.policy(np.zeros((2, 5), np.float32), kind="boltzman")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="gamma"):
        make_learner("dqn", 5, 4, gamma=1.5)
    with pytest.raises(ConfigError, match="target_update"):
        make_learner("cql", 5, 4, target_update="soft")
    with pytest.raises(ConfigError, match="threshold"):
        make_learner("bcq", 5, 4, threshold=1.0)
    with pytest.raises(UnknownNameError, match="did you mean: cql"):
        make_learner("cq1", 5, 4)
    assert isinstance(make_learner("bcq", 5, 4), BCQLearner)
