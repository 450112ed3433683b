"""``clinfuse demo``: every registered system's quick preset on its embedded data, one report."""

from __future__ import annotations

import html
import logging
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from clinfuse.core.learner import METHODS, DemoResult
from clinfuse.core.loop import progress_enabled
from clinfuse.core.runs import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


REPORT_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 16px 24px; color: #1d232a; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccd; padding: 3px 8px; text-align: left; }
th { background: #eef1f5; }
figure { display: inline-block; margin: 8px 16px 8px 0; vertical-align: top; max-width: 640px; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 12px; color: #555; }
pre { white-space: pre-wrap; background: #f2f2f2; padding: 6px; }
"""


def report_html(markdown: str, title: str) -> str:
    """The HTML page of a Markdown report: every table, image and code block rendered, all text
    escaped (:func:`clinfuse.report.view.markdown.markdown_to_html`)."""
    from clinfuse.report.view.markdown import markdown_to_html

    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{REPORT_CSS}</style>\n<body>\n{markdown_to_html(markdown)}\n</body></html>\n"
    )


def write_report(
    results: Sequence[DemoResult], failures: dict[str, str], out: Path, seconds: dict[str, float]
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (same content) under ``out``; return both paths."""
    head = "| system | data | metric | value | baseline | baseline value | seconds |"
    lines = [
        "# clinfuse demo report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}; each system ran its `quick` preset on "
        "its embedded default data.",
        "",
        head,
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.system} | {r.data} | {r.metric} | {r.value:.4f} | {r.baseline} | "
            f"{r.baseline_value:.4f} | {seconds.get(r.system.split(' (')[0], float('nan')):.0f} |"
        )
    for name in failures:
        lines.append(f"| {name} | - | FAILED | - | - | - | {seconds.get(name, 0):.0f} |")
    for r in results:
        lines += ["", f"## {r.system}", ""]
        if r.notes:
            lines += [r.notes, ""]
        if r.extra:
            lines += ["| quantity | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in r.extra.items()]
            lines.append("")
        lines += [f"![{p.stem}]({_rel(p, out)})" for p in r.plots]
    for name, err in failures.items():
        lines += ["", f"## {name} (failed)", "", "```", err, "```"]
    md = "\n".join(lines) + "\n"
    md_path = atomic_write_text(out / "report.md", md)

    page = report_html(md, title="clinfuse demo")
    html_path = atomic_write_text(out / "report.html", page)
    return md_path, html_path


def write_site(root: Path) -> Path | None:
    """The ``clinfuse view`` site of the demo folder (``<root>/site/index.html``)."""
    from clinfuse.report.view import build_site

    try:
        return build_site(root, root / "site")
    except Exception:  # noqa: BLE001 - the report is written; a site failure must not hide it
        log.error("the demo site could not be written:\n%s", traceback.format_exc())
        return None


def run_demo(
    names: Sequence[str] | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    overrides: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Run the quick preset of each system in ``names`` (default: all) and write the report.

    ``overrides`` maps a system to extra ``key=value`` settings (tests shorten the training).
    """
    from clinfuse.api import build, get_method, run
    from clinfuse.builders import load_all as load_builders
    from clinfuse.core.builder import BUILDERS
    from clinfuse.methods import load_all

    load_all()
    load_builders()
    names = list(names) if names else METHODS.names() + BUILDERS.names()
    for n in names:
        if n not in BUILDERS:
            get_method(n)  # unknown names fail before any work
    root = Path(out) if out else Path("runs") / "demo" / time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    results: list[DemoResult] = []
    failures: dict[str, str] = {}
    seconds: dict[str, float] = {}
    bar = tqdm(names, desc="demo", disable=not progress_enabled(progress), dynamic_ncols=True)
    for name in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        try:
            extra = list((overrides or {}).get(name, []))
            if name in BUILDERS:
                bcls = BUILDERS.get(name)
                builder, card, brd = build(
                    name, preset=bcls.demo_preset, out=root / name, overrides=extra
                )
                results.append(builder.demo(brd, card))
            else:
                cls = get_method(name)
                learner, rd = run(name, preset=cls.demo_preset, out=root / name, overrides=extra)
                data = learner.load_data(None)
                results.append(learner.demo(data, rd))
        except Exception:  # noqa: BLE001 - one failing system must not hide the others
            failures[name] = traceback.format_exc()
            log.error("demo of %s failed:\n%s", name, failures[name])
        seconds[name] = time.perf_counter() - t0
        log.info("demo %s done in %.1f s", name, seconds[name])
    md, _ = write_report(results, failures, root, seconds)
    atomic_write_json(
        root / "demo.json",
        {
            "results": [{**asdict(r), "plots": [str(p) for p in r.plots]} for r in results],
            "failures": failures,
            "seconds": seconds,
        },
    )
    write_site(root)
    if failures:
        from clinfuse.core.errors import ClinfuseError

        raise ClinfuseError(
            f"the demo of {', '.join(failures)} failed (report: {md})",
            fix="see the traceback in the report",
        )
    return md
