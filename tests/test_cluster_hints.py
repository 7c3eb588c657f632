"""cluster/hints.py: durable, bounded, mergeable hints for down replicas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import keys as keyspace
from cluster.hints import HINT_NAMESPACE, HintStore
from cluster.replica import Replica
from cluster.version import Version
from engine.db import Engine
from engine.options import EngineOptions

NOW = 1_700_000_000_000


def version(actor: bytes, counter: int, value: bytes | None = b"v") -> Version:
    return ({actor: (counter, NOW)}, NOW + counter, 0, actor, value)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = Engine.open(str(tmp_path / "e"), EngineOptions(fsync="no"))
    try:
        yield db
    finally:
        db.close()


def test_add_merge_get_and_for_key(engine: Engine) -> None:
    store = HintStore.open(engine, Clock())
    a1, a2, b1 = version(b"a", 1), version(b"a", 2), version(b"b", 1)
    assert store.add("node-2", 0, b"k", (a1,))
    assert store.add("node-2", 0, b"k", (a2,))  # dominates a1: merged, not appended
    assert store.get("node-2", 0, b"k") == (a2,)
    assert store.add("node-3", 0, b"k", (b1,))
    held = store.for_key(0, b"k")
    assert len(held) == 2 and a2 in held and b1 in held  # concurrent: both kept
    assert store.for_key(1, b"k") == ()
    assert store.pending("node-2").count == 1 and store.pending("node-3").count == 1
    assert store.targets() == ["node-2", "node-3"]


def test_hints_survive_a_restart_and_are_recounted(tmp_path: Path) -> None:
    path = str(tmp_path / "e")
    engine = Engine.open(path, EngineOptions(fsync="no"))
    store = HintStore.open(engine, Clock())
    for i in range(50):
        store.add("node-2", i % 3, b"key%d" % i, (version(b"a", 1),))
    before = store.pending("node-2")
    engine.commit()
    engine.close()
    engine = Engine.open(path, EngineOptions(fsync="no"))
    try:
        again = HintStore.open(engine, Clock())
        assert again.pending("node-2") == before
        assert before.count == 50
        hints = again.batch("node-2", 1000)
        assert sorted((h.db, h.key) for h in hints) == sorted(
            (i % 3, b"key%d" % i) for i in range(50))
    finally:
        engine.close()


def test_bounds_refuse_and_count(engine: Engine) -> None:
    store = HintStore.open(engine, Clock(), max_count=3)
    for i in range(3):
        assert store.add("t", 0, b"k%d" % i, (version(b"a", 1),))
    assert not store.add("t", 0, b"k9", (version(b"a", 1),))
    assert store.stats.dropped == 1 and store.pending("t").count == 3
    assert store.add("t", 0, b"k0", (version(b"a", 2),))  # a merge into a held hint fits
    assert store.add("other", 0, b"k9", (version(b"a", 1),))  # bounds are per target
    small = HintStore.open(engine, Clock(), max_bytes=1)
    assert not small.add("fresh", 0, b"k", (version(b"a", 1),))


def test_delivery_removes_only_unchanged_hints(engine: Engine) -> None:
    store = HintStore.open(engine, Clock())
    store.add("t", 0, b"a", (version(b"x", 1),))
    store.add("t", 0, b"b", (version(b"x", 1),))
    first, second = sorted(store.batch("t", 10), key=lambda h: h.key)
    store.add("t", 0, b"b", (version(b"y", 1),))  # merged while "delivery" was in flight
    assert store.remove_if_unchanged(first)
    assert not store.remove_if_unchanged(second)  # kept: it now holds more
    (left,) = store.batch("t", 10)
    assert left.key == b"b" and len(left.siblings) == 2
    assert store.remove_if_unchanged(left)
    assert store.batch("t", 10) == [] and store.pending("t").count == 0
    assert store.pending("t").bytes == 0
    assert store.stats.delivered == 2


def test_batches_page_through_in_key_order(engine: Engine) -> None:
    store = HintStore.open(engine, Clock())
    for i in range(25):
        store.add("t", 0, b"k%02d" % i, (version(b"a", 1),))
    store.add("t2", 0, b"zz", (version(b"a", 1),))  # another target's hints never leak in
    seen: list[bytes] = []
    after = b""
    while batch := store.batch("t", 10, after):
        seen.extend(h.key for h in batch)
        last = batch[-1]
        after = bytes((HINT_NAMESPACE, 1)) + b"t" + keyspace.engine_key(last.db, last.key)
    assert sorted(seen) == [b"k%02d" % i for i in range(25)] and len(seen) == 25


def test_expired_and_damaged_hints_are_dropped(engine: Engine) -> None:
    clock = Clock()
    store = HintStore.open(engine, clock, ttl_ms=1000, report=lambda m: None)
    store.add("t", 0, b"old", (version(b"a", 1),))
    clock.now += 2000
    store.add("t", 0, b"new", (version(b"a", 1),))
    engine.put(bytes((HINT_NAMESPACE, 1)) + b"t" + keyspace.engine_key(0, b"bad"), b"\x00" * 9)
    store.stats.per_target["t"].count += 1
    hints = store.batch("t", 10)
    assert [h.key for h in hints] == [b"new"]
    assert store.stats.expired == 1 and store.stats.damaged == 1
    assert store.pending("t").count == 1


def test_drop_target(engine: Engine) -> None:
    store = HintStore.open(engine, Clock())
    for i in range(2500):
        store.add("gone", 0, b"k%d" % i, (version(b"a", 1),))
    store.add("kept", 0, b"k", (version(b"a", 1),))
    assert store.drop_target("gone") == 2500
    assert store.targets() == ["kept"]


def test_hints_are_invisible_to_the_replica(engine: Engine) -> None:
    store = HintStore.open(engine, Clock())
    store.add("t", 0, b"k", (version(b"a", 1),))
    replica = Replica(engine, 16, 0, lambda m: None)
    replica.rebuild()
    assert replica.keys[0] == 0
    assert replica.read(keyspace.engine_key(0, b"k")) == ()


def test_flush_removes_the_hints_of_a_db_for_every_target(engine: Engine) -> None:
    store = HintStore.open(engine, Clock())
    for target in ("t1", "t2"):
        for db in (0, 1):
            for i in range(5):
                store.add(target, db, b"k%d" % i, (version(b"a", 1),))
    assert store.flush(0) == 10
    assert {(h.db, h.key) for h in store.batch("t1", 100)} == {(1, b"k%d" % i) for i in range(5)}
    assert store.pending("t2").count == 5
    assert store.flush(None) == 10
    assert store.targets() == []
