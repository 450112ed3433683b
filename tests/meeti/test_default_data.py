"""MEETI default data: simulated ECGs at the requested rate; the GE XML reader; packaged ECGs."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from clinfuse.core.errors import DataError

nk = pytest.importorskip("neurokit2")

from clinfuse.builders.meeti.default_data import (  # noqa: E402
    HR_RANGE,
    default_records,
    packaged_records,
    read_ge_xml,
    simulated_records,
)
from clinfuse.builders.meeti.io import MACHINE_FIELDS, STANDARD_LEADS  # noqa: E402


def _r_peaks(signal: np.ndarray, fs: float) -> np.ndarray:
    _, info = nk.ecg_peaks(signal, sampling_rate=int(fs))
    return np.asarray(info["ECG_R_Peaks"])


@pytest.fixture(scope="module")
def sims():
    return simulated_records(n=3, seed=0)


def test_simulated_heart_rate_matches_the_requested_one(sims):
    assert [r.study_id for r in sims] == ["sim-0001", "sim-0002", "sim-0003"]
    rates = []
    for rec in sims:
        hr = rec.ref.extra["heart_rate"]
        rates.append(hr)
        assert HR_RANGE[0] <= hr <= HR_RANGE[1]
        assert rec.ref.source == "default" and rec.leads == STANDARD_LEADS
        assert rec.fs == 500.0 and rec.signal.shape == (5000, 12) and rec.signal.dtype == np.float32
        # the report states the simulated rate
        (line,) = rec.ref.report
        assert (
            int(re.fullmatch(r"Sinus (rhythm|bradycardia|tachycardia), rate (\d+)", line)[2]) == hr
        )
        assert rec.ref.machine["rr_interval"] == round(60_000 / hr)
        assert all(math.isnan(rec.ref.machine[k]) for k in MACHINE_FIELDS if k != "rr_interval")
        # R peaks found by neurokit2's detector: count and median RR agree with the request. Lead I:
        # nk's multileads scales every lead to [-0.4, 1.2] and gives II a QRS 1/15 of its T wave.
        peaks = _r_peaks(rec.lead("I"), rec.fs)
        assert abs(len(peaks) - hr * 10 / 60) <= 1.5
        assert 60 * rec.fs / np.median(np.diff(peaks)) == pytest.approx(hr, abs=2)
    assert len(set(rates)) > 1  # per-record rates, not one shared value


def test_simulation_is_seeded_and_prefix_stable(sims):
    (again,) = simulated_records(n=1, seed=0)
    np.testing.assert_array_equal(again.signal, sims[0].signal)
    assert again.ref == sims[0].ref
    (other,) = simulated_records(n=1, seed=5, duration=4)
    assert other.signal.shape == (2000, 12)
    assert other.ref.extra["simulator_seed"] != sims[0].ref.extra["simulator_seed"]


# ---------------------------------------------------------------------------------------------
# GE CardiologyXML reader on a planted file

_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _ge_xml(counts: np.ndarray, *, total: int | None = None) -> str:
    waves = "".join(
        f'<WaveformData lead="{lead}">{",".join(map(str, counts[:, j]))}</WaveformData>'
        for j, lead in enumerate(_LEADS)
    )
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<CardiologyXML>
  <ClinicalInfo><DeviceInfo><AnalysisVer>12SL V21</AnalysisVer></DeviceInfo></ClinicalInfo>
  <PatientInfo><PID>123456</PID><Name><FamilyName>Doe</FamilyName></Name></PatientInfo>
  <Interpretation><Diagnosis>
    <DiagnosisText>Sinus rhythm</DiagnosisText><DiagnosisText>Normal ECG</DiagnosisText>
    <DiagnosisText>---</DiagnosisText><DiagnosisText>QRS Complexes: 4</DiagnosisText>
  </Diagnosis></Interpretation>
  <RestingECGMeasurements>
    <VentricularRate units="BPM">75</VentricularRate><RRInterval units="ms">800</RRInterval>
    <POnset units="ms">258</POnset><POffset units="ms">364</POffset>
    <QOnset units="ms">432</QOnset><QOffset units="ms">524</QOffset>
    <TOffset units="ms">872</TOffset><PAxis units="degrees">56</PAxis>
    <RAxis units="degrees"></RAxis><TAxis units="degrees">45</TAxis>
    <MeasurementTable><LeadOrder>I, II, III</LeadOrder>
      <RAmplitude units="uV">615, 957, </RAmplitude></MeasurementTable>
  </RestingECGMeasurements>
  <StripData><NumberOfLeads>12</NumberOfLeads><SampleRate units="Hz">500</SampleRate>
    <ChannelSampleCountTotal>{total or counts.shape[0]}</ChannelSampleCountTotal>
    <Resolution units="uVperLsb">5</Resolution>{waves}</StripData>
</CardiologyXML>"""


def test_ge_xml_reader_recovers_planted_values(tmp_path):
    counts = np.random.default_rng(0).integers(-400, 400, size=(50, 12))
    path = tmp_path / "ecg.xml"
    path.write_text(_ge_xml(counts), encoding="latin-1")
    rec = read_ge_xml(path, study_id="ge-1")
    assert rec.study_id == "ge-1" and rec.leads == _LEADS and rec.fs == 500.0
    np.testing.assert_allclose(rec.signal, counts * 0.005, rtol=1e-6)  # 5 uV per LSB
    assert rec.ref.report == ("Sinus rhythm", "Normal ECG")  # stops at GE's '---'
    machine = rec.ref.machine
    assert (machine["rr_interval"], machine["p_onset"], machine["p_end"]) == (800, 258, 364)
    assert (machine["qrs_onset"], machine["qrs_end"], machine["t_end"]) == (432, 524, 872)
    assert machine["p_axis"] == 56 and math.isnan(machine["qrs_axis"]) and machine["t_axis"] == 45
    assert rec.ref.extra["ge_measurements"]["VentricularRate"] == 75
    amp = rec.ref.extra["ge_lead_measurements"]["RAmplitude"]
    assert amp["I"] == 615 and math.isnan(amp["III"])
    assert "123456" not in repr(rec.ref) and "Doe" not in repr(rec.ref)  # no patient identifiers


def test_ge_xml_reader_refuses_damaged_exports(tmp_path):
    counts = np.zeros((50, 12), dtype=int)
    bad_len = tmp_path / "len.xml"
    bad_len.write_text(_ge_xml(counts, total=60), encoding="latin-1")
    with pytest.raises(DataError, match=r"len\.xml: leads have unequal or unexpected lengths"):
        read_ge_xml(bad_len)
    no_strip = tmp_path / "nostrip.xml"
    no_strip.write_text("<CardiologyXML><PatientInfo/></CardiologyXML>")
    with pytest.raises(DataError, match="no StripData"):
        read_ge_xml(no_strip)
    broken = tmp_path / "broken.xml"
    broken.write_text("<CardiologyXML><StripData>")
    with pytest.raises(DataError, match="cannot parse"):
        read_ge_xml(broken)


# ---------------------------------------------------------------------------------------------
# packaged real recordings


def test_packaged_records_is_empty_without_ecgprocess(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert packaged_records() == []
    recs = default_records(n_sim=1, seed=0)
    assert [r.study_id for r in recs] == ["sim-0001"]


def test_ecgprocess_ge_12sl_export_agrees_with_the_cart():
    if importlib.util.find_spec("ecgprocess") is None:
        pytest.skip("ecgprocess (GPL-3.0, optional) is not installed")
    already = "ecgprocess" in sys.modules
    (rec,) = packaged_records()
    assert already or "ecgprocess" not in sys.modules  # located, never imported
    assert Path(rec.ref.extra["file"]).name == "example-XML1.xml"
    assert rec.leads == STANDARD_LEADS and rec.fs == 500.0 and rec.signal.shape == (5000, 12)
    assert rec.ref.report == ("Sinus bradycardia", "Otherwise normal ECG")
    ge = rec.ref.extra["ge_measurements"]
    assert ge["VentricularRate"] == 50 and ge["QRSNum"] == 8
    assert rec.ref.machine["rr_interval"] == 1202 and rec.ref.machine["qrs_axis"] == 55
    # neurokit2's R peaks on lead II reproduce the cart's beat count and rate
    peaks = _r_peaks(rec.lead("II"), rec.fs)
    assert len(peaks) == ge["QRSNum"]
    assert 60 * rec.fs / np.median(np.diff(peaks)) == pytest.approx(ge["VentricularRate"], abs=2)
    # GE derives III and the augmented leads from I and II: Einthoven's laws hold to half an LSB
    s = {
        lead: rec.lead(lead).astype(np.float64) for lead in ("I", "II", "III", "aVR", "aVL", "aVF")
    }
    assert np.abs(s["III"] - (s["II"] - s["I"])).max() <= 0.0026
    assert np.abs(s["aVR"] + (s["I"] + s["II"]) / 2).max() <= 0.0026
    assert np.abs(s["aVF"] - (s["II"] - s["I"] / 2)).max() <= 0.0026
