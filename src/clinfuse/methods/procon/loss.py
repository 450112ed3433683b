r"""The ProCon projection constraint and its warm-up schedule.

For every constrained layer :math:`l \in S` with frozen unit refusal direction :math:`r_l` and the
residual-stream state :math:`h_l(x_i)` at the last prompt token of training sample :math:`i`,
the projection is :math:`p_{l,i} = \langle h_l(x_i), r_l \rangle`. The auxiliary loss added to the
task loss at optimiser step :math:`t` is

.. math::
    \mathcal L_{\mathrm{ProCon}}(t) = \lambda\, w(t)\, \operatorname{red}_i \frac{1}{|S|}
        \sum_{l \in S} c_{l,i},

with the per-row, per-layer term

* ``mode = "anchor"`` (default; our reading of the paper's constraint on the projection of each
  training sample's hidden state):
  :math:`c_{l,i} = (p_{l,i} - p^0_{l,i})^2`, :math:`p^0` the projection of the frozen initial
  model (cached once per sample, or the same PEFT model under ``disable_adapter()``);
* ``mode = "hinge"`` (a one-sided alternative [inferred]):
  :math:`c_{l,i} = \max(0,\; m - s\,(p_{l,i} - \tau_{l,i}))^2`, with margin :math:`m`, side
  :math:`s \in \{+1, -1\}` and threshold :math:`\tau` (the anchors when given, else 0). With
  :math:`s = +1` and :math:`\tau` the initial projection of a harmful prompt it only stops the
  refusal signal from shrinking.

:math:`\operatorname{red}_i` is the mean (or sum) over the rows of the batch and :math:`w(t)` is the
warm-up multiplier of :func:`warmup_weight`. Projections are computed in float64.

Only the opening of the paper was available: the exact loss, :math:`\lambda` and the warm-up are
**inferred** and therefore all configurable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from clinfuse.core.errors import ConfigError

__all__ = ["ProConConfig", "procon_loss", "procon_terms", "projection", "warmup_weight"]


@dataclass(frozen=True)
class ProConConfig:
    """Projection constraint on the refusal direction during instruction fine-tuning.

    Every default below is inferred (the paper body was not available), see the module docstring.
    """

    mode: Literal["anchor", "hinge"] = "anchor"
    """``anchor`` ties each projection to its initial value; ``hinge`` is one-sided (inferred)."""
    lam: float = 0.1
    """Weight lambda after warm-up (inferred; the learner passes ``ProConMethodConfig.lam``)."""
    layers: tuple[int, ...] = ()
    """Constrained layers (index l = residual stream entering decoder block l); () = all >= L/3."""
    warmup_steps: int = 0
    """Optimiser steps of the strong early constraint (ProCon^wu; inferred default 10% of steps)."""
    warmup_factor: float = 5.0
    """Multiplier k of lambda at step 0 of the warm-up (inferred)."""
    warmup_shape: Literal["step", "linear", "cosine"] = "step"
    """How the multiplier goes from k to 1 over the warm-up: constant then drop, linear, cosine."""
    margin: float = 0.0
    """Hinge margin m: a row is free once s * (p - tau) >= m (hinge mode only)."""
    hinge_sign: Literal[1, -1] = 1
    """Side s of the hinge: +1 keeps projections above tau + m, -1 keeps them below tau - m."""
    reduction: Literal["mean", "sum"] = "mean"
    """Reduction over the rows (samples) of a batch; layers are always averaged."""
    anchor_source: Literal["cache", "disable_adapter"] = "cache"
    """Initial projections: cached once before training, or recomputed under PEFT's
    ``disable_adapter()`` (trainer only)."""

    def __post_init__(self) -> None:
        if self.lam < 0 or not math.isfinite(self.lam):
            raise ConfigError(
                "ProCon lam must be a finite non-negative weight",
                expected="lam >= 0",
                found=self.lam,
                fix="set lam to e.g. 0.1 (0 disables the constraint)",
            )
        if self.warmup_steps < 0 or self.warmup_factor < 0:
            raise ConfigError(
                "ProCon warm-up must have non-negative length and factor",
                expected="warmup_steps >= 0 and warmup_factor >= 0",
                found=(self.warmup_steps, self.warmup_factor),
                fix="e.g. warmup_steps=10, warmup_factor=5.0",
            )


def _step_shape(frac: float) -> float:
    return 1.0


def _linear_shape(frac: float) -> float:
    return 1.0 - frac


def _cosine_shape(frac: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * frac))


_SHAPES: dict[str, Callable[[float], float]] = {
    "step": _step_shape,
    "linear": _linear_shape,
    "cosine": _cosine_shape,
}


def warmup_weight(step: int, config: ProConConfig) -> float:
    r"""Warm-up multiplier :math:`w(t)` of lambda at optimiser step ``t``.

    With :math:`k` = ``warmup_factor``, :math:`T` = ``warmup_steps`` and :math:`f = t/T`,
    :math:`w(t) = 1 + (k - 1)\,g(f)` for :math:`t < T` and :math:`w(t) = 1` afterwards, where
    :math:`g(f) = 1` (``step``), :math:`1 - f` (``linear``) or :math:`\tfrac12(1 + \cos \pi f)`
    (``cosine``). :math:`T = 0` disables the warm-up.

    Example:
        >>> cfg = ProConConfig(warmup_steps=10, warmup_factor=5.0, warmup_shape="linear")
        >>> [warmup_weight(t, cfg) for t in (0, 5, 10, 20)]
        [5.0, 3.0, 1.0, 1.0]
        >>> warmup_weight(5, ProConConfig(warmup_steps=10, warmup_shape="cosine"))
        3.0
    """
    if config.warmup_steps <= 0 or step >= config.warmup_steps:
        return 1.0
    frac = max(step, 0) / config.warmup_steps
    return 1.0 + (config.warmup_factor - 1.0) * _SHAPES[config.warmup_shape](frac)


def projection(h: Tensor, r: Tensor) -> Tensor:
    r"""Projection :math:`p = h\,r` of hidden states on a (unit) direction, in float64.

    Shape:
        h: ``(B, d)``; r: ``(d,)``. Output: ``(B,)`` float64, differentiable w.r.t. ``h``.

    Example:
        >>> projection(torch.tensor([[1.0, 2.0], [3.0, -1.0]]), torch.tensor([0.0, 1.0]))
        tensor([ 2., -1.], dtype=torch.float64)
    """
    return h.to(torch.float64) @ r.to(device=h.device, dtype=torch.float64)


def _anchor_term(p: Tensor, ref: Tensor | None, config: ProConConfig) -> Tensor:
    if ref is None:
        raise ConfigError(
            "anchor-mode ProCon needs the initial projections",
            expected="anchors: dict layer -> Tensor (B,)",
            found=None,
            fix="pass the frozen initial model's projections, or use mode='hinge'",
        )
    return (p - ref) ** 2


def _hinge_term(p: Tensor, ref: Tensor | None, config: ProConConfig) -> Tensor:
    tau = 0.0 if ref is None else ref
    return torch.clamp(config.margin - config.hinge_sign * (p - tau), min=0.0) ** 2


_TERMS: dict[str, Callable[[Tensor, Tensor | None, ProConConfig], Tensor]] = {
    "anchor": _anchor_term,
    "hinge": _hinge_term,
}


def procon_terms(
    h_by_layer: Mapping[int, Tensor],
    directions: Mapping[int, Tensor],
    anchors: Mapping[int, Tensor] | None,
    config: ProConConfig,
) -> Tensor:
    r"""Per-row constraint :math:`\frac{1}{|S|}\sum_{l\in S} c_{l,i}`, before lambda and warm-up.

    ``S`` is ``config.layers`` or, when that is empty, every layer of ``h_by_layer``.

    Shape:
        h_by_layer[l]: ``(B, d)``; directions[l]: ``(d,)``; anchors[l]: ``(B,)`` or scalar.
        Output: ``(B,)`` float64.
    """
    layers = tuple(config.layers) or tuple(sorted(h_by_layer))
    missing = [layer for layer in layers if layer not in h_by_layer or layer not in directions]
    if not layers or missing:
        raise ConfigError(
            "ProCon layers without hidden states or direction",
            expected=f"hidden states and directions for layers {list(layers)}",
            found=f"hidden {sorted(h_by_layer)}, directions {sorted(directions)}",
            fix="capture the same layers as ProConConfig.layers and give a direction for each",
        )
    term = _TERMS[config.mode]
    total: Tensor | None = None
    for layer in layers:
        p = projection(h_by_layer[layer], directions[layer])
        ref = None
        if anchors is not None and layer in anchors:
            ref = torch.as_tensor(anchors[layer]).to(device=p.device, dtype=torch.float64)
        c = term(p, ref, config)
        total = c if total is None else total + c
    assert total is not None
    return total / len(layers)


def procon_loss(
    h_by_layer: Mapping[int, Tensor],
    directions: Mapping[int, Tensor],
    anchors: Mapping[int, Tensor] | None,
    config: ProConConfig,
    step: int,
) -> Tensor:
    r"""The ProCon auxiliary loss :math:`\lambda\,w(t)\,\operatorname{red}_i \frac{1}{|S|}
    \sum_{l\in S} c_{l,i}` (module docstring), ready to add to the task loss.

    Shape:
        h_by_layer[l]: ``(B, d)``; directions[l]: ``(d,)``; anchors[l]: ``(B,)``.
        Output: scalar float64.

    Example:
        >>> h = {0: torch.tensor([[1.0, 2.0], [0.0, 1.0]])}
        >>> r = {0: torch.tensor([0.0, 1.0])}
        >>> cfg = ProConConfig(lam=0.5)
        >>> procon_loss(h, r, {0: torch.tensor([2.0, 3.0])}, cfg, step=0)  # 0.5 * (0 + 4) / 2
        tensor(1., dtype=torch.float64)
    """
    rows = procon_terms(h_by_layer, directions, anchors, config)
    reduced = rows.mean() if config.reduction == "mean" else rows.sum()
    return config.lam * warmup_weight(step, config) * reduced
