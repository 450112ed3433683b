r"""Patch prototypes (DPsurv prototype level 1): k-means prototypes and PANTHER's DirNIW MAP-EM.

DPsurv summarises each slide, a bag of ``M`` patch features ``x_m`` in ``R^D``, by a ``C``-component
diagonal Gaussian mixture fitted by maximum-a-posteriori EM around frozen patch prototypes
(PANTHER, Song et al., CVPR 2024):

1. :func:`kmeans` over (a random subsample of) the training patches gives prototype means ``m_c``.
2. :class:`PrototypePrior` freezes the DirNIW prior ``(m_c, V_c)``. PANTHER *learns*
   :math:`V = \varepsilon\,\mathrm{softplus}(V_\_)`; DPsurv uses PANTHER frozen, and how ``V``
   is set is not documented, so here ``V = eps * (variance source)`` with the within-cluster
   per-dimension variance as default. **Inferred**; ``eps`` and the source are configurable.
3. :func:`panther_em` runs ``iters`` EM steps per slide from the prior mode
   (``pi`` uniform, ``mu = m``, ``Sigma = V``) and returns ``(pi, mu, Sigma, q)``.
   :func:`panther_batch` does the same for many slides at once (padded, masked).
4. :func:`slide_embedding` gives the ``(C, 1 + 2D)`` expert inputs ``[pi_c, mu_c, Sigma_c]``;
   :func:`panther_vector` the flat vector of the "PANTHER + linear head" baseline.

The EM settings of the official code conflict (file name ``em_1 / eps_1.0 / tau_1.0``, the GMM
extraction script uses 3 iterations, PANTHER's base class ``tau = 10``): everything is a parameter,
defaults follow the embedding file name (``iters=1, tau=1, eps=1``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.core.runs import atomic_path

log = logging.getLogger(__name__)

ArrayLike = Tensor | np.ndarray
DType = Literal["float32", "float64"]
Metric = Literal["euclidean", "cosine"]
VarianceSource = Literal["within_cluster", "pooled", "global", "ones"]

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrototypeConfig:
    """Patch prototypes: k-means over training patches and the frozen DirNIW prior built from it."""

    n_components: int = 16
    """Number of prototypes ``C`` (DPsurv and PANTHER use 16)."""
    metric: Metric = "euclidean"
    """k-means distance; ``cosine`` is spherical k-means (prior means stay in raw feature space)."""
    n_init: int = 3
    """k-means++ restarts; the run with the lowest inertia on the fitted points is kept."""
    iters: int = 100
    """Maximum Lloyd iterations per restart."""
    max_points: int | None = None
    """Random subsample of training patches used to fit k-means (PANTHER subsamples); None = all."""
    eps: float = 1.0
    """Scale of the prior variance ``V = eps * source`` [inferred: PANTHER ``eps*softplus(V_)``]."""
    variance: VarianceSource = "within_cluster"
    """Source of ``V`` [inferred]: per-cluster, pooled within-cluster, global, or ones."""
    var_floor: float = 1e-6
    """Smallest prior variance (keeps ``V > 0`` for constant dimensions or singleton clusters)."""
    dtype: DType = "float32"
    """Compute dtype of the k-means distances (inertia and sums are accumulated in float64)."""
    seed: int = 0
    """Seed of the k-means++ seeding and of the ``max_points`` subsample."""


@dataclass(frozen=True)
class PantherConfig:
    """PANTHER MAP-EM settings; ``panther_em(bag, prior, **dataclasses.asdict(cfg))`` works."""

    tau: float = 1.0
    """Prior strength (pseudo-counts per component); file name says 1, PANTHERBase says 10."""
    iters: int = 1
    """EM iterations from the prior mode; file name says 1, ``extract_gmm.py`` says 3."""
    init: Literal["prior"] = "prior"
    """Starting point: the prior mode (``pi`` uniform, ``mu = m``, ``Sigma = V``)."""
    var_floor: float = 1e-6
    """Floor of every fitted variance ``Sigma_cd``."""
    dtype: DType = "float64"
    """Dtype of the EM statistics (float64: sums of ``q x^2`` over thousands of patches)."""


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _who(slide_id: str | None) -> str:
    return f"slide {slide_id!r}" if slide_id is not None else "bag"


def _as_tensor(x: ArrayLike, what: str) -> Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, Tensor):
        return x
    raise DataError(
        f"{what} must be a torch.Tensor or numpy array",
        expected="Tensor | ndarray of shape (N, D)",
        found=type(x).__name__,
        fix="convert the features with torch.as_tensor(...)",
    )


def _check_finite_chunked(x: Tensor, what: str, chunk: int) -> None:
    for s in range(0, x.shape[0], chunk):
        bad = ~torch.isfinite(x[s : s + chunk]).all(dim=1)
        if bool(bad.any()):
            first = s + int(bad.nonzero()[0, 0])
            n_bad = int(bad.sum())
            raise DataError(
                f"{what} has non-finite (NaN/inf) features",
                expected="finite features in every row",
                found=f"{n_bad}+ bad rows, first at row {first}",
                fix="re-extract the features of this slide or drop the bad patches",
            )


def _resolve_dtype(dtype: DType | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(
            "unknown dtype", expected=sorted(_DTYPES), found=dtype, fix="use float32 or float64"
        )
    return _DTYPES[dtype]


# --------------------------------------------------------------------------------------------
# k-means
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KMeansResult:
    """Result of :func:`kmeans`.

    Shape:
        centers: ``(k, D)`` (unit rows for ``cosine``); labels: ``(N,)`` int64 over *all* input
        points; inertia: sum over all points of the distance to their center (squared Euclidean,
        or ``1 - cos`` for ``cosine``).
    """

    centers: Tensor
    labels: Tensor
    inertia: float
    n_iter: int
    metric: Metric


def _prep_euclidean(c: Tensor) -> Tensor:
    return c


def _prep_cosine(c: Tensor) -> Tensor:
    return torch.nn.functional.normalize(c, dim=-1)


def _dist_euclidean(xc: Tensor, c: Tensor) -> Tensor:
    # ||x||^2 - 2 x.c + ||c||^2, clamped at 0 against round-off
    d = (xc * xc).sum(1, keepdim=True) - 2.0 * (xc @ c.T) + (c * c).sum(1)[None, :]
    return d.clamp_min_(0.0)


def _dist_cosine(xc: Tensor, c: Tensor) -> Tensor:
    return (1.0 - _prep_cosine(xc) @ c.T).clamp_min_(0.0)


_METRICS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]] = {
    "euclidean": (_prep_euclidean, _dist_euclidean),
    "cosine": (_prep_cosine, _dist_cosine),
}


class _KMeansRun:
    """Chunked k-means passes over ``x`` (kept in its storage dtype, cast chunk by chunk)."""

    def __init__(self, x: Tensor, metric: Metric, dtype: torch.dtype, chunk: int) -> None:
        self.x, self.dtype, self.chunk = x, dtype, chunk
        self.prep, self.dist = _METRICS[metric]

    def chunks(self):
        for s in range(0, self.x.shape[0], self.chunk):
            yield s, self.x[s : s + self.chunk].to(self.dtype)

    def dist_to(self, c: Tensor) -> Tensor:
        """``(N,)`` distance of every point to the single center ``c`` (D,)."""
        c = c[None, :].to(self.dtype)
        return torch.cat([self.dist(xc, c)[:, 0] for _, xc in self.chunks()])

    def assign(self, centers: Tensor) -> tuple[Tensor, Tensor]:
        """Labels ``(N,)`` and distance to the assigned center ``(N,)``."""
        c = centers.to(self.dtype)
        dmin, lab = [], []
        for _, xc in self.chunks():
            d, i = self.dist(xc, c).min(dim=1)
            dmin.append(d)
            lab.append(i)
        return torch.cat(lab), torch.cat(dmin)

    def update(self, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Cluster sums (float64) of the metric-prepared points and counts."""
        d = self.x.shape[1]
        sums = torch.zeros(k, d, dtype=torch.float64, device=self.x.device)
        counts = torch.zeros(k, dtype=torch.float64, device=self.x.device)
        for s, xc in self.chunks():
            lab = labels[s : s + xc.shape[0]]
            sums.index_add_(0, lab, self.prep(xc).to(torch.float64))
            counts.index_add_(0, lab, torch.ones_like(lab, dtype=torch.float64))
        return sums, counts


def _sample_proportional(w: Tensor, gen: torch.Generator) -> int:
    """One index drawn with probability ``w / w.sum()`` (any length, unlike ``multinomial``)."""
    cum = torch.cumsum(w.to(torch.float64), 0)
    total = float(cum[-1])
    if not total > 0.0:  # all points coincide with chosen centers: draw uniformly
        return int(torch.randint(w.shape[0], (1,), generator=gen))
    u = float(torch.rand(1, generator=gen, dtype=torch.float64)) * total
    return min(int(torch.searchsorted(cum, torch.tensor([u], dtype=torch.float64))), w.shape[0] - 1)


def _kmeanspp(run: _KMeansRun, k: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): next center drawn with prob. ``∝ D(x)``."""
    n = run.x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    centers = [run.prep(run.x[first].to(run.dtype))]
    mind = run.dist_to(centers[0])
    for _ in range(1, k):
        i = _sample_proportional(mind, gen)
        centers.append(run.prep(run.x[i].to(run.dtype)))
        mind = torch.minimum(mind, run.dist_to(centers[-1]))
    return torch.stack(centers)


def _lloyd(run: _KMeansRun, centers: Tensor, iters: int, tol: float) -> tuple[Tensor, float, int]:
    """Lloyd iterations; an empty cluster is re-seeded at the point farthest from its center."""
    k = centers.shape[0]
    n_iter = 0
    while n_iter < iters:
        n_iter += 1
        labels, dmin = run.assign(centers)
        sums, counts = run.update(labels, k)
        new = run.prep((sums / counts.clamp_min(1.0)[:, None]).to(run.dtype))
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            far = torch.topk(dmin, k=min(empty.numel(), dmin.numel())).indices
            log.debug(
                "k-means: %d empty cluster(s) re-seeded at the farthest points", empty.numel()
            )
            new[empty[: far.numel()]] = run.prep(run.x[far].to(run.dtype))
        shift = float(((new.to(torch.float64) - centers.to(torch.float64)) ** 2).sum())
        centers = new
        if shift <= tol and not empty.numel():
            break
    _, dmin = run.assign(centers)
    return centers, float(dmin.to(torch.float64).sum()), n_iter


def kmeans(
    x: ArrayLike,
    k: int,
    *,
    n_init: int = 3,
    iters: int = 100,
    seed: int = 0,
    metric: Metric = "euclidean",
    max_points: int | None = None,
    init: Tensor | None = None,
    tol: float = 1e-4,
    dtype: DType | torch.dtype = "float32",
    chunk_size: int | None = None,
) -> KMeansResult:
    r"""k-means with k-means++ seeding, Lloyd iterations and chunked distances.

    Minimises :math:`\sum_n \min_j d(x_n, c_j)` with :math:`d = \lVert x - c\rVert^2`
    (``euclidean``) or :math:`d = 1 - \cos(x, c)` with unit centers (``cosine``, spherical
    k-means). Distances are computed ``chunk_size`` rows at a time, so ``x`` (e.g. 1e6 x 1024
    float32 patches) is never copied whole. With ``max_points`` the centers are fitted on a
    random subsample (drawn with a ``torch.Generator`` seeded by ``seed``), then every point is
    labelled. An empty cluster is re-seeded at the point farthest from its assigned center.

    Args:
        x: points, ``(N, D)``; ``init``: optional ``(k, D)`` starting centers (then ``n_init = 1``).
        tol: stop when the squared center shift is at most ``tol`` times the mean per-dimension
            variance of the fitted points.
        chunk_size: rows per distance chunk; None picks ``2**24 // D`` (about 64 MB of float32).

    Shape:
        x: ``(N, D)``. Output: ``centers (k, D)``, ``labels (N,)``, scalar ``inertia`` over all N.

    Example:
        >>> pts = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
        >>> res = kmeans(pts, 2, seed=0)
        >>> bool(res.labels[0] == res.labels[1]) and bool(res.labels[0] != res.labels[2])
        True
        >>> round(res.inertia, 4)
        0.01
    """
    x = _as_tensor(x, "k-means input")
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(
            "k-means input must be a non-empty 2-D array of points",
            expected="(N, D) with N >= 1",
            found=tuple(x.shape),
            fix="concatenate the training patch features into one (N, D) array",
        )
    if metric not in _METRICS:
        raise ConfigError("unknown k-means metric", expected=sorted(_METRICS), found=metric)
    if chunk_size is None:
        chunk_size = max(1024, (1 << 24) // max(1, x.shape[1]))
    if k < 1 or n_init < 1 or iters < 1 or chunk_size is None or chunk_size < 1:
        raise ConfigError(
            "k, n_init, iters and chunk_size must be positive",
            expected=">= 1",
            found={"k": k, "n_init": n_init, "iters": iters, "chunk_size": chunk_size},
        )
    cdtype = _resolve_dtype(dtype)
    _check_finite_chunked(x, "k-means input", chunk_size)
    gen = torch.Generator().manual_seed(seed)
    fit_x = x
    if max_points is not None and max_points < x.shape[0]:
        idx = torch.randperm(x.shape[0], generator=gen)[:max_points].to(x.device)
        fit_x = x[idx]
    if k > fit_x.shape[0]:
        raise DataError(
            "more clusters than points to fit them on",
            expected=f"at least k={k} points",
            found=f"{fit_x.shape[0]} points",
            fix="lower k or raise max_points",
        )
    run = _KMeansRun(fit_x, metric, cdtype, chunk_size)
    var = 0.0
    for _, xc in run.chunks():  # mean per-dimension variance, for a scale-free tol
        var += float(((xc - xc.mean(0)) ** 2).sum())
    tol_abs = tol * var / fit_x.numel()

    if init is not None:
        init = _as_tensor(init, "k-means init")
        if tuple(init.shape) != (k, x.shape[1]):
            raise ConfigError(
                "k-means init has the wrong shape",
                expected=(k, x.shape[1]),
                found=tuple(init.shape),
            )
        starts = [run.prep(init.to(device=x.device, dtype=cdtype))]
    else:
        starts = None
    best: tuple[Tensor, float, int] | None = None
    for r in range(1 if starts is not None else n_init):
        c0 = starts[r] if starts is not None else _kmeanspp(run, k, gen)
        out = _lloyd(run, c0, iters, tol_abs)
        if best is None or out[1] < best[1]:
            best = out
    assert best is not None
    centers, _, n_iter = best
    full = run if fit_x is x else _KMeansRun(x, metric, cdtype, chunk_size)
    labels, dmin = full.assign(centers)
    return KMeansResult(centers, labels, float(dmin.to(torch.float64).sum()), n_iter, metric)


# --------------------------------------------------------------------------------------------
# frozen DirNIW prior
# --------------------------------------------------------------------------------------------


def _cluster_moments(x: Tensor, labels: Tensor, k: int, chunk: int) -> tuple[Tensor, ...]:
    """Counts ``(k,)``, means and per-dimension variances ``(k, D)`` (float64, chunked)."""
    d = x.shape[1]
    n = torch.zeros(k, dtype=torch.float64, device=x.device)
    s1 = torch.zeros(k, d, dtype=torch.float64, device=x.device)
    s2 = torch.zeros(k, d, dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[0], chunk):
        xc = x[s : s + chunk].to(torch.float64)
        lab = labels[s : s + chunk].to(x.device)
        n.index_add_(0, lab, torch.ones_like(lab, dtype=torch.float64))
        s1.index_add_(0, lab, xc)
        s2.index_add_(0, lab, xc * xc)
    mean = s1 / n.clamp_min(1.0)[:, None]
    var = (s2 / n.clamp_min(1.0)[:, None] - mean**2).clamp_min(0.0)
    return n, mean, var, s1, s2


def _var_within(n: Tensor, mean: Tensor, var: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
    return var


def _var_pooled(n: Tensor, mean: Tensor, var: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
    pooled = (n[:, None] * var).sum(0) / n.sum()
    return pooled.expand_as(var).clone()


def _var_global(n: Tensor, mean: Tensor, var: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
    tot = n.sum()
    gvar = s2.sum(0) / tot - (s1.sum(0) / tot) ** 2
    return gvar.clamp_min(0.0).expand_as(var).clone()


def _var_ones(n: Tensor, mean: Tensor, var: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
    return torch.ones_like(var)


_VARIANCE_SOURCES: dict[str, Callable[..., Tensor]] = {
    "within_cluster": _var_within,
    "pooled": _var_pooled,
    "global": _var_global,
    "ones": _var_ones,
}


@dataclass(frozen=True)
class PrototypePrior:
    r"""Frozen DirNIW prior of PANTHER: prototype means ``m_c`` and prior variances ``V_c``.

    The EM of :func:`panther_em` is MAP estimation under

    .. math::
        \log p(\pi,\mu,\Sigma) = \sum_c \Big[\tau\log\pi_c
        + \sum_d\Big(-\tfrac{\tau}{2}\log\Sigma_{cd}
        - \tau\,\frac{(\mu_{cd}-m_{cd})^2 + V_{cd}}{2\Sigma_{cd}}\Big)\Big] + \text{const},

    a Dirichlet(``tau + 1``) on ``pi`` and ``tau`` pseudo-patches per component at ``m_c`` with
    spread ``V_c``, whose mode is ``(pi uniform, m, V)``.

    Shape:
        means: ``(C, D)``; var: ``(C, D)``, positive.
    """

    means: Tensor
    var: Tensor

    def __post_init__(self) -> None:
        if self.means.ndim != 2 or self.means.shape != self.var.shape:
            raise DataError(
                "prototype means and variances must both be (C, D)",
                expected="equal (C, D) shapes",
                found={"means": tuple(self.means.shape), "var": tuple(self.var.shape)},
            )
        if not bool(torch.isfinite(self.means).all()) or not bool((self.var > 0).all()):
            raise DataError(
                "prototype prior has non-finite means or non-positive variances",
                expected="finite means, var > 0",
                found=f"min var {float(self.var.min()):.3g}",
                fix="raise var_floor or check the training patches",
            )

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def from_kmeans(
        cls,
        patches: ArrayLike,
        result: KMeansResult,
        *,
        eps: float = 1.0,
        variance: VarianceSource = "within_cluster",
        var_floor: float = 1e-6,
        chunk_size: int = 8192,
    ) -> PrototypePrior:
        r"""Prior from the training patches and their k-means labels.

        :math:`m_c` = mean of the patches labelled ``c`` (the k-means center for ``euclidean`` at
        convergence; the raw-space mean for ``cosine``), :math:`V = \max(\varepsilon\,s, v_{\min})`
        with ``s`` from ``variance``: ``within_cluster`` (per-cluster, per-dimension),
        ``pooled`` (count-weighted mean of those, shared), ``global`` (variance of all patches),
        ``ones``. A cluster with no patch keeps its center and the pooled variance. [inferred]
        """
        x = _as_tensor(patches, "training patches")
        if x.ndim != 2 or x.shape[0] != result.labels.shape[0]:
            raise DataError(
                "training patches do not match the k-means labels",
                expected=f"({result.labels.shape[0]}, D)",
                found=tuple(x.shape),
                fix="pass the same patches that k-means was run on",
            )
        if variance not in _VARIANCE_SOURCES:
            raise ConfigError(
                "unknown prior variance source", expected=sorted(_VARIANCE_SOURCES), found=variance
            )
        if not eps > 0 or not var_floor > 0:
            raise ConfigError(
                "eps and var_floor must be positive", expected="> 0", found=(eps, var_floor)
            )
        k = result.centers.shape[0]
        n, mean, var, s1, s2 = _cluster_moments(x, result.labels, k, chunk_size)
        src = _VARIANCE_SOURCES[variance](n, mean, var, s1, s2)
        empty = n == 0
        if bool(empty.any()):
            log.warning("prototype prior: %d cluster(s) without patches", int(empty.sum()))
            mean[empty] = result.centers[empty].to(torch.float64).to(mean.device)
            src[empty] = _var_pooled(n, mean, var, s1, s2)[empty]
        return cls(mean, (eps * src).clamp_min(var_floor))

    def save(self, path: str | Path) -> Path:
        """Write ``means`` and ``var`` to an ``.npz`` file (atomic)."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, means=self.means.cpu().numpy(), var=self.var.cpu().numpy())
        return path

    @classmethod
    def load(cls, path: str | Path) -> PrototypePrior:
        """Read a prior written by :meth:`save` (no pickles)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(torch.from_numpy(z["means"]), torch.from_numpy(z["var"]))
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(
                f"cannot read prototype prior {path}",
                expected="an .npz with arrays 'means' and 'var'",
                found=repr(exc),
                fix="re-create it with PrototypePrior.save",
            ) from exc


def fit_prototypes(
    patches: ArrayLike | Sequence[ArrayLike], config: PrototypeConfig = PrototypeConfig()
) -> tuple[PrototypePrior, KMeansResult]:
    """k-means over the training patches (a ``(N, D)`` array or a list of bags) and the prior."""
    if isinstance(patches, Sequence):
        patches = torch.cat([_as_tensor(p, "training bag") for p in patches])
    res = kmeans(
        patches,
        config.n_components,
        n_init=config.n_init,
        iters=config.iters,
        seed=config.seed,
        metric=config.metric,
        max_points=config.max_points,
        dtype=config.dtype,
    )
    prior = PrototypePrior.from_kmeans(
        patches, res, eps=config.eps, variance=config.variance, var_floor=config.var_floor
    )
    return prior, res


# --------------------------------------------------------------------------------------------
# PANTHER MAP-EM
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GMMSummary:
    r"""PANTHER slide summary: a ``C``-component diagonal GMM and the patch responsibilities.

    Shape:
        pi: ``(C,)`` summing to 1; mu: ``(C, D)``; sigma: ``(C, D)`` diagonal **variances**
        :math:`\Sigma_{cd}` (not standard deviations); q: ``(M, C)``, rows summing to 1, the
        responsibilities of the last E-step (the "patch prototype assignment map").
    """

    pi: Tensor
    mu: Tensor
    sigma: Tensor
    q: Tensor


def _init_prior(prior_m: Tensor, prior_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    b, c, _ = prior_m.shape
    pi = torch.full((b, c), 1.0 / c, dtype=prior_m.dtype, device=prior_m.device)
    return pi, prior_m.clone(), prior_v.clone()


_INITS: dict[str, Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]] = {
    "prior": _init_prior,
}


def _log_gauss(x: Tensor, x2: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    r"""Batched :math:`\log N(x_m \mid \mu_c, \mathrm{diag}\,\Sigma_c)` ``(B, M, C)`` by matmul."""
    prec = 1.0 / sigma  # (B, C, D)
    quad = x2 @ prec.transpose(1, 2) - 2.0 * x @ (mu * prec).transpose(1, 2)
    const = (mu * mu * prec).sum(-1) + torch.log(sigma).sum(-1) + x.shape[-1] * _LOG_2PI
    return -0.5 * (quad + const[:, None, :])


def _estep(x, x2, mask, pi, mu, sigma) -> tuple[Tensor, Tensor]:
    """Responsibilities ``(B, M, C)`` (0 on padding) and per-patch log-likelihood ``(B, M)``."""
    logp = _log_gauss(x, x2, mu, sigma) + torch.log(pi)[:, None, :]
    ll = torch.logsumexp(logp, dim=-1)
    q = torch.exp(logp - ll[..., None]) * mask[..., None]
    return q, ll * mask


def _mstep(x, x2, q, m, v, tau: float, var_floor: float) -> tuple[Tensor, Tensor, Tensor]:
    nk = q.sum(1)  # (B, C)
    s1 = q.transpose(1, 2) @ x  # (B, C, D)
    s2 = q.transpose(1, 2) @ x2
    denom = (nk + tau)[..., None].clamp_min(torch.finfo(x.dtype).tiny)
    pi = (nk + tau) / (nk + tau).sum(-1, keepdim=True)
    mu = (s1 + tau * m) / denom
    sigma = ((s2 + tau * (v + m * m)) / denom - mu * mu).clamp_min(var_floor)
    return pi, mu, sigma


def _check_bag(bag: ArrayLike, prior: PrototypePrior, slide_id: str | None) -> Tensor:
    who = _who(slide_id)
    bag = _as_tensor(bag, f"features of {who}")
    if bag.ndim != 2:
        raise DataError(
            f"features of {who} must be a 2-D (M, D) array",
            expected=f"(M, {prior.dim})",
            found=tuple(bag.shape),
        )
    if bag.shape[0] == 0:
        raise DataError(
            f"{who} has no patches",
            expected="at least one patch feature row",
            found=tuple(bag.shape),
            fix="drop slides without tissue patches or re-run patch extraction",
        )
    if bag.shape[1] != prior.dim:
        raise DataError(
            f"feature dimension of {who} does not match the prototypes",
            expected=f"D = {prior.dim} (prototype dimension)",
            found=f"D = {bag.shape[1]}",
            fix="use features from the same encoder as the prototypes (e.g. UNI 1024 vs UNI2 1536)",
        )
    _check_finite_chunked(bag, f"features of {who}", 1 << 16)
    return bag


def _check_em_args(tau: float, iters: int, init: str, var_floor: float) -> None:
    if not tau >= 0 or iters < 0 or not var_floor > 0 or not math.isfinite(tau):
        raise ConfigError(
            "bad PANTHER EM settings",
            expected="finite tau >= 0, iters >= 0, var_floor > 0",
            found={"tau": tau, "iters": iters, "var_floor": var_floor},
        )
    if init not in _INITS:
        raise ConfigError("unknown PANTHER EM init", expected=sorted(_INITS), found=init)


def _em_batched(
    x: Tensor,
    mask: Tensor,
    prior: PrototypePrior,
    tau: float,
    iters: int,
    init: str,
    var_floor: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    b = x.shape[0]
    m = prior.means.to(device=x.device, dtype=x.dtype)[None].expand(b, -1, -1)
    v = prior.var.to(device=x.device, dtype=x.dtype)[None].expand(b, -1, -1)
    x2 = x * x
    pi, mu, sigma = _INITS[init](m, v)
    q, _ = _estep(x, x2, mask, pi, mu, sigma)
    for it in range(iters):
        if it:
            q, _ = _estep(x, x2, mask, pi, mu, sigma)
        pi, mu, sigma = _mstep(x, x2, q, m, v, tau, var_floor)
    return pi, mu, sigma, q


def panther_em(
    bag: ArrayLike,
    prior: PrototypePrior,
    *,
    tau: float = 1.0,
    iters: int = 1,
    init: Literal["prior"] = "prior",
    var_floor: float = 1e-6,
    dtype: DType | torch.dtype = "float64",
    slide_id: str | None = None,
) -> GMMSummary:
    r"""PANTHER's DirNIW MAP-EM of a diagonal GMM on one slide, started at the prior mode.

    Starting from :math:`\pi_c = 1/C,\ \mu_c = m_c,\ \Sigma_c = V_c`, each of ``iters`` steps does

    .. math::
        q_{mc} &\propto \pi_c\,\mathcal N(x_m \mid \mu_c, \mathrm{diag}\,\Sigma_c)
            \quad\text{(log-space)}\\
        \pi_c &\propto \textstyle\sum_m q_{mc} + \tau,\qquad
        \mu_c = \frac{\sum_m q_{mc} x_m + \tau m_c}{\sum_m q_{mc} + \tau}\\
        \Sigma_c &= \frac{\sum_m q_{mc} x_m^2 + \tau (V_c + m_c^2)}{\sum_m q_{mc} + \tau}
            - \mu_c^2 \quad(\text{floored at } v_{\min})

    which is exact EM for the MAP of :func:`map_objective` (so it never decreases it while the
    floor is inactive). ``tau -> 0`` is maximum-likelihood EM; ``tau -> inf`` returns the prior
    mode. ``iters = 0`` returns the prior mode with ``q`` from one E-step. ``q`` is the E-step
    *before* the last M-step, as in PANTHER.

    Shape:
        bag: ``(M, D)``. Output: :class:`GMMSummary` with ``pi (C,)``, ``mu (C, D)``,
        ``sigma (C, D)``, ``q (M, C)``, in ``dtype``.

    Example:
        >>> prior = PrototypePrior(torch.tensor([[0.0], [10.0]]), torch.ones(2, 1))
        >>> s = panther_em(torch.tensor([[0.1], [-0.1], [10.0]]), prior, tau=1.0)
        >>> s.pi  # (2 + 1, 1 + 1) / 5
        tensor([0.6000, 0.4000], dtype=torch.float64)
    """
    _check_em_args(tau, iters, init, var_floor)
    x = _check_bag(bag, prior, slide_id).to(_resolve_dtype(dtype))
    mask = torch.ones(1, x.shape[0], dtype=x.dtype, device=x.device)
    pi, mu, sigma, q = _em_batched(x[None], mask, prior, tau, iters, init, var_floor)
    return GMMSummary(pi[0], mu[0], sigma[0], q[0])


def panther_batch(
    bags: Sequence[ArrayLike],
    prior: PrototypePrior,
    *,
    tau: float = 1.0,
    iters: int = 1,
    init: Literal["prior"] = "prior",
    var_floor: float = 1e-6,
    dtype: DType | torch.dtype = "float64",
    slide_ids: Sequence[str] | None = None,
    batch_size: int = 32,
    max_batch_elements: int = 1 << 26,
    progress: bool = False,
) -> list[GMMSummary]:
    """:func:`panther_em` over many slides, padded into batched tensors with a patch mask.

    Bags are sorted by length and grouped (at most ``batch_size`` bags and about
    ``max_batch_elements`` padded numbers ``B * M_max * D`` per group) so padding stays small;
    padded rows get zero responsibility, so the result equals the per-bag loop up to round-off.
    Results come back in input order. ``progress`` shows a tqdm bar over slides.

    Shape:
        bags: list of ``(M_i, D)``. Output: list of :class:`GMMSummary`; ``q`` of bag i is
        ``(M_i, C)``.
    """
    _check_em_args(tau, iters, init, var_floor)
    if batch_size < 1 or max_batch_elements < 1:
        raise ConfigError(
            "batch_size and max_batch_elements must be positive",
            expected=">= 1",
            found=(batch_size, max_batch_elements),
        )
    if slide_ids is not None and len(slide_ids) != len(bags):
        raise DataError(
            "slide_ids and bags differ in length",
            expected=len(bags),
            found=len(slide_ids),
        )
    cdtype = _resolve_dtype(dtype)
    checked = [
        _check_bag(b, prior, None if slide_ids is None else str(slide_ids[i]))
        for i, b in enumerate(bags)
    ]
    order = sorted(range(len(checked)), key=lambda i: checked[i].shape[0])
    groups: list[list[int]] = []
    for i in order:  # ascending length: the last bag of a group sets its padded size
        cur = groups[-1] if groups else None
        size = checked[i].shape[0] * prior.dim
        if (
            cur is not None
            and len(cur) < batch_size
            and (len(cur) + 1) * size <= max_batch_elements
        ):
            cur.append(i)
        else:
            groups.append([i])

    out: list[GMMSummary | None] = [None] * len(checked)
    with tqdm(total=len(checked), desc="PANTHER EM", unit="slide", disable=not progress) as bar:
        for g in groups:
            mmax = max(checked[i].shape[0] for i in g)
            dev = checked[g[0]].device
            x = torch.zeros(len(g), mmax, prior.dim, dtype=cdtype, device=dev)
            mask = torch.zeros(len(g), mmax, dtype=cdtype, device=dev)
            for j, i in enumerate(g):
                x[j, : checked[i].shape[0]] = checked[i].to(device=dev, dtype=cdtype)
                mask[j, : checked[i].shape[0]] = 1.0
            pi, mu, sigma, q = _em_batched(x, mask, prior, tau, iters, init, var_floor)
            for j, i in enumerate(g):
                out[i] = GMMSummary(pi[j], mu[j], sigma[j], q[j, : checked[i].shape[0]].clone())
            bar.update(len(g))
    return [s for s in out if s is not None]


def map_objective(
    bag: ArrayLike, prior: PrototypePrior, summary: GMMSummary, *, tau: float
) -> float:
    r"""Log-posterior of ``(pi, mu, Sigma)`` given the bag, up to an additive constant.

    .. math::
        \sum_m \log\sum_c \pi_c\,\mathcal N(x_m\mid\mu_c,\mathrm{diag}\,\Sigma_c)
        + \sum_c \Big[\tau\log\pi_c - \sum_d \Big(\tfrac{\tau}{2}\log\Sigma_{cd}
        + \tau\,\frac{(\mu_{cd}-m_{cd})^2 + V_{cd}}{2\Sigma_{cd}}\Big)\Big]

    :func:`panther_em` is EM for the maximiser of this quantity (computed in float64).

    Shape:
        bag: ``(M, D)``. Output: a Python float.
    """
    x = _check_bag(bag, prior, None).to(torch.float64)[None]
    pi, mu, sigma = (t.to(torch.float64)[None] for t in (summary.pi, summary.mu, summary.sigma))
    m = prior.means.to(torch.float64)
    v = prior.var.to(torch.float64)
    _, ll = _estep(x, x * x, torch.ones(1, x.shape[1], dtype=torch.float64), pi, mu, sigma)
    s = sigma[0]
    log_prior = (
        tau * torch.log(pi[0]).sum()
        - (0.5 * tau * torch.log(s) + tau * ((mu[0] - m) ** 2 + v) / (2.0 * s)).sum()
    )
    return float(ll.sum() + log_prior)


# --------------------------------------------------------------------------------------------
# slide representations
# --------------------------------------------------------------------------------------------


def slide_embedding(summary: GMMSummary) -> Tensor:
    """Per-component expert inputs ``x_c = [pi_c, mu_c, Sigma_c]``.

    Shape:
        Output: ``(C, 1 + 2D)``.

    Example:
        >>> s = GMMSummary(torch.tensor([0.25, 0.75]), torch.zeros(2, 3), torch.ones(2, 3),
        ...                torch.ones(4, 2) / 2)
        >>> slide_embedding(s)[1]
        tensor([0.7500, 0.0000, 0.0000, 0.0000, 1.0000, 1.0000, 1.0000])
    """
    return torch.cat([summary.pi[:, None], summary.mu, summary.sigma], dim=1)


def _flat_component(s: GMMSummary) -> Tensor:
    return slide_embedding(s).reshape(-1)


def _flat_allcat(s: GMMSummary) -> Tensor:
    return torch.cat([s.pi, s.mu.reshape(-1), s.sigma.reshape(-1)])


_LAYOUTS: dict[str, Callable[[GMMSummary], Tensor]] = {
    "component": _flat_component,
    "allcat": _flat_allcat,
}


def panther_vector(
    summary: GMMSummary, layout: Literal["component", "allcat"] = "component"
) -> Tensor:
    """Flat slide vector for the "PANTHER + linear head" baseline.

    ``component`` flattens :func:`slide_embedding` row by row; ``allcat`` is
    ``[pi (C), mu (C*D), Sigma (C*D)]`` (PANTHER's "allcat" [inferred ordering]). A linear head
    is indifferent to the order; pick one and keep it.

    Shape:
        Output: ``(C * (1 + 2D),)``.
    """
    if layout not in _LAYOUTS:
        raise ConfigError("unknown PANTHER vector layout", expected=sorted(_LAYOUTS), found=layout)
    return _LAYOUTS[layout](summary)
