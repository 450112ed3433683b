"""MIMIC-III / MIMIC-IV cohort builder on synthetic mini databases: planted truths, errors."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("duckdb")

from clinfuse.core.errors import ConfigError, DataError  # noqa: E402
from clinfuse.methods.ehrprompt.data import EHRTable  # noqa: E402
from clinfuse.methods.ehrprompt.mimic import (  # noqa: E402
    FEATURES,
    MINI_PLANTED,
    MimicCohortConfig,
    build_mimic_cohort,
    write_mimic_mini,
)

N_PATIENTS = 20
INDEX = MINI_PLANTED["index"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "iv": write_mimic_mini(tmp_path_factory.mktemp("iv"), "iv", N_PATIENTS, 0, compress=True),
        "iii": write_mimic_mini(tmp_path_factory.mktemp("iii"), "iii", N_PATIENTS, 0),
    }


@pytest.fixture(scope="module")
def tables(roots: dict[str, Path]) -> dict[str, EHRTable]:
    return {v: build_mimic_cohort(root, v) for v, root in roots.items()}


def _row(table: EHRTable, role: str, key: str = "stay_id") -> int:
    hits = np.flatnonzero(table.meta["rows"]["stay_id"] == MINI_PLANTED[role][key])
    assert hits.size == 1, f"{role} not exactly once in the cohort"
    return int(hits[0])


def _stays(table: EHRTable) -> set[int]:
    return set(table.meta["rows"]["stay_id"].tolist())


# -- planted values ------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["iv", "iii"])
def test_first_day_summaries_equal_the_planted_values(
    tables: dict[str, EHRTable], version: str
) -> None:
    t = tables[version]
    i = _row(t, "index")
    for col, value in INDEX["expected"].items():
        assert t.frame.loc[i, col] == pytest.approx(value, abs=1e-9), col
    # the planted stay has no other vitals or labs: those summaries are missing, not zero
    assert np.isnan(t.frame.loc[i, "sodium_mean"]) and np.isnan(t.frame.loc[i, "spo2_max"])
    assert t.frame.loc[i, "age"] == pytest.approx(60.0, abs=0.01)
    assert t.frame.loc[i, "sex"] == "female"
    assert t.targets["los_days"][i] == pytest.approx(INDEX["los_hours"] / 24.0)
    assert t.targets["mortality"][i] == 0


@pytest.mark.parametrize("version", ["iv", "iii"])
def test_notes_of_the_first_day_only(tables: dict[str, EHRTable], version: str) -> None:
    t = tables[version]
    i = _row(t, "index")
    (h1, first), (h2, second) = INDEX["notes"]
    assert t.frame.loc[i, "notes"] == f"{first}\n\n{second}"  # newline and quotes survive
    assert t.meta["rows"]["n_notes"][i] == 2
    notes = t.frame["notes"].dropna()
    late, leaky = INDEX["late_note"][1], INDEX["leaky_note"][1]
    assert not notes.str.contains(late, regex=False).any()
    assert not notes.str.contains("expired", case=False).any()  # discharge summary / ISERROR
    assert leaky not in " ".join(notes)


@pytest.mark.parametrize("version", ["iv", "iii"])
def test_cohort_criteria(tables: dict[str, EHRTable], version: str) -> None:
    t, p = tables[version], MINI_PLANTED
    stays = _stays(t)
    assert p["two_stays"]["stay_id"] in stays and p["two_stays"]["second_stay_id"] not in stays
    assert p["child"]["stay_id"] not in stays and p["short"]["stay_id"] not in stays
    assert t.targets["mortality"][_row(t, "died")] == 1
    assert t.frame.loc[_row(t, "elderly"), "age"] == pytest.approx(
        p["elderly"]["age"][version], abs=1e-6
    )
    # one ICU stay per admission: a readmission is a new row, kept in the same split part
    first, second = p["readmitted"]["stay_id"], p["readmitted"]["second_stay_id"]
    assert {first, second} <= stays
    rows = t.meta["rows"]["stay_id"]
    test_stays = set(rows[t.split[1]].tolist())
    assert (first in test_stays) == (second in test_stays)
    # every kept stay: adult, >= 24 h, the first of its admission
    assert (t.frame["age"] >= 18).all() and (t.targets["los_days"] >= 1.0).all()
    assert len(set(t.meta["rows"]["hadm_id"].tolist())) == len(t)
    flow = list(t.meta["cohort"].values())
    assert flow == sorted(flow, reverse=True) and flow[-1] == len(t)
    assert set(t.classes["mortality"]) == {0, 1} and 0 < t.targets["mortality"].mean() < 1


def test_both_layouts_give_the_same_table(tables: dict[str, EHRTable]) -> None:
    iv, iii = tables["iv"], tables["iii"]
    np.testing.assert_array_equal(iv.meta["rows"]["stay_id"], iii.meta["rows"]["stay_id"])
    cols = [c for c in iv.columns if c not in ("admission_type", "first_careunit", "age")]
    pd.testing.assert_frame_equal(iv.frame[cols], iii.frame[cols])
    np.testing.assert_allclose(iv.frame["age"], iii.frame["age"], atol=0.41)  # 91 vs 91.4
    np.testing.assert_allclose(iv.targets["los_days"], iii.targets["los_days"])


def test_sql_agrees_with_a_pandas_oracle(roots: dict[str, Path], tables: dict[str, EHRTable]):
    """Heart rate (chart, [0, 24) h) and creatinine (lab, [-6, 24) h) of every stay, in pandas."""
    root, t = roots["iv"], tables["iv"]
    stays = pd.read_csv(root / "icu" / "icustays.csv.gz", parse_dates=["intime"])
    stays = stays[stays.stay_id.isin(t.meta["rows"]["stay_id"])]
    chart = pd.read_csv(root / "icu" / "chartevents.csv.gz", parse_dates=["charttime"])
    labs = pd.read_csv(root / "hosp" / "labevents.csv.gz", parse_dates=["charttime"])
    hr = chart[chart.itemid == 220045].merge(stays[["stay_id", "intime"]], on="stay_id")
    h = (hr.charttime - hr.intime).dt.total_seconds() / 3600
    hr = hr[(h >= 0) & (h < 24) & (hr.valuenum > 0) & (hr.valuenum <= 300)]
    cr = labs[labs.itemid == 50912].merge(stays[["subject_id", "stay_id", "intime"]])
    h = (cr.charttime - cr.intime).dt.total_seconds() / 3600
    cr = cr[(h >= -6) & (h < 24)]
    order = pd.Index(t.meta["rows"]["stay_id"])
    expected_hr = hr.groupby("stay_id").valuenum.mean().reindex(order).to_numpy()
    expected_cr = cr.groupby("stay_id").valuenum.max().reindex(order).to_numpy()
    np.testing.assert_allclose(t.frame["heart_rate_mean"], expected_hr)
    np.testing.assert_allclose(t.frame["creatinine_max"], expected_cr)
    assert np.isfinite(expected_hr).sum() >= 8  # the oracle saw real data


def test_window_is_configurable(roots: dict[str, Path]) -> None:
    cfg = MimicCohortConfig(window_hours=6.0, min_stay_hours=6.0, aggregates=("mean",))
    t = build_mimic_cohort(roots["iii"], "iii", cfg)
    i = _row(t, "index")
    assert t.frame.loc[i, "heart_rate_mean"] == pytest.approx(85.0)  # 80 at 1 h, 90 at 5 h
    assert t.frame.loc[i, "creatinine_mean"] == pytest.approx(1.0)  # only the -2 h value
    assert t.frame.loc[i, "notes"] == INDEX["notes"][0][1]
    assert "heart_rate_max" not in t.columns and len(t.columns) == 4 + len(FEATURES) + 1
    assert MINI_PLANTED["short"]["stay_id"] in _stays(t)  # 10 h >= 6 h


# -- the mini database follows the official schema -------------------------------------------
def test_mini_database_has_the_official_headers(roots: dict[str, Path]) -> None:
    with gzip.open(roots["iv"] / "icu" / "icustays.csv.gz", "rt") as fh:
        assert fh.readline().strip() == (
            "subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los"
        )
    with open(roots["iii"] / "NOTEEVENTS.csv") as fh:
        assert fh.readline().strip() == (
            "ROW_ID,SUBJECT_ID,HADM_ID,CHARTDATE,CHARTTIME,STORETIME,CATEGORY,DESCRIPTION,CGID,"
            "ISERROR,TEXT"
        )
    chart = pd.read_csv(roots["iii"] / "CHARTEVENTS.csv")
    assert chart["ICUSTAY_ID"].dtype == np.int64 and chart["ERROR"].max() == 1
    assert {211, 220045} <= set(chart["ITEMID"])  # CareVue and MetaVision stays
    pats = pd.read_csv(roots["iii"] / "PATIENTS.csv", parse_dates=["DOB"])
    assert pats["DOB"].dt.year.min() < 1900  # the > 89 date-of-birth shift
    assert (roots["iv"] / "note" / "discharge.csv.gz").is_file()  # written, never read


# -- notes policy and errors -------------------------------------------------------------------
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_note_policies(roots: dict[str, Path], tmp_path: Path) -> None:
    t = build_mimic_cohort(roots["iv"], "iv", MimicCohortConfig(notes="none"))
    assert "notes" not in t.columns and t.note_columns == ()
    root = _copy(roots["iii"], tmp_path / "iii")
    (root / "NOTEEVENTS.csv").unlink()
    assert "notes" not in build_mimic_cohort(root, "iii").columns  # auto: structured only
    with pytest.raises(DataError, match="NOTEEVENTS"):
        build_mimic_cohort(root, "iii", MimicCohortConfig(notes="require"))
    # MIMIC-IV-Note in its own folder
    iv = _copy(roots["iv"], tmp_path / "iv")
    note_root = tmp_path / "mimic-iv-note"
    shutil.move(iv / "note", note_root / "note")
    assert "notes" not in build_mimic_cohort(iv, "iv").columns
    t = build_mimic_cohort(iv, "iv", note_root=note_root)
    assert t.frame.loc[_row(t, "index"), "notes"].startswith(INDEX["notes"][0][1])
    cats = build_mimic_cohort(roots["iii"], "iii", MimicCohortConfig(note_categories=("Nursing",)))
    assert cats.frame["notes"].isna().all()  # planted notes are 'Nursing/other'


def test_missing_table_names_the_file_and_layout(roots: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(roots["iii"], tmp_path / "iii")
    (root / "CHARTEVENTS.csv").unlink()
    with pytest.raises(DataError, match="CHARTEVENTS") as err:
        build_mimic_cohort(root, "iii")
    assert "MIMIC-III v1.4" in str(err.value)
    with pytest.raises(DataError, match="hosp/patients"):
        build_mimic_cohort(root, "iv")  # a MIMIC-III folder read as MIMIC-IV


def test_missing_column_is_named(roots: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(roots["iii"], tmp_path / "iii")
    labs = pd.read_csv(root / "LABEVENTS.csv").drop(columns="VALUENUM")
    labs.to_csv(root / "LABEVENTS.csv", index=False)
    with pytest.raises(DataError, match="lacks column.*VALUENUM"):
        build_mimic_cohort(root, "iii")


def test_unparseable_value_and_bad_config(roots: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(roots["iii"], tmp_path / "iii")
    stays = pd.read_csv(root / "ICUSTAYS.csv")
    stays.loc[0, "INTIME"] = "yesterday"
    stays.to_csv(root / "ICUSTAYS.csv", index=False)
    with pytest.raises(DataError, match="DuckDB could not process"):
        build_mimic_cohort(root, "iii")
    with pytest.raises(ConfigError, match="unknown MIMIC version"):
        build_mimic_cohort(roots["iv"], "v")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="window_hours"):
        MimicCohortConfig(window_hours=0)
    with pytest.raises(ConfigError, match="aggregates"):
        MimicCohortConfig(aggregates=("median",))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="no ICU stay"):
        build_mimic_cohort(roots["iv"], "iv", MimicCohortConfig(min_age=120))
