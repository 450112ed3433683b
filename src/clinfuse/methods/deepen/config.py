"""DeepEN configuration: data, reward weights, the D3QN + CQL learner, the alpha sweep, evaluation.

Tags: [P] stated in the DeepEN paper's available text, [inferred] our choice (the paper's code and
hyper-parameters are not public; notes ``rl.md`` §1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clinfuse.core.config import check_fields

Estimator = Literal["is", "wis", "pdis", "cwpdis", "dr", "wdr", "fqe"]


@dataclass(frozen=True)
class DeepENConfig:
    """Offline RL for 4-hourly enteral nutrition: dueling double DQN + conservative Q-learning."""

    # -- run -------------------------------------------------------------------------------
    preset: str = "default"
    """Name of the preset this config was built from (recorded with the run)."""
    seed: int = 0
    """Seed of the split, the networks, the minibatches and the bootstrap."""
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    """Torch device of the Q-networks (small MLPs: the CPU is usually as fast)."""
    progress: bool = True
    """Show progress bars."""

    # -- data ------------------------------------------------------------------------------
    data: str = "simulator"
    """`simulator` (the embedded ICU-nutrition simulator's clinician data) or a MIMIC-IV root
    folder holding hosp/ and icu/ (built with the DuckDB cohort builder, extra [mimic])."""
    n_patients: int = 2000
    """Simulated admissions in the logged clinician data set [inferred]."""
    split: tuple[float, ...] = (0.7, 0.1, 0.2)
    """Patient-level train/valid/test fractions, stratified on mortality [inferred]."""

    # -- reward (every weight [inferred]) --------------------------------------
    terminal: float = 15.0
    """+terminal at the last step if the patient survived, -terminal if died (Raghu: 15)."""
    sofa_lactate: float = 1.0
    """Weight of the Raghu SOFA/lactate intermediate term (0 removes it)."""
    biomarker: float = 0.1
    """Reward for next-step glucose, phosphate and sodium each in range (its negative out)."""
    nutrition_goal: float = 0.0
    """Weight of -|cumulative kcal/kg/day - goal| (0: off)."""

    # -- learner (D3QN + CQL) --------------------------------------------------------------
    hidden: tuple[int, ...] = (256, 256)
    """MLP widths of the Q-network [inferred]."""
    dueling: bool = True
    """Dueling head [P]."""
    double: bool = True
    """Double-DQN target [P]."""
    gamma: float = 0.99
    """Discount [inferred]."""
    lr: float = 1e-4
    """Adam learning rate [inferred]."""
    batch_size: int = 256
    """Transitions per step [inferred]."""
    steps: int = 10_000
    """Gradient steps per alpha [inferred]."""
    target_every: int = 1000
    """Steps between hard target-network copies [inferred]."""
    alphas: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)
    """CQL alphas swept; the one with the best validation OPE estimate is kept [inferred]."""
    selection: Estimator = "wdr"
    """OPE estimator that picks alpha on the validation split and feeds the estimated mortality:
    weighted doubly robust with a linear FQE cross-fitted over 5 patient folds; where its ESS
    is below `ess_floor` the cross-fitted FQE estimate is used instead (a greedy policy's
    importance weights rest on a handful of patients). Alphas whose mean learned Q on the
    clinicians' validation actions lies outside the return range are not chosen (unless every
    alpha's does) [inferred]."""
    ess_floor: float = 20.0
    """Effective sample size (episodes) below which a weight-based estimate is not used for
    selection or mortality and is printed with its flag [inferred]."""
    support_min_count: int = 5
    """Actions logged fewer times than this in the training split are masked out of every
    learned policy (data-support filter; 0 keeps all) [inferred]."""

    # -- evaluation ------------------------------------------------------------------------
    behaviour: Literal["logistic", "mlp"] = "mlp"
    """Model of the clinician policy pi_b (temperature-calibrated) [inferred]."""
    eval_epsilon: float = 0.01
    """The learned policy is evaluated as (1 - eps) greedy + eps uniform over allowed actions
    (OPE needs a soft target policy) [inferred]."""
    near_share: float = 0.1
    """Share of the near-behaviour policy (used to check OPE) that is not the clinician's:
    (1 - share) pi_b + share U_s [inferred]."""
    near_support: float = 0.01
    """U_s is uniform over the actions to which pi_b(.|s) gives at least this probability (the
    clinician's support at that state); 0 makes it uniform over all actions, which breaks the
    positivity assumption of importance sampling (see the README) [inferred]."""
    calibration: Literal["linear", "binned"] = "linear"
    """Return-to-mortality map fitted on the test split's clinician episodes [inferred]."""
    n_boot: int = 200
    """Patient-bootstrap resamples for OPE confidence intervals."""
    rollout_patients: int = 5000
    """Simulated admissions per policy for the true values (simulator data only)."""
    rollout_seed: int = 12345
    """Seed of the true-value roll-outs (the same patients for every policy)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values out of range."""
        checks = {
            "n_patients": (self.n_patients >= 50, ">= 50"),
            "split": (
                len(self.split) == 3 and min(self.split) > 0 and abs(sum(self.split) - 1.0) < 1e-6,
                "three positive fractions summing to 1",
            ),
            "terminal": (self.terminal >= 0, ">= 0"),
            "gamma": (0.0 < self.gamma <= 1.0, "in (0, 1]"),
            "lr": (self.lr > 0, "> 0"),
            "steps": (self.steps >= 1, ">= 1"),
            "alphas": (
                len(self.alphas) > 0 and min(self.alphas) >= 0,
                "non-negative, at least one",
            ),
            "eval_epsilon": (0.0 < self.eval_epsilon < 1.0, "in (0, 1)"),
            "near_share": (0.0 <= self.near_share <= 1.0, "in [0, 1]"),
            "near_support": (0.0 <= self.near_support < 1.0, "in [0, 1)"),
            "n_boot": (self.n_boot >= 10, ">= 10"),
            "ess_floor": (self.ess_floor >= 1, ">= 1"),
            "rollout_patients": (self.rollout_patients >= 100, ">= 100"),
            "support_min_count": (self.support_min_count >= 0, ">= 0"),
        }
        check_fields(self, checks)
