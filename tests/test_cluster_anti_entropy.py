"""cluster/tree_set.py + cluster/anti_entropy.py: Merkle-tree repair between two replicas.

Two in-process replicas (real engines, Replica, ReplicaService on tmp dirs) whose Replica
calls the tree hooks on every change, as the node will; every message crosses a msgpack
round trip and the schema check of anti_entropy_messages, as on the wire.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given

from cluster import keys as keyspace
from cluster.anti_entropy import AntiEntropyServer, Outcome, Push, RepairSession
from cluster.anti_entropy_messages import (
    AE_SCHEMA,
    CLASS_OF_NAME,
    AntiEntropyError,
    Fetch,
    FetchReply,
    Hashes,
    HashesReply,
    Keys,
    KeysReply,
    Reply,
    Request,
    Status,
    Summary,
    SummaryReply,
    check_fields,
)
from cluster.clock import ManualClock
from cluster.keys import TOKEN_MAX
from cluster.merkle import depth_for, entry_hash
from cluster.messages import CondWrite, Write
from cluster.put_fsm import build_version
from cluster.replica import Replica
from cluster.replica_service import ReplicaService
from cluster.ring import TokenRange
from cluster.sibling_codec import decode, encode
from cluster.tree_set import (
    RangeTree,
    TreeSet,
    canonical,
    canonical_encode,
    entry_int,
    node_of,
    node_spans,
    stored_hash,
)
from cluster.tree_set import (
    Status as TreeStatus,
)
from cluster.version import Siblings, Version, merge
from engine.db import Engine
from engine.options import EngineOptions
from tests.test_cluster_sibling_codec import sibling_sets, wide_encoding

NOW = 1_700_000_000_000
GRACE_MS = 10 * 24 * 3600 * 1000
DATABASES = 16
NAME_OF = {cls: name for name, cls in CLASS_OF_NAME.items()}


def ring_ranges(seed: int, vnodes: int) -> list[TokenRange]:
    """The vnode ranges of a ring of ``vnodes`` random tokens (one of them wraps)."""
    generator = random.Random(seed)
    tokens = sorted({generator.getrandbits(64) for _ in range(vnodes)})
    assert len(tokens) == vnodes
    return [TokenRange(tokens[i - 1], tokens[i]) for i in range(vnodes)]


def version(actor: bytes, counter: int, value: bytes | None, ts: int = 0,
            clock: dict[bytes, tuple[int, int]] | None = None) -> Version:
    return (clock or {actor: (counter, NOW)}, NOW + ts, 0, actor, value)


class Side:
    """One replica: engine, replica, service, trees and the anti-entropy server."""

    def __init__(self, path: Path, ranges: list[TokenRange], clock: ManualClock, *,
                 grace_ms: int = GRACE_MS) -> None:
        self.engine = Engine.open(str(path), EngineOptions(fsync="no"))
        self.trees = TreeSet(self.engine.scan, DATABASES)
        self.trees.set_ranges(ranges)
        self.replica = Replica(self.engine, DATABASES, grace_ms, lambda message: None)
        self.replica.on_store = self.trees.on_store
        self.service = ReplicaService(self.replica, clock)
        self.server = AntiEntropyServer(self.trees, self.service)

    def load(self, db: int, items: Mapping[bytes, Siblings]) -> None:
        """Store sets directly (before the trees are built: no hooks needed)."""
        ops = [(keyspace.engine_key(db, k), encode(s)) for k, s in items.items()]
        for at in range(0, len(ops), 10_000):
            self.engine.write_batch(ops[at:at + 10_000])
        self.replica.rebuild()

    def build(self) -> None:
        for rng in self.trees.ranges:
            self.trees.require(rng)
        while self.trees.pending_builds():
            self.trees.build_step(5000)

    def contents(self) -> dict[tuple[int, bytes], bytes]:
        return {(ekey[0], keyspace.user_key(ekey)): canonical(raw)
                for ekey, raw in self.engine.scan(b"", keyspace.db_start(DATABASES))}

    def close(self) -> None:
        self.engine.close()


def wire(message: Any) -> Any:
    """``message`` after a msgpack round trip and the schema check, as the wire would."""
    name = NAME_OF[type(message)]
    values = [getattr(message, f.name) for f in fields(message)]
    decoded = msgpack.unpackb(msgpack.packb(values, use_bin_type=True), use_list=False)
    assert check_fields(name, decoded), (name, decoded)
    return type(message)(*decoded)


def run(session: RepairSession, peer: Side) -> list[Push]:
    """Drive a session against ``peer`` over a simulated wire; deliver pushes as WRITEs."""
    pushes: list[Push] = []
    while (request := session.next_request()) is not None:
        session.feed(wire(peer.server.serve(wire(request))))
        pushes += session.take_pushes()
    pushes += session.take_pushes()
    for push in pushes:
        peer.service.merge(push.db, push.key, decode(push.siblings))
    return pushes


def repair_all(a: Side, b: Side) -> list[RepairSession]:
    sessions = [RepairSession(a.server, rng) for rng in a.trees.ranges]
    for session in sessions:
        run(session, b)
    return sessions


def total(sessions: list[RepairSession], name: str) -> int:
    return sum(getattr(s.stats, name) for s in sessions)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW + 1000)


@pytest.fixture
def pair(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Side, Side]]:
    ranges = ring_ranges(1, 24)
    a, b = Side(tmp_path / "a", ranges, clock), Side(tmp_path / "b", ranges, clock)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_100k_keys_differing_in_100_converge_exchanging_o100_keys(
        pair: tuple[Side, Side]) -> None:
    """Issue 6: two replicas of 100,000 keys differing in 100 exchange O(100) keys."""
    a, b = pair
    rng = random.Random(42)
    base = {b"user:%d" % i: (version(b"a", 1, b"value-%d" % i),) for i in range(99_000)}
    extra = {b"other:%d" % i: (version(b"a", 1, b"x"),) for i in range(1_000)}  # db 3
    a.load(0, base)
    b.load(0, base)
    a.load(3, extra)
    b.load(3, extra)
    a.build()
    b.build()
    names = rng.sample(sorted(base), 95) + rng.sample(sorted(extra), 5)
    before: dict[tuple[int, bytes], tuple[Siblings, Siblings]] = {}
    for i, key in enumerate(names):
        db = 0 if key.startswith(b"user") else 3
        old = base.get(key) or extra[key]
        kind = i % 5
        if kind == 0:  # b has a newer value (its clock descends a's)
            b.service.merge(db, key, (version(b"a", 2, b"newer", ts=5),))
        elif kind == 1:  # concurrent writes: siblings after the repair
            a.service.merge(db, key, (version(b"a", 2, b"on-a", ts=3),))
            b.service.merge(db, key, (version(b"b", 1, b"on-b", ts=4,
                                              clock={b"a": (1, NOW), b"b": (1, NOW)}),))
        elif kind == 2:  # missing on b
            b.engine.delete(keyspace.engine_key(db, key))
            b.trees.on_write(db, key, encode(old), None)
        elif kind == 3:  # missing on a
            a.engine.delete(keyspace.engine_key(db, key))
            a.trees.on_write(db, key, encode(old), None)
        else:  # a deleted it after b's value: a newer tombstone
            a.service.merge(db, key, (version(b"a", 2, None, ts=6),))
        before[(db, key)] = (a.service.read(db, key), b.service.read(db, key))
    assert a.contents() != b.contents()

    sessions = repair_all(a, b)

    assert all(s.outcome is Outcome.DONE for s in sessions)
    assert a.contents() == b.contents()
    for (db, key), (on_a, on_b) in before.items():
        assert a.service.read(db, key) == merge(on_a, on_b), key
    for i, key in enumerate(names):
        if i % 5 == 4:  # the tombstone dominated: nothing came back
            stored = a.service.read(0 if key.startswith(b"user") else 3, key)
            assert len(stored) == 1 and stored[0][4] is None
        if i % 5 == 1:
            assert len(a.service.read(0 if key.startswith(b"user") else 3, key)) == 2
    # What crossed: O(100) keys, not O(100,000).
    fetched = total(sessions, "keys_pulled")
    pushed = total(sessions, "keys_pushed")
    listed = total(sessions, "key_hashes_received")
    assert fetched <= 100 and pushed <= 100, (fetched, pushed)
    assert total(sessions, "keys_repaired") == 100
    assert listed <= 16 * 100, listed  # ~4 keys per leaf at depth 10 of ~4,200 keys a range
    depth = depth_for(100_000 // 24)
    assert total(sessions, "hashes_received") <= 2 * 100 * depth + 2 * 24
    wire_total = total(sessions, "bytes_sent") + total(sessions, "bytes_received")
    assert wire_total < 200_000, wire_total  # a full key list would be ~3 MB
    # Keys vouched for: the larger side of each (db, range), so a few short of 100,000.
    assert 100_000 - 40 <= total(sessions, "keys_compared") <= 100_000
    print({name: total(sessions, name) for name in ("keys_pulled", "keys_pushed",
          "key_hashes_received", "hashes_received", "bytes_sent", "bytes_received",
          "requests")})

    # A second pass over the now identical pair: one root hash per non-empty (db, range).
    again = repair_all(a, b)
    trees = sum(len(t.trees) for t in a.trees.ranges.values())
    assert 24 < trees <= 2 * 24  # db 0 in every range, db 3 in most
    assert total(again, "hashes_received") == trees
    assert total(again, "requests") == 24
    assert total(again, "keys_listed") == total(again, "keys_pushed") == 0


def test_trees_follow_random_writes_during_and_after_the_build(
        tmp_path: Path, clock: ManualClock) -> None:
    """Property: after any interleaving of writes, deletes, flushes and build steps, every
    tree equals one built afresh from the engine (tree_set invariants 1 and 3)."""
    ranges = ring_ranges(7, 6)
    rebuilds = 0
    for seed in range(6):
        rng = random.Random(seed)
        side = Side(tmp_path / f"s{seed}", ranges, clock)
        keys = [b"k%d" % i for i in range(600)]
        side.load(0, {k: (version(b"a", 1, b"v"),) for k in keys[:300]})
        side.load(2, {k: (version(b"a", 1, b"w"),) for k in keys[:50]})
        for rng_ in side.trees.ranges:
            side.trees.require(rng_)
        counter = 2
        for step in range(1500):
            action = rng.random()
            db = rng.choice((0, 0, 2, 5))
            key = rng.choice(keys)
            if action < 0.05:
                side.trees.build_step(rng.randrange(1, 40))
            elif action < 0.55:
                counter += 1
                side.service.merge(db, key, (version(rng.choice((b"a", b"b")), counter,
                                                     b"v%d" % step, ts=counter),))
            elif action < 0.85:
                counter += 1
                side.service.merge(db, key, (version(b"a", counter, None, ts=counter),))
            elif action < 0.95:  # a removal (as a purge would do), through the raw hook
                ekey = keyspace.engine_key(db, key)
                old = side.engine.get(ekey)
                if old is not None:
                    side.engine.delete(ekey)
                    side.trees.on_write(db, key, old, None)
                    side.replica.rebuild()
            elif action < 0.96:
                side.replica.flush(db)
                side.trees.on_flush(db)
        while side.trees.pending_builds():
            side.trees.build_step(64)
        assert_trees_fresh(side, ranges)
        rebuilds += side.trees.stats["rebuilds_growth"]
        side.close()
    assert rebuilds > 0  # db 5, empty when built, grew past its depth: rebuilt while written


def _wide(siblings: Siblings) -> bytes:
    """``encode(siblings)`` in another msgpack form: the same set, other bytes."""
    return wide_encoding(encode(siblings))


def test_trees_kept_by_the_hooks_equal_a_scan_after_every_kind_of_write(
        tmp_path: Path) -> None:
    """Property: the hooks hash the bytes each write stores and replaces (tree_set invariant
    1), so after random writes through every path a node has (a peer's COND_WRITE and WRITE,
    in encode's form or another; the coordinator's own store with the bytes it read; merges
    making siblings; clocks of 1 to 5 actors; tombstones purged at once; expiries, lazy and
    by the active cycle; bytes stored in a foreign form behind the Replica's back), with the
    trees read now and then between writes (their inner levels follow lazily), every tree
    equals one built afresh from the engine."""
    ranges = ring_ranges(11, 8)
    actors = [b"node-%d" % i for i in range(5)]
    reads = 0
    for seed in range(4):
        rng = random.Random(seed)
        clock = ManualClock(NOW)
        side = Side(tmp_path / f"s{seed}", ranges, clock, grace_ms=rng.choice((0, GRACE_MS)))
        keys = [b"k%d" % i for i in range(200)]
        side.load(0, {k: (version(b"node-0", 1, b"v", clock={a: (1, NOW) for a in actors[:3]}),)
                      for k in keys[:150]})
        side.build()
        for step in range(1200):
            clock.step_wall_ms(rng.randrange(0, 40))
            now = clock.wall_ms()
            db = rng.choice((0, 0, 0, 3))
            key = rng.choice(keys)
            ekey = keyspace.engine_key(db, key)
            held = side.service.read(db, key)
            writer = rng.choice(actors[:rng.randrange(1, 6)])
            value = None if rng.random() < 0.1 else b"v%d" % step
            expire_at = now + rng.randrange(1, 300) if rng.random() < 0.2 else 0
            new = build_version(held, 0, writer, now, value, expire_at)
            if rng.random() < 0.15:  # a concurrent write: siblings of what is held
                new = (({writer: (step + 1, now)}, now, expire_at, writer, value))
            action = rng.random()
            if action < 0.3:
                data = _wide((new,)) if rng.random() < 0.3 else encode((new,))
                side.service.handle("peer", CondWrite(db, key, data))
            elif action < 0.45:
                side.service.handle("peer", Write(db, key, encode((new,)), None))
            elif action < 0.7:  # the coordinator's own store (Rule 12)
                local, raw = side.service.read_stored(db, key)
                side.service.merge_onto(db, key, local, (new,), encode((new,)), raw)
            elif action < 0.8:
                side.service.merge(db, key, (new,))
            elif action < 0.87:  # lazy expiry of what is held
                if held:
                    side.replica.expire_key(db, ekey, held, now)
            elif action < 0.94:  # the active expiry cycle
                side.replica.expire_due(db, [keyspace.engine_key(db, k) for k in keys[::7]],
                                        now)
            elif action < 0.97:  # bytes in a foreign form, through the raw hook
                old = side.engine.get(ekey)
                if held:
                    side.engine.put(ekey, _wide(held))
                    side.trees.on_write(db, key, old, _wide(held))
            else:
                reads += 1
                for trees in side.trees.ranges.values():
                    for tree in trees.trees.values():
                        tree.hashes(min(tree.depth, 2), [0])
        assert_trees_fresh(side, ranges)
        side.close()
    assert reads > 0


def assert_trees_fresh(side: Side, ranges: list[TokenRange]) -> None:
    """Every range of ``side`` is READY with the trees a fresh build from its engine gives."""
    fresh = TreeSet(side.engine.scan, DATABASES)
    fresh.set_ranges(ranges)
    for rng_ in ranges:
        fresh.require(rng_)
    while fresh.pending_builds():
        fresh.build_step(1000)
    for rng_ in ranges:
        mine, theirs = side.trees.ranges[rng_], fresh.ranges[rng_]
        assert mine.status is TreeStatus.READY
        assert set(mine.trees) == set(theirs.trees), rng_
        for db, tree in mine.trees.items():
            other = theirs.trees[db]
            assert tree.root == other.root and tree.entries == other.entries, (rng_, db)
            level = min(tree.depth, other.depth)
            indices = list(range(1 << level))
            assert tree.hashes(level, indices) == other.hashes(level, indices)


def test_writes_before_any_build_are_left_to_the_scan(tmp_path: Path,
                                                      clock: ManualClock) -> None:
    """While every range is UNBUILT the hooks return at once (nothing tracks writes); a range
    required later is built from the engine, writes during and after its build reach it,
    and so do those of the ranges required after it."""
    ranges = ring_ranges(7, 6)
    side = Side(tmp_path / "s", ranges, clock)
    keys = [b"k%d" % i for i in range(300)]
    for i, key in enumerate(keys):
        side.service.merge(0, key, (version(b"a", i + 1, b"v"),))
    side.trees.require(ranges[0])
    side.trees.build_step(50)
    for i, key in enumerate(keys):
        side.service.merge(0, key, (version(b"a", 1000 + i, b"w", ts=1),))
    side.build()
    for key in keys[::3]:
        side.service.merge(0, key, (version(b"b", 1, b"x", ts=2),))  # siblings
    assert_trees_fresh(side, ranges)


def test_peer_not_ready_then_ready(pair: tuple[Side, Side]) -> None:
    a, b = pair
    a.load(0, {b"k%d" % i: (version(b"a", 1, b"v"),) for i in range(500)})
    a.build()
    rng = next(iter(a.trees.ranges))
    session = RepairSession(a.server, rng)
    run(session, b)
    assert session.outcome is Outcome.PEER_NOT_READY
    assert b.trees.ranges[rng].status is TreeStatus.BUILDING  # asking queued its build
    assert session.stats.ranges_not_ready == 1 and session.stats.ranges_done == 0
    b.build()
    session = RepairSession(a.server, rng)
    run(session, b)
    assert session.outcome is Outcome.DONE
    # b was empty: a pushed its keys of the range without listing or descending.
    assert session.stats.keys_listed == 0 and session.stats.keys_pushed > 0
    assert session.stats.hashes_received == 0  # b had no tree to report


def test_local_not_ready_sends_nothing(pair: tuple[Side, Side]) -> None:
    a, _ = pair
    session = RepairSession(a.server, next(iter(a.trees.ranges)))
    assert session.next_request() is None and session.outcome is Outcome.LOCAL_NOT_READY


def test_unknown_range(pair: tuple[Side, Side], tmp_path: Path, clock: ManualClock) -> None:
    a, _ = pair
    a.build()
    other = Side(tmp_path / "c", ring_ranges(99, 5), clock)
    other.build()
    session = RepairSession(a.server, next(iter(a.trees.ranges)))
    run(session, other)
    assert session.outcome is Outcome.UNKNOWN_RANGE
    other.close()


def test_depth_mismatch_compares_at_the_shallower_depth(pair: tuple[Side, Side]) -> None:
    """b built its trees when it held few keys; a deep and a shallow tree still converge,
    and the empty-side case (a wiped node) lists the peer's range and pulls it all."""
    a, b = pair
    keys = {b"k%d" % i: (version(b"a", 1, b"v%d" % i),) for i in range(20_000)}
    a.load(0, keys)
    b.load(0, dict(list(keys.items())[:200]))
    a.build()
    b.build()
    for key in list(keys)[200:]:  # b learns the rest by writes: its depth stays small...
        b.service.merge(0, key, keys[key])
    # ...unless it grew enough to be rebuilt; either way some depths differ now.
    for key in list(keys)[:50]:
        b.service.merge(0, key, (version(b"a", 2, b"new", ts=1),))
    depths = {(rng, a.trees.tree(rng, 0).depth, b.trees.tree(rng, 0).depth)  # type: ignore[union-attr]
              for rng in a.trees.ranges}
    assert any(da != db for _, da, db in depths)
    sessions = repair_all(a, b)
    assert all(s.outcome in (Outcome.DONE, Outcome.PARTIAL) for s in sessions)
    while b.trees.pending_builds():
        b.trees.build_step(10_000)
    repair_all(a, b)
    assert a.contents() == b.contents()

    # A wiped replica: everything comes back through repair, from the other side.
    wiped = b
    wiped.replica.flush(0)
    wiped.trees.on_flush(0)
    sessions = [RepairSession(wiped.server, rng) for rng in wiped.trees.ranges]
    for session in sessions:
        run(session, a)
    assert a.contents() == wiped.contents()
    assert total(sessions, "keys_pulled") == 20_000


def test_a_tombstone_is_never_undone(pair: tuple[Side, Side]) -> None:
    a, b = pair
    a.build()
    b.build()
    for i in range(200):
        key = b"d%d" % i
        value = (version(b"a", 1, b"old"),)
        a.service.merge(0, key, value)
        b.service.merge(0, key, value)
        a.service.merge(0, key, (version(b"a", 2, None, ts=10),))  # deleted later on a
        b.service.merge(0, key, (version(b"a", 1, b"old"),))  # a stale copy replays on b
    repair_all(b, a)  # b starts the repair this time
    for i in range(200):
        for side in (a, b):
            stored = side.service.read(0, b"d%d" % i)
            assert len(stored) == 1 and stored[0][4] is None


def test_tree_healed_when_a_change_bypassed_the_hooks(pair: tuple[Side, Side]) -> None:
    """A purge by compaction is invisible to the hooks: a's tree keeps the purged tombstones'
    hashes. b's trees, rebuilt after its own purge (a restart), do not: the roots differ,
    the listings agree, and a's listing resets its nodes to what its scan found."""
    a, b = pair
    tomb = {b"t%d" % i: (version(b"a", 2, None),) for i in range(30)}
    values = {b"v%d" % i: (version(b"a", 1, b"x"),) for i in range(3000)}
    for side in (a, b):
        side.load(0, {**tomb, **values})
        side.build()
        for key in tomb:  # compaction purged the tombstones: no hook ran
            side.engine.delete(keyspace.engine_key(0, key))
    b.trees = TreeSet(b.engine.scan, DATABASES)  # b restarted: fresh trees
    b.trees.set_ranges(list(a.trees.ranges))
    b.server = AntiEntropyServer(b.trees, b.service)
    b.build()
    first = repair_all(a, b)
    assert total(first, "keys_listed") > 0 and total(first, "keys_pushed") == 0
    assert total(first, "keys_pulled") == 0
    assert a.trees.stats["tree_corrections"] > 0
    second = repair_all(a, b)
    assert total(second, "keys_listed") == 0
    roots = sum(len(t.trees) for t in b.trees.ranges.values())
    assert total(second, "hashes_received") == roots  # roots only
    assert total(second, "requests") == 24


# -- Bad input from the peer: a clear error, and nothing changes --------------------------


def scripted(session: RepairSession, peer: Side, bad: dict[type[Any], Any]) -> None:
    """Answer from ``peer`` but replace the first reply of each type in ``bad``."""
    while (request := session.next_request()) is not None:
        reply = peer.server.serve(request)
        replacement = bad.pop(type(reply), None)
        session.feed(replacement(reply) if replacement is not None else reply)


def diverged_pair(a: Side, b: Side) -> TokenRange:
    keys = {b"k%d" % i: (version(b"a", 1, b"v"),) for i in range(3000)}
    a.load(0, keys)
    b.load(0, keys)
    a.build()
    b.build()
    for i in range(0, 3000, 100):
        b.service.merge(0, b"k%d" % i, (version(b"a", 2, b"w", ts=1),))
    return next(rng for rng in a.trees.ranges if any(
        rng.contains(keyspace.token(b"k%d" % i)) for i in range(0, 3000, 100)))


def _hash_cut(reply: Reply) -> Reply:
    assert isinstance(reply, HashesReply)
    return HashesReply(Status.OK, reply.hashes[:-1])


def _bad_status(reply: Reply) -> Reply:
    assert isinstance(reply, HashesReply)
    return HashesReply(7, reply.hashes)


def _foreign_key(reply: Reply) -> Reply:
    assert isinstance(reply, KeysReply)
    foreign = [[b"not-in-this-node-%d" % i, b"\0" * 16] for i in range(50)]
    return KeysReply(Status.OK, [*reply.entries, *foreign], None)


def _short_hash(reply: Reply) -> Reply:
    assert isinstance(reply, KeysReply)
    return KeysReply(Status.OK, [[k, h[:8]] for k, h in reply.entries], None)


def _fetch_count(reply: Reply) -> Reply:
    assert isinstance(reply, FetchReply)
    return FetchReply(list(reply.siblings)[:-1])


def _fetch_garbage(reply: Reply) -> Reply:
    assert isinstance(reply, FetchReply)
    return FetchReply([b"\x93\x01\x02"] * len(reply.siblings))


def _summary_db(reply: Reply) -> Reply:
    return SummaryReply(Status.OK, [[99, 3, 10, b"\1" * 16]])


def _summary_root(reply: Reply) -> Reply:
    return SummaryReply(Status.OK, [[0, 3, 10, b"\1" * 15]])


def _wrong_type(reply: Reply) -> Reply:
    return FetchReply([])


@pytest.mark.parametrize("reply_type, corrupt, message", [
    (HashesReply, _hash_cut, "hashes: "),
    (HashesReply, _bad_status, "unknown status"),
    (KeysReply, _foreign_key, "not under the nodes asked"),
    (KeysReply, _short_hash, "16-byte hash"),
    (FetchReply, _fetch_count, "sibling sets for"),
    (FetchReply, _fetch_garbage, "fetch: sibling set"),
    (SummaryReply, _summary_db, "out of range"),
    (SummaryReply, _summary_root, "root is not 16 bytes"),
    (SummaryReply, _wrong_type, "expected SummaryReply"),
])
def test_bad_replies_raise_and_change_nothing(pair: tuple[Side, Side], reply_type: type[Any],
                                              corrupt: Any, message: str) -> None:
    a, b = pair
    rng = diverged_pair(a, b)
    before = a.contents()
    session = RepairSession(a.server, rng)
    with pytest.raises(AntiEntropyError, match=message):
        scripted(session, b, {reply_type: corrupt})
    assert session.outcome is Outcome.FAILED and session.next_request() is None
    assert session.stats.ranges_failed == 1
    assert a.contents() == before
    # A fresh session repairs the range.
    run(RepairSession(a.server, rng), b)
    assert {k: v for k, v in a.contents().items()
            if rng.contains(keyspace.token(k[1]))} == {
        k: v for k, v in b.contents().items() if rng.contains(keyspace.token(k[1]))}


@pytest.mark.parametrize("request_, message", [
    (Hashes(1, 2, 99, 1, [0]), "db 99 is out of range"),
    (Hashes(1, 2, 0, 2, [1, 0]), "out of order"),
    (Hashes(1, 2, 0, 2, [4]), "not in 0..3"),
    (Hashes(1, 2, 0, 21, [0]), "level 21"),
    (Keys(1, 2, 0, 0, [0], b"\1"), "shorter than a token"),
    (Keys(2**64, 2, 0, 0, [0], None), "not two ring tokens"),
    (Fetch(0, [b"k"] * 257), "at most 256"),
    (Fetch(0, ["text"]), "not bytes"),  # type: ignore[list-item]
])
def test_bad_requests_are_refused(pair: tuple[Side, Side], request_: Request,
                                  message: str) -> None:
    a, _ = pair
    a.build()
    with pytest.raises(AntiEntropyError, match=message):
        a.server.serve(request_)


def test_server_answers_unknown_and_not_ready(pair: tuple[Side, Side]) -> None:
    a, _ = pair
    rng = next(iter(a.trees.ranges))
    assert a.server.serve(Summary(5, 6)) == SummaryReply(Status.UNKNOWN_RANGE, [])
    assert a.server.serve(Summary(*rng)) == SummaryReply(Status.NOT_READY, [])
    assert a.server.serve(Hashes(*rng, 0, 0, [0])) == HashesReply(Status.NOT_READY, b"")
    assert a.server.serve(Keys(*rng, 0, 0, [0], None)) == KeysReply(Status.NOT_READY, [],
                                                                    None)


def test_key_listing_pages(pair: tuple[Side, Side]) -> None:
    """A listing larger than a reply resumes where it stopped, inside a node."""
    a, b = pair
    a.load(0, {b"k%d" % i: (version(b"a", 1, b"v"),) for i in range(20_000)})
    a.build()
    b.build()
    a.server.keys_per_reply_max = 97
    rng = max(a.trees.ranges, key=lambda r: a.trees.tree(r, 0).entries)  # type: ignore[union-attr]
    session = RepairSession(b.server, rng)  # b is empty: it lists a's whole range
    requests: list[Request] = []
    while (request := session.next_request()) is not None:
        requests.append(request)
        session.feed(wire(a.server.serve(wire(request))))
    keys_requests = [r for r in requests if isinstance(r, Keys)]
    assert len(keys_requests) >= 2 and keys_requests[1].after is not None
    assert session.stats.keys_pulled == a.trees.tree(rng, 0).entries  # type: ignore[union-attr]


# -- Unit checks of the pieces -----------------------------------------------------------


def test_canonical_hash_ignores_sibling_order() -> None:
    one = version(b"a", 1, b"x", ts=5)
    two = version(b"b", 1, b"y", ts=5)
    forward, backward = encode((one, two)), encode((two, one))
    assert forward != backward
    assert stored_hash(b"k", forward) == stored_hash(b"k", backward)
    assert canonical(encode((one,))) == encode((one,))
    multi = ({b"a": (1, NOW), b"b": (2, NOW)}, NOW, 0, b"a", b"v")
    assert canonical(encode((multi,))) == encode((multi,))
    assert canonical(b"garbage") == b"garbage"


@given(sibling_sets)
def test_canonical_shortcut_agrees_with_decoding(siblings: Siblings) -> None:
    """``canonical`` returns a fixarray's bytes as they are: such a set is one version, which
    is what decoding and re-encoding in rank order would give; other bytes are decoded."""
    for data in (encode(siblings), encode(siblings[::-1]), wide_encoding(encode(siblings))):
        expected = data if len(siblings) == 1 else canonical_encode(decode(data))
        assert canonical(data) == expected
    assert canonical(b"\x9c\x01") == b"\x9c\x01"  # a fixarray that is no set: as it is


def test_entry_int_is_merkle_entry_hash() -> None:
    for key, stored in [(b"", b""), (b"k", b"v"), (b"ab", b"c"), (b"x" * 300, b"y" * 999)]:
        assert entry_int(key, stored) == int.from_bytes(entry_hash(key, stored), "big")


@pytest.mark.parametrize("rng", [TokenRange(10, 1000), TokenRange(TOKEN_MAX - 5, 7),
                                 TokenRange(3, 3), TokenRange(TOKEN_MAX, 100),
                                 TokenRange(100, TOKEN_MAX)])
def test_node_spans_tile_the_range_at_every_level(rng: TokenRange) -> None:
    for level in (0, 1, 3, 10):
        covered = 0
        for index in range(min(1 << level, 64)):
            for start, end in node_spans(rng, level, index):
                stop = TOKEN_MAX + 1 if end is None else end
                covered += stop - start
                for tok in {start, stop - 1}:
                    assert rng.contains(tok)
                    assert node_of(rng, level, tok) == index
        if (1 << level) <= 64:
            assert covered == rng.size()


def test_tree_levels_do_not_depend_on_depth() -> None:
    rng = TokenRange(TOKEN_MAX - 2**40, 2**40)  # wraps
    deep, shallow = RangeTree(rng, 12), RangeTree(rng, 4)
    generator = random.Random(3)
    for i in range(2000):
        tok = (rng.left + 1 + generator.randrange(rng.size())) & TOKEN_MAX
        deep.apply(tok, i * 7919 + 1, 1)
        shallow.apply(tok, i * 7919 + 1, 1)
    for level in range(5):
        indices = list(range(1 << level))
        assert deep.hashes(level, indices) == shallow.hashes(level, indices)
    deep.truncate(4)
    assert deep.hashes(4, list(range(16))) == shallow.hashes(4, list(range(16)))


def test_memory_is_bounded_per_tree(tmp_path: Path) -> None:
    engine = Engine.open(str(tmp_path / "e"), EngineOptions(fsync="no"))
    whole = TokenRange(5, 5)
    trees = TreeSet(engine.scan, 1, depth_cap=8)
    trees.set_ranges([whole])
    engine.write_batch([(keyspace.engine_key(0, b"k%d" % i), encode((version(b"a", 1, b"v"),)))
                        for i in range(20_000)])
    trees.require(whole)
    while trees.pending_builds():
        trees.build_step()
    tree = trees.tree(whole, 0)
    assert tree is not None and tree.depth == 8  # depth_for(20,000) = 12, capped
    assert trees.memory_bytes() <= (2 ** 9) * 56
    assert trees.info()["ae_tree_entries"] == 20_000
    engine.close()


def test_schema_covers_every_message() -> None:
    assert set(AE_SCHEMA) == set(CLASS_OF_NAME)
    for name, cls in CLASS_OF_NAME.items():
        assert tuple(f.name for f in fields(cls)) == tuple(n for n, _ in AE_SCHEMA[name])
