r"""The Tunsr network: forward logic message passing over the query's reasoning graph.

Per layer and per candidate edge :math:`\varepsilon = (p, r, c)` (notes §1.3):

.. math::

    q &= W_q [e_q \,\|\, r_q \,\|\, \tau(t_q)] \qquad
    m_\varepsilon = W_m [h_p \,\|\, r] \qquad x_c = W_x [e_c \,\|\, \tau(t_c)] \\
    \alpha_\varepsilon &= \sigma\big(w_\alpha^\top \mathrm{relu}(W_a [q \,\|\, m_\varepsilon
        \,\|\, x_c])\big) \qquad
    g_\varepsilon = \mathrm{GRU}(r, g_p) \qquad \beta_\varepsilon = \sigma(w_\beta^\top
        g_\varepsilon) \\
    a_\varepsilon &= \lambda \alpha_\varepsilon + (1 - \lambda) \beta_\varepsilon
        \;\to\; \text{top-}k \text{ per query} \;\to\;
    a_\varepsilon \leftarrow \frac{a_\varepsilon A_p}{\sum_{\varepsilon' \in b} a_{\varepsilon'}
        A_{p'}} \\
    h_c &= \mathrm{act}\big(W_h [\textstyle\sum_{\varepsilon \to c} a_\varepsilon m_\varepsilon
        \,\|\, x_c]\big) \qquad
    g_c = \textstyle\sum_{\varepsilon \to c} a_\varepsilon g_\varepsilon \qquad
    A_c = \textstyle\sum_{\varepsilon \to c} a_\varepsilon

with :math:`h_{root} = 0` [R], :math:`g_{root} = W_g\, r_q` and :math:`A_{root} = 1`. The
attention MLP of alpha follows RED-GNN (a purely linear :math:`w_\alpha` cannot rank edges
differently for different queries) [R]. Static KGs have no time inputs; the inductive scenario has
no entity inputs, so :math:`x_c` is :math:`W_x \tau(t_c)` (or absent) and scores are invariant to
relabelling entities. Entity scores: ``att`` :math:`s(e) = \sum_{c: e_c = e} A_c`; ``emd``
:math:`s(e) = \sum_{c: e_c = e} \phi(w^\top h_c)` with :math:`\phi` the ``emd_output`` map
(linear under ``ce`` as RED-GNN, softplus under ``bce``/``nll``); ``both`` their sum; 0 when
unreached. With ``message_weight = "gate"`` the messages into :math:`h_c` are weighted by
:math:`a_\varepsilon` alone (RED-GNN) instead of the mass :math:`a_\varepsilon A_p`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clinfuse.core.errors import DataError
from clinfuse.methods.tunsr.config import TunsrConfig
from clinfuse.methods.tunsr.graph import (
    Adjacency,
    attach_children,
    candidate_edges,
    root_nodes,
    segment_topk,
)

__all__ = ["LogicLayer", "TimeEncode", "TunsrModel", "fol_loss", "tunsr_loss"]


def _take(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` along dim 0 via :func:`torch.index_select`, whose backward (``index_add``)
    is several times faster on CPU than the ``index_put`` behind advanced indexing."""
    return x.index_select(0, index)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "identity": lambda x: x,
}
"""Node-update activation of each ``act`` option."""


class TimeEncode(nn.Module):
    r"""Learnable cosine time encoding :math:`\tau(t) = W \cos(\omega t + \varphi) + b`.

    :math:`\omega` starts at :math:`10^{-\mathrm{linspace}(0, 9, d)}`, :math:`\varphi` at 0;
    both are learned (TECHS ``TimeEncode``) [T].

    Shape:
        t: ``(...)`` int or float timestamp indices. Output: ``(..., out_dim)``.
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.omega = nn.Parameter(10.0 ** -torch.linspace(0, 9, dim))
        self.phi = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, t: Tensor) -> Tensor:
        return self.proj(torch.cos(t.to(self.omega.dtype).unsqueeze(-1) * self.omega + self.phi))


class LogicLayer(nn.Module):
    """The per-layer weights of §1.3: ``W_q``, ``W_m``, ``W_x``, the alpha MLP and ``W_h``.

    ``x_in``/``q_in`` are the widths of the concatenated child and query inputs (0: no ``W_x``);
    ``update`` False leaves out ``W_h`` (the last layer of ``att`` scoring never reads ``h``).
    """

    def __init__(self, hidden: int, attn_dim: int, q_in: int, x_in: int, update: bool) -> None:
        super().__init__()
        self.w_q = nn.Linear(q_in, hidden)
        self.w_m = nn.Linear(2 * hidden, hidden)
        self.w_x = nn.Linear(x_in, hidden) if x_in else None
        self.w_a = nn.Linear(3 * hidden, attn_dim)
        self.w_alpha = nn.Linear(attn_dim, 1)
        self.w_h = nn.Linear(2 * hidden, hidden) if update else None

    def message(self, h: Tensor, rel_table: Tensor, parent: Tensor, rel: Tensor) -> Tensor:
        r"""Messages :math:`m_\varepsilon = W_m [h_p \| r]` ``(C, hidden)``.

        Computed as :math:`W_m^h h` per node plus :math:`W_m^r r` per relation, then gathered, so
        no matmul runs per edge.
        """
        d = h.shape[1]
        w = self.w_m.weight
        return _take(F.linear(h, w[:, :d]), parent) + _take(
            F.linear(rel_table, w[:, d:], self.w_m.bias), rel
        )

    def alpha(self, q: Tensor, query: Tensor, m: Tensor, x: Tensor) -> Tensor:
        r"""Propositional attention :math:`\sigma(w_\alpha^\top \mathrm{relu}(W_a [q \| m \| x]))`.

        ``q`` ``(B, hidden)`` is per query and gathered by ``query``; ``m``, ``x`` are ``(C,
        hidden)`` per edge. Output ``(C,)``.
        """
        d = m.shape[1]
        w = self.w_a.weight
        pre = _take(F.linear(q, w[:, :d], self.w_a.bias), query)
        pre = pre + F.linear(m, w[:, d : 2 * d]) + F.linear(x, w[:, 2 * d :])
        return torch.sigmoid(self.w_alpha(torch.relu(pre))).squeeze(-1)


class TunsrModel(nn.Module):
    r"""Tunsr over a reasoning graph grown from each query (see the module docstring).

    Interface used by FARI rule induction (keep stable): :attr:`rel_emb` ``Embedding(2R + 1,
    hidden)`` (index ``2R`` is the self-loop), :attr:`fol_cell` ``GRUCell(hidden, hidden)``,
    :meth:`fol_init` and :meth:`beta_of`. A body :math:`r_1 \dots r_k` for head :math:`r_q`
    scores :math:`\prod_i \beta(g_i)`, :math:`g_i = \mathrm{GRU}(r_i, g_{i-1})`,
    :math:`g_0 = \mathrm{fol\_init}(r_q)`.
    """

    def __init__(self, cfg: TunsrConfig, n_entities: int, n_relations: int, n_times: int) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.n_entities = n_entities
        self.n_relations = n_relations
        self.n_times = n_times
        d = cfg.hidden
        self.use_entities = cfg.entity_embeddings
        self.use_time = cfg.temporal
        self.ent_emb = nn.Embedding(n_entities, d) if self.use_entities else None
        self.time_enc = TimeEncode(cfg.time_dim, d) if self.use_time else None
        self.rel_emb = nn.Embedding(2 * n_relations + 1, d)
        self.fol_cell = nn.GRUCell(d, d)
        self.fol_proj = nn.Linear(d, d)
        self.w_beta = nn.Linear(d, 1)
        n_x = int(self.use_entities) + int(self.use_time)
        last_reads_h = cfg.score != "att"
        self.layers = nn.ModuleList(
            LogicLayer(
                d, cfg.attn_dim, (n_x + 1) * d, n_x * d, i < cfg.n_layers - 1 or last_reads_h
            )
            for i in range(cfg.n_layers)
        )
        self.w_emd = nn.Linear(d, 1) if cfg.score != "att" else None
        if self.w_emd is not None and cfg.emd_map == "relu":
            # live relu at init: h >= 0 under relu, so w, b >= 0 [inferred]
            with torch.no_grad():
                self.w_emd.weight.abs_()
                self.w_emd.bias.fill_(0.1)
        mix = torch.tensor(cfg.attention_mix)
        if cfg.learn_mix:
            self.mix_logit: nn.Parameter | None = nn.Parameter(torch.logit(mix))
        else:
            self.mix_logit = None
            self.register_buffer("mix_fixed", mix)
        self.dropout = nn.Dropout(cfg.dropout)
        self.act = ACTIVATIONS[cfg.act]

    # -- FOL interface (FARI) --------------------------------------------------------------
    def fol_init(self, r_q: Tensor) -> Tensor:
        """Root FOL state :math:`g_0 = W_g\\, \\mathrm{rel}(r_q)`, ``(B,) -> (B, hidden)``."""
        return self.fol_proj(self.rel_emb(r_q))

    def beta_of(self, g: Tensor) -> Tensor:
        """FOL attention :math:`\\sigma(w_\\beta^\\top g)`, ``(B, hidden) -> (B,)``."""
        return torch.sigmoid(self.w_beta(g)).squeeze(-1)

    @property
    def mix(self) -> Tensor:
        """The weight lambda of alpha in the attention mix (a 0-d tensor)."""
        return torch.sigmoid(self.mix_logit) if self.mix_logit is not None else self.mix_fixed

    # -- features --------------------------------------------------------------------------
    def _time_input(self, t: Tensor, t_query: Tensor) -> Tensor:
        rel = self.cfg.time_encoding == "relative"
        return self.time_enc(t - t_query if rel else t)  # type: ignore[misc]

    def _child_feature(
        self, layer: LogicLayer, entity: Tensor, time: Tensor, t_query: Tensor
    ) -> Tensor:
        """:math:`x_c = W_x [e_c \\| \\tau(t_c)]` ``(C, hidden)``; zeros without entity or time
        inputs. Each part is computed once per distinct entity / time and gathered."""
        if layer.w_x is None:
            return t_query.new_zeros(len(entity), self.cfg.hidden, dtype=torch.float32)
        w, d = layer.w_x.weight, self.cfg.hidden
        out = layer.w_x.bias.expand(len(entity), d)
        col = 0
        if self.ent_emb is not None:
            uniq, inv = torch.unique(entity, return_inverse=True)
            out = out + _take(F.linear(self.ent_emb(uniq), w[:, :d]), inv)
            col = d
        if self.time_enc is not None:
            rel_time = time - t_query if self.cfg.time_encoding == "relative" else time
            uniq, inv = torch.unique(rel_time, return_inverse=True)
            out = out + _take(F.linear(self.time_enc(uniq), w[:, col : col + d]), inv)
        return out

    def _fol_edges(self, rel: Tensor, parent: Tensor, g: Tensor) -> Tensor:
        """``fol_cell(rel_emb(rel), g[parent])`` ``(C, hidden)``, with the input and hidden
        products computed per relation and per node (PyTorch GRUCell gates r, z, n)."""
        cell = self.fol_cell
        gi = _take(F.linear(self.rel_emb.weight, cell.weight_ih, cell.bias_ih), rel)
        gh = _take(F.linear(g, cell.weight_hh, cell.bias_hh), parent)
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        new = torch.tanh(i_n + reset * h_n)
        return new + update * (_take(g, parent) - new)

    def _query_inputs(self, queries: Tensor) -> Tensor:
        parts = [self.rel_emb(queries[:, 1])]
        if self.ent_emb is not None:
            parts.insert(0, self.ent_emb(queries[:, 0]))
        if self.time_enc is not None:
            parts.append(self._time_input(queries[:, 3], queries[:, 3]))
        return torch.cat(parts, -1)

    # -- forward ---------------------------------------------------------------------------
    def forward(
        self,
        queries: Tensor,
        graph: Any,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """Score every entity for each query.

        Args:
            queries: ``(B, 4)`` int64 ``[e_q, r_q, answer, t_q]`` (answer read only by the
                leakage guard; static KGs put 0 in ``t_q``).
            graph: the expansion graph **with inverse edges** as an :class:`Adjacency` or any
                CSR with ``indptr``, ``rel``, ``tail``, ``time``.
            train: drop the query fact and its inverse from the graph (leakage guard); the
                interpolation scenario drops it always.
            generator: drives neighbour sampling (``sample_nodes``).

        Returns:
            ``scores`` ``(B, E)`` float; ``steps``: per layer a dict of the kept edges with keys
            ``query``, ``parent``, ``child`` (node indices of the previous and this step),
            ``parent_entity``, ``rel``, ``child_entity``, ``child_time``, ``a``, ``alpha``,
            ``beta`` (all ``(C_l,)``); ``fol_scores`` ``(B, E)``: the first-order part alone,
            the node attention :math:`B_c` propagated like :math:`A_c` with :math:`\beta`
            in place of :math:`a` over the same kept edges (see :func:`fol_loss`); ``nodes``:
            the final node table (``query``, ``entity``,
            ``time``, ``attention``).
        """
        cfg = self.cfg
        adj = Adjacency.coerce(graph, queries.device)
        if adj.n_entities != self.n_entities:
            raise DataError(
                "the graph and the model disagree on the number of entities",
                expected=self.n_entities,
                found=adj.n_entities,
                fix="build the CSR with the KG's n_entities",
            )
        queries = queries.to(torch.int64)
        b, d = len(queries), cfg.hidden
        t_q = queries[:, 3]
        nodes = root_nodes(queries, cfg.constraint)
        h = queries.new_zeros(b, d, dtype=torch.float32)
        g = self.fol_init(queries[:, 1])
        big_a = h.new_ones(b)
        big_b = h.new_ones(b)  # first-order-only node attention (fol_scores)
        q_in = self._query_inputs(queries)
        mix = self.mix
        exclude = train or cfg.scenario == "interpolation"
        steps: list[dict[str, Tensor]] = []
        for layer in self.layers:
            cand = candidate_edges(
                nodes,
                adj,
                queries,
                n_relations=self.n_relations,
                constraint=cfg.constraint,
                exclude_query=exclude,
                sample_nodes=cfg.sample_nodes,
                sample_temperature=cfg.sample_temperature,
                generator=generator,
            )
            m = layer.message(h, self.rel_emb.weight, cand.parent, cand.rel)
            x = self._child_feature(layer, cand.entity, cand.time, t_q[cand.query])
            alpha = layer.alpha(layer.w_q(q_in), cand.query, m, x)
            g_e = self._fol_edges(cand.rel, cand.parent, g)
            beta = self.beta_of(g_e)
            a = mix * alpha + (1 - mix) * beta
            keep = segment_topk(a, cand.query, cfg.max_nodes, b)
            cand, m, g_e, a = cand.select(keep), _take(m, keep), _take(g_e, keep), _take(a, keep)
            alpha, beta = alpha[keep], beta[keep]
            gate = a
            a = a * _take(big_a, cand.parent)
            a = a / h.new_zeros(b).index_add(0, cand.query, a).clamp_min(1e-30)[cand.query]
            fol = beta * _take(big_b, cand.parent)
            fol = fol / h.new_zeros(b).index_add(0, cand.query, fol).clamp_min(1e-30)[cand.query]
            edges, new = attach_children(cand, self.n_entities)
            n = len(new.entity)
            if layer.w_h is not None:
                x_node = self._child_feature(layer, new.entity, new.time, t_q[new.query])
                w_msg = gate if cfg.message_weight == "gate" else a
                msg = h.new_zeros(n, d).index_add(0, edges.child, w_msg.unsqueeze(-1) * m)
                h = self.dropout(self.act(layer.w_h(torch.cat([msg, x_node], -1))))
            g = self.dropout(h.new_zeros(n, d).index_add(0, edges.child, a.unsqueeze(-1) * g_e))
            big_a = h.new_zeros(n).index_add(0, edges.child, a)
            big_b = h.new_zeros(n).index_add(0, edges.child, fol)
            steps.append(
                {
                    "query": edges.query,
                    "parent": edges.parent,
                    "child": edges.child,
                    "parent_entity": nodes.entity[edges.parent],
                    "rel": edges.rel,
                    "child_entity": edges.entity,
                    "child_time": edges.time,
                    "a": a.detach(),
                    "alpha": alpha.detach(),
                    "beta": beta.detach(),
                }
            )
            nodes = new
        flat = nodes.query * self.n_entities + nodes.entity
        node_score = {
            "att": lambda: big_a,
            "emd": lambda: self._emd(h),
            "both": lambda: big_a + self._emd(h),
        }[cfg.score]()
        scores = h.new_zeros(b * self.n_entities).index_add(0, flat, node_score)
        fol_scores = h.new_zeros(b * self.n_entities).index_add(0, flat, big_b)
        return {
            "scores": scores.view(b, self.n_entities),
            "fol_scores": fol_scores.view(b, self.n_entities),
            "steps": steps,
            "nodes": {
                "query": nodes.query,
                "entity": nodes.entity,
                "time": nodes.time,
                "attention": big_a.detach(),
            },
        }

    def _emd(self, h: Tensor) -> Tensor:
        z = self.w_emd(h).squeeze(-1)  # type: ignore[misc]
        return {
            "linear": lambda: z,
            "relu": lambda: torch.relu(z),
            "softplus": lambda: F.softplus(z),
        }[self.cfg.emd_map]()


def _ce(scores: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(scores, targets, label_smoothing=eps)


def _bce(scores: Tensor, targets: Tensor, eps: float) -> Tensor:
    p = scores / scores.sum(-1, keepdim=True).clamp_min(1e-30)
    y = torch.full_like(p, 1e-4)
    y[torch.arange(len(targets), device=p.device), targets] += 1.0 - eps
    return F.binary_cross_entropy(p.clamp(1e-10, 1.0 - 1e-7), y, reduction="none").sum(-1).mean()


def _nll(scores: Tensor, targets: Tensor, eps: float) -> Tensor:
    p = scores / scores.sum(-1, keepdim=True).clamp_min(1e-30)
    logp = p.clamp_min(1e-10).log()
    gold = logp[torch.arange(len(targets), device=p.device), targets]
    return -((1.0 - eps) * gold + eps * logp.mean(-1)).mean()


LOSSES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "ce": _ce,
    "bce": _bce,
    "nll": _nll,
}
"""Loss function of each ``loss`` option, ``(scores, targets, eps) -> scalar``."""


def tunsr_loss(scores: Tensor, targets: Tensor, cfg: TunsrConfig) -> Tensor:
    r"""Training loss of entity scores against the answers.

    ``ce`` (RED-GNN max_min) [R]: :math:`-s_a + \log\sum_e \exp s_e` averaged over the batch,
    with optional label smoothing :math:`\epsilon`. ``bce`` [T]: with
    :math:`p_e = s_e / \sum_{e'} s_{e'}` (scores are non-negative) and targets
    :math:`y_e = (1 - \epsilon) 1[e = a] + 10^{-4}` (TECHS: 0.9 and 1e-4),
    :math:`-\sum_e y_e \log p_e + (1 - y_e) \log(1 - p_e)` averaged over the batch.
    ``nll`` [inferred]: the likelihood of the answer under the normalised attention mass,
    :math:`-(1-\epsilon)\log p_a - \epsilon\,\overline{\log p}`; with ``att`` scores in [0, 1]
    the softmax of ``ce`` is nearly uniform on dense graphs, this loss is not.

    Shape:
        scores: ``(B, E)``; targets: ``(B,)`` int64. Output: scalar.

    Example:
        >>> s = torch.log(torch.tensor([[1.0, 3.0]]))
        >>> round(float(tunsr_loss(s, torch.tensor([1]), TunsrConfig())), 4)
        0.2877
    """
    return LOSSES[cfg.loss](scores, targets.to(torch.int64), cfg.smoothing)


def fol_loss(fol_scores: Tensor, targets: Tensor) -> Tensor:
    r"""Auxiliary loss that makes the first-order attention a rule scorer on its own [inferred].

    ``fol_scores`` is the answer mass of the first-order part alone: over the kept edges,
    :math:`b_\varepsilon = \beta_\varepsilon B_p / \sum_{\varepsilon' \in b}
    \beta_{\varepsilon'} B_{p'}`, :math:`B_c = \sum_{\varepsilon \to c} b_\varepsilon`,
    :math:`B_{root} = 1`, :math:`s^{FOL}(e) = \sum_{c: e_c = e} B_c` (so
    :math:`\sum_e s^{FOL}(e) = 1`). The loss is the negative log mass on the answer,
    :math:`-\log s^{FOL}(a)` (floored at :math:`10^{-10}`), averaged over the batch. Since
    :math:`\beta` sees only the relation path, it is minimised by putting the mass on the relation
    sequences that lead to answers, i.e. on rule bodies (the kept edges and, from layer 2, the
    merged states :math:`g_c` still come from the mixed attention :math:`a`); without it
    :math:`\beta` may collapse while the mix relies on :math:`\alpha`, and FARI (a) cannot read
    rules from it.

    Shape:
        fol_scores: ``(B, E)`` non-negative, rows summing to at most 1; targets: ``(B,)``.
        Output: scalar.

    Example:
        >>> round(float(fol_loss(torch.tensor([[0.25, 0.75]]), torch.tensor([1]))), 4)
        0.2877
    """
    picked = fol_scores.gather(1, targets.to(torch.int64).unsqueeze(1)).squeeze(1)
    return -torch.log(picked.clamp_min(1e-10)).mean()
