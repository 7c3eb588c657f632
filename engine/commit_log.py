"""The segmented commit log: numbered segment files, one of them active, plus the buffer of
encoded records that commit() has not yet handed to the OS.

Theory of operation. put()/delete()/write_batch() append encoded records to `pending` (no
syscall). commit() hands all of `pending` to the OS in one pwrite on the active segment and, with
fsync "always", fsyncs it; only then is `pending` cleared. When the active segment passes
segment_size_bytes, commit() starts the next segment. sync() may run on another thread (the
everysec timer); it takes `_lock`, which every change of the active writer also takes, so it
never fsyncs a closed (or reused) descriptor. A future memtable flush calls rotate(), writes its
table, then drop_segments_before(the number rotate() returned).

Invariants:
1. Records reach the file in the order they were appended to `pending`; after a successful
   commit() every appended record is in the OS (and on disk with fsync "always").
2. A failed commit() (StorageError) keeps `pending` intact and the file cut back to its last
   good record, so a later commit() writes the same records again, at the same offset.
3. A segment is fsynced before its successor is created, so after any crash only the last
   segment can have a torn tail; damage anywhere else is corruption.
4. Only the loop thread appends, commits or rotates; sync() and drop_segments_before() may be
   called from other threads (the everysec timer, the flush thread). The active writer is
   swapped or closed, and the list of closed segments changed, only under _lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from engine import filenames, log_format
from engine.errors import StorageError
from engine.fs import FileSystem, join
from engine.log_writer import LogWriter
from engine.options import EngineOptions
from engine.recovery import RecoveryResult, SegmentInfo


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
        # Encoded records not yet written. Its identity never changes: callers may bind it.
        self.pending = bytearray()
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
        if closed and closed[-1].size < options.segment_size_bytes:
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
        try:
            writer.append(pending)
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
        self.bytes_written += len(pending)
        pending.clear()
        self.commits += 1
        if writer.offset >= self._rotate_at_offset:
            try:
                self.rotate()
            except StorageError as exc:  # the commit itself succeeded; retry a bit later
                self._rotate_at_offset = writer.offset + max(1, self._segment_size_bytes // 8)
                self._reporter(f"commit log: could not start a new segment, continuing in "
                               f"{writer.path}: {exc}")

    def sync(self) -> None:
        """fsync the active segment if it has unsynced bytes. Safe from any thread."""
        with self._lock:
            writer = self._writer
            if writer is None or writer.synced_offset >= writer.offset:
                return
            writer.sync()
            self.fsyncs += 1

    def rotate(self) -> int:
        """Commit pending, then make a new segment active; returns its number.

        Every record committed before the call lies in segments numbered below the result.
        On StorageError the old segment stays active and nothing is lost.
        """
        self.commit()
        old = self._writer
        if old is None:
            raise StorageError("commit log is closed")
        with self._lock:
            old.sync()  # invariant 3
        self.fsyncs += 1
        number = self._next_segment_no
        prev = SegmentInfo(old.segment_no, old.offset)
        new = self._create_segment(self._fs, self._directory, number, prev)
        self._next_segment_no = number + 1
        self._rotate_at_offset = self._segment_size_bytes
        with self._lock:
            self._writer = new
            self._closed_segments.append(prev)
            try:
                old.close()
            except StorageError as exc:
                self._reporter(str(exc))
        return number

    def drop_segments_before(self, number: int) -> None:
        """Delete closed segments numbered below number (their records are in a table).

        Oldest first, so a crash part-way leaves a contiguous run of segments, whose first
        member recovery accepts without its predecessor. REQUIRES: number <= active_segment_no.
        Safe from any thread (invariant 4).
        """
        with self._lock:
            assert self._writer is not None, "commit log is closed"
            assert number <= self._writer.segment_no, (number, self._writer.segment_no)
            doomed = [s for s in self._closed_segments if s.number < number]
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
        with self._lock:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except StorageError as exc:
                error = error or exc
        if error is not None:
            raise StorageError(f"commit log closed with {len(self.pending)} bytes unwritten: "
                               f"{error}") from error

    def stats(self) -> dict[str, int]:
        writer = self._writer
        active_bytes = writer.offset if writer is not None else 0
        return {
            "log_bytes": sum(s.size for s in self._closed_segments) + active_bytes,
            "log_segments": len(self._closed_segments) + (writer is not None),
            "log_pending_bytes": len(self.pending),
            "log_bytes_written": self.bytes_written,
            "commits": self.commits,
            "commit_errors": self.commit_errors,
            "fsyncs": self.fsyncs,
        }

    @staticmethod
    def _create_segment(fs: FileSystem, directory: str, number: int,
                        prev: SegmentInfo) -> LogWriter:
        """Create segment number after prev; on failure remove what was made (best effort)."""
        path = join(directory, filenames.segment_name(number))
        header = log_format.SegmentHeader(number, prev.number, prev.size)
        try:
            writer = LogWriter.create(fs, path, header)
        except StorageError:
            CommitLog._remove_quietly(fs, path)
            raise
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
