"""Synthetic Horn-rule KGs with known ground-truth rules: the embedded default data for Tunsr.

Static (:func:`make_synthetic_kg`): base relations ``parent`` (a random forest) and
``brother`` (male children of the same parent) go to the graph, as does one orientation of each
``spouse`` pair of a random matching; derived relations are materialised exactly from these
rules (``R`` = 7 relations), and each has no other exact explanation in the data:

* ``grandparent(X,Y) <= parent(X,A), parent(A,Y)``
* ``uncle(X,Y) <= brother(X,A), parent(A,Y)``
* ``child(X,Y) <= parent(Y,X)`` (inverse body atom)
* ``great_grandparent(X,Y) <= parent(X,A), parent(A,B), parent(B,Y)`` (length 3)
* ``spouse(X,Y) <= spouse(Y,X)`` (symmetric; the derived triples are the unobserved
  orientation of each couple)

Derived triples are shuffled (seeded) into test (``test_fraction``), valid (``valid_fraction``),
graph facts (``graph_fraction`` of the rest, needed e.g. by the symmetric rule) and train queries.

Temporal (:func:`make_synthetic_temporal_kg`): events ``A(x,y,t)`` at random times cause
``B(x,y,t+delay)``; two noise relations fire at random. The graph holds every ``A`` and noise
event; the queries are the ``B`` events, split by time (first 70 % train, next 15 % valid, last
15 % test), as forecasting requires.
"""

from __future__ import annotations

import numpy as np

from clinfuse.core.errors import DataError
from clinfuse.methods.tunsr.data import KG, Rule, check_no_leak

__all__ = [
    "STATIC_RELATIONS",
    "TEMPORAL_RELATIONS",
    "make_synthetic_kg",
    "make_synthetic_temporal_kg",
]

STATIC_RELATIONS: tuple[str, ...] = (
    "parent",
    "brother",
    "spouse",
    "grandparent",
    "uncle",
    "child",
    "great_grandparent",
)
TEMPORAL_RELATIONS: tuple[str, ...] = ("A", "B", "noise1", "noise2")


def _pairs_to_rows(pairs: np.ndarray, rel: int) -> np.ndarray:
    pairs = np.unique(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=0)
    rows = np.zeros((len(pairs), 4), dtype=np.int64)
    rows[:, 0], rows[:, 1], rows[:, 2] = pairs[:, 0], rel, pairs[:, 1]
    return rows


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairs ``(x, y)`` with ``(x, z)`` in ``a`` and ``(z, y)`` in ``b`` (relational join)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), np.int64)
    order = np.argsort(b[:, 0], kind="stable")
    b = b[order]
    lo = np.searchsorted(b[:, 0], a[:, 1], "left")
    hi = np.searchsorted(b[:, 0], a[:, 1], "right")
    counts = hi - lo
    xs = np.repeat(a[:, 0], counts)
    idx = np.concatenate([np.arange(s, e) for s, e in zip(lo, hi, strict=True)] or [[]])
    return np.unique(np.stack([xs, b[idx.astype(np.int64), 1]], axis=1), axis=0)


def make_synthetic_kg(
    *,
    n_entities: int = 200,
    seed: int = 0,
    test_fraction: float = 0.2,
    noise_heads: bool = False,
    valid_fraction: float = 0.1,
    graph_fraction: float = 0.3,
) -> tuple[KG, list[Rule]]:
    """A family KG whose derived relations follow known Horn rules exactly.

    With ``noise_heads=True`` every derived relation keeps its triple count but gets random
    (head, tail) pairs, so no rule holds (a control for rule confidence thresholds); the
    returned rules are still the intended ones.

    Shape:
        facts ``(M, 4)``, queries ``(N, 4)``, time column 0.
    """
    if n_entities < 10:
        raise DataError("n_entities too small", expected=">= 10", found=n_entities)
    if not 0 <= test_fraction < 1 or not 0 <= valid_fraction < 1 - test_fraction:
        raise DataError(
            "bad split fractions",
            expected="0 <= test_fraction, valid_fraction; sum < 1",
            found=(test_fraction, valid_fraction),
        )
    rng = np.random.default_rng(seed)
    par, bro, spo, gp, unc, chi, ggp = range(len(STATIC_RELATIONS))
    n_roots = max(2, n_entities // 20)
    kids = np.arange(n_roots, n_entities)
    # parent of i drawn from the previous 30 entities: deep trees, a few children per parent
    parent_of = np.maximum(kids - 1 - rng.integers(0, 30, size=len(kids)), 0)
    parent = np.stack([parent_of, kids], axis=1)
    male = rng.random(n_entities) < 0.5
    # brothers: ordered pairs of distinct children of one parent, the first male
    same = parent[:, 0][:, None] == parent[:, 0][None, :]
    ii, jj = np.nonzero(same & ~np.eye(len(parent), dtype=bool))
    sibling = np.stack([parent[ii, 1], parent[jj, 1]], axis=1)
    brother = sibling[male[sibling[:, 0]]]
    perm = rng.permutation(n_entities)
    half = (n_entities // 4) * 2
    couples = perm[:half].reshape(-1, 2)  # one orientation observed, the other derived
    base = np.concatenate(
        [_pairs_to_rows(parent, par), _pairs_to_rows(brother, bro), _pairs_to_rows(couples, spo)]
    )
    grand = _compose(parent, parent)
    derived_pairs = {
        gp: grand,
        unc: _compose(brother, parent),
        chi: parent[:, ::-1],
        ggp: _compose(grand, parent),
        spo: couples[:, ::-1],
    }
    if noise_heads:
        for r, pairs in derived_pairs.items():
            n = len(np.unique(pairs, axis=0))
            codes = rng.choice(n_entities * (n_entities - 1), size=n + len(couples), replace=False)
            h, t = codes // (n_entities - 1), codes % (n_entities - 1)
            drawn = np.stack([h, t + (t >= h)], axis=1)  # no self-loops
            if r == spo:  # an observed couple drawn as a query would leak
                observed = {(int(a), int(b)) for a, b in couples}
                drawn = drawn[[(int(a), int(b)) not in observed for a, b in drawn]]
            derived_pairs[r] = drawn[:n]
    derived = np.concatenate([_pairs_to_rows(p, r) for r, p in derived_pairs.items()])
    order = rng.permutation(len(derived))
    n_test = int(round(test_fraction * len(derived)))
    n_valid = int(round(valid_fraction * len(derived)))
    rest = order[n_test + n_valid :]
    n_graph = int(round(graph_fraction * len(rest)))
    pick = {
        "test": order[:n_test],
        "valid": order[n_test : n_test + n_valid],
        "graph": rest[:n_graph],
        "train": rest[n_graph:],
    }
    pick = {k: np.sort(v) for k, v in pick.items()}
    facts = np.concatenate([base, derived[pick["graph"]]])
    queries = {s: derived[pick[s]] for s in ("train", "valid", "test")}
    R = len(STATIC_RELATIONS)
    rules = [
        Rule(gp, (par, par)),
        Rule(unc, (bro, par)),
        Rule(chi, (par + R,)),
        Rule(ggp, (par, par, par)),
        Rule(spo, (spo + R,)),
    ]
    kg = KG(
        entities=[f"e{i}" for i in range(n_entities)],
        relations=list(STATIC_RELATIONS),
        facts=facts,
        queries=queries,
        name="synthetic_noise" if noise_heads else "synthetic",
        source="clinfuse.methods.tunsr.synthetic.make_synthetic_kg",
        meta={"seed": seed, "noise_heads": noise_heads, "derived": derived},
    )
    for s, q in queries.items():
        check_no_leak(facts, q, where=f"synthetic {s}", n_relations=R)
    return kg, rules


def make_synthetic_temporal_kg(
    *,
    n_entities: int = 120,
    n_times: int = 50,
    delay: int = 1,
    seed: int = 0,
    events_per_time: int = 6,
) -> tuple[KG, list[Rule]]:
    """Temporal KG where ``A(x,y,t)`` causes ``B(x,y,t+delay)``; time ids ``0..n_times-1``.

    Returns the KG and the rule ``B(X,Y,t) <= A(X,Y,t-delay)`` (``time_order=(-delay,)``).

    Shape:
        facts ``(M, 4)`` (A and noise events), queries ``(N, 4)`` (B events).
    """
    if not 1 <= delay < n_times:
        raise DataError("delay must lie in 1..n_times-1", found=(delay, n_times))
    rng = np.random.default_rng(seed)
    a_rel, b_rel, n1, n2 = range(len(TEMPORAL_RELATIONS))

    def events(rel: int, t_max: int) -> np.ndarray:
        n = events_per_time * t_max
        h = rng.integers(0, n_entities, n)
        t = (h + 1 + rng.integers(0, n_entities - 1, n)) % n_entities
        rows = np.stack([h, np.full(n, rel), t, rng.integers(0, t_max, n)], axis=1)
        return np.unique(rows.astype(np.int64), axis=0)

    a = events(a_rel, n_times - delay)
    b = a.copy()
    b[:, 1], b[:, 3] = b_rel, a[:, 3] + delay
    facts = np.concatenate([a, events(n1, n_times), events(n2, n_times)])
    facts = facts[np.lexsort((facts[:, 2], facts[:, 1], facts[:, 0], facts[:, 3]))]
    b = b[np.lexsort((b[:, 2], b[:, 0], b[:, 3]))]
    t1, t2 = int(0.7 * n_times), int(0.85 * n_times)
    queries = {
        "train": b[b[:, 3] < t1],
        "valid": b[(b[:, 3] >= t1) & (b[:, 3] < t2)],
        "test": b[b[:, 3] >= t2],
    }
    kg = KG(
        entities=[f"e{i}" for i in range(n_entities)],
        relations=list(TEMPORAL_RELATIONS),
        facts=facts,
        queries=queries,
        temporal=True,
        times=[str(t) for t in range(n_times)],
        name="synthetic_temporal",
        source="clinfuse.methods.tunsr.synthetic.make_synthetic_temporal_kg",
        meta={"seed": seed, "delay": delay},
    )
    for s, q in queries.items():
        check_no_leak(facts, q, where=f"synthetic_temporal {s}", n_relations=len(kg.relations))
    return kg, [Rule(b_rel, (a_rel,), 1.0, time_order=(-delay,))]
