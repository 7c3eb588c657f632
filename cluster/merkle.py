"""Merkle trees over token ranges, for anti-entropy (issue 6), and the descent that compares
two of them by exchanging only the hashes of subtrees that differ.

Theory of operation. A ``MerkleTree`` covers the token span ``[start, end)`` of one range a
node replicates, cut into ``2**depth`` leaves of equal token width. A leaf's hash is the XOR
of ``entry_hash(key, stored bytes)`` over the keys whose token falls in it; an inner node's
hash is the XOR of its two children, so the root is the XOR of every entry. XOR makes the
tree order-independent and lets a write update it in O(depth) without reading any other key
(``update``: XOR out the old entry's hash, XOR in the new one): the tree stays current as
writes arrive, and comparing two unchanged replicas costs one root hash (Cassandra's and
Riak's trees are rebuilt by scanning; this one never needs a scan after the first build).

Comparing replicas (``Descent``, sans-IO): start at the root; each round asks the peer for
the hashes of the nodes still in question at one level, keeps the ones whose hash differs,
and goes to their children; after the leaf level, the differing leaves are the token spans
whose keys must be exchanged (``leaf_span``). Rounds: depth + 1; hashes exchanged: at most
2 per differing node per level, so O(d * depth) for d differing leaves, never O(keys).

Invariants:
1. ``root`` equals the XOR of ``entry_hash`` over every (key, bytes) added and not removed,
   whatever the order of ``update`` calls (XOR is commutative, associative, self-inverse).
2. Two trees of the same span and depth holding the same entries have equal hashes at every
   node; a node whose hash differs has at least one differing leaf below it (barring 128-bit
   hash collisions).
3. ``Descent`` asks only for children of nodes found different, and ends with exactly the
   leaves whose hashes differ.
4. An entry hash depends on the key and its stored bytes only; an absent key contributes
   nothing (so "missing on one side" is a difference like any other).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cluster.keys import TOKEN_MAX, token

HASH_BYTES = 16
ZERO = bytes(HASH_BYTES)
DEPTH_MAX = 20  # 2**20 leaves: 32 MiB of hashes, far more than any range needs


def entry_hash(key: bytes, stored: bytes) -> bytes:
    """The hash one key with its stored sibling set contributes (invariant 4)."""
    digest = hashlib.blake2b(digest_size=HASH_BYTES, person=b"respkv-merkle")
    digest.update(len(key).to_bytes(4, "big"))
    digest.update(key)
    digest.update(stored)
    return digest.digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(HASH_BYTES, "big")


class MerkleTree:
    """A tree over tokens ``[start, end)``; ``end = TOKEN_MAX + 1`` is the top of the ring."""

    def __init__(self, start: int, end: int, depth: int) -> None:
        assert 0 <= start < end <= TOKEN_MAX + 1, (start, end)
        assert 0 <= depth <= DEPTH_MAX, depth
        self.start = start
        self.end = end
        self.depth = depth
        # levels[0] is the root level (1 node), levels[depth] the leaves; ints hold hashes
        # (XOR of ints is cheaper than of bytes).
        self._levels: list[list[int]] = [[0] * (1 << level) for level in range(depth + 1)]
        self.entries = 0

    def leaf_of(self, tok: int) -> int:
        """The leaf index of a token. REQUIRES: start <= tok < end."""
        assert self.start <= tok < self.end, tok
        return ((tok - self.start) << self.depth) // (self.end - self.start)

    def leaf_span(self, leaf: int) -> tuple[int, int]:
        """The token span ``[first, end)`` of a leaf (the inverse of ``leaf_of``)."""
        width = self.end - self.start
        first = self.start + -((-leaf * width) >> self.depth)  # ceil(leaf * width / 2**d)
        after = self.start + -((-(leaf + 1) * width) >> self.depth)
        return first, after

    def update(self, key: bytes, old: bytes | None, new: bytes | None) -> None:
        """The stored bytes of ``key`` changed from ``old`` to ``new`` (None: absent)."""
        if old == new:
            return
        delta = 0
        if old is not None:
            delta ^= int.from_bytes(entry_hash(key, old), "big")
            self.entries -= 1
        if new is not None:
            delta ^= int.from_bytes(entry_hash(key, new), "big")
            self.entries += 1
        index = self.leaf_of(token(key))
        for level in range(self.depth, -1, -1):
            self._levels[level][index] ^= delta
            index >>= 1

    def add(self, key: bytes, stored: bytes) -> None:
        self.update(key, None, stored)

    @property
    def root(self) -> bytes:
        return self._levels[0][0].to_bytes(HASH_BYTES, "big")

    def hashes(self, level: int, indices: Sequence[int]) -> list[bytes]:
        """The hashes of the nodes ``indices`` of ``level`` (what a peer asks for)."""
        assert 0 <= level <= self.depth, level
        row = self._levels[level]
        return [row[i].to_bytes(HASH_BYTES, "big") for i in indices]


class Descent:
    """Find the leaves where ``local`` and a peer's tree of the same span and depth differ.

    Drive it: while ``request()`` is not None, send it (level, indices) to the peer, and
    ``feed`` the peer's hashes in the same order. Then ``leaves`` holds the differing leaves
    and ``hashes_received`` how many hashes crossed the wire.
    """

    def __init__(self, local: MerkleTree) -> None:
        self.local = local
        self.level = 0
        self.pending: list[int] | None = [0]
        self.leaves: list[int] = []
        self.hashes_received = 0
        self.rounds = 0

    def request(self) -> tuple[int, list[int]] | None:
        if not self.pending:
            return None
        return self.level, self.pending

    def feed(self, theirs: Sequence[bytes]) -> None:
        pending = self.pending
        assert pending, "nothing was asked"
        if len(theirs) != len(pending):
            raise ValueError(f"{len(theirs)} hashes for {len(pending)} nodes")
        self.rounds += 1
        self.hashes_received += len(theirs)
        ours = self.local.hashes(self.level, pending)
        differing = [i for i, a, b in zip(pending, ours, theirs, strict=True) if a != b]
        if self.level == self.local.depth:
            self.leaves = differing
            self.pending = None
            return
        self.level += 1
        self.pending = [child for i in differing for child in (2 * i, 2 * i + 1)]
        if not self.pending:
            self.pending = None


def depth_for(keys: int, keys_per_leaf: int = 8) -> int:
    """The depth that gives about ``keys_per_leaf`` keys per leaf for ``keys`` keys."""
    depth = 0
    while (keys >> depth) > keys_per_leaf and depth < DEPTH_MAX:
        depth += 1
    return depth
