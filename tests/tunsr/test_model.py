"""The Tunsr network: attention invariants, scoring, losses, FARI interface, training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from clinfuse.methods.tunsr.config import TunsrConfig
from clinfuse.methods.tunsr.graph import Adjacency
from clinfuse.methods.tunsr.model import (
    TimeEncode,
    TunsrModel,
    fol_loss,
    reached,
    tiebreak,
    tunsr_loss,
)

E, R, T = 30, 4, 8


def with_inverse(triples: Tensor, n_relations: int) -> Tensor:
    inv = triples[:, [2, 1, 0, 3]].clone()
    inv[:, 1] += n_relations
    return torch.cat([triples, inv])


def random_kg(seed: int, m: int = 150, n_times: int = 1, n_entities: int = E) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(0, n_entities, (m,), generator=g),
            torch.randint(0, R, (m,), generator=g),
            torch.randint(0, n_entities, (m,), generator=g),
            torch.randint(0, n_times, (m,), generator=g),
        ],
        1,
    )


def make(cfg: TunsrConfig, n_times: int = 1, seed: int = 0) -> TunsrModel:
    torch.manual_seed(seed)
    return TunsrModel(cfg, E, R, n_times)


def test_attention_sums_to_one_per_query_and_topk_cap_holds() -> None:
    facts = random_kg(0, m=200)
    adj = Adjacency.from_triples(with_inverse(facts, R), E)
    queries = facts[:6]
    for k, binding in ((7, True), (10_000, False)):
        model = make(TunsrConfig(max_nodes=k, dropout=0.0)).eval()
        out = model(queries, adj, train=True)
        counts = []
        for step in out.steps:
            per_query = torch.zeros(6).index_add(0, step["query"], step["a"])
            assert torch.allclose(per_query, torch.ones(6), atol=1e-5)
            real = step["rel"] < 2 * R  # self-loops are kept on top of the k real edges
            counts.append(torch.bincount(step["query"][real], minlength=6))
            # every node of the previous step keeps its self-loop
            assert int((~real).sum()) == (len(step["parent"]) - int(real.sum()))
        assert max(int(c.max()) for c in counts) <= k
        assert (max(int(c.max()) for c in counts) > 7) == (not binding)
        assert max(int(c.max()) for c in counts) == 7 or not binding
        assert torch.allclose(out.scores.sum(1), torch.ones(6), atol=1e-5)
        assert torch.all(out.scores >= 0)


def test_two_hop_answer_scores_and_unreached_entities_score_zero() -> None:
    # 0 -r0-> 1 -r1-> 2 ; 3 -r0-> 4 is disconnected from the query
    facts = torch.tensor([[0, 0, 1, 0], [1, 1, 2, 0], [3, 0, 4, 0]])
    adj = Adjacency.from_triples(with_inverse(facts, R), E)
    query = torch.tensor([[0, 2, 2, 0]])
    for layers in (1, 2):
        model = make(TunsrConfig(n_layers=layers, dropout=0.0)).eval()
        scores = model(query, adj).scores[0]
        assert (scores[2] > 0) == (layers == 2)
        reached = {0, 1, 2} if layers == 2 else {0, 1}
        for e in range(E):
            assert (scores[e] > 0) == (e in reached), e


def test_inductive_scores_are_invariant_to_relabelling_entities() -> None:
    cfg = TunsrConfig(scenario="inductive", score="both", max_nodes=10_000, dropout=0.0)
    model = make(cfg).eval()
    facts = random_kg(1, m=120)
    queries = facts[:5]
    perm = torch.randperm(E, generator=torch.Generator().manual_seed(9))
    relabel = facts.clone()
    relabel[:, 0], relabel[:, 2] = perm[facts[:, 0]], perm[facts[:, 2]]
    rq = relabel[:5]
    s = model(queries, Adjacency.from_triples(with_inverse(facts, R), E), train=True).scores
    s2 = model(rq, Adjacency.from_triples(with_inverse(relabel, R), E), train=True).scores
    assert torch.allclose(s2[:, perm], s, atol=1e-5)
    assert (s != 0).sum() > 20  # non-trivial
    # with entity embeddings the same relabelling changes the scores
    with_ent = TunsrConfig(score="both", max_nodes=10_000, dropout=0.0, use_entity_embeddings=True)
    model_t = make(with_ent).eval()
    st = model_t(queries, Adjacency.from_triples(with_inverse(facts, R), E)).scores
    st2 = model_t(rq, Adjacency.from_triples(with_inverse(relabel, R), E)).scores
    assert not torch.allclose(st2[:, perm], st, atol=1e-5)


@pytest.mark.parametrize(
    "cfg",
    [
        TunsrConfig(score="att", scenario="interpolation", learn_mix=True, dropout=0.0),
        TunsrConfig(score="both", scenario="extrapolation", learn_mix=True, dropout=0.0),
        TunsrConfig(score="both", loss="bce", dropout=0.0),
    ],
    ids=["att-interp", "both-extrap", "both-static-bce"],
)
def test_every_parameter_changes_after_a_training_step(cfg: TunsrConfig) -> None:
    n_times = T if cfg.temporal else 1
    model = make(cfg, n_times=n_times)
    facts = random_kg(2, m=300, n_times=n_times)
    adj = Adjacency.from_triples(with_inverse(facts, R), E)
    queries = facts[:16].clone()
    queries[:, 3] = queries[:, 3].clamp_min(4)  # extrapolation needs history before t_q
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    out = model(queries, adj, train=True)
    loss = tunsr_loss(out.scores, queries[:, 2], cfg)
    loss.backward()
    opt.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged
    expect_w_emd = cfg.score != "att"
    assert any("w_emd" in n for n in before) == expect_w_emd


def test_batch_equals_single_query_calls() -> None:
    cfg = TunsrConfig(scenario="extrapolation", score="both", max_nodes=12, dropout=0.0)
    model = make(cfg, n_times=T).eval()
    facts = random_kg(3, m=300, n_times=T)
    adj = Adjacency.from_triples(with_inverse(facts, R), E)
    queries = facts[:8].clone()
    queries[:, 3] = 6
    batch = model(queries, adj, train=True).scores
    singles = torch.cat([model(q[None], adj, train=True).scores for q in queries])
    assert torch.allclose(batch, singles, atol=1e-6)
    assert (batch != 0).sum(1).min() > 1


def test_fari_interface_reproduces_first_step_beta() -> None:
    model = make(TunsrConfig(dropout=0.0)).eval()
    facts = random_kg(4)
    adj = Adjacency.from_triples(with_inverse(facts, R), E)
    queries = facts[:4]
    step = model(queries, adj).steps[0]
    assert model.rel_emb.num_embeddings == 2 * R + 1
    assert isinstance(model.fol_cell, torch.nn.GRUCell)
    g0 = model.fol_init(queries[:, 1])
    assert g0.shape == (4, model.cfg.hidden)
    beta = model.fol_beta(g0[step["query"]], step["rel"])
    assert torch.allclose(beta, step["beta"], atol=1e-6)
    assert beta.shape == (len(step["rel"]),)


def test_losses_match_their_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.rand(3, 6, generator=g)
    y = torch.tensor([0, 4, 2])
    ce = -s[torch.arange(3), y] + torch.logsumexp(s, 1)
    assert torch.allclose(tunsr_loss(s, y, TunsrConfig(loss="ce")), ce.mean())
    p = s / s.sum(1, keepdim=True)
    tgt = torch.full_like(p, 1e-4)
    tgt[torch.arange(3), y] += 0.9
    bce = -(tgt * p.log() + (1 - tgt) * (1 - p).log()).sum(1).mean()
    assert torch.allclose(tunsr_loss(s, y, TunsrConfig(loss="bce")), bce, atol=1e-5)


def test_time_encoding_initial_frequencies() -> None:
    enc = TimeEncode(10, 4)
    assert torch.allclose(enc.omega, 10.0 ** -torch.linspace(0, 9, 10))
    raw = torch.cos(torch.tensor([3.0])[:, None] * enc.omega)
    assert torch.allclose(enc(torch.tensor([3])), enc.proj(raw))
    assert math.isclose(float(enc.omega[0].detach()), 1.0)


def composition_kg(seed: int, n: int = 60) -> tuple[Tensor, Tensor, Tensor]:
    """rel 2 = rel 0 then rel 1 (functional maps); rel 3 is noise. Returns facts, train, test."""
    g = torch.Generator().manual_seed(seed)
    f0 = torch.randint(0, n, (n,), generator=g)
    f1 = torch.randint(0, n, (n,), generator=g)
    x = torch.arange(n)
    zeros = torch.zeros(n, dtype=torch.int64)
    base = torch.cat(
        [
            torch.stack([x, zeros, f0, zeros], 1),
            torch.stack([x, zeros + 1, f1, zeros], 1),
            torch.stack([x, zeros + 3, torch.randint(0, n, (n,), generator=g), zeros], 1),
        ]
    )
    derived = torch.stack([x, zeros + 2, f1[f0], zeros], 1)
    derived = derived[torch.randperm(n, generator=g)]
    train, test = derived[: int(0.8 * n)], derived[int(0.8 * n) :]
    return torch.cat([base, train]), train, test


def test_training_learns_a_composition_rule() -> None:
    n = 60
    facts, train, test = composition_kg(0, n)
    adj = Adjacency.from_triples(with_inverse(facts, R), n)
    cfg = TunsrConfig(n_layers=2, hidden=16, dropout=0.0, lr=5e-3, max_nodes=100)
    torch.manual_seed(0)
    model = TunsrModel(cfg, n, R, 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(0)

    def hits1() -> float:
        with torch.no_grad():
            s = model.eval()(test, adj).scores
        gold = s[torch.arange(len(test)), test[:, 2]]
        others = s.clone()
        others[torch.arange(len(test)), test[:, 2]] = -1.0
        return float((gold > others.max(1).values).float().mean())

    start = hits1()
    model.train()
    for _ in range(100):
        batch = train[torch.randint(0, len(train), (16,), generator=g)]
        loss = tunsr_loss(model(batch, adj, train=True).scores, batch[:, 2], cfg)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
        opt.step()
    end = hits1()
    assert end >= 0.9, (start, end)
    assert start < 0.9


def test_decomposed_products_equal_the_concatenated_definitions() -> None:
    model = make(TunsrConfig(scenario="interpolation", use_entity_embeddings=True), n_times=T)
    layer = model.layers[1]
    assert model.layers[0].w_s is None  # the root state is 0: nothing for W_s to read
    g = torch.Generator().manual_seed(5)
    h, q = torch.randn(7, 48, generator=g), torch.randn(3, 48 * 3, generator=g)
    parent, rel = torch.randint(0, 7, (20,), generator=g), torch.randint(0, 2 * R + 1, (20,))
    query = torch.randint(0, 3, (20,), generator=g)
    r = layer.rel(rel)
    assert torch.allclose(layer.message(h, parent, rel), h[parent] + r, atol=1e-6)
    x = torch.randn(20, 5, generator=g)
    pre = layer.w_s(h[parent]) + layer.w_r(r) + layer.w_q(q[query]) + x
    alpha = torch.sigmoid(layer.w_alpha(torch.relu(pre))).squeeze(-1)
    assert torch.allclose(layer.alpha(h, q, parent, rel, query, x), alpha, atol=1e-5)
    gs = torch.randn(7, 48, generator=g)
    beta = torch.sigmoid(
        model.w_beta(torch.tanh(model.w_fol_g(gs[parent]) + model.w_fol_r(model.rel_emb(rel))))
    ).squeeze(-1)
    assert torch.allclose(model._fol_beta_gathered(model.w_fol_g(gs), parent, rel), beta)
    assert torch.allclose(model.fol_beta(gs[parent], rel), beta, atol=1e-6)
    entity, time, tq = torch.randint(0, E, (20,)), torch.randint(0, T, (20,)), torch.full((20,), 3)
    x_def = layer.w_x(torch.cat([model.ent_emb(entity), model.time_enc(time - tq)], -1))
    assert torch.allclose(model._child_feature(layer, entity, time, tq), x_def, atol=1e-5)


def test_fol_scores_depend_on_beta_alone_and_fol_loss_trains_only_the_first_order_part() -> None:
    facts = random_kg(4, m=200)
    adj = Adjacency.from_triples(with_inverse(facts, R), E)
    queries = facts[:5]
    # one layer, no pruning: from layer 2 on g_c merges edge states with the mixed attention a
    model = make(TunsrConfig(n_layers=1, max_nodes=10_000, dropout=0.0)).eval()
    out = model(queries, adj, train=True)
    assert torch.allclose(out.fol_scores.sum(1), torch.ones(5), atol=1e-5)
    with torch.no_grad():  # change the propositional attention: scores move, fol_scores do not
        for layer in model.layers:
            layer.w_alpha.bias.add_(3.0)
            layer.w_q.weight.mul_(-2.0)
    again = model(queries, adj, train=True)
    assert not torch.allclose(again.scores, out.scores)
    assert torch.allclose(again.fol_scores, out.fol_scores)
    model.zero_grad()
    fol_loss(again.fol_scores, queries[:, 2]).backward()
    assert model.w_beta.weight.grad is not None and model.w_beta.weight.grad.abs().sum() > 0
    assert model.layers[0].w_alpha.weight.grad is None


def test_nll_loss_is_the_answer_share_of_attention() -> None:
    from clinfuse.methods.tunsr.config import TunsrConfig
    from clinfuse.methods.tunsr.model import tunsr_loss

    s = torch.tensor([[0.2, 0.6, 0.2], [0.5, 0.25, 0.25]])
    got = tunsr_loss(s, torch.tensor([1, 0]), TunsrConfig(loss="nll"))
    assert torch.isclose(got, -(torch.log(torch.tensor(0.6)) + torch.log(torch.tensor(0.5))) / 2)


def test_tiebreak_keeps_the_near_order_and_orders_the_unreached_by_the_far_graph() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        near = torch.randn(3, 40, generator=g) * torch.rand(3, 1, generator=g) * 10
        near_reached = torch.rand(3, 40, generator=g) < 0.4
        near = torch.where(near_reached, near, 0.0)
        far = torch.randn(3, 40, generator=g)
        far_reached = near_reached | (torch.rand(3, 40, generator=g) < 0.5)
        out = tiebreak(near, near_reached, far, far_reached)
        for i in range(3):
            for a in range(40):
                for b in range(40):
                    if near[i, a] > near[i, b] and (near_reached[i, a] or near_reached[i, b]):
                        assert out[i, a] > out[i, b]  # the near order is kept
                    if not near_reached[i, a] and not near_reached[i, b]:
                        fa, fb = bool(far_reached[i, a]), bool(far_reached[i, b])
                        ka = (fa, float(far[i, a]) if fa else 0.0)
                        kb = (fb, float(far[i, b]) if fb else 0.0)
                        if ka > kb:
                            assert out[i, a] > out[i, b]  # ties broken by the far graph


def test_tiebreak_evaluation_ranks_reached_entities_as_the_training_width_graph() -> None:
    facts = random_kg(3, m=400)
    adj = Adjacency.from_triples(with_inverse(facts, R), E)
    queries = facts[:8]
    cfg = TunsrConfig(max_nodes=3, eval_max_nodes=40, eval_wide="tiebreak", dropout=0.0)
    model = make(cfg).eval()
    with torch.no_grad():
        out = model(queries, adj)
        with model.training_width():
            near = model(queries, adj)
        far = make(TunsrConfig(max_nodes=40, dropout=0.0)).eval()
        far.load_state_dict(model.state_dict())
        wide = far(queries, adj)
    mask = reached(near)
    assert torch.equal(out.scores[mask], near.scores[mask])
    assert torch.equal(reached(out, far=True), reached(wide))
    assert bool((reached(wide) & ~mask).any())  # the far graph reaches more: the test bites
    # entities only the far graph reaches rank above those neither reaches
    for i in range(len(queries)):
        only_far = reached(wide)[i] & ~mask[i]
        neither = ~reached(wide)[i] & ~mask[i]
        if only_far.any() and neither.any():
            assert out.scores[i][only_far].min() > out.scores[i][neither].max()
