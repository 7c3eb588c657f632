"""The stream progress record (docs/formats/stream-progress.md): which ranges a join
(``KIND_PULL``) or a decommission (``KIND_PUSH``) finished, replaced durably as ranges finish
so that a node that restarts mid-way skips them. What a record may claim is
stream_runner.py invariant 1.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from itertools import pairwise

from cluster.errors import CorruptionError
from cluster.ring import TokenRange
from engine.fs import FileSystem, join, replace_file

PROGRESS_MAGIC = b"RKVSTRM\n"
PROGRESS_VERSION = 1  # On disk: bump on any change of layout; decoders reject unknown ones.
KIND_PULL = 1  # On disk: never renumber; retire instead.
KIND_PUSH = 2
PROGRESS_RANGES_MAX = 1 << 22  # far above any ring (1024 members x 4096 tokens)
PROGRESS_NAME_JOIN = "join.progress"
PROGRESS_NAME_LEAVE = "decommission.progress"
_PROGRESS_HEADER = struct.Struct(">8sBBI")  # magic, version, kind, count
_PROGRESS_RANGE = struct.Struct(">QQ")  # left, right
_PROGRESS_TRAILER = struct.Struct(">I")  # CRC-32 (zlib) of header and ranges


@dataclass(frozen=True, slots=True)
class StreamProgress:
    """The ranges a streamer (``KIND_PULL``) or pusher (``KIND_PUSH``) finished."""

    kind: int
    done: frozenset[TokenRange]


def encode_progress(progress: StreamProgress) -> bytes:
    assert progress.kind in (KIND_PULL, KIND_PUSH), progress.kind
    assert len(progress.done) <= PROGRESS_RANGES_MAX, len(progress.done)
    ranges = sorted(progress.done)
    head = _PROGRESS_HEADER.pack(PROGRESS_MAGIC, PROGRESS_VERSION, progress.kind, len(ranges))
    head += b"".join(_PROGRESS_RANGE.pack(r.left, r.right) for r in ranges)
    return head + _PROGRESS_TRAILER.pack(zlib.crc32(head))


def decode_progress(data: bytes) -> StreamProgress:
    """The record of a file's bytes; CorruptionError on any mismatch (a trust boundary)."""
    name = "stream progress"
    if len(data) < _PROGRESS_HEADER.size + _PROGRESS_TRAILER.size:
        raise CorruptionError(f"{name}: {len(data)} bytes is too short")
    magic, version, kind, count = _PROGRESS_HEADER.unpack_from(data)
    if magic != PROGRESS_MAGIC:
        raise CorruptionError(f"{name}: bad magic {magic!r}")
    if version != PROGRESS_VERSION:
        raise CorruptionError(f"{name}: unknown format version {version}")
    if kind not in (KIND_PULL, KIND_PUSH) or count > PROGRESS_RANGES_MAX:
        raise CorruptionError(f"{name}: kind {kind} or count {count} out of range")
    end = _PROGRESS_HEADER.size + count * _PROGRESS_RANGE.size
    if len(data) != end + _PROGRESS_TRAILER.size:
        raise CorruptionError(f"{name}: {len(data)} bytes, the header says "
                              f"{end + _PROGRESS_TRAILER.size}")
    (crc,) = _PROGRESS_TRAILER.unpack_from(data, end)
    if crc != zlib.crc32(data[:end]):
        raise CorruptionError(f"{name}: checksum mismatch")
    ranges = [TokenRange(left, right) for left, right in
              _PROGRESS_RANGE.iter_unpack(data[_PROGRESS_HEADER.size:end])]
    if any(a >= b for a, b in pairwise(ranges)):
        raise CorruptionError(f"{name}: ranges are not strictly ascending")
    return StreamProgress(kind, frozenset(ranges))


def save_progress(fs: FileSystem, directory: str, name: str, progress: StreamProgress) -> None:
    """Durably replace ``directory/name`` (temporary file, fsync, rename, fsync dir)."""
    replace_file(fs, directory, name, encode_progress(progress))


def load_progress(fs: FileSystem, directory: str, name: str,
                  kind: int) -> StreamProgress | None:
    """The record in ``directory/name``, None if there is none; CorruptionError if damaged
    or of another kind."""
    path = join(directory, name)
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return None
    limit = _PROGRESS_HEADER.size + PROGRESS_RANGES_MAX * 16 + _PROGRESS_TRAILER.size
    if size > limit:
        raise CorruptionError(f"{name}: {size} bytes is too large")
    file = fs.open_read(path)
    try:
        progress = decode_progress(file.read(size))
    finally:
        file.close()
    if progress.kind != kind:
        raise CorruptionError(f"{name}: a record of kind {progress.kind}, expected {kind}")
    return progress
