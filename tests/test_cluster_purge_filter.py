"""The replica's compaction filter (cluster/replica.py PurgeFilter, invariant 5): what it drops,
and that DBSIZE and INFO keyspace stay exact across flush, compaction, expiry and reopen."""

from __future__ import annotations

import pickle
import random
import tempfile
from typing import Any

from cluster.clock import ManualClock, system_wall_ms
from cluster.due_index import SLOT_SHIFT
from cluster.node import Node, NodeOptions, _engine_key
from cluster.replica import PurgeFilter, key_state
from cluster.sibling_codec import encode
from tests.inprocess import finish as run

T0 = 1_700_000_000_000
GRACE_MS = 1000
A, B = b"actor-a!", b"actor-b!"


def version(ts: int, value: bytes | None, expire_at: int = 0, actor: bytes = A) -> Any:
    return ({actor: (1, ts)}, ts, expire_at, actor, value)


def test_drops_only_dead_sets_the_counters_already_leave_out() -> None:
    now = T0 + 10_000
    cases = [
        # (sibling set, kept?)
        ((version(T0, b"live"),), True),
        ((version(T0, b"v", expire_at=now + 1),), True),  # not yet expired
        ((version(T0, b"v", expire_at=T0),), True),  # expired but still counted by DBSIZE
        ((version(now - GRACE_MS + 1, None),), True),  # tombstone inside its grace period
        ((version(now - GRACE_MS, None),), False),  # tombstone past its grace period
        ((version(T0, None, expire_at=now),), True),  # expired-then-tombstoned, in grace
        ((version(T0, None, expire_at=now - GRACE_MS),), False),
        ((version(T0 + 5, None), version(T0, b"live", actor=B)), True),  # a live sibling
        ((version(T0 + 5, None), version(T0, b"v", T0 + 1, actor=B)), False),  # all dead
        ((version(T0 + 5, b"v", T0 + 6), version(T0, None, actor=B)), True),  # counted winner
    ]
    purge = PurgeFilter(GRACE_MS, lambda: now)
    for siblings, kept in cases:
        assert purge(b"k", encode(siblings)) is kept, siblings
    assert purge.dropped == sum(not kept for _, kept in cases)
    assert purge(b"k", b"\xc1 not msgpack") is True  # undecodable: kept for a read to report
    assert purge.undecodable == 1
    # The cluster's own namespaces (hints 253, counter floors 254) are never judged here.
    dead = encode((version(T0, None),))
    assert purge(bytes((253,)) + b"hint", dead) is True
    assert purge(bytes((254,)) + b"floor", (7).to_bytes(8, "big")) is True
    assert purge.undecodable == 1
    assert PurgeFilter(0, lambda: T0)(b"k", encode((version(T0, None),))) is False


def keyspace_model(node: Node) -> list[tuple[int, int, int]]:
    """What INFO keyspace must show, recomputed by a full scan (Replica.rebuild)."""
    replica = node._replica
    saved = (replica.keys, replica.expires, replica.due)
    replica.rebuild()
    truth = node.keyspace()
    replica.keys, replica.expires, replica.due = saved
    return truth


def test_counters_stay_exact_across_flush_compaction_expiry_and_reopen() -> None:
    reports: list[str] = []
    clock = ManualClock(T0)
    options = NodeOptions(fsync="no", tombstone_grace_ms=GRACE_MS,
                          memtable_size_bytes=1 << 30, compaction_throughput_bytes_per_s=0)
    with tempfile.TemporaryDirectory(prefix="respkv-purge-") as directory:
        node = Node.open(directory, options, clock, random.Random(1), reports.append)
        for db in (0, 3):
            for i in range(300):
                expire_at = T0 + 1500 if i % 3 == 1 else 0  # a third expire at T0 + 1.5 s
                run(node.put(db, b"key-%d" % i, b"value-%d" % i, expire_at))
            for i in range(0, 300, 5):  # every fifth deleted: tombstones, due at T0 + 1 s
                run(node.delete(db, b"key-%d" % i))
        engine = node._engine
        assert engine is not None
        engine.flush()
        counts = node.keyspace()
        assert counts == keyspace_model(node)
        assert counts[0][1] == 240 and counts[0][2] == 80  # 300 - 60 deleted; expiring

        clock.advance(2.1)  # tombstones and expired values are due, and their index slots
        # have passed (T0 is slot-aligned: 1.5 s is in [1.024, 2.048)); no cycle has run
        engine.compact(full=True)
        purged = node.stats()["compaction_purged_keys"]
        assert purged == 2 * 60  # the tombstones; expired values are kept (still counted)
        for db in (0, 3):
            assert run(node.get(db, b"key-5")) is None
            assert engine.get(_engine_key(db, b"key-5")) is None  # physically gone
            assert engine.get(_engine_key(db, b"key-1")) is not None  # expired, kept
        assert node.keyspace() == counts == keyspace_model(node)
        assert run(node.dbsize(0)) == 240

        run(node.put(0, b"key-10", b"back"))  # a purged key written again
        assert run(node.dbsize(0)) == 241
        node.run_expire_cycle()  # reclaims the expired values; drops stale index entries
        assert not any("expiry index" in r or "did not leave" in r for r in reports), reports
        after = node.keyspace()
        assert after == keyspace_model(node)
        assert after[0] == (0, 241 - 80, 0) and after[1] == (3, 240 - 80, 0)
        replica = node._replica
        for due in replica.due:  # no stale entry left: each names a stored key in its slot
            for slot_ms, ekey in due:
                due_ms = key_state(replica.read(ekey), GRACE_MS)[2]
                assert due_ms is not None and due_ms >> SLOT_SHIFT == slot_ms >> SLOT_SHIFT
        assert sum(map(len, replica.due)) == 2 * 80  # the expired values' new tombstones

        engine.flush()
        clock.advance(2.0)
        engine.compact(full=True)  # purges those tombstones before the cycle does
        assert node.stats()["compaction_purged_keys"] == purged + 2 * 80
        assert node.keyspace() == after == keyspace_model(node)
        node.run_expire_cycle()  # finds their keys gone: drops the entries silently
        assert all(not due for due in replica.due)
        assert not any("expiry index" in r or "did not leave" in r for r in reports), reports
        assert node.keyspace() == after == keyspace_model(node)
        run(node.close())

        node = Node.open(directory, options, clock, random.Random(2), reports.append)
        assert node.keyspace() == after
        assert run(node.get(0, b"key-10")) is not None
        run(node.close())


def test_a_filter_on_the_system_clock_sends_a_portable_copy_and_absorbs_its_counts() -> None:
    dead = encode((version(T0, None),))  # a tombstone long past its grace period
    assert PurgeFilter(GRACE_MS, lambda: T0).portable() is None  # another clock: stays
    purge = PurgeFilter(GRACE_MS, system_wall_ms, system_clock=True)
    copy = pickle.loads(pickle.dumps(purge.portable()))  # what the compaction worker gets
    assert isinstance(copy, PurgeFilter)
    assert copy(_engine_key(0, b"k"), dead) is False
    assert copy(_engine_key(0, b"j"), b"\xc1 not msgpack") is True
    purge.absorb(copy)
    assert (purge.dropped, purge.undecodable) == (1, 1)
