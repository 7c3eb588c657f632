"""Runs the work a flush or a compaction does: sorted entries in, one durable SSTable out.

The policy (which tables to merge) is compaction_picker.py; installing the result (manifest
edit, new View, obsolete files) is db.py. This module only writes.

Invariants:
1. write_table() returns only after the table is durable under its final name (table_builder
   invariant 2), and writes no table at all for an empty input; on any failure, or when
   should_stop() turns true, the temp file is removed and nothing else is left behind.
2. compaction_entries() yields the merge of the inputs (newest first) where, per key, the
   newest entry wins; then:
   - a tombstone is dropped only if the compaction is bottommost (no older table can hold
     the key: compaction_picker invariant 3); otherwise it is kept;
   - a value the filter rejects is dropped if bottommost, and otherwise replaced by a
     tombstone, so that an older version in an older table cannot come back (what RocksDB
     does for kRemove).
3. The filter runs on the compaction thread, or a copy of it in the compaction worker
   process (table_worker.PortableFilter, when it offers one): it must be thread-safe and
   must not call into the engine.
4. I/O bound: when write_table() is given a throttle (the engine's compaction RateLimiter),
   every write of the table file is paid for first, so a compaction writes at most
   compaction_throughput_bytes_per_s (plus one burst). Flushes are never throttled: they
   free memtable memory, and slowing them would only turn into write stalls.
5. write_table() takes its entries in batches (TableBuilder.add_many: C-level passes per
   batch, not Python code per entry) and calls pause(entries written so far) between
   batches: the flush thread uses it to pace itself and give the GIL back to the loop
   thread (db.py invariant 9).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice

from engine.block_cache import BlockCache
from engine.errors import StorageError
from engine.fs import FileSystem, crash_point
from engine.merge_iterator import Entry, merge
from engine.options import EngineOptions
from engine.table_builder import TableBuilder, TableInfo
from engine.table_format import table_name
from engine.table_reader import TableReader
from engine.version_edit import TableMeta

CompactionFilter = Callable[[bytes, bytes], bool]
Batch = tuple[Sequence[bytes], Sequence[bytes | None]]  # keys, values (None: tombstone)
# Entries per batch: write_table() looks at should_stop() and calls pause() between batches,
# so this bounds how long a table write holds the GIL in one go (~0.5 ms at ~1 us an entry).
BATCH_ENTRIES = 512


class Stopped(StorageError):
    """The engine is closing: the table being written was abandoned."""


def write_table(fs: FileSystem, directory: str, number: int, recency: int,
                batches: Iterable[Batch], options: EngineOptions, cache: BlockCache | None,
                should_stop: Callable[[], bool], throttle: Callable[[int], None] | None = None,
                pause: Callable[[int], None] | None = None
                ) -> tuple[TableMeta, TableReader, TableInfo] | None:
    """Write the entries of batches (keys strictly ascending across them) as table `number`;
    None if there are none. throttle(nbytes) is called before each file write (invariant
    4); pause(entries written so far), if given, after each batch (invariant 5).

    Raises StorageError (nothing left behind) on I/O failure, CorruptionError if the table
    does not read back, Stopped if should_stop() turned true.
    """
    builder = TableBuilder(fs, directory, table_name(number),
                           block_size_bytes=options.block_size_bytes,
                           bloom_bits_per_key=options.bloom_bits_per_key,
                           before_write=throttle)
    try:
        count = 0
        for keys, values in batches:
            builder.add_many(keys, values)
            if count < 16 <= count + len(keys):
                crash_point("table-half-written")
            count += len(keys)
            if should_stop():
                raise Stopped(f"{builder.path}: abandoned, engine closing")
            if pause is not None:
                pause(count)
        if count == 0:
            builder.abandon()
            return None
        info = builder.finish()
    except BaseException:
        builder.abandon()
        raise
    crash_point("table-written")
    try:
        reader = TableReader.open(fs, info.path, cache)
    except OSError as exc:
        raise StorageError(f"cannot open table {info.path}: {exc}") from exc
    props = info.properties
    meta = TableMeta(number, recency, info.file_size, props.entry_count, props.min_key,
                     props.max_key)
    return meta, reader, info


def batched(entries: Iterable[Entry], size: int = BATCH_ENTRIES) -> Iterator[Batch]:
    """entries as (keys, values) batches of up to size entries, for write_table()."""
    iterator = iter(entries)
    while chunk := list(islice(iterator, size)):
        keys, values = zip(*chunk, strict=True)
        yield keys, values


def compaction_entries(inputs: Sequence[Iterable[Entry]], bottommost: bool,
                       keep: CompactionFilter | None) -> Iterator[Entry]:
    """The entries a compaction writes (invariant 2); inputs newest first."""
    for key, value in merge(inputs, keep_tombstones=True):
        if value is None:
            if not bottommost:
                yield key, None
        elif keep is None or keep(key, value):
            yield key, value
        elif not bottommost:
            yield key, None
