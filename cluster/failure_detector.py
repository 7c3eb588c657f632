"""Phi-accrual failure detection, per peer (Hayashi et al., "The phi accrual failure detector",
2004), in Cassandra's exponential form.

Theory of operation. Each peer has an arrival window: the last heartbeat arrival time and a
bounded window of inter-arrival intervals. Instead of a yes/no timeout the detector answers
a suspicion level ``phi(now) = -log10(P_later(now - last))``: the probability, under the
learned arrival distribution, that the next heartbeat would come later than it already has.
``phi = 1`` means a 10% chance the peer is merely late, ``phi = 8`` one in 10**8. A peer is
available while ``phi < phi_convict_threshold``.

Distribution: exponential (Cassandra's ``ArrivalWindow``), not Akka's normal. Then
``P_later(t) = exp(-t / mean)`` and ``phi = log10(e) * t / mean``. Why:
- Heartbeats reach us through gossip (``cluster.gossip``): a peer's newer heartbeat arrives
  whenever we exchange with any node that has seen it, so arrivals are the merge of random
  exchanges, a process close to Poisson, not a metronome. A normal model learned over a calm
  spell has a tiny deviation and convicts at the first multi-second gap that random target
  choice produces now and then; Akka patches that with two more tunables (a minimum standard
  deviation and a pause). The exponential has one parameter, the mean, and a heavy enough
  tail that such gaps stay far below the threshold.
- ``phi`` is linear in the silence, so the conviction time has a closed form we can state
  and test: a peer whose mean interval is ``m`` is convicted ``pause + threshold * ln(10) * m``
  seconds after its last heartbeat (``conviction_delay_s``); 18.4 ``m`` at threshold 8.
- Cassandra runs exactly this with the same default threshold.

Invariants:
1. Time comes only from the injected ``Clock`` (``monotonic()``); there is no wall time and no
   randomness here, so a simulation replays it.
2. The window holds at most ``window_size`` intervals (oldest dropped first); the mean is
   kept exactly (integer microseconds), so it never drifts however long the node runs.
3. A peer's first heartbeat seeds its window with ``initial_interval_s``, so a fresh peer is
   judged by a deliberately long expected interval (a false negative costs a little time, a
   false positive flaps the peer) until real intervals outweigh it.
4. An interval longer than ``interval_max_s`` is not a sample: it is an outage or a pause,
   and learning it would make the detector slow to convict the next time. The mean is
   therefore at most ``max(initial_interval_s, interval_max_s)`` and at least
   ``mean_interval_min_s``, so every conviction is bounded by ``conviction_delay_s``.
5. ``phi`` is 0 during the first ``acceptable_heartbeat_pause_s`` of silence, then grows
   linearly; it never decreases except at a heartbeat (which resets it to 0).
6. Queries (``phi``, ``is_available``) never change state. Transitions are reported exactly
   once each, in order: down->up by the ``heartbeat()`` that revives a peer (a peer's first
   heartbeat reports it up), up->down by the ``check()`` that first sees it convicted.
   ``is_available`` may run ahead of the reported state by less than one ``check`` period.
7. A peer the detector has never heard from (or has ``remove()``-d) is not available:
   ``phi`` is infinite. Membership decides who exists; the detector only times them.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from cluster.clock import Clock

PHI_FACTOR = 1.0 / math.log(10.0)  # log10(e): phi = PHI_FACTOR * silence / mean
_US = 1_000_000  # intervals are kept in integer microseconds (invariant 2)


@dataclass(frozen=True, slots=True)
class DetectorOptions:
    # Suspicion at which a peer is convicted (Cassandra's phi_convict_threshold).
    phi_convict_threshold: float = 8.0
    # Intervals kept per peer: long enough to average out bursts, bounded in memory.
    window_size: int = 1000
    # The assumed interval before any is measured (invariant 3); Cassandra: 2x gossip interval.
    initial_interval_s: float = 2.0
    # Longer silences are outages, not samples (invariant 4).
    interval_max_s: float = 2.0
    # Floor of the mean: arrivals bunched by gossip must not make the detector trigger-happy.
    mean_interval_min_s: float = 0.25
    # Silence that raises no suspicion at all (a GC pause, a busy loop) before phi grows.
    acceptable_heartbeat_pause_s: float = 0.0

    def __post_init__(self) -> None:
        assert self.phi_convict_threshold > 0, self.phi_convict_threshold
        assert self.window_size >= 1, self.window_size
        assert 0 < self.mean_interval_min_s <= self.initial_interval_s, self
        assert self.mean_interval_min_s <= self.interval_max_s, self
        assert self.acceptable_heartbeat_pause_s >= 0, self

    @property
    def mean_interval_max_s(self) -> float:
        """The largest mean the window can hold (invariant 4)."""
        return max(self.initial_interval_s, self.interval_max_s)

    def conviction_delay_s(self, mean_s: float) -> float:
        """Silence after which a peer with mean interval ``mean_s`` is convicted."""
        return self.acceptable_heartbeat_pause_s + self.phi_convict_threshold * mean_s / PHI_FACTOR

    @property
    def conviction_delay_max_s(self) -> float:
        """The longest any conviction can take after the last heartbeat (invariant 4)."""
        return self.conviction_delay_s(self.mean_interval_max_s)


class Liveness(enum.Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of a peer's reported liveness, for the caller to log and act on."""

    peer: str
    to: Liveness
    phi: float  # the suspicion when the change was seen (0.0 for an arrival)
    at_s: float  # monotonic time of the change


@dataclass(slots=True)
class _Window:
    last_s: float
    intervals_us: deque[int]
    sum_us: int
    reported: Liveness = Liveness.UP
    arrivals: int = 1
    convictions: int = 0

    def add(self, interval_us: int) -> None:
        if len(self.intervals_us) == self.intervals_us.maxlen:
            self.sum_us -= self.intervals_us[0]  # deque(maxlen) drops it on append
        self.intervals_us.append(interval_us)
        self.sum_us += interval_us


class FailureDetector:
    """Per-peer arrival windows and their phi (see the module docstring)."""

    def __init__(self, clock: Clock, options: DetectorOptions | None = None) -> None:
        self.clock = clock
        self.options = options or DetectorOptions()
        self._windows: dict[str, _Window] = {}

    # Feeding ---------------------------------------------------------------------------------

    def heartbeat(self, peer: str) -> Transition | None:
        """Record a heartbeat of ``peer`` now; the down->up transition if it revives it
        (or is its first heartbeat), else None (invariant 6)."""
        now = self.clock.monotonic()
        opts = self.options
        window = self._windows.get(peer)
        if window is None:
            window = _Window(now, deque(maxlen=opts.window_size), 0)
            window.add(round(opts.initial_interval_s * _US))  # invariant 3
            self._windows[peer] = window
            return Transition(peer, Liveness.UP, 0.0, now)
        interval_s = now - window.last_s
        assert interval_s >= 0, (peer, interval_s)  # a monotonic clock
        if interval_s <= opts.interval_max_s:  # invariant 4
            window.add(round(interval_s * _US))
        window.last_s = now
        window.arrivals += 1
        if window.reported is Liveness.DOWN:
            window.reported = Liveness.UP
            return Transition(peer, Liveness.UP, 0.0, now)
        return None

    def remove(self, peer: str) -> None:
        """Forget ``peer`` (it left the cluster); a later heartbeat starts a fresh window."""
        self._windows.pop(peer, None)

    # Queries (invariant 6: no state changes) --------------------------------------------------

    def mean_interval_s(self, peer: str) -> float | None:
        """The mean the peer is judged by (None for an unknown peer), floored (invariant 4)."""
        window = self._windows.get(peer)
        if window is None:
            return None
        mean_s = window.sum_us / len(window.intervals_us) / _US
        return max(mean_s, self.options.mean_interval_min_s)

    def phi(self, peer: str) -> float:
        """The suspicion level of ``peer`` now; ``inf`` for a peer never heard from."""
        window = self._windows.get(peer)
        if window is None:
            return math.inf
        mean_s = self.mean_interval_s(peer)
        assert mean_s is not None
        pause_s = self.options.acceptable_heartbeat_pause_s
        silence_s = self.clock.monotonic() - window.last_s - pause_s
        return PHI_FACTOR * max(0.0, silence_s) / mean_s

    def is_available(self, peer: str) -> bool:
        return self.phi(peer) < self.options.phi_convict_threshold

    def reported(self, peer: str) -> Liveness | None:
        """The liveness last reported by a transition (None for an unknown peer)."""
        window = self._windows.get(peer)
        return None if window is None else window.reported

    def peers(self) -> Iterator[str]:
        return iter(sorted(self._windows))

    def available(self) -> set[str]:
        return {peer for peer in self._windows if self.is_available(peer)}

    def stats(self, peer: str) -> tuple[int, int]:
        """(heartbeats received, convictions) of ``peer``; (0, 0) if unknown."""
        window = self._windows.get(peer)
        return (0, 0) if window is None else (window.arrivals, window.convictions)

    # Periodic evaluation -----------------------------------------------------------------------

    def check(self) -> list[Transition]:
        """The up->down transitions since the last check, peers in sorted order.

        Call it periodically (every gossip round); a peer convicted here stays down until its
        next heartbeat.
        """
        now = self.clock.monotonic()
        convicted: list[Transition] = []
        for peer in sorted(self._windows):
            window = self._windows[peer]
            if window.reported is Liveness.UP:
                phi = self.phi(peer)
                if phi >= self.options.phi_convict_threshold:
                    window.reported = Liveness.DOWN
                    window.convictions += 1
                    convicted.append(Transition(peer, Liveness.DOWN, phi, now))
        return convicted
