"""Data blocks of an SSTable: sorted entries with prefix-compressed keys and restart points.

Layout (docs/formats/sstable.md, "Data block"):
    entry*  restart_offset: u32 * num_restarts  num_restarts: u32
    entry := shared: u32, unshared: u32, value_length: u32, key[shared:], value
A value_length of TOMBSTONE_LENGTH marks a tombstone (no value bytes follow).

Invariants:
1. decode(BlockBuilder(...).finish()) returns exactly the entries added, in order, and so
   does decode(encode_entries(keys, values)), which is BlockBuilder(1)'s output made in bulk.
2. Keys in a block strictly increase; the entry at each restart offset has shared == 0, so a
   reader can start decoding at any restart point.
3. A block holds at least one entry however large: the builder never refuses an entry, and
   the table builder cuts a block only after an add, so a 512 MiB value makes one block.
4. decode(), parse() and SearchBlock.find() are a trust boundary: they check every length and
   offset before slicing and raise CorruptionError naming the file, never IndexError or
   struct.error. (The block CRC is checked before any of them, when the block is read.)
5. Point lookups (parse() + SearchBlock.find()) binary-search the restart points, slicing
   one key per probe, then decode forward within one restart interval only as far as the
   target key; never the whole block, and nothing is kept between calls.
"""

from __future__ import annotations

import enum
import operator
import struct
from collections.abc import Sequence
from itertools import accumulate, chain, repeat

from engine.errors import CorruptionError

# BlockBuilder's default, and the index block's interval: the index is decoded whole at open.
# Data blocks are written by encode_entries(), a restart at every entry (table_builder.py).
RESTART_INTERVAL_DEFAULT = 16
TOMBSTONE_LENGTH = 0xFFFF_FFFF  # On disk: the value_length that means "deleted".
ENTRY_HEADER = struct.Struct("<III")  # shared, unshared, value_length
_U32 = struct.Struct("<I")
_pack_header = ENTRY_HEADER.pack
_unpack_header = ENTRY_HEADER.unpack_from

DecodedBlock = tuple[list[bytes], list[bytes | None]]  # keys, values (None = tombstone)

# Struct objects for restart arrays, by count: parse() runs on every cache miss, and building
# the format string and Struct each time costs more than the unpack itself.
_RESTART_STRUCTS: dict[int, struct.Struct] = {}
_RESTART_STRUCTS_MAX = 1024  # counts above this (tiny entries in a huge block) are not kept
_HSIZE = ENTRY_HEADER.size


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


def encode_entries(keys: Sequence[bytes], values: Sequence[bytes | None]) -> bytes:
    """One block holding keys[i] -> values[i] (None: tombstone), every entry a restart point:
    the bytes BlockBuilder(1) makes, built by a few C-level passes over the lists instead of
    a Python loop per entry (a flush writes every entry through here; see table_builder).

    REQUIRES: at least one entry; keys strictly increase; every len(value) < TOMBSTONE_LENGTH.
    """
    n = len(keys)
    assert n > 0 and n == len(values), (n, len(values))
    assert all(map(operator.lt, keys, keys[1:])), "keys must strictly increase"
    klens = list(map(len, keys))
    if None in values:
        vlens = [TOMBSTONE_LENGTH if v is None else len(v) for v in values]
        sizes = [0 if v is None else len(v) for v in values]
        vbytes: Sequence[bytes] = [b"" if v is None else v for v in values]
    else:
        vlens = sizes = list(map(len, values))  # type: ignore[arg-type]
        vbytes = values  # type: ignore[assignment]
        assert max(vlens) < TOMBSTONE_LENGTH
    headers = map(_pack_header, repeat(0, n), klens, vlens)
    ends = accumulate(map(operator.add, map(operator.add, klens, sizes), repeat(ENTRY_HEADER.size)))
    restarts = [0, *ends]
    restarts.pop()
    return b"".join((*chain.from_iterable(zip(headers, keys, vbytes, strict=True)),
                     _restarts_struct(n).pack(*restarts), _U32.pack(n)))


def _restarts_struct(count: int) -> struct.Struct:
    packer = _RESTART_STRUCTS.get(count)
    if packer is None:
        packer = struct.Struct(f"<{count}I")
        if count <= _RESTART_STRUCTS_MAX:
            _RESTART_STRUCTS[count] = packer
    return packer


def decode(data: bytes | memoryview, path: str, offset: int, size: int | None = None
           ) -> DecodedBlock:
    """All entries of the block contents data[:size] (size None: all of data), in order.

    offset is where the block starts in path, for error messages only. A block whose every
    entry is a restart point (encode_entries()) is decoded by C-level passes when data is
    bytes; any other block entry by entry. Both check the same things.
    """
    if size is None:
        size = len(data)
    if size < 4 or size > len(data):
        raise CorruptionError(path, f"block of {size} bytes", offset)
    (num_restarts,) = _U32.unpack_from(data, size - 4)
    if num_restarts == 0 or 4 + 4 * num_restarts > size:
        raise CorruptionError(path, f"block restart count {num_restarts}", offset)
    end = size - 4 - 4 * num_restarts
    starts: tuple[int, ...] = _restarts_struct(num_restarts).unpack_from(data, end)
    if isinstance(data, bytes):
        fast = _decode_all_restarts(data, end, starts)
        if fast is not None:
            return fast
    data = memoryview(data)[:size]
    restarts = set(starts)
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


def _decode_all_restarts(data: bytes, end: int, starts: tuple[int, ...]
                         ) -> DecodedBlock | None:
    """decode() of a block whose entries all sit at restart offsets, or None if it is not one
    (then decode() takes the general path, which also reports any damage).

    The headers at the restart offsets must chain exactly from 0 to end (each entry ends where
    the next restart begins), with shared == 0 and no tombstone: then there is no entry
    between two restarts, and the slices below are in bounds. Keys must strictly increase.
    """
    if starts[0] != 0 or max(starts) + ENTRY_HEADER.size > end:
        return None
    headers = list(map(_unpack_header, repeat(data), starts))
    shared, klens, vlens = zip(*headers, strict=True)
    if any(shared) or TOMBSTONE_LENGTH in vlens:
        return None
    kstarts = list(map(operator.add, starts, repeat(ENTRY_HEADER.size)))
    kends = list(map(operator.add, kstarts, klens))
    vends = list(map(operator.add, kends, vlens))
    if vends[-1] != end or vends[:-1] != list(starts[1:]):
        return None
    keys = list(map(data.__getitem__, map(slice, kstarts, kends)))
    if not all(map(operator.lt, keys, keys[1:])):
        return None
    values: list[bytes | None] = list(map(data.__getitem__, map(slice, kends, vends)))
    return keys, values


class SearchBlock:
    """A checked block kept as raw bytes plus its restart offsets, for point lookups.

    find() binary-searches the restart points, slicing only the key at each probe, then
    decodes forward from the last restart key below the target until it reaches a key >= it
    (at most restart_interval - 1 entries). Nothing is decoded ahead of time and nothing is
    kept between calls, so a cached block costs its bytes plus the restart tuple. Every length
    and offset read is checked before it is sliced (invariant 4); a block whose checksum
    passed but whose structure lies yields CorruptionError, or at worst a wrong ABSENT for a
    key it does not really hold, never an IndexError. decode() checks everything.
    """

    __slots__ = ("data", "end", "offset", "path", "restarts", "size")

    def __init__(self, data: bytes, size: int, end: int, restarts: tuple[int, ...], path: str,
                 offset: int) -> None:
        """Private: use parse()."""
        self.data = data
        self.size = size
        self.end = end
        self.restarts = restarts
        self.path = path
        self.offset = offset

    def find(self, key: bytes) -> bytes | Absent | None:
        """The value of key (None = tombstone), or ABSENT if the block does not hold key."""
        data = self.data
        restarts = self.restarts
        end = self.end
        lo = 0
        hi = len(restarts)
        last = b""
        pos = 0
        # Invariant: the restart keys before lo are < key, those from hi on are > key; last is
        # the restart key at lo - 1 and pos the offset of the entry after it.
        while lo < hi:
            mid = (lo + hi) >> 1
            at = restarts[mid]
            if at + _HSIZE > end:
                raise CorruptionError(self.path, f"restart point {at} past the entries",
                                      self.offset)
            shared, unshared, vlen = _unpack_header(data, at)
            start = at + _HSIZE
            stop = start + unshared
            if shared or stop > end:
                raise CorruptionError(self.path, f"bad entry key lengths {shared}/{unshared}",
                                      self.offset + start)
            probe = data[start:stop]
            if probe < key:
                lo = mid + 1
                last = probe
                pos = stop if vlen == TOMBSTONE_LENGTH else stop + vlen
            elif probe > key:
                hi = mid
            else:
                return self._value(stop, vlen, end)
        if lo == 0:
            return ABSENT
        limit = restarts[lo] if lo < len(restarts) else end
        if limit > end:
            raise CorruptionError(self.path, f"restart point {limit} past the entries",
                                  self.offset)
        while pos < limit:
            if pos + _HSIZE > limit:
                raise CorruptionError(self.path, "entry header past end of restart interval",
                                      self.offset + pos)
            shared, unshared, vlen = _unpack_header(data, pos)
            start = pos + _HSIZE
            stop = start + unshared
            if shared > len(last) or stop > limit:
                raise CorruptionError(self.path, f"bad entry key lengths {shared}/{unshared}",
                                      self.offset + start)
            probe = last[:shared] + data[start:stop] if shared else data[start:stop]
            if probe >= key:
                return self._value(stop, vlen, limit) if probe == key else ABSENT
            pos = stop if vlen == TOMBSTONE_LENGTH else stop + vlen
            last = probe
        return ABSENT

    def _value(self, start: int, vlen: int, limit: int) -> bytes | None:
        if vlen == TOMBSTONE_LENGTH:
            return None
        stop = start + vlen
        if stop > limit:
            raise CorruptionError(self.path, f"value length {vlen} past end of block",
                                  self.offset + start)
        return self.data[start:stop]

    def decode(self) -> DecodedBlock:
        """All entries, fully checked (as decode())."""
        return decode(self.data, self.path, self.offset, self.size)




def parse(data: bytes, path: str, offset: int, size: int | None = None) -> SearchBlock:
    """A SearchBlock over the block contents data[:size] (size None: all of data).

    Only the restart array is read here (count, bounds, first offset 0); entries are checked
    as find() reaches them. data may go on past size (the CRC trailer of a sealed block read
    whole): it is kept as it is, not copied. REQUIRES: the block's CRC was checked.
    """
    if size is None:
        size = len(data)
    if size < 4 or size > len(data):
        raise CorruptionError(path, f"block of {size} bytes", offset)
    (num_restarts,) = _U32.unpack_from(data, size - 4)
    if num_restarts == 0 or 4 + 4 * num_restarts > size:
        raise CorruptionError(path, f"block restart count {num_restarts}", offset)
    end = size - 4 - 4 * num_restarts
    restarts: tuple[int, ...] = _restarts_struct(num_restarts).unpack_from(data, end)
    if restarts[0] != 0 or end < _HSIZE:
        raise CorruptionError(path, "block restart points do not match its entries", offset)
    return SearchBlock(data, size, end, restarts, path, offset)
