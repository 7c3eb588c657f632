"""Placement: a key token's preference list on a ring, and the replication-factor setting.

Theory of operation (riak_core ``riak_core_apl:get_apl_ann``, Cassandra's
NetworkTopologyStrategy). The replicas of a token are found by walking the ring clockwise from
the vnode that is primary for it (``Ring.walk``), visiting each node once:

- Plain ``replication-factor N``: the whole cluster is one group; take the first N nodes,
  preferring racks not used yet (a rack is a (datacenter, rack) pair) and reusing racks only
  once every rack holds a replica. When all nodes share one rack this is exactly Dynamo's
  "first N distinct nodes clockwise".
- ``replication-factor dc1:3 dc2:2``: the same walk, per datacenter: take nodes of ``dc`` until
  it holds ``min(factor, nodes in dc)`` replicas, spreading over the racks of that dc first.
  Nodes of datacenters without a factor hold no replicas.
  A node skipped because its rack was taken is remembered in walk order, and the skipped nodes
  of a dc fill its remaining places, in that order, as soon as every rack of the dc is used.

These are the *primaries*, a function of (token, ring, replication) only. ``preference_list``
then takes the live view ``up_nodes``: a primary that is up is served as ``PRIMARY``; a down
one is replaced, in order, by the next up node in the walk that is not a primary (in the same
datacenter when factors are per dc), labelled ``FALLBACK`` with the primary it stands in for
(hinted handoff keys on ``Entry.primary``). A down primary with no such node left is simply
absent: the coordinator keeps the hint itself (``unserved``).

Invariants:
1. Pure: the result depends only on the arguments; nothing reads membership, time or chance.
2. A preference list never names a node twice; fallbacks are never primaries.
3. The primaries of every token in one vnode range are the same list (the walk starts at the
   vnode), so ``replica_ranges`` can work range by range.
4. Entries are in preference order: the i-th primary, or its stand-in, is the i-th entry among
   those present.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cluster.ring import NodeInfo, Ring, TokenRange

REPLICAS_MAX = 16  # per datacenter and in total: more replicas than this is a typo
DATACENTER_NAME_BYTES_MAX = 64
_DC_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_ONE_GROUP = ""  # the group of every node under a plain N


class Role(enum.Enum):
    PRIMARY = "primary"
    FALLBACK = "fallback"


class Entry(NamedTuple):
    node_id: str  # the node to send to
    role: Role
    primary: str  # the owner this entry serves: node_id itself, or the down primary


class ReplicationFactorError(ValueError):
    """The ``replication-factor`` setting is malformed; the message says how."""


@dataclass(frozen=True, slots=True)
class Replication:
    """A replication setting: ``total`` replicas, split per datacenter unless ``per_dc == ()``."""

    total: int
    per_dc: tuple[tuple[str, int], ...] = ()  # sorted by datacenter name; () = one group

    @classmethod
    def simple(cls, n: int) -> Replication:
        assert 1 <= n <= REPLICAS_MAX, n
        return cls(n)

    @classmethod
    def by_dc(cls, factors: Mapping[str, int]) -> Replication:
        assert factors and all(1 <= n <= REPLICAS_MAX for n in factors.values()), factors
        return cls(sum(factors.values()), tuple(sorted(factors.items())))


def parse_replication(value: str | Sequence[str]) -> Replication:
    """``"3"`` or ``"dc1:3 dc2:2"`` (or the words of either) as a Replication.

    Raises ReplicationFactorError naming the bad word. Factors are 1..REPLICAS_MAX; leave a
    datacenter out rather than giving it 0.
    """
    words = value.split() if isinstance(value, str) else [w for v in value for w in v.split()]
    if not words:
        raise ReplicationFactorError("replication-factor: no value (expected N or DC:N ...)")
    if len(words) == 1 and ":" not in words[0]:
        return Replication.simple(_factor(words[0], words[0]))
    factors: dict[str, int] = {}
    for word in words:
        dc, sep, number = word.partition(":")
        if not sep:
            raise ReplicationFactorError(
                f"replication-factor: '{word}' is not DC:N (a plain N must stand alone)")
        if not _DC_NAME.fullmatch(dc) or len(dc) > DATACENTER_NAME_BYTES_MAX:
            raise ReplicationFactorError(
                f"replication-factor: '{dc}' in '{word}' is not a datacenter name "
                f"(1..{DATACENTER_NAME_BYTES_MAX} of A-Z a-z 0-9 _ . -)")
        if dc in factors:
            raise ReplicationFactorError(f"replication-factor: datacenter '{dc}' given twice")
        factors[dc] = _factor(number, word)
    total = sum(factors.values())
    if total > REPLICAS_MAX:
        raise ReplicationFactorError(
            f"replication-factor: {total} replicas in total, at most {REPLICAS_MAX}")
    return Replication.by_dc(factors)


def _factor(number: str, word: str) -> int:
    if not (number.isascii() and number.isdigit()) or not 1 <= int(number) <= REPLICAS_MAX:
        raise ReplicationFactorError(
            f"replication-factor: '{word}': the factor must be an integer 1..{REPLICAS_MAX}")
    return int(number)


def format_replication(replication: Replication) -> str:
    """The setting as ``parse_replication`` reads it back (datacenters sorted by name)."""
    if not replication.per_dc:
        return str(replication.total)
    return " ".join(f"{dc}:{n}" for dc, n in replication.per_dc)


class Placement:
    """(ring, replication) with the topology counted once; every method is pure (inv. 1).

    The primaries of each vnode are memoized on first use (invariant 3): a value cache of a
    pure function of immutable inputs, so it never goes stale; build a new Placement for a
    new ring.
    """

    __slots__ = ("_cache", "_group", "_racks", "_wanted", "replication", "ring")

    def __init__(self, ring: Ring, replication: Replication) -> None:
        self.ring = ring
        self.replication = replication
        factors = dict(replication.per_dc)
        members: dict[str, int] = {}
        racks: dict[str, set[tuple[str, str]]] = {}
        self._group: dict[str, str] = {}  # node id -> its group; absent = holds no replicas
        for node_id, info in ring.nodes.items():
            group = _group_of(info, factors)
            if group is None or not ring.vnode_count(node_id):
                continue  # a member without vnodes is never walked: counting it would stall
            self._group[node_id] = group
            members[group] = members.get(group, 0) + 1
            racks.setdefault(group, set()).add((info.datacenter, info.rack))
        target = factors if factors else {_ONE_GROUP: replication.total}
        self._wanted = {g: min(n, members.get(g, 0)) for g, n in target.items()}
        self._racks = {g: len(r) for g, r in racks.items()}
        self._cache: dict[int, tuple[str, ...]] = {}

    def primaries(self, tok: int) -> tuple[str, ...]:
        """The replicas of ``tok`` when every node is up, in preference order."""
        if not self.ring.tokens:
            return ()
        return self.primaries_at(self.ring.index(tok))

    def primaries_at(self, index: int) -> tuple[str, ...]:
        """The primaries of every token in vnode ``index``'s range (invariant 3)."""
        cached = self._cache.get(index)
        if cached is None:
            cached = self._cache[index] = self._place(index)
        return cached

    def _place(self, index: int) -> tuple[str, ...]:
        remaining = sum(self._wanted.values())
        count = dict.fromkeys(self._wanted, 0)
        used_racks: dict[str, set[tuple[str, str]]] = {g: set() for g in self._wanted}
        skipped: dict[str, list[str]] = {g: [] for g in self._wanted}
        chosen: list[str] = []
        nodes = self.ring.nodes
        for node_id in self.ring.walk(index):
            if remaining == 0:
                break
            group = self._group.get(node_id)
            if group is None or count[group] == self._wanted[group]:
                continue
            info = nodes[node_id]
            rack = (info.datacenter, info.rack)
            used = used_racks[group]
            if rack in used and len(used) < self._racks[group]:
                skipped[group].append(node_id)  # an unused rack may still come
                continue
            used.add(rack)
            take = [node_id]
            if len(used) == self._racks[group]:  # every rack used: skipped nodes may fill
                take += skipped[group]
                skipped[group] = []
            for member in take[: self._wanted[group] - count[group]]:
                chosen.append(member)
                count[group] += 1
                remaining -= 1
        return tuple(chosen)

    def preference_list(self, tok: int, up_nodes: Collection[str]) -> list[Entry]:
        """Primaries that are up, and stand-ins for those that are down (module docstring)."""
        if not self.ring.tokens:
            return []
        index = self.ring.index(tok)
        primaries = self.primaries_at(index)
        if all(p in up_nodes for p in primaries):
            return [Entry(p, Role.PRIMARY, p) for p in primaries]
        candidates = _Candidates(self.ring.walk(index), set(primaries), up_nodes, self._group)
        out: list[Entry] = []
        for p in primaries:
            if p in up_nodes:
                out.append(Entry(p, Role.PRIMARY, p))
                continue
            stand_in = candidates.next_in(self._group[p])
            if stand_in is not None:
                out.append(Entry(stand_in, Role.FALLBACK, p))
        return out

    def replica_ranges(self, node_id: str) -> list[TokenRange]:
        """The vnode ranges whose primaries include ``node_id``, in token order."""
        ring = self.ring
        return [ring.vnode_range(i) for i in range(len(ring.tokens))
                if node_id in self.primaries_at(i)]


class _Candidates:
    """Up non-primaries in walk order, handed out once each, per group (fallback order)."""

    __slots__ = ("_exclude", "_group", "_pending", "_up", "_walk")

    def __init__(self, walk: Iterator[str], exclude: set[str], up_nodes: Collection[str],
                 group: dict[str, str]) -> None:
        self._walk = walk
        self._exclude = exclude
        self._up = up_nodes
        self._group = group
        self._pending: dict[str, list[str]] = {}

    def next_in(self, wanted: str) -> str | None:
        queue = self._pending.setdefault(wanted, [])
        if queue:
            return queue.pop(0)
        for node_id in self._walk:
            if node_id in self._exclude or node_id not in self._up:
                continue
            group = self._group.get(node_id)
            if group == wanted:
                return node_id
            if group is not None:
                self._pending.setdefault(group, []).append(node_id)
        return None


def _group_of(info: NodeInfo, factors: Mapping[str, int]) -> str | None:
    if not factors:
        return _ONE_GROUP
    return info.datacenter if info.datacenter in factors else None


def primaries(tok: int, ring: Ring, replication: Replication) -> tuple[str, ...]:
    """The replicas of ``tok`` when every node is up, in preference order."""
    return Placement(ring, replication).primaries(tok)


def preference_list(tok: int, ring: Ring, replication: Replication,
                    up_nodes: Collection[str]) -> list[Entry]:
    """Where to send a request for ``tok``: riak_core's annotated preference list.

    One call builds a throw-away ``Placement``; a node holds one per ring instead.
    """
    return Placement(ring, replication).preference_list(tok, up_nodes)


def replica_ranges(ring: Ring, replication: Replication, node_id: str) -> list[TokenRange]:
    """The vnode ranges ``node_id`` holds a replica of under ``replication``."""
    return Placement(ring, replication).replica_ranges(node_id)


def unserved(entries: Sequence[Entry], primaries: Sequence[str]) -> list[str]:
    """The primaries that neither serve nor have a stand-in: the coordinator keeps their hint."""
    served = {e.primary for e in entries}
    return [p for p in primaries if p not in served]
