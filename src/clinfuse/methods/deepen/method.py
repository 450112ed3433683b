"""DeepEN end to end: D3QN + CQL with an alpha sweep chosen by validation OPE, comparison policies,
true values in the simulator, return-to-mortality calibration, deviation curves, a safety report.

The pipeline of :meth:`DeepEN.fit` (every step writes into the run directory):

1. data: the simulator's clinician data (or a MIMIC-IV cohort), the reward of the config, a
   patient-level split stratified on mortality, observations z-scored on the training split;
2. the clinician policy :math:`\\hat\\pi_b` (behaviour cloning, temperature-calibrated);
3. for each CQL alpha: D3QN + CQL on the training split (checkpointed, so ``--resume`` skips the
   alphas already trained), its validation OPE estimate (``selection``) and, on simulator data,
   its true value; the best estimate wins (``selection``: cross-fitted WDR, or cross-fitted FQE
   where the WDR's ESS is below ``ess_floor``);
4. on the test split: OPE (IS, WIS, PDIS, CWPDIS, WDR and FQE with patient-bootstrap CIs, every
   estimate clipped to the return range and flagged when unreliable) of every comparison
   policy (learned, clinician, guideline, random, zero, maximum, and a near-behaviour mix used to
   check OPE), true values and mortality by seeded roll-outs (simulator), the return-to-mortality
   calibration, dose-deviation curves and the safety report.

Every deterministic policy is evaluated as :math:`(1-\\epsilon)` itself
:math:`+\\ \\epsilon` uniform (``eval_epsilon``) both in OPE and in the roll-outs, so the two
estimate the same quantity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clinfuse.core.errors import DataError
from clinfuse.core.learner import METHODS, DemoResult, Learner, check_split
from clinfuse.core.runs import RunDir, atomic_path, atomic_write_json
from clinfuse.core.seed import seed_everything
from clinfuse.methods.deepen import simulator as sim
from clinfuse.methods.deepen.config import DeepENConfig
from clinfuse.rl.data import Trajectories
from clinfuse.rl.learners import QConfig, QLearner
from clinfuse.rl.ope import BehaviourModel, fit_behaviour, q_sanity, value_range
from clinfuse.rl.rewards import RewardSpec, build_reward
from clinfuse.rl.splits import split_patients

log = logging.getLogger(__name__)

Policy = Callable[[np.ndarray], np.ndarray]
OPE_ESTIMATORS = ("is", "wis", "pdis", "cwpdis", "wdr", "fqe")
"""Estimators reported on the test split; WDR and FQE use a linear FQE cross-fitted over
patient folds."""
DAY = 6.0  # 4-h steps per day


@dataclass
class DeepENData:
    """Logged trajectories with the per-step frame and the dose of every action id."""

    traj: Trajectories
    """Steps with raw (unscaled) observations and the config's reward."""
    frame: pd.DataFrame
    """Per step, same row order: features, doses, reward inputs, ``patient_died``."""
    doses: np.ndarray
    """``(A, 3)`` kcal/kg, protein g/kg and water mL/kg per 4-h step of each action id."""
    name: str
    sim_config: sim.NutritionSimConfig | None = None
    """Set on simulator data: the true values can then be computed by roll-outs."""

    @property
    def simulated(self) -> bool:
        return self.sim_config is not None


def reward_fn(cfg: DeepENConfig, sofa_column: str = "sofa") -> Callable[[pd.DataFrame], np.ndarray]:
    """The reward of the config as ``frame -> (rows,)`` (weights [inferred])."""
    spec = RewardSpec(
        terminal=cfg.terminal,
        sofa_lactate=cfg.sofa_lactate,
        glucose=cfg.biomarker,
        phosphate=cfg.biomarker,
        sodium=cfg.biomarker,
        nutrition=cfg.nutrition_goal,
        sofa_column=sofa_column,
    )
    composite = build_reward(spec)

    def fn(frame: pd.DataFrame) -> np.ndarray:
        last = (frame["done"] | frame["timeout"]).to_numpy(bool)
        return composite(frame, last, frame["patient_died"].to_numpy(bool))

    return fn


def load_simulator(cfg: DeepENConfig) -> DeepENData:
    """The embedded default: the clinician policy's data from the ICU-nutrition simulator."""
    config = sim.NutritionSimConfig()
    res = sim.make_default_dataset(n_patients=cfg.n_patients, seed=cfg.seed, config=config)
    traj = res.to_trajectories(reward_fn(cfg))
    doses = sim.NutritionSimulator(config).action_doses
    return DeepENData(traj, res.frame, np.asarray(doses), "simulator", config)


def load_mimic(cfg: DeepENConfig, root: str | Path) -> DeepENData:
    """A MIMIC-IV cohort built by :func:`clinfuse.methods.deepen.mimic.build_mdp` (DuckDB).

    Actions: zero + quantile bins of kcal/kg (5), protein g/kg (5), water mL/kg (2), cells seen
    fewer than ``support_min_count`` times dropped and mapped to the nearest kept cell [inferred].
    """
    from clinfuse.methods.deepen.mimic import STATE_FEATURES, build_mdp
    from clinfuse.rl.actions import ActionGrid

    steps, info = build_mdp(root)
    dose_cols = ["kcal_kg", "protein_g_kg", "water_ml_kg"]
    grid = ActionGrid.fit(
        steps[dose_cols].to_numpy(float),
        names=tuple(dose_cols),
        n_bins=(5, 5, 2),
        min_support=max(cfg.support_min_count, 1),
    )
    action = grid.encode(steps[dose_cols].to_numpy(float), nearest=True)
    features = ["age", "male", "weight_kg", "hours", "hours_since_en_start"]
    features += [c for c in steps.columns if c.startswith(("prev_", "cum_"))]
    features += list(STATE_FEATURES) + [f"d_{f}" for f in STATE_FEATURES]
    features = [f for f in features if f in steps.columns]
    frame = steps.copy()
    last = frame["last_bin"].to_numpy(bool)
    trunc = frame["truncated"].to_numpy(bool)
    frame["done"], frame["timeout"] = last & ~trunc, last & trunc
    frame["patient_died"] = frame["death"].astype(bool)
    frame["day"] = frame["hours"] // 24
    for f in ("sofa_lite", "lactate", "glucose", "phosphate", "sodium"):
        frame[f] = frame[f].astype(float)
    rewards = reward_fn(cfg, sofa_column="sofa_lite")(frame)
    traj = Trajectories(
        obs=frame[features].to_numpy(np.float32),
        action=action,
        reward=rewards,
        done=frame["done"].to_numpy(bool),
        timeout=frame["timeout"].to_numpy(bool),
        patient=frame["stay_id"].to_numpy(np.int64),
        time=frame["hours"].to_numpy(float),
        n_actions=grid.n_actions,
        feature_names=tuple(features),
        meta={"action_grid": grid.to_dict(), "cohort": info.get("cohort")},
    )
    return DeepENData(traj, frame, grid.values(np.arange(grid.n_actions)), Path(root).name)


def _soft(onehot: np.ndarray, eps: float) -> np.ndarray:
    return (1.0 - eps) * onehot + eps / onehot.shape[1]


def _one_hot(ids: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(ids), n))
    out[np.arange(len(ids)), ids] = 1.0
    return out


def mortality_calibration(
    returns: np.ndarray, died: np.ndarray, kind: str = "linear"
) -> Callable[[np.ndarray], np.ndarray]:
    r"""Map an expected return to a mortality, fitted on logged episodes [inferred].

    ``linear``: least squares :math:`m(V) = a + bV` of the death indicator on the return,
    clipped to [0, 1]. Under a terminal :math:`\pm R_T` reward the return is nearly a step
    function of death, so a logistic fit separates perfectly; the linear map is what carries over
    from single returns to *expected* returns (linearity of expectation). ``binned``: mortality
    in return deciles, interpolated linearly (the AI Clinician practice).

    Shape:
        returns, died: ``(n_episodes,)``. The map takes and returns arrays of any shape.
    """
    g = np.asarray(returns, float)
    y = np.asarray(died, float)
    if kind == "binned":
        edges = np.unique(np.quantile(g, np.linspace(0, 1, 11)))
        idx = np.clip(np.digitize(g, edges[1:-1]), 0, len(edges) - 2)
        centres = np.array([g[idx == k].mean() for k in range(len(edges) - 1)])
        rates = np.array([y[idx == k].mean() for k in range(len(edges) - 1)])
        return lambda v: np.clip(np.interp(np.asarray(v, float), centres, rates), 0.0, 1.0)
    b, a = np.polyfit(g, y, 1) if g.std() > 0 else (0.0, y.mean())
    return lambda v: np.clip(a + b * np.asarray(v, float), 0.0, 1.0)


def near_mix(pi_b: np.ndarray, share: float, support: float) -> np.ndarray:
    r"""Near-behaviour policy :math:`(1-\lambda)\pi_b + \lambda\,U_s`, with :math:`U_s` uniform
    over :math:`\{a: \pi_b(a|s) \ge \text{support}\}` (all actions when ``support`` is 0).

    Keeping the extra mass on actions the clinician takes keeps the positivity assumption of
    importance sampling: a uniform share over all actions puts mass where the logged data have
    none, and no IS estimate can see it.

    Shape:
        pi_b ``(N, A)`` -> ``(N, A)``.

    Example:
        >>> near_mix(np.array([[0.7, 0.3, 0.0]]), 0.1, 0.01).round(3)
        array([[0.68, 0.32, 0.  ]])
    """
    keep = (pi_b >= support).astype(np.float64)
    keep[keep.sum(1) == 0] = 1.0
    return (1.0 - share) * pi_b + share * keep / keep.sum(1, keepdims=True)


def wilson(k: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of binomial proportions ``k / n``."""
    n = np.maximum(n, 1)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@METHODS.register("deepen")
class DeepEN(Learner):
    """Dueling double DQN + CQL for ICU enteral nutrition, with OPE and a safety report."""

    name = "deepen"
    config_cls = DeepENConfig
    description = "offline RL (D3QN + CQL) recommending 4-hourly enteral calories, protein, water"
    paper = "arXiv 2510.08350 (Tan, Chen, Perera, See, Feng)"
    status = "done (simulator and synthetic MIMIC-IV schema; no real MIMIC run)"

    def __init__(self, config: DeepENConfig) -> None:
        super().__init__(config)
        self.model: QLearner | None = None
        self.alpha: float | None = None
        self.scale: tuple[np.ndarray, np.ndarray] | None = None
        self.allowed: np.ndarray | None = None
        self.behaviour: BehaviourModel | None = None
        self.table: pd.DataFrame | None = None
        self._last: dict[str, Any] = {}
        # (data, raw splits, scaled splits): every report reads the same splits
        self._split_cache: tuple[DeepENData, dict[str, Trajectories], Any] | None = None

    # -- data -----------------------------------------------------------------------------
    def load_data(self, path: str | None = None) -> DeepENData:
        source = path or self.config.data
        if source == "simulator":
            return load_simulator(self.config)
        if not (Path(source) / "icu").is_dir() and not (Path(source) / "hosp").is_dir():
            raise DataError(
                f"unknown DeepEN data source {source!r}",
                expected="`simulator` or a MIMIC-IV folder holding hosp/ and icu/",
                found=source,
                fix="--set data=simulator, or point data= at your MIMIC-IV root",
            )
        return load_mimic(self.config, source)

    def _splits(self, data: DeepENData) -> dict[str, Trajectories]:
        """Patient-level splits with raw observations (computed once per data set)."""
        if self._split_cache is None or self._split_cache[0] is not data:
            splits = split_patients(data.traj, tuple(self.config.split), seed=self.config.seed)
            self._split_cache = (data, splits, None)
        return self._split_cache[1]

    def _norm(self, obs: np.ndarray) -> np.ndarray:
        assert self.scale is not None
        return ((obs - self.scale[0]) / self.scale[1]).astype(np.float32)

    def _scaled(self, traj: Trajectories) -> Trajectories:
        return replace(traj, obs=self._norm(traj.obs), meta=dict(traj.meta))

    def _qconfig(self, alpha: float) -> QConfig:
        c = self.config
        return QConfig(
            hidden=tuple(c.hidden),
            dueling=c.dueling,
            double=c.double,
            cql_alpha=float(alpha),
            gamma=c.gamma,
            lr=c.lr,
            batch_size=c.batch_size,
            steps=c.steps,
            target_every=c.target_every,
            seed=c.seed,
            device=c.device,
            progress=c.progress,
        )

    def _prepare(self, data: DeepENData) -> dict[str, Trajectories]:
        """Split, scaling, support mask and behaviour model (deterministic given the seed)."""
        splits = self._splits(data)
        if self.scale is None:
            obs = splits["train"].obs.astype(np.float64)
            sd = obs.std(0)
            self.scale = (obs.mean(0), np.where(sd > 1e-8, sd, 1.0))
        if self.allowed is None:
            counts = np.bincount(splits["train"].action, minlength=data.traj.n_actions)
            self.allowed = counts >= self.config.support_min_count
            if not self.allowed.any():
                self.allowed[:] = True
        cached = self._split_cache
        assert cached is not None and cached[0] is data
        scaled = cached[2]
        if scaled is None:
            scaled = {k: self._scaled(v) for k, v in splits.items()}
            self._split_cache = (data, splits, scaled)
        if self.behaviour is None:
            kind = self.config.behaviour
            self.behaviour = fit_behaviour(scaled["train"], kind=kind, seed=self.config.seed)
        return scaled

    # -- policies -------------------------------------------------------------------------
    def _mask(self, n: int) -> np.ndarray:
        assert self.allowed is not None
        return np.broadcast_to(self.allowed, (n, len(self.allowed))).copy()

    def policies(self, data: DeepENData, learner: QLearner | None = None) -> dict[str, Policy]:
        """Comparison policies as functions of *raw* observations -> ``(N, A)`` probabilities."""
        eps = self.config.eval_epsilon
        learner = learner or self._require_model()
        behaviour = self.behaviour
        assert behaviour is not None
        n_a = data.traj.n_actions
        dose_day = data.doses * DAY

        def learned(obs: np.ndarray) -> np.ndarray:
            x = self._norm(obs)
            return learner.policy(x, self._mask(len(x)), kind="epsilon", epsilon=eps)

        def clinician(obs: np.ndarray) -> np.ndarray:
            return behaviour.proba(self._norm(obs))

        def constant(action: int) -> Policy:
            return lambda obs: _soft(_one_hot(np.full(len(obs), action), n_a), eps)

        def guideline(obs: np.ndarray) -> np.ndarray:
            if data.simulated:
                return _soft(sim.guideline_policy(obs, data.sim_config), eps)
            names = list(data.traj.feature_names or ())
            w = obs[:, names.index("weight_kg")]
            day = obs[:, names.index("hours")] // 24
            target = sim.guideline_dose(w, day) * DAY  # per day
            ids = np.abs(dose_day[None, :, :2] - target[:, None, :2]).sum(-1).argmin(1)
            return _soft(_one_hot(ids, n_a), eps)

        def near_behaviour(obs: np.ndarray) -> np.ndarray:  # checks OPE
            return near_mix(clinician(obs), self.config.near_share, self.config.near_support)

        zero = int(np.abs(data.doses).sum(1).argmin())
        top = int((dose_day[:, :2] / dose_day[:, :2].max(0).clip(1e-9)).sum(1).argmax())
        return {
            "d3qn_cql": learned,
            "clinician": clinician,
            "guideline": guideline,
            "random": lambda obs: np.full((len(obs), n_a), 1.0 / n_a),
            "zero": constant(zero),
            "maximum": constant(top),
            "near_behaviour": near_behaviour,
        }

    # -- estimates ------------------------------------------------------------------------
    def _ope(
        self, traj: Trajectories, raw_obs: np.ndarray, policy: Policy, estimators: tuple[str, ...]
    ) -> pd.DataFrame:
        from clinfuse.rl.ope import evaluate_policy

        assert self.behaviour is not None
        pi_b = self.behaviour.proba(traj.obs)
        return evaluate_policy(
            traj,
            policy(raw_obs),
            pi_b,
            self.config.gamma,
            estimators=list(estimators),
            n_boot=self.config.n_boot,
            seed=self.config.seed,
            q_model="linear",
            behaviour=self.behaviour,
            ess_floor=self.config.ess_floor,
        )

    def _selected(self, est: pd.DataFrame) -> tuple[str, pd.Series]:
        """The estimate that selection and mortality use: ``selection``, or FQE where a
        weight-based ``selection`` has ESS below ``ess_floor``."""
        rows = est.set_index("estimator")
        sel = self.config.selection
        if sel != "fqe" and rows.loc[sel, "ess"] < self.config.ess_floor and "fqe" in rows.index:
            return "fqe", rows.loc["fqe"]
        return sel, rows.loc[sel]

    def _rollout(self, data: DeepENData, policy: Policy, n: int) -> dict[str, float]:
        """True value (mean discounted return) and mortality by seeded roll-outs."""
        res = sim.simulate(policy, n, self.config.rollout_seed, config=data.sim_config)
        g = res.returns(reward_fn(self.config), gamma=self.config.gamma)
        m = res.patients["died"].to_numpy(float)
        se_g, se_m = g.std(ddof=1) / np.sqrt(len(g)), m.std(ddof=1) / np.sqrt(len(m))
        return {
            "true_value": float(g.mean()),
            "true_low": float(g.mean() - 1.96 * se_g),
            "true_high": float(g.mean() + 1.96 * se_g),
            "true_mortality": float(m.mean()),
            "true_mortality_low": float(m.mean() - 1.96 * se_m),
            "true_mortality_high": float(m.mean() + 1.96 * se_m),
        }

    # -- training -------------------------------------------------------------------------
    def sweep(
        self, data: DeepENData, run: RunDir, *, resume: bool = False
    ) -> tuple[pd.DataFrame, dict[float, QLearner], list[dict[str, float]]]:
        """Train D3QN + CQL for every alpha of the config and score each on the validation split.

        Returns the sweep table (one row per alpha: the validation OPE estimates, the estimate
        that selection reads, ``valid_selected``, and the estimator it came from,
        ``valid_selected_by``; the learned Q's mean on the clinicians' validation actions,
        ``valid_q_logged_mean``, and whether it lies outside the return range,
        ``q_outside_range``; on simulator data the true value by
        ``rollout_patients // 2`` roll-outs, never used for the choice), the learners by alpha
        and the training history. Each alpha is checkpointed (``resume`` skips trained ones)."""
        cfg = self.config
        seed_everything(cfg.seed)
        splits = self._prepare(data)
        raw = self._splits(data)
        train, valid = splits["train"], splits["valid"]
        sweep: list[dict[str, Any]] = []
        learners: dict[float, QLearner] = {}
        history: list[dict[str, float]] = []
        for alpha in cfg.alphas:
            tag = f"alpha_{alpha:g}"
            learner = QLearner(self._qconfig(alpha), data.traj.obs_dim, data.traj.n_actions)
            if resume and (run.checkpoints / f"{tag}.pt").exists():
                learner.load_state_dict(run.load_checkpoint(tag)["q"])
                log.info("resumed %s from its checkpoint", tag)
            else:
                rows = learner.fit(train)
                history += [{"alpha": alpha, **r} for r in rows]
                run.save_checkpoint(tag, {"q": learner.state_dict(), "alpha": alpha})
            learners[alpha] = learner
            pols = self.policies(data, learner)
            names = tuple(dict.fromkeys((cfg.selection, "wis", "cwpdis", "wdr", "fqe")))
            est = self._ope(valid, raw["valid"].obs, pols["d3qn_cql"], names)
            row: dict[str, Any] = {"alpha": alpha}
            for _, r in est.iterrows():
                row[f"valid_{r['estimator']}"] = float(r["value"])
                row[f"valid_{r['estimator']}_ess"] = float(r["ess"])
            used, chosen = self._selected(est)
            row["valid_selected"], row["valid_selected_by"] = float(chosen["value"]), used
            q = learner.q_values(valid.obs)[np.arange(len(valid)), valid.action]
            sanity = q_sanity(q, value_range(valid, cfg.gamma))
            row["valid_q_logged_mean"] = sanity["q_logged_mean"]
            row["q_outside_range"] = sanity["q_outside_range"]
            if data.simulated:
                row.update(self._rollout(data, pols["d3qn_cql"], cfg.rollout_patients // 2))
            sweep.append(row)
            log.info("alpha %g: %s", alpha, row)
        return pd.DataFrame(sweep), learners, history

    @staticmethod
    def choose(sweep: pd.DataFrame) -> int:
        """Index of the chosen alpha: the best validation estimate among the alphas whose Q
        passes the sanity check (mean learned Q on the clinicians' actions inside the return
        range: an over-estimating network has diverged), among all when none passes."""
        sane = sweep[~sweep["q_outside_range"].astype(bool)]
        return int((sane if len(sane) else sweep)["valid_selected"].idxmax())

    def fit(self, data: DeepENData, run: RunDir, *, resume: bool = False) -> DeepEN:
        cfg = self.config
        log.info("deepen data: %s", data.traj.summary())
        sweep, learners, history = self.sweep(data, run, resume=resume)
        best = sweep.loc[self.choose(sweep)]
        self.alpha = float(best["alpha"])
        self.model = learners[self.alpha]
        # best = last: the learner's final state is the chosen alpha's network
        run.save_final_checkpoint(self.state_dict())
        pd.DataFrame(history).to_csv(run.path / "training.csv", index=False)
        sweep.to_csv(run.path / "alpha_sweep.csv", index=False)
        metrics = {
            "chosen_alpha": self.alpha,
            "data": data.name,
            "selection": cfg.selection,
            "selected_by": best["valid_selected_by"],
        }
        metrics.update(self._report(data, "test", run))
        run.write_metrics(metrics)
        self.plot(run)
        log.info("deepen run written to %s", run.path)
        return self

    # -- evaluation -----------------------------------------------------------------------
    def comparison(self, data: DeepENData, split: str = "test") -> pd.DataFrame:
        """One row per policy: OPE estimates with CIs on ``split``, true values (simulator)."""
        cfg = self.config
        traj = self._prepare(data)[split]
        raw = self._splits(data)[split]
        died = np.asarray(
            data.frame.loc[np.isin(data.traj.patient, raw.patients), "patient_died"], bool
        )
        g = raw.returns(cfg.gamma)
        ep_died = died[raw.starts]
        mort = mortality_calibration(g, ep_died, cfg.calibration)
        rows = []
        for name, policy in self.policies(data).items():
            names = tuple(dict.fromkeys((*OPE_ESTIMATORS, cfg.selection)))
            est = self._ope(traj, raw.obs, policy, names)
            row: dict[str, Any] = {"policy": name}
            for _, r in est.iterrows():
                e = r["estimator"]
                row[e], row[f"{e}_low"], row[f"{e}_high"] = r["value"], r["ci_low"], r["ci_high"]
                row[f"{e}_ess"], row[f"{e}_raw"] = r["ess"], r["value_raw"]
                row[f"{e}_flags"] = r["flags"]
            used, chosen = self._selected(est)
            row["selected_by"] = used
            row["selected"], row["selected_low"], row["selected_high"] = (
                chosen["value"], chosen["ci_low"], chosen["ci_high"]
            )  # fmt: skip
            row["est_mortality"] = float(mort(chosen["value"]))
            ends = mort(np.array([chosen["ci_low"], chosen["ci_high"]]))  # m falls with V
            row["est_mortality_low"], row["est_mortality_high"] = (
                float(ends.min()),
                float(ends.max()),
            )
            if data.simulated:
                row.update(self._rollout(data, policy, cfg.rollout_patients))
            rows.append(row)
        table = pd.DataFrame(rows)
        table.attrs["clinician_logged_mortality"] = float(ep_died.mean())
        table.attrs["q_sanity"] = self.q_check(data, split)
        self.table = table
        return table

    def q_check(self, data: DeepENData, split: str = "test") -> dict[str, Any]:
        """Mean learned Q on the clinicians' logged actions against the return range of
        ``split`` (an over-estimating Q-network sits outside it)."""
        model = self._require_model()
        traj = self._prepare(data)[split]
        q = model.q_values(traj.obs)[np.arange(len(traj)), traj.action]
        return q_sanity(q, value_range(traj, self.config.gamma))

    def safety(self, data: DeepENData, split: str = "test") -> dict[str, float]:
        """Share of recommended actions outside data support or guideline bounds; agreement with
        clinicians overall and by acuity (SOFA tertile) [inferred bounds: <= 30 kcal/kg/day,
        <= 2.5 g protein/kg/day]."""
        model = self._require_model()
        traj = self._prepare(data)[split]
        raw = self._splits(data)[split]
        rec = model.greedy(traj.obs, self._mask(len(traj)))
        assert self.allowed is not None
        day = data.doses[rec] * DAY
        out = {
            "outside_support": float(np.mean(~self.allowed[rec])),
            "outside_guideline_kcal": float(np.mean(day[:, 0] > 30.0)),
            "outside_guideline_protein": float(np.mean(day[:, 1] > 2.5)),
            "agreement": float(np.mean(rec == raw.action)),
        }
        names = list(data.traj.feature_names or ())
        sofa_col = "sofa" if "sofa" in names else "sofa_lite" if "sofa_lite" in names else None
        if sofa_col is not None:
            sofa = raw.obs[:, names.index(sofa_col)]
            cuts = np.quantile(sofa, [1 / 3, 2 / 3])
            level = np.digitize(sofa, cuts)
            for k, lab in enumerate(("low", "mid", "high")):
                sel = level == k
                if sel.any():
                    out[f"agreement_sofa_{lab}"] = float(np.mean(rec[sel] == raw.action[sel]))
        return out

    def deviation(self, data: DeepENData, split: str = "test", n_bins: int = 7) -> pd.DataFrame:
        """Mortality vs (clinician - recommended) dose per nutrient, in quantile bins with Wilson
        intervals; the random policy's deviation is the negative control (DeepEN v3)."""
        model = self._require_model()
        traj = self._prepare(data)[split]
        raw = self._splits(data)[split]
        rec = model.greedy(traj.obs, self._mask(len(traj)))
        rng = np.random.default_rng(self.config.seed)
        rand = rng.integers(0, data.traj.n_actions, len(rec))
        died = data.frame.loc[np.isin(data.traj.patient, raw.patients), "patient_died"]
        died = np.asarray(died, float)
        rows = []
        for policy, ids in (("d3qn_cql", rec), ("random", rand)):
            for j, nutrient in enumerate(("kcal/kg/day", "protein g/kg/day", "water mL/kg/day")):
                dev = (data.doses[raw.action, j] - data.doses[ids, j]) * DAY
                edges = np.unique(np.quantile(dev, np.linspace(0, 1, n_bins + 1)))
                b = np.clip(np.digitize(dev, edges[1:-1]), 0, max(len(edges) - 2, 0))
                for k in np.unique(b):
                    sel = b == k
                    lo, hi = wilson(np.array(died[sel].sum()), np.array(sel.sum()))
                    rows.append(
                        {
                            "policy": policy,
                            "nutrient": nutrient,
                            "deviation": float(np.median(dev[sel])),
                            "n": int(sel.sum()),
                            "mortality": float(died[sel].mean()),
                            "low": float(lo),
                            "high": float(hi),
                        }
                    )
        return pd.DataFrame(rows)

    def _report(self, data: DeepENData, split: str, run: RunDir | None) -> dict[str, float]:
        table = self.comparison(data, split)
        safety = self.safety(data, split)
        dev = self.deviation(data, split)
        self._last = {"safety": safety, "deviation": dev}
        metrics: dict[str, float] = {f"safety_{k}": v for k, v in safety.items()}
        for _, r in table.iterrows():
            for col in table.columns:
                if col != "policy" and not isinstance(r[col], str) and pd.notna(r[col]):
                    metrics[f"{split}_{r['policy']}_{col}"] = float(r[col])
        metrics[f"{split}_clinician_logged_mortality"] = table.attrs["clinician_logged_mortality"]
        for k, v in table.attrs["q_sanity"].items():
            metrics[f"{split}_{k}"] = float(v)
        if run is not None:
            self._write_tables(run.path)
            run.write_predictions(self.predict(data, split))
        return metrics

    def _write_tables(self, folder: Path) -> None:
        assert self.table is not None
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "comparison.csv") as tmp:
            self.table.to_csv(tmp, index=False)
        with atomic_path(folder / "deviation.csv") as tmp:
            self._last["deviation"].to_csv(tmp, index=False)
        with atomic_path(folder / "comparison.md") as tmp:
            Path(tmp).write_text(self.report_table() + "\n")
        atomic_write_json(folder / "safety.json", self._last["safety"])

    def write_report(self, folder: str | Path) -> list[Path]:
        """After :meth:`evaluate`: the comparison, deviation and safety tables and their plots
        in ``folder`` (``clinfuse evaluate deepen`` calls it)."""
        from clinfuse.methods.deepen.plots import plot_folder

        folder = Path(folder)
        self._write_tables(folder)
        return plot_folder(folder, folder / "plots", self.config.selection)

    def report_table(self) -> str:
        """The comparison table as Markdown (printed by ``clinfuse fit/evaluate deepen``).

        Every estimate is clipped to the return range and followed by its flags (outside the
        range, positivity); a weight-based estimate whose ESS is below ``ess_floor`` patients is
        not printed at all (``n/a`` with its ESS: a greedy policy's importance weights rest on
        one or two patients, and a number there is noise). The mortality column converts the
        estimate that selection uses (``selected_by``: the cross-fitted WDR, or FQE where the
        WDR's ESS is too small)."""
        from clinfuse.rl.ope import format_estimate

        if self.table is None:
            return ""
        t = self.table

        floor = self.config.ess_floor

        def est(r: pd.Series, e: str) -> str:
            if e != "fqe" and r[f"{e}_ess"] < floor:  # a handful of patients: no estimate
                return f"n/a [ESS {r[f'{e}_ess']:.0f} < {floor:g}]"
            return format_estimate(
                {"value": r[e], "ci_low": r[f"{e}_low"], "ci_high": r[f"{e}_high"],
                 "value_raw": r[f"{e}_raw"], "ess": r[f"{e}_ess"], "flags": r[f"{e}_flags"]}
            )  # fmt: skip

        head = (
            "| policy | WIS (95% CI) | CWPDIS (95% CI) | WDR (95% CI) | FQE (95% CI) | "
            "est. mortality (95% CI) [from] |"
        )
        has_truth = "true_value" in t.columns
        if has_truth:
            head += " true value (95% CI) | true mortality (95% CI) |"
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for _, r in t.iterrows():
            cells = [
                r["policy"], est(r, "wis"), est(r, "cwpdis"), est(r, "wdr"), est(r, "fqe"),
                f"{r['est_mortality']:.3f} ({r['est_mortality_low']:.3f}, "
                f"{r['est_mortality_high']:.3f}) [{r['selected_by']}]",
            ]  # fmt: skip
            if has_truth:
                cells += [
                    f"{r['true_value']:.2f} ({r['true_low']:.2f}, {r['true_high']:.2f})",
                    f"{r['true_mortality']:.3f} ({r['true_mortality_low']:.3f}, "
                    f"{r['true_mortality_high']:.3f})",
                ]
            lines.append("| " + " | ".join(cells) + " |")
        qs = t.attrs.get("q_sanity")
        if qs:
            verdict = "OUTSIDE the return range" if qs["q_outside_range"] else "inside it"
            lines.append(
                f"\nQ sanity: mean learned Q on the clinicians' actions {qs['q_logged_mean']:.2f}; "
                f"return range [{qs['return_low']:.2f}, {qs['return_high']:.2f}]: {verdict}."
            )
        return "\n".join(lines)

    def evaluate(self, data: DeepENData, split: str = "test", corrupt: str | None = None) -> dict:
        if corrupt:
            from clinfuse.core.errors import ConfigError

            raise ConfigError(
                "deepen has no corruptions", expected="no --corrupt", found=corrupt, fix="drop it"
            )
        check_split(split, self._splits(data))
        return self._report(data, split, None)

    def predict(self, data: DeepENData, split: str = "test") -> pd.DataFrame:
        """Per step of ``split``: the clinician's action and doses, the recommended ones, Q."""
        check_split(split, self._splits(data))
        model = self._require_model()
        traj = self._prepare(data)[split]
        raw = self._splits(data)[split]
        q = model.q_values(traj.obs, self._mask(len(traj)))
        rec = q.argmax(1)
        out = pd.DataFrame(
            {
                "patient": raw.patient,
                "time": raw.time,
                "clinician_action": raw.action,
                "recommended_action": rec,
                "q_recommended": q[np.arange(len(q)), rec],
                "q_clinician": q[np.arange(len(q)), raw.action],
            }
        )
        for j, n in enumerate(("kcal_per_kg_day", "protein_g_per_kg_day", "water_ml_per_kg_day")):
            out[f"clinician_{n}"] = data.doses[raw.action, j] * DAY
            out[f"recommended_{n}"] = data.doses[rec, j] * DAY
        return out

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        model = self._require_model()
        assert self.scale is not None and self.allowed is not None
        return {
            "q": model.state_dict(),
            "alpha": float(self.alpha or 0.0),
            "obs_dim": int(len(self.scale[0])),
            "n_actions": int(len(self.allowed)),
            "mean": torch.as_tensor(self.scale[0]),
            "sd": torch.as_tensor(self.scale[1]),
            "allowed": torch.as_tensor(self.allowed),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._split_cache = None  # scaled splits depend on the loaded scale
        self.alpha = float(state["alpha"])
        self.scale = (np.asarray(state["mean"]), np.asarray(state["sd"]))
        self.allowed = np.asarray(state["allowed"], bool)
        self.model = QLearner(
            self._qconfig(self.alpha), int(state["obs_dim"]), int(state["n_actions"])
        )
        self.model.load_state_dict(state["q"])

    # -- plots and demo -------------------------------------------------------------------
    def plot(self, run: RunDir) -> list[Path]:
        from clinfuse.methods.deepen.plots import plot_run

        return plot_run(run)

    def demo(self, data: DeepENData, run: RunDir) -> DemoResult:
        m = run.read_metrics()
        key = "true_value" if "test_d3qn_cql_true_value" in m else "selected"
        return DemoResult(
            system="deepen",
            data=f"{data.name} ({data.traj.n_episodes} admissions)",
            metric=f"policy value ({key})",
            value=float(m[f"test_d3qn_cql_{key}"]),
            baseline="clinician",
            baseline_value=float(m[f"test_clinician_{key}"]),
            extra={
                "chosen alpha": float(m["chosen_alpha"]),
                "guideline": float(m[f"test_guideline_{key}"]),
            },
            plots=sorted(run.plots.glob("*.png")),
            notes=self.report_table(),
        )


__all__ = [
    "DeepEN",
    "DeepENData",
    "load_mimic",
    "load_simulator",
    "mortality_calibration",
    "reward_fn",
    "wilson",
]
