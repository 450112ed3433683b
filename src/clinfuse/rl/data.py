"""Offline-RL trajectories: one row per decision step, episodes contiguous, validated on entry.

A :class:`Trajectories` holds flat arrays of ``N`` steps, sorted by patient and then by time;
each patient's steps form one episode. Step ``i`` observes ``obs[i]``, takes ``action[i]``,
receives ``reward[i]`` and, unless the episode ends there, moves to ``obs[i + 1]``. An episode
ends at a step with ``done`` (a terminal state, e.g. death or discharge: no bootstrapping) or
``timeout`` (the record stops, e.g. a 72-h cap: the state after it is unknown). Every episode
ends with exactly one of the two, at its last step and nowhere else.

Bad input raises :class:`~clinfuse.core.errors.DataError` naming the patient and step: time
going backwards, an episode without an end, action ids outside ``[0, n_actions)``, NaN in
rewards or states, a mask that forbids every action, or an action the mask forbids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from clinfuse.core.errors import DataError

__all__ = ["Trajectories"]


@dataclass(frozen=True, eq=False)
class Trajectories:
    """Logged decision steps of many patients (see the module docstring).

    Shape:
        obs ``(N, D)`` float32; action ``(N,)`` int64; reward ``(N,)`` float32; done, timeout
        ``(N,)`` bool; patient ``(N,)`` int64; time ``(N,)`` float64 (hours); mask ``(N, A)``
        bool or None (all actions allowed).
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    timeout: np.ndarray
    patient: np.ndarray
    time: np.ndarray
    n_actions: int
    mask: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cast = {
            "obs": np.float32,
            "action": np.int64,
            "reward": np.float32,
            "done": bool,
            "timeout": bool,
            "patient": np.int64,
            "time": np.float64,
        }
        for name, dtype in cast.items():
            object.__setattr__(
                self, name, np.asarray(getattr(self, name)).astype(dtype, copy=False)
            )
        if self.mask is not None:
            object.__setattr__(self, "mask", np.asarray(self.mask).astype(bool, copy=False))
        if self.feature_names is not None:
            object.__setattr__(self, "feature_names", tuple(self.feature_names))
        self.validate()

    # -- checks ----------------------------------------------------------------------------
    def _where(self, i: int) -> str:
        """``patient P step k`` of row ``i`` (k counts from 0 within the episode)."""
        p = self.patient[i]
        first = int(np.searchsorted(self.patient, p, side="left")) if self._sorted_ids() else i
        return f"patient {int(p)} step {i - first}"

    def _sorted_ids(self) -> bool:
        return bool(np.all(self.patient[1:] >= self.patient[:-1])) if len(self.patient) else True

    def validate(self) -> None:
        """Raise :class:`DataError` on malformed steps (see the module docstring)."""
        n = len(self.action)
        if self.obs.ndim != 2 or len(self.obs) != n:
            raise DataError(
                "obs must be a (N, D) array with one row per step",
                expected=f"({n}, D)",
                found=self.obs.shape,
            )
        for name in ("reward", "done", "timeout", "patient", "time"):
            if getattr(self, name).shape != (n,):
                raise DataError(
                    f"{name} must have one entry per step",
                    expected=(n,),
                    found=getattr(self, name).shape,
                )
        if self.n_actions < 1:
            raise DataError("n_actions must be positive", expected=">= 1", found=self.n_actions)
        if n == 0:
            return
        if not self._sorted_ids():
            i = int(np.nonzero(self.patient[1:] < self.patient[:-1])[0][0]) + 1
            raise DataError(
                f"rows are not grouped by patient (row {i}: patient {int(self.patient[i])} after "
                f"{int(self.patient[i - 1])})",
                expected="rows sorted by patient, then time",
                found="unsorted patient ids",
                fix="use Trajectories.from_unsorted(...) or sort by (patient, time)",
            )
        same = self.patient[1:] == self.patient[:-1]
        back = np.nonzero(same & (self.time[1:] <= self.time[:-1]))[0]
        if len(back):
            i = int(back[0]) + 1
            raise DataError(
                f"time does not increase at {self._where(i)}",
                expected="strictly increasing time within an episode",
                found=f"{self.time[i - 1]} then {self.time[i]}",
                fix="sort each episode by time and drop duplicate steps",
            )
        bad = np.nonzero(~np.isfinite(self.obs).all(axis=1))[0]
        if len(bad):
            i = int(bad[0])
            cols = np.nonzero(~np.isfinite(self.obs[i]))[0][:5].tolist()
            names = [self.feature_names[c] for c in cols] if self.feature_names else cols
            raise DataError(
                f"non-finite state at {self._where(i)}",
                expected="finite observations (impute missing values first)",
                found=f"NaN/inf in features {names}",
                fix="impute (e.g. sample-and-hold, then the median) before building trajectories",
            )
        bad = np.nonzero(~np.isfinite(self.reward))[0]
        if len(bad):
            raise DataError(
                f"non-finite reward at {self._where(int(bad[0]))}",
                expected="finite rewards",
                found=self.reward[int(bad[0])],
            )
        bad = np.nonzero((self.action < 0) | (self.action >= self.n_actions))[0]
        if len(bad):
            raise DataError(
                f"action id outside the grid at {self._where(int(bad[0]))}",
                expected=f"ids in [0, {self.n_actions})",
                found=int(self.action[int(bad[0])]),
                fix="encode actions with the data set's ActionGrid",
            )
        last = np.append(~same, True)  # last row of each episode
        ends = self.done | self.timeout
        if np.any(self.done & self.timeout):
            i = int(np.nonzero(self.done & self.timeout)[0][0])
            raise DataError(
                f"step is both done and timeout at {self._where(i)}",
                expected="an episode ends either in a terminal state or by truncation",
                found="done=True and timeout=True",
            )
        bad = np.nonzero(last & ~ends)[0]
        if len(bad):
            raise DataError(
                f"episode without an end: {self._where(int(bad[0]))} is the last step but neither "
                "done nor timeout",
                expected="done (terminal) or timeout (truncated) on the last step of every episode",
                found="no end flag",
                fix="set timeout=True on the last step of episodes whose record just stops",
            )
        bad = np.nonzero(ends & ~last)[0]
        if len(bad):
            raise DataError(
                f"episode ends before its last step at {self._where(int(bad[0]))}",
                expected="done/timeout only on the last step of each episode",
                found="an end flag followed by more steps of the same patient",
                fix="split the stay into separate patient/episode ids",
            )
        if self.mask is not None:
            if self.mask.shape != (n, self.n_actions):
                raise DataError(
                    "mask must be (N, n_actions)",
                    expected=(n, self.n_actions),
                    found=self.mask.shape,
                )
            bad = np.nonzero(~self.mask.any(axis=1))[0]
            if len(bad):
                raise DataError(
                    f"the action mask forbids every action at {self._where(int(bad[0]))}",
                    expected="at least one allowed action per step",
                    found="an all-False mask row",
                    fix="allow at least the logged action (or a safe default) at every step",
                )
            bad = np.nonzero(~self.mask[np.arange(n), self.action])[0]
            if len(bad):
                i = int(bad[0])
                raise DataError(
                    f"the logged action is forbidden by the mask at {self._where(i)}",
                    expected="masks that allow the action actually taken",
                    found=f"action {int(self.action[i])}",
                )

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_unsorted(cls, **arrays: Any) -> Trajectories:
        """Build from rows in any order: sorted (stably) by patient, then time."""
        patient = np.asarray(arrays["patient"])
        time = np.asarray(arrays["time"], dtype=np.float64)
        order = np.lexsort((time, patient))
        for k in ("obs", "action", "reward", "done", "timeout", "patient", "time", "mask"):
            if arrays.get(k) is not None:
                arrays[k] = np.asarray(arrays[k])[order]
        return cls(**arrays)

    # -- structure -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.action)

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[1])

    @property
    def starts(self) -> np.ndarray:
        """``(n_episodes,)`` first row of each episode."""
        if len(self) == 0:
            return np.zeros(0, np.int64)
        return np.nonzero(np.append(True, self.patient[1:] != self.patient[:-1]))[0]

    @property
    def ends(self) -> np.ndarray:
        """``(n_episodes,)`` one past the last row of each episode."""
        return np.append(self.starts[1:], len(self)).astype(np.int64)

    @property
    def n_episodes(self) -> int:
        return len(self.starts)

    @property
    def patients(self) -> np.ndarray:
        """``(n_episodes,)`` patient id of each episode."""
        return self.patient[self.starts]

    @property
    def step_index(self) -> np.ndarray:
        """``(N,)`` position of each row within its episode (0 at the first step)."""
        starts = self.starts
        lengths = self.ends - starts
        return np.arange(len(self)) - np.repeat(starts, lengths)

    def allowed(self) -> np.ndarray:
        """``(N, A)`` bool action mask (all True when no mask is stored)."""
        if self.mask is not None:
            return self.mask
        return np.ones((len(self), self.n_actions), dtype=bool)

    def transitions(self) -> dict[str, np.ndarray]:
        r"""Arrays for temporal-difference learning, one per step.

        ``next_obs[i] = obs[i + 1]`` inside an episode; at an episode's last step it is
        ``obs[i]`` (a placeholder) and ``bootstrap[i] = 0``, so targets are
        :math:`y = r + \gamma\,\mathrm{bootstrap}\,V(s')`. A ``timeout`` end is treated like a
        terminal one (the next state is unknown; documented bias, as in most clinical offline-RL
        code). ``next_mask`` is the mask at the next step (all True at an end).

        Keys: ``obs``, ``action``, ``reward``, ``next_obs``, ``bootstrap`` (float32 0/1),
        ``next_mask`` ``(N, A)``, ``done``, ``timeout``.
        """
        n = len(self)
        last = np.zeros(n, bool)
        last[self.ends - 1] = True
        nxt = np.minimum(np.arange(n) + 1, max(n - 1, 0))
        nxt = np.where(last, np.arange(n), nxt)
        allowed = self.allowed()
        next_mask = allowed[nxt].copy()
        next_mask[last] = True
        return {
            "obs": self.obs,
            "action": self.action,
            "reward": self.reward,
            "next_obs": self.obs[nxt],
            "bootstrap": (~last).astype(np.float32),
            "next_mask": next_mask,
            "done": self.done,
            "timeout": self.timeout,
        }

    def returns(self, gamma: float = 1.0) -> np.ndarray:
        r"""``(n_episodes,)`` discounted return :math:`G = \sum_t \gamma^t r_t` of each episode."""
        disc = gamma ** self.step_index.astype(np.float64)
        return np.add.reduceat(disc * self.reward, self.starts) if len(self) else np.zeros(0)

    def select_patients(self, ids: Sequence[int] | np.ndarray) -> Trajectories:
        """The episodes of the given patient ids (order of the data kept)."""
        keep = np.isin(self.patient, np.asarray(ids, dtype=np.int64))
        return self.subset(keep)

    def subset(self, rows: np.ndarray) -> Trajectories:
        """A copy holding the rows selected by a boolean mask over whole episodes."""
        rows = np.asarray(rows, dtype=bool)
        return replace(
            self,
            obs=self.obs[rows],
            action=self.action[rows],
            reward=self.reward[rows],
            done=self.done[rows],
            timeout=self.timeout[rows],
            patient=self.patient[rows],
            time=self.time[rows],
            mask=None if self.mask is None else self.mask[rows],
            meta=dict(self.meta),
        )

    def summary(self) -> str:
        """One line of counts, for logs."""
        return (
            f"{self.n_episodes} episodes, {len(self)} steps, obs dim {self.obs_dim}, "
            f"{self.n_actions} actions, {int(self.done.sum())} terminal / "
            f"{int(self.timeout.sum())} truncated ends"
        )

    def save(self, path: str | Path) -> Path:  # implemented in rl/io (helper); see io.save
        from clinfuse.rl.io import save_trajectories

        return save_trajectories(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Trajectories:
        from clinfuse.rl.io import load_trajectories

        return load_trajectories(path)
