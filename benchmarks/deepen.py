r"""Benchmark: DeepEN (D3QN + CQL) against its comparison policies, and OPE against ground truth.

Two parts, each with explicit PASS/FAIL checks:

**(a) ICU-nutrition simulator** (:mod:`clinfuse.methods.deepen.simulator`). ``clinfuse fit deepen``
with the ``paper`` preset (``--quick``: the ``quick`` preset) runs into a temporary directory;
the comparison table (OPE on the test patients + true values by seeded roll-outs) is read back.
Checks:

* the learned policy's true value exceeds the clinician's and the guideline's with
  non-overlapping 95% intervals: :math:`\text{low}(\pi_{RL}) > \text{high}(\pi)`;
* WIS and CWPDIS of the clinician policy and of the near-behaviour policy
  (:math:`0.9\,\hat\pi_b + 0.1\,U_s`, :math:`U_s` uniform over the actions
  :math:`\hat\pi_b(\cdot|s)` gives at least 0.01): the bootstrap 95% CI contains the true value.

Besides, for OPE's sake, the near-behaviour check is repeated for mixes
:math:`(1-\lambda)\pi_b + \lambda U` with several :math:`\lambda`, :math:`U` uniform over all
actions or over the clinician's support: it shows how far from the clinicians importance
sampling still works over 42 four-hour steps, and that a uniform share over *all* actions fails
for want of positivity (the clinicians never take some of them).

**(b) Oberst-Sontag sepsis simulator** (:mod:`clinfuse.rl.envs.sepsis`): physician data
(``--sepsis-episodes``, default 5000) with the observed features (diabetes hidden), a tabular
behaviour model :math:`\hat\pi_b(a|o)` fitted on one-hot observed states, and WIS / CWPDIS with
patient-bootstrap CIs of the physician policy (:math:`\pi_e = \hat\pi_b`) and of the
near-behaviour policy (:math:`0.9\,\hat\pi_b + 0.1` uniform), against the exact values of the
physician policy and of :math:`0.9\,\pi_{phys} + 0.1` uniform (full-state policies, exact by
backward induction). The hidden diabetes confounds the physician's actions: the same rows are
evaluated with :math:`\hat\pi_b` fitted on the full state (diabetes visible) and with the true
:math:`\pi_b` as controls, and once with the full-state target :math:`0.9\,\pi_{phys}(s) + 0.1`
uniform against the observed-state :math:`\hat\pi_b(a|o)` (the confounded ratio).

Usage::

    .venv/bin/python benchmarks/deepen.py                    # paper preset, ~2.5 min on 2 cores
    .venv/bin/python benchmarks/deepen.py --extra-seeds 1 2  # + two refits (~1.5 min each)
    .venv/bin/python benchmarks/deepen.py --quick            # quick preset, 1000 sepsis episodes

Writes ``benchmarks/results/deepen.json`` and ``deepen.md`` and copies the comparison and
alpha-sweep plots next to them (``--quick``: ``deepen_quick.*`` in the temp folder, so a smoke
run never overwrites the committed results; ``--out`` chooses another place).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from _machine import describe, machine_info  # noqa: E402  (benchmarks/ is on sys.path)
from clinfuse.api import run as fit_method
from clinfuse.core.config import config_to_dict
from clinfuse.core.runs import atomic_write_json, atomic_write_text
from clinfuse.methods.deepen import simulator as sim
from clinfuse.methods.deepen.method import DeepEN, DeepENData, near_mix
from clinfuse.rl.envs.sepsis import N_ACTIONS, SepsisConfig, build_sepsis_mdp
from clinfuse.rl.ope import evaluate_policy, fit_behaviour

RESULTS = Path(__file__).resolve().parent / "results"
OPE_POLICIES = ("clinician", "near_behaviour")
OPE_ESTIMATORS = ("wis", "cwpdis")
MIXES = (0.01, 0.03, 0.1, 0.3)
"""Uniform shares lambda of the extra near-behaviour OPE checks on the simulator."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="quick preset, 1000 sepsis episodes")
    p.add_argument("--preset", default=None, help="DeepEN preset (default: paper, quick)")
    p.add_argument("--set", action="append", default=[], help="DeepEN config override k=v")
    p.add_argument("--sepsis-episodes", type=int, default=None, help="default 5000 (quick 1000)")
    p.add_argument("--n-boot", type=int, default=None, help="sepsis bootstrap (200, quick 50)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: fastest on shared CPUs)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sepsis data and bootstrap")
    p.add_argument(
        "--extra-seeds",
        type=int,
        nargs="*",
        default=[],
        help="refit DeepEN with these seeds too (new data, split and networks): the learned-vs-"
        "clinician/guideline check per seed",
    )
    p.add_argument("--skip-simulator", action="store_true", help="run part (b) only")
    p.add_argument("--skip-sepsis", action="store_true", help="run part (a) only")
    p.add_argument("--out", type=Path, default=None, help="JSON path (.md goes next to it)")
    args = p.parse_args(argv)
    args.preset = args.preset or ("quick" if args.quick else "paper")
    args.sepsis_episodes = args.sepsis_episodes or (1000 if args.quick else 5000)
    args.n_boot = args.n_boot or (50 if args.quick else 200)
    quick_out = Path(tempfile.gettempdir()) / "clinfuse_bench" / "deepen_quick.json"
    args.out = args.out or (quick_out if args.quick else RESULTS / "deepen.json")
    return args


def _covers(low: float, high: float, value: float) -> bool:
    return bool(low <= value <= high)


# ------------------------------------------------------------------------------------------
# (a) the ICU-nutrition simulator
# ------------------------------------------------------------------------------------------
def mix_checks(learner: DeepEN, data: DeepENData, mixes: tuple[float, ...]) -> list[dict]:
    """OPE (WIS, CWPDIS) vs roll-out truth of :math:`(1-\\lambda)\\pi_b + \\lambda U` on the test
    patients, for each :math:`\\lambda` in ``mixes``, with the fitted :math:`\\hat\\pi_b` (as the
    pipeline's ``near_behaviour``) or the simulator's exact clinician policy
    (:func:`~clinfuse.methods.deepen.simulator.clinician_policy`) in both places, and :math:`U`
    uniform over all actions or over the clinician's support (``near_support``). Each row also
    gives the mass per step that the target puts on actions the exact clinician takes with
    probability below 1e-4 (``unsupported_mass``): importance sampling cannot see that mass."""
    cfg = learner.config
    traj = learner._prepare(data)["test"]
    raw = learner._splits(data)["test"]
    fitted = learner.policies(data)["clinician"]
    exact_pb = sim.clinician_policy(raw.obs, data.sim_config)

    def exact(obs: np.ndarray) -> np.ndarray:
        return sim.clinician_policy(obs, data.sim_config)

    rows = []
    for behaviour, pi_b_fn in (("fitted", fitted), ("exact", exact)):
        pi_b = pi_b_fn(raw.obs)
        for support in (0.0, cfg.near_support):
            for lam in mixes:

                def policy(
                    obs: np.ndarray, lam: float = lam, fn: Any = pi_b_fn, sup: float = support
                ) -> np.ndarray:
                    return near_mix(fn(obs), lam, sup)

                pi_e = policy(raw.obs)
                est = evaluate_policy(
                    traj,
                    pi_e,
                    pi_b,
                    cfg.gamma,
                    estimators=list(OPE_ESTIMATORS),
                    n_boot=cfg.n_boot,
                    seed=cfg.seed,
                )
                truth = learner._rollout(data, policy, cfg.rollout_patients)
                unsupported = float(np.mean(np.sum(pi_e * (exact_pb < 1e-4), axis=1)))
                for _, r in est.iterrows():
                    rows.append(
                        {
                            "pi_b": behaviour,
                            "support": support,
                            "uniform_share": lam,
                            "unsupported_mass": unsupported,
                            "estimator": r["estimator"],
                            "value": float(r["value"]),
                            "ci_low": float(r["ci_low"]),
                            "ci_high": float(r["ci_high"]),
                            "ess": float(r["ess"]),
                            "true_value": truth["true_value"],
                            "covers": _covers(r["ci_low"], r["ci_high"], truth["true_value"]),
                        }
                    )
    return rows


def _beats(table: pd.DataFrame) -> dict[str, Any]:
    """The learned policy's true value against the clinician's and the guideline's."""
    by = table.set_index("policy")
    rl = by.loc["d3qn_cql"]
    checks: dict[str, Any] = {}
    for other in ("clinician", "guideline"):
        o = by.loc[other]
        checks[f"d3qn_cql_beats_{other}"] = {
            "pass": bool(rl["true_low"] > o["true_high"]),
            "d3qn_cql": [rl["true_value"], rl["true_low"], rl["true_high"]],
            other: [o["true_value"], o["true_low"], o["true_high"]],
        }
    return checks


def _mortality(table: pd.DataFrame) -> dict[str, bool]:
    """Information only: is the learned policy's true mortality below another's (no overlap)?"""
    by = table.set_index("policy")
    rl = by.loc["d3qn_cql"]
    return {
        f"d3qn_cql_mortality_below_{o}": bool(
            rl["true_mortality_high"] < by.loc[o, "true_mortality_low"]
        )
        for o in ("clinician", "guideline")
    }


def seed_check(args: argparse.Namespace, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """Refit with another seed (data, split, networks, bootstrap) and compare true values."""
    with tempfile.TemporaryDirectory(prefix="deepen_bench_") as tmp:
        t0 = time.perf_counter()
        learner, rd = fit_method(
            "deepen", preset=args.preset, overrides={**overrides, "seed": seed}, out=tmp
        )
        fit_s = time.perf_counter() - t0
        assert isinstance(learner, DeepEN) and learner.table is not None
        table = learner.table
        chosen = rd.read_metrics().get("chosen_alpha")
    keep = ["policy", "true_value", "true_low", "true_high", "true_mortality"]
    return {
        "seed": seed,
        "fit_seconds": fit_s,
        "chosen_alpha": chosen,
        "true": table[keep].to_dict(orient="records"),
        "checks": _beats(table),
    }


def simulator_part(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {"progress": False, **dict(kv.split("=", 1) for kv in args.set)}
    with tempfile.TemporaryDirectory(prefix="deepen_bench_") as tmp:
        t0 = time.perf_counter()
        learner, rd = fit_method("deepen", preset=args.preset, overrides=overrides, out=tmp)
        fit_s = time.perf_counter() - t0
        assert isinstance(learner, DeepEN) and learner.table is not None
        config = config_to_dict(learner.config)
        table = learner.table.copy()
        sweep = pd.read_csv(rd.path / "alpha_sweep.csv")
        metrics = rd.read_metrics()
        comparison_md = learner.report_table()
        suffix = "_quick" if args.quick else ""
        plots = []
        for name in ("comparison", "alpha_sweep"):
            src = rd.plots / f"{name}.png"
            if src.exists():
                dst = args.out.parent / f"deepen{suffix}_{name}.png"
                shutil.copyfile(src, dst)
                plots.append(dst.name)
        data = learner.load_data()
        t1 = time.perf_counter()
        mixes = mix_checks(learner, data, MIXES)
        mix_s = time.perf_counter() - t1

    by = table.set_index("policy")
    checks = _beats(table)
    for pol in OPE_POLICIES:
        r = by.loc[pol]
        for est in OPE_ESTIMATORS:
            checks[f"ope_{est}_{pol}"] = {
                "pass": _covers(r[f"{est}_low"], r[f"{est}_high"], r["true_value"]),
                "estimate": [r[est], r[f"{est}_low"], r[f"{est}_high"]],
                "ess": r[f"{est}_ess"],
                "true": [r["true_value"], r["true_low"], r["true_high"]],
                "estimate_inside_true_ci": _covers(r["true_low"], r["true_high"], r[est]),
            }
    return {
        "preset": args.preset,
        "config": config,
        "fit_seconds": fit_s,
        "extra_seeds": [seed_check(args, overrides, s) for s in args.extra_seeds],
        "mix_check_seconds": mix_s,
        "chosen_alpha": metrics.get("chosen_alpha"),
        "comparison": table.to_dict(orient="records"),
        "clinician_logged_mortality": table.attrs.get("clinician_logged_mortality"),
        "alpha_sweep": sweep.to_dict(orient="records"),
        "safety": {k[len("safety_") :]: v for k, v in metrics.items() if k.startswith("safety_")},
        "checks": checks,
        "mortality_info": _mortality(table),
        "near_behaviour_mixes": mixes,
        "comparison_md": comparison_md,
        "plots": plots,
    }


# ------------------------------------------------------------------------------------------
# (b) the Oberst-Sontag sepsis simulator
# ------------------------------------------------------------------------------------------
def sepsis_part(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    mdp = build_sepsis_mdp(SepsisConfig())
    gamma = mdp.config.gamma
    physician = mdp.physician_policy()
    near_full = 0.9 * physician + 0.1 / N_ACTIONS
    exact = {
        "physician": mdp.value(physician),
        "near_behaviour": mdp.value(near_full),
        "optimal": mdp.value("optimal"),
        "random": mdp.value("random"),
    }
    traj = mdp.simulate("physician", args.sepsis_episodes, seed=args.seed)
    state = traj.meta["state"]
    models: dict[str, np.ndarray] = {}
    reports: dict[str, dict] = {}
    for view, observed in (("observed", True), ("full_state", False)):
        onehot = mdp.features(state, observed=observed, kind="onehot").astype(np.float32)
        t = replace(traj, obs=onehot, feature_names=None)
        model = fit_behaviour(t, kind="tabular", seed=args.seed)
        models[view] = model.proba(onehot)
        reports[view] = model.report
        if observed:  # the observed-state clone as a policy of its own (it cannot see diabetes)
            ids = np.arange(mdp.n_obs_states)
            table = model.proba(mdp.features(ids, observed=True, kind="onehot").astype(np.float32))
            exact["observed_state_clone"] = mdp.value(table)
            exact["observed_state_near_clone"] = mdp.value(0.9 * table + 0.1 / N_ACTIONS)
    models["true_pi_b"] = physician[state]  # the oracle: the physician sees diabetes

    rows = []

    def add(view: str, policy: str, pi_e: np.ndarray, pi_b: np.ndarray, truth: str) -> None:
        est = evaluate_policy(
            traj,
            pi_e,
            pi_b,
            gamma,
            estimators=list(OPE_ESTIMATORS),
            n_boot=args.n_boot,
            seed=args.seed,
        )
        for _, r in est.iterrows():
            rows.append(
                {
                    "behaviour_model": view,
                    "policy": policy,
                    "estimator": r["estimator"],
                    "value": float(r["value"]),
                    "ci_low": float(r["ci_low"]),
                    "ci_high": float(r["ci_high"]),
                    "ess": float(r["ess"]),
                    "exact": exact[truth],
                    "covers": _covers(r["ci_low"], r["ci_high"], exact[truth]),
                }
            )

    for view, pi_b in models.items():
        add(view, "physician", pi_b, pi_b, "physician")
        add(view, "near_behaviour", 0.9 * pi_b + 0.1 / N_ACTIONS, pi_b, "near_behaviour")
    # the confounding, twice: the full-state target against the observed-state model, and the
    # observed-state clone judged by what it would be worth if deployed (it cannot see diabetes)
    observed = models["observed"]
    add("observed", "near_behaviour (full-state pi_e)", near_full[state], observed,
        "near_behaviour")  # fmt: skip
    add("observed", "clone deployed (observed-state pi_e)", observed, observed,
        "observed_state_clone")  # fmt: skip
    checks = {
        f"sepsis_{r['estimator']}_{r['policy']}": {
            "pass": r["covers"],
            "estimate": [r["value"], r["ci_low"], r["ci_high"]],
            "exact": r["exact"],
            "ess": r["ess"],
        }
        for r in rows
        if r["behaviour_model"] == "observed" and r["policy"] in ("physician", "near_behaviour")
    }
    diabetic = traj.meta["diabetic"][traj.starts]
    return {
        "episodes": args.sepsis_episodes,
        "steps": len(traj),
        "n_boot": args.n_boot,
        "gamma": gamma,
        "horizon": mdp.config.horizon,
        "diabetic_share_of_patients": float(diabetic.mean()),
        "mean_logged_return": float(traj.returns(gamma).mean()),
        "exact": exact,
        "behaviour_models": reports,
        "estimates": rows,
        "checks": checks,
        "seconds": time.perf_counter() - t0,
    }


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _ci(v: list[float] | tuple[float, ...]) -> str:
    return f"{v[0]:.2f} ({v[1]:.2f}, {v[2]:.2f})"


def to_markdown(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    lines = [f"# DeepEN benchmark ({payload['mode']})", ""]
    sim = payload.get("simulator")
    if sim:
        c = sim["config"]
        lines += [
            "## (a) ICU-nutrition simulator: D3QN + CQL against the comparison policies",
            "",
            f"Preset `{sim['preset']}`: {c['n_patients']} simulated admissions (70/10/20 split), "
            f"MLP {c['hidden']}, lr {c['lr']}, batch {c['batch_size']}, {c['steps']} steps per "
            f"alpha, hard target copy every {c['target_every']}, gamma {c['gamma']}, alphas "
            f"{c['alphas']} (chosen by validation {c['selection'].upper()}: "
            f"**{sim['chosen_alpha']:g}**), support_min_count {c['support_min_count']}, "
            f"evaluation policy (1 - {c['eval_epsilon']}) greedy + {c['eval_epsilon']} uniform; "
            f"OPE on the test patients ({c['n_boot']} bootstrap resamples), true values by "
            f"{c['rollout_patients']} seeded roll-outs per policy. "
            f"Fit: {sim['fit_seconds']:.0f} s.",
            "",
            sim["comparison_md"],
            "",
            f"Logged clinician mortality on the test patients: "
            f"{sim['clinician_logged_mortality']:.3f}.",
            "",
            "| check | result | numbers |",
            "|---|---|---|",
        ]
        for name, ch in sim["checks"].items():
            if name.startswith("d3qn_cql_beats_"):
                other = name[len("d3qn_cql_beats_") :]
                nums = f"d3qn_cql {_ci(ch['d3qn_cql'])} vs {other} {_ci(ch[other])}"
            else:
                nums = (
                    f"estimate {_ci(ch['estimate'])} (ESS {ch['ess']:.1f}), true {_ci(ch['true'])}"
                )
            lines.append(f"| {name} | {_mark(ch['pass'])} | {nums} |")
        info = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in sim["mortality_info"].items())
        lines += [
            "",
            f"Information (not a check), true mortality with non-overlapping CIs: {info}.",
            "",
            "Alpha sweep (validation OPE; true values from "
            f"{c['rollout_patients'] // 2} roll-outs):",
            "",
            "| alpha | valid WIS | valid CWPDIS | ESS | true value | true mortality |",
            "|---|---|---|---|---|---|",
        ]
        for r in sim["alpha_sweep"]:
            lines.append(
                f"| {r['alpha']:g} | {r['valid_wis']:.2f} | {r['valid_cwpdis']:.2f} | "
                f"{r['valid_wis_ess']:.1f} | {r.get('true_value', float('nan')):.2f} | "
                f"{r.get('true_mortality', float('nan')):.3f} |"
            )
        if sim["extra_seeds"]:
            lines += [
                "",
                "Other seeds (new data, split, networks; true values with 95% CIs):",
                "",
                "| seed | chosen alpha | d3qn_cql | clinician | guideline | d3qn_cql mortality | "
                "beats both |",
                "|---|---|---|---|---|---|---|",
            ]
            for e in sim["extra_seeds"]:
                t = {r["policy"]: r for r in e["true"]}
                cells = [
                    _ci([t[p]["true_value"], t[p]["true_low"], t[p]["true_high"]])
                    for p in ("d3qn_cql", "clinician", "guideline")
                ]
                ok = all(ch["pass"] for ch in e["checks"].values())
                lines.append(
                    f"| {e['seed']} | {e['chosen_alpha']:g} | {' | '.join(cells)} | "
                    f"{t['d3qn_cql']['true_mortality']:.3f} | {_mark(ok)} |"
                )
        sim_cfg = sim["config"]
        lines += [
            "",
            "Near-behaviour OPE against the share lambda of (1 - lambda) pi_b + lambda U, with "
            "pi_b the fitted clinician model (as the pipeline's near_behaviour) or the "
            "simulator's exact clinician policy, and U uniform over all actions (support 0) or "
            "over the actions pi_b gives at least `support` (the pipeline's near_behaviour: "
            f"lambda {sim_cfg['near_share']:g}, support {sim_cfg['near_support']:g}), on the "
            "test patients. `unsupported` is the target's mass per step on actions the exact "
            "clinician takes with probability < 1e-4 (invisible to importance sampling). Does "
            "the bootstrap CI cover the roll-out truth?",
            "",
            "| pi_b | support | lambda | unsupported | estimator | estimate (95% CI) | ESS | "
            "true value | covers |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sim["near_behaviour_mixes"]:
            lines.append(
                f"| {r['pi_b']} | {r.get('support', 0.0):g} | {r['uniform_share']:g} | "
                f"{r.get('unsupported_mass', float('nan')):.4f} | {r['estimator']} | "
                f"{_ci([r['value'], r['ci_low'], r['ci_high']])} | {r['ess']:.1f} | "
                f"{r['true_value']:.2f} | {'yes' if r['covers'] else 'no'} |"
            )
        lines += [""]
    sep = payload.get("sepsis")
    if sep:
        ex = sep["exact"]
        lines += [
            "## (b) Oberst-Sontag sepsis simulator: OPE against exact values",
            "",
            f"{sep['episodes']} physician episodes ({sep['steps']} steps, horizon "
            f"{sep['horizon']}, gamma {sep['gamma']:g}), {sep['diabetic_share_of_patients']:.3f} "
            f"of the patients diabetic (hidden), mean logged return "
            f"{sep['mean_logged_return']:.3f}. Exact values: physician {ex['physician']:.4f}, "
            f"0.9 physician + 0.1 uniform {ex['near_behaviour']:.4f}, optimal "
            f"{ex['optimal']:.4f}, random {ex['random']:.4f}; the observed-state clone of the "
            f"physician as a policy {ex['observed_state_clone']:.4f} (its near mix "
            f"{ex['observed_state_near_clone']:.4f}). Tabular behaviour models, patient "
            f"bootstrap with {sep['n_boot']} resamples. The last rows show the hidden-diabetes "
            "confounding: the physician acts on diabetes, which the observed-state model "
            "averages out, so a full-state target gets ratios against the wrong probabilities "
            "(ESS collapses), and the behaviour clone's logged value (the physician's) is not "
            "what the clone would achieve if deployed.",
            "",
            "| behaviour model | target policy | estimator | estimate (95% CI) | ESS | exact | "
            "CI covers exact |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sep["estimates"]:
            lines.append(
                f"| {r['behaviour_model']} | {r['policy']} | {r['estimator']} | "
                f"{r['value']:.3f} ({r['ci_low']:.3f}, {r['ci_high']:.3f}) | {r['ess']:.1f} | "
                f"{r['exact']:.4f} | {_mark(r['covers'])} |"
            )
        lines += [""]
    lines += [
        "## Summary of the checks",
        "",
        "| check | result |",
        "|---|---|",
    ]
    for part in ("simulator", "sepsis"):
        for name, ch in (payload.get(part) or {}).get("checks", {}).items():
            lines.append(f"| {name} | {_mark(ch['pass'])} |")
    lines += [
        "",
        describe(m) + " (the CPUs are shared).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "benchmark": "deepen",
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    if not args.skip_simulator:
        payload["simulator"] = simulator_part(args)
    if not args.skip_sepsis:
        payload["sepsis"] = sepsis_part(args)
    payload["all_checks_pass"] = all(
        ch["pass"] for part in ("simulator", "sepsis") for ch in payload.get(part, {}).get(
            "checks", {}).values()
    )  # fmt: skip
    payload["machine"]["loadavg_at_end"] = list(os.getloadavg())
    markdown = to_markdown(payload)
    atomic_write_json(args.out, payload)
    atomic_write_text(args.out.with_suffix(".md"), markdown)
    print(markdown)
    plots = (payload.get("simulator") or {}).get("plots", [])
    extra = f" and the plots {', '.join(plots)} beside them" if plots else ""
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
