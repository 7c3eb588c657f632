"""The segmented commit log: numbered segment files, one of them active, plus the writes
that commit() has not yet encoded and handed to the OS.

Theory of operation. put()/delete()/write_batch() append their keys and values to `pending`
(no syscall, no encoding: a flat list key, value, key, value, ...; a value of None deletes) and
write_batch() and oversized items also mark their slice in `spans`. commit() encodes `pending`
into GROUP records (log_format.encode_groups: each span one record, the free items in chunks),
hands them to the OS in one pwrite on the active segment and, with fsync "always", fsyncs
them; only then are `pending` and `spans` cleared. When the active segment passes
segment_size_bytes, commit() starts the next segment. sync() may run on another thread (the
everysec timer); it takes `_lock`, which every change of the active writer also takes, so it
never fsyncs a closed (or reused) descriptor. A memtable freeze calls rotate(); the flush thread
then calls sync_closed(), writes its table, and drop_segments_before(the number rotate() returned).

rotate() does not fsync the segment it retires (with fsync "no" or "everysec" that can be a
whole segment of unsynced bytes, tens of milliseconds on the loop thread): it parks the writer
in `_unsynced` and calls on_rotate (the engine wakes its flush thread), and sync_closed() fsyncs
and closes it off the loop thread. With fsync "always" every commit already fsynced it, so it
is closed at once. Nor, under "no" and "everysec", does rotate() fsync the segment it creates
or the directory (invariant 6): under a flush's or a compaction's writes each of those two
fsyncs took up to ~100 ms (the file system's journal), a stall for every writer.

Invariants:
1. Records reach the file in the order their items were appended to `pending`; after a
   successful commit() every appended item is in the OS (and on disk with fsync "always").
2. A failed commit() (StorageError) keeps `pending` and `spans` intact and the file cut back
   to its last good record, so a later commit() writes the same records again (the encoding
   is deterministic), at the same offset.
3. Every byte commit() acknowledged is in the OS, whatever segment holds it, so after a process
   crash (kill -9) only the last segment can have a torn tail. A closed segment may still
   have unsynced bytes (it waits in `_unsynced`) while its successor exists, but only while
   the fsync policy does not promise them to survive a power loss: with "always" each commit
   fsynced them, so a retired segment is already synced. Segments are fsynced in number order
   (sync() and sync_closed() serialise on _sync_lock and fsync the closed ones, oldest first,
   before the active one), so the everysec promise (at most about a second lost) still
   holds; and the flush thread fsyncs every segment below a frozen memtable's log_number
   before writing its table. After a power loss with "no" or "everysec" a closed segment can
   therefore be shorter than its successor's header says: recovery reports that as damage
   and keeps the point-in-time prefix up to it (docs/formats/commit-log.md, "Recovery").
4. Only the loop thread appends, commits or rotates; sync(), sync_closed() and
   drop_segments_before() may be called from other threads (the everysec timer, the flush
   thread). The active writer is swapped or closed, and the lists of closed segments changed,
   only under _lock; a parked writer is fsynced and closed only under _sync_lock.
5. At most _UNSYNCED_MAX parked writers: beyond that rotate() fsyncs the oldest itself, so a
   store that never flushes (fsync "no", tiny segments) does not pile up descriptors.
6. A segment that rotate() created without fsyncs (fsync "no" or "everysec") is made durable,
   header and directory entry, by the next sync() (the everysec timer, close()): it fsyncs
   every segment in number order (invariant 3), the active one last, then the directory. So
   the everysec promise holds as before (a second's records at most). Until then a power
   loss can lose the new segment, or its header: recovery then replays up to the segment
   before it (an empty or missing final segment is no damage), and the manifest may already
   name the lost one as its log_number, since every record below it is in a table; only
   records the policy had not promised to keep are lost. With "always" the new segment and
   the directory are fsynced by rotate() itself, before any commit goes into it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from engine import filenames, log_format
from engine.errors import StorageError
from engine.fs import FileSystem, crash_point, join
from engine.log_writer import LogWriter
from engine.options import EngineOptions
from engine.recovery import RecoveryResult, SegmentInfo

_UNSYNCED_MAX = 4  # invariant 5


class CommitLog:
    def __init__(self, fs: FileSystem, directory: str, options: EngineOptions,
                 reporter: Callable[[str], None], writer: LogWriter,
                 closed_segments: list[SegmentInfo], next_segment_no: int) -> None:
        self._fs = fs
        self._directory = directory
        self._reporter = reporter
        self.fsync_always = options.fsync == "always"
        self._segment_size_bytes = options.segment_size_bytes
        self._writer: LogWriter | None = writer
        self._closed_segments = closed_segments  # older segments, ascending; not open
        self._next_segment_no = next_segment_no
        # Rotate once the active segment reaches this offset. After a failed rotation it moves
        # an eighth of a segment further, so a full disk does not cost an fsync per commit.
        self._rotate_at_offset = options.segment_size_bytes
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # held around every fsync of a segment (inv. 3)
        # Retired segments not yet fsynced, ascending (invariant 3); still open.
        self._unsynced: list[LogWriter] = []
        # Segments created by rotate() without fsyncs (invariant 6); a count, so that a sync
        # racing with a rotation only clears the creations it covered.
        self._created_unsynced = 0
        # Called (loop thread) after a rotation parked a segment: someone should call
        # sync_closed() soon. The engine sets it to wake its flush thread.
        self.on_rotate: Callable[[], None] | None = None
        # Items not yet written (key, value | None, ...). Its identity never changes: callers
        # may bind it, and its truth says whether a commit is due.
        self.pending: list[bytes | None] = []
        # Slices of pending that must each be one record (log_format.encode_groups).
        self.spans: list[tuple[int, int]] = []
        self.commits = 0
        self.fsyncs = 0
        self.commit_errors = 0
        self.bytes_written = 0  # records handed to the OS: the denominator of write amp.

    @classmethod
    def open(cls, fs: FileSystem, directory: str, options: EngineOptions,
             reporter: Callable[[str], None], recovered: RecoveryResult) -> CommitLog:
        """Continue the last recovered segment if it has room, else start a new one."""
        closed = list(recovered.segments)
        next_no = recovered.next_segment_no
        if (closed and closed[-1].size < options.segment_size_bytes
                and closed[-1].version == log_format.VERSION):
            last = closed.pop()
            path = join(directory, filenames.segment_name(last.number))
            try:
                file = fs.open_write(path)
            except OSError as exc:
                raise StorageError(f"cannot open commit log segment {path}: {exc}") from exc
            writer = LogWriter(file, path, last.number, last.size)
        else:
            prev = closed[-1] if closed else SegmentInfo(0, 0)
            writer = cls._create_segment(fs, directory, next_no, prev)
            next_no += 1
        return cls(fs, directory, options, reporter, writer, closed, next_no)

    def append_span(self, ops: Sequence[log_format.Op]) -> None:
        """Append ops as one record of their own (a batch, or an oversized item).
        REQUIRES: log_format.group_payload_bound(ops) <= RECORD_PAYLOAD_BYTES_MAX."""
        pending = self.pending
        start = len(pending)
        for key, value in ops:
            pending.append(key)
            pending.append(value)
        if len(pending) > start:
            self.spans.append((start, len(pending)))

    def pending_bytes(self) -> int:
        """The bytes the next commit() will write (encodes them: for stats, not hot paths)."""
        return len(log_format.encode_groups(self.pending, self.spans)) if self.pending else 0

    @property
    def active_segment_no(self) -> int:
        assert self._writer is not None, "commit log is closed"
        return self._writer.segment_no

    def commit(self) -> None:
        """Write all of pending to the OS (and fsync with "always"). See invariants 1 and 2."""
        pending = self.pending
        if not pending:
            return
        writer = self._writer
        if writer is None:
            raise StorageError("commit log is closed")
        start = writer.offset
        records = log_format.encode_groups(pending, self.spans)
        try:
            writer.append(records)
            if self.fsync_always:
                try:
                    writer.sync()
                except StorageError:
                    writer.rollback_to(start)
                    raise
                self.fsyncs += 1
        except StorageError:
            self.commit_errors += 1
            raise
        self.bytes_written += len(records)
        pending.clear()
        self.spans.clear()
        self.commits += 1
        if writer.offset >= self._rotate_at_offset:
            try:
                self.rotate()
            except StorageError as exc:  # the commit itself succeeded; retry a bit later
                self._rotate_at_offset = writer.offset + max(1, self._segment_size_bytes // 8)
                self._reporter(f"commit log: could not start a new segment, continuing in "
                               f"{writer.path}: {exc}")

    def sync(self) -> None:
        """fsync the retired segments still unsynced, then the active segment if it has
        unsynced bytes (invariant 3: in number order), then the directory if a segment was
        created since (invariant 6). Safe from any thread."""
        with self._sync_lock:
            self._sync_all()

    def sync_closed(self, before: int | None = None) -> None:
        """fsync and close the retired segments still unsynced (only those numbered below
        before, if given), oldest first. Safe from any thread; the flush thread calls it."""
        with self._sync_lock:
            self._sync_closed(before)

    def _sync_all(self) -> None:
        self._sync_closed(None)
        with self._lock:
            created = self._created_unsynced
            writer = self._writer
            if writer is not None and writer.synced_offset < writer.offset:
                writer.sync()
                self.fsyncs += 1
        if not created:
            return
        self._sync_dir(self._fs, self._directory)
        with self._lock:
            self._created_unsynced -= created

    def _sync_closed(self, before: int | None) -> None:
        while True:
            with self._lock:
                if not self._unsynced or (before is not None
                                          and self._unsynced[0].segment_no >= before):
                    return
                writer = self._unsynced[0]
            writer.sync()  # outside _lock: the loop thread may rotate meanwhile
            self.fsyncs += 1
            crash_point("log-segment-synced")
            with self._lock:
                self._unsynced.remove(writer)
            try:
                writer.close()
            except StorageError as exc:
                self._reporter(str(exc))

    def rotate(self) -> int:
        """Commit pending, then make a new segment active; returns its number.

        Every record committed before the call lies in segments numbered below the result.
        On StorageError the old segment stays active and nothing is lost.
        """
        self.commit()
        old = self._writer
        if old is None:
            raise StorageError("commit log is closed")
        if len(self._unsynced) >= _UNSYNCED_MAX:
            self.sync_closed(self._unsynced[0].segment_no + 1)  # invariant 5
        number = self._next_segment_no
        prev = SegmentInfo(old.segment_no, old.offset)
        durable = self.fsync_always  # invariant 6
        new = self._create_segment(self._fs, self._directory, number, prev, durable=durable)
        self._next_segment_no = number + 1
        self._rotate_at_offset = self._segment_size_bytes
        synced = old.synced_offset >= old.offset  # always with fsync "always"
        with self._lock:
            self._writer = new
            self._closed_segments.append(prev)
            if not durable:
                self._created_unsynced += 1
            if not synced:
                self._unsynced.append(old)  # invariant 3: fsynced by sync_closed()
        if synced:
            try:
                old.close()
            except StorageError as exc:
                self._reporter(str(exc))
        crash_point("log-rotated")
        if not synced and self.on_rotate is not None:
            self.on_rotate()
        return number

    def drop_segments_before(self, number: int) -> None:
        """Delete closed segments numbered below number (their records are in a table).

        Oldest first, so a crash part-way leaves a contiguous run of segments, whose first
        member recovery accepts without its predecessor. REQUIRES: number <= active_segment_no.
        Safe from any thread (invariant 4).
        """
        with self._sync_lock:
            with self._lock:
                assert self._writer is not None, "commit log is closed"
                assert number <= self._writer.segment_no, (number, self._writer.segment_no)
                doomed = [s for s in self._closed_segments if s.number < number]
                unneeded = [w for w in self._unsynced if w.segment_no < number]
                for writer in unneeded:  # covered by a table: no need to fsync them
                    self._unsynced.remove(writer)
            for writer in unneeded:
                try:
                    writer.close()
                except StorageError as exc:
                    self._reporter(str(exc))
        if not doomed:
            return
        for segment in doomed:
            path = join(self._directory, filenames.segment_name(segment.number))
            try:
                self._fs.remove(path)
            except OSError as exc:
                raise StorageError(f"cannot remove commit log segment {path}: {exc}") from exc
            with self._lock:
                self._closed_segments.remove(segment)
        self._sync_dir(self._fs, self._directory)

    def close(self) -> None:
        """Commit, fsync and close. Idempotent. Raises StorageError if the last commit or fsync
        failed (the files are closed regardless; unwritten records are then lost)."""
        if self._writer is None:
            return
        error: StorageError | None = None
        try:
            self.commit()
            self.sync()
        except StorageError as exc:
            error = exc
        with self._sync_lock, self._lock:
            writer, self._writer = self._writer, None
            parked, self._unsynced = self._unsynced, []
            for each in (*parked, writer):
                try:
                    each.close()
                except StorageError as exc:
                    error = error or exc
        if error is not None:
            raise StorageError(f"commit log closed with {len(self.pending) // 2} writes "
                               f"unwritten: {error}") from error

    def stats(self) -> dict[str, int]:
        writer = self._writer
        active_bytes = writer.offset if writer is not None else 0
        return {
            "log_bytes": sum(s.size for s in self._closed_segments) + active_bytes,
            "log_segments": len(self._closed_segments) + (writer is not None),
            "log_pending_bytes": self.pending_bytes(),
            "log_bytes_written": self.bytes_written,
            "commits": self.commits,
            "commit_errors": self.commit_errors,
            "fsyncs": self.fsyncs,
        }

    @staticmethod
    def _create_segment(fs: FileSystem, directory: str, number: int,
                        prev: SegmentInfo, *, durable: bool = True) -> LogWriter:
        """Create segment number after prev, its header and directory entry fsynced if
        durable (invariant 6); on failure remove what was made (best effort)."""
        path = join(directory, filenames.segment_name(number))
        header = log_format.SegmentHeader(number, prev.number, prev.size)
        try:
            writer = LogWriter.create(fs, path, header, durable=durable)
        except StorageError:
            CommitLog._remove_quietly(fs, path)
            raise
        if not durable:
            return writer
        try:
            CommitLog._sync_dir(fs, directory)
        except StorageError:
            writer.close()
            CommitLog._remove_quietly(fs, path)
            raise
        return writer

    @staticmethod
    def _remove_quietly(fs: FileSystem, path: str) -> None:
        # A leftover is harmless: it holds no records, recovery sets it aside, and the next
        # rotation attempt recreates it from scratch.
        try:
            fs.remove(path)
        except OSError:
            pass

    @staticmethod
    def _sync_dir(fs: FileSystem, directory: str) -> None:
        try:
            fs.sync_dir(directory)
        except OSError as exc:
            raise StorageError(f"cannot fsync directory {directory}: {exc}") from exc
