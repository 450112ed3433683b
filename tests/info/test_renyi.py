"""Matrix-based Renyi entropy: closed forms, low-rank invariants, oracles, gradients, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import torch

from clinfuse.core.errors import ClinfuseError, DataError
from clinfuse.info import (
    entropy_of,
    gaussian_gram,
    joint_entropy,
    knn_sigma,
    label_gram,
    mutual_information,
    pairwise_sq_dists,
    renyi_entropy,
    trace_normalize,
)

ALPHAS = [0.5, 1.0, 1.01, 1.9, 2.0, 3.0]
F64 = torch.float64


def points(n: int, d: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def knn_gram(x: torch.Tensor) -> torch.Tensor:
    return gaussian_gram(x, knn_sigma(x))


def renyi_of_probs(p: np.ndarray, alpha: float) -> float:
    """Plug-in Renyi entropy of a probability vector, in bits (numpy reference)."""
    p = p[p > 0]
    if alpha == 1.0:
        return float(-(p * np.log2(p)).sum())
    return float(np.log2((p**alpha).sum()) / (1.0 - alpha))


def low_rank_of_probs(lam: np.ndarray, k: int, alpha: float) -> float:
    """H^k from a full sorted spectrum (numpy reference of notes 1.3)."""
    lam = np.sort(lam)[::-1]
    n = len(lam)
    tail = (1.0 - lam[:k].sum()) / (n - k)
    vals = np.concatenate([lam[:k], np.full(n - k, tail)])
    return renyi_of_probs(vals, alpha)


# ----------------------------------------------------------------------------- kernels


def test_pairwise_sq_dists_matches_scipy() -> None:
    # a large offset: |a|^2 + |b|^2 - 2ab cancels badly unless the points are centred first
    x = points(30, 7) * 5 + 1e5
    d = pairwise_sq_dists(x)
    ref = scipy.spatial.distance.cdist(x.numpy(), x.numpy(), "sqeuclidean")
    np.testing.assert_allclose(d.numpy(), ref, rtol=1e-9)
    assert bool((d.diagonal() == 0).all()) and bool((d >= 0).all())
    assert torch.equal(d, d.T)


def test_pairwise_sq_dists_exact_zero_for_duplicates_float32() -> None:
    x = torch.full((5, 3), 1234.5678)
    assert torch.equal(pairwise_sq_dists(x), torch.zeros(5, 5))


def test_gaussian_gram_convention_has_no_factor_two() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)
    K = gaussian_gram(x, 2.0)
    d2 = scipy.spatial.distance.cdist(x.numpy(), x.numpy(), "sqeuclidean")
    np.testing.assert_allclose(K.numpy(), np.exp(-d2 / 4.0), rtol=1e-14)
    # tensor sigma carries gradient
    s = torch.tensor(2.0, dtype=F64, requires_grad=True)
    gaussian_gram(x, s).sum().backward()
    assert s.grad is not None and s.grad.item() > 0


def test_knn_sigma() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=F64, requires_grad=True)
    # nearest neighbours: 0->1 (1), 1->0 (1), 3->1 (2), 7->3 (4)
    s1 = knn_sigma(x, k=1)
    assert s1.item() == pytest.approx(2.0) and not s1.requires_grad and s1.ndim == 0
    # k = 2: (1+3) + (1+2) + (2+3) + (4+6) = 22 / 8
    assert knn_sigma(x, k=2).item() == pytest.approx(22 / 8)
    # k is clipped to n - 1 = 3
    assert knn_sigma(x, k=50).item() == pytest.approx(knn_sigma(x, k=3).item())
    # all points equal: positive guard instead of 0
    s = knn_sigma(torch.ones(6, 2))
    assert 0 < s.item() <= 1e-6


def test_label_gram_and_trace_normalize() -> None:
    K = label_gram(torch.tensor([0, 1, 0]))
    assert torch.equal(K, torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))
    assert label_gram(torch.tensor([[2], [2]]), dtype=F64).dtype == F64
    A = trace_normalize(3.0 * torch.eye(4))
    assert A.trace().item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("alpha", ALPHAS)
def test_label_kernel_gives_plugin_renyi_of_label_frequencies(alpha: float) -> None:
    counts = np.array([7, 5, 3, 1])
    y = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    h = renyi_entropy(label_gram(y, dtype=F64), alpha)
    assert h.item() == pytest.approx(renyi_of_probs(counts / counts.sum(), alpha), abs=1e-10)
    # rank(A) = 4 <= k: the low-rank estimator is exact for every solver
    for solver in ("exact", "lanczos", "randomized"):
        hk = renyi_entropy(label_gram(y, dtype=F64), alpha, rank=5, solver=solver)
        assert hk.item() == pytest.approx(h.item(), abs=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_identical_points_have_zero_entropy(alpha: float) -> None:
    x = torch.full((12, 3), 0.7, dtype=F64)
    assert entropy_of(x, alpha).item() == pytest.approx(0.0, abs=1e-9)
    assert entropy_of(x, alpha, rank=3, solver="randomized").item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_well_separated_points_reach_log2_n(alpha: float) -> None:
    x = points(20, 5) * 100
    assert entropy_of(x, alpha, sigma=0.01).item() == pytest.approx(math.log2(20), abs=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_equal_separated_clusters_give_log2_c(alpha: float) -> None:
    centres = points(5, 4) * 100
    x = centres.repeat_interleave(6, dim=0)  # 5 clusters of 6 identical points
    x = x[torch.randperm(30, generator=torch.Generator().manual_seed(1))]
    for rank in (None, 5, 8):
        h = entropy_of(x, alpha, sigma=1.0, rank=rank)
        assert h.item() == pytest.approx(math.log2(5), abs=1e-9)
    # tight (not identical) clusters: close to log2 c, approaching it as the spread shrinks
    gaps = []
    for spread in (1e-1, 1e-2, 1e-3):
        xs = x + spread * points(30, 4, seed=2)
        gaps.append(entropy_of(xs, alpha, sigma=1.0).item() - math.log2(5))
    assert all(g > 0 for g in gaps) and gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.05


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize(("d", "sigma"), [(0.3, 1.0), (1.0, 1.0), (2.0, 0.7)])
def test_two_point_formula(alpha: float, d: float, sigma: float) -> None:
    e = math.exp(-(d**2) / sigma**2)
    lam = np.array([(1 + e) / 2, (1 - e) / 2])
    x = torch.tensor([[0.0], [d]], dtype=F64)
    assert entropy_of(x, alpha, sigma=sigma).item() == pytest.approx(
        renyi_of_probs(lam, alpha), abs=1e-12
    )


def test_alpha_to_one_approaches_von_neumann() -> None:
    K = knn_gram(points(64, 5))
    lam = scipy.linalg.eigvalsh(K.numpy() / np.trace(K.numpy()))
    lam = np.clip(lam, 0, None)
    vn = float(-(lam[lam > 0] * np.log2(lam[lam > 0])).sum())
    assert renyi_entropy(K, 1.0).item() == pytest.approx(vn, abs=1e-10)
    gaps = [abs(renyi_entropy(K, 1.0 + eps).item() - vn) for eps in (1e-1, 1e-2, 1e-3, 1e-4)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-4
    # near alpha = 1, H is linear in alpha - 1 on both sides of the von Neumann switch
    # (|alpha - 1| < 1e-6); the expm1/log1p form keeps that in float32, where the naive
    # log2(sum lam^alpha) / (1 - alpha) would be off by ~eps32 / 2e-6 ~ 0.05 bits
    up, down = renyi_entropy(K, 1.0 + 2e-6).item() - vn, renyi_entropy(K, 1.0 - 2e-6).item() - vn
    assert up < 0 < down and up == pytest.approx(-down, rel=1e-3)
    assert renyi_entropy(K, 1.0 + 5e-7).item() == renyi_entropy(K, 1.0).item()
    K32 = K.float()
    for a in (1.0 + 5e-7, 1.0 + 2e-6, 1.0 - 2e-6, 1.0 + 1e-5):
        assert renyi_entropy(K32, a).item() == pytest.approx(vn, abs=1e-5 + 5 * abs(a - 1))


# ----------------------------------------------------------------------------- oracles


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # vendi-score uses scipy.sparse.csr
@pytest.mark.parametrize("q", [0.5, 1, 1.9, 2, 3])
def test_vendi_score_oracle(q: float) -> None:
    vendi = pytest.importorskip("vendi_score.vendi")
    K = knn_gram(points(50, 8, seed=3))
    score = vendi.score_K(K.numpy(), q=q)
    assert math.log(score) == pytest.approx(
        renyi_entropy(K, float(q)).item() * math.log(2), abs=1e-9
    )


@pytest.mark.parametrize("alpha", ALPHAS)
def test_scipy_eigh_oracle_exact_and_low_rank(alpha: float) -> None:
    K = knn_gram(points(60, 10, seed=4))
    lam = scipy.linalg.eigh(K.numpy(), eigvals_only=True)
    lam = np.clip(lam / lam.sum(), 0, None)
    ref = renyi_of_probs(lam, 1.0 if alpha == 1.0 else alpha)
    assert renyi_entropy(K, alpha).item() == pytest.approx(ref, abs=1e-10)
    for k in (1, 3, 10, 40):
        ref_k = low_rank_of_probs(lam, k, 1.0 if alpha == 1.0 else alpha)
        assert renyi_entropy(K, alpha, rank=k).item() == pytest.approx(ref_k, abs=1e-10)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.9, 3.0])
def test_float32_matches_float64(alpha: float) -> None:
    x = points(80, 6, seed=5)
    K = knn_gram(x)
    h32 = renyi_entropy(K.float(), alpha)
    assert h32.dtype == torch.float32
    assert h32.item() == pytest.approx(renyi_entropy(K, alpha).item(), abs=2e-4)
    hk32 = renyi_entropy(K.float(), alpha, rank=10, solver="randomized")
    assert hk32.dtype == torch.float32
    assert hk32.item() == pytest.approx(renyi_entropy(K, alpha, rank=10).item(), abs=2e-2)


def test_scale_invariance_and_normalize_flag() -> None:
    K = knn_gram(points(40, 4, seed=6))
    A = trace_normalize(K)
    for rank in (None, 5):
        h = renyi_entropy(A, 1.9, rank=rank, normalize=False).item()
        assert renyi_entropy(K, 1.9, rank=rank).item() == pytest.approx(h, abs=1e-12)
        assert renyi_entropy(37.0 * K, 1.9, rank=rank).item() == pytest.approx(h, abs=1e-12)


# ----------------------------------------------------------------------------- low rank


@pytest.mark.parametrize("alpha", ALPHAS)
def test_low_rank_invariants(alpha: float) -> None:
    n = 24
    K = knn_gram(points(n, 6, seed=7))
    h = renyi_entropy(K, alpha).item()
    hk = [renyi_entropy(K, alpha, rank=k).item() for k in range(1, n + 2)]
    assert all(v >= h - 1e-12 for v in hk)  # H^k >= H
    assert all(a >= b - 1e-12 for a, b in zip(hk, hk[1:], strict=False))  # non-increasing in k
    assert hk[n - 2] == pytest.approx(h, abs=1e-12)  # H^(n-1) = H
    assert hk[-1] == pytest.approx(h, abs=1e-12)  # rank > n as well
    assert hk[0] > h + 0.1  # and the truncation is not a no-op
    assert max(hk) <= math.log2(n) + 1e-12


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.9])
def test_low_rank_exact_for_rank_r_gram(alpha: float) -> None:
    # 4 distinct points, each repeated: a Gaussian Gram of rank 4 with unequal eigenvalues
    x = points(4, 3, seed=8).repeat_interleave(torch.tensor([1, 2, 3, 6]), dim=0)
    K = gaussian_gram(x, 1.5)
    h = renyi_entropy(K, alpha).item()
    for solver in ("exact", "lanczos", "randomized"):
        for k in (4, 6):
            assert renyi_entropy(K, alpha, rank=k, solver=solver).item() == pytest.approx(
                h, abs=1e-9
            )
    assert renyi_entropy(K, alpha, rank=3).item() > h + 1e-3


# worst error seen over 5 seeds at n = 256, d = 50, k = 10 (float64): Lanczos <= 4e-4 bits;
# randomized q = 1: 0.022 (alpha 1.01), 0.007 (1.9), 3e-4 (3); q = 2: 0.011, 0.004, 1e-4
@pytest.mark.parametrize(
    ("alpha", "solver", "opts", "tol"),
    [
        (1.01, "lanczos", {}, 0.005),
        (1.9, "lanczos", {}, 0.005),
        (3.0, "lanczos", {}, 0.005),
        (1.01, "randomized", {"n_iter": 1}, 0.03),
        (1.9, "randomized", {"n_iter": 1}, 0.01),
        (3.0, "randomized", {"n_iter": 1}, 0.01),
        (1.01, "randomized", {"n_iter": 2}, 0.015),
        (1.9, "randomized", {"n_iter": 2}, 0.006),
        (3.0, "randomized", {"n_iter": 2}, 0.006),
    ],
)
def test_iterative_low_rank_matches_exact_low_rank(
    alpha: float, solver: str, opts: dict[str, int], tol: float
) -> None:
    K = knn_gram(points(256, 50, seed=9))
    ref = renyi_entropy(K, alpha, rank=10).item()
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        got = renyi_entropy(K, alpha, rank=10, solver=solver, generator=g, **opts).item()
        assert got >= ref - 1e-9  # Ritz values err low, so the tail is heavier
        assert got == pytest.approx(ref, abs=tol)


# ----------------------------------------------------------------------------- joint, MI


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.9, 3.0])
def test_mutual_information_bounds(alpha: float) -> None:
    g = torch.Generator().manual_seed(10)
    for trial in range(4):
        x = torch.randn(40, 3, generator=g, dtype=F64)
        y = trial * x[:, :1] + torch.randn(40, 1, generator=g, dtype=F64)
        Ka, Kb = knn_gram(x), knn_gram(y)
        i = mutual_information(Ka, Kb, alpha).item()
        ha, hb = renyi_entropy(Ka, alpha).item(), renyi_entropy(Kb, alpha).item()
        assert -1e-10 <= i <= min(ha, hb) + 1e-10


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.9])
def test_mi_closed_forms_with_label_kernels(alpha: float) -> None:
    # a full factorial design: Y and Z independent, uniform 2 x 3 -> H(Y,Z) = H(Y) + H(Z), I = 0
    y = torch.tensor([0, 1]).repeat(6)
    z = torch.tensor([0, 1, 2]).repeat_interleave(2).repeat(2)
    Ky, Kz = label_gram(y, dtype=F64), label_gram(z, dtype=F64)
    assert joint_entropy(Ky, Kz, alpha=alpha).item() == pytest.approx(math.log2(6), abs=1e-10)
    assert mutual_information(Ky, Kz, alpha).item() == pytest.approx(0.0, abs=1e-10)
    # I(A; A) = H(A) for a label kernel (A o A = A)
    w = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    Kw = label_gram(w, dtype=F64)
    assert mutual_information(Kw, Kw, alpha).item() == pytest.approx(
        renyi_entropy(Kw, alpha).item(), abs=1e-10
    )
    # joint of one matrix is its entropy; three-way joint of a label and its refinement
    assert joint_entropy(Kw, alpha=alpha).item() == pytest.approx(renyi_entropy(Kw, alpha).item())
    assert joint_entropy(Kw, Kw, Kw, alpha=alpha).item() == pytest.approx(
        renyi_entropy(Kw, alpha).item(), abs=1e-10
    )


def test_mi_low_rank_runs_through_solvers() -> None:
    x = points(64, 5, seed=11)
    Ka, Kb = knn_gram(x), knn_gram(x[:, :2])
    exact = mutual_information(Ka, Kb, 1.9, rank=10).item()
    rnd = mutual_information(
        Ka, Kb, 1.9, rank=10, solver="randomized", n_iter=2, generator=torch.Generator()
    ).item()
    assert rnd == pytest.approx(exact, abs=0.03)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    ("rank", "solver", "alpha"),
    [
        (None, "exact", 1.9),
        (None, "exact", 1.0),
        (None, "exact", 0.5),
        (3, "exact", 1.9),
        (3, "exact", 1.0),
        (3, "lanczos", 1.9),
        (3, "randomized", 1.9),
    ],
)
def test_gradcheck_entropy_of_points(rank: int | None, solver: str, alpha: float) -> None:
    x = points(8, 2, seed=12).requires_grad_(True)
    sigma = torch.tensor(1.3, dtype=F64, requires_grad=True)

    def f(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        # n = 8: Lanczos with 8 steps / a sketch of 3 + 5 columns spans R^8, so the Ritz values are
        # the eigenvalues; the generator is reseeded so f is deterministic
        g = torch.Generator().manual_seed(0)
        K = gaussian_gram(x, sigma)
        return renyi_entropy(K, alpha, rank=rank, solver=solver, generator=g, steps=8, oversample=5)

    assert torch.autograd.gradcheck(f, (x, sigma))


def test_gradcheck_mutual_information() -> None:
    x = points(8, 2, seed=13).requires_grad_(True)
    y = points(8, 1, seed=14).requires_grad_(True)

    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mutual_information(gaussian_gram(x, 1.0), gaussian_gram(y, 0.8), 1.9, rank=4)

    assert torch.autograd.gradcheck(f, (x, y))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.9])
@pytest.mark.parametrize(
    ("rank", "solver"), [(None, "exact"), (4, "exact"), (4, "lanczos"), (4, "randomized")]
)
@pytest.mark.parametrize("case", ["duplicated", "identical"])
def test_gradients_finite_on_degenerate_spectra(
    alpha: float, rank: int | None, solver: str, case: str
) -> None:
    if case == "duplicated":
        x = points(5, 3, seed=15).repeat(3, 1)  # 15 points, each three times
    else:
        x = torch.full((15, 3), 0.25, dtype=F64)
    for dtype in (F64, torch.float32):
        xd = x.detach().to(dtype).clone().requires_grad_(True)
        h = entropy_of(xd, alpha, rank=rank, solver=solver)
        h.backward()
        assert torch.isfinite(h) and xd.grad is not None
        assert bool(torch.isfinite(xd.grad).all())


def test_gradient_descent_on_entropy_spreads_points() -> None:
    # maximising H(x) must push clustered points apart (the gradient has the right sign)
    x = (0.05 * points(16, 2, seed=16)).requires_grad_(True)
    h0 = entropy_of(x, 1.9, sigma=0.5, rank=4).item()
    opt = torch.optim.SGD([x], lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        (-entropy_of(x, 1.9, sigma=0.5, rank=4)).backward()
        opt.step()
    assert entropy_of(x, 1.9, sigma=0.5, rank=4).item() > h0 + 0.3


# ----------------------------------------------------------------------------- errors


def test_errors() -> None:
    K = torch.eye(4)
    with pytest.raises(ClinfuseError, match="square"):
        renyi_entropy(torch.ones(3, 4), 2.0)
    with pytest.raises(ClinfuseError, match="square"):
        renyi_entropy(torch.ones(4), 2.0)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ClinfuseError, match="alpha"):
            renyi_entropy(K, bad)
    with pytest.raises(ClinfuseError, match="alpha"):
        renyi_entropy(K, "2")  # type: ignore[arg-type]
    with pytest.raises(ClinfuseError, match="rank"):
        renyi_entropy(K, 2.0, rank=0)
    with pytest.raises(ClinfuseError, match="unknown top-k"):
        renyi_entropy(K, 2.0, rank=2, solver="svd")  # type: ignore[arg-type]
    with pytest.raises(ClinfuseError, match="unknown solver option"):
        renyi_entropy(K, 2.0, rank=2, n_iters=2)
    with pytest.raises(ClinfuseError, match="same samples"):
        mutual_information(torch.eye(3), torch.eye(4), 2.0)
    with pytest.raises(ClinfuseError, match="at least one"):
        joint_entropy(alpha=2.0)
    with pytest.raises(ClinfuseError, match="alpha"):
        mutual_information(K, K, 0.0)
    with pytest.raises(ClinfuseError, match="sigma"):
        gaussian_gram(torch.zeros(3, 2), 0.0)
    with pytest.raises(ClinfuseError, match="sigma"):
        gaussian_gram(torch.zeros(3, 2), torch.tensor(-1.0))
    with pytest.raises(ClinfuseError, match="bandwidth rule"):
        entropy_of(torch.zeros(3, 2), sigma="median")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="two points"):
        knn_sigma(torch.zeros(1, 2))
    with pytest.raises(DataError, match="NaN"):
        label_gram(torch.tensor([0.0, math.nan]))
    with pytest.raises(ClinfuseError, match="floating"):
        pairwise_sq_dists(torch.zeros(3, 2, dtype=torch.int64))
    err = pytest.raises(ClinfuseError, renyi_entropy, torch.ones(2, 3), 2.0)
    assert "expected" in str(err.value) and "fix" in str(err.value)
