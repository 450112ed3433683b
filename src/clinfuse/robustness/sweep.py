r"""Severity sweeps: metrics of a model under one corruption kind at increasing severity.

The DIB paper (arXiv 2511.01444) reports robustness as a drop from the clean score without
naming the metric, so the report here gives
:math:`\Delta = \text{clean} - \text{corrupted}` for every metric, in the metric's own units.
For higher-is-better metrics (accuracy, F1, corr) a degradation is a positive delta; for
lower-is-better ones (``mae``) it is a negative delta.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.robustness.corruptions import (
    MODALITIES,
    Corruption,
    Lengths,
    make_corruption,
)

__all__ = ["SWEEP_COLUMNS", "plot_sweep", "severity_sweep", "sweep_severities", "write_sweep"]

SWEEP_COLUMNS: tuple[str, ...] = ("severity", "metric", "clean", "corrupted", "delta")
"""Columns of the frame :func:`severity_sweep` returns, in order."""

Evaluate = Callable[[Corruption | None], Mapping[str, float]]


def _metrics(result: object, when: str) -> dict[str, float]:
    if not isinstance(result, Mapping) or not result:
        raise DataError(
            f"evaluate returned no metrics ({when})",
            expected="a non-empty dict of metric name -> float",
            found=repr(result)[:200],
            fix="return e.g. mosi_metrics(pred, true) from evaluate",
        )
    try:
        return {str(k): float(v) for k, v in result.items()}
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"evaluate returned a non-numeric metric ({when})",
            expected="float values",
            found=repr(result)[:200],
        ) from exc


def sweep_severities(
    evaluate_at: Callable[[float | None], Mapping[str, float]],
    severities: Sequence[float],
) -> pd.DataFrame:
    r"""The sweep table from a callback that takes the severity itself (None = clean).

    The generic core of :func:`severity_sweep`, for callers that build the corruption
    themselves (e.g. from a spec string ``f"{kind}:{mods}:{severity}"``).

    Shape:
        Output: ``len(severities) * n_metrics`` rows with columns ``severity, metric, clean,
        corrupted, delta`` and ``delta = clean - corrupted``.

    Example:
        >>> df = sweep_severities(lambda s: {"acc": 0.9 - (s or 0.0) / 10}, [0.5, 1.0])
        >>> df.round(3).to_dict("list")["delta"]
        [0.05, 0.1]
    """
    sev = [float(s) for s in severities]
    if not sev:
        raise ConfigError(
            "a severity sweep needs at least one severity",
            expected="e.g. severities=[0.1, 0.2, 0.5, 1.0]",
            found="[]",
        )
    clean = _metrics(evaluate_at(None), "clean")
    rows = []
    for s in sev:
        corrupted = _metrics(evaluate_at(s), f"severity {s}")
        if set(corrupted) != set(clean):
            raise DataError(
                "evaluate returned different metrics with and without the corruption",
                expected=sorted(clean),
                found=sorted(corrupted),
            )
        for name, c in clean.items():
            x = corrupted[name]
            rows.append((s, name, c, x, c - x))
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def severity_sweep(
    evaluate: Evaluate,
    kind: str,
    modalities: str | Sequence[str],
    severities: Sequence[float],
    *,
    train_features: Mapping[str, np.ndarray] | None = None,
    train_lengths: Lengths | None = None,
    known_modalities: Sequence[str] | None = MODALITIES,
) -> pd.DataFrame:
    r"""Evaluate clean once, then under ``kind`` on ``modalities`` at each severity.

    ``evaluate(None)`` must return the clean metrics and ``evaluate(corruption)`` the metrics
    with the corruption applied to the test features. Seed the generator inside ``evaluate``
    identically on every call (common random numbers), so that severities differ only by
    severity. With ``train_features`` given, a corruption that needs statistics (``gaussian``)
    is fitted once and reused at every severity; without them ``evaluate`` receives it unfitted
    and must fit it (or use ``corruption.spec`` with code that fits it).

    Shape:
        Output: as :func:`sweep_severities`.

    Example:
        >>> def evaluate(c):
        ...     return {"acc": 0.9 if c is None else 0.9 - 0.2 * c.rate}
        >>> df = severity_sweep(evaluate, "missing", "audio", [0.0, 0.5])
        >>> df.round(3).to_dict("list")["delta"]
        [0.0, 0.1]
    """
    if not len(severities):
        return sweep_severities(evaluate, [])  # raises
    base = make_corruption(
        kind, modalities, float(severities[0]), known_modalities=known_modalities
    )
    if base.severity_name is None:
        base.with_severity(float(severities[0]))  # raises: this kind has no severity
    if train_features is not None and not base.is_fitted:
        base.fit(train_features, train_lengths)
    return sweep_severities(
        lambda s: evaluate(None if s is None else base.with_severity(s)), severities
    )


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write through a temporary sibling, then ``os.replace`` it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _check_frame(df: pd.DataFrame) -> None:
    missing = [c for c in SWEEP_COLUMNS if c not in df.columns]
    if missing or df.empty:
        raise DataError(
            "not a severity sweep table",
            expected=f"a non-empty frame with columns {', '.join(SWEEP_COLUMNS)}",
            found=f"columns {list(df.columns)}, {len(df)} rows",
            fix="pass the frame severity_sweep returned (or read back from its CSV)",
        )


def plot_sweep(df: pd.DataFrame, path: str | os.PathLike[str], title: str = "") -> Path:
    """Plot each metric against severity (one panel per metric, clean value dashed) to a PNG.

    Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend change) and
    writes atomically. Returns the path.

    Example:
        >>> import tempfile
        >>> df = pd.DataFrame({"severity": [0.1, 0.5], "metric": ["acc", "acc"],
        ...                    "clean": [0.8, 0.8], "corrupted": [0.78, 0.7], "delta": [0.02, 0.1]})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plot_sweep(df, Path(d) / "s.png", "demo").read_bytes()[:4]
        b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_frame(df)
    metrics = list(dict.fromkeys(df["metric"]))
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, metrics, strict=False):
        d = df[df["metric"] == name].sort_values("severity")
        ax.plot(d["severity"], d["corrupted"], marker="o", label="corrupted")
        ax.axhline(float(d["clean"].iloc[0]), color="0.4", linestyle="--", label="clean")
        ax.set_title(str(name))
        ax.set_xlabel("severity")
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def write_sweep(
    df: pd.DataFrame, out_dir: str | os.PathLike[str], name: str, *, title: str | None = None
) -> tuple[Path, Path]:
    """Write ``{out_dir}/{name}.csv`` and ``{out_dir}/{name}.png`` atomically; return both paths.

    The plot is titled ``title`` (default: ``name``).

    Example:
        >>> import tempfile
        >>> df = severity_sweep(lambda c: {"acc": 0.9 - (c.rate if c else 0)}, "missing",
        ...                     "audio", [0.2])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     [p.name for p in write_sweep(df, d, "missing-audio")]
        ['missing-audio.csv', 'missing-audio.png']
    """
    if not name or Path(name).name != name or name.startswith("."):
        raise ConfigError(
            "bad sweep name",
            expected="a plain file stem without directories, e.g. 'gaussian-audio'",
            found=repr(name),
        )
    _check_frame(df)
    out = Path(out_dir)
    csv = _atomic_write(out / f"{name}.csv", lambda tmp: df.to_csv(tmp, index=False))
    png = plot_sweep(df, out / f"{name}.png", title=name if title is None else title)
    return csv, png
