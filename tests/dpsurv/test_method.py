"""DPsurv learner end to end: run contents, CLI, resume, persistence, tabular mode, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import clinfuse
from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.dpsurv.synthetic import export, make_synthetic_cohort

SMALL = ["progress=false", "n_cases=120", "n_components=6", "n_prototypes=1,2", "epochs=15"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("dpsurv") / "run"
    learner, rd = clinfuse.run("dpsurv", overrides=SMALL, out=out)
    return learner, rd, learner.load_data()


def test_run_directory_holds_what_a_user_reads(small) -> None:
    learner, rd, _ = small
    for name in ("config.json", "env.json", "metrics.json", "k_selection.csv",
                 "comparison_test.csv", "prototypes.npz"):  # fmt: skip
        assert (rd.path / name).exists(), name
    assert (rd.plots / "tercile_bands.png").exists() and (rd.plots / "contributions.png").exists()
    assert list((rd.plots / "cases").glob("*_assignment_map.png"))
    k = pd.read_csv(rd.path / "k_selection.csv")
    assert k["K"].tolist() == [1, 2]
    m = rd.read_metrics()
    assert m["chosen_K"] in (1, 2)
    table = pd.read_csv(rd.path / "comparison_test.csv")
    assert set(table["model"]) == {"dpsurv", "abmil", "meanpool_cox", "panther_linear"}
    assert 0.0 <= m["test_ibs"] <= 0.5 and 0.0 <= m["test_coverage_min"] <= 1.0
    assert "| dpsurv |" in learner.report_table()


def test_predictions_are_consistent(small) -> None:
    learner, _, data = small
    p = learner.predict(data, "test")
    assert len(p) == len(data.split(0, "test"))
    ok = p.dropna(subset=["median_survival", "median_low", "median_up"])
    # pessimistic bound reaches 0.5 first, optimistic last
    assert np.all(ok["median_low"] <= ok["median_survival"])
    assert np.all(ok["median_survival"] <= ok["median_up"])
    pis = p[[c for c in p.columns if c.startswith("pi_")]].to_numpy()
    np.testing.assert_allclose(pis.sum(1), 1.0, atol=1e-6)
    contrib = p[[c for c in p.columns if c.startswith("contribution_")]].to_numpy()
    # removing a component changes the risk by pi_c (r_c - r)/(1 - pi_c): pi-weighted sum is 0
    np.testing.assert_allclose((contrib * (1 - pis)).sum(1), 0.0, atol=1e-8)


def test_cli_evaluate_and_predict_write_per_case_figures(small) -> None:
    _, rd, _ = small
    exe = [sys.executable, "-m", "clinfuse.cli"]
    out = subprocess.run([*exe, "evaluate", "dpsurv", "--run", str(rd.path)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "| dpsurv |" in out.stdout and "results written to" in out.stdout
    out = subprocess.run([*exe, "predict", "dpsurv", "--run", str(rd.path), "--show", "2"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "per-case figures" in out.stdout
    folder = rd.path / "predictions-test"
    for kind in ("survival", "assignment_map", "contributions"):
        assert len(list(folder.glob(f"*_{kind}.png"))) == 2, kind


def test_resume_reuses_the_patch_prototypes(small, tmp_path) -> None:
    _, rd, _ = small
    before = (rd.path / "prototypes.npz").read_bytes()
    learner, rd2 = clinfuse.run("dpsurv", overrides=SMALL, out=rd.path, resume=True)
    assert (rd2.path / "prototypes.npz").read_bytes() == before
    np.testing.assert_array_equal(
        learner.prior.means.numpy(), np.load(rd.path / "prototypes.npz")["means"]
    )


def test_real_bag_files_through_load_cohort(tmp_path) -> None:
    cohort = make_synthetic_cohort(n_cases=60, n_folds=3, seed=1)
    files = export(cohort, tmp_path / "cohort")
    learner, rd = clinfuse.run(
        "dpsurv",
        overrides=["progress=false", "n_components=6", "n_prototypes=1", "epochs=5",
                   f"labels={files.labels_cdr}", f"splits={files.splits}", "baselines=cox"],
        data=files.feats_h5, out=tmp_path / "run",
    )  # fmt: skip
    data = learner.load_data(str(files.feats_h5))
    assert len(data.folds) == 3 and data.cohort is not None
    np.testing.assert_allclose(np.sort(data.time), np.sort(cohort.time), rtol=1e-9)
    assert rd.read_metrics()["n_train"] == len(data.folds[0][0])


def test_tabular_mode_on_whas500(tmp_path) -> None:
    pytest.importorskip("sksurv")
    learner, rd = clinfuse.run(
        "dpsurv", overrides=["progress=false", "data=whas500", "n_prototypes=2"],
        out=tmp_path / "run",
    )  # fmt: skip
    table = pd.read_csv(rd.path / "comparison_test.csv").set_index("model")
    assert set(table.index) == {"dpsurv", "cox"}
    assert table.loc["dpsurv", "harrell_c"] > 0.7  # the Cox model reaches about 0.75-0.8
    assert table.loc["dpsurv", "harrell_c"] > table.loc["cox", "harrell_c"] - 0.05


def test_bad_input_is_reported(tmp_path) -> None:
    with pytest.raises(DataError, match="unknown DPsurv data"):
        clinfuse.run("dpsurv", overrides=["data=/no/such/folder"], out=tmp_path / "a")
    (tmp_path / "bags").mkdir()
    with pytest.raises(ConfigError, match="label CSV"):
        clinfuse.run("dpsurv", overrides=[f"data={tmp_path / 'bags'}"], out=tmp_path / "b")
    with pytest.raises(ConfigError, match="fold"):
        clinfuse.run("dpsurv", overrides=SMALL + ["fold=7"], out=tmp_path / "c")
    with pytest.raises(ConfigError, match="lam"):
        clinfuse.run("dpsurv", overrides=["lam=2"], out=tmp_path / "d")
