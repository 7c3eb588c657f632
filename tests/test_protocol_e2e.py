"""Connection handling end to end, against real respkv-server and redis-server processes.

Covers pipelining (in order, split at every byte, a huge unread pipeline under flow control),
malformed requests of every kind (respkv must send redis-server's bytes, close, and keep
serving everyone else), commands ahead of a protocol error, QUIT, unknown commands, arity
errors, command-name case and empty request lines.

Where redis-server's bytes are the reference the tests compare raw replies (`diff`). Requests
that do not end the connection by themselves get a trailing QUIT so both sides close and the
whole stream can be compared.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from respkv.commands.table import COMMANDS
from tests.conftest import Differential
from tests.servers import RawConnection, ServerProcess, encode_command

QUIT = b"*1\r\n$4\r\nQUIT\r\n"


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send data on a fresh connection and return every byte received until the server closes."""
    with RawConnection(port, timeout=timeout) as conn:
        conn.send_raw(data)
        return conn.read_until_close(timeout)


def both_until_close(respkv_port: int, redis_port: int, data: bytes) -> bytes:
    mine = exchange(respkv_port, data)
    ref = exchange(redis_port, data)
    assert mine == ref, f"{data[:120]!r}: respkv {mine[:400]!r} != redis {ref[:400]!r}"
    return mine


# --- Pipelining --------------------------------------------------------------------------------


def _mixed_commands(count: int) -> list[tuple[bytes | str | int, ...]]:
    commands: list[tuple[bytes | str | int, ...]] = []
    for i in range(count):
        match i % 6:
            case 0:
                commands.append(("SET", f"key:{i}", f"value:{i}"))
            case 1:
                commands.append(("GET", f"key:{i - 1}"))
            case 2:
                commands.append(("INCR", "counter"))
            case 3:
                commands.append(("GET", "missing"))
            case 4:
                commands.append(("APPEND", "log", f"{i},"))
            case _:
                commands.append(("EXISTS", f"key:{i - 5}", "missing", f"key:{i - 5}"))
    return commands


@pytest.mark.parametrize("count", [1, 16, 1000])
def test_pipeline_in_one_write_answers_in_order(diff: Differential, count: int) -> None:
    commands = _mixed_commands(count)
    mine = diff.ours.pipeline(commands)
    ref = diff.theirs.pipeline(commands)
    assert len(mine) == count
    assert mine == ref
    # The counter and the log tell how many commands ran, and in which order.
    diff.call("GET", "counter")
    diff.call("GET", "log")


def test_pipeline_replies_match_request_order(respkv_port: int) -> None:
    with RawConnection(respkv_port) as conn:
        replies = conn.pipeline([("ECHO", f"reply-{i}") for i in range(500)])
    assert replies == [encode_bulk(f"reply-{i}".encode()) for i in range(500)]


def encode_bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


MIXED_PIPELINE = (
    b"PING\r\n"
    + encode_command("SET", "a", "multi\r\nbulk\x00bin")
    + b"GET a\r\n"
    + b"\r\n"
    + b"  \r\n"
    + encode_command("ECHO", "x")
    + b'ECHO "quoted \\x41 arg"\r\n'
    + b"*0\r\n"
    + b"SET b plain\r\n"
    + encode_command("GET", "b")
    + b"get a\n"
    + encode_command("DEL", "a", "b", "c")
    + b"EXISTS a b\r\n"
    + b"PING inline-arg\r\n"
)
MIXED_REPLY_COUNT = 11


def test_mixed_inline_and_multibulk_in_one_write(respkv_port: int, redis_port: int) -> None:
    reply = both_until_close(respkv_port, redis_port, MIXED_PIPELINE + QUIT)
    assert reply.endswith(b"+OK\r\n")
    assert reply.count(b"\r\n") >= MIXED_REPLY_COUNT


def _read_replies(conn: RawConnection, count: int) -> list[bytes]:
    return [conn.read_reply() for _ in range(count)]


def test_pipeline_split_at_every_byte_gives_the_same_replies(
    respkv_port: int, redis_port: int
) -> None:
    with RawConnection(redis_port) as ref_conn:
        ref_conn.send_raw(MIXED_PIPELINE)
        expected = _read_replies(ref_conn, MIXED_REPLY_COUNT)
    with RawConnection(respkv_port) as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.send_raw(MIXED_PIPELINE)
        assert _read_replies(conn, MIXED_REPLY_COUNT) == expected
        for cut in range(1, len(MIXED_PIPELINE)):
            conn.send_raw(MIXED_PIPELINE[:cut])
            # Long enough for the server to read the first part on its own.
            time.sleep(0.002)
            conn.send_raw(MIXED_PIPELINE[cut:])
            got = _read_replies(conn, MIXED_REPLY_COUNT)
            assert got == expected, f"split at byte {cut}"
        assert conn.call("PING") == b"+PONG\r\n"  # nothing left over in between


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def respkv_pid(respkv_proc: ServerProcess, respkv_port: int) -> int:
    assert respkv_proc.proc is not None
    return respkv_proc.proc.pid


def test_huge_pipeline_unread_for_a_while_loses_nothing(
    respkv_port: int, respkv_pid: int
) -> None:
    count = 100_000
    value = b"v" * 1000  # 100 MB of replies in all: far more than socket buffers hold
    reply = encode_bulk(value)
    with RawConnection(respkv_port) as setup:
        assert setup.call("SET", "big", value) == b"+OK\r\n"
    request = encode_command("GET", "big")
    payload = request * count
    conn = RawConnection(respkv_port, timeout=30)
    rss_before = _rss_bytes(respkv_pid)
    sent = threading.Event()
    errors: list[BaseException] = []

    def send_all() -> None:
        try:
            conn.send_raw(payload)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        sent.set()

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    # Do not read: the server's output backs up, and it must stop reading from us instead
    # of buffering 100 MB of replies.
    stalled_until = time.monotonic() + 1.0
    rss_peak = rss_before
    while time.monotonic() < stalled_until:
        rss_peak = max(rss_peak, _rss_bytes(respkv_pid))
        time.sleep(0.05)
    # Other clients are still served while this one is paused.
    with RawConnection(respkv_port, timeout=2) as other:
        assert other.call("PING") == b"+PONG\r\n"
    expected_total = len(reply) * count
    received = bytearray()
    conn.sock.settimeout(30)
    while len(received) < expected_total:
        chunk = conn.sock.recv(1 << 20)
        assert chunk, f"closed after {len(received)} of {expected_total} bytes"
        received += chunk
        if len(received) < expected_total // 2:
            rss_peak = max(rss_peak, _rss_bytes(respkv_pid))
    sender.join(10)
    assert not errors, errors
    assert len(received) == expected_total
    assert bytes(received) == reply * count
    assert conn.call("PING") == b"+PONG\r\n"
    conn.close()
    growth = rss_peak - rss_before
    print(f"server RSS growth {growth >> 20} MiB for {expected_total >> 20} MiB of replies")
    assert growth < 40 * 1024 * 1024, f"server RSS grew by {growth} bytes"


def test_big_argument_trickled_in_pieces(respkv_port: int) -> None:
    value = bytes(range(256)) * 20_000  # 5 MB, every byte value, CRLF included
    request = encode_command("SET", "trickle", value)
    with RawConnection(respkv_port) as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(request), 700_001):
            conn.send_raw(request[start : start + 700_001])
            time.sleep(0.001)
        assert conn.read_reply() == b"+OK\r\n"
        assert conn.call("STRLEN", "trickle") == b":%d\r\n" % len(value)
        assert conn.call("GET", "trickle") == encode_bulk(value)


@pytest.mark.parametrize(
    "last", [b"QUIT\r\n", b"*x\r\n"], ids=["quit", "protocol_error"]
)
def test_closing_after_big_replies_delivers_them_all(
    respkv_port: int, redis_port: int, last: bytes
) -> None:
    # The connection closes only after every earlier reply went out, however big.
    value = b"q" * 100_000
    data = encode_command("GET", "big") * 100 + last
    received = []
    for port in (respkv_port, redis_port):
        with RawConnection(port) as conn:
            assert conn.call("SET", "big", value) == b"+OK\r\n"
            conn.send_raw(data)
            time.sleep(0.2)  # let the server hit its write high-water mark first
            received.append(conn.read_until_close(10))
    assert received[0] == received[1]
    assert received[0].startswith(encode_bulk(value) * 100)


def test_output_buffer_hard_limit_closes_a_client_that_does_not_read(
    respkv_port: int, redis_port: int
) -> None:
    value = b"o" * 2048
    total = 10_000  # 20 MB of replies against a 1 MB limit
    for port in (respkv_port, redis_port):
        with RawConnection(port) as admin:
            assert admin.call("SET", "big", value) == b"+OK\r\n"
            assert admin.call(
                "CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 0 0"
            ) == b"+OK\r\n"
            try:
                with RawConnection(port, timeout=10) as hog:
                    try:
                        hog.send_raw(encode_command("GET", "big") * total)
                    except OSError:
                        pass  # closed while we were still sending: that is the point
                    time.sleep(0.3)
                    got = hog.read_until_close(10)
                assert len(got) < total * len(encode_bulk(value)), port
                assert admin.call("PING") == b"+PONG\r\n"
            finally:
                admin.call("CONFIG", "SET", "client-output-buffer-limit", "normal 0 0 0")


# --- Malformed input ---------------------------------------------------------------------------

MALFORMED = {
    # A bulk header where '$' was expected.
    "type_byte_colon": b"*1\r\n:4\r\nPING\r\n",
    "type_byte_star": b"*2\r\n$3\r\nGET\r\n*1\r\n",
    "type_byte_plus": b"*2\r\n$4\r\nECHO\r\n+hi\r\n",
    # Multibulk counts.
    "count_not_a_number": b"*x\r\n",
    "count_empty": b"*\r\n",
    "count_trailing_junk": b"*3x\r\n",
    "count_plus_sign": b"*+1\r\n$4\r\nPING\r\n",
    "count_leading_zero": b"*01\r\n$4\r\nPING\r\n",
    "count_over_int_max": b"*2147483648\r\n",
    "count_huge": b"*99999999999999999999999\r\n",
    "count_lf_only": b"*1\n$4\r\nPING\r\n",
    "count_line_too_long": b"*" + b"1" * 70_000,
    # Bulk lengths.
    "bulk_negative_one": b"*1\r\n$-1\r\n",
    "bulk_negative": b"*1\r\n$-5\r\n",
    "bulk_minus_zero": b"*1\r\n$-0\r\n",
    "bulk_empty": b"*1\r\n$\r\n",
    "bulk_not_a_number": b"*1\r\n$x\r\n",
    "bulk_space": b"*1\r\n$ 4\r\n",
    "bulk_plus_sign": b"*1\r\n$+4\r\nPING\r\n",
    "bulk_over_512mb": b"*1\r\n$600000000\r\n",
    "bulk_huge": b"*1\r\n$99999999999999999999999\r\n",
    "bulk_lf_only": b"*1\r\n$4\nPING\r\n",
    "bulk_line_too_long": b"*1\r\n$" + b"1" * 70_000,
    # Inline requests.
    "inline_unbalanced_double_quote": b'SET a "b\r\n',
    "inline_unbalanced_single_quote": b"SET a 'b\r\n",
    "inline_quote_followed_by_text": b'SET a "b"c\r\n',
    "inline_too_big": b"a" * 70_000,
    "inline_too_big_after_a_command": b"PING\r\n" + b"SET k " + b"v" * 70_000,
    # Binary junk: an unknown command, then a line that never ends.
    "binary_junk_then_endless_line": b"\x01\xfe\xff junk \x7f\r\n" + b"\x80" * 70_000,
    "junk_with_nul_byte": b"\x00\xff junk\r\n" + b"x" * 70_000,
    "junk_after_pipeline": b"*1\r\n$4\r\nPING\r\n\xff\xff\r\n*\xff\r\n",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_closes_like_redis(
    diff: Differential, respkv_port: int, redis_port: int, data: bytes
) -> None:
    # A bystander connected before the bad client, with data written before.
    diff.call("SET", "before", "intact")
    with RawConnection(respkv_port) as mine_other, RawConnection(redis_port) as ref_other:
        reply = diff.raw(data)
        assert b"Protocol error" in reply
        for conn in (mine_other, ref_other):
            assert conn.call("PING") == b"+PONG\r\n"
            assert conn.call("GET", "before") == b"$6\r\nintact\r\n"
    # The bad client's connection is gone on the server: it no longer counts as connected.
    with RawConnection(respkv_port) as again:
        assert again.call("GET", "before") == b"$6\r\nintact\r\n"


NOT_CLOSING = {
    # Redis skips the two bytes after bulk data without checking that they are CRLF.
    "bulk_without_crlf": b"*1\r\n$4\r\nPINGxx",
    "negative_count_is_ignored": b"*-1\r\nPING\r\n",
    "negative_count_below_minus_one": b"*-5\r\n*1\r\n$4\r\nPING\r\n",
    "zero_count": b"*0\r\nPING\r\n",
    "empty_name_multibulk": b"*1\r\n$0\r\n\r\n",
    "empty_argument": b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
    "unauthenticated_limits_do_not_apply": b"*11\r\n" + b"$1\r\nx\r\n" * 11,
    "bulk_header_like_inline": b"$4\r\nPING\r\n",
    "lf_only_inline": b"PING\nECHO a\n",
    "inline_escapes": b'ECHO "a\\x41\\n\\t\\"" \r\nECHO \'a\\\'b\'\r\n',
    "inline_quoted_then_extra_arg": b'ECHO "a" "b"\r\n',
    "leading_spaces_and_empty_lines": b"\r\n\r\n  \r\n\t\r\n   PING  \r\n",
}


@pytest.mark.parametrize("data", NOT_CLOSING.values(), ids=NOT_CLOSING.keys())
def test_tolerated_input_answers_like_redis(
    respkv_port: int, redis_port: int, data: bytes
) -> None:
    reply = both_until_close(respkv_port, redis_port, data + QUIT)
    assert reply.endswith(b"+OK\r\n")


@pytest.mark.parametrize("count", [2_147_483_647, 100_000_000, 1_048_577])
def test_huge_multibulk_count_waits_without_stalling_the_server(
    respkv_port: int, respkv_pid: int, count: int
) -> None:
    # Redis accepts any count up to INT_MAX and waits for the arguments, allocating them as
    # they arrive; a server that allocates `count` slots up front stalls and bloats.
    rss_before = _rss_bytes(respkv_pid)
    with RawConnection(respkv_port) as greedy, RawConnection(respkv_port, timeout=2) as other:
        greedy.send_raw(b"*%d\r\n" % count)
        # `other` times out after 2 s; the RSS check below is the real guard against slots
        # allocated up front (a wall-clock bound here failed on a loaded machine).
        assert other.call("PING") == b"+PONG\r\n"
        greedy.send_raw(b"$4\r\nPING\r\n")
        assert other.call("PING") == b"+PONG\r\n"
    growth = _rss_bytes(respkv_pid) - rss_before
    assert growth < 64 * 1024 * 1024, f"server RSS grew by {growth} bytes"


def test_commands_before_a_protocol_error_run_and_are_answered(
    diff: Differential, respkv_port: int, redis_port: int
) -> None:
    data = (
        b"SET k1 v1\r\n"
        + encode_command("INCR", "n")
        + encode_command("GET", "k1")
        + b"*x\r\n"
        + encode_command("SET", "after", "error")
    )
    reply = diff.raw(data)
    assert reply == (
        b"+OK\r\n:1\r\n$2\r\nv1\r\n-ERR Protocol error: invalid multibulk length\r\n"
    )
    with RawConnection(respkv_port) as conn:
        assert conn.call("GET", "k1") == b"$2\r\nv1\r\n"
        assert conn.call("GET", "n") == b"$1\r\n1\r\n"
        assert conn.call("EXISTS", "after") == b":0\r\n"


def test_write_before_a_protocol_error_is_acknowledged_in_the_same_write(
    respkv_port: int, redis_port: int
) -> None:
    data = encode_command("SET", "w", "1") + encode_command("PING") + b"*1\r\n$-3\r\n"
    both_until_close(respkv_port, redis_port, data)


# --- QUIT --------------------------------------------------------------------------------------


QUIT_CASES = {
    "alone": b"QUIT\r\n",
    "multibulk": QUIT,
    "lowercase_inline": b"quit\r\n",
    "with_arguments": b"QUIT now please\r\n",
    "after_commands": b"PING\r\nSET q 1\r\nQUIT\r\n",
    "later_commands_not_run": b"PING\r\nQUIT\r\nSET q 2\r\nPING\r\n",
    "protocol_error_after_quit_not_reported": b"SET q 3\r\nQUIT\r\n*x\r\n",
    "inside_multi": b"MULTI\r\nSET q 4\r\nQUIT\r\nEXEC\r\n",
}


@pytest.mark.parametrize("data", QUIT_CASES.values(), ids=QUIT_CASES.keys())
def test_quit_answers_ok_then_closes(
    respkv_port: int, redis_port: int, data: bytes
) -> None:
    reply = both_until_close(respkv_port, redis_port, data)
    assert reply.endswith(b"+OK\r\n")
    with RawConnection(respkv_port) as mine, RawConnection(redis_port) as ref:
        assert mine.call("GET", "q") == ref.call("GET", "q")


def test_quit_with_redis_py(respkv_port: int) -> None:
    import redis

    client = redis.Redis(port=respkv_port)
    assert client.execute_command("QUIT") in (b"OK", "OK", True)  # type: ignore[no-untyped-call]
    client.close()


# --- Unknown commands, arity, names ------------------------------------------------------------


UNKNOWN = {
    "bare": ("FOO",),
    "with_args": ("FOO", "a", "b c"),
    "lowercase": ("nosuchcommand", "x"),
    "binary_name_and_args": (b"\xff\xfe\x01", b"\x80arg", b"\x00hidden"),
    "nul_inside_arg": ("FOO", b"vis\x00hidden"),
    "crlf_in_args": ("FOO", "a\r\nb", "c\nd"),
    "empty_name": ("",),
    "long_name": ("X" * 300,),
    "long_arg": ("FOO", "a" * 300),
    "many_args": ("FOO", *[f"argument{i}" for i in range(40)]),
    "args_just_under_limit": ("FOO", "a" * 120, "bcdefgh"),
    "args_exactly_at_limit": ("FOO", "a" * 125, "b"),
    "args_over_limit_in_second": ("FOO", "a" * 100, "b" * 100, "c"),
    "utf8": ("FÖÖ", "ünïcödé"),
    # Redis counts the 128-byte budget in bytes: multi-byte characters must not stretch it.
    "long_utf8_args": ("FOO", "é" * 100, "next"),
    "utf8_cut_inside_a_character": ("FOO", "a" + "é" * 80),
    "long_utf8_name": ("É" * 100,),
    "subcommand_like": ("FOO", "BAR"),
}


@pytest.mark.parametrize("argv", UNKNOWN.values(), ids=UNKNOWN.keys())
def test_unknown_command_error_text(diff: Differential, argv: tuple[str | bytes, ...]) -> None:
    reply = diff.call(*argv)
    assert reply.startswith(b"-ERR unknown command '")


def test_unknown_inline_command(respkv_port: int, redis_port: int) -> None:
    both_until_close(respkv_port, redis_port, b"FOO bar 'baz qux'\r\nfoo\r\n" + QUIT)


def _redis_arity(redis_port: int) -> dict[str, int]:
    import redis

    client = redis.Redis(port=redis_port, protocol=3)
    try:
        info = client.command()
    finally:
        client.close()
    return {str(name): int(spec["arity"]) for name, spec in info.items()}


# Never send these, even with a wrong argument count: if respkv's arity differed from
# Redis's, respkv would run them.
_UNSAFE = {"shutdown", "debug", "monitor", "sync", "psync", "replicaof", "slaveof", "failover",
           "subscribe", "psubscribe", "ssubscribe", "flushall", "flushdb", "quit", "reset"}


def _arity_probes(redis_arity: dict[str, int]) -> list[tuple[str, ...]]:
    """For every command both servers know: an argv that Redis rejects for its arity."""
    probes: list[tuple[str, ...]] = []
    for raw_name, spec in sorted(COMMANDS.items()):
        name = raw_name.decode()
        arity = redis_arity.get(name)
        if arity is None or name in _UNSAFE or spec.subcommands:
            continue
        if arity > 0:
            probes.append((name.upper(), *["x"] * arity))  # one argument too many
            if arity > 1:
                probes.append((name,))
        elif -arity > 1:
            probes.append((name, *["x"] * (-arity - 2)))  # one argument short
    return probes


def test_wrong_arity_errors_match_redis(diff: Differential, redis_port: int) -> None:
    probes = _arity_probes(_redis_arity(redis_port))
    assert len(probes) >= 20, f"too few commands to probe: {probes}"
    for argv in probes:
        reply = diff.call(*argv)
        # Redis answers a refused EXEC with EXECABORT naming the same error.
        expected = b"-EXECABORT Transaction discarded because of: wrong number of arguments"
        if argv[0].lower() != "exec":
            expected = b"-ERR wrong number of arguments for '"
        assert reply.startswith(expected), argv


def _same_error(diff: Differential, *argv: str) -> bytes:
    """Like diff.call, for requests that should fail; keeps a huge success out of the report."""
    mine, ref = diff.both(*argv)
    assert mine == ref, f"{argv!r}: respkv {mine[:200]!r} != redis {ref[:200]!r}"
    return mine


def test_wrong_arity_of_subcommands_matches_redis(diff: Differential, redis_port: int) -> None:
    redis_arity = _redis_arity(redis_port)
    containers = [spec for spec in COMMANDS.values() if spec.subcommands]
    assert containers
    for spec in containers:
        if redis_arity.get(spec.name, -1) < -1:
            assert _same_error(diff, spec.name.upper()).startswith(b"-ERR wrong number")
        for sub in spec.subcommands.values():
            fullname = f"{spec.name}|{sub.name}"
            arity = redis_arity.get(fullname)
            if arity is None:
                continue
            if arity > 2 or arity < -2:
                _same_error(diff, spec.name, sub.name.upper())
            if arity > 0:
                _same_error(diff, spec.name, sub.name, *["x"] * (arity - 1))


def test_command_without_subcommand_lists_every_command(diff: Differential) -> None:
    # COMMAND is a container whose own arity (-1) allows the bare form.
    mine, ref = diff.both("COMMAND")
    assert ref.startswith(b"*")
    count = diff.ours.call("COMMAND", "COUNT")
    assert mine.startswith(b"*%s\r\n" % count[1:-2]), mine[:200]


WRONG_ARITY = [
    ("GET",), ("GET", "a", "b"), ("SET", "k"), ("DEL",), ("MGET",), ("MSET", "a"),
    ("INCR",), ("EXPIRE", "k"), ("TTL",), ("SELECT",), ("ECHO",), ("ECHO", "a", "b"),
    ("PING", "a", "b"), ("EXISTS",), ("MULTI", "x"), ("EXEC", "x"), ("DISCARD", "x"),
    ("WATCH",), ("UNWATCH", "x"), ("AUTH",), ("DBSIZE", "x"), ("TYPE",), ("STRLEN",),
    ("APPEND", "k"), ("GETSET", "k"), ("SETNX", "k"), ("SETEX", "k", "1"), ("RENAME", "a"),
]


@pytest.mark.parametrize("argv", WRONG_ARITY, ids=[" ".join(a) for a in WRONG_ARITY])
def test_wrong_arity_common_commands(diff: Differential, argv: tuple[str, ...]) -> None:
    reply = diff.call(*argv)
    if argv[0] == "EXEC":  # Redis answers a refused EXEC with EXECABORT
        assert reply.startswith(b"-EXECABORT Transaction discarded because of: wrong number")
    else:
        assert reply.startswith(b"-ERR wrong number of arguments")


@pytest.mark.parametrize("name", ["set", "SET", "Set", "sEt"])
def test_command_names_are_case_insensitive(diff: Differential, name: str) -> None:
    diff.call(name, "k", "v")
    diff.call(name.replace("s", "g").replace("S", "G"), "k")
    diff.call("eXiStS", "k")
    diff.call("ping")
    diff.call("PiNg", "hello")


def test_case_insensitive_inline(respkv_port: int, redis_port: int) -> None:
    both_until_close(respkv_port, redis_port, b"sEt k v\r\ngEt k\r\nPiNg\r\n" + QUIT)


def test_empty_command_lines_are_ignored(respkv_port: int, redis_port: int) -> None:
    data = b"\r\n\n\r\n   \r\nPING\r\n\r\n*0\r\n*-1\r\n\r\nECHO a\r\n"
    reply = both_until_close(respkv_port, redis_port, data + QUIT)
    assert reply == b"+PONG\r\n$1\r\na\r\n+OK\r\n"


def test_connection_survives_many_error_replies(diff: Differential) -> None:
    for i in range(50):
        diff.call("NOPE", str(i))
        diff.call("GET")
    diff.call("PING")


@pytest.fixture
def many_connections(respkv_port: int) -> Iterator[list[RawConnection]]:
    conns = [RawConnection(respkv_port) for _ in range(50)]
    yield conns
    for conn in conns:
        conn.close()


def test_interleaved_pipelines_on_many_connections(many_connections: list[RawConnection]) -> None:
    for index, conn in enumerate(many_connections):
        conn.send_raw(b"".join(encode_command("INCR", f"c{index}") for _ in range(20)))
    for index, conn in enumerate(many_connections):
        assert [conn.read_reply() for _ in range(20)] == [b":%d\r\n" % n for n in range(1, 21)]
        assert conn.call("GET", f"c{index}") == b"$2\r\n20\r\n"


def test_client_that_disconnects_mid_command_does_not_hurt(respkv_port: int) -> None:
    for cut in (3, 10, 17):
        sock = socket.create_connection(("127.0.0.1", respkv_port))
        sock.sendall(encode_command("SET", "half", "x" * 20)[:cut])
        sock.close()
    with RawConnection(respkv_port) as conn:
        assert conn.call("EXISTS", "half") == b":0\r\n"
        assert conn.call("PING") == b"+PONG\r\n"


def test_output_buffer_soft_limit_closes_a_client_over_it_for_soft_seconds(
    respkv_port: int, redis_port: int
) -> None:
    # Over the soft limit (1 MB) for soft-seconds (1 s) and never reading: Redis closes the
    # client from its cron even though no further reply is written to it.
    value = b"s" * 4096
    total = 2_000  # 8 MB of replies
    for port in (respkv_port, redis_port):
        with RawConnection(port) as admin:
            assert admin.call("SET", "big", value) == b"+OK\r\n"
            assert admin.call(
                "CONFIG", "SET", "client-output-buffer-limit", "normal 0 1mb 1"
            ) == b"+OK\r\n"
            try:
                with RawConnection(port, timeout=10) as hog:
                    hog.send_raw(encode_command("GET", "big") * total)
                    deadline = time.monotonic() + 8
                    closed = False
                    time.sleep(2.5)  # stay unread past soft-seconds (cron runs every second)
                    while time.monotonic() < deadline and not closed:
                        chunk = hog.sock.recv(1 << 20)
                        closed = not chunk
                    assert closed, port
                assert admin.call("PING") == b"+PONG\r\n"
            finally:
                admin.call("CONFIG", "SET", "client-output-buffer-limit", "normal 0 0 0")
