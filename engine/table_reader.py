"""Reads one SSTable: point lookups through bloom filter + sparse index, and ordered scans.

Invariants:
1. Every byte is checked before use: the footer (magic, CRC, version), then the properties,
   index and bloom blocks when the table opens, and each data block's CRC whenever it is read
   from the file. Damage raises CorruptionError naming the file; wrong data is never returned.
2. get() reads at most one data block, and none when the key is outside [min_key, max_key] or
   the bloom filter rules it out.
3. The index (last key of each data block -> handle) and the bloom filter stay in memory for
   the reader's lifetime, the index as compactly as Python allows: a list of the keys and one
   array of the blocks' start offsets (the blocks lie back to back, so a handle is two of
   them), ~70 bytes a block instead of ~250 with a handle, its ints and a cache key object
   each (a 3 GiB store of 1 KiB values has ~750k blocks). Data blocks go through the
   BlockCache, if one is given, as block.SearchBlock (the block's bytes as read, CRC checked
   first, when it is read from the file): get() binary-searches its restart points and
   decodes part of one interval, never the whole block. lookup() is get() with the bloom hash
   computed once by the caller for every table it asks.
4. scan() yields (key, value | None) with tombstones as None, keys strictly increasing, and
   never inserts into the cache (a full scan must not evict the working set).
5. One file handle; data blocks are read with pread (no shared position, so a scan on a
   background thread and get() on the loop thread never interfere, and a cold get reads one
   block, not a read-ahead buffer); the seeks at open and close() take the lock.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate, repeat
from operator import add
from typing import cast

from engine import block, block_cache, bloom, table_format
from engine.block import DecodedBlock
from engine.block_cache import BlockCache
from engine.errors import CorruptionError
from engine.fs import FileSystem, ReadableFile
from engine.table_format import TOMBSTONE, BlockHandle, Properties, Tombstone


class TableReader:
    """Open with TableReader.open(); close() when no reader or scan uses it any more."""

    def __init__(self, path: str, file: ReadableFile, file_size: int, props: Properties,
                 index_keys: list[bytes], ends: array[int],
                 bloom_filter: bloom.BloomFilter, cache: BlockCache | None) -> None:
        """Private: use TableReader.open()."""
        self.path = path
        self.file_size = file_size
        self.properties = props
        self.min_key = props.min_key
        self.max_key = props.max_key
        self._file = file
        self._lock = threading.Lock()
        self._index_keys = index_keys
        # ends[i] is where data block i begins, ends[i + 1] where it (with its trailer) ends.
        self._ends = ends
        self.block_count = len(ends) - 1
        self._bloom = bloom_filter
        self._may_contain = bloom_filter.may_contain_hash
        self._cache = cache
        self._cache_base = block_cache.key_base(block_cache.new_table_id())

    @classmethod
    def open(cls, fs: FileSystem, path: str, cache: BlockCache | None = None) -> TableReader:
        """Check footer, properties, index and bloom filter, and keep the latter two in memory.

        Raises CorruptionError if any of them is damaged, StorageError for an unknown format
        version, OSError if the file cannot be read.
        """
        size = fs.size(path)
        file = fs.open_read(path)
        try:
            return cls._load(path, file, size, cache)
        except BaseException:
            file.close()
            raise

    @classmethod
    def _load(cls, path: str, file: ReadableFile, size: int,
              cache: BlockCache | None) -> TableReader:
        if size < table_format.FOOTER_SIZE:
            raise CorruptionError(path, f"file of {size} bytes is shorter than a footer", 0)
        file.seek(size - table_format.FOOTER_SIZE)
        footer = table_format.decode_footer(file.read(table_format.FOOTER_SIZE), path, size)
        props = table_format.decode_properties(
            _read_sealed(file, path, footer.properties, "properties"), path,
            footer.properties.offset)
        index_keys, raw_handles = block.decode(bytes(_read_sealed(file, path, footer.index,
                                                                  "index")),
                                               path, footer.index.offset)
        ends = _contiguous_ends(raw_handles, path, footer.index.offset)
        if (ends[-1] != footer.bloom.offset or len(ends) - 1 != props.data_block_count
                or index_keys[-1] != props.max_key):
            raise CorruptionError(path, "index disagrees with properties or block layout",
                                  footer.index.offset)
        bloom_filter = bloom.decode(bytes(_read_sealed(file, path, footer.bloom, "bloom")),
                                    path, footer.bloom.offset)
        return cls(path, file, size, props, index_keys, ends, bloom_filter, cache)

    def may_contain(self, key: bytes) -> bool:
        """False if the key range or bloom filter rules key out (no I/O)."""
        return self.min_key <= key <= self.max_key and self._bloom.may_contain(key)

    def get(self, key: bytes) -> bytes | Tombstone | None:
        """The value of key, TOMBSTONE if this table records its deletion, None if absent."""
        h1, h2 = bloom.key_hash(key)
        return self.lookup(key, h1, h2)

    def lookup(self, key: bytes, h1: int, h2: int) -> bytes | Tombstone | None:
        """get() for a caller that hashed key once for all tables: (h1, h2) = key_hash(key)."""
        if not (self.min_key <= key <= self.max_key and self._may_contain(h1, h2)):
            return None
        index = bisect_left(self._index_keys, key)
        cache = self._cache
        parsed: block.SearchBlock | None
        if cache is None:
            parsed = self._parse(index)
        else:
            cache_key = self._cache_base + index
            parsed = cache.get(cache_key)
            if parsed is None:
                parsed = self._parse(index)
                cache.put(cache_key, parsed, block_cache.charge(parsed))
        value = parsed.find(key)
        if value is block.ABSENT:
            return None
        return TOMBSTONE if value is None else value

    def scan(self, start: bytes = b"", end: bytes | None = None,
             skip: Callable[[CorruptionError], None] | None = None
             ) -> Iterator[tuple[bytes, bytes | None]]:
        """Entries with start <= key < end (end None: no bound), ascending; None = tombstone.

        A damaged data block raises CorruptionError, or, with skip, is passed to skip(error)
        and left out (the scan goes on with the next block).
        """
        for keys, values in self.scan_batches(start, end, skip):
            yield from zip(keys, values, strict=True)

    def scan_batches(self, start: bytes = b"", end: bytes | None = None,
                     skip: Callable[[CorruptionError], None] | None = None
                     ) -> Iterator[tuple[list[bytes], list[bytes | None]]]:
        """scan() as (keys, values) lists, one per data block (whole blocks unsliced)."""
        index = bisect_left(self._index_keys, start)
        first = True
        while index < self.block_count:
            try:
                keys, values = self._block(index, fill=False)
            except CorruptionError as exc:
                if skip is None:
                    raise
                skip(exc)
                if end is not None and self._index_keys[index] >= end:
                    return
                index += 1
                first = False
                continue
            pos = bisect_left(keys, start) if first else 0
            first = False
            stop = len(keys) if end is None else bisect_left(keys, end, pos)
            if pos == 0 and stop == len(keys):
                yield keys, values
            elif pos < stop:
                yield keys[pos:stop], values[pos:stop]
            if stop < len(keys):
                return
            index += 1

    def handle(self, index: int) -> BlockHandle:
        """Where data block ``index`` lies in the file (its size without the trailer)."""
        offset = self._ends[index]
        return BlockHandle(offset, self._ends[index + 1] - offset - table_format.BLOCK_TRAILER_SIZE)

    def _parse(self, index: int) -> block.SearchBlock:
        """Read data block index, check its CRC (invariant 1), and wrap it for find()."""
        handle = self.handle(index)
        return block.parse(self._read_checked(handle), self.path, handle.offset, handle.size)

    def _read_checked(self, handle: BlockHandle) -> bytes:
        """Data block + CRC trailer as read with one pread, CRC checked (invariant 1)."""
        size = handle.size + table_format.BLOCK_TRAILER_SIZE
        raw = self._file.pread(size, handle.offset)
        if len(raw) != size:
            raise CorruptionError(self.path, f"data block truncated: {len(raw)} of {size} bytes",
                                  handle.offset)
        table_format.check_sealed(raw, self.path, handle.offset, "data")
        return raw

    def _block(self, index: int, *, fill: bool) -> DecodedBlock:
        """Every entry of data block index, checked; scans never fill the cache (inv. 4)."""
        assert not fill, "get() fills the cache with parsed blocks, not decoded ones"
        if self._cache is not None:
            cached = self._cache.peek(self._cache_base + index)
            if cached is not None:
                return cached.decode()
        handle = self.handle(index)
        raw = self._read_checked(handle)
        return block.decode(raw, self.path, handle.offset, handle.size)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _contiguous_ends(raw: list[bytes | None], path: str, at: int) -> array[int]:
    """The index values (handles), checked to lie back to back from offset 0, as the array of
    the blocks' start offsets and the end of the last one (invariant 3). One C-level unpack
    of them all: a table holds a handle per ~4 KiB, ~10k for a flushed memtable."""
    if not raw or None in raw:
        raise CorruptionError(path, "index values are not block handles", at)
    values = cast(list[bytes], raw)
    if set(map(len, values)) != {table_format.HANDLE.size}:
        raise CorruptionError(path, "index values are not block handles", at)
    offsets, sizes = zip(*table_format.HANDLE.iter_unpack(b"".join(values)), strict=True)
    ends = list(accumulate(map(add, sizes, repeat(table_format.BLOCK_TRAILER_SIZE)),
                           initial=0))
    if list(offsets) != ends[:-1]:
        bad = next(i for i, (o, e) in enumerate(zip(offsets, ends, strict=False)) if o != e)
        raise CorruptionError(path, f"index handle {bad} at offset {offsets[bad]} is not "
                              f"contiguous", at)
    return array("q", ends)


def _read_sealed(file: ReadableFile, path: str, handle: BlockHandle, name: str) -> memoryview:
    size = handle.size + table_format.BLOCK_TRAILER_SIZE
    file.seek(handle.offset)
    raw = file.read(size)
    if len(raw) != size:
        raise CorruptionError(path, f"{name} block truncated: {len(raw)} of {size} bytes",
                              handle.offset)
    return table_format.unseal(raw, path, handle.offset, name)
