"""Reads the records of one commit-log segment, stopping at the first damaged byte.

Invariants:
1. records() yields only records whose length, CRC and structure all check out, in file order,
   and never a record that lies after a damaged one (point-in-time: a prefix, or nothing).
2. After read_header() and records() are exhausted, valid_end is the offset just past the last
   good record (0 if the header itself is bad), and damage says why reading stopped early, or
   is None if the whole file was good.
3. Damage is reported exactly once through the reporter, naming file, offset, reason and the
   number of bytes after valid_end; the reader never raises for a damaged file (only for an
   I/O error, or for an intact file of an unknown format version).
4. No length read from the file is trusted before it is checked against the file size, so a
   corrupt length never allocates more than the file holds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine import log_format
from engine.errors import CorruptionError
from engine.fs import ReadableFile

_ZERO_HEADER = bytes(log_format.RECORD_HEADER_SIZE)
_ZERO_CHECK_CHUNK_BYTES = 1 << 20


class DamageKind(enum.Enum):
    TORN = "torn"  # the file ends inside a record or header: an interrupted write
    ZEROS = "zeros"  # everything from valid_end on is zero bytes (preallocated or zeroed)
    CORRUPT = "corrupt"  # bytes that cannot have been written by us: checksum, type, structure


@dataclass(frozen=True, slots=True)
class Damage:
    kind: DamageKind
    offset: int
    reason: str


class LogReader:
    """Read one segment: read_header() first, then records() if it returned a header.

    REQUIRES: file_size is the file's size now, and the file is positioned at offset 0.
    """

    def __init__(self, file: ReadableFile, path: str, segment_no: int, file_size: int,
                 reporter: Callable[[str], None]) -> None:
        self._file = file
        self._path = path
        self._segment_no = segment_no
        self._size = file_size
        self._reporter = reporter
        self.valid_end = 0
        self.damage: Damage | None = None
        self._version = log_format.VERSION  # the header's, once read

    def read_header(self) -> log_format.SegmentHeader | None:
        """The segment's header, or None (damage reported) if it is missing or bad."""
        data = self._file.read(log_format.SEGMENT_HEADER_SIZE)
        try:
            header = log_format.check_segment_header(data, self._path, self._segment_no)
        except CorruptionError as exc:
            if not data.strip(b"\0") and self._rest_is_zero():
                kind = DamageKind.ZEROS
            elif log_format.is_header_prefix(data) and len(data) == self._size:
                kind = DamageKind.TORN
            else:
                kind = DamageKind.CORRUPT
            self._stop(kind, 0, f"bad segment header: {exc.reason}")
            return None
        self.valid_end = log_format.SEGMENT_HEADER_SIZE
        self._version = header.version
        return header

    def records(self) -> Iterator[list[log_format.Op]]:
        """Yield the ops of each good record in order; see invariant 2 for the result.

        REQUIRES: read_header() returned a header.
        """
        assert self.valid_end == log_format.SEGMENT_HEADER_SIZE and self.damage is None
        read = self._file.read
        pos = self.valid_end
        while pos < self._size:
            header = read(log_format.RECORD_HEADER_SIZE)
            if len(header) < log_format.RECORD_HEADER_SIZE:
                self._stop_at_short_header(header, pos)
                return
            crc, length, rtype = log_format.RECORD_HEADER.unpack(header)
            if header == _ZERO_HEADER:
                self._stop_at_zero_header(pos)
                return
            end = pos + log_format.RECORD_HEADER_SIZE + length
            if end > self._size:
                self._stop(DamageKind.TORN, pos, f"record length {length} runs past the end "
                           f"of the file ({self._size} bytes)")
                return
            payload = read(length)
            if len(payload) < length:
                self._stop(DamageKind.TORN, pos, "file shrank while being read")
                return
            if log_format.record_crc(header, payload) != crc:
                self._stop(DamageKind.CORRUPT, pos, f"checksum mismatch (type {rtype}, "
                           f"length {length})")
                return
            try:
                ops = log_format.decode_record(rtype, payload, self._path, pos,
                                               self._version)
            except CorruptionError as exc:
                self._stop(DamageKind.CORRUPT, pos, exc.reason)
                return
            pos = end
            self.valid_end = pos
            yield ops

    def _stop_at_short_header(self, header: bytes, pos: int) -> None:
        if header.strip(b"\0"):
            self._stop(DamageKind.TORN, pos, f"incomplete record header ({len(header)} of "
                       f"{log_format.RECORD_HEADER_SIZE} bytes)")
        else:
            self._stop(DamageKind.ZEROS, pos, "zero-filled tail")

    def _stop_at_zero_header(self, pos: int) -> None:
        if self._rest_is_zero():
            self._stop(DamageKind.ZEROS, pos, "zero-filled tail")
        else:
            self._stop(DamageKind.CORRUPT, pos, "zeroed record header followed by data")

    def _rest_is_zero(self) -> bool:
        while chunk := self._file.read(_ZERO_CHECK_CHUNK_BYTES):
            if chunk.strip(b"\0"):
                return False
        return True

    def _stop(self, kind: DamageKind, offset: int, reason: str) -> None:
        assert offset == self.valid_end, (offset, self.valid_end)
        self.damage = Damage(kind, offset, reason)
        self._reporter(f"commit log {self._path}: {reason} at offset {offset}; "
                       f"dropping {self._size - offset} bytes (file size {self._size})")
