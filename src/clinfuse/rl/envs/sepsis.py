r"""The sepsis simulator of Oberst & Sontag (ICML 2019), as an exact tabular MDP.

Reimplemented from the description of "Counterfactual Off-Policy Evaluation with Gumbel-Max
Structural Causal Models" and its code (clinicalml/gumbel-max-scm, ``sepsisSimDiabetes/``
``State.py``, ``Action.py``, ``MDP.py``, ``DataGenerator.py``; MIT). Nothing could be
downloaded while writing this module: every constant below is recalled from that code, and each
is a :class:`SepsisConfig` field. The items marked [inferred] are the ones recalled with the
least certainty.

**State** (1440 full states = 720 observed x hidden diabetes). Levels: heart rate ``hr`` 0 low /
1 normal / 2 high; systolic blood pressure ``sbp`` 0 low / 1 normal / 2 high; percent oxygen
``o2`` 0 low / 1 normal; glucose 0 very low / 1 low / 2 normal / 3 high / 4 very high; the
treatment flags ``abx``, ``vaso``, ``vent`` (0 off / 1 on); ``diabetic`` (hidden). Index as in
``State.get_state_idx`` (diabetes most significant, ventilation least)::

    full = 720 diabetic + 240 hr + 80 sbp + 40 o2 + 8 glucose + 4 abx + 2 vaso + vent
    observed = full mod 720

**Actions** (8), as in ``Action.get_action_idx``: ``a = 4 abx + 2 vent + vaso`` (note: vent
before vaso, unlike the state). After a step the treatment flags equal the action's bits.

**Transition** (``MDP.transition``), applied in order antibiotics, ventilation, vasopressors,
fluctuation; every random draw is independent, so the next-state distribution factorises over
the four vitals given :math:`(s, a)`:

- antibiotics on: hr and sbp high -> normal w.p. 0.5 each; stopped (on -> off): hr and sbp
  normal -> high w.p. 0.1 each.
- ventilation on: o2 low -> normal w.p. 0.7; stopped: o2 normal -> low w.p. 0.1.
- vasopressors on, non-diabetic: one draw, w.p. 0.7 sbp low -> normal or normal -> high.
  Diabetic: sbp normal -> high w.p. 0.9; low -> normal w.p. 0.5, low -> high w.p. 0.4
  [inferred]; glucose up one level w.p. 0.5 [inferred]. Stopped: sbp down one level w.p. 0.1
  (non-diabetic) or 0.05 (diabetic) [inferred].
- fluctuation: a vital that no treatment touched this step (hr and sbp: antibiotics neither on
  nor stopped; sbp also needs vasopressors neither on nor stopped; o2: ventilation neither on
  nor stopped) moves down / up one level w.p. 0.1 / 0.1 (clipped at the ends). Glucose moves
  down / up w.p. 0.1 / 0.1 (0.3 / 0.3 if diabetic), except while vasopressors are on
  [inferred: ``vaso_on_freezes_glucose``].

**Reward and ends** (``calculateReward``), on the state entered: -1 and the episode ends
("death") if at least 3 of the 4 vitals are abnormal; +1 and the episode ends ("discharge") if
all 4 are normal and every treatment is off; 0 otherwise. Death and discharge states are the
``terminal`` (absorbing) states of :class:`~clinfuse.rl.envs.tabular.TabularMDP`: 832 death and
2 discharge states among the 1440, leaving 606 live states. Episodes are cut after
``horizon = 20`` steps (``NSTEPS``).

**Initial states** (``MDP.generate_random_state``): diabetes ~ Bernoulli(0.2); hr and sbp ~
(0.25, 0.5, 0.25); o2 ~ (0.2, 0.8); glucose ~ (0.05, 0.15, 0.6, 0.15, 0.05), or (0.01, 0.05,
0.15, 0.6, 0.19) if diabetic; treatments off; redrawn (diabetes included [inferred:
``resample_diabetes_on_reject``]) until the state is not terminal. So

.. math::
    d_0(s) \propto p(d)\,p(hr)\,p(sbp)\,p(o_2)\,p(g \mid d)\,[s \notin \mathcal{T}],

and the diabetic share of the patients is :meth:`SepsisMDP.diabetic_fraction` (0.190 with the
defaults), not exactly ``p_diabetes``.

**Policies** (notebook of the paper): the "optimal" policy is the greedy policy of the
*full-state* MDP (it sees diabetes) under discount ``policy_gamma = 0.99`` (``DISCOUNT_Pol``),
infinite horizon, found by policy iteration (the original's ``policyIteration``; it matches
:meth:`TabularMDP.value_iteration` to 3e-11), with death and discharge absorbing at value 0
[inferred: the original's full matrix was estimated from simulator draws]; the physician
is that policy made epsilon-greedy with ``physician_epsilon = 0.05`` (``PHYS_EPSILON``: 0.95 on
the optimal action, 0.05/7 on each other); random is uniform. Policy values are exact:

.. math::
    J(\pi) = \mathbb{E}_{s_0 \sim d_0}\Big[\sum_{t=0}^{T-1} \gamma^t r_t\Big],\quad
    T \le H = 20,\ \gamma = 1 \ (\texttt{DISCOUNT}),

computed by backward induction on the full MDP. Measured with the defaults: optimal 0.5614,
physician 0.4638, uniform random -0.7164, best 20-step (non-stationary) policy 0.5808; about
37% of physician episodes reach the 20-step cap. Logged data expose only the observed state
(diabetes hidden), so the data are a POMDP and the physician's actions are confounded by
diabetes, which is why the paper uses this simulator.

Not reproduced: the 144-state "projected" index (glucose marginalised), the empirical
transition-count matrices of ``DataGenerator.simulate`` and the Gumbel-max counterfactual
sampling (those belong in OPE code on top of this module).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Literal

import numpy as np

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.rl.data import Trajectories
from clinfuse.rl.envs.tabular import TabularMDP, uniform_policy

__all__ = [
    "ACTION_NAMES",
    "N_ACTIONS",
    "N_FULL_STATES",
    "N_OBS_STATES",
    "SepsisConfig",
    "SepsisMDP",
    "build_sepsis_mdp",
    "decode",
    "decode_action",
    "encode",
    "encode_action",
    "observed_state",
]

log = logging.getLogger(__name__)

N_OBS_STATES = 720
"""Observed states: vitals x treatment flags (diabetes hidden)."""
N_FULL_STATES = 1440
"""Full states: observed states x diabetes."""
N_ACTIONS = 8
"""Actions: antibiotics x ventilation x vasopressors, each on/off."""

_STATE_VARS = ("hr", "sbp", "o2", "glucose", "abx", "vaso", "vent")
_LEVELS = {"hr": 3, "sbp": 3, "o2": 2, "glucose": 5, "abx": 2, "vaso": 2, "vent": 2}
_NORMAL = {"hr": 1, "sbp": 1, "o2": 1, "glucose": 2}
_BASES = {"hr": 240, "sbp": 80, "o2": 40, "glucose": 8, "abx": 4, "vaso": 2, "vent": 1}
_ACTION_BASES = {"abx": 4, "vent": 2, "vaso": 1}

ACTION_NAMES: tuple[str, ...] = tuple(
    "+".join(n for n, b in _ACTION_BASES.items() if (a // b) % 2) or "none"
    for a in range(N_ACTIONS)
)
"""Readable action names, e.g. ``ACTION_NAMES[5] == "abx+vaso"``."""

ObsKind = Literal["vitals", "onehot"]
PolicyName = Literal["optimal", "physician", "random"]
Policy = np.ndarray | PolicyName


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SepsisConfig:
    """Constants of the Oberst-Sontag sepsis simulator (defaults: the original code, recalled)."""

    p_diabetes: float = 0.2
    """Probability that a newly drawn patient is diabetic (``PROB_DIAB``)."""
    horizon: int = 20
    """Maximum episode length in steps (``NSTEPS``); longer episodes end with ``timeout``."""
    gamma: float = 1.0
    """Discount of the evaluated return (``DISCOUNT = 1``)."""
    policy_gamma: float = 0.99
    """Discount under which the optimal (physician's) policy is computed (``DISCOUNT_Pol``)."""
    physician_epsilon: float = 0.05
    """Physician = optimal action w.p. 1 - eps, each other action eps/7 (``PHYS_EPSILON``)."""
    obs: ObsKind = "vitals"
    """Features of simulated data: the 7 (or 8) category codes, or a one-hot state id."""
    abx_on_high_to_normal: float = 0.5
    """Antibiotics on: hr and sbp high -> normal (each, independently)."""
    abx_off_normal_to_high: float = 0.1
    """Antibiotics stopped: hr and sbp normal -> high (each, independently)."""
    vent_on_low_to_normal: float = 0.7
    """Ventilation on: o2 low -> normal."""
    vent_off_normal_to_low: float = 0.1
    """Ventilation stopped: o2 normal -> low."""
    vaso_on_raise: float = 0.7
    """Vasopressors on, non-diabetic: sbp low -> normal or normal -> high (one draw)."""
    vaso_on_diabetic_normal_to_high: float = 0.9
    """Vasopressors on, diabetic: sbp normal -> high [inferred]."""
    vaso_on_diabetic_low_to_normal: float = 0.5
    """Vasopressors on, diabetic: sbp low -> normal [inferred]."""
    vaso_on_diabetic_low_to_high: float = 0.4
    """Vasopressors on, diabetic: sbp low -> high [inferred]."""
    vaso_on_diabetic_glucose_up: float = 0.5
    """Vasopressors on, diabetic: glucose up one level [inferred]."""
    vaso_off_drop: float = 0.1
    """Vasopressors stopped, non-diabetic: sbp down one level."""
    vaso_off_drop_diabetic: float = 0.05
    """Vasopressors stopped, diabetic: sbp down one level [inferred]."""
    vital_fluctuation: float = 0.1
    """Untreated hr, sbp, o2: down one level w.p. this, up one level w.p. this."""
    glucose_fluctuation: float = 0.1
    """Non-diabetic glucose: down / up one level w.p. this each."""
    glucose_fluctuation_diabetic: float = 0.3
    """Diabetic glucose: down / up one level w.p. this each."""
    vaso_on_freezes_glucose: bool = True
    """Glucose does not fluctuate in a step with vasopressors on [inferred]."""
    init_hr: tuple[float, ...] = (0.25, 0.5, 0.25)
    """Initial heart-rate distribution over (low, normal, high)."""
    init_sbp: tuple[float, ...] = (0.25, 0.5, 0.25)
    """Initial systolic-BP distribution over (low, normal, high)."""
    init_o2: tuple[float, ...] = (0.2, 0.8)
    """Initial percent-O2 distribution over (low, normal)."""
    init_glucose: tuple[float, ...] = (0.05, 0.15, 0.6, 0.15, 0.05)
    """Initial glucose distribution of non-diabetics (very low .. very high)."""
    init_glucose_diabetic: tuple[float, ...] = (0.01, 0.05, 0.15, 0.6, 0.19)
    """Initial glucose distribution of diabetics."""
    resample_diabetes_on_reject: bool = True
    """A rejected (terminal) initial draw redraws diabetes too, as ``get_new_state`` [inferred]."""
    seed: int = 0
    """Default seed of :meth:`SepsisMDP.simulate`."""

    def __post_init__(self) -> None:
        probs = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.type == "float" and f.name not in ("gamma", "policy_gamma")
        }
        probs.update(gamma=self.gamma, policy_gamma=self.policy_gamma)
        for name, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name} must be a probability", expected="[0, 1]", found=p)
        pairs = {
            "2 * vital_fluctuation": 2 * self.vital_fluctuation,
            "2 * glucose_fluctuation": 2 * self.glucose_fluctuation,
            "2 * glucose_fluctuation_diabetic": 2 * self.glucose_fluctuation_diabetic,
            "vaso_on_diabetic_low_to_normal + vaso_on_diabetic_low_to_high": (
                self.vaso_on_diabetic_low_to_normal + self.vaso_on_diabetic_low_to_high
            ),
        }
        for name, p in pairs.items():
            if p > 1.0 + 1e-12:
                raise ConfigError(f"{name} exceeds 1", expected="<= 1", found=p)
        inits = {
            "init_hr": 3,
            "init_sbp": 3,
            "init_o2": 2,
            "init_glucose": 5,
            "init_glucose_diabetic": 5,
        }
        for name, n in inits.items():
            p = np.asarray(getattr(self, name), dtype=np.float64)
            if p.shape != (n,) or np.any(p < 0) or not np.isclose(p.sum(), 1.0):
                raise ConfigError(
                    f"{name} must be a distribution over {n} levels",
                    expected=f"{n} non-negative numbers summing to 1",
                    found=getattr(self, name),
                )
        if self.horizon < 1:
            raise ConfigError("horizon must be positive", expected=">= 1", found=self.horizon)
        if self.policy_gamma >= 1.0:
            raise ConfigError(
                "policy_gamma must be below 1 (the optimal policy is infinite-horizon)",
                expected="[0, 1)",
                found=self.policy_gamma,
                fix="use 0.99 as the original",
            )


# -- state and action codes ------------------------------------------------------------------
def _ints(x: object, name: str, n: int) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iub" or np.any(a < 0) or np.any(a >= n):
        raise DataError(
            f"{name} is outside its levels",
            expected=f"integers in [0, {n})",
            found=a if a.size <= 8 else f"{a.dtype} array, range [{a.min()}, {a.max()}]",
        )
    return a.astype(np.int64)


def encode(
    hr: object,
    sbp: object,
    o2: object,
    glucose: object,
    abx: object,
    vaso: object,
    vent: object,
    diabetic: object = 0,
) -> np.ndarray:
    """Full state ids ``720 diabetic + 240 hr + 80 sbp + 40 o2 + 8 glucose + 4 abx + 2 vaso +
    vent`` (the original's ``get_state_idx('full')``).

    Shape:
        Arguments are integer scalars or arrays that broadcast. Output: their broadcast shape.

    Example:
        >>> int(encode(hr=2, sbp=1, o2=1, glucose=2, abx=0, vaso=0, vent=0, diabetic=1))
        1336
    """
    values = dict(zip(_STATE_VARS, (hr, sbp, o2, glucose, abx, vaso, vent), strict=True))
    idx = N_OBS_STATES * _ints(diabetic, "diabetic", 2)
    for name, v in values.items():
        idx = idx + _BASES[name] * _ints(v, name, _LEVELS[name])
    return idx


def _check_ids(ids: object, n: int, what: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or np.any(ids < 0) or np.any(ids >= n):
        raise DataError(
            f"{what} ids out of range",
            expected=f"integers in [0, {n})",
            found=ids if ids.size <= 8 else f"{ids.dtype} array, range [{ids.min()}, {ids.max()}]",
        )
    return ids.astype(np.int64)


def decode(ids: object) -> dict[str, np.ndarray]:
    """Category codes of full state ids (inverse of :func:`encode`).

    Shape:
        ids: any integer shape. Output: ``{"hr", "sbp", "o2", "glucose", "abx", "vaso", "vent",
        "diabetic"}`` arrays of that shape.
    """
    ids = _check_ids(ids, N_FULL_STATES, "full state")
    out = {name: (ids // _BASES[name]) % _LEVELS[name] for name in _STATE_VARS}
    out["diabetic"] = ids // N_OBS_STATES
    return out


def observed_state(full_ids: object) -> np.ndarray:
    """The observed state id (``0..719``, diabetes hidden) of full state ids."""
    return _check_ids(full_ids, N_FULL_STATES, "full state") % N_OBS_STATES


def encode_action(abx: object, vaso: object, vent: object) -> np.ndarray:
    """Action ids ``4 abx + 2 vent + vaso`` (the original's ``Action.get_action_idx``)."""
    return 4 * _ints(abx, "abx", 2) + 2 * _ints(vent, "vent", 2) + _ints(vaso, "vaso", 2)


def decode_action(ids: object) -> dict[str, np.ndarray]:
    """``{"abx", "vaso", "vent"}`` on/off codes of action ids (inverse of :func:`encode_action`)."""
    ids = _check_ids(ids, N_ACTIONS, "action")
    return {name: (ids // base) % 2 for name, base in _ACTION_BASES.items()}


def n_abnormal(codes: dict[str, np.ndarray]) -> np.ndarray:
    """Number of abnormal vitals (0..4) of decoded states."""
    return sum((codes[v] != n).astype(np.int64) for v, n in _NORMAL.items())


# -- exact dynamics --------------------------------------------------------------------------
def _move(n: int, *moves: tuple[int, int, float]) -> np.ndarray:
    """``(n, n)`` kernel: identity except level ``frm`` goes to ``to`` w.p. ``p``."""
    m = np.eye(n)
    for frm, to, p in moves:
        m[frm, frm] -= p
        m[frm, to] += p
    return m


def _fluctuate(n: int, p: float) -> np.ndarray:
    """``(n, n)`` kernel: down one level w.p. ``p``, up one w.p. ``p``, clipped at the ends."""
    m = np.zeros((n, n))
    for i in range(n):
        m[i, max(i - 1, 0)] += p
        m[i, min(i + 1, n - 1)] += p
        m[i, i] += 1.0 - 2.0 * p
    return m


Mode = Literal["on", "stop", "none"]


def _mode(before: int, action: int) -> Mode:
    """A treatment is switched ``on`` (given this step), ``stop``-ped (was on) or ``none``."""
    return "on" if action else ("stop" if before else "none")


def _vital_kernels(
    cfg: SepsisConfig, diabetic: int, abx: Mode, vaso: Mode, vent: Mode
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-vital next-level kernels ``(hr 3x3, sbp 3x3, o2 2x2, glucose 5x5)`` of one step."""
    eye3 = np.eye(3)
    fluct3, fluct2 = _fluctuate(3, cfg.vital_fluctuation), _fluctuate(2, cfg.vital_fluctuation)
    abx_k: dict[Mode, np.ndarray] = {
        "on": _move(3, (2, 1, cfg.abx_on_high_to_normal)),
        "stop": _move(3, (1, 2, cfg.abx_off_normal_to_high)),
        "none": eye3,
    }
    vent_k: dict[Mode, np.ndarray] = {
        "on": _move(2, (0, 1, cfg.vent_on_low_to_normal)),
        "stop": _move(2, (1, 0, cfg.vent_off_normal_to_low)),
        "none": fluct2,
    }
    if diabetic:
        vaso_on = _move(
            3,
            (0, 1, cfg.vaso_on_diabetic_low_to_normal),
            (0, 2, cfg.vaso_on_diabetic_low_to_high),
            (1, 2, cfg.vaso_on_diabetic_normal_to_high),
        )
        drop = cfg.vaso_off_drop_diabetic
        glucose_on = _move(5, *((g, g + 1, cfg.vaso_on_diabetic_glucose_up) for g in range(4)))
        glucose_fluct = _fluctuate(5, cfg.glucose_fluctuation_diabetic)
    else:
        vaso_on = _move(3, (0, 1, cfg.vaso_on_raise), (1, 2, cfg.vaso_on_raise))
        drop = cfg.vaso_off_drop
        glucose_on = np.eye(5)
        glucose_fluct = _fluctuate(5, cfg.glucose_fluctuation)
    vaso_k: dict[Mode, np.ndarray] = {
        "on": vaso_on,
        "stop": _move(3, (1, 0, drop), (2, 1, drop)),
        "none": eye3,
    }
    hr = abx_k[abx] if abx != "none" else fluct3
    sbp_fluct = fluct3 if (abx, vaso) == ("none", "none") else eye3
    sbp = abx_k[abx] @ vaso_k[vaso] @ sbp_fluct
    frozen = vaso == "on" and cfg.vaso_on_freezes_glucose
    glucose = (glucose_on if vaso == "on" else np.eye(5)) @ (np.eye(5) if frozen else glucose_fluct)
    return hr, sbp, vent_k[vent], glucose


def _transitions(cfg: SepsisConfig) -> np.ndarray:
    r"""``(1440, 8, 1440)`` exact transition probabilities of the live dynamics.

    For each diabetes status, treatment flags before the step and action, the ``(90, 90)`` block
    over the vitals is the outer product of the four per-vital kernels; the treatment flags
    after the step are the action's bits and diabetes never changes.
    """
    # axes: diabetic, vitals, treatments before | action | diabetic', vitals', treatments after
    P = np.zeros((2, 90, 8, N_ACTIONS, 2, 90, 8))
    for d in range(2):
        for t in range(8):
            before = {"abx": t // 4, "vaso": (t // 2) % 2, "vent": t % 2}
            for a in range(N_ACTIONS):
                act = {name: (a // base) % 2 for name, base in _ACTION_BASES.items()}
                modes = {k: _mode(before[k], act[k]) for k in before}
                hr, sbp, o2, glu = _vital_kernels(cfg, d, **modes)
                block = np.einsum("ae,bf,cg,dh->abcdefgh", hr, sbp, o2, glu).reshape(90, 90)
                after = 4 * act["abx"] + 2 * act["vaso"] + act["vent"]
                P[d, :, t, a, d, :, after] = block
    return P.reshape(N_FULL_STATES, N_ACTIONS, N_FULL_STATES)


def _initial_distribution(cfg: SepsisConfig, terminal: np.ndarray) -> np.ndarray:
    """``(1440,)`` d0: the product of the initial marginals, treatments off, terminal removed."""
    c = decode(np.arange(N_FULL_STATES))
    glucose = np.where(
        c["diabetic"] == 1,
        np.asarray(cfg.init_glucose_diabetic)[c["glucose"]],
        np.asarray(cfg.init_glucose)[c["glucose"]],
    )
    p = (
        np.where(c["diabetic"] == 1, cfg.p_diabetes, 1.0 - cfg.p_diabetes)
        * np.asarray(cfg.init_hr)[c["hr"]]
        * np.asarray(cfg.init_sbp)[c["sbp"]]
        * np.asarray(cfg.init_o2)[c["o2"]]
        * glucose
        * ((c["abx"] == 0) & (c["vaso"] == 0) & (c["vent"] == 0))
        * ~terminal
    )
    if not cfg.resample_diabetes_on_reject:  # reject within each diabetes group
        for d, w in ((0, 1.0 - cfg.p_diabetes), (1, cfg.p_diabetes)):
            group = c["diabetic"] == d
            if p[group].sum() > 0:
                p[group] *= w / p[group].sum()
    return p / p.sum()


# -- observation features --------------------------------------------------------------------
def _vitals_features(ids: np.ndarray, observed: bool) -> np.ndarray:
    c = decode(ids)
    names = _STATE_VARS if observed else (*_STATE_VARS, "diabetic")
    return np.stack([c[n] for n in names], axis=-1).astype(np.float32)


def _onehot_features(ids: np.ndarray, observed: bool) -> np.ndarray:
    n = N_OBS_STATES if observed else N_FULL_STATES
    col = observed_state(ids) if observed else ids
    x = np.zeros((len(ids), n), dtype=np.float32)
    x[np.arange(len(ids)), col] = 1.0
    return x


_FEATURES: dict[str, Callable[[np.ndarray, bool], np.ndarray]] = {
    "vitals": _vitals_features,
    "onehot": _onehot_features,
}


def _feature_names(kind: ObsKind, observed: bool) -> tuple[str, ...]:
    if kind == "vitals":
        return _STATE_VARS if observed else (*_STATE_VARS, "diabetic")
    n = N_OBS_STATES if observed else N_FULL_STATES
    return tuple(f"{'obs' if observed else 'full'}_state_{i}" for i in range(n))


# -- the environment -------------------------------------------------------------------------
def _policy_iteration(
    mdp: TabularMDP, gamma: float, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact optimal stationary policy of ``mdp`` under discount ``gamma``, infinite horizon.

    Howard's policy iteration on the live (non-terminal) states, whose values solve
    :math:`(I - \gamma P^{\pi}_{LL}) V_L = R^{\pi}_L` (terminal values are 0), then
    :math:`Q = R + \gamma P_{\cdot L} V_L` and a greedy improvement that keeps the current action
    on ties (within 1e-12), so the loop stops.

    Shape:
        Output ``pi (S, A)`` one-hot (terminal rows: action 0), ``Q (S, A)`` (:math:`= Q^*`;
        zero rows for terminal states).
    """
    live = ~mdp.terminal
    P = mdp.P[live][:, :, live]  # (L, A, L)
    R = mdp.R[live]
    L, A = R.shape
    rows = np.arange(L)
    act = R.argmax(1)
    for it in range(max_iter):
        v = np.linalg.solve(np.eye(L) - gamma * P[rows, act], R[rows, act])
        q = R + gamma * P @ v
        keep = q[rows, act] >= q.max(1) - 1e-12
        new = np.where(keep, act, q.argmax(1))
        if np.array_equal(new, act):
            log.debug("policy iteration converged after %d improvements", it)
            pi = np.zeros((mdp.n_states, A))
            pi[:, 0] = 1.0
            pi[live] = np.eye(A)[act]
            Q = np.zeros((mdp.n_states, A))
            Q[live] = q
            return pi, Q
        act = new
    raise DataError(
        "policy iteration did not converge",
        expected=f"a stable policy within {max_iter} improvements",
        found="a policy still changing",
    )


@dataclass(frozen=True, eq=False)
class SepsisMDP:
    """The full-state sepsis MDP with its codes, features, reference policies and simulator.

    Shape:
        ``mdp.P`` ``(1440, 8, 1440)``, ``mdp.R3`` ``(1440, 8, 1440)`` (reward -1/0/+1 of entering
        each state), ``mdp.R`` ``(1440, 8)``, ``mdp.d0`` and ``mdp.terminal`` ``(1440,)``.
        Policies are ``(1440, 8)`` (full state) or ``(720, 8)`` (observed state, applied to
        both diabetes values) row-stochastic arrays, or a name in ``optimal | physician |
        random``.
    """

    config: SepsisConfig
    """The constants the MDP was built from."""
    mdp: TabularMDP
    """Full-state MDP (gamma, horizon from the config); its terminal states absorb."""
    death: np.ndarray = field(repr=False)
    """``(1440,)`` bool: at least 3 abnormal vitals (entering one pays -1)."""
    discharge: np.ndarray = field(repr=False)
    """``(1440,)`` bool: all vitals normal and all treatments off (entering one pays +1)."""

    encode = staticmethod(encode)
    decode = staticmethod(decode)
    observed_state = staticmethod(observed_state)
    n_states = N_FULL_STATES
    n_obs_states = N_OBS_STATES
    n_actions = N_ACTIONS

    # -- features --------------------------------------------------------------------------
    def features(
        self, full_ids: object, observed: bool = True, kind: ObsKind | None = None
    ) -> np.ndarray:
        """Features of full state ids: observed (diabetes dropped) or full.

        Shape:
            full_ids ``(N,)``. Output ``(N, 7)`` / ``(N, 8)`` category codes for ``vitals``
            (names from :meth:`feature_names`), ``(N, 720)`` / ``(N, 1440)`` for ``onehot``.
        """
        kind = kind or self.config.obs
        if kind not in _FEATURES:
            raise ConfigError("unknown feature kind", expected=sorted(_FEATURES), found=kind)
        ids = _check_ids(np.atleast_1d(full_ids), N_FULL_STATES, "full state")
        return _FEATURES[kind](ids, observed)

    def feature_names(self, observed: bool = True, kind: ObsKind | None = None) -> tuple[str, ...]:
        """Column names of :meth:`features`."""
        return _feature_names(kind or self.config.obs, observed)

    # -- policies --------------------------------------------------------------------------
    @cached_property
    def _optimal(self) -> tuple[np.ndarray, np.ndarray]:
        return _policy_iteration(self.mdp, self.config.policy_gamma)

    def optimal_policy(self) -> np.ndarray:
        r"""``(1440, 8)`` one-hot optimal policy of the full MDP at ``policy_gamma`` (infinite
        horizon, stationary; it sees diabetes). Terminal rows pick action 0 (never used)."""
        return self._optimal[0].copy()

    def optimal_q(self) -> np.ndarray:
        r"""``(1440, 8)`` optimal action values :math:`Q^*` at ``policy_gamma``."""
        return self._optimal[1].copy()

    def physician_policy(self) -> np.ndarray:
        r"""``(1440, 8)`` epsilon-greedy optimal policy:
        :math:`\pi(a|s) = (1-\epsilon)[a = a^*(s)] + \tfrac{\epsilon}{7}[a \ne a^*(s)]`."""
        eps = self.config.physician_epsilon
        star = self._optimal[0]
        return (1.0 - eps) * star + eps / (N_ACTIONS - 1) * (1.0 - star)

    def random_policy(self) -> np.ndarray:
        """``(1440, 8)`` uniform policy."""
        return uniform_policy(N_FULL_STATES, N_ACTIONS)

    def full_policy(self, policy: Policy) -> np.ndarray:
        """A ``(1440, 8)`` policy from a name, a full-state or an observed-state policy."""
        if isinstance(policy, str):
            named: dict[str, Callable[[], np.ndarray]] = {
                "optimal": self.optimal_policy,
                "physician": self.physician_policy,
                "random": self.random_policy,
            }
            if policy not in named:
                raise ConfigError("unknown policy name", expected=sorted(named), found=policy)
            return named[policy]()
        pi = np.asarray(policy, dtype=np.float64)
        if pi.shape == (N_OBS_STATES, N_ACTIONS):
            return np.tile(pi, (2, 1))  # full id = 720 diabetic + observed id
        if pi.shape != (N_FULL_STATES, N_ACTIONS):
            raise DataError(
                "a sepsis policy must give action probabilities per state",
                expected=f"({N_FULL_STATES}, 8) full-state or ({N_OBS_STATES}, 8) observed-state",
                found=pi.shape,
            )
        return pi

    # -- exact values ----------------------------------------------------------------------
    def value(self, policy: Policy) -> float:
        r"""Exact :math:`J(\pi)` (``gamma``, ``horizon`` of the config) on the full MDP."""
        return self.mdp.policy_value(self.full_policy(policy))

    def optimal_value(self) -> float:
        r"""The best value of any (non-stationary, full-state) policy over ``horizon`` steps,
        :math:`\sum_s d_0(s) \max_a Q^*_H(s, a)`; an upper bound of :meth:`value`."""
        return self.mdp.optimal_value()

    def diabetic_fraction(self) -> float:
        """Exact share of diabetic patients under the initial distribution."""
        return float(self.mdp.d0[N_OBS_STATES:].sum())

    # -- simulation ------------------------------------------------------------------------
    def simulate(
        self,
        policy: Policy,
        n_episodes: int,
        seed: int | np.random.Generator | None = None,
        observed: bool = True,
    ) -> Trajectories:
        """Roll out ``n_episodes`` patients of ``policy`` (acting on the full state).

        ``obs`` holds :meth:`features` of the observed state (``observed=True``: diabetes
        hidden, a POMDP with confounding) or of the full state. ``meta`` adds to
        :meth:`TabularMDP.sample`'s keys (``state``, ``next_state``: full ids; ``policy``;
        ``behaviour_proba``) the per-step ``observed_state`` and ``diabetic`` ``(N,)`` int64.

        Shape:
            Output: :class:`~clinfuse.rl.data.Trajectories` with ``n_actions = 8``.
        """
        pi = self.full_policy(policy)
        seed = self.config.seed if seed is None else seed
        kind = self.config.obs
        traj = self.mdp.sample(pi, n_episodes, seed, obs=lambda s: _FEATURES[kind](s, observed))
        state = traj.meta["state"]
        meta = {
            **traj.meta,
            "observed_state": state % N_OBS_STATES,
            "diabetic": state // N_OBS_STATES,
        }
        return replace(traj, feature_names=_feature_names(kind, observed), meta=meta)


def build_sepsis_mdp(config: SepsisConfig | None = None) -> SepsisMDP:
    """Build the exact full-state sepsis MDP (about 0.5 s; two dense ``(1440, 8, 1440)`` arrays)."""
    cfg = config or SepsisConfig()
    P = _transitions(cfg)
    codes = decode(np.arange(N_FULL_STATES))
    abnormal = n_abnormal(codes)
    off = (codes["abx"] == 0) & (codes["vaso"] == 0) & (codes["vent"] == 0)
    death = abnormal >= 3
    discharge = (abnormal == 0) & off
    terminal = death | discharge
    P[terminal] = 0.0
    P[terminal, :, terminal] = 1.0  # absorbing (never acted in)
    reward_in = discharge.astype(np.float64) - death.astype(np.float64)
    R3 = np.broadcast_to(reward_in, P.shape).copy()
    R3[terminal] = 0.0
    d0 = _initial_distribution(cfg, terminal)
    mdp = TabularMDP.from_transition_rewards(P, R3, d0, terminal, cfg.gamma, cfg.horizon)
    log.debug(
        "sepsis MDP: %d live, %d death, %d discharge states",
        int((~terminal).sum()),
        int(death.sum()),
        int(discharge.sum()),
    )
    return SepsisMDP(cfg, mdp, death, discharge)
