"""SSTable byte format shared by table_builder (encode) and table_reader (decode).

The prose spec with the byte grammar is docs/formats/sstable.md; keep the two in step.

Invariants:
1. Every block in a table (data, bloom, index, properties) is stored as its bytes followed by
   crc32(bytes) (u32); unseal() checks the CRC before any byte is interpreted.
2. A BlockHandle's size excludes the 4-byte CRC trailer; the handle of block i+1 starts where
   block i's trailer ends, and the last block's trailer ends where the footer starts.
3. The footer is the last FOOTER_SIZE bytes of the file: handles, version, CRC of the bytes
   before it, then MAGIC. A footer whose CRC matches but whose version is unknown is a file of
   another release (StorageError), not corruption.
4. Decoders check every length before slicing and raise CorruptionError naming the file.
5. MAGIC, FORMAT_VERSION and every field offset are on disk: never renumber; bump the version.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import Final, Literal

from engine.errors import CorruptionError, StorageError

MAGIC: Final = b"\x89RKVSST\n"
FORMAT_VERSION: Final = 1  # On disk: bump when the layout changes.
TABLE_SUFFIX: Final = ".sst"
TEMP_SUFFIX: Final = ".tmp"

BLOCK_SIZE_BYTES_DEFAULT = 4096  # LevelDB's choice: one page; small enough for cheap gets
BLOCK_TRAILER_SIZE: Final = 4  # crc32 of the block bytes

_U32 = struct.Struct("<I")
HANDLE = struct.Struct("<QI")  # offset u64, size u32 (CRC trailer not included)
# bloom, index and properties handles; version u8; 3 reserved; crc32 of bytes 0..40; magic.
_FOOTER_BODY = struct.Struct("<QIQIQIB3x")
FOOTER_SIZE: Final = _FOOTER_BODY.size + 4 + len(MAGIC)  # 52
BLOCK_BYTES_MAX: Final = 0xFFFF_FFFF  # a handle's size field is a u32
# entry_count u64, tombstone_count u64, data_block_count u64, min_key_len u32, min_key,
# max_key_len u32, max_key.
_PROPS_HEAD = struct.Struct("<QQQ")


class _Tombstone(enum.Enum):
    TOMBSTONE = "TOMBSTONE"


TOMBSTONE: Final = _Tombstone.TOMBSTONE
"""What TableReader.get() returns for a key the table records as deleted."""
Tombstone = Literal[_Tombstone.TOMBSTONE]


@dataclass(frozen=True, slots=True)
class BlockHandle:
    offset: int
    size: int

    def encode(self) -> bytes:
        return HANDLE.pack(self.offset, self.size)


@dataclass(frozen=True, slots=True)
class Footer:
    bloom: BlockHandle
    index: BlockHandle
    properties: BlockHandle


@dataclass(frozen=True, slots=True)
class Properties:
    entry_count: int
    tombstone_count: int
    data_block_count: int
    min_key: bytes
    max_key: bytes


def seal(block: bytes | bytearray) -> bytes:
    """block followed by its CRC trailer, as written to the file."""
    return bytes(block) + encode_crc(zlib.crc32(block))


def encode_crc(crc: int) -> bytes:
    """The trailer of a block whose contents have zlib.crc32 crc (computed piecewise by a
    writer that never joins the contents into one buffer)."""
    return _U32.pack(crc)


def unseal(raw: bytes, path: str, offset: int, name: str) -> memoryview:
    """The block bytes of raw (block + trailer) after checking its CRC."""
    if len(raw) < BLOCK_TRAILER_SIZE:
        raise CorruptionError(path, f"{name} block truncated ({len(raw)} bytes)", offset)
    body = memoryview(raw)[:-BLOCK_TRAILER_SIZE]
    (stored,) = _U32.unpack_from(raw, len(body))
    if zlib.crc32(body) != stored:
        raise CorruptionError(path, f"{name} block checksum mismatch", offset)
    return body


# crc32(block + crc32(block) as u32 little-endian) is this constant for every block (CRC-32's
# residue): check_sealed() checks a sealed block with one crc32 call over it, no slicing.
CRC_RESIDUE: Final = 0x2144DF1C


def check_sealed(raw: bytes, path: str, offset: int, name: str) -> None:
    """Check the CRC trailer of raw (block + trailer, as read): what unseal() checks, without
    making a view of the body. Raises CorruptionError naming the file."""
    if len(raw) < BLOCK_TRAILER_SIZE:
        raise CorruptionError(path, f"{name} block truncated ({len(raw)} bytes)", offset)
    if zlib.crc32(raw) != CRC_RESIDUE:
        raise CorruptionError(path, f"{name} block checksum mismatch", offset)


def encode_footer(footer: Footer) -> bytes:
    b, i, p = footer.bloom, footer.index, footer.properties
    body = _FOOTER_BODY.pack(b.offset, b.size, i.offset, i.size, p.offset, p.size,
                             FORMAT_VERSION)
    return body + _U32.pack(zlib.crc32(body)) + MAGIC


def decode_footer(data: bytes, path: str, file_size: int) -> Footer:
    """Check and decode the footer (the last FOOTER_SIZE bytes of a file of file_size)."""
    at = file_size - FOOTER_SIZE
    if len(data) != FOOTER_SIZE:
        raise CorruptionError(path, f"file of {file_size} bytes is too short for a footer", 0)
    if data[-len(MAGIC) :] != MAGIC:
        raise CorruptionError(path, f"bad magic {data[-len(MAGIC):]!r}", at)
    body = data[: _FOOTER_BODY.size]
    (stored,) = _U32.unpack_from(data, _FOOTER_BODY.size)
    if zlib.crc32(body) != stored:
        raise CorruptionError(path, "footer checksum mismatch", at)
    bo, bs, io, is_, po, ps, version = _FOOTER_BODY.unpack(body)
    if version != FORMAT_VERSION:
        raise StorageError(f"{path}: SSTable format version {version}; this build reads "
                           f"version {FORMAT_VERSION} only")
    footer = Footer(BlockHandle(bo, bs), BlockHandle(io, is_), BlockHandle(po, ps))
    for name, h in (("bloom", footer.bloom), ("index", footer.index),
                    ("properties", footer.properties)):
        if h.offset + h.size + BLOCK_TRAILER_SIZE > at:
            raise CorruptionError(path, f"{name} handle {h} past the footer", at)
    return footer


def encode_properties(props: Properties) -> bytes:
    return b"".join((
        _PROPS_HEAD.pack(props.entry_count, props.tombstone_count, props.data_block_count),
        _U32.pack(len(props.min_key)), props.min_key,
        _U32.pack(len(props.max_key)), props.max_key,
    ))


def decode_properties(data: bytes | memoryview, path: str, offset: int) -> Properties:
    def fail(reason: str) -> CorruptionError:
        return CorruptionError(path, f"properties block: {reason}", offset)

    if len(data) < _PROPS_HEAD.size + 8:
        raise fail(f"{len(data)} bytes")
    entries, tombstones, blocks = _PROPS_HEAD.unpack_from(data)
    pos = _PROPS_HEAD.size
    keys: list[bytes] = []
    for _ in range(2):
        if pos + 4 > len(data):
            raise fail("key length past end")
        (n,) = _U32.unpack_from(data, pos)
        pos += 4
        if pos + n > len(data):
            raise fail(f"key length {n} past end")
        keys.append(bytes(data[pos : pos + n]))
        pos += n
    if pos != len(data) or entries == 0 or tombstones > entries or keys[0] > keys[1]:
        raise fail("fields inconsistent")
    return Properties(entries, tombstones, blocks, keys[0], keys[1])


def table_name(number: int) -> str:
    assert 0 < number < 10**12, number
    return f"table-{number:012d}{TABLE_SUFFIX}"
