"""Helpers of the trust-boundary tests: a snapshot of every file under a sandbox folder, and the
hypothesis profiles of the fuzz suite (``fast``: the default, a bounded example count; ``slow``:
``HYPOTHESIS_PROFILE=slow`` or ``pytest -m slow``, more examples)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "fast",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "slow",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


def snapshot(root: Path, skip: Iterable[Path] = ()) -> dict[str, tuple[str, int]]:
    """``relative path -> (sha256, mode)`` of every file and link under ``root`` (folders under
    ``skip`` left out): two equal snapshots mean nothing was created, changed or removed."""
    skipped = [Path(s).resolve() for s in skip]
    out: dict[str, tuple[str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d).resolve() not in skipped]
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            p = here / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = (f"link:{os.readlink(p)}", 0)
            else:
                out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        out.update({str((here / d).relative_to(root)) + "/": ("dir", 0) for d in dirnames})
    return out


@pytest.fixture
def snap():
    """The :func:`snapshot` function (test modules cannot import a conftest)."""
    return snapshot


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A folder with a bystander file in it and beside it; tests write only under ``out``."""
    (tmp_path / "bystander.txt").write_text("must survive")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "keep.txt").write_text("an input file")
    return tmp_path
