"""Writes one immutable SSTable, streaming: memory holds one data block plus the index.

Invariants:
1. Keys are added in strictly increasing order (asserted); a table holds at least one entry.
2. The table is written under "<name>.tmp", fsynced, renamed to name, and the directory is
   fsynced: once finish() returns the table is durable under its final name, and a crash at
   any earlier moment leaves at most a "*.tmp" file, never a partial table under path.
3. A data block is cut once it reaches block_size_bytes, after an add, so each block holds at
   least one entry however large (a 512 MiB value is one block).
4. Every block is written sealed (CRC trailer, table_format invariant 1), and the index maps
   the last key of each data block to its handle, in key order. Data and index blocks both
   have a restart point at every entry (block.encode_run): no Python code per entry or per
   block to build them, and the reader decodes the index by bulk slicing at open.
5. On any failure the temp file is removed (best effort) and StorageError names the path;
   path itself is never created.
"""

from __future__ import annotations

import time
import zlib
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import add
from typing import TypeVar

from engine import block, bloom, table_format
from engine.errors import StorageError
from engine.fs import FileSystem, WritableFile, join, write_all
from engine.table_format import BlockHandle, Footer, Properties


def _release_gil() -> None:
    time.sleep(0)


_T = TypeVar("_T")

WRITE_BUFFER_BYTES = 1 << 20  # sealed blocks are gathered into ~1 MiB writes
# Every entry of a data block is a restart point (block.encode_run), so it costs its 4-byte
# restart slot on top of its encoded bytes.
_RESTART_SLOT_BYTES = 4


@dataclass(frozen=True, slots=True)
class TableInfo:
    path: str
    file_size: int
    properties: Properties


class TableBuilder:
    """REQUIRES: one thread; add() in strictly increasing key order; finish() or abandon()."""

    def __init__(self, fs: FileSystem, directory: str, name: str, *,
                 block_size_bytes: int = table_format.BLOCK_SIZE_BYTES_DEFAULT,
                 bloom_bits_per_key: int = bloom.BITS_PER_KEY_DEFAULT,
                 before_write: Callable[[int], None] | None = None) -> None:
        """before_write(nbytes), if given, is called before each write to the file with its
        size (a rate limiter: compactor.py invariant 4); it may sleep."""
        if not 64 <= block_size_bytes <= 1 << 30:
            raise ValueError(f"block_size_bytes out of range (64..1 GiB): {block_size_bytes}")
        self._fs = fs
        self._dir = directory
        self.path = join(directory, name)
        self._temp_path = self.path + table_format.TEMP_SUFFIX
        self._block_size = block_size_bytes
        self._before_write = before_write
        self._bloom = bloom.BloomFilterBuilder(bloom_bits_per_key)
        # The open data block: its encoded entries, where each starts, its size once finished
        # but for the restart count (restart slots included), and its last key.
        self._block_body = bytearray()
        self._block_starts: list[int] = []
        self._block_bytes = 0
        # The index entries: last key of each data block, and its encoded handle.
        self._index_keys: list[bytes] = []
        self._index_handles: list[bytes | None] = []
        self._pending = bytearray()  # sealed blocks not yet written
        self._offset = 0  # file offset where _pending starts
        self._entries = 0
        self._tombstones = 0
        self._blocks = 0
        self._min_key = b""
        self._last_key = b""
        self._file: WritableFile | None = None  # abandon() reads it if the open fails
        self._file = self._guard(lambda: fs.open_write(self._temp_path, truncate=True))

    def add(self, key: bytes, value: bytes | None) -> None:
        """Append key -> value (None: tombstone). REQUIRES: key > every key added before."""
        self.add_many([key], [value])

    def add_many(self, keys: Sequence[bytes], values: Sequence[bytes | None]) -> None:
        """Append keys[i] -> values[i] (None: tombstone), as add() of each in turn.

        REQUIRES: keys strictly increase, and keys[0] > every key added before. The batch is
        encoded once (block.encode_run) and the blocks are cut from it by offsets: the work
        per entry is a few C-level passes over the lists, not Python code per entry, and the
        work per block is a slice, its restart array and a CRC. A flush writes every
        memtable entry through here while the loop thread competes for the GIL (db.py
        invariant 9).
        """
        assert self._file is not None, "add() after finish() or abandon()"
        count = len(keys)
        assert count == len(values), (count, len(values))
        if not count:
            return
        if self._entries == 0:
            self._min_key = keys[0]
        else:
            assert keys[0] > self._last_key, "keys must be added in strictly increasing order"
        self._last_key = keys[-1]
        self._entries += count
        self._bloom.add_all(keys)
        body, starts, tombstones = block.encode_run(keys, values)
        self._tombstones += tombstones
        # filled[i]: bytes the batch's first i entries take in a block, restart slots included.
        filled = list(map(add, starts, range(0, _RESTART_SLOT_BYTES * count + 1,
                                             _RESTART_SLOT_BYTES)))
        # A block is cut after the first entry that brings it to the target (invariant 3):
        # entry j - 1 closes the block that starts at entry lo (after what is already open)
        # when filled[j] - filled[lo] >= need.
        target = self._block_size - 4  # the restart count
        need = target - self._block_bytes
        lo = 0
        while (j := bisect_left(filled, filled[lo] + need, lo + 1)) <= count:
            self._cut_block(body, starts, lo, j, keys[j - 1])
            lo = j
            need = target
        if lo < count:
            shift = len(self._block_body) - starts[lo]
            self._block_starts += map(add, starts[lo:count], repeat(shift))
            self._block_body += memoryview(body)[starts[lo]:]
            self._block_bytes += filled[count] - filled[lo]

    @property
    def entry_count(self) -> int:
        return self._entries

    @property
    def file_size_estimate(self) -> int:
        """Bytes written so far plus the open block: what a compaction splits outputs on."""
        return self._offset + len(self._pending) + self._block_bytes + 4

    def finish(self) -> TableInfo:
        """Write bloom, index, properties and footer; fsync; rename; fsync the directory.

        REQUIRES: at least one entry added. Raises StorageError (temp file removed) on failure.
        """
        assert self._file is not None, "finish() twice or after abandon()"
        assert self._entries > 0, "a table holds at least one entry"
        if self._block_starts:
            self._cut_block(b"", [0], 0, 0, self._last_key)
        # sleep(0) between slices releases the GIL: a loop thread that has waited for it a
        # switch interval then gets it (the bloom of a large flush is ~100 ms of numpy).
        bloom_handle = self._append(self._bloom.finish(_release_gil).encode())
        index_handle = self._append(block.encode_entries(self._index_keys, self._index_handles))
        props = Properties(self._entries, self._tombstones, self._blocks, self._min_key,
                           self._last_key)
        props_handle = self._append(table_format.encode_properties(props))
        self._pending += table_format.encode_footer(Footer(bloom_handle, index_handle,
                                                           props_handle))
        file = self._file
        size = self._offset + len(self._pending)

        def commit() -> None:
            self._flush_pending()
            file.sync()
            file.close()
            self._fs.rename(self._temp_path, self.path)
            self._fs.sync_dir(self._dir)

        self._guard(commit)
        self._file = None
        return TableInfo(self.path, size, props)

    def abandon(self) -> None:
        """Give up: close and remove the temp file. Idempotent; never raises."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()
        except OSError:
            pass
        try:
            self._fs.remove(self._temp_path)
        except OSError:
            pass

    def _cut_block(self, body: bytes, starts: list[int], lo: int, hi: int,
                   last_key: bytes) -> None:
        """Seal the open block extended by entries lo..hi-1 of a batch (body, starts as
        block.encode_run returned them) and index it under last_key, its last key."""
        open_body = self._block_body
        shift = len(open_body) - starts[lo]
        offsets = self._block_starts
        offsets += map(add, starts[lo:hi], repeat(shift))
        entries = memoryview(body)[starts[lo]:starts[hi]]
        trailer = block.restart_trailer(offsets)
        size = len(open_body) + len(entries) + len(trailer)
        if size > table_format.BLOCK_BYTES_MAX:
            self.abandon()
            raise StorageError(f"{self.path}: block of {size} bytes exceeds the format")
        crc = zlib.crc32(trailer, zlib.crc32(entries, zlib.crc32(open_body)))
        self._index_keys.append(last_key)
        self._index_handles.append(table_format.HANDLE.pack(self._offset + len(self._pending),
                                                            size))
        pending = self._pending
        pending += open_body
        pending += entries
        pending += trailer
        pending += table_format.encode_crc(crc)
        self._blocks += 1
        self._block_body = bytearray()
        self._block_starts = []
        self._block_bytes = 0
        if len(pending) >= WRITE_BUFFER_BYTES:
            self._guard(self._flush_pending)

    def _append(self, data: bytes | bytearray) -> BlockHandle:
        if len(data) > table_format.BLOCK_BYTES_MAX:
            self.abandon()
            raise StorageError(f"{self.path}: block of {len(data)} bytes exceeds the format")
        handle = BlockHandle(self._offset + len(self._pending), len(data))
        self._pending += table_format.seal(data)
        return handle

    def _flush_pending(self) -> None:
        assert self._file is not None
        if self._before_write is not None:
            self._before_write(len(self._pending))
        write_all(self._file, self._pending, self._offset)
        self._offset += len(self._pending)
        self._pending = bytearray()

    def _guard(self, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except OSError as exc:
            self.abandon()
            raise StorageError(f"cannot write table {self.path}: {exc}") from exc
