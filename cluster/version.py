"""Versions and sibling sets: what one key holds, and how two histories of it reconcile.

A key's stored value is a *sibling set*: a tuple of ``Version``s whose clocks are pairwise
concurrent. Dynamo (DeCandia et al., SOSP 2007, section 4.4) keeps every concurrent version and
lets a later write that read them all supersede them; Redis clients, which expect one value,
see the ``winner``.

Invariants:
1. ``merge`` drops every version whose clock is dominated by another version's clock, keeps
   concurrent ones, and keeps exactly one version per clock (the greatest by ``rank``). It is
   commutative, associative and idempotent, so replicas that merge the same versions in any
   order hold the same set (property tests: tests/test_cluster_version.py).
2. ``merge`` returns siblings sorted by ``rank``, so equal sets encode to equal bytes.
3. ``rank`` is a total order on distinct versions: timestamp_ms, then writer actor (DESIGN.md:
   the newest write wins, ties broken by actor), then tombstone over value, then the rest of
   the fields. ``winner`` is the greatest by ``rank``.
4. A version is *dead* from ``dead_at``: a tombstone from its timestamp (or its expiry, if it
   is an expired value turned tombstone), a value from its expiry, a value without expiry
   never. A key whose versions are all dead may be purged ``grace_ms`` after the last death.
5. ``limit`` and ``prune_siblings`` are bounds, not part of the semilattice: ``limit`` drops
   live versions (counted), and with it convergence is only guaranteed while no key exceeds
   the limit.

Performance note: a ``Version`` is a plain tuple, not a NamedTuple or a class: the codec
builds one per GET, and ``tuple.__new__(SomeNamedTuple, ...)`` alone costs more than 100 ns
there. Read fields by unpacking (``clock, ts, exp, writer, value = v``) or with the index
constants below. Do not turn it back into a class without measuring GET.
"""

from __future__ import annotations

from typing import Final

from cluster import vclock
from cluster.vclock import PruneBounds, VClock

# (clock, timestamp_ms, expire_at_ms (0 = none), writer actor, value (None = tombstone))
Version = tuple[VClock, int, int, bytes, bytes | None]
CLOCK: Final = 0
TIMESTAMP_MS: Final = 1
EXPIRE_AT_MS: Final = 2
WRITER: Final = 3
VALUE: Final = 4


Siblings = tuple[Version, ...]
RankKey = tuple[int, bytes, bool, int, bytes, tuple[tuple[bytes, tuple[int, int]], ...]]


def rank(v: Version) -> RankKey:
    """Total order of distinct versions; the greatest is the ``winner``."""
    clock, timestamp_ms, expire_at_ms, writer, value = v
    return (
        timestamp_ms,
        writer,
        value is None,
        expire_at_ms,
        value if value is not None else b"",
        tuple(sorted(clock.items())),
    )


def winner(siblings: Siblings) -> Version:
    """The version a plain Redis read sees: highest timestamp, ties broken by writer actor.

    REQUIRES: siblings is not empty.
    """
    if len(siblings) == 1:
        return siblings[0]
    return max(siblings, key=rank)


def merge(siblings: Siblings, incoming: Siblings) -> Siblings:
    """Reconcile two sibling sets (Dynamo 4.4 syntactic reconciliation).

    Keeps the versions of both whose clock no other version dominates, one per clock, sorted
    by ``rank``.
    """
    by_clock: dict[tuple[tuple[bytes, int], ...], Version] = {}
    for v in siblings + incoming:
        counters = tuple(sorted((actor, entry[0]) for actor, entry in v[CLOCK].items()))
        other = by_clock.get(counters)
        if other is None or rank(v) > rank(other):
            by_clock[counters] = v
    unique = list(by_clock.values())
    if len(unique) == 1:
        return (unique[0],)
    # After de-duplication no two clocks are equal, so descends() means dominates().
    kept = [
        v
        for v in unique
        if not any(w is not v and vclock.descends(w[CLOCK], v[CLOCK]) for w in unique)
    ]
    kept.sort(key=rank)
    return tuple(kept)


def limit(siblings: Siblings, siblings_max: int) -> tuple[Siblings, int]:
    """Keep the ``siblings_max`` greatest versions by ``rank``; returns (kept, dropped count)."""
    assert siblings_max >= 1, siblings_max
    if len(siblings) <= siblings_max:
        return siblings, 0
    ordered = sorted(siblings, key=rank)
    return tuple(ordered[-siblings_max:]), len(ordered) - siblings_max


def dead_at(v: Version) -> int | None:
    """Wall time (ms) from which ``v`` holds no live value, or None if never (invariant 4)."""
    _, timestamp_ms, expire_at_ms, _, value = v
    if value is None:
        return max(timestamp_ms, expire_at_ms)
    return expire_at_ms or None


def purge_at(siblings: Siblings, grace_ms: int) -> int | None:
    """When the whole key may be physically removed, or None while any version may live."""
    last = 0
    for v in siblings:
        at = dead_at(v)
        if at is None:
            return None
        last = max(last, at)
    return last + grace_ms


def expire(siblings: Siblings, now_ms: int) -> Siblings:
    """``siblings`` with every value expired at ``now_ms`` turned into a tombstone.

    The tombstone keeps the clock, timestamp, writer and expiry, so every replica that expires
    the same version makes the same tombstone, and ``rank`` prefers it over the value it
    replaces (same timestamp and writer, tombstone first): replicas converge either way.
    Returns ``siblings`` itself when nothing expired.
    """
    if not any(_expired(v, now_ms) for v in siblings):
        return siblings
    return tuple((v[0], v[1], v[2], v[3], None) if _expired(v, now_ms) else v for v in siblings)


def _expired(v: Version, now_ms: int) -> bool:
    return v[VALUE] is not None and 0 < v[EXPIRE_AT_MS] <= now_ms


def prune_siblings(siblings: Siblings, now_ms: int, bounds: PruneBounds) -> tuple[Siblings, int]:
    """Prune each sibling's clock (``vclock.prune``) unless that would lose a sibling.

    A pruned clock is refused when another sibling's clock would descend it (the version would
    then be dominated, or equal, and dropped by the next merge). Returns (siblings, number of
    clocks pruned); returns ``siblings`` itself when no clock changed.
    """
    pruned_count = 0
    out = list(siblings)
    for i, v in enumerate(siblings):
        if len(v[CLOCK]) <= bounds.entries_small:
            continue
        clock = vclock.prune(v[CLOCK], now_ms, bounds)
        if clock is v[CLOCK]:
            continue
        if any(j != i and vclock.descends(w[CLOCK], clock) for j, w in enumerate(siblings)):
            continue
        out[i] = (clock, v[1], v[2], v[3], v[4])
        pruned_count += 1
    if pruned_count == 0:
        return siblings, 0
    return tuple(out), pruned_count
