"""Tunsr data layer: loaders of every layout, inverse relations, CSR, leak check, filters."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import shared_path

from clinfuse.core.errors import DataError
from clinfuse.methods.tunsr.data import (
    CSR,
    KG,
    Rule,
    add_inverse,
    check_no_leak,
    known_answers,
    load_grail,
    load_kg,
    load_neurallp,
    load_renet,
    load_tlogic,
)

# ---------------------------------------------------------------------------------------------
# helpers


def _write(folder: Path, name: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    return p


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _named(kg: KG, rows: np.ndarray) -> set[tuple[str, ...]]:
    return {(kg.entities[h], kg.relations[r], kg.entities[t]) for h, r, t, _ in rows.tolist()}


FAMILY = {
    "facts": ["a\tparent\tb", "b\tparent\tc", "c\tparent\td", "a\tspouse\tx"],
    "train": ["a\tgrandparent\tc", "b\tgrandparent\td"],
    "valid": ["x\tgrandparent\tc"],
    "test": ["d\tgrandparent\tb"],
}


def _neurallp(folder: Path, *, vocab: bool = True, **over: list[str]) -> Path:
    files = {**FAMILY, **over}
    for split, lines in files.items():
        _write(folder, f"{split}.txt", lines)
    if vocab:
        _write(folder, "entities.txt", ["x", "d", "c", "b", "a"])
        _write(folder, "relations.txt", ["child", "grandparent", "parent", "spouse"])
    return folder


# ---------------------------------------------------------------------------------------------
# triple utilities


def test_add_inverse_swaps_and_offsets() -> None:
    t = np.array([[0, 1, 2, 7], [3, 0, 4, 0]])
    out = add_inverse(t, n_relations=2)
    assert out.shape == (4, 4)
    np.testing.assert_array_equal(out[:2], t)
    np.testing.assert_array_equal(out[2:], [[2, 3, 0, 7], [4, 2, 3, 0]])


def test_csr_neighbours_sorted_by_time_and_complete() -> None:
    rng = np.random.default_rng(1)
    t = np.stack(
        [
            rng.integers(0, 20, 500),
            rng.integers(0, 5, 500),
            rng.integers(0, 20, 500),
            rng.integers(0, 30, 500),
        ],
        axis=1,
    )
    csr = CSR.from_triples(t, 20)
    got = []
    for e in range(20):
        sl = csr.neighbours(e)
        times = csr.time[sl]
        assert np.all(np.diff(times) >= 0)
        keys = np.stack([times, csr.rel[sl], csr.tail[sl]], 1).tolist()
        assert keys == sorted(keys)
        got += [(e, r, x, tm) for tm, r, x in keys]
    assert sorted(got) == sorted(map(tuple, t.tolist()))
    assert csr.degree().sum() == 500


def test_check_no_leak_catches_direct_and_inverse() -> None:
    g = np.array([[0, 0, 1, 0], [1, 1, 2, 0]])
    check_no_leak(g, np.array([[1, 0, 0, 0], [0, 0, 1, 3]]), where="ok", n_relations=2)
    with pytest.raises(DataError, match="1 of 2"):
        check_no_leak(g, np.array([[0, 0, 1, 0], [2, 0, 2, 0]]), where="direct")
    # query given as an inverse edge (t, r+R, h) of a graph fact
    with pytest.raises(DataError, match="inv"):
        check_no_leak(g, np.array([[2, 3, 1, 0]]), where="inv", n_relations=2)
    # graph with inverses added holds the query's inverse
    with pytest.raises(DataError):
        check_no_leak(add_inverse(g, 2)[2:], np.array([[1, 1, 2, 0]]), where="g", n_relations=2)


def test_known_answers_both_directions_all_splits() -> None:
    kg = KG(
        entities=list("abcd"),
        relations=["r"],
        facts=np.array([[0, 0, 1, 0]]),
        queries={
            "train": np.array([[0, 0, 2, 0]]),
            "valid": np.array([[3, 0, 1, 1]]),
            "test": np.array([[0, 0, 3, 1]]),
        },
    )
    ans = known_answers(kg, time_aware=False)
    assert ans[(0, 0)].tolist() == [1, 2, 3]
    assert ans[(1, 1)].tolist() == [0, 3]  # inverse relation id 1
    ta = known_answers(kg, time_aware=True)
    assert ta[(0, 0, 0)].tolist() == [1, 2]
    assert ta[(0, 0, 1)].tolist() == [3]
    assert ta[(1, 1, 1)].tolist() == [3]


def test_rule_anyburl_text_and_kg_properties() -> None:
    kg = KG(["a"], ["parent", "uncle", "brother"], np.zeros((0, 4), np.int64), {})
    assert Rule(1, (2, 0)).to_anyburl(kg) == "uncle(X,Y) <= brother(X,A), parent(A,Y)"
    assert (
        Rule(0, (3, 3, 0)).to_anyburl(kg) == "parent(X,Y) <= parent(A,X), parent(B,A), parent(B,Y)"
    )
    assert kg.self_loop_id == 6 and kg.n_times == 1


# ---------------------------------------------------------------------------------------------
# Neural-LP / RNNLogic


def test_neurallp_round_trip_ids_by_line_order(tmp_path: Path) -> None:
    kg = load_neurallp(_neurallp(tmp_path))
    assert kg.entities == ["x", "d", "c", "b", "a"]
    assert kg.relations == ["child", "grandparent", "parent", "spouse"]
    for split, lines in FAMILY.items():
        rows = kg.facts if split == "facts" else kg.queries[split]
        assert _named(kg, rows) == {tuple(x.split("\t")) for x in lines}
    assert kg.graph("test") is kg.facts and not kg.temporal and kg.self_loop_id == 8


def test_neurallp_without_vocab_first_appearance(tmp_path: Path) -> None:
    kg = load_neurallp(_neurallp(tmp_path, vocab=False))
    assert kg.entities[:4] == ["a", "b", "c", "d"]
    assert kg.relations == ["parent", "spouse", "grandparent"]


def test_rnnlogic_layout_splits_train_into_facts_and_queries(tmp_path: Path) -> None:
    lines = [f"p{i % 20}\tr{i % 3}\tp{(i * 7) % 20}" for i in range(40)]
    _write(tmp_path, "train.txt", lines)
    _write(tmp_path, "valid.txt", ["p1\tr0\tp5"])
    _write(tmp_path, "test.txt", ["p2\tr1\tp9"])
    _write(tmp_path, "entities.dict", [f"{i}\tp{i}" for i in range(20)])
    _write(tmp_path, "relations.dict", [f"{i}\tr{2 - i}" for i in range(3)])
    kg = load_neurallp(tmp_path, fact_ratio=0.75, seed=3)
    assert kg.relations == ["r2", "r1", "r0"] and kg.entities[7] == "p7"
    assert len(kg.facts) == 30 and len(kg.queries["train"]) == 10
    assert _named(kg, kg.facts) | _named(kg, kg.queries["train"]) == {
        tuple(x.split("\t")) for x in lines
    }
    again = load_neurallp(tmp_path, fact_ratio=0.75, seed=3)
    np.testing.assert_array_equal(kg.facts, again.facts)
    other = load_neurallp(tmp_path, fact_ratio=0.75, seed=4)
    assert not np.array_equal(kg.facts, other.facts)
    # fact_ratio = 1: every train triple is a fact and a query (RNNLogic practice); the leak
    # check skips train, and the model's guard hides each query's own fact (test_graph)
    full = load_neurallp(tmp_path, fact_ratio=1.0)
    np.testing.assert_array_equal(full.facts, full.queries["train"])
    assert len(full.facts) == 40 and full.meta["train_queries_in_graph"]
    with pytest.raises(DataError, match="fact_ratio"):
        load_neurallp(tmp_path, fact_ratio=1.5)


# ---------------------------------------------------------------------------------------------
# GraIL inductive


def _grail(tmp_path: Path, ind_test: list[str] | None = None) -> Path:
    tr = tmp_path / "toy_v1"
    ind = tmp_path / "toy_v1_ind"
    _write(tr, "train.txt", [f"a{i}\t{'rs'[i % 2]}\ta{i + 1}" for i in range(12)])
    _write(tr, "valid.txt", ["a0\tr\ta5"])
    _write(tr, "test.txt", ["a1\ts\ta6"])
    _write(tr, "relations.txt", ["r\t0", "s\t1", "u\t2"])
    _write(ind, "train.txt", ["b0\ts\tb1", "b1\tu\tb2", "b2\tr\tb3"])
    _write(ind, "valid.txt", ["b0\tr\tb2"])
    _write(ind, "test.txt", ind_test or ["b3\tu\tb0"])
    _write(ind, "relations.txt", ["u\t0", "r\t1", "s\t2"])  # numbered differently
    return tr


def test_grail_round_trip_relation_ids_from_train_folder(tmp_path: Path) -> None:
    kg = load_grail(_grail(tmp_path))
    assert kg.inductive and kg.relations == ["r", "s", "u"]
    assert _named(kg, kg.inductive_facts) == {
        ("b0", "s", "b1"),
        ("b1", "u", "b2"),
        ("b2", "r", "b3"),
    }
    assert _named(kg, kg.queries["test"]) == {("b3", "u", "b0")}
    assert kg.graph("valid") is kg.inductive_facts and kg.graph("train") is kg.facts
    assert len(kg.facts) + len(kg.queries["train"]) == 12
    assert set(kg.entities[:13]) == {f"a{i}" for i in range(13)}
    red = load_grail(tmp_path / "toy_v1", train_queries="redgnn")
    assert len(red.facts) == 12 and _named(red, red.queries["train"]) == {("a0", "r", "a5")}
    assert load_kg(tmp_path / "toy_v1_ind").inductive


def test_grail_unknown_relation_in_ind(tmp_path: Path) -> None:
    tr = _grail(tmp_path, ind_test=["b3\tnew_rel\tb0"])
    with pytest.raises(DataError, match=r"test\.txt:1: unknown relation 'new_rel'"):
        load_grail(tr)


# ---------------------------------------------------------------------------------------------
# temporal


def _renet(folder: Path, test: list[str] | None = None) -> Path:
    _write(folder, "train.txt", ["0\t0\t1\t0\t-1", "1\t1\t2\t24\t-1", "2\t0\t0\t48\t-1"])
    _write(folder, "valid.txt", ["0\t1\t2\t72\t-1"])
    _write(folder, "test.txt", test or ["1\t0\t2\t120\t-1"])
    _write(folder, "entity2id.txt", ["Council (United States)\t0", "Barack\tObama\t1", "c\t2"])
    _write(folder, "relation2id.txt", ["Sign formal agreement\t0", "Meet\t1"])
    return folder


def test_renet_round_trip_contiguous_times(tmp_path: Path) -> None:
    kg = load_renet(_renet(tmp_path))
    assert kg.temporal and kg.entities[1] == "Barack\tObama" and kg.relations[1] == "Meet"
    assert kg.times == ["0", "24", "48", "72", "120"] and kg.meta["time_step"] == 24
    np.testing.assert_array_equal(kg.facts[:, 3], [0, 1, 2])
    np.testing.assert_array_equal(kg.queries["test"], [[1, 0, 2, 4]])
    assert kg.queries["train"] is kg.facts and kg.meta["train_queries_in_graph"]
    assert load_kg(tmp_path).temporal


def test_renet_stat_only_and_four_columns(tmp_path: Path) -> None:
    _write(tmp_path, "train.txt", ["0 0 1 5", "1 0 2 3"])
    _write(tmp_path, "valid.txt", ["2 0 1 7"])
    _write(tmp_path, "test.txt", ["2 0 0 9"])
    (tmp_path / "stat.txt").write_text("4\t2\t10")
    kg = load_renet(tmp_path)
    assert kg.n_entities == 4 and kg.n_relations == 2 and kg.times == ["3", "5", "7", "9"]


def test_tlogic_round_trip_with_and_without_maps(tmp_path: Path) -> None:
    _write(tmp_path, "train.txt", ["A\tmeet\tB\t2014-01-02", "B\tcall\tC\t2014-01-01"])
    _write(tmp_path, "valid.txt", ["A\tcall\tC\t2014-01-03"])
    _write(tmp_path, "test.txt", ["C\tmeet\tA\t2014-01-04"])
    kg = load_tlogic(tmp_path)
    assert kg.times == ["2014-01-01", "2014-01-02", "2014-01-03", "2014-01-04"]
    assert kg.facts[:, 3].tolist() == [1, 0] and kg.queries["test"][0, 3] == 3
    (tmp_path / "entity2id.json").write_text(json.dumps({"C": 0, "B": 1, "A": 2}))
    (tmp_path / "relation2id.json").write_text(json.dumps({"call": 0, "meet": 1}))
    ts = {"2014-01-04": 0, "2014-01-03": 1, "2014-01-02": 2, "2014-01-01": 3}
    (tmp_path / "ts2id.json").write_text(json.dumps(ts))
    kg = load_kg(tmp_path)
    assert kg.entities == ["C", "B", "A"] and kg.times[0] == "2014-01-04"
    np.testing.assert_array_equal(kg.queries["test"], [[0, 1, 2, 0]])


# ---------------------------------------------------------------------------------------------
# bad input: DataError naming file and line, nothing changed on disk


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    _neurallp(tmp_path, train=["a\tgrandparent\tc", "b\tgrandparent"])
    before = _digest(tmp_path)
    with pytest.raises(DataError, match=r"train\.txt:2: malformed triple line"):
        load_neurallp(tmp_path)
    assert _digest(tmp_path) == before


@pytest.mark.parametrize("vocab", [True, False])
def test_unknown_query_entity_or_relation(tmp_path: Path, vocab: bool) -> None:
    _neurallp(tmp_path, vocab=vocab, test=["d\tgrandparent\tb", "zz\tparent\tc"])
    with pytest.raises(DataError, match=r"test\.txt:2: unknown entity 'zz'"):
        load_neurallp(tmp_path)
    _neurallp(tmp_path, vocab=vocab, test=["d\tcousin\tc"])
    with pytest.raises(DataError, match=r"test\.txt:1: unknown relation 'cousin'"):
        load_neurallp(tmp_path)


def test_planted_leak_in_files(tmp_path: Path) -> None:
    _neurallp(tmp_path, test=["b\tparent\tc"])  # a facts.txt edge
    before = _digest(tmp_path)
    with pytest.raises(DataError, match="test: 1 of 1 query triples are also in the graph"):
        load_neurallp(tmp_path)
    assert _digest(tmp_path) == before
    renet = _renet(tmp_path / "renet")
    _write(renet, "valid.txt", ["1\t1\t2\t24\t-1"])  # a train event, same time
    with pytest.raises(DataError, match="renet valid: 1 of 1"):
        load_renet(renet)


def test_renet_non_integer_time_and_bad_ids(tmp_path: Path) -> None:
    _renet(tmp_path, test=["1\t0\t2\t120\t-1", "1\t0\t2\t2014-01-01\t-1"])
    with pytest.raises(DataError, match=r"test\.txt:2: non-integer"):
        load_renet(tmp_path)
    _renet(tmp_path, test=["1\t0\t9\t120\t-1"])
    with pytest.raises(DataError, match=r"test\.txt:1: unknown entity or relation id"):
        load_renet(tmp_path)
    _renet(tmp_path, test=["1\t0\t2"])
    with pytest.raises(DataError, match=r"test\.txt:1: malformed"):
        load_renet(tmp_path)


def test_tlogic_bad_date(tmp_path: Path) -> None:
    _write(tmp_path, "train.txt", ["A\tmeet\tB\t2014-01-02"])
    _write(tmp_path, "valid.txt", ["A\tmeet\tB\t2014-13-40"])
    _write(tmp_path, "test.txt", ["A\tmeet\tB\t2014-01-04"])
    with pytest.raises(DataError, match=r"valid\.txt:1: bad time stamp"):
        load_tlogic(tmp_path)


def test_load_kg_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown KG source"):
        load_kg("nation")
    with pytest.raises(DataError, match="cannot detect"):
        load_kg(tmp_path)


# ---------------------------------------------------------------------------------------------
# pykeen-shipped data sets


@pytest.mark.parametrize(
    ("name", "n_ent", "n_rel", "counts"),
    [
        ("nations", 14, 55, (1592, 199, 201)),
        ("kinships", 104, 25, (8544, 1068, 1074)),
        ("umls", 135, 46, (5216, 652, 661)),
    ],
)
def test_pykeen_counts(name: str, n_ent: int, n_rel: int, counts: tuple[int, int, int]) -> None:
    pytest.importorskip("pykeen")
    kg = load_kg(name, fact_ratio=0.8, seed=1)
    assert (kg.n_entities, kg.n_relations) == (n_ent, n_rel)
    n_train = len(kg.facts) + len(kg.queries["train"])
    assert (n_train, len(kg.queries["valid"]), len(kg.queries["test"])) == counts
    assert abs(len(kg.facts) / n_train - 0.8) < 0.01
    assert kg.entities == sorted(kg.entities)


# ---------------------------------------------------------------------------------------------
# provided reference copies (../shared/data/kg)


@pytest.mark.shared_data
def test_family_neurallp_counts() -> None:
    kg = load_kg(shared_path("kg", "family_neurallp"))
    assert (kg.n_entities, kg.n_relations) == (3007, 12)
    counts = (len(kg.facts), *(len(kg.queries[s]) for s in ("train", "valid", "test")))
    assert counts == (17615, 5868, 2038, 2835)
    assert kg.relations[0] == "aunt" and kg.entities[:3] == ["1", "10", "100"]


@pytest.mark.shared_data
def test_kinship_rnnlogic() -> None:
    kg = load_kg(shared_path("kg", "kinship_rnnlogic"))
    assert (kg.n_entities, kg.n_relations) == (104, 25)
    assert kg.entities[0] == "person100" and kg.relations[0] == "term6"
    assert len(kg.facts) + len(kg.queries["train"]) == 3206
    assert (len(kg.queries["valid"]), len(kg.queries["test"])) == (2137, 5343)


@pytest.mark.shared_data
def test_inductive_fb237_v1() -> None:
    kg = load_kg(shared_path("kg", "inductive", "fb237_v1"))
    assert kg.inductive and kg.n_relations == 180 and kg.n_entities == 1594 + 1093
    assert len(kg.facts) + len(kg.queries["train"]) == 4245
    assert len(kg.inductive_facts) == 1993
    assert (len(kg.queries["valid"]), len(kg.queries["test"])) == (206, 205)
    # test-graph entities are new: none of them occurs in the train graph
    assert not set(kg.inductive_facts[:, [0, 2]].ravel()) & set(kg.facts[:, [0, 2]].ravel())


@pytest.mark.shared_data
def test_inductive_wn18rr_relation_ids_from_train_folder() -> None:
    root = shared_path("kg", "inductive")
    kg = load_grail(root / "WN18RR_v1", root / "WN18RR_v1_ind")
    rel_file = (root / "WN18RR_v1" / "relations.txt").read_text().split("\n")
    assert kg.relations == [line.split("\t")[0] for line in rel_file if line]
    first = (root / "WN18RR_v1_ind" / "train.txt").read_text().split("\n")[0].split("\t")
    h, r, t = kg.inductive_facts[0, :3]
    assert (kg.entities[h], kg.relations[r], kg.entities[t]) == tuple(first)


@pytest.mark.shared_data
def test_icews14_forecasting() -> None:
    kg = load_kg(shared_path("kg", "icews14_forecasting"))
    assert kg.temporal and (kg.n_entities, kg.n_relations, kg.n_times) == (7128, 230, 365)
    assert kg.meta["time_step"] == 24 and kg.times[:2] == ["0", "24"]
    assert [len(kg.queries[s]) for s in ("train", "valid", "test")] == [63685, 13823, 13222]
    assert kg.queries["train"][:, 3].max() < kg.queries["valid"][:, 3].min()
    assert kg.queries["valid"][:, 3].max() < kg.queries["test"][:, 3].min()
    assert kg.entities[0] == "Cabinet / Council of Ministers / Advisors (United States)"


@pytest.mark.shared_data
def test_icews14_interpolation() -> None:
    kg = load_kg(shared_path("kg", "icews14_interpolation"))
    assert (kg.n_entities, kg.n_relations, kg.n_times) == (7128, 230, 365)
    assert kg.meta["stat"] == [7128, 230, 365]
    assert [len(kg.queries[s]) for s in ("train", "valid", "test")] == [72826, 8941, 8963]
    np.testing.assert_array_equal(kg.facts[0], [4809, 1, 5754, 132])
    ans = known_answers(kg, time_aware=True)
    assert 5754 in ans[(4809, 1, 132)]
