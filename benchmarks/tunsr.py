"""Tunsr on the real knowledge graphs of ../shared/data/kg (and pykeen's Nations), one process per
data set, at a stated CPU budget.

For each set: train with the quick architecture for ``--epochs`` epochs (at most
``--max-train-queries`` training queries per epoch, drawn once with a fixed seed), then evaluate
the test split with filtered realistic ranks. Records MRR / Hits@1/10, training and evaluation
queries per second, seconds per epoch and the peak resident memory of the process. Writes
``benchmarks/results/tunsr.json`` and ``tunsr.md`` next to it; finished sets are kept (resumable).

    .venv/bin/python benchmarks/tunsr.py                       # every set found
    .venv/bin/python benchmarks/tunsr.py --sets family --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLINFUSE_SHARED_DATA", REPO.parent / "shared" / "data")) / "kg"

#: name -> (data source, scenario, published reference)
SETS = {
    "nations": ("nations", "transductive", "no common reference split (pykeen's, re-split 3:1)"),
    "family": (str(SHARED / "family_neurallp"), "transductive", "RED-GNN .992, AdaProp .988 MRR"),
    "kinship": (
        str(SHARED / "kinship_rnnlogic"),
        "transductive",
        "RNNLogic w/o emb. .639, with RotatE .722 MRR",
    ),
    "fb237_v1": (
        str(SHARED / "inductive" / "fb237_v1"),
        "inductive",
        "RED-GNN paper (full ranking)",
    ),
    "WN18RR_v1": (str(SHARED / "inductive" / "WN18RR_v1"), "inductive", "RED-GNN paper"),
    "nell_v1": (str(SHARED / "inductive" / "nell_v1"), "inductive", "RED-GNN paper"),
    "icews14": (str(SHARED / "icews14_forecasting"), "extrapolation", "TLogic .430 MRR"),
}


def run_one(name: str, epochs: int, max_train: int, overrides: list[str]) -> dict:
    import numpy as np
    import torch

    from clinfuse.api import make_config
    from clinfuse.core.runs import RunDir
    from clinfuse.methods.tunsr.method import Tunsr

    source, scenario, _ = SETS[name]
    cfg = make_config(
        "tunsr",
        preset="quick",
        overrides=[
            f"data={source}",
            f"scenario={scenario}",
            f"epochs={epochs}",
            "progress=false",
            "patience=0",
            *overrides,
        ],
    )
    learner = Tunsr(cfg)
    kg = learner.load_data()
    n_train_all = len(kg.queries["train"])
    if n_train_all > max_train:
        keep = np.random.default_rng(0).choice(n_train_all, max_train, replace=False)
        kg.queries["train"] = kg.queries["train"][np.sort(keep)]
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(Path(tmp) / "run", "tunsr", {})
        t0 = time.perf_counter()
        learner.fit(kg, run)
        fit_seconds = time.perf_counter() - t0
        history = run.read_history()
        metrics = run.read_metrics()
    epoch_s = [float(r["train_seconds"]) for r in history]
    t0 = time.perf_counter()
    learner.evaluate(kg, "test")
    eval_seconds = time.perf_counter() - t0
    n_train_q = 2 * len(kg.queries["train"])
    n_test_q = 2 * len(kg.queries["test"])
    return {
        "data": kg.summary(),
        "scenario": scenario,
        "train_queries_used": len(kg.queries["train"]),
        "train_queries_available": n_train_all,
        "epochs": len(history),
        "test_mrr": metrics["test_mrr"],
        "test_hits@1": metrics["test_hits@1"],
        "test_hits@10": metrics["test_hits@10"],
        "test_optimistic_mrr": metrics["test_optimistic.mrr"],
        "test_pessimistic_mrr": metrics["test_pessimistic.mrr"],
        "seconds_per_epoch": sum(epoch_s) / max(len(epoch_s), 1),
        "train_queries_per_s": n_train_q / (sum(epoch_s) / max(len(epoch_s), 1)),
        "eval_queries_per_s": n_test_q / eval_seconds,
        "fit_seconds": fit_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-train-queries", type=int, default=4000)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "tunsr.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # child process: one data set, result as JSON on stdout
        res = run_one(args.one, args.epochs, args.max_train_queries, args.set)
        print("RESULT " + json.dumps(res))
        return
    out = Path(args.out)
    state = json.loads(out.read_text()) if out.exists() else {}
    state.setdefault("results", {})
    state["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    state["budget"] = {
        "epochs": args.epochs,
        "max_train_queries": args.max_train_queries,
        "overrides": args.set,
    }
    from clinfuse.core.runs import atomic_write_json

    for name in args.sets:
        source = SETS[name][0]
        if name != "nations" and not Path(source).exists():
            print(f"skipping {name}: {source} not present")
            continue
        if name in state["results"]:
            continue
        print(f"{name} ...", flush=True)
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--epochs",
            str(args.epochs),
            "--max-train-queries",
            str(args.max_train_queries),
        ]
        for s in args.set:
            cmd += ["--set", s]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            state["results"][name] = {"error": proc.stderr[-2000:]}
            print(f"{name} failed:\n{proc.stderr[-2000:]}")
        else:
            state["results"][name] = json.loads(lines[-1][len("RESULT ") :])
        atomic_write_json(out, state)
    rows = [
        "| set | scenario | train queries used | epochs | test MRR (opt/pess) | Hits@1 | "
        "Hits@10 | s/epoch | train q/s | eval q/s | peak RSS MiB | reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in state["results"].items():
        if "error" in r:
            rows.append(f"| {name} | failed | | | | | | | | | | |")
            continue
        rows.append(
            f"| {name} | {r['scenario']} | {r['train_queries_used']} of "
            f"{r['train_queries_available']} | {r['epochs']} | {r['test_mrr']:.3f} "
            f"({r['test_optimistic_mrr']:.3f}/{r['test_pessimistic_mrr']:.3f}) | "
            f"{r['test_hits@1']:.3f} | {r['test_hits@10']:.3f} | {r['seconds_per_epoch']:.1f} | "
            f"{r['train_queries_per_s']:.0f} | {r['eval_queries_per_s']:.0f} | "
            f"{r['peak_rss_mib']:.0f} | {SETS[name][2]} |"
        )
    table = "\n".join(rows)
    md = out.with_suffix(".md")
    md.write_text(f"budget {state['budget']}; machine {state['machine']}\n\n{table}\n")
    print(table)
    print(f"results written to {out} and {md}")


if __name__ == "__main__":
    main()
