"""Placement: primaries by clockwise walk with DC factors and rack spreading, fallbacks for
down nodes, the replication-factor setting."""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import tokens
from cluster.keys import TOKEN_MAX
from cluster.preflist import (
    REPLICAS_MAX,
    Entry,
    Placement,
    Replication,
    ReplicationFactorError,
    Role,
    format_replication,
    parse_replication,
    preference_list,
    primaries,
    replica_ranges,
    unserved,
)
from cluster.ring import RING_SIZE, NodeInfo, Ring, TokenRange

P, F = Role.PRIMARY, Role.FALLBACK
N3 = Replication.simple(3)


def ring_of(*spec: tuple[str, tuple[int, ...], str, str]) -> Ring:
    return Ring.build(NodeInfo(node_id, toks, dc, rack) for node_id, toks, dc, rack in spec)


# vnodes clockwise: 10a 20b 30c 40d 50e 60a; one datacenter, one rack
FLAT = ring_of(*((n, t, "dc1", "r1") for n, t in
                 [("a", (10, 60)), ("b", (20,)), ("c", (30,)), ("d", (40,)), ("e", (50,))]))
# one datacenter, three racks: a b | c d | e
RACKS = ring_of(("a", (10,), "dc1", "r1"), ("b", (20,), "dc1", "r1"), ("c", (30,), "dc1", "r2"),
                ("d", (40,), "dc1", "r2"), ("e", (50,), "dc1", "r3"))
# two datacenters interleaved clockwise: a x b y c z
DCS = ring_of(("a", (10,), "dc1", "r1"), ("x", (20,), "dc2", "r1"), ("b", (30,), "dc1", "r2"),
              ("y", (40,), "dc2", "r2"), ("c", (50,), "dc1", "r1"), ("z", (60,), "dc2", "r1"))


@pytest.mark.parametrize(("name", "ring", "replication", "tok", "expected"), [
    ("first n distinct", FLAT, N3, 5, ("a", "b", "c")),
    ("from the key's vnode", FLAT, N3, 15, ("b", "c", "d")),
    ("a node's second vnode is skipped", FLAT, N3, 55, ("a", "b", "c")),
    ("wrap-around", FLAT, N3, 45, ("e", "a", "b")),
    ("past the top wraps to the start", FLAT, N3, TOKEN_MAX, ("a", "b", "c")),
    ("fewer nodes than n", FLAT, Replication.simple(7), 5, ("a", "b", "c", "d", "e")),
    ("n = 1 is the owner", FLAT, Replication.simple(1), 31, ("d",)),
    ("racks spread first", RACKS, N3, 5, ("a", "c", "e")),
    ("racks reused when they run out", RACKS, Replication.simple(4), 5, ("a", "c", "e", "b")),
    ("reused in walk order", RACKS, Replication.simple(5), 5, ("a", "c", "e", "b", "d")),
    ("spread wraps too", RACKS, N3, 25, ("c", "e", "a")),
    ("dc factors", DCS, Replication.by_dc({"dc1": 2, "dc2": 1}), 5, ("a", "x", "b")),
    ("dc factors, both full", DCS, Replication.by_dc({"dc1": 2, "dc2": 2}), 5,
     ("a", "x", "b", "y")),
    ("a dc without a factor holds nothing", DCS, Replication.by_dc({"dc2": 2}), 5, ("x", "y")),
    ("a factor for a dc with no nodes", DCS, Replication.by_dc({"dc9": 3}), 5, ()),
    ("dc capped by its nodes", DCS, Replication.by_dc({"dc1": 5, "dc2": 1}), 5,
     ("a", "x", "b", "c")),
    ("a plain n spans every dc, racks per dc", DCS, N3, 5, ("a", "x", "b")),
])
def test_primaries(name: str, ring: Ring, replication: Replication, tok: int,
                   expected: tuple[str, ...]) -> None:
    assert primaries(tok, ring, replication) == expected, name


def test_rack_skipped_nodes_fill_in_walk_order() -> None:
    ring = ring_of(("a", (10,), "dc1", "r1"), ("b", (20,), "dc1", "r1"),
                   ("c", (30,), "dc1", "r2"))
    # b is skipped for r1, then placed as soon as r2 is used (after c)
    assert primaries(5, ring, N3) == ("a", "c", "b")


def entries(*spec: tuple[str, Role, str] | str) -> list[Entry]:
    return [Entry(s, P, s) if isinstance(s, str) else Entry(*s) for s in spec]


UP_FLAT = {"a", "b", "c", "d", "e"}


@pytest.mark.parametrize(("name", "ring", "replication", "down", "expected", "missing"), [
    ("all up", FLAT, N3, set(), entries("a", "b", "c"), []),
    ("one down: next beyond the list", FLAT, N3, {"b"}, entries("a", ("d", F, "b"), "c"), []),
    ("fallbacks in order", FLAT, N3, {"a", "b"},
     entries(("d", F, "a"), ("e", F, "b"), "c"), []),
    ("a down stand-in is skipped", FLAT, N3, {"a", "d"}, entries(("e", F, "a"), "b", "c"), []),
    ("no stand-in left", FLAT, N3, {"a", "b", "d"}, entries(("e", F, "a"), "c"), ["b"]),
    ("only one node up", FLAT, N3, {"b", "c", "d", "e"}, entries("a"), ["b", "c"]),
    ("a rack-skipped node stands in first", RACKS, N3, {"c"},
     entries("a", ("b", F, "c"), "e"), []),
    ("stand-in from the same dc", DCS, Replication.by_dc({"dc1": 2, "dc2": 1}), {"x"},
     entries("a", ("y", F, "x"), "b"), []),
    ("same dc even if another dc's node comes first", DCS,
     Replication.by_dc({"dc1": 2, "dc2": 1}), {"a"}, entries(("c", F, "a"), "x", "b"), []),
    ("a dc out of stand-ins", DCS, Replication.by_dc({"dc1": 2, "dc2": 1}), {"a", "c"},
     entries("x", "b"), ["a"]),
])
def test_preference_list(name: str, ring: Ring, replication: Replication, down: set[str],
                         expected: list[Entry], missing: list[str]) -> None:
    up = set(ring.nodes) - down
    got = preference_list(5, ring, replication, up)
    assert got == expected, name
    assert unserved(got, primaries(5, ring, replication)) == missing


def test_every_node_of_three_with_n3_one_down() -> None:
    ring = ring_of(*((n, (t,), "dc1", "r1") for n, t in [("a", 1), ("b", 2), ("c", 3)]))
    got = preference_list(0, ring, N3, {"a", "c"})
    assert got == entries("a", "c") and unserved(got, ("a", "b", "c")) == ["b"]


def test_empty_ring() -> None:
    empty = Ring.build([])
    assert preference_list(5, empty, N3, set()) == [] and primaries(5, empty, N3) == ()


@pytest.mark.parametrize(("text", "expected"), [
    ("3", Replication(3)),
    (" 1 ", Replication(1)),
    ("03", Replication(3)),
    ("dc1:3", Replication(3, (("dc1", 3),))),
    ("dc1:3 dc2:2", Replication(5, (("dc1", 3), ("dc2", 2)))),
    (["dc2:2", "dc1:3"], Replication(5, (("dc1", 3), ("dc2", 2)))),
    ("eu-west_1.a:1", Replication(1, (("eu-west_1.a", 1),))),
])
def test_parse_replication(text: str | list[str], expected: Replication) -> None:
    assert parse_replication(text) == expected
    assert parse_replication(format_replication(expected)) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "no value"),
    ("0", "'0': the factor must be an integer 1..16"),
    ("17", "'17': the factor must be an integer 1..16"),
    ("three", "'three': the factor must be"),
    ("\u0663", "the factor must be"),  # an Arabic-Indic 3: digits are ASCII only
    ("3 dc1:2", "'3' is not DC:N"),
    ("dc1:3 3", "'3' is not DC:N"),
    ("dc1:3 dc1:2", "datacenter 'dc1' given twice"),
    ("dc1:", "'dc1:': the factor must be"),
    ("dc1:0", "'dc1:0': the factor must be"),
    ("dc1:-1", "'dc1:-1': the factor must be"),
    (":3", "'' in ':3' is not a datacenter name"),
    ("d/c:3", "'d/c' in 'd/c:3' is not a datacenter name"),
    ("x" * 65 + ":1", "is not a datacenter name"),
    ("dc1:9 dc2:8", "17 replicas in total, at most 16"),
])
def test_parse_replication_errors(text: str, message: str) -> None:
    with pytest.raises(ReplicationFactorError) as info:
        parse_replication(text)
    assert message in str(info.value)
    assert str(info.value).startswith("replication-factor: ")


# Properties over random topologies --------------------------------------------------------

DCS_ALL = ["dc1", "dc2", "dc3"]
members_st = st.lists(
    st.tuples(st.lists(st.integers(0, TOKEN_MAX) | st.sampled_from([0, 7, TOKEN_MAX]),
                       min_size=1, max_size=4),
              st.sampled_from(DCS_ALL), st.sampled_from(["r1", "r2", "r3"])),
    min_size=1, max_size=8,
)
replication_st = st.one_of(
    st.integers(1, 5).map(Replication.simple),
    st.dictionaries(st.sampled_from([*DCS_ALL, "dc4"]), st.integers(1, 3), min_size=1)
    .map(Replication.by_dc),
)


def build(spec: Sequence[tuple[list[int], str, str]]) -> Ring:
    return Ring.build(NodeInfo(f"n{i}", tuple(t), dc, rack)
                      for i, (t, dc, rack) in enumerate(spec))


def group(ring: Ring, replication: Replication, node_id: str) -> str:
    return ring.nodes[node_id].datacenter if replication.per_dc else ""


@given(members_st, replication_st, st.integers(0, TOKEN_MAX), st.data())
def test_preference_list_properties(spec: list[tuple[list[int], str, str]],
                                    replication: Replication, tok: int,
                                    data: st.DataObject) -> None:
    ring = build(spec)
    up = data.draw(st.sets(st.sampled_from(sorted(ring.nodes))))
    prims = primaries(tok, ring, replication)
    got = preference_list(tok, ring, replication, up)
    names = [e.node_id for e in got]
    assert len(names) == len(set(names))  # never repeats a node
    assert len(prims) == len(set(prims))
    assert [e.node_id for e in got if e.role is P] == [p for p in prims if p in up]
    assert all(e.node_id == e.primary for e in got if e.role is P)
    for e in got:
        assert e.node_id in up
        if e.role is F:
            assert e.node_id not in prims and e.primary in prims and e.primary not in up
            assert group(ring, replication, e.node_id) == group(ring, replication, e.primary)
    served = [e.primary for e in got]
    assert served == [p for p in prims if p in served]  # preference order (invariant 4)
    # a primary goes unserved only when no up non-primary of its group is left over
    spare = [n for n in ring.nodes if n in up and n not in prims and n not in names
             and ring.vnode_count(n)]
    for p in unserved(got, prims):
        assert all(group(ring, replication, n) != group(ring, replication, p) for n in spare)


@given(members_st, replication_st)
def test_primaries_count_and_rack_spread(spec: list[tuple[list[int], str, str]],
                                         replication: Replication) -> None:
    ring = build(spec)
    live = [n for n in ring.nodes if ring.vnode_count(n)]
    factors = dict(replication.per_dc) or {"": replication.total}
    for index in range(len(ring)):
        prims = Placement(ring, replication).primaries_at(index)
        for g, factor in factors.items():
            members = [n for n in live if group(ring, replication, n) == g]
            chosen = [n for n in prims if group(ring, replication, n) == g]
            assert len(chosen) == min(factor, len(members))
            racks = {(ring.nodes[n].datacenter, ring.nodes[n].rack) for n in members}
            chosen_racks = {(ring.nodes[n].datacenter, ring.nodes[n].rack) for n in chosen}
            assert len(chosen_racks) == min(len(chosen), len(racks))
        assert all(replication.per_dc == () or ring.nodes[n].datacenter in factors
                   for n in prims)


@given(members_st, replication_st, st.integers(0, TOKEN_MAX), st.randoms(use_true_random=False))
def test_primaries_are_a_function_of_token_and_ring(
        spec: list[tuple[list[int], str, str]], replication: Replication, tok: int,
        shuffler: random.Random) -> None:
    ring = build(spec)
    members = list(ring.nodes.values())
    shuffler.shuffle(members)
    warm = Placement(ring, replication)
    for other in range(0, TOKEN_MAX, TOKEN_MAX // 7):
        warm.primaries(other)  # a warm cache answers as a cold one
    expected = warm.primaries(tok)
    assert primaries(tok, Ring.build(members), replication) == expected
    rng = ring.vnode_range(ring.index(tok))
    for same in {rng.right, (rng.left + 1) % RING_SIZE}:  # every token of the vnode range
        assert primaries(same, ring, replication) == expected


@given(st.lists(st.lists(st.integers(0, TOKEN_MAX), min_size=1, max_size=4),
                min_size=1, max_size=7), st.integers(1, 5))
def test_single_rack_is_the_first_n_distinct_nodes(spec: list[list[int]], n: int) -> None:
    ring = build([(t, "dc1", "r1") for t in spec])
    placement = Placement(ring, Replication.simple(n))
    for index in range(len(ring)):
        assert placement.primaries_at(index) == tuple(list(ring.walk(index))[:n])
    for node_id in ring.nodes:
        assert replica_ranges(ring, Replication.simple(n), node_id) == \
            ring.replica_ranges(node_id, n)


def random_ring(nodes: int, num_tokens: int, seed: int, racks: int = 1) -> Ring:
    rng = random.Random(seed)
    return Ring.build(NodeInfo(f"n{i:03d}", tokens.generate(rng, num_tokens), "dc1",
                               f"r{i % racks}") for i in range(nodes))


def replicas_moved(old: Ring, new: Ring, replication: Replication) -> tuple[int, set[str]]:
    """(key tokens x replicas that changed hands, the nodes that gained replicas)."""
    before, after = Placement(old, replication), Placement(new, replication)
    cuts = sorted(set(old.tokens) | set(new.tokens))
    moved = 0
    gained: set[str] = set()
    for left, right in zip([cuts[-1], *cuts[:-1]], cuts, strict=True):
        extra = set(after.primaries(right)) - set(before.primaries(right))
        moved += len(extra) * TokenRange(left, right).size()
        gained |= extra
    return moved, gained


@settings(max_examples=20, deadline=None)
@given(st.integers(3, 8), st.integers(1, 32), st.integers(0, 2**32))
def test_adding_a_node_gives_replicas_only_to_it(nodes: int, num_tokens: int,
                                                 seed: int) -> None:
    old = random_ring(nodes, num_tokens, seed)
    newcomer = NodeInfo("new", tokens.generate(random.Random(~seed), num_tokens))
    new = Ring.build([*old.nodes.values(), newcomer])
    moved, gained = replicas_moved(old, new, N3)
    assert gained <= {"new"}
    # exactly what the newcomer now replicates moved (it held nothing before)
    held = sum(r.size() for r in replica_ranges(new, N3, "new"))
    assert moved == held


def test_adding_a_node_moves_about_one_in_n_replicas() -> None:
    rows = []
    for nodes, racks in ((3, 1), (6, 1), (12, 1), (6, 3), (12, 3)):
        old = random_ring(nodes, tokens.NUM_TOKENS_DEFAULT, nodes, racks)
        newcomer = NodeInfo("new", tokens.generate(random.Random(1000 + nodes),
                                                   tokens.NUM_TOKENS_DEFAULT), "dc1", "r0")
        moved, gained = replicas_moved(old, Ring.build([*old.nodes.values(), newcomer]), N3)
        assert racks > 1 or gained == {"new"}
        rows.append((nodes, racks, moved / (RING_SIZE * N3.total) * (nodes + 1)))
    print("replicas moved by one more node, x 1/(n+1):",
          " ".join(f"{n}n/{r}r:{m:.2f}" for n, r, m in rows))
    assert all(0.7 < m < 1.3 for _, _, m in rows), rows


def test_preference_list_microbenchmark() -> None:
    ring = random_ring(12, 256, seed=1, racks=3)
    up = set(ring.nodes)
    down = up - {"n005"}
    placement = Placement(ring, N3)
    rng = random.Random(2)
    toks = [rng.getrandbits(64) for _ in range(4096)]
    calls = 20_000

    def per_call_us(fn: Callable[[], object]) -> float:
        return timeit.timeit(fn, number=calls) / calls * 1e6

    it = iter(toks * 10)
    cold_fn = per_call_us(lambda: preference_list(next(it), ring, N3, up))
    it = iter(toks * 10)
    held = per_call_us(lambda: placement.preference_list(next(it), up))
    it = iter(toks * 10)
    one_down = per_call_us(lambda: placement.preference_list(next(it), down))
    print(f"preference_list 12 nodes x 256 tokens, N=3, 3 racks: function {cold_fn:.1f} us, "
          f"held Placement {held:.1f} us, one node down {one_down:.1f} us")
    assert held < 50 and one_down < 100 and cold_fn < 500  # measured ~3 / ~4 / ~15 us


def test_replicas_max_is_the_limit() -> None:
    assert parse_replication(str(REPLICAS_MAX)).total == REPLICAS_MAX
