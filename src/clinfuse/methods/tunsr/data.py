"""Knowledge-graph data for Tunsr: id-mapped triples, inverse relations, CSR adjacency, loaders.

Every loader returns a :class:`KG` whose arrays are ``(N, 4) int64`` rows
``[head, rel, tail, time]`` (time 0 on static KGs). Ids: entities ``0..E-1``; relations
``0..R-1``; the inverse of ``r`` is ``r + R``; the self-loop id is ``2R``.

Layouts read (all from a folder, so the copies under ``../shared/data/kg`` plug in):

* **pykeen** Nations, Kinships, UMLS: the ``train/valid/test.txt`` files inside the installed
  wheel (no download). Path-based learners answer a query from a graph that must not hold it, so
  pykeen's train file is split (seeded, ``fact_ratio``) into graph ``facts`` and train queries.
* **Neural-LP** (``facts.txt`` graph + ``train/valid/test.txt`` queries, ``entities.txt`` and
  ``relations.txt`` with id = line order as RED-GNN reads them). The RNNLogic layout (no
  ``facts.txt``, ``entities.dict``/``relations.dict`` as ``id\\tname``) is read by the same
  function: its ``train.txt`` is then split into facts and train queries like pykeen's.
* **GraIL inductive** (``X_vN`` + ``X_vN_ind``): see :func:`load_grail`.
* **RE-Net** integer temporal (``h r t ts [x]``, optional ``stat.txt``, ``entity2id.txt``,
  ``relation2id.txt``) and **TLogic** (``head\\trel\\ttail\\tYYYY-MM-DD`` with optional
  ``entity2id.json``, ``relation2id.json``, ``ts2id.json``).

Temporal KGs keep the whole train split as the graph ``facts`` *and* as the train queries
(TLogic/TECHS practice): the query's own fact is hidden by the time constraint (extrapolation,
``t' < t_q``) or must be masked by the model (interpolation). So the leak check covers valid and
test there, and ``meta["train_queries_in_graph"]`` is ``True``.

Bad input raises :class:`~clinfuse.core.errors.DataError` naming the file and line; nothing is
ever written.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clinfuse.core.errors import DataError, reads_untrusted, require

__all__ = [
    "CSR",
    "KG",
    "SPLITS",
    "Rule",
    "add_inverse",
    "check_no_leak",
    "known_answers",
    "load_grail",
    "load_kg",
    "load_neurallp",
    "load_pykeen",
    "load_renet",
    "load_tlogic",
]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "valid", "test")
PykeenName = Literal["nations", "kinships", "umls"]
_EMPTY = np.zeros((0, 4), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# containers


@dataclass
class KG:
    """A knowledge graph with query splits.

    Ids: entities ``0..E-1``; relations ``0..R-1``, inverse of ``r`` is ``r + R``, the self-loop
    id is ``2R``. All arrays are ``(N, 4) int64`` rows ``[head, rel, tail, time]`` without
    inverse edges (time 0 when static).
    """

    entities: list[str]
    """Entity id -> name."""
    relations: list[str]
    """Relation id -> name, originals only (no inverses)."""
    facts: np.ndarray
    """``(M, 4)``: the graph queries are answered from (the train graph)."""
    queries: dict[str, np.ndarray]
    """``"train" | "valid" | "test"`` -> ``(N, 4)`` query triples."""
    temporal: bool = False
    inductive: bool = False
    inductive_facts: np.ndarray | None = None
    """Inductive only: ``(M', 4)`` test graph that valid/test queries are answered from."""
    times: list[str] | None = None
    """Temporal only: time id -> original stamp."""
    name: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_entities(self) -> int:
        return len(self.entities)

    @property
    def n_relations(self) -> int:
        """Number of original relations ``R`` (inverses and the self-loop not counted)."""
        return len(self.relations)

    @property
    def n_times(self) -> int:
        """Number of time ids (1 on a static KG)."""
        return len(self.times) if self.times else 1

    @property
    def self_loop_id(self) -> int:
        return 2 * self.n_relations

    def graph(self, split: str) -> np.ndarray:
        """The ``(M, 4)`` facts that queries of ``split`` are answered from, without inverses.

        Inductive valid/test use :attr:`inductive_facts`; everything else :attr:`facts`.
        """
        if split not in self.queries:
            raise DataError(
                f"unknown split {split!r}", expected="|".join(self.queries), found=split
            )
        if self.inductive and split != "train" and self.inductive_facts is not None:
            return self.inductive_facts
        return self.facts

    def summary(self) -> str:
        """One line of counts, for logs."""
        q = " ".join(f"{k}={len(v)}" for k, v in self.queries.items())
        ind = f" ind_facts={len(self.inductive_facts)}" if self.inductive_facts is not None else ""
        return (
            f"{self.name or 'kg'}: E={self.n_entities} R={self.n_relations} T={self.n_times} "
            f"facts={len(self.facts)}{ind} {q}"
        )


@dataclass
class Rule:
    """A chain Horn rule ``head(X, Y) <= body_1(X, A), body_2(A, B), ..., body_n(., Y)``.

    ``body`` holds relation ids; an inverse id ``r + R`` means the atom is ``r(next, prev)``.
    """

    head: int
    body: tuple[int, ...]
    confidence: float = 1.0
    time_order: tuple[int, ...] | None = None
    """Temporal rules: time offset of each body atom relative to the head's time (``-1``: one
    step earlier); ``None`` for static rules."""

    def to_anyburl(self, kg: KG) -> str:
        """PyClause/AnyBURL text, e.g. ``grandparent(X,Y) <= parent(X,A), parent(A,Y)``.

        Example:
            >>> kg = KG(["a"], ["parent", "child"], _EMPTY, {})
            >>> Rule(1, (2,)).to_anyburl(kg)
            'child(X,Y) <= parent(Y,X)'
        """
        n_rel = kg.n_relations
        letters = [chr(ord("A") + i) for i in range(len(self.body) - 1)]
        variables = ["X", *letters, "Y"]
        atoms = []
        for i, r in enumerate(self.body):
            a, b = variables[i], variables[i + 1]
            if r >= n_rel:
                r, a, b = r - n_rel, b, a
            atoms.append(f"{kg.relations[r]}({a},{b})")
        return f"{kg.relations[self.head]}(X,Y) <= {', '.join(atoms)}"


# ---------------------------------------------------------------------------------------------
# triple utilities


def add_inverse(triples: np.ndarray, n_relations: int) -> np.ndarray:
    """Append the inverse ``(t, r + R, h, time)`` of every row.

    Shape:
        triples: ``(M, 4)`` int64. Output: ``(2M, 4)``, originals first.

    Example:
        >>> add_inverse(np.array([[0, 1, 2, 5]]), n_relations=3).tolist()
        [[0, 1, 2, 5], [2, 4, 0, 5]]
    """
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 4)
    inv = triples[:, [2, 1, 0, 3]].copy()
    inv[:, 1] += n_relations
    return np.concatenate([triples, inv], axis=0)


@dataclass
class CSR:
    """Out-edges grouped by head; each head's edges sorted by (time, rel, tail).

    Shape:
        indptr: ``(E + 1,)``; rel, tail, time: ``(M,)``. Edges of head ``e`` are
        ``indptr[e]:indptr[e + 1]``.
    """

    indptr: np.ndarray
    rel: np.ndarray
    tail: np.ndarray
    time: np.ndarray

    @classmethod
    def from_triples(cls, triples: np.ndarray, n_entities: int) -> CSR:
        """Build from ``(M, 4)`` rows (or ``(M, 3)``, time 0); add inverses before if wanted."""
        t = np.asarray(triples, dtype=np.int64)
        if t.ndim != 2 or t.shape[1] not in (3, 4):
            raise DataError("triples must be (M, 3) or (M, 4)", found=t.shape)
        if t.shape[1] == 3:
            t = np.concatenate([t, np.zeros((len(t), 1), np.int64)], axis=1)
        if len(t) and (t[:, [0, 2]].min() < 0 or t[:, [0, 2]].max() >= n_entities):
            raise DataError(
                "entity id out of range", expected=f"0..{n_entities - 1}", found=t[:, [0, 2]].max()
            )
        order = np.lexsort((t[:, 2], t[:, 1], t[:, 3], t[:, 0]))
        t = t[order]
        counts = np.bincount(t[:, 0], minlength=n_entities)
        indptr = np.zeros(n_entities + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, t[:, 1].copy(), t[:, 2].copy(), t[:, 3].copy())

    def neighbours(self, e: int) -> slice:
        """Slice into :attr:`rel`/:attr:`tail`/:attr:`time` holding the out-edges of ``e``."""
        return slice(int(self.indptr[e]), int(self.indptr[e + 1]))

    def degree(self) -> np.ndarray:
        """``(E,)`` out-degree of every entity."""
        return np.diff(self.indptr)


def _canonical(rows: np.ndarray, n_relations: int | None) -> np.ndarray:
    """Rewrite inverse rows ``(t, r + R, h, time)`` as ``(h, r, t, time)``."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    if n_relations is None:
        return rows
    inv = (rows[:, 1] >= n_relations) & (rows[:, 1] < 2 * n_relations)
    if not inv.any():
        return rows
    rows = rows.copy()
    rows[inv] = rows[inv][:, [2, 1, 0, 3]]
    rows[inv, 1] -= n_relations
    return rows


def _row_member(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a),)`` bool: is each row of ``a`` a row of ``b`` (vectorised row hashing)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), dtype=bool)
    both = np.concatenate([a, b], axis=0)
    lo = both.min(axis=0)
    span = both.max(axis=0) - lo + 1
    if float(np.prod(span.astype(np.float64))) < 2.0**62:  # exact mixed-radix code
        codes = np.ravel_multi_index(tuple((both - lo).T), tuple(int(s) for s in span))
    else:  # pragma: no cover - huge id spaces
        codes = np.unique(both, axis=0, return_inverse=True)[1].ravel()
    return np.isin(codes[: len(a)], codes[len(a) :])


def check_no_leak(
    graph: np.ndarray, queries: np.ndarray, *, where: str, n_relations: int | None = None
) -> None:
    """Raise :class:`DataError` when a query triple (or its inverse) is an edge of ``graph``.

    Rows are compared on ``(h, r, t, time)``. With ``n_relations`` given, inverse rows
    (``r + R``) on either side are first rewritten as originals, so a graph that holds
    ``(t, r + R, h)`` leaks the query ``(h, r, t)`` and vice versa; every loader passes it.

    Shape:
        graph: ``(M, 4)``; queries: ``(N, 4)``.
    """
    g = _canonical(graph, n_relations)
    q = _canonical(queries, n_relations)
    hit = _row_member(q, g)
    if hit.any():
        rows = q[hit][:5].tolist()
        raise DataError(
            f"{where}: {int(hit.sum())} of {len(q)} query triples are also in the graph",
            expected="queries disjoint from the graph they are answered from (inverses included)",
            found=f"e.g. [head, rel, tail, time] = {rows}",
            fix="remove these triples from the graph file, or re-split the data",
        )


def known_answers(kg: KG, *, time_aware: bool) -> dict[tuple[int, ...], np.ndarray]:
    """Every true tail per ``(h, r)`` (or ``(h, r, time)``) for filtered ranking.

    Collects train+valid+test queries, ``facts`` and ``inductive_facts``, in both directions
    (inverse relations ``r + R``).

    Shape:
        Output: key -> ``(k,)`` int64 sorted unique tails.
    """
    parts = [kg.facts, *kg.queries.values()]
    if kg.inductive_facts is not None:
        parts.append(kg.inductive_facts)
    rows = add_inverse(np.concatenate([p.reshape(-1, 4) for p in parts]), kg.n_relations)
    cols = [0, 1, 3, 2] if time_aware else [0, 1, 2]
    rows = np.unique(rows[:, cols], axis=0)  # sorted by key, then tail
    keys = rows[:, :-1]
    if len(rows) == 0:
        return {}
    change = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
    starts = np.concatenate([[0], change])
    tails = np.split(rows[:, -1], change)
    key_list = keys[starts].tolist()
    return {tuple(k): v for k, v in zip(key_list, tails, strict=True)}


# ---------------------------------------------------------------------------------------------
# reading helpers


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of the non-empty lines of a UTF-8 file."""
    if not path.is_file():
        raise DataError(f"missing file {path}", expected="an existing file", found="nothing")
    with path.open(encoding="utf-8") as f:
        return [(i, s) for i, line in enumerate(f, 1) if (s := line.rstrip("\r\n")).strip()]


def _fields(path: Path, lineno: int, line: str, ncols: Sequence[int], what: str) -> list[str]:
    parts = line.split("\t")
    if len(parts) not in ncols:
        parts = line.split()
    if len(parts) not in ncols:
        raise DataError(
            f"{path}:{lineno}: malformed triple line",
            expected=f"{' or '.join(map(str, ncols))} tab-separated fields ({what})",
            found=f"{len(parts)} fields: {line[:120]!r}",
            fix="fix or delete this line",
        )
    return [p.strip() for p in parts]


def _read_named(path: Path, ncols: int = 3) -> list[tuple[int, list[str]]]:
    what = "head, relation, tail" + (", time" if ncols == 4 else "")
    return [(n, _fields(path, n, s, (ncols,), what)) for n, s in _read_lines(path)]


def _read_name_list(path: Path) -> list[str]:
    """``entities.txt``/``relations.txt``: one name per line, or ``name\\tid`` lines."""
    rows = _read_lines(path)
    if rows and all("\t" in s for _, s in rows):
        return _read_id_map(path, name_first=True)
    return [s.strip() for _, s in rows]


def _read_id_map(path: Path, *, name_first: bool) -> list[str]:
    """``name\\tid`` (split on the last tab) or ``id\\tname`` lines -> list indexed by id."""
    out: dict[int, str] = {}
    for n, s in _read_lines(path):
        if name_first:
            name, sep, idx = s.rpartition("\t")
        else:
            idx, sep, name = s.partition("\t")
        try:
            i = int(idx)
        except ValueError:
            i = -1
        if not sep or i < 0 or i in out:
            raise DataError(
                f"{path}:{n}: bad id-map line",
                expected="name\\tid" if name_first else "id\\tname",
                found=repr(s[:120]),
            )
        out[i] = name
    if sorted(out) != list(range(len(out))):
        raise DataError(f"{path}: ids are not contiguous", expected=f"0..{len(out) - 1}")
    return [out[i] for i in range(len(out))]


class _Vocab:
    """Name -> id, growing by first appearance unless frozen."""

    def __init__(self, names: Sequence[str] = (), *, frozen: bool = False) -> None:
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        if len(self.index) != len(self.names):
            raise DataError("duplicate names in a vocabulary file", found=len(self.names))
        self.frozen = frozen

    def get(self, name: str, *, grow: bool) -> int | None:
        i = self.index.get(name)
        if i is None and grow and not self.frozen:
            i = self.index[name] = len(self.names)
            self.names.append(name)
        return i


def _encode(
    path: Path,
    rows: list[tuple[int, list[str]]],
    ents: _Vocab,
    rels: _Vocab,
    *,
    grow: bool,
    time_of: Callable[[int, str], int] | None = None,
) -> np.ndarray:
    """Name rows -> ``(N, 4)`` ids; an unknown name is a :class:`DataError` with file:line."""
    out = np.zeros((len(rows), 4), dtype=np.int64)
    for k, (n, (h, r, t, *rest)) in enumerate(rows):
        hi, ti = ents.get(h, grow=grow), ents.get(t, grow=grow)
        ri = rels.get(r, grow=grow)
        for value, kind, vocab in ((hi, h, "entity"), (ri, r, "relation"), (ti, t, "entity")):
            if value is None:
                size = len(ents.names) if vocab == "entity" else len(rels.names)
                raise DataError(
                    f"{path}:{n}: unknown {vocab} {kind!r}",
                    expected=f"one of the {size} {vocab} names of the graph",
                    found=kind,
                    fix="the graph must know every query entity/relation (transductive)",
                )
        out[k, :3] = (hi, ri, ti)
        if time_of is not None:
            out[k, 3] = time_of(n, rest[0])
    return out


def _split_facts(
    triples: np.ndarray, fact_ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``(N, 4)`` rows into graph facts (``fact_ratio``) and queries.

    ``fact_ratio = 1`` keeps every row in the graph *and* makes every row a query (RNNLogic /
    RED-GNN inductive practice): the model's leakage guard then hides each training query's own
    fact (and its inverse) from its reasoning graph, and the KG's ``meta`` must say
    ``train_queries_in_graph`` (see :func:`_all_in_graph`).
    """
    if not 0.0 < fact_ratio <= 1.0:
        raise DataError(
            "fact_ratio must lie in (0, 1]", expected="0 < ratio <= 1", found=fact_ratio
        )
    triples = np.unique(triples, axis=0)  # duplicates would leak across the split
    if fact_ratio == 1.0:
        return triples, triples
    perm = np.random.default_rng(seed).permutation(len(triples))
    n_facts = int(round(fact_ratio * len(triples)))
    return triples[np.sort(perm[:n_facts])], triples[np.sort(perm[n_facts:])]


def _all_in_graph(fact_ratio: float) -> dict[str, Any]:
    """Meta entries of a KG whose train queries are also its graph facts (``fact_ratio = 1``)."""
    return {"train_queries_in_graph": True} if fact_ratio == 1.0 else {}


def _check_all(kg: KG) -> KG:
    """Run :func:`check_no_leak` on every split (temporal train excepted, see module doc)."""
    for split, q in kg.queries.items():
        if split == "train" and kg.meta.get("train_queries_in_graph"):
            continue
        check_no_leak(kg.graph(split), q, where=f"{kg.name} {split}", n_relations=kg.n_relations)
    logger.info("loaded %s", kg.summary())
    return kg


# ---------------------------------------------------------------------------------------------
# static loaders


def load_pykeen(name: PykeenName, *, fact_ratio: float = 0.75, seed: int = 0) -> KG:
    """Nations, Kinships or UMLS from the files shipped inside the installed pykeen wheel.

    Ids follow pykeen (sorted names of the train file). The train file is split, seeded, into
    graph ``facts`` (``fact_ratio``) and train queries; valid/test stay queries.
    """
    if name not in ("nations", "kinships", "umls"):
        raise DataError(
            f"unknown pykeen data set {name!r}", expected="nations|kinships|umls", found=name
        )
    pykeen = require("pykeen", "kg")
    # Same files as pykeen.datasets.<name>.<NAME>_TRAIN_PATH, without importing that module (2 s).
    folder = Path(pykeen.__file__).parent / "datasets" / name
    raw = {s: _read_named(folder / f"{s}.txt") for s in SPLITS}
    ents = _Vocab(sorted({x for _, r in raw["train"] for x in (r[0], r[2])}), frozen=True)
    rels = _Vocab(sorted({r[1] for _, r in raw["train"]}), frozen=True)
    enc = {s: _encode(folder / f"{s}.txt", raw[s], ents, rels, grow=False) for s in SPLITS}
    facts, train_q = _split_facts(enc["train"], fact_ratio, seed)
    kg = KG(
        entities=ents.names,
        relations=rels.names,
        facts=facts,
        queries={"train": train_q, "valid": enc["valid"], "test": enc["test"]},
        name=name,
        source=str(folder),
        meta={
            "fact_ratio": fact_ratio,
            "seed": seed,
            "split": "pykeen, train re-split",
            **_all_in_graph(fact_ratio),
        },
    )
    return _check_all(kg)


def load_neurallp(folder: str | Path, *, fact_ratio: float = 0.75, seed: int = 0) -> KG:
    """Neural-LP/RED-GNN layout: ``facts.txt`` graph, ``train/valid/test.txt`` queries.

    Ids: ``entities.txt``/``relations.txt`` (one name per line, id = line order; ``name\\tid``
    lines are also accepted) or RNNLogic ``entities.dict``/``relations.dict`` (``id\\tname``)
    when present, else by first appearance over facts, train, valid, test; in that case
    valid/test may only use names seen in facts or train. Without ``facts.txt`` (RNNLogic
    layout) ``train.txt`` is split, seeded, into facts (``fact_ratio``) and train queries.
    """
    folder = Path(folder)

    def vocab(stem: str) -> _Vocab:
        if (folder / f"{stem}.txt").is_file():
            return _Vocab(_read_name_list(folder / f"{stem}.txt"), frozen=True)
        if (folder / f"{stem}.dict").is_file():
            return _Vocab(_read_id_map(folder / f"{stem}.dict", name_first=False), frozen=True)
        return _Vocab()

    ents, rels = vocab("entities"), vocab("relations")
    has_facts = (folder / "facts.txt").is_file()
    files = (["facts"] if has_facts else []) + list(SPLITS)
    enc = {}
    for s in files:
        p = folder / f"{s}.txt"
        enc[s] = _encode(p, _read_named(p), ents, rels, grow=s in ("facts", "train"))
    meta: dict[str, Any] = {"split": "facts.txt" if has_facts else "train.txt re-split"}
    if has_facts:
        facts, train_q = enc["facts"], enc["train"]
    else:
        facts, train_q = _split_facts(enc["train"], fact_ratio, seed)
        meta.update(fact_ratio=fact_ratio, seed=seed, **_all_in_graph(fact_ratio))
    kg = KG(
        entities=ents.names,
        relations=rels.names,
        facts=facts,
        queries={"train": train_q, "valid": enc["valid"], "test": enc["test"]},
        name=folder.name,
        source=str(folder),
        meta=meta,
    )
    return _check_all(kg)


def _grail_vocab(folder: Path, stem: str) -> list[str] | None:
    p = folder / f"{stem}.txt"
    return _read_name_list(p) if p.is_file() else None


def load_grail(
    folder: str | Path,
    folder_ind: str | Path | None = None,
    *,
    fact_ratio: float = 0.75,
    seed: int = 0,
    train_queries: Literal["fact_split", "redgnn"] = "fact_split",
) -> KG:
    """GraIL inductive pair ``X_vN`` (train KG) + ``X_vN_ind`` (test KG, new entities).

    * graph for train queries (``facts``): ``X_vN/train.txt``; with ``train_queries="fact_split"``
      (default) only its ``fact_ratio`` part, the rest being the train queries (seeded);
      with ``"redgnn"`` all of it, and the train queries are ``X_vN/valid.txt`` (RED-GNN).
    * test graph (``inductive_facts``): ``X_vN_ind/train.txt``; valid/test queries:
      ``X_vN_ind/valid.txt`` and ``test.txt`` (RED-GNN ranks both, merged, as its test set).
    * the remaining ``X_vN/valid.txt``/``test.txt`` rows are kept in ``meta["trans_valid"]`` /
      ``meta["trans_test"]`` (answerable from ``facts``; RED-GNN validates on ``X_vN/test.txt``).

    Relation ids come from ``X_vN/relations.txt`` (``X_vN_ind`` numbers them differently for
    WN18RR); a relation of ``_ind`` unknown there is a :class:`DataError`. Entities of both
    graphs share one id space, ``X_vN`` first; identical names share an id.
    """
    folder = Path(folder)
    folder_ind = (
        Path(folder_ind) if folder_ind is not None else folder.with_name(folder.name + "_ind")
    )
    ent_names = _grail_vocab(folder, "entities")
    rel_names = _grail_vocab(folder, "relations")
    ents = _Vocab(ent_names or ())
    rels = _Vocab(rel_names or (), frozen=rel_names is not None)
    tr = {s: folder / f"{s}.txt" for s in SPLITS}
    ind = {s: folder_ind / f"{s}.txt" for s in SPLITS}
    graph_rows = _encode(tr["train"], _read_named(tr["train"]), ents, rels, grow=True)
    trans = {
        s: _encode(tr[s], _read_named(tr[s]), ents, rels, grow=False) for s in ("valid", "test")
    }
    rels.frozen = True
    ind_ents = _grail_vocab(folder_ind, "entities")
    ind_rows = _read_named(ind["train"])
    known_ind = set(ind_ents or ()) | {x for _, r in ind_rows for x in (r[0], r[2])}
    for n in ind_ents or ():
        ents.get(n, grow=True)
    ind_graph = _encode(ind["train"], ind_rows, ents, rels, grow=True)
    ind_q = {}
    for s in ("valid", "test"):
        rows = _read_named(ind[s])
        for n, r in rows:
            for e in (r[0], r[2]):
                if e not in known_ind:
                    raise DataError(
                        f"{ind[s]}:{n}: unknown entity {e!r}",
                        expected=f"an entity of the inductive graph {ind['train']}",
                        found=e,
                    )
        ind_q[s] = _encode(ind[s], rows, ents, rels, grow=False)
    if train_queries == "fact_split":
        facts, train_q = _split_facts(graph_rows, fact_ratio, seed)
    elif train_queries == "redgnn":
        facts, train_q = graph_rows, trans["valid"]
    else:
        raise DataError("unknown train_queries", expected="fact_split|redgnn", found=train_queries)
    kg = KG(
        entities=ents.names,
        relations=rels.names,
        facts=facts,
        queries={"train": train_q, "valid": ind_q["valid"], "test": ind_q["test"]},
        inductive=True,
        inductive_facts=ind_graph,
        name=folder.name,
        source=f"{folder} + {folder_ind}",
        meta={
            "train_queries": train_queries,
            "fact_ratio": fact_ratio,
            "seed": seed,
            "trans_valid": trans["valid"],
            "trans_test": trans["test"],
            **(_all_in_graph(fact_ratio) if train_queries == "fact_split" else {}),
        },
    )
    check_no_leak(graph_rows, trans["test"], where=f"{tr['test']}", n_relations=len(rels.names))
    return _check_all(kg)


# ---------------------------------------------------------------------------------------------
# temporal loaders


def _time_ids(stamps: np.ndarray) -> tuple[np.ndarray, list[int]]:
    uniq, inv = np.unique(stamps, return_inverse=True)
    return inv.astype(np.int64), uniq.tolist()


def load_renet(folder: str | Path) -> KG:
    """RE-Net integer layout: ``h r t ts [x]`` lines in ``train/valid/test.txt`` (temporal).

    ``ts`` values (over all splits) are mapped to contiguous time ids in sorted order; the raw
    step (``gcd`` of gaps, 24 for ICEWS14 hours) is ``meta["time_step"]``. The 5th column is
    ignored. Names from ``entity2id.txt``/``relation2id.txt`` (``name\\tid``, last tab) when
    present; sizes from them, else ``stat.txt`` (``n_ent n_rel [n_ts]``), else max id + 1.
    """
    folder = Path(folder)
    raw: dict[str, np.ndarray] = {}
    for s in SPLITS:
        p = folder / f"{s}.txt"
        lines = _read_lines(p)
        rows = np.zeros((len(lines), 4), dtype=np.int64)
        for k, (n, line) in enumerate(lines):
            parts = line.split()
            if len(parts) not in (4, 5):
                raise DataError(
                    f"{p}:{n}: malformed triple line",
                    expected="4 or 5 integer fields h r t ts [x]",
                    found=f"{len(parts)} fields: {line[:120]!r}",
                )
            try:
                rows[k] = [int(x) for x in parts[:4]]
            except ValueError:
                raise DataError(
                    f"{p}:{n}: non-integer id or time stamp",
                    expected="integers h r t ts (RE-Net layout); dates need the TLogic layout",
                    found=repr(line[:120]),
                    fix="convert the line, or use load_tlogic for YYYY-MM-DD stamps",
                ) from None
        raw[s] = rows
    allrows = np.concatenate(list(raw.values()))
    ent_names = rel_names = None
    if (folder / "entity2id.txt").is_file():
        ent_names = _read_id_map(folder / "entity2id.txt", name_first=True)
    if (folder / "relation2id.txt").is_file():
        rel_names = _read_id_map(folder / "relation2id.txt", name_first=True)
    stat = None
    if (folder / "stat.txt").is_file():
        stat = [int(x) for x in (folder / "stat.txt").read_text().split()]
    n_ent = len(ent_names) if ent_names else stat[0] if stat else int(allrows[:, [0, 2]].max()) + 1
    n_rel = len(rel_names) if rel_names else stat[1] if stat else int(allrows[:, 1].max()) + 1
    for s, rows in raw.items():
        bad = (rows[:, [0, 2]] < 0).any(1) | (rows[:, [0, 2]] >= n_ent).any(1)
        bad |= (rows[:, 1] < 0) | (rows[:, 1] >= n_rel)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            n = _read_lines(folder / f"{s}.txt")[k][0]
            raise DataError(
                f"{folder / f'{s}.txt'}:{n}: unknown entity or relation id",
                expected=f"entities 0..{n_ent - 1}, relations 0..{n_rel - 1}",
                found=rows[k, :3].tolist(),
            )
    tid, stamps = _time_ids(allrows[:, 3])
    gaps = np.diff(stamps)
    step = int(np.gcd.reduce(gaps)) if len(gaps) else 1
    out, start = {}, 0
    for s, rows in raw.items():
        r = rows.copy()
        r[:, 3] = tid[start : start + len(rows)]
        out[s] = r
        start += len(rows)
    kg = KG(
        entities=ent_names or [str(i) for i in range(n_ent)],
        relations=rel_names or [str(i) for i in range(n_rel)],
        facts=out["train"],
        queries=out,
        temporal=True,
        times=[str(x) for x in stamps],
        name=folder.name,
        source=str(folder),
        meta={"train_queries_in_graph": True, "time_step": step, "stat": stat},
    )
    return _check_all(kg)


def _read_json_map(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        names = {int(v): str(k) for k, v in m.items()}
    except (ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not a JSON object name -> int id", found=str(exc)) from None
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: ids are not contiguous", expected=f"0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


def load_tlogic(folder: str | Path) -> KG:
    """TLogic layout: ``head\\trel\\ttail\\tYYYY-MM-DD`` in ``train/valid/test.txt`` (temporal).

    Ids from ``entity2id.json``/``relation2id.json``/``ts2id.json`` when present, else by first
    appearance (entities, relations; valid/test may only use names of train) and sorted dates.
    """
    folder = Path(folder)
    ent_names = _read_json_map(folder / "entity2id.json")
    rel_names = _read_json_map(folder / "relation2id.json")
    ts_names = _read_json_map(folder / "ts2id.json")
    ents = _Vocab(ent_names or (), frozen=ent_names is not None)
    rels = _Vocab(rel_names or (), frozen=rel_names is not None)
    raw = {s: _read_named(folder / f"{s}.txt", 4) for s in SPLITS}
    if ts_names is None:
        stamps: set[str] = set()
        for s in SPLITS:
            for n, r in raw[s]:
                try:
                    _dt.date.fromisoformat(r[3])
                except ValueError:
                    raise DataError(
                        f"{folder / f'{s}.txt'}:{n}: bad time stamp {r[3]!r}",
                        expected="YYYY-MM-DD",
                        found=r[3],
                    ) from None
                stamps.add(r[3])
        ts_names = sorted(stamps)
    ts_index = {t: i for i, t in enumerate(ts_names)}

    def time_of(path: Path) -> Callable[[int, str], int]:
        def f(n: int, stamp: str) -> int:
            if stamp not in ts_index:
                raise DataError(
                    f"{path}:{n}: unknown time stamp {stamp!r}",
                    expected="a stamp listed in ts2id.json",
                    found=stamp,
                )
            return ts_index[stamp]

        return f

    out = {
        s: _encode(
            p := folder / f"{s}.txt", raw[s], ents, rels, grow=s == "train", time_of=time_of(p)
        )
        for s in SPLITS
    }
    kg = KG(
        entities=ents.names,
        relations=rels.names,
        facts=out["train"],
        queries=out,
        temporal=True,
        times=list(ts_names),
        name=folder.name,
        source=str(folder),
        meta={"train_queries_in_graph": True},
    )
    return _check_all(kg)


# ---------------------------------------------------------------------------------------------
# dispatch


def _looks_integer(path: Path) -> bool:
    for _, line in _read_lines(path)[:5]:
        if not all(p.lstrip("-").isdigit() for p in line.split()):
            return False
    return True


def _detect(folder: Path) -> Callable[[Path], KG]:
    """Pick a loader from the files in ``folder``."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if "facts.txt" in names:
        return load_neurallp
    if folder.name.endswith("_ind") and folder.with_name(folder.name[:-4]).is_dir():
        return lambda f: load_grail(f.with_name(f.name[:-4]), f)
    if folder.with_name(folder.name + "_ind").is_dir():
        return load_grail
    if "train.txt" not in names:
        raise DataError(
            f"cannot detect the KG layout of {folder}",
            expected="a folder with train.txt (and valid/test.txt), or a pykeen/synthetic name",
            found=sorted(names)[:10] or "no such folder",
        )
    if {"entity2id.json", "ts2id.json"} & names:
        return load_tlogic
    first = _read_lines(folder / "train.txt")[:1]
    ncols = len(first[0][1].split("\t")) if first else 3
    if _looks_integer(folder / "train.txt") and ncols in (4, 5):
        return load_renet
    if ncols == 4:
        return load_tlogic
    return load_neurallp


@reads_untrusted("a KG folder (train/valid/test.txt triples) or a known name")
def load_kg(source: str | Path, **kw: Any) -> KG:
    """Load by name (``nations|kinships|umls|synthetic|synthetic_temporal``) or from a folder.

    Keyword arguments go to the chosen loader or generator.
    """
    from clinfuse.methods.tunsr import synthetic

    named: dict[str, Callable[..., KG]] = {
        "nations": lambda **k: load_pykeen("nations", **k),
        "kinships": lambda **k: load_pykeen("kinships", **k),
        "umls": lambda **k: load_pykeen("umls", **k),
        "synthetic": lambda **k: synthetic.make_synthetic_kg(**k)[0],
        "synthetic_temporal": lambda **k: synthetic.make_synthetic_temporal_kg(**k)[0],
    }
    if isinstance(source, str) and source in named:
        return named[source](**kw)
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(
            f"unknown KG source {str(source)!r}",
            expected=f"one of {sorted(named)} or an existing folder",
            found=str(source),
        )
    loader = _detect(folder)
    return loader(folder, **kw)
