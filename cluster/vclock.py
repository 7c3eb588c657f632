"""Vector clocks: pure functions over ``actor -> (counter, timestamp_ms)``.

References: L. Lamport, "Time, Clocks, and the Ordering of Events in a Distributed System",
CACM 21(7), 1978 (the happened-before order); DeCandia et al., "Dynamo: Amazon's Highly
Available Key-value Store", SOSP 2007, section 4.4 (vector clocks on versions, reconciliation,
clock truncation); Basho ``riak_core/src/vclock.erl`` (pruning bounds).

Representation (chosen for the hot path of every SET): a plain ``dict`` from actor bytes to a
``(counter, timestamp_ms)`` tuple, the same shape msgpack decodes to, so reading a clock from
disk builds no objects of ours. ``timestamp_ms`` is the wall time of the entry's last bump; it
only serves pruning and never decides causality.

Invariants:
1. Every counter is >= 1; an absent actor means counter 0.
2. Clocks are immutable by convention: no function here mutates an argument. A function may
   return one of its arguments unchanged, so callers must never mutate a clock either.
3. Clocks returned here with more than one entry are ordered by actor bytes, so equal clocks
   encode to equal bytes (the codec re-sorts any clock built elsewhere).
4. ``merge`` is commutative, associative and idempotent (a join semilattice); property tests
   in tests/test_cluster_vclock.py check it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Entry = tuple[int, int]  # (counter, timestamp_ms of the last bump)
VClock = dict[bytes, Entry]
ClockLike = Mapping[bytes, Entry]


def increment(clock: ClockLike, actor: bytes, now_ms: int) -> VClock:
    """``clock`` with ``actor``'s counter bumped by one and stamped ``now_ms``.

    Lamport 1978, IR1: each process increments its own counter between two events; Dynamo 4.4:
    the coordinator of a write increments its own entry. The result strictly dominates
    ``clock``.
    """
    current = clock.get(actor)
    out = dict(clock)
    if current is not None:
        out[actor] = (current[0] + 1, now_ms)
        return out
    out[actor] = (1, now_ms)
    if len(out) > 1:
        out = dict(sorted(out.items()))
    return out


def descends(a: ClockLike, b: ClockLike) -> bool:
    """True when ``a`` has seen every event ``b`` has: ``a[x] >= b[x]`` for every actor x.

    Lamport 1978's happened-before, as the componentwise order of Dynamo 4.4. Every clock
    descends itself and the empty clock.
    """
    if a is b:
        return True
    for actor, entry in b.items():
        mine = a.get(actor)
        if mine is None or mine[0] < entry[0]:
            return False
    return True


def dominates(a: ClockLike, b: ClockLike) -> bool:
    """True when ``a`` descends ``b`` and ``b`` does not descend ``a`` (strictly newer).

    Dynamo 4.4: a version whose clock is dominated is obsolete and may be forgotten. Both
    directions must be checked: do not "optimise" this into one descends() call, which would
    call equal clocks dominating (as riak_core's vclock:dominates/2 warns).
    """
    return descends(a, b) and not descends(b, a)


def equal(a: ClockLike, b: ClockLike) -> bool:
    """True when ``a`` and ``b`` have the same counters (timestamps are ignored)."""
    if len(a) != len(b):
        return False
    for actor, entry in b.items():
        mine = a.get(actor)
        if mine is None or mine[0] != entry[0]:
            return False
    return True


def concurrent(a: ClockLike, b: ClockLike) -> bool:
    """True when neither clock descends the other (Lamport 1978: neither happened before)."""
    return not descends(a, b) and not descends(b, a)


def merge(clocks: Iterable[ClockLike]) -> VClock:
    """The least clock that descends every clock given (componentwise maximum).

    Dynamo 4.4: a reconciled version's clock covers every version it reconciles. For one
    actor, the entry with the greater counter wins, then the later timestamp, so the result
    does not depend on the order of ``clocks``.
    """
    out: VClock = {}
    for clock in clocks:
        for actor, entry in clock.items():
            mine = out.get(actor)
            if mine is None or entry > mine:
                out[actor] = entry
    if len(out) > 1:
        out = dict(sorted(out.items()))
    return out


@dataclass(frozen=True, slots=True)
class PruneBounds:
    """Riak's four pruning bounds (small_vclock, big_vclock, young_vclock, old_vclock).

    entries_small: a clock this short is never pruned (Riak 10).
    entries_big: a clock longer than this loses old-enough entries until it fits (Riak 50).
    age_young_ms: an entry bumped this recently is never pruned (Riak 20 s).
    age_old_ms: an entry older than this is pruned whenever the clock is not small (Riak 1 day).
    """

    entries_small: int = 10
    entries_big: int = 50
    age_young_ms: int = 20_000
    age_old_ms: int = 86_400_000

    def __post_init__(self) -> None:
        assert 1 <= self.entries_small <= self.entries_big, self
        assert 0 <= self.age_young_ms <= self.age_old_ms, self


def prune(clock: VClock, now_ms: int, bounds: PruneBounds) -> VClock:
    """``clock`` with its oldest entries dropped, as Dynamo 4.4 truncates clocks and Riak prunes.

    Entries are considered oldest first (by last-bump timestamp, then actor). While the clock
    is longer than ``entries_small`` and the oldest entry is not young: it is dropped when the
    clock is longer than ``entries_big`` or the entry is older than ``age_old_ms``; otherwise
    pruning stops. Returns ``clock`` itself when nothing is dropped.

    The trade-off (Dynamo 4.4 names it): the pruned clock is descended by the original but may
    no longer descend a version the original descended. When such an old version meets it
    again (a replica that was away for longer than ``age_old_ms``), the two look concurrent and
    become siblings instead of the old one being dropped: extra siblings, never a silently lost
    write from that side. The dangerous direction is a *concurrent* version that descends the
    pruned clock while it did not descend the original, which would drop a live write; the age
    bounds make that require an entry unbumped for ``age_old_ms`` and a version that missed
    it, and ``version.prune_siblings`` refuses any pruning that would make a stored sibling
    dominated. Pruning is the price of bounded clocks; the counters in INFO show how often.
    """
    if len(clock) <= bounds.entries_small:
        return clock
    by_age = sorted(clock.items(), key=lambda item: (item[1][1], item[0]))
    cut = 0
    remaining = len(by_age)
    while remaining > bounds.entries_small:
        age_ms = now_ms - by_age[cut][1][1]
        if age_ms < bounds.age_young_ms:
            break
        if remaining > bounds.entries_big or age_ms > bounds.age_old_ms:
            cut += 1
            remaining -= 1
            continue
        break
    if cut == 0:
        return clock
    kept = {actor for actor, _ in by_age[cut:]}
    return {actor: entry for actor, entry in clock.items() if actor in kept}
