"""RequestParser: every request stream parses as redis-server 7.0 parses it.

Each test runs against both implementations (hiredis fast path and the pure-Python reader).
The case tables live in tests/resp_cases.py; the differential tests replay them, and random
streams, against a real redis-server.
"""

from __future__ import annotations

import ast
import itertools
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from respkv import resp, resp_pyparser
from respkv.resp import ProtocolError, QueryBufferLimitError, RequestParser
from tests.resp_cases import ACCEPTED, MALFORMED, PING, PING_RAW, Case

MakeParser = Callable[..., RequestParser]
Outcome = tuple[list[list[bytes]], str | None]


@pytest.fixture(params=["hiredis", "python"])
def make_parser(request: pytest.FixtureRequest) -> MakeParser:
    use_hiredis = request.param == "hiredis"

    def make(**limits: object) -> RequestParser:
        return RequestParser(use_hiredis=use_hiredis, **limits)  # type: ignore[arg-type]

    return make


def encode(*argvs: list[bytes]) -> bytes:
    out = bytearray()
    for argv in argvs:
        out += b"*%d\r\n" % len(argv)
        for arg in argv:
            out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return bytes(out)


def run(parser: RequestParser, chunks: list[bytes]) -> Outcome:
    """All commands parsed from chunks, and the protocol error message if one was raised."""
    commands: list[list[bytes]] = []
    for chunk in chunks:
        try:
            commands.extend(parser.feed(chunk))
        except ProtocolError as err:
            return commands + err.commands, err.message
    return commands, None


def chunkings(data: bytes) -> Iterator[list[bytes]]:
    """Whole, byte by byte, and split in two at every boundary (sampled for long inputs)."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    cuts = range(1, len(data))
    if len(data) > 2_000:
        cuts = range(1, len(data), len(data) // 300)
    for cut in cuts:
        yield [data[:cut], data[cut:]]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)] or [data]


# ---------------------------------------------------------------------------- case tables


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_accepted_any_chunking(make_parser: MakeParser, case: Case) -> None:
    for chunks in chunkings(case.data):
        parser = make_parser(authenticated=case.authenticated)
        assert run(parser, chunks) == (case.commands, None), [len(c) for c in chunks]


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_accepted_with_trailing_next_command(make_parser: MakeParser, case: Case) -> None:
    if case.incomplete:
        return  # trailing bytes would continue the command this case leaves open
    trailing = b"*2\r\n$4\r\nECHO\r\n$3\r\nab"
    for chunks in chunkings(case.data + trailing):
        parser = make_parser(authenticated=case.authenticated)
        assert run(parser, chunks) == (case.commands, None)
        assert parser.buffered_bytes() > 0
        assert parser.feed(b"c\r\n") == [[b"ECHO", b"abc"]]
        assert parser.buffered_bytes() == 0


@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c.name)
def test_malformed(make_parser: MakeParser, case: Case) -> None:
    parser = make_parser(authenticated=case.authenticated)
    assert run(parser, [case.data]) == (case.commands, case.error)
    if case.any_chunking:
        for chunks in chunkings(case.data):
            parser = make_parser(authenticated=case.authenticated)
            assert run(parser, chunks) == (case.commands, case.error), [len(c) for c in chunks]


# ---------------------------------------------------------------------------- behaviours


def test_pipeline_of_multibulk_and_inline_in_one_chunk(make_parser: MakeParser) -> None:
    argvs = [[b"SET", b"k%d" % i, b"v\r\n%d" % i] for i in range(50)]
    data = b"".join(encode(a) + b"PING\r\n" for a in argvs)
    expected = [cmd for a in argvs for cmd in (a, PING)]
    for chunks in ([data], cut(data, list(range(0, len(data), 97)))):
        assert run(make_parser(), chunks) == (expected, None)


def seconds_to_parse(parser: RequestParser, data: bytes, count: int) -> float:
    started = time.perf_counter()
    commands, error = run(parser, [data])
    elapsed = time.perf_counter() - started
    assert (len(commands), error) == (count, None)
    return elapsed


@pytest.mark.parametrize(
    ("name", "data", "count", "limits"),
    [
        # Inline and multibulk alternate: each switch between the parsers copies the rest.
        ("alternating", (PING_RAW + b"PING\n") * 32_000, 64_000, {}),
        # Too big for hiredis: the rest must not be offered back to it after every command.
        ("over_limit", b"PING\r\n" + PING_RAW * 80_000, 80_001, {"max_bulk_len": 65_536}),
    ],
)
def test_switching_parsers_stays_linear(
    name: str, data: bytes, count: int, limits: dict[str, Any]
) -> None:
    python = seconds_to_parse(RequestParser(use_hiredis=False, **limits), data, count)
    fast = seconds_to_parse(RequestParser(**limits), data, count)
    # Linear switching costs about what the pure-Python parser costs; quadratic is 10x more.
    assert fast < 4 * python + 0.2, (python, fast)


def test_big_bulk_in_64k_chunks_is_linear(make_parser: MakeParser) -> None:
    def parse_seconds(size: int) -> float:
        value = bytes(range(256)) * (size // 256)
        data = encode([b"SET", b"big", value]) + PING_RAW
        parser = make_parser()
        started = time.perf_counter()
        commands, error = run(parser, [data[i : i + 65_536] for i in range(0, len(data), 65_536)])
        elapsed = time.perf_counter() - started
        assert error is None
        assert len(commands) == 2
        assert commands[0][2] == value
        assert commands[1] == PING
        return elapsed

    small = parse_seconds(10 * 1024 * 1024)
    big = parse_seconds(100 * 1024 * 1024)
    # Linear is 10x; re-copying the buffer on every chunk would be about 100x (and minutes).
    assert big < max(30 * small, 3.0), (small, big)


def test_long_line_byte_by_byte_is_linear(make_parser: MakeParser) -> None:
    def parse_seconds(size: int) -> float:
        parser = make_parser()
        line = b"ECHO " + b"x" * size
        started = time.perf_counter()
        for i in range(len(line)):
            assert parser.feed(line[i : i + 1]) == []
        assert parser.feed(b"\n") == [[b"ECHO", b"x" * size]]
        return time.perf_counter() - started

    small = parse_seconds(5_000)
    big = parse_seconds(60_000)
    # Linear is 12x; searching the whole line again for every byte would be about 144x.
    assert big < max(40 * small, 2.0), (small, big)


def test_huge_bulk_header_is_rejected_before_its_data(make_parser: MakeParser) -> None:
    parser = make_parser()
    assert parser.feed(PING_RAW + b"*2\r\n$3\r\nGET\r\n") == [PING]
    with pytest.raises(ProtocolError) as err:
        parser.feed(b"$99999999999\r\n")
    assert err.value.message == "invalid bulk length"
    assert err.value.commands == []


def test_max_bulk_len_is_settable(make_parser: MakeParser) -> None:
    parser = make_parser(max_bulk_len=5)
    assert parser.feed(encode([b"ECHO", b"abcde"])) == [[b"ECHO", b"abcde"]]
    parser.max_bulk_len = 4
    assert parser.max_bulk_len == 4
    with pytest.raises(ProtocolError) as err:
        parser.feed(PING_RAW + encode([b"ECHO", b"abcde"]))
    assert (err.value.message, err.value.commands) == ("invalid bulk length", [PING])


def test_unauthenticated_limits_follow_the_flag(make_parser: MakeParser) -> None:
    eleven = encode([b"ECHO"] * 11)
    parser = make_parser(authenticated=False)
    assert parser.authenticated is False
    assert parser.feed(encode([b"AUTH", b"pw"])) == [[b"AUTH", b"pw"]]
    parser.authenticated = True
    assert parser.feed(eleven) == [[b"ECHO"] * 11]
    parser.authenticated = False
    with pytest.raises(ProtocolError) as err:
        parser.feed(eleven)
    assert err.value.message == "unauthenticated multibulk length"


def test_query_buffer_limit_closes_without_reply(make_parser: MakeParser) -> None:
    parser = make_parser(max_query_buffer_bytes=4096)
    assert parser.max_query_buffer_bytes == 4096
    assert parser.feed(b"*2\r\n$4\r\nECHO\r\n$5000\r\n" + b"x" * 3000) == []
    with pytest.raises(QueryBufferLimitError) as err:
        parser.feed(b"x" * 2000)
    assert err.value.send_error_reply is False
    assert ProtocolError.send_error_reply is True


def test_query_buffer_limit_counts_one_redis_read(make_parser: MakeParser) -> None:
    # Redis checks the buffer after each read of up to 16 KiB, before parsing it: a bulk larger
    # than the limit is refused even when it arrives whole, but commands before it still run.
    parser = make_parser(max_query_buffer_bytes=20_000)
    data = PING_RAW * 1_200 + encode([b"ECHO", b"x" * 30_000])
    assert len(PING_RAW * 1_200) > 16_384
    with pytest.raises(QueryBufferLimitError) as err:
        parser.feed(data)
    assert err.value.commands == [PING] * 1_200


def test_buffered_bytes_tracks_the_incomplete_command(make_parser: MakeParser) -> None:
    parser = make_parser()
    assert parser.buffered_bytes() == 0
    assert parser.feed(PING_RAW + b"*2\r\n$4\r\nECHO\r\n$10\r\nabc") == [PING]
    # Like Redis's qbuf: the '$10' header is parsed already, its 3 data bytes are held.
    assert parser.buffered_bytes() == 3
    assert parser.feed(b"defghij\r\n") == [[b"ECHO", b"abcdefghij"]]
    assert parser.buffered_bytes() == 0
    assert parser.feed(b"PIN") == []
    assert parser.buffered_bytes() == 3


def test_parser_is_dead_after_an_error(make_parser: MakeParser) -> None:
    parser = make_parser()
    with pytest.raises(ProtocolError):
        parser.feed(b"*x\r\n")
    for data in (PING_RAW, b"", b"PING\r\n"):
        with pytest.raises(ProtocolError) as err:
            parser.feed(data)
        assert (err.value.message, err.value.commands) == ("invalid multibulk length", [])


def test_fast_path_resumes_after_python_took_over() -> None:
    # White-box: after an inline command or a split command, hiredis must get the stream back,
    # or every later command would pay the pure-Python price.
    parser = RequestParser()
    assert parser.feed(b"PING\r\n" + PING_RAW + b"*1\r\n$4\r\nPI") == [PING, PING]
    assert parser._py_owns
    assert parser.feed(b"NG\r\n") == [PING]
    assert not parser._py_owns
    assert parser.feed(PING_RAW * 3) == [PING] * 3
    assert not parser._py_owns


def test_codec_modules_do_no_io() -> None:
    for module in (resp, resp_pyparser):
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"asyncio", "socket", "selectors", "uvloop"}, module.__name__


# ---------------------------------------------------------------------------- properties

argvs_strategy = st.lists(
    st.lists(st.binary(max_size=40), min_size=1, max_size=6), min_size=1, max_size=8
)
cuts_strategy = st.lists(st.integers(min_value=0, max_value=100_000), max_size=12)

# Pieces of RESP and inline syntax, so random streams hit the interesting paths often.
TOKENS = [
    b"*", b"$", b"+", b"~", b"|", b"=", b"(", b":", b"-", b">", b"%", b"_", b"#", b",", b"!",
    b"0", b"1", b"2", b"3", b"4", b"-1", b"10", b"11", b"01", b"\r\n", b"\r", b"\n", b"\x00",
    b" ", b'"', b"'", b"\\", b"\\x4", b"\\n", b"\x0b", b"\x0c", b"\t", b"\xff", b"x", b"PING",
    b"ECHO", b"txt:", PING_RAW, b"*2\r\n$4\r\nECHO\r\n$1\r\na\r\n", b"*0\r\n", b"*-1\r\n",
    b"$1\r\nx\r\n", b"+OK\r\n", b"PING\r\n", b"*3\r\n", b"$3\r\n", b"ECHO ", b"$16385\r\n",
    b"*11\r\n", b"%1\r\n*0\r\n$1\r\na\r\n", b"#f\r\n",
]  # fmt: skip
token_stream = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=30).map(b"".join)


def outcome_or_crash(parser: RequestParser, chunks: list[bytes]) -> Outcome:
    """run(), bounded in time: anything but ProtocolError propagates and fails the test."""
    started = time.perf_counter()
    result = run(parser, chunks)
    assert time.perf_counter() - started < 5.0
    return result


@settings(max_examples=300, deadline=None)
@given(argvs=argvs_strategy, cuts=cuts_strategy)
def test_encoded_commands_round_trip(argvs: list[list[bytes]], cuts: list[int]) -> None:
    data = encode(*argvs)
    for use_hiredis in (True, False):
        parser = RequestParser(use_hiredis=use_hiredis)
        assert run(parser, cut(data, cuts)) == (argvs, None)
        assert parser.buffered_bytes() == 0


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), cuts=cuts_strategy, authenticated=st.booleans())
def test_arbitrary_bytes_fast_path_agrees_with_python(
    data: bytes, cuts: list[int], authenticated: bool
) -> None:
    check_agreement(data, cut(data, cuts), {"authenticated": authenticated})


@settings(max_examples=600, deadline=None)
@given(
    data=token_stream,
    cuts=cuts_strategy,
    limits=st.fixed_dictionaries(
        {},
        optional={
            "authenticated": st.booleans(),
            "max_inline_bytes": st.integers(0, 12),
            "max_bulk_len": st.integers(0, 5),
            "max_query_buffer_bytes": st.integers(0, 40),
        },
    ),
)
def test_resp_like_streams_fast_path_agrees_with_python(
    data: bytes, cuts: list[int], limits: dict[str, object]
) -> None:
    check_agreement(data, cut(data, cuts), limits)


def check_agreement(data: bytes, chunks: list[bytes], limits: dict[str, object]) -> None:
    fast = outcome_or_crash(RequestParser(**limits), chunks)  # type: ignore[arg-type]
    python = outcome_or_crash(RequestParser(use_hiredis=False, **limits), chunks)  # type: ignore[arg-type]
    assert fast == python
    if not set(limits) - {"authenticated"}:
        # With the default limits, short streams do not depend on how they are cut.
        whole = outcome_or_crash(RequestParser(use_hiredis=False, **limits), [data])  # type: ignore[arg-type]
        assert python == whole


# ---------------------------------------------------------------------------- against Redis


class RedisServer:
    """A real redis-server on a free loopback port, for differential tests."""

    def __init__(self, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", *args],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def exchange(self, data: bytes) -> bytes:
        """Send data, half-close, and return all Redis answers until it closes. A half-close
        makes Redis drop a client still waiting for bytes without writing anything, so
        'waiting' and 'protocol error' are told apart without timeouts."""
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)

        def send() -> None:
            try:
                conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # Redis closed first, after a protocol error

        sender = threading.Thread(target=send)
        sender.start()
        answer = bytearray()
        try:
            while chunk := conn.recv(65_536):
                answer += chunk
        except ConnectionResetError:
            pass  # it closed with our bytes unread, after its error reply
        finally:
            sender.join()
            conn.close()
        return bytes(answer)


@pytest.fixture(scope="module")
def redis_servers() -> Iterator[dict[bool, RedisServer]]:
    servers: dict[bool, RedisServer] = {}
    try:
        servers[True] = RedisServer()
        servers[False] = RedisServer("--requirepass", "not-sent")
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def expected_reply(argv: list[bytes]) -> bytes | None:
    """What an authenticated Redis answers to the few commands the cases use; None: an error
    reply or something not modelled."""
    name = argv[0].upper()
    if name == b"PING" and len(argv) <= 2:
        return argv[1] if len(argv) == 2 else b"PONG"
    if name == b"ECHO" and len(argv) == 2:
        return argv[1]
    return None


def check_against_redis(
    server: RedisServer, data: bytes, ours: Outcome, authenticated: bool
) -> None:
    answer = server.exchange(data)
    commands, error = ours
    if error is None:
        error_line = b""
    else:
        error_line = b"-ERR Protocol error: " + error.encode("latin-1") + b"\r\n"
    assert answer.endswith(error_line), (answer[-200:], error_line)
    reader = hiredis.Reader()
    reader.feed(answer[: len(answer) - len(error_line)])
    replies = []
    while (reply := reader.gets()) is not False:
        replies.append(reply)
    assert len(replies) == len(commands), (replies, commands)
    if authenticated:
        for argv, reply in zip(commands, replies, strict=True):
            expected = expected_reply(argv)
            if expected is not None:
                assert reply == expected, (argv, reply)


@pytest.mark.parametrize("case", MALFORMED + ACCEPTED, ids=lambda c: c.name)
def test_case_matches_redis(redis_servers: dict[bool, RedisServer], case: Case) -> None:
    ours = run(RequestParser(authenticated=case.authenticated), [case.data])
    assert ours == (case.commands, case.error)
    check_against_redis(redis_servers[case.authenticated], case.data, ours, case.authenticated)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=token_stream, authenticated=st.booleans())
def test_random_streams_match_redis(
    redis_servers: dict[bool, RedisServer], data: bytes, authenticated: bool
) -> None:
    # TOKENS cannot spell a Redis command other than PING and ECHO, so this is harmless.
    ours = run(RequestParser(use_hiredis=False, authenticated=authenticated), [data])
    check_against_redis(redis_servers[authenticated], data, ours, authenticated)


@settings(max_examples=300, deadline=None)
@given(argvs=argvs_strategy, mutation=st.sampled_from(
    [b"", b"\r\n", b"*0\r\n", b"*1\r\n", b"$01\r\n", b"+OK\r\n", b"PING\r\n", b"\r"]))
def test_canonical_split_is_exact_or_declines(argvs: list[list[bytes]], mutation: bytes) -> None:
    """The CRLF-split shortcut returns exactly the commands canonical bytes spell, and None
    for anything else; with a stray token after them the general path takes over."""
    from respkv.resp import _split_canonical

    data = encode(*argvs)
    split = _split_canonical(data)
    if all(b"\r\n" not in arg for argv in argvs for arg in argv) and argvs:
        assert split == argvs
    else:
        assert split in (None, argvs)
    mutated = _split_canonical(data + mutation)
    if mutation:
        assert mutated is None
    parser = RequestParser()
    assert run(parser, [data + mutation])[0][: len(argvs)] == argvs


@pytest.mark.parametrize("argvs", [
    [[b"SETEX", b"k", b"10", b"v"]],
    [[b"SET", b"k", b"v", b"EX", b"10"]],
    [[b"PING"], [b"PING"], [b"PING"]],  # 9 lines, as a 4-argument command
    [[b"PING"], [b"GET", b"k"], [b"PING"]],  # 11 lines, as a 5-argument command
    [[b"GET", b"k"], [b"PING"], [b"PING"]],
    [[b"PING"], [b"PING"], [b"GET", b"k"]],
], ids=repr)
def test_canonical_split_of_four_and_five_arguments_and_its_look_alikes(
        argvs: list[list[bytes]]) -> None:
    from respkv.resp import _split_canonical

    data = encode(*argvs)
    assert _split_canonical(data) == argvs
    lines = data.split(b"\r\n")
    lines[1] = b"$9"  # the first argument's header no longer fits it
    assert _split_canonical(b"\r\n".join(lines)) is None


uniform_argvs = st.integers(1, 4).flatmap(lambda argc: st.lists(
    st.lists(st.binary(max_size=40), min_size=argc, max_size=argc), min_size=1, max_size=12))


@settings(max_examples=300, deadline=None)
@given(argvs=uniform_argvs, pad=st.integers(0, 600),
       mutation=st.sampled_from([b"", b"\r\n", b"*0\r\n", b"*1\r\n$1\r\nx\r\n", b"$01\r\n",
                                 b"+OK\r\n", b"PING\r\n", b"\r"]))
def test_uniform_split_is_exact_or_declines(argvs: list[list[bytes]], pad: int,
                                            mutation: bytes) -> None:
    """The column-wise split of a read of same-shape commands returns exactly the commands
    canonical bytes spell, and None for anything else (another shape among them, a stray
    token, an argument holding CRLF); the parser's answer is the same either way."""
    from respkv.resp import _split_uniform

    argvs = [[*argv[:-1], argv[-1] + b"p" * pad] for argv in argvs]  # past the 512-byte split
    data = encode(*argvs)
    split = _split_uniform(data)
    if all(b"\r\n" not in arg for argv in argvs for arg in argv):
        assert split == argvs
    else:
        assert split in (None, argvs)
    mutated = _split_uniform(data + mutation)
    reference = run(RequestParser(use_hiredis=False), [data + mutation])
    assert mutated is None or (mutated, None) == reference
    if mutation and mutation != b"*1\r\n$1\r\nx\r\n":  # only that one can be a command
        assert mutated is None
    for use_hiredis in (True, False):
        parser = RequestParser(use_hiredis=use_hiredis)
        assert run(parser, [data + mutation])[0][: len(argvs)] == argvs


def test_uniform_split_declines_mixed_shapes_and_bad_headers() -> None:
    from respkv.resp import _split_uniform

    value = b"v" * 600
    assert _split_uniform(encode([b"SET", b"k", value], [b"GET", b"k"])) is None
    assert _split_uniform(encode([b"SET", b"k", value], [b"SET", b"k"], [b"GET", b"k", b"x"])) \
        is None
    bad = encode([b"SET", b"k", value], [b"SET", b"k", value]).replace(b"$600", b"$601", 1)
    assert _split_uniform(bad) is None
    # Lines that fit the columns, but the second command announces two arguments.
    assert _split_uniform(b"*1\r\n$1\r\na\r\n*2\r\n$1\r\nb\r\n") is None
    assert _split_uniform(b"*1\r\n$1\r\na\r\n$1\r\n$1\r\nb\r\n") is None
    parser = RequestParser()
    assert run(parser, [encode([b"SET", b"k", value], [b"GET", b"k"])])[0] == [
        [b"SET", b"k", value], [b"GET", b"k"]]
