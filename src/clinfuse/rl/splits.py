r"""Patient-level train/valid/test splits of :class:`~clinfuse.rl.data.Trajectories`.

Every patient (= one episode) lands in exactly one split, so no state of a test patient is seen in
training. The split is stratified on a per-episode label, by default the outcome (died or not,
see :func:`episode_died`), so that mortality is about the same in each split (DeepEN and AI
Clinician practice: 70/10/20 stratified on mortality).

Within each stratum the patients are shuffled with ``numpy.random.default_rng(seed)`` and cut in
proportion to ``fractions``, the counts rounded by largest remainder (ties to the earlier split):
a stratum of :math:`n_k` patients gives each split
:math:`\lfloor f_s n_k \rfloor` or :math:`\lceil f_s n_k \rceil` of them, so each split's
outcome rate differs from the overall one by at most about (number of strata) / (split size).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.rl.data import Trajectories

__all__ = ["SPLITS", "episode_died", "split_counts", "split_patients"]

log = logging.getLogger(__name__)

SPLITS: tuple[str, str, str] = ("train", "valid", "test")
"""Names of the three splits, in the order of ``fractions``."""

Stratifier = Callable[[Trajectories], np.ndarray]
"""Maps trajectories to one hashable label per episode, ``(n_episodes,)``."""


def episode_died(traj: Trajectories) -> np.ndarray:
    """``(n_episodes,)`` bool: the episode's last step is ``done`` with a negative reward.

    This is how a terminal death is logged when the terminal reward is ``-R_T`` for death and
    ``+R_T`` for survival (Raghu et al. 2017; :class:`~clinfuse.rl.rewards.TerminalSurvival`).
    """
    last = traj.ends - 1
    return traj.done[last] & (traj.reward[last] < 0)


STRATIFIERS: dict[str, Stratifier] = {"outcome": episode_died}
"""Named stratifiers accepted by :func:`split_patients`."""


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if (
        len(fr) != len(SPLITS)
        or not all(math.isfinite(f) and f >= 0 for f in fr)
        or not math.isclose(sum(fr), 1.0, abs_tol=1e-6)
    ):
        raise ConfigError(
            "split fractions must be three non-negative numbers summing to 1",
            expected=f"(train, valid, test), e.g. (0.7, 0.1, 0.2); one per split {SPLITS}",
            found=fractions,
            fix="rescale the fractions so that they sum to 1",
        )
    return fr  # type: ignore[return-value]


def split_counts(n: int, fractions: Sequence[float]) -> np.ndarray:
    """``(3,)`` sizes summing to ``n``: ``floor(f * n)`` plus the remainder by largest fraction.

    Example:
        >>> split_counts(10, (0.7, 0.1, 0.2)).tolist()
        [7, 1, 2]
        >>> split_counts(3, (0.5, 0.25, 0.25)).tolist()
        [1, 1, 1]
    """
    exact = np.asarray(_check_fractions(fractions)) * n
    counts = np.floor(exact + 1e-9).astype(np.int64)
    rest = n - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")  # ties to the earlier split
    counts[order[:rest]] += 1
    return counts


def split_patients(
    traj: Trajectories,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    stratify: Literal["outcome"] | Stratifier | None = "outcome",
) -> dict[str, Trajectories]:
    """Split whole patients into ``train`` / ``valid`` / ``test`` (see the module docstring).

    Args:
        traj: the trajectories (one episode per patient).
        fractions: share of patients per split, in the order train, valid, test; sum 1.
        seed: seed of the shuffle; the same seed and data give the same split.
        stratify: ``"outcome"`` (died per :func:`episode_died`), a callable returning one label
            per episode, or None for a plain random split.

    Returns:
        ``{"train": ..., "valid": ..., "test": ...}``, each keeping the row order of ``traj``.

    Example:
        >>> t = Trajectories(obs=np.zeros((4, 1)), action=[0] * 4, reward=[-1.0, 1, 1, -1],
        ...                  done=[True] * 4, timeout=[False] * 4, patient=[1, 2, 3, 4],
        ...                  time=[0.0] * 4, n_actions=1)
        >>> parts = split_patients(t, (0.5, 0.0, 0.5), seed=0)
        >>> [sorted(p.patients.tolist()) for p in parts.values()]  # one death in train and test
        [[1, 2], [], [3, 4]]
    """
    fr = _check_fractions(fractions)
    if stratify is None:
        labels = np.zeros(traj.n_episodes, np.int64)
    elif callable(stratify):
        labels = np.asarray(stratify(traj))
    elif stratify in STRATIFIERS:
        labels = np.asarray(STRATIFIERS[stratify](traj))
    else:
        raise ConfigError(
            f"unknown stratification {stratify!r}",
            expected=f"one of {sorted(STRATIFIERS)}, a callable, or None",
            found=stratify,
        )
    if labels.shape != (traj.n_episodes,):
        raise DataError(
            "the stratifier must return one label per episode",
            expected=(traj.n_episodes,),
            found=labels.shape,
            fix="return an array indexed like Trajectories.patients",
        )
    rng = np.random.default_rng(seed)
    patients = traj.patients
    chosen: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):  # sorted labels: the rng stream does not depend on order
        members = rng.permutation(patients[labels == label])
        cuts = np.cumsum(split_counts(len(members), fr))[:-1]
        for name, part in zip(SPLITS, np.split(members, cuts), strict=True):
            chosen[name].append(part)
    out = {name: traj.select_patients(np.concatenate(chosen[name] or [[]])) for name in SPLITS}
    log.info(
        "patient split (seed %d): %s",
        seed,
        ", ".join(f"{k} {v.n_episodes}" for k, v in out.items()),
    )
    return out
