r"""Offline learners for discrete actions: D3QN, CQL(H), discrete BCQ and behaviour cloning.

Read top to bottom: the pure pieces of the losses (masked log-sum-exp, TD target, CQL term), the
networks, the shared training loop, then :class:`QLearner` (DQN / double / dueling / CQL),
:class:`BCQLearner` (Fujimoto et al. 2019), :class:`BCLearner` and the :data:`LEARNERS` registry.

Every learner trains on a :class:`~clinfuse.rl.data.Trajectories` by minibatch SGD. The whole
data set is moved to tensors once per :meth:`fit`; each step draws ``batch_size`` row indices
with a ``torch.Generator`` seeded from the config, so a run (and a resumed checkpoint) is
reproducible. Action masks (``Trajectories.mask``) are honoured everywhere an action is chosen or
summed over: in the arg-max of the TD target, in the CQL log-sum-exp, in the behaviour-cloning
softmax and in evaluation (:meth:`q_values` returns ``-inf`` for forbidden actions, and every
:meth:`policy` puts zero mass on them, as off-policy evaluation needs).

Checkpoints hold state dicts only (networks, optimizer, step, sampler RNG, config as a dict) and
load with ``torch.load(weights_only=True)``.

Example:
    >>> learner = make_learner("cql", obs_dim=4, n_actions=3, hidden=(8,), steps=0)
    >>> allowed = np.array([[1, 1, 0], [0, 1, 1]], bool)
    >>> learner.q_values(np.zeros((2, 4), np.float32), allowed)[0].tolist()[2]
    -inf
"""

from __future__ import annotations

import abc
import copy
import difflib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from clinfuse.core.config import build_config, config_to_dict
from clinfuse.core.errors import ConfigError, DataError, UnknownNameError, suggest
from clinfuse.core.loop import progress_enabled, resolve_device
from clinfuse.core.runs import atomic_torch_save
from clinfuse.rl.data import Trajectories

__all__ = [
    "LEARNERS",
    "BCConfig",
    "BCLearner",
    "BCQConfig",
    "BCQLearner",
    "LearnerSpec",
    "QConfig",
    "QLearner",
    "QNetwork",
    "cql_term",
    "make_learner",
    "masked_logsumexp",
    "next_state_value",
]

logger = logging.getLogger(__name__)

Callback = Callable[[Any, int], dict[str, float] | None]
"""``callback(learner, step)`` called during :meth:`fit`; a returned dict joins the history row."""

EVAL_CHUNK = 65_536
"""Rows per forward pass in :meth:`q_values` / :meth:`policy` (bounds memory on large inputs)."""


# ------------------------------------------------------------------------------------------
# Pure pieces of the losses
# ------------------------------------------------------------------------------------------
def masked_logsumexp(q: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Log-sum-exp over the allowed actions, :math:`\log \sum_{a \in M(s)} \exp q_a`.

    Shape:
        q ``(B, A)``; mask ``(B, A)`` bool or None (all allowed). Output ``(B,)``.

    Example:
        >>> q = torch.tensor([[1.0, 2.0, 3.0]])
        >>> masked_logsumexp(q, torch.tensor([[True, False, True]]))  # log(e + e^3)
        tensor([3.1269])
    """
    return (q if mask is None else q.masked_fill(~mask, float("-inf"))).logsumexp(dim=1)


def cql_term(q: Tensor, action: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""The CQL(H) regulariser (Kumar et al. 2020) for discrete actions, averaged over the batch.

    .. math::
        \mathcal{R}(\theta) = \mathbb{E}_{(s, a) \sim \mathcal{D}}
        \Big[\log \sum_{a' \in M(s)} \exp Q_\theta(s, a') - Q_\theta(s, a)\Big] \;\ge 0

    It pushes down the Q-values of every allowed action (softmax-weighted) and pushes up the
    logged one, so actions never seen in a state end up below the logged ones.

    Shape:
        q ``(B, A)`` all action values; action ``(B,)`` int64 logged actions; mask ``(B, A)`` bool
        or None. Output: scalar.

    Example:
        >>> q = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
        >>> cql_term(q, torch.tensor([0, 1]))  # log 2 in both rows
        tensor(0.6931)
    """
    logged = q.gather(1, action[:, None]).squeeze(1)
    return (masked_logsumexp(q, mask) - logged).mean()


def next_state_value(
    q_target: Tensor, q_online: Tensor | None = None, mask: Tensor | None = None
) -> Tensor:
    r"""Bootstrapped value of the next state, maximised over the allowed actions :math:`M(s')`.

    Double DQN (``q_online`` given; van Hasselt et al. 2016) picks the action with the online
    network and values it with the target network; plain DQN takes the target network's maximum:

    .. math::
        V(s') = Q_{\bar\theta}\big(s', \arg\max_{a' \in M(s')} Q_\theta(s', a')\big)
        \quad\text{or}\quad V(s') = \max_{a' \in M(s')} Q_{\bar\theta}(s', a').

    Shape:
        q_target, q_online ``(B, A)``; mask ``(B, A)`` bool or None. Output ``(B,)``.

    Example:
        >>> q_targ = torch.tensor([[1.0, 5.0, 2.0]])
        >>> q_on = torch.tensor([[0.0, 9.0, 3.0]])
        >>> allowed = torch.tensor([[True, False, True]])  # action 1 forbidden
        >>> next_state_value(q_targ, q_on, allowed), next_state_value(q_targ, None, allowed)
        (tensor([2.]), tensor([2.]))
    """
    if q_online is None:
        return (q_target if mask is None else q_target.masked_fill(~mask, float("-inf"))).amax(1)
    pick = q_online if mask is None else q_online.masked_fill(~mask, float("-inf"))
    return q_target.gather(1, pick.argmax(1, keepdim=True)).squeeze(1)


TD_LOSSES: dict[bool, Callable[[Tensor, Tensor], Tensor]] = {
    True: F.smooth_l1_loss,  # Huber with delta = 1
    False: F.mse_loss,
}
"""TD error by ``QConfig.huber``."""


# ------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------
def _check_all(rules: dict[str, tuple[bool, str]], config: Any) -> None:
    """Raise :class:`ConfigError` for the first key whose rule ``(ok, expected)`` fails."""
    for key, (ok, expected) in rules.items():
        if not ok:
            raise ConfigError(
                f"config key {key!r} is out of range",
                expected=expected,
                found=repr(getattr(config, key)),
                fix=f"--set {key}=<{expected}>",
            )


@dataclass(frozen=True)
class QConfig:
    """Offline Q-learning: (dueling) (double) DQN, optionally with CQL(H) (DeepEN: D3QN + CQL)."""

    hidden: tuple[int, ...] = (256, 256)
    """Widths of the ReLU MLP trunk [inferred: DeepEN's sizes were not published]."""
    dueling: bool = True
    """Dueling head Q = V + A - mean_a A (Wang et al. 2016); False gives a plain linear Q head."""
    double: bool = True
    """Double-DQN target (online arg-max, target value); False takes the target network's max."""
    cql_alpha: float = 0.0
    """Weight of the CQL(H) term; 0 is plain (D3)QN [inferred: DeepEN's alpha is unknown]."""
    gamma: float = 0.99
    """Discount factor [inferred]."""
    lr: float = 1e-4
    """Adam learning rate [inferred]."""
    batch_size: int = 256
    """Transitions per gradient step [inferred]."""
    steps: int = 10_000
    """Gradient steps per call of fit [inferred]."""
    target_update: Literal["hard", "polyak"] = "hard"
    """Target network update: copy every target_every steps, or Polyak averaging every step."""
    target_every: int = 1000
    """Steps between hard target copies [inferred]."""
    tau: float = 0.005
    """Polyak rate: target <- (1 - tau) target + tau online, when target_update='polyak'."""
    grad_clip: float | None = 10.0
    """Max global gradient norm; None disables clipping [inferred]."""
    huber: bool = True
    """Huber (smooth L1, delta 1) TD loss; False: squared error. Huber's fixed point is not the
    expected return once |TD error| > 1 (it lies between the targets' mean and median)."""
    q_clip: float | None = None
    """Raghu et al. 2017 bound c: TD targets clipped to [-c, c] and |Q(s,a)| > c penalised."""
    q_clip_weight: float = 1.0
    """Weight of the penalty mean(max(|Q(s,a)| - q_clip, 0)) [inferred]."""
    seed: int = 0
    """Seeds the network initialisation and the minibatch sampler."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1 or auto."""
    progress: bool = True
    """Show a tqdm progress bar during fit (CLINFUSE_PROGRESS=0 also hides it)."""
    log_every: int = 100
    """Steps averaged into one history row [inferred]."""
    eval_every: int = 0
    """Steps between calls of fit's callback (each adds a history row); 0: once at the end."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values out of range."""
        _check_all(
            {
                "hidden": (len(self.hidden) > 0 and min(self.hidden) > 0, "positive widths"),
                "gamma": (0.0 <= self.gamma <= 1.0, "a value in [0, 1]"),
                "cql_alpha": (self.cql_alpha >= 0.0, ">= 0"),
                "lr": (self.lr > 0.0, "> 0"),
                "batch_size": (self.batch_size >= 1, ">= 1"),
                "steps": (self.steps >= 0, ">= 0"),
                "target_update": (self.target_update in ("hard", "polyak"), "hard | polyak"),
                "target_every": (self.target_every >= 1, ">= 1"),
                "tau": (0.0 < self.tau <= 1.0, "a value in (0, 1]"),
                "grad_clip": (self.grad_clip is None or self.grad_clip > 0, "> 0 or none"),
                "q_clip": (self.q_clip is None or self.q_clip > 0, "> 0 or none"),
                "q_clip_weight": (self.q_clip_weight >= 0, ">= 0"),
                "log_every": (self.log_every >= 1, ">= 1"),
                "eval_every": (self.eval_every >= 0, ">= 0"),
            },
            self,
        )


@dataclass(frozen=True)
class BCQConfig(QConfig):
    """Discrete batch-constrained Q-learning (Fujimoto et al. 2019): Q over likely actions only."""

    threshold: float = 0.3
    """Actions with G(a|s) / max_a G(a|s) <= threshold are excluded (the paper's default)."""
    bc_weight: float = 1.0
    """Weight of the generative classifier's cross-entropy in the joint loss."""
    logit_reg: float = 1e-2
    """L2 penalty on the classifier's logits (Fujimoto et al.'s reference code)."""

    def validate(self) -> None:
        super().validate()
        _check_all(
            {
                "threshold": (0.0 <= self.threshold < 1.0, "a value in [0, 1)"),
                "bc_weight": (self.bc_weight > 0.0, "> 0"),
                "logit_reg": (self.logit_reg >= 0.0, ">= 0"),
            },
            self,
        )


@dataclass(frozen=True)
class BCConfig:
    """Behaviour cloning: an MLP classifier s -> a with masked logits (the clinician policy)."""

    hidden: tuple[int, ...] = (256, 256)
    """Widths of the ReLU MLP trunk [inferred]."""
    lr: float = 1e-3
    """Adam learning rate [inferred]."""
    weight_decay: float = 0.0
    """Adam (L2) weight decay."""
    batch_size: int = 256
    """Rows per gradient step."""
    steps: int = 2000
    """Gradient steps per call of fit [inferred]."""
    grad_clip: float | None = 10.0
    """Max global gradient norm; None disables clipping."""
    seed: int = 0
    """Seeds the network initialisation and the minibatch sampler."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1 or auto."""
    progress: bool = True
    """Show a tqdm progress bar during fit."""
    log_every: int = 100
    """Steps averaged into one history row."""
    eval_every: int = 0
    """Steps between calls of fit's callback; 0 calls it once at the end."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values out of range."""
        _check_all(
            {
                "hidden": (len(self.hidden) > 0 and min(self.hidden) > 0, "positive widths"),
                "lr": (self.lr > 0.0, "> 0"),
                "weight_decay": (self.weight_decay >= 0.0, ">= 0"),
                "batch_size": (self.batch_size >= 1, ">= 1"),
                "steps": (self.steps >= 0, ">= 0"),
                "grad_clip": (self.grad_clip is None or self.grad_clip > 0, "> 0 or none"),
                "log_every": (self.log_every >= 1, ">= 1"),
                "eval_every": (self.eval_every >= 0, ">= 0"),
            },
            self,
        )


# ------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------
def mlp(in_dim: int, hidden: Iterable[int]) -> nn.Sequential:
    """``Linear -> ReLU`` blocks; the output width is the last hidden width."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*layers)


class QNetwork(nn.Module):
    r"""MLP action-value network, optionally with a dueling head (Wang et al. 2016).

    .. math::
        Q(s, a) = V(s) + A(s, a) - \frac{1}{|\mathcal{A}|} \sum_{a'} A(s, a')

    The mean runs over **all** actions, also where a mask forbids some: the constraint only makes
    V and A identifiable, and forbidden actions are excluded later (targets, CQL, evaluation).

    Shape:
        x ``(B, obs_dim)``. Output ``(B, n_actions)``.
    """

    def __init__(
        self, obs_dim: int, n_actions: int, hidden: Iterable[int] = (256, 256), dueling: bool = True
    ) -> None:
        super().__init__()
        hidden = tuple(hidden)
        self.dueling = dueling
        self.trunk = mlp(obs_dim, hidden)
        width = hidden[-1] if hidden else obs_dim
        self.head = nn.Linear(width, n_actions)  # the advantage stream when dueling
        self.value = nn.Linear(width, 1) if dueling else None

    def streams(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(V (B, 1), A (B, n_actions))`` before centring; V is zero without a dueling head."""
        h = self.trunk(x)
        adv = self.head(h)
        value = self.value(h) if self.value is not None else adv.new_zeros(len(adv), 1)
        return value, adv

    def forward(self, x: Tensor) -> Tensor:
        if self.value is None:
            return self.head(self.trunk(x))
        value, adv = self.streams(x)
        return value + adv - adv.mean(dim=1, keepdim=True)


class PolicyNetwork(nn.Module):
    """MLP classifier returning action logits (behaviour cloning, BCQ's generative model).

    Shape:
        x ``(B, obs_dim)``. Output ``(B, n_actions)`` logits.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Iterable[int] = (256, 256)) -> None:
        super().__init__()
        hidden = tuple(hidden)
        self.trunk = mlp(obs_dim, hidden)
        self.head = nn.Linear(hidden[-1] if hidden else obs_dim, n_actions)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


def _masked(logits: Tensor, mask: Tensor | None) -> Tensor:
    return logits if mask is None else logits.masked_fill(~mask, float("-inf"))


def _softmax_policy(q: Tensor, allowed: Tensor, temperature: float, epsilon: float) -> Tensor:
    r""":math:`\pi(a|s) \propto \exp(Q(s,a)/T)` over the allowed actions."""
    return torch.softmax(q / temperature, dim=1)  # q is -inf where not allowed


def _epsilon_policy(q: Tensor, allowed: Tensor, temperature: float, epsilon: float) -> Tensor:
    r""":math:`(1-\epsilon)` on the greedy action plus :math:`\epsilon` uniform over the allowed."""
    uniform = allowed.float() / allowed.sum(1, keepdim=True)
    greedy = F.one_hot(q.argmax(1), q.shape[1]).float()
    return (1.0 - epsilon) * greedy + epsilon * uniform


POLICIES: dict[str, Callable[[Tensor, Tensor, float, float], Tensor]] = {
    "softmax": _softmax_policy,
    "epsilon": _epsilon_policy,
}
"""Soft policies derived from Q-values, by ``policy(kind=...)``."""


# ------------------------------------------------------------------------------------------
# Shared machinery: inputs, the training loop, checkpoints
# ------------------------------------------------------------------------------------------
class _OfflineLearner(abc.ABC):
    """Shared parts: input checks, the minibatch loop, policies and state dicts.

    Subclasses build their networks in ``__init__`` (under :meth:`_seeded`), list them in
    ``_modules()``, and implement ``_tensors(traj)`` (device tensors of the data set),
    ``_loss(batch) -> (loss, stats)`` and ``_scores(x, mask)`` (``-inf`` where not allowed).
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type] = QConfig

    def __init__(self, config: Any, obs_dim: int, n_actions: int) -> None:
        if obs_dim < 1 or n_actions < 1:
            raise ConfigError(
                "obs_dim and n_actions must be positive",
                expected=">= 1",
                found=f"obs_dim={obs_dim}, n_actions={n_actions}",
            )
        self.config = config
        self.obs_dim = int(obs_dim)
        self.n_actions = int(n_actions)
        self.device = resolve_device(config.device)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.step = 0
        self._data: tuple[Trajectories, dict[str, Tensor]] | None = None

    # -- to implement ----------------------------------------------------------------------
    @abc.abstractmethod
    def _modules(self) -> dict[str, nn.Module]:
        """Implemented by each learner (see the class docstring)."""

    @abc.abstractmethod
    def _tensors(self, traj: Trajectories) -> dict[str, Tensor]:
        """Implemented by each learner (see the class docstring)."""

    @abc.abstractmethod
    def _loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Implemented by each learner (see the class docstring)."""

    @abc.abstractmethod
    def _scores(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Implemented by each learner (see the class docstring)."""

    def _after_step(self) -> None:
        """Hook run after each optimizer step (target-network updates); none by default."""
        return None

    # -- construction helpers --------------------------------------------------------------
    def _seeded(self, build: Callable[[], nn.Module], offset: int = 0) -> nn.Module:
        """Build a module from ``config.seed + offset`` without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + offset)
            return build().to(self.device)

    def _make_optimizer(self, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        params = [p for m in self._trainable() for p in m.parameters()]
        return torch.optim.Adam(
            params,
            lr=self.config.lr,
            weight_decay=weight_decay,
            fused=self.device.type in ("cpu", "cuda"),  # one kernel for all parameters
        )

    def _trainable(self) -> list[nn.Module]:
        return [m for k, m in self._modules().items() if k != "target"]

    # -- inputs ----------------------------------------------------------------------------
    def _check_traj(self, traj: Trajectories) -> None:
        if not isinstance(traj, Trajectories):
            raise DataError(
                "fit needs a Trajectories",
                expected="clinfuse.rl.data.Trajectories",
                found=type(traj).__name__,
                fix="build one with Trajectories(obs=..., action=..., ...)",
            )
        if traj.obs_dim != self.obs_dim or traj.n_actions != self.n_actions:
            raise DataError(
                "trajectories do not match the learner's dimensions",
                expected=f"obs dim {self.obs_dim}, {self.n_actions} actions",
                found=f"obs dim {traj.obs_dim}, {traj.n_actions} actions",
                fix="build the learner with the data set's obs_dim and n_actions",
            )
        if len(traj) == 0:
            raise DataError("no steps to learn from", expected=">= 1 step", found="0 steps")

    def _as_obs(self, obs: np.ndarray | Tensor) -> Tensor:
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise DataError(
                "observations must be a (N, obs_dim) array",
                expected=f"(N, {self.obs_dim})",
                found=tuple(x.shape),
            )
        return x

    def _as_mask(self, mask: np.ndarray | Tensor | None, n: int) -> Tensor | None:
        if mask is None:
            return None
        m = torch.as_tensor(mask, device=self.device).bool()
        if tuple(m.shape) != (n, self.n_actions):
            raise DataError(
                "the action mask must be (N, n_actions)",
                expected=(n, self.n_actions),
                found=tuple(m.shape),
            )
        empty = torch.nonzero(~m.any(1))
        if len(empty):
            raise DataError(
                f"the action mask forbids every action in row {int(empty[0])}",
                expected="at least one allowed action per row",
                found="an all-False mask row",
            )
        return m

    @torch.no_grad()
    def _scores_np(self, obs: np.ndarray | Tensor, mask: np.ndarray | Tensor | None) -> Tensor:
        """``_scores`` over ``obs`` in chunks, in eval mode; ``(N, A)`` on the device."""
        x = self._as_obs(obs)
        m = self._as_mask(mask, len(x))
        for mod in self._modules().values():
            mod.eval()
        chunks = [
            self._scores(x[i : i + EVAL_CHUNK], None if m is None else m[i : i + EVAL_CHUNK])
            for i in range(0, len(x), EVAL_CHUNK)
        ]
        return torch.cat(chunks) if chunks else x.new_zeros(0, self.n_actions)

    def greedy(
        self, obs: np.ndarray | Tensor, mask: np.ndarray | Tensor | None = None
    ) -> np.ndarray:
        """``(N,)`` int64 arg-max action among the allowed ones."""
        return self._scores_np(obs, mask).argmax(1).cpu().numpy()

    # -- training loop ---------------------------------------------------------------------
    def fit(
        self, traj: Trajectories, callback: Callback | None = None, *, steps: int | None = None
    ) -> list[dict[str, float]]:
        """Train for ``steps`` (default ``config.steps``) more gradient steps on ``traj``.

        Returns the history: one row per ``log_every`` steps (losses averaged over the window),
        plus a row at each callback call and at the last step. ``callback(learner, step)`` runs
        every ``eval_every`` steps (once at the end when 0); a dict it returns joins the row.
        """
        self._check_traj(traj)
        cfg = self.config
        steps = cfg.steps if steps is None else int(steps)
        if self._data is None or self._data[0] is not traj:  # fit in chunks: convert once
            # (the tensors of the last data set are kept, and released by a fit on another)
            self._data = (traj, self._tensors(traj))
        data = self._data[1]
        n = len(traj)
        params = [p for m in self._trainable() for p in m.parameters()]
        history: list[dict[str, float]] = []
        window: list[Tensor] = []
        names: list[str] = []
        for mod in self._trainable():
            mod.train()
        bar = tqdm(
            range(steps),
            disable=not progress_enabled(cfg.progress),
            desc=type(self).__name__,
            leave=False,
        )
        for i in bar:
            idx = torch.randint(n, (cfg.batch_size,), device=self.device, generator=self.generator)
            batch = {k: v.index_select(0, idx) for k, v in data.items()}
            loss, stats = self._loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
            self.optimizer.step()
            self.step += 1
            self._after_step()
            names = list(stats)
            window.append(torch.stack([s.detach() for s in stats.values()]))

            last = i == steps - 1
            evaluate = callback is not None and (
                self.step % cfg.eval_every == 0 if cfg.eval_every else last
            )
            if self.step % cfg.log_every == 0 or evaluate or last:
                row: dict[str, float] = {"step": self.step}
                row.update(zip(names, torch.stack(window).mean(0).tolist(), strict=True))
                window.clear()
                if evaluate:
                    row.update(callback(self, self.step) or {})  # type: ignore[misc]
                    for mod in self._trainable():
                        mod.train()
                history.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4g}")
                logger.debug("%s step %d: %s", type(self).__name__, self.step, row)
        return history

    # -- checkpoints -----------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimizer, step, sampler RNG and the config (as a dict)."""
        return {
            "learner": type(self).__name__,
            "config": config_to_dict(self.config),
            "obs_dim": self.obs_dim,
            "n_actions": self.n_actions,
            "modules": {k: m.state_dict() for k, m in self._modules().items()},
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "rng": self.generator.get_state(),
            **self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (dimensions must match)."""
        if (state["obs_dim"], state["n_actions"]) != (self.obs_dim, self.n_actions):
            raise DataError(
                "the checkpoint does not match the learner's dimensions",
                expected=f"obs dim {self.obs_dim}, {self.n_actions} actions",
                found=f"obs dim {state['obs_dim']}, {state['n_actions']} actions",
                fix="build the learner from the checkpoint with load(path)",
            )
        for k, m in self._modules().items():
            m.load_state_dict(state["modules"][k])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.generator.set_state(state["rng"].cpu())
        self._load_extra_state(state)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` atomically with ``torch.save``."""
        return atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> Any:
        """Rebuild a learner from :meth:`save` (``torch.load(weights_only=True)``)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("learner") != cls.__name__:
            raise DataError(
                f"{path} is not a {cls.__name__} checkpoint",
                expected=cls.__name__,
                found=state.get("learner"),
                fix=f"load it with {state.get('learner')}.load(path)",
            )
        values = dict(state["config"])
        if device is not None:
            values["device"] = device
        config = build_config(cls.config_cls, values, source=str(path))
        learner = cls(config, state["obs_dim"], state["n_actions"])
        learner.load_state_dict(state)
        return learner


# ------------------------------------------------------------------------------------------
# Q-learning: DQN, double, dueling, CQL(H)
# ------------------------------------------------------------------------------------------
class QLearner(_OfflineLearner):
    r"""Offline (dueling) (double) DQN with an optional CQL(H) term: DeepEN's D3QN + CQL.

    Loss on a minibatch of logged transitions :math:`(s, a, r, s', b)` (``b = 0`` at an
    episode's end) with allowed-action sets :math:`M(s), M(s')`:

    .. math::
        y = r + \gamma\, b\, Q_{\bar\theta}\big(s', \arg\max_{a' \in M(s')} Q_\theta(s', a')\big)
        \qquad(\text{double; else } r + \gamma\, b \max_{a' \in M(s')} Q_{\bar\theta}(s', a'))

    .. math::
        \mathcal{L}(\theta) = \mathbb{E}\big[\ell_\text{Huber}(Q_\theta(s, a) - y)\big]
        + \alpha\, \mathbb{E}\Big[\log \sum_{a' \in M(s)} e^{Q_\theta(s, a')}
        - Q_\theta(s, a)\Big]
        + \lambda\, \mathbb{E}\big[\max(|Q_\theta(s, a)| - c, 0)\big]

    with :math:`\alpha` = ``cql_alpha`` (CQL(H), Kumar et al. 2020), and the last term only when
    ``q_clip`` = :math:`c` is set (then :math:`y` is clipped to :math:`[-c, c]`; Raghu et al.
    2017), :math:`\lambda` = ``q_clip_weight``. :math:`\bar\theta` is the target network.

    History rows: ``step, loss, td, cql, mean_q`` (``mean_q`` = mean :math:`Q_\theta(s, a)` on
    the logged actions).
    """

    name = "dqn"
    config_cls = QConfig

    def __init__(self, config: QConfig, obs_dim: int, n_actions: int) -> None:
        super().__init__(config, obs_dim, n_actions)
        self.model = self._seeded(
            lambda: QNetwork(obs_dim, n_actions, config.hidden, config.dueling)
        )
        self.target = copy.deepcopy(self.model).requires_grad_(False)
        self._td_loss = TD_LOSSES[config.huber]
        self._build_extra()
        self.optimizer = self._make_optimizer()

    def _build_extra(self) -> None:
        """Hook for subclasses: more networks, built before the optimizer."""

    def _modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "target": self.target}

    def _tensors(self, traj: Trajectories) -> dict[str, Tensor]:
        t = traj.transitions()
        keys = ["obs", "action", "reward", "next_obs", "bootstrap"]
        if traj.mask is not None:  # without a mask, skip the masking work entirely
            t = {**t, "mask": traj.allowed()}
            keys += ["mask", "next_mask"]
        return {k: torch.as_tensor(t[k], device=self.device) for k in keys}

    # -- the loss ----------------------------------------------------------------------------
    def _next_allowed(self, next_obs: Tensor, next_mask: Tensor | None) -> Tensor | None:
        """Actions the target may pick in ``s'`` (the mask; BCQ narrows it)."""
        return next_mask

    @torch.no_grad()
    def _target(self, batch: dict[str, Tensor]) -> Tensor:
        cfg = self.config
        next_obs = batch["next_obs"]
        allowed = self._next_allowed(next_obs, batch.get("next_mask"))
        q_online = self.model(next_obs) if cfg.double else None
        v_next = next_state_value(self.target(next_obs), q_online, allowed)
        y = batch["reward"] + cfg.gamma * batch["bootstrap"] * v_next
        return y if cfg.q_clip is None else y.clamp(-cfg.q_clip, cfg.q_clip)

    def _loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        q_all = self.model(batch["obs"])
        q = q_all.gather(1, batch["action"][:, None]).squeeze(1)
        td = self._td_loss(q, self._target(batch))
        loss = td
        if cfg.cql_alpha > 0:
            cql = cql_term(q_all, batch["action"], batch.get("mask"))
            loss = loss + cfg.cql_alpha * cql
        else:
            cql = td.new_zeros(())
        if cfg.q_clip is not None:
            loss = loss + cfg.q_clip_weight * (q.abs() - cfg.q_clip).clamp_min(0).mean()
        return loss, {"loss": loss, "td": td, "cql": cql, "mean_q": q.mean()}

    @torch.no_grad()
    def _after_step(self) -> None:
        cfg = self.config
        if cfg.target_update == "polyak":
            for t, p in zip(self.target.parameters(), self.model.parameters(), strict=True):
                t.lerp_(p, cfg.tau)
        elif self.step % cfg.target_every == 0:
            for t, p in zip(self.target.parameters(), self.model.parameters(), strict=True):
                t.copy_(p)

    # -- evaluation --------------------------------------------------------------------------
    def _eval_allowed(self, x: Tensor, mask: Tensor | None) -> Tensor | None:
        """Actions the policy may take in ``x`` (the mask; BCQ narrows it)."""
        return mask

    def _scores(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return _masked(self.model(x), self._eval_allowed(x, mask))

    def q_values(
        self, obs: np.ndarray | Tensor, mask: np.ndarray | Tensor | None = None
    ) -> np.ndarray:
        """``(N, A)`` float32 Q-values, ``-inf`` for actions the mask forbids.

        Shape:
            obs ``(N, obs_dim)``; mask ``(N, A)`` bool or None. Output ``(N, A)``.
        """
        return self._scores_np(obs, mask).cpu().numpy()

    def policy(
        self,
        obs: np.ndarray | Tensor,
        mask: np.ndarray | Tensor | None = None,
        kind: Literal["softmax", "epsilon"] = "softmax",
        temperature: float = 1.0,
        epsilon: float = 0.01,
    ) -> np.ndarray:
        r"""``(N, A)`` action probabilities, zero on forbidden actions (for off-policy evaluation).

        ``softmax``: :math:`\pi(a|s) \propto \exp(Q(s,a)/T)` over the allowed actions;
        ``epsilon``: :math:`1-\epsilon` on the greedy action plus :math:`\epsilon` spread
        uniformly over the allowed actions.
        """
        if kind not in POLICIES:
            close = difflib.get_close_matches(str(kind), list(POLICIES), n=1)
            raise ConfigError(
                f"unknown policy kind {kind!r}",
                expected=" | ".join(POLICIES),
                found=repr(kind),
                fix=f"did you mean {close[0]!r}?" if close else "kind='softmax'",
            )
        if temperature <= 0 or not 0.0 <= epsilon <= 1.0:
            raise ConfigError(
                "policy needs temperature > 0 and epsilon in [0, 1]",
                expected="temperature > 0, 0 <= epsilon <= 1",
                found=f"temperature={temperature}, epsilon={epsilon}",
            )
        q = self._scores_np(obs, mask)
        probs = POLICIES[kind](q, torch.isfinite(q), temperature, epsilon)
        return probs.cpu().numpy()


# ------------------------------------------------------------------------------------------
# Discrete BCQ
# ------------------------------------------------------------------------------------------
class BCQLearner(QLearner):
    r"""Discrete batch-constrained deep Q-learning (Fujimoto, Conti, Ghavamzadeh, Pineau 2019).

    A generative classifier :math:`G_\omega(a|s)` is trained by cross-entropy on the logged
    actions; Q-learning (as :class:`QLearner`) then only considers the *supported* actions

    .. math::
        \tilde M(s) = \{a \in M(s) : G_\omega(a|s) / \max_{\hat a} G_\omega(\hat a|s) > \tau\}

    in the target's arg-max and in the greedy policy (:math:`\tau` = ``threshold``). Joint loss:
    the Q-learning loss above + ``bc_weight`` :math:`\cdot\,\mathrm{CE}(G_\omega(\cdot|s), a)`
    + ``logit_reg`` :math:`\cdot` mean squared logit. ``q_values`` returns ``-inf`` outside
    :math:`\tilde M(s)`, so ``greedy`` and ``policy`` never choose an unsupported action.
    """

    name = "bcq"
    config_cls = BCQConfig
    config: BCQConfig

    def _build_extra(self) -> None:
        cfg = self.config
        self.imitation = self._seeded(
            lambda: PolicyNetwork(self.obs_dim, self.n_actions, cfg.hidden), offset=1
        )

    def _modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "target": self.target, "imitation": self.imitation}

    def _support_from_logits(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        logp = torch.log_softmax(_masked(logits, mask), dim=1)
        keep = (logp - logp.amax(1, keepdim=True)).exp() > self.config.threshold
        return keep if mask is None else keep & mask

    def _next_allowed(self, next_obs: Tensor, next_mask: Tensor | None) -> Tensor:
        return self._support_from_logits(self.imitation(next_obs), next_mask)

    def _eval_allowed(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self._support_from_logits(self.imitation(x), mask)

    def _loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        loss, stats = super()._loss(batch)
        logits = self.imitation(batch["obs"])
        bc = F.cross_entropy(_masked(logits, batch.get("mask")), batch["action"])
        loss = loss + self.config.bc_weight * bc + self.config.logit_reg * logits.pow(2).mean()
        return loss, {**stats, "loss": loss, "bc": bc}

    @torch.no_grad()
    def behaviour_probs(
        self, obs: np.ndarray | Tensor, mask: np.ndarray | Tensor | None = None
    ) -> np.ndarray:
        """``(N, A)`` the generative model's :math:`G_\\omega(a|s)` (zero on forbidden actions)."""
        x = self._as_obs(obs)
        m = self._as_mask(mask, len(x))
        self.imitation.eval()
        return torch.softmax(_masked(self.imitation(x), m), dim=1).cpu().numpy()

    @torch.no_grad()
    def support(
        self, obs: np.ndarray | Tensor, mask: np.ndarray | Tensor | None = None
    ) -> np.ndarray:
        """``(N, A)`` bool: the actions BCQ may take, :math:`\\tilde M(s)`."""
        x = self._as_obs(obs)
        m = self._as_mask(mask, len(x))
        self.imitation.eval()
        return self._support_from_logits(self.imitation(x), m).cpu().numpy()


# ------------------------------------------------------------------------------------------
# Behaviour cloning
# ------------------------------------------------------------------------------------------
class BCLearner(_OfflineLearner):
    r"""Behaviour cloning: :math:`\pi_\phi(a|s) = \mathrm{softmax}_{a \in M(s)}(f_\phi(s)_a / T)`.

    Trained by cross-entropy on the logged actions with the logits of forbidden actions set to
    :math:`-\infty`:

    .. math::
        \mathcal{L}(\phi) = -\mathbb{E}_{(s, a) \sim \mathcal{D}}\Big[f_\phi(s)_a
        - \log \sum_{a' \in M(s)} e^{f_\phi(s)_{a'}}\Big]

    The temperature :math:`T` (1 after ``fit``) can be calibrated on held-out data by minimising
    the negative log-likelihood (Guo et al. 2017), e.g. before using :math:`\pi_\phi` as the
    behaviour policy :math:`\hat\pi_b` of importance sampling. History rows: ``step, loss,
    accuracy``.
    """

    name = "bc"
    config_cls = BCConfig
    config: BCConfig

    def __init__(self, config: BCConfig, obs_dim: int, n_actions: int) -> None:
        super().__init__(config, obs_dim, n_actions)
        self.model = self._seeded(lambda: PolicyNetwork(obs_dim, n_actions, config.hidden))
        self.temperature = 1.0
        self.optimizer = self._make_optimizer(config.weight_decay)

    def _modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def _tensors(self, traj: Trajectories) -> dict[str, Tensor]:
        data = {"obs": traj.obs, "action": traj.action}
        if traj.mask is not None:
            data["mask"] = traj.mask
        return {k: torch.as_tensor(v, device=self.device) for k, v in data.items()}

    def _loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logits = _masked(self.model(batch["obs"]), batch.get("mask"))
        loss = F.cross_entropy(logits, batch["action"])
        accuracy = (logits.argmax(1) == batch["action"]).float().mean()
        return loss, {"loss": loss, "accuracy": accuracy}

    def _scores(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return _masked(self.model(x), mask)

    def fit(
        self,
        traj: Trajectories,
        callback: Callback | None = None,
        *,
        steps: int | None = None,
        valid: Trajectories | None = None,
    ) -> list[dict[str, float]]:
        """Train (see :meth:`QLearner.fit`); given ``valid``, then calibrate the temperature."""
        history = super().fit(traj, callback, steps=steps)
        if valid is not None:
            self.calibrate(valid)
        return history

    @torch.no_grad()
    def calibrate(self, valid: Trajectories, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
        r"""Set :math:`T = \arg\min_T` NLL of ``valid``'s actions under :math:`\pi_\phi` (bounded).

        Returns the temperature.
        """
        from scipy.optimize import minimize_scalar

        self._check_traj(valid)
        logits = self._scores_np(valid.obs, valid.mask).double()
        action = torch.as_tensor(valid.action, device=logits.device)

        def nll(log_t: float) -> float:
            return float(F.cross_entropy(logits / float(np.exp(log_t)), action))

        res = minimize_scalar(nll, bounds=tuple(np.log(bounds)), method="bounded")
        self.temperature = float(np.exp(res.x))
        logger.info("BC temperature %.3f (valid NLL %.4f -> %.4f)", self.temperature,
                    nll(0.0), res.fun)  # fmt: skip
        return self.temperature

    def policy(
        self,
        obs: np.ndarray | Tensor,
        mask: np.ndarray | Tensor | None = None,
        temperature: float | None = None,
    ) -> np.ndarray:
        """``(N, A)`` action probabilities, zero on forbidden actions (``temperature`` defaults
        to the calibrated one)."""
        t = self.temperature if temperature is None else temperature
        if t <= 0:
            raise ConfigError("temperature must be positive", expected="> 0", found=t)
        return torch.softmax(self._scores_np(obs, mask) / t, dim=1).cpu().numpy()

    def _extra_state(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.temperature = float(state["temperature"])


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LearnerSpec:
    """A registered learner: its class, config overrides that define it, and one line of help."""

    cls: type[_OfflineLearner]
    defaults: dict[str, Any]
    description: str


LEARNERS: dict[str, LearnerSpec] = {
    "bc": LearnerSpec(BCLearner, {}, "behaviour cloning (clinician policy)"),
    "dqn": LearnerSpec(QLearner, {"cql_alpha": 0.0}, "dueling double DQN (D3QN)"),
    "cql": LearnerSpec(QLearner, {"cql_alpha": 1.0}, "D3QN + CQL(H), alpha 1 [inferred]"),
    "bcq": LearnerSpec(BCQLearner, {}, "discrete BCQ (Fujimoto et al. 2019)"),
}
"""Learners by name, for :func:`make_learner` and configs."""


def make_learner(
    name: str, obs_dim: int, n_actions: int, **config_overrides: Any
) -> QLearner | BCLearner:
    """A learner from the registry; overrides (values or ``--set``-style strings) are typed and
    validated against its config class.

    Example:
        >>> make_learner("cql", obs_dim=3, n_actions=2, steps="5").config.steps
        5
        >>> make_learner("cq1", 3, 2)
        Traceback (most recent call last):
        ...
        clinfuse.core.errors.UnknownNameError: unknown rl learner 'cq1'
          expected: one of: bc, bcq, cql, dqn
          found:    'cq1'
          fix:      did you mean: cql, bcq?
    """
    if name not in LEARNERS:
        raise UnknownNameError(
            f"unknown rl learner {name!r}",
            expected=f"one of: {', '.join(sorted(LEARNERS))}",
            found=repr(name),
            fix=suggest(name, LEARNERS, "see clinfuse.rl.LEARNERS"),
        )
    spec = LEARNERS[name]
    values = {**spec.defaults, **config_overrides}
    config = build_config(spec.cls.config_cls, values, source=f"make_learner({name!r})")
    return spec.cls(config, obs_dim, n_actions)
