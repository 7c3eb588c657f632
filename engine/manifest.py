"""The manifest: a durable log of VersionEdits naming the live SSTables, and CURRENT.

Files: "MANIFEST-<12 digits>" (header + framed edit records) and "CURRENT" (the name of the
live manifest and a newline). Byte layout: docs/formats/manifest.md.

Invariants:
1. log_and_apply(edit) returns only after the edit's record is fsynced; until it returns,
   the caller must not act on the edit (delete log segments or input tables).
2. CURRENT always names a complete manifest: a new manifest is written (header + snapshot of
   the version), fsynced, and only then is CURRENT switched by write "CURRENT.tmp", fsync,
   rename, fsync the directory. The old manifest is removed after that.
3. Every open() starts a new manifest from a snapshot, so records are only ever appended after
   intact ones: a torn tail is never extended.
4. Recovery tolerates damage only at the tail: an incomplete last record, a last record whose
   CRC fails and which ends at end of file, or zero fill. It is reported and ignored. A bad
   record followed by more data is CorruptionError: the live set is unknown, and opening with
   a guess could delete data.
5. After a failed write or fsync the file's state is unknown, so the next log_and_apply()
   first rolls over to a new manifest (invariant 2) instead of appending.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable

from engine import version_edit
from engine.errors import CorruptionError, StorageError
from engine.fs import FileSystem, WritableFile, join, replace_file, write_all
from engine.version_edit import Version, VersionEdit

MAGIC = b"\x89RKVMAN\n"
FORMAT_VERSION = 1  # On disk: bump when the layout changes.
CURRENT_NAME = "CURRENT"
EDIT_RECORD = 1  # On disk: the only record type; 0 is never written (zero fill).
MANIFEST_BYTES_MAX = 4 << 20  # roll over to a fresh snapshot past this: bounds replay work

_HEADER_BODY = struct.Struct("<8sB3xQ")  # magic, version, reserved, manifest number
_U32 = struct.Struct("<I")
HEADER_SIZE = _HEADER_BODY.size + 4  # 24: body + crc32(body)
RECORD_HEADER = struct.Struct("<IIB")  # crc32, payload length, type
_NAME = re.compile(r"MANIFEST-(\d{12})")


def manifest_name(number: int) -> str:
    assert 0 < number < 10**12, number
    return f"MANIFEST-{number:012d}"


def encode_record(payload: bytes) -> bytes:
    rest = struct.pack("<IB", len(payload), EDIT_RECORD) + payload
    return _U32.pack(zlib.crc32(rest)) + rest


def replay(data: bytes, path: str, number: int, reporter: Callable[[str], None]) -> Version:
    """The version a manifest file's bytes describe; see invariant 4 for damage handling."""
    if len(data) < HEADER_SIZE or data[:8] != MAGIC:
        raise CorruptionError(path, "missing or bad manifest header", 0)
    body = data[: _HEADER_BODY.size]
    if zlib.crc32(body) != _U32.unpack_from(data, _HEADER_BODY.size)[0]:
        raise CorruptionError(path, "manifest header checksum mismatch", 0)
    _, fmt, found = _HEADER_BODY.unpack(body)
    if fmt != FORMAT_VERSION:
        raise StorageError(f"{path}: manifest format version {fmt}; this build reads "
                           f"version {FORMAT_VERSION} only")
    if found != number:
        raise CorruptionError(path, f"header names manifest {found}", 0)
    version = Version()
    pos = HEADER_SIZE
    while pos < len(data):
        end = pos + RECORD_HEADER.size
        crc, length, rtype = RECORD_HEADER.unpack_from(data, pos) if end <= len(data) else (
            0, 0, 0)
        end += length
        intact = end <= len(data) and rtype == EDIT_RECORD and zlib.crc32(
            memoryview(data)[pos + 4 : end]) == crc
        if not intact:
            if end >= len(data) or not any(data[pos:]):
                reporter(f"{path}: ignoring torn manifest tail of {len(data) - pos} bytes "
                         f"at offset {pos}")
                break
            raise CorruptionError(path, "manifest record damaged before its tail", pos)
        edit = version_edit.decode_edit(data[pos + RECORD_HEADER.size : end], path, pos)
        try:
            version = version_edit.apply(version, edit)
        except ValueError as exc:
            raise CorruptionError(path, str(exc), pos) from exc
        pos = end
    return version


class Manifest:
    """Open with Manifest.open(). Single writer; REQUIRES: the store directory is locked."""

    def __init__(self, fs: FileSystem, directory: str, version: Version) -> None:
        """Private: use Manifest.open()."""
        self._fs = fs
        self._dir = directory
        self.version = version
        self._file: WritableFile | None = None
        self._number = 0
        self._size = 0
        self._broken = True  # no manifest written by us yet: the first write rolls over

    @classmethod
    def open(cls, fs: FileSystem, directory: str,
             reporter: Callable[[str], None]) -> tuple[Manifest, int]:
        """Read the live version (empty for a new store) and start a fresh manifest.

        Returns the manifest and the number of the one it replaced (0 if none). Raises
        CorruptionError for a damaged CURRENT or manifest, StorageError on I/O errors.
        """
        names = fs.listdir(directory)
        numbers = [int(m.group(1)) for n in names if (m := _NAME.fullmatch(n))]
        old = 0
        version = Version()
        try:
            if CURRENT_NAME in names:
                old, version = cls._read_current(fs, directory, reporter)
            manifest = cls(fs, directory, version)
            manifest._number = max(numbers, default=0)
            manifest._roll_over()
        except OSError as exc:
            raise StorageError(f"cannot open manifest in {directory}: {exc}") from exc
        for number in numbers:
            if number != manifest._number:
                try:
                    fs.remove(join(directory, manifest_name(number)))
                except OSError as exc:
                    reporter(f"cannot remove old manifest {manifest_name(number)}: {exc}")
        return manifest, old

    @staticmethod
    def _read_current(fs: FileSystem, directory: str,
                      reporter: Callable[[str], None]) -> tuple[int, Version]:
        path = join(directory, CURRENT_NAME)
        text = _read_all(fs, path)
        match = _NAME.fullmatch(text.rstrip(b"\n").decode("ascii", "replace"))
        if match is None or not text.endswith(b"\n"):
            raise CorruptionError(path, f"CURRENT does not name a manifest: {text[:40]!r}")
        number = int(match.group(1))
        mpath = join(directory, manifest_name(number))
        return number, replay(_read_all(fs, mpath), mpath, number, reporter)

    def log_and_apply(self, edit: VersionEdit) -> Version:
        """Make edit durable, then apply it: returns the new version (also self.version).

        Raises ValueError (nothing written) if the edit does not fit the version, and
        StorageError if the write or fsync failed (the version is then unchanged).
        """
        new = version_edit.apply(self.version, edit)
        try:
            if self._broken or self._size > MANIFEST_BYTES_MAX:
                self._roll_over()
            assert self._file is not None
            record = encode_record(version_edit.encode_edit(edit))
            try:
                write_all(self._file, record, self._size)
                self._file.sync()
            except OSError:
                self._broken = True
                raise
            self._size += len(record)
        except OSError as exc:
            raise StorageError(f"cannot write manifest in {self._dir}: {exc}") from exc
        self.version = new
        return new

    def _roll_over(self) -> None:
        """Write a new manifest holding a snapshot, fsync it, point CURRENT at it (inv. 2)."""
        number = self._number + 1
        name = manifest_name(number)
        file = self._fs.open_write(join(self._dir, name), truncate=True)
        try:
            header = _HEADER_BODY.pack(MAGIC, FORMAT_VERSION, number)
            data = header + _U32.pack(zlib.crc32(header)) + encode_record(
                version_edit.encode_edit(self.version.snapshot()))
            write_all(file, data, 0)
            file.sync()
            self._set_current(name)
        except BaseException:
            file.close()
            raise
        previous, self._file = self._file, file
        old_number, self._number, self._size, self._broken = self._number, number, len(data), False
        if previous is not None:
            previous.close()
            try:
                self._fs.remove(join(self._dir, manifest_name(old_number)))
            except OSError:
                pass  # removed on the next open()

    def _set_current(self, name: str) -> None:
        replace_file(self._fs, self._dir, CURRENT_NAME, name.encode("ascii") + b"\n")

    @property
    def number(self) -> int:
        return self._number

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


def _read_all(fs: FileSystem, path: str) -> bytes:
    file = fs.open_read(path)
    try:
        return file.read(fs.size(path))
    finally:
        file.close()
