"""User tables for ehrprompt: reading, kinds, longitudinal reduction, leakage guard, templates,
the stratified grouped split, and `clinfuse fit ehrprompt --data TABLE.csv` end to end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.cli import main
from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.ehrprompt import prompts
from clinfuse.methods.ehrprompt.tables import (
    infer_kind,
    load_user_table,
    reduce_longitudinal,
    stratified_split,
)


def _cohort(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A small cohort with a planted logistic outcome (age, SBP, BP medication, sex, stage)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    sex = rng.choice([1, 2], n)
    sbp = rng.normal(130, 20, n)
    bpmeds = rng.integers(0, 2, n)
    stage = rng.integers(1, 5, n)
    logit = (
        0.1 * (age - 60)
        + 0.04 * (sbp - 130)
        + 1.0 * bpmeds
        - 0.8 * (sex == 2)
        + 0.5 * (stage - 2.5)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return pd.DataFrame(
        {
            "pid": np.arange(n) + 1000,
            "AGE": age.round(1),
            "SEX": sex,
            "SYSBP": sbp.round(0),
            "BPMEDS": bpmeds,
            "stage": stage,
            "empty": np.nan,
            "outcome": y,
        }
    )


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


# -- kinds and templates ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "name", "kind"),
    [
        ([1, 2, 2, 1, 2], "SEX", "categorical"),  # coded, two levels that are not 0/1
        ([0, 1, 1, 0], "BPMEDS", "binary"),
        (["yes", "no", "no"], "smoker", "binary"),
        (["female", "male", "male"], "sex", "categorical"),
        ([0, 1, 2, 3, 1], "arms", "categorical"),  # a name that says category
        ([1, 2, 3, 4, 4, 2], "histologic", "ordinal"),
        (list(np.linspace(1, 9, 30)), "kappa", "numeric"),
        (list(range(50)), "pidnum", "identifier"),
        ([np.nan, np.nan], "x", "empty"),
        ([3, 3, np.nan], "x", "constant"),
        (["2001-01-03", "2003-05-07", "1999-12-31"], "admit", "date"),
        (
            ["patient reports chest pain radiating to the left arm since this morning"] * 2
            + ["no complaints"],
            "note",
            "text",
        ),  # fmt: skip
    ],
)
def test_infer_kind(values: list, name: str, kind: str) -> None:
    assert infer_kind(pd.Series(values), name) == kind


def test_templates_binary_and_coded_categorical_read_as_categories(tmp_path: Path) -> None:
    """A 1/2-coded sex is a category (never deciles); a 0/1 column reads yes/no even in decile
    mode; a dictionary turns codes into labels; the built-in abbreviations give names and units."""
    path = _write(_cohort(), tmp_path / "c.csv")
    table, ts, _ = load_user_table(path, target="outcome")
    assert ts["SEX"].template == "The sex is category {value}."
    assert ts["BPMEDS"].kind == "binary"
    assert (ts["SYSBP"].description, ts["SYSBP"].unit) == ("systolic blood pressure", "mmHg")
    frame = table.frame
    deciles = prompts.fit_deciles(frame, ts)
    out = prompts.render(frame, ts, numeric="decile", deciles=deciles)
    col = {c: out[:, j] for j, c in enumerate(ts.names)}
    assert set(col["SEX"]) == {"The sex is category 1.", "The sex is category 2."}
    assert set(col["BPMEDS"]) == {
        "On blood pressure medication: yes.",
        "On blood pressure medication: no.",
    }
    assert set(col["stage"]) == {f"The stage is {k} on a scale from 1 to 4." for k in range(1, 5)}
    assert any("decile" in s for s in col["SYSBP"])  # a continuous column does use deciles
    values = prompts.render(frame.iloc[:1], ts)[0].tolist()
    assert values[ts.names.index("SYSBP")].endswith(" mmHg.")
    dictionary = tmp_path / "cols.yaml"
    dictionary.write_text(
        "columns:\n  SEX: {label: sex, codes: {1: male, 2: female}}\n"
        "  stage: {label: tumour stage, kind: ordinal}\n"
    )
    table2, ts2, _ = load_user_table(path, target="outcome", dictionary=dictionary)
    sex = prompts.render(table2.frame, ts2)[:, ts2.names.index("SEX")]
    assert set(sex) == {"The sex is male.", "The sex is female."}
    assert (table2.frame["SEX"] == "female").sum() == (_cohort()["SEX"] == 2).sum()
    assert ts2["stage"].description == "tumour stage"


def test_longitudinal_first_visit_and_grouped_stratified_split() -> None:
    f = pd.DataFrame(
        {
            "pid": [1, 1, 2, 2, 3],
            "t": [5.0, 0.0, 0.0, 2.0, 1.0],
            "lab": [9.0, np.nan, 4.0, 7.0, 1.0],
            "y": [1, 1, 0, 0, 1],
        }
    )
    out = reduce_longitudinal(f, "pid", "t", "y", "first")
    # pid 1's first visit (t=0) has no lab: it stays missing, the later 9.0 is never read
    assert out["lab"].isna().tolist() == [True, False, False]
    assert out["lab"].tolist()[1:] == [4.0, 1.0] and "t" not in out
    last = reduce_longitudinal(f, "pid", "t", "y", "last")
    assert last["lab"].tolist() == [9.0, 7.0, 1.0]
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), 3)
    y = np.repeat(rng.random(200) < 0.3, 3).astype(int)
    keep, held = stratified_split(y, groups, 0.2, seed=0)
    assert not set(groups[keep]) & set(groups[held])
    assert abs(y[held].mean() - y.mean()) < 0.05
    keep, held = stratified_split(y[::3], None, 0.2, seed=3)
    assert abs(int(y[::3][held].sum()) - 0.2 * y[::3].sum()) <= 1


# -- bad input -------------------------------------------------------------------------------------
def test_unknown_target_suggests_close_names(tmp_path: Path) -> None:
    path = _write(_cohort(), tmp_path / "c.csv")
    with pytest.raises(DataError, match="did you mean: outcome") as err:
        load_user_table(path, target="outcom")
    assert "not in the table" in str(err.value)
    with pytest.raises(ConfigError, match="target=COLUMN"):
        load_user_table(path, target=None)


def test_constant_target_missing_target_rows_and_empty_column(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = _cohort()
    with pytest.raises(DataError, match="constant"):
        load_user_table(_write(f.assign(outcome=1.0), tmp_path / "k.csv"), target="outcome")
    f.loc[::10, "outcome"] = np.nan
    with caplog.at_level(logging.INFO):
        table, _, report = load_user_table(_write(f, tmp_path / "m.csv"), target="outcome")
    assert report.rows_dropped_missing_target == 40 and table.n_rows == 360
    assert "dropped 40 row(s)" in caplog.text
    assert "empty" not in table.columns and "missing on every row" in report.dropped["empty"]
    assert "pid" not in table.columns and "identifier" in report.dropped["pid"]


def test_mixed_types_fail_or_are_read_as_missing(tmp_path: Path) -> None:
    f = _cohort().astype({"SYSBP": object})
    f.loc[[3, 7], "SYSBP"] = ["high", "<90"]
    path = _write(f, tmp_path / "x.csv")
    with pytest.raises(DataError, match="'SYSBP' mixes numbers and text") as err:
        load_user_table(path, target="outcome")
    assert "on_bad_value=skip" in str(err.value) and "high" in str(err.value)
    table, _, report = load_user_table(path, target="outcome", on_bad_value="skip")
    assert table.frame["SYSBP"].isna().sum() == 2
    assert any("2 non-numeric value(s)" in d for d in report.decisions)


def test_non_utf8_file_names_the_encoding_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    text = "name,age,outcome\n" + "".join(f"Müller{i},{50 + i},{i % 2}\n" for i in range(30))
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match="not valid utf-8") as err:
        load_user_table(path, target="outcome")
    assert "encoding=latin-1" in str(err.value)
    table, _, _ = load_user_table(path, target="outcome", encoding="latin-1")
    assert table.n_rows == 30


def test_leakage_guard_refuses_until_dropped_or_allowed(tmp_path: Path) -> None:
    f = _cohort()
    f["days_to_death"] = np.where(f["outcome"] == 1, 100.0, np.nan)  # name and separation
    f["risk_copy"] = f["outcome"] * 3 + 1  # separation only
    f["outcome_v2"] = np.random.default_rng(1).normal(size=len(f))  # name only
    path = _write(f, tmp_path / "leak.csv")
    with pytest.raises(DataError, match="possible target leakage in 3 column") as err:
        load_user_table(path, target="outcome")
    msg = str(err.value)
    assert "risk_copy: alone it separates the target" in msg
    assert "outcome_v2: name close to the target" in msg
    assert "--set drop=" in msg
    table, _, report = load_user_table(
        path, target="outcome", drop=("days_to_death", "risk_copy"), allow_leaky=("outcome_v2",)
    )
    assert "outcome_v2" in table.columns and "risk_copy" not in table.columns
    assert "outcome_v2" in report.allowed_leaky


# -- the command line ------------------------------------------------------------------------------
def _fit_args(path: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "-q", "fit", "ehrprompt", "--data", str(path), "--out", str(out),
        "--set", "encoder=hash", "--set", f"cache_dir={cache}", "--set", "epochs=15",
        "--set", "corruption_rates=0.0", "--set", "n_boot=10", *extra,
    ]  # fmt: skip


def test_cli_fits_a_csv_written_here(tmp_path: Path) -> None:
    f = _cohort(600)
    f.loc[::25, "outcome"] = np.nan
    path = _write(f, tmp_path / "cohort.csv")
    out = tmp_path / "run"
    code = main(_fit_args(path, out, tmp_path / "cache", "--set", "target=outcome"))
    assert code == 0
    report = json.loads((out / "table_report.json").read_text())
    assert report["rows_dropped_missing_target"] == 24
    assert report["task"] == "binary" and report["dropped"]["empty"] == "missing on every row"
    templates = prompts.TemplateSet.from_yaml(out / "templates.yaml")
    assert templates["SEX"].template == "The sex is category {value}."
    sentences = (out / "example_sentences.txt").read_text().splitlines()
    assert len(sentences) == 5 and sentences[1].startswith("The sex is category")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_linear_outcome_auroc"] > 0.7  # the planted signal is there
    assert metrics["test_outcome_auroc"] > 0.65  # and the prompt model finds it
    # stratified: the test share of events matches the whole table's
    preds = pd.read_parquet(out / "predictions.parquet")
    y = f["outcome"].dropna()
    assert abs(preds["outcome_true"].mean() - y.mean()) < 0.02


def test_cli_bad_input_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(_cohort(), tmp_path / "cohort.csv")
    out = tmp_path / "run"
    assert main(_fit_args(path, out, tmp_path / "cache", "--set", "target=Outcome")) == 2
    err = capsys.readouterr().err
    assert "target column 'Outcome' is not in the table" in err and "did you mean" in err
    assert not out.exists()
    bad = tmp_path / "latin.csv"
    bad.write_bytes("a,outcome\n\xe9,1\n".encode("latin-1"))
    assert main(_fit_args(bad, out, tmp_path / "cache", "--set", "target=outcome")) == 2
    assert "encoding" in capsys.readouterr().err and not out.exists()


def test_cli_offset_and_value_paths_reload_to_the_same_scores(tmp_path: Path) -> None:
    """With the linear offset and the value encoding, a reloaded run (its linear path refitted
    on the same training rows) scores the test rows exactly as the fit did."""
    path = _write(_cohort(500), tmp_path / "cohort.csv")
    out = tmp_path / "run"
    extra = ["--set", "target=outcome", "--set", "linear_path=offset", "--set",
             "value_encoding=ple", "--set", "column_dropout=0.1", "--set", "epochs=3"]  # fmt: skip
    assert main(_fit_args(path, out, tmp_path / "cache", *extra)) == 0
    fitted = json.loads((out / "metrics.json").read_text())
    assert "valid_outcome_auroc" in fitted
    assert main(["-q", "evaluate", "ehrprompt", "--run", str(out), "--data", str(path)]) == 0
    again = json.loads((out / "evaluations" / "test-clean.json").read_text())["metrics"]
    assert again["outcome_auroc"] == pytest.approx(fitted["test_outcome_auroc"], abs=1e-9)
    # the offset starts the model at a tuned logistic model: it is not far below it
    assert fitted["test_outcome_auroc"] > fitted["test_linear_outcome_auroc"] - 0.05
