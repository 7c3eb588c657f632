"""A token bucket that bounds the bytes per second background writes (compaction) may issue.

Theory of operation. The bucket fills at rate_bytes_per_s up to burst_bytes. acquire(n) takes
n tokens; when the bucket holds fewer, it goes into debt and the caller sleeps until the debt
is repaid. Writes larger than the burst (a 1 MiB table write buffer, a 100 MB value) are
therefore allowed, and paid for afterwards, so a long run of writes never goes faster than the
rate by more than one burst.

Invariants:
1. Over any sequence of acquire() calls totalling B bytes that starts with a full bucket, the
   time spent (on the injected clock) is at least (B - burst_bytes) / rate_bytes_per_s: the
   lower bound the tests check. There is no upper bound: a sleep may oversleep.
2. A rate of 0 means unlimited: acquire() returns at once and never sleeps or reads the clock.
3. rate_bytes_per_s may be changed from another thread at any time (one attribute store);
   the change applies from the next acquire(). acquire() itself runs on one thread.
4. sleep(seconds) returns True if the caller should stop waiting (the engine is closing);
   acquire() then returns at once, so closing is never held up by a slow limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Refill granularity: the bucket holds at most this long a burst (RocksDB's refill period).
BURST_S = 0.1
BURST_BYTES_MIN = 64 * 1024


class RateLimiter:
    __slots__ = ("_clock", "_sleep", "_stamp", "_tokens", "rate_bytes_per_s", "slept_s")

    def __init__(self, rate_bytes_per_s: int, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], bool] | None = None) -> None:
        if rate_bytes_per_s < 0:
            raise ValueError(f"rate_bytes_per_s must be >= 0: {rate_bytes_per_s}")
        self.rate_bytes_per_s = rate_bytes_per_s
        self._clock = clock
        self._sleep = sleep or _plain_sleep
        self._stamp = clock()
        self._tokens = float(self.burst_bytes)
        self.slept_s = 0.0  # total time acquire() asked to sleep (for INFO and tests)

    @property
    def burst_bytes(self) -> int:
        return max(BURST_BYTES_MIN, int(self.rate_bytes_per_s * BURST_S))

    def acquire(self, nbytes: int) -> None:
        """Take nbytes tokens, sleeping while the bucket is in debt (invariants 1 and 4)."""
        rate = self.rate_bytes_per_s
        if rate <= 0:
            return
        now = self._clock()
        burst = self.burst_bytes
        self._tokens = min(float(burst), self._tokens + (now - self._stamp) * rate) - nbytes
        self._stamp = now
        while self._tokens < 0:
            wait_s = -self._tokens / rate
            self.slept_s += wait_s
            if self._sleep(wait_s):
                return
            now = self._clock()
            rate = self.rate_bytes_per_s
            if rate <= 0:  # lifted while we slept
                self._tokens = float(self.burst_bytes)
                return
            # A sleep lasts at least wait_s; counting that (not a clock that may round down)
            # guarantees progress. Less than a byte of debt left by float rounding is none.
            elapsed_s = max(now - self._stamp, wait_s)
            self._tokens = min(float(burst), self._tokens + elapsed_s * rate)
            if self._tokens > -1.0:
                self._tokens = max(self._tokens, 0.0)
            self._stamp = max(now, self._stamp + wait_s)


def _plain_sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
