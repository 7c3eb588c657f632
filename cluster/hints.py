"""Durable hints: writes kept for a replica that was down, until they can be handed off.

Theory of operation (Dynamo's hinted handoff; Cassandra's hints). When a key's replica is
down, the coordinator sends that replica's copy of the write to a stand-in (sloppy quorum)
with ``hint_for`` naming the intended owner, or keeps it itself when no stand-in exists. The
receiver records it here, in its own engine under the reserved namespace ``HINT_NAMESPACE``,
keyed by (target, db, key); a second hint for the same (target, key) is merged into the
first by vector clock, so a hint holds the owner's missing versions, never a list of writes.
When the owner is seen up again, ``ClusterNode`` hands the hints off (a plain WRITE to the
owner) at a bounded rate and removes each one the owner acknowledged, unless a newer hint was
merged into it meanwhile.

Invariants:
1. Durable as writes are: a hint is an engine record (commit log, memtable, tables), so it
   survives a restart of the node that holds it; ``HintStore.open`` recounts what is pending.
2. Bounded per target: at most ``max_count`` hints and ``max_bytes`` bytes of hints per
   target; a hint beyond is refused (``add`` returns False) and counted in ``dropped``.
   Anti-entropy repairs what a dropped hint would have carried.
3. A hint is removed only if its stored bytes are still those that were delivered
   (``remove_if_unchanged``), so a hint merged after its delivery started is kept and
   delivered again.
4. Hints expire: one older than ``ttl_ms`` (the tombstone grace: after it, a delivered
   tombstone could resurrect nothing, but a delivered value could resurrect a purged delete)
   is dropped at delivery and counted in ``expired``.

Record layout (engine key and value; on disk, never change without a version bump):
``key   = bytes([HINT_NAMESPACE]) + len(target) (1 byte) + target (ASCII) + engine_key(db, key)``
``value = created_ms (8 bytes big-endian) + sibling_codec bytes``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cluster import keys as keyspace
from cluster.errors import CorruptionError
from cluster.sibling_codec import decode, encode
from cluster.version import Siblings, limit, merge
from engine.db import Engine

HINT_NAMESPACE = 253  # one of the db bytes keys.py reserves for the cluster (240..255)
_PREFIX = bytes((HINT_NAMESPACE,))
_CREATED_BYTES = 8
MAX_COUNT_DEFAULT = 1_000_000
MAX_BYTES_DEFAULT = 1 << 30
SIBLINGS_MAX = 64


@dataclass(slots=True)
class Pending:
    count: int = 0
    bytes: int = 0


@dataclass(slots=True)
class HintStats:
    stored: int = 0  # hints recorded (a merge into an existing hint counts too)
    dropped: int = 0  # refused by the bounds (invariant 2)
    delivered: int = 0
    expired: int = 0  # dropped by age (invariant 4)
    damaged: int = 0  # records that did not decode (dropped, reported)
    per_target: dict[str, Pending] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hint:
    target: str
    db: int
    key: bytes
    siblings: Siblings
    created_ms: int
    raw: bytes  # the stored value, for remove_if_unchanged


def _target_prefix(target: str) -> bytes:
    encoded = target.encode("ascii")
    assert 0 < len(encoded) < 256, target
    return _PREFIX + bytes((len(encoded),)) + encoded


def record_key(target: str, db: int, key: bytes) -> bytes:
    """The engine key of the hint for ``target``'s copy of (db, key)."""
    return _target_prefix(target) + keyspace.engine_key(db, key)


class HintStore:
    """The hints this node holds for other nodes (see the module docstring)."""

    def __init__(self, engine: Engine, now_ms: Callable[[], int], *,
                 max_count: int = MAX_COUNT_DEFAULT, max_bytes: int = MAX_BYTES_DEFAULT,
                 ttl_ms: int = 0, report: Callable[[str], None] | None = None) -> None:
        """Private: use HintStore.open()."""
        self.engine = engine
        self.now_ms = now_ms
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.ttl_ms = ttl_ms  # 0: hints never expire by age
        self.report = report or (lambda message: None)
        self.stats = HintStats()

    @classmethod
    def open(cls, engine: Engine, now_ms: Callable[[], int], **options: object) -> HintStore:
        """A store over ``engine``, with the pending counts recounted by one scan (inv. 1)."""
        store = cls(engine, now_ms, **options)  # type: ignore[arg-type]
        end = bytes((HINT_NAMESPACE + 1,))
        for ekey, raw in engine.scan(_PREFIX, end):
            target = _target_of(ekey)
            if target is None:
                continue
            pending = store.stats.per_target.setdefault(target, Pending())
            pending.count += 1
            pending.bytes += len(ekey) + len(raw)
        return store

    # Recording -------------------------------------------------------------------------

    def add(self, target: str, db: int, key: bytes, siblings: Siblings) -> bool:
        """Record ``siblings`` for ``target``'s copy of (db, key); False if over a bound."""
        assert siblings, "an empty hint"
        rkey = record_key(target, db, key)
        old_raw = self.engine.get(rkey)
        pending = self.stats.per_target.setdefault(target, Pending())
        created_ms = self.now_ms()
        merged = siblings
        if old_raw is not None:
            try:
                created_ms, old = _decode_value(old_raw)
                merged, _ = limit(merge(old, siblings), SIBLINGS_MAX)
            except CorruptionError as exc:
                self.stats.damaged += 1
                self.report(f"replacing a damaged hint for {target}: {exc}")
        raw = created_ms.to_bytes(_CREATED_BYTES, "big") + encode(merged)
        grow_count = 0 if old_raw is not None else 1
        grow_bytes = len(raw) - (len(old_raw) if old_raw is not None else -len(rkey))
        if (pending.count + grow_count > self.max_count
                or pending.bytes + grow_bytes > self.max_bytes):
            self.stats.dropped += 1
            return False
        if raw != old_raw:
            self.engine.put(rkey, raw)
        pending.count += grow_count
        pending.bytes += grow_bytes
        self.stats.stored += 1
        return True

    # Reading ---------------------------------------------------------------------------

    def get(self, target: str, db: int, key: bytes) -> Siblings:
        raw = self.engine.get(record_key(target, db, key))
        if raw is None:
            return ()
        try:
            return _decode_value(raw)[1]
        except CorruptionError:
            return ()

    def for_key(self, db: int, key: bytes) -> Siblings:
        """Every version held in hints for (db, key), whatever their target (a stand-in
        answering a read for the owner it stands in for)."""
        found: Siblings = ()
        for target, pending in self.stats.per_target.items():
            if pending.count:
                held = self.get(target, db, key)
                if held:
                    found = merge(found, held)
        return found

    def pending(self, target: str) -> Pending:
        return self.stats.per_target.get(target, Pending())

    def targets(self) -> list[str]:
        """Targets with hints pending, sorted."""
        return sorted(t for t, p in self.stats.per_target.items() if p.count)

    def batch(self, target: str, limit_count: int, after: bytes = b"") -> list[Hint]:
        """Up to ``limit_count`` hints for ``target`` in key order, from engine key ``after``
        (exclusive) on. Expired and damaged hints are dropped on the way (invariant 4)."""
        prefix = _target_prefix(target)
        start = prefix if not after else after + b"\x00"
        end = prefix[:-1] + bytes((prefix[-1] + 1,)) if prefix[-1] < 255 else None
        out: list[Hint] = []
        doomed: list[tuple[bytes, bytes]] = []
        now_ms = self.now_ms()
        for rkey, raw in self.engine.scan(start, end):
            if not rkey.startswith(prefix):
                break
            ekey = rkey[len(prefix):]
            try:
                created_ms, siblings = _decode_value(raw)
            except CorruptionError as exc:
                self.stats.damaged += 1
                self.report(f"dropping a damaged hint for {target}: {exc}")
                doomed.append((rkey, raw))
                continue
            if self.ttl_ms and created_ms + self.ttl_ms <= now_ms:
                self.stats.expired += 1
                doomed.append((rkey, raw))
                continue
            out.append(Hint(target, ekey[0], ekey[keyspace.PREFIX_BYTES:], siblings, created_ms,
                            raw))
            if len(out) >= limit_count:
                break
        for rkey, raw in doomed:
            self._remove(target, rkey, raw)
        return out

    # Removing --------------------------------------------------------------------------

    def remove_if_unchanged(self, hint: Hint) -> bool:
        """Remove a delivered hint unless a newer one was merged into it (invariant 3)."""
        rkey = record_key(hint.target, hint.db, hint.key)
        if self.engine.get(rkey) != hint.raw:
            return False
        self._remove(hint.target, rkey, hint.raw)
        self.stats.delivered += 1
        return True

    def flush(self, db: int | None) -> int:
        """Remove every hint of ``db`` (None: of every db), whatever its target: a FLUSHDB
        or FLUSHALL must not be undone by a hint delivered later. Returns how many."""
        doomed: list[tuple[str, bytes, bytes]] = []
        for rkey, raw in self.engine.scan(_PREFIX, bytes((HINT_NAMESPACE + 1,))):
            target = _target_of(rkey)
            if target is None:
                continue
            ekey_db = rkey[2 + rkey[1]] if len(rkey) > 2 + rkey[1] else None
            if db is None or ekey_db == db:
                doomed.append((target, rkey, raw))
        for target, rkey, raw in doomed:
            self._remove(target, rkey, raw)
        return len(doomed)

    def drop_target(self, target: str) -> int:
        """Remove every hint for ``target`` (it left the cluster); returns how many."""
        dropped = 0
        while True:
            hints = self.batch(target, 1000)
            if not hints:
                return dropped
            for hint in hints:
                self._remove(target, record_key(target, hint.db, hint.key), hint.raw)
                dropped += 1

    def _remove(self, target: str, rkey: bytes, raw: bytes) -> None:
        self.engine.delete(rkey)
        pending = self.stats.per_target.setdefault(target, Pending())
        pending.count = max(0, pending.count - 1)
        pending.bytes = max(0, pending.bytes - len(rkey) - len(raw))


def _decode_value(raw: bytes) -> tuple[int, Siblings]:
    if len(raw) <= _CREATED_BYTES:
        raise CorruptionError(f"hint of {len(raw)} bytes is too short")
    return int.from_bytes(raw[:_CREATED_BYTES], "big"), decode(raw[_CREATED_BYTES:])


def _target_of(rkey: bytes) -> str | None:
    if len(rkey) < 2 or len(rkey) < 2 + rkey[1]:
        return None
    try:
        return rkey[2:2 + rkey[1]].decode("ascii")
    except UnicodeDecodeError:
        return None
