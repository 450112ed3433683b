"""MSA metrics: hand-computed bin edges, an MMSA port and scikit-learn as oracles."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from clinfuse.core.errors import DataError, UnknownNameError
from clinfuse.metrics import classification, msa
from clinfuse.metrics.classification import accuracy, balanced_accuracy, f1_weighted
from clinfuse.metrics.msa import (
    MSA_METRICS,
    SIMS_EDGES_2,
    SIMS_EDGES_3,
    SIMS_EDGES_5,
    _mmsa_bins,
    main_metric,
    mosi_metrics,
    mvsa_metrics,
    pearson_r,
    sims_metrics,
)

# ---------------------------------------------------------------------------------------------
# MMSA's formulas, ported line for line from thuiar/MMSA src/MMSA/utils/metricsTop.py
# (torch -> numpy, no rounding), used only as an oracle.


def _mmsa_multiclass_acc(y_pred, y_true):
    return np.sum(np.round(y_pred) == np.round(y_true)) / float(len(y_true))


def _mmsa_mosei(test_preds, test_truth):
    test_preds_a7 = np.clip(test_preds, a_min=-3.0, a_max=3.0)
    test_truth_a7 = np.clip(test_truth, a_min=-3.0, a_max=3.0)
    test_preds_a5 = np.clip(test_preds, a_min=-2.0, a_max=2.0)
    test_truth_a5 = np.clip(test_truth, a_min=-2.0, a_max=2.0)
    mae = np.mean(np.absolute(test_preds - test_truth))
    corr = np.corrcoef(test_preds, test_truth)[0][1]
    non_zeros = np.array([i for i, e in enumerate(test_truth) if e != 0])
    nzt = test_truth[non_zeros] > 0
    nzp = test_preds[non_zeros] > 0
    return {
        "has0_acc2": accuracy_score(test_preds >= 0, test_truth >= 0),
        "has0_f1": f1_score(test_truth >= 0, test_preds >= 0, average="weighted"),
        "non0_acc2": accuracy_score(nzp, nzt),
        "non0_f1": f1_score(nzt, nzp, average="weighted"),
        "acc5": _mmsa_multiclass_acc(test_preds_a5, test_truth_a5),
        "acc7": _mmsa_multiclass_acc(test_preds_a7, test_truth_a7),
        "mae": mae,
        "corr": corr,
    }


def _mmsa_sims(test_preds, test_truth):
    test_preds = np.clip(test_preds, a_min=-1.0, a_max=1.0)
    test_truth = np.clip(test_truth, a_min=-1.0, a_max=1.0)
    out = {}
    for key, ms in (("2", [-1.01, 0.0, 1.01]), ("3", [-1.01, -0.1, 0.1, 1.01])):
        a, b = test_preds.copy(), test_truth.copy()
        for i in range(len(ms) - 1):
            a[np.logical_and(test_preds > ms[i], test_preds <= ms[i + 1])] = i
        for i in range(len(ms) - 1):
            b[np.logical_and(test_truth > ms[i], test_truth <= ms[i + 1])] = i
        out[key] = (a, b)
    ms_5 = [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]
    a5, b5 = test_preds.copy(), test_truth.copy()
    for i in range(5):
        a5[np.logical_and(test_preds > ms_5[i], test_preds <= ms_5[i + 1])] = i
    for i in range(5):
        b5[np.logical_and(test_truth > ms_5[i], test_truth <= ms_5[i + 1])] = i
    return {
        "acc2": _mmsa_multiclass_acc(*out["2"]),
        "acc3": _mmsa_multiclass_acc(*out["3"]),
        "acc5": _mmsa_multiclass_acc(a5, b5),
        "f1": f1_score(out["2"][1], out["2"][0], average="weighted"),
        "mae": np.mean(np.absolute(test_preds - test_truth)),
        "corr": np.corrcoef(test_preds, test_truth)[0][1],
    }


# ---------------------------------------------------------------------------------------------
# classification.py against scikit-learn


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", range(5))
def test_classification_matches_sklearn(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, size=40)
    pred = np.where(rng.random(40) < 0.6, true, rng.integers(0, k + 1, size=40))  # k: pred-only
    assert accuracy(pred, true) == pytest.approx(accuracy_score(true, pred))
    assert f1_weighted(pred, true) == pytest.approx(
        f1_score(true, pred, average="weighted", zero_division=0)
    )
    assert balanced_accuracy(pred, true) == pytest.approx(balanced_accuracy_score(true, pred))


def test_f1_argument_order_matters_and_ours_is_true_order() -> None:
    true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 1, 1, 2, 2, 0])
    right = f1_score(true, pred, average="weighted")  # MMSA's order
    swapped = f1_score(pred, true, average="weighted")  # MMIM's order
    assert abs(right - swapped) > 0.01
    assert f1_weighted(pred, true) == pytest.approx(right)
    assert f1_weighted(pred, true) != pytest.approx(swapped)
    # by hand: class 0 TP=2 FP=1 FN=2 -> 4/7, class 1 TP=2 FP=3 FN=0 -> 4/7,
    # class 2 TP=2 FP=0 FN=2 -> 4/6; supports 4, 2, 4
    assert f1_weighted(pred, true) == pytest.approx((4 * 4 / 7 + 2 * 4 / 7 + 4 * 4 / 6) / 10)


def test_f1_zero_division_class_scores_zero() -> None:
    # class 1 is never predicted: its F1 is 0 (2TP + FP + FN = 2 > 0, TP = 0)
    assert f1_weighted([0, 0, 0], [0, 0, 1]) == pytest.approx(2 / 3 * (2 * 2 / (4 + 1)))


def test_classification_rejects_mismatched_and_empty() -> None:
    with pytest.raises(DataError, match="differ in size"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(DataError, match="empty"):
        f1_weighted([], [])


# ---------------------------------------------------------------------------------------------
# MOSI / MOSEI

# idx:            0     1    2     3    4     5    6     7    8     9
MOSI_TRUE = [0.0, 0.0, 0.5, -0.5, 2.5, -2.5, 3.0, -1.2, 1.5, 0.6]
MOSI_PRED = [0.0, -0.3, 0.4, -0.4, 2.4, -2.4, 4.2, -0.2, 1.5, -0.1]


def test_mosi_hand_computed() -> None:
    m = mosi_metrics(MOSI_PRED, MOSI_TRUE)
    # Has0: pred>=0 = T F T F T F T F T F, true>=0 = T T T F T F T F T T -> 8/10
    assert m["has0_acc2"] == pytest.approx(0.8)
    # positive: TP 5, FP 0, FN 2 -> 10/12 (support 7); negative: TP 3, FP 2, FN 0 -> 6/8 (3)
    assert m["has0_f1"] == pytest.approx((7 * 10 / 12 + 3 * 6 / 8) / 10)
    # Non0 drops idx 0, 1 (y == 0). pred>0 = T F T F T F T F, true>0 = T F T F T F T T -> 7/8
    assert m["non0_acc2"] == pytest.approx(7 / 8)
    # positive: TP 4, FP 0, FN 1 -> 8/9 (support 5); negative: TP 3, FP 1, FN 0 -> 6/7 (3)
    assert m["non0_f1"] == pytest.approx((5 * 8 / 9 + 3 * 6 / 7) / 8)
    # Acc-7, half to even: true rounds to 0 0 0 -0 2 -2 3 -1 2 1 (0.5->0, 2.5->2, -2.5->-2);
    # pred 4.2 is clipped to 3; pred rounds to 0 -0 0 -0 2 -2 3 -0 2 -0 -> idx 7, 9 wrong
    assert m["acc7"] == pytest.approx(0.8)
    assert m["acc5"] == pytest.approx(0.8)  # clip +-2: 4.2 -> 2 == 3 -> 2; same two misses
    # |diff| = 0 .3 .1 .1 .1 .1 1.2 1 0 .7 -> 3.6 / 10
    assert m["mae"] == pytest.approx(0.36)
    assert m["corr"] == pytest.approx(np.corrcoef(MOSI_PRED, MOSI_TRUE)[0, 1])
    assert set(m) == {
        "has0_acc2",
        "has0_f1",
        "non0_acc2",
        "non0_f1",
        "acc5",
        "acc7",
        "mae",
        "corr",
    }
    assert all(type(v) is float for v in m.values())


def test_acc7_rounding_is_half_to_even_not_half_away() -> None:
    # preds 0.4, -0.4, 2.4, -2.4 match the labels 0.5, -0.5, 2.5, -2.5 only under banker's rounding
    m = mosi_metrics([0.4, -0.4, 2.4, -2.4], [0.5, -0.5, 2.5, -2.5])
    assert m["acc7"] == 1.0
    half_away = np.sign([0.5, -0.5, 2.5, -2.5]) * np.floor(np.abs([0.5, -0.5, 2.5, -2.5]) + 0.5)
    assert np.mean(half_away == np.round([0.4, -0.4, 2.4, -2.4])) == 0.0


def test_acc7_clips_at_three() -> None:
    # 3.7 rounds to 4 without the clip, 3 with it
    assert mosi_metrics([3.7, -3.7], [3.0, -3.0])["acc7"] == 1.0
    assert mosi_metrics([3.7, -3.7], [3.0, -3.0])["acc5"] == 1.0  # clip 2: both -> 2 / -2


def test_has0_vs_non0_on_zero_labels() -> None:
    # y = 0 counts as positive in Has0 and is dropped in Non0
    m = mosi_metrics([-1.0, 1.0, -1.0], [0.0, 2.0, -2.0])
    assert m["has0_acc2"] == pytest.approx(2 / 3)
    assert m["non0_acc2"] == 1.0


def test_all_zero_labels_give_nan_non0() -> None:
    m = mosi_metrics([0.3, -0.2], [0.0, 0.0])
    assert np.isnan(m["non0_acc2"]) and np.isnan(m["non0_f1"])
    assert m["has0_acc2"] == 0.5


def test_mag_bert_nonzero_differs_from_default() -> None:
    d = mosi_metrics(MOSI_PRED, MOSI_TRUE)
    g = mosi_metrics(MOSI_PRED, MOSI_TRUE, mag_bert_nonzero=True)
    # MAE on the 8 non-zero labels: .1 .1 .1 .1 1.2 1 0 .7 -> 3.3 / 8
    assert g["mae"] == pytest.approx(3.3 / 8)
    assert d["mae"] == pytest.approx(0.36)
    nz = np.asarray(MOSI_TRUE) != 0
    assert g["corr"] == pytest.approx(
        np.corrcoef(np.asarray(MOSI_PRED)[nz], np.asarray(MOSI_TRUE)[nz])[0, 1]
    )
    assert g["corr"] != pytest.approx(d["corr"])
    for key in ("acc7", "acc5", "has0_acc2", "has0_f1"):
        assert g[key] == d[key]
    # MAG-BERT thresholds with >= 0: a prediction of exactly 0 on a positive label is correct
    p, t = [0.0, -1.0, 1.0], [1.0, -1.0, 2.0]
    assert mosi_metrics(p, t)["non0_acc2"] == pytest.approx(2 / 3)
    assert mosi_metrics(p, t, mag_bert_nonzero=True)["non0_acc2"] == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_mosi_matches_mmsa_port(dtype: type, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # labels on MOSI's 1/3 grid (many exact zeros and .5 ties after rounding), preds continuous
    # plus exact ties and zeros
    true = (rng.integers(-9, 10, size=200) / 3).astype(dtype)
    pred = rng.normal(0, 1.8, size=200).astype(dtype)
    pred[:20] = rng.choice([-3.5, -2.5, -0.5, 0.0, 0.5, 2.5, 3.5], size=20)
    ours = mosi_metrics(pred, true)
    ref = _mmsa_mosei(pred, true)
    for key, val in ref.items():
        assert ours[key] == pytest.approx(float(val), rel=1e-5, abs=1e-6), key


# ---------------------------------------------------------------------------------------------
# SIMS

SIMS_TRUE = [-1.0, -0.7, -0.1, 0.0, 0.1, 0.7, 1.0, 1.4, -1.6]
SIMS_PRED = [-0.95, -0.75, -0.65, 0.01, 0.1, 0.69, 1.3, 0.9, -0.1]


def test_sims_bins_at_every_edge() -> None:
    t = np.asarray(SIMS_TRUE)
    c = np.clip(t, -1, 1)
    # (-1.01, 0] -> 0: -1, -0.7, -0.1, 0, -1.6 (clipped to -1); (0, 1.01] -> 1
    assert _mmsa_bins(c, SIMS_EDGES_2).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0]
    # -0.1 is the top of class 0, 0.1 the top of class 1
    assert _mmsa_bins(c, SIMS_EDGES_3).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 0]
    # -0.7 is the top of class 0, 0.7 the top of class 3, 1.0 in class 4
    assert _mmsa_bins(c, SIMS_EDGES_5).tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 0]


def test_sims_bins_compare_in_input_dtype() -> None:
    # MMSA's tensors are float32: float32(0.1) is compared with float32(0.1) and is neutral,
    # while its float64 upcast 0.10000000149 lies above the float64 edge 0.1
    x32 = np.float32([0.1, -0.1, 0.7])
    assert _mmsa_bins(x32, SIMS_EDGES_3).tolist() == [1, 0, 2]
    assert _mmsa_bins(x32.astype(np.float64), SIMS_EDGES_3).tolist() == [2, 0, 2]
    assert sims_metrics(x32, np.float32([0.05, -0.5, 0.3]))["acc3"] == 1.0


def test_sims_hand_computed() -> None:
    m = sims_metrics(SIMS_PRED, SIMS_TRUE)
    # pred acc2 classes 0 0 0 1 1 1 1 1 0 vs true 0 0 0 0 1 1 1 1 0 -> idx 3 wrong (0.01 vs 0)
    assert m["acc2"] == pytest.approx(8 / 9)
    # pred acc3 classes 0 0 0 1 1 2 2 2 0 == true
    assert m["acc3"] == 1.0
    # pred acc5 classes 0 0 1 2 2 3 4 4 1 vs true 0 0 1 2 2 3 4 4 0 -> idx 8 wrong
    assert m["acc5"] == pytest.approx(8 / 9)
    # class 0: TP 4, FP 0, FN 1 -> 8/9 (support 5); class 1: TP 4, FP 1, FN 0 -> 8/9 (4)
    assert m["f1"] == pytest.approx(8 / 9)
    # on clipped values: .05 .05 .55 .01 0 .01 0 .1 .9 -> 1.67 / 9
    assert m["mae"] == pytest.approx(1.67 / 9)
    assert m["corr"] == pytest.approx(
        np.corrcoef(np.clip(SIMS_PRED, -1, 1), np.clip(SIMS_TRUE, -1, 1))[0, 1]
    )


def test_sims_acc2_zero_is_non_positive_unlike_has0() -> None:
    # label 0 with prediction 0.01: wrong for SIMS (0 is class "non-positive"), right for Has0
    assert sims_metrics([0.01], [0.0])["acc2"] == 0.0
    assert mosi_metrics([0.01], [0.0])["has0_acc2"] == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_sims_matches_mmsa_port(dtype: type, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # SIMS labels are multiples of 0.2 in [-1, 1]; add the exact edges +-0.1, +-0.7
    true = rng.choice([-1, -0.8, -0.7, -0.6, -0.4, -0.2, -0.1, 0, 0.1, 0.2, 0.6, 0.7, 1], 150)
    pred = rng.normal(0, 0.7, size=150)
    pred[:15] = rng.choice([-1.2, -0.7, -0.1, 0.0, 0.1, 0.7, 1.2], size=15)
    true, pred = true.astype(dtype), pred.astype(dtype)
    ours = sims_metrics(pred, true)
    ref = _mmsa_sims(pred, true)
    for key, val in ref.items():
        assert ours[key] == pytest.approx(float(val), rel=1e-5, abs=1e-6), key


# ---------------------------------------------------------------------------------------------
# MVSA, Pearson, registry, errors


def test_mvsa_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, size=60)
    pred = np.where(rng.random(60) < 0.7, true, rng.integers(0, 3, size=60))
    m = mvsa_metrics(pred, true)
    assert m["acc"] == pytest.approx(accuracy_score(true, pred))
    assert m["f1"] == pytest.approx(f1_score(true, pred, average="weighted"))
    with pytest.raises(DataError, match="not scores"):
        mvsa_metrics(rng.normal(size=(60, 3)), true)


def test_pearson_matches_numpy_and_constant_policy() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert pearson_r(x, x + y) == pytest.approx(np.corrcoef(x, x + y)[0, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        assert np.isnan(np.corrcoef(np.ones(5), x[:5])[0, 1])  # what MMSA gets
    assert pearson_r(np.ones(5), x[:5]) == 0.0
    assert np.isnan(pearson_r(np.ones(5), x[:5], nan_corr=True))
    const = mosi_metrics(np.zeros(4), [1.0, -2.0, 0.5, 3.0])
    assert const["corr"] == 0.0
    assert np.isnan(mosi_metrics(np.zeros(4), [1.0, -2.0, 0.5, 3.0], nan_corr=True)["corr"])
    assert np.isnan(sims_metrics(np.zeros(3), [0.1, 0.5, -0.2], nan_corr=True)["corr"])


def test_registry_and_main_metric() -> None:
    assert set(MSA_METRICS.names()) == {"mosi", "mosei", "sims", "mvsa"}
    assert MSA_METRICS.get("mosei") is mosi_metrics
    rng = np.random.default_rng(0)
    for name in MSA_METRICS:
        fn = MSA_METRICS.get(name)
        if name == "mvsa":
            out = fn(rng.integers(0, 3, 10), rng.integers(0, 3, 10))
        else:
            out = fn(rng.normal(size=10), rng.normal(size=10))
        assert main_metric(name) in out, name
    assert main_metric("mosi") == "non0_acc2"
    with pytest.raises(UnknownNameError, match="did you mean: mosi"):
        main_metric("mosl")


def test_regression_metrics_reject_bad_input() -> None:
    with pytest.raises(DataError, match="non-finite"):
        mosi_metrics([0.1, np.nan], [0.2, 0.3])
    with pytest.raises(DataError, match="non-finite"):
        sims_metrics([0.1, 0.2], [np.inf, 0.3])
    with pytest.raises(DataError, match="differ in size"):
        mosi_metrics(np.zeros((4, 3)), np.zeros(4))


def test_accepts_column_vectors_like_mmsa_view() -> None:
    m = mosi_metrics(np.asarray(MOSI_PRED)[:, None], np.asarray(MOSI_TRUE)[:, None])
    assert m == mosi_metrics(MOSI_PRED, MOSI_TRUE)


@pytest.mark.parametrize("module", [classification, msa])
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_metrics_do_not_import_methods() -> None:
    code = (
        "import sys, clinfuse.metrics.msa, clinfuse.metrics.classification; "
        "assert not any(m.startswith('clinfuse.methods') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
