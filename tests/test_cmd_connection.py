"""Connection commands (respkv/commands/connection.py): PING ECHO QUIT RESET HELLO AUTH
SELECT and CLIENT.

Layers:
- differential against redis-server 7.0, byte for byte, in RESP2 and RESP3; a pair of
  servers started with `--requirepass pw` covers the authentication paths;
- HELLO's map compared by structure (server name, version and client id differ by design);
- CLIENT LIST / INFO / KILL on live connections; CLIENT SETINFO (Redis 7.2, which the 7.0
  reference lacks) against 7.2's texts;
- real clients: redis-py 8 sync and asyncio with protocol 2 and 3 (HELLO 3, then CLIENT
  SETINFO), with and without a password; redis-cli, including --pipe.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

import respkv
from tests.conftest import Differential
from tests.servers import RawConnection, ServerProcess, encode_command, redis_server, respkv_server
from tests.test_cmd_introspection import parse_typed, plain

PASSWORD = "pw"


@pytest.fixture(scope="module")
def password_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """respkv and redis-server, both with requirepass."""
    ours = respkv_server(tmp_path_factory.mktemp("respkv-pw"), "--requirepass", PASSWORD)
    theirs = redis_server(tmp_path_factory.mktemp("redis-pw"), "--requirepass", PASSWORD)
    ours.start()
    try:
        theirs.start()
    except BaseException:
        ours.stop()
        raise
    yield ours, theirs
    ours.stop()
    theirs.stop()


@pytest.fixture
def pwdiff(password_servers: tuple[ServerProcess, ServerProcess]) -> Iterator[Differential]:
    ours, theirs = password_servers
    pair = Differential(RawConnection(ours.port), RawConnection(theirs.port))
    yield pair
    pair.ours.close()
    pair.theirs.close()


# PING, ECHO ------------------------------------------------------------------------------


def test_ping(diff3: Differential) -> None:
    diff3.call("PING")
    diff3.call("ping", "hello")
    diff3.call("PING", "")
    diff3.call("PING", b"\x00\xff\r\n")
    diff3.call("PING", "a", "b")


def test_echo(diff3: Differential) -> None:
    diff3.call("ECHO", "hello")
    diff3.call("ECHO", "")
    diff3.call("ECHO", b"\x00bin\xffary\r\n")
    diff3.call("ECHO", "x" * 100_000)
    diff3.call("ECHO")
    diff3.call("ECHO", "a", "b")


def test_inline_ping_and_echo(diff: Differential) -> None:
    diff.ours.send_raw(b"PING\r\nECHO hi\r\n")
    diff.theirs.send_raw(b"PING\r\nECHO hi\r\n")
    for _ in range(2):
        assert diff.ours.read_reply() == diff.theirs.read_reply()


# SELECT ----------------------------------------------------------------------------------

SELECT_ARGS = [
    "0", "15", "16", "-1", "1.5", "99999999999999", "2147483648", "-2147483649",
    "99999999999999999999", "0x1", " 1", "1 ", "01", "+1", "", "abc", "-0",
]


@pytest.mark.parametrize("index", SELECT_ARGS)
def test_select(diff3: Differential, index: str) -> None:
    diff3.call("SELECT", index)


def test_select_switches_database(diff: Differential) -> None:
    diff.call("SELECT", "3")
    diff.call("SET", "k", "in3")
    diff.call("SELECT", "0")
    diff.call("GET", "k")
    diff.call("SELECT", "3")
    diff.call("GET", "k")
    diff.call("SELECT")
    diff.call("SELECT", "1", "2")


# QUIT ------------------------------------------------------------------------------------


def test_quit_replies_ok_then_closes(diff: Differential) -> None:
    assert diff.raw(encode_command("QUIT")) == b"+OK\r\n"


def test_quit_with_arguments_and_pipelined_commands(diff: Differential) -> None:
    data = encode_command("PING") + encode_command("QUIT", "x", "y") + encode_command("PING")
    assert diff.raw(data) == b"+PONG\r\n+OK\r\n"


def test_quit_inside_multi(diff: Differential) -> None:
    data = encode_command("MULTI") + encode_command("QUIT") + encode_command("PING")
    assert diff.raw(data) == b"+OK\r\n+OK\r\n"


# HELLO -----------------------------------------------------------------------------------


def _hello_fields(reply: bytes) -> list[tuple[str, object]]:
    """HELLO's reply with its types kept, values dropped where the servers differ."""
    kind, value = parse_typed(reply)
    pairs = value if kind == "%" else list(zip(value[::2], value[1::2], strict=True))
    out: list[tuple[str, object]] = [("kind", kind)]
    for key, item in pairs:
        name = plain(key).decode()
        if name in ("server", "version", "id"):
            out.append((name, item[0]))
        else:
            out.append((name, item))
    return out


def test_hello_shapes(diff: Differential) -> None:
    for args in ((), ("3",), ("2",), ("3",), (), ("2",), ()):
        ours, theirs = diff.both("HELLO", *args)
        assert _hello_fields(ours) == _hello_fields(theirs), args


def test_hello_reply_values(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        client_id = plain(parse_typed(conn.call("CLIENT", "ID")))
        reply = plain(parse_typed(conn.call("HELLO", "3")))
        assert reply == {
            b"server": b"respkv",
            b"version": respkv.REDIS_COMPAT_VERSION.encode(),
            b"proto": 3,
            b"id": client_id,
            b"mode": b"standalone",
            b"role": b"master",
            b"modules": [],
        }
        # The connection now speaks RESP3: a null is "_", a map "%".
        assert conn.call("GET", "no-such-key") == b"_\r\n"
        assert conn.call("HELLO").startswith(b"%7\r\n")
        assert conn.call("HELLO", "2").startswith(b"*14\r\n")
        assert conn.call("GET", "no-such-key") == b"$-1\r\n"


HELLO_ERRORS = [
    ("4",), ("1",), ("0",), ("-1",), ("x",), ("3.0",), ("",), ("3", "foo"), ("3", "SETNAME"),
    ("3", "setname", "a b"), ("3", "setname", "a\nb"), ("3", "AUTH"), ("3", "auth", "default"),
    ("3", "auth", "nobody", "x"), ("2", "setname", "ok", "extra"), ("3", "auth", "a", "b", "c"),
    ("99999999999999999999",),
]


@pytest.mark.parametrize("args", HELLO_ERRORS)
def test_hello_errors(diff3: Differential, args: tuple[str, ...]) -> None:
    diff3.call("HELLO", *args)
    diff3.call("CLIENT", "GETNAME")


def test_hello_setname_and_auth_without_password(diff: Differential) -> None:
    ours, theirs = diff.both("HELLO", "3", "AUTH", "default", "anything", "SETNAME", "n1")
    assert _hello_fields(ours) == _hello_fields(theirs)
    diff.call("CLIENT", "GETNAME")
    ours, theirs = diff.both("HELLO", "2", "SETNAME", "")
    assert _hello_fields(ours) == _hello_fields(theirs)
    diff.call("CLIENT", "GETNAME")


# AUTH ------------------------------------------------------------------------------------


def test_auth_without_a_configured_password(diff3: Differential) -> None:
    diff3.call("AUTH", "secret")
    diff3.call("AUTH", "default", "anything")
    diff3.call("AUTH", "nobody", "x")
    diff3.call("AUTH", "a", "b", "c")
    diff3.call("AUTH")
    diff3.call("PING")


def test_requirepass_refuses_commands_before_auth(pwdiff: Differential) -> None:
    for args in (("PING",), ("GET", "k"), ("SELECT", "1"), ("CLIENT", "ID"), ("ECHO", "x"),
                 ("HELLO",), ("HELLO", "3"), ("HELLO", "2", "SETNAME", "x"),
                 ("COMMAND", "COUNT"), ("CLIENT", "SETNAME", "x")):
        pwdiff.call(*args)


def test_requirepass_auth_paths(pwdiff: Differential) -> None:
    pwdiff.call("AUTH", "wrong")
    pwdiff.call("AUTH", "default", "wrong")
    pwdiff.call("AUTH", "nobody", PASSWORD)
    pwdiff.call("AUTH", "a", "b", "c")
    pwdiff.call("PING")
    pwdiff.call("AUTH", PASSWORD)
    pwdiff.call("PING")
    pwdiff.call("AUTH", "wrong")  # a failed AUTH keeps the connection authenticated
    pwdiff.call("PING")
    pwdiff.call("AUTH", "default", PASSWORD)
    pwdiff.call("RESET")
    pwdiff.call("PING")  # RESET forgets the authentication
    pwdiff.call("QUIT")


def test_requirepass_hello_auth(pwdiff: Differential) -> None:
    pwdiff.call("HELLO", "3", "AUTH", "default", "wrong")
    pwdiff.call("HELLO", "3", "AUTH", "nobody", PASSWORD)
    pwdiff.call("HELLO", "3", "SETNAME", "bad name", "AUTH", "default", PASSWORD)
    pwdiff.call("PING")
    ours, theirs = pwdiff.both("HELLO", "3", "AUTH", "default", PASSWORD, "SETNAME", "me")
    assert _hello_fields(ours) == _hello_fields(theirs)
    pwdiff.call("CLIENT", "GETNAME")
    pwdiff.call("PING")
    pwdiff.call("GET", "missing")


def test_requirepass_inline_auth(pwdiff: Differential) -> None:
    data = b"PING\r\nAUTH " + PASSWORD.encode() + b"\r\nPING\r\n"
    pwdiff.ours.send_raw(data)
    pwdiff.theirs.send_raw(data)
    for _ in range(3):
        assert pwdiff.ours.read_reply() == pwdiff.theirs.read_reply()


# RESET -----------------------------------------------------------------------------------


def test_reset_restores_a_fresh_connection(diff: Differential) -> None:
    diff.call("SELECT", "5")
    diff.call("CLIENT", "SETNAME", "before")
    diff.both("HELLO", "3")
    diff.call("RESET")
    diff.call("CLIENT", "GETNAME")
    diff.call("GET", "nothing")  # RESP2 again: $-1, not _
    diff.call("SET", "where", "db0")
    diff.call("SELECT", "0")
    diff.call("GET", "where")
    diff.call("RESET", "extra")


def test_reset_discards_multi_and_watch(diff: Differential) -> None:
    diff.call("WATCH", "w")
    diff.call("MULTI")
    diff.call("SET", "w", "1")
    diff.call("RESET")
    diff.call("EXEC")
    diff.call("GET", "w")


def test_reset_keeps_library_info(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        conn.call("CLIENT", "SETINFO", "LIB-NAME", "mylib")
        conn.call("CLIENT", "SETNAME", "n")
        conn.call("CLIENT", "NO-EVICT", "on")
        assert conn.call("RESET") == b"+RESET\r\n"
        line = _info_line(conn)
        assert " lib-name=mylib " in line
        assert " name= " in line
        assert " flags=N " in line


# CLIENT ----------------------------------------------------------------------------------

CLIENT_NAMES = ["ok", "", "a b", "a\nb", "tab\t", "é", "\x7f", "~!", "x" * 1000, "a\x00b"]


@pytest.mark.parametrize("name", CLIENT_NAMES)
def test_client_setname_getname(diff3: Differential, name: str) -> None:
    diff3.call("CLIENT", "SETNAME", name)
    diff3.call("CLIENT", "GETNAME")


def test_client_errors(diff3: Differential) -> None:
    for args in (
        (), ("NOSUCH",), ("nosuch", "x"), ("ID", "x"), ("GETNAME", "x"), ("SETNAME",),
        ("SETNAME", "a", "b"), ("INFO", "x"), ("LIST", "TYPE", "foo"), ("LIST", "ID", "x"),
        ("LIST", "ID", "1", "x"), ("LIST", "TYPE", "normal", "x"), ("LIST", "foo"),
        ("LIST", "ID"), ("KILL",), ("KILL", "1.2.3.4:5"), ("KILL", "ID", "0"),
        ("KILL", "ID", "x"), ("KILL", "ID", "-5"), ("KILL", "ID", "999999"),
        ("KILL", "ID", "1", "SKIPME", "maybe"), ("KILL", "TYPE", "foo"),
        ("KILL", "USER", "nobody"), ("KILL", "addr"), ("KILL", "foo", "bar"),
        ("KILL", "TYPE", "master"), ("KILL", "TYPE", "pubsub", "SKIPME", "yes"),
        ("KILL", "ADDR", "1.2.3.4:5", "ID"), ("KILL", "ADDR", "1.2.3.4:5", "LADDR", "x:1"),
        ("KILL", "USER", "default", "ADDR", "9.9.9.9:1"), ("NO-EVICT",), ("NO-EVICT", "maybe"),
        ("NO-EVICT", "on"), ("NO-EVICT", "OFF"), ("HELP", "x"),
    ):
        diff3.call("CLIENT", *args)


def test_client_list_type_filters(diff: Differential) -> None:
    diff.call("CLIENT", "LIST", "TYPE", "master")
    diff.call("CLIENT", "LIST", "TYPE", "replica")
    diff.call("CLIENT", "LIST", "TYPE", "SLAVE")
    diff.call("CLIENT", "LIST", "TYPE", "pubsub")
    diff.call("CLIENT", "LIST", "ID", "999999")


def test_client_id_is_unique_and_increasing(respkv_port: int) -> None:
    with RawConnection(respkv_port) as first, RawConnection(respkv_port) as second:
        one = plain(parse_typed(first.call("CLIENT", "ID")))
        two = plain(parse_typed(second.call("CLIENT", "ID")))
        assert isinstance(one, int) and two > one > 0


def _info_line(conn: RawConnection) -> str:
    reply = plain(parse_typed(conn.call("CLIENT", "INFO")))
    assert isinstance(reply, bytes)
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1
    return reply.decode()


FIELDS = [
    "id", "addr", "laddr", "fd", "name", "age", "idle", "flags", "db", "sub", "psub", "ssub",
    "multi", "qbuf", "qbuf-free", "argv-mem", "multi-mem", "rbs", "rbp", "obl", "oll", "omem",
    "tot-mem", "events", "cmd", "user", "redir", "resp", "lib-name", "lib-ver",
]


def _fields(line: str) -> dict[str, str]:
    pairs = [tuple(item.split("=", 1)) for item in line.strip().split(" ")]
    assert [pair[0] for pair in pairs] == FIELDS
    return {name: value for name, value in pairs}


def test_client_info_fields(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        client_id = plain(parse_typed(conn.call("CLIENT", "ID")))
        conn.call("SELECT", "2")
        conn.call("CLIENT", "SETNAME", "worker-1")
        fields = _fields(_info_line(conn))
        local = conn.sock.getsockname()
        assert fields["id"] == str(client_id)
        assert fields["addr"] == f"{local[0]}:{local[1]}"
        assert fields["laddr"] == f"127.0.0.1:{respkv_port}"
        assert int(fields["fd"]) > 0
        assert fields["name"] == "worker-1"
        assert fields["db"] == "2"
        assert fields["flags"] == "N"
        assert fields["multi"] == "-1"
        assert fields["cmd"] == "client|info"
        assert fields["user"] == "default"
        assert fields["resp"] == "2"
        assert fields["lib-name"] == "" and fields["lib-ver"] == ""
        assert fields["events"] == "r" and fields["redir"] == "-1"


def test_client_info_in_resp3_is_verbatim(respkv_port: int, redis_port: int) -> None:
    for port in (respkv_port, redis_port):
        with RawConnection(port) as conn:
            conn.call("HELLO", "3")
            reply = conn.call("CLIENT", "INFO")
            kind, text = parse_typed(reply)
            assert kind == "=" and text.startswith(b"txt:id="), reply


def test_client_info_flags_and_multi(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        conn.call("CLIENT", "NO-EVICT", "on")
        conn.call("CLIENT", "NO-TOUCH", "on")
        assert _fields(_info_line(conn))["flags"] == "eT"
        conn.call("CLIENT", "NO-TOUCH", "off")
        conn.call("CLIENT", "NO-EVICT", "off")
        me = plain(parse_typed(conn.call("CLIENT", "ID")))
        conn.call("WATCH", "flag-key")
        conn.call("MULTI")
        conn.call("SET", "a", "12345")
        with RawConnection(respkv_port) as other:
            other.call("SET", "flag-key", "touched")
            listing = plain(parse_typed(other.call("CLIENT", "LIST", "ID", str(me))))
        fields = _fields(listing.decode())
        assert fields["flags"] == "xd"
        assert fields["multi"] == "1"
        assert int(fields["multi-mem"]) == len(b"SETa12345")
        conn.call("DISCARD")


def test_client_list_shows_every_connection(respkv_port: int) -> None:
    with RawConnection(respkv_port) as first, RawConnection(respkv_port) as second:
        first.call("CLIENT", "SETNAME", "first")
        ids = [plain(parse_typed(conn.call("CLIENT", "ID"))) for conn in (first, second)]
        listing = plain(parse_typed(first.call("CLIENT", "LIST"))).decode()
        lines = listing.splitlines()
        assert listing.endswith("\n")
        by_id = {_fields(line)["id"]: _fields(line) for line in lines}
        assert {str(i) for i in ids} <= set(by_id)
        assert by_id[str(ids[0])]["name"] == "first"
        assert by_id[str(ids[0])]["cmd"] == "client|list"
        assert by_id[str(ids[1])]["cmd"] == "client|id"
        normal = plain(parse_typed(first.call("CLIENT", "LIST", "TYPE", "normal"))).decode()
        assert {str(i) for i in ids} <= {_fields(line)["id"] for line in normal.splitlines()}
        picked = plain(parse_typed(first.call("CLIENT", "LIST", "ID", str(ids[1]), "999999",
                                              str(ids[0])))).decode()
        assert [_fields(line)["id"] for line in picked.splitlines()] == [str(ids[1]), str(ids[0])]


def _closed(conn: RawConnection, timeout: float = 5.0) -> bool:
    conn.sock.settimeout(timeout)
    try:
        return conn.sock.recv(1) == b""
    except (TimeoutError, ConnectionResetError):
        return False


def test_client_kill_by_id_addr_and_laddr(respkv_port: int) -> None:
    with RawConnection(respkv_port) as admin:
        victim = RawConnection(respkv_port)
        victim_id = plain(parse_typed(victim.call("CLIENT", "ID")))
        assert admin.call("CLIENT", "KILL", "ID", str(victim_id)) == b":1\r\n"
        assert _closed(victim)
        victim.close()

        victim = RawConnection(respkv_port)
        host, port = victim.sock.getsockname()[:2]
        victim.call("PING")
        assert admin.call("CLIENT", "KILL", f"{host}:{port}") == b"+OK\r\n"
        assert _closed(victim)
        victim.close()
        assert admin.call("CLIENT", "KILL", f"{host}:{port}") == b"-ERR No such client\r\n"

        victim = RawConnection(respkv_port)
        host, port = victim.sock.getsockname()[:2]
        victim.call("PING")
        reply = admin.call("CLIENT", "KILL", "ADDR", f"{host}:{port}", "LADDR",
                           f"127.0.0.1:{respkv_port}", "USER", "default", "TYPE", "normal")
        assert reply == b":1\r\n"
        assert _closed(victim)
        victim.close()
        assert admin.call("PING") == b"+PONG\r\n"  # SKIPME yes by default


def test_client_kill_self(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        me = plain(parse_typed(conn.call("CLIENT", "ID")))
        assert conn.call("CLIENT", "KILL", "ID", str(me)) == b":0\r\n"  # skipped
        assert conn.call("CLIENT", "KILL", "ID", str(me), "SKIPME", "no") == b":1\r\n"
        assert _closed(conn)
    with RawConnection(respkv_port) as conn:
        host, port = conn.sock.getsockname()[:2]
        assert conn.call("CLIENT", "KILL", f"{host}:{port}") == b"+OK\r\n"
        assert _closed(conn)


def test_client_setinfo_follows_redis_7_2(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        assert conn.call("CLIENT", "SETINFO", "LIB-NAME", "redis-py") == b"+OK\r\n"
        assert conn.call("CLIENT", "SETINFO", "lib-ver", "8.1.0") == b"+OK\r\n"
        fields = _fields(_info_line(conn))
        assert fields["lib-name"] == "redis-py" and fields["lib-ver"] == "8.1.0"
        assert conn.call("CLIENT", "SETINFO", "LIB-NAME", "a b") == (
            b"-ERR LIB-NAME cannot contain spaces, newlines or special characters.\r\n"
        )
        assert conn.call("CLIENT", "SETINFO", "lib-ver", "1.0\n") == (
            b"-ERR lib-ver cannot contain spaces, newlines or special characters.\r\n"
        )
        assert conn.call("CLIENT", "SETINFO", "Lib-Name", "\xe9") == (
            b"-ERR Lib-Name cannot contain spaces, newlines or special characters.\r\n"
        )
        assert conn.call("CLIENT", "SETINFO", "badger", "x") == (
            b"-ERR Unrecognized option 'badger'\r\n"
        )
        assert conn.call("CLIENT", "SETINFO", "LIB-NAME") == (
            b"-ERR wrong number of arguments for 'client|setinfo' command\r\n"
        )
        assert conn.call("CLIENT", "SETINFO", "LIB-NAME", "") == b"+OK\r\n"
        fields = _fields(_info_line(conn))
        assert fields["lib-name"] == "" and fields["lib-ver"] == "8.1.0"


def test_client_no_touch(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        assert conn.call("CLIENT", "NO-TOUCH", "ON") == b"+OK\r\n"
        assert conn.call("CLIENT", "NO-TOUCH", "maybe") == b"-ERR syntax error\r\n"
        assert conn.call("CLIENT", "NO-TOUCH") == (
            b"-ERR wrong number of arguments for 'client|no-touch' command\r\n"
        )


def test_client_help(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        lines = plain(parse_typed(conn.call("CLIENT", "HELP")))
    assert lines[0] == b"CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    assert lines[-2:] == [b"HELP", b"    Prints this help."]
    for sub in ("GETNAME", "ID", "INFO", "KILL", "LIST", "SETNAME", "SETINFO", "NO-EVICT"):
        assert any(line.startswith(sub.encode()) for line in lines), sub


# Real clients ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_sync_handshake(respkv_port: int, protocol: int) -> None:
    client = redis.Redis(port=respkv_port, protocol=protocol, db=4, client_name="py-sync")
    try:
        assert client.ping() is True
        info = client.client_info()
        assert info["lib-name"] == "redis-py"
        assert info["lib-ver"] == redis.__version__
        assert str(info["resp"]) == str(protocol)
        assert str(info["db"]) == "4"
        assert client.client_getname() in ("py-sync", b"py-sync")
        assert client.client_setname("renamed") is True
        assert client.client_id() == int(info["id"])
        assert client.echo("hi") == b"hi"
        assert any(entry["name"] == "renamed" for entry in client.client_list())
    finally:
        client.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_asyncio_handshake(respkv_port: int, protocol: int) -> None:
    async def main() -> None:
        client = redis.asyncio.Redis(port=respkv_port, protocol=protocol)
        try:
            assert await client.ping() is True
            info = await client.client_info()
            assert info["lib-name"] == "redis-py" and str(info["resp"]) == str(protocol)
            hello = await client.execute_command("HELLO")  # type: ignore[no-untyped-call]
            proto = hello.get(b"proto", hello.get("proto")) if isinstance(hello, dict) else None
            if protocol == 3:
                assert proto == 3
            assert await client.echo(b"\x00\xff") == b"\x00\xff"
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_with_password(
    password_servers: tuple[ServerProcess, ServerProcess], protocol: int
) -> None:
    ours, _theirs = password_servers
    client = redis.Redis(port=ours.port, protocol=protocol, password=PASSWORD)
    try:
        assert client.ping() is True
        assert client.client_info()["lib-name"] == "redis-py"
    finally:
        client.close()
    user = redis.Redis(port=ours.port, protocol=protocol, username="default", password=PASSWORD)
    try:
        assert user.ping() is True
    finally:
        user.close()
    wrong = redis.Redis(port=ours.port, protocol=protocol, password="nope")
    try:
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
    finally:
        wrong.close()
    anonymous = redis.Redis(port=ours.port, protocol=protocol)
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    finally:
        anonymous.close()


def test_redis_py_asyncio_with_password(
    password_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    ours, _theirs = password_servers

    async def main() -> None:
        client = redis.asyncio.Redis(port=ours.port, protocol=3, password=PASSWORD)
        try:
            assert await client.ping() is True
            assert await client.select(2) is True
        finally:
            await client.aclose()

    asyncio.run(main())


def _cli(port: int, *args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args], input=stdin, capture_output=True, timeout=30,
        check=True,
    )
    return result.stdout


def test_redis_cli_ping_and_auth(
    respkv_port: int, password_servers: tuple[ServerProcess, ServerProcess]
) -> None:
    assert _cli(respkv_port, "ping") == b"PONG\n"
    assert _cli(respkv_port, "echo", "hello world") == b"hello world\n"
    ours, _theirs = password_servers
    assert _cli(ours.port, "--no-auth-warning", "-a", PASSWORD, "ping") == b"PONG\n"
    assert _cli(ours.port, "-3", "--no-auth-warning", "-a", PASSWORD, "ping") == b"PONG\n"
    assert b"NOAUTH" in _cli(ours.port, "ping")


def test_redis_cli_pipe(respkv_port: int, tmp_path: Path) -> None:
    commands = b"".join(encode_command("SET", f"pipe:{i}", f"v{i}") for i in range(2000))
    out = _cli(respkv_port, "--pipe", stdin=commands)
    assert b"errors: 0, replies: 2000" in out
    with RawConnection(respkv_port) as conn:
        assert conn.call("GET", "pipe:1999") == b"$5\r\nv1999\r\n"


def test_many_clients_list_quickly(respkv_port: int) -> None:
    conns = [RawConnection(respkv_port) for _ in range(50)]
    try:
        for conn in conns:
            conn.call("PING")
        started = time.monotonic()
        listing = plain(parse_typed(conns[0].call("CLIENT", "LIST"))).decode()
        assert time.monotonic() - started < 2.0
        assert len(re.findall(r"^id=", listing, flags=re.M)) >= 50
    finally:
        for conn in conns:
            conn.close()
