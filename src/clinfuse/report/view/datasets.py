"""Pages of the data set builders: MEETI (record list with filters, one page per record) and
Med-Banana (task list, one page per task with every attempt, the preference pairs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clinfuse.core.errors import DataError
from clinfuse.report.view.site import (
    Site,
    first_sentence,
    fmt_value,
    jsonable,
    page_name,
    read_json,
    read_table,
    table_data,
)

SUMMARY = [
    ("hr_bpm", "HR", "bpm"),
    ("rr_ms", "RR", "ms"),
    ("p_ms", "P", "ms"),
    ("pr_ms", "PR", "ms"),
    ("qrs_ms", "QRS", "ms"),
    ("qt_ms", "QT", "ms"),
    ("qtc_bazett_ms", "QTc Bazett", "ms"),
    ("qtc_fridericia_ms", "QTc Fridericia", "ms"),
    ("qtc_framingham_ms", "QTc Framingham", "ms"),
    ("p_axis_deg", "P axis", "deg"),
    ("qrs_axis_deg", "QRS axis", "deg"),
    ("t_axis_deg", "T axis", "deg"),
    ("sokolow_lyon_mv", "Sokolow-Lyon", "mV"),
    ("n_beats", "beats", ""),
    ("n_beats_with_p", "beats with P", ""),
]
"""The record summary columns of ``records.parquet`` shown on each record page."""

LEAD_COLUMNS = ["p_ms", "qrs_ms", "t_ms", "pr_ms", "qt_ms", "rr_ms"]
LEAD_COLUMNS += ["p_amp", "q_amp", "r_amp", "s_amp", "t_amp", "j_amp", "st_j60"]


def _table_of(site: Site, name: str) -> Any:
    path = site.root / name
    if not path.is_file():
        raise DataError(
            f"{site.root} has no {name}",
            expected=f"a finished build with {name}",
            found=f"has: {sorted(p.name for p in site.root.iterdir())[:8]}",
            fix="finish the build (`clinfuse build NAME --out DIR --resume`), then view it",
        )
    return read_table(path)


def _card(site: Site) -> str:
    p = site.root / "dataset_card.md"
    return p.read_text("utf-8") if p.is_file() else ""


def _plots(site: Site, page_dir: Path) -> list[dict[str, Any]]:
    return [
        {"src": site.link(p, page_dir), "caption": p.name}
        for p in sorted((site.root / "plots").glob("*.png"))
    ]


def _interp(site: Site, rel: Any) -> dict[str, Any]:
    path = site.link(rel, site.root)  # None when missing or outside the build
    data = read_json(site.root / path) if path else None
    return data if isinstance(data, dict) else {}


def build_meeti(site: Site) -> None:
    """MEETI: ``index.html`` lists every study (filters: rhythm, HR, QTc, flags) and
    ``records/<study>.html`` shows the image, the parameters and the interpretation side by side."""
    records = _table_of(site, "records.parquet")
    beats_path = site.root / "beats.parquet"
    beats = read_table(beats_path) if beats_path.is_file() else None
    by_study = dict(iter(beats.groupby("study_id", sort=False))) if beats is not None else {}
    flag_cols = [c for c in records.columns if c.startswith("flag_")]
    rec_dir = site.out / "records"
    taken: set[str] = set()
    rows = []
    for rec in records.to_dict("records"):
        study = str(rec["study_id"])
        page = page_name(study, taken)
        interp = _interp(site, rec.get("path_text"))
        text = str(interp.get("text", ""))
        flags = {c.removeprefix("flag_"): rec[c] for c in flag_cols if rec.get(c)}
        rhythm = first_sentence(text) if text else ""
        b = by_study.get(study)
        if b is None and site.link(rec.get("path_beats"), site.root):
            b = read_table(site.root / site.link(rec.get("path_beats"), site.root))
        leads = []
        if b is not None and len(b):
            cols = [c for c in LEAD_COLUMNS if c in b.columns]
            med = b.groupby("lead", sort=False)[cols].median()
            leads = [
                {"lead": str(lead), "values": [jsonable(v) for v in r]}
                for lead, r in zip(med.index, med.itertuples(index=False, name=None), strict=True)
            ]
            lead_cols = cols
        else:
            lead_cols = []
        summary = [
            {"key": k, "label": label, "unit": unit, "value": jsonable(rec.get(k))}
            for k, label, unit in SUMMARY
            if k in rec
        ]
        site.write(
            f"records/{page}.html",
            "meeti_record.html",
            title=f"MEETI study {study}",
            study=study,
            record={k: jsonable(v) for k, v in rec.items() if not k.startswith("path_")},
            image=site.link(rec.get("path_image"), rec_dir),
            summary=summary,
            flags=flags,
            rhythm=rhythm,
            text=text,
            interp={k: interp.get(k) for k in ("model_id", "backend", "prompt_hash")},
            prompt=interp.get("prompt") or [],
            lead_cols=lead_cols,
            leads=leads,
            beats=table_data(b) if b is not None else None,
        )
        rows.append(
            {
                "study_id": study,
                "subject_id": jsonable(rec.get("subject_id")),
                "rhythm": rhythm,
                "hr_bpm": jsonable(rec.get("hr_bpm")),
                "qtc_bazett_ms": jsonable(rec.get("qtc_bazett_ms")),
                "qrs_ms": jsonable(rec.get("qrs_ms")),
                "pr_ms": jsonable(rec.get("pr_ms")),
                "flags": sorted(flags),
                "href": f"records/{page}.html",
            }
        )
    site.write(
        "index.html",
        "meeti_index.html",
        title=f"MEETI build: {site.root.name}",
        records=rows,
        rhythms=sorted({r["rhythm"] for r in rows if r["rhythm"]}),
        flags=sorted({f for r in rows for f in r["flags"]}),
        metrics=read_json(site.root / "metrics.json") or {},
        card=_card(site),
        plots=_plots(site, site.out),
    )


SCORES = ("compliance", "structure", "realism", "fidelity")


def build_medbanana(site: Site) -> None:
    """Med-Banana: ``index.html`` lists the tasks and preference pairs; ``tasks/<task>.html``
    shows the source, the mask, every attempt (prompt, image, judge scores, reason, verdict)."""
    tasks = _table_of(site, "tasks.parquet")
    attempts = _table_of(site, "attempts.parquet")
    pairs_path = site.root / "preference_pairs.parquet"
    pairs = read_table(pairs_path) if pairs_path.is_file() else None
    task_dir = site.out / "tasks"
    taken: set[str] = set()
    rows = []
    for task in tasks.to_dict("records"):
        tid = str(task["task_id"])
        page = page_name(tid, taken)
        conv_link = site.link(f"conversations/{tid}.json", site.root)  # None if outside
        conv = (read_json(site.root / conv_link) if conv_link else None) or {}
        rounds = [r for r in conv.get("rounds", []) if isinstance(r, dict)]
        conv_rounds = {int(r.get("round", 0)): r for r in rounds}
        mine = attempts[attempts["task_id"] == task["task_id"]].sort_values("round")
        shown = []
        for a in mine.to_dict("records"):
            c = conv_rounds.get(int(a["round"]), {})
            shown.append(
                {
                    "round": int(a["round"]),
                    "instruction": str(a.get("instruction") or ""),
                    "writer_request": json.dumps(c.get("writer_request"), indent=1)
                    if c.get("writer_request") is not None
                    else "",
                    "judge_reply": str(c.get("judge_reply") or ""),
                    "image": site.link(a.get("image"), task_dir),
                    "scores": [(s, jsonable(a.get(s))) for s in SCORES],
                    "qualified": bool(a.get("qualified")),
                    "reason_code": str(a.get("reason_code") or ""),
                    "reason": str(a.get("reason") or ""),
                    "metrics": [(k, jsonable(v)) for k, v in a.items() if str(k).startswith("m_")],
                }
            )
        task_pairs = []
        if pairs is not None and len(pairs):
            for p in pairs[pairs["task_id"] == task["task_id"]].to_dict("records"):
                task_pairs.append(
                    {
                        "instruction": str(p.get("instruction") or ""),
                        "chosen": site.link(p.get("chosen"), task_dir),
                        "rejected": site.link(p.get("rejected"), task_dir),
                        "rejected_round": jsonable(p.get("rejected_round")),
                        "rejected_reason": str(p.get("rejected_reason") or ""),
                    }
                )
        site.write(
            f"tasks/{page}.html",
            "medbanana_task.html",
            title=f"Med-Banana task {tid}",
            task={k: jsonable(v) for k, v in task.items()},
            source=site.link(task.get("image"), task_dir),
            mask=site.link(conv.get("mask"), task_dir),
            accepted=site.link(task.get("accepted_image"), task_dir),
            attempts=shown,
            pairs=task_pairs,
        )
        rows.append(
            {
                **{k: jsonable(task.get(k)) for k in ("task_id", "dataset", "disease")},
                **{k: jsonable(task.get(k)) for k in ("direction", "status", "rounds")},
                "last_reason_code": jsonable(task.get("last_reason_code")),
                "href": f"tasks/{page}.html",
            }
        )
    site.write(
        "index.html",
        "medbanana_index.html",
        title=f"Med-Banana build: {site.root.name}",
        tasks=_linked_table(rows, "task_id"),
        pairs=table_data(pairs) if pairs is not None else None,
        metrics=read_json(site.root / "metrics.json") or {},
        card=_card(site),
        plots=_plots(site, site.out),
        fmt=fmt_value,
    )


def _linked_table(rows: list[dict[str, Any]], link_col: str) -> dict[str, Any]:
    """Rows (dicts with an ``href``) as a table whose ``link_col`` cells link to their page."""
    cols = [c for c in (rows[0] if rows else {}) if c != "href"]
    return {
        "columns": cols,
        "rows": [[jsonable(r.get(c)) for c in cols] for r in rows],
        "n_rows": len(rows),
        "truncated": False,
        "links": {link_col: [r["href"] for r in rows]},
    }
