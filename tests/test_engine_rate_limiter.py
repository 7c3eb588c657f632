"""The compaction token bucket, in virtual time: lower bounds on time for bytes, unlimited,
live rate changes, and stopping while throttled."""

from __future__ import annotations

import pytest

from engine.rate_limiter import BURST_BYTES_MIN, RateLimiter


class VirtualTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return False


def test_writes_take_at_least_bytes_minus_burst_over_rate() -> None:
    for rate, chunk, chunks in ((1 << 20, 1 << 20, 10), (100_000, 4096, 500),
                                (10 << 20, 64 << 20, 2)):
        time = VirtualTime()
        limiter = RateLimiter(rate, clock=time.clock, sleep=time.sleep)
        start = time.now
        for _ in range(chunks):
            limiter.acquire(chunk)
        total = chunk * chunks
        elapsed = time.now - start
        assert elapsed >= (total - limiter.burst_bytes) / rate - 1e-9, (rate, elapsed)
        # ... and not much more (the bucket does not lose tokens it was owed).
        assert elapsed <= total / rate + 1e-6, (rate, elapsed)


def test_time_already_spent_elsewhere_is_credited_up_to_one_burst() -> None:
    time = VirtualTime()
    limiter = RateLimiter(1000_000, clock=time.clock, sleep=time.sleep)
    limiter.acquire(limiter.burst_bytes)  # empties the bucket
    assert time.sleeps == []
    time.now += 3600  # idle an hour: the bucket refills to one burst, no more
    limiter.acquire(limiter.burst_bytes)
    assert time.sleeps == []
    limiter.acquire(500_000)
    assert time.sleeps == [pytest.approx(0.5)]


def test_zero_rate_is_unlimited_and_never_sleeps() -> None:
    time = VirtualTime()
    limiter = RateLimiter(0, clock=time.clock, sleep=time.sleep)
    for _ in range(100):
        limiter.acquire(1 << 30)
    assert time.sleeps == [] and limiter.slept_s == 0


def test_rate_change_applies_to_the_next_acquire_and_lifting_it_ends_a_wait() -> None:
    time = VirtualTime()
    limiter = RateLimiter(1 << 20, clock=time.clock, sleep=time.sleep)
    limiter.acquire(1 << 20)
    first = time.now
    limiter.rate_bytes_per_s = 1 << 19  # halved
    limiter.acquire(1 << 20)
    assert time.now - first >= ((1 << 20) - limiter.burst_bytes) / (1 << 19) - 1e-9

    def lift(seconds: float) -> bool:
        limiter.rate_bytes_per_s = 0  # CONFIG SET compaction-throughput 0 during the wait
        return False

    lifted = RateLimiter(1000, clock=time.clock, sleep=lift)
    lifted.acquire(10_000_000)  # returns although the debt is not repaid


def test_stop_ends_the_wait_at_once() -> None:
    calls: list[float] = []
    limiter = RateLimiter(1000, clock=lambda: 0.0, sleep=lambda s: calls.append(s) or True)
    limiter.acquire(BURST_BYTES_MIN + 1_000_000)
    assert len(calls) == 1 and calls[0] == pytest.approx(1000.0)


def test_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(-1)
