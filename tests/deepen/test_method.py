"""DeepEN end to end on a small simulated cohort: run contents, OPE invariants, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import clinfuse
from clinfuse.core.errors import ConfigError, DataError
from clinfuse.core.runs import RunDir
from clinfuse.methods.deepen.method import DeepEN, mortality_calibration, near_mix, wilson

TINY = [
    "progress=false",
    "n_patients=200",
    "hidden=32,32",
    "steps=300",
    "target_every=100",
    "lr=1e-3",
    "alphas=0.0,2.0",
    "n_boot=10",
    "rollout_patients=300",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("deepen") / "run"
    learner, run = clinfuse.run("deepen", preset="quick", overrides=TINY, out=out)
    return learner, run, learner.load_data()


def test_run_directory_holds_every_artefact(tiny) -> None:
    _, run, _ = tiny
    for name in ("config.json", "env.json", "metrics.json", "predictions.parquet"):
        assert (run.path / name).is_file(), name
    for name in ("comparison.csv", "comparison.md", "alpha_sweep.csv", "safety.json"):
        assert (run.path / name).is_file(), name
    plots = {p.name for p in run.plots.glob("*.png")}
    assert {"training.png", "alpha_sweep.png", "comparison.png", "deviation.png"} <= plots
    for tag in ("best", "alpha_0", "alpha_2"):
        assert (run.checkpoints / f"{tag}.pt").is_file(), tag
    table = pd.read_csv(run.path / "comparison.csv")
    assert set(table["policy"]) == {
        "d3qn_cql",
        "clinician",
        "guideline",
        "random",
        "zero",
        "maximum",
        "near_behaviour",
    }
    assert run.read_metrics()["chosen_alpha"] in (0.0, 2.0)


def test_clinician_estimate_is_the_on_policy_mean(tiny) -> None:
    """pi_e = pi_b: every IS weight is 1, so WIS/CWPDIS equal the mean discounted test return."""
    learner, _, data = tiny
    test = learner._splits(data)["test"]
    table = learner.table.set_index("policy")
    mean_return = test.returns(learner.config.gamma).mean()
    assert table.loc["clinician", "wis"] == pytest.approx(mean_return, rel=1e-6)
    assert table.loc["clinician", "cwpdis"] == pytest.approx(mean_return, rel=1e-6)
    assert table.loc["clinician", "wis_ess"] == pytest.approx(test.n_episodes)


def test_simulator_ground_truth_orders_the_naive_policies(tiny) -> None:
    """Planted in the simulator: starving and maximal feeding both kill more than the guideline."""
    table = tiny[0].table.set_index("policy")
    assert table.loc["zero", "true_mortality"] > table.loc["guideline", "true_mortality"] + 0.1
    assert table.loc["maximum", "true_mortality"] > table.loc["guideline", "true_mortality"] + 0.1
    assert table.loc["zero", "true_value"] < table.loc["guideline", "true_value"]


def test_recommendations_stay_in_data_support(tiny) -> None:
    learner, run, data = tiny
    safety = learner.safety(data)
    assert safety["outside_support"] == 0.0
    assert 0.0 <= safety["agreement"] <= 1.0
    pred = pd.read_parquet(run.path / "predictions.parquet")
    assert learner.allowed[pred["recommended_action"]].all()
    probs = learner.policies(data)["d3qn_cql"](data.traj.obs[:50])
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert (probs[:, ~learner.allowed] == 0).all()


def test_resume_skips_trained_alphas(tiny, tmp_path) -> None:
    learner, run, data = tiny
    again = DeepEN(learner.config)
    again.fit(data, RunDir.open(run.path), resume=True)
    assert again.alpha == learner.alpha
    before, after = learner.model.state_dict()["modules"], again.model.state_dict()["modules"]
    for name, weights in before.items():
        for k, v in weights.items():
            assert np.array_equal(v.numpy(), after[name][k].numpy()), (name, k)


def test_linear_calibration_recovers_mortality_of_expected_returns() -> None:
    rng = np.random.default_rng(0)
    died = rng.random(5000) < 0.3
    g = 15.0 * (1 - 2 * died) + rng.normal(0, 2, 5000)
    m = mortality_calibration(g, died)
    for rate in (0.1, 0.3, 0.5):  # expected return of a cohort with this mortality
        assert float(m(15.0 * (1 - 2 * rate))) == pytest.approx(rate, abs=0.02)
    binned = mortality_calibration(g, died, "binned")
    assert float(binned(15.0)) < 0.05 and float(binned(-15.0)) > 0.95


def test_wilson_matches_scipy() -> None:
    for k, n in ((3, 10), (0, 25), (40, 40), (17, 120)):
        lo, hi = wilson(np.array(k), np.array(n), z=scipy.stats.norm.ppf(0.975))
        ref = scipy.stats.binomtest(k, n).proportion_ci(method="wilson")
        assert float(lo) == pytest.approx(ref.low, abs=1e-9)
        assert float(hi) == pytest.approx(ref.high, abs=1e-9)


def test_bad_input() -> None:
    with pytest.raises(DataError, match="unknown DeepEN data source"):
        clinfuse.run("deepen", preset="quick", overrides=[*TINY, "data=/no/such/place"])
    with pytest.raises(ConfigError, match="alphas"):
        clinfuse.run("deepen", preset="quick", overrides=[*TINY, "alphas=-1"])
    with pytest.raises(ConfigError, match="split"):
        clinfuse.run("deepen", preset="quick", overrides=[*TINY, "split=0.5,0.5,0.5"])


def test_near_mix_keeps_the_clinicians_support() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(6, 0.3), size=50)
    p[:, 0] = 0.0  # an action the clinician never takes
    p /= p.sum(1, keepdims=True)
    mix = near_mix(p, 0.1, 0.01)
    np.testing.assert_allclose(mix.sum(1), 1.0)
    assert np.all(mix[p < 0.01] <= 0.9 * p[p < 0.01] + 1e-12)  # no extra mass off support
    assert np.all(mix[:, 0] == 0.0)
    np.testing.assert_allclose(near_mix(p, 0.1, 0.0), 0.9 * p + 0.1 / 6)  # plain uniform mix
    ratio = mix[p >= 0.01] / p[p >= 0.01]
    assert ratio.min() >= 0.9 - 1e-12  # importance ratios of the mix stay bounded below


def test_report_never_prints_a_degenerate_estimate_bare(tiny) -> None:
    """Greedy policies rest on a handful of patients: their weight-based estimates carry a low-ESS
    flag, mortality comes from the cross-fitted FQE instead, and every printed value lies in the
    return range."""
    learner, run, _ = tiny
    table = learner.table.set_index("policy")
    lo, hi = (
        learner.table.attrs["q_sanity"]["return_low"],
        learner.table.attrs["q_sanity"]["return_high"],
    )
    for e in ("wis", "cwpdis", "wdr", "fqe"):
        assert table[e].between(lo, hi).all(), e
        low_ess = table[f"{e}_ess"] < learner.config.ess_floor
        if e != "fqe":
            assert table.loc[low_ess, f"{e}_flags"].str.contains("low_ess").all(), e
    wdr_ok = table["wdr_ess"] >= learner.config.ess_floor
    assert (table.loc[~wdr_ok, "selected_by"] == "fqe").all()
    assert (table.loc[wdr_ok, "selected_by"] == "wdr").all()
    text = learner.report_table()
    lines = {ln.split("|")[1].strip(): ln.split("|")[2:-1] for ln in text.splitlines()[2:]
             if ln.startswith("| ")}  # fmt: skip
    for name in table.index:
        cells = dict(zip(("wis", "cwpdis", "wdr", "fqe", "mortality"), lines[name], strict=False))
        for e in ("wis", "cwpdis", "wdr"):  # below the floor: no number at all
            low = table.loc[name, f"{e}_ess"] < learner.config.ess_floor
            assert cells[e].strip().startswith("n/a [ESS") == low, (name, e, cells[e])
        assert "1.000 (1.000, 1.000)" not in cells["mortality"], (name, cells["mortality"])
        assert ("[fqe]" in cells["mortality"]) == (not wdr_ok[name]), (name, cells["mortality"])
    # the clinicians' own policy and the mix over their support act where they act
    for name in ("clinician", "near_behaviour"):
        assert "positivity" not in table.loc[name, "wis_flags"], name
    assert "positivity" in table.loc["random", "wis_flags"]
    assert "Q sanity" in text
    sweep = pd.read_csv(run.path / "alpha_sweep.csv")
    sane = sweep[~sweep["q_outside_range"]]
    best = (sane if len(sane) else sweep).sort_values("valid_selected").iloc[-1]["alpha"]
    assert run.read_metrics()["chosen_alpha"] == best
