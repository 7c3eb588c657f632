"""The replica side of the peer protocol: READ and WRITE served from this node's ``Replica``.

Theory of operation. A coordinator (any node, this one included) reaches a key's replica
either over the network (a ``Read``/``Write`` request that ``handle`` serves) or, when the
replica is local, by calling ``read``/``merge`` directly: the same two operations, the same
rules, no network on the local path (DESIGN.md, "Layers").

Invariants:
1. A write is a merge, never an overwrite: ``new = limit(merge(old, incoming))`` where
   ``old`` is what the replica holds right now; so a replica that receives versions in any
   order, any number of times, holds the same set (``version.merge`` is a semilattice), up to
   the sibling limit, which drops the lowest-ranked versions and counts them.
2. ``Write.siblings`` is decoded with ``sibling_codec.decode`` (a trust boundary) before
   anything is stored: bytes that are not a sibling set are refused, never stored.
3. Nothing is written when the merge changes nothing (a duplicate or a repair of an
   up-to-date replica costs one read).
4. ``handle`` is synchronous and answers every request it accepts with its reply type; a
   refusal is a ``RemoteError``: ``UNSUPPORTED`` for a request type it does not serve or a db
   this node does not have, ``PROTOCOL`` for a body that is not a sibling set, ``INTERNAL``
   when the stored value of the key is damaged (the engine's ``CorruptionError``).
5. Counter floor (kv679): the largest counter this node's actor issued for a key is always
   durable on this node. When the node is a replica of the key, the stored sibling set holds
   it (the coordinator applies its own version locally before sending it). When it is not,
   ``raise_floor`` keeps it in the reserved namespace ``FLOOR_NAMESPACE``; ``floor`` reads it.

6. Hinted handoff: a ``Write`` with ``hint_for`` (a write meant for another, down node; this
   node stands in for it) is kept in the ``HintStore`` for that node, not merged into this
   node's own data, and acknowledged; without a hint store it is merged like any write.
   A ``Read`` answers this node's data merged with every hint it holds for the key, so a
   stand-in serves what it stands in for (sloppy quorum reads).
7. A ``CondWrite`` is a ``Write`` (merged the same way, acknowledged the same way) whose reply
   also answers a read: "clean" when every version the replica held just before the merge
   (its data and the hints it holds for the key, what a ``Read`` would have answered) is
   descended by an incoming version, else the set it held (cluster/conditional_write.py).
   It never names ``hint_for``: only primaries get one.
8. What is stored is ``sibling_codec.encode`` of the new set, whoever built it: a write's
   bytes are stored as they came only when the new set is the incoming one itself and
   ``decode_exact`` found them to be exactly its encoding (a peer may send valid bytes in
   another msgpack form; the Merkle trees hash stored bytes, tree_set.py invariant 2).
"""

from __future__ import annotations

from collections.abc import Callable

from cluster import keys as keyspace
from cluster.clock import Clock
from cluster.errors import CorruptionError
from cluster.hints import HintStore
from cluster.messages import (
    CondWrite,
    CondWriteReply,
    ErrorCode,
    Message,
    Read,
    ReadReply,
    Write,
    WriteAck,
)
from cluster.replica import Replica
from cluster.sibling_codec import decode, decode_exact, encode
from cluster.transport import RemoteError
from cluster.vclock import PruneBounds, descends, dominates
from cluster.version import CLOCK, Siblings, limit, merge, prune_siblings

# Engine keys ``bytes([FLOOR_NAMESPACE]) + keys.engine_key(db, key)`` hold an 8-byte big-endian
# counter: the highest this node's actor issued for a key it does not replicate (invariant 5).
# One of the db bytes keys.py reserves for the cluster (240..255). On disk: never change.
FLOOR_NAMESPACE = 254
SIBLINGS_MAX_DEFAULT = 64  # as NodeOptions.sibling_limit
CLEAN = CondWriteReply(True, None)  # one shared reply: a commit round's clean writes share one wait


class ReplicaService:
    """Serves READ and WRITE for ``replica``; see the module docstring."""

    def __init__(self, replica: Replica, clock: Clock, *,
                 sibling_limit: int = SIBLINGS_MAX_DEFAULT,
                 prune: PruneBounds | None = None,
                 on_change: Callable[[int, bytes], None] | None = None,
                 hints: HintStore | None = None) -> None:
        assert sibling_limit >= 1, sibling_limit
        self.hints = hints
        self.replica = replica
        self.clock = clock
        self.sibling_limit = sibling_limit
        self.prune = prune or PruneBounds()
        self.on_change = on_change
        self.stats = {"reads_served": 0, "writes_served": 0, "writes_unchanged": 0,
                      "hinted_writes": 0, "siblings_dropped": 0, "clock_prunes": 0,
                      "writes_refused": 0, "hints_refused": 0, "cond_writes_unclean": 0}

    # The local path ------------------------------------------------------------------

    def read(self, db: int, key: bytes) -> Siblings:
        """The stored sibling set of (db, key), ``()`` if none. CorruptionError if damaged."""
        return self.replica.read(keyspace.engine_key(db, key))

    def read_stored(self, db: int, key: bytes) -> tuple[Siblings, bytes | None]:
        """``read``, with the stored bytes (``Replica.read_stored``), for ``merge_onto``."""
        return self.replica.read_stored(keyspace.engine_key(db, key))

    def merge(self, db: int, key: bytes, incoming: Siblings, data: bytes | None = None
              ) -> Siblings:
        """Merge ``incoming`` into what is stored (invariants 1 and 3); returns the new set.
        ``data`` as ``merge_onto``'s.

        REQUIRES: ``incoming`` is a valid, non-empty sibling set. Raises CorruptionError if
        the stored value is damaged, and whatever the engine raises if it cannot write.
        """
        assert incoming, "nothing to merge"
        old, old_raw = self.read_stored(db, key)
        return self.merge_onto(db, key, old, incoming, data, old_raw)

    def merge_onto(self, db: int, key: bytes, old: Siblings, incoming: Siblings,
                   data: bytes | None = None, old_raw: bytes | None = None) -> Siblings:
        """``merge`` when the caller has just read the stored set ``old`` (``read`` in the
        same loop turn, so nothing was written in between): saves reading it again.
        ``data``: ``encode(incoming)`` if the caller has it, stored as it is when the new set
        is ``incoming`` itself (invariant 8). ``old_raw``: the bytes ``old`` was read from,
        if the caller has them (``read_stored``), for the store hook."""
        assert incoming, "nothing to merge"
        ekey = keyspace.engine_key(db, key)
        now_ms = self.clock.wall_ms()
        new, dropped = limit(_merge(old, incoming), self.sibling_limit)
        new, pruned = prune_siblings(new, now_ms, self.prune)
        self.stats["siblings_dropped"] += dropped
        self.stats["clock_prunes"] += pruned
        if new == old:
            self.stats["writes_unchanged"] += 1
            return old
        self.replica.apply(db, ekey, old, new, now_ms, data if new is incoming else None,
                           old_raw)
        if self.on_change is not None:
            self.on_change(db, key)
        return new

    def read_for(self, db: int, key: bytes, hint_for: str | None) -> Siblings:
        """The local read of a target: this node's data, plus the hints it holds for
        ``hint_for`` when it stands in for that node (invariant 6)."""
        stored = self.read(db, key)
        if hint_for is None or self.hints is None:
            return stored
        held = self.hints.get(hint_for, db, key)
        return merge(stored, held) if held else stored

    def store(self, db: int, key: bytes, incoming: Siblings, hint_for: str | None) -> bool:
        """The local write of a target: a merge, or a hint when standing in for ``hint_for``.
        False when the hint was refused by its bounds (nothing stored)."""
        if hint_for is not None and self.hints is not None:
            self.stats["hinted_writes"] += 1
            if self.hints.add(hint_for, db, key, incoming):
                return True
            self.stats["hints_refused"] += 1
            return False
        self.merge(db, key, incoming)
        return True

    def merge_checked(self, db: int, key: bytes, incoming: Siblings,
                      data: bytes | None = None) -> Siblings | None:
        """A COND_WRITE (invariant 7): merge ``incoming`` as ``merge`` does (``data`` as
        ``merge_onto``'s); None when every version held just before (stored, and hinted for
        the key) is descended by an incoming one ("clean"), else that previous set."""
        stored, raw = self.read_stored(db, key)
        before = stored
        if self.hints is not None and self.hints.stats.per_target:
            hinted = self.hints.for_key(db, key)
            if hinted:
                before = merge(stored, hinted)
        self.merge_onto(db, key, stored, incoming, data, raw)
        clocks = [v[CLOCK] for v in incoming]  # one, from a coordinator
        for held in before:
            clock = held[CLOCK]
            for mine in clocks:
                if descends(mine, clock):
                    break
            else:
                return before
        return None

    def floor(self, db: int, key: bytes) -> int:
        """The counter floor kept for a key this node does not replicate (invariant 5)."""
        raw = self.replica.engine.get(_floor_key(db, key))
        return 0 if raw is None else int.from_bytes(raw, "big")

    def raise_floor(self, db: int, key: bytes, counter: int) -> None:
        """Make ``floor(db, key) >= counter`` durable (as durable as the engine's writes)."""
        assert 1 <= counter < 1 << 64, counter
        if counter > self.floor(db, key):
            self.replica.engine.put(_floor_key(db, key), counter.to_bytes(8, "big"))

    # The network path ----------------------------------------------------------------

    def handle(self, peer: str, message: Message) -> Message:
        """Serve one request from ``peer`` (invariant 4)."""
        if isinstance(message, Read):
            self._check_db(message.db)
            self.stats["reads_served"] += 1
            raw = self.replica.raw(keyspace.engine_key(message.db, message.key))
            stored: Siblings = ()
            if raw is not None:
                try:
                    stored = decode(raw)  # never hand a peer bytes this node cannot read
                except CorruptionError as exc:
                    raise RemoteError(ErrorCode.INTERNAL,
                                      f"stored value is damaged: {exc}") from None
            if self.hints is not None and self.hints.stats.per_target:
                hinted = self.hints.for_key(message.db, message.key)
                if hinted:
                    return ReadReply(encode(merge(stored, hinted)))
            return ReadReply(raw)
        if isinstance(message, CondWrite):  # first: the commonest request under writes
            incoming, data = self._incoming(message)
            try:
                before = self.merge_checked(message.db, message.key, incoming, data)
            except CorruptionError as exc:
                raise RemoteError(ErrorCode.INTERNAL, f"stored value is damaged: {exc}") from None
            self.stats["writes_served"] += 1
            if before is None:
                return CLEAN
            self.stats["cond_writes_unclean"] += 1
            return CondWriteReply(False, encode(before))
        if isinstance(message, Write):
            incoming, data = self._incoming(message)
            if message.hint_for is not None and self.hints is not None:
                self.stats["hinted_writes"] += 1
                if not self.hints.add(message.hint_for, message.db, message.key, incoming):
                    self.stats["hints_refused"] += 1
                    raise RemoteError(ErrorCode.OVERLOADED,
                                      f"hint limit reached for node {message.hint_for}")
                return WriteAck()
            try:
                self.merge(message.db, message.key, incoming, data)
            except CorruptionError as exc:
                raise RemoteError(ErrorCode.INTERNAL, f"stored value is damaged: {exc}") from None
            self.stats["writes_served"] += 1
            if message.hint_for is not None:
                self.stats["hinted_writes"] += 1
            return WriteAck()
        raise RemoteError(ErrorCode.UNSUPPORTED, f"{type(message).__name__} is not served here")

    def _incoming(self, message: Write | CondWrite) -> tuple[Siblings, bytes | None]:
        """The sibling set a write carries, its db checked, and its bytes if they are exactly
        the set's encoding (invariant 8), else None; a damaged one is refused."""
        self._check_db(message.db)
        try:
            incoming, exact = decode_exact(message.siblings)
        except CorruptionError as exc:
            self.stats["writes_refused"] += 1
            raise RemoteError(ErrorCode.PROTOCOL, f"write refused: {exc}") from None
        return incoming, message.siblings if exact else None

    def _check_db(self, db: int) -> None:
        if db >= self.replica.databases:
            self.stats["writes_refused"] += 1
            raise RemoteError(ErrorCode.UNSUPPORTED,
                              f"db {db} is out of range (this node has {self.replica.databases})")


def _merge(old: Siblings, incoming: Siblings) -> Siblings:
    """``version.merge(old, incoming)``, with shortcuts for the common write: one incoming
    version onto nothing, or onto the one version it strictly supersedes (the result merge
    gives then is exactly ``incoming``: invariant 1 of version.py)."""
    if len(incoming) == 1 and len(old) <= 1:
        if not old:
            return incoming
        if dominates(incoming[0][CLOCK], old[0][CLOCK]):
            return incoming
    return merge(old, incoming)


def _floor_key(db: int, key: bytes) -> bytes:
    return bytes((FLOOR_NAMESPACE,)) + keyspace.engine_key(db, key)
