"""Acceptance checks of DIB on `synthetic_mosi` with the quick preset (about 20 s of training
on 2 cores).

- Non0 Acc-2 >= 0.90 on the test split;
- heavy Gaussian noise on audio and vision at test time costs at most 2 points of Acc-2;
- the per-modality I(Z_m; Y) ranks the planted informative modality (text) first.
"""

from __future__ import annotations

import pytest

import clinfuse


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("acceptance") / "dib"
    learner, run = clinfuse.run("dib", preset="quick", overrides=["progress=false"], out=out)
    return learner, run, learner.load_data()


def test_clean_accuracy(quick_run) -> None:
    _, run, _ = quick_run
    assert run.read_metrics()["test_non0_acc2"] >= 0.90


@pytest.mark.parametrize("rho", [1.0, 2.0])
def test_heavy_av_noise_costs_at_most_two_points(quick_run, rho) -> None:
    learner, run, data = quick_run
    clean = learner.evaluate(data, "test")["non0_acc2"]
    noisy = learner.evaluate(data, "test", corrupt=f"gaussian:audio,vision:{rho}")
    assert clean - noisy["non0_acc2"] <= 0.02
    assert noisy["mae"] != learner.evaluate(data, "test")["mae"]  # the noise did reach the model


def test_mi_ranks_the_informative_modality_first(quick_run) -> None:
    learner, run, data = quick_run
    metrics = run.read_metrics()
    mi = {m: metrics[f"test_mi_{m}"] for m in ("text", "audio", "vision")}
    planted = data.meta["ground_truth"]["informative_ranking"][0]
    assert max(mi, key=mi.get) == planted == "text"
