"""The ring: ownership by bisect, ranges that partition the ring, balance of random tokens."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import keys, tokens
from cluster.keys import TOKEN_MAX
from cluster.ring import RING_SIZE, NodeInfo, Ring, TokenRange

TOP = TOKEN_MAX


def small_ring() -> Ring:
    return Ring.build([
        NodeInfo("a", (100, 400)),
        NodeInfo("b", (200,)),
        NodeInfo("c", (300, TOP)),
    ])


def random_ring(nodes: int, num_tokens: int, seed: int) -> Ring:
    rng = random.Random(seed)
    return Ring.build(NodeInfo(f"n{i:03d}", tokens.generate(rng, num_tokens))
                      for i in range(nodes))


@pytest.mark.parametrize(("tok", "owner"), [
    (0, "a"),  # below the first vnode: the first vnode clockwise
    (99, "a"),
    (100, "a"),  # a vnode owns its own token: ranges are (prev, T]
    (101, "b"),
    (200, "b"),
    (350, "a"),
    (401, "c"),
    (TOP, "c"),
])
def test_owner_walks_clockwise_to_the_first_vnode_at_or_after(tok: int, owner: str) -> None:
    assert small_ring().owner(tok) == owner


def test_owner_wraps_past_the_top_of_the_ring() -> None:
    ring = Ring.build([NodeInfo("a", (10,)), NodeInfo("b", (20,))])
    assert ring.owner(21) == "a" and ring.owner(TOP) == "a" and ring.owner(0) == "a"


def test_duplicate_token_goes_to_the_smaller_node_id() -> None:
    ring = Ring.build([NodeInfo("z", (5, 50)), NodeInfo("m", (50,))])
    assert ring.tokens == (5, 50) and ring.owners == ("z", "m")
    assert ring.ranges_of("z") == [TokenRange(50, 5)]
    assert ring.ranges_of("m") == [TokenRange(5, 50)]
    lonely = Ring.build([NodeInfo("a", (7,)), NodeInfo("b", (7,))])
    assert lonely.owners == ("a",) and lonely.ranges_of("b") == []
    assert lonely.balance() == float("inf") and list(lonely.walk(0)) == ["a"]


def test_ranges_of_and_ownership() -> None:
    ring = small_ring()
    assert ring.ranges_of("a") == [TokenRange(TOP, 100), TokenRange(300, 400)]
    assert ring.ranges_of("b") == [TokenRange(100, 200)]
    assert ring.ranges_of("c") == [TokenRange(200, 300), TokenRange(400, TOP)]
    assert ring.ranges_of("nobody") == []
    share = ring.ownership()
    assert share["b"] == 100 / RING_SIZE and sum(share.values()) == pytest.approx(1.0)


def test_replica_ranges_are_the_first_n_distinct_nodes() -> None:
    ring = small_ring()  # vnodes in order: a b c a c
    assert ring.replica_ranges("b", 1) == [TokenRange(100, 200)]
    # b is second clockwise from a@100 only; third from c@300, a@400 and c@TOP
    assert ring.replica_ranges("b", 2) == [TokenRange(TOP, 100), TokenRange(100, 200)]
    assert ring.replica_ranges("b", 3) == ring.ranges()
    assert ring.replica_ranges("b", 9) == ring.ranges()
    assert ring.replica_ranges("nobody", 3) == []


@pytest.mark.parametrize(("rng", "size", "spans"), [
    (TokenRange(10, 20), 10, [(11, 21)]),
    (TokenRange(20, 10), RING_SIZE - 10, [(21, None), (0, 11)]),
    (TokenRange(10, TOP), TOP - 10, [(11, None)]),
    (TokenRange(TOP, 10), 11, [(0, 11)]),
    (TokenRange(7, 7), RING_SIZE, [(0, None)]),
])
def test_token_range_size_and_spans(rng: TokenRange, size: int,
                                     spans: list[tuple[int, int | None]]) -> None:
    assert rng.size() == size
    assert rng.spans() == spans
    assert sum((RING_SIZE if end is None else end) - start for start, end in spans) == size


@given(st.integers(0, TOP), st.integers(0, TOP), st.integers(0, TOP))
def test_spans_cover_exactly_the_range(left: int, right: int, tok: int) -> None:
    rng = TokenRange(left, right)
    inside = [s for s, e in rng.spans() if s <= tok < (RING_SIZE if e is None else e)]
    assert len(inside) == (1 if rng.contains(tok) else 0)
    lo, hi = keys.token_range(0, *rng.spans()[-1])  # spans feed the engine bounds directly
    assert lo < hi


members_st = st.lists(
    st.tuples(
        st.lists(st.one_of(st.integers(0, TOP), st.sampled_from([0, 1, TOP, 1 << 63])),
                 min_size=1, max_size=5),
        st.sampled_from(["dc1", "dc2"]),
    ),
    min_size=1, max_size=6,
)


def build(spec: list[tuple[list[int], str]]) -> Ring:
    return Ring.build(NodeInfo(f"n{i}", tuple(t), dc) for i, (t, dc) in enumerate(spec))


@given(members_st, st.integers(0, TOP), st.randoms(use_true_random=False))
def test_owner_is_a_function_of_token_and_ring(spec: list[tuple[list[int], str]], tok: int,
                                              shuffler: random.Random) -> None:
    ring = build(spec)
    shuffled = list(ring.nodes.values())
    shuffler.shuffle(shuffled)
    again = Ring.build(shuffled)
    assert again == ring and again.owner(tok) == ring.owner(tok)
    # brute force: the smallest vnode >= tok, else the smallest vnode; ties: smaller id
    claims = sorted((t, n.node_id) for n in ring.nodes.values() for t in n.tokens)
    after = [c for c in claims if c[0] >= tok] or claims
    assert ring.owner(tok) == after[0][1]
    assert [r for r in ring.ranges() if r.contains(tok)] == [ring.vnode_range(ring.index(tok))]


@given(members_st)
def test_ranges_partition_the_ring(spec: list[tuple[list[int], str]]) -> None:
    ring = build(spec)
    assert all(a < b for a, b in pairwise(ring.tokens))
    assert sum(r.size() for r in ring.ranges()) == RING_SIZE
    by_node = [r for node_id in ring.nodes for r in ring.ranges_of(node_id)]
    assert sorted(by_node, key=lambda r: ring.tokens.index(r.right)) == ring.ranges()
    walked = list(ring.walk(0))
    assert len(walked) == len(set(walked)) == len(set(ring.owners))


@given(members_st, st.integers(1, 4))
def test_replica_ranges_match_brute_force(spec: list[tuple[list[int], str]], n: int) -> None:
    ring = build(spec)
    for node_id in ring.nodes:
        expected = [ring.vnode_range(i) for i in range(len(ring))
                    if node_id in list(ring.walk(i))[:n]]
        assert ring.replica_ranges(node_id, n) == expected


def test_keys_land_on_the_ring_by_the_engine_token() -> None:
    ring = random_ring(5, 16, seed=3)
    for key in (b"", b"foo", b"user:1000", bytes(range(256))):
        tok = keys.token(key)
        assert ring.owner(tok) == ring.owners[ring.index(tok)]
        assert keys.split(keys.engine_key(0, key))[1] == tok  # the one hash, reused


def test_build_of_100_nodes_is_complete_and_ordered() -> None:
    """A 100-node ring of 256 tokens each: every vnode present once, in token order. (How
    long Ring.build takes is a benchmark question, not asserted here.)"""
    members = [NodeInfo(f"n{i:03d}", tokens.generate(random.Random(i), 256), f"dc{i % 2}")
               for i in range(100)]
    ring = Ring.build(members)
    assert len(ring) == 25_600
    assert list(ring.tokens) == sorted({t for m in members for t in m.tokens})
    owner_of = {t: m.node_id for m in members for t in m.tokens}
    assert list(ring.owners) == [owner_of[t] for t in ring.tokens]


BALANCE_SEEDS = range(20)


def test_default_num_tokens_balance() -> None:
    """Issue 4: with the default num-tokens the largest node owns < 1.3x the smallest."""
    rows = []
    for nodes in range(3, 13):
        worst = max(random_ring(nodes, tokens.NUM_TOKENS_DEFAULT, seed).balance()
                    for seed in BALANCE_SEEDS)
        rows.append((nodes, worst))
    print("num_tokens", tokens.NUM_TOKENS_DEFAULT, "worst balance over",
          len(BALANCE_SEEDS), "seeds:", " ".join(f"{n}:{w:.3f}" for n, w in rows))
    assert all(worst < 1.3 for _, worst in rows), rows


def test_half_the_default_would_not_do() -> None:
    """The bound is not vacuous: 256 tokens break 1.3 for some cluster size and seed."""
    worst = max(random_ring(nodes, tokens.NUM_TOKENS_DEFAULT // 2, seed).balance()
                for nodes in (8, 9, 10) for seed in BALANCE_SEEDS)
    assert worst > 1.3


def moved_to_newcomer(old: Ring, new: Ring, newcomer: str) -> tuple[int, int]:
    """(key tokens whose owner changed, of those the ones that went anywhere but newcomer)."""
    cuts = sorted(set(old.tokens) | set(new.tokens))
    moved = elsewhere = 0
    for left, right in zip([cuts[-1], *cuts[:-1]], cuts, strict=True):
        size = TokenRange(left, right).size()
        if old.owner(right) != new.owner(right):
            moved += size
            elsewhere += size if new.owner(right) != newcomer else 0
    return moved, elsewhere


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 10), st.integers(1, 64), st.integers(0, 2**32))
def test_adding_a_node_moves_ranges_only_to_it(nodes: int, num_tokens: int, seed: int) -> None:
    old = random_ring(nodes, num_tokens, seed)
    extra = NodeInfo("new", tokens.generate(random.Random(seed + 1), num_tokens))
    new = Ring.build([*old.nodes.values(), extra])
    moved, elsewhere = moved_to_newcomer(old, new, "new")
    assert elsewhere == 0
    assert moved == sum(r.size() for r in new.ranges_of("new"))


def test_adding_a_node_moves_about_one_in_n() -> None:
    worst = 0.0
    for nodes in (3, 6, 12):
        for seed in range(3):
            old = random_ring(nodes, tokens.NUM_TOKENS_DEFAULT, seed)
            extra = NodeInfo("new", tokens.generate(random.Random(-seed - 1),
                                                    tokens.NUM_TOKENS_DEFAULT))
            new = Ring.build([*old.nodes.values(), extra])
            moved, _ = moved_to_newcomer(old, new, "new")
            worst = max(worst, moved / RING_SIZE * (nodes + 1))
    print(f"adding a node moved at most {worst:.3f} x 1/(n+1) of the ring")
    assert worst < 1.3
