"""Tests of the string commands (respkv/commands/strings.py).

Three layers, strongest last:
- in-process: the handlers on a real Node driven by a ManualClock, so expiry arithmetic is
  exact to the millisecond, keyspace statistics and the proto-max-bulk-len limit are checked
  without a 512 MB value, and every call proves the handler never suspends;
- the x87 long-double emulation behind INCRBYFLOAT, against values redis-server 7 printed and
  against Python's exact double formatting;
- differential: the same commands sent to respkv and to redis-server, replies compared byte
  for byte in RESP2 and RESP3, then redis-py (sync and asyncio) on the main paths.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.clock import ManualClock
from cluster.node import Node, NodeOptions
from respkv.commands.args import INT64_MAX, INT64_MIN
from respkv.commands.strings import (
    add_long_double,
    format_long_double,
    parse_long_double,
)
from respkv.dispatch import resolve
from respkv.replies import OK, CommandError
from respkv.server_state import Stats
from tests.conftest import Differential
from tests.inprocess import HandlerRunner
from tests.inprocess import finish as _drive

# In-process harness ---------------------------------------------------------------------------




@dataclass
class _Config:
    proto_max_bulk_len: int = 512 * 1024 * 1024


@dataclass
class _Server:
    stats: Stats = field(default_factory=Stats)
    config: _Config = field(default_factory=_Config)


class _Client:
    """The attributes of respkv.client.Client that the string handlers use."""

    def __init__(self, node: Node, server: _Server) -> None:
        self.node = node
        self.server = server
        self.db = 0
        self.resp = 2


class Local(HandlerRunner):
    def __init__(self, node: Node, clock: ManualClock) -> None:
        self.node = node
        self.clock = clock
        self.server = _Server()
        self.client = _Client(node, self.server)

    def expire_at(self, key: bytes | str) -> int | None:
        """The stored absolute expiry of key (0 = none), None if the key is missing."""
        entry = _drive(self.node.get(0, key if isinstance(key, bytes) else key.encode()))
        return None if entry is None else entry.expire_at_ms

    @property
    def now(self) -> int:
        return self.clock.wall_ms()

    def hits_misses(self) -> tuple[int, int]:
        return self.server.stats.keyspace_hits, self.server.stats.keyspace_misses


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    clock = ManualClock(wall_ms=1_700_000_000_000)
    node = Node.open(str(tmp_path / "node"), NodeOptions(), clock)
    yield Local(node, clock)
    _drive(node.close())


INVALID_SET = "ERR invalid expire time in 'set' command"


def test_set_replies_and_options(local: Local) -> None:
    assert local("SET", "k", "v") is OK
    assert local("GET", "k") == b"v"
    assert local("SET", "k", "w", "NX") is None
    assert local("SET", "k", "w", "XX") is OK
    assert local("SET", "other", "w", "XX") is None
    assert local("GET", "other") is None
    assert local("SET", "k", "x", "GET") == b"w"
    assert local("SET", "new", "x", "GET") is None
    assert local("GET", "new") == b"x"
    # NX with GET (allowed since Redis 7): the old value, and no write.
    assert local("SET", "k", "y", "NX", "GET") == b"x"
    assert local("GET", "k") == b"x"
    assert local("SET", "k", "z", "XX", "GET") == b"x"
    assert local("SETNX", "k", "a") == 0
    assert local("SETNX", "fresh", "a") == 1
    assert local("GETSET", "k", "g") == b"z"
    assert local("GETSET", "nothing", "g") is None
    assert local("GETDEL", "k") == b"g"
    assert local("GETDEL", "k") is None
    assert local("GET", "k") is None


def test_set_option_conflicts(local: Local) -> None:
    syntax = "ERR syntax error"
    for args in (
        ("NX", "XX"), ("XX", "NX"), ("EX", "1", "PX", "1"), ("PX", "1", "EXAT", "1"),
        ("EXAT", "1", "PXAT", "1"), ("KEEPTTL", "EX", "1"), ("PX", "1", "KEEPTTL"),
        ("EX",), ("PERSIST",), ("BOGUS",), ("",), ("NX", "NXX"), ("GETT",),
    ):
        assert local.error("SET", "k", "v", *args) == syntax, args
    assert local.error("SET", "k", "v", "EX", "NX") == "ERR value is not an integer or out of range"
    # Repeats are fine and the last expiry wins.
    assert local("SET", "k", "v", "NX", "NX", "GET", "GET") is None
    assert local("SET", "k", "v", "EX", "10", "EX", "20") is OK
    assert local.expire_at("k") == local.now + 20_000
    # Options are C strings: they end at the first NUL byte.
    assert local("SET", "k", "w", b"xx\0junk") is OK
    assert local.expire_at("k") == 0


def test_set_expiry_arithmetic(local: Local) -> None:
    now = local.now
    local("SET", "k", "v", "EX", "10")
    assert local.expire_at("k") == now + 10_000
    local("SET", "k", "v", "PX", "1234")
    assert local.expire_at("k") == now + 1234
    local("SET", "k", "v", "EXAT", str(now // 1000 + 100))
    assert local.expire_at("k") == (now // 1000 + 100) * 1000
    local("SET", "k", "v", "PXAT", str(now + 777))
    assert local.expire_at("k") == now + 777
    local("SET", "k", "w", "KEEPTTL")
    assert local.expire_at("k") == now + 777
    assert local("SET", "k", "x", "NX", "EX", "5") is None  # refused: TTL untouched
    assert local.expire_at("k") == now + 777
    local("SET", "k", "y")
    assert local.expire_at("k") == 0
    local("SETEX", "k", "3", "v")
    assert local.expire_at("k") == now + 3000
    local("GETSET", "k", "v")
    assert local.expire_at("k") == 0
    local("PSETEX", "k", "30", "v")
    assert local.expire_at("k") == now + 30
    local("MSET", "k", "v", "other", "o")
    assert local.expire_at("k") == 0


def test_expire_time_limits(local: Local) -> None:
    now = local.now
    for bad in ("0", "-1", str(INT64_MIN)):
        for opt in ("EX", "PX", "EXAT", "PXAT"):
            assert local.error("SET", "k", "v", opt, bad) == INVALID_SET
    # The largest relative times that still fit in a signed 64-bit absolute time.
    assert local("SET", "k", "v", "PX", str(INT64_MAX - now)) is OK
    assert local.expire_at("k") == INT64_MAX
    assert local.error("SET", "k", "v", "PX", str(INT64_MAX - now + 1)) == INVALID_SET
    seconds = (INT64_MAX - now) // 1000
    assert local("SET", "k", "v", "EX", str(seconds)) is OK
    assert local.error("SET", "k", "v", "EX", str(seconds + 1)) == INVALID_SET
    # Absolute times only need their conversion to milliseconds to fit.
    assert local("SET", "k", "v", "EXAT", str(INT64_MAX // 1000)) is OK
    assert local.expire_at("k") == INT64_MAX // 1000 * 1000
    assert local.error("SET", "k", "v", "EXAT", str(INT64_MAX // 1000 + 1)) == INVALID_SET
    assert local("SET", "k", "v", "PXAT", str(INT64_MAX)) is OK
    assert local.error("SETEX", "k", str(INT64_MAX), "v") == (
        "ERR invalid expire time in 'setex' command"
    )
    assert local.error("PSETEX", "k", "0", "v") == "ERR invalid expire time in 'psetex' command"
    assert local.error("SETEX", "k", "x", "v") == "ERR value is not an integer or out of range"


def test_set_in_the_past_leaves_nothing_visible(local: Local) -> None:
    local("SET", "k", "old")
    assert local("SET", "k", "v", "PXAT", str(local.now - 1), "GET") == b"old"
    assert local("GET", "k") is None
    assert local("SET", "k", "v", "EXAT", "1") is OK
    assert local.expire_at("k") is None


def test_read_modify_write_keeps_ttl(local: Local) -> None:
    deadline = local.now + 50_000
    cases = [
        ("APPEND", "s", "tail"), ("SETRANGE", "s", "1", "XY"), ("INCR", "n"), ("DECR", "n"),
        ("INCRBY", "n", "5"), ("DECRBY", "n", "7"), ("INCRBYFLOAT", "n", "0.5"),
    ]
    for command in cases:
        key = command[1]
        local("SET", key, "10", "PXAT", str(deadline))
        local(*command)
        assert local.expire_at(key) == deadline, command
    local("SET", "s", "abc", "PXAT", str(deadline))
    local("SETRANGE", "s", "1", "")  # writes nothing
    assert local.expire_at("s") == deadline


def test_expired_key_behaves_as_missing(local: Local) -> None:
    def expiring(key: str, value: str = "5") -> None:
        local("SET", key, value, "PX", "100")

    for key in ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j"):
        expiring(key)
    local.clock.advance(0.1)  # exactly at the deadline: expired (Redis: when <= now)
    assert local("GET", "a") is None
    assert local("STRLEN", "a") == 0
    assert local("GETRANGE", "a", "0", "-1") == b""
    assert local("MGET", "a", "b") == [None, None]
    assert local("APPEND", "b", "xy") == 2
    assert local.expire_at("b") == 0
    assert local("INCR", "c") == 1
    assert local.expire_at("c") == 0
    assert local("INCRBYFLOAT", "d", "1.5") == b"1.5"
    assert local("SETNX", "e", "new") == 1
    assert local("SET", "f", "new", "XX") is None
    assert local("SET", "g", "new", "KEEPTTL") is OK
    assert local.expire_at("g") == 0
    assert local("SETRANGE", "h", "2", "x") == 3
    assert local("GET", "h") == b"\0\0x"
    assert local("MSETNX", "i", "1", "j", "2") == 1
    assert local("GETDEL", "a") is None
    assert local("GETEX", "a", "PERSIST") is None


def test_getex(local: Local) -> None:
    now = local.now
    local("SET", "k", "v")
    assert local("GETEX", "k") == b"v"
    assert local.expire_at("k") == 0
    assert local("GETEX", "k", "EX", "10") == b"v"
    assert local.expire_at("k") == now + 10_000
    assert local("GETEX", "k", "PX", "10") == b"v"
    assert local.expire_at("k") == now + 10
    assert local("GETEX", "k", "EXAT", str(now // 1000 + 60)) == b"v"
    assert local.expire_at("k") == (now // 1000 + 60) * 1000
    assert local("GETEX", "k", "PXAT", str(now + 5)) == b"v"
    assert local.expire_at("k") == now + 5
    assert local("GETEX", "k") == b"v"
    assert local.expire_at("k") == now + 5  # no option: the TTL stays
    assert local("GETEX", "k", "PERSIST") == b"v"
    assert local.expire_at("k") == 0
    assert local("GETEX", "k", "PERSIST", "PERSIST") == b"v"
    # An absolute time already reached deletes the key (after replying with it).
    assert local("GETEX", "k", "PXAT", str(now)) == b"v"
    assert local.expire_at("k") is None
    # A missing key replies nil before the expire time is looked at.
    assert local("GETEX", "k", "EX", "0") is None
    assert local("GETEX", "k", "EX", "abc") is None
    local("SET", "k", "v")
    assert local.error("GETEX", "k", "EX", "0") == "ERR invalid expire time in 'getex' command"
    assert local.error("GETEX", "k", "PX", str(INT64_MAX)) == (
        "ERR invalid expire time in 'getex' command"
    )
    for args in (("EX",), ("PERSIST", "EX", "1"), ("EX", "1", "PERSIST"), ("KEEPTTL",),
                 ("NX",), ("XX",), ("GET",), ("EX", "1", "PX", "1"), ("FOO",)):
        assert local.error("GETEX", "k", *args) == "ERR syntax error", args
        assert local.error("GETEX", "missing", *args) == "ERR syntax error", args


def test_counters(local: Local) -> None:
    assert local("INCR", "n") == 1
    assert local("INCRBY", "n", "41") == 42
    assert local("DECR", "n") == 41
    assert local("DECRBY", "n", "-9") == 50
    assert local("GET", "n") == b"50"
    local("SET", "n", str(INT64_MAX))
    assert local.error("INCR", "n") == "ERR increment or decrement would overflow"
    assert local("GET", "n") == str(INT64_MAX).encode()
    assert local("INCRBY", "n", str(INT64_MIN)) == -1
    local("SET", "n", str(INT64_MIN))
    assert local.error("DECR", "n") == "ERR increment or decrement would overflow"
    assert local.error("DECRBY", "n", str(INT64_MIN)) == "ERR decrement would overflow"
    assert local("INCRBY", "m", str(INT64_MIN)) == INT64_MIN
    not_integer = "ERR value is not an integer or out of range"
    for value in ("", " 1", "1 ", "+1", "01", "-0", "1.0", "abc", "1\0", "9223372036854775808"):
        local("SET", "bad", value)
        assert local.error("INCR", "bad") == not_integer, value
    assert local.error("INCRBY", "n", "1.5") == not_integer
    assert local.error("DECRBY", "n", "") == not_integer


def test_incrbyfloat(local: Local) -> None:
    local("SET", "f", "10.5")
    assert local("INCRBYFLOAT", "f", "0.1") == b"10.6"
    assert local("GET", "f") == b"10.6"
    assert local("INCRBYFLOAT", "g", "5.0e3") == b"5000"
    local("SET", "inf", "inf")
    assert local.error("INCRBYFLOAT", "inf", "1") == "ERR increment would produce NaN or Infinity"
    assert local.error("INCRBYFLOAT", "g", "-inf") == "ERR increment would produce NaN or Infinity"
    assert local.error("INCRBYFLOAT", "g", "nan") == "ERR value is not a valid float"
    local("SET", "empty", "")
    assert local.error("INCRBYFLOAT", "empty", "1") == "ERR value is not a valid float"
    assert local("GET", "g") == b"5000"


def test_append_setrange_getrange(local: Local) -> None:
    assert local("APPEND", "a", "") == 0
    assert local("GET", "a") == b""  # an empty APPEND still creates the key
    assert local("APPEND", "a", "x\0\r\n") == 4
    assert local("SETRANGE", "r", "3", "ab") == 5
    assert local("GET", "r") == b"\0\0\0ab"
    assert local("SETRANGE", "r", "1", "Z") == 5
    assert local("SETRANGE", "r", "4", "XYZ") == 7
    assert local("GET", "r") == b"\0Z\0aXYZ"
    assert local("SETRANGE", "none", "5", "") == 0
    assert local("GET", "none") is None
    assert local.error("SETRANGE", "r", "-1", "x") == "ERR offset is out of range"
    assert local("GETRANGE", "r", "1", "3") == b"Z\0a"
    assert local("SUBSTR", "r", "-3", "-1") == b"XYZ"
    assert local("GETRANGE", "r", "-1", "-5") == b""
    assert local("GETRANGE", "r", str(INT64_MIN), str(INT64_MAX)) == b"\0Z\0aXYZ"
    assert local("GETRANGE", "missing", "0", "-1") == b""


def test_proto_max_bulk_len(local: Local) -> None:
    local.server.config.proto_max_bulk_len = 100
    too_long = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    local("SET", "a", "x" * 60)
    assert local("APPEND", "a", "y" * 40) == 100
    assert local.error("APPEND", "a", "z") == too_long
    assert local("SETRANGE", "s", "99", "x") == 100
    assert local.error("SETRANGE", "s", "100", "x") == too_long
    assert local.error("SETRANGE", "t", "99", "xy") == too_long
    assert local.error("SETRANGE", "t", str(INT64_MAX), "x") == too_long
    assert local("GET", "t") is None
    # Nothing to write is checked before the size.
    assert local("SETRANGE", "t", str(INT64_MAX), "") == 0
    assert local("SETRANGE", "s", str(INT64_MAX), "") == 100


def test_mset_and_msetnx(local: Local, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[list[tuple[bytes, bytes | None, int]]] = []
    write_many = local.node.write_many

    async def recording(db: int, ops: list[tuple[bytes, bytes | None, int]]) -> None:
        batches.append(list(ops))
        await write_many(db, ops)

    monkeypatch.setattr(local.node, "write_many", recording)
    assert local("MSET", "a", "1", "b", "2", "a", "3") is OK
    assert batches == [[(b"a", b"3", 0), (b"b", b"2", 0)]]
    assert local("MGET", "a", "b", "c") == [b"3", b"2", None]
    assert local("MSETNX", "c", "1", "a", "9") == 0
    assert local("GET", "c") is None
    assert local("MSETNX", "c", "1", "d", "2") == 1
    assert len(batches) == 2
    assert local.error("MSET", "a", "1", "b") == "ERR wrong number of arguments for 'mset' command"
    assert local.error("MSETNX", "a") == "ERR wrong number of arguments for 'msetnx' command"


# What redis-server 7.0 counts, measured on it: (command, hits, misses) on a db holding "a".
_LOOKUP_STATS = [
    (("GET", "a"), 1, 0), (("GET", "z"), 0, 1), (("MGET", "a", "z", "a"), 2, 1),
    (("STRLEN", "a"), 1, 0), (("STRLEN", "z"), 0, 1), (("GETRANGE", "a", "0", "1"), 1, 0),
    (("GETRANGE", "z", "0", "1"), 0, 1), (("SUBSTR", "a", "0", "1"), 1, 0),
    (("GETRANGE", "a", "x", "1"), 0, 0), (("GETEX", "a"), 1, 0), (("GETEX", "z"), 0, 1),
    (("GETEX", "a", "PERSIST"), 1, 0), (("GETEX", "a", "EX", "0"), 1, 0),
    (("GETEX", "a", "FOO"), 0, 0), (("GETDEL", "z"), 0, 1), (("GETSET", "z", "1"), 0, 1),
    (("GETSET", "a", "1"), 1, 0), (("SET", "a", "1", "GET"), 1, 0),
    (("SET", "y", "1", "GET"), 0, 1), (("SET", "a", "1"), 0, 0), (("SET", "a", "1", "NX"), 0, 0),
    (("SET", "a", "1", "XX"), 0, 0), (("SETNX", "a", "1"), 0, 0), (("APPEND", "a", "1"), 0, 0),
    (("SETRANGE", "a", "0", "1"), 0, 0), (("INCR", "i"), 0, 0), (("INCRBY", "i", "1"), 0, 0),
    (("INCRBYFLOAT", "i", "1"), 0, 0), (("MSETNX", "a", "1"), 0, 0), (("MSET", "a", "1"), 0, 0),
    (("GETDEL", "a"), 1, 0),
]


def test_keyspace_statistics(local: Local) -> None:
    for command, hits, misses in _LOOKUP_STATS:
        local("SET", "a", "1")
        for key in (b"z", b"y"):
            _drive(local.node.delete(0, key))
        before = local.hits_misses()
        try:
            local(*command)
        except CommandError:
            pass
        after = local.hits_misses()
        assert (after[0] - before[0], after[1] - before[1]) == (hits, misses), command


# Long doubles -----------------------------------------------------------------------------------

# (stored value or None, increment, reply) as redis-server 7.0.15 on x86-64 gave them.
_INCRBYFLOAT_CASES = [
    ("10.5", "0.1", b"10.6"),
    (None, "5.0e3", b"5000"),
    (None, "1e30", b"1000000000000000000024696061952"),
    (None, "123456789012345678901234567890.123", b"123456789012345678899921813504"),
    (None, "0.000003814697265625", b"0.00000381469726562"),  # an exact tie: to even
    (None, "-1e-20", b"0"),  # "-0.00000000000000000" loses its sign
    (None, "-0", b"0"),
    (None, "1e-4940", b"0"),  # subnormal: accepted
    (None, "0x1p3", b"8"),
    (None, "0X.8P1", b"1"),
    (None, "+.5", b"0.5"),
    (None, "5.", b"5"),
    ("0.1", "0.2", b"0.3"),
    (None, "1.1e-17", b"0.00000000000000001"),
    (None, "1.5e-17", b"0.00000000000000002"),
    (None, "5e-18", b"0"),
    ("3", "-3.5", b"-0.5"),
    (None, "0x1p-16445", b"0"),
]

_NOT_FLOAT = [
    "", " 1", "1 ", "\x00", "1.5\x00", "abc", ".", "1e", "1e+", "0x", "nan", "-nan",
    "nan(123)", "infx", "1e5000", "1e-5000", "1e-4951", "0x1p-16446",
    "1.18973149535723176508e+4932", "1" * 5120, "1,5", "--1", "+-1", "0x1p", "e5",
]


@pytest.mark.parametrize(("value", "increment", "expected"), _INCRBYFLOAT_CASES)
def test_long_double_matches_redis(value: str | None, increment: str, expected: bytes) -> None:
    current = (0, 0) if value is None else parse_long_double(value.encode())
    step = parse_long_double(increment.encode())
    assert current is not None and step is not None
    assert format_long_double(add_long_double(current, step)) == expected


@pytest.mark.parametrize("text", _NOT_FLOAT)
def test_long_double_refuses(text: str) -> None:
    with pytest.raises(CommandError, match=r"^ERR value is not a valid float$"):
        parse_long_double(text.encode())


def test_long_double_extremes() -> None:
    assert parse_long_double(b"inf") is None
    assert parse_long_double(b"-Infinity") is None
    biggest = parse_long_double(b"0x1.fffffffffffffffep16383")
    assert biggest == ((1 << 64) - 1, 16383 - 63)
    assert parse_long_double(b"1.18973149535723176502e+4932") == biggest
    text = format_long_double(biggest)
    assert len(text) == 4933 and text.startswith(b"118973149535723176502126385303")
    assert parse_long_double(text) == biggest  # more digits than Python converts at once
    with pytest.raises(CommandError, match="NaN or Infinity"):
        format_long_double(add_long_double(biggest, biggest))
    assert parse_long_double(b"0." + b"1" * 5117) is not None  # 5119 bytes: the most allowed
    with pytest.raises(CommandError):
        parse_long_double(b"0." + b"1" * 5118)
    assert parse_long_double(b"0." + b"0" * 5000 + b"1e5000") == parse_long_double(b"0.1")
    with pytest.raises(CommandError):
        parse_long_double(b"1e-99999999999999999999999")
    with pytest.raises(CommandError):
        parse_long_double(b"1e99999999999999999999999")
    assert parse_long_double(b"0e99999999999999999999999") == (0, 0)


def _strip(text: str) -> bytes:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return b"0" if text == "-0" else text.encode()


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_long_double_prints_doubles_exactly(x: float) -> None:
    """Every double is a long double; "%.17f" in Python is exact and rounds half to even."""
    value = parse_long_double(x.hex().encode())
    assert value is not None
    assert format_long_double(value) == _strip(f"{x:.17f}")
    if x != 0:
        assert format_long_double(add_long_double(value, (0, 0))) == _strip(f"{x:.17f}")


# Differential: respkv and redis-server side by side --------------------------------------------


def run(diff: Differential, *commands: tuple[bytes | str | int, ...]) -> None:
    for command in commands:
        diff.call(*command)


def ttls(diff: Differential, key: str, command: str = "PTTL") -> tuple[int, int]:
    mine, ref = diff.both(command, key)
    assert mine[:1] == b":" and ref[:1] == b":", (mine, ref)
    return int(mine[1:]), int(ref[1:])


def test_get_set_basics(diff3: Differential) -> None:
    run(
        diff3,
        ("GET", "k"), ("SET", "k", "v"), ("GET", "k"), ("get", "k"), ("SET", "k", ""),
        ("GET", "k"), ("SET", "", "empty key"), ("GET", ""),
        ("SET", b"\x00\xff\r\nkey", b"\r\n\x00\xff value \r\n"), ("GET", b"\x00\xff\r\nkey"),
        ("STRLEN", b"\x00\xff\r\nkey"), ("SET", "n", "12345"), ("GET", "n"),
    )


def test_set_conditions(diff3: Differential) -> None:
    run(
        diff3,
        ("SET", "k", "v", "XX"), ("GET", "k"), ("SET", "k", "v", "NX"),
        ("SET", "k", "w", "NX"), ("SET", "k", "w", "xx"), ("GET", "k"),
        ("SET", "k", "x", "GET"), ("SET", "k2", "x", "GET"), ("SET", "k", "y", "NX", "GET"),
        ("SET", "k3", "y", "NX", "GET"), ("SET", "k4", "y", "XX", "GET"), ("GET", "k4"),
        ("SET", "k", "z", "XX", "GET"), ("GET", "k"), ("SET", "k", "v", "nx", "nx"),
        ("SET", "k", "a", "GET", "GET"), ("SET", "k", "b", b"xx\x00junk"), ("GET", "k"),
        ("SETNX", "k", "c"), ("SETNX", "n1", "c"), ("GET", "n1"),
        ("GETSET", "k", "new"), ("GETSET", "gs", "first"), ("GET", "gs"),
        ("GETDEL", "gs"), ("GETDEL", "gs"), ("GET", "gs"),
    )


@pytest.mark.parametrize(
    "options",
    [
        ("NX", "XX"), ("XX", "NX"), ("EX", "10", "PX", "10"), ("PX", "10", "EX", "10"),
        ("EXAT", "10", "PXAT", "10"), ("KEEPTTL", "EX", "10"), ("EX", "10", "KEEPTTL"),
        ("KEEPTTL", "PXAT", "10"), ("EX",), ("PX",), ("EXAT",), ("PXAT",), ("PERSIST",),
        ("FOO",), ("",), ("EX", "NX"), ("EX", "abc", "NX", "XX"), ("EX", "0"), ("EX", "-1"),
        ("PX", "0"), ("EXAT", "0"), ("PXAT", "-5"), ("EX", ""), ("EX", "+10"), ("EX", "010"),
        ("EX", "1.5"), ("EX", "10\x00"), ("EX", "9223372036854775807"),
        ("EX", "9223372036854775"), ("EX", "9223372036854770"), ("PX", "9223372036854775807"),
        ("EX", "9223372036854775808"), ("GET", "EX", "0"), ("GET", "NX", "BAD"),
        ("EX", "10", "EX", "abc"), ("NX", "NXX"), ("KEEPTTL", "KEEPTTL"), ("keepttl", "get"),
        ("EXAT", "9223372036854775"), ("PXAT", "9223372036854775807"), ("EXAT", "1"),
        ("PXAT", "1", "GET"), ("EX", "100", "NX", "GET"), ("px", "100000", "xx", "get"),
        ("ex", "10"), ("Ex", "10"), ("px", "0"), ("pX", "-3"), ("ex", "9223372036854776"),
        ("EX\x00", "10"), ("px", "1.5"),
    ],
)
def test_set_option_combinations(diff3: Differential, options: tuple[str, ...]) -> None:
    run(diff3, ("SET", "k", "old"), ("SET", "k", "v", *options), ("GET", "k"))
    run(diff3, ("SET", "missing", "v", *options), ("GET", "missing"), ("EXISTS", "missing"))


def test_set_ttls(diff: Differential) -> None:
    now_ms = int(time.time() * 1000)
    for options, low, high in [
        (("EX", "100"), 98_000, 100_000),
        (("PX", "100000"), 98_000, 100_000),
        (("EXAT", str(now_ms // 1000 + 200)), 190_000, 200_000),
        (("PXAT", str(now_ms + 300_000)), 290_000, 300_000),
    ]:
        run(diff, ("SET", "k", "v", *options))
        for value in ttls(diff, "k"):
            assert low <= value <= high, (options, value)
        run(diff, ("SET", "k", "w", "KEEPTTL"), ("GET", "k"))
        for value in ttls(diff, "k"):
            assert low <= value <= high, options
        run(diff, ("SET", "k", "x"), ("PTTL", "k"))  # cleared: -1 on both
    run(diff, ("SET", "k", "v", "PXAT", "9223372036854775807"))
    mine, ref = ttls(diff, "k", "TTL")
    assert abs(mine - ref) <= 2 and mine > 9_000_000_000_000_000
    run(diff, ("SETEX", "se", "100", "v"), ("GET", "se"))
    assert all(98 <= t <= 100 for t in ttls(diff, "se", "TTL"))
    run(diff, ("PSETEX", "pse", "100000", "v"), ("GET", "pse"))
    assert all(98_000 <= t <= 100_000 for t in ttls(diff, "pse"))
    run(diff, ("GETSET", "se", "w"), ("TTL", "se"), ("MSET", "pse", "1"), ("TTL", "pse"))


def test_short_expiry_is_honoured(diff: Differential) -> None:
    run(
        diff, ("SET", "a", "1", "PX", "60"), ("PSETEX", "b", "60", "2"),
        ("SET", "c", "3"), ("GETEX", "c", "PX", "60"), ("SET", "d", "7", "PX", "60"),
    )
    time.sleep(0.15)
    run(
        diff, ("GET", "a"), ("GET", "b"), ("GET", "c"), ("MGET", "a", "b", "c"),
        ("STRLEN", "a"), ("APPEND", "b", "x"), ("TTL", "b"), ("INCR", "d"), ("TTL", "d"),
        ("SET", "a", "new", "XX"), ("SETNX", "c", "new"), ("GET", "c"),
    )


def test_setex_psetex(diff3: Differential) -> None:
    run(
        diff3,
        ("SETEX", "k", "100", "v"), ("GET", "k"), ("SETEX", "k", "0", "v"),
        ("SETEX", "k", "-1", "v"), ("SETEX", "k", "abc", "v"), ("SETEX", "k", "", "v"),
        ("SETEX", "k", "9223372036854775807", "v"), ("SETEX", "k", "9223372036854775", "v"),
        ("SETEX", "k", "10", "v", "extra"), ("SETEX", "k", "10"),
        ("PSETEX", "k", "100000", "w"), ("GET", "k"), ("PSETEX", "k", "0", "v"),
        ("PSETEX", "k", "9223372036854775807", "v"), ("PSETEX", "k", "1.5", "v"),
        ("psetex", "k"),
    )


def test_getex_differential(diff3: Differential) -> None:
    run(
        diff3,
        ("GETEX", "k"), ("GETEX", "k", "EX", "0"), ("GETEX", "k", "EX", "abc"),
        ("GETEX", "k", "PERSIST"), ("GETEX", "k", "FOO"), ("GETEX", "k", "EX"),
        ("SET", "k", "v"), ("GETEX", "k"), ("TTL", "k"), ("GETEX", "k", "EX", "100"),
        ("GETEX", "k", "EX", "0"), ("GETEX", "k", "EX", "-1"), ("GETEX", "k", "PX", "abc"),
        ("GETEX", "k", "PX", "9223372036854775807"), ("GETEX", "k", "EX", "9223372036854775"),
        ("GETEX", "k", "EXAT", "0"), ("GETEX", "k", "PERSIST", "EX", "1"),
        ("GETEX", "k", "EX", "1", "PERSIST"), ("GETEX", "k", "KEEPTTL"), ("GETEX", "k", "NX"),
        ("GETEX", "k", "XX"), ("GETEX", "k", "GET"), ("GETEX", "k", "EX", "1", "PX", "1"),
        ("GETEX", "k", "PERSIST", "PERSIST"), ("TTL", "k"),
        ("GETEX", "k", "ex", "100", "ex", "200"),
        ("GETEX", "k", "PERSIST"), ("TTL", "k"), ("GETEX", "k", "PXAT", "1"), ("EXISTS", "k"),
        ("GET", "k"), ("SET", "k", "v"), ("GETEX", "k", "EXAT", "1"), ("GET", "k"),
    )


def test_getex_ttls(diff: Differential) -> None:
    now_ms = int(time.time() * 1000)
    run(diff, ("SET", "k", "v"))
    for options, low, high in [
        (("EX", "100"), 98_000, 100_000),
        (("PX", "50000"), 48_000, 50_000),
        (("EXAT", str(now_ms // 1000 + 200)), 190_000, 200_000),
        (("PXAT", str(now_ms + 300_000)), 290_000, 300_000),
    ]:
        run(diff, ("GETEX", "k", *options))
        for value in ttls(diff, "k"):
            assert low <= value <= high, (options, value)
        run(diff, ("GETEX", "k"))
        for value in ttls(diff, "k"):
            assert low <= value <= high, (options, value)
    run(diff, ("GETEX", "k", "PERSIST"), ("PTTL", "k"))


def test_mget_mset_msetnx(diff3: Differential) -> None:
    run(
        diff3,
        ("MGET", "a"), ("MGET", "a", "b", "c"), ("MSET", "a", "1", "b", ""),
        ("MGET", "a", "b", "c", "a"), ("MSET", "a", "1", "a", "2"), ("GET", "a"),
        ("MSET", "a", "1", "b"), ("MSET", "a"), ("MSET",), ("MGET",),
        ("MSETNX", "a", "9", "c", "3"), ("GET", "c"), ("MSETNX", "c", "3", "d", "4"),
        ("MGET", "c", "d"), ("MSETNX", "e", "1", "e", "2"), ("GET", "e"),
        ("MSETNX", "f", "1", "g"), ("MSETNX", "f"),
        ("MSET", b"\x00", b"\xff", b"\r\n", b""), ("MGET", b"\x00", b"\r\n", b"nope"),
    )


def test_mset_replaces_ttl(diff: Differential) -> None:
    run(diff, ("SET", "a", "1", "EX", "100"), ("MSET", "a", "2", "b", "3"), ("TTL", "a"))
    run(diff, ("SET", "c", "1", "EX", "100"), ("MSETNX", "c", "2", "d", "3"), ("GET", "d"))
    assert all(98 <= t <= 100 for t in ttls(diff, "c", "TTL"))


def test_append_strlen(diff3: Differential) -> None:
    run(
        diff3,
        ("STRLEN", "a"), ("APPEND", "a", ""), ("EXISTS", "a"), ("STRLEN", "a"), ("GET", "a"),
        ("APPEND", "a", "abc"), ("APPEND", "a", b"\x00\r\n\xff"), ("GET", "a"),
        ("STRLEN", "a"), ("APPEND", "a", ""), ("APPEND", "n", "12"), ("INCR", "n"),
        ("APPEND", "n", "3"), ("GET", "n"), ("APPEND", "a"), ("STRLEN", "a", "b"),
    )


def test_append_keeps_ttl(diff: Differential) -> None:
    run(diff, ("SET", "a", "x", "EX", "100"), ("APPEND", "a", "y"), ("GET", "a"))
    assert all(98 <= t <= 100 for t in ttls(diff, "a", "TTL"))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0", "-1"), ("0", "0"), ("1", "3"), ("-3", "-1"), ("-1", "-5"), ("3", "2"),
        ("-100", "100"), ("5", "100"), ("100", "200"), ("-100", "-50"), ("-100", "-99"),
        ("0", "-100"), ("-5", "-5"), ("2", "-2"), ("-100", "-200"), ("-20", "-30"),
        ("-9223372036854775808", "9223372036854775807"),
        ("9223372036854775807", "9223372036854775807"),
        ("-9223372036854775808", "-9223372036854775808"),
        ("a", "1"), ("1", "b"), ("", "1"), ("1.0", "2"), ("9223372036854775808", "1"),
        ("+1", "2"), (" 1", "2"),
    ],
)
def test_getrange(diff3: Differential, start: str, end: str) -> None:
    run(
        diff3,
        ("SET", "s", b"Hello\x00World\r\n\xff"), ("SET", "e", ""), ("SET", "n", "1234"),
        ("GETRANGE", "s", start, end), ("GETRANGE", "e", start, end),
        ("GETRANGE", "n", start, end), ("GETRANGE", "missing", start, end),
        ("SUBSTR", "s", start, end),
    )


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        ("0", "abc"), ("0", ""), ("3", "xy"), ("10", "tail"), ("20", ""), ("5", b"\x00\r\n"),
        ("-1", "x"), ("-1", ""), ("abc", "x"), ("", "x"), ("1.5", "x"), ("+1", "x"),
        ("536870912", "a"), ("536870911", "ab"), ("536870911", ""), ("536870912", ""),
        ("9223372036854775807", "a"), ("9223372036854775807", ""),
        ("9223372036854775808", "a"), ("-9223372036854775808", "a"),
    ],
)
def test_setrange(diff3: Differential, offset: str, value: bytes | str) -> None:
    run(
        diff3,
        ("SET", "s", "Hello World"), ("SETRANGE", "s", offset, value), ("GET", "s"),
        ("SETRANGE", "missing", offset, value), ("GET", "missing"), ("EXISTS", "missing"),
        ("SET", "e", ""), ("SETRANGE", "e", offset, value), ("GET", "e"),
    )


def test_setrange_keeps_ttl_and_zero_pads(diff: Differential) -> None:
    run(
        diff, ("SET", "s", "abc", "EX", "100"), ("SETRANGE", "s", "6", "xyz"), ("GET", "s"),
        ("SETRANGE", "s", "1", ""), ("SETRANGE", "z", "3", "q"), ("GET", "z"), ("TTL", "z"),
    )
    assert all(98 <= t <= 100 for t in ttls(diff, "s", "TTL"))


def test_proto_max_bulk_len_differential(diff: Differential) -> None:
    """The smallest proto-max-bulk-len Redis accepts (1 MB) shows the limit cheaply."""
    original = diff.both("CONFIG", "GET", "proto-max-bulk-len")
    try:
        run(diff, ("CONFIG", "SET", "proto-max-bulk-len", "1048576"))
        run(
            diff, ("SETRANGE", "s", "1048575", "x"), ("STRLEN", "s"),
            ("SETRANGE", "s", "1048575", "xy"), ("SETRANGE", "t", "1048576", "x"),
            ("APPEND", "s", "z"), ("SET", "a", "x" * 1_048_000), ("APPEND", "a", "y" * 576),
            ("APPEND", "a", "y"), ("STRLEN", "a"),
        )
    finally:
        for conn, reply in ((diff.ours, original[0]), (diff.theirs, original[1])):
            value = reply.split(b"\r\n")[-2]
            conn.call("CONFIG", "SET", "proto-max-bulk-len", value)


def test_ten_megabyte_value(diff: Differential) -> None:
    big = bytes(range(256)) * 40960  # 10 MiB with every byte value, \0 \r \n included
    run(
        diff, ("SET", "big", big), ("STRLEN", "big"), ("GETRANGE", "big", "-10", "-1"),
        ("GETRANGE", "big", "5000000", "5000300"), ("APPEND", "big", b"\r\n"),
        ("SETRANGE", "big", str(len(big) + 10), b"\x00end"), ("STRLEN", "big"),
        ("GETRANGE", "big", "-20", "-1"),
    )
    mine, ref = diff.both("GET", "big")
    assert mine == ref
    header = b"$%d\r\n" % (len(big) + 14)
    assert mine[: len(header) + 8] == header + big[:8]
    run(diff, ("GETSET", "big", "small"), ("GET", "big"))


def test_incr_decr(diff3: Differential) -> None:
    run(
        diff3,
        ("INCR", "n"), ("INCR", "n"), ("DECR", "n"), ("DECR", "m"), ("INCRBY", "n", "10"),
        ("INCRBY", "n", "-100"), ("DECRBY", "n", "5"), ("DECRBY", "n", "-5"), ("GET", "n"),
        ("INCRBY", "n", "abc"), ("INCRBY", "n", "1.5"), ("INCRBY", "n", ""),
        ("INCRBY", "n", "9223372036854775808"), ("DECRBY", "n", "-9223372036854775808"),
        ("DECRBY", "n", "9223372036854775807"), ("INCRBY", "x", "-9223372036854775808"),
        ("DECR", "x"), ("INCR", "x"), ("SET", "x", "9223372036854775807"), ("INCR", "x"),
        ("DECRBY", "x", "-1"), ("INCRBY", "x", "-9223372036854775807"), ("GET", "x"),
        ("SET", "x", "-9223372036854775808"), ("DECR", "x"), ("INCRBY", "x", "-1"),
        ("INCRBY", "x", "9223372036854775807"), ("GET", "x"), ("INCR", b"\x00\r\n"),
        ("INCR",), ("INCRBY", "n"), ("DECRBY", "n", "1", "2"),
    )


@pytest.mark.parametrize(
    "value",
    ["", " 1", "1 ", "+1", "01", "-0", "0", "-1", "1.0", "1e3", "abc", b"1\x00",
     "9223372036854775808", "-9223372036854775809", "00", "0x10", "99999999999999999999"],
)
def test_incr_on_stored_values(diff: Differential, value: str | bytes) -> None:
    for command in (("INCR", "v"), ("DECR", "v"), ("INCRBY", "v", "3"), ("DECRBY", "v", "3")):
        run(diff, ("SET", "v", value), command, ("GET", "v"))


def test_counters_keep_ttl(diff: Differential) -> None:
    for command in (("INCR", "n"), ("DECRBY", "n", "2"), ("INCRBYFLOAT", "n", "1.5")):
        run(diff, ("SET", "n", "10", "EX", "100"), command)
        assert all(98 <= t <= 100 for t in ttls(diff, "n", "TTL")), command


@pytest.mark.parametrize(
    ("value", "increment"),
    [(v, i) for v, i, _ in _INCRBYFLOAT_CASES]
    + [
        (None, "1e100"), (None, "1.7976931348623157e308"), (None, "1.18973149535723176502e+4932"),
        (None, "0x1.fffffffffffffffep16383"), (None, "1E2"), ("inf", "1"), ("-inf", "1"),
        (None, "inf"), (None, "-Infinity"), ("1", "-inf"), (None, "3.0"), ("5", "0"),
        ("1e4000", "1e4000"), ("1e-4000", "1"), ("1.5", "-1.5"), ("0.1", "-0.3"),
    ]
    + [(None, text) for text in _NOT_FLOAT if len(text) < 200]
    + [(text, "1") for text in _NOT_FLOAT if len(text) < 200],
)
def test_incrbyfloat_differential(diff3: Differential, value: str | None, increment: str) -> None:
    if value is not None:
        run(diff3, ("SET", "f", value))
    run(diff3, ("INCRBYFLOAT", "f", increment), ("GET", "f"), ("INCRBYFLOAT", "f", "0.1"))


def test_incrbyfloat_random(diff: Differential) -> None:
    rng = random.Random(20240607)

    def number() -> str:
        kind = rng.random()
        if kind < 0.3:
            return repr(rng.uniform(-1e6, 1e6))
        if kind < 0.6:
            scale = 10 ** rng.randint(-40, 40)
            return f"{rng.uniform(-10, 10) * scale:.{rng.randint(0, 24)}e}"
        if kind < 0.8:
            return f"{rng.randint(-999, 999)}.{rng.randint(0, 10**18):0{rng.randint(1, 25)}d}"
        return hex(rng.randint(0, 2**70)) + rng.choice(["", f"p-{rng.randint(0, 90)}", ".8p3"])

    for _ in range(150):
        run(diff, ("SET", "f", number()), ("INCRBYFLOAT", "f", number()), ("GET", "f"))
    run(diff, ("SET", "f", "0"))
    for _ in range(100):
        run(diff, ("INCRBYFLOAT", "f", number()))


def test_arity_errors(diff: Differential) -> None:
    run(
        diff, ("GET",), ("GET", "a", "b"), ("SET", "k"), ("SETNX", "k"), ("GETSET", "k"),
        ("GETDEL",), ("GETEX",), ("STRLEN",), ("GETRANGE", "k", "0"), ("SUBSTR", "k"),
        ("SETRANGE", "k", "0"), ("INCRBYFLOAT", "k"), ("DECR",), ("APPEND", "k", "a", "b"),
    )


def test_keyspace_statistics_differential(diff: Differential) -> None:
    def counters() -> list[tuple[int, int]]:
        result = []
        for reply in diff.both("INFO", "stats"):
            fields = dict(
                line.split(b":", 1) for line in reply.split(b"\r\n") if b":" in line
            )
            result.append((int(fields[b"keyspace_hits"]), int(fields[b"keyspace_misses"])))
        return result

    for command, hits, misses in _LOOKUP_STATS:
        run(diff, ("SET", "a", "1"), ("DEL", "z", "y"))
        before = counters()
        diff.call(*command)
        after = counters()
        for (h0, m0), (h1, m1) in zip(before, after, strict=True):
            assert (h1 - h0, m1 - m0) == (hits, misses), command


def test_resp3_shapes(diff3: Differential) -> None:
    run(
        diff3, ("GET", "k"), ("MGET", "k", "k"), ("SET", "k", "v", "GET"),
        ("SET", "k", "w", "NX"), ("GETDEL", "nothing"), ("GETEX", "nothing"),
        ("GETSET", "x", "1"), ("INCRBYFLOAT", "fl", "1.5"), ("MSETNX", "k", "1"),
        ("SETNX", "k", "1"), ("GETRANGE", "nothing", "0", "1"), ("STRLEN", "nothing"),
    )


# redis-py ---------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_redis_py_sync(r: redis.Redis) -> None:
    assert r.set("k", b"v\x00\r\n\xff") is True
    assert r.get("k") == b"v\x00\r\n\xff"
    assert r.get("missing") is None
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True, get=True) == b"v\x00\r\n\xff"
    assert r.set("k", "x", ex=100) is True
    assert 98 <= r.ttl("k") <= 100
    assert r.set("k", "y", keepttl=True) is True
    assert 98 <= r.ttl("k") <= 100
    assert r.getex("k", persist=True) == b"y"
    assert r.ttl("k") == -1
    assert r.getex("k", px=50_000) == b"y"
    assert 48_000 <= r.pttl("k") <= 50_000
    assert r.setnx("k", "z") is False
    assert r.setex("e", 100, "v") is True
    assert r.psetex("p", 100_000, "v") is True
    assert r.getset("k", "g") == b"y"
    assert r.getdel("k") == b"g"
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.msetnx({"a": "3", "c": "4"}) is False
    assert r.mget("a", "b", "c") == [b"1", b"2", None]
    assert r.incr("a") == 2
    assert r.incrby("a", 40) == 42
    assert r.decr("a") == 41
    assert r.decrby("a", 1) == 40
    assert r.incrbyfloat("f", 10.5) == 10.5
    assert r.incrbyfloat("f", 0.1) == 10.6
    assert r.get("f") == b"10.6"
    assert r.append("s", "hello") == 5
    assert r.strlen("s") == 5
    assert r.setrange("s", 7, "x") == 8
    assert r.get("s") == b"hello\x00\x00x"
    assert r.getrange("s", 1, 3) == b"ell"
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("s")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SET", "k", "v", "NX", "XX")  # type: ignore[no-untyped-call]
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.execute_command("SET", "k", "v", "EX", "0")  # type: ignore[no-untyped-call]


def test_redis_py_pipeline(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"key:{i}", i)
        pipe.incr(f"key:{i}")
        pipe.get(f"key:{i}")
    replies = pipe.execute()
    assert replies[2::3] == [str(i + 1).encode() for i in range(200)]
    assert r.mget([f"key:{i}" for i in range(200)]) == [str(i + 1).encode() for i in range(200)]


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_asyncio(respkv_port: int, protocol: int) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis(port=respkv_port, protocol=protocol)
        try:
            assert await client.set("k", "v", px=100_000) is True
            assert await client.get("k") == b"v"
            assert await client.getex("k", persist=True) == b"v"
            assert await client.ttl("k") == -1
            assert await client.mset({"a": "1", "b": b"\x00"}) is True
            assert await client.mget("a", "b", "zz") == [b"1", b"\x00", None]
            assert await client.incrbyfloat("f", 5.0e3) == 5000.0
            assert await client.append("b", "x") == 2
            assert await client.getdel("b") == b"\x00x"
            # Concurrent increments from many connections: none is lost.
            others = [redis.asyncio.Redis(port=respkv_port, protocol=protocol)
                      for _ in range(8)]
            try:
                await asyncio.gather(*(c.incr("counter") for c in others for _ in range(25)))
            finally:
                for other in others:
                    await other.aclose()
            assert await client.get("counter") == b"200"
            assert await client.set("counter", "0", get=True) == b"200"
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_random_command_mix(diff: Differential) -> None:
    """A seeded random mix of every string command over a few keys, byte for byte."""
    rng = random.Random(7)
    keys: list[str | bytes] = ["a", "b", "c", b"\x00k\r\n"]
    values = ["", "0", "1", "-7", "10.5", "abc", b"\xff\x00\r\n", "9223372036854775807", "3e2"]
    numbers = ["0", "1", "-1", "5", "-3", "100", "abc", "9223372036854775807", ""]
    floats = ["0.1", "-2.5", "1e3", "abc", "inf", "0x10", "-0"]
    set_options = [(), ("NX",), ("XX",), ("GET",), ("KEEPTTL",), ("EX", "100"), ("PX", "0"),
                   ("NX", "GET"), ("XX", "GET", "PX", "100000"), ("NX", "XX")]

    def pick(seq: list[Any]) -> Any:
        return rng.choice(seq)

    makers = [
        lambda: ("GET", pick(keys)),
        lambda: ("SET", pick(keys), pick(values), *pick(set_options)),
        lambda: ("SETNX", pick(keys), pick(values)),
        lambda: ("GETSET", pick(keys), pick(values)),
        lambda: ("GETDEL", pick(keys)),
        lambda: ("GETEX", pick(keys), *pick([(), ("PERSIST",), ("EX", "100"), ("PX", "0")])),
        lambda: ("MGET", *rng.sample(keys, rng.randint(1, 4))),
        lambda: ("MSET", *[x for k in rng.sample(keys, 2) for x in (k, pick(values))]),
        lambda: ("MSETNX", *[x for k in rng.sample(keys, 2) for x in (k, pick(values))]),
        lambda: ("APPEND", pick(keys), pick(values)),
        lambda: ("STRLEN", pick(keys)),
        lambda: ("GETRANGE", pick(keys), pick(numbers), pick(numbers)),
        lambda: ("SETRANGE", pick(keys), pick(["0", "1", "3", "-1", "20"]), pick(values)),
        lambda: ("INCR", pick(keys)),
        lambda: ("DECR", pick(keys)),
        lambda: ("INCRBY", pick(keys), pick(numbers)),
        lambda: ("DECRBY", pick(keys), pick(numbers)),
        lambda: ("INCRBYFLOAT", pick(keys), pick(floats)),
    ]
    for _ in range(600):
        diff.call(*pick(makers)())
    diff.call("MGET", "a", "b", "c", b"\x00k\r\n")


@pytest.mark.parametrize("argv", [
    (b"SET", b"k", b"v"), (b"SET", b"k", b"v", b"EX", b"100"), (b"SET", b"k", b"v", b"PXAT",
                                                                 b"9999999999999"),
    (b"SETEX", b"k", b"100", b"v"), (b"PSETEX", b"k", b"100", b"v"), (b"INCR", b"n"),
    (b"DECR", b"n"), (b"INCRBY", b"n", b"5"), (b"DECRBY", b"n", b"5"), (b"DEL", b"k", b"n"),
    (b"UNLINK", b"k"), (b"SET", b"k", b"w", b"NX", b"PX", b"100"), (b"SET", b"k", b"w", b"XX"),
    (b"SET", b"k", b"w", b"GET"), (b"SETNX", b"k", b"w"), (b"GETSET", b"k", b"w"),
    (b"GETDEL", b"k"), (b"GETEX", b"k", b"EX", b"100"), (b"APPEND", b"k", b"w"),
    (b"INCRBYFLOAT", b"n", b"1.5"), (b"SETRANGE", b"k", b"1", b"w"),
    (b"SETRANGE", b"k", b"4", b"w"),
], ids=lambda argv: b" ".join(argv).decode())
def test_blind_writes_and_counters_answer_without_a_coroutine(local: Local,
                                                              argv: tuple[bytes, ...]) -> None:
    """In a cluster of one these complete at once (no coroutine to create and drive), as GET
    and plain SET do; what they store is checked by the tests above."""
    local("SET", "k", "v")
    spec = resolve(list(argv))
    assert spec.handler is not None
    reply = spec.handler(local.client, list(argv))
    assert not isinstance(reply, Coroutine), reply
    assert reply in (OK, None, 0, 1, -1, 5, -5, 2, b"v", b"1.5")
