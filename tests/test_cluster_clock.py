"""Clocks: the asyncio binding and the manual clock tests use."""

from __future__ import annotations

import asyncio
import time

from cluster.clock import Clock, LoopClock, ManualClock


def test_manual_clock_fires_timers_in_order() -> None:
    clock: Clock = ManualClock(1_000)
    fired: list[str] = []
    clock.call_later(0.2, lambda: fired.append("b"))
    clock.call_later(0.1, lambda: fired.append("a"))
    cancelled = clock.call_later(0.15, lambda: fired.append("x"))
    cancelled.cancel()
    assert isinstance(clock, ManualClock)
    assert clock.advance(0.1) == 1 and fired == ["a"]
    assert clock.wall_ms() == 1_100 and clock.monotonic() == 0.1
    clock.advance(1)
    assert fired == ["a", "b"] and clock.pending() == 0


def test_manual_clock_reschedules_from_callbacks() -> None:
    clock = ManualClock()
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(clock.monotonic())
        if len(ticks) < 5:
            clock.call_later(0.1, tick)

    clock.call_later(0.1, tick)
    clock.advance(10)
    assert [round(t, 3) for t in ticks] == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_manual_wall_clock_can_step_back() -> None:
    clock = ManualClock(5_000)
    clock.step_wall_ms(-2_000)
    assert clock.wall_ms() == 3_000 and clock.monotonic() == 0.0


def test_loop_clock() -> None:
    async def main() -> tuple[int, float, list[int]]:
        clock = LoopClock(asyncio.get_running_loop())
        done: list[int] = []
        clock.call_later(0.01, lambda: done.append(1))
        clock.call_later(0.01, lambda: done.append(2)).cancel()
        await asyncio.sleep(0.03)
        return clock.wall_ms(), clock.monotonic(), done

    wall_ms, _, done = asyncio.run(main())
    assert abs(wall_ms - time.time() * 1000) < 5_000
    assert done == [1]
