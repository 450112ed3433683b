r"""Horn rules for Tunsr: statistics, application, AnyBURL text and FARI rule induction.

A rule ``r_q(X,Y) <= r_1(X,A), r_2(A,B), ..., r_k(.,Y)`` is a
:class:`~clinfuse.methods.tunsr.data.Rule` with ``head = r_q`` and ``body = (r_1, ..., r_k)``.
Relation ids follow the Tunsr convention for a KG with ``R`` original relations: ``r < R`` is an
original relation, ``r + R`` its inverse (``r^{-1}(X,Y) := r(Y,X)``) and ``2R`` the self-loop
(identity, ``X = Y``).

Four parts, each usable without the others:

* **Statistics** (AMIE style, no model): with the boolean adjacency
  :math:`A_r \in \{0,1\}^{E\times E}`, :math:`A_{r+R} = A_r^\top`, :math:`A_{2R} = I`, the body
  of a rule holds on the pairs :math:`B = \mathbb{1}[A_{r_1} A_{r_2} \cdots A_{r_k} > 0]`, and

  .. math::
     \mathrm{support} = |B \wedge A_{r_q}|,\quad
     \mathrm{conf} = \frac{\mathrm{support}}{|B|},\quad
     \mathrm{hc} = \frac{\mathrm{support}}{|A_{r_q}|}.

  :func:`rule_stats` computes them with scipy.sparse products; :func:`apply_rules` scores the tails
  of queries ``(h, r_q, ?)`` by ``max`` or ``noisy-or`` over the rules of ``r_q`` whose body holds.
* **Text** in the AnyBURL / PyClause syntax: :func:`format_rule`, :func:`parse_rule`,
  :func:`write_rules` (AnyBURL rule-file lines ``num_pred\tsupport\tconfidence\trule``).
* **FARI (a), schema beam** (:func:`fari_schema`): scores bodies with the model's first-order state
  alone, :math:`g_0 = \mathrm{fol\_init}(r_q)`, :math:`g_i = \mathrm{GRU}(\mathbf{r}_i, g_{i-1})`,
  :math:`\mathrm{conf}(r_1..r_k) = \prod_i \sigma(w_\beta \cdot g_i)`, with a beam search.
* **FARI (b), instance paths** (:func:`fari_paths`): sums, per relation sequence, the attention
  products of the root-to-gold-answer paths left in the pruned reasoning graph (:class:`StepEdges`).

Rule lengths are small (at most the number of reasoning steps, 3 to 5), so the per-rule loops
below are loops over rules, never over entities.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, overload

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.tunsr.data import Rule

__all__ = [
    "FolModel",
    "RuleSet",
    "RuleStats",
    "StepEdges",
    "apply_rules",
    "fari_paths",
    "fari_schema",
    "format_rule",
    "parse_rule",
    "rule_stats",
    "threshold_rules",
    "write_rules",
]

log = logging.getLogger(__name__)

Aggregation = Literal["max", "noisy_or"]

# ----------------------------------------------------------------------------------------------
# Sparse adjacency and body groundings
# ----------------------------------------------------------------------------------------------


def _as_triples(triples: Tensor | np.ndarray, n_entities: int, n_relations: int) -> np.ndarray:
    """Validate ``(M, 3)`` or ``(M, 4)`` integer facts ``[h, r, t(, time)]``; return ``(M, 3)``.

    The time column, if any, is dropped: statistics are computed on the static projection.
    """
    arr = triples.detach().cpu().numpy() if isinstance(triples, Tensor) else np.asarray(triples)
    if arr.ndim != 2 or arr.shape[1] not in (3, 4):
        raise DataError(
            "triples have the wrong shape",
            expected="(M, 3) [h, r, t] or (M, 4) [h, r, t, time]",
            found=f"shape {tuple(arr.shape)}",
            fix="pass KG.facts (or a split of KG.queries)",
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            "triples must hold integer ids",
            expected="an integer array",
            found=f"dtype {arr.dtype}",
            fix="map names to ids first (KG loaders do this)",
        )
    arr = arr[:, :3].astype(np.int64, copy=False)
    if arr.size:
        ent = arr[:, [0, 2]]
        if ent.min() < 0 or ent.max() >= n_entities:
            raise DataError(
                "entity id out of range in triples",
                expected=f"ids in [0, {n_entities})",
                found=f"ids in [{ent.min()}, {ent.max()}]",
                fix="pass n_entities = KG.n_entities of the KG the triples come from",
            )
        rel = arr[:, 1]
        if rel.min() < 0 or rel.max() >= n_relations:
            raise DataError(
                "relation id out of range in triples",
                expected=f"original relation ids in [0, {n_relations}) (no inverse ids)",
                found=f"ids in [{rel.min()}, {rel.max()}]",
                fix="pass facts with original relations only and n_relations = KG.n_relations",
            )
    return arr


class _Adjacency:
    r"""Boolean CSR matrices :math:`A_r` (``(E, E)``, ``int64`` ones) with inverse and identity ids.

    ``matrix(r)`` returns :math:`A_r` for ``r < R``, :math:`A_{r-R}^\top` for ``R <= r < 2R`` and
    :math:`I` for ``r = 2R``. Body products are memoised by prefix, so rules sharing a prefix
    share its product.
    """

    def __init__(self, triples: np.ndarray, n_entities: int, n_relations: int) -> None:
        self.n_entities = n_entities
        self.n_relations = n_relations
        self._base: list[sp.csr_matrix] = []
        order = np.argsort(triples[:, 1], kind="stable")
        tri = triples[order]
        bounds = np.searchsorted(tri[:, 1], np.arange(n_relations + 1))
        for r in range(n_relations):
            part = tri[bounds[r] : bounds[r + 1]]
            self._base.append(self._binary(part[:, 0], part[:, 2]))
        self._eye = sp.identity(n_entities, dtype=np.int64, format="csr")
        self._products: dict[tuple[int, ...], sp.csr_matrix] = {}

    def _binary(self, rows: np.ndarray, cols: np.ndarray) -> sp.csr_matrix:
        n = self.n_entities
        data = np.ones(len(rows), dtype=np.int64)
        mat = sp.csr_matrix((data, (rows, cols)), shape=(n, n))
        mat.sum_duplicates()
        mat.data[:] = 1
        return mat

    def check_relation(self, r: int, what: str) -> None:
        if not 0 <= r <= 2 * self.n_relations:
            raise DataError(
                f"relation id out of range in a rule {what}",
                expected=f"ids in [0, {2 * self.n_relations}] (r, r+R for inverses, 2R self-loop)",
                found=r,
                fix="pass the n_relations of the KG the rules were learned on",
            )

    def matrix(self, r: int) -> sp.csr_matrix:
        big_r = self.n_relations
        if r == 2 * big_r:
            return self._eye
        if r >= big_r:
            return self._base[r - big_r].T.tocsr()
        return self._base[r]

    def body(self, body: tuple[int, ...]) -> sp.csr_matrix:
        r"""Pairs ``(x, y)`` where the body holds: :math:`\mathbb{1}[A_{r_1}\cdots A_{r_k} > 0]`."""
        if not body:
            return self._eye
        if body in self._products:
            return self._products[body]
        if len(body) == 1:
            out = self.matrix(body[0])
        else:
            out = (self.body(body[:-1]) @ self.matrix(body[-1])).tocsr()
            out.eliminate_zeros()
            out.data[:] = 1  # keep it boolean: counts of paths would grow with the length
        self._products[body] = out
        return out


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleStats:
    r"""AMIE-style statistics of one rule on a graph (static projection, ``X = Y`` pairs included).

    ``support`` :math:`=|B \wedge H|`, ``body_size`` :math:`=|B|` (AnyBURL's ``num_pred``),
    ``head_size`` :math:`=|H|` (distinct head facts), ``confidence = support / body_size`` and
    ``head_coverage = support / head_size`` (both 0 when the denominator is 0).
    """

    rule: Rule
    """The rule the numbers describe."""
    support: int
    """Number of pairs ``(X, Y)`` on which the body and the head both hold."""
    body_size: int
    """Number of pairs on which the body holds (predictions the rule makes)."""
    head_size: int
    """Number of distinct head facts ``r_q(X, Y)`` in the graph."""
    confidence: float
    """Standard confidence ``support / body_size``."""
    head_coverage: float
    """Head coverage ``support / head_size``."""


def _check_rules(rules: Sequence[Rule], adj: _Adjacency) -> None:
    for rule in rules:
        adj.check_relation(int(rule.head), "head")
        for r in rule.body:
            adj.check_relation(int(r), "body")


def rule_stats(
    rules: Sequence[Rule],
    triples: Tensor | np.ndarray,
    n_entities: int,
    n_relations: int,
) -> list[RuleStats]:
    r"""Support, body size, standard confidence and head coverage of each rule, by sparse products.

    With :math:`A_r` the boolean adjacency of relation ``r`` (inverse ``r+R``: :math:`A_r^\top`,
    self-loop ``2R``: :math:`I`), the body holds on :math:`B=\mathbb{1}[A_{r_1}\cdots A_{r_k}>0]`,

    .. math::
        \mathrm{support} = \textstyle\sum_{xy} B_{xy} H_{xy},\quad
        \mathrm{conf} = \mathrm{support} / \sum_{xy} B_{xy},\quad
        \mathrm{hc} = \mathrm{support} / \sum_{xy} H_{xy}, \quad H = A_{r_q}.

    Shape:
        triples: ``(M, 3)`` or ``(M, 4)`` ints ``[h, r, t(, time)]`` with original relations
        ``r < n_relations``; time is ignored. Output: one :class:`RuleStats` per rule, same order.

    Example:
        >>> tri = np.array([[0, 0, 1], [1, 0, 2], [0, 1, 2]])  # parent 0->1->2, grandparent 0->2
        >>> s = rule_stats([Rule(head=1, body=(0, 0))], tri, n_entities=3, n_relations=2)[0]
        >>> (s.support, s.body_size, s.confidence, s.head_coverage)
        (1, 1, 1.0, 1.0)
    """
    tri = _as_triples(triples, n_entities, n_relations)
    adj = _Adjacency(tri, n_entities, n_relations)
    _check_rules(rules, adj)
    out: list[RuleStats] = []
    for rule in rules:
        body = adj.body(tuple(int(r) for r in rule.body))
        head = adj.matrix(int(rule.head))
        support = int(body.multiply(head).count_nonzero())
        body_size = int(body.count_nonzero())
        head_size = int(head.count_nonzero())
        out.append(
            RuleStats(
                rule=rule,
                support=support,
                body_size=body_size,
                head_size=head_size,
                confidence=support / body_size if body_size else 0.0,
                head_coverage=support / head_size if head_size else 0.0,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------
# Rule application
# ----------------------------------------------------------------------------------------------


def _agg_max(acc: np.ndarray, hit: np.ndarray, conf: float) -> np.ndarray:
    return np.maximum(acc, hit * conf)


def _agg_noisy_or(acc: np.ndarray, hit: np.ndarray, conf: float) -> np.ndarray:
    # acc holds prod (1 - conf) over the rules that fired; converted to 1 - acc at the end
    return acc * (1.0 - hit * conf)


# name -> (initial value, per-rule update, final transform)
_AGGREGATIONS: dict[
    str,
    tuple[float, Callable[[np.ndarray, np.ndarray, float], np.ndarray], Callable[..., np.ndarray]],
] = {
    "max": (0.0, _agg_max, lambda acc: acc),
    "noisy_or": (1.0, _agg_noisy_or, lambda acc: 1.0 - acc),
}


def apply_rules(
    rules: Sequence[Rule],
    triples: Tensor | np.ndarray,
    queries: Tensor | np.ndarray,
    n_entities: int,
    aggregation: Aggregation = "max",
    *,
    n_relations: int | None = None,
) -> Tensor:
    r"""Score the tails of queries ``(h, r_q, ?)`` with the rules of ``r_q`` (symbolic baseline).

    A rule with confidence :math:`c` fires on candidate ``y`` when its body holds on ``(h, y)``
    in ``triples``. Scores aggregate the fired rules of the query relation:

    .. math::
        s_{\max}(y) = \max_{\rho \text{ fires}} c_\rho, \qquad
        s_{\mathrm{noisy\text{-}or}}(y) = 1 - \prod_{\rho \text{ fires}} (1 - c_\rho),

    and 0 where no rule fires. Rules with head ``r_q >= R`` answer inverse queries.

    Shape:
        triples: ``(M, 3|4)`` facts; queries: ``(B, 2)`` (or wider) ints ``[h, r_q, ...]``.
        Output: ``(B, n_entities)`` float32 scores in ``[0, 1]``.

    Args:
        n_relations: number of original relations ``R``; defaults to one more than the largest
            relation id in ``triples``. Pass it when the rules use inverse or self-loop ids.

    Example:
        >>> tri = np.array([[0, 0, 1], [1, 0, 2]])
        >>> rules = [Rule(1, (0, 0), confidence=0.5), Rule(1, (0,), confidence=0.2)]
        >>> apply_rules(rules, tri, np.array([[0, 1]]), 3, "noisy_or", n_relations=2)
        tensor([[0.0000, 0.2000, 0.5000]])
    """
    if aggregation not in _AGGREGATIONS:
        raise ConfigError(
            "unknown rule aggregation",
            expected=" | ".join(_AGGREGATIONS),
            found=aggregation,
            fix="use aggregation='max' or 'noisy_or'",
        )
    arr = triples.detach().cpu().numpy() if isinstance(triples, Tensor) else np.asarray(triples)
    if n_relations is None:
        n_relations = int(arr[:, 1].max()) + 1 if arr.ndim == 2 and len(arr) else 1
    tri = _as_triples(arr, n_entities, n_relations)
    adj = _Adjacency(tri, n_entities, n_relations)
    _check_rules(rules, adj)
    q = queries.detach().cpu().numpy() if isinstance(queries, Tensor) else np.asarray(queries)
    if q.ndim != 2 or q.shape[1] < 2:
        raise DataError(
            "queries have the wrong shape",
            expected="(B, 2) [h, r_q] (extra columns are ignored)",
            found=f"shape {tuple(q.shape)}",
            fix="pass KG.queries[split][:, :2] for tail queries",
        )
    q = q[:, :2].astype(np.int64, copy=False)
    if len(q) and (q[:, 0].min() < 0 or q[:, 0].max() >= n_entities):
        raise DataError(
            "query entity id out of range",
            expected=f"ids in [0, {n_entities})",
            found=f"ids in [{q[:, 0].min()}, {q[:, 0].max()}]",
            fix="pass n_entities = KG.n_entities",
        )
    init, update, final = _AGGREGATIONS[aggregation]
    scores = np.full((len(q), n_entities), init, dtype=np.float64)
    for rule in rules:
        rows = np.flatnonzero(q[:, 1] == int(rule.head))
        if rows.size == 0:
            continue
        hit = adj.body(tuple(int(r) for r in rule.body))[q[rows, 0]].toarray().astype(np.float64)
        scores[rows] = update(scores[rows], hit, float(rule.confidence))
    return torch.from_numpy(final(scores)).to(torch.float32)


# ----------------------------------------------------------------------------------------------
# AnyBURL / PyClause text
# ----------------------------------------------------------------------------------------------

_VARIABLES = "ABCDEFGHIJKLMNOPQRSTUVW"  # intermediate variables; X and Y are the head's
_ATOM = re.compile(r"\s*([^(),]+?)\s*\(\s*([^(),\s]+)\s*,\s*([^(),\s]+)\s*\)\s*")


def _atom(name_of: Sequence[str], r: int, left: str, right: str) -> str:
    """``name(left,right)`` for an original relation, ``name(right,left)`` for an inverse one."""
    n = len(name_of)
    if r >= n:
        return f"{name_of[r - n]}({right},{left})"
    return f"{name_of[r]}({left},{right})"


def format_rule(
    rule: Rule,
    relation_names: Sequence[str],
    stats: RuleStats | None = None,
) -> str:
    r"""AnyBURL / PyClause text of a rule; with ``stats``, the full AnyBURL rule-file line.

    Body atom ``i`` links variables ``v_{i-1}`` and ``v_i`` of the chain ``X, A, B, ..., Y``; an
    inverse relation ``r + R`` is written as ``r`` with swapped variables; self-loops (``2R``)
    are dropped (they identify two consecutive variables). A temporal rule (``time_order`` set)
    gets a trailing comment with each body atom's time relative to the head's time ``t``, e.g.
    ``B(X,Y) <= A(X,Y)  # time t-1``; :func:`parse_rule` ignores it. With ``stats`` the line is
    ``num_pred\tsupport\tconfidence\trule`` with AnyBURL's ``confidence = support / num_pred``.

    Example:
        >>> format_rule(Rule(head=1, body=(0, 0)), ["parent", "grandparent"])
        'grandparent(X,Y) <= parent(X,A), parent(A,Y)'
        >>> format_rule(Rule(head=2, body=(3, 1)), ["parent", "grandparent"])
        'parent(Y,X) <= grandparent(A,X), grandparent(A,Y)'
    """
    n = len(relation_names)
    body = [int(r) for r in rule.body if int(r) != 2 * n]
    for r in (int(rule.head), *body):
        if not 0 <= r < 2 * n:
            raise DataError(
                "relation id in the rule cannot be named",
                expected=f"ids in [0, {2 * n}) for {n} relation names (2R self-loop in bodies)",
                found=r,
                fix="pass the relation names of the KG the rule was learned on (KG.relations)",
            )
    if not body:
        raise DataError(
            "a rule needs a non-empty body to be written",
            expected="at least one body atom that is not a self-loop",
            found=f"body {tuple(rule.body)}",
            fix="drop rules whose body is only self-loops (fari_schema already does)",
        )
    if len(body) - 1 > len(_VARIABLES):
        raise DataError(
            "rule body too long for AnyBURL variable names",
            expected=f"at most {len(_VARIABLES) + 1} atoms",
            found=len(body),
            fix="use shorter rules",
        )
    chain = ["X", *_VARIABLES[: len(body) - 1], "Y"]
    atoms = [_atom(relation_names, r, chain[i], chain[i + 1]) for i, r in enumerate(body)]
    text = f"{_atom(relation_names, int(rule.head), 'X', 'Y')} <= {', '.join(atoms)}"
    if rule.time_order is not None:
        text += "  # time " + ", ".join(f"t{int(dt):+d}" for dt in rule.time_order)
    if stats is None:
        return text
    return f"{stats.body_size}\t{stats.support}\t{stats.confidence:.6g}\t{text}"


def parse_rule(text: str, relation_names: Sequence[str]) -> Rule:
    """Parse a chain rule in AnyBURL / PyClause syntax, or a full AnyBURL rule-file line.

    ``h(X,Y) <= b1(X,A), b2(A,Y)``: the atoms must form a path from ``X`` to ``Y`` in the order
    written; an atom whose variables appear reversed becomes the inverse relation ``r + R``.
    A line ``num_pred\\tsupport\\tconfidence\\trule`` sets the rule's confidence from its third
    field; a trailing ``# ...`` comment is ignored. Rules with constants or acyclic shapes are
    not chain rules and raise :class:`DataError`.

    Example:
        >>> parse_rule("grandparent(X,Y) <= parent(X,A), parent(A,Y)", ["parent", "grandparent"])
        Rule(head=1, body=(0, 0), confidence=1.0, time_order=None)
    """
    text = text.split("#", 1)[0]  # a trailing comment (e.g. a temporal rule's time order)
    fields = text.strip().split("\t")
    confidence = 1.0
    if len(fields) == 4:
        try:
            confidence = float(fields[2])
        except ValueError as exc:
            raise DataError(
                "cannot read the confidence of an AnyBURL rule line",
                expected="num_pred<TAB>support<TAB>confidence<TAB>rule",
                found=text.strip(),
                fix="check the file is an AnyBURL rule file",
            ) from exc
    elif len(fields) != 1:
        raise DataError(
            "cannot read an AnyBURL rule line",
            expected="a rule, or num_pred<TAB>support<TAB>confidence<TAB>rule",
            found=text.strip(),
            fix="check the file is an AnyBURL rule file",
        )
    rule_text = fields[-1]
    index = {name: i for i, name in enumerate(relation_names)}
    n = len(relation_names)
    bad = DataError(
        "not a chain rule in AnyBURL syntax",
        expected="h(X,Y) <= b1(X,A), b2(A,Y) (a path of atoms from X to Y)",
        found=rule_text,
        fix="only chain rules without constants are supported",
    )
    if "<=" not in rule_text:
        raise bad
    head_text, body_text = rule_text.split("<=", 1)
    head_m = _ATOM.fullmatch(head_text)
    if head_m is None or not body_text.strip():
        raise bad

    def rel_id(name: str) -> int:
        if name not in index:
            raise DataError(
                "unknown relation name in a rule",
                expected=f"one of {list(relation_names)[:10]}{' ...' if n > 10 else ''}",
                found=name,
                fix="pass the relation names of the KG the rules were written for",
            )
        return index[name]

    # split on "),": restore the closing parenthesis the split removed
    parts = body_text.split("),")
    atoms = [_ATOM.fullmatch(p if i == len(parts) - 1 else p + ")") for i, p in enumerate(parts)]
    if any(m is None for m in atoms):
        raise bad
    name, a, b = head_m.groups()
    if (a, b) == ("X", "Y"):
        head = rel_id(name)
    elif (a, b) == ("Y", "X"):
        head = rel_id(name) + n
    else:
        raise bad
    body: list[int] = []
    current = "X"
    for m in atoms:
        assert m is not None
        name, a, b = m.groups()
        if a == current:
            body.append(rel_id(name))
            current = b
        elif b == current:
            body.append(rel_id(name) + n)
            current = a
        else:
            raise bad
    if current != "Y":
        raise bad
    return Rule(head=head, body=tuple(body), confidence=confidence)


def write_rules(
    path: str | os.PathLike[str],
    rules: Sequence[Rule],
    stats: Sequence[RuleStats] | None,
    relation_names: Sequence[str],
    *,
    confidence: Literal["standard", "model"] = "standard",
) -> Path:
    r"""Write an AnyBURL rule file atomically: one ``num_pred\tsupport\tconfidence\trule`` a line.

    ``confidence="standard"`` writes ``support / num_pred`` from ``stats`` (what AnyBURL writes);
    ``"model"`` writes ``rule.confidence`` (e.g. a FARI score). Without ``stats``, ``num_pred`` and
    ``support`` are written as 0 and the model confidence is used. The file is written to a
    temporary file in the same folder and renamed over ``path``.
    """
    if stats is not None and len(stats) != len(rules):
        raise DataError(
            "rules and stats do not align",
            expected=f"{len(rules)} stats, one per rule",
            found=f"{len(stats)} stats",
            fix="compute stats = rule_stats(rules, ...) for the same list of rules",
        )
    lines = []
    for i, rule in enumerate(rules):
        text = format_rule(rule, relation_names)
        if stats is None:
            lines.append(f"0\t0\t{float(rule.confidence):.6g}\t{text}")
            continue
        s = stats[i]
        conf = s.confidence if confidence == "standard" else float(rule.confidence)
        lines.append(f"{s.body_size}\t{s.support}\t{conf:.6g}\t{text}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


# ----------------------------------------------------------------------------------------------
# FARI (a): schema beam over the first-order state
# ----------------------------------------------------------------------------------------------


class FolModel(Protocol):
    """The part of ``TunsrModel`` that FARI (a) needs: relation embeddings and the FOL cell."""

    rel_emb: nn.Embedding
    fol_cell: nn.GRUCell

    def fol_init(self, r_q: Tensor) -> Tensor: ...

    def fol_beta(self, g: Tensor, rel: Tensor) -> Tensor: ...


def _dedupe_sorted(head: int, scored: Iterable[tuple[tuple[int, ...], float]]) -> list[Rule]:
    """Keep the max confidence per body; sort by confidence desc, then body, for determinism."""
    best: dict[tuple[int, ...], float] = {}
    for body, conf in scored:
        if body and conf > best.get(body, -math.inf):
            best[body] = conf
    items = sorted(best.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))
    return [Rule(head=head, body=body, confidence=conf) for body, conf in items]


def fari_schema(
    model: FolModel,
    head_relations: Sequence[int],
    n_relations: int,
    max_len: int,
    beam: int = 20,
    *,
    include_self: bool = True,
) -> dict[int, list[Rule]]:
    r"""FARI variant (a): rule bodies ranked by the first-order attention alone, by beam search.

    For head :math:`r_q`: :math:`g_0 = \mathrm{fol\_init}(r_q)`; each kept prefix
    :math:`(r_1..r_{l-1}, g_{l-1}, c_{l-1})` is expanded by every
    :math:`r \in R \cup R^{-1} \cup \{\mathrm{self}\}` (``2R + 1`` ids, ``2R`` without self) with

    .. math::
        g_l = \mathrm{GRUCell}(\mathrm{rel\_emb}(r), g_{l-1}), \qquad
        c_l = c_{l-1}\,\beta(g_{l-1}, r),

    in one ``fol_cell`` call over the ``beam x (2R+1)`` candidates, and the top ``beam`` are kept
    (ties broken by candidate order, so the result is deterministic). After ``max_len`` steps
    self-loops are removed from the bodies (bodies of only self-loops are dropped), duplicate
    bodies keep their max confidence, and rules are sorted by confidence. With
    ``include_self=True`` bodies of every length ``1..max_len`` can appear (padded by self-loops,
    whose :math:`\beta` factors count); with ``False`` only bodies of length exactly ``max_len``.

    Shape:
        head_relations: ``Q`` relation ids in ``[0, 2R)``. Output: ``{r_q: [Rule, ...]}``, at most
        ``beam`` rules per head, ``confidence`` in ``(0, 1]``.
    """
    big_r = int(n_relations)
    n_emb = getattr(getattr(model, "rel_emb", None), "num_embeddings", None)
    if n_emb is not None and n_emb != 2 * big_r + 1:
        raise ConfigError(
            "model relation embeddings do not match n_relations",
            expected=f"rel_emb with 2R+1 = {2 * big_r + 1} rows for R = {big_r}",
            found=f"{n_emb} rows",
            fix="pass n_relations = KG.n_relations of the KG the model was trained on",
        )
    if max_len < 1 or beam < 1:
        raise ConfigError(
            "FARI beam search needs max_len >= 1 and beam >= 1",
            expected="positive integers",
            found=f"max_len={max_len}, beam={beam}",
            fix="use e.g. max_len = number of reasoning steps, beam = 20",
        )
    for r_q in head_relations:
        if not 0 <= int(r_q) < 2 * big_r:
            raise ConfigError(
                "head relation out of range",
                expected=f"ids in [0, {2 * big_r})",
                found=int(r_q),
                fix="pass original (or inverse) relation ids of the KG",
            )
    n_cand = 2 * big_r + 1 if include_self else 2 * big_r
    self_id = 2 * big_r
    was_training = bool(getattr(model, "training", False))
    if isinstance(model, nn.Module):
        model.eval()
    out: dict[int, list[Rule]] = {}
    try:
        with torch.no_grad():
            device = model.rel_emb.weight.device
            cand = torch.arange(n_cand, device=device)
            x_cand = model.rel_emb(cand)  # (C, H)
            for r_q in head_relations:
                g = model.fol_init(torch.tensor([int(r_q)], device=device))  # (P=1, H)
                conf = torch.ones(1, device=device, dtype=g.dtype)  # (P,)
                bodies = torch.zeros(1, 0, dtype=torch.long, device=device)  # (P, l)
                for _ in range(max_len):
                    n_pre = g.shape[0]
                    g_rep = g.repeat_interleave(n_cand, 0)
                    g_new = model.fol_cell(x_cand.repeat(n_pre, 1), g_rep)
                    beta = model.fol_beta(g_rep, cand.repeat(n_pre))
                    c_new = conf.repeat_interleave(n_cand) * beta.reshape(-1)
                    order = torch.sort(c_new, descending=True, stable=True).indices[:beam]
                    parent, rel = order // n_cand, order % n_cand
                    bodies = torch.cat([bodies[parent], cand[rel].unsqueeze(1)], dim=1)
                    g, conf = g_new[order], c_new[order]
                scored = (
                    (tuple(r for r in body if r != self_id), float(c))
                    for body, c in zip(bodies.tolist(), conf.tolist(), strict=True)
                )
                out[int(r_q)] = _dedupe_sorted(int(r_q), scored)
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------------
# FARI (b): instance paths in the pruned reasoning graph
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepEdges:
    r"""Kept reasoning-graph edges of one step, for ``K`` edges (all 1-D tensors of length ``K``).

    Two ways to name nodes, both accepted:

    * **node indices** (what ``TunsrModel.forward`` returns in ``steps``; ``child_entity`` given):
      ``parent`` indexes the node table of the previous step (step 0: node ``n`` is the root of
      query ``n``), ``child`` the node table of this step, ``child_entity`` is the child's entity;
    * **entities** (``child_entity`` None): ``parent``/``child`` are entity ids and a node is
      ``(query, entity)``, or ``(query, entity, time)`` when both time fields are given. At step 1
      only edges whose parent is the query entity are followed.

    ``a`` is the edge attention. With ``attention="per_edge"`` in :func:`fari_paths` it is the
    edge's own factor :math:`a_\varepsilon`; with ``"cumulative"`` it is the model's
    :math:`a_\varepsilon \leftarrow a_\varepsilon A_p / Z` (path product, normalised per query),
    and the per-edge factor is recovered as :math:`a_\varepsilon / A_p`.
    """

    query: Tensor
    """Row index of the edge's query in the ``queries`` given to :func:`fari_paths`."""
    parent: Tensor
    """Parent node: node index of the previous step, or entity id (see above)."""
    rel: Tensor
    """Relation id in ``[0, 2R]`` (``2R`` = self-loop)."""
    child: Tensor
    """Child node: node index of this step, or entity id (see above)."""
    a: Tensor
    """Edge attention (>= 0)."""
    child_entity: Tensor | None = None
    """Entity of the child node; given iff ``parent``/``child`` are node indices."""
    beta: Tensor | None = None
    """Optional first-order attention of the edge (for ``weight="beta"``)."""
    parent_time: Tensor | None = None
    """Optional time of the parent node (entity naming, temporal KGs; ignored at step 1)."""
    child_time: Tensor | None = None
    """Optional time of the child node (entity naming, temporal KGs)."""

    @classmethod
    def coerce(cls, obj: StepEdges | Mapping[str, Any]) -> StepEdges:
        """Accept a :class:`StepEdges` or a mapping with the same keys (extra keys ignored)."""
        if isinstance(obj, StepEdges):
            return obj
        if not isinstance(obj, Mapping):
            raise DataError(
                "cannot read the reasoning-graph edges of a step",
                expected="StepEdges or a dict with keys query, parent, rel, child, a",
                found=type(obj).__name__,
                fix="pass TunsrModel.forward(...)['steps'] or build StepEdges",
            )
        missing = [k for k in _REQUIRED if k not in obj]
        if missing:
            raise DataError(
                "step edges miss fields",
                expected=f"keys {', '.join(_REQUIRED)}",
                found=f"missing {missing}; have {sorted(obj)}",
                fix="rename the model's outputs or build StepEdges explicitly",
            )
        kw = {k: torch.as_tensor(obj[k]) for k in (*_REQUIRED, *_OPTIONAL) if k in obj}
        return cls(**kw)


_REQUIRED = ("query", "parent", "rel", "child", "a")
_OPTIONAL = ("child_entity", "beta", "parent_time", "child_time")


def _flat(t: Tensor | None) -> list[Any] | None:
    return None if t is None else t.detach().cpu().reshape(-1).tolist()


def path_weights(
    step_edges: Sequence[StepEdges | Mapping[str, Any]],
    queries: Tensor | np.ndarray,
    answers: Tensor | np.ndarray,
    n_relations: int,
    max_len: int,
    weight: Literal["a", "beta"] = "a",
    attention: Literal["per_edge", "cumulative"] = "per_edge",
    *,
    reduce_backtracks: bool = False,
    max_paths: int | None = None,
) -> list[dict[tuple[int, ...], float]]:
    """Per query: ``{relation sequence without self-loops: summed path weight}`` to its answer.

    The empty sequence collects the all-self-loop paths. With cumulative attentions the values of
    a query sum to the answer's node attention :math:`A_y` (its ``att`` score). ``max_paths``
    keeps only the heaviest walks reaching each node after every step (None: all; exact), which
    bounds memory on dense or fully expanded graphs.
    """
    return _path_weights_checked(
        step_edges,
        queries,
        answers,
        n_relations,
        max_len,
        weight,
        attention,
        reduce_backtracks=reduce_backtracks,
        max_paths=max_paths,
    )[1]


def _path_weights_checked(
    step_edges: Sequence[StepEdges | Mapping[str, Any]],
    queries: Tensor | np.ndarray,
    answers: Tensor | np.ndarray,
    n_relations: int,
    max_len: int,
    weight: str,
    attention: str,
    time_order: bool = False,
    reduce_backtracks: bool = False,
    max_paths: int | None = None,
) -> tuple[np.ndarray, list[dict[tuple[Any, ...], float]]]:
    """See :func:`path_weights`. With ``time_order`` (edges carry ``child_time``, queries their
    time in column 3) each sequence element is ``(r, child_time - t_q)`` instead of ``r``.

    With ``reduce_backtracks`` a walk is reduced as it grows: an edge ``r^-1`` that returns to
    the entity the previous atom ``r`` left (``u -r-> v -r^-1-> u``) cancels that atom, as a
    self-loop would be dropped, so a path with a backtrack counts for the body of its reduced
    walk (``A, A^-1, A`` from ``x`` to ``y`` through ``x`` again is the body ``A``). Internally a
    walk is a stack of ``(atom, entity the atom left)``."""
    q, ans = _checked_queries(queries, answers)
    if max_len < 1 or weight not in ("a", "beta") or attention not in ("per_edge", "cumulative"):
        raise ConfigError(
            "bad FARI path options",
            expected="max_len >= 1, weight in a|beta, attention in per_edge|cumulative",
            found=f"max_len={max_len}, weight={weight!r}, attention={attention!r}",
            fix="use max_len = number of reasoning steps",
        )
    steps = [StepEdges.coerce(s) for s in step_edges[:max_len]]
    if not steps:
        return q, [{} for _ in range(len(q))]
    walk = _Walks(q, n_relations, weight == "a" and attention == "cumulative", reduce_backtracks)
    for depth, s in enumerate(steps):
        walk.advance(depth, _StepColumns.of(s, weight, time_order, q))
        if max_paths is not None:
            _keep_heaviest(walk.states, max_paths)
    return q, walk.at_answers(ans)


def _checked_queries(
    queries: Tensor | np.ndarray, answers: Tensor | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Queries ``(N, >=2)`` and answers ``(N,)`` as numpy arrays, or a :class:`DataError`."""
    q = queries.detach().cpu().numpy() if isinstance(queries, Tensor) else np.asarray(queries)
    ans = answers.detach().cpu().numpy() if isinstance(answers, Tensor) else np.asarray(answers)
    if q.ndim != 2 or q.shape[1] < 2 or ans.shape != (len(q),):
        raise DataError(
            "queries and answers do not match",
            expected="queries (N, >=2) [h, r_q, ...] and answers (N,)",
            found=f"queries {tuple(q.shape)}, answers {tuple(ans.shape)}",
            fix="pass the training queries the step edges were computed for and their gold tails",
        )
    return q, ans


@dataclass
class _StepColumns:
    """One step's kept edges as aligned Python lists (``pt``/``ct``: parent and child times of
    entity-named temporal nodes; ``dt``: child times when atoms carry a time offset)."""

    query: list[Any]
    parent: list[Any]
    rel: list[Any]
    child: list[Any]
    w: list[Any]
    ent: list[Any] | None
    pt: list[Any] | None
    ct: list[Any] | None
    dt: list[Any] | None

    @classmethod
    def of(cls, s: StepEdges, weight: str, time_order: bool, q: np.ndarray) -> _StepColumns:
        if weight == "beta" and s.beta is None:
            raise DataError(
                "weight='beta' needs the edges' beta",
                expected="StepEdges.beta (the model's steps carry it)",
                found="beta is None",
                fix="pass weight='a' or edges with beta",
            )
        timed = s.parent_time is not None and s.child_time is not None
        lists = {
            "query": _flat(s.query),
            "parent": _flat(s.parent),
            "rel": _flat(s.rel),
            "child": _flat(s.child),
            "w": _flat(s.a if weight == "a" else s.beta),
            "ent": _flat(s.child_entity),
            "pt": _flat(s.parent_time) if timed else None,
            "ct": _flat(s.child_time) if timed else None,
            "dt": _flat(s.child_time) if time_order else None,
        }
        lengths = {len(v) for v in lists.values() if v is not None}
        if len(lengths) > 1:
            raise DataError(
                "step edge fields have different lengths",
                expected="1-D tensors of equal length K",
                found={k: len(v) for k, v in lists.items() if v is not None},
                fix="pass the kept edges of each step with aligned fields",
            )
        if time_order and (lists["dt"] is None or q.shape[1] < 4):
            raise DataError(
                "time_order needs edge times and query times",
                expected="StepEdges.child_time and queries (N, 4) [h, r_q, answer, t_q]",
                found=f"child_time {'missing' if lists['dt'] is None else 'given'}, "
                f"queries {tuple(q.shape)}",
                fix="pass the model's steps of a temporal KG, or time_order=False",
            )
        return cls(**lists)  # type: ignore[arg-type]  # the four edge fields are never None


class _Walks:
    """Per query: node key -> {relation sequence: weight}, node key -> entity, node key ->
    inflowing attention; :meth:`advance` extends every walk by one step's edges."""

    ROOT = ("root",)

    def __init__(
        self, q: np.ndarray, n_relations: int, cumulative: bool, reduce_backtracks: bool
    ) -> None:
        self.q, self.n_relations = q, int(n_relations)
        self.self_id = 2 * int(n_relations)
        self.cumulative, self.reduce = cumulative, reduce_backtracks
        n_q = len(q)
        self.states: list[dict[Any, dict[tuple[Any, ...], float]]] = [
            {self.ROOT: {(): 1.0}} for _ in range(n_q)
        ]
        self.entity_of: list[dict[Any, int]] = [{self.ROOT: int(q[n, 0])} for n in range(n_q)]
        self.inflow: list[dict[Any, float]] = [{self.ROOT: 1.0} for _ in range(n_q)]

    def _keys(self, cols: _StepColumns, k: int, depth: int) -> tuple[Any, Any, int]:
        """(source node key, destination node key, destination entity) of edge ``k``."""
        p, c = cols.parent[k], cols.child[k]
        root = self.ROOT
        if cols.ent is not None:  # nodes named by index
            return (root if depth == 0 else int(p)), int(c), int(cols.ent[k])
        if cols.ct is not None and cols.pt is not None:  # entity-named temporal nodes
            return (root if depth == 0 else (int(p), cols.pt[k])), (int(c), cols.ct[k]), int(c)
        return (root if depth == 0 else int(p)), int(c), int(c)

    def advance(self, depth: int, cols: _StepColumns) -> None:
        n_q = len(self.q)
        states: list[dict[Any, dict[tuple[Any, ...], float]]] = [{} for _ in range(n_q)]
        entity_of: list[dict[Any, int]] = [{} for _ in range(n_q)]
        inflow: list[dict[Any, float]] = [{} for _ in range(n_q)]
        for k, n in enumerate(cols.query):
            n = int(n)
            if not 0 <= n < n_q:
                raise DataError(
                    "step edge refers to an unknown query",
                    expected=f"query index in [0, {n_q})",
                    found=n,
                    fix="pass the queries the step edges were computed for",
                )
            if depth == 0 and cols.ent is None and int(cols.parent[k]) != int(self.q[n, 0]):
                continue  # step-1 edges must leave the query entity
            src_key, dst_key, ent = self._keys(cols, k, depth)
            w, r = cols.w[k], int(cols.rel[k])
            entity_of[n][dst_key] = ent
            inflow[n][dst_key] = inflow[n].get(dst_key, 0.0) + float(w)
            src = self.states[n].get(src_key)
            if not src or w == 0:
                continue
            factor = float(w)
            if self.cumulative:
                a_parent = self.inflow[n].get(src_key, 0.0)
                if a_parent <= 0:
                    continue
                factor /= a_parent
            atom: Any = r if cols.dt is None else (r, int(cols.dt[k]) - int(self.q[n, 3]))
            self._extend(
                states[n].setdefault(dst_key, {}),
                src,
                r,
                atom,
                ent,
                self.entity_of[n].get(src_key, -1),
                factor,
            )
        self.states, self.entity_of, self.inflow = states, entity_of, inflow

    def _extend(self, dst: dict, src: dict, r: int, atom: Any, ent: int, left: int, f: float):
        """Adds every walk of ``src`` extended by ``atom`` (reaching ``ent`` from ``left``)."""
        for seq, sw in src.items():
            if r == self.self_id:
                key = seq
            elif not self.reduce:
                key = (*seq, atom)
            elif seq and seq[-1][1] == ent and _inverse(seq[-1][0], self.n_relations) == atom:
                key = seq[:-1]  # u -r-> v -r^-1-> u: the two atoms cancel
            else:
                key = (*seq, (atom, left))
            dst[key] = dst.get(key, 0.0) + sw * f

    def at_answers(self, ans: np.ndarray) -> list[dict[tuple[Any, ...], float]]:
        """Per query: the summed weight of each sequence over the nodes of its answer."""
        per_query: list[dict[tuple[Any, ...], float]] = []
        for n, st in enumerate(self.states):
            acc: dict[tuple[Any, ...], float] = {}
            for node, seqs in st.items():
                if self.entity_of[n].get(node) != int(ans[n]):
                    continue
                for seq, sw in seqs.items():
                    if self.reduce:
                        seq = tuple(x[0] for x in seq)
                    acc[seq] = acc.get(seq, 0.0) + sw
            per_query.append(acc)
        return per_query


def _keep_heaviest(states: list[dict[Any, dict[tuple[Any, ...], float]]], m: int) -> None:
    """Keep, in place, the ``m`` heaviest walks reaching each node of each query."""
    for st in states:
        for node, seqs in st.items():
            if len(seqs) > m:
                st[node] = dict(heapq.nlargest(m, seqs.items(), key=lambda kv: kv[1]))


def _inverse(atom: Any, n_relations: int) -> Any:
    """The inverse of a sequence element ``r`` or ``(r, dt)`` (same time offset)."""
    big_r = int(n_relations)
    if isinstance(atom, tuple):
        return (_inverse(atom[0], big_r), atom[1])
    return atom + big_r if atom < big_r else atom - big_r


def fari_paths(
    step_edges: Sequence[StepEdges | Mapping[str, Any]],
    queries: Tensor | np.ndarray,
    answers: Tensor | np.ndarray,
    n_relations: int,
    max_len: int,
    *,
    weight: Literal["a", "beta"] = "a",
    attention: Literal["per_edge", "cumulative"] = "per_edge",
    time_order: bool = False,
    reduce_backtracks: bool = False,
    max_paths: int | None = None,
) -> dict[int, list[Rule]]:
    r"""FARI variant (b): relation sequences of root-to-answer paths, weighted by attention.

    For query ``n`` with head :math:`r_q`, every path
    :math:`e_q \xrightarrow{r_1} v_1 \cdots \xrightarrow{r_L} v_L` with :math:`v_L = y_n` through
    the kept edges of the first ``L = min(max_len, len(step_edges))`` steps gets the weight
    :math:`\prod_l w_{\varepsilon_l}` (``weight="a"``: :math:`w = a_\varepsilon`, or
    :math:`a_\varepsilon / A_{p}` for cumulative attentions, so the path weights of an answer
    sum to its node attention :math:`A_{y}`; ``"beta"``: :math:`w = \beta_\varepsilon`).
    Self-loops are removed from the relation sequence, and

    .. math::
        w(r_q, \mathbf{s}) = \sum_{n: r_n = r_q} \sum_{\text{paths of } n \text{ with sequence }
        \mathbf{s}} \prod_l w_{\varepsilon_l}, \qquad
        \mathrm{conf}(r_q, \mathbf{s}) = w(r_q, \mathbf{s}) / \textstyle\sum_{\mathbf{s}'}
        w(r_q, \mathbf{s}').

    With ``time_order`` (temporal KGs: edges with ``child_time``, queries ``[h, r_q, a, t_q]``)
    each rule also gets :attr:`Rule.time_order`, the offsets ``child_time - t_q`` of its body
    atoms (self-loops dropped) on the paths carrying most of the body's weight, e.g. ``(-1,)``
    for ``B(X,Y,t) <= A(X,Y,t-1)``.

    With ``reduce_backtracks`` a walk that steps back to the entity it just left along the
    inverse of the atom it just took (``u -r-> v -r^-1-> u``) is reduced by cancelling the two
    atoms, as self-loops are dropped: ``x -A-> y -A^-1-> x -A-> y`` counts for the body ``A``,
    not ``A, A^-1, A`` (an ``r, r^-1`` pair through a *different* entity, as in
    ``sibling <= parent^-1, parent``, is kept).

    Paths are enumerated by a forward pass that carries, per node, the summed weight of each
    relation sequence reaching it, so shared prefixes are not enumerated twice; ``max_paths``
    keeps the heaviest of them per node after every step (see :func:`path_weights`).

    Shape:
        queries: ``(N, >=2)`` ints ``[h, r_q, ...]``; answers: ``(N,)`` gold tail entities.
        Output: ``{r_q: [Rule, ...]}`` sorted by confidence; the confidences of a head sum to 1.
    """
    q, per_query = _path_weights_checked(
        step_edges,
        queries,
        answers,
        n_relations,
        max_len,
        weight,
        attention,
        time_order,
        reduce_backtracks,
        max_paths,
    )
    totals: dict[int, dict[tuple[int, ...], float]] = {}
    timings: dict[int, dict[tuple[int, ...], dict[tuple[int, ...], float]]] = {}
    for n, weights in enumerate(per_query):
        acc = totals.setdefault(int(q[n, 1]), {})
        when = timings.setdefault(int(q[n, 1]), {})
        for seq, sw in weights.items():
            if not seq:  # an all-self-loop path is no rule
                continue
            body = tuple(x[0] for x in seq) if time_order else seq
            acc[body] = acc.get(body, 0.0) + sw
            if time_order:
                offsets = when.setdefault(body, {})
                dt = tuple(x[1] for x in seq)
                offsets[dt] = offsets.get(dt, 0.0) + sw
    out: dict[int, list[Rule]] = {}
    for head, acc in sorted(totals.items()):
        z = sum(acc.values())
        if z > 0:
            rules = _dedupe_sorted(head, ((seq, w / z) for seq, w in acc.items()))
            if time_order:
                rules = [
                    dataclasses.replace(r, time_order=_heaviest(timings[head][tuple(r.body)]))
                    for r in rules
                ]
            out[head] = rules
    return out


def _heaviest(weights: Mapping[tuple[int, ...], float]) -> tuple[int, ...]:
    """The key of the largest weight (ties: the smallest key, for determinism)."""
    return min(weights.items(), key=lambda kv: (-kv[1], kv[0]))[0]


# ----------------------------------------------------------------------------------------------
# Filtering and summaries
# ----------------------------------------------------------------------------------------------


@overload
def threshold_rules(
    rules: Mapping[int, Sequence[Rule]], min_confidence: float
) -> dict[int, list[Rule]]: ...
@overload
def threshold_rules(rules: Iterable[Rule], min_confidence: float) -> list[Rule]: ...
def threshold_rules(
    rules: Mapping[int, Sequence[Rule]] | Iterable[Rule], min_confidence: float
) -> dict[int, list[Rule]] | list[Rule]:
    """Keep rules with ``confidence >= min_confidence`` (a list, or a dict per head relation).

    Example:
        >>> threshold_rules([Rule(0, (1,), 0.9), Rule(0, (2,), 0.1)], 0.5)
        [Rule(head=0, body=(1,), confidence=0.9, time_order=None)]
    """
    if isinstance(rules, Mapping):
        kept = {h: [r for r in rs if r.confidence >= min_confidence] for h, rs in rules.items()}
        return {h: rs for h, rs in kept.items() if rs}
    return [r for r in rules if r.confidence >= min_confidence]


@dataclass
class RuleSet:
    """Rules grouped by head relation, each list sorted by confidence (highest first)."""

    by_head: dict[int, list[Rule]]
    """``{head relation id: rules}``."""

    @classmethod
    def from_rules(cls, rules: Mapping[int, Sequence[Rule]] | Iterable[Rule]) -> RuleSet:
        """Group (and sort) a flat list or a dict of rules."""
        flat = [r for rs in rules.values() for r in rs] if isinstance(rules, Mapping) else rules
        by_head: dict[int, list[Rule]] = {}
        for rule in flat:
            by_head.setdefault(int(rule.head), []).append(rule)
        for rs in by_head.values():
            rs.sort(key=lambda r: (-r.confidence, len(r.body), tuple(r.body)))
        return cls(dict(sorted(by_head.items())))

    def __len__(self) -> int:
        return sum(len(rs) for rs in self.by_head.values())

    def __iter__(self):
        for rs in self.by_head.values():
            yield from rs

    def top(self, head: int, k: int = 1) -> list[Rule]:
        """The ``k`` most confident rules of ``head`` (fewer if it has fewer)."""
        return self.by_head.get(int(head), [])[:k]

    def length_histogram(self) -> dict[int, int]:
        """Number of rules per body length."""
        hist: dict[int, int] = {}
        for rule in self:
            hist[len(rule.body)] = hist.get(len(rule.body), 0) + 1
        return dict(sorted(hist.items()))

    def summary(self, relation_names: Sequence[str], k: int = 3) -> str:
        """Readable table: per head relation, its rule count and top ``k`` rules in AnyBURL text."""
        n = len(relation_names)
        lines = [
            f"{len(self)} rules for {len(self.by_head)} head relations; "
            f"body lengths {self.length_histogram()}"
        ]
        for head, rs in self.by_head.items():
            name = relation_names[head] if head < n else f"{relation_names[head - n]}^-1"
            lines.append(f"{name}: {len(rs)} rules")
            for rule in rs[:k]:
                lines.append(f"  {rule.confidence:.4f}  {format_rule(rule, relation_names)}")
        return "\n".join(lines)
