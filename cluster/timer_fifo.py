"""Many one-shot timers of a few distinct delays on one clock timer: ``TimerFifo``.

Every read and write the coordinator runs arms a timer (a read's speculation delay, then its
deadline; a write's deadline) and nearly always cancels it a millisecond later. A loop timer
each (``Clock.call_later``) costs a timer handle, a timer start and a timer stop per request.
Here the timers of one delay go in one FIFO, in the order they were armed: with a monotonic
clock that is also the order they fall due, so no heap is needed (the transport's request
deadlines use the same idea, peer_link.py). One clock timer is armed for the earliest due.

Invariants:
1. A timer's callback runs at most once, never before its due time (the clock's own
   rounding allowed), and never after ``cancel()``.
2. Callbacks due together run in due order, after the FIFOs were updated, so a callback may
   arm or cancel timers of this ``TimerFifo``.
3. A cancelled timer drops its callback at once (the owner is not kept alive by it), and
   leaves its FIFO as soon as it reaches the head, so a FIFO holds about what was armed in
   the last delay's worth of time.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from cluster.clock import Clock, TimerHandle

# A deadline this close is treated as come: loop timers fire with millisecond rounding.
_SLACK_S = 0.001


class FifoTimer:
    """One armed timer; ``cancel()`` is idempotent."""

    __slots__ = ("callback", "due", "fifo")

    def __init__(self, due: float, callback: Callable[[], None],
                 fifo: collections.deque[FifoTimer]) -> None:
        self.due = due
        self.callback: Callable[[], None] | None = callback
        self.fifo = fifo

    def cancel(self) -> None:
        self.callback = None  # invariant 3: the owner is free to go
        fifo = self.fifo
        while fifo and fifo[0].callback is None:
            fifo.popleft()


class TimerFifo:
    """``call_later`` for many short-lived timers (see the module docstring)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.fifos: dict[float, collections.deque[FifoTimer]] = {}
        self._timer: TimerHandle | None = None
        self._timer_due = 0.0

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> FifoTimer:
        due = self.clock.monotonic() + delay_s
        fifo = self.fifos.get(delay_s)
        if fifo is None:
            fifo = self.fifos[delay_s] = collections.deque()
        timer = FifoTimer(due, callback, fifo)
        fifo.append(timer)
        if self._timer is None or due < self._timer_due:
            self._arm(due)
        return timer

    def pending(self) -> int:
        """Timers armed and neither fired nor cancelled."""
        return sum(1 for fifo in self.fifos.values() for t in fifo if t.callback is not None)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self.clock.call_later(max(0.0, due - self.clock.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.clock.monotonic() + _SLACK_S
        ready: list[FifoTimer] = []
        earliest: float | None = None
        for delay_s, fifo in list(self.fifos.items()):
            while fifo and (fifo[0].callback is None or fifo[0].due <= now):
                timer = fifo.popleft()
                if timer.callback is not None:
                    ready.append(timer)
            if not fifo:
                del self.fifos[delay_s]
            elif earliest is None or fifo[0].due < earliest:
                earliest = fifo[0].due
        if earliest is not None:
            self._arm(earliest)
        if len(ready) > 1:
            ready.sort(key=lambda t: t.due)
        for timer in ready:  # invariant 2: a callback may arm or cancel timers here
            callback = timer.callback
            if callback is not None:  # an earlier callback of this batch may cancel it
                timer.callback = None
                callback()
