"""Shared fixtures of the Med-Banana tests: one serial default build per session, and the
comparison of two builds' manifests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

import clinfuse

FAST = ["progress=false", "executor=serial"]
MANIFESTS = ("tasks", "attempts", "preference_pairs", "prompt_pairs", "kto")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """``(builder, card, run)`` of the default data set built inline (the reference)."""
    out = tmp_path_factory.mktemp("mb") / "build"
    return clinfuse.build("medbanana", overrides=FAST, out=out)


def _stable(df: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Without timings, with the build root cut out of the source paths."""
    df = df.drop(columns=[c for c in df.columns if c in ("seconds",)]).reset_index(drop=True)
    for c in ("image", "source"):
        if c in df:
            df[c] = df[c].map(lambda v: v.replace(str(root), "<root>") if isinstance(v, str) else v)
    return df


@pytest.fixture
def assert_same_build() -> Callable[[Path, Path], None]:
    """Asserts that two build roots hold the same manifests (rows, values, no duplicates) and
    the same image files."""

    def check(got: Path, want: Path) -> None:
        for name in MANIFESTS:
            a, b = (_stable(pd.read_parquet(p / f"{name}.parquet"), p) for p in (got, want))
            pd.testing.assert_frame_equal(a, b, check_like=True)
        t = pd.read_parquet(got / "tasks.parquet")
        att = pd.read_parquet(got / "attempts.parquet")
        assert t["task_id"].is_unique and not att.duplicated(["task_id", "round"]).any()
        files = [sorted(str(p.relative_to(r)) for p in (r / "images").rglob("*.png"))
                 for r in (got, want)]  # fmt: skip
        assert files[0] == files[1]
        assert not list(got.rglob("*.tmp"))

    return check
