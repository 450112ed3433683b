"""Small shared plotting helpers (matplotlib, Agg), each writing one PNG atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clinfuse.core.runs import atomic_path  # noqa: E402


def save(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG at ``path`` (atomic) and close it.

    A figure without a layout engine gets matplotlib's constrained layout, so titles, axis labels
    and legends of neighbouring axes never overlap.
    """
    path = Path(path)
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def learning_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Train and validation curves from ``metrics.csv`` rows: losses left, other metrics right."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [float(r["epoch"]) for r in history]
    cols = [c for c in (history[0] if history else {}) if c != "epoch"]

    def series(col: str) -> list[float]:
        return [float(r[col]) if r.get(col) not in (None, "") else float("nan") for r in history]

    for c in cols:
        if c.startswith("train_loss") or c in ("valid_loss", "valid_mae", "valid_mse"):
            ax1.plot(epochs, series(c), label=c)
        elif c.startswith("valid_") and any(s in c for s in ("acc", "f1", "corr")):
            ax2.plot(epochs, series(c), label=c)
    ax1.set(xlabel="epoch", title="losses")
    ax2.set(xlabel="epoch", title="validation metrics")
    for ax in (ax1, ax2):
        if ax.lines:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return save(fig, path)


def bars(values: Mapping[str, float], path: str | Path, title: str, ylabel: str) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.set(title=title, ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def scatter_true_pred(
    true: Sequence[float], pred: Sequence[float], path: str | Path, title: str
) -> Path:
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(true, pred, s=6, alpha=0.5)
    lo, hi = min(min(true), min(pred)), max(max(true), max(pred))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xlabel="label", ylabel="prediction", title=title)
    ax.grid(alpha=0.3)
    return save(fig, path)


def curves(
    x: Sequence[float],
    ys: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Lines (with optional error bars) of several named series over the same x."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, y in ys.items():
        err = (errors or {}).get(name)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
