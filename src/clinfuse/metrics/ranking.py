r"""Filtered link-prediction ranks and metrics (MRR, MR, Hits@k) on torch tensors, CPU or CUDA.

A query asks for the tail of ``(h, r, ?)`` (or ``(h, r, ?, time)``) and a model scores every
entity, higher = better. The *filtered* rank of the true tail ``t`` ignores the other known
answers of the same query (pass their mask); the target itself is never removed.

Ties are reported three ways, as PyKEEN's ``pykeen.evaluation.ranks.Ranks`` does:

- optimistic :math:`1 + \#\{e \text{ kept}: s_e > s_t\}` (ties placed behind the target);
- pessimistic :math:`\#\{e \text{ kept}: s_e \ge s_t\}` (ties in front, target counted once);
- realistic, their mean: the expected rank when ties are broken uniformly at random. It equals
  RED-GNN's ``rankdata(-s, 'average')`` rank inside the tie block. **Report realistic**, with
  the other two alongside: a model that scores unreached entities all 0 (path GNNs, rules) gets
  rank 1 under the optimistic rule for an unreached answer (the TECHS evaluation bug).

Both directions are handled through inverse relations: head prediction of ``(h, r, t)`` is the
tail query ``(t, r + R, ?)`` with ``R`` the number of relations. :func:`both_directions` stacks
the ``N`` tail queries and the ``N`` inverse queries; build :class:`FilterIndex` from
``both_directions(all_true_triples, R)`` (train + valid + test) so both kinds are filtered.

Temporal KGs use the time-aware filter (``FilterIndex(..., time_aware=True)``): only answers
of the same ``(h, r, time)`` are removed, answers at other timestamps stay competitors.

:func:`sampled_ranks` is the GraIL-style inductive protocol (rank against ``n`` sampled
negatives, e.g. "Hits@10 (50 sample)"). It is **not comparable** with full ranking and always
gives better numbers; :func:`summarize` labels its keys ``"50-negative.mrr"`` etc.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from clinfuse.core.errors import DataError

__all__ = [
    "RANK_TYPES",
    "FilterIndex",
    "RankDict",
    "both_directions",
    "filtered_ranks",
    "rank_bounds",
    "ranking_metrics",
    "sampled_ranks",
    "summarize",
]

RANK_TYPES: tuple[str, ...] = ("optimistic", "pessimistic", "realistic")
"""The three tie rules, in the order of :func:`summarize`'s prefixed keys."""


class RankDict(dict[str, Tensor]):
    """``{"optimistic", "pessimistic", "realistic"} -> (B,)`` ranks, and the protocol behind them.

    ``protocol`` is ``"full"`` for :func:`filtered_ranks` and ``"{n}-negative"`` for
    :func:`sampled_ranks`; :func:`summarize` prefixes the keys of any protocol but ``"full"``.
    A plain ``dict`` of the same keys is treated as ``"full"``.
    """

    protocol: str

    def __init__(self, ranks: Mapping[str, Tensor], protocol: str = "full") -> None:
        super().__init__(ranks)
        self.protocol = protocol


# ---------------------------------------------------------------------------------------------
# validation


def _check_scores_targets(
    scores: Tensor, targets: Tensor, filter_mask: Tensor | None, what: str
) -> Tensor:
    """Validate the shapes, dtypes and ranges; return ``targets`` as int64 on the scores' device."""
    if not isinstance(scores, Tensor) or scores.ndim != 2 or not scores.is_floating_point():
        raise DataError(
            f"{what}: scores must be a 2-D float tensor",
            expected="scores of shape (B, n_entities), floating point, higher = better",
            found=_describe(scores),
            fix="score every entity for every query, e.g. model(queries) -> (B, E)",
        )
    b, e = scores.shape
    if not isinstance(targets, Tensor) or targets.ndim != 1 or targets.shape[0] != b:
        raise DataError(
            f"{what}: targets do not match the scores",
            expected=f"targets of shape ({b},), one entity id per query",
            found=_describe(targets),
            fix="pass queries[:, 2] (the true tails), one per row of scores",
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise DataError(
            f"{what}: targets must be integer entity ids",
            expected="an integer tensor (int64)",
            found=f"dtype {targets.dtype}",
            fix="convert with targets.long()",
        )
    if b > 0:
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= e:
            raise DataError(
                f"{what}: target entity id out of range",
                expected=f"ids in [0, {e}) (scores have {e} entity columns)",
                found=f"min {lo}, max {hi}",
                fix="score all entities, and map the targets with the same entity-id map",
            )
        if bool(torch.isnan(scores).any()):
            raise DataError(
                f"{what}: scores contain NaN",
                expected="finite scores, or -inf for entities a model cannot reach",
                found=f"{int(torch.isnan(scores).sum())} NaN value(s)",
                fix="check the model for divergence; use -inf (not NaN) to mark unreachable",
            )
    if filter_mask is not None:
        if not isinstance(filter_mask, Tensor) or filter_mask.shape != scores.shape:
            raise DataError(
                f"{what}: filter_mask does not match the scores",
                expected=f"a bool tensor of shape {tuple(scores.shape)}",
                found=_describe(filter_mask),
                fix="build it with FilterIndex.mask(queries) for the same queries",
            )
        if filter_mask.dtype != torch.bool:
            raise DataError(
                f"{what}: filter_mask must be boolean",
                expected="dtype torch.bool (True = another known answer, removed)",
                found=f"dtype {filter_mask.dtype}",
                fix="pass mask.bool()",
            )
    return targets.to(device=scores.device, dtype=torch.long)


def _describe(x: object) -> str:
    if isinstance(x, Tensor | np.ndarray):
        return f"{type(x).__name__} of shape {tuple(x.shape)}, dtype {x.dtype}"
    return f"{type(x).__name__}"


def _as_long_2d(x: np.ndarray | Tensor, widths: tuple[int, ...], what: str, hint: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2 or t.shape[1] not in widths or t.is_floating_point() or t.dtype == torch.bool:
        raise DataError(
            f"{what}: wrong shape or dtype",
            expected=f"an integer array of shape (N, {'|'.join(map(str, widths))}) {hint}",
            found=_describe(x),
            fix="pass integer ids, one row per triple",
        )
    t = t.long()
    if t.numel() and int(t.min()) < 0:
        raise DataError(
            f"{what}: negative id",
            expected="ids >= 0",
            found=f"min {int(t.min())}",
            fix="map names to ids with a 0-based id map (RE-Net's -1 column is not a time)",
        )
    return t


# ---------------------------------------------------------------------------------------------
# ranks


def rank_bounds(
    scores: Tensor, targets: Tensor, filter_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""Filtered optimistic and pessimistic ranks of the targets.

    With :math:`K_i` the entities kept for query :math:`i` (not marked in ``filter_mask``, the
    target always kept) and :math:`s = ` ``scores[i]``, :math:`t = ` ``targets[i]``:

    .. math::
        r^{opt}_i = 1 + |\{e \in K_i : s_e > s_t\}|, \qquad
        r^{pess}_i = |\{e \in K_i : s_e \ge s_t\}|.

    ``-inf`` scores are ordinary (worst) scores, so an unreached target ties with every other
    unreached entity; NaN scores raise.

    Shape:
        scores: ``(B, E)`` float; targets: ``(B,)`` int; filter_mask: ``(B, E)`` bool, True marks
        the *other* known answers to remove. Output: two ``(B,)`` float64 tensors, 1-based.

    Example:
        >>> s = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.1]])
        >>> rank_bounds(s, torch.tensor([2]))
        (tensor([2.], dtype=torch.float64), tensor([4.], dtype=torch.float64))
        >>> rank_bounds(s, torch.tensor([2]), torch.tensor([[True, False, True, False, False]]))
        (tensor([1.], dtype=torch.float64), tensor([3.], dtype=torch.float64))
    """
    targets = _check_scores_targets(scores, targets, filter_mask, "rank_bounds")
    true = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    greater = scores > true
    at_least = scores >= true
    if filter_mask is not None:
        keep = ~filter_mask.to(scores.device)
        greater &= keep
        at_least &= keep
    # the target is never filtered: count it exactly once in the pessimistic rank
    at_least.scatter_(1, targets.unsqueeze(1), True)
    optimistic = greater.sum(dim=1, dtype=torch.float64) + 1.0
    pessimistic = at_least.sum(dim=1, dtype=torch.float64)
    return optimistic, pessimistic


def filtered_ranks(scores: Tensor, targets: Tensor, filter_mask: Tensor | None = None) -> RankDict:
    r"""Optimistic, pessimistic and realistic filtered ranks (see :func:`rank_bounds`).

    Realistic is PyKEEN's definition, :math:`(r^{opt} + r^{pess})/2`: the expected rank over
    uniformly random orders of the entities tied with the target.

    Shape:
        as :func:`rank_bounds`. Output: ``{"optimistic", "pessimistic", "realistic"}`` -> ``(B,)``
        float64, in a :class:`RankDict` with ``protocol="full"``.

    Example:
        >>> r = filtered_ranks(torch.zeros(1, 5), torch.tensor([0]))
        >>> r["optimistic"], r["pessimistic"], r["realistic"]
        (tensor([1.], dtype=torch.float64), tensor([5.], dtype=torch.float64), tensor([3.], dtype=torch.float64))
    """  # noqa: E501
    optimistic, pessimistic = rank_bounds(scores, targets, filter_mask)
    return RankDict(
        {
            "optimistic": optimistic,
            "pessimistic": pessimistic,
            "realistic": (optimistic + pessimistic) * 0.5,
        }
    )


def ranking_metrics(ranks: Tensor, ks: Sequence[int] = (1, 3, 10)) -> dict[str, float]:
    r"""MRR :math:`\frac1B\sum_i 1/r_i`, MR :math:`\frac1B\sum_i r_i` and Hits@k
    :math:`\frac1B\sum_i 1[r_i \le k]`, computed in float64 (PyKEEN's definitions, also for the
    fractional realistic ranks).

    Shape:
        ranks: ``(B,)``, values >= 1. Output: ``{"mrr", "mr", "hits@k" for k in ks}`` floats.

    Example:
        >>> ranking_metrics(torch.tensor([1.0, 2.0, 4.0]), ks=(1, 3))
        {'mrr': 0.5833333333333334, 'mr': 2.3333333333333335, 'hits@1': 0.3333333333333333, 'hits@3': 0.6666666666666666}
    """  # noqa: E501
    if not isinstance(ranks, Tensor) or ranks.ndim != 1 or ranks.numel() == 0:
        raise DataError(
            "ranking_metrics: ranks must be a non-empty 1-D tensor",
            expected="ranks of shape (B,), B >= 1",
            found=_describe(ranks),
            fix="pass one of the tensors returned by filtered_ranks, e.g. ranks['realistic']",
        )
    r = ranks.detach().to(torch.float64)
    if not bool(torch.isfinite(r).all()) or float(r.min()) < 1.0:
        raise DataError(
            "ranking_metrics: ranks must be finite and >= 1 (1-based)",
            expected="1-based ranks",
            found=f"min {float(r.min())}, {int((~torch.isfinite(r)).sum())} non-finite",
            fix="ranks are 1-based; add 1 to 0-based positions",
        )
    bad_k = [k for k in ks if not isinstance(k, int | np.integer) or k < 1]
    if bad_k:
        raise DataError(
            "ranking_metrics: Hits@k needs positive integer k",
            expected="ks like (1, 3, 10)",
            found=f"{bad_k}",
            fix="drop the non-positive or non-integer values",
        )
    out = {"mrr": float(r.reciprocal().mean()), "mr": float(r.mean())}
    for k in ks:
        out[f"hits@{int(k)}"] = float((r <= k).to(torch.float64).mean())
    return out


def summarize(
    rank_dict: Mapping[str, Tensor], ks: Sequence[int] = (1, 3, 10), *, label: str | None = None
) -> dict[str, float]:
    """Metrics for all three tie rules: ``"mrr"``, ``"hits@10"``... (realistic) and
    ``"optimistic.mrr"``, ``"pessimistic.hits@1"``, ``"realistic.mr"``...

    Keys get the prefix ``"{label}."`` when ``label`` (default: ``rank_dict.protocol`` of a
    :class:`RankDict`) is not ``"full"``: results of :func:`sampled_ranks` come out as
    ``"50-negative.mrr"``, ``"50-negative.optimistic.hits@10"``, never as a bare ``"mrr"``.

    Shape:
        rank_dict: ``{"optimistic", "pessimistic", "realistic"}`` -> ``(B,)``. Output: floats.

    Example:
        >>> m = summarize(filtered_ranks(torch.tensor([[0.5, 0.5]]), torch.tensor([1])), ks=(1,))
        >>> m["mrr"], m["optimistic.mrr"], m["pessimistic.hits@1"]
        (0.6666666666666666, 1.0, 0.0)
    """
    missing = [t for t in RANK_TYPES if t not in rank_dict]
    if missing:
        raise DataError(
            "summarize: rank types missing",
            expected=f"keys {list(RANK_TYPES)}",
            found=f"keys {sorted(rank_dict)}",
            fix="pass the dict returned by filtered_ranks or sampled_ranks",
        )
    if label is None:
        label = getattr(rank_dict, "protocol", "full")
    prefix = "" if label == "full" else f"{label}."
    out: dict[str, float] = {}
    per_type = {t: ranking_metrics(rank_dict[t], ks) for t in RANK_TYPES}
    for name, value in per_type["realistic"].items():
        out[f"{prefix}{name}"] = value
    for t in RANK_TYPES:
        for name, value in per_type[t].items():
            out[f"{prefix}{t}.{name}"] = value
    return out


# ---------------------------------------------------------------------------------------------
# queries and filters


def both_directions(triples: np.ndarray | Tensor, n_relations: int) -> Tensor:
    """Tail queries followed by head queries as inverse-relation tail queries.

    ``(h, r, t[, time])`` -> rows ``(h, r, t[, time])`` then ``(t, r + n_relations, h[, time])``:
    head prediction of ``(h, r, t)`` is ``(t, r + R, ?)``. Evaluate the ``2N`` queries with
    column 2 as the target.

    Shape:
        triples: ``(N, 3)`` or ``(N, 4)`` int. Output: ``(2N, 3|4)`` int64.

    Example:
        >>> both_directions(torch.tensor([[0, 1, 2]]), n_relations=5).tolist()
        [[0, 1, 2], [2, 6, 0]]
    """
    t = _as_long_2d(triples, (3, 4), "both_directions", "[h, r, t(, time)]")
    if t.numel() and int(t[:, 1].max()) >= n_relations:
        raise DataError(
            "both_directions: relation id >= n_relations",
            expected=f"relation ids in [0, {n_relations})",
            found=f"max relation id {int(t[:, 1].max())}",
            fix="pass the number of original relations (before adding inverses)",
        )
    inv = t.clone()
    inv[:, 0], inv[:, 2] = t[:, 2], t[:, 0]
    inv[:, 1] = t[:, 1] + n_relations
    return torch.cat([t, inv], dim=0)


class FilterIndex:
    """Known answers for filtered ranking: (head, rel) -> tails, or (head, rel, time) -> tails when
    time_aware.

    Stored CSR-like: sorted unique integer keys (``h * R + r``, or ``(h * R + r) * T + time``),
    ``offsets`` into one array of deduplicated tails. Build it from all true triples (train +
    valid + test), passed through :func:`both_directions` for head prediction.

    Example:
        >>> idx = FilterIndex.from_triples(torch.tensor([[0, 0, 1], [0, 0, 2], [1, 0, 2]]), 3)
        >>> idx.mask(torch.tensor([[0, 0, 1], [2, 0, 0]])).tolist()
        [[False, True, True], [False, False, False]]
    """

    def __init__(
        self,
        keys: Tensor,
        offsets: Tensor,
        tails: Tensor,
        n_entities: int,
        n_relations: int,
        n_times: int | None,
    ) -> None:
        self.keys = keys
        """``(K,)`` sorted unique query keys."""
        self.offsets = offsets
        """``(K + 1,)`` start of each key's tails in ``tails``."""
        self.tails = tails
        """``(M,)`` tails, grouped by key and sorted inside each group."""
        self.n_entities = n_entities
        self.n_relations = n_relations
        """One more than the largest relation id indexed (inverses included if given)."""
        self.n_times = n_times
        """One more than the largest timestamp indexed; None for a static index."""

    @property
    def time_aware(self) -> bool:
        return self.n_times is not None

    def __len__(self) -> int:
        """Number of distinct queries with at least one known answer."""
        return int(self.keys.numel())

    def to(self, device: torch.device | str) -> FilterIndex:
        """A copy with its tensors on ``device`` (so :meth:`mask` runs there)."""
        return FilterIndex(
            self.keys.to(device),
            self.offsets.to(device),
            self.tails.to(device),
            self.n_entities,
            self.n_relations,
            self.n_times,
        )

    @classmethod
    def from_triples(
        cls, triples: np.ndarray | Tensor, n_entities: int, *, time_aware: bool = False
    ) -> FilterIndex:
        """Index ``(N, 3)`` ``[h, r, t]`` or ``(N, 4)`` ``[h, r, t, time]`` triples.

        With ``time_aware=False`` a 4th column is ignored (the static filter on temporal data).
        """
        t = _as_long_2d(triples, (3, 4), "FilterIndex.from_triples", "[h, r, t(, time)]")
        if time_aware and t.shape[1] != 4:
            raise DataError(
                "FilterIndex.from_triples: time_aware=True needs a time column",
                expected="triples of shape (N, 4): [h, r, t, time]",
                found=f"shape {tuple(t.shape)}",
                fix="pass the timestamp index as the 4th column, or time_aware=False",
            )
        if t.numel() and int(t[:, [0, 2]].max()) >= n_entities:
            raise DataError(
                "FilterIndex.from_triples: entity id >= n_entities",
                expected=f"entity ids in [0, {n_entities})",
                found=f"max entity id {int(t[:, [0, 2]].max())}",
                fix="pass the number of entities of the id map (all splits)",
            )
        n_rel = int(t[:, 1].max()) + 1 if t.numel() else 0
        n_times = (int(t[:, 3].max()) + 1 if t.numel() else 0) if time_aware else None
        key_space = n_entities * max(n_rel, 1) * (max(n_times, 1) if n_times is not None else 1)
        if key_space * n_entities >= 2**62:
            raise DataError(
                "FilterIndex.from_triples: too many (entity, relation, time) combinations",
                expected="n_entities^2 * n_relations * n_times < 2^62",
                found=f"{n_entities} entities, {n_rel} relations, {n_times} times",
                fix="remap ids densely (0..n-1) before indexing",
            )
        keys = cls._key(t, n_rel, n_times)
        pair = torch.unique(keys * n_entities + t[:, 2])  # sorted by key, then tail; deduplicated
        pair_keys = torch.div(pair, n_entities, rounding_mode="floor")
        uniq, counts = torch.unique_consecutive(pair_keys, return_counts=True)
        offsets = torch.zeros(uniq.numel() + 1, dtype=torch.long)
        torch.cumsum(counts, dim=0, out=offsets[1:])
        return cls(uniq, offsets, pair - pair_keys * n_entities, n_entities, n_rel, n_times)

    @staticmethod
    def _key(t: Tensor, n_rel: int, n_times: int | None) -> Tensor:
        key = t[:, 0] * n_rel + t[:, 1]
        if n_times is not None:
            key = key * n_times + t[:, 3]
        return key

    def mask(self, queries: Tensor) -> Tensor:
        """Known tails of each query's ``(h, r)`` (or ``(h, r, time)``), the query's own tail
        included (:func:`rank_bounds` never removes the target).

        Queries with a relation, time or head never indexed get an empty row. On a static index a
        4th column is ignored.

        Shape:
            queries: ``(B, 3|4)`` int ``[h, r, t(, time)]``. Output: ``(B, E)`` bool on the queries'
            device.
        """
        widths = (4,) if self.time_aware else (3, 4)
        hint = "[h, r, t, time] (time-aware index)" if self.time_aware else "[h, r, t(, time)]"
        if not isinstance(queries, Tensor):
            queries = torch.as_tensor(queries)
        out_device = queries.device
        q = _as_long_2d(queries, widths, "FilterIndex.mask", hint).to(self.keys.device)
        b = q.shape[0]
        out = torch.zeros(b, self.n_entities, dtype=torch.bool, device=self.keys.device)
        if b == 0 or self.keys.numel() == 0:
            return out.to(out_device)
        valid = (q[:, 0] < self.n_entities) & (q[:, 1] < self.n_relations)
        if self.n_times is not None:
            valid &= q[:, 3] < self.n_times
        key = self._key(q, self.n_relations, self.n_times)
        pos = torch.searchsorted(self.keys, key).clamp_(max=self.keys.numel() - 1)
        found = valid & (self.keys[pos] == key)
        start = self.offsets[pos]
        count = torch.where(found, self.offsets[pos + 1] - start, torch.zeros_like(start))
        total = int(count.sum())
        if total == 0:
            return out.to(out_device)
        rows = torch.repeat_interleave(torch.arange(b, device=q.device), count, output_size=total)
        first = torch.cumsum(count, 0) - count  # position of each row's first tail in the output
        within = torch.arange(total, device=q.device) - torch.repeat_interleave(
            first, count, output_size=total
        )
        src = torch.repeat_interleave(start, count, output_size=total) + within
        out[rows, self.tails[src]] = True
        return out.to(out_device)


# ---------------------------------------------------------------------------------------------
# sampled protocol


def sampled_ranks(
    scores: Tensor,
    targets: Tensor,
    n_negatives: int = 50,
    *,
    filter_mask: Tensor | None = None,
    generator: torch.Generator,
) -> RankDict:
    """GraIL-style sampled ranks: the target against ``n_negatives`` random negatives.

    The negatives are drawn uniformly without replacement from the entities that are neither the
    target nor marked in ``filter_mask`` (other known answers). When fewer than ``n_negatives``
    such entities exist, all of them are used (the full filtered rank). PyKEEN's
    ``sample_negatives`` instead repeats the pool.

    **Not comparable with full ranking**: the rank lies in ``[1, n_negatives + 1]`` and is
    optimistic relative to ranking against all entities (GraIL, ConGLR and NBFNet's inductive
    "Hits@10 (50 sample)" use it; RED-GNN and AdaProp rank fully). The result is a
    :class:`RankDict` with ``protocol="{n_negatives}-negative"``, so :func:`summarize` labels its
    keys, e.g. ``"50-negative.hits@10"``.

    Shape:
        as :func:`rank_bounds`; ``generator`` may live on any device (the draw is made there and
        moved to the scores' device). Output: three ``(B,)`` float64 rank tensors.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> r = sampled_ranks(torch.arange(100.0)[None], torch.tensor([97]), 50, generator=g)
        >>> r.protocol, float(r["realistic"][0]) <= 3.0
        ('50-negative', True)
    """
    if isinstance(n_negatives, bool) or not isinstance(n_negatives, int) or n_negatives < 1:
        raise DataError(
            "sampled_ranks: n_negatives must be a positive integer",
            expected="e.g. 50 (GraIL protocol)",
            found=repr(n_negatives),
            fix="pass n_negatives=50",
        )
    targets = _check_scores_targets(scores, targets, filter_mask, "sampled_ranks")
    b, e = scores.shape
    # uniform keys; the n smallest keys among the pool are a uniform sample without replacement
    u = torch.rand(b, e, generator=generator, device=generator.device).to(scores.device)
    pool = torch.ones(b, e, dtype=torch.bool, device=scores.device)
    if filter_mask is not None:
        pool &= ~filter_mask.to(scores.device)
    pool.scatter_(1, targets.unsqueeze(1), False)
    u = torch.where(pool, u, torch.full_like(u, 2.0))  # outside the pool: never before a pool key
    k = min(n_negatives, e)
    picked = torch.topk(u, k, dim=1, largest=False).indices
    chosen = torch.zeros(b, e, dtype=torch.bool, device=scores.device)
    chosen.scatter_(1, picked, pool.gather(1, picked))
    ranks = filtered_ranks(scores, targets, ~chosen)  # the target is never removed
    return RankDict(ranks, protocol=f"{n_negatives}-negative")
