r"""MIMIC-III and MIMIC-IV ICU cohorts for ehrprompt (mortality and ICU length of stay), in DuckDB.

:func:`build_mimic_cohort` reads the official CSV layouts (``.csv``, ``.csv.gz`` or
``.parquet``) and returns an :class:`~clinfuse.methods.ehrprompt.data.EHRTable` with one row per
ICU stay. MIMIC is credentialed and never shipped: tests run on the synthetic mini database of
:func:`write_mimic_mini`, written in the official schema with planted values
(:data:`MINI_PLANTED`).

Layouts read (other files and columns are ignored):

=========== ========================================== =====================================
version     tables (folder/name)                        notes (optional)
=========== ========================================== =====================================
``"iv"``    ``hosp/patients``, ``hosp/admissions``,     ``note/radiology`` (MIMIC-IV-Note,
            ``hosp/labevents``, ``icu/icustays``,        under ``root`` or ``note_root``);
            ``icu/chartevents``                          ``note/discharge`` is never read
``"iii"``   ``PATIENTS``, ``ADMISSIONS``, ``ICUSTAYS``, ``NOTEEVENTS`` (every category but
            ``CHARTEVENTS``, ``LABEVENTS`` (upper case,  ``Discharge summary``; ``ISERROR``
            one folder)                                  rows dropped)
=========== ========================================== =====================================

``diagnoses_icd`` / ``DIAGNOSES_ICD`` and the ``d_items`` / ``d_labitems`` dictionaries are written
by the mini database for completeness but not read: ICD codes are assigned at discharge (label
leakage) and the items are selected by itemid (:data:`ITEMS`).

Cohort (counts in ``meta["cohort"]``): the first ICU stay of each hospital admission (a second
stay in the same admission is dropped; a readmission is a new row), adults (age >= 18), stays of
at least 24 h, outcome known. Features come from the first ``window_hours`` (24) after
``intime``: age, sex, admission type, first care unit, and for each of the 15 items of
:data:`FEATURES` the mean, min and max of the plausible values (chart events in ``[0, 24)`` h,
labs in ``[-6, 24)`` h, as in mimic-code's first-day tables). Notes charted in ``[0, 24)`` h are
joined in chart order with a blank line; discharge summaries are never used. Targets:
``mortality`` (in-hospital death, ``admissions.hospital_expire_flag``) and ``los_days`` (ICU
length of stay, ``(outtime - intime)`` in days). The fixed split is 80/20 by patient
(``subject_id``), seeded.

MIMIC-III ages: raw age from ``DOB``; patients older than 89 have their ``DOB`` moved 300 years
back and get 91.4 (the median age of that group in the MIMIC-III documentation). MIMIC-IV ages:
``anchor_age + year(intime) - anchor_year``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from clinfuse.core.errors import ConfigError, DataError, require
from clinfuse.core.runs import atomic_path
from clinfuse.core.tables import duckdb_reader, find_table_file
from clinfuse.methods.ehrprompt.data import EHRTable
from clinfuse.methods.ehrprompt.prompts import ColumnSpec

__all__ = [
    "FEATURES",
    "ITEMS",
    "MINI_PLANTED",
    "MimicCohortConfig",
    "build_mimic_cohort",
    "find_mimic_table",
    "write_mimic_mini",
]

log = logging.getLogger(__name__)

Version = Literal["iii", "iv"]
Aggregate = Literal["mean", "min", "max"]
NotePolicy = Literal["auto", "require", "none"]


@dataclass(frozen=True)
class MimicCohortConfig:
    """Cohort, observation window and notes of the ehrprompt MIMIC tables.

    The paper does not give its MIMIC-III cohort or observation window: every default here is
    our choice [inferred].
    """

    window_hours: float = 24.0
    """Observation window after ICU admission: features and notes from ``[0, window_hours)``."""
    min_stay_hours: float = 24.0
    """Stays shorter than this (ICU length of stay, hours) are excluded."""
    min_age: float = 18.0
    """Adults only: age at the ICU admission >= ``min_age`` years."""
    lab_lookback_hours: float = 6.0
    """Labs drawn up to this many hours before ``intime`` count (mimic-code uses 6)."""
    aggregates: tuple[Aggregate, ...] = ("mean", "min", "max")
    """Summaries of each vital/lab over the window; one column ``<feature>_<aggregate>`` each."""
    notes: NotePolicy = "auto"
    """``auto``: add the note column when a note table exists; ``require``: fail without one;
    ``none``: structured columns only."""
    note_categories: tuple[str, ...] = ()
    """MIMIC-III NOTEEVENTS categories kept (case-insensitive); empty keeps all but discharge
    summaries, which are never kept."""
    max_note_chars: int | None = None
    """Cut each stay's concatenated notes to this many characters (None keeps all)."""
    shifted_age: float = 91.4
    """Age given to MIMIC-III patients older than 89 (their date of birth is shifted)."""
    test_fraction: float = 0.2
    """Fraction of patients in the fixed test split (all stays of a patient stay together)."""
    seed: int = 0
    """Seed of the patient-level split."""

    def __post_init__(self) -> None:
        checks = {
            "window_hours": self.window_hours > 0,
            "min_stay_hours": self.min_stay_hours >= 0,
            "lab_lookback_hours": self.lab_lookback_hours >= 0,
            "aggregates": bool(self.aggregates)
            and set(self.aggregates) <= {"mean", "min", "max"}
            and len(set(self.aggregates)) == len(self.aggregates),
            "notes": self.notes in ("auto", "require", "none"),
            "max_note_chars": self.max_note_chars is None or self.max_note_chars > 0,
            "test_fraction": 0.0 < self.test_fraction < 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"invalid MimicCohortConfig.{name}",
                    expected="window_hours > 0, min_stay_hours >= 0, lab_lookback_hours >= 0, "
                    "aggregates a non-empty subset of (mean, min, max), notes in (auto, require, "
                    "none), max_note_chars > 0 or None, 0 < test_fraction < 1",
                    found=f"{name}={getattr(self, name)!r}",
                )


# -- features and items ------------------------------------------------------------------------
FEATURES: dict[str, tuple[str, str, float, float]] = {
    "heart_rate": ("beats/min", "heart rate", 0.0, 300.0),
    "sbp": ("mmHg", "systolic blood pressure", 0.0, 400.0),
    "mbp": ("mmHg", "mean arterial blood pressure", 0.0, 300.0),
    "resp_rate": ("breaths/min", "respiratory rate", 0.0, 70.0),
    "spo2": ("%", "oxygen saturation (pulse oximetry)", 0.0, 100.0),
    "temperature": ("degrees Celsius", "body temperature", 10.0, 50.0),
    "creatinine": ("mg/dL", "serum creatinine", 0.0, 150.0),
    "bun": ("mg/dL", "blood urea nitrogen", 0.0, 300.0),
    "sodium": ("mEq/L", "serum sodium", 0.0, 200.0),
    "potassium": ("mEq/L", "serum potassium", 0.0, 30.0),
    "glucose": ("mg/dL", "blood glucose", 0.0, 10000.0),
    "lactate": ("mmol/L", "blood lactate", 0.0, 50.0),
    "wbc": ("x10^3/uL", "white blood cell count", 0.0, 1000.0),
    "hemoglobin": ("g/dL", "hemoglobin", 0.0, 50.0),
    "platelets": ("x10^3/uL", "platelet count", 0.0, 10000.0),
}
"""Feature -> (unit, description, lo, hi): values outside ``(lo, hi]`` after conversion are
dropped as charting errors (ranges from mimic-code's vital and lab concepts)."""

# feature, source, itemid, versions, shift, scale (value' = (value + shift) * scale), label
ITEMS: tuple[tuple[str, str, int, tuple[str, ...], float, float, str], ...] = (
    ("heart_rate", "chart", 220045, ("iii", "iv"), 0.0, 1.0, "Heart Rate (MetaVision)"),
    ("heart_rate", "chart", 211, ("iii",), 0.0, 1.0, "Heart Rate (CareVue)"),
    ("sbp", "chart", 220050, ("iii", "iv"), 0.0, 1.0, "Arterial Blood Pressure systolic"),
    ("sbp", "chart", 220179, ("iii", "iv"), 0.0, 1.0, "Non Invasive Blood Pressure systolic"),
    ("sbp", "chart", 51, ("iii",), 0.0, 1.0, "Arterial BP [Systolic] (CareVue)"),
    ("sbp", "chart", 442, ("iii",), 0.0, 1.0, "Manual BP [Systolic] (CareVue)"),
    ("sbp", "chart", 455, ("iii",), 0.0, 1.0, "NBP [Systolic] (CareVue)"),
    ("sbp", "chart", 6701, ("iii",), 0.0, 1.0, "Arterial BP #2 [Systolic] (CareVue)"),
    ("mbp", "chart", 220052, ("iii", "iv"), 0.0, 1.0, "Arterial Blood Pressure mean"),
    ("mbp", "chart", 220181, ("iii", "iv"), 0.0, 1.0, "Non Invasive Blood Pressure mean"),
    ("mbp", "chart", 225312, ("iii", "iv"), 0.0, 1.0, "ART BP mean"),
    ("mbp", "chart", 52, ("iii",), 0.0, 1.0, "Arterial BP Mean (CareVue)"),
    ("mbp", "chart", 443, ("iii",), 0.0, 1.0, "Manual BP Mean(calc) (CareVue)"),
    ("mbp", "chart", 456, ("iii",), 0.0, 1.0, "NBP Mean (CareVue)"),
    ("mbp", "chart", 6702, ("iii",), 0.0, 1.0, "Arterial BP Mean #2 (CareVue)"),
    ("resp_rate", "chart", 220210, ("iii", "iv"), 0.0, 1.0, "Respiratory Rate"),
    ("resp_rate", "chart", 224690, ("iii", "iv"), 0.0, 1.0, "Respiratory Rate (Total)"),
    ("resp_rate", "chart", 615, ("iii",), 0.0, 1.0, "Resp Rate (Total) (CareVue)"),
    ("resp_rate", "chart", 618, ("iii",), 0.0, 1.0, "Respiratory Rate (CareVue)"),
    ("spo2", "chart", 220277, ("iii", "iv"), 0.0, 1.0, "O2 saturation pulseoxymetry"),
    ("spo2", "chart", 646, ("iii",), 0.0, 1.0, "SpO2 (CareVue)"),
    ("temperature", "chart", 223762, ("iii", "iv"), 0.0, 1.0, "Temperature Celsius"),
    ("temperature", "chart", 223761, ("iii", "iv"), -32.0, 5.0 / 9.0, "Temperature Fahrenheit"),
    ("temperature", "chart", 676, ("iii",), 0.0, 1.0, "Temperature C (CareVue)"),
    ("temperature", "chart", 678, ("iii",), -32.0, 5.0 / 9.0, "Temperature F (CareVue)"),
    ("creatinine", "lab", 50912, ("iii", "iv"), 0.0, 1.0, "Creatinine"),
    ("bun", "lab", 51006, ("iii", "iv"), 0.0, 1.0, "Urea Nitrogen"),
    ("sodium", "lab", 50983, ("iii", "iv"), 0.0, 1.0, "Sodium"),
    ("potassium", "lab", 50971, ("iii", "iv"), 0.0, 1.0, "Potassium"),
    ("glucose", "lab", 50931, ("iii", "iv"), 0.0, 1.0, "Glucose"),
    ("lactate", "lab", 50813, ("iii", "iv"), 0.0, 1.0, "Lactate (blood gas)"),
    ("wbc", "lab", 51301, ("iii", "iv"), 0.0, 1.0, "White Blood Cells"),
    ("wbc", "lab", 51300, ("iii", "iv"), 0.0, 1.0, "WBC Count"),
    ("hemoglobin", "lab", 51222, ("iii", "iv"), 0.0, 1.0, "Hemoglobin"),
    ("platelets", "lab", 51265, ("iii", "iv"), 0.0, 1.0, "Platelet Count"),
)
"""Every itemid read, with its feature, unit conversion and the MIMIC versions that use it
(MIMIC-III CareVue itemids are 3-4 digits; MetaVision itemids 22xxxx are shared with MIMIC-IV;
lab itemids 5xxxx are the same in both)."""


# -- table layouts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Table:
    """Where a logical table lives and which typed columns the builder reads from it."""

    path: str  # relative to root, without suffix
    columns: dict[str, tuple[str, str]]  # logical name -> (source column, DuckDB type)
    constants: dict[str, str] = field(default_factory=dict)  # logical name -> SQL expression
    where: str | None = None  # row filter over source columns


_BIG, _TS, _STR, _DBL, _INT = "BIGINT", "TIMESTAMP", "VARCHAR", "DOUBLE", "INTEGER"

_LAYOUT: dict[str, dict[str, _Table]] = {
    "iv": {
        "patients": _Table(
            "hosp/patients",
            {
                "subject_id": ("subject_id", _BIG),
                "gender": ("gender", _STR),
                "anchor_age": ("anchor_age", _DBL),
                "anchor_year": ("anchor_year", _INT),
            },
        ),
        "admissions": _Table(
            "hosp/admissions",
            {
                "hadm_id": ("hadm_id", _BIG),
                "admission_type": ("admission_type", _STR),
                "hospital_expire_flag": ("hospital_expire_flag", _INT),
            },
        ),
        "icustays": _Table(
            "icu/icustays",
            {
                "subject_id": ("subject_id", _BIG),
                "hadm_id": ("hadm_id", _BIG),
                "stay_id": ("stay_id", _BIG),
                "first_careunit": ("first_careunit", _STR),
                "intime": ("intime", _TS),
                "outtime": ("outtime", _TS),
            },
        ),
        "chartevents": _Table(
            "icu/chartevents",
            {
                "stay_id": ("stay_id", _BIG),
                "charttime": ("charttime", _TS),
                "itemid": ("itemid", _BIG),
                "valuenum": ("valuenum", _DBL),
            },
        ),
        "labevents": _Table(
            "hosp/labevents",
            {
                "subject_id": ("subject_id", _BIG),
                "charttime": ("charttime", _TS),
                "itemid": ("itemid", _BIG),
                "valuenum": ("valuenum", _DBL),
            },
        ),
        "notes": _Table(
            "note/radiology",
            {
                "subject_id": ("subject_id", _BIG),
                "charttime": ("charttime", _TS),
                "note_key": ("note_id", _STR),
                "text": ("text", _STR),
            },
            constants={"category": "'Radiology'"},
        ),
    },
    "iii": {
        "patients": _Table(
            "PATIENTS",
            {
                "subject_id": ("SUBJECT_ID", _BIG),
                "gender": ("GENDER", _STR),
                "dob": ("DOB", _TS),
            },
        ),
        "admissions": _Table(
            "ADMISSIONS",
            {
                "hadm_id": ("HADM_ID", _BIG),
                "admission_type": ("ADMISSION_TYPE", _STR),
                "hospital_expire_flag": ("HOSPITAL_EXPIRE_FLAG", _INT),
            },
        ),
        "icustays": _Table(
            "ICUSTAYS",
            {
                "subject_id": ("SUBJECT_ID", _BIG),
                "hadm_id": ("HADM_ID", _BIG),
                "stay_id": ("ICUSTAY_ID", _BIG),
                "first_careunit": ("FIRST_CAREUNIT", _STR),
                "intime": ("INTIME", _TS),
                "outtime": ("OUTTIME", _TS),
            },
        ),
        "chartevents": _Table(
            "CHARTEVENTS",
            {
                "stay_id": ("ICUSTAY_ID", _BIG),
                "charttime": ("CHARTTIME", _TS),
                "itemid": ("ITEMID", _BIG),
                "valuenum": ("VALUENUM", _DBL),
                "error": ("ERROR", _INT),
            },
            where="coalesce(error, 0) <> 1",  # ERROR = 1 marks a value flagged as erroneous
        ),
        "labevents": _Table(
            "LABEVENTS",
            {
                "subject_id": ("SUBJECT_ID", _BIG),
                "charttime": ("CHARTTIME", _TS),
                "itemid": ("ITEMID", _BIG),
                "valuenum": ("VALUENUM", _DBL),
            },
        ),
        "notes": _Table(
            "NOTEEVENTS",
            {
                "subject_id": ("SUBJECT_ID", _BIG),
                "charttime": ("CHARTTIME", _TS),
                "category": ("CATEGORY", _STR),
                "note_key": ("ROW_ID", _STR),
                "iserror": ("ISERROR", _INT),
                "text": ("TEXT", _STR),
            },
            where="coalesce(iserror, 0) <> 1",  # ISERROR = 1: the note was marked wrong
        ),
    },
}

_LAYOUT_HINT = {
    "iv": "MIMIC-IV v2/v3: <root>/hosp/{patients,admissions,labevents}, "
    "<root>/icu/{icustays,chartevents}, optional <root>/note/radiology (MIMIC-IV-Note)",
    "iii": "MIMIC-III v1.4: <root>/{PATIENTS,ADMISSIONS,ICUSTAYS,CHARTEVENTS,LABEVENTS}, "
    "optional <root>/NOTEEVENTS (upper-case names)",
}
_STAGES: dict[str, tuple[str, ...]] = {
    "iv": ("01_stays_iv.sql", "02_cohort.sql", "03_features.sql"),
    "iii": ("01_stays_iii.sql", "02_cohort.sql", "03_features.sql"),
}
_NOTES_STAGE = "04_notes.sql"


def _check_version(version: str) -> None:
    if version not in _LAYOUT:
        raise ConfigError("unknown MIMIC version", expected=sorted(_LAYOUT), found=version)


def find_mimic_table(
    root: str | Path, version: Version, name: str, *, required: bool = True
) -> Path | None:
    """Path of logical table ``name`` (``patients``, ..., ``notes``) of a MIMIC folder.

    Tries ``.csv.gz``, ``.csv`` and ``.parquet``, and for MIMIC-III both the official upper-case
    file name and a lower-case one.

    Raises:
        DataError: ``required`` and no such file (the message names the file and the layout).
    """
    _check_version(version)
    rel = Path(_LAYOUT[version][name].path)
    base = Path(root)
    stems = [rel.name, rel.name.lower()] if version == "iii" else [rel.name]
    path = find_table_file(base / rel.parent, stems)
    if path is not None:
        return path
    if not required:
        return None
    folder = base / rel.parent
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
    raise DataError(
        f"MIMIC-{version.upper()} table file {rel}.csv.gz not found under {base}",
        expected=f"{folder / rel.name}.csv.gz, .csv or .parquet; layout {_LAYOUT_HINT[version]}",
        found=found,
        fix="point root at the MIMIC folder itself (the one that holds the tables)",
    )


def _register(con: Any, version: str, name: str, path: Path) -> None:
    """Create the typed view ``name`` over ``path`` after checking its columns."""
    duckdb = require("duckdb", "mimic")
    spec = _LAYOUT[version][name]
    source = duckdb_reader(path)
    try:
        present = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    except duckdb.Error as exc:
        raise DataError(
            f"cannot read MIMIC table {path}",
            expected="a CSV (optionally gzipped) with a header row, or a Parquet file",
            found=str(exc).splitlines()[0],
        ) from exc
    by_lower = {c.lower(): c for c in present}
    missing = [src for src, _ in spec.columns.values() if src.lower() not in by_lower]
    if missing:
        raise DataError(
            f"MIMIC table {path} lacks column(s) {', '.join(missing)}",
            expected=[src for src, _ in spec.columns.values()],
            found=present,
            fix=f"use the official files ({_LAYOUT_HINT[version]})",
        )
    select = [
        f'CAST("{by_lower[src.lower()]}" AS {sql_type}) AS {col}'
        for col, (src, sql_type) in spec.columns.items()
    ] + [f"{expr} AS {col}" for col, expr in spec.constants.items()]
    where = f" WHERE {spec.where}" if spec.where else ""
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM "
        f"(SELECT {', '.join(select)} FROM {source}){where}"
    )


def _note_path(
    root: Path, version: Version, note_root: Path | None, policy: NotePolicy
) -> Path | None:
    if policy == "none":
        return None
    roots = [root] + ([note_root] if note_root is not None else [])
    if version == "iv" and note_root is not None:
        roots.append(note_root.parent)  # note_root may be the note/ folder itself
    for r in roots:
        path = find_mimic_table(r, version, "notes", required=False)
        if path is not None:
            return path
    if policy == "require":
        find_mimic_table(note_root or root, version, "notes")  # raises with the layout
    log.info("no MIMIC-%s note table found: structured columns only", version.upper())
    return None


def _set_lookups(con: Any, version: str, config: MimicCohortConfig) -> None:
    typed = {
        "window_hours": config.window_hours,
        "min_stay_hours": config.min_stay_hours,
        "min_age": config.min_age,
        "lab_lookback_hours": config.lab_lookback_hours,
        "shifted_age": config.shifted_age,
    }
    for name, value in typed.items():
        con.execute(f"SET VARIABLE {name} = CAST(? AS DOUBLE)", [float(value)])
    items = pd.DataFrame(
        [(f, s, i, sh, sc) for f, s, i, vs, sh, sc, _ in ITEMS if version in vs],
        columns=["feature", "source", "itemid", "shift", "scale"],
    )
    features = pd.DataFrame(
        [(f, lo, hi) for f, (_, _, lo, hi) in FEATURES.items()], columns=["feature", "lo", "hi"]
    )
    categories = pd.DataFrame({"category": [c.strip().lower() for c in config.note_categories]})
    categories["category"] = categories["category"].astype(str)
    for name, frame in {
        "items": items,
        "features": features,
        "note_categories": categories,
    }.items():
        con.register(f"{name}_df", frame)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_df")
        con.unregister(f"{name}_df")


def _sql(name: str) -> str:
    return resources.files(__package__).joinpath("sql", name).read_text()


def _scalar(con: Any, sql: str) -> Any:
    return con.execute(sql).fetchone()[0]


def _flow(con: Any) -> dict[str, int]:
    """Stays left after each cohort criterion, in order."""
    steps = {
        "icu_stays": "TRUE",
        "first_stay_of_admission": "seq_in_admission = 1",
        "adult": "age >= getvariable('min_age')",
        "min_stay_length": "los_hours >= getvariable('min_stay_hours')",
        "outcome_known": "hospital_expire_flag IS NOT NULL",
    }
    flow, conds = {}, []
    for name, cond in steps.items():
        conds.append(cond)
        flow[name] = int(_scalar(con, f"SELECT count(*) FROM stays WHERE {' AND '.join(conds)}"))
    return flow


def _specs(config: MimicCohortConfig, with_notes: bool) -> tuple[ColumnSpec, ...]:
    window = f"{config.window_hours:g} h"
    words = {"mean": "mean", "min": "minimum", "max": "maximum"}
    specs = [
        ColumnSpec("age", "numeric", "years", "age at ICU admission"),
        ColumnSpec("sex", "categorical", None, "sex"),
        ColumnSpec("admission_type", "categorical", None, "hospital admission type"),
        ColumnSpec("first_careunit", "categorical", None, "first ICU care unit"),
    ]
    for feature, (unit, desc, _, _) in FEATURES.items():
        for agg in config.aggregates:
            specs.append(
                ColumnSpec(
                    f"{feature}_{agg}",
                    "numeric",
                    unit,
                    f"{words[agg]} {desc} in the first {window} of the ICU stay",
                )
            )
    if with_notes:
        specs.append(
            ColumnSpec("notes", "text", None, f"clinical notes of the first {window} in ICU")
        )
    return tuple(specs)


def _patient_split(
    subjects: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    unique = np.unique(subjects)
    perm = np.random.default_rng(seed).permutation(unique.size)
    n_test = int(round(test_fraction * unique.size)) if unique.size > 1 else 0
    n_test = min(max(n_test, 1 if unique.size > 1 else 0), unique.size - 1)
    test_subjects = unique[perm[:n_test]]
    is_test = np.isin(subjects, test_subjects)
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def _assemble(
    cohort: pd.DataFrame,
    agg: pd.DataFrame,
    notes: pd.DataFrame | None,
    config: MimicCohortConfig,
) -> pd.DataFrame:
    frame = cohort[["stay_id", "age", "sex", "admission_type", "first_careunit"]].copy()
    if len(agg):
        wide = agg.pivot(index="stay_id", columns="feature", values=list(config.aggregates))
        wide.columns = [f"{feature}_{a}" for a, feature in wide.columns]
        frame = frame.merge(wide, left_on="stay_id", right_index=True, how="left")
    measured = [f"{feature}_{a}" for feature in FEATURES for a in config.aggregates]
    for col in measured:
        if col not in frame:  # never observed in the cohort: keep the column, all missing
            frame[col] = np.nan
    if notes is not None:
        text = frame["stay_id"].map(dict(zip(notes["stay_id"], notes["notes"], strict=True)))
        if config.max_note_chars is not None:
            text = text.str.slice(0, config.max_note_chars)
        frame["notes"] = text.astype(object).where(text.notna(), None)
    for col in ("sex", "admission_type", "first_careunit"):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    order = ["age", "sex", "admission_type", "first_careunit", *measured]
    return frame[order + (["notes"] if notes is not None else [])].reset_index(drop=True)


def build_mimic_cohort(
    root: str | Path,
    version: Version = "iv",
    config: MimicCohortConfig | None = None,
    note_root: str | Path | None = None,
) -> EHRTable:
    """The ehrprompt ICU cohort of a MIMIC-III or MIMIC-IV folder as an :class:`EHRTable`.

    See the module docstring for the layouts, cohort and features. ``note_root`` is where
    MIMIC-IV-Note lives when it is not under ``root`` (its ``note/`` folder or the folder above).
    ``meta`` holds ``cohort`` (stays left after each criterion), ``rows`` (``subject_id``,
    ``hadm_id``, ``stay_id`` per row), ``n_notes`` (notes used per row), ``tables``, ``items``
    and ``config``.

    Shape:
        frame: ``(n_stays, 4 + 15 * len(aggregates) [+ 1 notes])``.

    Raises:
        DataError: a table file or a needed column is missing, a value cannot be parsed, or no
            stay passes the cohort criteria.
    """
    _check_version(version)
    config = config or MimicCohortConfig()
    duckdb = require("duckdb", "mimic")
    root = Path(root)
    t0 = time.perf_counter()
    paths = {
        name: find_mimic_table(root, version, name) for name in _LAYOUT[version] if name != "notes"
    }
    note_file = _note_path(
        root, version, Path(note_root) if note_root is not None else None, config.notes
    )
    if note_file is not None:
        paths["notes"] = note_file
    con = duckdb.connect()
    try:
        for name, path in paths.items():
            _register(con, version, name, path)
        _set_lookups(con, version, config)
        try:
            for stage in _STAGES[version] + ((_NOTES_STAGE,) if note_file else ()):
                con.execute(_sql(stage))
            flow = _flow(con)
            cohort = con.execute("SELECT * FROM cohort ORDER BY subject_id, intime, stay_id").df()
            agg = con.execute("SELECT * FROM feature_agg").df()
            notes = con.execute("SELECT * FROM stay_notes").df() if note_file else None
        except duckdb.Error as exc:
            raise DataError(
                f"DuckDB could not process the MIMIC-{version.upper()} tables under {root}",
                expected="values parseable as the types in mimic._LAYOUT",
                found=str(exc).splitlines()[0],
            ) from exc
    finally:
        con.close()
    if cohort.empty:
        raise DataError(
            f"no ICU stay of {root} passes the cohort criteria",
            expected="an adult first ICU stay of an admission lasting >= min_stay_hours",
            found=flow,
            fix="check the tables, or relax MimicCohortConfig (min_age, min_stay_hours)",
        )
    frame = _assemble(cohort, agg, notes, config)
    n_notes = np.zeros(len(cohort), dtype=np.int64)
    if notes is not None:
        lookup = dict(zip(notes["stay_id"], notes["n_notes"], strict=True))
        n_notes = cohort["stay_id"].map(lookup).fillna(0).to_numpy(dtype=np.int64)
    subjects = cohort["subject_id"].to_numpy(dtype=np.int64)
    table = EHRTable(
        name=f"mimic{version}",
        frame=frame,
        specs=_specs(config, note_file is not None),
        targets={
            "mortality": cohort["mortality"].to_numpy(dtype=np.int64),
            "los_days": cohort["los_days"].to_numpy(dtype=np.float64),
        },
        tasks={"mortality": "classification", "los_days": "regression"},
        note_columns=("notes",) if note_file is not None else (),
        split=_patient_split(subjects, config.test_fraction, config.seed),
        classes={"mortality": (0, 1)},
        meta={
            "version": version,
            "cohort": flow,
            "targets": {
                "mortality": "in-hospital death (admissions.hospital_expire_flag)",
                "los_days": "ICU length of stay, (outtime - intime) in days",
            },
            "rows": {
                "subject_id": subjects,
                "hadm_id": cohort["hadm_id"].to_numpy(dtype=np.int64),
                "stay_id": cohort["stay_id"].to_numpy(dtype=np.int64),
                "n_notes": n_notes,
            },
            "tables": {k: str(v) for k, v in paths.items()},
            "items": [
                {"feature": f, "source": s, "itemid": i, "label": lab}
                for f, s, i, vs, _, _, lab in ITEMS
                if version in vs
            ],
            "config": asdict(config),
        },
    )
    log.info(
        "MIMIC-%s cohort: %d stays of %d ICU stays, %d with notes (%.1f s)",
        version.upper(),
        len(frame),
        flow["icu_stays"],
        int((n_notes > 0).sum()),
        time.perf_counter() - t0,
    )
    return table.validate()


# == the synthetic mini database ===================================================================
_BASE = pd.Timestamp("2150-01-01 00:00:00")

MINI_PLANTED: dict[str, dict[str, Any]] = {
    "index": {
        "subject_id": 10000001,
        "hadm_id": 20000001,
        "stay_id": 30000001,
        "age": {"iv": 60.0, "iii": 60.0},
        "los_hours": 50.0,
        "mortality": 0,
        # kept: values inside the window; dropped: before intime, at 24 h, after, implausible
        "heart_rate": {
            "kept": ((1.0, 80.0), (5.0, 90.0), (23.0, 100.0)),
            "dropped": ((-0.5, 150.0), (24.0, 170.0), (30.0, 200.0), (10.0, 400.0)),
        },
        "temp_f": ((2.0, 98.6),),  # 37.0 C
        "temp_c": ((6.0, 38.0),),
        "creatinine": {"kept": ((-2.0, 1.0), (10.0, 2.0)), "dropped": ((-8.0, 5.0), (26.0, 9.0))},
        "error_heart_rate": (3.0, 250.0),  # MIMIC-III CHARTEVENTS row with ERROR = 1
        "notes": (
            (4.0, "Intubated overnight,\nstarted on norepinephrine."),
            (12.0, 'Sedation weaned; "follows" commands.'),
        ),
        "late_note": (30.0, "Extubated this morning."),
        "leaky_note": (6.0, "Patient expired on hospital day 3."),  # discharge summary / error
        "expected": {
            "heart_rate_mean": 90.0,
            "heart_rate_min": 80.0,
            "heart_rate_max": 100.0,
            "temperature_mean": 37.5,
            "temperature_min": 37.0,
            "temperature_max": 38.0,
            "creatinine_mean": 1.5,
            "creatinine_min": 1.0,
            "creatinine_max": 2.0,
        },
    },
    "two_stays": {
        "subject_id": 10000002,
        "hadm_id": 20000002,
        "stay_id": 30000002,
        "second_stay_id": 30000003,
        "age": {"iv": 70.0, "iii": 70.0},
        "los_hours": 30.0,
        "mortality": 0,
    },
    "child": {
        "subject_id": 10000003,
        "hadm_id": 20000003,
        "stay_id": 30000004,
        "age": {"iv": 12.0, "iii": 12.0},
        "los_hours": 40.0,
        "mortality": 0,
    },
    "short": {
        "subject_id": 10000004,
        "hadm_id": 20000004,
        "stay_id": 30000005,
        "age": {"iv": 50.0, "iii": 50.0},
        "los_hours": 10.0,
        "mortality": 0,
    },
    "died": {
        "subject_id": 10000005,
        "hadm_id": 20000005,
        "stay_id": 30000006,
        "age": {"iv": 80.0, "iii": 80.0},
        "los_hours": 36.0,
        "mortality": 1,
    },
    "elderly": {
        "subject_id": 10000006,
        "hadm_id": 20000006,
        "stay_id": 30000007,
        "age": {"iv": 91.0, "iii": 91.4},
        "los_hours": 72.0,
        "mortality": 0,
    },
    "readmitted": {
        "subject_id": 10000007,
        "hadm_id": 20000007,
        "stay_id": 30000008,
        "second_hadm_id": 20000008,
        "second_stay_id": 30000009,
        "age": {"iv": 65.0, "iii": 65.0},
        "los_hours": 48.0,
        "mortality": 0,
    },
}
"""Planted subjects of :func:`write_mimic_mini` and what the builder must return for them.

``index``: exact heart rate, temperature (one Fahrenheit reading) and creatinine summaries and
two notes (one multi-line, one with quotes); the ``dropped`` events, a late note and a leaky
note (a MIMIC-III discharge summary / MIMIC-IV discharge note / MIMIC-III ``ISERROR`` row, all
charted inside the window) must not come back. ``two_stays``: its second ICU stay in the same
admission is dropped. ``child`` (12 years) and ``short`` (10 h) are dropped. ``died``:
``mortality = 1``. ``elderly``: MIMIC-III age shifted by 300 years (91.4), MIMIC-IV anchor age
91. ``readmitted``: two admissions with one ICU stay each, both kept, in the same split part."""

# logical chart item -> (MIMIC-IV / MIMIC-III MetaVision itemid, MIMIC-III CareVue itemid, unit)
_MINI_CHART: dict[str, tuple[int, int, str]] = {
    "heart_rate": (220045, 211, "bpm"),
    "sbp": (220179, 455, "mmHg"),
    "mbp": (220181, 456, "mmHg"),
    "resp_rate": (220210, 618, "insp/min"),
    "spo2": (220277, 646, "%"),
    "temp_f": (223761, 678, "Deg. F"),
    "temp_c": (223762, 676, "Deg. C"),
}
# logical lab -> (itemid, label, unit, mean, sd)
_MINI_LABS: dict[str, tuple[int, str, str, float, float]] = {
    "creatinine": (50912, "Creatinine", "mg/dL", 1.2, 0.6),
    "bun": (51006, "Urea Nitrogen", "mg/dL", 25.0, 10.0),
    "sodium": (50983, "Sodium", "mEq/L", 139.0, 4.0),
    "potassium": (50971, "Potassium", "mEq/L", 4.1, 0.5),
    "glucose": (50931, "Glucose", "mg/dL", 140.0, 35.0),
    "lactate": (50813, "Lactate", "mmol/L", 1.8, 0.8),
    "wbc": (51301, "White Blood Cells", "K/uL", 11.0, 4.0),
    "hemoglobin": (51222, "Hemoglobin", "g/dL", 10.5, 1.8),
    "platelets": (51265, "Platelet Count", "K/uL", 210.0, 70.0),
}
# chart item -> (mean, sd)
_MINI_VITALS: dict[str, tuple[float, float]] = {
    "heart_rate": (88.0, 14.0),
    "sbp": (120.0, 18.0),
    "mbp": (80.0, 12.0),
    "resp_rate": (19.0, 4.0),
    "spo2": (96.0, 2.0),
}
_MINI_CAP = {"heart_rate": 250.0, "sbp": 250.0, "mbp": 200.0, "resp_rate": 60.0, "spo2": 100.0}
_CAREUNITS = {
    "iv": (
        "Medical Intensive Care Unit (MICU)",
        "Surgical Intensive Care Unit (SICU)",
        "Cardiac Vascular Intensive Care Unit (CVICU)",
    ),
    "iii": ("MICU", "SICU", "CCU", "CSRU", "TSICU"),
}
_ADMISSION_TYPES = {
    "iv": ("EW EMER.", "URGENT", "ELECTIVE", "SURGICAL SAME DAY ADMISSION"),
    "iii": ("EMERGENCY", "URGENT", "ELECTIVE"),
}

# official column order of every table written; names are lower case (IV) / upper case (III)
_NOTE_COLUMNS = (
    "note_id",
    "subject_id",
    "hadm_id",
    "note_type",
    "note_seq",
    "charttime",
    "storetime",
    "text",
)
_IV_COLUMNS: dict[str, tuple[str, ...]] = {
    "hosp/patients": (
        "subject_id",
        "gender",
        "anchor_age",
        "anchor_year",
        "anchor_year_group",
        "dod",
    ),
    "hosp/admissions": (
        "subject_id",
        "hadm_id",
        "admittime",
        "dischtime",
        "deathtime",
        "admission_type",
        "admit_provider_id",
        "admission_location",
        "discharge_location",
        "insurance",
        "language",
        "marital_status",
        "race",
        "edregtime",
        "edouttime",
        "hospital_expire_flag",
    ),
    "hosp/diagnoses_icd": ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"),
    "hosp/labevents": (
        "labevent_id",
        "subject_id",
        "hadm_id",
        "specimen_id",
        "itemid",
        "order_provider_id",
        "charttime",
        "storetime",
        "value",
        "valuenum",
        "valueuom",
        "ref_range_lower",
        "ref_range_upper",
        "flag",
        "priority",
        "comments",
    ),
    "hosp/d_labitems": ("itemid", "label", "fluid", "category"),
    "icu/icustays": (
        "subject_id",
        "hadm_id",
        "stay_id",
        "first_careunit",
        "last_careunit",
        "intime",
        "outtime",
        "los",
    ),
    "icu/chartevents": (
        "subject_id",
        "hadm_id",
        "stay_id",
        "caregiver_id",
        "charttime",
        "storetime",
        "itemid",
        "value",
        "valuenum",
        "valueuom",
        "warning",
    ),
    "icu/d_items": (
        "itemid",
        "label",
        "abbreviation",
        "linksto",
        "category",
        "unitname",
        "param_type",
        "lownormalvalue",
        "highnormalvalue",
    ),
    "note/radiology": _NOTE_COLUMNS,
    "note/discharge": _NOTE_COLUMNS,
}
_III_COLUMNS: dict[str, tuple[str, ...]] = {
    "PATIENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "GENDER",
        "DOB",
        "DOD",
        "DOD_HOSP",
        "DOD_SSN",
        "EXPIRE_FLAG",
    ),
    "ADMISSIONS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ADMITTIME",
        "DISCHTIME",
        "DEATHTIME",
        "ADMISSION_TYPE",
        "ADMISSION_LOCATION",
        "DISCHARGE_LOCATION",
        "INSURANCE",
        "LANGUAGE",
        "RELIGION",
        "MARITAL_STATUS",
        "ETHNICITY",
        "EDREGTIME",
        "EDOUTTIME",
        "DIAGNOSIS",
        "HOSPITAL_EXPIRE_FLAG",
        "HAS_CHARTEVENTS_DATA",
    ),
    "ICUSTAYS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "DBSOURCE",
        "FIRST_CAREUNIT",
        "LAST_CAREUNIT",
        "FIRST_WARDID",
        "LAST_WARDID",
        "INTIME",
        "OUTTIME",
        "LOS",
    ),
    "CHARTEVENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "ITEMID",
        "CHARTTIME",
        "STORETIME",
        "CGID",
        "VALUE",
        "VALUENUM",
        "VALUEUOM",
        "WARNING",
        "ERROR",
        "RESULTSTATUS",
        "STOPPED",
    ),
    "LABEVENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ITEMID",
        "CHARTTIME",
        "VALUE",
        "VALUENUM",
        "VALUEUOM",
        "FLAG",
    ),
    "NOTEEVENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "CHARTDATE",
        "CHARTTIME",
        "STORETIME",
        "CATEGORY",
        "DESCRIPTION",
        "CGID",
        "ISERROR",
        "TEXT",
    ),
    "DIAGNOSES_ICD": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    "D_ITEMS": (
        "ROW_ID",
        "ITEMID",
        "LABEL",
        "ABBREVIATION",
        "DBSOURCE",
        "LINKSTO",
        "CATEGORY",
        "UNITNAME",
        "PARAM_TYPE",
        "CONCEPTID",
    ),
    "D_LABITEMS": ("ROW_ID", "ITEMID", "LABEL", "FLUID", "CATEGORY", "LOINC_CODE"),
}
_DATE_ONLY = {"dod", "DOD", "DOD_HOSP", "DOD_SSN", "CHARTDATE"}


@dataclass
class _Stay:
    """One planned ICU stay and its events, in hours since intime."""

    subject: int
    hadm: int
    stay: int
    intime: pd.Timestamp
    los_hours: float
    carevue: bool = False  # MIMIC-III only: CareVue itemids instead of MetaVision ones
    chart: list[tuple[str, float, float, int]] = field(default_factory=list)  # item, h, v, error
    labs: list[tuple[str, float, float]] = field(default_factory=list)  # lab, h, value
    notes: list[tuple[float, str, str, int]] = field(
        default_factory=list
    )  # h, category, text, error


@dataclass
class _Admission:
    hadm: int
    died: bool
    stays: list[_Stay]


@dataclass
class _Patient:
    subject: int
    age: float  # at the first ICU stay
    gender: str
    admissions: list[_Admission]
    elderly: bool = False  # MIMIC-III: date of birth shifted by 300 years


def _h(t0: pd.Timestamp, hours: float) -> pd.Timestamp:
    return t0 + pd.Timedelta(seconds=round(hours * 3600.0))


def _planted_patients() -> list[_Patient]:
    """The subjects of :data:`MINI_PLANTED`, with every planted event of the ``index`` stay."""
    p = MINI_PLANTED

    def simple(role: str, day: float, gender: str = "M") -> _Patient:
        r = p[role]
        intime = _BASE + pd.Timedelta(days=day, hours=7, minutes=23)
        stay = _Stay(r["subject_id"], r["hadm_id"], r["stay_id"], intime, r["los_hours"])
        admission = _Admission(r["hadm_id"], bool(r["mortality"]), [stay])
        return _Patient(r["subject_id"], r["age"]["iv"], gender, [admission])

    idx = p["index"]
    index = simple("index", 0, "F")
    stay = index.admissions[0].stays[0]
    stay.carevue = True  # MIMIC-III: CareVue itemids (211, 678, 676); MIMIC-IV: MetaVision ones
    stay.chart += [("heart_rate", h, v, 0) for h, v in idx["heart_rate"]["kept"]]
    stay.chart += [("heart_rate", h, v, 0) for h, v in idx["heart_rate"]["dropped"]]
    stay.chart.append(("heart_rate", *idx["error_heart_rate"], 1))
    stay.chart += [("temp_f", h, v, 0) for h, v in idx["temp_f"]]
    stay.chart += [("temp_c", h, v, 0) for h, v in idx["temp_c"]]
    creatinine = idx["creatinine"]
    stay.labs += [("creatinine", h, v) for h, v in creatinine["kept"] + creatinine["dropped"]]
    stay.notes += [(h, "Nursing/other", text, 0) for h, text in idx["notes"]]
    stay.notes.append((idx["late_note"][0], "Nursing/other", idx["late_note"][1], 0))
    h_leak, leak = idx["leaky_note"]
    stay.notes.append((h_leak, "Discharge summary", leak, 0))
    stay.notes.append((h_leak + 1.0, "Nursing/other", leak, 1))

    two = simple("two_stays", 10)
    first = two.admissions[0].stays[0]
    second = first.intime + pd.Timedelta(days=3)
    two.admissions[0].stays.append(
        _Stay(two.subject, first.hadm, p["two_stays"]["second_stay_id"], second, 40.0)
    )
    elderly = simple("elderly", 40)
    elderly.elderly = True
    readmitted = simple("readmitted", 50, "F")
    r = p["readmitted"]
    again = readmitted.admissions[0].stays[0].intime + pd.Timedelta(days=60)
    stay2 = _Stay(r["subject_id"], r["second_hadm_id"], r["second_stay_id"], again, 30.0)
    readmitted.admissions.append(_Admission(r["second_hadm_id"], False, [stay2]))
    others = [simple("child", 20), simple("short", 25), simple("died", 30, "F")]
    return [index, two, *others, elderly, readmitted]


def _random_stay(rng: np.random.Generator, stay: _Stay) -> None:
    """Hourly vitals, 4-hourly temperature, 8-hourly labs and 0-3 nursing notes."""
    los = stay.los_hours
    level = {item: rng.normal(mu, sd / 2) for item, (mu, sd) in _MINI_VITALS.items()}
    for h in np.arange(0.5, los, 1.0):
        for item, (_, sd) in _MINI_VITALS.items():
            if rng.random() < 0.9:
                v = float(np.clip(level[item] + rng.normal(0, sd / 3), 1.0, _MINI_CAP[item]))
                stay.chart.append((item, float(h), round(v, 1), 0))
    fahrenheit = bool(rng.random() < 0.5)
    for h in np.arange(1.0, los, 4.0):
        c = float(np.clip(rng.normal(37.2, 0.6), 35.0, 40.5))
        v = c * 9.0 / 5.0 + 32.0 if fahrenheit else c
        stay.chart.append(("temp_f" if fahrenheit else "temp_c", float(h), round(v, 1), 0))
    for h in np.arange(float(rng.uniform(-5, 2)), los, 8.0):
        for lab, (_, _, _, mu, sd) in _MINI_LABS.items():
            stay.labs.append((lab, float(h), round(abs(float(rng.normal(mu, sd))), 2)))
    for _ in range(int(rng.integers(0, 4))):
        word = str(rng.choice(["stable", "febrile", "agitated", "weaning", "comfortable"]))
        h = float(rng.uniform(0, min(48.0, los)))
        stay.notes.append((h, "Nursing/other", f"Nursing progress: patient {word}.", 0))


def _random_patients(rng: np.random.Generator, n: int) -> list[_Patient]:
    patients = []
    for k in range(n):
        subject, hadm = 10000101 + k, 20000101 + k
        age = float(rng.integers(2, 17)) if rng.random() < 0.1 else float(rng.integers(18, 90))
        intime = (_BASE + pd.Timedelta(days=float(rng.uniform(60, 400)))).round("min")
        stays = []
        for j in range(2 if rng.random() < 0.15 else 1):
            los = float(rng.uniform(12.0, 96.0))
            stay = _Stay(subject, hadm, 30000101 + 2 * k + j, intime, los, rng.random() < 0.5)
            _random_stay(rng, stay)
            stays.append(stay)
            intime = intime + pd.Timedelta(hours=los + float(rng.uniform(5, 72)))
        admission = _Admission(hadm, bool(rng.random() < 0.15), stays)
        patients.append(_Patient(subject, age, str(rng.choice(["M", "F"])), [admission]))
    return patients


def _discharge(rng: np.random.Generator, admission: _Admission) -> pd.Timestamp:
    last = admission.stays[-1]
    after = 0.0 if admission.died else float(rng.uniform(6, 96))
    return _h(last.intime, last.los_hours + after)


def _rows_iv(patients: list[_Patient], rng: np.random.Generator) -> dict[str, list[dict]]:
    """Rows of every MIMIC-IV table (the MIMIC-IV release has no chart rows marked as errors)."""
    rows: dict[str, list[dict]] = {name: [] for name in _IV_COLUMNS}
    n_lab = n_note = 0
    for pat in patients:
        dod = None
        for adm in pat.admissions:
            admit = adm.stays[0].intime - pd.Timedelta(hours=float(rng.uniform(1, 24)))
            disch = _discharge(rng, adm)
            dod = disch.normalize() if adm.died else dod
            rows["hosp/admissions"].append(
                {
                    "subject_id": pat.subject,
                    "hadm_id": adm.hadm,
                    "admittime": admit,
                    "dischtime": disch,
                    "deathtime": disch if adm.died else None,
                    "admission_type": str(rng.choice(_ADMISSION_TYPES["iv"])),
                    "admit_provider_id": f"P{int(rng.integers(10000, 99999))}",
                    "admission_location": "EMERGENCY ROOM",
                    "discharge_location": "DIED" if adm.died else "HOME",
                    "insurance": "Other",
                    "language": "ENGLISH",
                    "marital_status": None,
                    "race": "UNKNOWN",
                    "edregtime": None,
                    "edouttime": None,
                    "hospital_expire_flag": int(adm.died),
                }
            )
            rows["hosp/diagnoses_icd"].append(
                {
                    "subject_id": pat.subject,
                    "hadm_id": adm.hadm,
                    "seq_num": 1,
                    "icd_code": "A419",
                    "icd_version": 10,
                }
            )
            for st in adm.stays:
                unit = str(rng.choice(_CAREUNITS["iv"]))
                rows["icu/icustays"].append(
                    {
                        "subject_id": pat.subject,
                        "hadm_id": adm.hadm,
                        "stay_id": st.stay,
                        "first_careunit": unit,
                        "last_careunit": unit,
                        "intime": st.intime,
                        "outtime": _h(st.intime, st.los_hours),
                        "los": st.los_hours / 24.0,
                    }
                )
                for item, h, v, _ in (c for c in st.chart if not c[3]):
                    rows["icu/chartevents"].append(
                        {
                            "subject_id": pat.subject,
                            "hadm_id": adm.hadm,
                            "stay_id": st.stay,
                            "caregiver_id": int(rng.integers(1000, 99999)),
                            "charttime": _h(st.intime, h),
                            "storetime": _h(st.intime, h + 0.1),
                            "itemid": _MINI_CHART[item][0],
                            "value": f"{v:g}",
                            "valuenum": v,
                            "valueuom": _MINI_CHART[item][2],
                            "warning": 0,
                        }
                    )
                for lab, h, v in st.labs:
                    n_lab += 1
                    itemid, _, unit, _, _ = _MINI_LABS[lab]
                    rows["hosp/labevents"].append(
                        {
                            "labevent_id": n_lab,
                            "subject_id": pat.subject,
                            "hadm_id": adm.hadm,
                            "specimen_id": 90000000 + n_lab,
                            "itemid": itemid,
                            "order_provider_id": None,
                            "charttime": _h(st.intime, h),
                            "storetime": _h(st.intime, h + 1.0),
                            "value": f"{v:g}",
                            "valuenum": v,
                            "valueuom": unit,
                            "ref_range_lower": None,
                            "ref_range_upper": None,
                            "flag": None,
                            "priority": "ROUTINE",
                            "comments": None,
                        }
                    )
                for h, category, text, _ in (n for n in st.notes if not n[3]):
                    n_note += 1
                    kind = "DS" if category == "Discharge summary" else "RR"
                    rows["note/discharge" if kind == "DS" else "note/radiology"].append(
                        {
                            "note_id": f"{pat.subject}-{kind}-{n_note}",
                            "subject_id": pat.subject,
                            "hadm_id": adm.hadm,
                            "note_type": kind,
                            "note_seq": n_note,
                            "charttime": _h(st.intime, h),
                            "storetime": _h(st.intime, h + 0.5),
                            "text": text,
                        }
                    )
        rows["hosp/patients"].append(
            {
                "subject_id": pat.subject,
                "gender": pat.gender,
                "anchor_age": 91 if pat.elderly else int(pat.age),
                "anchor_year": pat.admissions[0].stays[0].intime.year,
                "anchor_year_group": "2017 - 2019",
                "dod": dod,
            }
        )
    _dictionary_rows_iv(rows)
    return rows


def _rows_iii(patients: list[_Patient], rng: np.random.Generator) -> dict[str, list[dict]]:
    """Rows of every MIMIC-III table (ROW_ID numbered per table)."""
    rows: dict[str, list[dict]] = {name: [] for name in _III_COLUMNS}

    def add(table: str, **row: Any) -> None:
        rows[table].append({"ROW_ID": len(rows[table]) + 1, **row})

    for pat in patients:
        first_in = pat.admissions[0].stays[0].intime
        if pat.elderly:  # older than 89: date of birth moved 300 years back
            dob = (first_in - pd.DateOffset(years=300 + 89, days=200)).normalize()
        else:
            dob = (first_in - pd.DateOffset(years=int(pat.age))).normalize()
        dod = None
        for adm in pat.admissions:
            admit = adm.stays[0].intime - pd.Timedelta(hours=float(rng.uniform(1, 24)))
            disch = _discharge(rng, adm)
            dod = disch.normalize() if adm.died else dod
            add(
                "ADMISSIONS",
                SUBJECT_ID=pat.subject,
                HADM_ID=adm.hadm,
                ADMITTIME=admit,
                DISCHTIME=disch,
                DEATHTIME=disch if adm.died else None,
                ADMISSION_TYPE=str(rng.choice(_ADMISSION_TYPES["iii"])),
                ADMISSION_LOCATION="EMERGENCY ROOM ADMIT",
                DISCHARGE_LOCATION="DEAD/EXPIRED" if adm.died else "HOME",
                INSURANCE="Medicare",
                LANGUAGE="ENGL",
                RELIGION="NOT SPECIFIED",
                MARITAL_STATUS=None,
                ETHNICITY="UNKNOWN/NOT SPECIFIED",
                EDREGTIME=None,
                EDOUTTIME=None,
                DIAGNOSIS="SEPSIS",
                HOSPITAL_EXPIRE_FLAG=int(adm.died),
                HAS_CHARTEVENTS_DATA=1,
            )
            add(
                "DIAGNOSES_ICD",
                SUBJECT_ID=pat.subject,
                HADM_ID=adm.hadm,
                SEQ_NUM=1,
                ICD9_CODE="0389",
            )
            for st in adm.stays:
                unit = str(rng.choice(_CAREUNITS["iii"]))
                add(
                    "ICUSTAYS",
                    SUBJECT_ID=pat.subject,
                    HADM_ID=adm.hadm,
                    ICUSTAY_ID=st.stay,
                    DBSOURCE="carevue" if st.carevue else "metavision",
                    FIRST_CAREUNIT=unit,
                    LAST_CAREUNIT=unit,
                    FIRST_WARDID=int(rng.integers(1, 60)),
                    LAST_WARDID=int(rng.integers(1, 60)),
                    INTIME=st.intime,
                    OUTTIME=_h(st.intime, st.los_hours),
                    LOS=round(st.los_hours / 24.0, 4),
                )
                for item, h, v, error in st.chart:
                    metavision, carevue, uom = _MINI_CHART[item]
                    add(
                        "CHARTEVENTS",
                        SUBJECT_ID=pat.subject,
                        HADM_ID=adm.hadm,
                        ICUSTAY_ID=st.stay,
                        ITEMID=carevue if st.carevue else metavision,
                        CHARTTIME=_h(st.intime, h),
                        STORETIME=_h(st.intime, h + 0.1),
                        CGID=int(rng.integers(14000, 21000)),
                        VALUE=f"{v:g}",
                        VALUENUM=v,
                        VALUEUOM=uom,
                        WARNING=None if st.carevue else 0,
                        ERROR=error if error or not st.carevue else None,
                        RESULTSTATUS="Manual" if st.carevue else None,
                        STOPPED="NotStopd" if st.carevue else None,
                    )
                for lab, h, v in st.labs:
                    itemid, _, unit, _, _ = _MINI_LABS[lab]
                    add(
                        "LABEVENTS",
                        SUBJECT_ID=pat.subject,
                        HADM_ID=adm.hadm,
                        ITEMID=itemid,
                        CHARTTIME=_h(st.intime, h),
                        VALUE=f"{v:g}",
                        VALUENUM=v,
                        VALUEUOM=unit,
                        FLAG=None,
                    )
                for h, category, text, error in st.notes:
                    t = _h(st.intime, h)
                    add(
                        "NOTEEVENTS",
                        SUBJECT_ID=pat.subject,
                        HADM_ID=adm.hadm,
                        CHARTDATE=t.normalize(),
                        CHARTTIME=t,
                        STORETIME=_h(st.intime, h + 0.5),
                        CATEGORY=category,
                        DESCRIPTION="Report",
                        CGID=int(rng.integers(14000, 21000)),
                        ISERROR=1 if error else None,
                        TEXT=text,
                    )
        add(
            "PATIENTS",
            SUBJECT_ID=pat.subject,
            GENDER=pat.gender,
            DOB=dob,
            DOD=dod,
            DOD_HOSP=dod,
            DOD_SSN=None,
            EXPIRE_FLAG=int(dod is not None),
        )
    _dictionary_rows_iii(rows)
    return rows


def _dictionary_rows_iv(rows: dict[str, list[dict]]) -> None:
    labels = {i: label for _, _, i, versions, _, _, label in ITEMS if "iv" in versions}
    for itemid in sorted({mv for mv, _, _ in _MINI_CHART.values()}):
        rows["icu/d_items"].append(
            {
                "itemid": itemid,
                "label": labels[itemid],
                "abbreviation": labels[itemid],
                "linksto": "chartevents",
                "category": "Routine Vital Signs",
                "unitname": None,
                "param_type": "Numeric",
                "lownormalvalue": None,
                "highnormalvalue": None,
            }
        )
    for itemid, label, _, _, _ in _MINI_LABS.values():
        rows["hosp/d_labitems"].append(
            {"itemid": itemid, "label": label, "fluid": "Blood", "category": "Chemistry"}
        )


def _dictionary_rows_iii(rows: dict[str, list[dict]]) -> None:
    labels = {i: label for _, _, i, versions, _, _, label in ITEMS if "iii" in versions}
    items = sorted({i for mv, cv, _ in _MINI_CHART.values() for i in (mv, cv)})
    for k, itemid in enumerate(items, start=1):
        metavision = itemid > 200000
        rows["D_ITEMS"].append(
            {
                "ROW_ID": k,
                "ITEMID": itemid,
                "LABEL": labels[itemid],
                "ABBREVIATION": labels[itemid] if metavision else None,
                "DBSOURCE": "metavision" if metavision else "carevue",
                "LINKSTO": "chartevents",
                "CATEGORY": "Routine Vital Signs" if metavision else None,
                "UNITNAME": None,
                "PARAM_TYPE": "Numeric" if metavision else None,
                "CONCEPTID": None,
            }
        )
    for k, (itemid, label, _, _, _) in enumerate(_MINI_LABS.values(), start=1):
        rows["D_LABITEMS"].append(
            {
                "ROW_ID": k,
                "ITEMID": itemid,
                "LABEL": label,
                "FLUID": "Blood",
                "CATEGORY": "Chemistry",
                "LOINC_CODE": None,
            }
        )


def _cell(value: Any, fmt: str) -> Any:
    return value.strftime(fmt) if isinstance(value, pd.Timestamp) else value


def _write_table(rows: list[dict], columns: tuple[str, ...], path: Path) -> None:
    """Write one table: official column order, integers without '.0', times as text."""
    frame = pd.DataFrame(rows, columns=list(columns), dtype=object)
    for col in frame.columns:
        values = frame[col]
        if values.map(lambda v: isinstance(v, pd.Timestamp)).any():
            fmt = "%Y-%m-%d" if col in _DATE_ONLY else "%Y-%m-%d %H:%M:%S"
            frame[col] = values.map(lambda v, f=fmt: _cell(v, f))
        elif values.notna().any() and values.map(lambda v: v is None or isinstance(v, int)).all():
            frame[col] = values.astype("Int64")
    compression = "gzip" if path.name.endswith(".gz") else None
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, compression=compression)


_ROWS: dict[str, tuple[Callable[..., dict[str, list[dict]]], dict[str, tuple[str, ...]]]] = {
    "iv": (_rows_iv, _IV_COLUMNS),
    "iii": (_rows_iii, _III_COLUMNS),
}


def write_mimic_mini(
    root: str | Path,
    version: Version = "iv",
    n_patients: int = 20,
    seed: int = 0,
    compress: bool = False,
) -> Path:
    """Write a synthetic MIMIC-shaped mini database under ``root``; return ``root``.

    The files follow the official layout and column order of the version (MIMIC-IV:
    ``hosp/{patients,admissions,diagnoses_icd,labevents,d_labitems}``,
    ``icu/{icustays,chartevents,d_items}``, ``note/{radiology,discharge}``; MIMIC-III:
    ``PATIENTS``, ``ADMISSIONS``, ``ICUSTAYS``, ``CHARTEVENTS``, ``LABEVENTS``, ``NOTEEVENTS``,
    ``DIAGNOSES_ICD``, ``D_ITEMS``, ``D_LABITEMS``), as ``.csv`` or ``.csv.gz``
    (``compress``). The 7 planted subjects of :data:`MINI_PLANTED` come first (same ids in both
    versions), then ``n_patients - 7`` random ones (about 10% children, 15% with a second ICU
    stay in the admission, 15% in-hospital deaths, stays of 12-96 h; MIMIC-III stays are half
    CareVue, half MetaVision). Every value is synthetic. Files are written atomically.

    Example:
        >>> import tempfile
        >>> root = write_mimic_mini(tempfile.mkdtemp(), "iii", n_patients=7)
        >>> sorted(p.name for p in root.iterdir())[:3]
        ['ADMISSIONS.csv', 'CHARTEVENTS.csv', 'DIAGNOSES_ICD.csv']
    """
    _check_version(version)
    if n_patients < len(MINI_PLANTED):
        raise ConfigError(
            "the mini database needs at least its planted patients",
            expected=f">= {len(MINI_PLANTED)}",
            found=n_patients,
        )
    rng = np.random.default_rng(seed)
    patients = _planted_patients() + _random_patients(rng, n_patients - len(MINI_PLANTED))
    make_rows, columns = _ROWS[version]
    rows = make_rows(patients, rng)
    root = Path(root)
    suffix = ".csv.gz" if compress else ".csv"
    for name, cols in columns.items():
        _write_table(rows[name], cols, root / f"{name}{suffix}")
    return root
