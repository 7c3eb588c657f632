"""Sibling-set codec: round trips, canonical bytes, and garbage rejected at the boundary."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.errors import CorruptionError
from cluster.sibling_codec import (
    BIN_HEADERS,
    FORMAT_VERSION,
    UINTS,
    decode,
    decode_exact,
    decode_single,
    encode,
    encode_single,
    siblings_of,
    single_parts,
)
from cluster.version import Siblings

actors = st.binary(min_size=1, max_size=12)
stamps = st.integers(0, 2**63)
clocks = st.dictionaries(actors, st.tuples(st.integers(1, 2**40), stamps), min_size=1,
                         max_size=5)
versions = st.tuples(clocks, stamps, st.integers(0, 2**63), actors,
                     st.one_of(st.none(), st.binary(max_size=64)))
sibling_sets = st.lists(versions, min_size=1, max_size=4).map(tuple)

A = b"\x01" * 8


@given(sibling_sets)
def test_round_trip(siblings: Siblings) -> None:
    data = encode(siblings)
    assert decode(data) == siblings
    assert encode(decode(data)) == data


def wide_encoding(data: bytes) -> bytes:
    """The fields of the encoded set ``data`` packed with an array32 header and every integer
    in its 8-byte form: valid msgpack that decodes to the same set, yet not ``encode``'s
    bytes (what another msgpack writer might send)."""
    fields = msgpack.unpackb(data, use_list=False)
    out = [b"\xdd" + len(fields).to_bytes(4, "big")]
    for item in fields:
        out.append(b"\xcf" + item.to_bytes(8, "big") if type(item) is int
                   else msgpack.packb(item, use_bin_type=True))
    return b"".join(out)


@given(sibling_sets)
def test_decode_exact_tells_encode_bytes_from_other_forms(siblings: Siblings) -> None:
    data = encode(siblings)
    assert decode_exact(data) == (siblings, True)
    wide = wide_encoding(data)
    assert wide != data
    assert decode_exact(wide) == (siblings, False)
    assert decode(wide) == siblings


def test_decode_exact_refuses_garbage() -> None:
    with pytest.raises(CorruptionError):
        decode_exact(b"\x92\x09\x09")


@given(sibling_sets)
def test_clock_order_does_not_change_bytes(siblings: Siblings) -> None:
    reordered = tuple((dict(reversed(list(v[0].items()))), *v[1:]) for v in siblings)
    assert encode(reordered) == encode(siblings)


@given(actors.filter(lambda a: len(a) <= 255), stamps, st.binary(max_size=255),
       st.integers(1, len(UINTS) - 1))
def test_joined_parts_are_the_packed_bytes(actor: bytes, stamp_ms: int, value: bytes,
                                            counter: int) -> None:
    """SET's joined encoding (single_parts) gives exactly what msgpack packs."""
    ms, head, middle, tail = single_parts(actor, stamp_ms)
    joined = head + BIN_HEADERS[len(value)] + value + middle + UINTS[counter] + tail
    assert ms == stamp_ms
    assert joined == encode_single(stamp_ms, 0, actor, value, counter, stamp_ms)
    assert decode(joined) == (({actor: (counter, stamp_ms)}, stamp_ms, 0, actor, value),)


def test_parts_tables_cover_the_edges_of_msgpack_forms() -> None:
    # The tables end where msgpack changes form: bin 8 -> bin 16, uint 16 stays, fixint ends
    # at 127; each entry is what packing gives.
    assert len(BIN_HEADERS) == 256
    assert all(BIN_HEADERS[n] + b"v" * n == msgpack.packb(b"v" * n, use_bin_type=True)
               for n in (0, 1, 127, 128, 255))
    assert all(UINTS[n] == msgpack.packb(n) for n in (0, 127, 128, 255, 256, len(UINTS) - 1))


def test_common_shape_fast_path() -> None:
    data = encode_single(10, 0, A, b"v", 3, 9)
    assert data == encode((({A: (3, 9)}, 10, 0, A, b"v"),))
    single = decode_single(data)
    assert single == (FORMAT_VERSION, 10, 0, A, b"v", 1, A, 3, 9)
    assert single is not None and siblings_of(single) == decode(data)
    tombstone = encode((({A: (3, 9)}, 10, 0, A, None),))
    assert decode_single(tombstone) == (FORMAT_VERSION, 10, 0, A, None, 1, A, 3, 9)
    wide = encode((({A: (1, 1), b"b": (2, 2)}, 1, 0, A, b"x"),))
    wide_single = decode_single(wide)
    assert wide_single is not None and len(wide_single) == 12
    assert siblings_of(wide_single) == decode(wide) == (({A: (1, 1), b"b": (2, 2)}, 1, 0, A, b"x"),)
    two = encode((({A: (1, 1)}, 1, 0, A, b"x"), ({b"b": (1, 1)}, 1, 0, b"b", b"y")))
    assert decode_single(two) is None
    assert len(decode(two)) == 2


def test_documented_example_bytes() -> None:
    # The worked example of docs/formats/sibling-set.md.
    data = encode((({A: (3, 1_700_000_000_000)}, 1_700_000_000_000, 0, A, b"hi"),))
    assert data.hex(" ") == (
        "99 01 cf 00 00 01 8b cf e5 68 00 00 c4 08 01 01 01 01 01 01 01 01 c4 02 68 69 01 "
        "c4 08 01 01 01 01 01 01 01 01 03 cf 00 00 01 8b cf e5 68 00"
    )


BAD = [
    (b"", "not valid msgpack"),
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb(7), "not a msgpack array"),
    (msgpack.packb([]), "unknown format version"),
    (msgpack.packb([2, 1, 0, A, b"v", 1, A, 1, 1]), "unknown format version"),
    (msgpack.packb([True, 1, 0, A, b"v", 1, A, 1, 1]), "unknown format version"),
    (msgpack.packb([1]), "no versions"),
    (msgpack.packb([1, 1, 0, A]), "truncated version"),
    (msgpack.packb([1, -1, 0, A, b"v", 1, A, 1, 1]), "timestamp_ms"),
    (msgpack.packb([1, 1, 1.5, A, b"v", 1, A, 1, 1]), "expire_at_ms"),
    (msgpack.packb([1, 1, 0, "text", b"v", 1, A, 1, 1]), "writer"),
    (msgpack.packb([1, 1, 0, b"", b"v", 1, A, 1, 1]), "writer"),
    (msgpack.packb([1, 1, 0, A, 5, 1, A, 1, 1]), "value"),
    (msgpack.packb([1, 1, 0, A, "str", 1, A, 1, 1], use_bin_type=True), "value"),
    (msgpack.packb([1, 1, 0, A, b"v", 0]), "clock length"),
    (msgpack.packb([1, 1, 0, A, b"v", 2, A, 1, 1]), "truncated clock"),
    (msgpack.packb([1, 1, 0, A, b"v", 1, A, 0, 1]), "clock entry"),
    (msgpack.packb([1, 1, 0, A, b"v", 1, A, 1, None]), "clock entry"),
    (msgpack.packb([1, 1, 0, A, b"v", 1, [1], 1, 1]), "clock actor"),
    (msgpack.packb([1, 1, 0, A, b"v", 2, b"b", 1, 1, b"a", 1, 1]), "ascending"),
    (msgpack.packb([1, 1, 0, A, b"v", 2, b"a", 1, 1, b"a", 1, 1]), "ascending"),
    (msgpack.packb([1, 1, 0, A, b"v", 1, A, 1, 1]) + b"\x00", "not valid msgpack"),
]


def test_garbage_is_rejected() -> None:
    for data, reason in BAD:
        with pytest.raises(CorruptionError, match=reason):
            decode(data)
        try:
            single = decode_single(data)
        except CorruptionError:
            continue
        assert single is None  # another shape: the caller falls back to decode(), which raises


@given(st.binary(max_size=80))
def test_random_bytes_never_decode_to_wrong_data(data: bytes) -> None:
    try:
        siblings = decode(data)
    except CorruptionError:
        return
    # Whatever decodes is a valid set (msgpack may encode an integer in a longer form than the
    # writer would: same values, other bytes).
    assert decode(encode(siblings)) == siblings


@given(sibling_sets, st.data())
def test_mutated_encodings_decode_only_to_valid(siblings: Siblings, data: st.DataObject) -> None:
    encoded = bytearray(encode(siblings))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(encoded))
    except CorruptionError:
        return
    assert decode(encode(decoded)) == decoded
