r"""Survival metrics as pure numpy functions (float64): concordance, Brier, NBLL, calibration.

Conventions used by every function here:

- ``event`` is **1 for an observed event and 0 for a censored time** (bool or 0/1 numbers). Label
  files in the TCGA-CDR / MCAT style store a *censorship* column (1 = censored): pass
  ``event = 1 - censorship``.
- ``time`` is finite and non-negative; ``risk`` is higher = earlier event.
- Predicted survival curves are a matrix ``surv`` of shape ``(n, T)`` on a strictly increasing
  grid ``times`` of shape ``(T,)``: ``surv[i, k]`` is
  :math:`\hat S_i(\text{times}_k) = P(T_i > \text{times}_k)`.

Reference implementations (test-only oracles, never imported here): scikit-survival
(``concordance_index_censored``, ``concordance_index_ipcw``, ``brier_score``,
``integrated_brier_score``), lifelines, torchsurv, and pycox's ``EvalSurv`` (``concordance_td``,
``integrated_brier_score``, ``integrated_nbll``). Where they differ, the function says which one
it reproduces and how to get the other.

Inverse probability of censoring weights (IPCW) use the Kaplan-Meier estimate :math:`\hat G` of the
censoring survival :math:`P(C > t)`. Two settings exist in the literature and in DPsurv's code:

- ``censoring="train"`` (default; scikit-survival and torchsurv): :math:`\hat G` is estimated on the
  **training** labels with *events before censorings* at tied times (:func:`censoring_km` with
  ``ties="events_first"``); an event at :math:`T_i` is weighted by :math:`1/\hat G(T_i)` (the
  right-continuous value, after the censoring jump at :math:`T_i`, exactly as
  ``sksurv.nonparametric.CensoringDistributionEstimator.predict_proba``; Graf et al. write
  :math:`\hat G(T_i-)`, which differs only when a training censoring time equals :math:`T_i`); the
  score is averaged over the :math:`n` test samples.
- ``censoring="test"`` (pycox ``EvalSurv(..., censor_surv="km")``, what the DPsurv paper reports):
  :math:`\hat G` is the plain Kaplan-Meier of ``(time_test, 1 - event_test)``
  (``ties="simultaneous"``); an event is weighted by the left limit :math:`1/\hat G(T_i-)`; the
  weighted sum is divided by the **sum of the weights** instead of :math:`n`. Combined with
  ``rule="simpson"`` it reproduces pycox's integrated scores (pycox differs only for a duration of
  exactly 0, where it uses :math:`\hat G(0)` instead of :math:`\hat G(0-) = 1`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import integrate, stats

from clinfuse.core.errors import DataError

__all__ = [
    "Concordance",
    "DCalibration",
    "antolini_c",
    "brier_score",
    "censoring_km",
    "d_calibration",
    "harrell_c",
    "integrated_brier_score",
    "integrated_nbll",
    "band_interval",
    "interval_coverage",
    "ipcw_interval_coverage",
    "kaplan_meier",
    "km_at",
    "nbll",
    "surv_at",
    "survival_metrics",
    "tercile_coverage",
    "uno_c",
]

FloatArray = NDArray[np.float64]
Censoring = Literal["train", "test"]
"""Where the censoring Kaplan-Meier of the IPCW comes from (see the module docstring)."""
Ties = Literal["events_first", "simultaneous"]
"""Tie rule of the censoring Kaplan-Meier at times with both events and censorings."""
Rule = Literal["trapezoid", "simpson"]
"""Quadrature of the integrated scores: sksurv/torchsurv use the trapezoid, pycox Simpson."""
AntoliniVariant = Literal["antolini", "adj_antolini"]
"""``antolini``: Antolini et al. (2005); ``adj_antolini``: pycox's tie-adjusted variant."""
Interpolation = Literal["step", "linear"]
"""How a curve known on the grid is read between grid points."""

_BLOCK_ELEMENTS = 1 << 20
"""Pairwise metrics work on row blocks of at most this many (row, column) pairs (8 MB float64)."""
_NBLL_EPS = 1e-7
"""Predictions are clipped to ``[eps, 1 - eps]`` inside the log-likelihood, as pycox does."""
_PROB_TOL = 1e-6
"""Survival values this far outside [0, 1] are accepted (and clipped) as rounding error."""


class Concordance(NamedTuple):
    """A concordance index with the pair counts behind it (scikit-survival's order and meaning).

    The counts are unweighted, also for :func:`uno_c`; ``tied_time`` counts the comparable pairs
    of an event and a censored time that are equal.
    """

    cindex: float
    concordant: int
    discordant: int
    tied_risk: int
    tied_time: int


class DCalibration(NamedTuple):
    """D-calibration histogram and its chi-square goodness-of-fit test against uniform bins."""

    proportions: FloatArray
    """``(n_bins,)`` share of the (fractional) patients per bin of :math:`\\hat S_i(T_i)`, bins
    ``[0, 1/B), [1/B, 2/B), ..., [1 - 1/B, 1]`` in increasing order; sums to 1."""
    statistic: float
    """Pearson chi-square :math:`\\sum_b (O_b - n/B)^2 / (n/B)` on the fractional counts."""
    p_value: float
    """Upper tail of :math:`\\chi^2_{B-1}`; small values reject calibration."""


# ---------------------------------------------------------------------------------------------
# validation


def _fail_row(what: str, rows: NDArray[np.bool_], problem: str, expected: str, fix: str) -> None:
    bad = np.flatnonzero(rows)
    if bad.size:
        first = ", ".join(str(int(r)) for r in bad[:5])
        raise DataError(
            f"{what}: {bad.size} row(s) {problem} (first rows: {first})",
            expected=expected,
            found=f"row {int(bad[0])} is at fault",
            fix=fix,
        )


def _vector(x: ArrayLike, what: str) -> FloatArray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what} is not numeric",
            expected="a 1-D array of numbers",
            found=f"{type(x).__name__}: {exc}",
            fix=f"convert {what} with np.asarray(..., dtype=float)",
        ) from exc
    if arr.ndim != 1:
        raise DataError(
            f"{what} must be 1-D",
            expected="shape (n,)",
            found=f"shape {arr.shape}",
            fix=f"flatten {what} (one value per patient)",
        )
    return arr


def _labels(time: ArrayLike, event: ArrayLike, what: str) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Validated ``(time float64, event bool)`` of one label set named ``what`` (e.g. "test")."""
    t = _vector(time, f"time_{what}")
    e = _vector(event, f"event_{what}")
    if t.shape != e.shape:
        raise DataError(
            f"time_{what} and event_{what} differ in length",
            expected="one time and one event indicator per patient",
            found=f"{t.shape[0]} times, {e.shape[0]} event indicators",
            fix="pass the two columns of the same label table",
        )
    if t.shape[0] == 0:
        raise DataError(
            f"the {what} labels are empty",
            expected="at least one patient",
            found="0 rows",
            fix="check the split / filter that produced these labels",
        )
    _fail_row(
        f"time_{what}",
        ~np.isfinite(t) | (t < 0),
        "are NaN, infinite or negative",
        "finite survival / censoring times >= 0",
        "drop patients without follow-up, or fix the time unit / sign of those rows",
    )
    _fail_row(
        f"event_{what}",
        (e != 0) & (e != 1),
        "are neither 0 nor 1",
        "event = 1 for an observed event, 0 for a censored time",
        "convert a censorship column (1 = censored) with event = 1 - censorship",
    )
    return t, e.astype(bool)


def _risk(risk: ArrayLike, n: int, what: str = "risk") -> FloatArray:
    r = _vector(risk, what)
    if r.shape[0] != n:
        raise DataError(
            f"{what} does not match the labels",
            expected=f"{n} risk scores, one per patient",
            found=f"{r.shape[0]} scores",
            fix="predict one score per test patient, in the same row order as the labels",
        )
    _fail_row(what, ~np.isfinite(r), "are NaN or infinite", "finite scores", "check the model")
    return r


def _grid(times: ArrayLike) -> FloatArray:
    g = _vector(times, "times")
    if g.shape[0] == 0:
        raise DataError("times is empty", expected="a time grid of T >= 1 points", found="0")
    _fail_row(
        "times",
        ~np.isfinite(g) | (g < 0),
        "are NaN, infinite or negative",
        "a finite, non-negative time grid",
        "build the grid from the follow-up times, e.g. np.linspace(t_lo, t_hi, 50)",
    )
    if g.shape[0] > 1 and not bool(np.all(np.diff(g) > 0)):
        k = int(np.flatnonzero(np.diff(g) <= 0)[0]) + 1
        raise DataError(
            "times must be strictly increasing",
            expected="times[0] < times[1] < ... (one column of surv per time)",
            found=f"times[{k - 1}] = {g[k - 1]}, times[{k}] = {g[k]}",
            fix="sort the grid and drop duplicates (np.unique), reordering surv's columns with it",
        )
    return g


def _curves(surv: ArrayLike, n: int, n_times: int, what: str = "surv") -> FloatArray:
    try:
        s = np.asarray(surv, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what} is not numeric",
            expected=f"an array of shape ({n}, {n_times})",
            found=f"{type(surv).__name__}: {exc}",
            fix="pass a numeric (n, T) survival matrix",
        ) from exc
    if s.shape != (n, n_times):
        raise DataError(
            f"{what} does not match the labels and the grid",
            expected=f"shape ({n}, {n_times}): one row per patient, one column per grid time",
            found=f"shape {s.shape}",
            fix="evaluate every patient's curve on `times` (transpose a (T, n) pycox frame)",
        )
    _fail_row(
        what,
        ~np.all(np.isfinite(s) & (s >= -_PROB_TOL) & (s <= 1 + _PROB_TOL), axis=1),
        "contain NaN or values outside [0, 1]",
        "survival probabilities in [0, 1]",
        "check the model output (a risk score or a log-survival is not a survival probability)",
    )
    return np.clip(s, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier


def _counts(time: FloatArray, event: NDArray[np.bool_]) -> tuple[FloatArray, ...]:
    """Unique times, events, censorings and the number at risk just before each unique time."""
    uniq, inverse = np.unique(time, return_inverse=True)
    n_obs = np.bincount(inverse, minlength=uniq.shape[0]).astype(np.float64)
    n_event = np.bincount(inverse, weights=event.astype(np.float64), minlength=uniq.shape[0])
    at_risk = time.shape[0] - np.concatenate(([0.0], np.cumsum(n_obs)[:-1]))
    return uniq, n_event, n_obs - n_event, at_risk


def kaplan_meier(time: ArrayLike, event: ArrayLike) -> tuple[FloatArray, FloatArray]:
    r"""Kaplan-Meier estimate :math:`\hat S(t) = \prod_{t_k \le t} (1 - d_k / n_k)`.

    :math:`d_k` events among the :math:`n_k` patients still at risk at the unique time :math:`t_k`.
    Identical to ``sksurv.nonparametric.kaplan_meier_estimator`` and lifelines'
    ``KaplanMeierFitter``.

    Shape:
        time, event: ``(n,)``. Output: ``(t_unique, surv)``, both ``(U,)``: every unique observed
        time (events and censorings) and :math:`\hat S` just after it (right-continuous).

    Example:
        >>> t, s = kaplan_meier([1, 2, 2, 3, 4], [1, 1, 0, 1, 0])
        >>> t, s
        (array([1., 2., 3., 4.]), array([0.8, 0.6, 0.3, 0.3]))
    """
    t, e = _labels(time, event, "km")
    uniq, d, _, n = _counts(t, e)
    return uniq, np.cumprod(1.0 - d / n)


def censoring_km(
    time: ArrayLike, event: ArrayLike, ties: Ties = "events_first"
) -> tuple[FloatArray, FloatArray]:
    r"""Kaplan-Meier of the censoring distribution :math:`\hat G(t) = \hat P(C > t)` ("reverse KM").

    With :math:`c_k` censorings and :math:`d_k` events at the unique time :math:`t_k`:

    - ``ties="events_first"``: :math:`\hat G(t)=\prod_{t_k\le t}\bigl(1-\frac{c_k}{n_k-d_k}\bigr)`,
      events at a tied time leave the risk set before the censorings (scikit-survival's
      ``CensoringDistributionEstimator``, torchsurv's ``get_ipcw``). Then
      :math:`\hat S(t)\hat G(t) = \#\{T_i > t\}/n` exactly.
    - ``ties="simultaneous"``: :math:`\prod_{t_k\le t}(1 - c_k/n_k)`, the plain Kaplan-Meier of
      ``(time, 1 - event)`` (pycox's ``utils.kaplan_meier``, lifelines).

    Shape:
        time, event: ``(n,)``. Output: ``(t_unique, g)``, both ``(U,)``, right-continuous.

    Example:
        >>> censoring_km([1, 2, 2, 3], [1, 1, 0, 0])[1]
        array([1. , 0.5, 0. ])
        >>> censoring_km([1, 2, 2, 3], [1, 1, 0, 0], ties="simultaneous")[1]
        array([1.        , 0.66666667, 0.        ])
    """
    t, e = _labels(time, event, "censoring")
    uniq, d, c, n = _counts(t, e)
    at_risk = {"events_first": n - d, "simultaneous": n}[ties]
    ratio = np.divide(c, at_risk, out=np.zeros_like(c), where=c > 0)
    return uniq, np.cumprod(1.0 - ratio)


def _step_at(
    knots: FloatArray, values: FloatArray, x: FloatArray, side: Literal["right", "left"]
) -> FloatArray:
    """Right-continuous step function, 1 before the first knot: value at ``x`` or its left limit."""
    idx = np.searchsorted(knots, x, side=side) - 1
    return np.where(idx >= 0, values[np.clip(idx, 0, None)], 1.0)


def km_at(time: ArrayLike, event: ArrayLike, grid: ArrayLike) -> FloatArray:
    r"""Kaplan-Meier :math:`\hat S` read at ``grid`` as a right-continuous step function.

    :math:`\hat S(t) = 1` before the first observed time; beyond the last observed time the last
    value is held (the estimate is not identified there when the last time is censored).

    Shape:
        time, event: ``(n,)``; grid: ``(G,)`` any order. Output: ``(G,)``.

    Example:
        >>> km_at([1, 2, 2, 3, 4], [1, 1, 0, 1, 0], [0.5, 1.0, 2.5, 9.0])
        array([1. , 0.8, 0.6, 0.3])
    """
    uniq, s = kaplan_meier(time, event)
    g = _vector(grid, "grid")
    _fail_row("grid", ~np.isfinite(g), "are NaN or infinite", "finite times", "fix the grid")
    return _step_at(uniq, s, g, "right")


class _Ipcw:
    """The censoring survival :math:`\\hat G` of one IPCW setting, with its lookups and checks."""

    def __init__(self, time: FloatArray, event: NDArray[np.bool_], censoring: Censoring) -> None:
        ties: Ties = {"train": "events_first", "test": "simultaneous"}[censoring]
        self.censoring = censoring
        self.knots, self.values = censoring_km(time, event, ties)
        # the side at which an event's own time is read: G(T_i) (sksurv) or G(T_i-) (pycox)
        self.event_side: Literal["right", "left"] = {"train": "right", "test": "left"}[censoring]

    def at(
        self,
        x: FloatArray,
        side: Literal["right", "left"],
        rows: NDArray[np.bool_],
        what: str,
    ) -> FloatArray:
        """G at ``x`` (entries ``rows`` of ``what``); a DataError names the first bad one."""
        g = _step_at(self.knots, self.values, x, side)
        beyond = x > self.knots[-1]
        bad = (g <= 0) | (beyond & (self.values[-1] > 0))
        if bool(bad.any()):
            k = int(np.flatnonzero(bad)[0])
            row = int(np.flatnonzero(rows)[k])
            source = {"train": "training", "test": "test"}[self.censoring]
            raise DataError(
                f"IPCW undefined at {what} {row} (time {x[k]:g}): the censoring Kaplan-Meier of "
                f"the {source} labels is zero or not identified there",
                expected=f"grid times (and test event times up to the grid end) within the "
                f"{source} follow-up, where G(t) > 0 (last {source} time {self.knots[-1]:g})",
                found=f"G = {g[k]:g} at t = {x[k]:g}"
                + (", beyond the last time" if bool(beyond[k]) else ""),
                fix="clip the grid to the training follow-up, e.g. "
                "times = times[times < time_train.max()] (sksurv requires the same); for uno_c "
                "pass tau below that time",
            )
        return g


# ---------------------------------------------------------------------------------------------
# concordance


def _concordance(
    time: FloatArray,
    event: NDArray[np.bool_],
    risk: FloatArray,
    weight: FloatArray,
    tied_tol: float,
) -> Concordance:
    """sksurv's ``_estimate_concordance_index``, vectorised over blocks of events."""
    n = time.shape[0]
    events = np.flatnonzero(event)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    num = den = 0.0
    con_total = dis_total = tied_risk = tied_time = 0
    for start in range(0, events.shape[0], block):
        i = events[start : start + block]
        ti = time[i, None]
        same = time[None, :] == ti
        comparable = (time[None, :] > ti) | (same & ~event[None, :])
        diff = risk[None, :] - risk[i, None]
        ties = comparable & (np.abs(diff) <= tied_tol)
        con = comparable & (diff < 0) & ~ties
        n_comp, n_ties, n_con = comparable.sum(1), ties.sum(1), con.sum(1)
        num += float(weight[i] @ (n_con + 0.5 * n_ties))
        den += float(weight[i] @ n_comp)
        con_total += int(n_con.sum())
        tied_risk += int(n_ties.sum())
        dis_total += int((n_comp - n_con - n_ties).sum())
        tied_time += int((comparable & same).sum())
    if den <= 0:
        pairs = con_total + dis_total + tied_risk
        raise DataError(
            "no comparable pairs: the concordance index is undefined",
            expected="at least one event followed by a longer (event or censored) time",
            found=f"{events.shape[0]} event(s) among {n} patients, {pairs} comparable pair(s)"
            + (", all with zero IPCW weight (every event at or after tau)" if pairs else ""),
            fix="evaluate on a test set with observed events (for uno_c: a larger tau)",
        )
    return Concordance(num / den, con_total, dis_total, tied_risk, tied_time)


@overload
def harrell_c(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    *,
    tied_tol: float = ...,
    return_counts: Literal[False] = ...,
) -> float: ...
@overload
def harrell_c(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    *,
    tied_tol: float = ...,
    return_counts: Literal[True],
) -> Concordance: ...
def harrell_c(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    *,
    tied_tol: float = 1e-8,
    return_counts: bool = False,
) -> float | Concordance:
    r"""Harrell's concordance index, exactly as ``sksurv.metrics.concordance_index_censored``.

    .. math::
        C = \frac{\sum_{i,j} \delta_i\, \mathbb 1[(i,j)\ \text{comparable}]
        \bigl(\mathbb 1[r_i - r_j > \epsilon] + \tfrac12 \mathbb 1[|r_i - r_j| \le \epsilon]\bigr)}
        {\sum_{i,j} \delta_i\, \mathbb 1[(i,j)\ \text{comparable}]}

    A pair is comparable when :math:`i` has an event and :math:`T_j > T_i`, or :math:`T_j = T_i`
    with :math:`j` censored (two events at the same time are not comparable). Risk ties within
    :math:`\epsilon` = ``tied_tol`` count one half. lifelines' ``concordance_index`` takes
    survival-like scores: ``concordance_index(time, -risk, event)`` gives the same value, tied
    times and risks included.

    Shape:
        time, event, risk: ``(n,)``. Output: scalar, or :class:`Concordance` with the counts.

    Example:
        >>> harrell_c([1, 2, 3, 4], [1, 1, 0, 1], [4.0, 2.0, 3.0, 1.0])
        0.8
    """
    t, e = _labels(time, event, "test")
    r = _risk(risk, t.shape[0])
    result = _concordance(t, e, r, np.ones_like(t), tied_tol)
    return result if return_counts else result.cindex


@overload
def uno_c(
    time_train: ArrayLike,
    event_train: ArrayLike,
    time_test: ArrayLike,
    event_test: ArrayLike,
    risk: ArrayLike,
    tau: float | None = ...,
    *,
    tied_tol: float = ...,
    return_counts: Literal[False] = ...,
) -> float: ...
@overload
def uno_c(
    time_train: ArrayLike,
    event_train: ArrayLike,
    time_test: ArrayLike,
    event_test: ArrayLike,
    risk: ArrayLike,
    tau: float | None = ...,
    *,
    tied_tol: float = ...,
    return_counts: Literal[True],
) -> Concordance: ...
def uno_c(
    time_train: ArrayLike,
    event_train: ArrayLike,
    time_test: ArrayLike,
    event_test: ArrayLike,
    risk: ArrayLike,
    tau: float | None = None,
    *,
    tied_tol: float = 1e-8,
    return_counts: bool = False,
) -> float | Concordance:
    r"""Uno's IPCW concordance, exactly as ``sksurv.metrics.concordance_index_ipcw``.

    Harrell's sums (see :func:`harrell_c`) with each event :math:`i` weighted by
    :math:`w_i = \hat G(T_i)^{-2}\,\mathbb 1[T_i < \tau]`, :math:`\hat G` the censoring
    Kaplan-Meier of the **training** labels (:func:`censoring_km`, ``events_first``, read at
    :math:`T_i` right-continuously, as sksurv does).

    Shape:
        ``*_train``: ``(m,)``; ``time_test, event_test, risk``: ``(n,)``. Output: scalar or
        :class:`Concordance` (its counts are unweighted).

    Raises:
        DataError: when a test event before ``tau`` lies beyond the training follow-up (or where
        :math:`\hat G = 0`): pass ``tau`` below the last training time.

    Example:
        >>> uno_c([1, 2, 3, 4, 5], [1, 0, 1, 0, 0], [1, 2, 3], [1, 1, 0], [3.0, 2.0, 1.0])
        1.0
    """
    t_tr, e_tr = _labels(time_train, event_train, "train")
    t, e = _labels(time_test, event_test, "test")
    r = _risk(risk, t.shape[0])
    use = e & (t < tau) if tau is not None else e.copy()
    weight = np.zeros_like(t)
    g = _Ipcw(t_tr, e_tr, "train").at(t[use], "right", use, "test row")
    weight[use] = 1.0 / np.square(g)
    result = _concordance(t, e, r, weight, tied_tol)
    return result if return_counts else result.cindex


def _grid_index(times: FloatArray, t: FloatArray) -> NDArray[np.intp]:
    """pycox's ``idx_at_times(..., steps="post")``: last grid index <= t, clipped into the grid."""
    return np.clip(np.searchsorted(times, t, side="right") - 1, 0, times.shape[0] - 1)


def _antolini_block(
    a: NDArray[np.intp],
    time: FloatArray,
    event: NDArray[np.bool_],
    s_own: FloatArray,
    s_other: FloatArray,
) -> tuple[float, float]:
    """Antolini et al.: event rows ``a`` against all, concordant iff S_a(T_a) < S_j(T_a)."""
    ta, tb = time[a, None], time[None, :]
    comparable = event[a, None] & ((tb > ta) | ((tb == ta) & ~event[None, :]))
    concordant = comparable & (s_own[a, None] < s_other)
    return float(concordant.sum()), float(comparable.sum())


def _adj_antolini_block(
    a: NDArray[np.intp],
    time: FloatArray,
    event: NDArray[np.bool_],
    s_own: FloatArray,
    s_other: FloatArray,
) -> tuple[float, float]:
    """pycox's ``adj_antolini`` over ordered pairs (a, b), a != b (``_is_concordant``)."""
    n = time.shape[0]
    ta, tb = time[a, None], time[None, :]
    da, db = event[a, None], event[None, :]
    sa = s_own[a, None]
    not_self = a[:, None] != np.arange(n)[None, :]
    lower, equal, higher = sa < s_other, sa == s_other, sa > s_other
    before = (ta < tb) & da
    tied = (ta == tb) & not_self
    comparable = before | (tied & (da | db))
    half = 0.5 * equal
    conc = np.where(before, lower + half, 0.0)
    conc += np.where(tied & da & db, 1.0 - 0.5 * ~equal, 0.0)
    conc += np.where(tied & da & ~db, lower + half, 0.0)
    conc += np.where(tied & ~da & db, higher + half, 0.0)
    return float(conc.sum()), float(comparable.sum())


_ANTOLINI: dict[str, Callable[..., tuple[float, float]]] = {
    "antolini": _antolini_block,
    "adj_antolini": _adj_antolini_block,
}


def antolini_c(
    time: ArrayLike,
    event: ArrayLike,
    surv: ArrayLike,
    times: ArrayLike,
    variant: AntoliniVariant = "antolini",
) -> float:
    r"""Time-dependent concordance :math:`C^{td}` of Antolini, Boracchi & Biganzoli (2005).

    Each curve is read at the event time of the earlier patient of a pair, as a right-continuous
    step function on the grid: :math:`\hat S_j(T_i) = \text{surv}[j, k_i]` with :math:`k_i` the
    last grid index with :math:`\text{times}_{k} \le T_i`, **clipped into the grid** (a time before
    ``times[0]`` reads the first column) exactly as pycox's ``EvalSurv`` with ``steps="post"``.

    - ``variant="antolini"`` (pycox ``concordance_td("antolini")``): comparable pairs are those of
      :func:`harrell_c`; a pair is concordant iff :math:`\hat S_i(T_i) < \hat S_j(T_i)` (ties in the
      predictions count 0).

      .. math::
          C^{td} = \frac{\sum_{i,j} \delta_i \mathbb 1[\text{comp}_{ij}]
          \mathbb 1[\hat S_i(T_i) < \hat S_j(T_i)]}{\sum_{i,j}\delta_i \mathbb 1[\text{comp}_{ij}]}

    - ``variant="adj_antolini"`` (pycox's default ``concordance_td()``, used by DPsurv): ordered
      pairs :math:`(i, j)`, :math:`i \ne j`, are comparable when :math:`T_i < T_j` with
      :math:`\delta_i = 1`, **or** :math:`T_i = T_j` with at least one event (so tied event times
      are comparable, and every tied pair is counted in both orders). With
      :math:`s_i = \hat S_i(T_i), s_j = \hat S_j(T_i)` the pair scores
      :math:`\mathbb 1[s_i < s_j] + \frac12 \mathbb 1[s_i = s_j]` if :math:`T_i < T_j` or only
      :math:`i` has the event; :math:`\mathbb 1[s_i > s_j] + \frac12\mathbb 1[s_i = s_j]` if only
      :math:`j` has it; and :math:`1 - \frac12\mathbb 1[s_i \ne s_j]` if both do (1 for equal
      predictions, 1/2 otherwise, following Ishwaran et al.'s RSF paper, Sec. 5.1 step 3).

    For curves that do not cross (e.g. a Cox model) ``antolini`` equals :func:`harrell_c` up to
    ties in the risk. Memory is :math:`O(n \cdot \text{block})`, time :math:`O(n^2)`.

    Shape:
        time, event: ``(n,)``; surv: ``(n, T)``; times: ``(T,)``. Output: scalar.

    Example:
        >>> surv = [[0.9, 0.2], [0.95, 0.8], [0.99, 0.9]]
        >>> antolini_c([1.0, 2.0, 3.0], [1, 1, 0], surv, [1.0, 2.0])
        1.0
    """
    t, e = _labels(time, event, "test")
    g = _grid(times)
    s = _curves(surv, t.shape[0], g.shape[0])
    k = _grid_index(g, t)
    s_own = s[np.arange(t.shape[0]), k]
    block_fn = _ANTOLINI[variant]
    rows = np.flatnonzero(e) if variant == "antolini" else np.arange(t.shape[0])
    block = max(1, _BLOCK_ELEMENTS // max(t.shape[0], 1))
    num = den = 0.0
    for start in range(0, rows.shape[0], block):
        a = rows[start : start + block]
        c, m = block_fn(a, t, e, s_own, s[:, k[a]].T)
        num, den = num + c, den + m
    if den <= 0:
        raise DataError(
            "no comparable pairs: the time-dependent concordance is undefined",
            expected="at least one event followed by a longer time",
            found=f"{int(e.sum())} event(s) among {t.shape[0]} patients",
            fix="evaluate on a larger test set with observed events",
        )
    return num / den


# ---------------------------------------------------------------------------------------------
# IPCW Brier score and binomial log-likelihood


def _brier_terms(s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-patient losses of a case (event by t: target 0) and a control (alive at t: target 1)."""
    return np.square(s), np.square(1.0 - s)


def _nbll_terms(s: FloatArray) -> tuple[FloatArray, FloatArray]:
    sc = np.clip(s, _NBLL_EPS, 1.0 - _NBLL_EPS)
    return -np.log1p(-sc), -np.log(sc)


_LOSSES: dict[str, Callable[[FloatArray], tuple[FloatArray, FloatArray]]] = {
    "brier": _brier_terms,
    "nbll": _nbll_terms,
}


def _ipcw_score(
    loss: str,
    time_train: ArrayLike | None,
    event_train: ArrayLike | None,
    time_test: ArrayLike,
    event_test: ArrayLike,
    surv: ArrayLike,
    times: ArrayLike,
    censoring: Censoring,
) -> tuple[FloatArray, FloatArray]:
    """``(times, score(t))`` of an IPCW-weighted per-time loss (the shared Graf machinery)."""
    t, e = _labels(time_test, event_test, "test")
    g = _grid(times)
    s = _curves(surv, t.shape[0], g.shape[0])
    if censoring == "train":
        if time_train is None or event_train is None:
            raise DataError(
                'censoring="train" needs the training labels',
                expected="time_train and event_train arrays",
                found="None",
                fix='pass the training labels, or censoring="test" to estimate G on the test set',
            )
        ref_t, ref_e = _labels(time_train, event_train, "train")
    else:
        ref_t, ref_e = t, e
    ipcw = _Ipcw(ref_t, ref_e, censoring)

    case = e[:, None] & (t[:, None] <= g[None, :])
    control = t[:, None] > g[None, :]
    w_case = np.zeros_like(t)
    needs = e & (t <= g[-1])
    w_case[needs] = 1.0 / ipcw.at(t[needs], ipcw.event_side, needs, "test row")
    w_control = np.zeros_like(g)
    used = control.any(axis=0)
    w_control[used] = 1.0 / ipcw.at(g[used], "right", used, "grid index")
    weight = case * w_case[:, None] + control * w_control[None, :]

    loss_case, loss_control = _LOSSES[loss](s)
    total = np.sum(case * loss_case * w_case[:, None] + control * loss_control * w_control, axis=0)
    norm = {"train": np.full(g.shape, float(t.shape[0])), "test": weight.sum(axis=0)}[censoring]
    return g, total / norm


def _integrate(times: FloatArray, values: FloatArray, rule: Rule) -> float:
    if times.shape[0] < 2:
        raise DataError(
            "an integrated score needs at least two grid times",
            expected="times of length >= 2",
            found=f"{times.shape[0]} time(s)",
            fix="use brier_score / nbll for a single time point",
        )
    quad = {"trapezoid": np.trapezoid, "simpson": integrate.simpson}[rule]
    return float(quad(values, x=times) / (times[-1] - times[0]))


def brier_score(
    time_train: ArrayLike | None,
    event_train: ArrayLike | None,
    time_test: ArrayLike,
    event_test: ArrayLike,
    surv: ArrayLike,
    times: ArrayLike,
    *,
    censoring: Censoring = "train",
) -> FloatArray:
    r"""Graf et al. (1999) IPCW Brier score at each grid time.

    .. math::
        \mathrm{BS}(t) = \frac{1}{W(t)} \sum_{i=1}^n \Bigl[
        \frac{\mathbb 1[T_i \le t, \delta_i = 1]\, \hat S_i(t)^2}{\hat G(T_i)}
        + \frac{\mathbb 1[T_i > t]\, (1 - \hat S_i(t))^2}{\hat G(t)} \Bigr]

    ``censoring="train"``: :math:`W = n`, :math:`\hat G` from the training labels, read at
    :math:`T_i` (``sksurv.metrics.brier_score``; torchsurv's ``BrierScore`` with ``get_ipcw``
    weights from the training labels). ``censoring="test"``: :math:`\hat G` from the test labels,
    read at :math:`T_i-`, :math:`W(t)` = the sum of the weights (pycox ``EvalSurv.brier_score``
    with ``censor_surv="km"``); ``time_train`` / ``event_train`` may then be ``None``.

    Shape:
        ``*_train``: ``(m,)``; ``*_test``: ``(n,)``; surv: ``(n, T)``; times: ``(T,)``.
        Output: ``(T,)``.

    Raises:
        DataError: where a needed :math:`\hat G` is zero or not identified (grid beyond the
        follow-up of the censoring labels): clip the grid to the training follow-up. Only the
        weights actually used are checked: unlike sksurv, a censored test time or an event after
        the grid end beyond the training follow-up raises nothing.

    Example:
        >>> surv = [[0.2, 0.1], [0.9, 0.8]]
        >>> brier_score(None, None, [1.0, 2.0], [1, 1], surv, [1.0, 1.5], censoring="test")
        array([0.025, 0.025])
    """
    return _ipcw_score(
        "brier", time_train, event_train, time_test, event_test, surv, times, censoring
    )[1]


def integrated_brier_score(
    time_train: ArrayLike | None,
    event_train: ArrayLike | None,
    time_test: ArrayLike,
    event_test: ArrayLike,
    surv: ArrayLike,
    times: ArrayLike,
    *,
    censoring: Censoring = "train",
    rule: Rule = "trapezoid",
) -> float:
    r"""Integrated Brier score :math:`\frac{1}{t_T - t_1}\int_{t_1}^{t_T} \mathrm{BS}(t)\,dt`.

    The integral runs over the grid with ``rule``: the trapezoid reproduces
    ``sksurv.metrics.integrated_brier_score`` (with ``censoring="train"``) and torchsurv's
    ``BrierScore.integral``; ``censoring="test", rule="simpson"`` reproduces pycox's
    ``EvalSurv(surv, durations, events, censor_surv="km").integrated_brier_score(times)``, the
    setting of the DPsurv paper. See :func:`brier_score` for the weights.

    Shape:
        as :func:`brier_score` with ``T >= 2``. Output: scalar.
    """
    g, bs = _ipcw_score(
        "brier", time_train, event_train, time_test, event_test, surv, times, censoring
    )
    return _integrate(g, bs, rule)


def nbll(
    time_train: ArrayLike | None,
    event_train: ArrayLike | None,
    time_test: ArrayLike,
    event_test: ArrayLike,
    surv: ArrayLike,
    times: ArrayLike,
    *,
    censoring: Censoring = "train",
) -> FloatArray:
    r"""IPCW negative binomial log-likelihood at each grid time (pycox's ``EvalSurv.nbll``).

    .. math::
        \mathrm{NBLL}(t) = -\frac{1}{W(t)} \sum_{i=1}^n \Bigl[
        \frac{\mathbb 1[T_i \le t, \delta_i = 1] \log(1 - \hat S_i(t))}{\hat G(T_i)}
        + \frac{\mathbb 1[T_i > t] \log \hat S_i(t)}{\hat G(t)} \Bigr]

    with :math:`\hat S` clipped to :math:`[10^{-7}, 1 - 10^{-7}]` and the same weights and
    normaliser :math:`W` as :func:`brier_score`.

    Shape:
        as :func:`brier_score`. Output: ``(T,)``.
    """
    return _ipcw_score(
        "nbll", time_train, event_train, time_test, event_test, surv, times, censoring
    )[1]


def integrated_nbll(
    time_train: ArrayLike | None,
    event_train: ArrayLike | None,
    time_test: ArrayLike,
    event_test: ArrayLike,
    surv: ArrayLike,
    times: ArrayLike,
    *,
    censoring: Censoring = "train",
    rule: Rule = "trapezoid",
) -> float:
    r"""Integrated NBLL :math:`\frac{1}{t_T - t_1}\int_{t_1}^{t_T} \mathrm{NBLL}(t)\,dt`.

    ``censoring="test", rule="simpson"`` is pycox's ``EvalSurv.integrated_nbll`` (DPsurv's INBLL).

    Shape:
        as :func:`brier_score` with ``T >= 2``. Output: scalar.
    """
    g, score = _ipcw_score(
        "nbll", time_train, event_train, time_test, event_test, surv, times, censoring
    )
    return _integrate(g, score, rule)


# ---------------------------------------------------------------------------------------------
# calibration and coverage


def surv_at(
    surv: ArrayLike, times: ArrayLike, t: ArrayLike, *, interpolation: Interpolation = "linear"
) -> FloatArray:
    r"""Each patient's predicted survival at their own time, :math:`\hat S_i(t_i)`.

    ``"step"``: right-continuous step function, 1 before ``times[0]``. ``"linear"``: linear
    interpolation between grid points, from :math:`\hat S(0) = 1` when ``times[0] > 0``. Both hold
    the last column beyond ``times[-1]`` (extend the grid to the follow-up to avoid that).

    Shape:
        surv: ``(n, T)``; times: ``(T,)``; t: ``(n,)``. Output: ``(n,)``.

    Example:
        >>> surv_at([[0.8, 0.4]], [1.0, 2.0], [1.5])
        array([0.6])
        >>> surv_at([[0.8, 0.4]], [1.0, 2.0], [1.5], interpolation="step")
        array([0.8])
    """
    g = _grid(times)
    x = _vector(t, "t")
    _fail_row("t", ~np.isfinite(x), "are NaN or infinite", "finite times", "fix the times")
    s = _curves(surv, x.shape[0], g.shape[0])
    return _SURV_AT[interpolation](s, g, x)


def _surv_at_step(s: FloatArray, g: FloatArray, x: FloatArray) -> FloatArray:
    idx = np.searchsorted(g, x, side="right") - 1
    return np.where(idx >= 0, s[np.arange(x.shape[0]), np.clip(idx, 0, None)], 1.0)


def _surv_at_linear(s: FloatArray, g: FloatArray, x: FloatArray) -> FloatArray:
    if g[0] > 0:  # anchor S(0) = 1
        g, s = np.concatenate(([0.0], g)), np.concatenate((np.ones((s.shape[0], 1)), s), axis=1)
    if g.shape[0] == 1:
        return s[:, 0].copy()
    rows = np.arange(x.shape[0])
    k = np.clip(np.searchsorted(g, x, side="right") - 1, 0, g.shape[0] - 2)
    frac = np.clip((x - g[k]) / (g[k + 1] - g[k]), 0.0, 1.0)
    return s[rows, k] + frac * (s[rows, k + 1] - s[rows, k])


_SURV_AT: dict[str, Callable[[FloatArray, FloatArray, FloatArray], FloatArray]] = {
    "step": _surv_at_step,
    "linear": _surv_at_linear,
}


def d_calibration(
    time: ArrayLike,
    event: ArrayLike,
    surv: ArrayLike,
    times: ArrayLike,
    n_bins: int = 10,
    *,
    interpolation: Interpolation = "linear",
) -> DCalibration:
    r"""Distribution calibration (Haider et al., JMLR 2020) of individual survival curves.

    If the curves are calibrated, :math:`U_i = \hat S_i(T_i^{\text{true}})` is uniform on
    :math:`[0, 1]`. An event contributes 1 to the bin of :math:`p_i = \hat S_i(T_i)`. A patient
    censored at :math:`c_i` has :math:`U_i \sim \mathcal U[0, p_i]` (the event comes later, at a
    lower survival), so its unit mass is spread uniformly over the bins at or below
    :math:`p_i`: bin :math:`[a, b)` receives :math:`(\min(b, p_i) - a)^+ / p_i` (all of it to the
    lowest bin when :math:`p_i = 0`). The statistic is Pearson's
    :math:`\chi^2 = \sum_b (O_b - n/B)^2 / (n/B)` with :math:`B - 1` degrees of freedom, as in
    SurvivalEVAL's ``d_calibration``. :math:`p_i` is read with :func:`surv_at`.

    Shape:
        time, event: ``(n,)``; surv: ``(n, T)``; times: ``(T,)``. Output: :class:`DCalibration`.
    """
    t, e = _labels(time, event, "test")
    if n_bins < 2:
        raise DataError(
            "d_calibration needs at least two bins",
            expected="n_bins >= 2",
            found=n_bins,
            fix="use the customary n_bins=10",
        )
    p = surv_at(surv, times, t, interpolation=interpolation)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(
        np.clip(np.searchsorted(edges, p[e], side="right") - 1, 0, n_bins - 1),
        minlength=n_bins,
    ).astype(np.float64)
    pc = p[~e]
    if pc.size:
        overlap = np.clip(np.minimum(edges[None, 1:], pc[:, None]) - edges[None, :-1], 0.0, None)
        zero = pc <= 0
        share = np.divide(overlap, pc[:, None], out=np.zeros_like(overlap), where=~zero[:, None])
        share[zero, 0] = 1.0
        counts += share.sum(axis=0)
    n = float(t.shape[0])
    expected = n / n_bins
    statistic = float(np.sum(np.square(counts - expected)) / expected)
    return DCalibration(counts / n, statistic, float(stats.chi2.sf(statistic, n_bins - 1)))


def interval_coverage(
    time: ArrayLike,
    event: ArrayLike,
    s_low: ArrayLike,
    s_up: ArrayLike,
    times: ArrayLike,
) -> float:
    r"""Share of grid times at which the group's Kaplan-Meier lies in its mean predicted band.

    .. math::
        \mathrm{cov} = \frac1T \sum_{k=1}^T \mathbb 1\Bigl[\tfrac1n\sum_i s^{low}_{ik} \le
        \hat S_{KM}(t_k) \le \tfrac1n \sum_i s^{up}_{ik}\Bigr]

    with :math:`\hat S_{KM}` from :func:`km_at` on the same patients (DPsurv's belief/plausibility
    band ``[1 - Pl, 1 - Bel]`` is the intended input).

    Shape:
        time, event: ``(n,)``; s_low, s_up: ``(n, T)``; times: ``(T,)``. Output: scalar in [0, 1].

    Example:
        >>> interval_coverage([1, 2, 3], [1, 1, 1], [[0.5, 0.0]] * 3, [[0.9, 0.5]] * 3, [1.5, 2.5])
        1.0
    """
    t, e = _labels(time, event, "test")
    g = _grid(times)
    lo = _curves(s_low, t.shape[0], g.shape[0], "s_low")
    up = _curves(s_up, t.shape[0], g.shape[0], "s_up")
    _fail_row(
        "s_low / s_up",
        np.any(lo > up + _PROB_TOL, axis=1),
        "have s_low > s_up",
        "s_low <= s_up elementwise (lower and upper survival bounds)",
        "pass the lower bound (1 - Pl) as s_low and the upper (1 - Bel) as s_up",
    )
    km = _step_at(*kaplan_meier(t, e), g, "right")
    inside = (km >= lo.mean(axis=0)) & (km <= up.mean(axis=0))
    return float(inside.mean())


def tercile_coverage(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    s_low: ArrayLike,
    s_up: ArrayLike,
    times: ArrayLike,
) -> dict[str, float]:
    """:func:`interval_coverage` within each risk tercile.

    Patients are sorted by ``risk`` (stable, so ties keep their row order) and cut into three
    groups of sizes differing by at most one (``np.array_split``).

    Shape:
        time, event, risk: ``(n >= 3,)``; s_low, s_up: ``(n, T)``; times: ``(T,)``.
        Output: ``{"low_risk", "mid_risk", "high_risk"}`` -> coverage.
    """
    t, e = _labels(time, event, "test")
    r = _risk(risk, t.shape[0])
    g = _grid(times)
    lo = _curves(s_low, t.shape[0], g.shape[0], "s_low")
    up = _curves(s_up, t.shape[0], g.shape[0], "s_up")
    if t.shape[0] < 3:
        raise DataError(
            "tercile_coverage needs at least three patients",
            expected="n >= 3",
            found=t.shape[0],
            fix="use interval_coverage on the whole group",
        )
    groups = np.array_split(np.argsort(r, kind="stable"), 3)
    names = ("low_risk", "mid_risk", "high_risk")
    return {
        name: interval_coverage(t[idx], e[idx], lo[idx], up[idx], g)
        for name, idx in zip(names, groups, strict=True)
    }


def band_interval(
    s_low: ArrayLike, s_up: ArrayLike, times: ArrayLike, alpha: float | ArrayLike
) -> tuple[FloatArray, FloatArray]:
    r"""Each patient's event-time interval :math:`[L_i, U_i]` read off a survival band.

    :math:`L_i` is the first grid time at which the pessimistic curve ``s_low`` reaches
    :math:`1 - \alpha/2` and :math:`U_i` the first at which the optimistic curve ``s_up`` reaches
    :math:`\alpha/2`. Every survival curve :math:`S` inside the band then gives the interval a
    probability :math:`S(L_i-) - S(U_i) \ge 1 - \alpha` (up to the grid step): it is the
    credal (lower-probability) :math:`1-\alpha` interval of the band. :math:`L_i = 0` when
    ``s_low`` is already below :math:`1 - \alpha/2` at the first grid time; :math:`U_i = +\infty`
    (open) when ``s_up`` stays above :math:`\alpha/2` on the whole grid. A band of width 0 gives the
    central :math:`1-\alpha` prediction interval of the curve.

    Shape:
        s_low, s_up: ``(n, T)``; times: ``(T,)``; alpha: scalar or ``(n,)`` in ``(0, 1]``.
        Output: ``(lower (n,), upper (n,))``.

    Example:
        >>> band_interval([[0.99, 0.9, 0.5, 0.1, 0.01]], [[1.0, 0.95, 0.7, 0.3, 0.04]],
        ...               [1.0, 2.0, 3.0, 4.0, 5.0], 0.1)
        (array([2.]), array([5.]))
    """
    g = _grid(times)
    lo = np.atleast_2d(np.asarray(s_low, dtype=np.float64))
    up = _curves(s_up, lo.shape[0], g.shape[0], "s_up")
    lo = _curves(lo, lo.shape[0], g.shape[0], "s_low")
    a = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (lo.shape[0],))
    _fail_row(
        "alpha",
        ~((a > 0) & (a <= 1)),
        "are outside (0, 1]",
        "the miss rate alpha = 1 - level, e.g. 0.1 for a 90% interval",
        "pass alpha = 1 - nominal level",
    )
    first_lo = lo <= (1.0 - a / 2.0)[:, None]
    first_up = up <= (a / 2.0)[:, None]
    k_lo, k_up = first_lo.argmax(1), first_up.argmax(1)
    lower = np.where(first_lo.any(1), g[k_lo], np.inf)
    lower = np.where(first_lo[:, 0], 0.0, lower)
    upper = np.where(first_up.any(1), g[k_up], np.inf)
    return lower, upper


def ipcw_interval_coverage(
    time: ArrayLike,
    event: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    *,
    per_case: bool = False,
) -> float | FloatArray:
    r"""Censoring-aware hit rate :math:`P(L_i \le T_i \le U_i)` of per-patient time intervals.

    A miss is either an event before the interval or survival past it. Both are observed
    without bias once weighted by the inverse probability of staying uncensored
    (Graf et al. 1999):

    .. math::
        \widehat{\mathrm{cov}} = 1 - \frac1n\sum_i \Bigl[\frac{\delta_i\,
        \mathbb 1(Y_i < L_i)}{\hat G(Y_i-)} + \frac{\mathbb 1(Y_i > U_i)}{\hat G(U_i)}\Bigr]

    with :math:`Y_i` the observed time, :math:`\delta_i` the event indicator and :math:`\hat G`
    the censoring Kaplan-Meier of the same patients (:func:`censoring_km`, events first at ties),
    valid under censoring independent of the event time. Both weights are always defined: a
    patient observed past :math:`U_i` keeps :math:`\hat G(U_i) > 0`. With the same interval for
    everyone the estimate equals :math:`\hat S_{KM}(L-) - \hat S_{KM}(U)` exactly. An upper end
    :math:`U_i = +\infty` (open, see :func:`band_interval`) never counts a late miss, so
    the estimate is the coverage of the event time restricted to the grid of the band.

    Shape:
        time, event, lower, upper: ``(n,)``. Output: scalar, or ``(n,)`` per-patient terms
        (1 minus the two weighted misses; their mean is the estimate) with ``per_case=True``.

    Example:
        >>> ipcw_interval_coverage([1, 2, 3, 4], [1, 1, 1, 1], [0, 0, 0, 0], [2.5] * 4)
        0.5
    """
    t, e = _labels(time, event, "test")
    lo = _vector(lower, "lower")
    up = _vector(upper, "upper")
    if lo.shape != t.shape or up.shape != t.shape:
        raise DataError(
            "lower / upper do not match the labels",
            expected=f"{t.shape[0]} interval ends each, one per patient",
            found=f"{lo.shape[0]} lower and {up.shape[0]} upper ends",
            fix="pass one interval per patient, in the label order (see band_interval)",
        )
    _fail_row(
        "lower / upper",
        np.isnan(lo) | np.isnan(up) | (lo > up),
        "are NaN or have lower > upper",
        "lower <= upper (upper may be inf)",
        "check the interval ends",
    )
    knots, g = censoring_km(t, e, "events_first")
    early = e & (t < lo)
    g_event = _step_at(knots, g, t, "left")
    late = t > up
    g_up = _step_at(knots, g, np.where(late, up, 0.0), "right")
    miss = np.divide(early.astype(np.float64), g_event, out=np.zeros_like(t), where=early)
    miss += np.divide(late.astype(np.float64), g_up, out=np.zeros_like(t), where=late)
    terms = 1.0 - miss
    return terms if per_case else float(terms.mean())


def survival_metrics(
    time_train: ArrayLike,
    event_train: ArrayLike,
    time_test: ArrayLike,
    event_test: ArrayLike,
    surv: ArrayLike,
    times: ArrayLike,
    risk: ArrayLike,
    *,
    tau: float | None = None,
    censoring: Censoring = "train",
    rule: Rule = "trapezoid",
    antolini: AntoliniVariant = "antolini",
    n_bins: int = 10,
) -> dict[str, float]:
    """The usual report: Harrell, Uno, Antolini, IBS, INBLL and the D-calibration p-value.

    ``censoring``/``rule`` apply to IBS and INBLL; ``uno_c`` always uses the training labels.
    For DPsurv-comparable numbers pass ``censoring="test", rule="simpson",
    antolini="adj_antolini"``.

    Shape:
        ``*_train``: ``(m,)``; ``*_test``, risk: ``(n,)``; surv: ``(n, T)``; times: ``(T,)``.
        Output: ``{"harrell_c", "uno_c", "antolini_c", "ibs", "inbll", "d_calibration_p"}``.
    """
    ipcw = (time_train, event_train, time_test, event_test, surv, times)
    return {
        "harrell_c": harrell_c(time_test, event_test, risk),
        "uno_c": uno_c(time_train, event_train, time_test, event_test, risk, tau),
        "antolini_c": antolini_c(time_test, event_test, surv, times, antolini),
        "ibs": integrated_brier_score(*ipcw, censoring=censoring, rule=rule),
        "inbll": integrated_nbll(*ipcw, censoring=censoring, rule=rule),
        "d_calibration_p": d_calibration(time_test, event_test, surv, times, n_bins).p_value,
    }
