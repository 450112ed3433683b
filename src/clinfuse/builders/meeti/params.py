r"""MEETI beat-level ECG parameters: a NaN-safe beat x lead table and a record summary.

The paper (arXiv 2507.15255) extracts "beat-level quantitative ECG parameters from each lead"
with the group's FeatureDB, which is not public, and its available text (abstract and first
page) does not list the parameters. The beat x lead table and record summary below are our own
design [inferred], built on neurokit2 (an optional dependency, extra ``ecg``):

1. every lead is cleaned (``nk.ecg_clean``, optional);
2. beats are timed once per record, so that beat ``k`` is the same heartbeat in every lead: by
   default a vote over the R peaks ``nk.ecg_peaks`` finds in each lead (a lead whose QRS is
   nearly isoelectric, e.g. II at a -30 degree axis, cannot drop beats), timed by lead II;
3. every lead is delineated at those beats with ``nk.ecg_delineate`` (``prominence`` by
   default, ``dwt`` as an option), both ways up: the QRS from the orientation of the lead's
   dominant deflection, P and T each from the orientation where they stand out (aVR, V1);
4. the QRS onset / offset, which the delineator puts on the Q / S nadirs, are moved out to the
   end of the steep QRS slopes;
5. a lead's point that is missing or more than 40 ms from the median of the same point over
   the leads is replaced by that median (the cardiologists' marks of one beat agree across
   leads to about 10-30 ms);
6. durations, intervals and amplitudes follow from the fiducials; amplitudes are measured
   against the PR-segment baseline of the raw signal.

Steps 2-5 are what lift neurokit2's plain prominence delineator (LUDB 1-40, all leads: P onset
within 40 ms of the cardiologists 0.81, QRS offset 0.76) to 0.92 and 0.97, above the targets
that ``benchmarks/meeti_ludb.py`` checks (0.90 each); ``benchmarks/results/meeti_ludb.md`` has
the numbers per lead and option.

Definitions (``fs`` in Hz, fiducials in samples, :math:`x` the lead's signal in mV):

* durations :math:`P = p_{off} - p_{on}`, :math:`QRS = qrs_{off} - qrs_{on}`,
  :math:`T = t_{off} - t_{on}`, :math:`PR = qrs_{on} - p_{on}`, :math:`QT = t_{off} - qrs_{on}`,
  :math:`RR_k = R_{k+1} - R_k`, all times :math:`1000 / fs` ms;
* baseline :math:`b = \mathrm{median}\, x[p_{off} .. qrs_{on}]`, falling back to the
  ``baseline_fallback_ms`` before :math:`qrs_{on}` when the PR segment is missing or empty;
* amplitudes :math:`A_w = x[w_{peak}] - b`; Q and S are clipped at 0 from above and R at 0 from
  below (no Q wave is a Q amplitude of 0), :math:`J = x[qrs_{off}] - b`,
  :math:`ST_{J60} = x[qrs_{off} + 60\,ms] - b`.

Pitfalls handled: ``round(nan)`` is never called, a flat or all-NaN lead gives NaN rows rather
than an exception, and record intervals are medians across leads of per-lead medians, never
the cross-lead min(onset) / max(offset) that lets one bad lead inflate the QRS.
"""

from __future__ import annotations

import bisect
import logging
import math
import warnings
from collections.abc import Sequence
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
    """How the beat x lead table is measured.

    The defaults were chosen on LUDB records 1-40 and MIT-BIH 100 (``benchmarks/meeti_ludb.py``
    sweeps the alternatives; the same records score them, so there is no held-out set).
    """

    method: Method = "prominence"
    """neurokit2 delineator: ``prominence`` (Emrich 2024; fast, best on LUDB) or ``dwt``."""
    rpeak_mode: Literal["lead", "consensus"] = "consensus"
    """Time the beats by the R peaks of ``rpeak_lead`` alone, or by the multi-lead consensus
    (peaks seen in at least ``consensus_fraction`` of the usable leads)."""
    rpeak_lead: str = "II"
    """Lead whose R peaks time the beats, case-insensitive (``MLII`` counts as II); when it is
    absent, flat or all NaN the consensus is used instead."""
    rpeak_method: PeakMethod = "neurokit"
    """``nk.ecg_peaks`` detector."""
    consensus_fraction: float = 0.5
    """Share of the usable leads that must see a beat for the consensus to keep it."""
    consensus_tolerance_ms: float = 100.0
    """Peaks of different leads closer than this are the same beat."""
    clean: bool = True
    """Clean each lead with ``nk.ecg_clean`` before detection and delineation."""
    clean_method: CleanMethod = "neurokit"
    """``nk.ecg_clean`` method (``neurokit``: 0.5 Hz high-pass and a powerline notch)."""
    polarity: Literal["auto", "as_is"] = "auto"
    """``auto``: the prominence delineator looks for positive peaks, so each lead is delineated
    both ways up; its QRS points come from the orientation of its dominant QRS deflection and
    its P and T points each from the orientation where that wave stands out more (aVR, V1)."""
    align_ms: float = 40.0
    """Before delineating a lead (in each orientation), each beat's R peak is moved to the
    lead's maximum within this distance (0: delineate at the R-peak lead's peaks)."""
    qrs_refine_frac: float = 0.1
    """The delineator puts QRS onset / offset at the R wave's bases, often the Q and S nadirs;
    they are moved outwards to where the lead's slope falls below this share of its steepest
    QRS slope (0: keep the delineator's points)."""
    qrs_refine_ms: float = 60.0
    """Farthest the QRS onset / offset refinement moves a point."""
    cross_lead: Literal["repair", "none"] = "repair"
    """``repair``: a lead's point that is missing, or farther than ``cross_lead_max_dev_ms`` from
    the median of the beat's point over the leads, is replaced by that median (when at least
    ``cross_lead_min_leads`` leads have the point); ``none``: each lead keeps its own points."""
    cross_lead_max_dev_ms: float = 40.0
    """Largest accepted deviation of a lead's point from the cross-lead median."""
    cross_lead_min_leads: int = 3
    """Fewest leads with a point for its cross-lead median to be used."""
    amplitudes_on: Literal["raw", "clean"] = "raw"
    """Read amplitudes from the raw input (the high-pass of cleaning bends the ST level) or from
    the cleaned signal."""
    st_offset_ms: float = 60.0
    """ST level is read this long after the J point (``st_j60``)."""
    baseline_fallback_ms: float = 30.0
    """Baseline window before the QRS onset when the PR segment is missing or empty."""
    qrs_window_ms: float = 60.0
    """Half-width, around the beat's R peak, of the windows for the QRS slope and for a lead's
    R / Q / S when its QRS onset or offset is missing."""
    qs_max_r_mv: float = 0.05
    """A QRS whose highest point stays below this above the baseline is a QS complex, reported
    as an S wave (``q_amp`` and ``r_amp`` 0, ``q_peak`` and ``r_peak`` NaN)."""
    flat_tolerance_mv: float = 1e-6
    """A lead whose peak-to-peak range is below this is flat and gives NaN rows."""

    def __post_init__(self) -> None:
        checks = {
            "consensus_fraction": 0 < self.consensus_fraction <= 1,
            "consensus_tolerance_ms": self.consensus_tolerance_ms > 0,
            "qrs_refine_frac": 0 <= self.qrs_refine_frac < 1,
            "qrs_refine_ms": self.qrs_refine_ms >= 0,
            "align_ms": self.align_ms >= 0,
            "cross_lead_max_dev_ms": self.cross_lead_max_dev_ms >= 0,
            "cross_lead_min_leads": self.cross_lead_min_leads >= 1,
            "st_offset_ms": self.st_offset_ms >= 0,
            "baseline_fallback_ms": self.baseline_fallback_ms > 0,
            "qrs_window_ms": self.qrs_window_ms > 0,
            "flat_tolerance_mv": self.flat_tolerance_mv >= 0,
            "qs_max_r_mv": self.qs_max_r_mv >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                "ParamsConfig values out of range",
                expected="0 < consensus_fraction <= 1, 0 <= qrs_refine_frac < 1, positive windows",
                found={name: getattr(self, name) for name in bad},
                fix="use the defaults of ParamsConfig or values in the stated ranges",
            )


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
    """Beats seen by enough leads, by votes over the pooled peaks of all leads.

    Each pooled peak proposes a beat whose members are the peaks within half the tolerance of
    it, one per lead; proposals are taken by decreasing number of leads, skipping any within
    twice the tolerance of a beat already taken, while they have ``consensus_fraction`` of the
    leads. A beat is timed by the preferred lead's member when it has one, else by the median.
    """
    if not per_lead:
        return np.array([], dtype=int)
    peaks = np.concatenate([np.asarray(p, dtype=int) for p in per_lead.values()])
    owner = np.concatenate([np.full(len(p), j) for j, p in per_lead.items()])
    order = np.argsort(peaks, kind="stable")
    peaks, owner = peaks[order], owner[order]
    half = cfg.consensus_tolerance_ms * fs / 2000.0
    need = max(1, math.ceil(cfg.consensus_fraction * len(per_lead)))
    lo = np.searchsorted(peaks, peaks - half, side="left")
    hi = np.searchsorted(peaks, peaks + half, side="right")
    votes = np.array([len(set(owner[a:b].tolist())) for a, b in zip(lo, hi, strict=True)])
    gap = 4 * half
    taken: list[int] = []  # proposals taken, sorted
    beats: list[int] = []
    for i in np.argsort(-votes, kind="stable"):
        if votes[i] < need:
            break
        at_ = bisect.bisect_left(taken, int(peaks[i]))
        near = taken[max(at_ - 1, 0) : at_ + 1]
        if any(abs(int(peaks[i]) - t) <= gap for t in near):
            continue
        bisect.insort(taken, int(peaks[i]))
        members: dict[int, int] = {}
        for k in range(lo[i], hi[i]):  # the member of each lead nearest the proposal
            lead, p = int(owner[k]), int(peaks[k])
            if lead not in members or abs(p - peaks[i]) < abs(members[lead] - peaks[i]):
                members[lead] = p
        at = members.get(prefer) if prefer is not None else None
        beats.append(int(at if at is not None else np.median(list(members.values()))))
    return np.unique(np.asarray(beats, dtype=int))


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
    amp: np.ndarray,
    f: dict[str, np.ndarray],
    base: np.ndarray,
    rpeaks: np.ndarray,
    fs: float,
    cfg: ParamsConfig,
) -> dict[str, np.ndarray]:
    """This lead's R (maximum), Q (minimum before R) and S (minimum after R) within its QRS.

    A complex whose maximum stays below ``qs_max_r_mv`` above the baseline is a QS complex: its
    one negative deflection is reported as S, with no R and no Q.
    """
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
        if np.isfinite(base[k]) and amp[r] - base[k] < cfg.qs_max_r_mv:
            out["s_peak"][k] = lo + int(np.argmin(amp[lo : hi + 1]))
            continue
        out["r_peak"][k] = r
        out["q_peak"][k] = lo + int(np.argmin(amp[lo : r + 1]))
        out["s_peak"][k] = r + int(np.argmin(amp[r : hi + 1]))
    return out


def _baseline(
    amp: np.ndarray, f: dict[str, np.ndarray], fs: float, cfg: ParamsConfig
) -> np.ndarray:
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


def _polarity(x: np.ndarray, rpeaks: np.ndarray, fs: float) -> float:
    """-1 when the lead's QRS is mostly negative (median over beats of the excursions within
    100 ms of R against the window median), else +1."""
    half = int(round(0.1 * fs))
    balance = []
    for r in rpeaks:
        w = x[max(r - half, 0) : r + half + 1]
        if w.size:
            mid = np.median(w)
            balance.append((w.max() - mid) - (mid - w.min()))
    return -1.0 if balance and float(np.median(balance)) < 0 else 1.0


def _walk(slope: np.ndarray, start: int, step: int, thr: float, reach: int) -> int:
    """Move a QRS boundary to the end of the steep QRS slopes, outwards along ``step``.

    If the slope exceeds ``thr`` within ``reach // 3`` samples outwards (the point sits on a Q or
    S nadir and the wave goes on), walk outwards until it falls below ``thr``; else (the point
    sits on the flat baseline beyond the wave) walk inwards while the slope stays below ``thr``.
    Never farther than ``reach`` samples.
    """
    n = len(slope)
    i, probe = start, start + step * max(reach // 3, 1)
    while 0 <= i < n and i != probe and slope[i] < thr:
        i += step
    if 0 <= i < n and slope[i] >= thr:
        limit = start + step * reach
        while 0 <= i + step < n and i != limit and slope[i] >= thr:
            i += step
        return i
    i, limit = start, start - step * reach
    while 0 <= i - step < n and i != limit and slope[i - step] < thr:
        i -= step
    return i


def _refine_qrs(
    x: np.ndarray, f: dict[str, np.ndarray], rpeaks: np.ndarray, fs: float, cfg: ParamsConfig
) -> None:
    """Move QRS onset / offset outwards to the end of the lead's steep QRS slopes."""
    if cfg.qrs_refine_frac <= 0:
        return
    slope = np.abs(np.gradient(x))
    half = int(round(cfg.qrs_window_ms * fs / 1000.0))
    reach = max(int(round(cfg.qrs_refine_ms * fs / 1000.0)), 1)
    for k, r in enumerate(rpeaks):
        seg = slope[max(r - half, 0) : r + half + 1]
        if not seg.size:
            continue
        thr = cfg.qrs_refine_frac * float(seg.max())
        for key, step in (("qrs_on", -1), ("qrs_off", 1)):
            v = f[key][k]
            if np.isfinite(v):
                f[key][k] = _walk(slope, int(v), step, thr, reach)


def _cross_lead_repair(
    per_lead: dict[int, dict[str, np.ndarray]], rpeaks: np.ndarray, fs: float, cfg: ParamsConfig
) -> None:
    """Replace outlying or missing points of a lead by the beat's cross-lead median."""
    if cfg.cross_lead == "none" or len(per_lead) < cfg.cross_lead_min_leads:
        return
    dev = cfg.cross_lead_max_dev_ms * fs / 1000.0
    for key in _NK_KEYS:
        stack = np.stack([f[key] for f in per_lead.values()])  # (n_leads, n_beats)
        count = np.isfinite(stack).sum(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(stack, axis=0)
        ok = count >= cfg.cross_lead_min_leads
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(stack - med) <= dev) & ok
        stack[bad] = np.broadcast_to(np.round(med), stack.shape)[bad]
        for j, f in zip(per_lead, stack, strict=True):
            per_lead[j][key] = f
    for f in per_lead.values():
        _order_waves(f, rpeaks)


def _wave_prominence(x: np.ndarray, f: dict[str, np.ndarray], wave: str) -> float:
    """Median over beats of a wave's peak height above the higher of its onset and offset."""
    on, peak, off = (f[p] for p in _WAVES[wave])
    ok = np.isfinite(on) & np.isfinite(peak) & np.isfinite(off)
    if not ok.any():
        return -math.inf
    on, peak, off = (v[ok].astype(int) for v in (on, peak, off))
    return float(np.median(x[peak] - np.maximum(x[on], x[off])))


def _align(x: np.ndarray, rpeaks: np.ndarray, fs: float, cfg: ParamsConfig) -> np.ndarray:
    """Each beat's R peak moved to this lead's maximum within ``align_ms`` (the delineator
    measures the QRS around the peak it is given)."""
    half = int(round(cfg.align_ms * fs / 1000.0))
    if half <= 0:
        return rpeaks
    out = rpeaks.copy()
    for k, r in enumerate(rpeaks):
        lo = max(r - half, 0)
        seg = x[lo : r + half + 1]
        if seg.size:
            out[k] = lo + int(np.argmax(seg))
    return np.maximum.accumulate(out) if len(out) else out


def _lead_fiducials(
    clean: np.ndarray, rpeaks: np.ndarray, fs: float, cfg: ParamsConfig
) -> dict[str, np.ndarray]:
    """One lead's fiducials; with ``polarity="auto"`` the QRS comes from the orientation of
    the dominant QRS deflection and P / T each from the orientation where they stand out more."""
    signs = (1.0,) if cfg.polarity == "as_is" else (1.0, -1.0)
    runs = {s: _nk_delineate(s * clean, rpeaks, fs, cfg.method) for s in signs}
    qrs_sign = 1.0 if cfg.polarity == "as_is" else _polarity(clean, rpeaks, fs)
    f = dict(runs[qrs_sign])
    if cfg.align_ms > 0:  # the QRS from a run at this lead's own R peaks
        x = qrs_sign * clean
        aligned = _nk_delineate(x, _align(x, rpeaks, fs, cfg), fs, cfg.method)
        f.update({p: aligned[p] for p in _WAVES["qrs"]})
    for wave in ("p", "t"):
        best = max(runs, key=lambda s: _wave_prominence(s * clean, runs[s], wave))
        f.update({p: runs[best][p] for p in _WAVES[wave]})
    _order_waves(f, rpeaks)
    _refine_qrs(clean, f, rpeaks, fs, cfg)
    return f


def _deflection(
    amp: np.ndarray, at: np.ndarray, base: np.ndarray, measured: np.ndarray, clip: Any
) -> np.ndarray:
    """Q / R / S amplitude: clipped at 0 (``np.fmin`` / ``np.fmax`` also turn an absent wave
    into 0), NaN where the QRS was not measured."""
    return np.where(measured, clip(_at(amp, at) - base, 0.0), np.nan)


def _lead_rows(
    lead: str,
    f: dict[str, np.ndarray],
    amp: np.ndarray,
    rpeaks: np.ndarray,
    fs: float,
    cfg: ParamsConfig,
) -> dict[str, Any]:
    n = len(rpeaks)
    ms = 1000.0 / fs
    f = {k: v.copy() for k, v in f.items()}
    base = _baseline(amp, f, fs, cfg)
    f.update(_qrs_points(amp, f, base, rpeaks, fs, cfg))
    p_amp = _at(amp, f["p_peak"]) - base
    measured = np.isfinite(f["s_peak"]) & np.isfinite(base)  # a QRS window was searched
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
        q_amp=_deflection(amp, f["q_peak"], base, measured, np.fmin),
        r_amp=_deflection(amp, f["r_peak"], base, measured, np.fmax),
        s_amp=_deflection(amp, f["s_peak"], base, measured, np.fmin),
        t_amp=_at(amp, f["t_peak"]) - base,
        j_amp=_at(amp, f["qrs_off"]) - base,
        st_j60=_at(amp, st) - base,
        p_missing=~np.isfinite(f["p_peak"]),
        qrs_missing=~(np.isfinite(f["qrs_on"]) & np.isfinite(f["qrs_off"])),
        t_missing=~np.isfinite(f["t_peak"]),
    )
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
    in every lead; each lead is then delineated at those beats (module docstring, steps 3-6).
    ``r_peak`` is the lead's own maximum within its QRS (NaN for a QS complex), ``q_peak`` /
    ``s_peak`` its minimum before / after it; ``rr_ms`` is the beat's RR, the same in every
    measured lead. A ``*_missing`` flag is set when that wave has no point in the lead, after the
    cross-lead repair has filled what it could (so a lead with a flat T wave usually shows a T
    with ``t_amp`` near 0). NaN gaps in a lead are interpolated; a flat or all-NaN lead keeps its
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
    fiducials = {j: _lead_fiducials(x, rpeaks, fs, cfg) for j, x in cleaned.items()}
    _cross_lead_repair(fiducials, rpeaks, fs, cfg)
    amp = raw if cfg.amplitudes_on == "raw" else cleaned
    rows = [
        _lead_rows(lead, fiducials[j], amp[j], rpeaks, fs, cfg)
        if j in cleaned
        else _nan_rows(lead, len(rpeaks))
        for j, lead in enumerate(leads)
    ]
    return _frame(rows)


def per_lead_medians(beats: pd.DataFrame) -> pd.DataFrame:
    """Median over beats of each lead's amplitudes and intervals, skipping NaN.

    Shape:
        beats: the table of :func:`delineate_record`. Output: one row per lead (index ``lead``,
        in first-seen order) and the :data:`MEDIAN_COLUMNS`; an all-NaN lead gives NaN.
    """
    if beats.empty:
        return pd.DataFrame(columns=list(MEDIAN_COLUMNS), index=pd.Index([], name="lead"))
    return beats.groupby("lead", sort=False)[list(MEDIAN_COLUMNS)].median()


def _nanmedian(values: Any) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def _limb_i_avf(net: dict[str, float]) -> tuple[float, float]:
    """(I, aVF) from whichever limb leads are present: I = II - III, aVF = (II + III) / 2 or
    II - I / 2 (Einthoven and Goldberger identities)."""
    nan = math.nan
    lead_i, avf = net.get("I", nan), net.get("aVF", nan)
    lead_ii, lead_iii = net.get("II", nan), net.get("III", nan)
    if not math.isfinite(lead_i):
        lead_i = lead_ii - lead_iii
    if not math.isfinite(avf):
        avf = (lead_ii + lead_iii) / 2.0
    if not math.isfinite(avf):
        avf = lead_ii - lead_i / 2.0
    return lead_i, avf


def frontal_axis(lead_i: float, lead_avf: float) -> float:
    r"""Frontal-plane axis in degrees from the net deflections in I and aVF.

    :math:`\theta = \operatorname{atan2}(aVF, I)`, in :math:`(-180, 180]`; NaN when either is NaN
    or both are 0.

    Example:
        >>> frontal_axis(1.0, 1.0), frontal_axis(-1.0, 0.0), frontal_axis(0.0, 0.0)
        (45.0, 180.0, nan)
    """
    if not (math.isfinite(lead_i) and math.isfinite(lead_avf)) or (lead_i == 0 and lead_avf == 0):
        return math.nan
    deg = math.degrees(math.atan2(lead_avf, lead_i))
    return 180.0 if deg <= -180.0 else deg


def qtc(qt_ms: float, rr_ms: float) -> dict[str, float]:
    r"""Heart-rate-corrected QT in ms, with :math:`RR_s = RR_{ms} / 1000`.

    Bazett :math:`QT / \sqrt{RR_s}`, Fridericia :math:`QT / RR_s^{1/3}`, Framingham
    :math:`QT + 154\,(1 - RR_s)`; NaN when QT or RR is NaN or RR <= 0.

    Example:
        >>> {k: round(v, 1) for k, v in qtc(360.0, 640.0).items()}
        {'qtc_bazett_ms': 450.0, 'qtc_fridericia_ms': 417.7, 'qtc_framingham_ms': 415.4}
    """
    keys = ("qtc_bazett_ms", "qtc_fridericia_ms", "qtc_framingham_ms")
    rr_s = rr_ms / 1000.0
    if not (math.isfinite(qt_ms) and math.isfinite(rr_s) and rr_s > 0):
        return dict.fromkeys(keys, math.nan)
    return dict(
        zip(
            keys,
            (qt_ms / math.sqrt(rr_s), qt_ms / rr_s ** (1.0 / 3.0), qt_ms + 154.0 * (1.0 - rr_s)),
            strict=True,
        )
    )


def summarise_record(
    beats: pd.DataFrame, leads: Sequence[str], fs: float, *, p_visible_mv: float = 0.02
) -> dict[str, float]:
    r"""Record-level parameters from the beat x lead table of :func:`delineate_record`.

    * ``rr_ms``: median over beats of the RR to the next beat; ``hr_bpm`` :math:`= 60000 / RR`;
    * ``p_ms, pr_ms, qrs_ms, qt_ms``: per-lead medians over beats, then the median across leads
      (never the cross-lead min(onset) / max(offset), which one bad lead inflates);
    * QTc by Bazett, Fridericia and Framingham (:func:`qtc`) from that QT and RR;
    * P / QRS / T frontal axes (:func:`frontal_axis`) from the per-lead median net amplitudes in I
      and aVF, derived from II and III when missing: P and T their signed peak amplitude, QRS
      :math:`R + Q + S` (:math:`Q, S \le 0`);
    * ``sokolow_lyon_mv`` :math:`= |S(V1)| + \max(R(V5), R(V6))` from per-lead medians;
    * ``n_beats``; ``n_beats_with_p``: beats whose P wave reaches ``p_visible_mv`` (absolute) in
      at least half of the leads measured at that beat (on LUDB 1-40 this tells the annotated
      P waves from atrial fibrillation and paced beats in about 90% of beats; flutter waves
      count).

    Only the rows of ``leads`` are used (names match case-insensitively; ``MLII`` is II). ``fs``
    is only checked: the table's intervals are already in ms. Every value is a float, NaN when
    it cannot be measured.

    Shape:
        beats: ``(n_leads * n_beats, len(COLUMNS))``. Output: a dict with the :data:`SUMMARY_KEYS`.

    Raises:
        DataError: ``beats`` lacks columns of :data:`COLUMNS`, ``fs`` is not positive, or none
        of ``leads`` is in the table.

    Example:
        >>> flat = delineate_record(np.zeros((1000, 1)), 500.0, ["II"])
        >>> s = summarise_record(flat, ["II"], 500.0)
        >>> s["n_beats"], s["qrs_ms"]
        (0.0, nan)
    """
    missing = [c for c in COLUMNS if c not in beats.columns]
    if missing or not (math.isfinite(fs) and fs > 0):
        raise DataError(
            "not a beat x lead table of delineate_record, or a bad fs",
            expected=f"columns {list(COLUMNS)} and fs > 0",
            found=f"missing columns {missing}, fs={fs}",
            fix="pass the output of delineate_record and the record's sampling rate",
        )
    out = dict.fromkeys(SUMMARY_KEYS, math.nan)
    wanted = {_canonical(str(lead)) for lead in leads}
    keep = beats["lead"].map(lambda lead: _canonical(str(lead)) in wanted).astype(bool)
    if len(beats) and not keep.any():
        raise DataError(
            "none of the leads to summarise is in the beat table",
            expected=f"some of {sorted(beats['lead'].unique().tolist())}",
            found=list(leads),
            fix="pass the lead names the table was built with",
        )
    beats = beats[keep]
    if beats.empty:
        out.update(n_beats=0.0, n_beats_with_p=0.0)
        return out
    rr = beats.groupby("beat")["rr_ms"].median()  # the same in every measured lead
    out["rr_ms"] = _nanmedian(rr)
    out["hr_bpm"] = 60000.0 / out["rr_ms"] if out["rr_ms"] > 0 else math.nan
    med = per_lead_medians(beats)
    for key in ("p_ms", "pr_ms", "qrs_ms", "qt_ms"):
        out[key] = _nanmedian(med[key])
    out.update(qtc(out["qt_ms"], out["rr_ms"]))

    net = beats.assign(qrs_net=beats["r_amp"] + beats["q_amp"] + beats["s_amp"])
    lead_med = net.groupby("lead", sort=False)[["p_amp", "qrs_net", "t_amp", "r_amp", "s_amp"]]
    lead_med = lead_med.median()
    lead_med.index = [_canonical(str(lead)) for lead in lead_med.index]
    for wave, col in (("p", "p_amp"), ("qrs", "qrs_net"), ("t", "t_amp")):
        out[f"{wave}_axis_deg"] = frontal_axis(*_limb_i_avf(lead_med[col].to_dict()))

    r_amp, s_amp = lead_med["r_amp"].to_dict(), lead_med["s_amp"].to_dict()
    r_v56 = [r_amp.get(v, math.nan) for v in ("V5", "V6")]
    r_v56 = [v for v in r_v56 if math.isfinite(v)]
    out["sokolow_lyon_mv"] = -s_amp.get("V1", math.nan) + (max(r_v56) if r_v56 else math.nan)

    out["n_beats"] = float(beats["beat"].nunique())
    measured = beats[beats[["qrs_on", "qrs_off"]].notna().all(axis=1)]
    visible = (measured["p_amp"].abs() >= p_visible_mv).groupby(measured["beat"]).mean()
    out["n_beats_with_p"] = float((visible >= 0.5).sum())
    return out
