"""CONSISTENCY, VCLOCK GET|SET|DEL, CLUSTER INFO|MYID|NODES|RING|KEYNODES and WATCH in a
cluster: the context codec alone, then a standalone server (the shared one), then a real
3-node cluster (one per module, flushed between tests)."""

from __future__ import annotations

import base64
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import redis

from cluster import keys as keyspace
from cluster import vclock_context as ctxcodec
from cluster.vclock_context import ContextError
from tests.cluster_servers import LocalCluster
from tests.servers import RawConnection

ACTOR_A = b"\x01" * 8
ACTOR_B = b"\x02" * 8


def as_dict(reply: Any) -> dict[bytes, Any]:
    """A map reply as redis-py gives it: a dict in RESP3, a flat list in RESP2."""
    if isinstance(reply, dict):
        return reply
    assert isinstance(reply, list) and len(reply) % 2 == 0, reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def as_float(reply: Any) -> float:
    """A double reply: a float in RESP3, a bulk string in RESP2."""
    return float(reply)


def siblings_of(reply: Any) -> list[dict[bytes, Any]]:
    return [as_dict(s) for s in as_dict(reply)[b"siblings"]]


def context_of(reply: Any) -> bytes:
    return as_dict(reply)[b"context"]  # type: ignore[no-any-return]


def error_text(client: redis.Redis, *args: Any) -> str:
    with pytest.raises(redis.ResponseError) as raised:
        client.execute_command(*args)
    return str(raised.value)


# The context codec -------------------------------------------------------------------------


def _raw_context(body: bytes, db: int = 0, key: bytes = b"k", version: int = 1) -> bytes:
    head = struct.pack(">B8s", version, ctxcodec.key_tag(db, key)) + body
    raw = head + struct.pack(">I", zlib.crc32(head))
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def test_context_round_trip_keeps_clocks_and_timestamps() -> None:
    siblings = (
        ({ACTOR_A: (3, 100), ACTOR_B: (1, 90)}, 100, 5000, ACTOR_A, b"x"),
        ({ACTOR_B: (2, 120)}, 120, 0, ACTOR_B, None),
    )
    text = ctxcodec.encode(siblings, 0, b"k")
    assert text.isascii() and b"=" not in text
    decoded = ctxcodec.decode(text, 0, b"k")
    assert sorted((v[1], sorted(v[0].items())) for v in decoded) == sorted(
        (v[1], sorted(v[0].items())) for v in siblings)
    # Only what the write paths read is carried: the rest are placeholders.
    assert all(v[2] == 0 and v[3] == b"" and v[4] is None for v in decoded)


def test_worked_example_of_the_format_doc() -> None:
    """docs/formats/vclock-context.md's example, byte for byte."""
    version = ({b"\x01" * 8: (3, 1700000000000)}, 1700000000000, 0, b"\x01" * 8, b"hi")
    assert ctxcodec.encode((version,), 0, b"k") == (
        b"AUCP-eI260fclc8AAAGLz-VoAAHECAEBAQEBAQEBA88AAAGLz-VoAOhmJCg")


def test_context_text_does_not_depend_on_sibling_order() -> None:
    one = ({ACTOR_A: (1, 5)}, 5, 0, ACTOR_A, b"a")
    two = ({ACTOR_B: (1, 6)}, 6, 0, ACTOR_B, b"b")
    assert ctxcodec.encode((one, two), 0, b"k") == ctxcodec.encode((two, one), 0, b"k")


def test_context_of_missing_key_names_nothing() -> None:
    assert ctxcodec.decode(ctxcodec.encode((), 3, b"k"), 3, b"k") == ()


def test_context_of_another_key_or_database_is_refused() -> None:
    text = ctxcodec.encode((({ACTOR_A: (1, 5)}, 5, 0, ACTOR_A, b"a"),), 0, b"k")
    for db, key in ((0, b"other"), (1, b"k")):
        with pytest.raises(ContextError, match="another key"):
            ctxcodec.decode(text, db, key)


@pytest.mark.parametrize(("text", "reason"), [
    (b"", "not urlsafe base64"),
    (b"abc def", "not urlsafe base64"),
    (b"ab+/", "not urlsafe base64"),
    (b"A", "not urlsafe base64"),
    (b"AQID", "truncated"),
    (_raw_context(msgpack.packb([]), version=2), "unknown format version 2"),
    (_raw_context(msgpack.packb({})), "not an array"),
    (_raw_context(b"\xc1"), "bad body"),
    (_raw_context(msgpack.packb([5])), "truncated version"),
    (_raw_context(msgpack.packb([5, 0])), "clock length"),
    (_raw_context(msgpack.packb([5, 1, ACTOR_A, 1])), "truncated clock"),
    (_raw_context(msgpack.packb([-1, 1, ACTOR_A, 1, 0])), "timestamp"),
    (_raw_context(msgpack.packb([True, 1, ACTOR_A, 1, 0])), "timestamp"),
    (_raw_context(msgpack.packb([5, 1, "actor", 1, 0])), "actor"),
    (_raw_context(msgpack.packb([5, 1, b"", 1, 0])), "actor"),
    (_raw_context(msgpack.packb([5, 1, ACTOR_A, 0, 0])), "counter"),
    (_raw_context(msgpack.packb([5, 1, ACTOR_A, 1 << 63, 0])), "counter"),
    (_raw_context(msgpack.packb([5, 1, ACTOR_A, 1, -2])), "stamp"),
    (_raw_context(msgpack.packb([5, 2, ACTOR_B, 1, 0, ACTOR_A, 1, 0])), "ascending"),
    (_raw_context(msgpack.packb([5, 2, ACTOR_A, 1, 0, ACTOR_A, 2, 0])), "ascending"),
])
def test_malformed_context_is_refused(text: bytes, reason: str) -> None:
    with pytest.raises(ContextError, match=reason):
        ctxcodec.decode(text, 0, b"k")


def test_damaged_context_fails_its_checksum() -> None:
    text = bytearray(ctxcodec.encode((({ACTOR_A: (7, 5)}, 5, 0, ACTOR_A, b"a"),), 0, b"k"))
    # Body and checksum characters (not the last one, whose low bits may be padding).
    for i in range(len(text) - 12, len(text) - 1):
        damaged = bytearray(text)
        damaged[i] = ord("A") if damaged[i] != ord("A") else ord("B")
        with pytest.raises(ContextError, match="checksum"):
            ctxcodec.decode(bytes(damaged), 0, b"k")
    with pytest.raises(ContextError, match="checksum"):
        ctxcodec.decode(bytes(text[:-4]), 0, b"k")


def test_overlong_context_is_refused_before_decoding() -> None:
    with pytest.raises(ContextError, match="longer than"):
        ctxcodec.decode(b"A" * (ctxcodec.CONTEXT_CHARS_MAX + 1), 0, b"k")


# Standalone: CONSISTENCY ---------------------------------------------------------------------


def test_consistency_shows_server_defaults(r: redis.Redis) -> None:
    assert as_dict(r.execute_command("CONSISTENCY")) == {
        b"read": b"QUORUM", b"write": b"QUORUM",
        b"read-default": b"QUORUM", b"write-default": b"QUORUM"}


def test_consistency_reply_bytes(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        conn.call("CONSISTENCY", "R", "2")
        assert conn.call("CONSISTENCY") == (
            b"*8\r\n$4\r\nread\r\n$1\r\n2\r\n$5\r\nwrite\r\n$6\r\nQUORUM\r\n"
            b"$12\r\nread-default\r\n$6\r\nQUORUM\r\n$13\r\nwrite-default\r\n$6\r\nQUORUM\r\n")
        conn.call("HELLO", "3")
        assert conn.call("CONSISTENCY").startswith(b"%4\r\n$4\r\nread\r\n$1\r\n2\r\n")
        assert conn.call("CONSISTENCY", "one") == b"+OK\r\n"


@pytest.mark.parametrize(("args", "read", "write"), [
    (("ONE",), b"ONE", b"ONE"),
    (("all",), b"ALL", b"ALL"),
    (("local_quorum",), b"LOCAL_QUORUM", b"LOCAL_QUORUM"),
    (("EACH_QUORUM",), b"EACH_QUORUM", b"EACH_QUORUM"),
    (("3",), b"3", b"3"),
    (("R", "2"), b"2", b"QUORUM"),
    (("W", "ALL"), b"QUORUM", b"ALL"),
    (("R", "ONE", "W", "THREE"), b"ONE", b"THREE"),
    (("WRITE", "two", "READ", "1"), b"1", b"TWO"),
    (("R", "ONE", "W", "DEFAULT"), b"ONE", b"QUORUM"),
])
def test_consistency_sets_levels(r: redis.Redis, args: tuple[str, ...], read: bytes,
                                 write: bytes) -> None:
    assert r.execute_command("CONSISTENCY", *args) in (b"OK", "OK", True)
    shown = as_dict(r.execute_command("CONSISTENCY"))
    assert (shown[b"read"], shown[b"write"]) == (read, write)
    # A standalone node's one replica meets every level: commands still work.
    r.set("k", "v")
    assert r.get("k") == b"v"


def test_consistency_one_side_keeps_the_other(r: redis.Redis) -> None:
    r.execute_command("CONSISTENCY", "R", "ONE", "W", "ALL")
    r.execute_command("CONSISTENCY", "W", "TWO")
    shown = as_dict(r.execute_command("CONSISTENCY"))
    assert (shown[b"read"], shown[b"write"]) == (b"ONE", b"TWO")


@pytest.mark.parametrize("word", ["DEFAULT", "reset"])
def test_consistency_default_restores_server_levels(r: redis.Redis, word: str) -> None:
    r.execute_command("CONSISTENCY", "ALL")
    r.execute_command("CONSISTENCY", word)
    shown = as_dict(r.execute_command("CONSISTENCY"))
    assert (shown[b"read"], shown[b"write"]) == (b"QUORUM", b"QUORUM")


def test_reset_command_restores_server_levels(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        conn.call("CONSISTENCY", "ONE")
        assert conn.call("RESET") == b"+RESET\r\n"
        assert b"$3\r\nONE\r\n" not in conn.call("CONSISTENCY")


def test_consistency_follows_config_defaults(r: redis.Redis) -> None:
    r.config_set("read-consistency", "one")
    try:
        shown = as_dict(r.execute_command("CONSISTENCY"))
        assert shown[b"read"] == shown[b"read-default"] == b"ONE"
        assert shown[b"write"] == b"QUORUM"
    finally:
        r.config_set("read-consistency", "quorum")


@pytest.mark.parametrize(("args", "message"), [
    (("FOO",), "invalid consistency level 'FOO'"),
    (("0",), "consistency count must be 1..64, not 0"),
    (("65",), "consistency count must be 1..64, not 65"),
    (("R",), "invalid consistency level 'R'"),
    (("R", "lots"), "invalid consistency level 'lots'"),
    (("R", "1", "W"), "syntax error"),
    (("R", "1", "R", "2"), "syntax error"),
    (("X", "1"), "syntax error"),
    (("ONE", "TWO"), "syntax error"),
])
def test_consistency_errors(r: redis.Redis, args: tuple[str, ...], message: str) -> None:
    r.execute_command("CONSISTENCY", "TWO")
    assert message in error_text(r, "CONSISTENCY", *args)
    shown = as_dict(r.execute_command("CONSISTENCY"))
    assert shown[b"read"] == shown[b"write"] == b"TWO"  # an error changes nothing


def test_consistency_inside_multi_applies_at_exec(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        conn.call("MULTI")
        assert conn.call("CONSISTENCY", "ALL") == b"+QUEUED\r\n"
        assert conn.call("EXEC") == b"*1\r\n+OK\r\n"
        assert conn.call("CONSISTENCY").startswith(b"*8\r\n$4\r\nread\r\n$3\r\nALL\r\n")


# Standalone: VCLOCK ---------------------------------------------------------------------------


def test_vclock_get_of_missing_key(r: redis.Redis) -> None:
    reply = r.execute_command("VCLOCK", "GET", "nothing")
    assert siblings_of(reply) == []
    assert ctxcodec.decode(context_of(reply), 0, b"nothing") == ()


def test_vclock_get_reply_bytes(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        conn.call("SET", "k", "v")
        resp2 = conn.call("VCLOCK", "GET", "k")
        assert resp2.startswith(b"*4\r\n$7\r\ncontext\r\n$")
        assert b"$8\r\nsiblings\r\n*1\r\n*8\r\n$5\r\nvalue\r\n$1\r\nv\r\n$12\r\ntimestamp-ms\r\n:" \
            in resp2
        conn.call("HELLO", "3")
        resp3 = conn.call("VCLOCK", "GET", "k")
        assert resp3.startswith(b"%2\r\n$7\r\ncontext\r\n$")
        assert b"$8\r\nsiblings\r\n*1\r\n%4\r\n$5\r\nvalue\r\n$1\r\nv\r\n" in resp3
        assert b"$12\r\nexpire-at-ms\r\n:0\r\n$6\r\nwriter\r\n$16\r\n" in resp3


def test_vclock_get_shows_value_timestamp_expiry(r: redis.Redis) -> None:
    r.set("k", "v", px=100_000)
    (sibling,) = siblings_of(r.execute_command("VCLOCK", "GET", "k"))
    assert sibling[b"value"] == b"v"
    assert 0 < sibling[b"timestamp-ms"] < sibling[b"expire-at-ms"]
    assert sibling[b"expire-at-ms"] - sibling[b"timestamp-ms"] <= 100_000
    assert len(sibling[b"writer"]) == 16


def test_vclock_set_with_context_replaces_the_value(r: redis.Redis) -> None:
    r.set("k", "old")
    ctx = context_of(r.execute_command("VCLOCK", "GET", "k"))
    assert r.execute_command("VCLOCK", "SET", "k", "new", "CONTEXT", ctx) in (b"OK", "OK", True)
    assert r.get("k") == b"new"
    (sibling,) = siblings_of(r.execute_command("VCLOCK", "GET", "k"))
    assert sibling[b"value"] == b"new" and sibling[b"expire-at-ms"] == 0


def test_vclock_set_creates_a_missing_key(r: redis.Redis) -> None:
    ctx = context_of(r.execute_command("VCLOCK", "GET", "fresh"))
    r.execute_command("VCLOCK", "SET", "fresh", "v", "CONTEXT", ctx, "EX", 100)
    assert r.get("fresh") == b"v"
    assert 0 < r.ttl("fresh") <= 100


def test_vclock_set_expiry_options(r: redis.Redis) -> None:
    ctx = context_of(r.execute_command("VCLOCK", "GET", "k"))
    r.execute_command("VCLOCK", "SET", "k", "v", "PX", 50_000, "CONTEXT", ctx)
    assert 0 < r.pttl("k") <= 50_000
    ctx = context_of(r.execute_command("VCLOCK", "GET", "k"))
    at = r.time()[0] + 1000
    r.execute_command("VCLOCK", "SET", "k", "v", "CONTEXT", ctx, "EXAT", at)
    assert r.expiretime("k") == at
    ctx = context_of(r.execute_command("VCLOCK", "GET", "k"))
    r.execute_command("VCLOCK", "SET", "k", "v", "CONTEXT", ctx, "PXAT", at * 1000 + 5)
    assert r.pexpiretime("k") == at * 1000 + 5


def test_vclock_set_with_old_context_on_one_node_supersedes(r: redis.Redis) -> None:
    # One node writes with one actor: its new counter exceeds every stored one, so an old
    # context still supersedes the versions written since (documented in commands.md).
    r.set("k", "a")
    old = context_of(r.execute_command("VCLOCK", "GET", "k"))
    r.set("k", "b")
    r.execute_command("VCLOCK", "SET", "k", "c", "CONTEXT", old)
    assert [s[b"value"] for s in siblings_of(r.execute_command("VCLOCK", "GET", "k"))] == [b"c"]


def test_vclock_del_with_context(r: redis.Redis) -> None:
    r.set("k", "v")
    ctx = context_of(r.execute_command("VCLOCK", "GET", "k"))
    assert r.execute_command("VCLOCK", "DEL", "k", "context", ctx) in (b"OK", "OK", True)
    assert r.get("k") is None
    assert r.exists("k") == 0


@pytest.mark.parametrize(("args", "message"), [
    (("VCLOCK", "GET"), "wrong number of arguments for 'vclock|get' command"),
    (("VCLOCK", "GET", "a", "b"), "wrong number of arguments for 'vclock|get' command"),
    (("VCLOCK", "SET", "k", "v"), "wrong number of arguments for 'vclock|set' command"),
    (("VCLOCK", "SET", "k", "v", "CONTEXT"),
     "wrong number of arguments for 'vclock|set' command"),
    (("VCLOCK", "DEL", "k"), "wrong number of arguments for 'vclock|del' command"),
    (("VCLOCK", "DEL", "k", "CONTEXT", "x", "y"),
     "wrong number of arguments for 'vclock|del' command"),
    (("VCLOCK",), "wrong number of arguments for 'vclock' command"),
    (("VCLOCK", "NOPE"), "unknown subcommand 'NOPE'. Try VCLOCK HELP."),
    (("VCLOCK", "SET", "k", "v", "EX", "10"),
     "VCLOCK SET needs CONTEXT <context> (from VCLOCK GET)"),
    (("VCLOCK", "SET", "k", "v", "CONTEXT", "AAAA", "EX"), "syntax error"),
    (("VCLOCK", "SET", "k", "v", "CONTEXT", "AAAA", "CONTEXT", "AAAA"), "syntax error"),
    (("VCLOCK", "SET", "k", "v", "CONTEXT", "AAAA", "EX", "1", "PX", "1"), "syntax error"),
    (("VCLOCK", "SET", "k", "v", "CONTEXT", "AAAA", "KEEPTTL", "1"), "syntax error"),
    (("VCLOCK", "SET", "k", "v", "CONTEXT", "AAAA", "EX", "0"),
     "invalid expire time in 'vclock|set' command"),
    (("VCLOCK", "SET", "k", "v", "CONTEXT", "AAAA", "EX", "x"),
     "value is not an integer or out of range"),
    (("VCLOCK", "SET", "k", "v", "CONTEXT", "AAAA", "EX", str(1 << 62)),
     "invalid expire time in 'vclock|set' command"),
    (("VCLOCK", "SET", "k", "v", "CONTEXT", "!!"), "invalid context: not urlsafe base64"),
    (("VCLOCK", "SET", "k", "v", "CONTEXT", "AAAAAAAAAAAAAAAAAAAA"), "invalid context"),
    (("VCLOCK", "DEL", "k", "CONTEXTS", "AAAA"), "syntax error"),
    (("VCLOCK", "DEL", "k", "CONTEXT", "%%%"), "invalid context: not urlsafe base64"),
])
def test_vclock_errors_write_nothing(r: redis.Redis, args: tuple[str, ...],
                                     message: str) -> None:
    r.set("k", "before")
    assert message in error_text(r, *args)
    assert r.get("k") == b"before"


def test_vclock_context_of_another_key_or_db_writes_nothing(r: redis.Redis) -> None:
    r.set("k", "before")
    r.set("other", "x")
    ctx = context_of(r.execute_command("VCLOCK", "GET", "other"))
    for args in (("VCLOCK", "SET", "k", "v", "CONTEXT", ctx), ("VCLOCK", "DEL", "k", "CONTEXT",
                                                               ctx)):
        assert "invalid context: it was read from another key" in error_text(r, *args)
    mine = context_of(r.execute_command("VCLOCK", "GET", "k"))
    r.select(1)
    assert "another key (or database)" in error_text(r, "VCLOCK", "SET", "k", "v", "CONTEXT",
                                                     mine)
    assert r.exists("k") == 0
    r.select(0)
    assert r.get("k") == b"before"


def test_vclock_damaged_context_writes_nothing(r: redis.Redis) -> None:
    r.set("k", "before")
    ctx = context_of(r.execute_command("VCLOCK", "GET", "k"))
    assert "checksum" in error_text(r, "VCLOCK", "SET", "k", "v", "CONTEXT", ctx[:-4])
    assert r.get("k") == b"before"


def test_vclock_help(r: redis.Redis) -> None:
    lines = r.execute_command("VCLOCK", "HELP")
    assert any(b"CONTEXT" in (line if isinstance(line, bytes) else line.encode())
               for line in lines)


# Standalone: CLUSTER -------------------------------------------------------------------------


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def test_standalone_cluster_info(r: redis.Redis) -> None:
    info = dict(line.split(":", 1) for line in _text(
        r.execute_command("CLUSTER", "INFO")).splitlines() if line)
    node_id = r.info("respkv")["node_id"]
    assert info["cluster_state"] == "ok"
    assert info["cluster_mode"] == "standalone"
    assert info["cluster_known_nodes"] == info["cluster_size"] == "1"
    assert info["cluster_my_id"] == node_id
    assert info["cluster_replication_factor"] == "1"
    assert info["cluster_read_consistency"] == info["cluster_write_consistency"] == "QUORUM"
    assert info["cluster_my_tokens"] == info["cluster_ring_tokens"] == "0"
    # redis-py's parser (it splits every line at ':') reads it.
    assert r.cluster("INFO")["cluster_my_id"] == node_id


def test_standalone_cluster_info_bytes(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        assert conn.call("CLUSTER", "INFO").startswith(b"$")
        conn.call("HELLO", "3")
        reply = conn.call("CLUSTER", "INFO")
        assert reply.startswith(b"=") and b"\r\ntxt:cluster_state:ok\r\n" in reply


def test_standalone_cluster_myid_and_nodes(r: redis.Redis, respkv_port: int) -> None:
    node_id = _text(r.execute_command("CLUSTER", "MYID"))
    assert node_id == r.info("respkv")["node_id"]
    (line,) = _text(r.execute_command("CLUSTER", "NODES")).splitlines()
    assert line == (f"{node_id} 127.0.0.1:{respkv_port}@0 myself - 0 0 0 connected "
                    "dc=dc1 rack=rack1 tokens=0 ownership=100.00%")
    parsed = r.cluster("NODES")
    assert parsed[f"127.0.0.1:{respkv_port}"]["node_id"] == node_id
    assert parsed[f"127.0.0.1:{respkv_port}"]["flags"] == "myself"


def test_standalone_cluster_ring_and_keynodes(r: redis.Redis, respkv_port: int) -> None:
    node_id = _text(r.execute_command("CLUSTER", "MYID")).encode()
    (entry,) = (as_dict(e) for e in r.execute_command("CLUSTER", "RING"))
    assert as_float(entry.pop(b"ownership")) == 100.0
    assert entry == {b"id": node_id, b"address": f"127.0.0.1:{respkv_port}".encode(),
                     b"datacenter": b"dc1", b"rack": b"rack1", b"tokens": 0}
    assert r.execute_command("CLUSTER", "RING", "TOKENS") == []
    reply = as_dict(r.execute_command("CLUSTER", "KEYNODES", "foo"))
    assert reply[b"token"] == str(keyspace.token(b"foo")).encode()
    (replica,) = (as_dict(x) for x in reply[b"replicas"])
    assert replica[b"id"] == node_id and replica[b"state"] == b"up"


@pytest.mark.parametrize(("args", "message"), [
    (("CLUSTER",), "wrong number of arguments for 'cluster' command"),
    (("CLUSTER", "SLOTS"), "unknown subcommand 'SLOTS'. Try CLUSTER HELP."),
    (("CLUSTER", "INFO", "x"), "wrong number of arguments for 'cluster|info' command"),
    (("CLUSTER", "MYID", "x"), "wrong number of arguments for 'cluster|myid' command"),
    (("CLUSTER", "NODES", "x"), "wrong number of arguments for 'cluster|nodes' command"),
    (("CLUSTER", "KEYNODES"), "wrong number of arguments for 'cluster|keynodes' command"),
    (("CLUSTER", "RING", "ALL"), "syntax error"),
    (("CLUSTER", "RING", "TOKENS", "COUNT"), "syntax error"),
    (("CLUSTER", "RING", "TOKENS", "COUNT", "0"), "COUNT must be positive"),
    (("CLUSTER", "RING", "TOKENS", "COUNT", "x"), "value is not an integer"),
    (("CLUSTER", "RING", "TOKENS", "FROM", "-1"), "token must be an integer"),
    (("CLUSTER", "RING", "TOKENS", "FROM", str(1 << 64)), "token must be an integer"),
    (("CLUSTER", "RING", "TOKENS", "SIZE", "1"), "syntax error"),
])
def test_cluster_errors(r: redis.Redis, args: tuple[str, ...], message: str) -> None:
    assert message in error_text(r, *args)


def test_standalone_watch_unchanged(r: redis.Redis) -> None:
    assert r.execute_command("WATCH", "k") in (b"OK", "OK", True)
    r.execute_command("MULTI")
    r.execute_command("SET", "k", "1")
    assert r.execute_command("EXEC") == [b"OK"]


# A 3-node cluster ---------------------------------------------------------------------------


def wait_reachable(nodes: LocalCluster, i: int, count: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        info = nodes.client(i).cluster("INFO")
        if info["cluster_reachable_nodes"] == str(count):
            return
        assert time.monotonic() < deadline, f"node{i}: {info}\n{nodes.log_text()}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    nodes = LocalCluster(tmp_path_factory.mktemp("cluster_cmds"), 3, replication="3")
    try:
        nodes.start()
        # Tests read and write with ALL: wait until every coordinator sends to every node.
        for i in range(3):
            wait_reachable(nodes, i, 3)
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def cl(cluster: LocalCluster) -> LocalCluster:
    """The module's cluster, emptied (FLUSHALL through node 0 reaches every node)."""
    with cluster.connect(0) as conn:
        assert conn.call("FLUSHALL") == b"+OK\r\n"
    return cluster


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def proto(request: pytest.FixtureRequest) -> int:
    return request.param  # type: ignore[no-any-return]


def test_cluster_concurrent_writers_make_siblings_and_context_resolves(
        cl: LocalCluster, proto: int) -> None:
    a, b, c = (cl.client(i, protocol=proto) for i in range(3))
    for client in (a, b, c):
        client.execute_command("CONSISTENCY", "ALL")  # every replica holds every version
    a.set("k", "v0")
    ctx = context_of(a.execute_command("VCLOCK", "GET", "k"))
    # Two writers through two coordinators, each superseding only what it read: concurrent.
    a.execute_command("VCLOCK", "SET", "k", "va", "CONTEXT", ctx)
    b.execute_command("VCLOCK", "SET", "k", "vb", "CONTEXT", ctx)
    reply = c.execute_command("VCLOCK", "GET", "k")
    siblings = siblings_of(reply)
    assert sorted(s[b"value"] for s in siblings) == [b"va", b"vb"]
    assert len({s[b"writer"] for s in siblings}) == 2
    assert c.get("k") == siblings[0][b"value"]  # the winner is listed first
    # Resolve through the third node with the context naming both.
    c.execute_command("VCLOCK", "SET", "k", "merged", "CONTEXT", context_of(reply))
    for client in (a, b, c):
        assert [s[b"value"] for s in siblings_of(client.execute_command("VCLOCK", "GET", "k"))] \
            == [b"merged"]
        assert client.get("k") == b"merged"


def test_cluster_stale_context_keeps_later_write_as_sibling(cl: LocalCluster) -> None:
    a, b = cl.client(0), cl.client(1)
    for client in (a, b):
        client.execute_command("CONSISTENCY", "ALL")
    a.set("k", "v0")
    old = context_of(a.execute_command("VCLOCK", "GET", "k"))
    b.set("k", "through-b")  # supersedes v0 (it read it)
    a.execute_command("VCLOCK", "SET", "k", "from-old-context", "CONTEXT", old)
    values = sorted(s[b"value"] for s in siblings_of(b.execute_command("VCLOCK", "GET", "k")))
    assert values == [b"from-old-context", b"through-b"]
    # VCLOCK DEL with the context of both leaves one tombstone: the key is gone everywhere.
    ctx = context_of(b.execute_command("VCLOCK", "GET", "k"))
    b.execute_command("VCLOCK", "DEL", "k", "CONTEXT", ctx)
    for i in range(3):
        reply = cl.client(i).execute_command("VCLOCK", "GET", "k")
        assert [s[b"value"] for s in siblings_of(reply)] == [None]
        assert cl.client(i).get("k") is None


def test_cluster_del_with_stale_context_keeps_concurrent_value(cl: LocalCluster) -> None:
    a, b = cl.client(0), cl.client(1)
    for client in (a, b):
        client.execute_command("CONSISTENCY", "ALL")
    a.set("k", "v0")
    old = context_of(a.execute_command("VCLOCK", "GET", "k"))
    b.set("k", "newer")
    a.execute_command("VCLOCK", "DEL", "k", "CONTEXT", old)
    values = [s[b"value"] for s in siblings_of(b.execute_command("VCLOCK", "GET", "k"))]
    assert sorted(values, key=lambda v: v or b"") == [None, b"newer"]


def test_cluster_vclock_bytes(cl: LocalCluster) -> None:
    with cl.connect(1) as conn:
        conn.call("SET", "k", "v")
        assert conn.call("VCLOCK", "GET", "k").startswith(b"*4\r\n$7\r\ncontext\r\n$")
        conn.call("HELLO", "3")
        reply = conn.call("VCLOCK", "GET", "k")
        assert reply.startswith(b"%2\r\n$7\r\ncontext\r\n$")
        assert b"$8\r\nsiblings\r\n*1\r\n%4\r\n$5\r\nvalue\r\n$1\r\nv\r\n" in reply


def test_cluster_bad_context_writes_nothing(cl: LocalCluster) -> None:
    a = cl.client(0)
    a.set("k", "before")
    a.set("other", "x")
    other = context_of(a.execute_command("VCLOCK", "GET", "other"))
    assert "another key" in error_text(a, "VCLOCK", "SET", "k", "v", "CONTEXT", other)
    assert "another key" in error_text(a, "VCLOCK", "DEL", "k", "CONTEXT", other)
    assert "not urlsafe base64" in error_text(a, "VCLOCK", "SET", "k", "v", "CONTEXT", "?")
    for i in range(3):
        assert cl.client(i).get("k") == b"before"


def test_cluster_consistency_levels_apply_per_connection(cl: LocalCluster, proto: int) -> None:
    a = cl.client(0, protocol=proto)
    a.set("k", "v")
    assert as_dict(a.execute_command("CONSISTENCY")) == {
        b"read": b"QUORUM", b"write": b"QUORUM",
        b"read-default": b"QUORUM", b"write-default": b"QUORUM"}
    a.execute_command("CONSISTENCY", "R", "5")
    # Set, but no key's 3 replicas can meet it: each request fails with the coordinator's
    # error, and the write level still works.
    assert error_text(a, "GET", "k") == "cannot achieve consistency 5 with 3 replicas"
    assert "cannot achieve consistency 5" in error_text(a, "VCLOCK", "GET", "k")
    a.set("k2", "w")
    a.execute_command("CONSISTENCY", "W", "EACH_QUORUM", "R", "THREE")
    assert a.get("k2") == b"w"
    a.set("k3", "x")
    other = cl.client(0, protocol=proto)  # another connection keeps the defaults
    assert as_dict(other.execute_command("CONSISTENCY"))[b"read"] == b"QUORUM"
    a.execute_command("CONSISTENCY", "DEFAULT")
    assert as_dict(a.execute_command("CONSISTENCY"))[b"read"] == b"QUORUM"
    assert a.get("k") == b"v"


def test_cluster_reset_and_config_defaults(cl: LocalCluster) -> None:
    with cl.connect(2) as conn:
        conn.call("CONSISTENCY", "R", "9")
        assert conn.call("GET", "k") == b"-ERR cannot achieve consistency 9 with 3 replicas\r\n"
        assert conn.call("RESET") == b"+RESET\r\n"
        assert conn.call("GET", "k") == b"$-1\r\n"
        assert conn.call("CONFIG", "SET", "read-consistency", "all") == b"+OK\r\n"
        try:
            assert conn.call("CONSISTENCY").startswith(b"*8\r\n$4\r\nread\r\n$3\r\nALL\r\n")
        finally:
            conn.call("CONFIG", "SET", "read-consistency", "quorum")


def test_cluster_watch_is_refused(cl: LocalCluster) -> None:
    a = cl.client(0)
    message = error_text(a, "WATCH", "k")
    assert message.startswith("WATCH is not supported in a cluster of more than one node: ")
    with cl.connect(1) as conn:
        reply = conn.call("WATCH", "a", "b")
        assert reply.startswith(b"-ERR WATCH is not supported in a cluster of more than one")
        assert conn.call("UNWATCH") == b"+OK\r\n"
        assert conn.call("MULTI") == b"+OK\r\n"
        conn.call("SET", "k", "1")
        assert conn.call("EXEC") == b"*1\r\n+OK\r\n"


def _info(client: redis.Redis) -> dict[str, str]:
    return client.cluster("INFO")  # type: ignore[no-any-return]


def test_cluster_info_myid_nodes(cl: LocalCluster) -> None:
    ids = [_text(cl.client(i).execute_command("CLUSTER", "MYID")) for i in range(3)]
    assert len(set(ids)) == 3
    for i in range(3):
        client = cl.client(i)
        info = _info(client)
        assert info["cluster_state"] == "ok"
        assert info["cluster_mode"] == "cluster"
        assert info["cluster_known_nodes"] == info["cluster_size"] == "3"
        assert info["cluster_reachable_nodes"] == "3"
        assert info["cluster_my_id"] == ids[i]
        assert info["cluster_replication_factor"] == "3"
        assert int(info["cluster_ring_tokens"]) == 3 * int(info["cluster_my_tokens"])
        lines = _text(client.execute_command("CLUSTER", "NODES")).splitlines()
        assert len(lines) == 3
        fields = [line.split(" ") for line in lines]
        assert fields[0][0] == ids[i] and fields[0][2] == "myself"
        assert {f[0] for f in fields} == set(ids)
        for f, host, port, peer_port in zip(
                sorted(fields, key=lambda f: ids.index(f[0])), cl.hosts, cl.ports,
                cl.peer_ports, strict=True):
            assert f[1] == f"{host}:{port}@{peer_port}"
            assert f[7] == "connected"
            assert f[8:11] == ["dc=dc1", "rack=rack1", f"tokens={info['cluster_my_tokens']}"]
        total = sum(float(f[11].removeprefix("ownership=").rstrip("%")) for f in fields)
        assert total == pytest.approx(100.0, abs=0.05)
        parsed = client.cluster("NODES")  # redis-py's parser reads our lines
        assert {node["node_id"] for node in parsed.values()} == set(ids)
        assert all(node["connected"] for node in parsed.values())


def test_cluster_ring_and_keynodes_agree(cl: LocalCluster, proto: int) -> None:
    clients = [cl.client(i, protocol=proto) for i in range(3)]
    ring = [as_dict(entry) for entry in clients[0].execute_command("CLUSTER", "RING")]
    assert len(ring) == 3
    assert sum(as_float(entry[b"ownership"]) for entry in ring) == pytest.approx(100, abs=0.05)
    tokens = clients[0].execute_command("CLUSTER", "RING", "TOKENS")
    assert len(tokens) == sum(entry[b"tokens"] for entry in ring)
    numbers = [int(token) for token, _ in tokens]
    assert numbers == sorted(numbers)
    for key in (b"foo", b"bar", b"user:1000", b""):
        replies = [as_dict(c.execute_command("CLUSTER", "KEYNODES", key)) for c in clients]
        assert all(reply == replies[0] for reply in replies)
        token = int(replies[0][b"token"])
        assert token == keyspace.token(key)
        replicas = [as_dict(x) for x in replies[0][b"replicas"]]
        assert len({x[b"id"] for x in replicas}) == 3
        assert all(x[b"state"] == b"up" for x in replicas)
        # The first replica owns the first vnode at or after the key's token (wrapping).
        after = clients[0].execute_command("CLUSTER", "RING", "TOKENS", "FROM", token, "COUNT", 1)
        owner = after[0][1] if after else tokens[0][1]
        assert replicas[0][b"id"] == owner
    page = clients[1].execute_command("CLUSTER", "RING", "TOKENS", "FROM", numbers[10],
                                      "COUNT", 5)
    assert [int(t) for t, _ in page] == numbers[10:15]


def test_cluster_levels_survive_a_dead_node(cl: LocalCluster) -> None:
    """Last in the module: kills and restarts node 2."""
    a = cl.client(0)
    dead_id = _text(cl.client(2).execute_command("CLUSTER", "MYID"))
    a.execute_command("CONSISTENCY", "ALL")
    a.set("k", "v")
    cl.kill(2)
    try:
        assert error_text(a, "GET", "k").startswith("NOQUORUM")
        a.execute_command("CONSISTENCY", "ONE")
        assert a.get("k") == b"v"
        a.set("k", "w")
        # The dead node's line turns "fail? ... disconnected" once its link is in back-off.
        deadline = time.monotonic() + 15
        while True:
            lines = _text(a.execute_command("CLUSTER", "NODES")).splitlines()
            (line,) = (x for x in lines if x.startswith(dead_id + " "))
            if "fail?" in line.split(" ")[2] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert line.split(" ")[2] == "noflags,fail?" or line.split(" ")[2] == "fail?"
        assert line.split(" ")[7] == "disconnected"
        assert _info(a)["cluster_reachable_nodes"] == "2"
        keynodes = as_dict(a.execute_command("CLUSTER", "KEYNODES", "k"))
        states = {as_dict(x)[b"id"]: as_dict(x)[b"state"] for x in keynodes[b"replicas"]}
        assert states[dead_id.encode()] == b"down"
    finally:
        cl.restart(2)
    wait_reachable(cl, 2, 3)
    assert cl.client(2).get("k") == b"w"
