r"""Cell corruption of tables, for robustness curves over the fraction of corrupted cells.

Two operators (the prompt-based EHR method of this toolkit uses both; its paper does not state
which it used):

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

from clinfuse.core.errors import ConfigError, DataError

__all__ = ["CELL_CORRUPTIONS", "CorruptionMode", "corrupt_cells"]

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


CELL_CORRUPTIONS: dict[
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
    if mode not in CELL_CORRUPTIONS:
        raise ConfigError(
            "corrupt_cells: unknown corruption mode",
            expected=" | ".join(CELL_CORRUPTIONS),
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
    corrupt = CELL_CORRUPTIONS[mode]
    for j, name in enumerate(columns):
        if hit[:, j].any():
            out[name] = corrupt(out[name], hit[:, j], ref[name], rng)
    log.debug("corrupted %d of %d cells (%s, rate %.3f)", int(hit.sum()), hit.size, mode, rate)
    return out, hit
