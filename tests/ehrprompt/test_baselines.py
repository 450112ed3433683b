"""Tabular baselines: planted signs, a planted interaction, unknown categories, missing values."""

from __future__ import annotations

import doctest
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.ehrprompt import baselines as baselines_module
from clinfuse.methods.ehrprompt.baselines import (
    MISSING_CATEGORY,
    feature_names,
    fit_baseline,
    predict,
    tabular_matrix,
)
from clinfuse.metrics.classification import roc_auc
from clinfuse.metrics.regression import r2

SPECS = {"x1": "numeric", "x2": "numeric", "x3": "numeric", "x4": "numeric", "sex": "binary"}


@dataclass(frozen=True)
class Spec:
    """Stand-in for ehrprompt's ColumnSpec: anything with ``name`` and ``kind``."""

    name: str
    kind: str


def linear_frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Frame and the planted linear score 2 x1 - 1.5 x2 + x3 + 1[sex = m] (x4 is noise)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=["x1", "x2", "x3", "x4"])
    frame["sex"] = rng.choice(["f", "m"], n)
    score = 2.0 * frame.x1 - 1.5 * frame.x2 + frame.x3 + (frame.sex == "m")
    label = rng.random(n) < 1.0 / (1.0 + np.exp(-score.to_numpy()))
    return frame, score.to_numpy(), label.astype(int)


def test_linear_baseline_recovers_planted_signs() -> None:
    frame, score, label = linear_frame(3000, seed=0)
    X, tf = tabular_matrix(frame, SPECS, frame)
    names = feature_names(tf)
    assert names == ["x1", "x2", "x3", "x4", "sex_f", "sex_m"]  # no missing -> no indicator
    coef = dict(
        zip(names, fit_baseline("linear", "classification", X, label).coef_[0], strict=True)
    )
    assert coef["x1"] > 1.0 and coef["x2"] < -0.8 and coef["x3"] > 0.5
    assert abs(coef["x4"]) < 0.2
    assert coef["sex_m"] - coef["sex_f"] > 0.5
    # ridge on the noiseless score: coefficients = planted weights x feature std (~1)
    ridge = fit_baseline("linear", "regression", X, score)
    w = dict(zip(names, ridge.coef_, strict=True))
    stds = frame[["x1", "x2", "x3", "x4"]].std(ddof=0)
    for col, true in {"x1": 2.0, "x2": -1.5, "x3": 1.0, "x4": 0.0}.items():
        assert w[col] == pytest.approx(true * stds[col], abs=0.02)
    assert w["sex_m"] - w["sex_f"] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_gbm_beats_linear_on_a_planted_interaction(task: str) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(3000, 3)), columns=["a", "b", "c"])
    inter = (frame.a * frame.b).to_numpy()
    y = (inter > 0).astype(int) if task == "classification" else inter
    specs = dict.fromkeys(["a", "b", "c"], "numeric")
    train, test = frame.iloc[:2000], frame.iloc[2000:]
    X_train, tf = tabular_matrix(train, specs, train)
    X_test = tf.transform(test)
    score = roc_auc if task == "classification" else r2
    result = {
        kind: score(predict(fit_baseline(kind, task, X_train, y[:2000], seed=0), X_test), y[2000:])
        for kind in ("linear", "gbm")
    }
    assert result["gbm"] > 0.85  # XOR / product: trees split on both signs
    assert result["linear"] < 0.6 if task == "classification" else result["linear"] < 0.05


def test_unknown_category_at_test_time() -> None:
    frame, _, label = linear_frame(400, seed=2)
    specs = [Spec(c, k) for c, k in SPECS.items()]  # ColumnSpec-like objects work too
    X, tf = tabular_matrix(frame, specs, frame)
    test = frame.iloc[:3].copy()
    test["sex"] = ["x", "m", None]  # unseen, seen, missing (unseen in training too)
    X_test, _ = tabular_matrix(test, specs, frame)
    names = feature_names(tf)
    onehot = X_test[:, [names.index("sex_f"), names.index("sex_m")]]
    np.testing.assert_array_equal(onehot, [[0, 0], [0, 1], [0, 0]])
    np.testing.assert_allclose(X_test, tf.transform(test))  # same as the returned transformer
    for kind in ("linear", "gbm"):
        p = predict(fit_baseline(kind, "classification", X, label), X_test)
        assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))


def test_missing_values_are_imputed_and_flagged() -> None:
    rng = np.random.default_rng(3)
    n = 1500
    frame = pd.DataFrame(
        {
            "lab": rng.normal(5.0, 1.0, n),
            "ward": rng.choice(["icu", "med", "surg"], n).astype(object),
            "age": rng.normal(60.0, 10.0, n),
        }
    )
    # planted: the lab is ordered (recorded) mostly for sick patients -> missingness predicts
    sick = rng.random(n) < 0.3
    frame.loc[~sick & (rng.random(n) < 0.9), "lab"] = np.nan
    frame.loc[rng.random(n) < 0.1, "ward"] = None
    specs = {"lab": "numeric", "ward": "categorical", "age": "numeric"}
    train, test = frame.iloc[:1000], frame.iloc[1000:].copy()
    test.loc[test.index[:5], "age"] = np.nan  # missing only at test time: median-imputed
    X, tf = tabular_matrix(train, specs, train)
    names = feature_names(tf)
    assert "missing_lab" in names and "missing_age" not in names
    assert f"ward_{MISSING_CATEGORY}" in names
    X_test = tf.transform(test)
    assert np.isfinite(X).all() and np.isfinite(X_test).all()
    age = X_test[:5, names.index("age")]
    np.testing.assert_allclose(age, (train.age.median() - train.age.mean()) / train.age.std(ddof=0))
    for kind in ("linear", "gbm"):
        model = fit_baseline(kind, "classification", X, sick[:1000].astype(int))
        assert roc_auc(predict(model, X_test), sick[1000:]) > 0.9


def test_predict_returns_probabilities_and_values() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 3))
    y3 = np.digitize(X[:, 0], [-0.5, 0.5])
    for kind in ("linear", "gbm"):
        binary = fit_baseline(kind, "classification", X, (X[:, 0] > 0).astype(int))
        p = predict(binary, X)
        np.testing.assert_allclose(p, binary.predict_proba(X)[:, 1])
        assert p.shape == (300,) and p.min() >= 0 and p.max() <= 1
        multi = predict(fit_baseline(kind, "classification", X, y3), X)
        assert multi.shape == (300, 3)
        np.testing.assert_allclose(multi.sum(1), 1.0)
        assert (multi.argmax(1) == y3).mean() > 0.85
        values = predict(fit_baseline(kind, "regression", X, 3.0 * X[:, 1]), X)
        assert values.shape == (300,) and r2(values, 3.0 * X[:, 1]) > 0.9


def test_tfidf_reads_notes_and_drop_ignores_them() -> None:
    rng = np.random.default_rng(5)
    n = 600
    died = rng.random(n) < 0.3
    words = np.array(["stable", "pain", "fever", "cough"])
    notes = [
        " ".join(rng.choice(words, 5)) + (" intubated" if d and rng.random() < 0.9 else "")
        for d in died
    ]
    frame = pd.DataFrame({"age": rng.normal(size=n), "note": notes})
    specs = {"age": "numeric", "note": "text"}
    X_drop, tf_drop = tabular_matrix(frame, specs, frame)
    assert feature_names(tf_drop) == ["age"]
    X_tfidf, tf = tabular_matrix(frame.iloc[:400], specs, frame.iloc[:400], text="tfidf")
    assert "note:intubated" in feature_names(tf)
    # two text columns sharing a term get distinct feature names
    both = frame.assign(plan=notes)
    _, tf2 = tabular_matrix(both, {**specs, "plan": "text"}, both, text="tfidf")
    assert {"note:pain", "plan:pain"} <= set(feature_names(tf2))
    model = fit_baseline("linear", "classification", X_tfidf, died[:400].astype(int))
    assert roc_auc(predict(model, tf.transform(frame.iloc[400:])), died[400:]) > 0.9


def test_errors() -> None:
    frame, _, label = linear_frame(50, seed=6)
    with pytest.raises(ConfigError, match="unknown column kind"):
        tabular_matrix(frame, {"x1": "ordinal"}, frame)  # type: ignore[dict-item]
    bad = frame.astype({"x2": object})
    bad.loc[7, "x2"] = "12 mg"
    with pytest.raises(DataError, match="numeric column 'x2'") as err:
        tabular_matrix(bad, SPECS, frame)
    assert "'12 mg' at row 7" in str(err.value)
    with pytest.raises(DataError, match=r"\['x4'\] missing from the input"):
        tabular_matrix(frame.drop(columns="x4"), SPECS, frame)
    with pytest.raises(ConfigError, match="no usable column"):
        tabular_matrix(frame.assign(n="a"), {"n": "text"}, frame.assign(n="a"))
    X, _ = tabular_matrix(frame, SPECS, frame)
    with pytest.raises(ConfigError, match="unknown baseline"):
        fit_baseline("forest", "classification", X, label)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown task"):
        fit_baseline("linear", "survival", X, label)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="do not match"):
        fit_baseline("linear", "classification", X, label[:-1])
    with pytest.raises(DataError, match="missing values"):
        fit_baseline("linear", "regression", X, np.where(label, np.nan, 1.0))
    with pytest.raises(DataError, match="two or more classes"):
        fit_baseline("gbm", "classification", X, np.zeros(50))


def test_doctests() -> None:
    result = doctest.testmod(baselines_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
