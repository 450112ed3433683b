"""Top-k eigenvalue solvers: agreement with LAPACK, interlacing, restarts, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from clinfuse.core.errors import ClinfuseError
from clinfuse.info import gaussian_gram, knn_sigma, label_gram, topk_eigvalsh
from clinfuse.info.spectral import lanczos_basis, randomized_range

ITERATIVE = ["lanczos", "randomized"]


def gram(
    n: int,
    d: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    sigma: float | None = None,
) -> torch.Tensor:
    """Unit-trace Gaussian Gram of n standard normal points (kNN bandwidth unless ``sigma``)."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    K = gaussian_gram(x, knn_sigma(x) if sigma is None else sigma)
    return K / K.trace()


def low_rank_psd(n: int, r: int, seed: int = 0) -> torch.Tensor:
    """A PSD matrix of rank r with well separated eigenvalues r, r-1, ..., 1."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    lam = torch.arange(r, 0, -1, dtype=torch.float64)
    return (U * lam) @ U.T


def test_exact_matches_scipy_eigh() -> None:
    A = gram(64, 5)
    ref = scipy.linalg.eigh(A.numpy(), eigvals_only=True)[::-1][:7]
    np.testing.assert_allclose(topk_eigvalsh(A, 7).numpy(), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("solver", ITERATIVE)
def test_iterative_match_exact_on_decaying_spectrum(solver: str) -> None:
    # low-dimensional data and a wide kernel: lambda_21 / lambda_10 ~ 0.1, so a 20-column basis
    # captures the top 10
    A = gram(256, 3, seed=1, sigma=3.0)
    exact = topk_eigvalsh(A, 10)
    approx = topk_eigvalsh(A, 10, solver, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(approx.numpy(), exact.numpy(), rtol=1e-3)


@pytest.mark.parametrize(("solver", "mass_rtol"), [("lanczos", 1e-3), ("randomized", 5e-2)])
def test_iterative_match_exact_on_flat_spectrum(solver: str, mass_rtol: float) -> None:
    # 50-d data (the benchmark's setting): a flat tail (lambda_2 / lambda_30 ~ 2), where a sketch
    # of 20 columns with one power step resolves eigenvalues 2..10 only roughly; the leading
    # eigenvalue is still accurate and the captured mass sum(top-k) is close (Ritz values err low).
    # The entropy H^k built from them is within 0.01 bits (test_renyi).
    A = gram(256, 50, seed=2)
    exact = topk_eigvalsh(A, 10)
    approx = topk_eigvalsh(A, 10, solver, generator=torch.Generator().manual_seed(4))
    assert approx[0].item() == pytest.approx(exact[0].item(), rel=1e-4)
    assert approx.sum().item() == pytest.approx(exact.sum().item(), rel=mass_rtol)


@pytest.mark.parametrize("solver", ITERATIVE)
def test_ritz_values_interlace(solver: str) -> None:
    # Cauchy interlacing: theta_i <= lambda_i for every i
    A = gram(128, 50, seed=5)
    exact = topk_eigvalsh(A, 10)
    approx = topk_eigvalsh(A, 10, solver, steps=12, n_iter=0, oversample=2)
    assert bool((approx <= exact + 1e-12).all())
    assert bool((approx < exact - 1e-6).any())  # truncated bases really are approximations


@pytest.mark.parametrize("solver", ITERATIVE)
def test_exact_when_rank_at_most_basis(solver: str) -> None:
    A = low_rank_psd(40, 4)
    got = topk_eigvalsh(A, 6, solver, steps=8, oversample=2)
    np.testing.assert_allclose(got.numpy(), [4, 3, 2, 1, 0, 0], atol=1e-10)


def test_lanczos_restarts_after_breakdown() -> None:
    # the label kernel of 3 classes has rank 3: the Krylov space of any start vector is invariant
    # after 3 steps, so the basis must be continued with fresh directions
    y = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    K = label_gram(y, dtype=torch.float64)
    Q = lanczos_basis(K, steps=8)
    assert Q.shape == (10, 8)
    np.testing.assert_allclose((Q.T @ Q).numpy(), np.eye(8), atol=1e-12)
    np.testing.assert_allclose(topk_eigvalsh(K, 4, "lanczos").numpy(), [5, 3, 2, 0], atol=1e-10)
    np.testing.assert_allclose(
        topk_eigvalsh(torch.eye(6, dtype=torch.float64), 3, "lanczos").numpy(), [1, 1, 1]
    )


def test_randomized_range_is_orthonormal() -> None:
    Q = randomized_range(gram(100, 10), size=15, n_iter=2)
    np.testing.assert_allclose((Q.T @ Q).numpy(), np.eye(15), atol=1e-12)


@pytest.mark.parametrize("solver", ITERATIVE)
def test_generator_determinism_and_global_rng_untouched(solver: str) -> None:
    A = gram(128, 50, seed=6)
    state = torch.random.get_rng_state()
    a = topk_eigvalsh(A, 10, solver, generator=torch.Generator().manual_seed(7), steps=15)
    b = topk_eigvalsh(A, 10, solver, generator=torch.Generator().manual_seed(7), steps=15)
    c = topk_eigvalsh(A, 10, solver, generator=torch.Generator().manual_seed(8), steps=15)
    d = topk_eigvalsh(A, 10, solver, steps=15)
    e = topk_eigvalsh(A, 10, solver, steps=15)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b) and torch.equal(d, e)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("solver", ["exact", *ITERATIVE])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(solver: str, dtype: torch.dtype) -> None:
    A = gram(64, 3, dtype=dtype, sigma=3.0)
    out = topk_eigvalsh(A, 5, solver)
    assert out.dtype == dtype and out.shape == (5,)
    assert bool((out[:-1] >= out[1:]).all())  # descending
    ref = topk_eigvalsh(A.double(), 5)
    np.testing.assert_allclose(out.double().numpy(), ref.numpy(), rtol=1e-3)


@pytest.mark.parametrize("solver", ITERATIVE)
def test_ritz_gradient_equals_exact_gradient_on_invariant_subspace(solver: str) -> None:
    # rank-4 A: the basis spans the whole range, Ritz values are stationary in Q, and the
    # gradient through Q^T A Q equals that of the exact eigenvalues (U U^T-weighted)
    w = torch.tensor([1.0, 0.5, 0.25, 0.125], dtype=torch.float64)
    grads = {}
    for name in ("exact", solver):
        A = low_rank_psd(30, 4).requires_grad_(True)
        (topk_eigvalsh(A, 4, name, steps=6, oversample=2) * w).sum().backward()
        grads[name] = A.grad
    np.testing.assert_allclose(grads[solver].numpy(), grads["exact"].numpy(), atol=1e-8)


@pytest.mark.parametrize("solver", ["exact", *ITERATIVE])
def test_gradcheck_full_basis(solver: str) -> None:
    # n = 8 and a basis of n columns: the Ritz values are the eigenvalues; symmetric input via M+M^T
    M = torch.randn(8, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    M.requires_grad_(True)

    def f(M: torch.Tensor) -> torch.Tensor:
        A = M @ M.T
        g = torch.Generator().manual_seed(0)  # reseeded: deterministic function of M
        return topk_eigvalsh(A, 3, solver, steps=8, oversample=5, generator=g)

    assert torch.autograd.gradcheck(f, (M,))


def test_errors() -> None:
    with pytest.raises(ClinfuseError, match="square"):
        topk_eigvalsh(torch.zeros(3, 4), 1)
    with pytest.raises(ClinfuseError, match="square"):
        topk_eigvalsh(torch.zeros(3), 1)
    with pytest.raises(ClinfuseError, match="between 1 and n"):
        topk_eigvalsh(torch.eye(3), 4)
    with pytest.raises(ClinfuseError, match="between 1 and n"):
        topk_eigvalsh(torch.eye(3), 0)
    with pytest.raises(ClinfuseError, match="unknown top-k"):
        topk_eigvalsh(torch.eye(3), 1, "arnoldi")  # type: ignore[arg-type]
    with pytest.raises(ClinfuseError, match="floating"):
        topk_eigvalsh(torch.eye(3, dtype=torch.int64), 1)
    with pytest.raises(ClinfuseError, match="at least k steps"):
        topk_eigvalsh(torch.eye(5), 3, "lanczos", steps=2)
    with pytest.raises(ClinfuseError, match="n_iter"):
        topk_eigvalsh(torch.eye(5), 3, "randomized", n_iter=-1)
