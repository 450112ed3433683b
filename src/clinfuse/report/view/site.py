"""The site writer: Jinja2 environment, safe links and tables, the run page and the dispatch.

Every page is written with :func:`render` (autoescaping on); data reach the browser as JSON in
``<script type="application/json">`` blocks (``tojson`` escapes ``<``, ``>``, ``&``) and the
scripts insert them with ``textContent``, so text from a data file is never parsed as HTML.
Links to images and files are relative paths that resolve inside the folder being viewed; a path
named in a data file that points outside it is not linked.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinfuse.core.errors import DataError, RunDirError
from clinfuse.core.runs import RUN_MARK, atomic_write_text
from clinfuse.report.view.markdown import markdown_to_html

log = logging.getLogger(__name__)

MAX_TABLE_ROWS = 20_000
"""Rows of one table embedded in a page (a longer table shows its first rows and says so)."""

SKIP_DIRS = frozenset({"checkpoints", "llm_cache", "image_cache", "tensorboard", "mlruns", "wandb"})


@dataclass
class Site:
    """Where a site is written (``out``) and the folder it shows (``root``)."""

    root: Path
    out: Path
    title: str = "clinfuse"
    pages: list[Path] = field(default_factory=list)

    def link(self, target: str | Path | None, page_dir: Path) -> str | None:
        """A relative URL from ``page_dir`` to ``target`` (relative to ``root`` or absolute),
        or None when ``target`` is missing or resolves outside ``root``."""
        if target is None or (isinstance(target, float) and math.isnan(target)) or target == "":
            return None
        p = Path(str(target))
        p = (p if p.is_absolute() else self.root / p).resolve()
        if not p.is_relative_to(self.root.resolve()) or not p.exists():
            return None
        return Path(os.path.relpath(p, page_dir.resolve())).as_posix()

    def write(self, rel: str, template: str, **context: Any) -> Path:
        """Render ``template`` into ``out/rel`` (``asset`` = the path prefix to ``assets/``)."""
        path = self.out / rel
        depth = len(Path(rel).parts) - 1
        context.setdefault("site_title", self.title)
        page = render(template, asset="../" * depth + "assets/", **context)
        atomic_write_text(path, page)
        self.pages.append(path)
        return path


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("clinfuse.report.view", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_value
    env.filters["markdown"] = lambda text: _markup(markdown_to_html(str(text)))
    return env


def _markup(text: str) -> Any:
    import markupsafe

    return markupsafe.Markup(text)  # markdown_to_html escapes every text fragment itself


_ENV: Any = None


def render(template: str, **context: Any) -> str:
    global _ENV
    if _ENV is None:
        _ENV = _env()
    return _ENV.get_template(template).render(**context)


def fmt_value(v: Any) -> str:
    """How numbers are shown: floats with 6 significant digits, the rest as text.

    Example:
        >>> fmt_value(0.123456789), fmt_value(3), fmt_value(None), fmt_value(float("nan"))
        ('0.123457', '3', '', 'NaN')
    """
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def jsonable(v: Any) -> Any:
    """A JSON-safe cell value: numpy scalars unwrapped, NaN/inf as None, other objects as text."""
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        try:
            v = v.item()
        except (ValueError, TypeError):
            v = str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return str(v)


def table_data(df: Any, max_rows: int = MAX_TABLE_ROWS) -> dict[str, Any]:
    """``{"columns", "rows", "n_rows", "truncated"}`` of a DataFrame for the table script."""
    n = len(df)
    head = df.head(max_rows)
    rows = [[jsonable(v) for v in r] for r in head.itertuples(index=False, name=None)]
    return {
        "columns": [str(c) for c in df.columns],
        "rows": rows,
        "n_rows": n,
        "truncated": n > max_rows,
    }


def read_table(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable table is reported, not fatal
        log.warning("skipping table %s: %s", path, exc)
        return None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return None


def page_name(text: str, taken: set[str]) -> str:
    """A file-name-safe, collision-free page stem for an id taken from data.

    Example:
        >>> taken = set()
        >>> page_name("a/b", taken), page_name("a?b", taken), page_name("", taken)
        ('a_b', 'a_b-2', 'item')
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")[:120] or "item"
    name, k = base, 2
    while name.lower() in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name.lower())
    return name


def files_under(root: Path, suffixes: Iterable[str], skip: Iterable[Path] = ()) -> list[Path]:
    """Files below ``root`` with one of ``suffixes``, skipping checkpoints, caches and ``skip``."""
    skip = [s.resolve() for s in skip]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(
            n
            for n in dirnames
            if n not in SKIP_DIRS
            and not n.startswith(".")
            and not any((d / n).resolve() == s for s in skip)
        )
        found += [d / f for f in sorted(filenames) if f.endswith(tuple(suffixes))]
    return found


# -- kinds of folders ----------------------------------------------------------------------------
def folder_kind(path: Path) -> str:
    """``demo`` (``clinfuse demo``), or the method/builder name recorded in config.json."""
    if (path / "demo.json").is_file():
        return "demo"
    meta = read_json(path / "config.json") if (path / "config.json").is_file() else None
    if not isinstance(meta, dict) or meta.get(RUN_MARK) != 1 or "method" not in meta:
        raise RunDirError(
            f"{str(path)!r} is neither a clinfuse run, build nor demo folder",
            expected="a folder with config.json (clinfuse fit / build) or demo.json (demo)",
            found=f"has: {sorted(p.name for p in path.iterdir())[:8]}"
            if path.is_dir()
            else "no such directory",
            fix="pass the folder that `clinfuse fit`, `build` or `demo` printed",
        )
    return str(meta["method"])


def build_run(site: Site) -> None:
    """The page of a run (or of a build without its own view): config, environment, metrics,
    metric curves, every plot and table in the folder, predictions with paging."""
    root, out = site.root, site.out
    meta = read_json(root / "config.json") or {}
    env = read_json(root / "env.json") or {}
    metrics = read_json(root / "metrics.json") or {}
    csv = root / "metrics.csv"
    history = table_data(read_table(csv)) if csv.is_file() else None
    skip = [out]
    images = [
        {"src": site.link(p, out), "caption": p.relative_to(root).as_posix()}
        for p in files_under(root, (".png", ".jpg", ".svg"), skip)
        if p.relative_to(root).parts[0] not in {"files", "images", "inputs"}
    ]
    tables, predictions, texts = [], [], []
    for p in files_under(root, (".parquet", ".csv"), skip):
        rel = p.relative_to(root).as_posix()
        if rel in {"metrics.csv"} or p.relative_to(root).parts[0] in {"files", "inputs"}:
            continue
        df = read_table(p)
        if df is None:
            continue
        entry = {"name": rel, "data": table_data(df), "href": site.link(p, out)}
        (predictions if p.name.startswith("predictions") else tables).append(entry)
    for p in files_under(root, (".md",), skip):
        if p.name != "README.md":
            texts.append({"name": p.relative_to(root).as_posix(), "text": p.read_text("utf-8")})
    site.write(
        "index.html",
        "run.html",
        title=f"{meta.get('method', 'run')}: {root.name}",
        method=meta.get("method", ""),
        config=meta.get("config", {}),
        env=env,
        metrics=metrics,
        history=history,
        images=images,
        tables=tables,
        predictions=predictions,
        texts=texts,
    )


def _builders() -> Mapping[str, Callable[[Site], None]]:
    from clinfuse.report.view import datasets

    return {"meeti": datasets.build_meeti, "medbanana": datasets.build_medbanana}


def copy_assets(out: Path) -> None:
    static = Path(__file__).with_name("static")
    for f in ("site.css", "site.js"):
        target = out / "assets" / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(static / f, target)


def build_site(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the static site of a run, build or demo folder ``path``; return its ``index.html``.

    ``out`` defaults to ``<path>/site``. The pages need no server: open ``index.html``.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(
            f"{str(root)!r} is not a directory",
            expected="a run, build or demo folder",
            found="no such directory" if not root.exists() else "a file",
            fix="pass the folder that `clinfuse fit`, `build` or `demo` printed",
        )
    root = root.resolve()
    out_dir = (Path(out) if out is not None else root / "site").resolve()
    kind = folder_kind(root)
    copy_assets(out_dir)
    site = Site(root=root, out=out_dir, title=f"clinfuse: {root.name}")
    if kind == "demo":
        build_demo(site)
    else:
        _builders().get(kind, build_run)(site)
    log.info("site of %s (%s) written to %s (%d pages)", root, kind, out_dir, len(site.pages))
    return out_dir / "index.html"


def build_demo(site: Site) -> None:
    """The index of a demo folder: its report (Markdown rendered) and one sub-site per system."""
    root, out = site.root, site.out
    demo = read_json(root / "demo.json") or {}
    systems: list[dict[str, Any]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.resolve() != out):
        try:
            kind = folder_kind(sub)
        except RunDirError:
            continue
        index = build_site(sub, out / sub.name)
        systems.append({"name": sub.name, "kind": kind, "href": f"{sub.name}/index.html"})
        site.pages.append(index)
    report = (root / "report.md").read_text("utf-8") if (root / "report.md").is_file() else ""
    report = _relink_markdown(report, site)
    site.write(
        "index.html",
        "demo.html",
        title="clinfuse demo",
        systems=systems,
        report=report,
        failures=demo.get("failures", {}),
    )


def _relink_markdown(text: str, site: Site) -> str:
    """Image paths of the report (relative to the demo folder) rewritten relative to the site."""

    def fix(m: re.Match[str]) -> str:
        href = site.link(m.group(2), site.out)
        return f"![{m.group(1)}]({href})" if href else f"{m.group(1)} (not found)"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", fix, text)


def first_sentence(text: str) -> str:
    """The rhythm statement of an interpretation: its first sentence, without the rate.

    Example:
        >>> first_sentence("Sinus rhythm at 68 bpm. Axis normal.")
        'Sinus rhythm'
    """
    s = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0].rstrip(".")
    return re.sub(r"\s+at\s+\d+(\.\d+)?\s*bpm$", "", s)


def as_records(data: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: jsonable(v) for k, v in row.items()} for row in data]
