r"""A thread-safe token-bucket rate limiter for model backends.

A bucket holds at most ``burst`` tokens and refills at :math:`r = \text{per\_minute}/60` tokens per
second; each request takes one token and waits until one is there. Over any window of length
:math:`T` seconds at most :math:`\text{burst} + rT` requests start, and with the default
``burst=1`` requests are spaced :math:`1/r` seconds apart.

Waiting callers reserve their slot before they sleep (the bucket may go into debt), so threads
that share one limiter are served in the order they asked, and the lock is never held while
sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from clinfuse.core.errors import ConfigError


class RateLimiter:
    r"""At most ``per_minute`` requests a minute (token bucket), shared safely by threads.

    Args:
        per_minute: sustained rate :math:`60 r` (requests per minute), > 0.
        burst: bucket size, the requests that may start at once after an idle spell (>= 1).
        clock: monotonic time in seconds (tests pass a fake clock).
        sleep: the waiting function (tests pass a recorder).

    :meth:`acquire` returns the seconds the caller waited: with a full bucket of size :math:`b`
    at time 0 and no refill in between, the :math:`k`-th call (0-based) waits
    :math:`\max(0, k - b + 1) / r`.

    A pickled limiter (e.g. sent to a process pool) arrives with a full bucket: each process
    limits itself, so divide ``per_minute`` by the number of processes.

    Example:
        >>> t = [0.0]
        >>> rl = RateLimiter(60, clock=lambda: t[0], sleep=lambda s: None)
        >>> [rl.acquire() for _ in range(3)]
        [0.0, 1.0, 2.0]
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (isinstance(per_minute, int | float) and per_minute > 0):
            raise ConfigError(
                "bad rate limit",
                expected="requests per minute, a number > 0",
                found=repr(per_minute),
                fix="pass e.g. rate_limit_per_min=60, or None for no limit",
            )
        if not (isinstance(burst, int) and not isinstance(burst, bool) and burst >= 1):
            raise ConfigError("bad burst", expected="an int >= 1", found=repr(burst))
        self.per_minute = float(per_minute)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last: float | None = None

    @property
    def rate(self) -> float:
        """Tokens per second, :math:`r`."""
        return self.per_minute / 60.0

    def __repr__(self) -> str:
        return f"RateLimiter(per_minute={self.per_minute:g}, burst={self.burst})"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "per_minute": self.per_minute,
            "burst": self.burst,
            "clock": self._clock,
            "sleep": self._sleep,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["per_minute"], burst=state["burst"], clock=state["clock"], sleep=state["sleep"]
        )

    def reserve(self) -> float:
        """Take a token now (going into debt if need be); the seconds until it is due."""
        with self._lock:
            now = self._clock()
            if self._last is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> float:
        """Wait for a token; the seconds waited (0 when one was there)."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait
