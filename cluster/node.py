"""One node of the cluster: the API the Redis frontend calls (a standalone server is a cluster
of one node, so this is the only code path).

Theory of operation. Today the node is its own coordinator and only replica: a read is a local
read, a write builds a new version and applies it to the local ``Replica``. The ring, the peer
protocol and quorums will sit between these methods and the replicas without changing their
signatures; that is why they are coroutines even though, in a cluster of one, they never
suspend (Rule 1).

Rules:
1. Every coroutine method completes without suspending in a cluster of one: the server drives
   it with ``coro.send(None)`` and expects ``StopIteration`` on the first send. Never add an
   ``await`` of anything that can block (sleep, futures) on the local path.
2. A write without a context gets a clock that merges the clocks of every version read and
   bumps this node's actor, and ``timestamp_ms = max(now, newest timestamp read)``: it
   supersedes what it read, and causal order and winner order agree even when the wall clock
   steps back (DESIGN.md, "Data model").
3. A write with a context supersedes the versions in the context. If nothing changed since the
   context was read (``_seq`` unchanged: no write of any key since) the stored set *is* the
   context and is not read again; otherwise the stored set is read and merged, and versions
   other actors wrote since stay as siblings. Either way this actor's new counter is above
   every counter of this actor stored for the key, so it is never reused; the price is that a
   stale-context write supersedes this actor's own later writes (node-actor clocks cannot
   tell them apart; dotted version vectors would).
4. Every change of stored data bumps ``_seq`` (which invalidates outstanding contexts) and
   then calls the listeners with (db, key), or (db, None) after a flush.
5. Expired keys are invisible at once: reads compare the winner's expiry with the wall clock.
   Reclaiming them is lazy (on access) and active (``expiry.ActiveExpiry``).

REQUIRES for every method taking ``db``: ``0 <= db < options.databases`` (the frontend checks
SELECT); not asserted on the hot path.

Performance: ``get`` and ``put`` are the hot path of GET and SET. They use bound methods kept
on the instance, build no objects they can avoid, and take straight-line fast paths for the
common shapes (one stored version). Measure before and after changing them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import chain
from typing import NamedTuple, cast

from cluster import keys as keyspace
from cluster import node_meta, vclock
from cluster.clock import Clock, LoopClock, system_wall_ms
from cluster.expiry import ActiveExpiry
from cluster.replica import ABSENT, KeyState, PurgeFilter, Replica, key_state, single_state
from cluster.sibling_codec import (
    BIN_HEADERS,
    SINGLE_FIELDS,
    UINTS,
    Single,
    SingleParts,
    decode,
    decode_single_trusted,
    encode,
    encode_single,
    siblings_of,
    single_parts,
)
from cluster.vclock import PruneBounds, VClock
from cluster.version import (
    CLOCK,
    EXPIRE_AT_MS,
    TIMESTAMP_MS,
    VALUE,
    Siblings,
    Version,
    limit,
    merge,
    prune_siblings,
    purge_at,
    winner,
)
from engine.db import Engine
from engine.fs import FileSystem, OSFileSystem, join
from engine.memtable import ENTRY_OVERHEAD_BYTES
from engine.options import EngineOptions, FsyncPolicy

ENGINE_DIR = "engine"  # the engine's directory inside the node's data directory

_new = tuple.__new__
_DB_BYTES = tuple(keyspace.db_start(db) for db in range(keyspace.DATABASES_MAX))
_hash_bytes = keyspace.hash_bytes  # the one hash the node uses; tests patch it to collide tokens
_decode_single = decode_single_trusted  # values were validated by Replica.rebuild at open
_SINGLE_FIELDS = SINGLE_FIELDS
_ABSENT = ABSENT
_single_state = single_state
_encode_single = encode_single
_increment = vclock.increment
_join = b"".join
_BIN_HEADERS = BIN_HEADERS
_BIN8_MAX = len(BIN_HEADERS)
_UINTS = UINTS
_UINTS_MAX = len(UINTS)
_NO_ENTRY = (0, 0)


class Entry(NamedTuple):
    """What a read returns. Built with ``tuple.__new__`` on the hot path (no __init__)."""

    value: bytes
    expire_at_ms: int  # 0 = none
    context: object  # opaque; pass back to put(context=) to supersede what was read


# (what was read: a decode_single result or a sibling set, _seq then, engine key)
_Context = tuple[Single | Siblings, int, bytes]


@dataclass(frozen=True, slots=True)
class NodeOptions:
    # SELECT range, as Redis's `databases`; at most keys.DATABASES_MAX (one key byte).
    databases: int = 16
    # Commit-log fsync policy of the engine, as Redis's appendfsync.
    fsync: str = "everysec"
    # How long a tombstone (or an expired version) is kept before it may be purged, so that
    # anti-entropy cannot resurrect the key. 0 in a cluster of one: no other replica exists.
    tombstone_grace_ms: int = 0
    # Most versions one key keeps; beyond, the oldest by rank are dropped (siblings_dropped).
    sibling_limit: int = 64
    # Period of the active expiry cycle (Redis: hz 10).
    active_expire_interval_ms: int = 100
    # Longest a single expiry cycle may run (Redis: 25% of the 100 ms period).
    active_expire_budget_ms: int = 25
    # Vector-clock pruning bounds (Riak's small/big/young/old_vclock).
    vclock_prune: PruneBounds = field(default_factory=PruneBounds)
    # Engine memtable flush threshold (`memtable-size`); memory is ~3x this at worst.
    memtable_size_bytes: int = 64 * 1024 * 1024
    # Engine block cache budget (`block-cache-size`); 0 disables the cache.
    block_cache_bytes: int = 64 * 1024 * 1024
    # Compaction write rate limit in bytes/s (`compaction-throughput`); 0 = unlimited.
    compaction_throughput_bytes_per_s: int = 64 * 1024 * 1024
    # Flush and compaction tables written by the engine's helper processes (`table-workers`).
    table_workers: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.databases <= keyspace.DATABASES_MAX:
            raise ValueError(f"databases must be 1..{keyspace.DATABASES_MAX}: {self.databases}")
        if self.fsync not in ("always", "everysec", "no"):
            raise ValueError(f"fsync must be 'always', 'everysec' or 'no', not {self.fsync!r}")
        if self.tombstone_grace_ms < 0:
            raise ValueError(f"tombstone_grace_ms must be >= 0: {self.tombstone_grace_ms}")
        if self.sibling_limit < 1:
            raise ValueError(f"sibling_limit must be >= 1: {self.sibling_limit}")
        if self.active_expire_interval_ms < 1 or self.active_expire_budget_ms < 1:
            raise ValueError("active expire interval and budget must be >= 1 ms")
        self.engine_options()  # checks the engine's ranges

    def engine_options(self) -> EngineOptions:
        """The options the node opens its engine with. Raises ValueError if out of range."""
        return EngineOptions(
            fsync=cast(FsyncPolicy, self.fsync), memtable_size_bytes=self.memtable_size_bytes,
            block_cache_bytes=self.block_cache_bytes,
            compaction_throughput_bytes_per_s=self.compaction_throughput_bytes_per_s,
            table_workers=self.table_workers)


class Node:
    """Open with ``Node.open()``; see the module docstring for the contract."""

    def __init__(self, directory: str, options: NodeOptions, clock: Clock, rng: random.Random,
                 reporter: Callable[[str], None], fs: FileSystem, engine: Engine,
                 meta: node_meta.NodeMeta, purge_filter: PurgeFilter | None = None) -> None:
        """Private: use Node.open()."""
        self.directory = directory
        self.options = options
        self.clock = clock
        self.node_id = meta.node_id
        self.actor = meta.actor
        self._meta = meta
        self._rng = rng
        self._report = reporter
        self._fs = fs
        self._engine: Engine | None = engine
        self._replica = replica = Replica(engine, options.databases, options.tombstone_grace_ms,
                                          reporter)
        replica.rebuild()
        self._expiry = ActiveExpiry(replica, clock, options.active_expire_interval_ms,
                                    options.active_expire_budget_ms, self._reclaimed)
        self._listeners: list[Callable[[int, bytes | None], None]] = []
        self._seq = 0
        self._counters = {"siblings_dropped": 0, "clock_prunes": 0}
        self._purge_filter = purge_filter
        # Hot-path bindings.
        self._eget = engine.get
        # True while every replica of every key is this node: the frontend may then call
        # get_now/put_now instead of awaiting get/put. A node of a larger ring is never so.
        self.local_only = True
        # Truthy while writes await commit(); see Engine.pending_log.
        self.pending_log: list[bytes | None] = engine.pending_log
        # The system clock's function itself when the clock is the loop's (a frame per
        # call fewer: every SET reads it).
        self._wall_ms = system_wall_ms if type(clock) is LoopClock else clock.wall_ms
        self._apply = replica.apply
        self._store_new = replica.store_new
        self._engine_put = engine.put
        self._prune_small = options.vclock_prune.entries_small
        # The encoding parts of this actor's versions for one millisecond (_encode_now).
        self._parts: SingleParts = single_parts(self.actor, 0)

    @classmethod
    def open(cls, directory: str, options: NodeOptions, clock: Clock,
             rng: random.Random | None = None, reporter: Callable[[str], None] | None = None,
             *, fs: FileSystem | None = None) -> Node:
        """Open or create the node whose data lives in ``directory``.

        Opens the engine in ``directory/engine``, loads or creates the node's identity
        (``node_meta``: a new vector-clock actor unless the data is intact and the last
        shutdown was clean) and rebuilds the counters by one scan. Raises StorageError if the
        engine cannot open (e.g. another node holds the directory), CorruptionError if
        ``node.meta`` is damaged.
        """
        fs = fs or OSFileSystem()
        rng = rng or random.Random(os.urandom(32))
        report = reporter or (lambda message: None)
        fs.makedirs(directory)
        engine_dir = join(directory, ENGINE_DIR)
        had_data = _has_data(fs, engine_dir)
        # Runs on the compaction thread: clock.wall_ms is thread-safe (clock.py, Rule 3).
        purge_filter = PurgeFilter(options.tombstone_grace_ms, clock.wall_ms,
                                   system_clock=isinstance(clock, LoopClock))
        engine = Engine.open(engine_dir, options.engine_options(), fs=fs, reporter=reporter,
                             compaction_filter=purge_filter)
        try:
            recovery = engine.stats()
            intact = (had_data and recovery.get("bytes_truncated_on_recovery", 0) == 0
                      and recovery.get("segments_quarantined", 0) == 0)
            meta, reason = node_meta.start(fs, directory, data_intact=intact, rng=rng,
                                           now_ms=clock.wall_ms())
            if reason:
                report(f"node {meta.node_id}: new vector-clock actor {meta.actor.hex()} "
                       f"({reason})")
            return cls(directory, options, clock, rng, report, fs, engine, meta, purge_filter)
        except BaseException:
            engine.close()
            raise

    # Reads -----------------------------------------------------------------------------

    async def get(self, db: int, key: bytes) -> Entry | None:
        """The visible value of ``key``: None if missing, deleted or expired (see get_now)."""
        return self.get_now(db, key)

    def get_now(self, db: int, key: bytes) -> Entry | None:
        """``get`` without a coroutine, for callers on the hot path of a cluster of one
        (``local_only``): the same code answers both.

        The visible value of ``key``: None if missing, deleted or expired.

        An expired key is reclaimed here (lazy expiry). Raises CorruptionError if the stored
        bytes do not decode.
        """
        ekey = _DB_BYTES[db] + _hash_bytes(key)[7::-1] + key  # keys.engine_key, inlined
        raw = self._eget(ekey)
        if raw is None:
            return None
        single = _decode_single(raw)
        if single is not None:  # the common shape: read its fields, build no Version
            expire_at_ms = single[2]
            value = single[4]
            seen: object = single
        else:
            siblings = decode(raw)
            _, _, expire_at_ms, _, value = winner(siblings)
            seen = siblings
        if value is None:
            return None
        if expire_at_ms and expire_at_ms <= self._wall_ms():
            self._expire(db, ekey, decode(raw))
            return None
        return _new(Entry, (value, expire_at_ms, (seen, self._seq, ekey)))

    def value_now(self, db: int, key: bytes) -> bytes | None:
        """``get_now(db, key).value`` (None if invisible) without building the Entry: the hot
        path of GET, which needs no context. Same expiry and errors as get_now."""
        raw = self._eget(_DB_BYTES[db] + _hash_bytes(key)[7::-1] + key)
        if raw is None:
            return None
        single = _decode_single(raw)
        if single is not None:
            value: bytes | None = single[4]
            expire_at_ms = single[2]
            if not expire_at_ms or value is None or expire_at_ms > self._wall_ms():
                return value
        entry = self.get_now(db, key)  # siblings, or an expired key to reclaim
        return None if entry is None else entry.value

    async def get_many(self, db: int, keys: Sequence[bytes]) -> list[Entry | None]:
        """``get`` of each key, in order (a cluster runs them in parallel)."""
        get = self.get_now
        return [get(db, key) for key in keys]

    # Writes ----------------------------------------------------------------------------

    async def put(self, db: int, key: bytes, value: bytes, expire_at_ms: int = 0, *,
                  context: object | None = None) -> None:
        """Set ``key`` (see put_now)."""
        self.put_now(db, key, value, expire_at_ms, context=context)

    def put_now(self, db: int, key: bytes, value: bytes, expire_at_ms: int = 0, *,
                context: object | None = None) -> None:
        """``put`` without a coroutine, for the hot path of a cluster of one (``local_only``).
        Set ``key`` to ``value`` (expiring at ``expire_at_ms``, 0 = never); Rules 2 and 3."""
        ekey = _DB_BYTES[db] + _hash_bytes(key)[7::-1] + key  # keys.engine_key, inlined
        now_ms = self._wall_ms()
        actor = self.actor
        single: Single | None
        if context is None:
            raw = self._eget(ekey)
            if raw is None:
                if not expire_at_ms:
                    self._store_new(db, ekey, self._encode_now(now_ms, value, 1))
                elif self._replica.on_store is None:
                    self._replica.store_encoded(
                        db, ekey, _encode_single(now_ms, expire_at_ms, actor, value, 1, now_ms),
                        _ABSENT, (1, 1, expire_at_ms), now_ms)
                else:
                    self._apply(db, ekey, (), (
                        ({actor: (1, now_ms)}, now_ms, expire_at_ms, actor, value),), now_ms)
            else:
                single = _decode_single(raw)
                if (single is not None and (expire_at_ms or single[2])
                        and len(single) == _SINGLE_FIELDS and single[6] == actor
                        and self._replica.on_store is None):
                    self._put_single(db, ekey, single, now_ms, expire_at_ms, value)
                elif (single is not None and not expire_at_ms and len(single) == _SINGLE_FIELDS
                        and single[6] == actor and not single[2] and single[4] is not None):
                    # The fast path of SET: _put_over with _encode_now inlined (two frames
                    # per SET), for a value and counter the joined encoding covers.
                    counter = single[7] + 1
                    parts = self._parts
                    if parts[0] != now_ms:
                        parts = self._parts = single_parts(actor, now_ms)
                    size = len(value)
                    if single[1] <= now_ms and size < _BIN8_MAX and counter < _UINTS_MAX:
                        self._engine_put(ekey, _join((parts[1], _BIN_HEADERS[size], value,
                                                      parts[2], _UINTS[counter], parts[3])))
                    else:
                        self._put_over(ekey, single, now_ms, value)
                else:
                    old = siblings_of(single) if single is not None else decode(raw)
                    self._apply(db, ekey, old, self._siblings(
                        old, old, self._version(old, old, now_ms, expire_at_ms, value), now_ms),
                        now_ms)
            self._seq += 1
            for listener in self._listeners:
                listener(db, key)
            return
        ctx: _Context = context  # type: ignore[assignment]
        fresh = ctx[1] == self._seq and ctx[2] == ekey
        read = ctx[0]
        single = cast(Single, read) if type(read[0]) is int else None
        if (fresh and single is not None and len(single) == _SINGLE_FIELDS
                and single[6] == actor and not single[2] and not expire_at_ms
                and single[4] is not None):
            self._put_over(ekey, single, now_ms, value)
        elif (fresh and single is not None and len(single) == _SINGLE_FIELDS
                and single[6] == actor and self._replica.on_store is None):
            self._put_single(db, ekey, single, now_ms, expire_at_ms, value)  # EXPIRE, INCR
        else:
            if fresh:
                old = seen = _as_siblings(ctx[0])  # nothing changed since it was read (Rule 3)
            else:
                old = self._replica.read(ekey)
                seen = _as_siblings(ctx[0])
            self._apply(db, ekey, old, self._siblings(
                old, seen, self._version(old, seen, now_ms, expire_at_ms, value), now_ms), now_ms)
        self._seq += 1
        for listener in self._listeners:
            listener(db, key)

    def _put_single(self, db: int, ekey: bytes, single: Single, now_ms: int,
                    expire_at_ms: int, value: bytes | None) -> None:
        """Store ``value`` (None: a tombstone) expiring at ``expire_at_ms`` (0 = never) over
        ``single``: the key's one version, whose clock is this node's actor alone. What the
        general path (a version bumping that clock, then ``Replica.apply``) stores, without
        building either set: the SET ... EX or DEL of a key this node wrote last.
        REQUIRES: no store hook."""
        self._replica.store_encoded(db, ekey, *self._bumped(single, now_ms, expire_at_ms, value),
                                    now_ms)

    def _bumped(self, single: Single, now_ms: int, expire_at_ms: int,
                value: bytes | None) -> tuple[bytes, KeyState, KeyState]:
        """The version superseding ``single`` (this node's own, alone): its clock bumped, its
        timestamp never behind the old one (Rule 2), encoded; with the key states of the old
        and the new set (``Replica.store_encoded``)."""
        timestamp_ms = single[1]
        new_timestamp_ms = max(timestamp_ms, now_ms)
        grace_ms = self._replica.grace_ms
        return (_encode_single(new_timestamp_ms, expire_at_ms, self.actor, value,
                               single[7] + 1, now_ms),
                _single_state(timestamp_ms, single[2], single[4], grace_ms),
                _single_state(new_timestamp_ms, expire_at_ms, value, grace_ms))

    def _put_over(self, ekey: bytes, single: Single, now_ms: int, value: bytes) -> None:
        """Store ``value`` (no expiry) over ``single``: the key's one live version, without
        expiry, whose clock is this node's actor alone (what this node wrote last). The new
        clock is the old one bumped; key counters and the expiry index do not change."""
        timestamp_ms = single[1]
        counter = single[7] + 1
        if timestamp_ms > now_ms:  # the wall clock stepped back (Rule 2)
            data = _encode_single(timestamp_ms, 0, self.actor, value, counter, now_ms)
        else:
            data = self._encode_now(now_ms, value, counter)
        self._engine_put(ekey, data)

    def _encode_now(self, now_ms: int, value: bytes, counter: int) -> bytes:
        """``encode_single(now_ms, 0, self.actor, value, counter, now_ms)``: the bytes of a
        SET's version whose timestamp and clock stamp are both now, joined from parts cached
        for the current millisecond (sibling_codec.single_parts) when value and counter are
        small, which costs half of packing them."""
        parts = self._parts
        if parts[0] != now_ms:
            parts = self._parts = single_parts(self.actor, now_ms)
        size = len(value)
        if size < _BIN8_MAX and counter < _UINTS_MAX:
            return _join((parts[1], _BIN_HEADERS[size], value, parts[2], _UINTS[counter],
                          parts[3]))
        return _encode_single(now_ms, 0, self.actor, value, counter, now_ms)

    async def put_siblings_context(self, db: int, key: bytes, value: bytes | None,
                                   expire_at_ms: int, seen: Siblings) -> None:
        """Write ``value`` (None: a tombstone) superseding exactly the versions ``seen`` names
        (VCLOCK SET/DEL with a context; only their clocks and timestamps are read). Rule 3
        with a context from any connection, maybe old: the stored set is always read again,
        and versions written since ``seen`` stay as siblings."""
        ekey = _engine_key(db, key)
        now_ms = self._wall_ms()
        old = self._replica.read(ekey)
        version = self._version(old, seen, now_ms, expire_at_ms, value)
        self._apply(db, ekey, old, self._siblings(old, seen, version, now_ms), now_ms)
        self._changed(db, key)

    async def delete(self, db: int, key: bytes) -> bool:
        """Delete ``key`` with a tombstone; True when a visible value existed."""
        return self.delete_now(db, key)

    def delete_now(self, db: int, key: bytes) -> bool:
        """``delete`` without a coroutine (a cluster of one's DEL)."""
        ekey = _engine_key(db, key)
        raw = self._eget(ekey)
        if raw is None:
            return False
        now_ms = self._wall_ms()
        single = _decode_single(raw)
        if (single is not None and len(single) == _SINGLE_FIELDS and single[6] == self.actor
                and single[4] is not None and not 0 < single[2] <= now_ms
                and self._replica.on_store is None):
            # A live value this node wrote last (the common DEL): its tombstone without
            # building the sets, as _put_single stores it.
            self._put_single(db, ekey, single, now_ms, 0, None)
            self._changed(db, key)
            return True
        old = siblings_of(single) if single is not None else decode(raw)
        visible, live = _liveness(old, now_ms)
        if live:
            version = self._version(old, old, now_ms, 0, None)
            self._apply(db, ekey, old, self._siblings(old, old, version, now_ms), now_ms)
            self._changed(db, key)
        elif visible is None and _expired_winner(old, now_ms):
            self._expire(db, ekey, old)
        return visible is not None

    async def delete_many(self, db: int, keys: Sequence[bytes]) -> int:
        """``delete`` of each key in order; how many visible values were deleted."""
        return self.delete_many_now(db, keys)

    def delete_many_now(self, db: int, keys: Sequence[bytes]) -> int:
        """``delete_many`` without a coroutine (a cluster of one's DEL and UNLINK)."""
        return sum(map(partial(self.delete_now, db), keys))

    async def write_many(self, db: int, ops: Sequence[tuple[bytes, bytes | None, int]]) -> None:
        """Apply ``(key, value or None = delete, expire_at_ms)`` ops atomically (one batch).

        Ops apply in order; a key may appear more than once (the last op wins). Listeners are
        called once per op that changed something, after the batch is written; a delete of a
        key with nothing live changes nothing.
        """
        if not ops:
            return
        now_ms = self._wall_ms()
        replica = self._replica
        grace_ms = replica.grace_ms
        ekeys = [_engine_key(db, key) for key, _, _ in ops]
        if replica.on_store is None and len(set(ekeys)) == len(ekeys):
            self._write_encoded(db, ops, ekeys, now_ms)
            return
        current: dict[bytes, Siblings] = {}
        changes: list[tuple[bytes, Siblings, Siblings]] = []
        changed: list[bytes] = []
        for (key, value, expire_at_ms), ekey in zip(ops, ekeys, strict=True):
            old = current[ekey] if ekey in current else replica.read(ekey)
            if value is None and not _liveness(old, now_ms)[1]:
                continue  # nothing live to delete (expired leftovers are reclaimed lazily)
            version = self._version(old, old, now_ms, expire_at_ms, value)
            new = self._siblings(old, old, version, now_ms)
            changes.append((ekey, old, new))
            changed.append(key)
            due_ms = purge_at(new, grace_ms)
            current[ekey] = () if due_ms is not None and due_ms <= now_ms else new
        replica.apply_many(db, changes, now_ms)
        for key in changed:
            self._changed(db, key)

    def _write_encoded(self, db: int, ops: Sequence[tuple[bytes, bytes | None, int]],
                       ekeys: Sequence[bytes], now_ms: int) -> None:
        """``write_many`` of distinct keys without a store hook: each version encoded as it
        is built, the one this node wrote last bumped (``_bumped``), anything else through
        the general version and sets; one batch (``Replica.store_encoded_many``)."""
        grace_ms = self._replica.grace_ms
        changes: list[tuple[bytes, bytes, KeyState, KeyState]] = []
        changed: list[bytes] = []
        for (key, value, expire_at_ms), ekey in zip(ops, ekeys, strict=True):
            raw = self._eget(ekey)
            single = None if raw is None else _decode_single(raw)
            if raw is None:
                if value is None:
                    continue  # nothing to delete
                changes.append((ekey, _encode_single(now_ms, expire_at_ms, self.actor, value,
                                                     1, now_ms),
                                _ABSENT, _single_state(now_ms, expire_at_ms, value, grace_ms)))
            elif (single is not None and len(single) == _SINGLE_FIELDS
                    and single[6] == self.actor):
                if value is None and (single[4] is None or 0 < single[2] <= now_ms):
                    continue  # nothing live to delete
                changes.append((ekey, *self._bumped(single, now_ms, expire_at_ms, value)))
            else:
                old = decode(raw)
                if value is None and not _liveness(old, now_ms)[1]:
                    continue
                new = self._siblings(
                    old, old, self._version(old, old, now_ms, expire_at_ms, value), now_ms)
                changes.append((ekey, encode(new), key_state(old, grace_ms),
                                key_state(new, grace_ms)))
            changed.append(key)
        self._replica.store_encoded_many(db, changes, now_ms)
        for key in changed:
            self._changed(db, key)

    # Iteration -------------------------------------------------------------------------

    async def scan(self, db: int, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """Live keys from ring token ``cursor`` on; returns (next cursor, keys), 0 when done.

        ``count`` is a work hint (entries examined, live or not). The call always finishes
        every key that shares the token it stopped at, and the next cursor is the first token
        not visited, so a key present during the whole iteration is returned exactly once.
        """
        assert 0 <= cursor <= keyspace.TOKEN_MAX, cursor
        now_ms = self._wall_ms()
        found: list[bytes] = []
        expired: list[tuple[bytes, Siblings]] = []
        stop_token = -1
        next_cursor = 0
        token_of = keyspace.token_of
        start = keyspace.token_start(db, cursor)
        scanned = self._replica.scan(start, keyspace.db_end(db))
        for examined, (ekey, siblings) in enumerate(scanned, 1):
            if stop_token >= 0:
                token = token_of(ekey)
                if token != stop_token:
                    next_cursor = token
                    break
            if siblings is not None:
                _, _, expire_at_ms, _, value = winner(siblings)
                if value is not None:
                    if expire_at_ms and expire_at_ms <= now_ms:
                        expired.append((ekey, siblings))
                    else:
                        found.append(ekey[keyspace.PREFIX_BYTES:])
            if examined >= count and stop_token < 0:
                stop_token = token_of(ekey)
        for ekey, siblings in expired:
            self._expire(db, ekey, siblings)
        return next_cursor, found

    async def random_key(self, db: int) -> bytes | None:
        """A live key chosen from a random ring token on (wrapping around); None if none."""
        replica = self._replica
        if replica.keys[db] == 0:
            return None
        now_ms = self._wall_ms()
        pivot = keyspace.token_start(db, self._rng.getrandbits(64))
        result: bytes | None = None
        expired: list[tuple[bytes, Siblings]] = []
        for start, end in ((pivot, keyspace.db_end(db)), (keyspace.db_start(db), pivot)):
            for ekey, siblings in replica.scan(start, end):
                if siblings is None:
                    continue
                _, _, expire_at_ms, _, value = winner(siblings)
                if value is None:
                    continue
                if expire_at_ms and expire_at_ms <= now_ms:
                    expired.append((ekey, siblings))
                    continue
                result = ekey[keyspace.PREFIX_BYTES:]
                break
            if result is not None:
                break
        for ekey, siblings in expired:
            self._expire(db, ekey, siblings)
        return result

    # Whole databases -------------------------------------------------------------------

    async def dbsize(self, db: int) -> int:
        """Keys whose winner is a value, expired-but-not-yet-reclaimed included (as Redis)."""
        return self._replica.keys[db]

    async def flushdb(self, db: int) -> None:
        """Remove every key of ``db`` from this node's storage, then call listeners (db, None)."""
        self._replica.flush(db)
        self._seq += 1
        for listener in self._listeners:
            listener(db, None)

    async def flushall(self) -> None:
        for db in range(self.options.databases):
            await self.flushdb(db)

    def keyspace(self) -> list[tuple[int, int, int]]:
        """(db, keys, expires) for every non-empty db, for INFO keyspace."""
        replica = self._replica
        return [(db, replica.keys[db], replica.expires[db])
                for db in range(replica.databases) if replica.keys[db]]

    def memory_usage(self, db: int, key: bytes) -> int | None:
        """Approximate bytes ``key`` costs (engine key, stored sibling set, per-entry overhead);
        None if the key is not visible."""
        ekey = _engine_key(db, key)
        raw = self._replica.raw(ekey)
        if raw is None or _liveness(decode(raw), self._wall_ms())[0] is None:
            return None
        return len(ekey) + len(raw) + ENTRY_OVERHEAD_BYTES

    def stats(self) -> dict[str, int]:
        """Cluster-layer counters, then the engine's prefixed with ``engine_``."""
        out = {**self._replica.stats, **self._expiry.stats, **self._counters}
        if self._purge_filter is not None:
            out["compaction_purged_keys"] = self._purge_filter.dropped
        if self._engine is not None and not self._engine.closed:
            for name, number in self._engine.stats().items():
                out[f"engine_{name}"] = number
        return out

    # Lifecycle and plumbing ------------------------------------------------------------

    @property
    def replica(self) -> Replica:
        """The node's local replica (the cluster layer serves peers from it)."""
        return self._replica

    def notify_changed(self, db: int, key: bytes) -> None:
        """Rule 4 for a change made through ``replica`` by the cluster layer."""
        self._changed(db, key)

    def rotate_actor(self, reason: str) -> bytes:
        """Take a new vector-clock actor (persisted) and return it. A cluster does this after
        a flush: the flushed versions held this actor's counters, and versions of them that
        survive elsewhere (a hint, a write in flight) must not dominate the new ones."""
        self._meta = node_meta.new_actor(self._fs, self.directory, self._meta, self._rng,
                                         self._wall_ms())
        self.actor = self._meta.actor
        self._parts = single_parts(self.actor, 0)
        self._report(f"node {self.node_id}: new vector-clock actor {self.actor.hex()} "
                     f"({reason})")
        return self.actor

    def notify_flushed(self, db: int) -> None:
        """Rule 4 for a flush of ``db`` made through ``replica`` by the cluster layer."""
        self._seq += 1
        for listener in self._listeners:
            listener(db, None)

    def local_scan(self, db: int, start: int, count: int
                   ) -> tuple[list[tuple[bytes, Siblings]], int | None]:
        """Stored entries (key, sibling set) of ``db`` from token ``start`` on, live or not:
        at least ``count`` examined when that many remain, and every entry of the last token
        visited. Returns (entries, last token visited or None when the end was reached)."""
        entries: list[tuple[bytes, Siblings]] = []
        stop_token = -1
        token_of = keyspace.token_of
        for examined, (ekey, siblings) in enumerate(
                self._replica.scan(keyspace.token_start(db, start), keyspace.db_end(db)), 1):
            if stop_token >= 0 and token_of(ekey) != stop_token:
                return entries, stop_token
            if siblings:
                entries.append((ekey[keyspace.PREFIX_BYTES:], siblings))
            if examined >= count and stop_token < 0:
                stop_token = token_of(ekey)
        return entries, None

    def add_listener(self, callback: Callable[[int, bytes | None], None]) -> None:
        """Call ``callback(db, key)`` after every change of a key, ``(db, None)`` after a flush."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[int, bytes | None], None]) -> None:
        """Stop calling a callback added with add_listener (no-op if it is not there)."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def start(self) -> None:
        """Start background work (the active expiry cycle) on the node's clock."""
        self._expiry.start()

    def run_expire_cycle(self) -> bool:
        """Run one active expiry cycle now; True if it ran out of budget (tests, DEBUG)."""
        return self._expiry.run_cycle()

    @property
    def has_uncommitted(self) -> bool:
        return self._engine is not None and self._engine.has_uncommitted

    def commit(self) -> None:
        """Write buffered records to the OS (the server calls it once per loop iteration)."""
        assert self._engine is not None, "node is closed"
        self._engine.commit()

    def sync(self) -> None:
        assert self._engine is not None, "node is closed"
        self._engine.sync()

    def set_fsync(self, policy: str) -> None:
        """Change the fsync policy, if the engine supports it live; otherwise it applies from
        the next start (reported)."""
        if policy not in ("always", "everysec", "no"):
            raise ValueError(f"fsync must be 'always', 'everysec' or 'no', not {policy!r}")
        setter = getattr(self._engine, "set_fsync", None)
        if setter is not None:
            setter(policy)
        else:
            self._report(f"appendfsync {policy} takes effect when the node restarts")
        self.options = replace(self.options, fsync=policy)

    def tune_engine(self, *, memtable_size_bytes: int | None = None,
                    block_cache_bytes: int | None = None,
                    compaction_throughput_bytes_per_s: int | None = None,
                    table_workers: bool | None = None) -> None:
        """Change engine limits live (CONFIG SET); ValueError (nothing changed) if out of range."""
        assert self._engine is not None, "node is closed"
        self._engine.tune(memtable_size_bytes=memtable_size_bytes,
                          block_cache_bytes=block_cache_bytes,
                          compaction_throughput_bytes_per_s=compaction_throughput_bytes_per_s,
                          table_workers=table_workers)
        engine_options = self._engine.options
        self.options = replace(
            self.options, memtable_size_bytes=engine_options.memtable_size_bytes,
            block_cache_bytes=engine_options.block_cache_bytes,
            compaction_throughput_bytes_per_s=engine_options.compaction_throughput_bytes_per_s,
            table_workers=engine_options.table_workers)

    async def close(self) -> None:
        """Stop background work, close the engine, record a clean shutdown. Idempotent."""
        engine, self._engine = self._engine, None
        if engine is None:
            return
        self._expiry.stop()
        engine.close()
        self._meta = node_meta.mark_clean(self._fs, self.directory, self._meta)

    # Internals -------------------------------------------------------------------------

    def _version(self, old: Siblings, seen: Siblings, now_ms: int, expire_at_ms: int,
                 value: bytes | None) -> Version:
        """A new version superseding ``seen`` (Rules 2 and 3)."""
        actor = self.actor
        if not seen and not old:
            return ({actor: (1, now_ms)}, now_ms, expire_at_ms, actor, value)
        if len(old) == 1 and seen is old:  # the common case: supersede the one stored version
            clock, timestamp_ms = old[0][0], old[0][1]
            return (_increment(clock, actor, now_ms), max(now_ms, timestamp_ms), expire_at_ms,
                    actor, value)
        # This actor's next counter must exceed every counter of it stored for the key.
        top = max(v[CLOCK].get(actor, _NO_ENTRY)[0] for v in chain(seen, old))
        clocks: list[VClock] = [v[CLOCK] for v in seen]
        if top:
            clocks.append({actor: (top, 0)})
        clock = _increment(vclock.merge(clocks), actor, now_ms)
        newest_ms = max((v[TIMESTAMP_MS] for v in seen), default=0)
        return (clock, max(now_ms, newest_ms), expire_at_ms, actor, value)

    def _siblings(self, old: Siblings, seen: Siblings, version: Version,
                  now_ms: int) -> Siblings:
        """The set to store once ``version`` is written over ``old``."""
        if seen is old:
            new: Siblings = (version,)  # version's clock descends every stored version
        else:
            new, dropped = limit(merge(old, (version,)), self.options.sibling_limit)
            self._counters["siblings_dropped"] += dropped
        if len(version[CLOCK]) > self._prune_small:
            new, pruned = prune_siblings(new, now_ms, self.options.vclock_prune)
            self._counters["clock_prunes"] += pruned
        return new

    def _expire(self, db: int, ekey: bytes, siblings: Siblings) -> None:
        self._replica.expire_key(db, ekey, siblings, self._wall_ms())
        self._changed(db, ekey[keyspace.PREFIX_BYTES:])

    def _reclaimed(self, db: int, ekey: bytes) -> None:
        self._changed(db, ekey[keyspace.PREFIX_BYTES:])

    def _changed(self, db: int, key: bytes) -> None:
        self._seq += 1
        for listener in self._listeners:
            listener(db, key)


def _engine_key(db: int, key: bytes) -> bytes:
    """``keys.engine_key`` with this module's ``_hash_bytes`` (get/put inline the same)."""
    return _DB_BYTES[db] + _hash_bytes(key)[7::-1] + key


def _as_siblings(seen: object) -> Siblings:
    """A context's versions: a ``decode_single`` result or a sibling set."""
    if type(seen[0]) is int:  # type: ignore[index]
        return siblings_of(seen)  # type: ignore[arg-type]
    return seen  # type: ignore[return-value]


def _liveness(siblings: Siblings, now_ms: int) -> tuple[Version | None, bool]:
    """(the visible winner or None, whether any version holds a live value)."""
    if not siblings:
        return None, False
    top = winner(siblings)
    visible = top if top[VALUE] is not None and not 0 < top[EXPIRE_AT_MS] <= now_ms else None
    if visible is not None:
        return visible, True
    live = any(v[VALUE] is not None and not 0 < v[EXPIRE_AT_MS] <= now_ms for v in siblings)
    return None, live


def _expired_winner(siblings: Siblings, now_ms: int) -> bool:
    top = winner(siblings)
    return top[VALUE] is not None and 0 < top[EXPIRE_AT_MS] <= now_ms


def _has_data(fs: FileSystem, engine_dir: str) -> bool:
    """True if the engine directory exists and holds anything besides its lock file."""
    try:
        names = fs.listdir(engine_dir)
    except FileNotFoundError:
        return False
    return any(name != "LOCK" for name in names)
