"""Writes encoded records to one commit-log segment file.

Invariants:
1. offset is the end of the last fully written append(); the file holds a valid segment
   header and whole records up to offset. Bytes past offset, if any, are the remains of a
   failed append and are a prefix of what the next append() writes at the same offset.
2. append() writes all of its data or raises StorageError; on failure it cuts the file back to
   offset (best effort: if even that fails, the next append overwrites the remains and a later
   truncate removes them), so recovery never sees half a record in the middle of a segment.
3. Every byte goes to an explicit offset (pwrite), never "the end of the file", so a retry
   lands exactly where the failed write began.
4. synced_offset <= offset: everything before synced_offset has been fsynced.
"""

from __future__ import annotations

import errno

from engine import log_format
from engine.errors import StorageError
from engine.fs import BytesLike, FileSystem, WritableFile


class LogWriter:
    def __init__(self, file: WritableFile, path: str, segment_no: int, offset: int) -> None:
        assert offset >= 0, offset
        self._file = file
        self.path = path
        self.segment_no = segment_no
        self.offset = offset
        self.synced_offset = 0
        self._tail_dirty = False  # bytes may exist past offset (invariant 1)

    @classmethod
    def create(cls, fs: FileSystem, path: str, header: log_format.SegmentHeader, *,
               durable: bool = True) -> LogWriter:
        """Create (or empty) the segment file at path, write its header and, if durable,
        fsync it (otherwise the writer's first sync() covers the header too).

        The caller fsyncs the directory. On failure raises StorageError and leaves at most an
        incomplete header behind, which recovery treats as an empty final segment.
        """
        try:
            file = fs.open_write(path, truncate=True)
        except OSError as exc:
            raise StorageError(f"cannot create commit log segment {path}: {exc}") from exc
        writer = cls(file, path, header.segment_no, 0)
        try:
            writer.append(log_format.encode_segment_header(header))
            if durable:
                writer.sync()
        except StorageError:
            writer.close()
            raise
        return writer

    def append(self, data: BytesLike) -> None:
        """Write all of data at offset and advance offset; see invariant 2 for failures."""
        total = len(data)
        start = self.offset
        if self._tail_dirty:
            self._cut_back()
        written = 0
        try:
            # The whole buffer goes to the OS in one call; only a short write (a nearly full
            # disk, a signal) takes another turn, with a copy of the rest. No memoryview: a
            # view kept alive by a traceback would pin the caller's bytearray.
            written = self._file.pwrite(data, start)
            while written < total:
                step = self._file.pwrite(data[written:], start + written)
                if step <= 0:
                    raise OSError(errno.ENOSPC, "write made no progress")
                written += step
        except OSError as exc:
            self._tail_dirty = True
            self._cut_back()
            raise StorageError(f"commit log {self.path}: writing {total} bytes at offset "
                               f"{start} failed after {written} bytes: {exc}") from exc
        self.offset = start + total

    def sync(self) -> None:
        """fsync the file. On failure raises StorageError; synced_offset does not move."""
        target = self.offset
        try:
            self._file.sync()
        except OSError as exc:
            raise StorageError(f"commit log {self.path}: fsync failed: {exc}") from exc
        self.synced_offset = max(self.synced_offset, target)

    def rollback_to(self, offset: int) -> None:
        """Forget everything written after offset (used when an fsync of it failed).

        REQUIRES: offset is a record boundary <= self.offset.
        """
        assert log_format.SEGMENT_HEADER_SIZE <= offset <= self.offset, (offset, self.offset)
        self.offset = offset
        self.synced_offset = min(self.synced_offset, offset)
        self._tail_dirty = True
        self._cut_back()

    def close(self) -> None:
        if self._tail_dirty:
            self._cut_back()
        try:
            self._file.close()
        except OSError as exc:
            raise StorageError(f"commit log {self.path}: close failed: {exc}") from exc

    def _cut_back(self) -> None:
        try:
            self._file.truncate(self.offset)
        except OSError:
            return  # still dirty; the next append overwrites the remains (invariant 1)
        self._tail_dirty = False
