r"""DPsurv as a clinfuse learner: ``clinfuse fit | evaluate | predict dpsurv``.

Pipeline of one outer fold:

1. Patch prototypes: k-means (C clusters) over the training cases' patches and the frozen
   DirNIW prior; per case the PANTHER MAP-EM summary :math:`(\pi, \mu, \Sigma)` and the patch
   assignment :math:`q` (cached in the run, so ``--resume`` skips it).
2. One ENNreg expert per component (K prototypes each), initialised by weighted cosine k-means
   and trained on the discrete NLL of the fused curve (or the continuous GRFN NLL); K and the
   epoch are chosen on an inner 15% split by the validation C-index, then the model is refitted
   on the whole outer training fold for the chosen number of epochs.
3. Baselines on the same fold: ABMIL with the discrete head, mean-pool Cox, PANTHER + linear
   head, and a linear Cox model (tabular mode).
4. Test metrics (Harrell, Uno, Antolini, IBS, INBLL, D-calibration, tercile coverage of the
   band, mean band width), per-case predictions and plots.
"""

from __future__ import annotations

import logging
import math
import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.core.learner import METHODS, DemoResult, Learner
from clinfuse.core.runs import RunDir, atomic_write_text
from clinfuse.methods.dpsurv import baselines as bl
from clinfuse.methods.dpsurv.calibrate import (
    BandCalibration,
    BandFn,
    calibration_ibs,
    fit_calibration,
    scale_band,
)
from clinfuse.methods.dpsurv.config import DPsurvConfig
from clinfuse.methods.dpsurv.data import Bag, SurvivalCohort, load_cohort, stratified_folds
from clinfuse.methods.dpsurv.ennreg import init_ennreg
from clinfuse.methods.dpsurv.grfn import SurvivalBand, mixture_survival
from clinfuse.methods.dpsurv.losses import (
    bin_index,
    discrete_nll,
    fused_survival_at,
    grfn_censored_nll,
    quantile_bin_edges,
    regularisers,
)
from clinfuse.methods.dpsurv.model import DPsurvNet, component_contributions
from clinfuse.methods.dpsurv.proto import (
    PrototypeConfig,
    PrototypePrior,
    fit_prototypes,
    panther_batch,
)
from clinfuse.methods.dpsurv.synthetic import make_synthetic_cohort
from clinfuse.methods.dpsurv.tabular import load_tabular, tabular_names
from clinfuse.methods.dpsurv.train import TrainConfig, inner_split, train_module
from clinfuse.metrics.survival import (
    band_interval,
    harrell_c,
    ipcw_interval_coverage,
    survival_metrics,
    tercile_coverage,
)

log = logging.getLogger(__name__)

CHUNK = 64
"""Cases summarised per PANTHER batch (bags of one chunk are in memory together)."""


# ------------------------------------------------------------------------------------------
# data and representations
# ------------------------------------------------------------------------------------------
@dataclass
class DPsurvData:
    """Cases with labels, their representation source (bags or a feature table) and folds.

    Shape:
        time, event ``(n,)`` (event 1 = observed); X ``(n, p)`` in tabular mode.
    """

    name: str
    case_ids: np.ndarray
    time: np.ndarray
    event: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    cohort: SurvivalCohort | None = None
    X: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()
    truth: dict[str, Any] | None = None

    @property
    def tabular(self) -> bool:
        return self.cohort is None

    def split(self, fold: int, split: str) -> np.ndarray:
        """Case positions of ``split`` (train | test | all) in ``fold``."""
        if not 0 <= fold < len(self.folds):
            raise ConfigError(
                f"fold {fold} does not exist",
                expected=f"0..{len(self.folds) - 1}",
                found=fold,
                fix="--set fold=0",
            )
        parts = {"train": self.folds[fold][0], "test": self.folds[fold][1]}
        parts["all"] = np.arange(len(self.case_ids))
        if split not in parts:
            raise DataError(f"unknown split {split!r}", expected="train | test | all", found=split)
        return np.asarray(parts[split], dtype=np.int64)


@dataclass
class Reps:
    """Per-case expert inputs: ``pi (n, C)``, ``x (n, C, F)``, ``z (n, C, P)`` (float64)."""

    pi: torch.Tensor
    x: torch.Tensor
    z: torch.Tensor

    def take(self, idx: np.ndarray) -> Reps:
        i = torch.as_tensor(idx, dtype=torch.long)
        return Reps(self.pi[i], self.x[i], self.z[i])


def _summaries_to_reps(summaries: list) -> Reps:
    pi = torch.stack([s.pi for s in summaries]).double()
    mu = torch.stack([s.mu for s in summaries]).double()
    sigma = torch.stack([s.sigma for s in summaries]).double()
    return Reps(pi, torch.cat([pi[..., None], mu, sigma], dim=-1), mu)


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labellings (Hubert & Arabie 1985).

    Example:
        >>> adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))
        1.0
    """
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1.0)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / pairs(np.array([float(len(a))]))
    top = 0.5 * (rows + cols) - expected
    return 1.0 if top == 0 else float((index - expected) / top)


@dataclass
class CalibratedBand:
    """The calibrated point curve and band ``(n, T)`` of some cases, with each case's credal
    interval miss level ``alpha (n,)`` and the model's risk ``(n,)``."""

    s: np.ndarray
    s_low: np.ndarray
    s_up: np.ndarray
    alpha: np.ndarray
    risk: np.ndarray

    def interval(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each case's event-time interval at its calibrated level (see ``band_interval``)."""
        return band_interval(self.s_low, self.s_up, grid, self.alpha)


def _risk_from_edges(s_edges: torch.Tensor) -> np.ndarray:
    """The official risk score: minus the sum of the survival at the bin edges."""
    return -s_edges.detach().double().sum(-1).numpy()


# ------------------------------------------------------------------------------------------
# the learner
# ------------------------------------------------------------------------------------------
@METHODS.register("dpsurv")
class DPsurv(Learner):
    """Evidential prototype-based survival: PANTHER patch prototypes + one ENNreg per component."""

    name = "dpsurv"
    config_cls = DPsurvConfig
    description = "evidential whole-slide survival analysis with survival intervals"
    paper = "arXiv 2510.00053 (DPsurv)"
    status = "done (synthetic bags and real tabular data; no real WSI features offline)"

    def __init__(self, config: DPsurvConfig) -> None:
        super().__init__(config)
        self.model: DPsurvNet | None = None
        self.prior: PrototypePrior | None = None
        self.edges: np.ndarray | None = None
        self.n_prototypes: int | None = None
        self.train_time: np.ndarray | None = None
        self.train_event: np.ndarray | None = None
        self.z_scale: tuple[np.ndarray, np.ndarray] | None = None
        self.table: pd.DataFrame | None = None
        self._reps: dict[tuple[int, int], Reps] = {}
        self._baseline_preds: dict[str, dict[str, np.ndarray]] = {}
        self._proto_labels: np.ndarray | None = None
        self.calibration: BandCalibration | None = None
        self.cov_grid: np.ndarray | None = None
        self.calibration_report: dict[str, Any] = {}
        self.calibrations: dict[str, BandCalibration] = {}
        """Every fitted calibration family of the last fit (the chosen one is ``calibration``)."""

    # -- data -----------------------------------------------------------------------------
    def load_data(self, path: str | None = None) -> DPsurvData:
        cfg = self.config
        source = path or cfg.data
        if source == "synthetic":
            cohort = make_synthetic_cohort(n_cases=cfg.n_cases, n_folds=cfg.n_folds, seed=cfg.seed)
            return self._from_cohort("synthetic", cohort)
        if source in tabular_names():
            tab = load_tabular(source)
            rows = np.arange(len(tab.time))
            if cfg.max_cases is not None and len(rows) > cfg.max_cases:
                rng = np.random.default_rng(cfg.seed)
                share = cfg.max_cases / len(rows)
                rows = np.sort(np.concatenate([
                    rng.choice(np.flatnonzero(tab.event == v),
                               int(round(share * np.sum(tab.event == v))), replace=False)
                    for v in (0, 1)
                ]))  # fmt: skip
            folds = stratified_folds(tab.event[rows], cfg.n_folds, seed=cfg.seed)
            ids = np.array([f"{source}-{i}" for i in rows])
            time = tab.time[rows]
            zero = time <= 0
            if zero.any() and (~zero).any():  # log-time models need t > 0 (flchain: 3 rows)
                log.info("%s: %d times of 0 set to half the smallest positive", source, zero.sum())
                time = np.where(zero, 0.5 * time[~zero].min(), time)
            return DPsurvData(
                source, ids, time, tab.event[rows], folds, X=tab.X[rows],
                feature_names=tab.feature_names,
            )  # fmt: skip
        root = Path(source)
        if not root.exists():
            raise DataError(
                f"unknown DPsurv data {source!r}",
                expected="synthetic, a tabular set (" + ", ".join(tabular_names()) + ") or a "
                "folder of feature bags",
                found=source,
                fix="--set data=synthetic, or --data /path/to/feats_h5 --set labels=labels.csv",
            )
        if cfg.labels is None:
            raise ConfigError(
                "feature bags need a label CSV",
                expected="--set labels=/path/to/labels.csv (MCAT or TCGA-CDR style)",
                found=None,
                fix="add --set labels=...",
            )
        cohort = load_cohort(
            root, cfg.labels, cfg.splits, endpoint=cfg.endpoint, encoder=cfg.encoder,
            allow_outside=cfg.allow_outside_paths,
        )  # fmt: skip
        return self._from_cohort(root.name, cohort)

    def _from_cohort(self, name: str, cohort: SurvivalCohort) -> DPsurvData:
        folds = cohort.folds or stratified_folds(
            cohort.event, self.config.n_folds, self.config.seed
        )
        return DPsurvData(
            name, cohort.case_ids, cohort.time, cohort.event, list(folds), cohort=cohort,
            truth=cohort.truth,
        )  # fmt: skip

    # -- representations ------------------------------------------------------------------
    def _prototype_config(self) -> PrototypeConfig:
        cfg = self.config
        return PrototypeConfig(
            n_components=cfg.n_components,
            n_init=cfg.kmeans_init,
            max_points=cfg.kmeans_max_points,
            eps=cfg.prior_eps,
            seed=cfg.seed,
        )

    def _fit_prior(self, data: DPsurvData, train_idx: np.ndarray) -> None:
        cohort = data.cohort
        assert cohort is not None
        cap = self.config.kmeans_max_points
        rng = np.random.default_rng(self.config.seed)
        total = 0
        parts = []
        per_case = None if cap is None else max(1, int(np.ceil(cap / max(1, len(train_idx)))))
        for i in train_idx:
            f = cohort.bag(int(i)).features
            if per_case is not None and len(f) > per_case:
                f = f[rng.choice(len(f), per_case, replace=False)]
            parts.append(f)
            total += len(f)
        log.info("k-means over %d training patches (%d cases)", total, len(train_idx))
        self.prior, km = fit_prototypes(np.concatenate(parts), self._prototype_config())

    def summarise(self, bags: list[Bag], progress: bool = False) -> list:
        """PANTHER summaries of ``bags`` under the fitted prior."""
        if self.prior is None:
            raise ConfigError("the patch prototypes are not fitted", fix="call fit first")
        cfg = self.config
        return panther_batch(
            [b.features for b in bags],
            self.prior,
            tau=cfg.tau,
            iters=cfg.em_iters,
            slide_ids=[b.slide_id for b in bags],
            progress=progress,
        )

    def bag_reps(self, bags: list[Bag]) -> Reps:
        """Expert inputs of arbitrary bags (e.g. new slides) under the fitted prototypes."""
        return _summaries_to_reps(self.summarise(bags))

    def _bag_reps(self, data: DPsurvData, idx: np.ndarray) -> Reps:
        cohort = data.cohort
        assert cohort is not None
        out = []
        for start in range(0, len(idx), CHUNK):
            bags = [cohort.bag(int(i)) for i in idx[start : start + CHUNK]]
            out.extend(self.summarise(bags))
        return _summaries_to_reps(out)

    def _tab_reps(self, data: DPsurvData, idx: np.ndarray) -> Reps:
        assert data.X is not None and self.z_scale is not None
        x = torch.as_tensor(data.X[idx], dtype=torch.float64)[:, None, :]
        z = (x - torch.as_tensor(self.z_scale[0])) / torch.as_tensor(self.z_scale[1])
        return Reps(torch.ones(len(idx), 1, dtype=torch.float64), x, z)

    def reps(self, data: DPsurvData, idx: np.ndarray) -> Reps:
        """Expert inputs of the cases ``idx`` (cached per data set)."""
        key = (id(data), hash(np.asarray(idx).tobytes()))
        if key not in self._reps:
            fn = self._tab_reps if data.tabular else self._bag_reps
            self._reps[key] = fn(data, np.asarray(idx))
        return self._reps[key]

    # -- the evidential model -------------------------------------------------------------
    def _new_net(self, reps: Reps, log_t: np.ndarray, k: int) -> DPsurvNet:
        c, f = reps.x.shape[1], reps.x.shape[2]
        if self.config.standardise:
            mean = reps.x.mean(0).numpy()
            std = reps.x.std(0).numpy()
            std = np.where(std > 1e-8, std, 1.0)
        else:
            mean, std = np.zeros((c, f)), np.ones((c, f))
        net = DPsurvNet(c, k, f, reps.z.shape[2], mean, std, seed=self.config.seed)
        init_ennreg(
            net.experts, net.scale(reps.x).detach(), reps.z, log_t, reps.pi, seed=self.config.seed
        )
        return net

    def _loss(self, net: DPsurvNet, reps: Reps, y: torch.Tensor, cens: torch.Tensor,
              log_t: torch.Tensor) -> torch.Tensor:  # fmt: skip
        cfg = self.config
        mu, var, h = net(reps.x, reps.z)
        if cfg.loss == "discrete":
            assert self.edges is not None
            s = fused_survival_at(self.edges, reps.pi, mu, var, h, cfg.lam)
            loss = discrete_nll(s, y, cens, cfg.alpha)
        else:
            loss = grfn_censored_nll(log_t, cens, mu, var, h, cfg.lam, pi=reps.pi)
        return loss + regularisers(h, net.experts.gamma, cfg.xi, cfg.rho)

    def _train_config(self, epochs: int | None = None, patience: int | None = None) -> TrainConfig:
        cfg = self.config
        return TrainConfig(
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            batch_size=cfg.batch_size,
            epochs=epochs or cfg.epochs,
            patience=cfg.patience if patience is None else patience,
            min_epochs=cfg.min_epochs,
            seed=cfg.seed,
            progress=cfg.progress,
        )

    def _fit_net(
        self, reps: Reps, time: np.ndarray, event: np.ndarray, k: int,
        val: tuple[Reps, np.ndarray, np.ndarray] | None, epochs: int | None = None,
    ) -> tuple[DPsurvNet, Any]:  # fmt: skip
        assert self.edges is not None
        log_t = np.log(np.maximum(time, 1e-6))
        net = self._new_net(reps, log_t, k)
        y = torch.as_tensor(bin_index(time, self.edges))
        cens = torch.as_tensor(1 - event, dtype=torch.float64)
        lt = torch.as_tensor(log_t)

        def loss_fn(idx: np.ndarray) -> torch.Tensor:
            i = torch.as_tensor(idx, dtype=torch.long)
            return self._loss(net, reps.take(idx), y[i], cens[i], lt[i])

        score_fn = None
        if val is not None:
            vr, vt, ve = val

            vy = torch.as_tensor(bin_index(vt, self.edges))
            vc = torch.as_tensor(1 - ve, dtype=torch.float64)
            vlt = torch.as_tensor(np.log(np.maximum(vt, 1e-6)))

            def score_fn() -> float:
                if self.config.select_by == "nll":
                    return -float(self._loss(net, vr, vy, vc, vlt))
                return harrell_c(vt, ve, self._risk(net, vr))

        res = train_module(
            net, len(time), loss_fn, score_fn,
            self._train_config(epochs, patience=None if val is not None else 0),
            desc=f"DPsurv K={k}",
        )  # fmt: skip
        return net, res

    def _risk(self, net: DPsurvNet, reps: Reps) -> np.ndarray:
        assert self.edges is not None
        with torch.no_grad():
            band = net.band(torch.as_tensor(self.edges), reps.pi, reps.x, reps.z, self.config.lam)
        return _risk_from_edges(band.s)

    # -- calibration of the band ------------------------------------------------------------
    def _coverage_grid(self, time: np.ndarray) -> np.ndarray:
        """Grid of the coverage checks: the training fold's shortest follow-up to its
        ``coverage_horizon`` quantile."""
        hi = float(np.quantile(time, self.config.coverage_horizon))
        lo = max(float(time.min()), 1e-6 * hi)
        return np.linspace(lo, hi, self.config.grid_points)

    def _oof_grfn(
        self, reps: Reps, time: np.ndarray, event: np.ndarray, k: int, epochs: int
    ) -> dict[str, Any]:
        """GRFN outputs and risks of every training case from a model that did not see it
        (``calibration_folds`` inner folds, K of the outer fit).

        Each inner model takes as many optimiser steps as the outer fit (``epochs`` scaled by
        the ratio of minibatches per epoch), so that it is trained like the model whose band the
        calibration is applied to. With the outer epoch count instead, an inner model on half
        the training fold took half the steps; its curves, risk scale and tercile cut points
        differed from the outer model's, and the calibration fitted to them did not transfer
        (flchain, SUPPORT2, ACTG320: a tercile's Kaplan-Meier inside the band at 12-60% of the
        grid)."""
        cfg = self.config
        n, c = reps.pi.shape
        mu, var, h = (torch.zeros(n, c, dtype=torch.float64) for _ in range(3))
        risk = np.zeros(n)
        steps = math.ceil(n / cfg.batch_size) * epochs
        for a, b in stratified_folds(event, cfg.calibration_folds, seed=cfg.seed + 1):
            inner_epochs = max(1, round(steps / math.ceil(len(a) / cfg.batch_size)))
            net, _ = self._fit_net(reps.take(a), time[a], event[a], k, None, epochs=inner_epochs)
            rb = reps.take(b)
            with torch.no_grad():
                m, v, hh = net(rb.x, rb.z)
            ib = torch.as_tensor(b, dtype=torch.long)
            mu[ib], var[ib], h[ib] = m, v, hh
            risk[b] = self._risk(net, rb)
        return {"pi": reps.pi, "mu": mu, "var": var, "h": h, "risk": risk}

    def _band_fn(self, family: str, grfn: dict[str, Any], grid: np.ndarray) -> BandFn:
        """``(kappa, rows) -> (s, s_low, s_up)`` of one calibration family (see
        :mod:`.calibrate`)."""
        t = torch.as_tensor(grid, dtype=torch.float64)
        lam = self.config.lam
        pi, mu, var, h = grfn["pi"], grfn["mu"], grfn["var"], grfn["h"]
        if family == "evidential":

            def evidential(
                kappa: np.ndarray, rows: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                r = torch.as_tensor(rows, dtype=torch.long)
                k = torch.as_tensor(np.asarray(kappa, dtype=np.float64))[:, None]
                b = mixture_survival(t, pi[r], mu[r], var[r], h[r] / k, lam)
                return b.s.numpy(), b.s_low.numpy(), b.s_up.numpy()

            return evidential
        raw = mixture_survival(t, pi, mu, var, h, lam)
        s, lo, up = raw.s.numpy(), raw.s_low.numpy(), raw.s_up.numpy()
        if family == "scale":
            return lambda kappa, rows: scale_band(s[rows], lo[rows], up[rows], kappa)
        return lambda kappa, rows: (s[rows], lo[rows], up[rows])

    def _calibrate(
        self, reps: Reps, time: np.ndarray, event: np.ndarray, k: int, epochs: int
    ) -> None:
        """Fit the band calibration on inner out-of-fold predictions (``calibration="auto"``:
        the narrowest calibrated band whose calibration-set IBS is within 0.005 of the raw
        curve's)."""
        cfg = self.config
        self.cov_grid = self._coverage_grid(time)
        if cfg.calibration == "none":
            self.calibration = BandCalibration.identity(cfg.nominal)
            self.calibration_report = {"calibration": "none"}
            return
        t0 = _time.perf_counter()
        oof = self._oof_grfn(reps, time, event, k, epochs)
        families = ("scale", "evidential") if cfg.calibration == "auto" else (cfg.calibration,)
        raw_ibs = calibration_ibs(
            self._band_fn("none", oof, self.cov_grid), BandCalibration.identity(cfg.nominal),
            oof["risk"], time, event, self.cov_grid,
        )  # fmt: skip
        report: dict[str, Any] = {"calibration_raw_ibs": raw_ibs}
        fitted = []
        for fam in families:
            fn = self._band_fn(fam, oof, self.cov_grid)
            cal = fit_calibration(
                fam, fn, oof["risk"], time, event, self.cov_grid, cfg.nominal, seed=cfg.seed,
                recentre_groups=cfg.recentre, recentre_slope=cfg.recentre_slope,
                km_noise=cfg.km_noise,
            )  # fmt: skip
            ibs = calibration_ibs(fn, cal, oof["risk"], time, event, self.cov_grid)
            fitted.append((cal, ibs))
            report.update({
                f"calibration_{fam}_width": cal.width,
                f"calibration_{fam}_ibs": ibs,
                **{f"calibration_{fam}_kappa_{g}": v for g, v in enumerate(cal.kappa)},
                **{f"calibration_{fam}_alpha_{g}": v for g, v in enumerate(cal.alpha)},
                **{f"calibration_{fam}_centre_{g}": v for g, v in enumerate(cal.centre)},
                **{f"calibration_{fam}_slope_{g}": v for g, v in enumerate(cal.slope)},
            })  # fmt: skip
        self.calibrations = {c.family: c for c, _ in fitted}
        self.calibrations["none"] = BandCalibration.identity(cfg.nominal)
        ok = [f for f in fitted if f[1] <= raw_ibs + 0.005] or fitted
        self.calibration = min(ok, key=lambda f: f[0].width)[0]
        report["calibration"] = self.calibration.family
        report["seconds_calibration"] = _time.perf_counter() - t0
        self.calibration_report = report
        log.info("band calibration: %s", self.calibration.to_dict())

    def calibrated_band(self, reps: Reps, t: np.ndarray) -> CalibratedBand:
        """The calibrated curve, band and interval levels of the cases ``reps`` at times ``t``."""
        net = self._require_model()
        cal = self.calibration or BandCalibration.identity(self.config.nominal)
        risk = self._risk(net, reps)
        with torch.no_grad():
            mu, var, h = net(reps.x, reps.z)
        grfn = {"pi": reps.pi, "mu": mu, "var": var, "h": h}
        fn = self._band_fn(cal.family, grfn, np.asarray(t, dtype=np.float64))
        s, lo, up, alpha = cal.apply(fn, risk)
        return CalibratedBand(s, lo, up, alpha, risk)

    # -- fit ------------------------------------------------------------------------------
    def fit(self, data: DPsurvData, run: RunDir, *, resume: bool = False) -> DPsurv:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        t0 = _time.perf_counter()
        tr = data.split(cfg.fold, "train")
        time, event = data.time[tr], data.event[tr]
        self.train_time, self.train_event = time, event
        self.edges = quantile_bin_edges(time, event, cfg.n_bins, high=max(1e6, 10 * time.max()))
        cache = run.path / "prototypes.npz"
        if data.tabular:
            assert data.X is not None
            mean, sd = data.X[tr].mean(0), data.X[tr].std(0)
            self.z_scale = (mean, np.where(sd > 1e-8, sd, 1.0))
        elif resume and cache.exists():
            self.prior = PrototypePrior.load(cache)
            log.info("resumed the patch prototypes from %s", cache)
        else:
            self._fit_prior(data, tr)
            assert self.prior is not None
            self.prior.save(cache)
        t_proto = _time.perf_counter() - t0
        reps = self.reps(data, tr)

        # K and the epoch on the inner split, then a refit on the whole outer training fold
        fit_i, val_i = inner_split(time, event, cfg.inner_fraction, cfg.seed)
        sweep = []
        for k in cfg.n_prototypes:
            _, res = self._fit_net(
                reps.take(fit_i), time[fit_i], event[fit_i], k,
                (reps.take(val_i), time[val_i], event[val_i]),
            )  # fmt: skip
            sweep.append({"K": k, "valid_c": res.best_score, "best_epoch": res.best_epoch})
            log.info(
                "K=%d: inner %s %.4f at epoch %d", k, cfg.select_by, res.best_score, res.best_epoch
            )
        best = max(sweep, key=lambda r: r["valid_c"])
        self.n_prototypes = int(best["K"])
        self.model, _ = self._fit_net(
            reps, time, event, self.n_prototypes, None, epochs=max(1, int(best["best_epoch"]))
        )
        self._calibrate(reps, time, event, self.n_prototypes, max(1, int(best["best_epoch"])))
        t_fit = _time.perf_counter() - t0
        # best = last: the refit on the whole training fold is the final model
        run.save_final_checkpoint(self.state_dict())
        pd.DataFrame(sweep).to_csv(run.path / "k_selection.csv", index=False)

        # baselines and the test report
        base_times = self._fit_baselines(data, tr)
        metrics: dict[str, Any] = {
            "data": data.name,
            "fold": cfg.fold,
            "n_train": int(len(tr)),
            "chosen_K": self.n_prototypes,
            **self.calibration_report,
            "seconds_prototypes": t_proto,
            "seconds_dpsurv": t_fit,
            **{f"seconds_{k}": v for k, v in base_times.items()},
        }
        metrics.update(self._ground_truth_checks(data, tr))
        metrics.update(self._report(data, "test", run))
        run.write_metrics(metrics)
        run.write_predictions(self.predict(data, "test"))
        self.plot(run, data)
        log.info("dpsurv run written to %s", run.path)
        return self

    # -- baselines ------------------------------------------------------------------------
    def _fit_baselines(self, data: DPsurvData, tr: np.ndarray) -> dict[str, float]:
        cfg = self.config
        bag_only = {"abmil", "meanpool_cox", "panther_linear"}
        wanted = [b for b in cfg.baselines if (b in bag_only) != data.tabular]
        seconds: dict[str, float] = {}
        self._baseline_models: dict[str, Any] = {}
        for name in wanted:
            t0 = _time.perf_counter()
            self._baseline_models[name] = _BASELINES[name](self, data, tr)
            seconds[name] = _time.perf_counter() - t0
        return seconds

    def _bag_features(self, data: DPsurvData, idx: np.ndarray) -> list[np.ndarray]:
        assert data.cohort is not None
        return [data.cohort.bag(int(i)).features for i in idx]

    def _train_val(self, data: DPsurvData, tr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fit_i, val_i = inner_split(data.time[tr], data.event[tr], self.config.inner_fraction,
                                   self.config.seed)  # fmt: skip
        return tr[fit_i], tr[val_i]

    def _fit_discrete(
        self, module: torch.nn.Module, inputs: Any, data: DPsurvData, tr: np.ndarray, desc: str
    ) -> torch.nn.Module:
        """Train a hazard-logit model ``module(*inputs(idx))`` with the discrete NLL."""
        assert self.edges is not None
        fit_idx, val_idx = self._train_val(data, tr)
        y = torch.as_tensor(bin_index(data.time, self.edges))
        cens = torch.as_tensor(1 - data.event, dtype=torch.float32)

        def loss_fn(rows: np.ndarray) -> torch.Tensor:
            idx = fit_idx[rows]
            s = bl.hazards_to_survival(module(*inputs(idx)))
            i = torch.as_tensor(idx)
            return discrete_nll(s, y[i], cens[i], self.config.alpha)

        def score_fn() -> float:
            s = bl.hazards_to_survival(module(*inputs(val_idx)))
            return harrell_c(data.time[val_idx], data.event[val_idx], _risk_from_edges(s))

        train_module(module, len(fit_idx), loss_fn, score_fn, self._train_config(), desc=desc)
        return module

    # -- evaluation -----------------------------------------------------------------------
    def _grid(self, time: np.ndarray) -> np.ndarray:
        assert self.train_time is not None
        hi = min(float(time.max()), float(self.train_time.max()))
        lo = float(time.min())
        hi = lo + (hi - lo) * 0.999
        return np.linspace(lo, hi, self.config.grid_points)

    def band(self, reps: Reps, t: np.ndarray) -> SurvivalBand:
        """The fused survival band of the cases ``reps`` at times ``t``."""
        net = self._require_model()
        with torch.no_grad():
            return net.band(torch.as_tensor(t, dtype=torch.float64), reps.pi, reps.x, reps.z,
                            self.config.lam)  # fmt: skip

    def _curves(self, data: DPsurvData, idx: np.ndarray, grid: np.ndarray) -> dict[str, Any]:
        """Per model: survival ``(n, T)`` on ``grid`` and risk ``(n,)`` (DPsurv: band too)."""
        assert self.edges is not None
        reps = self.reps(data, idx)
        cb = self.calibrated_band(reps, grid)
        out: dict[str, Any] = {
            "dpsurv": {"surv": cb.s, "s_low": cb.s_low, "s_up": cb.s_up, "risk": cb.risk}
        }
        for name, model in getattr(self, "_baseline_models", {}).items():
            out[name] = _PREDICT[name](self, model, data, idx, grid)
        return out

    def _report(self, data: DPsurvData, split: str, run: RunDir | None) -> dict[str, Any]:
        idx = data.split(self.config.fold, split)
        assert self.train_time is not None and self.train_event is not None
        time, event = data.time[idx], data.event[idx]
        grid = self._grid(time)
        curves = self._curves(data, idx, grid)
        rows = []
        for name, c in curves.items():
            m = survival_metrics(self.train_time, self.train_event, time, event, c["surv"], grid,
                                 c["risk"], tau=float(grid[-1]))  # fmt: skip
            if name == "dpsurv":
                m.update(self._coverage(self.reps(data, idx), time, event))
            rows.append({"model": name, **m})
        self.table = pd.DataFrame(rows)
        self._last_curves = (idx, grid, curves)
        by = self.table.set_index("model")
        flat: dict[str, Any] = {}
        for name in by.index:
            for k, v in by.loc[name].items():
                if pd.notna(v):
                    flat[f"{split}_{k}" if name == "dpsurv" else f"{split}_{name}_{k}"] = float(v)
        if run is not None:
            self.table.to_csv(run.path / f"comparison_{split}.csv", index=False)
        return flat

    def _coverage(self, reps: Reps, time: np.ndarray, event: np.ndarray) -> dict[str, float]:
        """Coverage of the calibrated band and of the raw one on the coverage grid: per risk
        tercile (Kaplan-Meier inside the mean band), per case (IPCW hit rate of the credal
        interval) and the mean band width."""
        grid = self.cov_grid if self.cov_grid is not None else self._coverage_grid(time)
        cb = self.calibrated_band(reps, grid)
        raw = self.band(reps, grid)
        a = 1.0 - self.config.nominal
        out: dict[str, float] = {}
        for tag, lo, up, alpha in (
            ("", cb.s_low, cb.s_up, cb.alpha),
            ("raw_", raw.s_low.numpy(), raw.s_up.numpy(), a),
        ):
            cov = tercile_coverage(time, event, cb.risk, lo, up, grid)
            out.update({f"{tag}coverage_{k}": v for k, v in cov.items()})
            out[f"{tag}coverage_min"] = min(cov.values())
            lower, upper = band_interval(lo, up, grid, alpha)
            out[f"{tag}coverage_case"] = float(ipcw_interval_coverage(time, event, lower, upper))
            out[f"{tag}band_width"] = float(np.mean(up - lo))
        return out

    def _ground_truth_checks(self, data: DPsurvData, tr: np.ndarray) -> dict[str, float]:
        """Synthetic cohorts: prototype ARI, pi against the true proportions, oracle C-index,
        the components ranked by contribution (in true-component ids)."""
        truth = data.truth
        if truth is None or data.cohort is None or "patch_labels" not in truth:
            return {}
        te = data.split(self.config.fold, "test")
        bags = [data.cohort.bag(int(i)) for i in te]
        summ = self.summarise(bags)
        pred = np.concatenate([s.q.argmax(1).numpy() for s in summ])
        true = np.concatenate([truth["patch_labels"][data.case_ids[i]] for i in te])
        # cluster -> true component by majority vote
        mapping = np.array([
            np.bincount(true[pred == c], minlength=truth["proportions"].shape[1]).argmax()
            if np.any(pred == c) else -1
            for c in range(self.config.n_components)
        ])  # fmt: skip
        pi = np.stack([s.pi.numpy() for s in summ])
        pi_true_space = np.zeros((len(te), truth["proportions"].shape[1]))
        for c, j in enumerate(mapping):
            if j >= 0:
                pi_true_space[:, j] += pi[:, c]
        props = truth["proportions"][te]
        r = float(np.corrcoef(pi_true_space.ravel(), props.ravel())[0, 1])
        oracle = harrell_c(data.time[te], data.event[te], truth["log_hazard"][te])
        contrib = self.contributions(data, te)
        rank = np.argsort(-np.abs(contrib).mean(0))
        top = [int(mapping[c]) for c in rank[:2]]
        self._proto_labels = mapping
        return {
            "proto_ari": adjusted_rand_index(true, pred),
            "pi_pearson_r": r,
            "oracle_harrell_c": float(oracle),
            "top2_components": top,
            "top2_are_prognostic": bool(set(top) == set(truth["prognostic_components"])),
        }

    def contributions(self, data: DPsurvData, idx: np.ndarray) -> np.ndarray:
        """Risk change when each component is removed, ``(n, C)`` (see :mod:`.model`)."""
        assert self.edges is not None
        reps = self.reps(data, idx)
        band = self.band(reps, self.edges)
        assert band.components is not None
        rc = _risk_from_edges(band.components.s)
        return component_contributions(reps.pi.numpy(), rc)

    def evaluate(self, data: DPsurvData, split: str = "test", corrupt: str | None = None) -> dict:
        if corrupt is not None:
            raise ConfigError("dpsurv has no corruptions", found=corrupt, fix="drop --corrupt")
        return self._report(data, split, None)

    def predict(self, data: DPsurvData, split: str = "test") -> pd.DataFrame:
        """One row per case: label, risk, the median survival time with its interval (times at
        which S, S_up and S_low cross 0.5 on the grid; NaN beyond it) and the contributions."""
        idx = data.split(self.config.fold, split)
        grid = self._grid(data.time[idx])
        reps = self.reps(data, idx)
        cb = self.calibrated_band(reps, grid)
        cov_grid = self.cov_grid if self.cov_grid is not None else self._coverage_grid(grid)
        lower, upper = self.calibrated_band(reps, cov_grid).interval(cov_grid)

        def median(s: np.ndarray) -> np.ndarray:
            below = s <= 0.5
            first = below.argmax(1)
            return np.where(below.any(1), grid[first], np.nan)

        df = pd.DataFrame({
            "case_id": data.case_ids[idx],
            "time": data.time[idx],
            "event": data.event[idx],
            "risk": cb.risk,
            "median_survival": median(cb.s),
            "median_low": median(cb.s_low),
            "median_up": median(cb.s_up),
            "band_width": (cb.s_up - cb.s_low).mean(1),
            "interval_low": lower,
            "interval_up": upper,
            "interval_level": 1.0 - cb.alpha,
        })  # fmt: skip
        contrib = self.contributions(data, idx)
        for c in range(contrib.shape[1]):
            df[f"pi_{c}"] = reps.pi[:, c].numpy()
            df[f"contribution_{c}"] = contrib[:, c]
        return df

    # -- per-slide report -----------------------------------------------------------------
    def write_prediction_report(
        self, data: DPsurvData, split: str, folder: str | Path, n_cases: int = 5
    ) -> list[Path]:
        """For the first ``n_cases`` cases of ``split``: the survival curve with its band, the
        patch assignment map and the component contributions, one PNG each."""
        from clinfuse.methods.dpsurv import plots

        folder = Path(folder)
        idx = data.split(self.config.fold, split)[:n_cases]
        grid = self._grid(data.time[data.split(self.config.fold, split)])
        reps = self.reps(data, idx)
        cb = self.calibrated_band(reps, grid)
        # the interval on the coverage grid, where its level was calibrated (as in `predict`)
        cov_grid = self.cov_grid if self.cov_grid is not None else self._coverage_grid(grid)
        lower, upper = self.calibrated_band(reps, cov_grid).interval(cov_grid)
        contrib = self.contributions(data, idx)
        cal = self.calibration or BandCalibration.identity(self.config.nominal)
        calibrated = cal.family != "none"
        label = (f"band, calibrated ({cal.family}) to {cal.nominal:.0%}" if calibrated
                 else "raw band [1 - Pl, 1 - Bel] (not calibrated)")  # fmt: skip
        out: list[Path] = []
        for j, i in enumerate(idx):
            case = str(data.case_ids[i])
            out.append(plots.survival_band_png(
                grid, cb.s[j], cb.s_low[j], cb.s_up[j],
                folder / f"{case}_survival.png", title=f"{case} (time {data.time[i]:.0f}, "
                f"{'event' if data.event[i] else 'censored'})", label=label,
                interval=(float(lower[j]), float(upper[j]), 1.0 - float(cb.alpha[j])),
                interval_label=f"event-time interval, calibrated to {cal.nominal:.0%} "
                f"(credal level {1.0 - float(cb.alpha[j]):.0%})" if calibrated else None,
            ))  # fmt: skip
            out.append(plots.contributions_png(contrib[j], folder / f"{case}_contributions.png",
                                               title=case))  # fmt: skip
            if data.cohort is not None:
                from clinfuse.methods.dpsurv.maps import assignment_map_png

                bag = data.cohort.bag(int(i))
                q = self.summarise([bag])[0].q.numpy()
                out.append(assignment_map_png(
                    bag.coords, q.argmax(1), folder / f"{case}_assignment_map.png",
                    n_components=self.config.n_components, title=f"{case}: patch prototypes",
                ))  # fmt: skip
        return out

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        net = self._require_model()
        assert self.edges is not None and self.train_time is not None
        state: dict[str, Any] = {
            "net": net.state_dict(),
            "shape": [
                net.experts.n_experts,
                net.experts.n_prototypes,
                net.experts.n_features,
                net.experts.proto_dim,
            ],  # fmt: skip
            "edges": torch.as_tensor(self.edges),
            "train_time": torch.as_tensor(self.train_time),
            "train_event": torch.as_tensor(self.train_event),
        }
        if self.prior is not None:
            state["prior_means"] = self.prior.means
            state["prior_var"] = self.prior.var
        if self.calibration is not None:
            state["calibration"] = self.calibration.to_dict()
        if self.cov_grid is not None:
            state["cov_grid"] = torch.as_tensor(self.cov_grid)
        if self.z_scale is not None:
            state["z_mean"] = torch.as_tensor(self.z_scale[0])
            state["z_std"] = torch.as_tensor(self.z_scale[1])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        c, k, f, p = (int(v) for v in state["shape"])
        net = DPsurvNet(c, k, f, p)
        net.load_state_dict(state["net"])
        self.model, self.n_prototypes = net.eval(), k
        self.edges = state["edges"].numpy()
        self.train_time = state["train_time"].numpy()
        self.train_event = state["train_event"].numpy()
        if "prior_means" in state:
            self.prior = PrototypePrior(state["prior_means"], state["prior_var"])
        if "z_mean" in state:
            self.z_scale = (state["z_mean"].numpy(), state["z_std"].numpy())
        if "calibration" in state:
            self.calibration = BandCalibration.from_dict(state["calibration"])
        if "cov_grid" in state:
            self.cov_grid = state["cov_grid"].numpy()

    # -- report ---------------------------------------------------------------------------
    def report_table(self) -> str:
        if self.table is None:
            return ""
        cols = ["model", "harrell_c", "uno_c", "antolini_c", "ibs", "inbll", "d_calibration_p",
                "coverage_min", "coverage_case", "band_width"]  # fmt: skip
        df = self.table.reindex(columns=cols)
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, r in df.iterrows():
            cells = [str(r["model"])] + ["" if pd.isna(r[c]) else f"{r[c]:.4f}" for c in cols[1:]]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write_report(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [atomic_write_text(folder / "comparison.md", self.report_table() + "\n")]

    def plot(self, run: RunDir, data: DPsurvData | None = None) -> list[Path]:
        from clinfuse.methods.dpsurv import plots

        out: list[Path] = []
        last = getattr(self, "_last_curves", None)
        if last is not None and data is not None:
            idx, grid, curves = last
            out.append(plots.tercile_km_png(
                data.time[idx], data.event[idx], curves["dpsurv"], grid,
                run.plots / "tercile_bands.png",
            ))  # fmt: skip
            out.append(plots.contributions_png(
                np.abs(self.contributions(data, idx)).mean(0), run.plots / "contributions.png",
                title="mean |risk change| when a component is removed (test cases)",
            ))  # fmt: skip
            if data.cohort is not None:
                out.extend(self.write_prediction_report(data, "test", run.plots / "cases", 2))
        return out

    def demo(self, data: DPsurvData, run: RunDir) -> DemoResult:
        assert self.table is not None
        by = self.table.set_index("model")
        base = "meanpool_cox" if "meanpool_cox" in by.index else "cox"
        ref = float(by.loc[base, "harrell_c"]) if base in by.index else float("nan")
        metrics = run.read_metrics()
        return DemoResult(
            system="dpsurv",
            data=data.name,
            metric="test Harrell C",
            value=float(by.loc["dpsurv", "harrell_c"]),
            baseline=base,
            baseline_value=ref,
            extra={
                "ibs": float(by.loc["dpsurv", "ibs"]),
                "coverage_min": float(by.loc["dpsurv", "coverage_min"]),
                **(
                    {"oracle_c": metrics["oracle_harrell_c"]}
                    if "oracle_harrell_c" in metrics
                    else {}
                ),  # fmt: skip
            },
            plots=sorted(run.plots.glob("*.png")),
        )


# ------------------------------------------------------------------------------------------
# baselines: fit and predict functions, dispatched by name
# ------------------------------------------------------------------------------------------
def _fit_abmil(learner: DPsurv, data: DPsurvData, tr: np.ndarray) -> torch.nn.Module:
    assert learner.edges is not None and data.cohort is not None
    torch.manual_seed(learner.config.seed)
    module = bl.GatedABMIL(data.cohort.feature_dim, len(learner.edges) - 1)
    cache = dict(zip(tr.tolist(), learner._bag_features(data, tr), strict=True))

    def inputs(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return bl.pad_bags([cache[int(i)] for i in idx])

    learner._fit_discrete(module, inputs, data, tr, "ABMIL")
    return module.eval()


def _predict_abmil(learner: DPsurv, module: Any, data: DPsurvData, idx: np.ndarray,
                   grid: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    assert learner.edges is not None
    with torch.no_grad():
        s = torch.cat([
            bl.hazards_to_survival(module(*bl.pad_bags(learner._bag_features(data, idx[j:j + 32]))))
            for j in range(0, len(idx), 32)
        ])  # fmt: skip
    return {"surv": bl.interp_survival(s, learner.edges, grid), "risk": _risk_from_edges(s)}


def _mean_features(learner: DPsurv, data: DPsurvData, idx: np.ndarray) -> np.ndarray:
    if data.tabular:
        assert data.X is not None
        return data.X[idx]
    return np.stack([f.astype(np.float64).mean(0) for f in learner._bag_features(data, idx)])


def _fit_cox(learner: DPsurv, data: DPsurvData, tr: np.ndarray, l2: float = 1e-3) -> Any:
    """Ridge Cox model by L-BFGS on the Breslow partial likelihood."""
    x = _mean_features(learner, data, tr)
    sd = x.std(0)
    model = bl.CoxLinear(x.shape[1], x.mean(0), np.where(sd > 1e-8, sd, 1.0))
    xt = torch.as_tensor(x)
    t = torch.as_tensor(data.time[tr])
    e = torch.as_tensor(data.event[tr], dtype=torch.float64)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = bl.cox_partial_nll(model(xt), t, e) + l2 * (model.beta**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        eta = model(xt).numpy()
    jumps, cumhaz = bl.breslow_cumhaz(eta, data.time[tr], data.event[tr])
    return (model, jumps, cumhaz)


def _predict_cox(learner: DPsurv, fitted: Any, data: DPsurvData, idx: np.ndarray,
                 grid: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    model, jumps, cumhaz = fitted
    with torch.no_grad():
        eta = model(torch.as_tensor(_mean_features(learner, data, idx))).numpy()
    return {"surv": bl.cox_survival(eta, jumps, cumhaz, grid), "risk": eta}


def _panther_vectors(learner: DPsurv, data: DPsurvData, idx: np.ndarray) -> np.ndarray:
    reps = learner.reps(data, idx)
    return reps.x.reshape(len(idx), -1).numpy()


def _fit_panther_linear(learner: DPsurv, data: DPsurvData, tr: np.ndarray) -> Any:
    assert learner.edges is not None
    torch.manual_seed(learner.config.seed)
    v = _panther_vectors(learner, data, tr)
    pos = {int(i): j for j, i in enumerate(tr)}
    sd = v.std(0)
    module = bl.LinearHazard(v.shape[1], len(learner.edges) - 1, v.mean(0),
                             np.where(sd > 1e-8, sd, 1.0))  # fmt: skip
    vt = torch.as_tensor(v, dtype=torch.float32)

    def inputs(idx: np.ndarray) -> tuple[torch.Tensor]:
        return (vt[torch.as_tensor([pos[int(i)] for i in idx])],)

    learner._fit_discrete(module, inputs, data, tr, "PANTHER+linear")
    return module.eval()


def _predict_panther_linear(learner: DPsurv, module: Any, data: DPsurvData, idx: np.ndarray,
                            grid: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    assert learner.edges is not None
    with torch.no_grad():
        v = torch.as_tensor(_panther_vectors(learner, data, idx), dtype=torch.float32)
        s = bl.hazards_to_survival(module(v))
    return {"surv": bl.interp_survival(s, learner.edges, grid), "risk": _risk_from_edges(s)}


_BASELINES = {
    "abmil": _fit_abmil,
    "meanpool_cox": _fit_cox,
    "cox": _fit_cox,
    "panther_linear": _fit_panther_linear,
}
_PREDICT = {
    "abmil": _predict_abmil,
    "meanpool_cox": _predict_cox,
    "cox": _predict_cox,
    "panther_linear": _predict_panther_linear,
}

__all__ = ["DPsurv", "DPsurvData", "Reps", "adjusted_rand_index"]
