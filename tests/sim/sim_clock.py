"""Virtual time in integer ticks: the simulation's ``cluster.clock.Clock``.

Theory of operation. Time is an integer tick count (one tick = ``tick_ms`` milliseconds,
1 by default), so there is no floating-point drift and two runs of the same seed see the same
instants. Every pending callback is an event ``(due_tick, seq)`` in one heap; ``seq`` is the
order of scheduling, so events due at the same tick run first-scheduled first. Time moves only
when the driver runs events (``run_next``, ``run_until``, ``run_until_idle``), and then jumps
straight to the next due event.

Invariants:
1. ``now`` never decreases; an event runs at exactly its ``due_tick``.
2. Events run in ``(due_tick, seq)`` order; a cancelled event never runs.
3. ``call_later(delay_s)`` rounds the delay *up* to whole ticks (a timeout never fires early)
   and never schedules in the past.
4. Every run method takes a bound (ticks or events) and says whether it stopped on it, so a
   livelocked simulation ends instead of spinning.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

WALL_ORIGIN_MS = 1_700_000_000_000  # wall_ms() at tick 0 (a fixed date: runs replay)


class SimTimer:
    __slots__ = ("callback", "cancelled", "due_tick", "seq")

    def __init__(self, due_tick: int, seq: int, callback: Callable[[], None]) -> None:
        self.due_tick = due_tick
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: SimTimer) -> bool:
        return (self.due_tick, self.seq) < (other.due_tick, other.seq)


class SimClock:
    """Implements ``cluster.clock.Clock`` over integer ticks."""

    def __init__(self, tick_ms: int = 1, wall_origin_ms: int = WALL_ORIGIN_MS) -> None:
        assert tick_ms >= 1, tick_ms
        self.tick_ms = tick_ms
        self.now = 0  # ticks
        self._wall_origin_ms = wall_origin_ms
        self._wall_offset_ms = 0
        self._events: list[SimTimer] = []
        self._seq = 0
        self.events_run = 0

    # Clock protocol ----------------------------------------------------------------------

    def wall_ms(self) -> int:
        return self._wall_origin_ms + self._wall_offset_ms + self.now * self.tick_ms

    def monotonic(self) -> float:
        return self.now * self.tick_ms / 1000

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> SimTimer:
        """Invariant 3: the delay rounds up to whole ticks."""
        ticks = math.ceil(max(0.0, delay_s) * 1000 / self.tick_ms - 1e-9)
        return self.call_in(max(0, ticks), callback)

    # Ticks -------------------------------------------------------------------------------

    def call_in(self, ticks: int, callback: Callable[[], None]) -> SimTimer:
        """Run ``callback()`` ``ticks`` ticks from now (0 = this tick, after what is queued)."""
        assert ticks >= 0, ticks
        self._seq += 1
        timer = SimTimer(self.now + ticks, self._seq, callback)
        heapq.heappush(self._events, timer)
        return timer

    def step_wall_ms(self, delta_ms: int) -> None:
        """Step the wall clock alone (as NTP may), forwards or backwards."""
        self._wall_offset_ms += delta_ms

    def pending(self) -> int:
        return sum(1 for timer in self._events if not timer.cancelled)

    def next_due(self) -> int | None:
        """Tick of the next live event, None when idle."""
        while self._events and self._events[0].cancelled:
            heapq.heappop(self._events)
        return self._events[0].due_tick if self._events else None

    def run_next(self) -> bool:
        """Run the next live event (moving time to it); False when there is none."""
        due = self.next_due()
        if due is None:
            return False
        timer = heapq.heappop(self._events)
        assert timer.due_tick >= self.now, (timer.due_tick, self.now)
        self.now = timer.due_tick
        self.events_run += 1
        timer.callback()
        return True

    def run_until(self, tick: int) -> None:
        """Run every event due up to and including ``tick``; then now == tick."""
        assert tick >= self.now, (tick, self.now)
        while True:
            due = self.next_due()
            if due is None or due > tick:
                break
            self.run_next()
        self.now = tick

    def advance(self, ticks: int) -> None:
        self.run_until(self.now + ticks)

    def run_until_idle(self, ticks_max: int) -> bool:
        """Run events until none is left; False if the next one is more than ``ticks_max``
        ticks from the start (invariant 4: a periodic timer never lets a run go idle)."""
        end = self.now + ticks_max
        while True:
            due = self.next_due()
            if due is None:
                return True
            if due > end:
                return False
            self.run_next()

    def run_while(self, condition: Callable[[], bool], ticks_max: int) -> bool:
        """Run events while ``condition()`` holds; False if it still holds at the bound."""
        end = self.now + ticks_max
        while condition():
            due = self.next_due()
            if due is None or due > end:
                return False
            self.run_next()
        return True


class SimLoop:
    """The two loop methods an ``asyncio.Future`` calls, run in virtual time.

    ``asyncio.Future(loop=SimLoop(clock))`` schedules its done-callbacks through
    ``call_soon``, which here is an event at the current tick: futures (what
    ``cluster.transport.Transport.request`` returns) complete deterministically with no event
    loop running. ``spawn`` drives a coroutine that awaits only such futures, the way the
    frontend drives node coroutines with ``send(None)``.
    """

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock

    def get_debug(self) -> bool:
        return False

    def call_soon(self, callback: Callable[..., object], *args: object,
                  context: contextvars.Context | None = None) -> SimTimer:
        def run() -> None:
            if context is None:
                callback(*args)
            else:
                context.run(callback, *args)

        return self.clock.call_in(0, run)

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)  # type: ignore[arg-type]

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Run ``coro`` from the next event on; the future completes with its outcome.

        REQUIRES: ``coro`` awaits only futures of this loop (nothing that needs a real loop).
        """
        outcome: asyncio.Future[T] = self.create_future()

        def step(future: asyncio.Future[Any] | None) -> None:
            try:
                if future is None:
                    yielded = coro.send(None)
                elif (error := future.exception()) is not None:
                    yielded = coro.throw(error)
                else:
                    yielded = coro.send(future.result())
            except StopIteration as stop:
                outcome.set_result(stop.value)
                return
            except BaseException as exc:  # the coroutine's own error: hand it over
                outcome.set_exception(exc)
                return
            assert isinstance(yielded, asyncio.Future), f"awaited a non-sim object {yielded!r}"
            yielded._asyncio_future_blocking = False
            yielded.add_done_callback(step)

        self.clock.call_in(0, lambda: step(None))
        return outcome
