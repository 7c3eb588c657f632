"""The consistent-hash ring: which node owns which part of the 64-bit key-token space.

Theory of operation. Every key has a token, ``cluster.keys.token(key)`` (mmh3 x64, first
word, unsigned): the ring reuses that hash and never hashes differently. Every node owns
several tokens of its own (virtual nodes, ``cluster.tokens``). A vnode at token ``T`` whose
predecessor on the ring is at ``P`` is the primary for the keys with ``P < token <= T``
(Cassandra's convention): a key's primary is found by walking clockwise from the key's
token to the first vnode at or after it, wrapping past ``TOKEN_MAX`` to the smallest vnode.
Replicas are the next distinct nodes further clockwise (``cluster.preflist``).

Invariants:
1. A ``Ring`` is an immutable value built from a membership snapshot (``Ring.build``); a
   membership change builds a new ring, never edits one. Building is O(V log V) for V vnodes
   (100 nodes x 512 tokens builds in well under 100 ms; see the tests).
2. ``tokens`` is strictly ascending and ``owners[i]`` owns vnode ``tokens[i]``. Two nodes that
   claim the same token (a 2**-64 accident, or a bad operator copy) are resolved
   deterministically: the smaller node id keeps the vnode, the other's claim is ignored.
3. ``owner(t)`` is a pure function of (t, ring): ``owners[bisect_left(tokens, t) % V]``.
4. The vnode ranges partition the ring: every token lies in exactly one ``ranges()`` entry,
   and the range of vnode ``i`` is ``(tokens[i-1], tokens[i]]`` (wrapping for ``i == 0``).
5. Iteration orders are defined (node ids sorted, vnodes by token), so equal rings behave
   identically on every node (STYLE: simulation needs determinism).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from cluster.keys import TOKEN_MAX

RING_SIZE = TOKEN_MAX + 1  # 2**64 key tokens
NODE_TOKENS_MAX = 4096  # a node with more vnodes than this is a configuration mistake


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One member as placement sees it (a snapshot: gossip owns the live state)."""

    node_id: str
    tokens: tuple[int, ...]
    datacenter: str = "dc1"
    rack: str = "rack1"

    def __post_init__(self) -> None:
        assert self.node_id, "node id must be non-empty"
        assert 0 < len(self.tokens) <= NODE_TOKENS_MAX, (self.node_id, len(self.tokens))
        assert all(0 <= t <= TOKEN_MAX for t in self.tokens), self.node_id


class TokenRange(NamedTuple):
    """The keys with ``left < token <= right``, wrapping past TOKEN_MAX when left >= right.

    ``left == right`` is the whole ring (a ring with a single vnode).
    """

    left: int
    right: int

    def contains(self, tok: int) -> bool:
        if self.left < self.right:
            return self.left < tok <= self.right
        if self.left > self.right:
            return tok > self.left or tok <= self.right
        return True

    def size(self) -> int:
        """How many key tokens the range holds (RING_SIZE for the whole ring)."""
        return (self.right - self.left) % RING_SIZE or RING_SIZE

    def spans(self) -> list[tuple[int, int | None]]:
        """The range as half-open ``[start, end)`` token spans, ``end=None`` = top of ring.

        Each span feeds ``cluster.keys.token_range(db, start, end)`` directly; a wrapping
        range is two spans, the whole ring one.
        """
        if self.left == self.right:
            return [(0, None)]
        end = None if self.right == TOKEN_MAX else self.right + 1
        if self.left < self.right:
            return [(self.left + 1, end)]
        head: list[tuple[int, int | None]] = [] if self.left == TOKEN_MAX else [
            (self.left + 1, None)
        ]
        return [*head, (0, end)]


@dataclass(frozen=True, slots=True)
class Ring:
    """An immutable ring (invariant 1). Build with ``Ring.build``; never construct directly."""

    nodes: dict[str, NodeInfo]  # by node id, in sorted id order; treat as read-only
    tokens: tuple[int, ...]  # strictly ascending (invariant 2)
    owners: tuple[str, ...]  # owners[i] owns the vnode at tokens[i]
    # node id -> its vnode indices; only nodes that own at least one vnode
    _vnodes_of: dict[str, tuple[int, ...]] = field(repr=False)

    @classmethod
    def build(cls, members: Iterable[NodeInfo]) -> Ring:
        """The ring of a membership snapshot. REQUIRES: node ids are distinct."""
        nodes = {m.node_id: m for m in sorted(members, key=lambda m: m.node_id)}
        claims = sorted((t, m.node_id) for m in nodes.values() for t in set(m.tokens))
        tokens: list[int] = []
        owners: list[str] = []
        for tok, node_id in claims:
            if tokens and tokens[-1] == tok:
                continue  # invariant 2: the smaller id (sorted first) keeps the vnode
            tokens.append(tok)
            owners.append(node_id)
        vnodes: dict[str, list[int]] = {}
        for index, node_id in enumerate(owners):
            vnodes.setdefault(node_id, []).append(index)
        return cls(nodes, tuple(tokens), tuple(owners),
                   {node_id: tuple(idx) for node_id, idx in vnodes.items()})

    def __len__(self) -> int:
        """Number of vnodes."""
        return len(self.tokens)

    def node_ids(self) -> list[str]:
        return list(self.nodes)

    def vnode_count(self, node_id: str) -> int:
        """How many vnodes ``node_id`` owns (0 if none survived invariant 2, or not a member)."""
        return len(self._vnodes_of.get(node_id, ()))

    def index(self, tok: int) -> int:
        """Index of the vnode that is primary for ``tok``. REQUIRES: a non-empty ring."""
        assert self.tokens, "empty ring"
        i = bisect_left(self.tokens, tok)
        return 0 if i == len(self.tokens) else i

    def owner(self, tok: int) -> str:
        """The node that is primary for ``tok`` (invariant 3)."""
        return self.owners[self.index(tok)]

    def vnode_range(self, index: int) -> TokenRange:
        """The range vnode ``index`` is primary for (invariant 4)."""
        return TokenRange(self.tokens[index - 1], self.tokens[index])

    def ranges(self) -> list[TokenRange]:
        """Every vnode's range, in token order; together they cover the ring exactly once."""
        return [self.vnode_range(i) for i in range(len(self.tokens))]

    def ranges_of(self, node_id: str) -> list[TokenRange]:
        """The ranges ``node_id`` is primary for, in token order ([] if not a member)."""
        return [self.vnode_range(i) for i in self._vnodes_of.get(node_id, ())]

    def walk(self, index: int) -> Iterator[str]:
        """Distinct node ids clockwise from vnode ``index`` (inclusive), each once.

        Lazy: callers that need only the first few nodes stop early, which is what makes
        placement cheap on large rings.
        """
        owners = self.owners
        count = len(owners)
        wanted = len(self._vnodes_of)
        seen: set[str] = set()
        for step in range(count):
            node_id = owners[(index + step) % count]
            if node_id not in seen:
                seen.add(node_id)
                yield node_id
                if len(seen) == wanted:
                    return

    def replica_ranges(self, node_id: str, n: int) -> list[TokenRange]:
        """The ranges whose first ``n`` distinct nodes clockwise include ``node_id``.

        Topology-blind (ignores datacenters and racks): Dynamo's plain rule. For the
        configured placement use ``cluster.preflist.replica_ranges``, which equals this one
        when every node sits in one rack of one datacenter.
        """
        assert n >= 1, n
        if node_id not in self.nodes:
            return []
        out: list[TokenRange] = []
        for index in range(len(self.tokens)):
            for position, member in enumerate(self.walk(index)):
                if member == node_id:
                    out.append(self.vnode_range(index))
                    break
                if position + 1 >= n:
                    break
        return out

    def ownership(self) -> dict[str, float]:
        """Each node's share of the key-token space as primary (sums to 1.0)."""
        owned = dict.fromkeys(self.nodes, 0)
        for index, node_id in enumerate(self.owners):
            owned[node_id] += self.vnode_range(index).size()
        return {node_id: size / RING_SIZE for node_id, size in owned.items()}

    def balance(self) -> float:
        """Largest node's ownership share over the smallest's (1.0 = perfectly even).

        ``inf`` when a member owns nothing (all its tokens were claimed by smaller ids).
        """
        shares = self.ownership().values()
        assert shares, "empty ring"
        smallest = min(shares)
        return max(shares) / smallest if smallest else float("inf")
