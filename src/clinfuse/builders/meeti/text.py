r"""MEETI interpretation text: a deterministic prompt and the backends that answer it.

The prompt (:func:`build_prompt`) holds, in a fixed order, the record's identity, the statements
on file (the machine/clinician report lines), the machine measurements, the parameter summary
(per-lead medians, then the median across leads), the per-lead medians and the quality flags,
followed by the same facts as a JSON block. Its rules (MEETI's text was written by GPT-4o
"conditioned on the ground-truth report" and the parameters; the ordering of the reading follows
the five-step protocol of the same group's ECG-R1 prompt, paraphrased): use only the values
given, cite the leads of lead-specific findings, never mention or quote the statements on file,
read rate and rhythm, then axis and intervals, hypertrophy, ST/T changes, QT; name quality
problems.

Any :class:`~clinfuse.llm.base.TextBackend` answers it: an OpenAI-compatible server
(``text_backend = "openai:MODEL@URL"``) or, offline, :func:`rule_interpreter` (``"rules"``),
which reads the JSON block and writes structured text by fixed thresholds [inferred]:

* rate: < 60 bradycardia, > 100 tachycardia; rhythm: sinus when >= 80% of beats carry a P wave,
  "irregular" when the SD of RR exceeds 12% of its mean;
* frontal QRS axis: normal -30..90 degrees, left / right / extreme deviation outside;
* PR > 200 ms first-degree AV block, < 120 ms short PR; QRS >= 120 ms wide, 110-119 incomplete;
  QTc (Bazett) > 460 ms prolonged, < 350 ms short;
* Sokolow-Lyon > 3.5 mV: voltage criteria for left ventricular hypertrophy;
* ST at J+60 ms >= 0.1 mV in two or more limb leads or >= 0.2 mV in two or more precordial
  leads: elevation; <= -0.05 mV in two or more leads: depression; T amplitude < -0.1 mV outside
  aVR, III and V1: T-wave inversion.

Each text is stored with its prompt, the prompt hash and the model id
(:func:`interpretation_record`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from clinfuse.llm.base import Completion, GenerationConfig, Message, TextBackend

__all__ = [
    "RULES_MODEL_ID",
    "build_prompt",
    "interpretation_record",
    "rule_interpreter",
    "parse_facts",
]

RULES_MODEL_ID = "clinfuse-ecg-rules-v1"
"""Model id of the offline rule-based interpreter (bump when its rules change)."""

SYSTEM = (
    "You are a cardiologist writing the interpretation of a resting 12-lead ECG from measured "
    "values. Rules: (1) use only the numbers given below and never invent a value; (2) cite "
    "the leads of every lead-specific finding; (3) never mention, quote or refer to the "
    "statements on file or to any report, write as if you read the tracing yourself; (4) read "
    "in this order: rate and rhythm; axis and intervals; chamber hypertrophy; ST segments and "
    "T waves; QT; (5) name signal-quality problems and the leads they affect; (6) end with a "
    "one-line conclusion. Plain text, at most 150 words."
)

SUMMARY_LABELS = {
    "hr_bpm": ("heart rate", "bpm"),
    "rr_ms": ("RR interval", "ms"),
    "p_ms": ("P duration", "ms"),
    "pr_ms": ("PR interval", "ms"),
    "qrs_ms": ("QRS duration", "ms"),
    "qt_ms": ("QT interval", "ms"),
    "qtc_bazett_ms": ("QTc Bazett", "ms"),
    "qtc_fridericia_ms": ("QTc Fridericia", "ms"),
    "qtc_framingham_ms": ("QTc Framingham", "ms"),
    "p_axis_deg": ("P axis", "deg"),
    "qrs_axis_deg": ("QRS axis", "deg"),
    "t_axis_deg": ("T axis", "deg"),
    "sokolow_lyon_mv": ("Sokolow-Lyon voltage", "mV"),
}
LIMB = ("I", "II", "III", "aVR", "aVL", "aVF")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(v: float, unit: str) -> str:
    digits = 2 if unit == "mV" else 0
    return f"{v:.{digits}f} {unit}"


def build_prompt(
    study_id: str,
    summary: Mapping[str, Any],
    per_lead: pd.DataFrame,
    *,
    report: Sequence[str] = (),
    machine: Mapping[str, Any] | None = None,
    flags: Mapping[str, Sequence[str]] | None = None,
    fs: float | None = None,
    rr_sd_ms: float | None = None,
) -> list[Message]:
    """The deterministic interpretation prompt of one record (system + user message).

    Values that are NaN or missing are left out (the model cannot be asked to use them);
    numbers are rounded as they are printed, and the JSON block repeats them.

    Example:
        >>> msgs = build_prompt("s1", {"hr_bpm": 72.4}, pd.DataFrame())
        >>> "heart rate: 72 bpm" in msgs[1].content
        True
    """
    lines = [f"ECG study {study_id}" + (f", sampled at {fs:g} Hz" if fs else "") + "."]
    statements = [r.strip() for r in report if r and r.strip()]
    if statements:
        lines += ["", "Statements on file (use them, never mention them):"]
        lines += [f"- {r}" for r in statements]
    facts: dict[str, Any] = {"study_id": study_id, "summary": {}, "per_lead": {}}
    mach = {k: _num(v) for k, v in (machine or {}).items()}
    mach = {k: v for k, v in mach.items() if v is not None}
    if mach:
        lines += ["", "Machine measurements:"]
        lines += [f"- {k}: {v:g}" for k, v in sorted(mach.items())]
        facts["machine"] = mach
    lines += ["", "Measured parameters (median over beats in each lead, then across leads):"]
    for key, (label, unit) in SUMMARY_LABELS.items():
        v = _num(summary.get(key))
        if v is not None:
            lines.append(f"- {label}: {_fmt(v, unit)}")
            facts["summary"][key] = round(v, 3)
    for key in ("n_beats", "n_beats_with_p"):
        v = _num(summary.get(key))
        if v is not None:
            lines.append(f"- {key.replace('_', ' ')}: {v:.0f}")
            facts["summary"][key] = int(v)
    if rr_sd_ms is not None and _num(rr_sd_ms) is not None:
        lines.append(f"- RR standard deviation: {rr_sd_ms:.0f} ms")
        facts["summary"]["rr_sd_ms"] = round(float(rr_sd_ms), 3)
    if len(per_lead):
        cols = [
            c
            for c in ("p_amp", "r_amp", "s_amp", "t_amp", "st_j60", "qrs_ms")
            if c in per_lead.columns
        ]
        lines += [
            "",
            "Per-lead medians (amplitudes in mV, durations in ms):",
            "| lead | " + " | ".join(cols) + " |",
        ]
        for lead, row in per_lead.iterrows():
            cells = []
            entry = {}
            for c in cols:
                v = _num(row[c])
                cells.append("-" if v is None else (f"{v:.2f}" if c != "qrs_ms" else f"{v:.0f}"))
                if v is not None:
                    entry[c] = round(v, 3)
            lines.append(f"| {lead} | " + " | ".join(cells) + " |")
            facts["per_lead"][str(lead)] = entry
    bad = {k: list(v) for k, v in (flags or {}).items() if v}
    if bad:
        lines += ["", "Signal-quality flags:"]
        lines += [f"- {k}: {', '.join(v)}" for k, v in sorted(bad.items())]
        facts["flags"] = bad
    lines += ["", "The same facts as JSON:", "```json", json.dumps(facts, sort_keys=True), "```"]
    return [Message("system", SYSTEM), Message("user", "\n".join(lines))]


def parse_facts(messages: Sequence[Message]) -> dict[str, Any]:
    """The JSON block of a :func:`build_prompt` user message."""
    text = "\n".join(m.content for m in messages if m.role == "user" and isinstance(m.content, str))
    found = re.findall(r"```json\n(.*?)\n```", text, flags=re.S)
    if not found:
        from clinfuse.core.errors import DataError

        raise DataError(
            "the prompt holds no JSON facts block",
            expected="a user message built by build_prompt",
            found=text[:120],
        )
    return json.loads(found[-1])


def _leads_where(per_lead: Mapping[str, Mapping[str, float]], key: str, test) -> list[str]:
    return [lead for lead, row in per_lead.items() if key in row and test(row[key])]


def _rhythm(s: Mapping[str, float]) -> str:
    hr = s.get("hr_bpm")
    if hr is None:
        return "Rate could not be measured."
    n, n_p = s.get("n_beats"), s.get("n_beats_with_p")
    sinus = n is not None and n_p is not None and n > 0 and n_p / n >= 0.8
    rr, sd = s.get("rr_ms"), s.get("rr_sd_ms")
    irregular = rr is not None and sd is not None and rr > 0 and sd / rr > 0.12
    if sinus:
        kind = (
            "Sinus bradycardia"
            if hr < 60
            else "Sinus tachycardia"
            if hr > 100
            else ("Sinus rhythm")
        )
    else:
        kind = "Rhythm without consistent P waves" + (
            ", irregularly irregular (consider atrial fibrillation)" if irregular else ""
        )
    if sinus and irregular:
        kind += " with irregular RR intervals"
    return f"{kind} at {hr:.0f} bpm."


def _axis(s: Mapping[str, float]) -> str | None:
    ax = s.get("qrs_axis_deg")
    if ax is None:
        return None
    if -30 <= ax <= 90:
        word = "normal QRS axis"
    elif -90 <= ax < -30:
        word = "left axis deviation"
    elif 90 < ax <= 180:
        word = "right axis deviation"
    else:
        word = "extreme axis deviation"
    return f"Frontal QRS axis {round(ax) + 0:d} degrees ({word})."


def _intervals(s: Mapping[str, float]) -> list[str]:
    out = []
    pr, qrs, qtc = s.get("pr_ms"), s.get("qrs_ms"), s.get("qtc_bazett_ms")
    if pr is not None:
        note = " (first-degree AV block)" if pr > 200 else " (short PR)" if pr < 120 else ""
        out.append(f"PR {pr:.0f} ms{note}")
    if qrs is not None:
        note = (
            " (wide QRS: bundle branch block or intraventricular conduction delay)"
            if qrs >= 120
            else " (incomplete conduction delay)"
            if qrs >= 110
            else ""
        )
        out.append(f"QRS {qrs:.0f} ms{note}")
    if qtc is not None:
        note = " (prolonged)" if qtc > 460 else " (short)" if qtc < 350 else ""
        out.append(f"QTc (Bazett) {qtc:.0f} ms{note}")
    return ["Intervals: " + ", ".join(out) + "."] if out else []


def _repolarisation(per_lead: Mapping[str, Mapping[str, float]]) -> list[str]:
    out = []
    limb_up = _leads_where(
        {k: v for k, v in per_lead.items() if k in LIMB}, "st_j60", lambda x: x >= 0.1
    )
    prec_up = _leads_where(
        {k: v for k, v in per_lead.items() if k not in LIMB}, "st_j60", lambda x: x >= 0.2
    )
    if len(limb_up) >= 2 or len(prec_up) >= 2:
        leads = (limb_up if len(limb_up) >= 2 else []) + (prec_up if len(prec_up) >= 2 else [])
        out.append(f"ST elevation at J+60 ms in {', '.join(leads)}.")
    down = _leads_where(per_lead, "st_j60", lambda x: x <= -0.05)
    down = [d for d in down if d != "aVR"]
    if len(down) >= 2:
        out.append(f"ST depression in {', '.join(down)}.")
    inv = [
        x
        for x in _leads_where(per_lead, "t_amp", lambda x: x < -0.1)
        if x not in ("aVR", "III", "V1")
    ]
    if inv:
        out.append(f"T-wave inversion in {', '.join(inv)}.")
    return out or ["No significant ST-segment or T-wave changes."]


def rule_interpreter(messages: Sequence[Message]) -> str:
    """Offline interpretation from the prompt's JSON facts (the thresholds in the module doc)."""
    facts = parse_facts(messages)
    s = facts.get("summary", {})
    per_lead = facts.get("per_lead", {})
    parts = [_rhythm(s)]
    axis = _axis(s)
    if axis:
        parts.append(axis)
    parts += _intervals(s)
    sl = s.get("sokolow_lyon_mv")
    if sl is not None:
        parts.append(
            f"Sokolow-Lyon voltage {sl:.2f} mV"
            + (": voltage criteria for left ventricular hypertrophy." if sl > 3.5 else ".")
        )
    parts += _repolarisation(per_lead)
    flags = facts.get("flags", {})
    if flags:
        parts.append(
            "Signal quality: " + "; ".join(f"{k} in {', '.join(v)}" for k, v in flags.items()) + "."
        )
    abnormal = any(
        w in " ".join(parts)
        for w in (
            "deviation",
            "block",
            "wide",
            "prolonged",
            "short",
            "hypertrophy",
            "elevation",
            "depression",
            "inversion",
            "without consistent",
            "bradycardia",
            "tachycardia",
        )
    )
    parts.append("Conclusion: " + ("abnormal ECG." if abnormal else "normal ECG."))
    return " ".join(parts)


def interpretation_record(
    study_id: str, messages: Sequence[Message], completion: Completion
) -> dict[str, Any]:
    """What ``interp.json`` holds: the text with its prompt, prompt hash and model id."""
    return {
        "study_id": study_id,
        "text": completion.text,
        "model_id": completion.model_id,
        "backend": completion.backend,
        "prompt_hash": completion.prompt_hash,
        "prompt": [
            {"role": m.role, "content": m.content if isinstance(m.content, str) else str(m.content)}
            for m in messages
        ],
        "created": completion.created,
        "cached": completion.cached,
    }


def generate(backend: TextBackend, messages: Sequence[Message]) -> Completion:
    """Ask ``backend`` with deterministic settings (temperature 0, seed 0)."""
    return backend.generate(list(messages), GenerationConfig(temperature=0.0, seed=0))
