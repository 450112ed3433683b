r"""ENNreg experts (Denœux 2023) with cosine prototypes: inputs -> a GRFN on log survival time.

A bank of ``C`` independent experts; expert ``c`` has ``K`` prototypes :math:`w_k` (unit vectors
of the "proto" space, dimension ``P``) and per prototype a linear predictor
:math:`(\alpha_k, \beta_k \in \mathbb{R}^F)`, a spread :math:`\sigma_k`, a precision
:math:`h_k = \eta_k^2` and a scale :math:`\gamma_k`. For an input ``x`` (``F`` features) with
proto-space position ``z``:

.. math::

    a_k = \exp\big(-\gamma_k^2 (1 - \cos(z, w_k))\big), \qquad
    h_x = \max\Big(\sum_k a_k h_k,\ 10^{-8}\Big),

    \mu_x = \frac{1}{h_x}\sum_k a_k h_k (\beta_k^\top x + \alpha_k), \qquad
    \sigma^2_x = \frac{1}{h_x^2}\sum_k a_k^2 h_k^2 \sigma_k^2 .

The output :math:`\tilde Y(x) \sim \mathcal{N}(\mu_x, \sigma^2_x, h_x)` is the combination of
the prototypes' GRFNs, each discounted by its activation. Far from every prototype
(:math:`\cos \to 0` or :math:`-1`, large :math:`\gamma`) all :math:`a_k \to 0`, so
:math:`h_x \to 0`: the prediction becomes vacuous and the survival band widens to ``[0, 1]``.

In DPsurv the input of expert ``c`` is the PANTHER summary of component ``c``,
:math:`x_c = [\pi_c, \mu_c, \Sigma_c]` (``F = 1 + 2D``) and :math:`z_c = \mu_c` (``P = D``). In
tabular mode there is one expert (``C = 1``) and ``x = z`` is the feature vector.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import Tensor, nn

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.dpsurv.grfn import GRFN

__all__ = ["H_FLOOR", "ENNreg", "init_ennreg", "weighted_cosine_kmeans"]

log = logging.getLogger(__name__)

H_FLOOR = 1e-8
"""Floor of the combined precision :math:`h_x` (keeps the mean and variance finite)."""
WEIGHT_MIN = 0.01
"""Rows whose weight for an expert is at most this do not take part in its initialisation."""
_NORM_EPS = 1e-12
_SIGMA_MIN = 1e-3
"""Floor of an initial :math:`\\sigma_k` (a cluster with one distinct log-time)."""
_COSDIST_MIN = 1e-6
"""Floor of a cluster's mean cosine distance (keeps the initial :math:`\\gamma_k` finite)."""


class ENNreg(nn.Module):
    r"""A bank of ``C`` ENNreg experts with ``K`` cosine prototypes each.

    Parameters (all of dtype ``dtype``): ``w`` ``(C, K, P)`` prototypes (normalised in the
    forward pass), ``alpha`` ``(C, K)``, ``beta`` ``(C, K, F)``, ``sigma`` ``(C, K)``,
    ``eta`` ``(C, K)`` (:math:`h_k = \eta_k^2`), ``gamma`` ``(C, K)``. Before
    :func:`init_ennreg`, prototypes are random unit vectors (from ``generator``), ``alpha = 0``,
    ``beta = 0``, ``sigma = eta = gamma = 1``.

    Shape:
        x: ``(B, C, F)`` and z: ``(B, C, P)``; with ``C = 1`` also ``(B, F)`` and ``(B, P)``.
        Output: :class:`~clinfuse.methods.dpsurv.grfn.GRFN` ``(mu, var, h)``, each ``(B, C)``.

    Example:
        >>> model = ENNreg(n_experts=1, n_prototypes=2, n_features=3, proto_dim=3)
        >>> mu, var, h = model(torch.ones(5, 1, 3), torch.ones(5, 1, 3))
        >>> tuple(mu.shape), mu.dtype
        ((5, 1), torch.float64)
    """

    def __init__(
        self,
        n_experts: int,
        n_prototypes: int,
        n_features: int,
        proto_dim: int,
        *,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in {
            "n_experts": n_experts,
            "n_prototypes": n_prototypes,
            "n_features": n_features,
            "proto_dim": proto_dim,
        }.items():
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(
                    f"ENNreg {name} must be a positive integer",
                    expected=f"{name} >= 1",
                    found=value,
                    fix=f"set {name} to the size of that axis of the inputs",
                )
        c, k, f, p = n_experts, n_prototypes, n_features, proto_dim
        self.n_experts, self.n_prototypes, self.n_features, self.proto_dim = c, k, f, p
        w = torch.randn(c, k, p, generator=generator, dtype=dtype)
        self.w = nn.Parameter(w / w.norm(dim=-1, keepdim=True))
        self.alpha = nn.Parameter(torch.zeros(c, k, dtype=dtype))
        self.beta = nn.Parameter(torch.zeros(c, k, f, dtype=dtype))
        self.sigma = nn.Parameter(torch.ones(c, k, dtype=dtype))
        self.eta = nn.Parameter(torch.ones(c, k, dtype=dtype))
        self.gamma = nn.Parameter(torch.ones(c, k, dtype=dtype))

    @property
    def h_k(self) -> Tensor:
        r"""Prototype precisions :math:`h_k = \eta_k^2`, ``(C, K)``."""
        return self.eta**2

    def _inputs(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Validate and cast ``x``, ``z`` to ``(B, C, F)``, ``(B, C, P)`` of the parameter dtype."""
        c, f, p = self.n_experts, self.n_features, self.proto_dim
        if x.dim() == 2 and z.dim() == 2 and c == 1:
            x, z = x.unsqueeze(1), z.unsqueeze(1)
        for name, v, last in (("x", x, f), ("z", z, p)):
            if v.dim() != 3 or v.shape[1] != c or v.shape[2] != last:
                raise DataError(
                    f"ENNreg input {name} has the wrong shape",
                    expected=f"(B, {c}, {last})" + (f" or (B, {last})" if c == 1 else ""),
                    found=tuple(v.shape),
                    fix="pass one row per sample and one slice per expert (component)",
                )
        if x.shape[0] != z.shape[0]:
            raise DataError(
                "ENNreg inputs x and z hold different numbers of samples",
                expected="x.shape[0] == z.shape[0]",
                found=(x.shape[0], z.shape[0]),
                fix="build x and z from the same batch",
            )
        dt = self.alpha.dtype
        return x.to(dt), z.to(dt)

    def activations(self, z: Tensor) -> Tensor:
        r"""Prototype activations :math:`a_k = \exp(-\gamma_k^2 (1 - \cos(z, w_k)))`.

        Shape:
            z: ``(B, C, P)``. Output: ``(B, C, K)``.
        """
        zn = z / z.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
        wn = self.w / self.w.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
        cos = torch.einsum("bcp,ckp->bck", zn, wn)
        return torch.exp(-(self.gamma**2) * (1.0 - cos))

    def forward(self, x: Tensor, z: Tensor) -> GRFN:
        """GRFN ``(mu, var, h)`` on log-time of every (sample, expert); see the module docstring."""
        x, z = self._inputs(x, z)
        ah = self.activations(z) * self.h_k  # (B, C, K)
        h_x = ah.sum(-1).clamp_min(H_FLOOR)
        lin = torch.einsum("bcf,ckf->bck", x, self.beta) + self.alpha
        mu = (ah * lin).sum(-1) / h_x
        var = (ah**2 * self.sigma**2).sum(-1) / h_x**2
        return GRFN(mu, var, h_x)


# ----------------------------------------------------------------------------- initialisation


def _normalise_rows(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), _NORM_EPS)


def weighted_cosine_kmeans(
    z: np.ndarray,
    weights: np.ndarray,
    k: int,
    rng: np.random.Generator,
    n_init: int = 10,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray, float]:
    r"""Weighted spherical k-means: minimise :math:`\sum_i \omega_i (1 - \cos(z_i, w_{k(i)}))`.

    Seeding is weighted k-means++ on the cosine distance; centres are the normalised weighted
    sums of their members; an empty cluster is re-seeded at the worst-fitted row. The best of
    ``n_init`` restarts is kept.

    Shape:
        z: ``(N, P)``; weights: ``(N,)`` positive. Output: centres ``(k, P)`` unit rows,
        labels ``(N,)`` in ``0..k-1``, and the weighted inertia.

    Example:
        >>> z = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
        >>> _, labels, _ = weighted_cosine_kmeans(z, np.ones(4), 2, np.random.default_rng(0))
        >>> bool(labels[0] == labels[1] != labels[2] == labels[3])
        True
    """
    zn = _normalise_rows(np.asarray(z, dtype=np.float64))
    wt = np.asarray(weights, dtype=np.float64)
    n = zn.shape[0]
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(n_init):
        centres = np.empty((k, zn.shape[1]))
        centres[0] = zn[rng.choice(n, p=wt / wt.sum())]
        dist = 1.0 - zn @ centres[0]
        for j in range(1, k):
            score = wt * np.maximum(dist, 0.0)
            idx = rng.choice(n, p=score / score.sum()) if score.sum() > 0 else rng.integers(n)
            centres[j] = zn[idx]
            dist = np.minimum(dist, 1.0 - zn @ centres[j])
        labels = np.full(n, -1)
        for _ in range(max_iter):
            cos = zn @ centres.T
            new = cos.argmax(1)
            if np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                members = labels == j
                if not members.any():  # re-seed at the worst-fitted row of a shared cluster
                    fit = wt * (1.0 - cos[np.arange(n), labels])
                    fit[np.bincount(labels, minlength=k)[labels] < 2] = -np.inf
                    labels[int(np.argmax(fit))] = j
                    members = labels == j
                s = (wt[members, None] * zn[members]).sum(0)
                centres[j] = s / max(float(np.linalg.norm(s)), _NORM_EPS)
        inertia = float((wt * (1.0 - (zn * centres[labels]).sum(1))).sum())
        if best is None or inertia < best[2]:
            best = (centres.copy(), labels.copy(), inertia)
    assert best is not None
    return best


def _check_init_inputs(
    model: ENNreg, x: np.ndarray, z: np.ndarray, log_t: np.ndarray, weights: np.ndarray
) -> None:
    n, c = log_t.shape[0], model.n_experts
    shapes = {
        "x": (x.shape, (n, c, model.n_features)),
        "z": (z.shape, (n, c, model.proto_dim)),
        "weights": (weights.shape, (n, c)),
    }
    for name, (found, expected) in shapes.items():
        if tuple(found) != expected:
            raise DataError(
                f"init_ennreg: {name} has the wrong shape",
                expected=expected,
                found=tuple(found),
                fix="pass one row per training sample and one slice per expert",
            )
    for name, arr in {"log_t": log_t, "weights": weights, "z": z}.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DataError(
                f"init_ennreg: {name} is not finite at row {row}",
                expected=f"finite {name}",
                found=f"{name}[{row}] = {arr[row]}",
                fix="drop or impute that training row",
            )
    if (weights < 0).any():
        row = int(np.argwhere(weights < 0)[0][0])
        raise DataError(
            f"init_ennreg: negative weight at row {row}",
            expected="weights >= 0 (e.g. the mixture proportions pi)",
            found=weights[row].tolist(),
            fix="pass the component proportions, or ones in tabular mode",
        )


def init_ennreg(
    model: ENNreg,
    x: Tensor | np.ndarray,
    z: Tensor | np.ndarray,
    log_t: Tensor | np.ndarray,
    weights: Tensor | np.ndarray | None = None,
    seed: int = 0,
    n_init: int = 100,
) -> list[np.ndarray]:
    r"""Data-driven initialisation of every expert (in place), as ``ENNreg_init`` of evreg with
    cosine k-means and per-row weights.

    For expert ``c``, rows with weight :math:`\omega_{ic} > 0.01` are clustered by weighted
    cosine k-means of :math:`z_{ic}` into ``K`` clusters; for cluster ``k`` with members
    :math:`I_k`:

    * :math:`w_k` = the cluster centre (unit vector);
    * :math:`\alpha_k`, :math:`\sigma_k` = weighted mean and standard deviation of the
      log-times of :math:`I_k` (censored and uncensored alike), :math:`\sigma_k \ge 10^{-3}`;
    * :math:`\gamma_k = 0.5 / \sqrt{2\,\bar d_k}`, :math:`\bar d_k` the weighted mean cosine
      distance of :math:`I_k` to :math:`w_k`;
    * :math:`\eta_k = 2\sqrt{\bar\omega_k}` (mean weight of :math:`I_k`), :math:`\beta_k = 0`.

    Args:
        model: the experts to initialise.
        x: ``(N, C, F)`` inputs (only checked: :math:`\beta` starts at 0).
        z: ``(N, C, P)`` proto-space positions.
        log_t: ``(N,)`` observed log-times.
        weights: ``(N, C)`` row weights, e.g. the mixture proportions; ``None`` = ones.
        seed: seed of the k-means restarts (a ``numpy.random.Generator``).
        n_init: k-means restarts per expert.

    Returns:
        Per expert, ``(N,)`` cluster labels, ``-1`` for rows left out (weight <= 0.01).
    """
    xa = _numpy(x)
    za = _numpy(z)
    ta = _numpy(log_t).reshape(-1)
    n, c, k = ta.shape[0], model.n_experts, model.n_prototypes
    if xa.ndim == 2 and c == 1:
        xa, za = xa[:, None, :], za[:, None, :]
    wa = np.ones((n, c)) if weights is None else _numpy(weights).reshape(n, -1)
    _check_init_inputs(model, xa, za, ta, wa)
    rng = np.random.default_rng(seed)
    params = {name: np.empty((c, k)) for name in ("alpha", "sigma", "gamma", "eta")}
    protos = np.empty((c, k, model.proto_dim))
    all_labels: list[np.ndarray] = []
    for e in range(c):
        rows = np.flatnonzero(wa[:, e] > WEIGHT_MIN)
        if rows.size < k:
            raise DataError(
                f"init_ennreg: expert {e} has {rows.size} rows with weight > {WEIGHT_MIN}, "
                f"fewer than its {k} prototypes",
                expected=f">= {k} rows with weight > {WEIGHT_MIN}",
                found=rows.size,
                fix="use fewer prototypes, or more training samples",
            )
        w_e, t_e = wa[rows, e], ta[rows]
        centres, labels, _ = weighted_cosine_kmeans(za[rows, e], w_e, k, rng, n_init=n_init)
        zn = _normalise_rows(za[rows, e])
        for j in range(k):
            m = labels == j
            wj = w_e[m]
            mean = float(np.average(t_e[m], weights=wj))
            sd = math.sqrt(float(np.average((t_e[m] - mean) ** 2, weights=wj)))
            dist = float(np.average(1.0 - zn[m] @ centres[j], weights=wj))
            params["alpha"][e, j] = mean
            params["sigma"][e, j] = max(sd, _SIGMA_MIN)
            params["gamma"][e, j] = 0.5 / math.sqrt(2.0 * max(dist, _COSDIST_MIN))
            params["eta"][e, j] = 2.0 * math.sqrt(float(wj.mean()))
        protos[e] = centres
        full = np.full(n, -1)
        full[rows] = labels
        all_labels.append(full)
        log.debug("expert %d: cluster sizes %s", e, np.bincount(labels, minlength=k).tolist())
    with torch.no_grad():
        dev, dt = model.alpha.device, model.alpha.dtype
        model.w.copy_(torch.as_tensor(protos, dtype=dt, device=dev))
        for name, value in params.items():
            getattr(model, name).copy_(torch.as_tensor(value, dtype=dt, device=dev))
        model.beta.zero_()
    return all_labels


def _numpy(a: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)
