"""The shared task executor: same results on every backend, failures captured or cancelling."""

from __future__ import annotations

import importlib
import sys
import threading
import time

import pytest

from clinfuse.core.errors import ConfigError
from clinfuse.core.executor import run_tasks

HELPERS = """
import time
from pathlib import Path


def square_or_fail(x):
    if x < 0:
        raise ValueError(f"negative {x}")
    return x * x


def touch_then_sleep(x, folder):
    Path(folder, f"{x}.started").touch()
    if x == 0:
        raise RuntimeError("first task fails")
    time.sleep(0.2)
    return x
"""


@pytest.fixture(scope="module")
def helpers(tmp_path_factory):
    """Module-level task functions that spawned worker processes can import by name."""
    folder = tmp_path_factory.mktemp("executor_helpers")
    (folder / "_executor_helpers.py").write_text(HELPERS)
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("_executor_helpers")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("_executor_helpers", None)


@pytest.mark.parametrize("executor", ["serial", "thread", "process"])
def test_every_backend_returns_every_result(executor: str, helpers) -> None:
    out = run_tasks(helpers.square_or_fail, range(7), executor=executor, workers=2)
    assert sorted(out) == [x * x for x in range(7)]


@pytest.mark.parametrize("executor", ["serial", "thread", "process"])
def test_on_error_turns_a_failure_into_a_result(executor: str, helpers) -> None:
    out = run_tasks(
        helpers.square_or_fail,
        [2, -1, 3],
        executor=executor,
        workers=2,
        on_error=lambda item, exc: ("failed", item, type(exc).__name__),
    )
    assert sorted(out, key=str) == sorted([4, ("failed", -1, "ValueError"), 9], key=str)


@pytest.mark.parametrize("executor", ["serial", "thread", "process"])
def test_an_uncaptured_failure_cancels_the_tasks_not_started(
    executor: str, tmp_path, helpers
) -> None:
    items = list(range(40))
    with pytest.raises(RuntimeError, match="first task fails"):
        list(run_tasks(helpers.touch_then_sleep, items, args=(str(tmp_path),), executor=executor,
                       workers=2))  # fmt: skip
    started = len(list(tmp_path.glob("*.started")))
    assert started < len(items) // 2, f"{started} of {len(items)} tasks ran after the failure"


def test_stopping_early_cancels_the_rest() -> None:
    ran: list[int] = []
    lock = threading.Lock()

    def slow(x: int) -> int:
        with lock:
            ran.append(x)
        time.sleep(0.05)
        return x

    gen = run_tasks(slow, range(50), executor="thread", workers=2)
    next(gen)
    gen.close()
    time.sleep(0.2)
    assert len(ran) < 10


def test_unknown_executor_and_bad_workers_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown executor"):
        list(run_tasks(abs, [1], executor="dask"))
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        list(run_tasks(abs, [1], executor="thread", workers=0))
