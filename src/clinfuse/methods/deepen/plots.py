"""DeepEN run plots: training losses, the alpha sweep, the policy comparison, deviation curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clinfuse.core.runs import RunDir
from clinfuse.report.plots import plt, save


def _training(df: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for alpha, g in df.groupby("alpha"):
        axes[0].plot(g["step"], g["td"] if "td" in g else g["loss"], label=f"alpha {alpha:g}")
        if "cql" in g:
            axes[1].plot(g["step"], g["cql"], label=f"alpha {alpha:g}")
    axes[0].set(xlabel="gradient step", ylabel="TD loss", title="temporal-difference loss")
    axes[1].set(xlabel="gradient step", ylabel="logsumexp Q - Q(data)", title="CQL gap")
    axes[0].legend(fontsize=7)
    return save(fig, path)


def _sweep(df: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    x = np.arange(len(df))
    for col in [c for c in df.columns if c.startswith("valid_") and not c.endswith("_ess")]:
        ax.plot(x, df[col], "o-", label=f"{col[6:]} (validation OPE)")
    if "true_value" in df:
        ax.errorbar(
            x,
            df["true_value"],
            yerr=[df["true_value"] - df["true_low"], df["true_high"] - df["true_value"]],
            fmt="s-",
            color="k",
            label="true value (roll-outs)",
        )
    ax.set_xticks(x, [f"{a:g}" for a in df["alpha"]])
    ax.set(xlabel="CQL alpha", ylabel="policy value", title="alpha sweep")
    ax.legend(fontsize=7)
    return save(fig, path)


def _comparison(df: pd.DataFrame, path: Path, est: str) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    x = np.arange(len(df))
    w = 0.38 if "true_value" in df else 0.6
    ax.errorbar(
        x - (w / 2 if "true_value" in df else 0),
        df[est],
        yerr=[df[est] - df[f"{est}_low"], df[f"{est}_high"] - df[est]],
        fmt="o",
        capsize=3,
        label=f"OPE {est.upper()} (95% CI)",
    )
    if "true_value" in df:
        ax.errorbar(
            x + w / 2,
            df["true_value"],
            yerr=[df["true_value"] - df["true_low"], df["true_high"] - df["true_value"]],
            fmt="s",
            color="k",
            capsize=3,
            label="true value (95% CI)",
        )
    ax.set_xticks(x, df["policy"], rotation=20)
    ax.set(ylabel="expected return", title="policies on the test patients")
    ax.legend(fontsize=8)
    return save(fig, path)


def _deviation(df: pd.DataFrame, path: Path) -> Path:
    nutrients = list(dict.fromkeys(df["nutrient"]))
    fig, axes = plt.subplots(1, len(nutrients), figsize=(4 * len(nutrients), 3.4), sharey=True)
    for ax, nut in zip(np.atleast_1d(axes), nutrients, strict=False):
        groups = df[df["nutrient"] == nut].groupby("policy")
        for (policy, g), style in zip(groups, ("o-", "x--"), strict=False):
            ax.errorbar(
                g["deviation"],
                g["mortality"],
                yerr=[g["mortality"] - g["low"], g["high"] - g["mortality"]],
                fmt=style,
                capsize=2,
                label=policy,
            )
        ax.axvline(0, color="grey", lw=0.8)
        ax.set(xlabel=f"clinician - recommended ({nut})", title=nut)
    np.atleast_1d(axes)[0].set_ylabel("mortality (95% Wilson CI)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    return save(fig, path)


def plot_folder(folder: Path, plots: Path, estimator: str = "wis") -> list[Path]:
    """Write every plot whose CSV exists in ``folder`` into ``plots``; returns the PNG paths."""
    out = []
    folder, plots = Path(folder), Path(plots)
    plots.mkdir(parents=True, exist_ok=True)
    csv = {n: folder / f"{n}.csv" for n in ("training", "alpha_sweep", "comparison", "deviation")}
    if csv["training"].exists() and csv["training"].stat().st_size > 1:
        out.append(_training(pd.read_csv(csv["training"]), plots / "training.png"))
    if csv["alpha_sweep"].exists():
        out.append(_sweep(pd.read_csv(csv["alpha_sweep"]), plots / "alpha_sweep.png"))
    if csv["comparison"].exists():
        out.append(_comparison(pd.read_csv(csv["comparison"]), plots / "comparison.png", estimator))
    if csv["deviation"].exists():
        out.append(_deviation(pd.read_csv(csv["deviation"]), plots / "deviation.png"))
    return out


def plot_run(run: RunDir) -> list[Path]:
    """:func:`plot_folder` on a run directory (plots under ``run/plots``)."""
    return plot_folder(run.path, run.plots, str(run.config_dict().get("selection", "wis")))
