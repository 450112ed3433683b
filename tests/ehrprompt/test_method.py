"""ehrprompt end to end on the synthetic EHR with the hashing encoder (seconds on 2 cores)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import clinfuse
from clinfuse.core.errors import ConfigError, DataError

FAST = [
    "progress=false",
    "data=synthetic",
    "encoder=hash",
    "epochs=12",
    "n_boot=20",
    "corruption_rates=0,0.2,0.5",
    "batch_size=64",
    "lr=2e-3",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ehrprompt")
    cache = f"cache_dir={base / 'cache'}"
    full = clinfuse.run("ehrprompt", overrides=[*FAST, cache], out=base / "full")
    no_notes = clinfuse.run(
        "ehrprompt",
        overrides=[*FAST, cache, "use_notes=false", "corruption_rates=0"],
        out=base / "no_notes",
    )
    return full, no_notes, base


def test_run_directory_and_comparison(runs) -> None:
    (learner, rd), _, _ = runs
    for name in (
        "config.json",
        "env.json",
        "metrics.json",
        "comparison_test.csv",
        "robustness.csv",
        "predictions.parquet",
    ):
        assert (rd.path / name).exists(), name
    assert (rd.plots / "robustness.png").exists()
    table = pd.read_csv(rd.path / "comparison_test.csv").set_index("model")
    assert set(table.index) == {"ehrprompt", "linear", "gbm"}
    m = rd.read_metrics()
    assert m["distinct_sentences"] < m["cells"]  # each distinct sentence embedded once
    assert "| ehrprompt |" in learner.report_table()


def test_notes_carry_the_planted_signal(runs) -> None:
    (_, rd), (_, rd_nn), _ = runs
    with_notes = rd.read_metrics()["test_mortality_auroc"]
    without = rd_nn.read_metrics()["test_mortality_auroc"]
    assert with_notes > 0.75
    assert with_notes - without >= 0.05, (with_notes, without)


def test_corruption_curve_does_not_rise(runs) -> None:
    (learner, _), _, _ = runs
    curves = learner.curves
    for mode, g in curves[curves["model"] == "ehrprompt"].groupby("mode"):
        v = g.sort_values("rate")["value"].to_numpy()
        assert np.all(np.diff(v) <= 0.01), (mode, v)  # non-increasing up to sampling noise
        assert v[-1] < v[0], mode


def test_second_run_encodes_nothing(runs, tmp_path) -> None:
    _, _, base = runs
    _, rd = clinfuse.run(
        "ehrprompt",
        overrides=[
            *FAST,
            f"cache_dir={base / 'cache'}",
            "epochs=1",
            "corruption_rates=0",
            "baselines=linear",
        ],
        out=tmp_path / "again",
    )
    m = rd.read_metrics()
    assert m["cache_misses"] == 0 and m["cache_hits"] == m["distinct_sentences"]


def test_saved_run_reloads_and_evaluates_under_corruption(runs) -> None:
    (learner, rd), _, _ = runs
    data = learner.load_data()
    again = clinfuse.load(rd.path)
    pd.testing.assert_frame_equal(learner.predict(data, "test"), again.predict(data, "test"))
    clean = again.evaluate(data, "test")
    bad = again.evaluate(data, "test", corrupt="mask:0.5")
    assert bad["mortality_auroc"] < clean["mortality_auroc"]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinfuse.cli",
            "evaluate",
            "ehrprompt",
            "--run",
            str(rd.path),
            "--corrupt",
            "marginal:0.3",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "results written to" in out.stdout


def test_prompt_ablations_change_the_sentences(runs) -> None:
    (learner, _), _, _ = runs
    data = learner.load_data()
    frame = data.table.frame.iloc[:3]
    prompt = learner.sentences(data, frame)
    from dataclasses import replace

    learner.config = replace(learner.config, prompt_mode="name_value")
    try:
        name_value = learner.sentences(data, frame)
    finally:
        learner.config = replace(learner.config, prompt_mode="prompt")
    assert prompt.shape == name_value.shape and np.all(prompt != name_value)
    assert all(":" in s for s in name_value[:, 0])


def test_bad_input(tmp_path) -> None:
    with pytest.raises(DataError, match="unknown ehrprompt data"):
        clinfuse.run("ehrprompt", overrides=["data=nowhere"], out=tmp_path / "a")
    with pytest.raises(ConfigError, match="unknown targets"):
        clinfuse.run("ehrprompt", overrides=[*FAST, "targets=nope"], out=tmp_path / "b")
    with pytest.raises(ConfigError, match="corruption"):
        clinfuse.run("ehrprompt", overrides=[*FAST, "corruption_rates=0,2"], out=tmp_path / "c")


def test_blend_weight_chosen_on_validation_and_reloaded(tmp_path) -> None:
    """``linear_path=blend``: one weight in [0, 1] per task, the validation-loss minimiser over
    the grid; the prediction is the mixture (w = 0: the transformer, w = 1: the linear path); a
    saved run reloads with its weights and predicts the same."""
    import json

    over = [*FAST, f"cache_dir={tmp_path / 'cache'}", "linear_path=blend", "epochs=3",
            "corruption_rates=0", "baselines=", "blend_grid=10"]  # fmt: skip
    learner, rd = clinfuse.run("ehrprompt", overrides=over, out=tmp_path / "blend")
    grid = np.linspace(0, 1, 11)
    assert set(learner.blend_weights) == set(learner.tasks)
    assert all(np.isclose(grid, w).any() for w in learner.blend_weights.values())
    metrics = json.loads((rd.path / "metrics.json").read_text())
    assert metrics["blend_weight_mortality"] == learner.blend_weights["mortality"]
    assert 0.5 < metrics["valid_mortality_auroc"] <= 1.0
    data = learner.load_data()
    before = learner.predict(data, "test")
    again = clinfuse.load(rd.path)
    assert again.blend_weights == learner.blend_weights
    pd.testing.assert_frame_equal(again.predict(data, "test"), before)
    frame = data.table.frame.iloc[data.test]
    raw, lin = learner._raw_outputs(data, frame), learner._linear_raw(data, frame)
    out = learner._outputs(data, frame)
    w = learner.blend_weights["mortality"]
    mixed = learner._finish({t: w * lin[t] + (1 - w) * raw[t] for t in learner.tasks})
    np.testing.assert_allclose(out["mortality"], mixed["mortality"], rtol=1e-6, atol=1e-9)
    # the weight minimises the validation loss of the training-row linear model's mixture
    learner.paths = {}
    learner._fit_paths(data)
    vf, t = data.table.frame.iloc[data.valid], "los_days"
    y = learner._path_target(data, "regression", t, data.valid)
    mod, linv = learner._raw_outputs(data, vf)[t], learner._linear_raw(data, vf)[t]
    losses = [np.mean((g * linv + (1 - g) * mod - y) ** 2) for g in grid]
    assert learner.blend_weights[t] == pytest.approx(grid[int(np.argmin(losses))])
