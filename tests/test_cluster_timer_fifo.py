"""TimerFifo on virtual time: due order across delays, cancel, re-arming from a callback,
and one clock timer for all of them."""

from __future__ import annotations

from cluster.timer_fifo import FifoTimer, TimerFifo
from tests.sim.sim_clock import SimClock


def test_timers_fire_once_in_due_order_across_delays() -> None:
    clock = SimClock()
    timers = TimerFifo(clock)
    fired: list[tuple[str, int]] = []

    def mark(name: str) -> None:
        fired.append((name, clock.now))

    timers.call_later(0.010, lambda: mark("a10"))
    clock.advance(2)
    timers.call_later(0.005, lambda: mark("b5"))   # due at 7, before a10
    timers.call_later(0.010, lambda: mark("c10"))  # due at 12
    assert clock.pending() == 1  # one clock timer for the three
    assert timers.pending() == 3
    clock.run_until_idle(1000)
    assert fired == [("b5", 7), ("a10", 10), ("c10", 12)]
    assert timers.pending() == 0 and clock.pending() == 0


def test_cancelled_timer_never_fires_and_leaves_its_fifo() -> None:
    clock = SimClock()
    timers = TimerFifo(clock)
    fired: list[str] = []
    first = timers.call_later(0.010, lambda: fired.append("first"))
    second = timers.call_later(0.010, lambda: fired.append("second"))
    timers.call_later(0.010, lambda: fired.append("third"))
    second.cancel()
    assert second.callback is None  # the owner is not kept alive by a cancelled timer
    assert len(timers.fifos[0.010]) == 3  # not at the head yet
    first.cancel()
    first.cancel()  # idempotent
    assert len(timers.fifos[0.010]) == 1  # both cancelled ones left from the head
    clock.run_until_idle(1000)
    assert fired == ["third"]


def test_a_callback_may_arm_and_cancel_timers() -> None:
    clock = SimClock()
    timers = TimerFifo(clock)
    fired: list[tuple[str, int]] = []
    doomed: list[FifoTimer] = []

    def first() -> None:
        fired.append(("first", clock.now))
        doomed[0].cancel()  # due in the same batch, after this one: must not run
        timers.call_later(0.003, lambda: fired.append(("rearmed", clock.now)))

    timers.call_later(0.010, first)
    doomed.append(timers.call_later(0.010, lambda: fired.append(("doomed", clock.now))))
    clock.run_until_idle(1000)
    assert fired == [("first", 10), ("rearmed", 13)]


def test_never_fires_early() -> None:
    clock = SimClock()
    timers = TimerFifo(clock)
    fired: list[int] = []
    timers.call_later(0.050, lambda: fired.append(clock.now))
    clock.advance(48)
    assert fired == []
    clock.run_until_idle(1000)
    assert fired and fired[0] >= 49  # the 1 ms slack at most
