"""Rule statistics, application, AnyBURL text and FARI rule induction (methods/tunsr/rules.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.tunsr.data import Rule
from clinfuse.methods.tunsr.rules import (
    RuleSet,
    StepEdges,
    apply_rules,
    fari_paths,
    fari_schema,
    format_rule,
    parse_rule,
    path_weights,
    rule_stats,
    threshold_rules,
    write_rules,
)

# ----------------------------------------------------------------------------------------------
# Brute-force oracle: enumerate every assignment of the chain variables X, A, ..., Y
# ----------------------------------------------------------------------------------------------


def _holds(facts: set[tuple[int, int, int]], r: int, x: int, y: int, n_rel: int) -> bool:
    if r == 2 * n_rel:
        return x == y
    if r >= n_rel:
        return (y, r - n_rel, x) in facts
    return (x, r, y) in facts


def _brute_stats(
    facts: set[tuple[int, int, int]], rule: Rule, n_ent: int, n_rel: int
) -> tuple[int, int, int]:
    body_pairs = set()
    for chain in itertools.product(range(n_ent), repeat=len(rule.body) + 1):
        if all(_holds(facts, r, chain[i], chain[i + 1], n_rel) for i, r in enumerate(rule.body)):
            body_pairs.add((chain[0], chain[-1]))
    head_pairs = {
        (x, y) for x in range(n_ent) for y in range(n_ent) if _holds(facts, rule.head, x, y, n_rel)
    }
    return len(body_pairs & head_pairs), len(body_pairs), len(head_pairs)


def test_rule_stats_match_brute_force_enumeration() -> None:
    rng = np.random.default_rng(0)
    n_ent, n_rel, m = 7, 3, 22
    tri = np.stack(
        [rng.integers(0, n_ent, m), rng.integers(0, n_rel, m), rng.integers(0, n_ent, m)], 1
    )
    tri = np.concatenate([tri, tri[:3]])  # duplicate facts must not count twice
    tri4 = np.concatenate([tri, rng.integers(0, 5, (len(tri), 1))], 1)  # time column ignored
    facts = {tuple(int(v) for v in row) for row in tri}
    ids = range(2 * n_rel + 1)  # originals, inverses, self-loop
    rules = [Rule(head=h, body=(b,)) for h in range(2 * n_rel) for b in ids]
    rules += [
        Rule(head=int(rng.integers(0, 2 * n_rel)), body=b) for b in itertools.product(ids, ids)
    ]
    rules += [
        Rule(
            head=int(rng.integers(0, 2 * n_rel)), body=tuple(int(v) for v in rng.integers(0, 7, 3))
        )
        for _ in range(40)
    ]
    rules.append(Rule(head=0, body=(2 * n_rel, 2 * n_rel)))  # identity body
    stats = rule_stats(rules, torch.as_tensor(tri4), n_ent, n_rel)
    assert len(stats) == len(rules)
    nonzero = 0
    for rule, s in zip(rules, stats, strict=True):
        support, body_size, head_size = _brute_stats(facts, rule, n_ent, n_rel)
        assert (s.support, s.body_size, s.head_size) == (support, body_size, head_size), rule
        assert s.confidence == pytest.approx(support / body_size if body_size else 0.0)
        assert s.head_coverage == pytest.approx(support / head_size if head_size else 0.0)
        assert s.rule is rule
        nonzero += support > 0
    assert nonzero > 10  # the graph is dense enough for the comparison to mean something


def _family(seed: int = 0) -> tuple[np.ndarray, int]:
    """A parent forest (rel 0) and grandparent = parent o parent exactly (rel 1)."""
    rng = np.random.default_rng(seed)
    n = 60
    parent_of = {c: int(rng.integers(0, c)) for c in range(1, n) if rng.random() < 0.9}
    parent = [(p, 0, c) for c, p in parent_of.items()]
    grand = [(parent_of[p], 1, c) for c, p in parent_of.items() if p in parent_of]
    return np.array(parent + grand, dtype=np.int64), n


def test_grandparent_rule_is_exact_on_family_graph() -> None:
    tri, n = _family()
    n_grand = int((tri[:, 1] == 1).sum())
    assert n_grand > 20
    (s,) = rule_stats([Rule(head=1, body=(0, 0))], tri, n, 2)
    assert (s.confidence, s.head_coverage) == (1.0, 1.0)
    assert s.support == s.body_size == s.head_size == n_grand
    # the inverse reading: grandparent^-1(X,Y) <= parent^-1(X,A), parent^-1(A,Y)
    (s_inv,) = rule_stats([Rule(head=3, body=(2, 2))], tri, n, 2)
    assert (s_inv.confidence, s_inv.head_coverage) == (1.0, 1.0)
    # a wrong body: parent alone does not imply grandparent in a forest
    (s_wrong,) = rule_stats([Rule(head=1, body=(0,))], tri, n, 2)
    assert s_wrong.support == 0


def test_random_grandparent_facts_give_low_confidence() -> None:
    tri, n = _family()
    rng = np.random.default_rng(1)
    grand = tri[:, 1] == 1
    noisy = tri.copy()
    noisy[grand, 0] = rng.integers(0, n, int(grand.sum()))
    noisy[grand, 2] = rng.integers(0, n, int(grand.sum()))
    (s,) = rule_stats([Rule(head=1, body=(0, 0))], noisy, n, 2)
    assert s.confidence < 0.1
    assert s.head_coverage < 0.1


def test_rule_stats_rejects_bad_input() -> None:
    tri = np.array([[0, 0, 1]])
    with pytest.raises(DataError, match="shape"):
        rule_stats([Rule(0, (0,))], np.zeros((3, 2), dtype=np.int64), 2, 1)
    with pytest.raises(DataError, match="relation id out of range in triples"):
        rule_stats([Rule(0, (0,))], np.array([[0, 1, 1]]), 2, 1)  # inverse id among facts
    with pytest.raises(DataError, match="entity id"):
        rule_stats([Rule(0, (0,))], np.array([[0, 0, 5]]), 2, 1)
    with pytest.raises(DataError, match="rule body"):
        rule_stats([Rule(0, (3,))], tri, 2, 1)  # 3 > 2R


# ----------------------------------------------------------------------------------------------
# Rule application
# ----------------------------------------------------------------------------------------------


def test_apply_rules_max_and_noisy_or_by_hand() -> None:
    # relations: parent 0, friend 1, grandparent 2; parent 0->1, 1->2, 1->3; friend 0->3
    tri = np.array([[0, 0, 1], [1, 0, 2], [1, 0, 3], [0, 1, 3]])
    rules = [Rule(head=2, body=(0, 0), confidence=0.8), Rule(head=2, body=(1,), confidence=0.5)]
    queries = np.array([[0, 2], [1, 2], [0, 1]])
    s_max = apply_rules(rules, tri, queries, 4, "max", n_relations=3)
    s_or = apply_rules(rules, tri, queries, 4, "noisy_or", n_relations=3)
    assert s_max.shape == s_or.shape == (3, 4)
    torch.testing.assert_close(s_max[0], torch.tensor([0.0, 0.0, 0.8, 0.8]))
    torch.testing.assert_close(s_or[0], torch.tensor([0.0, 0.0, 0.8, 1 - 0.2 * 0.5]))
    assert s_max[1:].abs().sum() == 0 and s_or[1:].abs().sum() == 0  # no body / no rules
    # an inverse-head rule answers (y, grandparent^-1, ?): child 3 -> grandparent 0
    inv = [Rule(head=5, body=(3, 3), confidence=1.0)]
    s_inv = apply_rules(inv, tri, np.array([[3, 5]]), 4, "noisy_or", n_relations=3)
    torch.testing.assert_close(s_inv[0], torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_apply_rules_unknown_aggregation() -> None:
    with pytest.raises(ConfigError, match="aggregation"):
        apply_rules([], np.array([[0, 0, 1]]), np.array([[0, 0]]), 2, "mean")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# AnyBURL / PyClause text
# ----------------------------------------------------------------------------------------------

NAMES = ["parent", "brother", "grandparent", "uncle"]


def test_format_rule_anyburl_syntax() -> None:
    assert format_rule(Rule(2, (0, 0)), NAMES) == "grandparent(X,Y) <= parent(X,A), parent(A,Y)"
    assert format_rule(Rule(0, (4,)), NAMES) == "parent(X,Y) <= parent(Y,X)"
    assert (
        format_rule(Rule(3, (1, 8, 4, 0)), NAMES)  # self-loop 2R = 8 dropped
        == "uncle(X,Y) <= brother(X,A), parent(B,A), parent(B,Y)"
    )
    assert format_rule(Rule(7, (1,)), NAMES) == "uncle(Y,X) <= brother(X,Y)"
    with pytest.raises(DataError, match="non-empty body"):
        format_rule(Rule(0, (8, 8)), NAMES)


def test_format_parse_round_trip() -> None:
    rng = np.random.default_rng(0)
    n = len(NAMES)
    for _ in range(200):
        body = tuple(int(v) for v in rng.integers(0, 2 * n, int(rng.integers(1, 6))))
        rule = Rule(head=int(rng.integers(0, 2 * n)), body=body)
        back = parse_rule(format_rule(rule, NAMES), NAMES)
        assert (back.head, back.body) == (rule.head, rule.body)
    # whitespace and PyClause-style spacing are accepted
    r = parse_rule("  grandparent( X , Y ) <= parent(X,A),parent( A , Y )", NAMES)
    assert (r.head, r.body) == (2, (0, 0))


@pytest.mark.parametrize(
    "text",
    [
        "grandparent(X,Y) <= parent(X,A), parent(B,Y)",  # broken chain
        "grandparent(X,c) <= parent(X,c)",  # constant
        "grandparent(X,Y) <= parent(X,A)",  # does not reach Y
        "grandparent(X,Y)",  # no body
        "cousin(X,Y) <= parent(X,Y)",  # unknown relation
    ],
)
def test_parse_rule_rejects_non_chain_rules(text: str) -> None:
    with pytest.raises(DataError):
        parse_rule(text, NAMES)


def test_write_rules_anyburl_line_layout(tmp_path) -> None:
    tri, n = _family()
    names = ["parent", "grandparent"]
    rules = [Rule(1, (0, 0), confidence=0.7), Rule(1, (0,), confidence=0.2)]
    stats = rule_stats(rules, tri, n, 2)
    path = write_rules(tmp_path / "out" / "rules.txt", rules, stats, names)
    assert sorted(p.name for p in path.parent.iterdir()) == ["rules.txt"]  # no temp file left
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    num_pred, support, conf, text = lines[0].split("\t")
    assert int(num_pred) == stats[0].body_size and int(support) == stats[0].support
    assert float(conf) == pytest.approx(1.0)
    assert text == "grandparent(X,Y) <= parent(X,A), parent(A,Y)"
    assert lines[1].split("\t")[:3] == ["0", "0", "0"] or int(lines[1].split("\t")[0]) > 0
    parsed = parse_rule(lines[0], names)
    assert (parsed.head, parsed.body, parsed.confidence) == (1, (0, 0), 1.0)
    assert format_rule(rules[0], names, stats[0]) == lines[0]
    # model confidences instead of standard ones
    write_rules(path, rules, stats, names, confidence="model")
    assert [float(line.split("\t")[2]) for line in path.read_text().splitlines()] == [0.7, 0.2]
    with pytest.raises(DataError, match="align"):
        write_rules(path, rules, stats[:1], names)


# ----------------------------------------------------------------------------------------------
# FARI (a): schema beam on stand-in models exposing the TunsrModel FOL interface
# ----------------------------------------------------------------------------------------------


class TinyFol(nn.Module):
    """Stand-in with the attributes FARI (a) uses (rel_emb, fol_cell, fol_init, fol_beta)."""

    def __init__(self, n_relations: int, hidden: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.rel_emb = nn.Embedding(2 * n_relations + 1, hidden)
        self.fol_cell = nn.GRUCell(hidden, hidden)
        self.init_emb = nn.Embedding(2 * n_relations, hidden)
        self.w_beta = nn.Linear(hidden, 1)

    def fol_init(self, r_q: Tensor) -> Tensor:
        return self.init_emb(r_q)

    def beta_of(self, g: Tensor) -> Tensor:
        return torch.sigmoid(self.w_beta(g)).squeeze(-1)

    def fol_beta(self, g: Tensor, rel: Tensor) -> Tensor:
        """Attention of appending ``rel`` to a path in state ``g``: beta of the next state."""
        return self.beta_of(self.fol_cell(self.rel_emb(rel), g))


def _planted_model(n_relations: int = 2, k: float = 10.0) -> TinyFol:
    r"""A hand-set GRU whose unit 1 fires only after the relation sequence (0, 1).

    Update gate closed (z ~ 0), reset gate open (r ~ 1), so g' = tanh(W_in x + b_in + W_hn g):
    unit 0 = [last relation was 0], unit 1 = [x = 1 and unit 0 was on];
    beta = sigmoid(g_0 + 4 g_1) rewards 0 mildly and (0, 1) strongly.
    """
    h = 2 * n_relations + 1
    m = TinyFol(n_relations, h)
    with torch.no_grad():
        m.rel_emb.weight.copy_(torch.eye(h))
        for p in m.fol_cell.parameters():
            p.zero_()
        m.fol_cell.bias_ih[0:h] = 20.0  # reset gate open
        m.fol_cell.bias_ih[h : 2 * h] = -20.0  # update gate closed
        m.fol_cell.weight_ih[2 * h + 0, 0] = k
        m.fol_cell.bias_ih[2 * h + 0] = -0.5 * k
        m.fol_cell.weight_ih[2 * h + 1, 1] = k
        m.fol_cell.weight_hh[2 * h + 1, 0] = k
        m.fol_cell.bias_ih[2 * h + 1] = -1.5 * k
        init = torch.zeros(2 * n_relations, h)
        init[:, :2] = -1.0
        m.init_emb.weight.copy_(init)
        m.w_beta.weight.zero_()
        m.w_beta.weight[0, 0] = 1.0
        m.w_beta.weight[0, 1] = 4.0
        m.w_beta.bias.zero_()
    return m


def _exhaustive(model: TinyFol, r_q: int, n_rel: int, max_len: int) -> dict[tuple[int, ...], float]:
    """Oracle: score every sequence one by one, strip self-loops, keep the max per body."""
    best: dict[tuple[int, ...], float] = {}
    with torch.no_grad():
        for seq in itertools.product(range(2 * n_rel + 1), repeat=max_len):
            g = model.fol_init(torch.tensor([r_q]))
            conf = 1.0
            for r in seq:
                conf *= float(model.fol_beta(g, torch.tensor([r])))
                g = model.fol_cell(model.rel_emb(torch.tensor([r])), g)
            body = tuple(r for r in seq if r != 2 * n_rel)
            if body:
                best[body] = max(best.get(body, -math.inf), conf)
    return best


def test_fari_schema_ranks_planted_body_first() -> None:
    model = _planted_model()
    out = fari_schema(model, [2, 3], n_relations=2, max_len=2, beam=3)
    for r_q in (2, 3):
        assert out[r_q][0].body == (0, 1)
        assert out[r_q][0].head == r_q
        assert out[r_q][0].confidence > 5 * out[r_q][1].confidence
        assert len(out[r_q]) <= 3


def test_fari_schema_equals_exhaustive_search_with_full_beam() -> None:
    n_rel, max_len = 2, 3
    for model in (_planted_model(n_rel), TinyFol(n_rel, 6, seed=3)):
        model.train()
        full = (2 * n_rel + 1) ** max_len
        out = fari_schema(model, [0, 3], n_relations=n_rel, max_len=max_len, beam=full)
        assert model.training  # mode restored
        for r_q in (0, 3):
            oracle = _exhaustive(model, r_q, n_rel, max_len)
            got = {r.body: r.confidence for r in out[r_q]}
            assert set(got) == set(oracle)  # self-loops stripped, all-self body dropped, deduped
            assert len(got) == len(out[r_q])
            for body, conf in oracle.items():
                assert got[body] == pytest.approx(conf, rel=1e-5)
            confs = [r.confidence for r in out[r_q]]
            assert confs == sorted(confs, reverse=True)
            assert all(2 * n_rel not in r.body for r in out[r_q])
            assert any(len(r.body) == 1 for r in out[r_q])  # shorter bodies via self-loops


def test_fari_schema_is_deterministic_and_include_self_false() -> None:
    model = TinyFol(3, 8, seed=1)
    a = fari_schema(model, [0, 1, 2], n_relations=3, max_len=3, beam=5)
    b = fari_schema(model, [0, 1, 2], n_relations=3, max_len=3, beam=5)
    assert a == b
    c = fari_schema(model, [0], n_relations=3, max_len=2, beam=50, include_self=False)
    assert all(len(r.body) == 2 and 6 not in r.body for r in c[0])
    assert len(c[0]) == 36  # every length-2 body over R u R^-1, nothing merged


def test_fari_schema_config_errors() -> None:
    model = TinyFol(2, 4)
    with pytest.raises(ConfigError, match="n_relations"):
        fari_schema(model, [0], n_relations=3, max_len=2)
    with pytest.raises(ConfigError, match="head relation"):
        fari_schema(model, [4], n_relations=2, max_len=2)
    with pytest.raises(ConfigError, match="max_len"):
        fari_schema(model, [0], n_relations=2, max_len=0)


# ----------------------------------------------------------------------------------------------
# FARI (b): instance paths
# ----------------------------------------------------------------------------------------------


def _edges(rows: list[tuple[int, int, int, int, float]]) -> StepEdges:
    q, p, r, c, a = zip(*rows, strict=True)
    return StepEdges(
        query=torch.tensor(q),
        parent=torch.tensor(p),
        rel=torch.tensor(r),
        child=torch.tensor(c),
        a=torch.tensor(a, dtype=torch.float64),
    )


def _planted_paths() -> tuple[list[StepEdges | dict], np.ndarray, np.ndarray]:
    # R = 3, self-loop 6; queries [h, r_q], answers
    queries = np.array([[0, 1], [10, 1], [20, 0]])
    answers = np.array([3, 11, 21])
    step1 = _edges(
        [
            (0, 0, 0, 1, 0.6),
            (0, 0, 2, 2, 0.4),
            (0, 7, 0, 5, 0.9),  # parent is not the query entity: ignored
            (1, 10, 0, 12, 1.0),
            (1, 10, 2, 11, 0.5),
            (2, 20, 1, 21, 0.3),
        ]
    )
    step2 = {  # a plain dict is accepted too
        "query": [0, 0, 0, 0, 1, 1, 2],
        "parent": [1, 2, 1, 9, 12, 11, 21],
        "rel": [2, 3, 0, 1, 2, 6, 6],
        "child": [3, 3, 4, 3, 11, 11, 21],
        "a": [0.5, 0.5, 0.5, 0.8, 0.4, 1.0, 1.0],
        "alpha": [0.0] * 7,  # extra keys are ignored
    }
    return [step1, step2], queries, answers


def test_fari_paths_recovers_planted_sequences() -> None:
    steps, queries, answers = _planted_paths()
    out = fari_paths(steps, queries, answers, n_relations=3, max_len=2)
    # head 1: (0,2): .6*.5 + 1.0*.4 = .7; (2,3): .4*.5 = .2; (2,) via self-loop: .5 -> total 1.4
    got = {r.body: r.confidence for r in out[1]}
    assert got == pytest.approx({(0, 2): 0.5, (2, 3): 0.2 / 1.4, (2,): 0.5 / 1.4})
    assert [r.body for r in out[1]] == [(0, 2), (2,), (2, 3)]
    assert {r.body: r.confidence for r in out[0]} == pytest.approx({(1,): 1.0})
    assert all(r.head == h for h, rs in out.items() for r in rs)
    # one step only: the paths that reach the answer at step 1
    one = fari_paths(steps, queries, answers, n_relations=3, max_len=1)
    assert {h: [(r.body, r.confidence) for r in rs] for h, rs in one.items()} == {
        0: [((1,), 1.0)],
        1: [((2,), 1.0)],
    }


def test_fari_paths_times_separate_nodes() -> None:
    # the same entity at two times: a path may not jump between them
    s1 = StepEdges(
        query=torch.tensor([0, 0]),
        parent=torch.tensor([0, 0]),
        rel=torch.tensor([0, 1]),
        child=torch.tensor([1, 1]),
        a=torch.tensor([0.5, 0.5]),
        parent_time=torch.tensor([0, 0]),
        child_time=torch.tensor([1, 2]),
    )
    s2 = StepEdges(
        query=torch.tensor([0]),
        parent=torch.tensor([1]),
        rel=torch.tensor([2]),
        child=torch.tensor([5]),
        a=torch.tensor([1.0]),
        parent_time=torch.tensor([2]),
        child_time=torch.tensor([3]),
    )
    out = fari_paths([s1, s2], np.array([[0, 0]]), np.array([5]), n_relations=3, max_len=2)
    assert [r.body for r in out[0]] == [(1, 2)]


def test_fari_paths_rejects_bad_structures() -> None:
    _, queries, answers = _planted_paths()
    with pytest.raises(DataError, match="miss fields"):
        fari_paths([{"query": [0]}], queries, answers, 3, 1)
    with pytest.raises(DataError, match="do not match"):
        fari_paths([], queries, answers[:2], 3, 1)


# ----------------------------------------------------------------------------------------------
# Filtering and summaries
# ----------------------------------------------------------------------------------------------


def test_threshold_and_ruleset() -> None:
    rules = [Rule(2, (0, 0), 0.9), Rule(2, (1,), 0.05), Rule(3, (1, 4), 0.4), Rule(0, (4,), 0.6)]
    assert threshold_rules(rules, 0.5) == [rules[0], rules[3]]
    by_head = threshold_rules({2: rules[:2], 3: [rules[2]]}, 0.5)
    assert by_head == {2: [rules[0]]}
    rs = RuleSet.from_rules(rules)
    assert len(rs) == 4 and list(rs.by_head) == [0, 2, 3]
    assert rs.top(2, 5) == [rules[0], rules[1]]
    assert rs.length_histogram() == {1: 2, 2: 2}
    text = rs.summary(NAMES, k=1)
    assert "grandparent(X,Y) <= parent(X,A), parent(A,Y)" in text
    assert "brother(X,Y)" not in text  # k=1 keeps only the top rule of head 2


def test_fari_paths_model_format_with_cumulative_attention() -> None:
    """Node-index edges as TunsrModel returns them, a = a_raw * A_parent / Z per query."""
    queries = np.array([[0, 1, 3, 0], [5, 0, 6, 0]])  # [e_q, r_q, answer, t_q]
    step1 = {  # roots are nodes 0 and 1 (one per query); this step's nodes: 0, 1, 2
        "query": [0, 0, 1],
        "parent": [0, 0, 1],
        "child": [0, 1, 2],
        "child_entity": [1, 2, 6],
        "rel": [0, 2, 1],
        "a": [0.6, 0.4, 1.0],
    }
    z = 0.5 * 0.6 + 0.5 * 0.4 + 0.5 * 0.6  # query 0, step 2: raw a = 0.5 on every edge
    step2 = {  # this step's nodes: 0 = (q0, entity 3), 1 = (q0, entity 4), 2 = (q1, entity 6)
        "query": [0, 0, 0, 1],
        "parent": [0, 1, 0, 2],
        "child": [0, 0, 1, 2],
        "child_entity": [3, 3, 4, 6],
        "rel": [2, 3, 0, 6],
        "a": [0.5 * 0.6 / z, 0.5 * 0.4 / z, 0.5 * 0.6 / z, 1.0],
        "beta": [0.9, 0.1, 0.5, 1.0],
    }
    out = fari_paths([step1, step2], queries, queries[:, 2], 3, 2, attention="cumulative")
    assert {r.body: r.confidence for r in out[1]} == pytest.approx({(0, 2): 0.6, (2, 3): 0.4})
    assert {r.body: r.confidence for r in out[0]} == pytest.approx({(1,): 1.0})
    # treating cumulative attentions as per-edge ones double counts the parent: 0.6^2 vs 0.4^2
    naive = fari_paths([step1, step2], queries, queries[:, 2], 3, 2)
    assert naive[1][0].confidence == pytest.approx(0.36 / 0.52)
    with pytest.raises(DataError, match="beta"):
        fari_paths([step1, step2], queries, queries[:, 2], 3, 2, weight="beta")


# ----------------------------------------------------------------------------------------------
# Against the real TunsrModel (its FOL interface and the edges its forward returns)
# ----------------------------------------------------------------------------------------------


def _real_model(n_ent: int, n_rel: int, n_layers: int):
    from clinfuse.methods.tunsr.config import TunsrConfig
    from clinfuse.methods.tunsr.model import TunsrModel

    torch.manual_seed(0)
    cfg = TunsrConfig(n_layers=n_layers, hidden=8, max_nodes=15, dropout=0.0, score="att")
    return TunsrModel(cfg, n_ent, n_rel, 1).eval()


def test_fari_schema_on_tunsr_model_equals_exhaustive_search() -> None:
    n_rel = 2
    model = _real_model(12, n_rel, 2)
    out = fari_schema(model, [0, 1, 3], n_relations=n_rel, max_len=2, beam=25)
    for r_q in (0, 1, 3):
        oracle = _exhaustive(model, r_q, n_rel, 2)  # type: ignore[arg-type]
        assert {r.body: r.confidence for r in out[r_q]} == pytest.approx(oracle, rel=1e-5)


def test_fari_paths_on_tunsr_steps_sum_to_answer_attention() -> None:
    """Cumulative attentions: the path weights of an answer add up to its `att` score."""
    from clinfuse.methods.tunsr.graph import Adjacency

    n_ent, n_rel = 20, 3
    g = torch.Generator().manual_seed(0)
    facts = torch.stack(
        [
            torch.randint(0, n_ent, (80,), generator=g),
            torch.randint(0, n_rel, (80,), generator=g),
            torch.randint(0, n_ent, (80,), generator=g),
            torch.zeros(80, dtype=torch.long),
        ],
        1,
    )
    inv = facts[:, [2, 1, 0, 3]].clone()
    inv[:, 1] += n_rel
    adj = Adjacency.from_triples(torch.cat([facts, inv]), n_ent)
    model = _real_model(n_ent, n_rel, 3)
    queries = facts[:8].clone()[:, [0, 1, 2, 3]]
    with torch.no_grad():
        out = model(queries, adj)
    answers = out.scores.argmax(1)  # reached entities, so paths exist
    weights = path_weights(out.steps, queries, answers, n_rel, 3, "a", "cumulative")
    for n in range(len(queries)):
        total = sum(weights[n].values())
        assert total == pytest.approx(float(out.scores[n, answers[n]]), rel=1e-4)
        assert all(2 * n_rel not in seq and len(seq) <= 3 for seq in weights[n])
    naive = path_weights(out.steps, queries, answers, n_rel, 3, "a", "per_edge")
    assert any(  # reading cumulative attentions as per-edge ones breaks the identity
        abs(sum(naive[n].values()) - float(out.scores[n, answers[n]])) > 1e-3
        for n in range(len(queries))
    )
    rules = fari_paths(out.steps, queries, answers, n_rel, 3, attention="cumulative")
    for head, rs in rules.items():
        assert sum(r.confidence for r in rs) == pytest.approx(1.0)
        assert all(r.head == head for r in rs)
    # a walk cap bounds memory: a cap above every node's count changes nothing, a cap of 1
    # keeps one walk per node, so an answer keeps at most its single heaviest weight
    big = path_weights(out.steps, queries, answers, n_rel, 3, "a", "cumulative", max_paths=10**6)
    assert big == weights
    one = path_weights(out.steps, queries, answers, n_rel, 3, "a", "cumulative", max_paths=1)
    for n in range(len(queries)):
        assert len(one[n]) <= len(weights[n])
        assert sum(one[n].values()) <= sum(weights[n].values()) + 1e-9
    assert any(len(one[n]) < len(weights[n]) for n in range(len(queries)))


def _node_steps(steps: list[list[tuple[int, int, int, int, int]]]) -> list[StepEdges]:
    """Model-format steps of one query from ``(parent node, rel, child node, child entity,
    child time)`` edges, each with attention 1."""
    return [
        StepEdges(
            query=torch.zeros(len(s), dtype=torch.long),
            parent=torch.tensor([e[0] for e in s]),
            rel=torch.tensor([e[1] for e in s]),
            child=torch.tensor([e[2] for e in s]),
            a=torch.ones(len(s)),
            child_entity=torch.tensor([e[3] for e in s]),
            child_time=torch.tensor([e[4] for e in s]),
        )
        for s in steps
    ]


def test_fari_paths_reduces_backtracks_but_keeps_detours_through_other_entities() -> None:
    # R = 2, self-loop 4. Query entity 0 (time 10), answer 1. Walks to entity 1:
    #   0 -r0-> 1 -r0^-1-> 0 -r0-> 1   (a backtrack: reduces to r0)
    #   0 -r0-> 1 -self-> 1 -self-> 1  (r0)
    #   0 -r1-> 2 -r1^-1-> 3 -r0-> 1   (r1, r1^-1 through another entity: kept)
    steps = _node_steps(
        [
            [(0, 0, 0, 1, 9), (0, 1, 1, 2, 9)],
            [(0, 2, 0, 0, 9), (0, 4, 1, 1, 9), (1, 3, 2, 3, 9)],
            [(0, 0, 0, 1, 9), (1, 4, 1, 1, 9), (2, 0, 2, 1, 9)],
        ]
    )
    q, ans = np.array([[0, 1, 1, 10]]), np.array([1])
    plain = fari_paths(steps, q, ans, n_relations=2, max_len=3)
    assert {r.body for r in plain[1]} == {(0,), (0, 2, 0), (1, 3, 0)}
    reduced = fari_paths(steps, q, ans, n_relations=2, max_len=3, reduce_backtracks=True)
    assert [(r.body, r.confidence) for r in reduced[1]] == [((0,), 2 / 3), ((1, 3, 0), 1 / 3)]


def test_fari_paths_time_order_is_the_offset_of_each_body_atom() -> None:
    # B(X,Y,t) <= A(X,Y,t-1) (A = 0): query (x=0, B=1, y=1, t=5); the walk 0 -A@4-> 1 then a
    # self-loop; a second walk 0 -C@2-> 2 -A@3-> 1 (C = 2) with half the attention
    steps = _node_steps([[(0, 0, 0, 1, 4), (0, 2, 1, 2, 2)], [(0, 6, 0, 1, 4), (1, 0, 1, 1, 3)]])
    steps[1] = StepEdges(**{**steps[1].__dict__, "a": torch.tensor([1.0, 0.5])})
    q, ans = np.array([[0, 1, 1, 5]]), np.array([1])
    out = fari_paths(steps, q, ans, n_relations=3, max_len=2, time_order=True)
    assert [(r.body, r.time_order) for r in out[1]] == [((0,), (-1,)), ((2, 0), (-3, -2))]
    text = format_rule(out[1][0], ["A", "B", "C"])
    assert text == "B(X,Y) <= A(X,Y)  # time t-1"
    assert parse_rule(text, ["A", "B", "C"]).body == (0,)  # the comment is ignored
    with pytest.raises(DataError, match="time_order"):
        fari_paths(steps, q[:, :3], ans, n_relations=3, max_len=2, time_order=True)
