"""Sibling sets: merge is a semilattice keeping exactly the concurrent versions; winner,
limit, expiry and sibling-safe pruning."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from cluster import vclock
from cluster.vclock import PruneBounds
from cluster.version import (
    CLOCK,
    Siblings,
    Version,
    dead_at,
    expire,
    limit,
    merge,
    prune_siblings,
    purge_at,
    rank,
    winner,
)

ACTORS = [bytes([i]) * 8 for i in range(4)]

clocks = st.dictionaries(
    st.sampled_from(ACTORS), st.tuples(st.integers(1, 3), st.integers(0, 3)), min_size=1
).map(lambda clock: dict(sorted(clock.items())))
versions = st.tuples(
    clocks,
    st.integers(0, 5),
    st.sampled_from([0, 3, 10]),
    st.sampled_from(ACTORS),
    st.one_of(st.none(), st.sampled_from([b"a", b"b", b""])),
)
def fold(vs: Sequence[Version]) -> Siblings:
    out: Siblings = ()
    for v in vs:
        out = merge(out, (v,))
    return out


sets = st.lists(versions, max_size=5).map(fold)


def counters(v: Version) -> dict[bytes, int]:
    return {actor: entry[0] for actor, entry in v[CLOCK].items()}


def merged(a: Siblings, b: Siblings) -> Siblings:
    return merge(a, b)


@given(sets, sets)
def test_merge_commutative(a: Siblings, b: Siblings) -> None:
    assert merge(a, b) == merge(b, a)


@given(sets, sets, sets)
def test_merge_associative(a: Siblings, b: Siblings, c: Siblings) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(sets)
def test_merge_idempotent(a: Siblings) -> None:
    assert merge(a, a) == a
    assert merge(a, ()) == a


@given(st.lists(versions, max_size=6))
def test_merge_keeps_exactly_the_undominated_versions(vs: list[Version]) -> None:
    result = fold(vs)
    for v in vs:
        dominated = any(vclock.dominates(w[CLOCK], v[CLOCK]) for w in vs)
        kept_same_clock = [r for r in result if vclock.equal(r[CLOCK], v[CLOCK])]
        if dominated:
            assert not kept_same_clock
        else:
            # exactly one version per clock: the greatest by rank among those with that clock
            best = max((w for w in vs if vclock.equal(w[CLOCK], v[CLOCK])), key=rank)
            assert kept_same_clock == [best]
    for i, x in enumerate(result):
        for y in result[i + 1 :]:
            assert vclock.concurrent(x[CLOCK], y[CLOCK])
    assert list(result) == sorted(result, key=rank)


@given(st.lists(versions, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_winner_independent_of_merge_order(vs: list[Version], rnd: random.Random) -> None:
    first = winner(fold(vs))
    shuffled = list(vs)
    rnd.shuffle(shuffled)
    # a different grouping too: merge two halves, then the halves together
    half = len(shuffled) // 2
    left = fold(shuffled[:half])
    right = fold(shuffled[half:])
    assert winner(merge(right, left)) == first


def test_winner_highest_timestamp_then_writer() -> None:
    a = ({ACTORS[0]: (1, 0)}, 10, 0, ACTORS[0], b"a")
    b = ({ACTORS[1]: (1, 0)}, 11, 0, ACTORS[1], b"b")
    c = ({ACTORS[2]: (1, 0)}, 11, 0, ACTORS[2], None)
    assert winner((a, b)) == b
    assert winner(merge((a, b), (c,))) == c  # same timestamp: the greater actor wins
    assert winner((c, b, a)) == c


def test_equal_clocks_deduplicate_preferring_newer_then_tombstone() -> None:
    clock = {ACTORS[0]: (1, 0)}
    old = (clock, 5, 0, ACTORS[0], b"old")
    new = (clock, 9, 0, ACTORS[0], b"new")
    assert merge((old,), (new,)) == (new,)
    expired_value = (clock, 9, 7, ACTORS[0], b"v")
    tombstone = (clock, 9, 7, ACTORS[0], None)
    assert merge((expired_value,), (tombstone,)) == (tombstone,)


def test_limit_keeps_newest() -> None:
    vs = tuple(({ACTORS[i]: (1, 0)}, i, 0, ACTORS[i], b"x") for i in range(4))
    kept, dropped = limit(vs, 2)
    assert dropped == 2
    assert [v[1] for v in kept] == [2, 3]
    assert limit(vs, 4) == (vs, 0)


def test_dead_at_and_purge_at() -> None:
    live = ({ACTORS[0]: (1, 0)}, 5, 0, ACTORS[0], b"v")
    expiring = ({ACTORS[1]: (1, 0)}, 5, 50, ACTORS[1], b"v")
    tombstone = ({ACTORS[2]: (1, 0)}, 20, 0, ACTORS[2], None)
    assert dead_at(live) is None
    assert dead_at(expiring) == 50
    assert dead_at(tombstone) == 20
    assert purge_at((tombstone,), 0) == 20
    assert purge_at((tombstone, expiring), 100) == 150
    assert purge_at((tombstone, live), 100) is None


def test_expire_turns_expired_values_into_tombstones() -> None:
    expiring = ({ACTORS[1]: (1, 0)}, 5, 50, ACTORS[1], b"v")
    live = ({ACTORS[0]: (1, 0)}, 5, 0, ACTORS[0], b"v")
    siblings = (live, expiring)
    assert expire(siblings, 49) is siblings
    assert expire(siblings, 50) == (live, ({ACTORS[1]: (1, 0)}, 5, 50, ACTORS[1], None))


prune_bounds = PruneBounds(entries_small=1, entries_big=2, age_young_ms=0, age_old_ms=1)
wide_clocks = st.dictionaries(
    st.sampled_from([bytes([i]) for i in range(6)]),
    st.tuples(st.integers(1, 3), st.integers(0, 10)),
    min_size=1,
).map(lambda clock: dict(sorted(clock.items())))
wide_sets = st.lists(
    st.tuples(wide_clocks, st.just(1), st.just(0), st.just(b"w"), st.just(b"v")), max_size=5
).map(fold)


@given(wide_sets, st.integers(0, 100))
def test_prune_siblings_never_drops_a_version(siblings: Siblings, now_ms: int) -> None:
    pruned, count = prune_siblings(siblings, now_ms, prune_bounds)
    assert len(pruned) == len(siblings)
    assert count == sum(a is not b for a, b in zip(pruned, siblings, strict=True))
    for before, after in zip(siblings, pruned, strict=True):
        assert vclock.descends(before[CLOCK], after[CLOCK])
    # merging the pruned set with itself (or with the original) loses no version
    assert len(merge(pruned, ())) == len(siblings)
    for i, x in enumerate(pruned):
        for y in pruned[i + 1 :]:
            assert vclock.concurrent(x[CLOCK], y[CLOCK])


def test_prune_siblings_refuses_pruning_into_domination() -> None:
    a, b = b"a", b"b"
    # x = {a:1, b:5} and y = {a:2, b:1} are concurrent. Pruning y's oldest entry (a) would
    # leave {b:1}, which x descends: y would be dropped, so that pruning is refused. Pruning
    # x's oldest entry (a, by actor order on equal stamps) leaves {b:5}: still concurrent.
    x = ({a: (1, 99), b: (5, 99)}, 1, 0, b"w", b"x")
    y = ({a: (2, 0), b: (1, 99)}, 1, 0, b"w", b"y")
    siblings = merge((x,), (y,))
    bounds = PruneBounds(entries_small=1, entries_big=1, age_young_ms=0, age_old_ms=1)
    pruned, count = prune_siblings(siblings, 100, bounds)
    assert count == 1
    assert y in pruned
    assert ({b: (5, 99)}, 1, 0, b"w", b"x") in pruned
    assert vclock.concurrent(pruned[0][CLOCK], pruned[1][CLOCK])
