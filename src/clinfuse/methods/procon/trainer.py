r"""ProCon inside TRL's SFT loop: :class:`ProConSFTTrainer` and the :class:`DriftCallback`.

The trainer minimises

.. math::
    \mathcal L = \mathcal L_{\mathrm{SFT}} + \lambda\, w(t)\, \frac{1}{N_{\mathrm{acc}}}
        \sum_{i \in \text{accumulated batch}} \frac{1}{|S|} \sum_{l \in S} c_{l,i}

(:mod:`clinfuse.methods.procon.loss`), with :math:`h_l(x_i)` the residual stream entering decoder
block :math:`l` at the **last prompt token** of sample :math:`i` (the token before the first
supervised label; the last real token when the whole sequence is supervised).

Design decisions (checked against trl 1.16 / transformers 5.24):

* **One forward pass.** TRL's default loss path calls ``model(**inputs, fused_lm_head=True)``,
  whose output carries per-token log-probs but not the hidden states, even with
  ``output_hidden_states=True``. The states are therefore read by forward pre-hooks on the
  decoder blocks during that same forward (only the ``(B, d)`` rows at the last prompt tokens are
  kept), which is exactly ``hidden_states[l]`` of ``output_hidden_states``.
* **Gradient accumulation.** The auxiliary mean is taken over the rows of the whole accumulated
  batch (counted in :meth:`ProConSFTTrainer.get_batch_samples`), and multiplied by the number of
  accumulation steps when ``Trainer.training_step`` is going to divide the returned loss by it
  (the same rule as ``Trainer``: no division when the loss was normalised by
  ``num_items_in_batch``). So 2 x 2, 1 x 4 and 4 x 1 give the same update (tested).
* **Anchors.** ``anchor_source="cache"``: before training, the initial model's projections of
  every training sample are computed once and cached, keyed by the sample's prompt token ids (the
  state at the last prompt token of a causal model depends only on them, so identical prompts
  share an anchor). ``"disable_adapter"``: a no-grad forward of the same PEFT model with its
  adapters disabled gives them per batch (an extra forward, but no cache and no second model).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from clinfuse.core.errors import ConfigError, DataError, require
from clinfuse.methods.procon.directions import decoder_layers, last_token_positions
from clinfuse.methods.procon.loss import ProConConfig, procon_terms, projection, warmup_weight

require("trl", "llm")
require("transformers", "llm")

from transformers import TrainerCallback  # noqa: E402
from trl import SFTTrainer  # noqa: E402

log = logging.getLogger(__name__)

__all__ = [
    "DiffInMeansProbe",
    "DriftCallback",
    "ProConSFTTrainer",
    "capture_rows",
    "decoder_layers",
    "last_prompt_positions",
]


@contextlib.contextmanager
def capture_rows(
    model: nn.Module, layers: Sequence[int], positions: Tensor
) -> Iterator[dict[int, Tensor]]:
    """Record the residual stream entering each decoder block ``l`` at one position per row.

    Only the first forward inside the context is recorded (a later no-grad forward, e.g. TRL's
    logits recomputation, does not overwrite it).

    Shape:
        positions: ``(B,)`` long. Yields a dict filled with ``(B, d)`` tensors that keep the graph.
    """
    blocks = decoder_layers(model)
    store: dict[int, Tensor] = {}
    handles = []

    def make_hook(layer: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if layer in store:
                return
            h = args[0] if args else kwargs["hidden_states"]
            rows = torch.arange(h.shape[0], device=h.device)
            store[layer] = h[rows, positions.to(h.device)]

        return hook

    for layer in layers:
        handles.append(blocks[layer].register_forward_pre_hook(make_hook(layer), with_kwargs=True))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def last_prompt_positions(inputs: Mapping[str, Tensor]) -> Tensor:
    """Index of the last prompt token of each row: the token before the first supervised label.

    A row supervised from its first token (no prompt/completion split) falls back to its last
    real token (``attention_mask``), as in the difference-in-means directions.

    Shape:
        input_ids, labels, attention_mask: ``(B, T)``. Output: ``(B,)``.

    Example:
        >>> ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 0]])
        >>> lab = torch.tensor([[-100, -100, 7, 8], [5, 6, 7, -100]])
        >>> last_prompt_positions({"input_ids": ids, "labels": lab,
        ...                        "attention_mask": (lab != -100) | (ids > 0)})
        tensor([1, 2])
    """
    ids = inputs["input_ids"]
    if "attention_mask" in inputs:
        n_real = inputs["attention_mask"].long().sum(dim=1)
    else:
        n_real = torch.full((ids.shape[0],), ids.shape[1], device=ids.device)
    fallback = n_real - 1
    labels = inputs.get("labels")
    if labels is None:
        return fallback
    supervised = labels != -100
    first = supervised.long().argmax(dim=1)
    has_prompt = supervised.any(dim=1) & (first > 0)
    return torch.where(has_prompt, first - 1, fallback)


def _prompt_key(ids: Tensor, pos: int) -> bytes:
    return ids[: pos + 1].to("cpu", torch.int64).numpy().tobytes()


class ProConSFTTrainer(SFTTrainer):
    """:class:`trl.SFTTrainer` plus the ProCon projection constraint (module docstring).

    Args:
        procon: the constraint; ``procon.layers`` empty means every layer ``>= L // 3``.
        directions: frozen unit refusal direction per layer, ``(d,)`` each (e.g. difference of
            means on the initial model).
        thresholds: hinge mode only: fixed ``tau_l`` per layer (e.g. the initial mean harmful
            projection); ``None`` uses each sample's initial projection.
        position: token offset from each row's last prompt token at which projections are
            constrained (0: the last prompt token; negative: earlier post-instruction template
            tokens, e.g. ``-4``); must match the position the directions were computed at.
        *args, **kwargs: passed to :class:`trl.SFTTrainer`.
    """

    def __init__(
        self,
        *args: Any,
        procon: ProConConfig,
        directions: Mapping[int, Tensor],
        thresholds: Mapping[int, float] | None = None,
        position: int = 0,
        **kwargs: Any,
    ) -> None:
        if position > 0:
            raise ConfigError(
                "ProCon position must be <= 0",
                expected="0 (last prompt token) or a negative offset into the prompt",
                found=position,
                fix="e.g. position=0 or position=-4",
            )
        self.position = int(position)
        super().__init__(*args, **kwargs)
        n_layers = len(decoder_layers(self.model))
        layers = tuple(procon.layers) or tuple(range(n_layers // 3, n_layers))
        bad = [layer for layer in layers if not 0 <= layer < n_layers or layer not in directions]
        if bad:
            raise ConfigError(
                "ProCon layers outside the model or without a direction",
                expected=f"layers in [0, {n_layers}) with a direction each",
                found=f"bad layers {bad}; directions for {sorted(directions)}",
                fix="set ProConConfig.layers to layers you computed directions for",
            )
        self.procon = procon
        self.procon_layers = layers
        self.directions = {layer: directions[layer].detach().to(torch.float64) for layer in layers}
        self.thresholds = (
            None if thresholds is None else {layer: float(thresholds[layer]) for layer in layers}
        )
        self.anchor_cache: dict[bytes, Tensor] = {}
        self._window_rows: int | None = None
        needs_anchors = procon.mode == "anchor" or thresholds is None
        if procon.lam > 0 and needs_anchors and procon.anchor_source == "cache":
            self.cache_anchors()
        if procon.anchor_source == "disable_adapter" and not hasattr(
            self.accelerator.unwrap_model(self.model), "disable_adapter"
        ):
            raise ConfigError(
                "anchor_source='disable_adapter' needs a PEFT model",
                expected="a peft.PeftModel",
                found=type(self.model).__name__,
                fix="pass peft_config= to the trainer, or use anchor_source='cache'",
            )

    # ---------------------------------------------------------------- anchors
    def _positions(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Constrained position of each row: last prompt token + ``position``, ``(B,)``."""
        pos = last_prompt_positions(inputs)
        if self.position == 0:
            return pos
        pos = pos + self.position
        if bool((pos < 0).any()):
            raise DataError(
                "ProCon position reaches before the start of a prompt",
                expected=f"prompts longer than {-self.position} tokens",
                found=f"shortest prompt: {int((pos - self.position).min()) + 1} tokens",
                fix="use a position closer to 0",
            )
        return pos

    def _projections(self, model: nn.Module, inputs: Mapping[str, Tensor]) -> Tensor:
        """Projections of the last prompt tokens, ``(B, |S|)`` float64, without gradient."""
        pos = self._positions(inputs)
        fwd = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
        with torch.no_grad(), capture_rows(model, self.procon_layers, pos) as rows:
            model(**fwd, use_cache=False)
        return torch.stack(
            [projection(rows[layer], self.directions[layer]) for layer in self.procon_layers], 1
        )

    def cache_anchors(self, dataset: Any | None = None, batch_size: int = 8) -> int:
        """Cache the current (initial) model's projections of every sample; returns the count."""
        dataset = self.train_dataset if dataset is None else dataset
        model = self.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            for start in range(0, len(dataset), batch_size):
                rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                batch = self.data_collator(rows)
                batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, Tensor)}
                proj = self._projections(model, batch)
                pos = self._positions(batch)
                for i in range(proj.shape[0]):
                    key = _prompt_key(batch["input_ids"][i], int(pos[i]))
                    self.anchor_cache[key] = proj[i].cpu()
        finally:
            model.train(was_training)
        log.info("cached ProCon anchors of %d distinct prompts", len(self.anchor_cache))
        return len(self.anchor_cache)

    def _anchors(self, model: nn.Module, inputs: Mapping[str, Tensor], pos: Tensor) -> Tensor:
        if self.procon.anchor_source == "disable_adapter":
            with self.accelerator.unwrap_model(model).disable_adapter():
                return self._projections(model, inputs)
        keys = [_prompt_key(inputs["input_ids"][i], int(pos[i])) for i in range(pos.shape[0])]
        missing = sum(key not in self.anchor_cache for key in keys)
        if missing:
            raise DataError(
                "ProCon anchors missing for prompts of this batch",
                expected="every training prompt in the anchor cache",
                found=f"{missing} of {len(keys)} prompts not cached",
                fix="call trainer.cache_anchors(dataset) with the initial model for this data",
            )
        return torch.stack([self.anchor_cache[key] for key in keys]).to(pos.device)

    # ---------------------------------------------------------------- loss
    def get_batch_samples(self, epoch_iterator, num_batches, device):  # type: ignore[override]
        batch_samples, num_items_in_batch = super().get_batch_samples(
            epoch_iterator, num_batches, device
        )
        self._window_rows = sum(int(b["input_ids"].shape[0]) for b in batch_samples) or None
        return batch_samples, num_items_in_batch

    def _trainer_divides_by_ga(self, num_items_in_batch: Any) -> bool:
        """Mirror of ``Trainer.training_step``: is the returned loss divided by the GA steps?"""
        if self.loss_is_scaled_for_ga is not None:
            return not self.loss_is_scaled_for_ga
        scaled = (
            self.model_accepts_loss_kwargs and num_items_in_batch is not None
        ) or self.compute_loss_func is not None
        return not scaled

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        cfg = self.procon
        if cfg.lam == 0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        pos = self._positions(inputs)
        anchors_needed = cfg.mode == "anchor" or self.thresholds is None
        ref = self._anchors(model, inputs, pos) if anchors_needed else None
        with capture_rows(model, self.procon_layers, pos) as rows:
            out = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        task = out[0] if return_outputs else out
        if ref is not None:
            anchors = {layer: ref[:, j] for j, layer in enumerate(self.procon_layers)}
        else:
            anchors = {layer: torch.tensor(self.thresholds[layer]) for layer in self.procon_layers}
        per_row = procon_terms(rows, self.directions, anchors, cfg)  # (B,) float64
        if model.training and self._window_rows is not None:
            # mean over the rows of the whole accumulated batch, undoing the trainer's GA division
            aux = per_row.sum() / (self._window_rows if cfg.reduction == "mean" else 1)
            if self._trainer_divides_by_ga(num_items_in_batch):
                aux = aux * self.current_gradient_accumulation_steps
        else:
            aux = per_row.mean() if cfg.reduction == "mean" else per_row.sum()
        weight = cfg.lam * warmup_weight(self.state.global_step, cfg)
        loss = task + (weight * aux).to(task.dtype)
        mode = "train" if model.training else "eval"
        self._metrics[mode]["procon"].append(per_row.mean().item())
        return (loss, out[1]) if return_outputs else loss


# -------------------------------------------------------------------- drift
@dataclass
class DiffInMeansProbe:
    r"""Difference-in-means directions :math:`r_l = (\mu_l - \nu_l)/\lVert\mu_l - \nu_l\rVert` on a
    fixed probe set (last real token of each prompt; right padding), in float64.

    Shape:
        harmful_ids / harmful_mask: ``(n_h, T_h)``; harmless_ids / harmless_mask: ``(n_b, T_b)``.
    """

    harmful_ids: Tensor
    harmful_mask: Tensor
    harmless_ids: Tensor
    harmless_mask: Tensor
    layers: tuple[int, ...]
    position: int = 0
    """Offset from the last real token (0: the last token; -4: four tokens earlier)."""

    def hidden(self, model: nn.Module, ids: Tensor, mask: Tensor) -> dict[int, Tensor]:
        """Residual stream entering each layer at the last real token + ``position``,
        ``(n, d)`` float64."""
        device = next(model.parameters()).device
        pos = last_token_positions(mask, self.position)
        with torch.no_grad(), capture_rows(model, self.layers, pos) as rows:
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        return {layer: rows[layer].to(torch.float64) for layer in self.layers}

    def __call__(self, model: nn.Module) -> dict[int, Tensor]:
        mu = self.hidden(model, self.harmful_ids, self.harmful_mask)
        nu = self.hidden(model, self.harmless_ids, self.harmless_mask)
        out = {}
        for layer in self.layers:
            diff = mu[layer].mean(0) - nu[layer].mean(0)
            out[layer] = diff / diff.norm().clamp_min(1e-12)
        return out

    def projections(self, model: nn.Module, r0: Mapping[int, Tensor]) -> dict[int, Tensor]:
        """Projections of the harmful probe prompts on the initial directions, ``(n_h,)``."""
        mu = self.hidden(model, self.harmful_ids, self.harmful_mask)
        return {layer: projection(mu[layer], r0[layer]) for layer in self.layers}


class DriftCallback(TrainerCallback):
    r"""Log the drift :math:`\cos(r_t^{(l)}, r_0^{(l)})` per layer every ``every`` optimiser steps.

    At each trainer log event whose step is a multiple of ``every`` (once per step), calls
    ``probe(model)`` for :math:`r_t` and, when given, ``projections(model, r0)`` for per-layer
    projections whose mean/std are logged too. Each record goes to :attr:`history`, to the
    trainer's ``logs`` and to the matching ``state.log_history`` entry, under the keys
    ``drift_cos/L{l}``, ``proj_mean/L{l}``, ``proj_std/L{l}`` and ``drift_cos/mean``.

    ``track`` adds named scalars of the model to every record (e.g. ``{"task_nll": f}``);
    ``stop_below`` (name, value) ends training at the first record whose tracked ``name`` is
    ``<= value`` (train to a target task loss, for comparisons at equal task loss).
    """

    def __init__(
        self,
        r0: Mapping[int, Tensor],
        probe: Callable[[nn.Module], Mapping[int, Tensor]],
        every: int = 1,
        projections: Callable[[nn.Module, Mapping[int, Tensor]], Mapping[int, Tensor]]
        | None = None,
        track: Mapping[str, Callable[[nn.Module], float]] | None = None,
        stop_below: tuple[str, float] | None = None,
    ) -> None:
        if stop_below is not None and stop_below[0] not in (track or {}):
            raise ConfigError(
                "DriftCallback.stop_below names a value that is not tracked",
                expected=f"one of {sorted(track or {})}",
                found=stop_below[0],
                fix="add it to track=",
            )
        if every < 1:
            raise ConfigError("DriftCallback.every must be >= 1", found=every, fix="e.g. every=10")
        self.r0 = {layer: r.detach().to(torch.float64).cpu() for layer, r in r0.items()}
        self.probe = probe
        self.every = every
        self.projections = projections
        self.track = dict(track or {})
        self.stop_below = stop_below
        self.stopped_at: int | None = None
        self.history: list[dict[str, float]] = []

    def measure(self, model: nn.Module, step: int) -> dict[str, float]:
        """One drift record of ``model`` at ``step``."""
        was_training = model.training
        model.eval()
        try:
            rt = self.probe(model)
            proj = self.projections(model, self.r0) if self.projections is not None else {}
            tracked = {name: float(f(model)) for name, f in self.track.items()}
        finally:
            model.train(was_training)
        rec: dict[str, float] = {"step": float(step), **tracked}
        cosines = []
        for layer, r0 in self.r0.items():
            r = rt[layer].detach().to(torch.float64).cpu()
            c = float(torch.nn.functional.cosine_similarity(r, r0, dim=0).clamp(-1.0, 1.0))
            rec[f"drift_cos/L{layer}"] = c
            cosines.append(c)
            if layer in proj:
                p = proj[layer].detach().to(torch.float64)
                rec[f"proj_mean/L{layer}"] = float(p.mean())
                rec[f"proj_std/L{layer}"] = float(p.std()) if p.numel() > 1 else 0.0
        rec["drift_cos/mean"] = math.fsum(cosines) / max(len(cosines), 1)
        return rec

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        step = state.global_step
        if (
            model is None
            or step % self.every
            or (self.history and self.history[-1]["step"] == step)
        ):
            return control
        rec = self.measure(model, step)
        self.history.append(rec)
        extra = {k: v for k, v in rec.items() if k != "step"}
        if logs is not None:
            logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == step:
            state.log_history[-1].update(extra)
        if self.stop_below is not None and rec[self.stop_below[0]] <= self.stop_below[1]:
            log.info(
                "%s %.4f <= %.4f at step %d: stopping",
                self.stop_below[0],
                rec[self.stop_below[0]],
                self.stop_below[1],
                step,
            )
            self.stopped_at = step
            control.should_training_stop = True
        return control
