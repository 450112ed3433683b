r"""MEETI beat-level ECG parameters: a NaN-safe beat x lead table and a record summary.

The paper extracts "beat-level quantitative ECG parameters from each lead" with the group's
FeatureDB, which is not available; this module rebuilds the spec of notes section 1.3 on
neurokit2 (an optional dependency, extra ``ecg``):

1. every lead is cleaned (``nk.ecg_clean``, optional);
2. R peaks are found once per record (``nk.ecg_peaks``), on one lead or as a multi-lead
   consensus, so that beat ``k`` is the same heartbeat in every lead;
3. every lead is delineated at those R peaks (``nk.ecg_delineate``, ``prominence`` by default,
   ``dwt`` as an option), giving per-lead P / QRS / T onsets, peaks and offsets;
4. durations, intervals and amplitudes follow from the fiducials; amplitudes are measured
   against the PR-segment baseline.

Measured accuracy against LUDB cardiologists and MIT-BIH reference beats is in
``benchmarks/results/meeti_ludb.md`` (``benchmarks/meeti_ludb.py``).

Definitions (``fs`` in Hz, fiducials in samples, :math:`x` the lead's signal in mV):

* durations :math:`P = p_{off} - p_{on}`, :math:`QRS = qrs_{off} - qrs_{on}`,
  :math:`T = t_{off} - t_{on}`, :math:`PR = qrs_{on} - p_{on}`, :math:`QT = t_{off} - qrs_{on}`,
  :math:`RR_k = R_{k+1} - R_k`, all times :math:`1000 / fs` ms;
* baseline :math:`b = \mathrm{median}\, x[p_{off} .. qrs_{on}]`, falling back to the
  ``baseline_fallback_ms`` before :math:`qrs_{on}` when the PR segment is missing or empty;
* amplitudes :math:`A_w = x[w_{peak}] - b`; Q and S are clipped at 0 from above and R at 0 from
  below (no Q wave is a Q amplitude of 0), :math:`J = x[qrs_{off}] - b`,
  :math:`ST_{J60} = x[qrs_{off} + 60\,ms] - b`.

Pitfalls handled (notes section 2.1): ``round(nan)`` is never called, a flat or all-NaN lead
gives NaN rows rather than an exception, and record intervals are medians across leads of
per-lead medians, never the cross-lead min(onset) / max(offset) that lets one bad lead inflate
the QRS.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from clinfuse.core.errors import ConfigError, DataError, require

log = logging.getLogger(__name__)

FIDUCIALS = (
    "p_on",
    "p_peak",
    "p_off",
    "qrs_on",
    "q_peak",
    "r_peak",
    "s_peak",
    "qrs_off",
    "t_on",
    "t_peak",
    "t_off",
)
"""Fiducial points, in samples from the start of the record (float, NaN when missing)."""
INTERVALS = ("p_ms", "qrs_ms", "t_ms", "pr_ms", "qt_ms", "rr_ms")
"""Durations and intervals in ms."""
AMPLITUDES = ("p_amp", "q_amp", "r_amp", "s_amp", "t_amp", "j_amp", "st_j60")
"""Amplitudes in mV against the PR-segment baseline."""
FLAGS = ("p_missing", "qrs_missing", "t_missing")
"""Missing-wave flags."""
COLUMNS = ("lead", "beat", *FIDUCIALS, *INTERVALS, *AMPLITUDES, *FLAGS)
"""The columns of :func:`delineate_record`'s table, in order."""
SUMMARY_KEYS = (
    "hr_bpm",
    "rr_ms",
    "p_ms",
    "pr_ms",
    "qrs_ms",
    "qt_ms",
    "qtc_bazett_ms",
    "qtc_fridericia_ms",
    "qtc_framingham_ms",
    "p_axis_deg",
    "qrs_axis_deg",
    "t_axis_deg",
    "sokolow_lyon_mv",
    "n_beats",
    "n_beats_with_p",
)
"""The keys of :func:`summarise_record`, in order."""
MEDIAN_COLUMNS = ("p_amp", "r_amp", "s_amp", "t_amp", "st_j60", "p_ms", "qrs_ms", "pr_ms", "qt_ms")
"""The columns of :func:`per_lead_medians`."""

# neurokit2's wave names for our fiducials (R peak, Q and S are measured per lead, below)
_NK_KEYS = {
    "p_on": "ECG_P_Onsets",
    "p_peak": "ECG_P_Peaks",
    "p_off": "ECG_P_Offsets",
    "qrs_on": "ECG_R_Onsets",
    "qrs_off": "ECG_R_Offsets",
    "t_on": "ECG_T_Onsets",
    "t_peak": "ECG_T_Peaks",
    "t_off": "ECG_T_Offsets",
}
# the points of each wave, in the order they must appear within one beat
_WAVES = {
    "p": ("p_on", "p_peak", "p_off"),
    "qrs": ("qrs_on", "qrs_off"),
    "t": ("t_on", "t_peak", "t_off"),
}
# standard lead names, looked up case-insensitively ("ii", "II" and "MLII" are lead II)
_CANONICAL = {
    name.lower(): name
    for name in ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
}
_CANONICAL["mlii"] = "II"

Method = Literal["prominence", "dwt"]
CleanMethod = Literal[
    "neurokit", "biosppy", "pantompkins1985", "hamilton2002", "elgendi2010", "engzeemod2012"
]
PeakMethod = Literal[
    "neurokit", "pantompkins1985", "hamilton2002", "elgendi2010", "engzeemod2012", "rodrigues2021"
]


@dataclass(frozen=True)
class ParamsConfig:
    """How the beat x lead table is measured (defaults chosen on LUDB 1-40 and MIT-BIH 100)."""

    method: Method = "prominence"
    """neurokit2 delineator: ``prominence`` (Emrich 2024, fast, best on LUDB) or ``dwt``."""
    rpeak_mode: Literal["lead", "consensus"] = "lead"
    """R peaks from ``rpeak_lead`` alone, or the multi-lead consensus (peaks found in at least
    ``consensus_fraction`` of the usable leads within ``consensus_tolerance_ms``)."""
    rpeak_lead: str = "II"
    """Lead whose R peaks time the beats (case-insensitive; ``MLII`` counts as II). When it is
    absent or flat the consensus is used instead."""
    rpeak_method: PeakMethod = "neurokit"
    """``nk.ecg_peaks`` detector."""
    consensus_fraction: float = 0.5
    """Share of the usable leads that must see a beat for the consensus to keep it."""
    consensus_tolerance_ms: float = 100.0
    """Peaks of different leads closer than this are the same beat."""
    clean: bool = True
    """Clean each lead with ``nk.ecg_clean`` before detection and delineation."""
    clean_method: CleanMethod = "neurokit"
    """``nk.ecg_clean`` method (``neurokit``: 0.5 Hz high-pass + powerline notch)."""
    amplitudes_on: Literal["raw", "clean"] = "raw"
    """Signal amplitudes are read from: the raw input (keeps the ST level undistorted by the
    high-pass) or the cleaned signal."""
    st_offset_ms: float = 60.0
    """ST level is read this long after the J point (``st_j60``)."""
    baseline_fallback_ms: float = 30.0
    """Baseline window before QRS onset when the PR segment is missing or empty."""
    qrs_window_ms: float = 60.0
    """Half-width of the search window around the beat's R peak for per-lead R/Q/S when the
    QRS onset or offset is missing."""
    min_p_amp_mv: float = 0.0
    """A P wave smaller than this (absolute, mV) counts as missing; 0 keeps every P found."""
    flat_tolerance_mv: float = 1e-6
    """A lead whose peak-to-peak range is below this is flat and gives NaN rows."""


# --------------------------------------------------------------------------------------------
# helpers


def _canonical(lead: str) -> str:
    return _CANONICAL.get(lead.strip().lower(), lead.strip())


def _lead_index(leads: Sequence[str], name: str) -> int | None:
    want = _canonical(name)
    for i, lead in enumerate(leads):
        if _canonical(lead) == want:
            return i
    return None


def _check_input(signal: np.ndarray, fs: float, leads: Sequence[str]) -> np.ndarray:
    x = np.asarray(signal, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != len(leads):
        raise DataError(
            "signal does not match the lead names",
            expected=f"an array (n_samples, n_leads={len(leads)}) for leads {list(leads)}",
            found=f"shape {np.shape(signal)}",
            fix="pass the signal as samples x leads (transpose a leads x samples array)",
        )
    if not (math.isfinite(fs) and fs > 0):
        raise DataError(
            "bad sampling rate", expected="fs > 0 in Hz", found=fs, fix="read fs from the header"
        )
    if len(set(leads)) != len(leads):
        raise DataError(
            "duplicate lead names",
            expected="one column per lead",
            found=list(leads),
            fix="rename or drop the duplicated leads",
        )
    return x


def _usable(x: np.ndarray, cfg: ParamsConfig) -> np.ndarray:
    """Fill short NaN gaps by linear interpolation; an all-NaN or flat lead is unusable."""
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return np.array([])
    if not ok.all():
        idx = np.arange(len(x))
        x = np.interp(idx, idx[ok], x[ok])
    if np.ptp(x) < cfg.flat_tolerance_mv:
        return np.array([])
    return x


def _clean(x: np.ndarray, fs: float, cfg: ParamsConfig) -> np.ndarray:
    if not cfg.clean:
        return x
    nk = require("neurokit2", "ecg")
    return np.asarray(nk.ecg_clean(x, sampling_rate=fs, method=cfg.clean_method), dtype=float)


def _peaks(x: np.ndarray, fs: float, cfg: ParamsConfig) -> np.ndarray:
    nk = require("neurokit2", "ecg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, info = nk.ecg_peaks(x, sampling_rate=fs, method=cfg.rpeak_method)
        except (ValueError, IndexError) as exc:  # too few beats for the detector
            log.debug("no R peaks: %s", exc)
            return np.array([], dtype=int)
    return np.unique(np.asarray(info["ECG_R_Peaks"], dtype=int))


def _consensus(
    per_lead: dict[int, np.ndarray], prefer: int | None, fs: float, cfg: ParamsConfig
) -> np.ndarray:
    """Beats seen by enough leads: greedy clusters of pooled peaks, timed by the preferred lead.

    A cluster opens at its earliest peak and takes every later peak within the tolerance; its
    time is the preferred lead's peak when that lead is in it, else the median.
    """
    if not per_lead:
        return np.array([], dtype=int)
    pooled = sorted((int(p), lead) for lead, ps in per_lead.items() for p in ps)
    tol = cfg.consensus_tolerance_ms * fs / 1000.0
    need = max(1, math.ceil(cfg.consensus_fraction * len(per_lead)))
    beats: list[int] = []
    i = 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j][0] - pooled[i][0] <= tol:
            j += 1
        members = pooled[i:j]
        by_lead = {lead: p for p, lead in reversed(members)}  # first peak of each lead
        if len(by_lead) >= need:
            at = by_lead.get(prefer) if prefer is not None else None
            beats.append(int(at if at is not None else np.median(list(by_lead.values()))))
        i = j
    return np.asarray(beats, dtype=int)


def _rpeaks(
    cleaned: dict[int, np.ndarray], leads: Sequence[str], fs: float, cfg: ParamsConfig
) -> np.ndarray:
    ref = _lead_index(leads, cfg.rpeak_lead)
    if cfg.rpeak_mode == "lead" and ref is not None and ref in cleaned:
        return _peaks(cleaned[ref], fs, cfg)
    if cfg.rpeak_mode == "lead":
        log.warning(
            "R-peak lead %r is %s; using the multi-lead consensus",
            cfg.rpeak_lead,
            "absent" if ref is None else "flat or empty",
        )
    per_lead = {i: _peaks(x, fs, cfg) for i, x in cleaned.items()}
    return _consensus(per_lead, ref, fs, cfg)


def _nk_delineate(x: np.ndarray, rpeaks: np.ndarray, fs: float, method: Method) -> dict:
    """neurokit2 fiducials aligned with ``rpeaks`` (one float per beat, NaN when missing).

    ``nk.ecg_delineate`` drops points at sample <= 0, which would shift the lists against the
    beats; padding both ends with the edge values keeps every point positive.
    """
    nk = require("neurokit2", "ecg")
    n = len(rpeaks)
    out = {key: np.full(n, np.nan) for key in _NK_KEYS}
    if n < 2:  # both delineators need an RR interval
        return out
    pad = int(2 * fs)
    xp = np.pad(x, pad, mode="edge")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, waves = nk.ecg_delineate(xp, rpeaks + pad, sampling_rate=fs, method=method)
        except (ValueError, IndexError, ZeroDivisionError) as exc:
            log.debug("delineation failed: %s", exc)
            return out
    for key, nk_key in _NK_KEYS.items():
        values = np.asarray(waves.get(nk_key, []), dtype=float)
        if len(values) != n:
            log.debug("%s: %d points for %d beats; dropped", nk_key, len(values), n)
            continue
        values = values - pad
        values[(values < 0) | (values >= len(x))] = np.nan
        out[key] = values
    return out


def _order_waves(f: dict[str, np.ndarray], rpeaks: np.ndarray) -> None:
    """Blank a wave whose points are out of order or on the wrong side of its beat's R peak."""
    nan = np.nan
    for points in _WAVES.values():
        vals = np.stack([f[p] for p in points])  # (n_points, n_beats)
        with np.errstate(invalid="ignore"):
            bad = (np.diff(vals, axis=0) < 0).any(axis=0)
        for p in points:
            f[p][bad] = nan
    with np.errstate(invalid="ignore"):
        f["p_off"][f["p_off"] > rpeaks] = nan
        f["p_peak"][f["p_peak"] > rpeaks] = nan
        f["p_on"][f["p_on"] > rpeaks] = nan
        f["qrs_on"][f["qrs_on"] > rpeaks] = nan
        f["qrs_off"][f["qrs_off"] < rpeaks] = nan
        for p in _WAVES["t"]:
            f[p][f[p] < rpeaks] = nan


def _at(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x[idx]`` with NaN for a NaN or out-of-range index."""
    out = np.full(len(idx), np.nan)
    ok = np.isfinite(idx)
    ok[ok] = (idx[ok] >= 0) & (idx[ok] < len(x))
    out[ok] = x[idx[ok].astype(int)]
    return out


def _qrs_points(
    amp: np.ndarray, f: dict[str, np.ndarray], rpeaks: np.ndarray, fs: float, cfg: ParamsConfig
) -> dict[str, np.ndarray]:
    """This lead's R (maximum), Q (minimum before R) and S (minimum after R) within its QRS."""
    half = int(round(cfg.qrs_window_ms * fs / 1000.0))
    n = len(rpeaks)
    out = {k: np.full(n, np.nan) for k in ("q_peak", "r_peak", "s_peak")}
    for k in range(n):
        on, off = f["qrs_on"][k], f["qrs_off"][k]
        lo = int(on) if np.isfinite(on) else rpeaks[k] - half
        hi = int(off) if np.isfinite(off) else rpeaks[k] + half
        lo, hi = max(lo, 0), min(hi, len(amp) - 1)
        if hi <= lo:
            continue
        r = lo + int(np.argmax(amp[lo : hi + 1]))
        out["r_peak"][k] = r
        out["q_peak"][k] = lo + int(np.argmin(amp[lo : r + 1]))
        out["s_peak"][k] = r + int(np.argmin(amp[r : hi + 1]))
    return out


def _baseline(amp: np.ndarray, f: dict[str, np.ndarray], fs: float, cfg: ParamsConfig) -> np.ndarray:
    fallback = max(1, int(round(cfg.baseline_fallback_ms * fs / 1000.0)))
    n = len(f["qrs_on"])
    out = np.full(n, np.nan)
    for k in range(n):
        on, p_off = f["qrs_on"][k], f["p_off"][k]
        if not np.isfinite(on):
            continue
        end = int(on)
        start = int(p_off) if np.isfinite(p_off) and p_off < on else end - fallback
        seg = amp[max(start, 0) : end + 1]
        if seg.size:
            out[k] = float(np.median(seg))
    return out


def _nan_rows(lead: str, n_beats: int) -> dict[str, Any]:
    nan = np.full(n_beats, np.nan)
    row: dict[str, Any] = {"lead": [lead] * n_beats, "beat": np.arange(n_beats)}
    row.update({c: nan.copy() for c in (*FIDUCIALS, *INTERVALS, *AMPLITUDES)})
    row.update({c: np.ones(n_beats, dtype=bool) for c in FLAGS})
    return row


def _lead_rows(
    lead: str,
    clean: np.ndarray,
    raw: np.ndarray,
    rpeaks: np.ndarray,
    fs: float,
    cfg: ParamsConfig,
) -> dict[str, Any]:
    n = len(rpeaks)
    ms = 1000.0 / fs
    f = _nk_delineate(clean, rpeaks, fs, cfg.method)
    _order_waves(f, rpeaks)
    amp = raw if cfg.amplitudes_on == "raw" else clean
    f.update(_qrs_points(amp, f, rpeaks, fs, cfg))
    base = _baseline(amp, f, fs, cfg)
    p_amp = _at(amp, f["p_peak"]) - base
    with np.errstate(invalid="ignore"):
        small_p = np.abs(p_amp) < cfg.min_p_amp_mv
    for p in _WAVES["p"]:
        f[p][small_p] = np.nan
    p_amp[small_p] = np.nan
    rr = np.append(np.diff(rpeaks).astype(float), np.nan)
    st = f["qrs_off"] + round(cfg.st_offset_ms * fs / 1000.0)
    row: dict[str, Any] = {"lead": [lead] * n, "beat": np.arange(n)}
    row.update({k: f[k].astype(float) for k in FIDUCIALS})
    row.update(
        p_ms=(f["p_off"] - f["p_on"]) * ms,
        qrs_ms=(f["qrs_off"] - f["qrs_on"]) * ms,
        t_ms=(f["t_off"] - f["t_on"]) * ms,
        pr_ms=(f["qrs_on"] - f["p_on"]) * ms,
        qt_ms=(f["t_off"] - f["qrs_on"]) * ms,
        rr_ms=rr * ms,
        p_amp=p_amp,
        q_amp=np.fmin(_at(amp, f["q_peak"]) - base, 0.0),
        r_amp=np.fmax(_at(amp, f["r_peak"]) - base, 0.0),
        s_amp=np.fmin(_at(amp, f["s_peak"]) - base, 0.0),
        t_amp=_at(amp, f["t_peak"]) - base,
        j_amp=_at(amp, f["qrs_off"]) - base,
        st_j60=_at(amp, st) - base,
        p_missing=~np.isfinite(f["p_peak"]),
        qrs_missing=~(np.isfinite(f["qrs_on"]) & np.isfinite(f["qrs_off"])),
        t_missing=~np.isfinite(f["t_peak"]),
    )
    # fmin/fmax return the other operand where one is NaN: keep NaN where the base is NaN
    for key in ("q_amp", "r_amp", "s_amp"):
        row[key][~np.isfinite(base)] = np.nan
    return row


def _empty_table() -> pd.DataFrame:
    return _frame([_nan_rows("", 0)])


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.concat([pd.DataFrame(r) for r in rows], ignore_index=True)
    table = table.astype(
        {
            "lead": str,
            "beat": int,
            **dict.fromkeys((*FIDUCIALS, *INTERVALS, *AMPLITUDES), float),
            **dict.fromkeys(FLAGS, bool),
        }
    )
    return table.loc[:, list(COLUMNS)]


# --------------------------------------------------------------------------------------------
# public API


def detect_rpeaks(
    signal: np.ndarray,
    fs: float,
    leads: Sequence[str],
    config: ParamsConfig | None = None,
) -> np.ndarray:
    """The record's beats: R-peak samples as :func:`delineate_record` times them.

    Shape:
        signal: ``(n_samples, n_leads)`` in mV. Output: ``(n_beats,)`` int, increasing.
    """
    cfg = config or ParamsConfig()
    x = _check_input(signal, fs, leads)
    cleaned = {}
    for j in range(x.shape[1]):
        u = _usable(x[:, j], cfg)
        if u.size:
            cleaned[j] = _clean(u, fs, cfg)
    return _rpeaks(cleaned, leads, fs, cfg)


def delineate_record(
    signal: np.ndarray,
    fs: float,
    leads: Sequence[str],
    config: ParamsConfig | None = None,
) -> pd.DataFrame:
    """The beat x lead table of one record: fiducials, intervals, amplitudes and flags.

    Beats are timed once per record (:func:`detect_rpeaks`), so beat ``k`` is the same heartbeat
    in every lead; each lead is then delineated at those beats. A flat or all-NaN lead keeps its
    rows, all NaN with every wave flagged missing; a record with no beat gives an empty table.

    Shape:
        signal: ``(n_samples, n_leads)`` float in mV (NaN allowed). Output: ``n_leads * n_beats``
        rows, lead-major, with the :data:`COLUMNS` (fiducials in samples, intervals in ms,
        amplitudes in mV, flags bool).

    Raises:
        DataError: the signal's shape does not match ``leads``, a bad ``fs``, duplicate leads.

    Example:
        >>> table = delineate_record(np.zeros((5000, 2)), 500.0, ["I", "II"])
        >>> len(table), tuple(table.columns) == COLUMNS
        (0, True)
    """
    cfg = config or ParamsConfig()
    x = _check_input(signal, fs, leads)
    raw: dict[int, np.ndarray] = {}
    cleaned: dict[int, np.ndarray] = {}
    for j, lead in enumerate(leads):
        u = _usable(x[:, j], cfg)
        if u.size:
            raw[j], cleaned[j] = u, _clean(u, fs, cfg)
        else:
            log.debug("lead %s is flat or empty: NaN rows", lead)
    rpeaks = _rpeaks(cleaned, leads, fs, cfg)
    if len(rpeaks) == 0:
        return _empty_table()
    rows = [
        _lead_rows(lead, cleaned[j], raw[j], rpeaks, fs, cfg)
        if j in cleaned
        else _nan_rows(lead, len(rpeaks))
        for j, lead in enumerate(leads)
    ]
    return _frame(rows)


def per_lead_medians(beats: pd.DataFrame) -> pd.DataFrame:
    """Median over beats of each lead's amplitudes and intervals (NaN-skipping).

    Shape:
        beats: the table of :func:`delineate_record`. Output: one row per lead (index ``lead``,
        in first-seen order), columns :data:`MEDIAN_COLUMNS`; an all-NaN lead gives NaN.
    """
    if beats.empty:
        return pd.DataFrame(columns=list(MEDIAN_COLUMNS), index=pd.Index([], name="lead"))
    return beats.groupby("lead", sort=False)[list(MEDIAN_COLUMNS)].median()


def _nanmedian(values: Any) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def _frontal(net: dict[str, float]) -> tuple[float, float]:
    """(I, aVF) from whichever limb leads are present (Einthoven/Goldberger identities)."""

    def get(name: str) -> float:
        return net.get(name, math.nan)

    lead_i, avf = get("I"), get("aVF")
    lead_ii, lead_iii = get("II"), get("III")
    if not math.isfinite(lead_i):
        lead_i = lead_ii - lead_iii  # I = II - III
    if not math.isfinite(avf):
        avf = (lead_ii + lead_iii) / 2.0  # aVF = (II + III) / 2
        if not math.isfinite(avf):
            avf = lead_ii - lead_i / 2.0  # aVF = II - I / 2
    return lead_i, avf


def frontal_axis(lead_i: float, lead_avf: float) -> float:
    r"""Frontal-plane axis in degrees from net deflections in I and aVF.

    :math:`\theta = \operatorname{atan2}(aVF, I)` in :math:`(-180, 180]`; NaN when either is NaN
    or both are 0.

    Example:
        >>> round(frontal_axis(1.0, 1.0), 1), frontal_axis(0.0, 0.0)
        (45.0, nan)
    """
    if not (math.isfinite(lead_i) and math.isfinite(lead_avf)) or (lead_i == 0 and lead_avf == 0):
        return math.nan
    deg = math.degrees(math.atan2(lead_avf, lead_i))
    return 180.0 if deg == -180.0 else deg


def qtc(qt_ms: float, rr_ms: float) -> dict[str, float]:
    r"""Heart-rate-corrected QT in ms (RR in seconds, :math:`RR_s = RR_{ms} / 1000`).

    Bazett :math:`QT / \sqrt{RR_s}`, Fridericia :math:`QT / RR_s^{1/3}`,
    Framingham :math:`QT + 154\,(1 - RR_s)`.

    Example:
        >>> {k: round(v) for k, v in qtc(400.0, 1000.0).items()}
        {'qtc_bazett_ms': 400, 'qtc_fridericia_ms': 400, 'qtc_framingham_ms': 400}
    """
    rr_s = rr_ms / 1000.0
    if not (math.isfinite(qt_ms) and math.isfinite(rr_s) and rr_s > 0):
        return dict.fromkeys(("qtc_bazett_ms", "qtc_fridericia_ms", "qtc_framingham_ms"), math.nan)
    return {
        "qtc_bazett_ms": qt_ms / math.sqrt(rr_s),
        "qtc_fridericia_ms": qt_ms / rr_s ** (1.0 / 3.0),
        "qtc_framingham_ms": qt_ms + 154.0 * (1.0 - rr_s),
    }


def summarise_record(beats: pd.DataFrame, leads: Sequence[str], fs: float) -> dict[str, float]:
    r"""Record-level parameters from the beat x lead table.

    * ``rr_ms``: median RR over beats; ``hr_bpm`` = :math:`60000 / RR`;
    * ``p_ms, pr_ms, qrs_ms, qt_ms``: per-lead medians, then the median across leads;
    * QTc by Bazett, Fridericia and Framingham (:func:`qtc`) from those QT and RR;
    * P / QRS / T frontal axes (:func:`frontal_axis`) from per-lead median net amplitudes in I and
      aVF (P and T: the signed peak amplitude; QRS: :math:`R + Q + S` with Q, S :math:`\le 0`);
      missing I or aVF are derived from II and III;
    * ``sokolow_lyon_mv``: :math:`|S(V1)| + \max(R(V5), R(V6))` from per-lead medians;
    * ``n_beats``; ``n_beats_with_p``: beats with a P wave in at least half the measured leads.

    ``fs`` is kept for callers that pass sample-based tables; every value here is already in ms
    or mV. Every value is a float (NaN when it cannot be measured); ``round`` is never applied.

    Shape:
        beats: the table of :func:`delineate_record`. Output: a dict with :data:`SUMMARY_KEYS`.
    """
    out = dict.fromkeys(SUMMARY_KEYS, math.nan)
    if beats.empty:
        out.update(n_beats=0.0, n_beats_with_p=0.0)
        return out
    first = beats.drop_duplicates("beat").sort_values("beat")
    out["rr_ms"] = _nanmedian(first["rr_ms"])
    out["hr_bpm"] = 60000.0 / out["rr_ms"] if out["rr_ms"] > 0 else math.nan
    med = per_lead_medians(beats)
    for key in ("p_ms", "pr_ms", "qrs_ms", "qt_ms"):
        out[key] = _nanmedian(med[key])
    out.update(qtc(out["qt_ms"], out["rr_ms"]))

    net = beats.assign(qrs_net=beats["r_amp"] + beats["q_amp"] + beats["s_amp"])
    by_lead = net.groupby("lead", sort=False)[["p_amp", "qrs_net", "t_amp", "r_amp", "s_amp"]]
    lead_med = by_lead.median()
    lead_med.index = [_canonical(str(lead)) for lead in lead_med.index]
    for wave, col in (("p", "p_amp"), ("qrs", "qrs_net"), ("t", "t_amp")):
        out[f"{wave}_axis_deg"] = frontal_axis(*_frontal(lead_med[col].to_dict()))

    r = lead_med["r_amp"].to_dict()
    s_v1 = -lead_med["s_amp"].to_dict().get("V1", math.nan)
    r_v56 = _nanmedian([])
    r56 = [r.get("V5", math.nan), r.get("V6", math.nan)]
    if any(math.isfinite(v) for v in r56):
        r_v56 = max(v for v in r56 if math.isfinite(v))
    out["sokolow_lyon_mv"] = s_v1 + r_v56

    measured = beats[~beats[["qrs_on", "qrs_off", "r_peak"]].isna().all(axis=1)]
    out["n_beats"] = float(beats["beat"].nunique())
    if not measured.empty:
        share_p = (~measured["p_missing"]).groupby(measured["beat"]).mean()
        out["n_beats_with_p"] = float((share_p >= 0.5).sum())
    else:
        out["n_beats_with_p"] = 0.0
    return out


SUMMARIES: dict[str, Callable[..., Any]] = {"summary": summarise_record, "medians": per_lead_medians}
"""The record-level views of a beat table, by name."""


def _validate(config: ParamsConfig) -> None:
    if not 0 < config.consensus_fraction <= 1:
        raise ConfigError(
            "consensus_fraction out of range",
            expected="0 < consensus_fraction <= 1",
            found=config.consensus_fraction,
            fix="set a share of the leads, e.g. 0.5",
        )
