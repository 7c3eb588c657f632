"""Peer codec and handshake, sans-IO: round trips fed whole, byte by byte and with trailing
bytes; every malformed input raises WireError; the handshake FSM in memory."""

from __future__ import annotations

import ast
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import messages as m
from cluster.peer_auth import Handshake, HandshakeError, Role, State
from cluster.wire import (
    HEADER,
    NEED_DATA,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    WireError,
    decode_all,
    encode,
)

# -- strategies -----------------------------------------------------------------------------

node_ids = st.text(min_size=1, max_size=16)
u16 = st.integers(0, 0xFFFF)
request_ids = st.integers(0, 0xFFFF_FFFF)
messages: st.SearchStrategy[m.Message] = st.one_of(
    st.builds(m.Hello, u16, u16, node_ids, node_ids),
    st.builds(m.AuthChallenge, st.binary(min_size=32, max_size=32)),
    st.builds(m.AuthResponse, st.binary(min_size=32, max_size=32)),
    st.just(m.AuthOk()), st.just(m.Ping()), st.just(m.Pong()), st.just(m.WriteAck()),
    st.builds(m.Read, st.integers(0, m.DB_MAX), st.binary(max_size=40)),
    st.builds(m.ReadReply, st.none() | st.binary(max_size=40)),
    st.builds(m.Write, st.integers(0, m.DB_MAX), st.binary(max_size=40), st.binary(max_size=40),
              st.none() | node_ids),
    st.builds(m.Error, u16, st.text(max_size=40)),
    st.builds(m.CondWrite, st.integers(0, m.DB_MAX), st.binary(max_size=40),
              st.binary(max_size=40)),
    st.builds(m.CondWriteReply, st.booleans(), st.none() | st.binary(max_size=40)),
)
frames = st.lists(st.tuples(request_ids, messages), min_size=1, max_size=5)


def feed_three_ways(data: bytes) -> list[list[Frame]]:
    """Decode ``data`` whole, byte by byte, and followed by the first bytes of another frame
    (which must stay buffered): STYLE rule 3."""
    whole = decode_all(data)
    decoder = FrameDecoder()
    by_byte: list[Frame] = []
    for i in range(len(data)):
        decoder.feed(data[i:i + 1])
        while (frame := decoder.next()) is not NEED_DATA:
            assert isinstance(frame, Frame)
            by_byte.append(frame)
    assert decoder.buffered_bytes == 0
    trailing = encode(7, m.Read(1, b"next"))[:-1]
    decoder = FrameDecoder()
    decoder.feed(data + trailing)
    with_trailing: list[Frame] = []
    while (frame := decoder.next()) is not NEED_DATA:
        assert isinstance(frame, Frame)
        with_trailing.append(frame)
    assert decoder.buffered_bytes == len(trailing)
    return [whole, by_byte, with_trailing]


@given(frames)
def test_round_trip_whole_byte_by_byte_and_trailing(pairs: list[tuple[int, m.Message]]) -> None:
    data = b"".join(encode(request_id, message) for request_id, message in pairs)
    expected = [Frame(request_id, message) for request_id, message in pairs]
    for decoded in feed_three_ways(data):
        assert decoded == expected


def test_documented_example_bytes() -> None:
    # The worked example of docs/formats/peer-protocol.md.
    assert encode(5, m.Read(0, b"k")).hex(" ") == "00 00 00 0a 07 00 00 00 05 92 00 c4 01 6b"
    assert encode(5, m.ReadReply(None)).hex(" ") == "00 00 00 07 08 00 00 00 05 91 c0"
    assert encode(0, m.AuthOk()).hex(" ") == "00 00 00 06 04 00 00 00 00 90"


def test_tags_and_error_codes_never_renumbered() -> None:
    assert {t.name: t.value for t in m.MsgType} == {
        "HELLO": 1, "AUTH_CHALLENGE": 2, "AUTH_RESPONSE": 3, "AUTH_OK": 4, "PING": 5,
        "PONG": 6, "READ": 7, "READ_REPLY": 8, "WRITE": 9, "WRITE_ACK": 10, "ERROR": 11,
        "SCAN": 14, "SCAN_REPLY": 15, "FLUSH": 16,
        "FLUSH_ACK": 17, "COUNT": 18, "COUNT_REPLY": 19, "STREAM": 20, "STREAM_REPLY": 21,
        "AE_SUMMARY": 22, "AE_SUMMARY_REPLY": 23, "AE_HASHES": 24, "AE_HASHES_REPLY": 25,
        "AE_KEYS": 26, "AE_KEYS_REPLY": 27, "AE_FETCH": 28, "AE_FETCH_REPLY": 29,
        "GOSSIP_SYN": 30, "GOSSIP_ACK": 31, "GOSSIP_ACK2": 32, "GOSSIP_ACK2_OK": 33,
        "COND_WRITE": 34, "COND_WRITE_REPLY": 35}
    assert {c.name: c.value for c in m.ErrorCode} == {
        "PROTOCOL": 1, "VERSION_MISMATCH": 2, "CLUSTER_MISMATCH": 3, "AUTH_FAILED": 4,
        "WRONG_NODE": 5, "UNSUPPORTED": 6, "OVERLOADED": 7, "INTERNAL": 8, "SHUTTING_DOWN": 9}
    assert set(m.CLASS_OF) == set(m.MsgType) == set(m.SCHEMA)


def test_sans_io_modules_import_no_io() -> None:
    root = Path(__file__).resolve().parent.parent / "cluster"
    for name in ("wire.py", "messages.py", "peer_auth.py"):
        tree = ast.parse((root / name).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert not imported & {"asyncio", "socket", "uvloop", "selectors", "time"}, name


def frame_of(tag: int, body: Any, request_id: int = 1, raw: bytes | None = None) -> bytes:
    payload = raw if raw is not None else msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(5 + len(payload), tag, request_id) + payload


N = b"n" * 32
BAD = [
    (b"\x00\x00\x00\x00", "shorter than a frame header"),
    (b"\x00\x00\x00\x04\x07\x00\x00\x00", "shorter than a frame header"),
    (frame_of(0, []), "unknown message type 0"),
    (frame_of(200, []), "unknown message type 200"),
    (frame_of(m.MsgType.PING, None, raw=b""), "not valid msgpack"),
    (frame_of(m.MsgType.PING, None, raw=b"\xc1"), "not valid msgpack"),
    (frame_of(m.MsgType.PING, None, raw=b"\x90\x90"), "not valid msgpack"),  # extra data
    (frame_of(m.MsgType.PING, None, raw=b"\x91" * 3000), "not valid msgpack"),  # deep nesting
    (frame_of(m.MsgType.PING, {}), "not a msgpack array"),
    (frame_of(m.MsgType.PING, 3), "not a msgpack array"),
    (frame_of(m.MsgType.PING, [1]), "1 fields, expected 0"),
    (frame_of(m.MsgType.READ, [0]), "1 fields, expected 2"),
    (frame_of(m.MsgType.READ, [0, b"k", 1]), "3 fields, expected 2"),
    (frame_of(m.MsgType.READ, [-1, b"k"]), "invalid field db"),
    (frame_of(m.MsgType.READ, [m.DB_MAX + 1, b"k"]), "invalid field db"),
    (frame_of(m.MsgType.READ, [True, b"k"]), "invalid field db"),
    (frame_of(m.MsgType.READ, [0.0, b"k"]), "invalid field db"),
    (frame_of(m.MsgType.READ, [0, "k"]), "invalid field key"),
    (frame_of(m.MsgType.READ, [0, None]), "invalid field key"),
    (frame_of(m.MsgType.READ_REPLY, ["s"]), "invalid field siblings"),
    (frame_of(m.MsgType.WRITE, [0, b"k", None, None]), "invalid field siblings"),
    (frame_of(m.MsgType.WRITE, [0, b"k", b"s", b"node"]), "invalid field hint_for"),
    (frame_of(m.MsgType.WRITE, [0, b"k", b"s", ""]), "invalid field hint_for"),
    (frame_of(m.MsgType.COND_WRITE, [0, b"k", None]), "invalid field siblings"),
    (frame_of(m.MsgType.COND_WRITE_REPLY, [1, None]), "invalid field clean"),
    (frame_of(m.MsgType.COND_WRITE_REPLY, [False, "s"]), "invalid field siblings"),
    (frame_of(m.MsgType.WRITE, [0, b"k", b"s", "n" * 65]), "invalid field hint_for"),
    (frame_of(m.MsgType.HELLO, [1, 1, "a", ""]), "invalid field cluster_name"),
    (frame_of(m.MsgType.HELLO, [1, 0x10000, "a", "c"]), "invalid field version_max"),
    (frame_of(m.MsgType.HELLO, [1, 1, None, "c"]), "invalid field node_id"),
    (frame_of(m.MsgType.HELLO, None, raw=b"\x94\x01\x01\xa1\xff\xa1c"), "not valid msgpack"),
    (frame_of(m.MsgType.AUTH_CHALLENGE, [N[:31]]), "invalid field nonce"),
    (frame_of(m.MsgType.AUTH_RESPONSE, [N + b"x"]), "invalid field proof"),
    (frame_of(m.MsgType.ERROR, [1, "x" * 1025]), "invalid field text"),
    (frame_of(m.MsgType.ERROR, [-1, "x"]), "invalid field code"),
    (frame_of(m.MsgType.PING, None, raw=b"\xd4\x01\x00"), "not a msgpack array"),  # ext type
]


@pytest.mark.parametrize(("data", "reason"), BAD)
def test_malformed_frames_raise_wire_error(data: bytes, reason: str) -> None:
    good = encode(3, m.Ping())
    for chunked in (False, True):
        for tail in (b"", good):
            decoder = FrameDecoder()
            with pytest.raises(WireError, match=reason):
                stream = data + tail
                for i in range(len(stream)) if chunked else [None]:
                    decoder.feed(stream if i is None else stream[i:i + 1])
                    while decoder.next() is not NEED_DATA:
                        pass
            with pytest.raises(WireError, match=reason):  # poisoned: the stream is over
                decoder.next()


def test_frame_over_limit_is_refused_from_its_length_prefix() -> None:
    decoder = FrameDecoder(frame_bytes_max=100)
    decoder.feed(HEADER.pack(97, m.MsgType.READ, 1)[:4])
    with pytest.raises(FrameTooLarge, match="101 bytes is over frame_bytes_max 100"):
        decoder.next()
    exact = encode(1, m.Read(0, b"k" * (100 - 13)))
    assert len(exact) == 100
    assert decode_all(exact, frame_bytes_max=100) == [Frame(1, m.Read(0, b"k" * 87))]
    with pytest.raises(FrameTooLarge):
        encode(1, m.Read(0, b"k" * 88), frame_bytes_max=100)
    with pytest.raises(FrameTooLarge):
        decode_all(encode(1, m.Read(0, b"k" * 88)), frame_bytes_max=100)


def test_incomplete_stream_end_is_reported() -> None:
    with pytest.raises(WireError, match="incomplete frame"):
        decode_all(encode(1, m.Ping())[:-1])


def test_big_frame_in_small_chunks_stays_linear() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    data = encode(9, m.Write(3, b"key", value, None)) * 3
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(data), 1000):
        decoder.feed(data[i:i + 1000])
        while (frame := decoder.next()) is not NEED_DATA:
            out.append(frame)
    assert out == [Frame(9, m.Write(3, b"key", value, None))] * 3


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_raise_only_wire_error(data: bytes) -> None:
    decoder = FrameDecoder(frame_bytes_max=4096)
    decoder.feed(data)
    try:
        while decoder.next() is not NEED_DATA:
            pass
    except WireError:
        pass


@settings(max_examples=300)
@given(frames, st.data())
def test_fuzz_mutated_frames_raise_only_wire_error(pairs: list[tuple[int, m.Message]],
                                                   data: st.DataObject) -> None:
    stream = bytearray(b"".join(encode(rid, message) for rid, message in pairs))
    for _ in range(data.draw(st.integers(1, 4))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    decoder = FrameDecoder(frame_bytes_max=64 * 1024)
    try:
        for chunk in (stream[:cut], stream[cut:]):
            decoder.feed(chunk)
            while (frame := decoder.next()) is not NEED_DATA:
                assert isinstance(frame, Frame)
                assert type(frame.message) in m.TYPE_OF
    except WireError:
        pass


# -- handshake (cluster/peer_auth.py), sans-IO ---------------------------------------------

SECRET = b"the cluster secret"


def run_handshake(a: Handshake, b: Handshake) -> None:
    """Deliver each side's messages to the other until both are quiet (raises on refusal)."""
    to_b, to_a = a.start(), b.start()
    while to_a or to_b:
        next_b = [out for msg in to_b for out in b.receive(msg)]
        next_a = [out for msg in to_a for out in a.receive(msg)]
        to_a, to_b = next_b, next_a


V = m.PROTOCOL_VERSION


def sides(secret_b: bytes = SECRET, **b_kwargs: Any) -> tuple[Handshake, Handshake]:
    a = Handshake(Role.INITIATOR, "node-a", "c1", SECRET, random.Random(1),
                  expected_peer_id="node-b")
    b_args: dict[str, Any] = {"node_id": "node-b", "cluster_name": "c1"} | b_kwargs
    versions = b_args.pop("versions", (V, V))
    b = Handshake(Role.ACCEPTOR, b_args["node_id"], b_args["cluster_name"], secret_b,
                  random.Random(2), versions=versions)
    return a, b


def test_handshake_authenticates_both_sides() -> None:
    a, b = sides()
    run_handshake(a, b)
    assert a.done and b.done
    assert (a.peer_id, b.peer_id, a.version, b.version) == ("node-b", "node-a", V, V)


def test_handshake_wrong_secret_refused() -> None:
    a, b = sides(secret_b=b"another secret")
    with pytest.raises(HandshakeError) as info:
        run_handshake(a, b)
    assert info.value.code == m.ErrorCode.AUTH_FAILED and not info.value.by_peer
    assert State.FAILED in (a.state, b.state)


@pytest.mark.parametrize(("b_kwargs", "code"), [
    ({"versions": (V + 1, V + 2)}, m.ErrorCode.VERSION_MISMATCH),
    ({"versions": (1, 1)}, m.ErrorCode.VERSION_MISMATCH),  # version 1 lacks COND_WRITE
    ({"cluster_name": "c2"}, m.ErrorCode.CLUSTER_MISMATCH),
    ({"node_id": "node-x"}, m.ErrorCode.WRONG_NODE),
    ({"node_id": "node-a"}, m.ErrorCode.WRONG_NODE),
])
def test_handshake_refusals(b_kwargs: dict[str, Any], code: m.ErrorCode) -> None:
    a, b = sides(**b_kwargs)
    with pytest.raises(HandshakeError) as info:
        run_handshake(a, b)
    assert info.value.code == code


def test_handshake_picks_highest_common_version() -> None:
    a = Handshake(Role.INITIATOR, "a", "c", SECRET, random.Random(1), versions=(1, 3))
    b = Handshake(Role.ACCEPTOR, "b", "c", SECRET, random.Random(2), versions=(2, 5))
    run_handshake(a, b)
    assert a.version == b.version == 3


def test_handshake_out_of_order_and_peer_error() -> None:
    a, _ = sides()
    a.start()
    with pytest.raises(HandshakeError, match="unexpected AuthChallenge"):
        a.receive(m.AuthChallenge(N))
    a, _ = sides()
    a.start()
    with pytest.raises(HandshakeError) as info:
        a.receive(m.Error(m.ErrorCode.AUTH_FAILED, "no"))
    assert info.value.by_peer and info.value.code == m.ErrorCode.AUTH_FAILED


def test_reflected_nonce_and_replayed_proof_refused() -> None:
    a, b = sides()
    hello_a, challenge_a = a.start()
    b.start()
    b.receive(hello_a)
    a.receive(m.Hello(V, V, "node-b", "c1"))
    with pytest.raises(HandshakeError, match="reflected"):
        a.receive(challenge_a)  # an attacker sends our own nonce back
    # A proof b made for a1's nonce does not verify on another connection (a2's nonce).
    a1, b1 = sides()
    hello_a1, challenge_a1 = a1.start()
    hello_b, challenge_b = b1.start()
    b1.receive(hello_a1)
    (response_b,) = b1.receive(challenge_a1)
    a2 = Handshake(Role.INITIATOR, "node-a", "c1", SECRET, random.Random(3))
    a2.start()
    a2.receive(hello_b)
    a2.receive(challenge_b)
    with pytest.raises(HandshakeError) as info:
        a2.receive(response_b)
    assert info.value.code == m.ErrorCode.AUTH_FAILED
