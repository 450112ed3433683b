"""DPsurv losses: bins against pandas, the discrete NLL by hand and by brute force, the
lambda-weighted fusion, the continuous GRFN NLL, and planted-data training to a high C-index."""

from __future__ import annotations

import doctest
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.dpsurv import losses as module
from clinfuse.methods.dpsurv.ennreg import ENNreg, init_ennreg
from clinfuse.methods.dpsurv.grfn import bel_pl_interval, bel_pl_le
from clinfuse.methods.dpsurv.losses import (
    bin_index,
    discrete_nll,
    fused_survival_at,
    grfn_censored_nll,
    quantile_bin_edges,
    regularisers,
)

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models: one thread is as fast, and immune to other jobs sharing the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C: over pairs with t_i < t_j and an event at t_i, P(risk_i > risk_j), ties 1/2."""
    comparable = (time[:, None] < time[None, :]) & (event[:, None] == 1)
    concordant = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    return float((comparable * concordant).sum() / comparable.sum())


# ----------------------------------------------------------------------------- bins


def test_bin_edges_and_indices_match_pandas() -> None:
    rng = np.random.default_rng(0)
    time = np.round(rng.exponential(500.0, 300), 1) + 1.0
    event = (rng.uniform(size=300) < 0.6).astype(float)
    edges = quantile_bin_edges(time, event, n_bins=8)
    _, ref = pd.qcut(time[event == 1], q=8, retbins=True, labels=False)
    assert edges.shape == (9,) and edges[0] == 1e-6 and edges[-1] == 1e6
    np.testing.assert_allclose(edges[1:-1], ref[1:-1], rtol=1e-12)
    probe = np.concatenate([time, edges[1:-1]])  # inner edges belong to the lower bin
    ref_idx = pd.cut(probe, edges, labels=False)
    np.testing.assert_array_equal(bin_index(probe, edges), ref_idx)
    assert bin_index(torch.tensor(time), edges).dtype == np.int64


def test_bins_reject_bad_inputs() -> None:
    with pytest.raises(DataError, match="uncensored times cannot make 8"):
        quantile_bin_edges(np.arange(1.0, 11.0), np.r_[np.ones(5), np.zeros(5)])
    with pytest.raises(DataError, match="not strictly increasing"):
        quantile_bin_edges(np.r_[np.ones(9), 5.0], np.ones(10), n_bins=4)
    with pytest.raises(DataError, match="event must be 0/1; row 2"):
        quantile_bin_edges(np.arange(1.0, 5.0), np.array([1, 0, 2, 1]), n_bins=1)
    with pytest.raises(DataError, match="row 1"):
        bin_index(np.array([5.0, 2e6]), np.array([1e-6, 10.0, 1e6]))


# ----------------------------------------------------------------------------- discrete NLL


def test_discrete_nll_by_hand() -> None:
    s = torch.tensor([[1.0, 0.8, 0.5, 0.2], [0.9, 0.6, 0.3, 0.1], [1.0, 0.7, 0.7, 0.4]], dtype=F64)
    y = torch.tensor([1, 0, 2])
    censored = torch.tensor([0, 1, 1])
    # row 0: event in bin 1: -[log 0.8 + log((0.8 - 0.5) / 0.8)] = -log 0.3
    # row 1: censored in bin 0: -log S_1 = -log 0.6; row 2: censored in bin 2: -log 0.4
    unc, cen = [-math.log(0.3), 0.0, 0.0], [0.0, -math.log(0.6), -math.log(0.4)]
    for alpha in (0.0, 0.5, 1.0):
        want = np.mean([(1 - alpha) * (u + c) + alpha * u for u, c in zip(unc, cen, strict=True)])
        got = float(discrete_nll(s, y, censored, alpha=alpha))
        assert got == pytest.approx(want, rel=1e-12)


def test_discrete_nll_is_the_binned_censored_likelihood() -> None:
    """Brute force: a discrete law p over J bins (+ mass beyond); events score log p_y,
    censored rows log P(T > e_{y+1}), and the MCAT alpha reweights the censored part."""
    rng = np.random.default_rng(1)
    n, j = 6, 4
    p = rng.dirichlet(np.ones(j + 1), size=n)  # p[:, j] = mass beyond the last edge
    s = np.array([[sum(p[i, k:]) for k in range(j + 1)] for i in range(n)])  # S_k = P(T > e_k)
    y = rng.integers(j, size=n)
    c = np.array([0, 1, 0, 1, 1, 0])
    for alpha in (0.0, 0.3):
        terms = []
        for i in range(n):
            if c[i] == 0:
                terms.append(-math.log(p[i, y[i]]))
            else:
                terms.append(-(1 - alpha) * math.log(sum(p[i, y[i] + 1 :])))
        got = discrete_nll(torch.tensor(s), torch.tensor(y), torch.tensor(c), alpha=alpha)
        assert float(got) == pytest.approx(np.mean(terms), rel=1e-10)


def test_discrete_nll_clamps_degenerate_curves() -> None:
    s = torch.tensor([[1.0, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype=F64, requires_grad=True)
    loss = discrete_nll(s, torch.tensor([1, 1]), torch.tensor([0, 1]), eps=1e-7)
    # row 0 (event in a flat bin): hazard clamped, -(log 0.5 + log eps);
    # row 1 (censored, S = 0): -(1 - alpha) log eps with alpha = 0.5
    want = 0.5 * (-(math.log(0.5) + math.log(1e-7)) - 0.5 * math.log(1e-7))
    assert float(loss.detach()) == pytest.approx(want, rel=1e-12)
    loss.backward()
    assert bool(torch.isfinite(s.grad).all())


def test_discrete_nll_rejects_bad_labels() -> None:
    s = torch.ones(3, 5, dtype=F64)
    with pytest.raises(DataError, match="row 2 is 4, outside 0..3"):
        discrete_nll(s, torch.tensor([0, 1, 4]), torch.zeros(3))
    with pytest.raises(DataError, match="censored must be 0/1"):
        discrete_nll(s, torch.tensor([0, 1, 2]), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(DataError, match=r"\(B, J \+ 1\)"):
        discrete_nll(torch.ones(3), torch.tensor([0]), torch.zeros(1))


# ----------------------------------------------------------------------------- fusion


def _grfns(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    pi = torch.softmax(torch.randn(5, 3, generator=g, dtype=F64), -1)
    mu = 5 + torch.randn(5, 3, generator=g, dtype=F64)
    var = 0.3 + torch.rand(5, 3, generator=g, dtype=F64)
    h = 0.2 + torch.rand(5, 3, generator=g, dtype=F64)
    return pi, mu, var, h


def test_fused_survival_weights_belief_by_lambda_not_twice() -> None:
    pi, mu, var, h = _grfns(0)
    edges = np.array([1e-6, 30.0, 100.0, 300.0, 1e6])
    y = torch.log(torch.tensor(edges))
    bel, pl = bel_pl_le(y[None, None, :], mu[..., None], var[..., None], h[..., None])
    for lam in (0.2, 0.5, 0.8):
        got = fused_survival_at(edges, pi, mu, var, h, lam=lam)
        right = (pi[..., None] * (lam * (1 - bel) + (1 - lam) * (1 - pl))).sum(1)
        buggy = (pi[..., None] * (lam * (1 - bel) + lam * (1 - pl))).sum(1)  # official code
        torch.testing.assert_close(got, right, atol=1e-14, rtol=0)
        gap = float((got - buggy).abs().max())
        assert gap < 1e-14 if lam == 0.5 else gap > 1e-2


# ----------------------------------------------------------------------------- continuous NLL


def test_grfn_censored_nll_matches_its_definition() -> None:
    pi, mu, var, h = _grfns(1)
    log_t = torch.tensor([4.0, 5.0, 6.0, 5.5, 3.0], dtype=F64)
    cen = torch.tensor([0, 1, 0, 1, 0])
    lam, eps, nu = 0.3, 0.05, 1e-16
    got = grfn_censored_nll(log_t, cen, mu, var, h, lam=lam, eps_interval=eps, pi=pi)
    terms = []
    for i in range(5):
        a, b = (log_t[i], math.inf) if cen[i] else (log_t[i] - eps, log_t[i] + eps)
        bel, pl = bel_pl_interval(a, b, mu[i], var[i], h[i])
        bel, pl = float((pi[i] * bel).sum()), float((pi[i] * pl).sum())
        terms.append(-lam * math.log(bel + nu) - (1 - lam) * math.log(pl + nu))
    assert float(got) == pytest.approx(np.mean(terms), rel=1e-12)
    # a single GRFN per row: censored rows score the survival envelope at y
    one = grfn_censored_nll(log_t[1:2], cen[1:2], mu[1, 0], var[1, 0], h[1, 0], lam=lam)
    bel, pl = bel_pl_le(log_t[1], mu[1, 0], var[1, 0], h[1, 0])
    want = -lam * math.log(1 - float(pl)) - (1 - lam) * math.log(1 - float(bel))
    assert float(one) == pytest.approx(want, rel=1e-10)


def test_grfn_censored_nll_prefers_consistent_predictions() -> None:
    """An event is best explained by mu near y; a censored time by an ever larger mu."""
    mus = torch.linspace(0.0, 4.0, 81, dtype=F64)
    y = torch.full((81,), 2.0, dtype=F64)

    def loss_per_mu(censored: int) -> np.ndarray:
        cen = torch.full((81,), censored)
        return np.array(
            [
                float(grfn_censored_nll(y[i : i + 1], cen[i : i + 1], m, 0.2, 2.0))
                for i, m in enumerate(mus)
            ]
        )

    event_loss = loss_per_mu(0)
    assert abs(float(mus[int(np.argmin(event_loss))]) - 2.0) < 0.06
    assert bool((np.diff(loss_per_mu(1)) < 0).all())


def test_regularisers_and_config_errors() -> None:
    h, gamma = torch.tensor([1.0, 2.0, 6.0]), torch.tensor([[1.0, 3.0]])
    assert float(regularisers(h, gamma)) == 0.0  # off by default, as in the DPsurv code
    assert float(regularisers(h, gamma, xi=0.5, rho=0.1)) == pytest.approx(0.5 * 3 + 0.1 * 5)
    with pytest.raises(ConfigError, match="lam"):
        grfn_censored_nll(torch.zeros(1), torch.zeros(1), 0.0, 1.0, 1.0, lam=-0.1)
    with pytest.raises(ConfigError, match="eps_interval"):
        grfn_censored_nll(torch.zeros(1), torch.zeros(1), 0.0, 1.0, 1.0, eps_interval=0.0)


# ----------------------------------------------------------------------------- training


def _planted(n: int = 600, seed: int = 0) -> tuple[np.ndarray, ...]:
    """log T = 2 + x.beta + 0.6 noise; log-uniform censoring (~30 %). Truth risk = -x.beta."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    beta = np.array([0.8, -0.6, 0.4, 0.0])
    log_t = 2.0 + x @ beta + 0.6 * rng.normal(size=n)
    log_c = rng.uniform(0.9, 4.9, size=n)
    time = np.exp(np.minimum(log_t, log_c))
    event = (log_t <= log_c).astype(float)
    return x, time, event, -(x @ beta)


def _train(loss_name: str) -> tuple[float, float, float]:
    """200 full-batch Adam steps of an ENNreg (C=1, K=2) on 300 rows; test C before/after."""
    x, time, event, truth = _planted()
    tr, te = slice(0, 300), slice(300, None)
    xtr, xte = torch.tensor(x[tr]), torch.tensor(x[te])
    model = ENNreg(1, 2, 4, 4)
    init_ennreg(model, xtr, xtr, np.log(time[tr]), seed=0, n_init=5)
    edges = quantile_bin_edges(time[tr], event[tr], n_bins=8)
    y = torch.tensor(bin_index(time[tr], edges))
    cen = torch.tensor(1.0 - event[tr])
    log_t = torch.log(torch.tensor(time[tr]))
    ones_tr, ones_te = torch.ones(300, 1, dtype=F64), torch.ones(300, 1, dtype=F64)

    def test_c() -> float:
        with torch.no_grad():
            s = fused_survival_at(edges, ones_te, *model(xte, xte))
        return harrell_c(time[te], event[te], -s.sum(-1).numpy())  # risk = -sum_j S(e_j)

    losses = {
        "discrete": lambda g: discrete_nll(fused_survival_at(edges, ones_tr, *g), y, cen),
        "continuous": lambda g: grfn_censored_nll(log_t, cen, *g),
    }
    c_init = test_c()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        losses[loss_name](model(xtr, xtr)).backward()
        opt.step()
    return c_init, test_c(), harrell_c(time[te], event[te], truth[te])


@pytest.mark.parametrize("loss_name", ["discrete", "continuous"])
def test_training_on_planted_data_reaches_the_oracle_c_index(loss_name: str) -> None:
    c_init, c_fit, c_truth = _train(loss_name)
    assert 0.83 < c_truth < 0.87
    assert c_init < 0.75  # beta = 0 at init: the prototypes alone rank poorly
    assert c_fit > 0.8 and c_fit > c_truth - 0.03


def test_harrell_helper_agrees_with_scikit_survival() -> None:
    sksurv_metrics = pytest.importorskip("sksurv.metrics")
    x, time, event, truth = _planted(200, seed=3)
    risk = truth + 0.5 * np.random.default_rng(0).normal(size=200)
    want = sksurv_metrics.concordance_index_censored(event.astype(bool), time, risk)[0]
    assert harrell_c(time, event, risk) == pytest.approx(want, abs=1e-12)


def test_docstring_examples() -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
