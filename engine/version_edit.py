"""The set of live SSTables (a Version) and the edits that change it, with their encoding.

A manifest is a log of VersionEdits; replaying them through apply() from Version() gives the
live set. Byte layout: docs/formats/manifest.md ("Edit payload").

Invariants:
1. apply() is pure: it returns a new Version and never mutates its arguments; it raises
   ValueError for an edit that does not fit the version (adding a live table number, removing
   a table that is not live), which the manifest reader turns into CorruptionError.
2. Version.tables is ordered newest data first: by recency descending, then number
   descending. Tables with equal recency come from one compaction and have disjoint key
   ranges, so their relative order does not matter to reads.
3. A flushed table gets recency = its own number (numbers only grow); a compaction output gets
   the greatest recency of its inputs. Compactions take inputs that are contiguous in this
   order (compaction_picker.py), so the output sits exactly where its inputs were.
4. log_number and next_table_number only grow (apply() keeps the maximum).
5. decode_edit(encode_edit(e)) == e; decode_edit raises CorruptionError naming the file on any
   payload it cannot parse, never IndexError or struct.error.
6. Field tags are on disk: never renumber; retire instead.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from engine.errors import CorruptionError


class Tag(enum.IntEnum):
    # On disk: never renumber; retire instead.
    LOG_NUMBER = 1  # u64: commit-log segments numbered below this are covered by tables
    NEXT_TABLE_NUMBER = 2  # u64: no table number at or above this has been handed out
    ADD_TABLE = 3  # TABLE_HEAD, min_key_len u32, min_key, max_key_len u32, max_key
    REMOVE_TABLE = 4  # u64 table number


_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
TABLE_HEAD = struct.Struct("<QQQQ")  # number, recency, file_size, entry_count


@dataclass(frozen=True, slots=True)
class TableMeta:
    number: int
    recency: int  # order of the table's data among tables: higher = newer (invariant 3)
    file_size: int
    entry_count: int
    min_key: bytes
    max_key: bytes


@dataclass(frozen=True, slots=True)
class VersionEdit:
    log_number: int | None = None
    next_table_number: int | None = None
    added: tuple[TableMeta, ...] = ()
    removed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Version:
    tables: tuple[TableMeta, ...] = field(default=())
    log_number: int = 0
    next_table_number: int = 1

    def snapshot(self) -> VersionEdit:
        """The one edit that rebuilds this version from Version() (what a new manifest holds)."""
        return VersionEdit(self.log_number, self.next_table_number, self.tables, ())


def apply(version: Version, edit: VersionEdit) -> Version:
    live = {t.number: t for t in version.tables}
    for number in edit.removed:
        if live.pop(number, None) is None:
            raise ValueError(f"edit removes table {number}, which is not live")
    for table in edit.added:
        if table.number in live:
            raise ValueError(f"edit adds table {table.number}, which is already live")
        live[table.number] = table
    tables = tuple(sorted(live.values(), key=lambda t: (t.recency, t.number), reverse=True))
    top = max((t.number + 1 for t in edit.added), default=0)
    return Version(
        tables,
        max(version.log_number, edit.log_number or 0),
        max(version.next_table_number, edit.next_table_number or 0, top),
    )


def encode_edit(edit: VersionEdit) -> bytes:
    parts: list[bytes] = []
    if edit.log_number is not None:
        parts += (_U8.pack(Tag.LOG_NUMBER), _U64.pack(edit.log_number))
    if edit.next_table_number is not None:
        parts += (_U8.pack(Tag.NEXT_TABLE_NUMBER), _U64.pack(edit.next_table_number))
    for number in edit.removed:
        parts += (_U8.pack(Tag.REMOVE_TABLE), _U64.pack(number))
    for t in edit.added:
        parts += (_U8.pack(Tag.ADD_TABLE),
                  TABLE_HEAD.pack(t.number, t.recency, t.file_size, t.entry_count),
                  _U32.pack(len(t.min_key)), t.min_key, _U32.pack(len(t.max_key)), t.max_key)
    return b"".join(parts)


class _Cursor:
    __slots__ = ("data", "offset", "path", "pos")

    def __init__(self, data: bytes, path: str, offset: int) -> None:
        self.data, self.path, self.offset, self.pos = data, path, offset, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CorruptionError(self.path, f"edit field of {n} bytes past end of record",
                                  self.offset)
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def key(self) -> bytes:
        (n,) = _U32.unpack(self.take(4))
        return self.take(n)


def decode_edit(payload: bytes, path: str, offset: int) -> VersionEdit:
    cur = _Cursor(payload, path, offset)
    log_number: int | None = None
    next_table: int | None = None
    added: list[TableMeta] = []
    removed: list[int] = []
    while cur.pos < len(payload):
        tag = cur.take(1)[0]
        if tag == Tag.LOG_NUMBER:
            log_number = cur.u64()
        elif tag == Tag.NEXT_TABLE_NUMBER:
            next_table = cur.u64()
        elif tag == Tag.REMOVE_TABLE:
            removed.append(cur.u64())
        elif tag == Tag.ADD_TABLE:
            number, recency, size, entries = TABLE_HEAD.unpack(cur.take(TABLE_HEAD.size))
            min_key, max_key = cur.key(), cur.key()
            if min_key > max_key:
                raise CorruptionError(path, f"table {number}: min key above max key", offset)
            added.append(TableMeta(number, recency, size, entries, min_key, max_key))
        else:
            raise CorruptionError(path, f"unknown edit tag {tag}", offset)
    return VersionEdit(log_number, next_table, tuple(added), tuple(removed))
