"""``node.alive``: when this node was last known to be up, so a node that was down longer than
the tombstone grace refuses to rejoin with its stale data (issue 6).

Why (Cassandra's gc_grace_seconds warning): replicas purge a tombstone ``gc-grace-seconds``
after the delete. A replica that was down all that time still holds the deleted value, and
once the tombstone is gone nothing supersedes it: read repair or anti-entropy would copy it
back everywhere and the key would be alive again. Such a node must not serve or repair from
its data; it must be rebuilt (its engine directory emptied: it keeps its id and tokens and
gets every key back from its replicas by ``CLUSTER REPAIR``).

Invariants:
1. The file is rewritten at most every ``WRITE_EVERY_S`` while the node runs and at a clean
   stop, so it lags the truth by at most that much (a node is judged down a little longer
   than it was, never shorter).
2. A damaged file is a ``CorruptionError`` (the node refuses to start rather than guess).

Format (version 1): magic ``RKVALIV\\n`` (8 bytes), version (1 byte), last-up wall-clock
milliseconds (8 bytes big-endian), CRC-32 of the preceding bytes (4 bytes big-endian).
"""

from __future__ import annotations

import struct
import zlib

from cluster.errors import CorruptionError
from engine.fs import FileSystem, join, replace_file

ALIVE_NAME = "node.alive"
MAGIC = b"RKVALIV\n"
FORMAT_VERSION = 1  # On disk: bump on any change of layout; decoders reject unknown versions.
WRITE_EVERY_S = 60.0
_BODY = struct.Struct(">8sBQ")
_CRC = struct.Struct(">I")


def encode(alive_ms: int) -> bytes:
    body = _BODY.pack(MAGIC, FORMAT_VERSION, alive_ms)
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes) -> int:
    if len(data) != _BODY.size + _CRC.size:
        raise CorruptionError(f"{ALIVE_NAME}: {len(data)} bytes, expected "
                              f"{_BODY.size + _CRC.size}")
    magic, version, alive_ms = _BODY.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(f"{ALIVE_NAME}: bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise CorruptionError(f"{ALIVE_NAME}: unknown format version {version}")
    (crc,) = _CRC.unpack_from(data, _BODY.size)
    if zlib.crc32(data[:_BODY.size]) != crc:
        raise CorruptionError(f"{ALIVE_NAME}: checksum mismatch")
    return int(alive_ms)


def read(fs: FileSystem, directory: str) -> int | None:
    """The last-up time in ms, None if there is no file; CorruptionError if damaged."""
    path = join(directory, ALIVE_NAME)
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return None
    file = fs.open_read(path)
    try:
        return decode(file.read(min(size, 64)))
    finally:
        file.close()


def write(fs: FileSystem, directory: str, alive_ms: int) -> None:
    replace_file(fs, directory, ALIVE_NAME, encode(alive_ms))


def check(last_up_ms: int | None, now_ms: int, grace_ms: int, has_data: bool) -> str | None:
    """Why this node must not start with its data (None: it may): it was down longer than
    the tombstone grace and still holds data from before."""
    if last_up_ms is None or not has_data or grace_ms <= 0:
        return None
    down_ms = now_ms - last_up_ms
    if down_ms <= grace_ms:
        return None
    return (f"this node was last up {down_ms // 1000} s ago, longer than gc-grace-seconds "
            f"({grace_ms // 1000} s): its data could bring deleted keys back. Rebuild it: "
            "empty its engine directory (it keeps its id and tokens) and run CLUSTER REPAIR "
            "once it is up, or raise gc-grace-seconds if no tombstone was purged meanwhile")
