"""llm.ratelimit: the token bucket against its closed form, on a fake clock, under threads."""

from __future__ import annotations

import pickle
import threading

import pytest

from clinfuse.core.errors import ConfigError
from clinfuse.llm import RateLimiter


class FakeTime:
    """A clock that moves only when someone sleeps (``advance=True``) or a test moves it."""

    def __init__(self, advance: bool) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.advance = advance
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if self.advance:
                self.now += seconds


def limiter(per_minute: float, burst: int = 1, advance: bool = False):
    t = FakeTime(advance)
    return RateLimiter(per_minute, burst=burst, clock=t.clock, sleep=t.sleep), t


@pytest.mark.parametrize(("per_minute", "burst"), [(60, 1), (120, 1), (30, 3), (600, 5)])
def test_frozen_clock_matches_the_closed_form(per_minute: float, burst: int) -> None:
    rl, t = limiter(per_minute, burst)
    waits = [rl.acquire() for _ in range(12)]
    r = per_minute / 60
    assert waits == pytest.approx([max(0, k - burst + 1) / r for k in range(12)])
    assert t.sleeps == [w for w in waits if w > 0]  # no sleep call for a free token


def test_refill_is_capped_at_the_burst() -> None:
    rl, t = limiter(60, burst=2)
    assert [rl.acquire() for _ in range(3)] == [0.0, 0.0, 1.0]  # the third is in debt by 1
    t.now = 1.5  # 1.5 tokens back: debt paid, 0.5 left
    assert rl.acquire() == pytest.approx(0.5)
    t.now = 1000.0  # a long idle spell refills only up to the burst
    assert [rl.acquire() for _ in range(3)] == [0.0, 0.0, 1.0]


def test_real_schedule_never_exceeds_burst_plus_rate_times_window() -> None:
    rl, t = limiter(90, burst=3, advance=True)  # 1.5 requests a second
    starts = []
    for _ in range(40):
        rl.acquire()
        starts.append(t.clock())
    r = 1.5
    assert starts[:3] == [0.0, 0.0, 0.0]
    assert starts[-1] == pytest.approx((40 - 3) / r)  # sustained rate after the burst
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            window = starts[j] - starts[i]
            assert j - i + 1 <= 3 + r * window + 1e-9


def test_threads_get_distinct_slots_in_order() -> None:
    rl, _ = limiter(60, burst=2)
    waits: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(5):
            w = rl.reserve()
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # every token reserved exactly once: the sorted waits are the closed form, no duplicates
    assert sorted(waits) == pytest.approx([max(0, k - 1) for k in range(40)])


def test_bad_settings_and_pickling() -> None:
    for bad in (0, -1, "60", None):
        with pytest.raises(ConfigError, match="rate limit"):
            RateLimiter(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="burst"):
        RateLimiter(60, burst=0)
    rl, _ = limiter(60)
    assert [rl.acquire() for _ in range(2)] == [0.0, 1.0]
    copy = pickle.loads(pickle.dumps(RateLimiter(60, burst=2)))
    assert (copy.per_minute, copy.burst, copy.rate) == (60.0, 2, 1.0)
    assert copy.reserve() == 0.0  # arrives with a full bucket
