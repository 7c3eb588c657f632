"""Data blocks of an SSTable: sorted entries with prefix-compressed keys and restart points.

Layout (docs/formats/sstable.md, "Data block"):
    entry*  restart_offset: u32 * num_restarts  num_restarts: u32
    entry := shared: u32, unshared: u32, value_length: u32, key[shared:], value
A value_length of TOMBSTONE_LENGTH marks a tombstone (no value bytes follow).

Invariants:
1. decode(encode_entries(keys, values)) returns exactly those entries, in order, and so does
   decode() of any block in the general layout (prefix-compressed keys, a restart point
   every n entries), which tables written before 2026-11 hold and tests still build.
   The writer puts a restart point at every entry (encode_run(), restart_trailer()).
2. Keys in a block strictly increase; the entry at each restart offset has shared == 0, so a
   reader can start decoding at any restart point.
3. A block holds at least one entry however large: encode_run() never refuses an entry, and
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


def encode_run(keys: Sequence[bytes], values: Sequence[bytes | None]
               ) -> tuple[bytes, list[int], int]:
    """Entries keys[i] -> values[i] (None: tombstone), each a restart point (shared = 0), back
    to back: (their bytes, the offset where each starts plus the end, the tombstone count).

    A block is any slice of these bytes between two offsets followed by restart_trailer() of
    those offsets rebased to the slice (encode_entries() is the whole run as one block), so a
    table builder encodes a batch of entries once and cuts its blocks from it. The work is a
    few C-level passes over the lists, not Python code per entry: a flush writes every entry
    through here while the loop thread competes for the GIL (db.py invariant 9).

    REQUIRES: keys strictly increase; every len(value) < TOMBSTONE_LENGTH.
    """
    n = len(keys)
    assert n == len(values), (n, len(values))
    assert all(map(operator.lt, keys, keys[1:])), "keys must strictly increase"
    klens = list(map(len, keys))
    tombstones = 0
    try:
        vlens = sizes = list(map(len, values))  # type: ignore[arg-type]
        vbytes: Sequence[bytes] = values  # type: ignore[assignment]
    except TypeError:  # a None among them: the rare path pays for its own checks
        tombstones = values.count(None)
        vlens = [TOMBSTONE_LENGTH if v is None else len(v) for v in values]
        sizes = [0 if v is None else len(v) for v in values]
        vbytes = [b"" if v is None else v for v in values]
    assert not n or max(sizes) < TOMBSTONE_LENGTH
    headers = map(_pack_header, repeat(0, n), klens, vlens)
    starts = list(accumulate(map(operator.add, map(operator.add, klens, sizes),
                                 repeat(_HSIZE, n)), initial=0))
    body = b"".join(chain.from_iterable(zip(headers, keys, vbytes, strict=True)))
    return body, starts, tombstones


def restart_trailer(offsets: Sequence[int]) -> bytes:
    """The restart array and count that end a block whose restart points are at offsets."""
    return _restarts_struct(len(offsets)).pack(*offsets) + _U32.pack(len(offsets))


def encode_entries(keys: Sequence[bytes], values: Sequence[bytes | None]) -> bytes:
    """One block holding keys[i] -> values[i] (None: tombstone), every entry a restart point:
    the bytes BlockBuilder(1) makes, by C-level passes (encode_run()).

    REQUIRES: at least one entry; keys strictly increase; every len(value) < TOMBSTONE_LENGTH.
    """
    assert keys, "a block holds at least one entry"
    body, starts, _ = encode_run(keys, values)
    starts.pop()
    return body + restart_trailer(starts)


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
