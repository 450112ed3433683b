"""MEETI text: the deterministic prompt and the offline rule-based interpreter."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from clinfuse.builders.meeti.text import (
    RULES_MODEL_ID,
    build_prompt,
    generate,
    interpretation_record,
    parse_facts,
    rule_interpreter,
)
from clinfuse.core.errors import DataError
from clinfuse.llm.base import Message, prompt_hash
from clinfuse.llm.local import CallableBackend

NORMAL = {
    "hr_bpm": 72.0, "rr_ms": 833.0, "pr_ms": 160.0, "qrs_ms": 90.0, "qt_ms": 380.0,
    "qtc_bazett_ms": 416.0, "qrs_axis_deg": 45.0, "sokolow_lyon_mv": 2.0, "n_beats": 12,
    "n_beats_with_p": 12, "p_ms": 100.0, "qtc_fridericia_ms": 405.0,
    "qtc_framingham_ms": 407.0, "p_axis_deg": 50.0, "t_axis_deg": 40.0,
}  # fmt: skip
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _per_lead(st: dict[str, float] | None = None, t: dict[str, float] | None = None):
    rows = {lead: {"p_amp": 0.1, "r_amp": 1.0, "s_amp": -0.2, "t_amp": 0.3, "st_j60": 0.0,
                   "qrs_ms": 90.0} for lead in LEADS}  # fmt: skip
    for lead, v in (st or {}).items():
        rows[lead]["st_j60"] = v
    for lead, v in (t or {}).items():
        rows[lead]["t_amp"] = v
    return pd.DataFrame.from_dict(rows, orient="index")


def _interpret(summary, per_lead, **kw) -> str:
    return rule_interpreter(build_prompt("123", summary, per_lead, **kw))


def test_prompt_is_deterministic_and_holds_only_finite_values() -> None:
    s = {**NORMAL, "p_axis_deg": math.nan}
    a = build_prompt("123", s, _per_lead(), report=["Sinus rhythm"], machine={"rr_interval": 833})
    b = build_prompt("123", dict(s), _per_lead(), report=["Sinus rhythm"],
                     machine={"rr_interval": 833.0})  # fmt: skip
    assert prompt_hash(a, "m", None) == prompt_hash(b, "m", None)
    user = a[1].content
    assert "P axis" not in user and "nan" not in user.lower()
    assert "Sinus rhythm" in user and "never mention" in a[0].content.lower()
    facts = parse_facts(a)
    assert facts["summary"]["hr_bpm"] == 72.0 and facts["per_lead"]["V1"]["r_amp"] == 1.0
    assert facts["machine"] == {"rr_interval": 833.0}
    changed = build_prompt("123", {**s, "hr_bpm": 73.0}, _per_lead())
    assert prompt_hash(changed, "m", None) != prompt_hash(a, "m", None)


def test_normal_record_reads_normal_and_never_mentions_the_report() -> None:
    text = _interpret(NORMAL, _per_lead(), report=["Sinus rhythm", "Normal ECG"])
    assert text.startswith("Sinus rhythm at 72 bpm.")
    assert "normal QRS axis" in text and "Conclusion: normal ECG." in text
    assert "report" not in text.lower() and "statement" not in text.lower()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"hr_bpm": 48.0}, "Sinus bradycardia at 48 bpm"),
        ({"hr_bpm": 120.0}, "Sinus tachycardia at 120 bpm"),
        ({"n_beats_with_p": 3}, "Rhythm without consistent P waves"),
        ({"qrs_axis_deg": -60.0}, "left axis deviation"),
        ({"qrs_axis_deg": 120.0}, "right axis deviation"),
        ({"pr_ms": 240.0}, "first-degree AV block"),
        ({"qrs_ms": 140.0}, "wide QRS"),
        ({"qtc_bazett_ms": 500.0}, "QTc (Bazett) 500 ms (prolonged)"),
        ({"sokolow_lyon_mv": 4.2}, "left ventricular hypertrophy"),
    ],
)
def test_each_rule_fires_on_its_planted_finding(change, expected) -> None:
    text = _interpret({**NORMAL, **change}, _per_lead())
    assert expected in text and "Conclusion: abnormal ECG." in text


def test_irregular_rhythm_without_p_waves_suggests_atrial_fibrillation() -> None:
    s = {**NORMAL, "n_beats_with_p": 0}
    assert "atrial fibrillation" in _interpret(s, _per_lead(), rr_sd_ms=200.0)
    assert "atrial fibrillation" not in _interpret(s, _per_lead(), rr_sd_ms=20.0)


def test_st_and_t_findings_cite_their_leads() -> None:
    text = _interpret(NORMAL, _per_lead(st={"II": 0.15, "III": 0.2, "aVF": 0.12, "V2": 0.1}))
    assert "ST elevation at J+60 ms in II, III, aVF." in text  # V2 below the 0.2 mV limit
    text = _interpret(NORMAL, _per_lead(st={"V4": -0.1, "V5": -0.08}, t={"V5": -0.3, "aVR": -0.3}))
    assert "ST depression in V4, V5." in text and "T-wave inversion in V5." in text


def test_quality_flags_are_named() -> None:
    text = _interpret(NORMAL, _per_lead(), flags={"flat": ["V3"], "saturated": []})
    assert "flat in V3" in text and "saturated" not in text


def test_interpretation_record_keeps_prompt_hash_and_model_id() -> None:
    msgs = build_prompt("123", NORMAL, _per_lead())
    backend = CallableBackend(rule_interpreter, RULES_MODEL_ID)
    rec = interpretation_record("123", msgs, generate(backend, msgs))
    assert rec["model_id"] == RULES_MODEL_ID and rec["text"].startswith("Sinus rhythm")
    assert rec["prompt_hash"] == generate(backend, msgs).prompt_hash
    assert [m["role"] for m in rec["prompt"]] == ["system", "user"]


def test_a_prompt_without_facts_is_refused() -> None:
    with pytest.raises(DataError, match="JSON facts"):
        rule_interpreter([Message("user", "hello")])
