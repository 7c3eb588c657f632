"""Vector clocks: the semilattice laws of merge, the partial order, and pruning bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cluster import vclock
from cluster.vclock import PruneBounds

ACTORS = [bytes([i]) * 8 for i in range(6)]

entries = st.tuples(st.integers(1, 5), st.integers(0, 10**6))
clocks = st.dictionaries(st.sampled_from(ACTORS), entries, max_size=len(ACTORS)).map(
    lambda clock: dict(sorted(clock.items()))
)


def counters(clock: vclock.ClockLike) -> dict[bytes, int]:
    return {actor: entry[0] for actor, entry in clock.items()}


@given(clocks, clocks)
def test_merge_commutative(a: vclock.VClock, b: vclock.VClock) -> None:
    assert vclock.merge([a, b]) == vclock.merge([b, a])


@given(clocks, clocks, clocks)
def test_merge_associative(a: vclock.VClock, b: vclock.VClock, c: vclock.VClock) -> None:
    left = vclock.merge([vclock.merge([a, b]), c])
    right = vclock.merge([a, vclock.merge([b, c])])
    assert left == right
    assert list(left) == sorted(left)


@given(clocks)
def test_merge_idempotent(a: vclock.VClock) -> None:
    assert vclock.merge([a, a]) == a
    assert vclock.merge([a]) == a


@given(clocks, clocks)
def test_merge_is_least_upper_bound(a: vclock.VClock, b: vclock.VClock) -> None:
    m = vclock.merge([a, b])
    assert vclock.descends(m, a)
    assert vclock.descends(m, b)
    expected = {x: max(counters(a).get(x, 0), counters(b).get(x, 0)) for x in {*a, *b}}
    assert counters(m) == expected


@given(clocks, clocks)
def test_order_relations_are_exclusive(a: vclock.VClock, b: vclock.VClock) -> None:
    relations = [
        vclock.equal(a, b),
        vclock.dominates(a, b),
        vclock.dominates(b, a),
        vclock.concurrent(a, b),
    ]
    assert sum(relations) == 1


@given(clocks, st.sampled_from(ACTORS), st.integers(0, 10**7))
def test_increment_strictly_dominates(a: vclock.VClock, actor: bytes, now_ms: int) -> None:
    b = vclock.increment(a, actor, now_ms)
    assert vclock.dominates(b, a)
    assert b[actor] == (a.get(actor, (0, 0))[0] + 1, now_ms)
    assert list(b) == sorted(b)
    assert a == vclock.merge([a])  # the argument was not mutated


def test_descends_empty_and_self() -> None:
    a = {ACTORS[0]: (2, 5)}
    assert vclock.descends(a, {})
    assert not vclock.descends({}, a)
    assert vclock.descends(a, dict(a))
    assert vclock.equal(a, {ACTORS[0]: (2, 99)})  # timestamps do not take part


def test_merge_prefers_later_stamp_on_equal_counter() -> None:
    a = {ACTORS[0]: (3, 10)}
    b = {ACTORS[0]: (3, 20)}
    assert vclock.merge([a, b]) == vclock.merge([b, a]) == {ACTORS[0]: (3, 20)}


bounds = PruneBounds(entries_small=3, entries_big=5, age_young_ms=1_000, age_old_ms=10_000)
big_clocks = st.dictionaries(
    st.binary(min_size=1, max_size=3), st.tuples(st.integers(1, 9), st.integers(0, 30_000)),
    max_size=9,
)


@given(big_clocks, st.integers(0, 40_000))
def test_prune_only_forgets(clock: vclock.VClock, now_ms: int) -> None:
    pruned = vclock.prune(clock, now_ms, bounds)
    assert vclock.descends(clock, pruned)
    assert all(clock[actor] == entry for actor, entry in pruned.items())
    assert len(pruned) >= min(len(clock), bounds.entries_small)
    for actor in set(clock) - set(pruned):
        assert now_ms - clock[actor][1] >= bounds.age_young_ms  # young entries survive
        # every dropped entry is no younger than every kept one
        assert all((clock[actor][1], actor) <= (e[1], a) for a, e in pruned.items())
    if len(pruned) > bounds.entries_big:
        young = [e for e in pruned.values() if now_ms - e[1] < bounds.age_young_ms]
        assert young, "a clock stays above entries_big only because of young entries"


def test_prune_small_clock_untouched() -> None:
    clock = {ACTORS[0]: (1, 0), ACTORS[1]: (1, 0)}
    assert vclock.prune(clock, 10**9, bounds) is clock


def test_prune_old_entries_beyond_small() -> None:
    clock = {bytes([i]): (1, i) for i in range(5)}
    pruned = vclock.prune(clock, 100_000, bounds)
    assert pruned == {bytes([2]): (1, 2), bytes([3]): (1, 3), bytes([4]): (1, 4)}


def test_prune_keeps_middle_aged_entries_until_big() -> None:
    now_ms = 5_000  # every entry is older than young but younger than old
    clock = {bytes([i]): (1, i) for i in range(5)}
    assert vclock.prune(clock, now_ms, bounds) is clock
    bigger = {bytes([i]): (1, i) for i in range(7)}
    assert len(vclock.prune(bigger, now_ms, bounds)) == bounds.entries_big
