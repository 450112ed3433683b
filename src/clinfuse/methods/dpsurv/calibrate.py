r"""Calibration of DPsurv's survival band to a nominal level, on held-out predictions.

The raw belief/plausibility band :math:`[1-\mathrm{Pl}, 1-\mathrm{Bel}]` has no frequency
guarantee: its width is whatever the evidential head learned. This module widens or narrows it
so that it covers what it claims, in two senses, at the nominal level :math:`1-\alpha`
(``nominal``, default 0.9):

1. **Risk groups.** For a group of cases, the Kaplan-Meier curve of the group lies inside the
   group's mean band at a share :math:`1-\alpha` of the grid times
   (:func:`~clinfuse.metrics.survival.tercile_coverage`).
2. **Single cases.** Each case's credal time interval :math:`[L_i, U_i]` read off its band
   (:func:`~clinfuse.metrics.survival.band_interval`) holds its event time with probability
   :math:`1-\alpha`, estimated with censoring weights
   (:func:`~clinfuse.metrics.survival.ipcw_interval_coverage`).

Two one-parameter band families, nested in the parameter :math:`\kappa` (wider as it grows):

* ``scale``: the band's distance to the point curve :math:`S` is multiplied by :math:`\kappa` on
  the logit scale, :math:`\mathrm{logit}\,s^\kappa_{low} = \mathrm{logit}\,S -
  \kappa(\mathrm{logit}\,S - \mathrm{logit}\,s_{low})` (and symmetrically above). :math:`S`, hence
  the ranking and the Brier score, is unchanged; :math:`\kappa = 1` is the raw band.
* ``evidential``: every expert's GRFN precision is divided by :math:`\kappa`, :math:`h \to
  h/\kappa`, and the band is recomputed from the belief function (Denœux 2023): the band stays a
  belief/plausibility envelope, but the point curve moves with it.

The fit is split-conformal in the Mondrian (group-conditional) form (Vovk et al. 2005, ch. 4;
Angelopoulos & Bates 2023, section 4.3): the calibration cases are out-of-fold predictions of
models trained on the other inner folds of the training fold; they are cut into risk terciles,
and within each tercile

1. the curves are recentred, :math:`S \to S^c` with the :math:`c` that brings the tercile's mean
   curve closest to its Kaplan-Meier (:func:`recentre`; a band whose edge runs along a biased
   curve covers a fresh group erratically);
2. :math:`\kappa` is the smallest value whose Kaplan-Meier coverage (from the group's first
   event on), the median over bootstrap resamples of the tercile, reaches the nominal level;
3. :math:`\alpha` is the largest miss level whose IPCW interval hit rate reaches it.

A new case takes the :math:`(c, \kappa, \alpha)` of the tercile its risk falls in. What the
group coverage means depends on the group size (a smaller group's Kaplan-Meier is noisier); it
is calibrated for terciles of the calibration set.

The group target is the *median* share over resampled groups, not the mean. One group's share
is close to bimodal: its Kaplan-Meier stays inside the whole grid or wanders out for a long
stretch, because the Kaplan-Meier's error at neighbouring times is nearly the same. Even the
true curve with a pointwise 90% band gives one group a share of 1.0 about 30% of the time and
a median share of 0.97 (``oracle_share`` in ``benchmarks/dpsurv.py``); a mean target is set by
the groups that wander out and widens the band for all. The share counts the grid times from
the group's first event on: before it the Kaplan-Meier is exactly 1, outside every band whose
upper edge is below 1, and no width can repair that (likewise a Kaplan-Meier of exactly 0
after the group's last case has had its event; see :func:`_smallest_kappa`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from clinfuse.core.errors import ConfigError
from clinfuse.metrics.survival import (
    band_interval,
    integrated_brier_score,
    ipcw_interval_coverage,
    km_at,
)

__all__ = [
    "BandCalibration",
    "Family",
    "fit_calibration",
    "km_noise_band",
    "recentre",
    "scale_band",
    "tercile_groups",
]

Family = Literal["none", "scale", "evidential"]
BandFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``(kappa (m,), rows (m,)) -> (s, s_low, s_up)``, each ``(m, T)``: the family's band of the
cases ``rows`` (of a fixed set of cases, on a fixed grid) at per-case parameters ``kappa``."""

_KAPPAS: dict[str, np.ndarray] = {
    "scale": np.concatenate(([0.0], np.geomspace(1e-2, 1e4, 181))),
    "evidential": np.geomspace(1e-4, 1e8, 193),
}
"""Candidate :math:`\\kappa` of each family, increasing (wider bands)."""
_ALPHAS = np.linspace(0.0025, 1.0, 400)
"""Candidate interval miss levels, increasing (narrower intervals)."""
_CENTRES = np.geomspace(1 / 20, 20, 241)
"""Candidate intercepts c of the recentring (cumulative hazard times c)."""
_SLOPES = np.geomspace(0.4, 2.5, 17)
"""Candidate slopes p of the recentring (cumulative hazard to the power p)."""
_EPS = 1e-12
_BOOT = 40
"""Bootstrap resamples of each calibration group behind the Kaplan-Meier coverage."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _expit(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def scale_band(
    s: np.ndarray, s_low: np.ndarray, s_up: np.ndarray, kappa: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The band scaled by ``kappa`` (per case) around ``s`` on the logit scale.

    Shape:
        s, s_low, s_up: ``(n, T)``; kappa: scalar or ``(n,)``. Output: ``(s, s_low, s_up)``.

    Example:
        >>> s, lo, up = np.array([[0.5]]), np.array([[0.4]]), np.array([[0.6]])
        >>> [round(float(v[0, 0]), 4) for v in scale_band(s, lo, up, 1.0)]
        [0.5, 0.4, 0.6]
        >>> [round(float(v[0, 0]), 4) for v in scale_band(s, lo, up, 0.0)]
        [0.5, 0.5, 0.5]
    """
    k = np.broadcast_to(np.asarray(kappa, dtype=np.float64), (s.shape[0],))[:, None]
    mid = _logit(s)
    lo = _expit(mid - k * np.maximum(mid - _logit(s_low), 0.0))
    up = _expit(mid + k * np.maximum(_logit(s_up) - mid, 0.0))
    return s, np.minimum(lo, s), np.maximum(up, s)


def tercile_groups(risk: np.ndarray, cuts: tuple[float, float]) -> np.ndarray:
    """Group 0 (low), 1 (mid) or 2 (high risk) of each case, from the calibration cut points.

    Example:
        >>> tercile_groups(np.array([0.1, 0.5, 0.9]), (0.3, 0.6)).tolist()
        [0, 1, 2]
    """
    return np.searchsorted(np.asarray(cuts), np.asarray(risk, dtype=np.float64), side="right")


def recentre(
    s: np.ndarray, s_low: np.ndarray, s_up: np.ndarray, c: np.ndarray | float,
    slope: np.ndarray | float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    r"""Recalibrate curve and band on the complementary log-log scale, per case:
    :math:`\Lambda \to c\,\Lambda^{p}` for the cumulative hazard :math:`\Lambda = -\log S`, i.e.
    :math:`\log(-\log S') = \log c + p \log(-\log S)` (the calibration intercept and slope of
    a survival model on that scale; van Houwelingen 2000). With ``slope`` :math:`p = 1` it is the
    proportional-hazards power :math:`S \to S^{c}`. The map is increasing in :math:`S`, so every
    curve stays monotone and the band ordered.

    Example:
        >>> [float(v[0, 0]) for v in recentre(np.array([[0.5]]), np.array([[0.25]]),
        ...                                    np.array([[1.0]]), 2.0)]
        [0.25, 0.0625, 1.0]
        >>> [round(float(v[0, 0]), 4) for v in recentre(np.array([[0.5]]), np.array([[0.25]]),
        ...                                              np.array([[1.0]]), 1.0, 2.0)]
        [0.6185, 0.1463, 1.0]
    """
    n = s.shape[0]
    c_ = np.broadcast_to(np.asarray(c, dtype=np.float64), (n,))[:, None]
    p_ = np.broadcast_to(np.asarray(slope, dtype=np.float64), (n,))[:, None]
    if np.all(p_ == 1.0):
        return s**c_, s_low**c_, s_up**c_

    def f(x: np.ndarray) -> np.ndarray:
        return np.exp(-c_ * (-np.log(np.clip(x, 1e-300, 1.0))) ** p_)

    return f(s), f(s_low), f(s_up)


def km_noise_band(
    s: np.ndarray, s_low: np.ndarray, s_up: np.ndarray, z: float, size: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    r"""The band widened by the sampling noise of a group's Kaplan-Meier: each edge moves out by
    :math:`z\sqrt{S(1-S)/m}` (the binomial standard error of a Kaplan-Meier of :math:`m` cases
    without censoring; Greenwood's formula reduces to it) and is clipped to [0, 1].

    The band is then a prediction band for the Kaplan-Meier of a group of :math:`m` cases, not
    only for its survival probability. Where a group of that size is likely to have had no event
    yet (:math:`S` close to 1) the upper edge reaches 1, where its Kaplan-Meier is exactly 1.

    Shape:
        s, s_low, s_up: ``(n, T)``; size: scalar or ``(n,)``. Output: ``(s_low, s_up)``.

    Example:
        >>> lo, up = km_noise_band(np.array([[0.99]]), np.array([[0.98]]),
        ...                        np.array([[0.995]]), 1.645, 100)
        >>> round(float(lo[0, 0]), 4), float(up[0, 0])
        (0.9636, 1.0)
    """
    if z <= 0.0:
        return s_low, s_up
    m = np.broadcast_to(np.asarray(size, dtype=np.float64), (s.shape[0],))[:, None]
    sd = np.sqrt(np.clip(s * (1.0 - s), 0.0, None) / m)
    return np.clip(s_low - z * sd, 0.0, 1.0), np.clip(s_up + z * sd, 0.0, 1.0)


def km_noise_z(nominal: float) -> float:
    r"""The two-sided pointwise normal quantile of the nominal level :math:`1-\alpha`,
    :math:`\Phi^{-1}(1 - \alpha/2)` (1.645 at 0.9).

    Example:
        >>> round(km_noise_z(0.9), 3)
        1.645
    """
    return float(NormalDist().inv_cdf(0.5 * (1.0 + nominal)))


@dataclass(frozen=True)
class BandCalibration:
    """A fitted calibration: the family, the risk cut points and, per tercile, the recentring
    intercept and slope, the band parameter kappa, the interval miss level alpha and the group
    size whose Kaplan-Meier noise widens the band."""

    family: Family
    nominal: float
    cuts: tuple[float, float]
    kappa: tuple[float, float, float]
    alpha: tuple[float, float, float]
    width: float = float("nan")
    """Mean band width on the calibration cases after calibration."""
    centre: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Recentring intercept c of each tercile (cumulative hazard times c)."""
    slope: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Recentring slope p of each tercile (cumulative hazard to the power p)."""
    group_size: tuple[float, float, float] = (np.inf, np.inf, np.inf)
    """Cases per calibration tercile: the group size m of the Kaplan-Meier noise term
    (infinite: no noise term)."""
    z: float = 0.0
    """Normal quantile of the Kaplan-Meier noise term (0: none)."""

    @classmethod
    def identity(cls, nominal: float) -> BandCalibration:
        """The raw band with the credal interval at the nominal level (no calibration)."""
        a = 1.0 - nominal
        return cls("none", nominal, (-np.inf, np.inf), (1.0, 1.0, 1.0), (a, a, a))

    def per_case(self, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(kappa, alpha, centre)``, each ``(n,)``, of cases with these risk scores."""
        g = tercile_groups(risk, self.cuts)
        return np.asarray(self.kappa)[g], np.asarray(self.alpha)[g], np.asarray(self.centre)[g]

    def apply(
        self, band_fn: BandFn, risk: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(s, s_low, s_up, alpha)`` of all cases of ``band_fn`` after calibration."""
        g = tercile_groups(risk, self.cuts)
        kappa, alpha, centre = self.per_case(risk)
        s, lo, up = recentre(
            *band_fn(kappa, np.arange(len(kappa))), centre, np.asarray(self.slope)[g]
        )
        lo, up = km_noise_band(s, lo, up, self.z, np.asarray(self.group_size)[g])
        return s, lo, up, alpha

    def to_dict(self) -> dict[str, object]:
        return {
            "family": self.family,
            "nominal": self.nominal,
            "cuts": [float(c) for c in self.cuts],
            "kappa": [float(k) for k in self.kappa],
            "alpha": [float(a) for a in self.alpha],
            "width": float(self.width),
            "centre": [float(c) for c in self.centre],
            "slope": [float(c) for c in self.slope],
            "group_size": [float(m) for m in self.group_size],
            "z": float(self.z),
        }

    @classmethod
    def from_dict(cls, d: dict) -> BandCalibration:
        return cls(
            d["family"], float(d["nominal"]), tuple(d["cuts"]), tuple(d["kappa"]),
            tuple(d["alpha"]), float(d.get("width", float("nan"))),
            tuple(d.get("centre", (1.0, 1.0, 1.0))), tuple(d.get("slope", (1.0, 1.0, 1.0))),
            tuple(float(m) for m in d.get("group_size", (np.inf, np.inf, np.inf))),
            float(d.get("z", 0.0)),
        )  # fmt: skip


def _centre(
    s: np.ndarray, time: np.ndarray, event: np.ndarray, grid: np.ndarray, slope: bool = True
) -> tuple[float, float]:
    """The intercept c and slope p of :func:`recentre` whose mean curve of the group,
    mean(exp(-c Λ^p)), is closest (least squares over the grid) to the group's Kaplan-Meier: a
    grid search, then a finer one around the best pair (``slope=False``: p = 1)."""
    km = km_at(time, event, grid)
    cum = -np.log(np.clip(s, 1e-300, 1.0))

    def search(cs: np.ndarray, ps: np.ndarray) -> tuple[float, float, float]:
        best = (np.inf, 1.0, 1.0)
        for p in ps:
            cp = cum**p
            # (len(cs), T) mean curves, in chunks of cases to bound the memory
            mean = np.zeros((len(cs), len(grid)))
            for a in range(0, cum.shape[0], 256):
                mean += np.exp(-cs[:, None, None] * cp[None, a : a + 256]).sum(1)
            err = np.sum((mean / cum.shape[0] - km) ** 2, axis=1)
            j = int(np.argmin(err))
            if err[j] < best[0]:
                best = (float(err[j]), float(cs[j]), float(p))
        return best

    if not slope:
        return search(_CENTRES, np.ones(1))[1], 1.0
    _, c0, p0 = search(_CENTRES[::4], _SLOPES)
    step_c, step_p = _CENTRES[4] / _CENTRES[0], _SLOPES[1] / _SLOPES[0]
    _, c, p = search(c0 * step_c ** np.linspace(-1, 1, 17), p0 * step_p ** np.linspace(-1, 1, 9))
    return c, p


def _bisect(ok: Callable[[int], bool], n: int) -> int:
    """First index in 0..n-1 at which the monotone predicate ``ok`` holds (n - 1 if none)."""
    lo_j, hi_j = 0, n - 1
    if not ok(hi_j):
        return hi_j
    while lo_j < hi_j:
        mid = (lo_j + hi_j) // 2
        if ok(mid):
            hi_j = mid
        else:
            lo_j = mid + 1
    return lo_j


def _smallest_kappa(
    band_fn: BandFn, idx: np.ndarray, c: float, p: float, z: float, time: np.ndarray,
    event: np.ndarray, grid: np.ndarray, kappas: np.ndarray, nominal: float,
    rng: np.random.Generator, every_time: bool,
) -> float:  # fmt: skip
    """The first increasing candidate whose group coverage, the median over bootstrap
    resamples of the group, reaches ``nominal``.

    The Kaplan-Meier of one sample is a single noisy realisation; a band fitted to it alone
    transfers poorly to a fresh group of the same size (the share of covered grid times jumps
    when the band's edge runs along the curve). The median over resamples targets the coverage
    of a typical new group instead (why not the mean: see the module docstring).

    With ``every_time`` the share counts every grid time, as
    :func:`~clinfuse.metrics.survival.tercile_coverage` does. Otherwise it counts the times from
    the resample's first event on (and, when every case has had its event, before the
    Kaplan-Meier reaches 0): before the first event the Kaplan-Meier is exactly 1, and a band
    without the Kaplan-Meier noise term (``z = 0``) contains it only where every case's upper
    edge is 1 to the last bit; a width chosen to get there is absurd (on pbc2 the band parameter
    grew to 11-16 times the raw one, and the evidential family to its largest candidate). With
    the noise term the upper edge reaches 1 where a group of this size is likely to have had no
    event yet, so those times can be counted. A group with no counted time keeps the raw width
    (1.0).
    """
    n = len(idx)
    boots = [np.arange(n)] + [rng.integers(0, n, n) for _ in range(_BOOT)]
    kms = [km_at(time[idx][b], event[idx][b], grid) for b in boots]
    if every_time:
        counted = [np.ones(len(grid), dtype=bool) for _ in kms]
    else:  # the times at which the Kaplan-Meier is strictly inside (0, 1)
        counted = [(km < 1.0) & (km > 0.0) for km in kms]
    kept = [k for k, a in enumerate(counted) if a.any()]
    if not kept:  # no event on the grid: nothing to calibrate the width on
        return 1.0

    def covered(j: int) -> bool:
        s, lo, up = recentre(*band_fn(np.full(n, kappas[j]), idx), c, p)
        lo, up = km_noise_band(s, lo, up, z, n)
        cov = []
        for k in kept:
            b, km = boots[k], kms[k]
            inside = (km >= lo[b].mean(0)) & (km <= up[b].mean(0))
            cov.append(np.mean(inside[counted[k]]))
        return float(np.median(cov)) >= nominal

    return float(kappas[_bisect(covered, len(kappas))])


def _largest_alpha(
    lo: np.ndarray, up: np.ndarray, time: np.ndarray, event: np.ndarray, grid: np.ndarray,
    nominal: float,
) -> float:  # fmt: skip
    """Largest candidate miss level whose IPCW interval hit rate is still >= nominal (the hit
    rate falls as alpha grows)."""

    def fails(j: int) -> bool:
        lower, upper = band_interval(lo, up, grid, float(_ALPHAS[j]))
        return ipcw_interval_coverage(time, event, lower, upper) < nominal

    j = _bisect(fails, len(_ALPHAS))
    if not fails(j):  # never fails: the widest level still holds
        return float(_ALPHAS[-1])
    return float(_ALPHAS[max(j - 1, 0)])


def fit_calibration(
    family: Family,
    band_fn: BandFn,
    risk: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    grid: np.ndarray,
    nominal: float,
    seed: int = 0,
    recentre_groups: bool = True,
    recentre_slope: bool = False,
    km_noise: bool = False,
) -> BandCalibration:
    """Fit one family's per-tercile recentring, ``kappa`` and ``alpha`` on calibration cases.

    Per tercile: (1) with ``recentre_groups``, the intercept ``c`` (and with ``recentre_slope``
    the slope ``p``) that bring the group's mean raw curve to its Kaplan-Meier
    (:func:`recentre`); (2) with ``km_noise``, the Kaplan-Meier noise term of a group of the
    tercile's size at the nominal pointwise level (:func:`km_noise_band`); (3) the smallest
    ``kappa`` whose Kaplan-Meier coverage, the median over bootstrap resamples, reaches
    ``nominal`` (every grid time counted with the noise term; from the group's first event on
    without it); (4) the largest ``alpha`` whose IPCW interval hit rate reaches it.
    """
    if not 0.5 <= nominal < 1.0:
        raise ConfigError(
            "nominal coverage out of range", expected="0.5 <= nominal < 1", found=nominal,
            fix="--set nominal=0.9",
        )  # fmt: skip
    if family == "none":
        return BandCalibration.identity(nominal)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event)
    q = np.quantile(risk, [1 / 3, 2 / 3])
    cuts = (float(q[0]), float(q[1]))
    groups = tercile_groups(risk, cuts)
    rng = np.random.default_rng(seed)
    z = km_noise_z(nominal) if km_noise else 0.0
    chosen_c, chosen_p, chosen_k, chosen_a, sizes, widths = [], [], [], [], [], []
    for g in range(3):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 3:
            chosen_c.append(1.0)
            chosen_p.append(1.0)
            chosen_k.append(1.0)
            chosen_a.append(1.0 - nominal)
            sizes.append(np.inf)
            continue
        t, e = time[idx], event[idx]
        c, p = 1.0, 1.0
        if recentre_groups:
            c, p = _centre(band_fn(np.ones(len(idx)), idx)[0], t, e, grid, recentre_slope)
        k = _smallest_kappa(
            band_fn, idx, c, p, z, time, event, grid, _KAPPAS[family], nominal, rng,
            every_time=km_noise,
        )  # fmt: skip
        s, lo, up = recentre(*band_fn(np.full(len(idx), k), idx), c, p)
        lo, up = km_noise_band(s, lo, up, z, len(idx))
        chosen_c.append(c)
        chosen_p.append(p)
        chosen_k.append(k)
        chosen_a.append(_largest_alpha(lo, up, t, e, grid, nominal))
        sizes.append(float(len(idx)))
        widths.append(float(np.sum(up - lo)))
    return BandCalibration(
        family, nominal, cuts, tuple(chosen_k), tuple(chosen_a),
        sum(widths) / (len(risk) * len(grid)), tuple(chosen_c), tuple(chosen_p), tuple(sizes), z,
    )  # fmt: skip


def calibration_ibs(
    band_fn: BandFn, cal: BandCalibration, risk: np.ndarray, time: np.ndarray,
    event: np.ndarray, grid: np.ndarray,
) -> float:  # fmt: skip
    """IBS of the calibrated point curve on the calibration cases (censoring from them)."""
    s, _, _, _ = cal.apply(band_fn, risk)
    return integrated_brier_score(time, event, time, event, s, grid)
