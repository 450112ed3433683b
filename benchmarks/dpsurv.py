r"""Benchmark: DPsurv against its baselines by 5-fold nested cross-validation.

Data sets: the planted synthetic WSI cohort (400 cases, 6 morphologies; baselines ABMIL with the
discrete head, mean-pool Cox, PANTHER + linear head) and, in tabular mode (the evidential head on
the feature vector, one component; the ``tabular`` preset: z-scored features, continuous GRFN
NLL), WHAS500 and veteran from the scikit-survival wheel (baseline: a linear Cox model). Per
outer fold ``clinfuse fit dpsurv`` runs with

* ``dpsurv``: K (ENNreg prototypes per expert) chosen in {1, 2, 3, 4} on the inner 15% split of
  the outer training fold by the validation loss, then refitted on the whole outer training fold
  (the nested selection of the paper's code);
* ``dpsurv_k1``: K fixed to 1 (the quick preset's choice);

and the test fold reports Harrell's C, IBS (IPCW, censoring from the training fold), the
minimum tercile coverage of the belief/plausibility band and the seconds per fold. The table
gives mean and SD over the 5 folds; the synthetic rows add the oracle C of the true log-hazard.

Usage::

    .venv/bin/python benchmarks/dpsurv.py            # all three data sets, about 2 min on 2 CPUs
    .venv/bin/python benchmarks/dpsurv.py --quick    # synthetic only, 2 folds

Writes ``benchmarks/results/dpsurv.json`` and ``dpsurv.md`` (``--quick``: in the temp folder).
"""

from __future__ import annotations

import argparse
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
from clinfuse.core.runs import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = {
    "synthetic": {"preset": "quick", "overrides": {}},
    "whas500": {"preset": "tabular", "overrides": {"data": "whas500"}},
    "veteran": {"preset": "tabular", "overrides": {"data": "veteran"}},
}
VARIANTS = {"dpsurv": {"n_prototypes": (1, 2, 3, 4)}, "dpsurv_k1": {"n_prototypes": (1,)}}
COLUMNS = ("harrell_c", "ibs", "coverage_min")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="synthetic only, 2 outer folds")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.folds, args.datasets = 2, ["synthetic"]
    quick_out = Path(tempfile.gettempdir()) / "clinfuse_bench" / "dpsurv_quick.json"
    args.out = args.out or (quick_out if args.quick else RESULTS / "dpsurv.json")
    return args


def one_fold(name: str, fold: int, variant: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    spec = DATASETS[name]
    overrides = {"progress": False, "fold": fold, **spec["overrides"], **VARIANTS[variant]}
    if variant != "dpsurv":
        overrides["baselines"] = ()  # baselines once per fold, with the nested variant
    with tempfile.TemporaryDirectory(prefix="dpsurv_bench_") as tmp:
        t0 = time.perf_counter()
        learner, rd = fit_method("dpsurv", preset=spec["preset"], overrides=overrides, out=tmp)
        wall = time.perf_counter() - t0
        metrics = rd.read_metrics()
        table = pd.read_csv(rd.path / "comparison_test.csv")
    data = learner.load_data()
    te = data.split(fold, "test")
    grid = np.linspace(data.time.min(), np.quantile(data.time, 0.98), 100)
    reps = learner.reps(data, te)
    band = learner.band(reps, grid)
    oof = {"data": data, "idx": te, "grid": grid, "risk": learner._risk(learner.model, reps),
           "lo": band.s_low.numpy(), "up": band.s_up.numpy()}  # fmt: skip
    rows = []
    for _, r in table.iterrows():
        model = variant if r["model"] == "dpsurv" else r["model"]
        seconds = metrics.get(f"seconds_{r['model']}") if model not in VARIANTS else (
            metrics["seconds_dpsurv"]
        )  # fmt: skip
        row = {"data": name, "fold": fold, "model": model, "seconds": seconds,
               **{c: r.get(c, np.nan) for c in COLUMNS}}  # fmt: skip
        if model in VARIANTS:
            row["chosen_K"] = metrics["chosen_K"]
            row["fit_wall_seconds"] = wall
            row["oracle_c"] = metrics.get("oracle_harrell_c", np.nan)
        rows.append(row)
    return rows, oof


def pool(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Harrell C and tercile coverage of the out-of-fold predictions of all cases."""
    from clinfuse.metrics.survival import harrell_c, tercile_coverage

    data = parts[0]["data"]
    n, t = len(data.time), len(parts[0]["grid"])
    risk, lo, up = np.full(n, np.nan), np.zeros((n, t)), np.zeros((n, t))
    for p in parts:
        risk[p["idx"]], lo[p["idx"]], up[p["idx"]] = p["risk"], p["lo"], p["up"]
    seen = ~np.isnan(risk)
    time_, event = data.time[seen], data.event[seen]
    oracle = None
    if data.truth is not None:
        oracle = harrell_c(time_, event, data.truth["log_hazard"][seen])
    return {
        "harrell_c": harrell_c(time_, event, risk[seen]),
        "oracle_c": oracle,
        "coverage": tercile_coverage(
            time_, event, risk[seen], lo[seen], up[seen], parts[0]["grid"]
        ),  # fmt: skip
    }


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    agg = {c: ["mean", "std"] for c in (*COLUMNS, "seconds")}
    out = rows.groupby(["data", "model"], sort=False).agg(agg)
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    return out.reset_index()


def to_markdown(payload: dict[str, Any]) -> str:
    summary = pd.DataFrame(payload["summary"])
    rows = pd.DataFrame(payload["rows"])
    lines = [
        f"# DPsurv benchmark ({payload['mode']})",
        "",
        f"{payload['folds']}-fold cross-validation, seed 0; mean (SD) over the outer folds. "
        "`dpsurv`: K in {1,2,3,4} chosen on the inner split (nested); `dpsurv_k1`: K = 1. "
        "Coverage: the smallest share, over the three risk terciles of the test fold, of grid "
        "times at which the tercile's Kaplan-Meier lies inside its mean band (DPsurv only). "
        "Seconds: model fit per fold (DPsurv: prototypes excluded, K sweep and refit included).",
        "",
        "| data | model | Harrell C | IBS | coverage (min tercile) | seconds / fold |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        cov = (
            "" if np.isnan(r["coverage_min_mean"])
            else f"{r['coverage_min_mean']:.2f} ({r['coverage_min_std']:.2f})"
        )  # fmt: skip
        lines.append(
            f"| {r['data']} | {r['model']} | {r['harrell_c_mean']:.3f} ({r['harrell_c_std']:.3f})"
            f" | {r['ibs_mean']:.3f} ({r['ibs_std']:.3f}) | {cov} | {r['seconds_mean']:.1f} |"
        )
    syn = rows[(rows["data"] == "synthetic") & (rows["model"] == "dpsurv")]
    if len(syn):
        lines += [
            "",
            "Synthetic cohort, per fold: DPsurv (nested K) against the oracle C of the true "
            "log-hazard on the same test fold:",
            "",
            "| fold | chosen K | DPsurv C | oracle C | gap |",
            "|---|---|---|---|---|",
        ]
        for _, r in syn.iterrows():
            lines.append(
                f"| {r['fold']} | {r['chosen_K']:.0f} | {r['harrell_c']:.3f} | "
                f"{r['oracle_c']:.3f} | {r['harrell_c'] - r['oracle_c']:+.3f} |"
            )
    pooled = payload.get("pooled") or []
    if pooled:
        lines += [
            "",
            "Out-of-fold predictions of all cases pooled over the outer folds (one test fold's "
            "risk terciles hold about 25 cases, whose Kaplan-Meier is too noisy for a band check):",
            "",
            "| data | model | pooled Harrell C | oracle C | coverage low / mid / high tercile |",
            "|---|---|---|---|---|",
        ]
        for r in pooled:
            oracle = "" if r["oracle_c"] is None else f"{r['oracle_c']:.3f}"
            cov = " / ".join(
                f"{r['coverage'][k]:.2f}" for k in ("low_risk", "mid_risk", "high_risk")
            )
            lines.append(
                f"| {r['data']} | {r['model']} | {r['harrell_c']:.3f} | {oracle} | {cov} |"
            )
    lines += ["", describe(payload["machine"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info()
    rows: list[dict[str, Any]] = []
    pooled: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for name in args.datasets:
        parts: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for fold in range(args.folds):
            for variant in VARIANTS:
                fold_rows, oof = one_fold(name, fold, variant)
                rows.extend(fold_rows)
                parts[variant].append(oof)
                print(f"{name} fold {fold} {variant}: done ({time.perf_counter() - t0:.0f} s)",
                      flush=True)  # fmt: skip
        pooled.extend({"data": name, "model": v, **pool(p)} for v, p in parts.items())
    frame = pd.DataFrame(rows)
    payload = {
        "benchmark": "dpsurv",
        "mode": "quick" if args.quick else "full",
        "folds": args.folds,
        "machine": machine,
        "args": {k: str(v) for k, v in vars(args).items()},
        "total_seconds": time.perf_counter() - t0,
        "pooled": pooled,
        "rows": frame.replace({np.nan: None}).to_dict(orient="records"),
        "summary": summarise(frame).replace({np.nan: None}).to_dict(orient="records"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, payload)
    md = args.out.with_suffix(".md")
    payload["summary"] = summarise(frame).to_dict(orient="records")
    payload["rows"] = frame.to_dict(orient="records")
    atomic_write_text(md, to_markdown(payload))
    print(to_markdown(payload))
    print(f"wrote {args.out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
