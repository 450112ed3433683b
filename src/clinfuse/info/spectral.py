r"""Top-k eigenvalues of a symmetric PSD matrix, differentiable through Rayleigh--Ritz.

Three solvers share one contract: they return the ``k`` largest eigenvalues of ``A`` in descending
order, and gradients flow to ``A``.

* ``exact``: :func:`torch.linalg.eigvalsh` of the whole matrix, :math:`O(n^3)`.
* ``lanczos``: an ``s``-step Lanczos basis :math:`Q \in \mathbb{R}^{n\times s}` with full
  re-orthogonalisation, :math:`O(n^2 s)`.
* ``randomized``: the Halko--Martinsson--Tropp range finder, a Gaussian sketch
  :math:`\Omega \in \mathbb{R}^{n\times(k+p)}`, :math:`Y = A^{q+1}\Omega` with a QR after every
  product, :math:`O(n^2 (k+p)(q+2))`.

The two iterative solvers build their basis ``Q`` *without* gradient, then take the Ritz values
:math:`\theta = \operatorname{eigvalsh}(Q^\top A Q)` *with* gradient. Because ``eigvalsh`` has
the backward :math:`\bar A = V \operatorname{diag}(\bar\theta) V^\top` (no
:math:`1/(\lambda_i-\lambda_j)` term), the gradient is finite on degenerate spectra. When
``span Q`` contains the top-k eigenvectors (always true when ``Q`` spans :math:`\mathbb{R}^n`), the
Ritz values are stationary in ``Q`` and the gradient equals that of the exact eigenvalues.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeAlias

import torch
from torch import Tensor

from clinfuse.core.errors import ClinfuseError

__all__ = ["SOLVERS", "Solver", "topk_eigvalsh"]

Solver: TypeAlias = Literal["exact", "lanczos", "randomized"]

_DEFAULT_SEED = 0
"""Seed of the private generator used when ``generator`` is None (the global RNG is never used)."""


def _check_square(A: Tensor, name: str = "A") -> int:
    """Validate a square floating-point matrix and return its size."""
    if not isinstance(A, Tensor):
        raise ClinfuseError(
            f"{name} must be a torch.Tensor",
            expected="a (n, n) floating-point tensor",
            found=type(A).__name__,
            fix=f"convert it with torch.as_tensor({name}, dtype=torch.float64)",
        )
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ClinfuseError(
            f"{name} must be a square matrix",
            expected="shape (n, n)",
            found=f"shape {tuple(A.shape)}",
            fix="pass a Gram matrix, e.g. gaussian_gram(x, sigma) for x of shape (n, d)",
        )
    if A.shape[0] == 0:
        raise ClinfuseError(
            f"{name} is empty",
            expected="n >= 1",
            found="shape (0, 0)",
            fix="pass a batch with at least one sample",
        )
    if not A.is_floating_point():
        raise ClinfuseError(
            f"{name} must be floating point",
            expected="float32 or float64",
            found=str(A.dtype),
            fix=f"cast it, e.g. {name}.double()",
        )
    return int(A.shape[0])


def _resolve(generator: torch.Generator | None) -> torch.Generator:
    """The caller's generator, or a private CPU generator seeded with ``_DEFAULT_SEED``."""
    if generator is None:
        return torch.Generator().manual_seed(_DEFAULT_SEED)
    return generator


def _gaussian(shape: tuple[int, ...], like: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal draws with the dtype and device of ``like``, from ``generator``.

    Draws happen on the generator's device and are then moved to ``like.device``.
    """
    z = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return z.to(like.device)


def _ritz_topk(A: Tensor, Q: Tensor, k: int) -> Tensor:
    """Top-k Ritz values of ``A`` on the orthonormal basis ``Q`` (no grad), with grad to ``A``."""
    # (Q^T A) Q rather than Q^T (A Q): for symmetric row-major A the wide product streams rows of A
    B = (Q.mT @ A) @ Q
    B = 0.5 * (B + B.mT)
    theta = torch.linalg.eigvalsh(B)
    return theta.flip(0)[:k]


def _topk_exact(A: Tensor, k: int, **_: object) -> Tensor:
    return torch.linalg.eigvalsh(A).flip(0)[:k]


def _orthogonalize(w: Tensor, V: Tensor) -> Tensor:
    """Remove the components of ``w`` along the rows of ``V`` (classical Gram--Schmidt twice)."""
    for _ in range(2):
        w = w - (V @ w) @ V
    return w


@torch.no_grad()
def lanczos_basis(A: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Orthonormal Krylov basis :math:`Q` of ``A`` with full re-orthogonalisation (no gradient).

    Builds :math:`\operatorname{span}\{v, Av, \dots, A^{s-1}v\}` with the Lanczos three-term
    recurrence, re-orthogonalising every new vector against all previous ones (twice). On
    breakdown (an invariant subspace was found, :math:`\beta_j \approx 0`) the recurrence restarts
    from a fresh Gaussian vector orthogonal to ``Q``, so ``Q`` always has ``min(steps, n)`` columns.

    Shape:
        A: ``(n, n)`` symmetric. Output: ``(n, min(steps, n))`` with orthonormal columns.

    Example:
        >>> Q = lanczos_basis(torch.eye(5, dtype=torch.float64), steps=3)
        >>> torch.allclose(Q.T @ Q, torch.eye(3, dtype=torch.float64))
        True
    """
    n = A.shape[0]
    s = min(steps, n)
    A = A.detach()
    V = A.new_zeros((s, n))  # basis vectors as rows: V @ A streams A row by row
    tol = 10 * n**0.5 * torch.finfo(A.dtype).eps
    generator = _resolve(generator)
    v = _gaussian((n,), A, generator)
    v = v / torch.linalg.vector_norm(v)
    prev = A.new_zeros(n)
    beta = A.new_zeros(())
    scale = A.new_zeros(())  # running lower bound on ||A||_2
    for j in range(s):
        V[j] = v
        if j == s - 1:
            break
        w = v @ A
        scale = torch.maximum(scale, torch.linalg.vector_norm(w))
        alpha = torch.dot(w, v)
        w = w - alpha * v - beta * prev
        w = _orthogonalize(w, V[: j + 1])
        beta = torch.linalg.vector_norm(w)
        prev = v
        if beta <= tol * scale:
            # invariant subspace: restart from a random direction orthogonal to the basis
            beta = A.new_zeros(())
            for _ in range(3):
                w = _orthogonalize(_gaussian((n,), A, generator), V[: j + 1])
                norm = torch.linalg.vector_norm(w)
                if norm > 1e-3:
                    break
            else:  # pragma: no cover - the basis already spans R^n up to rounding
                return V[: j + 1].mT
            v = w / norm
        else:
            v = w / beta
    return V.mT


@torch.no_grad()
def randomized_range(
    A: Tensor,
    size: int,
    n_iter: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Orthonormal basis of the dominant range of ``A`` (Halko et al. 2011, Alg. 4.4; no gradient).

    :math:`Q_0 = \operatorname{qr}(A\Omega)`, :math:`Q_{i+1} = \operatorname{qr}(A Q_i)` for
    ``n_iter`` power steps, with :math:`\Omega \sim \mathcal{N}(0, 1)^{n\times \ell}`.

    Shape:
        A: ``(n, n)`` symmetric. Output: ``(n, min(size, n))`` with orthonormal columns.

    Example:
        >>> Q = randomized_range(torch.eye(6, dtype=torch.float64), size=4)
        >>> Q.shape
        torch.Size([6, 4])
    """
    n = A.shape[0]
    A = A.detach()
    omega = _gaussian((min(size, n), n), A, _resolve(generator))
    # A symmetric: (Omega^T A)^T = A Omega; the wide product streams rows of A (about 2x faster
    # on CPU than the tall one), and its transpose is already the column-major input QR wants
    Q, _ = torch.linalg.qr((omega @ A).mT)
    for _ in range(n_iter):
        Q, _ = torch.linalg.qr((Q.mT @ A).mT)
    return Q


def _topk_lanczos(
    A: Tensor,
    k: int,
    *,
    steps: int | None,
    generator: torch.Generator | None,
    **_: object,
) -> Tensor:
    n = A.shape[0]
    s = default_lanczos_steps(k) if steps is None else steps
    if s < k:
        raise ClinfuseError(
            "Lanczos needs at least k steps",
            expected=f"steps >= k = {k}",
            found=f"steps = {s}",
            fix="raise steps or leave it None for the default",
        )
    Q = lanczos_basis(A, min(s, n), generator)
    return _ritz_topk(A, Q, k)


def _topk_randomized(
    A: Tensor,
    k: int,
    *,
    n_iter: int,
    oversample: int,
    generator: torch.Generator | None,
    **_: object,
) -> Tensor:
    if n_iter < 0 or oversample < 0:
        raise ClinfuseError(
            "the randomized solver needs n_iter >= 0 and oversample >= 0",
            expected="n_iter >= 0, oversample >= 0",
            found=f"n_iter = {n_iter}, oversample = {oversample}",
            fix="use the defaults n_iter=1, oversample=10",
        )
    Q = randomized_range(A, k + oversample, n_iter, generator)
    return _ritz_topk(A, Q, k)


def default_lanczos_steps(k: int) -> int:
    """Default Lanczos basis size for ``k`` wanted eigenvalues: ``max(2k + 1, k + 30)``.

    Example:
        >>> default_lanczos_steps(10)
        40
    """
    return max(2 * k + 1, k + 30)


SOLVERS: dict[str, Callable[..., Tensor]] = {
    "exact": _topk_exact,
    "lanczos": _topk_lanczos,
    "randomized": _topk_randomized,
}
"""Top-k solvers by name; each takes ``(A, k, **options)`` and returns ``(k,)``, descending."""


def check_solver(solver: str) -> None:
    """Raise a :class:`ClinfuseError` naming the known solvers when ``solver`` is unknown."""
    if solver not in SOLVERS:
        raise ClinfuseError(
            f"unknown top-k eigenvalue solver {solver!r}",
            expected=" | ".join(SOLVERS),
            found=repr(solver),
            fix="pick one of the expected names",
        )


def topk_eigvalsh(
    A: Tensor,
    k: int,
    solver: Solver = "exact",
    *,
    n_iter: int = 1,
    oversample: int = 10,
    steps: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""The ``k`` largest eigenvalues of symmetric PSD ``A``, descending, differentiable in ``A``.

    * ``exact``: :math:`\operatorname{eigvalsh}(A)`, then the top ``k``.
    * ``lanczos``: a ``steps``-column Lanczos basis ``Q`` with full re-orthogonalisation (start
      vector drawn from ``generator``), then the Ritz values
      :math:`\operatorname{eigvalsh}(Q^\top AQ)`.
      ``steps=None`` means :func:`default_lanczos_steps` (``max(2k+1, k+30)``).
    * ``randomized``: Halko's range finder with a Gaussian sketch of ``k + oversample`` columns and
      ``n_iter`` power steps (QR after each), then Rayleigh--Ritz as above.

    ``Q`` is computed without gradient; the Ritz step carries it. ``generator=None`` uses a private
    generator seeded with 0, so results are reproducible and the global RNG is left alone. Only
    the lower triangle is read by ``exact``; the iterative solvers use the whole matrix, so ``A``
    must be symmetric. Ritz values never exceed the true eigenvalues (Cauchy interlacing), so the
    iterative solvers err low.

    Shape:
        A: ``(n, n)``, float32 or float64. Output: ``(k,)``, same dtype and device.

    Example:
        >>> A = torch.diag(torch.tensor([3.0, 1.0, 2.0, 0.5], dtype=torch.float64))
        >>> topk_eigvalsh(A, 2)
        tensor([3., 2.], dtype=torch.float64)
        >>> topk_eigvalsh(A, 2, "randomized").round(decimals=12)
        tensor([3., 2.], dtype=torch.float64)
    """
    n = _check_square(A)
    check_solver(solver)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ClinfuseError(
            "k must be an integer between 1 and n",
            expected=f"1 <= k <= n = {n}",
            found=repr(k),
            fix="ask for fewer eigenvalues than the matrix has rows",
        )
    return SOLVERS[solver](
        A, k, n_iter=n_iter, oversample=oversample, steps=steps, generator=generator
    )
