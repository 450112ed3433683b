r"""The DIB objective and the per-modality information report.

.. math::
    \mathcal L = \ell(\hat y, y)
        + s_e\,\beta \sum_{m \in \{t, a, v, f\}} C(Z_m)
        + \mathcal R

with :math:`\ell` the L1 (or MSE) task loss, :math:`s_e` the beta schedule of epoch :math:`e`,
:math:`C(Z_m) = H_\alpha^k(Z_m)` (``compression = "H"``, what the DIB derivatives compute) or
:math:`I_\alpha^k(X_m; Z_m)` (``"I"``, with :math:`X_m` the encoder output and :math:`X_f` the
fusion output), all matrix-based Renyi quantities on the batch (:mod:`clinfuse.info.renyi`).
The relevance term :math:`\mathcal R` is :math:`\lambda_h \sum_m \ell(\hat y_m, y)` over
per-modality heads (``relevance = "task"``, zero without heads) or
:math:`-\gamma \sum_{m \in \{t,a,v\}} I_\alpha^k(Z_m; Y)` (``"mi"``). ``ib = "vib"`` replaces the
Renyi terms by :math:`s_e\,\beta_{\mathrm{vib}} \sum_{m \in \{t,a,v,f\}}
\mathrm{KL}(q(z_m \mid x_m) \,\|\, \mathcal N(0, I))`; ``ib = "none"`` drops them.

Kernels: :math:`K_Z = \exp(-\lVert z_i - z_j\rVert^2/\sigma_Z^2)` with :math:`\sigma_Z` the
detached mean 5-NN distance (``sigma_z = None``); :math:`K_X` with the fixed ``sigma_<modality>``;
:math:`K_Y` Gaussian on the score with :math:`\sigma_Y` = batch std (``sigma_y = None``), or the
class-indicator kernel for integer labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clinfuse.info.renyi import (
    gaussian_gram,
    knn_sigma,
    label_gram,
    mutual_information,
    renyi_entropy,
)
from clinfuse.methods.dib.config import DIBConfig
from clinfuse.methods.dib.model import gaussian_kl

__all__ = ["BETA_SCHEDULES", "beta_scale", "dib_loss", "modality_mi"]

Output = Mapping[str, Any]
Parts = dict[str, float]

TASK_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"l1": F.l1_loss, "mse": F.mse_loss}
"""Task losses by ``DIBConfig.loss`` name, ``(pred (B,), y (B,)) -> ()``."""


# --- kernels -----------------------------------------------------------------------------------


def _z_gram(z: Tensor, cfg: DIBConfig) -> Tensor:
    sigma = cfg.sigma_z if cfg.sigma_z is not None else knn_sigma(z, cfg.knn_k)
    return gaussian_gram(z, sigma)


def _y_gram(y: Tensor, cfg: DIBConfig, dtype: torch.dtype) -> Tensor:
    if not y.is_floating_point():
        return label_gram(y, dtype=dtype)
    y = y.to(dtype).reshape(-1, 1)
    sigma = cfg.sigma_y if cfg.sigma_y is not None else y.detach().std().clamp_min(1e-6)
    return gaussian_gram(y, sigma)


def _latents(out: Output) -> dict[str, tuple[Tensor, Tensor]]:
    """``{modality: (z, x)}`` of the unimodal bottlenecks, plus ``"fused"`` (multimodal)."""
    pairs = {m: (out["z"][m], out["h"][m]) for m in out["z"]}
    pairs["fused"] = (out["z_fused"], out["fused"])
    return pairs


# --- compression: C(Z_m) -----------------------------------------------------------------------


def _entropy_z(z: Tensor, x: Tensor, modality: str, cfg: DIBConfig) -> Tensor:
    return renyi_entropy(_z_gram(z, cfg), cfg.alpha, cfg.rank, cfg.solver)


def _mi_xz(z: Tensor, x: Tensor, modality: str, cfg: DIBConfig) -> Tensor:
    k_x = gaussian_gram(x, cfg.sigma_x(modality))
    return mutual_information(k_x, _z_gram(z, cfg), cfg.alpha, cfg.rank, cfg.solver)


COMPRESSIONS: dict[str, Callable[[Tensor, Tensor, str, DIBConfig], Tensor]] = {
    "H": _entropy_z,
    "I": _mi_xz,
}
"""Compression terms by ``DIBConfig.compression``: ``(z, x, modality, cfg) -> bits``."""


# --- bottleneck regularisers: (weighted term, parts) -------------------------------------------


def _renyi(out: Output, y: Tensor, cfg: DIBConfig) -> tuple[Tensor, Parts]:
    terms = {m: COMPRESSIONS[cfg.compression](z, x, m, cfg) for m, (z, x) in _latents(out).items()}
    total = torch.stack(list(terms.values())).sum()
    return cfg.beta * total, {f"C_{m}": float(t.detach()) for m, t in terms.items()}


def _vib(out: Output, y: Tensor, cfg: DIBConfig) -> tuple[Tensor, Parts]:
    terms = {m: gaussian_kl(out["mu"][m], out["sigma"][m]) for m in out["mu"]}
    terms["fused"] = gaussian_kl(out["mu_fused"], out["sigma_fused"])
    total = torch.stack(list(terms.values())).sum()
    return cfg.vib_beta * total, {f"kl_{m}": float(t.detach()) for m, t in terms.items()}


def _no_ib(out: Output, y: Tensor, cfg: DIBConfig) -> tuple[Tensor, Parts]:
    return out["pred"].new_zeros(()), {}


REGULARIZERS: dict[str, Callable[[Output, Tensor, DIBConfig], tuple[Tensor, Parts]]] = {
    "renyi": _renyi,
    "vib": _vib,
    "none": _no_ib,
}
"""Bottleneck regularisers by ``DIBConfig.ib``: weighted term and raw per-latent values."""

_REGULARIZER_PART = {"renyi": "compression", "vib": "kl", "none": "compression"}


# --- relevance ---------------------------------------------------------------------------------


def _heads(out: Output, y: Tensor, cfg: DIBConfig) -> tuple[Tensor, Parts]:
    if "pred_m" not in out:
        return out["pred"].new_zeros(()), {}
    task = TASK_LOSSES[cfg.loss]
    terms = {m: task(p, y.to(p.dtype)) for m, p in out["pred_m"].items()}
    total = cfg.head_weight * torch.stack(list(terms.values())).sum()
    return total, {f"head_{m}": float(t.detach()) for m, t in terms.items()}


def _mi_zy(out: Output, y: Tensor, cfg: DIBConfig) -> tuple[Tensor, Parts]:
    k_y = _y_gram(y, cfg, out["pred"].dtype)
    terms = {
        m: mutual_information(_z_gram(z, cfg), k_y, cfg.alpha, cfg.rank, cfg.solver)
        for m, z in out["z"].items()
    }
    total = -cfg.gamma * torch.stack(list(terms.values())).sum()
    return total, {f"I_zy_{m}": float(t.detach()) for m, t in terms.items()}


RELEVANCES: dict[str, Callable[[Output, Tensor, DIBConfig], tuple[Tensor, Parts]]] = {
    "task": _heads,
    "mi": _mi_zy,
}
"""Relevance terms by ``DIBConfig.relevance``: weighted term and raw per-modality values."""


# --- beta schedule -----------------------------------------------------------------------------


BETA_SCHEDULES: dict[str, Callable[[DIBConfig, int], float]] = {
    "constant": lambda cfg, epoch: 1.0,
    "linear_warmup": lambda cfg, epoch: min(1.0, (epoch + 1) / max(1, cfg.warmup_epochs)),
}
"""Scale of beta / vib_beta at a 0-based epoch, by ``DIBConfig.beta_schedule``."""


def beta_scale(cfg: DIBConfig, epoch: int) -> float:
    """The ``beta_scale`` to pass to :func:`dib_loss` in 0-based ``epoch``.

    Example:
        >>> beta_scale(DIBConfig(beta_schedule="linear_warmup", warmup_epochs=4), 1)
        0.5
    """
    return BETA_SCHEDULES[cfg.beta_schedule](cfg, epoch)


# --- the objective -----------------------------------------------------------------------------


def dib_loss(
    out: Output, batch: Mapping[str, Tensor], cfg: DIBConfig, *, beta_scale: float = 1.0
) -> tuple[Tensor, dict[str, float]]:
    r"""The DIB training loss of one batch and its parts.

    .. math::
        \mathcal L = \ell(\hat y, y) + s\,\beta \sum_{m \in \{t,a,v,f\}} C(Z_m) + \mathcal R
        \quad\text{or}\quad
        \ell(\hat y, y) + s\,\beta_{\mathrm{vib}} \sum_m \mathrm{KL}_m + \mathcal R

    (see the module docstring for :math:`C`, :math:`\mathcal R` and the kernels; :math:`s` is
    ``beta_scale``). The Renyi terms need at least two samples and are 0 for a batch of one.

    Args:
        out: :meth:`DIBModel.forward` output.
        batch: needs ``"label"`` ``(B,)`` (float scores; integer class labels use the label
            kernel in the MI terms).
        cfg: the config (``ib``, ``compression``, ``relevance``, weights, entropy settings).
        beta_scale: multiplier of ``beta`` / ``vib_beta`` (see :func:`beta_scale`).

    Returns:
        The scalar loss, and floats: ``task``, ``compression``, ``kl``, ``relevance`` (each the
        weighted contribution, so they add up to ``total``), ``total``, plus raw per-term values
        ``C_<m>`` (bits), ``kl_<m>`` (nats), ``head_<m>``, ``I_zy_<m>`` (bits) when computed.
    """
    pred = out["pred"]
    y = batch["label"].reshape(-1).to(pred.device)
    enough = len(y) > 1  # the Renyi estimates need two samples
    task = TASK_LOSSES[cfg.loss](pred, y.to(pred.dtype))
    regularizer_fn = REGULARIZERS[cfg.ib] if enough else _no_ib
    relevance_fn = RELEVANCES[cfg.relevance] if enough or cfg.relevance == "task" else _no_ib
    regularizer, reg_parts = regularizer_fn(out, y, cfg)
    relevance, rel_parts = relevance_fn(out, y, cfg)
    regularizer = beta_scale * regularizer
    total = task + regularizer + relevance
    parts: dict[str, float] = {"task": float(task.detach()), "compression": 0.0, "kl": 0.0}
    parts[_REGULARIZER_PART[cfg.ib]] = float(regularizer.detach())
    parts["relevance"] = float(relevance.detach())
    parts["total"] = float(total.detach())
    return total, {**parts, **reg_parts, **rel_parts}


@torch.no_grad()
def modality_mi(z: Mapping[str, Tensor], y: Tensor, cfg: DIBConfig) -> dict[str, float]:
    r"""Exact matrix-based :math:`I_\alpha(Z_m; Y)` in bits for each latent in ``z``.

    Meant for a large evaluation batch (``cfg.mi_eval_samples``): it reports which modality
    carries the label information. Kernels as in :func:`dib_loss` (kNN bandwidth for each
    :math:`Z_m`, Gaussian on a float score, class indicator on integer labels); the exact
    spectrum is used whatever ``cfg.rank`` says (an ``n x n`` eigendecomposition per term).

    Shape:
        z: ``{name: (n, d)}``, e.g. ``out["z"]`` plus ``"fused"``; y: ``(n,)``. Output: floats.
    """
    y = y.reshape(-1)
    dtype = next(iter(z.values())).dtype
    k_y = _y_gram(y, cfg, dtype)
    return {
        m: float(mutual_information(_z_gram(zm, cfg), k_y.to(zm.device), cfg.alpha, None, "exact"))
        for m, zm in z.items()
    }
