"""Synthetic Horn-rule KGs: every rule holds exactly (sparse-product oracle), controls, time."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from clinfuse.methods.tunsr.data import KG, Rule, check_no_leak, load_kg
from clinfuse.methods.tunsr.synthetic import make_synthetic_kg, make_synthetic_temporal_kg


def _all_rows(kg: KG) -> np.ndarray:
    return np.concatenate([kg.facts, *kg.queries.values()])


def _adjacency(kg: KG) -> list[sp.csr_matrix]:
    """Boolean ``(E, E)`` matrix per relation id, inverses ``r + R`` as transposes."""
    rows = _all_rows(kg)
    n, R = kg.n_entities, kg.n_relations
    mats = []
    for r in range(R):
        sel = rows[rows[:, 1] == r]
        m = sp.csr_matrix((np.ones(len(sel)), (sel[:, 0], sel[:, 2])), shape=(n, n))
        mats.append((m > 0).astype(np.int64))
    return mats + [m.T.tocsr() for m in mats]


def _body_and_head(kg: KG, rule: Rule) -> tuple[set, set]:
    mats = _adjacency(kg)
    prod = mats[rule.body[0]]
    for r in rule.body[1:]:
        prod = prod @ mats[r]
    body = set(zip(*(prod > 0).nonzero(), strict=True))
    head = set(zip(*mats[rule.head].nonzero(), strict=True))
    return body, head


def test_every_rule_head_is_exactly_its_groundings() -> None:
    kg, rules = make_synthetic_kg(n_entities=200, seed=0)
    assert len(rules) == 5 and {len(r.body) for r in rules} == {1, 2, 3}
    assert any(r.body == (r.head + kg.n_relations,) for r in rules)  # symmetric rule
    for rule in rules:
        body, head = _body_and_head(kg, rule)
        assert len(head) > 20, rule.to_anyburl(kg)
        assert body == head, rule.to_anyburl(kg)


def test_noise_control_breaks_every_rule() -> None:
    kg, rules = make_synthetic_kg(n_entities=200, seed=0, noise_heads=True)
    clean, _ = make_synthetic_kg(n_entities=200, seed=0)
    for rule in rules:
        body, head = _body_and_head(kg, rule)
        confidence = len(body & head) / max(len(body), 1)
        assert confidence < 0.2, (rule.to_anyburl(kg), confidence)
        # same number of head triples as the clean KG
        assert len(head) == int((_all_rows(clean)[:, 1] == rule.head).sum())


def test_static_splits_and_no_leak() -> None:
    kg, rules = make_synthetic_kg(seed=3, test_fraction=0.2)
    derived = {r.head for r in rules}
    base_rows = kg.facts[~np.isin(kg.facts[:, 1], list(derived))]
    assert len(base_rows) > 0
    n_derived = len(kg.meta["derived"])  # spouse: the observed orientation is a base fact
    for split, q in kg.queries.items():
        assert len(q) > 0 and set(q[:, 1].tolist()) <= derived, split
        check_no_leak(kg.facts, q, where=split, n_relations=kg.n_relations)
    n_queries = sum(len(q) for q in kg.queries.values())
    assert n_queries < n_derived <= len(kg.facts) - len(base_rows) + n_queries
    assert abs(len(kg.queries["test"]) / n_derived - 0.2) < 0.01
    assert not np.any(_all_rows(kg)[:, 3])


def test_anyburl_text() -> None:
    kg, rules = make_synthetic_kg()
    text = [r.to_anyburl(kg) for r in rules]
    assert "grandparent(X,Y) <= parent(X,A), parent(A,Y)" in text
    assert "child(X,Y) <= parent(Y,X)" in text
    assert "spouse(X,Y) <= spouse(Y,X)" in text
    assert "great_grandparent(X,Y) <= parent(X,A), parent(A,B), parent(B,Y)" in text


@pytest.mark.parametrize("delay", [1, 3])
def test_temporal_rule_holds_with_delay(delay: int) -> None:
    kg, (rule,) = make_synthetic_temporal_kg(n_entities=60, n_times=30, delay=delay, seed=2)
    assert kg.temporal and kg.n_times == 30 and rule.time_order == (-delay,)
    a = kg.facts[kg.facts[:, 1] == rule.body[0]]
    b = np.concatenate(list(kg.queries.values()))
    assert set(b[:, 1].tolist()) == {rule.head}
    shifted = {(h, t, tm + delay) for h, _, t, tm in a.tolist()}
    assert {(h, t, tm) for h, _, t, tm in b.tolist()} == shifted
    assert _all_rows(kg)[:, 3].max() < 30 and b[:, 3].min() >= delay
    # forecasting split: train < valid < test in time
    tr, va, te = (kg.queries[s][:, 3] for s in ("train", "valid", "test"))
    assert tr.max() < va.min() and va.max() < te.min()
    # noise relations exist and do not follow the rule
    noise = kg.facts[kg.facts[:, 1] >= 2]
    assert len(noise) > 0
    hits = {(h, t, tm + delay) for h, _, t, tm in noise.tolist()} & shifted
    assert len(hits) < 0.1 * len(noise)


def test_determinism_and_seed_dependence() -> None:
    a, _ = make_synthetic_kg(seed=5)
    b, _ = make_synthetic_kg(seed=5)
    c, _ = make_synthetic_kg(seed=6)
    np.testing.assert_array_equal(a.facts, b.facts)
    for s in a.queries:
        np.testing.assert_array_equal(a.queries[s], b.queries[s])
    assert not np.array_equal(a.facts, c.facts)
    t1, _ = make_synthetic_temporal_kg(seed=1)
    t2, _ = make_synthetic_temporal_kg(seed=1)
    np.testing.assert_array_equal(t1.facts, t2.facts)
    np.testing.assert_array_equal(t1.queries["test"], t2.queries["test"])
    assert load_kg("synthetic", seed=5).facts.tolist() == a.facts.tolist()
    assert load_kg("synthetic_temporal", seed=1).temporal
