"""Ranking metrics: PyKEEN's RankBasedEvaluator as an oracle, closed forms, brute-force filters."""

from __future__ import annotations

import doctest
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
import torch

from clinfuse.core.errors import DataError
from clinfuse.metrics import ranking
from clinfuse.metrics.ranking import (
    FilterIndex,
    RankDict,
    both_directions,
    filtered_ranks,
    rank_bounds,
    ranking_metrics,
    sampled_ranks,
    summarize,
)

# ---------------------------------------------------------------------------------------------
# PyKEEN oracle (test-only dependency)


@pytest.fixture(scope="module")
def nations():
    pytest.importorskip("pykeen")
    from pykeen.datasets import Nations

    return Nations()


def _pykeen_ranks(scores, batch, all_pos, target):
    """Feed scores to pykeen's RankBasedEvaluator exactly as its own `_evaluate_batch` does."""
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.evaluation.evaluator import create_sparse_positive_filter_, filter_scores_

    col = 0 if target == "head" else 2
    evaluator = RankBasedEvaluator(filtered=True)
    s = scores.clone()
    positive_filter, _ = create_sparse_positive_filter_(
        hrt_batch=batch, all_pos_triples=all_pos, filter_col=col
    )
    rows = torch.arange(batch.shape[0])
    true_scores = s[rows, batch[:, col]].clone()
    s = filter_scores_(scores=s, filter_batch=positive_filter)
    s[rows, batch[:, col]] = true_scores
    evaluator.process_scores_(
        hrt_batch=batch, target=target, scores=s, true_scores=true_scores.unsqueeze(-1)
    )
    return evaluator


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # pykeen's adjusted metrics on all -inf rows
def test_matches_pykeen_rank_based_evaluator(nations, seed: int) -> None:
    from pykeen.evaluation import RankBasedEvaluator

    test = nations.testing.mapped_triples
    all_pos = torch.cat([nations.training.mapped_triples, nations.validation.mapped_triples, test])
    n_ent, n_rel, b = nations.num_entities, nations.num_relations, test.shape[0]
    g = torch.Generator().manual_seed(seed)
    # rounded to 1 decimal: 14 entities share ~10 values, so most targets sit in a tie block;
    # some -inf entries mimic entities a path model never reaches (one big tie block)
    tail_scores = torch.round(torch.rand(b, n_ent, generator=g) * 10) / 10
    head_scores = torch.round(torch.rand(b, n_ent, generator=g) * 10) / 10
    unreached = torch.rand(2, b, n_ent, generator=g) < 0.2
    tail_scores[unreached[0]] = -torch.inf
    head_scores[unreached[1]] = -torch.inf

    # one evaluator holding both sides, like pykeen's evaluate(targets=("head", "tail"))
    ev = RankBasedEvaluator(filtered=True)
    per_side = {}
    for target, scores in (("tail", tail_scores), ("head", head_scores)):
        side = _pykeen_ranks(scores, test, all_pos, target)
        per_side[target] = {rt: np.concatenate(side.ranks[target, rt]) for rt in ranking.RANK_TYPES}
        for key, v in side.ranks.items():
            ev.ranks[key].extend(v)
        for key, v in side.num_candidates.items():
            ev.num_candidates[key].extend(v)
        ev.num_entities = n_ent
    result = ev.finalize()

    # ours: head prediction as inverse-relation tail queries, one filter for both
    queries = both_directions(test, n_rel)
    index = FilterIndex.from_triples(both_directions(all_pos, n_rel), n_ent)
    ours = filtered_ranks(torch.cat([tail_scores, head_scores]), queries[:, 2], index.mask(queries))
    tied = (ours["realistic"] != ours["optimistic"]).double().mean()
    assert tied > 0.3, f"only {tied:.0%} of the targets tie: the oracle would not test ties"
    for rt in ranking.RANK_TYPES:
        np.testing.assert_array_equal(ours[rt][:b].numpy(), per_side["tail"][rt])
        np.testing.assert_array_equal(ours[rt][b:].numpy(), per_side["head"][rt])

    metrics = summarize(ours, ks=(1, 3, 10))
    for rt in ranking.RANK_TYPES:
        for name, pk in [
            ("mrr", "inverse_harmonic_mean_rank"),
            ("mr", "arithmetic_mean_rank"),
            ("hits@1", "hits_at_1"),
            ("hits@3", "hits_at_3"),
            ("hits@10", "hits_at_10"),
        ]:
            expected = result.get_metric(f"both.{rt}.{pk}")
            assert metrics[f"{rt}.{name}"] == pytest.approx(expected, abs=1e-6), (rt, name)
    assert metrics["mrr"] == metrics["realistic.mrr"]
    assert metrics["hits@10"] == metrics["realistic.hits@10"]


def test_realistic_matches_pykeen_ranks_dataclass() -> None:
    pytest.importorskip("pykeen")
    from pykeen.evaluation.ranks import Ranks

    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (64, 30), generator=g).float()
    targets = torch.randint(0, 30, (64,), generator=g)
    ref = Ranks.from_scores(scores.gather(1, targets[:, None]), scores)
    ours = filtered_ranks(scores, targets)
    for rt in ranking.RANK_TYPES:
        np.testing.assert_array_equal(ours[rt].numpy(), getattr(ref, rt).double().numpy())


# ---------------------------------------------------------------------------------------------
# closed forms


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_all_equal_scores_give_middle_rank(n: int) -> None:
    r = filtered_ranks(torch.full((3, n), 0.25), torch.tensor([0, n - 1, n // 2]))
    assert r["optimistic"].tolist() == [1.0] * 3
    assert r["pessimistic"].tolist() == [float(n)] * 3
    assert r["realistic"].tolist() == [(n + 1) / 2] * 3


def test_all_equal_scores_with_filter_count_only_kept() -> None:
    n = 10
    mask = torch.zeros(1, n, dtype=torch.bool)
    mask[0, :4] = True  # 4 removed, the target (id 2) among the marked, so it stays: 7 kept
    r = filtered_ranks(torch.zeros(1, n), torch.tensor([2]), mask)
    assert r["realistic"].item() == (7 + 1) / 2


def test_unique_top_target_has_rank_one() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(20, 50, generator=g)
    targets = scores.argmax(dim=1)
    r = filtered_ranks(scores, targets)
    for rt in ranking.RANK_TYPES:
        assert r[rt].tolist() == [1.0] * 20


def test_filter_removes_exactly_the_marked_competitors_and_never_the_target() -> None:
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 3.0]])
    target = torch.tensor([2])  # ties with entity 5; entities 0, 1 above
    assert rank_bounds(scores, target) == (torch.tensor([3.0]), torch.tensor([4.0]))
    for marked, expected in [
        ([0], (2.0, 3.0)),
        ([0, 1], (1.0, 2.0)),
        ([5], (3.0, 3.0)),
        ([3, 4], (3.0, 4.0)),  # below the target: no effect
        ([0, 1, 2, 5], (1.0, 1.0)),  # the target itself marked: still ranked
    ]:
        mask = torch.zeros_like(scores, dtype=torch.bool)
        mask[0, marked] = True
        opt, pess = rank_bounds(scores, target, mask)
        assert (opt.item(), pess.item()) == expected, marked


def test_random_ranks_against_brute_force_loop() -> None:
    g = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 5, (40, 25), generator=g).float()
    targets = torch.randint(0, 25, (40,), generator=g)
    mask = torch.rand(40, 25, generator=g) < 0.3
    opt, pess = rank_bounds(scores, targets, mask)
    for i in range(40):
        t = int(targets[i])
        kept = [e for e in range(25) if e == t or not mask[i, e]]
        st = scores[i, t]
        assert opt[i] == 1 + sum(bool(scores[i, e] > st) for e in kept)
        assert pess[i] == sum(bool(scores[i, e] >= st) for e in kept)


def test_ranking_metrics_closed_form() -> None:
    m = ranking_metrics(torch.tensor([1.0, 2.0, 10.5, 4.0]), ks=(1, 3, 10))
    assert m["mrr"] == pytest.approx((1 + 0.5 + 1 / 10.5 + 0.25) / 4)
    assert m["mr"] == pytest.approx(17.5 / 4)
    assert (m["hits@1"], m["hits@3"], m["hits@10"]) == (0.25, 0.5, 0.75)  # 10.5 is not a hit


def test_unlabelled_dict_and_label_override() -> None:
    plain = {rt: torch.tensor([1.0, 2.0]) for rt in ranking.RANK_TYPES}
    assert "mrr" in summarize(plain)
    assert set(summarize(plain, label="x")) == {f"x.{k}" for k in summarize(plain)}


# ---------------------------------------------------------------------------------------------
# filter index


def _brute_force_filter(triples: np.ndarray, time_aware: bool) -> dict[tuple, set[int]]:
    d: dict[tuple, set[int]] = defaultdict(set)
    for row in triples.tolist():
        key = (row[0], row[1], row[3]) if time_aware else (row[0], row[1])
        d[key].add(row[2])
    return d


@pytest.mark.parametrize("time_aware", [False, True])
def test_filter_index_matches_brute_force(time_aware: bool) -> None:
    rng = np.random.default_rng(0)
    n_ent, n_rel, n_times = 30, 4, 5
    triples = np.stack(
        [
            rng.integers(0, n_ent, 600),
            rng.integers(0, n_rel, 600),
            rng.integers(0, n_ent, 600),
            rng.integers(0, n_times, 600),
        ],
        axis=1,
    )
    triples = np.concatenate([triples, triples[:50]])  # duplicates must not matter
    index = FilterIndex.from_triples(triples, n_ent, time_aware=time_aware)
    truth = _brute_force_filter(triples, time_aware)
    assert len(index) == len(truth)
    # queries: known keys, unknown keys, relation/time/head ids never indexed
    queries = np.stack(
        [
            rng.integers(0, n_ent, 300),
            rng.integers(0, n_rel + 2, 300),
            rng.integers(0, n_ent, 300),
            rng.integers(0, n_times + 2, 300),
        ],
        axis=1,
    )
    queries = np.concatenate([triples[:100], queries])
    mask = index.mask(torch.as_tensor(queries))
    assert mask.shape == (400, n_ent) and mask.dtype == torch.bool
    for i, row in enumerate(queries.tolist()):
        key = (row[0], row[1], row[3]) if time_aware else (row[0], row[1])
        expected = truth.get(key, set())
        assert set(torch.nonzero(mask[i]).flatten().tolist()) == expected, row


def test_time_aware_filter_keeps_other_timestamps_as_competitors() -> None:
    # (0, r0, ?, t): answer 1 at time 0; answers 2 and 3 at time 1
    triples = torch.tensor([[0, 0, 1, 0], [0, 0, 2, 1], [0, 0, 3, 1]])
    query = torch.tensor([[0, 0, 1, 0]])
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.8, 0.1]])
    aware = FilterIndex.from_triples(triples, 5, time_aware=True).mask(query)
    static = FilterIndex.from_triples(triples, 5).mask(query)
    assert aware.tolist() == [[False, True, False, False, False]]
    assert static.tolist() == [[False, True, True, True, False]]
    assert filtered_ranks(scores, query[:, 2], aware)["realistic"].item() == 3.0
    assert filtered_ranks(scores, query[:, 2], static)["realistic"].item() == 1.0


def test_both_directions_stacks_inverse_queries() -> None:
    triples = torch.tensor([[0, 1, 2, 7], [3, 0, 4, 8]])
    q = both_directions(triples, n_relations=2)
    assert q.tolist() == [[0, 1, 2, 7], [3, 0, 4, 8], [2, 3, 0, 7], [4, 2, 3, 8]]
    index = FilterIndex.from_triples(q, 5)
    # head prediction of (0, 1, 2) is the tail query (2, 1 + 2, ?) whose known answer is 0
    assert index.mask(q[2:3]).nonzero()[:, 1].tolist() == [0]


# ---------------------------------------------------------------------------------------------
# sampled protocol


def test_sampled_ranks_deterministic_bounded_and_labelled() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.round(torch.rand(32, 200, generator=g) * 20) / 20
    targets = torch.randint(0, 200, (32,), generator=g)
    mask = torch.rand(32, 200, generator=g) < 0.1
    a = sampled_ranks(
        scores, targets, 50, filter_mask=mask, generator=torch.Generator().manual_seed(7)
    )
    b = sampled_ranks(
        scores, targets, 50, filter_mask=mask, generator=torch.Generator().manual_seed(7)
    )
    c = sampled_ranks(
        scores, targets, 50, filter_mask=mask, generator=torch.Generator().manual_seed(8)
    )
    for rt in ranking.RANK_TYPES:
        assert torch.equal(a[rt], b[rt])
        assert float(a[rt].min()) >= 1.0 and float(a[rt].max()) <= 51.0
    assert not torch.equal(a["realistic"], c["realistic"])
    full = filtered_ranks(scores, targets, mask)
    assert bool((a["pessimistic"] <= full["pessimistic"]).all())
    assert isinstance(a, RankDict) and a.protocol == "50-negative"
    keys = summarize(a)
    assert "50-negative.hits@10" in keys and "50-negative.optimistic.mrr" in keys
    assert "mrr" not in keys and "hits@10" not in keys


def test_sampled_negatives_exclude_known_answers() -> None:
    # target 0 scores lowest; known answers 1..5 score highest and must never be sampled
    scores = torch.linspace(1.0, 0.0, 20)[None].repeat(200, 1).flip(1)
    scores[:, 1:6] = 10.0
    scores[:, 0] = -1.0
    mask = torch.zeros(200, 20, dtype=torch.bool)
    mask[:, 1:6] = True
    r = sampled_ranks(
        scores,
        torch.zeros(200, dtype=torch.long),
        3,
        filter_mask=mask,
        generator=torch.Generator().manual_seed(0),
    )
    assert r["optimistic"].tolist() == [4.0] * 200  # 3 negatives, all above, none of 1..5


def test_sampled_negatives_are_uniform() -> None:
    # each of the 10 pool entities is drawn with probability 3/10; the target (9) beats only 10
    e = 11
    scores = torch.arange(e, 0, -1).float()[None].repeat(4000, 1)  # entity 0 best, entity 10 worst
    targets = torch.full((4000,), 9)
    r = sampled_ranks(scores, targets, 3, generator=torch.Generator().manual_seed(0))
    # rank = 1 + #sampled among entities 0..8 (better); 3 - that = 1 iff entity 10 sampled
    p_worst = float((r["optimistic"] == 3.0).double().mean())
    assert p_worst == pytest.approx(0.3, abs=0.03)


def test_sampled_equals_full_when_pool_is_small() -> None:
    g = torch.Generator().manual_seed(2)
    scores = torch.round(torch.rand(16, 12, generator=g) * 5) / 5
    targets = torch.randint(0, 12, (16,), generator=g)
    mask = torch.rand(16, 12, generator=g) < 0.3
    full = filtered_ranks(scores, targets, mask)
    for n in (11, 50):  # >= the 11 non-target entities, so >= every kept pool
        s = sampled_ranks(scores, targets, n, filter_mask=mask, generator=g)
        for rt in ranking.RANK_TYPES:
            assert torch.equal(s[rt], full[rt])


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_raises_data_error() -> None:
    s = torch.zeros(3, 5)
    t = torch.tensor([0, 1, 2])
    with pytest.raises(DataError, match="2-D float"):
        rank_bounds(torch.zeros(5), t)
    with pytest.raises(DataError, match="2-D float"):
        rank_bounds(torch.zeros(3, 5, dtype=torch.long), t)
    with pytest.raises(DataError, match="targets do not match"):
        rank_bounds(s, torch.tensor([0, 1]))
    with pytest.raises(DataError, match="integer entity ids"):
        rank_bounds(s, t.float())
    with pytest.raises(DataError, match="out of range") as err:
        rank_bounds(s, torch.tensor([0, 5, 1]))
    assert "max 5" in str(err.value) and "[0, 5)" in str(err.value)
    with pytest.raises(DataError, match="out of range"):
        filtered_ranks(s, torch.tensor([-1, 0, 1]))
    with pytest.raises(DataError, match="filter_mask does not match"):
        rank_bounds(s, t, torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(DataError, match="boolean"):
        rank_bounds(s, t, torch.zeros(3, 5))
    with pytest.raises(DataError, match="NaN"):
        rank_bounds(torch.full((3, 5), float("nan")), t)
    with pytest.raises(DataError, match="non-empty 1-D"):
        ranking_metrics(torch.zeros(0))
    with pytest.raises(DataError, match=">= 1"):
        ranking_metrics(torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match="positive integer k"):
        ranking_metrics(torch.tensor([1.0]), ks=(0,))
    with pytest.raises(DataError, match="rank types missing"):
        summarize({"realistic": torch.ones(2)})
    with pytest.raises(DataError, match="n_negatives"):
        sampled_ranks(s, t, 0, generator=torch.Generator())
    with pytest.raises(DataError, match="time column"):
        FilterIndex.from_triples(torch.zeros(4, 3, dtype=torch.long), 5, time_aware=True)
    with pytest.raises(DataError, match="entity id >= n_entities"):
        FilterIndex.from_triples(torch.tensor([[0, 0, 9]]), 5)
    with pytest.raises(DataError, match="wrong shape"):
        FilterIndex.from_triples(torch.zeros(4, 2, dtype=torch.long), 5)
    with pytest.raises(DataError, match="wrong shape"):
        FilterIndex.from_triples(torch.tensor([[0, 1, 3, 1]]), 5, time_aware=True).mask(
            torch.tensor([[0, 1, 3]])
        )
    with pytest.raises(DataError, match="relation id >= n_relations"):
        both_directions(torch.tensor([[0, 4, 1]]), n_relations=4)


# ---------------------------------------------------------------------------------------------
# devices, docs, imports


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(0)
    triples = torch.randint(0, 40, (500, 3), generator=g)
    triples[:, 1] %= 3
    index = FilterIndex.from_triples(both_directions(triples, 3), 40)
    q = both_directions(triples[:64], 3)
    scores = torch.round(torch.rand(128, 40, generator=g) * 10) / 10
    cpu = summarize(filtered_ranks(scores, q[:, 2], index.mask(q)))
    dev = index.to("cuda")
    mask = dev.mask(q.cuda())
    assert mask.is_cuda
    gpu = summarize(filtered_ranks(scores.cuda(), q[:, 2].cuda(), mask))
    assert cpu == pytest.approx(gpu)
    s = sampled_ranks(scores.cuda(), q[:, 2].cuda(), 5, generator=torch.Generator().manual_seed(0))
    assert s["realistic"].is_cuda


def test_docstring_examples() -> None:
    result = doctest.testmod(ranking, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_ranking_imports_neither_methods_nor_pykeen() -> None:
    code = (
        "import sys, clinfuse.metrics.ranking; "
        "assert not any(m.startswith('clinfuse.methods') for m in sys.modules); "
        "assert 'pykeen' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
