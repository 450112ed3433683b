"""Shared test helpers: the read-only reference data in ../shared/data (skipped when absent),
and the smallest fit of every method."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLINFUSE_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or a skip when that data set is not present."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference data not present: {p}")
    return p


#: the overrides that make each method's fit a smoke run (one epoch or a few steps)
TINY_FIT: dict[str, list[str]] = {
    "dib": ["epochs=1"],
    "tunsr": ["epochs=1"],
    "dpsurv": ["epochs=1"],
    "procon": ["steps=2", "n_eval=2", "max_new_tokens=2"],
    "deepmedix": ["steps=2", "max_new_tokens=4", "max_completion_length=4"],
    "ehrprompt": ["epochs=1", "n_boot=10", "corruption_rates=0,0.3", "max_rows=800"],
    "deepen": [
        "n_patients=100",
        "steps=30",
        "hidden=16,16",
        "alphas=1.0",
        "n_boot=10",
        "rollout_patients=100",
    ],
}
