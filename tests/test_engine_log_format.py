"""log_format: encoders and decoders are inverses; decoders reject anything malformed."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import log_format
from engine.errors import CorruptionError, StorageError
from engine.log_format import RecordType

keys = st.binary(max_size=40)
values = st.binary(max_size=300)
ops = st.lists(st.tuples(keys, st.none() | values), max_size=8)


def split_records(buf: bytes) -> list[tuple[int, bytes]]:
    """Parse whole records out of buf, checking each CRC; returns (type, payload) pairs."""
    out = []
    pos = 0
    while pos < len(buf):
        header = buf[pos : pos + log_format.RECORD_HEADER_SIZE]
        crc, length, rtype = log_format.RECORD_HEADER.unpack(header)
        payload = buf[pos + log_format.RECORD_HEADER_SIZE : pos + 9 + length]
        assert len(payload) == length
        assert log_format.record_crc(header, payload) == crc
        out.append((rtype, payload))
        pos += log_format.RECORD_HEADER_SIZE + length
    return out


def decode_all(buf: bytes) -> list[list[log_format.Op]]:
    return [log_format.decode_record(t, p, "mem", 0) for t, p in split_records(buf)]


@given(keys, values)
def test_put_round_trip(key: bytes, value: bytes) -> None:
    buf = bytearray()
    log_format.append_put(buf, key, value)
    assert decode_all(bytes(buf)) == [[(key, value)]]


def test_large_put_uses_chained_crc_and_round_trips() -> None:
    value = bytes(range(256)) * 1024  # 256 KiB: the chained-CRC path
    buf = bytearray()
    log_format.append_put(buf, b"big", value)
    assert decode_all(bytes(buf)) == [[(b"big", value)]]


@given(keys)
def test_delete_round_trip(key: bytes) -> None:
    buf = bytearray()
    log_format.append_delete(buf, key)
    assert decode_all(bytes(buf)) == [[(key, None)]]


@given(ops)
def test_batch_round_trip(batch: list[log_format.Op]) -> None:
    buf = bytearray()
    log_format.append_batch(buf, batch)
    assert decode_all(bytes(buf)) == [batch]
    assert len(buf) == log_format.RECORD_HEADER_SIZE + log_format.batch_payload_bytes(batch)


@given(st.lists(st.one_of(
    st.tuples(st.just("put"), keys, values),
    st.tuples(st.just("delete"), keys, st.none()),
), max_size=10))
def test_records_concatenate(records: list[tuple[str, bytes, bytes | None]]) -> None:
    buf = bytearray()
    for kind, key, value in records:
        if kind == "put":
            assert value is not None
            log_format.append_put(buf, key, value)
        else:
            log_format.append_delete(buf, key)
    assert decode_all(bytes(buf)) == [[(k, v)] for _, k, v in records]


def flatten(batch: list[log_format.Op]) -> list[bytes | None]:
    return [item for op in batch for item in op]


# A pending list as the commit log builds it: free ops, and spans (batches) between them.
pending_parts = st.lists(st.tuples(st.booleans(), ops.filter(bool)), max_size=6)


@given(pending_parts)
def test_groups_round_trip_with_spans_as_records_of_their_own(
        parts: list[tuple[bool, list[log_format.Op]]]) -> None:
    items: list[bytes | None] = []
    spans: list[tuple[int, int]] = []
    expected: list[list[log_format.Op]] = []  # the records: each span, each free run
    previous_free = False
    for is_span, batch in parts:
        start = len(items)
        items += flatten(batch)
        if is_span:
            spans.append((start, len(items)))
            expected.append(batch)
        elif previous_free:
            expected[-1] = expected[-1] + batch  # the free run goes on
        else:
            expected.append(batch)
        previous_free = not is_span
    records = split_records(log_format.encode_groups(items, spans))
    assert all(rtype == RecordType.GROUP for rtype, _ in records)
    assert [log_format.decode_record(t, p, "mem", 0) for t, p in records] == expected


def test_free_items_are_cut_into_records_of_at_most_group_items_max() -> None:
    count = log_format.GROUP_ITEMS_MAX + 10  # items: keys and values
    items: list[bytes | None] = [b"k%d" % i if i % 2 == 0 else b"v" for i in range(count)]
    records = split_records(log_format.encode_groups(items, []))
    decoded = [log_format.decode_record(t, p, "mem", 0) for t, p in records]
    assert [len(ops) for ops in decoded] == [log_format.GROUP_ITEMS_MAX // 2, 5]
    assert flatten([op for ops in decoded for op in ops]) == items


def test_one_free_run_is_one_record_of_known_bytes() -> None:
    # The layout docs/formats/commit-log.md shows: put "k" = "v", delete "d".
    data = log_format.encode_groups([b"k", b"v", b"d", None], [])
    assert data.hex(" ") == "13 dd 82 d0 0b 00 00 00 04 94 c4 01 6b c4 01 76 c4 01 64 c0"
    assert decode_all(data) == [[(b"k", b"v"), (b"d", None)]]


@given(ops.filter(bool))
def test_group_payload_bound_holds(batch: list[log_format.Op]) -> None:
    [(_, payload)] = split_records(log_format.encode_groups(flatten(batch), [(0, 2 * len(batch))]))
    assert len(payload) <= log_format.group_payload_bound(batch)


def test_group_record_in_a_version_1_segment_is_damage() -> None:
    [(rtype, payload)] = split_records(log_format.encode_groups([b"k", b"v"], []))
    with pytest.raises(CorruptionError, match="unknown record type 4"):
        log_format.decode_record(rtype, payload, "seg", 0, version=1)
    assert log_format.decode_record(rtype, payload, "seg", 0, version=2) == [(b"k", b"v")]


def test_crc_covers_length_and_type() -> None:
    buf = bytearray()
    log_format.append_put(buf, b"k", b"v")
    header = bytes(buf[:9])
    payload = bytes(buf[9:])
    crc = log_format.record_crc(header, payload)
    for index in range(4, 9):  # length and type bytes
        damaged = bytearray(header)
        damaged[index] ^= 0x01
        assert log_format.record_crc(bytes(damaged), payload) != crc


def test_segment_header_round_trip() -> None:
    fields = log_format.SegmentHeader(42, 41, 123_456_789)
    header = log_format.encode_segment_header(fields)
    assert len(header) == log_format.SEGMENT_HEADER_SIZE
    assert header.startswith(log_format.MAGIC)
    assert log_format.check_segment_header(header, "seg", 42) == fields


def test_header_prefix_detection() -> None:
    header = log_format.encode_segment_header(log_format.SegmentHeader(5, 4, 100))
    assert all(log_format.is_header_prefix(header[:n]) for n in range(len(header)))
    assert not log_format.is_header_prefix(header)
    assert not log_format.is_header_prefix(b"\x89RKVX")


def test_segment_header_damage_is_corruption() -> None:
    header = log_format.encode_segment_header(log_format.SegmentHeader(7, 6, 99))
    cases = [
        (header[:10], "incomplete segment header"),
        (b"X" + header[1:], "bad magic"),
        (header[:12] + b"\x01" + header[13:], "checksum mismatch"),
        (header[:-1] + bytes([header[-1] ^ 0xFF]), "checksum mismatch"),
    ]
    for damaged, reason in cases:
        with pytest.raises(CorruptionError, match=reason) as info:
            log_format.check_segment_header(damaged, "seg-7", 7)
        assert "seg-7" in str(info.value)


def test_segment_header_for_another_number_is_corruption() -> None:
    with pytest.raises(CorruptionError, match="header names segment 8"):
        log_format.check_segment_header(
            log_format.encode_segment_header(log_format.SegmentHeader(8, 0, 0)), "seg", 9)


def test_unknown_version_is_not_corruption() -> None:
    header = bytearray(log_format.encode_segment_header(log_format.SegmentHeader(3, 2, 50)))
    header[8] = log_format.VERSION + 1
    header[36:40] = log_format.crc32(header[:36]).to_bytes(4, "little")
    with pytest.raises(StorageError, match=f"format version {log_format.VERSION + 1}") as info:
        log_format.check_segment_header(bytes(header), "seg", 3)
    assert not isinstance(info.value, CorruptionError)


MALFORMED = [
    (RecordType.PUT, b"\x01\x00", "PUT payload of 2 bytes"),
    (RecordType.PUT, struct.pack("<I", 9) + b"abc", "key length 9 exceeds payload"),
    (RecordType.BATCH, b"\x01", "BATCH payload of 1 bytes"),
    (RecordType.BATCH, struct.pack("<I", 1000), "BATCH count 1000 exceeds payload"),
    (RecordType.BATCH, struct.pack("<I", 1) + log_format.BATCH_OP.pack(1, 50, 0) + b"k",
     "past end of payload"),
    (RecordType.BATCH, struct.pack("<I", 1) + log_format.BATCH_OP.pack(7, 1, 0) + b"k",
     "BATCH op 7"),
    (RecordType.BATCH, struct.pack("<I", 1) + log_format.BATCH_OP.pack(2, 1, 1) + b"kv",
     "BATCH op 2 with value length 1"),
    (RecordType.BATCH, struct.pack("<I", 0) + b"junk", "stray bytes"),
    (RecordType.GROUP, b"\xc1", "GROUP payload is not msgpack"),
    (RecordType.GROUP, b"\x92\xc4\x01k", "GROUP payload is not msgpack"),  # truncated
    (RecordType.GROUP, b"\x90", "not a non-empty array"),
    (RecordType.GROUP, b"\xc4\x01k", "not a non-empty array"),
    (RecordType.GROUP, b"\x91\xc4\x01k", "not a non-empty array"),  # a key, no value
    (RecordType.GROUP, b"\x92\xa1k\xc0", "GROUP key is not bin"),  # str, not bin
    (RecordType.GROUP, b"\x92\xc4\x01k\x05", "neither bin nor nil"),
    (RecordType.GROUP, b"\x92\xc4\x01k\xc0\x00", "GROUP payload is not msgpack"),  # extra
    (RecordType.GROUP, b"\x91" * 100_000 + b"\xc0", "GROUP payload is not msgpack"),  # deep
    (RecordType.GROUP, b"\xdd\xff\xff\xff\xff", "GROUP payload is not msgpack"),  # 4G items
    (RecordType.GROUP, b"\x92\xc6\xff\xff\xff\xff", "GROUP payload is not msgpack"),
    (RecordType.GROUP, b"\x92\xd4\x01\x01\xc0", "GROUP key is not bin"),  # an ext type
    (RecordType.GROUP, b"\x92\x80\xc0", "GROUP key is not bin"),  # a map
    (RecordType.ZERO, b"", "unknown record type 0"),
    (200, b"abc", "unknown record type 200"),
]


def test_decode_rejects_malformed_payload() -> None:
    for rtype, payload, reason in MALFORMED:
        with pytest.raises(CorruptionError, match=reason) as info:
            log_format.decode_record(rtype, payload, "seg", 100)
        assert info.value.offset == 100, reason


@given(st.integers(0, 4), st.binary(max_size=64))
def test_decode_never_raises_anything_but_corruption(rtype: int, payload: bytes) -> None:
    try:
        log_format.decode_record(rtype, payload, "seg", 0)
    except CorruptionError:
        pass


def test_on_disk_numbers_are_frozen() -> None:
    # Changing any of these breaks every existing log: retire values, never renumber.
    assert log_format.MAGIC == b"\x89RKVLOG\n"
    assert log_format.VERSION == 2
    assert log_format.READ_VERSIONS == (1, 2)
    assert [int(t) for t in RecordType] == [0, 1, 2, 3, 4]
    assert log_format.SEGMENT_HEADER_SIZE == 40
    assert log_format.RECORD_HEADER_SIZE == 9
