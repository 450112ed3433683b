"""Seeding: one call sets Python, NumPy and torch, and returns explicit generators."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """Seed the global RNGs and return a NumPy and a torch generator derived from ``seed``.

    Example:
        >>> rng, gen = seed_everything(3)
        >>> again = seed_everything(3)[1]
        >>> float(torch.rand(1, generator=gen)) == float(torch.rand(1, generator=again))
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    gen = torch.Generator().manual_seed(seed)
    return np.random.default_rng(seed), gen


def rng_state() -> dict:
    """The global RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
