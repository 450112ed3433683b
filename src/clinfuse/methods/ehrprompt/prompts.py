r"""Medical prompt templates: every EHR cell becomes one sentence (arXiv 2508.20460).

A column ``j`` carries a template :math:`t_j`, a sentence with a ``{value}`` slot (and optionally
``{unit}``, ``{description}``, ``{name}``). Rendering maps the table :math:`X \in \mathcal{V}^{n
\times m}` to a matrix of sentences :math:`S_{ij} = t_j(x_{ij})`, which a frozen sentence encoder
then embeds cell by cell (:mod:`clinfuse.methods.ehrprompt.encoders`).

* :class:`ColumnSpec` - what the data layer knows about a raw column (kind, unit, description);
* :class:`Template` / :class:`TemplateSet` - per-column sentences, read from / written to YAML::

      columns:
        hrt: {template: "The heart rate is {value} {unit}.", unit: bpm, kind: numeric, decimals: 0}

* :func:`auto_templates` - templates generated from column names and dtypes for a table without
  hand-written ones (readable names for the SUPPORT2 columns are built in);
* :func:`render` - the sentence matrix, in three modes (the paper's prompt ablations):
  ``prompt`` ("The heart rate is 72 bpm."), ``name_value`` ("heart rate: 72 bpm"), ``value``
  ("72"); numbers may be replaced by their training-set decile (``numeric="decile"``);
* :func:`scrub_note` - the leakage guard for free-text cells: sentences that state the outcome
  (death, discharge, length of stay, post-operative day counts) are removed.

Values that contradict a column's kind (text in a numeric column, a third value in a binary
column) raise :class:`~clinfuse.core.errors.DataError` naming the column and the row, or, with
``on_bad_value="skip"``, are logged and rendered as missing: a bad cell never reaches the encoder
as ``"nan"``.

Example:
    >>> import pandas as pd
    >>> ts = TemplateSet({"hrt": Template("The heart rate is {value} {unit}.", unit="bpm",
    ...                                   decimals=0, description="heart rate")})
    >>> render(pd.DataFrame({"hrt": [72.00000001, None]}), ts)[:, 0].tolist()
    ['The heart rate is 72 bpm.', 'Heart rate is not recorded.']
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import re
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from clinfuse.core.errors import ConfigError, DataError, require
from clinfuse.core.runs import atomic_write_text

__all__ = [
    "DEFAULT_OUTCOME_PATTERNS",
    "SUPPORT2_COLUMNS",
    "SUPPORT2_EXCLUDED",
    "ColumnSpec",
    "Template",
    "TemplateSet",
    "auto_templates",
    "decile_of",
    "fit_deciles",
    "format_number",
    "readable_name",
    "render",
    "scrub_note",
    "split_sentences",
    "support2_templates",
]

logger = logging.getLogger(__name__)

Kind = Literal["numeric", "categorical", "binary", "text"]
Mode = Literal["prompt", "name_value", "value"]
NumericMode = Literal["value", "decile"]
OnMissingColumn = Literal["raise", "skip"]
OnBadValue = Literal["raise", "skip"]
OnEmptyNote = Literal["missing", "raise"]

KINDS: tuple[str, ...] = get_args(Kind)
MODES: tuple[str, ...] = get_args(Mode)

DEFAULT_MISSING = "{description} is not recorded."
"""Missing-value sentence of a template that sets none."""
DEFAULT_DECILE_TEMPLATE = "The {description} is in the {value}."
"""Sentence of a numeric cell in ``numeric="decile"`` mode when the template sets none."""
MAX_LEVELS_AS_VALUES = 10
"""A numeric column with at most this many distinct training values keeps its values in
``numeric="decile"`` mode."""
NOT_RECORDED = "not recorded"
"""Missing value in the ``name_value`` and ``value`` modes."""
NO_NOTE = "No clinical note."
"""Sentence of an empty (or fully scrubbed) clinical note."""

_PLACEHOLDERS = frozenset({"value", "unit", "description", "name"})
_SENTINEL = "\x00"


@dataclass(frozen=True)
class ColumnSpec:
    """What the data layer declares about one raw column of the EHR table."""

    name: str
    """Column name in the DataFrame."""
    kind: Kind
    """``numeric`` (a number), ``categorical`` (a level), ``binary`` (yes/no), ``text`` (a note)."""
    unit: str | None = None
    """Unit of a numeric column ("mmol/L"), or None."""
    description: str | None = None
    """Readable name ("serum sodium"); None derives it from the column name."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"column {self.name!r}: unknown kind {self.kind!r}",
                expected=" | ".join(KINDS),
                found=repr(self.kind),
                fix="declare the column with one of the known kinds",
            )


@dataclass(frozen=True)
class Template:
    """How one column's cells become sentences."""

    template: str
    """Sentence with a ``{value}`` slot; may also use ``{unit}``, ``{description}``, ``{name}``."""
    kind: Kind = "numeric"
    """How raw cells are parsed and checked (numbers, levels, yes/no, free text)."""
    unit: str | None = None
    """Unit filled into ``{unit}`` and appended in ``name_value`` mode; None leaves it empty."""
    missing: str = DEFAULT_MISSING
    """Sentence for a missing cell (NaN, None, empty string); may use ``{description}``."""
    description: str | None = None
    """Readable column name; None -> :func:`readable_name` of the column (set by TemplateSet)."""
    decimals: int | None = None
    """Digits after the point for numbers; None -> integers bare, others to 2 places, trimmed."""
    decile_template: str | None = None
    """Sentence in ``numeric="decile"`` mode ({value} = "3rd decile (low)"); None -> default."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"unknown template kind {self.kind!r}",
                expected=" | ".join(KINDS),
                found=repr(self.kind),
                fix="set kind to one of the known kinds",
            )
        _check_format(self.template, "template", need_value=True)
        _check_format(self.missing, "missing sentence", need_value=False)
        if self.decile_template is not None:
            _check_format(self.decile_template, "decile template", need_value=True)
        if self.decimals is not None and (
            isinstance(self.decimals, bool)
            or not isinstance(self.decimals, int)
            or not 0 <= self.decimals <= 10
        ):
            raise ConfigError(
                "decimals must be an integer in [0, 10] or None",
                expected="0..10 or null",
                found=repr(self.decimals),
                fix="set decimals to the digits wanted after the decimal point",
            )


def _check_format(text: object, what: str, *, need_value: bool) -> None:
    if not isinstance(text, str):
        raise ConfigError(
            f"the {what} must be a string", expected="str", found=repr(text), fix="quote it"
        )
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(
            f"the {what} {text!r} is not a valid format string",
            expected="single braces around a placeholder, '{{' for a literal brace",
            found=str(exc),
            fix="balance the braces",
        ) from exc
    names = {f for _, f, spec, conv in parsed if f is not None}
    bad = sorted(names - _PLACEHOLDERS)
    if bad or any((spec or conv) for _, f, spec, conv in parsed if f is not None):
        raise ConfigError(
            f"the {what} {text!r} uses unknown placeholders or format specs",
            expected="only {" + "}, {".join(sorted(_PLACEHOLDERS)) + "} without specs",
            found=", ".join(repr(b) for b in bad) or "a format spec or conversion",
            fix="use decimals= for number formatting; '{{' for a literal brace",
        )
    if need_value and "value" not in names:
        raise ConfigError(
            f"the {what} {text!r} has no {{value}} slot",
            expected="a sentence containing {value}",
            found=repr(text),
            fix='write e.g. "The heart rate is {value} {unit}."',
        )
    if not need_value and "value" in names:
        raise ConfigError(
            f"the {what} {text!r} uses {{value}}, but a missing cell has no value",
            expected="{description}, {name} or {unit} only",
            found=repr(text),
            fix='write e.g. "{description} is not recorded."',
        )


_YAML_KEYS = tuple(f.name for f in fields(Template))


class TemplateSet(Mapping[str, Template]):
    """An ordered, immutable mapping column name -> :class:`Template`.

    Templates without a ``description`` get :func:`readable_name` of their column.

    Example:
        >>> sod = Template("The serum sodium is {value} {unit}.", unit="mmol/L")
        >>> ts = TemplateSet({"sod": sod})
        >>> ts["sod"].description, ts.names
        ('serum sodium', ('sod',))
    """

    def __init__(self, templates: Mapping[str, Template]) -> None:
        items: dict[str, Template] = {}
        for name, t in templates.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(
                    "template column names must be non-empty strings",
                    expected="str",
                    found=repr(name),
                    fix="key each template by its DataFrame column name",
                )
            if not isinstance(t, Template):
                raise ConfigError(
                    f"column {name!r}: not a Template",
                    expected="Template",
                    found=type(t).__name__,
                    fix="wrap the sentence in Template(...)",
                )
            items[name] = t if t.description else replace(t, description=readable_name(name))
        self._items = items

    def __getitem__(self, name: str) -> Template:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"TemplateSet({list(self._items)})"

    @property
    def names(self) -> tuple[str, ...]:
        """Column names, in template order (the column order of :func:`render`'s output)."""
        return tuple(self._items)

    def select(
        self, columns: Sequence[str], on_missing_column: OnMissingColumn = "raise"
    ) -> TemplateSet:
        """The templates whose column is in ``columns``.

        A template naming an absent column raises :class:`DataError` (``on_missing_column=
        "raise"``) or is logged and left out (``"skip"``).
        """
        present = set(columns)
        absent = [n for n in self._items if n not in present]
        if absent and on_missing_column == "raise":
            raise DataError(
                f"templates reference columns that are not in the table: {absent}",
                expected="every templated column present",
                found=f"table columns: {sorted(map(str, present))[:40]}",
                fix="drop those templates, rename the columns, or pass on_missing_column='skip'",
            )
        if absent:
            logger.warning("skipping templates of absent columns: %s", absent)
        return TemplateSet({n: t for n, t in self._items.items() if n in present})

    @classmethod
    def from_yaml(cls, path: str | Path) -> TemplateSet:
        """Read ``columns: {name: {template, kind, unit, decimals, description, missing}}``.

        A column may also map straight to its template string. Unknown keys, a template without
        ``{value}`` and malformed YAML raise :class:`ConfigError` naming the file and column.
        """
        columns = read_columns_yaml(
            path,
            what="template file",
            missing_fix="check the path, or build templates with auto_templates(frame, specs)",
            syntax_expected="YAML (quote templates that start with '{')",
            syntax_fix='write template: "{value} ..." with quotes',
            entries="{name: {template: ..., unit: ..., kind: ...}}",
        )
        out: dict[str, Template] = {}
        for name, entry in columns.items():
            entry = {"template": entry} if isinstance(entry, str) else entry
            where = f"{path}: column {name!r}"
            if not isinstance(entry, dict) or "template" not in entry:
                raise ConfigError(
                    f"{where}: no template",
                    expected="a mapping with a 'template' key, or a template string",
                    found=repr(entry),
                    fix='write template: "The ... is {value} {unit}."',
                )
            unknown = sorted(set(entry) - set(_YAML_KEYS))
            if unknown:
                raise ConfigError(
                    f"{where}: unknown keys {unknown}",
                    expected=", ".join(_YAML_KEYS),
                    found=", ".join(unknown),
                    fix="fix the spelling or remove the keys",
                )
            try:
                out[str(name)] = Template(**entry)
            except ConfigError as exc:
                raise ConfigError(
                    f"{where}: {exc.message}", expected=exc.expected, found=exc.found, fix=exc.fix
                ) from exc
        return cls(out)

    def to_yaml(self, path: str | Path) -> Path:
        """Write the templates (fields that are not None) atomically; inverts :meth:`from_yaml`."""
        yaml = require("yaml", "ehr")
        cols = {
            name: {k: v for k, v in asdict(t).items() if v is not None}
            for name, t in self._items.items()
        }
        text = yaml.safe_dump({"columns": cols}, sort_keys=False, allow_unicode=True, width=100)
        return atomic_write_text(path, text)


# --------------------------------------------------------------------------- readable names

SUPPORT2_COLUMNS: dict[str, tuple[str, str | None]] = {
    "age": ("age", "years"),
    "sex": ("sex", None),
    "race": ("race", None),
    "edu": ("years of education", "years"),
    "income": ("income", None),
    "dzgroup": ("disease subgroup", None),
    "dzclass": ("disease class", None),
    "num.co": ("number of comorbidities", None),
    "diabetes": ("diabetes", None),
    "dementia": ("dementia", None),
    "ca": ("cancer status", None),
    "scoma": ("SUPPORT coma score", None),
    "sps": ("SUPPORT physiology score", None),
    "aps": ("APACHE III physiology score", None),
    "hday": ("hospital day at study entry", None),
    "meanbp": ("mean arterial blood pressure", "mmHg"),
    "wblc": ("white blood cell count", "x10^9/L"),
    "hrt": ("heart rate", "bpm"),
    "resp": ("respiratory rate", "breaths/min"),
    "temp": ("body temperature", "°C"),
    "pafi": ("PaO2/FiO2 ratio", "mmHg"),
    "alb": ("serum albumin", "g/dL"),
    "bili": ("serum bilirubin", "mg/dL"),
    "crea": ("serum creatinine", "mg/dL"),
    "sod": ("serum sodium", "mmol/L"),
    "ph": ("arterial blood pH", None),
    "glucose": ("blood glucose", "mg/dL"),
    "bun": ("blood urea nitrogen", "mg/dL"),
    "urine": ("urine output", "mL/day"),
}
"""Readable name and unit of the 29 non-leaky SUPPORT2 feature columns (physiology: study day 3)."""

SUPPORT2_EXCLUDED: frozenset[str] = frozenset(
    {"sno"}  # row id
    | {"death", "hospdead", "slos", "d.time"}  # outcomes
    | {"charges", "totcst", "totmcst", "avtisst"}  # costs / TISS over the stay
    | {"sfdm2", "surv2m", "surv6m", "prg2m", "prg6m"}  # follow-up status, model/physician prognoses
    | {"dnr", "dnrday", "adlp", "adls", "adlsc"}  # DNR order timing, ADL scored at 2 weeks
)
"""SUPPORT2 columns that are ids, outcomes or leak them (reasons in ``data.SUPPORT2_DROPPED``):
never templated."""

_ABBREVIATIONS = {
    "bp": "blood pressure",
    "sbp": "systolic blood pressure",
    "dbp": "diastolic blood pressure",
    "hr": "heart rate",
    "rr": "respiratory rate",
    "temp": "temperature",
    "wbc": "white blood cell count",
    "bmi": "body mass index",
    "spo2": "oxygen saturation",
    "gcs": "Glasgow coma scale",
    "los": "length of stay",
}


def readable_name(column: str) -> str:
    """A readable phrase for a column name (SUPPORT2 names, snake_case, dotted, camelCase).

    Example:
        >>> readable_name("wblc"), readable_name("serum_sodium"), readable_name("systolicBP")
        ('white blood cell count', 'serum sodium', 'systolic blood pressure')
    """
    if column in SUPPORT2_COLUMNS:
        return SUPPORT2_COLUMNS[column][0]
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(column))
    words = re.sub(r"[\s._\-/]+", " ", words).strip().lower().split()
    return " ".join(_ABBREVIATIONS.get(w, w) for w in words) or str(column)


def read_columns_yaml(
    path: str | Path,
    *,
    what: str,
    missing_fix: str,
    syntax_expected: str,
    syntax_fix: str,
    entries: str,
) -> dict[Any, Any]:
    """The top-level ``columns:`` mapping of a YAML file (template files, column
    dictionaries); a missing file, text that is not UTF-8 YAML, or no such mapping raise
    :class:`ConfigError` naming the file."""
    yaml = require("yaml", "ehr")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{what} not found: {path}",
            expected="a YAML file with a top-level 'columns:' mapping",
            found="no such file",
            fix=missing_fix,
        )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: not valid YAML (UTF-8)",
            expected=syntax_expected,
            found=str(exc).splitlines()[0],
            fix=syntax_fix,
        ) from None
    columns = doc.get("columns") if isinstance(doc, dict) else None
    if not isinstance(columns, dict):
        raise ConfigError(
            f"{path}: no top-level 'columns:' mapping",
            expected=f"columns: {entries}",
            found=f"top-level keys: {list(doc) if isinstance(doc, dict) else type(doc).__name__}",
            fix="put the per-column entries under a 'columns:' key",
        )
    return columns


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _escape(s: str) -> str:
    return s.replace("{", "{{").replace("}", "}}")


# --------------------------------------------------------------------------- auto templates

_NOTE_NAMES = frozenset({"note", "notes", "text", "clinical note", "clinical notes", "note text"})
_TRUE_WORDS = frozenset({"1", "1.0", "yes", "y", "true", "t"})
_FALSE_WORDS = frozenset({"0", "0.0", "no", "n", "false", "f"})


def _auto_numeric(readable: str) -> tuple[str, str]:
    return f"The {_escape(readable)} is {{value}} {{unit}}.", DEFAULT_MISSING


def _auto_categorical(readable: str) -> tuple[str, str]:
    return f"The {_escape(readable)} is {{value}}.", DEFAULT_MISSING


def _auto_binary(readable: str) -> tuple[str, str]:
    return f"{_escape(_cap(readable))}: {{value}}.", DEFAULT_MISSING


def _auto_text(readable: str) -> tuple[str, str]:
    if readable in _NOTE_NAMES:
        return "Clinical note: {value}", NO_NOTE
    return f"{_escape(_cap(readable))}: {{value}}", DEFAULT_MISSING


_AUTO: dict[str, Callable[[str], tuple[str, str]]] = {
    "numeric": _auto_numeric,
    "categorical": _auto_categorical,
    "binary": _auto_binary,
    "text": _auto_text,
}


def _infer_kind(series: pd.Series) -> Kind:
    values = series.dropna()
    if pd.api.types.is_bool_dtype(series):
        return "binary"
    if pd.api.types.is_numeric_dtype(series):
        return "binary" if len(values) and set(values.unique()) <= {0, 1} else "numeric"
    words = values.astype(str).str.strip().str.lower()
    if len(words) and set(words.unique()) <= (_TRUE_WORDS | _FALSE_WORDS):
        return "binary"
    if len(words) and (words.str.len().mean() > 40 or words.str.split().str.len().max() > 8):
        return "text"
    return "categorical"


def auto_templates(
    frame: pd.DataFrame,
    specs: Sequence[ColumnSpec] | Mapping[str, ColumnSpec] | None = None,
    *,
    on_missing_column: OnMissingColumn = "raise",
) -> TemplateSet:
    """Templates generated from column names, specs and dtypes, for a table without templates.

    With ``specs``, one template per spec (in spec order; absent columns raise or are skipped);
    without, one per DataFrame column with its kind inferred from the dtype (bool or 0/1 ->
    binary, other numbers -> numeric, long strings -> text, other strings -> categorical).

    ===========  ==========================================  ==========================
    kind         template                                    example
    ===========  ==========================================  ==========================
    numeric      ``The {name} is {value} {unit}.``            The heart rate is 72 bpm.
    categorical  ``The {name} is {value}.``                   The race is white.
    binary       ``{Name}: {value}.``                         Diabetes: yes.
    text         ``Clinical note: {value}``                   Clinical note: Denies ...
    ===========  ==========================================  ==========================

    Example:
        >>> f = pd.DataFrame({"heart_rate": [72.0], "smoker": [1]})
        >>> ts = auto_templates(f)
        >>> ts["heart_rate"].template, ts["smoker"].kind
        ('The heart rate is {value} {unit}.', 'binary')
    """
    if specs is None:
        specs = [ColumnSpec(str(c), _infer_kind(frame[c])) for c in frame.columns]
        logger.info("inferred column kinds: %s", {s.name: s.kind for s in specs})
    elif isinstance(specs, Mapping):
        specs = list(specs.values())
    present = [s for s in specs if s.name in frame.columns]
    if len(present) < len(specs):
        absent = [s.name for s in specs if s.name not in frame.columns]
        if on_missing_column == "raise":
            raise DataError(
                f"column specs name columns that are not in the table: {absent}",
                expected="every spec'd column present",
                found=f"table columns: {list(map(str, frame.columns))[:40]}",
                fix="fix the specs or pass on_missing_column='skip'",
            )
        logger.warning("skipping specs of absent columns: %s", absent)
    out: dict[str, Template] = {}
    for s in present:
        readable = s.description or readable_name(s.name)
        unit = s.unit if s.unit is not None else SUPPORT2_COLUMNS.get(s.name, ("", None))[1]
        sentence, missing = _AUTO[s.kind](readable)
        out[s.name] = Template(
            sentence,
            kind=s.kind,
            unit=unit if s.kind == "numeric" else None,
            missing=missing,
            description=readable,
        )
    return TemplateSet(out)


def support2_templates() -> TemplateSet:
    """The hand-written templates of the 29 non-leaky SUPPORT2 columns (templates/support2.yaml)."""
    ref = resources.files("clinfuse.methods.ehrprompt").joinpath("templates", "support2.yaml")
    with resources.as_file(ref) as path:
        return TemplateSet.from_yaml(path)


# --------------------------------------------------------------------------- value parsing


class _BadValue(Exception):
    pass


def format_number(x: float, decimals: int | None = None) -> str:
    """A number as text: fixed ``decimals`` digits, or (None) integers bare and others trimmed.

    Automatic formatting keeps 2 decimals for :math:`|x| \\ge 1` and 2 significant digits below,
    drops trailing zeros, never uses exponents and never prints ``-0``.

    Example:
        >>> format_number(72.00000001), format_number(7.4599609375), format_number(0.00412)
        ('72', '7.46', '0.0041')
        >>> format_number(38.0, 1), format_number(-0.001, 1)
        ('38.0', '0.0')
    """
    if decimals is None:
        if x == round(x) or abs(x - round(x)) <= 1e-9 * max(1.0, abs(x)):
            s = str(int(round(x)))
        else:
            d = 2 if abs(x) >= 1 else min(8, 1 - math.floor(math.log10(abs(x))))
            s = f"{x:.{d}f}".rstrip("0").rstrip(".")
    else:
        s = f"{x:.{decimals}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def _is_missing(v: object) -> bool:
    if isinstance(v, str):
        return not v.strip()
    return v is None or (pd.api.types.is_scalar(v) and bool(pd.isna(v)))


def _parse_numeric(v: object) -> float:
    if isinstance(v, bool | np.bool_):
        raise _BadValue("a boolean")
    if isinstance(v, numbers.Real):
        x = float(v)
    elif isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            raise _BadValue("text") from None
    else:
        raise _BadValue(type(v).__name__)
    if not math.isfinite(x):
        raise _BadValue("an infinite number")
    return x


def _parse_binary(v: object) -> bool:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, numbers.Real) and float(v) in (0.0, 1.0):
        return float(v) == 1.0
    if isinstance(v, str):
        w = v.strip().lower()
        if w in _TRUE_WORDS:
            return True
        if w in _FALSE_WORDS:
            return False
    raise _BadValue("a third value")


def _text_numeric(t: Template, v: object) -> str:
    return format_number(_parse_numeric(v), t.decimals)


def _text_categorical(t: Template, v: object) -> str:
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, numbers.Real):
        return format_number(float(v), t.decimals)
    if isinstance(v, str):
        return " ".join(v.split())
    raise _BadValue(type(v).__name__)


def _text_binary(t: Template, v: object) -> str:
    return "yes" if _parse_binary(v) else "no"


def _text_text(t: Template, v: object) -> str:
    if not isinstance(v, str):
        raise _BadValue(f"a {type(v).__name__}, not text")
    return " ".join(v.split())


_VALUE_TEXT: dict[str, Callable[[Template, object], str]] = {
    "numeric": _text_numeric,
    "categorical": _text_categorical,
    "binary": _text_binary,
    "text": _text_text,
}


# --------------------------------------------------------------------------- deciles

_DECILE_LABELS = (
    ("very low",) * 2 + ("low",) * 2 + ("middle",) * 2 + ("high",) * 2 + ("very high",) * 2
)


def fit_deciles(
    frame: pd.DataFrame, templates: Mapping[str, Template], *, on_bad_value: OnBadValue = "raise"
) -> dict[str, np.ndarray]:
    """The 9 decile cut points of every numeric templated column, from the **training** rows.

    A column with at most :data:`MAX_LEVELS_AS_VALUES` distinct training values (a stage, a
    score, a count) gets no cut points (an empty array): its cells keep their values, since a
    decile of a 4-level scale says less than the level itself.

    Fit on the training split only and pass the result to :func:`render` for every split, so
    validation and test rows never shape the cut points.

    Shape:
        Output: column -> ``(9,)`` float64, non-decreasing, or ``(0,)`` (values kept).
    """
    ts = templates if isinstance(templates, TemplateSet) else TemplateSet(templates)
    ts = ts.select(list(frame.columns), on_missing_column="skip")
    out: dict[str, np.ndarray] = {}
    for name, t in ts.items():
        if t.kind != "numeric":
            continue
        values = []
        for row, v in zip(frame.index, _column(frame, name), strict=True):
            if _is_missing(v):
                continue
            try:
                values.append(_parse_numeric(v))
            except _BadValue as exc:
                if on_bad_value == "raise":
                    raise _bad_value_error(name, row, v, t.kind, str(exc)) from None
        if not values:
            raise DataError(
                f"column {name!r} has no numeric value to fit deciles on",
                expected="at least one recorded number in the training rows",
                found="all missing",
                fix="drop the column's template or render it with numeric='value'",
            )
        arr = np.asarray(values, dtype=np.float64)
        few = np.unique(arr).size <= MAX_LEVELS_AS_VALUES
        out[name] = np.empty(0) if few else np.quantile(arr, np.arange(1, 10) / 10)
    return out


def _ordinal(k: int) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(k if k < 20 else k % 10, "th")
    return f"{k}{suffix}"


def decile_of(x: float, cuts: np.ndarray) -> int:
    """Decile index 1..10 of ``x`` given 9 cut points; ties take the middle of the tied deciles.

    Mid-rank ties keep a value shared by many rows (a coma score of 0 in 60% of patients) in the
    middle of the deciles it spans instead of the top one.

    Example:
        >>> cuts = np.arange(1.0, 10.0)
        >>> decile_of(0.5, cuts), decile_of(3.5, cuts), decile_of(99.0, cuts)
        (1, 4, 10)
        >>> decile_of(0.0, np.array([0.0] * 6 + [9.0, 26.0, 41.0]))
        4
    """
    lo = int(np.searchsorted(cuts, x, side="left"))
    hi = int(np.searchsorted(cuts, x, side="right"))
    return (lo + hi) // 2 + 1


def _decile_phrase(x: float, cuts: np.ndarray) -> str:
    k = decile_of(x, cuts)
    return f"{_ordinal(k)} decile ({_DECILE_LABELS[k - 1]})"


def _check_deciles(ts: TemplateSet, deciles: Mapping[str, np.ndarray] | None) -> None:
    numeric = [n for n, t in ts.items() if t.kind == "numeric"]
    if deciles is None:
        raise ConfigError(
            "numeric='decile' needs the training-set decile cut points",
            expected="deciles=fit_deciles(train_frame, templates)",
            found="deciles=None",
            fix="fit the cut points on the training split and pass them for every split",
        )
    for n in numeric:
        cuts = np.asarray(deciles.get(n, (np.nan,)), dtype=np.float64)
        if cuts.shape == (0,):
            continue
        if cuts.shape != (9,) or not np.all(np.isfinite(cuts)) or np.any(np.diff(cuts) < 0):
            raise ConfigError(
                f"column {n!r}: no valid decile cut points",
                expected="9 finite, non-decreasing cut points from fit_deciles",
                found=f"shape {cuts.shape}" if cuts.shape != (9,) else repr(cuts.tolist()),
                fix="refit with fit_deciles(train_frame, templates) on the same templates",
            )


# --------------------------------------------------------------------------- sentences


def _tidy(s: str) -> str:
    s = re.sub(r"\s+", " ", s).strip()
    return re.sub(r" +([.,;:!?)])", r"\1", s)


def _fill(fmt: str, value: str, t: Template, name: str) -> str:
    # Tidy the template around a sentinel so that the value itself (a note) is kept verbatim.
    s = _tidy(fmt.format(value=_SENTINEL, unit=t.unit or "", description=t.description, name=name))
    return _cap(s.replace(_SENTINEL, value))


def _prompt(t: Template, name: str, value: str, decile: bool) -> str:
    fmt = (t.decile_template or DEFAULT_DECILE_TEMPLATE) if decile else t.template
    return _fill(fmt, value, t, name)


def _name_value(t: Template, name: str, value: str, decile: bool) -> str:
    unit = f" {t.unit}" if t.unit and t.kind == "numeric" and not decile else ""
    return f"{t.description}: {value}{unit}"


def _value(t: Template, name: str, value: str, decile: bool) -> str:
    return value


def _missing_prompt(t: Template, name: str) -> str:
    text = t.missing.format(unit=t.unit or "", description=t.description, name=name)
    return _cap(_tidy(text))


_SENTENCE: dict[str, Callable[[Template, str, str, bool], str]] = {
    "prompt": _prompt,
    "name_value": _name_value,
    "value": _value,
}
_MISSING: dict[str, Callable[[Template, str], str]] = {
    "prompt": _missing_prompt,
    "name_value": lambda t, name: f"{t.description}: {NOT_RECORDED}",
    "value": lambda t, name: NOT_RECORDED,
}


def _column(frame: pd.DataFrame, name: str) -> list[Any]:
    col = frame[name]
    if isinstance(col, pd.DataFrame):
        raise DataError(
            f"column {name!r} appears {col.shape[1]} times in the table",
            expected="unique column names",
            found=f"{col.shape[1]} columns named {name!r}",
            fix="rename or drop the duplicates",
        )
    return col.astype(object).tolist()


def _cache_key(v: object) -> tuple[type, object] | None:
    try:
        hash(v)
    except TypeError:  # an unhashable cell (a list): rendered, not cached
        return None
    return (type(v), v)


def _bad_value_error(name: str, row: object, v: object, kind: str, why: str) -> DataError:
    return DataError(
        f"column {name!r}, row {row!r}: value {v!r} contradicts the declared kind {kind!r}",
        expected={
            "numeric": "a finite number",
            "binary": "two values (0/1, yes/no, true/false)",
            "categorical": "a level (text or number)",
            "text": "a string",
        }[kind],
        found=f"{v!r} ({why})",
        fix="clean the value, change the column's kind, or render with on_bad_value='skip'",
    )


def render(
    frame: pd.DataFrame,
    templates: Mapping[str, Template],
    mode: Mode = "prompt",
    numeric: NumericMode = "value",
    deciles: Mapping[str, np.ndarray] | None = None,
    *,
    on_bad_value: OnBadValue = "raise",
    on_missing_column: OnMissingColumn = "raise",
    on_empty_note: OnEmptyNote = "missing",
    scrub: bool = True,
    patterns: Sequence[str] | None = None,
) -> np.ndarray:
    """Render every cell of ``frame`` into a sentence.

    ``mode`` picks the paper's prompt ablation: ``prompt`` fills the template ("The heart rate
    is 72 bpm."), ``name_value`` writes "heart rate: 72 bpm", ``value`` just "72". Missing cells
    (NaN, None, blank strings) get the template's missing sentence ("Heart rate is not recorded.")
    or "not recorded". Numbers use the template's ``decimals`` (None: integers bare, others to 2
    places, trimmed); binary cells become "yes"/"no".

    ``numeric="decile"`` replaces each number by its decile among the training rows ("The heart
    rate is in the 3rd decile (low)."), using ``deciles`` from :func:`fit_deciles`. A numeric
    column then yields at most 10 distinct sentences (plus the missing one) instead of one per
    distinct value, so the encoder and its cache see ~10 sentences per column; within-decile
    resolution is lost.

    Text cells are scrubbed of outcome-stating sentences (:func:`scrub_note`, ``scrub=True``);
    a note that is empty after scrubbing gets the template's missing sentence
    (``on_empty_note="missing"``) or raises.

    Args:
        frame: the raw table; columns without a template are ignored.
        templates: column -> template; a template whose column is absent raises or, with
            ``on_missing_column="skip"``, is logged and left out.
        on_bad_value: a value contradicting the column's kind raises :class:`DataError` naming
            column and row (``"raise"``) or is logged and rendered as missing (``"skip"``).
        patterns: outcome regexes for scrubbing; None -> :data:`DEFAULT_OUTCOME_PATTERNS`.

    Shape:
        Output: ``(n_rows, n_columns)`` object array of ``str``; columns in the order of
        ``TemplateSet(templates).select(frame.columns).names``.
    """
    if mode not in _SENTENCE or numeric not in ("value", "decile"):
        raise ConfigError(
            f"unknown render mode {mode!r} / numeric {numeric!r}",
            expected=f"mode in {MODES}, numeric in ('value', 'decile')",
            found=f"mode={mode!r}, numeric={numeric!r}",
            fix="pick one of the known modes",
        )
    ts = templates if isinstance(templates, TemplateSet) else TemplateSet(templates)
    ts = ts.select(list(frame.columns), on_missing_column)
    if numeric == "decile":
        _check_deciles(ts, deciles)
    compiled = _compile(tuple(patterns if patterns is not None else DEFAULT_OUTCOME_PATTERNS))
    sentence, missing_of = _SENTENCE[mode], _MISSING[mode]
    out = np.empty((len(frame), len(ts)), dtype=object)
    for j, (name, t) in enumerate(ts.items()):
        missing = missing_of(t, name)
        cuts = np.asarray(deciles[name]) if numeric == "decile" and t.kind == "numeric" else None
        cuts = None if cuts is not None and cuts.size == 0 else cuts
        cache: dict[tuple[type, object], str] = {}
        bad: list[object] = []
        scrubbed = 0
        for i, (row, v) in enumerate(zip(frame.index, _column(frame, name), strict=True)):
            if _is_missing(v):
                out[i, j] = missing
                continue
            key = _cache_key(v) if t.kind != "text" else None
            if key is not None and key in cache:
                out[i, j] = cache[key]
                continue
            try:
                if cuts is not None:
                    text = _decile_phrase(_parse_numeric(v), cuts)
                else:
                    text = _VALUE_TEXT[t.kind](t, v)
            except _BadValue as exc:
                if on_bad_value == "raise":
                    raise _bad_value_error(name, row, v, t.kind, str(exc)) from None
                bad.append(row)
                out[i, j] = missing
                continue
            if t.kind == "text" and scrub:
                text, n_removed = _scrub(text, compiled)
                scrubbed += n_removed
                if not text:
                    if on_empty_note == "raise":
                        raise DataError(
                            f"column {name!r}, row {row!r}: the note is empty after scrubbing",
                            expected="a note with at least one sentence that is not an outcome",
                            found=f"{n_removed} outcome sentences, nothing else",
                            fix="drop the row, or render with on_empty_note='missing'",
                        )
                    out[i, j] = missing
                    continue
            out[i, j] = sentence(t, name, text, cuts is not None)
            if key is not None:
                cache[key] = out[i, j]
        if bad:
            logger.warning(
                "column %r: %d values contradict kind %r, rendered as missing (rows %s%s)",
                name,
                len(bad),
                t.kind,
                bad[:10],
                " ..." if len(bad) > 10 else "",
            )
        if scrubbed:
            logger.info("column %r: scrubbed %d outcome sentences from notes", name, scrubbed)
    return out


# --------------------------------------------------------------------------- note scrubbing

DEFAULT_OUTCOME_PATTERNS: tuple[str, ...] = (
    # death
    r"\b(?:died|dies|dying)\b",
    r"\bexpired\b",
    r"\bpassed\s+away\b",
    r"\bdeceased\b",
    r"\bpronounced\s+(?:dead|deceased)\b",
    r"\b(?:time|cause|date)\s+of\s+death\b",
    r"\bdeath\s+(?:certificate|note|pronouncement)\b",
    r"\b(?:autopsy|post[- ]?mortem|morgue|funeral)\b",
    r"\bsurvived\b",
    # end-of-life care decisions taken during the stay
    r"\bcomfort\s+(?:measures|care)\b",
    r"\bcmo\b",
    r"\bhospice\b",
    r"\bwithdraw(?:al|n|ing)?\s+(?:of\s+)?(?:care|support|life[- ]sustaining)",
    r"\b(?:dnr|dni|do[- ]not[- ]resuscitate)\b",
    # discharge (implies survival of the stay) and its disposition
    r"\bdischarged\b",
    r"\bdischarge\s+(?:to|home|disposition|condition|status|date)\b",
    # length of stay
    r"\blength\s+of\s+(?:hospital\s+|icu\s+)?stay\b",
    r"\blos\b\s*(?:was|of|:|=)?\s*\d",
    r"\b(?:hospital|icu)\s+day\s*#?\s*\d+",
    r"\b(?:hospitali[sz]ed|admitted|stayed|in\s+(?:the\s+)?(?:hospital|icu))\s+for\s+\d+\s+days?\b",
    # surgical duration
    r"\bpost[- ]?op(?:erative)?\s+day\s*#?\s*\d+",
    r"\bpod\s*#?\s*\d+",
    r"\b(?:operative|operating|surgical|procedure|anaesthesia|anesthesia)\s+(?:time|duration)\b",
    r"\b(?:surgery|operation|procedure)\s+(?:lasted|took)\b",
)
"""Case-insensitive regexes; a sentence matching any of them states (or bounds) an outcome."""


@functools.lru_cache(maxsize=16)
def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns) or r"(?!)", re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(
            "an outcome pattern is not a valid regular expression",
            expected="Python `re` syntax",
            found=str(exc),
            fix="escape the special characters of the pattern",
        ) from exc


def split_sentences(text: str) -> list[str]:
    """Sentences of a note: split after ``.!?`` followed by whitespace, and at line breaks.

    Decimal numbers ("pH 7.45") are not split.

    Example:
        >>> split_sentences("BP 120/80. pH 7.45 on arrival!\\nDenies chest pain")
        ['BP 120/80.', 'pH 7.45 on arrival!', 'Denies chest pain']
    """
    parts = re.split(r"(?<=[.!?])\s+|\s*\n\s*", text.strip())
    return [p.strip() for p in parts if p.strip()]


def _scrub(text: str, compiled: re.Pattern[str]) -> tuple[str, int]:
    sentences = split_sentences(text)
    kept = [s for s in sentences if not compiled.search(s)]
    return " ".join(kept), len(sentences) - len(kept)


def scrub_note(
    text: str | None,
    patterns: Sequence[str] = DEFAULT_OUTCOME_PATTERNS,
    *,
    empty_sentence: str = NO_NOTE,
    on_empty: Literal["sentence", "raise"] = "sentence",
) -> str:
    """Remove the sentences of a clinical note that state the outcome (the leakage guard).

    Whole sentences matching any pattern (case-insensitive) are removed: death ("expired",
    "passed away", "pronounced dead"), end-of-life decisions ("comfort measures only",
    "hospice"), discharge and its disposition, length of stay and hospital/post-op day counts,
    operative duration. The remaining sentences are joined with single spaces. Negated findings
    ("denies chest pain") are kept. A note that is empty (originally or after scrubbing) becomes
    ``empty_sentence``, or raises :class:`DataError` with ``on_empty="raise"``.

    Example:
        >>> scrub_note("Denies chest pain. Patient expired at 03:40. Family at bedside.")
        'Denies chest pain. Family at bedside.'
        >>> scrub_note("Pronounced dead at 14:02.")
        'No clinical note.'
    """
    stripped = "" if _is_missing(text) else str(text)
    kept, n_removed = _scrub(stripped, _compile(tuple(patterns)))
    if kept:
        return kept
    if on_empty == "raise":
        raise DataError(
            "the clinical note is empty" + (" after scrubbing" if n_removed else ""),
            expected="a note with at least one sentence that does not state the outcome",
            found=f"{n_removed} outcome sentences removed" if n_removed else repr(text),
            fix="drop the row, or use on_empty='sentence'",
        )
    return empty_sentence
