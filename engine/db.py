"""The storage engine of one node: commit log, memtables, SSTables, flush and compaction.

Theory of operation. Writes go to the commit log's pending buffer and the active memtable
(no syscall). commit() hands the buffer to the OS (group commit) and, when the memtable has
passed memtable_size_bytes, freezes it: the log rotates to a new segment n, the entries move
to a frozen memtable that remembers n, and the flush thread writes it to an SSTable. A flush
is installed by one manifest edit (the table, and log_number = n), after which segments
below n are deleted. Reads consult the active memtable, then an immutable View (frozen
memtables and tables, newest first: table_set.py). A compaction thread merges similar-sized,
age-contiguous tables (compaction_picker.py), passing every value through the compaction
filter of the layer above; the tables it replaces are deleted once no scan uses them.

Invariants:
1. Write path: a write's key and value are appended to the commit log's pending list before
   the memtable changes, and both happen or neither (size checks come first); commit()
   encodes the list into log records.
2. Nothing is acknowledged durable until commit() returns: the server calls commit() once per
   event-loop iteration before it sends replies (group commit), so kill -9 after a reply never
   loses that write. Reads may see writes that are not committed yet.
3. After open(), the tables are those the manifest names, and the memtable equals the replay
   of the longest undamaged prefix of the log segments numbered >= the manifest's log_number
   (recovery.py); damage is reported, never served.
4. put() makes no syscall and does no work beyond the log append and the memtable insert;
   get() is one C-level dict lookup (memtable invariant 6) while no frozen memtable or table
   exists, and the size check that freezes the memtable runs in commit(), not in put().
5. A log segment is deleted only after the manifest edit that covers it is fsynced; a table
   file only after the manifest no longer names it and no scan reads it (table_set inv. 2).
6. Threads: put/get/delete/write_batch/scan/commit/close run on one thread (the loop
   thread); sync() may run on another (commit_log.py, inv. 4); flushes and compactions run
   on their own threads. Those touch shared state only by replacing the View or appending
   to the obsolete list, both under _view_lock, and by manifest edits under _manifest_lock
   (which also covers the View swap that follows, so the two always agree).
7. Memory: at most 1 + frozen_memtables_max memtables exist; past that, commit() blocks until
   a flush completes, or raises StorageError while flushes are failing (disk full), so the
   server refuses writes instead of growing.
8. The freezing commit() does no fsync on the loop thread: CommitLog.rotate() parks the old
   segment unsynced (commit_log.py invariant 3) and wakes the flush thread, which fsyncs it
   (sync_closed) before anything else and, at the latest, before it writes the table that
   covers it; the everysec timer's sync() fsyncs parked segments before the active one.
9. GIL share: a background flush writes its table in batches (compactor.BATCH_ENTRIES, a
   few C-level passes each, TableBuilder.add_many) and, between batches, sleeps
   _FLUSH_PAUSE_S while it is ahead of its schedule: the share of its entries written is at
   least the active memtable's fill over _FLUSH_DONE_AT_FILL. Behind schedule, or with
   frozen_memtables_max memtables frozen (a writer is about to wait for it), it runs flat
   out. Its work is thus spread over the time the next memtable takes to fill (the loop
   thread loses the least GIL time in any one stretch), and it is done about when that
   memtable freezes, well before writers would stall on it (at the freeze after that).
10. With table_workers on (and the real OSFileSystem), table files are written by the
   worker processes of table_worker.py: a background flush of a frozen memtable of at least
   WORKER_FLUSH_MIN_BYTES (the flush thread streams the memtable there in batches: in the
   dict's order at once, the worker sorting, or, when the worker could fall behind, in key
   order, paced as in invariant 9), and a compaction whose inputs all
   opened and whose filter is absent or portable (the worker reads the inputs itself). The
   engine opens the table and installs it as it would its own. If the attempt fails (the
   worker died or reported an error, the table does not open), it is reported, its files
   are removed, and the work runs in-process under a new table number. close() makes a
   worker abandon its table (Stopped), as it does the engine's own threads.

11. A flushed memtable is freed on the loop thread a slice per commit() (its chores): its
   values in one (~10 ms for 64 MiB), then _FREE_SLICE_ENTRIES keys at a time, once nothing
   else references it (a scan's View or iterator keeps it whole until done): dropped at
   once, its ~600k objects (64 MiB) took ~100 ms to free under the GIL, the longest stall a
   writer saw.
12. With table workers on, the flush thread starts the flush worker once the first memtable
   is half full, so the first flush does not wait for the worker's interpreter to start
   (~0.4 s: with small memtables, writers stalled on it); an engine that never fills half
   a memtable starts none (every server of the test suite would pay an interpreter).

Cost, measured with timeit-style loops (best of 5, 100k random 13-byte keys, 100-byte
values, CPython 3.11 on a busy 2-vCPU VM, so +-20%): see Engine.__doc__ and the numbers in
docs/formats/sstable.md ("Integration").
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import NoReturn, cast

from engine import filenames, log_format
from engine.block_cache import BlockCache
from engine.bloom import key_hash as _key_hash
from engine.commit_log import CommitLog
from engine.compaction_picker import CompactionTask, StcsOptions, pick
from engine.compactor import (
    BATCH_ENTRIES,
    CompactionFilter,
    Stopped,
    batched,
    compaction_entries,
    write_table,
)
from engine.errors import CorruptionError, StorageError
from engine.fs import FileLock, FileSystem, OSFileSystem, crash_point, join
from engine.manifest import Manifest
from engine.memtable import Memtable
from engine.merge_iterator import Entry, merge
from engine.options import EngineOptions, FsyncPolicy
from engine.rate_limiter import RateLimiter
from engine.recovery import recover
from engine.table_format import TOMBSTONE, table_name
from engine.table_reader import TableReader
from engine.table_set import BrokenTable, LiveTable, Reader, View
from engine.table_worker import (
    COMPACTIONS,
    FLUSHES,
    Built,
    CompactionRequest,
    FlushRequest,
    PortableFilter,
)
from engine.version_edit import TableMeta, VersionEdit

_logger = logging.getLogger("engine")
_MISSING: object = object()
_NOT_BUILT: object = object()  # a worker gave up: build the table in-process
_NOT_PORTABLE: object = object()  # the compaction filter cannot run in a worker
_DONE: object = object()
# Keys of a flushed memtable freed per commit (invariant 11): ~1 ms.
_FREE_SLICE_ENTRIES = 16384
# A frozen memtable this large or larger is built by the flush worker when table_workers is
# on (invariant 10); a smaller one costs the loop thread little (~1 us of GIL an entry, so
# ~10 ms at 1 MiB) against a round trip to the worker and the reopening of its table.
WORKER_FLUSH_MIN_BYTES = 1 << 20
# Entries per batch sent to the flush worker: ~2.5 ms of GIL to walk and marshal, and few
# enough messages that their overhead does not count.
_WORKER_BATCH_ENTRIES = 4096
# After a failed flush or compaction, retry after this long (or when commit() needs room).
_RETRY_AFTER_S = 1.0
_STALL_WAIT_S = 0.05  # back-pressure: re-check this often while waiting for a flush
# A background flush sleeps this long after each batch of BATCH_ENTRIES (~0.5 ms of work)
# while no writer waits for it. A sleep, not sleep(0): releasing the GIL for no time lets the
# same thread take it straight back, while a real sleep hands it to the loop thread, which
# then keeps it until it blocks or its switch interval (5 ms) ends.
_FLUSH_PAUSE_S = 0.0002
# A background flush paces itself to be done when the active memtable is this full
# (invariant 9): its GIL time is then spread evenly over the puts that fill the next
# memtable, which is the smallest share it can take of any stretch of them. Measured at
# 0.75, 1.0 and 1.3 (docs/benchmarks.md, "Storage engine"): lower squeezes the flush into
# fewer puts (slower windows), higher leaves it unfinished at the next freeze, where it runs
# flat out. The former policy (sleep after every batch while no writer waits) fell behind a
# fast writer and then ran flat out next to the second memtable's puts.
_FLUSH_DONE_AT_FILL = 1.0


class Engine:
    """Open with Engine.open(); see the module docstring for the contract.

    get(key) -> bytes | None: the value of key, or None if it is absent or deleted. It is an
    instance attribute bound straight to the active memtable dict's __getitem__ (memtable
    invariant 6), the same object for the engine's lifetime, so callers may bind it once.
    Measured (100k random keys): ~45-50 ns while everything is in the memtable; a key not in
    the active memtable then costs one Python call through frozen memtables and tables.
    """

    get: Callable[[bytes], bytes | None]

    def __init__(self, fs: FileSystem, directory: str, log: CommitLog, memtable: Memtable,
                 manifest: Manifest, tables: list[LiveTable], cache: BlockCache,
                 options: EngineOptions, lock: FileLock, recovery_stats: dict[str, int],
                 reporter: Callable[[str], None],
                 compaction_filter: CompactionFilter | None) -> None:
        """Private: use Engine.open()."""
        self._fs = fs
        self._dir = directory
        self._log = log
        self._memtable = memtable
        self._manifest = manifest
        self._cache = cache
        self._options = options
        self._lock: FileLock | None = lock
        self._recovery_stats = recovery_stats
        self._report = reporter
        self._filter = compaction_filter
        self._stcs = StcsOptions(min_threshold=options.compaction_min_threshold,
                                 max_threshold=max(32, options.compaction_min_threshold),
                                 min_table_bytes=options.compaction_small_table_bytes)
        # Shared with the background threads (invariant 6).
        self._view = View().with_tables(tables)
        self._view_lock = threading.Lock()
        self._manifest_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time, oldest memtable first
        self._compact_lock = threading.Lock()
        self._flushed = threading.Condition()  # notified after each flush attempt
        self._flush_wanted = threading.Event()
        self._compact_wanted = threading.Event()
        self._next_table_number = manifest.version.next_table_number
        self._obsolete: list[LiveTable] = []  # no longer in the manifest; deleted at refs 0
        self._chores_due = False  # set by background threads: commit() has cleanup to do
        # Flushed memtables to free on the loop thread a slice per commit (invariant 11).
        self._flushed_memtables: list[Memtable] = []
        self._dismantling: Iterator[None] | None = None
        self._stopping = False
        self._stop_event = threading.Event()  # set by close(): wakes a throttled compaction
        self._limiter = RateLimiter(options.compaction_throughput_bytes_per_s,
                                    sleep=self._stop_event.wait)
        self._flush_error: StorageError | None = None
        self._last_error_reported = ""
        self._counters = dict.fromkeys(
            ("flushes", "flushes_by_worker", "compactions_by_worker", "table_worker_failures",
             "flush_bytes_written", "compactions", "compaction_bytes_read",
             "compaction_bytes_written", "write_stalls", "corruption_errors",
             "background_errors"), 0)
        # Hot-path bindings (invariant 4). All of these objects live as long as the engine.
        self._pending = log.pending
        # The live commit-log buffer, the same object for the engine's lifetime: truthy
        # while writes await commit(). The server's group commit polls it per batch, where
        # even a property call would show up in the profile.
        self.pending_log: list[bytes | None] = log.pending
        self._mem_put = memtable.put
        self.get = memtable.lookup
        if tables:
            memtable.chain(self._get_older)
        self._memtable_size_bytes = options.memtable_size_bytes
        # commit() calls _maintain() from this fill on: below the memtable size (half of it)
        # while the flush worker is to be started ahead of the first flush (invariant 12).
        self._maintain_at = options.memtable_size_bytes
        self._warm_wanted = False  # the flush thread is to start the flush worker
        # Negative once closed: the size check in put() then doubles as the "closed" check.
        self._value_bytes_max = options.value_bytes_max
        self._key_bytes_max = options.key_bytes_max
        # Keys and values up to this size share log records (put()'s one size check: larger
        # ones take _put_spanned, which also refuses what is over the limits or closed).
        self._free_value_max = min(log_format.GROUP_FREE_BYTES_MAX, options.value_bytes_max)
        self._free_key_max = min(log_format.GROUP_FREE_BYTES_MAX, options.key_bytes_max)
        self._threads: list[threading.Thread] = []
        if options.background:
            for name, loop in (("flush", self._flush_loop), ("compact", self._compact_loop)):
                thread = threading.Thread(target=loop, name=f"respkv-engine-{name}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)
            self._compact_wanted.set()
            # A rotation parks the old segment unsynced; the flush thread fsyncs it (inv. 8).
            log.on_rotate = self._flush_wanted.set
            if self._workers_on() and FLUSHES.pid() is None:
                self._maintain_at = options.memtable_size_bytes // 2

    @classmethod
    def open(cls, directory: str, options: EngineOptions | None = None, *,
             fs: FileSystem | None = None,
             reporter: Callable[[str], None] | None = None,
             compaction_filter: CompactionFilter | None = None) -> Engine:
        """Open or create the store in directory (created if missing): read the manifest,
        open its tables, delete files it does not name, replay the uncovered log.

        A torn or corrupt log tail is cut back to the last good record and reported through
        reporter (default: the "engine" logger) with file, offset and bytes dropped; damage in
        an earlier segment is reported too, and nothing after it is replayed. A table whose
        footer, index or bloom filter is damaged is reported and its key range then fails
        reads with CorruptionError (table_set invariant 3). Raises StorageError if the
        directory is locked by another engine, on I/O errors, if the manifest is damaged
        before its tail, or if a file has a format version this build does not read.

        compaction_filter(key, value) -> bool runs on the compaction thread for every value a
        compaction rewrites; False drops it (compactor.py invariants 2 and 3).
        """
        options = options or EngineOptions()
        fs = fs or OSFileSystem()
        report = reporter or _logger.warning
        try:
            fs.makedirs(directory)
        except OSError as exc:
            raise StorageError(f"cannot create store directory {directory}: {exc}") from exc
        try:
            lock = fs.lock(join(directory, filenames.LOCK_NAME))
        except OSError as exc:
            raise StorageError(f"cannot lock store directory {directory} (is another engine "
                               f"using it?): {exc}") from exc
        tables: list[LiveTable] = []
        manifest: Manifest | None = None
        try:
            manifest, _ = Manifest.open(fs, directory, report)
            version = manifest.version
            cache = BlockCache(options.block_cache_bytes)
            for meta in version.tables:
                tables.append(_open_table(fs, directory, meta, cache, report))
            _remove_orphans(fs, directory, {t.number for t in version.tables}, report)
            memtable = Memtable(keep_tombstones=bool(tables))
            recovered = recover(fs, directory, memtable.apply, report, version.log_number)
            log = CommitLog.open(fs, directory, options, report, recovered)
        except BaseException as exc:
            for table in tables:
                table.reader.close()
            if manifest is not None:
                manifest.close()
            lock.release()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot open store in {directory}: {exc}") from exc
            raise
        recovery_stats = {
            "records_replayed": recovered.records_replayed,
            "bytes_truncated_on_recovery": recovered.bytes_truncated,
            "segments_quarantined": recovered.segments_quarantined,
            "tables_unreadable_on_open": sum(isinstance(t.reader, BrokenTable)
                                             for t in tables),
        }
        return cls(fs, directory, log, memtable, manifest, tables, cache, options, lock,
                   recovery_stats, report, compaction_filter)

    # Writes ----------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes) -> None:
        """Set key to value: buffered log append + memtable insert; no syscall.

        Raises ValueError (nothing written) if key or value is over its limit in the options,
        StorageError if the engine is closed.
        """
        if len(value) > self._free_value_max or len(key) > self._free_key_max:
            self._put_spanned(key, value)
            return
        pending = self._pending
        pending.append(key)
        pending.append(value)
        self._mem_put(key, value)

    def _put_spanned(self, key: bytes, value: bytes) -> None:
        """put() of a key or value too large to share a log record with others."""
        if len(value) > self._value_bytes_max or len(key) > self._key_bytes_max:
            self._reject(key, value)
        self._log.append_span(((key, value),))
        self._mem_put(key, value)

    def delete(self, key: bytes) -> None:
        """Record the deletion of key (present or not): buffered log append + memtable."""
        if len(key) > self._free_key_max:
            if len(key) > self._key_bytes_max:
                self._reject(key, b"")
            self._log.append_span(((key, None),))
        else:
            pending = self._pending
            pending.append(key)
            pending.append(None)
        self._memtable.delete(key)

    def write_batch(self, ops: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Apply ops in order as one log record: after a crash, all of them or none.

        A value of None deletes. Raises ValueError (nothing written) if any key or value is
        over its limit or the batch does not fit one record.
        """
        if not ops:
            return
        for key, value in ops:
            if len(key) > self._key_bytes_max or (
                    value is not None and len(value) > self._value_bytes_max):
                self._reject(key, value or b"")
        if log_format.group_payload_bound(ops) > log_format.RECORD_PAYLOAD_BYTES_MAX:
            raise ValueError("batch larger than one commit-log record (4 GiB)")
        self._log.append_span(ops)
        self._memtable.apply(ops)

    def set_fsync(self, policy: FsyncPolicy) -> None:
        """Change the fsync policy live (CONFIG SET appendfsync): the next commit() follows it.
        Moving to "always" from a laxer policy first fsyncs what is already written."""
        if policy not in ("always", "everysec", "no"):
            raise ValueError(f"fsync must be 'always', 'everysec' or 'no', not {policy!r}")
        if policy == "always" and not self._log.fsync_always:
            self.commit()
            self.sync()
        self._log.fsync_always = policy == "always"
        self._options = dataclasses.replace(self._options, fsync=policy)

    def tune(self, *, memtable_size_bytes: int | None = None,
             block_cache_bytes: int | None = None,
             compaction_throughput_bytes_per_s: int | None = None,
             table_workers: bool | None = None) -> None:
        """Change size and rate limits live (CONFIG SET); loop thread. The memtable limit applies
        from the next commit(), the cache budget at once (evicting down to it), the compaction
        rate from the next table write, table_workers from the next flush. Raises ValueError
        (nothing changed) if out of range."""
        old = self._options
        options = dataclasses.replace(  # checks the ranges
            old,
            memtable_size_bytes=(old.memtable_size_bytes if memtable_size_bytes is None
                                 else memtable_size_bytes),
            block_cache_bytes=old.block_cache_bytes if block_cache_bytes is None
            else block_cache_bytes,
            compaction_throughput_bytes_per_s=(
                old.compaction_throughput_bytes_per_s if compaction_throughput_bytes_per_s
                is None else compaction_throughput_bytes_per_s),
            table_workers=old.table_workers if table_workers is None else table_workers)
        self._options = options
        warming = self._maintain_at < self._memtable_size_bytes  # invariant 12
        self._memtable_size_bytes = options.memtable_size_bytes
        self._maintain_at = options.memtable_size_bytes // (2 if warming else 1)
        self._cache.resize(options.block_cache_bytes)
        self._limiter.rate_bytes_per_s = options.compaction_throughput_bytes_per_s

    @property
    def has_uncommitted(self) -> bool:
        """True if records are buffered that commit() has not yet written to the OS."""
        return bool(self._pending)

    def commit(self) -> None:
        """Write all buffered records to the OS in one write (looping over short writes) and
        fsync with fsync "always"; then, if the memtable is full, freeze it for a flush
        (blocking while frozen_memtables_max memtables already wait: invariant 7).

        On failure raises StorageError: records not yet written stay buffered, the file is cut
        back to its last good record, and a later commit() retries them. A StorageError about
        failing flushes means the records are written but the memtable cannot be frozen: the
        caller should refuse writes until a commit() succeeds.
        """
        self._log.commit()
        if self._memtable.approximate_bytes >= self._maintain_at or self._chores_due:
            self._maintain()

    def sync(self) -> None:
        """fsync the current log segment. Safe to call from a worker thread while the loop
        thread calls put()/commit(). Raises StorageError if the fsync fails."""
        self._log.sync()

    # Reads -----------------------------------------------------------------------------

    def scan(self, start: bytes = b"", end: bytes | None = None, *,
             on_corruption: Callable[[CorruptionError], None] | None = None
             ) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs with start <= key < end (end None: no bound), ascending,
        merged from every memtable and table (newest wins, tombstones hide older values).

        REQUIRES: the caller consumes the iterator before mutating the engine (commit()
        included). Raises CorruptionError, naming the file, if it meets a damaged block;
        with on_corruption, a damaged block (or broken table) is instead counted, reported,
        passed to on_corruption and skipped: its entries are missing from the scan and an
        older version of one of its keys may show through. Only for callers that can live
        with that (rebuilding counters at open), never for answering a client.
        """
        view = self._view
        if not view.frozen and not view.tables:
            return self._memtable.scan(start, end)
        skip = None
        if on_corruption is not None:
            callback = on_corruption

            def skip(exc: CorruptionError) -> None:
                self._corruption(exc)
                callback(exc)

        return self._merged(view, start, end, skip)  # type: ignore[return-value]

    def __len__(self) -> int:
        """Number of live keys. O(1) while all data is in the active memtable; otherwise a
        full merged scan (O(n), reads every table): not for a hot path."""
        view = self._view
        if not view.frozen and not view.tables:
            return self._memtable.live_count
        return sum(1 for _ in self._merged(view, b"", None))

    def _get_older(self, key: bytes) -> bytes | None:
        """get() of a key the active memtable does not hold: frozen memtables, then tables."""
        view = self._view
        for frozen in view.frozen:
            value = frozen.find(key, _MISSING)
            if value is not _MISSING:
                return value  # type: ignore[no-any-return]
        h1, h2 = _key_hash(key)  # once for every table's bloom filter
        for table in view.tables:
            try:
                found = table.lookup(key, h1, h2)
            except CorruptionError as exc:
                self._corruption(exc)
                raise
            if found is not None:
                return None if found is TOMBSTONE else found
        return None

    def _merged(self, view: View, start: bytes, end: bytes | None,
                skip: Callable[[CorruptionError], None] | None = None) -> Iterator[Entry]:
        tables = view.tables
        for table in tables:
            table.refs += 1
        try:
            sources = [self._memtable.entries(start, end),
                       *(m.entries(start, end) for m in view.frozen),
                       *(t.reader.scan(start, end, skip) for t in tables)]
            yield from merge(sources)
        except CorruptionError as exc:
            self._corruption(exc)
            raise
        finally:
            for table in tables:
                table.refs -= 1
            if self._obsolete:
                self._collect_obsolete()

    # Flush and compaction ----------------------------------------------------------------

    def flush(self) -> None:
        """Freeze the memtable (if not empty) and write every frozen memtable to a table
        before returning, on the calling thread. Raises StorageError if a flush fails."""
        self._check_open()
        if len(self._memtable):
            self._freeze()
        while self._flush_one():
            pass

    def compact(self, *, full: bool = False) -> int:
        """Run compactions on the calling thread until the policy picks none; with full=True
        first merge every table into one (a bottommost compaction: tombstones and filtered
        values are dropped). Returns the number of compactions run."""
        self._check_open()
        done = 0
        if full and self._compact_one(full=True):
            done += 1
        while self._compact_one():
            done += 1
        self._collect_obsolete()
        return done

    def _maintain(self) -> None:
        """commit()'s slow path, on the loop thread: cleanup, then freeze if full."""
        if self._lock is None:
            return
        self._chores_due = False
        if self._obsolete:
            self._collect_obsolete()
        if self._flushed_memtables or self._dismantling is not None:
            self._free_flushed_slice()
        if (self._maintain_at < self._memtable_size_bytes
                and self._memtable.approximate_bytes >= self._maintain_at):
            self._maintain_at = self._memtable_size_bytes  # invariant 12: once
            self._warm_wanted = True
            self._flush_wanted.set()
        if self._memtable.approximate_bytes >= self._memtable_size_bytes:
            self._make_room()
            self._freeze()
            if not self._threads:  # background=False: flush inline
                while self._flush_one():
                    pass

    def _free_flushed_slice(self) -> None:
        """Free one slice of a flushed memtable (invariant 11); chores stay due until all are
        gone. A memtable a scan still holds (through an old View or its iterator) waits."""
        if self._dismantling is None:
            with self._view_lock:
                flushed = self._flushed_memtables
                for i in range(len(flushed)):
                    # No reference but the list's and getrefcount's argument (no local name:
                    # enumerate's reused tuple would hold one more).
                    if sys.getrefcount(flushed[i]) <= 2:
                        self._dismantling = flushed.pop(i).dismantle(_FREE_SLICE_ENTRIES)
                        break
        if self._dismantling is not None and next(self._dismantling, _DONE) is _DONE:
            self._dismantling = None
        if self._flushed_memtables or self._dismantling is not None:
            self._chores_due = True

    def _make_room(self) -> None:
        """Wait until fewer than frozen_memtables_max memtables await a flush (invariant 7)."""
        stalled = False
        while len(self._view.frozen) >= self._options.frozen_memtables_max:
            if not self._threads:
                self._flush_one()
                continue
            error = self._flush_error
            if error is not None:
                self._flush_error = None
                self._flush_wanted.set()  # retry now
                raise StorageError(f"memtable full and flushes failing: {error}")
            if not stalled:
                stalled = True
                self._counters["write_stalls"] += 1
            with self._flushed:
                self._flushed.wait(_STALL_WAIT_S)

    def _freeze(self) -> None:
        number = self._log.rotate()  # commits pending; every record so far is below number
        crash_point("memtable-frozen")
        frozen = self._memtable.freeze(number)
        with self._view_lock:
            view = self._view
            self._view = View((frozen, *view.frozen), view.tables)
        self._memtable.chain(self._get_older)
        self._flush_wanted.set()

    def _flush_one(self, *, background: bool = False) -> bool:
        """Write the oldest frozen memtable to a table and install it; False if none.
        background: on the flush thread, which pauses between batches (invariant 9)."""
        with self._flush_lock:
            frozen_all = self._view.frozen
            if not frozen_all:
                return False
            frozen = frozen_all[-1]
            # Invariant 8: the segments this flush covers are on disk before its table is.
            self._log.sync_closed(frozen.log_number)
            number = self._new_table_number()
            live: LiveTable | object | None = _NOT_BUILT
            if (background and self._workers_on()
                    and frozen.approximate_bytes >= WORKER_FLUSH_MIN_BYTES):
                live = self._build_in_worker(frozen, number)
                if live is _NOT_BUILT:
                    number = self._new_table_number()  # never reuse a worker's number
            if live is _NOT_BUILT:
                written = write_table(self._fs, self._dir, number, number,
                                      frozen.batches(BATCH_ENTRIES), self._options,
                                      self._cache, self._should_stop,
                                      pause=partial(self._flush_pause, total=len(frozen))
                                      if background else None)
                live = None if written is None else LiveTable(
                    written[0], written[2].path, written[1])
            assert live is None or isinstance(live, LiveTable)
            edit = VersionEdit(log_number=frozen.log_number, next_table_number=number + 1,
                               added=() if live is None else (live.meta,))

            def swap(view: View) -> View:
                assert view.frozen and view.frozen[-1] is frozen
                tables = view.tables if live is None else (*view.tables, live)
                return View(view.frozen[:-1]).with_tables(tables)

            self._install(edit, swap, live, flushed=frozen)
            crash_point("flush-installed")
            self._counters["flushes"] += 1
            self._counters["flush_bytes_written"] += 0 if live is None else live.meta.file_size
        try:
            self._log.drop_segments_before(frozen.log_number)
        except StorageError as exc:  # harmless: the next open deletes covered segments
            self._report(f"engine: {exc} (covered by tables; removed on next open)")
        crash_point("flush-log-dropped")
        with self._flushed:
            self._flushed.notify_all()
        self._compact_wanted.set()
        return True

    def _workers_on(self) -> bool:
        """May table workers write this engine's tables? (They write to the OS: not under a
        fault-injecting or simulated FileSystem.)"""
        return self._options.table_workers and type(self._fs) is OSFileSystem

    def _build_in_worker(self, frozen: Memtable, number: int) -> LiveTable | object | None:
        """Table `number` of frozen, built by the flush worker from batches this thread walks
        and sends (invariant 10); None if it has no entries, _NOT_BUILT if the attempt failed:
        the caller then flushes in-process. Raises Stopped if the engine is closing."""
        # Who sorts. This thread, walking the memtable in key order: ~0.75-1 us an entry of
        # its GIL time, paced (invariant 9), and the worker writes as batches come (~1.4 us
        # an entry: it keeps up with the fastest writer). Or the worker: this thread sends
        # the dict's order at once (~0.2 us an entry) and the worker sorts first (~2.2 us
        # an entry in all, slower than a put). The worker sorts unless it could fall
        # behind: another memtable already waits, or the compaction worker is busy on the
        # core the flush worker needs.
        ordered = len(self._view.frozen) > 1 or COMPACTIONS.busy()
        request = FlushRequest(self._dir, number, self._options, ordered)
        if ordered:
            batches = frozen.batches(_WORKER_BATCH_ENTRIES)
            pause: Callable[[int], None] = partial(self._flush_pause, total=len(frozen))
        else:
            batches = frozen.unordered_batches(_WORKER_BATCH_ENTRIES)
            pause = _no_pause
        return self._by_worker("flush", "flushes_by_worker", number, lambda: FLUSHES.flush(
            request, batches, pause, self._should_stop))

    def _compact_in_worker(self, task: CompactionTask, inputs: Sequence[LiveTable],
                           number: int, keep: PortableFilter | None
                           ) -> LiveTable | object | None:
        """As _build_in_worker, for a compaction: the worker reads the inputs itself."""
        request = CompactionRequest(self._dir, tuple(t.path for t in inputs), task.bottommost,
                                    number, task.output_recency, dataclasses.replace(
                                        self._options, compaction_throughput_bytes_per_s=(
                                            self._limiter.rate_bytes_per_s)), keep)

        def run() -> Built:
            built = COMPACTIONS.compact(request, self._should_stop)
            self._limiter.slept_s += built.throttled_s
            if keep is not None and built.keep is not None:
                cast(PortableFilter, self._filter).absorb(built.keep)
            return built

        return self._by_worker("compaction", "compactions_by_worker", number, run)

    def _by_worker(self, what: str, counter: str, number: int, run: Callable[[], Built]
                   ) -> LiveTable | object | None:
        """run() a worker request for table `number` and open its table (invariant 10);
        counter counts the successes."""
        try:
            built = run()
            reader = None if built.meta is None else TableReader.open(self._fs, built.path,
                                                                      self._cache)
        except Stopped:
            raise
        except Exception as exc:
            self._counters["table_worker_failures"] += 1
            self._report(f"engine: {what} worker failed ({exc!r}); running it in-process")
            for name in (table_name(number), table_name(number) + ".tmp"):
                try:
                    self._fs.remove(join(self._dir, name))
                except OSError:
                    pass  # not written, or an orphan the next open removes
            return _NOT_BUILT
        self._counters[counter] += 1
        if built.meta is None or reader is None:
            return None
        return LiveTable(built.meta, built.path, reader)

    def _compact_one(self, *, full: bool = False) -> bool:
        """Run the compaction the policy picks (with full, one of every table); False if none."""
        with self._compact_lock:
            with self._manifest_lock:  # the manifest and the View agree under this lock
                metas = self._manifest.version.tables
                by_number = {t.meta.number: t for t in self._view.tables}
            task: CompactionTask | None
            if full:
                task = CompactionTask(tuple(metas), bottommost=True) if metas else None
            else:
                task = pick(metas, self._stcs)
            if task is None:
                return False
            inputs = [by_number[m.number] for m in task.inputs]
            number = self._new_table_number()
            crash_point("compaction-started")
            live: LiveTable | object | None = _NOT_BUILT
            keep = self._portable_filter()
            if (self._workers_on() and keep is not _NOT_PORTABLE
                    and all(isinstance(t.reader, TableReader) for t in inputs)):
                live = self._compact_in_worker(task, inputs, number,
                                               cast(PortableFilter | None, keep))
                if live is _NOT_BUILT:
                    number = self._new_table_number()  # never reuse a worker's number
            if live is _NOT_BUILT:
                entries = compaction_entries([t.reader.scan() for t in inputs],
                                             task.bottommost, self._filter)
                try:
                    written = write_table(self._fs, self._dir, number, task.output_recency,
                                          batched(entries), self._options, self._cache,
                                          self._should_stop, throttle=self._limiter.acquire)
                except CorruptionError as exc:
                    self._corruption(exc)
                    raise
                live = None if written is None else LiveTable(
                    written[0], written[2].path, written[1])
            assert live is None or isinstance(live, LiveTable)
            edit = task.edit(() if live is None else (live.meta,))
            edit = dataclasses.replace(edit, next_table_number=number + 1)
            removed = set(edit.removed)

            def swap(view: View) -> View:
                kept = [t for t in view.tables if t.meta.number not in removed]
                return view.with_tables(kept if live is None else [*kept, live])

            self._install(edit, swap, live, obsolete=inputs)
            crash_point("compaction-installed")
            self._counters["compactions"] += 1
            self._counters["compaction_bytes_read"] += task.input_bytes
            self._counters["compaction_bytes_written"] += (
                0 if live is None else live.meta.file_size)
        return True

    def _portable_filter(self) -> PortableFilter | object | None:
        """What a compaction worker gets for the filter: None (no filter), a portable copy,
        or _NOT_PORTABLE (the filter cannot leave this process: compact in-process)."""
        if self._filter is None:
            return None
        if not isinstance(self._filter, PortableFilter):
            return _NOT_PORTABLE
        copy = self._filter.portable()
        return _NOT_PORTABLE if copy is None else copy

    def _install(self, edit: VersionEdit, swap: Callable[[View], View],
                 live: LiveTable | None, obsolete: Sequence[LiveTable] = (),
                 flushed: Memtable | None = None) -> None:
        """Make edit durable, then publish the View swap(view): a short critical section.
        On failure the new table (if any) is closed and removed, and nothing changes."""
        with self._manifest_lock:
            try:
                crash_point("manifest-edit")
                self._manifest.log_and_apply(edit)
            except BaseException:
                if live is not None:
                    live.reader.close()
                    try:
                        self._fs.remove(live.path)
                    except OSError:
                        pass  # an orphan: removed on the next open
                raise
            crash_point("manifest-edited")
            with self._view_lock:
                self._view = swap(self._view)
                self._obsolete.extend(obsolete)
                if flushed is not None:
                    self._flushed_memtables.append(flushed)
        if obsolete or flushed is not None:
            self._chores_due = True

    def _new_table_number(self) -> int:
        with self._manifest_lock:
            number = self._next_table_number
            self._next_table_number += 1
        return number

    def _collect_obsolete(self) -> None:
        """Close and delete obsolete tables no scan uses. Loop thread only (table_set inv. 2)."""
        with self._view_lock:
            doomed = [t for t in self._obsolete if not t.refs]
            self._obsolete = [t for t in self._obsolete if t.refs]
        for table in doomed:
            table.reader.close()
            try:
                self._fs.remove(table.path)
            except OSError as exc:
                self._report(f"engine: cannot remove obsolete table {table.path}: {exc} "
                             f"(removed on next open)")

    def _should_stop(self) -> bool:
        return self._stopping

    def _flush_pause(self, written: int, total: int) -> None:
        """Between two batches of a background flush that has written `written` of `total`
        entries: sleep briefly, so the loop thread gets the GIL, if the flush is ahead of its
        schedule and no writer is about to wait for it (invariant 9)."""
        if len(self._view.frozen) >= self._options.frozen_memtables_max:
            return
        due = self._memtable.approximate_bytes / (self._memtable_size_bytes
                                                  * _FLUSH_DONE_AT_FILL)
        if written >= total * due:
            self._stop_event.wait(_FLUSH_PAUSE_S)

    def _flush_loop(self) -> None:
        retry: float | None = None
        while True:
            self._flush_wanted.wait(retry)
            self._flush_wanted.clear()
            if self._stopping:
                return
            if self._warm_wanted:
                self._warm_wanted = False
                try:
                    FLUSHES.start()  # invariant 12
                except OSError as exc:  # the flush will try again, or run in-process
                    self._report(f"engine: cannot start the flush worker yet: {exc}")
            try:
                self._log.sync_closed()  # segments parked by rotate() (invariant 8)
                while self._flush_one(background=True):
                    if self._stopping:
                        return
                retry = None
                self._flush_error = None
            except Stopped:
                return
            except Exception as exc:
                error = exc if isinstance(exc, StorageError) else StorageError(repr(exc))
                self._flush_error = error
                self._background_failed("flush", error)
                retry = _RETRY_AFTER_S
            with self._flushed:
                self._flushed.notify_all()

    def _compact_loop(self) -> None:
        retry: float | None = None
        while True:
            self._compact_wanted.wait(retry)
            self._compact_wanted.clear()
            if self._stopping:
                return
            try:
                while self._compact_one():
                    if self._stopping:
                        return
                retry = None
            except Stopped:
                return
            except Exception as exc:
                error = exc if isinstance(exc, StorageError) else StorageError(repr(exc))
                self._background_failed("compaction", error)
                retry = _RETRY_AFTER_S * 10

    def _background_failed(self, what: str, error: StorageError) -> None:
        self._counters["background_errors"] += 1
        message = f"engine: {what} failed (will retry): {error}"
        if message != self._last_error_reported:
            self._last_error_reported = message
            self._report(message)

    def _corruption(self, exc: CorruptionError) -> None:
        self._counters["corruption_errors"] += 1
        self._report(f"engine: {exc}")

    # Lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background threads (abandoning a table being written), commit, fsync and
        close the log, close tables and manifest, release the directory lock. Idempotent.

        Raises StorageError if the final commit or fsync failed; the engine is closed anyway.
        """
        if self._lock is None:
            return
        self._value_bytes_max = self._key_bytes_max = -1
        self._free_value_max = self._free_key_max = -1
        self._stopping = True
        self._stop_event.set()
        self._flush_wanted.set()
        self._compact_wanted.set()
        for thread in self._threads:
            thread.join()
        # The memtable's dict is not GC-tracked (memtable invariant 9): the cycle through
        # its fallback, a bound method of this engine, is broken here instead.
        self._memtable.chain(_closed_lookup)
        try:
            self._log.close()
        finally:
            self._collect_obsolete()
            with self._manifest_lock:
                self._manifest.close()
            for table in self._view.tables:
                table.reader.close()
            self._lock.release()
            self._lock = None

    @property
    def options(self) -> EngineOptions:
        """The options in force (set_fsync() and tune() change them)."""
        return self._options

    @property
    def closed(self) -> bool:
        return self._lock is None

    def stats(self) -> dict[str, int]:
        """Counters for INFO. "keys" is exact while all data is in the active memtable, and
        an upper bound (entries of every memtable and table, overwrites counted twice) once
        tables exist; len(engine) is exact but O(n)."""
        if self._chores_due and self._lock is not None:
            self._maintain()
        view = self._view
        memtable = self._memtable
        log_stats = self._log.stats()
        table_bytes = sum(t.meta.file_size for t in view.tables)
        keys = memtable.live_count + sum(m.live_count for m in view.frozen)
        for table in view.tables:
            if isinstance(table.reader, TableReader):
                props = table.reader.properties
                keys += props.entry_count - props.tombstone_count
        counters = self._counters
        table_written = counters["flush_bytes_written"] + counters["compaction_bytes_written"]
        log_written = log_stats["log_bytes_written"]
        return {
            **log_stats,
            **self._recovery_stats,
            "keys": keys,
            "memtable_entries": len(memtable),
            "memtable_bytes": memtable.approximate_bytes,
            "frozen_memtables": len(view.frozen),
            "frozen_memtable_bytes": sum(m.approximate_bytes for m in view.frozen),
            "tables": len(view.tables),
            "table_bytes": table_bytes,
            "disk_bytes": table_bytes + log_stats["log_bytes"],
            "obsolete_tables": len(self._obsolete),
            # (log + table bytes written) / log bytes written, in percent: 100 = no rewrite.
            "write_amplification_percent": (
                100 * (log_written + table_written) // log_written if log_written else 100),
            **counters,
            "compaction_throughput_bytes_per_s": self._limiter.rate_bytes_per_s,
            "compaction_throttled_ms": int(self._limiter.slept_s * 1000),
            **self._cache.stats(),
        }

    def _check_open(self) -> None:
        if self._lock is None:
            raise StorageError("engine is closed")

    def _reject(self, key: bytes, value: bytes) -> NoReturn:
        if self._lock is None:
            raise StorageError("engine is closed")
        raise ValueError(f"key of {len(key)} bytes or value of {len(value)} bytes is over the "
                         f"limit ({self._options.key_bytes_max} / "
                         f"{self._options.value_bytes_max} bytes)")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _no_pause(written: int) -> None:
    pass


def _open_table(fs: FileSystem, directory: str, meta: TableMeta, cache: BlockCache,
                report: Callable[[str], None]) -> LiveTable:
    """Open a live table; a damaged one becomes a BrokenTable (table_set invariant 3)."""
    path = join(directory, table_name(meta.number))
    reader: Reader
    try:
        reader = TableReader.open(fs, path, cache)
    except (OSError, CorruptionError) as exc:
        error = exc if isinstance(exc, CorruptionError) else StorageError(
            f"cannot open table {path}: {exc}")
        report(f"engine: table {path} is unreadable, its keys "
               f"{meta.min_key!r}..{meta.max_key!r} will fail reads: {error}")
        reader = BrokenTable(path, meta, error)
    return LiveTable(meta, path, reader)


def _closed_lookup(key: bytes) -> bytes | None:
    raise StorageError("engine is closed")


def _remove_orphans(fs: FileSystem, directory: str, live: set[int],
                    report: Callable[[str], None]) -> None:
    """Delete tables the manifest does not name (a flush or compaction the crash cut short,
    or inputs of an installed compaction) and temp files: never data anyone needs."""
    removed = 0
    for name in fs.listdir(directory):
        number = filenames.parse_table_name(name)
        if (number is not None and number not in live) or filenames.is_table_temp(name):
            fs.remove(join(directory, name))
            removed += 1
    if removed:
        fs.sync_dir(directory)
