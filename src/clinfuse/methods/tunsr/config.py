"""Configuration of Tunsr, unified neurosymbolic reasoning on knowledge graphs.

Every constant of the method is a field. Tags: [T] the TECHS code (Lin et al., ACL 2023),
[R] RED-GNN (Zhang & Yao, WWW 2022) / AdaProp (Zhang et al., KDD 2023) code, [P] the Tunsr
abstract (arXiv 2507.03697), [inferred] a value no source gives (kept configurable). Only the
abstract of the paper was available, so none of these is a verified Tunsr value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from clinfuse.core.errors import ConfigError

Scenario = Literal["transductive", "inductive", "interpolation", "extrapolation"]
Constraint = Literal["before_query", "monotone", "any"]

TEMPORAL_SCENARIOS: frozenset[str] = frozenset({"interpolation", "extrapolation"})
"""Scenarios whose facts carry a timestamp index."""

DEFAULT_CONSTRAINT: dict[str, Constraint] = {
    "transductive": "any",
    "inductive": "any",
    "interpolation": "any",
    "extrapolation": "monotone",
}
"""Temporal constraint of each scenario when ``temporal_constraint`` is None."""


@dataclass(frozen=True)
class TunsrConfig:
    """Tunsr: a query-conditioned reasoning graph with propositional and first-order attention.

    The reasoning graph grows from the query entity for ``n_layers`` steps; each edge gets a
    propositional attention alpha (entity level) and a first-order attention beta (relation path
    only, via a GRU), mixed as ``a = lambda * alpha + (1 - lambda) * beta`` (arXiv 2507.03697).
    """

    # -- run -------------------------------------------------------------------------------
    preset: str = "default"
    """Name of the preset this config was built from (recorded with the run)."""
    seed: int = 0
    """Seed of initialisation, shuffling and neighbour sampling (TECHS: 95) [T]."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: `auto` picks CUDA when available."""
    progress: bool = True
    """Show progress bars."""

    # -- data ------------------------------------------------------------------------------
    data: str = "synthetic"
    """A synthetic preset name or the path of a KG folder."""
    scenario: Scenario = "transductive"
    """Task: transductive, inductive (unseen test entities), interpolation, extrapolation [P]."""
    fact_ratio: float | None = None
    """None keeps the data's facts/queries split; a float re-splits train (AdaProp .90-.99) [R];
    1 keeps all of train as the graph and as queries, each query's own fact hidden from its
    reasoning graph by the leakage guard (RNNLogic, RED-GNN inductive) [R]."""
    fari: Literal["schema", "paths"] = "paths"
    """FARI variant written to rules.txt: schema beam on first-order attention, or attention-
    weighted instance paths of the training queries (the other is reported too) [inferred]."""
    fari_rank: Literal["model", "quality"] = "quality"
    """Order of FARI rules: `model`, the variant's model confidence alone; `quality`, model
    confidence x standard confidence x head coverage on the training graph (facts + train
    queries, static projection), so among rules the model rates alike the precise and general
    one ranks first, as AMIE/AnyBURL prefer (written as the rule's confidence) [inferred]."""
    fari_reduce_backtracks: bool = True
    """FARI paths: cancel a backtrack u -r-> v -r^-1-> u in a root-to-answer walk (its two atoms
    add nothing to the body, like self-loops), so the walk counts for its reduced body
    [inferred]."""
    fari_max_paths: int | None = 32
    """FARI paths keeps the heaviest this-many walks reaching each node after every step
    (None: every walk, exact; memory then grows with degree^L on dense or fully expanded
    graphs) [inferred]."""
    fari_max_queries: int | None = 5000
    """FARI paths reads the reasoning graphs of at most this many training queries (a seeded
    sample; None: all of them) [inferred]."""
    eval_graph: Literal["facts", "facts+train"] = "facts+train"
    """Graph valid/test queries are answered from (transductive): facts, or facts plus the train
    queries as RED-GNN does [R]."""

    # -- reasoning graph -------------------------------------------------------------------
    n_layers: int = 3
    """Expansion steps L, i.e. the longest rule body (TECHS, RED-GNN Family: 3) [T][R]."""
    max_nodes: int | None = 100
    """Real edges kept per query at each step, chosen before any message is computed by the
    learned relation-level key (self-loops always stay); None expands every edge (RED-GNN)
    (AdaProp Family/UMLS top-k: 100) [R][inferred]."""
    eval_max_nodes: int | None = None
    """Edges kept per query and step at evaluation when ``max_nodes`` is set (None: the same
    as ``max_nodes``). A wider evaluation graph reaches answers that the training width cuts
    off; the `tunsr` preset evaluates with 10x its training width [inferred]."""
    eval_wide: Literal["graph", "tiebreak"] = "graph"
    """Role of the ``eval_max_nodes`` graph at evaluation: ``graph`` scores on it; ``tiebreak``
    scores on the training-width graph, on which the model was trained, and uses the wider
    graph only to order the entities that the training-width graph leaves unreached (tied at
    zero), so the ranking of what it reaches is unchanged and the answers it misses still get
    a rank from the wider graph (the `tunsr` preset; the per-epoch validation that picks the
    best checkpoint ranks on the training-width graph alone) [inferred]."""
    prune_noise: float = 1.0
    """Scale of the Gumbel noise added to the selection key while training (sampling without
    replacement, as AdaProp); 0 selects greedily [R][inferred]."""
    selection_loss_weight: float = 1.0
    """Weight of the auxiliary loss that trains the selection key on which candidate edges lie
    on a path to the answer (see model._selection_loss); 0 leaves the key to the
    straight-through gradient alone [inferred]."""
    prune_mass_weight: float = 1.0
    """Weight mu of the parent's log attention mass in the selection key [inferred]."""
    sample_nodes: int | None = None
    """Out-edges sampled per node before attention (TECHS: 15 or 600); None keeps all [T]."""
    sample_temperature: float = 0.5
    """Sampling weight p proportional to exp(temperature * (t' - t_q)) (TECHS: 0.5) [T]."""
    temporal_constraint: Constraint | None = None
    """Edge times allowed: None = scenario default (extrapolation `monotone`, else `any`) [T][I]."""

    # -- network ---------------------------------------------------------------------------
    fol: bool = True
    """First-order part: the relation-path GRU state g and its attention beta, mixed with alpha
    [P]; False leaves alpha alone (RED-GNN)."""
    node_state: Literal["gru", "rebuild"] = "gru"
    """`gru` carries each node's state across layers through a GRU (RED-GNN's gate); `rebuild`
    recomputes it from the messages at every layer (TECHS) [R][T]."""
    message: Literal["sum", "linear"] = "sum"
    """Message h_p + r (RED-GNN) or W_m h_p + r [R][inferred]."""
    hidden: int = 48
    """Width of embeddings and node states (RED-GNN Family: 48) [R]."""
    attn_dim: int = 5
    """Hidden width of the propositional attention MLP (RED-GNN: 5) [R]."""
    time_dim: int = 32
    """Frequencies of the cosine time encoding before its Linear layer [inferred]."""
    time_encoding: Literal["relative", "absolute"] = "relative"
    """Encode node times as t - t_q (relative) or t (absolute) [inferred]."""
    act: Literal["relu", "tanh", "identity"] = "relu"
    """Activation of the node update (TECHS: relu; RED-GNN WN18RR: tanh) [T][R]."""
    attention_mix: float = 0.5
    """Weight lambda of alpha in a = lambda alpha + (1 - lambda) beta (TECHS: 0.5) [T]."""
    learn_mix: bool = False
    """Learn lambda (initialised at attention_mix, kept in (0, 1) by a sigmoid) [inferred]."""
    message_weight: Literal["mass", "gate"] = "mass"
    """Weight of each edge's message in h_c: `mass`, its share a_e A_p of the query's attention
    mass (TECHS); `gate`, its attention a_e alone, unnormalised (RED-GNN's sigmoid gate), so
    h does not shrink as the graph fans out. Attention scores and FARI use the mass either
    way [inferred]."""
    score: Literal["att", "emd", "both"] = "att"
    """Entity score: summed node attention, relu(w h) of final nodes, or their sum [T]."""
    emd_output: Literal["linear", "relu", "softplus"] | None = None
    """Map of w^T h to the emd score: None = `linear` under ce (RED-GNN, unbounded) and
    `softplus` under bce/nll, which need non-negative scores [R][inferred]."""
    use_entity_embeddings: bool | None = None
    """Entity embeddings in q and x_c; None = none, the relational form of RED-GNN, which
    transfers to unseen entities [R][inferred]."""
    dropout: float = 0.1
    """Dropout on node states h and g after each layer (TECHS: 0.1) [T]."""

    # -- training --------------------------------------------------------------------------
    loss: Literal["ce", "bce", "nll"] = "ce"
    """`ce`: softmax CE over all entities (RED-GNN max_min) [R]; `bce`: smoothed BCE [T];
    `nll`: -log of the answer's share of the attention mass [inferred]."""
    label_smooth: float | None = None
    """ce: label smoothing (None = 0) [R]; bce: positive target 1 - eps (None = 0.1) [T]."""
    fol_loss_weight: float = 0.0
    """Weight of the auxiliary loss -log s_FOL(answer) of the first-order attention alone (see
    model.fol_loss), which trains beta to predict by itself so FARI (a) can read rules from it;
    0 (default, as TECHS) disables it: at 1.0 it lowered the quick preset's test MRR from .975
    to .867 and did not fix FARI on the synthetic KGs [inferred]."""
    lr: float = 1e-3
    """Adam learning rate [T]."""
    weight_decay: float = 0.0
    """Adam weight decay (TECHS l2: 0) [T]."""
    grad_clip: float | None = 5.0
    """Clip the global gradient norm; None disables clipping [T]."""
    batch_size: int = 32
    """Training queries per batch [T]."""
    eval_batch_size: int = 64
    """Evaluation queries per batch [inferred]."""
    epochs: int = 20
    """Maximum training epochs [inferred]."""
    steps_per_epoch: int | None = None
    """Batches per epoch, drawn with replacement from the training queries (None: one pass
    over all of them); smaller epochs validate and check the time budget more often
    [inferred]."""
    patience: int = 3
    """Epochs without validation MRR improvement before early stopping [inferred]."""
    max_train_minutes: float | None = None
    """Time budget: stop after the first epoch that ends past it (None: no budget)."""
    final_eval_max_triples: int | None = None
    """Rank a seeded sample of this many valid and test triples for the run's final metrics
    (None: all of them, the standard protocol) [inferred]."""
    valid_max_queries: int | None = None
    """Validate each epoch on a seeded sample of this many valid triples (None: all); the
    final valid/test metrics always use every triple."""

    @property
    def emd_map(self) -> str:
        """The resolved ``emd_output``."""
        if self.emd_output is not None:
            return self.emd_output
        return "linear" if self.loss == "ce" else "softplus"

    @property
    def temporal(self) -> bool:
        """Whether the scenario has timestamps."""
        return self.scenario in TEMPORAL_SCENARIOS

    @property
    def constraint(self) -> Constraint:
        """The temporal constraint in force (``temporal_constraint`` or the scenario default)."""
        return self.temporal_constraint or DEFAULT_CONSTRAINT[self.scenario]

    @property
    def entity_embeddings(self) -> bool:
        """Whether the network reads entity embeddings (never in the inductive scenario)."""
        return bool(self.use_entity_embeddings)

    @property
    def smoothing(self) -> float:
        """The label-smoothing epsilon of the chosen loss."""
        default = {"ce": 0.0, "bce": 0.1, "nll": 0.0}[self.loss]
        return default if self.label_smooth is None else self.label_smooth

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values or combinations that cannot work.

        Example:
            >>> TunsrConfig().validate()
            >>> TunsrConfig(max_nodes=0).validate()
            Traceback (most recent call last):
            ...
            clinfuse.core.errors.ConfigError: max_nodes must be at least 1
              expected: an integer >= 1, or "none"
              found:    0
              fix:      --set max_nodes=none
        """
        for check in _CHECKS:
            check(self)


# --- validation checks: each raises ConfigError on one kind of mistake --------------------------


def _fail(msg: str, expected: object, found: object, fix: str) -> None:
    raise ConfigError(msg, expected=expected, found=found, fix=fix)


def _check_positive(c: TunsrConfig) -> None:
    for name in (
        "n_layers",
        "hidden",
        "attn_dim",
        "time_dim",
        "batch_size",
        "eval_batch_size",
        "epochs",
    ):
        value = getattr(c, name)
        if value < 1:
            _fail(f"{name} must be at least 1", "an integer >= 1", value, f"--set {name}=...")
    names = ("max_nodes", "eval_max_nodes", "steps_per_epoch", "final_eval_max_triples")
    for name in (*names, "fari_max_paths"):
        value = getattr(c, name)
        if value is not None and value < 1:
            _fail(
                f"{name} must be at least 1",
                'an integer >= 1, or "none"',
                value,
                f"--set {name}=none",
            )
    weights = (c.prune_noise, c.prune_mass_weight, c.selection_loss_weight)
    if min(weights) < 0:
        _fail(
            "prune_noise, prune_mass_weight and selection_loss_weight must not be negative",
            ">= 0",
            weights,
            "--set prune_noise=1 prune_mass_weight=1 selection_loss_weight=1",
        )
    if c.sample_nodes is not None and c.sample_nodes < 1:
        _fail(
            "sample_nodes must be at least 1",
            'an integer >= 1, or "none" to keep every neighbour',
            c.sample_nodes,
            "--set sample_nodes=none",
        )
    if c.max_train_minutes is not None and c.max_train_minutes <= 0:
        _fail(
            "max_train_minutes must be positive",
            "> 0, or none",
            c.max_train_minutes,
            "--set max_train_minutes=none",
        )
    if c.fari_max_queries is not None and c.fari_max_queries < 1:
        _fail(
            "fari_max_queries must be positive",
            ">= 1, or none",
            c.fari_max_queries,
            "--set fari_max_queries=none",
        )
    if c.valid_max_queries is not None and c.valid_max_queries < 1:
        _fail(
            "valid_max_queries must be positive",
            ">= 1, or none",
            c.valid_max_queries,
            "--set valid_max_queries=none",
        )
    if c.emd_output == "linear" and c.loss != "ce" and c.score != "att":
        _fail(
            f"loss {c.loss!r} needs non-negative scores, and emd_output 'linear' can be negative",
            "emd_output relu or softplus with bce/nll",
            c.emd_output,
            "--set emd_output=softplus (or loss=ce)",
        )
    if c.patience < 0:
        _fail("patience must not be negative", ">= 0", c.patience, "--set patience=3")


def _check_rates(c: TunsrConfig) -> None:
    if not 0.0 <= c.dropout < 1.0:
        _fail("dropout must lie in [0, 1)", "0 <= p < 1", c.dropout, "--set dropout=0.1")
    if c.fol_loss_weight < 0:
        _fail(
            "fol_loss_weight must not be negative",
            ">= 0 (0 disables the first-order auxiliary loss)",
            c.fol_loss_weight,
            "--set fol_loss_weight=1.0",
        )
    if c.lr <= 0:
        _fail("lr must be positive", "> 0", c.lr, "--set lr=1e-3")
    if c.weight_decay < 0:
        _fail("weight_decay must not be negative", ">= 0", c.weight_decay, "--set weight_decay=0")
    if c.grad_clip is not None and c.grad_clip <= 0:
        _fail("grad_clip must be positive", "> 0 or none", c.grad_clip, "--set grad_clip=5")
    if c.label_smooth is not None and not 0.0 <= c.label_smooth < 1.0:
        _fail(
            "label_smooth must lie in [0, 1)",
            "0 <= eps < 1",
            c.label_smooth,
            "--set label_smooth=none",
        )
    if c.sample_temperature < 0:
        _fail(
            "sample_temperature must not be negative",
            ">= 0 (0 samples uniformly)",
            c.sample_temperature,
            "--set sample_temperature=0.5",
        )
    if c.fact_ratio is not None and not 0.0 < c.fact_ratio <= 1.0:
        _fail(
            "fact_ratio must lie in (0, 1]",
            "0 < ratio <= 1, or none",
            c.fact_ratio,
            "--set fact_ratio=none",
        )


def _check_mix(c: TunsrConfig) -> None:
    if not 0.0 <= c.attention_mix <= 1.0:
        _fail(
            "attention_mix must lie in [0, 1]",
            "0 <= lambda <= 1",
            c.attention_mix,
            "--set attention_mix=0.5",
        )
    if c.learn_mix and not 0.0 < c.attention_mix < 1.0:
        _fail(
            "learn_mix starts from logit(attention_mix), which is infinite at 0 or 1",
            "0 < attention_mix < 1 with learn_mix",
            c.attention_mix,
            "--set attention_mix=0.5, or --set learn_mix=false",
        )


def _check_scenario(c: TunsrConfig) -> None:
    if c.scenario == "inductive" and c.use_entity_embeddings:
        _fail(
            "the inductive scenario tests on unseen entities, which have no trained embedding",
            "use_entity_embeddings = false or none with scenario = inductive",
            c.use_entity_embeddings,
            "--set use_entity_embeddings=none",
        )
    if not c.temporal and c.temporal_constraint not in (None, "any"):
        _fail(
            f"temporal_constraint={c.temporal_constraint!r} needs timestamps",
            "none or `any` in a static scenario",
            f"scenario={c.scenario!r}",
            "--set temporal_constraint=none, or pick a temporal scenario",
        )


_CHECKS = (_check_positive, _check_rates, _check_mix, _check_scenario)


def field_names() -> tuple[str, ...]:
    """Names of the :class:`TunsrConfig` fields, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(TunsrConfig))
