"""Benchmark: off-policy evaluation with a FITTED behaviour policy on MDPs with known values.

For every data seed, a data set is logged under the true behaviour policy :math:`\\pi_b`, the
behaviour policy is fitted (``fit_behaviour(kind="tabular")``: Dirichlet-smoothed counts, held-out
temperature never below 1), and each target policy is evaluated by
``clinfuse.rl.ope.evaluate_policy`` (WIS, CWPDIS, DR, WDR and FQE, the model cross-fitted over 5
patient folds, 95% patient-bootstrap CIs). Baseline measured in the same run: DR/WDR with the
same FQE fitted in sample (``cross_fit=1``), the recipe that the library's error hint gave before.

MDPs (exact values by linear solve / backward induction; the nutrition simulator's by 20,000
seeded Monte Carlo roll-outs, standard error reported):

* ``random``: :func:`random_mdp` (15 states, 4 actions, gamma 0.95, a fresh MDP per seed), a
  softmax behaviour policy with one action per state never taken; 400 episodes;
* ``sepsis``: the Oberst-Sontag simulator (1440 states, 8 actions, 20 steps, gamma 1), physician
  policy, full-state observations (a Markov observation); 1,000 episodes;
* ``nutrition``: DeepEN's ICU-nutrition simulator (32 continuous features, 51 actions, terminal
  reward +-15, gamma 0.99), clinician policy; 500 admissions; the behaviour model counts actions
  per (day, SOFA, lactate band, sodium band) cell and FQE is linear in the features;
* ``sepsis_pomdp`` (information, not a check): the same simulator with diabetes hidden, where the
  physician's actions are confounded and no estimator is consistent.

Targets: ``behaviour`` (the true :math:`\\pi_b`), ``near_support`` (0.9 :math:`\\pi_b` + 0.1
uniform over the actions :math:`\\pi_b` takes with probability >= 1e-3), ``near_all`` (0.9
:math:`\\pi_b` + 0.1 uniform over all actions), ``bc`` (0.99 greedy of the fitted behaviour +
0.01 uniform) and ``cql`` (0.99 greedy of a discrete CQL learner, alpha 1, + 0.01 uniform; on the
first ``--cql-seeds`` seeds of the tabular MDPs).

Acceptance: cross-fitted DR and WDR CIs cover the exact value in >= 90% of seeds for the
behaviour and near-behaviour targets on random, sepsis and nutrition; no estimate outside the
return range is printed without a flag.

Usage::

    .venv/bin/python benchmarks/rl_ope.py               # 50 seeds (about 20 min on 2 cores)
    .venv/bin/python benchmarks/rl_ope.py --seeds 5     # a quick look

Writes ``benchmarks/results/rl_ope.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from _machine import describe, machine_info  # noqa: E402  (benchmarks/ is on sys.path)
from clinfuse.core.runs import atomic_write_json, atomic_write_text
from clinfuse.methods.deepen import simulator as sim
from clinfuse.rl.data import Trajectories
from clinfuse.rl.envs.sepsis import SepsisConfig, build_sepsis_mdp
from clinfuse.rl.envs.tabular import TabularMDP, random_mdp, softmax_policy
from clinfuse.rl.learners import QConfig, QLearner
from clinfuse.rl.ope import evaluate_policy, fit_behaviour, format_estimate

OUT = Path(__file__).resolve().parent / "results"
ESTIMATORS = ["wis", "cwpdis", "dr", "wdr", "fqe"]
CHECKED = ("random", "sepsis", "nutrition")
COVERAGE_GOAL = 0.9
MIN_SEEDS = 50
"""Coverage counts as measured only over at least this many data seeds."""
log = logging.getLogger("rl_ope")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=50, help="data seeds per MDP")
    p.add_argument("--cql-seeds", type=int, default=10, help="seeds with a CQL target")
    p.add_argument("--n-boot", type=int, default=50, help="bootstrap resamples per CI")
    p.add_argument("--mdps", nargs="+", default=["random", "sepsis", "nutrition"])
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


# -- policies -------------------------------------------------------------------------------
def near(pi: np.ndarray, support: float) -> np.ndarray:
    """0.9 pi + 0.1 uniform over {a: pi(a|s) >= support} (all actions when support is 0)."""
    keep = (pi >= support).astype(np.float64)
    keep[keep.sum(1) == 0] = 1.0
    return 0.9 * pi + 0.1 * keep / keep.sum(1, keepdims=True)


def soft_greedy(scores: np.ndarray, eps: float = 0.01) -> np.ndarray:
    out = np.full(scores.shape, eps / scores.shape[1])
    out[np.arange(len(scores)), scores.argmax(1)] += 1.0 - eps
    return out


@dataclass
class Case:
    """One data seed of one MDP: logged data, true behaviour at the logged rows, targets."""

    traj: Trajectories
    pb_true: np.ndarray
    pb_hat: np.ndarray
    behaviour: Any
    targets: dict[str, tuple[np.ndarray, float]]  # name -> (pi_e at logged rows, exact value)
    gamma: float
    value_range: tuple[float, float]


# -- tabular MDPs ---------------------------------------------------------------------------
def _tabular_targets(
    mdp: TabularMDP, pi_b: np.ndarray, traj: Trajectories, state: np.ndarray, model: Any,
    obs_of: Callable[[np.ndarray], np.ndarray], cql: bool, seed: int,
) -> dict[str, tuple[np.ndarray, float]]:  # fmt: skip
    S = mdp.n_states
    pols = {"behaviour": pi_b, "near_support": near(pi_b, 1e-3), "near_all": near(pi_b, 0.0)}
    all_obs = obs_of(np.arange(S))
    pols["bc"] = soft_greedy(model.proba(all_obs))
    if cql:
        learner = QLearner(
            QConfig(hidden=(64,), cql_alpha=1.0, gamma=mdp.gamma, lr=1e-3, steps=2000,
                    target_every=500, huber=False, progress=False, seed=seed),
            traj.obs_dim, mdp.n_actions,
        )  # fmt: skip
        learner.fit(traj)
        pols["cql"] = soft_greedy(learner.q_values(all_obs))
    return {k: (p[state], mdp.policy_value(p)) for k, p in pols.items()}


def random_case(seed: int, cql: bool) -> Case:
    S, A = 15, 4
    mdp = random_mdp(S, A, 1000 + seed, gamma=0.95, p_terminate=0.1)
    rng = np.random.default_rng(2000 + seed)
    logits = 1.5 * rng.normal(size=(S, A))
    logits[np.arange(S), rng.integers(0, A, S)] = -np.inf  # one action never taken per state
    pi_b = softmax_policy(logits)
    traj = mdp.sample(pi_b, 400, seed=seed)
    model = fit_behaviour(traj, kind="tabular", seed=seed)
    s = traj.meta["state"]
    targets = _tabular_targets(
        mdp, pi_b, traj, s, model, lambda ids: np.eye(S, dtype=np.float32)[ids], cql, seed
    )
    G = mdp.R.min() / (1 - mdp.gamma), mdp.R.max() / (1 - mdp.gamma)
    return Case(traj, pi_b[s], model.proba(traj.obs), model, targets, mdp.gamma, G)


_SEPSIS: dict[bool, Any] = {}


def sepsis_case(seed: int, cql: bool, observed: bool = False) -> Case:
    if observed not in _SEPSIS:
        _SEPSIS[observed] = build_sepsis_mdp(SepsisConfig(obs="onehot" if observed else "vitals"))
    sm = _SEPSIS[observed]
    mdp = sm.mdp
    pi_b = sm.physician_policy()
    traj = sm.simulate(pi_b, 1000, seed=seed, observed=observed)
    model = fit_behaviour(traj, kind="tabular", seed=seed)
    s = traj.meta["state"]

    def obs_of(ids: np.ndarray) -> np.ndarray:
        return sm.features(ids, observed=observed)

    targets = _tabular_targets(mdp, pi_b, traj, s, model, obs_of, cql and not observed, seed)
    return Case(traj, pi_b[s], model.proba(traj.obs), model, targets, mdp.gamma, (-1.0, 1.0))


# -- the nutrition simulator ----------------------------------------------------------------
_NUTRITION_TRUTH: dict[str, float] = {}
NUTRITION_GAMMA = 0.99


def _nutrition_key(obs: np.ndarray) -> np.ndarray:
    """The clinician's inputs, binned: day, SOFA, lactate band, sodium band."""
    col = {n: sim.FEATURES.index(n) for n in ("days_since_admit", "sofa", "lactate", "sodium")}
    day = np.floor(obs[:, col["days_since_admit"]])
    sofa = np.clip(np.round(obs[:, col["sofa"]]), 0, 16)
    lac = np.digitize(obs[:, col["lactate"]], [2.0, 3.0, 4.0])
    na = np.digitize(obs[:, col["sodium"]], [136.0, 140.0, 144.0, 148.0])
    return np.stack([day, sofa, lac, na], axis=1).astype(np.float32)


def _nutrition_policies() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    def clin(obs: np.ndarray) -> np.ndarray:
        return sim.clinician_policy(obs)

    return {
        "behaviour": clin,
        "near_support": lambda o: near(clin(o), 1e-3),
        "near_all": lambda o: near(clin(o), 0.0),
    }


def nutrition_truth(n: int = 20_000) -> dict[str, tuple[float, float]]:
    out = {}
    for name, pol in _nutrition_policies().items():
        g = sim.simulate(pol, n, 777).returns(gamma=NUTRITION_GAMMA)
        out[name] = (float(g.mean()), float(g.std(ddof=1) / np.sqrt(n)))
    return out


def nutrition_case(seed: int, cql: bool, truth: dict[str, tuple[float, float]]) -> Case:
    del cql
    res = sim.make_default_dataset(500, seed=seed)
    traj = res.to_trajectories()
    keyed = replace(traj, obs=_nutrition_key(traj.obs), feature_names=None, meta={})
    model = fit_behaviour(keyed, kind="tabular", seed=seed)
    pols = _nutrition_policies()
    targets = {k: (p(traj.obs), truth[k][0]) for k, p in pols.items()}
    return Case(
        traj, pols["behaviour"](traj.obs), model.proba(keyed.obs), model, targets,
        NUTRITION_GAMMA, (-15.0, 15.0),
    )  # fmt: skip


# -- evaluation -----------------------------------------------------------------------------
def evaluate_case(mdp: str, seed: int, case: Case, n_boot: int) -> list[dict[str, Any]]:
    rows = []
    for target, (pe, truth) in case.targets.items():
        common = {"n_boot": n_boot, "seed": seed, "value_range": case.value_range}
        table = evaluate_policy(
            case.traj, pe, case.pb_hat, case.gamma, estimators=ESTIMATORS,
            behaviour=case.behaviour, **common,
        )  # fmt: skip
        base = evaluate_policy(
            case.traj, pe, case.pb_hat, case.gamma, estimators=["dr", "wdr"], cross_fit=1,
            **common,
        )  # fmt: skip
        base["estimator"] = base["estimator"] + "_insample"
        for t in (table, base):
            for _, r in t.iterrows():
                rows.append(
                    {
                        "mdp": mdp, "seed": seed, "target": target, "truth": truth,
                        "estimator": r["estimator"], "value": r["value"],
                        "value_raw": r["value_raw"], "ci_low": r["ci_low"],
                        "ci_high": r["ci_high"], "ess": r["ess"], "flags": r["flags"],
                        "printed": format_estimate(r, 3),
                        "covers": bool(r["ci_low"] <= truth <= r["ci_high"]),
                        "n_episodes": case.traj.n_episodes,
                        "low_support_mass": t.attrs["positivity"]["low_support_mass"],
                        "temperature": case.behaviour.report["temperature"],
                    }
                )  # fmt: skip
    return rows


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["mdp", "target", "estimator"], sort=False)
    out = g.agg(
        seeds=("seed", "nunique"),
        truth=("truth", "mean"),
        mean_estimate=("value", "mean"),
        coverage=("covers", "mean"),
        mean_ess=("ess", "mean"),
        n=("n_episodes", "mean"),
        flagged=("flags", lambda f: float(np.mean([bool(x) for x in f]))),
    ).reset_index()
    err = df["value"] - df["truth"]
    keys = [df["mdp"], df["target"], df["estimator"]]
    out["bias"] = err.groupby(keys, sort=False).mean().to_numpy()
    out["rmse"] = np.sqrt((err**2).groupby(keys, sort=False).mean().to_numpy())
    return out


def checks(df: pd.DataFrame, summary: pd.DataFrame, mdps: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sel = summary[
        summary["mdp"].isin([m for m in CHECKED if m in mdps])
        & summary["target"].isin(["behaviour", "near_support", "near_all"])
        & summary["estimator"].isin(["dr", "wdr"])
    ]
    worst = float(sel["coverage"].min()) if len(sel) else float("nan")
    cells = {
        f"{r.mdp}/{r.target}/{r.estimator}": round(float(r.coverage), 3) for r in sel.itertuples()
    }
    seeds = int(sel["seeds"].min()) if len(sel) else 0
    out["dr_wdr_coverage_ge_0.9"] = {
        "pass": bool(worst >= COVERAGE_GOAL and len(sel) == 3 * 3 * 2 and seeds >= MIN_SEEDS),
        "value": worst,
        "target": COVERAGE_GOAL,
        "cells": cells,
        "seeds": seeds,
    }
    out_of_range = df[(df["value_raw"] != df["value"]) | df["flags"].str.contains("out_of_range")]
    bare = out_of_range[~out_of_range["printed"].str.contains("outside the return range")]
    out["no_unflagged_out_of_range"] = {
        "pass": bool(len(bare) == 0),
        "value": int(len(bare)),
        "target": 0,
        "out_of_range_estimates": int(len(out_of_range)),
    }
    return out


def plot(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ests = ["wis", "cwpdis", "dr", "wdr", "fqe", "dr_insample", "wdr_insample"]
    mdps = list(dict.fromkeys(summary["mdp"]))
    fig, axes = plt.subplots(1, len(mdps), figsize=(4.2 * len(mdps), 3.6), squeeze=False)
    targets = ["behaviour", "near_support", "near_all", "bc", "cql"]
    for ax, m in zip(axes[0], mdps, strict=True):
        d = summary[summary["mdp"] == m]
        for j, e in enumerate(ests):
            cov = [
                float(d[(d["target"] == t) & (d["estimator"] == e)]["coverage"].iloc[0])
                if len(d[(d["target"] == t) & (d["estimator"] == e)])
                else np.nan
                for t in targets
            ]
            ax.bar(np.arange(len(targets)) + 0.11 * (j - 3), cov, 0.11, label=e)
        ax.axhline(COVERAGE_GOAL, color="k", ls="--", lw=0.8)
        ax.set_xticks(range(len(targets)), targets, rotation=30, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(m)
        ax.set_ylabel("95% CI coverage of the exact value")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(summary: pd.DataFrame, chk: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Off-policy evaluation with a fitted behaviour policy (`benchmarks/rl_ope.py`)",
        "",
        f"Machine: {describe(meta['machine'])}. Seeds: {meta['seeds_done']} per MDP "
        f"(CQL target: first {meta['cql_seeds']}), {meta['n_boot']} bootstrap resamples, "
        f"run time {meta['seconds']:.0f} s. Behaviour fitted with "
        "`fit_behaviour(kind='tabular')`; FQE/DR/WDR cross-fitted over 5 patient folds; "
        "`*_insample` is the same model fitted in sample (baseline).",
        "",
        "| check | pass | value | target |",
        "|---|---|---|---|",
    ]
    for k, v in chk.items():
        lines.append(f"| {k} | {'PASS' if v['pass'] else 'FAIL'} | {v['value']} | {v['target']} |")
    if "nutrition_truth" in meta:
        t = meta["nutrition_truth"]
        lines += ["", "Nutrition simulator true values (20,000 roll-outs, mean and SE): "
                  + ", ".join(f"{k} {v[0]:.3f} ({v[1]:.3f})" for k, v in t.items())]  # fmt: skip
    lines += [
        "",
        "| mdp | target | estimator | seeds | truth | mean estimate | bias | RMSE | coverage "
        "| mean ESS / n | flagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples():
        lines.append(
            f"| {r.mdp} | {r.target} | {r.estimator} | {r.seeds} | {r.truth:.3f} | "
            f"{r.mean_estimate:.3f} | {r.bias:+.3f} | {r.rmse:.3f} | {r.coverage:.2f} | "
            f"{r.mean_ess:.0f} / {r.n:.0f} | {r.flagged:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    torch.set_num_threads(1)
    t0 = time.time()
    meta: dict[str, Any] = {
        "machine": machine_info(),
        "seeds": args.seeds,
        "cql_seeds": args.cql_seeds,
        "n_boot": args.n_boot,
    }
    truth = None
    if "nutrition" in args.mdps:
        truth = nutrition_truth()
        meta["nutrition_truth"] = truth
        log.info("nutrition truth %s", truth)
    makers: dict[str, Callable[[int, bool], Case]] = {
        "random": random_case,
        "sepsis": sepsis_case,
        "sepsis_pomdp": lambda s, c: sepsis_case(s, c, observed=True),
        "nutrition": lambda s, c: nutrition_case(s, c, truth or {}),
    }
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for mdp in args.mdps:
            t1 = time.time()
            case = makers[mdp](seed, seed < args.cql_seeds)
            rows += evaluate_case(mdp, seed, case, args.n_boot)
            log.info("seed %d %s done (%.0f s, %.0f s in all)", seed, mdp, time.time() - t1,
                     time.time() - t0)  # fmt: skip
        meta["seeds_done"] = seed + 1
        write(rows, meta, args, t0)
    return 0


def write(rows: list[dict[str, Any]], meta: dict[str, Any], args: argparse.Namespace,
          t0: float) -> None:  # fmt: skip
    """Results so far (written after every seed, so a stopped run keeps its seeds)."""
    df = pd.DataFrame(rows)
    summary = summarise(df)
    chk = checks(df, summary, args.mdps)
    meta["seconds"] = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        args.out / "rl_ope.json",
        {"checks": chk, "meta": meta, "summary": summary.to_dict(orient="records")},
    )
    atomic_write_text(args.out / "rl_ope.md", markdown(summary, chk, meta))
    plot(summary, args.out / "rl_ope.png")
    log.info("\n%s", markdown(summary, chk, meta))


if __name__ == "__main__":
    sys.exit(main())
