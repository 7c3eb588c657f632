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
    with pytest.raises(StorageError, match="format version 2") as info:
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
    assert log_format.VERSION == 1
    assert [int(t) for t in RecordType] == [0, 1, 2, 3]
    assert log_format.SEGMENT_HEADER_SIZE == 40
    assert log_format.RECORD_HEADER_SIZE == 9
