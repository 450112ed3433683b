"""MEETI delineation against the LUDB cardiologists and R peaks against MIT-BIH 100.

The scoring code is the benchmark's (``benchmarks/meeti_ludb.py``), so the numbers asserted
here are the ones the benchmark reports; its mark pairing and matching are checked first on
hand-made cases and against the mark counts of the data README.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import REPO, shared_path

from clinfuse.builders.meeti.params import ParamsConfig


def _benchmark():
    name = "clinfuse_bench_meeti_ludb"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "meeti_ludb.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bench = _benchmark()


# --------------------------------------------------------------------------------------------
# the scoring itself (no data needed)


def test_reference_pairs_marks_by_position() -> None:
    symbols = ["(", "p", ")", "(", "N", ")", "t", ")", "(", "p", "N", ")"]
    samples = [10, 20, 30, 40, 50, 60, 90, 110, 200, 210, 260, 280]
    ref = bench.ludb_reference(symbols, samples)
    assert ref["p_on"].tolist() == [10, 200] and ref["p_off"].tolist() == [30]
    assert ref["qrs_on"].tolist() == [40] and ref["qrs_off"].tolist() == [60, 280]
    assert ref["t_on"].tolist() == [] and ref["t_off"].tolist() == [110]


def test_match_is_one_to_one_nearest_first() -> None:
    errors, ref_idx, det_idx = bench.match(np.array([100, 130]), np.array([125.0, 300.0]), 40)
    assert errors.tolist() == [-5.0] and ref_idx.tolist() == [1] and det_idx.tolist() == [0]
    assert len(bench.match(np.array([100]), np.array([np.nan]), 40)[0]) == 0


def test_aggregate_rates() -> None:
    rows = [
        {"point": "p_on", "n_ref": 4, "n_det": 4, "n_det_matched": 3, "errors_ms": [0, 10, -50]},
        {"point": "p_on", "n_ref": 2, "n_det": 1, "n_det_matched": 1, "errors_ms": [20]},
    ]
    r = bench.aggregate(rows, ["point"]).iloc[0]
    assert r["match_rate"] == pytest.approx(4 / 6) and r["ppv"] == pytest.approx(4 / 5)
    assert r["within_40"] == 0.75 and r["mean_ms"] == pytest.approx(-5.0)


# --------------------------------------------------------------------------------------------
# LUDB 1-40 and MIT-BIH 100


@pytest.mark.shared_data
def test_reference_counts_match_the_data_readme() -> None:
    wfdb = pytest.importorskip("wfdb")
    root = shared_path("ecg", "ludb", "data")
    peaks = {"p": 0, "N": 0, "t": 0}
    onsets = 0
    for rec in bench.ludb_records(root):
        for lead in bench.LUDB_LEADS:
            ann = wfdb.rdann(str(rec), lead)
            for sym in peaks:
                peaks[sym] += int(np.sum(np.asarray(ann.symbol) == sym))
            ref = bench.ludb_reference(list(ann.symbol), ann.sample)
            onsets += sum(len(ref[p]) for p in ("p_on", "qrs_on", "t_on"))
    assert peaks == {"p": 3197, "N": 4269, "t": 3752}  # README: records 1-40, all 12 leads
    assert onsets <= sum(peaks.values())


@pytest.fixture(scope="module")
def ludb_scores():
    pytest.importorskip("wfdb")
    root = shared_path("ecg", "ludb", "data")
    records = bench.ludb_records(root)
    assert len(records) == 40
    rows, summaries = bench.evaluate_ludb(records, ParamsConfig())
    return rows, summaries


@pytest.mark.shared_data
def test_ludb_accuracy_targets(ludb_scores) -> None:
    """Match >= 0.95 everywhere; within 40 ms >= 0.90 for P and QRS bounds, >= 0.80 T offset."""
    rows, _ = ludb_scores
    table = bench.aggregate(rows, ["point"]).set_index("point")
    assert table.loc["qrs_on", "n_ref"] == 4235 and table.loc["t_off", "n_ref"] == 3752
    for point in bench.POINTS:
        assert table.loc[point, "match_rate"] >= bench.MATCH_TARGET, (point, table.loc[point])
    for point, target in bench.TARGETS.items():
        assert table.loc[point, "within_40"] >= target, (point, table.loc[point])
    assert (table["mean_ms"].abs() < 15).all(), table["mean_ms"]  # no gross bias


@pytest.mark.shared_data
def test_ludb_qrs_bounds_in_every_lead(ludb_scores) -> None:
    rows, _ = ludb_scores
    qrs = [r for r in rows if r["point"] in ("qrs_on", "qrs_off")]
    table = bench.aggregate(qrs, ["lead", "point"])
    assert len(table) == 24
    assert (table["match_rate"] >= 0.95).all(), table
    assert (table["within_40"] >= 0.90).all(), table


@pytest.mark.shared_data
def test_ludb_summaries_are_plausible(ludb_scores) -> None:
    """Against the LUDB diagnoses: sinus bradycardia below 60 bpm and sinus rhythm above 55,
    P waves in sinus beats, fewer in atrial fibrillation, QTc in a physiological range."""
    _, summaries = ludb_scores
    labels = bench.ludb_labels(shared_path("ecg", "ludb", "ludb.csv"))
    p_share = {"sinus": [], "af": []}
    for s in summaries:
        rhythm = labels[s["record"]]["rhythm"]
        assert s["n_beats"] >= 7 and 340 <= s["qtc_bazett_ms"] <= 520, s
        if rhythm == "Sinus bradycardia":
            assert s["hr_bpm"] < 60, s
        if rhythm == "Sinus rhythm":
            assert s["hr_bpm"] >= 55, s
        if rhythm.startswith("Sinus") and s["record"] != "34":  # 34 is paced
            p_share["sinus"].append(s["n_beats_with_p"] / s["n_beats"])
        if rhythm == "Atrial fibrillation":
            p_share["af"].append(s["n_beats_with_p"] / s["n_beats"])
    assert np.median(p_share["sinus"]) == 1.0 and np.mean(p_share["sinus"]) > 0.95
    assert len(p_share["af"]) == 2 and max(p_share["af"]) < 0.6


@pytest.mark.shared_data
def test_mitbih_100_rpeaks() -> None:
    pytest.importorskip("wfdb")
    record = shared_path("ecg", "wfdb_samples", "100.hea").with_suffix("")
    for mode in ("consensus", "lead"):  # the default, and MLII alone (MLII counts as II)
        out = bench.evaluate_mitbih(Path(record), ParamsConfig(rpeak_mode=mode))
        assert out["n_ref"] == 2273
        assert out["sensitivity"] >= 0.995 and out["ppv"] >= 0.995, (mode, out)
