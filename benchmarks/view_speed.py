r"""Benchmark: a 1,000-record MEETI build's `clinfuse view` site opens its index in < 2 s.

Steps, all in this run:

1. a real MEETI build of the embedded default (``clinfuse build meeti``, quick preset: the
   simulated records plus the packaged real recordings) - the **baseline** site;
2. a 1,000-record build made from it: each new study id reuses the files of one real study
   (image, beats table and interpretation hard-linked, records.parquet and beats.parquet
   rewritten with the new ids). A true 1,000-record build takes about 25 min on 2 busy cores
   (1.5 s a record); the site and the browser see exactly the files and tables such a build has,
   only with repeated parameter values;
3. ``clinfuse view`` of both (site build seconds recorded);
4. headless Debian chromium (Playwright) opens each index ``--repeats`` times in a fresh page:
   the time from navigation to the record list drawn (``body[data-ready]``), and the browser's
   ``loadEventEnd``.

The claim: the 1,000-record index opens (record list drawn) in < 2 s (median and max of the
repeats). Usage::

    .venv/bin/python benchmarks/view_speed.py                 # ~2 min
    .venv/bin/python benchmarks/view_speed.py --records 1000 --repeats 5

Writes ``benchmarks/results/view_speed.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from _machine import describe, machine_info  # noqa: E402  (benchmarks/ is on sys.path)
from clinfuse.api import build
from clinfuse.report.view import build_site

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_S = 2.0


def replicate(source: Path, out: Path, n: int) -> Path:
    """A MEETI build folder of ``n`` studies whose files are hard links to ``source``'s studies."""
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("files", "site", "inputs"))
    records = pd.read_parquet(source / "records.parquet")
    beats = pd.read_parquet(source / "beats.parquet")
    rows, beat_parts = [], []
    for i in range(n):
        src = records.iloc[i % len(records)]
        study, subject = f"{50_000_000 + i}", f"{20_000_000 + i}"
        folder = Path("files") / f"p{subject[:4]}" / f"p{subject}" / f"s{study}"
        (out / folder).mkdir(parents=True, exist_ok=True)
        row = src.to_dict()
        for key, suffix in (("path_image", ".png"), ("path_beats", ".beats.parquet")):
            target = folder / f"{study}{suffix}"
            _link(source / src[key], out / target)
            row[key] = target.as_posix()
        text = json.loads((source / src["path_text"]).read_text())
        text["study_id"] = study
        row["path_text"] = (folder / f"{study}.interp.json").as_posix()
        (out / row["path_text"]).write_text(json.dumps(text))
        row["path_waveform"] = None
        row.update(study_id=study, subject_id=subject)
        rows.append(row)
        part = beats[beats["study_id"] == src["study_id"]].copy()
        beat_parts.append(part.assign(study_id=study))
    pd.DataFrame(rows).to_parquet(out / "records.parquet", index=False)
    pd.concat(beat_parts, ignore_index=True).to_parquet(out / "beats.parquet", index=False)
    return out


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def open_times(index: Path, repeats: int) -> dict[str, Any]:
    """Seconds from navigation to the drawn record list, per repeat, in a fresh page."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("CLINFUSE_CHROMIUM") or shutil.which("chromium")
    ready, load, requests = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for _ in range(repeats):
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            t0 = time.perf_counter()
            page.goto(index.resolve().as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            ready.append(time.perf_counter() - t0)
            timing = page.evaluate(
                "(() => { const t = performance.getEntriesByType('navigation')[0];"
                " return t.loadEventEnd - t.startTime; })()"
            )
            load.append(float(timing) / 1000.0)
            n_rows = page.locator("#record-list .pageinfo").inner_text()
            page.close()
        version = browser.version
        browser.close()
    outside = [u for u in requests if not u.startswith(("file://", "data:"))]
    return {
        "ready_s": ready,
        "load_event_s": load,
        "median_ready_s": statistics.median(ready),
        "max_ready_s": max(ready),
        "rows_info": n_rows,
        "chromium": version,
        "requests_outside": outside,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    labels, values = [], []
    for name, r in result["sites"].items():
        labels += [f"{name}\n({r['n_records']} records)"]
        values.append(r["browser"]["ready_s"])
    ax.boxplot(values, tick_labels=labels)
    ax.axhline(TARGET_S, color="tab:red", ls="--", label=f"target {TARGET_S:g} s")
    ax.set(ylabel="seconds to the drawn record list", title="clinfuse view: MEETI index open")
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--source", help="an existing MEETI build to replicate (else one is built)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    machine = machine_info()
    print(describe(machine), file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="view_speed-"))
    try:
        source = Path(args.source) if args.source else None
        build_seconds = None
        if source is None:
            t0 = time.perf_counter()
            _, _, rd = build("meeti", preset="quick", out=work / "meeti-small",
                             overrides=["progress=false"])  # fmt: skip
            build_seconds, source = time.perf_counter() - t0, rd.path
        big = replicate(source, work / f"meeti-{args.records}", args.records)
        sites: dict[str, Any] = {}
        for name, folder in (("baseline", source), ("large", big)):
            t0 = time.perf_counter()
            index = build_site(folder, work / f"site-{name}")
            seconds = time.perf_counter() - t0
            n = len(pd.read_parquet(folder / "records.parquet"))
            sites[name] = {
                "n_records": n,
                "site_build_s": seconds,
                "browser": open_times(index, args.repeats),
            }
            b = sites[name]["browser"]
            print(
                f"{name}: {n} records, site {seconds:.1f} s, index ready median "
                f"{b['median_ready_s']:.3f} s (max {b['max_ready_s']:.3f})",
                file=sys.stderr,
            )
        large = sites["large"]["browser"]
        result = {
            "benchmark": "view_speed",
            "claim": f"a {args.records}-record MEETI build's site opens its index in < 2 s",
            "records": args.records,
            "repeats": args.repeats,
            "large_build": "replicated from a real MEETI build (hard-linked files)",
            "baseline_build_seconds": build_seconds,
            "sites": sites,
            "ratio_large_to_baseline": large["median_ready_s"]
            / sites["baseline"]["browser"]["median_ready_s"],
            "checks": {
                "index_opens_under_2s": {
                    "pass": large["max_ready_s"] < TARGET_S,
                    "value": large["max_ready_s"],
                    "target": f"< {TARGET_S} s (max over {args.repeats} opens)",
                },
                "no_request_leaves_the_machine": {
                    "pass": not large["requests_outside"],
                    "value": len(large["requests_outside"]),
                    "target": 0,
                },
            },
            "machine": {**machine, "loadavg_1_5_15_at_end": list(os.getloadavg())},
        }
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "view_speed.json").write_text(json.dumps(result, indent=2) + "\n")
        plot(result, out / "view_speed.png")
        lines = [
            "# clinfuse view: MEETI index open time (headless chromium)",
            "",
            f"{describe(machine)}; chromium {large['chromium']}.",
            f"The large build replicates a real MEETI build to {args.records} studies "
            "(hard-linked files, rewritten tables).",
            "",
            "| site | records | site build (s) | ready median (s) | ready max (s) | load event "
            "median (s) |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in sites.items():
            b = r["browser"]
            lines.append(
                f"| {name} | {r['n_records']} | {r['site_build_s']:.1f} | "
                f"{b['median_ready_s']:.3f} | {b['max_ready_s']:.3f} | "
                f"{statistics.median(b['load_event_s']):.3f} |"
            )
        lines += ["", "| check | value | target | pass |", "|---|---|---|---|"]
        for k, c in result["checks"].items():
            v = f"{c['value']:.3f}" if isinstance(c["value"], float) else c["value"]
            lines.append(f"| {k} | {v} | {c['target']} | {c['pass']} |")
        (out / "view_speed.md").write_text("\n".join(lines) + "\n")
        print((out / "view_speed.md").read_text())
        return 0 if all(c["pass"] for c in result["checks"].values()) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
