"""Tunsr learner end to end on the synthetic Horn-rule KGs (quick preset, seconds on 2 cores)."""

from __future__ import annotations

import numpy as np
import pytest

import clinfuse
from clinfuse.core.errors import ConfigError
from clinfuse.methods.tunsr.method import fari_recovery
from clinfuse.methods.tunsr.rules import parse_rule, rule_stats


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("tunsr") / "run"
    learner, run = clinfuse.run("tunsr", preset="quick", overrides=["progress=false"], out=out)
    return learner, run, learner.load_data()


def test_quick_reaches_mrr_095(quick) -> None:
    _, run, _ = quick
    m = run.read_metrics()
    assert m["test_mrr"] >= 0.95
    assert m["test_optimistic.mrr"] >= m["test_mrr"] >= m["test_pessimistic.mrr"]


def test_rules_file_is_anyburl_and_recovers_planted_rules(quick) -> None:
    learner, run, kg = quick
    lines = (run.path / "rules.txt").read_text().strip().splitlines()
    assert lines
    for line in lines:
        parse_rule(line, kg.relations)  # every line is valid AnyBURL/PyClause syntax
    # FARI (paths, the default) ranks the planted body first for every derived relation; the
    # schema variant (beta alone, no grounding) for 2 of the 5 (measured; see the README)
    m = run.read_metrics()
    assert m["fari_paths_true_body_top1"] == 1.0
    assert m["fari_schema_true_body_top1"] >= 0.4


def test_top_rules_hold_on_clean_data_and_not_on_random_heads(quick, tmp_path) -> None:
    learner, _, kg = quick
    graph = np.concatenate([kg.facts, *kg.queries.values()])
    top = [rs[0] for rs in learner.induce_rules(kg, "paths").values()]
    clean = rule_stats(top, graph, kg.n_entities, kg.n_relations)
    assert min(s.confidence for s in clean) > 0.9
    noisy, _ = clinfuse.run(
        "tunsr",
        preset="quick",
        overrides=["data=synthetic_noise", "epochs=5", "progress=false"],
        out=tmp_path / "noise",
    )
    nkg = noisy.load_data()
    ngraph = np.concatenate([nkg.facts, *nkg.queries.values()])
    derived = {r.head for r in nkg.meta["ground_truth_rules"]}
    rules = [r for h, rs in noisy.induce_rules(nkg, "paths").items() if h in derived for r in rs]
    stats = rule_stats(rules, ngraph, nkg.n_entities, nkg.n_relations)
    assert max(s.confidence for s in stats) < 0.5  # no rule passes a 0.5 confidence threshold
    assert fari_recovery(noisy.induce_rules(nkg, "paths"), nkg.meta["ground_truth_rules"]) < 1


def test_explanations_name_rules(quick) -> None:
    learner, _, kg = quick
    df = learner.predict(kg, "test", explain=True)
    assert {"predicted", "scores", "explanation"} <= set(df.columns)
    assert df["explanation"].str.contains("<=").mean() > 0.9


def test_reload_and_scenario_mismatch(quick, tmp_path) -> None:
    learner, run, kg = quick
    again = clinfuse.load(run.path)
    assert again.evaluate(kg, "test") == learner.evaluate(kg, "test")
    with pytest.raises(ConfigError, match="scenario"):
        clinfuse.run("tunsr", overrides=["data=synthetic_temporal"], out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_extrapolation_on_synthetic_temporal(tmp_path) -> None:
    _, run = clinfuse.run(
        "tunsr",
        preset="quick",
        overrides=[
            "data=synthetic_temporal",
            "scenario=extrapolation",
            "epochs=10",
            "progress=false",
        ],
        out=tmp_path / "t",
    )
    m = run.read_metrics()
    assert m["test_mrr"] >= 0.9
    # FARI (paths) recovers B(X,Y,t) <= A(X,Y,t-1) first, in time order (fari_recovery checks
    # Rule.time_order), and rules.txt shows the order
    assert m["fari_paths_true_body_top1"] == 1.0
    top = (run.path / "rules.txt").read_text().splitlines()[0]
    assert top.endswith("B(X,Y) <= A(X,Y)  # time t-1")


def test_rank_rules_prefers_the_general_rule_among_equally_confident_ones() -> None:
    from clinfuse.methods.tunsr.data import Rule
    from clinfuse.methods.tunsr.method import rank_rules
    from clinfuse.methods.tunsr.synthetic import make_synthetic_kg

    kg, _ = make_synthetic_kg(seed=0)
    R, par, bro, gp = kg.n_relations, 0, 1, 3
    # grandparent: the model rates parent.parent and parent.child^-1 alike (both hold with
    # confidence 1 on clean data); child is derived, so the second covers fewer heads
    child = kg.relations.index("child")
    rules = {gp: [Rule(gp, (par, child + R), 0.5), Rule(gp, (par, par), 0.5)]}
    ranked = rank_rules(rules, kg)[gp]
    assert [r.body for r in ranked] == [(par, par), (par, child + R)]
    assert ranked[0].confidence > ranked[1].confidence
    # a rule that rarely holds loses to a precise one even with a higher model confidence
    rules = {gp: [Rule(gp, (par, bro), 0.6), Rule(gp, (par, par), 0.4)]}
    assert rank_rules(rules, kg)[gp][0].body == (par, par)
