"""Commit-log byte format, shared by log_writer/commit_log (encode) and log_reader (decode).

The prose spec with the byte grammar is docs/formats/commit-log.md; keep the two in step.

Invariants:
1. decode_record() inverts encode_groups() and the append_*() encoders for every record they
   can produce.
2. A record's CRC covers every byte of the record after the CRC field (length, type, payload),
   so no header field can change undetected.
3. Record type 0 is never written, so a zero-filled tail never parses as a record.
4. Encoders are given sizes already checked against EngineOptions limits, which keep every
   payload within RECORD_PAYLOAD_BYTES_MAX; decoders check every length before slicing and raise
   CorruptionError (never IndexError or struct.error) on anything they cannot parse.
5. Magic, version, record types and batch op codes are written to disk: never renumber them;
   retire a value instead of reusing it.
6. This build writes GROUP records only, into version-2 segments; it reads versions 1 and 2.
   PUT, DELETE and BATCH records (all that version 1 has) are still read in both, and their
   encoders stay as the specification of what earlier builds wrote. A GROUP record in a
   version-1 segment is damage: no build that wrote version 1 wrote one.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from engine.errors import CorruptionError, StorageError

# zlib.crc32 (CRC-32/ISO-HDLC): built in, runs at about 2 GB/s here, and releases the GIL on
# large buffers. It is not the Castagnoli CRC that LevelDB uses; see the format doc.
crc32 = zlib.crc32

Op = tuple[bytes, bytes | None]  # (key, value); value None = delete

# --- Segment header ---------------------------------------------------------------------------

# "\x89" catches 7-bit transfers, "\n" catches newline translation (the PNG trick).
MAGIC = b"\x89RKVLOG\n"
VERSION = 2  # On disk: bump when the layout changes; readers refuse versions they do not know.
READ_VERSIONS = (1, 2)  # version 1 has no GROUP records (invariant 6)
# magic, version, 3 reserved zero bytes, this segment's number, and the number and final size
# of the segment before it (0, 0 for the first), which lets recovery notice a predecessor that
# lost whole records at its end or went missing.
_SEGMENT_HEADER_BODY = struct.Struct("<8sB3xQQQ")
_U32 = struct.Struct("<I")
SEGMENT_HEADER_SIZE = _SEGMENT_HEADER_BODY.size + _U32.size  # 40: body + crc32(body)


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    segment_no: int
    prev_segment_no: int  # 0 if this was the first segment
    prev_segment_bytes: int  # size of segment prev_segment_no when this one was created
    version: int = VERSION

# --- Records -------------------------------------------------------------------------------

RECORD_HEADER = struct.Struct("<IIB")  # crc32, payload length, record type
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 9
RECORD_PAYLOAD_BYTES_MAX = 0xFFFF_FFFF  # the length field is a u32
PUT_OVERHEAD_BYTES = 4  # the key length in front of a PUT's key


class RecordType(enum.IntEnum):
    # On disk: never renumber; retire instead.
    ZERO = 0  # reserved, never written: what preallocated or zero-filled space reads as
    PUT = 1  # payload: key_length u32, key, value (the rest of the payload)
    DELETE = 2  # payload: key (the whole payload)
    BATCH = 3  # payload: count u32, then count ops (BATCH_OP header, key, value)
    GROUP = 4  # payload: msgpack array key, value | nil, key, value | nil, ... (version >= 2)


BATCH_OP = struct.Struct("<BII")  # op (RecordType.PUT or .DELETE), key length, value length

_PUT = int(RecordType.PUT)
_DELETE = int(RecordType.DELETE)
_BATCH = int(RecordType.BATCH)
_GROUP = int(RecordType.GROUP)
_PUT_HEAD = struct.Struct("<IBI")  # the CRC-covered part of a PUT: length, type, key length
_DELETE_HEAD = struct.Struct("<IB")  # length, type
_GROUP_HEAD = _DELETE_HEAD  # length, type: a GROUP's payload carries its own framing
_BATCH_HEAD = struct.Struct("<IBI")  # length, type, count
_pack_put_head = _PUT_HEAD.pack
_pack_u32 = _U32.pack

# Below this a PUT is built with one concatenation and one crc32 call (cheapest for small
# values); at or above it the CRC is chained over the parts so a huge value is copied only once.
_LARGE_VALUE_BYTES = 64 * 1024


def encode_segment_header(header: SegmentHeader) -> bytes:
    body = _SEGMENT_HEADER_BODY.pack(MAGIC, header.version, header.segment_no,
                                     header.prev_segment_no, header.prev_segment_bytes)
    return body + _pack_u32(crc32(body))


def is_header_prefix(data: bytes) -> bool:
    """True if data could be the start of a header whose writing was interrupted."""
    start = MAGIC + bytes([VERSION])
    return len(data) < SEGMENT_HEADER_SIZE and data[: len(start)] == start[: len(data)]


def check_segment_header(data: bytes, path: str, segment_no: int) -> SegmentHeader:
    """Validate and decode a segment header read from path.

    Raises CorruptionError if it is short, damaged or names another segment, and StorageError
    if it is intact but written by a format version this build does not read (that file is not
    damaged, so recovery must not quarantine it).
    """
    if len(data) < SEGMENT_HEADER_SIZE:
        raise CorruptionError(path, f"incomplete segment header ({len(data)} of "
                              f"{SEGMENT_HEADER_SIZE} bytes)", 0)
    if data[:8] != MAGIC:
        raise CorruptionError(path, f"bad magic {data[:8]!r}", 0)
    # The CRC is checked before the version: every version keeps "bytes 36..40 are the crc32
    # of bytes 0..36", so a flipped version byte is corruption, while an intact header with
    # another version is a file this build must not touch.
    body = data[: _SEGMENT_HEADER_BODY.size]
    (stored_crc,) = _U32.unpack_from(data, _SEGMENT_HEADER_BODY.size)
    if crc32(body) != stored_crc:
        raise CorruptionError(path, "segment header checksum mismatch", 0)
    if data[8] not in READ_VERSIONS:
        raise StorageError(f"{path}: commit-log format version {data[8]}; this build reads "
                           f"versions {', '.join(map(str, READ_VERSIONS))} only")
    _, version, number, prev_no, prev_bytes = _SEGMENT_HEADER_BODY.unpack(body)
    if number != segment_no:
        raise CorruptionError(path, f"header names segment {number}, the file name "
                              f"{segment_no}", 0)
    return SegmentHeader(number, prev_no, prev_bytes, version)


def append_put(buf: bytearray, key: bytes, value: bytes) -> None:
    """Append one PUT record to buf.

    REQUIRES: PUT_OVERHEAD_BYTES + len(key) + len(value) <= RECORD_PAYLOAD_BYTES_MAX.
    This is on the hot path of every SET: keep it to a few C calls.
    """
    n = len(key)
    head = _pack_put_head(4 + n + len(value), _PUT, n)
    if len(value) < _LARGE_VALUE_BYTES:
        rest = head + key + value
        buf += _pack_u32(crc32(rest))
        buf += rest
    else:
        buf += _pack_u32(crc32(value, crc32(key, crc32(head))))
        buf += head
        buf += key
        buf += value


def append_delete(buf: bytearray, key: bytes) -> None:
    """Append one DELETE record to buf. REQUIRES: len(key) <= RECORD_PAYLOAD_BYTES_MAX."""
    rest = _DELETE_HEAD.pack(len(key), _DELETE) + key
    buf += _pack_u32(crc32(rest))
    buf += rest


def batch_payload_bytes(ops: Sequence[Op]) -> int:
    return 4 + sum(BATCH_OP.size + len(k) + (0 if v is None else len(v)) for k, v in ops)


def append_batch(buf: bytearray, ops: Sequence[Op]) -> None:
    """Append one BATCH record holding ops in order; recovery replays all of them or none.

    REQUIRES: batch_payload_bytes(ops) <= RECORD_PAYLOAD_BYTES_MAX.
    """
    payload_bytes = batch_payload_bytes(ops)
    assert payload_bytes <= RECORD_PAYLOAD_BYTES_MAX, payload_bytes
    parts: list[bytes] = [_BATCH_HEAD.pack(payload_bytes, _BATCH, len(ops))]
    for key, value in ops:
        if value is None:
            parts.append(BATCH_OP.pack(_DELETE, len(key), 0))
            parts.append(key)
        else:
            parts.append(BATCH_OP.pack(_PUT, len(key), len(value)))
            parts.append(key)
            parts.append(value)
    crc = 0
    for part in parts:
        crc = crc32(part, crc)
    buf += _pack_u32(crc)
    for part in parts:
        buf += part


# --- GROUP records: what this build writes -----------------------------------------------------
#
# The puts and deletes made between two commits are kept as a flat list of items (key, value,
# key, value, ...; a value of None deletes) and encoded by commit(): msgpack packs a chunk of
# the list in one C call, where a record built per put cost ~0.4 us of Python each (the
# header, the concatenation, a CRC call and two appends).

GROUP_ITEMS_MAX = 8192  # items (keys and values) of one GROUP record cut from a free run
# A key and value both up to this size may go in a free run (see encode_groups): a record of
# GROUP_ITEMS_MAX such items stays far below the u32 payload limit.
GROUP_FREE_BYTES_MAX = 64 * 1024
# msgpack's largest array and bin headers: 5 bytes each.
_GROUP_ITEM_OVERHEAD_BYTES = 5
_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_unpackb = msgpack.unpackb


def group_payload_bound(ops: Sequence[Op]) -> int:
    """An upper bound of the payload of the GROUP record holding ops."""
    return _GROUP_ITEM_OVERHEAD_BYTES * (1 + 2 * len(ops)) + sum(
        len(k) + (0 if v is None else len(v)) for k, v in ops)


def encode_groups(items: list[bytes | None], spans: Sequence[tuple[int, int]]) -> bytes:
    """The GROUP records of ``items`` (key, value | None, key, ...), in order.

    ``spans`` are the ascending, disjoint ``(start, end)`` slices of items that must each be
    one record of their own: a write_batch (all or nothing after a crash), or a key or value
    over GROUP_FREE_BYTES_MAX. Items outside the spans are free: cut into records of at most
    GROUP_ITEMS_MAX items.

    REQUIRES: every span's payload fits a record (group_payload_bound), every free item is at
    most GROUP_FREE_BYTES_MAX bytes, and spans have even bounds.
    """
    out: list[bytes] = []
    pos = 0
    for start, end in (*spans, (len(items), len(items))):
        for cut in range(pos, start, GROUP_ITEMS_MAX):
            _append_group(out, items[cut:min(cut + GROUP_ITEMS_MAX, start)])
        if end > start:
            _append_group(out, items[start:end])
        pos = end
    return b"".join(out)


def _append_group(out: list[bytes], items: list[bytes | None]) -> None:
    body = _packb(items)
    rest = _GROUP_HEAD.pack(len(body), _GROUP)
    out.append(_pack_u32(crc32(body, crc32(rest))))
    out.append(rest)
    out.append(body)


def _decode_group(payload: bytes, path: str, offset: int) -> list[Op]:
    try:
        items = _unpackb(payload)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CorruptionError(path, f"GROUP payload is not msgpack ({type(exc).__name__})",
                              offset) from None
    if type(items) is not list or not items or len(items) % 2:
        raise CorruptionError(path, "GROUP payload is not a non-empty array of key, value "
                              "pairs", offset)
    keys = items[0::2]
    values = items[1::2]
    if not all(type(key) is bytes for key in keys):
        raise CorruptionError(path, "GROUP key is not bin", offset)
    if not all(value is None or type(value) is bytes for value in values):
        raise CorruptionError(path, "GROUP value is neither bin nor nil", offset)
    return list(zip(keys, values, strict=True))


def record_crc(header: bytes, payload: bytes) -> int:
    """The CRC a record with this 9-byte header and payload must carry (invariant 2)."""
    return crc32(payload, crc32(memoryview(header)[4:RECORD_HEADER_SIZE]))


def decode_record(rtype: int, payload: bytes, path: str, offset: int,
                  version: int = VERSION) -> list[Op]:
    """Decode a payload whose CRC already matched, from a segment of format ``version``;
    raises CorruptionError if it does not parse."""
    if rtype == _GROUP and version >= 2:
        return _decode_group(payload, path, offset)
    if rtype == _PUT:
        if len(payload) < 4:
            raise CorruptionError(path, f"PUT payload of {len(payload)} bytes", offset)
        (n,) = _U32.unpack_from(payload)
        if 4 + n > len(payload):
            raise CorruptionError(path, f"PUT key length {n} exceeds payload", offset)
        return [(payload[4 : 4 + n], payload[4 + n :])]
    if rtype == _DELETE:
        return [(payload, None)]
    if rtype == _BATCH:
        return _decode_batch(payload, path, offset)
    raise CorruptionError(path, f"unknown record type {rtype}", offset)


def _decode_batch(payload: bytes, path: str, offset: int) -> list[Op]:
    if len(payload) < 4:
        raise CorruptionError(path, f"BATCH payload of {len(payload)} bytes", offset)
    (count,) = _U32.unpack_from(payload)
    # Each op takes at least BATCH_OP.size bytes, which bounds count before any allocation.
    if count * BATCH_OP.size > len(payload) - 4:
        raise CorruptionError(path, f"BATCH count {count} exceeds payload", offset)
    ops: list[Op] = []
    pos = 4
    for _ in range(count):
        if pos + BATCH_OP.size > len(payload):
            raise CorruptionError(path, "BATCH op header past end of payload", offset)
        op, klen, vlen = BATCH_OP.unpack_from(payload, pos)
        pos += BATCH_OP.size
        if pos + klen + vlen > len(payload):
            raise CorruptionError(path, "BATCH op past end of payload", offset)
        key = payload[pos : pos + klen]
        pos += klen
        if op == _PUT:
            ops.append((key, payload[pos : pos + vlen]))
        elif op == _DELETE and vlen == 0:
            ops.append((key, None))
        else:
            raise CorruptionError(path, f"BATCH op {op} with value length {vlen}", offset)
        pos += vlen
    if pos != len(payload):
        raise CorruptionError(path, f"{len(payload) - pos} stray bytes after BATCH ops", offset)
    return ops
