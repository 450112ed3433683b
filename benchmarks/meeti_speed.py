r"""Benchmark: MEETI per-record speed (parameters + 300-dpi image), ours against a naive pipeline.

Both run in this one process (records per second per core), on the same 10-s 12-lead 500 Hz
records, in the same run:

* **ours**: :func:`clinfuse.builders.meeti.params.delineate_record` (multi-lead R-peak vote,
  ``prominence`` delineation of every lead) +
  :func:`~clinfuse.builders.meeti.params.summarise_record` + the numpy/Pillow renderer
  :func:`~clinfuse.builders.meeti.plot.write_ecg_png` (3x4 + rhythm strip);
* **naive**: ``neurokit2.ecg_process`` on each of the 12 leads (what a user would call first) +
  a plain matplotlib 3x4 figure with a grid saved at 300 dpi
  (:func:`~clinfuse.builders.meeti.plot.naive_render_png`).

Records: the embedded default (neurokit2-simulated) or, with ``--ludb``, LUDB records from
``../shared/data/ecg/ludb`` (real ECGs). The ratio of the medians is the claim; goal >= 3x.

Usage::

    .venv/bin/python benchmarks/meeti_speed.py            # 8 simulated records, ~1 min
    .venv/bin/python benchmarks/meeti_speed.py --ludb 10  # plus 10 LUDB records

Writes ``benchmarks/results/meeti_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _machine import describe, machine_info  # noqa: E402  (benchmarks/ is on sys.path)
from clinfuse.builders.meeti import params, plot
from clinfuse.builders.meeti.default_data import simulated_records
from clinfuse.core.runs import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(
    os.environ.get("CLINFUSE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def ours(signal: np.ndarray, fs: float, leads: tuple[str, ...], path: Path) -> None:
    beats = params.delineate_record(signal, fs, leads, params.ParamsConfig())
    params.summarise_record(beats, leads, fs)
    plot.write_ecg_png(signal, fs, leads, path, plot.PlotConfig(dpi=300))


def naive(signal: np.ndarray, fs: float, leads: tuple[str, ...], path: Path) -> None:
    import neurokit2 as nk

    for j in range(signal.shape[1]):
        try:
            nk.ecg_process(signal[:, j], sampling_rate=int(fs))
        except Exception:  # noqa: BLE001 - a naive user's loop skips failing leads
            pass
    plot.naive_render_png(signal, fs, leads, path, dpi=300)


def time_one(fn: Any, rec: Any, folder: Path, tag: str) -> float:
    t0 = time.perf_counter()
    fn(rec.signal, rec.fs, tuple(rec.leads), folder / f"{tag}.png")
    return time.perf_counter() - t0


def ludb_records(n: int) -> list[Any]:
    from clinfuse.builders.meeti import io

    root = SHARED / "ecg" / "ludb"
    if not root.exists():
        print(f"LUDB not found under {root}: skipped")
        return []
    refs = io.scan(root, "ludb")[:n]
    return [io.load(r, io.LoadConfig()) for r in refs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=8, help="simulated records")
    p.add_argument("--ludb", type=int, default=0, help="LUDB records as well")
    p.add_argument("--out", type=Path, default=RESULTS / "meeti_speed.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    machine = machine_info()
    sets = {"simulated": simulated_records(n=args.records, seed=0)}
    if args.ludb:
        sets["ludb"] = ludb_records(args.ludb)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        warm = sets["simulated"][0]
        time_one(ours, warm, folder, "warm_o")  # imports and caches outside the timing
        time_one(naive, warm, folder, "warm_n")
        for name, recs in sets.items():
            for i, rec in enumerate(recs):
                t_o = time_one(ours, rec, folder, f"o{i}")
                t_n = time_one(naive, rec, folder, f"n{i}")
                rows.append({"set": name, "record": str(rec.ref.study_id), "ours_s": t_o,
                             "naive_s": t_n})  # fmt: skip
                print(f"{name} {rec.ref.study_id}: ours {t_o:.3f} s, naive {t_n:.3f} s", flush=True)
    summary = {}
    for name in sets:
        sub = [r for r in rows if r["set"] == name]
        if not sub:
            continue
        o = float(np.median([r["ours_s"] for r in sub]))
        n = float(np.median([r["naive_s"] for r in sub]))
        summary[name] = {"records": len(sub), "ours_median_s": o, "naive_median_s": n,
                         "ours_records_per_s": 1 / o, "naive_records_per_s": 1 / n,
                         "speedup": n / o}  # fmt: skip
    payload = {"benchmark": "meeti_speed", "machine": machine, "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, payload)
    lines = [
        "# MEETI speed: parameters + 300-dpi image per record, one core",
        "",
        "ours = multi-lead R-peak vote + prominence delineation of 12 leads + summary + "
        "numpy/Pillow renderer; naive = neurokit2 `ecg_process` per lead + plain matplotlib "
        "3x4 figure at 300 dpi. Same records, same process, one torch thread.",
        "",
        "| records | n | ours (s/record) | naive (s/record) | ours records/s/core | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['records']} | {s['ours_median_s']:.3f} | {s['naive_median_s']:.3f} | "
            f"{s['ours_records_per_s']:.2f} | **{s['speedup']:.2f}x** |"
        )
    lines += ["", "Goal: >= 3x.", "", describe(machine), ""]
    md = args.out.with_suffix(".md")
    atomic_write_text(md, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
