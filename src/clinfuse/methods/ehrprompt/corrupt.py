r"""Cell corruption for the robustness curves, and a bootstrap confidence interval for them.

The paper corrupts structured cells at increasing rates; which operator it used is not stated
(**inferred**), so both are implemented:

- ``"mask"``: the cell becomes missing (NaN / None / ``pd.NA`` by dtype), which the prompt
  templates render as "not recorded". The model sees that *something* is missing.
- ``"marginal"``: the cell is replaced by a value drawn from the column's empirical marginal in a
  ``reference`` frame (the training split): uniform over its non-missing cells, so values keep their
  training frequencies. The row stays plausible-looking but loses its link to the outcome; a draw
  may equal the original value (with the probability of that value in the reference).

Each cell of the chosen columns is selected independently with probability ``rate``:
:math:`M_{ij} \sim \mathrm{Bernoulli}(r)`. Only the listed columns are touched, so note columns stay
intact unless they are listed.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from clinfuse.core.errors import ConfigError, DataError

__all__ = ["CORRUPTIONS", "CorruptionMode", "bootstrap_ci", "corrupt_cells"]

log = logging.getLogger(__name__)

CorruptionMode = Literal["mask", "marginal"]


def _mask_column(
    col: pd.Series, hit: np.ndarray, reference: pd.Series, rng: np.random.Generator
) -> pd.Series:
    """Selected cells become missing (``Series.mask``: NaN, None or ``pd.NA`` by dtype)."""
    return col.mask(hit)


def _marginal_column(
    col: pd.Series, hit: np.ndarray, reference: pd.Series, rng: np.random.Generator
) -> pd.Series:
    """Selected cells become draws from the non-missing values of ``reference``."""
    pool = reference.dropna().to_numpy()
    if pool.size == 0:
        raise DataError(
            f"corrupt_cells: column {col.name!r} has no recorded value in the reference frame",
            expected="at least one non-missing reference value to draw from",
            found=f"{reference.size} reference cells, all missing",
            fix="use mode='mask' for this column, or pass a reference frame where it is recorded",
        )
    draws = pool[rng.integers(0, pool.size, size=int(hit.sum()))]
    other = np.resize(pool[:1], hit.size)  # filler where nothing is drawn
    other[hit] = draws
    if isinstance(col.dtype, pd.CategoricalDtype):
        new = sorted(set(pd.unique(draws)) - set(col.cat.categories), key=str)
        col = col.cat.add_categories(new) if new else col
    # ``where`` upcasts as needed (an int column receiving 2.5 becomes float) without warnings
    return col.where(~hit, pd.Series(other, index=col.index))


CORRUPTIONS: dict[
    str, Callable[[pd.Series, np.ndarray, pd.Series, np.random.Generator], pd.Series]
] = {"mask": _mask_column, "marginal": _marginal_column}


def corrupt_cells(
    frame: pd.DataFrame,
    rate: float,
    mode: CorruptionMode,
    columns: Sequence[str],
    rng: np.random.Generator,
    reference: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    r"""Corrupt each cell of ``columns`` independently with probability ``rate``.

    Args:
        frame: The rows to corrupt (usually the test split); never modified.
        rate: Probability :math:`r \in [0, 1]` that a cell is corrupted.
        mode: ``"mask"`` (cell -> missing) or ``"marginal"`` (cell -> draw from ``reference``).
        columns: The structured columns to corrupt; every other column is copied unchanged.
        rng: Source of randomness: the selection mask is drawn first, as one
            ``rng.random((n, k))`` call, then the marginal draws column by column.
        reference: Frame whose non-missing values define each column's marginal (the training
            split). None uses ``frame`` itself. Ignored by ``"mask"``.

    Returns:
        The corrupted copy, and the selection mask ``M`` (True = cell selected). A selected cell
        that was already missing stays missing under ``"mask"``.

    Shape:
        frame: ``(n, p)``. Output: ``(n, p)`` frame and ``(n, len(columns))`` bool mask, columns in
        the given order.

    Example:
        >>> df = pd.DataFrame({"age": [50.0, 60.0, 70.0], "note": ["a", "b", "c"]})
        >>> out, hit = corrupt_cells(df, 1.0, "mask", ["age"], np.random.default_rng(0))
        >>> bool(out["age"].isna().all()), out["note"].tolist(), hit.shape
        (True, ['a', 'b', 'c'], (3, 1))
    """
    if mode not in CORRUPTIONS:
        raise ConfigError(
            "corrupt_cells: unknown corruption mode",
            expected=" | ".join(CORRUPTIONS),
            found=repr(mode),
            fix="use 'mask' (cell -> not recorded) or 'marginal' (cell -> random training value)",
        )
    if not (isinstance(rate, numbers.Real) and 0.0 <= float(rate) <= 1.0):
        raise ConfigError(
            "corrupt_cells: rate must be a probability",
            expected="0 <= rate <= 1",
            found=repr(rate),
            fix="pass the fraction of cells to corrupt, e.g. 0.2",
        )
    columns = list(columns)
    ref = frame if reference is None else reference
    for where, table in (("frame", frame), ("reference", ref)):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataError(
                f"corrupt_cells: unknown column(s) in the {where}: {missing}",
                expected=f"columns of the {where}: {list(table.columns)[:20]}",
                found=missing,
                fix="pass only structured columns present in both frames",
            )
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(
            "corrupt_cells: a column is listed twice",
            expected="each column once",
            found=dup,
            fix="deduplicate the column list",
        )
    hit = rng.random((len(frame), len(columns))) < rate
    out = frame.copy()
    corrupt = CORRUPTIONS[mode]
    for j, name in enumerate(columns):
        if hit[:, j].any():
            out[name] = corrupt(out[name], hit[:, j], ref[name], rng)
    log.debug("corrupted %d of %d cells (%s, rate %.3f)", int(hit.sum()), hit.size, mode, rate)
    return out, hit


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
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(members), size=len(members))
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
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)
