r"""Residual-stream capture and difference-in-means refusal directions (Arditi et al. 2024).

For every decoder layer :math:`l` the refusal direction is the normalised difference between the
mean residual stream of harmful and harmless prompts at one token position (ProCon: the last prompt
token),

.. math::

    \mu^{(l)} = \frac{1}{|D_h|}\sum_{x\in D_h} h_l(x), \quad
    \nu^{(l)} = \frac{1}{|D_b|}\sum_{x\in D_b} h_l(x), \quad
    r^{(l)} = \frac{\mu^{(l)} - \nu^{(l)}}{\lVert \mu^{(l)} - \nu^{(l)} \rVert_2},

computed in float64. ``h_l(x)`` is the residual stream *entering* decoder layer ``l`` (a forward
pre-hook, as in ``andyrdt/refusal_direction``), so it equals ``output_hidden_states[l]`` of
transformers; layer index ``n_layers`` is the model's final output (after the final norm by default,
again like ``hidden_states[n_layers]``).

The decoder layers are found through PEFT wrappers (``PeftModel.get_base_model()``),
``torch.compile`` and DDP wrappers, and vision-language models (``model.language_model.layers``).
Hooks are plain ``torch`` hooks, registered inside a context manager that removes them on exit,
also on exceptions.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from clinfuse.core.errors import DataError
from clinfuse.core.runs import atomic_torch_save

log = logging.getLogger(__name__)

FORMAT = "clinfuse.procon.directions/1"
"""Tag stored in every saved :class:`DirectionSet`."""

Final = Literal["norm", "residual"]
"""What layer index ``n_layers`` captures: the final-norm output (``hidden_states[-1]`` of
transformers) or the raw residual stream leaving the last decoder layer."""

Positions = Literal["last"] | Tensor
"""``"last"``: the last non-pad token of each row (left or right padding); or an integer tensor of
per-row sequence indices, shape ``(B,)`` or ``(B, k)`` (negative indices count from the end)."""

# Attribute paths (after unwrapping PEFT / compile / DDP) that hold the list of decoder layers.
_LAYER_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Qwen2, Mistral, Gemma, SmolLM2
    "model.language_model.layers",  # transformers 5 VL models (Qwen2.5-VL, Llava, Gemma3)
    "language_model.model.layers",  # older VL layouts
    "language_model.layers",
    "model.decoder.layers",  # OPT
    "transformer.h",  # GPT-2, Falcon
    "gpt_neox.layers",
    "layers",  # a bare decoder (LlamaModel)
)
_NORM_NAMES: tuple[str, ...] = ("norm", "final_layernorm", "ln_f", "final_layer_norm")
_WRAPPERS: tuple[str, ...] = ("_orig_mod", "module")  # torch.compile, DDP/FSDP


# --------------------------------------------------------------------------- layer resolution
def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying transformers model behind PEFT, ``torch.compile`` and DDP wrappers.

    PEFT injects adapters in place, so the unwrapped model's decoder layers are the live modules.
    """
    seen: set[int] = set()
    while id(model) not in seen:
        seen.add(id(model))
        get_base = getattr(model, "get_base_model", None)
        if callable(get_base) and get_base() is not model:
            model = get_base()
            continue
        for name in _WRAPPERS:
            inner = getattr(model, name, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
    return model


def _get_path(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _layer_path(model: nn.Module) -> tuple[nn.Module, str]:
    base = unwrap_model(model)
    for path in _LAYER_PATHS:
        obj = _get_path(base, path)
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return base, path
    lists = [n for n, m in base.named_modules() if isinstance(m, nn.ModuleList)]
    raise DataError(
        f"no list of decoder layers found in {type(base).__name__}",
        expected=f"an nn.ModuleList at one of {list(_LAYER_PATHS)}",
        found=f"ModuleLists {lists[:12]}; top-level children "
        f"{[n for n, _ in base.named_children()]}",
        fix="pass a decoder-only transformers model (optionally wrapped by PEFT) or a VL model "
        "with a language_model",
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of ``model`` (``model.model.layers`` for Llama/Qwen), through wrappers.

    Raises:
        DataError: no layer list is found; the message lists the ModuleLists that were found.
    """
    base, path = _layer_path(model)
    return _get_path(base, path)


def final_norm(model: nn.Module) -> nn.Module | None:
    """The final norm after the last decoder layer (a sibling of the layer list), or None."""
    base, path = _layer_path(model)
    parent = _get_path(base, path.rpartition(".")[0]) if "." in path else base
    for name in _NORM_NAMES:
        mod = getattr(parent, name, None)
        if isinstance(mod, nn.Module):
            return mod
    return None


def _hidden_size(model: nn.Module) -> int:
    emb = model.get_input_embeddings()
    return int(emb.weight.shape[1])


# --------------------------------------------------------------------------- positions
def last_token_positions(attention_mask: Tensor, offsets: int | Sequence[int] = 0) -> Tensor:
    """Indices of the last non-pad token of each row, plus ``offsets`` (left or right padding).

    ``offsets=range(-k + 1, 1)`` gives the last ``k`` tokens (Arditi's post-instruction template).

    Shape:
        attention_mask: ``(B, T)`` of 0/1. Output: ``(B,)`` for an int offset, ``(B, k)`` otherwise.

    Example:
        >>> last_token_positions(torch.tensor([[0, 1, 1], [1, 1, 0]]))
        tensor([2, 1])
        >>> last_token_positions(torch.tensor([[0, 1, 1], [1, 1, 0]]), offsets=[-1, 0])
        tensor([[1, 2],
                [0, 1]])
    """
    mask = attention_mask.to(torch.bool)
    if mask.ndim != 2:
        raise DataError("attention_mask must be 2-D", expected="(B, T)", found=tuple(mask.shape))
    if not bool(mask.any(dim=1).all()):
        raise DataError(
            "a row of attention_mask has no non-pad token",
            expected="at least one 1 per row",
            found=f"empty rows {torch.nonzero(~mask.any(dim=1)).flatten().tolist()}",
            fix="drop empty prompts before tokenising",
        )
    t = mask.shape[1]
    last = t - 1 - torch.flip(mask, dims=[1]).to(torch.int8).argmax(dim=1)
    scalar = isinstance(offsets, int)
    off = torch.as_tensor([offsets] if scalar else list(offsets), dtype=torch.long)
    pos = last[:, None] + off.to(last.device)[None, :]
    if bool((pos < 0).any()) or bool((pos >= t).any()):
        raise DataError(
            "offsets move a position outside the sequence",
            expected=f"last token + offset within [0, {t})",
            found=f"offsets {off.tolist()}",
        )
    if not bool(mask.gather(1, pos).all()):
        raise DataError(
            "offsets reach pad tokens",
            expected="every selected position has attention_mask 1",
            found=f"offsets {off.tolist()}; shortest row has {int(mask.sum(1).min())} tokens",
            fix="use offsets no longer than the shortest prompt",
        )
    return pos[:, 0] if scalar else pos


def _resolve_positions(positions: Positions, attention_mask: Tensor) -> Tensor:
    if isinstance(positions, str):
        if positions != "last":
            raise DataError(
                "unknown positions", expected="'last' or an index tensor", found=positions
            )
        return last_token_positions(attention_mask)
    b, t = attention_mask.shape
    pos = torch.as_tensor(positions)
    if pos.dtype.is_floating_point or pos.dtype == torch.bool:
        raise DataError("positions must be integers", expected="torch.long", found=pos.dtype)
    if pos.ndim not in (1, 2) or pos.shape[0] != b:
        raise DataError(
            "bad positions shape", expected=f"({b},) or ({b}, k)", found=tuple(pos.shape)
        )
    if bool((pos < -t).any()) or bool((pos >= t).any()):
        raise DataError(
            "positions outside the sequence",
            expected=f"indices in [-{t}, {t})",
            found=f"min {int(pos.min())}, max {int(pos.max())}",
        )
    return torch.where(pos < 0, pos + t, pos).long()


def _gather(x: Tensor, pos: Tensor | None) -> Tensor:
    if pos is None:
        return x
    pos = pos.to(x.device)
    rows = torch.arange(x.shape[0], device=x.device)
    return x[rows, pos] if pos.ndim == 1 else x[rows[:, None], pos]


# --------------------------------------------------------------------------- capture
def _check_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    bad = [layer for layer in layers if not 0 <= int(layer) <= n_layers]
    if bad:
        raise DataError(
            "layer index outside the model",
            expected=f"0..{n_layers - 1} (decoder inputs) or {n_layers} (final output)",
            found=bad,
        )
    return [int(layer) for layer in layers]


@contextlib.contextmanager
def capture_residual(
    model: nn.Module,
    layers: Sequence[int] | None = None,
    *,
    positions: Tensor | None = None,
    final: Final = "norm",
    detach: bool = True,
) -> Iterator[dict[int, Tensor]]:
    """Record the residual stream entering the given decoder layers during forward passes.

    Layer ``l < n_layers`` is read by a forward pre-hook on decoder layer ``l``; ``l == n_layers``
    by a forward hook on the final norm (``final="norm"``) or on the last decoder layer
    (``final="residual"``). Each forward pass overwrites the dict. Hooks are removed on exit, also
    when the body raises.

    Shape:
        Yields ``{layer: (B, T, d)}``, or ``(B, d)`` / ``(B, k, d)`` when ``positions`` is
        ``(B,)`` / ``(B, k)`` (gathered inside the hook, so full sequences are never kept).

    Args:
        detach: False keeps the autograd graph (for a loss on the captured states).
    """
    blocks = decoder_layers(model)
    n = len(blocks)
    chosen = _check_layers(range(n) if layers is None else layers, n)
    store: dict[int, Tensor] = {}

    def keep(layer: int, x: Tensor) -> None:
        x = _gather(x, positions)
        store[layer] = x.detach() if detach else x

    def pre_hook(layer: int):
        def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
            keep(layer, args[0] if args else kwargs["hidden_states"])

        return hook

    def post_hook(_mod: nn.Module, _args: tuple, out: Any) -> None:
        keep(n, out[0] if isinstance(out, tuple) else out)

    handles = []
    try:
        for layer in chosen:
            if layer < n:
                handles.append(
                    blocks[layer].register_forward_pre_hook(pre_hook(layer), with_kwargs=True)
                )
            else:
                target = final_norm(model) if final == "norm" else blocks[n - 1]
                if target is None:
                    raise DataError(
                        "no final norm found next to the decoder layers",
                        expected=f"one of {list(_NORM_NAMES)}",
                        found=type(unwrap_model(model)).__name__,
                        fix="use final='residual'",
                    )
                handles.append(target.register_forward_hook(post_hook))
        yield store
    finally:
        for h in handles:
            h.remove()


def capture(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    layers: Sequence[int] | None = None,
    positions: Positions = "last",
    *,
    final: Final = "norm",
    grad: bool = False,
) -> dict[int, Tensor]:
    """One forward pass; the residual stream entering each layer at the chosen token positions.

    Shape:
        input_ids, attention_mask: ``(B, T)``. Output: ``{layer: (B, d)}`` (``(B, k, d)`` for
        ``(B, k)`` positions), in the model's dtype. ``layers=None`` takes ``0..n_layers-1``.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if input_ids.shape != attention_mask.shape:
        raise DataError(
            "input_ids and attention_mask differ in shape",
            expected=tuple(input_ids.shape),
            found=tuple(attention_mask.shape),
        )
    pos = _resolve_positions(positions, attention_mask)
    device = model.get_input_embeddings().weight.device
    ctx = contextlib.nullcontext() if grad else torch.no_grad()
    with ctx, capture_residual(model, layers, positions=pos, final=final, detach=not grad) as st:
        model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            use_cache=False,
        )
        return dict(st)


# --------------------------------------------------------------------------- directions
def diff_in_means(harmful: Tensor, harmless: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Unit difference-in-means direction :math:`r = (\mu - \nu)/\lVert\mu - \nu\rVert` in float64.

    Shape:
        harmful: ``(n, d)``, harmless: ``(m, d)``. Output: ``(r (d,), norm (), mu (d,), nu (d,))``.

    Example:
        >>> r, norm, _, _ = diff_in_means(torch.tensor([[3.0, 4.0]]), torch.zeros(2, 2))
        >>> r, norm
        (tensor([0.6000, 0.8000], dtype=torch.float64), tensor(5., dtype=torch.float64))
    """
    if harmful.ndim != 2 or harmless.ndim != 2 or harmful.shape[1] != harmless.shape[1]:
        raise DataError(
            "activations must be (n, d) with the same d",
            expected="(n, d) and (m, d)",
            found=(tuple(harmful.shape), tuple(harmless.shape)),
        )
    if harmful.shape[0] == 0 or harmless.shape[0] == 0:
        raise DataError("an activation set is empty", expected="n, m >= 1", found=(0,))
    mu = harmful.detach().to(torch.float64).mean(0)
    nu = harmless.detach().to(torch.float64).mean(0)
    diff = mu - nu
    norm = diff.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise DataError(
            "harmful and harmless means coincide or are not finite",
            expected="a finite non-zero mean difference",
            found=float(norm),
        )
    return diff / norm, norm, mu, nu


def projections(h: Tensor, r: Tensor) -> Tensor:
    r"""Scalar projection :math:`\langle h, r \rangle` of each state onto a (unit) direction.

    Computed in the wider of the two dtypes (float64 for a float64 ``r``); differentiable in ``h``.

    Shape:
        h: ``(..., d)``, r: ``(d,)``. Output: ``(...)``.

    Example:
        >>> projections(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([0.0, 1.0]))
        tensor([2., 4.])
    """
    dtype = torch.promote_types(h.dtype, r.dtype)
    return h.to(dtype) @ r.to(device=h.device, dtype=dtype)


def auroc(positive: Tensor | np.ndarray, negative: Tensor | np.ndarray) -> float:
    r"""Area under the ROC curve that ``positive`` scores rank above ``negative`` scores (ties 0.5).

    Mann-Whitney form with average ranks :math:`R`:
    :math:`\mathrm{AUC} = (\sum_{i\in P} R_i - n_P(n_P+1)/2)/(n_P n_N)`.

    Shape:
        positive: ``(n,)``, negative: ``(m,)``. Output: a float in [0, 1].

    Example:
        >>> auroc(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]))
        0.875
    """
    p = np.asarray(torch.as_tensor(positive).detach().cpu().double().flatten())
    q = np.asarray(torch.as_tensor(negative).detach().cpu().double().flatten())
    if p.size == 0 or q.size == 0 or not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise DataError(
            "AUROC needs finite scores in both classes",
            expected="non-empty finite arrays",
            found=f"{p.size} positive, {q.size} negative",
        )
    scores = np.concatenate([p, q])
    order = np.argsort(scores, kind="mergesort")
    sorted_s = scores[order]
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty_like(scores)
    ranks[order] = np.repeat(avg, counts)
    n_p, n_q = p.size, q.size
    return float((ranks[:n_p].sum() - n_p * (n_p + 1) / 2.0) / (n_p * n_q))


# --------------------------------------------------------------------------- fingerprint
def model_fingerprint(model: nn.Module, rows: int = 256) -> str:
    """``Class|d=..|L=..|emb=<hash>`` of the unwrapped model; the same for a PEFT-wrapped copy.

    The hash covers ``rows`` evenly spaced embedding rows rounded to bfloat16, so a float32 and a
    bfloat16 copy of the same checkpoint agree.
    """
    base = unwrap_model(model)
    weight = model.get_input_embeddings().weight.detach()
    idx = torch.linspace(0, weight.shape[0] - 1, min(rows, weight.shape[0])).round().long()
    sample = weight[idx.to(weight.device)].to("cpu", torch.bfloat16).float().contiguous()
    digest = hashlib.sha256(str(tuple(weight.shape)).encode() + sample.numpy().tobytes())
    n = len(decoder_layers(model))
    return f"{type(base).__name__}|d={weight.shape[1]}|L={n}|emb={digest.hexdigest()[:12]}"


# --------------------------------------------------------------------------- direction set
@dataclass(frozen=True, eq=False)
class DirectionSet:
    """Per-layer unit refusal directions of one model, with the raw norms and the class means.

    Shape:
        directions, mean_harmful, mean_harmless: ``(k, d)`` float64; norms: ``(k,)`` float64.
    """

    layers: tuple[int, ...]
    """Layer indices (``l < n_layers``: input of decoder layer l; ``n_layers``: final output)."""
    directions: Tensor
    """Unit directions r_l, one row per entry of ``layers``."""
    norms: Tensor
    """Raw norms ||mu_l - nu_l|| before normalisation."""
    hidden_size: int
    """Model hidden size d."""
    n_layers: int
    """Number of decoder layers of the model."""
    fingerprint: str
    """:func:`model_fingerprint` of the model the directions were computed on."""
    mean_harmful: Tensor | None = None
    """Class means mu_l (optional)."""
    mean_harmless: Tensor | None = None
    """Class means nu_l (optional)."""
    position: int = 0
    """Token offset from the last prompt token the directions were computed at (0: the last
    token; negative: Arditi's post-instruction template positions)."""

    def __post_init__(self) -> None:
        k, d = len(self.layers), self.hidden_size
        if tuple(self.directions.shape) != (k, d) or tuple(self.norms.shape) != (k,):
            raise DataError(
                "direction tensors do not match layers / hidden size",
                expected=f"directions ({k}, {d}), norms ({k},)",
                found=f"{tuple(self.directions.shape)}, {tuple(self.norms.shape)}",
            )
        for m in (self.mean_harmful, self.mean_harmless):
            if m is not None and tuple(m.shape) != (k, d):
                raise DataError("class means have the wrong shape", expected=(k, d), found=m.shape)
        if len(set(self.layers)) != k:
            raise DataError("duplicate layer indices", expected="unique", found=list(self.layers))
        _check_layers(self.layers, self.n_layers)

    def __getitem__(self, layer: int) -> Tensor:
        """Unit direction of ``layer``, shape ``(d,)``."""
        if layer not in self.layers:
            raise DataError("no direction for this layer", expected=list(self.layers), found=layer)
        return self.directions[self.layers.index(layer)]

    def project(self, acts: Mapping[int, Tensor]) -> dict[int, Tensor]:
        """``{layer: <h, r_l>}`` for captured ``{layer: (..., d)}`` activations."""
        return {layer: projections(h, self[layer]) for layer, h in acts.items()}

    def cosine(self, other: DirectionSet) -> dict[int, float]:
        """``{layer: cos(r_l, r'_l)}`` over the shared layers (direction drift)."""
        return {
            layer: float(self[layer] @ other[layer].to(self.directions))
            for layer in self.layers
            if layer in other.layers
        }

    def check_model(self, model: nn.Module, *, check_fingerprint: bool = True) -> None:
        """Raise :class:`DataError` if ``model`` is not the model these directions belong to."""
        _check_against(model, self.hidden_size, self.n_layers, self.fingerprint, check_fingerprint)

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors, ints and strings (loadable with ``weights_only=True``)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "layers": list(self.layers),
            "directions": self.directions.detach().cpu(),
            "norms": self.norms.detach().cpu(),
            "hidden_size": self.hidden_size,
            "n_layers": self.n_layers,
            "fingerprint": self.fingerprint,
            "position": int(self.position),
        }
        for key in ("mean_harmful", "mean_harmless"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.detach().cpu()
        return out

    def save(self, path: str | Path) -> Path:
        """Atomic ``torch.save`` of :meth:`to_dict`."""
        return atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(
        cls, path: str | Path, model: nn.Module | None = None, *, check_fingerprint: bool = True
    ) -> DirectionSet:
        """Load a saved set; with ``model``, first check it belongs to that model."""
        path = Path(path)
        if not path.is_file():
            raise DataError("direction file not found", expected="a saved DirectionSet", found=path)
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(
                "cannot read direction file", expected=FORMAT, found=f"{path}: {exc}"
            ) from exc
        keys = ("layers", "directions", "norms", "hidden_size", "n_layers", "fingerprint")
        if (
            not isinstance(raw, dict)
            or raw.get("format") != FORMAT
            or any(k not in raw for k in keys)
        ):
            raise DataError(
                "not a DirectionSet file",
                expected=f"format {FORMAT!r} with keys {list(keys)}",
                found=sorted(raw) if isinstance(raw, dict) else type(raw).__name__,
            )
        if model is not None:  # the model checks come before anything else in the file
            _check_against(
                model, raw["hidden_size"], raw["n_layers"], raw["fingerprint"], check_fingerprint
            )
        return cls(
            layers=tuple(int(x) for x in raw["layers"]),
            directions=raw["directions"],
            norms=raw["norms"],
            hidden_size=int(raw["hidden_size"]),
            n_layers=int(raw["n_layers"]),
            fingerprint=str(raw["fingerprint"]),
            mean_harmful=raw.get("mean_harmful"),
            mean_harmless=raw.get("mean_harmless"),
            position=int(raw.get("position", 0)),
        )


def _check_against(
    model: nn.Module, hidden_size: int, n_layers: int, fingerprint: str, check_fingerprint: bool
) -> None:
    checks: list[tuple[str, Any, Any]] = [
        ("hidden size", hidden_size, _hidden_size(model)),
        ("number of layers", n_layers, len(decoder_layers(model))),
    ]
    if check_fingerprint:
        checks.append(("model fingerprint", fingerprint, model_fingerprint(model)))
    for what, want, got in checks:
        if want != got:
            raise DataError(
                f"directions were computed on another model ({what} differs)",
                expected=want,
                found=got,
                fix="recompute the directions on this model, or load them against the model they "
                "came from (check_fingerprint=False skips only the weight hash)",
            )


Batch = tuple[Tensor, Tensor | None]
"""``(input_ids (N, T), attention_mask (N, T) or None)``."""


def class_means(
    model: nn.Module,
    batch: Batch,
    layers: Sequence[int],
    *,
    positions: Literal["last"] | int = "last",
    batch_size: int = 32,
    final: Final = "norm",
) -> dict[int, Tensor]:
    """Float64 mean residual stream per layer over all rows of ``batch``, in mini-batches.

    ``positions``: ``"last"`` or an int offset from the last non-pad token (``-1``: the one before).

    Shape:
        Output: ``{layer: (d,)}`` float64.
    """
    ids, mask = batch
    mask = torch.ones_like(ids) if mask is None else mask
    offset = 0 if positions == "last" else int(positions)
    sums: dict[int, Tensor] = {}
    for start in range(0, ids.shape[0], batch_size):
        m = mask[start : start + batch_size]
        pos = last_token_positions(m, offset)
        acts = capture(model, ids[start : start + batch_size], m, layers, pos, final=final)
        for layer, h in acts.items():
            s = h.to(torch.float64).sum(0).cpu()
            sums[layer] = s if layer not in sums else sums[layer] + s
    return {layer: s / ids.shape[0] for layer, s in sums.items()}


def compute_directions(
    model: nn.Module,
    harmful: Batch,
    harmless: Batch,
    layers: Sequence[int] | None = None,
    *,
    positions: Literal["last"] | int = "last",
    batch_size: int = 32,
    final: Final = "norm",
) -> DirectionSet:
    """Difference-in-means directions of ``model`` for every requested layer (default: all inputs).

    Shape:
        harmful / harmless: token batches ``(N, T)`` / ``(M, T')``. Output: a :class:`DirectionSet`.
    """
    n = len(decoder_layers(model))
    chosen = _check_layers(range(n) if layers is None else layers, n)
    kw: dict[str, Any] = {"positions": positions, "batch_size": batch_size, "final": final}
    mu = class_means(model, harmful, chosen, **kw)
    nu = class_means(model, harmless, chosen, **kw)
    rows = [diff_in_means(mu[layer][None], nu[layer][None]) for layer in chosen]
    log.info("refusal directions: %d layers, norms %s", len(chosen), [f"{r[1]:.3g}" for r in rows])
    return DirectionSet(
        layers=tuple(chosen),
        directions=torch.stack([r[0] for r in rows]),
        norms=torch.stack([r[1] for r in rows]),
        hidden_size=_hidden_size(model),
        n_layers=n,
        fingerprint=model_fingerprint(model),
        mean_harmful=torch.stack([r[2] for r in rows]),
        mean_harmless=torch.stack([r[3] for r in rows]),
        position=0 if positions == "last" else int(positions),
    )
