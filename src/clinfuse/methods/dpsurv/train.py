r"""A small in-memory trainer shared by DPsurv and its baselines.

AdamW with a linear warm-up over ``warmup`` of the steps and a cosine decay after it (the
official DPsurv schedule), minibatches of case indices, early stopping on a
validation score with the best weights restored. The models are small (a few thousand
parameters over per-case summaries), so the whole state lives in memory; what is expensive
(the PANTHER summaries of the bags) is cached by the learner, not here.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from clinfuse.core.loop import progress_enabled

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train_module", "inner_split"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and stopping settings."""

    lr: float = 1e-3
    """AdamW peak learning rate."""
    weight_decay: float = 2e-4
    """AdamW weight decay (official: 2e-4)."""
    batch_size: int = 32
    """Cases per step (official: 32)."""
    epochs: int = 50
    """Passes over the training cases (official: at most 50)."""
    patience: int = 5
    """Epochs without a better validation score before stopping (0: never stop early)."""
    min_epochs: int = 5
    """Epochs always run before early stopping may trigger (official: 5)."""
    warmup: float = 0.1
    """Share of the steps with a linear learning-rate warm-up, then cosine decay."""
    grad_clip: float | None = 5.0
    """Gradient-norm clip (None: off)."""
    seed: int = 0
    """Seed of the minibatch order."""
    progress: bool = True
    """Show a progress bar over the epochs."""


@dataclass
class TrainResult:
    """What :func:`train_module` did."""

    best_epoch: int
    best_score: float
    history: list[dict[str, float]]


def inner_split(
    time: np.ndarray, event: np.ndarray, fraction: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the cases, stratified by event x time quartile (rounded per
    stratum, so the held-out share is only close to ``fraction``).

    Shape:
        time, event ``(N,)``. Output: (fit indices, validation indices), disjoint, covering 0..N-1.

    Example:
        >>> fit, val = inner_split(np.arange(1.0, 41.0), np.tile([0, 1], 20), 0.25)
        >>> len(fit), len(val), len(set(fit) & set(val))  # 8 strata of 5, round(1.25) = 1 each
        (32, 8, 0)
    """
    n = len(time)
    rng = np.random.default_rng(seed)
    quart = np.searchsorted(np.quantile(time, [0.25, 0.5, 0.75]), time, side="right")
    strata = 4 * np.asarray(event, dtype=int) + quart
    val: list[int] = []
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        val.extend(idx[: int(round(fraction * len(idx)))].tolist())
    if not val and n > 1:
        val = [int(rng.integers(n))]
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    fit_idx = np.setdiff1d(np.arange(n), val_idx)
    return fit_idx, val_idx


def _lr_factor(step: int, total: int, warmup: float) -> float:
    w = max(1, int(warmup * total))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))


def train_module(
    module: nn.Module,
    n_cases: int,
    loss_fn: Callable[[np.ndarray], Tensor],
    score_fn: Callable[[], float] | None,
    config: TrainConfig,
    *,
    higher_is_better: bool = True,
    desc: str = "train",
) -> TrainResult:
    r"""Minimise ``loss_fn(batch_case_indices)`` over ``n_cases`` training cases.

    After each epoch ``score_fn()`` (e.g. the validation C-index) is computed with the module in
    eval mode; the best epoch's weights are restored at the end. Without ``score_fn`` the last
    epoch is kept.
    """
    from tqdm.auto import tqdm

    gen = np.random.default_rng(config.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(n_cases / config.batch_size))
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, config.warmup))
    best_state = copy.deepcopy(module.state_dict())
    best_score, best_epoch, bad = -math.inf, 0, 0
    history: list[dict[str, float]] = []
    bar = tqdm(
        range(1, config.epochs + 1), desc=desc, disable=not progress_enabled(config.progress)
    )
    for epoch in bar:
        module.train()
        order = gen.permutation(n_cases)
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            if len(idx) == 0:
                continue
            loss = loss_fn(idx)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: non-finite loss at epoch {epoch}")
            opt.zero_grad()
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        row = {"epoch": float(epoch), "loss": float(np.mean(losses))}
        if score_fn is not None:
            module.eval()
            with torch.no_grad():
                score = float(score_fn())
            row["valid"] = score
            signed = score if higher_is_better else -score
            if signed > best_score + 1e-9:
                best_score, best_epoch, bad = signed, epoch, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                bad += 1
            bar.set_postfix(loss=f"{row['loss']:.4f}", valid=f"{score:.4f}")
        history.append(row)
        if score_fn is not None and config.patience and epoch >= config.min_epochs:
            if bad >= config.patience:
                break
    if score_fn is None:
        best_epoch, best_score = len(history), math.nan
    else:
        module.load_state_dict(best_state)
        best_score = best_score if higher_is_better else -best_score
    module.eval()
    log.debug("%s: best epoch %d (score %.4f)", desc, best_epoch, best_score)
    return TrainResult(best_epoch, best_score, history)
