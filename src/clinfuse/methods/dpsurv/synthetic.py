r"""A seeded synthetic WSI survival cohort with planted morphologies, proportions and hazard.

No real slide features can be shipped, so tests, demos and benchmarks of DPsurv use this cohort.
Its generative model:

* ``C`` "morphologies" with means :math:`m_c = s\,q_c \in \mathbb{R}^D`, where the :math:`q_c`
  are orthonormal (QR of a Gaussian matrix) and :math:`s` is ``separation``: every mean has norm
  :math:`s` and every pair is :math:`s\sqrt{2}` apart;
* case :math:`i` has true proportions :math:`r_i \sim \mathrm{Dir}(\alpha \mathbf{1}_C)`; each
  of its slides has :math:`M \sim U\{M_{min}, \dots, M_{max}\}` patches whose labels are
  :math:`r_i M` rounded by largest remainder (label shares equal :math:`r_i` within
  :math:`1/M`), and patch features :math:`x = m_{z} + \sigma \varepsilon`,
  :math:`\varepsilon \sim N(0, I_D)`;
* patches lie on a grid with 256-px steps inside a ragged elliptical tissue section; each
  morphology fills one contiguous region grown from a random seed cell (in random order, the
  last one takes the remaining cells), so assignment maps look like tissue regions;
* true log-hazard :math:`\eta_i = \sum_j w_j r_{i, c_j}` (default :math:`2 r_{i,3} - 1.5 r_{i,5}`,
  components counted from 0) and Weibull proportional-hazards event times
  :math:`S(t \mid \eta) = \exp(-(t/\lambda)^k e^{\eta})`, i.e.
  :math:`T = \lambda (E e^{-\eta})^{1/k}`, :math:`E \sim \mathrm{Exp}(1)`;
* censoring times :math:`C \sim U(0, c_{max})` independent of :math:`T`, with :math:`c_{max}`
  solved so that the expected censored share :math:`\frac1n\sum_i \min(T_i, c_{max})/c_{max}`
  equals ``censor_rate`` for the drawn :math:`T`; observed time :math:`\min(T, C)`, event
  :math:`1[T \le C]`.

Means, proportions and times, patches and folds come from separate child seeds of ``seed``, so
changing e.g. ``n_folds`` leaves the bags unchanged. ``SurvivalCohort.truth`` holds
``patch_labels`` (case id → ``(M,)`` labels aligned with ``cohort.bag(case)``), ``proportions``
``(n, C)``, ``log_hazard`` ``(n,)``, ``event_time`` and ``censor_time`` ``(n,)``, ``means``
``(C, D)``, ``prognostic_components``, ``prognostic_weights``, ``patch_sd`` and the ``config``.

Note: with the default weights the true log-hazard has a standard deviation of about 0.5, so
even the oracle risk reaches a Harrell C of only about 0.65; raise ``risk_weights`` for an easier
cohort.

Example:
    >>> c = make_synthetic_cohort(n_cases=6, min_patches=10, max_patches=12, n_folds=2, seed=1)
    >>> len(c), c.feature_dim, c.truth["proportions"].shape, len(c.folds)
    (6, 32, (6, 6), 2)
    >>> bool((np.bincount(c.truth["patch_labels"][c.case_ids[0]], minlength=6) > 0).any())
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from clinfuse.core.errors import ConfigError
from clinfuse.core.runs import atomic_write_text
from clinfuse.methods.dpsurv.data import (
    DAYS_PER_UNIT,
    Bag,
    SurvivalCohort,
    cohort_from_bags,
    stratified_folds,
    write_csv,
    write_h5_bag,
    write_pt_bag,
)

__all__ = [
    "ExportedCohort",
    "SyntheticConfig",
    "export",
    "make_synthetic_cohort",
    "ood_bags",
]


@dataclass(frozen=True)
class SyntheticConfig:
    """Planted WSI survival cohort (see the module docstring)."""

    n_cases: int = 400
    """Number of cases (patients); each has one slide unless ``two_slide_fraction`` > 0."""
    two_slide_fraction: float = 0.0
    """Share of cases with a second slide (another tissue section with the same proportions)."""
    dim: int = 32
    """Feature dimension ``D`` (must exceed ``n_components`` so out-of-distribution bags exist)."""
    n_components: int = 6
    """Number of morphologies ``C``."""
    separation: float = 6.0
    """Norm of each morphology mean; means are orthogonal, so pairs are separation·√2 apart."""
    patch_sd: float = 1.0
    """Standard deviation of the isotropic Gaussian patch noise around its morphology mean."""
    min_patches: int = 100
    """Fewest patches per slide."""
    max_patches: int = 300
    """Most patches per slide (inclusive)."""
    dirichlet_alpha: float = 0.5
    """Symmetric Dirichlet concentration of the true proportions."""
    risk_components: tuple[int, ...] = (3, 5)
    """Prognostic components (0-based) whose proportions enter the log-hazard."""
    risk_weights: tuple[float, ...] = (2.0, -1.5)
    """Log-hazard weight of each prognostic component."""
    weibull_shape: float = 1.5
    """Weibull shape ``k`` of the event times."""
    weibull_scale: float = 1000.0
    """Weibull scale ``lambda`` in days at log-hazard 0."""
    censor_rate: float = 0.4
    """Expected share of censored cases (uniform censoring); 0 disables censoring."""
    n_folds: int = 5
    """Patient-level folds, stratified by event."""
    patch_px: int = 256
    """Grid step of the patch coordinates in level-0 pixels."""
    seed: int = 0
    """Seed of every draw."""

    def __post_init__(self) -> None:
        checks = {
            "n_cases >= n_folds >= 2": self.n_cases >= self.n_folds >= 2,
            "dim > n_components >= 2": self.dim > self.n_components >= 2,
            "1 <= min_patches <= max_patches": 1 <= self.min_patches <= self.max_patches,
            "0 <= two_slide_fraction <= 1": 0.0 <= self.two_slide_fraction <= 1.0,
            "0 <= censor_rate < 1": 0.0 <= self.censor_rate < 1.0,
            "len(risk_components) == len(risk_weights)": len(self.risk_components)
            == len(self.risk_weights),
            "risk_components in [0, n_components)": all(
                0 <= c < self.n_components for c in self.risk_components
            ),
            "separation, patch_sd, dirichlet_alpha, weibull_* > 0": min(
                self.separation,
                self.patch_sd,
                self.dirichlet_alpha,
                self.weibull_shape,
                self.weibull_scale,
            )
            > 0,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ConfigError(
                "invalid SyntheticConfig",
                expected="; ".join(failed),
                found={f.name: getattr(self, f.name) for f in fields(self)},
                fix="change the fields named above",
            )


def _largest_remainder(r: np.ndarray, m: int) -> np.ndarray:
    """Integer counts summing to ``m`` closest to ``r * m``.

    Example:
        >>> _largest_remainder(np.array([0.5, 0.3, 0.2]), 7).tolist()
        [4, 2, 1]
    """
    raw = r * m
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: m - counts.sum()]] += 1
    return counts


def _tissue_cells(m: int, rng: np.random.Generator) -> np.ndarray:
    """``(m, 2)`` distinct grid cells ``(row, col)`` forming a ragged ellipse, in raster order."""
    side = int(math.ceil(1.6 * math.sqrt(m))) + 4
    rows, cols = np.divmod(np.arange(side * side), side)
    centre = (side - 1) / 2.0
    a, b = rng.uniform(0.7, 1.4, size=2)
    theta = rng.uniform(0.0, math.pi)
    u = (rows - centre) * math.cos(theta) + (cols - centre) * math.sin(theta)
    v = -(rows - centre) * math.sin(theta) + (cols - centre) * math.cos(theta)
    d = np.sqrt((u / a) ** 2 + (v / b) ** 2) + rng.uniform(0.0, 1.0, side * side)
    keep = np.sort(np.argsort(d, kind="stable")[:m])
    return np.stack([rows[keep], cols[keep]], axis=1)


def _grow_regions(cells: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Patch labels: each component claims its count of free cells nearest a random seed cell."""
    labels = np.full(len(cells), -1, np.int64)
    order = [int(c) for c in rng.permutation(len(counts)) if counts[c] > 0]
    free = np.ones(len(cells), bool)
    for c in order[:-1]:
        idx = np.flatnonzero(free)
        seed_cell = cells[rng.choice(idx)]
        dist = ((cells[idx] - seed_cell) ** 2).sum(axis=1) + rng.uniform(0.0, 0.5, len(idx))
        take = idx[np.argsort(dist, kind="stable")[: counts[c]]]
        labels[take] = c
        free[take] = False
    labels[free] = order[-1]
    return labels


def _coords(cells: np.ndarray, rng: np.random.Generator, patch_px: int) -> np.ndarray:
    """Level-0 ``(x, y)`` pixels of grid cells, offset to a random place on the slide."""
    origin = rng.integers(0, 64, size=2)
    return ((cells[:, ::-1] + origin) * patch_px).astype(np.int64)


def _censor_max(event_time: np.ndarray, rate: float) -> float:
    r"""``c`` with :math:`\frac1n\sum_i \min(T_i, c)/c = ` ``rate`` (expected censored share)."""

    def gap(log_c: float) -> float:
        c = math.exp(log_c)
        return float(np.minimum(event_time, c).mean() / c) - rate

    lo, hi = math.log(event_time.min()) - 20.0, math.log(event_time.max()) + 20.0
    return math.exp(brentq(gap, lo, hi, xtol=1e-12))


def make_synthetic_cohort(
    config: SyntheticConfig | None = None, **overrides: Any
) -> SurvivalCohort:
    """Draw the planted cohort (bags in memory); keyword overrides replace config fields.

    Shape:
        ``n_cases`` cases; case bags ``(M, dim)`` with ``M`` in ``[min_patches, max_patches]``
        per slide; ``truth["proportions"]`` ``(n, C)``.
    """
    cfg = replace(config or SyntheticConfig(), **overrides)
    s_means, s_surv, s_bags, s_folds = np.random.SeedSequence(cfg.seed).spawn(4)
    n, k = cfg.n_cases, cfg.n_components
    q, _ = np.linalg.qr(np.random.default_rng(s_means).standard_normal((cfg.dim, cfg.dim)))
    means = cfg.separation * q[:, :k].T

    rng = np.random.default_rng(s_surv)
    props = rng.dirichlet(np.full(k, cfg.dirichlet_alpha), size=n)
    log_hazard = props[:, list(cfg.risk_components)] @ np.asarray(cfg.risk_weights, np.float64)
    e = rng.exponential(size=n)
    event_time = cfg.weibull_scale * (e * np.exp(-log_hazard)) ** (1.0 / cfg.weibull_shape)
    if cfg.censor_rate > 0:
        censor_time = rng.uniform(0.0, _censor_max(event_time, cfg.censor_rate), size=n)
    else:
        censor_time = np.full(n, np.inf)
    time = np.minimum(event_time, censor_time)
    event = (event_time <= censor_time).astype(np.int64)

    rng = np.random.default_rng(s_bags)
    n_slides = 1 + (rng.random(n) < cfg.two_slide_fraction)
    case_ids = [f"SYN-{i:04d}" for i in range(n)]
    slides: dict[str, list[str]] = {}
    bags: dict[str, Bag] = {}
    patch_labels: dict[str, np.ndarray] = {}
    for i, case in enumerate(case_ids):
        slides[case] = [f"{case}-01Z-00-DX{j + 1}" for j in range(n_slides[i])]
        labels_of_case = []
        for slide in slides[case]:
            m = int(rng.integers(cfg.min_patches, cfg.max_patches + 1))
            cells = _tissue_cells(m, rng)
            labels = _grow_regions(cells, _largest_remainder(props[i], m), rng)
            feats = means[labels] + cfg.patch_sd * rng.standard_normal((m, cfg.dim))
            bags[slide] = Bag(slide, feats, _coords(cells, rng, cfg.patch_px))
            labels_of_case.append(labels)
        patch_labels[case] = np.concatenate(labels_of_case)

    folds = stratified_folds(event, cfg.n_folds, seed=int(s_folds.generate_state(1)[0]))
    truth = {
        "per_case": ("patch_labels", "proportions", "log_hazard", "event_time", "censor_time"),
        "patch_labels": patch_labels,
        "proportions": props,
        "log_hazard": log_hazard,
        "event_time": event_time,
        "censor_time": censor_time,
        "means": means,
        "prognostic_components": tuple(cfg.risk_components),
        "prognostic_weights": tuple(cfg.risk_weights),
        "patch_sd": cfg.patch_sd,
        "config": cfg,
    }
    return cohort_from_bags(
        case_ids, time, event, slides, bags, folds=folds, truth=truth, time_unit="days"
    )


def ood_bags(cohort: SurvivalCohort, n: int, shift: float = 30.0, seed: int = 0) -> list[Bag]:
    r"""``n`` out-of-distribution slides for a synthetic cohort: every patch is drawn around
    :math:`\text{shift}\cdot u` with :math:`u` a random unit vector orthogonal to every
    morphology mean (one :math:`u` per slide), so the patch centre has cosine 0 with each mean
    and lies :math:`\sqrt{\text{shift}^2 + s^2}` from it.

    Shape:
        each bag ``(M, D)`` with ``M`` in the cohort's ``[min_patches, max_patches]``.
    """
    if cohort.truth is None or "config" not in cohort.truth:
        raise ConfigError(
            "ood_bags needs a synthetic cohort",
            expected="cohort.truth with 'means' and 'config'",
            found="truth is None" if cohort.truth is None else sorted(cohort.truth),
            fix="call it on make_synthetic_cohort(...)",
        )
    cfg: SyntheticConfig = cohort.truth["config"]
    means = np.asarray(cohort.truth["means"])
    q, _ = np.linalg.qr(means.T, mode="complete")
    complement = q[:, means.shape[0] :]
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n):
        u = complement @ rng.standard_normal(complement.shape[1])
        u /= np.linalg.norm(u)
        m = int(rng.integers(cfg.min_patches, cfg.max_patches + 1))
        feats = shift * u + cfg.patch_sd * rng.standard_normal((m, cfg.dim))
        cells = _tissue_cells(m, rng)
        out.append(Bag(f"OOD-{j:04d}", feats, _coords(cells, rng, cfg.patch_px)))
    return out


@dataclass(frozen=True)
class ExportedCohort:
    """Paths written by :func:`export` (None where not written)."""

    root: Path
    """The export folder."""
    feats_h5: Path | None
    """CLAM ``.h5`` bags (``features`` + ``coords``), one per slide."""
    feats_pt: Path | None
    """PANTHER ``.pt`` bags (bare tensors), one per slide."""
    labels_mcat: Path
    """MCAT-style labels: ``case_id, slide_id`` (with ``.svs``), ``survival_months, censorship``."""
    labels_cdr: Path
    """TCGA-CDR-style labels: ``{os,dss,dfi,pfi}_survival_days`` and ``_censorship`` (all equal)."""
    splits: Path | None
    """Fold folders ``k=0 ..`` with ``train.csv``/``test.csv`` (``case_id, slide_id``)."""
    splits_mcat: Path | None
    """MCAT ``splits_{k}.csv`` files with ``train``/``val`` columns of case ids."""


def export(
    cohort: SurvivalCohort, root: str | Path, *, bag_format: Literal["h5", "pt", "both"] = "h5"
) -> ExportedCohort:
    """Write a cohort as files :func:`~clinfuse.methods.dpsurv.data.load_cohort` reads.

    Writes ``feats_h5/`` and/or ``feats_pt/``, ``labels_mcat.csv``, ``labels_tcga_cdr.csv`` and,
    when the cohort has folds, ``splits/k=<i>/{train,test}.csv`` and
    ``splits_mcat/splits_<i>.csv``. Censorship is written as ``1 - event`` (1 = censored).
    """
    root = Path(root)
    formats = {"h5": ("h5",), "pt": ("pt",), "both": ("h5", "pt")}[bag_format]
    dirs = {f: root / f"feats_{f}" for f in formats}
    for case in cohort.case_ids.tolist():
        for slide in cohort.slides[case]:
            bag = cohort.slide_bag(slide, case)
            if "h5" in dirs:
                write_h5_bag(dirs["h5"] / f"{slide}.h5", bag.features, bag.coords)
            if "pt" in dirs:
                write_pt_bag(dirs["pt"] / f"{slide}.pt", bag.features)

    days = cohort.time * DAYS_PER_UNIT[cohort.time_unit]
    censorship = 1 - cohort.event
    rows = [
        (case, slide, days[i], censorship[i])
        for i, case in enumerate(cohort.case_ids.tolist())
        for slide in cohort.slides[case]
    ]
    table = pd.DataFrame(rows, columns=["case_id", "slide_id", "days", "censorship"])
    mcat = pd.DataFrame(
        {
            "case_id": table["case_id"],
            "slide_id": table["slide_id"] + ".svs",
            "survival_months": table["days"] / DAYS_PER_UNIT["months"],
            "censorship": table["censorship"],
        }
    )
    cdr = table[["case_id", "slide_id"]].copy()
    for endpoint in ("os", "dss", "dfi", "pfi"):
        cdr[f"{endpoint}_survival_days"] = table["days"]
        cdr[f"{endpoint}_censorship"] = table["censorship"]
    labels_mcat = write_csv(mcat, root / "labels_mcat.csv")
    labels_cdr = write_csv(cdr, root / "labels_tcga_cdr.csv")

    splits = splits_mcat = None
    if cohort.folds is not None:
        splits, splits_mcat = root / "splits", root / "splits_mcat"
        for k, (tr, te) in enumerate(cohort.folds):
            parts = {}
            for part, idx in (("train", tr), ("test", te)):
                cases = set(cohort.case_ids[idx].tolist())
                parts[part] = table.loc[table["case_id"].isin(cases), ["case_id", "slide_id"]]
                write_csv(parts[part], splits / f"k={k}" / f"{part}.csv")
            mcat_split = pd.DataFrame(
                {
                    "train": pd.Series(cohort.case_ids[tr]),
                    "val": pd.Series(cohort.case_ids[te]),
                }
            )
            atomic_write_text(splits_mcat / f"splits_{k}.csv", mcat_split.to_csv())
    return ExportedCohort(
        root=root,
        feats_h5=dirs.get("h5"),
        feats_pt=dirs.get("pt"),
        labels_mcat=labels_mcat,
        labels_cdr=labels_cdr,
        splits=splits,
        splits_mcat=splits_mcat,
    )
