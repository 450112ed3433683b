r"""Multi-dimensional dose bins <-> discrete action ids, fitted from data with a support filter.

A dose vector :math:`v \in \mathbb{R}^{d}` (e.g. kcal/kg, g protein/kg, mL water/kg per 4-h step)
falls in bin :math:`b_j = \#\{e \in E_j : e \le v_j\}` of dimension :math:`j`
(``np.searchsorted(edges[j], v[j], side="right")``, so bin :math:`k` is
:math:`[E_{j,k-1}, E_{j,k})`). The bin vector :math:`b` is an action when it is one of the
admissible ``cells``; action ids number the admissible cells in row-major order of their bins.

:meth:`ActionGrid.fit` is the DeepEN recipe (inferred): per dimension a bin
for exact zero, then quantile bins of the non-zero doses, then only the bin combinations seen at
least ``min_support`` times are kept (AI Clinician / ICU-Sepsis "admissible actions").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clinfuse.core.errors import ConfigError, DataError

__all__ = ["ZERO_EDGE", "ActionGrid", "support_mask"]

log = logging.getLogger(__name__)

ZERO_EDGE: float = float(np.nextafter(0.0, 1.0))
"""Edge of the zero bin: the smallest positive float, so that bin 0 holds exactly the zeros."""


def _ids(ids: np.ndarray | Sequence[int], n_actions: int) -> np.ndarray:
    """``ids`` as a 1-D int64 array, checked to lie in ``[0, n_actions)``."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise DataError(
            "action ids must be a 1-D integer array",
            expected="shape (N,), an integer dtype",
            found=f"shape {arr.shape}, dtype {arr.dtype}",
        )
    arr = arr.astype(np.int64, copy=False)
    bad = np.nonzero((arr < 0) | (arr >= n_actions))[0]
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"action id outside the grid at row {i}",
            expected=f"ids in [0, {n_actions})",
            found=int(arr[i]),
            fix="encode actions with the same ActionGrid",
        )
    return arr


def support_mask(ids: np.ndarray | Sequence[int], n_actions: int, min_count: int) -> np.ndarray:
    """``(n_actions,)`` bool: the actions logged at least ``min_count`` times in ``ids``.

    The "data-support filter": a policy restricted to supported actions never recommends a dose
    the clinicians (almost) never gave, where Q-values are pure extrapolation.

    Example:
        >>> support_mask([0, 0, 2, 2, 2], n_actions=4, min_count=2).tolist()
        [True, False, True, False]
    """
    return np.bincount(_ids(ids, n_actions), minlength=n_actions) >= min_count


@dataclass(frozen=True, eq=False)
class ActionGrid:
    """Dose bins per dimension and the admissible bin combinations (see the module docstring).

    Shape:
        edges[j] ``(n_bins[j] - 1,)`` strictly increasing; centers[j] ``(n_bins[j],)``;
        cells ``(n_actions, n_dims)`` int64, unique rows in row-major order, or None.

    Example:
        >>> g = ActionGrid(("kcal", "protein"), edges=([ZERO_EDGE, 10.0], [ZERO_EDGE]),
        ...                centers=([0.0, 5.0, 20.0], [0.0, 1.0]))
        >>> g.n_actions, g.encode([[0.0, 0.0], [12.0, 1.5]]).tolist()
        (6, [0, 5])
        >>> g.values([3]).tolist()
        [[5.0, 1.0]]
    """

    names: tuple[str, ...]
    """Name of each dose dimension, e.g. ("kcal_per_kg", "protein_per_kg", "water_ml_per_kg")."""
    edges: tuple[np.ndarray, ...]
    """Inner bin edges per dimension, strictly increasing; value v is in bin searchsorted(e, v,
    side="right")."""
    centers: tuple[np.ndarray, ...]
    """A representative value per bin (``len(edges[j]) + 1`` per dimension), e.g. bin medians."""
    cells: np.ndarray | None = None
    """``(K, n_dims)`` admissible bin combinations in id order; None = the full product."""

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        edges = tuple(np.array(e, dtype=np.float64).reshape(-1) for e in self.edges)
        centers = tuple(np.array(c, dtype=np.float64).reshape(-1) for c in self.centers)
        if not names or len(set(names)) != len(names):
            raise ConfigError(
                "an ActionGrid needs at least one dimension, each with a distinct name",
                expected="distinct names, e.g. ('kcal_per_kg', 'protein_per_kg')",
                found=names,
            )
        if len(edges) != len(names) or len(centers) != len(names):
            raise ConfigError(
                "one edges array and one centers array per dimension",
                expected=len(names),
                found=f"{len(edges)} edges, {len(centers)} centers",
            )
        for name, e, c in zip(names, edges, centers, strict=True):
            if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
                raise ConfigError(
                    f"bin edges of {name!r} must be finite and strictly increasing",
                    expected="e.g. [1e-300, 10.0, 20.0]",
                    found=e.tolist(),
                )
            if len(c) != len(e) + 1:
                raise ConfigError(
                    f"{name!r} needs one center per bin",
                    expected=len(e) + 1,
                    found=len(c),
                )
        shape = tuple(len(e) + 1 for e in edges)
        if self.cells is None:
            table = np.stack(np.unravel_index(np.arange(int(np.prod(shape))), shape), axis=1)
            cells = None
        else:
            cells = np.array(self.cells, dtype=np.int64)
            if cells.ndim != 2 or cells.shape[1] != len(names) or len(cells) == 0:
                raise ConfigError(
                    "cells must be a non-empty (K, n_dims) array of bin indices",
                    expected=f"(K, {len(names)})",
                    found=cells.shape,
                )
            if np.any(cells < 0) or np.any(cells >= np.asarray(shape)):
                raise ConfigError(
                    "cells hold bin indices outside the bins",
                    expected=f"0 <= cell[j] < {list(shape)}",
                    found=cells[np.any((cells < 0) | (cells >= np.asarray(shape)), axis=1)][:3],
                )
            flat = np.ravel_multi_index(tuple(cells.T), shape)
            if np.any(np.diff(flat) <= 0):
                raise ConfigError(
                    "cells must be unique and sorted row-major",
                    expected="rows in increasing row-major order",
                    found=cells.tolist()[:8],
                    fix="sort them, e.g. cells[np.lexsort(cells.T[::-1])], and drop duplicates",
                )
            table = cells
        lookup = np.full(int(np.prod(shape)), -1, np.int64)
        lookup[np.ravel_multi_index(tuple(table.T), shape)] = np.arange(len(table))
        for arr in (*edges, *centers, table, lookup):
            arr.setflags(write=False)
        for key, value in {
            "names": names,
            "edges": edges,
            "centers": centers,
            "cells": cells,
            "_table": table,
            "_lookup": lookup,
            "_shape": shape,
        }.items():
            object.__setattr__(self, key, value)

    # -- structure -------------------------------------------------------------------------
    @property
    def n_dims(self) -> int:
        return len(self.names)

    @property
    def n_bins(self) -> tuple[int, ...]:
        """Number of bins per dimension."""
        return self._shape

    @property
    def n_actions(self) -> int:
        """Number of admissible cells (= discrete actions)."""
        return len(self._table)

    @property
    def table(self) -> np.ndarray:
        """``(n_actions, n_dims)`` bin indices of every action id (``cells`` or the product)."""
        return self._table

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActionGrid):
            return NotImplemented
        return (
            self.names == other.names
            and self._shape == other._shape
            and all(np.array_equal(a, b) for a, b in zip(self.edges, other.edges, strict=True))
            and all(np.array_equal(a, b) for a, b in zip(self.centers, other.centers, strict=True))
            and np.array_equal(self._table, other._table)
        )

    __hash__ = None  # type: ignore[assignment]

    # -- values <-> bins <-> ids -----------------------------------------------------------
    def _matrix(self, x: Any, what: str, dtype: type) -> np.ndarray:
        arr = np.asarray(x, dtype=dtype)
        if arr.ndim != 2 or arr.shape[1] != self.n_dims:
            raise DataError(
                f"{what} must be one row per step and one column per dimension {self.names}",
                expected=f"(N, {self.n_dims})",
                found=arr.shape,
            )
        return arr

    def bins(self, values: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """``(N, n_dims)`` int64 bin index of each dose (NaN raises :class:`DataError`).

        Shape:
            values ``(N, n_dims)``. Output ``(N, n_dims)``.
        """
        v = self._matrix(values, "doses", np.float64)
        bad = np.nonzero(np.isnan(v).any(axis=1))[0]
        if len(bad):
            raise DataError(
                f"missing dose at row {int(bad[0])}",
                expected="a number in every dimension (0 for no feed)",
                found=v[int(bad[0])].tolist(),
                fix="fill doses that were not given with 0 before encoding",
            )
        cols = [np.searchsorted(e, v[:, j], side="right") for j, e in enumerate(self.edges)]
        return np.stack(cols, axis=1).astype(np.int64)

    def encode_bins(
        self, bins: np.ndarray | Sequence[Sequence[int]], nearest: bool = False
    ) -> np.ndarray:
        r"""``(N,)`` int64 action id of each bin combination.

        A combination that is not an admissible cell raises :class:`DataError` naming the row;
        with ``nearest=True`` it maps to the admissible cell :math:`c` nearest in bin-index
        :math:`L_1` distance :math:`\sum_j |b_j - c_j|`, ties to the lower id.
        """
        b = self._matrix(bins, "bin indices", np.int64)
        out = np.nonzero(np.any((b < 0) | (b >= np.asarray(self._shape)), axis=1))[0]
        if len(out):
            raise DataError(
                f"bin index outside the grid at row {int(out[0])}",
                expected=f"0 <= bin[j] < {list(self._shape)}",
                found=b[int(out[0])].tolist(),
            )
        ids = self._lookup[np.ravel_multi_index(tuple(b.T), self._shape)]
        miss = np.nonzero(ids < 0)[0]
        if len(miss) and not nearest:
            i = int(miss[0])
            raise DataError(
                f"dose bins {b[i].tolist()} at row {i} are not an admissible action "
                f"({len(miss)} rows in all)",
                expected=f"one of the {self.n_actions} cells of the grid",
                found=dict(zip(self.names, b[i].tolist(), strict=True)),
                fix="pass nearest=True to map to the nearest admissible cell, or refit the grid "
                "with a lower min_support",
            )
        if len(miss):
            dist = np.abs(b[miss, None, :] - self._table[None, :, :]).sum(axis=2)
            ids = ids.copy()
            ids[miss] = np.argmin(dist, axis=1)  # first minimum = lowest id
        return ids.astype(np.int64, copy=False)

    def encode(
        self, values: np.ndarray | Sequence[Sequence[float]], nearest: bool = False
    ) -> np.ndarray:
        """``(N,)`` action id of each dose vector: :meth:`encode_bins` of :meth:`bins`."""
        return self.encode_bins(self.bins(values), nearest=nearest)

    def decode(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """``(N, n_dims)`` bin indices of each action id (DataError outside ``[0, n_actions)``)."""
        return self._table[_ids(ids, self.n_actions)]

    def values(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """``(N, n_dims)`` float64 bin centers of each action id (the dose to display/give)."""
        b = self.decode(ids)
        if not len(b):
            return np.zeros((0, self.n_dims))
        return np.stack([self.centers[j][b[:, j]] for j in range(self.n_dims)], axis=1)

    # -- data support ----------------------------------------------------------------------
    def support(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """``(n_actions,)`` int64 count of each action id in ``ids``."""
        return np.bincount(_ids(ids, self.n_actions), minlength=self.n_actions)

    # -- fitting ---------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        values: np.ndarray | Sequence[Sequence[float]],
        names: Sequence[str],
        n_bins: int | Sequence[int] = 5,
        zero_bin: bool = True,
        min_support: int = 0,
    ) -> ActionGrid:
        r"""Bins from logged doses; keep the cells seen at least ``min_support`` times.

        Per dimension: with ``zero_bin`` a bin holding exactly the zeros (doses must then be
        :math:`\ge 0`), then ``n_bins`` quantile bins of the non-zero doses :math:`x`. The edges
        are the linear-interpolation quantiles :math:`Q_x(k/n)`, :math:`k = 1..n-1`, each raised
        to the smallest observed dose :math:`\ge` it: training doses fall in the same bins as with
        the plain quantile edges, and every bin holds data. Tied doses can merge bins (fewer
        than ``n_bins``; logged). ``centers`` are the medians of the fitted doses in each bin.

        ``min_support = 0`` keeps the full product (``cells=None``); otherwise ``cells`` are the
        bin combinations with at least ``min_support`` rows, in row-major order.

        Shape:
            values ``(N, n_dims)``.

        Example:
            >>> x = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
            >>> g = ActionGrid.fit(x, ["kcal"], n_bins=2)
            >>> g.edges[0][1:].tolist(), g.centers[0].tolist()
            ([3.0], [0.0, 1.5, 3.5])
        """
        x = np.asarray(values, dtype=np.float64)
        names = tuple(names)
        if x.ndim != 2 or x.shape[1] != len(names) or len(x) == 0:
            raise DataError(
                "fit needs a non-empty (N, n_dims) array of doses, one column per name",
                expected=f"(N >= 1, {len(names)})",
                found=x.shape,
            )
        counts = (n_bins,) * len(names) if isinstance(n_bins, int | np.integer) else tuple(n_bins)
        if len(counts) != len(names) or any(int(k) < 1 for k in counts):
            raise ConfigError(
                "n_bins must be a positive int or one positive int per dimension",
                expected=f"int >= 1 or {len(names)} of them",
                found=n_bins,
            )
        if not np.all(np.isfinite(x)):
            i = int(np.nonzero(~np.isfinite(x).all(axis=1))[0][0])
            raise DataError(
                f"non-finite dose at row {i}",
                expected="finite doses (0 for no feed)",
                found=x[i].tolist(),
                fix="fill doses that were not given with 0",
            )
        edges = [
            _fit_edges(x[:, j], int(k), zero_bin, name)
            for j, (name, k) in enumerate(zip(names, counts, strict=True))
        ]
        binned = np.stack(
            [np.searchsorted(e, x[:, j], side="right") for j, e in enumerate(edges)], axis=1
        )
        centers = [_bin_medians(x[:, j], binned[:, j], e) for j, e in enumerate(edges)]
        cells = None
        if min_support > 0:
            shape = tuple(len(e) + 1 for e in edges)
            seen = np.bincount(np.ravel_multi_index(tuple(binned.T), shape))
            keep = np.nonzero(seen >= min_support)[0]
            if not len(keep):
                raise DataError(
                    f"no bin combination is seen {min_support} times",
                    expected=f"at least one cell with >= {min_support} rows",
                    found=f"at most {int(seen.max())} rows per cell",
                    fix="lower min_support or use fewer bins",
                )
            cells = np.stack(np.unravel_index(keep, shape), axis=1)
            log.info(
                "action grid: %d of %d cells kept (support >= %d, %d of %d rows)",
                len(keep),
                int(np.prod(shape)),
                min_support,
                int(seen[keep].sum()),
                len(x),
            )
        return cls(names, tuple(edges), tuple(centers), cells)

    # -- display and persistence -----------------------------------------------------------
    def describe(self) -> pd.DataFrame:
        """One row per action id: per dimension the bin index, its center and its range.

        Columns ``{name}`` (center), ``{name}_bin``, ``{name}_low``, ``{name}_high`` (the bin
        is ``[low, high)``; -inf/inf at the ends); the index is named ``action``.
        """
        data: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.names):
            b = self._table[:, j]
            bounds = np.concatenate([[-np.inf], self.edges[j], [np.inf]])
            data[name] = self.centers[j][b]
            data[f"{name}_bin"] = b
            data[f"{name}_low"] = bounds[b]
            data[f"{name}_high"] = bounds[b + 1]
        return pd.DataFrame(data, index=pd.RangeIndex(self.n_actions, name="action"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (floats round-trip exactly through ``json``)."""
        return {
            "names": list(self.names),
            "edges": [e.tolist() for e in self.edges],
            "centers": [c.tolist() for c in self.centers],
            "cells": None if self.cells is None else self.cells.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionGrid:
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in ("names", "edges", "centers") if k not in d]
        if missing:
            raise DataError(
                f"action grid record lacks {missing}",
                expected="keys names, edges, centers, cells (from ActionGrid.to_dict)",
                found=sorted(d),
            )
        return cls(
            tuple(d["names"]),
            tuple(d["edges"]),
            tuple(d["centers"]),
            None if d.get("cells") is None else np.asarray(d["cells"], dtype=np.int64),
        )


def _fit_edges(x: np.ndarray, n_bins: int, zero_bin: bool, name: str) -> np.ndarray:
    """Inner edges of one dimension (see :meth:`ActionGrid.fit`)."""
    if zero_bin and np.any(x < 0):
        raise DataError(
            f"negative dose in {name!r} with zero_bin=True",
            expected="doses >= 0 (the zero bin holds exactly the zeros)",
            found=float(x.min()),
            fix="pass zero_bin=False for dimensions that can be negative",
        )
    data = np.sort(x[x != 0] if zero_bin else x)
    inner = np.zeros(0)
    if len(data):
        q = np.quantile(data, np.arange(1, n_bins) / n_bins)
        inner = np.unique(data[np.minimum(np.searchsorted(data, q, side="left"), len(data) - 1)])
        inner = inner[inner > data[0]]  # an edge at the minimum would leave the first bin empty
    if len(inner) < n_bins - 1 and len(data):
        log.warning("%r: %d quantile bins instead of %d (tied doses)", name, len(inner) + 1, n_bins)
    edges = np.concatenate([[ZERO_EDGE], inner]) if zero_bin and len(data) else inner
    if zero_bin and not len(data):
        log.warning("%r: every dose is zero; one bin", name)
    return edges


def _bin_medians(x: np.ndarray, b: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Median of the doses in each bin; an empty bin (a zero bin without zeros) takes its
    finite edge, i.e. 0 for the zero bin."""
    bounds = np.concatenate([[-np.inf], edges, [np.inf]])
    out = np.empty(len(edges) + 1)
    for k in range(len(out)):
        inside = x[b == k]
        if len(inside):
            out[k] = np.median(inside)
        else:
            finite = [v for v in bounds[k : k + 2] if np.isfinite(v)]
            out[k] = 0.0 if not finite or (k == 0 and edges[0] == ZERO_EDGE) else np.mean(finite)
    return out
