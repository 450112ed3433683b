r"""Label-based classification metrics: accuracy, weighted F1, balanced accuracy.

Every function takes ``(pred, true)``: **predictions first**, like every clinfuse metric. This is
the reverse of scikit-learn's ``f1_score(y_true, y_pred)``. The order matters for weighted F1,
whose class weights are the supports of ``true``: MMIM's ``eval_metrics.py`` calls
``f1_score(pred, true)`` and so reports another number (example in :func:`f1_weighted`).
scikit-learn is used only as a test oracle.

Labels may be any comparable values (bool, int, float or str); classes are the sorted union of
the values seen in ``pred`` and ``true``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from clinfuse.core.errors import DataError

__all__ = ["accuracy", "balanced_accuracy", "confusion_counts", "f1_weighted", "roc_auc"]


def _as_pair(pred: ArrayLike, true: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D arrays of equal, non-zero length (flattened, as MMSA's ``view(-1)``)."""
    p = np.asarray(pred)
    t = np.asarray(true)
    if p.size != t.size:
        raise DataError(
            f"{what}: predictions and targets differ in size",
            expected="pred and true with the same number of elements",
            found=f"pred shape {p.shape}, true shape {t.shape}",
            fix="pass one prediction per sample (argmax logits first for class labels)",
        )
    if t.size == 0:
        raise DataError(
            f"{what}: empty input",
            expected="at least one sample",
            found="0 samples",
            fix="check the split or the batch you are evaluating",
        )
    return p.reshape(-1), t.reshape(-1)


def confusion_counts(pred: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    r"""Classes and confusion matrix ``C[i, j]`` = #samples with true class ``i``, predicted ``j``.

    Shape:
        pred, true: ``(N,)`` labels. Output: ``(K,)`` sorted classes and ``(K, K)`` int64 counts,
        with ``K`` the number of distinct labels in ``pred`` and ``true`` together.

    Example:
        >>> classes, c = confusion_counts([0, 1, 1], [0, 0, 1])
        >>> classes.tolist(), c.tolist()
        ([0, 1], [[1, 1], [0, 1]])
    """
    p, t = _as_pair(pred, true, "confusion_counts")
    classes, inverse = np.unique(np.concatenate([t, p]), return_inverse=True)
    k = classes.size
    ti, pi = inverse[: t.size], inverse[t.size :]
    counts = np.bincount(ti * k + pi, minlength=k * k).reshape(k, k)
    return classes, counts.astype(np.int64)


def accuracy(pred: ArrayLike, true: ArrayLike) -> float:
    r"""Fraction of exact matches, :math:`\frac1N\sum_i 1[\hat y_i = y_i]`.

    Shape:
        pred, true: ``(N,)`` labels. Output: float in [0, 1].

    Example:
        >>> accuracy([0, 1, 1, 2], [0, 1, 2, 2])
        0.75
    """
    p, t = _as_pair(pred, true, "accuracy")
    return float(np.mean(p == t))


def f1_weighted(pred: ArrayLike, true: ArrayLike) -> float:
    r"""Support-weighted F1, equal to ``sklearn.metrics.f1_score(true, pred, average='weighted')``.

    .. math::
        F_1^{w} = \sum_c \frac{n_c}{N}\,\frac{2\,TP_c}{2\,TP_c + FP_c + FN_c},

    where :math:`n_c` is the number of samples whose **true** class is :math:`c`. A class with
    :math:`2TP_c+FP_c+FN_c = 0` scores 0 (scikit-learn's ``zero_division`` default); classes only
    predicted, never true, get weight 0.

    The score is not symmetric in its arguments because the weights come from ``true``: swapping
    them (MMIM's ``f1_score(pred, true)``) gives another number.

    Shape:
        pred, true: ``(N,)`` labels (**predictions first**). Output: float in [0, 1].

    Example:
        >>> pred, true = [1, 1, 1, 0], [1, 1, 0, 0]
        >>> round(f1_weighted(pred, true), 4)   # sklearn f1_score(true, pred, average='weighted')
        0.7333
        >>> round(f1_weighted(true, pred), 4)   # the swapped call gives another value
        0.7667
    """
    _, c = confusion_counts(pred, true)
    tp = np.diag(c).astype(np.float64)
    support = c.sum(axis=1).astype(np.float64)  # true counts
    predicted = c.sum(axis=0).astype(np.float64)
    denom = support + predicted  # = 2TP + FP + FN
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(np.sum(f1 * support) / np.sum(support))


def balanced_accuracy(pred: ArrayLike, true: ArrayLike) -> float:
    r"""Mean per-class recall over the classes present in ``true``.

    Equal to ``sklearn.metrics.balanced_accuracy_score(true, pred)`` (``adjusted=False``);
    classes only predicted are ignored.

    Shape:
        pred, true: ``(N,)`` labels (**predictions first**). Output: float in [0, 1].

    Example:
        >>> balanced_accuracy([0, 0, 0, 0], [0, 0, 0, 1])  # accuracy would be 0.75
        0.5
    """
    _, c = confusion_counts(pred, true)
    support = c.sum(axis=1)
    present = support > 0
    recall = np.diag(c)[present] / support[present]
    return float(np.mean(recall))


def roc_auc(scores: ArrayLike, true: ArrayLike) -> float:
    r"""Area under the ROC curve of binary ``true`` labels ranked by ``scores`` (higher = positive).

    The Mann-Whitney form, with a tie between a positive and a negative counting one half:

    .. math::
        \mathrm{AUROC} = \frac{1}{n_+ n_-}\sum_{i: y_i = 1}\sum_{j: y_j = 0}
        \Big(1[s_i > s_j] + \tfrac12\,1[s_i = s_j]\Big)
        = \frac{R_+ - n_+(n_+ + 1)/2}{n_+ n_-},

    with :math:`R_+` the sum of the average ranks of the positives. Equal to
    ``sklearn.metrics.roc_auc_score(true, scores)``. ``true`` must hold exactly two distinct labels;
    the **greater** one is the positive class (1 of {0, 1}, True of {False, True}, 1 of {-1, 1}).
    Unlike the label metrics above, the first argument is a continuous score (a probability or a
    logit), not a predicted label.

    Shape:
        scores: ``(N,)`` finite real scores. true: ``(N,)`` binary labels. Output: float in [0, 1].

    Example:
        >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
        >>> roc_auc([0.5, 0.5], [0, 1])   # a tie counts one half
        0.5
    """
    from scipy.stats import rankdata

    s, t = _as_pair(scores, true, "roc_auc")
    try:
        s = s.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            "roc_auc: scores are not numeric",
            expected="real-valued scores (probabilities or logits)",
            found=f"dtype {s.dtype}",
            fix="pass predicted probabilities, not class names",
        ) from exc
    if not np.all(np.isfinite(s)):
        raise DataError(
            "roc_auc: scores hold NaN or inf",
            expected="finite scores",
            found=f"{int((~np.isfinite(s)).sum())} non-finite score(s)",
            fix="check the model output for NaN (diverged training?)",
        )
    if t.dtype.kind == "f" and np.isnan(t).any():
        raise DataError(
            "roc_auc: true labels hold NaN",
            expected="binary labels with no missing value",
            found=f"{int(np.isnan(t).sum())} NaN label(s)",
            fix="drop the rows with a missing label before scoring",
        )
    classes, pos = np.unique(t, return_inverse=True)
    if classes.size != 2:
        raise DataError(
            "roc_auc: AUROC needs exactly two classes in true",
            expected="both a positive and a negative label",
            found=f"{classes.size} distinct label(s): {classes.tolist()[:5]}",
            fix="evaluate on a split that holds both classes (stratify the split)",
        )
    positive = pos.reshape(-1) == 1
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    ranks = rankdata(s, method="average")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
