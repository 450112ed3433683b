r"""Baselines of DPsurv, in the same code: ABMIL with the discrete NLL head, mean-pool Cox,
PANTHER + linear head, and a linear Cox model (tabular mode).

The discrete heads predict per-bin hazards :math:`h_j = \sigma(f_j(x))` on the same quantile bins
as DPsurv, so :math:`S_0 = 1,\ S_{j+1} = \prod_{k \le j}(1 - h_k)` at the edges enters the same
:func:`~clinfuse.methods.dpsurv.losses.discrete_nll`. The Cox models minimise the Breslow
partial likelihood and give curves through the Breslow baseline hazard.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from clinfuse.core.errors import DataError

__all__ = [
    "GatedABMIL",
    "LinearHazard",
    "CoxLinear",
    "breslow_cumhaz",
    "cox_partial_nll",
    "cox_survival",
    "hazards_to_survival",
    "interp_survival",
    "pad_bags",
]


def hazards_to_survival(logits: Tensor) -> Tensor:
    r"""Per-bin hazard logits to survival at the ``J + 1`` bin edges.

    :math:`S_0 = 1`, :math:`S_{j+1} = \prod_{k \le j} (1 - \sigma(z_k))`.

    Shape:
        logits ``(B, J)``. Output ``(B, J + 1)``.

    Example:
        >>> hazards_to_survival(torch.zeros(1, 2))
        tensor([[1.0000, 0.5000, 0.2500]])
    """
    surv = torch.cumprod(1.0 - torch.sigmoid(logits), dim=1)
    return torch.cat([torch.ones_like(surv[:, :1]), surv], dim=1)


def interp_survival(s_edges: Tensor | np.ndarray, edges: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Survival at times ``t`` from its values at the bin edges, linear in log time between edges
    (constant beyond the outer edges).

    Shape:
        s_edges ``(B, J + 1)``; edges ``(J + 1,)``; t ``(T,)``. Output ``(B, T)`` float64.
    """
    s = s_edges.detach().cpu().double().numpy() if isinstance(s_edges, Tensor) else s_edges
    s = np.asarray(s, dtype=np.float64)
    le, lt = np.log(np.asarray(edges, dtype=np.float64)), np.log(np.asarray(t, dtype=np.float64))
    return np.stack([np.interp(lt, le, row) for row in s])


def pad_bags(bags: list[np.ndarray], dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Stack variable-size bags into ``(B, M_max, D)`` with a ``(B, M_max)`` validity mask.

    Example:
        >>> x, m = pad_bags([np.ones((2, 3)), np.ones((1, 3))])
        >>> tuple(x.shape), m.sum(1).tolist()
        ((2, 2, 3), [2, 1])
    """
    if not bags:
        raise DataError("no bags to pad", expected="at least one bag", found=0)
    m_max = max(len(b) for b in bags)
    d = bags[0].shape[1]
    x = torch.zeros(len(bags), m_max, d, dtype=dtype)
    mask = torch.zeros(len(bags), m_max, dtype=torch.bool)
    for i, b in enumerate(bags):
        x[i, : len(b)] = torch.as_tensor(b, dtype=dtype)
        mask[i, : len(b)] = True
    return x, mask


class GatedABMIL(nn.Module):
    r"""Gated attention MIL (Ilse et al. 2018) with a discrete-time hazard head.

    :math:`a_m \propto \exp\{w^\top(\tanh(V h_m) \odot \sigma(U h_m))\}`,
    :math:`z = \sum_m a_m h_m`, with :math:`h_m = \mathrm{ReLU}(W x_m)`, then
    :math:`J` hazard logits from :math:`z`.

    Shape:
        forward: x ``(B, M, D)``, mask ``(B, M)`` -> logits ``(B, J)``.
    """

    def __init__(
        self, in_dim: int, n_bins: int, hidden: int = 64, attn: int = 32, dropout: float = 0.1
    ):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.att_v = nn.Linear(hidden, attn)
        self.att_u = nn.Linear(hidden, attn)
        self.att_w = nn.Linear(attn, 1)
        self.head = nn.Linear(hidden, n_bins)

    def attention(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(attention weights ``(B, M)``, patch embeddings ``(B, M, H)``)."""
        h = self.embed(x)
        score = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h))).squeeze(-1)
        score = score.masked_fill(~mask, float("-inf"))
        return torch.softmax(score, dim=1), h

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        a, h = self.attention(x, mask)
        return self.head((a.unsqueeze(-1) * h).sum(1))


class LinearHazard(nn.Module):
    """A linear discrete-time hazard head over a fixed vector (PANTHER's LinearEmb baseline).

    Shape:
        forward: x ``(B, F)`` -> logits ``(B, J)``.
    """

    def __init__(self, in_dim: int, n_bins: int, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.linear = nn.Linear(in_dim, n_bins)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear((x - self.mean) / self.std)


class CoxLinear(nn.Module):
    r"""Linear Cox model :math:`\eta = \beta^\top (x - \bar x)/s` on standardised inputs.

    Shape:
        forward: x ``(B, F)`` -> ``(B,)`` log relative hazard.
    """

    def __init__(self, in_dim: int, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float64))
        self.beta = nn.Parameter(torch.zeros(in_dim, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return ((x.double() - self.mean) / self.std) @ self.beta

    def coefficients(self) -> np.ndarray:
        """Coefficients on the original (unstandardised) scale."""
        return (self.beta / self.std).detach().numpy()


def cox_partial_nll(eta: Tensor, time: Tensor, event: Tensor) -> Tensor:
    r"""Negative Breslow log partial likelihood, divided by the number of events:

    .. math::
        -\frac{1}{d}\sum_{i:\delta_i=1}\Big[\eta_i - \log\sum_{j: t_j \ge t_i} e^{\eta_j}\Big].

    Shape:
        eta, time, event ``(N,)`` (event 1 = observed). Output: scalar.
    """
    order = torch.argsort(time, descending=True, stable=True)
    eta_s, t_s, e_s = eta[order], time[order], event[order].to(eta.dtype)
    log_cum = torch.logcumsumexp(eta_s, dim=0)
    # ties: every tied time shares the risk set that includes all of them (Breslow)
    t_np = t_s.detach().cpu().numpy()
    last = np.searchsorted(-t_np, -t_np, side="right") - 1
    log_risk = log_cum[torch.as_tensor(last)]
    d = e_s.sum().clamp_min(1.0)
    return -((eta_s - log_risk) * e_s).sum() / d


def breslow_cumhaz(
    eta: np.ndarray, time: np.ndarray, event: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Breslow baseline cumulative hazard :math:`H_0(t) = \sum_{t_i \le t} d_i /
    \sum_{j: t_j \ge t_i} e^{\eta_j}` at the distinct event times.

    Shape:
        eta, time, event ``(N,)``. Output: (event times ``(K,)``, ``H_0`` ``(K,)``).
    """
    eta = np.asarray(eta, dtype=np.float64)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    uniq = np.unique(time[event])
    w = np.exp(eta - eta.max())
    order = np.argsort(time)
    t_sorted, w_sorted = time[order], w[order]
    at_risk = np.cumsum(w_sorted[::-1])[::-1]  # sum over t_j >= t_sorted[i]
    first = np.searchsorted(t_sorted, uniq, side="left")
    d = np.array([np.sum(event & (time == u)) for u in uniq], dtype=np.float64)
    h = d / (at_risk[first] * np.exp(eta.max()))
    return uniq, np.cumsum(h)


def cox_survival(
    eta: np.ndarray, jump_times: np.ndarray, cumhaz: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """:math:`S(t|x) = \\exp(-H_0(t) e^{\\eta})` on ``t`` (a step function of the Breslow jumps).

    Shape:
        eta ``(B,)``; t ``(T,)``. Output ``(B, T)``.
    """
    idx = np.searchsorted(jump_times, np.asarray(t, dtype=np.float64), side="right") - 1
    h0 = np.where(idx >= 0, cumhaz[np.maximum(idx, 0)], 0.0)
    return np.exp(-np.outer(np.exp(np.asarray(eta, dtype=np.float64)), h0))
