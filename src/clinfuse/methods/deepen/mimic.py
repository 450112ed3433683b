r"""MIMIC-IV cohort and 4-hourly MDP steps for DeepEN (arXiv 2510.08350), in DuckDB SQL.

:func:`build_mdp` reads the official MIMIC-IV v2/v3 tables (``hosp/patients``,
``hosp/admissions``, ``hosp/labevents``, ``icu/icustays``, ``icu/inputevents``,
``icu/chartevents``; each as ``.csv.gz``, ``.csv`` or ``.parquet``) and returns one row per
(ICU stay, decision bin). MIMIC-IV is credentialed and never shipped: tests run on the synthetic
database of :mod:`clinfuse.methods.deepen.mimic_demo`. The SQL lives in ``sql/0*.sql`` next to
this module (five stages, each a few ``CREATE TEMP TABLE`` statements with CTEs).

Cohort (in order, counts in ``info["cohort"]``): adults (``age >= min_age``), the first ICU stay
of each patient, stays of at least ``min_stay_hours``, a plausible body weight (the earliest
``inputevents.patientweight``, else chart item 226512 Admission Weight, else 224639 Daily
Weight), and at least one enteral feed inside the decision window.

Bins are aligned to ``icustays.intime``: bin ``b`` covers ``[intime + bH, intime + (b+1)H)``
with ``H = bin_hours``, for ``b < ceil(min(LOS, max_hours) / H)``.

Enteral nutrition (EN) comes from ``inputevents`` rows whose itemid is in the shipped product
table ``enteral_products.csv`` (see :func:`load_products`; rows with ``ordercategoryname =
'13-Enteral Nutrition'`` and an unknown itemid are counted in ``info["feeds"]``). An infusion of
:math:`A` mL over :math:`[s, e)` is pro-rated over the bins it overlaps,

.. math::

    v_b = A\,\frac{|[s, e) \cap [bH, (b+1)H)|}{e - s},\qquad
    \text{kcal}_b = \sum v_b\,\sigma\,\kappa,\quad
    \text{protein}_b = \sum v_b\,\sigma\,\frac{\pi}{1000},\quad
    \text{water}_b = \sum v_b\Big(\sigma\,\frac{\omega}{1000} + 1 - \sigma\Big),

with strength :math:`\sigma` (1/4 ... Full), kcal per mL :math:`\kappa`, protein g per L
:math:`\pi` and free water mL per L :math:`\omega` of the full-strength formula (a diluted feed
is formula plus water). A bolus (``endtime = starttime``) goes whole to the bin holding it;
rows with ``endtime < starttime``, a non-positive amount, an unexpected unit or status
``Rewritten`` are skipped and counted. Doses are divided by the stay's weight.

Columns of the returned steps (``info["columns"]`` holds the same descriptions):

=========================== ===========================================================
``stay_id subject_id hadm_id`` MIMIC identifiers; rows are sorted by (stay_id, bin)
``bin`` ``hours`` ``bin_start`` bin index from 0; its start in hours since intime; timestamp
``age male weight_kg``      static: age at the stay, 1.0 if male, stay weight (kg)
``en_ml``                   EN formula volume in the bin (mL, pro-rated; powders excluded)
``kcal_kg protein_g_kg water_ml_kg`` the action inputs: EN of this bin per kg
``prev_*`` ``cum_*``        feeding history: the previous bin's doses, sums of earlier bins
``hours_since_en_start``    hours from the first feed's start to this bin's start (>= 0)
``<feature>``               :data:`STATE_FEATURES`: vitals (bin mean), labs and GCS (last in
                            bin), SOFA-lite; forward-filled within the stay, then median
``d_<feature>``             trend :math:`x_t - x_{\max(t-L, 0)}`, ``L = trend_lag`` (3)
``next_<feature>``          reward inputs (:data:`REWARD_FEATURES`) at bin t+1; NaN at the last
``last_bin truncated``      episode end; the stay went on past ``max_hours`` (a timeout)
``los_hours``               ICU length of stay (hours)
``death`` ``death_hours``   outcome chosen by ``MimicConfig.outcome``; hours intime -> death
``death_in_hospital death_90d`` both outcomes, for ablations
=========================== ===========================================================

For :class:`clinfuse.rl.data.Trajectories`: ``done = last_bin & ~truncated`` and ``timeout =
last_bin & truncated``; the terminal reward reads ``death``, the intermediate reward reads the
``next_*`` columns. SOFA-lite scores 5 of the 6 SOFA organs: respiration is left out (the
builder extracts no PaO2/FiO2 or ventilation), cardiovascular is ``MAP < 70`` only (no
vasopressor doses) and renal is creatinine only (no urine output).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from clinfuse.core.errors import ConfigError, DataError, require
from clinfuse.core.tables import duckdb_reader, find_table_file

__all__ = [
    "FEATURE_ITEMS",
    "REWARD_FEATURES",
    "STATE_FEATURES",
    "TABLES",
    "MimicConfig",
    "build_mdp",
    "find_table",
    "load_products",
]

log = logging.getLogger(__name__)

Outcome = Literal["in_hospital", "90_day"]


@dataclass(frozen=True)
class MimicConfig:
    """Cohort and binning of the DeepEN MDP (defaults marked [inferred] are guesses)."""

    bin_hours: float = 4.0
    """Length of a decision step in hours (DeepEN: 4)."""
    max_hours: float = 7 * 24.0
    """Only the first ``max_hours`` of each stay become steps; longer stays are truncated."""
    min_stay_hours: float = 24.0
    """Stays shorter than this (ICU length of stay, hours) are excluded [inf]."""
    min_age: float = 18.0
    """Adults only: age at the stay >= ``min_age`` years."""
    first_stay_only: bool = True
    """Keep only each patient's first ICU stay."""
    require_enteral: bool = True
    """Keep only stays with enteral nutrition inside the decision window."""
    outcome: Outcome = "90_day"
    """Which death the ``death`` column reports: in-hospital or within 90 days of intime."""
    trend_lag: int = 3
    """Trend features are differences over this many previous bins (DeepEN: 3)."""
    min_weight_kg: float = 20.0
    """Body weights below this are treated as charting errors."""
    max_weight_kg: float = 300.0
    """Body weights above this are treated as charting errors."""
    exclude_rewritten: bool = True
    """Skip inputevents rows with ``statusdescription = 'Rewritten'`` (superseded orders)."""

    def __post_init__(self) -> None:
        checks = {
            "bin_hours": self.bin_hours > 0,
            "max_hours": self.max_hours >= self.bin_hours,
            "min_stay_hours": self.min_stay_hours >= 0,
            "trend_lag": self.trend_lag >= 1,
            "max_weight_kg": self.max_weight_kg > self.min_weight_kg >= 0,
            "outcome": self.outcome in _OUTCOME_COLUMN,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"invalid MimicConfig.{name}",
                    expected="bin_hours > 0, max_hours >= bin_hours, min_stay_hours >= 0, "
                    "trend_lag >= 1, 0 <= min_weight_kg < max_weight_kg, "
                    f"outcome in {sorted(_OUTCOME_COLUMN)}",
                    found=f"{name}={getattr(self, name)!r}",
                )


_OUTCOME_COLUMN: dict[str, str] = {"in_hospital": "death_in_hospital", "90_day": "death_90d"}

# (folder, columns used with their DuckDB types). Other columns may be present and are ignored.
TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "patients": (
        "hosp",
        {
            "subject_id": "BIGINT",
            "gender": "VARCHAR",
            "anchor_age": "DOUBLE",
            "anchor_year": "INTEGER",
            "dod": "DATE",
        },
    ),
    "admissions": (
        "hosp",
        {
            "subject_id": "BIGINT",
            "hadm_id": "BIGINT",
            "deathtime": "TIMESTAMP",
            "hospital_expire_flag": "INTEGER",
        },
    ),
    "labevents": (
        "hosp",
        {
            "subject_id": "BIGINT",
            "itemid": "BIGINT",
            "charttime": "TIMESTAMP",
            "valuenum": "DOUBLE",
        },
    ),
    "icustays": (
        "icu",
        {
            "subject_id": "BIGINT",
            "hadm_id": "BIGINT",
            "stay_id": "BIGINT",
            "intime": "TIMESTAMP",
            "outtime": "TIMESTAMP",
        },
    ),
    "inputevents": (
        "icu",
        {
            "stay_id": "BIGINT",
            "starttime": "TIMESTAMP",
            "endtime": "TIMESTAMP",
            "itemid": "BIGINT",
            "amount": "DOUBLE",
            "amountuom": "VARCHAR",
            "ordercategoryname": "VARCHAR",
            "patientweight": "DOUBLE",
            "statusdescription": "VARCHAR",
        },
    ),
    "chartevents": (
        "icu",
        {
            "stay_id": "BIGINT",
            "charttime": "TIMESTAMP",
            "itemid": "BIGINT",
            "valuenum": "DOUBLE",
        },
    ),
}

# feature, source, itemid, per-bin aggregate, shift, scale, plausible [lo, hi] after conversion
FEATURE_ITEMS: tuple[tuple[str, str, int, str, float, float, float, float], ...] = (
    ("hr", "chart", 220045, "mean", 0.0, 1.0, 0.0, 300.0),  # Heart Rate
    ("sbp", "chart", 220179, "mean", 0.0, 1.0, 0.0, 300.0),  # NIBP systolic
    ("sbp", "chart", 220050, "mean", 0.0, 1.0, 0.0, 300.0),  # Arterial BP systolic
    ("dbp", "chart", 220180, "mean", 0.0, 1.0, 0.0, 200.0),  # NIBP diastolic
    ("dbp", "chart", 220051, "mean", 0.0, 1.0, 0.0, 200.0),  # Arterial BP diastolic
    ("mbp", "chart", 220181, "mean", 0.0, 1.0, 0.0, 250.0),  # NIBP mean
    ("mbp", "chart", 220052, "mean", 0.0, 1.0, 0.0, 250.0),  # Arterial BP mean
    ("rr", "chart", 220210, "mean", 0.0, 1.0, 0.0, 80.0),  # Respiratory Rate
    ("spo2", "chart", 220277, "mean", 0.0, 1.0, 0.0, 100.0),  # O2 saturation pulseoxymetry
    ("temp_c", "chart", 223762, "mean", 0.0, 1.0, 25.0, 45.0),  # Temperature Celsius
    ("temp_c", "chart", 223761, "mean", -32.0, 5.0 / 9.0, 25.0, 45.0),  # Temperature Fahrenheit
    ("gcs_eye", "chart", 220739, "last", 0.0, 1.0, 1.0, 4.0),  # GCS - Eye Opening
    ("gcs_verbal", "chart", 223900, "last", 0.0, 1.0, 1.0, 5.0),  # GCS - Verbal Response
    ("gcs_motor", "chart", 223901, "last", 0.0, 1.0, 1.0, 6.0),  # GCS - Motor Response
    ("glucose", "lab", 50931, "last", 0.0, 1.0, 0.0, 2000.0),  # mg/dL
    ("sodium", "lab", 50983, "last", 0.0, 1.0, 90.0, 200.0),  # mEq/L
    ("potassium", "lab", 50971, "last", 0.0, 1.0, 0.5, 15.0),  # mEq/L
    ("chloride", "lab", 50902, "last", 0.0, 1.0, 50.0, 180.0),  # mEq/L
    ("bicarbonate", "lab", 50882, "last", 0.0, 1.0, 0.0, 60.0),  # mEq/L
    ("phosphate", "lab", 50970, "last", 0.0, 1.0, 0.0, 30.0),  # mg/dL
    ("magnesium", "lab", 50960, "last", 0.0, 1.0, 0.0, 20.0),  # mg/dL
    ("creatinine", "lab", 50912, "last", 0.0, 1.0, 0.0, 30.0),  # mg/dL
    ("bun", "lab", 51006, "last", 0.0, 1.0, 0.0, 300.0),  # Urea Nitrogen, mg/dL
    ("lactate", "lab", 50813, "last", 0.0, 1.0, 0.0, 40.0),  # mmol/L (blood gas)
    ("albumin", "lab", 50862, "last", 0.0, 1.0, 0.0, 10.0),  # g/dL
    ("bilirubin", "lab", 50885, "last", 0.0, 1.0, 0.0, 80.0),  # Bilirubin, Total, mg/dL
    ("platelets", "lab", 51265, "last", 0.0, 1.0, 0.0, 2000.0),  # K/uL
    ("wbc", "lab", 51301, "last", 0.0, 1.0, 0.0, 500.0),  # White Blood Cells, K/uL
    ("hemoglobin", "lab", 51222, "last", 0.0, 1.0, 0.0, 30.0),  # g/dL
    ("inr", "lab", 51237, "last", 0.0, 1.0, 0.0, 20.0),  # INR(PT)
)

STATE_FEATURES: tuple[str, ...] = (
    "hr", "sbp", "dbp", "mbp", "rr", "spo2", "temp_c", "gcs",
    "glucose", "sodium", "potassium", "chloride", "bicarbonate", "phosphate", "magnesium",
    "creatinine", "bun", "lactate", "albumin", "bilirubin", "platelets", "wbc", "hemoglobin",
    "inr", "sofa_lite",
)  # fmt: skip
"""Time-varying state features (each also has a ``d_`` trend column)."""

REWARD_FEATURES: tuple[str, ...] = ("sofa_lite", "lactate", "glucose", "phosphate", "sodium")
"""Features whose next-bin value is returned as ``next_<feature>`` (reward inputs)."""

_UOMS: dict[str, list[str]] = {"mL": ["ml"], "g": ["g", "gm", "gram", "grams"]}

_SQL_STAGES = ("01_stays.sql", "02_weights.sql", "03_feeds.sql", "04_features.sql")
_SQL_STEPS = "05_steps.sql"


def _columns_doc() -> dict[str, str]:
    """Description of every output column, in output order."""
    doc = {
        "stay_id": "icustays.stay_id",
        "subject_id": "patients.subject_id",
        "hadm_id": "admissions.hadm_id",
        "bin": "decision bin, 0 = the first bin_hours after intime",
        "hours": "bin start, hours since intime",
        "bin_start": "bin start timestamp",
        "age": "age at the ICU stay (years)",
        "male": "1.0 if gender is M",
        "weight_kg": "stay weight: first patientweight, else chart 226512, else 224639",
        "en_ml": "enteral formula volume in this bin (mL, pro-rated; powders excluded)",
        "kcal_kg": "EN energy in this bin (kcal/kg)",
        "protein_g_kg": "EN protein in this bin (g/kg)",
        "water_ml_kg": "EN free water in this bin (mL/kg)",
        "prev_kcal_kg": "kcal_kg of the previous bin (0 at bin 0)",
        "prev_protein_g_kg": "protein_g_kg of the previous bin",
        "prev_water_ml_kg": "water_ml_kg of the previous bin",
        "cum_kcal_kg": "sum of kcal_kg over earlier bins",
        "cum_protein_g_kg": "sum of protein_g_kg over earlier bins",
        "hours_since_en_start": "hours from the first feed's start to this bin's start (>= 0)",
    }
    for f in STATE_FEATURES:
        doc[f] = f"{f}: imputed bin value (sample-and-hold, then cohort median)"
    for f in STATE_FEATURES:
        doc[f"d_{f}"] = f"trend of {f}: value_t - value_max(t - trend_lag, 0)"
    for f in REWARD_FEATURES:
        doc[f"next_{f}"] = f"{f} at the next bin (NaN at the last bin)"
    doc.update(
        {
            "last_bin": "True at the last bin of the stay",
            "truncated": "True if the stay lasted longer than max_hours (episode is cut)",
            "los_hours": "ICU length of stay (hours)",
            "death": "outcome chosen by MimicConfig.outcome",
            "death_hours": "hours from intime to death (NaN if alive)",
            "death_in_hospital": "admissions.hospital_expire_flag = 1",
            "death_90d": "death (deathtime or dod) within 90 days of intime",
        }
    )
    return doc


def load_products() -> pd.DataFrame:
    """The shipped enteral product table ``enteral_products.csv``.

    One row per MIMIC-IV itemid: ``label``, ``product``, ``strength`` (fraction of full
    strength), ``kcal_per_ml``, ``protein_g_per_l``, ``water_ml_per_l`` (free water) of the
    FULL-strength formula, ``unit`` (``mL``; ``g`` for protein powder, whose values are then per g
    and per kg), ``certainty`` (``known``: manufacturer label values; ``uncertain``: recalled,
    verify before publishing) and a ``note``.

    Shape:
        ``(n_items, 10)``.
    """
    with resources.files(__package__).joinpath("enteral_products.csv").open("r") as f:
        return pd.read_csv(f)


def find_table(root: Path, name: str) -> Path:
    """Path of MIMIC-IV table ``name`` under ``root/hosp`` or ``root/icu`` (csv.gz, csv, parquet).

    Raises:
        DataError: no file of that name (the message lists what the folder holds).
    """
    folder = Path(root) / TABLES[name][0]
    path = find_table_file(folder, [name])
    if path is not None:
        return path
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
    raise DataError(
        f"MIMIC-IV table {TABLES[name][0]}/{name} not found under {root}",
        expected=f"{folder}/{name}.csv.gz, .csv or .parquet",
        found=found,
        fix="point mimic_root at the MIMIC-IV folder that holds hosp/ and icu/",
    )


def _register_tables(con: Any, root: Path) -> dict[str, str]:
    """Create one typed view per MIMIC-IV table, after checking the columns it needs."""
    duckdb = require("duckdb", "mimic")
    paths: dict[str, str] = {}
    for name, (_, columns) in TABLES.items():
        path = find_table(root, name)
        source = duckdb_reader(path)
        try:
            present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        except duckdb.Error as exc:
            raise DataError(
                f"cannot read MIMIC-IV table {path}",
                expected="a CSV (optionally gzipped) with a header row, or a Parquet file",
                found=str(exc).splitlines()[0],
            ) from exc
        missing = [c for c in columns if c not in present]
        if missing:
            raise DataError(
                f"MIMIC-IV table {path} lacks column(s) {', '.join(missing)}",
                expected=sorted(columns),
                found=sorted(present),
                fix="use the official MIMIC-IV v2/v3 files (column names are lower case)",
            )
        select = ", ".join(f'CAST("{c}" AS {t}) AS {c}' for c, t in columns.items())
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {select} FROM {source}")
        paths[name] = str(path)
    return paths


def _sql(name: str) -> str:
    return resources.files(__package__).joinpath("sql", name).read_text()


def _set_variables(con: Any, config: MimicConfig) -> None:
    typed = {
        "bin_hours": ("DOUBLE", config.bin_hours),
        "max_hours": ("DOUBLE", config.max_hours),
        "min_stay_hours": ("DOUBLE", config.min_stay_hours),
        "min_age": ("DOUBLE", config.min_age),
        "min_weight_kg": ("DOUBLE", config.min_weight_kg),
        "max_weight_kg": ("DOUBLE", config.max_weight_kg),
        "trend_lag": ("BIGINT", config.trend_lag),
        "first_stay_only": ("BOOLEAN", config.first_stay_only),
        "require_enteral": ("BOOLEAN", config.require_enteral),
        "exclude_rewritten": ("BOOLEAN", config.exclude_rewritten),
    }
    for name, (sql_type, value) in typed.items():
        con.execute(f"SET VARIABLE {name} = CAST(? AS {sql_type})", [value])


def _register_lookups(con: Any) -> None:
    products = load_products()
    products["accepted_uoms"] = products["unit"].map(_UOMS)
    items = pd.DataFrame(
        FEATURE_ITEMS, columns=["feature", "source", "itemid", "agg", "shift", "scale", "lo", "hi"]
    )
    for name, frame in {"products": products, "feature_items": items}.items():
        con.register(f"{name}_df", frame)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_df")
        con.unregister(f"{name}_df")


def _scalar(con: Any, sql: str) -> Any:
    return con.execute(sql).fetchone()[0]


def _info(con: Any, config: MimicConfig, paths: dict[str, str]) -> dict[str, Any]:
    """Cohort flow, skipped feeds, medians and missingness, read from the stage tables."""
    cohort = {
        "icu_stays": _scalar(con, "SELECT count(*) FROM stays"),
        "adult": _scalar(con, "SELECT count(*) FROM stays WHERE age >= getvariable('min_age')"),
        "eligible_first_stay_min_length": _scalar(con, "SELECT count(*) FROM eligible"),
        "with_weight": _scalar(con, "SELECT count(*) FROM candidates"),
        "enteral_fed": _scalar(con, "SELECT count(*) FROM cohort"),
    }
    status = dict(con.execute("SELECT status, count(*) FROM feed_rows GROUP BY 1").fetchall())
    feeds = {
        "rows": sum(status.values()),
        "used": status.get("ok", 0),
        **{f"skipped_{k}": v for k, v in sorted(status.items()) if k != "ok"},
        "unmapped_itemids": [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT itemid FROM feed_rows WHERE status = 'unmapped_item' ORDER BY 1"
            ).fetchall()
        ],
    }
    medians = dict(con.execute("SELECT feature, median FROM medians ORDER BY 1").fetchall())
    observed = dict(
        con.execute(
            "SELECT m.feature, count(o.value) / (SELECT count(*) FROM grid) "
            "FROM medians AS m LEFT JOIN obs AS o ON o.feature = m.feature GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )
    return {
        "cohort": cohort,
        "n_stays": cohort["enteral_fed"],
        "n_steps": _scalar(con, "SELECT count(*) FROM grid"),
        "feeds": feeds,
        "feature_medians": medians,
        "observed_fraction": observed,
        "never_observed": sorted(f for f, m in medians.items() if m is None),
        "columns": _columns_doc(),
        "tables": paths,
        "config": asdict(config),
    }


def _tidy(raw: pd.DataFrame, config: MimicConfig) -> pd.DataFrame:
    """Rename the pivoted columns (``hr_v`` -> ``hr``, ``hr_d`` -> ``d_hr``, ``hr_n`` ->
    ``next_hr``), add ``death`` and put the columns in documented order."""
    renames = {}
    for f in STATE_FEATURES:
        renames.update({f"{f}_v": f, f"{f}_d": f"d_{f}", f"{f}_n": f"next_{f}"})
    steps = raw.rename(columns=renames)
    steps["death"] = steps[_OUTCOME_COLUMN[config.outcome]]
    order = list(_columns_doc())
    for col in order:
        if col not in steps:  # a feature never observed anywhere: keep the column, all NaN
            steps[col] = float("nan")
    return steps[order].reset_index(drop=True)


def build_mdp(
    mimic_root: str | Path, config: MimicConfig | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Build the DeepEN cohort and its 4-hourly steps from a MIMIC-IV folder.

    The SQL stages run in an in-memory DuckDB database over the files under ``mimic_root/hosp``
    and ``mimic_root/icu`` (CSV, gzipped CSV or Parquet; Parquet is much faster on the full
    data). See the module docstring for the cohort, pro-rating and the columns.

    Shape:
        steps: ``(n_steps, n_columns)``, one row per (stay_id, bin), sorted; ``info`` holds the
        cohort flow (``cohort``), feed counts (``feeds``: used, ``skipped_end_before_start``,
        ...), ``feature_medians``, ``observed_fraction``, ``columns`` (descriptions), ``config``.

    Raises:
        DataError: a table file or a needed column is missing, a file cannot be parsed, or no
            stay passes the cohort criteria.
    """
    config = config or MimicConfig()
    duckdb = require("duckdb", "mimic")
    root = Path(mimic_root)
    t0 = time.perf_counter()
    con = duckdb.connect()
    try:
        paths = _register_tables(con, root)
        _set_variables(con, config)
        _register_lookups(con)
        try:
            for stage in _SQL_STAGES:
                con.execute(_sql(stage))
                log.debug("stage %s done (%.2f s)", stage, time.perf_counter() - t0)
            info = _info(con, config, paths)
            if info["n_stays"] == 0:
                raise DataError(
                    "no ICU stay passes the DeepEN cohort criteria",
                    expected="at least one adult first ICU stay with weight and enteral feeds",
                    found=info["cohort"],
                    fix="check the tables (inputevents itemids, ages) or relax MimicConfig",
                )
            raw = con.execute(_sql(_SQL_STEPS)).df()
        except duckdb.Error as exc:
            raise DataError(
                "DuckDB could not process the MIMIC-IV tables",
                expected="values parseable as the types in mimic.TABLES",
                found=str(exc).splitlines()[0],
            ) from exc
    finally:
        con.close()
    skipped = info["feeds"].get("skipped_end_before_start", 0)
    if skipped:
        log.warning("skipped %d enteral feed row(s) with endtime < starttime", skipped)
    if info["never_observed"]:
        log.warning("features never observed in the cohort (left NaN): %s", info["never_observed"])
    log.info(
        "DeepEN MDP: %d stays, %d steps, %d feed rows used (%.1f s)",
        info["n_stays"],
        info["n_steps"],
        info["feeds"]["used"],
        time.perf_counter() - t0,
    )
    return _tidy(raw, config), info
