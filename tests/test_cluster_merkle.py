"""cluster/merkle.py: incremental XOR Merkle trees and the descent that compares two."""

from __future__ import annotations

import random

import pytest

from cluster.keys import TOKEN_MAX, token
from cluster.merkle import ZERO, Descent, MerkleTree, depth_for, entry_hash

WHOLE = (0, TOKEN_MAX + 1)


def exchange(a: MerkleTree, b: MerkleTree) -> Descent:
    """Run a descent of ``a`` against ``b`` as if b were across the wire."""
    descent = Descent(a)
    while (request := descent.request()) is not None:
        level, indices = request
        descent.feed(b.hashes(level, indices))
    return descent


def test_root_is_order_independent_and_updates_undo() -> None:
    rng = random.Random(7)
    entries = [(b"k%d" % i, rng.randbytes(rng.randrange(1, 40))) for i in range(500)]
    one, two = MerkleTree(*WHOLE, 6), MerkleTree(*WHOLE, 6)
    for key, stored in entries:
        one.add(key, stored)
    for key, stored in rng.sample(entries, len(entries)):
        two.add(key, stored)
    assert one.root == two.root != ZERO
    for level in range(7):
        indices = list(range(1 << level))
        assert one.hashes(level, indices) == two.hashes(level, indices)
    # Changing a value then changing it back restores every hash (invariant 1).
    key, stored = entries[3]
    two.update(key, stored, b"other")
    assert two.root != one.root
    two.update(key, b"other", stored)
    assert two.root == one.root
    for key, stored in entries:
        two.update(key, stored, None)
    assert two.root == ZERO and two.entries == 0


def test_leaf_spans_tile_the_range() -> None:
    rng = random.Random(3)
    for start, end, depth in [(0, TOKEN_MAX + 1, 5), (10, 1000, 3), (5, 6, 4),
                              (2**63, 2**64, 10), (7, 7 + 3 * 2**20, 20)]:
        tree = MerkleTree(start, end, depth)
        previous_end = start
        for leaf in range(0, 1 << depth, max(1, (1 << depth) // 64)):
            first, after = tree.leaf_span(leaf)
            if leaf == 0:
                assert first == start
            assert first <= after
        assert tree.leaf_span((1 << depth) - 1)[1] == end
        for leaf in range(min(1 << depth, 64)):
            first, after = tree.leaf_span(leaf)
            assert first == previous_end
            previous_end = after
            for tok in {first, after - 1, rng.randrange(first, after) if after > first else first}:
                if first < after:
                    assert tree.leaf_of(tok) == leaf


def test_descent_of_equal_trees_costs_one_hash() -> None:
    a, b = MerkleTree(*WHOLE, 12), MerkleTree(*WHOLE, 12)
    for i in range(1000):
        a.add(b"k%d" % i, b"v")
        b.add(b"k%d" % i, b"v")
    descent = exchange(a, b)
    assert descent.leaves == [] and descent.hashes_received == 1 and descent.rounds == 1


def test_descent_finds_exactly_the_differing_leaves() -> None:
    rng = random.Random(11)
    a, b = MerkleTree(*WHOLE, 8), MerkleTree(*WHOLE, 8)
    keys = [b"key:%d" % i for i in range(3000)]
    for key in keys:
        a.add(key, b"same")
        b.add(key, b"same")
    changed = rng.sample(keys, 20)
    for key in changed[:10]:
        b.update(key, b"same", b"newer")  # a different version
    for key in changed[10:15]:
        b.update(key, b"same", None)  # missing on one side
    extra = [b"only-in-a:%d" % i for i in range(5)]
    for key in extra:
        a.add(key, b"x")
    expected = sorted({a.leaf_of(token(k)) for k in changed[:15] + extra})
    assert exchange(a, b).leaves == expected
    assert exchange(b, a).leaves == expected  # symmetric


def test_merkle_efficiency_100k_keys_100_differ() -> None:
    """Issue 6: two replicas of 100,000 keys differing in 100 exchange O(100) keys."""
    keys_total, differing = 100_000, 100
    depth = depth_for(keys_total)
    a, b = MerkleTree(*WHOLE, depth), MerkleTree(*WHOLE, depth)
    rng = random.Random(5)
    keys = [b"user:%d" % i for i in range(keys_total)]
    for key in keys:
        stored = b"v" + key
        a.add(key, stored)
        b.add(key, stored)
    changed = rng.sample(keys, differing)
    for key in changed:
        b.update(key, b"v" + key, b"w" + key)
    descent = exchange(a, b)
    assert len(descent.leaves) <= differing
    assert sorted(descent.leaves) == sorted({a.leaf_of(token(k)) for k in changed})
    # Keys that would cross the wire: those of the differing leaves, from both sides.
    leaves = set(descent.leaves)
    exchanged = sum(1 for key in keys if a.leaf_of(token(key)) in leaves)
    assert exchanged <= 30 * differing, exchanged  # O(100) keys, not O(100,000)
    assert descent.hashes_received <= 2 * differing * (depth + 1) + 1
    assert descent.rounds == depth + 1


def test_feed_checks_the_answer_length() -> None:
    descent = Descent(MerkleTree(*WHOLE, 2))
    with pytest.raises(ValueError):
        descent.feed([])


def test_entry_hash_separates_key_and_value() -> None:
    assert entry_hash(b"ab", b"c") != entry_hash(b"a", b"bc")
    assert entry_hash(b"k", b"v") != entry_hash(b"k", b"w")


@pytest.mark.parametrize("keys, depth", [(0, 0), (8, 0), (9, 1), (100_000, 14), (10**9, 20)])
def test_depth_for(keys: int, depth: int) -> None:
    assert depth_for(keys) == depth
