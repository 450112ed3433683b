r"""The DIB network: modality encoders, unimodal and multimodal stochastic bottlenecks, fusion.

Flow (MIB lineage, Mai et al. 2022): per modality, encoder :math:`h_m = E_m(x_m)`, then the
stochastic encoder :math:`z_m = \mu_m(h_m) + \sigma_m(h_m)\,\varepsilon`; fusion
:math:`f = F(z_t, z_a, z_v)`; multimodal bottleneck
:math:`z_f = \mu_f(f) + \sigma_f(f)\,\varepsilon`; prediction
:math:`\hat y = w^\top \mathrm{dropout}(z_f) + b`.

Batch keys read by :class:`DIBModel`: ``"text"`` ``(B, L, d_t)``, ``"audio"`` ``(B, T_a, d_a)``,
``"vision"`` ``(B, T_v, d_v)`` float features; ``"<modality>_lengths"`` ``(B,)`` int64 valid frames
(optional: all frames valid); ``"text_bert"`` ``(B, 3, L)`` int64 (input ids, attention mask,
segment ids) when ``text_encoder = "bert"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clinfuse.core.errors import ConfigError, DataError, require
from clinfuse.methods.dib.config import DIBConfig
from clinfuse.methods.dib.fusion import (
    FUSIONS,
    POOLINGS,
    Dropouts,
    padding_mask,
    transformer_layer,
    valid_lengths,
)

__all__ = [
    "BertTextEncoder",
    "DIBModel",
    "Dropouts",
    "Encoded",
    "FeatureEncoder",
    "StochasticEncoder",
    "gaussian_kl",
    "sinusoidal_positions",
]


class Encoded(NamedTuple):
    """What a modality encoder returns."""

    pooled: Tensor
    """``(B, hidden)`` pooled representation :math:`h_m`."""
    tokens: Tensor
    """``(B, T, hidden)`` token sequence (read by MBT)."""
    lengths: Tensor
    """``(B,)`` int64 valid tokens, clamped to ``[1, T]``."""


def sinusoidal_positions(steps: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    r"""Sinusoidal position table :math:`[\sin(t\,\omega_i), \cos(t\,\omega_i)]`, ``(steps, dim)``.

    :math:`\omega_i = 10000^{-2i/\mathrm{dim}}`; odd ``dim`` drops the last cosine column.
    """
    half = (dim + 1) // 2
    t = torch.arange(steps, device=device, dtype=torch.float32).unsqueeze(1)
    omega = torch.exp(-math.log(10000.0) * torch.arange(half, device=device) * 2.0 / dim)
    table = torch.cat([torch.sin(t * omega), torch.cos(t * omega)], dim=1)[:, :dim]
    return table.to(dtype)


class _Sinusoidal(nn.Module):
    def __init__(self, dim: int, max_positions: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, steps: int, like: Tensor) -> Tensor:
        return sinusoidal_positions(steps, self.dim, like.device, like.dtype)


class _Learned(nn.Module):
    def __init__(self, dim: int, max_positions: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(max_positions, dim) * 0.02)

    def forward(self, steps: int, like: Tensor) -> Tensor:
        if steps > self.table.shape[0]:
            raise DataError(
                "a sequence is longer than the learned position table",
                expected=f"at most max_positions={self.table.shape[0]} frames",
                found=f"{steps} frames",
                fix=f"--set max_positions={steps}, or --set positional=sinusoidal",
            )
        return self.table[:steps]


POSITIONALS: dict[str, Callable[[int, int], nn.Module]] = {
    "sinusoidal": _Sinusoidal,
    "learned": _Learned,
}
"""Position encodings by ``DIBConfig.positional`` name: ``(dim, max_positions) -> module``."""


class FeatureEncoder(nn.Module):
    r"""Precomputed features to one vector: Conv1d, positions, MulT-style transformer, pooling.

    :math:`T = \mathrm{Transformer}(\sqrt{d}\,\mathrm{Conv1d}(x) + P)`, then pooling over the
    valid frames (``last_valid``, ``mean``, ``cls`` or the literal last frame ``last``). The
    convolution uses 'same' padding, so frame ``t`` of the output belongs to input frame ``t`` and
    the lengths stay valid. Padded frames are zeroed before the convolution and masked as attention
    keys, so their content cannot reach the valid frames.

    Shape:
        x: ``(B, T, in_dim)``; lengths: ``(B,)`` or None (all frames valid).
        Output: :class:`Encoded` with pooled ``(B, hidden)`` and tokens ``(B, T, hidden)``.

    Example:
        >>> enc = FeatureEncoder(5, 10, n_heads=2, n_layers=1).eval()
        >>> enc(torch.randn(3, 7, 5), torch.tensor([7, 4, 1])).pooled.shape
        torch.Size([3, 10])
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        kernel: int = 3,
        n_heads: int = 5,
        n_layers: int = 3,
        dropouts: Dropouts | None = None,
        pooling: str = "last_valid",
        *,
        conv_bias: bool = True,
        positional: str = "sinusoidal",
        max_positions: int = 1024,
    ) -> None:
        super().__init__()
        dropouts = dropouts or Dropouts()
        self.hidden = hidden
        self.proj = nn.Conv1d(in_dim, hidden, kernel, padding="same", bias=conv_bias)
        self.positions = POSITIONALS[positional](hidden, max_positions)
        self.embed_dropout = nn.Dropout(dropouts.embed)
        self.transformer = (
            nn.TransformerEncoder(
                transformer_layer(hidden, n_heads, dropouts),
                n_layers,
                norm=nn.LayerNorm(hidden),
                enable_nested_tensor=False,
            )
            if n_layers > 0
            else None
        )
        self.pooling = POOLINGS[pooling]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Encoded:
        batch, steps, _ = x.shape
        lengths = valid_lengths(lengths, batch, steps, x.device)
        pad = padding_mask(lengths, steps)
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)  # the conv must not read padded frames
        tokens = self.proj(x.transpose(1, 2)).transpose(1, 2)  # (B, T, hidden)
        tokens = math.sqrt(self.hidden) * tokens + self.positions(steps, tokens)
        tokens = self.embed_dropout(tokens)
        if self.transformer is not None:
            tokens = self.transformer(tokens, src_key_padding_mask=pad)
        return Encoded(self.pooling(tokens, lengths), tokens, lengths)


class BertTextEncoder(nn.Module):
    r"""A local Hugging Face BERT, then ``Conv1d(768 -> hidden, k=3, bias=False)`` and pooling.

    The weights are read with ``AutoModel.from_pretrained(path, local_files_only=True)``; nothing
    is downloaded. ``transformers`` comes from the ``text`` extra. Hidden states at PAD positions
    are zeroed before the convolution, so they cannot leak into the last valid token.

    Shape:
        text_bert: ``(B, 3, L)`` int64 rows (input ids, attention mask, segment ids).
        Output: :class:`Encoded`, pooled ``(B, hidden)``, lengths = attention-mask sums.
    """

    def __init__(
        self,
        path: str | Path,
        hidden: int,
        pooling: str = "last_valid",
        kernel: int = 3,
        *,
        finetune: bool = True,
    ) -> None:
        super().__init__()
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(
                "bert_path is not a local Hugging Face model directory",
                expected="a directory with config.json and the weights (e.g. bert-base-uncased)",
                found=str(folder) if folder.exists() else f"{folder} (does not exist)",
                fix="save a model there with AutoModel.save_pretrained, then --set bert_path=DIR",
            )
        transformers = require("transformers", "text")
        self.bert = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
        self.bert.requires_grad_(finetune)
        width = int(self.bert.config.hidden_size)
        self.proj = nn.Conv1d(width, hidden, kernel, padding="same", bias=False)
        self.pooling = POOLINGS[pooling]

    def forward(self, text_bert: Tensor, lengths: Tensor | None = None) -> Encoded:
        ids, mask, segments = (text_bert[:, i].long() for i in range(3))
        states = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=segments)
        hidden = states.last_hidden_state * mask.unsqueeze(-1).to(states.last_hidden_state.dtype)
        tokens = self.proj(hidden.transpose(1, 2)).transpose(1, 2)
        lengths = valid_lengths(mask.sum(1), ids.shape[0], ids.shape[1], ids.device)
        return Encoded(self.pooling(tokens, lengths), tokens, lengths)


class StochasticEncoder(nn.Module):
    r"""Gaussian encoder :math:`q(z \mid h) = \mathcal N(\mu(h), \mathrm{diag}\,\sigma(h)^2)`.

    :math:`e = \mathrm{ReLU}(W_1 h)`, :math:`\mu = W_\mu e`,
    :math:`\sigma = \mathrm{softplus}(W_\sigma e - \mathrm{offset})` (about 0.0067 at zero input
    with the default offset 5). Training: :math:`z = \mu + \sigma\,\varepsilon`,
    :math:`\varepsilon \sim \mathcal N(0, I)` (from ``generator`` if given); eval: :math:`z = \mu`.
    ``stochastic=False`` (``ib = "none"``) drops the :math:`\sigma` branch: :math:`z = \mu`,
    :math:`\sigma = 0`, with the same :math:`\mu` network, so only noise and regulariser differ.

    The linear maps act on the last axis, so ``h`` may also be a token sequence ``(B, T, in_dim)``.

    Shape:
        h: ``(..., in_dim)``. Output: ``(z, mu, sigma)``, each ``(..., out_dim)``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        sigma_offset: float = 5.0,
        *,
        stochastic: bool = True,
    ) -> None:
        super().__init__()
        self.sigma_offset = sigma_offset
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, out_dim)
        self.sigma = nn.Linear(hidden, out_dim) if stochastic else None

    def forward(
        self, h: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        e = self.body(h)
        mu = self.mu(e)
        if self.sigma is None:
            return mu, mu, torch.zeros_like(mu)
        sigma = F.softplus(self.sigma(e) - self.sigma_offset)
        if not self.training:
            return mu, mu, sigma
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + sigma * eps, mu, sigma


def gaussian_kl(mu: Tensor, sigma: Tensor) -> Tensor:
    r"""Batch mean of :math:`\mathrm{KL}(\mathcal N(\mu, \sigma^2) \| \mathcal N(0, I))`.

    .. math::
        \mathrm{KL} = \tfrac12 \sum_{j} \big(\mu_j^2 + \sigma_j^2 - 1 - \ln \sigma_j^2\big)

    summed over the latent axis (the last), averaged over all leading axes; in nats.

    Shape:
        mu, sigma: ``(B, d)``, ``sigma > 0``. Output: ``()``.

    Example:
        >>> gaussian_kl(torch.zeros(4, 3), torch.ones(4, 3))
        tensor(0.)
    """
    var = sigma.square()
    kl = 0.5 * (mu.square() + var - 1.0 - torch.log(var)).sum(-1)
    return kl.mean()


def _resolve_dims(cfg: DIBConfig, dims: Mapping[str, int]) -> dict[str, int]:
    """Feature size per feature-encoded modality: the config's, checked against the data's."""
    resolved = {}
    for m in cfg.modalities:
        if m == "text" and cfg.text_encoder == "bert":
            continue
        want, have = cfg.feature_dim(m), dims.get(m)
        if want is None and have is None:
            raise DataError(
                f"the {m} feature size is unknown",
                expected=f"dims[{m!r}] from the data, or {m}_dim in the config",
                found=f"dims keys {sorted(dims)}",
                fix=f"--set {m}_dim=<size of the last axis of the {m} features>",
            )
        if want is not None and have is not None and want != have:
            raise DataError(
                f"{m} features have {have} dims but the config says {m}_dim={want}",
                expected=f"{m} feature size {want}",
                found=f"{have}",
                fix=f"--set {m}_dim={have} (or leave {m}_dim unset to take it from the data)",
            )
        resolved[m] = int(want if want is not None else have)  # type: ignore[arg-type]
    return resolved


def _dropouts(cfg: DIBConfig) -> Dropouts:
    return Dropouts(cfg.attn_dropout, cfg.relu_dropout, cfg.res_dropout, cfg.embed_dropout)


def _feature_encoder(cfg: DIBConfig, modality: str, in_dim: int) -> nn.Module:
    return FeatureEncoder(
        in_dim,
        cfg.hidden,
        cfg.conv_kernel,
        cfg.n_heads,
        cfg.n_layers,
        _dropouts(cfg),
        cfg.text_pooling if modality == "text" else cfg.av_pooling,
        conv_bias=modality != "text",
        positional=cfg.positional,
        max_positions=cfg.max_positions,
    )


def _bert_encoder(cfg: DIBConfig, modality: str, in_dim: int) -> nn.Module:
    assert cfg.bert_path is not None  # DIBConfig.validate guarantees it
    return BertTextEncoder(
        cfg.bert_path, cfg.hidden, cfg.text_pooling, cfg.conv_kernel, finetune=cfg.bert_finetune
    )


_TEXT_ENCODERS: dict[str, Callable[[DIBConfig, str, int], nn.Module]] = {
    "features": _feature_encoder,
    "bert": _bert_encoder,
}


class DIBModel(nn.Module):
    r"""DIB: encoders, unimodal bottlenecks, attention-bottleneck fusion, multimodal bottleneck.

    Args:
        config: the method's config; validated on construction.
        dims: feature size per modality from the data (``{"text": 768, "audio": 5, ...}``);
            a size set in the config must match it.

    Forward output (a dict):
        ``pred`` ``(B,)``; per modality (dicts keyed by modality) ``h`` (encoder output before the
        bottleneck), ``z`` (sampled latent; :math:`\mu` in eval), ``mu``, ``sigma`` (zeros when
        ``ib = "none"``), all ``(B, hidden)``; ``fused`` (fusion output, the multimodal bottleneck's
        input), ``z_fused``, ``mu_fused``, ``sigma_fused`` ``(B, hidden)``; ``pred_m`` (dict of
        ``(B,)``) when ``per_modality_heads``.

    With ``fusion = "mbt"`` the unimodal bottleneck acts token-wise on the encoder sequences,
    MBT fuses the latent token sequences, and ``z``/``mu``/``sigma`` are those sequences pooled
    like the encoder (for ``last_valid``/``cls``/``last`` this equals the bottleneck of ``h``).
    """

    def __init__(self, config: DIBConfig, dims: Mapping[str, int]) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.modalities = tuple(config.modalities)
        self.dims = _resolve_dims(config, dims)
        self.encoders = nn.ModuleDict(
            {
                m: (_TEXT_ENCODERS[config.text_encoder] if m == "text" else _feature_encoder)(
                    config, m, self.dims.get(m, 0)
                )
                for m in self.modalities
            }
        )
        stochastic = config.ib != "none"

        def bottleneck() -> StochasticEncoder:
            return StochasticEncoder(
                config.hidden,
                config.ib_hidden,
                config.hidden,
                config.sigma_offset,
                stochastic=stochastic,
            )

        self.ib = nn.ModuleDict({m: bottleneck() for m in self.modalities})
        self.fusion = FUSIONS.get(config.fusion).from_config(config)
        self.ib_fused = bottleneck()
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, 1)
        self.heads = (
            nn.ModuleDict({m: nn.Linear(config.hidden, 1) for m in self.modalities})
            if config.per_modality_heads
            else None
        )
        self.late_heads = (
            nn.ModuleDict({m: nn.Linear(config.hidden, 1) for m in self.modalities})
            if self.fusion.additive
            else None
        )

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: BERT weights at ``lr_bert``, everything else at ``lr``."""
        bert, rest = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (bert if ".bert." in f".{name}" else rest).append(p)
        groups = [{"params": rest, "lr": self.config.lr}]
        if bert:
            groups.append({"params": bert, "lr": self.config.lr_bert})
        return groups

    def _input(self, modality: str, batch: Mapping[str, Tensor]) -> Tensor:
        key = "text_bert" if modality == "text" and self.config.text_encoder == "bert" else modality
        if key not in batch:
            raise DataError(
                f"the batch has no {key!r} entry",
                expected=f"keys {[*self.modalities]} (+ '<m>_lengths', 'label')",
                found=f"keys {sorted(batch)}",
                fix=f"check the data loader, or drop {modality} with --set modalities=...",
            )
        x = batch[key]
        if key == "text_bert":
            if x.ndim != 3 or x.shape[1] != 3:
                raise DataError(
                    "text_bert must hold (input ids, attention mask, segment ids)",
                    expected="shape (B, 3, L)",
                    found=f"shape {tuple(x.shape)}",
                    fix="use the MMSA pickle's text_bert array",
                )
            return x
        want = self.dims[modality]
        if x.ndim != 3 or x.shape[-1] != want:
            fix = (
                f"--set {modality}_dim={x.shape[-1]} (or leave it unset to take it from the data)"
                if x.ndim == 3
                else f"give {modality} as (batch, time, features)"
            )
            raise DataError(
                f"{modality} features have shape {tuple(x.shape)}; the model expects {want} dims",
                expected=f"{modality}: shape (B, T, {want})",
                found=f"{modality}: shape {tuple(x.shape)}",
                fix=fix,
            )
        return x.to(self.head.weight.dtype)

    def forward(
        self, batch: Mapping[str, Tensor], *, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        enc: dict[str, Encoded] = {
            m: self.encoders[m](self._input(m, batch), batch.get(f"{m}_lengths"))
            for m in self.modalities
        }
        z, mu, sigma = {}, {}, {}
        tokens: dict[str, Tensor] | None = None
        if self.fusion.uses_tokens:
            tokens = {}
            for m in self.modalities:
                zs, mus, sigmas = self.ib[m](enc[m].tokens, generator)
                pool, lengths = self.encoders[m].pooling, enc[m].lengths
                tokens[m] = zs
                z[m], mu[m], sigma[m] = pool(zs, lengths), pool(mus, lengths), pool(sigmas, lengths)
        else:
            for m in self.modalities:
                z[m], mu[m], sigma[m] = self.ib[m](enc[m].pooled, generator)
        fused = self.fusion(z, tokens, {m: enc[m].lengths for m in self.modalities})
        z_fused, mu_fused, sigma_fused = self.ib_fused(fused, generator)
        if self.late_heads is not None:  # late fusion: average of per-modality scores
            scores = [self.late_heads[m](self.dropout(z[m])).squeeze(-1) for m in self.modalities]
            pred = torch.stack(scores).mean(0)
        else:
            pred = self.head(self.dropout(z_fused)).squeeze(-1)
        out: dict[str, Any] = {
            "pred": pred,
            "h": {m: enc[m].pooled for m in self.modalities},
            "z": z,
            "mu": mu,
            "sigma": sigma,
            "fused": fused,
            "z_fused": z_fused,
            "mu_fused": mu_fused,
            "sigma_fused": sigma_fused,
        }
        if self.heads is not None:
            out["pred_m"] = {m: self.heads[m](self.dropout(z[m])).squeeze(-1) for m in z}
        return out
