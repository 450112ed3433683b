r"""Query-conditioned reasoning-graph expansion, vectorised over a batch of queries.

A query is a row ``[e_q, r_q, answer, t_q]``. A **node** is a ``(query, entity, time)`` triple;
static KGs use time 0 everywhere. Step 0 holds one node per query, the query entity. Step
:math:`l` takes every out-edge :math:`(e, r, e', t')` of every node :math:`(b, e, t_v)` of step
:math:`l-1` from the adjacency (inverse edges included), plus one self-loop
:math:`(e, 2R, e, t_v)` per node, and keeps those that pass:

* the temporal constraint (self-loops always pass):

  - ``any``: every :math:`t'` (static KGs, interpolation);
  - ``before_query``: :math:`t' < t_q`;
  - ``monotone``: :math:`t' < t_q` and :math:`t' \ge t_v`, so times never decrease along a path.
    The root's time is then 0, the earliest timestamp index, so the first hop may use any time
    before :math:`t_q`; with the other constraints the root's time is :math:`t_q`;

* the leakage guard (``exclude_query``): the query fact :math:`(e_q, r_q, a, t_q)` and its
  inverse :math:`(a, r_q^{-1}, e_q, t_q)` are dropped wherever they occur;
* per-node sampling (``sample_nodes``): at most ``k`` real out-edges per node, drawn without
  replacement with :math:`p \propto \exp(\tau (t' - t_q))` by the Gumbel-top-k trick, from
  the training generator, or at evaluation (no generator) from :func:`hashed_uniform`, so that
  a node draws the same neighbours whatever else the expansion holds.

Children are deduplicated per query with :func:`torch.unique` over ``(query, entity, time)``.
Pruning to the top ``max_nodes`` edges per query needs the attention, so the model calls
:func:`candidate_edges`, scores them, prunes with :func:`segment_topk`, then
:func:`attach_children`. :func:`expand` chains the three without pruning (tests, explanations).

Nothing here loops over queries or nodes in Python: gathers use the CSR ``indptr`` with
:func:`torch.repeat_interleave`, ranks within segments use two stable sorts.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from clinfuse.core.errors import DataError
from clinfuse.methods.tunsr.config import Constraint

__all__ = [
    "Adjacency",
    "Candidates",
    "Edges",
    "Nodes",
    "attach_children",
    "candidate_edges",
    "expand",
    "gumbel_noise",
    "inverse_relation",
    "root_nodes",
    "segment_topk",
]


_TIME_SPAN = 1 << 32
"""Stride of the ``head * span + time`` keys that locate a time window in the CSR."""


class Adjacency(NamedTuple):
    """Out-edges grouped by head (CSR), inverse edges included, sorted by time within a head."""

    indptr: Tensor
    """``(E + 1,)`` int64; the out-edges of entity ``e`` are ``indptr[e]:indptr[e + 1]``."""
    rel: Tensor
    """``(M,)`` int64 relation of each edge, in ``[0, 2R)``."""
    tail: Tensor
    """``(M,)`` int64 tail entity of each edge."""
    time: Tensor
    """``(M,)`` int64 timestamp index of each edge (0 in static KGs)."""
    key: Tensor
    """``(M,)`` int64 ``head * 2**32 + time``, ascending: the edges of a head within a time
    window are one run, found by binary search (derived once with the CSR, not per step)."""

    @staticmethod
    def time_keys(indptr: Tensor, time: Tensor) -> Tensor:
        """The :attr:`key` of a CSR sorted by ``(head, time)``."""
        deg = indptr[1:] - indptr[:-1]
        head = torch.repeat_interleave(torch.arange(len(deg), device=deg.device), deg)
        return head * _TIME_SPAN + time

    @classmethod
    def from_triples(cls, triples: np.ndarray | Tensor, n_entities: int) -> Adjacency:
        """Build the CSR from ``(M, 4)`` rows ``[h, r, t, time]`` (add inverses beforehand).

        Example:
            >>> adj = Adjacency.from_triples(torch.tensor([[0, 0, 1, 0], [1, 1, 0, 0]]), 3)
            >>> adj.indptr.tolist(), adj.tail.tolist()
            ([0, 1, 2, 2], [1, 0])
        """
        t = torch.as_tensor(np.asarray(triples) if not isinstance(triples, Tensor) else triples)
        t = t.to(torch.int64).reshape(-1, 4)
        if len(t) and (int(t[:, [0, 2]].min()) < 0 or int(t[:, [0, 2]].max()) >= n_entities):
            raise DataError(
                "triples refer to entities outside the entity table",
                expected=f"entity ids in [0, {n_entities})",
                found=f"ids in [{int(t[:, [0, 2]].min())}, {int(t[:, [0, 2]].max())}]",
                fix="build the adjacency with the KG's n_entities",
            )
        # sort by (head, time): stable sort on time, then on head
        t = t[torch.argsort(t[:, 3], stable=True)]
        t = t[torch.argsort(t[:, 0], stable=True)]
        counts = torch.bincount(t[:, 0], minlength=n_entities)
        indptr = torch.zeros(n_entities + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(counts, 0)
        key = t[:, 0] * _TIME_SPAN + t[:, 3]
        return cls(indptr, t[:, 1].contiguous(), t[:, 2].contiguous(), t[:, 3].contiguous(), key)

    @classmethod
    def coerce(cls, graph: Any, device: torch.device | str | None = None) -> Adjacency:
        """An :class:`Adjacency` from anything with ``indptr``, ``rel``, ``tail``, ``time``.

        Accepts numpy or torch arrays (e.g. ``clinfuse.methods.tunsr.data.CSR``) and moves them
        to ``device``; an :class:`Adjacency` already there is returned as is. The :attr:`key`
        is derived when ``graph`` has none.
        """
        fields = []
        for name in ("indptr", "rel", "tail", "time"):
            value = getattr(graph, name, None)
            if value is None:
                raise DataError(
                    "the reasoning graph needs a CSR adjacency",
                    expected="an object with indptr, rel, tail, time (Adjacency or data.CSR)",
                    found=type(graph).__name__,
                    fix="pass Adjacency.from_triples(add_inverse(facts, R), n_entities)",
                )
            fields.append(torch.as_tensor(value).to(device=device, dtype=torch.int64))
        key = getattr(graph, "key", None)
        if key is None:
            key = cls.time_keys(fields[0], fields[3])
        return cls(*fields, torch.as_tensor(key).to(device=device, dtype=torch.int64))

    @property
    def n_entities(self) -> int:
        """Entities the CSR indexes."""
        return len(self.indptr) - 1


class Nodes(NamedTuple):
    """The node table of one step, sorted by ``(query, entity, time)``."""

    query: Tensor
    """``(N,)`` int64 query index in the batch."""
    entity: Tensor
    """``(N,)`` int64 entity id."""
    time: Tensor
    """``(N,)`` int64 timestamp index."""


class Candidates(NamedTuple):
    """Edges leaving the nodes of one step, before pruning and deduplication of children."""

    query: Tensor
    """``(C,)`` int64 query index."""
    parent: Tensor
    """``(C,)`` int64 index into the parent step's :class:`Nodes`."""
    rel: Tensor
    """``(C,)`` int64 relation; ``2R`` is the self-loop."""
    entity: Tensor
    """``(C,)`` int64 child entity."""
    time: Tensor
    """``(C,)`` int64 child time (the edge time; the parent time for self-loops)."""

    def select(self, index: Tensor) -> Candidates:
        """The candidates at ``index`` (a LongTensor or bool mask)."""
        if index.dtype == torch.bool:
            index = torch.nonzero(index).squeeze(1)
        return Candidates(*(take(f, index) for f in self))


class Edges(NamedTuple):
    """The edges of one step with their children attached to the next node table."""

    query: Tensor
    """``(C,)`` int64 query index."""
    parent: Tensor
    """``(C,)`` int64 index into the parent step's :class:`Nodes`."""
    rel: Tensor
    """``(C,)`` int64 relation; ``2R`` is the self-loop."""
    child: Tensor
    """``(C,)`` int64 index into this step's :class:`Nodes`."""
    entity: Tensor
    """``(C,)`` int64 child entity."""
    time: Tensor
    """``(C,)`` int64 child time."""


def inverse_relation(rel: Tensor, n_relations: int) -> Tensor:
    """The inverse of each relation id in ``[0, 2R)``: ``r + R`` for originals, ``r - R`` else."""
    return (rel + n_relations) % (2 * n_relations)


def root_nodes(queries: Tensor, constraint: Constraint) -> Nodes:
    """Step 0: one node per query, the query entity, at time ``t_q`` (``monotone``: time 0).

    Shape:
        queries: ``(B, 4)`` int64 ``[e_q, r_q, answer, t_q]``. Output: ``B`` nodes.
    """
    b = len(queries)
    time = queries[:, 3] if constraint != "monotone" else torch.zeros_like(queries[:, 3])
    return Nodes(torch.arange(b, device=queries.device), queries[:, 0].clone(), time.clone())


def take(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` along dim 0 via :func:`torch.index_select`: faster on CPU than advanced
    indexing, and its backward (``index_add``) several times faster than ``index_put``."""
    return x.index_select(0, index)


def segment_topk(key: Tensor, segment: Tensor, k: int, n_segments: int) -> Tensor:
    """Indices (increasing) of the ``k`` largest finite ``key`` values within each segment,
    plus every entry whose key is ``+inf`` (kept whatever ``k``; ``-inf`` is never kept).

    Equal keys keep the earlier entry of the segment, so a segment's choice does not depend
    on the other segments. Segments of similar length go through one padded matrix; skewed
    ones (a hub entity of a temporal graph has thousands of edges) through two stable sorts,
    with no padding to the longest segment.

    Shape:
        key, segment: ``(C,)``; ``segment`` int64 in ``[0, n_segments)``. Output: ``(C',)`` int64.

    Example:
        >>> segment_topk(torch.tensor([.1, .9, .5, .3, .2]), torch.tensor([0, 0, 0, 1, 1]), 2, 2)
        tensor([1, 2, 3, 4])
        >>> inf = float("inf")
        >>> segment_topk(torch.tensor([.1, inf, .5, .3, .2]), torch.tensor([0, 0, 0, 1, 1]), 1, 2)
        tensor([1, 2, 3])
    """
    if len(key) == 0:
        return torch.zeros(0, dtype=torch.int64, device=key.device)
    idx_f = torch.nonzero(torch.isfinite(key)).squeeze(1)
    seg_f = take(segment, idx_f)
    counts = torch.bincount(seg_f, minlength=n_segments)
    chosen = torch.nonzero(key == float("inf")).squeeze(1)
    width = int(counts.max()) if len(counts) else 0
    if width == 0:
        pass
    elif n_segments * width <= 4 * len(idx_f):
        chosen = torch.cat([chosen, _topk_padded(key, idx_f, seg_f, counts, k, n_segments)])
    else:
        chosen = torch.cat([chosen, _topk_sorted(key, idx_f, seg_f, counts, k, n_segments)])
    return torch.sort(chosen).values


def _topk_padded(
    key: Tensor, idx_f: Tensor, seg_f: Tensor, counts: Tensor, k: int, n_segments: int
) -> Tensor:
    """Segment top-k through one ``(segments, longest)`` matrix padded with ``-inf`` and cut
    by one :func:`torch.topk` along rows (fast when segments are of similar length)."""
    if len(seg_f) > 1 and bool((seg_f[1:] < seg_f[:-1]).any()):
        order = torch.argsort(seg_f, stable=True)
        idx_f, seg_f = take(idx_f, order), take(seg_f, order)
    starts = torch.cumsum(counts, 0) - counts
    col = torch.arange(len(idx_f), device=key.device) - take(starts, seg_f)
    width = int(counts.max())
    table = torch.full((n_segments, width), float("-inf"), dtype=torch.float64, device=key.device)
    # minus 1e-9 per column: equal keys keep the earlier entry, as the sorted path does
    table[seg_f, col] = take(key, idx_f).double() - 1e-9 * col.double()
    slot = torch.full((n_segments, width), -1, dtype=torch.int64, device=key.device)
    slot[seg_f, col] = idx_f
    top = torch.topk(table, min(k, width), dim=1).indices
    picked = slot.gather(1, top).reshape(-1)
    return picked[picked >= 0]


def _topk_sorted(
    key: Tensor, idx_f: Tensor, seg_f: Tensor, counts: Tensor, k: int, n_segments: int
) -> Tensor:
    """Segment top-k by two stable sorts (key, then segment): no padding, for skewed
    segment lengths. Segments with at most ``k`` entries are kept whole without sorting."""
    big = take(counts, seg_f) > k
    idx_b, seg_b = idx_f[big], seg_f[big]
    by_key = torch.sort(take(key, idx_b), descending=True, stable=True).indices
    idx_b, seg_b = take(idx_b, by_key), take(seg_b, by_key)
    by_seg = torch.sort(seg_b, stable=True).indices
    idx_b, seg_b = take(idx_b, by_seg), take(seg_b, by_seg)
    counts_b = torch.bincount(seg_b, minlength=n_segments)
    starts = torch.cumsum(counts_b, 0) - counts_b
    rank = torch.arange(len(idx_b), device=key.device) - take(starts, seg_b)
    return torch.cat([idx_f[~big], idx_b[rank < k]])


def _gather_out_edges(
    nodes: Nodes, adj: Adjacency, constraint: Constraint = "any", t_query: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(parent, edge)`` index pairs of the out-edges of every node that ``constraint``
    admits (vectorised CSR gather).

    The CSR is sorted by ``(head, time)``, so the edges of an entity with time in a window
    ``[lo, hi)`` are one contiguous run, found by binary search on ``head * 2**32 + time``:
    only admissible edges are gathered (``before_query``: time < t_q; ``monotone``:
    t_parent <= time < t_q), in CSR order. ``t_query`` holds each node's query time.
    """
    if constraint not in ("any", "before_query", "monotone"):
        raise ValueError(f"unknown temporal constraint {constraint!r}")
    start = take(adj.indptr, nodes.entity)
    end = take(adj.indptr, nodes.entity + 1)
    if constraint != "any" and len(adj.time):
        if t_query is None:
            raise ValueError(f"constraint {constraint!r} needs the query time of every node")
        base = nodes.entity * _TIME_SPAN
        end = torch.minimum(end, torch.searchsorted(adj.key, base + t_query))
        if constraint == "monotone":
            start = torch.maximum(start, torch.searchsorted(adj.key, base + nodes.time))
    deg = (end - start).clamp_min(0)
    parent = torch.repeat_interleave(torch.arange(len(deg), device=deg.device), deg)
    offset = torch.cumsum(deg, 0) - deg
    within = torch.arange(len(parent), device=deg.device) - take(offset, parent)
    return parent, take(start, parent) + within


def candidate_edges(
    nodes: Nodes,
    adj: Adjacency,
    queries: Tensor,
    *,
    n_relations: int,
    constraint: Constraint = "any",
    exclude_query: bool = False,
    sample_nodes: int | None = None,
    sample_temperature: float = 0.5,
    generator: torch.Generator | None = None,
) -> Candidates:
    r"""Every admissible edge leaving ``nodes``, plus one self-loop per node (see module doc).

    Real edges come first, in node order and CSR order within a node; the ``N`` self-loops
    (relation ``2R``) follow in node order.

    Shape:
        queries: ``(B, 4)`` int64 ``[e_q, r_q, answer, t_q]``. Output: ``C >= N`` candidates.
    """
    parent, edge = _gather_out_edges(nodes, adj, constraint, take(queries[:, 3], nodes.query))
    query = take(nodes.query, parent)
    rel, tail, time = take(adj.rel, edge), take(adj.tail, edge), take(adj.time, edge)
    if exclude_query:  # the gather already applied the temporal constraint
        q = take(queries, query)
        head = take(nodes.entity, parent)
        same_time = time == q[:, 3]
        forward = (head == q[:, 0]) & (rel == q[:, 1]) & (tail == q[:, 2])
        backward = (head == q[:, 2]) & (rel == inverse_relation(q[:, 1], n_relations))
        backward &= tail == q[:, 0]
        kept = torch.nonzero(~(same_time & (forward | backward))).squeeze(1)
        parent, query, edge, rel, tail, time = (
            take(x, kept) for x in (parent, query, edge, rel, tail, time)
        )
    if sample_nodes is not None and len(parent):
        if generator is None:  # evaluation: the same draw for a (query, edge) in any expansion
            gumbel = _gumbel(hashed_uniform(take(queries[:, [0, 1, 3]], query), edge))
        else:
            gumbel = gumbel_noise(len(parent), generator, parent.device)
        logits = sample_temperature * (time - queries[query, 3]).to(gumbel.dtype)
        chosen = segment_topk(logits + gumbel, parent, sample_nodes, len(nodes.entity))
        parent, query, rel, tail, time = (take(x, chosen) for x in (parent, query, rel, tail, time))
    n = len(nodes.entity)
    loops = torch.arange(n, device=parent.device)
    self_rel = torch.full((n,), 2 * n_relations, dtype=torch.int64, device=parent.device)
    return Candidates(
        torch.cat([query, nodes.query]),
        torch.cat([parent, loops]),
        torch.cat([rel, self_rel]),
        torch.cat([tail, nodes.entity]),
        torch.cat([time, nodes.time]),
    )


def gumbel_noise(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` standard Gumbel draws on ``device``, drawn from ``generator`` (on its own device)."""
    gen_device = generator.device if generator is not None else "cpu"
    u = torch.rand(n, generator=generator, device=gen_device)
    return _gumbel(u.to(device))


def _gumbel(u: Tensor) -> Tensor:
    return -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))


_P = 2_147_483_647  # 2^31 - 1: products of two residues stay below 2^62 (no int64 overflow)
_MULT = (48_271, 69_621, 16_807, 39_373, 75_731)


def hashed_uniform(query: Tensor, edge: Tensor) -> Tensor:
    """A uniform number in ``(0, 1)`` that is a fixed function of a query's ``(e_q, r_q, t_q)``
    row and an edge's CSR index: alternate affine and squaring steps modulo the prime
    :math:`2^{31}-1`. Evaluation samples neighbours with it, so a node of a query draws the
    same neighbours in every expansion that reaches it (pruned or full, any batch), and
    predictions do not depend on a random state.

    Shape:
        query: ``(K, 3)`` int64; edge: ``(K,)`` int64. Output: ``(K,)`` float64.

    Example:
        >>> q = torch.tensor([[3, 1, 7], [3, 1, 7], [4, 1, 7]])
        >>> u = hashed_uniform(q, torch.tensor([10, 10, 10]))
        >>> bool(u[0] == u[1]), bool(u[0] != u[2]), bool(((u > 0) & (u < 1)).all())
        (True, True, True)
    """
    parts = [query[:, 0], query[:, 1], query[:, 2], edge % _P, edge // _P]
    h = torch.full_like(edge, 12_345)
    for a, x in zip(_MULT, parts, strict=True):
        h = (h * a + (x % _P) + 1) % _P
        h = (h * h + 7_919) % _P
    return (h.double() + 0.5) / _P


def attach_children(cand: Candidates, n_entities: int) -> tuple[Edges, Nodes]:
    """Deduplicate the children of ``cand`` per query into the next node table.

    Nodes are keyed by :math:`(b \\cdot E + e) \\cdot T + t` and made unique with
    :func:`torch.unique`, so the table comes out sorted by ``(query, entity, time)``.
    """
    n_times = int(cand.time.max()) + 1 if len(cand.time) else 1
    key = (cand.query * n_entities + cand.entity) * n_times + cand.time
    uniq, child = torch.unique(key, return_inverse=True)
    nodes = Nodes(uniq // (n_entities * n_times), (uniq // n_times) % n_entities, uniq % n_times)
    return Edges(cand.query, cand.parent, cand.rel, child, cand.entity, cand.time), nodes


def expand(
    queries: Tensor,
    adj: Adjacency,
    n_layers: int,
    *,
    n_relations: int,
    constraint: Constraint = "any",
    exclude_query: bool = False,
    sample_nodes: int | None = None,
    sample_temperature: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[list[Nodes], list[Edges]]:
    """Expand ``n_layers`` steps without attention pruning.

    Returns the node tables of steps ``0..L`` and the edges of steps ``1..L``;
    ``edges[l].parent`` indexes ``nodes[l]`` and ``edges[l].child`` indexes ``nodes[l + 1]``.
    """
    nodes = [root_nodes(queries, constraint)]
    steps: list[Edges] = []
    for _ in range(n_layers):
        cand = candidate_edges(
            nodes[-1],
            adj,
            queries,
            n_relations=n_relations,
            constraint=constraint,
            exclude_query=exclude_query,
            sample_nodes=sample_nodes,
            sample_temperature=sample_temperature,
            generator=generator,
        )
        edges, new = attach_children(cand, adj.n_entities)
        steps.append(edges)
        nodes.append(new)
    return nodes, steps
