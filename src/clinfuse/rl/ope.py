r"""Off-policy evaluation: behaviour models, importance-sampling and doubly-robust estimators,
fitted Q evaluation, effective sample size and patient-level bootstrap intervals.

Notation (per episode :math:`i` of :math:`n`, step :math:`t`, logged action :math:`a_{i,t}`):

.. math::
    \rho_{i,t} = \frac{\pi_e(a_{i,t} \mid s_{i,t})}{\pi_b(a_{i,t} \mid s_{i,t})}, \qquad
    w_{i,t} = \prod_{k \le t} \rho_{i,k}, \qquad
    G_i = \sum_{t < L_i} \gamma^t r_{i,t},

with :math:`L_i` the episode length and :math:`w_{i,-1} = 1`. Episodes are padded to the
longest length :math:`T`: after its end an episode's reward, :math:`\hat Q` and :math:`\hat V`
are 0 and its weight is frozen, :math:`w_{i,t} = w_{i,L_i-1}` for :math:`t \ge L_i` (an absorbing
state in which :math:`\pi_e = \pi_b`). Every estimator is vectorised over that ``(n, T)`` grid.

Estimators are pure functions ``(traj, pi_e, pi_b, gamma) -> OPEResult`` where ``pi_e`` and
``pi_b`` are ``(N, A)`` action probabilities at the logged observations (only the logged
actions' columns enter the ratios). The doubly-robust ones also take ``q_hat (N, A)`` and
``v_hat (N,)`` (default :math:`\hat V(s) = \sum_a \pi_e(a|s)\hat Q(s,a)`).

References: Precup, Sutton & Singh 2000 (IS, WIS, PDIS); Thomas 2015 (CWPDIS); Jiang & Li 2016
(DR); Thomas & Brunskill 2016 (WDR); Le, Voloshin & Yue 2019 (FQE); Gottesman et al. 2019 (ESS).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.metrics.bootstrap import percentile_interval, resamples
from clinfuse.rl.data import Trajectories

__all__ = [
    "OPEResult",
    "FQEResult",
    "FQEConfig",
    "BehaviourConfig",
    "BehaviourModel",
    "ESTIMATORS",
    "ess",
    "is_",
    "wis",
    "pdis",
    "cwpdis",
    "dr",
    "wdr",
    "fqe",
    "fit_behaviour",
    "bootstrap_ci",
    "describe",
    "evaluate_policy",
    "format_estimate",
    "patient_folds",
    "positivity",
    "q_sanity",
    "value_range",
    "detect_horizon",
]

log = logging.getLogger(__name__)

PolicyFn = Callable[[np.ndarray], np.ndarray]


# ==========================================================================================
# results and diagnostics
# ==========================================================================================
@dataclass(frozen=True, eq=False)
class OPEResult:
    """One off-policy estimate."""

    value: float
    """Estimated policy value :math:`\\hat J(\\pi_e)`."""
    per_episode: np.ndarray | None
    """``(n_episodes,)`` contributions whose mean is ``value`` (None when not defined)."""
    ess: float
    """Effective sample size of the episode weights :math:`w_{i,L_i-1}`."""
    name: str
    """Estimator name (``"is"``, ``"wis"``, ...)."""


def ess(weights: np.ndarray) -> float:
    r"""Effective sample size :math:`(\sum_i w_i)^2 / \sum_i w_i^2` (0 when all weights are 0).

    Shape:
        weights ``(n,)`` non-negative. Output: scalar in ``[0, n]`` (``n`` for equal weights,
        1 for a single non-zero weight).

    Example:
        >>> ess(np.ones(5)), ess(np.array([0.0, 3.0, 0.0]))
        (5.0, 1.0)
    """
    w = np.asarray(weights, dtype=np.float64)
    sq = float(np.sum(w * w))
    return float(np.sum(w) ** 2 / sq) if sq > 0 else 0.0


# ==========================================================================================
# the (n, T) episode grid shared by every estimator
# ==========================================================================================
@dataclass(frozen=True)
class _Grid:
    """Row -> (episode, step) coordinates of the padded ``(n, T)`` grid."""

    ep: np.ndarray
    t: np.ndarray
    n: int
    T: int

    @classmethod
    def of(cls, traj: Trajectories) -> _Grid:
        if len(traj) == 0:
            raise DataError("no steps to evaluate", expected="at least one episode", found=0)
        lengths = traj.ends - traj.starts
        ep = np.repeat(np.arange(len(lengths)), lengths)
        return cls(ep=ep, t=traj.step_index, n=len(lengths), T=int(lengths.max()))

    def pad(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        out = np.full((self.n, self.T), fill, dtype=np.float64)
        out[self.ep, self.t] = values
        return out

    def weights(self, rho: np.ndarray) -> np.ndarray:
        """``(n, T)`` cumulative weights :math:`w_{i,t}`, frozen after each episode's end."""
        return np.cumprod(self.pad(rho, fill=1.0), axis=1)

    def discount(self, gamma: float) -> np.ndarray:
        return gamma ** np.arange(self.T, dtype=np.float64)


def _check_probs(name: str, p: np.ndarray, traj: Trajectories) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.shape != (len(traj), traj.n_actions):
        raise DataError(
            f"{name} must hold the action probabilities at every logged step",
            expected=(len(traj), traj.n_actions),
            found=p.shape,
            fix=f"evaluate the policy at traj.obs: {name} = policy(traj.obs)",
        )
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise DataError(
            f"{name} must be finite and non-negative", expected="probabilities", found="NaN/<0"
        )
    return p


def _check_gamma(gamma: float) -> float:
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError("gamma must lie in [0, 1]", expected="[0, 1]", found=gamma)
    return float(gamma)


def _ratios(traj: Trajectories, pi_e: np.ndarray, pi_b: np.ndarray) -> np.ndarray:
    """``(N,)`` per-step ratios :math:`\\rho_{i,t}` of the logged actions."""
    pi_e = _check_probs("pi_e", pi_e, traj)
    pi_b = _check_probs("pi_b", pi_b, traj)
    rows = np.arange(len(traj))
    num, den = pi_e[rows, traj.action], pi_b[rows, traj.action]
    if np.any(den <= 0):
        i = int(np.nonzero(den <= 0)[0][0])
        raise DataError(
            f"the behaviour policy gives probability 0 to the logged action at row {i}",
            expected="pi_b(a_logged | s) > 0 at every step",
            found=f"action {int(traj.action[i])} with pi_b = {den[i]}",
            fix="use a behaviour model with a probability floor (fit_behaviour clips at 1e-3); "
            "see the recipe in clinfuse.rl's README",
        )
    return num / den


def _prepare(
    traj: Trajectories, pi_e: np.ndarray, pi_b: np.ndarray, gamma: float
) -> tuple[_Grid, np.ndarray, np.ndarray, np.ndarray]:
    """Grid, cumulative weights ``W (n, T)``, padded rewards ``R (n, T)``, discounts ``(T,)``."""
    gamma = _check_gamma(gamma)
    grid = _Grid.of(traj)
    W = grid.weights(_ratios(traj, pi_e, pi_b))
    return grid, W, grid.pad(traj.reward), grid.discount(gamma)


def _normalise_columns(W: np.ndarray) -> np.ndarray:
    """:math:`\\tilde w_{i,t} = w_{i,t} / \\sum_j w_{j,t}` (0 where a column sums to 0)."""
    tot = W.sum(axis=0, keepdims=True)
    return np.divide(W, tot, out=np.zeros_like(W), where=tot > 0)


# ==========================================================================================
# importance-sampling estimators
# ==========================================================================================
def is_(traj: Trajectories, pi_e: np.ndarray, pi_b: np.ndarray, gamma: float) -> OPEResult:
    r"""Trajectory-wise importance sampling :math:`\hat J = \frac1n \sum_i w_{i,L_i-1} G_i`.

    Unbiased when ``pi_b`` is the true behaviour policy and covers :math:`\pi_e`.

    Shape:
        pi_e, pi_b ``(N, A)``. ``per_episode`` ``(n,)``: :math:`w_{i,L_i-1} G_i`.
    """
    grid, W, R, disc = _prepare(traj, pi_e, pi_b, gamma)
    w_end = W[:, -1]
    per = w_end * (R @ disc)
    return OPEResult(float(per.mean()), per, ess(w_end), "is")


def wis(traj: Trajectories, pi_e: np.ndarray, pi_b: np.ndarray, gamma: float) -> OPEResult:
    r"""Weighted (self-normalised) importance sampling
    :math:`\hat J = \sum_i w_{i,L_i-1} G_i \,/\, \sum_i w_{i,L_i-1}`.

    Biased but consistent; equals the sample mean return when :math:`\pi_e = \pi_b`.

    Shape:
        ``per_episode`` ``(n,)``: :math:`n\,\tilde w_i G_i` with :math:`\tilde w` normalised.
    """
    grid, W, R, disc = _prepare(traj, pi_e, pi_b, gamma)
    w_end = W[:, -1]
    tot = w_end.sum()
    per = grid.n * w_end * (R @ disc) / tot if tot > 0 else np.zeros(grid.n)
    return OPEResult(float(per.mean()), per, ess(w_end), "wis")


def pdis(traj: Trajectories, pi_e: np.ndarray, pi_b: np.ndarray, gamma: float) -> OPEResult:
    r"""Per-decision importance sampling
    :math:`\hat J = \frac1n \sum_i \sum_t \gamma^t w_{i,t} r_{i,t}`.

    Shape:
        ``per_episode`` ``(n,)``: :math:`\sum_t \gamma^t w_{i,t} r_{i,t}`.
    """
    grid, W, R, disc = _prepare(traj, pi_e, pi_b, gamma)
    per = (W * R) @ disc
    return OPEResult(float(per.mean()), per, ess(W[:, -1]), "pdis")


def cwpdis(traj: Trajectories, pi_e: np.ndarray, pi_b: np.ndarray, gamma: float) -> OPEResult:
    r"""Consistent weighted per-decision importance sampling (Thomas 2015)

    .. math::
        \hat J = \sum_{t<T} \gamma^t \frac{\sum_i w_{i,t}\, r_{i,t}}{\sum_i w_{i,t}},

    with each episode's weight frozen after its end (so finished episodes keep counting in the
    denominator with reward 0). Equals the sample mean return when :math:`\pi_e = \pi_b`.

    Shape:
        ``per_episode`` ``(n,)``: :math:`n \sum_t \gamma^t \tilde w_{i,t} r_{i,t}`.
    """
    grid, W, R, disc = _prepare(traj, pi_e, pi_b, gamma)
    per = grid.n * ((_normalise_columns(W) * R) @ disc)
    return OPEResult(float(per.mean()), per, ess(W[:, -1]), "cwpdis")


# ==========================================================================================
# doubly-robust estimators
# ==========================================================================================
def _model_terms(
    traj: Trajectories,
    grid: _Grid,
    pi_e: np.ndarray,
    q_hat: np.ndarray,
    v_hat: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Padded :math:`\\hat Q(s_t, a_t)` and :math:`\\hat V(s_t)`, both ``(n, T)``."""
    q_hat = np.asarray(q_hat, dtype=np.float64)
    if q_hat.shape != (len(traj), traj.n_actions):
        raise DataError(
            "q_hat must hold the model's action values at every logged step",
            expected=(len(traj), traj.n_actions),
            found=q_hat.shape,
        )
    if v_hat is None:
        v_hat = (np.asarray(pi_e, dtype=np.float64) * q_hat).sum(1)
    v_hat = np.asarray(v_hat, dtype=np.float64)
    if v_hat.shape != (len(traj),):
        raise DataError("v_hat must be (N,)", expected=(len(traj),), found=v_hat.shape)
    q_logged = q_hat[np.arange(len(traj)), traj.action]
    return grid.pad(q_logged), grid.pad(v_hat)


def dr(
    traj: Trajectories,
    pi_e: np.ndarray,
    pi_b: np.ndarray,
    gamma: float,
    q_hat: np.ndarray,
    v_hat: np.ndarray | None = None,
) -> OPEResult:
    r"""Doubly robust estimator (Jiang & Li 2016), the recursion
    :math:`V^{(t)}_{DR} = \hat V(s_t)
    + \rho_t\big(r_t + \gamma V^{(t+1)}_{DR} - \hat Q(s_t,a_t)\big)` unrolled:

    .. math::
        \hat J = \frac1n \sum_i \sum_{t<L_i} \gamma^t \Big(w_{i,t}\big(r_{i,t} -
        \hat Q(s_{i,t}, a_{i,t})\big) + w_{i,t-1} \hat V(s_{i,t})\Big).

    Unbiased with the true :math:`\pi_b` whatever :math:`\hat Q`; with :math:`\hat Q = 0` it is
    PDIS.

    Shape:
        pi_e, pi_b, q_hat ``(N, A)``; v_hat ``(N,)`` or None. ``per_episode`` ``(n,)``.
    """
    grid, W, R, disc = _prepare(traj, pi_e, pi_b, gamma)
    Q, V = _model_terms(traj, grid, pi_e, q_hat, v_hat)
    W_prev = np.concatenate([np.ones((grid.n, 1)), W[:, :-1]], axis=1)
    per = (W * (R - Q) + W_prev * V) @ disc
    return OPEResult(float(per.mean()), per, ess(W[:, -1]), "dr")


def wdr(
    traj: Trajectories,
    pi_e: np.ndarray,
    pi_b: np.ndarray,
    gamma: float,
    q_hat: np.ndarray,
    v_hat: np.ndarray | None = None,
) -> OPEResult:
    r"""Weighted doubly robust estimator (Thomas & Brunskill 2016)

    .. math::
        \hat J = \sum_i \sum_{t<T} \gamma^t \tilde w_{i,t}\, r_{i,t}
        - \sum_i \sum_{t<T} \gamma^t \big(\tilde w_{i,t} \hat Q(s_{i,t}, a_{i,t})
        - \tilde w_{i,t-1} \hat V(s_{i,t})\big),

    with :math:`\tilde w_{i,t} = w_{i,t} / \sum_j w_{j,t}` (frozen weights included) and
    :math:`\tilde w_{i,-1} = 1/n`. With :math:`\hat Q = 0` it is CWPDIS.

    Shape:
        pi_e, pi_b, q_hat ``(N, A)``; v_hat ``(N,)`` or None. ``per_episode`` ``(n,)``
        (``n`` times each episode's share).
    """
    grid, W, R, disc = _prepare(traj, pi_e, pi_b, gamma)
    Q, V = _model_terms(traj, grid, pi_e, q_hat, v_hat)
    Wn = _normalise_columns(W)
    Wn_prev = np.concatenate([np.full((grid.n, 1), 1.0 / grid.n), Wn[:, :-1]], axis=1)
    per = grid.n * ((Wn * (R - Q) + Wn_prev * V) @ disc)
    return OPEResult(float(per.mean()), per, ess(W[:, -1]), "wdr")


ESTIMATORS: dict[str, tuple[Callable[..., OPEResult], bool]] = {
    "is": (is_, False),
    "wis": (wis, False),
    "pdis": (pdis, False),
    "cwpdis": (cwpdis, False),
    "dr": (dr, True),
    "wdr": (wdr, True),
}
"""Name -> (estimator, needs a model ``q_hat``)."""


# ==========================================================================================
# discrete observations: rows of obs as table keys
# ==========================================================================================
class _RowIndex:
    """Exact lookup of observation rows (e.g. one-hot or index states) in a table."""

    def __init__(self, obs: np.ndarray) -> None:
        keys = self._keys(obs)
        self.keys, self.inverse = np.unique(keys, return_inverse=True)
        self.inverse = self.inverse.ravel()
        self.dim = obs.shape[1]

    @staticmethod
    def _keys(obs: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(obs, dtype=np.float32) + np.float32(0.0))
        return x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, obs: np.ndarray) -> np.ndarray:
        """``(M,)`` table ids of ``obs`` rows, -1 for rows never seen."""
        obs = np.asarray(obs)
        if obs.ndim != 2 or obs.shape[1] != self.dim:
            raise DataError(
                "observation width differs from the data",
                expected=f"(M, {self.dim})",
                found=obs.shape,
            )
        k = self._keys(obs)
        pos = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
        return np.where(self.keys[pos] == k, pos, -1)


# ==========================================================================================
# fitted Q evaluation
# ==========================================================================================
Unseen = Literal["advantage", "state_mean", "low", "high", "zero"]


@dataclass(frozen=True)
class FQEConfig:
    """Fitted Q evaluation settings (the ``mlp`` fields are ignored by the other kinds)."""

    hidden: int = 64
    """Width of the two hidden layers of the Q network."""
    steps_per_iteration: int = 50
    """Adam steps regressing on one iteration's frozen targets."""
    batch_size: int = 256
    """Transitions per Adam step."""
    lr: float = 1e-3
    """Adam learning rate."""
    tol: float = 1e-8
    """Tabular and linear: stop when no value changes by more than this."""
    ridge: float = 1.0
    """Linear: ridge penalty of each per-action least-squares fit."""
    unseen: Unseen = "advantage"
    """Tabular: value of an (s, a) never logged in the fitting data. ``advantage``: the value of
    the state's most-logged action plus the mean advantage that action :math:`a` has, over the
    fitting data, in the states where it was logged as a deviation from the most-logged action
    (shrunk towards the mean over all actions, see :func:`_deviation_advantage`): clinicians'
    rare actions are mostly worse than their usual ones, and this rule learns by how much
    across states instead of assuming they are as good; ``state_mean``: the target-weighted
    mean of the logged actions' values in the same state (optimistic when the logged actions
    are the good ones); ``low``/``high``: the lower/upper end of the return range (the
    pessimistic/optimistic pair that brackets the estimate); ``zero``: 0. A state never logged
    takes the count-weighted mean over all logged cells (``low``/``high``/``zero``: the fill)."""
    seed: int = 0
    """Seed of the network initialisation and minibatch order."""


@dataclass(frozen=True, eq=False)
class FQEResult:
    """A fitted Q evaluation."""

    value: float
    r"""Estimated value :math:`\frac1n\sum_i \sum_a \pi_e(a|s_{i,0}) \hat Q(s_{i,0}, a)`
    (out of fold when cross-fitted)."""
    q_fn: Callable[..., np.ndarray]
    """Observations ``(M, D)`` -> action values ``(M, A)`` of the model fitted on all episodes
    (finite-horizon tabular: ``q_fn(obs, t)``, the values at step ``t``, default 0)."""
    iterations: int = 0
    """Iterations run (the largest over folds)."""
    q_hat: np.ndarray | None = None
    """``(N, A)`` action values at the logged rows, each from the model that did not see the
    row's patient (cross-fitting), or in-sample with ``cross_fit=1``: the ``q_hat`` of
    :func:`dr` / :func:`wdr`."""
    value_range: tuple[float, float] = (-np.inf, np.inf)
    """Return range the values were clipped to."""
    bounds: tuple[float, float] | None = None
    """Tabular: the estimate with never-logged (s, a) at the low and at the high end of the
    return range (the pessimistic/optimistic pair); None for other kinds."""
    unseen_mass: float = 0.0
    """Share of the target's mass, at the logged rows, on (s, a) absent from the fitting data
    of the row's model (values there come from the ``unseen`` rule, not from data)."""
    folds: int = 1
    """Number of patient folds (1: in-sample)."""
    horizon: int | None = None
    """The step cap of a finite-horizon (per-step) tabular fit; None: one stationary table."""


def value_range(traj: Trajectories, gamma: float) -> tuple[float, float]:
    r"""Return range seen in the data: the smallest and largest discounted return-to-go
    :math:`\sum_{k \ge t} \gamma^{k-t} r_k` over every logged step.

    The default range for clipping and flagging; pass the achievable range when it is known
    (e.g. ``(-15, 15)`` for a terminal reward of :math:`\pm 15`).

    Example:
        >>> from clinfuse.rl.data import Trajectories
        >>> t = Trajectories(obs=np.zeros((3, 1)), action=[0, 0, 0], reward=[1.0, 0.0, -1.0],
        ...     done=[False, True, True], timeout=[False] * 3, patient=[0, 0, 1],
        ...     time=[0.0, 1.0, 0.0], n_actions=1)
        >>> value_range(t, 1.0)
        (-1.0, 1.0)
    """
    gamma = _check_gamma(gamma)
    grid = _Grid.of(traj)
    R = grid.pad(traj.reward)
    togo = np.zeros_like(R)
    acc = np.zeros(grid.n)
    for t in range(grid.T - 1, -1, -1):
        acc = R[:, t] + gamma * acc
        togo[:, t] = acc
    vals = togo[grid.ep, grid.t]
    return float(vals.min()), float(vals.max())


def _target_probs(traj: Trajectories, target: PolicyFn | np.ndarray) -> np.ndarray:
    p = target(traj.obs) if callable(target) else target
    p = _check_probs("target policy", p, traj)
    if not np.allclose(p.sum(1), 1.0, atol=1e-5):
        raise DataError(
            "target probabilities must sum to 1 per row",
            expected="rows summing to 1",
            found=f"sums in [{p.sum(1).min():.4g}, {p.sum(1).max():.4g}]",
        )
    return p


@dataclass(frozen=True)
class _FQEInput:
    """One fit: the training rows' transitions with the target's probabilities at next rows."""

    traj: Trajectories
    pi: np.ndarray
    gamma: float
    iterations: int
    lo: float
    hi: float
    horizon: int | None = None
    weights: np.ndarray | None = None
    """Tabular: ``(N,)`` row weights (a bootstrap resample's copies of each episode, 0 outside
    the fitting folds); equal to fitting on the rows repeated that many times."""
    index: _RowIndex | None = None
    """Tabular: the row index of ``traj.obs`` when already built."""

    def row_weights(self) -> np.ndarray:
        if self.weights is None:
            return np.ones(len(self.traj))
        return np.asarray(self.weights, dtype=np.float64)

    def row_index(self) -> _RowIndex:
        return self.index if self.index is not None else _RowIndex(self.traj.obs)

    def next_rows(self) -> np.ndarray:
        return np.minimum(np.arange(len(self.traj)) + 1, len(self.traj) - 1)

    def cont(self) -> np.ndarray:
        return self.gamma * self.traj.transitions()["bootstrap"].astype(np.float64)


def _deviation_advantage(Q: np.ndarray, counts: np.ndarray, shrink: float) -> np.ndarray:
    r"""``(A,)`` mean advantage of each action where it was logged as a deviation:

    .. math::
        \bar A(a) = \frac{\sum_{s:\,0 < n(s,a),\ a \ne m(s)} n(s,a)\,\big(Q(s,a) - Q(s,m(s))\big)
        + k\,\bar A}{\sum_{s:\,0 < n(s,a),\ a \ne m(s)} n(s,a) + k},

    with :math:`m(s)` the most-logged action of state :math:`s`, :math:`\bar A` the same mean
    over every action (the pooled deviation advantage) and :math:`k` = ``shrink`` pseudo-counts.
    0 when no state has a second logged action."""
    rows = np.arange(len(Q))
    modal = counts.argmax(1)
    dev = counts * (counts > 0)
    dev[rows, modal] = 0.0
    adv = Q - Q[rows, modal][:, None]
    per_action = (dev * adv).sum(0)
    weight = dev.sum(0)
    pooled = float(per_action.sum() / weight.sum()) if weight.sum() > 0 else 0.0
    return (per_action + shrink * pooled) / (weight + shrink)


def _fill_unseen(
    Q: np.ndarray, counts: np.ndarray, pi_state: np.ndarray, rule: Unseen, lo: float, hi: float,
    shrink: float = 5.0,
) -> np.ndarray:  # fmt: skip
    """Values of never-logged cells (``counts == 0``) of seen states by the ``unseen`` rule."""
    seen = counts > 0
    if rule in ("low", "high", "zero"):
        fill = {"low": lo, "high": hi, "zero": 0.0}[rule]
        return np.where(seen, Q, fill)
    if rule == "advantage":
        ref = Q[np.arange(len(Q)), counts.argmax(1)]
        fill = ref[:, None] + _deviation_advantage(Q, counts, shrink)[None, :]
        return np.where(seen, Q, np.clip(fill, lo, hi))
    w = pi_state * seen
    tot = w.sum(1, keepdims=True)
    w = np.where(tot > 0, w, seen.astype(np.float64))
    tot = w.sum(1, keepdims=True)
    state_mean = np.divide((w * Q).sum(1, keepdims=True), tot, where=tot > 0,
                           out=np.zeros_like(tot))  # fmt: skip
    glob = float((counts * Q).sum() / max(counts.sum(), 1))
    state_mean = np.where(tot > 0, state_mean, glob)
    return np.where(seen, Q, state_mean)


def _fqe_tabular_horizon(
    inp: _FQEInput, cfg: FQEConfig, rule: Unseen
) -> tuple[Callable[..., np.ndarray], int]:
    r"""Finite-horizon tabular FQE: one table per step :math:`t < H` by backward induction,

    .. math::
        \hat Q_t(s, a) = \frac{1}{|D_t(s,a)|} \sum_{j \in D_t(s, a)} \Big(r_j + \gamma\, d_j
        \sum_{a'} \pi_e(a'|s'_j)\, \hat Q_{t+1}(s'_j, a')\Big), \qquad \hat Q_H = 0,

    where :math:`d_j = 0` when transition :math:`j` entered a terminal state. The dynamics are
    time-homogeneous, so every logged transition of :math:`(s, a)` informs every :math:`t`:
    :math:`D_t(s, a)` holds all of them whose next state is logged or terminal (a row cut by the
    horizon has no logged next state and informs only :math:`t = H - 1`, where
    :math:`\hat Q_{H-1}(s, a)` is the mean reward). Never-logged cells take the ``unseen`` rule
    at every step. ``q_fn(obs, t)`` reads :math:`\hat Q_t` (``t`` defaults to 0; steps at or
    beyond :math:`H` read :math:`\hat Q_{H-1}`)."""
    traj, A, H = inp.traj, inp.traj.n_actions, int(inp.horizon or 1)
    index = inp.row_index()
    sid = index.inverse
    nxt = inp.next_rows()
    sid_next, pi_next = sid[nxt], inp.pi[nxt]
    cell = sid * A + traj.action
    last = np.zeros(len(traj), dtype=bool)
    last[traj.ends - 1] = True
    cont = np.where(last, 0.0, inp.gamma)
    usable = ~last | traj.done  # next state logged, or terminal
    w = inp.row_weights()
    w_use = w * usable
    size = len(index) * A
    counts_all = np.bincount(cell, weights=w, minlength=size).reshape(-1, A)
    counts_use = np.bincount(cell, weights=w_use, minlength=size).reshape(-1, A)
    live = np.bincount(sid, weights=w, minlength=len(index)) > 0  # states in the fitting data
    pi_state = np.zeros((len(index), A))
    np.add.at(pi_state, sid, inp.pi * w[:, None])
    r = traj.reward.astype(np.float64)
    tables = np.zeros((H, len(index), A))
    q_next = np.zeros((len(index), A))  # \hat Q_H = 0
    for t in range(H - 1, -1, -1):
        wt, counts = (w, counts_all) if t == H - 1 else (w_use, counts_use)
        y = r + cont * (pi_next * q_next[sid_next]).sum(1)
        sums = np.bincount(cell, weights=wt * y, minlength=size).reshape(-1, A)
        mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        q_next = np.clip(_fill_unseen(mean, counts, pi_state, rule, inp.lo, inp.hi), inp.lo, inp.hi)
        tables[t] = q_next
    if rule in ("advantage", "state_mean"):
        glob = (counts_all[None] * tables).sum((1, 2)) / max(counts_all.sum(), 1.0)
    else:
        glob = np.full(H, {"low": inp.lo, "high": inp.hi, "zero": 0.0}[rule])

    def q_fn(obs: np.ndarray, t: np.ndarray | int | None = None) -> np.ndarray:
        ids = index.lookup(obs)
        ids = np.where(live[np.maximum(ids, 0)], ids, -1)
        step = np.zeros(len(ids), dtype=np.int64) if t is None else np.broadcast_to(t, ids.shape)
        step = np.clip(np.asarray(step, dtype=np.int64), 0, H - 1)
        return np.where(
            (ids >= 0)[:, None], tables[step, np.maximum(ids, 0)], glob[step][:, None]
        )  # fmt: skip

    def seen(obs: np.ndarray) -> np.ndarray:
        ids = index.lookup(obs)
        return np.where((ids >= 0)[:, None], counts_all[np.maximum(ids, 0)] > 0, False)

    q_fn.seen = seen  # type: ignore[attr-defined]
    return q_fn, H


def _fqe_tabular(
    inp: _FQEInput, cfg: FQEConfig, rule: Unseen
) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    if inp.horizon is not None:
        return _fqe_tabular_horizon(inp, cfg, rule)
    traj, A = inp.traj, inp.traj.n_actions
    index = inp.row_index()
    sid = index.inverse
    nxt = inp.next_rows()
    sid_next, pi_next = sid[nxt], inp.pi[nxt]
    cell = sid * A + traj.action
    w = inp.row_weights()
    counts = np.bincount(cell, weights=w, minlength=len(index) * A).reshape(-1, A)
    live = np.bincount(sid, weights=w, minlength=len(index)) > 0  # states in the fitting data
    # the target's mean probabilities per observed state (weights of the ``model`` fill)
    pi_state = np.zeros((len(index), A))
    np.add.at(pi_state, sid, inp.pi * w[:, None])
    cont, r = inp.cont(), traj.reward.astype(np.float64)
    Q = np.zeros((len(index), A))
    it = 0
    while it < inp.iterations:
        it += 1
        y = r + cont * (pi_next * Q[sid_next]).sum(1)
        sums = np.bincount(cell, weights=w * y, minlength=len(index) * A).reshape(-1, A)
        new = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        new = np.clip(_fill_unseen(new, counts, pi_state, rule, inp.lo, inp.hi), inp.lo, inp.hi)
        delta = float(np.abs(new - Q)[live].max()) if live.any() else 0.0
        Q = new
        if delta < cfg.tol:
            break
    if rule in ("advantage", "state_mean"):
        glob = float((counts * Q).sum() / max(counts.sum(), 1))
    else:
        glob = {"low": inp.lo, "high": inp.hi, "zero": 0.0}[rule]
    unseen_q = np.full(A, glob)

    def q_fn(obs: np.ndarray) -> np.ndarray:
        ids = index.lookup(obs)
        ids = np.where(live[np.maximum(ids, 0)], ids, -1)
        return np.where((ids >= 0)[:, None], Q[np.maximum(ids, 0)], unseen_q[None, :])

    def seen(obs: np.ndarray) -> np.ndarray:
        """``(M, A)`` bool: (s, a) logged in the fitting data."""
        ids = index.lookup(obs)
        return np.where((ids >= 0)[:, None], counts[np.maximum(ids, 0)] > 0, False)

    q_fn.seen = seen  # type: ignore[attr-defined]
    return q_fn, it


class _BatchFill:
    """:func:`_fill_unseen` over a trailing batch axis for fixed counts ``(S, A, B)`` (rules
    ``advantage``, ``low``, ``high``, ``zero``): the counts' modal actions and deviation
    weights are computed once, each call then fills a ``(S, A, B)`` table."""

    def __init__(self, counts: np.ndarray, rule: Unseen, lo: float, hi: float,
                 shrink: float = 5.0) -> None:  # fmt: skip
        self.rule, self.lo, self.hi, self.shrink = rule, lo, hi, shrink
        self.seen = counts > 0
        self.modal = counts.argmax(1)[:, None, :]  # (S, 1, B)
        dev = counts * self.seen
        np.put_along_axis(dev, self.modal, 0.0, 1)
        self.dev = dev
        weight = dev.sum(0)  # (A, B)
        self.tot = weight.sum(0)  # (B,)
        self.denom = weight + shrink

    def __call__(self, Q: np.ndarray) -> np.ndarray:
        if self.rule in ("low", "high", "zero"):
            return np.where(self.seen, Q, {"low": self.lo, "high": self.hi, "zero": 0.0}[self.rule])
        ref = np.take_along_axis(Q, self.modal, 1)  # (S, 1, B)
        per_action = np.einsum("sab,sab->ab", self.dev, Q) - np.einsum(
            "sab,sb->ab", self.dev, ref[:, 0]
        )  # fmt: skip
        pooled = np.divide(
            per_action.sum(0), self.tot, out=np.zeros_like(self.tot), where=self.tot > 0
        )  # fmt: skip
        adv = (per_action + self.shrink * pooled[None, :]) / self.denom
        return np.where(self.seen, Q, np.clip(ref + adv[None], self.lo, self.hi))


def _fqe_tabular_batch(
    inp: _FQEInput, W: np.ndarray, cfg: FQEConfig, rule: Unseen, sel: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""The tabular FQE of :func:`_fqe_tabular` (one stationary table, or one per step under
    ``inp.horizon``) fitted once per column of the row weights ``W`` ``(N, B)``, all at once
    (sparse products over the rows instead of a loop over fits). Returns, at the rows ``sel``
    ``(N,)`` bool of ``inp.traj``, each fit's value of the logged action and
    :math:`\sum_a \pi(a|s) \hat Q(s, a)` under ``inp.pi``, both ``(n_sel, B)`` (its own step's
    table under a horizon; the count-weighted mean where the row's state is absent from that
    fit's data), as ``q_fn`` of the fit with ``weights=W[:, b]`` gives them."""
    from scipy import sparse

    traj, A = inp.traj, inp.traj.n_actions
    index = inp.row_index()
    sid, S, N = index.inverse, len(index), len(traj)
    K, B = S * A, W.shape[1]
    rows = np.arange(N)
    cell = sid * A + traj.action
    to_cells = sparse.csr_matrix((np.ones(N), (cell, rows)), shape=(K, N))
    live = sparse.csr_matrix((np.ones(N), (sid, rows)), shape=(S, N)) @ W > 0  # (S, B)

    def policy_rows(at: np.ndarray) -> Any:
        """sparse ``(len(at), K)``: row j sums pi(a | row at[j]) Q(state of at[j], a)."""
        cells = (sid[at] * A)[:, None] + np.arange(A)[None, :]
        return sparse.csr_matrix(
            (inp.pi[at].ravel(), (np.repeat(np.arange(len(at)), A), cells.ravel())),
            shape=(len(at), K),
        )  # fmt: skip

    # V at the next row depends on (state, policy row) only: computed once per distinct pair
    nxt = inp.next_rows()
    pairs = np.concatenate([sid[:, None].astype(np.float64), inp.pi], axis=1)
    _, first, inverse = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
    to_next_pairs, next_pair = policy_rows(first), inverse.ravel()[nxt]

    def v_next(Q: np.ndarray) -> np.ndarray:
        return np.asarray(to_next_pairs @ Q.reshape(K, B))[next_pair]

    r = traj.reward.astype(np.float64)[:, None]
    W = np.ascontiguousarray(W, dtype=np.float64)

    def counts_of(w: np.ndarray) -> np.ndarray:
        return np.asarray(to_cells @ w).reshape(S, A, B)

    def mean_of(w: np.ndarray, y: np.ndarray, counts: np.ndarray, fill: _BatchFill) -> np.ndarray:
        sums = np.asarray(to_cells @ (w * y)).reshape(S, A, B)
        mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        return np.clip(fill(mean), inp.lo, inp.hi)

    def glob_of(Q: np.ndarray, counts: np.ndarray) -> np.ndarray:
        if rule in ("advantage", "state_mean"):
            return (counts * Q).sum((0, 1)) / np.maximum(counts.sum((0, 1)), 1.0)
        return np.full(B, {"low": inp.lo, "high": inp.hi, "zero": 0.0}[rule])

    def read(Q: np.ndarray, glob: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = Q.reshape(K, B)
        here = live[sid[at]]
        q = np.where(here, flat[cell[at]], glob[None, :])
        v = np.where(here, np.asarray(policy_rows(at) @ flat), glob[None, :])
        return q, v

    if inp.horizon is None:
        counts = counts_of(W)
        fill = _BatchFill(counts, rule, inp.lo, inp.hi)
        cont = inp.cont()[:, None]
        Q = np.zeros((S, A, B))
        active = np.ones(B, dtype=bool)
        for _ in range(inp.iterations):
            new = mean_of(W, r + cont * v_next(Q), counts, fill)
            delta = np.where(live[:, None, :], np.abs(new - Q), 0.0).max((0, 1))
            Q = np.where(active[None, None, :], new, Q)
            active &= ~(delta < cfg.tol)
            if not active.any():
                break
        return read(Q, glob_of(Q, counts), rows[sel])
    H = int(inp.horizon)
    last = np.zeros(N, dtype=bool)
    last[traj.ends - 1] = True
    cont = np.where(last, 0.0, inp.gamma)[:, None]
    W_use = W * (~last | traj.done)[:, None]
    counts_all, counts_use = counts_of(W), counts_of(W_use)
    fills = {True: _BatchFill(counts_all, rule, inp.lo, inp.hi),
             False: _BatchFill(counts_use, rule, inp.lo, inp.hi)}  # fmt: skip
    step = np.clip(traj.step_index, 0, H - 1)
    at_sel = rows[sel]
    q_out, v_out = np.zeros((len(at_sel), B)), np.zeros((len(at_sel), B))
    Q = np.zeros((S, A, B))
    for t in range(H - 1, -1, -1):
        w, counts = (W, counts_all) if t == H - 1 else (W_use, counts_use)
        Q = mean_of(w, r + cont * v_next(Q), counts, fills[t == H - 1])
        j = np.flatnonzero(step[at_sel] == t)
        if len(j):
            q_out[j], v_out[j] = read(Q, glob_of(Q, counts_all), at_sel[j])
    return q_out, v_out


def _fqe_linear(
    inp: _FQEInput, cfg: FQEConfig, rule: Unseen
) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    r"""Linear FQE: :math:`\hat Q(s, a) = \phi(s)^\top \theta_a` with :math:`\phi(s) = (1, z(s))`
    (z-scored observations), each :math:`\theta_a` a ridge regression on the rows logging
    :math:`a`; actions never logged take the row-weighted mean of the others' coefficients."""
    del rule
    traj, A = inp.traj, inp.traj.n_actions
    scale = _Standardise(traj.obs.astype(np.float64))

    def phi(obs: np.ndarray) -> np.ndarray:
        z = (np.asarray(obs, np.float64) - scale.mean) / scale.sd
        return np.concatenate([np.ones((len(z), 1)), z], axis=1)

    X = phi(traj.obs)
    nxt = inp.next_rows()
    X_next, pi_next = X[nxt], inp.pi[nxt]
    cont, r = inp.cont(), traj.reward.astype(np.float64)
    d = X.shape[1]
    pen = cfg.ridge * np.eye(d)
    pen[0, 0] = 0.0
    counts = np.bincount(traj.action, minlength=A)
    solvers = {}
    for a in np.nonzero(counts)[0]:
        Xa = X[traj.action == a]
        solvers[int(a)] = (np.linalg.pinv(Xa.T @ Xa + pen) @ Xa.T, traj.action == a)
    theta = np.zeros((d, A))
    it = 0
    while it < inp.iterations:
        it += 1
        q_next = np.clip(X_next @ theta, inp.lo, inp.hi)
        y = r + cont * (pi_next * q_next).sum(1)
        new = np.zeros_like(theta)
        for a, (proj, rows) in solvers.items():
            new[:, a] = proj @ y[rows]
        logged = counts > 0
        new[:, ~logged] = (new[:, logged] * counts[logged]).sum(1, keepdims=True) / counts.sum()
        delta = float(np.abs(X @ (new - theta)).max())
        theta = new
        if delta < cfg.tol:
            break

    def q_fn(obs: np.ndarray) -> np.ndarray:
        return np.clip(phi(obs) @ theta, inp.lo, inp.hi)

    return q_fn, it


def _seeded(seed: int, build: Callable[..., nn.Module], *args: int) -> nn.Module:
    """Build a module with initial weights drawn from ``seed``, leaving the global RNG as is."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(*args)


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, d_out),
    )  # fmt: skip


def _fqe_mlp(
    inp: _FQEInput, cfg: FQEConfig, rule: Unseen
) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    del rule
    traj = inp.traj
    tr = traj.transitions()
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.as_tensor(traj.obs)
    x_next = torch.as_tensor(tr["next_obs"])
    a = torch.as_tensor(traj.action)
    r = torch.as_tensor(traj.reward)
    cont = torch.as_tensor(inp.cont(), dtype=torch.float32)
    pi_next = torch.as_tensor(inp.pi[inp.next_rows()], dtype=torch.float32)
    net = _seeded(cfg.seed, _mlp, traj.obs_dim, cfg.hidden, traj.n_actions)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    n = len(traj)
    for _ in range(inp.iterations):
        with torch.no_grad():
            y = r + cont * (pi_next * net(x_next).clamp(inp.lo, inp.hi)).sum(1)
        for _ in range(cfg.steps_per_iteration):
            b = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
            q = net(x[b]).gather(1, a[b, None]).squeeze(1)
            loss = torch.mean((q - y[b]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def q_fn(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            q = net(torch.as_tensor(np.asarray(obs, dtype=np.float32))).double().numpy()
        return np.clip(q, inp.lo, inp.hi)

    return q_fn, inp.iterations


_FQE = {"tabular": _fqe_tabular, "linear": _fqe_linear, "mlp": _fqe_mlp}
FQEKind = Literal["tabular", "linear", "mlp"]


def patient_folds(traj: Trajectories, k: int, seed: int = 0) -> np.ndarray:
    """``(N,)`` fold id in ``[0, k)`` of every row; all rows of a patient share one fold.

    Example:
        >>> from clinfuse.rl.envs.tabular import random_mdp, uniform_policy
        >>> t = random_mdp(4, 2, 0).sample(uniform_policy(4, 2), 10, seed=0)
        >>> f = patient_folds(t, 3)
        >>> all(len(set(f[t.patient == p])) == 1 for p in t.patients)
        True
    """
    if k < 1:
        raise ConfigError("cross_fit must be >= 1 folds", expected=">= 1", found=k)
    n = traj.n_episodes
    if k > n:
        raise DataError(
            "more folds than patients", expected=f"cross_fit <= {n} episodes", found=k,
            fix="lower cross_fit",
        )  # fmt: skip
    ep_fold = np.empty(n, dtype=np.int64)
    ep_fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    lengths = traj.ends - traj.starts
    return np.repeat(ep_fold, lengths)


def _fit_fold(
    traj: Trajectories, pi: np.ndarray, rows: np.ndarray, gamma: float, iterations: int,
    kind: str, cfg: FQEConfig, rule: Unseen, lo: float, hi: float, horizon: int | None = None,
) -> tuple[Callable[..., np.ndarray], int]:  # fmt: skip
    inp = _FQEInput(traj.subset(rows), pi[rows], gamma, iterations, lo, hi, horizon)
    return _FQE[kind](inp, cfg, rule)


def detect_horizon(traj: Trajectories) -> int | None:
    """The episode cap :math:`H` when the data show one, else None.

    Every episode cut short (``timeout`` at its last step) has the same length :math:`H` and no
    episode is longer: the data come from a finite-horizon process (e.g. the 20-step cap of the
    Oberst-Sontag simulator), whose values depend on the steps left.

    Example:
        >>> from clinfuse.rl.envs.tabular import random_mdp, uniform_policy
        >>> mdp = random_mdp(4, 2, 0, horizon=5, p_terminate=0.05)
        >>> detect_horizon(mdp.sample(uniform_policy(4, 2), 50, seed=0))
        5
    """
    lengths = traj.ends - traj.starts
    cut = traj.timeout[traj.ends - 1] & ~traj.done[traj.ends - 1]
    if not cut.any():
        return None
    caps = np.unique(lengths[cut])
    if len(caps) == 1 and caps[0] == lengths.max():
        return int(caps[0])
    return None


def fqe(
    traj: Trajectories,
    target_policy_fn: PolicyFn | np.ndarray,
    gamma: float,
    kind: FQEKind = "tabular",
    iterations: int = 200,
    config: FQEConfig | None = None,
    cross_fit: int = 5,
    value_range: tuple[float, float] | None = None,
    seed: int = 0,
    horizon: int | Literal["auto"] | None = "auto",
) -> FQEResult:
    r"""Fitted Q evaluation (Le, Voloshin & Yue 2019), cross-fitted by patient:

    .. math::
        Q_{k+1} = \arg\min_Q \sum_{(s,a,r,s')} \Big(Q(s,a) - r - \gamma\, b
        \sum_{a'} \pi_e(a'|s')\, Q_k(s',a')\Big)^2, \qquad
        \hat J = \frac1n \sum_i \sum_a \pi_e(a|s_{i,0})\, \hat Q^{(-f(i))}(s_{i,0}, a),

    with :math:`b = 0` at an episode's last step (terminal or truncated, see
    :meth:`Trajectories.transitions`) and :math:`\hat Q^{(-f)}` fitted on the patients outside
    fold :math:`f` (``cross_fit`` folds; ``cross_fit=1`` fits and evaluates in sample, which
    lets each patient's own noise into its :math:`\hat Q` and biases :func:`dr`). Every value is
    clipped to the return range (``value_range``, default :func:`value_range` of the data).

    ``tabular`` keys the table by exact observation rows (one-hot or index states), solves each
    regression exactly (the cell mean) and gives never-logged (s, a) the ``config.unseen`` value;
    it also reports ``bounds``, the estimate with those cells at the low and at the high end of
    the return range. With a ``horizon`` :math:`H` (``auto``: :func:`detect_horizon`) it fits
    one table per step by backward induction (:func:`_fqe_tabular_horizon`), since under a cap
    the value depends on the steps left and a single stationary table, which takes the cut
    rows as terminal, mixes the two (on the Oberst-Sontag simulator it overestimated the
    physician's value by about 0.01 and a near-physician policy's by 0.025); each row's
    :math:`\hat Q` is then the table of its own step. Other kinds ignore ``horizon``.
    ``linear`` fits one ridge regression on the z-scored observations per
    action (any observations, fast). ``mlp`` warm-starts a two-layer network and takes
    ``steps_per_iteration`` Adam steps per iteration.

    Args:
        target_policy_fn: a function ``obs (M, D) -> (M, A)`` probabilities, or the ``(N, A)``
            probabilities at the logged observations (the next states of FQE are logged rows).
        seed: seed of the patient folds.

    Shape:
        Output ``value`` scalar; ``q_hat`` ``(N, A)``; ``q_fn(obs (M, D)) -> (M, A)``.
    """
    gamma = _check_gamma(gamma)
    if kind not in _FQE:
        raise ConfigError("unknown FQE kind", expected=f"one of {sorted(_FQE)}", found=kind)
    if iterations < 1:
        raise ConfigError("iterations must be positive", expected=">= 1", found=iterations)
    cfg = config or FQEConfig()
    rules_known = ("advantage", "state_mean", "low", "high", "zero")
    if cfg.unseen not in rules_known:
        raise ConfigError("unknown unseen rule", expected=f"one of {rules_known}", found=cfg.unseen)
    grid = _Grid.of(traj)  # raises on empty data
    pi = _target_probs(traj, target_policy_fn)
    lo, hi = value_range_checked(traj, gamma, value_range)
    folds = patient_folds(traj, cross_fit, seed)
    H = detect_horizon(traj) if horizon == "auto" else horizon
    H = H if kind == "tabular" else None
    steps = traj.step_index
    everything = np.ones(len(traj), dtype=bool)
    rules: list[Unseen] = [cfg.unseen] + (["low", "high"] if kind == "tabular" else [])
    s0 = traj.starts
    values, q_main, unseen_mass, its = [], None, 0.0, 0
    for rule in rules:
        q_hat = np.zeros((len(traj), traj.n_actions))
        for f in range(cross_fit):
            test = folds == f
            train = ~test if cross_fit > 1 else everything
            q_fn, it = _fit_fold(traj, pi, train, gamma, iterations, kind, cfg, rule, lo, hi, H)
            its = max(its, it)
            q_hat[test] = q_fn(traj.obs[test], steps[test]) if H else q_fn(traj.obs[test])
            if rule == rules[0] and kind == "tabular":
                seen = q_fn.seen(traj.obs[test])  # type: ignore[attr-defined]
                unseen_mass += float((pi[test] * ~seen).sum())
        values.append(float(np.mean((pi[s0] * q_hat[s0]).sum(1))))
        if q_main is None:
            q_main = q_hat
    full_fn, _ = _fit_fold(
        traj, pi, everything, gamma, iterations, kind, cfg, cfg.unseen, lo, hi, H
    )  # fmt: skip
    bounds = (values[1], values[2]) if kind == "tabular" else None
    log.debug("FQE (%s, %d folds): value %.4f, bounds %s", kind, cross_fit, values[0], bounds)
    del grid
    return FQEResult(
        values[0], full_fn, its, q_main, (lo, hi), bounds, unseen_mass / len(traj), cross_fit, H
    )


def _refit_q(
    traj: Trajectories, pi: np.ndarray, folds: np.ndarray, model: FQEResult, kind: str,
    iterations: int, cfg: FQEConfig, gamma: float,
) -> np.ndarray:  # fmt: skip
    r"""``(N, A)`` cross-fitted :math:`\hat Q` of ``model``'s settings refitted on ``traj`` with
    the given row folds (the bootstrap's refit: no bounds, no full-data model)."""
    lo, hi = model.value_range
    steps = traj.step_index
    q_hat = np.zeros((len(traj), traj.n_actions))
    everything = np.ones(len(traj), dtype=bool)
    for f in range(model.folds):
        test = folds == f
        if not test.any():
            continue
        train = ~test if model.folds > 1 else everything
        q_fn, _ = _fit_fold(
            traj, pi, train, gamma, iterations, kind, cfg, cfg.unseen, lo, hi, model.horizon
        )  # fmt: skip
        q_hat[test] = q_fn(traj.obs[test], steps[test]) if model.horizon else q_fn(traj.obs[test])
    return q_hat


def value_range_checked(
    traj: Trajectories, gamma: float, given: tuple[float, float] | None
) -> tuple[float, float]:
    """``given`` after a sanity check, else :func:`value_range` of the data."""
    if given is None:
        return value_range(traj, gamma)
    lo, hi = (float(v) for v in given)
    if not lo <= hi:
        raise ConfigError(
            "value_range must be (low, high) with low <= high", expected="low <= high",
            found=given,
        )  # fmt: skip
    return lo, hi


# ==========================================================================================
# behaviour model
# ==========================================================================================
@dataclass(frozen=True)
class BehaviourConfig:
    """Settings of :func:`fit_behaviour`."""

    calib_fraction: float = 0.2
    """Share of patients held out to fit the temperature and report calibration."""
    clip: float = 1e-3
    """Probability floor of every allowed action."""
    l2: float = 1e-4
    """Weight decay (logistic: penalty on the weights; mlp: Adam weight decay)."""
    hidden: int = 64
    """Width of the MLP's two hidden layers."""
    epochs: int = 30
    """MLP passes over the training rows."""
    batch_size: int = 256
    """MLP rows per Adam step."""
    lr: float = 3e-3
    """MLP Adam learning rate."""
    max_iter: int = 200
    """Logistic: L-BFGS iterations."""
    smoothing: float | None = None
    """Tabular: Dirichlet pseudo-count added to every allowed action of a seen state (1 is
    Laplace smoothing). None: an empirical-Bayes Dirichlet prior
    :math:`\alpha_0 m(a)` towards the marginal action frequencies :math:`m`, with
    :math:`\alpha_0` from ``prior_strengths`` chosen by held-out NLL (``prior_strength``
    without calibration). Either way no allowed action falls below its prior share."""
    prior_strengths: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
    """Tabular: candidate total pseudo-counts :math:`\alpha_0` of the empirical-Bayes prior."""
    prior_strength: float = 1.0
    """Tabular: :math:`\alpha_0` used without calibration."""
    ece_bins: int = 10
    """Confidence bins of the expected calibration error."""
    sharpen_z: float = 2.0
    """A temperature below 1 (sharper than the fitted model) is kept only when its held-out NLL
    gain over 1 exceeds this many standard errors; count (``tabular``) models are never
    sharpened."""
    refit: bool = True
    """Refit ``tabular`` and ``logistic`` models on every patient once the temperature is chosen
    on the held-out ones (the held-out patients' counts are not lost)."""


def _masked_softmax(logits: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _floor(p: np.ndarray, mask: np.ndarray | None, clip: float) -> np.ndarray:
    r"""Floor every allowed action at ``clip``: :math:`p' = c + (1 - k c)\, p` over the
    :math:`k` allowed actions (rows stay normalised; forbidden actions stay exactly 0)."""
    allowed = np.ones_like(p, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    k = allowed.sum(axis=1, keepdims=True)
    c = np.minimum(clip, 1.0 / k)
    return np.where(allowed, c + (1.0 - k * c) * p, 0.0)


def _nll(p: np.ndarray, a: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(a)), a], 1e-300))))


def _ece(p: np.ndarray, a: np.ndarray, bins: int) -> float:
    r"""Top-label expected calibration error
    :math:`\sum_b \frac{|B_b|}{N}\,|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)|`."""
    conf = p.max(1)
    hit = (p.argmax(1) == a).astype(np.float64)
    b = np.minimum((conf * bins).astype(int), bins - 1)
    n = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, hit, bins) - np.bincount(b, conf, bins))
    return float(gap.sum() / max(n.sum(), 1))


@dataclass(eq=False)
class BehaviourModel:
    r"""A fitted behaviour policy :math:`\hat\pi_b(a|s) \propto \exp(f(s)_a / \tau)` over the
    allowed actions, floored at ``clip`` (see :func:`fit_behaviour`)."""

    kind: str
    """``logistic``, ``mlp`` or ``tabular``."""
    logits_fn: Callable[[np.ndarray], np.ndarray]
    """Observations ``(M, D)`` -> uncalibrated logits ``(M, A)``."""
    n_actions: int
    """Number of actions."""
    temperature: float = 1.0
    """Calibration temperature :math:`\\tau`."""
    clip: float = 1e-3
    """Probability floor of the allowed actions."""
    report: dict[str, Any] = field(default_factory=dict)
    """Fit diagnostics: held-out NLL and ECE before/after calibration, split sizes."""

    def proba(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Action probabilities; forbidden actions (``mask`` False) get exactly 0.

        Shape:
            obs ``(M, D)``; mask ``(M, A)`` bool or None. Output ``(M, A)``, rows sum to 1.
        """
        obs = np.asarray(obs, dtype=np.float32)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (len(obs), self.n_actions):
                raise DataError(
                    "mask must be (M, A)", expected=(len(obs), self.n_actions), found=mask.shape
                )
        p = _masked_softmax(self.logits_fn(obs) / self.temperature, mask)
        return _floor(p, mask, self.clip)


class _Standardise:
    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(0)
        sd = x.std(0)
        self.sd = np.where(sd > 0, sd, 1.0)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(((x - self.mean) / self.sd).astype(np.float32))


def _torch_logits_fn(net: nn.Module, scale: _Standardise) -> Callable[[np.ndarray], np.ndarray]:
    net.eval()

    def logits(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(scale(obs)).double().numpy()

    return logits


def _masked_ce(z: torch.Tensor, a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(z.masked_fill(~mask, -1e9), a)


def _fit_logistic(
    x: np.ndarray, a: np.ndarray, mask: np.ndarray, n_actions: int, cfg: BehaviourConfig, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    r"""Multinomial logistic regression, :math:`\min_{W,b}
    -\frac1N\sum_i \log \mathrm{softmax}(W x_i + b)_{a_i} + \lambda \|W\|^2` by L-BFGS."""
    scale = _Standardise(x)
    X, A, M = scale(x), torch.as_tensor(a), torch.as_tensor(mask)
    net = _seeded(seed, nn.Linear, x.shape[1], n_actions).double()
    X = X.double()
    opt = torch.optim.LBFGS(net.parameters(), max_iter=cfg.max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _masked_ce(net(X), A, M) + cfg.l2 * (net.weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    net.eval()

    def logits(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(scale(obs).double()).numpy()

    return logits


def _fit_mlp(
    x: np.ndarray, a: np.ndarray, mask: np.ndarray, n_actions: int, cfg: BehaviourConfig, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    """Two-hidden-layer MLP classifier trained by Adam on the masked cross-entropy."""
    gen = torch.Generator().manual_seed(seed)
    scale = _Standardise(x)
    X, A, M = scale(x), torch.as_tensor(a), torch.as_tensor(mask)
    net = _seeded(seed, _mlp, x.shape[1], cfg.hidden, n_actions)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.l2)
    for _ in range(cfg.epochs):
        for b in torch.randperm(len(X), generator=gen).split(cfg.batch_size):
            loss = _masked_ce(net(X[b]), A[b], M[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return _torch_logits_fn(net, scale)


def _fit_tabular(
    x: np.ndarray, a: np.ndarray, mask: np.ndarray, n_actions: int, cfg: BehaviourConfig, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    r"""Counts per exact observation row: :math:`\hat\pi_b(a|s) \propto n(s,a) + c_a` over the
    actions allowed in ``s``, with :math:`c_a` = ``smoothing`` or the empirical-Bayes prior
    :math:`\alpha_0 m(a)` (:math:`m` the marginal action frequencies, add-one smoothed);
    unseen rows get :math:`m`."""
    index = _RowIndex(x)
    counts = np.zeros((len(index), n_actions))
    np.add.at(counts, (index.inverse, a), 1.0)
    allowed = np.zeros((len(index), n_actions), dtype=bool)
    np.logical_or.at(allowed, index.inverse, mask)
    freq = np.bincount(a, minlength=n_actions) + 1.0
    freq = freq / freq.sum()
    prior = cfg.smoothing if cfg.smoothing is not None else cfg.prior_strength * freq
    table = np.log(np.where(allowed, counts + prior, 1e-12))
    marginal = np.log(freq)

    def logits(obs: np.ndarray) -> np.ndarray:
        ids = index.lookup(obs)
        return np.where((ids >= 0)[:, None], table[np.maximum(ids, 0)], marginal[None, :])

    return logits


_BEHAVIOUR = {"logistic": _fit_logistic, "mlp": _fit_mlp, "tabular": _fit_tabular}


def _row_nll(p: np.ndarray, a: np.ndarray) -> np.ndarray:
    return -np.log(np.maximum(p[np.arange(len(a)), a], 1e-300))


def _fit_temperature(
    logits: np.ndarray, a: np.ndarray, mask: np.ndarray, clip: float, sharpen_z: float | None
) -> float:
    r""":math:`\tau^* = \arg\min_\tau -\sum_i \log p_\tau(a_i|s_i)` with
    :math:`p_\tau` the floored :math:`\mathrm{softmax}(z_i/\tau)`, :math:`\log\tau \in [-3, 3]`.

    :math:`\tau = 1` is kept unless the search beats it. A sharpening :math:`\tau < 1` (which
    drives small probabilities towards the floor and importance weights up) is kept only when
    its held-out NLL gain over :math:`\tau = 1` exceeds ``sharpen_z`` standard errors of the
    per-row differences; ``sharpen_z=None`` never sharpens (count models); otherwise the search
    is repeated over :math:`\tau \ge 1`."""

    def probs(log_t: float) -> np.ndarray:
        return _floor(_masked_softmax(logits / np.exp(log_t), mask), mask, clip)

    def search(lo: float, hi: float) -> float:
        best = minimize_scalar(
            lambda v: _nll(probs(v), a), bounds=(lo, hi), method="bounded",
            options={"xatol": 1e-6},
        )  # fmt: skip
        return float(best.x) if best.fun < _nll(probs(0.0), a) else 0.0

    log_t = search(-3.0, 3.0)
    if log_t < 0.0:
        gain = _row_nll(probs(0.0), a) - _row_nll(probs(log_t), a)
        se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else np.inf
        if sharpen_z is None or not gain.mean() > sharpen_z * se:
            log_t = search(0.0, 3.0)
    return float(np.exp(log_t))


def _episode_ess(traj_rows: np.ndarray, ratio: np.ndarray) -> float:
    """ESS share of per-episode products of ``ratio`` (rows grouped by episode id)."""
    _, inv = np.unique(traj_rows, return_inverse=True)
    log_w = np.bincount(inv.ravel(), weights=np.log(np.maximum(ratio, 1e-300)))
    w = np.exp(log_w - log_w.max())
    return ess(w) / len(w) if len(w) else 1.0


def _best_prior(
    x: np.ndarray, a: np.ndarray, mask: np.ndarray, fit: np.ndarray, cal: np.ndarray,
    traj: Trajectories, cfg: BehaviourConfig,
) -> float:  # fmt: skip
    """The empirical-Bayes prior strength with the smallest held-out NLL."""
    nll = {}
    for s in cfg.prior_strengths:
        c = replace(cfg, prior_strength=float(s))
        z = _fit_tabular(x[fit], a[fit], mask[fit], traj.n_actions, c, 0)(x[cal])
        nll[float(s)] = _nll(_floor(_masked_softmax(z, mask[cal]), mask[cal], cfg.clip), a[cal])
    best = min(nll, key=nll.__getitem__)
    log.debug("tabular behaviour prior strengths (held-out NLL): %s -> %g", nll, best)
    return best


def fit_behaviour(
    traj: Trajectories,
    kind: Literal["logistic", "mlp", "tabular"] = "logistic",
    calibrate: bool = True,
    seed: int = 0,
    config: BehaviourConfig | None = None,
) -> BehaviourModel:
    r"""Fit :math:`\hat\pi_b(a|s)` by (masked) maximum likelihood on the logged actions.

    With ``calibrate``, a ``calib_fraction`` of patients is held out: the model is fitted on the
    rest and a temperature :math:`\tau` minimising the held-out NLL of
    :math:`\mathrm{softmax}(f(s)/\tau)` is chosen (Guo et al. 2017). Probabilities are then
    floored at ``clip`` over the allowed actions (:math:`p' = c + (1-kc)p`), so ratios
    :math:`\pi_e/\hat\pi_b` stay bounded by :math:`1/c`; masked actions get 0.

    ``report`` holds ``nll``/``ece`` (top-label, ``ece_bins`` bins) on the held-out patients
    before (``*_raw``) and after calibration, ``temperature``, ``n_train``, ``n_calib``
    (in-sample values when ``calibrate`` is False).

    Shape:
        Output ``proba(obs (M, D), mask (M, A) | None) -> (M, A)``.
    """
    cfg = config or BehaviourConfig()
    if kind not in _BEHAVIOUR:
        raise ConfigError(
            "unknown behaviour model", expected=f"one of {sorted(_BEHAVIOUR)}", found=kind
        )
    if not 0.0 < cfg.calib_fraction < 1.0:
        raise ConfigError(
            "calib_fraction must lie in (0, 1)", expected="(0, 1)", found=cfg.calib_fraction
        )
    grid = _Grid.of(traj)
    rng = np.random.default_rng(seed)
    n_calib = int(round(cfg.calib_fraction * grid.n)) if calibrate else 0
    if calibrate and not 1 <= n_calib < grid.n:
        raise DataError(
            "too few patients to hold out a calibration set",
            expected=f"calib_fraction * n_episodes >= 1 with some left to fit ({grid.n} episodes)",
            found=n_calib,
            fix="pass calibrate=False or more episodes",
        )
    held = np.zeros(grid.n, dtype=bool)
    held[rng.permutation(grid.n)[:n_calib]] = True
    rows_cal = held[grid.ep]
    fit_rows = ~rows_cal
    mask = traj.allowed()
    x, a = traj.obs, traj.action
    if kind == "tabular" and cfg.smoothing is None and calibrate:
        cfg = replace(cfg, prior_strength=_best_prior(x, a, mask, fit_rows, rows_cal, traj, cfg))
    logits_fn = _BEHAVIOUR[kind](
        x[fit_rows], a[fit_rows], mask[fit_rows], traj.n_actions, cfg, seed
    )
    ev = rows_cal if calibrate else fit_rows
    z = logits_fn(x[ev])
    sharpen_z = None if kind == "tabular" else cfg.sharpen_z
    temperature = _fit_temperature(z, a[ev], mask[ev], cfg.clip, sharpen_z) if calibrate else 1.0
    p_raw = _floor(_masked_softmax(z, mask[ev]), mask[ev], cfg.clip)
    p_cal = _floor(_masked_softmax(z / temperature, mask[ev]), mask[ev], cfg.clip)
    rows = np.arange(len(ev))[ev]
    report = {
        "kind": kind,
        "n_train": int(fit_rows.sum()),
        "n_calib": int(rows_cal.sum()),
        "temperature": temperature,
        "nll_raw": _nll(p_raw, a[ev]),
        "ece_raw": _ece(p_raw, a[ev], cfg.ece_bins),
        "nll": _nll(p_cal, a[ev]),
        "ece": _ece(p_cal, a[ev], cfg.ece_bins),
        # held-out clinician episodes reweighted by calibrated / uncalibrated probabilities:
        # 1 when calibration keeps the model, small when a temperature sharpens it
        "ess_calibration": _episode_ess(
            grid.ep[rows], p_cal[np.arange(len(rows)), a[ev]] / p_raw[np.arange(len(rows)), a[ev]]
        ),
        "refit": bool(calibrate and cfg.refit and kind in ("tabular", "logistic")),
        "prior_strength": cfg.prior_strength if kind == "tabular" else None,
    }
    if report["refit"]:
        logits_fn = _BEHAVIOUR[kind](x, a, mask, traj.n_actions, cfg, seed)
        report["n_train"] = len(traj)
    log.info("behaviour model %s: %s", kind, report)
    return BehaviourModel(kind, logits_fn, traj.n_actions, temperature, cfg.clip, report)


# ==========================================================================================
# bootstrap and the evaluation table
# ==========================================================================================
def _resample(traj: Trajectories, episodes: np.ndarray) -> tuple[Trajectories, np.ndarray]:
    """Episodes ``episodes`` (with repeats) as a new data set with patient ids ``0..m-1``;
    returns it and the ``(N',)`` original row of each new row. Per-row ``meta`` arrays follow."""
    starts, ends = traj.starts[episodes], traj.ends[episodes]
    lengths = ends - starts
    offsets = np.repeat(starts - np.cumsum(np.append(0, lengths[:-1])), lengths)
    rows = np.arange(int(lengths.sum())) + offsets
    n = len(traj)
    meta = {
        k: (v[rows] if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n else v)
        for k, v in traj.meta.items()
    }
    boot = replace(
        traj,
        obs=traj.obs[rows],
        action=traj.action[rows],
        reward=traj.reward[rows],
        done=traj.done[rows],
        timeout=traj.timeout[rows],
        patient=np.repeat(np.arange(len(episodes)), lengths),
        time=traj.time[rows],
        mask=None if traj.mask is None else traj.mask[rows],
        meta=meta,
    )
    return boot, rows


def bootstrap_ci(
    traj: Trajectories,
    estimator_fn: Callable[[Trajectories, np.ndarray], float | OPEResult],
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    r"""Patient-level percentile bootstrap interval: resample the :math:`n` episodes with
    replacement ``n_boot`` times, recompute :math:`\hat J^{(b)}`, return the
    :math:`\alpha/2` and :math:`1-\alpha/2` quantiles. Its lower end is the bootstrap
    (HCOPE-style) lower bound.

    Args:
        estimator_fn: ``(boot_traj, rows) -> value`` where ``rows`` ``(N',)`` maps each row of
            the resampled data to the original row, so per-row arrays follow, e.g.
            ``lambda t, rows: cwpdis(t, pi_e[rows], pi_b[rows], 0.99).value``. Models (``q_hat``)
            are not refitted per resample.
    """
    if n_boot < 2 or not 0.0 < alpha < 1.0:
        raise ConfigError("bootstrap needs n_boot >= 2 and alpha in (0, 1)", found=(n_boot, alpha))
    vals = np.empty(n_boot)
    for b, episodes in enumerate(resamples(traj.n_episodes, n_boot, seed)):
        boot, rows = _resample(traj, episodes)
        out = estimator_fn(boot, rows)
        vals[b] = out.value if isinstance(out, OPEResult) else float(out)
    low, high = percentile_interval(vals, alpha)
    return float(low), float(high)


# ==========================================================================================
# positivity diagnostics, return-range bounds and the evaluation table
# ==========================================================================================
def positivity(
    traj: Trajectories, pi_e: np.ndarray, pi_b: np.ndarray, threshold: float = 0.01
) -> dict[str, Any]:
    r"""Overlap diagnostics of a target policy against the (estimated) behaviour policy.

    - ``low_support_mass``: :math:`\frac1N\sum_{i,t}\sum_a \pi_e(a|s_{i,t})
      [\hat\pi_b(a|s_{i,t}) < \text{threshold}]`, the target's mass on actions the clinicians
      (almost) never take where they were, which importance weights cannot see;
    - ``excess_low_support_mass``: :math:`\frac1N\sum_{i,t}\sum_a \big(\pi_e(a|s_{i,t}) -
      \hat\pi_b(a|s_{i,t})\big)_+ [\hat\pi_b(a|s_{i,t}) < \text{threshold}]`, the part of that
      mass the clinicians do not put there themselves (0 for the clinicians' own policy and for
      mixes that add mass only on their support): the share that the ``positivity`` flag of
      :func:`evaluate_policy` reads;
    - ``ess``, ``ess_share``: effective sample size of the episode weights (and over ``n``);
    - ``ess_per_step`` ``(T,)`` and its minimum ``min_step_ess``: the ESS of :math:`w_{\cdot,t}`;
    - ``max_weight``, ``max_weight_share``: the largest episode weight and its share of the sum.

    Example:
        >>> from clinfuse.rl.envs.tabular import random_mdp, uniform_policy
        >>> t = random_mdp(4, 2, 0).sample(uniform_policy(4, 2), 50, seed=0)
        >>> p = np.full((len(t), 2), 0.5)
        >>> d = positivity(t, p, p)
        >>> d["ess_share"], d["low_support_mass"], d["max_weight"]
        (1.0, 0.0, 1.0)
        >>> rare = np.tile([0.995, 0.005], (len(t), 1))  # clinicians' rare action 1
        >>> d = positivity(t, rare, rare)  # their own policy: rare, but not beyond them
        >>> round(d["low_support_mass"], 3), d["excess_low_support_mass"]
        (0.005, 0.0)
    """
    pi_e = _check_probs("pi_e", pi_e, traj)
    pi_b = _check_probs("pi_b", pi_b, traj)
    grid = _Grid.of(traj)
    W = grid.weights(_ratios(traj, pi_e, pi_b))
    w_end = W[:, -1]
    per_step = np.array([ess(W[:, t]) for t in range(grid.T)])
    tot = float(w_end.sum())
    return {
        "threshold": float(threshold),
        "low_support_mass": float(np.mean((pi_e * (pi_b < threshold)).sum(1))),
        "excess_low_support_mass": float(
            np.mean((np.clip(pi_e - pi_b, 0.0, None) * (pi_b < threshold)).sum(1))
        ),
        "ess": ess(w_end),
        "ess_share": ess(w_end) / grid.n,
        "ess_per_step": per_step,
        "min_step_ess": float(per_step.min()),
        "max_weight": float(w_end.max()),
        "max_weight_share": float(w_end.max() / tot) if tot > 0 else 1.0,
    }


def q_sanity(
    q_logged: np.ndarray, value_range: tuple[float, float], tol: float = 0.0
) -> dict[str, Any]:
    """Mean learned Q on the logged actions against the return range: an over-estimating
    learner (e.g. mean Q 1.65 for returns in [0, 1]) is flagged ``q_outside_range``.

    Example:
        >>> q_sanity(np.array([1.5, 1.8]), (0.0, 1.0))["q_outside_range"]
        True
    """
    q = np.asarray(q_logged, dtype=np.float64)
    lo, hi = value_range
    mean = float(q.mean())
    return {
        "q_logged_mean": mean,
        "q_logged_min": float(q.min()),
        "q_logged_max": float(q.max()),
        "return_low": float(lo),
        "return_high": float(hi),
        "share_outside": float(np.mean((q < lo - tol) | (q > hi + tol))),
        "q_outside_range": bool(mean < lo - tol or mean > hi + tol),
    }


_WEIGHTED = frozenset({"is", "wis", "pdis", "cwpdis", "dr", "wdr"})


def _flags(
    name: str, raw: float, low: float, high: float, ess_value: float, lo: float, hi: float,
    ess_floor: float, support: dict[str, Any], max_low_support: float,
) -> list[str]:  # fmt: skip
    out = []
    if not lo <= raw <= hi:
        out.append("out_of_range")
    if np.isfinite(low) and (low < lo or high > hi):
        out.append("ci_clipped")
    if name in _WEIGHTED and ess_value < ess_floor:
        out.append("low_ess")
    if name in _WEIGHTED and support["excess_low_support_mass"] > max_low_support:
        out.append("positivity")
    return out


def format_estimate(row: pd.Series | dict[str, Any], digits: int = 2) -> str:
    """One estimate of :func:`evaluate_policy` as text: ``value (low, high)``, followed by its
    flags in brackets, so a clipped or unreliable value is never shown bare.

    Example:
        >>> format_estimate({"value": 1.0, "ci_low": 0.9, "ci_high": 1.0, "value_raw": 1.089,
        ...                  "ess": 8.0, "flags": "out_of_range;ci_clipped;low_ess"})
        '1.00 (0.90, 1.00) [outside the return range (raw 1.09); CI clipped to it; ESS 8]'
    """
    f = f".{digits}f"
    text = f"{row['value']:{f}}"
    if np.isfinite(row.get("ci_low", np.nan)):
        text += f" ({row['ci_low']:{f}}, {row['ci_high']:{f}})"
    flags = [x for x in str(row.get("flags", "") or "").split(";") if x]
    words = {
        "out_of_range": lambda: f"outside the return range (raw {row['value_raw']:{f}})",
        "ci_clipped": lambda: "CI clipped to it",
        "low_ess": lambda: f"ESS {row['ess']:.0f}",
        "positivity": lambda: "target acts where clinicians do not",
    }
    said = [words[x]() for x in flags if x in words]
    return text + (f" [{'; '.join(said)}]" if said else "")


def _auto_kind(traj: Trajectories) -> FQEKind:
    """``tabular`` for discrete observations (few distinct rows), else ``linear``."""
    distinct = len(_RowIndex(traj.obs))
    return "tabular" if distinct <= max(50, len(traj) // 10) else "linear"


def _bootstrap_many(
    traj: Trajectories,
    runs: dict[str, Callable[..., OPEResult]],
    n_boot: int,
    alpha: float,
    seed: int,
    refit: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, tuple[float, float]]:
    """:func:`bootstrap_ci` of several estimators on the same resamples (each gets the interval
    that :func:`bootstrap_ci` with this seed gives it alone). ``refit(episodes, rows)``, when
    given, returns the model columns ``(q (N', 1), v (N',))`` refitted on each resample."""
    if n_boot <= 0:
        return dict.fromkeys(runs, (np.nan, np.nan))
    if n_boot < 2 or not 0.0 < alpha < 1.0:
        raise ConfigError("bootstrap needs n_boot >= 2 and alpha in (0, 1)", found=(n_boot, alpha))
    draws = list(resamples(traj.n_episodes, n_boot, seed))
    batch = getattr(refit, "batch", None)  # refits many resamples at once (tabular FQE)
    chunk = getattr(refit, "chunk", n_boot)
    vals = np.empty((len(runs), n_boot))
    for start in range(0, n_boot, chunk):
        part = draws[start : start + chunk]
        pre = batch(part) if batch is not None else None
        for k, episodes in enumerate(part):
            boot, rows = _resample(traj, episodes)
            if pre is not None:
                model = (pre[0][k, rows][:, None], pre[1][k, rows])
            else:
                model = refit(episodes, rows) if refit is not None else None
            for j, run in enumerate(runs.values()):
                vals[j, start + k] = run(boot, rows, model).value
    q = percentile_interval(vals, alpha, axis=1)
    return {k: (float(q[0, j]), float(q[1, j])) for j, k in enumerate(runs)}


def evaluate_policy(
    traj: Trajectories,
    pi_e: np.ndarray,
    pi_b: np.ndarray,
    gamma: float,
    q_hat: np.ndarray | None = None,
    v_hat: np.ndarray | None = None,
    estimators: Sequence[str] | None = None,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    q_model: Literal["auto", "tabular", "linear", "mlp"] | None = "auto",
    cross_fit: int = 5,
    value_range: tuple[float, float] | None = None,
    behaviour: BehaviourModel | None = None,
    ess_floor: float = 10.0,
    support_threshold: float = 0.01,
    max_low_support: float = 0.05,
    fqe_iterations: int = 200,
    fqe_config: FQEConfig | None = None,
    horizon: int | Literal["auto"] | None = "auto",
    bootstrap_refit: bool | Literal["auto"] = "auto",
) -> pd.DataFrame:
    """One row per estimator: ``estimator, value, ess, ci_low, ci_high, value_raw, flags``.

    The recipe of ``clinfuse.rl``'s README in one call: unless ``q_hat`` is given, a
    cross-fitted FQE (``q_model``, ``cross_fit`` patient folds; ``auto`` picks ``tabular`` for
    discrete observations, else ``linear``; None skips the model) supplies the doubly-robust
    estimators' :math:`\\hat Q` and its own ``fqe`` row (tabular with a step cap, ``horizon``
    given or found by :func:`detect_horizon`: one table per step). Intervals are patient-bootstrap
    percentiles (``n_boot=0`` gives NaN). With ``bootstrap_refit`` the cross-fitted FQE is
    refitted on every resample (each patient keeps its fold), so the intervals of ``dr``,
    ``wdr`` and ``fqe`` carry the model's own sampling variance (the bootstrap of FQE, Hao et
    al. 2021, arXiv 2102.03607); otherwise the model is held fixed and only the weights and
    rewards are resampled. ``auto`` (default) refits a tabular FQE, whose refits on all
    resamples run at once (:func:`_fqe_tabular_batch`, a few seconds for 200 resamples of
    10,000 rows), and holds a linear or MLP one fixed (a refit per resample costs a full fit
    each: about 2,000 s for 200 resamples of the nutrition simulator's linear FQE).

    Every ``value`` and interval is clipped to the return range (``value_range``, default:
    :func:`value_range` of the data); ``value_raw`` keeps the estimate and ``flags`` says why it
    should not be read bare: ``out_of_range``, ``ci_clipped``, ``low_ess`` (weight-based
    estimator with ESS below ``ess_floor`` episodes), ``positivity`` (more than
    ``max_low_support`` of the target's mass on actions with :math:`\\hat\\pi_b` below
    ``support_threshold``, beyond the clinicians' own mass there: ``excess_low_support_mass``
    of :func:`positivity`). ``table.attrs`` holds ``positivity`` (see :func:`positivity`),
    ``behaviour`` (the calibration report of ``behaviour``, when given), ``fqe`` (folds, bounds,
    unseen mass) and ``value_range``; :func:`describe` prints them.

    Shape:
        pi_e, pi_b, q_hat ``(N, A)``; v_hat ``(N,)``.
    """
    gamma = _check_gamma(gamma)
    pi_e, pi_b = np.asarray(pi_e, dtype=np.float64), np.asarray(pi_b, dtype=np.float64)
    support = positivity(traj, pi_e, pi_b, support_threshold)
    lo, hi = value_range_checked(traj, gamma, value_range)
    model = None
    if q_hat is None and q_model is not None:
        kind = _auto_kind(traj) if q_model == "auto" else q_model
        model = fqe(
            traj, pi_e, gamma, kind, fqe_iterations, fqe_config, cross_fit, (lo, hi), seed,
            horizon,
        )  # fmt: skip
        q_hat = model.q_hat
    if estimators is None:
        estimators = [k for k, (_, m) in ESTIMATORS.items() if q_hat is not None or not m]
        estimators += ["fqe"] if model is not None else []
    unknown = [e for e in estimators if e not in ESTIMATORS and e != "fqe"]
    if unknown:
        raise ConfigError(
            f"unknown OPE estimator(s) {unknown}",
            expected=f"some of {sorted(ESTIMATORS) + ['fqe']}",
        )
    # only the logged actions' columns enter the estimators: the point estimate and every
    # bootstrap resample read (N, 1) arrays on a one-action copy of the data (same values)
    narrow, pe1, pb1, q1, v1 = _logged_columns(traj, pi_e, pi_b, q_hat, v_hat)
    runs = {e: _estimator_run(e, pe1, pb1, gamma, q1, v1, model, narrow) for e in estimators}
    refit = None
    if bootstrap_refit == "auto":
        bootstrap_refit = model is not None and kind == "tabular"
    if bootstrap_refit and model is not None:
        refit = _bootstrap_refit(traj, pi_e, model, kind, fqe_iterations, fqe_config, gamma, seed)
    cis = _bootstrap_many(narrow, runs, n_boot, alpha, seed, refit)
    rows_out = []
    for name, run in runs.items():
        res = run(narrow, np.arange(len(traj)))
        low, high = cis[name]
        flags = _flags(
            name, res.value, low, high, res.ess, lo, hi, ess_floor, support, max_low_support
        )
        rows_out.append(
            {
                "estimator": name,
                "value": float(np.clip(res.value, lo, hi)),
                "ess": res.ess,
                "ci_low": float(np.clip(low, lo, hi)) if np.isfinite(low) else np.nan,
                "ci_high": float(np.clip(high, lo, hi)) if np.isfinite(high) else np.nan,
                "value_raw": res.value,
                "flags": ";".join(flags),
            }
        )
    table = pd.DataFrame(rows_out)
    table.attrs["value_range"] = (lo, hi)
    table.attrs["positivity"] = {k: v for k, v in support.items() if k != "ess_per_step"}
    table.attrs["positivity"]["ess_per_step"] = support["ess_per_step"].tolist()
    if behaviour is not None:
        table.attrs["behaviour"] = dict(behaviour.report)
    if model is not None:
        table.attrs["fqe"] = {
            "folds": model.folds,
            "bounds": model.bounds,
            "unseen_mass": model.unseen_mass,
            "horizon": model.horizon,
        }
    log.info("OPE:\n%s", describe(table))
    return table


def _bootstrap_refit(
    traj: Trajectories, pi_e: np.ndarray, model: FQEResult, kind: str, iterations: int,
    config: FQEConfig | None, gamma: float, seed: int,
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """``(episodes, rows) -> (q (N', 1), v (N',))``: the model refitted on a resample.

    Each original episode keeps its fold (every copy of a patient lands in the same fold, so a
    resample never fits a patient's Q on that patient's own copies)."""
    cfg = config or FQEConfig()
    row_fold = patient_folds(traj, model.folds, seed)
    ep_fold = row_fold[traj.starts]
    lengths = traj.ends - traj.starts
    if kind == "tabular":
        # a resample is a count per original episode: the tabular fit with those row weights
        # equals the fit on the materialised copies (one row index for every resample)
        index, steps = _RowIndex(traj.obs), traj.step_index
        ep_of_row = np.repeat(np.arange(traj.n_episodes), lengths)
        lo, hi = model.value_range

        def refit_weighted(episodes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            copies = np.bincount(episodes, minlength=traj.n_episodes)[ep_of_row].astype(float)
            q = np.zeros((len(traj), traj.n_actions))
            for f in range(model.folds):
                test = (row_fold == f) & (copies > 0)
                if not test.any():
                    continue
                w = copies * (row_fold != f) if model.folds > 1 else copies
                inp = _FQEInput(traj, pi_e, gamma, iterations, lo, hi, model.horizon, w, index)
                q_fn, _ = _fqe_tabular(inp, cfg, cfg.unseen)
                q[test] = (
                    q_fn(traj.obs[test], steps[test]) if model.horizon else q_fn(traj.obs[test])
                )
            qb, pi = q[rows], pi_e[rows]
            return qb[np.arange(len(rows)), traj.action[rows]][:, None], (pi * qb).sum(1)

        def refit_batch(draws: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            """``(B, N)`` logged-action values and ``(B, N)`` state values at every original
            row, one row per resample (the refits of ``refit_weighted``, all at once)."""
            copies = np.stack(
                [np.bincount(e, minlength=traj.n_episodes)[ep_of_row] for e in draws], axis=1
            ).astype(np.float64)  # fmt: skip
            q = np.zeros((len(traj), len(draws)))
            v = np.zeros((len(traj), len(draws)))
            inp = _FQEInput(traj, pi_e, gamma, iterations, lo, hi, model.horizon, None, index)
            for f in range(model.folds):
                test = row_fold == f
                w = copies * (row_fold != f)[:, None] if model.folds > 1 else copies
                q[test], v[test] = _fqe_tabular_batch(inp, w, cfg, cfg.unseen, test)
            return q.T, v.T

        if cfg.unseen != "state_mean":  # the batched fill covers the other rules
            refit_weighted.batch = refit_batch  # type: ignore[attr-defined]
            # resamples per batch: about 4 million action values in memory at once
            refit_weighted.chunk = max(1, 4_000_000 // (len(traj) * traj.n_actions))  # type: ignore[attr-defined]
        return refit_weighted

    def refit(episodes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boot, _ = _resample(traj, episodes)
        folds = np.repeat(ep_fold[episodes], lengths[episodes])
        pi = pi_e[rows]
        q = _refit_q(boot, pi, folds, model, kind, iterations, cfg, gamma)
        return q[np.arange(len(boot)), boot.action][:, None], (pi * q).sum(1)

    return refit


def _logged_columns(
    traj: Trajectories, pi_e: np.ndarray, pi_b: np.ndarray, q_hat: np.ndarray | None,
    v_hat: np.ndarray | None,
) -> tuple[Trajectories, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:  # fmt: skip
    r"""The data with one action (every logged action renamed 0) and the ``(N, 1)`` columns of
    the logged actions: :math:`\pi_e(a_t|s_t)`, :math:`\pi_b(a_t|s_t)`,
    :math:`\hat Q(s_t, a_t)`, with :math:`\hat V(s_t)` ``(N,)`` computed on the full rows. Every
    estimator gives the same value on them as on the full arrays."""
    _ratios(traj, pi_e, pi_b)  # its errors name the row and the logged action
    pi_e = _check_probs("pi_e", pi_e, traj)
    pi_b = _check_probs("pi_b", pi_b, traj)
    rows, a = np.arange(len(traj)), traj.action
    narrow = replace(
        traj, action=np.zeros(len(traj), dtype=np.int64), n_actions=1, mask=None,
        obs=np.zeros((len(traj), 1), dtype=np.float32), feature_names=None, meta={},
    )  # fmt: skip
    q1 = v1 = None
    if q_hat is not None:
        q_hat = np.asarray(q_hat, dtype=np.float64)
        if q_hat.shape != (len(traj), traj.n_actions):
            raise DataError(
                "q_hat must hold the model's action values at every logged step",
                expected=(len(traj), traj.n_actions),
                found=q_hat.shape,
            )
        q1 = q_hat[rows, a][:, None]
        v1 = (pi_e * q_hat).sum(1) if v_hat is None else np.asarray(v_hat, dtype=np.float64)
    return narrow, pi_e[rows, a][:, None], pi_b[rows, a][:, None], q1, v1


_Refit = tuple[np.ndarray, np.ndarray] | None
"""A bootstrap resample's refitted model columns ``(q (N', 1), v (N',))``, or None."""


def _estimator_run(
    name: str, pi_e: np.ndarray, pi_b: np.ndarray, gamma: float, q_hat: np.ndarray | None,
    v_hat: np.ndarray | None, model: FQEResult | None, traj: Trajectories,
) -> Callable[..., OPEResult]:  # fmt: skip
    """``(traj, rows, refit=None) -> OPEResult`` of one estimator, for the point estimate and
    the bootstrap (on the one-action data of :func:`_logged_columns`: ``v_hat`` is then given;
    ``refit``: a resample's refitted model columns, which replace ``q_hat`` and ``v_hat``)."""
    if name == "fqe":
        if q_hat is None:
            raise ConfigError(
                "estimator 'fqe' needs a model", expected="q_model or q_hat", found=None,
                fix="see the recipe in clinfuse.rl's README",
            )  # fmt: skip
        s0 = np.zeros(len(traj), dtype=bool)
        s0[traj.starts] = True
        v0 = (pi_e * q_hat).sum(1) if v_hat is None else v_hat

        def run_fqe(t: Trajectories, rows: np.ndarray, refit: _Refit = None) -> OPEResult:
            first = s0[rows]
            per = (v0[rows] if refit is None else refit[1])[first]
            return OPEResult(float(per.mean()), per, float("nan"), "fqe")

        return run_fqe
    fn, needs_model = ESTIMATORS[name]
    if needs_model and q_hat is None:
        raise ConfigError(
            f"estimator {name!r} needs a model",
            expected="q_hat (N, A) or q_model",
            found=None,
            fix="leave q_model='auto' (cross-fitted FQE), the recipe in clinfuse.rl's README",
        )

    def run(t: Trajectories, rows: np.ndarray, refit: _Refit = None) -> OPEResult:
        extra = {}
        if needs_model and refit is not None:
            extra = {"q_hat": refit[0], "v_hat": refit[1]}
        elif needs_model:
            assert q_hat is not None
            extra = {"q_hat": q_hat[rows], "v_hat": None if v_hat is None else v_hat[rows]}
        return fn(t, pi_e[rows], pi_b[rows], gamma, **extra)

    del model
    return run


def describe(table: pd.DataFrame) -> str:
    """The evaluation table as text with its calibration, positivity and model lines (what a
    user reads before trusting a number)."""
    lines = []
    b = table.attrs.get("behaviour")
    if b:
        lines.append(
            f"behaviour model ({b.get('kind')}): held-out NLL {b.get('nll', np.nan):.3f} "
            f"(raw {b.get('nll_raw', np.nan):.3f}), ECE {b.get('ece', np.nan):.3f}, "
            f"temperature {b.get('temperature', np.nan):.2f}, ESS share of the clinicians' own "
            f"episodes after calibration {b.get('ess_calibration', np.nan):.3f}"
        )
    p = table.attrs.get("positivity")
    if p:
        lines.append(
            f"positivity: target mass on actions with pi_b < {p['threshold']:g}: "
            f"{p['low_support_mass']:.3f} ({p['excess_low_support_mass']:.3f} beyond the "
            f"clinicians' own); ESS {p['ess']:.1f} ({100 * p['ess_share']:.1f}%), "
            f"smallest per-step ESS {p['min_step_ess']:.1f}, largest weight share "
            f"{p['max_weight_share']:.3f}"
        )
    m = table.attrs.get("fqe")
    if m:
        b = m["bounds"]
        extra = f", bounds with unseen (s, a) at the range ends {b[0]:.3f}..{b[1]:.3f}" if b else ""
        if m.get("horizon"):
            extra += f"; one table per step of the {m['horizon']}-step cap"
        lines.append(
            f"FQE: {m['folds']}-fold cross-fitted by patient; target mass on (s, a) unseen by "
            f"the row's model {m['unseen_mass']:.3f}" + extra
        )
    lo, hi = table.attrs.get("value_range", (-np.inf, np.inf))
    lines.append(f"return range [{lo:.3g}, {hi:.3g}]")
    for _, r in table.iterrows():
        lines.append(f"  {r['estimator']:>7}: {format_estimate(r, 3)}")
    return "\n".join(lines)
