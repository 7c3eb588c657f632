"""Test helpers for the engine: a fault-injecting file system, log-file surgery, and a block
encoder of the general layout.

The engine tests use no pytest fixtures or parametrize (tables are plain loops, directories come
from temp_dir()): with looptime 0.9 installed and pytest-asyncio absent, every fixture setup in
this venv fails inside looptime's plugin.
"""

from __future__ import annotations

import errno
import os
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from engine import block, filenames, log_format
from engine.db import Engine
from engine.fs import (
    BytesLike,
    FileLock,
    FileSystem,
    OSFileSystem,
    ReadableFile,
    WritableFile,
)
from engine.options import EngineOptions


class FaultyFile:
    """A real file whose writes, truncates and fsyncs consult FaultyFS's fault settings."""

    def __init__(self, fs: FaultyFS, path: str, inner: WritableFile, fd_size: int) -> None:
        self._fs = fs
        self.path = path
        self._inner = inner
        self._size = fd_size
        self.closed = False

    def pwrite(self, data: BytesLike, offset: int) -> int:
        fs = self._fs
        self._check_open()
        fs.pwrite_calls += 1
        n = len(data)
        if fs.short_write_bytes is not None:
            n = min(n, fs.short_write_bytes)
        if fs.space_bytes is not None:
            if fs.space_bytes == 0:
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
            n = min(n, fs.space_bytes)
            fs.space_bytes -= n
        written = self._inner.pwrite(memoryview(data)[:n], offset)
        self._size = max(self._size, offset + written)
        return written

    def truncate(self, size: int) -> None:
        self._check_open()
        if self._fs.fail_truncate:
            raise OSError(errno.EIO, "truncate failed (injected)")
        if self._fs.space_bytes is not None and size < self._size:
            self._fs.space_bytes += self._size - size
        self._inner.truncate(size)
        self._size = size

    def sync(self) -> None:
        self._check_open()
        if self._fs.fail_sync:
            raise OSError(errno.EIO, "fsync failed (injected)")
        if threading.get_ident() in self._fs.slow_sync_threads:
            time.sleep(self._fs.sync_delay_s)  # a slow fsync: widens any race with close()
            self._check_open()
        self._fs.syncs += 1
        self._inner.sync()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._inner.close()

    def _check_open(self) -> None:
        if self.closed:
            self._fs.use_after_close += 1
            raise OSError(errno.EBADF, f"{self.path} used after close")


@dataclass
class FaultyFS(FileSystem):
    """OSFileSystem with injectable faults and a crash() that abandons every open file.

    space_bytes: bytes that may still be written (None = unlimited); truncation frees space.
    short_write_bytes: most bytes one pwrite call writes. fail_sync / fail_truncate: raise EIO.
    fail_create: creating (or emptying) a file with open_write(truncate=True) raises ENOSPC.
    sync_delay_s, slow_sync_threads: an fsync called from one of these threads sleeps this long
    first, and fails if the file was closed meanwhile.
    """

    space_bytes: int | None = None
    short_write_bytes: int | None = None
    fail_sync: bool = False
    fail_truncate: bool = False
    fail_create: bool = False  # open_write(truncate=True), i.e. creating a segment, fails
    sync_delay_s: float = 0.0
    slow_sync_threads: set[int] = field(default_factory=set)
    pwrite_calls: int = 0
    syncs: int = 0
    dir_syncs: int = 0
    use_after_close: int = 0
    _os: OSFileSystem = field(default_factory=OSFileSystem)
    _open: list[FaultyFile | FileLock] = field(default_factory=list)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def makedirs(self, path: str) -> None:
        self._os.makedirs(path)

    def listdir(self, path: str) -> list[str]:
        return self._os.listdir(path)

    def size(self, path: str) -> int:
        return self._os.size(path)

    def open_read(self, path: str) -> ReadableFile:
        return self._os.open_read(path)

    def open_write(self, path: str, *, truncate: bool = False) -> WritableFile:
        if truncate and self.fail_create:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        inner = self._os.open_write(path, truncate=truncate)
        file = FaultyFile(self, path, inner, os.path.getsize(path))
        with self._guard:
            self._open.append(file)
        return file

    def rename(self, src: str, dst: str) -> None:
        self._os.rename(src, dst)

    def remove(self, path: str) -> None:
        self._os.remove(path)

    def sync_dir(self, path: str) -> None:
        self.dir_syncs += 1
        self._os.sync_dir(path)

    def lock(self, path: str) -> FileLock:
        lock = self._os.lock(path)
        with self._guard:
            self._open.append(lock)
        return lock

    def crash(self) -> None:
        """Close every file and lock without flushing anything buffered in the engine.

        The OS page cache survives, as with kill -9: what commit() wrote is kept, what was
        still buffered in the engine is lost.
        """
        with self._guard:
            handles, self._open = self._open, []
        for handle in handles:
            if isinstance(handle, FaultyFile):
                handle.close()
            else:
                handle.release()


@contextmanager
def temp_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="respkv-engine-") as directory:
        yield directory


@dataclass
class Opened:
    engine: Engine
    reports: list[str]


def open_engine(directory: str, fs: FileSystem | None = None, **options: Any) -> Opened:
    reports: list[str] = []
    engine = Engine.open(directory, EngineOptions(**options), fs=fs, reporter=reports.append)
    return Opened(engine, reports)


def segment_files(directory: str) -> list[str]:
    """Paths of the live segments, in order."""
    names = sorted(n for n in os.listdir(directory) if filenames.parse_segment_name(n))
    return [os.path.join(directory, n) for n in names]


def quarantined_files(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(filenames.QUARANTINE_SUFFIX))


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def record_offsets(path: str) -> list[int]:
    """Start offset of every record in a well-formed segment file, plus its end."""
    data = read_bytes(path)
    offsets = []
    pos = log_format.SEGMENT_HEADER_SIZE
    while pos < len(data):
        offsets.append(pos)
        _, length, _ = log_format.RECORD_HEADER.unpack_from(data, pos)
        pos += log_format.RECORD_HEADER_SIZE + length
    assert pos == len(data), "not a well-formed segment"
    return [*offsets, pos]


def patch_file(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def truncate_file(path: str, size: int) -> None:
    os.truncate(path, size)


def rewrite_record(path: str, offset: int, *, rtype: int | None = None,
                   payload: bytes | None = None, length: int | None = None) -> None:
    """Replace fields of the record at offset and fix its CRC, so only the change is wrong."""
    data = bytearray(read_bytes(path))
    _, old_length, old_type = log_format.RECORD_HEADER.unpack_from(data, offset)
    old_payload = bytes(data[offset + 9 : offset + 9 + old_length])
    new_payload = old_payload if payload is None else payload
    new_length = len(new_payload) if length is None else length
    header = log_format.RECORD_HEADER.pack(0, new_length, old_type if rtype is None else rtype)
    crc = log_format.record_crc(header, new_payload)
    record = log_format.RECORD_HEADER.pack(crc, new_length, header[8]) + new_payload
    data[offset : offset + 9 + old_length] = record
    with open(path, "wb") as f:
        f.write(data)


class BlockBuilder:
    """Encodes one block in the general data-block layout: a restart point every
    restart_interval entries and prefix-compressed keys between them (docs/formats/
    sstable.md). The engine writes interval 1 only (block.encode_run); tables written before
    2026-11 hold interval 16, so the readers' tests build such blocks with this.

    REQUIRES: keys added in strictly increasing order; finish() after at least one add().
    """

    def __init__(self, restart_interval: int = 16) -> None:
        assert restart_interval >= 1
        self._interval = restart_interval
        self._body = bytearray()
        self._restarts: list[int] = []
        self._last = b""
        self._count = 0

    def add(self, key: bytes, value: bytes | None) -> None:
        assert self._count == 0 or key > self._last, "keys must strictly increase"
        shared = 0
        if self._count % self._interval == 0:
            self._restarts.append(len(self._body))
        else:
            while (shared < min(len(key), len(self._last))
                   and key[shared] == self._last[shared]):
                shared += 1
        length = block.TOMBSTONE_LENGTH if value is None else len(value)
        self._body += block.ENTRY_HEADER.pack(shared, len(key) - shared, length)
        self._body += key[shared:]
        self._body += value or b""
        self._last = key
        self._count += 1

    def finish(self) -> bytes:
        assert self._count, "a block holds at least one entry"
        restarts = self._restarts
        return bytes(self._body) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack(
            "<I", len(restarts))
