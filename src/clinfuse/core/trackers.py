"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) through Accelerate's tracker API.

``clinfuse fit NAME --log-with tensorboard`` (or ``fit_loop(..., log_with=...)``) logs the
resolved config once and every per-epoch metric row at ``step = epoch``, inside the run folder:

* ``tensorboard``: event files under ``<run>/tensorboard/<run name>/``
  (:class:`accelerate.tracking.TensorBoardTracker`);
* ``mlflow``: the store ``<run>/mlflow.db`` (SQLite, the backend MLflow recommends over its
  file store) with artifacts under ``<run>/mlruns``, experiment ``clinfuse-<method>``
  (:class:`accelerate.tracking.MLflowTracker`); read it with
  ``mlflow.MlflowClient(mlflow_uri(run))`` or ``mlflow ui --backend-store-uri sqlite:///...``;
* ``wandb``: ``<run>/wandb`` in offline mode unless ``WANDB_MODE`` is set by the user
  (:class:`accelerate.tracking.WandBTracker`; ``wandb sync`` uploads it later).

The trackers only run on the main process. Methods with their own training loop log their
``metrics.csv`` rows after training (:func:`replay_history`), so every system gets the same logs.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from clinfuse.core.errors import ConfigError, require

log = logging.getLogger(__name__)

TrackerName = Literal["tensorboard", "mlflow", "wandb"]


def _tensorboard(run_path: Path, name: str, method: str) -> Any:
    require("tensorboard", "track")
    tracking = require("accelerate.tracking", "dist")
    return tracking.TensorBoardTracker(name, run_path / "tensorboard")


def _mlflow(run_path: Path, name: str, method: str) -> Any:
    mlflow = require("mlflow", "track")
    tracking = require("accelerate.tracking", "dist")
    run_path.mkdir(parents=True, exist_ok=True)
    artifacts = (run_path / "mlruns").resolve()
    mlflow.set_tracking_uri(mlflow_uri(run_path))
    return tracking.MLflowTracker(
        experiment_name=f"clinfuse-{method}", logging_dir=artifacts.as_uri(), run_name=name
    )


def mlflow_uri(run_path: str | Path) -> str:
    """The MLflow tracking URI of a run: the SQLite store ``<run>/mlflow.db``.

    Example:
        >>> mlflow_uri("/tmp/r")
        'sqlite:////tmp/r/mlflow.db'
    """
    return f"sqlite:///{(Path(run_path) / 'mlflow.db').resolve().as_posix()}"


def _wandb(run_path: Path, name: str, method: str) -> Any:
    require("wandb", "track")
    tracking = require("accelerate.tracking", "dist")
    folder = run_path / "wandb"
    folder.mkdir(parents=True, exist_ok=True)
    mode = os.environ.get("WANDB_MODE", "offline")
    return tracking.WandBTracker(
        f"clinfuse-{method}", name=name, dir=str(folder), mode=mode, reinit=True
    )


TRACKERS: dict[str, Callable[[Path, str, str], Any]] = {
    "tensorboard": _tensorboard,
    "mlflow": _mlflow,
    "wandb": _wandb,
}


def check_names(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """Normalise ``names`` (None, one name, ``"a,b"`` or a list) and refuse unknown trackers.

    Example:
        >>> check_names("tensorboard,mlflow")
        ('tensorboard', 'mlflow')
        >>> check_names(None)
        ()
    """
    if names is None:
        return ()
    items = names.split(",") if isinstance(names, str) else list(names)
    out = tuple(dict.fromkeys(n.strip() for n in items if n and n.strip()))
    unknown = [n for n in out if n not in TRACKERS]
    if unknown:
        raise ConfigError(
            f"unknown tracker {unknown[0]!r}",
            expected=" | ".join(TRACKERS),
            found=", ".join(unknown),
            fix="--log-with tensorboard (or mlflow, wandb)",
        )
    return out


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Config values as scalars the trackers accept (nested dicts dotted, lists/None as text).

    Example:
        >>> flat_config({"lr": 0.1, "mods": ["a", "b"], "sub": {"k": None}})
        {'lr': 0.1, 'mods': "['a', 'b']", 'sub.k': 'None'}
    """
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_config(v, prefix=f"{key}."))
        elif isinstance(v, bool | int | float | str):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def numeric(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a metrics row (strings such as ``"0.5"`` are parsed)."""
    out: dict[str, float] = {}
    for k, v in row.items():
        if isinstance(v, bool):
            v = float(v)
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class Trackers:
    """The opened trackers of one run: :meth:`log` a row at a step, :meth:`finish` at the end."""

    def __init__(self, trackers: Sequence[Any]) -> None:
        self.trackers = list(trackers)
        self.logged_steps = 0

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    def log(self, row: Mapping[str, Any], step: int) -> None:
        values = numeric({k: v for k, v in row.items() if k != "epoch"})
        for t in self.trackers:
            t.log(values, step=int(step))
        self.logged_steps += 1

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()
        self.trackers = []


def open_trackers(
    names: str | Sequence[str] | None,
    run_path: str | Path,
    config: Mapping[str, Any],
    *,
    method: str = "run",
) -> Trackers:
    """Start the named trackers writing inside ``run_path`` and log ``config`` to each."""
    run_path = Path(run_path)
    accelerate = require("accelerate", "dist")
    if not accelerate.PartialState._shared_state:  # the trackers log through Accelerate's state
        accelerate.PartialState(cpu=not _cuda())
    opened = []
    for name in check_names(names):
        tracker = TRACKERS[name](run_path, run_path.name or "run", method)
        tracker.main_process_only = False  # the callers run this on the main process only
        tracker.start()
        tracker.store_init_configuration(flat_config(config))
        opened.append(tracker)
        log.info("logging to %s in %s", name, run_path)
    return Trackers(opened)


class Request:
    """Trackers asked for before the run folder exists (``clinfuse fit --log-with``).

    Construction checks the names and that the packages import, before any side effect. The
    trackers open on first use: :func:`clinfuse.core.loop.fit_loop` logs each epoch to them as it
    ends; :meth:`finish` logs what a method's own loop left in ``metrics.csv`` (when nothing was
    logged live) and the final ``test_*`` metrics, then closes them.
    """

    def __init__(self, names: str | Sequence[str] | None) -> None:
        self.names = check_names(names)
        for name in self.names:
            require(_MODULES[name], "track")
            require("accelerate.tracking", "dist")
        self.trackers: Trackers | None = None

    def open(self, run_path: str | Path, config: Mapping[str, Any], method: str) -> Trackers:
        if self.trackers is None:
            self.trackers = open_trackers(self.names, run_path, config, method=method)
        return self.trackers

    def finish(self, run: Any) -> Trackers:
        """Close the trackers of ``run`` (a :class:`~clinfuse.core.runs.RunDir`)."""
        meta = run.meta()
        trackers = self.open(run.path, meta["config"], meta["method"])
        history = run.read_history()
        if trackers.logged_steps == 0:
            replay_history(trackers, history)
        last = numeric(history[-1]).get("epoch", len(history)) if history else 0
        final = {k: v for k, v in run.read_metrics().items() if k.startswith("test_")}
        if final:
            trackers.log(final, step=int(last))
        trackers.finish()
        return trackers


_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}

_REQUEST: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "clinfuse_log_with", default=None
)


@contextlib.contextmanager
def requested(names: str | Sequence[str] | None) -> Iterator[Request | None]:
    """Inside the block, :func:`for_run` opens the trackers ``names`` for the run being fitted."""
    request = Request(names) if check_names(names) else None
    token = _REQUEST.set(request)
    try:
        yield request
    finally:
        _REQUEST.reset(token)
        if request is not None and request.trackers is not None:
            request.trackers.finish()  # idempotent; closes them when fit failed


def for_run(run: Any) -> Trackers | None:
    """The trackers requested around this call (see :func:`requested`), opened inside ``run``."""
    request = _REQUEST.get()
    if request is None or run is None:
        return None
    meta = run.meta()
    return request.open(run.path, meta["config"], meta["method"])


def replay_history(trackers: Trackers, history: Sequence[Mapping[str, Any]]) -> int:
    """Log ``metrics.csv`` rows (methods with their own loop); return the number of rows logged."""
    for i, row in enumerate(history, start=1):
        step = numeric({"epoch": row.get("epoch", i)}).get("epoch", float(i))
        trackers.log(row, step=int(step))
    return len(history)
