r"""Regression metrics as pure numpy functions (float64): RMSE, MAE, coefficient of determination.

Every function takes ``(pred, true)``: **predictions first**, like every clinfuse metric (the
reverse of scikit-learn's ``mean_squared_error(y_true, y_pred)``). Inputs are flattened; both must
hold the same number of values. NaN or infinite values raise
:class:`~clinfuse.core.errors.DataError` instead of silently propagating (scikit-learn raises too;
a plain ``np.mean`` would return NaN).
scikit-learn is used only as a test oracle.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from clinfuse.core.errors import DataError
from clinfuse.metrics.classification import _as_pair as same_size_pair

__all__ = ["mae", "r2", "rmse"]


def _as_pair(pred: ArrayLike, true: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as finite 1-D float64 arrays of equal, non-zero length."""
    try:
        p = np.asarray(pred, dtype=np.float64).reshape(-1)
        t = np.asarray(true, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what}: inputs are not numeric",
            expected="real-valued predictions and targets",
            found=f"{type(exc).__name__}: {exc}",
            fix="convert predictions and targets to float arrays",
        ) from exc
    p, t = same_size_pair(p, t, what)
    for name, a in (("pred", p), ("true", t)):
        bad = ~np.isfinite(a)
        if bad.any():
            raise DataError(
                f"{what}: {name} holds {int(bad.sum())} non-finite value(s)",
                expected="finite values only",
                found=f"NaN/inf at index {int(np.flatnonzero(bad)[0])} (first of {int(bad.sum())})",
                fix="drop rows with a missing target, or impute before predicting",
            )
    return p, t


def rmse(pred: ArrayLike, true: ArrayLike) -> float:
    r"""Root mean squared error :math:`\sqrt{\frac1N\sum_i (\hat y_i - y_i)^2}`.

    Equal to ``sklearn.metrics.root_mean_squared_error(true, pred)``.

    Shape:
        pred, true: ``(N,)`` real values (any shape with ``N`` elements). Output: float >= 0.

    Example:
        >>> rmse([1.0, 2.0, 3.0], [1.0, 2.0, 7.0])
        2.309401076758503
    """
    p, t = _as_pair(pred, true, "rmse")
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(pred: ArrayLike, true: ArrayLike) -> float:
    r"""Mean absolute error :math:`\frac1N\sum_i |\hat y_i - y_i|`.

    Equal to ``sklearn.metrics.mean_absolute_error(true, pred)``.

    Shape:
        pred, true: ``(N,)`` real values. Output: float >= 0.

    Example:
        >>> mae([1.0, 2.0, 3.0], [1.0, 2.0, 7.0])
        1.3333333333333333
    """
    p, t = _as_pair(pred, true, "mae")
    return float(np.mean(np.abs(p - t)))


def r2(pred: ArrayLike, true: ArrayLike) -> float:
    r"""Coefficient of determination.

    .. math::
        R^2 = 1 - \frac{\sum_i (y_i - \hat y_i)^2}{\sum_i (y_i - \bar y)^2}

    Equal to ``sklearn.metrics.r2_score(true, pred)`` (``force_finite=True``): 1 for a perfect
    prediction, 0 for the constant prediction :math:`\bar y`, negative when worse than that. When
    ``true`` is constant the ratio is undefined; like scikit-learn the score is then 1.0 for a
    perfect prediction and 0.0 otherwise.

    Shape:
        pred, true: ``(N,)`` real values. Output: float in :math:`(-\infty, 1]`.

    Example:
        >>> r2([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])   # the mean predictor
        0.0
        >>> r2([1.0, 2.0, 4.0], [1.0, 2.0, 3.0])
        0.5
    """
    p, t = _as_pair(pred, true, "r2")
    ss_res = float(np.sum((t - p) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot
