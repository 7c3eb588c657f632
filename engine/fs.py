"""The file-system interface the engine uses, and its OS implementation.

Invariants:
1. This is the only module in engine/ that touches the operating system (open, os.*, fcntl);
   everything else receives a FileSystem, so tests can inject failing writes, short writes and
   failing fsyncs, or a simulated disk.
2. Methods raise OSError as the OS does; turning that into StorageError with context is the
   caller's job.
3. WritableFile.pwrite() may write fewer bytes than asked (as os.pwrite does near a full disk);
   callers loop. No file is opened with O_APPEND: writers place every byte at an explicit
   offset, so a failed write can be overwritten in place.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Protocol

BytesLike = bytes | bytearray | memoryview


class WritableFile(Protocol):
    def pwrite(self, data: BytesLike, offset: int) -> int:
        """Write data at offset; returns the number of bytes written, possibly fewer."""
        ...

    def truncate(self, size: int) -> None: ...

    def sync(self) -> None:
        """fsync: data and metadata of this file reach stable storage."""
        ...

    def close(self) -> None: ...


class ReadableFile(Protocol):
    def read(self, size: int) -> bytes:
        """Read up to size bytes; fewer only at end of file."""
        ...

    def seek(self, offset: int) -> None: ...

    def pread(self, size: int, offset: int) -> bytes:
        """Read up to size bytes at offset without moving the position; one syscall, no
        read-ahead (a point lookup reads one 4 KiB block, not a 1 MiB buffer). Thread-safe."""
        ...

    def close(self) -> None: ...


class FileLock(Protocol):
    def release(self) -> None: ...


class FileSystem(Protocol):
    def makedirs(self, path: str) -> None: ...

    def listdir(self, path: str) -> list[str]: ...

    def size(self, path: str) -> int: ...

    def open_read(self, path: str) -> ReadableFile: ...

    def open_write(self, path: str, *, truncate: bool = False) -> WritableFile:
        """Open for writing, creating the file if missing (and emptying it if truncate)."""
        ...

    def rename(self, src: str, dst: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def sync_dir(self, path: str) -> None:
        """fsync a directory so that file creations, renames and removals in it are durable."""
        ...

    def lock(self, path: str) -> FileLock:
        """Take an exclusive advisory lock on path (created if missing); OSError if held."""
        ...


# Crash points for tests: a child process started with RESPKV_ENGINE_CRASH_AT=<name> kills
# itself (os._exit, no cleanup, like kill -9) the first time it reaches crash_point(<name>);
# RESPKV_ENGINE_CRASH_AT=<name>:<n> at the n-th time. Unset in production: one string compare.
_CRASH_AT = os.environ.get("RESPKV_ENGINE_CRASH_AT", "")
_crash_name, _, _crash_count = _CRASH_AT.partition(":")
_crash_left = [int(_crash_count or "1")]


def crash_point(name: str) -> None:
    if name == _crash_name:
        _crash_left[0] -= 1
        if _crash_left[0] <= 0:
            os._exit(137)


def disable_crash_points() -> None:
    """For a helper process that inherited the variable: its death is not the engine's."""
    global _crash_name
    _crash_name = ""


def join(directory: str, name: str) -> str:
    return os.path.join(directory, name)


def write_all(file: WritableFile, data: BytesLike, offset: int) -> None:
    """pwrite all of data at offset, looping over short writes; OSError if no progress."""
    written = 0
    while written < len(data):
        step = file.pwrite(data[written:] if written else data, offset + written)
        if step <= 0:
            raise OSError(errno.ENOSPC, "write made no progress")
        written += step


def replace_file(fs: FileSystem, directory: str, name: str, data: BytesLike) -> None:
    """Durably replace directory/name with data: write a temporary file, fsync it, rename it
    over the old one, fsync the directory. A crash leaves the old file or the new one, never a
    mix. Raises OSError on I/O failure."""
    temp = join(directory, name + ".tmp")
    file = fs.open_write(temp, truncate=True)
    try:
        write_all(file, data, 0)
        file.sync()
    finally:
        file.close()
    fs.rename(temp, join(directory, name))
    fs.sync_dir(directory)


class OSWritableFile:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def pwrite(self, data: BytesLike, offset: int) -> int:
        return os.pwrite(self._fd, data, offset)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class OSReadableFile:
    # Buffered so that reading many small records costs few syscalls; large records are read
    # straight through by io.BufferedReader.
    _BUFFER_BYTES = 1 << 20

    def __init__(self, path: str) -> None:
        self._file = open(path, "rb", buffering=self._BUFFER_BYTES)  # noqa: SIM115

    def read(self, size: int) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int) -> None:
        self._file.seek(offset)

    def pread(self, size: int, offset: int) -> bytes:
        fd = self._file.fileno()
        data = os.pread(fd, size, offset)
        while len(data) < size:  # short reads only at end of file, or for huge reads
            more = os.pread(fd, size - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data

    def close(self) -> None:
        self._file.close()


class OSFileLock:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing the descriptor drops the flock


class OSFileSystem:
    """FileSystem backed by the real operating system."""

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def open_read(self, path: str) -> ReadableFile:
        return OSReadableFile(path)

    def open_write(self, path: str, *, truncate: bool = False) -> WritableFile:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        return OSWritableFile(os.open(path, flags, 0o644))

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str) -> FileLock:
        return OSFileLock(path)
