"""Replays the commit log into a memtable when an engine opens.

Invariants:
1. Point-in-time: the records replayed are a prefix of the log (segments in number order,
   records in file order), ending at the first damaged byte. Nothing after a damaged point is
   ever replayed, in this run or in a later one. Each segment header names its predecessor
   and that predecessor's final size, so a segment that lost whole records at its end, or
   went missing, is damage too.
2. Damage is repaired so the next open replays the same prefix: segments after a damaged one
   are renamed "*.corrupt" first (and the directory fsynced), then the damaged bytes are
   copied aside to "*.tail-<offset>.corrupt" (unless they are zero fill or a half-written
   segment header), and only then is the damaged segment cut back to its last good record.
   A crash between steps is safe to redo.
3. The only bytes recovery destroys are zero fill and half-written segment headers; every other
   dropped byte stays on disk in a "*.corrupt" file for an operator, and every action is
   reported through the reporter.
4. next_segment_no is above every number found in the directory, quarantined files included,
   and at least first_segment_no, so a new segment never takes the name of an old one and is
   never mistaken for one the manifest says is covered.
5. Segments numbered below first_segment_no (the manifest's log_number) are covered by
   SSTables: they are deleted, never replayed (a crash can leave them between the manifest
   edit and their removal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine import filenames, log_format
from engine.errors import StorageError
from engine.fs import FileSystem, join, write_all
from engine.log_reader import Damage, DamageKind, LogReader

_COPY_CHUNK_BYTES = 1 << 20


@dataclass(slots=True)
class SegmentInfo:
    number: int
    size: int
    version: int = log_format.VERSION  # of its header: the log appends only to the current


@dataclass(slots=True)
class RecoveryResult:
    segments: list[SegmentInfo] = field(default_factory=list)  # survivors, in order
    next_segment_no: int = 1
    records_replayed: int = 0
    bytes_truncated: int = 0
    segments_quarantined: int = 0


def recover(fs: FileSystem, directory: str, apply: Callable[[list[log_format.Op]], None],
            reporter: Callable[[str], None], first_segment_no: int = 0) -> RecoveryResult:
    """Replay every good record of the log in directory through apply(); repair damage.

    Raises OSError on I/O failure and StorageError for a file of an unknown format version;
    damaged files are reported and repaired, never raised.
    """
    names = fs.listdir(directory)
    numbered = [n for name in names if (n := filenames.parse_numbered_name(name)) is not None]
    result = RecoveryResult(next_segment_no=max(max(numbered, default=0) + 1, first_segment_no))
    live = sorted(n for name in names if (n := filenames.parse_segment_name(name)) is not None)
    covered = [n for n in live if n < first_segment_no]
    for number in covered:  # invariant 5
        fs.remove(join(directory, filenames.segment_name(number)))
    if covered:
        fs.sync_dir(directory)
        live = live[len(covered):]
    for index, number in enumerate(live):
        path = join(directory, filenames.segment_name(number))
        size = fs.size(path)
        file = fs.open_read(path)
        try:
            reader = LogReader(file, path, number, size, reporter)
            header = reader.read_header()
            if header is not None and not _follows(header, result.segments, path, reporter):
                _quarantine_segments(fs, directory, live[index:], reporter)
                result.segments_quarantined += len(live) - index
                break
            if header is not None:
                for ops in reader.records():
                    apply(ops)
                    result.records_replayed += 1
        finally:
            file.close()
        if reader.damage is None:
            result.segments.append(SegmentInfo(number, size, _version(header)))
            continue
        _quarantine_segments(fs, directory, live[index + 1 :], reporter)
        result.segments_quarantined += len(live) - index - 1
        result.bytes_truncated += size - reader.valid_end
        if _repair(fs, directory, number, size, reader.valid_end, reader.damage, reporter):
            result.segments.append(SegmentInfo(number, reader.valid_end, _version(header)))
        break
    return result


def _version(header: log_format.SegmentHeader | None) -> int:
    # A segment kept without a readable header (repaired) is never appended to: older version.
    return header.version if header is not None else 0


def _follows(header: log_format.SegmentHeader, replayed: list[SegmentInfo], path: str,
             reporter: Callable[[str], None]) -> bool:
    """Does this segment continue the replayed ones? (The first live one always does: older
    segments may have been dropped after a flush.)"""
    if not replayed:
        return True
    prev = replayed[-1]
    if (header.prev_segment_no, header.prev_segment_bytes) == (prev.number, prev.size):
        return True
    reporter(f"commit log {path}: header says it follows segment {header.prev_segment_no} of "
             f"{header.prev_segment_bytes} bytes, but the log before it is segment {prev.number} "
             f"of {prev.size} bytes (records lost or a segment missing); replay stops before it")
    return False


def _quarantine_segments(fs: FileSystem, directory: str, numbers: list[int],
                         reporter: Callable[[str], None]) -> None:
    if not numbers:
        return
    for number in numbers:
        fs.rename(join(directory, filenames.segment_name(number)),
                  join(directory, filenames.quarantine_name(number)))
    fs.sync_dir(directory)
    reporter(f"commit log {directory}: {len(numbers)} segment(s) after a damaged one will not "
             f"be replayed; renamed to *{filenames.QUARANTINE_SUFFIX}: "
             + ", ".join(filenames.quarantine_name(n) for n in numbers))


def _repair(fs: FileSystem, directory: str, number: int, size: int, valid_end: int,
            damage: Damage, reporter: Callable[[str], None]) -> bool:
    """Cut segment number back to valid_end; True if it survives as a segment."""
    path = join(directory, filenames.segment_name(number))
    # Worth keeping: any dropped byte that is neither zero fill nor a half-written header.
    keep = size > valid_end and (damage.kind is DamageKind.CORRUPT
                                 or (damage.kind is DamageKind.TORN and valid_end > 0))
    if valid_end < log_format.SEGMENT_HEADER_SIZE:  # no valid header: no records
        if keep:
            target = join(directory, filenames.quarantine_name(number))
            fs.rename(path, target)
            reporter(f"commit log {path}: renamed to {target}")
        else:
            fs.remove(path)
        fs.sync_dir(directory)
        return False
    if keep:
        target = join(directory, filenames.quarantine_name(number, valid_end))
        _copy_range(fs, directory, path, valid_end, size, target)
        reporter(f"commit log {path}: bytes {valid_end}..{size} kept in {target}")
    file = fs.open_write(path)
    try:
        file.truncate(valid_end)
        file.sync()
    finally:
        file.close()
    return True


def _copy_range(fs: FileSystem, directory: str, src: str, start: int, end: int,
                dst: str) -> None:
    source = fs.open_read(src)
    try:
        target = fs.open_write(dst, truncate=True)
        try:
            source.seek(start)
            offset = 0
            while offset < end - start:
                chunk = source.read(min(_COPY_CHUNK_BYTES, end - start - offset))
                if not chunk:
                    raise StorageError(f"{src} shrank while copying its damaged tail")
                write_all(target, chunk, offset)
                offset += len(chunk)
            target.sync()
        finally:
            target.close()
    finally:
        source.close()
    fs.sync_dir(directory)
