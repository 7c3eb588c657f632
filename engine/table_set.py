"""What reads consult besides the active memtable: frozen memtables and live SSTables.

Theory of operation. The engine publishes one immutable View (frozen memtables newest first,
live tables newest first). Readers take `engine._view` once and use only that snapshot; the
loop thread (freeze) and the flush/compaction threads (install) replace it whole, under the
engine's view lock. So a reader never sees a flushed memtable gone before its table arrives:
both change in one assignment.

Invariants:
1. A View's frozen memtables are ordered newest first and its tables by (recency, number)
   descending: exactly the order "newest wins" needs.
2. A LiveTable's reader is closed and its file removed only when the manifest no longer names
   it (it is in the engine's obsolete list) and refs == 0. refs counts open scans; it is only
   touched on the loop thread, which is also the only thread that closes readers, so a get()
   on the loop thread can never meet a closed reader.
3. A table that failed to open (damaged footer, index or bloom filter) is kept as a
   BrokenTable: reads of keys inside its [min_key, max_key] (from the manifest) raise
   CorruptionError naming the file; every other key is served as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine.errors import CorruptionError, StorageError
from engine.memtable import Memtable
from engine.table_format import Tombstone
from engine.table_reader import TableReader
from engine.version_edit import TableMeta


class BrokenTable:
    """Stands in for a table whose metadata blocks are damaged (invariant 3)."""

    def __init__(self, path: str, meta: TableMeta, error: StorageError) -> None:
        self.path = path
        self.file_size = meta.file_size
        self.min_key = meta.min_key
        self.max_key = meta.max_key
        self.error = error

    def get(self, key: bytes) -> bytes | Tombstone | None:
        if self.min_key <= key <= self.max_key:
            raise self._corruption()
        return None

    def lookup(self, key: bytes, h1: int, h2: int) -> bytes | Tombstone | None:
        """As TableReader.lookup(): get() with the key's bloom hash."""
        return self.get(key)

    def scan(self, start: bytes = b"", end: bytes | None = None,
             skip: Callable[[CorruptionError], None] | None = None
             ) -> Iterator[tuple[bytes, bytes | None]]:
        if self.max_key >= start and (end is None or self.min_key < end):
            if skip is None:
                raise self._corruption()
            skip(self._corruption())
        return iter(())

    def close(self) -> None:
        pass

    def _corruption(self) -> CorruptionError:
        if isinstance(self.error, CorruptionError):
            return self.error
        return CorruptionError(self.path, str(self.error))


Reader = TableReader | BrokenTable


class LiveTable:
    __slots__ = ("lookup", "meta", "path", "reader", "refs")

    def __init__(self, meta: TableMeta, path: str, reader: Reader) -> None:
        self.meta = meta
        self.path = path
        self.reader = reader
        self.lookup = reader.lookup  # (key, *bloom.key_hash(key)): the engine's read path
        self.refs = 0  # open scans (invariant 2)


@dataclass(frozen=True, slots=True)
class View:
    frozen: tuple[Memtable, ...] = ()
    tables: tuple[LiveTable, ...] = ()

    def with_tables(self, tables: tuple[LiveTable, ...] | list[LiveTable]) -> View:
        ordered = sorted(tables, key=lambda t: (t.meta.recency, t.meta.number), reverse=True)
        return View(self.frozen, tuple(ordered))
