"""GRFN belief/plausibility: quadrature oracle, closed-form identities, limits, bands, gradients."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.dpsurv import grfn as module
from clinfuse.methods.dpsurv.grfn import (
    bel_pl_interval,
    bel_pl_le,
    component_survival,
    contour,
    mixture_survival,
    survival_bounds,
)

F64 = torch.float64


def _quad_bel_pl(a: float, b: float, mu: float, var: float, h: float) -> tuple[float, float]:
    """Bel/Pl of [a, b]: integrate sup pi_M over A and over its complement against N(mu, var)."""
    sd = math.sqrt(var)

    def pi(y: float, m: float) -> float:
        return math.exp(-h * (y - m) ** 2 / 2) if math.isfinite(y) else 0.0

    def sup_a(m: float) -> float:  # sup over A = [a, b]
        return 1.0 if a <= m <= b else pi(a if m < a else b, m)

    def sup_ac(m: float) -> float:  # sup over A^c = (-inf, a) u (b, inf)
        return max(pi(a, m), pi(b, m)) if a <= m <= b else 1.0

    lo, hi = mu - 14 * sd, mu + 14 * sd
    pts = [p for p in (a, b, 0.5 * (a + b)) if math.isfinite(p) and lo < p < hi] or None
    kw = {"points": pts, "epsabs": 1e-13, "epsrel": 1e-12, "limit": 200}
    pl = integrate.quad(lambda m: sup_a(m) * stats.norm.pdf(m, mu, sd), lo, hi, **kw)[0]
    pl_c = integrate.quad(lambda m: sup_ac(m) * stats.norm.pdf(m, mu, sd), lo, hi, **kw)[0]
    return 1.0 - pl_c, pl


def _random_params(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, ...]:
    mu = torch.tensor(rng.normal(0, 1, n), dtype=F64)
    var = torch.tensor(rng.uniform(0.05, 3.0, n), dtype=F64)
    h = torch.tensor(np.exp(rng.uniform(-3, 4, n)), dtype=F64)
    return mu, var, h


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_matches_quadrature_over_the_random_mode(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 12
    mu, var, h = _random_params(rng, n)
    a = rng.normal(0, 1.5, n)
    b = a + rng.exponential(1.0, n)
    b[::3] = np.inf  # right-censoring events [y, inf)
    b[1] = a[1] + 1e-3  # a narrow interval (the uncensored likelihood)
    bel, pl = bel_pl_interval(torch.tensor(a), torch.tensor(b), mu, var, h)
    for i in range(n):
        bq, pq = _quad_bel_pl(a[i], b[i], float(mu[i]), float(var[i]), float(h[i]))
        assert float(bel[i]) == pytest.approx(bq, abs=1e-6), i
        assert float(pl[i]) == pytest.approx(pq, abs=1e-6), i
    assert bool((bel <= pl).all())


def test_lower_ray_matches_quadrature_and_interval_form() -> None:
    rng = np.random.default_rng(3)
    mu, var, h = _random_params(rng, 8)
    y = torch.tensor(rng.normal(0, 2, 8), dtype=F64)
    bel, pl = bel_pl_le(y, mu, var, h)
    bel_i, pl_i = bel_pl_interval(-math.inf, y, mu, var, h)
    torch.testing.assert_close(bel, bel_i, atol=1e-14, rtol=0)
    torch.testing.assert_close(pl, pl_i, atol=1e-14, rtol=0)
    for i in range(8):
        bq, pq = _quad_bel_pl(-math.inf, float(y[i]), float(mu[i]), float(var[i]), float(h[i]))
        assert float(bel[i]) == pytest.approx(bq, abs=1e-6)
        assert float(pl[i]) == pytest.approx(pq, abs=1e-6)


def test_pl_minus_bel_is_the_contour_function() -> None:
    rng = np.random.default_rng(4)
    mu, var, h = _random_params(rng, 200)
    y = torch.tensor(rng.normal(0, 3, 200), dtype=F64)
    bel, pl = bel_pl_le(y, mu, var, h)
    z2 = 1 + h * var
    closed = torch.exp(-h * (y - mu) ** 2 / (2 * z2)) / torch.sqrt(z2)
    torch.testing.assert_close(pl - bel, closed, atol=1e-13, rtol=0)
    torch.testing.assert_close(contour(y, mu, var, h), closed, atol=1e-15, rtol=1e-13)
    assert bool((bel >= 0).all() & (bel <= pl).all() & (pl <= 1).all())


def test_complementary_events_are_dual() -> None:
    """Bel([y, inf)) = 1 - Pl(Y <= y) and Pl([y, inf)) = 1 - Bel(Y <= y)."""
    rng = np.random.default_rng(5)
    mu, var, h = _random_params(rng, 50)
    y = torch.tensor(rng.normal(0, 2, 50), dtype=F64)
    bel, pl = bel_pl_le(y, mu, var, h)
    bel_c, pl_c = bel_pl_interval(y, math.inf, mu, var, h)
    torch.testing.assert_close(bel_c, 1 - pl, atol=1e-14, rtol=0)
    torch.testing.assert_close(pl_c, 1 - bel, atol=1e-14, rtol=0)


def _mixture(seed: int, b: int = 4, c: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    pi = torch.softmax(torch.randn(b, c, generator=g, dtype=F64), -1)
    mu = 5 + torch.randn(b, c, generator=g, dtype=F64)
    var = 0.5 * torch.rand(b, c, generator=g, dtype=F64)
    h = torch.exp(3 * torch.randn(b, c, generator=g, dtype=F64))
    return pi, mu, var, h


def test_fused_band_is_ordered_bounded_and_monotone_on_a_fine_grid() -> None:
    pi, mu, var, h = _mixture(0)
    t = torch.logspace(-3, 5, 2001, dtype=F64)
    band = mixture_survival(t, pi, mu, var, h, lam=0.3)
    assert band.s.shape == (4, 2001) and band.components is not None
    assert band.components.s.shape == (4, 3, 2001)
    assert bool((band.s_low >= 0).all() & (band.s_up <= 1).all())
    assert bool((band.s_low <= band.s + 1e-15).all() & (band.s <= band.s_up + 1e-15).all())
    for curve in (band.s, band.s_low, band.s_up, band.components.s_up):
        assert float(curve.diff(dim=-1).max()) <= 1e-15  # non-increasing in t
    # the fused band is the pi-weighted sum of the per-component curves
    comp = component_survival(t, mu, var, h, lam=0.3)
    torch.testing.assert_close(band.s, (pi[..., None] * comp.s).sum(1))
    torch.testing.assert_close(band.s, 0.3 * band.s_up + 0.7 * band.s_low)


def test_one_hot_weights_select_a_component() -> None:
    _, mu, var, h = _mixture(1, b=2, c=3)
    pi = torch.tensor([[0, 1, 0], [0, 0, 1]], dtype=F64)
    t = torch.logspace(0, 4, 50, dtype=F64)
    band = mixture_survival(t, pi, mu, var, h)
    lo, up = survival_bounds(t, mu[[0, 1], [1, 2]], var[[0, 1], [1, 2]], h[[0, 1], [1, 2]])
    torch.testing.assert_close(band.s_low, lo)
    torch.testing.assert_close(band.s_up, up)


def test_vanishing_precision_is_total_ignorance() -> None:
    pi, mu, var, _ = _mixture(2)
    t = torch.logspace(-2, 5, 300, dtype=F64)
    band = mixture_survival(t, pi, mu, var, torch.full_like(mu, 1e-12))
    assert float(band.s_low.max()) < 1e-9
    assert float(band.s_up.min()) > 1 - 1e-9
    torch.testing.assert_close(band.s, torch.full_like(band.s, 0.5), atol=1e-9, rtol=0)
    bel, pl = bel_pl_le(torch.tensor(3.0), 0.0, 1.0, 0.0)
    assert (float(bel), float(pl)) == (0.0, 1.0)


@pytest.mark.parametrize("h", [1e9, math.inf])
def test_infinite_precision_is_the_normal_cdf(h: float) -> None:
    y = torch.linspace(-4, 6, 101, dtype=F64)
    bel, pl = bel_pl_le(y, 1.0, 1.5, h)
    cdf = torch.tensor(stats.norm.cdf(y.numpy(), 1.0, math.sqrt(1.5)))
    tol = 1e-3 if math.isfinite(h) else 1e-12
    torch.testing.assert_close(bel, cdf, atol=tol, rtol=0)
    torch.testing.assert_close(pl, cdf, atol=tol, rtol=0)


@pytest.mark.parametrize("var", [1e-14, 0.0])
def test_vanishing_variance_is_a_possibility_distribution(var: float) -> None:
    mu, h = 0.7, 2.5
    y = torch.linspace(-3, 4, 141, dtype=F64)
    bel, pl = bel_pl_le(y, mu, var, h)
    poss = torch.exp(-h * (y - mu) ** 2 / 2)
    right, left = y > mu + 1e-6, y < mu - 1e-6
    torch.testing.assert_close(bel[right], 1 - poss[right], atol=1e-7, rtol=0)
    torch.testing.assert_close(pl[right], torch.ones_like(poss[right]), atol=1e-7, rtol=0)
    torch.testing.assert_close(bel[left], torch.zeros_like(poss[left]), atol=1e-7, rtol=0)
    torch.testing.assert_close(pl[left], poss[left], atol=1e-7, rtol=0)


def test_gradcheck_closed_forms() -> None:
    rng = np.random.default_rng(6)
    mu, var, h = (v.requires_grad_() for v in _random_params(rng, 4))
    y = torch.tensor(rng.normal(0, 1, 4), dtype=F64, requires_grad=True)
    a = (y.detach() - 0.4).requires_grad_()
    assert torch.autograd.gradcheck(bel_pl_le, (y, mu, var, h))
    assert torch.autograd.gradcheck(lambda *p: bel_pl_interval(a, y, *p), (mu, var, h))
    assert torch.autograd.gradcheck(lambda *p: bel_pl_interval(a, math.inf, *p), (mu, var, h))
    t = torch.tensor([0.5, 1.0, 2.5], dtype=F64)
    assert torch.autograd.gradcheck(lambda *p: survival_bounds(t, *p), (mu, var, h))


def test_gradients_stay_finite_in_the_limits() -> None:
    mu = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64, requires_grad=True)
    var = torch.tensor([0.0, 1.0, 1.0, 1e-40], dtype=F64, requires_grad=True)
    h = torch.tensor([1.0, 0.0, math.inf, 3.0], dtype=F64, requires_grad=True)
    bel, pl = bel_pl_interval(torch.tensor([-1.0, 0.5, 0.2, 1.0]), math.inf, mu, var, h)
    t = torch.tensor([1e-6, 1.0, 1e6], dtype=F64)
    lo, up = survival_bounds(t, mu, var, h)
    (bel.sum() + pl.sum() + lo.sum() + up.sum()).backward()
    for p in (mu, var, h):
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(DataError, match="var must be >= 0"):
        bel_pl_le(0.0, 0.0, -1.0, 1.0)
    with pytest.raises(DataError, match="h must be >= 0"):
        bel_pl_le(0.0, 0.0, 1.0, float("nan"))
    with pytest.raises(DataError, match=r"t\[1\] = 0.0"):
        survival_bounds(torch.tensor([1.0, 0.0]), 0.0, 1.0, 1.0)
    with pytest.raises(DataError, match="a <= b"):
        bel_pl_interval(torch.tensor([0.0, 2.0]), 1.0, 0.0, 1.0, 1.0)
    pi, mu, var, h = _mixture(3)
    with pytest.raises(DataError, match="row 0 sum"):
        mixture_survival(torch.ones(2), 2 * pi, mu, var, h)
    with pytest.raises(DataError, match="pi must be a"):
        mixture_survival(torch.ones(2), pi[:, :2], mu, var, h)
    with pytest.raises(ConfigError, match="lam"):
        mixture_survival(torch.ones(2), pi, mu, var, h, lam=1.5)


def test_docstring_examples() -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
