r"""DPsurv losses: the discrete (binned) survival NLL of fused GRFN curves, the continuous GRFN
censored NLL, and the evidential regularisers.

Conventions: ``censored = 1`` means right-censored (``event = 1 - censored``); times are in the
units of the labels (e.g. days) and GRFNs live on ``log`` time.

**Bins** (:func:`quantile_bin_edges`, :func:`bin_index`): ``J`` quantile bins of the
*uncensored* training times, the outer edges replaced by ``1e-6`` and ``1e6``; a time falls in
bin ``j`` when :math:`e_j < t \le e_{j+1}` (``pandas.cut``, right-closed).

**Discrete NLL** (:func:`discrete_nll`) of Zadeh & Schmid (2021) with the MCAT mixing weight
:math:`\alpha`, on the fused survival curve evaluated at the ``J + 1`` edges,
:math:`S_j = S(e_j)` (:func:`fused_survival_at`).

**Continuous NLL** (:func:`grfn_censored_nll`) of ENNreg (Denœux 2023) extended to right
censoring (Huang et al., IJAR 2025): the belief and plausibility of the observed set of
log-times.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.dpsurv.grfn import bel_pl_interval, mixture_survival

__all__ = [
    "bin_index",
    "discrete_nll",
    "fused_survival_at",
    "grfn_censored_nll",
    "quantile_bin_edges",
    "regularisers",
]

EDGE_LOW = 1e-6
"""First bin edge (replaces the smallest uncensored quantile)."""
EDGE_HIGH = 1e6
"""Last bin edge (replaces the largest uncensored quantile)."""


def _np1d(a: Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    arr = arr.astype(np.float64).reshape(-1) if arr.ndim <= 1 else arr
    if arr.ndim != 1:
        raise DataError(
            f"{name} must be one-dimensional",
            expected=f"{name} of shape (N,)",
            found=f"shape {arr.shape}",
            fix=f"flatten {name}",
        )
    return arr


def quantile_bin_edges(
    time: Tensor | np.ndarray,
    event: Tensor | np.ndarray,
    n_bins: int = 8,
    low: float = EDGE_LOW,
    high: float = EDGE_HIGH,
) -> np.ndarray:
    r"""Edges of ``n_bins`` quantile bins of the uncensored times (``pandas.qcut`` quantiles).

    :math:`e_j = Q_{j/J}(\{t_i : \delta_i = 1\})` for :math:`j = 0..J` (linear interpolation),
    then :math:`e_0 \leftarrow` ``low`` and :math:`e_J \leftarrow` ``high``.

    Args:
        time: ``(N,)`` observed times (> 0).
        event: ``(N,)`` event indicators, 1 = event observed (uncensored), 0 = censored.
        n_bins: number of bins ``J``.
        low, high: the outer edges; every time to be binned must lie in ``(low, high]``.

    Returns:
        ``(J + 1,)`` float64, strictly increasing.

    Example:
        >>> quantile_bin_edges(np.array([1.0, 2, 3, 4, 5]), np.ones(5), n_bins=2)
        array([1.e-06, 3.e+00, 1.e+06])
    """
    t = _np1d(time, "time")
    e = _np1d(event, "event")
    if t.shape != e.shape:
        raise DataError(
            "time and event have different lengths",
            expected="one event indicator per time",
            found=(t.shape[0], e.shape[0]),
            fix="pass the columns of the same table",
        )
    if not np.isin(e, (0.0, 1.0)).all():
        row = int(np.flatnonzero(~np.isin(e, (0.0, 1.0)))[0])
        raise DataError(
            f"event must be 0/1; row {row} has {e[row]}",
            expected="1 = event observed, 0 = censored",
            found=e[row],
            fix="pass event = 1 - censorship",
        )
    t_ev = t[e == 1]
    if t_ev.size < n_bins:
        raise DataError(
            f"{t_ev.size} uncensored times cannot make {n_bins} quantile bins",
            expected=f">= {n_bins} uncensored times",
            found=t_ev.size,
            fix="use fewer bins (n_bins)",
        )
    edges = np.quantile(t_ev, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = low, high
    if not (np.diff(edges) > 0).all():
        raise DataError(
            "quantile bin edges are not strictly increasing (tied times, or times outside "
            "(low, high))",
            expected="distinct quantiles inside (low, high)",
            found=edges.tolist(),
            fix="use fewer bins, or widen low/high",
        )
    return edges


def bin_index(time: Tensor | np.ndarray, edges: np.ndarray) -> np.ndarray:
    r"""Bin of each time, as ``pandas.cut(time, edges, labels=False)`` (right-closed).

    Bin ``j`` is :math:`(e_j, e_{j+1}]`; a time equal to an inner edge goes to the lower bin.

    Shape:
        time: ``(N,)``; edges: ``(J + 1,)`` increasing. Output: ``(N,)`` int64 in ``0..J-1``.

    Example:
        >>> bin_index(np.array([0.5, 3.0, 3.5]), np.array([1e-6, 3.0, 1e6]))
        array([0, 0, 1])
    """
    t = _np1d(time, "time")
    e = np.asarray(edges, dtype=np.float64)
    out = ~((t > e[0]) & (t <= e[-1]))
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise DataError(
            f"time of row {row} ({t[row]}) lies outside the bins ({e[0]}, {e[-1]}]",
            expected=f"{e[0]} < time <= {e[-1]}",
            found=t[row],
            fix="rebuild the edges with quantile_bin_edges(..., high=...) above the largest time",
        )
    return (np.searchsorted(e, t, side="left") - 1).astype(np.int64)


def fused_survival_at(
    edges: Tensor | np.ndarray,
    pi: Tensor,
    mu: Tensor,
    var: Tensor,
    h: Tensor,
    lam: float = 0.5,
) -> Tensor:
    r"""The fused curve :math:`S(e_j) = \sum_c \pi_c[\lambda(1-\mathrm{Bel}_c) +
    (1-\lambda)(1-\mathrm{Pl}_c)]` at the bin edges, the input of :func:`discrete_nll`.

    (The official code computes :math:`\lambda(1-\mathrm{Bel}) + \lambda(1-\mathrm{Pl})`, equal
    to this only at :math:`\lambda = 0.5`.)

    Shape:
        edges: ``(J + 1,)``; pi, mu, var, h: ``(B, C)``. Output: ``(B, J + 1)`` float64.
    """
    t = torch.as_tensor(np.asarray(edges) if not isinstance(edges, Tensor) else edges)
    return mixture_survival(t.to(torch.float64), pi, mu, var, h, lam).s


def _labels(y: Tensor, censored: Tensor, n: int, n_bins: int) -> tuple[Tensor, Tensor]:
    if y.shape != (n,) or censored.shape != (n,):
        raise DataError(
            "discrete_nll: y and censored must be (B,) vectors matching s_edges",
            expected=f"shapes ({n},)",
            found=(tuple(y.shape), tuple(censored.shape)),
            fix="pass one bin index and one censoring flag per row of s_edges",
        )
    bad = (y < 0) | (y >= n_bins)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        raise DataError(
            f"bin label of row {row} is {int(y[row])}, outside 0..{n_bins - 1}",
            expected=f"labels in 0..{n_bins - 1} (J = s_edges.shape[1] - 1 bins)",
            found=int(y[row]),
            fix="compute labels with bin_index(time, edges) on the same edges",
        )
    c = censored.to(torch.float64)
    if not bool(((c == 0) | (c == 1)).all()):
        raise DataError(
            "censored must be 0/1",
            expected="1 = censored, 0 = event",
            found=torch.unique(c).tolist(),
            fix="pass the censorship column (1 = censored)",
        )
    return y.long(), c


def discrete_nll(
    s_edges: Tensor,
    y: Tensor,
    censored: Tensor,
    alpha: float = 0.5,
    eps: float = 1e-7,
) -> Tensor:
    r"""Discrete-time survival NLL (Zadeh & Schmid 2021) with the MCAT :math:`\alpha` mixing.

    With :math:`S_j` the survival at edge :math:`e_j` (:math:`S_0` at the first edge), the bin
    hazard :math:`h_j = (S_j - S_{j+1}) / S_j`, bin label :math:`y` and censoring :math:`c`,

    .. math::

        \ell_{\mathrm{unc}} = -(1-c)\big[\log S_y + \log h_y\big], \qquad
        \ell_{\mathrm{cen}} = -c \log S_{y+1},

        \mathcal{L} = \frac{1}{B} \sum_{i=1}^{B}
            (1-\alpha)\big(\ell_{\mathrm{unc}} + \ell_{\mathrm{cen}}\big)
            + \alpha\,\ell_{\mathrm{unc}},

    every argument of a log clamped below at ``eps``. (:math:`\log S_y + \log h_y =
    \log(S_y - S_{y+1})`, the probability of the event falling in bin :math:`y`.)

    Shape:
        s_edges: ``(B, J + 1)``; y: ``(B,)`` integer bins in ``0..J-1``; censored: ``(B,)``
        0/1. Output: scalar.

    Example:
        >>> s = torch.tensor([[1.0, 0.5, 0.25]])
        >>> round(float(discrete_nll(s, torch.tensor([1]), torch.tensor([0]), alpha=0.0)), 4)
        1.3863
    """
    if s_edges.dim() != 2 or s_edges.shape[1] < 2:
        raise DataError(
            "discrete_nll: s_edges must be (B, J + 1) with J >= 1",
            expected="survival at the J + 1 bin edges of each sample",
            found=tuple(s_edges.shape),
            fix="build it with fused_survival_at(edges, pi, mu, var, h, lam)",
        )
    n, n_bins = s_edges.shape[0], s_edges.shape[1] - 1
    yl, c = _labels(y, censored, n, n_bins)
    c = c.to(s_edges.dtype)
    s_y = s_edges.gather(1, yl[:, None]).squeeze(1)
    s_next = s_edges.gather(1, yl[:, None] + 1).squeeze(1)
    hazard = (s_y - s_next) / s_y.clamp_min(eps)
    uncensored = -(1 - c) * (torch.log(s_y.clamp_min(eps)) + torch.log(hazard.clamp_min(eps)))
    censored_term = -c * torch.log(s_next.clamp_min(eps))
    loss = (1 - alpha) * (uncensored + censored_term) + alpha * uncensored
    return loss.mean()


def grfn_censored_nll(
    log_t: Tensor,
    censored: Tensor,
    mu: Tensor | float,
    var: Tensor | float,
    h: Tensor | float,
    lam: float = 0.5,
    eps_interval: float = 0.01,
    floor: float = 1e-16,
    pi: Tensor | None = None,
) -> Tensor:
    r"""Continuous evidential NLL of (right-censored) log-times under GRFN predictions.

    The observed set of log-times is :math:`A_i = [y_i - \epsilon, y_i + \epsilon]` for an event
    and :math:`A_i = [y_i, \infty)` for a right-censored time; with belief and plausibility from
    :func:`~clinfuse.methods.dpsurv.grfn.bel_pl_interval` (π-mixed over components when ``pi``
    is given: :math:`\mathrm{Bel}(A) = \sum_c \pi_c \mathrm{Bel}_c(A)`, likewise Pl),

    .. math::

        \mathcal{L} = \frac{1}{B}\sum_{i=1}^{B} -\lambda \log\big(\mathrm{Bel}(A_i) + \nu\big)
            - (1-\lambda) \log\big(\mathrm{Pl}(A_i) + \nu\big),

    :math:`\nu` = ``floor`` (a smooth floor, as evreg's ``nu``). The ENNreg loss of Denœux
    (2023) is the uncensored case; evreg's default :math:`\epsilon` is 0.01 SD of ``y``
    (``eps_interval = 0.01`` suits log-times of unit spread) and its default
    :math:`\lambda` is 0.9.

    Shape:
        log_t, censored: ``(B,)``; mu, var, h: ``(B,)`` or ``(B, C)`` with pi ``(B, C)``.
        Output: scalar.
    """
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(
            "lam must lie in [0, 1]", expected="0 <= lam <= 1", found=lam, fix="use 0.5"
        )
    if not eps_interval > 0:
        raise ConfigError(
            "eps_interval (half-width of an event's interval) must be > 0",
            expected="eps_interval > 0",
            found=eps_interval,
            fix="use 0.01 times the SD of the log-times",
        )
    y = log_t.to(torch.float64)
    if y.dim() != 1:
        raise DataError(
            "grfn_censored_nll: log_t must be a (B,) vector",
            expected="one log-time per sample",
            found=tuple(y.shape),
            fix="flatten log_t",
        )
    n = y.shape[0]
    _, c = _labels(torch.zeros(n, dtype=torch.long), censored, n, 1)
    c = c.to(y.device)
    params = [torch.as_tensor(v, dtype=torch.float64, device=y.device) for v in (mu, var, h)]
    if pi is not None:
        y, c_ = y[:, None], c[:, None]
    else:
        c_ = c
        try:
            params = [v.expand(n) if v.numel() == 1 else v.reshape(n) for v in params]
        except RuntimeError as exc:
            raise DataError(
                "grfn_censored_nll: without pi, mu, var and h need one value per sample",
                expected=f"shape ({n},) or ({n}, 1); or pass pi for (B, C) mixtures",
                found=[tuple(v.shape) for v in params],
                fix="pass pi=(B, C) mixture weights for several components",
            ) from exc
    mu, var, h = params
    lo = torch.where(c_ > 0, y, y - eps_interval)
    hi = torch.where(c_ > 0, torch.full_like(y, float("inf")), y + eps_interval)
    bel, pl = bel_pl_interval(lo, hi, mu, var, h)
    if pi is not None:
        w = pi.to(torch.float64)
        bel, pl = (w * bel).sum(-1), (w * pl).sum(-1)
    loss = -lam * torch.log(bel + floor) - (1 - lam) * torch.log(pl + floor)
    return loss.mean()


def regularisers(h: Tensor, gamma: Tensor, xi: float = 0.0, rho: float = 0.0) -> Tensor:
    r"""Evidential regularisers :math:`\xi\,\overline{h} + \rho\,\overline{\gamma^2}`.

    ``xi`` penalises the precision (pushes towards ignorance), ``rho`` shrinks the prototype
    scales (towards a linear model). Both default to 0, as in the DPsurv code, where no
    regulariser is active.

    Shape:
        h: any (e.g. the prototype precisions ``(C, K)``); gamma: any. Output: scalar.

    Example:
        >>> regularisers(torch.tensor([1.0, 3.0]), torch.tensor([2.0]), xi=0.5, rho=0.25)
        tensor(2.)
    """
    return xi * h.mean() + rho * (gamma**2).mean()
