"""Names of the files in an engine directory.

Invariants:
1. A live commit-log segment is named exactly "commitlog-<number>.log" with a 12-digit
   zero-padded number, so names sort in segment order; nothing else is replayed.
2. Segment numbers only grow. A quarantined file keeps its number inside its name, so a new
   segment never reuses the number of one set aside, and numbering may have gaps.
"""

from __future__ import annotations

import re

LOCK_NAME = "LOCK"
QUARANTINE_SUFFIX = ".corrupt"

_SEGMENT = re.compile(r"commitlog-(\d{12})\.log")
_ANY_NUMBERED = re.compile(r"commitlog-(\d{12})\.log(\..*)?")


_TABLE = re.compile(r"table-(\d{12})\.sst")
_TABLE_TEMP = re.compile(r"table-(\d{12})\.sst\.tmp")


def parse_table_name(name: str) -> int | None:
    """The number of an SSTable file name (table_format.table_name), or None."""
    match = _TABLE.fullmatch(name)
    return int(match.group(1)) if match else None


def is_table_temp(name: str) -> bool:
    """A table a crash interrupted before its rename: garbage, never read."""
    return _TABLE_TEMP.fullmatch(name) is not None


def segment_name(segment_no: int) -> str:
    assert 0 < segment_no < 10**12, segment_no
    return f"commitlog-{segment_no:012d}.log"


def parse_segment_name(name: str) -> int | None:
    """The number of a live segment file, or None if name is not one."""
    match = _SEGMENT.fullmatch(name)
    return int(match.group(1)) if match else None


def parse_numbered_name(name: str) -> int | None:
    """The segment number in a live or quarantined segment file name, or None."""
    match = _ANY_NUMBERED.fullmatch(name)
    return int(match.group(1)) if match else None


def quarantine_name(segment_no: int, offset: int | None = None) -> str:
    """Where recovery keeps damaged bytes: a whole segment, or its tail from offset on."""
    tail = "" if offset is None else f".tail-{offset}"
    return f"{segment_name(segment_no)}{tail}{QUARANTINE_SUFFIX}"
