"""Data blocks of an SSTable: sorted entries with prefix-compressed keys and restart points.

Layout (docs/formats/sstable.md, "Data block"):
    entry*  restart_offset: u32 * num_restarts  num_restarts: u32
    entry := shared: u32, unshared: u32, value_length: u32, key[shared:], value
A value_length of TOMBSTONE_LENGTH marks a tombstone (no value bytes follow).

Invariants:
1. decode(BlockBuilder(...).finish()) returns exactly the entries added, in order.
2. Keys in a block strictly increase; the entry at each restart offset has shared == 0, so a
   reader can start decoding at any restart point.
3. A block holds at least one entry however large: the builder never refuses an entry, and
   the table builder cuts a block only after an add, so a 512 MiB value makes one block.
4. decode() is a trust boundary: it checks every length and offset before slicing and raises
   CorruptionError naming the file, never IndexError or struct.error. (The block CRC is
   checked before decode() by table_format.unseal().)
"""

from __future__ import annotations

import struct

from engine.errors import CorruptionError

RESTART_INTERVAL_DEFAULT = 16
TOMBSTONE_LENGTH = 0xFFFF_FFFF  # On disk: the value_length that means "deleted".
ENTRY_HEADER = struct.Struct("<III")  # shared, unshared, value_length
_U32 = struct.Struct("<I")
_pack_header = ENTRY_HEADER.pack
_unpack_header = ENTRY_HEADER.unpack_from

DecodedBlock = tuple[list[bytes], list[bytes | None]]  # keys, values (None = tombstone)


class BlockBuilder:
    """Builds one block in memory. REQUIRES: keys added in strictly increasing order."""

    __slots__ = ("_buf", "_count", "_last_key", "_restart_interval", "_restarts")

    def __init__(self, restart_interval: int = RESTART_INTERVAL_DEFAULT) -> None:
        assert restart_interval >= 1, restart_interval
        self._restart_interval = restart_interval
        self._buf = bytearray()
        self._restarts: list[int] = []
        self._count = 0
        self._last_key = b""

    def __len__(self) -> int:
        return self._count

    @property
    def size_estimate(self) -> int:
        """Bytes finish() would return now (within 4 bytes per future restart)."""
        return len(self._buf) + 4 * len(self._restarts) + 4

    def add(self, key: bytes, value: bytes | None) -> None:
        """REQUIRES: key > every key added before; len(value) < TOMBSTONE_LENGTH."""
        assert self._count == 0 or key > self._last_key, "keys must strictly increase"
        shared = 0
        if self._count % self._restart_interval == 0:
            self._restarts.append(len(self._buf))
        else:
            last = self._last_key
            limit = min(len(last), len(key))
            while shared < limit and last[shared] == key[shared]:
                shared += 1
        buf = self._buf
        if value is None:
            buf += _pack_header(shared, len(key) - shared, TOMBSTONE_LENGTH)
            buf += key[shared:]
        else:
            assert len(value) < TOMBSTONE_LENGTH, len(value)
            buf += _pack_header(shared, len(key) - shared, len(value))
            buf += key[shared:]
            buf += value
        self._last_key = key
        self._count += 1

    def finish(self) -> bytearray:
        """The block's bytes. REQUIRES: at least one entry. The builder is spent afterwards."""
        assert self._count > 0, "a block holds at least one entry"
        buf = self._buf
        for offset in self._restarts:
            buf += _U32.pack(offset)
        buf += _U32.pack(len(self._restarts))
        return buf


def decode(data: bytes | memoryview, path: str, offset: int) -> DecodedBlock:
    """All entries of the block data (as BlockBuilder.finish() made it), in order.

    offset is where the block starts in path, for error messages only.
    """
    size = len(data)
    if size < 4:
        raise CorruptionError(path, f"block of {size} bytes", offset)
    (num_restarts,) = _U32.unpack_from(data, size - 4)
    if num_restarts == 0 or 4 + 4 * num_restarts > size:
        raise CorruptionError(path, f"block restart count {num_restarts}", offset)
    end = size - 4 - 4 * num_restarts
    restarts = set(struct.unpack_from(f"<{num_restarts}I", data, end))
    keys: list[bytes] = []
    values: list[bytes | None] = []
    pos = 0
    last = b""
    at_restarts = 0
    hsize = ENTRY_HEADER.size
    while pos < end:
        if pos + hsize > end:
            raise CorruptionError(path, "entry header past end of block", offset + pos)
        shared, unshared, vlen = _unpack_header(data, pos)
        at_restart = pos in restarts
        at_restarts += at_restart
        pos += hsize
        if shared > len(last) or (at_restart and shared) or pos + unshared > end:
            raise CorruptionError(path, f"bad entry key lengths {shared}/{unshared}",
                                  offset + pos)
        key = last[:shared] + bytes(data[pos : pos + unshared]) if shared else bytes(
            data[pos : pos + unshared])
        pos += unshared
        if vlen == TOMBSTONE_LENGTH:
            values.append(None)
        else:
            if pos + vlen > end:
                raise CorruptionError(path, f"value length {vlen} past end of block",
                                      offset + pos)
            values.append(bytes(data[pos : pos + vlen]))
            pos += vlen
        if keys and key <= last:
            raise CorruptionError(path, "keys out of order in block", offset + pos)
        keys.append(key)
        last = key
    if 0 not in restarts or at_restarts != len(restarts) or len(restarts) != num_restarts:
        raise CorruptionError(path, "block restart points do not match its entries", offset)
    return keys, values
