r"""Composable reward terms, weighted in config (DeepEN reward; weights inferred).

A term maps per-step features to one reward per step. It is called with

* ``df``: a :class:`pandas.DataFrame` with one row per step, sorted by (patient, time), holding
  at least the columns the term names (``term.columns``);
* ``last``: ``(N,)`` bool, the last step of each episode;
* ``died``: ``(N,)`` bool, per row: this row's patient died;

and returns ``(N,)`` float64. A *transition* term rewards step :math:`t` with the features at
:math:`t+1` (the state the action led to): :math:`r_t = f(x_t, x_{t+1})`, and is 0 at the last
step of an episode, where there is no next state. Missing (NaN) features make the affected part
0. The full DeepEN-style reward is

.. math::
    r_t = w_T\,r^{T}_t + w_{SL}\,r^{SL}_t + \sum_{b \in \{glu, PO_4, Na\}} w_b\,r^{b}_t
          + w_N\,r^{N}_t,

built by :func:`build_reward` from a :class:`RewardSpec`. ``CompositeReward.parts`` returns each
weighted term, for ablations and plots (they sum to the total).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from clinfuse.core.errors import ConfigError, DataError

__all__ = [
    "BiomarkerInRange",
    "CompositeReward",
    "NutritionGoal",
    "RewardSpec",
    "RewardTerm",
    "SofaLactate",
    "TerminalSurvival",
    "build_reward",
    "last_steps",
]

log = logging.getLogger(__name__)


@runtime_checkable
class RewardTerm(Protocol):
    """One reward term (see the module docstring for the call convention)."""

    @property
    def columns(self) -> tuple[str, ...]:
        """Feature columns the term reads from ``df``."""
        ...

    def __call__(self, df: pd.DataFrame, last: np.ndarray, died: np.ndarray) -> np.ndarray: ...


# -- helpers ---------------------------------------------------------------------------------
def last_steps(patient: np.ndarray | pd.Series | Sequence[int]) -> np.ndarray:
    """``(N,)`` bool: the row is the last of its patient's run of rows (rows grouped by patient).

    Example:
        >>> last_steps([3, 3, 5, 7, 7, 7]).tolist()
        [False, True, True, False, False, True]
    """
    p = np.asarray(patient)
    return np.append(p[1:] != p[:-1], True) if len(p) else np.zeros(0, bool)


def _flags(x: np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.shape != (n,) or arr.dtype != bool:
        raise DataError(
            f"{name!r} must be a bool array with one entry per row of df",
            expected=f"shape ({n},), dtype bool",
            found=f"shape {arr.shape}, dtype {arr.dtype}",
            fix="last = rewards.last_steps(df['patient']); died = per-row outcome as bool",
        )
    return arr


def _check(
    df: pd.DataFrame, last: np.ndarray, died: np.ndarray, columns: Iterable[str], who: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate the call arguments of a term; return ``last`` and ``died`` as bool arrays."""
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        raise DataError(
            f"{who} needs column(s) {missing} that the step frame lacks",
            expected=f"columns {list(dict.fromkeys(columns))}",
            found=f"available columns {[str(c) for c in df.columns]}",
            fix="add the feature(s), rename them with the term's column arguments, or set the "
            "term's weight to 0",
        )
    n = len(df)
    last = _flags(last, n, "last")
    died = _flags(died, n, "died")
    if n and not last[-1]:
        raise DataError(
            "the final row must be the last step of an episode",
            expected="last[-1] == True",
            found="False",
            fix="compute last with rewards.last_steps(df['patient'])",
        )
    if "patient" in df.columns and not np.array_equal(last, last_steps(df["patient"])):
        i = int(np.nonzero(last != last_steps(df["patient"]))[0][0])
        raise DataError(
            f"'last' disagrees with the patient column at row {i}",
            expected="last[i] == (patient[i + 1] != patient[i]), rows sorted by (patient, time)",
            found=f"last[{i}] = {bool(last[i])}",
            fix="sort by (patient, time) and compute last with rewards.last_steps",
        )
    return last, died


def _col(df: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as float64 (missing values -> NaN); DataError if it is not numeric."""
    try:
        values = pd.to_numeric(df[name], errors="raise")
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"column {name!r} is not numeric",
            expected="numbers, with NaN/None for missing values",
            found=str(exc),
            fix=f"convert {name!r} to numbers (units as in the term's docstring)",
        ) from None
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _next(x: np.ndarray, last: np.ndarray) -> np.ndarray:
    """``x[t + 1]`` within the episode, NaN at the last step."""
    nxt = np.full_like(x, np.nan)
    nxt[:-1] = x[1:]
    nxt[last] = np.nan
    return nxt


# -- terms -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TerminalSurvival:
    r"""Outcome reward at the last step: :math:`r_t = \mathbb{1}[t = T]\,(+V` if survived,
    :math:`-V` if died) (Raghu et al. 2017: :math:`V = 15`)."""

    value: float = 15.0
    """Magnitude :math:`V` of the terminal reward."""

    @property
    def columns(self) -> tuple[str, ...]:
        return ()

    def __call__(self, df: pd.DataFrame, last: np.ndarray, died: np.ndarray) -> np.ndarray:
        last, died = _check(df, last, died, self.columns, "TerminalSurvival")
        return np.where(last, np.where(died, -self.value, self.value), 0.0).astype(np.float64)


@dataclass(frozen=True)
class SofaLactate:
    r"""Intermediate physiological reward of Raghu et al. (2017), a transition term:

    .. math::
        r_t = c_0\,\mathbb{1}[S_{t+1} = S_t > 0] + c_1\,(S_{t+1} - S_t)
              + c_2 \tanh(L_{t+1} - L_t)

    with :math:`S` the SOFA score and :math:`L` the lactate (mmol/L). A missing SOFA pair zeroes
    the SOFA parts, a missing lactate pair the lactate part.
    """

    c0: float = -0.025
    """Penalty for a SOFA score that stays the same (and above 0)."""
    c1: float = -0.125
    """Weight of the SOFA change (a rise is penalised)."""
    c2: float = -2.0
    """Weight of tanh of the lactate change (a rise is penalised)."""
    sofa: str = "sofa"
    """Column of the SOFA score."""
    lactate: str = "lactate"
    """Column of the lactate."""

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.sofa, self.lactate)

    def __call__(self, df: pd.DataFrame, last: np.ndarray, died: np.ndarray) -> np.ndarray:
        last, died = _check(df, last, died, self.columns, "SofaLactate")
        s, ls = _col(df, self.sofa), _col(df, self.lactate)
        s1, ls1 = _next(s, last), _next(ls, last)
        with np.errstate(invalid="ignore"):
            sofa = self.c0 * ((s1 == s) & (s > 0)) + self.c1 * (s1 - s)
            lact = self.c2 * np.tanh(ls1 - ls)
        return np.nan_to_num(sofa, nan=0.0) + np.nan_to_num(lact, nan=0.0)


@dataclass(frozen=True)
class BiomarkerInRange:
    r"""Transition term: :math:`r_t = +w` if :math:`x_{t+1} \in [\text{low}, \text{high}]`,
    :math:`-w` if outside, 0 if :math:`x_{t+1}` is missing or :math:`t` is the last step."""

    column: str
    """Column of the biomarker, e.g. glucose (mg/dL)."""
    low: float = -math.inf
    """Lower end of the target range (inclusive; -inf for none)."""
    high: float = math.inf
    """Upper end of the target range (inclusive; inf for none)."""
    weight: float = 0.1
    """Reward :math:`w` for an in-range value (its negative for out of range)."""

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ConfigError(
                f"empty target range for {self.column!r}",
                expected="low <= high",
                found=(self.low, self.high),
            )

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def __call__(self, df: pd.DataFrame, last: np.ndarray, died: np.ndarray) -> np.ndarray:
        last, died = _check(df, last, died, self.columns, f"BiomarkerInRange({self.column!r})")
        x1 = _next(_col(df, self.column), last)
        inside = (x1 >= self.low) & (x1 <= self.high)
        return np.where(np.isnan(x1), 0.0, np.where(inside, self.weight, -self.weight))


@dataclass(frozen=True)
class NutritionGoal:
    r"""Transition term :math:`r_t = -w\,|x_{t+1} - \mathrm{target}(d_{t+1})|` (0 if missing or
    at the last step), with :math:`d` the day index of the step."""

    column: str = "cum_kcal_per_kg"
    """Quantity compared with the target, e.g. the kcal/kg given so far on the current day."""
    target: float | Callable[[int], float] = 25.0
    """Goal: a number, or a function of the day index (e.g. ``lambda d: 20.0 * (d + 1)`` for a
    column cumulative over the stay). 25 kcal/kg/day: ASPEN 2021 upper bound [inferred]."""
    weight: float = 0.01
    """Penalty per unit of distance to the goal [inferred]."""
    day: str = "day"
    """Column of the day index (0 on the first ICU day)."""

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column, self.day)

    def __call__(self, df: pd.DataFrame, last: np.ndarray, died: np.ndarray) -> np.ndarray:
        last, died = _check(df, last, died, self.columns, f"NutritionGoal({self.column!r})")
        x1 = _next(_col(df, self.column), last)
        d1 = _next(_col(df, self.day), last)
        if callable(self.target):
            goal = np.full_like(d1, np.nan)
            for d in np.unique(d1[~np.isnan(d1)]):
                goal[d1 == d] = float(self.target(int(d)))
        else:
            goal = np.full_like(d1, float(self.target))
        return np.nan_to_num(-self.weight * np.abs(x1 - goal), nan=0.0)


# -- composition -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CompositeReward:
    r"""Weighted sum :math:`r_t = \sum_k w_k\,r^{(k)}_t` of named terms."""

    terms: tuple[tuple[str, RewardTerm, float], ...]
    """(name, term, weight) of each part; names are unique."""

    def __post_init__(self) -> None:
        names = [name for name, _, _ in self.terms]
        if len(set(names)) != len(names):
            raise ConfigError("reward term names must be unique", found=names)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column some term reads (in order, without duplicates)."""
        return tuple(dict.fromkeys(c for _, term, _ in self.terms for c in term.columns))

    def parts(self, df: pd.DataFrame, last: np.ndarray, died: np.ndarray) -> dict[str, np.ndarray]:
        """``{name: w_k * r^(k)}``, each ``(N,)`` float64; they sum to :meth:`__call__`."""
        _check(df, last, died, self.columns, "the reward")
        return {name: weight * term(df, last, died) for name, term, weight in self.terms}

    def __call__(self, df: pd.DataFrame, last: np.ndarray, died: np.ndarray) -> np.ndarray:
        """``(N,)`` float64 total reward per step."""
        total = np.zeros(len(df))
        for part in self.parts(df, last, died).values():
            total += part
        return total


@dataclass(frozen=True)
class RewardSpec:
    """Weights and ranges of the DeepEN-style reward (every default is [inferred]).

    A term with weight 0 is left out of the composite (its columns are not required).
    """

    terminal: float = 15.0
    """Terminal reward magnitude: +terminal at the last step if the patient survived, else -."""
    sofa_lactate: float = 1.0
    """Weight of the Raghu SOFA/lactate transition term."""
    sofa_c0: float = -0.025
    """Raghu c0: penalty for an unchanged non-zero SOFA."""
    sofa_c1: float = -0.125
    """Raghu c1: weight of the SOFA change."""
    sofa_c2: float = -2.0
    """Raghu c2: weight of tanh of the lactate change."""
    glucose: float = 0.1
    """Reward for next-step glucose in range (its negative out of range)."""
    glucose_range: tuple[float, float] = (140.0, 180.0)
    """Glucose target range, mg/dL."""
    phosphate: float = 0.1
    """Reward for next-step phosphate in range (refeeding syndrome guard)."""
    phosphate_range: tuple[float, float] = (2.5, math.inf)
    """Phosphate target range, mg/dL (no upper bound)."""
    sodium: float = 0.1
    """Reward for next-step sodium in range."""
    sodium_range: tuple[float, float] = (135.0, 145.0)
    """Sodium target range, mmol/L."""
    nutrition: float = 0.0
    """Weight of the nutrition-goal penalty per kcal/kg of distance (0: off)."""
    nutrition_target: float = 25.0
    """Goal of the nutrition column (kcal/kg/day; ASPEN 2021: 12-25 in the first week)."""
    sofa_column: str = "sofa"
    """Column of the SOFA score."""
    lactate_column: str = "lactate"
    """Column of the lactate."""
    glucose_column: str = "glucose"
    """Column of the glucose."""
    phosphate_column: str = "phosphate"
    """Column of the phosphate."""
    sodium_column: str = "sodium"
    """Column of the sodium."""
    nutrition_column: str = "cum_kcal_per_kg"
    """Column compared with ``nutrition_target``."""
    day_column: str = "day"
    """Column of the ICU day index (read by the nutrition goal only)."""

    def __post_init__(self) -> None:
        for name in ("glucose_range", "phosphate_range", "sodium_range"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not lo <= hi:
                raise ConfigError(
                    f"{name} is empty", expected="(low, high) with low <= high", found=(lo, hi)
                )
            object.__setattr__(self, name, (lo, hi))
        weights = ("terminal", "sofa_lactate", "glucose", "phosphate", "sodium", "nutrition")
        bad = [w for w in weights if not math.isfinite(getattr(self, w))]
        if bad:
            raise ConfigError(
                "reward weights must be finite", found={w: getattr(self, w) for w in bad}
            )


TERM_BUILDERS: dict[str, Callable[[RewardSpec], tuple[RewardTerm, float]]] = {
    "terminal": lambda s: (TerminalSurvival(value=1.0), s.terminal),
    "sofa_lactate": lambda s: (
        SofaLactate(s.sofa_c0, s.sofa_c1, s.sofa_c2, s.sofa_column, s.lactate_column),
        s.sofa_lactate,
    ),
    "glucose": lambda s: (BiomarkerInRange(s.glucose_column, *s.glucose_range, 1.0), s.glucose),
    "phosphate": lambda s: (
        BiomarkerInRange(s.phosphate_column, *s.phosphate_range, 1.0),
        s.phosphate,
    ),
    "sodium": lambda s: (BiomarkerInRange(s.sodium_column, *s.sodium_range, 1.0), s.sodium),
    "nutrition": lambda s: (
        NutritionGoal(s.nutrition_column, s.nutrition_target, 1.0, s.day_column),
        s.nutrition,
    ),
}
"""Part name -> (unit-scale term, weight) from a spec."""


def build_reward(spec: RewardSpec | None = None) -> CompositeReward:
    """The composite reward of ``spec`` (default :class:`RewardSpec`), zero-weight parts left out.

    Example:
        >>> df = pd.DataFrame({"patient": [1, 1], "sofa": [4, 4], "lactate": [2.0, 2.0],
        ...                    "glucose": [150, 150], "phosphate": [3, 3], "sodium": [140, 150]})
        >>> r = build_reward()(df, last_steps(df["patient"]), np.array([False, False]))
        >>> r.round(3).tolist()  # step 0: -0.025 (SOFA unchanged) + 0.1 + 0.1 - 0.1 (Na 150)
        [0.075, 15.0]
    """
    spec = spec or RewardSpec()
    terms = []
    for name, make in TERM_BUILDERS.items():
        term, weight = make(spec)
        if weight != 0:
            terms.append((name, term, float(weight)))
    log.debug("reward parts: %s", {name: w for name, _, w in terms})
    return CompositeReward(tuple(terms))
