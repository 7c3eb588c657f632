"""Exceptions raised by the storage engine.

Invariants:
1. Every operating error the engine raises (I/O failure, full disk, damaged file) is a
   StorageError; programmer errors are asserts, and bad arguments are ValueError.
2. A CorruptionError names the file it was found in, so an operator knows what to inspect.
"""

from __future__ import annotations


class StorageError(Exception):
    """An operation on the store failed; the message says which file and why.

    After a StorageError from commit() the engine is still consistent: the records that were
    not written stay buffered and the next commit() retries them.
    """


class CorruptionError(StorageError):
    """Bytes read from disk do not decode: bad magic, checksum, length or structure."""

    def __init__(self, path: str, reason: str, offset: int | None = None) -> None:
        where = path if offset is None else f"{path} at offset {offset}"
        super().__init__(f"corruption in {where}: {reason}")
        self.path = path
        self.reason = reason
        self.offset = offset
