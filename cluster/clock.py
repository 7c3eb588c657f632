"""Time and timers, behind one small interface so the cluster runs in virtual time in tests.

Rule 1: nothing else in ``cluster/`` reads the time or schedules work except through a
``Clock``; in particular nobody calls ``time.time()`` or ``asyncio.sleep``.
Rule 2: ``wall_ms()`` is wall-clock time (it may step backwards); it stamps versions and
expiry. ``monotonic()`` never goes backwards; it measures durations and work budgets.
Rule 3: ``wall_ms()`` may be called from any thread (the engine's compaction thread runs the
replica's purge filter); the other methods belong to the loop thread.

``LoopClock`` is the production binding (the asyncio/uvloop loop); ``ManualClock`` is a
deterministic one for tests and simulation, whose time moves only when told to.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


def system_wall_ms() -> int:
    """The system wall clock in ms: a module-level function, so it pickles (PurgeFilter's
    copies that run in the engine's compaction worker read it)."""
    return time.time_ns() // 1_000_000


class Clock(Protocol):
    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch (wall clock; may step back)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (origin unspecified)."""
        ...

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback()`` once, ``delay_s`` seconds from now, unless cancelled."""
        ...


class LoopClock:
    """The asyncio loop's clock and timers, with the system wall clock."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def wall_ms(self) -> int:
        return system_wall_ms()

    def monotonic(self) -> float:
        return self._loop.time()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        return self._loop.call_later(delay_s, callback)


class _ManualTimer:
    __slots__ = ("callback", "cancelled", "due_s", "seq")

    def __init__(self, due_s: float, seq: int, callback: Callable[[], None]) -> None:
        self.due_s = due_s
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: _ManualTimer) -> bool:
        return (self.due_s, self.seq) < (other.due_s, other.seq)


class ManualClock:
    """A clock whose time only moves through ``advance()``; timers fire in due order.

    Wall and monotonic time move together. ``step_wall_ms()`` moves the wall clock alone
    (forwards or backwards), as NTP may.
    """

    def __init__(self, wall_ms: int = 1_700_000_000_000) -> None:
        self._wall_offset_ms = wall_ms
        self._now_s = 0.0
        self._timers: list[_ManualTimer] = []
        self._seq = 0

    def wall_ms(self) -> int:
        return self._wall_offset_ms + round(self._now_s * 1000)

    def monotonic(self) -> float:
        return self._now_s

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        self._seq += 1
        timer = _ManualTimer(self._now_s + max(0.0, delay_s), self._seq, callback)
        heapq.heappush(self._timers, timer)
        return timer

    def step_wall_ms(self, delta_ms: int) -> None:
        self._wall_offset_ms += delta_ms

    def advance(self, seconds: float) -> int:
        """Move time forward, firing every timer that falls due; returns how many fired."""
        end_s = self._now_s + seconds
        fired = 0
        while self._timers and self._timers[0].due_s <= end_s:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now_s = max(self._now_s, timer.due_s)
            timer.callback()
            fired += 1
        self._now_s = end_s
        return fired

    def pending(self) -> int:
        return sum(1 for timer in self._timers if not timer.cancelled)
