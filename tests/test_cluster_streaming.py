"""Range streaming (cluster/stream_*.py, range_streamer.py, range_pusher.py): join (pull)
and decommission (push), over SimNetwork/SimClock in virtual time, between real engines
(``Node`` in temporary dirs)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import keys as keyspace
from cluster import tokens as tokens_file
from cluster.clock import Clock, LoopClock
from cluster.errors import CorruptionError
from cluster.messages import ErrorCode, Message, Stream, StreamReply, WriteAck
from cluster.node import Node, NodeOptions
from cluster.peer_transport import PeerTransport
from cluster.preflist import Placement, Replication
from cluster.range_pusher import RangePusher
from cluster.range_streamer import RangeStreamer
from cluster.replica_service import ReplicaService
from cluster.ring import NodeInfo, Ring, TokenRange
from cluster.sibling_codec import decode
from cluster.sibling_codec import encode as encode_siblings
from cluster.stream_plan import PullTask, PushTask, pull_tasks, push_tasks
from cluster.stream_progress import (
    KIND_PULL,
    KIND_PUSH,
    StreamProgress,
    decode_progress,
    encode_progress,
    load_progress,
    save_progress,
)
from cluster.stream_runner import StreamOptions
from cluster.stream_source import range_spans, read_page, serve_stream
from cluster.transport import RemoteError, TransportConfig
from cluster.version import Siblings, merge
from cluster.wire import WireError, decode_all, encode
from engine.fs import OSFileSystem
from tests.inprocess import finish as run
from tests.sim.sim_clock import WALL_ORIGIN_MS, SimClock
from tests.sim.sim_network import NetworkOptions, SimNetwork, TraceEvent

GRACE_MS = 100 * 365 * 86_400_000  # tombstones stay (they must move), on real clocks too
TIMEOUT_S = 0.05  # 50 ticks; the network delays 1-10 ticks
DBS = (0, 1, 7)
Q = 1 << 58
# Three ranges, one of them wrapping past the top of the ring: about 0.59 of the ring.
RANGES = (TokenRange(4 * Q, 16 * Q), TokenRange(32 * Q, 48 * Q),
          TokenRange(keyspace.TOKEN_MAX - 8 * Q, 2 * Q))
IN_RANGE_KEYS = 20_000
Contents = dict[tuple[int, bytes], Siblings]


def in_ranges(key: bytes, ranges: tuple[TokenRange, ...] = RANGES) -> bool:
    tok = keyspace.token(key)
    return any(r.contains(tok) for r in ranges)


def siblings_of(i: int) -> Siblings:
    """Every tenth key a tombstone, every tenth another two concurrent siblings."""
    ts = WALL_ORIGIN_MS + i
    if i % 10 == 0:
        return (({b"a": (1, ts)}, ts, 0, b"a", None),)
    value = b"value-%d-" % i + b"x" * (i % 50)
    if i % 10 == 1:
        return merge((({b"a": (1, ts)}, ts, 0, b"a", value),),
                     (({b"b": (1, ts)}, ts + 1, 0, b"b", value + b"!"),))
    return (({b"a": (2, ts)}, ts, 0, b"a", value),)


class Store:
    """A simulated node: storage on a real engine and the handler peers reach."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self.node = self._open()
        self.service = ReplicaService(self.node.replica, clock)
        self.commits = 0

    def _open(self) -> Node:
        return Node.open(str(self.path), NodeOptions(fsync="no", tombstone_grace_ms=GRACE_MS),
                         self.clock, random.Random(1))

    def reopen(self) -> None:
        """The process dies and starts again: what was committed is what is left."""
        run(self.node.close())
        self.node = self._open()
        self.service = ReplicaService(self.node.replica, self.clock)

    def commit(self) -> None:
        self.commits += 1
        self.node.commit()

    def handle(self, peer: str, message: Message) -> Message:
        if isinstance(message, Stream):
            return serve_stream(self.node, message)
        return self.service.handle(peer, message)

    def load(self, data: Contents) -> None:
        now_ms = self.clock.wall_ms()
        by_db: dict[int, list[tuple[bytes, Siblings, Siblings]]] = {}
        for (db, key), siblings in data.items():
            by_db.setdefault(db, []).append((keyspace.engine_key(db, key), (), siblings))
        for db, changes in by_db.items():
            for i in range(0, len(changes), 2000):
                self.node.replica.apply_many(db, changes[i:i + 2000], now_ms)
        self.node.commit()

    def contents(self) -> Contents:
        out: Contents = {}
        for ekey, siblings in self.node.replica.scan(b"", keyspace.db_start(16)):
            assert siblings is not None
            out[(ekey[0], keyspace.user_key(ekey))] = siblings
        return out

    def close(self) -> None:
        run(self.node.close())


def make_data() -> tuple[Contents, Contents]:
    """(everything, the part inside RANGES): IN_RANGE_KEYS keys inside, over DBS."""
    everything: Contents = {}
    inside: Contents = {}
    i = 0
    while len(inside) < IN_RANGE_KEYS:
        key = b"key:%d" % i
        entry = (DBS[i % len(DBS)], key)
        everything[entry] = siblings_of(i)
        if in_ranges(key):
            inside[entry] = everything[entry]
        i += 1
    return everything, inside


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Store, Contents,
                                                                        Contents]]:
    """Two source nodes holding the same data (read only: tests never write to them)."""
    clock = SimClock()
    everything, inside = make_data()
    a = Store(tmp_path_factory.mktemp("a"), clock)
    b = Store(tmp_path_factory.mktemp("b"), clock)
    for store in (a, b):
        store.load(everything)
    assert a.contents() == everything
    try:
        yield a, b, everything, inside
    finally:
        a.close()
        b.close()


class World:
    """A SimNetwork with sources A, B and a destination D (a fresh node)."""

    def __init__(self, sources: tuple[Store, Store, Contents, Contents], path: Path,
                 seed: int = 7) -> None:
        self.a, self.b, self.everything, self.inside = sources
        self.clock = SimClock()
        self.network = SimNetwork(self.clock, random.Random(seed), NetworkOptions())
        self.network.attach("A", self.a.handle)
        self.network.attach("B", self.b.handle)
        self.dest = Store(path / "d", self.clock)
        self.transport = self.network.attach("D", self._dest_handle)
        self.finished = 0
        self.range_done: list[TokenRange] = []
        self.streams: list[Stream] = []
        self.network.on_message(self._observe)

    def _dest_handle(self, peer: str, message: Message) -> Message:
        return self.dest.handle(peer, message)

    def _observe(self, event: TraceEvent) -> None:
        message = event.packet.message
        if event.event == "send" and isinstance(message, Stream):
            self.streams.append(message)

    def streamer(self, tasks: list[PullTask], **kwargs: Any) -> RangeStreamer:
        options: dict[str, Any] = {"rate_bytes_per_s": 0, "timeout_s": TIMEOUT_S,
                                   "page_keys": 500, "page_bytes": 32 * 1024, "retry_s": 0.2,
                                   "on_done": self._done, "on_range_done": self.range_done.append}
        options.update(kwargs)
        return RangeStreamer(tasks, self.transport, self.dest.service, self.clock,
                             StreamOptions(**options), commit=self.dest.commit)

    def _done(self) -> None:
        self.finished += 1

    def run(self, until: Callable[[], bool], ticks_max: int = 600_000) -> None:
        assert self.clock.run_while(lambda: not until(), ticks_max), "did not get there"

    def expected(self, ranges: tuple[TokenRange, ...], dbs: tuple[int, ...]) -> Contents:
        return {(db, key): s for (db, key), s in self.everything.items()
                if db in dbs and in_ranges(key, ranges)}


def tasks_of(ranges: tuple[TokenRange, ...] = RANGES, sources: tuple[str, ...] = ("A", "B"),
             dbs: tuple[int, ...] = DBS) -> list[PullTask]:
    return [PullTask(r, sources, dbs) for r in ranges]


@pytest.fixture
def world(sources: tuple[Store, Store, Contents, Contents],
          tmp_path: Path) -> Iterator[World]:
    w = World(sources, tmp_path)
    try:
        yield w
    finally:
        w.dest.close()


# -- Pull --------------------------------------------------------------------------------


def test_ranges_stream_completely_and_exactly(world: World) -> None:
    streamer = world.streamer(tasks_of())
    streamer.start()
    world.run(lambda: streamer.finished)
    assert world.dest.contents() == world.inside  # sibling sets, tombstones, nothing else
    assert len(world.inside) == IN_RANGE_KEYS
    assert sum(1 for s in world.inside.values() if len(s) == 2) > 1000
    assert sum(1 for s in world.inside.values() if s[0][4] is None) > 1000
    stats = streamer.stats
    assert (stats.ranges_done, stats.ranges_total, stats.keys) == (3, 3, IN_RANGE_KEYS)
    assert stats.errors == 0 and stats.pages_refused == 0
    assert world.finished == 1 and sorted(world.range_done) == sorted(RANGES)
    assert streamer.progress_state() == StreamProgress(KIND_PULL, frozenset(RANGES))
    assert streamer.pages_by_source["B"] == 0  # the first source answered every time
    assert world.dest.commits >= stats.pages
    info = streamer.info("stream_")
    assert info["stream_state"] == "done" and info["stream_keys"] == IN_RANGE_KEYS
    assert info["stream_bytes"] == stats.bytes > 0
    assert "3/3 ranges" in streamer.describe()


def test_source_failure_mid_stream_falls_back_to_the_next_source(world: World) -> None:
    streamer = world.streamer(tasks_of(RANGES[:2], dbs=(0, 1)))
    streamer.start()
    world.run(lambda: streamer.pages_by_source["A"] >= 3)
    world.network.crash("A")
    world.run(lambda: streamer.finished)
    assert world.dest.contents() == world.expected(RANGES[:2], (0, 1))
    assert streamer.pages_by_source["B"] > 0
    assert streamer.stats.errors >= 1 and "A" in streamer.stats.last_error
    assert world.finished == 1
    world.network.restart("A", world.a.handle)


def test_no_source_answering_is_retried_later(world: World) -> None:
    world.network.cut("D", "A")
    world.network.cut("D", "B")
    streamer = world.streamer(tasks_of(RANGES[:1], dbs=(0,)))
    streamer.start()
    world.clock.advance(2000)
    assert streamer.stats.retries >= 2 and streamer.stats.keys == 0
    assert not streamer.finished and streamer.stats.ranges_done == 0
    world.network.heal()
    world.run(lambda: streamer.finished)
    assert world.dest.contents() == world.expected(RANGES[:1], (0,))


def test_restart_with_saved_progress_skips_done_ranges(world: World, tmp_path: Path) -> None:
    ranges = tuple(TokenRange(i * 4 * Q, (i + 1) * 4 * Q) for i in range(8))
    fs = OSFileSystem()
    saved: list[StreamProgress] = []
    first = world.streamer(tasks_of(ranges, dbs=(0, 1)), concurrency=1)

    def persist(_: TokenRange) -> None:
        save_progress(fs, str(tmp_path), "join.progress", first.progress_state())
        saved.append(first.progress_state())

    first.on_range_done = persist
    first.start()
    world.run(lambda: first.stats.ranges_done >= 3)
    world.clock.advance(3)  # a page of the fourth range is merged: the stream dies in it
    first.stop()
    world.network.crash("D")
    world.dest.reopen()
    world.transport = world.network.restart("D", world._dest_handle)
    progress = load_progress(fs, str(tmp_path), "join.progress", KIND_PULL)
    assert progress is not None and progress == saved[-1]
    assert progress.done == frozenset(ranges[:3])
    world.streams.clear()
    second = world.streamer(tasks_of(ranges, dbs=(0, 1)), done=progress.done)
    second.start()
    world.run(lambda: second.finished)
    assert world.dest.contents() == world.expected(ranges, (0, 1))
    assert second.stats.ranges_skipped == 3 and second.stats.ranges_done == 8
    assert not any(r.contains(s.start_token) for s in world.streams for r in ranges[:3])
    assert second.progress_state().done == frozenset(ranges)


def test_writes_arriving_during_the_stream_are_not_lost(world: World) -> None:
    ranges = RANGES[:2]
    expected = world.expected(ranges, (0, 1))
    streamer = world.streamer(tasks_of(ranges, dbs=(0, 1)), concurrency=1)
    streamer.start()
    world.run(lambda: streamer.stats.keys >= len(expected) // 2)
    service = world.dest.service
    newer: Contents = {}
    for n, ((db, key), stored) in enumerate(sorted(expected.items())[::50]):
        # A write that read the streamed version (supersedes it) on even n, a concurrent
        # one (a sibling) on odd n; some of the keys were streamed already, some not yet.
        clock = {actor: entry for v in stored for actor, entry in v[0].items()
                 } if n % 2 == 0 else {}
        clock[b"d"] = (1, WALL_ORIGIN_MS)
        version = (clock, WALL_ORIGIN_MS + 10**6, 0, b"d", b"new-%d" % n)
        newer[(db, key)] = service.merge(db, key, (version,))
    fresh: Contents = {(0, b"fresh-%d" % i): ((({b"d": (1, 1)}, WALL_ORIGIN_MS, 0, b"d", b"f"),))
             for i in range(50)}
    for (db, key), siblings in fresh.items():
        service.merge(db, key, siblings)
    world.run(lambda: streamer.finished)
    want: Contents = {**expected, **fresh}
    for entry, siblings in newer.items():
        want[entry] = merge(expected[entry], siblings)
    assert world.dest.contents() == want
    assert all(len(want[e]) == (1 if n % 2 == 0 else len(expected[e]) + 1)
               for n, e in enumerate(sorted(newer)))


def test_rate_limit_is_respected_in_virtual_time(world: World) -> None:
    rate = 100_000  # bytes per second
    page_bytes = 16 * 1024
    arrived: list[tuple[float, int]] = []

    def observe(event: TraceEvent) -> None:
        message = event.packet.message
        if event.event == "deliver" and isinstance(message, StreamReply):
            size = sum(len(k) + len(v) for k, v in message.entries)
            arrived.append((world.clock.monotonic(), size))

    world.network.on_message(observe)
    streamer = world.streamer(tasks_of(RANGES[:1], dbs=(0, 1)), rate_bytes_per_s=rate,
                              page_bytes=page_bytes, concurrency=3)
    start = world.clock.monotonic()
    streamer.start()
    world.run(lambda: streamer.finished)
    burst = max(page_bytes, rate // 10)
    total = 0
    for when, size in arrived:
        total += size
        assert total <= burst + page_bytes + rate * (when - start), (when, total)
    assert total == streamer.stats.bytes > 10 * burst
    elapsed = world.clock.monotonic() - start
    assert elapsed >= (total - burst - page_bytes) / rate
    assert elapsed <= 2 * total / rate + 1  # the limiter does not throttle far below it
    assert 0.5 * rate <= streamer.rate_bytes_per_s() <= 1.5 * rate


Corrupt = Callable[[list[list[bytes]], bytes | None], tuple[list[list[bytes]], bytes | None]]


def _bad_siblings(entries: list[list[bytes]], cursor: bytes | None
                  ) -> tuple[list[list[bytes]], bytes | None]:
    entries[len(entries) // 2][1] = b"\x93\x01\xc0\x02"  # msgpack, but not a sibling set
    return entries, cursor


def _out_of_span(entries: list[list[bytes]], cursor: bytes | None
                 ) -> tuple[list[list[bytes]], bytes | None]:
    outside = next(b"o%d" % i for i in range(10_000) if not in_ranges(b"o%d" % i))
    entries[-1][0] = outside
    return entries, cursor


def _descending(entries: list[list[bytes]], cursor: bytes | None
                ) -> tuple[list[list[bytes]], bytes | None]:
    entries[0], entries[1] = entries[1], entries[0]
    return entries, cursor


def _cursor_backwards(entries: list[list[bytes]], cursor: bytes | None
                      ) -> tuple[list[list[bytes]], bytes | None]:
    assert cursor is not None
    return entries, keyspace.engine_key(0, entries[0][0])


@pytest.mark.parametrize("corrupt", [_bad_siblings, _out_of_span, _descending,
                                     _cursor_backwards])
def test_malformed_pages_are_refused_and_counted_nothing_stored(world: World,
                                                                corrupt: Corrupt) -> None:
    honest = [False]

    def lying(peer: str, message: Message) -> Message:
        reply = world.a.handle(peer, message)
        if honest[0] or not isinstance(reply, StreamReply):
            return reply
        entries = [list(entry) for entry in reply.entries]
        return StreamReply(*corrupt(entries, reply.next))

    world.network.attach("X", lying)
    streamer = world.streamer(tasks_of(RANGES[:1], sources=("X",), dbs=(0,)), concurrency=1,
                              page_keys=100)
    streamer.start()
    world.run(lambda: streamer.stats.pages_refused >= 2)
    assert world.dest.contents() == {}  # invariant 1: nothing of a refused page
    assert streamer.stats.entries_refused == 200 and streamer.stats.keys == 0
    assert "page refused" in streamer.stats.last_error
    honest[0] = True
    world.run(lambda: streamer.finished)
    assert world.dest.contents() == world.expected(RANGES[:1], (0,))


def test_stop_leaves_storage_alone(world: World) -> None:
    streamer = world.streamer(tasks_of(RANGES[:1], dbs=(0,)))
    streamer.start()
    world.run(lambda: bool(streamer.in_flight()))
    streamer.stop()
    assert world.clock.run_until_idle(10_000)
    assert world.dest.contents() == {} and world.finished == 0
    assert streamer.info("stream_")["stream_state"] == "stopped"


def test_a_failing_progress_save_does_not_stall_the_stream(world: World) -> None:
    def save(_: TokenRange) -> None:
        raise OSError(28, "No space left on device")

    streamer = world.streamer(tasks_of(RANGES[:2], dbs=(0,)))
    streamer.on_range_done = save
    streamer.start()
    world.run(lambda: streamer.finished)
    assert world.dest.contents() == world.expected(RANGES[:2], (0,))
    assert streamer.stats.errors == 2 and "No space left" in streamer.stats.last_error


def test_nothing_to_do_finishes_at_start(world: World) -> None:
    streamer = world.streamer(tasks_of(), done=RANGES)
    streamer.start()
    assert streamer.finished and world.finished == 1 and not world.streams
    assert streamer.stats.ranges_skipped == 3


def test_over_real_peer_transports_on_loopback(sources: tuple[Store, Store, Contents, Contents],
                                               tmp_path: Path) -> None:
    """The same streamer over TCP (wire encoding of STREAM/STREAM_REPLY included)."""
    a, _, everything, _ = sources

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = LoopClock(loop)

        def config(node_id: str) -> TransportConfig:
            return TransportConfig(node_id, "test", b"secret")

        server = PeerTransport(config("A"), a.handle, random.Random(1), clock=clock)
        _, port = await server.listen("127.0.0.1", 0)
        dest = Store(tmp_path / "d", clock)
        client = PeerTransport(config("D"), dest.handle, random.Random(2), clock=clock)
        client.add_peer("A", "127.0.0.1", port)
        done: asyncio.Future[None] = loop.create_future()
        streamer = RangeStreamer(tasks_of(RANGES[:2], sources=("A",), dbs=(0, 7)), client,
                                 dest.service, clock,
                                 StreamOptions(rate_bytes_per_s=0, timeout_s=5.0,
                                               on_done=lambda: done.set_result(None)),
                                 commit=dest.commit)
        try:
            streamer.start()
            await asyncio.wait_for(done, 30)
            want = {(db, key): s for (db, key), s in everything.items()
                    if db in (0, 7) and in_ranges(key, RANGES[:2])}
            assert dest.contents() == want and streamer.stats.errors == 0
        finally:
            streamer.stop()
            await client.close()
            await server.close()
            dest.close()

    asyncio.run(main())


# -- Push --------------------------------------------------------------------------------


def test_push_delivers_a_range_to_two_destinations(sources: tuple[Store, Store, Contents,
                                                                  Contents],
                                                   tmp_path: Path) -> None:
    a, _, everything, _ = sources
    clock = SimClock()
    network = SimNetwork(clock, random.Random(3), NetworkOptions())
    d1, d2 = Store(tmp_path / "d1", clock), Store(tmp_path / "d2", clock)
    try:
        network.attach("D1", d1.handle)
        network.attach("D2", d2.handle)
        transport = network.attach("A", lambda peer, m: WriteAck())
        done: list[TokenRange] = []
        ranges = RANGES[1:2]
        pusher = RangePusher([PushTask(r, (0, 7), ("D1", "D2")) for r in ranges], transport,
                             a.node.replica, clock,
                             StreamOptions(rate_bytes_per_s=2_000_000, timeout_s=TIMEOUT_S,
                                           page_keys=400, page_bytes=32 * 1024, retry_s=0.2,
                                           on_range_done=done.append))
        network.cut("A", "D2")  # D2 is unreachable for a while: it gets the pages later
        pusher.start()
        assert clock.run_while(lambda: pusher.stats.retries < 3, 100_000)
        assert d2.contents() == {} and pusher.stats.keys == 0
        network.heal()
        assert clock.run_while(lambda: not pusher.finished, 600_000)
        want = {(db, key): s for (db, key), s in everything.items()
                if db in (0, 7) and in_ranges(key, ranges)}
        assert d1.contents() == want and d2.contents() == want
        assert pusher.stats.keys == len(want) and sorted(done) == sorted(ranges)
        assert pusher.stats.errors >= 1 and pusher.writes_failed > 0
        assert pusher.progress_state() == StreamProgress(KIND_PUSH, frozenset(ranges))
        assert pusher.info("decommission_")["decommission_state"] == "done"
    finally:
        d1.close()
        d2.close()


# -- Serving -------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "s", SimClock())
    try:
        yield store
    finally:
        store.close()


def test_serve_stream_pages_are_bounded_and_walk_the_span_exactly(small: Store) -> None:
    data = {(3, b"k%d" % i): siblings_of(i) for i in range(300)}
    data[(3, b"big")] = (({b"a": (1, 1)}, WALL_ORIGIN_MS, 0, b"a", b"B" * 10_000),)
    data[(4, b"k1")] = siblings_of(1)  # another db: never in a page of db 3
    small.load(data)
    # The cluster's own namespaces (hints 253, counter floors 254) are never streamed.
    small.node.replica.engine.put(bytes([253]) + keyspace.engine_key(3, b"k5"), b"hint")
    small.node.replica.engine.put(bytes([254]) + keyspace.engine_key(3, b"k6"), b"floor")
    for start, end in ((0, keyspace.TOKEN_MAX), (1 << 62, 3 << 62)):
        want = sorted((keyspace.engine_key(db, k), k) for db, k in data
                      if db == 3 and start <= keyspace.token(k) <= end)
        got: list[tuple[bytes, bytes]] = []
        cursor: bytes | None = None
        pages = 0
        while True:
            reply = serve_stream(small.node, Stream(3, start, end, cursor, 7, 600))
            pages += 1
            assert len(reply.entries) <= 7
            size = sum(len(k) + len(v) for k, v in reply.entries)
            assert size <= 600 or len(reply.entries) == 1  # one big entry goes alone
            for key, raw in reply.entries:
                assert decode(raw) == data[(3, key)]  # tombstones and siblings included
                got.append((keyspace.engine_key(3, key), key))
            cursor = reply.next
            if cursor is None:
                break
        assert got == want and pages > len(want) // 7
    one = serve_stream(small.node, Stream(3, 0, keyspace.TOKEN_MAX, None, 100_000, 1))
    assert len(one.entries) == 1 and one.next is not None


def test_serve_stream_refuses_bad_requests(small: Store) -> None:
    cases = [
        (Stream(16, 0, 5, None, 1, 1), ErrorCode.UNSUPPORTED),  # databases is 16
        (Stream(0, 6, 5, None, 1, 1), ErrorCode.PROTOCOL),
        (Stream(0, 0, 5, keyspace.engine_key(1, b"k"), 1, 1), ErrorCode.PROTOCOL),
        (Stream(0, 0, 5, bytes([253]) + keyspace.engine_key(0, b"k"), 1, 1),
         ErrorCode.PROTOCOL),
        (Stream(0, 10, 20, keyspace.token_start(0, 21), 1, 1), ErrorCode.PROTOCOL),
    ]
    for request, code in cases:
        with pytest.raises(RemoteError) as raised:
            serve_stream(small.node, request)
        assert raised.value.code == code, request


def test_read_page_skips_values_that_do_not_decode(small: Store) -> None:
    small.load({(0, b"good"): siblings_of(2)})
    bad = keyspace.engine_key(0, b"bad")
    small.node.replica.engine.put(bad, b"\x93not a sibling set")
    page, cursor = read_page(small.node.replica, 0, 0, keyspace.TOKEN_MAX, None, 10, 1 << 20)
    assert page == [(b"good", encode_siblings(siblings_of(2)))] and cursor is None
    assert small.node.replica.stats["corrupt_values"] == 1


def test_stream_messages_round_trip_and_are_checked_on_the_wire() -> None:
    request = Stream(3, 5, keyspace.TOKEN_MAX, keyspace.engine_key(3, b""), 1000, 1 << 20)
    reply = StreamReply([[b"k", b"s"], [b"", b"t"]], None)
    frames = decode_all(encode(9, request) + encode(9, reply))
    assert [f.message for f in frames] == [request, StreamReply(((b"k", b"s"), (b"", b"t")),
                                                                None)]
    for bad in (Stream(0, 0, 1, None, 0, 1), Stream(0, 0, 1, None, 1, 0),
                Stream(0, 0, 1, b"short", 1, 1), Stream(0, 0, 1, None, 100_001, 1),
                StreamReply([[b"k"]], None), StreamReply([], b"12345678")):
        with pytest.raises(WireError):
            decode_all(encode(1, bad))


# -- Planning and the progress record ------------------------------------------------------


def ring_of(count: int, seed: int) -> list[NodeInfo]:
    rng = random.Random(seed)
    return [NodeInfo(f"n{i}", tokens_file.generate(rng, 16)) for i in range(count)]


def test_pull_tasks_cover_what_a_joining_node_gains_from_its_old_holders() -> None:
    members = ring_of(4, 1)
    old = Placement(Ring.build(members[:3]), Replication.simple(2))
    new = Placement(Ring.build(members), Replication.simple(2))
    tasks = pull_tasks(old, new, "n3", (0, 1), up={"n0", "n1"})
    covered = sum(t.token_range.size() for t in tasks)
    assert covered == sum(r.size() for r in new.replica_ranges("n3"))
    for task in tasks:
        assert task.dbs == (0, 1)
        assert "n3" in new.primaries(task.token_range.right)
        assert set(task.sources) == set(old.primaries(task.token_range.right))
        assert list(task.sources) == sorted(task.sources, key=lambda n: n not in {"n0", "n1"})
    ranges = [t.token_range for t in tasks]
    assert len(set(ranges)) == len(ranges)


def test_push_tasks_send_a_leaving_nodes_ranges_to_the_nodes_that_gain_them() -> None:
    members = ring_of(4, 2)
    old = Placement(Ring.build(members), Replication.simple(2))
    new = Placement(Ring.build(members[1:]), Replication.simple(2))
    tasks = push_tasks(old, new, "n0", (0,))
    assert sum(t.token_range.size() for t in tasks) == sum(
        r.size() for r in old.replica_ranges("n0"))
    for task in tasks:
        right = task.token_range.right
        assert task.destinations and "n0" not in task.destinations
        assert set(task.destinations) == set(new.primaries(right)) - set(old.primaries(right))


def test_range_spans_are_inclusive_and_cover_the_range() -> None:
    assert range_spans(TokenRange(5, 9)) == [(6, 9)]
    assert range_spans(TokenRange(9, 5)) == [(10, keyspace.TOKEN_MAX), (0, 5)]
    assert range_spans(TokenRange(keyspace.TOKEN_MAX, 3)) == [(0, 3)]
    assert range_spans(TokenRange(7, 7)) == [(0, keyspace.TOKEN_MAX)]


def test_progress_record_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    progress = StreamProgress(KIND_PULL, frozenset({TokenRange(9, 5), TokenRange(1, 2)}))
    data = encode_progress(progress)
    assert decode_progress(data) == progress
    assert data[:8] == b"RKVSTRM\n" and len(data) == 14 + 2 * 16 + 4
    assert decode_progress(encode_progress(StreamProgress(KIND_PUSH, frozenset()))).done == set()
    damaged = [data[:-1], data + b"\0", b"X" + data[1:], data[:8] + b"\x02" + data[9:],
               data[:9] + b"\x03" + data[10:], data[:20] + bytes([data[20] ^ 1]) + data[21:]]
    for bad in damaged:
        with pytest.raises(CorruptionError):
            decode_progress(bad)
    fs = OSFileSystem()
    assert load_progress(fs, str(tmp_path), "join.progress", KIND_PULL) is None
    save_progress(fs, str(tmp_path), "join.progress", progress)
    assert load_progress(fs, str(tmp_path), "join.progress", KIND_PULL) == progress
    with pytest.raises(CorruptionError):
        load_progress(fs, str(tmp_path), "join.progress", KIND_PUSH)
