"""MEETI inputs: find 12-lead ECG records on disk (WFDB, MIMIC-IV-ECG, LUDB) and load them in mV.

Three layouts are read, all through the WFDB reader of the optional ``wfdb`` package
(``pip install 'clinfuse[ecg]'``):

* ``wfdb``: any folder tree; every ``.hea`` whose signal files exist is a record, named by its stem.
* ``mimic``: MIMIC-IV-ECG. ``record_list.csv`` (``subject_id, study_id, file_name, ecg_time, path``
  with ``path`` like ``files/p1000/p10000032/s40689238/40689238``) and, when present,
  ``machine_measurements.csv`` joined on ``study_id``: ``report_0 … report_17`` become the report
  lines, the interval/axis columns the machine measurements (``29999`` means missing -> NaN).
* ``ludb``: the Lobachevsky University database; ``ludb.csv`` gives the rhythm and diagnosis text.

:func:`scan` only lists records (cheap :class:`RecordRef` objects, safe to send to worker
processes); :func:`load` reads one into an :class:`EcgRecord` and raises
:class:`~clinfuse.core.errors.DataError` naming the file for anything wrong with it, so a builder
can log the record and go on. Lead names are always taken from the header and mapped to the
canonical ``I, II, III, aVR, aVL, aVF, V1 … V6`` (MIMIC files store aVF before aVL: the file's
order is kept, use :meth:`EcgRecord.lead` or :meth:`EcgRecord.in_order` to select by name).
:func:`write_mimic_layout` writes records back in the exact MIMIC-IV-ECG layout, which is how the
MIMIC reader is tested on a synthetic mini database (MIMIC itself is credentialed, never bundled).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clinfuse.core.errors import ConfigError, DataError, reads_untrusted, require
from clinfuse.core.paths import input_path
from clinfuse.core.runs import atomic_write_text

logger = logging.getLogger(__name__)

Source = Literal["wfdb", "mimic", "ludb", "default"]
Layout = Literal["auto", "wfdb", "mimic", "ludb"]

STANDARD_LEADS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVL",
    "aVF",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)
"""The 12 standard leads, in the conventional order."""

MACHINE_FIELDS: tuple[str, ...] = (
    "rr_interval",
    "p_onset",
    "p_end",
    "qrs_onset",
    "qrs_end",
    "t_end",
    "p_axis",
    "qrs_axis",
    "t_axis",
)
"""MIMIC-IV-ECG machine measurements kept in :attr:`RecordRef.machine` (ms, or degrees for axes)."""

MIMIC_MISSING = 29999.0
"""The value MIMIC-IV-ECG machine measurements use for 'not measured'."""

N_REPORT_COLUMNS = 18
"""``report_0 … report_17`` in ``machine_measurements.csv``."""

RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")
MACHINE_COLUMNS = (
    ("subject_id", "study_id", "cart_id", "ecg_time")
    + tuple(f"report_{i}" for i in range(N_REPORT_COLUMNS))
    + ("bandwidth", "filtering")
    + MACHINE_FIELDS
)
_MACHINE_EXTRA = ("cart_id", "bandwidth", "filtering")

WRITE_GAIN = 1000.0
"""ADC gain (adu/mV) of files :func:`write_mimic_layout` writes: 1 uV steps, +-32.767 mV."""

_ALIASES: dict[str, str] = {name.lower(): name for name in STANDARD_LEADS}
_UNIT_TO_MV: dict[str, float] = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}

# WFDB storage formats: (lowest code, highest code). The lowest code marks a missing sample, so
# valid samples lie in [lowest + 1, highest]; the digital min/max of a lead are these bounds,
# narrowed by the header's ADC resolution when it gives one.
_FORMAT_BOUNDS: dict[str, tuple[int, int]] = {
    "8": (-128, 127),
    "80": (-128, 127),
    "16": (-32768, 32767),
    "61": (-32768, 32767),
    "160": (-32768, 32767),
    "212": (-2048, 2047),
    "310": (-512, 511),
    "311": (-512, 511),
    "24": (-(2**23), 2**23 - 1),
    "32": (-(2**31), 2**31 - 1),
    "508": (-128, 127),
    "516": (-32768, 32767),
    "524": (-(2**23), 2**23 - 1),
}
# Bytes per sample of the uncompressed formats whose file size follows from the header.
_BYTES_PER_SAMPLE: dict[str, float] = {
    "8": 1,
    "80": 1,
    "16": 2,
    "61": 2,
    "160": 2,
    "24": 3,
    "32": 4,
    "212": 1.5,
}


def canonical_lead(name: str) -> str | None:
    """The canonical name of a standard lead (``"avf"`` -> ``"aVF"``), or None for any other signal.

    Case, spaces, ``-``/``_`` and a leading ``lead`` are ignored.

    Example:
        >>> canonical_lead("AVF"), canonical_lead("Lead V1"), canonical_lead("vx")
        ('aVF', 'V1', None)
    """
    key = re.sub(r"[\s_\-]", "", name).lower()
    key = key.removeprefix("lead")
    return _ALIASES.get(key)


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where one ECG study lives and what is known about it before reading the signal.

    Cheap and picklable: a scan of a whole database is a list of these.
    """

    study_id: str
    """Identifier every MEETI component joins on (MIMIC ``study_id``, ``ludb-<n>``, record name)."""
    subject_id: str | None
    """Patient identifier when the layout has one (MIMIC ``subject_id``)."""
    path: str
    """WFDB record path without extension (``…/40689238``); empty for in-memory records."""
    ecg_time: str | None
    """Acquisition time as written in the source (MIMIC ``ecg_time``)."""
    source: Source
    """Layout the record came from; ``default`` for the embedded simulated/packaged records."""
    report: tuple[str, ...] = ()
    """Non-empty report / diagnosis lines (MIMIC machine report, LUDB diagnoses)."""
    machine: dict[str, float] | None = None
    """Machine measurements (:data:`MACHINE_FIELDS`, ms / degrees, NaN when missing), or None."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the source gives (LUDB sex/age, MIMIC cart_id, simulation parameters)."""


@dataclass
class EcgRecord:
    """One ECG read into memory.

    Shape:
        signal: ``(n_samples, n_leads)`` float32 in mV, columns named by ``leads`` (file order).
    """

    ref: RecordRef
    """The study this signal belongs to."""
    signal: np.ndarray
    """Samples in mV, ``(n_samples, n_leads)`` float32; NaN where the file marks samples missing."""
    fs: float
    """Sampling rate in Hz."""
    leads: tuple[str, ...]
    """Canonical lead names, in the order of the file."""
    flags: dict[str, list[str]] = field(default_factory=dict)
    """Quality flags, only those raised: ``flat``/``saturated``/``nan``/``missing_leads`` list
    leads, ``extra_leads`` the non-standard signals dropped, ``resampled`` the rate change."""

    @property
    def study_id(self) -> str:
        return self.ref.study_id

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.fs

    def lead(self, name: str) -> np.ndarray:
        """The samples of one lead, by any spelling of its name; ``(n_samples,)`` float32 mV."""
        canon = canonical_lead(name) or name
        if canon not in self.leads:
            raise DataError(
                f"record {self.study_id!r} has no lead {name!r}",
                expected=f"one of {list(self.leads)}",
                found=name,
                fix="check flags['missing_leads'] before asking for a lead",
            )
        return self.signal[:, self.leads.index(canon)]

    def in_order(self, leads: Sequence[str] = STANDARD_LEADS) -> np.ndarray:
        """The signal with columns in the order of ``leads``; ``(n_samples, len(leads))``."""
        return np.stack([self.lead(name) for name in leads], axis=1)


@dataclass(frozen=True)
class LoadConfig:
    """How :func:`load` turns a file into an :class:`EcgRecord`."""

    target_fs: float | None = 500.0
    """Sampling rate of the returned signal in Hz; None keeps the file's rate."""
    resample: bool = True
    """Resample records at another rate (polyphase, flagged ``resampled``); False refuses them."""
    require_leads: int = 12
    """Fewest standard leads a record must have; fewer raises (no padding). Below 12 the absent
    leads are flagged ``missing_leads``."""
    flat_mv: float = 0.01
    """A lead whose peak-to-peak amplitude is below this many mV is flagged ``flat``."""
    saturation_run: int = 20
    """A lead with this many consecutive samples at the digital min or max is flagged
    ``saturated`` (counted at the file's rate)."""

    def __post_init__(self) -> None:
        checks = {
            "target_fs": self.target_fs is None or self.target_fs > 0,
            "require_leads": 1 <= self.require_leads <= len(STANDARD_LEADS),
            "flat_mv": self.flat_mv >= 0,
            "saturation_run": self.saturation_run >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"invalid LoadConfig field(s) {bad}",
                expected="target_fs > 0 or None, 1 <= require_leads <= 12, flat_mv >= 0, "
                "saturation_run >= 1",
                found={name: getattr(self, name) for name in bad},
                fix="correct the value(s)",
            )


# ------------------------------------------------------------------------------------------------
# scanning


@reads_untrusted("a WFDB folder, a MIMIC-IV-ECG root or LUDB")
def scan(
    root: str | Path, layout: Layout = "auto", *, allow_outside: bool = False
) -> list[RecordRef]:
    """List the ECG records under ``root`` without reading any signal.

    ``auto`` picks ``mimic`` when ``root/record_list.csv`` exists, ``ludb`` when
    ``root/ludb.csv`` exists, else ``wfdb``. A ``path`` of ``record_list.csv`` must stay under
    ``root`` unless ``allow_outside`` (the path policy of :mod:`clinfuse.core.paths`).

    Example:
        >>> scan("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        clinfuse.core.errors.DataError: ECG folder not found: /nonexistent...
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"ECG folder not found: {root}",
            expected="a folder of WFDB records, a MIMIC-IV-ECG root or an LUDB root",
            found=str(root),
            fix="pass the folder holding the .hea files (or record_list.csv / ludb.csv)",
        )
    if layout == "auto":
        layout = next((name for marker, name in _MARKERS if (root / marker).is_file()), "wfdb")
    if layout not in _SCANNERS:
        raise ConfigError(
            f"unknown ECG layout {layout!r}",
            expected=sorted([*_SCANNERS, "auto"]),
            found=layout,
            fix="use one of the expected layouts",
        )
    if layout == "mimic":
        refs = _scan_mimic(root, allow_outside=allow_outside)
    else:
        refs = _SCANNERS[layout](root)
    if not refs:
        raise DataError(
            f"no ECG records found under {root} (layout {layout!r})",
            expected="WFDB .hea files with their signal files",
            found="none",
            fix="check the path and the layout",
        )
    logger.info("scanned %d %s records under %s", len(refs), layout, root)
    return refs


def _header_signal_files(hea: Path) -> list[str] | None:
    """Signal file names a header lists, or None when the text cannot be parsed as a header."""
    try:
        lines = [
            line.strip()
            for line in hea.read_text(encoding="latin-1").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        fields = lines[0].split()
        if "/" in fields[0]:  # multi-segment record: signals live in segment headers
            return []
        n_sig = int(fields[1])
        return sorted({line.split()[0] for line in lines[1 : 1 + n_sig]})
    except (IndexError, ValueError, OSError):
        return None


def _wfdb_headers(root: Path) -> Iterable[Path]:
    """Headers under ``root`` whose signal files are present (the others are logged)."""
    for hea in sorted(root.rglob("*.hea")):
        files = _header_signal_files(hea)
        if files is None:  # unparsable: listed, so that load() reports it for this record
            yield hea
            continue
        missing = [name for name in files if not (hea.parent / name).is_file()]
        if not files or missing:
            logger.warning("skipping %s: signal file(s) %s not found", hea, missing or "none")
            continue
        yield hea


def _dedup(refs: list[RecordRef], what: str) -> list[RecordRef]:
    seen: dict[str, RecordRef] = {}
    for ref in refs:
        if ref.study_id in seen:
            logger.warning(
                "duplicate %s %r: keeping %s, skipping %s",
                what,
                ref.study_id,
                seen[ref.study_id].path,
                ref.path,
            )
            continue
        seen[ref.study_id] = ref
    return list(seen.values())


def _scan_wfdb(root: Path) -> list[RecordRef]:
    refs = [
        RecordRef(
            study_id=hea.stem,
            subject_id=None,
            path=str(hea.with_suffix("")),
            ecg_time=None,
            source="wfdb",
        )
        for hea in _wfdb_headers(root)
    ]
    return _dedup(refs, "record name")


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"cannot read {path}",
            expected="a UTF-8 CSV file",
            found=repr(exc),
            fix="check the file",
        ) from exc
    missing = [col for col in required if col not in header]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {missing}",
            expected=list(required),
            found=header,
            fix="use the CSV file of the database release",
        )
    return rows


def _text(value: str | None) -> str:
    return (value or "").strip()


def _machine_value(raw: str, column: str, study: str, path: Path) -> float:
    raw = _text(raw)
    if not raw:
        return math.nan
    try:
        value = float(raw)
    except ValueError as exc:
        raise DataError(
            f"non-numeric machine measurement {column}={raw!r} for study {study} in {path}",
            expected="a number (29999 for missing)",
            found=raw,
            fix="repair the row",
        ) from exc
    return math.nan if value == MIMIC_MISSING else value


def _scan_mimic(root: Path, *, allow_outside: bool = False) -> list[RecordRef]:
    rows = _read_csv(root / "record_list.csv", ("study_id", "path"))
    machine_rows = _read_machine(root)
    refs = []
    for i, row in enumerate(rows, start=2):
        study = _text(row["study_id"])
        where = f"{root / 'record_list.csv'} line {i}"
        if not study or not _text(row["path"]):
            raise DataError(
                f"{where} has an empty study_id or path",
                expected="subject_id, study_id, file_name, ecg_time, path",
                found=dict(row),
                fix="repair the row",
            )
        info = machine_rows.pop(study, None)
        path = input_path(root, _text(row["path"]), source=where, allow_outside=allow_outside)
        refs.append(
            RecordRef(
                study_id=study,
                subject_id=_text(row.get("subject_id")) or None,
                path=str(path),
                ecg_time=_text(row.get("ecg_time")) or None,
                source="mimic",
                report=info[0] if info else (),
                machine=info[1] if info else None,
                extra=info[2] if info else {},
            )
        )
    if machine_rows:
        unknown = sorted(machine_rows)
        logger.warning(
            "machine_measurements.csv: %d row(s) for studies not in record_list.csv, skipped: %s",
            len(unknown),
            ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else ""),
        )
    return _dedup(refs, "study_id")


def _read_machine(root: Path) -> dict[str, tuple[tuple[str, ...], dict[str, float], dict]]:
    """``study_id -> (report lines, machine measurements, extra)`` from machine_measurements.csv."""
    path = root / "machine_measurements.csv"
    if not path.is_file():
        logger.info("no machine_measurements.csv in %s: records have no report", root)
        return {}
    out: dict[str, tuple[tuple[str, ...], dict[str, float], dict]] = {}
    for row in _read_csv(path, ("study_id",)):
        study = _text(row["study_id"])
        if study in out:
            logger.warning(
                "duplicate machine row for study %s in %s: keeping the first", study, path
            )
            continue
        report = tuple(
            line for i in range(N_REPORT_COLUMNS) if (line := _text(row.get(f"report_{i}")))
        )
        machine = {
            col: _machine_value(row.get(col, ""), col, study, path) for col in MACHINE_FIELDS
        }
        extra = {col: _text(row[col]) for col in _MACHINE_EXTRA if _text(row.get(col))}
        out[study] = (report, machine, extra)
    return out


_LUDB_DEMOGRAPHICS = {"Sex": "sex", "Age": "age"}


def _scan_ludb(root: Path) -> list[RecordRef]:
    table = {_text(row["ID"]): row for row in _read_csv(root / "ludb.csv", ("ID", "Rhythms"))}
    refs = []
    for hea in sorted(_wfdb_headers(root), key=lambda p: (not p.stem.isdigit(), p.stem.zfill(9))):
        row = table.get(hea.stem)
        if row is None:
            logger.warning("LUDB record %s has no row in ludb.csv: empty report", hea)
            row = {}
        report = tuple(
            line
            for col, cell in row.items()
            if col not in ("ID", *_LUDB_DEMOGRAPHICS)
            for line in map(str.strip, (cell or "").splitlines())
            if line
        )
        extra = {key: _text(row.get(col)) for col, key in _LUDB_DEMOGRAPHICS.items() if row}
        refs.append(
            RecordRef(
                study_id=f"ludb-{hea.stem}",
                subject_id=None,
                path=str(hea.with_suffix("")),
                ecg_time=None,
                source="ludb",
                report=report,
                extra=extra,
            )
        )
    return _dedup(refs, "LUDB record")


_SCANNERS = {"wfdb": _scan_wfdb, "mimic": _scan_mimic, "ludb": _scan_ludb}
_MARKERS = (("record_list.csv", "mimic"), ("ludb.csv", "ludb"))


# ------------------------------------------------------------------------------------------------
# loading


def _header_path(path: Path) -> Path:
    return path.with_name(path.name + ".hea")


def _read_header(ref: RecordRef, wfdb: Any) -> Any:
    path = Path(ref.path)
    hea = _header_path(path)
    if not ref.path or not hea.is_file():
        raise DataError(
            f"record {ref.study_id!r}: header not found: {hea}",
            expected="a WFDB .hea file",
            found="no such file" if ref.path else "an in-memory record (empty path)",
            fix="check the path in record_list.csv / the scanned folder",
        )
    try:
        header = wfdb.rdheader(str(path))
    except Exception as exc:  # wfdb raises many types on malformed text
        raise DataError(
            f"record {ref.study_id!r}: unreadable WFDB header {hea}",
            expected="a WFDB header (record line, then one line per signal)",
            found=f"{type(exc).__name__}: {exc}",
            fix="repair or remove the header",
        ) from exc
    if not hasattr(header, "file_name") or not header.n_sig:
        raise DataError(
            f"record {ref.study_id!r}: {hea} is not a single-segment record with signals",
            expected="a single-segment WFDB record",
            found=f"{type(header).__name__} with n_sig={getattr(header, 'n_sig', None)}",
            fix="convert multi-segment records to single-segment ones first",
        )
    return header


def _check_signal_files(ref: RecordRef, header: Any, used: Sequence[int]) -> None:
    """Raise for a missing signal file, or one shorter than ``sig_len`` x channels x bytes.

    Only the files holding the ``used`` channels are checked.
    """
    folder = Path(ref.path).parent
    files: dict[str, list[int]] = {}
    for ch, name in enumerate(header.file_name):
        files.setdefault(name, []).append(ch)
    needed = {header.file_name[ch] for ch in used}
    for name, channels in files.items():
        if name not in needed:
            continue
        file = folder / name
        if not file.is_file():
            raise DataError(
                f"record {ref.study_id!r}: signal file missing: {file}",
                expected=f"{name} next to {_header_path(Path(ref.path)).name}",
                found="no such file",
                fix="restore the signal file or drop the record",
            )
        fmt = header.fmt[channels[0]]
        if header.sig_len is None or fmt not in _BYTES_PER_SAMPLE:
            continue
        per_frame = sum((header.samps_per_frame or [1] * header.n_sig)[ch] or 1 for ch in channels)
        offset = (header.byte_offset or [None] * header.n_sig)[channels[0]] or 0
        expected = offset + math.ceil(header.sig_len * per_frame * _BYTES_PER_SAMPLE[fmt])
        size = file.stat().st_size
        if size < expected:
            raise DataError(
                f"record {ref.study_id!r}: truncated signal file {file}",
                expected=f"{expected} bytes ({header.sig_len} samples x {per_frame} channel(s), "
                f"format {fmt})",
                found=f"{size} bytes",
                fix="re-download the record",
            )


def _select_leads(
    ref: RecordRef, names: Sequence[str], config: LoadConfig
) -> tuple[list[int], tuple[str, ...], dict[str, list[str]]]:
    """Columns of the standard leads, their canonical names, and the lead flags."""
    keep: list[int] = []
    canon: list[str] = []
    extra: list[str] = []
    for i, name in enumerate(names):
        lead = canonical_lead(name)
        if lead is None:
            extra.append(name)
        elif lead in canon:
            raise DataError(
                f"record {ref.study_id!r}: lead {lead} appears twice in {ref.path or 'memory'}",
                expected="each standard lead once",
                found=list(names),
                fix="rename or drop the duplicate signal",
            )
        else:
            keep.append(i)
            canon.append(lead)
    if len(canon) < config.require_leads:
        raise DataError(
            f"record {ref.study_id!r} ({ref.path or 'in memory'}) has {len(canon)} standard "
            f"lead(s), {config.require_leads} required; leads found: {', '.join(names)}",
            expected=f"at least {config.require_leads} of {', '.join(STANDARD_LEADS)}",
            found=list(names),
            fix="drop the record, or lower LoadConfig.require_leads",
        )
    flags = {
        "extra_leads": extra,
        "missing_leads": [lead for lead in STANDARD_LEADS if lead not in canon],
    }
    return keep, tuple(canon), flags


def _max_run(mask: np.ndarray) -> np.ndarray:
    """Longest run of True down each column of a ``(n, c)`` boolean array; ``(c,)`` int."""
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1]), dtype=np.int8)
    padded[1:-1] = mask
    out = np.zeros(mask.shape[1], dtype=np.int64)
    for j in range(mask.shape[1]):
        edges = np.flatnonzero(np.diff(padded[:, j]))
        if edges.size:
            out[j] = int(np.max(edges[1::2] - edges[0::2]))
    return out


def _digital_bounds(header: Any, ch: int) -> tuple[int, int, int | None]:
    """(lowest valid, highest, missing-sample code) of one channel's digital values."""
    lo, hi = _FORMAT_BOUNDS.get(header.fmt[ch], (None, None))
    res = (header.adc_res or [0] * header.n_sig)[ch] or 0
    zero = (header.adc_zero or [0] * header.n_sig)[ch] or 0
    if lo is None:  # unknown format: only the ADC resolution can tell
        bits = res or 16
        return zero - 2 ** (bits - 1), zero + 2 ** (bits - 1) - 1, None
    valid_lo, valid_hi = lo + 1, hi
    if res:
        valid_lo = max(valid_lo, zero - 2 ** (res - 1))
        valid_hi = min(valid_hi, zero + 2 ** (res - 1) - 1)
    return valid_lo, valid_hi, lo


def _to_mv(ref: RecordRef, header: Any, digital: np.ndarray, channels: list[int]) -> np.ndarray:
    """Physical values ``(d - baseline) / gain`` in mV, NaN where the sample is marked missing."""
    out = np.empty(digital.shape, dtype=np.float64)
    for j, ch in enumerate(channels):
        gain = float(header.adc_gain[ch])
        unit = (header.units[ch] or "mV").strip().lower()
        if gain <= 0 or unit not in _UNIT_TO_MV:
            raise DataError(
                f"record {ref.study_id!r}: signal {header.sig_name[ch]} is not calibrated "
                f"in volts (gain {gain}, units {header.units[ch]!r})",
                expected=f"a positive gain in adu per {sorted(_UNIT_TO_MV)}",
                found=f"gain {gain}, units {header.units[ch]!r}",
                fix="fix the header's gain/units",
            )
        col = (digital[:, j] - float(header.baseline[ch])) / gain * _UNIT_TO_MV[unit]
        nan_code = _digital_bounds(header, ch)[2]
        if nan_code is not None:
            col[digital[:, j] == nan_code] = np.nan
        out[:, j] = col
    return out


@reads_untrusted("a WFDB record (.hea header and its signal files)")
def load(ref: RecordRef, config: LoadConfig | None = None) -> EcgRecord:
    """Read one WFDB record into mV, keep its standard leads, flag quality problems, resample.

    Raises :class:`~clinfuse.core.errors.DataError` (naming the file) for a missing or unreadable
    header, a missing or truncated signal file, too few standard leads, or a rate other than
    ``target_fs`` when ``resample`` is False. Flagged records are returned, not dropped.

    Shape:
        Output ``signal``: ``(n, n_leads)`` float32 mV with
        ``n = ceil(sig_len * target_fs / fs)`` after resampling.
    """
    config = config or LoadConfig()
    wfdb = require("wfdb", "ecg")
    header = _read_header(ref, wfdb)
    keep, leads, flags = _select_leads(ref, header.sig_name, config)
    _check_signal_files(ref, header, keep)
    try:
        rec = wfdb.rdrecord(ref.path, physical=False, channels=keep)
    except Exception as exc:  # wfdb raises ValueError/IndexError/... for damaged files
        raise DataError(
            f"record {ref.study_id!r}: cannot read the signal of {ref.path}",
            expected="signal files matching the header",
            found=f"{type(exc).__name__}: {exc}",
            fix="re-download the record or drop it",
        ) from exc
    digital = np.asarray(rec.d_signal)  # channels = keep, in file order
    columns = list(range(len(keep)))
    signal = _to_mv(ref, rec, digital, columns)
    bounds = [_digital_bounds(rec, ch)[:2] for ch in columns]
    at_limit = np.stack(
        [(digital[:, j] == lo) | (digital[:, j] == hi) for j, (lo, hi) in enumerate(bounds)], 1
    )
    flags["saturated"] = [
        lead
        for lead, run in zip(leads, _max_run(at_limit), strict=True)
        if run >= config.saturation_run
    ]
    return _finish(ref, signal, float(rec.fs), leads, flags, config)


def standardise(record: EcgRecord, config: LoadConfig | None = None) -> EcgRecord:
    """Apply :func:`load`'s lead selection, flat check and resampling to an in-memory record.

    Used for records that do not come from WFDB files (simulated, GE XML). Saturation needs the
    digital codes and is only checked by :func:`load`.
    """
    config = config or LoadConfig()
    keep, leads, flags = _select_leads(record.ref, record.leads, config)
    for key, values in record.flags.items():
        flags[key] = sorted(set(flags.get(key, [])) | set(values))
    signal = np.asarray(record.signal, dtype=np.float64)[:, keep]
    return _finish(record.ref, signal, record.fs, leads, flags, config)


def _finish(
    ref: RecordRef,
    signal: np.ndarray,
    fs: float,
    leads: tuple[str, ...],
    flags: dict[str, list[str]],
    config: LoadConfig,
) -> EcgRecord:
    valid = ~np.isnan(signal)
    ptp = np.where(valid, signal, -np.inf).max(axis=0) - np.where(valid, signal, np.inf).min(axis=0)
    ptp = np.where(valid.any(axis=0), ptp, np.inf)  # an all-missing lead is flagged nan, not flat
    flags["flat"] = [lead for lead, p in zip(leads, ptp, strict=True) if p < config.flat_mv]
    flags["nan"] = [lead for lead, col in zip(leads, signal.T, strict=True) if np.isnan(col).any()]
    if config.target_fs is not None and not math.isclose(fs, config.target_fs):
        if not config.resample:
            raise DataError(
                f"record {ref.study_id!r} ({ref.path or 'in memory'}) is sampled at {fs:g} Hz, "
                f"not {config.target_fs:g} Hz",
                expected=f"{config.target_fs:g} Hz",
                found=f"{fs:g} Hz",
                fix="set LoadConfig.resample=True, or target_fs=None to keep the file's rate",
            )
        signal = _resample(signal, fs, config.target_fs)
        flags["resampled"] = [f"{fs:g} Hz -> {config.target_fs:g} Hz"]
        fs = float(config.target_fs)
    flags = {key: list(values) for key, values in flags.items() if values}
    for key, values in flags.items():
        if key != "resampled":
            logger.debug("record %s: %s %s", ref.study_id, key, values)
    return EcgRecord(
        ref=ref,
        signal=np.ascontiguousarray(signal, dtype=np.float32),
        fs=fs,
        leads=leads,
        flags=flags,
    )


def _resample(signal: np.ndarray, fs: float, target: float) -> np.ndarray:
    r"""Polyphase resampling by the exact rational ratio ``up/down = target/fs``.

    Output length is :math:`\lceil n \cdot up / down \rceil`; the edges are padded by a fitted line
    so a baseline offset does not ring at the ends.
    """
    from scipy.signal import resample_poly

    ratio = Fraction(target / fs).limit_denominator(10_000)
    if not math.isclose(ratio.numerator / ratio.denominator * fs, target, rel_tol=1e-9):
        raise DataError(
            f"cannot resample {fs:g} Hz to {target:g} Hz by a rational ratio",
            expected="rates whose ratio is a fraction with a denominator <= 10000",
            found=f"{fs} -> {target}",
            fix="choose another LoadConfig.target_fs",
        )
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=0, padtype="line")


# ------------------------------------------------------------------------------------------------
# writing the MIMIC-IV-ECG layout


def _mimic_ids(records: Sequence[EcgRecord]) -> list[tuple[str, str]]:
    """(subject_id, study_id) per record: numeric ids kept, others numbered 1000000x / 4000000x."""
    ids = []
    for i, rec in enumerate(records):
        study = rec.ref.study_id if rec.ref.study_id.isdigit() else str(40_000_001 + i)
        subject = rec.ref.subject_id or ""
        ids.append((subject if subject.isdigit() else str(10_000_001 + i), study))
    studies = [study for _, study in ids]
    if len(set(studies)) != len(studies):
        dup = sorted({s for s in studies if studies.count(s) > 1})
        raise DataError(
            "duplicate study ids in the records to write",
            expected="one record per study_id",
            found=dup,
            fix="give every record its own study_id",
        )
    return ids


def _csv_text(columns: Sequence[str], rows: Iterable[dict[str, object]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _format_machine(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return str(int(MIMIC_MISSING))
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_mimic_layout(records: list[EcgRecord], root: str | Path, machine: bool = True) -> Path:
    """Write records as a MIMIC-IV-ECG database: WFDB files + ``record_list.csv`` (+ machine CSV).

    Files go to ``root/files/p<first 4 digits of subject>/p<subject>/s<study>/<study>.{hea,dat}``
    (format 16, :data:`WRITE_GAIN` adu/mV, leads in the record's order). Numeric ``study_id`` /
    ``subject_id`` are kept; others are replaced by ``4000000<i+1>`` / ``1000000<i+1>`` in list
    order. With ``machine`` a ``machine_measurements.csv`` row is written per record (report
    lines, :data:`MACHINE_FIELDS`, NaN and absent values as 29999). Returns ``root``.
    """
    wfdb = require("wfdb", "ecg")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ids = _mimic_ids(records)
    listing, machine_rows = [], []
    for rec, (subject, study) in zip(records, ids, strict=True):
        signal = np.asarray(rec.signal, dtype=np.float64)
        limit = 32767 / WRITE_GAIN
        if np.nanmax(np.abs(signal), initial=0.0) > limit:
            raise DataError(
                f"record {rec.study_id!r}: values beyond +-{limit} mV cannot be written",
                expected=f"|signal| <= {limit} mV",
                found=f"max |signal| = {np.nanmax(np.abs(signal)):.3f} mV",
                fix="clip the signal first",
            )
        if len(rec.ref.report) > N_REPORT_COLUMNS:
            raise DataError(
                f"record {rec.study_id!r} has {len(rec.ref.report)} report lines",
                expected=f"at most {N_REPORT_COLUMNS} (report_0 … report_17)",
                found=len(rec.ref.report),
                fix="merge report lines",
            )
        rel = Path("files", f"p{subject[:4]}", f"p{subject}", f"s{study}", study)
        folder = root / rel.parent
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
        try:
            n = len(rec.leads)
            wfdb.wrsamp(
                study,
                fs=rec.fs,
                units=["mV"] * n,
                sig_name=list(rec.leads),
                p_signal=signal,
                fmt=["16"] * n,
                adc_gain=[WRITE_GAIN] * n,
                baseline=[0] * n,
                write_dir=str(tmp),
            )
            for ext in (".dat", ".hea"):  # header last: a record is visible only when complete
                os.replace(tmp / f"{study}{ext}", folder / f"{study}{ext}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        time = rec.ref.ecg_time or ""
        listing.append(
            {
                "subject_id": subject,
                "study_id": study,
                "file_name": study,
                "ecg_time": time,
                "path": rel.as_posix(),
            }
        )
        values = rec.ref.machine or {}
        row: dict[str, object] = {"subject_id": subject, "study_id": study, "ecg_time": time}
        row.update({col: rec.ref.extra.get(col, "") for col in _MACHINE_EXTRA})
        row.update({f"report_{i}": line for i, line in enumerate(rec.ref.report)})
        row.update({col: _format_machine(values.get(col)) for col in MACHINE_FIELDS})
        machine_rows.append(row)
    atomic_write_text(root / "record_list.csv", _csv_text(RECORD_LIST_COLUMNS, listing))
    if machine:
        atomic_write_text(
            root / "machine_measurements.csv", _csv_text(MACHINE_COLUMNS, machine_rows)
        )
    logger.info("wrote %d records in the MIMIC-IV-ECG layout under %s", len(records), root)
    return root
