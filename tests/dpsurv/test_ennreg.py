"""ENNreg experts: forward against a per-sample loop, out-of-distribution vacuity, planted init."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.dpsurv import ennreg as module
from clinfuse.methods.dpsurv.ennreg import H_FLOOR, ENNreg, init_ennreg, weighted_cosine_kmeans
from clinfuse.methods.dpsurv.grfn import survival_bounds
from clinfuse.methods.dpsurv.losses import grfn_censored_nll

F64 = torch.float64


def _random_model(c: int = 3, k: int = 4, f: int = 6, p: int = 5, seed: int = 0) -> ENNreg:
    g = torch.Generator().manual_seed(seed)
    model = ENNreg(c, k, f, p, generator=g)
    with torch.no_grad():
        for name in ("alpha", "beta", "sigma", "eta", "gamma"):
            par = getattr(model, name)
            par.copy_(torch.randn(par.shape, generator=g, dtype=F64))
    return model


def _slow_forward(model: ENNreg, x: torch.Tensor, z: torch.Tensor) -> np.ndarray:
    """The module docstring's equations, one sample, expert and prototype at a time."""
    w, a0, b0 = model.w.detach().numpy(), model.alpha.detach().numpy(), model.beta.detach().numpy()
    sg, et, gm = (getattr(model, n).detach().numpy() for n in ("sigma", "eta", "gamma"))
    xb, zb = x.numpy(), z.numpy()
    out = np.zeros((3, xb.shape[0], xb.shape[1]))
    for i in range(xb.shape[0]):
        for c in range(xb.shape[1]):
            num = den = var = 0.0
            for k in range(w.shape[1]):
                cos = zb[i, c] @ w[c, k] / (np.linalg.norm(zb[i, c]) * np.linalg.norm(w[c, k]))
                act = math.exp(-(gm[c, k] ** 2) * (1 - cos))
                hk = et[c, k] ** 2
                num += act * hk * (b0[c, k] @ xb[i, c] + a0[c, k])
                den += act * hk
                var += act**2 * hk**2 * sg[c, k] ** 2
            den = max(den, H_FLOOR)
            out[:, i, c] = num / den, var / den**2, den
    return out


def test_forward_matches_a_per_sample_loop() -> None:
    model = _random_model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, 6, generator=g, dtype=F64)
    z = torch.randn(7, 3, 5, generator=g, dtype=F64)
    mu, var, h = model(x, z)
    ref = _slow_forward(model, x, z)
    for got, want in zip((mu, var, h), ref, strict=True):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-14)


def test_two_dimensional_inputs_are_the_single_expert_case() -> None:
    model = _random_model(c=1, f=4, p=4)
    x = torch.randn(6, 4, dtype=F64)
    for a, b in zip(model(x, x), model(x[:, None], x[:, None]), strict=True):
        torch.testing.assert_close(a, b)
    assert model(x.float(), x.float()).mu.dtype == F64  # float64 by default, inputs cast


def _planted(
    n: int = 300, p: int = 8, k: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows near k random directions (random positive scale), log-times centred per cluster."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(k, p))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    lab = rng.integers(k, size=n)
    z = (dirs[lab] + 0.05 * rng.normal(size=(n, p))) * rng.uniform(0.5, 3.0, size=(n, 1))
    log_t = np.array([1.0, 3.0, 5.0])[lab] + 0.3 * rng.normal(size=n)
    return dirs, lab, z, log_t


def _match(dirs: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """For each planted direction, the index of the most similar prototype (a permutation)."""
    perm = (dirs @ protos.T).argmax(1)
    assert sorted(perm.tolist()) == list(range(len(dirs)))
    return perm


def test_init_recovers_planted_directions_and_cluster_times() -> None:
    dirs, lab, z, log_t = _planted()
    rng = np.random.default_rng(1)
    weights = rng.uniform(0.05, 1.0, size=(len(lab), 1))
    weights[:20] = 0.005  # left out of the initialisation
    model = ENNreg(1, 3, 8, 8)
    labels = init_ennreg(model, z[:, None], z[:, None], log_t, weights, seed=0, n_init=5)
    assert (labels[0][:20] == -1).all() and (labels[0][20:] >= 0).all()
    protos = model.w.detach().numpy()[0]
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-12)
    perm = _match(dirs, protos)
    assert float(np.min(np.sum(dirs * protos[perm], axis=1))) > 0.99
    alpha, sigma = model.alpha.detach().numpy()[0], model.sigma.detach().numpy()[0]
    np.testing.assert_allclose(alpha[perm], [1.0, 3.0, 5.0], atol=0.1)
    np.testing.assert_allclose(sigma[perm], 0.3, atol=0.06)
    # gamma, eta and beta follow their formulas on the recovered clusters
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    gamma, eta = model.gamma.detach().numpy()[0], model.eta.detach().numpy()[0]
    for j in range(3):
        m = labels[0] == j
        wj = weights[m, 0]
        d = np.average(1 - zn[m] @ protos[j], weights=wj)
        assert gamma[j] == pytest.approx(0.5 / math.sqrt(2 * d), rel=1e-10)
        assert eta[j] == pytest.approx(2 * math.sqrt(wj.mean()), rel=1e-10)
        assert alpha[j] == pytest.approx(np.average(log_t[m], weights=wj), rel=1e-12)
    assert float(model.beta.detach().abs().max()) == 0.0


def test_init_is_per_expert_and_seeded() -> None:
    dirs0, lab0, z0, t0 = _planted(seed=2)
    dirs1, _, z1, _ = _planted(seed=3)
    z = np.stack([z0, z1], 1)
    x = np.concatenate([z, np.ones((len(lab0), 2, 1))], axis=2)  # F = P + 1
    m1, m2 = ENNreg(2, 3, 9, 8), ENNreg(2, 3, 9, 8)
    init_ennreg(m1, x, z, t0, np.ones((len(lab0), 2)), seed=7, n_init=3)
    init_ennreg(m2, x, z, t0, np.ones((len(lab0), 2)), seed=7, n_init=3)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for e, dirs in enumerate((dirs0, dirs1)):
        protos = m1.w.detach().numpy()[e]
        assert float(np.min(np.sum(dirs * protos[_match(dirs, protos)], axis=1))) > 0.99


def test_far_from_every_prototype_the_prediction_is_vacuous() -> None:
    dirs, _, z, log_t = _planted()
    model = ENNreg(1, 3, 8, 8)
    init_ennreg(model, z, z, log_t, seed=0, n_init=3)
    assert float(model.gamma.detach().min()) > 3.0  # tight clusters: sharp activations
    protos = model.w.detach().numpy()[0]
    ortho = np.linalg.svd(protos)[2][-1]  # orthogonal to every prototype
    probes = torch.tensor(np.stack([ortho, -ortho, -dirs.sum(0), z[0], z[1]]))
    mu, var, h = model(probes, probes)
    assert bool((h[:3] <= 1e-4).all()), h.flatten()
    assert bool((h[3:] > 1.0).all()), h.flatten()
    t = torch.logspace(0, 2.5, 50, dtype=F64)  # the range of the training times
    lo, up = survival_bounds(t, mu, var, h)
    width = (up - lo)[:, 0].detach()
    assert float(width[:3].min()) > 0.999  # out of distribution: ~[0, 1]
    assert float(width[3:].mean(-1).max()) < 0.3  # training rows: a narrow band


def test_every_parameter_gets_a_gradient_and_changes_after_a_step() -> None:
    model = _random_model(c=2, k=3, f=4, p=3, seed=4)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, 2, 4, generator=g, dtype=F64)
    z = torch.randn(16, 2, 3, generator=g, dtype=F64)
    log_t = torch.randn(16, generator=g, dtype=F64)
    censored = (torch.rand(16, generator=g) < 0.3).long()
    pi = torch.full((16, 2), 0.5, dtype=F64)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss = grfn_censored_nll(log_t, censored, *model(x, z), pi=pi)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().max()) > 0, name
    opt.step()
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), name


def test_weighted_kmeans_respects_weights() -> None:
    """Two heavy rows pull a one-cluster centre towards them."""
    z = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    c, _, _ = weighted_cosine_kmeans(z, np.array([1.0, 1.0, 2.0]), 1, np.random.default_rng(0))
    np.testing.assert_allclose(c[0], np.array([1.0, 1.0]) / math.sqrt(2), atol=1e-12)
    c, _, _ = weighted_cosine_kmeans(z, np.array([1.0, 1.0, 0.0]), 1, np.random.default_rng(0))
    np.testing.assert_allclose(c[0], [1.0, 0.0], atol=1e-12)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="n_prototypes"):
        ENNreg(1, 0, 3, 3)
    model = ENNreg(2, 2, 3, 3)
    with pytest.raises(DataError, match="input x"):
        model(torch.ones(4, 3), torch.ones(4, 3))
    with pytest.raises(DataError, match="different numbers"):
        model(torch.ones(4, 2, 3), torch.ones(5, 2, 3))
    _, _, z, log_t = _planted(n=40, p=3)
    zz = np.stack([z, z], 1)
    w = np.ones((40, 2))
    w[:, 1] = 0.0
    w[0, 1] = 1.0
    with pytest.raises(DataError, match="expert 1 has 1 rows"):
        init_ennreg(model, zz, zz, log_t, w, n_init=1)
    bad_t = log_t.copy()
    bad_t[7] = np.nan
    with pytest.raises(DataError, match="log_t is not finite at row 7"):
        init_ennreg(model, zz, zz, bad_t, n_init=1)
    with pytest.raises(DataError, match="weights has the wrong shape"):
        init_ennreg(model, zz, zz, log_t, np.ones((40, 3)), n_init=1)


def test_docstring_examples() -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
