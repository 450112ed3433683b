r"""The Tunsr network: forward logic message passing over the query's reasoning graph.

The reasoning graph grows from the query entity one step per layer (arXiv 2507.03697; the
expansion follows RED-GNN and AdaProp, the propositional / first-order split TECHS). At step
:math:`l` the candidate edges :math:`\varepsilon = (p, r, c)` leave the nodes of step
:math:`l - 1`; every node also keeps a self-loop, so a node once reached stays in the graph.

**Selection before messages** (``max_nodes = K``): each candidate real edge gets a cheap key

.. math::

    k_\varepsilon = s_l(r_q, r) + \mu \log A_p,

a learned relation-level table :math:`s_l` (one logit per query relation, step and edge
relation, the "posterior neighbour" preference of the query) plus the parent's attention mass
:math:`A_p` (detached, weighted by ``prune_mass_weight``). Per query the ``K`` real edges of
largest key (plus Gumbel noise of scale ``prune_noise`` while training, AdaProp's sampling
without replacement) and every self-loop are kept; messages and attentions are computed **only
for the kept edges**. The key receives gradient through a straight-through factor
:math:`\pi_\varepsilon - \mathrm{sg}(\pi_\varepsilon) + 1` on each kept message, with
:math:`\pi` the softmax of the keys over all the query's candidates (AdaProp) [inferred], so the
table learns which relations lead to answers, and dropped relations lose probability mass.

**Forward logic message passing** on the kept edges:

.. math::

    m_\varepsilon &= h_p + r^{(l)} \quad(\texttt{message = "sum"}, \text{RED-GNN})
        \quad\text{or}\quad W_m h_p + r^{(l)} \\
    \alpha_\varepsilon &= \sigma\big(w_\alpha^\top \mathrm{relu}(W_s h_p + W_r r^{(l)}
        + W_q q + W_x x_c)\big), \qquad q = [r_q^{(l)} \,\|\, e_q \,\|\, \tau(t_q)] \\
    g_\varepsilon &= \mathrm{GRU}(r, g_p), \qquad \beta_\varepsilon = \sigma(w_\beta^\top
        g_\varepsilon), \qquad a_\varepsilon = \lambda \alpha_\varepsilon + (1 - \lambda)
        \beta_\varepsilon \\
    \tilde h_c &= \mathrm{act}\big(W_h [\textstyle\sum_{\varepsilon \to c} w_\varepsilon
        m_\varepsilon \,\|\, x_c]\big), \qquad h_c = \mathrm{GRU}(\mathrm{drop}(\tilde h_c),
        h_c^{(l-1)}) \\
    g_c &= \frac{\sum_{\varepsilon \to c} a_\varepsilon g_\varepsilon}
        {\sum_{\varepsilon \to c} a_\varepsilon}, \qquad
    A_c = \textstyle\sum_{\varepsilon \to c} \bar a_\varepsilon, \qquad
    \bar a_\varepsilon = \frac{a_\varepsilon A_p}{\sum_{\varepsilon' \in b} a_{\varepsilon'}
        A_{p'}}

``node_state = "gru"`` carries each node's state across layers through a GRU (RED-GNN's gate;
a node new at step :math:`l` starts from 0), ``"rebuild"`` uses :math:`\tilde h_c` alone. The
first-order state :math:`g_c` merges the relations reaching :math:`c` by their attention (a
weighted mean, so it keeps its scale however many edges arrive), and the message weight
:math:`w_\varepsilon` is :math:`a_\varepsilon` (``message_weight = "gate"``, RED-GNN) or the
mass :math:`\bar a_\varepsilon` (``"mass"``, TECHS), times the straight-through factor.
``fol = False`` drops the first-order part (:math:`a = \alpha`, RED-GNN).

Entity scores: ``emd`` :math:`\phi(w^\top h_c)` (RED-GNN), ``att`` the mass :math:`A_c`,
``both`` their sum, summed over the nodes of an entity; 0 when unreached. Without entity inputs
(the default, RED-GNN's relational form, and always in the inductive scenario) scores are
invariant to relabelling entities.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clinfuse.core.errors import DataError
from clinfuse.methods.tunsr.config import TunsrConfig
from clinfuse.methods.tunsr.graph import (
    Adjacency,
    Candidates,
    Nodes,
    attach_children,
    candidate_edges,
    gumbel_noise,
    root_nodes,
    segment_topk,
    take,
)

__all__ = ["LogicLayer", "TimeEncode", "TunsrModel", "fol_loss", "tunsr_loss"]


_take = take


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


@dataclass
class FinalNodes:
    """The node table of a reasoning graph's last step, one row per (query, entity, time)."""

    query: Tensor
    entity: Tensor
    time: Tensor
    attention: Tensor


@dataclass
class TunsrOutput:
    """What :meth:`TunsrModel.forward` returns (see its docstring for each field)."""

    scores: Tensor
    fol_scores: Tensor
    selection_loss: Tensor
    steps: list[dict[str, Tensor]]
    candidates: list[int]
    nodes: FinalNodes
    far_nodes: FinalNodes | None = None


class LogicLayer(nn.Module):
    """The weights of one expansion step: relation embeddings, the alpha attention, ``W_h``.

    ``q_extra`` is the width of the query's entity/time inputs beyond its relation (0 without),
    ``x_in`` the width of the child feature (0: none); ``update`` False leaves out ``W_h`` (the
    last layer of ``att`` scoring never reads ``h``).
    """

    def __init__(
        self,
        hidden: int,
        attn_dim: int,
        n_rel_ids: int,
        q_extra: int,
        x_in: int,
        update: bool,
        message: str,
        first: bool = False,
    ) -> None:
        super().__init__()
        self.rel = nn.Embedding(n_rel_ids, hidden)
        # the root state is 0 (RED-GNN), so the first layer has nothing for W_s or W_m to read
        self.w_s = None if first else nn.Linear(hidden, attn_dim, bias=False)
        self.w_r = nn.Linear(hidden, attn_dim, bias=False)
        self.w_q = nn.Linear(hidden + q_extra, attn_dim)
        self.w_xa = nn.Linear(hidden, attn_dim, bias=False) if x_in else None
        self.w_alpha = nn.Linear(attn_dim, 1)
        linear = message == "linear" and not first
        self.w_m = nn.Linear(hidden, hidden, bias=False) if linear else None
        self.w_x = nn.Linear(x_in, hidden) if x_in else None
        self.w_h = nn.Linear(hidden * (2 if x_in else 1), hidden, bias=False) if update else None

    def message(self, h: Tensor, parent: Tensor, rel: Tensor) -> Tensor:
        r"""Messages :math:`m_\varepsilon = h_p + r^{(l)}` (or :math:`W_m h_p + r^{(l)}`)
        ``(C, hidden)``; :math:`W_m h` is computed per node, then gathered."""
        hp = h if self.w_m is None else self.w_m(h)
        return _take(hp, parent) + self.rel(rel)

    def alpha(
        self,
        h: Tensor,
        q_in: Tensor,
        parent: Tensor,
        rel: Tensor,
        query: Tensor,
        x_att: Tensor | None = None,
    ) -> Tensor:
        r"""Propositional attention :math:`\sigma(w_\alpha^\top \mathrm{relu}(W_s h_p + W_r r
        + W_q q + W_x x_c))` ``(C,)``. Each projection is computed per node, relation or query
        and gathered, so the per-edge work is ``attn_dim`` wide; ``x_att`` is the child term,
        already projected, ``(C, attn_dim)``."""
        pre = _take(self.w_r(self.rel.weight), rel) + _take(self.w_q(q_in), query)
        if self.w_s is not None:
            pre = pre + _take(self.w_s(h), parent)
        if x_att is not None:
            pre = pre + x_att
        return torch.sigmoid(self.w_alpha(torch.relu(pre))).squeeze(-1)


@dataclass
class _State:
    """What one step hands to the next: the node table and the per-node states."""

    nodes: Nodes
    h: Tensor
    g: Tensor
    mass: Tensor
    fol_mass: Tensor


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
        n_rel_ids = 2 * n_relations + 1
        self.use_entities = cfg.entity_embeddings
        self.use_time = cfg.temporal
        self.ent_emb = nn.Embedding(n_entities, d) if self.use_entities else None
        self.time_enc = TimeEncode(cfg.time_dim, d) if self.use_time else None
        self.rel_emb = nn.Embedding(n_rel_ids, d)
        self.fol_cell = nn.GRUCell(d, d)
        self.fol_proj = nn.Linear(d, d)
        self.w_fol_g = nn.Linear(d, cfg.attn_dim)
        self.w_fol_r = nn.Linear(d, cfg.attn_dim, bias=False)
        self.w_beta = nn.Linear(cfg.attn_dim, 1)
        n_x = int(self.use_entities) + int(self.use_time)
        last_reads_h = cfg.score != "att"
        self.layers = nn.ModuleList(
            LogicLayer(
                d,
                cfg.attn_dim,
                n_rel_ids,
                n_x * d,
                n_x * d,
                i < cfg.n_layers - 1 or last_reads_h,
                cfg.message,
                first=i == 0,
            )
            for i in range(cfg.n_layers)
        )
        self.gate = nn.GRUCell(d, d) if cfg.node_state == "gru" else None
        # selection key table s_l(r_q, r): zeros = no preference before training [inferred]
        self.prune_logit = (
            nn.Parameter(torch.zeros(cfg.n_layers, 2 * n_relations, n_rel_ids))
            if cfg.max_nodes is not None
            else None
        )
        self.w_emd = nn.Linear(d, 1) if cfg.score != "att" else None
        if self.w_emd is not None and cfg.emd_map == "relu":
            # live relu at init: h >= 0 under relu, so w, b >= 0 [inferred]
            with torch.no_grad():
                self.w_emd.weight.abs_()
                self.w_emd.bias.fill_(0.1)
        mix = torch.tensor(cfg.attention_mix if cfg.fol else 1.0)
        if cfg.learn_mix and cfg.fol:
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

    def fol_beta(self, g: Tensor, rel: Tensor) -> Tensor:
        """FOL attention of appending relation ``rel`` to a path in state ``g``:
        :math:`\\beta = \\sigma(w_\\beta^\\top \\tanh(W_g g + W_r\\, \\mathrm{rel}(r)))`,
        ``(N, hidden), (N,) -> (N,)``; it depends on the relation path only."""
        return self._fol_beta_gathered(
            self.w_fol_g(g), torch.arange(len(rel), device=g.device), rel
        )

    def _fol_beta_gathered(self, g_proj: Tensor, parent: Tensor, rel: Tensor) -> Tensor:
        """:meth:`fol_beta` with ``W_g g`` computed per node and gathered by ``parent``."""
        pre = _take(g_proj, parent) + _take(self.w_fol_r(self.rel_emb.weight), rel)
        return torch.sigmoid(self.w_beta(torch.tanh(pre))).squeeze(-1)

    @property
    def mix(self) -> Tensor:
        """The weight lambda of alpha in the attention mix (a 0-d tensor)."""
        return torch.sigmoid(self.mix_logit) if self.mix_logit is not None else self.mix_fixed

    # -- features --------------------------------------------------------------------------
    def _time_input(self, t: Tensor, t_query: Tensor) -> Tensor:
        rel = self.cfg.time_encoding == "relative"
        return self.time_enc(t - t_query if rel else t)  # type: ignore[misc]

    def _entity_time_parts(self, entity: Tensor, time: Tensor, t_query: Tensor) -> list[Tensor]:
        """``[e_c, tau(t_c)]`` (each ``(C, hidden)``, the ones configured), each computed once
        per distinct entity / time and gathered."""
        parts = []
        if self.ent_emb is not None:
            uniq, inv = torch.unique(entity, return_inverse=True)
            parts.append(_take(self.ent_emb(uniq), inv))
        if self.time_enc is not None:
            rel_time = time - t_query if self.cfg.time_encoding == "relative" else time
            uniq, inv = torch.unique(rel_time, return_inverse=True)
            parts.append(_take(self.time_enc(uniq), inv))
        return parts

    def _child_feature(
        self, layer: LogicLayer, entity: Tensor, time: Tensor, t_query: Tensor
    ) -> Tensor | None:
        """:math:`x_c = W_x [e_c \\| \\tau(t_c)]` ``(C, hidden)``, None without such inputs."""
        if layer.w_x is None:
            return None
        return layer.w_x(torch.cat(self._entity_time_parts(entity, time, t_query), -1))

    def _query_inputs(self, layer: LogicLayer, queries: Tensor) -> Tensor:
        parts = [layer.rel(queries[:, 1])]
        if self.ent_emb is not None:
            parts.append(self.ent_emb(queries[:, 0]))
        if self.time_enc is not None:
            parts.append(self._time_input(queries[:, 3], queries[:, 3]))
        return torch.cat(parts, -1)

    @contextlib.contextmanager
    def training_width(self) -> Iterator[None]:
        """Evaluate with the training width ``max_nodes`` (not ``eval_max_nodes``) inside the
        block: rule induction reads the graph the model was trained on, and the number of
        paths it enumerates grows with the width."""
        saved = self.cfg
        self.cfg = dataclasses.replace(saved, eval_max_nodes=None)
        try:
            yield
        finally:
            self.cfg = saved

    # -- selection ---------------------------------------------------------------------------
    def _select(
        self,
        step: int,
        cand: Candidates,
        queries: Tensor,
        mass: Tensor,
        n_queries: int,
        generator: torch.Generator | None,
        selection: list[tuple[Tensor, Tensor, Tensor, Tensor]],
    ) -> tuple[Tensor | None, Tensor | None]:
        """Indices of the kept candidates and their straight-through factors (see module doc).

        Returns ``(None, None)`` under full expansion (``max_nodes`` None)."""
        cfg = self.cfg
        k = cfg.max_nodes if self.training or cfg.max_nodes is None else cfg.eval_max_nodes
        k = k or cfg.max_nodes
        if self.prune_logit is None or k is None:
            return None, None
        real = cand.rel < 2 * self.n_relations
        n_ids = self.prune_logit.shape[2]
        rq = _take(queries[:, 1], cand.query)
        key = _take(self.prune_logit[step].reshape(-1), rq * n_ids + cand.rel)
        if cfg.prune_mass_weight:
            key = key + cfg.prune_mass_weight * torch.log(_take(mass, cand.parent).detach() + 1e-9)
        noisy = key.detach()
        if self.training and cfg.prune_noise > 0:
            noisy = noisy + cfg.prune_noise * gumbel_noise(len(key), generator, key.device)
        # self-loops always stay: they rank above every real edge
        noisy = torch.where(real, noisy, torch.full_like(noisy, float("inf")))
        keep = segment_topk(noisy, cand.query, k, n_queries)
        if not self.training:
            return keep, None
        # pi: softmax of the keys over each query's real candidates
        logits = torch.where(real, key - key.detach().max(), torch.full_like(key, -torch.inf))
        z = torch.zeros(n_queries, device=key.device).index_add(0, cand.query, logits.exp())
        pi = logits.exp() / _take(z, cand.query).clamp_min(1e-30)
        selection.append((cand.query, cand.entity, real, pi))
        # straight-through: value 1, gradient of the softmax probability of each kept edge
        st = _take(pi - pi.detach() + 1.0, keep)
        return keep, st

    # -- forward ---------------------------------------------------------------------------
    def forward(
        self,
        queries: Tensor,
        graph: Any,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> TunsrOutput:
        """Score every entity for each query.

        Args:
            queries: ``(B, 4)`` int64 ``[e_q, r_q, answer, t_q]`` (answer read only by the
                leakage guard; static KGs put 0 in ``t_q``).
            graph: the expansion graph **with inverse edges** as an :class:`Adjacency` or any
                CSR with ``indptr``, ``rel``, ``tail``, ``time``.
            train: drop the query fact and its inverse from the graph (leakage guard); the
                interpolation scenario drops it always.
            generator: drives neighbour sampling (``sample_nodes``) and the selection noise.

        Returns:
            ``scores`` ``(B, E)`` float; ``steps``: per layer a dict of the kept edges with keys
            ``query``, ``parent``, ``child`` (node indices of the previous and this step),
            ``parent_entity``, ``rel``, ``child_entity``, ``child_time``, ``a`` (the mass
            :math:`\\bar a`, summing to 1 per query), ``alpha``, ``beta`` (all ``(C_l,)``);
            ``fol_scores`` ``(B, E)``: the first-order part alone, the node attention
            :math:`B_c` propagated like :math:`A_c` with :math:`\\beta` in place of :math:`a`
            over the same kept edges (see :func:`fol_loss`); ``nodes``: the final node table
            (``query``, ``entity``, ``time``, ``attention``); ``candidates``: per layer the
            number of candidate edges before selection.

        With ``eval_wide = "tiebreak"`` an evaluation pass scores on the training-width graph
        and orders the entities it leaves tied at zero (those it never reached) by their
        scores on the ``eval_max_nodes`` graph (see :func:`tiebreak`); ``nodes`` and
        ``steps`` are then the training-width graph's and ``far_nodes`` the wider graph's.
        """
        cfg = self.cfg
        wide = cfg.eval_max_nodes is not None and cfg.max_nodes is not None
        if not (train or self.training) and wide and cfg.eval_wide == "tiebreak":
            with self.training_width():
                out = self._forward(queries, graph, train=train, generator=generator)
            far = self._forward(queries, graph, train=train, generator=generator)
            out.scores = tiebreak(out.scores, reached(out), far.scores, reached(far))
            out.far_nodes = far.nodes
            return out
        return self._forward(queries, graph, train=train, generator=generator)

    def _forward(
        self,
        queries: Tensor,
        graph: Any,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> TunsrOutput:
        """One pass of :meth:`forward` at the width in force."""
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
        zeros = torch.zeros(b, d, device=queries.device)
        state = _State(
            root_nodes(queries, cfg.constraint),
            zeros,
            self.fol_init(queries[:, 1]),
            zeros.new_ones(b),
            zeros.new_ones(b),
        )
        mix = self.mix
        exclude = train or cfg.scenario == "interpolation"
        steps: list[dict[str, Tensor]] = []
        n_candidates: list[int] = []
        selection: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        for i, layer in enumerate(self.layers):
            cand = candidate_edges(
                state.nodes,
                adj,
                queries,
                n_relations=self.n_relations,
                constraint=cfg.constraint,
                exclude_query=exclude,
                sample_nodes=cfg.sample_nodes,
                sample_temperature=cfg.sample_temperature,
                generator=generator,
            )
            n_candidates.append(len(cand.rel))
            keep, st = self._select(i, cand, queries, state.mass, b, generator, selection)
            if keep is not None:
                cand = cand.select(keep)
            last = i == len(self.layers) - 1
            state, record = self._step(layer, cand, st, state, queries, t_q, mix, last)
            steps.append(record)
        nodes = state.nodes
        flat = nodes.query * self.n_entities + nodes.entity
        node_score = {
            "att": lambda: state.mass,
            "emd": lambda: self._emd(state.h),
            "both": lambda: state.mass + self._emd(state.h),
        }[cfg.score]()
        scores = zeros.new_zeros(b * self.n_entities).index_add(0, flat, node_score)
        fol_scores = zeros.new_zeros(b * self.n_entities).index_add(0, flat, state.fol_mass)
        selection_loss = (
            self._selection_loss(queries, adj, exclude, selection)
            if selection and cfg.selection_loss_weight > 0
            else zeros.new_zeros(())
        )
        return TunsrOutput(
            scores=scores.view(b, self.n_entities),
            fol_scores=fol_scores.view(b, self.n_entities),
            selection_loss=selection_loss,
            steps=steps,
            candidates=n_candidates,
            nodes=FinalNodes(nodes.query, nodes.entity, nodes.time, state.mass.detach()),
        )

    def _selection_loss(
        self,
        queries: Tensor,
        adj: Adjacency,
        exclude: bool,
        selection: list[tuple[Tensor, Tensor, Tensor, Tensor]],
    ) -> Tensor:
        r"""Auxiliary loss that teaches the selection key which edges lead to the answer.

        At step :math:`l` (of :math:`L`) a real candidate edge is on an answer path when its
        child lies within :math:`L - l` hops of the answer (a ball grown from the answer over
        the same graph, inverse edges included, the query fact left out as in the forward
        pass). The loss is :math:`-\log \sum_{\varepsilon \text{ on a path}} \pi_\varepsilon`
        per query and step, averaged over the (query, step) pairs that have such an edge, with
        :math:`\pi` the softmax of the keys over the query's candidates: dropped edges that
        lead to the answer gain probability, the others lose it [inferred]."""
        n_layers = len(self.layers)
        balls = _answer_balls(queries, adj, n_layers - 1, self.n_relations, exclude, self.cfg)
        losses = []
        for step, (query, entity, real, pi) in enumerate(selection):
            ball = balls[n_layers - 1 - step]
            key = query * self.n_entities + entity
            pos = torch.searchsorted(ball, key).clamp_max(max(len(ball) - 1, 0))
            on_path = real & (ball[pos] == key) if len(ball) else torch.zeros_like(real)
            mass = pi.new_zeros(len(queries)).index_add(0, query, torch.where(on_path, pi, 0.0))
            has = torch.zeros(len(queries), dtype=torch.bool, device=pi.device)
            has[query[on_path]] = True
            if has.any():
                losses.append(-torch.log(mass[has].clamp_min(1e-12)))
        if not losses:
            return pi.new_zeros(())
        return torch.cat(losses).mean()

    def _step(
        self,
        layer: LogicLayer,
        cand: Candidates,
        st: Tensor | None,
        state: _State,
        queries: Tensor,
        t_q: Tensor,
        mix: Tensor,
        last: bool = False,
    ) -> tuple[_State, dict[str, Tensor]]:
        """One step of forward logic message passing over the kept edges ``cand`` (``last``:
        the final step, whose first-order states nothing reads)."""
        cfg = self.cfg
        b, d = len(queries), cfg.hidden
        h, g, big_a, big_b = state.h, state.g, state.mass, state.fol_mass
        x_edge = None
        if layer.w_xa is not None:
            x_c = self._child_feature(layer, cand.entity, cand.time, _take(t_q, cand.query))
            x_edge = layer.w_xa(x_c)  # type: ignore[arg-type]
        q_in = self._query_inputs(layer, queries)
        alpha = layer.alpha(h, q_in, cand.parent, cand.rel, cand.query, x_edge)
        if cfg.fol:
            beta = self._fol_beta_gathered(self.w_fol_g(g), cand.parent, cand.rel)
            a = mix * alpha + (1 - mix) * beta
        else:
            beta, a = torch.zeros_like(alpha), alpha
        edges, new = attach_children(cand, self.n_entities)
        n = len(new.entity)
        mass = a * _take(big_a, cand.parent)
        total = h.new_zeros(b).index_add(0, cand.query, mass)
        mass = mass / _take(total, cand.query).clamp_min(1e-30)
        fol = beta * _take(big_b, cand.parent)
        fol = fol / _take(h.new_zeros(b).index_add(0, cand.query, fol), cand.query).clamp_min(1e-30)
        if layer.w_h is not None:
            w_msg = a if cfg.message_weight == "gate" else mass
            if st is not None:
                w_msg = w_msg * st
            m = layer.message(h, cand.parent, cand.rel)
            agg = h.new_zeros(n, d).index_add(0, edges.child, w_msg.unsqueeze(-1) * m)
            if layer.w_x is not None:
                x_node = self._child_feature(layer, new.entity, new.time, _take(t_q, new.query))
                agg = torch.cat([agg, x_node], -1)  # type: ignore[list-item]
            h_new = self.dropout(self.act(layer.w_h(agg)))
            if self.gate is not None:
                h_new = self.gate(h_new, _carry(h, state.nodes, new, self.n_entities))
        else:
            h_new = h.new_zeros(n, d)
        if cfg.fol and not last:
            # relations merged at each step: one GRU step per node from the attention-weighted
            # mean of the incoming relations and of the parents' first-order states
            w = a / _take(h.new_zeros(n).index_add(0, edges.child, a).clamp_min(1e-30), edges.child)
            w = w.unsqueeze(-1)
            r_in = h.new_zeros(n, d).index_add(0, edges.child, w * self.rel_emb(cand.rel))
            g_in = h.new_zeros(n, d).index_add(0, edges.child, w * _take(g, cand.parent))
            g_new = self.fol_cell(r_in, g_in)
        else:
            g_new = h.new_zeros(n, 0)
        record = {
            "query": edges.query,
            "parent": edges.parent,
            "child": edges.child,
            "parent_entity": _take(state.nodes.entity, edges.parent),
            "rel": edges.rel,
            "child_entity": edges.entity,
            "child_time": edges.time,
            "a": mass.detach(),
            "alpha": alpha.detach(),
            "beta": beta.detach(),
        }
        new_state = _State(
            new,
            h_new,
            g_new,
            h.new_zeros(n).index_add(0, edges.child, mass),
            h.new_zeros(n).index_add(0, edges.child, fol),
        )
        return new_state, record

    def _emd(self, h: Tensor) -> Tensor:
        z = self.w_emd(h).squeeze(-1)  # type: ignore[misc]
        return {
            "linear": lambda: z,
            "relu": lambda: torch.relu(z),
            "softplus": lambda: F.softplus(z),
        }[self.cfg.emd_map]()


def _answer_balls(
    queries: Tensor, adj: Adjacency, radius: int, n_relations: int, exclude: bool, cfg: TunsrConfig
) -> list[Tensor]:
    """Sorted keys ``query * E + entity`` of the entities within ``r`` hops of each query's
    answer, for ``r = 0..radius`` (the query fact excluded when ``exclude``).

    The ball is grown over the edges the forward pass may use: all of them in a static KG,
    those before the query time under a temporal constraint (a path to the answer never uses
    a later edge, so the ball loses no on-path edge and gathers far fewer)."""
    b = len(queries)
    nodes = Nodes(
        torch.arange(b, device=queries.device), queries[:, 2].clone(), queries[:, 3].clone()
    )
    n_e = adj.n_entities
    balls = [torch.sort(nodes.query * n_e + nodes.entity).values]
    for _ in range(radius):
        cand = candidate_edges(
            nodes,
            adj,
            queries,
            n_relations=n_relations,
            constraint="any" if cfg.constraint == "any" else "before_query",
            exclude_query=exclude,
            sample_nodes=cfg.sample_nodes,
        )
        keys = torch.unique(cand.query * n_e + cand.entity)
        nodes = Nodes(keys // n_e, keys % n_e, queries[keys // n_e, 3])
        balls.append(keys)
    return balls


def reached(out: TunsrOutput, far: bool = False) -> Tensor:
    """``(B, E)`` bool: the entities in each query's final reasoning graph of a forward pass
    (``far``: the wider graph of a tie-break evaluation; none reached when there was none)."""
    b, n_e = out.scores.shape
    mask = torch.zeros(b * n_e, dtype=torch.bool, device=out.scores.device)
    nodes = out.far_nodes if far else out.nodes
    if nodes is not None:
        mask[nodes.query * n_e + nodes.entity] = True
    return mask.view(b, n_e)


def tiebreak(near: Tensor, near_reached: Tensor, far: Tensor, far_reached: Tensor) -> Tensor:
    r"""Scores ``near`` with the entities that ``near`` did not reach (all tied at 0) ordered
    among themselves by ``far``: reached by the far graph before unreached, then by the far
    score. The order of every other pair of entities is that of ``near``.

    The tie-broken entities get 0 plus offsets inside :math:`(-\delta, \delta)`, with
    :math:`\delta` half the smallest non-zero :math:`|near|` of the row, so that no entity
    crosses a reached one.

    Example:
        >>> near = torch.tensor([[2.0, -1.0, 0.0, 0.0, 0.0]])
        >>> nr = torch.tensor([[True, True, False, False, False]])
        >>> far = torch.tensor([[9.0, 9.0, -3.0, 5.0, 0.0]])
        >>> fr = torch.tensor([[True, True, True, True, False]])
        >>> torch.argsort(tiebreak(near, nr, far, fr), descending=True).tolist()
        [[0, 3, 2, 4, 1]]
    """
    tied = ~near_reached
    f = far.double()
    tie_f = torch.where(tied & far_reached, f, torch.inf)
    lo = tie_f.min(dim=1, keepdim=True).values
    lo = torch.where(torch.isfinite(lo), lo, 0.0)
    # far-reached tied entities above every far-unreached one, then by far score
    order_key = torch.where(tied & far_reached, f - lo + 1.0, 0.0)
    span = order_key.max(dim=1, keepdim=True).values.clamp_min(1.0)
    unit = order_key / span - 0.5  # in [-0.5, 0.5]
    nz = torch.where(near != 0, near.abs().double(), torch.inf).min(dim=1, keepdim=True).values
    delta = torch.where(torch.isfinite(nz), 0.5 * nz, 1.0)
    out = torch.where(tied, (unit * delta).to(near.dtype), near)
    return out


def _carry(h: Tensor, old: Nodes, new: Nodes, n_entities: int) -> Tensor:
    """Each new node's state at the previous step (0 for nodes first reached now).

    Node tables are sorted by ``(query, entity, time)``, so old nodes are found in the new
    table by :func:`torch.searchsorted` on the same key."""
    n_times = int(max(int(old.time.max()), int(new.time.max()))) + 1 if len(new.time) else 1
    key_old = (old.query * n_entities + old.entity) * n_times + old.time
    key_new = (new.query * n_entities + new.entity) * n_times + new.time
    pos = torch.searchsorted(key_new, key_old).clamp_max(max(len(key_new) - 1, 0))
    found = key_new[pos] == key_old
    out = h.new_zeros(len(key_new), h.shape[1])
    return out.index_copy(0, pos[found], h[found])


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
