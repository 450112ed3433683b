"""DPsurv figures: a case's survival curve with its belief/plausibility band, component
contributions, and the risk terciles' Kaplan-Meier curves inside their mean bands."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clinfuse.core.runs import atomic_path
from clinfuse.metrics.survival import kaplan_meier


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    fig.clf()
    _figure().close(fig)
    return path


def survival_band_png(
    grid: np.ndarray, s: np.ndarray, s_low: np.ndarray, s_up: np.ndarray, path: str | Path,
    title: str = "", label: str = "[1 - Pl, 1 - Bel]",
    interval: tuple[float, float, float] | None = None, interval_label: str | None = None,
) -> Path:  # fmt: skip
    """One case: S(t) with its band (and, when given, the event-time interval ``(lower, upper,
    level)`` read off the band as dotted vertical lines, labelled ``interval_label`` or by its
    credal level; an infinite end is not drawn)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.fill_between(grid, s_low, s_up, color="tab:blue", alpha=0.25, label=label)
    ax.plot(grid, s, color="tab:blue", lw=2, label="S(t)")
    if interval is not None:
        lower, upper, level = interval
        ends = [x for x in (lower, upper) if np.isfinite(x) and x > 0]
        text = interval_label or f"{level:.0%} event-time interval"
        for k, x in enumerate(ends):
            ax.axvline(x, color="black", ls=":", lw=1.2, label=text if k == 0 else None)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def contributions_png(values: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Bar chart of per-component risk contributions (positive: the component raises risk)."""
    plt = _figure()
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    colors = np.where(values >= 0, "tab:red", "tab:green")
    ax.bar([f"P{c}" for c in range(len(values))], values, color=colors)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("risk change if removed")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    return _save(fig, Path(path))


def tercile_km_png(
    time: np.ndarray, event: np.ndarray, curves: dict, grid: np.ndarray, path: str | Path
) -> Path:
    """Kaplan-Meier of each risk tercile against its mean predicted curve and band."""
    plt = _figure()
    order = np.argsort(curves["risk"], kind="stable")
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, part, color in zip(
        ("low risk", "mid risk", "high risk"), np.array_split(order, 3),
        ("tab:green", "tab:orange", "tab:red"), strict=True,
    ):  # fmt: skip
        ax.fill_between(grid, curves["s_low"][part].mean(0), curves["s_up"][part].mean(0),
                        color=color, alpha=0.2)  # fmt: skip
        ax.plot(grid, curves["surv"][part].mean(0), color=color, lw=1.5, ls="--")
        t, s = kaplan_meier(time[part], event[part])
        ax.step(np.r_[0.0, t], np.r_[1.0, s], where="post", color=color, lw=1.5, label=name)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel("time")
    ax.set_ylabel("survival")
    ax.set_title("Kaplan-Meier (solid) vs predicted mean curve (dashed) and band", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))
