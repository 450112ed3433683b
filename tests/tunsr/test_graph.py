"""Reasoning-graph expansion: invariants, temporal constraints, leakage guard, sampling."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.tunsr.config import TunsrConfig
from clinfuse.methods.tunsr.graph import (
    Adjacency,
    attach_children,
    candidate_edges,
    expand,
    inverse_relation,
    root_nodes,
    segment_topk,
)

E, R = 30, 4


def with_inverse(triples: Tensor, n_relations: int) -> Tensor:
    """``(M, 4)`` -> ``(2M, 4)``: each fact and its inverse ``(t, r + R, h, time)``."""
    inv = triples[:, [2, 1, 0, 3]].clone()
    inv[:, 1] += n_relations
    return torch.cat([triples, inv])


def random_kg(seed: int, m: int = 150, n_times: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(0, E, (m,), generator=g),
            torch.randint(0, R, (m,), generator=g),
            torch.randint(0, E, (m,), generator=g),
            torch.randint(0, n_times, (m,), generator=g),
        ],
        1,
    )


def edge_rows(nodes_prev, edges) -> Tensor:
    """``(C, 5)`` rows ``[query, head entity, rel, tail entity, time]`` of a step's edges."""
    head = nodes_prev.entity[edges.parent]
    return torch.stack([edges.query, head, edges.rel, edges.entity, edges.time], 1)


def test_adjacency_is_sorted_by_head_then_time() -> None:
    kg = random_kg(0, n_times=10)
    adj = Adjacency.from_triples(kg, E)
    assert adj.indptr[-1] == len(kg)
    for e in range(E):
        seg = slice(int(adj.indptr[e]), int(adj.indptr[e + 1]))
        assert torch.all(adj.time[seg][1:] >= adj.time[seg][:-1])
        expected = sorted(kg[kg[:, 0] == e][:, [1, 2, 3]].tolist())
        got = sorted(torch.stack([adj.rel[seg], adj.tail[seg], adj.time[seg]], 1).tolist())
        assert got == expected
    with pytest.raises(DataError, match="outside the entity table"):
        Adjacency.from_triples(kg, 5)


def test_step0_is_query_entity_and_self_loops_at_every_step() -> None:
    adj = Adjacency.from_triples(with_inverse(random_kg(1), R), E)
    queries = torch.tensor([[3, 0, 5, 0], [7, 1, 2, 0], [3, 2, 9, 0]])
    nodes, steps = expand(queries, adj, 3, n_relations=R)
    assert nodes[0].query.tolist() == [0, 1, 2]
    assert nodes[0].entity.tolist() == [3, 7, 3]
    for prev, edges, new in zip(nodes[:-1], steps, nodes[1:], strict=True):
        loops = edges.rel == 2 * R
        assert sorted(edges.parent[loops].tolist()) == list(range(len(prev.entity)))
        assert torch.equal(edges.entity[loops], prev.entity[edges.parent[loops]])
        assert torch.equal(edges.time[loops], prev.time[edges.parent[loops]])
        # children index the next table, which is unique per (query, entity, time)
        assert torch.equal(new.entity[edges.child], edges.entity)
        assert torch.equal(new.query[edges.child], edges.query)
        keys = torch.stack([new.query, new.entity, new.time], 1)
        assert len(torch.unique(keys, dim=0)) == len(keys)


def test_vectorised_gather_matches_a_loop_oracle() -> None:
    kg = with_inverse(random_kg(2, n_times=6), R)
    adj = Adjacency.from_triples(kg, E)
    queries = torch.tensor([[1, 0, 4, 5], [2, 3, 0, 3], [1, 1, 1, 4]])
    nodes, steps = expand(queries, adj, 2, n_relations=R, constraint="monotone")
    for prev, edges in zip(nodes[:-1], steps, strict=True):
        expected = []
        for i in range(len(prev.entity)):
            b, e, tv = int(prev.query[i]), int(prev.entity[i]), int(prev.time[i])
            tq = int(queries[b, 3])
            expected += [
                [b, e, int(r), int(t), int(ti)]
                for _, r, t, ti in kg[kg[:, 0] == e].tolist()
                if tv <= ti < tq
            ]
            expected.append([b, e, 2 * R, e, tv])
        assert sorted(edge_rows(prev, edges).tolist()) == sorted(expected)


def test_segment_topk_keeps_the_k_largest_per_segment() -> None:
    g = torch.Generator().manual_seed(3)
    key = torch.rand(500, generator=g)
    seg = torch.randint(0, 7, (500,), generator=g)
    kept = segment_topk(key, seg, 10, 7)
    assert torch.all(kept[1:] > kept[:-1])
    for s in range(7):
        mine = kept[seg[kept] == s]
        assert len(mine) == min(10, int((seg == s).sum()))
        best = torch.sort(key[seg == s], descending=True).values[:10]
        assert torch.allclose(torch.sort(key[mine], descending=True).values, best)


def test_segment_topk_always_keeps_infinite_keys_and_never_minus_infinity() -> None:
    inf = float("inf")
    key = torch.tensor([0.3, inf, 0.9, -inf, 0.1, inf, 0.2, 0.5])
    seg = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert segment_topk(key, seg, 1, 2).tolist() == [1, 2, 5, 7]
    assert segment_topk(key, seg, 0, 2).tolist() == [1, 5]
    assert 3 not in segment_topk(key, seg, 10, 2).tolist()
    # ties keep the earlier entry of the segment, whatever the other segments hold
    tie = torch.tensor([0.5, 0.5, 0.5, 0.7, 0.5])
    assert segment_topk(tie, torch.tensor([1, 1, 1, 0, 1]), 2, 2).tolist() == [0, 1, 3]


@pytest.mark.parametrize("constraint", ["any", "before_query", "monotone"])
@pytest.mark.parametrize("exclude", [False, True])
def test_windowed_gather_equals_gather_all_then_filter(constraint: str, exclude: bool) -> None:
    """Only the admissible time window of each node is gathered; the candidates (and their
    order) are those of gathering every out-edge and filtering by the constraint."""
    kg = with_inverse(random_kg(9, m=400, n_times=15), R)
    adj = Adjacency.from_triples(kg, E)
    g = torch.Generator().manual_seed(3)
    queries = torch.stack(
        [
            torch.randint(0, E, (8,), generator=g),
            torch.randint(0, R, (8,), generator=g),
            torch.randint(0, E, (8,), generator=g),
            torch.randint(0, 17, (8,), generator=g),
        ],
        1,
    )
    nodes, _ = expand(queries, adj, 2, n_relations=R, constraint=constraint)  # type: ignore[arg-type]
    for layer in nodes:
        got = candidate_edges(
            layer,
            adj,
            queries,
            n_relations=R,
            constraint=constraint,  # type: ignore[arg-type]
            exclude_query=exclude,
        )
        rows = []
        for i in range(len(layer.entity)):
            b, e, tv = int(layer.query[i]), int(layer.entity[i]), int(layer.time[i])
            q = queries[b].tolist()
            for j in range(int(adj.indptr[e]), int(adj.indptr[e + 1])):
                r, t, ti = int(adj.rel[j]), int(adj.tail[j]), int(adj.time[j])
                ok = {"any": True, "before_query": ti < q[3], "monotone": tv <= ti < q[3]}
                inverse = (q[2], (q[1] + R) % (2 * R), q[0])
                hit = (e, r, t) in ((q[0], q[1], q[2]), inverse)
                if ok[constraint] and not (exclude and ti == q[3] and hit):
                    rows.append([b, i, r, t, ti])
        rows += [
            [int(layer.query[i]), i, 2 * R, int(layer.entity[i]), int(layer.time[i])]
            for i in range(len(layer.entity))
        ]
        got_rows = torch.stack([got.query, got.parent, got.rel, got.entity, got.time], 1)
        assert got_rows.tolist() == rows


@pytest.mark.parametrize("constraint", ["before_query", "monotone"])
def test_extrapolation_never_uses_the_query_time_or_later(constraint: str) -> None:
    kg = with_inverse(random_kg(4, m=300, n_times=12), R)
    adj = Adjacency.from_triples(kg, E)
    queries = torch.tensor([[e, 0, 0, tq] for e, tq in [(0, 6), (5, 9), (11, 3), (3, 12)]])
    nodes, steps = expand(queries, adj, 3, n_relations=R, constraint=constraint)  # type: ignore[arg-type]
    real = 0
    for prev, edges in zip(nodes[:-1], steps, strict=True):
        loops = edges.rel == 2 * R
        assert torch.all(edges.time[~loops] < queries[edges.query[~loops], 3])
        real += int((~loops).sum())
        if constraint == "monotone":  # times never decrease along a path
            assert torch.all(edges.time >= prev.time[edges.parent])
    assert real > 50  # the check is not vacuous
    if constraint == "monotone":
        assert torch.all(nodes[0].time == 0)


def test_interpolation_sees_both_sides_but_never_the_query_fact() -> None:
    facts = random_kg(5, m=300, n_times=12)
    query_fact = facts[:8]
    adj = Adjacency.from_triples(with_inverse(facts, R), E)
    nodes, steps = expand(query_fact, adj, 3, n_relations=R, constraint="any", exclude_query=True)
    before = after = 0
    for prev, edges in zip(nodes[:-1], steps, strict=True):
        rows = edge_rows(prev, edges)
        q = query_fact[edges.query]
        forward = (rows[:, 1:] == q[:, [0, 1, 2, 3]]).all(1)
        inv = torch.stack([q[:, 2], inverse_relation(q[:, 1], R), q[:, 0], q[:, 3]], 1)
        assert not forward.any() and not (rows[:, 1:] == inv).all(1).any()
        real = edges.rel != 2 * R
        before += int((edges.time[real] < q[real, 3]).sum())
        after += int((edges.time[real] > q[real, 3]).sum())
    assert before > 0 and after > 0


@pytest.mark.parametrize("exclude", [True, False])
def test_leakage_guard_removes_the_query_triple_and_its_inverse(exclude: bool) -> None:
    facts = random_kg(6, m=120)
    queries = facts[:10]
    adj = Adjacency.from_triples(with_inverse(facts, R), E)
    nodes, steps = expand(queries, adj, 3, n_relations=R, exclude_query=exclude)
    hits = 0
    for prev, edges in zip(nodes[:-1], steps, strict=True):
        rows = edge_rows(prev, edges)
        q = queries[edges.query]
        hits += int((rows[:, 1:4] == q[:, :3]).all(1).sum())
        inv = torch.stack([q[:, 2], q[:, 1] + R, q[:, 0]], 1)
        hits += int((rows[:, 1:4] == inv).all(1).sum())
    assert (hits == 0) == exclude  # without the guard, the query facts are there


def test_sampling_is_seeded_and_caps_fan_out() -> None:
    kg = with_inverse(random_kg(7, m=400, n_times=5), R)
    adj = Adjacency.from_triples(kg, E)
    queries = torch.tensor([[e, 0, 0, 5] for e in range(6)])

    def run(seed: int, k: int | None) -> list:
        gen = torch.Generator().manual_seed(seed)
        _, steps = expand(queries, adj, 2, n_relations=R, sample_nodes=k, generator=gen)
        return steps

    a, b, c = run(0, 3), run(0, 3), run(1, 3)
    for ea, eb in zip(a, b, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(ea, eb, strict=True))
    assert any(not torch.equal(x.entity, y.entity) for x, y in zip(a, c, strict=True))
    for edges in a:
        real = edges.rel != 2 * R
        assert torch.bincount(edges.parent[real]).max() <= 3
    unsampled = run(0, None)[0]
    assert torch.bincount(unsampled.parent[unsampled.rel != 2 * R]).max() > 3  # cap binds


def test_sampling_favours_recent_facts() -> None:
    facts = torch.tensor([[0, 0, 1 + i, i] for i in range(20)])
    adj = Adjacency.from_triples(facts, 25)
    queries = torch.tensor([[0, 0, 0, 20]])
    gen = torch.Generator().manual_seed(0)
    picked = []
    for _ in range(200):
        cand = candidate_edges(
            root_nodes(queries, "before_query"),
            adj,
            queries,
            n_relations=1,
            constraint="before_query",
            sample_nodes=1,
            sample_temperature=0.5,
            generator=gen,
        )
        picked.append(int(cand.time[0]))
    # p(t) ~ exp(0.5 (t - 20)): t = 19 has probability about 0.39, t <= 9 about 0.003
    frac_19 = picked.count(19) / len(picked)
    assert 0.25 < frac_19 < 0.55
    assert sum(t <= 9 for t in picked) <= 5


def test_evaluation_sampling_gives_a_node_the_same_neighbours_in_any_expansion() -> None:
    """Without a generator the Gumbel noise is a function of (query, edge): a node draws the same
    neighbours whether it is expanded alone, beside other nodes, or in another batch."""
    kg = with_inverse(random_kg(3, m=600, n_times=6), R)
    adj = Adjacency.from_triples(kg, E)
    queries = torch.tensor([[e, e % R, 0, 6] for e in range(8)])

    def picks(qs, nodes_of):
        nodes = root_nodes(qs, "before_query")
        if nodes_of is not None:  # several nodes per query: the roots plus other entities
            keep = nodes_of
            nodes = type(nodes)(
                torch.repeat_interleave(torch.arange(len(qs)), len(keep)),
                torch.tensor(keep * len(qs)),
                torch.zeros(len(qs) * len(keep), dtype=torch.int64),
            )
        cand = candidate_edges(
            nodes, adj, qs, n_relations=R, constraint="before_query", sample_nodes=2
        )
        real = cand.rel != 2 * R
        head = nodes.entity[cand.parent[real]]
        q = qs[cand.query[real]]
        rows = torch.stack(
            [q[:, 0], q[:, 1], head, cand.rel[real], cand.entity[real], cand.time[real]], 1
        )
        return {tuple(r) for r in rows.tolist()}

    alone = picks(queries[:3], [5])
    crowded = picks(queries, [5, 6, 7, 8, 9])  # more nodes and more queries in the batch
    again = picks(queries[:3], [5])
    assert alone == again
    assert alone <= crowded and any(r[2] == 5 for r in alone)
    per_node = {}
    for r in crowded:
        per_node.setdefault((r[0], r[1], r[2]), []).append(r)
    assert max(len(v) for v in per_node.values()) <= 2


def test_evaluation_sampling_is_uniform_over_a_nodes_edges_at_zero_temperature() -> None:
    """Over many queries, each of a node's 10 edges is drawn with probability k/10 = 0.3."""
    facts = torch.tensor([[0, 0, 1 + i, 0] for i in range(10)])
    adj = Adjacency.from_triples(facts, 12)
    n = 3000
    queries = torch.stack(
        [
            torch.zeros(n, dtype=torch.int64),
            torch.arange(n) % 7,
            torch.zeros(n, dtype=torch.int64),
            1 + torch.arange(n) // 7,
        ],
        1,
    )
    cand = candidate_edges(
        root_nodes(queries, "before_query"),
        adj,
        queries,
        n_relations=1,
        constraint="before_query",
        sample_nodes=3,
        sample_temperature=0.0,
    )
    real = cand.rel != 2
    freq = torch.bincount(cand.entity[real], minlength=11)[1:].double() / n
    assert torch.all((freq - 0.3).abs() < 0.04), freq.tolist()


def test_attach_children_deduplicates_per_query() -> None:
    adj = Adjacency.from_triples(torch.tensor([[0, 0, 2, 0], [1, 0, 2, 0]]), 3)
    queries = torch.tensor([[0, 0, 2, 0], [1, 0, 2, 0], [0, 0, 2, 0]])
    cand = candidate_edges(root_nodes(queries, "any"), adj, queries, n_relations=1)
    edges, nodes = attach_children(cand, 3)
    # entity 2 is reached by all three queries: three distinct nodes, one per query
    assert sorted(zip(nodes.query.tolist(), nodes.entity.tolist(), strict=True)) == [
        (0, 0),
        (0, 2),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 2),
    ]
    assert len(edges.child) == 6


def test_config_rejects_bad_values() -> None:
    TunsrConfig().validate()
    assert TunsrConfig(scenario="extrapolation").constraint == "monotone"
    assert TunsrConfig(scenario="interpolation").constraint == "any"
    assert not TunsrConfig(scenario="inductive").entity_embeddings
    for bad in (
        {"attention_mix": 1.5},
        {"learn_mix": True, "attention_mix": 1.0},
        {"sample_nodes": 0},
        {"scenario": "inductive", "use_entity_embeddings": True},
        {"scenario": "transductive", "temporal_constraint": "monotone"},
        {"dropout": 1.0},
    ):
        with pytest.raises(ConfigError):
            TunsrConfig(**bad).validate()  # type: ignore[arg-type]
