"""Attention-bottleneck fusion for DIB: the DIB latent bottleneck, MBT tokens, and concat.

Each fusion maps the unimodal latents ``z[m]`` (and, for MBT, their token sequences) to one fused
vector. They are registered in :data:`FUSIONS` under the names of ``DIBConfig.fusion``.

The module also holds the sequence helpers the encoders share (valid lengths, padding masks,
pooling over valid frames, and a MulT-style transformer layer).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from clinfuse.core.registry import Registry
from clinfuse.methods.dib.config import MODALITIES, DIBConfig

# --- sequence helpers --------------------------------------------------------------------------


def valid_lengths(lengths: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor:
    """Valid-frame counts as int64 on ``device``, clamped to ``[1, steps]``; None means all frames.

    A length of 0 (an empty sequence) is read as 1 so that attention always has a key to attend to.

    Shape:
        lengths: ``(B,)`` or None. Output: ``(B,)`` int64.
    """
    if lengths is None:
        return torch.full((batch,), steps, dtype=torch.long, device=device)
    return lengths.to(device=device).long().clamp(1, steps)


def padding_mask(lengths: Tensor, steps: int) -> Tensor:
    """Key-padding mask, True at padded frames (the ``nn.MultiheadAttention`` convention).

    Shape:
        lengths: ``(B,)``. Output: ``(B, steps)`` bool.

    Example:
        >>> padding_mask(torch.tensor([1, 3]), 3).tolist()
        [[False, True, True], [False, False, False]]
    """
    return torch.arange(steps, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)


def _pool_last_valid(seq: Tensor, lengths: Tensor) -> Tensor:
    return seq[torch.arange(seq.shape[0], device=seq.device), lengths - 1]


def _pool_mean(seq: Tensor, lengths: Tensor) -> Tensor:
    keep = (~padding_mask(lengths, seq.shape[1])).to(seq.dtype).unsqueeze(-1)
    return (seq * keep).sum(1) / keep.sum(1)


def _pool_cls(seq: Tensor, lengths: Tensor) -> Tensor:
    return seq[:, 0]


def _pool_last(seq: Tensor, lengths: Tensor) -> Tensor:
    return seq[:, -1]


Pooling = Callable[[Tensor, Tensor], Tensor]

POOLINGS: dict[str, Pooling] = {
    "last_valid": _pool_last_valid,
    "mean": _pool_mean,
    "cls": _pool_cls,
    "last": _pool_last,
}
"""Pooling over time, ``(seq (B, T, d), lengths (B,)) -> (B, d)``.

``last_valid`` takes frame ``lengths - 1``; ``mean`` averages the valid frames; ``cls`` takes frame
0; ``last`` takes frame ``T - 1`` whatever the lengths, i.e. the source's ``[:, :, -1]``, which
reads a PAD position on right-padded input (kept only for compatibility).
"""


class Dropouts(NamedTuple):
    """The four dropout rates of a MulT transformer."""

    attn: float = 0.5
    """On attention weights."""
    relu: float = 0.3
    """After the feed-forward ReLU."""
    res: float = 0.3
    """On the residual branches."""
    embed: float = 0.2
    """On the input tokens."""


def transformer_layer(dim: int, heads: int, dropouts: Dropouts) -> nn.TransformerEncoderLayer:
    """A pre-norm transformer layer with MulT's separate attention / ReLU / residual dropouts.

    ``nn.TransformerEncoderLayer`` takes one rate; MulT uses three, so the attention-weight and
    post-ReLU dropouts are set after construction (the residual rate is the constructor's).
    """
    layer = nn.TransformerEncoderLayer(
        dim,
        heads,
        dim_feedforward=4 * dim,
        dropout=dropouts.res,
        activation="relu",
        batch_first=True,
        norm_first=True,
    )
    layer.self_attn.dropout = dropouts.attn
    layer.dropout = nn.Dropout(dropouts.relu)
    return layer


# --- fusions -----------------------------------------------------------------------------------


class Fusion(nn.Module, abc.ABC):
    """Base of the fusion modules: ``forward(z, tokens, lengths) -> (B, dim)``.

    ``z[m]`` is the unimodal latent ``(B, dim)`` of modality ``m``. Fusions with
    ``uses_tokens = True`` read ``tokens[m]`` ``(B, T_m, dim)`` and ``lengths[m]`` ``(B,)`` instead.
    """

    uses_tokens: ClassVar[bool] = False
    additive: ClassVar[bool] = False
    """True for late fusion: the model predicts one score per modality and averages them."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg: DIBConfig) -> Fusion:
        """Build the fusion from a DIB config."""

    @abc.abstractmethod
    def forward(
        self,
        z: Mapping[str, Tensor],
        tokens: Mapping[str, Tensor] | None = None,
        lengths: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Fuse the modality latents into one ``(B, dim)`` vector."""


FUSIONS: Registry[type[Fusion]] = Registry("fusion")
"""Fusion modules by ``DIBConfig.fusion`` name."""


def _readout(streams: Tensor, modalities: Sequence[str], anchor: str) -> Tensor:
    """The anchor stream ``(B, d)`` of ``streams`` ``(B, M, d)``: text, or the modality mean."""
    if anchor == "text":
        return streams[:, list(modalities).index("text")]
    return streams.mean(1)


@FUSIONS.register("latent")
class LatentBottleneckFusion(Fusion):
    r"""DIB's attention-bottleneck fusion through a few learned latents [D].

    With :math:`X = [z_t; z_a; z_v] \in \mathbb{R}^{B \times M \times d}`, latents
    :math:`\Lambda \in \mathbb{R}^{K \times d}` and one scalar gate :math:`g_m` per modality,
    each of the ``iters`` shared-weight iterations does

    .. math::
        \Lambda' = \mathrm{softmax}(\Lambda X^\top / \sqrt d)\, X, \qquad
        z_m \leftarrow z_m + g_m\, \mathrm{softmax}(z_m \Lambda'^\top / \sqrt d)\, \Lambda'

    and the output is the text stream (text is the anchor). Single head, no Q/K/V projections.

    Reading of the source: the query of step 1 is always the parameter :math:`\Lambda` (not the
    previous :math:`\Lambda'`), and :math:`X` is re-stacked from the updated streams at every
    iteration, so the latents re-read what the modalities wrote; all streams are updated from the
    same :math:`\Lambda'`. The gates start at 0, so the fusion starts as the identity on text. With
    ``n_latents = 0`` (or ``iters = 0``) there is no cross-modal path: the output is the text input.

    Gradient note: at initialisation (all gates 0) only the text gate receives a gradient through
    the fused path; the latents and the other gates start learning once it moves.

    Shape:
        z[m]: ``(B, dim)`` for every modality. Output: ``(B, dim)``.

    Example:
        >>> fuse = LatentBottleneckFusion(8)
        >>> z = {m: torch.randn(2, 8) for m in ("text", "audio", "vision")}
        >>> torch.equal(fuse(z), z["text"])
        True
    """

    def __init__(
        self,
        dim: int,
        n_latents: int = 4,
        iters: int = 3,
        init_std: float = 0.02,
        modalities: Sequence[str] = MODALITIES,
        anchor: str = "text",
        gate_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim, self.n_latents, self.iters = dim, n_latents, iters
        self.modalities = tuple(modalities)
        self.anchor = anchor
        self.latents = nn.Parameter(torch.randn(n_latents, dim) * init_std)
        self.gates = nn.Parameter(torch.full((len(self.modalities),), float(gate_init)))

    @classmethod
    def from_config(cls, cfg: DIBConfig) -> LatentBottleneckFusion:
        return cls(
            cfg.hidden,
            cfg.n_latents,
            cfg.fusion_iters,
            cfg.latent_init_std,
            cfg.modalities,
            cfg.anchor,
            cfg.gate_init,
        )

    def forward(
        self,
        z: Mapping[str, Tensor],
        tokens: Mapping[str, Tensor] | None = None,
        lengths: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        x = torch.stack([z[m] for m in self.modalities], dim=1)  # (B, M, d)
        if self.n_latents == 0:
            return _readout(x, self.modalities, self.anchor)
        scale = 1.0 / math.sqrt(self.dim)
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, K, d)
        gates = self.gates.view(1, -1, 1)
        for _ in range(self.iters):
            read = torch.softmax(latents @ x.transpose(1, 2) * scale, dim=-1) @ x  # (B, K, d)
            write = torch.softmax(x @ read.transpose(1, 2) * scale, dim=-1) @ read  # (B, M, d)
            x = x + gates * write
        return _readout(x, self.modalities, self.anchor)


@FUSIONS.register("mbt")
class MBTFusion(Fusion):
    r"""Multimodal bottleneck transformer (Nagrani et al., NeurIPS 2021).

    Each modality has its own stack of ``n_layers`` transformer layers over its token sequence.
    From layer ``fusion_layer`` on, ``n_bottlenecks`` shared tokens :math:`z_b` are appended to
    every stream and averaged after the layer:

    .. math::
        [z_m^{l+1} \,\|\, \hat z_{b,m}^{l+1}] = \mathrm{Layer}_m^l([z_m^l \,\|\, z_b^l]), \qquad
        z_b^{l+1} = \tfrac1M \textstyle\sum_m \hat z_{b,m}^{l+1}.

    The bottleneck tokens are the only path between modalities; with ``n_bottlenecks = 0`` the
    streams never meet. A stream reads at layer ``l`` what the others wrote at layer ``l - 1``, so
    information crosses only with two or more fusion layers (``n_layers - fusion_layer >= 2``).

    Output: the text stream, layer-normed and pooled over its valid tokens (text is DIB's anchor);
    ``anchor = "mean"`` averages the pooled streams instead. With the text anchor, the other
    streams' last layer would only write to a bottleneck nobody reads, so it is not built.

    Shape:
        tokens[m]: ``(B, T_m, dim)``; lengths[m]: ``(B,)`` (None: all frames valid).
        Without tokens, each ``z[m]`` ``(B, dim)`` is read as a one-token sequence.
        Output: ``(B, dim)``.
    """

    uses_tokens: ClassVar[bool] = True

    def __init__(
        self,
        dim: int,
        n_bottlenecks: int = 4,
        n_layers: int = 2,
        fusion_layer: int = 0,
        heads: int = 5,
        dropouts: Dropouts | None = None,
        modalities: Sequence[str] = MODALITIES,
        anchor: str = "text",
        poolings: Mapping[str, str] | None = None,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        dropouts = dropouts or Dropouts()
        self.modalities = tuple(modalities)
        self.anchor = anchor
        fusing = fusion_layer < n_layers and n_bottlenecks > 0
        self.n_bottlenecks = n_bottlenecks if fusing else 0
        self.n_layers, self.fusion_layer = n_layers, fusion_layer
        poolings = poolings or {}
        self.poolings = {m: POOLINGS[poolings.get(m, "last_valid")] for m in self.modalities}
        read = [m for m in self.modalities if anchor != "text" or m == "text"]
        # A stream that is not read out matters only through what it writes to the bottleneck
        # before the last layer, so its last layer (all its layers without exchange) is not built.
        exchange = fusing and fusion_layer <= n_layers - 2
        others = n_layers - 1 if exchange else 0
        self.depth = {m: n_layers if m in read else others for m in self.modalities}
        self.layers = nn.ModuleDict(
            {
                m: nn.ModuleList(transformer_layer(dim, heads, dropouts) for _ in range(depth))
                for m, depth in self.depth.items()
            }
        )
        self.norms = nn.ModuleDict({m: nn.LayerNorm(dim) for m in read})
        self.bottleneck = nn.Parameter(torch.randn(self.n_bottlenecks, dim) * init_std)

    @classmethod
    def from_config(cls, cfg: DIBConfig) -> MBTFusion:
        return cls(
            cfg.hidden,
            n_bottlenecks=cfg.n_bottlenecks,
            n_layers=cfg.mbt_layers,
            fusion_layer=cfg.mbt_fusion_layer,
            heads=cfg.n_heads,
            dropouts=Dropouts(cfg.attn_dropout, cfg.relu_dropout, cfg.res_dropout, 0.0),
            modalities=cfg.modalities,
            anchor=cfg.anchor,
            poolings={m: cfg.text_pooling if m == "text" else cfg.av_pooling for m in MODALITIES},
            init_std=cfg.latent_init_std,
        )

    def forward(
        self,
        z: Mapping[str, Tensor],
        tokens: Mapping[str, Tensor] | None = None,
        lengths: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        x = dict(tokens) if tokens is not None else {m: z[m].unsqueeze(1) for m in self.modalities}
        lengths = lengths or {}
        first = x[self.modalities[0]]
        batch, device = first.shape[0], first.device
        lens = {
            m: valid_lengths(lengths.get(m), batch, x[m].shape[1], device) for m in self.modalities
        }
        pad = {m: padding_mask(lens[m], x[m].shape[1]) for m in self.modalities}
        shared = self.bottleneck.unsqueeze(0).expand(batch, -1, -1)  # (B, n_b, d)
        no_pad = torch.zeros(batch, self.n_bottlenecks, dtype=torch.bool, device=device)
        for depth in range(self.n_layers):
            active = [m for m in self.modalities if depth < self.depth[m]]
            if depth < self.fusion_layer or self.n_bottlenecks == 0:
                x.update(
                    {m: self.layers[m][depth](x[m], src_key_padding_mask=pad[m]) for m in active}
                )
                continue
            written = []
            for m in active:
                steps = x[m].shape[1]
                out = self.layers[m][depth](
                    torch.cat([x[m], shared], dim=1),
                    src_key_padding_mask=torch.cat([pad[m], no_pad], dim=1),
                )
                x[m] = out[:, :steps]
                written.append(out[:, steps:])
            shared = torch.stack(written).mean(0)
        pooled = {m: self.poolings[m](self.norms[m](x[m]), lens[m]) for m in self.norms}
        return torch.stack([pooled[m] for m in self.norms], dim=1).mean(1)


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    r"""Ablation baseline: :math:`W [z_t \| z_a \| z_v] + b`, no attention, no bottleneck.

    Shape:
        z[m]: ``(B, dim)``. Output: ``(B, dim)``.
    """

    def __init__(self, dim: int, modalities: Sequence[str] = MODALITIES) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.proj = nn.Linear(len(self.modalities) * dim, dim)

    @classmethod
    def from_config(cls, cfg: DIBConfig) -> ConcatFusion:
        return cls(cfg.hidden, cfg.modalities)

    def forward(
        self,
        z: Mapping[str, Tensor],
        tokens: Mapping[str, Tensor] | None = None,
        lengths: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        return self.proj(torch.cat([z[m] for m in self.modalities], dim=-1))


@FUSIONS.register("late")
class LateFusion(Fusion):
    r"""Late-fusion baseline: :math:`\hat y = \frac1M \sum_m w_m^\top z_m + b_m`, no interaction.

    The model reads ``additive`` and predicts with one linear head per modality, averaged, so the
    prediction is a sum of per-modality functions (it cannot represent a product of modalities).
    The fused vector returned here, the mean of the latents, only feeds the multimodal bottleneck's
    regulariser.

    Shape:
        z[m]: ``(B, dim)``. Output: ``(B, dim)``.
    """

    additive: ClassVar[bool] = True

    def __init__(self, modalities: Sequence[str] = MODALITIES) -> None:
        super().__init__()
        self.modalities = tuple(modalities)

    @classmethod
    def from_config(cls, cfg: DIBConfig) -> LateFusion:
        return cls(cfg.modalities)

    def forward(
        self,
        z: Mapping[str, Tensor],
        tokens: Mapping[str, Tensor] | None = None,
        lengths: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        return torch.stack([z[m] for m in self.modalities], dim=1).mean(1)
