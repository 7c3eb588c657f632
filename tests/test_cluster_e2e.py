"""A real 3-node cluster (N=3, R=W=2) against a real redis-server, and under faults.

Three parts:
- differential: the same command sequence goes to redis-server and to the cluster, each
  cluster command through the next node in turn (so a write lands through one node and the
  read that checks it through another), and the raw reply bytes are compared; replies whose
  order Redis does not define (KEYS, SCAN) are compared as sets;
- clients: redis-py (sync and asyncio, RESP2 and RESP3) and redis-cli against the nodes;
- faults and bad inputs: kill -9 of one and then two nodes, restarts, read repair, a node
  with the wrong secret, a node without one, a peer address that is a redis-server.

The clusters are module-scoped (one start each) and flushed before every test.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
import redis.asyncio

from tests.cluster_servers import SECRET, LocalCluster, local_cluster
from tests.servers import RawConnection, ServerProcess, free_port, redis_server

NODES = 3
FAR_S = 4102444800  # 2100-01-01: an absolute expiry whose TTL both servers compute alike
FAR_MS = FAR_S * 1000 + 123


def parse(raw: bytes) -> Any:
    reader = hiredis.Reader()
    reader.feed(raw)
    return reader.gets()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("e2e")) as running:
        yield running


def flush_cluster(cluster: LocalCluster) -> None:
    with cluster.connect(0) as conn:
        assert conn.call("FLUSHALL") == b"+OK\r\n"


class ClusterDiff:
    """Each command to the next cluster node in turn and to redis-server; replies compared."""

    def __init__(self, nodes: list[RawConnection], ref: RawConnection) -> None:
        self.nodes = nodes
        self.ref = ref
        self.turn = 0

    def _next(self) -> RawConnection:
        conn = self.nodes[self.turn % len(self.nodes)]
        self.turn += 1
        return conn

    def call(self, *args: bytes | str | int) -> bytes:
        node = self.turn % len(self.nodes)
        mine = self._next().call(*args)
        theirs = self.ref.call(*args)
        assert mine == theirs, f"{args!r} via node{node}: cluster {mine!r} != redis {theirs!r}"
        return mine

    def calls(self, *commands: tuple[bytes | str | int, ...]) -> None:
        for command in commands:
            self.call(*command)

    def both(self, *args: bytes | str | int) -> tuple[bytes, bytes]:
        """Send without comparing (replies that differ by design, e.g. by the clock)."""
        return self._next().call(*args), self.ref.call(*args)

    def every(self, *args: bytes | str | int) -> bytes:
        """Connection state (SELECT): send to every node's connection, compare each reply."""
        theirs = self.ref.call(*args)
        for i, conn in enumerate(self.nodes):
            mine = conn.call(*args)
            assert mine == theirs, f"{args!r} via node{i}: cluster {mine!r} != redis {theirs!r}"
        return theirs

    def pinned(self, i: int) -> ClusterDiff:
        """The same comparison on node ``i`` only (MULTI/EXEC live on one connection)."""
        return ClusterDiff([self.nodes[i]], self.ref)

    def same_set(self, *args: bytes | str | int) -> set[bytes]:
        mine, theirs = self.both(*args)
        assert set(parse(mine)) == set(parse(theirs)), args
        return set(parse(theirs))

    def ttl_close(self, *args: bytes | str | int, slack: int = 1) -> None:
        mine, theirs = self.both(*args)
        a, b = parse(mine), parse(theirs)
        assert abs(a - b) <= slack and (a < 0) == (b < 0), (args, a, b)


@pytest.fixture
def cd(cluster: LocalCluster, redis_port: int) -> Iterator[ClusterDiff]:
    flush_cluster(cluster)
    nodes = [cluster.connect(i) for i in range(NODES)]
    ref = RawConnection(redis_port)
    yield ClusterDiff(nodes, ref)
    for conn in [*nodes, ref]:
        conn.close()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def cd3(request: pytest.FixtureRequest, cd: ClusterDiff) -> ClusterDiff:
    """``cd`` with every connection switched to RESP2 or RESP3."""
    for conn in [*cd.nodes, cd.ref]:
        assert not conn.call("HELLO", request.param).startswith(b"-")
    return cd


# Strings -------------------------------------------------------------------------------------


def test_set_every_option(cd3: ClusterDiff) -> None:
    cd = cd3
    cd.calls(
        ("SET", "k", "v"), ("GET", "k"),
        ("SET", "k", "v2", "NX"), ("SET", "k", "v2", "XX"), ("GET", "k"),
        ("SET", "new", "x", "XX"), ("GET", "new"), ("SET", "new", "x", "NX"), ("GET", "new"),
        ("SET", "k", "v3", "GET"), ("SET", "missing", "m", "GET"), ("GET", "missing"),
        ("SET", "k", "v4", "NX", "GET"), ("SET", "nx2", "v", "NX", "GET"),
        ("SET", "k", "v5", "XX", "GET"), ("SET", "none", "v", "XX", "GET"), ("EXISTS", "none"),
        ("SET", "t", "v", "EXAT", FAR_S), ("EXPIRETIME", "t"), ("PEXPIRETIME", "t"),
        ("SET", "t", "v", "PXAT", FAR_MS), ("PEXPIRETIME", "t"),
        ("SET", "t", "w", "KEEPTTL"), ("PEXPIRETIME", "t"), ("GET", "t"),
        ("SET", "t", "w"), ("PEXPIRETIME", "t"), ("TTL", "t"),
        ("SET", "t", "v", "EXAT", FAR_S, "GET"), ("EXPIRETIME", "t"),
        ("SET", "k", "v", "EX", 0), ("SET", "k", "v", "EX", -5), ("SET", "k", "v", "PX", 0),
        ("SET", "k", "v", "EX", "abc"), ("SET", "k", "v", "EX", "9223372036854775807"),
        ("SET", "k", "v", "PX", "9223372036854775807"), ("SET", "k", "v", "EXAT", 0),
        ("SET", "k", "v", "NX", "XX"), ("SET", "k", "v", "EX", 10, "PX", 100),
        ("SET", "k", "v", "EX", 10, "KEEPTTL"), ("SET", "k", "v", "EX"),
        ("SET", "k", "v", "BOGUS"), ("SET", "k"), ("GET", "k"),
        ("SET", "e", "v", "EXAT", 1), ("EXISTS", "e"),  # an expiry in the past deletes
    )
    cd.call("SET", "r", "v", "EX", 100)
    cd.ttl_close("TTL", "r")
    cd.call("SET", "r", "v", "PX", 100_000)
    cd.ttl_close("PTTL", "r", slack=1000)


def test_get_getset_getdel_getex(cd3: ClusterDiff) -> None:
    cd = cd3
    cd.calls(
        ("GET", "nope"), ("GETSET", "g", "1"), ("GETSET", "g", "2"), ("GET", "g"),
        ("GETDEL", "g"), ("GETDEL", "g"), ("GET", "g"),
        ("SET", "x", "val", "EXAT", FAR_S), ("GETSET", "x", "new"), ("TTL", "x"),
        ("SET", "x", "val", "EXAT", FAR_S), ("GETEX", "x"), ("EXPIRETIME", "x"),
        ("GETEX", "x", "PERSIST"), ("TTL", "x"),
        ("GETEX", "x", "EXAT", FAR_S), ("EXPIRETIME", "x"),
        ("GETEX", "x", "PXAT", FAR_MS), ("PEXPIRETIME", "x"),
        ("GETEX", "x", "EX", 0), ("GETEX", "x", "PX", -1), ("GETEX", "x", "EX", "z"),
        ("GETEX", "x", "EX", 5, "PX", 5), ("GETEX", "x", "BOGUS"), ("GETEX", "missing", "EX", 5),
        ("GETEX", "x", "EXAT", 1), ("EXISTS", "x"), ("GETEX",), ("GETDEL", "a", "b"),
    )
    cd.call("SET", "y", "v")
    cd.call("GETEX", "y", "EX", 100)
    cd.ttl_close("TTL", "y")


def test_counters(cd3: ClusterDiff) -> None:
    cd = cd3
    cd.calls(
        ("INCR", "n"), ("INCR", "n"), ("DECR", "n"), ("INCRBY", "n", 40), ("DECRBY", "n", 3),
        ("GET", "n"), ("DECR", "fresh"), ("INCRBY", "n", -100), ("DECRBY", "n", -7),
        ("SET", "n", "9223372036854775806"), ("INCR", "n"), ("INCR", "n"), ("GET", "n"),
        ("SET", "n", "-9223372036854775808"), ("DECR", "n"), ("DECRBY", "n", 1),
        ("SET", "n", "0"), ("DECRBY", "n", "-9223372036854775808"),
        ("INCRBY", "n", "9223372036854775808"), ("INCRBY", "n", "1.5"), ("INCRBY", "n", ""),
        ("SET", "s", "abc"), ("INCR", "s"), ("DECR", "s"), ("INCRBY", "s", 2),
        ("SET", "s", " 1"), ("INCR", "s"), ("SET", "s", "01"), ("INCR", "s"),
        ("SET", "s", "1"), ("APPEND", "s", "0"), ("INCR", "s"),
        ("SET", "f", "10.5"), ("INCRBYFLOAT", "f", "0.1"), ("INCRBYFLOAT", "f", "-5"),
        ("INCRBYFLOAT", "f", "5.0e3"), ("INCRBYFLOAT", "f", "abc"), ("INCRBYFLOAT", "f", "inf"),
        ("INCRBYFLOAT", "newf", "3"), ("SET", "f", "1.7976931348623157e308"),
        ("INCRBYFLOAT", "f", "1.7976931348623157e308"), ("GET", "f"),
        ("SET", "f", "x"), ("INCRBYFLOAT", "f", 1), ("INCRBYFLOAT", "f"), ("INCR",),
        ("INCR", "a", "b"),
        ("SET", "ttl", "1", "EXAT", FAR_S), ("INCR", "ttl"), ("EXPIRETIME", "ttl"),
        ("INCRBYFLOAT", "ttl", "1.5"), ("EXPIRETIME", "ttl"), ("GET", "ttl"),
    )


def test_append_strlen_ranges(cd3: ClusterDiff) -> None:
    cd = cd3
    cd.calls(
        ("APPEND", "a", "Hello"), ("APPEND", "a", " World"), ("GET", "a"), ("STRLEN", "a"),
        ("STRLEN", "none"), ("GETRANGE", "a", 0, 4), ("GETRANGE", "a", -5, -1),
        ("GETRANGE", "a", 5, 2), ("GETRANGE", "a", 0, 1000), ("GETRANGE", "a", -1000, 2),
        ("GETRANGE", "none", 0, 1), ("GETRANGE", "a", "x", 1),
        ("SETRANGE", "a", 6, "Redis"), ("GET", "a"), ("SETRANGE", "pad", 5, "x"), ("GET", "pad"),
        ("SETRANGE", "a", -1, "x"), ("SETRANGE", "a", 536870912, "x"),
        ("SETRANGE", "empty", 3, ""), ("EXISTS", "empty"), ("SETRANGE", "a", 0, ""),
        ("STRLEN", "a"), ("SET", "t", "abc", "EXAT", FAR_S), ("APPEND", "t", "d"),
        ("SETRANGE", "t", 1, "X"), ("EXPIRETIME", "t"), ("GET", "t"),
        ("APPEND", "bin", b"\x00\r\n\xff"), ("GET", "bin"), ("STRLEN", "bin"),
        ("GETRANGE", "bin", 1, 2), ("SUBSTR", "a", 0, 3),
    )


def test_setnx_setex_psetex(cd3: ClusterDiff) -> None:
    cd = cd3
    cd.calls(
        ("SETNX", "k", "1"), ("SETNX", "k", "2"), ("GET", "k"),
        ("SETEX", "e", 100, "v"), ("GET", "e"), ("SETEX", "e", 0, "v"), ("SETEX", "e", -1, "v"),
        ("SETEX", "e", "x", "v"), ("PSETEX", "p", 100_000, "v"), ("GET", "p"),
        ("PSETEX", "p", 0, "v"), ("SETEX", "e"), ("SETNX", "k"),
    )
    cd.ttl_close("TTL", "e")
    cd.ttl_close("PTTL", "p", slack=1000)


# Keys ----------------------------------------------------------------------------------------


def test_expire_family_with_flags(cd3: ClusterDiff) -> None:
    cd = cd3
    cd.calls(
        ("SET", "k", "v"), ("EXPIRE", "k", 100, "XX"), ("TTL", "k"),
        ("EXPIREAT", "k", FAR_S, "NX"), ("EXPIRETIME", "k"),
        ("EXPIREAT", "k", FAR_S - 10, "NX"), ("EXPIREAT", "k", FAR_S - 10, "GT"),
        ("EXPIREAT", "k", FAR_S + 10, "GT"), ("EXPIRETIME", "k"),
        ("EXPIREAT", "k", FAR_S + 20, "LT"), ("EXPIREAT", "k", FAR_S, "LT"),
        ("EXPIRETIME", "k"), ("EXPIREAT", "k", FAR_S, "XX"), ("PEXPIREAT", "k", FAR_MS, "XX"),
        ("PEXPIRETIME", "k"), ("PEXPIREAT", "k", FAR_MS + 1, "GT"), ("PEXPIRETIME", "k"),
        ("EXPIRE", "k", 100, "NX", "XX"), ("EXPIRE", "k", 100, "GT", "LT"),
        ("EXPIRE", "k", 100, "NX", "GT"), ("EXPIRE", "k", 100, "BOGUS"),
        ("PERSIST", "k"), ("PERSIST", "k"), ("TTL", "k"), ("PTTL", "k"), ("EXPIRETIME", "k"),
        ("EXPIREAT", "k", FAR_S, "GT"), ("EXPIRETIME", "k"),  # no TTL counts as infinite
        ("PERSIST", "k"), ("EXPIREAT", "k", FAR_S, "LT"), ("EXPIRETIME", "k"),
        ("EXPIRE", "none", 10), ("TTL", "none"), ("PTTL", "none"), ("EXPIRETIME", "none"),
        ("PERSIST", "none"), ("EXPIRE", "k", "abc"), ("EXPIRE", "k", "9223372036854775807"),
        ("PEXPIRE", "k", "9223372036854775807"), ("EXPIREAT", "k", "-9223372036854775808"),
        ("SET", "gone", "v"), ("EXPIRE", "gone", 0), ("EXISTS", "gone"),
        ("SET", "gone", "v"), ("PEXPIRE", "gone", -1), ("GET", "gone"),
        ("SET", "gone", "v"), ("EXPIREAT", "gone", 1), ("TYPE", "gone"),
        ("SET", "gone", "v"), ("PEXPIREAT", "gone", 1000), ("DBSIZE",),
    )
    cd.call("SET", "p", "v")
    cd.call("PEXPIRE", "p", 100_000)
    cd.ttl_close("PTTL", "p", slack=1000)
    cd.ttl_close("TTL", "p")


def test_type_exists_touch_del_unlink(cd3: ClusterDiff) -> None:
    cd = cd3
    keys = [f"key:{i}" for i in range(40)]
    cd.call("MSET", *[part for key in keys for part in (key, key)])
    cd.calls(
        ("TYPE", "key:1"), ("TYPE", "none"), ("EXISTS", *keys[:10], "none", "key:1", "key:1"),
        ("TOUCH", *keys[:5], "none"), ("DEL", *keys[:10], "none", "key:0"),
        ("EXISTS", *keys), ("UNLINK", *keys[10:30], "none"), ("EXISTS", *keys),
        ("DEL", "none"), ("UNLINK", "none"), ("DEL",), ("EXISTS",), ("TYPE",),
        ("DEL", *keys), ("DBSIZE",), ("TOUCH", "none"),
    )


def test_mget_mset_msetnx(cd3: ClusterDiff) -> None:
    cd = cd3
    cd.calls(
        ("MSET", "a", "1", "b", "2", "c", "3"), ("MGET", "a", "b", "c", "none", "a"),
        ("MSET", "a", "x", "a", "y"), ("GET", "a"), ("MSET", "a"), ("MSET", "a", "1", "b"),
        ("MSETNX", "a", "9", "z", "9"), ("MGET", "a", "z"), ("MSETNX", "y", "1", "z", "2"),
        ("MGET", "y", "z"), ("MSETNX", "q", "1", "q", "2"), ("GET", "q"), ("MGET",),
        ("SET", "t", "v", "EXAT", FAR_S), ("MSET", "t", "w"), ("TTL", "t"), ("GET", "t"),
    )
    many = [f"m{i}" for i in range(200)]
    cd.call("MSET", *[p for key in many for p in (key, key * 3)])
    cd.call("MGET", *many, "absent")
    cd.call("DBSIZE")


def test_rename_renamenx_copy(cd3: ClusterDiff) -> None:
    cd = cd3
    cd.calls(
        ("SET", "src", "v", "PXAT", FAR_MS), ("RENAME", "src", "dst"), ("EXISTS", "src"),
        ("GET", "dst"), ("PEXPIRETIME", "dst"), ("RENAME", "none", "x"), ("RENAME", "dst", "dst"),
        ("GET", "dst"), ("SET", "other", "o"), ("RENAMENX", "dst", "other"),
        ("RENAMENX", "dst", "fresh"), ("GET", "fresh"), ("EXISTS", "dst"),
        ("RENAMENX", "none", "x"), ("RENAMENX", "fresh", "fresh"),
        ("COPY", "fresh", "c1"), ("GET", "c1"), ("PEXPIRETIME", "c1"),
        ("COPY", "fresh", "other"), ("COPY", "fresh", "other", "REPLACE"), ("GET", "other"),
        ("COPY", "none", "c2"), ("COPY", "fresh", "fresh"), ("COPY", "fresh", "c3", "DB", 3),
        ("COPY", "fresh", "c3", "DB", 99), ("COPY", "fresh", "c3", "DB", "x"),
        ("COPY", "fresh", "c3", "BOGUS"), ("EXISTS", "c3"), ("RENAME", "a"), ("COPY", "a"),
    )
    cd.every("SELECT", 3)
    cd.calls(("GET", "c3"), ("PEXPIRETIME", "c3"), ("COPY", "c3", "fresh", "DB", 0),
             ("COPY", "c3", "fresh", "DB", 0, "REPLACE"))
    cd.every("SELECT", 0)
    cd.call("GET", "fresh")


def populate(cd: ClusterDiff, count: int) -> None:
    pairs: list[str] = []
    for i in range(count):
        prefix = ("user", "item", "log", "h?llo")[i % 4]
        pairs += [f"{prefix}:{i}", str(i)]
    cd.call("MSET", *pairs)


def test_keys_patterns(cd: ClusterDiff) -> None:
    populate(cd, 120)
    cd.call("MSET", "hello", "1", "hallo", "2", "hxllo", "3", "hllo", "4", "heeello", "5",
            "a[b", "6", "a\\b", "7")
    for pattern in ("*", "user:*", "*:1?", "h?llo", "h*llo", "h[ae]llo", "h[^e]llo",
                    "h[a-b]llo", "a\\[b", "a\\\\b", "h\\?llo:*", "nomatch*", "[", "*[a-", ""):
        cd.same_set("KEYS", pattern)
    cd.call("KEYS")
    cd.call("KEYS", "a", "b")


def scan_all(conns: list[RawConnection], *options: str | int) -> list[bytes]:
    """Walk SCAN from cursor 0 to 0, each step through the next connection."""
    cursor = b"0"
    found: list[bytes] = []
    step = 0
    while True:
        cursor, keys = parse(conns[step % len(conns)].call("SCAN", cursor, *options))
        found += keys
        step += 1
        assert step < 10_000
        if cursor == b"0":
            return found


def test_scan_walks_the_whole_keyspace(cd: ClusterDiff) -> None:
    populate(cd, 400)
    for options in ((), ("COUNT", 7), ("COUNT", 1000), ("MATCH", "user:*"),
                    ("MATCH", "*:1*", "COUNT", 25), ("TYPE", "string"), ("TYPE", "hash"),
                    ("MATCH", "log:*", "TYPE", "string", "COUNT", 3), ("MATCH", "none*")):
        mine = scan_all(cd.nodes, *options)
        theirs = scan_all([cd.ref], *options)
        assert len(mine) == len(set(mine)), f"{options}: a key returned twice"
        assert set(mine) == set(theirs), options
    for bad in (("SCAN", "x"), ("SCAN", 0, "COUNT", 0), ("SCAN", 0, "COUNT", "x"),
                ("SCAN", 0, "MATCH"), ("SCAN", 0, "BOGUS", 1), ("SCAN",)):
        cd.call(*bad)


def test_dbsize_randomkey_flushdb_flushall(cd3: ClusterDiff) -> None:
    cd = cd3
    cd.calls(("DBSIZE",), ("RANDOMKEY",))
    populate(cd, 50)
    cd.call("DBSIZE")
    for _ in range(5):
        mine, _ = cd.both("RANDOMKEY")
        assert parse(mine) in parse(cd.ref.call("KEYS", "*"))
    cd.every("SELECT", 2)
    cd.calls(("SET", "db2", "x"), ("DBSIZE",), ("FLUSHDB",), ("DBSIZE",), ("SET", "db2", "y"))
    cd.every("SELECT", 0)
    cd.calls(("DBSIZE",), ("FLUSHDB", "ASYNC"), ("DBSIZE",), ("FLUSHDB", "SYNC"),
             ("FLUSHDB", "BOGUS"), ("RANDOMKEY",))
    cd.every("SELECT", 2)
    cd.calls(("DBSIZE",), ("FLUSHALL",), ("DBSIZE",), ("FLUSHALL", "ASYNC"),
             ("FLUSHALL", "BOGUS"), ("GET", "db2"))


def test_select_isolates_databases(cd3: ClusterDiff) -> None:
    cd = cd3
    for db in range(4):
        cd.every("SELECT", db)
        cd.calls(("SET", "k", f"in-{db}"), ("INCR", f"n{db}"))
    for db in range(4):
        cd.every("SELECT", db)
        cd.calls(("GET", "k"), ("DBSIZE",), ("EXISTS", "n0", "n1", "n2", "n3"))
    cd.every("SELECT", 16)
    cd.every("SELECT", -1)
    cd.every("SELECT", "x")
    cd.every("SELECT", 15)
    cd.calls(("GET", "k"), ("SET", "k", "15"))
    cd.every("SELECT", 0)
    cd.call("GET", "k")


def test_multi_exec_discard(cd3: ClusterDiff) -> None:
    for i in range(NODES):
        one = cd3.pinned(i)
        one.calls(
            ("SET", "c", "1"), ("MULTI",), ("INCR", "c"), ("INCRBY", "c", 10), ("GET", "c"),
            ("SET", "c", "x"), ("INCR", "c"), ("APPEND", "c", "y"), ("DEL", "c", "d"),
            ("SET", "d", "v", "EXAT", FAR_S), ("EXPIRETIME", "d"), ("EXEC",), ("GET", "c"),
            ("MULTI",), ("SET", "c", "never"), ("DISCARD",), ("GET", "c"),
            ("EXEC",), ("DISCARD",), ("MULTI",), ("MULTI",), ("DISCARD",),
            ("MULTI",), ("SET", "c"), ("SET", "c", "2"), ("EXEC",), ("GET", "c"),
            ("MULTI",), ("NOSUCHCOMMAND",), ("EXEC",),
            ("MULTI",), ("EXEC",),
            ("MULTI",), ("MSET", "a", "1", "b", "2"), ("MGET", "a", "b"), ("DEL", "a", "b"),
            ("SELECT", 3), ("SET", "a", "3"), ("EXEC",), ("GET", "a"),
        )
        one.call("SELECT", 0)
        one.calls(("GET", "a"), ("FLUSHALL",))


def test_error_paths(cd3: ClusterDiff) -> None:
    cd = cd3
    cd.call("SET", "s", "v")
    for command in (
        ("GET",), ("GET", "a", "b"), ("SET",), ("SETNX", "a"), ("GETSET", "a"),
        ("STRLEN",), ("APPEND", "a"), ("GETRANGE", "a", 0), ("SETRANGE", "a", 0),
        ("SETRANGE", "a", "x", "v"), ("INCRBY", "a"), ("DECRBY", "a", "1", "2"),
        ("EXPIRE", "a"), ("PEXPIREAT", "a"), ("TTL",), ("PERSIST",), ("RENAME", "a"),
        ("RENAMENX", "a"), ("MSETNX", "a"), ("DBSIZE", "x"), ("RANDOMKEY", "x"),
        ("KEYS",), ("SCAN",), ("TYPE", "a", "b"), ("NOSUCH",), ("NOSUCH", "arg"),
        ("INCR", "s"), ("INCRBY", "s", "1e3"), ("DECRBY", "s", "x"),
        ("INCRBYFLOAT", "s", "1"), ("SETEX", "a", "1.5", "v"), ("EXPIRE", "s", "1.5"),
    ):
        cd.call(*command)


def test_binary_keys_and_values(cd3: ClusterDiff) -> None:
    cd = cd3
    key = b"k\x00\r\n\xff key"
    value = bytes(range(256)) * 40
    cd.calls(("SET", key, value), ("GET", key), ("STRLEN", key), ("EXISTS", key),
             ("GETRANGE", key, 250, 260), ("APPEND", key, b"\x00"), ("STRLEN", key),
             ("RENAME", key, b"\xfe"), ("GET", b"\xfe"), ("DEL", b"\xfe"), ("SET", b"", b""),
             ("GET", b""), ("EXISTS", b""))


def test_pipeline_matches_redis(cd: ClusterDiff) -> None:
    commands: list[tuple[bytes | str | int, ...]] = []
    for i in range(150):
        commands += [("SET", f"p{i % 17}", i), ("INCR", f"c{i % 5}"), ("GET", f"p{(i * 7) % 17}"),
                     ("APPEND", "log", f"{i},"), ("EXISTS", f"p{i % 23}")]
    for i in range(NODES):
        cd.ref.call("FLUSHALL")
        flush_conn = cd.nodes[i]
        assert flush_conn.call("FLUSHALL") == b"+OK\r\n"
        assert flush_conn.pipeline(commands) == cd.ref.pipeline(commands), f"node{i}"


def test_read_heavy_pipeline_matches_redis(cd: ClusterDiff) -> None:
    """Long runs of pipelined reads (which a cluster node runs concurrently) broken by the
    occasional write (which waits for them and holds back the reads after it)."""
    rng = random.Random(7)
    commands: list[tuple[bytes | str | int, ...]] = []
    for i in range(600):
        key = f"r{rng.randrange(40)}"
        roll = rng.random()
        if roll < 0.08:
            commands.append(("SET", key, i))
        elif roll < 0.11:
            commands.append(("DEL", key))
        elif roll < 0.13:
            commands.append(("INCR", f"n{rng.randrange(3)}"))
        else:
            commands.append(rng.choice([("GET", key), ("EXISTS", key), ("STRLEN", key),
                                        ("TTL", key), ("MGET", key, f"r{rng.randrange(40)}"),
                                        ("GET", f"n{rng.randrange(3)}")]))
    for i in range(NODES):
        cd.ref.call("FLUSHALL")
        assert cd.nodes[i].call("FLUSHALL") == b"+OK\r\n"
        assert cd.nodes[i].pipeline(commands) == cd.ref.pipeline(commands), f"node{i}"


def random_command(rng: random.Random) -> tuple[bytes | str | int, ...]:
    """One command on a small keyspace, so that commands meet each other's keys often."""
    def key() -> str:
        return f"r{rng.randrange(6)}"

    def value() -> str:
        return rng.choice(["", "0", "7", "-3", "1.5", "abc", "9223372036854775807", "x" * 40])

    expiry = rng.choice([(), (), ("EXAT", FAR_S + rng.randrange(3)), ("KEEPTTL",),
                         ("PXAT", FAR_MS)])
    choices: list[tuple[bytes | str | int, ...]] = [
        ("SET", key(), value(), *expiry, *rng.choice([(), ("NX",), ("XX",), ("GET",)])),
        ("GET", key()), ("GETSET", key(), value()), ("GETDEL", key()),
        ("GETEX", key(), *rng.choice([(), ("PERSIST",), ("EXAT", FAR_S)])),
        ("INCR", key()), ("DECRBY", key(), rng.randrange(-5, 5)),
        ("INCRBYFLOAT", key(), rng.choice(["0.5", "-2", "1e3"])), ("APPEND", key(), value()),
        ("STRLEN", key()), ("GETRANGE", key(), rng.randrange(-5, 5), rng.randrange(-5, 5)),
        ("SETRANGE", key(), rng.randrange(0, 8), value()), ("SETNX", key(), value()),
        ("EXPIREAT", key(), FAR_S + rng.randrange(-2, 3),
         *rng.choice([(), ("NX",), ("XX",), ("GT",), ("LT",)])),
        ("PERSIST", key()), ("EXPIRETIME", key()), ("PEXPIRETIME", key()), ("TYPE", key()),
        ("EXISTS", key(), key(), key()), ("DEL", key(), key()), ("UNLINK", key()),
        ("MGET", key(), key(), key()), ("MSET", key(), value(), key(), value()),
        ("MSETNX", key(), value(), key(), value()), ("RENAME", key(), key()),
        ("RENAMENX", key(), key()), ("COPY", key(), key(), *rng.choice([(), ("REPLACE",)])),
        ("DBSIZE",), ("TOUCH", key(), key()),
    ]
    return rng.choice(choices)


@pytest.mark.parametrize("seed", range(4))
def test_random_command_sequences_match_redis(cd: ClusterDiff, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(250):
        cd.call(*random_command(rng))
    cd.same_set("KEYS", "*")


# Clients -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_sync_write_one_read_another(cluster: LocalCluster, protocol: int) -> None:
    flush_cluster(cluster)
    clients = [cluster.client(i, protocol=protocol, decode_responses=True) for i in range(NODES)]
    try:
        for i in range(30):
            clients[i % NODES].set(f"k{i}", f"v{i}")
        for i in range(30):
            for reader in clients:
                assert reader.get(f"k{i}") == f"v{i}"
        clients[0].set("n", 10)
        assert clients[1].incrby("n", 5) == 15
        assert clients[2].incrbyfloat("n", 0.5) == 15.5
        assert clients[1].mget(["k0", "k1", "none"]) == ["v0", "v1", None]
        assert set(clients[2].scan_iter(match="k1*")) == {"k1", *(f"k1{i}" for i in range(10))}
        assert clients[0].dbsize() == 31
        pipe = clients[1].pipeline(transaction=True)
        pipe.set("t", "a").append("t", "b").get("t").delete("t")
        assert pipe.execute() == [True, 2, "ab", 1]
        assert clients[2].exists("t") == 0
        assert clients[0].set("k0", "w", get=True) == "v0"
        assert clients[2].getdel("k0") == "w"
        assert clients[1].get("k0") is None
        assert clients[0].expire("k1", 100)
        assert 0 < clients[2].ttl("k1") <= 100
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_asyncio_write_one_read_another(cluster: LocalCluster, protocol: int) -> None:
    flush_cluster(cluster)

    async def scenario() -> None:
        clients = [redis.asyncio.Redis(host=cluster.hosts[i], port=cluster.ports[i],
                                       protocol=protocol) for i in range(NODES)]
        try:
            await asyncio.gather(*(clients[i % NODES].set(f"a{i}", i) for i in range(60)))
            values = await asyncio.gather(*(clients[(i + 1) % NODES].get(f"a{i}")
                                            for i in range(60)))
            assert values == [str(i).encode() for i in range(60)]
            # Concurrent increments through every node: each is read-modify-write on a quorum.
            for i in range(20):
                await clients[i % NODES].incr("counter")
            assert await clients[2].get("counter") == b"20"
            assert await clients[1].delete(*(f"a{i}" for i in range(60))) == 60
            assert await clients[0].dbsize() == 1
        finally:
            for client in clients:
                await client.aclose()

    asyncio.run(scenario())


def test_redis_cli_against_a_node(cluster: LocalCluster) -> None:
    flush_cluster(cluster)
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli is part of the test environment (make system-deps)"

    def run(i: int, *args: str) -> str:
        out = subprocess.run([cli, "-h", cluster.hosts[i], "-p", str(cluster.ports[i]), *args],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()

    assert run(0, "set", "k", "v") == "OK"
    assert run(1, "get", "k") == "v"
    assert run(2, "incr", "n") == "1"
    assert run(0, "--no-raw", "mget", "k", "n", "x") == '1) "v"\n2) "1"\n3) (nil)'
    assert run(1, "dbsize") == "2"
    assert run(2, "-3", "get", "k") == "v"


# Faults --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of its own (the fault test kills its nodes), with short request timeouts,
    and at most one hint kept per down node (hint-max-count 1): what heals a node that
    comes back is then read repair, save for that one hint, which the test accounts for."""
    with local_cluster(tmp_path_factory.mktemp("faults"),
                       extra=["--request-timeout", "500", "--hint-max-count", "1"]) as running:
        yield running


def local_copy(cluster: LocalCluster, i: int, key: str) -> bytes | None:
    """The value node ``i`` itself holds: a ONE read through the node reads its own replica
    first (coordinator Rule 1). The node's read level is restored at once."""
    with cluster.connect(i) as conn:
        assert conn.call("CONFIG", "SET", "read-consistency", "one") == b"+OK\r\n"
        try:
            reply = conn.call("GET", key)
        finally:
            conn.call("CONFIG", "SET", "read-consistency", "quorum")
    assert not reply.startswith(b"-"), reply
    value = parse(reply)
    return value if value is None else bytes(value)


def local_size(cluster: LocalCluster, i: int, key: str) -> int | None:
    """MEMORY USAGE reads node ``i``'s own replica and repairs nothing: a pure probe."""
    with cluster.connect(i) as conn:
        reply = parse(conn.call("MEMORY", "USAGE", key))
    assert not isinstance(reply, Exception), reply
    return reply if reply is None else int(reply)


def info_field(cluster: LocalCluster, i: int, name: str) -> str:
    with cluster.connect(i) as conn:
        text = bytes(parse(conn.call("INFO", "everything"))).decode()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return fields[name]


def wait_serving(cluster: LocalCluster, i: int) -> None:
    """Wait until node ``i`` meets a quorum again (a probe that changes nothing)."""
    def serving() -> bool:
        with cluster.connect(i) as conn:
            return conn.call("EXISTS", "__probe__") == b":0\r\n"
    wait_for(serving, f"node{i} to serve")


def new(i: int) -> bytes:
    return b"new-%d-" % i + b"x" * 50


def test_kill_one_then_two_then_restart_and_read_repair(faulty: LocalCluster) -> None:
    c = faulty
    flush_cluster(c)
    r0, r1, r2 = (c.client(i) for i in range(NODES))
    for i in range(20):
        (r0, r1, r2)[i % 3].set(f"k{i}", "old")

    wait_for(lambda: all(local_size(c, 2, f"k{i}") is not None for i in range(20)),
             "node2 to hold every key")
    before = {i: local_size(c, 2, f"k{i}") for i in range(1, 19)}

    # One node down: R=W=2 still met by the other two, for every kind of command.
    c.kill(2)
    for i in range(20):
        (r0, r1)[i % 2].set(f"k{i}", f"new-{i}-" + "x" * 50)
    r0.set("fresh", "born while node2 was down")
    assert r1.get("k3") == b"new-3-" + b"x" * 50
    assert r0.incr("counter") == 1 and r1.incr("counter") == 2
    assert r1.mget(["k0", "fresh"]) == [b"new-0-" + b"x" * 50, b"born while node2 was down"]
    assert r0.dbsize() == 22
    assert set(r1.scan_iter()) == {f"k{i}".encode() for i in range(20)} | {b"fresh",
                                                                           b"counter"}
    assert len(r0.keys("k*")) == 20
    assert r1.randomkey() is not None
    r0.rename("k19", "k19r")
    assert r1.get("k19r") == b"new-19-" + b"x" * 50
    pipe = r1.pipeline(transaction=True)
    assert pipe.set("tx", "1").incr("tx").execute() == [True, 2]

    # Two nodes down: no quorum; every data command says so, none answers wrongly.
    c.kill(1)
    with c.connect(0) as conn:
        for command in (("GET", "k0"), ("SET", "k0", "lost?"), ("INCR", "counter"),
                        ("MGET", "k0", "k1"), ("DEL", "k1"), ("EXISTS", "k2"), ("DBSIZE",),
                        ("SCAN", 0), ("KEYS", "*"), ("RANDOMKEY",), ("FLUSHALL",),
                        ("MSET", "a", "1", "b", "2"), ("EXPIRE", "k2", 10), ("TTL", "k2")):
            reply = conn.call(*command)
            assert reply.startswith(b"-NOQUORUM "), (command, reply)
        assert conn.call("GET", "k0").startswith(b"-NOQUORUM 1 of 2 required replicas")
        conn.call("MULTI")
        conn.call("GET", "k0")
        exec_reply = parse(conn.call("EXEC"))
        assert isinstance(exec_reply[0], hiredis.ReplyError)
        assert str(exec_reply[0]).startswith("NOQUORUM"), exec_reply
        assert conn.call("PING") == b"+PONG\r\n"  # the node itself is fine

    # A node restarted while a peer is still down starts from its saved members and serves
    # once a quorum (itself and node0) is reachable.
    c.restart(1)
    # Node0 sees node1 again once its reconnect back-off (up to 5 s) retries the link.
    wait_serving(c, 0)
    assert r1.get("k5") == b"new-5-" + b"x" * 50
    assert r0.get("counter") == b"2"
    assert r1.get("k0") in (b"new-0-" + b"x" * 50, b"lost?")  # a failed write may have landed
    assert r0.exists("k1") == 1  # DEL k1 got NOQUORUM: node0 alone could not delete

    # Node2 comes back: it missed every write above. Its own copies show it, until a read
    # through any node repairs them.
    c.restart(2)
    wait_serving(c, 1)
    fresh = b"born while node2 was down"
    stale = {i: local_size(c, 2, f"k{i}") for i in range(1, 19)}
    # Node2 missed the updates; at most one hint from each other node can have reached it.
    assert sum(stale[i] == before[i] for i in stale) >= 16, (before, stale)
    # A quorum read through node0 heals 'fresh' on node2 (read repair, or its hint).
    wait_for(lambda: r0.get("fresh") == fresh and local_size(c, 2, "fresh") is not None,
             "a read through node0 to heal 'fresh' on node2")
    assert local_copy(c, 2, "fresh") == fresh
    # Reads through the stale node itself return the latest values and repair its copies.
    repairs = int(info_field(c, 2, "coordinator_read_repairs"))
    for i in range(1, 19):
        assert r2.get(f"k{i}") == new(i)
    for i in range(1, 19):
        key = f"k{i}"
        wait_for(lambda: local_copy(c, 2, key) == new(i), f"repair of {key} on node2")  # noqa: B023
    assert int(info_field(c, 2, "coordinator_read_repairs")) - repairs >= 16
    assert r2.get("k19") is None and r2.get("k19r") == b"new-19-" + b"x" * 50
    assert r2.incr("counter") == 3
    for client in (r0, r1, r2):
        client.close()


# Bad inputs ----------------------------------------------------------------------------------


def node_argv(host: str, port: int, directory: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "respkv.server", "--port", str(port), "--bind", host,
            "--dir", str(directory), *options]


def test_node_with_wrong_secret_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    flush_cluster(cluster)
    host = "127.0.0.9"
    port = free_port(host)
    peers = [f"{h}:{p}" for h, p in zip(cluster.hosts, cluster.peer_ports, strict=True)]
    intruder = ServerProcess(
        node_argv(host, port, tmp_path / "data", "--cluster-port", str(free_port(host)),
                  "--cluster-secret", "not-" + SECRET, "--replication-factor", "3",
                  "--cluster-peers", *peers),
        port, tmp_path, "intruder", host)
    intruder.start()
    try:
        with intruder.connect() as conn:
            # Several exchange rounds: it never gets in.
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                assert conn.call("GET", "k").startswith(b"-CLUSTERDOWN "), intruder.log_text()
                time.sleep(0.2)
        with cluster.connect(0) as conn:
            assert conn.call("SET", "k", "v") == b"+OK\r\n"
        with cluster.connect(1) as conn:
            assert conn.call("GET", "k") == b"$1\r\nv\r\n"
        assert intruder.proc is not None and intruder.proc.poll() is None
    finally:
        intruder.stop()


def test_cluster_peers_without_secret_fails_at_start(tmp_path: Path) -> None:
    port = free_port()
    argv = node_argv("127.0.0.1", port, tmp_path / "data", "--cluster-peers",
                     "127.0.0.1:1")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 1
    assert "cluster-secret is empty" in done.stdout + done.stderr


def test_peer_address_that_is_redis_server(tmp_path: Path) -> None:
    ref = redis_server(tmp_path / "redis")
    ref.start()
    host = "127.0.0.1"
    port = free_port(host)
    node = ServerProcess(
        node_argv(host, port, tmp_path / "data", "--cluster-port", str(free_port(host)),
                  "--cluster-secret", SECRET, "--cluster-peers", f"{host}:{ref.port}"),
        port, tmp_path, "node", host)
    node.start()
    try:
        with node.connect() as conn:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                assert conn.call("SET", "k", "v").startswith(b"-CLUSTERDOWN ")
                time.sleep(0.2)
            assert conn.call("PING") == b"+PONG\r\n"
        with ref.connect() as conn:
            assert conn.call("PING") == b"+PONG\r\n"
        assert node.proc is not None and node.proc.poll() is None, node.log_text()
        assert ref.proc is not None and ref.proc.poll() is None
    finally:
        node.stop()
        ref.stop()
