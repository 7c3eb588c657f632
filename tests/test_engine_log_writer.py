"""log_writer: whole appends or a clean failure, cut back to the last good record."""

from __future__ import annotations

import os

import pytest

from engine import log_format
from engine.errors import StorageError
from engine.log_format import SegmentHeader
from engine.log_writer import LogWriter
from tests.engine_helpers import FaultyFS, read_bytes, temp_dir


def new_writer(d: str, fs: FaultyFS) -> tuple[LogWriter, str]:
    path = os.path.join(d, "seg")
    return LogWriter.create(fs, path, SegmentHeader(1, 0, 0)), path


def test_create_writes_and_syncs_the_header() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        writer, path = new_writer(d, fs)
        assert writer.offset == writer.synced_offset == log_format.SEGMENT_HEADER_SIZE
        assert fs.syncs == 1
        header = read_bytes(path)
        assert log_format.check_segment_header(header, path, 1) == SegmentHeader(1, 0, 0)
        writer.close()


def test_append_loops_over_short_writes() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        writer, path = new_writer(d, fs)
        fs.short_write_bytes = 3
        writer.append(bytearray(b"0123456789"))
        assert writer.offset == log_format.SEGMENT_HEADER_SIZE + 10
        assert read_bytes(path)[log_format.SEGMENT_HEADER_SIZE :] == b"0123456789"
        writer.close()


def test_failed_append_cuts_back_and_keeps_offset() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        writer, path = new_writer(d, fs)
        writer.append(b"good")
        fs.space_bytes = 2
        with pytest.raises(StorageError, match="failed after 2 bytes") as info:
            writer.append(b"doomed")
        assert path in str(info.value)
        assert writer.offset == log_format.SEGMENT_HEADER_SIZE + 4
        assert os.path.getsize(path) == writer.offset
        fs.space_bytes = None
        writer.append(b"again")
        assert read_bytes(path)[log_format.SEGMENT_HEADER_SIZE :] == b"goodagain"
        writer.close()


def test_rollback_after_a_failed_fsync() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        writer, path = new_writer(d, fs)
        start = writer.offset
        writer.append(b"unsynced")
        fs.fail_sync = True
        with pytest.raises(StorageError, match="fsync failed"):
            writer.sync()
        writer.rollback_to(start)
        assert os.path.getsize(path) == start
        writer.close()


def test_zero_progress_write_is_an_error_not_a_hang() -> None:
    with temp_dir() as d:
        fs = FaultyFS()
        writer, _ = new_writer(d, fs)
        fs.short_write_bytes = 0
        with pytest.raises(StorageError, match="no progress"):
            writer.append(b"x")
        fs.short_write_bytes = None
        writer.close()
