"""MULTI / EXEC / DISCARD / WATCH / UNWATCH end to end, byte for byte against redis-server.

A second pair of connections (`other`) plays the client that writes between WATCH and EXEC.
Most scenarios run in RESP2 and RESP3 (`diff3`), since an aborted EXEC is `*-1` in one and
`_` in the other.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from tests.conftest import Differential
from tests.fuzz_compare import elements, same_hello
from tests.servers import RawConnection, encode_command

OK = b"+OK\r\n"
QUEUED = b"+QUEUED\r\n"


@pytest.fixture
def other(respkv_port: int, redis_port: int) -> Iterator[Differential]:
    """Another client on each server."""
    ours, theirs = RawConnection(respkv_port), RawConnection(redis_port)
    yield Differential(ours, theirs)
    ours.close()
    theirs.close()


def run_transaction(diff: Differential, *commands: tuple[str | bytes | int, ...]) -> bytes:
    """MULTI, the commands (each must be QUEUED), EXEC; returns EXEC's reply."""
    assert diff.call("MULTI") == OK
    for argv in commands:
        assert diff.call(*argv) == QUEUED, argv
    return diff.call("EXEC")


# --- MULTI / EXEC / DISCARD --------------------------------------------------------------------


def test_multi_exec_runs_queued_commands(diff3: Differential) -> None:
    diff3.call("SET", "text", "not a number")
    reply = run_transaction(
        diff3,
        ("SET", "a", "1"),
        ("INCR", "a"),
        ("INCRBY", "a", "10"),
        ("GET", "a"),
        ("GET", "missing"),
        ("APPEND", "s", "xy"),
        ("MGET", "a", "missing", "s"),
        ("EXISTS", "a", "s", "missing"),
        ("DEL", "s"),
        ("PING",),
        ("ECHO", b"bin\x00\xff"),
    )
    assert reply.startswith(b"*11\r\n")
    diff3.call("GET", "a")
    diff3.call("EXISTS", "s")


def test_exec_with_no_commands(diff3: Differential) -> None:
    assert run_transaction(diff3) == b"*0\r\n"


def test_commands_are_not_run_before_exec(diff: Differential, other: Differential) -> None:
    diff.call("MULTI")
    diff.call("SET", "k", "v")
    other.call("GET", "k")  # still missing for everyone
    diff.call("EXEC")
    other.call("GET", "k")


def test_discard_drops_the_queue(diff3: Differential) -> None:
    diff3.call("MULTI")
    diff3.call("SET", "k", "v")
    diff3.call("INCR", "n")
    assert diff3.call("DISCARD") == OK
    diff3.call("GET", "k")
    diff3.call("EXISTS", "n")
    assert diff3.call("EXEC") == b"-ERR EXEC without MULTI\r\n"


def test_exec_and_discard_without_multi(diff3: Differential) -> None:
    assert diff3.call("EXEC") == b"-ERR EXEC without MULTI\r\n"
    assert diff3.call("DISCARD") == b"-ERR DISCARD without MULTI\r\n"
    assert diff3.call("exec") == b"-ERR EXEC without MULTI\r\n"


def test_nested_multi_is_an_error_but_does_not_abort(diff3: Differential) -> None:
    diff3.call("MULTI")
    assert diff3.call("MULTI") == b"-ERR MULTI calls can not be nested\r\n"
    diff3.call("SET", "k", "v")
    assert diff3.call("EXEC") == b"*1\r\n+OK\r\n"


@pytest.mark.parametrize(
    "bad",
    [("NOSUCHCOMMAND", "x"), ("GET",), ("SET", "k"), ("MULTI", "extra"), ("DISCARD", "x")],
    ids=["unknown", "arity_get", "arity_set", "arity_multi", "arity_discard"],
)
def test_queue_time_error_aborts_exec(diff3: Differential, bad: tuple[str, ...]) -> None:
    diff3.call("MULTI")
    diff3.call("SET", "before", "1")
    assert diff3.call(*bad).startswith(b"-ERR ")
    diff3.call("SET", "after", "1")
    assert diff3.call("EXEC") == (
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    )
    # Nothing ran, and the client is out of the transaction.
    diff3.call("EXISTS", "before", "after")
    diff3.call("EXEC")


def test_exec_with_wrong_arity_aborts_at_once(diff3: Differential) -> None:
    # Redis answers any refusal of EXEC itself with EXECABORT and discards the transaction.
    diff3.call("MULTI")
    diff3.call("SET", "before", "1")
    assert diff3.call("EXEC", "extra") == (
        b"-EXECABORT Transaction discarded because of: "
        b"wrong number of arguments for 'exec' command\r\n"
    )
    diff3.call("SET", "after", "1")  # runs at once: the transaction is gone
    diff3.call("EXISTS", "before", "after")
    diff3.call("EXEC")


def test_exec_with_wrong_arity_outside_multi(diff3: Differential) -> None:
    assert diff3.call("EXEC", "extra").startswith(b"-EXECABORT Transaction discarded")
    diff3.call("DISCARD", "extra")


def test_queue_time_error_then_discard(diff: Differential) -> None:
    diff.call("MULTI")
    diff.call("NOSUCH")
    assert diff.call("DISCARD") == OK
    assert run_transaction(diff, ("PING",)) == b"*1\r\n+PONG\r\n"


def test_runtime_errors_are_part_of_the_exec_array(diff3: Differential) -> None:
    diff3.call("SET", "text", "abc")
    reply = run_transaction(
        diff3,
        ("INCR", "text"),
        ("SET", "k", "v", "EX", "notanumber"),
        ("SET", "k", "v", "EX", "0"),
        ("SET", "k", "v", "NX", "XX"),
        ("INCRBYFLOAT", "text", "1"),
        ("SELECT", "99"),
        ("SET", "k", "ran"),
        ("GET", "k"),
    )
    assert b"-ERR value is not an integer or out of range\r\n" in reply
    assert reply.endswith(b"$3\r\nran\r\n")


def test_select_inside_multi(diff3: Differential) -> None:
    run_transaction(diff3, ("SELECT", "1"), ("SET", "k", "db1"), ("SELECT", "2"))
    diff3.call("GET", "k")  # the SELECT in EXEC stays in effect
    diff3.call("SELECT", "1")
    diff3.call("GET", "k")
    diff3.call("SELECT", "0")
    diff3.call("GET", "k")


def test_shutdown_is_refused_inside_multi(diff: Differential) -> None:
    diff.call("MULTI")
    # Redis flags SHUTDOWN no-multi: refused at queue time, and the transaction is flagged.
    assert diff.call("SHUTDOWN") == b"-ERR Command not allowed inside a transaction\r\n"
    # DISCARD, not EXEC: a respkv that had queued it must not be shut down by this test.
    assert diff.call("DISCARD") == OK


def test_hello_inside_multi_changes_the_protocol_of_the_replies_after_it(
    diff: Differential,
) -> None:
    # Redis writes each queued command's reply as it runs: the replies before a queued HELLO
    # keep the old protocol, HELLO's own and those after it have the new one.
    assert diff.call("MULTI") == OK
    for argv in (("GET", "no"), ("HELLO", "3"), ("GET", "no"), ("HELLO", "2"), ("GET", "no")):
        assert diff.call(*argv) == QUEUED
    mine, ref = diff.both("EXEC")
    ours, theirs = elements(mine), elements(ref)
    assert ours is not None and theirs is not None
    assert ours[0] == theirs[0] == b"$-1\r\n"
    assert ours[2] == theirs[2] == b"_\r\n"
    assert ours[4] == theirs[4] == b"$-1\r\n"
    # HELLO's replies name the server: equal but for that and the client id.
    assert ours[1].startswith(b"%7") and same_hello(ours[1], theirs[1])
    assert ours[3].startswith(b"*14") and same_hello(ours[3], theirs[3])
    diff.call("GET", "no")


def test_reset_inside_multi_discards_it(diff3: Differential) -> None:
    diff3.call("SET", "k", "1")
    diff3.call("WATCH", "k")
    diff3.call("MULTI")
    diff3.call("SET", "k", "2")
    assert diff3.call("RESET") == b"+RESET\r\n"
    assert diff3.call("EXEC") == b"-ERR EXEC without MULTI\r\n"
    diff3.call("GET", "k")


def test_reset_forgets_the_watches(diff: Differential, other: Differential) -> None:
    diff.call("WATCH", "k")
    diff.call("RESET")
    other.call("SET", "k", "x")
    assert run_transaction(diff, ("PING",)) == b"*1\r\n+PONG\r\n"


def test_several_transactions_pipelined_in_one_write(
    respkv_port: int, redis_port: int
) -> None:
    data = b"".join(
        encode_command(*argv)
        for argv in [
            ("MULTI",), ("INCR", "n"), ("INCR", "n"), ("EXEC",),
            ("MULTI",), ("GET", "n"), ("NOSUCH",), ("EXEC",),
            ("MULTI",), ("DEL", "n"), ("DISCARD",),
            ("MULTI",), ("GET", "n"), ("EXEC",),
            ("EXEC",),
            ("QUIT",),
        ]
    )
    replies = []
    for port in (respkv_port, redis_port):
        with RawConnection(port) as conn:
            conn.send_raw(data)
            replies.append(conn.read_until_close())
    assert replies[0] == replies[1]
    assert replies[0].startswith(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n:2\r\n")


def test_transaction_is_atomic_for_other_clients(respkv_port: int) -> None:
    batch = 50
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        with RawConnection(respkv_port) as conn:
            while not stop.is_set():
                reply = conn.call("GET", "n")
                seen.append(0 if reply == b"$-1\r\n" else int(reply.split(b"\r\n")[1]))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        with RawConnection(respkv_port) as conn:
            for _ in range(40):
                conn.send_raw(
                    encode_command("MULTI")
                    + encode_command("INCR", "n") * batch
                    + encode_command("EXEC")
                )
                for _ in range(batch + 2):
                    conn.read_reply()
    finally:
        stop.set()
        thread.join(10)
    assert seen, "the reader never ran"
    assert all(value % batch == 0 for value in seen), sorted(set(seen))[:20]


# --- WATCH -------------------------------------------------------------------------------------


def test_watch_then_write_by_another_client_aborts(
    diff3: Differential, other: Differential
) -> None:
    diff3.call("SET", "k", "1")
    assert diff3.call("WATCH", "k") == OK
    other.call("SET", "k", "2")
    reply = run_transaction(diff3, ("SET", "k", "3"))
    assert reply in (b"*-1\r\n", b"_\r\n")
    diff3.call("GET", "k")


def test_watch_missing_key_created_by_another_client(
    diff3: Differential, other: Differential
) -> None:
    diff3.call("WATCH", "k")
    other.call("SET", "k", "x")
    assert run_transaction(diff3, ("GET", "k")) in (b"*-1\r\n", b"_\r\n")


@pytest.mark.parametrize(
    "write",
    [("SET", "k", "same"), ("DEL", "k"), ("APPEND", "k", "x"), ("EXPIRE", "k", "100"),
     ("INCR", "counter"), ("RENAME", "k", "k2"), ("GETDEL", "k"), ("MSET", "z", "1", "k", "2")],
    ids=["set_same_value", "del", "append", "expire", "incr", "rename", "getdel", "mset"],
)
def test_watched_key_touched_by_any_write_aborts(
    diff: Differential, other: Differential, write: tuple[str, ...]
) -> None:
    diff.call("SET", "k", "same")
    diff.call("SET", "counter", "1")
    diff.call("WATCH", "k", "counter")
    other.call(*write)
    assert run_transaction(diff, ("PING",)) == b"*-1\r\n"


@pytest.mark.parametrize(
    "no_op",
    [("GET", "k"), ("EXISTS", "k"), ("TTL", "k"), ("SET", "k", "x", "NX"), ("DEL", "missing"),
     ("EXPIRE", "missing", "10"), ("PERSIST", "k"), ("SET", "other", "1")],
    ids=["get", "exists", "ttl", "set_nx_fails", "del_missing", "expire_missing",
         "persist_without_ttl", "other_key"],
)
def test_reads_and_failed_writes_do_not_abort(
    diff: Differential, other: Differential, no_op: tuple[str, ...]
) -> None:
    diff.call("SET", "k", "v")
    diff.call("WATCH", "k", "missing")
    other.call(*no_op)
    assert run_transaction(diff, ("GET", "k")) == b"*1\r\n$1\r\nv\r\n"


def test_watched_missing_key_deleted_again_does_not_abort(
    diff: Differential, other: Differential
) -> None:
    diff.call("WATCH", "gone")
    other.call("DEL", "gone", "also-gone")
    assert run_transaction(diff, ("PING",)) == b"*1\r\n+PONG\r\n"


def test_watch_key_modified_by_the_same_client_before_multi(diff3: Differential) -> None:
    diff3.call("WATCH", "k")
    diff3.call("SET", "k", "mine")
    assert run_transaction(diff3, ("GET", "k")) in (b"*-1\r\n", b"_\r\n")


def test_writes_inside_the_transaction_do_not_abort_it(diff3: Differential) -> None:
    diff3.call("WATCH", "k")
    reply = run_transaction(diff3, ("SET", "k", "1"), ("INCR", "k"), ("GET", "k"))
    assert reply.startswith(b"*3\r\n")


def test_watch_inside_multi_is_an_error_but_does_not_abort(diff3: Differential) -> None:
    diff3.call("MULTI")
    assert diff3.call("WATCH", "k") == b"-ERR WATCH inside MULTI is not allowed\r\n"
    diff3.call("SET", "k", "v")
    assert diff3.call("EXEC") == b"*1\r\n+OK\r\n"


def test_unwatch_forgets_the_keys(diff: Differential, other: Differential) -> None:
    diff.call("WATCH", "k")
    assert diff.call("UNWATCH") == OK
    other.call("SET", "k", "x")
    assert run_transaction(diff, ("GET", "k")) == b"*1\r\n$1\r\nx\r\n"


def test_unwatch_without_watch_and_inside_multi(diff: Differential) -> None:
    assert diff.call("UNWATCH") == OK
    diff.call("MULTI")
    assert diff.call("UNWATCH") == QUEUED
    diff.call("EXEC")


def test_watch_several_keys_one_written(diff: Differential, other: Differential) -> None:
    diff.call("WATCH", "a", "b")
    diff.call("WATCH", "c")  # WATCH adds to the watched set
    other.call("SET", "c", "1")
    assert run_transaction(diff, ("PING",)) == b"*-1\r\n"


def test_watch_is_per_database(diff: Differential, other: Differential) -> None:
    diff.call("WATCH", "k")
    other.call("SELECT", "1")
    other.call("SET", "k", "in db 1")
    assert run_transaction(diff, ("PING",)) == b"*1\r\n+PONG\r\n"


def test_watch_in_another_db_than_exec(diff: Differential, other: Differential) -> None:
    diff.call("SELECT", "3")
    diff.call("WATCH", "k")
    diff.call("SELECT", "0")
    other.call("SELECT", "3")
    other.call("SET", "k", "x")
    assert run_transaction(diff, ("PING",)) == b"*-1\r\n"


def test_exec_clears_the_watches(diff: Differential, other: Differential) -> None:
    diff.call("WATCH", "k")
    run_transaction(diff, ("PING",))
    other.call("SET", "k", "x")
    assert run_transaction(diff, ("PING",)) == b"*1\r\n+PONG\r\n"


def test_aborted_exec_clears_the_watches(diff: Differential, other: Differential) -> None:
    diff.call("WATCH", "k")
    other.call("SET", "k", "x")
    assert run_transaction(diff, ("PING",)) == b"*-1\r\n"
    other.call("SET", "k", "y")
    assert run_transaction(diff, ("PING",)) == b"*1\r\n+PONG\r\n"


def test_discard_clears_the_watches(diff: Differential, other: Differential) -> None:
    diff.call("WATCH", "k")
    diff.call("MULTI")
    diff.call("DISCARD")
    other.call("SET", "k", "x")
    assert run_transaction(diff, ("PING",)) == b"*1\r\n+PONG\r\n"


def test_execabort_clears_the_watches(diff: Differential, other: Differential) -> None:
    diff.call("WATCH", "k")
    diff.call("MULTI")
    diff.call("NOSUCH")
    diff.call("EXEC")
    other.call("SET", "k", "x")
    assert run_transaction(diff, ("PING",)) == b"*1\r\n+PONG\r\n"


def test_watch_then_flushdb_of_a_watched_key(
    diff3: Differential, other: Differential
) -> None:
    diff3.call("SET", "k", "v")
    diff3.call("WATCH", "k")
    other.call("FLUSHDB")
    assert run_transaction(diff3, ("PING",)) in (b"*-1\r\n", b"_\r\n")


def test_flushdb_does_not_abort_for_a_watched_missing_key(
    diff: Differential, other: Differential
) -> None:
    # Redis 7 touches only watched keys that existed in the flushed database.
    other.call("SET", "unrelated", "1")
    diff.call("WATCH", "k")
    other.call("FLUSHDB")
    assert run_transaction(diff, ("PING",)) == b"*1\r\n+PONG\r\n"


def test_flushdb_of_another_db_does_not_abort(diff: Differential, other: Differential) -> None:
    diff.call("SET", "k", "v")
    diff.call("WATCH", "k")
    other.call("SELECT", "1")
    other.call("SET", "k", "v")
    other.call("FLUSHDB")
    assert run_transaction(diff, ("PING",)) == b"*1\r\n+PONG\r\n"


def test_flushall_aborts_a_watch_on_an_existing_key(
    diff: Differential, other: Differential
) -> None:
    diff.call("SELECT", "2")
    diff.call("SET", "k", "v")
    diff.call("WATCH", "k")
    other.call("FLUSHALL")
    assert run_transaction(diff, ("PING",)) == b"*-1\r\n"


def _wait_until_expired(conn: RawConnection, key: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while conn.call("EXISTS", key) != b":0\r\n":
        assert time.monotonic() < deadline, f"{key} did not expire"
        time.sleep(0.01)


def test_watched_key_expiring_before_exec_aborts(
    diff3: Differential, other: Differential
) -> None:
    diff3.call("SET", "k", "v", "PX", "100")
    diff3.call("WATCH", "k")
    diff3.call("MULTI")
    diff3.call("GET", "k")
    _wait_until_expired(other.ours, "k")
    _wait_until_expired(other.theirs, "k")
    assert diff3.call("EXEC") in (b"*-1\r\n", b"_\r\n")


def test_watched_key_expiring_unobserved_before_exec_aborts(diff: Differential) -> None:
    # Nobody looks at the key, so only EXEC's own check can notice it expired.
    diff.call("SET", "k", "v", "PX", "50")
    diff.call("WATCH", "k")
    expired_at = time.monotonic() + 0.05
    diff.call("MULTI")
    diff.call("PING")
    while time.monotonic() < expired_at + 0.05:  # the condition is the clock itself
        time.sleep(0.01)
    assert diff.call("EXEC") == b"*-1\r\n"


def test_watched_key_with_a_ttl_that_has_not_expired(diff: Differential) -> None:
    diff.call("SET", "k", "v", "PX", "100000")
    diff.call("WATCH", "k")
    assert run_transaction(diff, ("GET", "k")) == b"*1\r\n$1\r\nv\r\n"


def test_watch_of_a_key_already_expired_is_not_a_change(diff: Differential) -> None:
    diff.call("SET", "k", "v", "PX", "1")
    expired_at = time.monotonic() + 0.001
    while time.monotonic() < expired_at + 0.02:
        time.sleep(0.005)
    # The key is logically gone when watched: its removal later is not a modification.
    diff.call("WATCH", "k")
    assert run_transaction(diff, ("EXISTS", "k")) == b"*1\r\n:0\r\n"


# --- redis-py ----------------------------------------------------------------------------------


def test_redis_py_pipeline_is_a_transaction(r: redis.Redis) -> None:
    with r.pipeline() as pipe:
        pipe.set("a", "1")
        pipe.incr("a")
        pipe.get("a")
        pipe.get("missing")
        assert pipe.execute() == [True, 2, b"2", None]


def test_redis_py_pipeline_runtime_error(r: redis.Redis) -> None:
    r.set("text", "abc")
    with r.pipeline() as pipe:
        pipe.set("a", "1")
        pipe.incr("text")
        pipe.get("a")
        results = pipe.execute(raise_on_error=False)
    assert results[0] is True
    assert isinstance(results[1], redis.ResponseError)
    assert results[2] == b"1"


def test_redis_py_pipeline_queue_error_raises_execabort(r: redis.Redis) -> None:
    with r.pipeline() as pipe:
        pipe.set("a", "1")
        pipe.execute_command("NOSUCHCOMMAND")  # type: ignore[no-untyped-call]
        with pytest.raises(redis.ResponseError):
            pipe.execute()
    assert r.get("a") is None


def test_redis_py_watch_error(r: redis.Redis, respkv_port: int) -> None:
    other = redis.Redis(port=respkv_port)
    try:
        with r.pipeline() as pipe:
            pipe.watch("k")  # type: ignore[no-untyped-call]
            other.set("k", "changed")
            pipe.multi()
            pipe.set("k", "mine")
            with pytest.raises(redis.WatchError):
                pipe.execute()
    finally:
        other.close()
    assert r.get("k") == b"changed"


def test_redis_py_transaction_retry_loop_counts_exactly(respkv_port: int) -> None:
    threads_count, increments = 4, 40
    attempts = [0]
    lock = threading.Lock()

    def worker() -> None:
        client = redis.Redis(port=respkv_port)
        try:
            def incr(pipe: redis.client.Pipeline) -> None:
                with lock:
                    attempts[0] += 1
                value = int(pipe.get("counter") or 0)
                pipe.multi()
                pipe.set("counter", value + 1)

            for _ in range(increments):
                client.transaction(incr, "counter")
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    check = redis.Redis(port=respkv_port)
    try:
        assert int(check.get("counter") or 0) == threads_count * increments
    finally:
        check.close()
    assert attempts[0] >= threads_count * increments


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_asyncio_transaction_with_watch(respkv_port: int, protocol: int) -> None:
    async def main() -> None:
        client = redis.asyncio.Redis(port=respkv_port, protocol=protocol)
        other = redis.asyncio.Redis(port=respkv_port, protocol=protocol)
        try:
            async with client.pipeline() as pipe:
                pipe.set("a", "1")
                pipe.incr("a")
                assert await pipe.execute() == [True, 2]

            retries = 0

            async def bump(pipe: redis.asyncio.client.Pipeline) -> None:
                nonlocal retries
                value = int(await pipe.get("a") or 0)
                if retries == 0:
                    retries += 1
                    await other.set("a", "100")  # forces exactly one retry
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set("a", value + 1)

            await client.transaction(bump, "a")
            assert await client.get("a") == b"101"
        finally:
            await client.aclose()
            await other.aclose()

    asyncio.run(main())
