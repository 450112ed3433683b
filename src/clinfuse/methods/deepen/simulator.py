r"""A seeded ICU enteral-nutrition simulator with known dynamics: DeepEN's embedded default data.

DeepEN (arXiv 2510.08350) recommends 4-hourly calories, protein and free water by enteral
nutrition (EN) with a dueling double DQN + CQL trained on MIMIC-IV. MIMIC cannot ship, so the
default data set is generated here from a patient model whose equations are written below: any
policy's true value (survival, mortality) is available by Monte Carlo, which offline RL and
off-policy evaluation (OPE) can then be checked against. Every constant is a field of
:class:`NutritionSimConfig`; all of them are **inferred** (chosen to give plausible ranges and a
clear signal, not fitted to data).

**Patients** (:class:`Cohort`). At admission: age, sex, height, weight/BMI, SOFA, sepsis,
diabetes and CKD flags, glucose, phosphate, sodium, lactate and albumin, drawn from a seeded
``numpy.random.Generator``. A latent malnutrition factor :math:`m \sim N(0, 1)` lowers BMI,
phosphate and albumin together; latent traits (recovery rate :math:`\rho_i`, fasting glucose,
sodium disposition, refeeding depletion :math:`D_i`) are not observed.

**Actions.** Per 4-h step a dose vector (kcal/kg, g protein/kg, mL free water/kg per 4 h). A
policy picks one of the cells of a discrete grid (:func:`default_action_grid_spec`): by default
5 kcal x 5 protein x 2 water levels + one "hold" (no EN, no free water) = 51 actions.

**Dynamics** (per 4-h step :math:`t`, day :math:`d = t/6`; daily rates :math:`k = 6\,\text{kcal}`,
:math:`p = 6\,\text{protein}`, :math:`w = 6\,\text{water}`; :math:`\bar k, \bar p, \bar w` their
exponential moving averages with time constant ``ema_days``; late :math:`= 1[d \ge d_L]`;
:math:`x_+ = \max(x, 0)`; :math:`\epsilon \sim N(0, 1)` fresh per variable and step):

.. math::
    \Delta s &= -\rho_i (s - s_0)\big(1 - c_{rec}\,\text{late}\,(1 - \min(\bar k/K, 1))\big)
      + c_u\,\text{late}\,(u K - \bar k)_+/K
      + c_{oe} (1 - \text{late}) (k - K_e + c_{el} (L - 2)_+)_+/10
      + c_o (k - K_o)_+/10 \\
      &\quad + c_p\,\text{late}\,(1 - \bar p/P(s))_+\,s/10
      + c_{px}\,\text{late}\,(\bar p - P(s))_+
      + c_{pe}(1 - \text{late})(p - P_e)_+
      + c_f (\bar w - W_t)_+/10\,(1 + c_{ckd}\,\text{ckd})
      + c_r (\Phi_r - \Phi)_+ + \sigma_s \epsilon

with SOFA :math:`s` (continuous, clipped to [0, 24]; observed rounded), protein need
:math:`P(s) = \mathrm{clip}(P_0 + P_s (s - 6), P_0, P_{max})`, so sicker patients need more protein
later (the guideline ignores this). Then

.. math::
    L' &= L + \kappa_L (L_0 + \lambda_s (s' - 3)_+ - L) + \sigma_L\epsilon
      \qquad \text{(lactate tracks SOFA)} \\
    G' &= G + \kappa_G (G_i + \gamma_G k (1 + \delta_G\,\text{diabetes}) - G) + \sigma_G\epsilon \\
    \Phi' &= \Phi + \kappa_\Phi(\Phi_n - \Phi) - \gamma_\Phi (k - k_{ad})_+ D + \sigma_\Phi\epsilon,
      \qquad D' = D\,e^{-(k/6)/K_D} \quad \text{(refeeding)} \\
    Na' &= Na + \kappa_{Na}(140 + \delta_i + \gamma_{Na}(W_n - w) - Na) + \sigma_{Na}\epsilon \\
    A' &= A + \kappa_A(A_i - a_s (s' - s_i) + a_p\,\text{late}\min(\bar p/P_0, 1) - A)
      + \sigma_A\epsilon \\
    W' &= W\,(1 - \lambda_W (1 - \bar k/K)_+/6)

Refeeding: the depletion :math:`D_i` is high for low admission phosphate and low BMI and is used
up by cumulative calories; the intracellular shift follows the intake above the adapted intake
:math:`k_{ad}` (a moving average with time constant ``refeed_adapt_days``), so a fast ramp (or
erratic feeding) drives phosphate lower than a slow ramp that the repletion term
:math:`\kappa_\Phi(\Phi_n - \Phi)` keeps up with.

**Death.** After each step, the patient dies with probability
:math:`h = \sigma(\eta)`,

.. math::
    \eta = \beta_0 + \beta_a\tfrac{age - 65}{10} + \beta_s (s - 8) + \beta_L (L - 2)_+
      + \beta_G\big[\tfrac{(G - G_{hi})_+}{50} + \tfrac{(G_{lo} - G)_+}{20}\big]
      + \beta_{Na}\tfrac{(Na - Na_{hi})_+ + (Na_{lo} - Na)_+}{5}
      + \beta_\Phi\tfrac{(\Phi_h - \Phi)_+}{0.5},

which ends the episode (``done``, ``died``). A patient alive after ``horizon_steps`` steps is
discharged alive; that last step ends with ``done`` (a terminal outcome: survival is known) or
``timeout`` (``horizon_end``); either way it counts as survived.

**Randomness.** One seed fixes everything. Separate streams (``np.random.default_rng([seed,
k])``) give the cohort, the process noise, the measurement noise, the death draws and the
action draws; all are drawn up front per (step, patient), so two policies run with the same seed
meet the same patients and the same noise (common random numbers: policy differences are
estimated with far less variance).

**Calibration** (measured with the defaults, 10,000 patients, seed 1; 7-day mortality):
clinician 20.6 %, guideline 19.0 %, :func:`informed_policy` 16.5 % (a hand-written state-aware
policy: there is room for RL to beat both), zero feeding 45 %, maximal feeding from admission
(32 kcal, 2 g protein, 30 mL water /kg/day) 44.5 %. Among patients admitted with phosphate
< 2.5 mg/dL (3,000 patients, seed 13), full feeding from admission gives a mean 5-day phosphate
nadir of 1.3 mg/dL against 2.0 with three days at 8 kcal/kg/day first.

**Observations** (:data:`FEATURES`): static covariates, measured state (labs with measurement
noise, SOFA rounded), feeding history, time since admission, and 3-step trends
``d3_x = x_t - x_{max(t-3, 0)}``: the DeepEN layout (base + rate-of-change features) in small.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.rl.data import Trajectories

__all__ = [
    "BASE_FEATURES",
    "HOLD_ID",
    "FEATURES",
    "TREND_FEATURES",
    "Cohort",
    "NutritionSimConfig",
    "NutritionSimulator",
    "Policy",
    "RewardFn",
    "SimResult",
    "SimState",
    "clinician_policy",
    "constant_policy",
    "default_action_grid_spec",
    "guideline_dose",
    "guideline_policy",
    "informed_policy",
    "make_default_dataset",
    "mortality",
    "simulate",
    "survival_reward",
    "true_value",
]

log = logging.getLogger(__name__)

STEPS_PER_DAY = 6
"""4-hour steps per day (the equations are written per 4-h step)."""
STEP_HOURS = 24.0 / STEPS_PER_DAY
ZERO_EDGE = float(np.nextafter(0.0, 1.0))
"""Edge of a zero bin: the smallest positive float (bin 0 holds exactly the zeros)."""

HOLD_ID = 0
"""Id of the hold action (with ``grid_hold``; without it, of the zero-feed, low-water cell)."""
DOSE_NAMES: tuple[str, str, str] = ("kcal_per_kg", "protein_g_per_kg", "water_ml_per_kg")
"""Action dimensions; every dose is per kg of actual body weight per 4-h step."""

STATIC_FEATURES: tuple[str, ...] = (
    "age",
    "male",
    "height",
    "bmi",
    "sepsis",
    "diabetes",
    "ckd",
)
"""Admission covariates (height in m, BMI at admission)."""
MEASURED: tuple[str, ...] = (
    "weight",
    "sofa",
    "lactate",
    "glucose",
    "phosphate",
    "sodium",
    "albumin",
)
"""Measured state (kg, SOFA points, mmol/L, mg/dL, mg/dL, mmol/L, g/dL)."""
FEEDING_FEATURES: tuple[str, ...] = (
    "kcal_4h",
    "protein_4h",
    "water_4h",
    "kcal_24h",
    "protein_24h",
    "water_24h",
    "cum_kcal_per_kg",
    "cum_protein_per_kg",
)
"""Last step's doses, sums over the last 6 steps, and cumulative kcal/kg and g protein/kg."""
TIME_FEATURES: tuple[str, ...] = ("days_since_admit",)
BASE_FEATURES: tuple[str, ...] = STATIC_FEATURES + MEASURED + FEEDING_FEATURES + TIME_FEATURES
_TRENDED: tuple[str, ...] = MEASURED + ("kcal_24h", "protein_24h")
TREND_FEATURES: tuple[str, ...] = tuple(f"d3_{n}" for n in _TRENDED)
"""Change over the previous 3 steps, ``x_t - x_{max(t-3, 0)}``."""
FEATURES: tuple[str, ...] = BASE_FEATURES + TREND_FEATURES
"""Observation columns, in order (``obs[:, FEATURES.index(name)]``)."""
_IDX = {n: i for i, n in enumerate(FEATURES)}

REWARD_COLUMNS: tuple[str, ...] = ("sofa", "lactate", "glucose", "phosphate", "sodium")
"""Measured variables also given after the step as ``next_<name>`` in :attr:`SimResult.frame`."""

Policy = Callable[[np.ndarray], np.ndarray]
"""``obs (N, len(FEATURES)) -> (N, n_actions)`` action probabilities (rows sum to 1)."""
RewardFn = Callable[[pd.DataFrame], np.ndarray]
"""``SimResult.frame -> (rows,)`` reward of each step."""


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NutritionSimConfig:
    """ICU enteral-nutrition patient simulator (module docstring). Every value is [inferred].

    Rates are per 4-h step, doses per kg of actual weight, kcal and protein targets per day.
    """

    # -- episode -------------------------------------------------------------------------------
    horizon_steps: int = 42
    """Steps of 4 h before discharge alive (42 = 7 days) [inferred]."""
    horizon_end: Literal["done", "timeout"] = "done"
    """End flag of survivors' last step: `done` (discharged alive, a known outcome) or
    `timeout` (truncated record) [inferred]."""

    # -- action grid ---------------------------------------------------------------------------
    grid_kcal_per_day: tuple[float, ...] = (0.0, 8.0, 16.0, 24.0, 32.0)
    """Calorie levels (kcal/kg/day; the dose is this / 6 per 4-h step); 0 first [inferred]."""
    grid_protein_per_day: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    """Protein levels (g/kg/day); 0 first [inferred]."""
    grid_water_per_day: tuple[float, ...] = (10.0, 30.0)
    """Free-water levels while fed (mL/kg/day), low/high; all > 0 [inferred]."""
    grid_hold: bool = True
    """Add a hold action (no EN, no free water) as id 0: 5x5x2 + 1 = 51 actions (DeepEN's
    count); False gives the plain product (50) [inferred]."""

    # -- cohort --------------------------------------------------------------------------------
    age_mean: float = 64.0
    """Mean age (years), normal, clipped to [18, 95] [inferred]."""
    age_sd: float = 15.0
    """SD of age [inferred]."""
    male_prob: float = 0.57
    """Share of men [inferred]."""
    height_female: float = 1.63
    """Mean height of women, m (clipped [1.45, 2.05]) [inferred]."""
    height_male: float = 0.13
    """Extra mean height of men, m [inferred]."""
    height_sd: float = 0.07
    """SD of height within sex, m [inferred]."""
    bmi_median: float = 27.0
    """Median BMI (log-normal) [inferred]."""
    bmi_log_sd: float = 0.18
    """SD of log BMI [inferred]."""
    bmi_malnutrition: float = 1.5
    """BMI points lost per SD of latent malnutrition [inferred]."""
    sepsis_prob: float = 0.35
    """Share with sepsis-3 [inferred]."""
    diabetes_prob: float = 0.28
    """Share with diabetes [inferred]."""
    ckd_prob: float = 0.15
    """Share with chronic kidney disease [inferred]."""
    sofa0_offset: float = 2.0
    """Admission SOFA = offset + Gamma(shape, scale) + sepsis shift, clipped [0, 20] [inferred]."""
    sofa0_shape: float = 2.5
    """Gamma shape of admission SOFA [inferred]."""
    sofa0_scale: float = 2.0
    """Gamma scale of admission SOFA [inferred]."""
    sofa0_sepsis: float = 2.0
    """Extra admission SOFA with sepsis [inferred]."""
    lactate0_sd: float = 0.3
    """SD of log admission lactate around its SOFA-implied level [inferred]."""
    glucose_fasting: float = 105.0
    """Mean fasting (unfed) glucose of non-diabetics, mg/dL [inferred]."""
    glucose_fasting_diabetes: float = 35.0
    """Extra fasting glucose of diabetics, mg/dL [inferred]."""
    glucose_fasting_sd: float = 12.0
    """SD of fasting glucose between patients [inferred]."""
    glucose0_per_sofa: float = 2.0
    """Admission stress hyperglycaemia, mg/dL per SOFA point [inferred]."""
    glucose0_sd: float = 15.0
    """SD of admission glucose around fasting + stress level [inferred]."""
    phosphate0_mean: float = 3.4
    """Mean admission phosphate, mg/dL (clipped [0.8, 6]) [inferred]."""
    phosphate0_sd: float = 0.55
    """SD of admission phosphate [inferred]."""
    phosphate0_malnutrition: float = 0.35
    """Phosphate lost per SD of malnutrition [inferred]."""
    sodium0_mean: float = 139.5
    """Mean admission sodium, mmol/L [inferred]."""
    sodium0_sd: float = 4.5
    """SD of admission sodium [inferred]."""
    albumin0_mean: float = 3.1
    """Mean admission albumin, g/dL (clipped [1.5, 4.8]) [inferred]."""
    albumin0_sd: float = 0.35
    """SD of admission albumin [inferred]."""
    albumin0_malnutrition: float = 0.25
    """Albumin lost per SD of malnutrition [inferred]."""
    albumin0_per_sofa: float = 0.03
    """Admission albumin lost per SOFA point above 7 [inferred]."""
    recovery_mean: float = 0.02
    """Median per-step SOFA recovery rate rho_i (log-normal) [inferred]."""
    recovery_log_sd: float = 0.35
    """SD of log rho_i between patients [inferred]."""

    # -- SOFA ----------------------------------------------------------------------------------
    ema_days: float = 1.0
    """Time constant (days) of the moving averages of delivered kcal, protein and water
    [inferred]."""
    late_day: float = 3.0
    """Day from which nutrition adequacy matters (ESPEN: full target after day 3) [inferred]."""
    kcal_target: float = 25.0
    """Full calorie need K after `late_day`, kcal/kg/day (ASPEN/ESPEN) [inferred]."""
    sofa_floor: float = 1.0
    """SOFA s_0 that recovery tends to [inferred]."""
    recovery_underfeeding: float = 0.5
    """Share c_rec of recovery lost when unfed after `late_day` [inferred]."""
    underfeed_frac: float = 0.7
    """Late intake below this share u of K harms (severe underfeeding) [inferred]."""
    underfeed_sofa: float = 0.08
    """SOFA per step c_u per unit of shortfall below u K, relative to K [inferred]."""
    early_kcal_tolerance: float = 18.0
    """Early (before `late_day`) kcal/kg/day K_e above which feeding harms [inferred]."""
    early_kcal_lactate: float = 3.0
    """kcal/kg/day c_el by which each mmol/L of lactate above 2 lowers the early tolerance
    (shock) [inferred]."""
    overfeed_early_sofa: float = 0.12
    """SOFA per step c_oe per 10 kcal/kg/day above the early tolerance [inferred]."""
    overfeed_kcal: float = 28.0
    """kcal/kg/day K_o above which feeding harms at any time [inferred]."""
    overfeed_sofa: float = 0.1
    """SOFA per step c_o per 10 kcal/kg/day above K_o [inferred]."""
    protein_need: float = 1.2
    """Protein need P_0 of a patient with SOFA <= 6, g/kg/day [inferred]."""
    protein_need_per_sofa: float = 0.15
    """Extra protein need P_s per SOFA point above 6 [inferred]."""
    protein_need_max: float = 2.0
    """Upper limit P_max of the protein need [inferred]."""
    protein_deficit_sofa: float = 0.4
    """SOFA per step c_p per unit protein shortfall times s/10, after `late_day` [inferred]."""
    protein_excess_sofa: float = 0.3
    """SOFA per step c_px per g/kg/day of protein above the need P(s), after `late_day`
    (azotaemia) [inferred]."""
    early_protein_tolerance: float = 1.2
    """g/kg/day P_e above which early protein harms [inferred]."""
    overprotein_early_sofa: float = 0.05
    """SOFA per step c_pe per g/kg/day above P_e, early [inferred]."""
    water_tolerance: float = 20.0
    """Free water W_t (mL/kg/day, moving average) above which fluid overload harms [inferred]."""
    fluid_sofa: float = 0.03
    """SOFA per step c_f per 10 mL/kg/day above W_t [inferred]."""
    fluid_ckd: float = 2.0
    """Extra fluid-overload harm factor c_ckd with CKD [inferred]."""
    refeed_phosphate: float = 2.0
    """Phosphate Phi_r (mg/dL) below which hypophosphataemia harms organs [inferred]."""
    refeed_sofa: float = 0.15
    """SOFA per step c_r per mg/dL below Phi_r [inferred]."""
    sofa_noise: float = 0.25
    """SD sigma_s of the SOFA change per step [inferred]."""

    # -- labs ----------------------------------------------------------------------------------
    lactate_base: float = 0.8
    """Lactate L_0 of a patient with SOFA <= 3, mmol/L [inferred]."""
    lactate_per_sofa: float = 0.25
    """Lactate lambda_s per SOFA point above 3 [inferred]."""
    lactate_rate: float = 0.3
    """Per-step pull kappa_L of lactate to its SOFA level [inferred]."""
    lactate_noise: float = 0.15
    """SD of the lactate change per step [inferred]."""
    glucose_rate: float = 0.3
    """Per-step pull kappa_G of glucose to its fed level [inferred]."""
    glucose_per_kcal: float = 1.4
    """Glucose gamma_G (mg/dL) per kcal/kg/day [inferred]."""
    glucose_diabetes: float = 1.0
    """Extra relative glucose response delta_G of diabetics [inferred]."""
    glucose_noise: float = 6.0
    """SD of the glucose change per step [inferred]."""
    phosphate_norm: float = 3.3
    """Phosphate Phi_n that repletion pulls to, mg/dL [inferred]."""
    phosphate_rate: float = 0.08
    """Per-step repletion rate kappa_Phi [inferred]."""
    phosphate_per_kcal: float = 0.02
    """Phosphate drop gamma_Phi (mg/dL per step) per kcal/kg/day above the adapted intake, per
    unit depletion (the insulin-driven intracellular shift) [inferred]."""
    refeed_adapt_days: float = 2.0
    """Time constant (days) of the adapted intake k_ad that the shift is measured from: a
    slower ramp keeps k - k_ad small [inferred]."""
    depletion_kcal: float = 60.0
    """Cumulative kcal/kg K_D that uses up depletion by a factor e [inferred]."""
    depletion_base: float = 0.1
    """Depletion D_i of a well-nourished patient [inferred]."""
    depletion_per_phosphate: float = 0.8
    """Depletion per mg/dL of admission phosphate below 3.0 [inferred]."""
    depletion_per_bmi: float = 0.1
    """Depletion per BMI point below 20 [inferred]."""
    depletion_max: float = 1.5
    """Upper limit of D_i [inferred]."""
    phosphate_noise: float = 0.06
    """SD of the phosphate change per step [inferred]."""
    sodium_rate: float = 0.1
    """Per-step pull kappa_Na of sodium to its water-dependent level [inferred]."""
    sodium_per_water: float = 0.3
    """Sodium gamma_Na (mmol/L) per mL/kg/day of free water below W_n [inferred]."""
    water_neutral: float = 20.0
    """Free water W_n (mL/kg/day) that leaves sodium at the patient's own level [inferred]."""
    sodium_disposition: float = 0.8
    """Share of the admission sodium offset delta_i that persists [inferred]."""
    sodium_noise: float = 0.4
    """SD of the sodium change per step [inferred]."""
    albumin_rate: float = 0.05
    """Per-step pull kappa_A of albumin [inferred]."""
    albumin_per_sofa: float = 0.05
    """Albumin a_s (g/dL) lost per SOFA point above admission [inferred]."""
    albumin_protein: float = 0.2
    """Albumin a_p gained with adequate protein after `late_day` [inferred]."""
    albumin_noise: float = 0.03
    """SD of the albumin change per step [inferred]."""
    weight_loss_per_day: float = 0.01
    """Share lambda_W of weight lost per day when unfed (less when partly fed) [inferred]."""

    # -- measurement ---------------------------------------------------------------------------
    meas_weight_sd: float = 0.3
    """Weight measurement SD, kg (SOFA is observed rounded, without noise) [inferred]."""
    meas_lactate_sd: float = 0.1
    """Lactate measurement SD [inferred]."""
    meas_glucose_sd: float = 8.0
    """Glucose measurement SD [inferred]."""
    meas_phosphate_sd: float = 0.1
    """Phosphate measurement SD [inferred]."""
    meas_sodium_sd: float = 0.8
    """Sodium measurement SD [inferred]."""
    meas_albumin_sd: float = 0.1
    """Albumin measurement SD [inferred]."""

    # -- death hazard (logit per step) ---------------------------------------------------------
    hazard_intercept: float = -5.3
    """beta_0: logit of the per-step death probability at SOFA 8, age 65, normal labs
    [inferred]."""
    hazard_age: float = 0.2
    """beta_a per 10 years above 65 [inferred]."""
    hazard_sofa: float = 0.3
    """beta_s per SOFA point above 8 [inferred]."""
    hazard_lactate: float = 0.3
    """beta_L per mmol/L of lactate above 2 [inferred]."""
    hazard_glucose: float = 0.5
    """beta_G per 50 mg/dL above G_hi (or per 20 below G_lo) [inferred]."""
    glucose_range: tuple[float, float] = (70.0, 180.0)
    """Glucose range (G_lo, G_hi), mg/dL, outside which death risk rises [inferred]."""
    hazard_sodium: float = 1.4
    """beta_Na per 5 mmol/L outside the sodium range [inferred]."""
    sodium_range: tuple[float, float] = (135.0, 145.0)
    """Sodium range (Na_lo, Na_hi), mmol/L, outside which death risk rises [inferred]."""
    hazard_phosphate: float = 0.8
    """beta_Phi per 0.5 mg/dL below Phi_h [inferred]."""
    hazard_phosphate_level: float = 2.0
    """Phosphate Phi_h (mg/dL) below which death risk rises [inferred]."""

    # -- clinician behaviour policy ------------------------------------------------------------
    clin_kcal_start: float = 6.0
    """Clinicians' intended kcal/kg/day on admission [inferred]."""
    clin_kcal_per_day: float = 5.5
    """Daily ramp of the intended kcal/kg/day [inferred]."""
    clin_kcal_max: float = 20.0
    """Cap of the intended kcal/kg/day [inferred]."""
    clin_kcal_sofa: float = 1.0
    """kcal/kg/day less per SOFA point above 8 (sicker patients fed less) [inferred]."""
    clin_kcal_lactate: float = 2.0
    """kcal/kg/day less per mmol/L of lactate above 2 [inferred]."""
    clin_kcal_sd: float = 6.0
    """Spread (kcal/kg/day) of the chosen level around the intended one [inferred]."""
    clin_protein_start: float = 0.2
    """Intended protein g/kg/day on admission [inferred]."""
    clin_protein_per_day: float = 0.2
    """Daily ramp of intended protein [inferred]."""
    clin_protein_max: float = 1.0
    """Cap of intended protein (not raised for sicker patients) [inferred]."""
    clin_protein_sd: float = 0.35
    """Spread (g/kg/day) of the chosen protein level [inferred]."""
    clin_water_sodium: float = 143.0
    """Sodium (mmol/L) at which the high water level is chosen half the time [inferred]."""
    clin_water_scale: float = 3.0
    """Logistic scale (mmol/L) of the high-water choice [inferred]."""
    clin_hold: float = 0.04
    """Probability of holding feeds (procedures, intolerance) [inferred]."""
    clin_hold_day0: float = 0.15
    """Extra hold probability on day 0 [inferred]."""
    clin_hold_lactate: float = 0.1
    """Extra hold probability when lactate > 4 mmol/L [inferred]."""
    clin_overfeed: float = 0.03
    """Probability of an over-feed (top calorie level) [inferred]."""

    # -- guideline ------------------------------------------------------------------------------
    guideline_kcal_per_day: tuple[float, ...] = (10.0, 15.0, 19.0, 25.0)
    """Guideline kcal/kg/day on days 0, 1, ...; the last value holds after (ASPEN 2022:
    12-25 in week 1; ESPEN: <= 70% early, full after day 3) [inferred]."""
    guideline_protein_per_day: tuple[float, ...] = (0.6, 0.9, 1.2, 1.3)
    """Guideline protein g/kg/day per day (ESPEN 1.3 progressively; ASPEN 1.2-2.0)
    [inferred]."""
    guideline_water_per_day: float = 10.0
    """Guideline free water, mL/kg/day [inferred]."""
    guideline_obesity_bmi: float = 30.0
    """BMI from which guideline doses use the adjusted body weight IBW + 0.25 (W - IBW),
    IBW = 22 kg/m^2 x height^2 [inferred]."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values the simulator cannot run with."""
        if self.horizon_steps < 1:
            raise ConfigError(
                "horizon_steps must be positive", expected=">= 1", found=self.horizon_steps
            )
        for name in ("grid_kcal_per_day", "grid_protein_per_day"):
            levels = np.asarray(getattr(self, name), dtype=float)
            if len(levels) < 2 or levels[0] != 0.0 or np.any(np.diff(levels) <= 0):
                raise ConfigError(
                    f"{name} must start at 0 and increase strictly",
                    expected="e.g. (0, 8, 16, 24, 32)",
                    found=getattr(self, name),
                )
        water = np.asarray(self.grid_water_per_day, dtype=float)
        if len(water) < 1 or water[0] <= 0 or np.any(np.diff(water) <= 0):
            raise ConfigError(
                "grid_water_per_day must be positive and strictly increasing (the hold action "
                "is the only one without free water)",
                expected="e.g. (10, 30)",
                found=self.grid_water_per_day,
            )
        if not self.guideline_kcal_per_day or len(self.guideline_kcal_per_day) != len(
            self.guideline_protein_per_day
        ):
            raise ConfigError(
                "guideline kcal and protein schedules need one value per day, same length",
                expected="two non-empty tuples of equal length",
                found=(self.guideline_kcal_per_day, self.guideline_protein_per_day),
            )

    def __post_init__(self) -> None:
        self.validate()


# ---------------------------------------------------------------------------------------------
# action grid
# ---------------------------------------------------------------------------------------------
def _edges(centers: np.ndarray) -> np.ndarray:
    """Inner edges: ZERO_EDGE after a zero level, then midpoints of consecutive levels."""
    mids = (centers[1:] + centers[:-1]) / 2.0
    if centers[0] == 0.0:
        mids[0] = ZERO_EDGE
    return mids


def default_action_grid_spec(config: NutritionSimConfig | None = None) -> dict[str, Any]:
    """The simulator's action grid as plain lists, in the format of ``ActionGrid.to_dict``.

    Centers are per-4-h doses (the daily levels / 6); ``edges[j]`` are the inner bin edges of
    dimension ``j`` (a dose ``v`` is in bin ``searchsorted(edges[j], v, side="right")``; a zero
    level gets its own bin ``[0, ZERO_EDGE)``); ``cells`` lists the admissible bin combinations
    in row-major order, so action id ``i`` is ``cells[i]`` (None = the full product). With
    ``grid_hold`` the water dimension gets a zero level and the only cell using it is the hold
    ``(0, 0, 0)``, id 0.

    Example:
        >>> spec = default_action_grid_spec()
        >>> len(spec["cells"]), spec["cells"][0], spec["cells"][1]
        (51, [0, 0, 0], [0, 0, 1])
        >>> [round(c * 6, 6) for c in spec["centers"][0]]
        [0.0, 8.0, 16.0, 24.0, 32.0]
    """
    cfg = config or NutritionSimConfig()
    kcal = np.asarray(cfg.grid_kcal_per_day, dtype=float) / STEPS_PER_DAY
    prot = np.asarray(cfg.grid_protein_per_day, dtype=float) / STEPS_PER_DAY
    water = np.asarray(cfg.grid_water_per_day, dtype=float) / STEPS_PER_DAY
    cells: list[list[int]] | None = None
    if cfg.grid_hold:
        water = np.concatenate([[0.0], water])
        fed = [
            [i, j, k]
            for i in range(len(kcal))
            for j in range(len(prot))
            for k in range(1, len(water))
        ]
        cells = [[0, 0, 0], *fed]
    centers = [kcal, prot, water]
    edges = [_edges(c) if len(c) > 1 else np.zeros(0) for c in centers]
    return {
        "names": list(DOSE_NAMES),
        "edges": [e.tolist() for e in edges],
        "centers": [c.tolist() for c in centers],
        "cells": cells,
    }


class _Grid:
    """Minimal grid with ``ActionGrid``'s id semantics (bins, L1-nearest cell, row-major ids)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.edges = [np.asarray(e, dtype=float) for e in spec["edges"]]
        self.centers = [np.asarray(c, dtype=float) for c in spec["centers"]]
        self.shape = tuple(len(c) for c in self.centers)
        if spec["cells"] is None:
            grids = np.unravel_index(np.arange(int(np.prod(self.shape))), self.shape)
            self.table = np.stack(grids, axis=1).astype(np.int64)
        else:
            self.table = np.asarray(spec["cells"], dtype=np.int64)
        self.lookup = -np.ones(int(np.prod(self.shape)), dtype=np.int64)
        self.lookup[np.ravel_multi_index(tuple(self.table.T), self.shape)] = np.arange(
            len(self.table)
        )
        self.doses = np.stack(
            [self.centers[j][self.table[:, j]] for j in range(3)], axis=1
        )  # (A, 3) per-4-h doses of each action

    @property
    def n_actions(self) -> int:
        return len(self.table)

    def encode(self, doses: np.ndarray) -> np.ndarray:
        """``(N,)`` action id of each dose vector; inadmissible bins go to the L1-nearest cell."""
        b = np.stack(
            [np.searchsorted(e, doses[:, j], side="right") for j, e in enumerate(self.edges)],
            axis=1,
        )
        ids = self.lookup[np.ravel_multi_index(tuple(b.T), self.shape)]
        miss = ids < 0
        if np.any(miss):
            dist = np.abs(b[miss, None, :] - self.table[None, :, :]).sum(axis=2)
            ids[miss] = np.argmin(dist, axis=1)
        return ids


# ---------------------------------------------------------------------------------------------
# cohort and state
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Cohort:
    """Admission covariates (observed) and latent traits of ``N`` patients.

    Shape:
        every field ``(N,)``; flags are float 0/1.
    """

    age: np.ndarray
    male: np.ndarray
    height: np.ndarray
    """Metres."""
    weight: np.ndarray
    """Admission weight, kg."""
    bmi: np.ndarray
    sepsis: np.ndarray
    diabetes: np.ndarray
    ckd: np.ndarray
    sofa: np.ndarray
    """Admission SOFA (continuous; observed rounded)."""
    lactate: np.ndarray
    glucose: np.ndarray
    phosphate: np.ndarray
    sodium: np.ndarray
    albumin: np.ndarray
    malnutrition: np.ndarray
    """Latent malnutrition factor m (N(0, 1))."""
    recovery: np.ndarray
    """Latent SOFA recovery rate rho_i per step."""
    glucose_fasting: np.ndarray
    """Latent unfed glucose level G_i."""
    sodium_offset: np.ndarray
    """Latent sodium disposition delta_i (mmol/L from 140)."""
    depletion: np.ndarray
    """Latent refeeding depletion D_i at admission."""

    def __len__(self) -> int:
        return len(self.age)

    def frame(self) -> pd.DataFrame:
        """One row per patient, one column per field."""
        return pd.DataFrame({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def draw(cls, n: int, rng: np.random.Generator, cfg: NutritionSimConfig) -> Cohort:
        """Draw ``n`` patients (see :class:`NutritionSimConfig`, section cohort)."""
        m = rng.standard_normal(n)
        age = np.clip(rng.normal(cfg.age_mean, cfg.age_sd, n), 18.0, 95.0)
        male = (rng.random(n) < cfg.male_prob).astype(float)
        height = rng.normal(cfg.height_female + cfg.height_male * male, cfg.height_sd)
        height = np.clip(height, 1.45, 2.05)
        bmi = np.exp(rng.normal(np.log(cfg.bmi_median), cfg.bmi_log_sd, n))
        bmi = np.clip(bmi - cfg.bmi_malnutrition * m, 15.0, 55.0)
        weight = bmi * height**2
        sepsis = (rng.random(n) < cfg.sepsis_prob).astype(float)
        diabetes = (rng.random(n) < cfg.diabetes_prob).astype(float)
        ckd = (rng.random(n) < cfg.ckd_prob).astype(float)
        sofa = cfg.sofa0_offset + rng.gamma(cfg.sofa0_shape, cfg.sofa0_scale, n)
        sofa = np.clip(sofa + cfg.sofa0_sepsis * sepsis, 0.0, 20.0)
        lac_level = cfg.lactate_base + cfg.lactate_per_sofa * np.maximum(sofa - 3.0, 0.0)
        lactate = np.clip(lac_level * np.exp(rng.normal(0.0, cfg.lactate0_sd, n)), 0.4, 15.0)
        g_fast = rng.normal(
            cfg.glucose_fasting + cfg.glucose_fasting_diabetes * diabetes, cfg.glucose_fasting_sd
        )
        glucose = g_fast + cfg.glucose0_per_sofa * sofa + rng.normal(0.0, cfg.glucose0_sd, n)
        glucose = np.clip(glucose, 50.0, 450.0)
        phosphate = cfg.phosphate0_mean - cfg.phosphate0_malnutrition * m
        phosphate = np.clip(phosphate + rng.normal(0.0, cfg.phosphate0_sd, n), 0.8, 6.0)
        sodium = rng.normal(cfg.sodium0_mean, cfg.sodium0_sd, n)
        albumin = (
            cfg.albumin0_mean - cfg.albumin0_malnutrition * m - cfg.albumin0_per_sofa * (sofa - 7.0)
        )
        albumin = np.clip(albumin + rng.normal(0.0, cfg.albumin0_sd, n), 1.5, 4.8)
        recovery = cfg.recovery_mean * np.exp(rng.normal(0.0, cfg.recovery_log_sd, n))
        depletion = (
            cfg.depletion_base
            + cfg.depletion_per_phosphate * np.maximum(3.0 - phosphate, 0.0)
            + cfg.depletion_per_bmi * np.maximum(20.0 - bmi, 0.0)
        )
        return cls(
            age=age,
            male=male,
            height=height,
            weight=weight,
            bmi=bmi,
            sepsis=sepsis,
            diabetes=diabetes,
            ckd=ckd,
            sofa=sofa,
            lactate=lactate,
            glucose=glucose,
            phosphate=phosphate,
            sodium=sodium,
            albumin=albumin,
            malnutrition=m,
            recovery=recovery,
            glucose_fasting=g_fast,
            sodium_offset=cfg.sodium_disposition * (sodium - 140.0),
            depletion=np.minimum(depletion, cfg.depletion_max),
        )


@dataclass(frozen=True, eq=False)
class _Noise:
    """Pre-drawn standard normals / uniforms, indexed ``[step, patient, ...]``."""

    process: np.ndarray
    """``(H, N, 7)`` N(0,1) for the 7 measured variables' dynamics."""
    measure: np.ndarray
    """``(H + 1, N, 7)`` N(0,1) measurement noise at each observation time."""
    death: np.ndarray
    """``(H, N)`` U(0,1) death draws."""
    action: np.ndarray
    """``(H, N)`` U(0,1) action draws (inverse-CDF sampling)."""

    @classmethod
    def draw(cls, n: int, horizon: int, seed: int) -> _Noise:
        k = len(MEASURED)
        return cls(
            process=np.random.default_rng([seed, 1]).standard_normal((horizon, n, k)),
            measure=np.random.default_rng([seed, 2]).standard_normal((horizon + 1, n, k)),
            death=np.random.default_rng([seed, 3]).random((horizon, n)),
            action=np.random.default_rng([seed, 4]).random((horizon, n)),
        )


@dataclass(frozen=True, eq=False)
class SimState:
    """The true state of ``N`` patients before step ``t`` (all arrays ``(N,)`` unless noted).

    ``meas`` holds the measured variables (:data:`MEASURED`) at ``t, t-1, t-2, t-3`` (times
    before admission repeat the admission values) for the observation and its trends.
    """

    t: int
    cohort: Cohort
    noise: _Noise
    alive: np.ndarray
    """bool; False from the step the patient died."""
    weight: np.ndarray
    sofa: np.ndarray
    """Continuous SOFA."""
    lactate: np.ndarray
    glucose: np.ndarray
    phosphate: np.ndarray
    sodium: np.ndarray
    albumin: np.ndarray
    depletion: np.ndarray
    kcal_ema: np.ndarray
    """Moving average of delivered kcal/kg/day."""
    kcal_adapted: np.ndarray
    """Slow moving average k_ad of delivered kcal/kg/day (refeeding adaptation)."""
    protein_ema: np.ndarray
    water_ema: np.ndarray
    cum_kcal: np.ndarray
    """Cumulative kcal/kg since admission."""
    cum_protein: np.ndarray
    doses: np.ndarray
    """``(N, 9, 3)`` per-4-h doses of the last 9 steps, oldest first (0 before admission)."""
    meas: np.ndarray
    """``(4, N, 7)`` measured values at t, t-1, t-2, t-3."""
    hazard: np.ndarray
    """Death probability of the previous step (0 before the first)."""


# ---------------------------------------------------------------------------------------------
# the simulator
# ---------------------------------------------------------------------------------------------
def _pos(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class NutritionSimulator:
    """Vectorised roll-outs of the model in the module docstring (no per-patient loops).

    Example:
        >>> sim = NutritionSimulator()
        >>> state = sim.reset(4, seed=0)
        >>> sim.observe(state).shape, sim.n_actions
        ((4, 32), 51)
        >>> nxt = sim.step(state, np.zeros((4, 3)))
        >>> nxt.t, bool(np.all(nxt.cum_kcal == 0))
        (1, True)
    """

    def __init__(self, config: NutritionSimConfig | None = None) -> None:
        self.config = config or NutritionSimConfig()
        self.grid_spec = default_action_grid_spec(self.config)
        self.grid = _Grid(self.grid_spec)
        self._ema = 1.0 - np.exp(-1.0 / (STEPS_PER_DAY * self.config.ema_days))
        self._adapt = 1.0 - np.exp(-1.0 / (STEPS_PER_DAY * self.config.refeed_adapt_days))

    @property
    def n_actions(self) -> int:
        return self.grid.n_actions

    @property
    def action_doses(self) -> np.ndarray:
        """``(n_actions, 3)`` per-4-h doses (kcal/kg, g protein/kg, mL water/kg) of each id."""
        return self.grid.doses

    # -- state -----------------------------------------------------------------------------
    def reset(self, n_patients: int, seed: int) -> SimState:
        """Draw ``n_patients`` admissions and all the noise of their stays."""
        if n_patients < 1:
            raise DataError("n_patients must be positive", expected=">= 1", found=n_patients)
        cfg = self.config
        cohort = Cohort.draw(n_patients, np.random.default_rng([seed, 0]), cfg)
        noise = _Noise.draw(n_patients, cfg.horizon_steps, seed)
        zeros = np.zeros(n_patients)
        state = SimState(
            t=0,
            cohort=cohort,
            noise=noise,
            alive=np.ones(n_patients, dtype=bool),
            weight=cohort.weight.copy(),
            sofa=cohort.sofa.copy(),
            lactate=cohort.lactate.copy(),
            glucose=cohort.glucose.copy(),
            phosphate=cohort.phosphate.copy(),
            sodium=cohort.sodium.copy(),
            albumin=cohort.albumin.copy(),
            depletion=cohort.depletion.copy(),
            kcal_ema=zeros,
            kcal_adapted=zeros,
            protein_ema=zeros,
            water_ema=zeros,
            cum_kcal=zeros,
            cum_protein=zeros,
            doses=np.zeros((n_patients, STEPS_PER_DAY + 3, 3)),
            meas=np.zeros((4, n_patients, len(MEASURED))),
            hazard=zeros,
        )
        first = self._measure(state, 0)
        return dataclasses.replace(state, meas=np.repeat(first[None], 4, axis=0))

    def _measure(self, s: SimState, t: int) -> np.ndarray:
        """``(N, 7)`` measured values of :data:`MEASURED` at time ``t``."""
        cfg = self.config
        e = s.noise.measure[t]
        return np.stack(
            [
                s.weight + cfg.meas_weight_sd * e[:, 0],
                np.clip(np.rint(s.sofa), 0.0, 24.0),
                np.maximum(s.lactate + cfg.meas_lactate_sd * e[:, 2], 0.2),
                np.maximum(s.glucose + cfg.meas_glucose_sd * e[:, 3], 20.0),
                np.maximum(s.phosphate + cfg.meas_phosphate_sd * e[:, 4], 0.1),
                s.sodium + cfg.meas_sodium_sd * e[:, 5],
                np.maximum(s.albumin + cfg.meas_albumin_sd * e[:, 6], 0.5),
            ],
            axis=1,
        )

    def observe(self, state: SimState) -> np.ndarray:
        """``(N, len(FEATURES))`` observation at the state's time (columns :data:`FEATURES`)."""
        c = state.cohort
        static = np.stack([getattr(c, n) for n in STATIC_FEATURES], axis=1)
        last = state.doses[:, -1, :]
        day_sum = state.doses[:, -STEPS_PER_DAY:].sum(axis=1)
        feeding = np.column_stack(
            [last, day_sum, state.cum_kcal, state.cum_protein]
        )  # kcal_4h, protein_4h, water_4h, kcal_24h, protein_24h, water_24h, cum kcal, cum prot
        days = np.full((len(c), 1), state.t / STEPS_PER_DAY)
        now, then = state.meas[0], state.meas[3]
        # 24-h sum now minus 3 steps ago = (newest 3 doses) - (the 3 that left the window)
        d_day = state.doses[:, -3:, :2].sum(axis=1) - state.doses[:, :3, :2].sum(axis=1)
        trends = np.column_stack([now - then, d_day])
        return np.column_stack([static, now, feeding, days, trends])

    def step(self, state: SimState, doses: np.ndarray) -> SimState:
        """Advance every patient by one 4-h step under ``doses`` and draw deaths.

        ``doses`` ``(N, 3)``: kcal/kg, g protein/kg, mL free water/kg over the step (finite,
        >= 0). Dead patients keep their last state. The step uses the pre-drawn noise of step
        ``state.t``: stepping the same state with two dose arrays compares them under the same
        noise.
        """
        cfg = self.config
        n = len(state.cohort)
        doses = np.asarray(doses, dtype=float)
        if doses.shape != (n, 3) or not np.all(np.isfinite(doses)) or np.any(doses < 0):
            raise DataError(
                "doses must be a finite, non-negative (N, 3) array",
                expected=f"({n}, 3): kcal/kg, g protein/kg, mL water/kg per 4 h",
                found=f"shape {doses.shape}, min {np.min(doses) if doses.size else 'n/a'}",
            )
        if state.t >= cfg.horizon_steps:
            raise DataError(
                "the episode is over",
                expected=f"t < horizon_steps = {cfg.horizon_steps}",
                found=state.t,
                fix="reset() the simulator",
            )
        c, t, alive = state.cohort, state.t, state.alive
        doses = np.where(alive[:, None], doses, 0.0)
        k, p, w = (STEPS_PER_DAY * doses).T  # daily rates
        a = self._ema
        k_ema = state.kcal_ema + a * (k - state.kcal_ema)
        k_ad = state.kcal_adapted + self._adapt * (k - state.kcal_adapted)
        p_ema = state.protein_ema + a * (p - state.protein_ema)
        w_ema = state.water_ema + a * (w - state.water_ema)
        late = float(t / STEPS_PER_DAY >= cfg.late_day)
        early = 1.0 - late
        e = state.noise.process[t]
        s, K = state.sofa, cfg.kcal_target

        # SOFA
        rec = c.recovery * (
            1.0 - cfg.recovery_underfeeding * late * (1.0 - np.minimum(k_ema / K, 1.0))
        )
        need = np.clip(
            cfg.protein_need + cfg.protein_need_per_sofa * (s - 6.0),
            cfg.protein_need,
            cfg.protein_need_max,
        )
        tolerance = cfg.early_kcal_tolerance - cfg.early_kcal_lactate * _pos(state.lactate - 2.0)
        ds = (
            -rec * (s - cfg.sofa_floor)
            + cfg.underfeed_sofa * late * _pos(cfg.underfeed_frac * K - k_ema) / K
            + cfg.overfeed_early_sofa * early * _pos(k - tolerance) / 10.0
            + cfg.overfeed_sofa * _pos(k - cfg.overfeed_kcal) / 10.0
            + cfg.protein_deficit_sofa * late * _pos(1.0 - p_ema / need) * s / 10.0
            + cfg.protein_excess_sofa * late * _pos(p_ema - need)
            + cfg.overprotein_early_sofa * early * _pos(p - cfg.early_protein_tolerance)
            + cfg.fluid_sofa
            * _pos(w_ema - cfg.water_tolerance)
            / 10.0
            * (1.0 + cfg.fluid_ckd * c.ckd)
            + cfg.refeed_sofa * _pos(cfg.refeed_phosphate - state.phosphate)
            + cfg.sofa_noise * e[:, 1]
        )
        sofa = np.clip(s + ds, 0.0, 24.0)

        # labs
        lac_level = cfg.lactate_base + cfg.lactate_per_sofa * _pos(sofa - 3.0)
        lactate = state.lactate + cfg.lactate_rate * (lac_level - state.lactate)
        lactate = np.maximum(lactate + cfg.lactate_noise * e[:, 2], 0.3)
        g_level = c.glucose_fasting + cfg.glucose_per_kcal * k * (
            1.0 + cfg.glucose_diabetes * c.diabetes
        )
        glucose = state.glucose + cfg.glucose_rate * (g_level - state.glucose)
        glucose = np.maximum(glucose + cfg.glucose_noise * e[:, 3], 30.0)
        phosphate = (
            state.phosphate
            + cfg.phosphate_rate * (cfg.phosphate_norm - state.phosphate)
            - cfg.phosphate_per_kcal * _pos(k - state.kcal_adapted) * state.depletion
            + cfg.phosphate_noise * e[:, 4]
        )
        phosphate = np.maximum(phosphate, 0.2)
        depletion = state.depletion * np.exp(-doses[:, 0] / cfg.depletion_kcal)
        na_level = 140.0 + c.sodium_offset + cfg.sodium_per_water * (cfg.water_neutral - w)
        sodium = state.sodium + cfg.sodium_rate * (na_level - state.sodium)
        sodium = sodium + cfg.sodium_noise * e[:, 5]
        alb_level = (
            c.albumin
            - cfg.albumin_per_sofa * (sofa - c.sofa)
            + cfg.albumin_protein * late * np.minimum(p_ema / cfg.protein_need, 1.0)
        )
        albumin = state.albumin + cfg.albumin_rate * (alb_level - state.albumin)
        albumin = np.maximum(albumin + cfg.albumin_noise * e[:, 6], 1.0)
        weight = state.weight * (
            1.0 - cfg.weight_loss_per_day * _pos(1.0 - k_ema / K) / STEPS_PER_DAY
        )

        # death
        (g_lo, g_hi), (na_lo, na_hi) = cfg.glucose_range, cfg.sodium_range
        eta = (
            cfg.hazard_intercept
            + cfg.hazard_age * (c.age - 65.0) / 10.0
            + cfg.hazard_sofa * (sofa - 8.0)
            + cfg.hazard_lactate * _pos(lactate - 2.0)
            + cfg.hazard_glucose * (_pos(glucose - g_hi) / 50.0 + _pos(g_lo - glucose) / 20.0)
            + cfg.hazard_sodium * (_pos(sodium - na_hi) + _pos(na_lo - sodium)) / 5.0
            + cfg.hazard_phosphate * _pos(cfg.hazard_phosphate_level - phosphate) / 0.5
        )
        hazard = np.where(alive, _sigmoid(eta), 0.0)
        now_alive = alive & (state.noise.death[t] >= hazard)

        def keep(new: np.ndarray, old: np.ndarray) -> np.ndarray:
            return np.where(alive, new, old)

        nxt = SimState(
            t=t + 1,
            cohort=c,
            noise=state.noise,
            alive=now_alive,
            weight=keep(weight, state.weight),
            sofa=keep(sofa, state.sofa),
            lactate=keep(lactate, state.lactate),
            glucose=keep(glucose, state.glucose),
            phosphate=keep(phosphate, state.phosphate),
            sodium=keep(sodium, state.sodium),
            albumin=keep(albumin, state.albumin),
            depletion=keep(depletion, state.depletion),
            kcal_ema=keep(k_ema, state.kcal_ema),
            kcal_adapted=keep(k_ad, state.kcal_adapted),
            protein_ema=keep(p_ema, state.protein_ema),
            water_ema=keep(w_ema, state.water_ema),
            cum_kcal=state.cum_kcal + doses[:, 0],
            cum_protein=state.cum_protein + doses[:, 1],
            doses=np.concatenate([state.doses[:, 1:], doses[:, None, :]], axis=1),
            meas=state.meas,
            hazard=hazard,
        )
        m = self._measure(nxt, t + 1)
        m = np.where(alive[:, None], m, state.meas[0])
        return dataclasses.replace(nxt, meas=np.concatenate([m[None], state.meas[:3]], axis=0))

    # -- roll-outs -------------------------------------------------------------------------
    def _probs(self, policy: Policy, obs: np.ndarray) -> np.ndarray:
        probs = np.asarray(policy(obs), dtype=np.float64)
        shape = (len(obs), self.n_actions)
        if probs.shape != shape:
            raise DataError(
                "a policy must return one row of action probabilities per observation",
                expected=shape,
                found=probs.shape,
                fix="return (N, n_actions) probabilities; one-hot rows for a deterministic policy",
            )
        sums = probs.sum(axis=1)
        if not np.all(np.isfinite(probs)) or np.any(probs < -1e-12) or not np.allclose(sums, 1.0):
            i = int(np.argmax(np.abs(sums - 1.0)))
            raise DataError(
                "policy probabilities must be finite, non-negative and sum to 1 per row",
                expected="sum_a pi(a | s) = 1",
                found=f"row {i} sums to {sums[i]}",
                fix="normalise: probs / probs.sum(axis=1, keepdims=True)",
            )
        return np.clip(probs, 0.0, None)

    def simulate(
        self, policy: Policy, n_patients: int, seed: int, keep_probs: bool = False
    ) -> SimResult:
        """Roll ``policy`` out on ``n_patients`` admissions; one row per (alive patient, step).

        At each step the policy sees the observations of the patients still alive and returns
        their action probabilities; actions are drawn by inverse CDF with the pre-drawn
        uniforms. ``keep_probs`` stores the full ``(rows, n_actions)`` probabilities (else only
        the probability of the action taken).
        """
        cfg = self.config
        state = self.reset(n_patients, seed)
        cols: dict[str, list[np.ndarray]] = {
            k: []
            for k in (
                "patient",
                "step",
                "obs",
                "action",
                "prob",
                "probs",
                "doses",
                "died",
                "hazard",
                "next",
                "next_cum_kcal",
            )
        }
        for t in range(cfg.horizon_steps):
            idx = np.nonzero(state.alive)[0]
            if not len(idx):
                break
            obs = self.observe(state)[idx]
            probs = self._probs(policy, obs)
            cdf = np.cumsum(probs, axis=1)
            u = state.noise.action[t, idx] * cdf[:, -1]
            act = np.minimum((cdf <= u[:, None]).sum(axis=1), self.n_actions - 1)
            doses = np.zeros((n_patients, 3))
            doses[idx] = self.grid.doses[act]
            nxt = self.step(state, doses)
            cols["patient"].append(idx)
            cols["step"].append(np.full(len(idx), t))
            cols["obs"].append(obs)
            cols["action"].append(act)
            cols["prob"].append(probs[np.arange(len(idx)), act])
            if keep_probs:
                cols["probs"].append(probs)
            cols["doses"].append(doses[idx])
            cols["died"].append(~nxt.alive[idx])
            cols["hazard"].append(nxt.hazard[idx])
            cols["next"].append(nxt.meas[0][idx])
            cols["next_cum_kcal"].append(nxt.cum_kcal[idx])
            state = nxt
        cat = {k: np.concatenate(v) if v else None for k, v in cols.items()}
        order = np.lexsort((cat["step"], cat["patient"]))
        cat = {k: (v[order] if v is not None else None) for k, v in cat.items()}
        return SimResult._build(self, cat, state, seed)


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SimResult:
    """Roll-out rows sorted by patient then step, plus the per-patient table.

    Shape:
        obs ``(R, len(FEATURES))``; action, prob, done, timeout, died, patient, step ``(R,)``;
        probs ``(R, n_actions)`` or None; frame ``R`` rows; patients ``n_patients`` rows.
    """

    frame: pd.DataFrame
    """Per step: patient, step, time (hours), day, the observation (:data:`FEATURES`), action,
    prob (probability of the action under the policy that chose it), the doses (per 4 h),
    ``next_<x>`` of :data:`REWARD_COLUMNS` (measured after the step; equal to the next row's
    ``x`` within an episode), next_cum_kcal_per_kg, hazard (true death probability of the step),
    died (death during this step), patient_died (the episode ends in death: the ``died`` argument
    of ``clinfuse.rl.rewards`` terms), done, timeout."""
    obs: np.ndarray
    action: np.ndarray
    prob: np.ndarray
    probs: np.ndarray | None
    done: np.ndarray
    timeout: np.ndarray
    died: np.ndarray
    patient: np.ndarray
    step: np.ndarray
    patients: pd.DataFrame
    """One row per patient: the cohort fields plus died, death_step (-1 if survived), n_steps."""
    n_actions: int
    grid_spec: dict[str, Any]
    seed: int

    feature_names: tuple[str, ...] = FEATURES

    @property
    def time(self) -> np.ndarray:
        """``(R,)`` hours since admission at each decision."""
        return self.step * STEP_HOURS

    @property
    def mortality(self) -> float:
        """Share of patients who died within the horizon."""
        return float(self.patients["died"].mean())

    @classmethod
    def _build(
        cls, sim: NutritionSimulator, c: dict[str, Any], state: SimState, seed: int
    ) -> SimResult:
        cfg = sim.config
        died = c["died"].astype(bool)
        last = np.append(c["patient"][1:] != c["patient"][:-1], True)
        survived_end = last & ~died
        horizon_done = cfg.horizon_end == "done"
        done = died | (survived_end & horizon_done)
        timeout = survived_end & (not horizon_done)
        frame = pd.DataFrame(c["obs"], columns=list(FEATURES))
        frame.insert(0, "patient", c["patient"].astype(np.int64))
        frame.insert(1, "step", c["step"].astype(np.int64))
        frame.insert(2, "time", c["step"] * STEP_HOURS)
        frame.insert(3, "day", c["step"] // STEPS_PER_DAY)
        frame["action"] = c["action"].astype(np.int64)
        frame["prob"] = c["prob"]
        for j, name in enumerate(DOSE_NAMES):
            frame[name] = c["doses"][:, j]
        for name in REWARD_COLUMNS:
            frame[f"next_{name}"] = c["next"][:, MEASURED.index(name)]
        frame["next_cum_kcal_per_kg"] = c["next_cum_kcal"]
        frame["hazard"] = c["hazard"]
        frame["died"] = died
        frame["patient_died"] = np.isin(c["patient"], c["patient"][died])
        frame["done"] = done
        frame["timeout"] = timeout
        patients = state.cohort.frame()
        n = len(patients)
        n_steps = np.bincount(c["patient"], minlength=n)
        death_step = np.full(n, -1, dtype=np.int64)
        death_step[c["patient"][died]] = c["step"][died]
        patients["died"] = death_step >= 0
        patients["death_step"] = death_step
        patients["n_steps"] = n_steps
        patients.index.name = "patient"
        return cls(
            frame=frame,
            obs=c["obs"],
            action=c["action"].astype(np.int64),
            prob=c["prob"],
            probs=c["probs"],
            done=done,
            timeout=timeout,
            died=died,
            patient=c["patient"].astype(np.int64),
            step=c["step"].astype(np.int64),
            patients=patients,
            n_actions=sim.n_actions,
            grid_spec=sim.grid_spec,
            seed=seed,
        )

    def returns(self, reward_fn: RewardFn | None = None, gamma: float = 1.0) -> np.ndarray:
        r"""``(n_patients,)`` return :math:`G_i = \sum_t \gamma^t r_{i,t}` of each episode."""
        r = np.asarray((reward_fn or survival_reward)(self.frame), dtype=np.float64)
        if r.shape != (len(self.frame),):
            raise DataError(
                "a reward function must return one reward per row of the frame",
                expected=(len(self.frame),),
                found=r.shape,
            )
        disc = gamma ** self.step.astype(np.float64)
        return np.bincount(self.patient, weights=disc * r, minlength=len(self.patients))

    def to_trajectories(self, reward_fn: RewardFn | None = None) -> Trajectories:
        """The rows as :class:`~clinfuse.rl.data.Trajectories` (time in hours; the action grid
        spec and the seed in ``meta``)."""
        reward = np.asarray((reward_fn or survival_reward)(self.frame), dtype=np.float64)
        return Trajectories(
            obs=self.obs,
            action=self.action,
            reward=reward,
            done=self.done,
            timeout=self.timeout,
            patient=self.patient,
            time=self.time,
            n_actions=self.n_actions,
            feature_names=self.feature_names,
            meta={"source": "deepen.simulator", "seed": self.seed, "action_grid": self.grid_spec},
        )


def survival_reward(frame: pd.DataFrame, terminal: float = 15.0) -> np.ndarray:
    r"""Terminal-only reward: :math:`-R_T` on the step of death, :math:`+R_T` on the last step
    of a survivor, 0 elsewhere (Raghu et al. 2017, :math:`R_T = 15`).

    Shape:
        frame ``R`` rows with ``died``, ``done``, ``timeout``. Output ``(R,)``.
    """
    died = frame["died"].to_numpy(bool)
    end = frame["done"].to_numpy(bool) | frame["timeout"].to_numpy(bool)
    return np.where(died, -terminal, np.where(end, terminal, 0.0))


# ---------------------------------------------------------------------------------------------
# policies
# ---------------------------------------------------------------------------------------------
def _column(obs: np.ndarray | pd.DataFrame, name: str) -> np.ndarray:
    if isinstance(obs, pd.DataFrame):
        if name not in obs.columns:
            raise DataError(
                f"observation column {name!r} missing",
                expected=f"the columns of FEATURES ({len(FEATURES)})",
                found=list(obs.columns)[:8],
            )
        return obs[name].to_numpy(np.float64)
    arr = np.asarray(obs)
    if arr.ndim != 2 or arr.shape[1] != len(FEATURES):
        raise DataError(
            "observations must be an (N, len(FEATURES)) array",
            expected=f"(N, {len(FEATURES)})",
            found=arr.shape,
            fix="pass the simulator's observations or a DataFrame with the FEATURES columns",
        )
    return arr[:, _IDX[name]].astype(np.float64)


def _level_probs(target: np.ndarray, levels: np.ndarray, sd: float) -> np.ndarray:
    """``(N, L)`` discretised Gaussian around ``target`` over the levels (rows sum to 1)."""
    logits = -0.5 * ((levels[None, :] - target[:, None]) / sd) ** 2
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _product_probs(
    kcal: np.ndarray, prot: np.ndarray, water: np.ndarray, grid: _Grid
) -> np.ndarray:
    """``(N, A)`` probability of each grid cell with independent dimensions (renormalised over
    the admissible cells)."""
    table = grid.table
    p = kcal[:, table[:, 0]] * prot[:, table[:, 1]] * water[:, table[:, 2]]
    return p / p.sum(axis=1, keepdims=True)


def _water_probs(p_high: np.ndarray, n_bins: int, hold: bool) -> np.ndarray:
    """``(N, n_bins)`` water-bin probabilities: ``1 - p_high`` on the lowest fed level,
    ``p_high`` on the highest (the zero bin of the hold gets 0)."""
    fed = np.zeros((len(p_high), n_bins - int(hold)))
    fed[:, 0] += 1.0 - p_high
    fed[:, -1] += p_high
    if hold:
        fed = np.column_stack([np.zeros(len(p_high)), fed])
    return fed


def clinician_policy(
    obs: np.ndarray | pd.DataFrame, config: NutritionSimConfig | None = None
) -> np.ndarray:
    r"""Behaviour policy: ``(N, n_actions)`` exact action probabilities of a clinician.

    The intended calories ramp up over the days and are lower for sicker patients,
    :math:`\tilde k = \min(k_0 + k_d\,d, k_{max}) - k_s (SOFA - 8)_+ - k_L (L - 2)_+`; protein
    ramps to a fixed cap :math:`\tilde p = \min(p_0 + p_d\,d, p_{max})` whatever the SOFA; the
    chosen levels follow discretised Gaussians around them (``clin_kcal_sd``,
    ``clin_protein_sd``); high water is chosen with probability
    :math:`\sigma((Na - Na_{1/2})/s)`. Then with probability :math:`q_h` (``clin_hold``, more on
    day 0 and with lactate > 4) feeds are held, and with :math:`q_o` (``clin_overfeed``) the top
    calorie level is given:

    .. math:: \pi_b = q_h\,1_{hold} + q_o\,\pi_{over} + (1 - q_h - q_o)\,\pi_{kcal}
              \otimes \pi_{prot} \otimes \pi_{water}.

    Accepts the observation array or a DataFrame with the :data:`FEATURES` columns. The
    probabilities depend only on the observation, so OPE can use them as the true
    :math:`\pi_b(a \mid s)`.
    """
    cfg = config or NutritionSimConfig()
    spec = default_action_grid_spec(cfg)
    grid = _Grid(spec)
    day = _column(obs, "days_since_admit")
    sofa = _column(obs, "sofa")
    lac = _column(obs, "lactate")
    na = _column(obs, "sodium")
    kcal_levels = np.asarray(cfg.grid_kcal_per_day, dtype=float)
    prot_levels = np.asarray(cfg.grid_protein_per_day, dtype=float)
    k_int = np.minimum(cfg.clin_kcal_start + cfg.clin_kcal_per_day * day, cfg.clin_kcal_max)
    k_int = k_int - cfg.clin_kcal_sofa * _pos(sofa - 8.0) - cfg.clin_kcal_lactate * _pos(lac - 2.0)
    p_int = np.minimum(
        cfg.clin_protein_start + cfg.clin_protein_per_day * day, cfg.clin_protein_max
    )
    pk = _level_probs(k_int, kcal_levels, cfg.clin_kcal_sd)
    pp = _level_probs(p_int, prot_levels, cfg.clin_protein_sd)
    p_high = _sigmoid((na - cfg.clin_water_sodium) / cfg.clin_water_scale)
    pw = _water_probs(p_high, len(spec["centers"][2]), cfg.grid_hold)
    usual = _product_probs(pk, pp, pw, grid)
    top = np.zeros_like(pk)
    top[:, -1] = 1.0
    over = _product_probs(top, pp, pw, grid)
    q_hold = cfg.clin_hold + cfg.clin_hold_day0 * (day < 1.0) + cfg.clin_hold_lactate * (lac > 4.0)
    q_hold = np.clip(q_hold, 0.0, 1.0 - cfg.clin_overfeed)
    hold = np.zeros_like(usual)
    hold[:, HOLD_ID] = 1.0
    probs = (
        q_hold[:, None] * hold
        + cfg.clin_overfeed * over
        + (1.0 - q_hold - cfg.clin_overfeed)[:, None] * usual
    )
    return probs / probs.sum(axis=1, keepdims=True)


def guideline_dose(
    weight: np.ndarray,
    day: np.ndarray,
    height: np.ndarray | None = None,
    config: NutritionSimConfig | None = None,
) -> np.ndarray:
    r"""ASPEN/ESPEN doses per kg of actual weight per 4 h: ``(N, 3)`` kcal, protein, water.

    Day ``d`` (integer part of the days since admission) takes
    ``guideline_kcal_per_day[min(d, last)]`` and the protein analogue (a ramp to ~25 kcal and
    1.3 g/kg/day by day 3), divided by 6 per step. With ``height`` (m), patients with BMI >=
    ``guideline_obesity_bmi`` are dosed on the adjusted body weight
    :math:`W_{adj} = IBW + 0.25 (W - IBW)`, :math:`IBW = 22\,h^2`, so their per-actual-kg dose
    is scaled by :math:`W_{adj}/W`.

    Shape:
        weight, day, height ``(N,)``. Output ``(N, 3)``.

    Example:
        >>> guideline_dose(np.array([70.0]), np.array([5.0])) * 6
        array([[25. ,  1.3, 10. ]])
    """
    cfg = config or NutritionSimConfig()
    weight = np.asarray(weight, dtype=float)
    d = np.clip(np.floor(np.asarray(day, dtype=float)), 0, len(cfg.guideline_kcal_per_day) - 1)
    d = d.astype(int)
    kcal = np.asarray(cfg.guideline_kcal_per_day, dtype=float)[d]
    prot = np.asarray(cfg.guideline_protein_per_day, dtype=float)[d]
    scale = np.ones_like(weight)
    if height is not None:
        h = np.asarray(height, dtype=float)
        ibw = 22.0 * h**2
        obese = weight / h**2 >= cfg.guideline_obesity_bmi
        scale = np.where(obese, (ibw + 0.25 * (weight - ibw)) / weight, 1.0)
    water = np.full_like(weight, cfg.guideline_water_per_day)
    return np.stack([kcal * scale, prot * scale, water], axis=1) / STEPS_PER_DAY


def _one_hot(ids: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(ids), n))
    out[np.arange(len(ids)), ids] = 1.0
    return out


def guideline_policy(
    obs: np.ndarray | pd.DataFrame, config: NutritionSimConfig | None = None
) -> np.ndarray:
    """Deterministic ``(N, n_actions)`` one-hot policy: :func:`guideline_dose` mapped to its
    grid cell (the nearest admissible cell when its bins are not one)."""
    cfg = config or NutritionSimConfig()
    grid = _Grid(default_action_grid_spec(cfg))
    doses = guideline_dose(
        _column(obs, "weight"), _column(obs, "days_since_admit"), _column(obs, "height"), cfg
    )
    return _one_hot(grid.encode(doses), grid.n_actions)


def constant_policy(
    kcal_per_day: float,
    protein_per_day: float,
    water_per_day: float,
    config: NutritionSimConfig | None = None,
) -> Policy:
    """A policy giving the grid cell of fixed daily doses to everyone (e.g. zero or maximal
    feeding); ``(0, 0, 0)`` is the hold action."""
    cfg = config or NutritionSimConfig()
    grid = _Grid(default_action_grid_spec(cfg))
    dose = np.array([[kcal_per_day, protein_per_day, water_per_day]]) / STEPS_PER_DAY
    a = int(grid.encode(dose)[0])

    def policy(obs: np.ndarray) -> np.ndarray:
        return _one_hot(np.full(len(obs), a), grid.n_actions)

    return policy


def informed_policy(
    obs: np.ndarray | pd.DataFrame,
    config: NutritionSimConfig | None = None,
    epsilon: float = 0.0,
) -> np.ndarray:
    """A hand-written state-aware policy using what the equations reveal (not optimal):

    - calories: before ``late_day`` 16 kcal/kg/day, 8 with lactate > 3 (shock) or phosphate
      < 2.5 (refeeding risk); later 24, 16 when a diabetic's glucose is > 180, 8 while phosphate
      is < 2.0;
    - protein: 1.0 g/kg/day early, then the SOFA-dependent need :math:`P(s)`;
    - water: high when sodium > 141, low otherwise.

    Mixed with ``epsilon`` of the uniform policy. Shape: ``(N, n_actions)``.
    """
    cfg = config or NutritionSimConfig()
    grid = _Grid(default_action_grid_spec(cfg))
    day = _column(obs, "days_since_admit")
    sofa = _column(obs, "sofa")
    lac = _column(obs, "lactate")
    phos = _column(obs, "phosphate")
    glu = _column(obs, "glucose")
    diab = _column(obs, "diabetes")
    na = _column(obs, "sodium")
    late = day >= cfg.late_day
    early_k = np.where((lac > 3.0) | (phos < 2.5), 8.0, 16.0)
    late_k = np.where((diab > 0.5) & (glu > 180.0), 16.0, 24.0)
    late_k = np.where(phos < 2.0, 8.0, late_k)
    kcal = np.where(late, late_k, early_k)
    need = np.clip(
        cfg.protein_need + cfg.protein_need_per_sofa * (sofa - 6.0),
        cfg.protein_need,
        cfg.protein_need_max,
    )
    prot = np.where(late, need, 1.0)
    water = np.where(na > 141.0, max(cfg.grid_water_per_day), min(cfg.grid_water_per_day))
    ids = grid.encode(np.stack([kcal, prot, water], axis=1) / STEPS_PER_DAY)
    probs = _one_hot(ids, grid.n_actions)
    return (1.0 - epsilon) * probs + epsilon / grid.n_actions


# ---------------------------------------------------------------------------------------------
# module-level entry points
# ---------------------------------------------------------------------------------------------
def simulate(
    policy_fn: Policy,
    n_patients: int,
    seed: int,
    config: NutritionSimConfig | None = None,
    keep_probs: bool = False,
) -> SimResult:
    """Roll ``policy_fn`` out on ``n_patients`` seeded admissions (:meth:`NutritionSimulator.
    simulate`)."""
    return NutritionSimulator(config).simulate(policy_fn, n_patients, seed, keep_probs)


def true_value(
    policy_fn: Policy,
    n_patients: int = 5000,
    seed: int = 12345,
    reward_fn: RewardFn | None = None,
    gamma: float = 1.0,
    config: NutritionSimConfig | None = None,
) -> tuple[float, float]:
    r"""Monte Carlo ground truth :math:`\hat V = \frac{1}{n}\sum_i G_i` and its standard error
    :math:`\mathrm{sd}(G)/\sqrt{n}` over ``n_patients`` seeded episodes (default reward:
    :func:`survival_reward`)."""
    g = simulate(policy_fn, n_patients, seed, config).returns(reward_fn, gamma)
    return float(g.mean()), float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else 0.0


def mortality(
    policy_fn: Policy,
    n_patients: int = 5000,
    seed: int = 12345,
    config: NutritionSimConfig | None = None,
) -> tuple[float, float]:
    r"""Death rate within the horizon and its binomial standard error
    :math:`\sqrt{\hat p (1 - \hat p)/n}`."""
    p = simulate(policy_fn, n_patients, seed, config).mortality
    return p, float(np.sqrt(p * (1.0 - p) / n_patients))


def make_default_dataset(
    n_patients: int = 2000, seed: int = 0, config: NutritionSimConfig | None = None
) -> SimResult:
    """DeepEN's embedded default data: ``n_patients`` stays under :func:`clinician_policy`."""
    cfg = config or NutritionSimConfig()

    def policy(obs: np.ndarray) -> np.ndarray:
        return clinician_policy(obs, cfg)

    res = simulate(policy, n_patients, seed, cfg)
    log.info(
        "deepen simulator: %d patients, %d steps, mortality %.3f",
        n_patients,
        len(res.frame),
        res.mortality,
    )
    return res
