"""Offline reinforcement learning for healthcare: trajectories, action grids, rewards, learners,
off-policy evaluation and environments with exact values (see ``rl/README.md``)."""

from clinfuse.rl.data import Trajectories

__all__ = ["Trajectories"]
