"""Node: the API the frontend calls, on a real Engine in a temporary directory, with a clock
we control. Directories come from ``harness()``/``temp_dir()`` context managers."""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import expiry as expiry_module
from cluster import node as node_module
from cluster import sibling_codec
from cluster.clock import LoopClock, ManualClock
from cluster.due_index import SLOT_SHIFT
from cluster.errors import CorruptionError
from cluster.node import Entry, Node, NodeOptions, _engine_key
from cluster.version import Siblings
from tests.inprocess import finish as run

T0 = 1_700_000_000_000  # a multiple of the expiry index's slot (1 << SLOT_SHIFT ms)
SLOT_S = (1 << SLOT_SHIFT) / 1000  # active expiry reclaims a key within a slot of its time


class Harness:
    def __init__(self, path: Path, **options: Any) -> None:
        self.path = str(path)
        self.clock = ManualClock(T0)
        self.options = NodeOptions(fsync="no", **options)
        self.events: list[tuple[int, bytes | None]] = []
        self.opens = 0
        self.node = self.open()

    def open(self) -> Node:
        self.opens += 1
        node = Node.open(self.path, self.options, self.clock, random.Random(self.opens))
        node.add_listener(lambda db, key: self.events.append((db, key)))
        self.node = node
        return node

    def reopen(self) -> Node:
        run(self.node.close())
        return self.open()

    def stored(self, db: int, key: bytes) -> Siblings:
        engine = self.node._engine
        assert engine is not None
        raw = engine.get(_engine_key(db, key))
        return () if raw is None else sibling_codec.decode(raw)


@contextmanager
def temp_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="respkv-cluster-") as name:
        yield Path(name)


@contextmanager
def harness(**options: Any) -> Iterator[Harness]:
    with temp_dir() as path:
        h = Harness(path / "node", **options)
        try:
            yield h
        finally:
            run(h.node.close())


def test_put_then_get() -> None:
    with harness() as h:
        node = h.node
        assert run(node.get(0, b"k")) is None
        run(node.put(0, b"k", b"v1"))
        entry = run(node.get(0, b"k"))
        assert isinstance(entry, Entry)
        assert (entry.value, entry.expire_at_ms) == (b"v1", 0)
        run(node.put(0, b"k", b"v2", T0 + 5000))
        entry = run(node.get(0, b"k"))
        assert entry is not None and (entry.value, entry.expire_at_ms) == (b"v2", T0 + 5000)
        assert run(node.get(1, b"k")) is None  # databases are separate
        assert h.events == [(0, b"k"), (0, b"k")]


def test_a_new_key_is_stored_and_counted_as_the_general_path_would() -> None:
    """put_now's new-key shortcut (Replica.store_new) writes the bytes encode() gives for the
    same version, counts the key, and hands the store hook the same bytes."""
    with harness() as h:
        node = h.node
        hooked: list[tuple[bytes, bytes | None, bytes | None]] = []
        node.replica.on_store = lambda ekey, old, new: hooked.append((ekey, old, new))
        node.put_now(0, b"fresh", b"v")
        node.put_now(0, b"expiring", b"v", T0 + 60_000)  # the general path
        version = ({node.actor: (1, T0)}, T0, 0, node.actor, b"v")
        engine = node._engine
        assert engine is not None
        assert engine.get(_engine_key(0, b"fresh")) == sibling_codec.encode((version,))
        assert node.replica.keys[0] == 2 and node.replica.expires[0] == 1
        assert hooked[0] == (_engine_key(0, b"fresh"), None, sibling_codec.encode((version,)))
        assert [event[:2] for event in h.events] == [(0, b"fresh"), (0, b"expiring")]
        h.reopen()
        assert h.node.replica.keys[0] == 2  # the counters a rebuild computes agree


def test_overwrites_keep_one_version_and_bump_this_actor() -> None:
    with harness() as h:
        for i in range(5):
            run(h.node.put(0, b"k", b"%d" % i))
            h.clock.advance(0.001)
        (version,) = h.stored(0, b"k")
        clock, timestamp_ms, _, writer, value = version
        assert value == b"4" and writer == h.node.actor
        assert clock == {h.node.actor: (5, timestamp_ms)}


def test_set_bytes_are_the_general_encoding_for_every_shape_and_actor() -> None:
    """put_now's joined encoding (parts cached per millisecond) stores exactly what encode()
    gives: within one millisecond and across it, for values and counters past the joined
    tables (bin 16, counters from 4096), and after the actor rotates within the same
    millisecond (the cached parts name the old actor)."""
    with harness() as h:
        node = h.node
        big = b"b" * 300
        expected: dict[bytes, tuple[int, bytes]] = {}
        for key, value in ((b"a", b"v"), (b"b", big), (b"a", b"w"), (b"b", b"x")):
            node.put_now(0, key, value)
            counter = expected.get(key, (0, b""))[0] + 1
            expected[key] = (counter, value)
        h.clock.advance(0.001)
        node.put_now(0, b"a", b"later")
        for key, (counter, value) in {**expected, b"a": (3, b"later")}.items():
            ((clock, timestamp_ms, _, writer, stored),) = h.stored(0, key)
            assert (stored, writer, clock) == (value, node.actor, {node.actor: (counter,
                                                                                timestamp_ms)})
        old_actor = node.actor
        new_actor = node.rotate_actor("test")
        node.put_now(0, b"a", b"rotated")
        node.put_now(0, b"fresh", b"new")
        ((clock, _, _, writer, value),) = h.stored(0, b"a")
        assert writer == new_actor and set(clock) == {old_actor, new_actor}
        ((clock, _, _, writer, value),) = h.stored(0, b"fresh")
        assert writer == new_actor and set(clock) == {new_actor}
        # A counter beyond the joined table takes the packed path, with the same bytes.
        ekey = _engine_key(0, b"c")
        version = ({new_actor: (5000, T0)}, T0, 0, new_actor, b"v")
        node.replica.apply(0, ekey, (), (version,), T0)
        node.put_now(0, b"c", b"next")
        now_ms = h.clock.wall_ms()
        expected_bytes = sibling_codec.encode(
            (({new_actor: (5001, now_ms)}, now_ms, 0, new_actor, b"next"),))
        engine = node._engine
        assert engine is not None and engine.get(ekey) == expected_bytes


def test_value_now_is_get_now_value() -> None:
    """GET's value_now answers what get_now(...).value does, for every shape, and reclaims an
    expired key as get_now would."""
    with harness() as h:
        node = h.node
        node.put_now(0, b"plain", b"1")
        node.put_now(0, b"ttl", b"2", T0 + 1000)
        node.put_now(0, b"gone", b"3", T0 + 10)
        run(node.put(0, b"deleted", b"4"))
        run(node.delete(0, b"deleted"))
        ekey = _engine_key(0, b"siblings")
        other = b"\xff" * 8
        node.replica.apply(0, ekey, (), (({other: (1, T0)}, T0 + 50, 0, other, b"remote"),
                                         ({node.actor: (1, T0)}, T0, 0, node.actor, b"local")),
                           T0)
        h.clock.advance(0.5)
        for key in (b"plain", b"ttl", b"gone", b"deleted", b"siblings", b"missing"):
            entry = node.get_now(0, key)
            assert node.value_now(0, key) == (None if entry is None else entry.value), key
        assert node.value_now(0, b"siblings") == b"remote"
        assert node.value_now(0, b"ttl") == b"2"
        node.put_now(0, b"gone2", b"5", T0 + 600)
        h.clock.advance(0.2)
        assert node.replica.keys[0] == 4  # plain, ttl, siblings, and gone2 not yet reclaimed
        assert node.value_now(0, b"gone2") is None
        assert node.replica.keys[0] == 3 and h.stored(0, b"gone2") == ()


def test_timestamp_never_goes_back_when_wall_clock_steps_back() -> None:
    with harness() as h:
        run(h.node.put(0, b"k", b"a"))
        h.clock.step_wall_ms(-60_000)
        run(h.node.put(0, b"k", b"b"))
        ((_, timestamp_ms, _, _, value),) = h.stored(0, b"k")
        assert (value, timestamp_ms) == (b"b", T0)


def test_delete() -> None:
    with harness() as h:
        node = h.node
        assert run(node.delete(0, b"k")) is False
        run(node.put(0, b"k", b"v"))
        assert run(node.dbsize(0)) == 1
        assert run(node.delete(0, b"k")) is True
        assert run(node.get(0, b"k")) is None
        assert run(node.dbsize(0)) == 0
        assert h.stored(0, b"k") == ()  # grace 0: removed from the engine at once
        assert run(node.delete(0, b"k")) is False
        assert h.events == [(0, b"k"), (0, b"k")]


def test_tombstone_kept_for_grace_then_purged() -> None:
    with temp_dir() as tmp_path:
        h = Harness(tmp_path / "n", tombstone_grace_ms=10_000)
        node = h.node
        run(node.put(0, b"k", b"v"))
        assert run(node.delete(0, b"k")) is True
        ((clock, _, _, _, value),) = h.stored(0, b"k")
        assert value is None and clock == {node.actor: (2, T0)}  # descends the value it deleted
        assert run(node.get(0, b"k")) is None
        assert run(node.dbsize(0)) == 0 and node.keyspace() == []
        assert run(node.delete(0, b"k")) is False
        h.clock.advance(9.9)
        node.run_expire_cycle()
        assert h.stored(0, b"k") != ()
        h.clock.advance(0.1 + SLOT_S)  # the purge time's slot has passed
        node.run_expire_cycle()
        assert h.stored(0, b"k") == ()
        assert node.stats()["tombstones_purged"] == 1
        run(node.close())


def test_write_many_is_one_batch_in_order() -> None:
    with harness() as h:
        node = h.node
        run(node.put(0, b"gone", b"x"))
        run(node.write_many(0, [
            (b"a", b"1", 0),
            (b"b", b"2", T0 + 1000),
            (b"a", b"3", 0),  # the last op on a key wins
            (b"gone", None, 0),
            (b"never", None, 0),
        ]))
        assert run(node.get(0, b"a")) == Entry(b"3", 0, run(node.get(0, b"a")).context)  # type: ignore[union-attr]
        entry_b = run(node.get(0, b"b"))
        assert entry_b is not None and entry_b.expire_at_ms == T0 + 1000
        assert run(node.get(0, b"gone")) is None and h.stored(0, b"gone") == ()
        assert run(node.dbsize(0)) == 2
        assert node.keyspace() == [(0, 2, 1)]
        ((clock, *_),) = h.stored(0, b"a")
        assert clock[node.actor][0] == 2  # each op superseded the previous one
        assert h.events[-4:] == [(0, b"a"), (0, b"b"), (0, b"a"), (0, b"gone")]


def test_write_many_renames_atomically_across_reopen() -> None:
    with harness() as h:
        run(h.node.put(0, b"src", b"v"))
        run(h.node.write_many(0, [(b"dst", b"v", 0), (b"src", None, 0)]))
        node = h.reopen()
        assert run(node.get(0, b"src")) is None
        assert run(node.get(0, b"dst")) is not None
        assert run(node.dbsize(0)) == 1


def test_lazy_expiry() -> None:
    with harness() as h:
        node = h.node
        run(node.put(0, b"k", b"v", T0 + 1000))
        assert node.keyspace() == [(0, 1, 1)]
        h.clock.advance(0.999)
        assert run(node.get(0, b"k")) is not None
        h.clock.advance(0.001)
        assert run(node.get(0, b"k")) is None
        assert node.keyspace() == []
        assert node.stats()["expired_keys"] == 1
        assert h.stored(0, b"k") == ()
        assert h.events == [(0, b"k"), (0, b"k")]


def test_expired_key_counts_until_reclaimed() -> None:
    with harness() as h:
        run(h.node.put(0, b"k", b"v", T0 + 10))
        h.clock.advance(1)  # no cycle started: nobody reclaimed it
        assert run(h.node.dbsize(0)) == 1  # as Redis: DBSIZE includes expired, unreclaimed keys
        assert run(h.node.delete(0, b"k")) is False  # invisible, and reclaimed by the attempt
        assert run(h.node.dbsize(0)) == 0


def test_put_removes_expiry() -> None:
    with harness() as h:
        run(h.node.put(0, b"k", b"v", T0 + 10))
        run(h.node.put(0, b"k", b"w"))
        assert h.node.keyspace() == [(0, 1, 0)]
        assert (T0 + 10, _engine_key(0, b"k")) not in h.node._replica.due[0]
        assert not h.node._replica.due[0]
        h.clock.advance(1)
        assert run(h.node.get(0, b"k")) is not None


def test_active_expiry_cycle() -> None:
    with harness() as h:
        node = h.node
        node.start()
        for i in range(300):
            run(node.put(0, b"k%d" % i, b"v", T0 + 500 + i))
        run(node.put(0, b"keep", b"v"))
        run(node.put(3, b"k", b"v", T0 + 200))
        h.clock.advance(0.5)
        # Expired keys (k0 at 500 ms) count until a cycle reclaims them, which happens once
        # the slot of their time has passed: [T0, T0 + 1024 ms) here.
        assert run(node.dbsize(0)) == 301
        h.clock.advance(0.5 + SLOT_S)  # past the slot of the last expiry, 799 ms
        assert run(node.dbsize(0)) == 1 and run(node.dbsize(3)) == 0
        assert node.keyspace() == [(0, 1, 0)]
        stats = node.stats()
        assert stats["expired_keys"] == 301 and stats["expire_cycles"] >= 10
        assert (3, b"k") in h.events


def test_active_expiry_respects_its_time_budget() -> None:
    """A cycle stops at its budget, checked between chunks. The monotonic clock ticks 1 ms
    per read, so a 5 ms budget is used up after five chunks whatever the machine's load."""
    with temp_dir() as tmp_path:
        class TickingMonotonic(ManualClock):
            ticks = 0.0

            def monotonic(self) -> float:
                self.ticks += 0.001
                return self.ticks

        path = str(tmp_path / "n")
        clock = TickingMonotonic(T0)
        options = NodeOptions(fsync="no", active_expire_budget_ms=5)
        node = Node.open(path, options, clock, random.Random(1))
        keys = 20_000
        run(node.write_many(0, [(b"k%d" % i, b"v", T0 + 1) for i in range(keys)]))
        clock.step_wall_ms(1 << SLOT_SHIFT)  # the keys' slot has passed
        cycles = 0
        per_cycle = []
        while (left := run(node.dbsize(0))):
            capped = node.run_expire_cycle()
            per_cycle.append(left - run(node.dbsize(0)))
            cycles += 1
            assert capped or run(node.dbsize(0)) == 0
        # The budget's reads: one at the start, one after each chunk; the fifth chunk's read
        # is 5 ms past the start.
        assert max(per_cycle) == 5 * expiry_module.CHUNK_KEYS
        assert cycles == -(-keys // (5 * expiry_module.CHUNK_KEYS))
        assert node.stats()["expired_time_cap_reached_count"] == cycles - 1  # not the last
        assert node.stats()["expired_keys"] == keys
        run(node.close())


def test_counters_and_expiry_index_survive_reopen() -> None:
    with harness() as h:
        run(h.node.put(0, b"a", b"1"))
        run(h.node.put(0, b"b", b"2", T0 + 1000))
        run(h.node.put(5, b"c", b"3"))
        run(h.node.put(5, b"d", b"4"))
        run(h.node.delete(5, b"d"))
        node = h.reopen()
        assert node.keyspace() == [(0, 2, 1), (5, 1, 0)]
        h.clock.advance(1 + SLOT_S)
        node.run_expire_cycle()
        assert node.keyspace() == [(0, 1, 0), (5, 1, 0)]


def test_context_write_supersedes_without_second_read() -> None:
    with harness() as h:
        node = h.node
        run(node.put(0, b"k", b"1"))
        entry = run(node.get(0, b"k"))
        assert entry is not None
        engine = node._engine
        assert engine is not None
        reads: list[bytes] = []
        node._replica._get = lambda ekey: reads.append(ekey)
        node._eget = node._replica._get
        run(node.put(0, b"k", b"2", context=entry.context))
        assert reads == []
        node._replica._get = node._eget = engine.get
        ((clock, _, _, _, value),) = h.stored(0, b"k")
        assert value == b"2" and clock[node.actor][0] == 2


def test_stale_context_keeps_concurrent_write_as_sibling() -> None:
    with harness() as h:
        node = h.node
        run(node.put(0, b"k", b"1"))
        entry = run(node.get(0, b"k"))
        assert entry is not None
        # Another coordinator's write lands in between (concurrent with what the context saw).
        other = b"\xff" * 8
        ekey = _engine_key(0, b"k")
        foreign = ({other: (1, T0)}, T0 + 50, 0, other, b"remote")
        old = h.stored(0, b"k")
        node._replica.apply(0, ekey, old, (foreign,), T0)
        node._seq += 1
        h.clock.advance(0.01)
        run(node.put(0, b"k", b"local", context=entry.context))
        siblings = h.stored(0, b"k")
        assert sorted(v[4] for v in siblings) == [b"local", b"remote"]  # type: ignore[type-var]
        got = run(node.get(0, b"k"))
        assert got is not None and got.value == b"remote"  # newest timestamp wins
        # A write without context supersedes both.
        run(node.put(0, b"k", b"last"))
        assert [v[4] for v in h.stored(0, b"k")] == [b"last"]


def test_stale_context_never_reuses_own_counter() -> None:
    with harness() as h:
        node = h.node
        run(node.put(0, b"k", b"1"))
        entry = run(node.get(0, b"k"))
        assert entry is not None
        run(node.put(0, b"k", b"2"))  # counter 2
        run(node.put(0, b"k", b"3", context=entry.context))  # saw counter 1 only
        ((clock, _, _, _, value),) = h.stored(0, b"k")
        assert value == b"3" and clock[node.actor][0] == 3


def test_scan_visits_every_key_once() -> None:
    with harness() as h:
        node = h.node
        expected = {b"key:%d" % i for i in range(500)}
        run(node.write_many(2, [(k, b"v", 0) for k in expected]))
        seen: list[bytes] = []
        cursor, calls = 0, 0
        while True:
            cursor, batch = run(node.scan(2, cursor, 7))
            seen += batch
            calls += 1
            if cursor == 0:
                break
        assert len(seen) == len(expected) and set(seen) == expected
        assert calls > 50


def test_scan_with_token_collisions() -> None:
    # Every key hashes to one of 4 tokens: scan must finish a token before it stops.
    real_hash = node_module._hash_bytes
    node_module._hash_bytes = lambda key: bytes([0] * 7 + [key[-1] % 4]) * 2  # type: ignore[assignment,misc]
    try:
        with harness() as h:
            node = h.node
            expected = {b"k%03d" % i for i in range(100)}
            run(node.write_many(0, [(k, b"v", 0) for k in expected]))
            seen: list[bytes] = []
            cursor = 0
            sizes = []
            while True:
                cursor, batch = run(node.scan(0, cursor, 1))
                seen += batch
                sizes.append(len(batch))
                if cursor == 0:
                    break
            assert sorted(seen) == sorted(expected)
            groups = Counter(key[-1] % 4 for key in expected)
            assert sizes == [groups[token] for token in sorted(groups)]
    finally:
        node_module._hash_bytes = real_hash


def test_scan_under_concurrent_modification() -> None:
    with harness() as h:
        node = h.node
        rng = random.Random(3)
        stable = {b"s%d" % i for i in range(300)}
        run(node.write_many(0, [(k, b"v", 0) for k in stable]))
        churn = [b"c%d" % i for i in range(300)]
        seen: list[bytes] = []
        cursor = 0
        while True:
            cursor, batch = run(node.scan(0, cursor, 10))
            seen += batch
            for key in rng.sample(churn, 10):  # writes and deletes between scan calls
                if rng.random() < 0.5:
                    run(node.put(0, key, b"x"))
                else:
                    run(node.delete(0, key))
            if cursor == 0:
                break
        assert len(seen) == len(set(seen))  # never twice
        assert stable <= set(seen)  # keys present throughout: always
        assert set(seen) <= stable | set(churn)


def test_scan_skips_and_reclaims_expired_keys() -> None:
    with harness() as h:
        run(h.node.put(0, b"live", b"v"))
        run(h.node.put(0, b"dying", b"v", T0 + 5))
        h.clock.advance(0.01)
        assert run(h.node.scan(0, 0, 100)) == (0, [b"live"])
        assert run(h.node.dbsize(0)) == 1


def test_random_key() -> None:
    with harness() as h:
        node = h.node
        assert run(node.random_key(0)) is None
        keys = {b"r%d" % i for i in range(50)}
        run(node.write_many(0, [(k, b"v", 0) for k in keys]))
        run(node.put(0, b"dying", b"v", T0 + 5))
        h.clock.advance(0.01)
        picked = {run(node.random_key(0)) for _ in range(300)}
        assert picked <= keys and len(picked) > 10
        run(node.write_many(0, [(k, None, 0) for k in keys]))
        assert run(node.random_key(0)) is None
        assert run(node.dbsize(0)) == 0  # the expired key was reclaimed on the way


def test_flushdb_and_flushall() -> None:
    with harness() as h:
        node = h.node
        run(node.write_many(0, [(b"a%d" % i, b"v", T0 + 10_000) for i in range(5000)]))
        run(node.put(1, b"b", b"v"))
        run(node.put(2, b"c", b"v"))
        h.events.clear()
        run(node.flushdb(0))
        assert h.events == [(0, None)]
        assert node.keyspace() == [(1, 1, 0), (2, 1, 0)]
        assert run(node.get(0, b"a1")) is None and run(node.get(1, b"b")) is not None
        assert not node._replica.due[0]
        run(node.flushall())
        assert node.keyspace() == []
        assert run(node.get(2, b"c")) is None
        assert (1, None) in h.events and (2, None) in h.events
        node = h.reopen()
        assert node.keyspace() == []


def test_memory_usage_and_stats() -> None:
    with harness() as h:
        run(h.node.put(0, b"k", b"v" * 1000))
        usage = h.node.memory_usage(0, b"k")
        assert usage is not None and 1000 < usage < 1300
        assert h.node.memory_usage(0, b"missing") is None
        stats = h.node.stats()
        for name in ("expired_keys", "expire_cycles", "siblings_dropped", "clock_prunes",
                     "tombstones_purged", "engine_keys"):
            assert name in stats


def test_corrupt_value_is_reported_never_served() -> None:
    with temp_dir() as tmp_path:
        h = Harness(tmp_path / "n")
        run(h.node.put(0, b"good", b"v"))
        engine = h.node._engine
        assert engine is not None
        engine.put(_engine_key(0, b"bad"), b"\x93garbage")
        with pytest.raises(CorruptionError):
            run(h.node.get(0, b"bad"))
        run(h.node.close())
        messages: list[str] = []
        node = Node.open(h.path, h.options, h.clock, random.Random(1), messages.append)
        assert node.keyspace() == [(0, 1, 0)]
        assert any("bad" in message for message in messages)
        assert node.stats()["corrupt_values"] == 1
        assert run(node.scan(0, 0, 10)) == (0, [b"good"])
        run(node.close())


def test_identity_kept_across_clean_reopen() -> None:
    with harness() as h:
        node_id, actor = h.node.node_id, h.node.actor
        node = h.reopen()
        assert (node.node_id, node.actor) == (node_id, actor)


def test_new_actor_after_unclean_shutdown() -> None:
    with harness() as h:
        node_id, actor = h.node.node_id, h.node.actor
        run(h.node.put(0, b"k", b"v"))
        h.node.commit()
        engine = h.node._engine
        assert engine is not None
        engine.close()  # the process dies: the node never records a clean shutdown
        h.node._engine = None
        node = h.open()
        assert node.node_id == node_id and node.actor != actor
        run(node.put(0, b"k", b"w"))  # the old actor's entry stays; the new one is bumped
        ((clock, *_),) = h.stored(0, b"k")
        assert set(clock) == {actor, node.actor}


def test_new_actor_when_data_directory_is_wiped() -> None:
    with harness() as h:
        import shutil

        node_id, actor = h.node.node_id, h.node.actor
        run(h.node.put(0, b"k", b"v"))
        run(h.node.close())
        shutil.rmtree(Path(h.path) / "engine")  # data lost, identity file kept
        node = h.open()
        assert node.node_id == node_id and node.actor != actor
        run(node.close())
        shutil.rmtree(h.path)  # everything lost
        node = h.open()
        assert node.node_id != node_id and node.actor != actor


def test_open_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        NodeOptions(databases=0)
    with pytest.raises(ValueError):
        NodeOptions(fsync="sometimes")


def test_sibling_limit_drops_oldest_and_counts() -> None:
    with harness(sibling_limit=2) as h:
        node = h.node
        run(node.put(0, b"k", b"mine"))
        entry = run(node.get(0, b"k"))
        assert entry is not None
        ekey = _engine_key(0, b"k")
        foreign: Siblings = tuple(
            ({bytes([0xF0 + i]) * 8: (1, T0)}, T0 + 10 + i, 0, bytes([0xF0 + i]) * 8, b"f%d" % i)
            for i in range(3)
        )
        node._replica.apply(0, ekey, h.stored(0, b"k"), foreign, T0)
        node._seq += 1
        run(node.put(0, b"k", b"local", context=entry.context))  # stale: 3 foreign + 1 new
        siblings = h.stored(0, b"k")
        assert len(siblings) == 2
        assert node.stats()["siblings_dropped"] == 2
        # The greatest two by rank (timestamp first), the same on every replica whatever the
        # arrival order: here the foreign writes are stamped later than the local one.
        assert [v[4] for v in siblings] == [b"f1", b"f2"]


def test_long_clocks_are_pruned_on_write() -> None:
    with harness() as h:
        node = h.node
        ekey = _engine_key(0, b"k")
        old_actors = {bytes([i]) * 8: (1, T0 - 10 * 86_400_000) for i in range(1, 13)}
        node._replica.apply(0, ekey, (), ((old_actors, T0, 0, b"\x01" * 8, b"v"),), T0)
        node._seq += 1
        run(node.put(0, b"k", b"w"))
        ((clock, *_),) = h.stored(0, b"k")
        assert len(clock) == node.options.vclock_prune.entries_small
        assert node.actor in clock
        assert node.stats()["clock_prunes"] == 1


def test_multi_entry_clock_reads_and_context_writes() -> None:
    with harness() as h:
        run(h.node.put(0, b"k", b"v"))
        h.node.commit()
        engine = h.node._engine
        assert engine is not None
        engine.close()  # crash: the next start has a new actor
        h.node._engine = None
        node = h.open()
        run(node.put(0, b"k", b"w"))  # now a two-entry clock
        entry = run(node.get(0, b"k"))
        assert entry is not None and entry.value == b"w"
        run(node.put(0, b"k", b"x", context=entry.context))
        ((clock, _, _, _, value),) = h.stored(0, b"k")
        assert value == b"x" and len(clock) == 2 and clock[node.actor][0] == 2


def test_active_expiry_survives_a_failing_cycle() -> None:
    with harness() as h:
        node = h.node
        messages: list[str] = []
        node._replica.report = messages.append
        real = node._replica.expire_due
        calls = [0]

        def flaky(db: int, entries: Any, now_ms: int) -> None:
            calls[0] += 1
            if calls[0] == 1:
                raise OSError("disk full")
            real(db, entries, now_ms)

        node._replica.expire_due = flaky  # type: ignore[method-assign]
        node.start()
        run(node.put(0, b"k", b"v", T0 + 10))
        h.clock.advance(1 + 2 * SLOT_S)  # its slot passed, it failed, and the retry's slot too
        assert calls[0] >= 2
        assert any("disk full" in message for message in messages)
        assert run(node.dbsize(0)) == 0  # a later cycle reclaimed it


def test_a_node_on_the_loop_clock_stamps_versions_with_the_system_wall_clock() -> None:
    """With a LoopClock the node reads the system clock's function directly (one frame less
    per SET): a new key and an overwrite are both stamped with the system wall time."""
    async def scenario(path: Path) -> None:
        node = Node.open(str(path), NodeOptions(fsync="no"),
                         LoopClock(asyncio.get_running_loop()))
        try:
            for value in (b"new", b"overwrite"):
                before = time.time_ns() // 1_000_000
                node.put_now(0, b"k", value)
                after = time.time_ns() // 1_000_000
                entry = node.get_now(0, b"k")
                assert entry is not None and entry.value == value
                ((clock, timestamp_ms, _, _, _),) = sibling_codec.decode(
                    node._eget(_engine_key(0, b"k")))
                assert before <= timestamp_ms <= after
                assert clock[node.actor][1] == timestamp_ms
        finally:
            await node.close()

    with temp_dir() as path:
        asyncio.run(scenario(path / "node"))


_OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from([b"a", b"b", b"c"]), st.binary(max_size=300),
              st.sampled_from([0, 0, 5, 900, 3000, 60_000])),
    st.tuples(st.just("delete"), st.sampled_from([b"a", b"b", b"c"]), st.just(b""),
              st.just(0)),
    st.tuples(st.just("reput"), st.sampled_from([b"a", b"b", b"c"]), st.binary(max_size=20),
              st.sampled_from([0, 5, 900, 60_000])),
    # write_many of two distinct keys: the first set to the value, the second deleted
    st.tuples(st.just("many"), st.sampled_from([b"ab", b"ba", b"ca", b"bc"]),
              st.binary(max_size=20), st.sampled_from([0, 5, 60_000])),
    st.tuples(st.just("advance"), st.just(b""), st.just(b""), st.integers(1, 2500)),
), max_size=40)


@settings(max_examples=60, deadline=None)
@given(_OPS, st.sampled_from([0, 2000]))
def test_expiring_writes_store_what_the_general_path_stores(
        ops: list[tuple[str, bytes, bytes, int]], grace_ms: int) -> None:
    """put_now's shortcuts for writes with an expiry, or over one (``Replica.store_encoded``),
    with or without the context of a read (EXPIRE, INCR: "reput"), delete_now's and
    write_many's (MSET, "many": ``Replica.store_encoded_many``), store the same bytes and
    keep the same counters and expiry index as the general path (a version built by
    ``_version``, then ``Replica.apply``), which a store hook forces."""
    with temp_dir() as path:
        clock = ManualClock(T0)
        options = NodeOptions(fsync="no", tombstone_grace_ms=grace_ms)
        nodes = [Node.open(str(path / name), options, clock, random.Random(1))
                 for name in ("short", "general")]
        hooked: list[object] = []
        nodes[1]._replica.on_store = lambda *args: hooked.append(args)
        assert nodes[0].actor == nodes[1].actor
        try:
            for op, key, value, n in ops:
                for node in nodes:
                    if op == "put":
                        node.put_now(0, key, value, clock.wall_ms() + n if n else 0)
                    elif op == "delete":
                        run(node.delete(0, key))
                    elif op == "many":
                        first, second = key[:1], key[1:]
                        run(node.write_many(0, [
                            (first, value, clock.wall_ms() + n if n else 0), (second, None, 0)]))
                    elif op == "reput":
                        entry = node.get_now(0, key)
                        if entry is not None:
                            node.put_now(0, key, value, clock.wall_ms() + n if n else 0,
                                         context=entry.context)
                    else:
                        node.run_expire_cycle()
                if op == "advance":
                    clock.advance(n / 1000)
                short, general = nodes
                for key in (b"a", b"b", b"c"):
                    assert short._eget(_engine_key(0, key)) == general._eget(_engine_key(0, key))
                assert short.keyspace() == general.keyspace()
                assert sorted(short._replica.due[0]) == sorted(general._replica.due[0])
            assert hooked or not any(op == "put" for op, *_ in ops)  # the hook was live
        finally:
            for node in nodes:
                run(node.close())
