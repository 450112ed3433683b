"""Offline reinforcement learning for healthcare: trajectories, action grids, rewards, learners,
off-policy evaluation and environments with exact values (see ``rl/README.md``)."""

from clinfuse.rl.actions import ActionGrid
from clinfuse.rl.data import Trajectories
from clinfuse.rl.learners import LEARNERS, BCLearner, BCQLearner, QLearner, make_learner
from clinfuse.rl.splits import split_patients

__all__ = [
    "LEARNERS",
    "ActionGrid",
    "BCLearner",
    "BCQLearner",
    "QLearner",
    "Trajectories",
    "make_learner",
    "split_patients",
]
