r"""Any user table as an ehrprompt data set: read, type, reduce, guard, template.

:func:`load_user_table` turns a CSV, Parquet or ARFF file and a target column into an
:class:`~.data.EHRTable` plus generated prompt templates, in named steps, each logging its
decisions (``TableReport.decisions``, also written to the run directory):

1. **Read** (:func:`read_table`) with the configured encoding; a file that does not decode says
   which encoding to try.
2. **Target.** An unknown name fails with close matches; rows without a target are dropped and
   counted; a constant target fails. ``task="auto"``: two distinct values -> binary, a
   non-numeric target or an integer target with at most 10 levels -> multiclass, else regression.
   The positive class of a binary target is its greater label in sorted order (``1``, ``yes``,
   ``dead``); :data:`TableReport.classes` records it.
3. **One row per subject** (:func:`reduce_longitudinal`, when ``id`` is given): rows are sorted
   by ``time`` within a subject; ``baseline="first"`` keeps every feature's value at the first
   visit (a cell missing at that visit stays missing: nothing is read from later visits),
   ``"last"`` the last visit's. The target is the subject's last recorded value (the outcome at
   the end of follow-up). The ``time`` column itself is not a feature.
4. **Column kinds** (:func:`infer_kind`): identifier, empty, constant (dropped), binary, coded
   categorical, ordinal, numeric, date, text; a column mixing numbers and text fails unless
   ``on_bad_value="skip"`` (then its non-numbers become missing, counted).
5. **Leakage guard** (:func:`leakage_flags`): a column whose name is close to the target's or
   names a follow-up outcome ("death", "futime", "censor", ...), or that alone separates the
   target (AUROC >= 0.99 for a binary target, :math:`|\rho_{Spearman}| \ge 0.99` for a real one),
   is refused unless dropped (``drop=``) or allowed (``allow_leaky=``).
6. **Templates** (:func:`column_templates`): readable names from an optional YAML column
   dictionary, else from :data:`ABBREVIATIONS` (common clinical abbreviations with their usual
   units, a unit kept only when the column's median lies in its plausible range); coded
   categoricals read "category 2" (or their dictionary label), ordinals name their scale, binary
   columns read yes/no and are never split into deciles.

The split (stratified on the target, grouped by subject) is made by the learner
(:func:`stratified_split`).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from clinfuse.core.errors import ConfigError, DataError, require, suggest
from clinfuse.methods.ehrprompt.data import EHRTable
from clinfuse.methods.ehrprompt.prompts import (
    SUPPORT2_COLUMNS,
    ColumnSpec,
    Template,
    TemplateSet,
    read_columns_yaml,
)

__all__ = [
    "ABBREVIATIONS",
    "ColumnInfo",
    "TableReport",
    "column_templates",
    "infer_kind",
    "leakage_flags",
    "load_user_table",
    "read_dictionary",
    "read_table",
    "reduce_longitudinal",
    "stratified_split",
]

log = logging.getLogger(__name__)

InferredKind = Literal[
    "identifier",
    "empty",
    "constant",
    "binary",
    "categorical",
    "ordinal",
    "numeric",
    "date",
    "text",
]
TaskChoice = Literal["auto", "binary", "multiclass", "regression"]

# -- the built-in dictionary ---------------------------------------------------------------------
ABBREVIATIONS: dict[str, tuple[str, str | None, tuple[float, float] | None]] = {
    # token: (readable name, usual unit, plausible range of the column median for that unit)
    "bp": ("blood pressure", "mmHg", (40, 250)),
    "sbp": ("systolic blood pressure", "mmHg", (60, 250)),
    "sysbp": ("systolic blood pressure", "mmHg", (60, 250)),
    "dbp": ("diastolic blood pressure", "mmHg", (30, 150)),
    "diabp": ("diastolic blood pressure", "mmHg", (30, 150)),
    "map": ("mean arterial pressure", "mmHg", (40, 180)),
    "meanbp": ("mean arterial blood pressure", "mmHg", (40, 180)),
    "hr": ("heart rate", "bpm", (30, 200)),
    "heartrte": ("heart rate", "bpm", (30, 200)),
    "hrt": ("heart rate", "bpm", (30, 200)),
    "rr": ("respiratory rate", "breaths/min", (5, 60)),
    "resp": ("respiratory rate", "breaths/min", (5, 60)),
    "temp": ("body temperature", "°C", (30, 43)),
    "spo2": ("oxygen saturation", "%", (50, 100)),
    "bmi": ("body mass index", "kg/m²", (12, 60)),
    "wt": ("weight", "kg", (20, 250)),
    "wtkg": ("weight", "kg", (20, 250)),
    "ht": ("height", "cm", (100, 220)),
    "chol": ("cholesterol", "mg/dL", (80, 400)),
    "totchol": ("total cholesterol", "mg/dL", (80, 400)),
    "serchol": ("serum cholesterol", "mg/dL", (80, 1000)),
    "hdl": ("HDL cholesterol", "mg/dL", (15, 120)),
    "hdlc": ("HDL cholesterol", "mg/dL", (15, 120)),
    "ldl": ("LDL cholesterol", "mg/dL", (30, 300)),
    "ldlc": ("LDL cholesterol", "mg/dL", (30, 300)),
    "tg": ("triglycerides", "mg/dL", (30, 1000)),
    "glucose": ("blood glucose", "mg/dL", (40, 500)),
    "glu": ("blood glucose", "mg/dL", (40, 500)),
    "hba1c": ("HbA1c", "%", (3, 15)),
    "creatinine": ("serum creatinine", "mg/dL", (0.2, 15)),
    "crea": ("serum creatinine", "mg/dL", (0.2, 15)),
    "creat": ("serum creatinine", "mg/dL", (0.2, 15)),
    "bun": ("blood urea nitrogen", "mg/dL", (2, 150)),
    "wbc": ("white blood cell count", "x10^9/L", (0.5, 60)),
    "wblc": ("white blood cell count", "x10^9/L", (0.5, 60)),
    "hb": ("haemoglobin", "g/dL", (4, 20)),
    "hgb": ("haemoglobin", "g/dL", (4, 20)),
    "plt": ("platelet count", "x10^9/L", (10, 1000)),
    "platelets": ("platelet count", "x10^9/L", (10, 1000)),
    "sod": ("serum sodium", "mmol/L", (110, 170)),
    "na": ("serum sodium", "mmol/L", (110, 170)),
    "k": ("serum potassium", "mmol/L", (2, 8)),
    "alb": ("serum albumin", "g/dL", (1, 6)),
    "albumin": ("serum albumin", "g/dL", (1, 6)),
    "bili": ("serum bilirubin", "mg/dL", (0.1, 40)),
    "bilir": ("bilirubin", "mg/dL", (0.1, 40)),
    "alkaline": ("alkaline phosphatase", "U/L", (20, 10000)),
    "alp": ("alkaline phosphatase", "U/L", (20, 10000)),
    "sgot": ("aspartate aminotransferase (SGOT)", "U/L", (5, 2000)),
    "ast": ("aspartate aminotransferase", "U/L", (5, 2000)),
    "alt": ("alanine aminotransferase", "U/L", (5, 2000)),
    "prothrombin": ("prothrombin time", "s", (8, 40)),
    "inr": ("INR", None, None),
    "ph": ("arterial blood pH", None, None),
    "pafi": ("PaO2/FiO2 ratio", "mmHg", (30, 700)),
    "cd4": ("CD4 count", "cells/mm³", (1, 2000)),
    "cd40": ("CD4 count at baseline", "cells/mm³", (1, 2000)),
    "cd8": ("CD8 count", "cells/mm³", (1, 5000)),
    "cd80": ("CD8 count at baseline", "cells/mm³", (1, 5000)),
    "karnof": ("Karnofsky performance score", None, None),
    "gcs": ("Glasgow coma scale", None, None),
    "age": ("age", "years", (0, 110)),
    "cigpday": ("cigarettes per day", None, None),
    "cursmoke": ("current smoker", None, None),
    "bpmeds": ("on blood pressure medication", None, None),
    "educ": ("education level", None, None),
    "edu": ("years of education", "years", (0, 30)),
    "prevchd": ("prevalent coronary heart disease", None, None),
    "prevap": ("prevalent angina pectoris", None, None),
    "prevmi": ("prevalent myocardial infarction", None, None),
    "prevstrk": ("prevalent stroke", None, None),
    "prevhyp": ("prevalent hypertension", None, None),
    "mgus": ("monoclonal gammopathy (MGUS)", None, None),
    "ser": ("serum", None, None),
    "los": ("length of stay", "days", None),
    "dx": ("diagnosis", None, None),
    "hx": ("history", None, None),
    "ca": ("cancer", None, None),
    "chf": ("congestive heart failure", None, None),
    "copd": ("COPD", None, None),
    "ckd": ("chronic kidney disease", None, None),
    "mi": ("myocardial infarction", None, None),
    "af": ("atrial fibrillation", None, None),
    "dm": ("diabetes mellitus", None, None),
    "htn": ("hypertension", None, None),
    "icu": ("ICU", None, None),
    "yr": ("year", None, None),
    "grp": ("group", None, None),
    "flc": ("free light chain", None, None),
    "num": ("number", None, None),
    "serbilir": ("serum bilirubin", "mg/dL", (0.1, 40)),
    "histologic": ("histologic stage", None, None),
    "stage": ("stage", None, None),
    "kappa": ("serum free light chain kappa", "mg/dL", (0.01, 100)),
    "lambda": ("serum free light chain lambda", "mg/dL", (0.01, 100)),
}
"""Common clinical abbreviations: token -> (readable name, usual unit, plausible median range).
A column named by one token takes the entry; a longer name is read token by token."""

_CATEGORY_WORDS = frozenset(
    "sex gender race ethnicity ethnic marital arm arms treat treatment drug group grp type class "
    "site region strat stratum chapter centre center hospital ward insurance dzgroup dzclass "
    "smoking status".split()
)
"""Name tokens of columns whose integer codes are labels, not quantities (coded categoricals)."""
_OUTCOME_WORDS = frozenset(
    "death dead died deceased expired mortality mort surv survival futime fu followup censor "
    "cens censored event outcome discharge readmit readmission los dtime tte".split()
)
"""Name tokens that state or bound an outcome of follow-up (leakage guard)."""
_OUTCOME_NAMES = frozenset("status time days dtime futime slos stime survtime".split())
"""Whole (normalised) names that state an outcome or a follow-up time (leakage guard)."""
_ID_WORDS = frozenset("id sno no num index idx unnamed pid pidnum randid subject patient".split())
_MAX_CODES = 10
_ORDINAL_LEVELS = (3, 7)
_TRUE = frozenset({"1", "yes", "y", "true", "t"})
_FALSE = frozenset({"0", "no", "n", "false", "f"})
_NA_VALUES = ["?", "NA", "N/A", "na", "n/a", "NaN", "nan", "null", "NULL", "None", ""]
_SEPARATION = 0.99


@dataclass(frozen=True)
class ColumnInfo:
    """What the table reader decided about one column."""

    name: str
    kind: InferredKind
    """Inferred (or dictionary) kind; identifier / empty / constant columns are dropped."""
    label: str
    """Readable name used in the sentence."""
    unit: str | None = None
    codes: Mapping[Any, str] | None = None
    """Dictionary labels of a coded column (code -> label)."""
    levels: tuple[Any, ...] = ()
    """Sorted levels of a categorical / ordinal / binary column."""
    template: str | None = None
    """A template given by the dictionary (else generated)."""


@dataclass
class TableReport:
    """Decisions taken while reading a user table (written to the run directory)."""

    source: str
    target: str
    task: str
    rows_read: int = 0
    rows_dropped_missing_target: int = 0
    subjects: int | None = None
    reduction: str | None = None
    classes: tuple = ()
    columns: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    allowed_leaky: dict[str, str] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        log.info("%s", text)
        self.decisions.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "task": self.task,
            "rows_read": self.rows_read,
            "rows_dropped_missing_target": self.rows_dropped_missing_target,
            "subjects": self.subjects,
            "reduction": self.reduction,
            "classes": [c.item() if hasattr(c, "item") else c for c in self.classes],
            "columns": self.columns,
            "dropped": self.dropped,
            "allowed_leaky": self.allowed_leaky,
            "decisions": self.decisions,
        }


# -- 1. read ---------------------------------------------------------------------------------------
def _read_arff(path: Path, encoding: str) -> pd.DataFrame:
    arff = require("scipy.io.arff", "ehr")
    with open(path, encoding=encoding) as fh:
        records, _ = arff.loadarff(fh)
    frame = pd.DataFrame(records)
    for c in frame.columns:
        if frame[c].dtype == object:
            frame[c] = frame[c].map(lambda v: v.decode(encoding) if isinstance(v, bytes) else v)
            frame[c] = frame[c].replace({"?": None})
    return frame


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    return pd.read_csv(
        path, encoding=encoding, na_values=_NA_VALUES, keep_default_na=True, low_memory=False
    )


def _read_parquet(path: Path, encoding: str) -> pd.DataFrame:
    return pd.read_parquet(path)


_READERS = {".csv": _read_csv, ".tsv": _read_csv, ".parquet": _read_parquet, ".arff": _read_arff}


def read_table(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """The table in ``path`` (``.csv``, ``.parquet`` or ``.arff``); ``?``, ``NA``, empty -> missing.

    Raises:
        DataError: no such file, another format, a file that does not decode with ``encoding``
            (the message names the byte and suggests ``--set encoding=latin-1``), or a file the
            parser rejects.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"table not found: {path}",
            expected="a .csv, .parquet or .arff file",
            found="no such file",
            fix="check the path given to --data",
        )
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"{path}: unknown table format {path.suffix!r}",
            expected=", ".join(_READERS),
            found=path.suffix or "no suffix",
            fix="save the table as CSV (UTF-8) or Parquet",
        )
    try:
        frame = reader(path, encoding)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not valid {encoding} text",
            expected=f"a {encoding}-encoded file",
            found=f"byte {exc.object[exc.start : exc.start + 1]!r} at position {exc.start}",
            fix="re-save the file as UTF-8, or name its encoding: --set encoding=latin-1",
        ) from None
    except (ValueError, OSError, TypeError, KeyError, IndexError) as exc:
        raise DataError(
            f"cannot read {path}",
            expected=f"a well-formed {path.suffix} table with a header row",
            found=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            fix="check the file: it may be truncated, empty, or of another format",
        ) from None
    if frame.empty or frame.shape[1] < 2:
        raise DataError(
            f"{path} holds no usable table",
            expected="a header row, a target column and at least one feature column",
            found=f"{frame.shape[0]} rows x {frame.shape[1]} columns",
            fix="check the delimiter (comma) and the header row",
        )
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


# -- dictionary ------------------------------------------------------------------------------------
_DICT_KEYS = frozenset({"label", "unit", "kind", "codes", "template", "decimals"})
_DICT_KINDS = ("binary", "categorical", "ordinal", "numeric", "text", "date", "drop")


def read_dictionary(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """A YAML column dictionary ``columns: {name: {label, unit, kind, codes, template}}``.

    ``kind`` is one of ``binary, categorical, ordinal, numeric, text, date, drop``; ``codes``
    maps stored codes to labels (``{1: male, 2: female}``).

    Example:
        >>> read_dictionary(None)
        {}
    """
    if path is None:
        return {}
    cols = read_columns_yaml(
        path,
        what="column dictionary",
        missing_fix="check --set dictionary=PATH, or leave it out to use the built-in names",
        syntax_expected="columns: {name: {label: ..., unit: ..., codes: {1: male}}}",
        syntax_fix="fix the YAML syntax",
        entries="{name: {label: ..., unit: ..., kind: ..., codes: {...}}}",
    )
    out: dict[str, dict[str, Any]] = {}
    for name, entry in cols.items():
        entry = {"label": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or set(entry) - _DICT_KEYS:
            raise ConfigError(
                f"{path}: column {name!r}: unknown entry",
                expected=f"a label string or a mapping with keys {sorted(_DICT_KEYS)}",
                found=repr(entry)[:200],
                fix="fix the keys' spelling",
            )
        if entry.get("kind") is not None and entry["kind"] not in _DICT_KINDS:
            raise ConfigError(
                f"{path}: column {name!r}: unknown kind {entry['kind']!r}",
                expected=" | ".join(_DICT_KINDS),
                found=repr(entry["kind"]),
                fix="use one of the listed kinds",
            )
        if entry.get("codes") is not None and not isinstance(entry["codes"], dict):
            raise ConfigError(
                f"{path}: column {name!r}: codes must be a mapping",
                expected="codes: {1: male, 2: female}",
                found=repr(entry["codes"])[:200],
                fix="write the codes as a YAML mapping",
            )
        out[str(name)] = entry
    return out


# -- 2. target -------------------------------------------------------------------------------------
def _close(name: str, known: Sequence[str]) -> str:
    return suggest(name, known, f"columns: {list(known)[:30]}")


def _prepare_target(
    frame: pd.DataFrame, target: str | None, task: TaskChoice, report: TableReport
) -> tuple[pd.DataFrame, str]:
    cols = list(frame.columns)
    if not target:
        raise ConfigError(
            "a user table needs a target column",
            expected="--set target=COLUMN",
            found="target unset",
            fix=f"--set target=COLUMN with COLUMN one of {cols[:30]}",
        )
    if target not in cols:
        raise DataError(
            f"target column {target!r} is not in the table",
            expected="a column of the table",
            found=target,
            fix=_close(target, cols),
        )
    missing = frame[target].isna().to_numpy()
    if missing.all():
        raise DataError(
            f"target {target!r} is missing on every row",
            expected="a target value on some rows",
            found=f"{len(frame)} missing",
            fix="pick another target column",
        )
    if missing.any():
        report.rows_dropped_missing_target = int(missing.sum())
        log.warning("dropped %d row(s) with a missing %r", missing.sum(), target)
        report.note(f"dropped {int(missing.sum())} row(s) whose target {target!r} is missing")
        frame = frame.loc[~missing].reset_index(drop=True)
    y = frame[target]
    levels = pd.unique(y)
    if len(levels) < 2:
        raise DataError(
            f"target {target!r} is constant",
            expected="at least two distinct target values",
            found=f"every row is {levels[0]!r}",
            fix="pick another target column, or check the row filter",
        )
    numeric = pd.api.types.is_numeric_dtype(y)
    integer = numeric and bool(np.all(np.asarray(y, dtype=float) % 1 == 0))
    if task == "auto":
        if len(levels) == 2:
            task = "binary"
        elif not numeric or (integer and len(levels) <= _MAX_CODES):
            task = "multiclass"
        else:
            task = "regression"
        report.note(f"task inferred from {len(levels)} distinct target values: {task}")
    if task == "binary" and len(levels) != 2:
        raise DataError(
            f"target {target!r} is not binary",
            expected="exactly two distinct values for task=binary",
            found=f"{len(levels)} values, e.g. {list(levels[:5])}",
            fix="--set task=regression or task=multiclass, or recode the target",
        )
    if task == "regression" and not numeric:
        raise DataError(
            f"target {target!r} is not numeric",
            expected="numbers for task=regression",
            found=f"dtype {y.dtype}, e.g. {list(levels[:5])}",
            fix="--set task=binary or task=multiclass",
        )
    report.task = task
    return frame, target


# -- 3. longitudinal -------------------------------------------------------------------------------
def reduce_longitudinal(
    frame: pd.DataFrame,
    id_col: str,
    time_col: str | None,
    target: str,
    rule: Literal["first", "last"] = "first",
) -> pd.DataFrame:
    """One row per subject: features of the first (or last) visit, the target's last value.

    Rows are ordered by ``time_col`` within each subject (stable, so equal times keep the file
    order; without ``time_col`` the file order is the visit order). ``rule="first"`` takes every
    feature from the subject's first visit, missing cells included: no value is read from a later
    visit, so nothing measured after baseline reaches the model. The target is the subject's last
    non-missing value.

    Example:
        >>> f = pd.DataFrame({"pid": [2, 1, 1], "t": [0, 5, 0], "x": [7, 3, None],
        ...                   "y": [0, 1, 1]})
        >>> reduce_longitudinal(f, "pid", "t", "y").to_dict("list")
        {'pid': [1, 2], 'x': [nan, 7.0], 'y': [1, 0]}
    """
    order = frame.sort_values([id_col, time_col] if time_col else [id_col], kind="stable")
    grouped = order.groupby(id_col, sort=True, dropna=True)
    rows = grouped.head(1) if rule == "first" else grouped.tail(1)
    out = rows.set_index(id_col)
    out[target] = grouped[target].last()
    out = out.reset_index()
    if time_col:
        out = out.drop(columns=[time_col])
    return out.reset_index(drop=True)


# -- 4. kinds --------------------------------------------------------------------------------------
def _tokens(name: str) -> list[str]:
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    return [w for w in re.split(r"[^A-Za-z0-9]+", words.lower()) if w]


def _looks_like_date(values: pd.Series) -> bool:
    sample = values.astype(str).head(200)
    pattern = r"^\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2})?)?$|^\d{1,2}/\d{1,2}/\d{4}$"
    return bool(len(sample)) and bool(sample.str.match(pattern).mean() > 0.95)


def infer_kind(series: pd.Series, name: str | None = None) -> InferredKind:
    """The kind of a raw column, from its values and its name.

    * no value -> ``empty``; one value -> ``constant``;
    * integers unique on every row and named like an identifier (id, sno, pidnum, ...), or short
      strings unique on every row -> ``identifier``;
    * two values that read 0/1, yes/no, true/false -> ``binary``;
    * other integer codes with at most 10 levels, named like a category (sex, race, arm, group,
      ...) or with exactly two levels (sex coded 1/2) -> ``categorical`` (coded);
    * integers with 3 to 7 levels -> ``ordinal`` (a stage, a score);
    * other numbers -> ``numeric``; ISO or d/m/Y dates -> ``date``;
    * strings averaging over 40 characters or over 8 words -> ``text``, else ``categorical``.

    Example:
        >>> infer_kind(pd.Series([1, 2, 2, 1]), "SEX"), infer_kind(pd.Series([0, 1, 1]), "bpmeds")
        ('categorical', 'binary')
        >>> infer_kind(pd.Series([1, 2, 3, 4, 2]), "histologic")
        'ordinal'
    """
    name = str(series.name if name is None else name)
    values = series.dropna()
    if values.empty:
        return "empty"
    uniq = pd.unique(values)
    if len(uniq) == 1:
        return "constant"
    tokens = set(_tokens(name))
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    integer = numeric and bool(np.all(np.asarray(values, dtype=float) % 1 == 0))
    unique = len(uniq) == len(values) and len(values) >= 20
    if unique and integer and tokens & _ID_WORDS:
        return "identifier"
    if unique and not numeric and values.astype(str).str.len().mean() <= 40:
        return "identifier"  # a short label on every row: a name or a code, not a category
    if pd.api.types.is_bool_dtype(series):
        return "binary"
    words = {str(v).strip().lower().removesuffix(".0") for v in uniq}
    if len(uniq) == 2 and words <= (_TRUE | _FALSE) and not tokens & _CATEGORY_WORDS:
        return "binary"
    if integer:
        if len(uniq) <= _MAX_CODES and (tokens & _CATEGORY_WORDS or len(uniq) == 2):
            return "categorical"
        if _ORDINAL_LEVELS[0] <= len(uniq) <= _ORDINAL_LEVELS[1]:
            return "ordinal"
        return "numeric"
    if numeric:
        return "numeric"
    text = values.astype(str).str.strip()
    if _looks_like_date(text):
        return "date"
    if text.str.len().mean() > 40 or text.str.split().str.len().max() > 8:
        return "text"
    return "categorical"


def _mixed(series: pd.Series) -> tuple[float, list[Any]] | None:
    """(share that parses as numbers, examples that do not) of a text column mostly of numbers."""
    if pd.api.types.is_numeric_dtype(series):
        return None
    values = series.dropna().astype(str).str.strip()
    if values.empty:
        return None
    parsed = pd.to_numeric(values, errors="coerce")
    share = float(parsed.notna().mean())
    if 0.5 <= share < 1.0:
        return share, values[parsed.isna()].unique()[:5].tolist()
    return None


def _readable(name: str, entry: Mapping[str, Any]) -> tuple[str, str | None, tuple | None]:
    if entry.get("label"):
        return str(entry["label"]), entry.get("unit"), None
    if name in SUPPORT2_COLUMNS:
        return SUPPORT2_COLUMNS[name][0], SUPPORT2_COLUMNS[name][1], None
    key = "".join(_tokens(name))
    if name.lower() in ABBREVIATIONS:
        return ABBREVIATIONS[name.lower()]
    if key in ABBREVIATIONS:
        return ABBREVIATIONS[key]
    words = [ABBREVIATIONS[t][0] if t in ABBREVIATIONS else t for t in _tokens(name)]
    return " ".join(words) or name, None, None


def _with_unit(unit: str | None, plausible: tuple | None, series: pd.Series) -> str | None:
    """The dictionary unit when the column's median lies in its plausible range."""
    if unit is None or plausible is None:
        return unit
    med = float(pd.to_numeric(series, errors="coerce").median())
    return unit if plausible[0] <= med <= plausible[1] else None


def _describe_columns(
    frame: pd.DataFrame,
    skip: Sequence[str],
    dictionary: Mapping[str, Mapping[str, Any]],
    on_bad_value: str,
    report: TableReport,
) -> tuple[pd.DataFrame, list[ColumnInfo], list[ColumnInfo]]:
    """Typed columns (and constant-but-sometimes-missing columns, for the leakage guard only)."""
    infos: list[ColumnInfo] = []
    guard_only: list[ColumnInfo] = []
    frame = frame.copy()
    for name in frame.columns:
        if name in skip:
            continue
        entry = dictionary.get(name, {})
        col = frame[name]
        mixed = _mixed(col) if entry.get("kind") not in ("categorical", "text", "drop") else None
        if mixed is not None:
            share, bad = mixed
            if on_bad_value != "skip":
                raise DataError(
                    f"column {name!r} mixes numbers and text ({share:.0%} of its values are "
                    "numbers)",
                    expected="one type per column: numbers (missing as empty/NA) or labels",
                    found=f"non-numbers such as {bad}",
                    fix=f"clean column {name!r}, declare it (kind: categorical) in a column "
                    "dictionary, or --set on_bad_value=skip to read the non-numbers as missing",
                )
            n_bad = int(pd.to_numeric(col, errors="coerce").isna().sum() - col.isna().sum())
            report.note(
                f"column {name!r}: {n_bad} non-numeric value(s) such as {bad} read as "
                "missing (on_bad_value=skip)"
            )
            frame[name] = col = pd.to_numeric(col, errors="coerce")
        kind = entry.get("kind") or infer_kind(col, name)
        if kind in ("identifier", "empty", "constant", "drop"):
            why = {
                "identifier": "an identifier (unique on every row)",
                "empty": "missing on every row",
                "constant": "constant (one value on every recorded row)",
                "drop": "kind: drop in the column dictionary",
            }[kind]
            report.dropped[name] = why
            if kind == "constant" and col.isna().any():  # its missingness still carries signal
                guard_only.append(ColumnInfo(name, "constant", name))
            if kind == "empty":
                log.warning("column %r is missing on every row: dropped", name)
            report.note(f"column {name!r} dropped: {why}")
            continue
        if kind == "date":
            parsed = pd.to_datetime(col, errors="coerce")
            frame[name] = parsed.dt.year + (parsed.dt.dayofyear - 1) / 365.25
            report.note(f"column {name!r}: dates read as decimal years")
        label, unit, plausible = _readable(name, entry)
        unit = _with_unit(unit, plausible, frame[name]) if kind == "numeric" else unit
        levels: tuple = ()
        if kind in ("binary", "categorical", "ordinal"):
            levels = tuple(sorted(pd.unique(frame[name].dropna()), key=lambda v: (str(type(v)), v)))
        codes = entry.get("codes")
        if (
            not codes
            and set(_tokens(name)) & {"sex", "gender"}
            and {str(v).upper() for v in levels} <= {"F", "M"}
        ):
            codes = {"F": "female", "M": "male", "f": "female", "m": "male"}
        if codes:
            codes = {_code_key(k, frame[name]): str(v) for k, v in codes.items()}
        infos.append(ColumnInfo(name, kind, label, unit, codes, levels, entry.get("template")))
        report.columns[name] = kind
    return frame, infos, guard_only


def _code_key(key: Any, series: pd.Series) -> Any:
    """A dictionary code in the column's own type (YAML reads ``1`` as int, a CSV may hold 1.0)."""
    if pd.api.types.is_numeric_dtype(series):
        try:
            return float(key)
        except (TypeError, ValueError):
            return key
    return str(key)


# -- 5. leakage ------------------------------------------------------------------------------------
def _auc(score: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney AUROC of ``score`` for binary ``y`` (ties count one half)."""
    ranks = pd.Series(score).rank().to_numpy()
    pos = y == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _separation(series: pd.Series, kind: str, y: np.ndarray, task: str) -> float | None:
    """How well the column alone orders the target: max(AUROC, 1 - AUROC) for a binary target,
    Spearman :math:`|\\rho|` for a real one; over its values (among the recorded rows), its
    missingness, and the in-sample level means of a categorical column (<= 50 levels)."""
    if kind == "text" or task == "multiclass":
        return None
    x = series
    present = x.notna().to_numpy()
    candidates: list[tuple[np.ndarray, np.ndarray]] = []  # (score, rows)
    if not present.all():
        candidates.append((~present * 1.0, np.ones(len(x), dtype=bool)))
    if kind in ("numeric", "ordinal", "date", "constant"):
        values = pd.to_numeric(x, errors="coerce").to_numpy(dtype=float)
        candidates.append((values, present))
    elif x.nunique() <= 50 and present.sum() >= 5 * x.nunique():
        labels = x.astype(str).to_numpy()
        means = pd.Series(y, dtype=float).groupby(labels).mean()
        candidates.append((pd.Series(labels).map(means).to_numpy(dtype=float), present))
    best = 0.0
    for score, rows in candidates:
        yy, ss = y[rows], score[rows]
        if rows.sum() < 10 or len(np.unique(yy)) < 2 or len(np.unique(ss)) < 2:
            continue
        if task == "binary":
            a = _auc(ss, yy.astype(int))
            best = max(best, a, 1 - a)
        else:
            rho = np.corrcoef(pd.Series(ss).rank().to_numpy(), pd.Series(yy).rank().to_numpy())
            best = max(best, abs(float(rho[0, 1])))
    return best


def leakage_flags(
    frame: pd.DataFrame, infos: Sequence[ColumnInfo], target: str, y: np.ndarray, task: str
) -> dict[str, str]:
    r"""Columns that may be derived from the target, with the reason.

    Name: the normalised name contains (or is contained in) the target's, their
    :class:`difflib.SequenceMatcher` ratio is >= 0.75, or a name token is an outcome word
    (:data:`_OUTCOME_WORDS`), or the whole name is ``status``, ``time``, ``days``, ``futime``,
    ``slos``, .... Values: the column alone separates the target
    (binary: AUROC or 1 - AUROC >= 0.99 of the values, of their missingness, or of the in-sample
    level means of a categorical column; real: Spearman :math:`|\rho| \ge 0.99`).

    Example:
        >>> f = pd.DataFrame({"status": ["a", "b"] * 10, "age": range(20)})
        >>> y = np.array([0, 1] * 10)
        >>> infos = [ColumnInfo("status", "categorical", "status"),
        ...          ColumnInfo("age", "numeric", "age")]
        >>> sorted(leakage_flags(f, infos, "status2", y, "binary"))
        ['status']
    """
    norm = "".join(_tokens(target))
    flags: dict[str, str] = {}
    for info in infos:
        key = "".join(_tokens(info.name))
        toks = set(_tokens(info.name))
        ratio = difflib.SequenceMatcher(None, key, norm).ratio()
        if len(key) >= 3 and (key in norm or norm in key or ratio >= 0.75):
            flags[info.name] = f"name close to the target {target!r}"
        elif toks & _OUTCOME_WORDS or key in _OUTCOME_NAMES:
            flags[info.name] = "name states an outcome or follow-up time"
        else:
            sep = _separation(frame[info.name], info.kind, y, task)
            if sep is not None and sep >= _SEPARATION:
                flags[info.name] = f"alone it separates the target (score {sep:.3f} >= 0.99)"
    return flags


# -- 6. templates ----------------------------------------------------------------------------------
def _esc(s: str) -> str:
    return s.replace("{", "{{").replace("}", "}}")


def _fmt_level(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _template(info: ColumnInfo) -> Template:
    label = _esc(info.label)
    if info.kind == "binary":
        return Template(
            f"{_esc(info.label[:1].upper() + info.label[1:])}: {{value}}.",
            kind="binary",
            description=info.label,
        )
    if info.kind == "categorical":
        wording = "is" if info.codes or not _is_code(info.levels) else "is category"
        return Template(
            f"The {label} {wording} {{value}}.", kind="categorical", description=info.label
        )
    if info.kind == "ordinal":
        lo, hi = _fmt_level(info.levels[0]), _fmt_level(info.levels[-1])
        return Template(
            f"The {label} is {{value}} on a scale from {lo} to {hi}.",
            kind="numeric",
            description=info.label,
            decimals=0,
        )
    if info.kind == "date":
        return Template(
            f"The {label} is in {{value}}.", kind="numeric", description=info.label, decimals=1
        )
    if info.kind == "text":
        return Template(
            f"{_esc(info.label[:1].upper() + info.label[1:])}: {{value}}",
            kind="text",
            description=info.label,
        )
    return Template(
        f"The {label} is {{value}} {{unit}}.",
        kind="numeric",
        unit=info.unit,
        description=info.label,
    )


def _is_code(levels: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float | np.integer | np.floating) for v in levels)


def column_templates(infos: Sequence[ColumnInfo]) -> TemplateSet:
    """One readable template per kept column (a dictionary ``template`` wins).

    Example:
        >>> ts = column_templates([ColumnInfo("SEX", "categorical", "sex", levels=(1, 2)),
        ...                        ColumnInfo("BPMEDS", "binary", "on blood pressure medication"),
        ...                        ColumnInfo("SYSBP", "numeric", "systolic blood pressure",
        ...                                   "mmHg")])
        >>> [ts[c].template for c in ts]  # doctest: +NORMALIZE_WHITESPACE
        ['The sex is category {value}.', 'On blood pressure medication: {value}.',
         'The systolic blood pressure is {value} {unit}.']
    """
    out: dict[str, Template] = {}
    for info in infos:
        t = _template(info)
        if info.template:
            t = Template(
                info.template,
                kind=t.kind,
                unit=t.unit,
                description=t.description,
                decimals=t.decimals,
            )
        out[info.name] = t
    return TemplateSet(out)


_SPEC_KIND = {
    "binary": "binary",
    "categorical": "categorical",
    "ordinal": "numeric",
    "numeric": "numeric",
    "date": "numeric",
    "text": "text",
}


# -- the whole reader ------------------------------------------------------------------------------
def load_user_table(
    path: str | Path,
    *,
    target: str | None,
    task: TaskChoice = "auto",
    id_col: str | None = None,
    time_col: str | None = None,
    baseline: Literal["first", "last"] = "first",
    dictionary: str | Path | None = None,
    drop: Sequence[str] = (),
    allow_leaky: Sequence[str] = (),
    encoding: str = "utf-8",
    on_bad_value: str = "error",
) -> tuple[EHRTable, TemplateSet, TableReport]:
    """Read ``path`` into an :class:`EHRTable`, its generated templates and the decisions taken.

    Steps and rules: see the module docstring. Nothing is written; every failure a user can cause
    is a :class:`DataError` / :class:`ConfigError` saying what was expected, what was found and
    how to fix it.
    """
    frame = read_table(path, encoding)
    report = TableReport(source=str(path), target=str(target), task=task, rows_read=len(frame))
    words = read_dictionary(dictionary)
    named = {
        "id": id_col,
        "time": time_col,
        **{f"drop={c}": c for c in drop},
        **{f"allow_leaky={c}": c for c in allow_leaky},
    }
    for key, col in named.items():
        if col is not None and col not in frame.columns:
            raise ConfigError(
                f"{key.split('=')[0]} column {col!r} is not in the table",
                expected="a column of the table",
                found=col,
                fix=_close(col, list(frame.columns)),
            )
    if time_col and not id_col:
        raise ConfigError(
            "time= needs id=",
            expected="--set id=SUBJECT_COLUMN together with --set time=...",
            found=f"time={time_col!r}, id unset",
            fix="name the subject column with --set id=COLUMN",
        )
    if target in drop:
        raise ConfigError(
            f"the target {target!r} is also in drop=", found=list(drop), fix="remove it from drop"
        )
    frame, target = _prepare_target(frame, target, task, report)
    if id_col:
        n_rows = len(frame)
        frame = reduce_longitudinal(frame, id_col, time_col, target, baseline)
        report.subjects = len(frame)
        report.reduction = (
            f"{n_rows} rows -> {len(frame)} subjects ({id_col!r}): features from each subject's "
            f"{baseline} visit"
            + (f" ordered by {time_col!r}" if time_col else " in file order")
            + f", target {target!r} = the subject's last recorded value"
        )
        report.note(report.reduction)
        if time_col:
            report.dropped[time_col] = "the visit time (used to order the visits)"
    elif time_col is None and frame.duplicated().any():
        report.note(f"{int(frame.duplicated().sum())} duplicated row(s) kept")
    for c in drop:
        if c in frame.columns:
            report.dropped[c] = "drop= in the config"
    frame = frame.drop(columns=[c for c in drop if c in frame.columns])
    skip = [target] + ([id_col] if id_col else [])
    frame, infos, guard_only = _describe_columns(frame, skip, words, on_bad_value, report)
    if not infos:
        raise DataError(
            f"{path}: no feature column is left",
            expected="at least one usable feature column besides the target",
            found=f"dropped: {report.dropped}",
            fix="check the column dictionary and drop=",
        )
    y_raw = frame[target].to_numpy()
    classes: tuple = ()
    if report.task in ("binary", "multiclass"):
        classes = tuple(sorted(pd.unique(frame[target]), key=lambda v: (str(type(v)), v)))
        report.classes = classes
        positive = f" (positive: {classes[1]!r})" if report.task == "binary" else ""
        report.note(f"classes of {target!r}: {list(classes)}{positive}")
        y_code = np.searchsorted(np.array([str(c) for c in classes]), y_raw.astype(str))
        if report.task == "binary" and not all(isinstance(c, str) for c in classes):
            y_code = np.array([classes.index(v) for v in y_raw])
    else:
        y_code = y_raw.astype(float)
    flags = leakage_flags(frame, infos + guard_only, target, np.asarray(y_code), report.task)
    allowed = {c: flags.pop(c) for c in list(flags) if c in allow_leaky}
    report.allowed_leaky = allowed
    if flags:
        listing = "; ".join(f"{c}: {why}" for c, why in flags.items())
        raise DataError(
            f"possible target leakage in {len(flags)} column(s): {listing}",
            expected=f"features known before the outcome {target!r}",
            found=sorted(flags),
            fix=f"--set drop={','.join(flags)} (or, if a column is truly a baseline feature, "
            f"--set allow_leaky={','.join(flags)})",
        )
    for c, why in allowed.items():
        report.note(f"column {c!r} kept although flagged ({why}): allow_leaky")
    columns = [i.name for i in infos]
    features = frame[columns].copy()
    for info in infos:  # dictionary codes become their labels (for the prompts and the baselines)
        if info.codes:
            features[info.name] = features[info.name].map(
                lambda v, c=info.codes: c.get(v, c.get(_fmt_level(v), v)) if pd.notna(v) else v
            )
        if _SPEC_KIND[info.kind] == "numeric":
            features[info.name] = pd.to_numeric(features[info.name]).astype(float)
        elif info.kind == "categorical" and _is_code(info.levels) and not info.codes:
            features[info.name] = (
                features[info.name]
                .map(lambda v: _fmt_level(v) if pd.notna(v) else None)
                .astype(object)
            )
    specs = tuple(
        ColumnSpec(i.name, _SPEC_KIND[i.kind], i.unit, i.label)
        for i in infos  # type: ignore[arg-type]
    )
    name = Path(path).stem
    table_task = "regression" if report.task == "regression" else "classification"
    targets = {target: y_raw.astype(float) if table_task == "regression" else y_raw}
    rows = {"group": frame[id_col].to_numpy()} if id_col else {}
    table = EHRTable(
        name=name,
        frame=features.reset_index(drop=True),
        specs=specs,
        targets=targets,
        tasks={target: table_task},
        note_columns=tuple(i.name for i in infos if i.kind == "text"),
        classes={target: classes} if classes else {},
        meta={"source": str(path), "rows": rows, "table_report": report.as_dict()},
    )
    return table.validate(), column_templates(infos), report


# -- split -----------------------------------------------------------------------------------------
def stratified_split(
    y: np.ndarray | None,
    groups: np.ndarray | None,
    fraction: float,
    seed: int,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) row positions: ``fraction`` held out, stratified on ``y`` (class labels;
    None: not stratified), whole groups on one side when ``groups`` is given.

    Example:
        >>> y = np.array([0] * 80 + [1] * 20)
        >>> keep, out = stratified_split(y, None, 0.25, seed=0)
        >>> len(out), int(y[out].sum())
        (25, 5)
    """
    ms = require("sklearn.model_selection", "ehr")
    rows = np.arange(len(y) if y is not None else len(groups)) if rows is None else rows
    yy = None if y is None else np.asarray(y)[rows]
    if yy is not None and np.unique(yy, return_counts=True)[1].min() < 2:
        yy = None  # a class with one row cannot be stratified
    if groups is not None:
        g = np.asarray(groups)[rows]
        n_splits = max(2, int(round(1 / fraction)))
        splitter = (
            ms.StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
            if yy is not None
            else ms.GroupKFold(n_splits)
        )
        keep, out = next(splitter.split(rows, yy if yy is not None else g, g))
    else:
        keep, out = ms.train_test_split(
            np.arange(len(rows)), test_size=fraction, random_state=seed, stratify=yy
        )
    return np.sort(rows[keep]).astype(np.int64), np.sort(rows[out]).astype(np.int64)
