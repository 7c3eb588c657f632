"""The local replica: sibling sets of this node's keys kept in the engine, with their counters.

Theory of operation. Each user key is one engine key (``keys.engine_key``) whose value is an
encoded sibling set (``sibling_codec``). Every change goes through ``apply`` (or
``apply_many``): the caller passes the sibling set it read (``old``) and the one to store
(``new``); ``apply`` writes or physically removes the engine key and keeps three derived
structures in step with the engine:

- ``keys[db]``: keys whose winner is a value, expired-but-not-yet-reclaimed included (what
  Redis's DBSIZE counts);
- ``expires[db]``: those of them whose winner has an expiry (INFO keyspace ``expires=``);
- ``due[db]``: a ``DueIndex`` (cluster/due_index.py) of ``(due_ms, engine_key)``: when a key
  next needs attention (its winner expires, or, all its versions dead, it may be purged),
  to about a second. The active expiry cycle takes the keys of the slots that have passed.

Invariants:
1. ``keys`` and ``expires`` always equal what ``key_state`` of every stored sibling set gives,
   and ``due`` holds every stored key's due entry (``rebuild`` computes them by one scan on
   open; ``apply`` maintains them); ``due`` may also hold stale entries (invariant 5).
2. A stored sibling set is never empty, and a key whose versions are all dead is removed from
   the engine once ``purge_at`` has passed; with ``tombstone_grace_ms == 0`` (a cluster of
   one, where nothing can resurrect a deleted key) that is at once.
3. REQUIRES for ``apply``: ``old`` is what the engine holds for the key right now (``()`` if
   nothing). The bookkeeping is a diff of ``old`` and ``new``; a wrong ``old`` corrupts it.
4. Bookkeeping happens only after the engine accepted the write: if the engine raises,
   nothing here changed (the expiry cycle puts the keys it took for ``expire_due`` back).
5. The engine's compaction removes only keys whose removal these counters already reflect:
   ``PurgeFilter`` drops a stored sibling set only when ``key_state`` counts it nowhere (its
   winner is a tombstone, so it is in neither ``keys`` nor ``expires``) and its purge time
   has passed: exactly what ``apply`` would physically remove. An expired value still
   counts in DBSIZE until the expiry cycle (or a read) turns it into a tombstone, so
   compaction keeps it. What compaction removes therefore leaves ``keys`` and ``expires``
   exact; only ``due`` may keep an entry for a key that is gone, which ``expire_due`` drops
   without a word (likewise an entry whose key has since been rewritten with another due
   time), and ``apply`` of a key read as a dead set that compaction removed meanwhile is
   still right (a dead set and no set count the same).
6. Every change of a stored key made here is reported to ``on_store`` (when set), after the
   engine took it, with the bytes the key held before (None: nothing) and the bytes it holds
   now (None: removed). A writer that read the key with ``read_stored`` hands its bytes on
   (``old_raw``); otherwise they are read from the engine before the write.

Compaction filter. ``PurgeFilter`` runs on the engine's compaction thread (engine/compactor.py
invariant 3): it reads only its own fields and a wall clock that must be thread-safe
(``Clock.wall_ms`` is), never the engine and never this object's counters; its own counter
``dropped`` is written only on that thread. Why not also drop expired values: their removal
would have to decrement ``keys``/``expires`` from another thread, racing the loop thread's
own bookkeeping for the same key; the expiry cycle reclaims them within a period anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from cluster import keys as keyspace
from cluster.clock import system_wall_ms
from cluster.due_index import DueIndex
from cluster.errors import CorruptionError
from cluster.sibling_codec import decode, encode
from cluster.version import EXPIRE_AT_MS, VALUE, Siblings, expire, purge_at, winner
from engine.db import Engine
from engine.errors import StorageError


class PurgeFilter:
    """The compaction filter of invariant 5: ``filter(engine_key, stored) -> keep?``.

    Portable (engine/table_worker.py): with the system wall clock, a copy can run in the
    engine's compaction worker process; its counts are added back by ``absorb``. A filter on
    another clock (a test's manual clock) keeps compactions in the engine's process.
    """

    __slots__ = ("_grace_ms", "_now_ms", "_system_clock", "dropped", "undecodable")

    def __init__(self, tombstone_grace_ms: int, now_ms: Callable[[], int], *,
                 system_clock: bool = False) -> None:
        assert tombstone_grace_ms >= 0, tombstone_grace_ms
        self._grace_ms = tombstone_grace_ms
        self._now_ms = now_ms
        self._system_clock = system_clock  # now_ms is the system wall clock
        self.dropped = 0  # keys compaction purged (compaction thread only)
        self.undecodable = 0  # values kept because they do not decode

    def portable(self) -> PurgeFilter | None:
        """A picklable copy with zeroed counts, or None if this one's clock is not the
        system's."""
        if not self._system_clock:
            return None
        return PurgeFilter(self._grace_ms, system_wall_ms, system_clock=True)

    def absorb(self, copy: object) -> None:
        """Add the counts of a copy that ran in the compaction worker (compaction thread)."""
        assert isinstance(copy, PurgeFilter)
        self.dropped += copy.dropped
        self.undecodable += copy.undecodable

    def __call__(self, ekey: bytes, raw: bytes) -> bool:
        if ekey[0] >= keyspace.DATABASES_MAX:
            return True  # the cluster's own namespaces (hints, counter floors) manage theirs
        try:
            siblings = decode(raw)
        except CorruptionError:
            self.undecodable += 1
            return True  # never drop what we cannot read: a read will report it
        counted, _, due_ms = key_state(siblings, self._grace_ms)
        if counted or due_ms is None or due_ms > self._now_ms():
            return True
        self.dropped += 1
        return False


KeyState = tuple[int, int, int | None]  # (1 if counted, 1 if counted with expiry, due_ms)
ABSENT: KeyState = (0, 0, None)
_LIVE: KeyState = (1, 0, None)
FLUSH_BATCH_KEYS = 4096  # keys removed per engine batch by flush (bounds one batch's size)


def key_state(siblings: Siblings, grace_ms: int) -> KeyState:
    """Counters and due time of one stored sibling set (see the module docstring)."""
    if len(siblings) == 1:
        _, timestamp_ms, expire_at_ms, _, value = siblings[0]
        return single_state(timestamp_ms, expire_at_ms, value, grace_ms)
    if not siblings:
        return ABSENT
    top = winner(siblings)
    if top[VALUE] is not None:
        expire_at_ms = top[EXPIRE_AT_MS]
        return _LIVE if not expire_at_ms else (1, 1, expire_at_ms)
    return (0, 0, purge_at(siblings, grace_ms))


def single_state(timestamp_ms: int, expire_at_ms: int, value: bytes | None,
                 grace_ms: int) -> KeyState:
    """``key_state`` of a set of one version with these fields."""
    if value is not None:
        return _LIVE if not expire_at_ms else (1, 1, expire_at_ms)
    return (0, 0, max(timestamp_ms, expire_at_ms) + grace_ms)


def outcome(old: KeyState, new: KeyState, now_ms: int) -> KeyState | None:
    """What replacing a stored set whose state is ``old`` (ABSENT: none) by a set whose state is
    ``new`` leaves: ``new`` when the new set is stored, ABSENT when the key is removed instead
    (the new set is dead and may be purged now, invariant 2), None when there is nothing to
    store or remove."""
    if new[0] or new[2] is None or new[2] > now_ms:
        return new
    return ABSENT if old != ABSENT else None  # a stored (non-empty) set is never ABSENT


class Replica:
    def __init__(
        self,
        engine: Engine,
        databases: int,
        tombstone_grace_ms: int,
        reporter: Callable[[str], None],
    ) -> None:
        assert 1 <= databases <= keyspace.DATABASES_MAX, databases
        assert tombstone_grace_ms >= 0, tombstone_grace_ms
        self.engine = engine
        self.databases = databases
        self.grace_ms = tombstone_grace_ms
        self.report = reporter
        self.keys = [0] * databases
        self.expires = [0] * databases
        self.due: list[DueIndex] = [DueIndex() for _ in range(databases)]
        self.stats = {
            "expired_keys": 0,
            "tombstones_purged": 0,
            "corrupt_values": 0,
        }
        self._get = engine.get
        self._put = engine.put
        # Observers of every stored change, in the order the engine applied them (the
        # cluster's Merkle trees): (engine key, the bytes it held or None, the bytes it
        # holds now or None when removed). Bytes, not sets: the trees hash stored bytes,
        # and the writer has them (invariant 6).
        self.on_store: Callable[[bytes, bytes | None, bytes | None], None] | None = None
        self.on_flush: Callable[[int], None] | None = None

    # Reading ---------------------------------------------------------------------------

    def read(self, ekey: bytes) -> Siblings:
        """The stored sibling set of an engine key, ``()`` if none. CorruptionError if damaged."""
        raw = self._get(ekey)
        return () if raw is None else decode(raw)

    def read_stored(self, ekey: bytes) -> tuple[Siblings, bytes | None]:
        """``read``, with the bytes it decoded (None: nothing stored): a caller that writes
        the key next hands them to ``apply`` as ``old_raw`` (invariant 6)."""
        raw = self._get(ekey)
        return (() if raw is None else decode(raw)), raw

    def raw(self, ekey: bytes) -> bytes | None:
        return self._get(ekey)

    def scan(self, start: bytes, end: bytes, *, skip_damaged: bool = False
             ) -> Iterator[tuple[bytes, Siblings | None]]:
        """(engine key, sibling set) in ``[start, end)``; None for a value that does not decode
        (reported and counted). REQUIRES: consumed before the next change to the replica.

        A damaged table block raises the engine's CorruptionError; with skip_damaged it is
        reported and its keys are left out (for ``rebuild``: a node with one bad block must
        still start and serve every other key)."""
        on_corruption = self._skipped_block if skip_damaged else None
        for ekey, raw in self.engine.scan(start, end, on_corruption=on_corruption):
            try:
                yield ekey, decode(raw)
            except CorruptionError as exc:
                self.stats["corrupt_values"] += 1
                self.report(f"skipping key {ekey!r}: {exc}")
                yield ekey, None

    def _skipped_block(self, exc: Exception) -> None:
        self.report(f"counters leave out the keys of a damaged table block: {exc}")

    def holds_data(self, db: int | None = None) -> bool:
        """Whether anything (tombstones included) is stored in ``db``, or in any db."""
        start, end = ((b"", keyspace.db_start(self.databases)) if db is None
                      else (keyspace.db_start(db), keyspace.db_end(db)))
        return next(iter(self.engine.scan(start, end)), None) is not None

    # Writing ---------------------------------------------------------------------------

    def apply(self, db: int, ekey: bytes, old: Siblings, new: Siblings, now_ms: int,
              data: bytes | None = None, old_raw: bytes | None = None) -> None:
        """Replace ``old`` (what is stored, invariant 3) by ``new`` for one key. ``data``, when
        given, is ``encode(new)`` (the caller had it: a peer's write, a coordinator's
        version), stored instead of encoding ``new`` again. ``old_raw``, when given, is the
        stored bytes ``old`` was decoded from (``read_stored``), for the store hook."""
        grace_ms = self.grace_ms
        old_state = key_state(old, grace_ms) if old else ABSENT
        new_state = outcome(old_state, key_state(new, grace_ms), now_ms)
        if new_state is None:
            return  # nothing stored, and nothing worth storing
        hook = self.on_store
        if hook is not None and old and old_raw is None:
            old_raw = self._get(ekey)  # the caller did not keep them: read before they change
        if new_state is ABSENT:
            self.engine.delete(ekey)
            self.stats["tombstones_purged"] += 1
            data = None
        else:
            if data is None:
                data = encode(new)
            self._put(ekey, data)
        if hook is not None:
            hook(ekey, old_raw if old else None, data)
        if old_state is not new_state:
            self._account(db, ekey, old_state, new_state)

    def store_new(self, db: int, ekey: bytes, data: bytes) -> None:
        """``apply(db, ekey, (), new, now_ms)`` for a key with nothing stored, where ``new`` is
        one live version without expiry, already encoded as ``data``: the counters move from
        ABSENT to _LIVE, so only the key count changes (a new key is SET's common case)."""
        self._put(ekey, data)
        self.keys[db] += 1
        if self.on_store is not None:
            self.on_store(ekey, None, data)

    def store_encoded(self, db: int, ekey: bytes, data: bytes, old: KeyState, new: KeyState,
                      now_ms: int) -> None:
        """``apply`` for a new set given as its encoding ``data`` and its ``key_state``
        ``new``, over a stored set whose ``key_state`` is ``old`` (ABSENT if none): the same
        outcome (stored, or physically removed when ``new`` is dead and purgeable now),
        without building or comparing the sets. REQUIRES: no store hook (``on_store`` is
        None), which needs the sets."""
        assert self.on_store is None
        left = outcome(old, new, now_ms)
        if left is None:
            return
        if left is ABSENT:
            self.engine.delete(ekey)
            self.stats["tombstones_purged"] += 1
        else:
            self._put(ekey, data)
        if old != left:
            self._account(db, ekey, old, left)

    def store_encoded_many(self, db: int, changes: Sequence[tuple[bytes, bytes, KeyState,
                                                                  KeyState]],
                           now_ms: int) -> None:
        """``store_encoded`` of several distinct keys, ``(engine key, data, old state, new
        state)`` each, as one atomic engine batch (``apply_many`` without the sets).
        REQUIRES: no store hook; no key twice."""
        assert self.on_store is None
        self._write_batch(db, changes, now_ms)

    def _write_batch(self, db: int, changes: Sequence[tuple[bytes, bytes, KeyState, KeyState]],
                     now_ms: int) -> list[tuple[bytes, bytes | None]]:
        """Write ``(engine key, data, old state, new state)`` changes as one engine batch, each
        stored, removed or skipped as ``outcome`` says, then keep the counters; returns the
        batch's ops (data, or None for a removal)."""
        ops: list[tuple[bytes, bytes | None]] = []
        accounting: list[tuple[bytes, KeyState, KeyState]] = []
        purged = 0
        for ekey, data, old, new in changes:
            left = outcome(old, new, now_ms)
            if left is None:
                continue
            if left is ABSENT:
                ops.append((ekey, None))
                purged += 1
            else:
                ops.append((ekey, data))
            accounting.append((ekey, old, left))
        self.engine.write_batch(ops)
        self.stats["tombstones_purged"] += purged
        for ekey, old, left in accounting:
            self._account(db, ekey, old, left)
        return ops

    def apply_many(self, db: int, changes: Sequence[tuple[bytes, Siblings, Siblings]],
                   now_ms: int, old_raws: Mapping[bytes, bytes | None] | None = None) -> None:
        """``apply`` for several keys as one atomic engine batch. ``old_raws``, when given,
        holds the stored bytes of every key before the batch (``read_stored``), for the
        store hook.

        REQUIRES: each ``old`` is the stored set *as changed by the earlier entries* of the
        same call (a key may appear more than once; the last entry wins).
        """
        hook = self.on_store
        if hook is not None and old_raws is None:
            old_raws = {ekey: self._get(ekey) for ekey, _, _ in changes}  # before they change
        grace_ms = self.grace_ms
        ops = self._write_batch(db, [
            (ekey, encode(new), key_state(old, grace_ms) if old else ABSENT,
             key_state(new, grace_ms)) for ekey, old, new in changes], now_ms)
        if hook is not None:
            assert old_raws is not None
            # A key stored twice in the batch went from what it held before the batch to
            # what its last op left.
            for ekey, data in dict(ops).items():
                hook(ekey, old_raws[ekey], data)

    def expire_key(self, db: int, ekey: bytes, old: Siblings, now_ms: int) -> None:
        """Reclaim what has expired or may be purged in a stored key (lazy and active expiry)."""
        top = winner(old)
        if top[VALUE] is not None and 0 < top[EXPIRE_AT_MS] <= now_ms:
            self.stats["expired_keys"] += 1
        self.apply(db, ekey, old, expire(old, now_ms), now_ms)

    def expire_due(self, db: int, ekeys: Sequence[bytes], now_ms: int) -> None:
        """``expire_key`` for keys of ``db`` taken from ``due[db]`` (``DueIndex.take``), as one
        engine batch.

        A key whose stored set is not due by ``now_ms`` (a stale entry: compaction purged the
        key, or it was written again with another due time, which has its own entry) or is
        taken twice is skipped (invariant 5); one whose value is damaged is reported and
        dropped. If it raises, nothing changed (invariant 4): the caller, which took the keys,
        puts them back.
        """
        changes: list[tuple[bytes, Siblings, Siblings]] = []
        raws: dict[bytes, bytes | None] = {}
        expired = 0
        grace_ms = self.grace_ms
        for ekey in dict.fromkeys(ekeys):  # a key may be in two slots (DueIndex invariant 1)
            try:
                old, raws[ekey] = self.read_stored(ekey)
            except (CorruptionError, StorageError) as exc:  # damaged value or table block
                self.report(f"cannot expire key {ekey!r}: {exc}")
                continue
            due_ms = key_state(old, grace_ms)[2] if old else None
            if due_ms is None or due_ms > now_ms:
                continue
            top = winner(old)
            if top[VALUE] is not None and 0 < top[EXPIRE_AT_MS] <= now_ms:
                expired += 1
            changes.append((ekey, old, expire(old, now_ms)))
        self.apply_many(db, changes, now_ms, raws)
        self.stats["expired_keys"] += expired

    def _account(self, db: int, ekey: bytes, old: KeyState, new: KeyState) -> None:
        self.keys[db] += new[0] - old[0]
        self.expires[db] += new[1] - old[1]
        if old[2] != new[2]:
            due = self.due[db]
            if old[2] is not None:
                due.discard(old[2], ekey)
            if new[2] is not None:
                due.add(new[2], ekey)

    # Whole-db operations ---------------------------------------------------------------

    def flush(self, db: int) -> None:
        """Physically remove every key of ``db`` (in batches of FLUSH_BATCH_KEYS).

        Not atomic as a whole: a crash in the middle leaves the db partly flushed.
        """
        end = keyspace.db_end(db)
        start = keyspace.db_start(db)
        while True:
            batch = []
            for ekey, _ in self.engine.scan(start, end):
                batch.append((ekey, None))
                if len(batch) == FLUSH_BATCH_KEYS:
                    break
            if not batch:
                break
            self.engine.write_batch(batch)
            start = batch[-1][0] + b"\x00"
        self.keys[db] = 0
        self.expires[db] = 0
        self.due[db] = DueIndex()
        if self.on_flush is not None:
            self.on_flush(db)

    def rebuild(self) -> None:
        """Recompute keys, expires and due from the engine by one scan (invariant 1)."""
        grace_ms = self.grace_ms
        keys = [0] * self.databases
        expires = [0] * self.databases
        due: list[list[tuple[int, bytes]]] = [[] for _ in range(self.databases)]
        ignored = 0
        for ekey, siblings in self.scan(b"", keyspace.db_start(self.databases),
                                        skip_damaged=True):
            if siblings is None:
                continue
            counted, with_expiry, due_ms = key_state(siblings, grace_ms)
            db = ekey[0]
            keys[db] += counted
            expires[db] += with_expiry
            if due_ms is not None:
                due[db].append((due_ms, ekey))
        for _ in self.engine.scan(keyspace.db_start(self.databases),
                                  keyspace.db_start(keyspace.DATABASES_MAX),
                                  on_corruption=self._skipped_block):
            ignored += 1
        if ignored:
            self.report(f"{ignored} keys are in databases >= {self.databases} (the configured "
                        "number of databases) and cannot be reached")
        self.keys = keys
        self.expires = expires
        self.due = [DueIndex(entries) for entries in due]
