"""A synthetic MIMIC-IV-shaped mini database with planted truths, to test the DeepEN builder.

MIMIC-IV is credentialed: no real row is bundled or downloaded. :func:`write_mimic_demo` writes
the official v2/v3 layout and column names (``hosp/patients``, ``hosp/admissions``,
``hosp/labevents``, ``hosp/d_labitems``, ``icu/icustays``, ``icu/inputevents``,
``icu/chartevents``, ``icu/d_items``) with the real itemids the builder reads, as ``.csv.gz`` or
``.parquet``.

Nine planted subjects come first (:data:`PLANTED_STAYS`), then random patients. The planted
stays test the cohort (a child, a patient with two ICU stays, a never-fed stay, a 10-h stay, a
stay without any weight), the outcome (an in-hospital death, a death 30 days after discharge),
truncation (a 10-day stay) and, in the ``fed`` stay (:data:`PLANTED_FED`), exact values: feeds
that span bins, a half-strength feed, a feed with ``endtime < starttime``, a ``Rewritten`` row,
heart rates with a gap of two bins and one reading on a bin boundary, two glucose values in one
bin, one temperature in Fahrenheit. Everything else is random (``seed``) but plausible.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from clinfuse.core.errors import ConfigError

__all__ = ["PLANTED_FED", "PLANTED_STAYS", "write_mimic_demo"]

PLANTED_STAYS: dict[str, int] = {
    "fed": 30000001,
    "child": 30000002,
    "first_of_two": 30000003,
    "second_of_two": 30000004,
    "never_fed": 30000005,
    "died_in_hospital": 30000006,
    "died_after_discharge": 30000007,
    "short": 30000008,
    "long": 30000009,
    "no_weight": 30000010,
}
"""stay_id of each planted role (``second_of_two`` belongs to the subject of ``first_of_two``)."""

PLANTED_FED: dict[str, Any] = {
    "intime": pd.Timestamp("2150-03-01 07:23:00"),
    "los_hours": 70.5,
    "weight_kg": 80.0,
    # (itemid, start h, end h, amount mL, statusdescription), hours since intime
    "feeds": (
        (229010, 3.0, 6.0, 300.0, "FinishedRunning"),  # Jevity 1.2 (Full) over bins 0 and 1
        (226047, 8.0, 12.0, 200.0, "FinishedRunning"),  # Replete (1/2), all in bin 2
        (229010, 14.0, 13.0, 500.0, "FinishedRunning"),  # endtime < starttime: skipped
        (225970, 13.5, 13.5, 14.0, "FinishedRunning"),  # Beneprotein bolus, 14 g, bin 3
        (229010, 17.0, 19.0, 999.0, "Rewritten"),  # superseded order: skipped
    ),
    "maintenance": (229010, 20.0, 50.0, 4.0),  # itemid, from h, mL/h, chunk h: to the end
    "hr": ((0.5, 80.0), (3.0 + 59.0 / 60.0, 90.0), (4.0, 100.0), (16.5, 70.0)),
    "glucose": ((1.0, 150.0), (3.0, 130.0)),  # lab 50931, both in bin 0
    "temp_f": ((2.0, 98.6),),  # chart 223761, the only temperature in bin 0
    "quiet_until": 20.0,  # no other HR, temperature, glucose or lactate before this hour
}
"""The ``fed`` stay: every feed, heart rate, glucose, temperature and lactate before 20 h."""

_BASE = pd.Timestamp("2150-01-01 00:00:00")
_SUBJECT0, _HADM0, _STAY0 = 10000001, 20000001, 30000001

# chart vitals: itemid -> (label, abbreviation, unit, mean, sd, lo, hi)
_VITALS: dict[int, tuple[str, str, str, float, float, float, float]] = {
    220045: ("Heart Rate", "HR", "bpm", 90.0, 15.0, 30.0, 180.0),
    220179: ("Non Invasive Blood Pressure systolic", "NBPs", "mmHg", 120.0, 18.0, 60.0, 220.0),
    220180: ("Non Invasive Blood Pressure diastolic", "NBPd", "mmHg", 65.0, 10.0, 30.0, 120.0),
    220181: ("Non Invasive Blood Pressure mean", "NBPm", "mmHg", 80.0, 12.0, 40.0, 150.0),
    220050: ("Arterial Blood Pressure systolic", "ABPs", "mmHg", 118.0, 18.0, 60.0, 220.0),
    220051: ("Arterial Blood Pressure diastolic", "ABPd", "mmHg", 62.0, 10.0, 30.0, 120.0),
    220052: ("Arterial Blood Pressure mean", "ABPm", "mmHg", 78.0, 12.0, 40.0, 150.0),
    220210: ("Respiratory Rate", "RR", "insp/min", 20.0, 5.0, 6.0, 45.0),
    220277: ("O2 saturation pulseoxymetry", "SpO2", "%", 96.0, 2.0, 80.0, 100.0),
}
_TEMPS = {
    223762: ("Temperature Celsius", "Temperature C", "°C"),
    223761: ("Temperature Fahrenheit", "Temperature F", "°F"),
}
_GCS = {
    220739: ("GCS - Eye Opening", "GCS - Eye Opening", 4),
    223900: ("GCS - Verbal Response", "GCS - Verbal Response", 5),
    223901: ("GCS - Motor Response", "GCS - Motor Response", 6),
}
_WEIGHTS = {
    226512: ("Admission Weight (Kg)", "Admission Weight (Kg)", "kg"),
    224639: ("Daily Weight", "Daily Weight", "kg"),
}
_NACL = 225158  # NaCl 0.9%, a non-enteral input
_POWDERS = (225970, 229583)  # Beneprotein, charted in grams here (unverified for MIMIC)

# labs: itemid -> (label, fluid, category, unit, mean, sd, lo, hi)
_LABS: dict[int, tuple[str, str, str, str, float, float, float, float]] = {
    50931: ("Glucose", "Blood", "Chemistry", "mg/dL", 140.0, 35.0, 40.0, 500.0),
    50983: ("Sodium", "Blood", "Chemistry", "mEq/L", 139.0, 4.0, 120.0, 160.0),
    50971: ("Potassium", "Blood", "Chemistry", "mEq/L", 4.1, 0.5, 2.5, 6.5),
    50902: ("Chloride", "Blood", "Chemistry", "mEq/L", 103.0, 5.0, 85.0, 125.0),
    50882: ("Bicarbonate", "Blood", "Chemistry", "mEq/L", 24.0, 4.0, 10.0, 40.0),
    50970: ("Phosphate", "Blood", "Chemistry", "mg/dL", 3.4, 1.0, 0.8, 9.0),
    50960: ("Magnesium", "Blood", "Chemistry", "mg/dL", 2.0, 0.3, 1.0, 4.0),
    50912: ("Creatinine", "Blood", "Chemistry", "mg/dL", 1.2, 0.7, 0.3, 8.0),
    51006: ("Urea Nitrogen", "Blood", "Chemistry", "mg/dL", 25.0, 12.0, 4.0, 120.0),
    50813: ("Lactate", "Blood", "Blood Gas", "mmol/L", 1.8, 0.9, 0.4, 12.0),
    50862: ("Albumin", "Blood", "Chemistry", "g/dL", 3.1, 0.5, 1.5, 5.0),
    50885: ("Bilirubin, Total", "Blood", "Chemistry", "mg/dL", 1.0, 0.8, 0.1, 15.0),
    51265: ("Platelet Count", "Blood", "Hematology", "K/uL", 200.0, 80.0, 10.0, 600.0),
    51301: ("White Blood Cells", "Blood", "Hematology", "K/uL", 11.0, 4.0, 0.5, 40.0),
    51222: ("Hemoglobin", "Blood", "Hematology", "g/dL", 10.0, 1.8, 5.0, 17.0),
    51237: ("INR(PT)", "Blood", "Hematology", "", 1.3, 0.3, 0.8, 5.0),
}

_CAREUNITS = (
    "Medical Intensive Care Unit (MICU)",
    "Surgical Intensive Care Unit (SICU)",
    "Medical/Surgical Intensive Care Unit (MICU/SICU)",
    "Cardiac Vascular Intensive Care Unit (CVICU)",
    "Trauma SICU (TSICU)",
)
_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
# itemids the random feeds draw from: full and diluted strengths of common formulas
_RANDOM_FEEDS = (229010, 229011, 229297, 229296, 225930, 221207, 226019, 226047, 227695)

_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"),
    "admissions": (
        "subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
        "admit_provider_id", "admission_location", "discharge_location", "insurance",
        "language", "marital_status", "race", "edregtime", "edouttime", "hospital_expire_flag",
    ),
    "icustays": (
        "subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime",
        "outtime", "los",
    ),
    "inputevents": (
        "subject_id", "hadm_id", "stay_id", "caregiver_id", "starttime", "endtime", "storetime",
        "itemid", "amount", "amountuom", "rate", "rateuom", "orderid", "linkorderid",
        "ordercategoryname", "secondaryordercategoryname", "ordercomponenttypedescription",
        "ordercategorydescription", "patientweight", "totalamount", "totalamountuom",
        "isopenbag", "continueinnextdept", "statusdescription", "originalamount",
        "originalrate",
    ),
    "chartevents": (
        "subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid",
        "value", "valuenum", "valueuom", "warning",
    ),
    "labevents": (
        "labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id",
        "charttime", "storetime", "value", "valuenum", "valueuom", "ref_range_lower",
        "ref_range_upper", "flag", "priority", "comments",
    ),
    "d_items": (
        "itemid", "label", "abbreviation", "linksto", "category", "unitname", "param_type",
        "lownormalvalue", "highnormalvalue",
    ),
    "d_labitems": ("itemid", "label", "fluid", "category"),
}  # fmt: skip
_FOLDER = {
    "patients": "hosp",
    "admissions": "hosp",
    "labevents": "hosp",
    "d_labitems": "hosp",
    "icustays": "icu",
    "inputevents": "icu",
    "chartevents": "icu",
    "d_items": "icu",
}
_TIME_COLUMNS = {
    "admittime", "dischtime", "deathtime", "edregtime", "edouttime", "intime", "outtime",
    "starttime", "endtime", "storetime", "charttime",
}  # fmt: skip


@dataclass(frozen=True)
class _Stay:
    """Plan of one ICU stay before its events are drawn."""

    subject: int
    hadm: int
    stay: int
    intime: pd.Timestamp
    los_hours: float
    weight: float | None  # patientweight on inputevents (None: not recorded)
    chart_weight: float | None  # admission weight charted (None: not charted)
    fed: bool
    feeds: tuple[tuple[int, float, float, float, str], ...] = ()
    quiet: dict[int, float] = field(default_factory=dict)  # itemid -> no random values before h


@dataclass
class _Tables:
    """Rows of every table, appended as dicts."""

    rows: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {name: [] for name in _COLUMNS}
    )
    next_id: dict[str, int] = field(default_factory=lambda: {"order": 1, "lab": 1, "spec": 1})

    def add(self, table: str, **row: Any) -> None:
        self.rows[table].append(row)

    def new_id(self, kind: str) -> int:
        self.next_id[kind] += 1
        return self.next_id[kind]


def _hours(t0: pd.Timestamp, h: float) -> pd.Timestamp:
    return t0 + pd.Timedelta(seconds=round(h * 3600.0))


def _add_feed(
    tab: _Tables, rng: np.random.Generator, st: _Stay, feed: tuple[int, float, float, float, str]
) -> None:
    itemid, s_h, e_h, amount, status = feed
    dur = max(e_h - s_h, 1e-9)
    uom = "grams" if itemid in _POWDERS else "mL"
    order = tab.new_id("order")
    tab.add(
        "inputevents",
        subject_id=st.subject,
        hadm_id=st.hadm,
        stay_id=st.stay,
        caregiver_id=int(rng.integers(1000, 99999)),
        starttime=_hours(st.intime, s_h),
        endtime=_hours(st.intime, e_h),
        storetime=_hours(st.intime, max(s_h, e_h) + 0.1),
        itemid=itemid,
        amount=amount,
        amountuom=uom,
        rate=round(amount / dur, 4) if e_h > s_h else None,
        rateuom=f"{uom}/hour" if e_h > s_h else None,
        orderid=order,
        linkorderid=order,
        ordercategoryname="13-Enteral Nutrition",
        secondaryordercategoryname=None,
        ordercomponenttypedescription="Main order parameter",
        ordercategorydescription="Continuous Med",
        patientweight=st.weight,
        totalamount=amount,
        totalamountuom=uom,
        isopenbag=0,
        continueinnextdept=0,
        statusdescription=status,
        originalamount=amount,
        originalrate=round(amount / dur, 4) if e_h > s_h else None,
    )


def _add_nacl(tab: _Tables, rng: np.random.Generator, st: _Stay, s_h: float) -> None:
    order = tab.new_id("order")
    tab.add(
        "inputevents",
        subject_id=st.subject,
        hadm_id=st.hadm,
        stay_id=st.stay,
        caregiver_id=int(rng.integers(1000, 99999)),
        starttime=_hours(st.intime, s_h),
        endtime=_hours(st.intime, s_h + 0.5),
        storetime=_hours(st.intime, s_h + 0.6),
        itemid=_NACL,
        amount=500.0,
        amountuom="mL",
        rate=1000.0,
        rateuom="mL/hour",
        orderid=order,
        linkorderid=order,
        ordercategoryname="03-IV Fluid Bolus",
        secondaryordercategoryname=None,
        ordercomponenttypedescription="Main order parameter",
        ordercategorydescription="Bolus",
        patientweight=st.weight,
        totalamount=500.0,
        totalamountuom="mL",
        isopenbag=0,
        continueinnextdept=0,
        statusdescription="FinishedRunning",
        originalamount=500.0,
        originalrate=1000.0,
    )


def _chart(
    tab: _Tables, rng: np.random.Generator, st: _Stay, h: float, item: int, v: float, uom: str
) -> None:
    tab.add(
        "chartevents",
        subject_id=st.subject,
        hadm_id=st.hadm,
        stay_id=st.stay,
        caregiver_id=int(rng.integers(1000, 99999)),
        charttime=_hours(st.intime, h),
        storetime=_hours(st.intime, h + 0.05),
        itemid=item,
        value=f"{v:g}",
        valuenum=v,
        valueuom=uom,
        warning=0,
    )


def _lab(tab: _Tables, st: _Stay, h: float, item: int, v: float) -> None:
    label, _, _, unit, mean, sd, _, _ = _LABS[item]
    lo, hi = mean - 1.5 * sd, mean + 1.5 * sd
    tab.add(
        "labevents",
        labevent_id=tab.new_id("lab"),
        subject_id=st.subject,
        hadm_id=st.hadm,
        specimen_id=tab.new_id("spec"),
        itemid=item,
        order_provider_id=None,
        charttime=_hours(st.intime, h),
        storetime=_hours(st.intime, h + 1.0),
        value=f"{v:g}",
        valuenum=v,
        valueuom=unit,
        ref_range_lower=round(lo, 2),
        ref_range_upper=round(hi, 2),
        flag="abnormal" if not lo <= v <= hi else None,
        priority="ROUTINE",
        comments=None,
    )


def _random_events(tab: _Tables, rng: np.random.Generator, st: _Stay) -> None:
    """Hourly vitals, 4-hourly temperature and GCS, daily weights, 12-hourly labs, feeds."""
    los = st.los_hours
    arterial = bool(rng.random() < 0.4)
    bp_items = (220050, 220051, 220052) if arterial else (220179, 220180, 220181)
    vital_items = (220045, *bp_items, 220210, 220277)
    level = {item: rng.normal(_VITALS[item][3], _VITALS[item][4] / 2) for item in vital_items}
    for h in np.arange(0.25, los, 1.0):
        for item in vital_items:
            if h < st.quiet.get(item, -1.0) or rng.random() < 0.1:
                continue
            _, _, uom, _, sd, lo, hi = _VITALS[item]
            v = round(float(np.clip(rng.normal(level[item], sd / 3), lo, hi)), 1)
            _chart(tab, rng, st, h, item, v, uom)
    fahrenheit = bool(rng.random() < 0.5)
    t_item = 223761 if fahrenheit else 223762
    for h in np.arange(1.0, los, 4.0):
        if h >= st.quiet.get(t_item, -1.0):
            c = float(np.clip(rng.normal(37.2, 0.6), 35.0, 40.5))
            v = round(c * 9.0 / 5.0 + 32.0, 1) if fahrenheit else round(c, 1)
            _chart(tab, rng, st, h, t_item, v, _TEMPS[t_item][2])
        for item, (_, _, top) in _GCS.items():
            _chart(tab, rng, st, h + 0.1, item, float(rng.integers(max(1, top - 3), top + 1)), "")
    if st.chart_weight is not None:
        _chart(tab, rng, st, 0.5, 226512, st.chart_weight, "kg")
        for h in np.arange(24.0, los, 24.0):
            _chart(tab, rng, st, h, 224639, round(st.chart_weight + rng.normal(0, 1.5), 1), "kg")
    for h in np.arange(-10.0 + rng.uniform(0, 4), los, 12.0):
        for item, (_, _, _, _, mean, sd, lo, hi) in _LABS.items():
            if h < st.quiet.get(item, -1e9):
                continue
            v = round(float(np.clip(rng.normal(mean, sd), lo, hi)), 1)
            _lab(tab, st, h + rng.uniform(0, 0.5), item, v)
    for feed in st.feeds:
        _add_feed(tab, rng, st, feed)
    if rng.random() < 0.5:
        _add_nacl(tab, rng, st, float(rng.uniform(0, min(los, 12.0))))


def _random_feeds(
    rng: np.random.Generator, los: float
) -> tuple[tuple[int, float, float, float, str], ...]:
    """Continuous feeds in 1-6 h pieces with pauses, from a start in the first day."""
    itemid = int(rng.choice(_RANDOM_FEEDS))
    rate = float(rng.choice([20.0, 30.0, 40.0, 50.0, 60.0, 70.0]))
    feeds = []
    h = float(rng.uniform(1.0, min(20.0, los / 2)))
    while h < los - 0.5:
        dur = min(float(rng.uniform(1.0, 6.0)), los - h)
        feeds.append(
            (itemid, round(h, 3), round(h + dur, 3), round(rate * dur, 2), "FinishedRunning")
        )
        h += dur + (float(rng.uniform(0.5, 4.0)) if rng.random() < 0.3 else 0.0)
        if rng.random() < 0.15:
            rate = float(np.clip(rate + rng.choice([-10.0, 10.0, 20.0]), 10.0, 90.0))
    return tuple(feeds)


def _patient(
    tab: _Tables,
    rng: np.random.Generator,
    stays: list[_Stay],
    age: int,
    *,
    died_in_hospital: bool = False,
    dod_days_after_discharge: float | None = None,
) -> None:
    """Write a patient, one admission per ICU stay, the stays and their events."""
    subject = stays[0].subject
    dod = None
    for k, st in enumerate(stays):
        outtime = _hours(st.intime, st.los_hours)
        last = k == len(stays) - 1
        dies_here = died_in_hospital and last
        admittime = st.intime - pd.Timedelta(hours=float(rng.uniform(1, 30)))
        dischtime = (
            outtime if dies_here else outtime + pd.Timedelta(hours=float(rng.uniform(6, 120)))
        )
        if dies_here:
            dod = dischtime.normalize()
        elif last and dod_days_after_discharge is not None:
            dod = (dischtime + pd.Timedelta(days=dod_days_after_discharge)).normalize()
        tab.add(
            "admissions",
            subject_id=subject,
            hadm_id=st.hadm,
            admittime=admittime,
            dischtime=dischtime,
            deathtime=dischtime if dies_here else None,
            admission_type=str(rng.choice(["EW EMER.", "URGENT", "SURGICAL SAME DAY ADMISSION"])),
            admit_provider_id=f"P{int(rng.integers(10000, 99999))}",
            admission_location="EMERGENCY ROOM",
            discharge_location="DIED" if dies_here else "HOME",
            insurance="Other",
            language="ENGLISH",
            marital_status=None,
            race="UNKNOWN",
            edregtime=None,
            edouttime=None,
            hospital_expire_flag=int(dies_here),
        )
        unit = str(rng.choice(_CAREUNITS))
        tab.add(
            "icustays",
            subject_id=subject,
            hadm_id=st.hadm,
            stay_id=st.stay,
            first_careunit=unit,
            last_careunit=unit,
            intime=st.intime,
            outtime=outtime,
            los=st.los_hours / 24.0,
        )
        _random_events(tab, rng, st)
    tab.add(
        "patients",
        subject_id=subject,
        gender=str(rng.choice(["M", "F"])),
        anchor_age=age,
        anchor_year=_BASE.year,
        anchor_year_group=str(rng.choice(_YEAR_GROUPS)),
        dod=dod,
    )


def _planted(tab: _Tables, rng: np.random.Generator) -> int:
    """Write the planted patients; return how many subjects were used."""
    ids = PLANTED_STAYS

    def stay(role: str, subject: int, day: float, los: float, **kw: Any) -> _Stay:
        k = ids[role] - _STAY0
        fed = kw.pop("fed", True)
        weight = kw.pop("weight", 75.0)
        feeds = _random_feeds(rng, los) if fed else ()
        return _Stay(
            subject=subject,
            hadm=_HADM0 + k,
            stay=ids[role],
            intime=(_BASE + pd.Timedelta(days=day)).round("min"),
            los_hours=los,
            weight=weight,
            chart_weight=kw.pop("chart_weight", weight),
            fed=fed,
            feeds=feeds,
            **kw,
        )

    p = PLANTED_FED
    quiet_h = p["quiet_until"]
    item, start, rate, chunk = p["maintenance"]
    maint = tuple(
        (
            item,
            h,
            min(h + chunk, p["los_hours"]),
            rate * (min(h + chunk, p["los_hours"]) - h),
            "FinishedRunning",
        )
        for h in np.arange(start, p["los_hours"], chunk)
    )
    fed = _Stay(
        subject=_SUBJECT0,
        hadm=_HADM0,
        stay=ids["fed"],
        intime=p["intime"],
        los_hours=p["los_hours"],
        weight=p["weight_kg"],
        chart_weight=p["weight_kg"],
        fed=True,
        feeds=tuple(p["feeds"]) + maint,
        quiet=dict.fromkeys((220045, 223761, 223762, 50931, 50813), quiet_h),
    )
    _patient(tab, rng, [fed], 65)
    for h, v in p["hr"]:
        _chart(tab, rng, fed, h, 220045, v, "bpm")
    for h, v in p["temp_f"]:
        _chart(tab, rng, fed, h, 223761, v, "°F")
    for h, v in p["glucose"]:
        _lab(tab, fed, h, 50931, v)

    s = _SUBJECT0
    _patient(tab, rng, [stay("child", s + 1, 70, 60.0)], 12)
    _patient(
        tab,
        rng,
        [stay("first_of_two", s + 2, 80, 50.0), stay("second_of_two", s + 2, 120, 60.0)],
        58,
    )
    _patient(tab, rng, [stay("never_fed", s + 3, 90, 48.0, fed=False)], 71)
    _patient(
        tab,
        rng,
        [stay("died_in_hospital", s + 4, 100, 47.0, weight=None, chart_weight=70.0)],
        80,
        died_in_hospital=True,
    )
    _patient(
        tab,
        rng,
        [stay("died_after_discharge", s + 5, 110, 40.0)],
        77,
        dod_days_after_discharge=30.0,
    )
    _patient(tab, rng, [stay("short", s + 6, 130, 10.0)], 45)
    _patient(tab, rng, [stay("long", s + 7, 140, 240.0)], 52)
    _patient(tab, rng, [stay("no_weight", s + 8, 150, 30.0, weight=None, chart_weight=None)], 60)
    return 9


def _dictionaries(tab: _Tables) -> None:
    from clinfuse.methods.deepen.mimic import load_products

    for row in load_products().itertuples():
        tab.add(
            "d_items",
            itemid=row.itemid,
            label=row.label,
            abbreviation=row.label,
            linksto="inputevents",
            category="Nutrition - Enteral",
            unitname=row.unit,
            param_type="Solution",
            lownormalvalue=None,
            highnormalvalue=None,
        )
    tab.add(
        "d_items",
        itemid=_NACL,
        label="NaCl 0.9%",
        abbreviation="NaCl 0.9%",
        linksto="inputevents",
        category="Fluids/Intake",
        unitname="mL",
        param_type="Solution",
        lownormalvalue=None,
        highnormalvalue=None,
    )
    charted = {
        **{i: (v[0], v[1], v[2], "Routine Vital Signs", v[5], v[6]) for i, v in _VITALS.items()},
        **{i: (*v, "Routine Vital Signs", None, None) for i, v in _TEMPS.items()},
        **{i: (v[0], v[1], "", "Neurological", None, None) for i, v in _GCS.items()},
        **{i: (*v, "General", None, None) for i, v in _WEIGHTS.items()},
    }
    for itemid, (label, abbr, unit, cat, lo, hi) in sorted(charted.items()):
        tab.add(
            "d_items",
            itemid=itemid,
            label=label,
            abbreviation=abbr,
            linksto="chartevents",
            category=cat,
            unitname=unit,
            param_type="Numeric",
            lownormalvalue=lo,
            highnormalvalue=hi,
        )
    for itemid, (label, fluid, cat, *_rest) in sorted(_LABS.items()):
        tab.add("d_labitems", itemid=itemid, label=label, fluid=fluid, category=cat)


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    for col in columns:
        if col in _TIME_COLUMNS:
            frame[col] = pd.to_datetime(frame[col])
    if "dod" in frame:
        frame["dod"] = pd.to_datetime(frame["dod"])
    return frame


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    out = frame.copy()
    for col in out.columns:
        if col in _TIME_COLUMNS:
            out[col] = out[col].dt.strftime("%Y-%m-%d %H:%M:%S")
        elif col == "dod":
            out[col] = out[col].dt.strftime("%Y-%m-%d")
    out.to_csv(path, index=False, compression="gzip")


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    frame.to_parquet(path, index=False)


_WRITERS: dict[str, tuple[str, Callable[[pd.DataFrame, Path], None]]] = {
    "csv": (".csv.gz", _write_csv),
    "parquet": (".parquet", _write_parquet),
}


def write_mimic_demo(
    folder: str | Path,
    n_patients: int = 40,
    seed: int = 0,
    fmt: Literal["csv", "parquet"] = "csv",
) -> Path:
    """Write the synthetic mini MIMIC-IV under ``folder/hosp`` and ``folder/icu``; return folder.

    ``n_patients`` counts subjects: the 9 planted ones (:data:`PLANTED_STAYS`) plus random
    ones (about 10% children, 15% never fed, 15% with a second ICU stay, 20% in-hospital deaths,
    stays of 1-8 days). Each file is written to a temporary name and renamed.

    Shape:
        about ``n_patients * 600`` chart events and ``n_patients * 150`` lab events.

    Example:
        >>> import tempfile
        >>> root = write_mimic_demo(tempfile.mkdtemp(), n_patients=9)
        >>> sorted(p.name for p in (root / "icu").iterdir())[:2]
        ['chartevents.csv.gz', 'd_items.csv.gz']
    """
    if fmt not in _WRITERS:
        raise ConfigError("unknown demo format", expected=sorted(_WRITERS), found=fmt)
    if n_patients < 9:
        raise ConfigError(
            "the demo needs at least its 9 planted patients", expected=">= 9", found=n_patients
        )
    rng = np.random.default_rng(seed)
    tab = _Tables()
    used = _planted(tab, rng)
    next_stay = max(PLANTED_STAYS.values()) + 1
    for i in range(used, n_patients):
        subject = _SUBJECT0 + i
        age = int(rng.integers(2, 17)) if rng.random() < 0.1 else int(rng.integers(18, 91))
        n_stays = 2 if rng.random() < 0.15 else 1
        day = float(rng.uniform(0, 300))
        stays = []
        for _ in range(n_stays):
            los = float(rng.uniform(20.0, 8 * 24.0))
            fed = bool(rng.random() >= 0.15)
            weight = round(float(rng.normal(78, 15)), 1)
            stays.append(
                _Stay(
                    subject=subject,
                    hadm=_HADM0 + next_stay - _STAY0,
                    stay=next_stay,
                    intime=(_BASE + pd.Timedelta(days=day)).round("min"),
                    los_hours=los,
                    weight=weight,
                    chart_weight=weight,
                    fed=fed,
                    feeds=_random_feeds(rng, los) if fed else (),
                )
            )
            next_stay += 1
            day += los / 24.0 + float(rng.uniform(5, 60))
        _patient(tab, rng, stays, age, died_in_hospital=bool(rng.random() < 0.2))
    _dictionaries(tab)

    root = Path(folder)
    suffix, writer = _WRITERS[fmt]
    for name, columns in _COLUMNS.items():
        target = root / _FOLDER[name] / f"{name}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        writer(_frame(tab.rows[name], columns), tmp)
        os.replace(tmp, target)
    return root
