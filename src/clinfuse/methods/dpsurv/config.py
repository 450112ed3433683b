"""DPsurv configuration. Fields marked [inferred] are our choices where the paper/code is silent
or inconsistent; [code] follows the official repository's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clinfuse.core.config import check_fields

Endpoint = Literal["os", "dss", "dfi", "pfi"]
Baseline = Literal["abmil", "meanpool_cox", "panther_linear", "cox"]


@dataclass(frozen=True)
class DPsurvConfig:
    """Evidential, prototype-based whole-slide survival analysis (arXiv 2510.00053)."""

    # -- data ------------------------------------------------------------------------------
    data: str = "synthetic"
    """`synthetic` (planted cohort), a tabular set shipped in a wheel (whas500, veteran, gbsg2,
    rossi, ...: the evidential head on features) or a folder of feature bags (CLAM .h5/.pt or a
    TRIDENT job; then `labels` is required)."""
    labels: str | None = None
    """Label CSV for real bags (MCAT or TCGA-CDR style, 1 = censored)."""
    allow_outside_paths: bool = False
    """Accept bag files of labelled slides that resolve outside the bags folder (symbolic
    links to other storage); off, such a slide is refused."""
    splits: str | None = None
    """Fold folders (k=0..4 with train.csv/test.csv) or MCAT splits_{k}.csv; None: stratified
    5-fold split by event."""
    endpoint: Endpoint = "dss"
    """TCGA-CDR endpoint read from the label CSV (DPsurv used dss) [code]."""
    encoder: str | None = None
    """TRIDENT feature folder to use when the job holds several encoders."""
    fold: int = 0
    """Outer fold trained and tested by `clinfuse fit`."""
    n_folds: int = 5
    """Folds drawn when the data bring none."""
    n_cases: int = 400
    """Synthetic cohort size."""
    max_cases: int | None = None
    """Tabular sets: keep a random subsample of this many cases (stratified by event, seeded),
    to keep runs on the larger sets (flchain, support2) cheap; None keeps all."""

    # -- level 1: patch prototypes (PANTHER) -----------------------------------------------
    n_components: int = 16
    """Patch prototypes C (DPsurv/PANTHER: 16) [code]."""
    kmeans_init: int = 10
    """k-means++ restarts."""
    kmeans_max_points: int | None = 100_000
    """Random training patches used by k-means (PANTHER subsamples) [inferred]."""
    prior_eps: float = 1.0
    """Prior variance scale: V = eps * within-cluster variance [inferred]."""
    tau: float = 1.0
    """DirNIW prior strength of the per-slide MAP-EM (file name: 1; PANTHERBase: 10) [code]."""
    em_iters: int = 1
    """MAP-EM iterations from the prior mode (file name: 1; extract_gmm.py: 3) [code]."""

    # -- level 2: evidential experts (ENNreg) ----------------------------------------------
    n_prototypes: tuple[int, ...] = (1, 2, 3, 4)
    """Prototypes K per expert; several values are selected on the inner validation split [code]."""
    standardise: bool = False
    """z-score the expert inputs [pi_c, mu_c, Sigma_c] per component on the training cases
    (the official code feeds them raw; z-scoring overfit the planted cohort: test C 0.53 vs
    0.64 raw, fold 0, seed 0) [inferred]."""
    lam: float = 0.5
    """Weight of the point curve S = lam (1 - Bel) + (1 - lam)(1 - Pl) [code]."""
    loss: Literal["discrete", "grfn"] = "discrete"
    """`discrete`: NLL on quantile bins (the paper's); `grfn`: continuous censored GRFN NLL."""
    n_bins: int = 8
    """Quantile bins of the uncensored training times [code]."""
    alpha: float = 0.5
    """Weight of the extra uncensored term of the discrete NLL [code]."""
    xi: float = 0.0
    """Weight of mean(h) (evidential regulariser; off in the official code) [code]."""
    rho: float = 0.0
    """Weight of mean(gamma^2) (off in the official code) [code]."""

    # -- training --------------------------------------------------------------------------
    lr: float = 5e-3
    """AdamW learning rate (official 1e-4 on 1000+ slides; our small cohorts need more steps
    per epoch than they have) [inferred]."""
    weight_decay: float = 2e-4
    """AdamW weight decay [code]."""
    batch_size: int = 32
    """Cases per step [code]."""
    epochs: int = 50
    """At most this many epochs [code]."""
    patience: int = 5
    """Early stopping on the inner validation C-index [code]."""
    min_epochs: int = 5
    """Epochs before early stopping may trigger [code]."""
    select_by: Literal["nll", "c_index"] = "nll"
    """Inner-split score that picks K and the epoch: the validation loss, or the Harrell C (the
    official code ranks C first; on 50-case inner splits C is noisy and ignores calibration,
    so the curves stayed near the vacuous 0.5) [inferred]."""
    inner_fraction: float = 0.15
    """Inner validation share (stratified event x time quartile) for K and the epoch [code]."""
    baselines: tuple[Baseline, ...] = ("abmil", "meanpool_cox", "panther_linear", "cox")
    """Baselines trained on the same fold (bag-only ones are skipped in tabular mode)."""
    calibration: Literal["auto", "scale", "evidential", "none"] = "auto"
    """How the band is calibrated on inner out-of-fold predictions of the training fold, per risk
    tercile: `scale` widens/narrows it around S on the logit scale (S unchanged), `evidential`
    divides the GRFN precision h (S moves with it), `auto` takes the narrower of the two whose
    calibration-set IBS stays within 0.005 of the raw curve's, `none` keeps the raw band
    [inferred]."""
    recentre: bool = True
    """Before scaling the band, recalibrate each risk tercile's curves on the complementary
    log-log scale, cumulative hazard -> c * hazard^p, with the intercept c (and the slope p,
    `recentre_slope`) that bring their mean closest to the tercile's Kaplan-Meier on the
    calibration cases (without it a band whose edge runs along a biased curve covers
    erratically) [inferred]."""
    recentre_slope: bool = False
    """Fit the slope p of the recentring as well as the intercept c; off (the default): p = 1,
    the proportional-hazards power S -> S^c. Benchmarked together with `km_noise` only (see
    the README), not adopted [inferred]."""
    km_noise: bool = False
    """Widen the band by the binomial sampling noise of the Kaplan-Meier of a group of the
    calibration tercile's size, at the nominal pointwise level, so that the band is a
    prediction band for a group's Kaplan-Meier (its upper edge reaches 1 where such a group
    is likely to have had no event yet); the group coverage then counts every grid time. Off
    by default: on the benchmark it pushed the terciles of well-fitted cohorts to a share of
    1.0 of the grid (see the README) [inferred]."""
    nominal: float = 0.9
    """Nominal coverage of the calibrated band (risk groups) and case intervals."""
    calibration_folds: int = 4
    """Inner folds whose out-of-fold predictions calibrate the band; each inner model takes as
    many optimiser steps as the final model [inferred]."""
    coverage_horizon: float = 0.9
    """Coverage is checked up to this quantile of the training follow-up times; later the
    Kaplan-Meier rests on few cases and interval upper ends are open [inferred]."""
    grid_points: int = 100
    """Evaluation time grid between the test fold's shortest and longest follow-up."""
    seed: int = 0
    """Seed of the data draw, the splits, k-means, initialisation and minibatches."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        checks = {
            "n_components": (self.n_components >= 1, ">= 1"),
            "n_prototypes": (
                len(self.n_prototypes) > 0 and min(self.n_prototypes) >= 1,
                "positive integers",
            ),
            "lam": (0.0 <= self.lam <= 1.0, "in [0, 1]"),
            "n_bins": (self.n_bins >= 2, ">= 2"),
            "alpha": (0.0 <= self.alpha <= 1.0, "in [0, 1]"),
            "tau": (self.tau >= 0, ">= 0"),
            "em_iters": (self.em_iters >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "epochs": (self.epochs >= 1, ">= 1"),
            "inner_fraction": (0.0 < self.inner_fraction < 0.5, "in (0, 0.5)"),
            "fold": (0 <= self.fold < max(self.n_folds, 1) or self.splits is not None, ">= 0"),
            "n_cases": (self.n_cases >= 20, ">= 20"),
            "max_cases": (self.max_cases is None or self.max_cases >= 50, ">= 50 or None"),
            "grid_points": (self.grid_points >= 10, ">= 10"),
            "nominal": (0.5 <= self.nominal < 1.0, "in [0.5, 1)"),
            "calibration_folds": (self.calibration_folds >= 2, ">= 2"),
            "coverage_horizon": (0.0 < self.coverage_horizon <= 1.0, "in (0, 1]"),
        }
        check_fields(self, checks)
