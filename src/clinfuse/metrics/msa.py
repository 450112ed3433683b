r"""Multimodal sentiment analysis metrics, formula for formula as MMSA computes them.

Ported from ``thuiar/MMSA`` ``src/MMSA/utils/metricsTop.py`` (``__eval_mosei_regression``,
``__eval_sims_regression``). Inputs are numpy arrays (anything ``np.asarray`` accepts, flattened
like MMSA's ``view(-1)``); outputs are dicts of plain floats, **not** rounded (MMSA rounds the
MOSI/MOSEI numbers to 4 decimals), as fractions in [0, 1] rather than percentages.

Pitfalls when comparing with published numbers:

- Papers write Acc-2 and F1 as "Has0/Non0". Has0 thresholds all samples at 0 with ``>=``
  (zero labels count as positive); Non0 drops the samples labelled exactly 0 and uses ``>``.
- MAG-BERT and MIB (``test_score_model``) compute Acc-2, F1, **MAE and Corr on non-zero labels
  only**, with Acc-7 on all samples. ``mosi_metrics(..., mag_bert_nonzero=True)`` reproduces that;
  their MAE/Corr are not comparable with MMSA's.
- MMIM's ``eval_metrics.py`` calls ``f1_score(pred, true)``; weighted F1 is not symmetric, so its
  F1 differs from ``f1_score(true, pred)`` (MMSA's order, used here).
- The SIMS Acc-2 split is non-positive vs positive (``(-1.01, 0]`` vs ``(0, 1.01]``), not
  MOSI's Has0 split (Self-MM#13).
- The SIMS bin edges are compared in the dtype of the input, as in MMSA, whose tensors are
  float32: a float32 label of 0.1 lies in ``(-0.1, 0.1]``, but the same label upcast to float64
  (0.10000000149...) lands in ``(0.1, 0.7]``. Pass the labels in the dtype you stored them in.

Pearson's r is returned as 0.0, not nan, when either vector is constant (a collapsed model):
a nan would poison averages over seeds and model selection. ``nan_corr=True`` keeps MMSA's
``np.corrcoef`` behaviour (nan).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from clinfuse.core.errors import DataError
from clinfuse.core.registry import Registry
from clinfuse.metrics.classification import _as_pair, accuracy, f1_weighted

__all__ = [
    "MSA_METRICS",
    "main_metric",
    "mosi_metrics",
    "mvsa_metrics",
    "pearson_r",
    "sims_metrics",
]

MetricFn = Callable[..., dict[str, float]]

MSA_METRICS: Registry[MetricFn] = Registry("MSA data set")
"""Data set name -> metric function ``fn(pred, true) -> dict[str, float]``."""

_MAIN_METRIC: dict[str, str] = {
    "mosi": "non0_acc2",
    "mosei": "non0_acc2",
    "sims": "f1",
    "mvsa": "acc",
}

SIMS_EDGES_2: tuple[float, ...] = (-1.01, 0.0, 1.01)
"""MMSA ``ms_2``: bins ``(-1.01, 0]`` (non-positive) and ``(0, 1.01]`` (positive)."""
SIMS_EDGES_3: tuple[float, ...] = (-1.01, -0.1, 0.1, 1.01)
"""MMSA ``ms_3``: negative, neutral, positive."""
SIMS_EDGES_5: tuple[float, ...] = (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01)
"""MMSA ``ms_5``: strongly negative ... strongly positive."""


def _regression_pair(pred: ArrayLike, true: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float arrays (float32/float64 kept, others -> float64); non-finite values raise."""
    p, t = _as_pair(pred, true, what)
    out = []
    for name, a in (("pred", p), ("true", t)):
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float64)
        bad = ~np.isfinite(a)
        if bad.any():
            raise DataError(
                f"{what}: {name} contains {int(bad.sum())} non-finite value(s)",
                expected="finite regression scores",
                found=f"first bad index {int(np.flatnonzero(bad)[0])}: {a[bad][0]!r}",
                fix="drop unlabelled samples, or check the model for divergence (NaN outputs)",
            )
        out.append(a)
    return out[0], out[1]


def pearson_r(x: ArrayLike, y: ArrayLike, *, nan_corr: bool = False) -> float:
    r"""Pearson correlation :math:`r = \frac{\sum (x-\bar x)(y-\bar y)}{\sqrt{\sum (x-\bar x)^2
    \sum (y-\bar y)^2}}`, computed in float64.

    Returns 0.0 when ``x`` or ``y`` is constant (including a single sample), where
    ``np.corrcoef`` (MMSA) gives nan; ``nan_corr=True`` returns nan there instead.

    Shape:
        x, y: ``(N,)``. Output: float in [-1, 1].

    Example:
        >>> pearson_r([1.0, 2.0, 3.0], [2.0, 4.0, 7.0])
        0.9933992677987828
        >>> pearson_r([1.0, 1.0, 1.0], [2.0, 4.0, 7.0])
        0.0
        >>> pearson_r([1.0, 1.0, 1.0], [2.0, 4.0, 7.0], nan_corr=True)
        nan
    """
    a, b = _as_pair(x, y, "pearson_r")
    a = a.astype(np.float64) - np.mean(a, dtype=np.float64)
    b = b.astype(np.float64) - np.mean(b, dtype=np.float64)
    denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
    if denom == 0.0:
        return float("nan") if nan_corr else 0.0
    return float(np.clip(np.sum(a * b) / denom, -1.0, 1.0))


def _multiclass_acc(pred: np.ndarray, true: np.ndarray) -> float:
    """MMSA ``__multiclass_acc``: ``mean(np.round(pred) == np.round(true))`` (half to even)."""
    return float(np.mean(np.round(pred) == np.round(true)))


def _mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred.astype(np.float64) - true.astype(np.float64))))


def _mmsa_bins(x: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Class ``i`` where ``edges[i] < x <= edges[i+1]``, the edges cast to ``x.dtype`` as in MMSA.

    MMSA loops ``for i in range(k): a[(x > ms[i]) & (x <= ms[i+1])] = i``; the masks are built on
    the unmodified ``x``, so the loop order does not matter and the bins are as written here.
    """
    e = np.asarray(edges, dtype=x.dtype)
    out = np.full(x.shape, -1, dtype=np.int64)
    for i in range(e.size - 1):
        out[(x > e[i]) & (x <= e[i + 1])] = i
    return out


@MSA_METRICS.register("mosei")
@MSA_METRICS.register("mosi")
def mosi_metrics(
    pred: ArrayLike,
    true: ArrayLike,
    *,
    mag_bert_nonzero: bool = False,
    nan_corr: bool = False,
) -> dict[str, float]:
    r"""CMU-MOSI / CMU-MOSEI regression metrics, as MMSA's ``__eval_mosei_regression``.

    With :math:`\hat y` the predictions and :math:`y \in [-3, 3]` the labels:

    - ``has0_acc2``, ``has0_f1``: :math:`1[\hat y \ge 0]` vs :math:`1[y \ge 0]` on all samples.
    - ``non0_acc2``, ``non0_f1``: drop samples with :math:`y = 0`, then :math:`1[\hat y > 0]` vs
      :math:`1[y > 0]`; nan when every label is 0.
    - ``acc7``: :math:`\mathrm{mean}[\mathrm{round}(\mathrm{clip}(\hat y, \pm 3)) =
      \mathrm{round}(\mathrm{clip}(y, \pm 3))]` with numpy's half-to-even rounding
      (``np.round(2.5) == 2``); ``acc5`` the same with clip :math:`\pm 2`.
    - ``mae`` :math:`\frac1N\sum|\hat y - y|` and ``corr`` (Pearson r) on all samples.

    F1 is weighted F1 in scikit-learn's ``f1_score(y_true, y_pred, average='weighted')`` order.

    ``mag_bert_nonzero=True`` reproduces MAG-BERT/MIB's ``test_score_model`` instead: ``mae``,
    ``corr``, ``non0_acc2`` and ``non0_f1`` on the non-zero labels only, the latter two with
    :math:`1[\hat y \ge 0]` vs :math:`1[y \ge 0]`; ``acc7`` (and ``acc5``, ``has0_*``) on all.
    Numbers from papers built on that code are not comparable with the default.

    Shape:
        pred, true: ``(N,)`` (or anything with N elements). Output: dict of 8 floats.

    Example:
        >>> m = mosi_metrics([2.6, -0.4, 0.0, 1.2], [3.0, 0.0, -1.0, 1.4])
        >>> m["has0_acc2"], m["non0_acc2"], m["acc7"], round(m["mae"], 3)
        (0.5, 1.0, 0.75, 0.5)
    """
    p, t = _regression_pair(pred, true, "mosi_metrics")
    nz = t != 0
    if mag_bert_nonzero:
        p_nz, t_nz = p[nz], t[nz]
        non0 = (p_nz >= 0, t_nz >= 0)
        mae_corr = (p_nz, t_nz)
    else:
        non0 = (p[nz] > 0, t[nz] > 0)
        mae_corr = (p, t)
    nan = float("nan")
    has_nz = bool(nz.any())
    return {
        "has0_acc2": accuracy(p >= 0, t >= 0),
        "has0_f1": f1_weighted(p >= 0, t >= 0),
        "non0_acc2": accuracy(*non0) if has_nz else nan,
        "non0_f1": f1_weighted(*non0) if has_nz else nan,
        "acc5": _multiclass_acc(np.clip(p, -2.0, 2.0), np.clip(t, -2.0, 2.0)),
        "acc7": _multiclass_acc(np.clip(p, -3.0, 3.0), np.clip(t, -3.0, 3.0)),
        "mae": _mae(*mae_corr) if mae_corr[0].size else nan,
        "corr": pearson_r(*mae_corr, nan_corr=nan_corr) if mae_corr[0].size else nan,
    }


@MSA_METRICS.register("sims")
def sims_metrics(pred: ArrayLike, true: ArrayLike, *, nan_corr: bool = False) -> dict[str, float]:
    r"""CH-SIMS regression metrics, as MMSA's ``__eval_sims_regression``.

    Both vectors are first clipped to :math:`[-1, 1]`, then binned with MMSA's half-open bins
    :math:`(e_i, e_{i+1}]` (edges compared in the input dtype, see the module notes):

    - ``acc2``: edges ``(-1.01, 0, 1.01)``, i.e. **non-positive vs positive**.
    - ``acc3``: edges ``(-1.01, -0.1, 0.1, 1.01)``.
    - ``acc5``: edges ``(-1.01, -0.7, -0.1, 0.1, 0.7, 1.01)``.
    - ``f1``: weighted F1 over the two Acc-2 classes, ``f1_score(true, pred)`` order.
    - ``mae`` and ``corr`` (Pearson r) on the **clipped** values, as MMSA.

    Shape:
        pred, true: ``(N,)``. Output: dict of 6 floats.

    Example:
        >>> m = sims_metrics([0.0, 0.05, 0.8, -0.2], [0.1, -0.1, 0.6, -1.4])
        >>> m["acc2"], m["acc3"], m["acc5"], round(m["mae"], 3)
        (0.5, 0.75, 0.25, 0.312)
    """
    p, t = _regression_pair(pred, true, "sims_metrics")
    p = np.clip(p, -1.0, 1.0)
    t = np.clip(t, -1.0, 1.0)
    p2, t2 = _mmsa_bins(p, SIMS_EDGES_2), _mmsa_bins(t, SIMS_EDGES_2)
    return {
        "acc2": accuracy(p2, t2),
        "acc3": accuracy(_mmsa_bins(p, SIMS_EDGES_3), _mmsa_bins(t, SIMS_EDGES_3)),
        "acc5": accuracy(_mmsa_bins(p, SIMS_EDGES_5), _mmsa_bins(t, SIMS_EDGES_5)),
        "f1": f1_weighted(p2, t2),
        "mae": _mae(p, t),
        "corr": pearson_r(p, t, nan_corr=nan_corr),
    }


@MSA_METRICS.register("mvsa")
def mvsa_metrics(pred_labels: ArrayLike, true_labels: ArrayLike) -> dict[str, float]:
    r"""MVSA-Single (3-class image+text sentiment): accuracy and weighted F1.

    F1 uses the ``f1_score(true, pred, average='weighted')`` order. Pass class labels, not logits:
    take ``logits.argmax(1)`` first.

    Shape:
        pred_labels, true_labels: ``(N,)`` integer labels. Output: ``{"acc", "f1"}``.

    Example:
        >>> m = mvsa_metrics([0, 1, 2, 2], [0, 1, 2, 1])
        >>> m["acc"], round(m["f1"], 4)
        (0.75, 0.75)
    """
    p = np.asarray(pred_labels)
    if p.ndim == 2 and p.shape[1] > 1:
        raise DataError(
            "mvsa_metrics takes class labels, not scores",
            expected="pred_labels of shape (N,)",
            found=f"shape {p.shape}",
            fix="pass logits.argmax(axis=1)",
        )
    p, t = _as_pair(p, true_labels, "mvsa_metrics")
    return {"acc": accuracy(p, t), "f1": f1_weighted(p, t)}


def main_metric(dataset: str) -> str:
    """The metric used to rank runs and report headline numbers for a data set.

    - ``mosi`` / ``mosei``: ``non0_acc2`` (the number most papers put first; Has0 is the
      second of the "x/y" pair).
    - ``sims``: ``f1`` (DIB's headline SIMS number, and MMSA's F1 is comparable across papers).
    - ``mvsa``: ``acc`` (MVSA papers lead with accuracy; weighted F1 is reported beside it).

    All four are higher-is-better. Unknown names raise with close matches.

    Example:
        >>> main_metric("mosei"), main_metric("sims")
        ('non0_acc2', 'f1')
    """
    MSA_METRICS.get(dataset)  # unknown names raise UnknownNameError with close matches
    return _MAIN_METRIC[dataset]
