"""Reasoning-graph expansion: selection before messages, gradient to the selection key, carried
node states, the relation merge of the first-order state, and the `redgnn` preset."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
import torch

import clinfuse
from clinfuse.api import make_config
from clinfuse.core.config import preset_path
from clinfuse.methods.tunsr.config import TunsrConfig
from clinfuse.methods.tunsr.graph import Adjacency, Nodes, expand
from clinfuse.methods.tunsr.model import LogicLayer, TunsrModel, _carry, tunsr_loss

E, R = 40, 4


def kg(seed: int = 0, m: int = 400) -> tuple[Adjacency, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    facts = torch.stack(
        [
            torch.randint(0, E, (m,), generator=g),
            torch.randint(0, R, (m,), generator=g),
            torch.randint(0, E, (m,), generator=g),
            torch.zeros(m, dtype=torch.int64),
        ],
        1,
    )
    inv = facts[:, [2, 1, 0, 3]].clone()
    inv[:, 1] += R
    return Adjacency.from_triples(torch.cat([facts, inv]), E), facts


def test_messages_are_computed_only_for_the_kept_edges(monkeypatch) -> None:
    adj, facts = kg()
    seen: list[int] = []
    original = LogicLayer.message

    def spy(self, h, parent, rel):
        seen.append(len(parent))
        return original(self, h, parent, rel)

    monkeypatch.setattr(LogicLayer, "message", spy)
    torch.manual_seed(0)
    model = TunsrModel(TunsrConfig(max_nodes=5, dropout=0.0, score="emd"), E, R, 1).eval()
    out = model(facts[:8], adj, train=True)
    kept = [len(s["rel"]) for s in out.steps]
    assert seen == kept
    assert all(k < c for k, c in zip(kept[1:], out.candidates[1:], strict=True))
    for step in out.steps:
        real = step["rel"] < 2 * R
        assert int(torch.bincount(step["query"][real], minlength=8).max()) <= 5


def test_full_expansion_equals_the_unpruned_graph() -> None:
    adj, facts = kg(1)
    q = facts[:6]
    torch.manual_seed(0)
    model = TunsrModel(TunsrConfig(max_nodes=None, fol=False, score="emd"), E, R, 1).eval()
    out = model(q, adj, train=True)
    nodes, steps = expand(q, adj, 3, n_relations=R, exclude_query=True)
    assert [len(s["rel"]) for s in out.steps] == [len(s.rel) for s in steps]
    assert torch.equal(out.nodes.entity, nodes[-1].entity)
    assert model.prune_logit is None
    assert torch.all(out.steps[0]["beta"] == 0)  # no first-order part


def test_evaluation_width_applies_only_in_eval_mode_and_only_when_pruning() -> None:
    adj, facts = kg(2)
    q = facts[:8]

    def per_query_max(model: TunsrModel) -> int:
        out = model(q, adj, train=True)
        return max(
            int(torch.bincount(s["query"][s["rel"] < 2 * R], minlength=8).max()) for s in out.steps
        )

    torch.manual_seed(0)
    cfg = TunsrConfig(max_nodes=3, eval_max_nodes=12, dropout=0.0, score="emd")
    model = TunsrModel(cfg, E, R, 1)
    assert per_query_max(model.train()) == 3
    assert 3 < per_query_max(model.eval()) <= 12
    with model.training_width():  # what rule induction reads
        assert per_query_max(model) == 3
    assert model.cfg is cfg
    full = TunsrModel(dataclasses.replace(cfg, max_nodes=None, fol=False), E, R, 1).eval()
    nodes, _ = expand(q, adj, 3, n_relations=R, exclude_query=True)
    assert torch.equal(full(q, adj, train=True).nodes.entity, nodes[-1].entity)


def test_the_selection_key_receives_gradient_and_learns_to_keep_the_useful_relation() -> None:
    # the answer is always reached by relation 0 then relation 1; relations 2, 3 are noise
    n = 30
    g = torch.Generator().manual_seed(0)
    f0, f1 = torch.randperm(n, generator=g), torch.randperm(n, generator=g)
    x, z = torch.arange(n), torch.zeros(n, dtype=torch.int64)
    noise = [torch.stack([x, z + r, torch.randint(0, n, (n,), generator=g), z], 1) for r in (2, 3)]
    noise += [torch.stack([x, z + r, torch.randint(0, n, (n,), generator=g), z], 1) for r in (2, 3)]
    facts = torch.cat([torch.stack([x, z, f0, z], 1), torch.stack([x, z + 1, f1, z], 1), *noise])
    inv = facts[:, [2, 1, 0, 3]].clone()
    inv[:, 1] += 4
    adj = Adjacency.from_triples(torch.cat([facts, inv]), n)
    queries = torch.stack([x, z + 2, f1[f0], z], 1)  # asked as relation 2 (its own facts aside)
    cfg = TunsrConfig(n_layers=2, max_nodes=2, hidden=16, dropout=0.0, score="emd", lr=0.01)
    torch.manual_seed(0)
    model = TunsrModel(cfg, n, 4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    out = model(queries, adj, generator=gen)
    tunsr_loss(out.scores, queries[:, 2], cfg).backward()  # straight-through alone
    assert model.prune_logit.grad is not None and model.prune_logit.grad.abs().sum() > 0
    model.zero_grad()

    def reached() -> float:
        with torch.no_grad():
            nodes = model.eval()(queries, adj).nodes
        model.train()
        hit = nodes.entity == queries[nodes.query, 2]
        return float(torch.zeros(n).index_add(0, nodes.query, hit.float()).clamp_max(1).mean())

    before = reached()
    for _ in range(100):
        out = model(queries, adj, generator=gen)
        loss = tunsr_loss(out.scores, queries[:, 2], cfg) + out.selection_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = reached()
    assert after >= 0.9 > before, (before, after)
    table = model.prune_logit.detach()
    assert table[0, 2, 0] > table[0, 2, 1:8].max()  # first step: relation 0 preferred


def test_carry_maps_each_old_node_to_its_new_row() -> None:
    old = Nodes(torch.tensor([0, 0, 1]), torch.tensor([3, 5, 3]), torch.zeros(3, dtype=torch.int64))
    new = Nodes(
        torch.tensor([0, 0, 0, 1, 1]),
        torch.tensor([1, 3, 5, 2, 3]),
        torch.zeros(5, dtype=torch.int64),
    )
    h = torch.tensor([[1.0], [2.0], [3.0]])
    assert _carry(h, old, new, 10).squeeze(1).tolist() == [0.0, 1.0, 2.0, 0.0, 3.0]


def test_node_state_gru_adds_exactly_the_gate_parameters() -> None:
    torch.manual_seed(0)
    gru = TunsrModel(TunsrConfig(max_nodes=None, dropout=0.0, score="emd", n_layers=2), E, R, 1)
    assert gru.gate is not None
    rebuilt = TunsrModel(TunsrConfig(max_nodes=None, dropout=0.0, score="emd", n_layers=2,
                                     node_state="rebuild"), E, R, 1)  # fmt: skip
    assert rebuilt.gate is None
    assert {n for n, _ in gru.named_parameters()} - {n for n, _ in rebuilt.named_parameters()} == {
        "gate.weight_ih", "gate.weight_hh", "gate.bias_ih", "gate.bias_hh"
    }  # fmt: skip


def test_first_order_state_of_a_node_with_one_incoming_edge_is_one_gru_step() -> None:
    # 0 -r1-> 1: at step 1 node 1 has the single edge (0, r1, 1), so g = GRU(rel(r1), g_root)
    facts = torch.tensor([[0, 1, 1, 0]])
    inv = facts[:, [2, 1, 0, 3]].clone()
    inv[:, 1] += R
    adj = Adjacency.from_triples(torch.cat([facts, inv]), E)
    torch.manual_seed(0)
    model = TunsrModel(TunsrConfig(n_layers=2, dropout=0.0, max_nodes=None), E, R, 1).eval()
    q = torch.tensor([[0, 2, 1, 0]])
    g_root = model.fol_init(q[:, 1])
    expected = model.fol_cell(model.rel_emb(torch.tensor([1])), g_root)
    g1_to_step2 = model(q, adj).steps[1]
    # the beta of node 1's self-loop at step 2 reads that state
    loop = (g1_to_step2["child_entity"] == 1) & (g1_to_step2["rel"] == 2 * R)
    beta = model.fol_beta(expected, torch.tensor([2 * R]))
    assert torch.allclose(g1_to_step2["beta"][loop], beta, atol=1e-6)


def _preset_keys(name: str) -> set[str]:
    data = tomllib.loads(preset_path("tunsr", name).read_text())
    return set(data) - {"base"}


def test_redgnn_preset_differs_from_tunsr_only_in_the_fields_it_names() -> None:
    tunsr, redgnn = make_config("tunsr", preset="tunsr"), make_config("tunsr", preset="redgnn")
    differ = {
        f.name
        for f in dataclasses.fields(tunsr)
        if getattr(tunsr, f.name) != getattr(redgnn, f.name)
    }
    assert differ - {"preset"} == _preset_keys("redgnn")
    assert redgnn.max_nodes is None and not redgnn.fol and redgnn.node_state == "gru"
    assert not redgnn.entity_embeddings and redgnn.message == "sum" and redgnn.score == "emd"
    # RED-GNN's published Family values (Static/transductive/train.py)
    assert (redgnn.hidden, redgnn.attn_dim, redgnn.n_layers, redgnn.batch_size) == (48, 5, 3, 20)
    assert (redgnn.lr, redgnn.dropout, redgnn.act) == (0.0036, 0.29, "relu")


@pytest.mark.parametrize("preset", ["tunsr", "redgnn"])
def test_a_budget_smaller_than_one_epoch_is_reported(preset: str, tmp_path) -> None:
    _, run = clinfuse.run(
        "tunsr",
        preset=preset,
        overrides=["progress=false", "max_train_minutes=0.0001", "steps_per_epoch=2",
                   "hidden=8", "n_layers=2", "fari_max_queries=20"],
        out=tmp_path / "run",
    )  # fmt: skip
    budget = run.read_metrics()["budget"]
    assert budget["status"] == "first epoch over budget"
    assert budget["epochs"] == 1 and budget["train_seconds"] > budget["budget_seconds"]
