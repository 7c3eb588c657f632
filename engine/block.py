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
4. decode(), parse() and SearchBlock.find() are a trust boundary: they check every length and
   offset before slicing and raise CorruptionError naming the file, never IndexError or
   struct.error. (The block CRC is checked before either by table_format.unseal().)
5. Point lookups (parse() + SearchBlock.find()) decode the key at each restart point and at
   most one restart interval per call, never the whole block; a decoded interval is kept in
   the SearchBlock (as a dict) so later finds in it are one hash lookup.
"""

from __future__ import annotations

import enum
import struct
from bisect import bisect_right

from engine.errors import CorruptionError

RESTART_INTERVAL_DEFAULT = 16
TOMBSTONE_LENGTH = 0xFFFF_FFFF  # On disk: the value_length that means "deleted".
ENTRY_HEADER = struct.Struct("<III")  # shared, unshared, value_length
_U32 = struct.Struct("<I")
_pack_header = ENTRY_HEADER.pack
_unpack_header = ENTRY_HEADER.unpack_from

DecodedBlock = tuple[list[bytes], list[bytes | None]]  # keys, values (None = tombstone)


class Absent(enum.Enum):
    """SearchBlock.find()'s answer for a key the block does not hold."""

    ABSENT = enum.auto()


ABSENT = Absent.ABSENT


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


class SearchBlock:
    """A checked block kept as raw bytes plus its restart points, for point lookups.

    parse() checks the restart array and decodes only the key at each restart point; find()
    bisects those keys in C and decodes at most one restart interval (<= restart_interval
    entries), checking every length it reads like decode() does. A decoded interval is kept,
    so a later find() in the same interval of a cached block is a bisect only.
    """

    __slots__ = ("_intervals", "data", "end", "offset", "path", "restart_keys", "restarts")

    def __init__(self, data: bytes, end: int, restarts: tuple[int, ...],
                 restart_keys: list[bytes], path: str, offset: int) -> None:
        """Private: use parse()."""
        self.data = data
        self.end = end
        self.restarts = restarts
        self.restart_keys = restart_keys
        self.path = path
        self.offset = offset
        self._intervals: list[dict[bytes, bytes | None] | None] = [None] * len(restarts)

    def find(self, key: bytes) -> bytes | Absent | None:
        """The value of key (None = tombstone), or ABSENT if the block does not hold key."""
        i = bisect_right(self.restart_keys, key) - 1
        if i < 0:
            return ABSENT
        interval = self._intervals[i]
        if interval is None:
            keys, values = self._decode_interval(i)
            interval = self._intervals[i] = dict(zip(keys, values, strict=True))
        return interval.get(key, ABSENT)

    def decode(self) -> DecodedBlock:
        """All entries, fully checked (as decode())."""
        return decode(self.data, self.path, self.offset)

    def _decode_interval(self, i: int) -> DecodedBlock:
        data = self.data
        path = self.path
        restarts = self.restarts
        pos = restarts[i]
        stop = restarts[i + 1] if i + 1 < len(restarts) else self.end
        hsize = ENTRY_HEADER.size
        keys: list[bytes] = []
        values: list[bytes | None] = []
        last = b""
        while pos < stop:
            if pos + hsize > stop:
                raise CorruptionError(path, "entry header past end of restart interval",
                                      self.offset + pos)
            shared, unshared, vlen = _unpack_header(data, pos)
            pos += hsize
            if shared > len(last) or (not keys and shared) or pos + unshared > stop:
                raise CorruptionError(path, f"bad entry key lengths {shared}/{unshared}",
                                      self.offset + pos)
            key = last[:shared] + data[pos : pos + unshared] if shared else data[
                pos : pos + unshared]
            pos += unshared
            if vlen == TOMBSTONE_LENGTH:
                values.append(None)
            else:
                if pos + vlen > stop:
                    raise CorruptionError(path, f"value length {vlen} past end of interval",
                                          self.offset + pos)
                values.append(data[pos : pos + vlen])
                pos += vlen
            if keys and key <= last:
                raise CorruptionError(path, "keys out of order in block", self.offset + pos)
            keys.append(key)
            last = key
        if i + 1 < len(restarts) and last >= self.restart_keys[i + 1]:
            raise CorruptionError(path, "keys out of order in block", self.offset + pos)
        return keys, values




def parse(data: bytes | bytearray | memoryview, path: str, offset: int) -> SearchBlock:
    """Check the restart array of block data and decode the key at each restart point.

    Entries between restart points are checked when find() first decodes their interval.
    """
    data = bytes(data)
    size = len(data)
    if size < 4:
        raise CorruptionError(path, f"block of {size} bytes", offset)
    (num_restarts,) = _U32.unpack_from(data, size - 4)
    if num_restarts == 0 or 4 + 4 * num_restarts > size:
        raise CorruptionError(path, f"block restart count {num_restarts}", offset)
    end = size - 4 - 4 * num_restarts
    restarts: tuple[int, ...] = struct.unpack_from(f"<{num_restarts}I", data, end)
    if restarts[0] != 0:
        raise CorruptionError(path, "block restart points do not match its entries", offset)
    hsize = ENTRY_HEADER.size
    keys: list[bytes] = []
    prev = -1
    for pos in restarts:
        if pos <= prev or pos + hsize > end:
            raise CorruptionError(path, "block restart points do not match its entries",
                                  offset)
        prev = pos
        shared, unshared, _ = _unpack_header(data, pos)
        start = pos + hsize
        if shared or start + unshared > end:
            raise CorruptionError(path, f"bad entry key lengths {shared}/{unshared}",
                                  offset + start)
        key = data[start : start + unshared]
        if keys and key <= keys[-1]:
            raise CorruptionError(path, "keys out of order in block", offset + start)
        keys.append(key)
    return SearchBlock(data, end, restarts, keys, path, offset)
