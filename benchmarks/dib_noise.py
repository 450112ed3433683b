"""DIB against its no-IB and concatenation ablations under test-time audio/vision noise.

For every variant (preset) and seed: train on ``synthetic_mosi`` with the quick settings, then
evaluate the test split with Gaussian noise of std rho x (training std) on audio and vision.
Writes a JSON (per-seed results, mean and sd, the machine) and a PNG, and prints a table.
Resumable: finished (variant, seed) pairs are kept in the JSON and not rerun.

    .venv/bin/python benchmarks/dib_noise.py                 # 5 seeds, about 15 trainings
    .venv/bin/python benchmarks/dib_noise.py --seeds 0 --rhos 0 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import clinfuse
from clinfuse.core.runs import atomic_write_json
from clinfuse.methods.dib.method import corrupt_split, fit_ridge
from clinfuse.metrics.msa import mosi_metrics
from clinfuse.report import plots

VARIANTS = {"DIB": "quick", "no IB": "no_ib", "concat fusion": "concat"}
METRICS = ("non0_acc2", "mae")


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
    }


def run_one(
    preset: str, seed: int, rhos: list[float], extra: list[str], data_path: Path | None
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        learner, _ = clinfuse.run(
            "dib",
            preset=preset,
            overrides=[f"seed={seed}", "progress=false", *extra],
            out=Path(tmp) / "run",
            data=data_path,
        )
        seconds = time.perf_counter() - t0
        data = learner.load_data(str(data_path) if data_path else None)
        res: dict = {"train_seconds": seconds}
        for rho in rhos:
            spec = None if rho == 0 else f"gaussian:audio,vision:{rho}"
            m = learner.evaluate(data, "test", corrupt=spec)
            res[str(rho)] = {k: float(m[k]) for k in METRICS}
    return res


def ridge(rhos: list[float], data_path: Path | None) -> dict:
    learner = clinfuse.api.get_method("dib")(clinfuse.api.make_config("dib"))
    data = learner.load_data(str(data_path) if data_path else None)
    predict = fit_ridge(data.splits["train"])
    out = {}
    for rho in rhos:
        spec = None if rho == 0 else f"gaussian:audio,vision:{rho}"
        split = corrupt_split(data, "test", spec, 0, ("text", "audio", "vision"))
        m = mosi_metrics(predict(split), split.labels)
        out[str(rho)] = {k: float(m[k]) for k in METRICS}
    return out


def summarise(results: dict, rhos: list[float]) -> dict:
    summary: dict = {}
    for variant, per_seed in results.items():
        summary[variant] = {}
        for rho in rhos:
            for k in METRICS:
                vals = [r[str(rho)][k] for r in per_seed.values()]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                summary[variant].setdefault(k, {})[str(rho)] = {
                    "mean": statistics.fmean(vals),
                    "sd": sd,
                    "n": len(vals),
                }
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--rhos", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument(
        "--snr",
        type=float,
        nargs=3,
        metavar=("T", "A", "V"),
        default=None,
        help="signal-to-noise of text, audio, vision in the synthetic data (default: the "
        "synthetic_mosi preset, 4 / 0.5 / 0.5)",
    )
    ap.add_argument("--out", default="benchmarks/results/dib_noise.json")
    args = ap.parse_args()
    data_path = None
    if args.snr:
        from clinfuse.methods.dib.synthetic import write_synthetic

        data_path = Path(args.out).with_suffix(".data.pkl")
        write_synthetic("synthetic_mosi", data_path, snr=tuple(args.snr))
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    state = json.loads(out.read_text()) if out.exists() else {}
    if (state.get("rhos"), state.get("set"), state.get("snr")) != (args.rhos, args.set, args.snr):
        state = {"rhos": args.rhos, "set": args.set, "snr": args.snr, "results": {}}
    state["machine"] = machine()
    for variant in args.variants:
        done = state["results"].setdefault(variant, {})
        for seed in args.seeds:
            if str(seed) in done:
                continue
            print(f"training {variant} (preset {VARIANTS[variant]}), seed {seed} ...", flush=True)
            done[str(seed)] = run_one(VARIANTS[variant], seed, args.rhos, args.set, data_path)
            atomic_write_json(out, state)  # resumable: each finished pair is kept
    state["ridge (late fusion)"] = ridge(args.rhos, data_path)
    state["summary"] = summarise({v: state["results"][v] for v in args.variants}, args.rhos)
    atomic_write_json(out, state)

    lines = [
        "| variant | metric | "
        + " | ".join(f"rho={r:g}" for r in args.rhos)
        + " | clean-rho_max |",
        "|---|---|" + "---|" * (len(args.rhos) + 1),
    ]
    for variant, per in state["summary"].items():
        for k in METRICS:
            cells = [
                f"{per[k][str(r)]['mean']:.4f} ± {per[k][str(r)]['sd']:.4f}" for r in args.rhos
            ]
            drop = per[k][str(args.rhos[0])]["mean"] - per[k][str(args.rhos[-1])]["mean"]
            lines.append(f"| {variant} | {k} | " + " | ".join(cells) + f" | {drop:+.4f} |")
    for k in METRICS:
        cells = [f"{state['ridge (late fusion)'][str(r)][k]:.4f}" for r in args.rhos]
        drop = (
            state["ridge (late fusion)"][str(args.rhos[0])][k]
            - state["ridge (late fusion)"][str(args.rhos[-1])][k]
        )
        lines.append(f"| ridge (late fusion) | {k} | " + " | ".join(cells) + f" | {drop:+.4f} |")
    table = "\n".join(lines)
    md = out.with_suffix(".md")
    setting = f"synthetic_mosi, snr (T, A, V) = {tuple(args.snr) if args.snr else (4.0, 0.5, 0.5)}"
    md.write_text(f"{setting}; seeds {args.seeds}; machine {state['machine']}\n\n{table}\n")
    png = plots.curves(
        args.rhos,
        {
            v: [per["non0_acc2"][str(r)]["mean"] for r in args.rhos]
            for v, per in state["summary"].items()
        },
        out.with_suffix(".png"),
        errors={
            v: [per["non0_acc2"][str(r)]["sd"] for r in args.rhos]
            for v, per in state["summary"].items()
        },
        xlabel="Gaussian noise rho on audio+vision (x train std)",
        ylabel="test Non0 Acc-2",
        title=f"{setting}, {len(args.seeds)} seeds (mean ± sd)",
    )
    if data_path:
        data_path.unlink()
    print(table)
    print(f"results written to {out}, {md}, {png}")


if __name__ == "__main__":
    main()
