"""The shared supervised training loop: progress bar, early stopping, checkpoints, ``--resume``.

The same loop runs in one process and under Hugging Face Accelerate
(``accelerate launch -m clinfuse.cli fit ...``): when a distributed launch is detected
(``WORLD_SIZE`` > 1) it drives an :class:`accelerate.Accelerator`; otherwise a local stand-in with
the same methods. Only the main process writes the run directory; every rank evaluates the full
validation set with identical weights, so early-stopping decisions agree without communication.
At the end the ranks compare a checksum of their weights and record it in ``metrics.json``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from clinfuse.core import trackers as tracking
from clinfuse.core.errors import ConfigError, RunDirError
from clinfuse.core.runs import RunDir
from clinfuse.core.seed import rng_state, set_rng_state

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, Mapping[str, Any], int], tuple[torch.Tensor, Mapping[str, float]]]
EvalFn = Callable[[nn.Module], Mapping[str, float]]


class LocalAccelerator:
    """The subset of :class:`accelerate.Accelerator` the loop uses, for one process."""

    num_processes = 1
    process_index = 0
    is_main_process = True

    def __init__(self, device: str = "auto") -> None:
        self.device = resolve_device(device)

    def prepare(self, *objs: Any) -> Any:
        out = tuple(o.to(self.device) if isinstance(o, nn.Module) else o for o in objs)
        return out if len(out) > 1 else out[0]

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def unwrap_model(self, model: nn.Module) -> nn.Module:
        return model

    def wait_for_everyone(self) -> None:
        return None

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        return t


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' was asked for but no CUDA device is visible",
            expected="a machine with a GPU",
            found="torch.cuda.is_available() is False",
            fix="--set device=cpu (or auto)",
        )
    return torch.device(device)


def progress_enabled(flag: bool = True) -> bool:
    """Progress bars are on when ``flag`` is and ``CLINFUSE_PROGRESS`` is not ``0`` (``-q``)."""
    return flag and os.environ.get("CLINFUSE_PROGRESS", "1") != "0"


def is_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(device: str = "auto") -> Any:
    """A real Accelerator under a distributed launch, else :class:`LocalAccelerator`."""
    if not is_distributed_launch():
        return LocalAccelerator(device)
    from clinfuse.core.errors import require

    accelerate = require("accelerate", "dist")
    return accelerate.Accelerator(cpu=resolve_device(device).type == "cpu")


def weights_checksum(model: nn.Module) -> float:
    """A float64 fingerprint of the parameters (sum of |w| * position weight)."""
    total = 0.0
    for i, p in enumerate(model.state_dict().values()):
        if torch.is_floating_point(p):
            total += float(p.detach().double().abs().sum()) * (1.0 + 1e-3 * i)
    return total


@dataclass
class LoopResult:
    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)


def _better(a: float, b: float, mode: Literal["min", "max"]) -> bool:
    if math.isnan(a):
        return False
    return a < b if mode == "min" else a > b


def fit_loop(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable[Mapping[str, Any]],
    step_fn: StepFn,
    eval_fn: EvalFn,
    run: RunDir | None,
    epochs: int,
    monitor: str,
    mode: Literal["min", "max"] = "min",
    patience: int | None = None,
    grad_clip: float | None = None,
    progress: bool = True,
    resume: bool = False,
    accelerator: Any = None,
    extra_state: Callable[[], Mapping[str, Any]] | None = None,
    on_epoch_end: Callable[[int, Mapping[str, float]], None] | None = None,
    max_seconds: float | None = None,
    log_with: str | Sequence[str] | None = None,
) -> LoopResult:
    """Train ``model`` for up to ``epochs`` epochs, keeping the best by ``monitor``.

    ``step_fn(model, batch, epoch)`` returns the loss and a dict of float parts (averaged per epoch
    into ``train_<part>`` columns); ``eval_fn(model)`` returns validation metrics containing
    ``monitor``. Checkpoints ``last`` (every epoch) and ``best`` hold the model, optimizer, epoch,
    early-stopping state and RNG state; ``resume=True`` continues from ``last``.
    The ``model``/``optimizer``/``train_loader`` given must already be prepared by ``accelerator``.
    ``max_seconds`` stops after the first epoch that ends past that much wall time since the call
    (a time budget; the best checkpoint is kept as usual).
    ``log_with`` (``tensorboard``, ``mlflow``, ``wandb``) logs the config and every epoch's row
    to those trackers inside ``run`` (:mod:`clinfuse.core.trackers`); without it the loop logs to
    the trackers made active by the caller (``clinfuse fit --log-with``), if any.
    """
    acc = accelerator or LocalAccelerator()
    main = acc.is_main_process
    start_epoch, best, best_epoch, bad = 1, math.inf if mode == "min" else -math.inf, 0, 0
    history: list[dict[str, float]] = []
    if resume:
        if run is None:
            raise RunDirError("--resume needs a run directory")
        state = run.load_checkpoint("last")
        acc.unwrap_model(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start_epoch = int(state["epoch"]) + 1
        best, best_epoch, bad = float(state["best"]), int(state["best_epoch"]), int(state["bad"])
        if main:
            run.truncate_history(int(state["epoch"]))
        log.info("resuming %s at epoch %d (best %s=%.4g)", run.path, start_epoch, monitor, best)

    trackers = tracking.for_run(run) if main else None
    own = None
    if log_with and main and run is not None:
        meta = run.meta()
        own = tracking.open_trackers(log_with, run.path, meta["config"], method=meta["method"])
        trackers = own
    try:
        stopped = False
        epoch = start_epoch - 1
        loop_started = time.perf_counter()
        bar = tqdm(
            range(start_epoch, epochs + 1),
            desc="epochs",
            disable=not (progress_enabled(progress) and main),
            initial=start_epoch - 1,
            total=epochs,
            dynamic_ncols=True,
        )
        for epoch in bar:
            started = time.perf_counter()
            model.train()
            sums: dict[str, float] = {}
            n_batches = 0
            for batch in train_loader:
                optimizer.zero_grad(set_to_none=True)
                loss, parts = step_fn(model, batch, epoch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"the training loss became {float(loss.detach())} at epoch {epoch}; lower "
                        "the learning rate or the regulariser weights, or enable grad_clip"
                    )
                acc.backward(loss)
                if grad_clip:
                    acc.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                n_batches += 1
                for k, v in {"loss": float(loss.detach()), **parts}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            row: dict[str, float] = {"epoch": epoch, "train_seconds": time.perf_counter() - started}
            row.update({f"train_{k}": v / max(n_batches, 1) for k, v in sums.items()})
            model.eval()
            with torch.no_grad():
                val = dict(eval_fn(acc.unwrap_model(model)))
            if monitor not in val:
                raise ConfigError(
                    f"monitor {monitor!r} is not among the validation metrics",
                    expected=", ".join(sorted(val)),
                    found=monitor,
                    fix=f"--set monitor={sorted(val)[0]}",
                )
            row.update(
                {f"valid_{k}" if not k.startswith("valid_") else k: v for k, v in val.items()}
            )
            score = float(val[monitor])
            improved = _better(score, best, mode)
            if improved:
                best, best_epoch, bad = score, epoch, 0
            else:
                bad += 1
            history.append(row)
            if main and run is not None:
                run.log_epoch(row)
                state = {
                    "model": acc.unwrap_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "bad": bad,
                    "rng": rng_state(),
                    **(dict(extra_state()) if extra_state else {}),
                }
                if improved:
                    run.save_checkpoint("best", state)
                run.save_checkpoint("last", state)
            if trackers is not None:
                trackers.log(row, step=epoch)
            acc.wait_for_everyone()
            train_loss = row.get("train_loss", float("nan"))
            bar.set_postfix({"loss": f"{train_loss:.4f}", monitor: f"{score:.4f}"})
            if on_epoch_end:
                on_epoch_end(epoch, row)
            if patience is not None and bad >= patience:
                stopped = True
                log.info(
                    "early stop at epoch %d: no %s improvement for %d epochs", epoch, monitor, bad
                )
                break
            if max_seconds is not None and time.perf_counter() - loop_started > max_seconds:
                stopped = True
                log.info("time budget of %.0f s spent after epoch %d", max_seconds, epoch)
                break
    finally:
        if own is not None:
            own.finish()
    bar.close()
    if getattr(acc, "num_processes", 1) > 1:
        sums_t = torch.tensor([weights_checksum(acc.unwrap_model(model))], dtype=torch.float64)
        gathered = acc.gather(sums_t.to(acc.device)).cpu().tolist()
        if main and run is not None:
            run.write_metrics({"dist_world_size": acc.num_processes, "dist_checksums": gathered})
        if len(set(gathered)) != 1:
            log.warning("ranks ended with different weights: %s", gathered)
    return LoopResult(best_epoch, best, epoch, stopped, history)
