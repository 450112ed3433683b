"""MEETI beat-level parameters on a planted synthetic 12-lead ECG: fiducials, amplitudes, ST,
HR, QTc, axes, Sokolow-Lyon, and NaN-safety (flat, T-less, all-NaN leads)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from clinfuse.builders.meeti.params import (
    COLUMNS,
    MEDIAN_COLUMNS,
    SUMMARY_KEYS,
    ParamsConfig,
    delineate_record,
    detect_rpeaks,
    frontal_axis,
    per_lead_medians,
    qtc,
    summarise_record,
)
from clinfuse.core.errors import ConfigError, DataError

pytest.importorskip("neurokit2")

FS = 500.0
RR_S = 0.8
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
WAVES = ("p", "q", "r", "s", "t", "st")


@dataclass(frozen=True)
class Wave:
    """A Gaussian wave: centre relative to R (s) and width sigma (s)."""

    centre: float
    sigma: float


# P, Q, R, S, T as Gaussians; the ST shift is a plateau from 30 ms to 450 ms after R
SHAPE = {
    "p": Wave(-0.16, 0.020),
    "q": Wave(-0.03, 0.006),
    "r": Wave(0.0, 0.010),
    "s": Wave(0.025, 0.008),
    "t": Wave(0.28, 0.040),
}
# planted boundaries (s from R): P and T at +-2.5 sigma, QRS at 3 sigma beyond its first and
# last component
P_ON, P_OFF = -0.16 - 0.05, -0.16 + 0.05
T_ON, T_OFF = 0.28 - 0.10, 0.28 + 0.10
QRS_ON = -0.03  # R at 0 with sigma 10 ms (the leads with a Q wave are not timed here)
QRS_OFF_R, QRS_OFF_S = 0.03, 0.025 + 0.024  # without / with an S wave

# amplitudes (mV) of the limb leads I and aVF; the other limb leads follow from Einthoven and
# Goldberger: II = aVF + I/2, III = aVF - I/2, aVR = -(I + II)/2, aVL = (I - III)/2
LIMB = {"I": {"p": 0.10, "r": 1.0, "t": 0.30}, "aVF": {"p": 0.10, "r": 0.80, "t": 0.25}}
CHEST = {
    "V1": {"p": 0.08, "r": 0.20, "s": -1.5, "t": -0.10},
    "V2": {"p": 0.08, "r": 0.40, "s": -1.2, "t": 0.50, "st": 0.20},
    "V3": {"p": 0.08, "r": 0.80, "s": -0.6, "t": 0.60, "st": 0.15},
    "V4": {"p": 0.10, "r": 1.5, "s": -0.3, "t": 0.50},
    "V5": {"p": 0.10, "q": -0.15, "r": 2.0, "t": 0.40},
    "V6": {"p": 0.10, "q": -0.15, "r": 1.6, "t": 0.30},
}


def limb_leads(lead_i: dict[str, float], avf: dict[str, float]) -> dict[str, dict[str, float]]:
    out = {}
    for w in WAVES:
        i, f = lead_i.get(w, 0.0), avf.get(w, 0.0)
        ii, iii = f + i / 2, f - i / 2
        vals = {"I": i, "II": ii, "III": iii, "aVR": -(i + ii) / 2, "aVL": (i - iii) / 2, "aVF": f}
        for lead, v in vals.items():
            out.setdefault(lead, {})[w] = v
    return out


def synthetic(
    limb: dict[str, dict[str, float]] = LIMB,
    *,
    seconds: float = 10.0,
    noise: float = 0.005,
    wander: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, float]]]:
    """(signal (n, 12) mV, R-peak samples, planted amplitudes per lead).

    The planted Q overlaps the R wave's flank: the signal's own minimum before R (noise-free,
    against the zero baseline) is added to the amplitudes as ``q_signal``.
    """
    amps = {**limb_leads(limb["I"], limb["aVF"]), **CHEST}
    n = int(seconds * FS)
    t = np.arange(n) / FS
    r_times = np.arange(0.6, seconds - 0.5, RR_S)
    x = np.zeros((n, len(LEADS)))
    for j, lead in enumerate(LEADS):
        a = amps[lead]
        for c in r_times:
            for w, shape in SHAPE.items():
                x[:, j] += a.get(w, 0.0) * np.exp(
                    -0.5 * ((t - c - shape.centre) / shape.sigma) ** 2
                )
            if a.get("st"):
                up = 0.5 * (1 + np.tanh((t - c - 0.03) / 0.004))
                down = 0.5 * (1 + np.tanh((t - c - 0.45) / 0.02))
                x[:, j] += a["st"] * (up - down)
    r_idx = np.round(r_times * FS).astype(int)
    before_r = x[r_idx[1] - int(0.05 * FS) : r_idx[1] + 1]
    for j, lead in enumerate(LEADS):
        amps[lead] = {**amps[lead], "q_signal": min(float(before_r[:, j].min()), 0.0)}
    rng = np.random.default_rng(seed)
    x += rng.normal(0.0, noise, x.shape)
    x += wander * np.sin(2 * np.pi * 0.15 * t + 0.7)[:, None]
    return x, r_idx, amps


@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, np.ndarray, dict[str, dict[str, float]]]:
    x, rpeaks, amps = synthetic()
    return delineate_record(x, FS, LEADS), rpeaks, amps


def interior(beats: pd.DataFrame, lead: str) -> pd.DataFrame:
    """A lead's rows without the first and last beat (their P / T may fall off the record)."""
    rows = beats[beats["lead"] == lead]
    return rows[(rows["beat"] > 0) & (rows["beat"] < rows["beat"].max())]


# --------------------------------------------------------------------------------------------
# schema and beats


def test_schema_and_shared_beats(planted) -> None:
    beats, rpeaks, _ = planted
    assert tuple(beats.columns) == COLUMNS
    assert beats["lead"].unique().tolist() == list(LEADS)
    assert len(beats) == len(LEADS) * len(rpeaks)
    assert beats["p_missing"].dtype == bool and beats["beat"].dtype.kind == "i"
    # beat k is the same heartbeat in every lead: its QRS onset is within 20 ms across leads
    spread = beats.groupby("beat")["qrs_on"].agg(lambda v: v.max() - v.min())
    assert (spread * 1000 / FS <= 20).all(), spread
    assert np.abs(detect_rpeaks(synthetic()[0], FS, LEADS) - rpeaks).max() <= 2


@pytest.mark.parametrize("lead", ["I", "II", "aVR", "aVL", "V1", "V2", "V5"])
def test_planted_fiducials(planted, lead: str) -> None:
    beats, rpeaks, amps = planted
    rows = interior(beats, lead)
    r = rpeaks[rows["beat"].to_numpy()]
    qrs_off = QRS_OFF_S if amps[lead].get("s", 0.0) < -0.1 else QRS_OFF_R
    truth = {
        "p_on": (P_ON, 20),
        "p_peak": (SHAPE["p"].centre, 4),
        "p_off": (P_OFF, 20),
        "qrs_on": (QRS_ON, 15),
        "qrs_off": (qrs_off, 15),
        "t_on": (T_ON, 20),
        "t_peak": (SHAPE["t"].centre, 4),
        "t_off": (T_OFF, 20),
    }
    for point, (at_s, tol_ms) in truth.items():
        err_ms = (rows[point].to_numpy() - r - at_s * FS) * 1000 / FS
        assert np.all(np.abs(err_ms) <= tol_ms), (lead, point, err_ms)
    if amps[lead]["r"] > 0.1:  # an R wave: its peak sits on the planted R
        assert np.all(np.abs(rows["r_peak"].to_numpy() - r) <= 2)
    intervals = {"p_ms": 100, "t_ms": 200, "pr_ms": (QRS_ON - P_ON) * 1000}
    for col, ms in intervals.items():
        assert abs(rows[col].median() - ms) <= 25, (lead, col, rows[col].median())
    assert np.allclose(rows["rr_ms"], RR_S * 1000, atol=2)
    assert not rows[["p_missing", "qrs_missing", "t_missing"]].any().any()


@pytest.mark.parametrize("wander", [0.0, 0.3])
def test_planted_amplitudes_and_st(wander: float) -> None:
    x, _, amps = synthetic(wander=wander, seed=1)
    med = per_lead_medians(delineate_record(x, FS, LEADS))
    beats = delineate_record(x, FS, LEADS)
    j_med = beats.groupby("lead", sort=False)[["q_amp", "j_amp"]].median()
    for lead in LEADS:
        a = amps[lead]
        want = {
            "p_amp": a["p"],
            "r_amp": max(a["r"], 0.0),
            "s_amp": min(a.get("s", 0.0), a["r"] if a["r"] < 0 else 0.0),  # QS: reported as S
            "t_amp": a["t"] + a.get("st", 0.0),  # against the PR baseline: T rides on the ST
            "st_j60": a.get("st", 0.0),
        }
        for col, v in want.items():
            assert med.loc[lead, col] == pytest.approx(v, abs=0.05), (lead, col)
        if a["r"] > 0:
            assert j_med.loc[lead, "q_amp"] == pytest.approx(a["q_signal"], abs=0.03), lead
    assert j_med.loc[["V5", "V6"], "q_amp"].max() < -0.05  # the planted Q waves are seen
    # ST elevation: J point and J+60 ms on the plateau in V2 / V3, at the baseline elsewhere
    assert j_med.loc["V2", "j_amp"] == pytest.approx(0.20, abs=0.05)
    assert j_med.loc["V3", "j_amp"] == pytest.approx(0.15, abs=0.05)
    assert med.loc[["I", "II", "V5", "V6"], "st_j60"].abs().max() < 0.05


# --------------------------------------------------------------------------------------------
# record summary


def test_summary_hr_qtc_sokolow(planted) -> None:
    beats, _, _ = planted
    s = summarise_record(beats, LEADS, FS)
    assert tuple(s) == SUMMARY_KEYS
    assert all(isinstance(v, float) for v in s.values())
    assert s["rr_ms"] == pytest.approx(800.0, abs=2)
    assert s["hr_bpm"] == pytest.approx(75.0, abs=0.3)
    assert s["qt_ms"] == pytest.approx((T_OFF - QRS_ON) * 1000, abs=25)
    assert s["pr_ms"] == pytest.approx((QRS_ON - P_ON) * 1000, abs=20)
    assert s["p_ms"] == pytest.approx(100, abs=20)
    rr_s = s["rr_ms"] / 1000
    assert s["qtc_bazett_ms"] == pytest.approx(s["qt_ms"] / rr_s**0.5)
    assert s["qtc_fridericia_ms"] == pytest.approx(s["qt_ms"] / rr_s ** (1 / 3))
    assert s["qtc_framingham_ms"] == pytest.approx(s["qt_ms"] + 154 * (1 - rr_s))
    # |S(V1)| + max(R(V5), R(V6)) = 1.5 + 2.0
    assert s["sokolow_lyon_mv"] == pytest.approx(3.5, abs=0.05)
    no_v5 = summarise_record(beats[beats["lead"] != "V5"], [x for x in LEADS if x != "V5"], FS)
    assert no_v5["sokolow_lyon_mv"] == pytest.approx(1.5 + 1.6, abs=0.05)
    assert s["n_beats"] == s["n_beats_with_p"] == beats["beat"].nunique()


def test_qtc_closed_forms() -> None:
    assert qtc(400.0, 1000.0) == pytest.approx(dict.fromkeys(qtc(1, 1), 400.0))
    got = qtc(360.0, 640.0)  # RR 0.64 s: sqrt 0.8, cube root 0.8618
    assert got["qtc_bazett_ms"] == pytest.approx(450.0)
    assert got["qtc_fridericia_ms"] == pytest.approx(360.0 / 0.64 ** (1 / 3))
    assert got["qtc_framingham_ms"] == pytest.approx(360.0 + 154.0 * 0.36)
    assert all(math.isnan(v) for v in qtc(float("nan"), 800.0).values())
    assert all(math.isnan(v) for v in qtc(400.0, 0.0).values())


AXES = {
    "normal": ({"p": 0.10, "r": 1.0, "t": 0.30}, {"p": 0.10, "r": 0.80, "t": 0.25}),
    "left": ({"p": 0.12, "r": 1.0, "t": 0.30}, {"p": 0.05, "r": -0.60, "t": 0.10}),
    "right": ({"p": 0.05, "r": -0.40, "t": 0.10}, {"p": 0.12, "r": 1.0, "t": 0.30}),
}


@pytest.mark.parametrize("case", list(AXES))
def test_frontal_axes(case: str) -> None:
    lead_i, avf = AXES[case]
    x, _, _ = synthetic({"I": lead_i, "aVF": avf}, seed=2)
    beats = delineate_record(x, FS, LEADS)
    s = summarise_record(beats, LEADS, FS)
    for wave, key in (("p", "p_axis_deg"), ("r", "qrs_axis_deg"), ("t", "t_axis_deg")):
        want = math.degrees(math.atan2(avf[wave], lead_i[wave]))
        assert s[key] == pytest.approx(want, abs=4), (case, key)
    # without aVF (or I) the axis comes from II and III
    for drop in ("aVF", "I"):
        keep = [lead for lead in LEADS if lead != drop]
        derived = summarise_record(beats[beats["lead"] != drop], keep, FS)
        assert derived["qrs_axis_deg"] == pytest.approx(s["qrs_axis_deg"], abs=4), drop


def test_frontal_axis_range() -> None:
    assert frontal_axis(-1.0, 0.0) == 180.0
    assert frontal_axis(-1.0, -1e-12) == pytest.approx(-180.0, abs=1e-6)
    assert frontal_axis(0.0, -1.0) == -90.0
    assert math.isnan(frontal_axis(float("nan"), 1.0))


def test_summary_uses_median_across_leads_not_extremes() -> None:
    """One bad lead (QRS 300 ms) must not move the record QRS (no cross-lead min/max)."""
    rows = []
    for k, lead in enumerate(("I", "II", "III", "V1", "V2")):
        for beat in range(4):
            row = dict.fromkeys(COLUMNS, np.nan)
            row.update(lead=lead, beat=beat, qrs_on=100.0 + 400 * beat, qrs_off=145.0 + 400 * beat)
            row.update(qrs_ms=90.0 + k, pr_ms=160.0, qt_ms=400.0, p_ms=100.0, rr_ms=800.0)
            row.update(p_missing=False, qrs_missing=False, t_missing=False, p_amp=0.1)
            rows.append(row)
    beats = pd.DataFrame(rows, columns=list(COLUMNS))
    beats.loc[beats["lead"] == "V2", "qrs_ms"] = 300.0
    s = summarise_record(beats, ["I", "II", "III", "V1", "V2"], FS)
    assert s["qrs_ms"] == 92.0  # median of 90, 91, 92, 93, 300
    assert s["hr_bpm"] == pytest.approx(75.0)
    assert s["n_beats"] == 4 and s["n_beats_with_p"] == 4
    med = per_lead_medians(beats)
    assert med.index.tolist() == ["I", "II", "III", "V1", "V2"]
    assert med.columns.tolist() == list(MEDIAN_COLUMNS)
    assert med.loc["V2", "qrs_ms"] == 300.0 and math.isnan(med.loc["I", "r_amp"])


# --------------------------------------------------------------------------------------------
# NaN-safety


def test_flat_all_nan_and_t_less_leads() -> None:
    x, rpeaks, amps = synthetic(seed=3)
    j = {lead: i for i, lead in enumerate(LEADS)}
    x[:, j["III"]] = 0.0  # flat
    x[:, j["V4"]] = np.nan  # all NaN
    x[1000:1100, j["V6"]] = np.nan  # a gap: interpolated
    t_less, _, _ = synthetic({"I": {**LIMB["I"], "t": 0.0}, "aVF": LIMB["aVF"]}, seed=3)
    x[:, j["I"]] = t_less[:, j["I"]]  # I without a T wave
    beats = delineate_record(x, FS, LEADS)
    assert tuple(beats.columns) == COLUMNS and len(beats) == len(LEADS) * len(rpeaks)
    for lead in ("III", "V4"):
        rows = beats[beats["lead"] == lead]
        assert rows.drop(columns=["lead", "beat", *COLUMNS[-3:]]).isna().all().all(), lead
        assert rows[["p_missing", "qrs_missing", "t_missing"]].all().all(), lead
    lead_i = interior(beats, "I")
    assert (lead_i["t_amp"].abs().fillna(0) < 0.05).all()  # no T: amplitude 0 (or NaN)
    assert interior(beats, "II")["t_amp"].median() == pytest.approx(amps["II"]["t"], abs=0.05)
    assert interior(beats, "V6")["r_amp"].median() == pytest.approx(1.6, abs=0.05)
    s = summarise_record(beats, LEADS, FS)
    assert s["hr_bpm"] == pytest.approx(75.0, abs=0.3)
    assert math.isfinite(s["qrs_axis_deg"]) and math.isfinite(s["qt_ms"])


def test_flat_rpeak_lead_falls_back_to_consensus(caplog) -> None:
    x, rpeaks, _ = synthetic(seed=4)
    x[:, LEADS.index("II")] = 0.0
    with caplog.at_level(logging.WARNING, logger="clinfuse.builders.meeti.params"):
        beats = delineate_record(x, FS, LEADS, ParamsConfig(rpeak_mode="lead"))
    assert "consensus" in caplog.text
    assert beats["beat"].nunique() == len(rpeaks)
    consensus = detect_rpeaks(x, FS, LEADS)
    assert np.all(np.abs(consensus - rpeaks) <= 0.03 * FS)


def test_consensus_survives_an_isoelectric_lead_ii() -> None:
    """Axis -30 degrees makes the QRS of II nearly flat: its own peaks miss beats, the
    multi-lead consensus (the default) does not."""
    limb = {"I": {"p": 0.1, "r": 1.0, "t": 0.3}, "aVF": {"p": 0.1, "r": -0.5, "t": 0.1}}
    x, rpeaks, _ = synthetic(limb, seed=6)
    consensus = detect_rpeaks(x, FS, LEADS)
    assert len(consensus) == len(rpeaks) and np.abs(consensus - rpeaks).max() <= 2
    lead_ii = detect_rpeaks(x, FS, LEADS, ParamsConfig(rpeak_mode="lead"))
    assert len(lead_ii) != len(rpeaks) or np.abs(lead_ii - rpeaks).max() > 0.05 * FS


def test_no_beats_gives_empty_table_and_nan_summary() -> None:
    x = np.zeros((int(10 * FS), 3))
    x[:, 1] = np.nan
    beats = delineate_record(x, FS, ["I", "II", "III"])
    assert beats.empty and tuple(beats.columns) == COLUMNS
    s = summarise_record(beats, ["I", "II", "III"], FS)
    assert tuple(s) == SUMMARY_KEYS and s["n_beats"] == 0.0
    assert all(math.isnan(v) for k, v in s.items() if not k.startswith("n_"))
    assert per_lead_medians(beats).empty


def test_dwt_option_same_schema() -> None:
    x, rpeaks, _ = synthetic(seed=5)
    beats = delineate_record(x, FS, LEADS, ParamsConfig(method="dwt", polarity="as_is"))
    assert tuple(beats.columns) == COLUMNS and beats["beat"].nunique() == len(rpeaks)
    rows = interior(beats, "II")
    r = rpeaks[rows["beat"].to_numpy()]
    assert np.nanmedian(np.abs(rows["t_peak"].to_numpy() - r - 0.28 * FS)) <= 0.01 * FS


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_input_raises_clear_errors() -> None:
    x = np.zeros((5000, 3))
    with pytest.raises(DataError, match="lead names"):
        delineate_record(x, FS, ["I", "II"])
    with pytest.raises(DataError, match="sampling rate"):
        delineate_record(x, 0.0, ["I", "II", "III"])
    with pytest.raises(DataError, match="duplicate"):
        delineate_record(x, FS, ["I", "I", "III"])
    with pytest.raises(ConfigError, match="consensus_fraction"):
        ParamsConfig(consensus_fraction=0.0)
    with pytest.raises(DataError, match="delineate_record"):
        summarise_record(pd.DataFrame({"lead": ["I"]}), ["I"], FS)
    beats = delineate_record(synthetic(seed=7)[0], FS, LEADS)
    with pytest.raises(DataError, match="none of the leads"):
        summarise_record(beats, ["X", "Y"], FS)
    lower = summarise_record(beats, [lead.lower() for lead in LEADS], FS)  # names match loosely
    assert lower["qrs_axis_deg"] == pytest.approx(
        summarise_record(beats, LEADS, FS)["qrs_axis_deg"]
    )
