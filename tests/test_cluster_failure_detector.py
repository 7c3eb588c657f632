"""cluster/failure_detector.py: phi-accrual failure detection in virtual time."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.clock import ManualClock
from cluster.failure_detector import (
    PHI_FACTOR,
    DetectorOptions,
    FailureDetector,
    Liveness,
    Transition,
)


def beats(fd: FailureDetector, clock: ManualClock, peer: str, interval_s: float,
          count: int) -> None:
    for _ in range(count):
        clock.advance(interval_s)
        fd.heartbeat(peer)


def test_first_heartbeat_reports_up_and_seeds_the_initial_interval() -> None:
    clock = ManualClock()
    fd = FailureDetector(clock, DetectorOptions(initial_interval_s=2.0))
    assert fd.phi("a") == math.inf and not fd.is_available("a") and fd.reported("a") is None
    assert fd.heartbeat("a") == Transition("a", Liveness.UP, 0.0, 0.0)
    assert fd.mean_interval_s("a") == 2.0 and fd.phi("a") == 0.0
    clock.advance(1.0)
    assert fd.phi("a") == pytest.approx(PHI_FACTOR * 1.0 / 2.0)
    assert fd.is_available("a")


def test_a_fresh_peer_is_not_convicted_before_the_initial_interval_allows() -> None:
    clock = ManualClock()
    opts = DetectorOptions(initial_interval_s=2.0)
    fd = FailureDetector(clock, opts)
    fd.heartbeat("a")
    delay = opts.conviction_delay_s(2.0)  # 8 * ln(10) * 2 = 36.8 s
    clock.advance(delay - 0.01)
    assert fd.is_available("a") and fd.check() == []
    clock.advance(0.02)
    assert not fd.is_available("a")
    [down] = fd.check()
    assert down.peer == "a" and down.to is Liveness.DOWN and down.phi >= 8.0


def test_phi_is_exponential_in_the_silence_over_the_mean() -> None:
    clock = ManualClock()
    fd = FailureDetector(clock, DetectorOptions(window_size=10))
    fd.heartbeat("a")
    beats(fd, clock, "a", 0.5, 10)  # the window now holds ten 0.5 s intervals
    assert fd.mean_interval_s("a") == pytest.approx(0.5)
    for silence in (0.1, 1.0, 3.0, 9.0):
        clock.advance(silence - (clock.monotonic() - 5.0))
        assert fd.phi("a") == pytest.approx(-math.log10(math.exp(-silence / 0.5)))


def test_conviction_happens_exactly_at_the_stated_delay() -> None:
    clock = ManualClock()
    opts = DetectorOptions(acceptable_heartbeat_pause_s=3.0)
    fd = FailureDetector(clock, opts)
    fd.heartbeat("a")
    beats(fd, clock, "a", 1.0, 2000)
    mean = fd.mean_interval_s("a")
    assert mean == pytest.approx(1.0)
    assert opts.conviction_delay_s(1.0) == pytest.approx(3.0 + 8 * math.log(10))
    clock.advance(3.0)
    assert fd.phi("a") == 0.0  # the pause raises no suspicion at all
    clock.advance(opts.conviction_delay_s(1.0) - 3.0 - 1e-6)
    assert fd.is_available("a")
    clock.advance(2e-6)
    assert not fd.is_available("a")


def test_long_silences_are_outages_not_samples() -> None:
    clock = ManualClock()
    fd = FailureDetector(clock, DetectorOptions(interval_max_s=2.0, window_size=4))
    fd.heartbeat("a")
    beats(fd, clock, "a", 1.0, 4)
    clock.advance(60.0)
    assert [t.to for t in fd.check()] == [Liveness.DOWN]
    assert fd.heartbeat("a") == Transition("a", Liveness.UP, 0.0, clock.monotonic())
    assert fd.mean_interval_s("a") == pytest.approx(1.0)  # the 60 s gap was not learned
    assert fd.stats("a") == (6, 1)


def test_the_mean_has_a_floor() -> None:
    clock = ManualClock()
    fd = FailureDetector(clock, DetectorOptions(mean_interval_min_s=0.25, window_size=8))
    fd.heartbeat("a")
    beats(fd, clock, "a", 0.001, 8)  # a burst of arrivals
    assert fd.mean_interval_s("a") == 0.25


def test_each_transition_is_reported_once_in_order() -> None:
    clock = ManualClock()
    fd = FailureDetector(clock)
    for peer in ("c", "a", "b"):
        fd.heartbeat(peer)
    clock.advance(10.0)
    fd.heartbeat("b")
    clock.advance(30.0)
    downs = fd.check()
    assert [t.peer for t in downs] == ["a", "c"]  # b heard 30 s ago: 30 < 8 ln10 * 2
    assert fd.check() == []  # reported once
    assert fd.reported("a") is Liveness.DOWN and fd.reported("b") is Liveness.UP
    assert fd.heartbeat("a") is not None and fd.heartbeat("a") is None
    assert fd.available() == {"a", "b"}


def test_queries_do_not_change_state() -> None:
    clock = ManualClock()
    fd = FailureDetector(clock)
    fd.heartbeat("a")
    clock.advance(100.0)
    assert not fd.is_available("a") and fd.phi("a") > 8
    assert fd.reported("a") is Liveness.UP  # only check() reports the conviction
    assert len(fd.check()) == 1


def test_remove_forgets_the_window() -> None:
    clock = ManualClock()
    fd = FailureDetector(clock)
    fd.heartbeat("a")
    fd.remove("a")
    fd.remove("never-seen")
    assert fd.phi("a") == math.inf and list(fd.peers()) == []
    assert fd.heartbeat("a") is not None  # a fresh window: reported up again


def test_options_bound_every_conviction() -> None:
    opts = DetectorOptions(initial_interval_s=2.0, interval_max_s=3.0)
    assert opts.mean_interval_max_s == 3.0
    assert opts.conviction_delay_max_s == pytest.approx(8 * math.log(10) * 3.0)
    with pytest.raises(AssertionError):
        DetectorOptions(mean_interval_min_s=5.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=300),
       st.integers(min_value=1, max_value=50))
def test_the_window_mean_is_exact_and_bounded(intervals: list[float], window: int) -> None:
    """Invariants 2 and 4, whatever the arrivals: the mean is the mean of the last
    ``window`` learnable intervals (to the microsecond) and lies within the stated bounds."""
    opts = DetectorOptions(window_size=window, interval_max_s=2.0, initial_interval_s=2.0,
                           mean_interval_min_s=0.25)
    clock = ManualClock()
    fd = FailureDetector(clock, opts)
    fd.heartbeat("a")
    learned = [2_000_000]
    for interval in intervals:
        before = clock.monotonic()
        clock.advance(interval)
        fd.heartbeat("a")
        actual = clock.monotonic() - before
        if actual <= opts.interval_max_s:
            learned.append(round(actual * 1_000_000))
    expected = sum(learned[-window:]) / len(learned[-window:]) / 1_000_000
    mean = fd.mean_interval_s("a")
    assert mean is not None
    assert mean == pytest.approx(max(expected, 0.25), abs=1e-9)
    assert mean is not None and 0.25 <= mean <= opts.mean_interval_max_s


def test_regular_heartbeats_with_jitter_are_never_convicted() -> None:
    """A peer heard every 1 s +- 50% for a day of virtual time, checked every second."""
    clock = ManualClock()
    fd = FailureDetector(clock)
    rng = random.Random(7)
    fd.heartbeat("a")
    next_beat = rng.uniform(0.5, 1.5)
    for _ in range(86_400):
        clock.advance(1.0)
        if clock.monotonic() >= next_beat:
            fd.heartbeat("a")
            next_beat = clock.monotonic() + rng.uniform(0.5, 1.5)
        assert fd.check() == []
    assert fd.stats("a")[1] == 0
