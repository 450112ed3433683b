r"""Gaussian random fuzzy numbers (Denœux 2023) on log survival time: Bel/Pl and survival bands.

A GRFN :math:`\tilde Y \sim \mathcal{N}(\mu, \sigma^2, h)` is a Gaussian fuzzy number with
membership :math:`\pi_M(y) = \exp(-h (y - M)^2 / 2)` whose mode is random,
:math:`M \sim \mathcal{N}(\mu, \sigma^2)`. ``h`` is the precision: ``h = 0`` is total ignorance
(every event has Bel 0 and Pl 1), ``h = inf`` is the Gaussian random variable
:math:`\mathcal{N}(\mu, \sigma^2)`, and :math:`\sigma^2 = 0` is the possibility distribution
:math:`\pi_\mu`. In DPsurv ``Y = log T`` (log survival time).

Plausibility and belief of a set :math:`A` are

.. math::

    \operatorname{Pl}(A) = \mathbb{E}_M\Big[\sup_{y \in A} \pi_M(y)\Big], \qquad
    \operatorname{Bel}(A) = 1 - \operatorname{Pl}(A^c).

Notation used below: :math:`Z^2 = 1 + h\sigma^2`, the contour function
:math:`\operatorname{pl}(y) = Z^{-1} \exp(-h (y-\mu)^2 / (2 Z^2))`, :math:`\Phi_a` the CDF of
:math:`\mathcal{N}(\mu, \sigma^2)`, :math:`\Phi_b` the CDF of
:math:`\mathcal{N}(\mu, \sigma^2 Z^2)`,
:math:`\bar\Phi = 1 - \Phi`. Everything follows from one Gaussian product identity,

.. math::

    \pi_m(y)\, \mathcal{N}(m; \mu, \sigma^2) = \operatorname{pl}(y)\,
    \mathcal{N}\big(m; \mu'_y, \sigma^2 / Z^2\big), \qquad \mu'_y = \frac{\mu + h\sigma^2 y}{Z^2},

so :math:`\mathbb{E}_M[\pi_M(y) 1\{M \le c\}] = \operatorname{pl}(y)\,
\Phi\big((c - \mu'_y) Z / \sigma\big)`; with :math:`c = y` the argument is
:math:`(y - \mu)/(\sigma Z)`, hence :math:`\Phi_b`.

Numerics: float64 throughout; every difference of normal CDFs is taken on the side of the
tail where it does not cancel (:math:`\Phi(b) - \Phi(a) = \bar\Phi(a) - \bar\Phi(b)` for
:math:`a > 0`), complements such as :math:`1 - \operatorname{Pl}` are computed directly rather
than as ``1 - Pl``, ``pl`` is formed in log space as
:math:`-\tfrac12\log(1+h\sigma^2) - \tfrac12\, \tfrac{h}{1+h\sigma^2}(y-\mu)^2` (finite for any
:math:`h \in [0, \infty]`), ``h`` is clamped to ``[0, 1e100]`` (``inf`` = the Gaussian limit),
:math:`\sigma^2` to ``[1e-30, 1e100]`` (``0`` = the possibility limit), end points to
``±1e100`` (``±inf`` allowed), and results are clamped into ``[0, 1]``. Gradients are finite
everywhere, including the limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from clinfuse.core.errors import ConfigError, DataError

__all__ = [
    "GRFN",
    "SurvivalBand",
    "bel_pl_interval",
    "bel_pl_le",
    "component_survival",
    "contour",
    "mixture_survival",
    "survival_bounds",
]

H_MAX = 1e100
"""Precisions above this (``inf`` included) are treated as this value: the Gaussian limit."""
VAR_MIN = 1e-30
"""Variances below this (``0`` included) are treated as this value: the possibility limit."""
VAR_MAX = 1e100
"""Variances above this are treated as this value."""
Y_MAX = 1e100
"""Log-times beyond ``±Y_MAX`` (``±inf`` included) are treated as ``±Y_MAX``."""
PI_SUM_TOL = 1e-4
"""Largest accepted deviation of a row of mixture weights from 1."""

_DTYPE = torch.float64


class GRFN(NamedTuple):
    """Parameters of a (batch of) Gaussian random fuzzy numbers; unpacks as ``(mu, var, h)``."""

    mu: Tensor
    """Mean of the random mode ``M`` (log-time)."""
    var: Tensor
    """Variance :math:`\\sigma^2 \\ge 0` of the random mode (aleatoric part)."""
    h: Tensor
    """Precision ``h >= 0`` of the fuzzy number; small ``h`` = large epistemic uncertainty."""


@dataclass(frozen=True, eq=False)
class SurvivalBand:
    r"""A fused survival curve and its belief/plausibility envelope.

    ``s_low = 1 - Pl(T <= t)``, ``s_up = 1 - Bel(T <= t)`` and
    ``s = lam * s_up + (1 - lam) * s_low``; ``0 <= s_low <= s <= s_up <= 1``.

    Shape:
        ``(B, T)`` for a mixture, ``(B, C, T)`` for per-component curves.
    """

    s: Tensor
    r"""The point survival curve :math:`\lambda(1-\mathrm{Bel}) + (1-\lambda)(1-\mathrm{Pl})`."""
    s_low: Tensor
    r"""Lower survival bound :math:`1 - \mathrm{Pl}(T \le t)`."""
    s_up: Tensor
    r"""Upper survival bound :math:`1 - \mathrm{Bel}(T \le t)`."""
    components: SurvivalBand | None = None
    """Per-component curves ``(B, C, T)`` (not weighted by ``pi``), for attributions."""


# ----------------------------------------------------------------------------- helpers


def _f64(x: Tensor | float, name: str) -> Tensor:
    """``x`` as a float64 tensor (keeps the device and the autograd graph)."""
    if isinstance(x, Tensor):
        if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.bool)):
            raise DataError(
                f"{name} must be a real tensor",
                expected="a floating-point tensor",
                found=str(x.dtype),
                fix=f"pass {name}.double()",
            )
        return x.to(_DTYPE)
    return torch.as_tensor(x, dtype=_DTYPE)


def _check_nonneg(x: Tensor, name: str) -> None:
    """Raise when ``x`` has a negative or NaN entry (``inf`` is allowed)."""
    bad = ~(x >= 0)
    if bool(bad.any()):
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise DataError(
            f"{name} must be >= 0 and not NaN; entry {idx} is {float(x[idx])}",
            expected=f"{name} >= 0",
            found=float(x[idx]),
            fix=f"produce {name} through a square or softplus, and check the inputs for NaN",
        )


def _check_lam(lam: float) -> None:
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(
            "lam (the belief weight of the fused survival curve) must lie in [0, 1]",
            expected="0 <= lam <= 1",
            found=lam,
            fix="use lam=0.5 (the pignistic-like midpoint of the DPsurv code)",
        )


def _params(mu: Tensor | float, var: Tensor | float, h: Tensor | float) -> GRFN:
    """Validated float64 GRFN parameters, clamped to the ranges of the module docstring."""
    mu_, var_, h_ = _f64(mu, "mu"), _f64(var, "var"), _f64(h, "h")
    _check_nonneg(var_, "var")
    _check_nonneg(h_, "h")
    if not bool(torch.isfinite(mu_).all()):
        raise DataError(
            "mu must be finite",
            expected="finite means of log-time",
            found="NaN or inf in mu",
            fix="check the model output and its inputs for NaN",
        )
    return GRFN(mu_, var_.clamp(VAR_MIN, VAR_MAX), h_.clamp(0.0, H_MAX))


def _ndtr_diff(lo: Tensor, hi: Tensor) -> Tensor:
    r""":math:`\Phi(hi) - \Phi(lo)` for ``lo <= hi``, on the tail side that does not cancel."""
    right = lo > 0
    return torch.where(
        right,
        torch.special.ndtr(-lo) - torch.special.ndtr(-hi),
        torch.special.ndtr(hi) - torch.special.ndtr(lo),
    )


def _log_contour(y: Tensor, p: GRFN) -> Tensor:
    r"""Log contour :math:`-\tfrac12 \log Z^2 - \tfrac12\,\tfrac{h}{Z^2}(y-\mu)^2`."""
    hv = p.h * p.var
    return -0.5 * torch.log1p(hv) - 0.5 * (p.h / (1.0 + hv)) * (y - p.mu) ** 2


def contour(
    y: Tensor | float, mu: Tensor | float, var: Tensor | float, h: Tensor | float
) -> Tensor:
    r"""Contour function :math:`\operatorname{pl}(y) = \operatorname{Pl}(\{y\}) = Z^{-1}
    \exp\big(-h(y-\mu)^2/(2Z^2)\big)`, :math:`Z^2 = 1 + h\sigma^2`.

    Shape:
        all arguments broadcast together; output has the broadcast shape, float64.

    Example:
        >>> float(contour(0.0, 0.0, 1.0, 3.0))
        0.5
    """
    p = _params(mu, var, h)
    y_ = _f64(y, "y").clamp(-Y_MAX, Y_MAX)
    return torch.exp(_log_contour(y_, p))


# ----------------------------------------------------------------------------- (-inf, y]


def _le_parts(y: Tensor, p: GRFN) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``Phi_a(y), 1 - Phi_a(y), pl(y), Phi_b(y), 1 - Phi_b(y)`` (each computed directly)."""
    y = y.clamp(-Y_MAX, Y_MAX)
    sd = torch.sqrt(p.var)
    d = y - p.mu
    u_a = d / sd
    u_b = d / torch.sqrt(p.var + p.h * p.var * p.var)  # sd of N(mu, sigma^2 Z^2)
    pl = torch.exp(_log_contour(y, p))
    nd = torch.special.ndtr
    return nd(u_a), nd(-u_a), pl, nd(u_b), nd(-u_b)


def bel_pl_le(
    y: Tensor | float, mu: Tensor | float, var: Tensor | float, h: Tensor | float
) -> tuple[Tensor, Tensor]:
    r"""Belief and plausibility of :math:`\tilde Y \le y`, i.e. of :math:`(-\infty, y]`.

    .. math::

        \operatorname{Bel}(\tilde Y \le y) = \Phi_a(y) - \operatorname{pl}(y)\,\Phi_b(y), \qquad
        \operatorname{Pl}(\tilde Y \le y) = \Phi_a(y) + \operatorname{pl}(y)\,\bar\Phi_b(y)
        = \operatorname{Bel} + \operatorname{pl}(y).

    (Pl: :math:`\sup_{u \le y}\pi_M(u)` is 1 when :math:`M \le y` and :math:`\pi_M(y)`
    otherwise; Bel is :math:`1 - \operatorname{Pl}(\tilde Y > y)` by the mirror argument.)

    Shape:
        all arguments broadcast together; outputs have the broadcast shape, float64, in [0, 1].

    Example:
        >>> bel, pl = bel_pl_le(0.0, 0.0, 1.0, 0.0)   # h = 0: total ignorance
        >>> float(bel), float(pl)
        (0.0, 1.0)
    """
    p = _params(mu, var, h)
    phi_a, sphi_a, pl, phi_b, sphi_b = _le_parts(_f64(y, "y"), p)
    bel = (phi_a - pl * phi_b).clamp(0.0, 1.0)
    plaus = (phi_a + pl * sphi_b).clamp(0.0, 1.0)
    return bel, plaus


def survival_bounds(
    t: Tensor, mu: Tensor | float, var: Tensor | float, h: Tensor | float
) -> tuple[Tensor, Tensor]:
    r"""Survival envelope of a GRFN on log-time over a grid of times ``t > 0``.

    With :math:`y = \log t`,

    .. math::

        S_{\mathrm{low}}(t) = 1 - \operatorname{Pl}(T \le t)
            = \bar\Phi_a(y) - \operatorname{pl}(y)\,\bar\Phi_b(y), \qquad
        S_{\mathrm{up}}(t) = 1 - \operatorname{Bel}(T \le t)
            = \bar\Phi_a(y) + \operatorname{pl}(y)\,\Phi_b(y),

    both computed directly (no ``1 - x`` cancellation) and non-increasing in ``t``.

    Shape:
        t: ``(T,)``, strictly positive (``inf`` allowed). mu, var, h: broadcastable to a
        common shape ``(...)``. Output: two ``(..., T)`` float64 tensors.

    Example:
        >>> lo, up = survival_bounds(torch.tensor([1.0]), 0.0, 1.0, 1e100)  # Gaussian limit
        >>> float(lo[0]), float(up[0])
        (0.5, 0.5)
    """
    p = _params(mu, var, h)
    p = GRFN(*(v.unsqueeze(-1) for v in torch.broadcast_tensors(*p)))
    y = _log_grid(t).to(p.mu.device)
    _, sphi_a, pl, phi_b, sphi_b = _le_parts(y, p)
    s_low = (sphi_a - pl * sphi_b).clamp(0.0, 1.0)
    s_up = (sphi_a + pl * phi_b).clamp(0.0, 1.0)
    return s_low, s_up


def _log_grid(t: Tensor) -> Tensor:
    """``log t`` of a 1-D grid of strictly positive times."""
    t_ = _f64(t, "t")
    if t_.dim() != 1:
        raise DataError(
            "the time grid must be one-dimensional",
            expected="t of shape (T,)",
            found=f"shape {tuple(t_.shape)}",
            fix="flatten the grid, or call bel_pl_le(log(t), ...) for per-sample times",
        )
    bad = ~(t_ > 0)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        raise DataError(
            f"survival times must be > 0 (the GRFN lives on log-time); t[{i}] = {float(t_[i])}",
            expected="t > 0",
            found=float(t_[i]),
            fix="start the grid at a small positive time, e.g. 1e-6",
        )
    return torch.log(t_)


# ----------------------------------------------------------------------------- [a, b]


def bel_pl_interval(
    a: Tensor | float,
    b: Tensor | float,
    mu: Tensor | float,
    var: Tensor | float,
    h: Tensor | float,
) -> tuple[Tensor, Tensor]:
    r"""Belief and plausibility of the interval :math:`[a, b]` (``a`` may be ``-inf``, ``b``
    may be ``+inf``: :math:`[y, \infty)` is the event of a right-censored log-time ``y``).

    **Plausibility.** :math:`\sup_{y\in[a,b]}\pi_M(y)` is 1 for :math:`M \in [a,b]`,
    :math:`\pi_M(a)` for :math:`M < a` and :math:`\pi_M(b)` for :math:`M > b`, so

    .. math::

        \operatorname{Pl}([a,b]) = \Phi_a(b) - \Phi_a(a)
            + \operatorname{pl}(a)\,\Phi_b(a) + \operatorname{pl}(b)\,\bar\Phi_b(b).

    **Belief.** :math:`A^c = (-\infty, a) \cup (b, \infty)`, and
    :math:`\sup_{y \in A^c}\pi_M(y)` is 1 for :math:`M \notin [a,b]` and
    :math:`\max(\pi_M(a), \pi_M(b))` inside, where the nearer end point wins: :math:`\pi_M(a)`
    for :math:`M \le c = (a+b)/2`. Hence
    :math:`\operatorname{Bel}([a,b]) = \mathbb{E}[1\{a \le M \le c\}(1-\pi_M(a))]
    + \mathbb{E}[1\{c < M \le b\}(1-\pi_M(b))]`, and by the product identity of the module
    docstring (:math:`s = \sigma Z`)

    .. math::

        \operatorname{Bel}([a,b]) = \Phi_a(b) - \Phi_a(a)
            - \operatorname{pl}(a)\Big[\Phi\Big(\tfrac{c - \mu + h\sigma^2 (b-a)/2}{s}\Big)
                - \Phi\Big(\tfrac{a-\mu}{s}\Big)\Big]
            - \operatorname{pl}(b)\Big[\Phi\Big(\tfrac{b-\mu}{s}\Big)
                - \Phi\Big(\tfrac{c - \mu - h\sigma^2 (b-a)/2}{s}\Big)\Big].

    For :math:`b = \infty` this is
    :math:`\operatorname{Bel}([a,\infty)) = \bar\Phi_a(a) - \operatorname{pl}(a)\bar\Phi_b(a)`
    and :math:`\operatorname{Pl}([a,\infty)) = \bar\Phi_a(a) + \operatorname{pl}(a)\Phi_b(a)`,
    i.e. :math:`1 - \operatorname{Pl}(\tilde Y \le a)` and
    :math:`1 - \operatorname{Bel}(\tilde Y \le a)`.

    Shape:
        all arguments broadcast together; outputs have the broadcast shape, float64, in [0, 1].

    Example:
        >>> bel, pl = bel_pl_interval(-1e300, float("inf"), 0.3, 2.0, 5.0)  # the whole line
        >>> float(bel), float(pl)
        (1.0, 1.0)
    """
    p = _params(mu, var, h)
    a_ = _f64(a, "a")
    b_ = _f64(b, "b")
    bad = ~(a_ <= b_)
    if bool(bad.any()):
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        a_bad = a_.expand_as(bad)[idx] if a_.dim() else a_
        b_bad = b_.expand_as(bad)[idx] if b_.dim() else b_
        raise DataError(
            f"interval end points must satisfy a <= b; entry {idx} has a={float(a_bad)}, "
            f"b={float(b_bad)}",
            expected="a <= b, neither NaN",
            found=(float(a_bad), float(b_bad)),
            fix="swap the end points or drop the NaN rows",
        )
    a_ = a_.clamp(-Y_MAX, Y_MAX)
    b_ = b_.clamp(-Y_MAX, Y_MAX)
    sd = torch.sqrt(p.var)
    s = torch.sqrt(p.var + p.h * p.var * p.var)  # sigma * Z
    pl_a = torch.exp(_log_contour(a_, p))
    pl_b = torch.exp(_log_contour(b_, p))
    inside = _ndtr_diff((a_ - p.mu) / sd, (b_ - p.mu) / sd)
    ua, ub = (a_ - p.mu) / s, (b_ - p.mu) / s
    nd = torch.special.ndtr
    plaus = inside + pl_a * nd(ua) + pl_b * nd(-ub)
    c = 0.5 * a_ + 0.5 * b_  # no overflow at ±Y_MAX
    half = 0.5 * (p.h * p.var) * (b_ - a_)
    va = (c - p.mu + half) / s
    vb = (c - p.mu - half) / s
    bel = (
        inside
        - pl_a * _ndtr_diff(ua, torch.maximum(va, ua))
        - pl_b * _ndtr_diff(torch.minimum(vb, ub), ub)
    )
    return bel.clamp(0.0, 1.0), plaus.clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- mixtures


def component_survival(
    t: Tensor,
    mu: Tensor,
    var: Tensor,
    h: Tensor,
    lam: float = 0.5,
) -> SurvivalBand:
    r"""Per-component survival curves and their envelopes.

    :math:`S_c = \lambda(1-\mathrm{Bel}_c) + (1-\lambda)(1-\mathrm{Pl}_c)`, inside the
    envelope :math:`[1-\mathrm{Pl}_c, 1-\mathrm{Bel}_c]`.

    Shape:
        t: ``(T,)``; mu, var, h: ``(B, C)``. Output fields: ``(B, C, T)``.
    """
    _check_lam(lam)
    s_low, s_up = survival_bounds(t, mu, var, h)
    return SurvivalBand(s=lam * s_up + (1.0 - lam) * s_low, s_low=s_low, s_up=s_up)


def mixture_survival(
    t: Tensor,
    pi: Tensor,
    mu: Tensor,
    var: Tensor,
    h: Tensor,
    lam: float = 0.5,
) -> SurvivalBand:
    r"""Fused survival band of a :math:`\pi`-mixture of GRFNs (DPsurv's component fusion).

    .. math::

        S(t) = \sum_c \pi_c \big[\lambda (1 - \mathrm{Bel}_c(T \le t))
            + (1-\lambda)(1 - \mathrm{Pl}_c(T \le t))\big],

    :math:`S_{\mathrm{low}} = \sum_c \pi_c (1 - \mathrm{Pl}_c)`,
    :math:`S_{\mathrm{up}} = \sum_c \pi_c (1 - \mathrm{Bel}_c)` (a :math:`\pi`-mixture of belief
    functions is a belief function). ``components`` holds the unweighted per-component curves.

    Shape:
        t: ``(T,)`` strictly positive; pi, mu, var, h: ``(B, C)``, each row of ``pi``
        non-negative and summing to 1. Output fields: ``(B, T)``; ``components``: ``(B, C, T)``.

    Example:
        >>> one = torch.ones(1, 1, dtype=torch.float64)
        >>> band = mixture_survival(torch.tensor([1.0]), one, 0 * one, one, 1e100 * one)
        >>> float(band.s[0, 0])
        0.5
    """
    pi_ = _f64(pi, "pi")
    shape = torch.broadcast_shapes(
        torch.as_tensor(mu).shape, torch.as_tensor(var).shape, torch.as_tensor(h).shape
    )
    if pi_.dim() != 2 or tuple(pi_.shape) != tuple(shape):
        raise DataError(
            "pi must be a (B, C) matrix of the shape of mu, var and h",
            expected=f"pi of shape {tuple(shape)}",
            found=f"shape {tuple(pi_.shape)}",
            fix="pass one weight per (sample, component), e.g. pi = torch.ones(B, 1) for C = 1",
        )
    _check_nonneg(pi_, "pi")
    dev = (pi_.sum(-1) - 1.0).abs()
    if bool((dev > PI_SUM_TOL).any()):
        i = int(torch.argmax(dev))
        raise DataError(
            f"mixture weights of row {i} sum to {float(pi_[i].sum())}, not 1",
            expected=f"each row of pi summing to 1 (within {PI_SUM_TOL})",
            found=float(pi_[i].sum()),
            fix="normalise: pi = pi / pi.sum(-1, keepdim=True)",
        )
    comp = component_survival(t, mu, var, h, lam)
    w = pi_.unsqueeze(-1)
    return SurvivalBand(
        s=(w * comp.s).sum(1),
        s_low=(w * comp.s_low).sum(1),
        s_up=(w * comp.s_up).sum(1),
        components=comp,
    )
