"""Synthetic EHR tables: planted note and structured effects, exact AUROC bounds, no leaks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from clinfuse.core.errors import ConfigError
from clinfuse.methods.ehrprompt.data import EHRTable
from clinfuse.methods.ehrprompt.synthetic import (
    DIAGNOSES,
    LEAKY_NOTE_PATTERN,
    LOS_EFFECTS,
    NOTE_KEYWORD,
    PROCEDURES,
    SURGICAL_EFFECTS,
    expected_auroc,
    make_surgical_table,
    make_synthetic_ehr,
)


@pytest.fixture(scope="module")
def icu() -> EHRTable:
    return make_synthetic_ehr(n=2000, seed=0)


@pytest.fixture(scope="module")
def surgery() -> EHRTable:
    return make_surgical_table(n=1500, seed=0)


def _keyword(table: EHRTable) -> np.ndarray:
    return table.frame["admission_note"].map(lambda s: bool(NOTE_KEYWORD.search(s))).to_numpy()


# -- the AUROC oracle --------------------------------------------------------------------------
def test_expected_auroc_matches_brute_force_pairs() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.98, 150)
    scores = np.round(rng.normal(size=150), 1)  # many ties
    num = den = 0.0
    for i in range(150):
        for j in range(150):
            if i != j:
                w = p[i] * (1 - p[j])
                num += w * ((scores[i] > scores[j]) + 0.5 * (scores[i] == scores[j]))
                den += w
    assert expected_auroc(scores, p) == pytest.approx(num / den, rel=1e-12)


def test_bayes_auroc_matches_label_draws(icu: EHRTable) -> None:
    prob = icu.meta["rows"]["mortality_prob"]
    rng = np.random.default_rng(0)
    draws = [roc_auc_score(rng.random(prob.size) < prob, prob) for _ in range(200)]
    assert np.mean(draws) == pytest.approx(icu.meta["bayes_auroc"], abs=0.005)


# -- ICU table -------------------------------------------------------------------------------
def test_seeds_reproduce_and_differ() -> None:
    a, b, c = (
        make_synthetic_ehr(300, seed=5),
        make_synthetic_ehr(300, seed=5),
        make_synthetic_ehr(300, seed=6),
    )
    pd.testing.assert_frame_equal(a.frame, b.frame)
    for name in a.targets:
        np.testing.assert_array_equal(a.targets[name], b.targets[name])
    np.testing.assert_array_equal(a.split[1], b.split[1])
    assert not a.frame["admission_note"].equals(c.frame["admission_note"])
    s1, s2 = make_surgical_table(200, seed=1), make_surgical_table(200, seed=1)
    pd.testing.assert_frame_equal(s1.frame, s2.frame)
    np.testing.assert_array_equal(s1.targets["surgical_minutes"], s2.targets["surgical_minutes"])


def test_note_keyword_is_the_planted_latent_and_predicts_death(icu: EHRTable) -> None:
    keyword = _keyword(icu)
    np.testing.assert_array_equal(keyword, icu.meta["rows"]["critical"])
    y = icu.targets["mortality"]
    auroc = roc_auc_score(y, keyword)
    assert auroc > 0.75
    assert auroc == pytest.approx(icu.meta["keyword_auroc"], abs=0.03)


def test_structured_columns_alone_are_clearly_weaker(icu: EHRTable) -> None:
    m = icu.meta
    assert m["keyword_auroc"] > 0.75
    assert m["bayes_auroc"] - m["bayes_auroc_structured"] > 0.15  # the best no-note score
    assert m["keyword_auroc"] - m["bayes_auroc_structured"] > 0.1
    # a fitted model: structured-only logistic regression vs the same plus the keyword flag
    x = icu.frame.drop(columns="admission_note").copy()
    x["lactate"] = x["lactate"].fillna(x["lactate"].median())
    numeric = ["age", "heart_rate", "creatinine", "lactate", "diabetes"]
    pre = ColumnTransformer(
        [("num", StandardScaler(), numeric), ("cat", OneHotEncoder(), ["sex", "diagnosis"])]
    )
    (train, test), y = icu.split, icu.targets["mortality"]

    def fit_auroc(frame: pd.DataFrame, cols: ColumnTransformer) -> float:
        model = make_pipeline(cols, LogisticRegression(max_iter=1000))
        model.fit(frame.iloc[train], y[train])
        return roc_auc_score(y[test], model.predict_proba(frame.iloc[test])[:, 1])

    structured = fit_auroc(x, pre)
    x["keyword"] = _keyword(icu).astype(float)
    pre_kw = ColumnTransformer(
        [
            ("num", StandardScaler(), [*numeric, "keyword"]),
            ("cat", OneHotEncoder(), ["sex", "diagnosis"]),
        ]
    )
    with_note = fit_auroc(x, pre_kw)
    assert structured < roc_auc_score(y, x["keyword"]) - 0.05
    assert with_note - structured > 0.1  # so "removing notes costs >= 0.05 AUROC" is fair
    assert structured == pytest.approx(m["bayes_auroc_structured"], abs=0.05)


def test_class_balance_is_sane(icu: EHRTable) -> None:
    y = icu.targets["mortality"]
    assert 0.18 < y.mean() < 0.35
    assert icu.meta["rows"]["critical"].mean() == pytest.approx(0.3, abs=0.03)
    train, test = icu.split
    assert (train.size, test.size) == (1600, 400)
    assert 0.15 < y[test].mean() < 0.4 and set(icu.classes["mortality"]) == {0, 1}
    assert icu.targets["los_days"].min() > 0


def test_los_recovers_the_planted_diagnosis_and_note_effects(icu: EHRTable) -> None:
    f, rows = icu.frame, icu.meta["rows"]
    rehab = f["admission_note"].str.contains("Physical therapy consulted").to_numpy()
    np.testing.assert_array_equal(rehab, rows["rehab"])
    dummies = pd.get_dummies(f["diagnosis"]).reindex(columns=DIAGNOSES).to_numpy(dtype=float)
    z_age = (f["age"].to_numpy() - 64.0) / 15.0
    design = np.column_stack([dummies, rows["critical"], rehab, z_age])
    coef, *_ = np.linalg.lstsq(design, np.log(icu.targets["los_days"]), rcond=None)
    planted = [LOS_EFFECTS["intercept_log_days"] + LOS_EFFECTS["diagnosis"][d] for d in DIAGNOSES]
    np.testing.assert_allclose(coef[:6], planted, atol=0.07)
    np.testing.assert_allclose(coef[6:], [0.35, 0.4, 0.1], atol=0.05)
    resid = np.log(icu.targets["los_days"]) - design @ coef
    assert resid.std() == pytest.approx(LOS_EFFECTS["noise_sd"], abs=0.02)


def test_notes_never_state_the_outcome(icu: EHRTable, surgery: EHRTable) -> None:
    for probe in ("The patient died.", "Expired at 03:00.", "Discharged home.", "took 95 minutes"):
        assert LEAKY_NOTE_PATTERN.search(probe)  # the guard can fire
    for table, col in ((icu, "admission_note"), (surgery, "operative_plan")):
        hits = [s for s in table.frame[col] if LEAKY_NOTE_PATTERN.search(s)]
        assert hits == []


# -- surgical table ----------------------------------------------------------------------------
def test_surgical_note_phrases_lengthen_the_operation(surgery: EHRTable) -> None:
    f, rows = surgery.frame, surgery.meta["rows"]
    plan = f["operative_plan"]
    np.testing.assert_array_equal(plan.str.contains("extensive adhesions"), rows["adhesions"])
    np.testing.assert_array_equal(plan.str.contains("revision"), rows["revision"])
    asa = f["asa_class"].map({"I": -0.05, "II": 0.0, "III": 0.06, "IV": 0.12}).to_numpy()
    offset = (
        asa
        + 0.012 * (f["bmi"].to_numpy() - 28.0)
        - 0.008 * (f["surgeon_experience"].to_numpy() - 12.0)
        + 0.1 * f["emergency"].to_numpy()
    )
    procs = pd.get_dummies(f["procedure"]).reindex(columns=list(PROCEDURES)).to_numpy(float)
    design = np.column_stack([procs, rows["adhesions"], rows["revision"]])
    y = np.log(surgery.targets["surgical_minutes"]) - offset
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    np.testing.assert_allclose(np.exp(coef[:6]), list(PROCEDURES.values()), rtol=0.05)
    assert coef[6] == pytest.approx(SURGICAL_EFFECTS["extensive_adhesions"], abs=0.04)
    assert coef[7] == pytest.approx(SURGICAL_EFFECTS["revision"], abs=0.04)
    assert rows["adhesions"].mean() == pytest.approx(0.2, abs=0.03)
    # without the note the best achievable RMSE is clearly worse
    assert surgery.meta["bayes_rmse_structured"] > 1.2 * surgery.meta["bayes_rmse"]
    err = surgery.targets["surgical_minutes"] - rows["expected_minutes"]
    assert np.sqrt(np.mean(err**2)) == pytest.approx(surgery.meta["bayes_rmse"], rel=0.1)


def test_tables_are_valid_and_typed(icu: EHRTable, surgery: EHRTable) -> None:
    for t in (icu, surgery):
        t.validate()
        assert all(len(v) == len(t) for v in t.meta["rows"].values())
    assert icu.note_columns == ("admission_note",) and icu.spec("admission_note").kind == "text"
    assert icu.frame["lactate"].isna().mean() == pytest.approx(0.2, abs=0.03)
    assert surgery.tasks == {"surgical_minutes": "regression"}
    assert (surgery.targets["surgical_minutes"] > 0).all()


def test_bad_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="n >= 10"):
        make_synthetic_ehr(n=3)
    with pytest.raises(ConfigError):
        make_surgical_table(n=100, seed=1.5)  # type: ignore[arg-type]
