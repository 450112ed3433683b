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
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_info  # noqa: E402  (benchmarks/ is on sys.path)

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
    # evaluation speed on at most 1000 test triples (the full test split was ranked in fit)
    rows = np.arange(min(1000, len(kg.queries["test"])))
    queries = learner._queries(kg, "test", rows)
    t0 = time.perf_counter()
    learner._scores(learner.model, kg, "test", queries)
    eval_seconds = time.perf_counter() - t0
    n_train_q = 2 * len(kg.queries["train"])
    n_test_q = len(queries)
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
        "device": str(learner._device()),
        "peak_gpu_mib": (
            torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
        ),
        "train_seconds_total": sum(epoch_s),
        "valid_mrr_per_epoch": [float(r["valid_mrr"]) for r in history],
    }


def _row(name: str, r: dict) -> str:
    if "error" in r:
        return f"| {name} | failed: {r['error'].strip().splitlines()[-1][:80]} |" + " |" * 11
    ref = SETS[r.get("set", name)][2]
    return (
        f"| {name} | {r['scenario']} | {r['train_queries_used']} of "
        f"{r['train_queries_available']} | {r['epochs']} | {r['test_mrr']:.3f} "
        f"({r['test_optimistic_mrr']:.3f}/{r['test_pessimistic_mrr']:.3f}) | "
        f"{r['test_hits@1']:.3f} | {r['test_hits@10']:.3f} | {r['seconds_per_epoch']:.1f} | "
        f"{r['train_queries_per_s']:.0f} | {r['eval_queries_per_s']:.0f} | "
        f"{r['peak_rss_mib']:.0f} / {r.get('peak_gpu_mib', 0):.0f} | {ref} |"
    )


def _plan(args: argparse.Namespace) -> list[dict]:
    """Jobs: ``--plan FILE`` (a JSON list of {set, label, epochs, max_train_queries,
    overrides}) or one job per ``--sets`` entry with the command-line budget."""
    if args.plan:
        jobs = json.loads(Path(args.plan).read_text())
        for j in jobs:
            if j["set"] not in SETS:
                raise SystemExit(f"unknown set {j['set']!r} in {args.plan}; one of {list(SETS)}")
            j.setdefault("label", j["set"])
            j.setdefault("epochs", args.epochs)
            j.setdefault("max_train_queries", args.max_train_queries)
            j["overrides"] = [*args.set, *j.get("overrides", [])]
        return jobs
    return [
        {
            "set": n,
            "label": n,
            "epochs": args.epochs,
            "max_train_queries": args.max_train_queries,
            "overrides": list(args.set),
        }
        for n in args.sets
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-train-queries", type=int, default=4000)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--plan", help="JSON list of jobs (set, label, epochs, overrides, ...)")
    ap.add_argument("--jobs", type=int, default=1, help="data sets run at once")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per job (0: default)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per job")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "tunsr.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # child process: one data set, result as JSON on stdout
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        res = run_one(args.one, args.epochs, args.max_train_queries, args.set)
        print("RESULT " + json.dumps(res))
        return
    from clinfuse.core.runs import atomic_write_json

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = json.loads(out.read_text()) if out.exists() else {}
    state.setdefault("results", {})
    state["machine"] = machine_info()
    pending = []
    for job in _plan(args):
        source = SETS[job["set"]][0]
        if job["set"] != "nations" and not Path(source).exists():
            print(f"skipping {job['label']}: {source} not present")
        elif job["label"] not in state["results"]:  # finished jobs are kept (resumable)
            pending.append(job)
    running: list[tuple[dict, subprocess.Popen, float]] = []
    while pending or running:
        while pending and len(running) < max(args.jobs, 1):
            job = pending.pop(0)
            cmd = [sys.executable, __file__, "--one", job["set"], "--epochs", str(job["epochs"])]
            cmd += ["--max-train-queries", str(job["max_train_queries"])]
            cmd += ["--threads", str(args.threads)]
            for o in job["overrides"]:
                cmd += ["--set", o]
            print(f"{job['label']} started: {' '.join(job['overrides'])}", flush=True)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            running.append((job, proc, time.perf_counter()))
        time.sleep(1.0)
        for item in list(running):
            job, proc, started = item
            late = args.timeout is not None and time.perf_counter() - started > args.timeout
            if proc.poll() is None and not late:
                continue
            if late and proc.poll() is None:
                proc.kill()
            stdout, stderr = proc.communicate()
            running.remove(item)
            lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
            if lines:
                res = json.loads(lines[-1][len("RESULT ") :])
                res.update(set=job["set"], overrides=job["overrides"])
            else:
                why = f"timed out after {args.timeout:.0f} s" if late else stderr[-2000:]
                res = {"error": why or "no result", "set": job["set"]}
            state["results"][job["label"]] = res
            atomic_write_json(out, state)
            print(_row(job["label"], res), flush=True)
    rows = [
        "| run | scenario | train queries used | epochs | test MRR (opt/pess) | Hits@1 | "
        "Hits@10 | s/epoch | train q/s | eval q/s | peak RSS / GPU MiB | reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows += [_row(name, r) for name, r in state["results"].items()]
    table = "\n".join(rows)
    md = out.with_suffix(".md")
    md.write_text(f"machine {state['machine']}\n\n{table}\n")
    print(table)
    print(f"results written to {out} and {md}")


if __name__ == "__main__":
    main()
