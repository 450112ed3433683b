"""MEETI inputs: WFDB/LUDB/PTB reads vs wfdb, the MIMIC layout round trip, every bad input."""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import shared_path

from clinfuse.core.errors import ConfigError, DataError

wfdb = pytest.importorskip("wfdb")

from clinfuse.builders.meeti.default_data import simulated_records  # noqa: E402
from clinfuse.builders.meeti.io import (  # noqa: E402
    MACHINE_COLUMNS,
    RECORD_LIST_COLUMNS,
    STANDARD_LEADS,
    EcgRecord,
    LoadConfig,
    RecordRef,
    canonical_lead,
    load,
    scan,
    standardise,
    write_mimic_layout,
)

# ---------------------------------------------------------------------------------------------
# helpers


def _write(folder: Path, name: str, signal: np.ndarray, leads, fs=500.0, fmt="16", gain=1000.0):
    """A WFDB record written by wfdb itself (the oracle for our reader)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = signal.shape[1]
    wfdb.wrsamp(
        name, fs=fs, units=["mV"] * n, sig_name=list(leads), p_signal=signal.astype(np.float64),
        fmt=[fmt] * n, adc_gain=[gain] * n, baseline=[0] * n, write_dir=str(folder),
    )  # fmt: skip
    return RecordRef(name, None, str(folder / name), None, "wfdb")


def _ecg_like(n: int, n_leads: int, fs: float = 500.0, seed: int = 0) -> np.ndarray:
    """Band-limited test signal: per lead a sum of 1-15 Hz sines, amplitude ~1 mV."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / fs
    freqs = rng.uniform(1, 15, size=(4, n_leads))
    phases = rng.uniform(0, 2 * np.pi, size=(4, n_leads))
    return sum(0.3 * np.sin(2 * np.pi * freqs[k] * t + phases[k]) for k in range(4))


def _einthoven_error(rec: EcgRecord) -> float:
    """Largest violation of III = II - I, aVR = -(I+II)/2, aVL = I - II/2, aVF = II - I/2 (mV)."""
    s = {
        lead: rec.lead(lead).astype(np.float64) for lead in ("I", "II", "III", "aVR", "aVL", "aVF")
    }
    return max(
        np.abs(s["III"] - (s["II"] - s["I"])).max(),
        np.abs(s["aVR"] + (s["I"] + s["II"]) / 2).max(),
        np.abs(s["aVL"] - (s["I"] - s["II"] / 2)).max(),
        np.abs(s["aVF"] - (s["II"] - s["I"] / 2)).max(),
    )


# ---------------------------------------------------------------------------------------------
# real records (shared data)


@pytest.mark.shared_data
def test_ludb_scan_reports_and_signals_match_wfdb():
    root = shared_path("ecg", "ludb")
    refs = scan(root)  # auto -> ludb (ludb.csv)
    assert [r.study_id for r in refs] == [f"ludb-{n}" for n in range(1, 41)]
    assert {r.source for r in refs} == {"ludb"}
    # the README's counts for records 1-40, from ludb.csv
    rhythms = Counter(r.report[0] for r in refs)
    assert rhythms == {
        "Sinus rhythm": 29, "Sinus bradycardia": 7, "Atrial fibrillation": 2,
        "Sinus arrhythmia": 1, "Atrial flutter, typical": 1,
    }  # fmt: skip
    assert Counter(r.extra["sex"] for r in refs) == {"M": 29, "F": 11}
    paced = {r.study_id for r in refs if "Unipolar ventricular pacing" in r.report}
    assert paced == {"ludb-8", "ludb-34"}
    assert refs[0].report[:2] == (
        "Sinus bradycardia",
        "Electric axis of the heart: left axis deviation",
    )
    assert refs[0].extra["age"] == "51"
    assert pickle.loads(pickle.dumps(refs[0])) == refs[0]

    for ref in refs[:3]:
        rec = load(ref)
        oracle = wfdb.rdrecord(ref.path)
        assert rec.leads == STANDARD_LEADS  # from the header's lower-case i … v6
        assert rec.fs == 500.0 and rec.signal.shape == (5000, 12) and rec.signal.dtype == np.float32
        np.testing.assert_allclose(rec.signal, oracle.p_signal, rtol=1e-6, atol=1e-6)
        assert rec.flags == {}


@pytest.mark.shared_data
def test_ptb_keeps_the_12_standard_leads_and_resamples_1000_to_500():
    folder = shared_path("ecg", "wfdb_samples")
    ref = next(r for r in scan(folder, "wfdb") if r.study_id == "s0010_re")
    native = load(ref, LoadConfig(target_fs=None))
    oracle = wfdb.rdrecord(ref.path)
    assert oracle.n_sig == 15
    assert native.leads == STANDARD_LEADS and native.fs == 1000.0
    assert native.flags == {"extra_leads": ["vx", "vy", "vz"]}
    np.testing.assert_allclose(native.signal, oracle.p_signal[:, :12], rtol=1e-6, atol=1e-6)
    # the leads are where the header says: Einthoven's laws hold to one ADC step (0.5 uV) + rounding
    assert _einthoven_error(native) <= 1.1e-3

    rec = load(ref)  # default target 500 Hz
    assert rec.fs == 500.0 and rec.signal.shape == (19_200, 12)
    assert rec.flags["resampled"] == ["1000 Hz -> 500 Hz"]
    assert rec.flags["extra_leads"] == ["vx", "vy", "vz"]
    for j in range(12):  # the resampled lead follows the native one at every other sample
        assert np.corrcoef(rec.signal[:, j], native.signal[::2, j])[0, 1] > 0.999


@pytest.mark.shared_data
def test_two_lead_mitbih_record_is_refused_with_its_leads_named():
    folder = shared_path("ecg", "wfdb_samples")
    ref = next(r for r in scan(folder) if r.study_id == "100")
    with pytest.raises(DataError, match=r"has 1 standard lead.*12 required.*MLII, V5"):
        load(ref)


# ---------------------------------------------------------------------------------------------
# MIMIC-IV-ECG layout round trip


@pytest.fixture(scope="module")
def sims() -> list[EcgRecord]:
    return simulated_records(n=3, seed=1)


def test_mimic_layout_round_trip(tmp_path, sims, caplog):
    mimic_order = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
    first = sims[0]
    first = EcgRecord(
        ref=dataclasses.replace(
            first.ref, study_id="40689238", subject_id="10000032", ecg_time="2180-07-23 08:44:00",
            machine={**first.ref.machine, "p_axis": 81.0, "qrs_onset": 40.0},
            extra={"cart_id": "6848296"},
        ),
        signal=first.in_order(mimic_order), fs=first.fs, leads=mimic_order,
    )  # fmt: skip
    records = [first, *sims[1:]]
    root = write_mimic_layout(records, tmp_path / "mimic")

    # exact MIMIC paths; non-numeric ids renumbered in order
    assert (root / "files/p1000/p10000032/s40689238/40689238.hea").is_file()
    assert (root / "files/p1000/p10000002/s40000002/40000002.dat").is_file()
    with open(root / "record_list.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == RECORD_LIST_COLUMNS
    assert rows[0]["path"] == "files/p1000/p10000032/s40689238/40689238"
    with open(root / "machine_measurements.csv", newline="") as fh:
        machine_rows = list(csv.DictReader(fh))
    assert tuple(machine_rows[0]) == MACHINE_COLUMNS
    assert machine_rows[1]["p_axis"] == "29999"  # NaN written as MIMIC's missing code

    refs = scan(root)  # auto -> mimic
    assert [r.study_id for r in refs] == ["40689238", "40000002", "40000003"]
    assert [r.subject_id for r in refs] == ["10000032", "10000002", "10000003"]
    assert refs[0].ecg_time == "2180-07-23 08:44:00" and refs[1].ecg_time is None
    assert refs[0].extra == {"cart_id": "6848296"}
    for rec, ref in zip(records, refs, strict=True):
        assert ref.source == "mimic"
        assert ref.report == rec.ref.report and ref.report[0].startswith("Sinus")
        for name, value in rec.ref.machine.items():
            assert (math.isnan(value) and math.isnan(ref.machine[name])) or ref.machine[
                name
            ] == value
        got = load(ref)
        assert got.leads == rec.leads and got.flags == {}
        np.testing.assert_allclose(got.signal, rec.signal, atol=1e-3)
        np.testing.assert_allclose(got.in_order(), rec.in_order(), atol=1e-3)
    assert refs[0].machine["p_axis"] == 81.0 and math.isnan(refs[1].machine["p_axis"])
    assert refs[0].machine["rr_interval"] == round(60_000 / sims[0].ref.extra["heart_rate"])

    # a machine row for an unknown study is warned about and skipped; a study without a row is kept
    unknown = dict(machine_rows[0], study_id="49999999", subject_id="19999999")
    with open(root / "machine_measurements.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MACHINE_COLUMNS)
        writer.writeheader()
        writer.writerows([machine_rows[0], machine_rows[2], unknown])
    with caplog.at_level(logging.WARNING, logger="clinfuse.builders.meeti.io"):
        refs = scan(root, "mimic")
    assert "49999999" in caplog.text
    assert [r.study_id for r in refs] == ["40689238", "40000002", "40000003"]
    assert refs[1].machine is None and refs[1].report == ()
    assert refs[2].report == sims[2].ref.report


def test_mimic_machine_file_29999_and_blank_read_as_nan(tmp_path, sims):
    root = write_mimic_layout(sims[:1], tmp_path / "m")
    path = root / "machine_measurements.csv"
    with open(path, newline="") as fh:
        row = next(csv.DictReader(fh))
    row.update(
        rr_interval="659", qrs_axis="29999", t_axis="", report_0="  ", report_1="Normal ECG "
    )
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MACHINE_COLUMNS)
        writer.writeheader()
        writer.writerow(row)
    (ref,) = scan(root)
    assert ref.machine["rr_interval"] == 659.0
    assert math.isnan(ref.machine["qrs_axis"]) and math.isnan(ref.machine["t_axis"])
    assert ref.report == ("Normal ECG",)


# ---------------------------------------------------------------------------------------------
# bad inputs


def test_missing_signal_file_is_skipped_by_scan_and_refused_by_load(tmp_path, caplog):
    ref = _write(tmp_path, "rec1", _ecg_like(1000, 12), STANDARD_LEADS)
    _write(tmp_path, "rec2", _ecg_like(1000, 12), STANDARD_LEADS)
    (tmp_path / "rec1.dat").unlink()
    with caplog.at_level(logging.WARNING):
        refs = scan(tmp_path)
    assert [r.study_id for r in refs] == ["rec2"]
    assert "rec1.hea" in caplog.text
    with pytest.raises(DataError, match=r"signal file missing: .*rec1\.dat"):
        load(ref)


@pytest.mark.parametrize(("fmt", "gain"), [("16", 1000.0), ("212", 200.0)])
def test_truncated_signal_file_is_refused(tmp_path, fmt, gain):
    ref = _write(tmp_path, "rec", _ecg_like(1000, 12), STANDARD_LEADS, fmt=fmt, gain=gain)
    assert load(ref, LoadConfig()).signal.shape == (1000, 12)
    dat = tmp_path / "rec.dat"
    full = dat.read_bytes()
    assert len(full) == 1000 * 12 * {"16": 2, "212": 1.5}[fmt]
    dat.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"truncated signal file .*rec\.dat") as err:
        load(ref)
    assert err.value.found == f"{len(full) // 2} bytes"


def test_unreadable_or_missing_header_is_refused(tmp_path):
    ref = _write(tmp_path, "rec", _ecg_like(500, 12), STANDARD_LEADS)
    (tmp_path / "rec.hea").write_text("this is not a header\n")
    with pytest.raises(DataError, match=r"unreadable WFDB header .*rec\.hea"):
        load(ref)
    with pytest.raises(DataError, match=r"header not found: .*nope\.hea"):
        load(dataclasses.replace(ref, path=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="not found"):
        scan(tmp_path / "absent")


def test_eight_lead_record_is_refused_and_kept_when_allowed(tmp_path):
    leads = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    ref = _write(tmp_path, "eight", _ecg_like(1000, 8), leads)
    with pytest.raises(DataError, match=r"'eight'.*8 standard lead.*I, II, V1, V2, V3, V4, V5, V6"):
        load(ref)
    rec = load(ref, LoadConfig(require_leads=8))
    assert rec.leads == leads and rec.signal.shape == (1000, 8)
    assert rec.flags == {"missing_leads": ["III", "aVR", "aVL", "aVF"]}


def test_lead_names_come_from_the_header_in_any_spelling(tmp_path):
    names = ("i", "II", "iii", "AVR", "avf", "aVL", "Lead V1", "v2", "V3", "v-4", "V5", "v6")
    signal = _ecg_like(800, 12)
    rec = load(_write(tmp_path, "names", signal, names))
    assert rec.leads == ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
    np.testing.assert_allclose(rec.lead("avl"), signal[:, 5], atol=1e-3)
    np.testing.assert_allclose(rec.in_order()[:, 4], signal[:, 5], atol=1e-3)
    assert canonical_lead("MLII") is None
    with pytest.raises(DataError, match="no lead"):
        load(
            _write(tmp_path, "eight", _ecg_like(100, 8), STANDARD_LEADS[:8]),
            LoadConfig(require_leads=8),
        ).lead("V6")


def test_250_hz_record_refused_without_resampling_and_resampled_exactly_with(tmp_path):
    fs, n = 250.0, 2500
    t = np.arange(n) / fs
    clean = np.sin(2 * np.pi * 5 * t) + 0.5 * np.cos(2 * np.pi * 12 * t)
    ref = _write(tmp_path, "slow", np.repeat(clean[:, None], 12, axis=1), STANDARD_LEADS, fs=fs)
    with pytest.raises(DataError, match=r"'slow'.*250 Hz, not 500 Hz"):
        load(ref, LoadConfig(resample=False))
    rec = load(ref)
    assert rec.fs == 500.0 and rec.signal.shape == (5000, 12)
    assert rec.flags == {"resampled": ["250 Hz -> 500 Hz"]}
    t2 = np.arange(5000) / 500.0
    truth = np.sin(2 * np.pi * 5 * t2) + 0.5 * np.cos(2 * np.pi * 12 * t2)
    inner = slice(100, -100)  # closed form, away from the edges
    assert np.abs(rec.signal[inner, 0] - truth[inner]).max() < 5e-3
    assert load(ref, LoadConfig(target_fs=None)).fs == 250.0


def test_flat_saturated_and_missing_samples_are_flagged_and_the_record_kept(tmp_path):
    signal = _ecg_like(2000, 12, seed=3)
    signal[:, 8] = 0.002 * np.sin(np.arange(2000) / 10)  # V3: 4 uV peak to peak
    signal[500:560, 10] = 32.767  # V5: 60 samples at the format-16 digital maximum (gain 1000)
    signal[700:705, 1] = -32.767  # II: 5 samples at the minimum, shorter than the run
    signal[900, 0] = np.nan  # I: one missing sample
    ref = _write(tmp_path, "noisy", signal, STANDARD_LEADS)
    rec = load(ref, LoadConfig(saturation_run=20))
    assert rec.flags == {"flat": ["V3"], "saturated": ["V5"], "nan": ["I"]}
    assert rec.signal.shape == (2000, 12) and np.isnan(rec.signal[900, 0])
    assert load(ref, LoadConfig(saturation_run=5)).flags["saturated"] == ["II", "V5"]
    assert "flat" not in load(ref, LoadConfig(flat_mv=0.001)).flags


def test_standardise_applies_the_load_rules_to_in_memory_records(sims):
    rec = sims[0]
    half = standardise(rec, LoadConfig(target_fs=250.0))
    assert half.fs == 250.0 and half.signal.shape == (2500, 12)
    assert half.flags == {"resampled": ["500 Hz -> 250 Hz"]}
    short = EcgRecord(rec.ref, rec.signal[:, :6], rec.fs, rec.leads[:6])
    with pytest.raises(DataError, match="6 standard lead"):
        standardise(short)


@pytest.mark.parametrize(
    "kwargs", [{"target_fs": 0}, {"require_leads": 13}, {"flat_mv": -1}, {"saturation_run": 0}]
)
def test_bad_load_config_is_refused(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        LoadConfig(**kwargs)
