"""Server limits end to end: requirepass and the unauthenticated request limits,
proto-max-bulk-len, maxclients, the idle-client timeout and protected mode.

Each limit runs on a pair of dedicated servers (respkv-server and redis-server started with the
same options), and respkv's bytes are compared with redis-server's.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from respkv.commands.table import COMMANDS
from respkv.protocol import _is_loopback
from tests.servers import RawConnection, ServerProcess, encode_command, redis_server, respkv_server

PASSWORD = "sekret"
QUIT = b"*1\r\n$4\r\nQUIT\r\n"

Pair = tuple[ServerProcess, ServerProcess]  # (respkv, redis)


def start_pair(workdir: Path, *options: str) -> Pair:
    ours = respkv_server(workdir / "respkv", *options)
    theirs = redis_server(workdir / "redis", *options)
    ours.start()
    try:
        theirs.start()
    except BaseException:
        ours.stop()
        raise
    return ours, theirs


def stop_pair(pair: Pair) -> None:
    for server in pair:
        server.stop()


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with RawConnection(port, timeout=timeout) as conn:
        conn.send_raw(data)
        return conn.read_until_close(timeout)


def same_until_close(pair: Pair, data: bytes) -> bytes:
    mine = exchange(pair[0].port, data)
    ref = exchange(pair[1].port, data)
    assert mine == ref, f"{data[:100]!r}: respkv {mine[:300]!r} != redis {ref[:300]!r}"
    return mine


def same_replies(pair: Pair, *commands: tuple[str | bytes | int, ...]) -> list[bytes]:
    """Run commands on a fresh connection to each server; assert identical replies."""
    with pair[0].connect() as mine, pair[1].connect() as ref:
        replies = []
        for argv in commands:
            got, want = mine.call(*argv), ref.call(*argv)
            assert got == want, f"{argv!r}: respkv {got!r} != redis {want!r}"
            replies.append(got)
    return replies


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# --- requirepass ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    pair = start_pair(tmp_path_factory.mktemp("auth"), "--requirepass", PASSWORD)
    yield pair
    stop_pair(pair)


BEFORE_AUTH = {
    "data_read": ("GET", "k"),
    "data_write": ("SET", "k", "v"),
    "ping": ("PING",),
    "select": ("SELECT", "1"),
    "multi": ("MULTI",),
    "exec": ("EXEC",),
    "watch": ("WATCH", "k"),
    "unknown_command": ("NOSUCH", "arg"),
    "wrong_arity_checked_first": ("GET",),
    "wrong_arity_set": ("SET", "k"),
    "auth_wrong_password": ("AUTH", "wrong"),
    "auth_wrong_user": ("AUTH", "nobody", PASSWORD),
    "auth_too_many_args": ("AUTH", "a", "b", "c"),
    "hello_without_auth": ("HELLO", "3"),
    "hello_without_auth_resp2": ("HELLO", "2"),
    "hello_bad_password": ("HELLO", "3", "AUTH", "default", "wrong"),
    "hello_bad_version": ("HELLO", "4", "AUTH", "default", PASSWORD),
}


@pytest.mark.parametrize("argv", BEFORE_AUTH.values(), ids=BEFORE_AUTH.keys())
def test_reply_before_auth_matches_redis(auth_pair: Pair, argv: tuple[str, ...]) -> None:
    same_replies(auth_pair, argv, ("GET", "k"))


def test_every_command_needs_auth_unless_redis_says_no_auth(auth_pair: Pair) -> None:
    unsafe = {"shutdown", "quit", "reset", "auth", "hello", "debug", "monitor"}
    probes: list[tuple[str, ...]] = []
    for raw_name, spec in sorted(COMMANDS.items()):
        name = raw_name.decode()
        if name in unsafe:
            continue
        if not spec.subcommands:
            probes.append((name, *["x"] * (abs(spec.arity) - 1)))
        for sub in spec.subcommands.values():
            probes.append((name, sub.name, *["x"] * (abs(sub.arity) - 2)))
    assert len(probes) > 10
    mismatches = []
    with auth_pair[0].connect() as mine, auth_pair[1].connect() as ref:
        for argv in probes:
            got, want = mine.call(*argv), ref.call(*argv)
            if want.startswith((b"-ERR unknown command", b"-ERR unknown subcommand")):
                continue  # newer than redis-server 7.0 (CLIENT SETINFO ...)
            if got != want:
                mismatches.append((argv, got[:100], want[:100]))
    assert not mismatches, mismatches


def test_auth_then_commands_work(auth_pair: Pair) -> None:
    replies = same_replies(
        auth_pair,
        ("GET", "k"),
        ("AUTH", PASSWORD),
        ("SET", "k", "v"),
        ("GET", "k"),
        ("AUTH", "wrong"),
        ("GET", "k"),  # a failed AUTH does not log an authenticated client out
        ("AUTH", "default", PASSWORD),
        ("DEL", "k"),
    )
    assert replies[1] == b"+OK\r\n"
    assert replies[3] == b"$1\r\nv\r\n"


def test_hello_with_auth_authenticates(auth_pair: Pair) -> None:
    ours, theirs = auth_pair
    for server in auth_pair:
        with server.connect() as conn:
            reply = conn.call("HELLO", "3", "AUTH", "default", PASSWORD)
            assert reply.startswith(b"%7\r\n"), reply
            assert b"$5\r\nproto\r\n:3\r\n" in reply
            assert conn.call("PING") == b"+PONG\r\n"
    del ours, theirs


def test_quit_before_auth(auth_pair: Pair) -> None:
    assert same_until_close(auth_pair, b"GET k\r\nQUIT\r\n") == (
        b"-NOAUTH Authentication required.\r\n+OK\r\n"
    )


UNAUTHENTICATED_LIMITS = {
    "multibulk_count_over_10": b"*11\r\n",
    "multibulk_count_far_over": b"*1000\r\n$3\r\nGET\r\n",
    "bulk_over_16k": b"*1\r\n$16385\r\n",
    "bulk_over_16k_second_arg": b"*2\r\n$3\r\nSET\r\n$100000\r\n",
    "error_after_noauth_replies": b"GET a\r\nPING\r\n*2\r\n$3\r\nGET\r\n$20000\r\n",
    "inline_too_big": b"x" * 70_000,
}


@pytest.mark.parametrize(
    "data", UNAUTHENTICATED_LIMITS.values(), ids=UNAUTHENTICATED_LIMITS.keys()
)
def test_unauthenticated_request_limits(auth_pair: Pair, data: bytes) -> None:
    reply = same_until_close(auth_pair, data)
    assert b"Protocol error" in reply


def test_unauthenticated_requests_at_the_limits_are_read(auth_pair: Pair) -> None:
    at_limit = encode_command("MSET", *["x"] * 9) + encode_command("ECHO", "y" * 16384)
    reply = same_until_close(auth_pair, at_limit + QUIT)
    assert reply.count(b"NOAUTH") == 2


def test_auth_lifts_the_limits_for_the_rest_of_the_same_write(auth_pair: Pair) -> None:
    # AUTH runs before the next request is parsed, so a big request right behind it in the
    # same packet is read with the authenticated limits, as redis-server does.
    data = (
        encode_command("AUTH", PASSWORD)
        + encode_command("MSET", *[f"k{i}" for i in range(6)])
        + encode_command("SET", "big", "b" * 20_000)
        + encode_command("STRLEN", "big")
        + QUIT
    )
    assert same_until_close(auth_pair, data) == b"+OK\r\n+OK\r\n+OK\r\n:20000\r\n+OK\r\n"


def test_limits_after_auth_in_an_earlier_write(auth_pair: Pair) -> None:
    for server in auth_pair:
        with server.connect() as conn:
            assert conn.call("AUTH", PASSWORD) == b"+OK\r\n"
            assert conn.call("MSET", *[f"k{i}" for i in range(20)]) == b"+OK\r\n"
            assert conn.call("SET", "big", "b" * 100_000) == b"+OK\r\n"
            assert conn.call("STRLEN", "big") == b":100000\r\n"


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_with_password(auth_pair: Pair, protocol: int) -> None:
    client = redis.Redis(port=auth_pair[0].port, password=PASSWORD, protocol=protocol)
    try:
        assert client.set("py", "1")
        assert client.get("py") == b"1"
    finally:
        client.close()
    # No retries: redis-py otherwise retries the AuthenticationError with backoff.
    anonymous = redis.Redis(port=auth_pair[0].port, protocol=2, retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("py")
    finally:
        anonymous.close()


# --- proto-max-bulk-len ------------------------------------------------------------------------

BULK_MAX = 1024 * 1024  # the smallest value redis-server accepts


@pytest.fixture(scope="module")
def bulk_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    pair = start_pair(tmp_path_factory.mktemp("bulk"), "--proto-max-bulk-len", str(BULK_MAX))
    yield pair
    stop_pair(pair)


def test_bulk_over_proto_max_bulk_len_closes(bulk_pair: Pair) -> None:
    data = encode_command("PING") + b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (BULK_MAX + 1)
    assert same_until_close(bulk_pair, data) == (
        b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    )


def test_bulk_at_proto_max_bulk_len_is_accepted(bulk_pair: Pair) -> None:
    value = b"z" * BULK_MAX
    replies = same_replies(
        bulk_pair, ("SET", "k", value), ("STRLEN", "k"), ("GET", "k"), ("DEL", "k")
    )
    assert replies[:2] == [b"+OK\r\n", b":%d\r\n" % BULK_MAX]


def test_config_get_proto_max_bulk_len(bulk_pair: Pair) -> None:
    same_replies(bulk_pair, ("CONFIG", "GET", "proto-max-bulk-len"))


# --- maxclients --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maxclients_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    pair = start_pair(tmp_path_factory.mktemp("maxclients"), "--maxclients", "3")
    yield pair
    stop_pair(pair)


def _served_connection(server: ServerProcess) -> RawConnection:
    """A connection that got PONG; retries while the server still counts a closed client."""
    deadline = time.monotonic() + 5
    while True:
        conn = server.connect()
        try:
            if conn.call("PING") == b"+PONG\r\n":
                return conn
        except ConnectionError:
            pass
        conn.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"{server.name}: no connection slot freed")
        time.sleep(0.05)


def test_connection_over_maxclients_is_refused(maxclients_pair: Pair) -> None:
    refusals = []
    for server in maxclients_pair:
        conns = [_served_connection(server) for _ in range(3)]
        try:
            with server.connect() as fourth:
                refusals.append(fourth.read_until_close())
            # The refused client took no slot; the three keep working.
            for conn in conns:
                assert conn.call("PING") == b"+PONG\r\n"
            conns.pop().close()
            _served_connection(server).close()  # a freed slot is reused
        finally:
            for conn in conns:
                conn.close()
    assert refusals[0] == refusals[1] == b"-ERR max number of clients reached\r\n"


def test_maxclients_in_config_get(maxclients_pair: Pair) -> None:
    for server in maxclients_pair:
        with _served_connection(server) as conn:
            assert conn.call("CONFIG", "GET", "maxclients") == (
                b"*2\r\n$10\r\nmaxclients\r\n$1\r\n3\r\n"
            )


# --- Idle timeout ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timeout_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    pair = start_pair(tmp_path_factory.mktemp("timeout"), "--timeout", "1")
    yield pair
    stop_pair(pair)


def _closed_by_server(conn: RawConnection) -> bool:
    conn.sock.setblocking(False)
    try:
        data = conn.sock.recv(1024)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        conn.sock.setblocking(True)
    assert data == b"", f"unexpected bytes from an idle connection: {data!r}"
    return True


def test_idle_client_is_closed_and_active_one_is_not(timeout_pair: Pair) -> None:
    idle = [server.connect() for server in timeout_pair]
    active = [server.connect() for server in timeout_pair]
    started = time.monotonic()
    closed_at: dict[int, float] = {}
    deadline = started + 6
    next_ping = started
    while len(closed_at) < len(idle) and time.monotonic() < deadline:
        for index, conn in enumerate(idle):
            if index not in closed_at and _closed_by_server(conn):
                closed_at[index] = time.monotonic() - started
        if time.monotonic() >= next_ping:
            for conn in active:
                assert conn.call("PING") == b"+PONG\r\n"
            next_ping = time.monotonic() + 0.3
        time.sleep(0.02)
    assert sorted(closed_at) == [0, 1], f"idle clients still open after 6 s: {closed_at}"
    # Redis closes a client idle for more than `timeout` whole seconds, checked in its cron.
    assert 0.9 <= closed_at[0] <= 4.0, closed_at
    for conn in active:
        assert conn.call("PING") == b"+PONG\r\n"
    for conn in idle + active:
        conn.close()


def test_idle_client_inside_multi_is_closed_too(timeout_pair: Pair) -> None:
    conns = [server.connect() for server in timeout_pair]
    for conn in conns:
        assert conn.call("MULTI") == b"+OK\r\n"
    wait_for(lambda: _closed_by_server(conns[1]), 5, "redis-server closing the MULTI client")
    wait_for(lambda: _closed_by_server(conns[0]), 2, "respkv closing the MULTI client")
    for conn in conns:
        conn.close()


# --- Protected mode ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def protected_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    pair = start_pair(tmp_path_factory.mktemp("protected"), "--protected-mode", "yes")
    yield pair
    stop_pair(pair)


def _non_loopback_address() -> str:
    """An address of this host that is not loopback (where the default route leaves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        address = str(probe.getsockname()[0])
    assert not ipaddress.ip_address(address).is_loopback, address
    return address


def _read_from(source: str, port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_protected_mode_serves_loopback_clients(protected_pair: Pair) -> None:
    same_replies(protected_pair, ("PING",), ("SET", "k", "v"), ("GET", "k"), ("DEL", "k"))


def test_protected_mode_denies_other_addresses(protected_pair: Pair) -> None:
    # The servers listen on 127.0.0.1; a socket bound to this host's LAN address reaches
    # them through the loopback device but with a non-loopback peer address.
    source = _non_loopback_address()
    mine = _read_from(source, protected_pair[0].port)
    ref = _read_from(source, protected_pair[1].port)
    assert ref.startswith(b"-DENIED Redis is running in protected mode")
    # respkv names itself and uses Redis 7.2's wording ("Set up an" for 7.0's "Setup a an").
    expected = ref.replace(b"Setup a an", b"Set up an").replace(b"Redis", b"respkv")
    assert mine == expected
    # The denied client cost nothing: loopback clients are still served.
    same_replies(protected_pair, ("PING",))


def test_is_loopback_rule() -> None:
    # Redis 7.2's connSocketIsLocal: any 127.x address or ::1; unix sockets have no address.
    assert _is_loopback(("127.0.0.1", 5000))
    assert _is_loopback(("127.0.0.2", 5000))
    assert _is_loopback(("127.255.255.254", 1))
    assert _is_loopback(("::1", 5000, 0, 0))
    assert _is_loopback("")
    assert _is_loopback(None)
    assert not _is_loopback(("192.0.2.2", 5000))
    assert not _is_loopback(("10.0.0.1", 5000))
    assert not _is_loopback(("::ffff:127.0.0.1", 5000, 0, 0))
    assert not _is_loopback(("fe80::1%eth0", 5000, 0, 2))
    assert not _is_loopback(("2001:db8::1", 5000, 0, 0))
    assert not _is_loopback(("0.0.0.0", 1))
    assert not _is_loopback(("not-an-ip", 1))
