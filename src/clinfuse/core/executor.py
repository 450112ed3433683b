"""One way to run many independent tasks: inline, on threads, on processes or on Ray.

Both data set builders fan their records out through :func:`run_tasks`; it yields each result
as soon as it is ready (completion order, not input order), so the caller can log it, update
its progress bar and keep a resumable record. When the caller stops early, or a task raises
and no ``on_error`` is given, the tasks not yet started are cancelled instead of run to the
end. With ``on_error`` a failing task becomes a result (``on_error(item, exc)``) and the others
go on: the failure is captured, never silently dropped.

Example:
    >>> sorted(run_tasks(pow, [1, 2, 3], args=(2,), executor="thread", workers=2))
    [1, 4, 9]
    >>> list(run_tasks(int, ["1", "x"], on_error=lambda item, exc: f"{item!r} failed"))
    [1, "'x' failed"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

from clinfuse.core.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")

Executor = Literal["serial", "thread", "process", "ray"]
EXECUTORS: tuple[str, ...] = ("serial", "thread", "process", "ray")


def run_tasks(
    fn: Callable[..., R],
    items: Iterable[T],
    *,
    args: tuple[Any, ...] = (),
    executor: Executor | str = "serial",
    workers: int = 1,
    ray_address: str | None = None,
    on_error: Callable[[T, BaseException], R] | None = None,
) -> Iterator[R]:
    """``fn(item, *args)`` for every item, results yielded as they finish.

    ``process`` and ``ray`` pickle ``fn``, the items and ``args`` (``fn`` must be a module-level
    function); ``serial`` and ``thread`` may pass anything. ``workers`` bounds the pool
    (``ray``: the CPUs of a local instance started here, shut down at the end). A Ray cluster at
    ``ray_address`` is joined instead.
    """
    if executor not in EXECUTORS:
        raise ConfigError(
            f"unknown executor {executor!r}",
            expected=" | ".join(EXECUTORS),
            found=repr(executor),
            fix="--set executor=process (or another one above)",
        )
    if workers < 1:
        raise ConfigError(
            "workers must be at least 1",
            expected="an integer >= 1",
            found=str(workers),
            fix="--set workers=1",
        )
    todo = list(items)
    if executor == "serial" or (executor == "thread" and workers == 1):
        yield from _serial(fn, todo, args, on_error)
    elif executor == "thread":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from _pool(pool, fn, todo, args, on_error)
    elif executor == "process":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")  # no forked copies of torch / thread state
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            yield from _pool(pool, fn, todo, args, on_error)
    else:
        yield from _ray(fn, todo, args, on_error, workers, ray_address)


def _outcome(get: Callable[[], Any], item: Any, on_error) -> Any:
    """``get()``, or ``on_error(item, exc)`` when it raises and a handler is given."""
    try:
        return get()
    except Exception as exc:
        if on_error is None:
            raise
        return on_error(item, exc)


def _serial(fn, todo, args, on_error) -> Iterator[Any]:
    for item in todo:
        yield _outcome(lambda item=item: fn(item, *args), item, on_error)


def _pool(pool, fn, todo, args, on_error) -> Iterator[Any]:
    from concurrent.futures import as_completed

    futures = {pool.submit(fn, item, *args): item for item in todo}
    try:
        for fut in as_completed(futures):
            yield _outcome(fut.result, futures[fut], on_error)
    finally:  # an error or an early stop: the tasks not yet started never start
        for fut in futures:
            fut.cancel()


def _ray(fn, todo, args, on_error, workers: int, address: str | None) -> Iterator[Any]:
    from clinfuse.core.errors import require

    ray = require("ray", "ray")
    started = not ray.is_initialized()
    if started:
        kw = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, **kw)
    pending: list[Any] = []
    try:
        remote = ray.remote(fn)
        refs = {remote.remote(item, *args): item for item in todo}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield _outcome(lambda ref=done[0]: ray.get(ref), refs[done[0]], on_error)
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()
