r"""Matrix-based Renyi alpha-entropy (Giraldo et al. 2014), joint entropy, mutual information.

Given ``n`` samples and a Gram matrix :math:`K_{ij} = \kappa(x_i, x_j)`, set
:math:`A = K / \operatorname{tr} K` with eigenvalues
:math:`\lambda_1 \ge \dots \ge \lambda_n \ge 0`, :math:`\sum_i \lambda_i = 1`. Then, in bits,

.. math::

    H_\alpha(A) = \frac{1}{1-\alpha} \log_2 \sum_i \lambda_i^\alpha,
    \qquad H_1(A) = -\sum_i \lambda_i \log_2 \lambda_i .

Joint entropy uses the Hadamard product (Yu et al. 2019),
:math:`H_\alpha(A, B) = H_\alpha(A \circ B / \operatorname{tr}(A \circ B))`, and mutual information
is :math:`I_\alpha(A; B) = H_\alpha(A) + H_\alpha(B) - H_\alpha(A, B)`.

The low-rank estimator of Dong et al. (AAAI-23) keeps the top ``k`` eigenvalues and flattens the
tail to its mean :math:`r = (1 - \sum_{i \le k} \lambda_i) / (n - k)`:

.. math::

    H_\alpha^k(A) = \frac{1}{1-\alpha}
        \log_2\Big[\sum_{i \le k} \lambda_i^\alpha + (n-k)\, r^\alpha\Big],

the entropy of :math:`A_k = U_k \Lambda_k U_k^\top + r (I - U_k U_k^\top)`. It satisfies
:math:`H^k \ge H`, is non-increasing in ``k``, :math:`H^{n-1} = H`, and :math:`H^k = H` whenever
:math:`\operatorname{rank} A \le k`. The top ``k`` come from
:func:`~clinfuse.info.spectral.topk_eigvalsh`.

Numerics. Eigenvalues come from ``eigvalsh`` (finite gradients on degenerate spectra), are clamped
at 0 and (with ``normalize=True``) divided by their total (the spectrum sum, or the trace for the
low-rank estimator), so the result is the entropy of :math:`A / \operatorname{tr} A` whatever the
scale of ``A``. The sum is
evaluated as :math:`\log_2(1 + \sum_i \lambda_i \operatorname{expm1}((\alpha-1)\ln\lambda_i))`,
which stays accurate as :math:`\alpha \to 1`; for :math:`|\alpha - 1| < 10^{-6}` the von Neumann
form is used. Zero eigenvalues contribute nothing (and no gradient); for :math:`\alpha < 1`,
eigenvalues below :math:`n \varepsilon \lambda_1` (the numerical-rank tolerance of
``numpy.linalg.matrix_rank``) count as zero, since :math:`\lambda^\alpha` would amplify round-off.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from clinfuse.core.errors import ClinfuseError, DataError
from clinfuse.info.spectral import Solver, _check_square, check_solver, topk_eigvalsh

__all__ = [
    "entropy_of",
    "gaussian_gram",
    "joint_entropy",
    "knn_sigma",
    "label_gram",
    "mutual_information",
    "pairwise_sq_dists",
    "renyi_entropy",
    "trace_normalize",
]

VON_NEUMANN_TOL = 1e-6
"""``|alpha - 1|`` below this uses the von Neumann form :math:`-\\sum\\lambda\\log_2\\lambda`."""

_SOLVER_OPTIONS = frozenset({"n_iter", "oversample", "steps"})
_LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- kernels


def _as_points(x: Tensor, name: str = "x") -> Tensor:
    """Validate a ``(n, d)`` (or ``(n,)``, read as ``(n, 1)``) floating-point sample matrix."""
    if not isinstance(x, Tensor):
        raise ClinfuseError(
            f"{name} must be a torch.Tensor",
            expected="a (n, d) floating-point tensor",
            found=type(x).__name__,
            fix=f"convert it with torch.as_tensor({name}, dtype=torch.float32)",
        )
    if x.ndim == 1:
        x = x.unsqueeze(-1)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ClinfuseError(
            f"{name} must hold one sample per row",
            expected="shape (n, d) with n >= 1",
            found=f"shape {tuple(x.shape)}",
            fix="flatten the features of each sample, e.g. x.reshape(len(x), -1)",
        )
    if not x.is_floating_point():
        raise ClinfuseError(
            f"{name} must be floating point",
            expected="float32 or float64",
            found=str(x.dtype),
            fix=f"cast it, e.g. {name}.float()",
        )
    return x


def pairwise_sq_dists(x: Tensor) -> Tensor:
    r"""Squared Euclidean distances :math:`D_{ij} = \lVert x_i - x_j \rVert^2`.

    Computed as :math:`\lVert c_i\rVert^2 + \lVert c_j\rVert^2 - 2 c_i^\top c_j` on centred points
    :math:`c = x - \bar x` (less cancellation), symmetrised, with an exactly zero diagonal. Values
    below the round-off floor :math:`8\varepsilon\max_i\lVert c_i\rVert^2` (negative ones
    included) are set to exactly 0, so duplicated points are at distance 0. Differentiable; the
    gradient is finite (and 0 between duplicates).

    Shape:
        x: ``(n, d)`` (``(n,)`` is read as ``(n, 1)``). Output: ``(n, n)``, dtype of ``x``.

    Example:
        >>> pairwise_sq_dists(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        tensor([[ 0., 25.],
                [25.,  0.]])
    """
    x = _as_points(x)
    c = x - x.mean(dim=0, keepdim=True)
    sq = (c * c).sum(dim=1)
    d = torch.addmm(sq[:, None] + sq[None, :], c, c.mT, alpha=-2.0)
    # fresh tensors, and add's backward needs neither input nor output: in-place is safe here
    d = (d + d.mT).mul_(0.5)
    d.diagonal().zero_()
    # below the round-off floor of the expansion the value is noise: make it an exact 0
    floor = 8.0 * torch.finfo(d.dtype).eps * sq.detach().max()
    return torch.where(d > floor, d, torch.zeros((), dtype=d.dtype, device=d.device))


def _check_sigma(sigma: float | Tensor) -> None:
    bad = False
    if isinstance(sigma, Tensor):
        if sigma.numel() != 1:
            raise ClinfuseError(
                "sigma must be a scalar",
                expected="a float or a 0-d tensor",
                found=f"tensor of shape {tuple(sigma.shape)}",
                fix="pass one bandwidth, e.g. knn_sigma(x)",
            )
        if not sigma.requires_grad and sigma.device.type == "cpu":
            bad = not bool(torch.isfinite(sigma) & (sigma > 0))
    elif isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise ClinfuseError(
            "sigma must be a number or a tensor",
            expected="float > 0, or 'knn' where accepted",
            found=repr(sigma),
            fix="pass a positive bandwidth, e.g. knn_sigma(x)",
        )
    else:
        bad = not (math.isfinite(sigma) and sigma > 0)
    if bad:
        raise ClinfuseError(
            "the kernel bandwidth sigma must be positive and finite",
            expected="0 < sigma < inf",
            found=repr(sigma),
            fix="use knn_sigma(x), the mean distance to the 5 nearest neighbours",
        )


def gaussian_gram(x: Tensor, sigma: float | Tensor) -> Tensor:
    r"""Gaussian Gram matrix :math:`K_{ij} = \exp(-\lVert x_i - x_j \rVert^2 / \sigma^2)`.

    The notes' convention: :math:`\sigma^2` divides the squared distance, with no factor 2.
    Unit diagonal, symmetric, positive definite for distinct points.

    Shape:
        x: ``(n, d)``; sigma: float or 0-d tensor (may carry gradient). Output: ``(n, n)``.

    Example:
        >>> K = gaussian_gram(torch.tensor([[0.0], [1.0]], dtype=torch.float64), 1.0)
        >>> round(K[0, 1].item(), 6) == round(math.exp(-1.0), 6)
        True
    """
    _check_sigma(sigma)
    return _gram_from_sq_dists(pairwise_sq_dists(x), sigma)


def _gram_from_sq_dists(d: Tensor, sigma: float | Tensor) -> Tensor:
    if isinstance(sigma, Tensor):
        sigma = sigma.to(dtype=d.dtype, device=d.device)
    return torch.exp(d * (-1.0 / sigma**2))


def knn_sigma(x: Tensor, k: int = 5) -> Tensor:
    r"""Bandwidth :math:`\sigma` = mean distance from each point to its ``k`` nearest neighbours.

    The point itself is excluded and ``k`` is clipped to ``n - 1``. The result is detached (the DIB
    derivatives compute it on detached numpy) and at least :math:`\varepsilon` of the dtype, so it
    stays positive when all points coincide.

    Shape:
        x: ``(n, d)`` with ``n >= 2``. Output: ``()``, dtype and device of ``x``, no gradient.

    Example:
        >>> knn_sigma(torch.tensor([[0.0], [1.0], [3.0]]), k=1)
        tensor(1.3333)
    """
    x = _as_points(x).detach()
    _check_knn(x, k)
    return _knn_sigma_from_sq_dists(pairwise_sq_dists(x), k)


def _check_knn(x: Tensor, k: int) -> None:
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ClinfuseError(
            "k (the number of nearest neighbours) must be a positive integer",
            expected="k >= 1",
            found=repr(k),
            fix="use the default k=5",
        )
    if n < 2:
        raise DataError(
            "knn_sigma needs at least two points",
            expected="n >= 2",
            found=f"n = {n}",
            fix="pass a batch with several samples, or a fixed sigma",
        )


@torch.no_grad()
def _knn_sigma_from_sq_dists(d: Tensor, k: int) -> Tensor:
    """:func:`knn_sigma` from squared distances (no gradient; ``d`` is not modified)."""
    k = min(k, d.shape[0] - 1)
    d = d.detach().clone()
    d.fill_diagonal_(math.inf)
    nearest = torch.topk(d, k, dim=1, largest=False).values.sqrt()  # sqrt is monotone
    return nearest.mean().clamp_min(torch.finfo(d.dtype).eps)


def label_gram(y: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    r"""Class-indicator kernel :math:`K_{ij} = 1[y_i = y_j]`.

    Its normalised eigenvalues are the class frequencies, so :math:`H_\alpha` of this Gram matrix is
    the plug-in Renyi entropy of the labels.

    Shape:
        y: ``(n,)`` or ``(n, 1)`` labels (any dtype). Output: ``(n, n)`` in ``dtype`` (default: the
        dtype of a floating ``y``, else ``torch.get_default_dtype()``).

    Example:
        >>> label_gram(torch.tensor([0, 1, 0]))
        tensor([[1., 0., 1.],
                [0., 1., 0.],
                [1., 0., 1.]])
    """
    if not isinstance(y, Tensor):
        raise ClinfuseError(
            "y must be a torch.Tensor",
            expected="labels of shape (n,)",
            found=type(y).__name__,
            fix="convert it with torch.as_tensor(y)",
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ClinfuseError(
            "y must be a vector of labels",
            expected="shape (n,) or (n, 1)",
            found=f"shape {tuple(y.shape)}",
            fix="for one-hot labels pass y.argmax(dim=1)",
        )
    if y.is_floating_point() and bool(torch.isnan(y).any()):
        raise DataError(
            "labels contain NaN",
            expected="finite labels",
            found=f"{int(torch.isnan(y).sum())} NaN of {len(y)}",
            fix="drop or impute the unlabelled samples first",
        )
    if dtype is None:
        dtype = y.dtype if y.is_floating_point() else torch.get_default_dtype()
    return (y[:, None] == y[None, :]).to(dtype)


def trace_normalize(K: Tensor) -> Tensor:
    r"""Unit-trace version :math:`A = K / \operatorname{tr} K` of a PSD matrix (trace must be > 0).

    Shape:
        K: ``(n, n)``. Output: ``(n, n)``.

    Example:
        >>> trace_normalize(torch.eye(2) * 3)
        tensor([[0.5000, 0.0000],
                [0.0000, 0.5000]])
    """
    _check_square(K, "K")
    return K / K.diagonal().sum()


# ----------------------------------------------------------------------------- entropies


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ClinfuseError(
            "alpha must be a real number",
            expected="a float > 0",
            found=repr(alpha),
            fix="pass e.g. alpha=1.9 (the DIB default) or alpha=1.01",
        )
    if not (math.isfinite(alpha) and alpha > 0):
        raise ClinfuseError(
            "the Renyi order alpha must be positive and finite",
            expected="0 < alpha < inf (alpha = 1 is the von Neumann entropy)",
            found=f"alpha = {alpha}",
            fix="pass e.g. alpha=1.9 (the DIB default) or alpha=1.01",
        )
    return float(alpha)


def _check_rank(rank: int | None) -> None:
    if rank is None:
        return
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ClinfuseError(
            "rank must be a positive integer or None",
            expected="rank >= 1, or None for the exact full-spectrum entropy",
            found=repr(rank),
            fix="use rank=10 (the DIB default) or rank=None",
        )


def _check_options(options: dict[str, object]) -> None:
    unknown = sorted(set(options) - _SOLVER_OPTIONS)
    if unknown:
        raise ClinfuseError(
            f"unknown solver option(s) {unknown}",
            expected=" | ".join(sorted(_SOLVER_OPTIONS)),
            found=", ".join(unknown),
            fix="see clinfuse.info.spectral.topk_eigvalsh for the options",
        )


def _entropy_of_probs(p: Tensor, weight: Tensor, alpha: float, n: int) -> Tensor:
    r"""Renyi entropy (bits) of a distribution given as values ``p`` with multiplicities ``weight``.

    ``p`` must sum (with weights) to 1 up to rounding; the formula never uses that sum directly.
    """
    if abs(alpha - 1.0) < VON_NEUMANN_TOL:
        keep = p > 0
        safe = torch.where(keep, p, torch.ones_like(p))
        terms = torch.where(keep, p * torch.log2(safe), torch.zeros_like(p))
        return -(weight * terms).sum()
    if alpha < 1.0:
        threshold = n * torch.finfo(p.dtype).eps * p.detach().max()
        keep = p > threshold
    else:
        keep = p > 0
    safe = torch.where(keep, p, torch.ones_like(p))
    # sum_i p_i^alpha - 1 = sum_i p_i (p_i^(alpha-1) - 1), accurate as alpha -> 1
    terms = torch.where(keep, p * torch.expm1((alpha - 1.0) * torch.log(safe)), torch.zeros_like(p))
    return torch.log1p((weight * terms).sum()) / ((1.0 - alpha) * _LN2)


def renyi_entropy(
    A: Tensor,
    alpha: float,
    rank: int | None = None,
    solver: Solver = "exact",
    *,
    normalize: bool = True,
    generator: torch.Generator | None = None,
    **solver_kwargs: int | None,
) -> Tensor:
    r"""Matrix-based Renyi :math:`\alpha`-entropy of a Gram matrix, in bits (exact or low-rank).

    ``rank=None``: the exact :math:`H_\alpha` from the full spectrum (``eigvalsh``; ``solver`` is
    then ignored). ``rank=k``: the low-rank :math:`H_\alpha^k` (top ``k`` kept, tail flattened to
    its mean), with the top ``k`` from ``solver`` (``exact | lanczos | randomized``; ``generator``
    and ``solver_kwargs`` such as ``n_iter``, ``oversample``, ``steps`` go to
    :func:`~clinfuse.info.spectral.topk_eigvalsh`). ``rank >= n - 1`` gives the exact :math:`H`,
    which equals :math:`H^{n-1}`. :math:`|\alpha - 1| < 10^{-6}` gives the von Neumann entropy.

    .. math::

        H_\alpha(A) = \frac{1}{1-\alpha}\log_2\sum_i \lambda_i^\alpha, \qquad
        H_\alpha^k(A) = \frac{1}{1-\alpha}\log_2\Big[\sum_{i\le k}\lambda_i^\alpha
            + (n-k)\Big(\frac{1-\sum_{i\le k}\lambda_i}{n-k}\Big)^\alpha\Big]

    with :math:`\lambda` the eigenvalues of :math:`A/\operatorname{tr}A`. ``normalize=True``
    trace-normalises ``A``; this is done on the spectrum (eigenvalues divided by their sum, or the
    top-k by :math:`\operatorname{tr}A`), which is the same maths as ``trace_normalize(A)`` without
    an extra ``(n, n)`` pass. ``normalize=False`` uses the eigenvalues of ``A`` as they are, for an
    ``A`` that already has unit trace.

    Shape:
        A: ``(n, n)`` symmetric PSD, float32 or float64. Output: ``()``, same dtype, in bits,
        in :math:`[0, \log_2 n]`.

    Example:
        >>> round(renyi_entropy(torch.eye(4), alpha=2.0).item(), 5)
        2.0
        >>> round(renyi_entropy(torch.ones(4, 4), alpha=1.9).item(), 5)
        0.0
    """
    alpha = _check_alpha(alpha)
    _check_rank(rank)
    check_solver(solver)
    _check_options(solver_kwargs)
    n = _check_square(A)
    if rank is None or rank >= n - 1:
        lam = torch.linalg.eigvalsh(A).clamp_min(0.0)
        p = lam / lam.sum() if normalize else lam
        return _entropy_of_probs(p, torch.ones_like(p), alpha, n)
    top = topk_eigvalsh(A, rank, solver, generator=generator, **solver_kwargs).clamp_min(0.0)
    p_top = top / A.diagonal().sum() if normalize else top
    tail = (1.0 - p_top.sum()).clamp_min(0.0) / (n - rank)
    p = torch.cat([p_top, tail.reshape(1)])
    weight = torch.ones_like(p)
    weight[-1] = n - rank
    return _entropy_of_probs(p, weight, alpha, n)


def _check_same_shape(grams: tuple[Tensor, ...]) -> None:
    if not grams:
        raise ClinfuseError(
            "joint_entropy needs at least one Gram matrix",
            expected="joint_entropy(K1, K2, ..., alpha=...)",
            found="no matrices",
            fix="pass the Gram matrices of the variables as positional arguments",
        )
    for i, g in enumerate(grams):
        _check_square(g, f"gram #{i}")
    shapes = {tuple(g.shape) for g in grams}
    if len(shapes) > 1:
        raise ClinfuseError(
            "Gram matrices must describe the same samples",
            expected="all of shape (n, n) with the same n",
            found=f"shapes {sorted(shapes)}",
            fix="build every Gram matrix from the same batch of samples",
        )


def joint_entropy(
    *grams: Tensor,
    alpha: float,
    rank: int | None = None,
    solver: Solver = "exact",
    **kw: object,
) -> Tensor:
    r"""Joint matrix-based Renyi entropy :math:`H_\alpha(A_1, \dots, A_m)` in bits.

    :math:`H_\alpha\big(A_1 \circ \dots \circ A_m / \operatorname{tr}(A_1 \circ\dots\circ A_m)\big)`
    with :math:`\circ` the Hadamard product; ``rank``, ``solver`` and ``kw`` as in
    :func:`renyi_entropy`.

    Shape:
        grams: each ``(n, n)`` symmetric PSD. Output: ``()``.

    Example:
        >>> y = torch.tensor([0, 0, 1, 1])
        >>> z = torch.tensor([0, 1, 0, 1])
        >>> round(joint_entropy(label_gram(y), label_gram(z), alpha=2.0).item(), 5)
        2.0
    """
    _check_same_shape(grams)
    prod = grams[0]
    for g in grams[1:]:
        prod = prod * g
    return renyi_entropy(prod, alpha, rank, solver, **kw)  # type: ignore[arg-type]


def mutual_information(
    Ka: Tensor,
    Kb: Tensor,
    alpha: float,
    rank: int | None = None,
    solver: Solver = "exact",
    **kw: object,
) -> Tensor:
    r"""Matrix-based Renyi mutual information :math:`I_\alpha(A;B) = H(A) + H(B) - H(A, B)`, bits.

    For the exact estimator :math:`0 \le I_\alpha \le \min(H_\alpha(A), H_\alpha(B))`; the low-rank
    estimator can break these bounds slightly. The result is not clamped.

    Shape:
        Ka, Kb: ``(n, n)`` Gram matrices of the same samples. Output: ``()``.

    Example:
        >>> K = label_gram(torch.tensor([0, 0, 1, 1]))
        >>> round(mutual_information(K, K, alpha=2.0).item(), 5)
        1.0
    """
    _check_alpha(alpha)
    _check_same_shape((Ka, Kb))
    h_a = renyi_entropy(Ka, alpha, rank, solver, **kw)  # type: ignore[arg-type]
    h_b = renyi_entropy(Kb, alpha, rank, solver, **kw)  # type: ignore[arg-type]
    return h_a + h_b - joint_entropy(Ka, Kb, alpha=alpha, rank=rank, solver=solver, **kw)


def entropy_of(
    x: Tensor,
    alpha: float = 1.9,
    sigma: float | Tensor | Literal["knn"] = "knn",
    rank: int | None = None,
    solver: Solver = "exact",
    k_nn: int = 5,
    **kw: object,
) -> Tensor:
    r"""Renyi entropy in bits of samples ``x`` under a Gaussian kernel, ``H(gaussian_gram(x, s))``.

    ``sigma="knn"`` uses :func:`knn_sigma` with ``k_nn`` neighbours (detached); ``rank``, ``solver``
    and ``kw`` as in :func:`renyi_entropy`.

    Shape:
        x: ``(n, d)``. Output: ``()``.

    Example:
        >>> x = torch.tensor([[0.0], [100.0], [200.0]], dtype=torch.float64)
        >>> round(entropy_of(x, sigma=1.0).item(), 6) == round(math.log2(3), 6)
        True
    """
    if isinstance(sigma, str):
        if sigma != "knn":
            raise ClinfuseError(
                f"unknown bandwidth rule {sigma!r}",
                expected="'knn', a float > 0, or a 0-d tensor",
                found=repr(sigma),
                fix="use sigma='knn' or a number",
            )
        _check_knn(_as_points(x), k_nn)
        d = pairwise_sq_dists(x)  # shared by the bandwidth and the Gram matrix
        gram = _gram_from_sq_dists(d, _knn_sigma_from_sq_dists(d, k_nn))
    else:
        gram = gaussian_gram(x, sigma)
    return renyi_entropy(gram, alpha, rank, solver, **kw)  # type: ignore[arg-type]
