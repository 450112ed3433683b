r"""The prompt transformer: frozen cell embeddings + column ids + [CLS] -> transformer -> heads.

Flow (P-Transformer, arXiv 2303.17408 / 2508.20460; the head and depth details are ours
[inferred]). Row :math:`i` of an EHR table has :math:`m` cells (structured values and free-text
notes), each already turned into a sentence by its column's prompt template and embedded by a
frozen sentence encoder into :math:`z_{ij} \in \mathbb{R}^{d_{enc}}`. The model computes

.. math::
    h^{(0)}_{ij} = \mathrm{LN}(W z_{ij} + b) + e_j, \qquad
    H^{(0)}_i = [\,c;\ h^{(0)}_{i1};\ \dots;\ h^{(0)}_{im}\,],\qquad
    H^{(L)}_i = \mathrm{TransformerEncoder}(H^{(0)}_i),

with :math:`e_j` a learned column-id embedding (without it the encoder is permutation-invariant
over cells and cannot tell two equal sentences in different columns apart) and :math:`c` a learned
[CLS] token. The pooled state is the final [CLS] state (``pooling="cls"``) or the mean over the
[CLS] state and the present cells (``"mean"``); one MLP head per task maps it to class logits or to
a regression value on the standardised target scale.

Inferred, not in the paper (and therefore configurable): pre-norm layers, GELU MLP heads of width
``head_hidden``, the LayerNorm after the input projection, and the regression loss.

A cell with ``cell_mask = False`` (dropped by an ablation or missing) is zeroed before the
projection and excluded as an attention key, so its content cannot reach any output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clinfuse.core.errors import ConfigError, DataError

__all__ = [
    "POOLINGS",
    "piecewise_linear_encoding",
    "REGRESSION_LOSSES",
    "PromptTransformer",
    "PromptTransformerConfig",
    "TaskKind",
    "multitask_loss",
    "task_losses",
]

TaskKind = Literal["classification", "regression"]
RegressionLoss = Literal["mse", "l1", "huber"]
IGNORE_CLASS = -100
"""Class target that marks a row without a label for that task (``F.cross_entropy`` default)."""


@dataclass(frozen=True)
class PromptTransformerConfig:
    """Architecture of the cell-fusion transformer (the sentence encoder is separate and frozen)."""

    d_model: int = 128
    """Width of the cell tokens inside the transformer."""
    layers: int = 2
    """Number of transformer encoder layers."""
    heads: int = 4
    """Attention heads per layer; must divide ``d_model``."""
    ff: int = 256
    """Hidden width of each layer's feed-forward block."""
    dropout: float = 0.1
    """Dropout in the attention, feed-forward blocks and heads."""
    pooling: Literal["cls", "mean"] = "cls"
    """Row summary: the final [CLS] state, or the mean of [CLS] and the present cells."""
    column_embeddings: bool = True
    """Add a learned column-id embedding per cell (False: the ablation, permutation-invariant)."""
    head_hidden: int = 64
    """Hidden width of each task's MLP head; 0 gives a linear head."""
    value_bins: int = 0
    """Width of the numeric value encoding added to a numeric cell's token (piecewise-linear
    encoding, :func:`piecewise_linear_encoding`); 0 turns the value path off."""
    tabular_features: int = 0
    """Width of a standardised raw-feature vector read by a linear term added to every output
    (the linear path); 0 turns it off."""


def _pool_cls(tokens: Tensor, present: Tensor) -> Tensor:
    """The [CLS] state ``tokens[:, 0]``."""
    return tokens[:, 0]


def _pool_mean(tokens: Tensor, present: Tensor) -> Tensor:
    """Mean of the [CLS] state and the present cells (the [CLS] term keeps the count >= 1)."""
    keep = torch.cat([torch.ones_like(present[:, :1]), present], dim=1).to(tokens.dtype)
    return (tokens * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True)


POOLINGS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"cls": _pool_cls, "mean": _pool_mean}


def _head(d_model: int, hidden: int, out: int, dropout: float) -> nn.Module:
    """Task head ``Linear -> GELU -> Dropout -> Linear``; one ``Linear`` when ``hidden == 0``."""
    if hidden == 0:
        return nn.Linear(d_model, out)
    return nn.Sequential(
        nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out)
    )


class PromptTransformer(nn.Module):
    r"""Fuse the ``m`` frozen cell embeddings of a row into one prediction per task.

    Args:
        d_enc: Width of the sentence-encoder embeddings (384 for all-MiniLM-L6-v2).
        n_columns: Number of cells ``m`` per row; cell ``j`` gets column id ``j``.
        tasks: Task name -> ``"classification"`` or ``"regression"``.
        n_classes: Task name -> number of classes (>= 2) for every classification task.
        config: Architecture.

    Shape:
        x: ``(B, m, d_enc)`` floating cell embeddings. cell_mask: ``(B, m)`` bool, True = present
        (None: all present). Output of :meth:`forward`: ``{task: (B, C) logits}`` for
        classification, ``{task: (B,)}`` for regression (standardised target scale).

    Example:
        >>> model = PromptTransformer(8, 3, {"death": "classification", "los": "regression"},
        ...                           {"death": 2}, PromptTransformerConfig(d_model=16, heads=2))
        >>> out = model(torch.randn(5, 3, 8), torch.ones(5, 3, dtype=torch.bool))
        >>> tuple(out["death"].shape), tuple(out["los"].shape)
        ((5, 2), (5,))
    """

    def __init__(
        self,
        d_enc: int,
        n_columns: int,
        tasks: Mapping[str, TaskKind],
        n_classes: Mapping[str, int] | None = None,
        config: PromptTransformerConfig | None = None,
    ) -> None:
        super().__init__()
        cfg = config or PromptTransformerConfig()
        n_classes = dict(n_classes or {})
        _check_config(cfg, d_enc, n_columns, tasks, n_classes)
        self.config = cfg
        self.d_enc = d_enc
        self.n_columns = n_columns
        self.tasks: dict[str, TaskKind] = dict(tasks)
        self.n_classes = {t: n_classes[t] for t, k in self.tasks.items() if k == "classification"}
        self.project = nn.Sequential(nn.Linear(d_enc, cfg.d_model), nn.LayerNorm(cfg.d_model))
        # N(0, 1) init, the scale of the LayerNorm'd cell tokens: a 0.02-scale init (BERT) is
        # drowned by the content and needs many more steps to separate equal cells
        self.column_embedding = (
            nn.Embedding(n_columns, cfg.d_model) if cfg.column_embeddings else None
        )
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.d_model) * 0.02)
        # one value map per column: W_j e(x_ij), e the piecewise-linear encoding of the number
        self.value_weight = (
            nn.Parameter(torch.randn(n_columns, cfg.value_bins, cfg.d_model) / cfg.value_bins**0.5)
            if cfg.value_bins
            else None
        )
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.heads,
            dim_feedforward=cfg.ff,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, cfg.layers, norm=nn.LayerNorm(cfg.d_model), enable_nested_tensor=False
        )
        self.heads = nn.ModuleDict(
            {
                name: _head(
                    cfg.d_model,
                    cfg.head_hidden,
                    self.n_classes.get(name, 1),
                    cfg.dropout,
                )
                for name in self.tasks
            }
        )
        self.linear = (
            nn.ModuleDict(
                {n: nn.Linear(cfg.tabular_features, self.n_classes.get(n, 1)) for n in self.tasks}
            )
            if cfg.tabular_features
            else None
        )
        if self.linear is not None:
            for lin in self.linear.values():
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    # ------------------------------------------------------------------ inputs
    def _check(self, x: Tensor, cell_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Validated ``(x, present)``: x in the parameter dtype, present ``(B, m)`` bool."""
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise DataError(
                "PromptTransformer: cell embeddings must be a 3-D tensor",
                expected="(batch, n_columns, d_enc)",
                found=f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}",
                fix="stack the encoder outputs as (rows, cells, embedding dim)",
            )
        if not x.is_floating_point():
            raise DataError(
                "PromptTransformer: cell embeddings must be floating point",
                expected="a float tensor (float32 from the sentence encoder)",
                found=str(x.dtype),
                fix="convert with x.float()",
            )
        b, m, d = x.shape
        if d != self.d_enc:
            raise DataError(
                "PromptTransformer: cell embedding width does not match the model",
                expected=f"d_enc = {self.d_enc}",
                found=f"d_enc = {d} (x shape {tuple(x.shape)})",
                fix="build the model with the encoder's embedding dim, or use the same encoder",
            )
        if m != self.n_columns:
            raise DataError(
                "PromptTransformer: number of cells per row does not match the model",
                expected=f"{self.n_columns} cells (one per column)",
                found=f"{m} cells (x shape {tuple(x.shape)})",
                fix="keep every column and drop cells through cell_mask instead",
            )
        if cell_mask is None:
            present = torch.ones(b, m, dtype=torch.bool, device=x.device)
        else:
            if not isinstance(cell_mask, Tensor) or cell_mask.dtype != torch.bool:
                raise DataError(
                    "PromptTransformer: cell_mask must be a bool tensor",
                    expected="torch.bool, True = cell present",
                    found=f"{type(cell_mask).__name__} {getattr(cell_mask, 'dtype', '')}",
                    fix="pass mask.bool() (True keeps the cell)",
                )
            if tuple(cell_mask.shape) != (b, m):
                raise DataError(
                    "PromptTransformer: cell_mask shape does not match the cells",
                    expected=f"({b}, {m})",
                    found=str(tuple(cell_mask.shape)),
                    fix="give one flag per row and cell",
                )
            present = cell_mask.to(x.device)
        return x.to(self.cls.dtype), present

    def _embed(
        self, x: Tensor, present: Tensor, values: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Token sequence ``(B, 1 + m, d_model)`` and key padding mask ``(B, 1 + m)``."""
        b, m, _ = x.shape
        x = x.masked_fill(~present.unsqueeze(-1), 0.0)  # NaN/inf in dropped cells cannot leak
        h = self.project(x)
        if self.value_weight is not None and values is not None:
            v = values.to(h.dtype).masked_fill(~present.unsqueeze(-1), 0.0)
            h = h + torch.einsum("bmt,mtd->bmd", v, self.value_weight)
        if self.column_embedding is not None:
            h = h + self.column_embedding.weight[:m].unsqueeze(0)
        tokens = torch.cat([self.cls.expand(b, -1, -1), h], dim=1)
        padding = torch.cat([torch.zeros_like(present[:, :1]), ~present], dim=1)
        return tokens, padding

    # ----------------------------------------------------------------- forward
    def encode(
        self, x: Tensor, cell_mask: Tensor | None = None, values: Tensor | None = None
    ) -> Tensor:
        """Pooled row representation.

        Shape:
            x: ``(B, m, d_enc)``; cell_mask: ``(B, m)`` bool; values: ``(B, m, value_bins)``.
            Output: ``(B, d_model)``.
        """
        x, present = self._check(x, cell_mask)
        tokens, padding = self._embed(x, present, values)
        out = self.encoder(tokens, src_key_padding_mask=padding)
        return POOLINGS[self.config.pooling](out, present)

    def forward(
        self,
        x: Tensor,
        cell_mask: Tensor | None = None,
        values: Tensor | None = None,
        tabular: Tensor | None = None,
        offset: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        r"""One output per task: ``(B, C)`` logits or a ``(B,)`` standardised regression value.

        .. math::
            o_t = g_t(\mathrm{pool}(H^{(L)})) + V_t\,u + b_t + \omega_t,

        with :math:`u` the standardised raw features (``tabular``, when the linear path is on)
        and :math:`\omega_t` a fixed per-row offset (``offset[t]``, e.g. a cross-fitted
        logistic model's log-probabilities), so the transformer learns a residual.

        Shape:
            tabular: ``(B, tabular_features)``; offset[t]: ``(B, C)`` or ``(B,)``.
        """
        pooled = self.encode(x, cell_mask, values)
        out = {}
        for name, head in self.heads.items():
            o = head(pooled)
            if self.linear is not None and tabular is not None:
                o = o + self.linear[name](tabular.to(o.dtype))
            o = o if self.tasks[name] == "classification" else o[:, 0]
            if offset is not None and name in offset:
                o = o + offset[name].to(o.dtype)
            out[name] = o
        return out

    def attention_weights(self, x: Tensor, cell_mask: Tensor | None = None) -> Tensor:
        r"""Last layer's [CLS] -> cell attention, averaged over heads, for explanations.

        Row ``b`` holds :math:`\alpha_{b,j}`, the weight the [CLS] query of the last encoder
        layer puts on cell ``j``. Dropped cells get exactly 0; the remainder
        :math:`1 - \sum_j \alpha_{b,j}` is the weight of [CLS] on itself. Call in ``eval()``
        mode for deterministic weights (attention dropout is active in training mode).

        Shape:
            x: ``(B, m, d_enc)``; cell_mask: ``(B, m)`` bool. Output: ``(B, m)`` in [0, 1].
        """
        x, present = self._check(x, cell_mask)
        h, padding = self._embed(x, present)
        layers = list(self.encoder.layers)
        for layer in layers[:-1]:
            h = layer(h, src_key_padding_mask=padding)
        last = layers[-1]
        q = last.norm1(h)  # pre-norm: attention reads the normalised tokens
        _, weights = last.self_attn(
            q, q, q, key_padding_mask=padding, need_weights=True, average_attn_weights=True
        )
        return weights[:, 0, 1:]


def piecewise_linear_encoding(x: Tensor, edges: Tensor) -> Tensor:
    r"""Piecewise-linear encoding of numbers (Gorishniy, Rubachev, Babenko, *On embeddings for
    numerical features in tabular deep learning*, NeurIPS 2022, arXiv 2203.05556).

    With bin edges :math:`b_0 < \dots < b_T` (training quantiles), component :math:`t` is
    :math:`\min(1, \max(0, (x - b_{t-1}) / (b_t - b_{t-1})))`: 1 for bins below ``x``, the
    position inside ``x``'s own bin, 0 above. NaN (missing) encodes as zeros.

    Shape:
        x: ``(...,)``; edges: ``(T + 1,)`` increasing. Output: ``(..., T)``.

    Example:
        >>> piecewise_linear_encoding(torch.tensor([0.5, 2.0, float("nan")]),
        ...                           torch.tensor([0.0, 1.0, 3.0]))
        tensor([[0.5000, 0.0000],
                [1.0000, 0.5000],
                [0.0000, 0.0000]])
    """
    lo, width = edges[:-1], (edges[1:] - edges[:-1]).clamp_min(1e-12)
    out = ((x.unsqueeze(-1) - lo) / width).clamp(0.0, 1.0)
    return torch.nan_to_num(out, nan=0.0)


def _check_config(
    cfg: PromptTransformerConfig,
    d_enc: int,
    n_columns: int,
    tasks: Mapping[str, str],
    n_classes: Mapping[str, int],
) -> None:
    """ConfigError for an architecture or task list that cannot be built."""
    if cfg.d_model % cfg.heads != 0:
        raise ConfigError(
            "PromptTransformerConfig: heads must divide d_model",
            expected="d_model % heads == 0",
            found=f"d_model={cfg.d_model}, heads={cfg.heads}",
            fix="e.g. d_model=128 with heads=4",
        )
    if cfg.pooling not in POOLINGS:
        raise ConfigError(
            "PromptTransformerConfig: unknown pooling",
            expected=" | ".join(POOLINGS),
            found=repr(cfg.pooling),
            fix="choose one of the listed poolings",
        )
    for name, value in (("layers", cfg.layers), ("d_enc", d_enc), ("n_columns", n_columns)):
        if value < 1:
            raise ConfigError(
                f"PromptTransformer: {name} must be >= 1",
                expected=">= 1",
                found=value,
                fix=f"set {name} to a positive integer",
            )
    if not tasks:
        raise ConfigError(
            "PromptTransformer: no task given",
            expected="at least one task, e.g. {'death': 'classification'}",
            found="{}",
            fix="pass the tasks to predict",
        )
    kinds = get_args(TaskKind)
    for name, kind in tasks.items():
        if kind not in kinds:
            raise ConfigError(
                f"PromptTransformer: unknown kind for task {name!r}",
                expected=" | ".join(kinds),
                found=repr(kind),
                fix="use 'classification' or 'regression'",
            )
        if kind == "classification" and int(n_classes.get(name, 0)) < 2:
            raise ConfigError(
                f"PromptTransformer: classification task {name!r} needs n_classes >= 2",
                expected="n_classes[task] >= 2 (2 for a binary outcome)",
                found=n_classes.get(name),
                fix=f"pass n_classes={{{name!r}: 2}}",
            )


# ---------------------------------------------------------------------- losses
REGRESSION_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "huber": F.huber_loss,  # delta = 1 on the standardised scale
}


def _classification_loss(logits: Tensor, target: Tensor, regression_loss: str) -> Tensor:
    """Cross-entropy over rows whose target is not ``IGNORE_CLASS``."""
    keep = target != IGNORE_CLASS
    if not keep.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], target[keep].long())


def _regression_loss(pred: Tensor, target: Tensor, regression_loss: str) -> Tensor:
    """Regression loss over rows whose target is not NaN."""
    keep = ~torch.isnan(target)
    if not keep.any():
        return pred.sum() * 0.0
    return REGRESSION_LOSSES[regression_loss](pred[keep], target[keep].to(pred.dtype))


_TASK_LOSSES: dict[str, Callable[[Tensor, Tensor, str], Tensor]] = {
    "classification": _classification_loss,
    "regression": _regression_loss,
}


def task_losses(
    outputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    tasks: Mapping[str, TaskKind],
    regression_loss: RegressionLoss = "mse",
) -> dict[str, Tensor]:
    r"""Per-task losses: cross-entropy for classification, MSE / L1 / Huber for regression.

    Rows without a label for a task are skipped in that task's loss: class target
    ``IGNORE_CLASS`` (-100) or a NaN regression target. A task with no labelled row in the batch
    contributes a zero that keeps the graph connected.

    Shape:
        outputs[t]: ``(B, C)`` logits or ``(B,)``; targets[t]: ``(B,)`` int64 class or float.
        Output: ``{task: scalar}``.
    """
    if regression_loss not in REGRESSION_LOSSES:
        raise ConfigError(
            "task_losses: unknown regression loss",
            expected=" | ".join(REGRESSION_LOSSES),
            found=repr(regression_loss),
            fix="choose one of the listed losses",
        )
    losses: dict[str, Tensor] = {}
    for name, kind in tasks.items():
        if name not in outputs or name not in targets:
            raise DataError(
                f"task_losses: task {name!r} lacks an output or a target",
                expected=f"both outputs[{name!r}] and targets[{name!r}]",
                found=f"outputs: {sorted(outputs)}, targets: {sorted(targets)}",
                fix="build the model and the batch with the same task names",
            )
        out, target = outputs[name], targets[name]
        if target.shape[0] != out.shape[0]:
            raise DataError(
                f"task_losses: task {name!r} has {target.shape[0]} targets for {out.shape[0]} rows",
                expected="one target per row",
                found=f"output {tuple(out.shape)}, target {tuple(target.shape)}",
                fix="check the batch collation",
            )
        losses[name] = _TASK_LOSSES[kind](out, target.reshape(-1), regression_loss)
    return losses


def multitask_loss(
    outputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    tasks: Mapping[str, TaskKind],
    weights: Mapping[str, float] | None = None,
    regression_loss: RegressionLoss = "mse",
) -> Tensor:
    r"""Weighted sum of the per-task losses of :func:`task_losses`.

    .. math::
        \mathcal L = \sum_t w_t\,\mathcal L_t,\qquad
        \mathcal L_t = \begin{cases}
            -\frac{1}{|B_t|}\sum_{i\in B_t} \log \mathrm{softmax}(o_{it})_{y_{it}}
                & \text{classification}\\
            \frac{1}{|B_t|}\sum_{i\in B_t} \ell(o_{it} - y_{it}),\
            \ell \in \{u^2, |u|, \mathrm{huber}_1(u)\} & \text{regression,}
        \end{cases}

    with :math:`B_t` the rows labelled for task :math:`t` and :math:`w_t = 1` by default.

    Shape:
        as :func:`task_losses`. Output: scalar.

    Example:
        >>> out = {"d": torch.zeros(2, 2), "los": torch.zeros(2)}
        >>> tgt = {"d": torch.tensor([0, 1]), "los": torch.tensor([1.0, -1.0])}
        >>> kinds = {"d": "classification", "los": "regression"}
        >>> round(float(multitask_loss(out, tgt, kinds, {"d": 1.0, "los": 0.5})), 4)  # ln 2 + 0.5
        1.1931
    """
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(tasks))
    if unknown:
        raise ConfigError(
            "multitask_loss: weights name tasks the model does not have",
            expected=f"a subset of {sorted(tasks)}",
            found=unknown,
            fix="fix the task names in the loss weights",
        )
    losses = task_losses(outputs, targets, tasks, regression_loss)
    return torch.stack([weights.get(name, 1.0) * loss for name, loss in losses.items()]).sum()
