r"""Percentile bootstrap intervals of a test metric, resampling patients (all rows of a drawn
patient together)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import ArrayLike

from clinfuse.core.errors import ConfigError, DataError

__all__ = ["bootstrap_ci", "percentile_interval", "resamples"]

log = logging.getLogger(__name__)


def resamples(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """``n_boot`` resamples of ``n`` units with replacement (each an ``(n,)`` index array),
    drawn one after another from ``np.random.default_rng(seed)``: every bootstrap of the
    toolkit (patients of a test set, episodes of an off-policy data set) draws through it.

    Example:
        >>> [d.tolist() for d in resamples(3, 2, seed=0)]
        [[2, 1, 1], [0, 0, 0]]
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n, size=n)


def percentile_interval(values: ArrayLike, alpha: float, axis: int = -1) -> np.ndarray:
    """The :math:`\\alpha/2` and :math:`1-\\alpha/2` quantiles of bootstrap ``values`` along
    ``axis`` (first axis of the result: low, high)."""
    return np.quantile(np.asarray(values, dtype=float), [alpha / 2.0, 1.0 - alpha / 2.0], axis=axis)


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y: ArrayLike,
    pred: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: ArrayLike | None = None,
) -> tuple[float, float]:
    r"""Percentile bootstrap interval of a test metric, resampling patients with replacement.

    Draw ``n_boot`` resamples of the test rows (of the patients in ``groups``, all rows of a drawn
    patient together, when a patient has several rows), evaluate
    ``metric_fn(pred[idx], y[idx])`` (clinfuse order: **predictions first**) on each, and return the
    :math:`\alpha/2` and :math:`1-\alpha/2` quantiles. A resample on which the metric raises
    :class:`~clinfuse.core.errors.DataError` (e.g. a single class for AUROC) is skipped and
    counted in the log; fewer than half valid resamples is an error.

    Args:
        metric_fn: Metric taking ``(pred, true)`` and returning a float.
        y: Targets, first axis = rows.
        pred: Predictions (scores, probabilities, values), first axis = rows.
        n_boot: Number of resamples.
        seed: Seed of the resampling generator.
        alpha: One minus the coverage.
        groups: Patient id per row; None = one row per patient.

    Shape:
        y, pred: ``(n, ...)``, same first axis. Output: ``(low, high)``.

    Example:
        >>> y = np.arange(100.0)
        >>> low, high = bootstrap_ci(lambda p, t: float(np.mean(p)), y, y, n_boot=200)
        >>> bool(low < 49.5 < high)
        True
    """
    y_arr, p_arr = np.asarray(y), np.asarray(pred)
    n = y_arr.shape[0] if y_arr.ndim else 0
    if p_arr.ndim == 0 or p_arr.shape[0] != n or n == 0:
        raise DataError(
            "bootstrap_ci: targets and predictions must have the same, non-zero number of rows",
            expected="y and pred with equal first axis",
            found=f"y shape {y_arr.shape}, pred shape {p_arr.shape}",
            fix="pass one prediction per test row",
        )
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ConfigError(
            "bootstrap_ci: bad resampling settings",
            expected="n_boot >= 1 and 0 < alpha < 1",
            found=f"n_boot={n_boot}, alpha={alpha}",
            fix="e.g. n_boot=1000, alpha=0.05",
        )
    if groups is None:
        members = [np.array([i]) for i in range(n)]
    else:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise DataError(
                "bootstrap_ci: one patient id per row is needed",
                expected=f"groups of shape ({n},)",
                found=f"shape {g.shape}",
                fix="pass the patient id column of the test rows",
            )
        _, inverse = np.unique(g, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        members = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
    values: list[float] = []
    for drawn in resamples(len(members), n_boot, seed):
        idx = drawn if groups is None else np.concatenate([members[k] for k in drawn])
        try:
            values.append(float(metric_fn(p_arr[idx], y_arr[idx])))
        except DataError:
            continue
    skipped = n_boot - len(values)
    if skipped:
        log.info("bootstrap_ci: %d of %d resamples skipped (metric undefined)", skipped, n_boot)
    if len(values) < max(1, n_boot // 2):
        raise DataError(
            "bootstrap_ci: the metric is undefined on most resamples",
            expected="a metric defined on at least half of the resamples",
            found=f"{len(values)} valid of {n_boot}",
            fix="evaluate on a larger test set (or one with both classes well represented)",
        )
    low, high = percentile_interval(values, alpha)
    return float(low), float(high)
