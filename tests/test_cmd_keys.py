"""Keyspace commands (respkv/commands/keys.py).

Two layers:
- in-process: the handlers on a real Node with a ManualClock, so expiry arithmetic is checked
  to the millisecond, keyspace statistics are visible, and every call proves the handler
  completes without suspending;
- differential against redis-server 7 (RESP2 and RESP3), then redis-py sync and asyncio.
  Replies are compared byte for byte, except where they legitimately differ: key order (KEYS
  and SCAN walk respkv's ring tokens, Redis its hash table), SCAN cursors (opaque numbers of
  each server) and remaining TTLs (compared with a tolerance).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
import redis.asyncio

from cluster.clock import ManualClock
from cluster.node import Node, NodeOptions
from respkv.commands.keys import encoding_of, parse_cursor
from respkv.replies import OK, CommandError, Status
from respkv.server_state import Stats
from tests.conftest import Differential
from tests.inprocess import HandlerRunner, finish
from tests.servers import RawConnection

BINARY_KEYS = [b"\x00", b"\xff\xfe", b"a\r\nb", b" ", b"\x00key\x00", b"k" * 600]


def parse(reply: bytes) -> Any:
    reader = hiredis.Reader()
    reader.feed(reply)
    return reader.gets()


def as_set(reply: bytes) -> set[bytes]:
    value = parse(reply)
    assert isinstance(value, list), reply
    return set(value)


def run(diff: Differential, *commands: tuple[Any, ...]) -> None:
    for args in commands:
        diff.call(*args)


def full_scan(conn: RawConnection, *options: Any) -> tuple[set[bytes], int]:
    """Every key a whole SCAN iteration returns, and how many calls it took."""
    cursor = b"0"
    keys: set[bytes] = set()
    calls = 0
    while True:
        reply = parse(conn.call("SCAN", cursor, *options))
        assert not isinstance(reply, hiredis.ReplyError), reply
        cursor, batch = reply
        keys.update(batch)
        calls += 1
        if cursor == b"0":
            return keys, calls
        assert calls < 100_000


def close_ms(diff: Differential, *args: Any, tolerance: int = 150) -> None:
    ours, theirs = (parse(reply) for reply in diff.both(*args))
    assert isinstance(ours, int) and isinstance(theirs, int), (ours, theirs)
    if theirs < 0:
        assert ours == theirs, args
    else:
        assert abs(ours - theirs) <= tolerance, (args, ours, theirs)


# In-process ------------------------------------------------------------------------------

START_MS = 1_700_000_000_000




@dataclass
class FakeConfig:
    databases: int = 16


@dataclass
class FakeServer:
    stats: Stats = field(default_factory=Stats)
    config: FakeConfig = field(default_factory=FakeConfig)


class FakeClient:
    """What the keyspace handlers use of respkv.client.Client."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.server = FakeServer()
        self.db = 0
        self.resp = 2


class Local(HandlerRunner):
    def __init__(self, node: Node, clock: ManualClock) -> None:
        self.node = node
        self.clock = clock
        self.client = FakeClient(node)

    def put(self, key: str | bytes, value: bytes = b"v", expire_at_ms: int = 0,
            db: int = 0) -> None:
        raw = key if isinstance(key, bytes) else key.encode()
        finish(self.node.put(db, raw, value, expire_at_ms))

    def expire_at(self, key: str, db: int = 0) -> int | None:
        entry = finish(self.node.get(db, key.encode()))
        return None if entry is None else entry.expire_at_ms

    def advance(self, ms: int) -> None:
        self.clock.step_wall_ms(ms)

    @property
    def now(self) -> int:
        return self.clock.wall_ms()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    clock = ManualClock(wall_ms=START_MS)
    node = Node.open(str(tmp_path / "node"), NodeOptions(), clock)
    yield Local(node, clock)
    finish(node.close())


def test_local_expire_arithmetic(local: Local) -> None:
    local.put("k")
    assert local("EXPIRE", "k", 10) == 1
    assert local.expire_at("k") == START_MS + 10_000
    assert local("PEXPIRE", "k", 1234) == 1
    assert local.expire_at("k") == START_MS + 1234
    assert local("EXPIREAT", "k", START_MS // 1000 + 99) == 1
    assert local.expire_at("k") == (START_MS // 1000 + 99) * 1000
    assert local("PEXPIREAT", "k", START_MS + 1) == 1
    assert local.expire_at("k") == START_MS + 1
    assert local("PEXPIREAT", "k", START_MS) == 1  # == now counts as the past: deleted
    assert local.expire_at("k") is None


def test_local_ttl_rounding(local: Local) -> None:
    local.put("k", expire_at_ms=START_MS + 10_499)
    assert local("TTL", "k") == 10
    assert local("PTTL", "k") == 10_499
    local.advance(-1)
    assert local("TTL", "k") == 11  # 10.500 s rounds half up
    local.advance(1)
    local.put("k", expire_at_ms=START_MS + 10_500)
    assert local("TTL", "k") == 11
    assert local("EXPIRETIME", "k") == (START_MS + 10_500 + 500) // 1000
    assert local("PEXPIRETIME", "k") == START_MS + 10_500
    local.advance(10_499)
    assert local("PTTL", "k") == 1 and local("TTL", "k") == 0
    local.advance(1)
    assert local("PTTL", "k") == -2 and local("EXPIRETIME", "k") == -2


def test_local_expire_conditions(local: Local) -> None:
    local.put("k")
    assert local("EXPIRE", "k", 100, "XX") == 0
    assert local("EXPIRE", "k", 100, "GT") == 0  # no TTL is an infinite one
    assert local("EXPIRE", "k", 100, "LT") == 1
    assert local("EXPIRE", "k", 100, "NX") == 0
    assert local("EXPIRE", "k", 100, "GT") == 0  # equal is not greater
    assert local("EXPIRE", "k", 100, "LT") == 0
    assert local("PEXPIRE", "k", 100_001, "GT", "XX") == 1
    assert local.expire_at("k") == START_MS + 100_001
    assert local("PEXPIRE", "k", 99_999, "lt") == 1
    assert local.expire_at("k") == START_MS + 99_999
    assert local.error("EXPIRE", "k", 1, "nx", "lt") == (
        "ERR NX and XX, GT or LT options at the same time are not compatible")
    assert local.error("EXPIRE", "k", 1, "gt", "lt") == (
        "ERR GT and LT options at the same time are not compatible")
    assert local.error("EXPIRE", "k", 1, "now") == "ERR Unsupported option now"


def test_local_expire_overflow_boundaries(local: Local) -> None:
    local.put("k")
    assert local.error("EXPIRE", "k", 9223372036854776) == (
        "ERR invalid expire time in 'expire' command")
    assert local("PEXPIREAT", "k", 9223372036854775807, "XX") == 0  # XX: no TTL yet
    big = 9223372036854775807 - START_MS
    assert local("PEXPIRE", "k", big) == 1
    assert local.expire_at("k") == 9223372036854775807
    assert local.error("PEXPIRE", "k", big + 1) == "ERR invalid expire time in 'pexpire' command"
    assert local.error("pexpireat", "k", "x") == "ERR value is not an integer or out of range"


def test_local_persist_and_rename_keep_value_and_ttl(local: Local) -> None:
    local.put("a", b"\x00payload", START_MS + 5000)
    assert local("RENAME", "a", "b") is OK
    assert local.expire_at("b") == START_MS + 5000
    assert local("PERSIST", "b") == 1
    assert local.expire_at("b") == 0
    assert finish(local.node.get(0, b"b")).value == b"\x00payload"
    assert local("RENAMENX", "b", "c") == 1
    assert local.error("RENAME", "b", "c") == "ERR no such key"


def test_local_copy_and_move_across_databases(local: Local) -> None:
    local.put("k", b"v", START_MS + 9000)
    assert local("COPY", "k", "k", "DB", 5) == 1
    assert local.expire_at("k", db=5) == START_MS + 9000
    assert local("MOVE", "k", 5) == 0
    assert local("COPY", "k", "k", "db", 5, "replace") == 1
    assert local("MOVE", "k", 6) == 1
    assert local.expire_at("k") is None and local.expire_at("k", db=6) == START_MS + 9000
    assert local.error("MOVE", "k", 16) == "ERR DB index is out of range"


def test_local_keyspace_statistics(local: Local) -> None:
    stats = local.client.server.stats
    local.put("k")
    local("EXISTS", "k", "nope", "k")
    local("TYPE", "k")
    local("TTL", "nope")
    assert (stats.keyspace_hits, stats.keyspace_misses) == (3, 2)
    # Lookups for writing, and iteration, count nothing.
    local("DEL", "nope")
    local("EXPIRE", "k", 100)
    local("RENAME", "k", "j")
    local("KEYS", "*")
    local("SCAN", 0)
    local("RANDOMKEY")
    assert (stats.keyspace_hits, stats.keyspace_misses) == (3, 2)


def test_local_scan_uses_node_tokens(local: Local) -> None:
    for i in range(200):
        local.put(b"k%d" % i)
    cursor, batch = local("SCAN", 0, "COUNT", 20)
    assert cursor != b"0" and 1 <= len(batch) <= 40
    next_cursor, expected = finish(local.node.scan(0, int(cursor), 20))
    again_cursor, again = local("SCAN", cursor, "COUNT", 20)
    assert (again_cursor, again) == (b"%d" % next_cursor, expected)


def test_local_scan_skips_expired_keys(local: Local) -> None:
    local.put("dies", expire_at_ms=START_MS + 10)
    local.put("lives")
    local.advance(10)
    assert local("SCAN", 0, "COUNT", 100) == [b"0", [b"lives"]]
    assert local("KEYS", "*") == [b"lives"]
    assert local("RANDOMKEY") == b"lives"


def test_local_type_reply(local: Local) -> None:
    local.put("k")
    assert local("TYPE", "k") == Status("string") and isinstance(local("TYPE", "k"), Status)
    assert local("TYPE", "nope") == Status("none")


@pytest.mark.parametrize(
    ("arg", "value"),
    [(b"", 0), (b"0", 0), (b"+7", 7), (b"-1", 2**64 - 1), (b"-01", 2**64 - 1), (b"007", 7),
     (b"5\x00junk", 5), (b"18446744073709551615", 2**64 - 1), (b"-18446744073709551615", 1),
     (b"-0", 0)],
)
def test_parse_cursor(arg: bytes, value: int) -> None:
    assert parse_cursor(arg) == value


@pytest.mark.parametrize(
    "arg", [b" 1", b"\t1", b"1 ", b"+", b"-", b"0x1", b"1e3", b"18446744073709551616",
            b"-18446744073709551616", b"\xd9\xa1", b"+-1"],
)
def test_parse_cursor_refuses(arg: bytes) -> None:
    with pytest.raises(CommandError, match="invalid cursor"):
        parse_cursor(arg)


@pytest.mark.parametrize(
    ("value", "encoding"),
    [(b"1", b"int"), (b"-9223372036854775808", b"int"), (b"9223372036854775808", b"embstr"),
     (b"01", b"embstr"), (b"", b"embstr"), (b"x" * 44, b"embstr"), (b"x" * 45, b"raw"),
     (b"1" * 45, b"raw")],
)
def test_encoding_of(value: bytes, encoding: bytes) -> None:
    assert encoding_of(value) == encoding


# DEL, UNLINK, EXISTS, TOUCH, TYPE --------------------------------------------------------


@pytest.mark.parametrize("name", ["DEL", "UNLINK"])
def test_delete_counts_existing_keys(diff: Differential, name: str) -> None:
    run(
        diff,
        (name, "missing"),
        ("SET", "a", "1"), ("SET", "b", "2"), ("SET", "c", "3"),
        (name, "a"),
        (name, "a"),
        (name, "b", "c", "missing", "b"),
        ("EXISTS", "a", "b", "c"),
        ("SET", "d", "4"),
        (name, "d", "d", "d"),
        ("DBSIZE",),
        (name,),
    )


def test_delete_binary_keys(diff: Differential) -> None:
    for key in BINARY_KEYS:
        diff.call("SET", key, key)
    diff.call("EXISTS", *BINARY_KEYS)
    diff.call("DEL", *BINARY_KEYS[:3])
    diff.call("EXISTS", *BINARY_KEYS)
    diff.call("UNLINK", *BINARY_KEYS)
    diff.call("DBSIZE")


def test_exists_counts_duplicates(diff: Differential) -> None:
    run(
        diff,
        ("EXISTS", "x"),
        ("SET", "x", "1"),
        ("EXISTS", "x"),
        ("EXISTS", "x", "x", "x", "y"),
        ("EXISTS",),
    )


def test_touch(diff: Differential) -> None:
    run(
        diff,
        ("TOUCH", "x"),
        ("SET", "x", "1"), ("SET", "y", "1"),
        ("TOUCH", "x", "y", "z", "x"),
        ("TOUCH",),
    )


def test_type(diff3: Differential) -> None:
    run(
        diff3,
        ("TYPE", "x"),
        ("SET", "x", "1"),
        ("TYPE", "x"),
        ("SET", b"\x00", ""),
        ("TYPE", b"\x00"),
        ("TYPE",),
        ("TYPE", "x", "y"),
    )


def test_expired_keys_are_gone(diff: Differential) -> None:
    for key in ("a", "b", "c"):
        diff.call("SET", key, "v")
        diff.call("PEXPIRE", key, 30)
    diff.call("SET", "live", "v")
    time.sleep(0.08)
    run(
        diff,
        ("EXISTS", "a"),
        ("TYPE", "a"),
        ("TTL", "b"),
        ("DEL", "b", "live"),
        ("RENAME", "c", "d"),
        ("EXPIRE", "c", 100),
        ("PERSIST", "c"),
        ("KEYS", "*"),
    )


# RENAME, RENAMENX ------------------------------------------------------------------------


def test_rename(diff: Differential) -> None:
    run(
        diff,
        ("RENAME", "missing", "x"),
        ("RENAME", "missing", "missing"),
        ("SET", "a", "1"),
        ("RENAME", "a", "a"),
        ("GET", "a"),
        ("RENAME", "a", "b"),
        ("EXISTS", "a"),
        ("GET", "b"),
        ("SET", "c", "3"),
        ("RENAME", "b", "c"),
        ("GET", "c"),
        ("DBSIZE",),
        ("RENAME", "c"),
        ("RENAME", "c", "d", "e"),
    )


def test_renamenx(diff: Differential) -> None:
    run(
        diff,
        ("RENAMENX", "missing", "x"),
        ("RENAMENX", "missing", "missing"),
        ("SET", "a", "1"),
        ("RENAMENX", "a", "a"),
        ("SET", "b", "2"),
        ("RENAMENX", "a", "b"),
        ("GET", "a"), ("GET", "b"),
        ("RENAMENX", "a", "c"),
        ("GET", "c"), ("EXISTS", "a"),
        ("RENAMENX", "c"),
    )


@pytest.mark.parametrize("name", ["RENAME", "RENAMENX"])
def test_rename_carries_the_ttl(diff: Differential, name: str) -> None:
    run(diff, ("SET", "a", "1"), ("EXPIRE", "a", 1000), ("SET", "p", "1"))
    run(diff, (name, "a", "b"), ("TTL", "b"), ("TTL", "a"))
    close_ms(diff, "PTTL", "b")
    # A persistent key renamed over one with a TTL leaves no TTL behind.
    run(diff, ("SET", "t", "1"), ("EXPIRE", "t", 50), ("RENAME", "p", "t"), ("TTL", "t"))


def test_rename_binary_keys(diff: Differential) -> None:
    for src, dst in itertools.pairwise(BINARY_KEYS):
        diff.call("SET", src, b"value:" + src)
        diff.call("RENAME", src, dst)
        diff.call("GET", dst)
        diff.call("EXISTS", src)


# COPY ------------------------------------------------------------------------------------


def test_copy(diff: Differential) -> None:
    run(
        diff,
        ("COPY", "missing", "x"),
        ("SET", "a", "1"),
        ("COPY", "a", "b"),
        ("GET", "b"),
        ("SET", "a", "2"),
        ("COPY", "a", "b"),
        ("GET", "b"),
        ("COPY", "a", "b", "REPLACE"),
        ("GET", "b"),
        ("COPY", "a", "b", "replace", "REPLACE"),
        ("COPY", "a", "c", b"REPLACE\x00ignored"),
        ("GET", "c"),
        ("COPY", "missing", "b", "REPLACE"),
        ("GET", "b"),
    )


def test_copy_errors(diff: Differential) -> None:
    run(
        diff,
        ("SET", "a", "1"),
        ("COPY", "a", "a"),
        ("COPY", "missing", "missing"),
        ("COPY", "a", "a", "DB", 0),
        ("COPY", "a", "a", "REPLACE"),
        ("COPY", "a", "b", "DB"),
        ("COPY", "a", "b", "DB", "x"),
        ("COPY", "a", "b", "DB", "1.5"),
        ("COPY", "a", "b", "DB", "-1"),
        ("COPY", "a", "b", "DB", "16"),
        ("COPY", "a", "b", "DB", "4294967296"),
        ("COPY", "a", "b", "DB", "99999999999999999999"),
        ("COPY", "a", "b", "DB", 1, "DB", 99),
        ("COPY", "a", "b", "DB", 99, "DB", 1),
        ("COPY", "x", "b", "DB", "x", "FOO"),
        ("COPY", "a", "b", "FOO"),
        ("COPY", "a", "b", "REPLACE", "FOO"),
        ("COPY", "a"),
        ("EXISTS", "b"),
    )


def test_copy_carries_the_ttl(diff: Differential) -> None:
    run(diff, ("SET", "a", "1"), ("EXPIRE", "a", 1000), ("COPY", "a", "b"), ("TTL", "b"))
    close_ms(diff, "PTTL", "b")
    run(diff, ("SET", "p", "1"), ("COPY", "p", "b", "REPLACE"), ("TTL", "b"))


def test_copy_to_another_database(diff: Differential) -> None:
    run(
        diff,
        ("SET", "a", "1"),
        ("EXPIRE", "a", 1000),
        ("COPY", "a", "a", "DB", 1),
        ("COPY", "a", "a", "DB", 1),
        ("SELECT", 1),
        ("GET", "a"),
        ("TTL", "a"),
        ("SET", "a", "db1"),
        ("SELECT", 0),
        ("COPY", "a", "a", "DB", 1, "REPLACE"),
        ("SELECT", 1),
        ("GET", "a"),
        ("COPY", "a", "a", "DB", 0),
        ("SELECT", 0),
        ("DBSIZE",),
    )


# MOVE ------------------------------------------------------------------------------------


def test_move(diff: Differential) -> None:
    run(
        diff,
        ("MOVE", "missing", 1),
        ("SET", "a", "1"),
        ("EXPIRE", "a", 1000),
        ("MOVE", "a", 1),
        ("EXISTS", "a"),
        ("SELECT", 1),
        ("GET", "a"),
        ("TTL", "a"),
        ("SELECT", 0),
        ("SET", "a", "again"),
        ("MOVE", "a", 1),
        ("GET", "a"),
        ("SELECT", 1),
        ("MOVE", "a", 0),
        ("DBSIZE",),
    )


def test_move_errors(diff: Differential) -> None:
    run(
        diff,
        ("SET", "a", "1"),
        ("MOVE", "a", 0),
        ("MOVE", "missing", 0),
        ("MOVE", "a", "x"),
        ("MOVE", "a", -1),
        ("MOVE", "a", 16),
        ("MOVE", "a", "4294967296"),
        ("MOVE", "a", "99999999999999999999"),
        ("MOVE", "a"),
        ("MOVE", "a", 1, 2),
    )


# KEYS ------------------------------------------------------------------------------------

KEYS_FIXTURE = [b"", b"a", b"ab", b"abc", b"b", b"user:1", b"user:22", b"User:3", b"h\x00llo",
                b"[x]", b"*", b"\xff", b"\\", b"a-b", b"long" * 50]
PATTERNS = [b"*", b"**", b"", b"a*", b"*b*", b"?", b"??", b"user:*", b"user:?", b"[uU]ser:*",
            b"[^a]*", b"[a-b]", b"[b-a]*", b"\\[x\\]", b"[[]x]", b"\\*", b"h?llo", b"*\xff",
            b"[", b"\\", b"a\\-b", b"nomatch*"]


def test_keys(diff3: Differential) -> None:
    for key in KEYS_FIXTURE:
        diff3.call("SET", key, "v")
    for pattern in PATTERNS:
        ours, theirs = diff3.both("KEYS", pattern)
        assert ours[:1] == theirs[:1] == b"*", (ours, theirs)
        assert as_set(ours) == as_set(theirs), pattern
    diff3.call("KEYS", "nomatch")
    diff3.call("KEYS")
    diff3.call("KEYS", "a", "b")


def test_keys_with_pathological_patterns(diff: Differential) -> None:
    diff.call("SET", b"a" * 5000, "v")
    diff.call("SET", b"a" * 1100, "v")
    started = time.monotonic()
    for pattern in (b"a*a*a*a*a*a*a*a*a*a*b", b"*a" * 1000, b"*a" * 1001, b"?*" * 1001,
                    b"*" + b"a*" * 1001):
        ours, theirs = diff.both("KEYS", pattern)
        assert as_set(ours) == as_set(theirs), pattern[:20]
        ours, theirs = diff.both("SCAN", 0, "MATCH", pattern, "COUNT", 1000)
        assert as_set(ours[ours.index(b"*", 1):]) == as_set(theirs[theirs.index(b"*", 1):])
    assert time.monotonic() - started < 5


def test_keys_on_an_empty_database(diff3: Differential) -> None:
    diff3.call("KEYS", "*")


# SCAN ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("x",), ("-",), ("+",), (" 5",), ("1 ",), ("0x1",), ("18446744073709551616",),
        ("-18446744073709551616",), ("x", "COUNT", 0), ("x", "FOO"),
        ("0", "COUNT", 0), ("0", "COUNT", -1), ("0", "COUNT", "x"), ("0", "COUNT", "1.5"),
        ("0", "COUNT"), ("0", "MATCH"), ("0", "TYPE"), ("0", "FOO", "bar"), ("0", "COUNT", 10, "x"),
        ("0", "COUNT", "99999999999999999999"),
    ],
)
def test_scan_errors(diff: Differential, args: tuple[Any, ...]) -> None:
    diff.call("SET", "k", "v")
    diff.call("SCAN", *args)


def test_scan_arity(diff: Differential) -> None:
    diff.call("SCAN")


@pytest.mark.parametrize(
    "cursor", ["", "-0", "+0", "00", b"0\x00junk", "-1", "-01", "18446744073709551615",
               "-18446744073709551615"],
)
def test_scan_accepts_what_strtoul_accepts(diff: Differential, cursor: str | bytes) -> None:
    """Cursors redis-server accepts are accepted; their meaning is each server's own."""
    ours, theirs = diff.both("SCAN", cursor)
    assert ours.startswith(b"*2\r\n") and theirs.startswith(b"*2\r\n"), (ours, theirs)


def test_scan_on_an_empty_database(diff3: Differential) -> None:
    diff3.call("SCAN", 0)
    diff3.call("SCAN", 0, "MATCH", "*", "COUNT", 100, "TYPE", "string")


@pytest.mark.parametrize(
    "options",
    [
        (), ("COUNT", 1), ("COUNT", 3), ("COUNT", 1000), ("MATCH", "*"), ("MATCH", "**"),
        ("MATCH", ""), ("MATCH", "user:*"), ("MATCH", "[ab]*", "COUNT", 2),
        ("TYPE", "string"), ("TYPE", "STRING"), ("TYPE", b"string\x00x"), ("TYPE", "list"),
        ("TYPE", "none"), ("TYPE", "hash", "MATCH", "*"), ("MATCH", "a*", "MATCH", "b*"),
        ("COUNT", 5, "COUNT", 1),
    ],
)
def test_scan_returns_what_redis_returns(diff: Differential, options: tuple[Any, ...]) -> None:
    for key in KEYS_FIXTURE:
        diff.call("SET", key, "v")
    ours, _ = full_scan(diff.ours, *options)
    theirs, _ = full_scan(diff.theirs, *options)
    assert ours == theirs


def test_scan_reply_shape(diff3: Differential) -> None:
    diff3.call("SET", "only", "v")
    diff3.call("SCAN", 0, "COUNT", 100)
    diff3.call("SCAN", 0, "MATCH", "nomatch")


def _fill(conn: RawConnection, keys: list[bytes]) -> None:
    for start in range(0, len(keys), 500):
        conn.pipeline([("SET", key, b"v") for key in keys[start : start + 500]])


@pytest.mark.parametrize("count", [1, 7, 100, 5000])
def test_scan_returns_every_key_exactly_once(respkv_port: int, count: int) -> None:
    keys = [b"key:%d" % i for i in range(3000)]
    with RawConnection(respkv_port) as conn:
        _fill(conn, keys)
        cursor = b"0"
        seen: list[bytes] = []
        calls = 0
        while True:
            cursor, batch = parse(conn.call("SCAN", cursor, "COUNT", count))
            seen.extend(batch)
            calls += 1
            if cursor == b"0":
                break
    assert len(seen) == len(set(seen)) == len(keys)
    assert set(seen) == set(keys)
    assert calls >= len(keys) // max(count, 1) // 2  # COUNT bounds the work per call


@pytest.mark.parametrize("count", [1, 10, 250])
def test_scan_guarantee_with_concurrent_changes(respkv_port: int, count: int) -> None:
    """Keys present for the whole iteration come back; keys added or deleted may or may not."""
    rng = random.Random(count)
    stable = [b"stable:%d" % i for i in range(1500)]
    doomed = [b"doomed:%d" % i for i in range(500)]
    with RawConnection(respkv_port) as conn:
        _fill(conn, stable + doomed)
        cursor = b"0"
        seen: set[bytes] = set()
        added: set[bytes] = set()
        next_new = 0
        while True:
            cursor, batch = parse(conn.call("SCAN", cursor, "COUNT", count))
            seen.update(batch)
            if cursor == b"0":
                break
            # Between calls: add a few keys, delete a few of the doomed ones.
            news = [b"new:%d" % (next_new + i) for i in range(3)]
            next_new += 3
            conn.pipeline([("SET", key, b"v") for key in news])
            added.update(news)
            victims = rng.sample(doomed, min(2, len(doomed)))
            for victim in victims:
                doomed.remove(victim)
            if victims:
                conn.call("DEL", *victims)
    assert set(stable) <= seen
    assert seen <= set(stable) | set(doomed) | added | {b"doomed:%d" % i for i in range(500)}


def test_keys_and_scan_agree_on_a_large_database(respkv_port: int) -> None:
    keys = [b"%d:%s" % (i, b"x" * (i % 7)) for i in range(4000)]
    with RawConnection(respkv_port) as conn:
        _fill(conn, keys)
        listed = parse(conn.call("KEYS", "*"))
        assert len(listed) == len(keys) and set(listed) == set(keys)
        scanned, _ = full_scan(conn, "MATCH", "1*", "COUNT", 64)
        assert scanned == {key for key in keys if key.startswith(b"1")}
        assert set(parse(conn.call("KEYS", "1*"))) == scanned


# RANDOMKEY, DBSIZE, FLUSHDB, FLUSHALL ------------------------------------------------------


def test_randomkey(diff3: Differential) -> None:
    run(diff3, ("RANDOMKEY",), ("SET", "only", "v"), ("RANDOMKEY",), ("RANDOMKEY", "x"))
    diff3.call("SET", "other", "v")
    ours = parse(diff3.ours.call("RANDOMKEY"))
    assert ours in (b"only", b"other")


def test_randomkey_visits_every_key(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        _fill(conn, [b"a", b"b", b"c"])
        found = {parse(conn.call("RANDOMKEY")) for _ in range(200)}
    assert found == {b"a", b"b", b"c"}


def test_dbsize(diff: Differential) -> None:
    run(diff, ("DBSIZE",), ("SET", "a", "1"), ("SET", "b", "1"), ("DBSIZE",), ("DEL", "a"),
        ("DBSIZE",), ("DBSIZE", "x"))


@pytest.mark.parametrize("mode", [(), ("ASYNC",), ("sync",), (b"SYNC\x00x",)])
def test_flushdb(diff: Differential, mode: tuple[Any, ...]) -> None:
    run(
        diff,
        ("SET", "a", "1"),
        ("SELECT", 1), ("SET", "b", "1"), ("SELECT", 0),
        ("FLUSHDB", *mode),
        ("DBSIZE",),
        ("SELECT", 1), ("DBSIZE",),
    )


@pytest.mark.parametrize("mode", [(), ("async",), ("SYNC",)])
def test_flushall(diff: Differential, mode: tuple[Any, ...]) -> None:
    run(
        diff,
        ("SET", "a", "1"),
        ("SELECT", 1), ("SET", "b", "1"),
        ("FLUSHALL", *mode),
        ("DBSIZE",),
        ("SELECT", 0), ("DBSIZE",),
    )


@pytest.mark.parametrize("name", ["FLUSHDB", "FLUSHALL"])
def test_flush_syntax_errors(diff: Differential, name: str) -> None:
    run(diff, ("SET", "a", "1"), (name, "foo"), (name, "ASYNC", "SYNC"), (name, "SYNC", "SYNC"),
        ("DBSIZE",))


# EXPIRE family ---------------------------------------------------------------------------

EXPIRE_OPTIONS = [(), ("NX",), ("XX",), ("GT",), ("LT",), ("XX", "GT"), ("XX", "LT"),
                  ("nx",), ("GT", "XX"), ("NX", "NX"), ("gt", "GT")]


@pytest.mark.parametrize("options", EXPIRE_OPTIONS)
@pytest.mark.parametrize("current", [None, 1000])
@pytest.mark.parametrize("new", [500, 1000, 2000])
def test_expire_conditions(
    diff: Differential, options: tuple[str, ...], current: int | None, new: int
) -> None:
    # Absolute times: "equal" must mean equal on both servers, whatever the clock did between
    # two commands.
    base_s = int(time.time())
    diff.call("SET", "k", "v")
    if current is not None:
        diff.call("EXPIREAT", "k", base_s + current)
    diff.call("EXPIREAT", "k", base_s + new, *options)
    diff.call("EXPIRETIME", "k")
    diff.call("EXPIREAT", "missing", base_s + new, *options)
    diff.call("PEXPIRE", "k", new * 1000 + 5000, *options)  # 5 s from any tie
    diff.call("EXISTS", "k")


@pytest.mark.parametrize("name", ["EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"])
def test_expire_option_errors(diff: Differential, name: str) -> None:
    run(
        diff,
        ("SET", "k", "v"),
        (name, "k", 100, "NX", "XX"),
        (name, "k", 100, "NX", "GT"),
        (name, "k", 100, "LT", "NX"),
        (name, "k", 100, "GT", "LT"),
        (name, "k", 100, "XX", "GT", "LT"),
        (name, "k", 100, "NX", "XX", "GT", "LT"),
        (name, "k", 100, "FOO"),
        (name, "k", 100, b"foo\x00bar"),
        (name, "k", 100, b"NX\x00junk"),
        (name, "k", "abc", "FOO"),
        (name, "k", "abc", "NX", "XX"),
        (name, "k", "abc"),
        (name, "k", "1.5"),
        (name, "k", ""),
        (name, "missing", "abc"),
        (name, "k"),
        ("TTL", "k"),
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EXPIRE", "9223372036854776"), ("EXPIRE", "-9223372036854776"),
        ("EXPIRE", "9223372036854775807"), ("EXPIRE", "-9223372036854775808"),
        ("PEXPIRE", "9223372036854775807"), ("PEXPIRE", "9223372036854775000"),
        ("EXPIREAT", "9223372036854776"), ("EXPIREAT", "9223372036854775807"),
        ("PEXPIREAT", "9223372036854775808"),
    ],
)
def test_expire_overflow(diff: Differential, name: str, value: str) -> None:
    diff.call("SET", "k", "v")
    diff.call(name, "k", value)
    diff.call(name, "missing", value)
    diff.call("EXISTS", "k")


@pytest.mark.parametrize(
    ("name", "value"),
    [("EXPIRE", 0), ("EXPIRE", -5), ("PEXPIRE", 0), ("PEXPIRE", -1), ("EXPIREAT", 0),
     ("EXPIREAT", 1), ("PEXPIREAT", 1000), ("EXPIRE", "-9223372036854775"),
     ("PEXPIREAT", "-9223372036854775808"), ("PEXPIREAT", "9223372036854775807")],
)
def test_expire_in_the_past_deletes(diff: Differential, name: str, value: Any) -> None:
    run(diff, ("SET", "k", "v"), (name, "k", value), ("EXISTS", "k"), ("PEXPIRETIME", "k"),
        (name, "missing", value))


def test_expire_in_the_past_with_conditions(diff: Differential) -> None:
    run(
        diff,
        ("SET", "k", "v"),
        ("EXPIRE", "k", -1, "XX"),  # no TTL: XX refuses before the past time matters
        ("EXISTS", "k"),
        ("EXPIRE", "k", -1, "GT"),
        ("EXISTS", "k"),
        ("EXPIRE", "k", -1, "LT"),  # no TTL counts as infinite: LT passes and deletes
        ("EXISTS", "k"),
        ("SET", "k", "v"),
        ("EXPIRE", "k", 100),
        ("EXPIRE", "k", -1, "NX"),
        ("EXPIRE", "k", 0, "LT"),
        ("EXISTS", "k"),
    )


def test_expire_values(diff: Differential) -> None:
    now_s = int(time.time())
    run(
        diff,
        ("SET", "k", "v"),
        ("EXPIRE", "k", 100), ("TTL", "k"),
        ("PEXPIRE", "k", 200_000), ("TTL", "k"),
        ("EXPIREAT", "k", now_s + 3000), ("EXPIRETIME", "k"), ("PEXPIRETIME", "k"),
        ("PEXPIREAT", "k", now_s * 1000 + 123_456), ("PEXPIRETIME", "k"), ("EXPIRETIME", "k"),
        ("PEXPIREAT", "k", now_s * 1000 + 123_499), ("EXPIRETIME", "k"),
        ("PEXPIREAT", "k", now_s * 1000 + 123_500), ("EXPIRETIME", "k"),
        ("PEXPIREAT", "k", "9223372036854775806"), ("PEXPIRETIME", "k"), ("EXPIRETIME", "k"),
    )
    close_ms(diff, "PTTL", "k", tolerance=10**9)
    diff.call("PEXPIRE", "k", 100_000)
    close_ms(diff, "PTTL", "k")


@pytest.mark.parametrize("name", ["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"])
def test_ttl_family(diff3: Differential, name: str) -> None:
    run(diff3, (name, "missing"), ("SET", "k", "v"), (name, "k"), (name,), (name, "k", "x"))


def test_ttl_rounds_to_the_nearest_second(diff: Differential) -> None:
    run(diff, ("SET", "k", "v"), ("PEXPIRE", "k", 10_400), ("TTL", "k"),
        ("PEXPIRE", "k", 10_700), ("TTL", "k"))


def test_persist(diff: Differential) -> None:
    run(
        diff,
        ("PERSIST", "missing"),
        ("SET", "k", "v"),
        ("PERSIST", "k"),
        ("EXPIRE", "k", 100),
        ("PERSIST", "k"),
        ("TTL", "k"),
        ("GET", "k"),
        ("PERSIST", "k"),
        ("PERSIST",),
    )


def test_expire_keeps_the_value(diff: Differential) -> None:
    for key in BINARY_KEYS:
        run(diff, ("SET", key, b"\x00" + key), ("EXPIRE", key, 100), ("GET", key),
            ("PERSIST", key), ("GET", key))


def test_key_expires(diff: Differential) -> None:
    run(diff, ("SET", "k", "v"), ("PEXPIRE", "k", 50))
    time.sleep(0.12)
    run(diff, ("GET", "k"), ("TTL", "k"), ("DBSIZE",), ("KEYS", "*"), ("RANDOMKEY",))


# OBJECT ----------------------------------------------------------------------------------

ENCODING_VALUES = [b"v", b"123", b"-5", b"0", b"9999", b"10000", b"-0", b"01", b" 1", b"1.5",
                   b"x" * 44, b"x" * 45, b"12345678901234567890", b"1234567890123456789",
                   b"-9223372036854775808", b"9223372036854775808", b"", b"\x00"]


@pytest.mark.parametrize("value", ENCODING_VALUES)
def test_object_encoding_and_refcount(diff3: Differential, value: bytes) -> None:
    diff3.call("SET", "k", value)
    diff3.call("OBJECT", "ENCODING", "k")
    diff3.call("OBJECT", "REFCOUNT", "k")


def test_object(diff3: Differential) -> None:
    run(
        diff3,
        ("OBJECT", "ENCODING", "missing"),
        ("OBJECT", "REFCOUNT", "missing"),
        ("OBJECT", "FREQ", "missing"),
        ("SET", "k", "v"),
        ("OBJECT", "FREQ", "k"),
        ("OBJECT", "encoding", "k"),
        ("OBJECT",),
        ("OBJECT", "ENCODING"),
        ("OBJECT", "ENCODING", "k", "x"),
        ("OBJECT", "HELP", "x"),
        ("OBJECT", "nosuch"),
    )


def test_object_help(r: redis.Redis) -> None:
    lines = r.execute_command("OBJECT", "HELP")  # type: ignore[no-untyped-call]
    text = [line.decode() if isinstance(line, bytes) else line for line in lines]
    assert text[0].startswith("OBJECT <subcommand>")
    assert "ENCODING <key>" in text and "HELP" in text


# Arity and databases ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("DEL",), ("UNLINK",), ("EXISTS",), ("TOUCH",), ("TYPE",), ("RENAME", "a"),
     ("RENAMENX", "a"), ("COPY", "a"), ("KEYS",), ("SCAN",), ("RANDOMKEY", "a"),
     ("DBSIZE", "a"), ("EXPIRE", "a"), ("PEXPIRE", "a"), ("EXPIREAT", "a"), ("PEXPIREAT", "a"),
     ("TTL",), ("PTTL",), ("EXPIRETIME",), ("PEXPIRETIME",), ("PERSIST",), ("MOVE", "a"),
     ("object", "encoding")],
)
def test_arity(diff: Differential, args: tuple[str, ...]) -> None:
    diff.call(*args)


def test_databases_are_separate(diff: Differential) -> None:
    run(
        diff,
        ("SET", "k", "db0"),
        ("SELECT", 3),
        ("EXISTS", "k"),
        ("SET", "k", "db3"),
        ("SET", "only3", "v"),
        ("KEYS", "only*"),
        ("RENAME", "k", "k2"),
        ("DEL", "k2"),
        ("SELECT", 0),
        ("GET", "k"),
        ("KEYS", "only*"),
        ("DBSIZE",),
    )


# COMMAND metadata ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["del", "unlink", "exists", "touch", "type", "rename", "renamenx", "copy", "move", "keys",
     "scan", "randomkey", "dbsize", "flushdb", "flushall", "expire", "pexpire", "expireat",
     "pexpireat", "ttl", "pttl", "expiretime", "pexpiretime", "persist", "object"],
)
def test_command_info(diff: Differential, name: str) -> None:
    ours, theirs = (parse(reply) for reply in diff.both("COMMAND", "INFO", name))
    # name, arity, flags, first key, last key, step, ACL categories: as Redis reports them.
    assert ours[0][:7] == theirs[0][:7]
    diff.both("HELLO", 3)
    ours, theirs = (parse(reply)[name.encode()] for reply in diff.both("COMMAND", "DOCS", name))
    for field_name in (b"summary", b"since", b"group", b"complexity", b"arguments"):
        assert ours.get(field_name) == theirs.get(field_name), field_name


# redis-py, sync and asyncio --------------------------------------------------------------


def test_redis_py_main_paths(r: redis.Redis) -> None:
    r.mset({b"a": b"1", b"b": b"2", b"\x00bin": b"3"})
    assert r.exists("a", "b", "nope", "a") == 3
    assert r.type("a") in (b"string", "string")
    assert r.rename("a", "c")
    assert not r.renamenx("b", "c")
    assert r.copy("c", "d")
    assert r.expire("d", 100)
    assert 99 <= r.ttl("d") <= 100
    assert r.persist("d")
    assert r.ttl("d") == -1
    assert r.pttl("nope") == -2
    assert sorted(r.keys("*")) == sorted([b"\x00bin", b"b", b"c", b"d"])
    assert set(r.scan_iter(match="[bc]", count=1)) == {b"b", b"c"}
    assert r.dbsize() == 4
    assert r.randomkey() in (b"\x00bin", b"b", b"c", b"d")
    assert r.delete("b", "c", "nope") == 2
    assert r.unlink("d") == 1
    assert r.expireat("\x00bin", int(time.time()) + 50)
    assert r.expiretime("\x00bin") >= int(time.time()) + 49
    assert r.object("encoding", "\x00bin") in (b"int", "int")
    assert r.flushdb()
    assert r.dbsize() == 0


def test_redis_py_expire_options(r: redis.Redis) -> None:
    r.set("k", "v")
    assert not r.expire("k", 100, xx=True)
    assert r.expire("k", 100, nx=True)
    assert not r.expire("k", 50, gt=True)
    assert r.expire("k", 50, lt=True)
    assert r.pexpire("k", 80_000, gt=True)
    with pytest.raises(redis.ResponseError, match="not compatible"):
        r.expire("k", 10, nx=True, xx=True)
    assert 79_000 < r.pttl("k") <= 80_000


def test_redis_py_errors(r: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="no such key"):
        r.rename("nope", "x")
    r.set("a", "1")
    with pytest.raises(redis.ResponseError, match="source and destination objects are the same"):
        r.copy("a", "a")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.move("a", 1000)
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        r.scan(cursor="x")  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_asyncio(respkv_port: int, protocol: int) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis(port=respkv_port, protocol=protocol)
        try:
            await client.mset({f"k{i}": i for i in range(50)})
            assert await client.exists("k1", "k2", "zz") == 2
            assert await client.rename("k1", "renamed")
            assert await client.expire("renamed", 30)
            assert 29 <= await client.ttl("renamed") <= 30
            seen = {key async for key in client.scan_iter(match="k*", count=7)}
            assert seen == {f"k{i}".encode() for i in range(50) if i != 1}
            assert len(await client.keys("k?")) == 9
            assert await client.delete(*[f"k{i}" for i in range(10)]) == 9
            assert await client.dbsize() == 41
            assert await client.move("renamed", 2)
            assert await client.flushall()
        finally:
            await client.aclose()

    asyncio.run(scenario())


@pytest.fixture
def db2(respkv_port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=respkv_port, db=2)
    yield client
    client.close()


def test_redis_py_other_database(r: redis.Redis, db2: redis.Redis) -> None:
    r.set("k", "zero")
    assert r.copy("k", "k", destination_db="2")
    assert db2.get("k") == b"zero"
    assert db2.move("k", 0) == 0  # k exists in db 0
    db2.delete("k")
    assert r.move("k", 2)
    assert db2.get("k") == b"zero" and r.exists("k") == 0
