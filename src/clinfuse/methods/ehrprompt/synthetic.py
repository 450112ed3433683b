r"""Synthetic EHR tables with planted signals in structured cells and in free-text notes.

Two generators, both returning an :class:`~clinfuse.methods.ehrprompt.data.EHRTable` whose
``meta`` holds the ground truth (effect sizes, Bayes-optimal scores) and whose ``meta["rows"]``
holds the per-row latent truth:

* :func:`make_synthetic_ehr` (ICU admissions). A latent *critical* flag
  (prevalence 0.3) appears only in the admission note, as a sentence with the keyword
  ``intubated`` or ``vasopressors``; stable patients get a reassuring sentence instead. The
  death logit is

  .. math::

      \eta = \beta_0 + \beta_c\,\text{critical} + \beta_a z_\text{age}
             + \beta_\ell z_\text{lactate} + \beta_h z_\text{hr} + \beta_\text{dx}[\text{diagnosis}]

  with :math:`z` standardised structured values (:math:`z_\text{lactate} = 0` when lactate is
  missing), so the note carries most of the signal and the structured columns a weaker part.
  ICU length of stay is log-normal, :math:`\log \text{LOS} = \log 4 +
  \gamma_\text{dx}[\text{diagnosis}] + \gamma_c\,\text{critical} + \gamma_r\,\text{rehab} +
  \gamma_a z_\text{age} + \varepsilon`, driven mainly by the diagnosis category phrase.
* :func:`make_surgical_table` (surgical duration, a stand-in for the private PASA data):
  :math:`\log \text{minutes} = \log m[\text{procedure}] + \delta_\text{ASA} + \ldots +
  0.35\,\text{adhesions} + 0.25\,\text{revision} + \varepsilon`, where *adhesions* and *revision*
  are stated only in the operative-plan note ("extensive adhesions", "revision").

Notes never state an outcome (:data:`LEAKY_NOTE_PATTERN` matches none of them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from clinfuse.core.errors import ConfigError
from clinfuse.methods.ehrprompt.data import EHRTable
from clinfuse.methods.ehrprompt.prompts import ColumnSpec

__all__ = [
    "DIAGNOSES",
    "LEAKY_NOTE_PATTERN",
    "NOTE_KEYWORD",
    "PROCEDURES",
    "MORTALITY_EFFECTS",
    "LOS_EFFECTS",
    "SURGICAL_EFFECTS",
    "expected_auroc",
    "make_surgical_table",
    "make_synthetic_ehr",
]

LEAKY_NOTE_PATTERN = re.compile(
    r"\b(?:died|dies|dying|death|dead|deceased|expired?|passed away|mortality|survived?|"
    r"discharged?|length of stay|los|hospice|comfort (?:care|measures)|autopsy|morgue|"
    r"minutes?|hours?|hrs?|duration|lasted)\b",
    re.IGNORECASE,
)
"""Outcome words no synthetic note may contain (death, discharge, stay length, durations)."""

# -- ICU table: planted effects ------------------------------------------------------------------
DIAGNOSES: tuple[str, ...] = (
    "sepsis",
    "pneumonia",
    "heart failure",
    "gastrointestinal bleeding",
    "stroke",
    "trauma",
)
_DIAGNOSIS_P = (0.25, 0.2, 0.2, 0.12, 0.12, 0.11)

MORTALITY_EFFECTS: dict[str, Any] = {
    "intercept": -2.75,
    "critical": 3.3,
    "age_z": 0.5,
    "lactate_z": 0.45,
    "heart_rate_z": 0.2,
    "diagnosis": {
        "sepsis": 0.4,
        "pneumonia": 0.2,
        "heart failure": 0.1,
        "gastrointestinal bleeding": 0.0,
        "stroke": 0.3,
        "trauma": -0.2,
    },
}
"""Death logit coefficients; ``*_z`` act on (x - centre) / scale of :data:`_STANDARDISE`."""

LOS_EFFECTS: dict[str, Any] = {
    "intercept_log_days": math.log(4.0),
    "diagnosis": {
        "sepsis": 0.3,
        "pneumonia": 0.1,
        "heart failure": 0.0,
        "gastrointestinal bleeding": -0.2,
        "stroke": 0.5,
        "trauma": 0.6,
    },
    "critical": 0.35,
    "rehab": 0.4,
    "age_z": 0.1,
    "noise_sd": 0.35,
}
"""Log-LOS (days) coefficients; ``rehab`` is the note's physical-therapy sentence."""

# centre, scale of each standardised structured value (lactate on the log scale)
_STANDARDISE: dict[str, tuple[float, float]] = {
    "age": (64.0, 15.0),
    "heart_rate": (92.0, 16.0),
    "log_lactate": (math.log(1.8), 0.5),
}

_CRITICAL_PHRASES = (
    "Intubated in the emergency department for hypoxic respiratory failure.",
    "Remains intubated and sedated on the ventilator.",
    "Started on vasopressors for persistent hypotension.",
    "Requiring vasopressors to keep the mean arterial pressure above 65.",
    "Intubated on arrival and now on vasopressors.",
)
_STABLE_PHRASES = (
    "Breathing comfortably on room air.",
    "Saturating well on 2 L nasal cannula.",
    "Blood pressure stable since arrival.",
    "Alert, oriented and following commands.",
    "Speaking in full sentences without distress.",
)
_REHAB_PHRASE = "Physical therapy consulted for severe deconditioning and poor mobility."
_FILLER = (
    "Family updated at the bedside.",
    "Pain controlled with acetaminophen.",
    "Skin intact on admission.",
    "Home medications reconciled.",
    "Peripheral IV placed in the left forearm.",
    "No known drug allergies.",
    "Tolerating sips of water.",
    "Chest radiograph reviewed with the team.",
)
_DIAGNOSIS_PHRASES: dict[str, tuple[str, ...]] = {
    "sepsis": ("sepsis of urinary source", "suspected sepsis"),
    "pneumonia": ("community-acquired pneumonia", "right lower lobe pneumonia"),
    "heart failure": ("acute decompensated heart failure", "a heart failure exacerbation"),
    "gastrointestinal bleeding": ("an upper gastrointestinal bleed", "melena and anaemia"),
    "stroke": ("an acute ischaemic stroke", "left-sided weakness from a stroke"),
    "trauma": ("multiple injuries after a fall", "blunt trauma from a road accident"),
}
NOTE_KEYWORD = re.compile(r"\b(?:intubated|vasopressors)\b", re.IGNORECASE)
"""The planted mortality keyword: it matches a note iff the row's latent ``critical`` is set."""

# -- surgical table: planted effects ---------------------------------------------------------
PROCEDURES: dict[str, float] = {
    "laparoscopic cholecystectomy": 75.0,
    "inguinal hernia repair": 60.0,
    "total knee arthroplasty": 110.0,
    "colectomy": 180.0,
    "spinal fusion": 220.0,
    "coronary artery bypass graft": 260.0,
}
"""Procedure -> median duration (minutes) of an uncomplicated case at reference covariates."""

SURGICAL_EFFECTS: dict[str, Any] = {
    "procedure_log_minutes": {k: math.log(v) for k, v in PROCEDURES.items()},
    "asa_class": {"I": -0.05, "II": 0.0, "III": 0.06, "IV": 0.12},
    "bmi_per_unit_above_28": 0.012,
    "surgeon_years_above_12": -0.008,
    "emergency": 0.1,
    "extensive_adhesions": 0.35,
    "revision": 0.25,
    "noise_sd": 0.18,
}
"""Log-minutes coefficients; adhesions and revision appear only in the operative-plan note."""

_ADHESION_PHRASE = "Previous surgery at this site; extensive adhesions expected."
_REVISION_PHRASE = "This is a revision of an earlier {procedure}."
_SURGICAL_FILLER = (
    "Consent obtained and site marked.",
    "Antibiotic prophylaxis to be given at induction.",
    "Mechanical thromboprophylaxis planned.",
    "Blood group and screen sent.",
    "Patient fasted from midnight.",
    "Anaesthetic review completed.",
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def expected_auroc(scores: np.ndarray, prob: np.ndarray) -> float:
    r"""Population AUROC of ``scores`` when each label is an independent Bernoulli(``prob``).

    .. math::

        \mathrm{AUC} = \frac{\sum_{i \ne j} p_i (1 - p_j)\,
        \big(\mathbb 1[s_i > s_j] + \tfrac12 \mathbb 1[s_i = s_j]\big)}
        {\sum_{i \ne j} p_i (1 - p_j)}

    With ``scores = prob`` this is the Bayes-optimal AUROC on these covariates. Computed in
    :math:`O(n \log n)` by sorting.

    Shape:
        scores, prob: ``(n,)``. Output: a float in [0, 1].

    Example:
        >>> expected_auroc(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
        1.0
        >>> expected_auroc(np.zeros(3), np.array([0.2, 0.5, 0.9]))
        0.5
    """
    s = np.asarray(scores, dtype=float)
    p = np.asarray(prob, dtype=float)
    values, inverse = np.unique(s, return_inverse=True)
    pos = np.bincount(inverse, weights=p, minlength=values.size)
    neg = np.bincount(inverse, weights=1.0 - p, minlength=values.size)
    self_pairs = np.bincount(inverse, weights=p * (1.0 - p), minlength=values.size)
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])  # negatives with a strictly lower score
    num = np.sum(pos * below) + 0.5 * np.sum(pos * neg - self_pairs)
    den = pos.sum() * neg.sum() - self_pairs.sum()
    return float(num / den)


def _check_size(n: int, seed: int, minimum: int) -> None:
    if n < minimum or not isinstance(seed, int | np.integer):
        raise ConfigError(
            "bad synthetic table size or seed",
            expected=f"n >= {minimum}, integer seed",
            found=f"n={n!r}, seed={seed!r}",
        )


def _split(rng: np.random.Generator, n: int, test_fraction: float = 0.2) -> tuple:
    perm = rng.permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(perm[n_test:]).astype(np.int64), np.sort(perm[:n_test]).astype(np.int64)


def _pick(rng: np.random.Generator, options: Sequence[str], n: int) -> list[str]:
    return [options[k] for k in rng.integers(0, len(options), size=n)]


def _note(sentences: list[str | None]) -> str:
    return " ".join(s for s in sentences if s)


def _z(values: np.ndarray, key: str) -> np.ndarray:
    centre, scale = _STANDARDISE[key]
    return (values - centre) / scale


def _lookup(effects: Mapping[str, float], labels: Sequence[str]) -> np.ndarray:
    return np.array([effects[v] for v in labels], dtype=float)


def make_synthetic_ehr(n: int = 2000, seed: int = 0) -> EHRTable:
    """An ICU-admission table with a planted note keyword for mortality and a diagnosis-driven LOS.

    Columns: ``age`` (years), ``sex``, ``heart_rate`` (beats/min), ``creatinine`` (mg/dL, no
    effect), ``lactate`` (mmol/L, 20% missing), ``diagnosis`` (6 categories), ``diabetes``
    (0/1, no effect) and the text column ``admission_note``. Targets: ``mortality`` (0/1) and
    ``los_days``. The split is a seeded 80/20 permutation.

    ``meta`` holds ``effects`` (:data:`MORTALITY_EFFECTS`, :data:`LOS_EFFECTS`),
    ``note_keyword`` (the planted regex), and the exact population AUROCs
    (:func:`expected_auroc`) of the Bayes score (``bayes_auroc``), of the best score without the
    note (``bayes_auroc_structured``, :math:`E[p \\mid \\text{structured}]`) and of the keyword
    flag alone (``keyword_auroc``); ``bayes_rmse_los`` is the irreducible LOS RMSE.
    ``meta["rows"]`` has ``critical``, ``rehab``, ``mortality_prob`` and ``los_mean`` per row.

    Shape:
        frame: ``(n, 8)``.
    """
    _check_size(n, seed, 10)
    rng = np.random.default_rng(seed)
    age = np.clip(np.round(rng.normal(64.0, 15.0, n)), 18, 95)
    sex = np.where(rng.random(n) < 0.5, "female", "male")
    heart_rate = np.clip(np.round(rng.normal(92.0, 16.0, n)), 35, 190)
    creatinine = np.round(np.exp(rng.normal(math.log(1.1), 0.45, n)), 2)
    lactate = np.round(np.exp(rng.normal(math.log(1.8), 0.5, n)), 1)
    lactate_seen = rng.random(n) >= 0.2
    diagnosis = [DIAGNOSES[k] for k in rng.choice(len(DIAGNOSES), size=n, p=_DIAGNOSIS_P)]
    diabetes = (rng.random(n) < 0.25).astype(np.int64)
    critical = rng.random(n) < 0.3
    rehab = rng.random(n) < 0.25

    m = MORTALITY_EFFECTS
    lactate_z = np.where(lactate_seen, _z(np.log(lactate), "log_lactate"), 0.0)
    eta_structured = (
        m["intercept"]
        + m["age_z"] * _z(age, "age")
        + m["lactate_z"] * lactate_z
        + m["heart_rate_z"] * _z(heart_rate, "heart_rate")
        + _lookup(m["diagnosis"], diagnosis)
    )
    prob = _sigmoid(eta_structured + m["critical"] * critical)
    mortality = (rng.random(n) < prob).astype(np.int64)
    prob_structured = 0.3 * _sigmoid(eta_structured + m["critical"]) + 0.7 * _sigmoid(
        eta_structured
    )

    g = LOS_EFFECTS
    log_los_mean = (
        g["intercept_log_days"]
        + _lookup(g["diagnosis"], diagnosis)
        + g["critical"] * critical
        + g["rehab"] * rehab
        + g["age_z"] * _z(age, "age")
    )
    sd = g["noise_sd"]
    los = np.round(np.exp(log_los_mean + rng.normal(0.0, sd, n)), 2)
    los_mean = np.exp(log_los_mean + sd**2 / 2)
    los_var = (math.exp(sd**2) - 1.0) * np.exp(2 * log_los_mean + sd**2)

    severity = np.where(critical, _pick(rng, _CRITICAL_PHRASES, n), _pick(rng, _STABLE_PHRASES, n))
    n_filler = rng.integers(1, 4, size=n)
    notes = []
    for i in range(n):
        opening = (
            f"{int(age[i])}-year-old {'woman' if sex[i] == 'female' else 'man'} admitted with "
            f"{_DIAGNOSIS_PHRASES[diagnosis[i]][rng.integers(2)]}."
        )
        filler = list(rng.choice(_FILLER, size=n_filler[i], replace=False))
        body = [str(severity[i]), _REHAB_PHRASE if rehab[i] else None, *filler]
        rng.shuffle(body)
        notes.append(_note([opening, *body]))

    frame = pd.DataFrame(
        {
            "age": age,
            "sex": sex.astype(object),
            "heart_rate": heart_rate,
            "creatinine": creatinine,
            "lactate": np.where(lactate_seen, lactate, np.nan),
            "diagnosis": pd.Series(diagnosis, dtype=object),
            "diabetes": diabetes,
            "admission_note": pd.Series(notes, dtype=object),
        }
    )
    specs = (
        ColumnSpec("age", "numeric", "years", "age"),
        ColumnSpec("sex", "categorical", None, "sex"),
        ColumnSpec("heart_rate", "numeric", "beats/min", "heart rate on admission"),
        ColumnSpec("creatinine", "numeric", "mg/dL", "serum creatinine on admission"),
        ColumnSpec("lactate", "numeric", "mmol/L", "blood lactate on admission"),
        ColumnSpec("diagnosis", "categorical", None, "admission diagnosis"),
        ColumnSpec("diabetes", "binary", None, "history of diabetes"),
        ColumnSpec("admission_note", "text", None, "admission note"),
    )
    table = EHRTable(
        name="synthetic_icu",
        frame=frame,
        specs=specs,
        targets={"mortality": mortality, "los_days": los},
        tasks={"mortality": "classification", "los_days": "regression"},
        note_columns=("admission_note",),
        split=_split(np.random.default_rng([seed, 1]), n),
        classes={"mortality": (0, 1)},
        meta={
            "generator": "make_synthetic_ehr",
            "n": n,
            "seed": seed,
            "effects": {"mortality_logit": MORTALITY_EFFECTS, "log_los_days": LOS_EFFECTS},
            "standardise": dict(_STANDARDISE),
            "note_keyword": NOTE_KEYWORD.pattern,
            "critical_prevalence": 0.3,
            "bayes_auroc": expected_auroc(prob, prob),
            "bayes_auroc_structured": expected_auroc(prob_structured, prob),
            "keyword_auroc": expected_auroc(critical.astype(float), prob),
            "bayes_rmse_los": float(np.sqrt(np.mean(los_var))),
            "rows": {
                "critical": critical,
                "rehab": rehab,
                "mortality_prob": prob,
                "los_mean": los_mean,
            },
        },
    )
    return table.validate()


def make_surgical_table(n: int = 1500, seed: int = 0) -> EHRTable:
    """A pre-operative table for surgical duration with note-only complexity phrases.

    Columns: ``procedure`` (6 types, :data:`PROCEDURES`), ``asa_class`` (I-IV), ``age``,
    ``sex`` (no effect), ``bmi`` (kg/m^2), ``surgeon_experience`` (years), ``emergency`` (0/1)
    and the text column ``operative_plan``, which states "extensive adhesions" (20% of cases)
    and/or "revision" (15%) - each lengthens the operation (:data:`SURGICAL_EFFECTS`). Target:
    ``surgical_minutes`` (regression). The split is a seeded 80/20 permutation.

    ``meta`` holds ``effects``, ``bayes_rmse`` (irreducible RMSE in minutes given every cause)
    and ``bayes_rmse_structured`` (the best RMSE without the note); ``meta["rows"]`` holds
    ``adhesions``, ``revision`` and ``expected_minutes`` per row.

    Shape:
        frame: ``(n, 8)``.
    """
    _check_size(n, seed, 10)
    rng = np.random.default_rng(seed)
    names = list(PROCEDURES)
    procedure = [names[k] for k in rng.integers(0, len(names), size=n)]
    asa = [("I", "II", "III", "IV")[k] for k in rng.choice(4, size=n, p=(0.1, 0.45, 0.35, 0.1))]
    age = np.clip(np.round(rng.normal(58.0, 14.0, n)), 18, 92)
    sex = np.where(rng.random(n) < 0.5, "female", "male")
    bmi = np.round(np.clip(rng.normal(28.0, 5.5, n), 16.0, 55.0), 1)
    surgeon = np.round(rng.uniform(1.0, 30.0, n), 0)
    emergency = (rng.random(n) < 0.12).astype(np.int64)
    adhesions = rng.random(n) < 0.2
    revision = rng.random(n) < 0.15

    e = SURGICAL_EFFECTS
    eta_structured = (
        _lookup(e["procedure_log_minutes"], procedure)
        + _lookup(e["asa_class"], asa)
        + e["bmi_per_unit_above_28"] * (bmi - 28.0)
        + e["surgeon_years_above_12"] * (surgeon - 12.0)
        + e["emergency"] * emergency
    )
    eta = eta_structured + e["extensive_adhesions"] * adhesions + e["revision"] * revision
    sd = e["noise_sd"]
    minutes = np.round(np.exp(eta + rng.normal(0.0, sd, n)))
    expected = np.exp(eta + sd**2 / 2)
    var_full = (math.exp(sd**2) - 1.0) * np.exp(2 * eta + sd**2)
    # E[Y | structured] and E[Y^2 | structured], averaging over the two note-only Bernoullis
    m1 = (0.8 + 0.2 * math.exp(e["extensive_adhesions"])) * (0.85 + 0.15 * math.exp(e["revision"]))
    m2 = (0.8 + 0.2 * math.exp(2 * e["extensive_adhesions"])) * (
        0.85 + 0.15 * math.exp(2 * e["revision"])
    )
    mean_s = np.exp(eta_structured + sd**2 / 2) * m1
    var_s = np.exp(2 * eta_structured + 2 * sd**2) * m2 - mean_s**2

    n_filler = rng.integers(1, 3, size=n)
    notes = []
    for i in range(n):
        body = [
            _ADHESION_PHRASE if adhesions[i] else None,
            _REVISION_PHRASE.format(procedure=procedure[i]) if revision[i] else None,
            *rng.choice(_SURGICAL_FILLER, size=n_filler[i], replace=False),
        ]
        rng.shuffle(body)
        urgency = "Emergency" if emergency[i] else "Elective"
        notes.append(_note([f"{urgency} {procedure[i]} under general anaesthesia.", *body]))

    frame = pd.DataFrame(
        {
            "procedure": pd.Series(procedure, dtype=object),
            "asa_class": pd.Series(asa, dtype=object),
            "age": age,
            "sex": sex.astype(object),
            "bmi": bmi,
            "surgeon_experience": surgeon,
            "emergency": emergency,
            "operative_plan": pd.Series(notes, dtype=object),
        }
    )
    specs = (
        ColumnSpec("procedure", "categorical", None, "planned procedure"),
        ColumnSpec("asa_class", "categorical", None, "ASA physical status class"),
        ColumnSpec("age", "numeric", "years", "age"),
        ColumnSpec("sex", "categorical", None, "sex"),
        ColumnSpec("bmi", "numeric", "kg/m^2", "body mass index"),
        ColumnSpec("surgeon_experience", "numeric", "years", "surgeon experience"),
        ColumnSpec("emergency", "binary", None, "emergency operation"),
        ColumnSpec("operative_plan", "text", None, "operative plan note"),
    )
    table = EHRTable(
        name="synthetic_surgery",
        frame=frame,
        specs=specs,
        targets={"surgical_minutes": minutes},
        tasks={"surgical_minutes": "regression"},
        note_columns=("operative_plan",),
        split=_split(np.random.default_rng([seed, 1]), n),
        classes={},
        meta={
            "generator": "make_surgical_table",
            "n": n,
            "seed": seed,
            "effects": {"log_minutes": SURGICAL_EFFECTS},
            "note_phrases": {"extensive_adhesions": "extensive adhesions", "revision": "revision"},
            "bayes_rmse": float(np.sqrt(np.mean(var_full))),
            "bayes_rmse_structured": float(np.sqrt(np.mean(var_s))),
            "rows": {"adhesions": adhesions, "revision": revision, "expected_minutes": expected},
        },
    )
    return table.validate()
