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
    "evaluate_policy",
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
            fix="use a behaviour model with a probability floor (fit_behaviour clips at 1e-3)",
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
@dataclass(frozen=True)
class FQEConfig:
    """Fitted Q evaluation settings (the ``mlp`` fields are ignored by ``tabular``)."""

    hidden: int = 64
    """Width of the two hidden layers of the Q network."""
    steps_per_iteration: int = 50
    """Adam steps regressing on one iteration's frozen targets."""
    batch_size: int = 256
    """Transitions per Adam step."""
    lr: float = 1e-3
    """Adam learning rate."""
    tol: float = 1e-8
    """Tabular: stop when no table entry changes by more than this."""
    seed: int = 0
    """Seed of the network initialisation and minibatch order."""


@dataclass(frozen=True, eq=False)
class FQEResult:
    """A fitted Q evaluation."""

    value: float
    r"""Estimated value :math:`\frac1n\sum_i \sum_a \pi_e(a|s_{i,0}) \hat Q(s_{i,0}, a)`."""
    q_fn: Callable[[np.ndarray], np.ndarray]
    """Observations ``(M, D)`` -> action values ``(M, A)`` (e.g. ``q_hat`` for :func:`dr`)."""
    iterations: int = 0
    """Iterations run."""


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


def _fqe_tabular(
    traj: Trajectories, pi: np.ndarray, gamma: float, iterations: int, cfg: FQEConfig
) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    tr = traj.transitions()
    index = _RowIndex(traj.obs)
    sid, A = index.inverse, traj.n_actions
    nxt = np.minimum(np.arange(len(traj)) + 1, len(traj) - 1)
    sid_next, pi_next = sid[nxt], pi[nxt]
    cell = sid * A + traj.action
    counts = np.bincount(cell, minlength=len(index) * A).reshape(-1, A)
    cont = gamma * tr["bootstrap"].astype(np.float64)
    r = traj.reward.astype(np.float64)
    Q = np.zeros((len(index), A))
    it = 0
    while it < iterations:
        it += 1
        y = r + cont * (pi_next * Q[sid_next]).sum(1)
        sums = np.bincount(cell, weights=y, minlength=len(index) * A).reshape(-1, A)
        new = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        delta = float(np.abs(new - Q).max())
        Q = new
        if delta < cfg.tol:
            break

    def q_fn(obs: np.ndarray) -> np.ndarray:
        ids = index.lookup(obs)
        return np.where((ids >= 0)[:, None], Q[np.maximum(ids, 0)], 0.0)

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
    traj: Trajectories, pi: np.ndarray, gamma: float, iterations: int, cfg: FQEConfig
) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    tr = traj.transitions()
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.as_tensor(traj.obs)
    x_next = torch.as_tensor(tr["next_obs"])
    a = torch.as_tensor(traj.action)
    r = torch.as_tensor(traj.reward)
    cont = gamma * torch.as_tensor(tr["bootstrap"])
    nxt = np.minimum(np.arange(len(traj)) + 1, len(traj) - 1)
    pi_next = torch.as_tensor(pi[nxt], dtype=torch.float32)
    net = _seeded(cfg.seed, _mlp, traj.obs_dim, cfg.hidden, traj.n_actions)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    n = len(traj)
    for _ in range(iterations):
        with torch.no_grad():
            y = r + cont * (pi_next * net(x_next)).sum(1)
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
            return net(torch.as_tensor(np.asarray(obs, dtype=np.float32))).double().numpy()

    return q_fn, iterations


_FQE = {"tabular": _fqe_tabular, "mlp": _fqe_mlp}


def fqe(
    traj: Trajectories,
    target_policy_fn: PolicyFn | np.ndarray,
    gamma: float,
    kind: Literal["tabular", "mlp"] = "tabular",
    iterations: int = 200,
    config: FQEConfig | None = None,
) -> FQEResult:
    r"""Fitted Q evaluation (Le, Voloshin & Yue 2019):

    .. math::
        Q_{k+1} = \arg\min_Q \sum_{(s,a,r,s')} \Big(Q(s,a) - r - \gamma\, b
        \sum_{a'} \pi_e(a'|s')\, Q_k(s',a')\Big)^2, \qquad
        \hat J = \frac1n \sum_i \sum_a \pi_e(a|s_{i,0})\, Q_K(s_{i,0}, a),

    with :math:`b = 0` at an episode's last step (terminal or truncated, see
    :meth:`Trajectories.transitions`). ``tabular`` keys the table by exact observation rows
    (one-hot or index states) and solves each regression exactly (the cell mean), stopping early
    at ``config.tol``; unvisited ``(s, a)`` keep :math:`Q = 0` (a known bias without full
    coverage). ``mlp`` warm-starts a two-layer network and takes ``steps_per_iteration`` Adam
    steps per iteration.

    Args:
        target_policy_fn: a function ``obs (M, D) -> (M, A)`` probabilities, or the ``(N, A)``
            probabilities at the logged observations (the next states of FQE are logged rows).

    Shape:
        Output ``value`` scalar; ``q_fn(obs (M, D)) -> (M, A)``.
    """
    gamma = _check_gamma(gamma)
    if kind not in _FQE:
        raise ConfigError("unknown FQE kind", expected=f"one of {sorted(_FQE)}", found=kind)
    if iterations < 1:
        raise ConfigError("iterations must be positive", expected=">= 1", found=iterations)
    _Grid.of(traj)  # raises on empty data
    pi = _target_probs(traj, target_policy_fn)
    q_fn, it = _FQE[kind](traj, pi, gamma, iterations, config or FQEConfig())
    s0 = traj.starts
    value = float(np.mean((pi[s0] * q_fn(traj.obs[s0])).sum(1)))
    log.debug("FQE (%s): %d iterations, value %.4f", kind, it, value)
    return FQEResult(value, q_fn, it)


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
    smoothing: float = 0.5
    """Tabular: pseudo-count added to every allowed action of a seen state."""
    ece_bins: int = 10
    """Confidence bins of the expected calibration error."""


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
    r"""Counts per exact observation row: :math:`\hat\pi_b(a|s) \propto n(s,a) + \alpha`
    (over actions allowed in ``s``); unseen rows get the marginal action frequencies."""
    index = _RowIndex(x)
    counts = np.zeros((len(index), n_actions))
    np.add.at(counts, (index.inverse, a), 1.0)
    allowed = np.zeros((len(index), n_actions), dtype=bool)
    np.logical_or.at(allowed, index.inverse, mask)
    table = np.log(np.where(allowed, counts + cfg.smoothing, 1e-12))
    marginal = np.log(np.bincount(a, minlength=n_actions) + cfg.smoothing)

    def logits(obs: np.ndarray) -> np.ndarray:
        ids = index.lookup(obs)
        return np.where((ids >= 0)[:, None], table[np.maximum(ids, 0)], marginal[None, :])

    return logits


_BEHAVIOUR = {"logistic": _fit_logistic, "mlp": _fit_mlp, "tabular": _fit_tabular}


def _fit_temperature(logits: np.ndarray, a: np.ndarray, mask: np.ndarray, clip: float) -> float:
    r""":math:`\tau^* = \arg\min_\tau -\sum_i \log p_\tau(a_i|s_i)` with
    :math:`p_\tau` the floored :math:`\mathrm{softmax}(z_i/\tau)`, :math:`\log\tau \in [-3, 3]`;
    :math:`\tau = 1` is kept unless the search beats it (the held-out NLL never gets worse)."""

    def nll(log_t: float) -> float:
        return _nll(_floor(_masked_softmax(logits / np.exp(log_t), mask), mask, clip), a)

    best = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(best.x)) if best.fun < nll(0.0) else 1.0


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
    logits_fn = _BEHAVIOUR[kind](
        x[fit_rows], a[fit_rows], mask[fit_rows], traj.n_actions, cfg, seed
    )
    ev = rows_cal if calibrate else fit_rows
    z = logits_fn(x[ev])
    temperature = _fit_temperature(z, a[ev], mask[ev], cfg.clip) if calibrate else 1.0
    p_raw = _floor(_masked_softmax(z, mask[ev]), mask[ev], cfg.clip)
    p_cal = _floor(_masked_softmax(z / temperature, mask[ev]), mask[ev], cfg.clip)
    report = {
        "kind": kind,
        "n_train": int(fit_rows.sum()),
        "n_calib": int(rows_cal.sum()),
        "temperature": temperature,
        "nll_raw": _nll(p_raw, a[ev]),
        "ece_raw": _ece(p_raw, a[ev], cfg.ece_bins),
        "nll": _nll(p_cal, a[ev]),
        "ece": _ece(p_cal, a[ev], cfg.ece_bins),
    }
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
    rng = np.random.default_rng(seed)
    n = traj.n_episodes
    vals = np.empty(n_boot)
    for b in range(n_boot):
        boot, rows = _resample(traj, rng.integers(0, n, size=n))
        out = estimator_fn(boot, rows)
        vals[b] = out.value if isinstance(out, OPEResult) else float(out)
    low, high = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


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
) -> pd.DataFrame:
    """One row per estimator: ``estimator, value, ess, ci_low, ci_high`` (patient bootstrap,
    ``n_boot=0`` gives NaN intervals).

    ``estimators`` defaults to the IS family plus ``dr``/``wdr`` when ``q_hat`` is given.

    Shape:
        pi_e, pi_b, q_hat ``(N, A)``; v_hat ``(N,)``.
    """
    if estimators is None:
        estimators = [k for k, (_, model) in ESTIMATORS.items() if q_hat is not None or not model]
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise ConfigError(
            f"unknown OPE estimator(s) {unknown}", expected=f"some of {sorted(ESTIMATORS)}"
        )
    pi_e, pi_b = np.asarray(pi_e), np.asarray(pi_b)
    rows_out = []
    for name in estimators:
        fn, needs_model = ESTIMATORS[name]
        if needs_model and q_hat is None:
            raise ConfigError(
                f"estimator {name!r} needs a model",
                expected="q_hat (N, A)",
                found=None,
                fix="pass q_hat=fqe(...).q_fn(traj.obs)",
            )

        def run(t: Trajectories, rows: np.ndarray, fn=fn, needs_model=needs_model) -> OPEResult:
            extra = {}
            if needs_model:
                extra = {"q_hat": q_hat[rows], "v_hat": None if v_hat is None else v_hat[rows]}
            return fn(t, pi_e[rows], pi_b[rows], gamma, **extra)

        res = run(traj, np.arange(len(traj)))
        low, high = bootstrap_ci(traj, run, n_boot, alpha, seed) if n_boot > 0 else (np.nan, np.nan)
        rows_out.append(
            {"estimator": name, "value": res.value, "ess": res.ess, "ci_low": low, "ci_high": high}
        )
    return pd.DataFrame(rows_out)
