r"""Exact tabular MDPs: policy values by linear solve or backward induction, value iteration,
and roll-outs into :class:`~clinfuse.rl.data.Trajectories`.

Conventions (shared by every function here and by the environments built on top):

- An episode starts in :math:`s_0 \sim d_0` (never a terminal state) and, at step :math:`t`,
  takes :math:`a_t \sim \pi(\cdot \mid s_t)`, receives :math:`r_t` and moves to
  :math:`s_{t+1} \sim P(\cdot \mid s_t, a_t)`.
- Entering a ``terminal`` state ends the episode (that step is logged with ``done=True``); the
  terminal state itself is never acted in, so its value is 0 and its rows of ``P``/``R`` are
  never used (they must still be valid distributions / zero).
- ``horizon=H`` caps an episode at ``H`` steps (the last step is logged with ``timeout=True``
  unless it entered a terminal state); ``horizon=None`` runs until a terminal state.
- The reward of a step is ``R3[s, a, s']`` when the transition rewards ``R3`` are given, else the
  expected reward ``R[s, a]`` (with ``R3`` given, ``R`` must equal
  :math:`\sum_{s'} P(s' \mid s, a)\,R_3(s, a, s')`; :meth:`TabularMDP.from_transition_rewards`
  computes it).

The value of a stochastic policy :math:`\pi` (an ``(S, A)`` row-stochastic array) is

.. math::
    J(\pi) = \mathbb{E}_{s_0 \sim d_0}\Big[\sum_{t=0}^{T-1} \gamma^t r_t\Big],

with :math:`T` the (random) episode length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.rl.data import Trajectories

__all__ = [
    "TabularMDP",
    "random_mdp",
    "softmax_policy",
    "uniform_policy",
    "greedy_policy",
    "mix_policies",
]

log = logging.getLogger(__name__)

ObsSpec = Literal["onehot", "index"] | Callable[[np.ndarray], np.ndarray]

_ATOL = 1e-8


def _check_policy(pi: np.ndarray, n_states: int, n_actions: int) -> np.ndarray:
    """Validate an ``(S, A)`` row-stochastic policy and return it as float64."""
    pi = np.asarray(pi, dtype=np.float64)
    if pi.shape != (n_states, n_actions):
        raise DataError(
            "a tabular policy must be an (S, A) array of action probabilities",
            expected=(n_states, n_actions),
            found=pi.shape,
        )
    if not np.all(np.isfinite(pi)) or np.any(pi < -_ATOL):
        raise DataError(
            "policy probabilities must be finite and non-negative",
            expected="pi[s, a] >= 0",
            found=f"min {np.nanmin(pi):.3g}",
        )
    sums = pi.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        s = int(np.argmax(np.abs(sums - 1.0)))
        raise DataError(
            f"policy row of state {s} does not sum to 1",
            expected="sum_a pi[s, a] = 1 for every state",
            found=float(sums[s]),
            fix="normalise: pi / pi.sum(axis=1, keepdims=True); empty rows of terminal states: "
            "mdp.fix_policy(pi)",
        )
    return np.clip(pi, 0.0, None)


@dataclass(frozen=True, eq=False)
class TabularMDP:
    r"""A finite MDP with known dynamics (see the module docstring for the conventions).

    Shape:
        P ``(S, A, S)``; R ``(S, A)``; d0 ``(S,)``; terminal ``(S,)`` bool; R3 ``(S, A, S)`` or
        None. Policies are ``(S, A)`` row-stochastic arrays.

    Example:
        >>> P = np.zeros((2, 1, 2)); P[:, 0, 1] = 1.0  # state 0 -> terminal state 1
        >>> mdp = TabularMDP(P, R=np.array([[2.0], [0.0]]), d0=np.array([1.0, 0.0]),
        ...                  terminal=np.array([False, True]), gamma=0.9)
        >>> mdp.policy_value(np.ones((2, 1)))
        2.0
    """

    P: np.ndarray
    """Transition probabilities ``P[s, a, s']``; every ``P[s, a]`` sums to 1."""
    R: np.ndarray
    """Expected reward of taking ``a`` in ``s``; zero in terminal states."""
    d0: np.ndarray
    """Initial-state distribution; zero on terminal states."""
    terminal: np.ndarray
    """Absorbing states: entering one ends the episode (value 0)."""
    gamma: float = 1.0
    """Discount factor in ``[0, 1]``; 1 needs a horizon or a policy that terminates surely."""
    horizon: int | None = None
    """Maximum number of steps of an episode; None runs until a terminal state."""
    R3: np.ndarray | None = None
    """Optional transition rewards ``R3[s, a, s']``, sampled by :meth:`sample` instead of ``R``."""

    def __post_init__(self) -> None:
        for name in ("P", "R", "d0"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        object.__setattr__(self, "terminal", np.asarray(self.terminal, dtype=bool))
        if self.R3 is not None:
            object.__setattr__(self, "R3", np.asarray(self.R3, dtype=np.float64))
        object.__setattr__(self, "gamma", float(self.gamma))
        self.validate()

    # -- structure -------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return int(self.P.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.P.shape[1])

    @classmethod
    def from_transition_rewards(
        cls,
        P: np.ndarray,
        R3: np.ndarray,
        d0: np.ndarray,
        terminal: np.ndarray,
        gamma: float = 1.0,
        horizon: int | None = None,
    ) -> TabularMDP:
        r"""An MDP whose rewards depend on the next state,
        :math:`R(s,a)=\sum_{s'}P(s'|s,a)R_3(s,a,s')`."""
        P = np.asarray(P, dtype=np.float64)
        R3 = np.asarray(R3, dtype=np.float64)
        if R3.shape != P.shape:
            raise DataError("R3 must have the shape of P", expected=P.shape, found=R3.shape)
        return cls(P, (P * R3).sum(-1), d0, terminal, gamma, horizon, R3)

    @classmethod
    def from_arrays(
        cls,
        P: np.ndarray,
        R: np.ndarray,
        d0: np.ndarray,
        terminal: np.ndarray,
        gamma: float = 1.0,
        horizon: int | None = None,
        *,
        R3: np.ndarray | None = None,
        fix_terminal: bool = True,
    ) -> TabularMDP:
        r"""An MDP from arrays as published (e.g. a model fitted to ICU data), with the two
        repairs such files usually need, each logged with the number of states it touched:

        - rewards in terminal rows (``R[terminal]``, ``R3[terminal]``) are set to 0: a terminal
          state is never acted in, so a reward there belongs on the transition into it;
        - terminal rows of ``P`` that are not distributions become absorbing.

        Policies published with such arrays often have empty rows for terminal states; fill
        them with :meth:`fix_policy`. With ``fix_terminal=False`` the arrays are validated as
        given (and bad ones raise :class:`DataError` saying what to fix).

        Example:
            >>> P = np.zeros((2, 1, 2)); P[0, 0, 1] = 1.0  # terminal row of P left empty
            >>> mdp = TabularMDP.from_arrays(P, np.array([[1.0], [5.0]]), [1.0, 0.0], [0, 1])
            >>> mdp.R.ravel().tolist(), mdp.P[1, 0].tolist()
            ([1.0, 0.0], [0.0, 1.0])
        """
        P = np.array(P, dtype=np.float64)
        R = np.array(R, dtype=np.float64)
        term = np.asarray(terminal, dtype=bool)
        R3 = None if R3 is None else np.array(R3, dtype=np.float64)
        if fix_terminal and P.ndim == 3 and term.shape == (P.shape[0],):
            bad_r = (R[term] != 0).any(axis=-1)
            if R3 is not None:
                bad_r |= (R3[term] != 0).any(axis=(-2, -1))
                R3[term] = 0.0
            R[term] = 0.0
            bad_p = ~np.isclose(P[term].sum(-1), 1.0, atol=1e-6).all(axis=-1)
            ids = np.nonzero(term)[0][bad_p]
            P[ids] = 0.0
            P[ids, :, ids] = 1.0
            if bad_r.any() or bad_p.any():
                log.warning(
                    "from_arrays: zeroed the rewards of %d terminal states and made %d terminal "
                    "rows of P absorbing",
                    int(bad_r.sum()),
                    int(bad_p.sum()),
                )
        if R3 is not None:
            mdp = cls.from_transition_rewards(P, R3, d0, term, gamma, horizon)
            if not np.allclose(mdp.R, R, atol=1e-6):
                raise DataError(
                    "R must be the expected transition reward",
                    expected="R == (P * R3).sum(-1)",
                    found="a mismatch",
                    fix="pass only R3 (TabularMDP.from_transition_rewards)",
                )
            return mdp
        return cls(P, R, d0, term, gamma, horizon)

    def fix_policy(self, pi: np.ndarray, fill: Literal["uniform"] = "uniform") -> np.ndarray:
        """A published ``(S, A)`` policy with its terminal rows (never acted in, often left
        empty) set to uniform; the number of rows changed is logged. Non-terminal rows must
        already be distributions.

        Example:
            >>> P = np.zeros((2, 2, 2)); P[:, :, 1] = 1.0
            >>> mdp = TabularMDP(P, np.zeros((2, 2)), [1.0, 0.0], [False, True])
            >>> mdp.fix_policy(np.array([[1.0, 0.0], [0.0, 0.0]])).tolist()
            [[1.0, 0.0], [0.5, 0.5]]
        """
        del fill
        pi = np.array(pi, dtype=np.float64)
        if pi.shape != (self.n_states, self.n_actions):
            raise DataError(
                "a tabular policy must be an (S, A) array",
                expected=(self.n_states, self.n_actions),
                found=pi.shape,
            )
        bad = self.terminal & ~np.isclose(pi.sum(1), 1.0, atol=1e-6)
        pi[bad] = 1.0 / self.n_actions
        if bad.any():
            log.warning("fix_policy: filled %d terminal rows with the uniform policy", bad.sum())
        return _check_policy(pi, self.n_states, self.n_actions)

    def validate(self) -> None:
        """Raise :class:`DataError` on inconsistent shapes, probabilities or rewards."""
        if self.P.ndim != 3 or self.P.shape[0] != self.P.shape[2] or self.P.shape[0] < 1:
            raise DataError(
                "P must be a (S, A, S) array of transition probabilities",
                expected="(S, A, S)",
                found=self.P.shape,
            )
        S, A = self.n_states, self.n_actions
        shapes = {"R": (S, A), "d0": (S,), "terminal": (S,)}
        if self.R3 is not None:
            shapes["R3"] = (S, A, S)
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise DataError(
                    f"{name} does not match P ({S} states, {A} actions)",
                    expected=shape,
                    found=getattr(self, name).shape,
                )
        if not np.all(np.isfinite(self.P)) or np.any(self.P < 0):
            raise DataError(
                "transition probabilities must be finite and non-negative",
                expected="P >= 0",
                found=f"min {np.nanmin(self.P):.3g}",
            )
        sums = self.P.sum(-1)
        if not np.allclose(sums, 1.0, atol=1e-6):
            s, a = np.unravel_index(int(np.argmax(np.abs(sums - 1.0))), sums.shape)
            raise DataError(
                f"P[{s}, {a}] does not sum to 1",
                expected="sum_s' P[s, a, s'] = 1",
                found=float(sums[s, a]),
                fix="normalise: P / P.sum(-1, keepdims=True); empty rows of terminal states: "
                "TabularMDP.from_arrays(..., fix_terminal=True)",
            )
        if not np.all(np.isfinite(self.R)) or (
            self.R3 is not None and not np.all(np.isfinite(self.R3))
        ):
            raise DataError("rewards must be finite", expected="finite R (and R3)", found="NaN/inf")
        if np.any(self.d0 < 0) or not np.isclose(self.d0.sum(), 1.0, atol=1e-6):
            raise DataError(
                "d0 must be a probability distribution over states",
                expected="d0 >= 0, sum 1",
                found=f"sum {self.d0.sum():.6g}, min {self.d0.min():.3g}",
            )
        if np.any(self.d0[self.terminal] > 0):
            raise DataError(
                "episodes cannot start in a terminal state",
                expected="d0[terminal] == 0",
                found=f"mass {self.d0[self.terminal].sum():.3g} on terminal states",
            )
        if np.any(self.R[self.terminal] != 0) or (
            self.R3 is not None and np.any(self.R3[self.terminal] != 0)
        ):
            raise DataError(
                "terminal states are never acted in, so their rewards must be zero",
                expected="R[terminal] == 0",
                found="non-zero reward in a terminal state",
                fix="put the reward on the transition into the terminal state (R3[s, a, s_term]), "
                "or build with TabularMDP.from_arrays(..., fix_terminal=True)",
            )
        if self.R3 is not None and not np.allclose((self.P * self.R3).sum(-1), self.R, atol=1e-6):
            raise DataError(
                "R must be the expected transition reward",
                expected="R == (P * R3).sum(-1)",
                found="a mismatch",
                fix="build with TabularMDP.from_transition_rewards(P, R3, ...)",
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError("gamma must lie in [0, 1]", expected="[0, 1]", found=self.gamma)
        if self.horizon is not None and self.horizon < 1:
            raise ConfigError(
                "horizon must be positive", expected=">= 1 or None", found=self.horizon
            )

    # -- exact evaluation ------------------------------------------------------------------
    def _cont(self) -> np.ndarray:
        r"""``(S, A, S)`` continuation kernel :math:`\gamma P(s'|s,a)\,[s' \notin \mathcal{T}]`,
        zero from terminal states."""
        K = self.gamma * self.P * (~self.terminal)[None, None, :]
        K[self.terminal] = 0.0
        return K

    def _reward(self) -> np.ndarray:
        R = self.R.copy()
        R[self.terminal] = 0.0
        return R

    def policy_q(self, pi: np.ndarray) -> np.ndarray:
        r"""Exact action values :math:`Q^\pi` of a stochastic policy.

        With ``horizon=None``: :math:`V = (I - \gamma P_\pi)^{-1} R_\pi` over the non-terminal
        states (terminal values 0), then :math:`Q = R + \gamma P V`. With ``horizon=H``:
        backward induction :math:`Q_k = R + \gamma P V_{k-1}`, :math:`V_k = \sum_a \pi Q_k`,
        :math:`V_0 = 0`, returning :math:`Q_H` (the values at the first step of an episode).

        Shape:
            pi ``(S, A)``. Output ``(S, A)``; zero rows for terminal states.
        """
        pi = _check_policy(pi, self.n_states, self.n_actions)
        K, R = self._cont(), self._reward()
        if self.horizon is not None:
            V = np.zeros(self.n_states)
            Q = R.copy()
            for _ in range(self.horizon):
                Q = R + K @ V
                V = (pi * Q).sum(1)
            return Q
        live = ~self.terminal
        R_pi = (pi * R).sum(1)[live]
        K_pi = np.einsum("sa,sat->st", pi, K)[np.ix_(live, live)]
        n_live = len(R_pi)
        # second right-hand side: the expected discounted episode length, in [1, 1/(1-gamma)]
        # for a policy that terminates; huge, negative or singular when it can loop forever
        rhs = np.stack([R_pi, np.ones(n_live)], axis=1)
        try:
            sol = np.linalg.solve(np.eye(n_live) - K_pi, rhs)
        except np.linalg.LinAlgError:
            sol = np.full((n_live, 2), np.inf)
        V_live, steps = sol[:, 0], sol[:, 1]
        if not np.all(np.isfinite(sol)) or np.any(steps < 1 - 1e-6) or np.any(steps > 1e10):
            raise DataError(
                "the policy's value is not finite: with gamma = 1 it can loop forever without "
                "reaching a terminal state",
                expected="gamma < 1, a horizon, or a policy that terminates with probability 1",
                found=f"gamma = {self.gamma}, horizon = None",
                fix="set gamma < 1 or horizon=H",
            )
        V = np.zeros(self.n_states)
        V[live] = V_live
        return R + K @ V

    def policy_v(self, pi: np.ndarray) -> np.ndarray:
        r"""Exact state values :math:`V^\pi(s) = \sum_a \pi(a|s) Q^\pi(s, a)` (0 in terminals).

        Shape:
            pi ``(S, A)``. Output ``(S,)``.
        """
        pi = _check_policy(pi, self.n_states, self.n_actions)
        return (pi * self.policy_q(pi)).sum(1)

    def policy_value(self, pi: np.ndarray) -> float:
        r"""Exact value :math:`J(\pi) = \sum_s d_0(s) V^\pi(s)` of a stochastic policy."""
        return float(self.d0 @ self.policy_v(pi))

    def value_iteration(
        self, tol: float = 1e-10, max_iter: int = 1_000_000
    ) -> tuple[np.ndarray, np.ndarray]:
        r"""Optimal action values and a greedy optimal policy.

        :math:`Q_{k+1}(s,a) = R(s,a) + \gamma \sum_{s' \notin \mathcal{T}} P(s'|s,a)
        \max_{a'} Q_k(s',a')`, iterated until :math:`\|Q_{k+1}-Q_k\|_\infty < \text{tol}`
        (``horizon=None``) or exactly ``H`` times from :math:`Q_0 = 0` (``horizon=H``). With a
        horizon the optimal policy is non-stationary; the returned ``pi_star`` is greedy for the
        first step, and :math:`\sum_s d_0(s)\max_a Q^*(s,a)` is the optimal value.

        Shape:
            Output ``Q_star (S, A)``, ``pi_star (S, A)`` one-hot (first maximiser on ties).
        """
        K, R = self._cont(), self._reward()
        Q = np.zeros((self.n_states, self.n_actions))
        if self.horizon is not None:
            for _ in range(self.horizon):
                Q = R + K @ Q.max(1)
        else:
            for _ in range(max_iter):
                new = R + K @ Q.max(1)
                delta = float(np.abs(new - Q).max())
                Q = new
                if delta < tol:
                    break
            else:
                raise DataError(
                    "value iteration did not converge",
                    expected=f"max change < {tol} within {max_iter} sweeps",
                    found=f"last change {delta:.3g}",
                    fix="use gamma < 1 or a horizon, or check that terminal states are reachable",
                )
        return Q, greedy_policy(Q)

    def optimal_value(self, tol: float = 1e-10) -> float:
        r""":math:`\max_\pi J(\pi) = \sum_s d_0(s) \max_a Q^*(s, a)`."""
        Q, _ = self.value_iteration(tol)
        return float(self.d0 @ Q.max(1))

    # -- simulation ------------------------------------------------------------------------
    def sample(
        self,
        pi: np.ndarray,
        n_episodes: int,
        seed: int | np.random.Generator = 0,
        obs: ObsSpec = "onehot",
        max_steps: int = 10_000,
    ) -> Trajectories:
        r"""Roll out ``n_episodes`` episodes of ``pi`` (all episodes in parallel, one numpy step
        per time step).

        Patient ids are ``0..n-1``, ``time`` is the step index (``0.0, 1.0, ...``), ``done``
        marks a step that entered a terminal state, ``timeout`` one cut by the horizon (or by
        ``max_steps`` when ``horizon=None``), ``mask`` is None. ``meta`` holds the true
        ``"state"`` and ``"next_state"`` ids ``(N,)`` int64, ``"policy"`` (the ``(S, A)``
        behaviour policy) and ``"behaviour_proba"`` ``(N,)`` (the probability of each logged
        action).

        Args:
            obs: ``"onehot"`` gives ``(N, S)`` indicator rows, ``"index"`` ``(N, 1)`` state ids;
                a callable maps ``(N,)`` state ids to ``(N, D)`` features.
            max_steps: safety cap when ``horizon`` is None.
        """
        pi = _check_policy(pi, self.n_states, self.n_actions)
        if n_episodes < 1:
            raise ConfigError("n_episodes must be positive", expected=">= 1", found=n_episodes)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        T = self.horizon if self.horizon is not None else max_steps
        S, A, n = self.n_states, self.n_actions, n_episodes
        cdf_d0 = np.cumsum(self.d0)
        state = np.minimum(np.searchsorted(cdf_d0, rng.random(n) * cdf_d0[-1], side="right"), S - 1)
        cdf_pi = np.cumsum(pi, axis=1)
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("s", "a", "r", "s2", "ep")}
        alive = np.arange(n)
        for _t in range(T):
            s = state[alive]
            a = _categorical(cdf_pi[s], rng)
            s2 = _categorical_rows(self.P, s, a, rng)
            r = self.R3[s, a, s2] if self.R3 is not None else self.R[s, a]
            for k, v in zip(cols, (s, a, r, s2, alive), strict=True):
                cols[k].append(v)
            state[alive] = s2
            alive = alive[~self.terminal[s2]]
            if len(alive) == 0:
                break
        if self.horizon is None and len(alive):
            log.warning("%d episodes cut at max_steps=%d (horizon=None)", len(alive), max_steps)
        steps = len(cols["s"])
        t_idx = np.concatenate([np.full(len(v), t) for t, v in enumerate(cols["ep"])])
        flat = {k: np.concatenate(v) for k, v in cols.items()}
        order = np.lexsort((t_idx, flat["ep"]))  # patient-major, then time
        flat = {k: v[order] for k, v in flat.items()}
        t_idx = t_idx[order]
        done = self.terminal[flat["s2"]]
        last = np.append(flat["ep"][1:] != flat["ep"][:-1], True)
        timeout = last & ~done
        feats, names = _observe(flat["s"], S, obs)
        log.debug("sampled %d episodes, %d steps (longest %d)", n, len(order), steps)
        return Trajectories(
            obs=feats,
            action=flat["a"],
            reward=flat["r"],
            done=done,
            timeout=timeout,
            patient=flat["ep"],
            time=t_idx.astype(np.float64),
            n_actions=A,
            feature_names=names,
            meta={
                "state": flat["s"].astype(np.int64),
                "next_state": flat["s2"].astype(np.int64),
                "policy": pi,
                "behaviour_proba": pi[flat["s"], flat["a"]],
            },
        )


def _categorical(cdf: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of a ``(n, K)`` cumulative distribution."""
    u = rng.random(len(cdf)) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(1), cdf.shape[1] - 1)


def _categorical_rows(
    P: np.ndarray, s: np.ndarray, a: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Next states ``s' ~ P[s, a]``, in chunks to bound memory at ``~2**22`` floats."""
    S = P.shape[2]
    out = np.empty(len(s), dtype=np.int64)
    chunk = max(1, 2**22 // S)
    for i in range(0, len(s), chunk):
        out[i : i + chunk] = _categorical(np.cumsum(P[s[i : i + chunk], a[i : i + chunk]], 1), rng)
    return out


def _onehot(states: np.ndarray, n_states: int) -> np.ndarray:
    x = np.zeros((len(states), n_states), dtype=np.float32)
    x[np.arange(len(states)), states] = 1.0
    return x


_OBS: dict[str, Callable[[np.ndarray, int], tuple[np.ndarray, tuple[str, ...]]]] = {
    "onehot": lambda s, S: (_onehot(s, S), tuple(f"state_{i}" for i in range(S))),
    "index": lambda s, S: (s.astype(np.float32)[:, None], ("state",)),
}


def _observe(states: np.ndarray, n_states: int, obs: ObsSpec) -> tuple[np.ndarray, tuple | None]:
    if callable(obs):
        x = np.asarray(obs(states), dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[0] != len(states):
            raise DataError(
                "the observation function must return one row per state id",
                expected=f"({len(states)}, D)",
                found=x.shape,
            )
        return x, None
    if obs not in _OBS:
        raise ConfigError("unknown observation kind", expected=f"one of {sorted(_OBS)}", found=obs)
    return _OBS[obs](states, n_states)


# -- policies ------------------------------------------------------------------------------
def greedy_policy(q: np.ndarray) -> np.ndarray:
    """One-hot ``(S, A)`` policy on the first maximiser of each row of ``q``."""
    q = np.asarray(q, dtype=np.float64)
    pi = np.zeros_like(q)
    pi[np.arange(len(q)), q.argmax(1)] = 1.0
    return pi


def uniform_policy(n_states: int, n_actions: int) -> np.ndarray:
    """``(S, A)`` policy choosing every action with probability ``1/A``."""
    return np.full((n_states, n_actions), 1.0 / n_actions)


def softmax_policy(q: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    r""":math:`\pi(a|s) \propto \exp(q(s,a)/\tau)` row-wise (``temperature`` :math:`\tau > 0`)."""
    z = np.asarray(q, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def mix_policies(pi: np.ndarray, other: np.ndarray, weight: float) -> np.ndarray:
    r""":math:`(1-w)\,\pi + w\,\pi'`, e.g. ``mix_policies(greedy, uniform, 0.1)`` for
    epsilon-greedy."""
    return (1.0 - weight) * np.asarray(pi, np.float64) + weight * np.asarray(other, np.float64)


# -- random instances for tests --------------------------------------------------------------
def random_mdp(
    n_states: int,
    n_actions: int,
    seed: int | np.random.Generator = 0,
    *,
    n_terminal: int = 1,
    gamma: float = 0.95,
    horizon: int | None = None,
    p_terminate: float = 0.1,
    concentration: float = 1.0,
    transition_rewards: bool = False,
) -> TabularMDP:
    r"""A random MDP for tests: the last ``n_terminal`` states are terminal.

    Each non-terminal :math:`P(\cdot|s,a)` is
    :math:`(1-p)\,\mathrm{Dir}(\alpha) + p\,\mathrm{Unif}(\mathcal{T})` with
    ``p = p_terminate``, so every policy terminates surely when ``p > 0`` and ``n_terminal > 0``
    (then ``gamma = 1`` is allowed). Rewards are :math:`U(-1, 1)` (per ``(s, a)``, or per
    ``(s, a, s')`` with ``transition_rewards``); :math:`d_0` is Dirichlet over non-terminal
    states.
    """
    if not 0 <= n_terminal < n_states:
        raise ConfigError(
            "random_mdp needs at least one non-terminal state",
            expected=f"0 <= n_terminal < n_states = {n_states}",
            found=n_terminal,
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    S, A = n_states, n_actions
    terminal = np.zeros(S, dtype=bool)
    if n_terminal:
        terminal[S - n_terminal :] = True
    P = rng.dirichlet(np.full(S, concentration), size=(S, A))
    if n_terminal:
        P = (1 - p_terminate) * P
        P[:, :, terminal] += p_terminate / n_terminal
        P[terminal] = 0.0
        P[terminal, :, terminal] = 1.0  # absorbing (never used)
    d0 = np.zeros(S)
    d0[~terminal] = rng.dirichlet(np.ones(int((~terminal).sum())))
    if transition_rewards:
        R3 = rng.uniform(-1, 1, size=(S, A, S))
        R3[terminal] = 0.0
        return TabularMDP.from_transition_rewards(P, R3, d0, terminal, gamma, horizon)
    R = rng.uniform(-1, 1, size=(S, A))
    R[terminal] = 0.0
    return TabularMDP(P, R, d0, terminal, gamma, horizon)
